//! Herald's client SDK. [`Client`] speaks the HTTP API (operations, events, tenants,
//! keys); [`verify`] checks webhook signatures in both formats; [`dedupe`] remembers
//! event ids so at-least-once deliveries are applied once; [`worker`] runs a claim /
//! heartbeat / complete loop with graceful shutdown.

pub mod client;
pub mod dedupe;
pub mod feed;
pub mod verify;
pub mod worker;

pub use client::{Client, ClientError, Operation, OperationError};
pub use dedupe::{DedupeStore, MemoryDedupe};
pub use verify::{VerifyError, WebhookVerifier};
pub use worker::{Job, JobOutcome, Worker, WorkerOptions};
