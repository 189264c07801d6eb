//! [`DeliveryStore`] for SQLite: claims, results, reads, redelivery and replay.

use super::events::*;
use super::rows::{self, *};
use super::sql::*;
use super::SqliteStore;
use crate::filter::{self};
use crate::lines;
use crate::model::*;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::webhook::Ordering;
use herald_core::Timestamp;
use rusqlite::types::Value as Sql;
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
impl DeliveryStore for SqliteStore {
    fn hand_off_fresh(&self, handoff: Handoff) {
        self.set_handoff(handoff);
    }

    async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryJob>> {
        self.write_internal(move |conn| {
            let sql = format!(
                "UPDATE deliveries SET lease_until = ?1 WHERE id IN ( \
                   SELECT id FROM deliveries WHERE status = 'pending' AND route IS NULL AND next_attempt_at <= ?2 \
                   AND (lease_until IS NULL OR lease_until <= ?2) AND {WEBHOOK_HEAD} AND {LINE_IDLE} \
                   ORDER BY next_attempt_at LIMIT ?3) \
                 RETURNING {DELIVERY_COLUMNS}",
                WEBHOOK_HEAD = lines::WEBHOOK_HEAD,
                LINE_IDLE = lines::line_idle_sql("?2")
            );
            let deliveries = query_all(
                conn,
                &sql,
                vec![Sql::Integer(now.plus(lease).0), Sql::Integer(now.0), Sql::Integer(limit.clamp(1, 5000) as i64)],
                rows::delivery,
            )?;
            let mut webhooks: HashMap<WebhookId, Option<Arc<Webhook>>> = HashMap::new();
            let mut events: HashMap<EventId, Arc<SharedEvent>> = HashMap::new();
            let mut jobs = Vec::with_capacity(deliveries.len());
            let mut orphans = Vec::new();
            for d in deliveries {
                let Some(webhook_id) = d.destination.webhook() else {
                    continue;
                };
                let webhook = match webhooks.get(&webhook_id) {
                    Some(w) => w.clone(),
                    None => {
                        let w = match get_webhook_row(conn, &webhook_id.to_string()) {
                            Ok(w) => Some(Arc::new(w)),
                            Err(StoreError::NotFound) => None,
                            Err(e) => return Err(e),
                        };
                        webhooks.insert(webhook_id, w.clone());
                        w
                    }
                };
                let event = match events.get(&d.event_id) {
                    Some(e) => Some(e.clone()),
                    None => match get_event_row(conn, &d.event_id.to_string()) {
                        Ok(e) => {
                            let e = SharedEvent::new(e);
                            events.insert(d.event_id, e.clone());
                            Some(e)
                        }
                        Err(StoreError::NotFound) => None,
                        Err(e) => return Err(e),
                    },
                };
                match (webhook, event) {
                    (Some(webhook), Some(event)) => {
                        jobs.push(DeliveryJob {
                        delivery: d,
                        event,
                        webhook,
                        unsendable: None,
                        lease_until: now.plus(lease),
                    })
                    }
                    // Its webhook was deleted after it was made: nothing left to send to. One
                    // such row must never fail the claim (that would stall every delivery).
                    _ => orphans.push(d.id.to_string()),
                }
            }
            for id in orphans {
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, \
                     last_error = 'webhook deleted', updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now.0])?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<()> {
        let reschedules = rules::reschedules(&records);
        let routes = self.routes();
        let (released, raised) = self.write_internal(move |conn| {
            let (mut released, mut raised) = (0, false);
            for r in records {
                let id = r.delivery_id.to_string();
                let (code, error, at) = match &r.attempt {
                    Some(a) => {
                        conn.prepare_cached(
                            "INSERT INTO attempts (id, delivery_id, at, status_code, latency_ms, error, response_excerpt) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?
                        .execute(params![
                            a.id.to_string(),
                            id,
                            a.at.0,
                            a.status_code,
                            a.latency_ms as i64,
                            a.error,
                            a.response_excerpt
                        ])?;
                        (a.status_code, a.error.clone(), a.at)
                    }
                    None => (None, None, Timestamp(0)),
                };
                let counted = r.attempt.is_some() as i64;
                let (status, next) = rules::outcome_columns(&r.outcome);
                // A retry for a webhook disabled meanwhile (say by a 410 to another delivery) waits
                // with no due time, like every pending delivery of a disabled webhook. A delivery
                // skipped meanwhile (its lease had run out) stays skipped (the attempt is logged).
                // It answers whether the delivery is in an ordered line.
                let lined: Option<bool> = if counted == 1 {
                    conn.prepare_cached(
                        "UPDATE deliveries SET status = ?2, lease_until = NULL, \
                         next_attempt_at = CASE WHEN (SELECT disabled FROM webhooks WHERE id = deliveries.webhook_id) = 1 \
                           THEN NULL ELSE ?3 END, \
                         attempts = attempts + 1, window_attempts = window_attempts + 1, last_status_code = ?4, \
                         last_error = ?5, updated_at = ?6 WHERE id = ?1 AND status <> 'skipped' \
                         RETURNING ordering_key IS NOT NULL AND webhook_id IS NOT NULL",
                    )?
                    .query_row(params![id, status, next, code, error, at.0], |r| r.get(0))
                    .optional()?
                } else {
                    conn.prepare_cached(
                        "UPDATE deliveries SET status = ?2, lease_until = NULL, \
                         next_attempt_at = CASE WHEN (SELECT disabled FROM webhooks WHERE id = deliveries.webhook_id) = 1 \
                           THEN NULL ELSE ?3 END WHERE id = ?1 AND status <> 'skipped' \
                         RETURNING ordering_key IS NOT NULL AND webhook_id IS NOT NULL",
                    )?
                    .query_row(params![id, status, next], |r| r.get(0))
                    .optional()?
                };
                // Updated (not skipped meanwhile), and whether in an ordered line.
                let changed = lined.is_some();
                let lined = lined.unwrap_or(false);
                // Still pending but no longer its line's head (an earlier one was put back
                // meanwhile): held until its turn.
                if lined && next.is_some() {
                    conn.prepare_cached(&lines::hold_if_behind_sql("?1"))?
                        .execute(params![id])?;
                }
                // A delivery that ends failed here (its schedule used up, or a 410) raises
                // `delivery.failed` for the API owner, in this write.
                if changed && counted == 1 && r.outcome == AttemptOutcome::Failed {
                    let d = get_delivery_row(conn, &id)?;
                    let failures = match rules::failure_subject(&d) {
                        Some(webhook) => note_failure(conn, webhook, at)?,
                        None => None,
                    };
                    if let Some(event) =
                        failures.and_then(|n| rules::delivery_failed_event(&d, n, at))
                    {
                        raise_event(conn, &routes, event)?;
                        raised = true;
                    }
                }
                // A success ends its line's head: the next delivery of its key goes.
                if lined && r.outcome == AttemptOutcome::Succeeded {
                    released += conn
                        .prepare_cached(&lines::release_next_sql("?1", "?2"))?
                        .execute(params![id, at.0])?;
                }
                // A result that arrives after its webhook was deleted (sent while the delete
                // ran) must not make the delivery pending again: a deleted webhook owes nothing.
                if status == "pending" {
                    conn.prepare_cached(
                        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted' \
                         WHERE id = ?1 AND status = 'pending' AND EXISTS \
                           (SELECT 1 FROM webhooks w WHERE w.id = deliveries.webhook_id AND w.deleted = 1)",
                    )?
                    .execute(params![id])?;
                }
                if let Some((webhook, reason)) = r.disable_webhook {
                    forget_fan_out_targets();
                    // Only the disable of a live, enabled webhook is news.
                    let was_enabled: bool = conn
                        .prepare_cached(
                            "SELECT COUNT(*) FROM webhooks WHERE id = ?1 AND disabled = 0 AND deleted = 0",
                        )?
                        .query_row(params![webhook.to_string()], |r| r.get::<_, i64>(0))?
                        == 1;
                    conn.execute(
                        "UPDATE webhooks SET disabled = 1, disabled_reason = ?2, updated_at = ?3 WHERE id = ?1",
                        params![webhook.to_string(), reason, at.0],
                    )?;
                    if was_enabled {
                        let wh = get_webhook_row(conn, &webhook.to_string())?;
                        raise_event(conn, &routes, rules::webhook_disabled_event(&wh, at))?;
                        raised = true;
                    }
                    conn.execute(
                        "UPDATE deliveries SET next_attempt_at = NULL WHERE webhook_id = ?1 AND status = 'pending'",
                        params![webhook.to_string()],
                    )?;
                }
            }
            Ok((released, raised))
        })
        .await?;
        // A retry may now be the earliest due delivery: let the engines re-plan their sleep.
        // A success or a final failure makes nothing due, unless it released a line's next
        // or raised an event of Herald's own.
        if reschedules || released > 0 || raised {
            self.signals.deliveries_changed();
        }
        if raised {
            self.signals.events_appended(crate::Appended::Anything);
        }
        Ok(())
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            let t: Option<i64> = conn.query_row(
                &format!(
                    "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0), {})) FROM deliveries \
                     WHERE status = 'pending' AND route IS NULL AND next_attempt_at IS NOT NULL AND {}",
                    lines::LINE_LEASE,
                    lines::WEBHOOK_HEAD
                ),
                [],
                |r| r.get(0),
            )?;
            Ok(t.map(Timestamp))
        })
        .await
    }

    async fn list_deliveries(&self, f: DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let q = filter::deliveries(filter::SQLITE, &f);
        self.read(move |conn| {
            let mut list = query_all(conn, &q.sql, q.args, rows::delivery)?;
            for d in &mut list {
                d.held_by = held_by(conn, d)?;
            }
            Ok(list)
        })
        .await
    }

    async fn get_delivery(&self, id: DeliveryId) -> StoreResult<(Delivery, Vec<Attempt>)> {
        self.read(move |conn| {
            let mut d = get_delivery_row(conn, &id.to_string())?;
            d.held_by = held_by(conn, &d)?;
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ?1 ORDER BY id ASC"
            );
            let attempts = query_all(conn, &sql, vec![text(id)], rows::attempt)?;
            Ok((d, attempts))
        })
        .await
    }

