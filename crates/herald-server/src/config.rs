//! Herald's TOML configuration: operation types (with their trigger routes), event
//! types, webhook delivery settings and limits. Checked once at start with clear errors.

use herald_core::duration::{self, serde_text, serde_text_opt, serde_text_vec};
use herald_core::pattern::{is_event_type, EventPattern};
use herald_core::retry::RetrySchedule;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An admin key to accept (besides keys stored in the database). `HERALD_ADMIN_KEY` overrides.
    #[serde(default)]
    pub admin_key: Option<Redacted>,
    /// Encrypts webhook signing secrets at rest: 32 bytes, base64 (AES-256-GCM).
    /// `HERALD_SECRET_KEY` overrides. Never shown by `Debug`.
    #[serde(default)]
    pub secret_key: Option<Redacted>,
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
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
            store: StoreSettings::default(),
            operation_types: vec![],
            event_types: vec![],
            webhooks: WebhookSettings::default(),
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

/// `[store]`: how much may wait for the store before a request is refused with 503
/// `OVERLOADED` (and changes nothing), instead of queueing without bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Writes waiting for the SQLite writer thread, or events for PostgreSQL's event
    /// writer (default 4096).
    #[serde(default = "default_write_queue")]
    pub write_queue: usize,
    /// PostgreSQL: `GET /operations/{id}` look-ups waiting for the batched reader
    /// (default 4096).
    #[serde(default = "default_read_queue")]
    pub read_queue: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            write_queue: default_write_queue(),
            read_queue: default_read_queue(),
        }
    }
}

fn default_write_queue() -> usize {
    herald_store::sqlite::DEFAULT_WRITE_QUEUE
}
fn default_read_queue() -> usize {
    herald_store::postgres::DEFAULT_READ_QUEUE
}

/// A config value that must never be printed (keys): `Debug` shows `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationType {
    pub name: String,
    /// `"POST /videos"`: tenants POST here and are answered `202 Accepted` with the operation.
    #[serde(default)]
    pub trigger: Option<String>,
    /// How long a worker's claim lasts without a heartbeat (default 30s).
    #[serde(default = "default_lease", with = "serde_text")]
    pub lease: Duration,
    /// Claims before the operation ends with `WORKER_LOST` (default 3).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The operation fails with `DEADLINE_EXCEEDED` if not done this long after creation.
    #[serde(default, with = "serde_text_opt")]
    pub deadline: Option<Duration>,
    /// How long a finished operation stays readable (default 30d).
    #[serde(default = "default_retention", with = "serde_text")]
    pub retention: Duration,
    /// The `Retry-After` pollers are given while the operation is not done (default 1s).
    #[serde(default = "default_retry_after", with = "serde_text")]
    pub retry_after: Duration,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 86400)
}
fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

