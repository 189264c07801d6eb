//! Kafka protocol through rdkafka (the bundled librdkafka): an idempotent producer, so its
//! own retries after a lost acknowledgement never write a record twice; the key chooses
//! the partition (murmur2, as Java clients do); the event id rides in a `herald-event-id`
//! header; the topic is created when missing. A record counts as published only once its
//! delivery report says so.

use super::{BrokerKind, BrokerMessage, PublishError, PublishFuture, Publisher};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub bootstrap: String,
    /// Partitions of a topic Herald creates.
    pub partitions: i32,
    pub replication_factor: i16,
    /// How long the outbox gives one publish (`brokers.timeout`). librdkafka gives up on a
    /// record a little sooner, so its verdict (published or not) always comes first and a
    /// record the outbox retries is no longer queued inside the producer as well.
    pub publish_timeout: Duration,
}

impl KafkaSettings {
    /// librdkafka's `message.timeout.ms`: 90 % of the outbox's timeout.
    fn message_timeout(&self) -> Duration {
        (self.publish_timeout * 9 / 10).max(Duration::from_millis(1))
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "herald")
            // Herald creates missing topics itself, with the configured partitions.
            .set("allow.auto.create.topics", "false");
        config
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            // Sequence numbers per partition: the broker drops a retried batch it already has.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // murmur2 of the key, as the Java client's default; unkeyed records go anywhere.
            .set("partitioner", "murmur2_random")
            .set(
                "message.timeout.ms",
                self.message_timeout().as_millis().to_string(),
            );
        config
    }
}

pub struct KafkaPublisher {
    settings: KafkaSettings,
    /// Made on first use; replaced when the producer loses its idempotence state.
    state: Mutex<Option<Arc<Connected>>>,
}

struct Connected {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics seen in the broker's metadata or created by Herald.
    topics: Mutex<HashSet<String>>,
}

impl KafkaPublisher {
    pub fn new(settings: KafkaSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(None),
        }
    }

    async fn connected(&self) -> Result<Arc<Connected>, PublishError> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.as_ref() {
            return Ok(c.clone());
        }
        // Creating the clients does not reach the broker: only a config librdkafka rejects fails here.
        let config_error = |e: KafkaError| {
            PublishError::Unavailable(format!(
                "cannot set up a Kafka client for {}: {e}",
                self.settings.bootstrap
            ))
        };
        let producer: FutureProducer = self
            .settings
            .producer_config()
            .create()
            .map_err(config_error)?;
        let admin: AdminClient<DefaultClientContext> = self
            .settings
            .client_config()
            .create()
            .map_err(config_error)?;
        let connected = Arc::new(Connected {
            producer,
            admin,
            topics: Mutex::new(HashSet::new()),
        });
        *state = Some(connected.clone());
        Ok(connected)
    }

    /// The metadata of `topic` (or of every topic), read off the async threads: rdkafka's
    /// metadata call blocks its thread. `unanswered` words the error when the broker
    /// does not answer.
    async fn fetch_metadata(
        &self,
        connected: &Connected,
        topic: Option<&str>,
        unanswered: impl FnOnce(KafkaError) -> String,
    ) -> Result<Metadata, PublishError> {
        let timeout = self.settings.message_timeout();
        let producer = connected.producer.clone();
        let name = topic.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(name.as_deref(), timeout)
        })
        .await
        .map_err(|e| PublishError::Unavailable(format!("Kafka metadata lookup: {e}")))?
        .map_err(|e| PublishError::Unavailable(unanswered(e)))
    }

    /// Reads the topic's metadata once, and creates the topic when the broker has none.
    async fn ensure_topic(&self, connected: &Connected, topic: &str) -> Result<(), PublishError> {
        let mut known = connected.topics.lock().await;
        if known.contains(topic) {
            return Ok(());
        }
        let timeout = self.settings.message_timeout();
        let metadata = self
            .fetch_metadata(connected, Some(topic), |e| {
                format!(
                    "Kafka at {} did not answer a metadata request: {e}",
                    self.settings.bootstrap
                )
            })
            .await?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            let new = NewTopic::new(
                topic,
                self.settings.partitions,
                TopicReplication::Fixed(self.settings.replication_factor.into()),
            );
            let options = AdminOptions::new().operation_timeout(Some(timeout));
            let results = connected
                .admin
                .create_topics([&new], &options)
                .await
                .map_err(|e| {
                    PublishError::Unavailable(format!("cannot create Kafka topic `{topic}`: {e}"))
                })?;
            for result in results {
                match result {
                    Ok(_) => {
                        tracing::info!(
                            topic,
                            partitions = self.settings.partitions,
                            "created a Kafka topic"
                        )
                    }
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => {
                        return Err(judge(code, &format!("creating topic `{topic}`: {code}")))
                    }
                }
            }
        }
        known.insert(topic.to_owned());
        Ok(())
    }

    /// Sorts a failed publish, and replaces a producer whose idempotence state is lost:
    /// after a fatal error librdkafka refuses every record, and a broker that does not accept
    /// librdkafka's own epoch bump (tansu answers `ProducerFenced` from then on) would refuse
    /// them all too. A new producer gets a new producer id and starts its sequences afresh.
    async fn failed(
        &self,
        connected: &Arc<Connected>,
        topic: &str,
        error: KafkaError,
    ) -> PublishError {
        use RDKafkaErrorCode::*;
        let fatal = connected.producer.client().fatal_error();
        let code = error.rdkafka_error_code();
        let lost_state = matches!(
            code,
            Some(
                ProducerFenced
                    | InvalidProducerEpoch
                    | OutOfOrderSequenceNumber
                    | UnknownProducerId
            )
        );
        if fatal.is_some() || lost_state {
            let mut state = self.state.lock().await;
            if state.as_ref().is_some_and(|c| Arc::ptr_eq(c, connected)) {
                // Dropping a producer purges and flushes it: off the async threads.
                if let Some(old) = state.take() {
                    tokio::task::spawn_blocking(move || drop(old));
                }
                tracing::warn!(error = %error, fatal = ?fatal, "the Kafka producer lost its idempotence state; starting a new one");
            }
            let reason = fatal.map_or_else(|| error.to_string(), |(_, reason)| reason);
            return PublishError::Unavailable(format!(
                "Kafka did not take the record ({reason}); the producer is replaced"
            ));
        }
        if matches!(code, Some(UnknownTopicOrPartition | UnknownTopic)) {
            // Deleted since Herald saw it: look again (and create it) on the next attempt.
            connected.topics.lock().await.remove(topic);
        }
        match code {
            Some(code) => judge(code, &error.to_string()),
            None => PublishError::Unavailable(format!("Kafka publish failed: {error}")),
        }
    }
}

