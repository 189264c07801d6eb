//! A randomized, stateful model test of Herald's delivery core: proptest-state-machine
//! generates sequences of operations (webhooks created, patched, disabled, enabled,
//! deleted and rotated; events published and republished; deliveries redelivered and
//! replayed; operations created, cancelled, deleted, claimed, heartbeaten, completed and
//! failed, with stale lease tokens too; receivers that turn healthy, failing, hanging,
//! resetting or gone; `kill -9` and restarts), runs them against the real `herald serve`
//! binary over HTTP and checks every answer against a reference model. At the end of each
//! sequence every receiver is made healthy and, once nothing is pending, the delivery log
//! and every request the receiver saw are checked: every acknowledged event reached every
//! webhook that matched it, or its delivery is visibly failed after exactly its attempts;
//! every signature verifies; nothing is received again without a cause.
//!
//! Runs on SQLite, and on PostgreSQL when `HERALD_TEST_DATABASE_URL` is set (a fresh
//! database per run, dropped after). `HERALD_MODEL_CASES=<n>` sets the number of sequences
//! per backend; `HERALD_MODEL_SEED=<seed>` replays one sequence (the seed a failure
//! prints), shrinking it again, and `HERALD_MODEL_RUN=<run seed>` a whole run (sequences
//! share a database while they pass, so a failure may need what earlier ones left). `HERALD_MODEL_SHRINK_SECS` bounds the shrinking (default
//! 180). `HERALD_MODEL_SKIP=RotateTwice,Kill` leaves those step kinds out (while a bug they
//! find is being fixed, say; `Lists` leaves out the run-wide list check); a seed replays
//! the same sequence only with the same list.
//!
//! See `reference/` for the model, `sut/` for what is checked (`sut/mod.rs` leads) and
//! `receiver.rs` for the receiver.

use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use serde_json::Value;
use std::cell::Cell;
use std::time::Instant;

mod receiver;
mod reference;
mod sut;

use reference::HeraldModel;
use sut::{Backend, HeraldTest, Lane, ADMIN, LANE};

/// Sequences per backend in a plain `cargo test`.
const SQLITE_CASES: usize = 200;
const POSTGRES_CASES: usize = 100;
/// Steps per sequence.
const STEPS: std::ops::RangeInclusive<usize> = 5..=24;

#[test]
fn model_sqlite() {
    run("sqlite", Backend::Sqlite, SQLITE_CASES);
}

