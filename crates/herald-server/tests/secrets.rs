//! Webhook signing secrets encrypted at rest: with `secret_key` configured the
//! database file never holds a secret in plaintext, deliveries still verify with the
//! secret shown to the user (and both secrets during a rotation), and a wrong key
//! fails loudly instead of signing with garbage.

mod common;

use common::receiver::Receiver;
use common::*;
use herald_core::signing::verify_herald;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// 32 bytes, base64 (a test key; never use it).
const KEY: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";

fn config(key: &str) -> String {
    format!("secret_key = \"{key}\"\n[webhooks]\nallow_private_destinations = true\n")
}

/// Every byte of the database (main file and WAL), as lossy text.
fn database_bytes(app: &TestApp) -> Vec<u8> {
    let mut all = vec![];
    for name in ["herald.db", "herald.db-wal"] {
        if let Ok(bytes) = std::fs::read(app.dir.path().join(name)) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secrets_are_sealed_in_the_database_and_deliveries_still_verify() {
    let app = spawn_app(&config(KEY)).await;
    if app.on_postgres() {
        println!("skipped on PostgreSQL: this test reads the SQLite file");
        return;
    }
    let (tenant, _) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let r = app
        .post(
            "/webhooks",
            ADMIN,
            json!({ "url": receiver.url("/h"), "events": ["payment.*"], "tenant": tenant }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let first = r.body["signing_secret"].as_str().unwrap().to_owned();
    let r = app
        .post(&format!("/webhooks/{id}:rotateSecret"), ADMIN, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let second = r.body["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    // Reads never show a secret.
    let r = app.get(&format!("/webhooks/{id}"), ADMIN).await;
    assert!(!r.body.to_string().contains(&second), "{:?}", r.body);

    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.succeeded", "tenant": tenant, "data": { "amount": 1 } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let req = &got[0];
    let (ts, sig) = (req.header("x-timestamp"), req.header("x-signature"));
    assert!(verify_herald(&second, &ts, &req.body, &sig), "{sig}");
    assert!(verify_herald(&first, &ts, &req.body, &sig), "{sig}");

    // Neither secret is anywhere in the file; what is stored is sealed.
    let bytes = database_bytes(&app);
    assert!(!bytes.is_empty());
    for secret in [&first, &second] {
        assert!(
            !contains(&bytes, secret),
            "a plaintext secret is in the database"
        );
    }
    let conn = rusqlite::Connection::open(app.dir.path().join("herald.db")).unwrap();
    let (stored, previous): (String, String) = conn
        .query_row(
            "SELECT secret, previous_secret FROM webhooks WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    assert!(previous.starts_with("enc:v1:"), "{previous}");
}

#[tokio::test]
async fn without_a_key_secrets_are_stored_as_before() {
    let app = spawn_app("[webhooks]\nallow_private_destinations = true\n").await;
    if app.on_postgres() {
        println!("skipped on PostgreSQL: this test reads the SQLite file");
        return;
    }
    let (tenant, _) = app.tenant("acme").await;
    let r = app
        .post(
            "/webhooks",
            ADMIN,
            json!({ "url": "http://127.0.0.1:9/h", "events": ["a.*"], "tenant": tenant }),
        )
        .await;
    let secret = r.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(contains(&database_bytes(&app), &secret));
}

#[test]
fn a_bad_key_is_refused_at_start() {
    for bad in ["short", "q83vEjRWeJq83vEjRWeJ", "!!!not base64!!!"] {
        let err = herald_server::Config::parse(&config(bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret_key"), "{err}");
        assert!(!err.contains(bad), "the key itself is never echoed: {err}");
    }
    let c = herald_server::Config::parse(&format!("admin_key = \"adm-secret-1\"\n{}", config(KEY)))
        .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains(KEY), "Debug shows the secret key");
    assert!(!shown.contains("adm-secret-1"), "Debug shows the admin key");
}
