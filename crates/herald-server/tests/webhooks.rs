//! Events and webhooks end to end over HTTP: `POST /events` (dedupe, sequences, schemas,
//! history), the webhook API (secrets, tenancy, SSRF), the delivery wire format
//! (checked with an independent HMAC and the Standard Webhooks library), retries on a
//! test-controlled clock, the delivery log (redeliver, replay), operation lifecycle
//! events, and fan-out past a dead endpoint.

mod common;

use common::receiver::{Behavior, Received, Receiver};
use common::*;
use herald_core::ids::EventId;
use herald_core::{Clock, Timestamp};
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

// ---------------------------------------------------------------- events

#[tokio::test]
async fn events_are_accepted_deduplicated_and_numbered_per_key() {
    let app = spawn_app(&hooks_config("")).await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, _) = app.tenant("globex").await;
    let receiver = Receiver::start().await;
    register(
        &app,
        &a_key,
        json!({ "url": receiver.url("/hooks"), "events": ["payment.*"] }),
    )
    .await;

    // Sequences count per (tenant, key).
    let ev = |tenant: &str, key: &str, n: u32| json!({ "type": "payment.succeeded", "tenant": tenant, "key": key, "data": { "n": n } });
    let first = publish(&app, ev(&a, "pay_1", 1)).await;
    assert!(first["id"].as_str().unwrap().starts_with("evt_"), "{first}");
    assert_eq!(keys_of(&first), set(&["id", "sequence"]));
    assert_eq!(first["sequence"], 1);
    assert_eq!(publish(&app, ev(&a, "pay_1", 2)).await["sequence"], 2);
    assert_eq!(publish(&app, ev(&a, "pay_2", 1)).await["sequence"], 1);
    assert_eq!(publish(&app, ev(&a, "pay_1", 3)).await["sequence"], 3);
    assert_eq!(publish(&app, ev(&b, "pay_1", 1)).await["sequence"], 1);
    assert_eq!(publish(&app, ev(&a, "pay_2", 2)).await["sequence"], 2);
    let unkeyed = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": a, "data": {} }),
    )
    .await;
    assert!(unkeyed.get("sequence").is_none(), "{unkeyed}");
    receiver.wait_for(6, Duration::from_secs(5)).await;

    // Dedupe by `id`: the same body gets the same answer and nothing new.
    let id = EventId::generate().to_string();
    let body = json!({ "id": id, "type": "payment.succeeded", "tenant": a, "key": "pay_9", "data": { "amount": 10 } });
    let once = publish(&app, body.clone()).await;
    assert_eq!(once, json!({ "id": id, "sequence": 1 }));
    let twice = publish(&app, body.clone()).await;
    assert_eq!(twice, once);
    let mut changed = body.clone();
    changed["data"]["amount"] = json!(11);
    let reused = app.post("/events", ADMIN, changed).await;
    assert_problem(
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let stored = list(&app, "/events?key=pay_9", ADMIN, "events").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["data"], json!({ "amount": 10 }));
    // The duplicate did not use up a sequence number.
    assert_eq!(publish(&app, ev(&a, "pay_9", 0)).await["sequence"], 2);

    // Dedupe by Idempotency-Key.
    let body = json!({ "type": "payment.failed", "tenant": a, "key": "pay_7", "data": { "reason": "declined" } });
    let r1 = post_with_idempotency_key(&app, "/events", ADMIN, &body, "idem-1").await;
    assert_eq!(r1.status, StatusCode::ACCEPTED, "{:?}", r1.body);
    let r2 = post_with_idempotency_key(&app, "/events", ADMIN, &body, "idem-1").await;
    assert_eq!(r2.status, StatusCode::ACCEPTED, "{:?}", r2.body);
    assert_eq!(r2.body, r1.body);
    assert_eq!(r1.body["sequence"], 1);
    let mut other = body.clone();
    other["data"]["reason"] = json!("expired");
    let r3 = post_with_idempotency_key(&app, "/events", ADMIN, &other, "idem-1").await;
    assert_problem(
        &r3,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(
        list(&app, "/events?key=pay_7", ADMIN, "events").await.len(),
        1
    );

    // Each new event reached the webhook once; duplicates made no deliveries.
    receiver.wait_for(9, Duration::from_secs(5)).await;
    assert_quiet(&receiver, 9, "duplicates are not delivered again").await;
    let ids: BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("x-event-id"))
        .collect();
    assert_eq!(ids.len(), 9);
}

