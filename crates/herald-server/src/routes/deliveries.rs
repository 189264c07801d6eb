//! The delivery log: list (filters webhook, status, event type, time), one delivery
//! with every attempt, `:redeliver` (same event, same event id) and `:skip` (give one up;
//! on an ordered webhook, release the deliveries of its key it held back).

use super::{list_params, Listing};
use super::{next_page_token, split_custom};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use herald_core::auth::Role;
use herald_core::ids::{DeliveryId, TenantId, WebhookId};
use herald_core::Timestamp;
use herald_store::{Attempt, Delivery, DeliveryFilter, DeliveryStatus, Destination};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn delivery_json(d: &Delivery) -> Value {
    let mut out = json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "webhook_id": d.destination.webhook(),
        "tenant": d.tenant,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(|t| t.to_rfc3339()),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": d.created_at.to_rfc3339(),
        "updated_at": d.updated_at.to_rfc3339(),
    });
    match &d.destination {
        Destination::Route(route) => {
            out["route"] = json!(route);
            out["key"] = json!(d.ordering_key);
        }
        // An ordered webhook's delivery: its line (key), place in it, and who holds it back.
        Destination::Webhook(_) if d.ordering_key.is_some() => {
            out["key"] = json!(d.ordering_key);
            out["sequence"] = json!(d.sequence);
            out["held_by"] = json!(d.held_by);
        }
        Destination::Webhook(_) => {}
    }
    out
}

/// A broker delivery also names its broker and topic, from the config in force.
fn with_broker(state: &AppState, d: &Delivery) -> Value {
    let mut out = delivery_json(d);
    if let Some(route) = d.destination.route().and_then(|r| state.config.route(r)) {
        out["broker"] = json!(route.broker.as_str());
        out["topic"] = json!(route.topic);
    }
    out
}

fn attempt_json(a: &Attempt) -> Value {
    json!({
        "id": a.id,
        "at": a.at.to_rfc3339(),
        "status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "error": a.error,
        "response_excerpt": a.response_excerpt,
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    webhook: Option<String>,
    route: Option<String>,
    status: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    tenant: Option<TenantId>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

list_params!(ListQuery);

fn time_param(field: &str, v: Option<&str>) -> ApiResult<Option<Timestamp>> {
    v.map(|t| {
        Timestamp::parse_rfc3339(t)
            .ok_or_else(|| ApiError::invalid(format!("`{field}` must be an RFC 3339 time.")))
    })
    .transpose()
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Listing {
        query: q,
        size,
        tenant,
        token: before,
    } = Listing::read(&principal, query, DeliveryId::parse)?;
    // Broker routes are the API owner's plumbing: tenant keys see webhook deliveries only.
    let tenant_view = matches!(principal.role, Role::Tenant(_));
    let webhook = q
        .webhook
        .as_deref()
        .map(|w| WebhookId::parse(w).map_err(|e| ApiError::invalid(format!("`webhook`: {e}"))))
        .transpose()?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::invalid("`status` must be pending, succeeded, failed or skipped.")
            })
        })
        .transpose()?;
    // A session limited to some event types lists deliveries of its types (and its
    // endpoints' test events) to the endpoints it sees, filtered in the store, so neither a
    // page nor its `next_page_token` names anything beyond them.
    let (webhooks_in, event_types_in) = match principal.event_types.as_deref() {
        Some(allowed) => {
            let visible = super::portal::visible_webhooks(&state, tenant, allowed).await?;
            (
                Some(visible.into_iter().collect()),
                Some(super::portal::patterns_with_tests(allowed)?),
            )
        }
        None => (None, None),
    };
    let filter = DeliveryFilter {
        tenant,
        webhook,
        webhooks_in,
        event_types_in,
        event_types_out: None,
        route: q.route,
        webhooks_only: tenant_view,
        status,
        event_type: q.event_type,
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        before,
        limit: size + 1,
    };
    let mut deliveries = state.store.list_deliveries(filter).await?;
    let token = next_page_token(&mut deliveries, size, |d| d.id.to_string());
    Ok(Json(
        json!({ "deliveries": deliveries.iter().map(|d| with_broker(&state, d)).collect::<Vec<_>>(), "next_page_token": token }),
    ))
}

async fn visible_delivery(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<(Delivery, Vec<Attempt>)> {
    principal.require_reader()?;
    let id = DeliveryId::parse(id).map_err(|_| ApiError::not_found("The delivery"))?;
    let (d, attempts) = state
        .store
        .get_delivery(id)
        .await
        .map_err(|e| ApiError::from_store(e, "The delivery"))?;
    let tenant_view = matches!(principal.role, Role::Tenant(_));
    if !principal.can_see(d.tenant) || (tenant_view && d.destination.route().is_some()) {
        return Err(ApiError::not_found("The delivery"));
    }
    if principal.event_types.is_some() {
        // A session limited to some event types: a delivery of its types to an endpoint it sees.
        let visible = match d.destination.webhook() {
            Some(w) => match state.store.get_webhook(w).await {
                Ok(w) => principal.sees_webhook(&w),
                Err(herald_store::StoreError::NotFound) => false,
                Err(e) => return Err(e.into()),
            },
            None => false,
        };
        if !visible || !principal.sees_event_type(&d.event_type) {
            return Err(ApiError::not_found("The delivery"));
        }
    }
    Ok((d, attempts))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (d, attempts) = visible_delivery(&state, &principal, &id).await?;
    let mut out = with_broker(&state, &d);
    out["attempt_log"] = json!(attempts.iter().map(attempt_json).collect::<Vec<_>>());
    Ok(Json(out))
}

/// `POST /deliveries/{id}:redeliver` and `POST /deliveries/{id}:skip`.
pub async fn custom_method(
    State(state): State<AppState>,
    principal: Principal,
    Path(segment): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (id, method) = split_custom(&segment);
    let skip = match method {
        Some("redeliver") => false,
        Some("skip") => true,
        _ => return Err(ApiError::not_found("No such delivery method")),
    };
    let (d, _) = visible_delivery(&state, &principal, id).await?;
    let now = state.clock.now();
    if skip {
        let d = state
            .store
            .skip_delivery(d.id, now)
            .await
            .map_err(|e| ApiError::from_store(e, "The delivery"))?;
        return Ok((StatusCode::OK, Json(with_broker(&state, &d))));
    }
    let d = state
        .store
        .redeliver(d.id, now)
        .await
        .map_err(|e| ApiError::from_store(e, "The delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(with_broker(&state, &d))))
}
