//! [`EventStore`] for PostgreSQL: `insert_event` goes through the group-committing event
//! writer; an operation's final event is stored in the operation's own transaction.

use super::rows::{self, *};
use super::sql::*;
use super::PgStore;
use crate::fanout::{self, Target, To};
use crate::filter::{self};
use crate::lines;
use crate::model::*;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::webhook::Ordering;
use herald_core::Timestamp;
use std::sync::Arc;

/// Stores an event, numbers it within its key, and creates one delivery per matching webhook.
/// Notes one more final failure of `webhook`'s deliveries: `Some(failures)` when it raises
/// `delivery.failed` (see [`rules::coalesce_failure`]). The row is locked for the rest of
/// the transaction, so two nodes recording failures of one webhook at once raise one.
pub(super) async fn note_failure(
    tx: &Transaction<'_>,
    webhook: herald_core::ids::WebhookId,
    at: herald_core::Timestamp,
) -> StoreResult<Option<i64>> {
    let id = webhook.to_string();
    // A result that arrives after its webhook was deleted raises nothing, and leaves no row.
    let live = query_opt(
        tx,
        "SELECT 1 FROM webhooks WHERE id = $1 AND NOT deleted",
        &[&id],
    )
    .await?;
    if live.is_none() {
        return Ok(None);
    }
    execute(
        tx,
        "INSERT INTO failure_notices (webhook_id, raised_at, held) VALUES ($1, 0, 0) \
         ON CONFLICT (webhook_id) DO NOTHING",
        &[&id],
    )
    .await?;
    let row = query_opt(
        tx,
        "SELECT raised_at, held FROM failure_notices WHERE webhook_id = $1 FOR UPDATE",
        &[&id],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    let prev = crate::rules::FailureNotice {
        raised_at: row.get(0),
        held: row.get(1),
    };
    let (raises, next) = crate::rules::coalesce_failure(prev, at);
    execute(
        tx,
        "UPDATE failure_notices SET raised_at = $2, held = $3 WHERE webhook_id = $1",
        &[&id, &next.raised_at, &next.held],
    )
    .await?;
    Ok(raises)
}

pub(super) async fn insert_event_row(
    tx: &Transaction<'_>,
    routes: &[OutboxRoute],
    e: &NewEvent,
) -> StoreResult<(Event, usize)> {
    let tenant = e.tenant.map(|t| t.to_string());
    let sequence: Option<i64> = match &e.key {
        // The row lock on (tenant, key) is held to commit, so sequences commit in order.
        Some(key) => Some(
            query(
                tx,
                "INSERT INTO event_keys (tenant_id, key, last_sequence) VALUES ($1, $2, 1) \
                 ON CONFLICT (tenant_id, key) DO UPDATE SET last_sequence = event_keys.last_sequence + 1 \
                 RETURNING last_sequence",
                &[&tenant.clone().unwrap_or_default(), key],
            )
            .await?[0]
                .try_get(0)?,
        ),
        None => None,
    };
    execute(
        tx,
        "INSERT INTO events (id, tenant_id, type, key, sequence, data, request_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &e.id.to_string(),
            &tenant,
            &e.event_type,
            &e.key,
            &sequence,
            &serde_json::to_string(&e.data)?,
            &e.request_hash,
            &e.created_at.0,
        ],
    )
    .await?;
    let event = rules::stored_event(e.clone(), sequence);
    let fanned = fan_out(tx, routes, &event).await?;
    Ok((event, fanned))
}

