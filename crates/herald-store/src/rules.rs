//! The rules both backends apply when they change an operation or a delivery, free of
//! I/O: who may touch a leased operation, what each way of ending one records, and how an
//! attempt's outcome is stored. The backends read the rows, call these, and write.

use crate::model::*;
use crate::{StoreError, StoreResult};
use herald_core::event::Event;
use herald_core::ids::EventId;
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
