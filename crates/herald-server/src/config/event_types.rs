//! `[[event_types]]`: event types whose `data` must satisfy a JSON Schema.

use super::ConfigError;
use herald_core::pattern::is_event_type;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeConfig {
    pub name: String,
    /// A JSON Schema that every event's `data` must satisfy: converted from TOML to JSON
    /// once, at load, and refused there if it does not compile.
    #[serde(deserialize_with = "json_schema")]
    pub schema: serde_json::Value,
}

fn json_schema<'de, D: Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
    use serde::de::Error;
    let schema = serde_json::to_value(toml::Value::deserialize(d)?).map_err(D::Error::custom)?;
    jsonschema::validator_for(&schema)
        .map_err(|e| D::Error::custom(format!("its schema is not valid JSON Schema: {e}")))?;
    Ok(schema)
}

pub(super) fn validate(types: &[EventTypeConfig]) -> Result<(), ConfigError> {
    match types.iter().find(|e| !is_event_type(&e.name)) {
        Some(e) => Err(ConfigError::Invalid(format!(
            "event type `{}` is not a valid event type name",
            e.name
        ))),
        None => Ok(()),
    }
}
