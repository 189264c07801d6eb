//! The delivery loop: claim due deliveries in batches, send each in its own task
//! under per-webhook and global limits and a per-webhook circuit breaker, and record
//! the results in batches.
//!
//! Nothing lives only in memory: a claimed delivery is leased in the store, so if
//! Herald dies mid-send the lease expires and the delivery is sent again
//! (at-least-once). The breaker and the concurrency limits are in-memory hints.

use crate::sender::{self, SendResult};
use herald_core::clock::{sleep_until, Clock};
use herald_core::ids::{AttemptId, WebhookId};
use herald_core::retry::RetrySchedule;
use herald_core::Timestamp;
use herald_store::{Attempt, AttemptOutcome, AttemptRecord, DeliveryJob, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// At most this many deliveries per claim.
const MAX_CLAIM: usize = 500;
/// A webhook may have this many times its concurrency queued and in flight, or half the
/// global slots if that is more (see [`queue_cap`]).
const QUEUE_FACTOR: usize = 4;
/// Bounds of how far a delivery is pushed back when its webhook's queue is full
/// (see [`saturated_defer`]).
const SATURATED_DEFER_MIN: Duration = Duration::from_millis(20);
const SATURATED_DEFER_MAX: Duration = Duration::from_secs(1);
/// How far a delivery of a disabled webhook is pushed back if one is ever claimed.
const DISABLED_DEFER: Duration = Duration::from_secs(60);
/// The longest the loop sleeps on the real clock, so expired leases are picked up.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// At most this many results per `record_attempts` call.
const RECORD_BATCH: usize = 256;

/// How the dispatcher sends.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Per-request timeout (connect to last byte read).
    pub timeout: Duration,
    /// Used for webhooks that have no schedule of their own.
    pub schedule: RetrySchedule,
    /// Allow loopback, private and link-local destinations (tests, trusted networks).
    pub allow_private_destinations: bool,
    /// Requests in flight (or claimed and queued) across all webhooks.
    pub max_in_flight: usize,
    /// Requests in flight per webhook, unless the webhook sets `max_concurrency`.
    pub per_webhook_concurrency: u32,
    /// Consecutive failed attempts that open a webhook's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit defers deliveries before one probe goes through.
    pub breaker_cooldown: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            schedule: RetrySchedule::default(),
            allow_private_destinations: false,
            max_in_flight: 256,
            per_webhook_concurrency: 16,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("invalid dispatcher configuration: {0}")]
    Config(String),
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// Told of every attempt as it is judged (metrics). Called on the delivery task, so it
/// must be cheap and must not block.
pub trait AttemptObserver: Send + Sync + 'static {
    fn attempt_judged(&self, result: &SendResult, outcome: &AttemptOutcome);
    /// A claimed delivery was put back without an attempt, for `reason`.
    fn deferred(&self, _reason: Deferral) {}
}

/// Why a claimed delivery went back to the store without an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Its webhook's circuit is open.
    CircuitOpen,
    /// Its webhook already has as many deliveries queued and in flight as it may.
    Saturated,
    /// Its webhook is disabled.
    WebhookDisabled,
    /// This node is stopping: the lease is handed back, due now.
    Stopping,
}

impl Deferral {
    pub const ALL: [Deferral; 4] = [
        Deferral::CircuitOpen,
        Deferral::Saturated,
        Deferral::WebhookDisabled,
        Deferral::Stopping,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Deferral::CircuitOpen => "circuit_open",
            Deferral::Saturated => "saturated",
            Deferral::WebhookDisabled => "webhook_disabled",
            Deferral::Stopping => "stopping",
        }
    }
}

/// The webhook delivery engine. Build with [`Dispatcher::new`], then [`Dispatcher::run`].
pub struct Dispatcher {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    client: reqwest::Client,
    observer: Option<Arc<dyn AttemptObserver>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Circuit breaker of one webhook.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Breaker {
    consecutive_failures: u32,
    /// Open until this instant; once it has passed, the circuit is half-open.
    open_until: Option<Timestamp>,
    /// The half-open probe is in flight.
    probing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Go,
    /// The half-open probe: its result closes or reopens the circuit.
    Probe,
    Defer(Timestamp),
}

impl Breaker {
    /// Open and still cooling down: defer until it reopens.
    fn open_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.open_until.filter(|t| now < *t)
    }

