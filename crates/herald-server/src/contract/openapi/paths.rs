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

    put(
        "/tenants/{id}/portal-sessions",
        json!({ "post": finish(op("Mint a portal session for the tenant's own users (admin): a one-time link, exchanged at /portal/open for a session cookie", "tenants", "createPortalSession"), vec![id()],
        Some(json!({ "required": false, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "properties": {
            "read_only": { "type": "boolean" },
            "event_types": { "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": 100 },
            "expires_in": { "type": "string", "description": "1m to 24h; default 1h." } } } } } })),
        responses(vec![("201", ok("The session, its `token` and its `url` (the token, shown once).", schema_ref("PortalSession")))], &["404"])) }),
    );
    put(
        "/tenants/{id}/portal",
        json!({
            "get": finish(op("The tenant's portal settings (admin)", "tenants", "getPortalSettings"), vec![id()], None,
                responses(vec![("200", ok("The settings.", schema_ref("PortalSettings")))], &["404"])),
            "put": finish(op("Replace the tenant's portal settings (admin)", "tenants", "putPortalSettings"), vec![id()],
                Some(json_body(schema_ref("PortalSettings"))),
                responses(vec![("200", ok("The settings.", schema_ref("PortalSettings")))], &["404"]))
        }),
    );
    put(
        "/portal-sessions/{id}",
        json!({
            "get": finish(op("A portal session (admin)", "tenants", "getPortalSession"), vec![id()], None,
                responses(vec![("200", ok("The session (never its token).", schema_ref("PortalSession")))], &["404"])),
            "delete": finish(op("Revoke a portal session (admin): its cookie opens nothing more", "tenants", "revokePortalSession"), vec![id()], None,
                responses(vec![("204", json!({ "description": "Revoked." }))], &["404"]))
        }),
    );
    for (path, id, media, what) in [
        (
            "/portal",
            "getPortal",
            "text/html",
            "The tenant portal's page (its session cookie calls /portal/api).",
        ),
        (
            "/portal/app.js",
            "getPortalScript",
            "text/javascript",
            "The portal's script.",
        ),
        (
            "/portal/app.css",
            "getPortalStylesheet",
            "text/css",
            "The portal's stylesheet.",
        ),
    ] {
        put(
            path,
            json!({ "get": public(finish(op(what, "dashboard", id), vec![], None, json!({ "200": text(what, media) }))) }),
        );
    }
    put(
        "/portal/open",
        json!({
            "get": public(finish(op("A portal link's page: changes nothing (a link scanner spends nothing); its button posts the token", "dashboard", "showPortalLink"),
                vec![query("token", json!({ "type": "string" }), "The token of `POST /tenants/{id}/portal-sessions`.")], None,
                json!({ "200": text("The page, with a form that posts the token to /portal/open.", "text/html"), "401": text("Expired, used or unknown.", "text/html") }))),
            "post": public(finish(op("Open a portal link, from its own page only (Origin, or Sec-Fetch-Site: same-origin): the one-time token becomes an HttpOnly session cookie (SameSite=Strict, or None; Secure; Partitioned when the tenant lists frame origins)", "dashboard", "openPortal"),
                vec![],
                Some(json!({ "required": true, "content": { "application/x-www-form-urlencoded": { "schema": { "type": "object", "required": ["token"], "properties": { "token": { "type": "string" } } } } } })),
                json!({ "303": { "description": "To /portal, with the session cookie." }, "401": text("Expired, used or unknown.", "text/html"), "403": { "$ref": "#/components/responses/Problem403" } }))),
        }),
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

    let wait = || {
        query(
            "wait",
            json!({ "type": "string", "examples": ["20s"] }),
            "Long poll: wait up to this (at most 60s) for an event when none is there yet.",
        )
    };
    let tenant_param = || {
        query(
            "tenant",
            json!({ "type": "string" }),
            "Admin only: this tenant (left out: events of no tenant).",
        )
    };
    let page_size = || {
        query(
            "page_size",
            json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
            "Events per answer (default 50).",
        )
    };
    let name = || path_param("name", "The consumer's name.");
    put(
        "/feed",
        json!({ "get": finish(op("Read the feed after a cursor, in commit order (a long poll)", "feed", "readFeed"),
        vec![
            query("after", json!({ "type": "string" }), "A `next_cursor` answered before; left out: from the oldest event kept."),
            wait(),
            query("types", json!({ "type": "string", "examples": ["payment.*,refund.created"] }), "Comma-separated event-type patterns (`a.b`, `a.*`, `*`)."),
            page_size(),
            tenant_param(),
        ], None,
        responses(vec![("200", ok("Events after the cursor (maybe none) and the cursor to read after them.", schema_ref("FeedPage")))], &["503"])) }),
    );
    put(
        "/consumers",
        json!({
            "post": finish(op("Create a consumer: a feed reader whose acknowledged cursor Herald keeps", "feed", "createConsumer"), vec![],
                Some(json_body(schema_ref("CreateConsumer"))),
                responses(vec![("201", ok("Created.", schema_ref("Consumer")))], &["409"])),
            "get": finish(op("List consumers", "feed", "listConsumers"), vec![tenant_param()], None,
                responses(vec![("200", ok("Every consumer of the tenant.", list_of("consumers", "Consumer")))], &[]))
        }),
    );
    put(
        "/consumers/{name}",
        json!({
            "get": finish(op("Get a consumer", "feed", "getConsumer"), vec![name(), tenant_param()], None,
                responses(vec![("200", ok("The consumer.", schema_ref("Consumer")))], &["404"])),
            "delete": finish(op("Delete a consumer", "feed", "deleteConsumer"), vec![name(), tenant_param()], None,
                responses(vec![("204", json!({ "description": "Deleted." }))], &["404"]))
        }),
    );
    put(
        "/consumers/{name}/events",
        json!({ "get": finish(op("Read a consumer's events after its acknowledged cursor (a long poll)", "feed", "readConsumerEvents"),
        vec![name(), wait(), page_size(), tenant_param()], None,
        responses(vec![("200", ok("Events after the acknowledged cursor (maybe none).", schema_ref("FeedPage")))], &["404", "503"])) }),
    );
    put(
        "/consumers/{name}:ack",
        json!({ "post": finish(op("Acknowledge: move the consumer's cursor forward", "feed", "ackConsumer"), vec![name(), tenant_param()],
        Some(json_body(json!({ "type": "object", "required": ["cursor"], "additionalProperties": false, "properties": { "cursor": { "type": "string" } } }))),
        responses(vec![("200", ok("The consumer (unchanged when the cursor is at or behind its own).", schema_ref("Consumer")))], &["404"])) }),
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
        "/webhooks/{id}:test",
        json!({ "post": finish(op("Send a `webhook.test` event to this webhook alone (whatever it subscribes to or filters)", "webhooks", "testWebhook"), vec![id()],
        Some(json!({ "required": false, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "properties": { "event_type": { "type": "string", "description": "A registered type: its schema's first `examples` entry goes in `data.example`." } } } } } })),
        responses(vec![("202", ok("The test event's id.", json!({ "type": "object", "properties": { "webhook": { "type": "string" }, "event": { "type": "string" } } })))], &["404", "422"])) }),
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
