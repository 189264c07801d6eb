//! A worker runner: claims operations with a long poll, runs a handler for each,
//! heartbeats on an interval (reporting progress, learning of cancel requests, keeping
//! the lease), then completes or fails the operation. Shutdown is a cancellation token:
//! it stops claiming, lets the jobs in hand finish, and then `run` returns.

use crate::client::{ClaimedOperation, Client, ClientError, OperationError};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Operation types to claim; empty means every declared type.
    pub types: Vec<String>,
    /// Lease asked for at each claim and heartbeat; `None` takes the type's lease from config.
    pub lease: Option<Duration>,
    /// How long one claim long poll may wait for work.
    pub claim_wait: Duration,
    /// Time between heartbeats; keep it well under the lease.
    pub heartbeat_every: Duration,
    /// Jobs run at once.
    pub concurrency: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            types: vec![],
            lease: None,
            claim_wait: Duration::from_secs(20),
            heartbeat_every: Duration::from_secs(10),
            concurrency: 1,
        }
    }
}

/// What a handler decided.
#[derive(Clone, Debug)]
pub enum JobOutcome {
    /// Done with this `response`.
    Complete(Value),
    /// Done with this error; `retryable` hands it back to the queue (up to `max_attempts`).
    Fail {
        error: OperationError,
        retryable: bool,
    },
}

impl JobOutcome {
    pub fn fail(code: &str, message: impl Into<String>) -> Self {
        JobOutcome::Fail {
            error: OperationError::new(code, message),
            retryable: false,
        }
    }
    pub fn retry(code: &str, message: impl Into<String>) -> Self {
        JobOutcome::Fail {
            error: OperationError::new(code, message),
            retryable: true,
        }
    }
}

/// One claimed operation, as a handler sees it.
#[derive(Clone, Debug)]
pub struct Job {
    pub operation: ClaimedOperation,
    /// Metadata to send on the next heartbeat (`progress_percent` and the like).
    pending_metadata: Arc<Mutex<Map<String, Value>>>,
    cancel_requested: CancellationToken,
}

impl Job {
    pub fn id(&self) -> &str {
        self.operation.id()
    }
    pub fn input(&self) -> &Value {
        &self.operation.input
    }
    /// Reported to Herald on the next heartbeat, visible to pollers as `metadata.progress_percent`.
    pub fn set_progress(&self, percent: u8) {
        self.set_metadata("progress_percent", Value::from(percent.min(100)));
    }
    /// Any other metadata field, sent on the next heartbeat.
    pub fn set_metadata(&self, key: &str, value: Value) {
        self.pending_metadata
            .lock()
            .expect("metadata lock")
            .insert(key.to_owned(), value);
    }
    /// Resolves when a heartbeat learns that a client cancelled the operation, or that
    /// the lease was lost. The handler should stop and return (e.g. `CANCELLED`).
    pub async fn cancelled(&self) {
        self.cancel_requested.cancelled().await
    }
    /// The same signal as a token, to hand to code that takes one.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel_requested.clone()
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancel_requested.is_cancelled()
    }
}

/// Runs a handler for every operation it claims. See the module docs.
pub struct Worker {
    client: Client,
    options: WorkerOptions,
}

impl Worker {
    pub fn new(client: Client, options: WorkerOptions) -> Self {
        Self { client, options }
    }

