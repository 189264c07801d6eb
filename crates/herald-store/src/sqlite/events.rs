//! [`EventStore`] for SQLite: events with their deliveries (one write job each), event types, retention.

use super::rows::{self, WEBHOOK_COLUMNS};
use super::sql::*;
use super::SqliteStore;
use crate::fanout::{self, Target, To};
use crate::filter::{self, Arg};
use crate::lines;
use crate::model::*;
use crate::rows as shared;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::webhook::Ordering;
use herald_core::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Retention: the batch of settled events older than ?1, at most ?2 of them.
pub(super) const PURGE_PICK: &str = "SELECT e.id FROM events e WHERE e.created_at < ?1 \
     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
     ORDER BY e.created_at LIMIT ?2";

/// ?1 is a JSON array of event ids.
pub(super) const PURGE_ATTEMPTS: &str = "DELETE FROM attempts WHERE delivery_id IN \
     (SELECT d.id FROM deliveries d WHERE d.event_id IN (SELECT value FROM json_each(?1)))";

/// ?1 is a JSON array of event ids: the ordered lines (webhook, key) whose dead deliveries
/// the purge takes.
pub(super) const PURGE_LINES: &str = "SELECT DISTINCT webhook_id, ordering_key FROM deliveries \
     WHERE event_id IN (SELECT value FROM json_each(?1)) AND webhook_id IS NOT NULL \
     AND ordering_key IS NOT NULL AND status = 'failed'";

pub(super) const PURGE_DELIVERIES: &str =
    "DELETE FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?1))";

pub(super) const PURGE_EVENTS: &str =
    "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1))";

/// Jobs handed off by a write, each with its dispatcher slot (see [`crate::handoff`]).
pub(super) type Handed = Vec<(DeliveryJob, tokio::sync::OwnedSemaphorePermit)>;

/// Stores an event, numbers it within its key, and creates one delivery per matching webhook
/// (leased and returned as a job while `handoff` has free slots) and broker route.
/// Returns the event and what fan-out made of it.
/// `data_json` is `e.data` serialised, done by the caller: off the writer thread where it can be.
pub(super) fn insert_event_row(
    conn: &Connection,
    routes: &[OutboxRoute],
    e: NewEvent,
    data_json: &str,
    handoff: Option<&Handoff>,
) -> StoreResult<(Event, Fanned)> {
    let tenant = e.tenant.map(|t| t.to_string()).unwrap_or_default();
    let sequence: Option<i64> = match &e.key {
        Some(key) => Some(
            conn.prepare_cached(
                "INSERT INTO event_keys (tenant_id, key, last_sequence) VALUES (?1, ?2, 1) \
                 ON CONFLICT (tenant_id, key) DO UPDATE SET last_sequence = last_sequence + 1 \
                 RETURNING last_sequence",
            )?
            .query_row(params![tenant, key], |r| r.get(0))?,
        ),
        None => None,
    };
    // The feed's position: drawn inside the write, and the writer commits in order.
    let position: i64 = conn
        .prepare_cached("UPDATE feed_counter SET last = last + 1 WHERE id = 1 RETURNING last")?
        .query_row([], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO events (id, tenant_id, type, key, sequence, data, request_hash, created_at, position) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.id.to_string(),
        e.tenant.map(|t| t.to_string()),
        e.event_type,
        e.key,
        sequence,
        data_json,
        e.request_hash,
        e.created_at.0,
        position
    ])?;
    super::feed::appended_in_this_batch(e.tenant);
    let event = SharedEvent::new(rules::stored_event(e, sequence));
    let fanned = fan_out(conn, routes, &event, handoff)?;
    Ok((SharedEvent::into_event(event), fanned))
}

/// What fan-out made of one event.
#[derive(Default)]
pub(super) struct Fanned {
    /// Webhook deliveries, handed off or not.
    pub webhooks: usize,
    /// Broker deliveries (the outbox).
    pub routes: usize,
    /// The webhook deliveries leased for the dispatcher, to hand it once committed.
    pub handed: Handed,
}

