//! [`OutboxStore`] for SQLite: broker routes and their ordered lines.

use super::rows::{self, *};
use super::sql::*;
use super::SqliteStore;
use crate::model::*;
use crate::StoreResult;
use crate::*;
use async_trait::async_trait;
use herald_core::Timestamp;
use rusqlite::types::Value as Sql;
use std::sync::Arc;
use std::time::Duration;

/// A pending route delivery is claimable when no older pending delivery shares its route and key.
pub(super) const HEAD_OF_LINE: &str =
    "(ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries AS earlier \
     WHERE earlier.route = deliveries.route AND earlier.ordering_key = deliveries.ordering_key \
     AND earlier.status = 'pending' AND earlier.id < deliveries.id))";

#[async_trait]
impl OutboxStore for SqliteStore {
    fn set_routes(&self, routes: Vec<OutboxRoute>) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    async fn claim_due_broker_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<BrokerJob>> {
        self.write_internal(move |conn| {
            let sql = format!(
                "UPDATE deliveries SET lease_until = ?1 WHERE id IN ( \
                   SELECT id FROM deliveries WHERE status = 'pending' AND route IS NOT NULL AND next_attempt_at <= ?2 \
                   AND (lease_until IS NULL OR lease_until <= ?2) AND {HEAD_OF_LINE} \
                   ORDER BY next_attempt_at, id LIMIT ?3) \
                 RETURNING {DELIVERY_COLUMNS}"
            );
            let deliveries = query_all(
                conn,
                &sql,
                vec![Sql::Integer(now.plus(lease).0), Sql::Integer(now.0), Sql::Integer(limit.clamp(1, 5000) as i64)],
                rows::delivery,
            )?;
            let mut jobs = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                let Some(route) = d.destination.route().map(str::to_owned) else {
                    continue;
                };
                let event = get_event_row(conn, &d.event_id.to_string())?;
                jobs.push(BrokerJob { delivery: d, event, route });
            }
            jobs.sort_by_key(|j| j.delivery.id);
            Ok(jobs)
        })
        .await
    }

    async fn next_broker_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM deliveries \
                 WHERE status = 'pending' AND route IS NOT NULL AND next_attempt_at IS NOT NULL AND {HEAD_OF_LINE}"
            );
            let t: Option<i64> = conn.query_row(&sql, [], |r| r.get(0))?;
            Ok(t.map(Timestamp))
        })
        .await
    }
}
