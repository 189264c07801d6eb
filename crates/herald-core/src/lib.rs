//! Herald's domain, free of I/O: typed ids, operations and their state machine,
//! events, retry schedules, webhook signing and key hashing.
//!
//! Everything that talks to a disk or a socket lives in the other crates; this one
//! can be unit-tested by itself and is shared by the server, the store and the SDK.

pub mod auth;
pub mod clock;
pub mod delivery;
pub mod duration;
pub mod event;
pub mod ids;
pub mod operation;
pub mod pattern;
pub mod payload_filter;
pub mod retry;
pub mod signing;
pub mod timestamp;
pub mod webhook;

pub use clock::{Clock, ManualClock, SystemClock};
pub use timestamp::Timestamp;
