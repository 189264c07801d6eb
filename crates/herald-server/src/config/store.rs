//! `[store]` and `[limits]`: how much may wait for the store, and how fast one key or
//! one client address may send.

use super::ConfigError;
use serde::Deserialize;

/// `[store]`: how much may wait for the store before a request is refused with 503
/// `OVERLOADED` (and changes nothing), instead of queueing without bound. A key left
/// out takes its `Default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Writes waiting for the SQLite writer thread, or events for PostgreSQL's event
    /// writer (default 4096).
    pub write_queue: usize,
    /// PostgreSQL: `GET /operations/{id}` look-ups waiting for the batched reader
    /// (default 4096).
    pub read_queue: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            write_queue: herald_store::sqlite::DEFAULT_WRITE_QUEUE,
            read_queue: herald_store::postgres::DEFAULT_READ_QUEUE,
        }
    }
}

impl StoreSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.write_queue == 0 || self.read_queue == 0 {
            return Err(ConfigError::Invalid(
                "store.write_queue and store.read_queue must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// `[limits]`: per-key rate limits, a token bucket per API key (the config admin key
/// counts as one key). Off by default (`requests_per_second = 0`), so that one admin key
/// may push a benchmark's 20,000 requests a second; turn it on for keys you hand out.
/// A key left out takes its `Default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Sustained requests a second per key; 0 turns rate limiting off (the default).
    pub requests_per_second: u32,
    /// Requests a key may send at once above the sustained rate (default: one
    /// second's worth, `requests_per_second`).
    pub burst: Option<u32>,
    /// Requests with a wrong or unknown key that one client address may send a minute
    /// (also its burst) before it is answered 429 without a look-up; 0 turns it off.
    /// On by default (60): a wrong key is never a benchmark's load.
    pub failed_auth_per_minute: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 0,
            burst: None,
            failed_auth_per_minute: 60,
        }
    }
}

impl LimitSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.burst == Some(0) {
            return Err(ConfigError::Invalid(
                "limits.burst must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
