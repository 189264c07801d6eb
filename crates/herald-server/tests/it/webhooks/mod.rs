//! Events and webhooks end to end over HTTP: `POST /events` (dedupe, sequences, schemas,
//! history), the webhook API (secrets, tenancy, SSRF), the delivery wire format
//! (checked with an independent HMAC and the Standard Webhooks library), retries on a
//! test-controlled clock, the delivery log (redeliver, replay), operation lifecycle
//! events, and fan-out past a dead endpoint.

mod api;
mod defects;
mod events;
mod fanout;
mod log;
mod ordered;
mod retries;
mod settings;
mod wire;

use herald_core::ids::EventId;
use herald_core::{Clock, Timestamp};
use herald_testkit::receiver::{Behavior, Received, Receiver};
use herald_testkit::*;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// Config that lets webhooks reach the loopback receivers, plus `extra` lines in `[webhooks]`.
fn hooks_config(extra: &str) -> String {
    format!("[webhooks]\nallow_private_destinations = true\n{extra}\n")
}

/// Registers a webhook; returns its id and signing secret.
async fn register(app: &TestApp, key: &str, body: Value) -> (String, String) {
    let r = app.post("/webhooks", key, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["signing_secret"].as_str().unwrap().to_owned(),
    )
}

/// `POST /events` as admin; asserts 202 and returns `{id, sequence}`.
async fn publish(app: &TestApp, body: Value) -> Value {
    let r = app.post("/events", ADMIN, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    r.body
}

async fn post_with_idempotency_key(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &Value,
    idem: &str,
) -> Reply {
    let resp = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .await
        .unwrap();
    into_reply(resp).await
}

async fn list(app: &TestApp, path: &str, key: &str, field: &str) -> Vec<Value> {
    let r = app.get(path, key).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    r.body[field]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no `{field}` in {:?}", r.body))
        .clone()
}

async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    list(app, &format!("/deliveries?{query}"), ADMIN, "deliveries").await
}

async fn delivery(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/deliveries/{id}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// Waits until the webhook has exactly one delivery and returns its id.
async fn sole_delivery(app: &TestApp, webhook: &str) -> String {
    app.eventually("the delivery to exist", || async {
        deliveries(app, &format!("webhook={webhook}")).await.len() == 1
    })
    .await;
    deliveries(app, &format!("webhook={webhook}")).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until `n` attempts of the delivery are recorded, then returns the delivery.
async fn after_attempts(app: &TestApp, id: &str, n: usize) -> Value {
    app.eventually(&format!("attempt {n} of {id} to be recorded"), || async {
        let d = delivery(app, id).await;
        d["attempts"] == n && d["attempt_log"].as_array().unwrap().len() == n
    })
    .await;
    delivery(app, id).await
}

fn ts(v: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v:?}")))
        .unwrap_or_else(|| panic!("not RFC 3339: {v:?}"))
}

fn clock_now(app: &TestApp) -> Timestamp {
    app.manual_clock.as_ref().unwrap().now()
}

/// Moves the manual clock forward to exactly `t`.
fn advance_to(app: &TestApp, t: Timestamp) {
    let now = clock_now(app);
    assert!(t >= now, "{t:?} is in the past (now {now:?})");
    app.advance(now.until(t));
}

/// Asserts `gap` is `wait` give or take the ±10 % jitter (and a millisecond of rounding).
fn assert_jittered(gap: Duration, wait: Duration, what: &str) {
    let low = wait.mul_f64(0.9).saturating_sub(Duration::from_millis(1));
    let high = wait.mul_f64(1.1) + Duration::from_millis(1);
    assert!(
        gap >= low && gap <= high,
        "{what}: {gap:?} is not {wait:?} ±10%"
    );
}

/// Shows that nothing more arrives for a short while (no clock movement).
async fn assert_quiet(receiver: &Receiver, expected: usize, what: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), expected, "{what}");
}

/// `sha256=HEX` computed here, independently of Herald's signing code.
fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `sha256=` values of `X-Signature`, each checked for shape.
fn signature_values(r: &Received) -> Vec<String> {
    let header = r.header("x-signature");
    let values: Vec<String> = header.split(' ').map(str::to_owned).collect();
    for v in &values {
        let hex = v
            .strip_prefix("sha256=")
            .unwrap_or_else(|| panic!("{header:?}"));
        assert_eq!(hex.len(), 64, "{header:?}");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "lowercase hex: {header:?}"
        );
    }
    values
}

fn assert_signed_by(r: &Received, secret: &str) {
    let expected = expected_signature(secret, &r.header("x-timestamp"), &r.body);
    assert!(
        signature_values(r).contains(&expected),
        "X-Signature {:?} has no valid signature by this secret",
        r.header("x-signature")
    );
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}
