//! Turning rows into domain records, and the column lists that go with them.

use crate::model::*;
use crate::{StoreError, StoreResult};
use herald_core::auth::Role;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::operation::{Operation, OperationError, OperationState, Outcome};
use herald_core::pattern::EventPattern;
use herald_core::retry::RetrySchedule;
use herald_core::signing::SignatureFormat;
use herald_core::Timestamp;
use rusqlite::Row;
use serde_json::Value;
use std::time::Duration;

pub fn bad(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what} row: {detail}"))
}

pub fn parse_id<T>(text: &str, parse: fn(&str) -> Result<T, IdError>) -> StoreResult<T> {
    parse(text).map_err(|e| bad("id", e))
}

pub fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

pub const OPERATION_COLUMNS: &str =
    "id, tenant_id, type, state, metadata, input, response, error_code, \
     error_message, attempt, max_attempts, lease_token, lease_expires_at, cancel_requested, \
     created_at, updated_at, deadline_at";

pub fn operation(row: &Row<'_>) -> StoreResult<Operation> {
    let id: String = row.get(0)?;
    let tenant: Option<String> = row.get(1)?;
    let state: String = row.get(3)?;
    let metadata: String = row.get(4)?;
    let input: String = row.get(5)?;
    let response: Option<String> = row.get(6)?;
    let error_code: Option<String> = row.get(7)?;
    let error_message: Option<String> = row.get(8)?;
    let lease_token: Option<String> = row.get(11)?;
    let lease_expires_at: Option<i64> = row.get(12)?;
    let error = || OperationError {
        code: error_code.clone().unwrap_or_default(),
        message: error_message.clone().unwrap_or_default(),
    };
    let state = match state.as_str() {
        "queued" => OperationState::Queued,
        "running" => OperationState::Running {
            lease_token: lease_token.unwrap_or_default(),
            lease_expires_at: Timestamp(lease_expires_at.unwrap_or_default()),
        },
        "succeeded" => OperationState::Done(Outcome::Response(match response {
            Some(r) => serde_json::from_str(&r)?,
            None => Value::Null,
        })),
        "failed" | "cancelled" => OperationState::Done(Outcome::Error(error())),
        other => return Err(bad("operation", format!("unknown state {other}"))),
    };
    let metadata: Value = serde_json::from_str(&metadata)?;
    Ok(Operation {
        id: parse_id(&id, OperationId::parse)?,
        tenant: tenant
            .as_deref()
            .map(|t| parse_id(t, TenantId::parse))
            .transpose()?,
        op_type: row.get(2)?,
        metadata: match metadata {
            Value::Object(m) => m,
            _ => Default::default(),
        },
        input: serde_json::from_str(&input)?,
        state,
        attempt: row.get(9)?,
        max_attempts: row.get(10)?,
        cancel_requested: row.get::<_, i64>(13)? != 0,
        created_at: Timestamp(row.get(14)?),
        updated_at: Timestamp(row.get(15)?),
        deadline_at: opt_ts(row.get(16)?),
    })
}

pub const EVENT_COLUMNS: &str = "id, tenant_id, type, key, sequence, data, created_at";

pub fn event(row: &Row<'_>) -> StoreResult<Event> {
    let id: String = row.get(0)?;
    let tenant: Option<String> = row.get(1)?;
    let data: String = row.get(5)?;
    Ok(Event {
        id: parse_id(&id, EventId::parse)?,
        tenant: tenant
            .as_deref()
            .map(|t| parse_id(t, TenantId::parse))
            .transpose()?,
        event_type: row.get(2)?,
        key: row.get(3)?,
        sequence: row.get(4)?,
        data: serde_json::from_str(&data)?,
        created_at: Timestamp(row.get(6)?),
    })
}

pub const WEBHOOK_COLUMNS: &str = "id, tenant_id, url, events, format, secret, secret_version, \
     previous_secret, previous_secret_until, schedule, max_concurrency, disabled, disabled_reason, \
     description, created_at, updated_at";

