//! Broker routes against the real brokers on loopback, consumed with real clients: every
//! event arrives, in key order, with its dedupe id; a broker that goes away mid-stream and
//! comes back loses nothing; a message refused for good is dead-lettered and `:redeliver`
//! sends it again. Each broker's tests run when its variable is set
//! (`HERALD_TEST_NATS_URL`, `HERALD_TEST_RABBITMQ_URL`, `HERALD_TEST_REDIS_URL`,
//! `HERALD_TEST_KAFKA_BOOTSTRAP`) and print "skipped: …" otherwise.

mod common;

use common::kafka::PrivateTansu;
use common::proxy::Proxy;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

const KEYS: [&str; 3] = ["pay_1", "pay_2", "pay_3"];

/// NATS tests share the server; the one that restarts it runs alone.
static NATS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn broker_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            // Straight to stderr, past the test harness's capture, so CI logs show the skip.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {var} is not set, so this test has no broker to talk to (scripts/ci-brokers.sh sets it)"
            );
            None
        }
    }
}

/// A topic no earlier run used (brokers keep topics; tests never delete them).
fn fresh(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn config(broker: &str, topic: &str, broker_table: &str) -> String {
    format!(
        r#"
[[routes]]
name = "test-route"
events = ["payment.*"]
broker = "{broker}"
topic = "{topic}"
key = "/data/payment_id"

[brokers]
timeout = "3s"
max_backoff = "1s"

{broker_table}
"#
    )
}

/// One event as posted: its id, its key and its place in its key's line.
#[derive(Debug, Clone)]
struct Posted {
    id: String,
    key: String,
    n: usize,
}

/// Posts `per_key` events for each key, keys interleaved, numbered from `from`.
async fn post_events(app: &TestApp, per_key: usize, from: usize) -> Vec<Posted> {
    let mut out = Vec::new();
    for n in from..from + per_key {
        for key in KEYS {
            let r = app
                .post(
                    "/events",
                    ADMIN,
                    json!({ "type": "payment.updated", "key": key,
                            "data": { "payment_id": key, "n": n } }),
                )
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
            out.push(Posted {
                id: r.body["id"].as_str().unwrap().to_owned(),
                key: key.to_owned(),
                n,
            });
        }
    }
    out
}

async fn route_deliveries(app: &TestApp) -> Vec<Value> {
    let r = app
        .get("/deliveries?route=test-route&page_size=1000", ADMIN)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["deliveries"].as_array().unwrap().clone()
}

/// Waits (at most 60 s) until `count` route deliveries have succeeded.
async fn all_published(app: &TestApp, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = route_deliveries(app).await;
        if d.len() == count && d.iter().all(|d| d["status"] == "succeeded") {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all {count} deliveries were published: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 60 s) until the route's deliveries satisfy `check`; shows them if they never do.
async fn deliveries_until(app: &TestApp, what: &str, check: impl Fn(&[Value]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = route_deliveries(app).await;
        if check(&d) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks what a consumer read: `(dedupe id from the broker's header or field, body)` in
/// the order read (per partition for Kafka). Every posted event is there, its dedupe id is
/// its event id, and each key's events come in the order they were posted.
fn check_arrivals(posted: &[Posted], got: &[(String, Value)]) {
    let mut seen = HashSet::new();
    let mut last_n: HashMap<String, i64> = HashMap::new();
    for (dedupe_id, body) in got {
        assert_eq!(
            body["id"].as_str(),
            Some(dedupe_id.as_str()),
            "dedupe id is the event id: {body}"
        );
        assert_eq!(body["type"], "payment.updated");
        let key = body["data"]["payment_id"].as_str().unwrap().to_owned();
        assert_eq!(body["key"], key.as_str());
        assert!(body["sequence"].as_i64().unwrap() >= 1, "{body}");
        if !seen.insert(dedupe_id.clone()) {
            continue; // an at-least-once repeat; consumers drop it by id
        }
        let n = body["data"]["n"].as_i64().unwrap();
        if let Some(prev) = last_n.get(&key) {
            assert!(n > *prev, "key {key}: event {n} arrived after {prev}");
        }
        last_n.insert(key, n);
    }
    for p in posted {
        assert!(
            seen.contains(&p.id),
            "event {} ({} #{}) never arrived",
            p.id,
            p.key,
            p.n
        );
    }
    assert_eq!(seen.len(), posted.len(), "only the posted events arrive");
}

async fn check_delivery_log(app: &TestApp, broker: &str, topic: &str) {
    let d = route_deliveries(app).await;
    let first = &d[0];
    assert_eq!(first["route"], "test-route");
    assert_eq!(first["broker"], broker);
    assert_eq!(first["topic"], topic);
    assert!(first["webhook_id"].is_null());
    let one = app
        .get(
            &format!("/deliveries/{}", first["id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    let log = one.body["attempt_log"].as_array().unwrap();
    assert!(!log.is_empty());
    assert!(log.last().unwrap()["error"].is_null(), "{log:?}");
}

// ---------------------------------------------------------------- NATS JetStream

async fn read_nats(url: &str, topic: &str, expected: usize) -> Vec<(String, Value)> {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    use futures::StreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let name = js.stream_by_subject(format!("{topic}.>")).await.unwrap();
    let mut stream = js.get_stream(&name).await.unwrap();
    let stored = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            filter_subject: format!("{topic}.>"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < stored.max(expected) {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("JetStream stopped handing out messages")
            .unwrap()
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .expect("Nats-Msg-Id header");
        let trace = m
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.to_string())
            .expect("traceparent header");
        assert_trace_of(&trace, &id);
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            m.subject.as_str(),
            format!("{topic}.{}", body["data"]["payment_id"].as_str().unwrap())
        );
        m.ack().await.unwrap();
        out.push((id, body));
    }
    out
}

#[tokio::test]
async fn nats_gets_every_event_in_key_order_with_its_msg_id() {
    let Some(url) = broker_env("HERALD_TEST_NATS_URL") else {
        return;
    };
    let _shared = NATS.read().await;
    let topic = fresh("herald.test.");
    let app = spawn_app(&config(
        "nats",
        &topic,
        &format!("[brokers.nats]\nurl = \"{url}\""),
    ))
    .await;
    let posted = post_events(&app, 8, 0).await;
    all_published(&app, posted.len()).await;
    let got = read_nats(&url, &topic, posted.len()).await;
    // JetStream dropped any duplicate by Nats-Msg-Id: exactly one message per event.
    assert_eq!(got.len(), posted.len());
    check_arrivals(&posted, &got);
    check_delivery_log(&app, "nats", &topic).await;
}

#[tokio::test]
async fn nats_going_away_mid_stream_loses_nothing() {
    let Some(url) = broker_env("HERALD_TEST_NATS_URL") else {
        return;
    };
    let _shared = NATS.read().await;
    let target = url.trim_start_matches("nats://").to_owned();
    let proxy = Proxy::start(target).await;
    let topic = fresh("herald.test.");
    let herald_url = format!("nats://127.0.0.1:{}", proxy.port);
    let app = spawn_app(&config(
        "nats",
        &topic,
        &format!("[brokers.nats]\nurl = \"{herald_url}\""),
    ))
    .await;
    let mut posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;

    proxy.down();
    posted.extend(post_events(&app, 4, 4).await);
    // The broker is away: publishes fail and are recorded, nothing is dropped.
    app.eventually("a failed attempt while the broker is away", || async {
        route_deliveries(&app)
            .await
            .iter()
            .any(|d| d["status"] == "pending" && d["last_error"].is_string())
    })
    .await;
    proxy.up();
    posted.extend(post_events(&app, 2, 8).await);
    all_published(&app, posted.len()).await;

    let got = read_nats(&url, &topic, posted.len()).await;
    assert_eq!(got.len(), posted.len());
    check_arrivals(&posted, &got);
}

#[tokio::test]
async fn nats_refusing_an_oversized_message_dead_letters_it_and_keeps_the_line_moving() {
    let Some(url) = broker_env("HERALD_TEST_NATS_URL") else {
        return;
    };
    let _shared = NATS.read().await;
    let topic = fresh("herald.test.");
    let config = format!(
        "max_body_bytes = 4194304\n{}",
        config("nats", &topic, &format!("[brokers.nats]\nurl = \"{url}\""))
    );
    let app = spawn_app(&config).await;
    // Over the server's max_payload (1 MiB by default): refused however often it is sent.
    let big = "x".repeat(1_200_000);
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.updated", "data": { "payment_id": "pay_1", "n": 0, "blob": big } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let small = post_events(&app, 1, 1).await;
    app.eventually(
        "the big one dead-lettered and the rest published",
        || async {
            let d = route_deliveries(&app).await;
            d.len() == 4
                && d.iter().filter(|d| d["status"] == "failed").count() == 1
                && d.iter().filter(|d| d["status"] == "succeeded").count() == 3
        },
    )
    .await;
    let dead = app
        .get("/deliveries?route=test-route&status=failed", ADMIN)
        .await
        .body["deliveries"][0]
        .clone();
    assert_eq!(dead["event_id"], r.body["id"]);
    assert!(
        dead["last_error"].as_str().unwrap().contains("payload"),
        "{dead}"
    );
    // `:redeliver` tries it again (and the broker refuses it again).
    let path = format!("/deliveries/{}:redeliver", dead["id"].as_str().unwrap());
    assert_eq!(
        app.post(&path, ADMIN, json!({})).await.status,
        StatusCode::ACCEPTED
    );
    let one = format!("/deliveries/{}", dead["id"].as_str().unwrap());
    app.eventually("a second refusal", || async {
        let d = app.get(&one, ADMIN).await.body;
        d["status"] == "failed" && d["attempt_log"].as_array().unwrap().len() == 2
    })
    .await;
    let got = read_nats(&url, &topic, small.len()).await;
    check_arrivals(&small, &got);
}

// ---------------------------------------------------------------- RabbitMQ

struct AmqpReader {
    _conn: lapin::Connection,
    consumer: lapin::Consumer,
}

/// Binds a fresh queue to the topic exchange before anything is published.
async fn amqp_reader(url: &str, exchange: &str) -> AmqpReader {
    use lapin::options::*;
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str().into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            "herald-test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    AmqpReader {
        _conn: conn,
        consumer,
    }
}

async fn read_amqp(reader: &mut AmqpReader, expected: usize) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while out.len() < expected {
        let d = tokio::time::timeout(Duration::from_secs(10), reader.consumer.next())
            .await
            .expect("RabbitMQ stopped delivering")
            .unwrap()
            .unwrap();
        let id = d
            .properties
            .message_id()
            .as_ref()
            .expect("message_id")
            .to_string();
        assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
        let body: Value = serde_json::from_slice(&d.data).unwrap();
        assert_eq!(
            d.routing_key.as_str(),
            body["data"]["payment_id"].as_str().unwrap()
        );
        out.push((id, body));
    }
    out
}

#[tokio::test]
async fn rabbitmq_gets_every_event_in_key_order_with_its_message_id() {
    let Some(url) = broker_env("HERALD_TEST_RABBITMQ_URL") else {
        return;
    };
    let exchange = fresh("herald.test.");
    let mut reader = amqp_reader(&url, &exchange).await;
    let app = spawn_app(&config(
        "rabbitmq",
        &exchange,
        &format!("[brokers.rabbitmq]\nurl = \"{url}\""),
    ))
    .await;
    let posted = post_events(&app, 8, 0).await;
    all_published(&app, posted.len()).await;
    let got = read_amqp(&mut reader, posted.len()).await;
    check_arrivals(&posted, &got);
    check_delivery_log(&app, "rabbitmq", &exchange).await;
}

#[tokio::test]
async fn rabbitmq_going_away_mid_stream_loses_nothing() {
    let Some(url) = broker_env("HERALD_TEST_RABBITMQ_URL") else {
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5672)
    );
    let proxy = Proxy::start(target).await;
    let mut via_proxy = parsed.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let exchange = fresh("herald.test.");
    let mut reader = amqp_reader(&url, &exchange).await;
    let app = spawn_app(&config(
        "rabbitmq",
        &exchange,
        &format!("[brokers.rabbitmq]\nurl = \"{via_proxy}\""),
    ))
    .await;
    let mut posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;
    proxy.down();
    posted.extend(post_events(&app, 4, 4).await);
    app.eventually("a failed attempt while the broker is away", || async {
        route_deliveries(&app)
            .await
            .iter()
            .any(|d| d["status"] == "pending" && d["last_error"].is_string())
    })
    .await;
    proxy.up();
    posted.extend(post_events(&app, 2, 8).await);
    all_published(&app, posted.len()).await;
    let got = read_amqp(&mut reader, posted.len()).await;
    check_arrivals(&posted, &got);
}

/// A channel of the test's own, for setting the broker up the way a test needs it.
async fn amqp_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// An exchange of the wrong kind under the topic's name is a refusal for good (RabbitMQ
/// answers 406 PRECONDITION_FAILED however often Herald asks): the delivery is dead-lettered
/// with that error; once the exchange is fixed, `:redeliver` sends it.
#[tokio::test]
async fn rabbitmq_refusing_a_message_dead_letters_it_and_redeliver_sends_it_once_fixed() {
    use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
    let Some(url) = broker_env("HERALD_TEST_RABBITMQ_URL") else {
        return;
    };
    let exchange = fresh("herald.test.");
    let (_conn, ch) = amqp_channel(&url).await;
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let app = spawn_app(&config(
        "rabbitmq",
        &exchange,
        &format!("[brokers.rabbitmq]\nurl = \"{url}\""),
    ))
    .await;
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.updated", "key": "pay_1", "data": { "payment_id": "pay_1", "n": 0 } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let event_id = r.body["id"].as_str().unwrap().to_owned();
    app.eventually("the delivery to be dead-lettered", || async {
        route_deliveries(&app)
            .await
            .first()
            .is_some_and(|d| d["status"] == "failed")
    })
    .await;
    let d = route_deliveries(&app).await.remove(0);
    let error = d["last_error"].as_str().unwrap();
    assert!(
        error.contains("PRECONDITION_FAILED") && error.contains("inequivalent arg 'type'"),
        "{d}"
    );
    let failed = app
        .get("/deliveries?status=failed&route=test-route", ADMIN)
        .await;
    assert_eq!(failed.body["deliveries"].as_array().unwrap().len(), 1);

    // Fixed on the broker's side (the wrong exchange goes; a consumer binds to a topic
    // exchange of that name), then redelivered by hand: it goes through.
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let mut reader = amqp_reader(&url, &exchange).await;
    let r = app
        .post(
            &format!("/deliveries/{}:redeliver", d["id"].as_str().unwrap()),
            ADMIN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    all_published(&app, 1).await;
    let got = read_amqp(&mut reader, 1).await;
    assert_eq!(got[0].0, event_id);
    let one = app
        .get(&format!("/deliveries/{}", d["id"].as_str().unwrap()), ADMIN)
        .await;
    assert_eq!(one.body["attempt_log"].as_array().unwrap().len(), 2);
}

/// A nack (here from a full queue with `x-overflow = reject-publish`) is back-pressure, not
/// a refusal for good: the delivery stays pending, keeps its line, and goes out once the
/// queue has room.
#[tokio::test]
async fn rabbitmq_nack_from_a_full_queue_is_retried_not_dead_lettered() {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable};
    let Some(url) = broker_env("HERALD_TEST_RABBITMQ_URL") else {
        return;
    };
    let exchange = fresh("herald.test.");
    let (_conn, ch) = amqp_channel(&url).await;
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str().into(),
        exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let app = spawn_app(&config(
        "rabbitmq",
        &exchange,
        &format!("[brokers.rabbitmq]\nurl = \"{url}\""),
    ))
    .await;
    let mut posted = Vec::new();
    for n in 0..2 {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({ "type": "payment.updated", "key": "pay_1", "data": { "payment_id": "pay_1", "n": n } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        posted.push(Posted {
            id: r.body["id"].as_str().unwrap().to_owned(),
            key: "pay_1".into(),
            n,
        });
    }
    // The first fills the queue; the second is nacked, and retried.
    app.eventually("the second event to be nacked", || async {
        route_deliveries(&app).await.iter().any(|d| {
            d["event_id"] == posted[1].id.as_str()
                && d["status"] == "pending"
                && d["last_error"].as_str().is_some_and(|e| e.contains("nack"))
        })
    })
    .await;
    assert!(
        route_deliveries(&app)
            .await
            .iter()
            .all(|d| d["status"] != "failed"),
        "a nack is not a dead letter"
    );
    // A consumer makes room: the retried message goes in.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nacked message never arrived: {got:?}"
        );
        match ch
            .basic_get(q.name().as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => {
                let id = m.properties.message_id().as_ref().unwrap().to_string();
                got.push((
                    id,
                    serde_json::from_slice::<Value>(&m.delivery.data).unwrap(),
                ));
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    check_arrivals(&posted, &got);
    let d = all_published(&app, 2).await;
    let second = d
        .iter()
        .find(|d| d["event_id"] == posted[1].id.as_str())
        .unwrap();
    assert!(second["attempts"].as_u64().unwrap() >= 2, "{second}");
}

// ---------------------------------------------------------------- Redis Streams

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_tokio_connection()
        .await
        .unwrap()
}

async fn read_redis(url: &str, stream: &str) -> Vec<(String, Value)> {
    let mut conn = redis_conn(url).await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let id: String = entry.get("id").expect("id field");
            let trace: String = entry.get("traceparent").expect("traceparent field");
            assert_trace_of(&trace, &id);
            let event: String = entry.get("event").expect("event field");
            let key: String = entry.get("key").expect("key field");
            let body: Value = serde_json::from_str(&event).unwrap();
            assert_eq!(body["data"]["payment_id"], key.as_str());
            (id, body)
        })
        .collect()
}

#[tokio::test]
async fn redis_gets_every_event_in_key_order_with_its_id_field() {
    let Some(url) = broker_env("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let stream = fresh("herald:test:");
    let app = spawn_app(&config(
        "redis",
        &stream,
        &format!("[brokers.redis]\nurl = \"{url}\""),
    ))
    .await;
    let posted = post_events(&app, 8, 0).await;
    all_published(&app, posted.len()).await;
    let got = read_redis(&url, &stream).await;
    check_arrivals(&posted, &got);
    check_delivery_log(&app, "redis", &stream).await;
    // Each publish is counted in /metrics.
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let published: u64 = text
        .lines()
        .find(|l| {
            l.starts_with("herald_broker_publish_total{broker=\"redis\",outcome=\"published\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the redis publish counter");
    assert_eq!(published, posted.len() as u64, "{text}");
}

#[tokio::test]
async fn redis_trims_streams_when_maxlen_is_set() {
    let Some(url) = broker_env("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let stream = fresh("herald:test:");
    let app = spawn_app(&config(
        "redis",
        &stream,
        &format!("[brokers.redis]\nurl = \"{url}\"\nmaxlen = 5"),
    ))
    .await;
    let posted = post_events(&app, 100, 0).await;
    all_published(&app, posted.len()).await;
    let mut conn = redis_conn(&url).await;
    let len: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    // `MAXLEN ~` trims whole macro nodes (100 entries by default), so "about" 5.
    assert!(len < posted.len() as u64, "the stream was trimmed: {len}");
}

#[tokio::test]
async fn redis_going_away_mid_stream_loses_nothing() {
    let Some(url) = broker_env("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(6379)
    );
    let proxy = Proxy::start(target).await;
    let mut via_proxy = parsed.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let stream = fresh("herald:test:");
    let app = spawn_app(&config(
        "redis",
        &stream,
        &format!("[brokers.redis]\nurl = \"{via_proxy}\""),
    ))
    .await;
    let mut posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;
    proxy.down();
    posted.extend(post_events(&app, 4, 4).await);
    app.eventually("a failed attempt while the broker is away", || async {
        route_deliveries(&app)
            .await
            .iter()
            .any(|d| d["status"] == "pending" && d["last_error"].is_string())
    })
    .await;
    proxy.up();
    posted.extend(post_events(&app, 2, 8).await);
    all_published(&app, posted.len()).await;
    check_arrivals(&posted, &read_redis(&url, &stream).await);
}

#[tokio::test]
async fn a_broker_unreachable_at_start_is_not_fatal_and_is_retried() {
    let Some(url) = broker_env("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(6379)
    );
    let proxy = Proxy::start(target).await;
    proxy.down();
    let mut via_proxy = parsed.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let stream = fresh("herald:test:");
    // Starts and takes events although the broker cannot be reached.
    let app = spawn_app(&config(
        "redis",
        &stream,
        &format!("[brokers.redis]\nurl = \"{via_proxy}\""),
    ))
    .await;
    let posted = post_events(&app, 2, 0).await;
    app.eventually("a failed attempt to reach the broker", || async {
        route_deliveries(&app).await.iter().any(|d| {
            d["status"] == "pending"
                && d["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Redis"))
        })
    })
    .await;
    proxy.up();
    all_published(&app, posted.len()).await;
    check_arrivals(&posted, &read_redis(&url, &stream).await);
}

#[tokio::test]
async fn redis_refusing_a_message_dead_letters_it_and_redeliver_sends_it() {
    let Some(url) = broker_env("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let stream = fresh("herald:test:");
    // A plain string under the stream's name: XADD answers WRONGTYPE, however often asked.
    let mut conn = redis_conn(&url).await;
    let _: () = redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let app = spawn_app(&config(
        "redis",
        &stream,
        &format!("[brokers.redis]\nurl = \"{url}\""),
    ))
    .await;
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.updated", "key": "pay_1", "data": { "payment_id": "pay_1", "n": 0 } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let event_id = r.body["id"].as_str().unwrap().to_owned();
    app.eventually("the delivery to be dead-lettered", || async {
        route_deliveries(&app)
            .await
            .first()
            .is_some_and(|d| d["status"] == "failed")
    })
    .await;
    let d = route_deliveries(&app).await.remove(0);
    assert!(
        d["last_error"].as_str().unwrap().contains("WRONGTYPE"),
        "{d}"
    );
    let failed = app
        .get("/deliveries?status=failed&route=test-route", ADMIN)
        .await;
    assert_eq!(failed.body["deliveries"].as_array().unwrap().len(), 1);

    // Fixed on the broker side, then redelivered by hand: it goes through.
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    let r = app
        .post(
            &format!("/deliveries/{}:redeliver", d["id"].as_str().unwrap()),
            ADMIN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    all_published(&app, 1).await;
    let got = read_redis(&url, &stream).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, event_id);
    let one = app
        .get(&format!("/deliveries/{}", d["id"].as_str().unwrap()), ADMIN)
        .await;
    assert_eq!(one.body["attempt_log"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn tenant_keys_do_not_see_broker_deliveries() {
    let Some(url) = broker_env("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let stream = fresh("herald:test:");
    let app = spawn_app(&config(
        "redis",
        &stream,
        &format!("[brokers.redis]\nurl = \"{url}\""),
    ))
    .await;
    let (tenant, key) = app.tenant("acme").await;
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.updated", "tenant": tenant, "data": { "payment_id": "pay_9" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let all = all_published(&app, 1).await;
    let mine = app.get("/deliveries", &key).await;
    assert_eq!(mine.body["deliveries"].as_array().unwrap().len(), 0);
    let one = app
        .get(
            &format!("/deliveries/{}", all[0]["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(one.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------- Kafka

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
    let topic = fresh("herald-test-");
    let app = spawn_app(&config("kafka", &topic, &kafka_table(&bootstrap))).await;
    let posted = post_events(&app, 8, 0).await;
    all_published(&app, posted.len()).await;

    let records = read_kafka(&bootstrap, &topic).await;
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
    check_arrivals(&posted, &kafka_arrivals(&records));
    check_delivery_log(&app, "kafka", &topic).await;
}

#[tokio::test]
async fn kafka_refusing_an_oversized_record_dead_letters_it_and_keeps_the_line_moving() {
    let Some(bootstrap) = broker_env("HERALD_TEST_KAFKA_BOOTSTRAP") else {
        return;
    };
    let topic = fresh("herald-test-");
    let config = format!(
        "max_body_bytes = 4194304\n{}",
        config("kafka", &topic, &kafka_table(&bootstrap))
    );
    let app = spawn_app(&config).await;
    // Over the producer's message.max.bytes (1 000 000, as a Kafka broker's default):
    // refused before it is sent, however often it is sent.
    let big = "x".repeat(1_200_000);
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.updated", "key": "pay_1",
                    "data": { "payment_id": "pay_1", "n": 0, "blob": big } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    // Later events of the same key (and of others) go out after the dead letter.
    let small = post_events(&app, 1, 1).await;
    deliveries_until(
        &app,
        "the big one dead-lettered and the rest published",
        |d| {
            d.len() == 4
                && d.iter().filter(|d| d["status"] == "failed").count() == 1
                && d.iter().filter(|d| d["status"] == "succeeded").count() == 3
        },
    )
    .await;
    let dead = app
        .get("/deliveries?route=test-route&status=failed", ADMIN)
        .await
        .body["deliveries"][0]
        .clone();
    assert_eq!(dead["event_id"], r.body["id"]);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("MessageSizeTooLarge"),
        "{dead}"
    );
    let path = format!("/deliveries/{}:redeliver", dead["id"].as_str().unwrap());
    assert_eq!(
        app.post(&path, ADMIN, json!({})).await.status,
        StatusCode::ACCEPTED
    );
    let one = format!("/deliveries/{}", dead["id"].as_str().unwrap());
    app.eventually("a second refusal", || async {
        let d = app.get(&one, ADMIN).await.body;
        d["status"] == "failed" && d["attempt_log"].as_array().unwrap().len() == 2
    })
    .await;
    check_arrivals(
        &small,
        &kafka_arrivals(&read_kafka(&bootstrap, &topic).await),
    );
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
    deliveries_until(
        &app,
        "the invalid one dead-lettered and the rest published",
        |d| {
            d.len() == 4
                && d.iter().filter(|d| d["status"] == "failed").count() == 1
                && d.iter().filter(|d| d["status"] == "succeeded").count() == 3
        },
    )
    .await;
    let dead = app
        .get("/deliveries?route=test-route&status=failed", ADMIN)
        .await
        .body["deliveries"][0]
        .clone();
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
    let topic = fresh("herald-test-");
    let app = spawn_app(&config("kafka", &topic, &kafka_table(&broker.bootstrap))).await;
    let mut posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;

    broker.proxy.down();
    posted.extend(post_events(&app, 4, 4).await);
    app.eventually("a failed attempt while the broker is away", || async {
        route_deliveries(&app)
            .await
            .iter()
            .any(|d| d["status"] == "pending" && d["last_error"].is_string())
    })
    .await;
    broker.proxy.up();
    posted.extend(post_events(&app, 2, 8).await);
    all_published(&app, posted.len()).await;
    check_arrivals(
        &posted,
        &kafka_arrivals(&read_kafka(&broker.bootstrap, &topic).await),
    );
}

// ---------------------------------------------------------------- a real broker restart

/// The start command of the machine's NATS service (see the machine notes), and a stop
/// that ends the one process listening on 4222, by its pid.
const NATS_START: &str =
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
     -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log";
const NATS_STOP: &str = "pid=$(ss -ltnpH 'sport = :4222' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2); \
     [ -n \"$pid\" ] && kill -TERM \"$pid\" && while kill -0 \"$pid\" 2>/dev/null; do sleep 0.1; done";

fn sh(script: &str) {
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success(), "`{script}` failed");
}

async fn nats_listening() -> bool {
    tokio::net::TcpStream::connect("127.0.0.1:4222")
        .await
        .is_ok()
}

/// Starts NATS again however the test ends, so the machine's service is left running.
struct RestartNatsOnDrop;

impl Drop for RestartNatsOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{NATS_START}; for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && exit 0; sleep 0.1; done"
            ))
            .status();
    }
}

/// Stops the real NATS server mid-stream and starts it again. It restarts a service the
/// whole machine uses, so it runs only when `HERALD_TEST_RESTART_NATS=1` as well.
#[tokio::test]
async fn nats_server_restarted_mid_stream_loses_nothing() {
    let Some(url) = broker_env("HERALD_TEST_NATS_URL") else {
        return;
    };
    if std::env::var("HERALD_TEST_RESTART_NATS").as_deref() != Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: HERALD_TEST_RESTART_NATS is not 1 (this test stops and starts the machine's NATS server)"
        );
        return;
    }
    let _alone = NATS.write().await;
    let topic = fresh("herald.test.");
    let app = spawn_app(&config(
        "nats",
        &topic,
        &format!("[brokers.nats]\nurl = \"{url}\""),
    ))
    .await;
    let mut posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;

    let _guard = RestartNatsOnDrop;
    sh(NATS_STOP);
    assert!(!nats_listening().await, "NATS stopped");
    posted.extend(post_events(&app, 4, 4).await);
    app.eventually("a failed attempt while NATS is down", || async {
        route_deliveries(&app)
            .await
            .iter()
            .any(|d| d["status"] == "pending" && d["last_error"].is_string())
    })
    .await;
    sh(NATS_START);
    app.eventually("NATS to listen again", nats_listening).await;
    posted.extend(post_events(&app, 2, 8).await);
    all_published(&app, posted.len()).await;

    let got = read_nats(&url, &topic, posted.len()).await;
    assert_eq!(got.len(), posted.len());
    check_arrivals(&posted, &got);
}

/// A W3C `traceparent` whose trace id is the event id's 128 bits, as on webhook deliveries.
fn assert_trace_of(traceparent: &str, event_id: &str) {
    let id = herald_core::ids::EventId::parse(event_id).unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], format!("{:032x}", id.as_u128()), "{traceparent}");
    assert!(
        parts[2].len() == 16 && parts[2] != "0000000000000000",
        "{traceparent}"
    );
    assert_eq!(parts[3], "01");
}
