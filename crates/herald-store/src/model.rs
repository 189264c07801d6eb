//! The records the store takes and returns, beside the domain types of `herald-core`.

use herald_core::auth::Role;
use herald_core::ids::*;
use herald_core::operation::OperationError;
use herald_core::pattern::EventPattern;
use herald_core::retry::RetrySchedule;
use herald_core::Timestamp;
use serde_json::{Map, Value};

// Domain records used beyond the store live in `herald-core`; re-exported here so
// `herald_store::model::…` paths keep working.
pub use herald_core::delivery::{
    Attempt, AttemptOutcome, AttemptRecord, Delivery, DeliveryStatus, Destination,
};
pub use herald_core::webhook::Webhook;
use std::time::Duration;

/// The most items one page of a list holds. A list filter's `limit` may be one more (the
/// API asks for a page and one row beyond it, to know whether another page follows), so
/// the backends cap a list read at `MAX_PAGE_SIZE + 1`, never at the page size itself.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The cap on a list read's `limit`: a full page and the look-ahead row.
pub fn list_limit(limit: u32) -> i64 {
    limit.clamp(1, MAX_PAGE_SIZE + 1) as i64
}

/// Whether a creating call made something new or found what an earlier identical call made.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<T> {
    New(T),
    Existing(T),
}

impl<T> Created<T> {
    pub fn into_inner(self) -> T {
        match self {
            Created::New(t) | Created::Existing(t) => t,
        }
    }
    pub fn is_new(&self) -> bool {
        matches!(self, Created::New(_))
    }
}

/// An `Idempotency-Key` as the store records it: scoped to the caller and route,
/// with a hash of the request so a different body under the same key is caught.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: KeyId,
    /// SHA-256 of the secret part, hex.
    pub hash: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub revoked: bool,
    /// What a worker key may work on; unscoped (the default) for every other key.
    pub scope: WorkerScope,
}

/// The operations a worker key may claim, heartbeat and finish: those of `types` (when
/// set) that belong to one of `tenants` (when set). `None` puts no limit on that side, so
/// the default (both `None`) is an unscoped key. A key scoped to tenants never gets an
/// operation that belongs to no tenant. Set when the key is minted, never changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerScope {
    pub types: Option<Vec<String>>,
    pub tenants: Option<Vec<TenantId>>,
}

impl WorkerScope {
    pub fn is_unscoped(&self) -> bool {
        self.types.is_none() && self.tenants.is_none()
    }

    pub fn allows_type(&self, op_type: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == op_type))
    }

    /// Whether an operation of `op_type` owned by `tenant` is in scope.
    pub fn allows(&self, op_type: &str, tenant: Option<TenantId>) -> bool {
        self.allows_type(op_type)
            && self
                .tenants
                .as_ref()
                .is_none_or(|tenants| tenant.is_some_and(|t| tenants.contains(&t)))
    }

    /// The scope as the store keeps it: each side a JSON array, or `NULL` when unlimited.
    pub fn to_columns(&self) -> (Option<String>, Option<String>) {
        let tenants = self
            .tenants
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        (
            self.types
                .as_ref()
                .map(|t| Value::from(t.clone()).to_string()),
            tenants.map(|t| Value::from(t).to_string()),
        )
    }

    /// The scope from the columns [`WorkerScope::to_columns`] wrote.
    pub fn from_columns(
        types: Option<String>,
        tenants: Option<String>,
    ) -> crate::StoreResult<Self> {
        let types = types
            .map(|t| serde_json::from_str::<Vec<String>>(&t))
            .transpose()?;
        let tenants = tenants
            .map(|t| serde_json::from_str::<Vec<String>>(&t))
            .transpose()?
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        TenantId::parse(t).map_err(|_| {
                            crate::StoreError::Backend(format!(
                                "api key scope: bad tenant id {t:?}"
                            ))
                        })
                    })
                    .collect::<crate::StoreResult<Vec<_>>>()
            })
            .transpose()?;
        Ok(Self { types, tenants })
    }
}