impl OperationType {
    /// The trigger's method and path, when it has one.
    pub fn trigger_route(&self) -> Option<(&str, &str)> {
        self.trigger
            .as_deref()
            .and_then(|t| t.trim().split_once(' '))
            .map(|(m, p)| (m.trim(), p.trim()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeConfig {
    pub name: String,
    /// A JSON Schema that every event's `data` must satisfy.
    pub schema: toml::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Allow destinations on loopback, private and link-local addresses (tests, local development).
    #[serde(default)]
    pub allow_private_destinations: bool,
    #[serde(default = "default_timeout", with = "serde_text")]
    pub timeout: Duration,
    /// Wait before each attempt; the delivery is dead after the last.
    #[serde(default = "default_schedule", with = "serde_text_vec")]
    pub schedule: Vec<Duration>,
    /// How long the old secret keeps signing after `:rotateSecret` (default 24h).
    #[serde(default = "default_grace", with = "serde_text")]
    pub rotation_grace: Duration,
    /// Requests in flight at once, across all webhooks.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Requests in flight at once to one webhook (a webhook may set its own).
    #[serde(default = "default_per_webhook")]
    pub per_webhook_concurrency: u32,
    /// Webhooks one tenant may have (not counting deleted ones); `POST /webhooks` past
    /// it is 422 (default 100).
    #[serde(default = "default_max_per_tenant")]
    pub max_per_tenant: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_destinations: false,
            timeout: default_timeout(),
            schedule: default_schedule(),
            rotation_grace: default_grace(),
            max_in_flight: default_in_flight(),
            per_webhook_concurrency: default_per_webhook(),
            max_per_tenant: default_max_per_tenant(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_schedule() -> Vec<Duration> {
    RetrySchedule::default().waits().to_vec()
}
fn default_grace() -> Duration {
    Duration::from_secs(86400)
}
fn default_in_flight() -> usize {
    256
}
fn default_per_webhook() -> u32 {
    16
}
fn default_max_per_tenant() -> u32 {
    100
}

/// Per-key rate limits: a token bucket per API key (the config admin key counts as
/// one key). Off by default (`requests_per_second = 0`), so that one admin key may
/// push a benchmark's 20,000 requests a second; turn it on for keys you hand out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Sustained requests a second per key; 0 turns rate limiting off (the default).
    #[serde(default)]
    pub requests_per_second: u32,
    /// Requests a key may send at once above the sustained rate (default: one
    /// second's worth, `requests_per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Requests with a wrong or unknown key that one client address may send a minute
    /// (also its burst) before it is answered 429 without a look-up; 0 turns it off.
    /// On by default (60): a wrong key is never a benchmark's load.
    #[serde(default = "default_failed_auth_per_minute")]
    pub failed_auth_per_minute: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 0,
            burst: None,
            failed_auth_per_minute: default_failed_auth_per_minute(),
        }
    }
}

fn default_failed_auth_per_minute() -> u32 {
    60
}

/// Event retention. Events no delivery still owes (every delivery succeeded or is
/// dead) are purged with their deliveries and attempts once older than `events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Default 30d; `"off"` keeps events for ever. At least 1d, the time an
    /// `Idempotency-Key` answers retries.
    #[serde(
        default = "default_event_retention",
        deserialize_with = "retention_text"
    )]
    pub events: Option<Duration>,
    /// Events removed per write (default 500): small, so requests never wait long.
    #[serde(default = "default_retention_batch")]
    pub batch: u32,
    /// Pause between passes once nothing more is due (default 1m).
    #[serde(default = "default_retention_interval", with = "serde_text")]
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: default_event_retention(),
            batch: default_retention_batch(),
            interval: default_retention_interval(),
        }
    }
}

/// `[[routes]]`: events matching `events` are published on `broker` under `topic`, keyed by
/// the value at the JSON pointer `key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in the delivery log; default `<broker>:<topic>`.
    #[serde(default)]
    pub name: Option<String>,
    pub events: Vec<String>,
    pub broker: String,
    /// Optional here so a missing topic gets a clear message from `validate`.
    #[serde(default)]
    pub topic: Option<String>,
    /// JSON pointer into the event (`/data/payment_id`); default `/key`, the event's own key.
    #[serde(default = "default_route_key")]
    pub key: String,
}

fn default_route_key() -> String {
    "/key".into()
}

impl RouteConfig {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            format!(
                "{}:{}",
                self.broker,
                self.topic.as_deref().unwrap_or_default()
            )
        })
    }
    pub fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or_default()
    }
}

/// `[brokers]`: one table per broker, and the publishing limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokersConfig {
    /// How long a publish may take, the broker's acknowledgement included.
    #[serde(default = "default_timeout", with = "serde_text")]
    pub timeout: Duration,
    /// The longest wait between retries while a broker is unreachable (messages are never
    /// dropped for that; the wait doubles from 500ms up to this).
    #[serde(default = "default_max_backoff", with = "serde_text")]
    pub max_backoff: Duration,
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub rabbitmq: RabbitMqConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
}

impl Default for BrokersConfig {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            max_backoff: default_max_backoff(),
            nats: Default::default(),
            rabbitmq: Default::default(),
            redis: Default::default(),
            kafka: Default::default(),
        }
    }
}

fn default_event_retention() -> Option<Duration> {
    Some(Duration::from_secs(30 * 86400))
}
fn default_retention_batch() -> u32 {
    500
}
fn default_retention_interval() -> Duration {
    Duration::from_secs(60)
}

fn retention_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim() == "off" {
        return Ok(None);
    }
    duration::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    #[serde(default = "default_nats_url")]
    pub url: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: default_nats_url(),
        }
    }
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqConfig {
    #[serde(default = "default_amqp_url")]
    pub url: String,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        Self {
            url: default_amqp_url(),
        }
    }
}

fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// Trim each stream to about this many entries (`XADD MAXLEN ~`); unset keeps all.
    #[serde(default)]
    pub maxlen: Option<u64>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: default_redis_url(),
            maxlen: None,
        }
    }
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(default = "default_bootstrap")]
    pub bootstrap: String,
    /// Partitions of a topic Herald creates because it was missing.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication")]
    pub replication_factor: i16,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: default_bootstrap(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
        }
    }
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i16 {
    1
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

/// A JSON pointer (RFC 6901): empty, or `/`-separated tokens where `~` only starts `~0` or `~1`.
fn is_json_pointer(text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let Some(rest) = text.strip_prefix('/') else {
        return false;
    };
    let bytes = rest.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')))
}

/// `[metrics]`: the store-backed gauges of `/metrics` (operations and deliveries by state)
/// are re-read in the background every `refresh`, so a scrape only encodes what is in
/// memory; `require_key` puts `/metrics` behind an admin key or the dedicated `token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// How often the gauges are re-read from the store (default 10s, at least 100ms).
    #[serde(default = "default_metrics_refresh", with = "serde_text")]
    pub refresh: Duration,
    /// `/metrics` answers 401 without `Authorization: Bearer` with an admin key or `token`
    /// (default false: no key, like most exporters).
    #[serde(default)]
    pub require_key: bool,
    /// A bearer token that opens `/metrics` and nothing else, for the scraper (so it need
    /// not hold an admin key). At least 16 characters; needs `require_key = true`.
    #[serde(default)]
    pub token: Option<Redacted>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            refresh: default_metrics_refresh(),
            require_key: false,
            token: None,
        }
    }
}

fn default_metrics_refresh() -> Duration {
    Duration::from_secs(10)
}

impl MetricsSettings {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.refresh < Duration::from_millis(100) {
            return invalid("metrics.refresh must be at least 100ms");
        }
        match &self.token {
            Some(_) if !self.require_key => {
                invalid("metrics.token is set but metrics.require_key is not true; set require_key = true to use the token")
            }
            Some(t) if t.0.trim().len() < 16 || t.0.trim() != t.0 => invalid(
                "metrics.token must be at least 16 characters, with no spaces around it",
            ),
            _ => Ok(()),
        }
    }
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

