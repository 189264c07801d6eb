//! One process per SQLite file, SIGTERM answers long polls and exits promptly, the first admin key printed once.

use super::*;

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
