//! The webhook receiver the model test points every webhook at: a real HTTP/1.1 server
//! (hyper) on 127.0.0.1:0 in the test process. Each webhook has its own path,
//! `/hooks/<key>`, and its own behaviour, which the sequence changes at random:
//! answer 200, answer 500, hang past Herald's timeout, reset the connection, or answer
//! 410 Gone. Every request is recorded with its headers, body and what it was answered.
//!
//! One rule keeps Herald's circuit breaker (5 failed attempts in a row open it for 30 s;
//! not configurable) out of every case: a webhook is never failed more than
//! [`MAX_FAILURES_IN_A_ROW`] times in a row; the next request is answered 200 whatever the
//! behaviour. Webhooks are registered with `max_concurrency: 1`, so the order the
//! receiver answers in is the order Herald judges in.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How long a hanging answer waits: well past Herald's webhook timeout in the test config.
pub const HANG: Duration = Duration::from_millis(900);
/// See the module comment.
pub const MAX_FAILURES_IN_A_ROW: u32 = 3;

pub use super::reference::Behaviour;

/// What one request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Status500,
    /// Answered (200) only after [`HANG`]: Herald has given up by then.
    Hang,
    Reset,
    Gone,
}

impl Answer {
    /// Whether Herald counts this answer as a delivered attempt.
    pub fn is_success(self) -> bool {
        self == Answer::Ok
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub received_at: Instant,
    pub answer: Answer,
    /// When the answer was given (the response handed to hyper, or the reset done).
    pub answered_at: Option<Instant>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct HookState {
    behaviour: Option<Behaviour>,
    failures_in_a_row: u32,
    log: Vec<Received>,
}

#[derive(Default)]
struct Shared {
    hooks: HashMap<String, HookState>,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and serves on the current runtime.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = s.clone();
                tokio::spawn(serve_connection(stream, shared));
            }
        });
        Receiver { base, shared }
    }

    pub fn url(&self, key: &str) -> String {
        format!("{}/hooks/{key}", self.base)
    }

    pub fn set(&self, key: &str, behaviour: Behaviour) {
        let mut s = self.shared.lock().unwrap();
        s.hooks.entry(key.to_owned()).or_default().behaviour = Some(behaviour);
    }

    /// Every request recorded for these keys, in arrival order.
    pub fn received(&self, keys: &[String]) -> Vec<Received> {
        let s = self.shared.lock().unwrap();
        let mut out: Vec<Received> = keys
            .iter()
            .filter_map(|k| s.hooks.get(k))
            .flat_map(|h| h.log.iter().cloned())
            .collect();
        out.sort_by_key(|r| r.received_at);
        out
    }

    /// Forgets these keys and their requests (the case is over).
    pub fn forget(&self, keys: &[String]) {
        let mut s = self.shared.lock().unwrap();
        for k in keys {
            s.hooks.remove(k);
        }
    }
}

/// Lets a request handler reset its own connection: it sets `SO_LINGER` to zero on a
/// duplicate of the socket and wakes the connection task, which drops the connection, so
/// the close sends a RST.
struct ConnectionControl {
    socket: std::net::TcpStream,
    reset: Notify,
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Mutex<Shared>>) {
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(twin) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    let control = Arc::new(ConnectionControl {
        socket: twin,
        reset: Notify::new(),
    });
    let c = control.clone();
    let service = hyper::service::service_fn(move |req| handle(req, shared.clone(), c.clone()));
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = control.reset.notified() => {}
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    control: Arc<ConnectionControl>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = req
        .uri()
        .path()
        .strip_prefix("/hooks/")
        .unwrap_or_default()
        .to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let received_at = Instant::now();
    let (answer, index) = {
        let mut s = shared.lock().unwrap();
        let state = s.hooks.entry(key.clone()).or_default();
        let wanted = state.behaviour.unwrap_or(Behaviour::Healthy);
        let answer = match wanted {
            _ if state.failures_in_a_row >= MAX_FAILURES_IN_A_ROW => Answer::Ok,
            Behaviour::Healthy => Answer::Ok,
            Behaviour::Error500 => Answer::Status500,
            Behaviour::Hang => Answer::Hang,
            Behaviour::Reset => Answer::Reset,
            Behaviour::Gone => Answer::Gone,
        };
        if answer.is_success() {
            state.failures_in_a_row = 0;
        } else {
            state.failures_in_a_row += 1;
        }
        state.log.push(Received {
            headers,
            body,
            received_at,
            answer,
            answered_at: None,
        });
        (answer, state.log.len() - 1)
    };
    let answered = |shared: &Arc<Mutex<Shared>>| {
        let mut s = shared.lock().unwrap();
        // A key's log is only dropped when its case forgets it, after its last request.
        if let Some(r) = s.hooks.get_mut(&key).and_then(|h| h.log.get_mut(index)) {
            r.answered_at = Some(Instant::now());
        }
    };
    let status = match answer {
        Answer::Ok => StatusCode::OK,
        Answer::Status500 => StatusCode::INTERNAL_SERVER_ERROR,
        Answer::Gone => StatusCode::GONE,
        Answer::Hang => {
            tokio::time::sleep(HANG).await;
            StatusCode::OK
        }
        Answer::Reset => {
            let _ = socket2::SockRef::from(&control.socket).set_linger(Some(Duration::ZERO));
            answered(&shared);
            control.reset.notify_one();
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    answered(&shared);
    let mut response = Response::new(Full::new(Bytes::from_static(b"model receiver")));
    *response.status_mut() = status;
    Ok(response)
}
