//! The crash test: `herald serve` under load (events to a webhook, operations created,
//! claimed and completed) is killed with SIGKILL at random moments, several times, and
//! restarted on the same database. Afterwards every acknowledged event was delivered at
//! least once and every acknowledged operation change is there. Prints the counts.
//!
//! The kill moments come from a seed printed at the start; `HERALD_CRASH_SEED=<n>`
//! replays a run.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const ADMIN: &str = "crash-test-admin";
const KILLS: usize = 4;

const CONFIG: &str = r#"
[[operation_types]]
name = "transcode"
lease = "2s"
max_attempts = 10

[webhooks]
allow_private_destinations = true
timeout = "2s"
schedule = ["0s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
"#;

use crate::common::Herald;

fn start_herald(dir: &Path) -> Herald {
    Herald::start(dir, CONFIG, ADMIN, "error")
}

/// xorshift64*: enough randomness for kill moments, reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Where Herald listens now (it gets a new port at each restart).
type Base = Arc<RwLock<String>>;

async fn post(
    http: &reqwest::Client,
    base: &Base,
    path: &str,
    body: &Value,
    key: &str,
) -> Option<(StatusCode, Value)> {
    let url = format!("{}{path}", base.read().unwrap());
    let r = http
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = r.status();
    // A reply cut off by the kill is not an acknowledgement.
    let body = r.json::<Value>().await.ok()?;
    Some((status, body))
}

/// The webhook endpoint: counts each event id it is sent.
async fn counting_receiver() -> (String, Arc<Mutex<HashMap<String, u32>>>) {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let id = headers
                .get("x-event-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            *seen.lock().unwrap().entry(id).or_default() += 1;
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_under_load_lose_nothing_acknowledged() {
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
    println!("crash test seed {seed} (HERALD_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (hook_url, seen) = counting_receiver().await;

    let mut herald = start_herald(dir.path());
    let base: Base = Arc::new(RwLock::new(herald.base.clone()));
    let (_, t) = post(&http, &base, "/tenants", &json!({ "name": "acme" }), ADMIN)
        .await
        .unwrap();
    let tenant = t["id"].as_str().unwrap().to_owned();
    let (s, _) = post(
        &http,
        &base,
        "/webhooks",
        &json!({ "url": hook_url, "events": ["payment.*"], "tenant": tenant }),
        ADMIN,
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::CREATED);
    let (_, w) = post(&http, &base, "/keys", &json!({ "role": "worker" }), ADMIN)
        .await
        .unwrap();
    let worker = w["key"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let acked_events = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_ops = Arc::new(Mutex::new(Vec::<String>::new()));
    // Operation id -> the response its acknowledged `:complete` carried.
    let acked_completions = Arc::new(Mutex::new(HashMap::<String, Value>::new()));
    let mut load = vec![];

    // Event producers: publish until told to stop; only a 202 with its body counts.
    for p in 0..3 {
        let (http, base, tenant, acked, stop) = (
            http.clone(),
            base.clone(),
            tenant.clone(),
            acked_events.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let body = json!({ "type": "payment.succeeded", "tenant": tenant, "key": format!("pay_{p}"), "data": { "i": i } });
                match post(&http, &base, "/events", &body, ADMIN).await {
                    Some((StatusCode::ACCEPTED, v)) => acked.lock().unwrap().push(v["id"].as_str().unwrap().to_owned()),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    // Operation producer.
    {
        let (http, base, tenant, acked, stop) = (
            http.clone(),
            base.clone(),
            tenant.clone(),
            acked_ops.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let body = json!({ "type": "transcode", "tenant": tenant, "metadata": { "i": i }, "input": { "i": i } });
                match post(&http, &base, "/operations", &body, ADMIN).await {
                    Some((s, v)) if s.is_success() => {
                        let id = v["name"].as_str().unwrap().trim_start_matches("operations/").to_owned();
                        acked.lock().unwrap().push(id);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    // Worker: claims and completes; an acknowledged completion must survive.
    {
        let (http, base, worker, acked, stop) = (
            http.clone(),
            base.clone(),
            worker.clone(),
            acked_completions.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let claim = json!({ "types": ["transcode"], "max": 10, "lease": "2s" });
                let Some((StatusCode::OK, v)) =
                    post(&http, &base, "/operations:claim", &claim, &worker).await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                for op in v["operations"].as_array().cloned().unwrap_or_default() {
                    let id = op["name"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("operations/")
                        .to_owned();
                    let response = json!({ "done_by": "crash-test", "input": op["input"] });
                    let body = json!({ "lease_token": op["lease_token"], "response": response });
                    if let Some((StatusCode::OK, _)) = post(
                        &http,
                        &base,
                        &format!("/operations/{id}:complete"),
                        &body,
                        &worker,
                    )
                    .await
                    {
                        acked.lock().unwrap().insert(id, response);
                    }
                }
            }
        }));
    }

    // Kill at random moments, restarting at once each time.
    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.between(300, 1500))).await;
        herald.kill9();
        let events = acked_events.lock().unwrap().len();
        println!("kill {} after {events} acknowledged events", k + 1);
        herald = start_herald(dir.path());
        *base.write().unwrap() = herald.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    let acked_events = acked_events.lock().unwrap().clone();
    assert!(
        acked_events.len() > 100,
        "too little load: {}",
        acked_events.len()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            acked_events
                .iter()
                .filter(|id| !seen.contains_key(*id))
                .count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events were never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every acknowledged operation exists; every acknowledged completion is its result.
    let acked_ops = acked_ops.lock().unwrap().clone();
    let completions = acked_completions.lock().unwrap().clone();
    let base_now = base.read().unwrap().clone();
    // (An operation whose creation reply the kill cut off may still have been stored
    // and completed: its acknowledged completion is checked too.)
    let to_check: HashSet<&String> = acked_ops.iter().chain(completions.keys()).collect();
    for id in to_check {
        let r = http
            .get(format!("{base_now}/operations/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "acknowledged operation {id} is gone"
        );
        let op: Value = r.json().await.unwrap();
        if let Some(expected) = completions.get(id) {
            assert_eq!(op["done"], true, "{id}: {op}");
            assert_eq!(&op["response"], expected, "{id}: {op}");
        }
    }

    let seen = seen.lock().unwrap();
    let delivered = acked_events
        .iter()
        .filter(|id| seen.contains_key(*id))
        .count();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "kills {KILLS}: events acknowledged {}, delivered {delivered}, duplicates {duplicates}, lost {}; operations acknowledged {}, completions acknowledged {}, lost 0",
        acked_events.len(),
        acked_events.len() - delivered,
        acked_ops.len(),
        completions.len(),
    );
    assert_eq!(delivered, acked_events.len());
    herald.kill9();
}
