//! Herald's delivery engine and background loops, started together by [`Engine::spawn`].
//!
//! - [`webhooks`]: the webhook engine, one module per stage of its pipeline (claim,
//!   admission, breaker, send, record). [`Dispatcher`] claims due deliveries from the
//!   [`Store`](herald_store::Store) in batches (leased, so a crash loses nothing and at
//!   worst repeats a delivery), sends each as a signed `POST` in its own task, and
//!   records every attempt's result in batches. One slow or dead endpoint does not hold
//!   up the others: each webhook has a concurrency limit, a bounded queue and a circuit
//!   breaker, and the whole engine has a global cap on requests in flight.
//! - [`outbox`]: [`BrokerDispatcher`] publishes broker deliveries (the same delivery
//!   log) through the [`brokers`] publishers: NATS JetStream, RabbitMQ, Redis Streams,
//!   Kafka, Amazon SQS and Google Cloud Pub/Sub.
//! - `claim`: the claim loop and the batched recorder both engines share.
//! - `reaper` (operation leases and deadlines) and [`retention`] (purging old
//!   settled events).
//! - [`ssrf`] keeps destinations off loopback, private, link-local and metadata
//!   addresses, at registration ([`ssrf::check_destination`]) and again at connect
//!   time, against the addresses actually resolved.
//!
//! What an attempt's result means for its delivery (retry when, dead, disabled) is
//! decided in herald-core, [`RetrySchedule::decide`](herald_core::retry::RetrySchedule::decide).
//! The wire format (headers, signatures, retry rules) is DESIGN.md's "Webhooks".

pub mod brokers;
mod claim;
mod engine;
pub mod outbox;
mod reaper;
pub mod retention;
pub mod ssrf;
pub mod webhooks;

pub use engine::{Engine, EngineHandle};
pub use outbox::{BrokerDispatcher, BrokerRoute, OutboxConfig, PublishObserver};
pub use retention::{Retention, RetentionConfig, RetentionObserver};
pub use ssrf::{check_destination, is_forbidden, SsrfError};
pub use webhooks::send::{
    delivery_headers, parse_retry_after, traceparent, SendResult, EXCERPT_LIMIT, USER_AGENT,
};
pub use webhooks::{
    AttemptObserver, CircuitState, Circuits, Deferral, DispatchError, Dispatcher, DispatcherConfig,
};
