//! Turning rows into domain records, once for both backends: the column lists, and
//! decoders written against [`RowAccess`], the few typed reads a row gives (each backend
//! implements it for its own row type).

use crate::filter::Arg;
use crate::model::*;
use crate::{StoreError, StoreResult};
use herald_core::auth::Role;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::operation::{Operation, OperationError, OperationState, Outcome};
use herald_core::pattern::EventPattern;
use herald_core::payload_filter::PayloadFilter;
use herald_core::retry::RetrySchedule;
use herald_core::signing::SignatureFormat;
use herald_core::webhook::{CustomHeaders, DeliveryOptions, Ordering};
use herald_core::Timestamp;
use serde_json::Value;
use std::time::Duration;

/// The typed reads the decoders need: text, integers (64-bit in both backends) and flags
/// (an integer in SQLite, a boolean in PostgreSQL), by column index.
pub trait RowAccess {
    fn text(&self, i: usize) -> StoreResult<String>;
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>>;
    fn int(&self, i: usize) -> StoreResult<i64>;
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>>;
    fn flag(&self, i: usize) -> StoreResult<bool>;
}

pub fn bad(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what} row: {detail}"))
}

pub fn parse_id<T>(text: &str, parse: fn(&str) -> Result<T, IdError>) -> StoreResult<T> {
    parse(text).map_err(|e| bad("id", e))
}

fn tenant(text: Option<String>) -> StoreResult<Option<TenantId>> {
    text.as_deref()
        .map(|t| parse_id(t, TenantId::parse))
        .transpose()
}

fn u32_of(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

fn u16_of(v: i64) -> u16 {
    v.clamp(0, u16::MAX as i64) as u16
}

pub const OPERATION_COLUMNS: &str =
    "id, tenant_id, type, state, metadata, input, response, error_code, \
     error_message, attempt, max_attempts, lease_token, lease_expires_at, cancel_requested, \
     created_at, updated_at, deadline_at";

pub fn operation(row: &(impl RowAccess + ?Sized)) -> StoreResult<Operation> {
    let id = row.text(0)?;
    let state = row.text(3)?;
    let metadata = row.text(4)?;
    let input = row.text(5)?;
    let response = row.opt_text(6)?;
    let error_code = row.opt_text(7)?;
    let error_message = row.opt_text(8)?;
    let lease_token = row.opt_text(11)?;
    let lease_expires_at = row.opt_int(12)?;
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
        tenant: tenant(row.opt_text(1)?)?,
        op_type: row.text(2)?,
        metadata: match metadata {
            Value::Object(m) => m,
            _ => Default::default(),
        },
        input: serde_json::from_str(&input)?,
        state,
        attempt: u32_of(row.int(9)?),
        max_attempts: u32_of(row.int(10)?),
        cancel_requested: row.flag(13)?,
        created_at: Timestamp(row.int(14)?),
        updated_at: Timestamp(row.int(15)?),
        deadline_at: row.opt_int(16)?.map(Timestamp),
    })
}

pub const EVENT_COLUMNS: &str = "id, tenant_id, type, key, sequence, data, created_at";

pub fn event(row: &(impl RowAccess + ?Sized)) -> StoreResult<Event> {
    let id = row.text(0)?;
    let data = row.text(5)?;
    Ok(Event {
        id: parse_id(&id, EventId::parse)?,
        tenant: tenant(row.opt_text(1)?)?,
        event_type: row.text(2)?,
        key: row.opt_text(3)?,
        sequence: row.opt_int(4)?,
        data: serde_json::from_str(&data)?,
        created_at: Timestamp(row.int(6)?),
    })
}

pub const WEBHOOK_COLUMNS: &str = "id, tenant_id, url, events, format, secret, secret_version, \
     previous_secret, previous_secret_until, schedule, max_concurrency, disabled, disabled_reason, \
     description, created_at, updated_at, ordering, headers, filter, rate_limit";

pub fn webhook(row: &(impl RowAccess + ?Sized)) -> StoreResult<Webhook> {
    let id = row.text(0)?;
    let events: Vec<String> = serde_json::from_str(&row.text(3)?)?;
    let format = row.text(4)?;
    let prev = row.opt_text(7)?;
    let prev_until = row.opt_int(8)?;
    let schedule = match row.opt_text(9)? {
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
        tenant: tenant(row.opt_text(1)?)?,
        url: row.text(2)?,
        events: events
            .iter()
            .map(|p| EventPattern::parse(p).map_err(|e| bad("webhook", e)))
            .collect::<StoreResult<_>>()?,
        format: SignatureFormat::parse(&format).ok_or_else(|| bad("webhook", &format))?,
        secret: row.text(5)?,
        secret_version: u32_of(row.int(6)?),
        previous_secret: prev.zip(prev_until.map(Timestamp)),
        schedule,
        max_concurrency: row.opt_int(10)?.map(u32_of),
        disabled: row.flag(11)?,
        disabled_reason: row.opt_text(12)?,
        description: row.opt_text(13)?,
        created_at: Timestamp(row.int(14)?),
        updated_at: Timestamp(row.int(15)?),
        ordering: ordering_of(row.opt_text(16)?)?,
        options: DeliveryOptions {
            headers: headers_of(row.opt_text(17)?)?,
            filter: filter_of(row.opt_text(18)?)?,
            rate_limit: row.opt_int(19)?.map(u32_of),
        },
    })
}