#[derive(Debug, Clone)]
pub struct NewOperation {
    pub id: OperationId,
    pub tenant: Option<TenantId>,
    pub op_type: String,
    pub metadata: Map<String, Value>,
    pub input: Value,
    pub max_attempts: u32,
    pub deadline_at: Option<Timestamp>,
    /// How long the operation stays readable after it is done.
    pub retention: Duration,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub tenant: Option<TenantId>,
    pub op_type: Option<String>,
    pub done: Option<bool>,
    /// Cursor: only operations created before this one (lists are newest first).
    pub before: Option<OperationId>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub types: Vec<String>,
    /// Only operations of these tenants (a worker key scoped to tenants); `None`: any
    /// operation, of any tenant or of none. An empty list claims nothing.
    pub tenants: Option<Vec<TenantId>>,
    pub max: u32,
    pub lease: Duration,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub id: OperationId,
    pub lease_token: String,
    /// Merged into the operation's metadata (`progress_percent`, or anything the worker reports).
    pub metadata: Option<Map<String, Value>>,
    pub lease: Duration,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub enum FinishAs {
    Complete(Value),
    Fail {
        error: OperationError,
        retryable: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Finish {
    pub id: OperationId,
    pub lease_token: String,
    pub outcome: FinishAs,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: u64,
    pub worker_lost: u64,
    pub deadline_exceeded: u64,
    pub purged: u64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub tenant: Option<TenantId>,
    pub event_type: String,
    pub key: Option<String>,
    pub data: Value,
    pub created_at: Timestamp,
    /// Hash of what the producer sent, to tell a retry from a different event reusing an id.
    pub request_hash: String,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub tenant: Option<TenantId>,
    pub event_type: Option<String>,
    pub key: Option<String>,
    /// Cursor: only events created after this one (history reads oldest first).
    pub after: Option<EventId>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    pub schema: Value,
}

/// A change to a webhook's settings. The store applies it to the row as stored, inside
/// the write that saves it, so two concurrent changes compose instead of one overwriting
/// the other with what it read before (two rotations make two versions, a PATCH of the
/// URL keeps a 410's auto-disable). Fields left `None` are kept as they are.
#[derive(Clone, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<Vec<EventPattern>>,
    /// Disabled "through the API", or enabled (which clears the reason).
    pub disabled: Option<bool>,
    pub description: Option<String>,
    pub schedule: Option<RetrySchedule>,
    pub max_concurrency: Option<u32>,
    pub ordering: Option<herald_core::webhook::Ordering>,
    /// Replaces the custom headers (empty: none).
    pub headers: Option<herald_core::webhook::CustomHeaders>,
    /// `Some(None)` removes the filter.
    pub filter: Option<Option<herald_core::payload_filter::PayloadFilter>>,
    /// `Some(None)` removes the rate limit.
    pub rate_limit: Option<Option<u32>>,
    pub rotate: Option<Rotation>,
    /// Applied to the secrets of the changed row before it is saved (the encrypting
    /// store seals them here, so a secret stored in plaintext before a key was configured
    /// is sealed by any change, and so is the one a rotation moves to `previous_secret`).
    pub seal: Option<SealSecrets>,
}

/// Seals a webhook's secret for storage (idempotent: a sealed secret is returned as is).
pub type SealSecrets =
    std::sync::Arc<dyn Fn(WebhookId, &str) -> crate::StoreResult<String> + Send + Sync>;

/// A new signing secret; the current one keeps signing until `grace_until` (none: stops at once).
#[derive(Clone)]
pub struct Rotation {
    pub secret: String,
    pub grace_until: Option<Timestamp>,
}

impl std::fmt::Debug for WebhookChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChange")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("disabled", &self.disabled)
            .field("description", &self.description)
            .field("schedule", &self.schedule)
            .field("max_concurrency", &self.max_concurrency)
            .field("headers", &self.headers)
            .field("filter", &self.filter)
            .field("rate_limit", &self.rate_limit)
            .field(
                "rotate",
                &self.rotate.as_ref().map(|r| ("<redacted>", r.grace_until)),
            )
            .field("seal", &self.seal.is_some())
            .finish()
    }
}

impl WebhookChange {
    /// The disabled reason a change through the API records.
    pub const DISABLED_THROUGH_API: &'static str = "disabled through the API";

