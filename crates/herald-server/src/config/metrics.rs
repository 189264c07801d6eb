//! `[metrics]`: how `/metrics` is served.

use super::value::Redacted;
use super::ConfigError;
use herald_core::duration::serde_text;
use serde::Deserialize;
use std::time::Duration;

/// `[metrics]`: the store-backed gauges of `/metrics` (operations and deliveries by state)
/// are re-read in the background every `refresh`, so a scrape only encodes what is in
/// memory; `require_key` puts `/metrics` behind an admin key or the dedicated `token`.
/// A key left out takes its `Default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// How often the gauges are re-read from the store (default 10s, at least 100ms).
    #[serde(with = "serde_text")]
    pub refresh: Duration,
    /// `/metrics` answers 401 without `Authorization: Bearer` with an admin key or `token`
    /// (default false: no key, like most exporters).
    pub require_key: bool,
    /// A bearer token that opens `/metrics` and nothing else, for the scraper (so it need
    /// not hold an admin key). At least 16 characters; needs `require_key = true`.
    pub token: Option<Redacted>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(10),
            require_key: false,
            token: None,
        }
    }
}

impl MetricsSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
