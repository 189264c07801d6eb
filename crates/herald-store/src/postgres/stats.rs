//! [`StatsStore`] for PostgreSQL: signals, state counts, activity, schema version.

use super::PgStore;
use crate::model::*;
use crate::*;
use crate::{Signals, StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::Timestamp;
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
        let count = |rows: Vec<Row>| -> StoreResult<Vec<(String, u64)>> {
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get::<_, String>(0)?,
                        r.try_get::<_, i64>(1)?.max(0) as u64,
                    ))
                })
                .collect()
        };
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
                "SELECT d.webhook_id, d.route, a.at, a.status_code, a.latency_ms, a.error \
                 FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
                 WHERE a.at >= $1 AND a.at < $2 AND ($3::TEXT IS NULL OR (d.tenant_id = $3 AND d.route IS NULL)) \
                 ORDER BY a.at DESC LIMIT $4",
                &[&f.since.0, &f.until.0, &tenant, &limit],
            )
            .await?;
        let mut attempts = rows
            .iter()
            .map(|r| {
                Ok(AttemptSample {
                    destination: crate::model::destination_of(r.try_get(0)?, r.try_get(1)?)?,
                    at: Timestamp(r.try_get(2)?),
                    status_code: r.try_get::<_, Option<i64>>(3)?.map(|c| c as u16),
                    latency_ms: r.try_get::<_, i64>(4)?.max(0) as u64,
                    error: r.try_get(5)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
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
        let mut deliveries = rows
            .iter()
            .map(|r| {
                let status: String = r.try_get(1)?;
                Ok(DeliverySpan {
                    created_at: Timestamp(r.try_get(0)?),
                    status: DeliveryStatus::parse(&status).ok_or_else(|| {
                        StoreError::Backend(format!("bad delivery status {status:?}"))
                    })?,
                    updated_at: Timestamp(r.try_get(2)?),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
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
