//! `[webhooks]`: how webhook deliveries are sent and retried.

use super::value;
use super::ConfigError;
use herald_core::duration::serde_text;
use herald_core::retry::RetrySchedule;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Allow destinations on loopback, private and link-local addresses (tests, local development).
    #[serde(default)]
    pub allow_private_destinations: bool,
    #[serde(default = "default_timeout", with = "serde_text")]
    pub timeout: Duration,
    /// Wait before each attempt; the delivery is dead after the last.
    #[serde(default, deserialize_with = "schedule")]
    pub schedule: RetrySchedule,
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
            schedule: RetrySchedule::default(),
            rotation_grace: default_grace(),
            max_in_flight: default_in_flight(),
            per_webhook_concurrency: default_per_webhook(),
            max_per_tenant: default_max_per_tenant(),
        }
    }
}

/// `["0s", "5s", "5m"]`: each wait parsed (a bad one refused under its index), then
/// the schedule checked as a whole.
fn schedule<'de, D: Deserializer<'de>>(d: D) -> Result<RetrySchedule, D::Error> {
    RetrySchedule::new(value::list(d)?).map_err(serde::de::Error::custom)
}

/// Also the default timeout of a broker publish.
pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(10)
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

impl WebhookSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "webhooks.timeout must be at least 100ms".into(),
            ));
        }
        if self.max_per_tenant == 0 {
            return Err(ConfigError::Invalid(
                "webhooks.max_per_tenant must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
