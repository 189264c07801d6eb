//! [`DeliveryStore`] for PostgreSQL: claims, results (in rounds), reads, redelivery and replay.

use super::events::{insert_event_row, note_failure};
use super::rows::{self, *};
use super::sql::*;
use super::PgStore;
use crate::filter::{self};
use crate::lines;
use crate::model::*;
use crate::rows::parse_id;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::webhook::Ordering;
use herald_core::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One round of delivery results for `record_attempts`: at most one per delivery.
#[derive(Default)]
pub(super) struct DeliveryResults {
    id: Vec<String>,
    status: Vec<String>,
    next: Vec<Option<i64>>,
    counted: Vec<bool>,
    code: Vec<Option<i64>>,
    error: Vec<Option<String>>,
    at: Vec<i64>,
}

#[async_trait]
impl DeliveryStore for PgStore {
    /// Not on PostgreSQL yet: its group-committing event writer ([`super::event_writer`])
    /// stores every delivery unleased, and the dispatchers of all nodes claim them
    /// (`SKIP LOCKED`) as before.
    fn hand_off_fresh(&self, _handoff: Handoff) {}

    async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryJob>> {
        in_tx!(self, |tx, wake| {
            // `= ANY(ARRAY(…))`, not `IN (…)`: the claimed ids become one array and each row is
            // found by its key. With `IN`, the generic plan of this prepared statement was a
            // hash semi-join over a sequential scan of all deliveries (spilling to temp files),
            // so each claim cost time in proportion to the table, backlog and history included.
            let sql = format!(
                "UPDATE deliveries SET lease_until = $1 WHERE id = ANY(ARRAY( \
                   SELECT id FROM deliveries WHERE status = 'pending' AND route IS NULL AND next_attempt_at <= $2 \
                   AND (lease_until IS NULL OR lease_until <= $2) AND {WEBHOOK_HEAD} AND {LINE_IDLE} ORDER BY next_attempt_at LIMIT $3 \
                   FOR UPDATE SKIP LOCKED)) \
                 RETURNING {DELIVERY_COLUMNS}",
                WEBHOOK_HEAD = lines::WEBHOOK_HEAD,
                LINE_IDLE = lines::line_idle_sql("$2")
            );
            let claimed = claim_in_due_order(
                &tx,
                &sql,
                &[&now.plus(lease).0, &now.0, &(limit.clamp(1, 5000) as i64)],
            )
            .await?;
            let mut deliveries = map_rows(claimed, rows::delivery)?;
            if deliveries.is_empty() {
                return Ok(Ok(vec![]));
            }
            deliveries.sort_by_key(|d| (d.next_attempt_at, d.id.to_string()));
            let webhook_ids: Vec<String> = deliveries
                .iter()
                .filter_map(|d| d.destination.webhook().map(|w| w.to_string()))
                .collect();
            let mut event_ids: Vec<String> =
                deliveries.iter().map(|d| d.event_id.to_string()).collect();
            let mut webhook_ids = webhook_ids;
            for ids in [&mut webhook_ids, &mut event_ids] {
                ids.sort_unstable();
                ids.dedup();
            }
            // Both reads go out together (pipelined on the connection): one round trip.
            let webhook_sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ANY($1) AND NOT deleted"
            );
            let event_sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY($1)");
            let (webhook_rows, event_rows) = futures::try_join!(
                async { query(&tx, &webhook_sql, &[&webhook_ids]).await },
                async { query(&tx, &event_sql, &[&event_ids]).await },
            )?;
            let webhooks: HashMap<WebhookId, Arc<Webhook>> = map_rows(webhook_rows, rows::webhook)?
                .into_iter()
                .map(|w| (w.id, Arc::new(w)))
                .collect();
            let events: HashMap<EventId, Arc<SharedEvent>> = map_rows(event_rows, rows::event)?
                .into_iter()
                .map(|e| (e.id, SharedEvent::new(e)))
                .collect();
            let mut jobs = Vec::with_capacity(deliveries.len());
            let mut orphans = Vec::new();
            for d in deliveries {
                let webhook = d.destination.webhook().and_then(|w| webhooks.get(&w));
                match (webhook, events.get(&d.event_id)) {
                    (Some(w), Some(e)) => jobs.push(DeliveryJob {
                        webhook: w.clone(),
                        event: e.clone(),
                        delivery: d,
                        unsendable: None,
                        lease_until: now.plus(lease),
                    }),
                    _ => orphans.push(d.id.to_string()),
                }
            }
            if !orphans.is_empty() {
                // Their webhook was deleted after they were made: nothing left to send to.
                execute(
                    &tx,
                    "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, \
                     last_error = 'webhook deleted', updated_at = $2 WHERE id = ANY($1)",
                    &[&orphans, &now.0],
                )
                .await?;
            }
            Ok(jobs)
        })
    }

    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<()> {
        retry_on_conflict(|| self.record_attempts_once(records.clone())).await
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        let t: Option<i64> = match self
            .read_one(
                &format!(
                    "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0), {})) FROM deliveries \
                     WHERE status = 'pending' AND route IS NULL AND next_attempt_at IS NOT NULL AND {}",
                    lines::LINE_LEASE,
                    lines::WEBHOOK_HEAD
                ),
                &[],
            )
            .await?
        {
            Some(row) => row.try_get(0)?,
            None => None,
        };
        Ok(t.map(Timestamp))
    }

    async fn list_deliveries(&self, f: DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let q = filter::deliveries(filter::POSTGRES, &f);
        let mut list: Vec<Delivery> = self
            .read_all(&q.sql, &refs(&pg_args(q.args)), rows::delivery)
            .await?;
        if !list
            .iter()
            .any(|d| d.ordering_key.is_some() && d.sequence.is_some())
        {
            return Ok(list);
        }
        in_tx!(self, |tx, wake| {
            for d in &mut list {
                d.held_by = held_by(&tx, d).await?;
            }
            Ok(list)
        })
    }

    async fn get_delivery(&self, id: DeliveryId) -> StoreResult<(Delivery, Vec<Attempt>)> {
        in_tx!(self, |tx, wake| {
            let mut d = get_delivery_row(&tx, &id.to_string()).await?;
            d.held_by = held_by(&tx, &d).await?;
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY id ASC"
            );
            let attempts = map_rows(query(&tx, &sql, &[&id.to_string()]).await?, rows::attempt)?;
            Ok((d, attempts))
        })
    }

    async fn redeliver(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery> {
        in_tx!(self, |tx, wake| {
            let d = get_delivery_row(&tx, &id.to_string()).await?;
            // Locked: an enable or disable of the webhook is wholly before or after this
            // (read unlocked, a concurrent enable left the delivery pending with no due time).
            let paused = match d.destination.webhook() {
                Some(w) => get_webhook_row(&tx, &w.to_string(), true).await?.disabled,
                None => false,
            };
            let next = if paused { None } else { Some(now.0) };
            execute(
                &tx,
                "UPDATE deliveries SET status = 'pending', window_attempts = 0, next_attempt_at = $2, \
                 updated_at = $3 WHERE id = $1",
                &[&id.to_string(), &next, &now.0],
            )
            .await?;
            if let Some(webhook) = d.destination.webhook() {
                // Its place in line as its webhook orders now, whatever it was when made.
                let webhook = webhook.to_string();
                let ordered =
                    get_webhook_row(&tx, &webhook, false).await?.ordering == Ordering::Key;
                execute(
                    &tx,
                    &lines::reline_sql("$1", "$2::int8"),
                    &[&id.to_string(), &(ordered as i64)],
                )
                .await?;
                if ordered || d.ordering_key.is_some() {
                    settle_lines(&tx, &webhook, now).await?;
                }
            }
            wake.due = true;
            let mut d = get_delivery_row(&tx, &id.to_string()).await?;
            d.held_by = held_by(&tx, &d).await?;
            Ok(d)
        })
    }

    async fn replay(&self, r: Replay) -> StoreResult<ReplayBatch> {
        in_tx!(self, |tx, wake| {
            // Locked, as in `redeliver`.
            let webhook = get_webhook_row(&tx, &r.webhook.to_string(), true).await?;
            let next = if webhook.disabled {
                None
            } else {
                Some(r.now.0)
            };
            // The next `limit` deliveries of the range in (event time, id) order, read
            // along `deliveries_by_webhook`: a batch reads only what it looks at.
            let (from_at, from_id) = match r.after {
                Some(c) => (c.event_created_at.0.max(r.since.0), c.delivery.to_string()),
                None => (r.since.0, String::new()),
            };
            let limit = r.limit.clamp(1, 10_000);
            let looked_at = query(
                &tx,
                "SELECT id, event_created_at, event_type FROM deliveries WHERE webhook_id = $1 \
                 AND event_created_at >= $2 AND event_created_at < $3 \
                 AND (event_created_at > $2 OR id > $4) ORDER BY event_created_at, id LIMIT $5",
                &[
                    &r.webhook.to_string(),
                    &from_at,
                    &r.until.0,
                    &from_id,
                    &(limit as i64),
                ],
            )
            .await?;
            let mut ids: Vec<String> = Vec::with_capacity(looked_at.len());
            for row in &looked_at {
                let event_type: String = row.try_get(2)?;
                if r.takes(&event_type) {
                    ids.push(row.try_get(0)?);
                }
            }
            let status_clause = match r.status {
                Some(s) => format!("status = '{}'", s.as_str()),
                // Without a status, everything not already on its way.
                None => "status != 'pending'".to_owned(),
            };
            // Each one's place in line as its webhook orders now, from its event.
            let ordered = webhook.ordering == Ordering::Key;
            let replayed = execute(
                &tx,
                &format!(
                    "UPDATE deliveries SET status = 'pending', window_attempts = 0, next_attempt_at = $2, \
                     updated_at = $3, \
                     ordering_key = CASE WHEN $4 THEN (SELECT e.key FROM events e WHERE e.id = deliveries.event_id) END, \
                     sequence = CASE WHEN $4 THEN (SELECT e.sequence FROM events e WHERE e.id = deliveries.event_id) END \
                     WHERE id = ANY($1) AND {status_clause}"
                ),
                &[&ids, &next, &r.now.0, &ordered],
            )
            .await?;
            if replayed > 0 && webhook.ordering == Ordering::Key {
                settle_lines(&tx, &r.webhook.to_string(), r.now).await?;
            }
            let next = match looked_at.last() {
                Some(row) if looked_at.len() == limit as usize => Some(ReplayCursor {
                    event_created_at: Timestamp(row.try_get(1)?),
                    delivery: parse_id(&row.try_get::<_, String>(0)?, DeliveryId::parse)?,
                }),
                _ => None,
            };
            wake.due = replayed > 0;
            Ok(ReplayBatch { replayed, next })
        })
    }

    async fn skip_delivery(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery> {
        in_tx!(self, |tx, wake| {
            let id = id.to_string();
            let d = get_delivery_row(&tx, &id).await?;
            match d.status {
                DeliveryStatus::Succeeded => return Err(StoreError::DeliverySucceeded),
                DeliveryStatus::Skipped => return Ok(Ok(d)),
                DeliveryStatus::Pending | DeliveryStatus::Failed => {}
            }
            // Only from pending or failed (a result recorded meanwhile, a success, stands),
            // and not while its attempt is in flight: the next of its key would go beside it.
            let n = execute(
                &tx,
                "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL, lease_until = NULL, \
                 updated_at = $2 WHERE id = $1 AND status IN ('pending', 'failed') \
                 AND (status = 'failed' OR lease_until IS NULL OR lease_until <= $2)",
                &[&id, &now.0],
            )
            .await?;
            if n == 0 {
                let again = get_delivery_row(&tx, &id).await?;
                return Err(match again.status {
                    DeliveryStatus::Succeeded => StoreError::DeliverySucceeded,
                    _ => StoreError::DeliveryInFlight,
                });
            }
            lock_lines(&tx, std::slice::from_ref(&id)).await?;
            execute(&tx, &lines::release_next_sql("$1", "$2"), &[&id, &now.0]).await?;
            wake.due = true;
            get_delivery_row(&tx, &id).await
        })
    }

    async fn release_held_heads(&self, now: Timestamp) -> StoreResult<u64> {
        in_tx!(self, |tx, wake| {
            let n = execute(&tx, &lines::release_held_heads_sql("$1"), &[&now.0]).await?;
            wake.due = n > 0;
            Ok(n)
        })
    }
}

/// The head holding `d` back, when `d` is a pending delivery of an ordered line behind it.
async fn held_by(
    tx: &deadpool_postgres::Transaction<'_>,
    d: &Delivery,
) -> StoreResult<Option<DeliveryId>> {
    let (Some(webhook), Some(key), Some(sequence), DeliveryStatus::Pending) = (
        d.destination.webhook(),
        &d.ordering_key,
        d.sequence,
        d.status,
    ) else {
        return Ok(None);
    };
    let row = query_opt(
        tx,
        &lines::head_of_sql("$1", "$2", "$3"),
        &[&webhook.to_string(), key, &sequence],
    )
    .await?;
    match row {
        Some(row) => Ok(Some(parse_id(
            &row.try_get::<_, String>(0)?,
            DeliveryId::parse,
        )?)),
        None => Ok(None),
    }
}

/// Takes the `event_keys` rows of the lines of these deliveries (shared, in one order), so an
/// event of such a key being stored on another node is wholly before or after what follows.
async fn lock_lines(
    tx: &deadpool_postgres::Transaction<'_>,
    deliveries: &[String],
) -> StoreResult<()> {
    query(
        tx,
        "SELECT 1 FROM event_keys k WHERE (k.tenant_id, k.key) IN \
           (SELECT COALESCE(d.tenant_id, ''), d.ordering_key FROM deliveries d WHERE d.id = ANY($1) \
            AND d.webhook_id IS NOT NULL AND d.ordering_key IS NOT NULL) \
         ORDER BY k.tenant_id, k.key FOR SHARE",
        &[&deliveries],
    )
    .await?;
    Ok(())
}

/// One webhook's lines settled after many of its deliveries changed at once (see [`lines`]).
pub(super) async fn settle_lines(
    tx: &deadpool_postgres::Transaction<'_>,
    webhook: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let [hold, release] = lines::settle_lines_sql("$1", "$2");
    execute(tx, &hold, &[&webhook]).await?;
    execute(tx, &release, &[&webhook, &now.0]).await?;
    Ok(())
}

impl PgStore {
    pub(super) async fn record_attempts_once(
        &self,
        mut records: Vec<AttemptRecord>,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One order for every node, so two batches never lock the same rows crosswise.
        records.sort_by_key(|r| r.delivery_id.to_string());
        let routes = self.routes();
        let webhook_results = in_tx!(self, |tx, wake| {
            let mut disable: Vec<(String, String, i64)> = Vec::new();
            // Deliveries whose result ends them failed: each raises `delivery.failed`.
            let mut failing: Vec<String> = Vec::new();
            let (mut a_id, mut a_dlv, mut a_at, mut a_code, mut a_lat, mut a_err, mut a_ex) =
                (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            // One delivery can have two results in a batch (claimed again after a lease ran
            // out, say). An `UPDATE … FROM unnest(…)` applies only one row per target, so the
            // results go in rounds: the k-th result of each delivery in round k, in order.
            let mut rounds: Vec<DeliveryResults> = Vec::new();
            let mut seen: HashMap<DeliveryId, usize> = HashMap::new();
            let mut d_id: Vec<String> = Vec::with_capacity(records.len());
            let mut succeeded: Vec<String> = Vec::new();
            let mut rescheduled: Vec<String> = Vec::new();
            for r in &records {
                if r.outcome == AttemptOutcome::Succeeded {
                    succeeded.push(r.delivery_id.to_string());
                }
                if matches!(
                    r.outcome,
                    AttemptOutcome::RetryAt(_) | AttemptOutcome::Deferred(_)
                ) {
                    rescheduled.push(r.delivery_id.to_string());
                }
                if r.outcome == AttemptOutcome::Failed && r.attempt.is_some() {
                    failing.push(r.delivery_id.to_string());
                }
                let id = r.delivery_id.to_string();
                let (code, error, at) = match &r.attempt {
                    Some(a) => {
                        a_id.push(a.id.to_string());
                        a_dlv.push(id.clone());
                        a_at.push(a.at.0);
                        a_code.push(a.status_code.map(i64::from));
                        a_lat.push(a.latency_ms.min(i64::MAX as u64) as i64);
                        a_err.push(a.error.clone());
                        a_ex.push(a.response_excerpt.clone());
                        (a.status_code.map(i64::from), a.error.clone(), a.at)
                    }
                    None => (None, None, Timestamp(0)),
                };
                let (status, next) = rules::outcome_columns(&r.outcome);
                let round = seen.entry(r.delivery_id).or_insert(0);
                if rounds.len() <= *round {
                    rounds.push(DeliveryResults::default());
                }
                let u = &mut rounds[*round];
                *round += 1;
                d_id.push(id.clone());
                u.id.push(id);
                u.status.push(status.to_owned());
                u.next.push(next);
                u.counted.push(r.attempt.is_some());
                u.code.push(code);
                u.error.push(error);
                u.at.push(at.0);
                if let Some((webhook, reason)) = &r.disable_webhook {
                    disable.push((webhook.to_string(), reason.clone(), at.0));
                }
            }
            // The batch's webhooks are locked first (in id order, as every batch does), so a
            // concurrent enable, disable or delete is wholly before these results or wholly
            // after them. Without the lock, a result that waited on a delivery row an enable
            // had just updated was applied with the webhook still read as disabled (the
            // statement's snapshot predates the enable's commit), leaving the delivery pending
            // with no due time for ever.
            //
            // Every statement here is planned for its own arguments (force_custom_plan, sent
            // in the same round trip as the lock). The generic plans that prepared
            // statements otherwise settle on after five runs were made while `deliveries`
            // was small (a new database, before autovacuum's next ANALYZE) and were hash
            // joins over a sequential scan of the whole table: at 300 events/s to ten
            // webhooks, 250 ms per batch of results by the end of 25 s, and deliveries
            // waiting seconds behind them. Planned each time, they are index lookups.
            let custom_plans = async {
                tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
                    .await
                    .map_err(StoreError::from)
            };
            let lock_webhooks = async {
                query(
                    &tx,
                    "SELECT w.id, w.deleted FROM webhooks w WHERE w.id IN \
                       (SELECT d.webhook_id FROM deliveries d WHERE d.id = ANY($1)) \
                     ORDER BY w.id FOR NO KEY UPDATE",
                    &[&d_id],
                )
                .await
            };
            let (_, locked) = futures::try_join!(custom_plans, lock_webhooks)?;
            // Read under the lock, so no delete comes between this and what it decides.
            let mut any_deleted = false;
            for row in &locked {
                any_deleted |= row.try_get::<_, bool>(1)?;
            }
            // The webhooks a 410 disables: those still enabled raise `webhook.disabled`.
            let mut newly_disabled: Vec<(String, i64)> = Vec::new();
            for (webhook, reason, at) in &disable {
                // Locked above, so what this reads is what the update changes.
                let enabled = query_opt(
                    &tx,
                    "SELECT 1 FROM webhooks WHERE id = $1 AND NOT disabled AND NOT deleted",
                    &[webhook],
                )
                .await?
                .is_some();
                execute(
                    &tx,
                    "UPDATE webhooks SET disabled = TRUE, disabled_reason = $2, updated_at = $3 WHERE id = $1",
                    &[webhook, reason, at],
                )
                .await?;
                if enabled && !newly_disabled.iter().any(|(w, _)| w == webhook) {
                    newly_disabled.push((webhook.clone(), *at));
                }
            }
            // The attempts and the deliveries' new state go out together (pipelined).
            let insert_attempts = async {
                if a_id.is_empty() {
                    return Ok(0);
                }
                execute(
                    &tx,
                    "INSERT INTO attempts (id, delivery_id, at, status_code, latency_ms, error, response_excerpt) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::text[])",
                    &[&a_id, &a_dlv, &a_at, &a_code, &a_lat, &a_err, &a_ex],
                )
                .await
            };
            // A retry for a webhook disabled meanwhile (say by a 410 in this very batch) waits
            // with no due time, like every pending delivery of a disabled webhook.
            // Each updated delivery says whether it is in a webhook's ordered line (has a key
            // and a webhook; a broker route's lines are the outbox's): only those need their
            // line looked at below.
            let update_deliveries = async {
                let mut keyed: std::collections::HashSet<String> = Default::default();
                for u in &rounds {
                    let updated = query(
                        &tx,
                        "UPDATE deliveries d SET status = u.status, lease_until = NULL, \
                           next_attempt_at = CASE WHEN COALESCE((SELECT w.disabled FROM webhooks w WHERE w.id = d.webhook_id), FALSE) \
                             THEN NULL ELSE u.next END, \
                           attempts = d.attempts + CASE WHEN u.counted THEN 1 ELSE 0 END, \
                           window_attempts = d.window_attempts + CASE WHEN u.counted THEN 1 ELSE 0 END, \
                           last_status_code = CASE WHEN u.counted THEN u.code ELSE d.last_status_code END, \
                           last_error = CASE WHEN u.counted THEN u.error ELSE d.last_error END, \
                           updated_at = CASE WHEN u.counted THEN u.at ELSE d.updated_at END \
                         FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[], $5::int8[], $6::text[], $7::int8[]) \
                           AS u(rid, status, next, counted, code, error, at) \
                         WHERE d.id = u.rid AND d.status <> 'skipped' \
                         RETURNING d.id, d.ordering_key IS NOT NULL AND d.webhook_id IS NOT NULL",
                        &[&u.id, &u.status, &u.next, &u.counted, &u.code, &u.error, &u.at],
                    )
                    .await?;
                    for row in updated {
                        if row.try_get::<_, bool>(1)? {
                            keyed.insert(row.try_get(0)?);
                        }
                    }
                }
                Ok::<_, StoreError>(keyed)
            };
            let (_, keyed) = futures::try_join!(insert_attempts, update_deliveries)?;
            // The lines' statements below only concern deliveries with a key: a batch with
            // none (every unordered webhook's) skips them and their planning.
            rescheduled.retain(|id| keyed.contains(id));
            succeeded.retain(|id| keyed.contains(id));
            // Still pending but no longer its line's head (an earlier one was put back
            // meanwhile): held until its turn.
            if !rescheduled.is_empty() {
                execute(&tx, &lines::hold_if_behind_sql("ANY($1)"), &[&rescheduled]).await?;
            }
            // A success ends its line's head: the next delivery of its key goes. The lines'
            // `event_keys` rows are taken first (shared): an event of the key being stored on
            // another node commits before this looks for the next (and sees it), or waits for
            // this to commit (and finds the head done). Either way the next is not left held.
            if !succeeded.is_empty() {
                lock_lines(&tx, &succeeded).await?;
                let now = a_at.iter().copied().max().unwrap_or(0);
                let released = execute(
                    &tx,
                    &lines::release_next_of_many_sql("$1", "$2"),
                    &[&succeeded, &now],
                )
                .await?;
                wake.due |= released > 0;
            }
            // A result that arrives after its webhook was deleted (sent while the delete ran)
            // must not leave the delivery pending: a deleted webhook owes nothing. Only a
            // webhook deleted before the lock above can have such deliveries here; a delete
            // that waited on that lock fails them itself once this commits.
            if any_deleted {
                execute(
                    &tx,
                    "UPDATE deliveries d SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted' \
                     FROM webhooks w WHERE d.id = ANY($1) AND d.status = 'pending' AND w.id = d.webhook_id AND w.deleted",
                    &[&d_id],
                )
                .await?;
            }
            if !disable.is_empty() {
                let ids: Vec<String> = disable.iter().map(|d| d.0.clone()).collect();
                execute(
                    &tx,
                    "UPDATE deliveries SET next_attempt_at = NULL WHERE webhook_id = ANY($1) AND status = 'pending'",
                    &[&ids],
                )
                .await?;
            }
            // Herald's own events for the API owner, in this transaction.
            if !failing.is_empty() {
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ANY($1) AND status = 'failed' \
                     AND webhook_id IS NOT NULL ORDER BY id"
                );
                for row in query(&tx, &sql, &[&failing]).await? {
                    let d = rows::delivery(&row)?;
                    let failures = match rules::failure_subject(&d) {
                        Some(webhook) => note_failure(&tx, webhook, d.updated_at).await?,
                        None => None,
                    };
                    if let Some(event) =
                        failures.and_then(|n| rules::delivery_failed_event(&d, n, d.updated_at))
                    {
                        insert_event_row(&tx, &routes, &event).await?;
                        wake.due = true;
                        wake.events.push(event.tenant);
                    }
                }
            }
            for (webhook, at) in &newly_disabled {
                let wh = get_webhook_row(&tx, webhook, false).await?;
                let event = rules::webhook_disabled_event(&wh, Timestamp(*at));
                insert_event_row(&tx, &routes, &event).await?;
                wake.due = true;
                wake.events.push(event.tenant);
            }
            // Whether any result was a webhook delivery's (each has its webhook locked).
            !locked.is_empty()
        });
        // A retry may now be the earliest due delivery: let this node's dispatcher re-plan.
        // Only the webhook engine, and only for webhook results: the outbox's recorder
        // wakes its own claim loop after each batch of broker results, and anything else
        // this made due (an event raised above) woke both through `wake`. Waking the other
        // engine too cost it a claim and a next-due read per batch.
        if webhook_results {
            self.signals_arc().deliveries_due.notify_waiters();
        }
        Ok(())
    }
}
