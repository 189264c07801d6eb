//! Long-running operations as clients see them: create (admin or a trigger route),
//! get with `Retry-After`, list, `:cancel`, `:wait` (a long poll woken by the change
//! itself) and delete. The worker side is in `workers.rs`.

use super::{list_params, Listing};
use super::{next_page_token, split_custom};
use crate::auth::Principal;
use crate::body::{idempotency_key, parse_json, parse_json_or_default, read_body, request_hash};
use crate::config::{request_duration, OperationType};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_core::auth::Role;
use herald_core::ids::{OperationId, TenantId};
use herald_core::operation::Operation;
use herald_store::{Created, Idempotency, NewOperation, OperationFilter};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Longest `:wait` accepted; a client wanting longer waits again.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn parse_operation_id(text: &str) -> ApiResult<OperationId> {
    OperationId::parse(text).map_err(|_| ApiError::not_found("The operation"))
}

/// The operation as `principal` may see it; another tenant's operation is "not found".
pub async fn visible_operation(
    state: &AppState,
    principal: &Principal,
    id: OperationId,
) -> ApiResult<Operation> {
    let op = state
        .store
        .get_operation(id)
        .await
        .map_err(|e| ApiError::from_store(e, "The operation"))?;
    if principal.role != Role::Worker && !principal.can_see(op.tenant) {
        return Err(ApiError::not_found("The operation"));
    }
    Ok(op)
}

fn op_type_or_422<'a>(state: &'a AppState, name: &str) -> ApiResult<&'a OperationType> {
    state
        .config
        .operation_type(name)
        .ok_or_else(|| unknown_operation_type(state, name, ""))
}

