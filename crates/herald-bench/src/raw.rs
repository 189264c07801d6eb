//! The light load generator: one HTTP/1.1 connection per load task (hyper's low-level
//! client connection, no pool, no redirects, no per-request URL parsing) and request
//! bodies and headers serialized once. It leaves more of the shared cores to the server
//! being measured than `reqwest` does.

use crate::load::LoadResult;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which client the ingest, `GET` and bare-HTTP phases load with.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, serde::Serialize)]
pub enum Generator {
    /// `reqwest` (the generator of the figures before 2026-11-27 05:00 UTC).
    Reqwest,
    /// hyper's http1 client connections with pre-serialized requests.
    Hyper,
}

/// One keep-alive connection to `addr`.
pub struct Connection {
    send: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { send, driver })
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send.ready().await?;
        let response = self.send.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// What every request of a phase carries: `Host` and, for Herald, the admin key.
#[derive(Clone)]
pub struct Requests {
    pub addr: SocketAddr,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    json: HeaderValue,
}

impl Requests {
    /// For the loopback `base` URL (`http://127.0.0.1:PORT`) with an optional bearer key.
    pub fn new(base: &str, key: Option<&str>) -> anyhow::Result<Self> {
        let url = url_host(base)?;
        let addr: SocketAddr = url
            .parse()
            .map_err(|e| anyhow::anyhow!("{base}: not host:port ({e})"))?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&url)?,
            auth: key
                .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
                .transpose()?,
            json: HeaderValue::from_static("application/json"),
        })
    }

    pub fn post(&self, path: &'static str, body: Bytes) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(body));
        *r.method_mut() = Method::POST;
        *r.uri_mut() = hyper::Uri::from_static(path);
        let h = r.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, self.json.clone());
        if let Some(a) = &self.auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        r
    }

    /// `path` must be a valid request target (the bench makes it from ids).
    pub fn get(&self, path: hyper::Uri) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(Bytes::new()));
        *r.uri_mut() = path;
        let h = r.headers_mut();
        h.insert(HOST, self.host.clone());
        if let Some(a) = &self.auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        r
    }
}

/// `127.0.0.1:PORT` out of `http://127.0.0.1:PORT[/]`; `localhost` becomes 127.0.0.1.
fn url_host(base: &str) -> anyhow::Result<String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{base}: only http:// is supported"))?;
    let host = rest.split('/').next().unwrap_or_default();
    Ok(host.replacen("localhost", "127.0.0.1", 1))
}

/// Like [`crate::load::closed_loop`], with a connection of its own per task: request n is
/// `request(n)`, and its answer must have status `expect`. A failed request closes its
/// connection; the task opens another.
pub async fn closed_loop<F>(
    requests: &Requests,
    concurrency: usize,
    max_requests: u64,
    max_time: Duration,
    expect: StatusCode,
    request: F,
) -> LoadResult
where
    F: Fn(u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + max_time;
    let addr = requests.addr;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (request, next, errors) = (request.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut conn: Option<Connection> = None;
            let fail = |e: anyhow::Error| {
                if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("request failed: {e:#}");
                }
            };
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max_requests || Instant::now() >= deadline {
                    break;
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Connection::open(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            fail(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let t = Instant::now();
                match checked(c.send(request(n)), expect).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        conn = None;
                        fail(e);
                    }
                }
            }
            latencies
        }));
    }
    LoadResult::gather(tasks, start, &errors).await
}

async fn checked(
    sent: impl Future<Output = anyhow::Result<(StatusCode, Bytes)>>,
    expect: StatusCode,
) -> anyhow::Result<()> {
    let (status, body) = sent.await?;
    anyhow::ensure!(
        status == expect,
        "status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// The bench's 1 KiB event body for `tenant` (`None`: the bare endpoint's), with the
/// order number spliced in: the JSON is built once, each request only copies it.
pub struct EventBodies {
    head: String,
    tail: String,
}

impl EventBodies {
    pub fn new(tenant: Option<&str>) -> Self {
        let marker = "@@N@@";
        let mut body = serde_json::json!({
            "type": "order.paid",
            "data": crate::load::payload_1k(0),
        });
        body["data"]["order_id"] = serde_json::json!(format!("ord_{marker}"));
        if let Some(t) = tenant {
            body["tenant"] = serde_json::json!(t);
        }
        let text = body.to_string();
        let at = text.find(marker).expect("marker in body");
        Self {
            head: text[..at].to_owned(),
            tail: text[at + marker.len()..].to_owned(),
        }
    }

    pub fn body(&self, n: u64) -> Bytes {
        let mut s = String::with_capacity(self.head.len() + self.tail.len() + 20);
        s.push_str(&self.head);
        s.push_str(&n.to_string());
        s.push_str(&self.tail);
        Bytes::from(s)
    }
}
