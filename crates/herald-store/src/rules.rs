//! The rules both backends apply when they change an operation or a delivery, free of
//! I/O: who may touch a leased operation, what each way of ending one records, and how an
//! attempt's outcome is stored. The backends read the rows, call these, and write.

use crate::model::*;
use crate::{StoreError, StoreResult};
use herald_core::event::Event;
use herald_core::ids::{EventId, WebhookId};
use herald_core::operation::{codes, Operation, OperationError, OperationState, Outcome};
use herald_core::Timestamp;
use serde_json::{Map, Value};

/// A worker may heartbeat or finish an operation only with its current lease token.
pub fn check_lease(op: &Operation, token: &str) -> StoreResult<()> {
    match &op.state {
        OperationState::Running { lease_token, .. } if lease_token == token => Ok(()),
        OperationState::Done(_) => Err(StoreError::AlreadyDone),
        _ => Err(StoreError::StaleLease),
    }
}

/// A heartbeat's metadata merged into the operation's (`type` is the operation's own).
pub fn merge_metadata(op: &mut Operation, patch: Option<Map<String, Value>>) {
    for (k, v) in patch.into_iter().flatten() {
        if k != "type" {
            op.metadata.insert(k, v);
        }
    }
}

/// A write that names one row by key: `NotFound` when it changed none.
pub fn found(changed: u64) -> StoreResult<()> {
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Whether a failure the worker reports goes back to the queue instead of ending it.
pub fn requeues(op: &Operation, retryable: bool) -> bool {
    retryable && op.attempt < op.max_attempts && !op.cancel_requested
}

fn failed(code: &str, message: impl Into<String>) -> OperationState {
    OperationState::Done(Outcome::Error(OperationError::new(code, message)))
}

/// A cancel of an operation no worker has claimed yet.
pub fn cancelled_before_start() -> OperationState {
    failed(
        codes::CANCELLED,
        "The operation was cancelled before it started.",
    )
}

/// A lease that ran out on an operation whose cancel was requested.
pub fn cancelled_while_running() -> OperationState {
    failed(
        codes::CANCELLED,
        "The operation was cancelled while running.",
    )
}

/// A lease that ran out on the last attempt.
pub fn worker_lost(attempts: u32) -> OperationState {
    failed(
        codes::WORKER_LOST,
        format!("The worker's lease expired on each of {attempts} attempts."),
    )
}

pub fn deadline_exceeded() -> OperationState {
    failed(
        codes::DEADLINE_EXCEEDED,
        "The operation did not finish before its deadline.",
    )
}

/// A finished operation's `response`, `error_code` and `error_message` columns.
pub fn finish_columns(
    op: &Operation,
) -> StoreResult<(Option<String>, Option<String>, Option<String>)> {
    match &op.state {
        OperationState::Done(Outcome::Response(r)) => {
            Ok((Some(serde_json::to_string(r)?), None, None))
        }
        OperationState::Done(Outcome::Error(e)) => {
            Ok((None, Some(e.code.clone()), Some(e.message.clone())))
        }
        _ => Err(StoreError::Backend(
            "finish_row called on an unfinished operation".into(),
        )),
    }
}

/// The event an operation raises as it ends (stored in the same transaction), if any.
pub fn final_event(op: &Operation, now: Timestamp) -> Option<NewEvent> {
    op.final_event_type().map(|event_type| NewEvent {
        id: EventId::generate(),
        tenant: op.tenant,
        event_type,
        key: None,
        request_hash: String::new(),
        data: op.to_resource(),
        created_at: now,
    })
}

/// Herald's own event when a webhook is disabled (a `410 Gone`, or through the API).
pub const WEBHOOK_DISABLED: &str = "webhook.disabled";
/// Herald's own event when a webhook delivery ends `failed` (its schedule used up, or a 410).
pub const DELIVERY_FAILED: &str = "delivery.failed";

/// A test event (`POST /webhooks/{id}:test`): delivered to the one webhook its `data`
/// names, whatever it subscribes to and filters, and to nothing else (no other webhook,
/// no broker route).
pub const WEBHOOK_TEST: &str = "webhook.test";

/// Herald's own event types: only Herald raises them (a webhook disabled, a delivery
/// dead, a test event), so a publish (`POST /events`) or an operation type whose final
/// events would bear one of these names is refused; a receiver can trust they are Herald's.
pub const RESERVED_EVENT_TYPES: &[&str] = &[WEBHOOK_DISABLED, DELIVERY_FAILED, WEBHOOK_TEST];

/// Whether `event_type` is one of Herald's own ([`RESERVED_EVENT_TYPES`]).
pub fn is_reserved_event_type(event_type: &str) -> bool {
    RESERVED_EVENT_TYPES.contains(&event_type)
}

/// The one webhook a test event goes to.
pub fn test_target(event: &Event) -> Option<&str> {
    (event.event_type == WEBHOOK_TEST)
        .then(|| event.data.get("webhook")?.as_str())
        .flatten()
}

/// Whether `pattern` subscribes to `event_type`: as the pattern says, except that the
/// catch-all `*` does not take Herald's own operational events (they are new types that
/// existing catch-all subscribers never asked for); name them, or `webhook.*`/`delivery.*`.
pub fn subscribes(pattern: &herald_core::pattern::EventPattern, event_type: &str) -> bool {
    pattern.matches(event_type)
        && !(pattern.as_str() == "*" && matches!(event_type, WEBHOOK_DISABLED | DELIVERY_FAILED))
}

/// The webhook an operational event (`webhook.disabled`, `delivery.failed`) is about: it is
/// never delivered to that webhook (fan-out leaves it out), so a failing endpoint that
/// subscribes to `*` does not feed on its own failures.
pub fn operational_subject(event: &Event) -> Option<&str> {
    match event.event_type.as_str() {
        WEBHOOK_DISABLED | DELIVERY_FAILED => event.data.get("webhook")?.as_str(),
        _ => None,
    }
}

/// `webhook.disabled`, stored in the transaction that disables the webhook, for the
/// webhook's tenant: `{"webhook", "url", "reason", "disabled_at"}`.
pub fn webhook_disabled_event(webhook: &Webhook, now: Timestamp) -> NewEvent {
    let data = serde_json::json!({
        "webhook": webhook.id.to_string(),
        "url": webhook.url,
        "reason": webhook.disabled_reason,
        "disabled_at": now.to_rfc3339(),
    });
    NewEvent {
        id: EventId::generate(),
        tenant: webhook.tenant,
        event_type: WEBHOOK_DISABLED.into(),
        key: None,
        request_hash: String::new(),
        data,
        created_at: now,
    }
}

/// The webhook whose delivery's final failure raises `delivery.failed`: none for a broker
/// route's, nor for the failed delivery of a `delivery.failed` event: failures do not
/// cascade (two failing endpoints subscribed to each other's failures would otherwise feed
/// each other for ever).
pub fn failure_subject(d: &Delivery) -> Option<WebhookId> {
    (d.event_type != DELIVERY_FAILED)
        .then(|| d.destination.webhook())
        .flatten()
}

/// At most one `delivery.failed` per webhook in this window: a storm of dead deliveries
/// (an endpoint down for good, thousands queued) raises one event, not thousands.
pub const FAILED_EVENT_WINDOW_MS: i64 = 60_000;

/// A webhook's record of its `delivery.failed` events: when it last raised one, and how
/// many final failures it has held since (raised none for). Stored per webhook; a webhook
/// with none reads as `(0, 0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureNotice {
    pub raised_at: i64,
    pub held: i64,
}