    /// Whether an attempt may go now. `probe_wait`: how long to defer while a probe is out.
    pub(crate) fn admit(&mut self, now: Timestamp, probe_wait: Duration) -> Admission {
        match self.open_until {
            None => Admission::Go,
            Some(t) if now < t => Admission::Defer(t),
            Some(_) if self.probing => Admission::Defer(now.plus(probe_wait)),
            Some(_) => {
                self.probing = true;
                Admission::Probe
            }
        }
    }

    /// Returns true when this result opened (or reopened) the circuit.
    pub(crate) fn record(
        &mut self,
        success: bool,
        was_probe: bool,
        now: Timestamp,
        threshold: u32,
        cooldown: Duration,
    ) -> bool {
        if was_probe {
            self.probing = false;
        }
        if success {
            *self = Breaker::default();
            return false;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let expired_or_closed = self.open_until.is_none_or(|t| t <= now);
        if self.consecutive_failures >= threshold && (expired_or_closed || was_probe) {
            self.open_until = Some(now.plus(cooldown));
            return true;
        }
        false
    }

    fn is_idle(&self) -> bool {
        self.consecutive_failures == 0 && self.open_until.is_none() && !self.probing
    }
}

/// In-memory state of one webhook, kept while it has work queued or a breaker to remember.
struct WebhookState {
    concurrency: u32,
    semaphore: Arc<Semaphore>,
    /// Deliveries queued or in flight.
    pending: usize,
    breaker: Breaker,
    /// Latency of the webhook's last attempt: sizes the wait when its queue is full.
    last_latency_ms: u64,
}

/// How many deliveries one webhook may have queued and in flight. Half the global slots at
/// least: a burst claimed for one fast webhook waits in memory for its turn (bounded by the
/// global slots) instead of going back to the store, while the other half of the slots stays
/// free for every other webhook however slow this one gets.
fn queue_cap(concurrency: u32, max_in_flight: usize) -> usize {
    (QUEUE_FACTOR * concurrency as usize).max(max_in_flight / 2)
}

/// How far a delivery is pushed back when its webhook's queue is full: about the time the
/// queue (`QUEUE_FACTOR` requests per slot) takes to drain at the last latency seen, so a
/// fast endpoint's burst waits milliseconds, not a second, and a slow endpoint's backlog is
/// not re-claimed in a busy loop. Not shorter than 20 ms: deferring a fast endpoint's excess
/// by its queue's drain time alone (~8 ms) was measured to make more deferrals, not fewer
/// (docs/benchmarks.md, "The end-to-end tail").
fn saturated_defer(last_latency_ms: u64) -> Duration {
    Duration::from_millis(last_latency_ms.saturating_mul(QUEUE_FACTOR as u64))
        .clamp(SATURATED_DEFER_MIN, SATURATED_DEFER_MAX)
}

/// A result on its way to the store, with the global slot it frees once written.
struct RecordMsg {
    record: AttemptRecord,
    _slot: OwnedSemaphorePermit,
}

struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    client: reqwest::Client,
    webhooks: Mutex<HashMap<WebhookId, WebhookState>>,
    records: mpsc::UnboundedSender<RecordMsg>,
    observer: Option<Arc<dyn AttemptObserver>>,
    /// Cancelled on shutdown: deliveries still waiting for a per-webhook slot hand their
    /// leases back at once.
    shutdown: CancellationToken,
    /// Cancelled when the shutdown grace ends: sends still running are cut short and
    /// their leases handed back, so another node (or the next start) sends them at once.
    hard_stop: CancellationToken,
}

