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

mod report;
mod run;

pub use report::{rows, E2e};

use crate::limits;
use crate::raw::Generator;
use crate::stats::load_average;
use crate::target::Target;
use report::describe;
use run::phase;
use std::time::Duration;

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

/// A rate rounded to three significant digits (at least 10/s).
fn round_rate(r: f64) -> f64 {
    if r < 10.0 {
        return 10.0;
    }
    let step = 10f64.powf(r.log10().floor() - 2.0).max(1.0);
    (r / step).round() * step
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
}
