//! Google Cloud Pub/Sub over gRPC (gcloud-pubsub): one `Publish` call per message, with
//! `ordering_key` = the key and attributes `herald-event-id`, `herald-event-type` and
//! `traceparent`. The outbox sends a key's next event only once the last is acknowledged,
//! so a failed publish pauses that key (as Pub/Sub's ordering requires) and never reorders
//! it. Herald never creates topics: a missing topic is refused for good (dead-lettered).

use super::{BrokerKind, BrokerMessage, PublishError, PublishFuture, Publisher};
use gcloud_gax::conn::{ConnectionOptions, Environment};
use gcloud_gax::grpc::{Code, Status};
use gcloud_gax::retry::RetrySetting;
use gcloud_googleapis::pubsub::v1::PubsubMessage;
use gcloud_pubsub::apiv1::conn_pool::{AUDIENCE, PUBSUB, SCOPES};
use gcloud_pubsub::client::{google_cloud_auth, Client, ClientConfig};
use gcloud_pubsub::publisher::{Publisher as TopicPublisher, PublisherConfig};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// Pub/Sub takes publish requests of at most 10 MiB (data, attributes and ordering key).
pub(crate) const PUBSUB_MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Room kept in a publish request for what is not the message: the topic's full name
/// (`projects/<project>/topics/<topic>`, each part at most 255 characters) and framing.
const REQUEST_OVERHEAD: usize = 1024;
/// An ordering key is at most 1 KiB.
const MAX_ORDERING_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub struct PubSubSettings {
    pub project: String,
    pub target: PubSubTarget,
    /// How long connecting may take (the outbox bounds each publish as a whole).
    pub connect_timeout: Duration,
}

/// Where Herald's gRPC calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubTarget {
    /// Google Cloud, at this host (`pubsub.googleapis.com`, or a regional endpoint such as
    /// `europe-west1-pubsub.googleapis.com`), over TLS with the Google credential chain.
    Google { endpoint: String },
    /// The Pub/Sub emulator at `host:port`: plaintext, no credentials.
    Emulator { host: String },
}

impl PubSubTarget {
    /// Google's global endpoint.
    pub fn google() -> Self {
        Self::Google {
            endpoint: PUBSUB.to_owned(),
        }
    }
}

pub struct PubSubPublisher {
    settings: PubSubSettings,
    /// Made on first use; tonic reconnects its channels by itself after that.
    state: Mutex<Option<Connected>>,
}

struct Connected {
    client: Client,
    /// A publisher per topic. Herald calls only its `publish_immediately` (one `Publish`
    /// RPC, awaited); the batching tasks it keeps stay idle.
    topics: HashMap<String, TopicPublisher>,
}

impl PubSubPublisher {
    pub fn new(settings: PubSubSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(None),
        }
    }

    /// The publisher for `topic`, connecting first if need be.
    async fn publisher(&self, topic: &str) -> Result<TopicPublisher, PublishError> {
        let mut state = self.state.lock().await;
        if state.is_none() {
            *state = Some(Connected {
                client: self.connect_client().await?,
                topics: HashMap::new(),
            });
        }
        let connected = state.as_mut().expect("connected above");
        let publisher = connected.topics.entry(topic.to_owned()).or_insert_with(|| {
            connected
                .client
                .topic(topic)
                .new_publisher(Some(PublisherConfig {
                    workers: 1,
                    retry_setting: Some(no_retries()),
                    ..Default::default()
                }))
        });
        Ok(publisher.clone())
    }

    async fn connect_client(&self) -> Result<Client, PublishError> {
        let (environment, domain) = match &self.settings.target {
            PubSubTarget::Emulator { host } => (Environment::Emulator(host.clone()), PUBSUB),
            PubSubTarget::Google { endpoint } => {
                // gcloud-auth's HTTP client (built with `rustls-no-provider`, so no aws-lc)
                // takes the process's default crypto provider: ring, as everywhere in Herald.
                // Already installed (by an earlier call, or by an embedding program) is fine.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = google_cloud_auth::project::Config::default()
                    .with_audience(AUDIENCE)
                    .with_scopes(&SCOPES);
                let tokens = google_cloud_auth::token::DefaultTokenSourceProvider::new(config)
                    .await
                    .map_err(|e| {
                        PublishError::Unavailable(format!(
                            "no Google Cloud credentials for Pub/Sub (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application default credentials, or the metadata server): {e}"
                        ))
                    })?;
                (
                    Environment::GoogleCloud(Box::new(tokens)),
                    endpoint.as_str(),
                )
            }
        };
        let options = ConnectionOptions {
            connect_timeout: Some(self.settings.connect_timeout),
            ..Default::default()
        };
        let config = ClientConfig {
            pool_size: 1,
            project_id: Some(self.settings.project.clone()),
            environment,
            endpoint: domain.to_owned(),
            connection_option: options,
        };
        Client::new(config).await.map_err(|e| {
            PublishError::Unavailable(format!(
                "cannot connect to Pub/Sub at {}: {e}",
                self.where_to()
            ))
        })
    }

    fn where_to(&self) -> &str {
        match &self.settings.target {
            PubSubTarget::Emulator { host } => host,
            PubSubTarget::Google { endpoint } => endpoint,
        }
    }
}

