//! What the PostgreSQL aggregates share: statements in a transaction, the wake-ups a
//! transaction owes, point reads, and the retry of a transaction that conflicted.

use super::{is_transient, Note, PgStore};
use crate::filter::Arg;
use crate::model::*;
use crate::{Signals, StoreError, StoreResult};
use deadpool_postgres::Transaction;
use herald_core::event::Event;
use herald_core::ids::*;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::rows::{self, *};

pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

pub(super) type Owned = Box<dyn ToSql + Sync + Send>;

pub(super) async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<Vec<Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, params).await?)
}

pub(super) async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<Option<Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&stmt, params).await?)
}

pub(super) async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<u64> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, params).await?)
}

/// A built query's arguments as PostgreSQL parameters.
pub(super) fn pg_args(args: Vec<Arg>) -> Vec<Owned> {
    args.into_iter()
        .map(|a| match a {
            Arg::Text(s) => Box::new(s) as Owned,
            Arg::Int(i) => Box::new(i),
            Arg::OptInt(i) => Box::new(i),
            Arg::Bool(b) => Box::new(b),
            Arg::Null => Box::new(None::<String>),
        })
        .collect()
}

pub(super) fn refs(args: &[Owned]) -> Vec<Param<'_>> {
    args.iter().map(|a| a.as_ref() as Param<'_>).collect()
}

/// Wake-ups a transaction owes: fired locally once it has committed, and passed to the
/// node's notifier, which tells the other nodes (see [`super::Note`]).
#[derive(Default)]
pub(super) struct Wake {
    pub(super) changed: Vec<OperationId>,
    pub(super) queued: bool,
    pub(super) due: bool,
    pub(super) event_types: bool,
    /// The tenants whose events the transaction may have stored (operations' final events).
    pub(super) events: Vec<Option<TenantId>>,
}

impl Wake {
    pub(super) fn fire(&self, signals: &Signals, notes: &tokio::sync::mpsc::UnboundedSender<Note>) {
        for id in &self.changed {
            signals.operation_changed(*id);
            let _ = notes.send(Note::Changed(*id));
        }
        if self.queued {
            signals.operations_queued.notify_waiters();
            let _ = notes.send(Note::Queued);
        }
        if self.due {
            signals.deliveries_changed();
            let _ = notes.send(Note::Due {
                webhooks: true,
                routes: true,
            });
        }
        if self.event_types {
            signals.event_types_changed();
            let _ = notes.send(Note::EventTypes);
        }
        for tenant in &self.events {
            signals.events_appended(crate::signals::Appended::To(*tenant));
            let _ = notes.send(Note::Appended(*tenant));
        }
    }
}

/// Runs a claim (`… ORDER BY next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED`) with sorting
/// made a last resort for this transaction, so the due-time index is walked in order and
/// the scan stops after n rows. Left to its statistics, the planner sorts every pending
/// delivery whenever it believes there are few of them (a young or never-analyzed table,
/// e.g. the first minute of a burst): 85 ms per claim of 257 at 40,000 pending, spilling
/// the sort to disk, against well under 10 ms by the index.
///
/// A claim also commits without waiting for its WAL flush (`synchronous_commit = off`).
/// A claim only sets a lease, and losing one costs no more than a repeated attempt: if the
/// server crashes before the flush, the deliveries come back unleased and are claimed and
/// sent again, which at-least-once delivery allows. Nothing acknowledged depends on it:
/// the attempt's result commits synchronously, and its flush takes the claim's WAL with it
/// (the log is written in order). It saves a WAL flush per claim, which on a busy server is
/// a large share of a claim's time and of the flushes other commits queue behind.
///
/// The `SET`s go out in the same round trip as the claim (pipelined) and end with the
/// transaction.
pub(super) async fn claim_in_due_order(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<Vec<Row>> {
    // force_custom_plan: the claim is a prepared statement, and its generic plan, made
    // while `deliveries` has no statistics (a new database, until autovacuum's first
    // ANALYZE), is a sequential scan of the whole table for `id = ANY(…)`, which each
    // pooled connection then keeps: every claim cost time in proportion to the table.
    let no_sort = async {
        tx.batch_execute(
            "SET LOCAL enable_sort = off; SET LOCAL synchronous_commit = off; \
             SET LOCAL plan_cache_mode = force_custom_plan",
        )
        .await
        .map_err(StoreError::from)
    };
    let (_, rows) = futures::try_join!(no_sort, query(tx, sql, params))?;
    Ok(rows)
}

pub(super) async fn get_event_row(tx: &Transaction<'_>, id: &str) -> StoreResult<Event> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
    match query_opt(tx, &sql, &[&id]).await? {
        Some(row) => rows::event(&row),
        None => Err(StoreError::NotFound),
    }
}

pub(super) async fn get_webhook_row(
    tx: &Transaction<'_>,
    id: &str,
    for_update: bool,
) -> StoreResult<Webhook> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND NOT deleted{}",
        if for_update { " FOR UPDATE" } else { "" }
    );
    match query_opt(tx, &sql, &[&id]).await? {
        Some(row) => rows::webhook(&row),
        None => Err(StoreError::NotFound),
    }
}

pub(super) async fn get_delivery_row(tx: &Transaction<'_>, id: &str) -> StoreResult<Delivery> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
    match query_opt(tx, &sql, &[&id]).await? {
        Some(row) => rows::delivery(&row),
        None => Err(StoreError::NotFound),
    }
}

pub(super) fn map_rows<T>(rows: Vec<Row>, map: fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(map).collect()
}

/// Runs `$body` (an expression using `$tx`) in one transaction, commits, and then fires
/// the wake-ups recorded in `$wake`.
macro_rules! in_tx {
    ($self:ident, |$tx:ident, $wake:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client.transaction().await?;
        #[allow(unused_mut)]
        let mut $wake = Wake::default();
        // An error (`?` or `return Err`) in the body ends this block, so the transaction is
        // rolled back here, before the connection goes back to the pool. Dropped instead, it
        // would roll back later in the background, and meanwhile its row locks would make
        // `SKIP LOCKED` claims on other connections pass those rows over.
        #[allow(clippy::needless_question_mark)]
        let out: StoreResult<_> = async { Ok($body) }.await;
        match out {
            Ok(value) => {
                $tx.commit().await?;
                $wake.fire($self.signals_arc(), $self.notes());
                value
            }
            Err(e) => {
                let _ = $tx.rollback().await;
                return Err(e);
            }
        }
    }};
}
pub(super) use in_tx;

/// Writes that lock many rows in an order they do not choose (all pending deliveries of a
/// webhook, a batch of results) may deadlock with one another; PostgreSQL then aborts one
/// of them, which is simply run again.
pub(super) async fn retry_on_conflict<T, F, Fut>(mut run: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut tries = 0;
    loop {
        match run().await {
            Err(e) if tries < 3 && is_transient(&e) => {
                tries += 1;
                tracing::debug!(error = %e, "transaction conflicted; running it again");
            }
            other => return other,
        }
    }
}

impl PgStore {
    /// A read of one statement, outside any transaction (the statement is its own
    /// snapshot): one round trip instead of `BEGIN`, the query and `COMMIT`.
    /// One `SELECT` of many rows, as `read_one`: no transaction around a single statement.
    pub(super) async fn read_all<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        map: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        map_rows(client.query(&stmt, params).await?, map)
    }

    pub(super) async fn read_one(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> StoreResult<Option<Row>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, params).await?)
    }
}
