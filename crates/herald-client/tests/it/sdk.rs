//! The SDK against the real server (in-process, port 0, temp SQLite): operations,
//! events, the worker runner, and verification of real webhook deliveries.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use herald_client::client::{NewEvent, WaitOptions};
use herald_client::verify::VerifyError;
use herald_client::{
    Client, ClientError, DedupeStore, JobOutcome, MemoryDedupe, WebhookVerifier, Worker,
    WorkerOptions,
};
use herald_server::embedded::EmbeddedHerald;
use herald_testkit::eventually;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "5s"
max_attempts = 2
retry_after = "1s"

[webhooks]
allow_private_destinations = true
schedule = ["0s", "1s", "1s"]
"#;

struct Setup {
    herald: EmbeddedHerald,
    admin: Client,
    tenant_id: String,
    tenant: Client,
    worker: Client,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let herald = EmbeddedHerald::start(CONFIG, &dir.path().join("herald.db"), "admin-key")
        .await
        .unwrap();
    let admin = Client::new(&herald.base_url, &herald.admin_key);
    let t = admin.create_tenant("acme").await.unwrap();
    let tk = admin.create_key("tenant", Some(&t.id)).await.unwrap();
    assert_eq!(tk.role, "tenant");
    let wk = admin.create_key("worker", None).await.unwrap();
    Setup {
        tenant: Client::new(&herald.base_url, &tk.key),
        worker: Client::new(&herald.base_url, &wk.key),
        tenant_id: t.id,
        admin,
        herald,
        _dir: dir,
    }
}

fn fast_worker_options() -> WorkerOptions {
    WorkerOptions {
        types: vec!["transcode".into()],
        lease: None,
        claim_wait: Duration::from_secs(2),
        heartbeat_every: Duration::from_millis(100),
        concurrency: 2,
    }
}

#[tokio::test]
async fn operations_trigger_get_wait_and_cancel() {
    let s = setup().await;
    let op = s
        .tenant
        .trigger(
            "/videos",
            &json!({ "source_url": "s3://in.mp4" }),
            Some("k1"),
        )
        .await
        .unwrap();
    assert!(!op.done && op.response.is_none() && op.error.is_none());
    assert!(op.name.starts_with("operations/op_"));
    assert_eq!(op.metadata["type"], "transcode");
    // Same Idempotency-Key and body: the same operation.
    let again = s
        .tenant
        .trigger(
            "/videos",
            &json!({ "source_url": "s3://in.mp4" }),
            Some("k1"),
        )
        .await
        .unwrap();
    assert_eq!(again.name, op.name);
    let other = s
        .tenant
        .trigger("/videos", &json!({ "source_url": "other" }), Some("k1"))
        .await
        .unwrap_err();
    assert_eq!(other.status(), Some(422), "{other}");

    let (got, hint) = s.tenant.get_operation_with_hint(op.id()).await.unwrap();
    assert_eq!(got, op);
    assert_eq!(
        hint,
        Some(Duration::from_secs(1)),
        "Retry-After while not done"
    );

    // Nobody works on it yet: wait gives up and hands back the latest state.
    let short = WaitOptions {
        timeout: Duration::from_millis(300),
        ..WaitOptions::default()
    };
    match s.tenant.wait(op.id(), &short).await {
        Err(ClientError::WaitTimedOut(last)) => assert_eq!(last.name, op.name),
        other => panic!("expected WaitTimedOut, got {other:?}"),
    }

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(s.worker.clone(), fast_worker_options()).run(
        |job| async move {
            let source = job.input()["source_url"].as_str().unwrap_or("").to_owned();
            JobOutcome::Complete(json!({ "source": source, "variants": ["1080p"] }))
        },
        shutdown.clone(),
    ));
    let done = s
        .tenant
        .wait(op.id(), &WaitOptions::default())
        .await
        .unwrap();
    assert!(done.done);
    assert_eq!(
        done.response,
        Some(json!({ "source": "s3://in.mp4", "variants": ["1080p"] }))
    );
    assert!(done.error.is_none());
    let (_, hint) = s.tenant.get_operation_with_hint(op.id()).await.unwrap();
    assert_eq!(hint, None, "no Retry-After once done");
    shutdown.cancel();
    worker.await.unwrap().unwrap();

    // Cancelling one that never started ends it at once with CANCELLED.
    let queued = s
        .admin
        .create_operation("transcode", Some(&s.tenant_id), Map::new(), json!({}), None)
        .await
        .unwrap();
    let cancelled = s.tenant.cancel(queued.id()).await.unwrap();
    assert!(cancelled.done);
    assert_eq!(cancelled.error.unwrap().code, "CANCELLED");

    // Problem details come back typed.
    let missing = s
        .tenant
        .get_operation("op_01HX0000000000000000000000")
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert_eq!(missing.code(), Some("NOT_FOUND"));
    s.herald.stop().await.unwrap();
}

