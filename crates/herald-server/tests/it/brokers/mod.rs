//! Broker routes against the real brokers on loopback, consumed with real clients: every
//! event arrives, in key order, with its dedupe id; a broker that goes away mid-stream and
//! comes back loses nothing; a message refused for good is dead-lettered and `:redeliver`
//! sends it again. Each broker's tests run when its variable is set
//! (`HERALD_TEST_NATS_URL`, `HERALD_TEST_RABBITMQ_URL`, `HERALD_TEST_REDIS_URL`,
//! `HERALD_TEST_KAFKA_BOOTSTRAP`, `HERALD_TEST_SQS_URL`, `HERALD_TEST_PUBSUB_EMULATOR_HOST`)
//! and print "skipped: …" otherwise.
//!
//! The scenarios every broker shares are written once, in [`scenarios`], over the
//! [`Broker`] trait; each broker's module implements it and runs them, beside the tests
//! only that broker has.

mod kafka;
mod nats;
mod pubsub;
mod rabbitmq;
mod redis;
mod scenarios;
mod sqs;
mod tansu;

use herald_testkit::proxy::Proxy;
use herald_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

const KEYS: [&str; 3] = ["pay_1", "pay_2", "pay_3"];

/// NATS tests share the server; the one that restarts it runs alone.
static NATS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn broker_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            // Straight to stderr, past the test harness's capture, so CI logs show the skip.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {var} is not set, so this test has no broker to talk to (scripts/ci-brokers.sh sets it)"
            );
            None
        }
    }
}

