//! The pull feed with the real binary (issue #17, parts 2 and 3): a consumer followed
//! across `kill -9` and restarts of `herald serve` resumes right after its last ack,
//! skipping nothing and repeating nothing acknowledged; and `herald listen` forwards
//! every event once, signed verifiably in both formats, stops on SIGINT and resumes.

use crate::common::Herald;
use axum::body::Bytes;
use herald_client::WebhookVerifier;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &str = "feed-test-admin";
const CONFIG: &str = "[webhooks]\nallow_private_destinations = true\n";

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Option<(StatusCode, Value)> {
    let mut req = http.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.ok()?;
    let status = r.status();
    // A reply cut off by a kill is no answer.
    let body = r.json::<Value>().await.ok()?;
    Some((status, body))
}

/// A tenant and a key for it.
async fn tenant(http: &reqwest::Client, base: &str) -> (String, String) {
    let post = reqwest::Method::POST;
    let (_, t) = call(
        http,
        post.clone(),
        format!("{base}/tenants"),
        ADMIN,
        Some(json!({ "name": "acme" })),
    )
    .await
    .unwrap();
    let id = t["id"].as_str().unwrap().to_owned();
    let (_, k) = call(
        http,
        post,
        format!("{base}/tenants/{id}/keys"),
        ADMIN,
        Some(json!({ "role": "tenant" })),
    )
    .await
    .unwrap();
    (id, k["key"].as_str().unwrap().to_owned())
}