    async fn redeliver(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery> {
        let d = self
            .write(move |conn| {
                let d = get_delivery_row(conn, &id.to_string())?;
                let paused = match d.destination.webhook() {
                    Some(webhook) => get_webhook_row(conn, &webhook.to_string())?.disabled,
                    None => false,
                };
                let next = if paused { None } else { Some(now.0) };
                conn.execute(
                    "UPDATE deliveries SET status = 'pending', window_attempts = 0, next_attempt_at = ?2, \
                     updated_at = ?3 WHERE id = ?1",
                    params![id.to_string(), next, now.0],
                )?;
                if let Some(webhook) = d.destination.webhook() {
                    // Its place in line as its webhook orders now, whatever it was when made.
                    let ordered = get_webhook_row(conn, &webhook.to_string())?.ordering == Ordering::Key;
                    conn.prepare_cached(&lines::reline_sql("?1", "?2"))?
                        .execute(params![id.to_string(), ordered as i64])?;
                    if ordered || d.ordering_key.is_some() {
                        settle_lines(conn, &webhook.to_string(), now)?;
                    }
                }
                let mut d = get_delivery_row(conn, &id.to_string())?;
                d.held_by = held_by(conn, &d)?;
                Ok(d)
            })
            .await?;
        self.signals.deliveries_changed();
        Ok(d)
    }

    async fn replay(&self, r: Replay) -> StoreResult<ReplayBatch> {
        let batch = self
            .write(move |conn| {
                let webhook = get_webhook_row(conn, &r.webhook.to_string())?;
                let next = if webhook.disabled { None } else { Some(r.now.0) };
                // The next `limit` deliveries of the range in (event time, id) order, read
                // along `deliveries_by_webhook`: a batch reads only what it looks at.
                let (from_at, from_id) = match r.after {
                    Some(c) => (c.event_created_at.0.max(r.since.0), c.delivery.to_string()),
                    None => (r.since.0, String::new()),
                };
                let limit = r.limit.clamp(1, 10_000);
                let looked_at: Vec<(String, i64, String)> = conn
                    .prepare_cached(
                        "SELECT id, event_created_at, event_type FROM deliveries \
                         WHERE webhook_id = ?1 AND webhook_id IS NOT NULL AND event_created_at >= ?2 \
                         AND event_created_at < ?3 AND (event_created_at > ?2 OR id > ?4) \
                         ORDER BY event_created_at, id LIMIT ?5",
                    )?
                    .query_map(
                        params![r.webhook.to_string(), from_at, r.until.0, from_id, limit],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )?
                    .collect::<Result<_, _>>()?;
                let status_clause = match r.status {
                    Some(s) => format!("status = '{}'", s.as_str()),
                    // Without a status, everything not already on its way.
                    None => "status != 'pending'".to_owned(),
                };
                let mut update = conn.prepare_cached(&format!(
                    "UPDATE deliveries SET status = 'pending', window_attempts = 0, next_attempt_at = ?2, \
                     updated_at = ?3 WHERE id = ?1 AND {status_clause}"
                ))?;
                let mut replayed = 0;
                let ordered = (webhook.ordering == Ordering::Key) as i64;
                let mut reline = conn.prepare_cached(&lines::reline_sql("?1", "?2"))?;
                for (id, _, event_type) in &looked_at {
                    if !r.takes(event_type) {
                        continue;
                    }
                    let n = update.execute(params![id, next, r.now.0])?;
                    if n > 0 {
                        reline.execute(params![id, ordered])?;
                    }
                    replayed += n as u64;
                }
                if replayed > 0 && webhook.ordering == Ordering::Key {
                    settle_lines(conn, &r.webhook.to_string(), r.now)?;
                }
                let next = match looked_at.last() {
                    Some((id, at, _)) if looked_at.len() == limit as usize => Some(ReplayCursor {
                        event_created_at: Timestamp(*at),
                        delivery: parse_id(id, DeliveryId::parse)?,
                    }),
                    _ => None,
                };
                Ok(ReplayBatch { replayed, next })
            })
            .await?;
        if batch.replayed > 0 {
            self.signals.deliveries_changed();
        }
        Ok(batch)
    }

    async fn skip_delivery(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery> {
        let d = self
            .write(move |conn| {
                let d = get_delivery_row(conn, &id.to_string())?;
                match d.status {
                    DeliveryStatus::Succeeded => return Err(StoreError::DeliverySucceeded),
                    DeliveryStatus::Skipped => return Ok(d),
                    DeliveryStatus::Pending | DeliveryStatus::Failed => {}
                }
                // Not while its attempt is in flight: the next of its key would go beside it.
                let n = conn.execute(
                    "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL, lease_until = NULL, \
                     updated_at = ?2 WHERE id = ?1 AND (status = 'failed' OR lease_until IS NULL OR lease_until <= ?2)",
                    params![id.to_string(), now.0],
                )?;
                if n == 0 {
                    return Err(StoreError::DeliveryInFlight);
                }
                conn.prepare_cached(&lines::release_next_sql("?1", "?2"))?
                    .execute(params![id.to_string(), now.0])?;
                get_delivery_row(conn, &id.to_string())
            })
            .await?;
        self.signals.deliveries_changed();
        Ok(d)
    }

    async fn release_held_heads(&self, now: Timestamp) -> StoreResult<u64> {
        let n = self
            .write_internal(move |conn| {
                Ok(conn
                    .prepare_cached(&lines::release_held_heads_sql("?1"))?
                    .execute(params![now.0])? as u64)
            })
            .await?;
        if n > 0 {
            self.signals.deliveries_changed();
        }
        Ok(n)
    }
}

/// The head holding `d` back, when `d` is a pending delivery of an ordered line behind it.
fn held_by(conn: &rusqlite::Connection, d: &Delivery) -> StoreResult<Option<DeliveryId>> {
    let (Some(webhook), Some(key), Some(sequence), DeliveryStatus::Pending) = (
        d.destination.webhook(),
        &d.ordering_key,
        d.sequence,
        d.status,
    ) else {
        return Ok(None);
    };
    let head: Option<String> = conn
        .prepare_cached(&lines::head_of_sql("?1", "?2", "?3"))?
        .query_row(params![webhook.to_string(), key, sequence], |r| r.get(0))
        .optional()?;
    head.map(|h| parse_id(&h, DeliveryId::parse)).transpose()
}

/// One webhook's lines settled after many of its deliveries changed at once (see [`lines`]).
pub(super) fn settle_lines(
    conn: &rusqlite::Connection,
    webhook: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let [hold, release] = lines::settle_lines_sql("?1", "?2");
    conn.prepare_cached(&hold)?.execute(params![webhook])?;
    conn.prepare_cached(&release)?
        .execute(params![webhook, now.0])?;
    Ok(())
}
