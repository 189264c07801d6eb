//! Closed-loop load: C tasks each send one request after another until a count or a
//! time bound is reached, recording each request's latency.

use crate::stats::Percentiles;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: Percentiles,
}

impl LoadResult {
    /// The figures of a closed loop started at `start`: every task's latencies (a task
    /// that panicked counts none), over the time until the last task ended.
    pub async fn gather(
        tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
        start: Instant,
        errors: &AtomicU64,
    ) -> Self {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        let seconds = start.elapsed().as_secs_f64();
        let ok = all.len() as u64;
        Self {
            ok,
            errors: errors.load(Ordering::Relaxed),
            seconds,
            per_second: ok as f64 / seconds,
            latency: Percentiles::of(all),
        }
    }
}

/// Runs `request(n)` for n = 0, 1, … from `concurrency` tasks, stopping at `max_requests`
/// or after `max_time`, whichever comes first.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    max_requests: u64,
    max_time: Duration,
    request: F,
) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + max_time;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (request, next, errors) = (request.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max_requests || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match request(n).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {e:#}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    LoadResult::gather(tasks, start, &errors).await
}

/// An HTTP client for loopback load: keep-alive, no proxy, a connection per task.
pub fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A 1 KiB JSON `data` object.
pub fn payload_1k(n: u64) -> serde_json::Value {
    let filler = "x".repeat(1024 - 64);
    serde_json::json!({ "order_id": format!("ord_{n}"), "amount": 4599, "currency": "USD", "note": filler })
}
