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

    /// The resource `GET /events` lists: the body plus the tenant.
    pub fn to_resource(&self) -> Value {
        let mut v = self.to_body();
        if let (Value::Object(m), Some(t)) = (&mut v, self.tenant) {
            m.insert("tenant".into(), Value::String(t.to_string()));
        }
        v
    }
}