/// Paths Herald serves itself; a trigger may not take one.
const RESERVED_PREFIXES: &[&str] = &[
    "/operations",
    "/events",
    "/event-types",
    "/webhooks",
    "/deliveries",
    "/tenants",
    "/keys",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/asyncapi.json",
    "/metrics",
    "/stats",
    "/dashboard",
];

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.metrics.check()?;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut names = HashSet::new();
        let mut routes = HashSet::new();
        for t in &self.operation_types {
            if !is_event_type(&t.name) || t.name.contains('.') {
                return invalid(format!(
                    "operation type `{}`: use letters, digits, `_` and `-`",
                    t.name
                ));
            }
            if !names.insert(t.name.clone()) {
                return invalid(format!("operation type `{}` is declared twice", t.name));
            }
            if t.max_attempts == 0 {
                return invalid(format!(
                    "operation type `{}`: max_attempts must be at least 1",
                    t.name
                ));
            }
            if t.lease < Duration::from_secs(1) {
                return invalid(format!(
                    "operation type `{}`: lease must be at least 1s",
                    t.name
                ));
            }
            if let Some(trigger) = &t.trigger {
                let Some((method, path)) = t.trigger_route() else {
                    return invalid(format!(
                        "operation type `{}`: trigger `{trigger}` must look like \"POST /videos\"",
                        t.name
                    ));
                };
                if method != "POST" {
                    return invalid(format!(
                        "operation type `{}`: trigger method must be POST, not {method}",
                        t.name
                    ));
                }
                if !path.starts_with('/')
                    || path.contains(['{', '}', '*', ':', '?', '#'])
                    || path.len() < 2
                {
                    return invalid(format!("operation type `{}`: trigger path `{path}` must be a plain path like /videos", t.name));
                }
                if RESERVED_PREFIXES
                    .iter()
                    .any(|p| path == *p || path.starts_with(&format!("{p}/")))
                {
                    return invalid(format!(
                        "operation type `{}`: trigger path `{path}` is one of Herald's own routes",
                        t.name
                    ));
                }
                if !routes.insert(path.to_owned()) {
                    return invalid(format!(
                        "trigger path `{path}` is used by two operation types"
                    ));
                }
            }
        }
        for e in &self.event_types {
            if !is_event_type(&e.name) {
                return invalid(format!(
                    "event type `{}` is not a valid event type name",
                    e.name
                ));
            }
            let schema = serde_json::to_value(&e.schema)
                .map_err(|err| ConfigError::Invalid(err.to_string()))?;
            if let Err(err) = jsonschema::validator_for(&schema) {
                return invalid(format!(
                    "event type `{}`: its schema is not valid JSON Schema: {err}",
                    e.name
                ));
            }
        }
        if let Err(e) = RetrySchedule::new(self.webhooks.schedule.clone()) {
            return invalid(format!("webhooks.schedule: {e}"));
        }
        if self.webhooks.timeout < Duration::from_millis(100) {
            return invalid("webhooks.timeout must be at least 100ms".into());
        }
        if matches!(self.retention.events, Some(d) if d < Duration::from_secs(86400)) {
            return invalid("retention.events must be at least 1d (or \"off\")".into());
        }
        if self.retention.batch == 0 || self.retention.batch > 10_000 {
            return invalid("retention.batch must be between 1 and 10000".into());
        }
        if self.limits.burst == Some(0) {
            return invalid("limits.burst must be at least 1".into());
        }
        if let Some(key) = &self.secret_key {
            if let Err(e) = herald_store::encrypted::SecretKey::parse(&key.0) {
                return invalid(format!("secret_key: {e}"));
            }
        }
        self.validate_routes()?;
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes must be at least 1024".into());
        }
        if self.request_timeout < Duration::from_secs(1) {
            return invalid("request_timeout must be at least 1s".into());
        }
        if self.store.write_queue == 0 || self.store.read_queue == 0 {
            return invalid("store.write_queue and store.read_queue must be at least 1".into());
        }
        if self.webhooks.max_per_tenant == 0 {
            return invalid("webhooks.max_per_tenant must be at least 1".into());
        }
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if herald_dispatch::brokers::BrokerKind::parse(&r.broker).is_none() {
                return invalid(format!(
                    "{at}: unknown broker `{}`; use nats, rabbitmq, redis or kafka",
                    r.broker
                ));
            }
            let topic = match r.topic.as_deref().map(str::trim) {
                None | Some("") => return invalid(format!("{at}: `topic` is missing")),
                Some(t) => t,
            };
            if r.events.is_empty() {
                return invalid(format!("{at}: `events` lists no event type"));
            }
            for p in &r.events {
                if let Err(e) = EventPattern::parse(p) {
                    return invalid(format!("{at}: {e}"));
                }
            }
            if !is_json_pointer(&r.key) {
                return invalid(format!(
                    "{at}: key `{}` is not a JSON pointer (like \"/data/payment_id\")",
                    r.key
                ));
            }
            let topic_ok = match r.broker.as_str() {
                "nats" => {
                    !topic.starts_with('.')
                        && !topic.ends_with('.')
                        && !topic.contains("..")
                        && !topic.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
                }
                "kafka" => {
                    topic.len() <= 249
                        && topic
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                }
                _ => !topic.contains(char::is_whitespace) || r.broker == "redis",
            };
            if !topic_ok {
                return invalid(format!(
                    "{at}: topic `{topic}` is not a valid {} topic",
                    r.broker
                ));
            }
            if !names.insert(r.name()) {
                return invalid(format!(
                    "{at}: route name `{}` is used twice; give each route its own `name`",
                    r.name()
                ));
            }
        }
        if self.brokers.timeout < Duration::from_millis(100) {
            return invalid("brokers.timeout must be at least 100ms".into());
        }
        if self.brokers.max_backoff < Duration::from_millis(500) {
            return invalid("brokers.max_backoff must be at least 500ms".into());
        }
        if let Some(bad) = self
            .brokers
            .kafka
            .bootstrap
            .split(',')
            .map(str::trim)
            .find(|server| !is_host_port(server))
        {
            return invalid(format!(
                "brokers.kafka.bootstrap: `{bad}` is not host:port (a comma-separated list, like \"127.0.0.1:9092\")"
            ));
        }
        if self.brokers.kafka.partitions < 1 || self.brokers.kafka.replication_factor < 1 {
            return invalid(
                "brokers.kafka: partitions and replication_factor must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// The broker kinds some route publishes to.
    pub fn brokers_in_use(&self) -> Vec<herald_dispatch::brokers::BrokerKind> {
        herald_dispatch::brokers::BrokerKind::ALL
            .into_iter()
            .filter(|k| self.routes.iter().any(|r| r.broker == k.as_str()))
            .collect()
    }

    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name() == name)
    }

    pub fn operation_type(&self, name: &str) -> Option<&OperationType> {
        self.operation_types.iter().find(|t| t.name == name)
    }
}

