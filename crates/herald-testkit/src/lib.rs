//! Herald's test kit, a dev-dependency of every crate's tests (never published):
//! - [`eventually`] / [`eventually_within`]: poll a check until it holds, with a bound;
//! - [`database`]: a fresh PostgreSQL database per test, dropped when the test ends, made
//!   through `HERALD_TEST_DATABASE_URL` or `HERALD_TEST_HTTP_DATABASE_URL`;
//! - with the `receiver` feature: [`receiver`], a scripted webhook receiver (no herald-server,
//!   so herald-dispatch's tests can use it);
//! - with the `app` feature (the default, which includes `receiver`): [`app`], the real
//!   server on port 0 spoken to over HTTP ([`TestApp`]); [`proxy`], a TCP proxy a test can
//!   take down and bring back.

pub mod database;
mod eventually;

#[cfg(feature = "app")]
pub mod app;
#[cfg(feature = "app")]
pub mod proxy;
#[cfg(feature = "receiver")]
pub mod receiver;

#[cfg(feature = "app")]
pub use app::*;
pub use eventually::{eventually, eventually_within};