    /// Claims and runs jobs until `shutdown` is cancelled, then waits for the jobs in
    /// hand to finish. Returns early only when Herald refuses the key (401/403).
    pub async fn run<H, F>(self, handler: H, shutdown: CancellationToken) -> Result<(), ClientError>
    where
        H: Fn(Job) -> F + Send + Sync + 'static,
        F: Future<Output = JobOutcome> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let mut jobs = JoinSet::new();
        let mut pause_after_error = Duration::from_millis(200);
        let outcome = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            // Claim only as many as there are free slots.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
                _ = shutdown.cancelled() => break Ok(()),
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let claim = self.client.claim(
                &self.options.types,
                self.options.lease,
                permits.len() as u32,
                self.options.claim_wait,
            );
            let claimed = tokio::select! {
                c = claim => c,
                _ = shutdown.cancelled() => break Ok(()),
            };
            match claimed {
                Ok(ops) => {
                    pause_after_error = Duration::from_millis(200);
                    for op in ops {
                        let permit = permits.pop().expect("claimed at most as many as slots");
                        let client = self.client.clone();
                        let handler = handler.clone();
                        let options = self.options.clone();
                        jobs.spawn(async move {
                            run_job(client, options, op, handler).await;
                            drop(permit);
                        });
                    }
                }
                Err(
                    e @ ClientError::Api {
                        status: 401 | 403, ..
                    },
                ) => break Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause_after_error) => {}
                        _ = shutdown.cancelled() => break Ok(()),
                    }
                    pause_after_error = (pause_after_error * 2).min(Duration::from_secs(10));
                }
            }
            // Reap finished jobs so the set does not grow.
            while jobs.try_join_next().is_some() {}
        };
        // Drain: jobs in hand finish and report before we return.
        while jobs.join_next().await.is_some() {}
        outcome
    }
}

async fn run_job<H, F>(
    client: Client,
    options: WorkerOptions,
    op: ClaimedOperation,
    handler: Arc<H>,
) where
    H: Fn(Job) -> F + Send + Sync + 'static,
    F: Future<Output = JobOutcome> + Send + 'static,
{
    let id = op.id().to_owned();
    let lease_token = op.lease_token.clone();
    let job = Job {
        operation: op,
        pending_metadata: Arc::default(),
        cancel_requested: CancellationToken::new(),
    };
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        id.clone(),
        lease_token.clone(),
        options.heartbeat_every,
        job.pending_metadata.clone(),
        job.cancel_requested.clone(),
        heartbeat_stop.clone(),
    ));
    let outcome = handler(job.clone()).await;
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    // Metadata set since the last beat would otherwise be lost: send it before finishing.
    let unsent = std::mem::take(&mut *job.pending_metadata.lock().expect("metadata lock"));
    if !unsent.is_empty() {
        if let Err(e) = client.heartbeat(&id, &lease_token, Some(unsent)).await {
            tracing::debug!(operation = %id, error = %e, "final metadata not stored");
        }
    }
    let result = match outcome {
        JobOutcome::Complete(response) => {
            client.complete(&id, &lease_token, response).await.map(drop)
        }
        JobOutcome::Fail { error, retryable } => client
            .fail(&id, &lease_token, &error, retryable)
            .await
            .map(drop),
    };
    if let Err(e) = result {
        // A 409 means the lease was lost (expired, or the operation was cancelled and
        // finished): Herald kept its state and will not take ours.
        tracing::warn!(operation = %id, error = %e, "could not report the outcome");
    }
}

async fn heartbeat_loop(
    client: Client,
    id: String,
    lease_token: String,
    every: Duration,
    pending: Arc<Mutex<Map<String, Value>>>,
    cancel_requested: CancellationToken,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await; // the first tick is immediate; the claim just set the lease
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let metadata = {
            let mut m = pending.lock().expect("metadata lock");
            (!m.is_empty()).then(|| std::mem::take(&mut *m))
        };
        match client.heartbeat(&id, &lease_token, metadata.clone()).await {
            Ok(reply) if reply.cancel_requested => cancel_requested.cancel(),
            Ok(_) => {}
            Err(ClientError::Api {
                status: 409 | 404, ..
            }) => {
                // The lease is gone: nothing we do now will count.
                cancel_requested.cancel();
                return;
            }
            Err(e) => {
                // Keep what we meant to send for the next beat.
                if let Some(m) = metadata {
                    let mut p = pending.lock().expect("metadata lock");
                    for (k, v) in m {
                        p.entry(k).or_insert(v);
                    }
                }
                tracing::warn!(operation = %id, error = %e, "heartbeat failed; will retry");
            }
        }
    }
}