/// Publishes `n` events, one after the other; answers the ids Herald acknowledged.
async fn publish(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    from: usize,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let body = json!({ "type": "pay.ok", "tenant": tenant, "data": { "i": i } });
        if let Some((StatusCode::ACCEPTED, v)) = call(
            http,
            reqwest::Method::POST,
            format!("{base}/events"),
            ADMIN,
            Some(body),
        )
        .await
        {
            ids.push(v["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

fn ids_of(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Kill -9 in the middle of a consumer's work, four times: after each restart the first
/// read starts right after the last acknowledged event (the unacknowledged page comes
/// again, nothing acknowledged does), and over the whole run every acknowledged event is
/// read, in one order, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_after_its_ack_across_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut herald = Herald::start(dir.path(), CONFIG, ADMIN, "error");
    let (tenant_id, key) = tenant(&http, &herald.base).await;
    let (s, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/consumers", herald.base),
        &key,
        Some(json!({ "name": "billing" })),
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::CREATED);

    let mut published: Vec<String> = Vec::new();
    // In feed order, every event read once and acknowledged.
    let mut acked: Vec<String> = Vec::new();
    for round in 0..4 {
        let base = herald.base.clone();
        // Events published while the consumer reads, so the kill lands among both.
        let producer = {
            let (http, base, tenant) = (http.clone(), base.clone(), tenant_id.clone());
            tokio::spawn(async move { publish(&http, &base, &tenant, round * 1000, 40).await })
        };
        let events_url = format!("{base}/consumers/billing/events?page_size=7&wait=5s");
        // Pages read and acknowledged, 14 events at least…
        let mut this_round = 0;
        while this_round < 14 {
            let (s, page) = call(&http, reqwest::Method::GET, events_url.clone(), &key, None)
                .await
                .unwrap();
            assert_eq!(s, StatusCode::OK, "{page}");
            let ids = ids_of(&page);
            let ack = json!({ "cursor": page["next_cursor"] });
            let (s, c) = call(
                &http,
                reqwest::Method::POST,
                format!("{base}/consumers/billing:ack"),
                &key,
                Some(ack),
            )
            .await
            .unwrap();
            assert_eq!(s, StatusCode::OK, "{c}");
            this_round += ids.len();
            acked.extend(ids);
        }
        // …then one read and not acknowledged, and the process killed under load.
        let (_, unacked) = call(&http, reqwest::Method::GET, events_url.clone(), &key, None)
            .await
            .unwrap();
        let unacked = ids_of(&unacked);
        herald.kill9();
        published.extend(producer.await.unwrap());
        herald = Herald::start(dir.path(), CONFIG, ADMIN, "error");
        let (s, page) = call(
            &http,
            reqwest::Method::GET,
            format!(
                "{}/consumers/billing/events?page_size=7&wait=5s",
                herald.base
            ),
            &key,
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, StatusCode::OK);
        let again = ids_of(&page);
        let acked_set: HashSet<&String> = acked.iter().collect();
        assert!(
            again.iter().all(|id| !acked_set.contains(id)),
            "round {round}: an acknowledged event came again: {again:?}"
        );
        if !unacked.is_empty() {
            assert_eq!(
                again.first(),
                unacked.first(),
                "round {round}: the read resumes right after the last ack"
            );
        }
    }
    // Drain: everything acknowledged by `POST /events` is read exactly once after its ack.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, page) = call(
            &http,
            reqwest::Method::GET,
            format!(
                "{}/consumers/billing/events?page_size=50&wait=1s",
                herald.base
            ),
            &key,
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, StatusCode::OK);
        let ids = ids_of(&page);
        if ids.is_empty() {
            break;
        }
        let ack = json!({ "cursor": page["next_cursor"] });
        call(
            &http,
            reqwest::Method::POST,
            format!("{}/consumers/billing:ack", herald.base),
            &key,
            Some(ack),
        )
        .await
        .unwrap();
        acked.extend(ids);
        assert!(Instant::now() < deadline, "draining the feed took too long");
    }
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "nothing acknowledged twice");
    for id in &published {
        assert!(
            unique.contains(id),
            "{id} was acknowledged by POST /events but never read"
        );
    }
    println!(
        "feed crash test: {} events published and acknowledged, {} read and acked",
        published.len(),
        acked.len()
    );
}

/// What the local endpoint received.
#[derive(Clone)]
struct Got {
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// The developer's local app: records each request; an event whose data says
/// `"fail": true` is answered 500.
async fn local_app() -> (String, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: Bytes| {
        let got = g.clone();
        async move {
            let headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let fail =
                serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["data"]["fail"] == true);
            got.lock().unwrap().push(Got { headers, body });
            if fail {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no")
            } else {
                (axum::http::StatusCode::OK, "ok")
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// `herald listen` in a child process; its stdout lines collected as they come.
struct Listen {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Listen {
    fn start(base: &str, key: &str, forward_to: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "listen",
                "--url",
                base,
                "--key",
                key,
                "--forward-to",
                forward_to,
            ])
            .args(["--consumer", "dev", "--start", "earliest"])
            .args(extra)
            .env_remove("HERALD_WEBHOOK_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out = BufReader::new(child.stdout.take().unwrap());
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Listen { child, lines }
    }

    async fn wait_for_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line {what}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGINT, as Ctrl-C sends; answers whether it exited cleanly.
    async fn interrupt(mut self) -> bool {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "herald listen did not stop on SIGINT"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_count(got: &Mutex<Vec<Got>>, n: usize) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = got.lock().unwrap().clone();
        if now.len() >= n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the local app got {} of {n}",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(g: &'a Got, name: &str) -> &'a str {
    g.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_listen_forwards_signed_events_once_and_resumes_after_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let herald = Herald::start(dir.path(), CONFIG, ADMIN, "error");
    let (tenant_id, key) = tenant(&http, &herald.base).await;
    let (url, got) = local_app().await;

    // First run: Herald's format, with a secret it generates and prints.
    let listen = Listen::start(&herald.base, &key, &url, &["--format", "herald"]);
    let secret_line = listen
        .wait_for_line("with the secret", |l| l.starts_with("> Signing secret"))
        .await;
    let secret = secret_line.rsplit(' ').next().unwrap().to_owned();
    assert!(secret.starts_with("hsec_"), "{secret_line}");
    let mut first = publish(&http, &herald.base, &tenant_id, 0, 4).await;
    let body = json!({ "type": "pay.failed", "tenant": tenant_id, "data": { "fail": true } });
    let (_, failing) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/events", herald.base),
        ADMIN,
        Some(body),
    )
    .await
    .unwrap();
    first.push(failing["id"].as_str().unwrap().to_owned());
    let received = wait_for_count(&got, 5).await;
    let verifier = WebhookVerifier::new(secret.clone());
    for (g, id) in received.iter().zip(&first) {
        let v = verifier
            .verify(&g.headers, &g.body)
            .expect("signed as a delivery is");
        assert_eq!(&v.event_id, id, "in feed order");
        assert_eq!(header(g, "x-event-id"), id);
        assert_eq!(header(g, "x-delivery-attempt"), "1");
        assert!(header(g, "x-delivery-id").starts_with("dlv_"));
        // The body a delivery sends: the event without its tenant.
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(body["id"], id.as_str());
        assert!(body.get("tenant").is_none());
        let other = WebhookVerifier::new("hsec_other");
        assert!(other.verify(&g.headers, &g.body).is_err());
    }
    // One line per event: its type, id and the local answer (a 500 is shown, not retried).
    let failing_id = first.last().unwrap().clone();
    let line = listen
        .wait_for_line("for the failing event", |l| l.contains(&failing_id))
        .await;
    assert!(
        line.contains("pay.failed") && line.contains("-> 500") && line.contains(" ms"),
        "{line}"
    );
    let ok_line = listen
        .wait_for_line("for the first event", |l| l.contains(&first[0]))
        .await;
    assert!(ok_line.contains("-> 200"), "{ok_line}");
    assert!(
        listen.interrupt().await,
        "herald listen exits cleanly on SIGINT"
    );

    // Events published while it is stopped are forwarded by the next run, in the Standard
    // Webhooks format this time; nothing of the first run comes again.
    let second = publish(&http, &herald.base, &tenant_id, 100, 3).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let listen = Listen::start(
        &herald.base,
        &key,
        &url,
        &["--format", "standard-webhooks", "--secret", secret],
    );
    let received = wait_for_count(&got, 8).await;
    let verifier = WebhookVerifier::new(secret);
    for (g, id) in received[5..].iter().zip(&second) {
        let v = verifier
            .verify(&g.headers, &g.body)
            .expect("a Standard Webhooks signature");
        assert_eq!(&v.event_id, id);
        assert_eq!(header(g, "webhook-id"), id);
    }
    // Give a repeat the chance to show up, then count.
    let extra = publish(&http, &herald.base, &tenant_id, 200, 1).await;
    let received = wait_for_count(&got, 9).await;
    assert!(listen.interrupt().await);
    let mut times: HashMap<String, usize> = HashMap::new();
    for g in &received {
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        *times
            .entry(body["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let all: Vec<&String> = first.iter().chain(&second).chain(&extra).collect();
    assert_eq!(times.len(), all.len(), "{times:?}");
    for id in all {
        assert_eq!(times.get(id), Some(&1), "{id} forwarded once");
    }
}

/// Two `herald serve` processes on one PostgreSQL database, producers on both at once;
/// one reader follows the feed through either node in turn and sees every event exactly
/// once. Runs when `HERALD_TEST_DATABASE_URL` names a PostgreSQL server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_one_reader_every_event_once() {
    let Some(db) = herald_testkit::database::postgres_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let nodes = [
        Herald::start_on(&[], &db.url, &config, ADMIN, "error"),
        Herald::start_on(&[], &db.url, &config, ADMIN, "error"),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (tenant_id, key) = tenant(&http, &nodes[0].base).await;
    const EACH: usize = 150;
    const IN_FLIGHT: usize = 8;
    let mut producers = Vec::new();
    for node in &nodes {
        for p in 0..IN_FLIGHT {
            let (http, base, tenant) = (http.clone(), node.base.clone(), tenant_id.clone());
            producers.push(tokio::spawn(async move {
                publish(&http, &base, &tenant, p * EACH, EACH / IN_FLIGHT).await
            }));
        }
    }
    let total = nodes.len() * IN_FLIGHT * (EACH / IN_FLIGHT);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut turn = 0;
    while seen.len() < total && Instant::now() < deadline {
        let base = &nodes[turn % 2].base;
        turn += 1;
        let (s, page) = call(
            &http,
            reqwest::Method::GET,
            format!("{base}/feed?after={cursor}&wait=2s&page_size=13"),
            &key,
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, StatusCode::OK, "{page}");
        seen.extend(ids_of(&page));
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }
    let mut published = HashSet::new();
    for p in producers {
        published.extend(p.await.unwrap());
    }
    assert_eq!(
        published.len(),
        total,
        "every POST /events was acknowledged"
    );
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert_eq!(unique, published, "every event, none skipped");
    println!(
        "two nodes: {} events read once each, through both nodes",
        seen.len()
    );
}
