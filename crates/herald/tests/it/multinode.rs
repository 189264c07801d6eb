//! Three `herald serve` processes on one PostgreSQL database: 10,000 keyed events posted
//! through them round-robin and fanned out to three webhooks, while one node is killed
//! with SIGKILL midway. Every (event, webhook) delivery must arrive at least once and
//! every key's sequence must be complete at every webhook. Runs when
//! `HERALD_TEST_DATABASE_URL` names a PostgreSQL server (a fresh database is made and dropped).

use axum::body::Bytes;
use herald_core::ids::EventId;
use herald_testkit::database::postgres_or_skip;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::Herald;

const ADMIN: &str = "multinode-test-admin";
const NODES: usize = 3;
const WEBHOOKS: usize = 3;
const EVENTS: usize = 10_000;
const KEYS: usize = 100;
/// Requests in flight at once from the producer.
const PRODUCERS: usize = 48;
/// How long the test waits for stragglers before it fails instead of hanging.
const GIVE_UP_AFTER: Duration = Duration::from_secs(240);

// A short send timeout keeps the dispatcher's delivery lease (4 × timeout + 30 s) short,
// so the killed node's claimed deliveries are taken over within the test.
const CONFIG: &str = r#"
[webhooks]
allow_private_destinations = true
timeout = "1s"
schedule = ["0s", "1s", "2s", "5s", "10s", "30s", "60s"]
per_webhook_concurrency = 32
"#;

/// What the webhook receiver saw: per (webhook, event id) how many times, and per
/// (webhook, key) which sequences.
#[derive(Default)]
struct Seen {
    times: HashMap<(usize, String), u32>,
    sequences: HashMap<(usize, String), BTreeSet<i64>>,
    total: usize,
}

async fn start_receiver(seen: Arc<Mutex<Seen>>) -> String {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: Bytes| {
        let seen = seen.clone();
        async move {
            let hook: usize = uri
                .path()
                .trim_start_matches("/hooks/")
                .parse()
                .unwrap_or(usize::MAX);
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let id = body["id"].as_str().unwrap_or_default().to_owned();
            let key = body["key"].as_str().unwrap_or_default().to_owned();
            let mut seen = seen.lock().unwrap();
            seen.total += 1;
            *seen.times.entry((hook, id)).or_default() += 1;
            if let Some(sequence) = body["sequence"].as_i64() {
                seen.sequences
                    .entry((hook, key))
                    .or_default()
                    .insert(sequence);
            }
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_every_delivery_arrives() {
    // Dropped however the run ends.
    let Some(db) = postgres_or_skip().await else {
        return;
    };
    run(&db.url).await;
}

async fn run(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, CONFIG).unwrap();
    // Started together: they race to migrate the fresh database.
    let starting: Vec<_> = (0..NODES)
        .map(|_| {
            let (database, config) = (database.to_owned(), config.clone());
            std::thread::spawn(move || Herald::start_on(&[], &database, &config, ADMIN, "warn"))
        })
        .collect();
    let nodes: Vec<Herald> = starting.into_iter().map(|t| t.join().unwrap()).collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let nodes = Arc::new(Mutex::new(nodes.into_iter().map(Some).collect::<Vec<_>>()));
    let alive: Arc<Vec<AtomicBool>> = Arc::new((0..NODES).map(|_| AtomicBool::new(true)).collect());

    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = start_receiver(seen.clone()).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(PRODUCERS)
        .build()
        .unwrap();

    let (status, tenant) = post(&http, &bases[0], "/tenants", &json!({ "name": "acme" }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{tenant}");
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    for hook in 0..WEBHOOKS {
        let body = json!({ "url": format!("{receiver}/hooks/{hook}"), "events": ["order.*"], "tenant": tenant });
        let (status, reply) = post(&http, &bases[hook % NODES], "/webhooks", &body)
            .await
            .unwrap();
        assert_eq!(status, 201, "{reply}");
    }

    let started = Instant::now();
    let accepted = Arc::new(AtomicUsize::new(0));
    let victim = NODES - 1;
    let produce = futures::stream::iter(0..EVENTS).map(|i| {
        let (http, bases, alive, nodes, accepted, tenant) = (
            http.clone(),
            bases.clone(),
            alive.clone(),
            nodes.clone(),
            accepted.clone(),
            tenant.clone(),
        );
        async move {
            let body = json!({
                "id": EventId::generate().to_string(),
                "type": "order.updated",
                "tenant": tenant,
                "key": format!("order_{}", i % KEYS),
                "data": { "n": i },
            });
            // Round-robin; a node that is gone (or drops the request) sends us to the next,
            // with the same event id, so a retry of an event that did commit is deduplicated.
            let mut node = i % NODES;
            loop {
                if alive[node].load(Ordering::SeqCst) {
                    if let Ok((status, reply)) = post(&http, &bases[node], "/events", &body).await {
                        assert!(status == 202 || status == 200, "{status} {reply}");
                        break;
                    }
                }
                node = (node + 1) % NODES;
            }
            if accepted.fetch_add(1, Ordering::SeqCst) + 1 == EVENTS / 2 {
                alive[victim].store(false, Ordering::SeqCst);
                if let Some(mut n) = nodes.lock().unwrap()[victim].take() {
                    n.child.kill().unwrap(); // SIGKILL
                    n.child.wait().unwrap();
                }
                println!("killed node {victim} after {} events", EVENTS / 2);
            }
        }
    });
    use futures::StreamExt;
    produce
        .buffer_unordered(PRODUCERS)
        .collect::<Vec<()>>()
        .await;
    let posted_in = started.elapsed();
    println!(
        "{EVENTS} events accepted in {posted_in:?} ({:.0}/s)",
        EVENTS as f64 / posted_in.as_secs_f64()
    );

    let expected = EVENTS * WEBHOOKS;
    let give_up = Instant::now() + GIVE_UP_AFTER;
    loop {
        let distinct = seen.lock().unwrap().times.len();
        if distinct >= expected {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "only {distinct} of {expected} deliveries arrived"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_in = started.elapsed();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.times.len(), expected);
    for hook in 0..WEBHOOKS {
        let events = seen.times.keys().filter(|(h, _)| *h == hook).count();
        assert_eq!(events, EVENTS, "webhook {hook} got every event");
        for key in 0..KEYS {
            let sequences = seen
                .sequences
                .get(&(hook, format!("order_{key}")))
                .cloned()
                .unwrap_or_default();
            let want: BTreeSet<i64> = (1..=(EVENTS / KEYS) as i64).collect();
            assert_eq!(
                sequences, want,
                "webhook {hook}, key order_{key}: sequence 1..n complete"
            );
        }
    }
    let duplicates = seen.total - expected;
    println!(
        "all {expected} deliveries arrived {all_in:?} after the first event; {} requests received, {duplicates} duplicates",
        seen.total
    );
}