/// 422 for an operation type the config does not declare, naming those it does; `field`
/// (" in `types`", or "") says where the name was given.
pub fn unknown_operation_type(state: &AppState, name: &str, field: &str) -> ApiError {
    let known: Vec<&str> = state
        .config
        .operation_types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    ApiError::invalid(format!(
        "Unknown operation type {name:?}{field}; the types declared in config are: {}.",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

/// The operation resource, with `Retry-After` while it is not done.
pub fn operation_response(state: &AppState, status: StatusCode, op: &Operation) -> Response {
    let mut response = (status, Json(op.to_resource())).into_response();
    if !op.state.is_done() {
        let secs = state
            .config
            .operation_type(&op.op_type)
            .map(|t| t.retry_after.as_secs().max(1))
            .unwrap_or(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn accepted(state: &AppState, created: Created<Operation>) -> Response {
    let op = created.into_inner();
    let mut response = operation_response(state, StatusCode::ACCEPTED, &op);
    if let Ok(v) = HeaderValue::from_str(&format!("/operations/{}", op.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

struct CreateArgs {
    tenant: Option<TenantId>,
    op_type: String,
    metadata: Map<String, Value>,
    input: Value,
}

/// Shared by `POST /operations` and trigger routes: stores the operation (or finds the
/// one an identical earlier request made) and answers 202 with `Location`.
async fn create_operation(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    args: CreateArgs,
) -> ApiResult<Response> {
    let op_type = op_type_or_422(state, &args.op_type)?;
    if let Some(tenant) = args.tenant {
        if !state
            .known_tenants
            .read()
            .expect("tenants lock")
            .contains(&tenant)
        {
            state.store.get_tenant(tenant).await.map_err(|e| match e {
                herald_store::StoreError::NotFound => {
                    ApiError::invalid(format!("Tenant {tenant} does not exist."))
                }
                other => other.into(),
            })?;
            state
                .known_tenants
                .write()
                .expect("tenants lock")
                .insert(tenant);
        }
    }
    let now = state.clock.now();
    let idempotency = idempotency_key(headers)?.map(|key| Idempotency {
        scope: format!("{} {route}", principal.idempotency_scope()),
        key,
        request_hash: request_hash(&[body]),
    });
    let op = NewOperation {
        id: OperationId::generate(),
        tenant: args.tenant,
        op_type: op_type.name.clone(),
        metadata: args.metadata,
        input: args.input,
        max_attempts: op_type.max_attempts,
        deadline_at: op_type.deadline.map(|d| now.plus(d)),
        retention: op_type.retention,
        created_at: now,
    };
    let created = state.store.create_operation(op, idempotency).await?;
    Ok(accepted(state, created))
}

/// Marks an `Idempotency-Key` as in progress on this node for the life of the request.
fn guard_idempotency(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    route: &str,
) -> ApiResult<Option<crate::body::InFlightGuard>> {
    idempotency_key(headers)?
        .map(|key| {
            state
                .in_flight
                .enter(format!("{} {route} {key}", principal.idempotency_scope()))
        })
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOperation {
    #[serde(rename = "type")]
    op_type: String,
    #[serde(default)]
    tenant: Option<TenantId>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    input: Value,
}

/// `POST /operations` (admin).
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> ApiResult<Response> {
    principal.require_admin()?;
    let (parts, body) = request.into_parts();
    let _guard = guard_idempotency(&state, &principal, &parts.headers, "POST /operations")?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let req: CreateOperation = parse_json(&bytes)?;
    let args = CreateArgs {
        tenant: req.tenant,
        op_type: req.op_type,
        metadata: req.metadata,
        input: req.input,
    };
    create_operation(
        &state,
        &principal,
        &parts.headers,
        "POST /operations",
        &bytes,
        args,
    )
    .await
}

/// A trigger route declared in config (`trigger = "POST /videos"`): the body becomes the input.
pub async fn trigger(
    state: AppState,
    principal: Principal,
    op_type: String,
    request: Request,
) -> ApiResult<Response> {
    let tenant = match principal.role {
        Role::Tenant(t) => Some(t),
        Role::Admin => None,
        Role::Worker => {
            return Err(ApiError::forbidden(
                "Worker keys may only claim and finish operations.",
            ))
        }
    };
    let (parts, body) = request.into_parts();
    let route = format!("POST {}", parts.uri.path());
    let _guard = guard_idempotency(&state, &principal, &parts.headers, &route)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let input: Value = parse_json_or_default(&bytes)?;
    if !input.is_object() {
        return Err(ApiError::invalid("The request body must be a JSON object."));
    }
    let args = CreateArgs {
        tenant,
        op_type,
        metadata: Map::new(),
        input,
    };
    create_operation(&state, &principal, &parts.headers, &route, &bytes, args).await
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    principal.require_reader()?;
    let op = visible_operation(&state, &principal, parse_operation_id(&id)?).await?;
    Ok(operation_response(&state, StatusCode::OK, &op))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    op_type: Option<String>,
    done: Option<bool>,
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
        token: before,
    } = Listing::read(&principal, query, OperationId::parse)?;
    let filter = OperationFilter {
        tenant,
        op_type: q.op_type,
        done: q.done,
        before,
        limit: size + 1,
    };
    let mut ops = state.store.list_operations(filter).await?;
    let token = next_page_token(&mut ops, size, |o| o.id.to_string());
    let operations: Vec<Value> = ops.iter().map(Operation::to_resource).collect();
    Ok(Json(
        json!({ "operations": operations, "next_page_token": token }),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_reader()?;
    let op = visible_operation(&state, &principal, parse_operation_id(&id)?).await?;
    state
        .store
        .delete_operation(op.id, state.clock.now())
        .await
        .map_err(|e| ApiError::from_store(e, "The operation"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /operations/{id}:cancel | :wait | :heartbeat | :complete | :fail`.
pub async fn custom_method(
    State(state): State<AppState>,
    principal: Principal,
    Path(segment): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let (id, method) = split_custom(&segment);
    let id = parse_operation_id(id)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    match method {
        Some("cancel") => cancel(&state, &principal, id).await,
        Some("wait") => wait(&state, &principal, id, &bytes).await,
        Some("heartbeat") => super::workers::heartbeat(&state, &principal, id, &bytes).await,
        Some("complete") => super::workers::complete(&state, &principal, id, &bytes).await,
        Some("fail") => super::workers::fail(&state, &principal, id, &bytes).await,
        _ => Err(ApiError::not_found("No such operation method")),
    }
}

async fn cancel(state: &AppState, principal: &Principal, id: OperationId) -> ApiResult<Response> {
    principal.require_reader()?;
    visible_operation(state, principal, id).await?;
    let op = state
        .store
        .cancel_operation(id, state.clock.now())
        .await
        .map_err(|e| ApiError::from_store(e, "The operation"))?;
    Ok(operation_response(state, StatusCode::OK, &op))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WaitRequest {
    timeout: Option<String>,
}

async fn wait(
    state: &AppState,
    principal: &Principal,
    id: OperationId,
    body: &[u8],
) -> ApiResult<Response> {
    principal.require_reader()?;
    let req: WaitRequest = parse_json_or_default(body)?;
    let timeout = match req.timeout {
        Some(t) => request_duration("timeout", &t)
            .map_err(ApiError::invalid)?
            .min(MAX_WAIT),
        None => Duration::from_secs(30),
    };
    // Subscribe before the first read so a change between the read and the wait is not missed.
    let mut changes = state.store.signals().operation_changed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let op = visible_operation(state, principal, id).await?;
        if op.state.is_done() {
            return Ok(operation_response(state, StatusCode::OK, &op));
        }
        // Wait for this operation to change (or for the timeout, or shutdown).
        let changed = loop {
            tokio::select! {
                r = changes.recv() => match r {
                    Ok(changed) if changed == id => break true,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => break true,
                    Err(RecvError::Closed) => break false,
                },
                _ = tokio::time::sleep_until(deadline) => break false,
                _ = state.shutdown.cancelled() => break false,
            }
        };
        if !changed {
            let op = visible_operation(state, principal, id).await?;
            return Ok(operation_response(state, StatusCode::OK, &op));
        }
    }
}
