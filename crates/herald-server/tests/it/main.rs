//! herald-server's tests, one binary: the real server on port 0 (see `herald-testkit`),
//! spoken to over HTTP, on SQLite or, with `HERALD_TEST_HTTP_DATABASE_URL` set, PostgreSQL.

mod backpressure;
mod brokers;
mod contract;
mod faults;
mod feed;
mod limits;
mod observability;
mod operations;
mod portal;
mod retention;
mod secrets;
mod webhooks;
mod workers;