/// Decrements a webhook's pending count however its task ends.
struct PendingGuard {
    shared: Arc<Shared>,
    webhook: WebhookId,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(state) = map.get_mut(&self.webhook) {
            state.pending = state.pending.saturating_sub(1);
            if state.pending == 0 && state.breaker.is_idle() {
                map.remove(&self.webhook);
            }
        }
    }
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: DispatcherConfig,
    ) -> Result<Self, DispatchError> {
        if config.max_in_flight == 0
            || config.max_in_flight > Semaphore::MAX_PERMITS.min(u32::MAX as usize)
        {
            return Err(DispatchError::Config(
                "max_in_flight must be at least 1".into(),
            ));
        }
        if config.per_webhook_concurrency == 0 {
            return Err(DispatchError::Config(
                "per_webhook_concurrency must be at least 1".into(),
            ));
        }
        if config.breaker_threshold == 0 {
            return Err(DispatchError::Config(
                "breaker_threshold must be at least 1".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(DispatchError::Config(
                "timeout must be more than zero".into(),
            ));
        }
        let client = sender::build_client(config.timeout, config.allow_private_destinations)
            .map_err(|e| DispatchError::Client(e.to_string()))?;
        Ok(Self {
            store,
            clock,
            config,
            client,
            observer: None,
        })
    }

    /// Reports every judged attempt to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs until `shutdown` is cancelled; then stops claiming, hands back the leases of
    /// claimed deliveries not yet being sent, waits (at most the request timeout plus a
    /// second) for in-flight sends and their records, and returns. Sends still running
    /// then are cut short and their leases handed back too: nothing claimed waits for a
    /// lease to expire after a graceful stop.
    pub async fn run(self, shutdown: CancellationToken) {
        let Dispatcher {
            store,
            clock,
            config,
            client,
            observer,
        } = self;
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(store.clone(), rx));
        let slots = Arc::new(Semaphore::new(config.max_in_flight));
        let hard_stop = CancellationToken::new();
        let grace = config.timeout + Duration::from_secs(1);
        let shared = Arc::new(Shared {
            store,
            clock,
            config,
            client,
            webhooks: Mutex::new(HashMap::new()),
            records: tx,
            observer,
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        });
        tracing::debug!("dispatcher started");

        claim_loop(&shared, &slots, &shutdown).await;

        // Stop: every slot back means every send finished and its result is recorded.
        let total = shared.config.max_in_flight as u32;
        let drained = tokio::time::timeout(grace, slots.clone().acquire_many_owned(total)).await;
        if drained.is_err() {
            let left = shared.config.max_in_flight - slots.available_permits();
            tracing::warn!(in_flight = left, "dispatcher stopping with sends still in flight; they are cut short and handed back for another attempt");
            hard_stop.cancel();
        }
        drop(shared);
        match tokio::time::timeout(Duration::from_secs(5), recorder).await {
            Ok(_) => tracing::debug!("dispatcher stopped"),
            Err(_) => tracing::warn!("dispatcher stopped before every result was recorded"),
        }
    }
}

