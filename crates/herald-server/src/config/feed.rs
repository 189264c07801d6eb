//! `[feed]`: the pull feed's bounds (long polls waiting at once, consumers per tenant).

use super::ConfigError;
use serde::Deserialize;

/// `[feed]`; a key left out takes its `Default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSettings {
    /// Feed long polls (`GET /feed`, `GET /consumers/{name}/events` with `wait`) waiting at
    /// once on this node; one more is answered 503 `OVERLOADED` (default 256). Each wake-up
    /// re-reads the store once per waiting poll, so this also bounds those reads.
    pub max_long_polls: usize,
    /// Consumers one tenant may have; `POST /consumers` past it is 422 (default 100).
    pub max_consumers_per_tenant: u32,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            max_long_polls: 256,
            max_consumers_per_tenant: 100,
        }
    }
}

impl FeedSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_long_polls == 0 {
            return Err(ConfigError::Invalid(
                "feed.max_long_polls must be at least 1".into(),
            ));
        }
        if self.max_consumers_per_tenant == 0 {
            return Err(ConfigError::Invalid(
                "feed.max_consumers_per_tenant must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
