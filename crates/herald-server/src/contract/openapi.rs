//! OpenAPI 3.1 for the whole HTTP API: every route of `routes/mod.rs`, the trigger
//! routes from config, problem details for every error, and the webhook deliveries
//! under `webhooks`.

use super::{event_schema, event_types};
use crate::config::Config;
use serde_json::{json, Map, Value};

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The error answers every authenticated route can give, plus `extra` status codes.
fn with_problems(mut responses: Map<String, Value>, extra: &[&str]) -> Value {
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

fn responses(pairs: Vec<(&str, Value)>, extra: &[&str]) -> Value {
    with_problems(
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        extra,
    )
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn query(name: &str, schema: Value, description: &str) -> Value {
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

fn idempotency_header() -> Value {
    json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Same key and body: the same result. Same key, other body: 422. A retry while the first is being written: 409.",
            "schema": { "type": "string", "maxLength": 255 } })
}

fn op(summary: &str, tag: &str, id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("summary".into(), json!(summary));
    m.insert("tags".into(), json!([tag]));
    m.insert("operationId".into(), json!(id));
    m
}

fn finish(
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

fn operation_answer(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "Retry-After": { "$ref": "#/components/headers/RetryAfter" } },
        "content": { "application/json": { "schema": schema_ref("Operation") } }
    })
}

fn list_of(field: &str, item: &str) -> Value {
    json!({ "type": "object", "required": [field, "next_page_token"], "properties": {
        field: { "type": "array", "items": schema_ref(item) },
        "next_page_token": { "type": "string", "description": "Empty on the last page." } } })
}