/// A webhook's stored `headers` (a JSON object of name → value; NULL: none).
fn headers_of(stored: Option<String>) -> StoreResult<CustomHeaders> {
    let Some(text) = stored else {
        return Ok(CustomHeaders::default());
    };
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text)?;
    Ok(CustomHeaders::from_stored(map.iter().map(|(k, v)| {
        (k.as_str(), v.as_str().unwrap_or_default())
    })))
}

/// A webhook's stored `filter` (its JSON as registered; NULL: none).
pub fn filter_of(stored: Option<String>) -> StoreResult<Option<PayloadFilter>> {
    stored
        .map(|text| {
            let v: Value = serde_json::from_str(&text)?;
            PayloadFilter::from_stored(&v).map_err(|e| bad("webhook", e))
        })
        .transpose()
}

/// A webhook's [`DeliveryOptions`] as stored: the columns `headers`, `filter`, `rate_limit`.
pub fn options_args(o: &DeliveryOptions) -> [Arg; 3] {
    let headers = (!o.headers.is_empty()).then(|| {
        Value::Object(
            o.headers
                .iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .collect(),
        )
        .to_string()
    });
    [
        Arg::opt_text(headers),
        Arg::opt_text(o.filter.as_ref().map(|f| f.as_json().to_string())),
        Arg::OptInt(o.rate_limit.map(i64::from)),
    ]
}

/// A webhook's stored `ordering` (NULL: none).
fn ordering_of(stored: Option<String>) -> StoreResult<Ordering> {
    match stored {
        None => Ok(Ordering::None),
        Some(text) => Ordering::parse(&text).ok_or_else(|| bad("webhook", &text)),
    }
}

/// A webhook's `ordering` as stored: NULL for none, so rows from before it read the same.
pub fn ordering_arg(o: Ordering) -> Arg {
    match o {
        Ordering::None => Arg::Null,
        Ordering::Key => Arg::text(o.as_str()),
    }
}

/// A duration as the stored milliseconds.
pub fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Lease tokens only need to be unique and hard to guess; a ULID carries 80 random bits.
pub fn lease_token() -> String {
    format!("lt_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A webhook's settings as the store keeps them: the columns `url` to `description` of
/// [`WEBHOOK_COLUMNS`], in that order, the same for its insert and every update.
pub fn webhook_settings(wh: &Webhook) -> Vec<Arg> {
    vec![
        Arg::text(&wh.url),
        Arg::Text(patterns_json(&wh.events)),
        Arg::text(wh.format.as_str()),
        Arg::text(&wh.secret),
        Arg::Int(i64::from(wh.secret_version)),
        Arg::opt_text(wh.previous_secret.as_ref().map(|p| &p.0)),
        Arg::OptInt(wh.previous_secret.as_ref().map(|p| p.1 .0)),
        Arg::opt_text(schedule_json(&wh.schedule)),
        Arg::OptInt(wh.max_concurrency.map(i64::from)),
        Arg::Bool(wh.disabled),
        Arg::opt_text(wh.disabled_reason.as_ref()),
        Arg::opt_text(wh.description.as_ref()),
    ]
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
     window_attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at, route, ordering_key, \
     sequence";

pub fn delivery(row: &(impl RowAccess + ?Sized)) -> StoreResult<Delivery> {
    let id = row.text(0)?;
    let event_id = row.text(1)?;
    let destination = destination_of(row.opt_text(2)?, row.opt_text(13)?)?;
    let status = row.text(5)?;
    Ok(Delivery {
        id: parse_id(&id, DeliveryId::parse)?,
        event_id: parse_id(&event_id, EventId::parse)?,
        destination,
        ordering_key: row.opt_text(14)?,
        sequence: row.opt_int(15)?,
        held_by: None,
        tenant: tenant(row.opt_text(3)?)?,
        event_type: row.text(4)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| bad("delivery", &status))?,
        attempts: u32_of(row.int(6)?),
        window_attempts: u32_of(row.int(7)?),
        next_attempt_at: row.opt_int(8)?.map(Timestamp),
        last_status_code: row.opt_int(9)?.map(u16_of),
        last_error: row.opt_text(10)?,
        created_at: Timestamp(row.int(11)?),
        updated_at: Timestamp(row.int(12)?),
    })
}

pub const ATTEMPT_COLUMNS: &str =
    "id, delivery_id, at, status_code, latency_ms, error, response_excerpt";

pub fn attempt(row: &(impl RowAccess + ?Sized)) -> StoreResult<Attempt> {
    let id = row.text(0)?;
    let delivery_id = row.text(1)?;
    Ok(Attempt {
        id: parse_id(&id, AttemptId::parse)?,
        delivery_id: parse_id(&delivery_id, DeliveryId::parse)?,
        at: Timestamp(row.int(2)?),
        status_code: row.opt_int(3)?.map(u16_of),
        latency_ms: row.int(4)?.max(0) as u64,
        error: row.opt_text(5)?,
        response_excerpt: row.opt_text(6)?,
    })
}

/// The columns of the dashboard's attempt samples.
pub const ATTEMPT_SAMPLE_COLUMNS: &str =
    "d.webhook_id, d.route, a.at, a.status_code, a.latency_ms, a.error";

pub fn attempt_sample(row: &(impl RowAccess + ?Sized)) -> StoreResult<AttemptSample> {
    Ok(AttemptSample {
        destination: destination_of(row.opt_text(0)?, row.opt_text(1)?)?,
        at: Timestamp(row.int(2)?),
        status_code: row.opt_int(3)?.map(|c| c as u16),
        latency_ms: row.int(4)?.max(0) as u64,
        error: row.opt_text(5)?,
    })
}

/// `created_at, status, updated_at` of a delivery.
pub fn delivery_span(row: &(impl RowAccess + ?Sized)) -> StoreResult<DeliverySpan> {
    let status = row.text(1)?;
    Ok(DeliverySpan {
        created_at: Timestamp(row.int(0)?),
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Backend(format!("bad delivery status {status:?}")))?,
        updated_at: Timestamp(row.int(2)?),
    })
}

/// A `GROUP BY` count: the group's name and its count.
pub fn count(row: &(impl RowAccess + ?Sized)) -> StoreResult<(String, u64)> {
    Ok((row.text(0)?, row.int(1)?.max(0) as u64))
}

/// `name, schema` of an event type.
pub fn event_type(row: &(impl RowAccess + ?Sized)) -> StoreResult<EventType> {
    Ok(EventType {
        name: row.text(0)?,
        schema: serde_json::from_str(&row.text(1)?)?,
    })
}

/// The columns [`api_key`] reads, after `id`.
pub const KEY_COLUMNS: &str =
    "hash, role, tenant_id, created_at, revoked_at, scope_types, scope_tenants";

pub fn api_key(id: KeyId, row: &(impl RowAccess + ?Sized)) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id,
        hash: row.text(0)?,
        role: role_from(&row.text(1)?, row.opt_text(2)?)?,
        created_at: Timestamp(row.int(3)?),
        revoked: row.opt_int(4)?.is_some(),
        scope: WorkerScope::from_columns(row.opt_text(5)?, row.opt_text(6)?)?,
    })
}

