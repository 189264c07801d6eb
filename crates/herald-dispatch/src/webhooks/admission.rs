//! Admission: what becomes of a claimed delivery before it is sent. An unsendable one
//! is recorded as a failed attempt, one of a disabled webhook or of a webhook whose
//! circuit is open, whose rate limit is used up or whose queue is full is deferred, and the rest are queued, each in
//! its own task, behind its webhook's concurrency limit.

use super::breaker::Breaker;
use super::pace::Pace;
use super::record::{defer, record_result};
use super::send::SendResult;
use super::{deliver, Deferral, Shared};
use herald_core::ids::{TenantId, WebhookId};
use herald_core::Timestamp;
use herald_store::{DeliveryJob, StoreError, Webhook};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A webhook may have this many times its concurrency queued and in flight, or half the
/// global slots if that is more (see [`queue_cap`]).
const QUEUE_FACTOR: usize = 4;
/// Bounds of how far a delivery is pushed back when its webhook's queue is full
/// (see [`saturated_defer`]).
const SATURATED_DEFER_MIN: Duration = Duration::from_millis(20);
const SATURATED_DEFER_MAX: Duration = Duration::from_secs(1);
/// How far a delivery of a disabled webhook is pushed back if one is ever claimed.
const DISABLED_DEFER: Duration = Duration::from_secs(60);

/// How long one re-read of a webhook (see [`changed_while_queued`]) stands for every
/// delivery of it that leaves the queue: a busy webhook is read at most this often.
const RECHECK_EVERY: Duration = Duration::from_millis(50);

/// What of a webhook decides whether and how a claimed delivery may still be sent with
/// the copy its claim read.
#[derive(Clone, PartialEq)]
pub(super) struct Fingerprint {
    updated_at: Timestamp,
    disabled: bool,
    secret_version: u32,
    url: String,
}

impl Fingerprint {
    fn of(webhook: &Webhook) -> Self {
        Self {
            updated_at: webhook.updated_at,
            disabled: webhook.disabled,
            secret_version: webhook.secret_version,
            url: webhook.url.clone(),
        }
    }
}

/// In-memory state of one webhook, kept while it has work queued or a breaker to remember.
pub(super) struct WebhookState {
    concurrency: u32,
    semaphore: Arc<Semaphore>,
    /// Deliveries queued or in flight.
    pending: usize,
    pub(super) breaker: Breaker,
    /// The webhook's `rate_limit` at work (kept while it still has a say).
    pace: Pace,
    /// Latency of the webhook's last attempt: sizes the wait when its queue is full.
    pub(super) last_latency_ms: u64,
    /// The webhook as last re-read from the store, and when (`None` inside: deleted).
    seen: Option<(Instant, Option<Fingerprint>)>,
    /// Held while one of its deliveries re-reads it, so the others wait for that read
    /// instead of each making its own.
    rereading: Arc<tokio::sync::Mutex<()>>,
}

/// How many deliveries one webhook may have queued and in flight. Half the global slots at
/// least: a burst claimed for one fast webhook waits in memory for its turn (bounded by the
/// global slots) instead of going back to the store. The other half of the slots stays
/// free for sending however slow the webhooks get: see [`waiting_cap`].
fn queue_cap(concurrency: u32, max_in_flight: usize) -> usize {
    (QUEUE_FACTOR * concurrency as usize).max(max_in_flight / 2)
}

/// How many claimed deliveries may wait behind their webhooks' concurrency, every webhook
/// together: half the global slots. Each webhook's own cap ([`queue_cap`]) is half the
/// slots too, so two slow webhooks (of one tenant, with `max_concurrency: 1`) held every
/// slot, and no other webhook's delivery was claimed until a hanging send timed out.
fn waiting_cap(max_in_flight: usize) -> usize {
    (max_in_flight / 2).max(1)
}