fn components() -> Value {
    let problem_response = |description: &str| json!({ "description": description, "content": { "application/problem+json": { "schema": schema_ref("Problem") } } });
    json!({
        "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer",
                        "description": "An API key: role `admin`, `worker` or `tenant`." }
        },
        "headers": {
            "RetryAfter": { "description": "Seconds to wait before polling again (while not done), or before retrying (429/503).",
                            "schema": { "type": "integer", "minimum": 0 } },
            "Location": { "description": "`/operations/op_…`", "schema": { "type": "string" } }
        },
        "responses": {
            "Problem401": problem_response("No key, or an unknown or revoked key."),
            "Problem403": problem_response("The key's role may not do this."),
            "Problem404": problem_response("No such resource, or not visible to this tenant (never 403)."),
            "Problem409": problem_response("Conflict: a stale lease, an operation already done, or an Idempotency-Key in use."),
            "Problem422": problem_response("The request is not valid."),
            "ProblemDefault": problem_response("Any other error, as problem details.")
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details with a stable `code`.",
                "required": ["type", "title", "status", "detail", "code"],
                "properties": {
                    "type": { "type": "string", "format": "uri" },
                    "title": { "type": "string" },
                    "status": { "type": "integer" },
                    "detail": { "type": "string" },
                    "code": { "type": "string", "examples": ["NOT_FOUND", "LEASE_STALE", "INVALID_REQUEST"] }
                }
            },
            "OperationError": {
                "type": "object", "required": ["code", "message"],
                "properties": { "code": { "type": "string", "examples": ["SOURCE_UNREACHABLE", "CANCELLED", "WORKER_LOST", "DEADLINE_EXCEEDED"] },
                                "message": { "type": "string" } }
            },
            "Operation": {
                "type": "object",
                "description": "AIP-151. `done=false`: neither `response` nor `error`. `done=true`: exactly one of them.",
                "required": ["name", "metadata", "done"],
                "properties": {
                    "name": { "type": "string", "pattern": "^operations/op_[0-9A-HJKMNP-TV-Z]{26}$" },
                    "metadata": { "type": "object", "required": ["type"], "properties": {
                        "type": { "type": "string" },
                        "progress_percent": { "type": "number", "minimum": 0, "maximum": 100 } },
                        "additionalProperties": true },
                    "done": { "type": "boolean" },
                    "response": {},
                    "error": schema_ref("OperationError")
                },
                "oneOf": [
                    { "properties": { "done": { "const": false } }, "not": { "anyOf": [ { "required": ["response"] }, { "required": ["error"] } ] } },
                    { "properties": { "done": { "const": true } }, "required": ["response"], "not": { "required": ["error"] } },
                    { "properties": { "done": { "const": true } }, "required": ["error"], "not": { "required": ["response"] } }
                ]
            },
            "CreateOperation": {
                "type": "object", "required": ["type"], "additionalProperties": false,
                "properties": { "type": { "type": "string" }, "tenant": { "type": "string" },
                                "metadata": { "type": "object" }, "input": {} }
            },
            "ClaimRequest": {
                "type": "object", "additionalProperties": false,
                "properties": { "types": { "type": "array", "items": { "type": "string" } },
                                "lease": { "type": "string", "examples": ["30s"] },
                                "max": { "type": "integer", "minimum": 1, "maximum": 100 },
                                "wait": { "type": "string", "examples": ["20s"] } }
            },
            "ClaimedOperation": {
                "type": "object", "required": ["name", "metadata", "input", "lease_token", "attempt"],
                "properties": { "name": { "type": "string" }, "metadata": { "type": "object" }, "input": {},
                                "lease_token": { "type": "string" }, "lease_expires_at": { "type": "string", "format": "date-time" },
                                "attempt": { "type": "integer", "minimum": 1 } }
            },
            "Heartbeat": {
                "type": "object", "required": ["lease_token"], "additionalProperties": false,
                "properties": { "lease_token": { "type": "string" }, "metadata": { "type": "object" },
                                "lease": { "type": "string" } }
            },
            "HeartbeatReply": {
                "type": "object", "required": ["cancel_requested", "lease_expires_at"],
                "properties": { "cancel_requested": { "type": "boolean" }, "lease_expires_at": { "type": "string" } }
            },
            "Complete": {
                "type": "object", "required": ["lease_token"], "additionalProperties": false,
                "properties": { "lease_token": { "type": "string" }, "response": {} }
            },
            "Fail": {
                "type": "object", "required": ["lease_token", "error"], "additionalProperties": false,
                "properties": { "lease_token": { "type": "string" }, "error": schema_ref("OperationError"),
                                "retryable": { "type": "boolean", "default": false } }
            },
            "Wait": {
                "type": "object", "additionalProperties": false,
                "properties": { "timeout": { "type": "string", "examples": ["30s"] } }
            },
            "CreateEvent": {
                "type": "object", "required": ["type", "data"], "additionalProperties": false,
                "properties": { "id": { "type": "string" }, "type": { "type": "string" }, "tenant": { "type": "string" },
                                "key": { "type": "string", "maxLength": 200 }, "data": {} }
            },
            "EventAccepted": {
                "type": "object", "required": ["id"],
                "properties": { "id": { "type": "string" }, "sequence": { "type": ["integer", "null"] } }
            },
            "Event": {
                "type": "object", "required": ["id", "type", "created_at", "data"],
                "properties": { "id": { "type": "string" }, "type": { "type": "string" },
                                "created_at": { "type": "string", "format": "date-time" },
                                "key": { "type": "string" }, "sequence": { "type": "integer", "minimum": 1 },
                                "tenant": { "type": "string" }, "data": {} }
            },
            "EventType": {
                "type": "object", "required": ["name", "schema"],
                "properties": { "name": { "type": "string" }, "schema": { "type": "object" } }
            },
            "CreateWebhook": {
                "type": "object", "required": ["url", "events"], "additionalProperties": false,
                "properties": { "url": { "type": "string", "format": "uri" },
                                "events": { "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": 100 },
                                "signing_secret_version": { "type": "integer" },
                                "format": { "enum": ["herald", "standard-webhooks"] },
                                "tenant": { "type": "string" },
                                "schedule": { "type": "array", "items": { "type": "string" } },
                                "max_concurrency": { "type": "integer", "minimum": 1, "maximum": 1000 },
                                "description": { "type": "string" } }
            },
            "PatchWebhook": {
                "type": "object", "additionalProperties": false,
                "properties": { "url": { "type": "string" }, "events": { "type": "array", "items": { "type": "string" } },
                                "format": { "enum": ["herald", "standard-webhooks"] }, "disabled": { "type": "boolean" },
                                "description": { "type": "string" }, "schedule": { "type": "array", "items": { "type": "string" } },
                                "max_concurrency": { "type": "integer" } }
            },
            "Webhook": {
                "type": "object", "required": ["id", "url", "events", "format", "signing_secret_version", "disabled"],
                "properties": { "id": { "type": "string" }, "tenant": { "type": ["string", "null"] }, "url": { "type": "string" },
                                "events": { "type": "array", "items": { "type": "string" } },
                                "format": { "enum": ["herald", "standard-webhooks"] },
                                "signing_secret_version": { "type": "integer" },
                                "signing_secret": { "type": "string", "description": "Only on creation and rotation." },
                                "schedule": { "type": ["array", "null"], "items": { "type": "string" } },
                                "max_concurrency": { "type": ["integer", "null"] },
                                "disabled": { "type": "boolean" }, "disabled_reason": { "type": ["string", "null"] },
                                "description": { "type": ["string", "null"] },
                                "created_at": { "type": "string" }, "updated_at": { "type": "string" } }
            },
            "Replay": {
                "type": "object", "additionalProperties": false,
                "properties": { "since": { "type": "string", "format": "date-time" }, "until": { "type": "string", "format": "date-time" },
                                "status": { "enum": ["failed", "succeeded", "pending", "all"] } }
            },
            "Delivery": {
                "type": "object", "required": ["id", "event_id", "event_type", "webhook_id", "status", "attempts"],
                "properties": { "id": { "type": "string" }, "event_id": { "type": "string" }, "event_type": { "type": "string" },
                                "webhook_id": { "type": "string" }, "tenant": { "type": ["string", "null"] },
                                "status": { "enum": ["pending", "succeeded", "failed"] },
                                "attempts": { "type": "integer" }, "next_attempt_at": { "type": ["string", "null"] },
                                "last_status_code": { "type": ["integer", "null"] }, "last_error": { "type": ["string", "null"] },
                                "attempt_log": { "type": "array", "items": schema_ref("Attempt") },
                                "created_at": { "type": "string" }, "updated_at": { "type": "string" } }
            },
            "Attempt": {
                "type": "object",
                "properties": { "id": { "type": "string" }, "at": { "type": "string" }, "status_code": { "type": ["integer", "null"] },
                                "latency_ms": { "type": ["integer", "null"] }, "error": { "type": ["string", "null"] },
                                "response_excerpt": { "type": ["string", "null"] } }
            },
            "Tenant": {
                "type": "object", "required": ["id", "name"],
                "properties": { "id": { "type": "string" }, "name": { "type": "string" }, "created_at": { "type": "string" } }
            },
            "CreateTenantKey": {
                "type": "object", "required": ["role"], "additionalProperties": false,
                "properties": { "role": { "enum": ["tenant"] } }
            },
            "CreateKey": {
                "type": "object", "required": ["role"], "additionalProperties": false,
                "properties": { "role": { "enum": ["admin", "worker"] },
                                "types": { "type": "array", "minItems": 1, "maxItems": 100, "items": { "type": "string" },
                                           "description": "POST /keys, worker keys only: the operation types (declared in config) it may claim." },
                                "tenants": { "type": "array", "minItems": 1, "maxItems": 100, "items": { "type": "string" },
                                             "description": "POST /keys, worker keys only: the tenants (which must exist) whose operations it may claim." } }
            },
            "Key": {
                "type": "object", "required": ["id", "key", "role"],
                "properties": { "id": { "type": "string" }, "key": { "type": "string", "description": "Shown once." },
                                "role": { "type": "string" }, "tenant": { "type": "string" },
                                "types": { "type": "array", "items": { "type": "string" }, "description": "A scoped worker key's types." },
                                "tenants": { "type": "array", "items": { "type": "string" }, "description": "A scoped worker key's tenants." } }
            },
            "Status": { "type": "object", "properties": { "status": { "type": "string" } } },
            "Document": { "type": "object", "description": "A JSON document (OpenAPI or AsyncAPI)." }
        }
    })
}