#[test]
fn model_postgres() {
    let Some(admin_url) = herald_testkit::database::admin_url_or_skip() else {
        return;
    };
    run("postgres", Backend::Postgres { admin_url }, POSTGRES_CASES);
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// splitmix64: the seed of sequence `i` from the run's base seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

thread_local! {
    /// Set while a sequence runs: its panics are its failure reports, which proptest
    /// collects; printing each one during shrinking would bury the final report.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
}

fn run(name: &str, backend: Backend, default_cases: usize) {
    quiet_panics();
    let test = format!("model_{name}");
    let (seeds, origin, run_seed) = match env_number("HERALD_MODEL_SEED") {
        Some(seed) => (vec![seed], format!("replaying seed {seed}"), None),
        None => {
            let cases = env_number("HERALD_MODEL_CASES").map_or(default_cases, |n| n as usize);
            let base = env_number("HERALD_MODEL_RUN").unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
            let seeds = (0..cases as u64).map(|i| mix(base ^ mix(i))).collect();
            (
                seeds,
                format!("{cases} sequences, run seed {base}"),
                Some(base),
            )
        }
    };
    println!("model test on {name}: {origin}");
    LANE.with(|l| *l.borrow_mut() = Some(Lane::new(backend)));
    let started = Instant::now();
    let mut steps = 0;
    for (i, seed) in seeds.iter().enumerate() {
        let outcome = run_one(*seed);
        match outcome {
            Ok(n) => steps += n,
            Err(report) => {
                LANE.with(|l| l.borrow_mut().take());
                let skip = reference::skip_list().join(",");
                let skip = if skip.is_empty() {
                    String::new()
                } else {
                    format!("HERALD_MODEL_SKIP={skip} ")
                };
                // A sequence runs on the database the ones before it left; should its
                // failure need that, the whole run up to it replays it.
                let whole_run = run_seed.map_or(String::new(), |base| {
                    format!(
                        "\nor the run up to it (same database history) with: {skip}HERALD_MODEL_RUN={base} \
                         HERALD_MODEL_CASES={} cargo test -p herald --test it model::{test}",
                        i + 1
                    )
                });
                panic!(
                    "model test on {name}: sequence {} of {} failed, seed {seed}\n\
                     replay it with: {skip}HERALD_MODEL_SEED={seed} cargo test -p herald --test it model::{test}{whole_run}\n\n{report}",
                    i + 1,
                    seeds.len()
                );
            }
        }
        let check = !reference::skip_list().iter().any(|s| s == "Lists");
        if check && ((i + 1) % 10 == 0 || i + 1 == seeds.len()) {
            if let Err(e) = check_lists() {
                LANE.with(|l| l.borrow_mut().take());
                panic!(
                    "model test on {name}: after {} sequences on one database: {e}",
                    i + 1
                );
            }
        }
        if (i + 1) % 25 == 0 {
            println!(
                "model test on {name}: {} sequences passed in {:.0?}",
                i + 1,
                started.elapsed()
            );
        }
    }
    let totals = LANE.with(|l| l.borrow().as_ref().map(|l| l.totals));
    println!(
        "model test on {name}: {} sequences ({steps} steps) passed in {:.1?}; the last database holds {totals:?}",
        seeds.len(),
        started.elapsed()
    );
    LANE.with(|l| l.borrow_mut().take());
}

/// Runs the sequence `seed` generates (shrinking it on failure): the number of steps, or
/// the failure with the smallest failing sequence found.
fn run_one(seed: u64) -> Result<usize, String> {
    let shrink_secs = env_number("HERALD_MODEL_SHRINK_SECS").unwrap_or(180);
    let config = Config {
        cases: 1,
        failure_persistence: None,
        max_shrink_iters: 500,
        max_shrink_time: (shrink_secs * 1000) as u32,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(seed.wrapping_add(i as u64)).to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(
        config.clone(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let steps = Cell::new(0);
    LANE.with(|l| l.borrow_mut().as_mut().unwrap().shrinking = false);
    QUIET.with(|q| q.set(true));
    let result = runner.run(
        &HeraldModel::sequential_strategy(STEPS),
        |(state, transitions, seen)| {
            if steps.get() == 0 {
                steps.set(transitions.len());
            }
            HeraldTest::test_sequential(config.clone(), state, transitions, seen);
            Ok(())
        },
    );
    QUIET.with(|q| q.set(false));
    match result {
        Ok(()) => Ok(steps.get()),
        Err(TestError::Fail(reason, (_, transitions, _))) => {
            let listed: Vec<String> = transitions
                .iter()
                .enumerate()
                .map(|(i, t)| format!("  {:>2}. {t:?}", i + 1))
                .collect();
            Err(format!(
                "{reason}\n\nsmallest failing sequence found ({} steps; the report above is from its last run):\n{}",
                transitions.len(),
                listed.join("\n")
            ))
        }
        Err(TestError::Abort(reason)) => Err(format!("aborted: {reason}")),
    }
}

/// Run-wide: the admin lists (page size 1000, the largest) hold everything every
/// sequence on this database stored.
fn check_lists() -> Result<(), String> {
    let (base, totals) = LANE.with(|l| {
        let l = l.borrow();
        let l = l.as_ref().unwrap();
        (l.base.clone(), l.totals)
    });
    let http = reqwest::Client::new();
    let count = |path: &str, field: &str| -> Result<usize, String> {
        let mut token = String::new();
        let mut n = 0;
        loop {
            let url = format!("{base}{path}&page_token={token}");
            let v: Value = sut::rt()
                .block_on(async {
                    let r = http.get(&url).bearer_auth(ADMIN).send().await?;
                    if !r.status().is_success() {
                        return Ok(Value::String(format!(
                            "{}: {}",
                            r.status(),
                            r.text().await?
                        )));
                    }
                    r.json().await
                })
                .map_err(|e| format!("GET {url}: {e}"))?;
            if let Value::String(error) = v {
                return Err(format!("GET {url} answered {error}"));
            }
            // Herald's own events (a webhook disabled, a delivery dead) are not counted in
            // the totals, which are the events the sequences published.
            n += v[field].as_array().map_or(0, |a| {
                a.iter()
                    .filter(|e| {
                        !matches!(
                            e["type"].as_str(),
                            Some("webhook.disabled" | "delivery.failed")
                        )
                    })
                    .count()
            });
            token = v["next_page_token"].as_str().unwrap_or_default().to_owned();
            if token.is_empty() {
                return Ok(n);
            }
        }
    };
    let events = count("/events?page_size=1000", "events")?;
    let deliveries = count("/deliveries?page_size=1000", "deliveries")?;
    let webhooks = count("/webhooks?page_size=1000", "webhooks")?;
    if (events, deliveries, webhooks) != (totals.events, totals.deliveries, totals.webhooks) {
        return Err(format!(
            "the lists at page_size=1000 hold {events} events, {deliveries} deliveries and {webhooks} webhooks; \
             the database holds {} events, {} deliveries and {} live webhooks (lists must page through everything)",
            totals.events, totals.deliveries, totals.webhooks
        ));
    }
    Ok(())
}
