//! `[[operation_types]]`: what workers claim, with the trigger route tenants POST to.

use super::value::{self, FromText};
use super::ConfigError;
use herald_core::duration::{serde_text, serde_text_opt};
use herald_core::pattern::is_event_type;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationType {
    pub name: String,
    /// `"POST /videos"`: tenants POST here and are answered `202 Accepted` with the operation.
    #[serde(default, deserialize_with = "value::option")]
    pub trigger: Option<Trigger>,
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

/// A trigger route, `"POST /videos"` in the config: parsed once, at load, into its path
/// (the method is always POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    path: String,
}

impl Trigger {
    pub const METHOD: &'static str = "POST";

    pub fn method(&self) -> &'static str {
        Self::METHOD
    }

    /// The plain path (`/videos`) the trigger is served on.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method(), self.path)
    }
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

impl FromText for Trigger {
    fn from_text(text: &str) -> Result<Self, String> {
        let Some((method, path)) = text
            .trim()
            .split_once(' ')
            .map(|(m, p)| (m.trim(), p.trim()))
        else {
            return Err(format!("trigger `{text}` must look like \"POST /videos\""));
        };
        if method != Self::METHOD {
            return Err(format!("trigger method must be POST, not {method}"));
        }
        if !path.starts_with('/') || path.contains(['{', '}', '*', ':', '?', '#']) || path.len() < 2
        {
            return Err(format!(
                "trigger path `{path}` must be a plain path like /videos"
            ));
        }
        if RESERVED_PREFIXES
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        {
            return Err(format!(
                "trigger path `{path}` is one of Herald's own routes"
            ));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

/// What one operation type cannot say alone: its name is unique, as is its trigger path.
pub(super) fn validate(types: &[OperationType]) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for t in types {
        if !is_event_type(&t.name) || t.name.contains('.') {
            return invalid(format!(
                "operation type `{}`: use letters, digits, `_` and `-`",
                t.name
            ));
        }
        // An operation ends with the event `<name>.succeeded|failed|cancelled`: a name
        // that would raise one of Herald's own (`delivery` → `delivery.failed`) is refused.
        let prefix = format!("{}.", t.name);
        if herald_store::RESERVED_EVENT_TYPES
            .iter()
            .any(|r| r.starts_with(&prefix))
        {
            return invalid(format!(
                "operation type `{}`: its final events would bear one of Herald's own event types ({})",
                t.name,
                herald_store::RESERVED_EVENT_TYPES.join(", ")
            ));
        }
        if !names.insert(t.name.as_str()) {
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
            if !paths.insert(trigger.path()) {
                return invalid(format!(
                    "trigger path `{}` is used by two operation types",
                    trigger.path()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_is_parsed_once_into_its_path() {
        for text in ["POST /videos", "  POST   /videos ", "POST /videos/hd"] {
            let t = Trigger::from_text(text).unwrap();
            assert_eq!(t.method(), "POST");
            assert!(t.path().starts_with("/videos"), "{text}: {t}");
        }
        assert_eq!(
            Trigger::from_text("POST /videos").unwrap().to_string(),
            "POST /videos"
        );
        for (bad, needle) in [
            ("/videos", "must look like \"POST /videos\""),
            ("GET /videos", "must be POST, not GET"),
            ("POST videos", "must be a plain path"),
            ("POST /videos/{id}", "must be a plain path"),
            ("POST /", "must be a plain path"),
            ("POST /webhooks", "Herald's own routes"),
            ("POST /dashboard/x", "Herald's own routes"),
        ] {
            let err = Trigger::from_text(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(
            Trigger::from_text("POST /webhooksx").is_ok(),
            "a prefix, not a route"
        );
    }
}
