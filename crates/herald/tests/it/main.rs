//! herald's tests, one binary: the real `herald serve` in child processes (the CLI,
//! process signals, crashes, many nodes, rebinding, the dashboard in a browser) and the
//! randomized model test (`model::model_sqlite`, `model::model_postgres`).

mod browser;
mod cli;
mod common;
mod crash;
mod feed;
mod model;
mod multinode;
mod ordered_crash;
mod process;
mod rebinding;
