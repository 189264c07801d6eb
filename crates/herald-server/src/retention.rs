//! Event retention: purges settled events (and their deliveries and attempts) older
//! than `[retention] events`, in small batches with pauses, so the writer never stalls.

use crate::config::RetentionSettings;
use herald_core::Clock;
use herald_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The shortest pause between two full batches (the pause is at least four times the
/// last batch's time): other writes get the writer in between.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

pub async fn run(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: RetentionSettings,
    metrics: Arc<crate::telemetry::Metrics>,
    shutdown: CancellationToken,
) {
    let Some(keep) = settings.events else {
        return;
    };
    while !shutdown.is_cancelled() {
        let cutoff = herald_core::Timestamp(clock.now().0 - keep.as_millis() as i64);
        let started = std::time::Instant::now();
        let purged = store.purge_settled_events(cutoff, settings.batch).await;
        // Its time includes waiting for the writer: the busier Herald is, the longer the
        // pause, so purging takes at most a fifth of the writer however busy it is.
        let took = started.elapsed();
        if let Ok(report) = &purged {
            metrics.retention_purged(report);
        }
        let pause = match purged {
            Ok(report) if report.events >= u64::from(settings.batch) => {
                tracing::debug!(?report, ?took, "retention: purged a batch; more to go");
                BETWEEN_BATCHES.max(took * 4)
            }
            Ok(report) => {
                if report.events > 0 {
                    tracing::info!(?report, "retention: purged old settled events");
                }
                settings.interval
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention: purging failed; will retry");
                settings.interval
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