    /// `webhook` with this change made at `now`, its secrets sealed if `seal` is set.
    pub fn apply(&self, mut webhook: Webhook, now: Timestamp) -> crate::StoreResult<Webhook> {
        if let Some(url) = &self.url {
            webhook.url = url.clone();
        }
        if let Some(events) = &self.events {
            webhook.events = events.clone();
        }
        if let Some(disabled) = self.disabled {
            webhook.disabled = disabled;
            webhook.disabled_reason = disabled.then(|| Self::DISABLED_THROUGH_API.to_owned());
        }
        if let Some(description) = &self.description {
            webhook.description = Some(description.clone());
        }
        if let Some(schedule) = &self.schedule {
            webhook.schedule = Some(schedule.clone());
        }
        if let Some(n) = self.max_concurrency {
            webhook.max_concurrency = Some(n);
        }
        if let Some(o) = self.ordering {
            webhook.ordering = o;
        }
        if let Some(headers) = &self.headers {
            webhook.options.headers = headers.clone();
        }
        if let Some(filter) = &self.filter {
            webhook.options.filter = filter.clone();
        }
        if let Some(rate_limit) = self.rate_limit {
            webhook.options.rate_limit = rate_limit;
        }
        if let Some(rotation) = &self.rotate {
            let old = std::mem::replace(&mut webhook.secret, rotation.secret.clone());
            webhook.previous_secret = rotation.grace_until.map(|until| (old, until));
            webhook.secret_version += 1;
        }
        webhook.updated_at = now;
        if let Some(seal) = &self.seal {
            webhook.secret = seal(webhook.id, &webhook.secret)?;
            if let Some((previous, until)) = webhook.previous_secret.take() {
                webhook.previous_secret = Some((seal(webhook.id, &previous)?, until));
            }
        }
        Ok(webhook)
    }
}

#[derive(Debug, Clone, Default)]
pub struct WebhookFilter {
    pub tenant: Option<TenantId>,
    /// When set, list across tenants is not restricted (admin).
    pub all_tenants: bool,
    pub after: Option<WebhookId>,
    pub limit: u32,
}

/// A delivery's destination from its stored `webhook_id` and `route` columns (exactly one is set).
pub fn destination_of(
    webhook_id: Option<String>,
    route: Option<String>,
) -> crate::StoreResult<Destination> {
    let bad = |detail: &str| crate::StoreError::Backend(format!("corrupt delivery row: {detail}"));
    match (webhook_id, route) {
        (Some(w), None) => WebhookId::parse(&w)
            .map(Destination::Webhook)
            .map_err(|e| bad(&e.to_string())),
        (None, Some(r)) => Ok(Destination::Route(r)),
        _ => Err(bad("needs exactly one of webhook_id and route")),
    }
}

/// A claimed delivery with everything needed to send it.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub delivery: Delivery,
    /// Shared by the jobs of one event (its fan-out's, or one claim's).
    pub event: std::sync::Arc<SharedEvent>,
    /// Shared by the jobs of one webhook in a fan-out or a claim.
    pub webhook: std::sync::Arc<Webhook>,
    /// Why this delivery cannot be sent as stored (its webhook's secret cannot be opened
    /// with the configured key): the dispatcher records a failed attempt with this error
    /// instead of sending, so the delivery follows its retry schedule, visibly, and the
    /// other deliveries of its claim go out as usual.
    pub unsendable: Option<String>,
    /// When the claim's lease on the delivery ends. Past it, the store may hand the
    /// delivery to another claim, so whoever holds this copy must neither send it nor
    /// write anything for it.
    pub lease_until: Timestamp,
}

/// An event as the jobs made of it share it: the event, and its body as sent, serialised by
/// whichever of them is sent first and reused by the rest (ten webhooks: one
/// serialisation, one copy of the event, not ten).
#[derive(Debug)]
pub struct SharedEvent {
    event: herald_core::event::Event,
    body: std::sync::OnceLock<bytes::Bytes>,
}

