//! `retention`: does purging old events slow the hot path? The same seeded database
//! (N settled events three days old, each with a delivered delivery and its attempt)
//! under the `ingest` load twice: once with retention off, once with `events = "1d"`,
//! so the background purge runs through the whole timed phase. Reports both ingest
//! figures and how much was purged during the phase (from `/metrics`). SQLite only.

use crate::scenarios::{ingest, Ingest};
use crate::target::Target;
use anyhow::Context;
use herald_core::ids::{AttemptId, EventId, WebhookId};
use herald_core::pattern::EventPattern;
use herald_core::signing::SignatureFormat;
use herald_core::Clock;
use herald_store::{Attempt, AttemptOutcome, AttemptRecord, NewEvent, Store, Webhook};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct Retention {
    pub seeded_events: u64,
    pub seed_seconds: f64,
    /// Retention off.
    pub baseline: Ingest,
    /// Retention on, purging through the phase.
    pub purging: Ingest,
    /// Events purged while the purging run's load ran (its warm-up and timed phase).
    pub purged_during_load: u64,
    /// Events purged by the end of that run, in all.
    pub purged_total: u64,
}

/// Writes `events` settled events, three days old, into a fresh SQLite file in `dir`.
async fn seed(dir: &Path, events: u64) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(herald_store::sqlite::SqliteStore::open(
        &dir.join("herald.db"),
    )?);
    let now = herald_core::SystemClock.now();
    let old = now.minus(Duration::from_secs(3 * 86_400));
    store
        .create_webhook(Webhook {
            id: WebhookId::generate(),
            tenant: None,
            url: "http://127.0.0.1:9/seeded".into(),
            events: vec![EventPattern::parse("seed.*")?],
            format: SignatureFormat::Herald,
            secret: "hsec_bench".into(),
            secret_version: 1,
            previous_secret: None,
            schedule: None,
            max_concurrency: None,
            ordering: Default::default(),
            options: Default::default(),
            disabled: false,
            disabled_reason: None,
            description: None,
            created_at: old,
            updated_at: old,
        })
        .await?;
    // Inserted from many tasks at once so the writer commits them in groups.
    let tasks = 64u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut i = t;
            while i < events {
                let id = EventId::generate();
                let event = NewEvent {
                    id,
                    tenant: None,
                    event_type: "seed.done".into(),
                    key: None,
                    data: crate::load::payload_1k(i),
                    created_at: old,
                    request_hash: id.to_string(),
                };
                store.insert_event(event, None).await?;
                i += tasks;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    // Each delivery delivered: one successful attempt recorded.
    loop {
        let jobs = store
            .claim_due_deliveries(now, 1_000, Duration::from_secs(600))
            .await?;
        if jobs.is_empty() {
            break;
        }
        let records = jobs
            .iter()
            .map(|j| AttemptRecord {
                delivery_id: j.delivery.id,
                attempt: Some(Attempt {
                    id: AttemptId::generate(),
                    delivery_id: j.delivery.id,
                    at: old,
                    status_code: Some(200),
                    latency_ms: 3,
                    error: None,
                    response_excerpt: Some("ok".into()),
                }),
                outcome: AttemptOutcome::Succeeded,
                disable_webhook: None,
            })
            .collect();
        store.record_attempts(records).await?;
    }
    Ok(())
}

/// `herald_retention_purged_total{kind="events"}` from `/metrics`.
async fn purged_events(target: &Target) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", target.url))
        .await?
        .text()
        .await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("herald_retention_purged_total{kind=\"events\"}"))
        .context("no herald_retention_purged_total in /metrics")?;
    Ok(line.rsplit(' ').next().unwrap_or("0").parse::<f64>()? as u64)
}

/// Folds the seeded file's WAL into it, so the file alone holds every row.
fn checkpoint(dir: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(dir.join("herald.db"))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    anyhow::ensure!(busy == 0, "the seeded database is still busy");
    Ok(())
}

/// Copies the seeded SQLite file into a target's directory.
fn copy_seed(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from.join("herald.db"), to.join("herald.db"))?;
    Ok(())
}

pub async fn retention(
    binary: &PathBuf,
    concurrency: usize,
    duration: Duration,
    events: u64,
    generator: crate::raw::Generator,
) -> anyhow::Result<Retention> {
    let template = std::env::temp_dir().join(format!(
        "herald-bench-seed-{}-{}",
        std::process::id(),
        ulid::Ulid::new()
    ));
    std::fs::create_dir_all(&template)?;
    let started = Instant::now();
    let seeded = match seed(&template, events).await {
        // The seeding store's writer closes in the background: wait for it to let go.
        Ok(()) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            checkpoint(&template)
        }
        Err(e) => Err(e),
    };
    let seed_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = seeded {
        let _ = std::fs::remove_dir_all(&template);
        return Err(e.context("seeding the database"));
    }

    let run = async {
        let baseline = {
            let target = Target::spawn_with(binary, "[retention]\nevents = \"off\"\n", |dir| {
                copy_seed(&template, dir)
            })?;
            ingest(&target, concurrency, duration, generator).await?
        };
        let target = Target::spawn_with(
            binary,
            "[retention]\nevents = \"1d\"\ninterval = \"1s\"\n",
            |dir| copy_seed(&template, dir),
        )?;
        // Counted across `ingest`'s warm-up (up to 5 s) and its timed phase.
        let before = purged_events(&target).await?;
        let purging = ingest(&target, concurrency, duration, generator).await?;
        let after = purged_events(&target).await?;
        anyhow::Ok(Retention {
            seeded_events: events,
            seed_seconds,
            baseline,
            purging,
            purged_during_load: after.saturating_sub(before),
            purged_total: after,
        })
    };
    let result = run.await;
    let _ = std::fs::remove_dir_all(&template);
    result
}