/// `name, created_at` of a tenant.
pub fn tenant_row(id: TenantId, row: &(impl RowAccess + ?Sized)) -> StoreResult<Tenant> {
    Ok(Tenant {
        id,
        name: row.text(0)?,
        created_at: Timestamp(row.int(1)?),
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

pub const PORTAL_SESSION_COLUMNS: &str = "id, tenant_id, token_hash, cookie_hash, csrf_token, \
     read_only, event_types, expires_at, created_at, exchanged_at, revoked";

pub fn portal_session(row: &(impl RowAccess + ?Sized)) -> StoreResult<PortalSession> {
    Ok(PortalSession {
        id: parse_id(&row.text(0)?, PortalSessionId::parse)?,
        tenant: parse_id(&row.text(1)?, TenantId::parse)?,
        token_hash: row.text(2)?,
        cookie_hash: row.opt_text(3)?,
        csrf_token: row.text(4)?,
        read_only: row.flag(5)?,
        event_types: row
            .opt_text(6)?
            .map(|t| serde_json::from_str(&t))
            .transpose()?,
        expires_at: Timestamp(row.int(7)?),
        created_at: Timestamp(row.int(8)?),
        exchanged_at: row.opt_int(9)?.map(Timestamp),
        revoked: row.flag(10)?,
    })
}

/// A portal session's columns in [`PORTAL_SESSION_COLUMNS`] order.
pub fn portal_session_args(p: &PortalSession) -> Vec<Arg> {
    vec![
        Arg::text(p.id),
        Arg::text(p.tenant),
        Arg::text(&p.token_hash),
        Arg::opt_text(p.cookie_hash.as_ref()),
        Arg::text(&p.csrf_token),
        Arg::Bool(p.read_only),
        Arg::opt_text(
            p.event_types
                .as_ref()
                .map(|t| Value::from(t.clone()).to_string()),
        ),
        Arg::Int(p.expires_at.0),
        Arg::Int(p.created_at.0),
        Arg::OptInt(p.exchanged_at.map(|t| t.0)),
        Arg::Bool(p.revoked),
    ]
}

/// Portal settings from their stored columns (`frame_origins`, `branding`: JSON).
pub fn portal_settings(frame_origins: &str, branding: &str) -> StoreResult<PortalSettings> {
    Ok(PortalSettings {
        frame_origins: serde_json::from_str(frame_origins)?,
        branding: serde_json::from_str(branding)?,
    })
}