/// For one more final failure at `now`: `Some(failures)` when it raises `delivery.failed`
/// (the first in [`FAILED_EVENT_WINDOW_MS`]; `failures` counts it and those held since the
/// last one), `None` when it is held; and the record to store.
pub fn coalesce_failure(prev: FailureNotice, now: Timestamp) -> (Option<i64>, FailureNotice) {
    if now.0 - prev.raised_at >= FAILED_EVENT_WINDOW_MS {
        (
            Some(prev.held + 1),
            FailureNotice {
                raised_at: now.0,
                held: 0,
            },
        )
    } else {
        (
            None,
            FailureNotice {
                held: prev.held + 1,
                ..prev
            },
        )
    }
}

/// `delivery.failed`, stored in the transaction that records a delivery's final failure,
/// for its tenant: `{"delivery", "webhook", "event": {"id", "type"}, "attempts",
/// "last_status_code", "last_error", "failed_at", "failures"}`, `failures` the final
/// failures of the webhook it stands for (see [`coalesce_failure`]). None when
/// [`failure_subject`] is.
pub fn delivery_failed_event(d: &Delivery, failures: i64, now: Timestamp) -> Option<NewEvent> {
    let webhook = failure_subject(d)?;
    let data = serde_json::json!({
        "delivery": d.id.to_string(),
        "webhook": webhook.to_string(),
        "event": { "id": d.event_id.to_string(), "type": d.event_type },
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "failed_at": now.to_rfc3339(),
        "failures": failures,
    });
    Some(NewEvent {
        id: EventId::generate(),
        tenant: d.tenant,
        event_type: DELIVERY_FAILED.into(),
        key: None,
        request_hash: String::new(),
        data,
        created_at: now,
    })
}

/// The event as stored: `new` with the sequence number its key drew.
pub fn stored_event(new: NewEvent, sequence: Option<i64>) -> Event {
    Event {
        id: new.id,
        tenant: new.tenant,
        event_type: new.event_type,
        key: new.key,
        sequence,
        data: new.data,
        created_at: new.created_at,
    }
}

/// Whether recording these results makes a delivery due again at some time (a retry or a
/// deferral), so the engines must re-plan their sleep; a success or a final failure does not.
pub fn reschedules(records: &[AttemptRecord]) -> bool {
    records.iter().any(|r| {
        matches!(
            r.outcome,
            AttemptOutcome::RetryAt(_) | AttemptOutcome::Deferred(_)
        )
    })
}

/// A delivery's `status` and `next_attempt_at` after an attempt with this outcome.
pub fn outcome_columns(outcome: &AttemptOutcome) -> (&'static str, Option<i64>) {
    match outcome {
        AttemptOutcome::Succeeded => ("succeeded", None),
        AttemptOutcome::RetryAt(t) => ("pending", Some(t.0)),
        AttemptOutcome::Failed => ("failed", None),
        AttemptOutcome::Deferred(t) => ("pending", Some(t.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_as_columns() {
        assert_eq!(
            outcome_columns(&AttemptOutcome::Succeeded),
            ("succeeded", None)
        );
        assert_eq!(
            outcome_columns(&AttemptOutcome::RetryAt(Timestamp(7))),
            ("pending", Some(7))
        );
        assert_eq!(
            outcome_columns(&AttemptOutcome::Deferred(Timestamp(9))),
            ("pending", Some(9))
        );
        assert_eq!(outcome_columns(&AttemptOutcome::Failed), ("failed", None));
    }
}
