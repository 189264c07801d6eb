//! Kafka: the shared scenarios (against the shared broker, or a tansu of the test's own
//! for an outage), the partitioner, a record the broker refuses, and lost acknowledgements.

use super::scenarios::{self, Run};
use super::tansu::{KafkaProxy, PrivateTansu};
use super::*;

struct Kafka {
    bootstrap: String,
}

impl Broker for Kafka {
    const KIND: &'static str = "kafka";
    const TOPIC_PREFIX: &'static str = "herald-test-";
    type Reader = ();

    fn table(&self, bootstrap: &str) -> String {
        kafka_table(bootstrap)
    }
    fn url(&self) -> &str {
        &self.bootstrap
    }
    async fn reader(&self, _topic: &str) {}
    async fn read(&self, _: &mut (), topic: &str, _expected: usize) -> Vec<(String, Value)> {
        kafka_arrivals(&read_kafka(&self.bootstrap, topic).await)
    }
}

impl Outage for KafkaProxy {
    fn down(&self) {
        KafkaProxy::down(self)
    }
    fn up(&self) {
        KafkaProxy::up(self)
    }
}

/// One record as a consumer reads it.
struct KafkaRecord {
    partition: i32,
    key: Option<String>,
    /// The `herald-event-id` header.
    event_id: String,
    body: Value,
}

/// Every record of every partition of `topic`, read from offset 0 by a real client
/// (rskafka), partition by partition, each in its offset order.
async fn read_kafka(bootstrap: &str, topic: &str) -> Vec<KafkaRecord> {
    use rskafka::client::partition::UnknownTopicHandling;
    let client = rskafka::client::ClientBuilder::new(vec![bootstrap.to_owned()])
        .build()
        .await
        .unwrap();
    let mut partitions = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == topic)
        .expect("the topic exists")
        .partitions
        .into_iter()
        .collect::<Vec<_>>();
    partitions.sort();
    let mut out = Vec::new();
    for p in partitions {
        let pc = client
            .partition_client(topic.to_owned(), p, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let mut offset = 0;
        loop {
            let (records, high_watermark) = pc
                .fetch_records(offset, 1..10_000_000, 1_000)
                .await
                .unwrap();
            for r in &records {
                let record = &r.record;
                let event_id =
                    String::from_utf8(record.headers["herald-event-id"].clone()).unwrap();
                assert_trace_of(
                    &String::from_utf8(record.headers["traceparent"].clone()).unwrap(),
                    &event_id,
                );
                out.push(KafkaRecord {
                    partition: p,
                    key: record
                        .key
                        .as_ref()
                        .map(|k| String::from_utf8(k.clone()).unwrap()),
                    event_id,
                    body: serde_json::from_slice(record.value.as_ref().unwrap()).unwrap(),
                });
            }
            offset = records.last().map_or(offset, |r| r.offset + 1);
            if offset >= high_watermark || records.is_empty() {
                break;
            }
        }
    }
    out
}

fn kafka_arrivals(records: &[KafkaRecord]) -> Vec<(String, Value)> {
    records
        .iter()
        .map(|r| (r.event_id.clone(), r.body.clone()))
        .collect()
}

/// Each event id once, at most: what the idempotent producer promises for its own retries.
fn assert_no_duplicates(records: &[KafkaRecord]) {
    let mut seen = HashSet::new();
    for r in records {
        assert!(
            seen.insert(r.event_id.clone()),
            "event {} is in the topic twice",
            r.event_id
        );
    }
}

/// MurmurHash2 as in Kafka's Java `Utils.murmur2` (seed 0x9747b28c), written out here so
/// the test checks the partitioner Herald's producer uses against the Java client's.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
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

/// The partition the Java client's default partitioner picks for a key.
fn java_partition(key: &str, partitions: i32) -> i32 {
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions as u32) as i32
}

#[test]
fn murmur2_matches_kafkas_java_client() {
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

fn kafka_table(bootstrap: &str) -> String {
    format!("[brokers.kafka]\nbootstrap = \"{bootstrap}\"\npartitions = 3")
}

/// The tansu binary, for tests that start a broker of their own.
fn tansu_bin() -> Option<String> {
    broker_env("HERALD_TEST_TANSU")
}

#[tokio::test]
async fn kafka_gets_every_event_in_key_order_on_its_keys_partition() {
    let Some(bootstrap) = broker_env("HERALD_TEST_KAFKA_BOOTSTRAP") else {
        return;
    };
    let kafka = Kafka { bootstrap };
    let Run { topic, .. } = scenarios::every_event_in_key_order(&kafka).await;

    let records = read_kafka(&kafka.bootstrap, &topic).await;
    let partitions: HashSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.iter().all(|p| (0..3).contains(p)),
        "{partitions:?}"
    );
    for r in &records {
        let key = r.key.as_deref().expect("a record key");
        assert_eq!(
            key, r.body["data"]["payment_id"],
            "the key is the route's key"
        );
        assert_eq!(
            r.partition,
            java_partition(key, 3),
            "key {key} is on the partition Java's murmur2 partitioner picks"
        );
    }
}

