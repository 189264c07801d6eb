//! The small builders every part of the document is made of: references, bodies,
//! parameters, operations and their problem-details answers.

use serde_json::{json, Map, Value};

pub(super) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

pub(super) fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

pub(super) fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The error answers every authenticated route can give, plus `extra` status codes.
pub(super) fn with_problems(mut responses: Map<String, Value>, extra: &[&str]) -> Value {
    for code in ["401", "403", "422"].iter().chain(extra) {
        responses.insert(
            (*code).to_owned(),
            json!({ "$ref": format!("#/components/responses/Problem{code}") }),
        );
    }
    responses.insert(
        "default".into(),
        json!({ "$ref": "#/components/responses/ProblemDefault" }),
    );
    Value::Object(responses)
}

pub(super) fn responses(pairs: Vec<(&str, Value)>, extra: &[&str]) -> Value {
    with_problems(
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        extra,
    )
}

pub(super) fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

pub(super) fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn page_params() -> Vec<Value> {
    vec![
        query(
            "page_size",
            json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
            "Items per page (AIP-158).",
        ),
        query(
            "page_token",
            json!({ "type": "string" }),
            "`next_page_token` of the previous page.",
        ),
    ]
}

/// The page parameters, then `extra` query parameters: (name, JSON type, description).
pub(super) fn list_params(extra: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut params = page_params();
    for (name, ty, description) in extra {
        params.push(query(name, json!({ "type": ty }), description));
    }
    params
}

pub(super) fn idempotency_header() -> Value {
    json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Same key and body: the same result. Same key, other body: 422. A retry while the first is being written: 409.",
            "schema": { "type": "string", "maxLength": 255 } })
}

pub(super) fn op(summary: &str, tag: &str, id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("summary".into(), json!(summary));
    m.insert("tags".into(), json!([tag]));
    m.insert("operationId".into(), json!(id));
    m
}

pub(super) fn finish(
    mut m: Map<String, Value>,
    params: Vec<Value>,
    body: Option<Value>,
    resp: Value,
) -> Value {
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    if let Some(b) = body {
        m.insert("requestBody".into(), b);
    }
    m.insert("responses".into(), resp);
    Value::Object(m)
}

pub(super) fn operation_answer(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "Retry-After": { "$ref": "#/components/headers/RetryAfter" } },
        "content": { "application/json": { "schema": schema_ref("Operation") } }
    })
}

pub(super) fn list_of(field: &str, item: &str) -> Value {
    json!({ "type": "object", "required": [field, "next_page_token"], "properties": {
        field: { "type": "array", "items": schema_ref(item) },
        "next_page_token": { "type": "string", "description": "Empty on the last page." } } })
}