pub fn webhook(row: &Row<'_>) -> StoreResult<Webhook> {
    let id: String = row.get(0)?;
    let tenant: Option<String> = row.get(1)?;
    let events: String = row.get(3)?;
    let events: Vec<String> = serde_json::from_str(&events)?;
    let format: String = row.get(4)?;
    let prev: Option<String> = row.get(7)?;
    let prev_until: Option<i64> = row.get(8)?;
    let schedule: Option<String> = row.get(9)?;
    let schedule = match schedule {
        Some(text) => {
            let ms: Vec<u64> = serde_json::from_str(&text)?;
            Some(
                RetrySchedule::new(ms.into_iter().map(Duration::from_millis).collect())
                    .map_err(|e| bad("webhook", e))?,
            )
        }
        None => None,
    };
    Ok(Webhook {
        id: parse_id(&id, WebhookId::parse)?,
        tenant: tenant
            .as_deref()
            .map(|t| parse_id(t, TenantId::parse))
            .transpose()?,
        url: row.get(2)?,
        events: events
            .iter()
            .map(|p| EventPattern::parse(p).map_err(|e| bad("webhook", e)))
            .collect::<StoreResult<_>>()?,
        format: SignatureFormat::parse(&format).ok_or_else(|| bad("webhook", &format))?,
        secret: row.get(5)?,
        secret_version: row.get(6)?,
        previous_secret: prev.zip(prev_until.map(Timestamp)),
        schedule,
        max_concurrency: row.get(10)?,
        disabled: row.get::<_, i64>(11)? != 0,
        disabled_reason: row.get(12)?,
        description: row.get(13)?,
        created_at: Timestamp(row.get(14)?),
        updated_at: Timestamp(row.get(15)?),
    })
}

pub fn schedule_json(s: &Option<RetrySchedule>) -> Option<String> {
    s.as_ref().map(|s| {
        let ms: Vec<u64> = s.waits().iter().map(|d| d.as_millis() as u64).collect();
        serde_json::to_string(&ms).unwrap_or_else(|_| "[]".into())
    })
}

pub fn patterns_json(p: &[EventPattern]) -> String {
    serde_json::to_string(&p.iter().map(|p| p.as_str()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

pub const DELIVERY_COLUMNS: &str =
    "id, event_id, webhook_id, tenant_id, event_type, status, attempts, \
     window_attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at, route, ordering_key";

pub fn delivery(row: &Row<'_>) -> StoreResult<Delivery> {
    let id: String = row.get(0)?;
    let event_id: String = row.get(1)?;
    let destination = destination_of(row.get(2)?, row.get(13)?)?;
    let tenant: Option<String> = row.get(3)?;
    let status: String = row.get(5)?;
    Ok(Delivery {
        id: parse_id(&id, DeliveryId::parse)?,
        event_id: parse_id(&event_id, EventId::parse)?,
        destination,
        ordering_key: row.get(14)?,
        tenant: tenant
            .as_deref()
            .map(|t| parse_id(t, TenantId::parse))
            .transpose()?,
        event_type: row.get(4)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| bad("delivery", &status))?,
        attempts: row.get(6)?,
        window_attempts: row.get(7)?,
        next_attempt_at: opt_ts(row.get(8)?),
        last_status_code: row.get(9)?,
        last_error: row.get(10)?,
        created_at: Timestamp(row.get(11)?),
        updated_at: Timestamp(row.get(12)?),
    })
}

pub const ATTEMPT_COLUMNS: &str =
    "id, delivery_id, at, status_code, latency_ms, error, response_excerpt";

pub fn attempt(row: &Row<'_>) -> StoreResult<Attempt> {
    let id: String = row.get(0)?;
    let delivery_id: String = row.get(1)?;
    Ok(Attempt {
        id: parse_id(&id, AttemptId::parse)?,
        delivery_id: parse_id(&delivery_id, DeliveryId::parse)?,
        at: Timestamp(row.get(2)?),
        status_code: row.get(3)?,
        latency_ms: row.get::<_, i64>(4)? as u64,
        error: row.get(5)?,
        response_excerpt: row.get(6)?,
    })
}

pub fn role_columns(role: &Role) -> (&'static str, Option<String>) {
    (role.name(), role.tenant().map(|t| t.to_string()))
}

pub fn role_from(name: &str, tenant: Option<String>) -> StoreResult<Role> {
    match (name, tenant) {
        ("admin", _) => Ok(Role::Admin),
        ("worker", _) => Ok(Role::Worker),
        ("tenant", Some(t)) => Ok(Role::Tenant(parse_id(&t, TenantId::parse)?)),
        (other, _) => Err(bad("api key", format!("role {other}"))),
    }
}