impl SharedEvent {
    pub fn new(event: herald_core::event::Event) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            event,
            body: std::sync::OnceLock::new(),
        })
    }

    /// [`herald_core::event::Event::body_bytes`], made once.
    pub fn body(&self) -> bytes::Bytes {
        self.body
            .get_or_init(|| bytes::Bytes::from(self.event.body_bytes()))
            .clone()
    }

    /// The event itself: taken out when no other job holds it, copied otherwise.
    pub fn into_event(this: std::sync::Arc<Self>) -> herald_core::event::Event {
        std::sync::Arc::try_unwrap(this)
            .map(|s| s.event)
            .unwrap_or_else(|shared| shared.event.clone())
    }
}

impl std::ops::Deref for SharedEvent {
    type Target = herald_core::event::Event;

    fn deref(&self) -> &Self::Target {
        &self.event
    }
}

/// A broker route as the store fans events out to it: events matching `events` get a
/// delivery to the route, in the same transaction as the event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRoute {
    /// Unique among routes; deliveries name their route by it.
    pub name: String,
    pub events: Vec<EventPattern>,
    /// JSON pointer into the event body (`/data/payment_id`) that gives the ordering key.
    pub key: String,
}

impl OutboxRoute {
    /// The ordering key of `event` on this route: the value at the pointer (strings as
    /// they are, numbers and booleans as text, other JSON as compact JSON); `None` when
    /// the pointer finds nothing or `null`.
    pub fn key_of(&self, event: &herald_core::event::Event) -> Option<String> {
        match event.to_body().pointer(&self.key)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => Some(other.to_string()),
        }
    }
}

/// A claimed broker delivery: the head of its (route, key) line, with its event.
#[derive(Debug, Clone)]
pub struct BrokerJob {
    pub delivery: Delivery,
    pub event: herald_core::event::Event,
    /// The route's name.
    pub route: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub tenant: Option<TenantId>,
    pub webhook: Option<WebhookId>,
    /// Only deliveries to this broker route.
    pub route: Option<String>,
    /// Leave out broker deliveries (tenant keys see webhook deliveries only).
    pub webhooks_only: bool,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    /// Only deliveries to these webhooks (a portal session limited to some event types:
    /// the endpoints it sees).
    pub webhooks_in: Option<Vec<WebhookId>>,
    /// Only deliveries of events of these types.
    pub event_types_in: Option<Vec<EventPattern>>,
    /// Only deliveries of events of none of these types.
    pub event_types_out: Option<Vec<EventPattern>>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Cursor: newest first, only deliveries created before this one.
    pub before: Option<DeliveryId>,
    pub limit: u32,
}

/// One batch of a replay: the webhook's deliveries whose event falls in `[since, until)`,
/// taken in (event time, delivery id) order from just after `after`, at most `limit` of
/// them looked at in one short write; those with the wanted status go back to pending.
#[derive(Debug, Clone)]
pub struct Replay {
    pub webhook: WebhookId,
    pub since: Timestamp,
    pub until: Timestamp,
    /// `None`: every delivery not already pending.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries of events of these types (a portal session limited to some);
    /// `None`: every type.
    pub event_types: Option<Vec<EventPattern>>,
    pub now: Timestamp,
    /// Where the batch before stopped (its [`ReplayBatch::next`]); `None` starts at `since`.
    pub after: Option<ReplayCursor>,
    /// Deliveries this batch looks at, at most (at least 1).
    pub limit: u32,
}

impl Replay {
    /// Whether a delivery of `event_type` in the range is replayed.
    pub fn takes(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(event_type)))
    }
}

/// A position in a replay: the last delivery a batch looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCursor {
    pub event_created_at: Timestamp,
    pub delivery: DeliveryId,
}

/// What one replay batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayBatch {
    /// Deliveries put back in the queue by this batch.
    pub replayed: u64,
    /// Where the next batch starts; `None` when the range is done.
    pub next: Option<ReplayCursor>,
}

/// How many operations and deliveries are in each state right now (one tenant, or all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` (deleted operations excluded).
    pub operations: Vec<(String, u64)>,
    /// `pending`, `succeeded`, `failed`.
    pub deliveries: Vec<(String, u64)>,
}