#[tokio::test]
async fn kafka_refusing_an_oversized_record_dead_letters_it_and_keeps_the_line_moving() {
    let Some(bootstrap) = broker_env("HERALD_TEST_KAFKA_BOOTSTRAP") else {
        return;
    };
    // Over the producer's message.max.bytes (1 000 000, as a Kafka broker's default):
    // refused before it is sent, however often it is sent.
    scenarios::oversized_is_dead_lettered_and_the_line_keeps_moving(
        &Kafka { bootstrap },
        Some("pay_1"),
        "MessageSizeTooLarge",
    )
    .await;
}

#[tokio::test]
async fn kafka_refusing_an_invalid_record_dead_letters_it_and_redeliver_sends_it_once_fixed() {
    let Some(tansu) = tansu_bin() else {
        return;
    };
    let broker = PrivateTansu::start(&tansu).await;
    let topic = fresh("herald-test-");
    // tansu validates each record's value against `<topic>.json`: amounts must be integers.
    let schema = broker.schema_dir.join(format!("{topic}.json"));
    std::fs::write(
        &schema,
        json!({ "type": "object", "properties": { "value": {
            "type": "object",
            "properties": { "data": { "type": "object",
                "properties": { "amount": { "type": "integer" } } } } } } })
        .to_string(),
    )
    .unwrap();
    let app = spawn_app(&config("kafka", &topic, &kafka_table(&broker.bootstrap))).await;
    let bad = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.updated", "key": "pay_1",
                    "data": { "payment_id": "pay_1", "n": 0, "amount": "lots" } }),
        )
        .await;
    assert_eq!(bad.status, StatusCode::ACCEPTED, "{:?}", bad.body);
    let good = post_events(&app, 1, 1).await;
    let dead = one_dead_lettered_three_published(
        &app,
        "the invalid one dead-lettered and the rest published",
    )
    .await;
    assert_eq!(dead["event_id"], bad.body["id"]);
    let error = dead["last_error"].as_str().unwrap();
    assert!(
        error.contains("refused") && error.contains("InvalidRecord"),
        "{dead}"
    );

    // The schema is fixed on the broker's side, then the dead letter is redelivered by hand.
    std::fs::write(
        &schema,
        json!({ "type": "object", "properties": { "value": { "type": "object" } } }).to_string(),
    )
    .unwrap();
    let r = app
        .post(
            &format!("/deliveries/{}:redeliver", dead["id"].as_str().unwrap()),
            ADMIN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    all_published(&app, 4).await;
    let one = app
        .get(
            &format!("/deliveries/{}", dead["id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    let log = one.body["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1]["error"].is_null(), "{log:?}");

    let records = read_kafka(&broker.bootstrap, &topic).await;
    let ids: Vec<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    assert!(ids.contains(&bad.body["id"].as_str().unwrap()), "{ids:?}");
    check_arrivals(
        &good,
        &kafka_arrivals(
            &records
                .into_iter()
                .filter(|r| r.body["data"]["n"] == 1)
                .collect::<Vec<_>>(),
        ),
    );
}

/// The broker writes a batch but its acknowledgement is lost and the connection breaks:
/// the idempotent producer sends the batch again with the same sequence numbers, the broker
/// recognises it, and the topic holds each event once.
#[tokio::test]
async fn kafka_lost_acknowledgements_write_no_duplicates() {
    let Some(tansu) = tansu_bin() else {
        return;
    };
    let broker = PrivateTansu::start(&tansu).await;
    let topic = fresh("herald-test-");
    let app = spawn_app(
        &config("kafka", &topic, &kafka_table(&broker.bootstrap))
            .replace("timeout = \"3s\"", "timeout = \"20s\""),
    )
    .await;
    let mut posted = post_events(&app, 2, 0).await;
    all_published(&app, posted.len()).await;

    broker.proxy.lose_produce_acks(3);
    posted.extend(post_events(&app, 4, 2).await);
    all_published(&app, posted.len()).await;
    assert_eq!(
        broker.proxy.lost_acks(),
        3,
        "three acknowledgements were lost"
    );
    // Each delivery needed one attempt: librdkafka's own retry got the broker's "already have it".
    for d in route_deliveries(&app).await {
        assert_eq!(d["attempts"], 1, "{d}");
    }

    let records = read_kafka(&broker.bootstrap, &topic).await;
    assert_no_duplicates(&records);
    check_arrivals(&posted, &kafka_arrivals(&records));
}

#[tokio::test]
async fn kafka_going_away_mid_stream_loses_nothing() {
    let Some(tansu) = tansu_bin() else {
        return;
    };
    let broker = PrivateTansu::start(&tansu).await;
    let kafka = Kafka {
        bootstrap: broker.bootstrap.clone(),
    };
    scenarios::going_away_mid_stream_loses_nothing(&kafka, &broker.proxy, &broker.bootstrap).await;
}
