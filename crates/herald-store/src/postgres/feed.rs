//! [`FeedStore`] for PostgreSQL, several nodes included. An event's position is
//! `(feed_xid, feed_pos)`: the id of the transaction that stored it and a sequence value.
//! Transaction ids are not commit-ordered, so a read returns only events whose
//! transaction id is below the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`): every transaction below it has ended, so
//! no event can commit later at a position before one already returned.

use super::sql::*;
use super::PgStore;
use crate::feed::{self, *};
use crate::filter;
use crate::{FeedStore, StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::TenantId;
use herald_core::Timestamp;
use tokio_postgres::Row;

const COLUMNS: FeedColumns = FeedColumns {
    major: "feed_xid",
    minor: "feed_pos",
    order: "feed_xid, feed_pos",
};

/// Events of transactions older than every one still running: nothing can commit before them.
const SETTLED: &str = "feed_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)";

fn consumer_row(row: &Row) -> StoreResult<Consumer> {
    feed::consumer(row)
}

fn feed_row(row: &Row) -> StoreResult<(FeedPosition, herald_core::event::Event)> {
    feed::feed_row(row)
}

async fn get_row(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    name: &str,
    for_update: bool,
) -> StoreResult<Consumer> {
    let sql = format!(
        "SELECT {} FROM consumers WHERE tenant_id = $1 AND name = $2{}",
        feed::CONSUMER_COLUMNS,
        if for_update { " FOR UPDATE" } else { "" }
    );
    match query_opt(tx, &sql, &[&tenant, &name]).await? {
        Some(row) => feed::consumer(&row),
        None => Err(StoreError::NotFound),
    }
}

#[async_trait]
impl FeedStore for PgStore {
    async fn read_feed(&self, q: FeedQuery) -> StoreResult<FeedPage> {
        // The oldest transaction still running, first: every event of an older one is
        // visible to the page below, and every later event has a position past
        // `(xmin, 0)` (its transaction id is at least xmin, its sequence above 0).
        let xmin: i64 = match self
            .read_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                &[],
            )
            .await?
        {
            Some(row) => row.try_get(0)?,
            None => 0,
        };
        let (sql, args) = feed::page_sql(filter::POSTGRES, &COLUMNS, &q, Some(SETTLED));
        let events = self.read_all(&sql, &refs(&pg_args(args)), feed_row).await?;
        let through = (events.len() < q.limit as usize).then_some(FeedPosition::new(xmin, 0));
        let mut held_back = false;
        if events.is_empty() {
            // Committed events past the cursor that an older running transaction still
            // holds back (or that it released since the read above): read again soon.
            let (sql, args) = feed::pending_sql(filter::POSTGRES, &COLUMNS, &q);
            if let Some(row) = self.read_one(&sql, &refs(&pg_args(args))).await? {
                held_back = row.try_get::<_, i64>(0)? > 0;
            }
        }
        Ok(FeedPage {
            events,
            held_back,
            through,
        })
    }

    async fn create_consumer(&self, c: NewConsumer, max_per_tenant: u32) -> StoreResult<Consumer> {
        let tenant = feed::tenant_key(c.tenant);
        let tenant_id = c.tenant.map(|t| t.to_string());
        Ok(in_tx!(self, |tx, wake| {
            // One tenant's creates, on every node, take this lock in turn (held to commit).
            query(
                &tx,
                "SELECT pg_advisory_xact_lock(hashtextextended('herald.consumers/' || $1, 0))",
                &[&tenant],
            )
            .await?;
            let exists = query_opt(
                &tx,
                "SELECT 1 FROM consumers WHERE tenant_id = $1 AND name = $2",
                &[&tenant, &c.name],
            )
            .await?;
            if exists.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            let count: i64 = query(
                &tx,
                "SELECT COUNT(*) FROM consumers WHERE tenant_id = $1",
                &[&tenant],
            )
            .await?[0]
                .try_get(0)?;
            if count >= i64::from(max_per_tenant) {
                return Err(StoreError::LimitReached);
            }
            let start = match c.start {
                ConsumerStart::Earliest => FeedPosition::START,
                ConsumerStart::Latest => {
                    let sql = format!(
                        "SELECT feed_xid, feed_pos FROM events WHERE tenant_id IS NOT DISTINCT FROM $1 \
                         AND {SETTLED} ORDER BY feed_xid DESC, feed_pos DESC LIMIT 1"
                    );
                    match query_opt(&tx, &sql, &[&tenant_id]).await? {
                        Some(row) => FeedPosition::new(row.try_get(0)?, row.try_get(1)?),
                        None => FeedPosition::START,
                    }
                }
            };
            execute(
                &tx,
                "INSERT INTO consumers (tenant_id, name, types, acked_major, acked_minor, \
                 delivered_major, delivered_minor, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $4, $5, $6, $6)",
                &[
                    &tenant,
                    &c.name,
                    &feed::types_json(&c.types),
                    &start.major(),
                    &start.minor(),
                    &c.created_at.0,
                ],
            )
            .await?;
            get_row(&tx, &tenant, &c.name, false).await?
        }))
    }

    async fn get_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<Consumer> {
        let sql = format!(
            "SELECT {} FROM consumers WHERE tenant_id = $1 AND name = $2",
            feed::CONSUMER_COLUMNS
        );
        match self
            .read_one(&sql, &[&feed::tenant_key(tenant), &name])
            .await?
        {
            Some(row) => feed::consumer(&row),
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_consumers(&self, tenant: Option<TenantId>) -> StoreResult<Vec<Consumer>> {
        let sql = format!(
            "SELECT {} FROM consumers WHERE tenant_id = $1 ORDER BY name",
            feed::CONSUMER_COLUMNS
        );
        self.read_all(&sql, &[&feed::tenant_key(tenant)], consumer_row)
            .await
    }

    async fn delete_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<()> {
        let tenant = feed::tenant_key(tenant);
        in_tx!(self, |tx, wake| {
            let gone = execute(
                &tx,
                "DELETE FROM consumers WHERE tenant_id = $1 AND name = $2",
                &[&tenant, &name],
            )
            .await?;
            if gone == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }

    async fn consumer_delivered(
        &self,
        tenant: Option<TenantId>,
        name: String,
        upto: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<()> {
        let tenant = feed::tenant_key(tenant);
        in_tx!(self, |tx, wake| {
            // Forward only: a slower read that answers later never moves it back.
            execute(
                &tx,
                "UPDATE consumers SET delivered_major = $3, delivered_minor = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND name = $2 AND (delivered_major, delivered_minor) < ($3, $4)",
                &[&tenant, &name, &upto.major(), &upto.minor(), &now.0],
            )
            .await?
        });
        Ok(())
    }

    async fn ack_consumer(
        &self,
        tenant: Option<TenantId>,
        name: String,
        cursor: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<Acked> {
        let tenant = feed::tenant_key(tenant);
        Ok(in_tx!(self, |tx, wake| {
            // The row lock orders concurrent acks (on any node): each sees the one before.
            let c = get_row(&tx, &tenant, &name, true).await?;
            if cursor <= c.acked {
                Acked::Unchanged(c)
            } else if cursor > c.delivered {
                return Err(StoreError::CursorNotDelivered);
            } else {
                execute(
                    &tx,
                    "UPDATE consumers SET acked_major = $3, acked_minor = $4, updated_at = $5 \
                     WHERE tenant_id = $1 AND name = $2",
                    &[&tenant, &name, &cursor.major(), &cursor.minor(), &now.0],
                )
                .await?;
                Acked::Moved(get_row(&tx, &tenant, &name, false).await?)
            }
        }))
    }
}