/// Which failures are the record's own and final. A record the broker (or librdkafka, which
/// checks `message.max.bytes` first) refuses as too large or invalid, or on a topic this
/// producer may not write, will be refused however often it is sent: dead-letter it.
/// Everything else (broker down, timeouts, leader moves, a full queue) is worth retrying.
fn judge(code: RDKafkaErrorCode, what: &str) -> PublishError {
    use RDKafkaErrorCode::*;
    let for_good = matches!(
        code,
        MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidMessage
            | MessageBatchTooLarge
            | InvalidRecord
            | BadMessage
            | InvalidTimestamp
            | UnsupportedForMessageFormat
            | PolicyViolation
            | InvalidTopic
            | TopicAuthorizationFailed
    );
    if for_good {
        PublishError::Refused(format!("Kafka refused the record for good: {what}"))
    } else {
        PublishError::Unavailable(format!("Kafka did not take the record: {what}"))
    }
}

impl Publisher for KafkaPublisher {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Kafka
    }

    fn connect(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            let connected = self.connected().await?;
            self.fetch_metadata(&connected, None, |e| {
                format!(
                    "cannot connect to Kafka at {}: {e}",
                    self.settings.bootstrap
                )
            })
            .await?;
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a> {
        Box::pin(async move {
            let connected = self.connected().await?;
            self.ensure_topic(&connected, &message.topic).await?;
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "herald-event-id",
                    value: Some(message.event_id.as_str()),
                })
                .insert(Header {
                    key: "herald-event-type",
                    value: Some(message.event_type.as_str()),
                })
                .insert(Header {
                    key: "traceparent",
                    value: Some(message.traceparent.as_str()),
                });
            let mut record = FutureRecord::to(&message.topic)
                .payload(&message.payload)
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key.as_str());
            }
            // Queued now (or refused at once, say over `message.max.bytes`); the delivery
            // report comes once the broker has acknowledged it to acks=all, or it failed.
            let delivery = match connected.producer.send_result(record) {
                Ok(delivery) => delivery,
                Err((e, _)) => return Err(self.failed(&connected, &message.topic, e).await),
            };
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(self.failed(&connected, &message.topic, e).await),
                Err(_) => Err(PublishError::Unavailable(
                    "the Kafka producer closed before it reported the record".into(),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_refused_for_good_are_dead_lettered_and_the_rest_retried() {
        use RDKafkaErrorCode::*;
        for code in [
            MessageSizeTooLarge,
            InvalidRecord,
            InvalidMessage,
            TopicAuthorizationFailed,
            PolicyViolation,
        ] {
            assert!(
                matches!(judge(code, "x"), PublishError::Refused(_)),
                "{code:?}"
            );
        }
        for code in [
            MessageTimedOut,
            AllBrokersDown,
            BrokerTransportFailure,
            QueueFull,
            NotLeaderForPartition,
            UnknownTopicOrPartition,
            RequestTimedOut,
        ] {
            assert!(
                matches!(judge(code, "x"), PublishError::Unavailable(_)),
                "{code:?}"
            );
        }
    }

    #[test]
    fn librdkafka_gives_up_before_the_outbox_does() {
        // brokers.timeout is at least 100ms (checked at start).
        for ms in [100, 3_000, 10_000, 600_000] {
            let settings = KafkaSettings {
                bootstrap: "127.0.0.1:9092".into(),
                partitions: 3,
                replication_factor: 1,
                publish_timeout: Duration::from_millis(ms),
            };
            let t = settings.message_timeout();
            assert!(
                t > Duration::ZERO && t < settings.publish_timeout,
                "{ms}ms: {t:?}"
            );
        }
    }
}
