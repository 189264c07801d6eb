//! What the webhook and the outbox engines share: the claim loop (claim due deliveries
//! while global slots are free, start each, sleep until the next falls due), the
//! recorder that writes results in batches, and the drain on stop.
//!
//! Each engine says where its deliveries come from with a [`ClaimSource`]; a claimed
//! delivery holds one global slot until its result is written.

use herald_core::clock::{sleep_until, Clock};
use herald_core::Timestamp;
use herald_store::{AttemptRecord, Signals, Store, StoreResult};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest the loop sleeps (by its clock), so expired leases are picked up.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// At most this many results per `record_attempts` call.
const RECORD_BATCH: usize = 256;

/// One engine's deliveries, as the claim loop sees them.
pub(crate) trait ClaimSource: Send + Sync {
    type Job: Send;
    /// What is claimed, for the logs: many ("due deliveries", "broker deliveries") and
    /// one ("delivery", "broker delivery").
    const WHAT: &'static str;
    const ONE: &'static str;
    /// At most this many deliveries per claim.
    const MAX_CLAIM: usize;

    fn store(&self) -> &Arc<dyn Store>;
    fn clock(&self) -> &Arc<dyn Clock>;
    /// How long a claimed delivery is leased.
    fn lease(&self) -> Duration;
    fn claim(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> impl Future<Output = StoreResult<Vec<Self::Job>>> + Send;
    /// The wake-up that says one of this engine's deliveries may have become due.
    fn due_signal(signals: &Signals) -> &Notify;
    /// When the next delivery (or its lease) falls due.
    fn next_due(&self) -> impl Future<Output = StoreResult<Option<Timestamp>>> + Send;
    /// Starts one claimed delivery; `slot` goes with its result to the recorder.
    fn start(&self, job: Self::Job, slot: OwnedSemaphorePermit);
}

/// Claims due deliveries while `slots` are free and starts each, until `shutdown`.
pub(crate) async fn claim_loop<S: ClaimSource>(
    source: &S,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) {
    let lease = source.lease();
    let store = source.store();
    let clock = source.clock();
    loop {
        // Wait for at least one free slot.
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        // Listen before looking, so a delivery that becomes due meanwhile is not missed.
        let notified = S::due_signal(store.signals()).notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let limit = (1 + slots.available_permits()).min(S::MAX_CLAIM);
        let now = clock.now();
        let jobs = match source.claim(now, limit as u32, lease).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "claiming {} failed; retrying in 1s", S::WHAT);
                drop(first);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        if jobs.is_empty() {
            drop(first);
        } else {
            tracing::debug!(count = jobs.len(), "claimed {}", S::WHAT);
            // A full claim may have left more due: claim again at once. A short one took
            // all that was due when it ran, so the loop goes on to sleep, with the wake-up
            // it listened for before claiming: one empty claim fewer per wake-up, which at
            // low rates was a large share of the database's work per delivery.
            let full = jobs.len() >= limit;
            let mut first = Some(first);
            for job in jobs {
                let slot = match first.take() {
                    Some(p) => p,
                    // Only this loop takes slots, so those counted above are still free.
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    },
                };
                source.start(job, slot);
            }
            if full {
                continue;
            }
        }

        // Nothing (more) due: sleep until the next delivery (or lease) falls due, a new one
        // is signalled, or shutdown.
        let next = match source.next_due().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading the next due {} failed", S::ONE);
                Some(clock.now().plus(MAX_IDLE))
            }
        };
        // Leases taken without this loop (deliveries handed off by the writes that made
        // them) expire unannounced: look again at least every MAX_IDLE of the clock.
        let cap = clock.now().plus(MAX_IDLE);
        let deadline = Some(next.map_or(cap, |next| next.min(cap)));
        let sleep = async {
            match deadline {
                Some(t) => sleep_until(&**clock, t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = &mut notified => {}
            _ = sleep => {}
        }
    }
}

/// A result on its way to the store, with the global slot it frees once written (so
/// the claim loop never sees a stale head).
pub(crate) struct RecordMsg {
    pub(crate) record: AttemptRecord,
    pub(crate) _slot: OwnedSemaphorePermit,
}

/// Where results go to be written. Dropping every clone ends the recorder.
pub(crate) type Records = mpsc::UnboundedSender<RecordMsg>;

/// Starts the recorder: it writes results as they come, batching whatever is queued
/// into one call, until every [`Records`] sender is dropped.
/// `after_batch` (if any) is fired after every batch written: the outbox's results free
/// the next delivery of their line, which its claim loop must then look for.
pub(crate) fn spawn_recorder(
    store: Arc<dyn Store>,
    what: &'static str,
    after_batch: Option<fn(&Signals) -> &Notify>,
) -> (Records, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio::spawn(record_loop(store, rx, what, after_batch)))
}

async fn record_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<RecordMsg>,
    what: &'static str,
    after_batch: Option<fn(&Signals) -> &Notify>,
) {
    let mut batch: Vec<RecordMsg> = Vec::new();
    while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let records: Vec<AttemptRecord> = batch.iter().map(|m| m.record.clone()).collect();
        let mut tries = 0;
        loop {
            tries += 1;
            match store.record_attempts(records.clone()).await {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tracing::warn!(error = %e, count = records.len(), "recording {what} results failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = records.len(),
                        "recording {what} results failed; those deliveries will be retried when their leases expire");
                    break;
                }
            }
        }
        batch.clear(); // frees the slots
        if let Some(signal) = after_batch {
            signal(store.signals()).notify_waiters();
        }
    }
}

/// Waits (at most `grace`) for every one of `total` slots to come back, which means
/// every delivery started has its result queued for the recorder. False if the grace
/// ran out first.
pub(crate) async fn drain(slots: &Arc<Semaphore>, total: usize, grace: Duration) -> bool {
    tokio::time::timeout(grace, slots.clone().acquire_many_owned(total as u32))
        .await
        .is_ok()
}

/// Waits (at most 5 s) for the recorder to write what is queued, once every sender is
/// dropped. False if it did not finish in time.
pub(crate) async fn finish_recording(recorder: JoinHandle<()>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), recorder)
        .await
        .is_ok()
}
