//! Herald describes itself from its config: the one-page async contract of the
//! reference text (Markdown), OpenAPI 3.1 for the HTTP API and AsyncAPI 3.0 for the
//! webhook events. The `herald contract` command and `GET /openapi.json` /
//! `GET /asyncapi.json` both use these generators, so the documents cannot drift apart.

mod asyncapi;
mod markdown;
mod openapi;

pub use asyncapi::asyncapi;
pub use markdown::markdown;
pub use openapi::openapi;

use crate::config::Config;
use herald_core::duration;
use std::time::Duration;

/// Every event type the config implies: the three final events of each operation
/// type, then the declared event types, without repeats, in that order.
pub fn event_types(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in &config.operation_types {
        for end in ["succeeded", "failed", "cancelled"] {
            out.push(format!("{}.{end}", t.name));
        }
    }
    for e in &config.event_types {
        if !out.contains(&e.name) {
            out.push(e.name.clone());
        }
    }
    out
}

/// The declared JSON Schema of an event type's `data`, when the config gives one.
pub(crate) fn event_schema(config: &Config, name: &str) -> Option<serde_json::Value> {
    config
        .event_types
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.schema.clone())
}

/// The operation type whose final event this is (`transcode.succeeded` → `transcode`).
pub(crate) fn operation_of_event<'a>(
    config: &'a Config,
    event: &str,
) -> Option<&'a crate::config::OperationType> {
    let (op, end) = event.rsplit_once('.')?;
    matches!(end, "succeeded" | "failed" | "cancelled")
        .then(|| config.operation_type(op))
        .flatten()
}

/// `45s`, `5m`, `24h`, `3d 3h 35m 5s`: the units the config is written in.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        return duration::format(d);
    }
    let (days, rest) = if secs > 86400 {
        (secs / 86400, secs % 86400)
    } else {
        (0, secs)
    };
    let parts = [
        (days, "d"),
        (rest / 3600, "h"),
        (rest % 3600 / 60, "m"),
        (rest % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a consumer of a route on `broker` publishing to `topic` can count on, for both
/// contract documents: where the event id travels, and which order holds.
pub fn broker_contract(broker: herald_dispatch::brokers::BrokerKind, topic: &str) -> &'static str {
    use herald_dispatch::brokers::BrokerKind::*;
    match broker {
        Nats => "at-least-once; the subject is `<topic>.<key>` and the event id is the JetStream `Nats-Msg-Id` (JetStream drops a repeat within its duplicate window); **in order per key**: a key's later event is never published before its earlier one, retries included.",
        RabbitMq => "at-least-once; the routing key is the key and the event id is the AMQP `message_id`; **in order per key**: a key's later event is never published before its earlier one, retries included.",
        Redis => "at-least-once; the stream entry has `id` (the event id), `type`, `key`, `traceparent` and `event` fields; **in order per key**: a key's later event is never published before its earlier one, retries included.",
        Kafka => "at-least-once; the record key is the key (so one key stays on one partition) and the event id rides in a `herald-event-id` header; **in order per key**: a key's later event is never published before its earlier one, retries included.",
        Sqs if herald_dispatch::brokers::is_sqs_fifo(topic) => "a FIFO queue: `MessageGroupId` is the key and `MessageDeduplicationId` the event id, so a publish retried within SQS's 5-minute deduplication window is delivered once, and one key's events arrive **in order per key**; message attributes `herald-event-id`, `herald-event-type` and `traceparent` (String) carry the event's id, type and trace.",
        Sqs => "a standard queue: at-least-once and **unordered** (Herald sends a key's events in order, but a standard queue may deliver them in any order and more than once: order by `sequence`, drop repeats by id); message attributes `herald-event-id`, `herald-event-type` and `traceparent` (String) carry the event's id, type and trace.",
        PubSub => "at-least-once; `ordering_key` is the key, so a subscription with message ordering enabled receives one key's events **in order per key** (a failed publish holds back that key's later events until it goes through); attributes `herald-event-id`, `herald-event-type` and `traceparent` carry the event's id, type and trace (dedupe on `herald-event-id`).",
    }
}

/// How each configured broker route treats an event type, for the contract pages:
/// `(route name, broker, topic, key pointer)` of every route whose patterns match it.
pub fn routes_for<'a>(config: &'a Config, event_type: &str) -> Vec<&'a crate::config::RouteConfig> {
    config
        .routes
        .iter()
        .filter(|r| herald_core::pattern::any_matches(&r.events, event_type))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_config_writes_them() {
        let h = |s| human(Duration::from_secs(s));
        assert_eq!(h(0), "0s");
        assert_eq!(h(45), "45s");
        assert_eq!(h(300), "5m");
        assert_eq!(h(86400), "24h");
        assert_eq!(h(7 * 86400), "7d");
        assert_eq!(h(3 * 86400 + 3 * 3600 + 35 * 60 + 5), "3d 3h 35m 5s");
        assert_eq!(human(Duration::from_millis(1500)), "1s 500ms");
    }
}
