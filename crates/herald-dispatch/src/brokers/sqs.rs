//! Amazon SQS through the official SDK: the topic is a queue's name, whose URL (and size
//! limit) is looked up once. A standard queue gets the event with message attributes
//! `herald-event-id`, `herald-event-type` and `traceparent`; a FIFO queue (`.fifo`) also
//! gets `MessageGroupId` = the key and `MessageDeduplicationId` = the event id, so a publish
//! retried within SQS's five-minute window is delivered once and one key's events in order.
//! Herald never creates queues: a missing queue is refused for good (dead-lettered).

use super::{BrokerKind, BrokerMessage, PublishError, PublishFuture, Publisher};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The largest message SQS takes when Herald cannot read the queue's own
/// `MaximumMessageSize` (1 MiB since August 2025; a queue may set it lower).
const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct SqsSettings {
    /// `None`: the AWS chain's region (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Another endpoint than AWS's (an emulator such as moto, a VPC endpoint).
    pub endpoint: Option<String>,
    /// `None`: the AWS credential chain (environment, profile files, web identity, ECS, IMDS).
    pub credentials: Option<SqsCredentials>,
}

#[derive(Clone)]
pub struct SqsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SqsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

pub struct SqsPublisher {
    settings: SqsSettings,
    /// Made on first use (loading the AWS chain may read files and the network).
    state: Mutex<Option<Arc<Connected>>>,
}

struct Connected {
    client: aws_sdk_sqs::Client,
    /// Neither the config nor the AWS chain names a region: every call would fail alike.
    no_region: bool,
    /// Queues by name, looked up once; forgotten when SQS says the queue is gone.
    queues: Mutex<HashMap<String, Queue>>,
}

#[derive(Debug, Clone)]
struct Queue {
    url: String,
    /// The queue's `MaximumMessageSize`, when Herald may read it.
    max_bytes: Option<usize>,
}

impl SqsPublisher {
    pub fn new(settings: SqsSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(None),
        }
    }

    async fn connected(&self) -> Arc<Connected> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.as_ref() {
            return c.clone();
        }
        // rustls with ring (as the rest of Herald), not the SDK's default aws-lc build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            // The outbox retries, with its own backoff, and logs every attempt.
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(region) = &self.settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(c) = &self.settings.credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "herald-config",
            ));
        }
        let sdk = loader.load().await;
        let connected = Arc::new(Connected {
            no_region: sdk.region().is_none(),
            client: aws_sdk_sqs::Client::new(&sdk),
            queues: Mutex::new(HashMap::new()),
        });
        *state = Some(connected.clone());
        connected
    }

    /// The client, once a region is known (retried, not refused: the environment may
    /// gain one, as it may gain credentials).
    async fn ready(&self) -> Result<Arc<Connected>, PublishError> {
        let connected = self.connected().await;
        if connected.no_region {
            // Loaded again next time, in case the environment changed.
            *self.state.lock().await = None;
            return Err(PublishError::Unavailable(
                "no AWS region for SQS: set brokers.sqs.region (or AWS_REGION, or a profile's region)".into(),
            ));
        }
        Ok(connected)
    }

    /// The queue named `name`: its URL, and its size limit if Herald may read it.
    async fn queue(connected: &Connected, name: &str) -> Result<Queue, PublishError> {
        if let Some(q) = connected.queues.lock().await.get(name) {
            return Ok(q.clone());
        }
        let url = connected
            .client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| judge(&e, &format!("looking up queue `{name}`")))?
            .queue_url
            .ok_or_else(|| {
                PublishError::Unavailable(format!("SQS gave no URL for queue `{name}`"))
            })?;
        let max_bytes = match connected
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
        {
            Ok(out) => out
                .attributes
                .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize).cloned())
                .and_then(|v| v.parse().ok()),
            // Without sqs:GetQueueAttributes SQS itself refuses an oversized message.
            Err(e) => {
                tracing::debug!(queue = name, error = %DisplayErrorContext(&e), "cannot read the queue's MaximumMessageSize");
                None
            }
        };
        let queue = Queue { url, max_bytes };
        connected
            .queues
            .lock()
            .await
            .insert(name.to_owned(), queue.clone());
        Ok(queue)
    }
}

/// A FIFO queue's name ends in `.fifo`.
pub fn is_fifo(queue: &str) -> bool {
    queue.ends_with(".fifo")
}

/// The message attributes of every message: name, value (all of type `String`).
fn attributes(message: &BrokerMessage) -> [(&'static str, &str); 3] {
    [
        ("herald-event-id", message.event_id.as_str()),
        ("herald-event-type", message.event_type.as_str()),
        ("traceparent", message.traceparent.as_str()),
    ]
}

/// The size SQS counts against `MaximumMessageSize`: the body, and each attribute's name,
/// data type and value.
pub(crate) fn sqs_size(message: &BrokerMessage) -> usize {
    message.payload.len()
        + attributes(message)
            .iter()
            .map(|(name, value)| name.len() + "String".len() + value.len())
            .sum::<usize>()
}

/// A FIFO `MessageGroupId`: 1 to 128 printable ASCII characters, no spaces.
pub(crate) fn group_id(key: &str) -> Result<&str, PublishError> {
    if key.is_empty() || key.len() > 128 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(PublishError::Refused(format!(
            "the key {key:?} cannot be an SQS MessageGroupId (1 to 128 printable ASCII characters, no spaces)"
        )));
    }
    Ok(key)
}

