//! `herald-bench`: Herald under load on this machine, beside the machine's own limits.
//!
//! Each scenario starts a fresh release `herald serve` (port 0, temp database, loopback
//! destinations allowed) unless `--url` names a running one; `limits` measures a bare
//! HTTP endpoint and a bare SQLite commit loop so Herald's figures read as fractions.
//! `e2e` (the headline, not part of `all`) publishes and delivers together for a while and
//! reports what Herald sustains, with the CPU time each event costs.
//! The load generator only targets 127.0.0.1 and every phase is bounded in count and time.

mod cpu;
mod e2e;
mod limits;
mod load;
mod raw;
mod receiver;
mod retention;
mod scenarios;
mod stats;
mod target;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use target::Target;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Scenario {
    Ingest,
    Deliver,
    /// Sustained publish + delivery to K webhooks: events/s, deliveries/s, backlog, CPU
    /// per event; `--find-sustained` searches the highest sustained rate (not part of `all`).
    E2e,
    Lro,
    Backlog,
    /// Ingest with and without a background purge of old events (not part of `all`).
    Retention,
    Limits,
    All,
}

#[derive(Parser, Debug)]
#[command(name = "herald-bench", about = "Load benchmark for Herald (issue 5).")]
struct Cli {
    scenario: Scenario,
    /// A running Herald on 127.0.0.1 instead of starting one (needs --admin-key).
    #[arg(long)]
    url: Option<String>,
    #[arg(long, env = "HERALD_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Database URL for the Herald the bench starts (default: a temp SQLite file).
    #[arg(long)]
    database: Option<String>,
    /// With a PostgreSQL `--database`: use that database as it is, instead of creating a
    /// fresh `herald_bench_…` database through it for each Herald started (and dropping it).
    #[arg(long)]
    no_fresh_database: bool,
    /// Connections of the PostgreSQL limit loop with one row per transaction (Herald's
    /// pool size by default).
    #[arg(long, default_value_t = herald_store::postgres::DEFAULT_POOL_SIZE)]
    pg_connections: usize,
    /// The herald binary (default: next to this one, i.e. target/release/herald).
    #[arg(long)]
    herald_bin: Option<PathBuf>,
    /// Concurrent client connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Seconds per timed phase (default 10; e2e: 30).
    #[arg(long)]
    duration: Option<u64>,
    /// Webhooks each event fans out to (deliver, backlog, e2e).
    #[arg(long, short = 'k', default_value_t = 4)]
    webhooks: u32,
    /// Events published in the deliver throughput phase.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Events/s of the deliver latency phase (default 2000); e2e: publish at this fixed
    /// rate instead of full speed (with --find-sustained: the search's first rate).
    #[arg(long)]
    rate: Option<u64>,
    /// e2e: after the full-speed phase, search for the highest fixed rate whose backlog
    /// stays under 1 s of deliveries, then measure latency at half of it.
    #[arg(long)]
    find_sustained: bool,
    /// e2e: seconds of each probe of --find-sustained.
    #[arg(long, default_value_t = 15)]
    probe_duration: u64,
    /// e2e: at most this many probes in --find-sustained.
    #[arg(long, default_value_t = 6)]
    max_probes: u32,
    /// e2e on PostgreSQL: `ANALYZE deliveries, events` every this many seconds in each
    /// phase's fresh database, as autovacuum does once a database has run for a while (a
    /// new one is first analyzed after `autovacuum_naptime`, 1 min; until then plans made
    /// on the empty tables stay cached on Herald's connections). Default: never.
    #[arg(long)]
    analyze_every: Option<u64>,
    /// Operations in the lro scenario.
    #[arg(long, default_value_t = 5_000)]
    operations: u64,
    /// Workers claiming in the lro scenario.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Events published while the receiver is down (deliveries = this × webhooks).
    #[arg(long, default_value_t = 25_000)]
    backlog_events: u64,
    /// Settled events, three days old, seeded before the retention scenario.
    #[arg(long, default_value_t = 200_000)]
    retention_events: u64,
    /// The client of the ingest, deliver-throughput publishing, `GET /operations/{id}` and
    /// bare-HTTP phases: `hyper` (light: raw HTTP/1.1 connections, pre-serialized
    /// requests) or `reqwest` (the generator of the earlier figures).
    #[arg(long, value_enum, default_value_t = raw::Generator::Hyper)]
    generator: raw::Generator,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Cli {
    fn start(&self) -> anyhow::Result<Target> {
        if let Some(url) = &self.url {
            let key = self
                .admin_key
                .as_deref()
                .context("--url needs --admin-key")?;
            return Target::existing(url, key);
        }
        let bin = match &self.herald_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("herald"),
        };
        Target::spawn(&bin, self.database.as_deref(), !self.no_fresh_database)
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": mem,
    })
}

