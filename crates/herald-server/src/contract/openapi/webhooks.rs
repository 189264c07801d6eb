//! `webhooks`: the requests Herald sends to subscribed webhooks.

use super::build::schema_ref;
use crate::config::Config;
use crate::contract::{event_schema, event_types};
use serde_json::{json, Map, Value};

/// The webhook requests Herald sends, one entry per event type (OpenAPI 3.1 `webhooks`).
pub(super) fn webhooks(config: &Config) -> Value {
    let mut out = Map::new();
    for name in event_types(config) {
        let data = event_schema(config, &name).unwrap_or_else(|| {
            if crate::contract::operation_of_event(config, &name).is_some() {
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
