//! The real `herald` binary in a child process: killed with SIGKILL and started again
//! on the same database, it has lost nothing it acknowledged; a worker process killed
//! mid-operation loses nothing either (its operation is requeued).

mod kills;
mod lifecycle;
mod worker;

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

use crate::common::Herald;

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