/// The webhook requests Herald sends, one entry per event type (OpenAPI 3.1 `webhooks`).
fn webhooks(config: &Config) -> Value {
    let mut out = Map::new();
    for name in event_types(config) {
        let data = event_schema(config, &name).unwrap_or_else(|| {
            if super::operation_of_event(config, &name).is_some() {
                schema_ref("Operation")
            } else {
                json!({})
            }
        });
        let header = |n: &str, d: &str| json!({ "name": n, "in": "header", "required": false, "description": d, "schema": { "type": "string" } });
        out.insert(
            name.clone(),
            json!({ "post": {
                "summary": format!("`{name}` delivered to a subscribed webhook"),
                "description": "At-least-once: dedupe by `X-Event-Id` (or `webhook-id`). Herald-format headers shown; Standard Webhooks format sends `webhook-id`, `webhook-timestamp`, `webhook-signature` instead.",
                "parameters": [
                    header("X-Event-Id", "The event id: dedupe on it."),
                    header("X-Event-Type", "The event type."),
                    header("X-Timestamp", "RFC 3339, second precision; signed."),
                    header("X-Signature", "`sha256=HEX` of HMAC-SHA256(secret, X-Timestamp + \".\" + raw body); several, space-separated, while a rotated secret is in its grace period."),
                    header("webhook-id", "Standard Webhooks format: the event id."),
                    header("webhook-timestamp", "Standard Webhooks format: Unix seconds."),
                    header("webhook-signature", "Standard Webhooks format: `v1,BASE64` over `id.timestamp.body`.")
                ],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["id", "type", "created_at", "data"],
                    "properties": { "id": { "type": "string" }, "type": { "const": name },
                                    "created_at": { "type": "string", "format": "date-time" },
                                    "key": { "type": "string" }, "sequence": { "type": "integer", "minimum": 1 },
                                    "data": data } } } } },
                "responses": {
                    "2XX": { "description": "Acknowledged. Anything else (or no answer within the timeout) is retried; 410 disables the webhook." }
                }
            } }),
        );
    }
    Value::Object(out)
}

