//! Batched point reads for `GET /operations/{id}` on PostgreSQL: the read-side twin of
//! the event writer's group commit.
//!
//! Clients poll operations, so a busy node answers many single-row look-ups at once. Each
//! look-up queues its id; a few reader tasks each take whatever is queued and fetch it with
//! one `SELECT … WHERE id = ANY($1)`. Under load one statement (one parse-free execution,
//! one round trip, one snapshot) serves dozens of requests; with nothing else queued a
//! look-up is a batch of one, so a lone request waits no longer than before.
//!
//! A look-up is queued before its batch's statement starts, and that statement sees every
//! commit made before it starts, so a read still sees every write that was acknowledged
//! before the request came in, as a statement of its own would.

use super::rows::{self, OPERATION_COLUMNS};
use crate::{StoreError, StoreResult};
use deadpool_postgres::Pool;
use herald_core::ids::OperationId;
use herald_core::operation::Operation;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Reader tasks per node. Each holds one pooled connection while its statement runs; a
/// second lets the next batch gather (and run) while the first is on the server.
const READERS: usize = 2;
/// Ids one statement takes at most.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<StoreResult<Option<Operation>>>;

/// The queue in front of the reader tasks; they stop when it is dropped. It is bounded:
/// a look-up past its bound is refused at once with [`StoreError::Overloaded`].
pub(crate) struct OperationReader {
    queue: mpsc::Sender<(OperationId, Reply)>,
}

impl OperationReader {
    /// `bound`: look-ups that may wait (besides the batches being read), at least 1.
    pub fn start(pool: Pool, bound: usize) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (queue, jobs) = mpsc::channel(bound.max(1));
        let jobs = Arc::new(Mutex::new(jobs));
        let tasks = (0..READERS)
            .map(|_| tokio::spawn(reader_loop(pool.clone(), jobs.clone())))
            .collect();
        (Self { queue }, tasks)
    }

    /// The live (not deleted) operation `id`, if there is one.
    pub async fn get(&self, id: OperationId) -> StoreResult<Option<Operation>> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send((id, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Backend("the operation reader has stopped".into())
            }
        })?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the operation reader has stopped".into()))?
    }
}

async fn reader_loop(pool: Pool, jobs: Arc<Mutex<mpsc::Receiver<(OperationId, Reply)>>>) {
    let sql =
        format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = ANY($1) AND NOT deleted");
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if !super::take_batch(&jobs, &mut batch, MAX_BATCH).await {
            return;
        }
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.to_string()).collect();
        match fetch(&pool, &sql, &ids).await {
            Ok(found) => {
                // Several clients may poll the same operation: each gets its own copy.
                for (id, (_, reply)) in ids.iter().zip(batch.drain(..)) {
                    let _ = reply.send(found.get(id).cloned().transpose());
                }
            }
            Err(e) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The rows of `ids`, by id (each mapped on its own, so one bad row fails only
/// the look-up that asked for it).
async fn fetch(
    pool: &Pool,
    sql: &str,
    ids: &[String],
) -> StoreResult<HashMap<String, StoreResult<Operation>>> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql).await?;
    let rows = client.query(&stmt, &[&ids]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let id: String = row.get(0);
            (id, rows::operation(row))
        })
        .collect())
}
