//! What an `e2e` run reports: the figures of each phase (as JSON) and their rows in the
//! printed table.

use crate::limits::BareHttp;
use crate::report::Row;
use crate::stats::Percentiles;
use serde::Serialize;

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
    pub(super) fn of(seconds: f64, window: f64, events: u64, deliveries: u64) -> Self {
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

pub(super) fn describe(p: &Phase) -> String {
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

fn us(x: Option<&CpuShare>, per_delivery: bool) -> String {
    x.map(|c| {
        format!(
            "{:.1}",
            if per_delivery {
                c.us_per_delivery
            } else {
                c.us_per_event
            }
        )
    })
    .unwrap_or_else(|| "?".into())
}

/// The report rows of an `e2e` run.
pub fn rows(r: &E2e, rows: &mut Vec<Row>) {
    let k = r.webhooks;
    let bare = &r.ceiling;
    let bare_server = bare.server_us_per_request;
    rows.push(Row(
        "e2e ceiling: bare HTTP 202, 3 s".into(),
        format!("{:.0} req/s", bare.load.per_second),
        format!(
            "CPU per request: server {} µs, client+server {} µs",
            bare_server.map(|u| format!("{u:.1}")).unwrap_or("?".into()),
            bare.process_us_per_request
                .map(|u| format!("{u:.1}"))
                .unwrap_or("?".into()),
        ),
        r.ceiling_load_average.clone(),
    ));
    let phase_rows = |name: String, p: &Phase, rows: &mut Vec<Row>| {
        let la = format!("{} -> {}", p.load_average_before, p.load_average_after);
        rows.push(Row(
            name.clone(),
            format!("{:.0} events/s", p.events_per_second),
            format!(
                "{:.0} deliveries/s; backlog at end {} ({:.2} s), growing {:.0}/s; {}{}; events+deliveries {:.0}% of ceiling{}",
                p.deliveries_per_second,
                p.backlog_at_end,
                p.backlog_at_end_seconds,
                p.backlog_growth_per_second,
                if p.sustained { "sustained" } else { "NOT sustained" },
                if p.errors > 0 {
                    format!(" ({} errors)", p.errors)
                } else {
                    String::new()
                },
                100.0 * (p.events_per_second + p.deliveries_per_second)
                    / bare.load.per_second.max(1e-9),
                match (p.drained_after_seconds, p.drain_left) {
                    (Some(d), _) => format!("; drained {d:.1} s after"),
                    (None, Some(left)) => format!("; {left} still owed after the drain wait"),
                    _ => String::new(),
                }
            ),
            la.clone(),
        ));
        let c = &p.cpu;
        rows.push(Row(
            format!("  CPU, {name}"),
            format!("{} µs/delivery", us(c.herald.as_ref(), true)),
            format!(
                "Herald {} cores, {} µs/event{}; bench {} µs/event (receiver {} µs/delivery){}",
                c.herald
                    .as_ref()
                    .map(|h| format!("{:.2}", h.cores))
                    .unwrap_or("?".into()),
                us(c.herald.as_ref(), false),
                match (c.herald.as_ref(), bare_server) {
                    (Some(h), Some(b)) if b > 0.0 => format!(
                        ", {:.1} µs/HTTP exchange = {:.1} x bare server's",
                        h.us_per_http_exchange,
                        h.us_per_http_exchange / b
                    ),
                    _ => String::new(),
                },
                us(c.bench.as_ref(), false),
                us(c.receiver.as_ref(), true),
                match (&c.postgres_backends, &c.postgres_all) {
                    (Some(o), Some(a)) => format!(
                        "; postgres {:.1} µs/event ({:.1} all postgres)",
                        o.us_per_event, a.us_per_event
                    ),
                    _ => String::new(),
                }
            ),
            la,
        ));
    };
    if let Some(p) = &r.full_speed {
        phase_rows(
            format!(
                "e2e full speed, K={k}, c={}, {:.0} s",
                r.concurrency, p.seconds
            ),
            p,
            rows,
        );
    }
    if let Some(p) = &r.fixed {
        phase_rows(
            format!("e2e at {:.0} events/s, K={k}", p.rate.unwrap_or(0.0)),
            p,
            rows,
        );
        rows.push(Row(
            format!("  latency at {:.0} events/s", p.rate.unwrap_or(0.0)),
            format!("p99 {:.1} ms", p.latency.p99_ms),
            format!(
                "p50 {:.2} ms, max {:.1} ms, {} deliveries timed",
                p.latency.p50_ms, p.latency.max_ms, p.latency.count
            ),
            p.load_average_after.clone(),
        ));
    }
    for (i, p) in r.probes.iter().enumerate() {
        rows.push(Row(
            format!(
                "e2e probe {} at {:.0} events/s, {:.0} s",
                i + 1,
                p.rate.unwrap_or(0.0),
                p.seconds
            ),
            if p.sustained {
                "sustained".into()
            } else {
                "NOT sustained".into()
            },
            format!(
                "{:.0} events/s acked, {:.0} deliveries/s, backlog at end {} ({:.2} s); Herald {} µs/delivery",
                p.events_per_second,
                p.deliveries_per_second,
                p.backlog_at_end,
                p.backlog_at_end_seconds,
                us(p.cpu.herald.as_ref(), true)
            ),
            format!("{} -> {}", p.load_average_before, p.load_average_after),
        ));
    }
    if r.full_speed.is_some() && (!r.probes.is_empty() || r.sustained_events_per_second.is_some()) {
        let best = r
            .probes
            .iter()
            .find(|p| p.sustained && p.rate == r.sustained_events_per_second);
        rows.push(Row(
            format!("e2e SUSTAINED events/s, K={k}"),
            r.sustained_events_per_second
                .map(|s| format!("{s:.0} events/s"))
                .unwrap_or_else(|| "none found".into()),
            format!(
                "= {} deliveries/s; {}{}",
                r.sustained_events_per_second
                    .map(|s| format!("{:.0}", s * k as f64))
                    .unwrap_or("?".into()),
                match (r.not_sustained_events_per_second, r.publisher_bound) {
                    (Some(h), _) => format!("{h:.0}/s was not; "),
                    (None, true) =>
                        "the publisher's full speed (Herald kept up with all of it); ".into(),
                    (None, false) => String::new(),
                },
                best.map(|p| format!(
                    "there Herald {} µs/event, {} µs/delivery",
                    us(p.cpu.herald.as_ref(), false),
                    us(p.cpu.herald.as_ref(), true)
                ))
                .unwrap_or_default()
            ),
            String::new(),
        ));
    }
    if let Some(p) = &r.latency_phase {
        let rate = p.rate.unwrap_or(0.0);
        phase_rows(format!("e2e at half: {rate:.0} events/s, K={k}"), p, rows);
        rows.push(Row(
            format!("e2e latency ack -> receipt at {rate:.0}/s"),
            format!("p99 {:.1} ms", p.latency.p99_ms),
            format!(
                "p50 {:.2} ms, max {:.1} ms, {} deliveries timed",
                p.latency.p50_ms, p.latency.max_ms, p.latency.count
            ),
            p.load_average_after.clone(),
        ));
    }
}