/// Two nodes on one PostgreSQL database: a schema registered through either is enforced
/// by the other within moments (its notification reloads the other's compiled schemas),
/// not only after a restart.
#[tokio::test]
async fn a_schema_registered_on_one_node_is_enforced_by_the_others() {
    let a = spawn_app("").await;
    let Some(b) = a.second_node("").await else {
        println!("skipped: needs PostgreSQL (HERALD_TEST_HTTP_DATABASE_URL); SQLite is one node");
        return;
    };
    let bad = json!({ "type": "invoice.paid", "data": { "amount": "ten" } });
    let good = json!({ "type": "invoice.paid", "data": { "amount": 10 } });
    // No schema yet: node B takes anything.
    publish(&b, bad.clone()).await;
    let r = a
        .call(
            Method::PUT,
            "/event-types/invoice.paid",
            ADMIN,
            Some(json!({ "schema": {
                "type": "object",
                "required": ["amount"],
                "properties": { "amount": { "type": "integer" } }
            } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    b.eventually(
        "node B refuses data against node A's new schema",
        || async {
            b.post("/events", ADMIN, bad.clone()).await.status == StatusCode::UNPROCESSABLE_ENTITY
        },
    )
    .await;
    let r = b.post("/events", ADMIN, bad.clone()).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "SCHEMA_VIOLATION");
    publish(&b, good.clone()).await;

    // And back the other way: B relaxes the schema, A follows.
    let r = b
        .call(
            Method::PUT,
            "/event-types/invoice.paid",
            ADMIN,
            Some(json!({ "schema": { "type": "object" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    a.eventually("node A takes data node B's schema now allows", || async {
        a.post("/events", ADMIN, bad.clone()).await.status == StatusCode::ACCEPTED
    })
    .await;
}

#[tokio::test]
async fn event_schemas_from_the_api_and_config_refuse_bad_data() {
    let config = hooks_config("")
        + r#"
[[event_types]]
name = "invoice.paid"
schema = { type = "object", required = ["amount"], properties = { amount = { type = "integer", minimum = 1 } } }
"#;
    let app = spawn_app(&config).await;
    let (t, t_key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    register(
        &app,
        &t_key,
        json!({ "url": receiver.url("/h"), "events": ["invoice.*", "payment.*"] }),
    )
    .await;

    let schema = json!({ "type": "object", "required": ["payment_id"],
                         "properties": { "payment_id": { "type": "string" } } });
    let put = app
        .call(
            Method::PUT,
            "/event-types/payment.succeeded",
            ADMIN,
            Some(json!({ "schema": schema })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    // Only admins publish events and register schemas.
    let r = app
        .call(
            Method::PUT,
            "/event-types/x.y",
            &t_key,
            Some(json!({ "schema": {} })),
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = app
        .post(
            "/events",
            &t_key,
            json!({ "type": "x.y", "tenant": t, "data": {} }),
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let types = list(&app, "/event-types", ADMIN, "event_types").await;
    let names: BTreeSet<String> = types
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, set(&["invoice.paid", "payment.succeeded"]));

    for (event_type, data) in [
        ("payment.succeeded", json!({ "amount": 5 })),
        ("payment.succeeded", json!({ "payment_id": 42 })),
        ("invoice.paid", json!({ "amount": "ten" })),
        ("invoice.paid", json!({ "amount": 0 })),
        ("invoice.paid", json!({})),
    ] {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({ "type": event_type, "tenant": t, "key": "k1", "data": data }),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "SCHEMA_VIOLATION");
    }
    assert!(list(&app, "/events", ADMIN, "events").await.is_empty());
    assert!(deliveries(&app, "").await.is_empty());

    // Valid data passes; the refused events used no sequence numbers.
    let ok = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "k1", "data": { "payment_id": "pay_1" } }),
    )
    .await;
    assert_eq!(ok["sequence"], 1);
    publish(
        &app,
        json!({ "type": "invoice.paid", "tenant": t, "data": { "amount": 3 } }),
    )
    .await;
    // A type without a schema takes anything.
    publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": [1, 2] }),
    )
    .await;
    assert_eq!(list(&app, "/events", ADMIN, "events").await.len(), 3);
    receiver.wait_for(3, Duration::from_secs(5)).await;
    assert_quiet(&receiver, 3, "refused events are never delivered").await;

    // A schema that is not a JSON Schema is refused.
    let bad = app
        .call(
            Method::PUT,
            "/event-types/refund.created",
            ADMIN,
            Some(json!({ "schema": { "type": 12 } })),
        )
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
}

#[tokio::test]
async fn event_history_filters_and_pages() {
    let app = spawn_app("").await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, b_key) = app.tenant("globex").await;
    let mut ids = vec![];
    for (ty, key) in [
        ("payment.succeeded", "pay_1"),
        ("payment.failed", "pay_2"),
        ("payment.succeeded", "pay_2"),
        ("refund.created", "pay_1"),
        ("payment.succeeded", "pay_1"),
    ] {
        let r = publish(
            &app,
            json!({ "type": ty, "tenant": a, "key": key, "data": {} }),
        )
        .await;
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": b, "key": "pay_1", "data": {} }),
    )
    .await;
    let ids_of = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // A tenant sees its own history, oldest first.
    let all = list(&app, "/events", &a_key, "events").await;
    assert_eq!(ids_of(&all), ids);
    assert_eq!(all[0]["tenant"], a);
    assert_eq!(all[0]["key"], "pay_1");
    assert_eq!(all[0]["sequence"], 1);
    assert_eq!(list(&app, "/events", &b_key, "events").await.len(), 1);
    assert_eq!(list(&app, "/events", ADMIN, "events").await.len(), 6);

    let by_type = list(&app, "/events?type=payment.succeeded", &a_key, "events").await;
    assert_eq!(
        ids_of(&by_type),
        vec![ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );
    let by_key = list(&app, "/events?key=pay_1", &a_key, "events").await;
    assert_eq!(
        ids_of(&by_key),
        vec![ids[0].clone(), ids[3].clone(), ids[4].clone()]
    );
    let seqs: Vec<i64> = by_key
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let after = list(&app, &format!("/events?after={}", ids[1]), &a_key, "events").await;
    assert_eq!(ids_of(&after), ids[2..].to_vec());
    let combined = list(
        &app,
        &format!("/events?type=payment.succeeded&key=pay_1&after={}", ids[0]),
        &a_key,
        "events",
    )
    .await;
    assert_eq!(ids_of(&combined), vec![ids[4].clone()]);

    // Cursor pages: page_size and page_token.
    let mut seen = vec![];
    let mut token = String::new();
    for _ in 0..5 {
        let r = app
            .get(&format!("/events?page_size=2&page_token={token}"), &a_key)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let page = r.body["events"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(ids_of(page));
        token = r.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ids, "pages cover the history once, in order");
    let r = app.get(&format!("/events/{}", ids[0]), &b_key).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
}

// ---------------------------------------------------------------- webhook API

#[tokio::test]
async fn webhook_api_registers_reads_updates_and_deletes() {
    let app = spawn_app(&hooks_config("")).await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, b_key) = app.tenant("globex").await;
    let receiver = Receiver::start().await;

    let created = app
        .post(
            "/webhooks",
            &a_key,
            json!({ "url": receiver.url("/hooks/payments"),
                    "events": ["payment.succeeded", "payment.failed"],
                    "signing_secret_version": 1 }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"));
    let secret = created.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{secret}");
    assert_eq!(created.body["signing_secret_version"], 1);
    assert_eq!(created.body["tenant"], a);
    assert_eq!(created.body["url"], receiver.url("/hooks/payments"));
    assert_eq!(
        created.body["events"],
        json!(["payment.succeeded", "payment.failed"])
    );
    assert_eq!(created.body["disabled"], false);

    let no_secret = |what: &str, v: &Value| {
        assert!(v.get("signing_secret").is_none(), "{what}: {v}");
        assert!(!v.to_string().contains(&secret), "{what} leaks the secret");
    };
    let got = app.get(&format!("/webhooks/{id}"), &a_key).await;
    assert_eq!(got.status, StatusCode::OK);
    no_secret("GET", &got.body);
    let mut expected = created.body.clone();
    expected.as_object_mut().unwrap().remove("signing_secret");
    assert_eq!(got.body, expected);
    let listed = list(&app, "/webhooks", &a_key, "webhooks").await;
    assert_eq!(listed.len(), 1);
    no_secret("list", &listed[0]);
    assert_eq!(listed[0]["id"], id);

    // Another tenant: 404 everywhere, and an empty list.
    for (method, path) in [
        (Method::GET, format!("/webhooks/{id}")),
        (Method::PATCH, format!("/webhooks/{id}")),
        (Method::DELETE, format!("/webhooks/{id}")),
        (Method::POST, format!("/webhooks/{id}:disable")),
        (Method::POST, format!("/webhooks/{id}:rotateSecret")),
        (Method::POST, format!("/webhooks/{id}:replay")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({ "disabled": true }));
        let r = app.call(method.clone(), &path, &b_key, body).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    assert!(list(&app, "/webhooks", &b_key, "webhooks").await.is_empty());
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &a_key).await.body["disabled"],
        false,
        "the other tenant changed nothing"
    );
    // A tenant key cannot register for another tenant; an admin can, naming it.
    let r = app
        .post(
            "/webhooks",
            &a_key,
            json!({ "url": receiver.url("/x"), "events": ["a.b"], "tenant": b }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let (b_hook, _) = register(
        &app,
        ADMIN,
        json!({ "url": receiver.url("/b"), "events": ["a.b"], "tenant": b }),
    )
    .await;
    let b_list = list(&app, "/webhooks", &b_key, "webhooks").await;
    assert_eq!(b_list.len(), 1);
    assert_eq!(b_list[0]["id"], b_hook);
    assert_eq!(b_list[0]["tenant"], b);
    assert_eq!(list(&app, "/webhooks", ADMIN, "webhooks").await.len(), 2);

    // PATCH events, url, disabled.
    let patched = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &a_key,
            Some(json!({ "events": ["refund.*"], "url": receiver.url("/v2"), "disabled": true })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    no_secret("PATCH", &patched.body);
    assert_eq!(patched.body["events"], json!(["refund.*"]));
    assert_eq!(patched.body["url"], receiver.url("/v2"));
    assert_eq!(patched.body["disabled"], true);
    let got = app.get(&format!("/webhooks/{id}"), &a_key).await.body;
    assert_eq!(got["events"], json!(["refund.*"]));
    assert_eq!(got["disabled"], true);
    let bad = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &a_key,
            Some(json!({ "events": ["not a type"] })),
        )
        .await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");

    // :enable and :disable.
    let en = app
        .post(&format!("/webhooks/{id}:enable"), &a_key, json!({}))
        .await;
    assert_eq!(en.status, StatusCode::OK, "{:?}", en.body);
    assert_eq!(en.body["disabled"], false);
    no_secret(":enable", &en.body);
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &a_key).await.body["disabled"],
        false
    );
    let dis = app
        .post(&format!("/webhooks/{id}:disable"), &a_key, json!({}))
        .await;
    assert_eq!(dis.status, StatusCode::OK, "{:?}", dis.body);
    assert_eq!(dis.body["disabled"], true);
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &a_key).await.body["disabled"],
        true
    );

    // Rotation shows the new secret once.
    let rotated = app
        .post(&format!("/webhooks/{id}:rotateSecret"), &a_key, json!({}))
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_secret = rotated.body["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated.body["signing_secret_version"], 2);
    let got = app.get(&format!("/webhooks/{id}"), &a_key).await.body;
    no_secret("GET after rotation", &got);
    assert!(!got.to_string().contains(&new_secret));
    assert_eq!(got["signing_secret_version"], 2);

    // Delete: then 404.
    let del = app
        .call(Method::DELETE, &format!("/webhooks/{id}"), &a_key, None)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{:?}", del.body);
    let gone = app.get(&format!("/webhooks/{id}"), &a_key).await;
    assert_problem(&gone, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert!(list(&app, "/webhooks", &a_key, "webhooks").await.is_empty());
    let again = app
        .call(Method::DELETE, &format!("/webhooks/{id}"), &a_key, None)
        .await;
    assert_problem(&again, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn private_destinations_are_refused_by_default() {
    let app = spawn_app("").await; // allow_private_destinations defaults to false
    let (_, key) = app.tenant("acme").await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://192.168.1.1/hook",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0:8288/",
    ] {
        let r = app
            .post(
                "/webhooks",
                &key,
                json!({ "url": url, "events": ["payment.*"] }),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("allow_private_destinations"),
            "{url}: {:?}",
            r.body
        );
    }
    for url in ["ftp://93.184.216.34/x", "http://user:pw@93.184.216.34/"] {
        let r = app
            .post("/webhooks", &key, json!({ "url": url, "events": ["a.b"] }))
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    }
    assert!(list(&app, "/webhooks", &key, "webhooks").await.is_empty());

    // A public address is accepted, and cannot be moved to a private one.
    let (id, _) = register(
        &app,
        &key,
        json!({ "url": "https://93.184.216.34/hooks", "events": ["payment.*"] }),
    )
    .await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &key,
            Some(json!({ "url": "http://169.254.169.254/latest/meta-data" })),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &key).await.body["url"],
        "https://93.184.216.34/hooks"
    );
}

#[tokio::test]
async fn wildcards_match_and_webhooks_only_get_their_tenants_events() {
    let app = spawn_app(&hooks_config("")).await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, b_key) = app.tenant("globex").await;
    let (ra, ra_refunds, rb) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    register(
        &app,
        &a_key,
        json!({ "url": ra.url("/p"), "events": ["payment.*"] }),
    )
    .await;
    register(
        &app,
        &a_key,
        json!({ "url": ra_refunds.url("/r"), "events": ["refund.created"] }),
    )
    .await;
    register(
        &app,
        &b_key,
        json!({ "url": rb.url("/p"), "events": ["payment.*"] }),
    )
    .await;

    let ev = |tenant: Option<&str>, ty: &str| json!({ "type": ty, "tenant": tenant, "data": { "t": ty } });
    let mut a_payments = BTreeSet::new();
    for ty in [
        "payment.succeeded",
        "payment.failed",
        "payment.refund.partial",
    ] {
        let r = publish(&app, ev(Some(&a), ty)).await;
        a_payments.insert(r["id"].as_str().unwrap().to_owned());
    }
    for ty in [
        "payments.succeeded",
        "payment",
        "refund.updated",
        "other.payment.x",
    ] {
        publish(&app, ev(Some(&a), ty)).await;
    }
    let refund = publish(&app, ev(Some(&a), "refund.created")).await;
    let b_event = publish(&app, ev(Some(&b), "payment.succeeded")).await;
    publish(&app, ev(None, "payment.succeeded")).await; // no tenant: no tenant's webhook

    let got_a = ra.wait_for(3, Duration::from_secs(5)).await;
    ra_refunds.wait_for(1, Duration::from_secs(5)).await;
    rb.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ra.count(), 3, "only payment.<…> events of tenant A");
    assert_eq!(ra_refunds.count(), 1);
    assert_eq!(rb.count(), 1);
    let a_ids: BTreeSet<String> = got_a.iter().map(|r| r.header("x-event-id")).collect();
    assert_eq!(a_ids, a_payments);
    assert_eq!(ra_refunds.received()[0].header("x-event-id"), refund["id"]);
    assert_eq!(rb.received()[0].header("x-event-id"), b_event["id"]);
    assert_eq!(
        rb.received()[0].json()["data"],
        json!({ "t": "payment.succeeded" })
    );
}

// ---------------------------------------------------------------- wire format

#[tokio::test]
async fn deliveries_carry_the_documented_headers_body_and_signature() {
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (_, secret) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/hooks/payments"), "events": ["payment.succeeded"] }),
    )
    .await;
    let data =
        json!({ "payment_id": "pay_42", "amount": 4599, "currency": "USD", "note": "ünïcode ✓" });
    let keyed = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "pay_42", "data": data }),
    )
    .await;
    let unkeyed = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": { "x": 1 } }),
    )
    .await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let find = |id: &Value| {
        got.iter()
            .find(|r| r.header("x-event-id") == id.as_str().unwrap())
            .unwrap_or_else(|| panic!("no delivery of {id}"))
            .clone()
    };
    let r = find(&keyed["id"]);
    assert_eq!(r.path, "/hooks/payments");
    assert_eq!(r.header("x-event-type"), "payment.succeeded");
    assert_eq!(r.header("content-type"), "application/json");
    let stamp = r.header("x-timestamp");
    assert_eq!(stamp.len(), "2026-04-10T15:20:00Z".len(), "{stamp}");
    assert!(stamp.ends_with('Z') && !stamp.contains('.'), "{stamp}");
    let sent_at = Timestamp::parse_rfc3339(&stamp).expect("RFC 3339");
    let now = herald_core::SystemClock.now();
    assert!(
        sent_at <= now && sent_at >= now.minus(Duration::from_secs(30)),
        "{stamp}"
    );
    let sigs = signature_values(&r);
    assert_eq!(sigs.len(), 1, "one live secret, one signature");
    assert_eq!(sigs[0], expected_signature(&secret, &stamp, &r.body));
    // The check can fail: another secret, another timestamp or another body does not verify.
    assert_ne!(sigs[0], expected_signature("hsec_other", &stamp, &r.body));
    assert_ne!(
        sigs[0],
        expected_signature(&secret, "2026-04-10T15:20:00Z", &r.body)
    );
    let mut tampered = r.body.to_vec();
    tampered.push(b' ');
    assert_ne!(sigs[0], expected_signature(&secret, &stamp, &tampered));

    let body = r.json();
    assert_eq!(
        keys_of(&body),
        set(&["id", "type", "created_at", "data", "key", "sequence"])
    );
    assert_eq!(body["id"], keyed["id"]);
    assert_eq!(body["type"], "payment.succeeded");
    assert_eq!(body["data"], data);
    assert_eq!(body["key"], "pay_42");
    assert_eq!(body["sequence"], 1);
    let created = body["created_at"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && !created.contains('.'),
        "{created}"
    );
    assert!(Timestamp::parse_rfc3339(created).is_some());

    let r2 = find(&unkeyed["id"]);
    assert_signed_by(&r2, &secret);
    assert_eq!(
        keys_of(&r2.json()),
        set(&["id", "type", "created_at", "data"])
    );
    assert_eq!(r2.json()["data"], json!({ "x": 1 }));
}

