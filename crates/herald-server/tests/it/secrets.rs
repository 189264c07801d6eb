//! Webhook signing secrets encrypted at rest: with `secret_key` configured the
//! database file never holds a secret in plaintext, deliveries still verify with the
//! secret shown to the user (and both secrets during a rotation), and a wrong key
//! fails loudly instead of signing with garbage.

use herald_core::signing::verify_herald;
use herald_testkit::receiver::Receiver;
use herald_testkit::*;
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

#[tokio::test]
async fn a_secret_sealed_with_another_key_fails_its_own_deliveries_visibly_and_no_others() {
    // One webhook sealed with an old key (say `secret_key` was changed) is in the same
    // claim batches as a healthy one. Its deliveries get a failed attempt saying why and
    // follow their schedule; the healthy webhook's deliveries go out as usual.
    let app = spawn_app(&format!("{}schedule = [\"0s\", \"1h\"]\n", config(KEY))).await;
    let (tenant, _) = app.tenant("acme").await;
    let tenant_id: herald_core::ids::TenantId = tenant.parse().unwrap();
    let healthy = Receiver::start().await;
    let r = app
        .post(
            "/webhooks",
            ADMIN,
            json!({ "url": healthy.url("/ok"), "events": ["payment.*"], "tenant": tenant }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // The same database, written by a node with another key.
    let old_key =
        herald_store::encrypted::SecretKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap();
    let old_node = herald_store::encrypted::EncryptedSecrets::new(app.store.clone(), old_key);
    let stranded = Receiver::start().await;
    let sealed = herald_store::WebhookStore::create_webhook(
        &old_node,
        stored_webhook(
            herald_core::ids::WebhookId::generate(),
            Some(tenant_id),
            stranded.url("/old"),
            "whsec_sealed_with_the_old_key",
        ),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({ "type": "payment.succeeded", "tenant": tenant, "data": {} }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    healthy.wait_for(5, Duration::from_secs(10)).await;
    let path = format!("/deliveries?webhook={}", sealed.id);
    app.eventually(
        "each stranded delivery to record its failed attempt",
        || async {
            let r = app.get(&path, ADMIN).await;
            let list = r.body["deliveries"].as_array().cloned().unwrap_or_default();
            list.len() == 5 && list.iter().all(|d| d["attempts"] == 1)
        },
    )
    .await;
    let r = app.get(&path, ADMIN).await;
    for d in r.body["deliveries"].as_array().unwrap() {
        assert_eq!(d["status"], "pending", "retried on its schedule: {d:?}");
        let err = d["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("cannot be decrypted"), "{d:?}");
        assert!(!err.contains("whsec"), "the secret is never shown: {err}");
    }
    assert_eq!(stranded.count(), 0, "never signed with an unopened secret");
}

#[tokio::test]
async fn a_webhook_sealed_with_another_key_can_still_be_managed_and_rotated_out() {
    // Reads never show a secret, so they never open one: the webhook (and its tenant's
    // list) still reads, patches and deletes, and a rotation replaces the secret that
    // does not open, after which its deliveries sign and go out again.
    let app = spawn_app(&config(KEY)).await;
    let (tenant, key) = app.tenant("acme").await;
    let tenant_id: herald_core::ids::TenantId = tenant.parse().unwrap();
    let receiver = Receiver::start().await;
    let old_key =
        herald_store::encrypted::SecretKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap();
    let old_node = herald_store::encrypted::EncryptedSecrets::new(app.store.clone(), old_key);
    let id = herald_core::ids::WebhookId::generate();
    herald_store::WebhookStore::create_webhook(
        &old_node,
        stored_webhook(
            id,
            Some(tenant_id),
            receiver.url("/h"),
            "whsec_sealed_with_the_old_key",
        ),
    )
    .await
    .unwrap();
    let path = format!("/webhooks/{id}");
    assert_eq!(app.get(&path, &key).await.status, StatusCode::OK);
    let list = app.get("/webhooks", &key).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert_eq!(list.body["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/webhooks", ADMIN).await.status, StatusCode::OK);
    let r = app
        .call(
            reqwest::Method::PATCH,
            &path,
            &key,
            Some(json!({ "description": "still mine" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            &format!("{path}:rotateSecret"),
            &key,
            json!({ "grace": "1h" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let fresh = r.body["signing_secret"].as_str().unwrap().to_owned();
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.succeeded", "tenant": tenant, "data": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let req = &got[0];
    assert_eq!(
        req.header("x-signature").split(' ').count(),
        1,
        "the previous secret that does not open is left out"
    );
    assert!(verify_herald(
        &fresh,
        &req.header("x-timestamp"),
        &req.body,
        &req.header("x-signature")
    ));
    let r = app.call(reqwest::Method::DELETE, &path, &key, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
}

#[tokio::test]
async fn any_change_seals_a_secret_stored_before_the_key_was_set() {
    let app = spawn_app(&config(KEY)).await;
    if app.on_postgres() {
        println!("skipped on PostgreSQL: this test reads the SQLite file");
        return;
    }
    let (tenant, _) = app.tenant("acme").await;
    // Written by a node without a key: plaintext in the row.
    let id = herald_core::ids::WebhookId::generate();
    app.store
        .create_webhook(stored_webhook(
            id,
            Some(tenant.parse().unwrap()),
            "http://127.0.0.1:9/h".into(),
            "hsec_plaintext_from_before",
        ))
        .await
        .unwrap();
    let r = app
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            ADMIN,
            Some(json!({ "description": "touched" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(!contains(
        &stored_secrets(&app),
        "hsec_plaintext_from_before"
    ));
    let r = app
        .post(
            &format!("/webhooks/{id}:rotateSecret"),
            ADMIN,
            json!({ "grace": "1h" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let conn = rusqlite::Connection::open(app.dir.path().join("herald.db")).unwrap();
    let (stored, previous): (String, String) = conn
        .query_row(
            "SELECT secret, previous_secret FROM webhooks WHERE id = ?1",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    assert!(
        previous.starts_with("enc:v1:"),
        "the rotated-out secret too: {previous}"
    );
}

/// Every webhook's `secret` column as stored now.
fn stored_secrets(app: &TestApp) -> Vec<u8> {
    let conn = rusqlite::Connection::open(app.dir.path().join("herald.db")).unwrap();
    let secret: String = conn
        .query_row("SELECT group_concat(secret, ' ') FROM webhooks", [], |r| {
            r.get(0)
        })
        .unwrap();
    secret.into_bytes()
}

/// A webhook row for `payment.*` as a node would store it, with `secret` as given.
fn stored_webhook(
    id: herald_core::ids::WebhookId,
    tenant: Option<herald_core::ids::TenantId>,
    url: String,
    secret: &str,
) -> herald_store::Webhook {
    let now = herald_core::Clock::now(&herald_core::SystemClock);
    herald_store::Webhook {
        id,
        tenant,
        url,
        events: vec![herald_core::pattern::EventPattern::parse("payment.*").unwrap()],
        format: herald_core::signing::SignatureFormat::Herald,
        secret: secret.into(),
        secret_version: 1,
        previous_secret: None,
        schedule: None,
        max_concurrency: None,
        ordering: Default::default(),
        options: Default::default(),
        disabled: false,
        disabled_reason: None,
        description: None,
        created_at: now,
        updated_at: now,
    }
}

/// Verifies `webhook-signature` values `v1a,BASE64` with a `whpk_` key, with ed25519-dalek
/// directly (not Herald's own verifier): which of the values verify.
fn v1a_verifies(public_key: &str, id: &str, ts: &str, body: &[u8], header: &str) -> Vec<bool> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = b64
        .decode(public_key.strip_prefix("whpk_").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(body);
    header
        .split(' ')
        .map(|value| {
            let sig = b64.decode(value.strip_prefix("v1a,").unwrap()).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            key.verify_strict(&content, &sig).is_ok()
        })
        .collect()
}

/// `standard-webhooks-ed25519`: the private key is never shown and is sealed at rest; the
/// webhook shows its public key; deliveries carry `v1a` signatures that verify with it, and
/// during a rotation with either key.
#[tokio::test]
async fn ed25519_keys_stay_sealed_and_deliveries_verify_with_the_public_key() {
    let app = spawn_app(&config(KEY)).await;
    let (tenant, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": receiver.url("/h"), "events": ["payment.*"], "format": "standard-webhooks-ed25519" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body.get("signing_secret").is_none(), "{:?}", r.body);
    assert!(!r.body.to_string().contains("whsk_"), "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let first = r.body["public_key"].as_str().unwrap().to_owned();
    assert!(first.starts_with("whpk_"), "{first}");
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &key).await.body["public_key"],
        first
    );

    let publish = || async {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({ "type": "payment.succeeded", "tenant": tenant, "data": { "amount": 1 } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    };
    publish().await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let req = &got[0];
    let (msg, ts, sig) = (
        req.header("webhook-id"),
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
    );
    assert!(sig.starts_with("v1a,"), "{sig}");
    assert_eq!(v1a_verifies(&first, &msg, &ts, &req.body, &sig), vec![true]);
    let mut tampered = req.body.to_vec();
    tampered[0] = b' ';
    assert_eq!(
        v1a_verifies(&first, &msg, &ts, &tampered, &sig),
        vec![false]
    );

    let r = app
        .post(&format!("/webhooks/{id}:rotateSecret"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body.get("signing_secret").is_none(), "{:?}", r.body);
    let second = r.body["public_key"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(r.body["previous_public_key"], first, "{:?}", r.body);
    publish().await;
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    let req = &got[1];
    let (msg, ts, sig) = (
        req.header("webhook-id"),
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
    );
    assert_eq!(
        v1a_verifies(&second, &msg, &ts, &req.body, &sig),
        vec![true, false]
    );
    assert_eq!(
        v1a_verifies(&first, &msg, &ts, &req.body, &sig),
        vec![false, true]
    );

    if app.on_postgres() {
        return; // what follows reads the SQLite file
    }
    let bytes = database_bytes(&app);
    assert!(
        !contains(&bytes, "whsk_"),
        "a private key is in the database in plaintext"
    );
    let conn = rusqlite::Connection::open(app.dir.path().join("herald.db")).unwrap();
    let (stored, previous): (String, String) = conn
        .query_row(
            "SELECT secret, previous_secret FROM webhooks WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(stored.starts_with("enc:v1:") && previous.starts_with("enc:v1:"));
}
