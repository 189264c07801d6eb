//! The webhook engine, stage by stage:
//!
//! - [`claim`]: due deliveries are claimed in batches (the loop is shared with the
//!   outbox, [`crate::claim`]), each holding one of `max_in_flight` global slots;
//! - [`admission`]: each is deferred at once (disabled webhook, open circuit, its
//!   [`pace`] (`rate_limit`) used up, full queue), recorded as failed (unsendable), or queued in its own task behind its
//!   webhook's concurrency limit;
//! - [`breaker`]: once it has a slot, the webhook's circuit breaker lets it go (or
//!   defers it);
//! - [`send`]: the signed `POST`, through the SSRF-guarded client;
//! - [`record`]: the result judged against the retry schedule and written in batches.
//!
//! Nothing lives only in memory: a claimed delivery is leased in the store, so if
//! Herald dies mid-send the lease expires and the delivery is sent again
//! (at-least-once). The breaker and the concurrency limits are in-memory hints.

mod admission;
mod breaker;
mod claim;
mod pace;
mod record;
pub(crate) mod send;
#[cfg(test)]
pub(crate) mod tests;

use crate::claim::ClaimSource;
use crate::claim::{drain, finish_recording, spawn_recorder, Records};
use admission::{changed_while_queued, Waiting, WebhookState};
use breaker::Admission;
use herald_core::clock::Clock;
use herald_core::ids::{TenantId, WebhookId};
use herald_core::retry::RetrySchedule;
use herald_store::{AttemptOutcome, DeliveryJob, Handoff, Store};
use record::{defer, hand_back, record_result};
use send::SendResult;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

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
    /// Its webhook was changed (URL, secret) or deleted while it waited for a slot: it is
    /// handed back, due now, and the next claim sends it with the new settings.
    WebhookChanged,
    /// Its webhook's `rate_limit` is used up for now: it goes at its turn.
    RateLimited,
}

impl Deferral {
    pub const ALL: [Deferral; 6] = [
        Deferral::CircuitOpen,
        Deferral::Saturated,
        Deferral::WebhookDisabled,
        Deferral::Stopping,
        Deferral::WebhookChanged,
        Deferral::RateLimited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Deferral::CircuitOpen => "circuit_open",
            Deferral::Saturated => "saturated",
            Deferral::WebhookDisabled => "webhook_disabled",
            Deferral::Stopping => "stopping",
            Deferral::WebhookChanged => "webhook_changed",
            Deferral::RateLimited => "rate_limited",
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
    circuits: Circuits,
}

/// The webhooks' circuits as this node's dispatcher holds them (in memory: each node has
/// its own, and a restart closes them all). A read handle for health pages: clone it, give
/// it to [`Dispatcher::with_circuits`], ask it [`Circuits::state`].
#[derive(Clone, Default)]
pub struct Circuits(Arc<Mutex<HashMap<WebhookId, WebhookState>>>);

impl std::fmt::Debug for Circuits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuits").finish_non_exhaustive()
    }
}

/// A webhook's circuit breaker, as of a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Attempts go as they come.
    Closed,
    /// Failing: its deliveries are deferred until then.
    Open { until: herald_core::Timestamp },
    /// The cooldown is over: the next attempt is the probe that closes or reopens it.
    HalfOpen,
}

