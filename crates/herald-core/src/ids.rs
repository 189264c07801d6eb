//! Prefixed, time-sortable ids (`op_01HX…`): a ULID behind a fixed prefix, so an id
//! says what it names and ids sort by creation time.

use std::fmt;
use std::str::FromStr;

/// The id did not have the expected prefix or is not a ULID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}` followed by a ULID)")]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

/// ULIDs made in one millisecond would otherwise sort at random; lists are ordered by
/// id, so ids from one process must increase strictly. (The one process-wide value in
/// Herald: ids must be unique across every part of it.)
fn monotonic_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ulid::Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id for something created now, greater than every id this process made before.
            pub fn generate() -> Self {
                Self(monotonic_ulid())
            }

            /// Parses `prefix_ULID`; anything else is an error.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                value
                    .strip_prefix($prefix)
                    .and_then(|rest| ulid::Ulid::from_string(rest).ok())
                    .map(Self)
                    .ok_or_else(|| IdError { kind: $kind, prefix: $prefix, value: value.to_owned() })
            }

            /// The ULID's timestamp, in milliseconds since the epoch.
            pub fn millis(&self) -> u64 {
                self.0.timestamp_ms()
            }

            /// The ULID's 128 bits (time in the high 48, randomness below).
            pub fn as_u128(&self) -> u128 {
                self.0 .0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(/// A long-running operation.
    OperationId, "op_", "operation");
prefixed_id!(/// An event accepted by `POST /events` or raised by an operation.
    EventId, "evt_", "event");
prefixed_id!(/// A webhook subscription.
    WebhookId, "wh_", "webhook");
prefixed_id!(/// One event owed to one webhook.
    DeliveryId, "dlv_", "delivery");
prefixed_id!(/// One try at a delivery.
    AttemptId, "att_", "attempt");
prefixed_id!(/// A tenant: the unit of isolation.
    TenantId, "tnt_", "tenant");
prefixed_id!(/// An API key (its id, never its secret).
    KeyId, "key_", "key");
prefixed_id!(/// A portal session: a tenant's user managing its webhooks through `/portal`.
    PortalSessionId, "pts_", "portal session");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_prefix() {
        let id = OperationId::generate();
        let text = id.to_string();
        assert!(text.starts_with("op_"));
        assert_eq!(OperationId::parse(&text).unwrap(), id);
        assert!(EventId::parse(&text).is_err());
        assert!(OperationId::parse("op_nope").is_err());
    }

    #[test]
    fn ids_sort_by_creation_even_within_a_millisecond() {
        let ids: Vec<String> = (0..1000).map(|_| EventId::generate().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