#[tokio::test]
async fn during_rotation_both_secrets_sign_then_only_the_new_one() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (id, old) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let rotated = app
        .post(
            &format!("/webhooks/{id}:rotateSecret"),
            &key,
            json!({ "grace": "1h" }),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new = rotated.body["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let r = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    let sigs = signature_values(&r);
    assert_eq!(sigs.len(), 2, "{:?}", r.header("x-signature"));
    assert!(r.header("x-signature").contains("sha256=") && r.header("x-signature").contains(' '));
    let stamp = r.header("x-timestamp");
    let by_old = expected_signature(&old, &stamp, &r.body);
    let by_new = expected_signature(&new, &stamp, &r.body);
    assert_ne!(by_old, by_new);
    assert!(sigs.contains(&by_old), "the old secret still verifies");
    assert!(sigs.contains(&by_new), "the new secret verifies");

    // After the grace period only the new secret signs.
    app.advance(Duration::from_secs(3601));
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let r = receiver.wait_for(2, Duration::from_secs(5)).await[1].clone();
    let sigs = signature_values(&r);
    assert_eq!(
        sigs,
        vec![expected_signature(&new, &r.header("x-timestamp"), &r.body)]
    );
}

#[tokio::test]
async fn standard_webhooks_format_verifies_with_the_reference_library() {
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let created = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": receiver.url("/sw"), "events": ["payment.*"], "format": "standard-webhooks" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["format"], "standard-webhooks");
    let secret = created.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let ev = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "pay_1", "data": { "amount": 1 } }),
    )
    .await;
    let r = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    assert_eq!(r.header("webhook-id"), ev["id"]);
    assert!(r.header("webhook-signature").starts_with("v1,"));
    assert_eq!(r.header("content-type"), "application/json");
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    wh.verify(&r.body, &r.headers)
        .expect("the Standard Webhooks library accepts the delivery");
    let mut tampered = r.body.to_vec();
    tampered[0] = b' ';
    assert!(wh.verify(&tampered, &r.headers).is_err());
    let other = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(other.verify(&r.body, &r.headers).is_err());
    let body = r.json();
    assert_eq!(body["id"], ev["id"]);
    assert_eq!(body["sequence"], 1);
    assert_eq!(body["data"], json!({ "amount": 1 }));

    // During a rotation both secrets verify with the library.
    let id = created.body["id"].as_str().unwrap();
    let rotated = app
        .post(&format!("/webhooks/{id}:rotateSecret"), &key, json!({}))
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_secret = rotated.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": {} }),
    )
    .await;
    let r = receiver.wait_for(2, Duration::from_secs(5)).await[1].clone();
    assert_eq!(r.header("webhook-signature").matches("v1,").count(), 2);
    for s in [&secret, &new_secret] {
        standardwebhooks::Webhook::new(s)
            .unwrap()
            .verify(&r.body, &r.headers)
            .expect("each live secret verifies during rotation");
    }
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn failed_attempts_are_retried_on_the_schedule_then_the_delivery_fails() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s", "5s", "1m"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.set_fallback(Behavior::Status(500));
    let (wh, secret) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let ev = publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": {} }),
    )
    .await;

    receiver.wait_for(1, Duration::from_secs(5)).await;
    let id = sole_delivery(&app, &wh).await;
    let mut d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["event_id"], ev["id"]);
    let schedule = [Duration::from_secs(5), Duration::from_secs(60)];
    for (n, wait) in schedule.iter().enumerate() {
        let attempts = n + 1;
        let last_at = ts(&d["attempt_log"][n]["at"]);
        let next = ts(&d["next_attempt_at"]);
        assert_jittered(last_at.until(next), *wait, "next_attempt_at");
        // Not before the clock moves, nor just short of the due time.
        assert_quiet(&receiver, attempts, "no retry while the clock stands still").await;
        advance_to(&app, next.minus(Duration::from_millis(200)));
        assert_quiet(&receiver, attempts, "no retry before it is due").await;
        advance_to(&app, next);
        let got = receiver
            .wait_for(attempts + 1, Duration::from_secs(5))
            .await;
        assert_eq!(got[attempts].header("x-event-id"), ev["id"]);
        d = after_attempts(&app, &id, attempts + 1).await;
    }
    assert_eq!(d["status"], "failed", "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");
    assert_eq!(d["last_status_code"], 500);

    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    for (i, wait) in schedule.iter().enumerate() {
        let gap = ts(&log[i]["at"]).until(ts(&log[i + 1]["at"]));
        assert_jittered(gap, *wait, "spacing of the attempts");
    }
    // Each attempt is signed afresh, stamped with its own time, over the same body.
    let got = receiver.received();
    for (a, r) in log.iter().zip(&got) {
        let at = ts(&a["at"]);
        assert_eq!(
            Timestamp::parse_rfc3339(&r.header("x-timestamp")),
            Some(Timestamp(at.0 - at.0.rem_euclid(1000))),
            "X-Timestamp is the attempt's time"
        );
        assert_signed_by(r, &secret);
        assert_eq!(r.body, got[0].body);
    }
    for a in log {
        assert_eq!(a["status_code"], 500, "{a}");
        assert_eq!(a["error"], "HTTP 500");
        assert_eq!(a["response_excerpt"], "ok");
        assert!(a["latency_ms"].is_u64(), "{a}");
        assert!(a["id"].as_str().unwrap().starts_with("att_"));
    }
    // Used up: nothing more, however long we wait.
    app.advance(Duration::from_secs(7 * 86400));
    assert_quiet(&receiver, 3, "no attempt after the schedule is used up").await;
}

