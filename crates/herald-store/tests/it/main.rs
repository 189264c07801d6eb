//! herald-store's tests, one binary: the conformance suite (both backends), the SQLite
//! writer's bound, the outbox, and the store's observability.

mod conformance;
mod fixtures;
mod observability;
mod outbox;
mod writer;
