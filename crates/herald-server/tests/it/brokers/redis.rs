//! Redis Streams: the shared scenarios, stream trimming, a broker unreachable at start,
//! and broker deliveries hidden from tenant keys.

use super::scenarios::{self, Refusing, Run};
use super::*;

struct Redis {
    url: String,
}

impl Broker for Redis {
    const KIND: &'static str = "redis";
    const TOPIC_PREFIX: &'static str = "herald:test:";
    type Reader = ();

    fn table(&self, url: &str) -> String {
        format!("[brokers.redis]\nurl = \"{url}\"")
    }
    fn url(&self) -> &str {
        &self.url
    }
    async fn reader(&self, _stream: &str) {}
    async fn read(&self, _: &mut (), stream: &str, _expected: usize) -> Vec<(String, Value)> {
        read_redis(&self.url, stream).await
    }
}

impl Proxied for Redis {
    fn target(&self) -> String {
        url_target(&self.url, 6379)
    }
    fn through(&self, port: u16) -> String {
        url_through(&self.url, port)
    }
}

/// A plain string under the stream's name: XADD answers WRONGTYPE, however often asked;
/// fixed, the string goes.
impl Refusing for Redis {
    type Breakage = ::redis::aio::MultiplexedConnection;

    async fn break_topic(&self, stream: &str) -> Self::Breakage {
        let mut conn = redis_conn(&self.url).await;
        let _: () = ::redis::cmd("SET")
            .arg(stream)
            .arg("not a stream")
            .query_async(&mut conn)
            .await
            .unwrap();
        conn
    }

    async fn fix_topic(&self, conn: &mut Self::Breakage, stream: &str) {
        let _: () = ::redis::cmd("DEL")
            .arg(stream)
            .query_async(conn)
            .await
            .unwrap();
    }
}

fn redis() -> Option<Redis> {
    Some(Redis {
        url: broker_env("HERALD_TEST_REDIS_URL")?,
    })
}

async fn redis_conn(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_tokio_connection()
        .await
        .unwrap()
}

async fn read_redis(url: &str, stream: &str) -> Vec<(String, Value)> {
    let mut conn = redis_conn(url).await;
    let reply: ::redis::streams::StreamRangeReply = ::redis::cmd("XRANGE")
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
    let Some(redis) = redis() else {
        return;
    };
    let Run { app, posted, .. } = scenarios::every_event_in_key_order(&redis).await;
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
    let Some(Redis { url }) = redis() else {
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
    let len: u64 = ::redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    // `MAXLEN ~` trims whole macro nodes (100 entries by default), so "about" 5.
    assert!(len < posted.len() as u64, "the stream was trimmed: {len}");
}

#[tokio::test]
async fn redis_going_away_mid_stream_loses_nothing() {
    let Some(redis) = redis() else {
        return;
    };
    let (proxy, herald_url) = proxied(&redis).await;
    scenarios::going_away_mid_stream_loses_nothing(&redis, &proxy, &herald_url).await;
}

#[tokio::test]
async fn a_broker_unreachable_at_start_is_not_fatal_and_is_retried() {
    let Some(redis) = redis() else {
        return;
    };
    let (proxy, via_proxy) = proxied(&redis).await;
    proxy.down();
    let stream = fresh("herald:test:");
    // Starts and takes events although the broker cannot be reached.
    let app = spawn_app(&config("redis", &stream, &redis.table(&via_proxy))).await;
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
    check_arrivals(&posted, &read_redis(&redis.url, &stream).await);
}

#[tokio::test]
async fn redis_refusing_a_message_dead_letters_it_and_redeliver_sends_it() {
    let Some(redis) = redis() else {
        return;
    };
    scenarios::refused_is_dead_lettered_and_redeliver_sends_it_once_fixed(&redis, &["WRONGTYPE"])
        .await;
}

#[tokio::test]
async fn tenant_keys_do_not_see_broker_deliveries() {
    let Some(Redis { url }) = redis() else {
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