/// The event's deliveries, as [`fanout::plan`] decides them: its tenant's live webhooks
/// (one statement), then the broker routes (the outbox), in the event's transaction.
/// `line_seq` (a sequence) orders a key's route deliveries across nodes: the event's
/// per-key row lock is held to commit, so a later event of the key always draws a larger
/// number.
async fn fan_out(tx: &Transaction<'_>, routes: &[OutboxRoute], e: &Event) -> StoreResult<usize> {
    let tenant = e.tenant.map(|t| t.to_string());
    let mut targets = Vec::new();
    for row in query(
        tx,
        "SELECT id, events, ordering, filter FROM webhooks WHERE tenant_id IS NOT DISTINCT FROM $1 AND NOT deleted AND NOT disabled",
        &[&tenant],
    )
    .await?
    {
        let ordering: Option<String> = row.try_get(2)?;
        targets.push(Target {
            webhook: row.try_get(0)?,
            tenant: e.tenant,
            patterns: Arc::new(fanout::parse_patterns(&row.try_get::<_, String>(1)?)?),
            ordered: ordering.as_deref() == Some(Ordering::Key.as_str()),
            filter: crate::rows::filter_of(row.try_get(3)?)?.map(Arc::new),
        });
    }
    let planned = fanout::plan(e, &targets, routes);
    let (mut delivery_ids, mut webhook_ids, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for p in &planned {
        if let To::Webhook {
            webhook,
            ordering_key,
        } = &p.to
        {
            delivery_ids.push(p.id.to_string());
            webhook_ids.push(*webhook);
            keys.push(ordering_key.clone());
        }
    }
    if !webhook_ids.is_empty() {
        // An ordered webhook's delivery is stored held (no due time) with its key and
        // sequence, then made due if it heads its line (see `crate::lines`).
        execute(
            tx,
            "INSERT INTO deliveries (id, event_id, webhook_id, tenant_id, event_type, event_created_at, status, \
             next_attempt_at, created_at, updated_at, ordering_key, sequence) \
             SELECT d, $3, w, $4, $5, $6::int8, 'pending', CASE WHEN k IS NULL THEN $6::int8 END, $6::int8, $6::int8, k, \
               CASE WHEN k IS NOT NULL THEN $7::int8 END \
             FROM unnest($1::text[], $2::text[], $8::text[]) AS u(d, w, k)",
            &[
                &delivery_ids,
                &webhook_ids,
                &e.id.to_string(),
                &tenant,
                &e.event_type,
                &e.created_at.0,
                &e.sequence,
                &keys,
            ],
        )
        .await?;
        if keys.iter().any(Option::is_some) {
            execute(
                tx,
                &format!(
                    "UPDATE deliveries SET next_attempt_at = event_created_at WHERE id = ANY($1) \
                     AND ordering_key IS NOT NULL AND {} AND {}",
                    lines::WEBHOOK_HEAD,
                    lines::WEBHOOK_LIVE
                ),
                &[&delivery_ids],
            )
            .await?;
        }
    }
    for p in &planned {
        let To::Route { name, ordering_key } = &p.to else {
            continue;
        };
        execute(
            tx,
            "INSERT INTO deliveries (id, event_id, route, ordering_key, tenant_id, event_type, event_created_at, \
             status, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $7, $7, $7)",
            &[
                &p.id.to_string(),
                &e.id.to_string(),
                name,
                ordering_key,
                &tenant,
                &e.event_type,
                &e.created_at.0,
            ],
        )
        .await?;
    }
    Ok(planned.len())
}

#[async_trait]
impl EventStore for PgStore {
    async fn insert_event(
        &self,
        event: NewEvent,
        idem: Option<Idempotency>,
    ) -> StoreResult<Created<Event>> {
        // Group commit: the event is stored in a batch with whatever else is queued.
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.events.submit(super::event_writer::EventJob {
            event,
            idempotency: idem,
            routes: self.routes(),
            reply,
        })?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the event writer has stopped".into()))?
    }

    async fn get_event(&self, id: EventId) -> StoreResult<Event> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        match self.read_one(&sql, &[&id.to_string()]).await? {
            Some(row) => rows::event(&row),
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_events(&self, f: EventFilter) -> StoreResult<Vec<Event>> {
        let q = filter::events(filter::POSTGRES, &f);
        self.read_all(&q.sql, &refs(&pg_args(q.args)), rows::event)
            .await
    }

    async fn put_event_type(&self, et: EventType) -> StoreResult<()> {
        in_tx!(self, |tx, wake| {
            execute(
                &tx,
                "INSERT INTO event_types (name, schema) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET schema = excluded.schema",
                &[&et.name, &serde_json::to_string(&et.schema)?],
            )
            .await?;
            // Every node's cached schemas are reloaded.
            wake.event_types = true;
        });
        Ok(())
    }

    async fn list_event_types(&self) -> StoreResult<Vec<EventType>> {
        let rows = in_tx!(self, |tx, wake| {
            query(
                &tx,
                "SELECT name, schema FROM event_types ORDER BY name",
                &[],
            )
            .await?
        });
        map_rows(rows, rows::event_type)
    }

    async fn purge_settled_events(
        &self,
        older_than: Timestamp,
        limit: u32,
    ) -> StoreResult<PurgeReport> {
        in_tx!(self, |tx, wake| {
            // The batch's ids, oldest first; an event some delivery still owes is skipped.
            let ids: Vec<String> = query(
                &tx,
                "SELECT e.id FROM events e WHERE e.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
                 ORDER BY e.created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&older_than.0, &(limit.clamp(1, 10_000) as i64)],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(Ok(PurgeReport::default()));
            }
            // Dead heads of ordered lines go with their events: their lines move on.
            let lines_of: Vec<(String, String)> = query(
                &tx,
                "SELECT DISTINCT webhook_id, ordering_key FROM deliveries WHERE event_id = ANY($1) \
                 AND webhook_id IS NOT NULL AND ordering_key IS NOT NULL AND status = 'failed'",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<StoreResult<_>>()?;
            let attempts = tx
                .execute(
                    "DELETE FROM attempts WHERE delivery_id IN \
                     (SELECT id FROM deliveries WHERE event_id = ANY($1))",
                    &[&ids],
                )
                .await?;
            let deliveries = tx
                .execute("DELETE FROM deliveries WHERE event_id = ANY($1)", &[&ids])
                .await?;
            let events = tx
                .execute("DELETE FROM events WHERE id = ANY($1)", &[&ids])
                .await?;
            for (webhook, key) in &lines_of {
                let n = execute(
                    &tx,
                    &lines::release_line_sql("$1", "$2", "$3"),
                    &[webhook, key, &older_than.0],
                )
                .await?;
                wake.due |= n > 0;
            }
            Ok(PurgeReport {
                events,
                deliveries,
                attempts,
            })
        })
    }
}
