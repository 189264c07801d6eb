//! RabbitMQ: the shared scenarios, and a nack from a full queue (back-pressure, not a
//! refusal for good).

use super::scenarios::{self, Refusing};
use super::*;

struct RabbitMq {
    url: String,
}

impl Broker for RabbitMq {
    const KIND: &'static str = "rabbitmq";
    const TOPIC_PREFIX: &'static str = "herald.test.";
    type Reader = AmqpReader;

    fn table(&self, url: &str) -> String {
        format!("[brokers.rabbitmq]\nurl = \"{url}\"")
    }
    fn url(&self) -> &str {
        &self.url
    }
    async fn reader(&self, exchange: &str) -> AmqpReader {
        amqp_reader(&self.url, exchange).await
    }
    async fn read(
        &self,
        reader: &mut AmqpReader,
        _: &str,
        expected: usize,
    ) -> Vec<(String, Value)> {
        read_amqp(reader, expected).await
    }
}

impl Proxied for RabbitMq {
    fn target(&self) -> String {
        url_target(&self.url, 5672)
    }
    fn through(&self, port: u16) -> String {
        url_through(&self.url, port)
    }
}

/// An exchange of the wrong kind under the topic's name is a refusal for good (RabbitMQ
/// answers 406 PRECONDITION_FAILED however often Herald asks); fixed, the wrong exchange
/// goes (and a consumer binds to a topic exchange of that name).
impl Refusing for RabbitMq {
    type Breakage = (lapin::Connection, lapin::Channel);

    async fn break_topic(&self, exchange: &str) -> Self::Breakage {
        use lapin::options::ExchangeDeclareOptions;
        let (conn, ch) = amqp_channel(&self.url).await;
        ch.exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
        (conn, ch)
    }

    async fn fix_topic(&self, (_conn, ch): &mut Self::Breakage, exchange: &str) {
        use lapin::options::ExchangeDeleteOptions;
        ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
}

fn rabbitmq() -> Option<RabbitMq> {
    Some(RabbitMq {
        url: broker_env("HERALD_TEST_RABBITMQ_URL")?,
    })
}

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
    let Some(rabbitmq) = rabbitmq() else {
        return;
    };
    scenarios::every_event_in_key_order(&rabbitmq).await;
}

#[tokio::test]
async fn rabbitmq_going_away_mid_stream_loses_nothing() {
    let Some(rabbitmq) = rabbitmq() else {
        return;
    };
    let (proxy, herald_url) = proxied(&rabbitmq).await;
    scenarios::going_away_mid_stream_loses_nothing(&rabbitmq, &proxy, &herald_url).await;
}

/// A channel of the test's own, for setting the broker up the way a test needs it.
async fn amqp_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// The delivery is dead-lettered with RabbitMQ's error; once the exchange is fixed,
/// `:redeliver` sends it.
#[tokio::test]
async fn rabbitmq_refusing_a_message_dead_letters_it_and_redeliver_sends_it_once_fixed() {
    let Some(rabbitmq) = rabbitmq() else {
        return;
    };
    scenarios::refused_is_dead_lettered_and_redeliver_sends_it_once_fixed(
        &rabbitmq,
        &["PRECONDITION_FAILED", "inequivalent arg 'type'"],
    )
    .await;
}

/// A nack (here from a full queue with `x-overflow = reject-publish`) is back-pressure, not
/// a refusal for good: the delivery stays pending, keeps its line, and goes out once the
/// queue has room.
#[tokio::test]
async fn rabbitmq_nack_from_a_full_queue_is_retried_not_dead_lettered() {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable};
    let Some(RabbitMq { url }) = rabbitmq() else {
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
