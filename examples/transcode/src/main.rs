//! The reference text's video example, end to end against a real Herald (in-process,
//! port 0, temp database): `POST /videos` answers 202 with an Operation; a worker built
//! on `herald-client` transcodes, reporting `progress_percent`; a first worker dies
//! mid-job and its lease expires, so the video is handed to another worker and the dead
//! one's late answer is refused; one source is unreachable; one upload is cancelled;
//! and the uploader's webhook (Standard Webhooks format) gets `transcode.succeeded`,
//! `transcode.failed` and `transcode.cancelled`, verified and deduped.
//!
//! Run: `cargo run -p example-transcode`. Exits 0 only if every check held.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use herald_client::client::WaitOptions;
use herald_client::{
    Client, DedupeStore, Job, JobOutcome, MemoryDedupe, WebhookVerifier, Worker, WorkerOptions,
};
use herald_server::embedded::EmbeddedHerald;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "2s"          # short, so the dead worker's video comes back quickly
max_attempts = 3
retry_after = "1s"

[webhooks]
allow_private_destinations = true   # the uploader's receiver listens on loopback
schedule = ["0s", "1s", "2s", "5s"]
"#;

struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        println!("  [{}] {what}", if ok { "ok" } else { "FAILED" });
        if !ok {
            self.failed.push(what.to_owned());
        }
    }
}

/// The transcoder. Sources starting with `unreachable:` fail; `"long": true` runs
/// until cancelled; anything else goes 0 → 100 % in steps.
async fn transcode(job: Job) -> JobOutcome {
    let input = job.input().clone();
    let source = input["source_url"].as_str().unwrap_or_default().to_owned();
    let video_id = format!("vid_{}", &job.id()[job.id().len() - 6..]);
    job.set_metadata("video_id", json!(video_id));
    if source.starts_with("unreachable:") {
        return JobOutcome::fail("SOURCE_UNREACHABLE", format!("Could not fetch {source}."));
    }
    let long = input["long"].as_bool().unwrap_or(false);
    let mut progress = 0u8;
    loop {
        if job.is_cancelled() {
            return JobOutcome::fail("CANCELLED", "The upload was cancelled.");
        }
        if progress >= 100 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(if long { 300 } else { 150 })) => {}
            _ = job.cancelled() => continue,
        }
        progress = if long {
            (progress + 2).min(98)
        } else {
            progress + 20
        };
        job.set_progress(progress);
    }
    JobOutcome::Complete(json!({
        "video_id": video_id,
        "duration_seconds": 832,
        "attempt": job.operation.attempt,
        "variants": [
            { "resolution": "1080p", "url": format!("https://cdn.example.com/{video_id}/1080p.mp4") },
            { "resolution": "720p", "url": format!("https://cdn.example.com/{video_id}/720p.mp4") }
        ]
    }))
}