impl CircuitState {
    pub fn label(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

impl Circuits {
    /// `webhook`'s circuit at `now` (closed when this node has no say about it).
    pub fn state(&self, webhook: WebhookId, now: herald_core::Timestamp) -> CircuitState {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&webhook)
            .map_or(CircuitState::Closed, |s| s.breaker.state(now))
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(super) struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    client: reqwest::Client,
    /// Per-webhook admission state and breakers (shared with [`Circuits`] handles).
    webhooks: Arc<Mutex<HashMap<WebhookId, WebhookState>>>,
    /// Claimed deliveries waiting behind their webhook's concurrency (not yet sending),
    /// every webhook together: at most half the global slots (see `admission`).
    waiting: std::sync::atomic::AtomicUsize,
    /// Deliveries each tenant has queued or in flight (see `admission`).
    tenants: Mutex<HashMap<Option<TenantId>, usize>>,
    /// The global slots, as the claim loop takes them: how many are free.
    slots: Arc<Semaphore>,
    records: Records,
    observer: Option<Arc<dyn AttemptObserver>>,
    /// Cancelled on shutdown: deliveries still waiting for a per-webhook slot hand their
    /// leases back at once.
    shutdown: CancellationToken,
    /// Cancelled when the shutdown grace ends: sends still running are cut short and
    /// their leases handed back, so another node (or the next start) sends them at once.
    hard_stop: CancellationToken,
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
        let client = send::build_client(config.timeout, config.allow_private_destinations)
            .map_err(|e| DispatchError::Client(e.to_string()))?;
        Ok(Self {
            store,
            clock,
            config,
            client,
            observer: None,
            circuits: Circuits::default(),
        })
    }

    /// Reports every judged attempt to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Keeps the webhooks' circuits where `circuits` (and its clones) can read them.
    pub fn with_circuits(mut self, circuits: Circuits) -> Self {
        self.circuits = circuits;
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
            circuits,
        } = self;
        let (records, recorder) = spawn_recorder(store.clone(), "delivery", None);
        let slots = Arc::new(Semaphore::new(config.max_in_flight));
        let hard_stop = CancellationToken::new();
        let grace = config.timeout + Duration::from_secs(1);
        let shared = Arc::new(Shared {
            store,
            clock,
            config,
            client,
            webhooks: circuits.0,
            waiting: Default::default(),
            tenants: Mutex::new(HashMap::new()),
            slots: slots.clone(),
            records,
            observer,
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        });
        // Fresh deliveries come straight from the writes that create them while slots are
        // free (herald_store::handoff), the rest through the claim loop.
        let (handed_tx, mut handed) =
            mpsc::unbounded_channel::<(DeliveryJob, OwnedSemaphorePermit)>();
        let handoff = Handoff::new(
            slots.clone(),
            shared.lease(),
            Arc::new(move |job, slot| {
                let _ = handed_tx.send((job, slot));
            }),
        );
        shared.store.hand_off_fresh(handoff.clone());
        let taker = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some((job, slot)) = handed.recv().await {
                    if shared.shutdown.is_cancelled() {
                        hand_back(&shared, &job, slot);
                    } else {
                        admission::dispatch(&shared, job, slot);
                    }
                }
            })
        };
        tracing::debug!("dispatcher started");

        crate::claim::claim_loop(&shared, &slots, &shutdown).await;
        // Nothing more is handed off; what already was is handed back by the taker.
        handoff.close();

        // Stop: every slot back means every send finished and its result is recorded.
        let total = shared.config.max_in_flight;
        if !drain(&slots, total, grace).await {
            let left = shared.config.max_in_flight - slots.available_permits();
            tracing::warn!(in_flight = left, "dispatcher stopping with sends still in flight; they are cut short and handed back for another attempt");
            hard_stop.cancel();
        }
        taker.abort();
        drop(shared);
        if finish_recording(recorder).await {
            tracing::debug!("dispatcher stopped");
        } else {
            tracing::warn!("dispatcher stopped before every result was recorded");
        }
    }
}

/// Waits for a per-webhook slot, asks the breaker, sends, judges, and hands the result
/// to the recorder.
pub(super) async fn deliver(
    shared: &Shared,
    job: DeliveryJob,
    semaphore: Arc<Semaphore>,
    slot: OwnedSemaphorePermit,
    mut waiting: Option<Waiting>,
) {
    if shared.shutdown.is_cancelled() {
        return hand_back(shared, &job, slot);
    }
    let _permit = match semaphore.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(TryAcquireError::Closed) => return,
        Err(TryAcquireError::NoPermits) => {
            let permit = tokio::select! {
                biased;
                // Stopping: not sent yet, so hand the lease back instead of sending.
                _ = shared.shutdown.cancelled() => return hand_back(shared, &job, slot),
                permit = semaphore.acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            drop(waiting.take());
            // It waited, maybe for longer than its lease (behind sends that each hang to
            // the timeout): one whose lease cannot cover its send is left alone, neither
            // sent nor written, for the store may already have handed it to the next
            // claim (this node's or another's), which sends it.
            if shared.clock.now().plus(shared.config.timeout) >= job.lease_until {
                tracing::debug!(delivery = %job.delivery.id, webhook = %job.webhook.id, "lease ran out while the delivery waited for its webhook's slot; left to the next claim");
                return;
            }
            // It waited, maybe for several timeouts: the webhook may have changed since
            // the claim read it.
            if let Some((until, reason)) = changed_while_queued(shared, &job).await {
                tracing::debug!(delivery = %job.delivery.id, webhook = %job.webhook.id, reason = reason.label(), "webhook changed while the delivery waited; deferred");
                return defer(shared, &job, until, reason, slot);
            }
            permit
        }
    };
    // Sending now, not waiting (even if admission thought it would have to).
    drop(waiting.take());
    let config = &shared.config;
    let webhook = job.webhook.id;
    let at = shared.clock.now();
    let was_probe = match shared.breaker_admit(webhook, at) {
        Admission::Defer(t) => return defer(shared, &job, t, Deferral::CircuitOpen, slot),
        Admission::Probe => true,
        Admission::Go => false,
    };
    let attempt_number = job.delivery.attempts.saturating_add(1);
    let send = send::send(
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

    shared.breaker_record(webhook, job.delivery.id, &result, was_probe, done);
    record_result(shared, &job, at, done, result, slot);
}