async fn claim_loop(shared: &Arc<Shared>, slots: &Arc<Semaphore>, shutdown: &CancellationToken) {
    let lease = shared.config.timeout * 4 + Duration::from_secs(30);
    let store = shared.store.clone();
    let clock = shared.clock.clone();
    loop {
        // Wait for at least one free slot.
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        // Listen before looking, so a delivery that becomes due meanwhile is not missed.
        let notified = store.signals().deliveries_due.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let limit = (1 + slots.available_permits()).min(MAX_CLAIM);
        let now = clock.now();
        let jobs = match store.claim_due_deliveries(now, limit as u32, lease).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "claiming due deliveries failed; retrying in 1s");
                drop(first);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        if !jobs.is_empty() {
            tracing::debug!(count = jobs.len(), "claimed deliveries");
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
                dispatch(shared, job, slot);
            }
            continue;
        }
        drop(first);

        // Nothing due: sleep until the next delivery (or lease) falls due, a new one
        // is signalled, or shutdown.
        let next = match store.next_delivery_due().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading the next due delivery failed");
                Some(clock.now().plus(MAX_IDLE))
            }
        };
        let cap = clock.moved().is_none().then(|| clock.now().plus(MAX_IDLE));
        let deadline = match (next, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match deadline {
                Some(t) => sleep_until(&*clock, t).await,
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

/// Routes one claimed delivery: deferred at once (circuit open, webhook saturated)
/// or queued in its own task.
fn dispatch(shared: &Arc<Shared>, job: DeliveryJob, slot: OwnedSemaphorePermit) {
    let now = shared.clock.now();
    let webhook = job.webhook.id;
    if let Some(reason) = job.unsendable.clone() {
        // Not the endpoint's fault, so the breaker is left alone; the attempt is recorded
        // as failed and the delivery follows its schedule like any other failure.
        tracing::warn!(delivery = %job.delivery.id, %webhook, error = %reason, "delivery cannot be sent");
        let result = SendResult {
            error: Some(reason),
            ..SendResult::default()
        };
        return record_result(shared, &job, now, now, result, slot);
    }
    if job.webhook.disabled {
        // The store pauses a disabled webhook's deliveries; one can still slip through
        // when a result recorded after the disable rescheduled it. Never send it.
        tracing::debug!(delivery = %job.delivery.id, %webhook, "webhook disabled; delivery deferred");
        defer(
            shared,
            &job,
            now.plus(DISABLED_DEFER),
            Deferral::WebhookDisabled,
            slot,
        );
        return;
    }
    let concurrency = job
        .webhook
        .max_concurrency
        .unwrap_or(shared.config.per_webhook_concurrency)
        .max(1);
    let semaphore = {
        let mut map = shared.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        let state = map.entry(webhook).or_insert_with(|| WebhookState {
            concurrency,
            semaphore: Arc::new(Semaphore::new(concurrency as usize)),
            pending: 0,
            breaker: Breaker::default(),
            last_latency_ms: 0,
        });
        if state.concurrency != concurrency {
            // The webhook's setting changed: new work uses the new limit.
            state.concurrency = concurrency;
            state.semaphore = Arc::new(Semaphore::new(concurrency as usize));
        }
        let defer_until = if let Some(t) = state.breaker.open_until(now) {
            Some((t, Deferral::CircuitOpen))
        } else if state.pending >= queue_cap(concurrency, shared.config.max_in_flight) {
            Some((
                now.plus(saturated_defer(state.last_latency_ms)),
                Deferral::Saturated,
            ))
        } else {
            state.pending += 1;
            None
        };
        if let Some((t, reason)) = defer_until {
            drop(map);
            tracing::debug!(delivery = %job.delivery.id, %webhook, until = %t.to_rfc3339(), reason = reason.label(), "delivery deferred");
            defer(shared, &job, t, reason, slot);
            return;
        }
        state.semaphore.clone()
    };
    let guard = PendingGuard {
        shared: shared.clone(),
        webhook,
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let _guard = guard;
        deliver(&shared, job, semaphore, slot).await
    });
}

/// Releases a claimed delivery without counting an attempt: due now, lease cleared.
fn hand_back(shared: &Shared, job: &DeliveryJob, slot: OwnedSemaphorePermit) {
    tracing::debug!(delivery = %job.delivery.id, "stopping; delivery lease handed back");
    defer(shared, job, shared.clock.now(), Deferral::Stopping, slot);
}

fn defer(
    shared: &Shared,
    job: &DeliveryJob,
    until: Timestamp,
    reason: Deferral,
    slot: OwnedSemaphorePermit,
) {
    if let Some(observer) = &shared.observer {
        observer.deferred(reason);
    }
    let record = AttemptRecord {
        delivery_id: job.delivery.id,
        attempt: None,
        outcome: AttemptOutcome::Deferred(until),
        disable_webhook: None,
    };
    let _ = shared.records.send(RecordMsg {
        record,
        _slot: slot,
    });
}

/// Waits for a per-webhook slot, asks the breaker, sends, judges, and hands the result
/// to the recorder.
async fn deliver(
    shared: &Shared,
    job: DeliveryJob,
    semaphore: Arc<Semaphore>,
    slot: OwnedSemaphorePermit,
) {
    let _permit = tokio::select! {
        biased;
        // Stopping: not sent yet, so hand the lease back instead of sending.
        _ = shared.shutdown.cancelled() => return hand_back(shared, &job, slot),
        permit = semaphore.acquire_owned() => match permit {
            Ok(p) => p,
            Err(_) => return,
        },
    };
    let config = &shared.config;
    let webhook = job.webhook.id;
    let at = shared.clock.now();
    // The circuit may have opened while this delivery was queued.
    let probe_wait = config
        .timeout
        .min(config.breaker_cooldown)
        .max(Duration::from_secs(1));
    let admission = {
        let mut map = shared.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&webhook)
            .map(|s| s.breaker.admit(at, probe_wait))
            .unwrap_or(Admission::Go)
    };
    let was_probe = match admission {
        Admission::Defer(t) => return defer(shared, &job, t, Deferral::CircuitOpen, slot),
        Admission::Probe => true,
        Admission::Go => false,
    };
    let attempt_number = job.delivery.attempts.saturating_add(1);
    let send = sender::send(
        &shared.client,
        &job,
        attempt_number,
        at,
        config.timeout,
        config.allow_private_destinations,
    );
    let result = tokio::select! {
        biased;
        // The shutdown grace is over: cut the send short. The endpoint may have received
        // it, so the next attempt can be a duplicate (at least once), never a loss.
        _ = shared.hard_stop.cancelled() => return hand_back(shared, &job, slot),
        result = send => result,
    };
    let done = shared.clock.now();

    let opened = {
        let mut map = shared.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&webhook)
            .map(|s| {
                s.last_latency_ms = result.latency_ms as u64;
                s.breaker.record(
                    result.is_success(),
                    was_probe,
                    done,
                    config.breaker_threshold,
                    config.breaker_cooldown,
                )
            })
            .unwrap_or(false)
    };
    if opened {
        tracing::warn!(%webhook, cooldown = %humantime::format_duration(config.breaker_cooldown),
            "webhook failing repeatedly; circuit opened");
    }

    record_result(shared, &job, at, done, result, slot);
}

