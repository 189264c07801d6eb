//! Event retention: purges settled events (and their deliveries and attempts) older
//! than `[retention] events`, in small batches with pauses, so the writer never stalls.

use herald_core::Clock;
use herald_store::{PurgeReport, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The shortest pause between two full batches (the pause is at least four times the
/// last batch's time): other writes get the writer in between.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// `[retention]`: how long settled events are kept and how they are purged.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Settled events older than this are purged; `None` keeps them for ever.
    pub events: Option<Duration>,
    /// Events removed per write.
    pub batch: u32,
    /// Pause between passes once nothing more is due.
    pub interval: Duration,
}

/// Told of every purge (metrics). Must be cheap and not block.
pub trait RetentionObserver: Send + Sync + 'static {
    fn purged(&self, report: &PurgeReport);
}

/// The retention loop. Build with [`Retention::new`], then [`Retention::run`].
pub struct Retention {
    config: RetentionConfig,
    observer: Option<Arc<dyn RetentionObserver>>,
}

impl Retention {
    pub fn new(config: RetentionConfig) -> Self {
        Self {
            config,
            observer: None,
        }
    }

    /// Reports every purge to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn RetentionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Purges until `shutdown`; returns at once when retention is off.
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) {
        let Retention {
            config: settings,
            observer,
        } = self;
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
            if let (Ok(report), Some(observer)) = (&purged, &observer) {
                observer.purged(report);
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
}
