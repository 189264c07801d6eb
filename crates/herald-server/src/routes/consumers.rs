//! Consumers: a named reader of a tenant's feed whose acknowledged cursor Herald keeps,
//! so a restarted reader resumes after its last ack (at-least-once: what it read but
//! did not ack comes again, nothing at or before the ack ever does).

use super::feed::{feed_tenant, long_poll, page_json, parse_cursor, parse_types, parse_wait};
use super::split_custom;
use crate::auth::Principal;
use crate::body::{page_size, parse_json, read_body};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use herald_core::auth::Role;
use herald_core::ids::TenantId;
use herald_store::{Acked, Consumer, ConsumerStart, FeedQuery, NewConsumer, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

/// `listen-laptop`, `billing.sync`: 1 to 100 of letters, digits, `_`, `-` and `.`
/// (never `:`, which starts a custom method in the path).
fn check_name(name: &str) -> ApiResult<()> {
    // Not `.` or `..`: URL libraries collapse them (`/consumers/../events` is `/events`).
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "`name` must be 1 to 100 letters, digits, `_`, `-` or `.` (and not `.` or `..`).",
        ))
    }
}

fn consumer_json(c: &Consumer) -> Value {
    let types: Vec<&str> = c.types.iter().map(|p| p.as_str()).collect();
    let mut out = json!({
        "name": c.name,
        "types": types,
        "cursor": c.acked.cursor(),
        "created_at": c.created_at.to_rfc3339(),
        "updated_at": c.updated_at.to_rfc3339(),
    });
    if let Some(t) = c.tenant {
        out["tenant"] = json!(t);
    }
    out
}

fn not_found() -> ApiError {
    ApiError::not_found("The consumer")
}

/// A path segment naming a consumer: malformed is simply not found.
fn path_name(segment: &str) -> ApiResult<String> {
    check_name(segment).map_err(|_| not_found())?;
    Ok(segment.to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConsumer {
    name: String,
    #[serde(default)]
    types: Vec<String>,
    start: Option<String>,
    tenant: Option<TenantId>,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_reader()?;
    let req: CreateConsumer = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    let tenant = match principal.role {
        Role::Tenant(t) => {
            if req.tenant.is_some_and(|r| r != t) {
                return Err(ApiError::invalid(
                    "A tenant key makes consumers of its own tenant only; leave out `tenant`.",
                ));
            }
            Some(t)
        }
        _ => req.tenant,
    };
    check_name(&req.name)?;
    let types = parse_types(Some(&req.types.join(",")))?;
    let start = match req.start.as_deref().unwrap_or("earliest") {
        "earliest" => ConsumerStart::Earliest,
        "latest" => ConsumerStart::Latest,
        other => {
            return Err(ApiError::invalid(format!(
                "`start` must be \"earliest\" or \"latest\", not {other:?}."
            )))
        }
    };
    if let Some(t) = tenant {
        super::events::ensure_tenant(&state, t).await?;
    }
    let cap = state.config.feed.max_consumers_per_tenant;
    let new = NewConsumer {
        tenant,
        name: req.name.clone(),
        types,
        start,
        created_at: state.clock.now(),
    };
    let consumer = match state.store.create_consumer(new, cap).await {
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError::conflict(
                "ALREADY_EXISTS",
                format!("A consumer named {:?} exists already; nothing was created.", req.name),
            ))
        }
        Err(StoreError::LimitReached) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "LIMIT_REACHED",
                format!(
                    "This tenant already has {cap} consumers, the most `feed.max_consumers_per_tenant` allows; delete one first. Nothing was created."
                ),
            ))
        }
        other => other?,
    };
    Ok((StatusCode::CREATED, Json(consumer_json(&consumer))))
}

#[derive(Deserialize)]
pub struct TenantParam {
    tenant: Option<TenantId>,
}

fn tenant_of(
    principal: &Principal,
    query: Result<Query<TenantParam>, QueryRejection>,
) -> ApiResult<Option<TenantId>> {
    let Query(q) =
        query.map_err(|e| ApiError::invalid(format!("Bad query string: {}", e.body_text())))?;
    feed_tenant(principal, q.tenant)
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<TenantParam>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_of(&principal, query)?;
    let consumers = state.store.list_consumers(tenant).await?;
    let consumers: Vec<Value> = consumers.iter().map(consumer_json).collect();
    // A tenant has at most `feed.max_consumers_per_tenant`: one page holds them all.
    Ok(Json(
        json!({ "consumers": consumers, "next_page_token": "" }),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    query: Result<Query<TenantParam>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_of(&principal, query)?;
    let c = state
        .store
        .get_consumer(tenant, path_name(&name)?)
        .await
        .map_err(|e| ApiError::from_store(e, "The consumer"))?;
    Ok(Json(consumer_json(&c)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    query: Result<Query<TenantParam>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let tenant = tenant_of(&principal, query)?;
    state
        .store
        .delete_consumer(tenant, path_name(&name)?)
        .await
        .map_err(|e| ApiError::from_store(e, "The consumer"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct EventsParams {
    wait: Option<String>,
    page_size: Option<u32>,
    tenant: Option<TenantId>,
}

/// `GET /consumers/{name}/events`: the events after the acknowledged cursor, with the
/// consumer's `types`; a long poll like `GET /feed`.
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    query: Result<Query<EventsParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    principal.require_reader()?;
    let Query(q) =
        query.map_err(|e| ApiError::invalid(format!("Bad query string: {}", e.body_text())))?;
    let tenant = feed_tenant(&principal, q.tenant)?;
    let name = path_name(&name)?;
    let wait = parse_wait(q.wait.as_deref())?;
    let limit = page_size(q.page_size)?;
    let c = state
        .store
        .get_consumer(tenant, name.clone())
        .await
        .map_err(|e| ApiError::from_store(e, "The consumer"))?;
    let query = FeedQuery {
        tenant,
        after: c.acked,
        types: c.types.clone(),
        limit,
    };
    let page = long_poll(&state, query, wait).await?;
    let next = page.next(c.acked);
    if next > c.acked {
        // Before the answer: an ack of the `next_cursor` this read hands out (past what it
        // looked at, even with no event matching) is then always valid.
        state
            .store
            .consumer_delivered(tenant, name, next, state.clock.now())
            .await
            .map_err(|e| ApiError::from_store(e, "The consumer"))?;
    }
    Ok(Json(page_json(&page, c.acked)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    cursor: String,
}

/// `POST /consumers/{name}:ack`.
pub async fn custom_method(
    State(state): State<AppState>,
    principal: Principal,
    Path(segment): Path<String>,
    query: Result<Query<TenantParam>, QueryRejection>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_of(&principal, query)?;
    let (name, method) = split_custom(&segment);
    match method {
        Some("ack") => {}
        _ => return Err(ApiError::not_found("No such route")),
    }
    let name = path_name(name)?;
    let req: AckBody = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    let cursor = parse_cursor("cursor", Some(&req.cursor))?;
    let acked = state
        .store
        .ack_consumer(tenant, name, cursor, state.clock.now())
        .await
        .map_err(|e| match e {
            StoreError::CursorNotDelivered => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "CURSOR_NOT_DELIVERED",
                "This cursor is past everything this consumer has been handed; ack a `next_cursor` its reads answered. Nothing was changed.",
            ),
            other => ApiError::from_store(other, "The consumer"),
        })?;
    let (Acked::Moved(c) | Acked::Unchanged(c)) = acked;
    Ok(Json(consumer_json(&c)))
}
