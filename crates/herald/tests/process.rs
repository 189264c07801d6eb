//! The real `herald` binary in a child process: killed with SIGKILL and started again
//! on the same database, it has lost nothing it acknowledged; a worker process killed
//! mid-operation loses nothing either (its operation is requeued).

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "process-test-admin";

const CONFIG: &str = r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "2s"
max_attempts = 3

[webhooks]
allow_private_destinations = true
timeout = "2s"
schedule = ["0s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
"#;

mod common;

use common::Herald;

fn start_herald(dir: &Path) -> Herald {
    Herald::start(dir, CONFIG, ADMIN, "warn")
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    call(http, base, reqwest::Method::POST, path, key, body).await
}

async fn get(http: &reqwest::Client, base: &str, path: &str, key: &str) -> (StatusCode, Value) {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn op_id(v: &Value) -> String {
    v["name"]
        .as_str()
        .unwrap()
        .trim_start_matches("operations/")
        .to_owned()
}

async fn tenant_and_worker(http: &reqwest::Client, base: &str) -> (String, String) {
    let (_, t) = post(http, base, "/tenants", ADMIN, json!({ "name": "acme" })).await;
    let (_, k) = post(
        http,
        base,
        &format!("/tenants/{}/keys", t["id"].as_str().unwrap()),
        ADMIN,
        json!({ "role": "tenant" }),
    )
    .await;
    let (_, w) = post(http, base, "/keys", ADMIN, json!({ "role": "worker" })).await;
    (
        k["key"].as_str().unwrap().to_owned(),
        w["key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn sigkill_and_restart_loses_no_acknowledged_operation_or_change() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let herald = start_herald(dir.path());
    let base = herald.base.clone();
    let (tenant, worker) = tenant_and_worker(&http, &base).await;

    // A known set of state changes, each acknowledged before we record what we expect.
    let mut expected: Vec<(String, Value)> = vec![];
    let mut created = vec![];
    for i in 0..30 {
        let (s, op) = post(&http, &base, "/videos", &tenant, json!({ "i": i })).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        created.push(op_id(&op));
    }
    // Ten claimed; of those 3 completed, 3 failed, 4 left running with progress 42.
    for n in 0..10 {
        let (_, claimed) = post(
            &http,
            &base,
            "/operations:claim",
            &worker,
            json!({ "types": ["transcode"], "lease": "1h" }),
        )
        .await;
        let op = &claimed["operations"][0];
        let (id, token) = (op_id(op), op["lease_token"].as_str().unwrap().to_owned());
        let (s, body) =
            match n {
                0..=2 => {
                    post(
                        &http,
                        &base,
                        &format!("/operations/{id}:complete"),
                        &worker,
                        json!({ "lease_token": token, "response": { "n": n } }),
                    )
                    .await
                }
                3..=5 => post(
                    &http,
                    &base,
                    &format!("/operations/{id}:fail"),
                    &worker,
                    json!({ "lease_token": token, "error": { "code": "BAD", "message": "no" } }),
                )
                .await,
                _ => {
                    let (s, _) = post(
                        &http,
                        &base,
                        &format!("/operations/{id}:heartbeat"),
                        &worker,
                        json!({ "lease_token": token, "metadata": { "progress_percent": 42 } }),
                    )
                    .await;
                    (
                        s,
                        get(&http, &base, &format!("/operations/{id}"), &tenant)
                            .await
                            .1,
                    )
                }
            };
        assert_eq!(s, StatusCode::OK, "{body:?}");
        expected.push((id, body));
    }
    // Five queued ones cancelled.
    for id in created.iter().rev().take(5) {
        let (s, body) = post(
            &http,
            &base,
            &format!("/operations/{id}:cancel"),
            &tenant,
            json!({}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        expected.push((id.clone(), body));
    }

    // Under load: creators keep going while the process is killed; whatever was acknowledged must survive.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = vec![];
    for c in 0..4 {
        let (http, base, tenant, acked) =
            (http.clone(), base.clone(), tenant.clone(), acked.clone());
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let r = http
                    .post(format!("{base}/videos"))
                    .bearer_auth(&tenant)
                    .json(&json!({ "c": c, "i": i }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        acked.lock().unwrap().push(op_id(&v));
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    herald.kill9();
    for l in load {
        l.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the load ran before the kill");

    let herald = start_herald(dir.path());
    let base = herald.base.clone();
    for (id, body) in &expected {
        let (s, now) = get(&http, &base, &format!("/operations/{id}"), &tenant).await;
        assert_eq!(s, StatusCode::OK, "{id} lost");
        assert_eq!(&now, body, "{id} changed across the crash");
    }
    for id in &acked {
        let (s, _) = get(&http, &base, &format!("/operations/{id}"), &tenant).await;
        assert_eq!(s, StatusCode::OK, "acknowledged operation {id} was lost");
    }
    println!(
        "acknowledged before SIGKILL: {} changes, {} creations under load; lost: 0",
        expected.len(),
        acked.len()
    );
    herald.kill9();
}

/// Run as a child process by `a_killed_worker_process_loses_nothing`: claims one
/// operation, reports it on stdout, then heartbeats until it is killed.
#[tokio::test]
#[ignore = "a helper process, started by another test"]
async fn worker_child_process() {
    let (Ok(base), Ok(key)) = (
        std::env::var("HERALD_TEST_BASE"),
        std::env::var("HERALD_TEST_WORKER_KEY"),
    ) else {
        return;
    };
    let http = reqwest::Client::new();
    let (_, claimed) = post(
        &http,
        &base,
        "/operations:claim",
        &key,
        json!({ "types": ["transcode"], "wait": "10s" }),
    )
    .await;
    let op = &claimed["operations"][0];
    let (id, token) = (op_id(op), op["lease_token"].as_str().unwrap().to_owned());
    println!("CLAIMED {id}");
    loop {
        post(
            &http,
            &base,
            &format!("/operations/{id}:heartbeat"),
            &key,
            json!({ "lease_token": token, "metadata": { "progress_percent": 42 } }),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn this_test_binary() -> PathBuf {
    std::env::current_exe().unwrap()
}

#[tokio::test]
async fn a_killed_worker_process_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let herald = start_herald(dir.path());
    let base = herald.base.clone();
    let (tenant, worker) = tenant_and_worker(&http, &base).await;
    let (_, op) = post(
        &http,
        &base,
        "/videos",
        &tenant,
        json!({ "source_url": "https://x/v.mp4" }),
    )
    .await;
    let id = op_id(&op);

    let mut child = Command::new(this_test_binary())
        .args([
            "worker_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HERALD_TEST_BASE", &base)
        .env("HERALD_TEST_WORKER_KEY", &worker)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let claimed = loop {
        let line = lines.next().expect("worker exited").unwrap();
        // libtest prints its own "test … " prefix on the same line.
        if let Some((_, rest)) = line.split_once("CLAIMED ") {
            break rest.trim().to_owned();
        }
    };
    assert_eq!(claimed, id);
    // The worker is alive and reporting progress.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&http, &base, &format!("/operations/{id}"), &tenant)
        .await
        .1["metadata"]["progress_percent"]
        != 42
    {
        assert!(
            Instant::now() < deadline,
            "the worker never reported progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL: no goodbye, no handing back
    child.wait().unwrap();

    // Its lease (2s) runs out; the operation goes back to the queue with its input intact.
    let (_, again) = post(
        &http,
        &base,
        "/operations:claim",
        &worker,
        json!({ "types": ["transcode"], "wait": "20s" }),
    )
    .await;
    let op = &again["operations"][0];
    assert_eq!(op_id(op), id, "the operation was requeued");
    assert_eq!(op["attempt"], 2);
    assert_eq!(op["input"], json!({ "source_url": "https://x/v.mp4" }));
    let (s, done) = post(
        &http,
        &base,
        &format!("/operations/{id}:complete"),
        &worker,
        json!({ "lease_token": op["lease_token"], "response": { "ok": true } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(done["done"], true);
    herald.kill9();
}

/// A receiver that counts each event id it is sent, answering 200 after a short pause
/// so that deliveries are in flight when Herald is killed.
async fn counting_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
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
    let url = format!("http://{}/hooks/payments", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn sigkill_mid_delivery_still_delivers_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (url, seen) = counting_receiver().await;
    let herald = start_herald(dir.path());
    let base = herald.base.clone();
    let (_, t) = post(&http, &base, "/tenants", ADMIN, json!({ "name": "acme" })).await;
    let tenant = t["id"].as_str().unwrap().to_owned();
    let (s, _) = post(
        &http,
        &base,
        "/webhooks",
        ADMIN,
        json!({ "url": url, "events": ["payment.*"], "tenant": tenant }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    // Producers publish until the process dies under them; only 202s count as acknowledged.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut producers = vec![];
    for p in 0..4 {
        let (http, base, tenant, acked) =
            (http.clone(), base.clone(), tenant.clone(), acked.clone());
        producers.push(tokio::spawn(async move {
            for i in 0..2000 {
                let body = json!({ "type": "payment.succeeded", "tenant": tenant, "key": format!("pay_{p}"), "data": { "i": i } });
                match http.post(format!("{base}/events")).bearer_auth(ADMIN).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => match r.json::<Value>().await {
                        Ok(v) => acked.lock().unwrap().push(v["id"].as_str().unwrap().to_owned()),
                        Err(_) => break,
                    },
                    _ => break,
                }
            }
        }));
    }
    // Kill once some events are delivered and others are still queued or in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 50 {
        assert!(
            Instant::now() < deadline,
            "no deliveries arrived before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    herald.kill9();
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let delivered_before = seen.lock().unwrap().len();
    assert!(
        delivered_before < acked.len(),
        "the kill came while deliveries were still owed"
    );

    let herald = start_herald(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            acked.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events were never delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let duplicates: u32 = seen.lock().unwrap().values().map(|n| n - 1).sum();
    println!(
        "acknowledged {}, delivered before the kill {}, delivered in all {}, duplicates {}, lost 0",
        acked.len(),
        delivered_before,
        seen.lock().unwrap().len(),
        duplicates
    );
    herald.kill9();
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_herald(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("herald.db").display()
        ))
        .env("HERALD_ADMIN_KEY", ADMIN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another Herald process"),
        "{stderr}"
    );
    first.kill9();
}

#[tokio::test]
async fn sigterm_answers_long_polls_and_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut herald = start_herald(dir.path());
    let base = herald.base.clone();
    let (_, worker) = tenant_and_worker(&http, &base).await;
    let poll = {
        let (http, base, worker) = (http.clone(), base.clone(), worker.clone());
        tokio::spawn(async move {
            post(
                &http,
                &base,
                "/operations:claim",
                &worker,
                json!({ "types": ["transcode"], "wait": "60s" }),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = herald.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long poll was answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["operations"], json!([]));
    let exit = loop {
        if let Some(code) = herald.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "herald did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "herald exited with {exit:?}");
}

/// `herald serve` on a fresh database with no admin key configured mints one and prints it
/// once; the key works, only its hash is stored, and a restart prints nothing new.
#[tokio::test]
async fn a_fresh_database_gets_one_admin_key_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--database")
            .arg(format!(
                "sqlite://{}",
                dir.path().join("herald.db").display()
            ))
            .env_remove("HERALD_ADMIN_KEY")
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = vec![];
        let base = loop {
            let line = lines
                .next()
                .expect("herald exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("herald listening on ") {
                break addr.trim().to_owned();
            }
            printed.push(line);
        };
        std::thread::spawn(move || for _ in lines {});
        (child, base, printed.join("\n"))
    };
    let (mut first, base, printed) = start();
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("hrk_"))
        .expect("an admin key was printed")
        .to_owned();
    let http = reqwest::Client::new();
    let (s, _) = post(&http, &base, "/tenants", &key, json!({ "name": "acme" })).await;
    assert_eq!(s, StatusCode::CREATED, "the printed key is an admin key");
    first.kill().unwrap();
    first.wait().unwrap();
    let db = std::fs::read(dir.path().join("herald.db")).unwrap();
    let wal = std::fs::read(dir.path().join("herald.db-wal")).unwrap_or_default();
    let secret = key.rsplit('_').next().unwrap().as_bytes();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret)
            && !wal.windows(secret.len()).any(|w| w == secret)
    );

    let (mut second, base, printed) = start();
    assert!(
        !printed.contains("hrk_"),
        "a second start prints no new key: {printed}"
    );
    let (s, _) = post(&http, &base, "/tenants", &key, json!({ "name": "again" })).await;
    assert_eq!(s, StatusCode::CREATED, "the first key still works");
    second.kill().unwrap();
    second.wait().unwrap();
}
