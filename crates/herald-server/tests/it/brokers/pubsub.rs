//! Google Cloud Pub/Sub against Google's emulator (`HERALD_TEST_PUBSUB_EMULATOR_HOST`),
//! read back through the emulator's REST API (a consumer that shares no code with Herald's
//! gRPC publisher): the shared scenarios, a missing topic refused for good, and an emulator
//! of the test's own (`HERALD_TEST_GCLOUD`, the `gcloud` binary) stopped mid-stream.

use super::scenarios::{self, Refusing, Restartable, Run};
use super::*;
use base64::Engine;

const PROJECT: &str = "herald-test";

struct PubSub {
    /// `host:port` of the emulator.
    host: String,
    /// `http://host:port`, for the test's own REST calls.
    url: String,
    http: reqwest::Client,
    own: Option<OwnEmulator>,
}

/// A subscription being read: its name.
struct Subscription {
    name: String,
}

impl Broker for PubSub {
    const KIND: &'static str = "pubsub";
    const TOPIC_PREFIX: &'static str = "herald-test-";
    /// Over Pub/Sub's 10 MiB.
    const OVERSIZE: usize = 11_000_000;
    type Reader = Subscription;

    fn table(&self, url: &str) -> String {
        let host = url.trim_start_matches("http://");
        format!("[brokers.pubsub]\nproject = \"{PROJECT}\"\nemulator_host = \"{host}\"")
    }
    fn url(&self) -> &str {
        &self.url
    }
    async fn reader(&self, topic: &str) -> Subscription {
        self.create_topic(topic).await;
        let name = format!("{topic}-sub");
        let r = self
            .http
            .put(format!(
                "{}/v1/projects/{PROJECT}/subscriptions/{name}",
                self.url
            ))
            .json(&json!({
                "topic": format!("projects/{PROJECT}/topics/{topic}"),
                "enableMessageOrdering": true,
                "ackDeadlineSeconds": 60,
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        Subscription { name }
    }
    async fn read(
        &self,
        sub: &mut Subscription,
        _topic: &str,
        expected: usize,
    ) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        let mut ids = HashSet::new();
        let base = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{}",
            self.url, sub.name
        );
        while ids.len() < expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {expected} messages came",
                ids.len()
            );
            let r: Value = self
                .http
                .post(format!("{base}:pull"))
                .json(&json!({ "maxMessages": 100, "returnImmediately": true }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let received = r["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if received.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let mut acks = Vec::new();
            for m in received {
                acks.push(m["ackId"].clone());
                let msg = &m["message"];
                let attrs = &msg["attributes"];
                let id = attrs["herald-event-id"].as_str().unwrap().to_owned();
                assert_eq!(attrs["herald-event-type"], "payment.updated");
                assert_trace_of(attrs["traceparent"].as_str().unwrap(), &id);
                let data = base64::engine::general_purpose::STANDARD
                    .decode(msg["data"].as_str().unwrap())
                    .unwrap();
                let body: Value = serde_json::from_slice(&data).unwrap();
                assert_eq!(
                    msg["orderingKey"], body["key"],
                    "the ordering key is the key"
                );
                ids.insert(id.clone());
                got.push((id, body));
            }
            let r = self
                .http
                .post(format!("{base}:acknowledge"))
                .json(&json!({ "ackIds": acks }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{:?}", r.text().await);
        }
        got
    }
}

impl PubSub {
    fn new(host: String, own: Option<OwnEmulator>) -> PubSub {
        PubSub {
            url: format!("http://{host}"),
            host,
            http: reqwest::Client::new(),
            own,
        }
    }

    async fn create_topic(&self, topic: &str) {
        let r = self
            .http
            .put(format!("{}/v1/projects/{PROJECT}/topics/{topic}", self.url))
            .send()
            .await
            .unwrap();
        // 409: made already (by `fix_topic`).
        assert!(
            r.status().is_success() || r.status() == StatusCode::CONFLICT,
            "{:?}",
            r.text().await
        );
    }
}

impl Proxied for PubSub {
    fn target(&self) -> String {
        self.host.clone()
    }
    fn through(&self, port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }
}

/// The topic does not exist until the test makes it: Herald's publishes get NOT_FOUND,
/// however often it tries.
impl Refusing for PubSub {
    type Breakage = ();
    async fn break_topic(&self, _topic: &str) {}
    async fn fix_topic(&self, _: &mut (), topic: &str) {
        self.create_topic(topic).await;
    }
}

impl Restartable for PubSub {
    async fn stop(&mut self) {
        self.own
            .as_mut()
            .expect("an emulator of the test's own")
            .stop()
            .await;
    }
    async fn start(&mut self) {
        self.own
            .as_mut()
            .expect("an emulator of the test's own")
            .start()
            .await;
    }
}

/// `gcloud beta emulators pubsub start` on a free port, in its own process group (gcloud
/// starts the emulator's Java process as a child).
struct OwnEmulator {
    gcloud: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnEmulator {
    async fn launch(gcloud: &str) -> OwnEmulator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut own = OwnEmulator {
            gcloud: gcloud.to_owned(),
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        own.start().await;
        own
    }

    async fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.dir.path().join("emulator.log")).unwrap();
        let child = std::process::Command::new(&self.gcloud)
            .args([
                "beta",
                "emulators",
                "pubsub",
                "start",
                &format!("--host-port=127.0.0.1:{}", self.port),
                &format!("--data-dir={}", self.dir.path().display()),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start the Pub/Sub emulator");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Pub/Sub emulator did not listen on {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&mut self) {
        self.kill();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnEmulator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pubsub() -> Option<PubSub> {
    Some(PubSub::new(
        broker_env("HERALD_TEST_PUBSUB_EMULATOR_HOST")?,
        None,
    ))
}

#[tokio::test]
async fn pubsub_gets_every_event_in_key_order_with_ordering_keys_and_attributes() {
    let Some(pubsub) = pubsub() else {
        return;
    };
    let Run { app, topic, .. } = scenarios::every_event_in_key_order(&pubsub).await;
    let d = route_deliveries(&app).await;
    assert_eq!(d[0]["topic"], topic.as_str());
}

#[tokio::test]
async fn pubsub_message_over_10_mib_is_dead_lettered_and_the_line_keeps_moving() {
    let Some(pubsub) = pubsub() else {
        return;
    };
    scenarios::oversized_is_dead_lettered_and_the_line_keeps_moving(
        &pubsub,
        Some("pay_1"),
        "over Pub/Sub's limit of 10485760 bytes",
    )
    .await;
}

#[tokio::test]
async fn pubsub_missing_topic_is_dead_lettered_and_redeliver_sends_it_once_made() {
    let Some(pubsub) = pubsub() else {
        return;
    };
    scenarios::refused_is_dead_lettered_and_redeliver_sends_it_once_fixed(
        &pubsub,
        &["Pub/Sub refused the message for good", "NotFound"],
    )
    .await;
}

#[tokio::test]
async fn pubsub_emulator_restarted_mid_stream_loses_nothing() {
    if broker_env("HERALD_TEST_PUBSUB_EMULATOR_HOST").is_none() {
        return;
    }
    let Some(gcloud) = broker_env("HERALD_TEST_GCLOUD") else {
        return;
    };
    let own = OwnEmulator::launch(&gcloud).await;
    let mut pubsub = PubSub::new(format!("127.0.0.1:{}", own.port), Some(own));
    scenarios::emulator_restarted_mid_stream_loses_nothing(&mut pubsub).await;
}
