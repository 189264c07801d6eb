//! [`OutboxStore`] for PostgreSQL: broker routes and their ordered lines.

use super::rows::{self, *};
use super::sql::*;
use super::PgStore;
use crate::model::*;
use crate::StoreResult;
use crate::*;
use async_trait::async_trait;
use herald_core::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// A pending route delivery is claimable when no older pending delivery shares its route and key.
pub(super) const HEAD_OF_LINE: &str =
    "(d.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries AS earlier \
     WHERE earlier.route = d.route AND earlier.ordering_key = d.ordering_key \
     AND earlier.status = 'pending' AND earlier.line_seq < d.line_seq))";

#[async_trait]
impl OutboxStore for PgStore {
    fn set_routes(&self, routes: Vec<OutboxRoute>) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    async fn claim_due_broker_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<BrokerJob>> {
        in_tx!(self, |tx, wake| {
            // Heads of their (route, key) lines only; SKIP LOCKED keeps two nodes off one row,
            // and the lease keeps the line's next delivery waiting until this one is settled.
            let sql = format!(
                "UPDATE deliveries SET lease_until = $1 WHERE id = ANY(ARRAY( \
                   SELECT d.id FROM deliveries d WHERE d.status = 'pending' AND d.route IS NOT NULL \
                   AND d.next_attempt_at <= $2 AND (d.lease_until IS NULL OR d.lease_until <= $2) \
                   AND {HEAD_OF_LINE} ORDER BY d.next_attempt_at, d.line_seq LIMIT $3 FOR UPDATE SKIP LOCKED)) \
                 RETURNING {DELIVERY_COLUMNS}, line_seq"
            );
            let rows = claim_in_due_order(
                &tx,
                &sql,
                &[&now.plus(lease).0, &now.0, &(limit.clamp(1, 5000) as i64)],
            )
            .await?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.try_get("line_seq")?;
                claimed.push((seq, rows::delivery(row)?));
            }
            claimed.sort_by_key(|(seq, _)| *seq);
            let mut jobs = Vec::with_capacity(claimed.len());
            for (_, d) in claimed {
                let Some(route) = d.destination.route().map(str::to_owned) else {
                    continue;
                };
                let event = get_event_row(&tx, &d.event_id.to_string()).await?;
                jobs.push(BrokerJob {
                    delivery: d,
                    event,
                    route,
                });
            }
            Ok(jobs)
        })
    }

    async fn next_broker_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        let sql = format!(
            "SELECT MIN(GREATEST(d.next_attempt_at, COALESCE(d.lease_until, 0))) FROM deliveries d \
             WHERE d.status = 'pending' AND d.route IS NOT NULL AND d.next_attempt_at IS NOT NULL AND {HEAD_OF_LINE}"
        );
        let client = self.client().await?;
        let t: Option<i64> = client.query_one(&sql, &[]).await?.try_get(0)?;
        Ok(t.map(Timestamp))
    }
}
