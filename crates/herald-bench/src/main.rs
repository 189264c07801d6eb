//! `herald-bench`: Herald under load on this machine, beside the machine's own limits.
//!
//! Each scenario starts a fresh release `herald serve` (port 0, temp database, loopback
//! destinations allowed) unless `--url` names a running one; `limits` measures a bare
//! HTTP endpoint and a bare SQLite commit loop so Herald's figures read as fractions.
//! `e2e` (the headline, not part of `all`) publishes and delivers together for a while and
//! reports what Herald sustains, with the CPU time each event costs.
//! The load generator only targets 127.0.0.1 and every phase is bounded in count and time.

mod cli;
mod cpu;
mod e2e;
mod limits;
mod load;
mod raw;
mod receiver;
mod report;
mod retention;
mod scenarios;
mod stats;
mod target;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Scenario};
use report::{load_detail, machine, Row};
use serde_json::{json, Value};
use std::time::Duration;

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
            load_detail(&r.load, fraction(r.load.per_second, limit)),
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
            load_detail(&r.get, fraction(r.get.per_second, http_limit)),
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
        e2e::rows(&r, &mut rows);
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
