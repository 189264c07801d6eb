//! The operations' timekeeper: puts operations whose lease expired back in the queue
//! (or ends them with `WORKER_LOST`), enforces deadlines and purges after retention; and
//! the ordered webhooks' sweep, which moves on any line whose head is gone.

use herald_core::clock::sleep_until;
use herald_core::Clock;
use herald_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest sleep between passes, so timers set by another node or a clock jump are
/// still seen promptly.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(crate) async fn run(store: Arc<dyn Store>, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let now = clock.now();
        match store.reap_operations(now).await {
            Ok(report) if report != Default::default() => {
                tracing::info!(?report, "operations reaped")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaping operations failed; will retry"),
        }
        // Ordered webhooks: a line whose head went without releasing the next (its event
        // purged, or finished on another node while this line grew) moves on here.
        match store.release_held_heads(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(released = n, "held deliveries released"),
            Err(e) => tracing::warn!(error = %e, "releasing held deliveries failed; will retry"),
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
