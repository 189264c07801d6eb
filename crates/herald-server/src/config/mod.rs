//! Herald's TOML configuration, one module per section: `[[operation_types]]` with
//! their triggers ([`operations`]), `[[event_types]]`, `[webhooks]`, `[feed]`, `[store]` and
//! `[limits]`, `[retention]`, `[[routes]]`, `[brokers]` and `[metrics]`.
//!
//! Values are deserialised straight into their types (a trigger into its path, event
//! patterns, broker kinds, the retry schedule, durations, the secret key), so an invalid
//! value is refused at load under its key's path (`routes[1].broker: unknown broker …`)
//! and nothing parses it again. What no single value can say (a name declared twice, a
//! lower bound) is checked once after, by each section's `validate`.

mod brokers;
mod event_types;
mod feed;
mod metrics;
mod operations;
mod retention;
mod routes;
mod store;
mod value;
mod webhooks;

pub use brokers::{
    BrokersConfig, KafkaConfig, NatsConfig, PubSubConfig, RabbitMqConfig, RedisConfig, SqsConfig,
};
pub use event_types::EventTypeConfig;
pub use feed::FeedSettings;
pub use metrics::MetricsSettings;
pub use operations::{OperationType, Trigger};
pub use retention::RetentionSettings;
pub use routes::RouteConfig;
pub use store::{LimitSettings, StoreSettings};
#[cfg(test)]
pub(crate) use value::FromText;
pub use value::{PublicUrl, Redacted};
pub use webhooks::WebhookSettings;

use herald_core::duration::{self, serde_text};
use herald_dispatch::brokers::BrokerKind;
use herald_store::encrypted::SecretKey;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An admin key to accept (besides keys stored in the database). `HERALD_ADMIN_KEY` overrides.
    #[serde(default)]
    pub admin_key: Option<Redacted>,
    /// Encrypts webhook signing secrets at rest: 32 bytes, base64 (AES-256-GCM), parsed
    /// at load. `HERALD_SECRET_KEY` overrides. Never shown by `Debug`.
    #[serde(default, deserialize_with = "value::option")]
    pub secret_key: Option<SecretKey>,
    /// Herald's address as its users reach it (`https://hooks.example.com`): the links it
    /// makes (a portal session's `url`) start with it. Unset: taken from each request's
    /// `Host` (absent over HTTP/2) and `X-Forwarded-Proto`.
    #[serde(default, deserialize_with = "value::option")]
    pub public_url: Option<PublicUrl>,
    /// Largest request body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long a request may take before it is answered 503 `REQUEST_TIMEOUT` (default
    /// 30s). The long polls `:claim` and `:wait` get this on top of their own wait.
    #[serde(default = "default_request_timeout", with = "serde_text")]
    pub request_timeout: Duration,
    /// Bounds of the store's queues (read when the store is opened).
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub operation_types: Vec<OperationType>,
    #[serde(default)]
    pub event_types: Vec<EventTypeConfig>,
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// The pull feed's bounds.
    #[serde(default)]
    pub feed: FeedSettings,
    /// Per-key request rate limits (off unless set).
    #[serde(default)]
    pub limits: LimitSettings,
    /// How long settled events, their deliveries and attempts are kept.
    #[serde(default)]
    pub retention: RetentionSettings,
    /// Event routes to message brokers (DESIGN.md "Broker routes").
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Connection settings of each broker, with the defaults of DESIGN.md.
    #[serde(default)]
    pub brokers: BrokersConfig,
    /// How `/metrics` is served: gauge refresh interval and whether it needs a key.
    #[serde(default)]
    pub metrics: MetricsSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin_key: None,
            secret_key: None,
            public_url: None,
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
            store: StoreSettings::default(),
            operation_types: vec![],
            event_types: vec![],
            webhooks: WebhookSettings::default(),
            feed: FeedSettings::default(),
            limits: LimitSettings::default(),
            retention: RetentionSettings::default(),
            routes: vec![],
            brokers: BrokersConfig::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

fn default_max_body() -> usize {
    1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_file(&text, &path.display().to_string())
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_file(text, "<text>")
    }

    /// Reads `text` (the file `file`) into typed values, then checks what spans them.
    fn parse_file(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| ConfigError::Parse {
                path: file.to_owned(),
                message: describe(text, &e),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The checks no single value can make: lower bounds, names declared twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.metrics.validate()?;
        operations::validate(&self.operation_types)?;
        event_types::validate(&self.event_types)?;
        self.webhooks.validate()?;
        self.feed.validate()?;
        self.retention.validate()?;
        self.limits.validate()?;
        routes::validate(&self.routes)?;
        self.brokers.validate()?;
        if self.brokers_in_use().contains(&BrokerKind::PubSub)
            && self.brokers.pubsub.project.is_none()
        {
            return Err(ConfigError::Invalid(
                "brokers.pubsub.project is missing: a route publishes to Pub/Sub, whose topics live in a Google Cloud project".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.request_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "request_timeout must be at least 1s".into(),
            ));
        }
        self.store.validate()
    }

    /// The environment's overrides: `HERALD_ADMIN_KEY`, `HERALD_SECRET_KEY` and, when the
    /// file names no emulator, `PUBSUB_EMULATOR_HOST` (parsed here, as the file's would
    /// be), when set and not empty. `var` reads a variable.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let var = |name| var(name).filter(|v| !v.is_empty());
        if let Some(key) = var("HERALD_ADMIN_KEY") {
            self.admin_key = Some(Redacted(key));
        }
        if let Some(key) = var("HERALD_SECRET_KEY") {
            let key = <SecretKey as value::FromText>::from_text(&key).map_err(|e| {
                ConfigError::Invalid(format!("secret_key (HERALD_SECRET_KEY): {e}"))
            })?;
            self.secret_key = Some(key);
        }
        if self.brokers.pubsub.emulator_host.is_none() {
            if let Some(host) = var("PUBSUB_EMULATOR_HOST") {
                let host =
                    <brokers::HostPort as value::FromText>::from_text(&host).map_err(|e| {
                        ConfigError::Invalid(format!(
                            "brokers.pubsub.emulator_host (PUBSUB_EMULATOR_HOST): {e}"
                        ))
                    })?;
                self.brokers.pubsub.emulator_host = Some(host);
                self.brokers.validate()?;
            }
        }
        Ok(())
    }

    /// The broker kinds some route publishes to.
    pub fn brokers_in_use(&self) -> Vec<BrokerKind> {
        BrokerKind::ALL
            .into_iter()
            .filter(|k| self.routes.iter().any(|r| r.broker == *k))
            .collect()
    }

    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }

    pub fn operation_type(&self, name: &str) -> Option<&OperationType> {
        self.operation_types.iter().find(|t| t.name == name)
    }
}

/// A load error under its key's path (`webhooks.schedule[2]: …`, with the line), and
/// without the line's text, which may hold a key. An error of the TOML itself, which has
/// no path, keeps the parser's own report.
fn describe(text: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.inner();
    if path == "." {
        return inner.to_string();
    }
    match inner.span() {
        Some(span) => {
            let line = text.get(..span.start).unwrap_or(text).matches('\n').count() + 1;
            format!("{path}: {} (line {line})", inner.message())
        }
        None => format!("{path}: {}", inner.message()),
    }
}

/// Parses a duration given in a request body, as a problem-details-friendly message.
pub fn request_duration(field: &str, text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| format!("`{field}`: {e}"))
}

#[cfg(test)]
mod tests;
