//! Deliveries of events to webhooks and broker routes, and the attempts made at them.

use crate::ids::*;
use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or paused while its webhook is disabled).
    Pending,
    Succeeded,
    /// Every attempt of its window failed (dead); stays listed for redelivery.
    Failed,
    /// An operator gave it up (`:skip`): never sent again unless redelivered. On an ordered
    /// webhook this releases the deliveries of its key that it held back.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }
}

/// Where a delivery goes: a webhook's URL, or a broker route of the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Webhook(WebhookId),
    /// The route's name (a broker route of the config); the broker and topic come from config.
    Route(String),
}

impl Destination {
    pub fn webhook(&self) -> Option<WebhookId> {
        match self {
            Destination::Webhook(id) => Some(*id),
            Destination::Route(_) => None,
        }
    }
    pub fn route(&self) -> Option<&str> {
        match self {
            Destination::Webhook(_) => None,
            Destination::Route(name) => Some(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub destination: Destination,
    /// The broker key (a route's JSON pointer into the event); deliveries of one route and
    /// key are published one after another, in the order they were created. On a webhook
    /// with `ordering: key`, the event's key: its deliveries go one at a time in `sequence` order.
    pub ordering_key: Option<String>,
    /// The event's `sequence` within its key, on an ordered webhook's delivery: its place in line.
    pub sequence: Option<i64>,
    /// On reads only: the delivery of the same ordered line (webhook and key) that holds this
    /// pending one back, the head of the line.
    pub held_by: Option<DeliveryId>,
    pub tenant: Option<TenantId>,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made over the delivery's whole life (redeliveries included).
    pub attempts: u32,
    /// Attempts made in the current retry window.
    pub window_attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: AttemptId,
    pub delivery_id: DeliveryId,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// What happens to a delivery after an attempt (or a decision not to try).
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Succeeded,
    RetryAt(Timestamp),
    /// The window is over: the delivery is dead.
    Failed,
    /// Not attempted (circuit open, endpoint saturated): try again at this time, no attempt counted.
    Deferred(Timestamp),
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    /// `None` for a deferral, which records no attempt.
    pub attempt: Option<Attempt>,
    pub outcome: AttemptOutcome,
    /// Set when the endpoint answered `410 Gone`: the webhook is disabled with this reason.
    pub disable_webhook: Option<(WebhookId, String)>,
}
