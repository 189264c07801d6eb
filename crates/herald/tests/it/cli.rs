//! The CLI's client commands against a real Herald (in-process, port 0): `tenants
//! create`, `keys create` (online and `--offline`, scoped worker keys), `verify` and
//! `contract`.

use herald_core::signing::{herald_signature, standard_signature};
use herald_server::embedded::EmbeddedHerald;
use std::process::{Command, Output};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_KEY")
        .env_remove("HERALD_URL")
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_WEBHOOK_SECRET")
        .env("HERALD_LOG", "error")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_and_keys_are_created_over_http_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("herald.db");
    let h = EmbeddedHerald::start("", &db, "cli-admin").await.unwrap();
    let url = h.base_url.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            herald(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let t = run(vec![
        "tenants".into(),
        "create".into(),
        "--name".into(),
        "acme".into(),
        "--url".into(),
        url.clone(),
        "--key".into(),
        "cli-admin".into(),
    ])
    .await
    .unwrap();
    assert!(t.status.success(), "{}", stderr(&t));
    let tenant = stdout(&t);
    assert!(tenant.starts_with("tnt_"), "{tenant}");

    let k = run(vec![
        "keys".into(),
        "create".into(),
        "--role".into(),
        "tenant".into(),
        "--tenant".into(),
        tenant.clone(),
        "--url".into(),
        url.clone(),
        "--key".into(),
        "cli-admin".into(),
    ])
    .await
    .unwrap();
    assert!(k.status.success(), "{}", stderr(&k));
    let tenant_key = stdout(&k);
    // The new key works: the tenant reads its (empty) operations list.
    let r = reqwest::Client::new()
        .get(format!("{url}/operations"))
        .bearer_auth(&tenant_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A bad admin key is refused with Herald's problem, and a non-zero exit.
    let bad = run(vec![
        "tenants".into(),
        "create".into(),
        "--name".into(),
        "x".into(),
        "--url".into(),
        url.clone(),
        "--key".into(),
        "wrong".into(),
    ])
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("401"), "{}", stderr(&bad));
    // No key at all says how to give one.
    let none = run(vec![
        "keys".into(),
        "create".into(),
        "--role".into(),
        "worker".into(),
        "--url".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(!none.status.success());
    assert!(stderr(&none).contains("HERALD_KEY"), "{}", stderr(&none));
    h.stop().await.unwrap();

    // Offline: straight into the database (the server is stopped), then the key works.
    let off = run(vec![
        "keys".into(),
        "create".into(),
        "--offline".into(),
        "--role".into(),
        "worker".into(),
        "--database".into(),
        format!("sqlite://{}", db.display()),
    ])
    .await
    .unwrap();
    assert!(off.status.success(), "{}", stderr(&off));
    let worker_key = stdout(&off);
    let h = EmbeddedHerald::start("[[operation_types]]\nname = \"x\"", &db, "cli-admin")
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/operations:claim", h.base_url))
        .bearer_auth(&worker_key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_create_mints_scoped_worker_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("herald.db");
    let config =
        "[[operation_types]]\nname = \"transcode\"\n[[operation_types]]\nname = \"report\"\n";
    let h = EmbeddedHerald::start(config, &db, "cli-admin")
        .await
        .unwrap();
    let url = h.base_url.clone();
    let http = reqwest::Client::new();
    let tenant: serde_json::Value = http
        .post(format!("{url}/tenants"))
        .bearer_auth("cli-admin")
        .json(&serde_json::json!({ "name": "acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = ["keys", "create", "--url", &url, "--key", "cli-admin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            herald(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let k = run(&[
        "--role",
        "worker",
        "--type",
        "transcode",
        "--tenant",
        &tenant,
    ])
    .await
    .unwrap();
    assert!(k.status.success(), "{}", stderr(&k));
    let worker = stdout(&k);
    // The key is scoped: a report is outside it (403), a transcode is not.
    let claim = |types: serde_json::Value| {
        http.post(format!("{url}/operations:claim"))
            .bearer_auth(&worker)
            .json(&serde_json::json!({ "types": types }))
            .send()
    };
    assert_eq!(
        claim(serde_json::json!(["report"])).await.unwrap().status(),
        403
    );
    assert_eq!(
        claim(serde_json::json!(["transcode"]))
            .await
            .unwrap()
            .status(),
        200
    );

    // Herald's refusal of a bad scope reaches the user, with a non-zero exit.
    let bad = run(&["--role", "worker", "--type", "nope"]).await.unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("nope"), "{}", stderr(&bad));
    // Flags that do not fit the role are refused before any request.
    for args in [
        vec!["--role", "admin", "--type", "transcode"],
        vec![
            "--role",
            "tenant",
            "--tenant",
            &tenant,
            "--type",
            "transcode",
        ],
        vec!["--role", "tenant", "--tenant", &tenant, "--tenant", &tenant],
        vec!["--role", "worker", "--type", "transcode", "--offline"],
    ] {
        let o = run(&args).await.unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!stderr(&o).is_empty());
    }
    h.stop().await.unwrap();
}

#[test]
fn verify_exits_0_for_a_genuine_request_and_1_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"id":"evt_1","type":"payment.succeeded"}"#).unwrap();
    let ts = "2026-04-10T15:20:00Z";
    let sig = herald_signature("hsec_secret", ts, &std::fs::read(&body).unwrap());
    let body_arg = body.to_str().unwrap();
    let base = |secret: &str, at: &str| -> Vec<String> {
        vec![
            "verify".into(),
            "--secret".into(),
            secret.into(),
            "--body".into(),
            body_arg.into(),
            "--at".into(),
            at.into(),
        ]
    };
    let with_headers = |mut args: Vec<String>, sig: &str| {
        for h in [
            "X-Event-Id: evt_1".to_string(),
            format!("X-Timestamp: {ts}"),
            format!("X-Signature: sha256=00 {sig}"),
        ] {
            args.push("-H".into());
            args.push(h);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        herald(&refs)
    };
    let ok = with_headers(base("hsec_secret", "2026-04-10T15:21:00Z"), &sig);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("valid: herald signature, event evt_1"));

    let wrong = with_headers(base("hsec_other", "2026-04-10T15:21:00Z"), &sig);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("invalid: no signature matches"),
        "{}",
        stderr(&wrong)
    );

    let stale = with_headers(base("hsec_secret", "2026-04-10T15:30:00Z"), &sig);
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("tolerance"), "{}", stderr(&stale));

    // Standard Webhooks headers from a file, as `curl -D` writes them.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sig = standard_signature(secret, "msg_1", 1775834400, &std::fs::read(&body).unwrap());
    let headers = dir.path().join("headers.txt");
    std::fs::write(
        &headers,
        format!("HTTP/1.1 200 OK\r\nwebhook-id: msg_1\r\nwebhook-timestamp: 1775834400\r\nwebhook-signature: {sig}\r\n\r\n"),
    )
    .unwrap();
    let mut args = base(secret, "2026-04-10T15:20:30Z");
    args.push("--headers-file".into());
    args.push(headers.to_str().unwrap().into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let std_ok = herald(&refs);
    assert_eq!(std_ok.status.code(), Some(0), "{}", stderr(&std_ok));
    assert!(stdout(&std_ok).contains("standard-webhooks"));
}

#[test]
fn contract_prints_markdown_openapi_and_asyncapi() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[[operation_types]]\nname = \"transcode\"\ntrigger = \"POST /videos\"\nlease = \"40s\"\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let md = herald(&["contract", "--config", c]);
    assert!(md.status.success(), "{}", stderr(&md));
    let text = stdout(&md);
    assert!(text.starts_with("# Async contract"));
    assert!(text.contains("`POST /videos`") && text.contains("**Lease:** 40s"));

    let oa = herald(&["contract", "--config", c, "--openapi"]);
    let doc: serde_json::Value = serde_json::from_slice(&oa.stdout).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/videos"]["post"].is_object());

    let aa = herald(&["contract", "--config", c, "--asyncapi"]);
    let doc: serde_json::Value = serde_json::from_slice(&aa.stdout).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert!(doc["channels"]["transcode.succeeded"].is_object());

    let missing = herald(&["contract", "--config", "/nonexistent/herald.toml"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("cannot read config file"));
}