/// A topic no earlier run used (brokers keep topics; tests never delete them).
fn fresh(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn config(broker: &str, topic: &str, broker_table: &str) -> String {
    format!(
        r#"
[[routes]]
name = "test-route"
events = ["payment.*"]
broker = "{broker}"
topic = "{topic}"
key = "/data/payment_id"

[brokers]
timeout = "3s"
max_backoff = "1s"

{broker_table}
"#
    )
}

/// One event as posted: its id, its key and its place in its key's line.
#[derive(Debug, Clone)]
struct Posted {
    id: String,
    key: String,
    n: usize,
}

/// Posts `per_key` events for each key, keys interleaved, numbered from `from`.
async fn post_events(app: &TestApp, per_key: usize, from: usize) -> Vec<Posted> {
    let mut out = Vec::new();
    for n in from..from + per_key {
        for key in KEYS {
            let r = app
                .post(
                    "/events",
                    ADMIN,
                    json!({ "type": "payment.updated", "key": key,
                            "data": { "payment_id": key, "n": n } }),
                )
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
            out.push(Posted {
                id: r.body["id"].as_str().unwrap().to_owned(),
                key: key.to_owned(),
                n,
            });
        }
    }
    out
}

async fn route_deliveries(app: &TestApp) -> Vec<Value> {
    let r = app
        .get("/deliveries?route=test-route&page_size=1000", ADMIN)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["deliveries"].as_array().unwrap().clone()
}

/// Waits (at most 60 s) until `count` route deliveries have succeeded.
async fn all_published(app: &TestApp, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = route_deliveries(app).await;
        if d.len() == count && d.iter().all(|d| d["status"] == "succeeded") {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all {count} deliveries were published: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 60 s) until the route's deliveries satisfy `check`; shows them if they never do.
async fn deliveries_until(app: &TestApp, what: &str, check: impl Fn(&[Value]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = route_deliveries(app).await;
        if check(&d) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 60 s) until the route's four deliveries are one dead-lettered and three
/// published (`what` names it if they never are); returns the dead-lettered one.
async fn one_dead_lettered_three_published(app: &TestApp, what: &str) -> Value {
    deliveries_until(app, what, |d| {
        d.len() == 4
            && d.iter().filter(|d| d["status"] == "failed").count() == 1
            && d.iter().filter(|d| d["status"] == "succeeded").count() == 3
    })
    .await;
    app.get("/deliveries?route=test-route&status=failed", ADMIN)
        .await
        .body["deliveries"][0]
        .clone()
}

/// Checks what a consumer read: `(dedupe id from the broker's header or field, body)` in
/// the order read (per partition for Kafka). Every posted event is there, its dedupe id is
/// its event id, and each key's events come in the order they were posted.
fn check_arrivals(posted: &[Posted], got: &[(String, Value)]) {
    let mut seen = HashSet::new();
    let mut last_n: HashMap<String, i64> = HashMap::new();
    for (dedupe_id, body) in got {
        assert_eq!(
            body["id"].as_str(),
            Some(dedupe_id.as_str()),
            "dedupe id is the event id: {body}"
        );
        assert_eq!(body["type"], "payment.updated");
        let key = body["data"]["payment_id"].as_str().unwrap().to_owned();
        assert_eq!(body["key"], key.as_str());
        assert!(body["sequence"].as_i64().unwrap() >= 1, "{body}");
        if !seen.insert(dedupe_id.clone()) {
            continue; // an at-least-once repeat; consumers drop it by id
        }
        let n = body["data"]["n"].as_i64().unwrap();
        if let Some(prev) = last_n.get(&key) {
            assert!(n > *prev, "key {key}: event {n} arrived after {prev}");
        }
        last_n.insert(key, n);
    }
    for p in posted {
        assert!(
            seen.contains(&p.id),
            "event {} ({} #{}) never arrived",
            p.id,
            p.key,
            p.n
        );
    }
    assert_eq!(seen.len(), posted.len(), "only the posted events arrive");
}

async fn check_delivery_log(app: &TestApp, broker: &str, topic: &str) {
    let d = route_deliveries(app).await;
    let first = &d[0];
    assert_eq!(first["route"], "test-route");
    assert_eq!(first["broker"], broker);
    assert_eq!(first["topic"], topic);
    assert!(first["webhook_id"].is_null());
    let one = app
        .get(
            &format!("/deliveries/{}", first["id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    let log = one.body["attempt_log"].as_array().unwrap();
    assert!(!log.is_empty());
    assert!(log.last().unwrap()["error"].is_null(), "{log:?}");
}

/// A W3C `traceparent` whose trace id is the event id's 128 bits, as on webhook deliveries.
fn assert_trace_of(traceparent: &str, event_id: &str) {
    let id = herald_core::ids::EventId::parse(event_id).unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], format!("{:032x}", id.as_u128()), "{traceparent}");
    assert!(
        parts[2].len() == 16 && parts[2] != "0000000000000000",
        "{traceparent}"
    );
    assert_eq!(parts[3], "01");
}

/// A broker as the shared scenarios see it: how a route names it, how Herald is pointed
/// at it, and how a test reads back what Herald published.
trait Broker {
    /// `broker = "…"` in a route, and the delivery log's `broker`.
    const KIND: &'static str;
    /// The start of a fresh topic's name (each broker has its own naming rules).
    const TOPIC_PREFIX: &'static str;
    /// The size of the event's `blob` that makes a message too large for this broker.
    const OVERSIZE: usize = 1_200_000;
    /// What reads a topic; made before anything is published (a RabbitMQ queue must be
    /// bound by then), `()` where reading needs nothing set up.
    type Reader;

    /// A topic no earlier run used, named by this broker's rules.
    fn fresh_topic(&self) -> String {
        fresh(Self::TOPIC_PREFIX)
    }
    /// The `[brokers.…]` table that points Herald at `url`.
    fn table(&self, url: &str) -> String;
    /// Where Herald connects when nothing stands in between.
    fn url(&self) -> &str;
    async fn reader(&self, topic: &str) -> Self::Reader;
    /// What a consumer reads: `(dedupe id, body)` in the order read, at least `expected`.
    async fn read(
        &self,
        reader: &mut Self::Reader,
        topic: &str,
        expected: usize,
    ) -> Vec<(String, Value)>;
}

/// A broker Herald can reach through a [`Proxy`] the test takes down and brings back.
trait Proxied: Broker {
    /// `host:port` of the broker itself.
    fn target(&self) -> String;
    /// The URL Herald is given to reach the broker through the proxy on `port`.
    fn through(&self, port: u16) -> String;
}

/// Something between Herald and its broker that a test can cut and restore.
trait Outage {
    fn down(&self);
    fn up(&self);
}

impl Outage for Proxy {
    fn down(&self) {
        Proxy::down(self)
    }
    fn up(&self) {
        Proxy::up(self)
    }
}

/// A proxy in front of `broker` and the URL that sends Herald through it.
async fn proxied<B: Proxied>(broker: &B) -> (Proxy, String) {
    let proxy = Proxy::start(broker.target()).await;
    let url = broker.through(proxy.port);
    (proxy, url)
}

/// `host:port` of a URL (`default_port` when it names none).
fn url_target(url: &str, default_port: u16) -> String {
    let parsed = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(default_port)
    )
}

/// `url` with its host and port replaced by `127.0.0.1:<port>`.
fn url_through(url: &str, port: u16) -> String {
    let mut via_proxy = url::Url::parse(url).unwrap();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(port)).unwrap();
    via_proxy.to_string()
}
