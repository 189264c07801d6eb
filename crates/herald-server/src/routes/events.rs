//! `POST /events`: durable before the 202, deduped by `id` or `Idempotency-Key`,
//! numbered per (tenant, key). `GET /events`: the history, for consumers that reconcile.

use super::next_page_token;
use super::{list_params, Listing};
use crate::auth::Principal;
use crate::body::{idempotency_key, parse_json, read_body, request_hash};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::Json;
use herald_core::ids::{EventId, TenantId};
use herald_core::pattern::is_event_type;
use herald_store::{EventFilter, Idempotency, NewEvent, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEvent {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    tenant: Option<TenantId>,
    key: Option<String>,
    data: Value,
}

pub async fn ensure_tenant(state: &AppState, tenant: TenantId) -> ApiResult<()> {
    if state
        .known_tenants
        .read()
        .expect("tenants lock")
        .contains(&tenant)
    {
        return Ok(());
    }
    state.store.get_tenant(tenant).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::invalid(format!("Tenant {tenant} does not exist.")),
        other => other.into(),
    })?;
    state
        .known_tenants
        .write()
        .expect("tenants lock")
        .insert(tenant);
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_admin()?;
    let (parts, body) = request.into_parts();
    let idem_key = idempotency_key(&parts.headers)?;
    let _guard = idem_key
        .as_ref()
        .map(|k| {
            state.in_flight.enter(format!(
                "{} POST /events {k}",
                principal.idempotency_scope()
            ))
        })
        .transpose()?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let req: CreateEvent = parse_json(&bytes)?;
    if !is_event_type(&req.event_type) {
        return Err(ApiError::invalid(format!(
            "`type` {:?} is not an event type: use dot-separated words of letters, digits, `_` and `-`.",
            req.event_type
        )));
    }
    if herald_store::is_reserved_event_type(&req.event_type) {
        return Err(ApiError::invalid(format!(
            "`type` {:?} is one of Herald's own event types ({}): only Herald raises them.",
            req.event_type,
            herald_store::RESERVED_EVENT_TYPES.join(", ")
        )));
    }
    if let Some(key) = &req.key {
        if key.is_empty() || key.len() > 200 {
            return Err(ApiError::invalid("`key` must be 1 to 200 characters."));
        }
    }
    let id = match &req.id {
        Some(text) => EventId::parse(text).map_err(|e| ApiError::invalid(format!("`id`: {e}")))?,
        None => EventId::generate(),
    };
    if let Some(t) = req.tenant {
        ensure_tenant(&state, t).await?;
    }
    super::event_types::validate(&state, &req.event_type, &req.data)?;
    let hash = request_hash(&[
        req.event_type.as_bytes(),
        req.tenant
            .map(|t| t.to_string())
            .unwrap_or_default()
            .as_bytes(),
        req.key.as_deref().unwrap_or_default().as_bytes(),
        req.data.to_string().as_bytes(),
    ]);
    let idempotency = idem_key.map(|key| Idempotency {
        scope: format!("{} POST /events", principal.idempotency_scope()),
        key,
        request_hash: hash.clone(),
    });
    let event = NewEvent {
        id,
        tenant: req.tenant,
        event_type: req.event_type,
        key: req.key,
        data: req.data,
        created_at: state.clock.now(),
        request_hash: hash,
    };
    let stored = state
        .store
        .insert_event(event, idempotency)
        .await?
        .into_inner();
    let mut out = json!({ "id": stored.id });
    if let Some(seq) = stored.sequence {
        out["sequence"] = json!(seq);
    }
    Ok((StatusCode::ACCEPTED, Json(out)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    key: Option<String>,
    after: Option<String>,
    tenant: Option<TenantId>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

list_params!(ListQuery);

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Listing {
        query: q,
        size,
        tenant,
        token,
    } = Listing::read(&principal, query, EventId::parse)?;
    let after = match q.after.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(EventId::parse(t).map_err(|e| ApiError::invalid(format!("`after`: {e}")))?),
        None => None,
    };
    // The cursor is the last id of the previous page: it continues after that one.
    let after = after.max(token);
    let filter = EventFilter {
        tenant,
        event_type: q.event_type,
        key: q.key,
        after,
        limit: size + 1,
    };
    let mut events = state.store.list_events(filter).await?;
    let token = next_page_token(&mut events, size, |e| e.id.to_string());
    let events: Vec<Value> = events.iter().map(|e| e.to_resource()).collect();
    Ok(Json(json!({ "events": events, "next_page_token": token })))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    principal.require_reader()?;
    let id = EventId::parse(&id).map_err(|_| ApiError::not_found("The event"))?;
    let event = state
        .store
        .get_event(id)
        .await
        .map_err(|e| ApiError::from_store(e, "The event"))?;
    if !principal.can_see(event.tenant) {
        return Err(ApiError::not_found("The event"));
    }
    Ok(Json(event.to_resource()))
}