/// The message for `message`, or why Pub/Sub would refuse it.
pub(crate) fn pubsub_message(message: &BrokerMessage) -> Result<PubsubMessage, PublishError> {
    let key = message.key.clone().unwrap_or_default();
    if key.len() > MAX_ORDERING_KEY_BYTES {
        return Err(PublishError::Refused(format!(
            "the key is {} bytes, over Pub/Sub's ordering key limit of {MAX_ORDERING_KEY_BYTES}",
            key.len()
        )));
    }
    let attributes: HashMap<String, String> = [
        ("herald-event-id", &message.event_id),
        ("herald-event-type", &message.event_type),
        ("traceparent", &message.traceparent),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.clone()))
    .collect();
    let size = message.payload.len()
        + key.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    // The request also holds the topic's full name and the protobuf framing, and the client
    // refuses any request over the limit before sending it: leave room for them.
    if size + REQUEST_OVERHEAD > PUBSUB_MAX_REQUEST_BYTES {
        return Err(PublishError::Refused(format!(
            "the message is {size} bytes (event JSON, attributes and ordering key), over Pub/Sub's limit of {PUBSUB_MAX_REQUEST_BYTES} bytes (10 MiB) less {REQUEST_OVERHEAD} for the request around it"
        )));
    }
    Ok(PubsubMessage {
        data: message.payload.clone(),
        attributes,
        ordering_key: key,
        ..Default::default()
    })
}

/// Which gRPC statuses are final for this message: the topic does not exist (`NOT_FOUND`),
/// Herald may not publish to it (`PERMISSION_DENIED`), or Pub/Sub will not take the
/// message as it is (`INVALID_ARGUMENT`: too large, a bad attribute; `FAILED_PRECONDITION`;
/// `OUT_OF_RANGE`: the client's own refusal of a request over the size limit).
/// They are dead-lettered until someone fixes the topic and redelivers. Everything else is
/// retried: `UNAVAILABLE`, `RESOURCE_EXHAUSTED` (throttling, quota), `DEADLINE_EXCEEDED`,
/// `ABORTED`, `INTERNAL`, `UNKNOWN`, and `UNAUTHENTICATED` (a token that expired meanwhile).
pub(crate) fn judge(status: &Status, topic: &str) -> PublishError {
    let for_good = matches!(
        status.code(),
        Code::NotFound
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
    );
    let text = format!("{:?}: {}", status.code(), status.message());
    if for_good {
        PublishError::Refused(format!(
            "Pub/Sub refused the message for good (topic {topic}): {text}"
        ))
    } else {
        PublishError::Unavailable(format!(
            "Pub/Sub did not take the message (topic {topic}): {text}"
        ))
    }
}

/// No retries inside the client: the outbox retries with its own backoff and logs each try.
fn no_retries() -> RetrySetting {
    RetrySetting {
        take: 0,
        codes: Vec::new(),
        ..Default::default()
    }
}

impl Publisher for PubSubPublisher {
    fn kind(&self) -> BrokerKind {
        BrokerKind::PubSub
    }

    fn connect(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.is_none() {
                *state = Some(Connected {
                    client: self.connect_client().await?,
                    topics: HashMap::new(),
                });
            }
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a> {
        Box::pin(async move {
            let pubsub = pubsub_message(message)?;
            let publisher = self.publisher(&message.topic).await?;
            publisher
                .publish_immediately(vec![pubsub], Some(no_retries()))
                .await
                .map_err(|status| {
                    let name = format!(
                        "projects/{}/topics/{}",
                        self.settings.project, message.topic
                    );
                    judge(&status, &name)
                })?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: usize, key: Option<&str>) -> BrokerMessage {
        BrokerMessage {
            topic: "payments".into(),
            key: key.map(str::to_owned),
            event_id: "evt_01".into(),
            event_type: "payment.updated".into(),
            traceparent: "00-1-2-01".into(),
            payload: vec![b'x'; payload],
        }
    }

    #[test]
    fn messages_carry_the_key_and_attributes_and_respect_the_limits() {
        let m = pubsub_message(&message(10, Some("pay_1"))).unwrap();
        assert_eq!(m.ordering_key, "pay_1");
        assert_eq!(m.attributes["herald-event-id"], "evt_01");
        assert_eq!(m.attributes["herald-event-type"], "payment.updated");
        assert_eq!(m.attributes["traceparent"], "00-1-2-01");
        assert_eq!(pubsub_message(&message(10, None)).unwrap().ordering_key, "");
        let too_big = pubsub_message(&message(PUBSUB_MAX_REQUEST_BYTES, Some("k")));
        assert!(
            matches!(&too_big, Err(PublishError::Refused(e)) if e.contains("10 MiB")),
            "{too_big:?}"
        );
        // Just under the limit with its attributes, but not with the request around it.
        let tight = PUBSUB_MAX_REQUEST_BYTES - 200;
        assert!(matches!(
            pubsub_message(&message(tight, None)),
            Err(PublishError::Refused(_))
        ));
        assert!(pubsub_message(&message(PUBSUB_MAX_REQUEST_BYTES - 2048, None)).is_ok());
        let long_key = "k".repeat(1025);
        assert!(matches!(
            pubsub_message(&message(1, Some(&long_key))),
            Err(PublishError::Refused(_))
        ));
    }

    #[test]
    fn refusals_for_good_are_dead_lettered_and_the_rest_retried() {
        for code in [
            Code::NotFound,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::OutOfRange,
        ] {
            let e = judge(&Status::new(code, "x"), "t");
            assert!(matches!(e, PublishError::Refused(_)), "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
            Code::Unauthenticated,
        ] {
            let e = judge(&Status::new(code, "x"), "t");
            assert!(matches!(e, PublishError::Unavailable(_)), "{code:?}");
        }
    }
}
