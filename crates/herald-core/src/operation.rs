//! Long-running operations: their life cycle and their public shape, exactly the
//! reference text's `{ name, metadata, done, response | error }`.

use crate::ids::{OperationId, TenantId};
use crate::Timestamp;
use serde_json::{Map, Value};

/// Why an operation ended without a response: `{ "code", "message" }`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperationError {
    pub code: String,
    pub message: String,
}

impl OperationError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Error codes Herald itself sets.
pub mod codes {
    pub const CANCELLED: &str = "CANCELLED";
    pub const WORKER_LOST: &str = "WORKER_LOST";
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
}

/// How an operation ended: by construction exactly one of response or error.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Response(Value),
    Error(OperationError),
}

/// Where an operation is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum OperationState {
    /// Waiting for a worker (never claimed, or handed back after a lost lease or a retryable failure).
    Queued,
    /// Leased to a worker until `lease_expires_at`.
    Running {
        lease_token: String,
        lease_expires_at: Timestamp,
    },
    /// Finished; the outcome never changes again.
    Done(Outcome),
}

impl OperationState {
    pub fn is_done(&self) -> bool {
        matches!(self, OperationState::Done(_))
    }

    /// The name the store and the list filter use.
    pub fn label(&self) -> &'static str {
        match self {
            OperationState::Queued => "queued",
            OperationState::Running { .. } => "running",
            OperationState::Done(Outcome::Response(_)) => "succeeded",
            OperationState::Done(Outcome::Error(e)) if e.code == codes::CANCELLED => "cancelled",
            OperationState::Done(Outcome::Error(_)) => "failed",
        }
    }
}

/// An operation as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub id: OperationId,
    pub tenant: Option<TenantId>,
    pub op_type: String,
    /// User and worker metadata, without `type` (always the operation's type).
    pub metadata: Map<String, Value>,
    pub input: Value,
    pub state: OperationState,
    /// How many times a worker has claimed it.
    pub attempt: u32,
    pub max_attempts: u32,
    pub cancel_requested: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deadline_at: Option<Timestamp>,
}

impl Operation {
    /// The public resource: `{ "name", "metadata", "done", "response" | "error" }`.
    pub fn to_resource(&self) -> Value {
        let mut metadata = Map::with_capacity(self.metadata.len() + 2);
        metadata.insert("type".into(), Value::String(self.op_type.clone()));
        for (k, v) in &self.metadata {
            if k != "type" {
                metadata.insert(k.clone(), v.clone());
            }
        }
        metadata.entry("progress_percent").or_insert(Value::from(0));
        let mut out = Map::with_capacity(4);
        out.insert(
            "name".into(),
            Value::String(format!("operations/{}", self.id)),
        );
        out.insert("metadata".into(), Value::Object(metadata));
        out.insert("done".into(), Value::Bool(self.state.is_done()));
        match &self.state {
            OperationState::Done(Outcome::Response(r)) => {
                out.insert("response".into(), r.clone());
            }
            OperationState::Done(Outcome::Error(e)) => {
                out.insert(
                    "error".into(),
                    serde_json::to_value(e).unwrap_or(Value::Null),
                );
            }
            _ => {}
        }
        Value::Object(out)
    }

    /// The event raised when the operation ends: `<type>.succeeded|failed|cancelled`.
    pub fn final_event_type(&self) -> Option<String> {
        match &self.state {
            OperationState::Done(_) => Some(format!("{}.{}", self.op_type, self.state.label())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(state: OperationState) -> Operation {
        Operation {
            id: OperationId::parse("op_01HX0000000000000000000000").unwrap(),
            tenant: None,
            op_type: "transcode".into(),
            metadata: json!({ "video_id": "vid_99" }).as_object().unwrap().clone(),
            input: json!({}),
            state,
            attempt: 0,
            max_attempts: 3,
            cancel_requested: false,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            deadline_at: None,
        }
    }

    #[test]
    fn resource_has_the_reference_shape() {
        assert_eq!(
            op(OperationState::Queued).to_resource(),
            json!({ "name": "operations/op_01HX0000000000000000000000",
                    "metadata": { "type": "transcode", "video_id": "vid_99", "progress_percent": 0 },
                    "done": false })
        );
        let done = op(OperationState::Done(Outcome::Error(OperationError::new(
            "SOURCE_UNREACHABLE",
            "x",
        ))));
        let r = done.to_resource();
        assert_eq!(r["done"], json!(true));
        assert_eq!(r["error"]["code"], json!("SOURCE_UNREACHABLE"));
        assert!(r.get("response").is_none());
        assert_eq!(done.final_event_type().as_deref(), Some("transcode.failed"));
    }
}
