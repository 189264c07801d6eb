//! Amazon SQS against moto's server (`HERALD_TEST_SQS_URL`): the shared scenarios on a FIFO
//! queue, a standard queue (unordered), FIFO deduplication of a publish sent twice, a
//! missing queue refused for good, boto3 reading what Herald published, and a moto of the
//! test's own (`HERALD_TEST_MOTO_SERVER`, the `moto_server` binary) stopped mid-stream.

use super::scenarios::{self, Refusing, Restartable, Run};
use super::*;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

/// What every test queue allows: SQS's limit before August 2025, as issue #20 states it.
const TEST_MAX_MESSAGE_BYTES: usize = 262_144;

struct Sqs {
    url: String,
    client: aws_sdk_sqs::Client,
    /// FIFO queues (`.fifo`) or standard ones.
    fifo: bool,
    /// A moto of the test's own (for the restart), if this is one.
    own: Option<OwnMoto>,
}

/// A queue being read: its URL.
struct QueueReader {
    url: String,
}

impl Broker for Sqs {
    const KIND: &'static str = "sqs";
    const TOPIC_PREFIX: &'static str = "herald-test-";
    type Reader = QueueReader;

    fn fresh_topic(&self) -> String {
        let name = fresh(Self::TOPIC_PREFIX);
        if self.fifo {
            format!("{name}.fifo")
        } else {
            name
        }
    }
    fn table(&self, url: &str) -> String {
        format!(
            "[brokers.sqs]\nregion = \"us-east-1\"\nendpoint = \"{url}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\""
        )
    }
    fn url(&self) -> &str {
        &self.url
    }
    async fn reader(&self, queue: &str) -> QueueReader {
        QueueReader {
            url: create_queue(&self.client, queue).await,
        }
    }
    async fn read(
        &self,
        reader: &mut QueueReader,
        queue: &str,
        expected: usize,
    ) -> Vec<(String, Value)> {
        let got = receive_all(&self.client, &reader.url, expected).await;
        got.into_iter()
            .map(|m| {
                if self.fifo {
                    assert_eq!(
                        m.group.as_deref(),
                        m.body["key"].as_str(),
                        "MessageGroupId is the key ({queue})"
                    );
                    assert_eq!(m.dedupe.as_deref(), Some(m.id.as_str()));
                }
                (m.id, m.body)
            })
            .collect()
    }
}

impl Proxied for Sqs {
    fn target(&self) -> String {
        url_target(&self.url, 80)
    }
    fn through(&self, port: u16) -> String {
        url_through(&self.url, port)
            .trim_end_matches('/')
            .to_owned()
    }
}

/// The queue does not exist until the test makes it: Herald's publishes are refused
/// (`NonExistentQueue`), however often it tries.
impl Refusing for Sqs {
    type Breakage = ();
    async fn break_topic(&self, _queue: &str) {}
    async fn fix_topic(&self, _: &mut (), queue: &str) {
        create_queue(&self.client, queue).await;
    }
}

impl Restartable for Sqs {
    async fn stop(&mut self) {
        self.own.as_mut().expect("a moto of the test's own").stop();
    }
    async fn start(&mut self) {
        self.own
            .as_mut()
            .expect("a moto of the test's own")
            .start()
            .await;
    }
}

/// `moto_server` on a free port, in its own process group.
struct OwnMoto {
    bin: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnMoto {
    async fn launch(bin: &str) -> OwnMoto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut own = OwnMoto {
            bin: bin.to_owned(),
            port,
            child: None,
        };
        own.start().await;
        own
    }