#[tokio::test]
async fn published_events_are_numbered_per_key_and_deduped_by_id() {
    let s = setup().await;
    let publish = |key: &str, id: Option<&str>| NewEvent {
        id: id.map(str::to_owned),
        event_type: "payment.succeeded".into(),
        tenant: Some(s.tenant_id.clone()),
        key: Some(key.to_owned()),
        data: json!({ "payment_id": key }),
    };
    let a = s
        .admin
        .publish(&publish("pay_1", None), None)
        .await
        .unwrap();
    let b = s
        .admin
        .publish(&publish("pay_1", None), None)
        .await
        .unwrap();
    let c = s
        .admin
        .publish(&publish("pay_2", None), None)
        .await
        .unwrap();
    assert_eq!(
        (a.sequence, b.sequence, c.sequence),
        (Some(1), Some(2), Some(1))
    );
    assert!(a.id.starts_with("evt_") && a.id != b.id);
    let first = s
        .admin
        .publish(
            &publish("pay_3", Some("evt_01HX0000000000000000000001")),
            None,
        )
        .await
        .unwrap();
    let dup = s
        .admin
        .publish(
            &publish("pay_3", Some("evt_01HX0000000000000000000001")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(first, dup, "the same id is the same event");
    let history = s.admin.list_events_for_key("pay_1").await.unwrap();
    assert_eq!(history.len(), 2);
    // A tenant key may not publish.
    let refused = s
        .tenant
        .publish(&publish("pay_1", None), None)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(403));
    s.herald.stop().await.unwrap();
}

#[tokio::test]
async fn worker_reports_progress_and_stops_when_cancelled() {
    let s = setup().await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(s.worker.clone(), fast_worker_options()).run(
        |job| async move {
            job.set_progress(42);
            job.set_metadata("stage", json!("encoding"));
            job.cancelled().await;
            JobOutcome::fail("CANCELLED", "stopped at the client's request")
        },
        shutdown.clone(),
    ));
    let op = s.tenant.trigger("/videos", &json!({}), None).await.unwrap();
    let id = op.id().to_owned();
    eventually("progress 42 is visible to pollers", || {
        let c = s.tenant.clone();
        let id = id.clone();
        async move {
            let op = c.get_operation(&id).await.unwrap();
            op.progress_percent() == Some(42.0) && op.metadata["stage"] == "encoding"
        }
    })
    .await;
    let requested = s.tenant.cancel(&id).await.unwrap();
    assert!(!requested.done, "a running operation waits for its worker");
    let done = s.tenant.wait(&id, &WaitOptions::default()).await.unwrap();
    assert_eq!(done.error.unwrap().code, "CANCELLED");
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    s.herald.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_the_job_in_hand_finish() {
    let s = setup().await;
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<String>();
    let release = Arc::new(tokio::sync::Notify::new());
    let shutdown = CancellationToken::new();
    let handler_release = release.clone();
    let worker = tokio::spawn(Worker::new(s.worker.clone(), fast_worker_options()).run(
        move |job| {
            let started = started_tx.clone();
            let release = handler_release.clone();
            async move {
                started.send(job.id().to_owned()).unwrap();
                release.notified().await;
                JobOutcome::Complete(json!({ "finished": true }))
            }
        },
        shutdown.clone(),
    ));
    let op = s.tenant.trigger("/videos", &json!({}), None).await.unwrap();
    assert_eq!(started_rx.recv().await.unwrap(), op.id());
    shutdown.cancel();
    release.notify_one();
    worker.await.unwrap().unwrap();
    // run() returned only after the job reported: the operation is already done.
    let after = s.tenant.get_operation(op.id()).await.unwrap();
    assert!(after.done);
    assert_eq!(after.response, Some(json!({ "finished": true })));
    s.herald.stop().await.unwrap();
}

#[tokio::test]
async fn worker_with_a_tenant_key_is_refused() {
    let s = setup().await;
    let result = Worker::new(s.tenant.clone(), fast_worker_options())
        .run(
            |_job| async { JobOutcome::Complete(Value::Null) },
            CancellationToken::new(),
        )
        .await;
    assert_eq!(result.unwrap_err().status(), Some(403));
    s.herald.stop().await.unwrap();
}

/// Records deliveries; the first request on each path answers 500 so Herald retries.
async fn start_receiver() -> (String, mpsc::UnboundedReceiver<(String, HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(
            move |axum::extract::Path(path): axum::extract::Path<String>,
                  headers: HeaderMap,
                  body: Bytes| {
                let tx = tx.clone();
                let seen = seen.clone();
                count.fetch_add(1, Ordering::SeqCst);
                async move {
                    let first = seen.lock().unwrap().insert(path.clone());
                    tx.send((path, headers, body)).unwrap();
                    if first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, rx)
}

#[tokio::test]
async fn real_deliveries_verify_in_both_formats_and_dedupe_on_redelivery() {
    let s = setup().await;
    let (base, mut rx) = start_receiver().await;
    let mut secrets = std::collections::HashMap::new();
    for format in ["herald", "standard-webhooks"] {
        let w = s
            .tenant
            .create_webhook(&json!({
                "url": format!("{base}/{format}"),
                "events": ["payment.*"],
                "format": format,
            }))
            .await
            .unwrap();
        secrets.insert(format, w["signing_secret"].as_str().unwrap().to_owned());
    }
    s.admin
        .publish(
            &NewEvent {
                event_type: "payment.succeeded".into(),
                tenant: Some(s.tenant_id.clone()),
                key: Some("pay_42".into()),
                data: json!({ "payment_id": "pay_42", "amount": 4599, "currency": "USD" }),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let dedupe = MemoryDedupe::new(100);
    let mut firsts = 0;
    // Each webhook gets the event twice: the first answer was a 500.
    for _ in 0..4 {
        let (path, headers, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a delivery arrives")
            .unwrap();
        let verifier = WebhookVerifier::new(secrets[path.as_str()].clone());
        let verified = verifier
            .verify(&headers, &body)
            .expect("a genuine delivery verifies");
        assert_eq!(verified.format.as_str(), path);
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["type"], "payment.succeeded");
        assert_eq!(event["sequence"], 1);
        if dedupe
            .first_time(&format!("{path}/{}", verified.event_id))
            .await
            .unwrap()
        {
            firsts += 1;
        }
        // Tampering with one byte of the body, or the wrong secret, is refused.
        let mut tampered = body.to_vec();
        tampered[1] ^= 1;
        assert_eq!(
            verifier.verify(&headers, &tampered),
            Err(VerifyError::BadSignature)
        );
        let other = WebhookVerifier::new(
            secrets[if path == "herald" {
                "standard-webhooks"
            } else {
                "herald"
            }]
            .clone(),
        );
        assert_eq!(
            other.verify(&headers, &body),
            Err(VerifyError::BadSignature)
        );
    }
    assert_eq!(
        firsts, 2,
        "one first delivery per webhook; redeliveries deduped"
    );
    s.herald.stop().await.unwrap();
}