#[tokio::test]
async fn a_webhooks_own_schedule_overrides_the_default() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await; // default: 0s, 5s, 5m, …
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.set_fallback(Behavior::Status(503));
    let created = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": receiver.url("/h"), "events": ["payment.*"], "schedule": ["0s", "2s"] }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["schedule"], json!(["0s", "2s"]));
    let wh = created.body["id"].as_str().unwrap().to_owned();
    publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    let next = ts(&d["next_attempt_at"]);
    assert_jittered(
        ts(&d["attempt_log"][0]["at"]).until(next),
        Duration::from_secs(2),
        "own schedule",
    );
    advance_to(&app, next);
    receiver.wait_for(2, Duration::from_secs(5)).await;
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "failed", "two entries, two attempts: {d}");
    assert_eq!(d["last_status_code"], 503);
}

#[tokio::test]
async fn an_endpoint_that_hangs_past_the_timeout_fails_the_attempt() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"timeout = "300ms""#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Hang(Duration::from_secs(2))]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/slow"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let started = Instant::now();
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "the attempt was cut off by the timeout, not by the endpoint"
    );
    let attempt = &d["attempt_log"][0];
    let error = attempt["error"].as_str().unwrap().to_lowercase();
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "{attempt}"
    );
    assert!(attempt["status_code"].is_null(), "{attempt}");
    assert!(attempt["latency_ms"].as_u64().unwrap() >= 300, "{attempt}");
    assert_eq!(d["status"], "pending", "a timeout is retried");
    assert!(d["next_attempt_at"].is_string());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let target = Receiver::start().await;
    receiver.set_fallback(Behavior::Redirect(target.url("/landing")));
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/moved"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    let attempt = &d["attempt_log"][0];
    assert_eq!(attempt["status_code"], 301, "{attempt}");
    assert!(
        attempt["error"].as_str().unwrap().contains("redirect"),
        "{attempt}"
    );
    assert_eq!(d["status"], "pending", "a redirect is a retryable failure");
    assert_eq!(receiver.count(), 1);
    assert_quiet(&target, 0, "the redirect target receives nothing").await;
}

