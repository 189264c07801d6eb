//! AsyncAPI 3.0 for the events Herald sends to webhooks: one channel per event type,
//! each with its headers (both signature formats), its payload and the delivery
//! guarantees in force.

use super::{event_schema, event_types, human, operation_of_event};
use crate::config::Config;
use herald_dispatch::brokers::BrokerKind;
use serde_json::{json, Map, Value};

fn message_id(event: &str) -> String {
    event.replace('.', "_")
}

fn operation_shape() -> Value {
    json!({
        "type": "object",
        "description": "The final Operation: `{ name, metadata, done: true, response | error }`.",
        "required": ["name", "metadata", "done"],
        "properties": {
            "name": { "type": "string" },
            "metadata": { "type": "object" },
            "done": { "const": true },
            "response": {},
            "error": { "type": "object", "required": ["code", "message"],
                       "properties": { "code": { "type": "string" }, "message": { "type": "string" } } }
        }
    })
}

pub fn asyncapi(config: &Config, server_url: &str) -> Value {
    let w = &config.webhooks;
    let schedule: Vec<String> = w.schedule.waits().iter().map(|d| human(*d)).collect();
    let window = human(w.schedule.window());
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for event in event_types(config) {
        let id = message_id(&event);
        let data = event_schema(config, &event).unwrap_or_else(|| {
            if operation_of_event(config, &event).is_some() {
                operation_shape()
            } else {
                json!({ "description": "Whatever the publisher put in `data` (no schema registered in config)." })
            }
        });
        messages.insert(
            id.clone(),
            json!({
                "name": event,
                "title": event,
                "contentType": "application/json",
                "summary": format!("`{event}`, POSTed to every webhook of the event's tenant that subscribes to it."),
                "headers": { "$ref": "#/components/schemas/DeliveryHeaders" },
                "payload": {
                    "type": "object",
                    "required": ["id", "type", "created_at", "data"],
                    "properties": {
                        "id": { "type": "string", "description": "Dedupe on it: deliveries are at-least-once." },
                        "type": { "const": event },
                        "created_at": { "type": "string", "format": "date-time" },
                        "key": { "type": "string", "description": "The ordering key, when the event has one." },
                        "sequence": { "type": "integer", "minimum": 1,
                                      "description": "1, 2, 3… per (tenant, key): keep the highest applied per key, ignore older ones." },
                        "data": data
                    }
                },
                "correlationId": { "location": "$message.header#/X-Event-Id" }
            }),
        );
        channels.insert(
            event.clone(),
            json!({
                "address": null,
                "title": event,
                "description": "The URL each subscribed webhook registered (`POST /webhooks`).",
                "messages": { id.clone(): { "$ref": format!("#/components/messages/{id}") } }
            }),
        );
        operations.insert(
            format!("send_{id}"),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{event}") },
                "summary": format!("Herald delivers `{event}`."),
                "description": format!(
                    "At-least-once. A 2xx within {} acknowledges; anything else is retried after {} (±10 % jitter), a window of {window}; then the delivery is `failed` and can be redelivered. 410 Gone disables the webhook. Ordering: not guaranteed on a webhook registered as usual (use `sequence`); on one registered with `\"ordering\": \"key\"`, one key's events arrive one at a time in `sequence` order, the next only after the previous was acknowledged, and a dead one holds its key until redelivered or skipped.",
                    human(w.timeout), schedule.join(", ")
                ),
                "messages": [ { "$ref": format!("#/channels/{event}/messages/{id}") } ]
            }),
        );
    }
    // Broker routes: one channel per route, on a server per broker in use.
    let mut servers = Map::new();
    servers.insert(
        "subscriber".into(),
        json!({
            "host": "subscriber.example.com",
            "protocol": "https",
            "description": "Your webhook endpoint: Herald POSTs to the URL you registered.",
            "security": [ { "$ref": "#/components/securitySchemes/heraldSignature" } ]
        }),
    );
    for route in &config.routes {
        let protocol = match route.broker {
            BrokerKind::Nats => "nats",
            BrokerKind::RabbitMq => "amqp",
            BrokerKind::Redis => "redis",
            BrokerKind::Kafka => "kafka",
            BrokerKind::Sqs => "sqs",
            BrokerKind::PubSub => "googlepubsub",
        };
        let url = config.brokers.url(route.broker);
        let url = url.as_str();
        let host = url
            .split("://")
            .last()
            .unwrap_or(url)
            .rsplit('@')
            .next()
            .unwrap_or(url)
            .split('/')
            .next()
            .unwrap_or(url)
            .to_owned();
        servers.insert(route.broker.to_string(), json!({ "host": host, "protocol": protocol, "description": format!("The {} broker Herald publishes routes to.", route.broker) }));
        let topic = route.topic.clone();
        let carried: Vec<String> = event_types(config)
            .into_iter()
            .filter(|e| {
                super::routes_for(config, e)
                    .iter()
                    .any(|r| r.name == route.name)
            })
            .collect();
        let mut route_messages = Map::new();
        for event in &carried {
            let id = message_id(event);
            route_messages.insert(
                id.clone(),
                json!({ "$ref": format!("#/components/messages/{id}") }),
            );
        }
        let channel_id = format!("route_{}", message_id(&route.name.replace(':', "_")));
        let address = if route.broker == BrokerKind::Nats {
            format!("{topic}.{{key}}")
        } else {
            topic.clone()
        };
        channels.insert(
            channel_id.clone(),
            json!({
                "address": address,
                "title": route.name,
                "description": format!(
                    "Events matching {} published on {} `{topic}`; the key is the event's `{}`: {}",
                    route.events.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "), route.broker, route.key,
                    super::broker_contract(route.broker, &topic)
                ),
                "servers": [ { "$ref": format!("#/servers/{}", route.broker) } ],
                "messages": route_messages
            }),
        );
        let refs: Vec<Value> = carried
            .iter()
            .map(|e| json!({ "$ref": format!("#/channels/{channel_id}/messages/{}", message_id(e)) }))
            .collect();
        operations.insert(
            format!("publish_{channel_id}"),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{channel_id}") },
                "summary": format!("Herald publishes to `{topic}` on {}.", route.broker),
                "description": format!("Through Herald's durable outbox: a broker that is down delays messages and loses none; a message it refuses for good is dead-lettered for `:redeliver`. {}", super::broker_contract(route.broker, &topic)),
                "messages": refs
            }),
        );
    }
    let routes_note = if config.routes.is_empty() {
        "No broker routes are configured.".to_owned()
    } else {
        format!(
            "{} broker route(s) are configured; see the `route_*` channels.",
            config.routes.len()
        )
    };
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Herald webhook and broker events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Events Herald POSTs to registered webhooks. Herald format: `X-Signature: sha256=HEX` = HMAC-SHA256(secret, X-Timestamp + \".\" + raw body), several space-separated while a rotated secret is in its {} grace period. Standard Webhooks format: `webhook-signature: v1,BASE64` over `id.timestamp.body`. Receivers should refuse timestamps more than 5 minutes from now. Herald's HTTP API: {server_url} (see /openapi.json). {routes_note}",
                human(w.rotation_grace)
            )
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "DeliveryHeaders": {
                    "type": "object",
                    "properties": {
                        "X-Event-Id": { "type": "string" },
                        "X-Event-Type": { "type": "string" },
                        "X-Timestamp": { "type": "string", "format": "date-time" },
                        "X-Signature": { "type": "string", "pattern": "^sha256=[0-9a-f]{64}( sha256=[0-9a-f]{64})*$" },
                        "webhook-id": { "type": "string" },
                        "webhook-timestamp": { "type": "string" },
                        "webhook-signature": { "type": "string" }
                    }
                }
            },
            "securitySchemes": {
                "heraldSignature": {
                    "type": "httpApiKey",
                    "name": "X-Signature",
                    "in": "header",
                    "description": "HMAC-SHA256 signature of the timestamp and raw body with the webhook's signing secret."
                }
            }
        }
    })
}
