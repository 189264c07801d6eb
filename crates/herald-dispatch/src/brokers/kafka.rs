//! Kafka protocol (rskafka, pure Rust): the key picks the partition (murmur2, as Kafka's
//! own default partitioner does), the record carries the event id in a header, and the
//! topic is created when missing. rskafka has no idempotent producer: duplicates after a
//! retry are possible and consumers dedupe on the `herald-event-id` header.

use super::{BrokerKind, BrokerMessage, PublishError, PublishFuture, Publisher};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap: String,
    /// Partitions of a topic Herald creates.
    pub partitions: i32,
    pub replication_factor: i16,
}

pub struct KafkaPublisher {
    settings: KafkaSettings,
    state: Mutex<Option<Connected>>,
}

struct Connected {
    client: Client,
    /// Each topic's partition clients, by partition number.
    topics: HashMap<String, Vec<Arc<PartitionClient>>>,
}

impl KafkaPublisher {
    pub fn new(settings: KafkaSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(None),
        }
    }

    async fn partition_for(
        &self,
        message: &BrokerMessage,
    ) -> Result<Arc<PartitionClient>, PublishError> {
        let unavailable = |e: rskafka::client::error::Error| {
            PublishError::Unavailable(format!("Kafka at {}: {e}", self.settings.bootstrap))
        };
        let mut state = self.state.lock().await;
        if state.is_none() {
            let client = ClientBuilder::new(
                self.settings
                    .bootstrap
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect(),
            )
            .client_id("herald")
            .build()
            .await
            .map_err(unavailable)?;
            *state = Some(Connected {
                client,
                topics: HashMap::new(),
            });
        }
        let connected = state.as_mut().expect("connected above");
        if !connected.topics.contains_key(&message.topic) {
            let mut partitions = connected
                .client
                .list_topics()
                .await
                .map_err(unavailable)?
                .into_iter()
                .find(|t| t.name == message.topic)
                .map(|t| t.partitions.into_iter().collect::<Vec<_>>())
                .unwrap_or_default();
            if partitions.is_empty() {
                let controller = connected.client.controller_client().map_err(unavailable)?;
                controller
                    .create_topic(
                        message.topic.clone(),
                        self.settings.partitions,
                        self.settings.replication_factor,
                        10_000,
                    )
                    .await
                    .or_else(|e| {
                        if e.to_string().contains("TopicAlreadyExists") {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(unavailable)?;
                tracing::info!(topic = %message.topic, partitions = self.settings.partitions, "created a Kafka topic");
                partitions = (0..self.settings.partitions).collect();
            }
            let mut clients = Vec::with_capacity(partitions.len());
            for p in partitions {
                clients.push(Arc::new(
                    connected
                        .client
                        .partition_client(message.topic.clone(), p, UnknownTopicHandling::Retry)
                        .await
                        .map_err(unavailable)?,
                ));
            }
            connected.topics.insert(message.topic.clone(), clients);
        }
        let clients = &connected.topics[&message.topic];
        let index = match &message.key {
            Some(k) => partition_of(k.as_bytes(), clients.len()),
            // Unkeyed: anywhere; the event id spreads them.
            None => partition_of(message.event_id.as_bytes(), clients.len()),
        };
        Ok(clients[index].clone())
    }
}

/// Kafka's default partitioner: `toPositive(murmur2(key)) % partitions`.
pub(crate) fn partition_of(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions.max(1)
}

/// MurmurHash2 as in Kafka's `Utils.murmur2` (seed 0x9747b28c).
pub(crate) fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

fn classify(e: rskafka::client::error::Error) -> PublishError {
    let text = e.to_string();
    if [
        "MessageTooLarge",
        "RecordListTooLarge",
        "InvalidRecord",
        "CorruptMessage",
    ]
    .iter()
    .any(|needle| text.contains(needle))
    {
        PublishError::Refused(format!("Kafka refused the record: {text}"))
    } else {
        PublishError::Unavailable(format!("Kafka produce failed: {text}"))
    }
}

impl Publisher for KafkaPublisher {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Kafka
    }

    fn connect(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.is_none() {
                let client = ClientBuilder::new(vec![self.settings.bootstrap.clone()])
                    .client_id("herald")
                    .build()
                    .await
                    .map_err(|e| {
                        PublishError::Unavailable(format!(
                            "cannot connect to Kafka at {}: {e}",
                            self.settings.bootstrap
                        ))
                    })?;
                *state = Some(Connected {
                    client,
                    topics: HashMap::new(),
                });
            }
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a> {
        Box::pin(async move {
            let partition = self.partition_for(message).await?;
            let mut headers = BTreeMap::new();
            headers.insert(
                "herald-event-id".to_owned(),
                message.event_id.as_bytes().to_vec(),
            );
            headers.insert(
                "herald-event-type".to_owned(),
                message.event_type.as_bytes().to_vec(),
            );
            headers.insert(
                "traceparent".to_owned(),
                message.traceparent.as_bytes().to_vec(),
            );
            let record = Record {
                key: message.key.as_ref().map(|k| k.as_bytes().to_vec()),
                value: Some(message.payload.clone()),
                headers,
                timestamp: now(),
            };
            let result = partition
                .produce(vec![record], Compression::NoCompression)
                .await
                .map(|_| ())
                .map_err(classify);
            if matches!(result, Err(PublishError::Unavailable(_))) {
                // Metadata may be stale (leader moved, broker restarted): look it up afresh.
                *self.state.lock().await = None;
            }
            result
        })
    }
}

fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    rskafka::chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