#[tokio::test]
async fn gone_disables_the_webhook_and_stops_attempts() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Status(410)]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/gone"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["last_status_code"], 410);
    let hook = app.get(&format!("/webhooks/{wh}"), &key).await.body;
    assert_eq!(hook["disabled"], true, "{hook}");
    assert!(hook["disabled_reason"].as_str().unwrap().contains("410"));

    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    app.advance(Duration::from_secs(86400));
    assert_quiet(&receiver, 1, "a disabled webhook gets no further attempts").await;
    let d = delivery(&app, &id).await;
    assert_eq!(d["attempts"], 1);
}

#[tokio::test]
async fn a_disabled_webhook_pauses_its_deliveries_until_enabled() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s", "5s"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Status(500)]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let ev = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    after_attempts(&app, &id, 1).await;

    let r = app
        .post(&format!("/webhooks/{wh}:disable"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.advance(Duration::from_secs(3600));
    assert_quiet(&receiver, 1, "a disabled webhook is not called").await;
    let d = delivery(&app, &id).await;
    assert_eq!(d["status"], "pending", "paused, not dropped: {d}");
    assert_eq!(d["attempts"], 1);

    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{wh}"),
            &key,
            Some(json!({ "disabled": false })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].header("x-event-id"), ev["id"]);
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "succeeded", "{d}");
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s", "5s", "1m"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::StatusWith(
        429,
        vec![("retry-after", "120".into())],
    )]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/busy"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["last_status_code"], 429);
    let first_at = ts(&d["attempt_log"][0]["at"]);
    let next = ts(&d["next_attempt_at"]);
    assert!(
        first_at.until(next) >= Duration::from_secs(120),
        "Retry-After: 120 beats the schedule's 5s: {d}"
    );

    app.advance(Duration::from_secs(10));
    assert_quiet(&receiver, 1, "not retried on the schedule's 5s").await;
    advance_to(&app, first_at.plus(Duration::from_secs(121)));
    receiver.wait_for(2, Duration::from_secs(5)).await;
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "succeeded", "{d}");
}

