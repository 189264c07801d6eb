//! A webhook receiver for tests: an HTTP server on port 0 that records every request
//! (headers and raw body bytes) and answers as scripted: a status, a status with
//! headers (and a chosen body), a hang past the timeout, a delay, or a redirect.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub enum Behavior {
    Status(u16),
    StatusWith(u16, Vec<(&'static str, String)>),
    /// This status with these headers and exactly this body (empty for none).
    StatusWithBody(u16, Vec<(&'static str, String)>, &'static str),
    Hang(Duration),
    /// This status, after a delay (an endpoint that is slow and then fails).
    Delayed(u16, Duration),
    Redirect(String),
}

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Inner {
    received: Vec<Received>,
    script: VecDeque<Behavior>,
    fallback: Behavior,
}

#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            received: vec![],
            script: VecDeque::new(),
            fallback: Behavior::Status(200),
        }));
        let arrived = Arc::new(Notify::new());
        let (i, a) = (inner.clone(), arrived.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (inner, arrived) = (i.clone(), a.clone());
                async move {
                    let behavior = {
                        let mut g = inner.lock().unwrap();
                        g.received.push(Received {
                            path: uri.path().to_owned(),
                            headers,
                            body,
                            at: std::time::Instant::now(),
                        });
                        g.script.pop_front().unwrap_or_else(|| g.fallback.clone())
                    };
                    arrived.notify_waiters();
                    respond(behavior).await
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            inner,
            arrived,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next requests get these answers, in order; then the fallback.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.inner.lock().unwrap().script.extend(behaviors);
    }

    pub fn set_fallback(&self, b: Behavior) {
        self.inner.lock().unwrap().fallback = b;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    /// Waits until at least `n` requests have arrived (at most `within`), then returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {n} requests within {within:?}, got {}",
                    self.count()
                );
            }
        }
    }
}

async fn respond(b: Behavior) -> Response {
    match b {
        Behavior::Status(s) => (StatusCode::from_u16(s).unwrap(), "ok").into_response(),
        Behavior::StatusWith(s, headers) => with_headers(s, headers, "scripted"),
        Behavior::StatusWithBody(s, headers, body) => with_headers(s, headers, body),
        Behavior::Hang(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "too late").into_response()
        }
        Behavior::Delayed(s, d) => {
            tokio::time::sleep(d).await;
            (StatusCode::from_u16(s).unwrap(), "slow").into_response()
        }
        Behavior::Redirect(to) => {
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            r.headers_mut().insert("location", to.parse().unwrap());
            r
        }
    }
}

fn with_headers(status: u16, headers: Vec<(&'static str, String)>, body: &'static str) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(k, v.parse().unwrap());
    }
    r
}