/// Whether a tenant holding `held` deliveries (queued or in flight) may take one more
/// while `free` global slots are left besides the one it came with and `active` tenants
/// (itself included) hold some: up to its share of half the slots (half alone, a quarter
/// each for two, …), and past that only while a quarter of the slots is free (its own
/// counted). So the slow or hanging endpoints of one tenant, or of a few (as many webhooks
/// as they like, each sending up to its concurrency), never take the slots another
/// tenant's delivery needs, and a tenant alone still uses most of them.
fn tenant_may_take(held: usize, free: usize, active: usize, max_in_flight: usize) -> bool {
    held < max_in_flight / 2 / active.max(1) || free + 1 >= max_in_flight / 4
}

/// One delivery counted as waiting for its webhook's slot, until dropped.
pub(crate) struct Waiting(Arc<Shared>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How far a delivery is pushed back when its webhook's queue is full: about the time the
/// queue (`QUEUE_FACTOR` requests per slot) takes to drain at the last latency seen, so a
/// fast endpoint's burst waits milliseconds, not a second, and a slow endpoint's backlog is
/// not re-claimed in a busy loop. Not shorter than 20 ms: deferring a fast endpoint's excess
/// by its queue's drain time alone (~8 ms) was measured to make more deferrals, not fewer
/// (the "end-to-end tail" measurements in the git history of docs/benchmarks.md).
fn saturated_defer(last_latency_ms: u64) -> Duration {
    Duration::from_millis(last_latency_ms.saturating_mul(QUEUE_FACTOR as u64))
        .clamp(SATURATED_DEFER_MIN, SATURATED_DEFER_MAX)
}

/// Decrements a webhook's (and its tenant's) pending count however its task ends.
struct PendingGuard {
    shared: Arc<Shared>,
    webhook: WebhookId,
    tenant: Option<TenantId>,
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
            if state.pending == 0
                && state.breaker.is_idle()
                && state.pace.is_idle(self.shared.clock.now())
            {
                map.remove(&self.webhook);
            }
        }
        drop(map);
        let mut tenants = self
            .shared
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(held) = tenants.get_mut(&self.tenant) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                tenants.remove(&self.tenant);
            }
        }
    }
}

/// Routes one claimed delivery: deferred at once (circuit open, webhook saturated)
/// or queued in its own task.
pub(super) fn dispatch(shared: &Arc<Shared>, job: DeliveryJob, slot: OwnedSemaphorePermit) {
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
    let (semaphore, waiting) = {
        let mut map = shared.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        let state = map.entry(webhook).or_insert_with(|| WebhookState {
            concurrency,
            semaphore: Arc::new(Semaphore::new(concurrency as usize)),
            pending: 0,
            breaker: Breaker::default(),
            pace: Pace::default(),
            last_latency_ms: 0,
            seen: None,
            rereading: Arc::default(),
        });
        if state.concurrency != concurrency {
            // The webhook's setting changed: new work uses the new limit.
            state.concurrency = concurrency;
            state.semaphore = Arc::new(Semaphore::new(concurrency as usize));
        }
        // With every slot of its webhook taken, it would wait (holding a global slot).
        let waits = state.pending >= concurrency as usize;
        let max_in_flight = shared.config.max_in_flight;
        let mut tenants = shared.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let held = tenants.get(&job.webhook.tenant).copied().unwrap_or(0);
        let active = tenants.len() + usize::from(held == 0);
        let saturated = state.pending >= queue_cap(concurrency, max_in_flight)
            || (waits && shared.waiting.load(Ordering::SeqCst) >= waiting_cap(max_in_flight))
            || !tenant_may_take(
                held,
                shared.slots.available_permits(),
                active,
                max_in_flight,
            );
        let defer_until = if let Some(t) = state.breaker.open_until(now) {
            Some((t, Deferral::CircuitOpen))
        } else if let Some(Err(t)) = job
            .webhook
            .options
            .rate_limit
            // Asked last of what lets it go, so a turn is only taken by a delivery that goes.
            .filter(|_| !saturated)
            .map(|rate| state.pace.admit(rate, now))
        {
            Some((t, Deferral::RateLimited))
        } else if saturated {
            Some((
                now.plus(saturated_defer(state.last_latency_ms)),
                Deferral::Saturated,
            ))
        } else {
            state.pending += 1;
            *tenants.entry(job.webhook.tenant).or_insert(0) += 1;
            None
        };
        drop(tenants);
        if let Some((t, reason)) = defer_until {
            if state.pending == 0 && state.breaker.is_idle() && state.pace.is_idle(now) {
                // Made just now for this delivery (its tenant's share was full): nothing
                // to remember, and no task that would remove it.
                map.remove(&webhook);
            }
            drop(map);
            tracing::debug!(delivery = %job.delivery.id, %webhook, until = %t.to_rfc3339(), reason = reason.label(), "delivery deferred");
            defer(shared, &job, t, reason, slot);
            return;
        }
        // Counted under the lock, so two admissions never both take the last place.
        let waiting = waits.then(|| {
            shared.waiting.fetch_add(1, Ordering::SeqCst);
            Waiting(shared.clone())
        });
        (state.semaphore.clone(), waiting)
    };
    let guard = PendingGuard {
        shared: shared.clone(),
        webhook,
        tenant: job.webhook.tenant,
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let _guard = guard;
        deliver(&shared, job, semaphore, slot, waiting).await
    });
}

