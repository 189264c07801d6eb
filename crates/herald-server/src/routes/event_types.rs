//! Event types with a JSON Schema: `data` that fails its type's schema is refused (422)
//! and never stored. Schemas come from config and from `PUT /event-types/{name}`.

use crate::auth::Principal;
use crate::body::{parse_json, read_body};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use crate::Schemas;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use herald_core::pattern::is_event_type;
use herald_store::{EventType, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

fn compile(name: &str, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    jsonschema::validator_for(schema)
        .map(Arc::new)
        .map_err(|e| format!("The schema for {name:?} is not a valid JSON Schema: {e}"))
}

/// At start: config's event types are stored (config wins), then every stored schema is compiled.
pub async fn load(state: &AppState) -> anyhow::Result<()> {
    for et in &state.config.event_types {
        state
            .store
            .put_event_type(EventType {
                name: et.name.clone(),
                schema: et.schema.clone(),
            })
            .await?;
    }
    reload(&state.store, &state.schemas).await?;
    follow(state);
    Ok(())
}

/// Compiles every stored schema and swaps them in.
async fn reload(store: &Arc<dyn Store>, schemas: &Schemas) -> anyhow::Result<()> {
    let mut compiled = std::collections::HashMap::new();
    for et in store.list_event_types().await? {
        let validator = compile(&et.name, &et.schema).map_err(anyhow::Error::msg)?;
        compiled.insert(et.name, validator);
    }
    *schemas.write().expect("schemas lock") = compiled;
    Ok(())
}

/// Keeps this node's compiled schemas in step with the store: they are reloaded whenever
/// an event type is stored, here or (PostgreSQL) on another node, whose notification
/// arrives within moments; and every [`RELOAD_EVERY`] in case one was missed. Holds no
/// strong reference, so it ends when the state and the store are gone.
fn follow(state: &AppState) {
    let store = Arc::downgrade(&state.store);
    let schemas = Arc::downgrade(&state.schemas);
    let mut changes = state.store.signals().event_types.subscribe();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
            let (Some(store), Some(schemas)) = (store.upgrade(), schemas.upgrade()) else {
                return;
            };
            if let Err(e) = reload(&store, &schemas).await {
                tracing::warn!(error = %e, "reloading event type schemas failed; keeping the ones loaded");
            }
        }
    });
}

/// How often a node reloads the event types' schemas without being told of a change.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Checks `data` against its type's schema, if the type has one.
pub fn validate(state: &AppState, event_type: &str, data: &Value) -> ApiResult<()> {
    let validator = state
        .schemas
        .read()
        .expect("schemas lock")
        .get(event_type)
        .cloned();
    let Some(validator) = validator else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(data)
        .take(5)
        .map(|e| {
            let at = e.instance_path.to_string();
            format!(
                "{}: {e}",
                if at.is_empty() {
                    "data".to_owned()
                } else {
                    format!("data{at}")
                }
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "SCHEMA_VIOLATION",
            format!(
                "`data` does not match the schema of {event_type:?}: {}",
                problems.join("; ")
            ),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEventType {
    schema: Value,
}

pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    principal.require_admin()?;
    if !is_event_type(&name) {
        return Err(ApiError::invalid(format!(
            "{name:?} is not a valid event type name."
        )));
    }
    let req: PutEventType = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    let validator = compile(&name, &req.schema).map_err(ApiError::invalid)?;
    state
        .store
        .put_event_type(EventType {
            name: name.clone(),
            schema: req.schema.clone(),
        })
        .await?;
    state
        .schemas
        .write()
        .expect("schemas lock")
        .insert(name.clone(), validator);
    Ok(Json(json!({ "name": name, "schema": req.schema })))
}

pub async fn list(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<Value>> {
    principal.require_reader()?;
    let types = state.store.list_event_types().await?;
    let event_types: Vec<Value> = types
        .iter()
        .map(|t| json!({ "name": t.name, "schema": t.schema }))
        .collect();
    Ok(Json(
        json!({ "event_types": event_types, "next_page_token": "" }),
    ))
}
