//! The worker protocol: `:claim` (a long poll), `:heartbeat`, `:complete`, `:fail`.
//! A worker holds an operation only through its lease token; a stale token gets 409.
//! It sees the operation whether or not the client deleted it (DELETE does not cancel).
//! A worker key scoped to types and tenants claims only its scope's operations and gets
//! 404 for any other, as if it did not exist.

use crate::auth::Principal;
use crate::body::{parse_json, parse_json_or_default, read_body};
use crate::config::request_duration;
use crate::error::{ApiError, ApiResult};
use crate::routes::operations::operation_response;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_core::ids::OperationId;
use herald_core::operation::{Operation, OperationError, OperationState};
use herald_store::{ClaimRequest, Finish, FinishAs, Heartbeat};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Longest claim long poll accepted.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);
/// The leases a worker may ask for, on `:claim` and on `:heartbeat`.
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = Duration::from_secs(3600);

/// A `lease` the worker asked for: a duration from 1s to 1h.
fn parse_lease(text: &str) -> ApiResult<Duration> {
    let lease = request_duration("lease", text).map_err(ApiError::invalid)?;
    if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
        return Err(ApiError::invalid("`lease` must be between 1s and 1h."));
    }
    Ok(lease)
}

/// `"a", "b"`: names for an error message.
fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| format!("{:?}", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operation `id` as the worker protocol sees it (whether or not the client deleted
/// it). A scoped worker key gets 404 for an operation outside its scope, as if it did not
/// exist.
async fn held_operation(
    state: &AppState,
    principal: &Principal,
    id: OperationId,
) -> ApiResult<Operation> {
    let op = state
        .store
        .get_operation_for_worker(id)
        .await
        .map_err(|e| ApiError::from_store(e, "The operation"))?;
    if !principal.scope.allows(&op.op_type, op.tenant) {
        return Err(ApiError::not_found("The operation"));
    }
    Ok(op)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    #[serde(default)]
    types: Vec<String>,
    lease: Option<String>,
    max: Option<u32>,
    wait: Option<String>,
}

pub async fn claim(
    State(state): State<AppState>,
    principal: Principal,
    body: Body,
) -> ApiResult<Json<Value>> {
    principal.require_worker()?;
    let req: ClaimBody =
        parse_json_or_default(&read_body(body, state.config.max_body_bytes).await?)?;
    let scope = &principal.scope;
    // No types named means every declared type (of the key's scope, for a scoped key).
    let types: Vec<String> = if req.types.is_empty() {
        state
            .config
            .operation_types
            .iter()
            .filter(|t| scope.allows_type(&t.name))
            .map(|t| t.name.clone())
            .collect()
    } else {
        for t in &req.types {
            if state.config.operation_type(t).is_none() {
                return Err(ApiError::invalid(format!("Unknown operation type {t:?}.")));
            }
        }
        // Naming a type outside the key's scope is a mistake worth hearing about (a worker
        // that silently never gets that work would be worse), so it is refused, not ignored.
        let outside: Vec<&str> = req
            .types
            .iter()
            .filter(|t| !scope.allows_type(t))
            .map(String::as_str)
            .collect();
        if !outside.is_empty() {
            return Err(ApiError::forbidden(format!(
                "This worker key may claim only operations of type {}; {} {} outside its scope.",
                quoted(scope.types.as_deref().unwrap_or_default()),
                quoted(&outside),
                if outside.len() == 1 { "is" } else { "are" },
            )));
        }
        req.types.clone()
    };
    let lease = req.lease.as_deref().map(parse_lease).transpose()?;
    let max = req.max.unwrap_or(1);
    if !(1..=100).contains(&max) {
        return Err(ApiError::invalid("`max` must be between 1 and 100."));
    }
    let wait = match &req.wait {
        Some(w) => request_duration("wait", w)
            .map_err(ApiError::invalid)?
            .min(MAX_CLAIM_WAIT),
        None => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register for the wake-up before looking, so an operation queued in between is not missed.
        let queued = state.store.signals().operations_queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let mut claimed = Vec::new();
        // Each type may have its own lease, so claim type by type until `max` is reached.
        for t in &types {
            let left = max - claimed.len() as u32;
            if left == 0 {
                break;
            }
            let type_lease = state
                .config
                .operation_type(t)
                .map(|c| c.lease)
                .unwrap_or(Duration::from_secs(30));
            let ops = state
                .store
                .claim_operations(ClaimRequest {
                    types: vec![t.clone()],
                    // A tenant-scoped key is filtered in the claim itself, so it never
                    // leases another tenant's operation.
                    tenants: scope.tenants.clone(),
                    max: left,
                    lease: lease.unwrap_or(type_lease),
                    now: state.clock.now(),
                })
                .await?;
            claimed.extend(ops);
        }
        if !claimed.is_empty() || tokio::time::Instant::now() >= deadline {
            let operations: Vec<Value> = claimed
                .iter()
                .map(|op| {
                    let resource = op.to_resource();
                    let lease_token = match &op.state {
                        OperationState::Running { lease_token, .. } => lease_token.clone(),
                        _ => String::new(),
                    };
                    let lease_expires_at = match &op.state {
                        OperationState::Running {
                            lease_expires_at, ..
                        } => lease_expires_at.to_rfc3339(),
                        _ => String::new(),
                    };
                    json!({
                        "name": resource["name"],
                        "metadata": resource["metadata"],
                        "input": op.input,
                        "lease_token": lease_token,
                        "lease_expires_at": lease_expires_at,
                        "attempt": op.attempt,
                    })
                })
                .collect();
            return Ok(Json(json!({ "operations": operations })));
        }
        tokio::select! {
            _ = queued => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = state.shutdown.cancelled() => return Ok(Json(json!({ "operations": [] }))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    lease_token: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    lease: Option<String>,
}

pub async fn heartbeat(
    state: &AppState,
    principal: &Principal,
    id: OperationId,
    body: &[u8],
) -> ApiResult<Response> {
    principal.require_worker()?;
    let req: HeartbeatBody = parse_json(body)?;
    if let Some(p) = req
        .metadata
        .as_ref()
        .and_then(|m| m.get("progress_percent"))
    {
        if !p.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)) {
            return Err(ApiError::invalid(
                "`metadata.progress_percent` must be a number from 0 to 100.",
            ));
        }
    }
    let lease = req.lease.as_deref().map(parse_lease).transpose()?;
    // The worker-facing read: an operation the client deleted is still the worker's to
    // heartbeat (DELETE does not cancel), so it must not read as missing here.
    let current = held_operation(state, principal, id).await?;
    let lease = lease.unwrap_or_else(|| {
        state
            .config
            .operation_type(&current.op_type)
            .map(|t| t.lease)
            .unwrap_or(Duration::from_secs(30))
    });
    let op = state
        .store
        .heartbeat(Heartbeat {
            id,
            lease_token: req.lease_token,
            metadata: req.metadata,
            lease,
            now: state.clock.now(),
        })
        .await
        .map_err(|e| ApiError::from_store(e, "The operation"))?;
    let expires = match &op.state {
        OperationState::Running {
            lease_expires_at, ..
        } => lease_expires_at.to_rfc3339(),
        _ => String::new(),
    };
    Ok((
        StatusCode::OK,
        Json(json!({ "cancel_requested": op.cancel_requested, "lease_expires_at": expires })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    lease_token: String,
    #[serde(default)]
    response: Value,
}

pub async fn complete(
    state: &AppState,
    principal: &Principal,
    id: OperationId,
    body: &[u8],
) -> ApiResult<Response> {
    principal.require_worker()?;
    let req: CompleteBody = parse_json(body)?;
    if !principal.scope.is_unscoped() {
        held_operation(state, principal, id).await?;
    }
    let op = state
        .store
        .finish_operation(Finish {
            id,
            lease_token: req.lease_token,
            outcome: FinishAs::Complete(req.response),
            now: state.clock.now(),
        })
        .await
        .map_err(|e| ApiError::from_store(e, "The operation"))?;
    Ok(operation_response(state, StatusCode::OK, &op))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailBody {
    lease_token: String,
    error: OperationError,
    #[serde(default)]
    retryable: bool,
}

pub async fn fail(
    state: &AppState,
    principal: &Principal,
    id: OperationId,
    body: &[u8],
) -> ApiResult<Response> {
    principal.require_worker()?;
    let req: FailBody = parse_json(body)?;
    if req.error.code.is_empty() || req.error.code.len() > 100 {
        return Err(ApiError::invalid(
            "`error.code` must be 1 to 100 characters.",
        ));
    }
    if !principal.scope.is_unscoped() {
        held_operation(state, principal, id).await?;
    }
    let outcome = FinishAs::Fail {
        error: req.error,
        retryable: req.retryable,
    };
    let op = state
        .store
        .finish_operation(Finish {
            id,
            lease_token: req.lease_token,
            outcome,
            now: state.clock.now(),
        })
        .await
        .map_err(|e| ApiError::from_store(e, "The operation"))?;
    Ok(operation_response(state, StatusCode::OK, &op))
}
