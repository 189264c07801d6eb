//! Ordered webhooks across crashes: `herald serve` delivers four keys' events to a webhook
//! with `"ordering": "key"` whose endpoint fails at random, and is killed with SIGKILL at
//! random moments and restarted on the same database. Afterwards every key's events were
//! acknowledged in `sequence` order, and no event was ever sent before the one ahead of it
//! in its key was acknowledged (a repeat of an acknowledged one, after a crash, is allowed:
//! at least once). `HERALD_CRASH_SEED=<n>` replays a run.

use crate::common::Herald;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &str = "ordered-crash-admin";
const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const PER_KEY: i64 = 25;

const CONFIG: &str = r#"
[webhooks]
allow_private_destinations = true
timeout = "2s"
schedule = ["0s", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]
"#;

/// xorshift64*, reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// What the endpoint saw, in arrival order: (key, sequence, answered 2xx).
#[derive(Clone)]
struct Endpoint {
    seen: Arc<Mutex<Vec<(String, i64, bool)>>>,
    rng: Arc<Mutex<Rng>>,
    last_failed: Arc<Mutex<bool>>,
}

async fn answer(State(ep): State<Endpoint>, body: axum::body::Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = v["key"].as_str().unwrap_or("").to_owned();
    let sequence = v["sequence"].as_i64().unwrap_or(0);
    // Fails at random, never twice in a row (five in a row would open the breaker).
    let fail = {
        let mut last = ep.last_failed.lock().unwrap();
        *last = !*last && ep.rng.lock().unwrap().next().is_multiple_of(4);
        *last
    };
    // A slow endpoint, so lines are long when the kills come.
    tokio::time::sleep(Duration::from_millis(15)).await;
    ep.seen.lock().unwrap().push((key, sequence, !fail));
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Each key's acknowledged sequences in order; an error names the first event sent before
/// the one ahead of it was acknowledged.
fn check(seen: &[(String, i64, bool)]) -> Result<BTreeMap<String, i64>, String> {
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    for (key, sequence, ok) in seen {
        let last = acked.entry(key.clone()).or_insert(0);
        if *sequence > *last + 1 {
            return Err(format!(
                "{key}#{sequence} was sent before {key}#{} was acknowledged",
                *last + 1
            ));
        }
        if *ok && *sequence == *last + 1 {
            *last = *sequence;
        }
    }
    Ok(acked)
}

fn start(dir: &Path) -> Herald {
    Herald::start(dir, CONFIG, ADMIN, "error")
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let resp = http
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_keys_stay_in_order_across_sigkills() {
    let seed = std::env::var("HERALD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("ordered crash test seed {seed} (HERALD_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let ep = Endpoint {
        seen: Arc::default(),
        rng: Arc::new(Mutex::new(Rng(seed.rotate_left(17) | 1))),
        last_failed: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/h", post(answer))
        .with_state(ep.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/h", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut herald = start(dir.path());
    let (_, t) = call(&http, &herald.base, "/tenants", &json!({ "name": "acme" }))
        .await
        .unwrap();
    let tenant = t["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &http,
        &herald.base,
        "/webhooks",
        &json!({ "url": hook, "events": ["order.*"], "tenant": tenant, "ordering": "key" }),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);

    // Publish every key's events in rounds (each acknowledged before the next of its key,
    // so each has its sequence), killing Herald at random rounds and restarting it.
    let mut published: BTreeMap<&str, i64> = BTreeMap::new();
    let mut kills = 0;
    for round in 0..PER_KEY {
        for key in KEYS {
            // An event whose answer a kill cut off may or may not be stored: publish it
            // again under its id until acknowledged (a repeat is deduplicated).
            let id = format!("evt_{}", ulid::Ulid::new());
            loop {
                let body = json!({ "id": id, "type": "order.updated", "tenant": tenant, "key": key, "data": { "round": round } });
                match call(&http, &herald.base, "/events", &body).await {
                    Some((202, v)) => {
                        published.insert(key, v["sequence"].as_i64().unwrap());
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        if (round > 0 && round % 6 == 0) || rng.next().is_multiple_of(10) {
            tokio::time::sleep(Duration::from_millis(rng.next() % 300)).await;
            herald.kill9();
            kills += 1;
            herald = start(dir.path());
        }
    }
    for key in KEYS {
        assert_eq!(published[key], PER_KEY, "{key}: one sequence per event");
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = ep.seen.lock().unwrap().clone();
        let acked = check(&seen).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if KEYS.iter().all(|k| acked.get(*k) == Some(&PER_KEY)) {
            let repeats = seen.iter().filter(|(_, _, ok)| *ok).count() as i64 - 4 * PER_KEY;
            println!(
                "kills {kills}: {} requests, {repeats} acknowledged twice after a crash",
                seen.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: not every key was acknowledged in order: {acked:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    herald.kill9();
}
