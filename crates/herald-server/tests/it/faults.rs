//! Fault-injecting receivers: raw TCP endpoints that are slow, reset the connection,
//! never answer, send endless or huge bodies, or fail the TLS handshake. Herald must
//! not hang (the next delivery still goes), must not grow its memory, and must record
//! each fault as a clear attempt error in `GET /deliveries/{id}`.

use herald_testkit::receiver::Receiver;
use herald_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One attempt per delivery and a 1 s timeout, so each fault is judged once and quickly.
const CONFIG: &str = r#"
[webhooks]
allow_private_destinations = true
timeout = "1s"
schedule = ["0s"]
"#;

/// What a fault endpoint does with each connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reads the request, waits, then answers 200.
    Delay(Duration),
    /// Sends half a status line, then resets the connection (RST).
    ResetInHeaders,
    /// Sends the headers and part of the body, then resets the connection.
    ResetInBody,
    /// Accepts and never answers.
    Silent,
    /// 200 with a chunked body that never ends.
    EndlessBody,
    /// `status` with a 50 MB `Content-Length` body, written as fast as the peer reads.
    HugeBody(u16),
    /// Answers plain HTTP where TLS is expected (an https URL on a plain-TCP port).
    PlainTextForTls,
}

struct FaultServer {
    addr: std::net::SocketAddr,
    /// Body bytes the server managed to write, over all connections.
    written: Arc<AtomicU64>,
    /// Connections accepted.
    accepted: Arc<AtomicU64>,
}

const HUGE: u64 = 50 * 1024 * 1024;

impl FaultServer {
    async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (w, a) = (written.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(sock, fault, w.clone()));
            }
        });
        Self {
            addr,
            written,
            accepted,
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/hook", self.addr)
    }
}