/// Judges an attempt made at `at` (its result known at `done`) against the retry
/// schedule and hands the record to the recorder.
fn record_result(
    shared: &Shared,
    job: &DeliveryJob,
    at: Timestamp,
    done: Timestamp,
    result: SendResult,
    slot: OwnedSemaphorePermit,
) {
    let webhook = job.webhook.id;
    let schedule = job
        .webhook
        .schedule
        .as_ref()
        .unwrap_or(&shared.config.schedule);
    let verdict = sender::decide(
        &result,
        job.delivery.window_attempts,
        schedule,
        done,
        rand::random::<f64>(),
    );
    log_attempt(job, &result, &verdict.outcome);
    if let Some(observer) = &shared.observer {
        observer.attempt_judged(&result, &verdict.outcome);
    }
    let SendResult {
        status_code,
        error,
        response_excerpt,
        latency_ms,
        ..
    } = result;
    let record = AttemptRecord {
        delivery_id: job.delivery.id,
        attempt: Some(Attempt {
            id: AttemptId::generate(),
            delivery_id: job.delivery.id,
            at,
            status_code,
            latency_ms,
            error,
            response_excerpt,
        }),
        outcome: verdict.outcome,
        disable_webhook: verdict.disable_reason.map(|reason| (webhook, reason)),
    };
    let _ = shared.records.send(RecordMsg {
        record,
        _slot: slot,
    });
}

fn log_attempt(job: &DeliveryJob, result: &SendResult, outcome: &AttemptOutcome) {
    let delivery = job.delivery.id;
    let webhook = job.webhook.id;
    match outcome {
        AttemptOutcome::Succeeded => {
            tracing::debug!(%delivery, %webhook, status = ?result.status_code, latency_ms = result.latency_ms, "delivered")
        }
        AttemptOutcome::RetryAt(t) => tracing::debug!(%delivery, %webhook, error = ?result.error,
            retry_at = %t.to_rfc3339(), "delivery attempt failed; will retry"),
        AttemptOutcome::Failed if result.status_code == Some(410) => {
            tracing::warn!(%delivery, %webhook, "endpoint answered 410 Gone; webhook disabled")
        }
        AttemptOutcome::Failed => {
            tracing::warn!(%delivery, %webhook, error = ?result.error, "delivery failed; retry window used up")
        }
        AttemptOutcome::Deferred(_) => {}
    }
}