/// Which refusals are final, by SQS error code (both the JSON protocol's names and the
/// query protocol's, which SQS also sends): a queue that does not exist, no permission, a
/// message SQS will not take (too large, invalid characters, a bad
/// parameter), and KMS keys Herald may not use. Retrying those cannot help until someone
/// changes the queue or the config, so they are dead-lettered, and `:redeliver` sends them
/// again. Everything else is retried: throttling (`RequestThrottled`, `ThrottlingException`,
/// `KmsThrottled`), `ServiceUnavailable`, internal errors, timeouts and connection failures,
/// and credentials SQS does not accept (`InvalidClientTokenId`, `SignatureDoesNotMatch`,
/// `InvalidSecurity`, `UnrecognizedClientException`): a key rotated before the config, IAM's
/// delay for a new key, or a skewed clock would otherwise dead-letter every pending event.
fn refused_for_good(code: &str) -> bool {
    matches!(
        code,
        "QueueDoesNotExist"
            | "AWS.SimpleQueueService.NonExistentQueue"
            | "AccessDenied"
            | "AccessDeniedException"
            | "InvalidParameterValue"
            | "InvalidMessageContents"
            | "MissingParameter"
            | "InvalidAddress"
            | "UnsupportedOperation"
            | "AWS.SimpleQueueService.UnsupportedOperation"
            | "KmsAccessDenied"
            | "KmsDisabled"
            | "KmsInvalidKeyUsage"
            | "KmsInvalidState"
            | "KmsNotFound"
            | "KmsOptInRequired"
            | "KMS.AccessDeniedException"
            | "KMS.DisabledException"
            | "KMS.InvalidKeyUsageException"
            | "KMS.InvalidStateException"
            | "KMS.NotFoundException"
            | "KMS.OptInRequired"
    )
}

fn is_missing_queue(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue")
    )
}

fn judge<E, R>(e: &SdkError<E, R>, what: &str) -> PublishError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = DisplayErrorContext(e);
    match e.code() {
        Some(code) if refused_for_good(code) => {
            PublishError::Refused(format!("SQS refused for good, {what}: {text}"))
        }
        _ => PublishError::Unavailable(format!("SQS did not take the message, {what}: {text}")),
    }
}

impl Publisher for SqsPublisher {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Sqs
    }

    fn connect(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            let connected = self.ready().await?;
            // Any authenticated call tells whether SQS answers and takes the credentials.
            connected
                .client
                .list_queues()
                .max_results(1)
                .send()
                .await
                .map_err(|e| {
                    PublishError::Unavailable(format!(
                        "cannot reach SQS: {}",
                        DisplayErrorContext(&e)
                    ))
                })?;
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a> {
        Box::pin(async move {
            let fifo = is_fifo(&message.topic);
            let group = match (&message.key, fifo) {
                (Some(key), true) => Some(group_id(key)?),
                // A FIFO queue needs a group: an event without a key is a group of its own.
                (None, true) => Some(message.event_id.as_str()),
                (_, false) => None,
            };
            let body = std::str::from_utf8(&message.payload).map_err(|_| {
                PublishError::Refused("the event JSON is not UTF-8 text, which SQS needs".into())
            })?;
            let connected = self.ready().await?;
            let queue = Self::queue(&connected, &message.topic).await?;
            let size = sqs_size(message);
            let limit = queue.max_bytes.unwrap_or(SQS_MAX_MESSAGE_BYTES);
            if size > limit {
                return Err(PublishError::Refused(format!(
                    "the message is {size} bytes (event JSON and attributes), over queue `{}`'s MaximumMessageSize of {limit} bytes",
                    message.topic
                )));
            }
            let mut send = connected
                .client
                .send_message()
                .queue_url(&queue.url)
                .message_body(body);
            for (name, value) in attributes(message) {
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .map_err(|e| PublishError::Refused(format!("SQS attribute {name}: {e}")))?;
                send = send.message_attributes(name, value);
            }
            if let Some(group) = group {
                send = send
                    .message_group_id(group)
                    .message_deduplication_id(&message.event_id);
            }
            match send.send().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    if is_missing_queue(e.code()) {
                        // Deleted since Herald looked it up: look again next time.
                        connected.queues.lock().await.remove(&message.topic);
                    }
                    Err(judge(&e, &format!("sending to queue `{}`", message.topic)))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: usize) -> BrokerMessage {
        BrokerMessage {
            topic: "payments.fifo".into(),
            key: Some("pay_1".into()),
            event_id: "evt_01".into(),
            event_type: "payment.updated".into(),
            traceparent: "00-1-2-01".into(),
            payload: vec![b'x'; payload],
        }
    }

    #[test]
    fn refusals_for_good_are_dead_lettered_and_the_rest_retried() {
        for code in [
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
            "AccessDenied",
            "InvalidParameterValue",
            "KmsAccessDenied",
        ] {
            assert!(refused_for_good(code), "{code}");
        }
        for code in [
            "RequestThrottled",
            "ThrottlingException",
            "KmsThrottled",
            "ServiceUnavailable",
            "InternalError",
            "InternalFailure",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "InvalidSecurity",
            "UnrecognizedClientException",
        ] {
            assert!(!refused_for_good(code), "{code}");
        }
    }

    #[test]
    fn fifo_queues_group_ids_and_sizes() {
        assert!(is_fifo("payments.fifo"));
        assert!(!is_fifo("payments"));
        assert_eq!(group_id("pay_1").unwrap(), "pay_1");
        assert!(matches!(group_id("a b"), Err(PublishError::Refused(_))));
        assert!(matches!(group_id(""), Err(PublishError::Refused(_))));
        assert!(matches!(
            group_id(&"k".repeat(129)),
            Err(PublishError::Refused(_))
        ));
        // Body, then each attribute's name + "String" + value.
        let m = message(100);
        let attrs = ("herald-event-id".len() + 6 + 6)
            + ("herald-event-type".len() + 6 + 15)
            + ("traceparent".len() + 6 + 9);
        assert_eq!(sqs_size(&m), 100 + attrs);
    }
}
