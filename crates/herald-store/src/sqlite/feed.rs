//! [`FeedStore`] for SQLite: positions are `(0, counter)`, the counter drawn inside the
//! one writer's transaction, so position order is commit order; consumers are rows.

use super::sql::*;
use super::SqliteStore;
use crate::feed::{self, *};
use crate::filter::{self, Arg};
use crate::{FeedStore, StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::TenantId;
use herald_core::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use std::cell::RefCell;
use std::collections::BTreeSet;

const COLUMNS: FeedColumns = FeedColumns {
    major: "0",
    minor: "position",
    order: "position",
};

thread_local! {
    /// The tenants whose events this batch stored; the writer takes them per batch.
    static APPENDED: RefCell<BTreeSet<Option<TenantId>>> = const { RefCell::new(BTreeSet::new()) };
}

/// Called by every event insert (on the writer thread).
pub(super) fn appended_in_this_batch(tenant: Option<TenantId>) {
    APPENDED.with(|a| a.borrow_mut().insert(tenant));
}

/// The tenants whose events this batch stored; clears them.
pub(super) fn take_appended() -> BTreeSet<Option<TenantId>> {
    APPENDED.with(|a| std::mem::take(&mut *a.borrow_mut()))
}

fn get_row(conn: &Connection, tenant: &str, name: &str) -> StoreResult<Consumer> {
    let sql = format!(
        "SELECT {} FROM consumers WHERE tenant_id = ?1 AND name = ?2",
        feed::CONSUMER_COLUMNS
    );
    conn.prepare_cached(&sql)?
        .query_row(params![tenant, name], |row| Ok(feed::consumer(row)))
        .optional()?
        .unwrap_or(Err(StoreError::NotFound))
}

/// The last position stored now: where a consumer that starts at the latest begins.
fn head(conn: &Connection) -> StoreResult<FeedPosition> {
    let last: i64 = conn
        .prepare_cached("SELECT last FROM feed_counter WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(FeedPosition::new(0, last))
}

#[async_trait]
impl FeedStore for SqliteStore {
    async fn read_feed(&self, q: FeedQuery) -> StoreResult<FeedPage> {
        let (sql, args) = feed::page_sql(filter::SQLITE, &COLUMNS, &q, None);
        let limit = q.limit as usize;
        let (events, head) = self
            .read(move |conn| {
                // The last position first: every event at or before it is committed, so
                // the page below sees all of them.
                let head = head(conn)?;
                let events = query_all(conn, &sql, args, |row| feed::feed_row(row))?;
                Ok((events, head))
            })
            .await?;
        // Nothing is ever held back: a position is visible once its batch commits, and
        // every earlier position committed with it or before.
        Ok(FeedPage {
            through: (events.len() < limit).then_some(head),
            events,
            held_back: false,
        })
    }

    async fn create_consumer(&self, c: NewConsumer, max_per_tenant: u32) -> StoreResult<Consumer> {
        self.write(move |conn| {
            let tenant = feed::tenant_key(c.tenant);
            let count: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM consumers WHERE tenant_id = ?1")?
                .query_row(params![tenant], |r| r.get(0))?;
            let exists: Option<i64> = conn
                .prepare_cached("SELECT 1 FROM consumers WHERE tenant_id = ?1 AND name = ?2")?
                .query_row(params![tenant, c.name], |r| r.get(0))
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            if count >= i64::from(max_per_tenant) {
                return Err(StoreError::LimitReached);
            }
            let start = match c.start {
                ConsumerStart::Earliest => FeedPosition::START,
                ConsumerStart::Latest => head(conn)?,
            };
            conn.prepare_cached(
                "INSERT INTO consumers (tenant_id, name, types, acked_major, acked_minor, \
                 delivered_major, delivered_minor, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?5, ?6, ?6)",
            )?
            .execute(params![
                tenant,
                c.name,
                feed::types_json(&c.types),
                start.major(),
                start.minor(),
                c.created_at.0
            ])?;
            get_row(conn, &tenant, &c.name)
        })
        .await
    }

    async fn get_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<Consumer> {
        self.read_now(|conn| get_row(conn, &feed::tenant_key(tenant), &name))
    }

    async fn list_consumers(&self, tenant: Option<TenantId>) -> StoreResult<Vec<Consumer>> {
        let sql = format!(
            "SELECT {} FROM consumers WHERE tenant_id = ?1 ORDER BY name",
            feed::CONSUMER_COLUMNS
        );
        let args = vec![Arg::Text(feed::tenant_key(tenant))];
        self.read(move |conn| query_all(conn, &sql, args, |row| feed::consumer(row)))
            .await
    }

    async fn delete_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<()> {
        self.write(move |conn| {
            let gone = conn
                .prepare_cached("DELETE FROM consumers WHERE tenant_id = ?1 AND name = ?2")?
                .execute(params![feed::tenant_key(tenant), name])?;
            if gone == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn consumer_delivered(
        &self,
        tenant: Option<TenantId>,
        name: String,
        upto: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.write(move |conn| {
            // Forward only: a slower read that answers later never moves it back.
            conn.prepare_cached(
                "UPDATE consumers SET delivered_major = ?3, delivered_minor = ?4, updated_at = ?5 \
                 WHERE tenant_id = ?1 AND name = ?2 AND (delivered_major < ?3 OR \
                 (delivered_major = ?3 AND delivered_minor < ?4))",
            )?
            .execute(params![
                feed::tenant_key(tenant),
                name,
                upto.major(),
                upto.minor(),
                now.0
            ])?;
            Ok(())
        })
        .await
    }

    async fn ack_consumer(
        &self,
        tenant: Option<TenantId>,
        name: String,
        cursor: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<Acked> {
        self.write(move |conn| {
            let tenant = feed::tenant_key(tenant);
            let c = get_row(conn, &tenant, &name)?;
            if cursor <= c.acked {
                return Ok(Acked::Unchanged(c));
            }
            if cursor > c.delivered {
                return Err(StoreError::CursorNotDelivered);
            }
            conn.prepare_cached(
                "UPDATE consumers SET acked_major = ?3, acked_minor = ?4, updated_at = ?5 \
                 WHERE tenant_id = ?1 AND name = ?2",
            )?
            .execute(params![tenant, name, cursor.major(), cursor.minor(), now.0])?;
            Ok(Acked::Moved(get_row(conn, &tenant, &name)?))
        })
        .await
    }
}
