//! Broker publishers: one per broker kind, each publishing one message and waiting for
//! the broker's acknowledgement. Connections are made lazily and remade after a failure,
//! so a broker that is down at start (or restarts) only delays messages.

mod kafka;
mod nats;
mod pubsub;
mod rabbitmq;
mod redis_streams;
mod sqs;

pub use kafka::{KafkaPublisher, KafkaSettings};
pub use nats::{NatsPublisher, NatsSettings};
pub use pubsub::{PubSubPublisher, PubSubSettings, PubSubTarget};
pub use rabbitmq::{RabbitMqPublisher, RabbitMqSettings};
pub use redis_streams::{RedisPublisher, RedisSettings};
pub use sqs::{is_fifo as is_sqs_fifo, SqsCredentials, SqsPublisher, SqsSettings};

use std::future::Future;
use std::pin::Pin;

/// The brokers Herald publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerKind {
    Nats,
    RabbitMq,
    Redis,
    Kafka,
    /// Amazon SQS (standard and FIFO queues).
    Sqs,
    /// Google Cloud Pub/Sub.
    PubSub,
}

impl BrokerKind {
    pub const ALL: [BrokerKind; 6] = [
        Self::Nats,
        Self::RabbitMq,
        Self::Redis,
        Self::Kafka,
        Self::Sqs,
        Self::PubSub,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "nats" => Some(Self::Nats),
            "rabbitmq" => Some(Self::RabbitMq),
            "redis" => Some(Self::Redis),
            "kafka" => Some(Self::Kafka),
            "sqs" => Some(Self::Sqs),
            "pubsub" => Some(Self::PubSub),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Nats => "nats",
            Self::RabbitMq => "rabbitmq",
            Self::Redis => "redis",
            Self::Kafka => "kafka",
            Self::Sqs => "sqs",
            Self::PubSub => "pubsub",
        }
    }
}

impl std::fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message on its way to a broker.
#[derive(Debug, Clone)]
pub struct BrokerMessage {
    /// NATS subject prefix, AMQP exchange, Redis stream, Kafka topic, SQS queue name or
    /// Pub/Sub topic id.
    pub topic: String,
    /// The ordering key: NATS subject suffix, AMQP routing key, Kafka record key, SQS FIFO
    /// `MessageGroupId`, Pub/Sub `ordering_key`.
    pub key: Option<String>,
    /// The event id, which consumers and brokers dedupe on.
    pub event_id: String,
    pub event_type: String,
    /// W3C trace context, the same trace as the event's webhook deliveries
    /// (header `traceparent`, or a stream field for Redis).
    pub traceparent: String,
    /// The event JSON.
    pub payload: Vec<u8>,
}

/// Why a publish did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker could not be reached or did not confirm: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The broker refused this message for good (too large, wrong type, bad subject): retrying
    /// the same message will not help, so it is dead-lettered until someone redelivers it.
    #[error("{0}")]
    Refused(String),
}

pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;

/// Publishes messages to one broker and waits for its acknowledgement.
pub trait Publisher: Send + Sync + 'static {
    fn kind(&self) -> BrokerKind;
    /// Resolves once the broker has acknowledged the message.
    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a>;
    /// Connects now, so a broker that is unreachable at start is reported early.
    fn connect(&self) -> PublishFuture<'_>;
}