    async fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto did not listen on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The whole group: a launcher script may stand in front of the Python process.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sqs(fifo: bool) -> Option<Sqs> {
    let url = broker_env("HERALD_TEST_SQS_URL")?;
    Some(Sqs {
        client: sqs_client(&url),
        url,
        fifo,
        own: None,
    })
}

fn sqs_client(url: &str) -> aws_sdk_sqs::Client {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(http)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Makes `queue` (FIFO if its name says so) and returns its URL.
async fn create_queue(client: &aws_sdk_sqs::Client, queue: &str) -> String {
    let mut create = client.create_queue().queue_name(queue).attributes(
        QueueAttributeName::MaximumMessageSize,
        TEST_MAX_MESSAGE_BYTES.to_string(),
    );
    if queue.ends_with(".fifo") {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    create
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {queue}: {e:?}"))
        .queue_url
        .unwrap()
}

/// One message as a consumer reads it.
#[derive(Debug)]
struct Received {
    /// The `herald-event-id` attribute.
    id: String,
    body: Value,
    group: Option<String>,
    dedupe: Option<String>,
}

/// Receives (and deletes) until `expected` distinct event ids have come, at most 60 s.
async fn receive_all(client: &aws_sdk_sqs::Client, url: &str, expected: usize) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut ids = HashSet::new();
    while ids.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {expected} messages came: {got:#?}",
            ids.len()
        );
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let attrs = m.message_attributes.clone().unwrap_or_default();
            let attr = |name: &str| {
                attrs
                    .get(name)
                    .and_then(|v| v.string_value.clone())
                    .unwrap_or_else(|| panic!("attribute {name}: {m:?}"))
            };
            let id = attr("herald-event-id");
            assert_eq!(attr("herald-event-type"), "payment.updated");
            assert_trace_of(&attr("traceparent"), &id);
            let system = m.attributes.clone().unwrap_or_default();
            let body: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            ids.insert(id.clone());
            got.push(Received {
                id,
                body,
                group: system
                    .get(&MessageSystemAttributeName::MessageGroupId)
                    .cloned(),
                dedupe: system
                    .get(&MessageSystemAttributeName::MessageDeduplicationId)
                    .cloned(),
            });
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    got
}

/// Whatever else is in the queue now (one short receive).
async fn nothing_more(client: &aws_sdk_sqs::Client, url: &str) {
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    assert!(
        out.messages.unwrap_or_default().is_empty(),
        "no message beyond those expected"
    );
}

#[tokio::test]
async fn sqs_fifo_gets_every_event_in_key_order_with_group_and_dedupe_ids() {
    let Some(sqs) = sqs(true) else {
        return;
    };
    let Run { app, topic, .. } = scenarios::every_event_in_key_order(&sqs).await;
    let d = route_deliveries(&app).await;
    assert_eq!(d[0]["topic"], topic.as_str());
}

#[tokio::test]
async fn sqs_standard_queue_gets_every_event_once_with_its_attributes() {
    let Some(sqs) = sqs(false) else {
        return;
    };
    let queue = sqs.fresh_topic();
    let mut reader = sqs.reader(&queue).await;
    let app = spawn_app(&config("sqs", &queue, &sqs.table(sqs.url()))).await;
    let posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;
    let mut got = sqs.read(&mut reader, &queue, posted.len()).await;
    // A standard queue promises no order: put each key's events in `n` order, then check
    // that every event came, with its id.
    got.sort_by_key(|(_, body)| body["data"]["n"].as_i64());
    check_arrivals(&posted, &got);
    check_delivery_log(&app, "sqs", &queue).await;
}

/// A publish sent again (here by `:redeliver` of a published delivery, as a retry after a
/// lost acknowledgement would) within the 5-minute window reaches a FIFO queue once.
#[tokio::test]
async fn sqs_fifo_dedupes_a_publish_sent_twice_by_event_id() {
    let Some(sqs) = sqs(true) else {
        return;
    };
    let queue = sqs.fresh_topic();
    let reader = sqs.reader(&queue).await;
    let app = spawn_app(&config("sqs", &queue, &sqs.table(sqs.url()))).await;
    let posted = post_events(&app, 1, 0).await;
    let published = all_published(&app, posted.len()).await;
    let first = published[0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(&format!("/deliveries/{first}:redeliver"), ADMIN, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    app.eventually("the redelivery to be published", || async {
        let d = app.get(&format!("/deliveries/{first}"), ADMIN).await.body;
        d["status"] == "succeeded" && d["attempt_log"].as_array().unwrap().len() == 2
    })
    .await;
    let got = receive_all(&sqs.client, &reader.url, posted.len()).await;
    assert_eq!(got.len(), posted.len(), "each event once: {got:#?}");
    nothing_more(&sqs.client, &reader.url).await;
}

#[tokio::test]
async fn sqs_message_over_the_queue_limit_is_dead_lettered_and_the_line_keeps_moving() {
    let Some(sqs) = sqs(true) else {
        return;
    };
    scenarios::oversized_is_dead_lettered_and_the_line_keeps_moving(
        &sqs,
        Some("pay_1"),
        &format!("MaximumMessageSize of {TEST_MAX_MESSAGE_BYTES} bytes"),
    )
    .await;
}

#[tokio::test]
async fn sqs_missing_queue_is_dead_lettered_and_redeliver_sends_it_once_made() {
    let Some(sqs) = sqs(true) else {
        return;
    };
    scenarios::refused_is_dead_lettered_and_redeliver_sends_it_once_fixed(
        &sqs,
        &["SQS refused for good", "NonExistentQueue"],
    )
    .await;
}

#[tokio::test]
async fn sqs_emulator_restarted_mid_stream_loses_nothing() {
    if broker_env("HERALD_TEST_SQS_URL").is_none() {
        return;
    }
    let Some(bin) = broker_env("HERALD_TEST_MOTO_SERVER") else {
        return;
    };
    let own = OwnMoto::launch(&bin).await;
    let url = format!("http://127.0.0.1:{}", own.port);
    let mut sqs = Sqs {
        client: sqs_client(&url),
        url,
        fifo: true,
        own: Some(own),
    };
    scenarios::emulator_restarted_mid_stream_loses_nothing(&mut sqs).await;
}

/// boto3, AWS's Python SDK, reads what Herald published to a FIFO queue: the body is the
/// event, the attributes and system attributes are as docs/brokers.md says, in key order.
#[tokio::test]
async fn boto3_reads_what_herald_published() {
    let Some(sqs) = sqs(true) else {
        return;
    };
    let queue = sqs.fresh_topic();
    // Makes the queue; boto3 reads it.
    sqs.reader(&queue).await;
    let app = spawn_app(&config("sqs", &queue, &sqs.table(sqs.url()))).await;
    let posted = post_events(&app, 3, 0).await;
    all_published(&app, posted.len()).await;
    const SCRIPT: &str = r#"
import boto3, json, sys, time
url, queue, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
q = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
out, deadline = [], time.time() + 60
while len(out) < expected and time.time() < deadline:
    r = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                            MessageAttributeNames=["All"], AttributeNames=["All"])
    for m in r.get("Messages", []):
        out.append({"body": json.loads(m["Body"]),
                    "attributes": {k: v["StringValue"] for k, v in m["MessageAttributes"].items()},
                    "types": {k: v["DataType"] for k, v in m["MessageAttributes"].items()},
                    "group": m["Attributes"]["MessageGroupId"],
                    "dedupe": m["Attributes"]["MessageDeduplicationId"]})
        sqs.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])
print(json.dumps(out))
"#;
    let output = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT, &sqs.url, &queue, &posted.len().to_string()])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "boto3 consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let got: Vec<(String, Value)> = read
        .iter()
        .map(|m| {
            let id = m["attributes"]["herald-event-id"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(m["attributes"]["herald-event-type"], "payment.updated");
            assert_trace_of(m["attributes"]["traceparent"].as_str().unwrap(), &id);
            assert_eq!(m["types"]["herald-event-id"], "String");
            assert_eq!(m["group"], m["body"]["key"], "{m}");
            assert_eq!(m["dedupe"], id.as_str());
            (id, m["body"].clone())
        })
        .collect();
    assert_eq!(got.len(), posted.len());
    check_arrivals(&posted, &got);
}