/// The uploader's webhook receiver: verify (Standard Webhooks), dedupe, record.
async fn start_receiver(
    secret: Arc<Mutex<Option<String>>>,
    received: Arc<Mutex<BTreeMap<String, Value>>>,
) -> anyhow::Result<String> {
    let dedupe = Arc::new(MemoryDedupe::new(1000));
    let app = axum::Router::new().route(
        "/hooks/videos",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let secret = secret.clone();
            let received = received.clone();
            let dedupe = dedupe.clone();
            async move {
                let Some(secret) = secret.lock().unwrap().clone() else {
                    return StatusCode::SERVICE_UNAVAILABLE;
                };
                let verified = match WebhookVerifier::new(secret).verify(&headers, &body) {
                    Ok(v) => v,
                    Err(e) => {
                        println!("  receiver: refused: {e}");
                        return StatusCode::UNAUTHORIZED;
                    }
                };
                if !dedupe.first_time(&verified.event_id).await.unwrap_or(false) {
                    return StatusCode::OK;
                }
                let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                println!(
                    "  receiver: {} for {} ({} signature verified)",
                    event["type"],
                    event["data"]["name"],
                    verified.format.as_str()
                );
                let name = event["data"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                received.lock().unwrap().insert(name, event);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/videos", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let herald =
        EmbeddedHerald::start(CONFIG, &dir.path().join("herald.db"), "example-admin").await?;
    println!("Herald is running at {} (temp database)\n", herald.base_url);
    let admin = Client::new(&herald.base_url, &herald.admin_key);
    let mut checks = Checks { failed: vec![] };

    let acme = admin.create_tenant("acme").await?;
    let uploader = Client::new(
        &herald.base_url,
        &admin.create_key("tenant", Some(&acme.id)).await?.key,
    );
    let worker_key = admin.create_key("worker", None).await?.key;

    let secret = Arc::new(Mutex::new(None));
    let received = Arc::new(Mutex::new(BTreeMap::new()));
    let url = start_receiver(secret.clone(), received.clone()).await?;
    let hook = uploader
        .create_webhook(&json!({
            "url": url, "events": ["transcode.*"], "format": "standard-webhooks"
        }))
        .await?;
    *secret.lock().unwrap() = hook["signing_secret"].as_str().map(str::to_owned);
    println!("1. The uploader registered {url} for transcode.* (Standard Webhooks format)\n");

    println!("2. POST /videos {{ \"source_url\", \"title\": \"Team meeting\" }}:");
    let meeting = uploader
        .trigger(
            "/videos",
            &json!({ "source_url": "https://storage.example.com/raw/meeting.mov", "title": "Team meeting" }),
            None,
        )
        .await?;
    println!(
        "   HTTP/1.1 202 Accepted\n   Location: /operations/{}\n   {}",
        meeting.id(),
        serde_json::to_string(&meeting)?
    );
    checks.check(
        !meeting.done && meeting.metadata["type"] == "transcode",
        "the 202 body is an Operation, not done",
    );

    println!("\n3. A first worker claims it and dies without a word (no heartbeat):");
    let doomed = Client::new(&herald.base_url, &worker_key);
    let claimed = doomed
        .claim(&["transcode".into()], None, 1, Duration::ZERO)
        .await?;
    let dead_lease = claimed
        .first()
        .map(|c| (c.id().to_owned(), c.lease_token.clone()));
    checks.check(
        dead_lease
            .as_ref()
            .is_some_and(|(id, _)| id == meeting.id()),
        "the first worker held the meeting video (attempt 1)",
    );

    println!("\n4. The real worker starts (herald-client Worker); two more uploads arrive:");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(
            Client::new(&herald.base_url, &worker_key),
            WorkerOptions {
                types: vec!["transcode".into()],
                claim_wait: Duration::from_secs(5),
                heartbeat_every: Duration::from_millis(200),
                concurrency: 4,
                ..Default::default()
            },
        )
        .run(transcode, shutdown.clone()),
    );
    let broken = uploader
        .trigger(
            "/videos",
            &json!({ "source_url": "unreachable://nas/old.mov", "title": "Old tape" }),
            None,
        )
        .await?;
    let long = uploader
        .trigger(
            "/videos",
            &json!({ "source_url": "https://storage.example.com/raw/all-hands.mov", "title": "All hands", "long": true }),
            None,
        )
        .await?;
    println!(
        "   {} (unreachable source), {} (long)",
        broken.id(),
        long.id()
    );

    println!("\n5. The uploader watches the long one and cancels it once it is under way:");
    let wait_opts = WaitOptions {
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let op = uploader.get_operation(long.id()).await?;
        if op.progress_percent().unwrap_or(0.0) > 0.0 || tokio::time::Instant::now() > deadline {
            println!(
                "   progress {}% -> POST /operations/{}:cancel",
                op.progress_percent().unwrap_or(0.0),
                long.id()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requested = uploader.cancel(long.id()).await?;
    checks.check(
        !requested.done,
        "cancelling a running transcode asks the worker (done stays false until it stops)",
    );

    println!("\n6. The uploader polls the meeting video (it comes back after the dead worker's 2s lease):");
    let mut last_progress = -1.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let meeting_done = loop {
        let (op, retry_after) = uploader.get_operation_with_hint(meeting.id()).await?;
        let p = op.progress_percent().unwrap_or(0.0);
        if p != last_progress {
            println!(
                "   GET /operations/{} -> progress {p}%, done {}",
                meeting.id(),
                op.done
            );
            last_progress = p;
        }
        if op.done || tokio::time::Instant::now() > deadline {
            break op;
        }
        // Poll faster than Retry-After only to show progress here; clients use the hint.
        let _ = retry_after;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("   {}", serde_json::to_string(&meeting_done)?);
    let response = meeting_done.response.clone().unwrap_or(Value::Null);
    checks.check(
        meeting_done.done && meeting_done.error.is_none(),
        "the meeting video is done with a response",
    );
    checks.check(
        response["variants"][0]["resolution"] == "1080p" && response["duration_seconds"] == 832,
        "the response lists the variants",
    );
    checks.check(
        response["attempt"] == 2,
        "it was done on attempt 2, after the first worker's lease expired",
    );
    checks.check(
        meeting_done.progress_percent() == Some(100.0),
        "progress_percent reached 100",
    );

    if let Some((id, token)) = dead_lease {
        let late = doomed
            .complete(&id, &token, json!({ "zombie": true }))
            .await;
        let status = late.as_ref().err().and_then(|e| e.status());
        println!("\n7. The dead worker comes back and tries to complete: {status:?}");
        checks.check(
            status == Some(409),
            "its stale lease_token gets 409 and changes nothing",
        );
        let again = uploader.get_operation(&id).await?;
        checks.check(
            again.response == meeting_done.response,
            "the result is still the real worker's",
        );
    }

    let broken_done = uploader.wait(broken.id(), &wait_opts).await?;
    let long_done = uploader.wait(long.id(), &wait_opts).await?;
    println!(
        "\n8. Final states:\n   {}\n   {}",
        serde_json::to_string(&broken_done)?,
        serde_json::to_string(&long_done)?
    );
    checks.check(
        broken_done
            .error
            .as_ref()
            .is_some_and(|e| e.code == "SOURCE_UNREACHABLE"),
        "the unreachable source ended with SOURCE_UNREACHABLE",
    );
    checks.check(
        long_done
            .error
            .as_ref()
            .is_some_and(|e| e.code == "CANCELLED"),
        "the cancelled upload ended with CANCELLED",
    );

    println!("\n9. Webhooks the uploader received:");
    let expected = [
        (meeting_done.name.clone(), "transcode.succeeded"),
        (broken_done.name.clone(), "transcode.failed"),
        (long_done.name.clone(), "transcode.cancelled"),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    for (name, kind) in expected {
        let event = got.get(&name);
        checks.check(
            event.is_some_and(|e| e["type"] == kind && e["data"]["done"] == true),
            &format!("{kind} arrived for {name}, its data the final Operation"),
        );
    }
    checks.check(
        got.get(&meeting_done.name)
            .is_some_and(|e| e["data"]["response"] == response),
        "the succeeded event carries the same response as GET /operations/{id}",
    );

    shutdown.cancel();
    worker.await??;
    herald.stop().await?;
    if checks.failed.is_empty() {
        println!("\nAll checks held.");
        Ok(())
    } else {
        eprintln!(
            "\n{} check(s) failed: {:?}",
            checks.failed.len(),
            checks.failed
        );
        std::process::exit(1);
    }
}
