//! The operations' timekeeper: puts operations whose lease expired back in the queue
//! (or ends them with `WORKER_LOST`), enforces deadlines and purges after retention; and
//! the ordered webhooks' safety sweep, which moves on any line whose head is gone.

use herald_core::clock::sleep_until;
use herald_core::Clock;
use herald_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest sleep between passes, so timers set by another node or a clock jump are
/// still seen promptly.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// How often the ordered lines' sweep runs (and once at start).
const SWEEP_EVERY: Duration = Duration::from_secs(300);

pub(crate) async fn run(store: Arc<dyn Store>, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    let mut next_sweep = herald_core::Timestamp(0);
    while !shutdown.is_cancelled() {
        let now = clock.now();
        match store.reap_operations(now).await {
            Ok(report) if report != Default::default() => {
                tracing::info!(?report, "operations reaped")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaping operations failed; will retry"),
        }
        // Ordered webhooks: every write that ends a line's head releases the next itself;
        // this sweep, at start and then every few minutes, is the safety net (it reads every
        // held delivery, so it is not run every pass).
        if next_sweep <= now {
            match store.release_held_heads(now).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(released = n, "held deliveries released by the sweep"),
                Err(e) => {
                    tracing::warn!(error = %e, "releasing held deliveries failed; will retry")
                }
            }
            next_sweep = now.plus(SWEEP_EVERY);
        }
        let next = match store.next_operation_timer().await {
            Ok(Some(t)) => t.min(now.plus(MAX_SLEEP)),
            _ => now.plus(MAX_SLEEP),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep_until(&*clock, next) => {}
            _ = tokio::time::sleep(MAX_SLEEP) => {}
        }
    }
}
