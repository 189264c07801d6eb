//! `e2e`: the sustained end-to-end scenario. Producers publish 1 KiB events (at full
//! speed, or at a fixed rate) for a while as Herald delivers each to K webhooks on the
//! bench's receiver; what counts is what Herald keeps up with, not what it accepts.
//!
//! Each phase starts a fresh Herald (unless `--url`) and a fresh receiver, and measures
//! over the publishing window: events acknowledged (202 read by the client), deliveries
//! completed (distinct (webhook, event) pairs received), the backlog at the end
//! (acknowledged × K − received), and the CPU time of Herald, of the bench (the
//! receiver's thread apart) and, on PostgreSQL, of the database's processes. A rate is
//! *sustained* when the publisher achieved it and the backlog at the end is under one
//! second's worth of deliveries; `--find-sustained` searches for the highest such rate,
//! then measures latency (acknowledgement to receipt) at half of it. A brief bare-HTTP
//! measurement (`limits`) gives the machine's ceiling in the same run.

use crate::cpu;
use crate::limits::{self, BareHttp};
use crate::raw::{Connection, EventBodies, Generator, Requests};
use crate::receiver::{event_key, Receiver};
use crate::scenarios::Api;
use crate::stats::{load_average, memory_of, Percentiles};
use crate::target::Target;
use anyhow::Context;
use hyper::StatusCode;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A run is sustained when its backlog at the end is under this many seconds of
/// deliveries (at the rate asked for) ...
pub const BACKLOG_BOUND_SECONDS: f64 = 1.0;
/// ... and the publisher achieved at least this fraction of that rate.
pub const ACHIEVED_FRACTION: f64 = 0.97;
/// Bare-HTTP ceiling measurement.
const CEILING_SECONDS: u64 = 3;
/// Bounds on waiting for the last deliveries after publishing stops.
const DRAIN_AFTER_FULL_SPEED: Duration = Duration::from_secs(30);
const DRAIN_FOR_LATENCY: Duration = Duration::from_secs(30);
/// Between phases against a `--url` Herald (a child is simply killed).
const DRAIN_SHARED_HERALD: Duration = Duration::from_secs(60);
/// At most this many requests in one full-speed phase.
const MAX_REQUESTS: u64 = 50_000_000;

pub struct Settings {
    pub concurrency: usize,
    pub webhooks: u32,
    /// Publishing window of the full-speed, fixed-rate and latency phases.
    pub duration: Duration,
    /// A fixed rate (events/s) instead of full speed; with `find_sustained`, the first guess.
    pub rate: Option<u64>,
    pub find_sustained: bool,
    /// Publishing window of each probe of the search.
    pub probe_duration: Duration,
    pub max_probes: u32,
    /// PostgreSQL: `ANALYZE deliveries, events` in the fresh database this often during
    /// each window, as autovacuum would in a database that has been running for a while
    /// (on a new one it first analyzes after `autovacuum_naptime`, 1 min by default).
    pub analyze_every: Option<Duration>,
}

/// CPU time of one party over a window, and per unit of work.
#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    pub seconds: f64,
    /// `seconds` ÷ the window: cores used on average.
    pub cores: f64,
    pub us_per_event: f64,
    pub us_per_delivery: f64,
    /// Per HTTP exchange Herald took part in: each event's `POST /events` and each
    /// delivery (1 + K per event), to set beside the bare endpoint's CPU per request.
    pub us_per_http_exchange: f64,
}

