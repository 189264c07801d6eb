//! NATS JetStream: the shared scenarios, and a real restart of the machine's NATS server.

use super::scenarios::{self, Run};
use super::*;

struct Nats {
    url: String,
}

impl Broker for Nats {
    const KIND: &'static str = "nats";
    const TOPIC_PREFIX: &'static str = "herald.test.";
    type Reader = ();

    fn table(&self, url: &str) -> String {
        format!("[brokers.nats]\nurl = \"{url}\"")
    }
    fn url(&self) -> &str {
        &self.url
    }
    async fn reader(&self, _topic: &str) {}
    async fn read(&self, _: &mut (), topic: &str, expected: usize) -> Vec<(String, Value)> {
        read_nats(&self.url, topic, expected).await
    }
}

impl Proxied for Nats {
    fn target(&self) -> String {
        self.url.trim_start_matches("nats://").to_owned()
    }
    fn through(&self, port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }
}

fn nats() -> Option<Nats> {
    Some(Nats {
        url: broker_env("HERALD_TEST_NATS_URL")?,
    })
}

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
    let Some(nats) = nats() else {
        return;
    };
    let _shared = NATS.read().await;
    let Run { posted, got, .. } = scenarios::every_event_in_key_order(&nats).await;
    // JetStream dropped any duplicate by Nats-Msg-Id: exactly one message per event.
    assert_eq!(got.len(), posted.len());
}

#[tokio::test]
async fn nats_going_away_mid_stream_loses_nothing() {
    let Some(nats) = nats() else {
        return;
    };
    let _shared = NATS.read().await;
    let (proxy, herald_url) = proxied(&nats).await;
    let Run { posted, got, .. } =
        scenarios::going_away_mid_stream_loses_nothing(&nats, &proxy, &herald_url).await;
    assert_eq!(got.len(), posted.len());
}

#[tokio::test]
async fn nats_refusing_an_oversized_message_dead_letters_it_and_keeps_the_line_moving() {
    let Some(nats) = nats() else {
        return;
    };
    let _shared = NATS.read().await;
    // Over the server's max_payload (1 MiB by default): refused however often it is sent.
    scenarios::oversized_is_dead_lettered_and_the_line_keeps_moving(&nats, None, "payload").await;
}

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
