//! `[retention]`: how long settled events, their deliveries and attempts are kept.

use super::ConfigError;
use herald_core::duration::{self, serde_text};
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Event retention. Events no delivery still owes (every delivery succeeded or is
/// dead) are purged with their deliveries and attempts once older than `events`. A key
/// left out takes its `Default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Default 30d; `"off"` keeps events for ever. At least 1d, the time an
    /// `Idempotency-Key` answers retries.
    #[serde(deserialize_with = "retention_text")]
    pub events: Option<Duration>,
    /// Events removed per write (default 500): small, so requests never wait long.
    pub batch: u32,
    /// Pause between passes once nothing more is due (default 1m).
    #[serde(with = "serde_text")]
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: Some(Duration::from_secs(30 * 86400)),
            batch: 500,
            interval: Duration::from_secs(60),
        }
    }
}

/// A duration, or `"off"` (`None`: kept for ever).
fn retention_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim() == "off" {
        return Ok(None);
    }
    duration::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl RetentionSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if matches!(self.events, Some(d) if d < Duration::from_secs(86400)) {
            return invalid("retention.events must be at least 1d (or \"off\")");
        }
        if self.batch == 0 || self.batch > 10_000 {
            return invalid("retention.batch must be between 1 and 10000");
        }
        Ok(())
    }
}