struct Row(String, String, String, String);

fn us(x: Option<&e2e::CpuShare>, per_delivery: bool) -> String {
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
fn e2e_rows(r: &e2e::E2e, rows: &mut Vec<Row>) {
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
    let phase_rows = |name: String, p: &e2e::Phase, rows: &mut Vec<Row>| {
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let wants = |s: Scenario| cli.scenario == s || cli.scenario == Scenario::All;
    let duration = Duration::from_secs(cli.duration.unwrap_or(10));
    let mut out = serde_json::Map::new();
    out.insert("machine".into(), machine());
    out.insert(
        "args".into(),
        json!(std::env::args().skip(1).collect::<Vec<_>>()),
    );
    out.insert("generator".into(), json!(cli.generator));
    out.insert(
        "database".into(),
        json!(cli
            .database
            .clone()
            .unwrap_or_else(|| "sqlite (temp file)".into())),
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut http_limit = None;
    let mut store_limit = None;

    let needs_limits = wants(Scenario::Limits) || wants(Scenario::Ingest);
    if needs_limits {
        let http = limits::bare_http(cli.concurrency, duration, cli.generator).await?;
        let la = stats::load_average();
        rows.push(Row(
            format!("limit: bare HTTP 202 ({:?} client)", cli.generator),
            format!("{:.0} req/s", http.per_second),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms",
                http.latency.p50_ms, http.latency.p99_ms
            ),
            la.clone(),
        ));
        out.insert(
            "limit_http".into(),
            json!({ "result": http, "load_average": la }),
        );
        http_limit = Some(http.per_second);
    }
    let postgres = cli
        .database
        .as_deref()
        .filter(|u| herald_store::postgres::is_postgres_url(u));
    if let (true, Some(admin_url)) = (needs_limits, postgres) {
        let batch = cli.concurrency;
        let one = limits::bare_postgres(admin_url, 1, 1, Duration::from_secs(3)).await?;
        let many = limits::bare_postgres(admin_url, 1, batch, duration).await?;
        let conns = cli.pg_connections;
        let group = limits::bare_postgres(admin_url, conns, 1, duration).await?;
        let la = stats::load_average();
        for (name, r) in [
            ("limit: PostgreSQL sync commit, batch 1".to_owned(), &one),
            (
                format!("limit: PostgreSQL sync commit, batch {batch}"),
                &many,
            ),
            (
                format!("limit: PostgreSQL sync commit, {conns} conns x batch 1"),
                &group,
            ),
        ] {
            rows.push(Row(
                name,
                format!("{:.0} rows/s", r.rows_per_second),
                format!("{:.0} commits/s", r.commits_per_second),
                la.clone(),
            ));
        }
        out.insert(
            "limit_postgres".into(),
            json!({ "batch_1": one, "batch_c": many, "connections_batch_1": group, "load_average": la }),
        );
        // Herald on PostgreSQL group-commits events: many requests per transaction, from a
        // few writer tasks, so the batch-C loop is its ceiling (the best of it and the pool
        // pattern, whichever this disk favours today).
        store_limit = Some(many.rows_per_second.max(group.rows_per_second));
    } else if needs_limits {
        let dir = std::env::temp_dir();
        let batch = cli.concurrency;
        let one = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || limits::bare_sqlite(&dir, 1, Duration::from_secs(3))
        })
        .await??;
        let many = tokio::task::spawn_blocking(move || limits::bare_sqlite(&dir, batch, duration))
            .await??;
        let la = stats::load_average();
        rows.push(Row(
            "limit: SQLite FULL, batch 1".into(),
            format!("{:.0} rows/s", one.rows_per_second),
            format!("{:.0} commits/s", one.commits_per_second),
            la.clone(),
        ));
        rows.push(Row(
            format!("limit: SQLite FULL, batch {batch}"),
            format!("{:.0} rows/s", many.rows_per_second),
            format!("{:.0} commits/s", many.commits_per_second),
            la.clone(),
        ));
        out.insert(
            "limit_sqlite".into(),
            json!({ "batch_1": one, "batch_c": many, "load_average": la }),
        );
        store_limit = Some(many.rows_per_second);
    }
    let fraction = |x: f64, limit: Option<f64>| match limit {
        Some(l) if l > 0.0 => format!("{:.0}% of limit", 100.0 * x / l),
        _ => String::new(),
    };

    if wants(Scenario::Ingest) {
        let target = cli.start()?;
        let r = scenarios::ingest(&target, cli.concurrency, duration, cli.generator).await?;
        let limit = match (http_limit, store_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        rows.push(Row(
            format!("ingest POST /events c={}", cli.concurrency),
            format!("{:.0} events/s", r.load.per_second),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, {} errors; {}",
                r.load.latency.p50_ms,
                r.load.latency.p99_ms,
                r.load.errors,
                fraction(r.load.per_second, limit)
            ),
            r.load_average.clone(),
        ));
        if let Some(pid) = target.pid() {
            out.insert(
                "ingest_peak_rss_mib".into(),
                json!(stats::memory_of(pid).map(|m| m.0)),
            );
        }
        out.insert("ingest".into(), json!(r));
    }
    if wants(Scenario::Deliver) {
        let target = cli.start()?;
        let r = scenarios::deliver(
            &target,
            cli.concurrency,
            cli.webhooks,
            cli.events,
            cli.rate.unwrap_or(2_000),
            duration,
            cli.generator,
        )
        .await?;
        rows.push(Row(
            format!("deliver {} events x {} webhooks", r.events, r.webhooks),
            format!("{:.0} deliveries/s", r.deliveries_per_second),
            format!(
                "{} of {} delivered in {:.1}s; publish {:.0}/s; {}",
                r.deliveries,
                r.events * r.webhooks as u64,
                r.seconds,
                r.publish_per_second,
                fraction(r.deliveries_per_second, http_limit)
            ),
            r.load_average.clone(),
        ));
        rows.push(Row(
            format!("end-to-end at {} events/s", r.latency_rate),
            format!("p99 {:.1} ms", r.end_to_end.p99_ms),
            format!(
                "p50 {:.1} ms, max {:.1} ms; {} of {} sent, achieved {:.0}/s; {} deferred; slowest at {}",
                r.end_to_end.p50_ms,
                r.end_to_end.max_ms,
                r.latency_delivered,
                r.latency_sent,
                r.latency_achieved_rate,
                r.latency_deferrals,
                r.latency_slowest
                    .iter()
                    .take(3)
                    .map(|(at, ms)| format!("{at:.1}s ({ms:.0} ms)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            r.latency_load_average.clone(),
        ));
        out.insert("deliver".into(), json!(r));
    }
    if wants(Scenario::Lro) {
        let target = cli.start()?;
        let r = scenarios::lro(
            &target,
            cli.concurrency,
            cli.workers,
            cli.operations,
            duration,
            cli.generator,
        )
        .await?;
        rows.push(Row(
            format!("lro trigger+claim+complete, {} workers", cli.workers),
            format!("{:.0} operations/s", r.operations_per_second),
            format!("{} operations in {:.1}s", r.operations, r.seconds),
            r.load_average.clone(),
        ));
        rows.push(Row(
            format!("GET /operations/{{id}} c={}", cli.concurrency),
            format!("{:.0} req/s", r.get.per_second),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, {} errors; {}",
                r.get.latency.p50_ms,
                r.get.latency.p99_ms,
                r.get.errors,
                fraction(r.get.per_second, http_limit)
            ),
            r.get_load_average.clone(),
        ));
        out.insert("lro".into(), json!(r));
    }
    if wants(Scenario::Backlog) {
        let target = cli.start()?;
        let r =
            scenarios::backlog(&target, cli.concurrency, cli.webhooks, cli.backlog_events).await?;
        rows.push(Row(
            format!(
                "backlog {} deliveries ({} events x {})",
                r.deliveries, r.events, r.webhooks
            ),
            format!("{:.0} deliveries/s", r.drain_per_second),
            format!(
                "drained {} in {:.1}s (first after {:.1}s; last 99% at {:.0}/s); peak RSS {}",
                r.delivered,
                r.drain_seconds,
                r.first_delivery_after_seconds,
                r.bulk_drain_per_second,
                r.peak_rss_mib
                    .map(|m| format!("{m:.0} MiB"))
                    .unwrap_or_else(|| "n/a".into())
            ),
            r.load_average.clone(),
        ));
        out.insert("backlog".into(), json!(r));
    }
    if cli.scenario == Scenario::E2e {
        let settings = e2e::Settings {
            concurrency: cli.concurrency,
            webhooks: cli.webhooks,
            duration: Duration::from_secs(cli.duration.unwrap_or(30)),
            rate: cli.rate,
            find_sustained: cli.find_sustained,
            probe_duration: Duration::from_secs(cli.probe_duration),
            max_probes: cli.max_probes,
            analyze_every: cli.analyze_every.map(Duration::from_secs),
        };
        let start = || cli.start();
        let r = e2e::e2e(
            &start,
            &settings,
            cli.generator,
            postgres.is_some(),
            cli.url.is_some(),
        )
        .await?;
        e2e_rows(&r, &mut rows);
        out.insert("e2e".into(), json!(r));
    }
    if cli.scenario == Scenario::Retention {
        if cli.url.is_some() || cli.database.is_some() {
            anyhow::bail!(
                "the retention scenario seeds a SQLite file of its own: drop --url and --database"
            );
        }
        let bin = match &cli.herald_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("herald"),
        };
        let r = retention::retention(
            &bin,
            cli.concurrency,
            duration,
            cli.retention_events,
            cli.generator,
        )
        .await?;
        for (name, run) in [
            ("ingest, retention off", &r.baseline),
            ("ingest, retention purging", &r.purging),
        ] {
            rows.push(Row(
                format!("{name} (c={})", run.concurrency),
                format!("{:.0} events/s", run.load.per_second),
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms; {} errors",
                    run.load.latency.p50_ms, run.load.latency.p99_ms, run.load.errors
                ),
                run.load_average.clone(),
            ));
        }
        rows.push(Row(
            format!("purged during that load (of {} seeded)", r.seeded_events),
            format!("{} events", r.purged_during_load),
            format!(
                "{} purged by the end; seeding took {:.1}s",
                r.purged_total, r.seed_seconds
            ),
            String::new(),
        ));
        out.insert("retention".into(), json!(r));
    }

    println!();
    println!(
        "{:<44} {:>20}  {:<70} load",
        "measurement", "figure", "detail"
    );
    for Row(name, figure, detail, la) in &rows {
        println!("{name:<44} {figure:>20}  {detail:<70} {la}");
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(out))?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(())
}
