//! Liveness and readiness.

use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The store answers and its schema is the one this build expects (migrations are
/// applied at start, but another node or an older binary may share the database).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let unavailable = |status: &str, detail: Value| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status, "schema": detail })),
        )
    };
    if let Err(e) = state.store.count_live_admin_keys().await {
        tracing::warn!(error = %e, "readiness check failed: store");
        return unavailable("store unavailable", Value::Null);
    }
    match state.store.schema_version().await {
        Ok(v) => {
            let schema = json!({ "applied": v.applied, "expected": v.expected });
            if v.is_current() {
                (
                    StatusCode::OK,
                    Json(json!({ "status": "ready", "schema": schema })),
                )
            } else {
                tracing::warn!(
                    applied = v.applied,
                    expected = v.expected,
                    "readiness check failed: schema version differs"
                );
                unavailable("migrations not applied", schema)
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: schema version");
            unavailable("schema version unknown", Value::Null)
        }
    }
}