pub fn openapi(config: &Config, server_url: &str) -> Value {
    let id = || path_param("id", "The resource id.");
    let mut paths = Map::new();
    let mut put = |path: &str, item: Value| {
        paths.insert(path.to_owned(), item);
    };
    let public = |mut v: Value| {
        v["security"] = json!([]);
        v
    };

    put(
        "/healthz",
        json!({ "get": public(finish(op("Liveness", "health", "healthz"), vec![], None,
        json!({ "200": ok("Up.", schema_ref("Status")) }))) }),
    );
    put(
        "/readyz",
        json!({ "get": public(finish(op("Readiness: the store answers", "health", "readyz"), vec![], None,
        json!({ "200": ok("Ready.", schema_ref("Status")), "503": ok("The store does not answer.", schema_ref("Status")) }))) }),
    );
    put(
        "/openapi.json",
        json!({ "get": public(finish(op("This OpenAPI document", "contract", "getOpenApi"), vec![], None,
        json!({ "200": ok("OpenAPI 3.1.", schema_ref("Document")) }))) }),
    );
    put(
        "/asyncapi.json",
        json!({ "get": public(finish(op("The AsyncAPI 3.0 document of the webhook events", "contract", "getAsyncApi"), vec![], None,
        json!({ "200": ok("AsyncAPI 3.0.", schema_ref("Document")) }))) }),
    );

    let text = |description: &str, media: &str| json!({ "description": description, "content": { media: { "schema": { "type": "string" } } } });
    let metrics = finish(
        op("Prometheus metrics", "observability", "getMetrics"),
        vec![],
        None,
        json!({ "200": text("Prometheus text exposition format.", "text/plain") }),
    );
    put(
        "/metrics",
        // `[metrics] require_key`: an admin key or the metrics token; otherwise open.
        if config.metrics.require_key {
            let mut metrics = metrics;
            metrics["responses"]["401"] = json!({ "$ref": "#/components/responses/Problem401" });
            metrics["responses"]["403"] = json!({ "$ref": "#/components/responses/Problem403" });
            json!({ "get": metrics })
        } else {
            json!({ "get": public(metrics) })
        },
    );
    put(
        "/stats",
        json!({ "get": finish(op("Delivery activity for the dashboard's charts (tenant-scoped)", "observability", "getStats"),
        vec![
            query("since", json!({ "type": "string", "format": "date-time" }), "Start of the window (default: an hour ago)."),
            query("until", json!({ "type": "string", "format": "date-time" }), "End of the window (default: now); at most 24 hours after `since`."),
        ], None,
        responses(vec![("200", ok("Attempts per minute by outcome, latency percentiles, backlog over time, webhook health.", json!({ "type": "object" })))], &["401", "403", "422"])) }),
    );
    for (path, id, media, what) in [
        (
            "/dashboard",
            "getDashboard",
            "text/html",
            "The operator dashboard (log in with an API key).",
        ),
        (
            "/dashboard/",
            "getDashboardSlash",
            "text/html",
            "Redirects to /dashboard.",
        ),
        (
            "/dashboard/app.js",
            "getDashboardScript",
            "text/javascript",
            "The dashboard's script.",
        ),
        (
            "/dashboard/app.css",
            "getDashboardStylesheet",
            "text/css",
            "The dashboard's stylesheet.",
        ),
    ] {
        put(
            path,
            json!({ "get": public(finish(op(what, "dashboard", id), vec![], None, json!({ "200": text(what, media) }))) }),
        );
    }

    put(
        "/tenants",
        json!({ "post": finish(op("Create a tenant (admin)", "tenants", "createTenant"), vec![],
        Some(json_body(json!({ "type": "object", "required": ["name"], "additionalProperties": false, "properties": { "name": { "type": "string" } } }))),
        responses(vec![("201", ok("Created.", schema_ref("Tenant")))], &[])) }),
    );
    put(
        "/tenants/{id}",
        json!({ "get": finish(op("Get a tenant (admin)", "tenants", "getTenant"), vec![id()], None,
        responses(vec![("200", ok("The tenant.", schema_ref("Tenant")))], &["404"])) }),
    );
    put(
        "/tenants/{id}/keys",
        json!({ "post": finish(op("Mint a tenant key (admin)", "keys", "createTenantKey"), vec![id()],
        Some(json_body(schema_ref("CreateTenantKey"))),
        responses(vec![("201", ok("The key, shown once.", schema_ref("Key")))], &["404"])) }),
    );
    put(
        "/keys",
        json!({ "post": finish(op("Mint an admin or worker key (admin)", "keys", "createKey"), vec![],
        Some(json_body(schema_ref("CreateKey"))),
        responses(vec![("201", ok("The key, shown once.", schema_ref("Key")))], &[])) }),
    );
    put(
        "/keys/{id}",
        json!({ "delete": finish(op("Revoke a key (admin)", "keys", "revokeKey"), vec![id()], None,
        responses(vec![("204", json!({ "description": "Revoked." }))], &["404"])) }),
    );

    let mut list_ops = page_params();
    list_ops.push(query(
        "type",
        json!({ "type": "string" }),
        "Only this operation type.",
    ));
    list_ops.push(query(
        "done",
        json!({ "type": "boolean" }),
        "Only finished (true) or unfinished (false) operations.",
    ));
    list_ops.push(query(
        "tenant",
        json!({ "type": "string" }),
        "Admin only: one tenant's operations.",
    ));
    put(
        "/operations",
        json!({
            "post": finish(op("Create an operation (admin)", "operations", "createOperation"), vec![idempotency_header()],
                Some(json_body(schema_ref("CreateOperation"))),
                responses(vec![("202", {
                    let mut a = operation_answer("Accepted: the operation, not done.");
                    a["headers"]["Location"] = json!({ "$ref": "#/components/headers/Location" });
                    a
                })], &["409"])),
            "get": finish(op("List operations, newest first", "operations", "listOperations"), list_ops, None,
                responses(vec![("200", ok("A page.", list_of("operations", "Operation")))], &[]))
        }),
    );
    put(
        "/operations:claim",
        json!({ "post": finish(op("Claim operations (worker): a long poll", "workers", "claimOperations"), vec![],
        Some(json_body(schema_ref("ClaimRequest"))),
        responses(vec![("200", ok("Claimed operations (possibly none).", json!({ "type": "object", "required": ["operations"],
            "properties": { "operations": { "type": "array", "items": schema_ref("ClaimedOperation") } } })))], &[])) }),
    );
    put(
        "/operations/{id}",
        json!({
            "get": finish(op("Get an operation", "operations", "getOperation"), vec![id()], None,
                responses(vec![("200", operation_answer("The operation; `Retry-After` while not done."))], &["404"])),
            "delete": finish(op("Forget an operation's result (does not cancel)", "operations", "deleteOperation"), vec![id()], None,
                responses(vec![("204", json!({ "description": "Deleted." }))], &["404"]))
        }),
    );
    put(
        "/operations/{id}:cancel",
        json!({ "post": finish(op("Cancel an operation", "operations", "cancelOperation"), vec![id()], None,
        responses(vec![("200", operation_answer("Not started: done with CANCELLED. Running: cancel requested; the worker learns on its next heartbeat."))], &["404"])) }),
    );
    put(
        "/operations/{id}:wait",
        json!({ "post": finish(op("Wait for an operation (long poll)", "operations", "waitOperation"), vec![id()],
        Some(json!({ "required": false, "content": { "application/json": { "schema": schema_ref("Wait") } } })),
        responses(vec![("200", operation_answer("Done, or the latest state at the timeout."))], &["404"])) }),
    );
    put(
        "/operations/{id}:heartbeat",
        json!({ "post": finish(op("Extend a lease and report progress (worker)", "workers", "heartbeatOperation"), vec![id()],
        Some(json_body(schema_ref("Heartbeat"))),
        responses(vec![("200", ok("The lease is extended.", schema_ref("HeartbeatReply")))], &["404", "409"])) }),
    );
    put(
        "/operations/{id}:complete",
        json!({ "post": finish(op("Finish with a response (worker)", "workers", "completeOperation"), vec![id()],
        Some(json_body(schema_ref("Complete"))),
        responses(vec![("200", operation_answer("Done."))], &["404", "409"])) }),
    );
    put(
        "/operations/{id}:fail",
        json!({ "post": finish(op("Finish with an error, or hand back for a retry (worker)", "workers", "failOperation"), vec![id()],
        Some(json_body(schema_ref("Fail"))),
        responses(vec![("200", operation_answer("Done, or queued again when retryable and attempts remain."))], &["404", "409"])) }),
    );

    let mut list_events = page_params();
    list_events.push(query(
        "type",
        json!({ "type": "string" }),
        "Only this event type.",
    ));
    list_events.push(query(
        "key",
        json!({ "type": "string" }),
        "Only this ordering key.",
    ));
    list_events.push(query(
        "after",
        json!({ "type": "string" }),
        "Only events after this id.",
    ));
    list_events.push(query(
        "tenant",
        json!({ "type": "string" }),
        "Admin only: one tenant's events.",
    ));
    put(
        "/events",
        json!({
            "post": finish(op("Publish an event (admin); durable before the answer", "events", "publishEvent"), vec![idempotency_header()],
                Some(json_body(schema_ref("CreateEvent"))),
                responses(vec![("202", ok("Accepted.", schema_ref("EventAccepted")))], &["409"])),
            "get": finish(op("The event history", "events", "listEvents"), list_events, None,
                responses(vec![("200", ok("A page.", list_of("events", "Event")))], &[]))
        }),
    );
    put(
        "/events/{id}",
        json!({ "get": finish(op("Get an event", "events", "getEvent"), vec![id()], None,
        responses(vec![("200", ok("The event.", schema_ref("Event")))], &["404"])) }),
    );
    put(
        "/event-types",
        json!({ "get": finish(op("List registered event types", "events", "listEventTypes"), vec![], None,
        responses(vec![("200", ok("Event types.", list_of("event_types", "EventType")))], &[])) }),
    );
    put(
        "/event-types/{name}",
        json!({ "put": finish(op("Register an event type's JSON Schema (admin)", "events", "putEventType"),
        vec![path_param("name", "The event type, e.g. payment.succeeded.")],
        Some(json_body(json!({ "type": "object", "required": ["schema"], "properties": { "schema": { "type": "object" } } }))),
        responses(vec![("200", ok("Registered.", schema_ref("EventType")))], &[])) }),
    );

    let mut list_hooks = page_params();
    list_hooks.push(query(
        "tenant",
        json!({ "type": "string" }),
        "Admin only: one tenant's webhooks.",
    ));
    put(
        "/webhooks",
        json!({
            "post": finish(op("Register a webhook", "webhooks", "createWebhook"), vec![],
                Some(json_body(schema_ref("CreateWebhook"))),
                responses(vec![("201", ok("Registered; `signing_secret` is shown now only.", schema_ref("Webhook")))], &[])),
            "get": finish(op("List webhooks", "webhooks", "listWebhooks"), list_hooks, None,
                responses(vec![("200", ok("A page.", list_of("webhooks", "Webhook")))], &[]))
        }),
    );
    put(
        "/webhooks/{id}",
        json!({
            "get": finish(op("Get a webhook", "webhooks", "getWebhook"), vec![id()], None,
                responses(vec![("200", ok("The webhook.", schema_ref("Webhook")))], &["404"])),
            "patch": finish(op("Change a webhook", "webhooks", "updateWebhook"), vec![id()],
                Some(json_body(schema_ref("PatchWebhook"))),
                responses(vec![("200", ok("The webhook.", schema_ref("Webhook")))], &["404"])),
            "delete": finish(op("Delete a webhook", "webhooks", "deleteWebhook"), vec![id()], None,
                responses(vec![("204", json!({ "description": "Deleted." }))], &["404"]))
        }),
    );
    put(
        "/webhooks/{id}:rotateSecret",
        json!({ "post": finish(op("Rotate the signing secret; the old one keeps signing for a grace period", "webhooks", "rotateWebhookSecret"), vec![id()],
        Some(json!({ "required": false, "content": { "application/json": { "schema": { "type": "object", "properties": { "grace": { "type": "string" } } } } } })),
        responses(vec![("200", ok("The webhook with its new `signing_secret`.", schema_ref("Webhook")))], &["404"])) }),
    );
    put(
        "/webhooks/{id}:replay",
        json!({ "post": finish(op("Redeliver a time range of deliveries", "webhooks", "replayWebhook"), vec![id()],
        Some(json!({ "required": false, "content": { "application/json": { "schema": schema_ref("Replay") } } })),
        responses(vec![("202", ok("Replay scheduled.", json!({ "type": "object" })))], &["404"])) }),
    );

    let mut list_dlv = page_params();
    for (n, d) in [
        ("webhook", "Only this webhook."),
        ("status", "pending, succeeded or failed."),
        ("event_type", "Only this event type."),
        ("since", "RFC 3339."),
        ("until", "RFC 3339."),
        ("tenant", "Admin only: one tenant's deliveries."),
    ] {
        list_dlv.push(query(n, json!({ "type": "string" }), d));
    }
    put(
        "/deliveries",
        json!({ "get": finish(op("The delivery log", "deliveries", "listDeliveries"), list_dlv, None,
        responses(vec![("200", ok("A page.", list_of("deliveries", "Delivery")))], &[])) }),
    );
    put(
        "/deliveries/{id}",
        json!({ "get": finish(op("A delivery with every attempt", "deliveries", "getDelivery"), vec![id()], None,
        responses(vec![("200", ok("The delivery.", schema_ref("Delivery")))], &["404"])) }),
    );
    put(
        "/deliveries/{id}:redeliver",
        json!({ "post": finish(op("Deliver again", "deliveries", "redeliver"), vec![id()], None,
        responses(vec![("202", ok("Queued.", schema_ref("Delivery")))], &["404"])) }),
    );

    for t in &config.operation_types {
        if let Some(trigger) = &t.trigger {
            let path = trigger.path();
            let mut answer =
                operation_answer(&format!("Accepted: a `{}` operation, not done.", t.name));
            answer["headers"]["Location"] = json!({ "$ref": "#/components/headers/Location" });
            put(
                path,
                json!({ "post": finish(
                op(&format!("Start a `{}` operation (trigger from config)", t.name), "triggers", &format!("trigger_{}", t.name.replace('-', "_"))),
                vec![idempotency_header()],
                Some(json_body(json!({ "type": "object", "description": "Stored as the operation's input." }))),
                responses(vec![("202", answer)], &["409"])) }),
            );
        }
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Herald",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Long-running operations, signed webhooks and broker events from one durable core.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "servers": [ { "url": server_url } ],
        "security": [ { "bearer": [] } ],
        "paths": paths,
        "webhooks": webhooks(config),
        "components": components()
    })
}
