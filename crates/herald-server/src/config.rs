//! Herald's TOML configuration: operation types (with their trigger routes), event
//! types, webhook delivery settings and limits. Checked once at start with clear errors.

use herald_core::duration::{self, serde_text, serde_text_opt, serde_text_vec};
use herald_core::pattern::is_event_type;
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin_key: None,
            secret_key: None,
            max_body_bytes: default_max_body(),
            operation_types: vec![],
            event_types: vec![],
            webhooks: WebhookSettings::default(),
            limits: LimitSettings::default(),
            retention: RetentionSettings::default(),
        }
    }
}

fn default_max_body() -> usize {
    1024 * 1024
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

/// Per-key rate limits: a token bucket per API key (the config admin key counts as
/// one key). Off by default (`requests_per_second = 0`), so that one admin key may
/// push a benchmark's 20,000 requests a second; turn it on for keys you hand out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Sustained requests a second per key; 0 turns rate limiting off (the default).
    #[serde(default)]
    pub requests_per_second: u32,
    /// Requests a key may send at once above the sustained rate (default: one
    /// second's worth, `requests_per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
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
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes must be at least 1024".into());
        }
        Ok(())
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
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