async fn serve(mut sock: TcpStream, fault: Fault, written: Arc<AtomicU64>) {
    if !matches!(fault, Fault::Silent | Fault::PlainTextForTls) {
        read_head(&mut sock).await;
    }
    // One 64 KiB block, written again and again: the server itself allocates nothing per byte.
    let block = vec![b'x'; 64 * 1024];
    match fault {
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        }
        Fault::ResetInHeaders => {
            let _ = sock.write_all(b"HTTP/1.1 200 O").await;
            reset(sock);
        }
        Fault::ResetInBody => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
                .await;
            let _ = sock.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(sock);
        }
        Fault::Silent => {
            // Hold the socket open (and unread) far past Herald's timeout.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(sock);
        }
        Fault::EndlessBody => {
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if sock.write_all(head).await.is_err() {
                return;
            }
            let chunk_head = format!("{:x}\r\n", block.len());
            loop {
                if sock.write_all(chunk_head.as_bytes()).await.is_err()
                    || sock.write_all(&block).await.is_err()
                    || sock.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
                written.fetch_add(block.len() as u64, Ordering::SeqCst);
            }
        }
        Fault::HugeBody(status) => {
            let head = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: {HUGE}\r\n\r\n");
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut left = HUGE;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if sock.write_all(&block[..n]).await.is_err() {
                    return;
                }
                written.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
        }
        Fault::PlainTextForTls => {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await; // the ClientHello
            let _ = sock
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Closes with RST instead of FIN.
fn reset(sock: TcpStream) {
    let std = sock.into_std().unwrap();
    let socket = socket2::Socket::from(std);
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(socket);
}

async fn read_head(sock: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // The JSON body is small; it arrives with or just after the headers. Leave it unread.
}

struct Fixture {
    app: TestApp,
    tenant: String,
}

async fn fixture() -> Fixture {
    let app = spawn_app(CONFIG).await;
    let (tenant, _) = app.tenant("acme").await;
    Fixture { app, tenant }
}

impl Fixture {
    /// Registers a webhook for `event_type` (admin key, this tenant) and returns its id.
    async fn webhook(&self, url: &str, event_type: &str) -> String {
        let r = self
            .app
            .post(
                "/webhooks",
                ADMIN,
                json!({ "url": url, "events": [event_type], "tenant": self.tenant }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    async fn publish(&self, event_type: &str) {
        let r = self
            .app
            .post(
                "/events",
                ADMIN,
                json!({ "type": event_type, "tenant": self.tenant, "data": { "n": 1 } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }

    /// Waits for the webhook's deliveries to be settled (`n` of them, none pending), and
    /// returns them with their attempt logs.
    async fn settled(&self, webhook: &str, n: usize) -> Vec<Value> {
        let app = &self.app;
        let path = format!("/deliveries?webhook={webhook}&page_size=1000");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let list = app.get(&path, ADMIN).await;
            let items = list.body["deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if items.len() == n && items.iter().all(|d| d["status"] != "pending") {
                let mut out = vec![];
                for d in items {
                    let id = d["id"].as_str().unwrap();
                    let full = app.get(&format!("/deliveries/{id}"), ADMIN).await;
                    assert_eq!(full.status, StatusCode::OK);
                    out.push(full.body);
                }
                return out;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries of {webhook} did not settle: {:?}",
                items
                    .iter()
                    .map(|d| (&d["status"], &d["last_error"]))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The one attempt of the one delivery that an event of `event_type` made to `url`.
    async fn single_attempt(&self, url: &str, event_type: &str) -> (Value, Value) {
        let wh = self.webhook(url, event_type).await;
        self.publish(event_type).await;
        let d = self.settled(&wh, 1).await.remove(0);
        let log = d["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 1, "{d:?}");
        (d.clone(), log[0].clone())
    }

    /// Herald is not stuck: a healthy endpoint still gets its delivery.
    async fn still_delivers(&self) {
        let healthy = Receiver::start().await;
        let wh = self.webhook(&healthy.url("/ok"), "health.check").await;
        self.publish("health.check").await;
        let d = self.settled(&wh, 1).await.remove(0);
        assert_eq!(d["status"], "succeeded", "{d:?}");
    }
}

fn error_of(attempt: &Value) -> String {
    attempt["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn slow_just_under_the_timeout_succeeds_and_just_over_times_out() {
    let f = fixture().await;
    let under = FaultServer::start(Fault::Delay(Duration::from_millis(300))).await;
    let over = FaultServer::start(Fault::Delay(Duration::from_secs(3))).await;

    let (d, attempt) = f.single_attempt(&under.url("http"), "slow.under").await;
    assert_eq!(d["status"], "succeeded", "{d:?}");
    assert_eq!(attempt["status_code"], 200, "{attempt:?}");

    let (d, attempt) = f.single_attempt(&over.url("http"), "slow.over").await;
    assert_eq!(d["status"], "failed", "{d:?}");
    assert_eq!(error_of(&attempt), "timed out after 1s", "{attempt:?}");
    assert!(attempt["status_code"].is_null(), "{attempt:?}");
    f.still_delivers().await;
}

#[tokio::test]
async fn a_reset_connection_is_a_clear_error() {
    let f = fixture().await;
    for (fault, name) in [
        (Fault::ResetInHeaders, "reset.headers"),
        (Fault::ResetInBody, "reset.body"),
    ] {
        let server = FaultServer::start(fault).await;
        let (d, attempt) = f.single_attempt(&server.url("http"), name).await;
        assert_eq!(d["status"], "failed", "{fault:?}: {d:?}");
        let error = error_of(&attempt);
        assert!(
            error.contains("connection reset by peer") || error.contains("connection closed"),
            "{fault:?}: {error}"
        );
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }
    f.still_delivers().await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let f = fixture().await;
    let server = FaultServer::start(Fault::Silent).await;
    let (d, attempt) = f.single_attempt(&server.url("http"), "silent.server").await;
    assert_eq!(d["status"], "failed", "{d:?}");
    assert_eq!(error_of(&attempt), "timed out after 1s", "{attempt:?}");
    f.still_delivers().await;
}

#[tokio::test]
async fn endless_and_huge_bodies_are_cut_at_the_excerpt() {
    let f = fixture().await;
    let endless = FaultServer::start(Fault::EndlessBody).await;
    let (d, attempt) = f.single_attempt(&endless.url("http"), "body.endless").await;
    assert_eq!(d["status"], "succeeded", "{d:?}");
    let excerpt = attempt["response_excerpt"].as_str().unwrap_or_default();
    assert!(
        !excerpt.is_empty() && excerpt.len() <= 4096,
        "{}",
        excerpt.len()
    );

    let huge = FaultServer::start(Fault::HugeBody(500)).await;
    let (d, attempt) = f.single_attempt(&huge.url("http"), "body.huge").await;
    assert_eq!(d["status"], "failed", "{d:?}");
    assert_eq!(error_of(&attempt), "HTTP 500", "{attempt:?}");
    assert_eq!(attempt["status_code"], 500);
    let excerpt = attempt["response_excerpt"].as_str().unwrap_or_default();
    assert!(
        !excerpt.is_empty() && excerpt.len() <= 4096,
        "{}",
        excerpt.len()
    );

    // Herald hung up long before the end: far less than the 50 MB was ever written
    // (what was written fits in the socket buffers). The writers notice the hang-up.
    for server in [&endless, &huge] {
        let before = server.written.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = server.written.load(Ordering::SeqCst);
        assert_eq!(before, after, "the body is still being read");
        assert!(after < HUGE / 2, "{after} bytes were read");
    }
    f.still_delivers().await;
}

#[tokio::test]
async fn a_failed_tls_handshake_is_a_clear_error() {
    let f = fixture().await;
    let server = FaultServer::start(Fault::PlainTextForTls).await;
    let (d, attempt) = f.single_attempt(&server.url("https"), "tls.broken").await;
    assert_eq!(d["status"], "failed", "{d:?}");
    let error = error_of(&attempt);
    assert!(error.starts_with("TLS handshake failed"), "{error}");
    f.still_delivers().await;
}

/// A line of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

#[tokio::test]
async fn many_huge_and_endless_responses_do_not_grow_memory() {
    if proc_status_kib("VmRSS").is_none() {
        eprintln!("no /proc/self/status here; skipping the memory check");
        return;
    }
    let f = fixture().await;
    let endless = FaultServer::start(Fault::EndlessBody).await;
    let huge = FaultServer::start(Fault::HugeBody(200)).await;
    let w_endless = f.webhook(&endless.url("http"), "mem.endless").await;
    let w_huge = f.webhook(&huge.url("http"), "mem.huge").await;

    // Warm up (allocator arenas, connection pools, the store), then measure.
    f.publish("mem.endless").await;
    f.publish("mem.huge").await;
    f.settled(&w_endless, 1).await;
    f.settled(&w_huge, 1).await;
    let rss_before = proc_status_kib("VmRSS").unwrap();
    let peak_before = proc_status_kib("VmHWM").unwrap();

    const ROUNDS: usize = 40;
    for _ in 0..ROUNDS {
        f.publish("mem.endless").await;
        f.publish("mem.huge").await;
    }
    f.settled(&w_endless, ROUNDS + 1).await;
    f.settled(&w_huge, ROUNDS + 1).await;
    f.still_delivers().await;

    let rss_after = proc_status_kib("VmRSS").unwrap();
    let peak_after = proc_status_kib("VmHWM").unwrap();
    // (A silent endpoint is left out: after a few timeouts its circuit breaker rightly
    // defers the rest, which `a_server_that_never_answers_times_out` covers.)
    // 80 responses of 50 MB or more went by: buffering even one of them whole would
    // lift the peak by 50 MB. The bound is generous for allocator noise.
    let bound = 40 * 1024;
    println!(
        "VmRSS {rss_before} -> {rss_after} KiB, VmHWM {peak_before} -> {peak_after} KiB over {} attempts",
        ROUNDS * 2
    );
    assert!(
        rss_after.saturating_sub(rss_before) < bound,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(
        peak_after.saturating_sub(peak_before) < bound,
        "VmHWM grew from {peak_before} to {peak_after} KiB"
    );
    // Per connection, only what fits in the socket buffers was ever written.
    for server in [&endless, &huge] {
        let written = server.written.load(Ordering::SeqCst);
        let connections = server.accepted.load(Ordering::SeqCst).max(1);
        assert!(
            written / connections < HUGE / 4,
            "{written} bytes over {connections} connections: bodies were read to the end"
        );
    }
}