/// Parses a duration given in a request body, as a problem-details-friendly message.
pub fn request_duration(field: &str, text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| format!("`{field}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example() {
        let c = Config::parse(
            r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "30s"
max_attempts = 3
retention = "30d"

[webhooks]
allow_private_destinations = false
timeout = "10s"
schedule = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"]
"#,
        )
        .unwrap();
        let t = c.operation_type("transcode").unwrap();
        assert_eq!(t.trigger_route(), Some(("POST", "/videos")));
        assert_eq!(t.retention, Duration::from_secs(30 * 86400));
        assert_eq!(c.webhooks.schedule.len(), 10);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.retention.events, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(
            c.limits.requests_per_second, 0,
            "rate limits are off by default"
        );
        let off = Config::parse("[retention]\nevents = \"off\"").unwrap();
        assert_eq!(off.retention.events, None);
    }

    #[test]
    fn parses_routes_and_broker_defaults() {
        let c = Config::parse(
            r#"
[[routes]]
events = ["payment.*"]
broker = "nats"
topic = "payments.events"
key = "/data/payment_id"

[brokers.redis]
maxlen = 1000
"#,
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.name(), "nats:payments.events");
        assert_eq!(r.key, "/data/payment_id");
        assert_eq!(c.brokers.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(
            c.brokers.rabbitmq.url,
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(c.brokers.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(c.brokers.redis.maxlen, Some(1000));
        assert_eq!(c.brokers.kafka.bootstrap, "127.0.0.1:9092");
        assert_eq!(
            c.brokers_in_use(),
            vec![herald_dispatch::brokers::BrokerKind::Nats]
        );
    }

    #[test]
    fn rejects_bad_config_with_a_clear_message() {
        for (text, needle) in [
            (
                "[[operation_types]]\nname = \"a\"\ntrigger = \"GET /x\"",
                "must be POST",
            ),
            (
                "[[operation_types]]\nname = \"a\"\ntrigger = \"POST /operations/x\"",
                "Herald's own routes",
            ),
            (
                "[[operation_types]]\nname = \"a\"\nlease = \"soon\"",
                "not a duration",
            ),
            (
                "[[operation_types]]\nname = \"a\"\n[[operation_types]]\nname = \"a\"",
                "declared twice",
            ),
            ("bogus = 1", "unknown field"),
            ("[retention]\nevents = \"1h\"", "at least 1d"),
            ("[retention]\nevents = \"soon\"", "not a duration"),
            ("[limits]\nburst = 0", "burst"),
            (
                "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"kafkaa\"\ntopic = \"t\"",
                "unknown broker `kafkaa`",
            ),
            (
                "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"nats\"",
                "`topic` is missing",
            ),
            (
                "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"redis\"\ntopic = \"t\"\nkey = \"data.payment_id\"",
                "not a JSON pointer",
            ),
            (
                "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"redis\"\ntopic = \"t\"\nkey = \"/data/~2\"",
                "not a JSON pointer",
            ),
            (
                "[[routes]]\nevents = [\"pay*\"]\nbroker = \"redis\"\ntopic = \"t\"",
                "not an event type pattern",
            ),
            (
                "[[routes]]\nevents = [\"a\"]\nbroker = \"nats\"\ntopic = \"a.*\"",
                "not a valid nats topic",
            ),
            (
                "[brokers.kafka]\nbootstrap = \"kafka://127.0.0.1:9092\"",
                "`kafka://127.0.0.1:9092` is not host:port",
            ),
            (
                "[brokers.kafka]\nbootstrap = \"127.0.0.1:9092, 127.0.0.2\"",
                "`127.0.0.2` is not host:port",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
