//! The webhook receiver the `deliver`, `backlog` and `e2e` scenarios point Herald at: it
//! runs on its own thread and single-threaded runtime, answers 200 with an empty body,
//! records when each delivery first arrives (keyed by a number, not a string), and can
//! play dead (answer 503) to build a backlog.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::serve::ListenerExt;
use axum::Router;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One delivery as it arrived: which webhook path, which event ([`event_key`]), when.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub hook: u32,
    pub event: u128,
    pub at: Instant,
}

#[derive(Default)]
pub struct Recorded {
    /// First arrival of each (hook, event); repeats (at-least-once) are only counted.
    pub arrivals: Vec<Arrival>,
    seen: HashSet<(u32, u128)>,
}

/// An event id (`evt_` + ULID) as a number; any other text is hashed.
pub fn event_key(id: &str) -> u128 {
    if let Some(u) = id
        .strip_prefix("evt_")
        .and_then(|u| ulid::Ulid::from_string(u).ok())
    {
        return u.0;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish() as u128
}

pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub recorded: Arc<Mutex<Recorded>>,
    /// Answer 503 to everything while set.
    pub down: Arc<AtomicBool>,
    /// Requests answered (any status), repeats included.
    pub requests: Arc<AtomicU64>,
    pub unique: Arc<AtomicU64>,
    /// Connections accepted (Herald keeps its connections alive: few per webhook).
    pub connections: Arc<AtomicU64>,
    /// The receiver thread's id, to read its CPU time (`crate::cpu::thread_seconds`).
    pub tid: Option<u32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone)]
struct Shared {
    recorded: Arc<Mutex<Recorded>>,
    down: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    unique: Arc<AtomicU64>,
}

/// Every request: `POST /hook/{n}`. No router, no extractor copies the headers, and the
/// body is left unread (hyper discards it, keeping the connection): the receiver must cost
/// as little as it can beside the Herald it measures.
async fn hook(State(s): State<Shared>, request: Request) -> StatusCode {
    let at = Instant::now();
    s.requests.fetch_add(1, Ordering::Relaxed);
    if s.down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let hook = request
        .uri()
        .path()
        .strip_prefix("/hook/")
        .and_then(|n| n.parse::<u32>().ok());
    let event_id = request
        .headers()
        .get("x-event-id")
        .and_then(|v| v.to_str().ok());
    let (Some(hook), Some(event_id), true) = (hook, event_id, request.method() == Method::POST)
    else {
        return StatusCode::BAD_REQUEST;
    };
    let event = event_key(event_id);
    let mut r = s.recorded.lock().expect("receiver lock");
    if r.seen.insert((hook, event)) {
        r.arrivals.push(Arrival { hook, event, at });
        s.unique.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::OK
}

impl Receiver {
    pub fn start() -> anyhow::Result<Self> {
        let shared = Shared {
            recorded: Default::default(),
            down: Default::default(),
            requests: Default::default(),
            unique: Default::default(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let accepted = connections.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let app = Router::new().fallback(hook).with_state(shared.clone());
        std::thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || {
                let _ = tid_tx.send(crate::cpu::current_tid());
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("listener")
                        .tap_io(move |tcp| {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let _ = tcp.set_nodelay(true);
                        });
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(Self {
            addr,
            recorded: shared.recorded,
            down: shared.down,
            requests: shared.requests,
            unique: shared.unique,
            connections,
            tid: tid_rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .ok()
                .flatten(),
            stop: Some(stop),
        })
    }

    pub fn url(&self, hook: u32) -> String {
        format!("http://{}/hook/{hook}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
