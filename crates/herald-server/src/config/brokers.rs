//! `[brokers]`: one table per broker's connection, and the publishing limits. Routes
//! name their broker as a [`BrokerKind`], parsed once here.

use super::value::FromText;
use super::ConfigError;
use herald_core::duration::serde_text;
use herald_dispatch::brokers::BrokerKind;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

impl FromText for BrokerKind {
    fn from_text(text: &str) -> Result<Self, String> {
        BrokerKind::parse(text)
            .ok_or_else(|| format!("unknown broker `{text}`; use nats, rabbitmq, redis or kafka"))
    }
}

/// `[brokers]`: one table per broker, and the publishing limits. Every section's
/// defaults are its `Default` (a key left out takes it).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokersConfig {
    /// How long a publish may take, the broker's acknowledgement included.
    #[serde(with = "serde_text")]
    pub timeout: Duration,
    /// The longest wait between retries while a broker is unreachable (messages are never
    /// dropped for that; the wait doubles from 500ms up to this).
    #[serde(with = "serde_text")]
    pub max_backoff: Duration,
    pub nats: NatsConfig,
    pub rabbitmq: RabbitMqConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
}

impl Default for BrokersConfig {
    fn default() -> Self {
        Self {
            timeout: super::webhooks::default_timeout(),
            max_backoff: Duration::from_secs(30),
            nats: Default::default(),
            rabbitmq: Default::default(),
            redis: Default::default(),
            kafka: Default::default(),
        }
    }
}

impl BrokersConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.timeout < Duration::from_millis(100) {
            return invalid("brokers.timeout must be at least 100ms");
        }
        if self.max_backoff < Duration::from_millis(500) {
            return invalid("brokers.max_backoff must be at least 500ms");
        }
        if self.kafka.partitions < 1 || self.kafka.replication_factor < 1 {
            return invalid("brokers.kafka: partitions and replication_factor must be at least 1");
        }
        Ok(())
    }

    /// The URL (Kafka: the bootstrap servers) Herald connects to for `kind`.
    pub fn url(&self, kind: BrokerKind) -> &str {
        match kind {
            BrokerKind::Nats => &self.nats.url,
            BrokerKind::RabbitMq => &self.rabbitmq.url,
            BrokerKind::Redis => &self.redis.url,
            BrokerKind::Kafka => &self.kafka.bootstrap,
        }
    }
}

/// `[brokers.nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        let url = "nats://127.0.0.1:4222".into();
        Self { url }
    }
}

/// `[brokers.rabbitmq]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitMqConfig {
    pub url: String,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
        Self { url }
    }
}

/// `[brokers.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Trim each stream to about this many entries (`XADD MAXLEN ~`); unset keeps all.
    pub maxlen: Option<u64>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let url = "redis://127.0.0.1:6379".into();
        Self { url, maxlen: None }
    }
}

/// `[brokers.kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port`, comma-separated; checked at load.
    #[serde(deserialize_with = "bootstrap")]
    pub bootstrap: String,
    /// Partitions of a topic Herald creates because it was missing.
    pub partitions: i32,
    pub replication_factor: i16,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".into(),
            partitions: 3,
            replication_factor: 1,
        }
    }
}

/// A comma-separated list of `host:port`, refused at the first server that is not one.
fn bootstrap<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    match text.split(',').map(str::trim).find(|s| !is_host_port(s)) {
        Some(bad) => Err(serde::de::Error::custom(format!(
            "`{bad}` is not host:port (a comma-separated list, like \"127.0.0.1:9092\")"
        ))),
        None => Ok(text),
    }
}

/// `host:port` with a non-empty host (no scheme) and a port number.
fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains("://")
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}
