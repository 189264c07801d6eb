//! Herald's durable state. [`Store`] is the one interface the API and the delivery
//! engine use; [`sqlite::SqliteStore`] is the embedded backend (WAL, `synchronous=FULL`,
//! one writer thread that group-commits whatever is queued); [`postgres::PgStore`] lets
//! many nodes share one PostgreSQL database (`SKIP LOCKED` claims, `LISTEN/NOTIFY`).
//!
//! Every method that changes state returns only after the change is on disk, and
//! fires the matching [`Signals`] so long polls and the dispatcher wake at once.

pub mod encrypted;
pub mod fanout;
pub mod feed;
pub mod filter;
pub mod handoff;
pub mod lines;
pub mod model;
pub mod postgres;
pub(crate) mod rows;
pub(crate) mod rules;
pub mod signals;
pub mod sqlite;

pub use feed::{
    Acked, BadCursor, Consumer, ConsumerStart, FeedPage, FeedPosition, FeedQuery, NewConsumer,
};
pub use handoff::{Handoff, HandoffSink};
pub use model::*;
pub use rules::{
    is_reserved_event_type, DELIVERY_FAILED, RESERVED_EVENT_TYPES, WEBHOOK_DISABLED, WEBHOOK_TEST,
};
pub use signals::{Appended, Signals};

use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::Timestamp;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The same idempotency key (or event id) came with a different request.
    #[error("the idempotency key was used with a different request")]
    IdempotencyMismatch,
    /// The lease token is not the operation's current one (expired, or another worker's).
    #[error("the lease token is stale")]
    StaleLease,
    /// The operation has already finished.
    #[error("the operation is already done")]
    AlreadyDone,
    /// The store's queue for this kind of request is full: refused at once, nothing
    /// changed; the caller may retry shortly.
    #[error("the store is overloaded; nothing was changed")]
    Overloaded,
    /// A configured cap is reached (webhooks per tenant): refused, nothing changed.
    #[error("the limit is reached; nothing was changed")]
    LimitReached,
    /// The delivery already succeeded: there is nothing to skip.
    #[error("the delivery already succeeded")]
    DeliverySucceeded,
    /// The delivery's attempt is in flight: it can be skipped once that attempt ends.
    #[error("the delivery's attempt is in flight")]
    DeliveryInFlight,
    /// A resource with this name exists already (a consumer): nothing changed.
    #[error("it already exists; nothing was changed")]
    AlreadyExists,
    /// An ack names a position past what the consumer was handed: nothing changed.
    #[error("the cursor was never delivered to this consumer")]
    CursorNotDelivered,
    #[error("storage failure: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(format!("bad JSON in store: {e}"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Herald keeps: the sum of one trait per aggregate. Object-safe, so the
/// backend is chosen once at start-up (`Arc<dyn Store>`). Every type that implements all
/// the aggregates is a `Store`. No aggregate method has a default: a wrapper (say
/// [`encrypted::EncryptedSecrets`]) must forward each one, or it does not compile.
pub trait Store:
    TenantStore
    + OperationStore
    + EventStore
    + FeedStore
    + WebhookStore
    + DeliveryStore
    + OutboxStore
    + StatsStore
    + PortalStore
{
}

impl<T> Store for T where
    T: TenantStore
        + OperationStore
        + EventStore
        + FeedStore
        + WebhookStore
        + DeliveryStore
        + OutboxStore
        + StatsStore
        + PortalStore
{
}

/// Portal sessions and each tenant's portal settings.
#[async_trait]
pub trait PortalStore: Send + Sync + 'static {
    async fn create_portal_session(&self, session: PortalSession) -> StoreResult<PortalSession>;
    async fn get_portal_session(&self, id: PortalSessionId) -> StoreResult<PortalSession>;
    /// Opens the session whose URL token hashes to `token_hash`, once: it must be live and
    /// not opened before; it is then bound to the cookie hashing to `cookie_hash`.
    /// `NotFound` otherwise (unknown, used, expired or revoked alike).
    async fn exchange_portal_token(
        &self,
        token_hash: String,
        cookie_hash: String,
        now: Timestamp,
    ) -> StoreResult<PortalSession>;
    /// The session whose URL token hashes to `token_hash`, opened or not, live or not (the
    /// caller checks): a read, so showing the link's page spends nothing.
    async fn portal_session_by_token(&self, token_hash: String) -> StoreResult<PortalSession>;
    /// The session bound to this cookie (live or not: the caller checks).
    async fn portal_session_by_cookie(&self, cookie_hash: String) -> StoreResult<PortalSession>;
    async fn revoke_portal_session(&self, id: PortalSessionId, now: Timestamp) -> StoreResult<()>;
    /// The tenant's settings; the defaults when none were set.
    async fn get_portal_settings(&self, tenant: TenantId) -> StoreResult<PortalSettings>;
    async fn put_portal_settings(
        &self,
        tenant: TenantId,
        settings: PortalSettings,
    ) -> StoreResult<PortalSettings>;
}

