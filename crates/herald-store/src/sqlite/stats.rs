//! [`StatsStore`] for SQLite: signals, state counts, activity, schema version.

use super::sql::*;
use super::SqliteStore;
use crate::filter::{self, Arg, Where};
use crate::model::*;
use crate::rows::{self as shared, ATTEMPT_SAMPLE_COLUMNS};
use crate::*;
use crate::{Signals, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use std::sync::Arc;

#[async_trait]
impl StatsStore for SqliteStore {
    fn signals(&self) -> &Arc<Signals> {
        &self.signals
    }

    async fn state_counts(&self, tenant: Option<TenantId>) -> StoreResult<StateCounts> {
        self.read(move |conn| {
            let mut ops = Where::new(filter::SQLITE);
            ops.not_deleted();
            let mut dls = Where::new(filter::SQLITE);
            if let Some(t) = tenant {
                ops.add("tenant_id = ?", Arg::text(t));
                // A tenant's view counts its webhooks' deliveries; routes are the operator's.
                dls.add("tenant_id = ?", Arg::text(t));
                dls.fixed("route IS NULL");
            }
            let count = |row: &rusqlite::Row<'_>| shared::count(row);
            let operations = query_all(
                conn,
                &format!(
                    "SELECT state, COUNT(*) FROM operations {} GROUP BY state ORDER BY state",
                    ops.sql()
                ),
                ops.args,
                count,
            )?;
            let deliveries = query_all(
                conn,
                &format!(
                    "SELECT status, COUNT(*) FROM deliveries {} GROUP BY status ORDER BY status",
                    dls.sql()
                ),
                dls.args,
                count,
            )?;
            Ok(StateCounts {
                operations,
                deliveries,
            })
        })
        .await
    }

    async fn activity(&self, f: ActivityFilter) -> StoreResult<Activity> {
        self.read(move |conn| {
            let limit = f.limit.clamp(1, 200_000) as i64;
            let mut w = Where::new(filter::SQLITE);
            w.add("a.at >= ?", Arg::Int(f.since.0));
            w.add("a.at < ?", Arg::Int(f.until.0));
            if let Some(t) = f.tenant {
                w.add("d.tenant_id = ?", Arg::text(t));
                w.fixed("d.route IS NULL");
            }
            let sql = format!(
                "SELECT {ATTEMPT_SAMPLE_COLUMNS} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id {} \
                 ORDER BY a.at DESC LIMIT {limit}",
                w.sql()
            );
            let mut attempts = query_all(conn, &sql, w.args, |row| shared::attempt_sample(row))?;
            attempts.reverse();

            // Pending at some instant of the window: created before its end, and either
            // still pending or last changed after its start.
            let mut w = Where::new(filter::SQLITE);
            w.add("created_at < ?", Arg::Int(f.until.0));
            w.add(
                "(status = 'pending' OR updated_at >= ?)",
                Arg::Int(f.since.0),
            );
            if let Some(t) = f.tenant {
                w.add("tenant_id = ?", Arg::text(t));
                w.fixed("route IS NULL");
            }
            let sql = format!(
                "SELECT created_at, status, updated_at FROM deliveries {} \
                 ORDER BY created_at DESC LIMIT {limit}",
                w.sql()
            );
            let mut deliveries = query_all(conn, &sql, w.args, |row| shared::delivery_span(row))?;
            deliveries.reverse();
            Ok(Activity {
                attempts,
                deliveries,
            })
        })
        .await
    }

    async fn schema_version(&self) -> StoreResult<SchemaVersion> {
        self.read(|conn| {
            Ok(SchemaVersion {
                applied: super::migrations::applied_version(conn)?,
                expected: super::migrations::EXPECTED_VERSION,
            })
        })
        .await
    }
}
