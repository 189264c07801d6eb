//! `components`: security schemes, headers, the problem-details responses and every
//! schema the paths refer to.

use super::build::schema_ref;
use serde_json::{json, Value};

/// The document's `components`.
pub(super) fn components() -> Value {
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
            "Problem503": problem_response("Overloaded or timed out; nothing was changed (for a read). Retry after `Retry-After`."),
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
            "FeedPage": {
                "type": "object", "required": ["events", "next_cursor"],
                "properties": { "events": { "type": "array", "items": schema_ref("Event") },
                                "next_cursor": { "type": "string", "description": "Opaque: pass it back as `after` (or `:ack` it)." } }
            },
            "CreateConsumer": {
                "type": "object", "required": ["name"], "additionalProperties": false,
                "properties": { "name": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$" },
                                "types": { "type": "array", "items": { "type": "string" }, "maxItems": 50 },
                                "start": { "enum": ["earliest", "latest"] },
                                "tenant": { "type": "string" } }
            },
            "Consumer": {
                "type": "object", "required": ["name", "types", "cursor", "created_at", "updated_at"],
                "properties": { "name": { "type": "string" }, "tenant": { "type": "string" },
                                "types": { "type": "array", "items": { "type": "string" } },
                                "cursor": { "type": "string", "description": "The acknowledged cursor." },
                                "created_at": { "type": "string", "format": "date-time" },
                                "updated_at": { "type": "string", "format": "date-time" } }
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
                                "format": { "enum": ["herald", "standard-webhooks", "standard-webhooks-ed25519"] },
                                "tenant": { "type": "string" },
                                "schedule": { "type": "array", "items": { "type": "string" } },
                                "max_concurrency": { "type": "integer", "minimum": 1, "maximum": 1000 },
                                "ordering": { "enum": ["none", "key"], "description": "`key`: deliveries of one event key go one at a time, in `sequence` order." },
                                "description": { "type": "string" },
                                "headers": { "type": "object", "additionalProperties": { "type": "string" }, "maxProperties": 20, "description": "Sent with every delivery. Not hop-by-hop, `Host`, `Content-*`, `User-Agent`, `Expect`, `traceparent`, a proxy's (`Forwarded`, `Via`, `X-Forwarded-*`, `X-Real-IP`, …), or any header Herald sets or signs (`X-Event-*`, `X-Signature`, `X-Timestamp`, `X-Delivery-*`, `webhook-*`). Stored as given (not sealed)." },
                                "filter": { "type": "object", "description": "Only events whose body passes are delivered: JSON pointers to a value, `{\"$eq\"}`, `{\"$in\": [..]}` or `{\"$exists\": bool}`, combined with `$and`/`$or` (docs/api.md, Payload filters)." },
                                "rate_limit": { "type": "integer", "minimum": 1, "maximum": 10000, "description": "Deliveries per second, evenly; the excess waits its turn." } }
            },
            "PatchWebhook": {
                "type": "object", "additionalProperties": false,
                "properties": { "url": { "type": "string" }, "events": { "type": "array", "items": { "type": "string" } },
                                "format": { "enum": ["herald", "standard-webhooks", "standard-webhooks-ed25519"] }, "disabled": { "type": "boolean" },
                                "description": { "type": "string" }, "schedule": { "type": "array", "items": { "type": "string" } },
                                "max_concurrency": { "type": "integer" },
                                "ordering": { "enum": ["none", "key"] },
                                "headers": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Replaces the custom headers; `{}` removes them." },
                                "filter": { "type": ["object", "null"], "description": "Replaces the filter; `null` removes it." },
                                "rate_limit": { "type": ["integer", "null"], "minimum": 1, "maximum": 10000, "description": "`null` removes it." } }
            },
            "Webhook": {
                "type": "object", "required": ["id", "url", "events", "format", "signing_secret_version", "disabled"],
                "properties": { "id": { "type": "string" }, "tenant": { "type": ["string", "null"] }, "url": { "type": "string" },
                                "events": { "type": "array", "items": { "type": "string" } },
                                "format": { "enum": ["herald", "standard-webhooks", "standard-webhooks-ed25519"] },
                                "signing_secret_version": { "type": "integer" },
                                "signing_secret": { "type": "string", "description": "Only on creation and rotation, and never for `standard-webhooks-ed25519` (its private key stays in Herald)." },
                                "public_key": { "type": ["string", "null"], "description": "`standard-webhooks-ed25519`: the `whpk_` key receivers verify `v1a` signatures with." },
                                "previous_public_key": { "type": ["string", "null"], "description": "During a rotation's grace: the key the previous signature verifies with." },
                                "schedule": { "type": ["array", "null"], "items": { "type": "string" } },
                                "max_concurrency": { "type": ["integer", "null"] },
                                "ordering": { "enum": ["none", "key"] },
                                "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                                "filter": { "type": ["object", "null"] },
                                "rate_limit": { "type": ["integer", "null"] },
                                "disabled": { "type": "boolean" }, "disabled_reason": { "type": ["string", "null"] },
                                "description": { "type": ["string", "null"] },
                                "created_at": { "type": "string" }, "updated_at": { "type": "string" } }
            },
            "PortalSession": {
                "type": "object", "required": ["id", "tenant", "read_only", "expires_at"],
                "properties": { "id": { "type": "string" }, "tenant": { "type": "string" }, "read_only": { "type": "boolean" },
                                "event_types": { "type": ["array", "null"], "items": { "type": "string" } },
                                "expires_at": { "type": "string" }, "created_at": { "type": "string" },
                                "opened_at": { "type": ["string", "null"] }, "revoked": { "type": "boolean" },
                                "token": { "type": "string", "description": "Only when minted." },
                                "url": { "type": "string", "description": "Only when minted: the one-time link." } }
            },
            "PortalSettings": {
                "type": "object", "additionalProperties": false,
                "properties": { "frame_origins": { "type": "array", "items": { "type": "string" }, "maxItems": 20, "description": "Origins (`https://host[:port]`) whose pages may frame /portal (CSP frame-ancestors); none: framed nowhere." },
                                "branding": { "type": "object", "properties": { "name": { "type": "string" }, "logo_url": { "type": "string" }, "accent": { "type": "string" }, "theme": { "enum": ["light", "dark"] } } } }
            },
            "Replay": {
                "type": "object", "additionalProperties": false,
                "properties": { "since": { "type": "string", "format": "date-time" }, "until": { "type": "string", "format": "date-time" },
                                "status": { "enum": ["failed", "succeeded", "pending", "skipped", "all"] } }
            },
            "Delivery": {
                "type": "object", "required": ["id", "event_id", "event_type", "webhook_id", "status", "attempts"],
                "properties": { "id": { "type": "string" }, "event_id": { "type": "string" }, "event_type": { "type": "string" },
                                "webhook_id": { "type": "string" }, "tenant": { "type": ["string", "null"] },
                                "status": { "enum": ["pending", "succeeded", "failed", "skipped"] },
                                "key": { "type": ["string", "null"], "description": "A broker delivery's key, or an ordered webhook's line." },
                                "sequence": { "type": ["integer", "null"], "description": "On an ordered webhook: the event's place in its key's line." },
                                "held_by": { "type": ["string", "null"], "description": "On an ordered webhook: the delivery at the head of this one's line, holding it back." },
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