impl StateCounts {
    pub fn deliveries_in(&self, status: DeliveryStatus) -> u64 {
        self.deliveries
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

/// The window the dashboard's charts read: `[since, until)`, one tenant or all. With a
/// tenant, its webhooks' attempts and deliveries only (broker routes are the operator's).
#[derive(Debug, Clone)]
pub struct ActivityFilter {
    pub tenant: Option<TenantId>,
    pub since: Timestamp,
    pub until: Timestamp,
    /// At most this many attempts and this many deliveries are returned (newest kept).
    pub limit: u32,
}

/// One attempt, reduced to what charts and webhook health need.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptSample {
    /// The webhook or broker route the attempt went to.
    pub destination: Destination,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

impl AttemptSample {
    /// A webhook attempt succeeded on a 2xx; a broker publish has no status code and
    /// succeeded when it recorded no error (the broker acknowledged it).
    pub fn succeeded(&self) -> bool {
        match self.destination {
            Destination::Webhook(_) => {
                matches!(self.status_code, Some(c) if (200..300).contains(&c))
            }
            Destination::Route(_) => self.error.is_none(),
        }
    }
}

/// When a delivery entered the backlog and, if it has left it, when it last changed:
/// enough to rebuild the backlog over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySpan {
    pub created_at: Timestamp,
    pub status: DeliveryStatus,
    pub updated_at: Timestamp,
}

/// What happened in a window: attempts made in it, and deliveries that were pending at
/// some point in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub attempts: Vec<AttemptSample>,
    pub deliveries: Vec<DeliverySpan>,
}

/// The schema a store has applied against the one this build expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    pub applied: u32,
    pub expected: u32,
}

impl SchemaVersion {
    pub fn is_current(&self) -> bool {
        self.applied == self.expected
    }
}

/// A portal session: minted by an admin for one tenant, opened once by its URL token
/// (exchanged for a cookie), then used by `/portal` until it expires or is revoked.
#[derive(Clone, PartialEq)]
pub struct PortalSession {
    pub id: PortalSessionId,
    pub tenant: TenantId,
    /// SHA-256 (hex) of the one-time URL token.
    pub token_hash: String,
    /// SHA-256 (hex) of the cookie secret, once the token was exchanged.
    pub cookie_hash: Option<String>,
    /// Sent by the page in `X-Herald-CSRF` with every change (a cross-site form cannot).
    pub csrf_token: String,
    pub read_only: bool,
    /// Event-type patterns its user may subscribe to; `None`: every type.
    pub event_types: Option<Vec<String>>,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub exchanged_at: Option<Timestamp>,
    pub revoked: bool,
}

impl std::fmt::Debug for PortalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalSession")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("read_only", &self.read_only)
            .field("event_types", &self.event_types)
            .field("expires_at", &self.expires_at)
            .field("exchanged_at", &self.exchanged_at)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl PortalSession {
    /// Whether it may still be used at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.revoked && now < self.expires_at
    }
}

/// A tenant's portal settings, set by the API owner: which origins may frame `/portal`
/// (CSP `frame-ancestors`; none: it may not be framed) and its branding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PortalSettings {
    pub frame_origins: Vec<String>,
    /// `{"name","logo_url","accent","theme"}`, each optional.
    pub branding: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_event_is_serialised_once_and_sent_as_it_would_be() {
        let event = herald_core::event::Event {
            id: EventId::generate(),
            tenant: None,
            event_type: "order.paid".into(),
            key: Some("k".into()),
            sequence: Some(3),
            data: serde_json::json!({ "amount": 0.1, "n": [1, 2] }),
            created_at: Timestamp(1_775_834_400_000),
        };
        let shared = SharedEvent::new(event.clone());
        let (a, b) = (shared.body(), shared.clone().body());
        assert_eq!(&a[..], &event.body_bytes()[..]);
        assert_eq!(a.as_ptr(), b.as_ptr(), "made once, shared");
        let held = shared.clone();
        assert_eq!(SharedEvent::into_event(shared), event, "copied while held");
        assert_eq!(SharedEvent::into_event(held), event, "taken when alone");
    }
}
