//! The command line: which scenario, against which Herald, with what load.

use crate::raw;
use crate::target::Target;
use anyhow::Context;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Scenario {
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
pub struct Cli {
    pub scenario: Scenario,
    /// A running Herald on 127.0.0.1 instead of starting one (needs --admin-key).
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, env = "HERALD_ADMIN_KEY")]
    pub admin_key: Option<String>,
    /// Database URL for the Herald the bench starts (default: a temp SQLite file).
    #[arg(long)]
    pub database: Option<String>,
    /// With a PostgreSQL `--database`: use that database as it is, instead of creating a
    /// fresh `herald_bench_…` database through it for each Herald started (and dropping it).
    #[arg(long)]
    pub no_fresh_database: bool,
    /// Connections of the PostgreSQL limit loop with one row per transaction (Herald's
    /// pool size by default).
    #[arg(long, default_value_t = herald_store::postgres::DEFAULT_POOL_SIZE)]
    pub pg_connections: usize,
    /// The herald binary (default: next to this one, i.e. target/release/herald).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// Concurrent client connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds per timed phase (default 10; e2e: 30).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Webhooks each event fans out to (deliver, backlog, e2e).
    #[arg(long, short = 'k', default_value_t = 4)]
    pub webhooks: u32,
    /// Events published in the deliver throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Events/s of the deliver latency phase (default 2000); e2e: publish at this fixed
    /// rate instead of full speed (with --find-sustained: the search's first rate).
    #[arg(long)]
    pub rate: Option<u64>,
    /// e2e: after the full-speed phase, search for the highest fixed rate whose backlog
    /// stays under 1 s of deliveries, then measure latency at half of it.
    #[arg(long)]
    pub find_sustained: bool,
    /// e2e: seconds of each probe of --find-sustained.
    #[arg(long, default_value_t = 15)]
    pub probe_duration: u64,
    /// e2e: at most this many probes in --find-sustained.
    #[arg(long, default_value_t = 6)]
    pub max_probes: u32,
    /// e2e on PostgreSQL: `ANALYZE deliveries, events` every this many seconds in each
    /// phase's fresh database, as autovacuum does once a database has run for a while (a
    /// new one is first analyzed after `autovacuum_naptime`, 1 min; until then plans made
    /// on the empty tables stay cached on Herald's connections). Default: never.
    #[arg(long)]
    pub analyze_every: Option<u64>,
    /// Operations in the lro scenario.
    #[arg(long, default_value_t = 5_000)]
    pub operations: u64,
    /// Workers claiming in the lro scenario.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Events published while the receiver is down (deliveries = this × webhooks).
    #[arg(long, default_value_t = 25_000)]
    pub backlog_events: u64,
    /// Settled events, three days old, seeded before the retention scenario.
    #[arg(long, default_value_t = 200_000)]
    pub retention_events: u64,
    /// The client of the ingest, deliver-throughput publishing, `GET /operations/{id}` and
    /// bare-HTTP phases: `hyper` (light: raw HTTP/1.1 connections, pre-serialized
    /// requests) or `reqwest` (the generator of the earlier figures).
    #[arg(long, value_enum, default_value_t = raw::Generator::Hyper)]
    pub generator: raw::Generator,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Cli {
    pub fn start(&self) -> anyhow::Result<Target> {
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
