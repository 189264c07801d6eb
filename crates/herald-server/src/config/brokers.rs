//! `[brokers]`: one table per broker's connection, and the publishing limits. Routes
//! name their broker as a [`BrokerKind`], parsed once here.

use super::value::{self, FromText, Redacted};
use super::ConfigError;
use herald_core::duration::serde_text;
use herald_dispatch::brokers::{BrokerKind, PubSubTarget};
use serde::{Deserialize, Deserializer};
use std::time::Duration;

impl FromText for BrokerKind {
    fn from_text(text: &str) -> Result<Self, String> {
        BrokerKind::parse(text).ok_or_else(|| {
            format!("unknown broker `{text}`; use nats, rabbitmq, redis, kafka, sqs or pubsub")
        })
    }
}

/// `[brokers]`: one table per broker, and the publishing limits. Every section's
/// defaults are its `Default` (a key left out takes it).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokersConfig {
    /// How long a publish may take, the broker's acknowledgement included.
    #[serde(with = "serde_text")]
    pub timeout: Duration,
    /// The longest wait between retries while a broker is unreachable (messages are never
    /// dropped for that; the wait doubles from 500ms up to this).
    #[serde(with = "serde_text")]
    pub max_backoff: Duration,
    pub nats: NatsConfig,
    pub rabbitmq: RabbitMqConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub sqs: SqsConfig,
    pub pubsub: PubSubConfig,
}

impl Default for BrokersConfig {
    fn default() -> Self {
        Self {
            timeout: super::webhooks::default_timeout(),
            max_backoff: Duration::from_secs(30),
            nats: Default::default(),
            rabbitmq: Default::default(),
            redis: Default::default(),
            kafka: Default::default(),
            sqs: Default::default(),
            pubsub: Default::default(),
        }
    }
}

impl BrokersConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.timeout < Duration::from_millis(100) {
            return invalid("brokers.timeout must be at least 100ms");
        }
        if self.max_backoff < Duration::from_millis(500) {
            return invalid("brokers.max_backoff must be at least 500ms");
        }
        if self.kafka.partitions < 1 || self.kafka.replication_factor < 1 {
            return invalid("brokers.kafka: partitions and replication_factor must be at least 1");
        }
        self.sqs.validate()?;
        self.pubsub.validate()
    }

    /// The URL (Kafka: the bootstrap servers; Pub/Sub: the host) Herald connects to for `kind`.
    pub fn url(&self, kind: BrokerKind) -> String {
        match kind {
            BrokerKind::Nats => self.nats.url.clone(),
            BrokerKind::RabbitMq => self.rabbitmq.url.clone(),
            BrokerKind::Redis => self.redis.url.clone(),
            BrokerKind::Kafka => self.kafka.bootstrap.clone(),
            BrokerKind::Sqs => match (&self.sqs.endpoint, &self.sqs.region) {
                (Some(endpoint), _) => endpoint.0.clone(),
                (None, Some(region)) => format!("https://sqs.{region}.amazonaws.com"),
                (None, None) => "https://sqs.<region>.amazonaws.com".into(),
            },
            BrokerKind::PubSub => match self.pubsub.target() {
                PubSubTarget::Emulator { host } => format!("http://{host}"),
                PubSubTarget::Google { endpoint } => format!("https://{endpoint}"),
            },
        }
    }
}

/// `[brokers.nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        let url = "nats://127.0.0.1:4222".into();
        Self { url }
    }
}

/// `[brokers.rabbitmq]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitMqConfig {
    pub url: String,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
        Self { url }
    }
}

/// `[brokers.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Trim each stream to about this many entries (`XADD MAXLEN ~`); unset keeps all.
    pub maxlen: Option<u64>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let url = "redis://127.0.0.1:6379".into();
        Self { url, maxlen: None }
    }
}

/// `[brokers.kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port`, comma-separated; checked at load.
    #[serde(deserialize_with = "bootstrap")]
    pub bootstrap: String,
    /// Partitions of a topic Herald creates because it was missing.
    pub partitions: i32,
    pub replication_factor: i16,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".into(),
            partitions: 3,
            replication_factor: 1,
        }
    }
}

/// `[brokers.sqs]`: the AWS SDK's usual chain fills in whatever is left out (`AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, profile files, web identity, ECS and instance credentials).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqsConfig {
    /// The AWS region (`us-east-1`); unset: the chain's.
    pub region: Option<String>,
    /// Another endpoint than AWS's, such as an emulator (`http://127.0.0.1:4566`).
    #[serde(deserialize_with = "value::option")]
    pub endpoint: Option<HttpUrl>,
    /// Static credentials instead of the chain: both keys or neither.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Redacted>,
    pub session_token: Option<Redacted>,
}

