//! `paths`: every route of `routes/mod.rs`, then the trigger routes from config.

use super::build::{
    finish, idempotency_header, json_body, list_of, list_params, ok, op, operation_answer,
    path_param, query, responses, schema_ref,
};
use crate::config::Config;
use serde_json::{json, Map, Value};

/// The document's `paths`, in the order they are served.
pub(super) fn paths(config: &Config) -> Map<String, Value> {
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

    let list_ops = list_params(&[
        ("type", "string", "Only this operation type."),
        (
            "done",
            "boolean",
            "Only finished (true) or unfinished (false) operations.",
        ),
        ("tenant", "string", "Admin only: one tenant's operations."),
    ]);
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

    let list_events = list_params(&[
        ("type", "string", "Only this event type."),
        ("key", "string", "Only this ordering key."),
        ("after", "string", "Only events after this id."),
        ("tenant", "string", "Admin only: one tenant's events."),
    ]);
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

    let list_hooks = list_params(&[("tenant", "string", "Admin only: one tenant's webhooks.")]);
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

    let list_dlv = list_params(&[
        ("webhook", "string", "Only this webhook."),
        ("status", "string", "pending, succeeded, failed or skipped."),
        ("event_type", "string", "Only this event type."),
        ("since", "string", "RFC 3339."),
        ("until", "string", "RFC 3339."),
        ("tenant", "string", "Admin only: one tenant's deliveries."),
    ]);
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
    put(
        "/deliveries/{id}:skip",
        json!({ "post": finish(op("Give a delivery up (on an ordered webhook, release its key's line)", "deliveries", "skip"), vec![id()], None,
        responses(vec![("200", ok("Skipped.", schema_ref("Delivery")))], &["404", "409"])) }),
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
    paths
}
