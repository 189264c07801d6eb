//! One `e2e` phase: a fresh Herald and receiver, publishing for a window while the
//! backlog, the CPU time of each party and the latency of each delivery are measured.

use super::report::{Cpu, CpuShare, Phase, Sample};
use super::{Settings, ACHIEVED_FRACTION, BACKLOG_BOUND_SECONDS, MAX_REQUESTS};
use crate::cpu;
use crate::raw::{Connection, EventBodies, Requests};
use crate::receiver::{event_key, Receiver};
use crate::scenarios::Api;
use crate::stats::{load_average, memory_of, Percentiles};
use crate::target::Target;
use anyhow::Context;
use hyper::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct CpuMark {
    herald: Option<f64>,
    bench: Option<f64>,
    receiver: Option<f64>,
    postgres: Option<HashMap<u32, (f64, bool)>>,
}

impl CpuMark {
    fn take(target: &Target, receiver: &Receiver, postgres: bool) -> Self {
        Self {
            herald: target.pid().and_then(cpu::process_seconds),
            bench: cpu::own_seconds(),
            receiver: receiver.tid.and_then(cpu::thread_seconds),
            postgres: postgres.then(|| cpu::postgres_processes(target.database_name())),
        }
    }

    fn since(&self, before: &CpuMark, window: f64, events: u64, deliveries: u64) -> Cpu {
        let share = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .map(|(a, b)| CpuShare::of(a - b, window, events, deliveries))
        };
        let pg = self
            .postgres
            .as_ref()
            .zip(before.postgres.as_ref())
            .map(|(a, b)| cpu::postgres_delta(b, a));
        Cpu {
            clock_ticks_per_second: cpu::ticks_per_second(),
            herald: share(self.herald, before.herald),
            bench: share(self.bench, before.bench),
            receiver: share(self.receiver, before.receiver),
            postgres_backends: pg.map(|(ours, _)| CpuShare::of(ours, window, events, deliveries)),
            postgres_all: pg.map(|(_, all)| CpuShare::of(all, window, events, deliveries)),
        }
    }
}

async fn wait_until(receiver: &Receiver, want: u64, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if receiver.unique.load(Ordering::Relaxed) >= want {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `ANALYZE deliveries, events` on `url` every `every` for at most `limit`, counting
/// them (abort the task to stop early).
async fn analyze_loop(
    url: String,
    every: Duration,
    limit: Duration,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, Arc<AtomicU64>)> {
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("--analyze-every: connecting to the fresh database")?;
    let driver = tokio::spawn(connection);
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() + every <= limit {
            tokio::time::sleep(every).await;
            if let Err(e) = client.batch_execute("ANALYZE deliveries, events").await {
                eprintln!("e2e: ANALYZE failed: {e}");
                break;
            }
            counted.fetch_add(1, Ordering::Relaxed);
        }
        driver.abort();
    });
    Ok((task, count))
}

/// The event id in a `POST /events` answer (`{"id":"evt_…",…}`), without a JSON parse.
fn acked_id(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"id\":\"")? + 6;
    let len = text[at..].find('"')?;
    Some(&text[at..at + len])
}

