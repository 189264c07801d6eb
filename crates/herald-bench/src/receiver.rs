//! The webhook receiver the `deliver` and `backlog` scenarios point Herald at: it runs
//! on its own thread and runtime, records when each delivery arrives, and can play dead
//! (answer 503) to build a backlog.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One delivery as it arrived: which webhook path, which event, when.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub hook: u32,
    pub event_id: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct Recorded {
    /// First arrival of each (hook, event); repeats (at-least-once) are only counted.
    pub arrivals: Vec<Arrival>,
    seen: HashSet<(u32, String)>,
}

pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub recorded: Arc<Mutex<Recorded>>,
    /// Answer 503 to everything while set.
    pub down: Arc<AtomicBool>,
    /// Requests answered (any status), repeats included.
    pub requests: Arc<AtomicU64>,
    pub unique: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone)]
struct Shared {
    recorded: Arc<Mutex<Recorded>>,
    down: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    unique: Arc<AtomicU64>,
}

async fn hook(State(s): State<Shared>, Path(hook): Path<u32>, headers: HeaderMap) -> StatusCode {
    let at = Instant::now();
    s.requests.fetch_add(1, Ordering::Relaxed);
    if s.down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Some(event_id) = headers.get("x-event-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut r = s.recorded.lock().expect("receiver lock");
    if r.seen.insert((hook, event_id.to_owned())) {
        r.arrivals.push(Arrival {
            hook,
            event_id: event_id.to_owned(),
            at,
        });
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
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/hook/{n}", post(hook))
            .with_state(shared.clone());
        std::thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
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
