//! Recording: an attempt's result judged against the retry schedule
//! ([`RetrySchedule::decide`](herald_core::retry::RetrySchedule::decide)), logged,
//! reported to the observer and handed to the recorder with its global slot; and the
//! deferrals, which go back to the store without an attempt.

use super::send::SendResult;
use super::{Deferral, Shared};
use crate::claim::RecordMsg;
use herald_core::ids::AttemptId;
use herald_core::retry::RetryDecision;
use herald_core::Timestamp;
use herald_store::{Attempt, AttemptOutcome, AttemptRecord, DeliveryJob};
use tokio::sync::OwnedSemaphorePermit;

/// Releases a claimed delivery without counting an attempt: due now, lease cleared.
pub(super) fn hand_back(shared: &Shared, job: &DeliveryJob, slot: OwnedSemaphorePermit) {
    tracing::debug!(delivery = %job.delivery.id, "stopping; delivery lease handed back");
    defer(shared, job, shared.clock.now(), Deferral::Stopping, slot);
}

pub(super) fn defer(
    shared: &Shared,
    job: &DeliveryJob,
    until: Timestamp,
    reason: Deferral,
    slot: OwnedSemaphorePermit,
) {
    if shared.clock.now() >= job.lease_until {
        // The lease is over: the delivery may be another claim's now, and putting it back
        // would clear that claim's lease. It is due anyway, so the next claim takes it.
        tracing::debug!(delivery = %job.delivery.id, reason = reason.label(), "lease over; not deferred");
        return;
    }
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

/// Judges an attempt made at `at` (its result known at `done`) against the retry
/// schedule and hands the record to the recorder.
pub(super) fn record_result(
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
    let decision = schedule.decide(
        &result.as_attempt(),
        job.delivery.window_attempts,
        done,
        rand::random::<f64>(),
    );
    let (outcome, disable_reason) = match decision {
        RetryDecision::Succeeded => (AttemptOutcome::Succeeded, None),
        RetryDecision::RetryAt(t) => (AttemptOutcome::RetryAt(t), None),
        RetryDecision::Dead => (AttemptOutcome::Failed, None),
        RetryDecision::Disabled(reason) => (AttemptOutcome::Failed, Some(reason)),
    };
    log_attempt(job, &result, &outcome);
    if let Some(observer) = &shared.observer {
        observer.attempt_judged(&result, &outcome);
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
        outcome,
        disable_webhook: disable_reason.map(|reason| (webhook, reason)),
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