impl CpuShare {
    fn of(seconds: f64, window: f64, events: u64, deliveries: u64) -> Self {
        Self {
            seconds,
            cores: seconds / window.max(1e-9),
            us_per_event: seconds * 1e6 / events.max(1) as f64,
            us_per_delivery: seconds * 1e6 / deliveries.max(1) as f64,
            us_per_http_exchange: seconds * 1e6 / (events + deliveries).max(1) as f64,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub clock_ticks_per_second: f64,
    /// The Herald child (none with `--url`).
    pub herald: Option<CpuShare>,
    /// The whole bench process: publisher, receiver, sampler.
    pub bench: Option<CpuShare>,
    /// The receiver's thread alone.
    pub receiver: Option<CpuShare>,
    /// PostgreSQL backends whose command line names this run's database.
    pub postgres_backends: Option<CpuShare>,
    /// Every `postgres` process on the machine (the server's own processes and other
    /// users' backends included).
    pub postgres_all: Option<CpuShare>,
}

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

/// One sample of the backlog, taken every second of the window.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_seconds: f64,
    pub acknowledged: u64,
    pub received: u64,
    pub backlog: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `None`: full speed (closed loop over `concurrency` connections).
    pub rate: Option<f64>,
    pub webhooks: u32,
    pub concurrency: usize,
    /// From the first request to the last acknowledgement.
    pub seconds: f64,
    pub acknowledged: u64,
    pub errors: u64,
    pub events_per_second: f64,
    /// Distinct (webhook, event) pairs received during the window.
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    /// acknowledged × K − received, at the end of the window.
    pub backlog_at_end: i64,
    /// That backlog in seconds of deliveries at the rate published.
    pub backlog_at_end_seconds: f64,
    pub backlog_max: i64,
    /// Backlog growth over the second half of the window, deliveries/s.
    pub backlog_growth_per_second: f64,
    pub sustained: bool,
    pub samples: Vec<Sample>,
    /// After publishing stopped: how long until every acknowledged event was delivered
    /// to every webhook (`None`: not waited for, or not within the bound), and the
    /// delivery rate meanwhile (no ingest competing).
    pub drained_after_seconds: Option<f64>,
    pub drain_deliveries_per_second: Option<f64>,
    pub drain_left: Option<i64>,
    /// Acknowledgement (the client read the 202) to receipt, over every delivery of an
    /// event acknowledged in the window that arrived before the phase ended.
    pub latency: Percentiles,
    pub cpu: Cpu,
    pub herald_peak_rss_mib: Option<f64>,
    /// With `--analyze-every`: how many `ANALYZE`s ran in the window.
    pub analyzed: Option<u64>,
    /// Connections the receiver accepted, and requests it answered (repeats included).
    pub receiver_connections: u64,
    pub receiver_requests: u64,
    pub load_average_before: String,
    pub load_average_after: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct E2e {
    pub webhooks: u32,
    pub concurrency: usize,
    pub duration_seconds: f64,
    pub backlog_bound_seconds: f64,
    pub achieved_fraction: f64,
    pub ceiling: BareHttp,
    pub ceiling_load_average: String,
    pub full_speed: Option<Phase>,
    /// The fixed-rate phase asked for with `--rate` (without `--find-sustained`).
    pub fixed: Option<Phase>,
    pub probes: Vec<Phase>,
    /// The highest probed rate that was sustained (or full speed, when that was).
    pub sustained_events_per_second: Option<f64>,
    /// The lowest probed rate above it that was not.
    pub not_sustained_events_per_second: Option<f64>,
    /// The sustained rate is the publisher's full speed: Herald kept up with all this
    /// publisher could send, so its own limit is higher.
    pub publisher_bound: bool,
    /// At half the sustained rate.
    pub latency_phase: Option<Phase>,
}

/// A rate rounded to three significant digits (at least 10/s).
fn round_rate(r: f64) -> f64 {
    if r < 10.0 {
        return 10.0;
    }
    let step = 10f64.powf(r.log10().floor() - 2.0).max(1.0);
    (r / step).round() * step
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
async fn phase(
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

fn describe(p: &Phase) -> String {
    format!(
        "{} {:.0} events/s acknowledged, {:.0} deliveries/s, backlog at end {} ({:.2}s), {}; Herald {} µs/delivery; load {} -> {}",
        p.rate
            .map(|r| format!("at {r:.0}/s:"))
            .unwrap_or_else(|| "full speed:".into()),
        p.events_per_second,
        p.deliveries_per_second,
        p.backlog_at_end,
        p.backlog_at_end_seconds,
        if p.sustained { "sustained" } else { "NOT sustained" },
        p.cpu
            .herald
            .as_ref()
            .map(|c| format!("{:.1}", c.us_per_delivery))
            .unwrap_or_else(|| "?".into()),
        p.load_average_before,
        p.load_average_after,
    ) + &p
        .analyzed
        .map(|n| format!("; {n} ANALYZE"))
        .unwrap_or_default()
}

pub async fn e2e(
    start: &dyn Fn() -> anyhow::Result<Target>,
    s: &Settings,
    generator: Generator,
    postgres: bool,
    shared_herald: bool,
) -> anyhow::Result<E2e> {
    let ceiling = limits::bare_http_measured(
        s.concurrency,
        Duration::from_secs(CEILING_SECONDS),
        generator,
    )
    .await?;
    let ceiling_load_average = load_average();
    eprintln!(
        "e2e: ceiling (bare HTTP 202, {CEILING_SECONDS}s): {:.0} req/s; load {ceiling_load_average}",
        ceiling.load.per_second
    );
    let between = if shared_herald {
        DRAIN_SHARED_HERALD
    } else {
        Duration::ZERO
    };
    let mut out = E2e {
        webhooks: s.webhooks,
        concurrency: s.concurrency,
        duration_seconds: s.duration.as_secs_f64(),
        backlog_bound_seconds: BACKLOG_BOUND_SECONDS,
        achieved_fraction: ACHIEVED_FRACTION,
        ceiling,
        ceiling_load_average,
        full_speed: None,
        fixed: None,
        probes: Vec::new(),
        sustained_events_per_second: None,
        not_sustained_events_per_second: None,
        publisher_bound: false,
        latency_phase: None,
    };
    if let (Some(rate), false) = (s.rate, s.find_sustained) {
        let p = phase(
            start,
            s,
            Some(rate as f64),
            s.duration,
            DRAIN_FOR_LATENCY,
            postgres,
        )
        .await?;
        eprintln!("e2e: {}", describe(&p));
        out.fixed = Some(p);
        return Ok(out);
    }
    let full = phase(
        start,
        s,
        None,
        s.duration,
        DRAIN_AFTER_FULL_SPEED.max(between),
        postgres,
    )
    .await?;
    eprintln!("e2e: {}", describe(&full));
    let full_sustained = full.sustained;
    let (full_events, full_deliveries) = (full.events_per_second, full.deliveries_per_second);
    out.full_speed = Some(full);
    if !s.find_sustained {
        return Ok(out);
    }

    // The search over fixed rates (a fixed rate can cost Herald more per event than the
    // same throughput at full speed: requests arrive one by one, not in groups), bisecting
    // between the highest rate sustained and the lowest not. It starts at what full speed
    // kept up with: all of it if it was sustained, else what was delivered per webhook.
    // Above full speed's rate this publisher cannot go.
    let ceiling = round_rate(full_events);
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut r = round_rate(match s.rate {
        Some(r) => r as f64,
        None if full_sustained => full_events,
        None => (full_deliveries / s.webhooks.max(1) as f64).min(full_events),
    });
    for probe in 0..s.max_probes {
        let p = phase(start, s, Some(r), s.probe_duration, between, postgres).await?;
        eprintln!("e2e: probe {}: {}", probe + 1, describe(&p));
        if p.sustained {
            lo = Some(lo.map_or(r, |l: f64| l.max(r)));
        } else {
            hi = Some(hi.map_or(r, |h: f64| h.min(r)));
        }
        out.probes.push(p);
        let next = match (lo, hi) {
            (None, _) => round_rate(r * 0.6),
            (Some(l), None) if l >= ceiling => break,
            (Some(l), None) => round_rate((l * 1.25).min(ceiling)),
            (Some(l), Some(h)) if h - l <= 0.05 * h => break,
            (Some(l), Some(h)) => round_rate((l + h) / 2.0),
        };
        if next == r || out.probes.iter().any(|q| q.rate == Some(next)) {
            break;
        }
        r = next;
    }
    out.sustained_events_per_second = lo;
    out.not_sustained_events_per_second = hi;
    out.publisher_bound = hi.is_none() && lo.is_some_and(|l| l >= ceiling);

    if let Some(l) = out.sustained_events_per_second {
        let half = round_rate(l / 2.0);
        let p = phase(
            start,
            s,
            Some(half),
            s.duration,
            DRAIN_FOR_LATENCY,
            postgres,
        )
        .await?;
        eprintln!(
            "e2e: latency at {half:.0}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; {}",
            p.latency.p50_ms,
            p.latency.p99_ms,
            p.latency.max_ms,
            describe(&p)
        );
        out.latency_phase = Some(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rates() {
        assert_eq!(round_rate(4237.0), 4240.0);
        assert_eq!(round_rate(123_456.0), 123_000.0);
        assert_eq!(round_rate(87.4), 87.0);
        assert_eq!(round_rate(3.0), 10.0);
    }

    #[test]
    fn finds_the_acked_id() {
        assert_eq!(
            acked_id(br#"{"id":"evt_01JD0000000000000000000000"}"#),
            Some("evt_01JD0000000000000000000000")
        );
        assert_eq!(acked_id(b"{}"), None);
    }
}