/// Writes results as they come, batching whatever is queued into one call.
async fn record_loop(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<RecordMsg>) {
    let mut batch: Vec<RecordMsg> = Vec::new();
    while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let records: Vec<AttemptRecord> = batch.iter().map(|m| m.record.clone()).collect();
        let mut tries = 0;
        loop {
            tries += 1;
            match store.record_attempts(records.clone()).await {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tracing::warn!(error = %e, count = records.len(), "recording delivery results failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = records.len(),
                        "recording delivery results failed; those deliveries will be retried when their leases expire");
                    break;
                }
            }
        }
        batch.clear(); // frees the slots
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_775_834_400_000);
    const COOL: Duration = Duration::from_secs(30);

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            assert_eq!(b.admit(T0, Duration::from_secs(10)), Admission::Go);
            assert!(!b.record(false, false, T0, 5, COOL));
        }
        assert!(b.record(false, false, T0, 5, COOL), "fifth failure opens");
        let reopen = T0.plus(COOL);
        assert_eq!(
            b.admit(T0.plus(Duration::from_secs(1)), Duration::from_secs(10)),
            Admission::Defer(reopen)
        );
        // Cooldown over: exactly one probe, the rest wait for it.
        assert_eq!(b.admit(reopen, Duration::from_secs(10)), Admission::Probe);
        assert_eq!(
            b.admit(reopen, Duration::from_secs(10)),
            Admission::Defer(reopen.plus(Duration::from_secs(10)))
        );
        // The probe fails: open again for a cooldown.
        let later = reopen.plus(Duration::from_secs(2));
        assert!(b.record(false, true, later, 5, COOL));
        assert_eq!(
            b.admit(later, Duration::from_secs(10)),
            Admission::Defer(later.plus(COOL))
        );
        // Next probe succeeds: closed.
        assert_eq!(
            b.admit(later.plus(COOL), Duration::from_secs(10)),
            Admission::Probe
        );
        assert!(!b.record(true, true, later.plus(COOL), 5, COOL));
        assert!(b.is_idle());
        assert_eq!(
            b.admit(later.plus(COOL), Duration::from_secs(10)),
            Admission::Go
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.record(false, false, T0, 5, COOL);
        }
        b.record(true, false, T0, 5, COOL);
        for _ in 0..4 {
            assert!(!b.record(false, false, T0, 5, COOL));
        }
        assert_eq!(b.admit(T0, COOL), Admission::Go);
    }

    #[test]
    fn config_is_validated() {
        let store: Arc<dyn Store> = Arc::new(test_store().0);
        let clock: Arc<dyn Clock> = Arc::new(herald_core::ManualClock::new(T0));
        let bad = DispatcherConfig {
            max_in_flight: 0,
            ..Default::default()
        };
        assert!(matches!(
            Dispatcher::new(store.clone(), clock.clone(), bad),
            Err(DispatchError::Config(_))
        ));
        assert!(Dispatcher::new(store, clock, DispatcherConfig::default()).is_ok());
    }

    use crate::sender::tests::read_request;
    use herald_core::ids::EventId;
    use herald_core::pattern::EventPattern;
    use herald_core::signing::{verify_herald, SignatureFormat};
    use herald_core::ManualClock;
    use herald_store::{DeliveryFilter, DeliveryStatus, NewEvent, Webhook};
    use tokio::io::AsyncWriteExt;

    /// A loopback receiver that answers with `statuses` in turn (the last one repeats)
    /// and reports each request it read.
    async fn receiver(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let status = statuses[n.min(statuses.len() - 1)];
                n += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut sock).await;
                    let _ = tx.send(request);
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (format!("http://{addr}/hooks"), rx)
    }

    fn webhook(url: &str, now: Timestamp, max_concurrency: Option<u32>) -> Webhook {
        Webhook {
            id: WebhookId::generate(),
            tenant: None,
            url: url.into(),
            events: vec![EventPattern::parse("payment.*").unwrap()],
            format: SignatureFormat::Herald,
            secret: "hsec_test".into(),
            secret_version: 1,
            previous_secret: None,
            schedule: None,
            max_concurrency,
            disabled: false,
            disabled_reason: None,
            description: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub(crate) async fn publish(store: &dyn Store, now: Timestamp) -> EventId {
        let id = EventId::generate();
        let event = NewEvent {
            id,
            tenant: None,
            event_type: "payment.succeeded".into(),
            key: None,
            data: serde_json::json!({ "payment_id": "pay_42" }),
            created_at: now,
            request_hash: id.to_string(),
        };
        store.insert_event(event, None).await.unwrap();
        id
    }

    /// Polls `check` (real time, 10 ms steps) until it holds; fails after 5 s.
    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = std::time::Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn deliveries(store: &dyn Store, webhook: WebhookId) -> Vec<herald_store::Delivery> {
        let filter = DeliveryFilter {
            webhook: Some(webhook),
            limit: 100,
            ..Default::default()
        };
        store.list_deliveries(filter).await.unwrap()
    }

    /// Records the deferrals the dispatcher reports.
    #[derive(Default)]
    struct Deferrals(Mutex<Vec<Deferral>>);

    impl AttemptObserver for Deferrals {
        fn attempt_judged(&self, _: &SendResult, _: &AttemptOutcome) {}
        fn deferred(&self, reason: Deferral) {
            self.0.lock().unwrap().push(reason);
        }
    }

    struct Running {
        store: Arc<dyn Store>,
        clock: Arc<ManualClock>,
        deferrals: Arc<Deferrals>,
        shutdown: CancellationToken,
        handle: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    fn start(config: DispatcherConfig) -> Running {
        let (store, dir) = test_store();
        let store: Arc<dyn Store> = Arc::new(store);
        let clock = Arc::new(ManualClock::starting_now());
        let config = DispatcherConfig {
            allow_private_destinations: true,
            ..config
        };
        let deferrals = Arc::new(Deferrals::default());
        let dispatcher = Dispatcher::new(store.clone(), clock.clone(), config)
            .unwrap()
            .with_observer(deferrals.clone());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(dispatcher.run(shutdown.clone()));
        Running {
            store,
            clock,
            deferrals,
            shutdown,
            handle,
            _dir: dir,
        }
    }

    impl Running {
        async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(5), self.handle)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn delivers_retries_on_the_schedule_and_succeeds() {
        let r = start(DispatcherConfig::default());
        let (url, mut requests) = receiver(vec![500, 200]).await;
        let wh = r
            .store
            .create_webhook(webhook(&url, r.clock.now(), None))
            .await
            .unwrap();
        let t0 = r.clock.now();
        publish(&*r.store, t0).await;

        let first = tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .unwrap()
            .unwrap();
        let (head, body) = first.split_once("\r\n\r\n").unwrap();
        let sig = head
            .lines()
            .find_map(|l| l.strip_prefix("x-signature: "))
            .unwrap();
        let ts = head
            .lines()
            .find_map(|l| l.strip_prefix("x-timestamp: "))
            .unwrap();
        assert_eq!(ts, t0.to_rfc3339_seconds());
        assert!(verify_herald("hsec_test", ts, body.as_bytes(), sig));
        assert!(head.contains("x-delivery-attempt: 1\r\n"), "{head}");

        // The 500 is recorded and the retry is due 5 s (±10 %) later.
        eventually("the retry to be scheduled", || async {
            let d = deliveries(&*r.store, wh.id).await;
            d.len() == 1 && d[0].attempts == 1
        })
        .await;
        let d = &deliveries(&*r.store, wh.id).await[0];
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.last_status_code, Some(500));
        let next = d.next_attempt_at.unwrap();
        assert!(
            next >= t0.plus(Duration::from_millis(4500))
                && next <= t0.plus(Duration::from_millis(5500)),
            "{next:?}"
        );
        assert!(
            requests.try_recv().is_err(),
            "no retry before the clock moves"
        );

        r.clock.advance(Duration::from_secs(6));
        let second = tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(second.contains("x-delivery-attempt: 2\r\n"));
        eventually("success", || async {
            deliveries(&*r.store, wh.id).await[0].status == DeliveryStatus::Succeeded
        })
        .await;
        let (_, attempts) = r.store.get_delivery(d.id).await.unwrap();
        assert_eq!(attempts.len(), 2);
        let failed = attempts
            .iter()
            .find(|a| a.status_code == Some(500))
            .unwrap();
        assert_eq!(failed.error.as_deref(), Some("HTTP 500"));
        assert_eq!(failed.response_excerpt.as_deref(), Some("ok"));
        assert_eq!(failed.at, t0);
        r.stop().await;
    }

    #[tokio::test]
    async fn gone_disables_the_webhook() {
        let r = start(DispatcherConfig::default());
        let (url, _requests) = receiver(vec![410]).await;
        let wh = r
            .store
            .create_webhook(webhook(&url, r.clock.now(), None))
            .await
            .unwrap();
        publish(&*r.store, r.clock.now()).await;
        eventually("the delivery to fail", || async {
            deliveries(&*r.store, wh.id).await[0].status == DeliveryStatus::Failed
        })
        .await;
        let wh = r.store.get_webhook(wh.id).await.unwrap();
        assert!(wh.disabled);
        assert_eq!(
            wh.disabled_reason.as_deref(),
            Some("endpoint answered 410 Gone")
        );
        r.stop().await;
    }

    #[tokio::test]
    async fn an_open_circuit_defers_without_attempting_and_spares_other_webhooks() {
        let config = DispatcherConfig {
            breaker_threshold: 2,
            ..Default::default()
        };
        let r = start(config);
        let (dead_url, mut dead_requests) = receiver(vec![500]).await;
        let (good_url, _good) = receiver(vec![200]).await;
        let now = r.clock.now();
        // Concurrency 1: the three deliveries go one after another.
        let dead = r
            .store
            .create_webhook(webhook(&dead_url, now, Some(1)))
            .await
            .unwrap();
        for _ in 0..3 {
            publish(&*r.store, now).await;
        }
        let good = r
            .store
            .create_webhook(webhook(&good_url, now, None))
            .await
            .unwrap();
        publish(&*r.store, now).await;

        eventually("two attempts and a deferral", || async {
            let d = deliveries(&*r.store, dead.id).await;
            d.len() == 4
                && d.iter().filter(|d| d.attempts == 1).count() == 2
                && d.iter().all(|d| {
                    d.attempts == 1 || d.next_attempt_at > Some(now.plus(Duration::from_secs(20)))
                })
        })
        .await;
        let d = deliveries(&*r.store, dead.id).await;
        let untouched: Vec<_> = d.iter().filter(|d| d.attempts == 0).collect();
        assert_eq!(untouched.len(), 2, "{d:?}");
        for u in untouched {
            assert_eq!(u.status, DeliveryStatus::Pending);
            let at = u.next_attempt_at.unwrap();
            assert!(
                at >= now.plus(Duration::from_secs(30)) && at <= now.plus(Duration::from_secs(31)),
                "{at:?}"
            );
        }
        let mut seen = 0;
        while dead_requests.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 2);
        // Reported as such (the `herald_delivery_deferrals_total` metric).
        assert_eq!(
            *r.deferrals.0.lock().unwrap(),
            vec![Deferral::CircuitOpen, Deferral::CircuitOpen]
        );
        eventually("the healthy webhook's delivery", || async {
            let d = deliveries(&*r.store, good.id).await;
            d.iter().any(|d| {
                d.destination.webhook() == Some(good.id) && d.status == DeliveryStatus::Succeeded
            })
        })
        .await;
        r.stop().await;
    }

    /// A graceful stop leaves nothing leased: the delivery being sent (to an endpoint
    /// that never answers) ends within the grace as a timed-out attempt with its retry
    /// scheduled, and the two waiting for the webhook's one slot hand their leases back
    /// at once, claimable again right after the stop with no attempt counted.
    #[tokio::test]
    async fn a_graceful_stop_leaves_no_claimed_delivery_leased() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut sock, _)) = listener.accept().await {
                read_request(&mut sock).await;
                let _ = seen_tx.send(());
                held.push(sock); // never answered
            }
        });
        let r = start(DispatcherConfig {
            timeout: Duration::from_secs(2),
            ..Default::default()
        });
        let wh = r
            .store
            .create_webhook(webhook(&url, r.clock.now(), Some(1)))
            .await
            .unwrap();
        for _ in 0..3 {
            publish(&*r.store, r.clock.now()).await;
        }
        tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("the first delivery was sent")
            .unwrap();
        let store = r.store.clone();
        let now = r.clock.now();
        let lease = Duration::from_secs(600);
        assert!(
            store
                .claim_due_deliveries(now, 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "all three are claimed by the running dispatcher"
        );
        r.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), r.handle)
            .await
            .expect("the dispatcher stopped within its grace")
            .unwrap();
        let again = store.claim_due_deliveries(now, 10, lease).await.unwrap();
        assert_eq!(again.len(), 2, "the two waiting were handed back");
        for job in &again {
            assert_eq!(job.webhook.id, wh.id);
            assert_eq!(
                job.delivery.attempts, 0,
                "a handed-back delivery is not an attempt"
            );
        }
        assert!(seen.try_recv().is_err(), "the waiting two were never sent");
        let sent: Vec<_> = deliveries(&*store, wh.id)
            .await
            .into_iter()
            .filter(|d| d.attempts > 0)
            .collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].status, DeliveryStatus::Pending);
        assert!(sent[0].next_attempt_at.is_some(), "its retry is scheduled");
        let error = sent[0].last_error.clone().unwrap_or_default();
        assert!(error.contains("timed out"), "{error}");
    }

    pub(crate) fn test_store() -> (herald_store::sqlite::SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = herald_store::sqlite::SqliteStore::open(&dir.path().join("herald.db")).unwrap();
        (store, dir)
    }
}