/// Stores one of Herald's own events (`webhook.disabled`, `delivery.failed`) in the write
/// that caused it, fanned out like any other.
pub(super) fn raise_event(
    conn: &Connection,
    routes: &[OutboxRoute],
    event: NewEvent,
) -> StoreResult<()> {
    let data_json = serde_json::to_string(&event.data)?;
    insert_event_row(conn, routes, event, &data_json, None)?;
    Ok(())
}

/// Notes one more final failure of `webhook`'s deliveries: `Some(failures)` when it raises
/// `delivery.failed` (see [`rules::coalesce_failure`]).
pub(super) fn note_failure(
    conn: &Connection,
    webhook: herald_core::ids::WebhookId,
    at: herald_core::Timestamp,
) -> StoreResult<Option<i64>> {
    let id = webhook.to_string();
    // A result that arrives after its webhook was deleted raises nothing, and leaves no row.
    let live = conn
        .prepare_cached("SELECT 1 FROM webhooks WHERE id = ?1 AND deleted = 0")?
        .exists(rusqlite::params![id])?;
    if !live {
        return Ok(None);
    }
    let prev = conn
        .prepare_cached("SELECT raised_at, held FROM failure_notices WHERE webhook_id = ?1")?
        .query_row(rusqlite::params![id], |r| {
            Ok(rules::FailureNotice {
                raised_at: r.get(0)?,
                held: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or(rules::FailureNotice {
            raised_at: 0,
            held: 0,
        });
    let (raises, next) = rules::coalesce_failure(prev, at);
    conn.prepare_cached(
        "INSERT INTO failure_notices (webhook_id, raised_at, held) VALUES (?1, ?2, ?3) \
         ON CONFLICT (webhook_id) DO UPDATE SET raised_at = excluded.raised_at, held = excluded.held",
    )?
    .execute(rusqlite::params![id, next.raised_at, next.held])?;
    Ok(raises)
}

/// The live webhooks of one tenant: as fan-out matches them, and whole (for handed-off
/// jobs), in the same order.
pub(super) struct TenantTargets {
    targets: Vec<Target>,
    rows: Vec<Arc<Webhook>>,
}

pub(super) type FanOutTargets = Rc<TenantTargets>;

thread_local! {
    /// The writer's view of each tenant's live webhooks, so fan-out costs no query and no
    /// JSON parse per event. Every write job runs on the writer thread, so this is the
    /// writer's own. Cleared by every webhook write ([`forget_fan_out_targets`]) and
    /// whenever a job or a commit fails, so it never holds state that was not committed.
    static FAN_OUT_TARGETS: RefCell<HashMap<Option<TenantId>, FanOutTargets>> =
        RefCell::new(HashMap::new());
}

/// Drops the cached fan-out targets; called by every write that touches `webhooks`.
pub(super) fn forget_fan_out_targets() {
    FAN_OUT_TARGETS.with(|c| c.borrow_mut().clear());
}

fn fan_out_targets(conn: &Connection, tenant: Option<TenantId>) -> StoreResult<FanOutTargets> {
    if let Some(found) = FAN_OUT_TARGETS.with(|c| c.borrow().get(&tenant).cloned()) {
        return Ok(found);
    }
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id IS ?1 AND deleted = 0 AND disabled = 0"
    );
    let rows = query_all(
        conn,
        &sql,
        vec![tenant.map_or(Arg::Null, |t| Arg::Text(t.to_string()))],
        rows::webhook,
    )?;
    let targets = rows
        .iter()
        .map(|w| Target {
            webhook: w.id.to_string(),
            tenant,
            patterns: Arc::new(w.events.clone()),
            ordered: w.ordering == Ordering::Key,
            filter: w.options.filter.clone().map(Arc::new),
        })
        .collect();
    let rows = rows.into_iter().map(Arc::new).collect();
    let found = Rc::new(TenantTargets { targets, rows });
    FAN_OUT_TARGETS.with(|c| c.borrow_mut().insert(tenant, found.clone()));
    Ok(found)
}

/// The event's deliveries, as [`fanout::plan`] decides them (its tenant's webhooks, then
/// the broker routes: the outbox), inserted in the event's transaction. A webhook
/// delivery that gets a slot of `handoff` is stored leased and returned as a job.
fn fan_out(
    conn: &Connection,
    routes: &[OutboxRoute],
    e: &Arc<SharedEvent>,
    handoff: Option<&Handoff>,
) -> StoreResult<Fanned> {
    let found = fan_out_targets(conn, e.tenant)?;
    let planned = fanout::plan(e, &found.targets, routes);
    let (event_id, tenant) = (e.id.to_string(), e.tenant.map(|t| t.to_string()));
    let mut handed = Vec::new();
    for p in &planned {
        match &p.to {
            To::Webhook {
                webhook,
                ordering_key,
            } => {
                // On an ordered webhook, a delivery behind its key's head is held (no due
                // time) until the head is done (see `crate::lines`); the one writer makes
                // this check exact.
                let held = match ordering_key {
                    Some(key) => conn
                        .prepare_cached(&lines::line_busy_sql("?1", "?2"))?
                        .exists(params![webhook, key])?,
                    None => false,
                };
                let slot = match held {
                    true => None,
                    false => handoff.and_then(|h| h.try_slot().map(|slot| (h.lease(), slot))),
                };
                let lease_until = slot.as_ref().map(|(lease, _)| e.created_at.plus(*lease).0);
                let due = (!held).then_some(e.created_at.0);
                let sequence = ordering_key.as_ref().and(e.sequence);
                conn.prepare_cached(
                    "INSERT INTO deliveries (id, event_id, webhook_id, tenant_id, event_type, event_created_at, status, \
                     next_attempt_at, lease_until, created_at, updated_at, ordering_key, sequence) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?8, ?7, ?6, ?6, ?9, ?10)",
                )?
                .execute(params![
                    p.id.to_string(),
                    event_id,
                    webhook,
                    tenant,
                    e.event_type,
                    e.created_at.0,
                    lease_until,
                    due,
                    ordering_key,
                    sequence
                ])?;
                let row = found.targets.iter().position(|t| t.webhook == *webhook);
                if let (Some((lease, slot)), Some(i)) = (slot, row) {
                    let mut job = fresh_job(p.id, e, &found.rows[i], e.created_at.plus(lease));
                    job.delivery.ordering_key = ordering_key.clone();
                    job.delivery.sequence = sequence;
                    handed.push((job, slot));
                }
            }
            To::Route { name, ordering_key } => {
                conn.prepare_cached(
                    "INSERT INTO deliveries (id, event_id, route, ordering_key, tenant_id, event_type, event_created_at, status, \
                     next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?7, ?7, ?7)",
                )?
                .execute(params![
                    p.id.to_string(),
                    event_id,
                    name,
                    ordering_key,
                    tenant,
                    e.event_type,
                    e.created_at.0
                ])?;
            }
        };
    }
    let webhooks = planned
        .iter()
        .filter(|p| matches!(p.to, To::Webhook { .. }))
        .count();
    Ok(Fanned {
        webhooks,
        routes: planned.len() - webhooks,
        handed,
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn insert_event(
        &self,
        event: NewEvent,
        idem: Option<Idempotency>,
    ) -> StoreResult<Created<Event>> {
        let routes = self.routes();
        let handoff = self.handoff();
        let sink = handoff.clone();
        // Serialised here, in the request's task, not on the single writer thread.
        let data_json = serde_json::to_string(&event.data)?;
        let (created, fanned) = self
            .write(move |conn| {
                if let Some(idem) = &idem {
                    let live = |conn: &Connection, id: &str| found(get_event_row(conn, id));
                    if let Some(existing) = check_idempotency(conn, idem, live)? {
                        return Ok((Created::Existing(existing), Fanned::default()));
                    }
                }
                let prior: Option<String> = conn
                    .prepare_cached("SELECT request_hash FROM events WHERE id = ?1")?
                    .query_row(params![event.id.to_string()], |r| r.get(0))
                    .optional()?;
                if let Some(hash) = prior {
                    if hash != event.request_hash {
                        return Err(StoreError::IdempotencyMismatch);
                    }
                    return Ok((
                        Created::Existing(get_event_row(conn, &event.id.to_string())?),
                        Fanned::default(),
                    ));
                }
                let created_at = event.created_at;
                let (stored, fanned) =
                    insert_event_row(conn, &routes, event, &data_json, handoff.as_ref())?;
                if let Some(idem) = &idem {
                    record_idempotency(conn, idem, &stored.id.to_string(), created_at)?;
                }
                Ok((Created::New(stored), fanned))
            })
            .await?;
        // Only what was not handed off waits for a claim, and only its engine is woken.
        self.signals
            .deliveries_made(fanned.webhooks > fanned.handed.len(), fanned.routes > 0);
        if let (Some(handoff), false) = (&sink, fanned.handed.is_empty()) {
            handoff.hand(fanned.handed);
        }
        Ok(created)
    }

    async fn purge_settled_events(
        &self,
        older_than: Timestamp,
        limit: u32,
    ) -> StoreResult<PurgeReport> {
        self.write_internal(move |conn| {
            // The batch's ids, oldest first; an event some delivery still owes is skipped.
            let ids: Vec<String> = conn
                .prepare_cached(PURGE_PICK)?
                .query_map(params![older_than.0, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok((PurgeReport::default(), 0));
            }
            let ids = serde_json::to_string(&ids)?;
            // Dead heads of ordered lines go with their events: their lines move on.
            let lines_of: Vec<(String, String)> = conn
                .prepare_cached(PURGE_LINES)?
                .query_map(params![ids], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let attempts = conn.prepare_cached(PURGE_ATTEMPTS)?.execute(params![ids])? as u64;
            let deliveries = conn
                .prepare_cached(PURGE_DELIVERIES)?
                .execute(params![ids])? as u64;
            let events = conn.prepare_cached(PURGE_EVENTS)?.execute(params![ids])? as u64;
            let mut released = 0;
            for (webhook, key) in &lines_of {
                released += conn
                    .prepare_cached(&lines::release_line_sql("?1", "?2", "?3"))?
                    .execute(params![webhook, key, older_than.0])?;
            }
            Ok((
                PurgeReport {
                    events,
                    deliveries,
                    attempts,
                },
                released,
            ))
        })
        .await
        .map(|(report, released)| {
            if released > 0 {
                self.signals.deliveries_due.notify_waiters();
            }
            report
        })
    }

    async fn get_event(&self, id: EventId) -> StoreResult<Event> {
        self.read_now(move |conn| get_event_row(conn, &id.to_string()))
    }

    async fn list_events(&self, f: EventFilter) -> StoreResult<Vec<Event>> {
        let q = filter::events(filter::SQLITE, &f);
        self.read(move |conn| query_all(conn, &q.sql, q.args, rows::event))
            .await
    }

    async fn put_event_type(&self, et: EventType) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO event_types (name, schema) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET schema = excluded.schema",
                params![et.name, serde_json::to_string(&et.schema)?],
            )?;
            Ok(())
        })
        .await?;
        self.signals.event_types_changed();
        Ok(())
    }

    async fn list_event_types(&self) -> StoreResult<Vec<EventType>> {
        self.read(|conn| {
            let no_args: Vec<Arg> = Vec::new();
            query_all(
                conn,
                "SELECT name, schema FROM event_types ORDER BY name",
                no_args,
                |row| shared::event_type(row),
            )
        })
        .await
    }
}

/// The job of a delivery just stored leased for the dispatcher: what a claim would have
/// read back.
fn fresh_job(
    id: DeliveryId,
    e: &Arc<SharedEvent>,
    webhook: &Arc<Webhook>,
    lease_until: Timestamp,
) -> DeliveryJob {
    DeliveryJob {
        delivery: Delivery {
            id,
            event_id: e.id,
            destination: Destination::Webhook(webhook.id),
            ordering_key: None,
            sequence: None,
            held_by: None,
            tenant: e.tenant,
            event_type: e.event_type.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            window_attempts: 0,
            next_attempt_at: Some(e.created_at),
            last_status_code: None,
            last_error: None,
            created_at: e.created_at,
            updated_at: e.created_at,
        },
        event: e.clone(),
        webhook: webhook.clone(),
        unsendable: None,
        lease_until,
    }
}