/// Whether a delivery that waited for its webhook's slot must go back instead of being
/// sent with the copy of the webhook its claim read: the webhook was disabled (the
/// delivery is paused like the rest of its deliveries), deleted, or changed where it
/// matters to the send (URL, secret) while the delivery waited, possibly for several
/// timeouts behind hanging sends. A changed one is handed back due now, so the next claim
/// sends it with the new settings. One store read stands for [`RECHECK_EVERY`] for all the
/// webhook's deliveries; if the store cannot be read, the delivery goes as claimed.
pub(super) async fn changed_while_queued(
    shared: &Shared,
    job: &DeliveryJob,
) -> Option<(Timestamp, Deferral)> {
    let id = job.webhook.id;
    let cached = || {
        let map = shared.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id)
            .and_then(|state| state.seen.clone())
            .filter(|(at, _)| at.elapsed() < RECHECK_EVERY)
    };
    let current = match cached() {
        Some((_, current)) => current,
        None => {
            let gate = {
                let map = shared.webhooks.lock().unwrap_or_else(|p| p.into_inner());
                map.get(&id).map(|state| state.rereading.clone())
            };
            let _turn = match &gate {
                Some(gate) => Some(gate.lock().await),
                None => None,
            };
            match cached() {
                // Another delivery of the webhook read it while this one waited its turn.
                Some((_, current)) => current,
                None => {
                    let current = match shared.store.get_webhook(id).await {
                        Ok(webhook) => Some(Fingerprint::of(&webhook)),
                        Err(StoreError::NotFound) => None,
                        Err(e) => {
                            tracing::warn!(webhook = %id, error = %e, "could not re-read a webhook; its queued delivery goes as claimed");
                            return None;
                        }
                    };
                    let mut map = shared.webhooks.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(state) = map.get_mut(&id) {
                        state.seen = Some((Instant::now(), current.clone()));
                    }
                    current
                }
            }
        }
    };
    let now = shared.clock.now();
    match current {
        // Due now: recorded while the webhook is still disabled, the store pauses it with
        // the webhook's other deliveries; if it was enabled again meanwhile, it goes at once.
        Some(current) if current.disabled => Some((now, Deferral::WebhookDisabled)),
        Some(current) if current == Fingerprint::of(&job.webhook) => None,
        // Deleted (the store ends a deleted webhook's deliveries) or changed.
        _ => Some((now, Deferral::WebhookChanged)),
    }
}
