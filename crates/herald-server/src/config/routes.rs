//! `[[routes]]`: events matching `events` are published on `broker` under `topic`, keyed
//! by the value at the JSON pointer `key` (DESIGN.md "Broker routes"). A route is read
//! as a [`RouteToml`] and checked whole into a [`RouteConfig`], so the topic is checked
//! against its broker's rules and the default name is settled once.

use super::value;
use super::ConfigError;
use herald_core::pattern::EventPattern;
use herald_dispatch::brokers::BrokerKind;
use serde::Deserialize;
use std::collections::HashSet;

/// A checked route.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RouteToml")]
pub struct RouteConfig {
    /// Names the route in the delivery log; default `<broker>:<topic>`.
    pub name: String,
    pub events: Vec<EventPattern>,
    pub broker: BrokerKind,
    pub topic: String,
    /// JSON pointer into the event (`/data/payment_id`); default `/key`, the event's own key.
    pub key: String,
}

/// A route as the file writes it, each value already of its type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteToml {
    #[serde(default)]
    name: Option<String>,
    #[serde(deserialize_with = "value::list")]
    events: Vec<EventPattern>,
    #[serde(deserialize_with = "value::one")]
    broker: BrokerKind,
    /// Optional here so a missing topic gets a clear message.
    #[serde(default)]
    topic: Option<String>,
    #[serde(default = "default_route_key")]
    key: String,
}

fn default_route_key() -> String {
    "/key".into()
}

impl TryFrom<RouteToml> for RouteConfig {
    type Error = String;

    fn try_from(r: RouteToml) -> Result<Self, String> {
        let topic = r.topic.unwrap_or_default();
        let trimmed = topic.trim();
        if trimmed.is_empty() {
            return Err("`topic` is missing".into());
        }
        if r.events.is_empty() {
            return Err("`events` lists no event type".into());
        }
        if !is_json_pointer(&r.key) {
            return Err(format!(
                "key `{}` is not a JSON pointer (like \"/data/payment_id\")",
                r.key
            ));
        }
        if !topic_ok(r.broker, trimmed) {
            let hint = match r.broker {
                BrokerKind::Sqs => ": an SQS queue name has 1 to 80 letters, digits, `-` or `_` (a FIFO queue's ends in `.fifo`)",
                BrokerKind::PubSub => ": a Pub/Sub topic id has 3 to 255 letters, digits or `-_.~+%`, starts with a letter and not with `goog`",
                _ => "",
            };
            return Err(format!(
                "topic `{trimmed}` is not a valid {} topic{hint}",
                r.broker
            ));
        }
        Ok(Self {
            name: r.name.unwrap_or_else(|| format!("{}:{topic}", r.broker)),
            events: r.events,
            broker: r.broker,
            topic,
            key: r.key,
        })
    }
}

/// Whether `topic` (trimmed) is one `broker` accepts.
fn topic_ok(broker: BrokerKind, topic: &str) -> bool {
    match broker {
        BrokerKind::Nats => {
            !topic.starts_with('.')
                && !topic.ends_with('.')
                && !topic.contains("..")
                && !topic.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        }
        BrokerKind::Kafka => {
            topic.len() <= 249
                && topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }
        BrokerKind::RabbitMq => !topic.contains(char::is_whitespace),
        BrokerKind::Redis => true,
        // A queue name: 1 to 80 letters, digits, `-` and `_`, the `.fifo` suffix counted.
        BrokerKind::Sqs => {
            let name = topic.strip_suffix(".fifo").unwrap_or(topic);
            !name.is_empty()
                && topic.len() <= 80
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        }
        // A topic id: 3 to 255 characters, starting with a letter, not with `goog`.
        BrokerKind::PubSub => {
            (3..=255).contains(&topic.len())
                && topic.starts_with(|c: char| c.is_ascii_alphabetic())
                && !topic.to_ascii_lowercase().starts_with("goog")
                && topic.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '%')
                })
        }
    }
}

/// A JSON pointer (RFC 6901): empty, or `/`-separated tokens where `~` only starts `~0` or `~1`.
fn is_json_pointer(text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let Some(rest) = text.strip_prefix('/') else {
        return false;
    };
    let bytes = rest.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')))
}

/// What one route cannot say alone: its name is unique.
pub(super) fn validate(routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !names.insert(r.name.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "routes[{i}]: route name `{}` is used twice; give each route its own `name`",
                r.name
            )));
        }
    }
    Ok(())
}