impl SqsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return invalid("brokers.sqs.region is empty; name a region (\"us-east-1\") or leave it out for the AWS chain's");
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => invalid("brokers.sqs.secret_access_key is missing: access_key_id needs it (or leave both out for the AWS credential chain)"),
            (None, Some(_)) => invalid("brokers.sqs.access_key_id is missing: secret_access_key needs it (or leave both out for the AWS credential chain)"),
            (None, None) if self.session_token.is_some() => invalid("brokers.sqs.session_token needs access_key_id and secret_access_key"),
            _ => Ok(()),
        }
    }

    /// The static credentials, if the config gives them.
    pub fn credentials(&self) -> Option<herald_dispatch::brokers::SqsCredentials> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some(herald_dispatch::brokers::SqsCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.0.clone(),
                session_token: self.session_token.as_ref().map(|t| t.0.clone()),
            }),
            _ => None,
        }
    }
}

/// `[brokers.pubsub]`: Google Cloud with the Google credential chain
/// (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application default credentials, the
/// metadata server), or the emulator (`emulator_host`, else `PUBSUB_EMULATOR_HOST`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubSubConfig {
    /// The Google Cloud project the topics are in; needed when a route uses Pub/Sub.
    pub project: Option<String>,
    /// Another Pub/Sub host than `pubsub.googleapis.com`, such as a regional endpoint
    /// (`europe-west1-pubsub.googleapis.com`, no port), reached on 443 over TLS with credentials.
    #[serde(deserialize_with = "value::option")]
    pub endpoint: Option<Host>,
    /// The emulator's `host:port` (plaintext, no credentials). `PUBSUB_EMULATOR_HOST`
    /// sets it when the file does not.
    #[serde(deserialize_with = "value::option")]
    pub emulator_host: Option<HostPort>,
}

impl PubSubConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.project.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "brokers.pubsub.project is empty; name the Google Cloud project".into(),
            ));
        }
        if let Some(endpoint) = self.endpoint.as_ref().filter(|e| e.0.contains(':')) {
            // The client connects to port 443 of the host and checks its certificate against
            // the name: with a port in it, no connection would ever be made.
            return Err(ConfigError::Invalid(format!(
                "brokers.pubsub.endpoint `{}` has a port; give the host name alone (Pub/Sub is reached on 443)",
                endpoint.0
            )));
        }
        if self.endpoint.is_some() && self.emulator_host.is_some() {
            return Err(ConfigError::Invalid(
                "brokers.pubsub: endpoint and emulator_host (or PUBSUB_EMULATOR_HOST) both set; keep one".into(),
            ));
        }
        Ok(())
    }

    /// Where Herald publishes.
    pub fn target(&self) -> PubSubTarget {
        match (&self.emulator_host, &self.endpoint) {
            (Some(host), _) => PubSubTarget::Emulator {
                host: host.0.clone(),
            },
            (None, Some(endpoint)) => PubSubTarget::Google {
                endpoint: endpoint.0.clone(),
            },
            (None, None) => PubSubTarget::google(),
        }
    }
}

/// An `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub String);

impl FromText for HttpUrl {
    fn from_text(text: &str) -> Result<Self, String> {
        match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                Ok(Self(text.trim_end_matches('/').to_owned()))
            }
            _ => Err(format!(
                "`{text}` is not an http(s) URL (like \"http://127.0.0.1:4566\")"
            )),
        }
    }
}

/// `host:port`, with no scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort(pub String);

impl FromText for HostPort {
    fn from_text(text: &str) -> Result<Self, String> {
        if is_host_port(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "`{text}` is not host:port (like \"127.0.0.1:8085\")"
            ))
        }
    }
}

/// A host name, optionally with `:port`, with no scheme or path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(pub String);

impl FromText for Host {
    fn from_text(text: &str) -> Result<Self, String> {
        let plain = !text.is_empty()
            && !text.contains("://")
            && !text.contains(['/', '@'])
            && !text.contains(char::is_whitespace);
        if plain && (is_host_port(text) || !text.contains(':')) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "`{text}` is not a host name (like \"europe-west1-pubsub.googleapis.com\", no scheme)"
            ))
        }
    }
}

/// A comma-separated list of `host:port`, refused at the first server that is not one.
fn bootstrap<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    match text.split(',').map(str::trim).find(|s| !is_host_port(s)) {
        Some(bad) => Err(serde::de::Error::custom(format!(
            "`{bad}` is not host:port (a comma-separated list, like \"127.0.0.1:9092\")"
        ))),
        None => Ok(text),
    }
}

/// `host:port` with a non-empty host (no scheme) and a port number.
fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains("://")
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}
