//! `[webhooks]`: how webhook deliveries are sent and retried.

use super::value;
use super::ConfigError;
use herald_core::duration::serde_text;
use herald_core::retry::RetrySchedule;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// `[webhooks]`; a key left out takes its `Default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Allow destinations on loopback, private and link-local addresses (tests, local development).
    pub allow_private_destinations: bool,
    #[serde(with = "serde_text")]
    pub timeout: Duration,
    /// Wait before each attempt; the delivery is dead after the last.
    #[serde(deserialize_with = "schedule")]
    pub schedule: RetrySchedule,
    /// How long the old secret keeps signing after `:rotateSecret` (default 24h).
    #[serde(with = "serde_text")]
    pub rotation_grace: Duration,
    /// Requests in flight at once, across all webhooks.
    pub max_in_flight: usize,
    /// Requests in flight at once to one webhook (a webhook may set its own).
    pub per_webhook_concurrency: u32,
    /// Webhooks one tenant may have (not counting deleted ones); `POST /webhooks` past
    /// it is 422 (default 100).
    pub max_per_tenant: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_destinations: false,
            timeout: default_timeout(),
            schedule: RetrySchedule::default(),
            rotation_grace: Duration::from_secs(86400),
            max_in_flight: 256,
            per_webhook_concurrency: 16,
            max_per_tenant: 100,
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
