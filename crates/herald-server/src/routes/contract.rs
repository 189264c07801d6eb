//! `GET /openapi.json` and `GET /asyncapi.json`: the documents `herald contract`
//! prints, for the config this server runs with. Public, like any API description.

use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde_json::Value;

/// The base URL the client used to reach us, for the documents' `servers`.
fn server_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8288");
    format!("http://{host}")
}

pub async fn openapi(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(crate::contract::openapi(
        &state.config,
        &server_url(&headers),
    ))
}

pub async fn asyncapi(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(crate::contract::asyncapi(
        &state.config,
        &server_url(&headers),
    ))
}