/// Tenants and their API keys.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    async fn create_tenant(&self, tenant: Tenant) -> StoreResult<Tenant>;
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant>;
    async fn create_key(&self, key: ApiKey) -> StoreResult<()>;
    async fn get_key(&self, id: KeyId) -> StoreResult<ApiKey>;
    async fn revoke_key(&self, id: KeyId, now: Timestamp) -> StoreResult<()>;
    async fn count_live_admin_keys(&self) -> StoreResult<u64>;
}

/// Long-running operations: the client's side (create, read, cancel, delete), the
/// worker's (claim, heartbeat, finish) and the reaper's.
#[async_trait]
pub trait OperationStore: Send + Sync + 'static {
    async fn create_operation(
        &self,
        op: NewOperation,
        idempotency: Option<Idempotency>,
    ) -> StoreResult<Created<herald_core::operation::Operation>>;
    async fn get_operation(
        &self,
        id: OperationId,
    ) -> StoreResult<herald_core::operation::Operation>;
    /// The operation as the worker protocol sees it: like [`OperationStore::get_operation`],
    /// but an operation the client deleted is still found (DELETE hides it from the client;
    /// the worker holding its lease goes on, heartbeats and finishes it).
    async fn get_operation_for_worker(
        &self,
        id: OperationId,
    ) -> StoreResult<herald_core::operation::Operation>;
    async fn list_operations(
        &self,
        filter: OperationFilter,
    ) -> StoreResult<Vec<herald_core::operation::Operation>>;
    /// Not started: done with `CANCELLED` at once. Running: cancel requested.
    async fn cancel_operation(
        &self,
        id: OperationId,
        now: Timestamp,
    ) -> StoreResult<herald_core::operation::Operation>;
    /// The client no longer wants the result: hidden from reads, work goes on.
    async fn delete_operation(&self, id: OperationId, now: Timestamp) -> StoreResult<()>;
    async fn claim_operations(
        &self,
        claim: ClaimRequest,
    ) -> StoreResult<Vec<herald_core::operation::Operation>>;
    async fn heartbeat(&self, beat: Heartbeat) -> StoreResult<herald_core::operation::Operation>;
    async fn finish_operation(
        &self,
        finish: Finish,
    ) -> StoreResult<herald_core::operation::Operation>;
    /// Expired leases back to the queue (or `WORKER_LOST`), deadlines passed, retention over.
    async fn reap_operations(&self, now: Timestamp) -> StoreResult<ReapReport>;
    /// When the next lease or deadline falls due, so the reaper can sleep until then.
    async fn next_operation_timer(&self) -> StoreResult<Option<Timestamp>>;
}

/// Events (each stored with its deliveries, see [`fanout`]), event types, and retention.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    async fn insert_event(
        &self,
        event: NewEvent,
        idempotency: Option<Idempotency>,
    ) -> StoreResult<Created<herald_core::event::Event>>;
    async fn get_event(&self, id: EventId) -> StoreResult<herald_core::event::Event>;
    async fn list_events(&self, filter: EventFilter)
        -> StoreResult<Vec<herald_core::event::Event>>;
    async fn put_event_type(&self, event_type: EventType) -> StoreResult<()>;
    async fn list_event_types(&self) -> StoreResult<Vec<EventType>>;
    /// Removes up to `limit` events created before `older_than` that no delivery still
    /// owes (none `pending`), with their deliveries and attempts, in one short write.
    /// Callers loop over small batches so the writer is never stalled. Per-key event
    /// sequences are kept.
    async fn purge_settled_events(
        &self,
        older_than: Timestamp,
        limit: u32,
    ) -> StoreResult<PurgeReport>;
}

