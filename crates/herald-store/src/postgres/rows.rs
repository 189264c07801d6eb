//! Turning PostgreSQL rows into domain records; column lists match the SQLite backend's.

use crate::model::*;
pub use crate::sqlite::rows::role_from as role;
use crate::sqlite::rows::{bad, parse_id};
use crate::StoreResult;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::operation::{Operation, OperationError, OperationState, Outcome};
use herald_core::pattern::EventPattern;
use herald_core::retry::RetrySchedule;
use herald_core::signing::SignatureFormat;
use herald_core::Timestamp;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::Row;

pub use crate::sqlite::rows::{
    patterns_json, role_columns, schedule_json, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS,
    OPERATION_COLUMNS, WEBHOOK_COLUMNS,
};

fn tenant(text: Option<String>) -> StoreResult<Option<TenantId>> {
    text.as_deref()
        .map(|t| parse_id(t, TenantId::parse))
        .transpose()
}

fn u32_of(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

pub fn operation(row: &Row) -> StoreResult<Operation> {
    let id: String = row.try_get(0)?;
    let state: String = row.try_get(3)?;
    let metadata: String = row.try_get(4)?;
    let input: String = row.try_get(5)?;
    let response: Option<String> = row.try_get(6)?;
    let error_code: Option<String> = row.try_get(7)?;
    let error_message: Option<String> = row.try_get(8)?;
    let lease_token: Option<String> = row.try_get(11)?;
    let lease_expires_at: Option<i64> = row.try_get(12)?;
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
        tenant: tenant(row.try_get(1)?)?,
        op_type: row.try_get(2)?,
        metadata: match metadata {
            Value::Object(m) => m,
            _ => Default::default(),
        },
        input: serde_json::from_str(&input)?,
        state,
        attempt: u32_of(row.try_get(9)?),
        max_attempts: u32_of(row.try_get(10)?),
        cancel_requested: row.try_get(13)?,
        created_at: Timestamp(row.try_get(14)?),
        updated_at: Timestamp(row.try_get(15)?),
        deadline_at: row.try_get::<_, Option<i64>>(16)?.map(Timestamp),
    })
}

pub fn event(row: &Row) -> StoreResult<Event> {
    let id: String = row.try_get(0)?;
    let data: String = row.try_get(5)?;
    Ok(Event {
        id: parse_id(&id, EventId::parse)?,
        tenant: tenant(row.try_get(1)?)?,
        event_type: row.try_get(2)?,
        key: row.try_get(3)?,
        sequence: row.try_get(4)?,
        data: serde_json::from_str(&data)?,
        created_at: Timestamp(row.try_get(6)?),
    })
}

pub fn webhook(row: &Row) -> StoreResult<Webhook> {
    let id: String = row.try_get(0)?;
    let events: String = row.try_get(3)?;
    let events: Vec<String> = serde_json::from_str(&events)?;
    let format: String = row.try_get(4)?;
    let prev: Option<String> = row.try_get(7)?;
    let prev_until: Option<i64> = row.try_get(8)?;
    let schedule: Option<String> = row.try_get(9)?;
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
        tenant: tenant(row.try_get(1)?)?,
        url: row.try_get(2)?,
        events: events
            .iter()
            .map(|p| EventPattern::parse(p).map_err(|e| bad("webhook", e)))
            .collect::<StoreResult<_>>()?,
        format: SignatureFormat::parse(&format).ok_or_else(|| bad("webhook", &format))?,
        secret: row.try_get(5)?,
        secret_version: u32_of(row.try_get(6)?),
        previous_secret: prev.zip(prev_until.map(Timestamp)),
        schedule,
        max_concurrency: row.try_get::<_, Option<i64>>(10)?.map(u32_of),
        disabled: row.try_get(11)?,
        disabled_reason: row.try_get(12)?,
        description: row.try_get(13)?,
        created_at: Timestamp(row.try_get(14)?),
        updated_at: Timestamp(row.try_get(15)?),
    })
}

pub fn delivery(row: &Row) -> StoreResult<Delivery> {
    let id: String = row.try_get(0)?;
    let event_id: String = row.try_get(1)?;
    let destination = destination_of(row.try_get(2)?, row.try_get(13)?)?;
    let status: String = row.try_get(5)?;
    Ok(Delivery {
        id: parse_id(&id, DeliveryId::parse)?,
        event_id: parse_id(&event_id, EventId::parse)?,
        destination,
        ordering_key: row.try_get(14)?,
        tenant: tenant(row.try_get(3)?)?,
        event_type: row.try_get(4)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| bad("delivery", &status))?,
        attempts: u32_of(row.try_get(6)?),
        window_attempts: u32_of(row.try_get(7)?),
        next_attempt_at: row.try_get::<_, Option<i64>>(8)?.map(Timestamp),
        last_status_code: row
            .try_get::<_, Option<i64>>(9)?
            .map(|c| c.clamp(0, u16::MAX as i64) as u16),
        last_error: row.try_get(10)?,
        created_at: Timestamp(row.try_get(11)?),
        updated_at: Timestamp(row.try_get(12)?),
    })
}

pub fn attempt(row: &Row) -> StoreResult<Attempt> {
    let id: String = row.try_get(0)?;
    let delivery_id: String = row.try_get(1)?;
    Ok(Attempt {
        id: parse_id(&id, AttemptId::parse)?,
        delivery_id: parse_id(&delivery_id, DeliveryId::parse)?,
        at: Timestamp(row.try_get(2)?),
        status_code: row
            .try_get::<_, Option<i64>>(3)?
            .map(|c| c.clamp(0, u16::MAX as i64) as u16),
        latency_ms: row.try_get::<_, i64>(4)?.max(0) as u64,
        error: row.try_get(5)?,
        response_excerpt: row.try_get(6)?,
    })
}
