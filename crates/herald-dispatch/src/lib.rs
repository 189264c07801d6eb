//! Herald's webhook delivery engine.
//!
//! [`Dispatcher`] claims due deliveries from the [`Store`](herald_store::Store) in
//! batches (leased, so a crash loses nothing and at worst repeats a delivery), sends
//! each as a signed `POST` in its own task, and records every attempt's result in
//! batches. One slow or dead endpoint does not hold up the others: each webhook has a
//! concurrency limit, a bounded queue and a circuit breaker, and the whole engine has
//! a global cap on requests in flight.
//!
//! [`ssrf`] keeps destinations off loopback, private, link-local and metadata
//! addresses, at registration ([`ssrf::check_destination`]) and again at connect
//! time, against the addresses actually resolved.
//!
//! [`outbox`] publishes broker deliveries (the same delivery log) through the
//! [`brokers`] publishers: NATS JetStream, RabbitMQ, Redis Streams and Kafka.
//!
//! The wire format (headers, signatures, retry rules) is DESIGN.md's "Webhooks".

pub mod brokers;
mod dispatcher;
pub mod outbox;
mod sender;
pub mod ssrf;

pub use dispatcher::{AttemptObserver, Deferral, DispatchError, Dispatcher, DispatcherConfig};
pub use outbox::{BrokerDispatcher, BrokerRoute, OutboxConfig, PublishObserver};
pub use sender::{
    decide, delivery_headers, parse_retry_after, traceparent, SendResult, Verdict, EXCERPT_LIMIT,
    USER_AGENT,
};
pub use ssrf::{check_destination, is_forbidden, SsrfError};