/// The pull feed (see [`feed`]): a tenant's events in commit order after a cursor, and
/// named consumers whose acknowledged position the store keeps.
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    /// The events after `query.after`, in commit order: a position once returned is never
    /// preceded by an event that commits later, on any node.
    async fn read_feed(&self, query: FeedQuery) -> StoreResult<FeedPage>;
    /// Stores a consumer, refused with [`StoreError::AlreadyExists`] when its tenant has one
    /// of that name and [`StoreError::LimitReached`] when it has `max_per_tenant` already.
    async fn create_consumer(
        &self,
        consumer: NewConsumer,
        max_per_tenant: u32,
    ) -> StoreResult<Consumer>;
    async fn get_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<Consumer>;
    async fn list_consumers(&self, tenant: Option<TenantId>) -> StoreResult<Vec<Consumer>>;
    async fn delete_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<()>;
    /// Records that a read handed the consumer everything up to `upto` (never moves back).
    async fn consumer_delivered(
        &self,
        tenant: Option<TenantId>,
        name: String,
        upto: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Moves the acknowledged position forward to `cursor`, in one write; a cursor at or
    /// behind it changes nothing; one past `delivered` is [`StoreError::CursorNotDelivered`].
    async fn ack_consumer(
        &self,
        tenant: Option<TenantId>,
        name: String,
        cursor: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<Acked>;
}

/// Webhook subscriptions.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create_webhook(&self, webhook: Webhook) -> StoreResult<Webhook>;
    /// [`WebhookStore::create_webhook`], refused with [`StoreError::LimitReached`] (nothing
    /// stored) when the webhook's tenant already has `max_per_tenant` webhooks that are
    /// not deleted. The count and the insert are one write: concurrent creates, on any
    /// node, never take a tenant past the cap.
    async fn create_webhook_capped(
        &self,
        webhook: Webhook,
        max_per_tenant: u32,
    ) -> StoreResult<Webhook>;
    async fn get_webhook(&self, id: WebhookId) -> StoreResult<Webhook>;
    async fn list_webhooks(&self, filter: WebhookFilter) -> StoreResult<Vec<Webhook>>;
    /// Applies `change` to the webhook as stored, in one write (see [`WebhookChange`]); pauses
    /// or resumes its deliveries when `disabled` changes. A deleted webhook is `NotFound`.
    async fn update_webhook(
        &self,
        id: WebhookId,
        change: WebhookChange,
        now: Timestamp,
    ) -> StoreResult<Webhook>;
    async fn delete_webhook(&self, id: WebhookId, now: Timestamp) -> StoreResult<()>;
}

/// Webhook deliveries: the dispatcher's claims and results, and the API's reads,
/// redeliveries and replays.
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Claims due webhook deliveries (broker deliveries are claimed by
    /// [`OutboxStore::claim_due_broker_deliveries`]).
    async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryJob>>;
    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<()>;
    /// Hands the webhook deliveries of events stored from now on straight to a running
    /// dispatcher, leased in their own write while `handoff` has free slots (see
    /// [`handoff`]); replaces any handoff set before. A backend that does not hand off
    /// leaves every delivery to [`claim_due_deliveries`](Self::claim_due_deliveries).
    fn hand_off_fresh(&self, handoff: Handoff);
    /// When the next webhook delivery (or its lease) falls due.
    async fn next_delivery_due(&self) -> StoreResult<Option<Timestamp>>;
    async fn list_deliveries(&self, filter: DeliveryFilter) -> StoreResult<Vec<Delivery>>;
    async fn get_delivery(&self, id: DeliveryId) -> StoreResult<(Delivery, Vec<Attempt>)>;
    /// Back to pending, due now, with a fresh retry window; the event (and its id) is the same.
    async fn redeliver(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery>;
    /// One batch of a replay (see [`Replay`]): redelivers those of the next `limit`
    /// deliveries of the webhook in the range that have the status asked for, in one short
    /// write, and says where the next batch starts. `NotFound` for an unknown webhook.
    async fn replay(&self, replay: Replay) -> StoreResult<ReplayBatch>;
    /// Gives a pending or failed delivery up (`skipped`): it is not sent again unless
    /// redelivered, and on an ordered webhook the next delivery of its key is released.
    /// A skipped one answers as it is; a succeeded one is `DeliverySucceeded`; one whose
    /// attempt is in flight (leased) is `DeliveryInFlight`, so a key never has two sends out.
    async fn skip_delivery(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery>;
    /// The ordered lines' sweep (see [`lines`]): every held head of a live webhook is made
    /// due. Answers how many were.
    async fn release_held_heads(&self, now: Timestamp) -> StoreResult<u64>;
}

/// Broker routes and their deliveries (the outbox).
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// The broker routes events fan out to, from config; replaces any set before. Events
    /// stored from then on get one delivery per matching route, in their own transaction.
    fn set_routes(&self, routes: Vec<OutboxRoute>);
    /// Claims (leases) due broker deliveries, at most one per (route, ordering key): only the
    /// oldest pending delivery of its line, so a key's later event never overtakes an earlier
    /// one, retries included. Deliveries with no key are not ordered.
    async fn claim_due_broker_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<BrokerJob>>;
    /// When the next claimable broker delivery falls due (heads of lines only).
    async fn next_broker_delivery_due(&self) -> StoreResult<Option<Timestamp>>;
}

/// The store as a whole: its wake-ups, and what observability reads.
#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Wake-ups fired after each commit.
    fn signals(&self) -> &Arc<Signals>;
    /// Operations and deliveries per state, for `/metrics` gauges and the dashboard. With a
    /// tenant, its webhooks' deliveries only (broker routes are the operator's, as in `activity`).
    async fn state_counts(&self, tenant: Option<TenantId>) -> StoreResult<StateCounts>;
    /// Attempts and backlog spans in a window, for the dashboard's charts and webhook health.
    async fn activity(&self, filter: ActivityFilter) -> StoreResult<Activity>;
    /// The applied schema version against the one this build expects (`/readyz`).
    async fn schema_version(&self) -> StoreResult<SchemaVersion>;
}