// ---------------------------------------------------------------- delivery log

#[tokio::test]
async fn the_delivery_log_filters_and_shows_every_attempt() {
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let (_, other_key) = app.tenant("globex").await;
    let good = Receiver::start().await;
    good.set_fallback(Behavior::StatusWith(
        202,
        vec![("content-type", "text/plain".into())],
    ));
    let bad = Receiver::start().await;
    bad.set_fallback(Behavior::Status(500));
    let (w_good, _) = register(
        &app,
        &key,
        json!({ "url": good.url("/g"), "events": ["payment.*", "refund.*"] }),
    )
    .await;
    let (w_bad, _) = register(
        &app,
        &key,
        json!({ "url": bad.url("/b"), "events": ["payment.*"], "schedule": ["0s"] }),
    )
    .await;
    for ty in ["payment.succeeded", "refund.created", "payment.failed"] {
        publish(&app, json!({ "type": ty, "tenant": t, "data": {} })).await;
    }
    good.wait_for(3, Duration::from_secs(5)).await;
    bad.wait_for(2, Duration::from_secs(5)).await;
    app.eventually("every delivery settles", || async {
        let all = deliveries(&app, "").await;
        all.len() == 5 && all.iter().all(|d| d["status"] != "pending")
    })
    .await;

    let ids = |ds: Vec<Value>| -> Vec<(String, String, String)> {
        ds.iter()
            .map(|d| {
                (
                    d["webhook_id"].as_str().unwrap().to_owned(),
                    d["event_type"].as_str().unwrap().to_owned(),
                    d["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let of_good = deliveries(&app, &format!("webhook={w_good}")).await;
    assert_eq!(of_good.len(), 3);
    assert!(of_good
        .iter()
        .all(|d| d["webhook_id"] == w_good && d["status"] == "succeeded"));
    let failed = ids(deliveries(&app, "status=failed").await);
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|(w, _, s)| *w == w_bad && s == "failed"));
    let refunds = ids(deliveries(&app, "event_type=refund.created").await);
    assert_eq!(
        refunds,
        vec![(w_good.clone(), "refund.created".into(), "succeeded".into())]
    );
    let combo = ids(deliveries(
        &app,
        &format!("webhook={w_bad}&status=failed&event_type=payment.failed"),
    )
    .await);
    assert_eq!(
        combo,
        vec![(w_bad.clone(), "payment.failed".into(), "failed".into())]
    );
    assert!(
        deliveries(&app, &format!("webhook={w_bad}&status=succeeded"))
            .await
            .is_empty()
    );
    // The tenant sees its own log; another tenant sees nothing of it.
    assert_eq!(list(&app, "/deliveries", &key, "deliveries").await.len(), 5);
    assert!(list(&app, "/deliveries", &other_key, "deliveries")
        .await
        .is_empty());

    let failed_one = &deliveries(&app, &format!("webhook={w_bad}")).await[0];
    let d = delivery(&app, failed_one["id"].as_str().unwrap()).await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 1);
    let a = &log[0];
    for field in [
        "at",
        "status_code",
        "latency_ms",
        "error",
        "response_excerpt",
    ] {
        assert!(a.get(field).is_some(), "attempt lacks `{field}`: {a}");
    }
    assert!(ts(&a["at"]) <= herald_core::SystemClock.now());
    assert_eq!(a["status_code"], 500);
    assert_eq!(a["error"], "HTTP 500");
    assert_eq!(a["response_excerpt"], "ok");
    let r = app
        .get(
            &format!("/deliveries/{}", failed_one["id"].as_str().unwrap()),
            &other_key,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");

    let ok_one = &of_good[0];
    let d = delivery(&app, ok_one["id"].as_str().unwrap()).await;
    let a = &d["attempt_log"][0];
    assert_eq!(a["status_code"], 202);
    assert!(a["error"].is_null(), "{a}");
    assert_eq!(a["response_excerpt"], "scripted");
}

#[tokio::test]
async fn redeliver_sends_the_same_event_again() {
    let app = spawn_app(&hooks_config(r#"schedule = ["0s"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let (_, other_key) = app.tenant("globex").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Status(500)]);
    let (wh, secret) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let ev = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "pay_1", "data": { "a": 1 } }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["status"], "failed");

    let r = app
        .post(
            &format!("/deliveries/{id}:redeliver"),
            &other_key,
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = app
        .post(&format!("/deliveries/{id}:redeliver"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[0].header("x-event-id"), ev["id"]);
    assert_eq!(got[1].header("x-event-id"), ev["id"], "the same X-Event-Id");
    assert_eq!(got[1].json(), got[0].json(), "the same event");
    assert_signed_by(&got[1], &secret);
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(
        deliveries(&app, &format!("webhook={wh}")).await.len(),
        1,
        "no new delivery"
    );
    assert_quiet(&receiver, 2, "sent once more, not twice").await;
}

#[tokio::test]
async fn replay_redelivers_failed_deliveries_in_range() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;

    // e1 fails long ago; in the window, e2 fails and e3 succeeds; e4 fails after the window.
    let mut events = vec![];
    let mut times = vec![];
    for (i, answer) in [500, 500, 200, 500].into_iter().enumerate() {
        if i > 0 {
            app.advance(Duration::from_secs(3600));
        }
        receiver.script([Behavior::Status(answer)]);
        times.push(clock_now(&app));
        let ev = publish(
            &app,
            json!({ "type": "payment.succeeded", "tenant": t, "data": { "i": i } }),
        )
        .await;
        events.push(ev["id"].as_str().unwrap().to_owned());
        receiver.wait_for(i + 1, Duration::from_secs(5)).await;
        app.eventually("the attempt is recorded", || async {
            let ds = deliveries(&app, &format!("webhook={wh}")).await;
            ds.len() == i + 1 && ds.iter().all(|d| d["status"] != "pending")
        })
        .await;
    }
    assert_eq!(
        deliveries(&app, &format!("webhook={wh}&status=failed"))
            .await
            .len(),
        3
    );

    let since = times[1].minus(Duration::from_secs(60)).to_rfc3339();
    let until = times[2].plus(Duration::from_secs(60)).to_rfc3339();
    let r = app
        .post(
            &format!("/webhooks/{wh}:replay"),
            &key,
            json!({ "since": since, "until": until, "status": "failed" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["replayed"], 1, "{:?}", r.body);
    let got = receiver.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(got[4].header("x-event-id"), events[1]);
    assert_quiet(
        &receiver,
        5,
        "only the failed delivery in range is replayed",
    )
    .await;
    app.eventually("the replayed delivery succeeds", || async {
        let ds = deliveries(&app, &format!("webhook={wh}&status=succeeded")).await;
        ds.len() == 2
    })
    .await;
    let failed: BTreeSet<String> = deliveries(&app, &format!("webhook={wh}&status=failed"))
        .await
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed, set(&[&events[0], &events[3]]));
}

// ---------------------------------------------------------------- operations and fan-out

#[tokio::test]
async fn a_finished_operation_is_delivered_as_an_event() {
    let app = spawn_app(&transcode_config(
        "[webhooks]\nallow_private_destinations = true",
    ))
    .await;
    let (_, tenant) = app.tenant("acme").await;
    let (_, other) = app.tenant("globex").await;
    let worker = app.worker_key().await;
    let receiver = Receiver::start().await;
    let other_receiver = Receiver::start().await;
    let (_, secret) = register(
        &app,
        &tenant,
        json!({ "url": receiver.url("/ops"), "events": ["transcode.*"] }),
    )
    .await;
    register(
        &app,
        &other,
        json!({ "url": other_receiver.url("/ops"), "events": ["transcode.*"] }),
    )
    .await;

    let created = app
        .post(
            "/videos",
            &tenant,
            json!({ "source_url": "https://x/v.mp4" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let id = op_id(&created.body);
    let claimed = app.claim(&worker, "transcode").await.expect("claimable");
    let token = claimed["lease_token"].as_str().unwrap();
    let done = app
        .post(
            &format!("/operations/{id}:complete"),
            &worker,
            json!({ "lease_token": token, "response": { "video_id": "vid_99", "duration_seconds": 832 } }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);

    let r = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    assert_eq!(r.header("x-event-type"), "transcode.succeeded");
    assert_signed_by(&r, &secret);
    let final_op = app.get(&format!("/operations/{id}"), &tenant).await.body;
    assert_eq!(final_op["done"], true);
    let body = r.json();
    assert_eq!(body["type"], "transcode.succeeded");
    assert_eq!(body["data"], final_op);
    assert_quiet(&receiver, 1, "one event per finished operation").await;
    assert_eq!(
        other_receiver.count(),
        0,
        "another tenant's webhook gets nothing"
    );
}

#[tokio::test]
async fn a_dead_endpoint_does_not_hold_up_a_healthy_one() {
    let app = spawn_app(&hooks_config(r#"timeout = "3s""#)).await;
    let (t, key) = app.tenant("acme").await;
    let healthy = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_fallback(Behavior::Status(500));
    let hanging = Receiver::start().await;
    hanging.set_fallback(Behavior::Hang(Duration::from_secs(30)));
    let events = json!(["payment.*"]);
    let (dead, _) = register(
        &app,
        &key,
        json!({ "url": "http://127.0.0.1:1/closed", "events": events }),
    )
    .await;
    let (w_failing, _) = register(
        &app,
        &key,
        json!({ "url": failing.url("/f"), "events": events }),
    )
    .await;
    register(
        &app,
        &key,
        json!({ "url": hanging.url("/h"), "events": events }),
    )
    .await;
    let (w_healthy, _) = register(
        &app,
        &key,
        json!({ "url": healthy.url("/ok"), "events": events }),
    )
    .await;

    let started = Instant::now();
    let mut ids = BTreeSet::new();
    for i in 0..50 {
        let ev = publish(
            &app,
            json!({ "type": "payment.succeeded", "tenant": t, "data": { "i": i } }),
        )
        .await;
        ids.insert(ev["id"].as_str().unwrap().to_owned());
    }
    let got = healthy.wait_for(50, Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the healthy endpoint took {took:?}"
    );
    let received: BTreeSet<String> = got.iter().map(|r| r.header("x-event-id")).collect();
    assert_eq!(received, ids, "every event, once each");
    app.eventually("the healthy deliveries are recorded", || async {
        deliveries(
            &app,
            &format!("webhook={w_healthy}&status=succeeded&page_size=100"),
        )
        .await
        .len()
            == 50
    })
    .await;

    // Meanwhile the dead endpoints keep failing.
    app.eventually("the closed port's attempts are recorded", || async {
        deliveries(&app, &format!("webhook={dead}&page_size=100"))
            .await
            .iter()
            .any(|d| d["attempts"].as_u64() > Some(0))
    })
    .await;
    let dead_ds = deliveries(&app, &format!("webhook={dead}&page_size=100")).await;
    assert_eq!(dead_ds.len(), 50);
    assert!(
        dead_ds.iter().all(|d| d["status"] == "pending"),
        "still retrying"
    );
    let tried = dead_ds
        .iter()
        .find(|d| d["attempts"].as_u64() > Some(0))
        .unwrap();
    let d = delivery(&app, tried["id"].as_str().unwrap()).await;
    assert!(
        d["attempt_log"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{d}"
    );
    assert!(failing.count() >= 1);
    assert!(
        deliveries(&app, &format!("webhook={w_failing}&status=succeeded"))
            .await
            .is_empty()
    );
}

// ------------------------------------------- defects a user could trigger (issue 14)

#[tokio::test]
async fn deleting_a_webhook_mid_send_never_stalls_other_deliveries() {
    // The send is in flight when the webhook is deleted, and its result (a 500, so a
    // retry) arrives after the delete. That retry must not make the delivery pending
    // again: on SQLite every later claim failed on the missing webhook, so no delivery
    // to any webhook of any tenant went out again.
    let app = spawn_app(&hooks_config("")).await;
    let (a, _) = app.tenant("acme").await;
    let (b, _) = app.tenant("globex").await;
    let slow = Receiver::start().await;
    slow.set_fallback(Behavior::Delayed(500, Duration::from_millis(800)));
    let healthy = Receiver::start().await;
    let (doomed, _) = register(
        &app,
        ADMIN,
        json!({ "url": slow.url("/slow"), "events": ["payment.*"], "tenant": a,
                "schedule": ["0s", "200ms"] }),
    )
    .await;
    let (other, _) = register(
        &app,
        ADMIN,
        json!({ "url": healthy.url("/ok"), "events": ["payment.*"], "tenant": b }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": a, "data": {} }),
    )
    .await;
    slow.wait_for(1, Duration::from_secs(5)).await;
    let r = app
        .call(Method::DELETE, &format!("/webhooks/{doomed}"), ADMIN, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    // The in-flight result is recorded, and the delivery ends failed, not pending.
    let d = sole_delivery(&app, &doomed).await;
    let failed = after_attempts(&app, &d, 1).await;
    app.eventually("the deleted webhook's delivery to end failed", || async {
        delivery(&app, &d).await["status"] == "failed"
    })
    .await;
    assert_eq!(failed["attempt_log"][0]["status_code"], 500);
    // Well past its retry time, another tenant's webhook still gets its events.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        publish(
            &app,
            json!({ "type": "payment.succeeded", "tenant": b, "data": {} }),
        )
        .await;
    }
    healthy.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(slow.count(), 1, "nothing is sent to a deleted webhook");
    let d = delivery(&app, &d).await;
    assert_eq!(d["status"], "failed", "{d:?}");
    app.eventually(
        "the healthy webhook's three deliveries to be recorded",
        || async {
            deliveries(&app, &format!("webhook={other}&status=succeeded"))
                .await
                .len()
                == 3
        },
    )
    .await;
}

#[tokio::test]
async fn concurrent_rotations_each_make_a_version_and_every_answered_secret_signs() {
    // Each rotation reads the webhook it changes inside the write: ten at once make
    // versions 2..=11, and the last two secrets answered (current and previous) sign.
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (id, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let path = format!("/webhooks/{id}:rotateSecret");
    let answers =
        futures::future::join_all((0..10).map(|_| app.post(&path, &key, json!({ "grace": "1h" }))))
            .await;
    let mut by_version: Vec<(u64, String)> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            (
                r.body["signing_secret_version"].as_u64().unwrap(),
                r.body["signing_secret"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_version.sort();
    let versions: Vec<u64> = by_version.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (2..=11).collect::<Vec<u64>>(),
        "no rotation was lost"
    );
    let r = app.get(&format!("/webhooks/{id}"), &key).await;
    assert_eq!(r.body["signing_secret_version"], 11);
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    assert_eq!(signature_values(&got).len(), 2);
    assert_signed_by(&got, &by_version[9].1);
    assert_signed_by(&got, &by_version[8].1);
}

#[tokio::test]
async fn concurrent_patches_of_different_fields_all_take_effect() {
    // Each PATCH changes only the fields it names, applied to the stored row inside the
    // write; read-modify-write in the route let the last writer put back what the
    // others had changed (as it did with the 410 auto-disable).
    let app = spawn_app(&hooks_config("")).await;
    let (_, key) = app.tenant("acme").await;
    for round in 0..5 {
        let (id, _) = register(
            &app,
            &key,
            json!({ "url": "http://127.0.0.1:9/h", "events": ["payment.*"] }),
        )
        .await;
        let path = format!("/webhooks/{id}");
        let description = format!("round {round}");
        let patches = [
            json!({ "description": description }),
            json!({ "max_concurrency": 7 }),
            json!({ "events": ["refund.*"] }),
            json!({ "schedule": ["0s", "5s"] }),
            json!({ "disabled": true }),
            json!({ "url": "http://127.0.0.1:9/other" }),
        ];
        let answers = futures::future::join_all(
            patches
                .iter()
                .map(|p| app.call(Method::PATCH, &path, &key, Some(p.clone()))),
        )
        .await;
        for r in &answers {
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
        let w = app.get(&path, &key).await.body;
        assert_eq!(w["description"], description.as_str(), "{w:?}");
        assert_eq!(w["max_concurrency"], 7, "{w:?}");
        assert_eq!(w["events"], json!(["refund.*"]), "{w:?}");
        assert_eq!(w["schedule"], json!(["0s", "5s"]), "{w:?}");
        assert_eq!(w["disabled"], true, "{w:?}");
        assert_eq!(w["url"], "http://127.0.0.1:9/other", "{w:?}");
    }
}

#[tokio::test]
async fn lists_page_past_a_full_page_of_the_largest_size() {
    // `page_size=1000` over 1,050 items: the store is asked for a page and one more row,
    // so the page is full *and* says another follows.
    let app = spawn_app(&hooks_config("")).await;
    let (t, _) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (hook, _) = register(
        &app,
        ADMIN,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"], "tenant": t }),
    )
    .await;
    for chunk in 0..21 {
        futures::future::join_all((0..50).map(|i| {
            app.post(
                "/events",
                ADMIN,
                json!({ "type": "payment.succeeded", "tenant": t, "data": { "n": chunk * 50 + i } }),
            )
        }))
        .await
        .iter()
        .for_each(|r| assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body));
    }
    for (path, field) in [
        (format!("/events?tenant={t}&page_size=1000"), "events"),
        (
            format!("/deliveries?webhook={hook}&page_size=1000"),
            "deliveries",
        ),
    ] {
        app.eventually("all 1,050 to be listed", || async {
            let r = app.get(&path, ADMIN).await;
            r.body[field].as_array().map(Vec::len) == Some(1000)
                && !r.body["next_page_token"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
        })
        .await;
        let first = app.get(&path, ADMIN).await;
        let token = first.body["next_page_token"].as_str().unwrap();
        let second = app.get(&format!("{path}&page_token={token}"), ADMIN).await;
        assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
        assert_eq!(second.body[field].as_array().unwrap().len(), 50, "{path}");
        assert_eq!(second.body["next_page_token"], "");
    }
}
