//! Events: what `POST /events` accepts and operations raise, and the exact JSON
//! body a webhook receives.

use crate::ids::{EventId, TenantId};
use crate::Timestamp;
use serde_json::{Map, Value};

/// An accepted event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub tenant: Option<TenantId>,
    pub event_type: String,
    /// Ordering key (`pay_42`); events with one key are numbered by `sequence`.
    pub key: Option<String>,
    /// 1, 2, 3… per (tenant, key); present exactly when `key` is.
    pub sequence: Option<i64>,
    pub data: Value,
    pub created_at: Timestamp,
}

impl Event {
    /// The delivery body: `{ id, type, created_at, data }`, plus `key` and `sequence`
    /// when the event has a key.
    pub fn to_body(&self) -> Value {
        let mut out = Map::with_capacity(6);
        out.insert("id".into(), Value::String(self.id.to_string()));
        out.insert("type".into(), Value::String(self.event_type.clone()));
        out.insert(
            "created_at".into(),
            Value::String(self.created_at.to_rfc3339_seconds()),
        );
        if let (Some(key), Some(seq)) = (&self.key, self.sequence) {
            out.insert("key".into(), Value::String(key.clone()));
            out.insert("sequence".into(), Value::from(seq));
        }
        out.insert("data".into(), self.data.clone());
        Value::Object(out)
    }

    /// [`Event::to_body`] as the exact bytes sent, serialised straight from the event
    /// (nothing copied into an intermediate value first).
    pub fn body_bytes(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            id: String,
            #[serde(rename = "type")]
            event_type: &'a str,
            created_at: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            key: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            sequence: Option<i64>,
            data: &'a Value,
        }
        let keyed = self.key.is_some() && self.sequence.is_some();
        let body = Body {
            id: self.id.to_string(),
            event_type: &self.event_type,
            created_at: self.created_at.to_rfc3339_seconds(),
            key: self.key.as_deref().filter(|_| keyed),
            sequence: self.sequence.filter(|_| keyed),
            data: &self.data,
        };
        let mut out = Vec::with_capacity(128 + self.event_type.len());
        // A `Value` and plain strings always serialise.
        serde_json::to_writer(&mut out, &body).expect("an event serialises");
        out
    }

    /// The resource `GET /events` lists: the body plus the tenant.
    pub fn to_resource(&self) -> Value {
        let mut v = self.to_body();
        if let (Value::Object(m), Some(t)) = (&mut v, self.tenant) {
            m.insert("tenant".into(), Value::String(t.to_string()));
        }
        v
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[test]
    fn body_bytes_are_the_body_serialised() {
        let mut event = Event {
            id: EventId::generate(),
            tenant: None,
            event_type: "payment.succeeded".into(),
            key: None,
            sequence: None,
            data: serde_json::json!({"z": 1, "a": [1, "two", {"é": null}], "m": "\u{1}\""}),
            created_at: Timestamp(1_775_834_400_123),
        };
        assert_eq!(
            event.body_bytes(),
            serde_json::to_vec(&event.to_body()).unwrap()
        );
        event.key = Some("pay_42".into());
        assert_eq!(
            event.body_bytes(),
            serde_json::to_vec(&event.to_body()).unwrap()
        );
        event.sequence = Some(7);
        let bytes = event.body_bytes();
        assert_eq!(bytes, serde_json::to_vec(&event.to_body()).unwrap());
        assert!(String::from_utf8(bytes)
            .unwrap()
            .contains(r#""key":"pay_42","sequence":7,"data""#));
    }
}