/// One phase on a fresh Herald (`start`) and receiver: publish for `duration`, at `rate`
/// or at full speed, then wait up to `drain` for the rest of the deliveries.
pub(super) async fn phase(
    start: &dyn Fn() -> anyhow::Result<Target>,
    s: &Settings,
    rate: Option<f64>,
    duration: Duration,
    drain: Duration,
    postgres: bool,
) -> anyhow::Result<Phase> {
    let target = start()?;
    let receiver = Receiver::start()?;
    let k = s.webhooks;
    let api = Api::new(&target, 4);
    let tenant = api.tenant("bench-e2e").await?;
    api.webhooks(&tenant, &receiver, k).await?;
    // One event first, delivered to every webhook: the path is up, connections are open.
    api.publish(&tenant, 0).await?;
    if wait_until(&receiver, k as u64, Duration::from_secs(20))
        .await
        .is_none()
    {
        anyhow::bail!("e2e: the first event was not delivered to {k} webhooks within 20s");
    }

    let requests = Requests::new(&target.url, Some(&target.admin_key))?;
    let bodies = Arc::new(EventBodies::new(Some(&tenant)));
    let mut connections = Vec::with_capacity(s.concurrency);
    for _ in 0..s.concurrency {
        connections.push(Connection::open(requests.addr).await?);
    }
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let max_requests = match rate {
        Some(r) => (r * duration.as_secs_f64()).ceil() as u64,
        None => MAX_REQUESTS,
    };

    let analyzer = match (s.analyze_every, postgres, &target.database_url) {
        (Some(every), true, Some(url)) => Some(analyze_loop(url.clone(), every, duration).await?),
        _ => None,
    };
    let load_before = load_average();
    let base = receiver.unique.load(Ordering::Relaxed);
    let cpu_before = CpuMark::take(&target, &receiver, postgres);
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut tasks = Vec::with_capacity(s.concurrency);
    for conn in connections {
        let (requests, bodies) = (requests.clone(), bodies.clone());
        let (acked, errors, next) = (acked.clone(), errors.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Some(conn);
            let mut acks: Vec<(u128, Instant)> = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max_requests || Instant::now() >= deadline {
                    break;
                }
                if let Some(r) = rate {
                    let due = t0 + Duration::from_secs_f64(n as f64 / r);
                    if due >= deadline {
                        break;
                    }
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Connection::open(requests.addr).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("e2e: connect failed: {e:#}");
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                match c.send(requests.post("/events", bodies.body(n + 1))).await {
                    Ok((StatusCode::ACCEPTED, body)) => {
                        let at = Instant::now();
                        acked.fetch_add(1, Ordering::Relaxed);
                        if let Some(id) = acked_id(&body) {
                            acks.push((event_key(id), at));
                        }
                    }
                    Ok((status, body)) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!(
                                "e2e: POST /events answered {status}: {}",
                                String::from_utf8_lossy(&body)
                            );
                        }
                    }
                    Err(e) => {
                        conn = None;
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("e2e: POST /events failed: {e:#}");
                        }
                    }
                }
            }
            acks
        }));
    }
    // The backlog, once a second, while publishing.
    let sampler = {
        let (acked, unique) = (acked.clone(), receiver.unique.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval_at(
                (t0 + Duration::from_secs(1)).into(),
                Duration::from_secs(1),
            );
            while Instant::now() < deadline {
                tick.tick().await;
                let a = acked.load(Ordering::Relaxed);
                let r = unique.load(Ordering::Relaxed) - base;
                samples.push(Sample {
                    at_seconds: t0.elapsed().as_secs_f64(),
                    acknowledged: a,
                    received: r,
                    backlog: (a * k as u64) as i64 - r as i64,
                });
            }
            samples
        })
    };
    let mut acks: Vec<(u128, Instant)> = Vec::new();
    for t in tasks {
        acks.extend(t.await.context("publisher task")?);
    }
    let received_at_end = receiver.unique.load(Ordering::Relaxed) - base;
    let end = Instant::now();
    let cpu_after = CpuMark::take(&target, &receiver, postgres);
    let analyzed = analyzer.map(|(task, count)| {
        task.abort();
        count.load(Ordering::Relaxed)
    });
    let load_after = load_average();
    let seconds = end.duration_since(t0).as_secs_f64();
    let mut samples = sampler.await.context("sampler task")?;
    let acknowledged = acked.load(Ordering::Relaxed);
    let backlog_at_end = (acknowledged * k as u64) as i64 - received_at_end as i64;
    samples.push(Sample {
        at_seconds: seconds,
        acknowledged,
        received: received_at_end,
        backlog: backlog_at_end,
    });
    let events_per_second = acknowledged as f64 / seconds;
    let published_rate = rate.unwrap_or(events_per_second);
    let backlog_at_end_seconds = backlog_at_end as f64 / (published_rate * k as f64).max(1e-9);
    let half = seconds / 2.0;
    let mid = samples
        .iter()
        .rfind(|x| x.at_seconds <= half)
        .map(|x| (x.at_seconds, x.backlog))
        .unwrap_or((0.0, 0));
    let backlog_growth_per_second = (backlog_at_end - mid.1) as f64 / (seconds - mid.0).max(1e-9);
    let achieved = rate.is_none_or(|r| events_per_second >= ACHIEVED_FRACTION * r);
    let sustained = achieved
        && (backlog_at_end as f64) < BACKLOG_BOUND_SECONDS * published_rate * k as f64
        && errors.load(Ordering::Relaxed) == 0;

    // The rest of the deliveries.
    let want = base + acknowledged * k as u64;
    let (drained_after_seconds, drain_deliveries_per_second, drain_left) = if drain.is_zero() {
        (None, None, None)
    } else {
        let waited = wait_until(&receiver, want, drain).await;
        let now = receiver.unique.load(Ordering::Relaxed);
        let spent = waited.unwrap_or_else(|| end.elapsed()).as_secs_f64();
        (
            waited.map(|w| w.as_secs_f64()),
            Some((now - base - received_at_end) as f64 / spent.max(1e-9)),
            Some(want as i64 - now as i64),
        )
    };
    let herald_peak_rss_mib = target.pid().and_then(memory_of).map(|(hwm, _)| hwm);
    // Herald first (it stops sending), then the receiver.
    drop(target);
    let latency = {
        let acked_at: HashMap<u128, Instant> = acks.into_iter().collect();
        let recorded = receiver.recorded.lock().expect("receiver lock");
        Percentiles::of(
            recorded
                .arrivals
                .iter()
                .filter_map(|a| Some(a.at.saturating_duration_since(*acked_at.get(&a.event)?)))
                .collect(),
        )
    };
    let receiver_connections = receiver.connections.load(Ordering::Relaxed);
    let receiver_requests = receiver.requests.load(Ordering::Relaxed);
    drop(receiver);
    Ok(Phase {
        rate,
        webhooks: k,
        concurrency: s.concurrency,
        seconds,
        acknowledged,
        errors: errors.load(Ordering::Relaxed),
        events_per_second,
        deliveries: received_at_end,
        deliveries_per_second: received_at_end as f64 / seconds,
        backlog_at_end,
        backlog_at_end_seconds,
        backlog_max: samples.iter().map(|x| x.backlog).max().unwrap_or(0),
        backlog_growth_per_second,
        sustained,
        samples,
        drained_after_seconds,
        drain_deliveries_per_second,
        drain_left,
        latency,
        cpu: cpu_after.since(&cpu_before, seconds, acknowledged, received_at_end),
        herald_peak_rss_mib,
        analyzed,
        receiver_connections,
        receiver_requests,
        load_average_before: load_before,
        load_average_after: load_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_acked_id() {
        assert_eq!(
            acked_id(br#"{"id":"evt_01JD0000000000000000000000"}"#),
            Some("evt_01JD0000000000000000000000")
        );
        assert_eq!(acked_id(b"{}"), None);
    }
}
