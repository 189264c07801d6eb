//! DNS rebinding, end to end with the real resolver: a webhook's host name resolves to a
//! public address when it is registered and to loopback when its delivery is sent. The
//! `herald` child runs in its own mount namespace with a hosts file the test rewrites
//! (glibc reads `/etc/hosts` at every look-up), so the name really changes its answer
//! between the two look-ups, as a rebinding DNS server's would. The delivery must be
//! refused at connect time, with an attempt error naming the address, and the loopback
//! listener must see no connection.
//!
//! Needs `unshare --mount` (root, as in CI); elsewhere it says it is skipped.

use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "rebinding-test-admin";
const HOST: &str = "rebind.herald-test.example";
/// A public address (TEST-NETs are refused as documentation ranges).
const PUBLIC: &str = "93.184.215.14";

const CONFIG: &str = r#"
[webhooks]
allow_private_destinations = false
timeout = "2s"
schedule = ["0s", "1h"]
"#;

fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Rewrites the file in place (same inode), so the bind mount shows the new text.
fn write_in_place(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[tokio::test]
async fn a_name_rebound_to_loopback_after_registration_is_refused_at_send_time() {
    if !can_unshare() {
        println!("skipped: `unshare --mount` is not permitted here (needs root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{PUBLIC} {HOST}\n")).unwrap();

    // A loopback listener standing for an internal service; it counts connections.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((_sock, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    let script = format!("mount --bind {} /etc/hosts && exec \"$@\"", hosts.display());
    let herald = crate::common::Herald::start_under(
        &["unshare", "--mount", "sh", "-c", &script, "sh"],
        dir.path(),
        CONFIG,
        ADMIN,
        "warn",
    );
    let http = reqwest::Client::new();
    let base = &herald.base;

    // Registered while the name resolves to a public address: accepted.
    let url = format!("http://{HOST}:{port}/hooks");
    let r = http
        .post(format!("{base}/webhooks"))
        .bearer_auth(ADMIN)
        .json(&json!({ "url": url, "events": ["*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let webhook: Value = r.json().await.unwrap();
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();

    // The name now answers loopback: the rebinding.
    write_in_place(&hosts, &format!("127.0.0.1 localhost\n127.0.0.1 {HOST}\n"));

    let r = http
        .post(format!("{base}/events"))
        .bearer_auth(ADMIN)
        .json(&json!({ "type": "user.created", "data": { "id": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);

    let deadline = Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        let r = http
            .get(format!("{base}/deliveries?webhook={webhook_id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let list: Value = r.json().await.unwrap();
        let attempted = list["deliveries"]
            .as_array()
            .and_then(|d| d.first())
            .filter(|d| d["attempts"].as_u64().unwrap_or(0) >= 1)
            .cloned();
        if let Some(d) = attempted {
            break d;
        }
        assert!(Instant::now() < deadline, "no attempt was made: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = delivery["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{HOST} resolves to 127.0.0.1"))
            && error.contains("loopback")
            && error.contains("webhooks.allow_private_destinations"),
        "{delivery}"
    );
    assert_eq!(delivery["status"], "pending", "{delivery}"); // retried later, not dropped
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the rebound name was connected to"
    );
    herald.kill9();
}
