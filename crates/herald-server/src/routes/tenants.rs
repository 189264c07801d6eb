//! Tenants and API keys (admin only). A key's secret is shown once, in the answer that creates it.
//! Worker keys may be scoped to operation types and tenants, checked when they are minted.

use crate::auth::Principal;
use crate::body::{parse_json, read_body};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_core::auth::{mint_key, Role};
use herald_core::ids::{KeyId, TenantId};
use herald_store::{ApiKey, StoreError, Tenant, WorkerScope};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    role: String,
}

/// `POST /keys`: an admin or worker key; a worker key may be scoped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUnboundKey {
    role: String,
    /// Only operations of these types (declared in config).
    #[serde(default)]
    types: Option<Vec<String>>,
    /// Only operations of these tenants (which must exist).
    #[serde(default)]
    tenants: Option<Vec<String>>,
}

/// Most entries one side of a scope takes.
const MAX_SCOPE_ENTRIES: usize = 100;

/// Checks a requested worker scope against the config and the store: every type declared,
/// every tenant existing, neither list empty. Repeats are dropped, order kept.
async fn worker_scope(
    state: &AppState,
    types: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
) -> ApiResult<WorkerScope> {
    fn distinct<T: PartialEq>(items: Vec<T>) -> Vec<T> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if !out.contains(&item) {
                out.push(item);
            }
        }
        out
    }
    let sized = |field: &str, len: usize| {
        if len == 0 {
            Err(ApiError::invalid(format!(
                "`{field}` must name at least one; leave it out for a key not limited by {field}."
            )))
        } else if len > MAX_SCOPE_ENTRIES {
            Err(ApiError::invalid(format!(
                "`{field}` takes at most {MAX_SCOPE_ENTRIES} entries."
            )))
        } else {
            Ok(())
        }
    };
    let types = match types {
        Some(types) => {
            sized("types", types.len())?;
            for t in &types {
                if state.config.operation_type(t).is_none() {
                    return Err(super::operations::unknown_operation_type(
                        state,
                        t,
                        " in `types`",
                    ));
                }
            }
            Some(distinct(types))
        }
        None => None,
    };
    let tenants = match tenants {
        Some(tenants) => {
            sized("tenants", tenants.len())?;
            let mut ids = Vec::with_capacity(tenants.len());
            for t in &tenants {
                let id = TenantId::parse(t).map_err(|_| {
                    ApiError::invalid(format!("{t:?} in `tenants` is not a tenant id (tnt_…)."))
                })?;
                state.store.get_tenant(id).await.map_err(|e| match e {
                    StoreError::NotFound => {
                        ApiError::invalid(format!("Tenant {id} in `tenants` does not exist."))
                    }
                    other => other.into(),
                })?;
                ids.push(id);
            }
            Some(distinct(ids))
        }
        None => None,
    };
    Ok(WorkerScope { types, tenants })
}

fn tenant_json(t: &Tenant) -> Value {
    json!({ "id": t.id, "name": t.name, "created_at": t.created_at.to_rfc3339() })
}

pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_admin()?;
    let req: CreateTenant = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("`name` must be 1 to 200 characters."));
    }
    let tenant = Tenant {
        id: TenantId::generate(),
        name: name.to_owned(),
        created_at: state.clock.now(),
    };
    let tenant = state.store.create_tenant(tenant).await?;
    state
        .known_tenants
        .write()
        .expect("tenants lock")
        .insert(tenant.id);
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))))
}

pub async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = TenantId::parse(&id).map_err(|_| ApiError::not_found("The tenant"))?;
    if !principal.can_see(Some(id)) {
        return Err(ApiError::not_found("The tenant"));
    }
    let tenant = state
        .store
        .get_tenant(id)
        .await
        .map_err(|e| ApiError::from_store(e, "The tenant"))?;
    Ok(Json(tenant_json(&tenant)))
}

async fn issue_key(
    state: &AppState,
    role: Role,
    scope: WorkerScope,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let minted = mint_key();
    let mut out = json!({ "id": minted.id, "key": minted.plaintext, "role": role.name() });
    if let Some(t) = role.tenant() {
        out["tenant"] = json!(t);
    }
    if let Some(types) = &scope.types {
        out["types"] = json!(types);
    }
    if let Some(tenants) = &scope.tenants {
        out["tenants"] = json!(tenants);
    }
    let key = ApiKey {
        id: minted.id,
        hash: minted.hash,
        role,
        created_at: state.clock.now(),
        revoked: false,
        scope,
    };
    state.store.create_key(key).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn create_tenant_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_admin()?;
    let tenant = TenantId::parse(&id).map_err(|_| ApiError::not_found("The tenant"))?;
    let req: CreateKey = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    if req.role != "tenant" {
        return Err(ApiError::invalid(
            "A tenant's keys have role \"tenant\"; create admin and worker keys with POST /keys.",
        ));
    }
    state
        .store
        .get_tenant(tenant)
        .await
        .map_err(|e| ApiError::from_store(e, "The tenant"))?;
    issue_key(&state, Role::Tenant(tenant), WorkerScope::default()).await
}

pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_admin()?;
    let req: CreateUnboundKey = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    let role = match req.role.as_str() {
        "admin" => Role::Admin,
        "worker" => Role::Worker,
        "tenant" => {
            return Err(ApiError::invalid(
                "Tenant keys belong to a tenant: use POST /tenants/{id}/keys.",
            ))
        }
        other => {
            return Err(ApiError::invalid(format!(
                "`role` must be \"admin\" or \"worker\", not {other:?}."
            )))
        }
    };
    if role != Role::Worker && (req.types.is_some() || req.tenants.is_some()) {
        return Err(ApiError::invalid(
            "Only worker keys can be scoped to `types` and `tenants`.",
        ));
    }
    let scope = worker_scope(&state, req.types, req.tenants).await?;
    issue_key(&state, role, scope).await
}

pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    let id = KeyId::parse(&id).map_err(|_| ApiError::not_found("The key"))?;
    state
        .store
        .revoke_key(id, state.clock.now())
        .await
        .map_err(|e| ApiError::from_store(e, "The key"))?;
    state.keys.forget(id);
    Ok(StatusCode::NO_CONTENT)
}
