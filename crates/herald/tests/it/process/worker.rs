//! A worker process killed mid-operation loses nothing (its operation is requeued); the worker is this test binary, run again as an ignored helper test.

use super::*;

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
            "process::worker::worker_child_process",
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
