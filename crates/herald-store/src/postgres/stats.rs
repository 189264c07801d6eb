//! [`StatsStore`] for PostgreSQL: signals, state counts, activity, schema version.

use super::rows::{self, ATTEMPT_SAMPLE_COLUMNS};
use super::sql::*;
use super::PgStore;
use crate::model::*;
use crate::*;
use crate::{Signals, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use std::sync::Arc;
use tokio_postgres::Row;

#[async_trait]
impl StatsStore for PgStore {
    fn signals(&self) -> &Arc<Signals> {
        self.signals_arc()
    }

    async fn state_counts(&self, tenant: Option<TenantId>) -> StoreResult<StateCounts> {
        let tenant = tenant.map(|t| t.to_string());
        let client = self.client().await?;
        let count = |rows: Vec<Row>| map_rows(rows, rows::count);
        let operations = count(
            client
                .query(
                    "SELECT state, COUNT(*) FROM operations WHERE NOT deleted \
                     AND ($1::TEXT IS NULL OR tenant_id = $1) GROUP BY state ORDER BY state",
                    &[&tenant],
                )
                .await?,
        )?;
        let deliveries = count(
            client
                .query(
                    "SELECT status, COUNT(*) FROM deliveries WHERE ($1::TEXT IS NULL OR (tenant_id = $1 AND route IS NULL)) \
                     GROUP BY status ORDER BY status",
                    &[&tenant],
                )
                .await?,
        )?;
        Ok(StateCounts {
            operations,
            deliveries,
        })
    }

    async fn activity(&self, f: ActivityFilter) -> StoreResult<Activity> {
        let tenant = f.tenant.map(|t| t.to_string());
        let limit = f.limit.clamp(1, 200_000) as i64;
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {ATTEMPT_SAMPLE_COLUMNS} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
                 WHERE a.at >= $1 AND a.at < $2 AND ($3::TEXT IS NULL OR (d.tenant_id = $3 AND d.route IS NULL)) \
                 ORDER BY a.at DESC LIMIT $4"),
                &[&f.since.0, &f.until.0, &tenant, &limit],
            )
            .await?;
        let mut attempts = map_rows(rows, rows::attempt_sample)?;
        attempts.reverse();
        // Pending at some instant of the window: created before its end, and either still
        // pending or last changed after its start.
        let rows = client
            .query(
                "SELECT created_at, status, updated_at FROM deliveries \
                 WHERE created_at < $1 AND (status = 'pending' OR updated_at >= $2) \
                 AND ($3::TEXT IS NULL OR (tenant_id = $3 AND route IS NULL)) ORDER BY created_at DESC LIMIT $4",
                &[&f.until.0, &f.since.0, &tenant, &limit],
            )
            .await?;
        let mut deliveries = map_rows(rows, rows::delivery_span)?;
        deliveries.reverse();
        Ok(Activity {
            attempts,
            deliveries,
        })
    }

    async fn schema_version(&self) -> StoreResult<SchemaVersion> {
        let client = self.client().await?;
        Ok(SchemaVersion {
            applied: super::migrations::applied_version(&client).await?,
            expected: super::migrations::EXPECTED_VERSION,
        })
    }
}
