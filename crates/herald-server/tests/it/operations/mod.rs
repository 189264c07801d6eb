//! Long-running operations end to end over HTTP: the reference text's transcode flow,
//! failure, cancel, leases, idempotency, tenant isolation, `:wait` and bad input.

mod access;
mod lifecycle;
mod waiting;

use herald_testkit::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Claims one operation, retrying for at most `within` of real time (the reaper runs in the background).
async fn claim_within(app: &TestApp, worker: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(op) = app.claim(worker, "transcode").await {
            return Some(op);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn futures_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
