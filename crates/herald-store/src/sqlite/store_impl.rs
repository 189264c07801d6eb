//! `Store` for SQLite: each method is one write job (group-committed) or one read.

use super::rows::{self, *};
use super::SqliteStore;
use crate::model::*;
use crate::{Signals, Store, StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::operation::{codes, Operation, OperationError, OperationState};
use herald_core::pattern::EventPattern;
use herald_core::Timestamp;
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn text(s: impl ToString) -> Sql {
    Sql::Text(s.to_string())
}

fn opt_text<T: ToString>(s: Option<T>) -> Sql {
    s.map(|s| Sql::Text(s.to_string())).unwrap_or(Sql::Null)
}

/// Lease tokens only need to be unique and hard to guess; a ULID carries 80 random bits.
/// Retention: the batch of settled events older than ?1, at most ?2 of them.
const PURGE_PICK: &str = "SELECT e.id FROM events e WHERE e.created_at < ?1 \
     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
     ORDER BY e.created_at LIMIT ?2";
/// ?1 is a JSON array of event ids.
const PURGE_ATTEMPTS: &str = "DELETE FROM attempts WHERE delivery_id IN \
     (SELECT d.id FROM deliveries d WHERE d.event_id IN (SELECT value FROM json_each(?1)))";
const PURGE_DELIVERIES: &str =
    "DELETE FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?1))";
const PURGE_EVENTS: &str = "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1))";

fn lease_token() -> String {
    format!("lt_{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn get_operation_row(conn: &Connection, id: OperationId) -> StoreResult<Operation> {
    read_operation_row(conn, id, "")
}

/// The operation unless deleted: a deleted operation reads as missing.
fn get_live_operation_row(conn: &Connection, id: OperationId) -> StoreResult<Operation> {
    read_operation_row(conn, id, " AND deleted = 0")
}

fn read_operation_row(conn: &Connection, id: OperationId, filter: &str) -> StoreResult<Operation> {
    let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = ?1{filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id.to_string()])?;
    match rows.next()? {
        Some(row) => rows::operation(row),
        None => Err(StoreError::NotFound),
    }
}

/// The resource an earlier request with `idem`'s key made, if it is still there (`live`
/// reads it; `None` when deleted or purged). A key whose resource is gone is released, so
/// this request makes a new one; one whose resource is there answers with it when the
/// body matches and refuses otherwise.
fn check_idempotency<T>(
    conn: &Connection,
    idem: &Idempotency,
    live: impl FnOnce(&Connection, &str) -> StoreResult<Option<T>>,
) -> StoreResult<Option<T>> {
    let found: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
        )?
        .query_row(params![idem.scope, idem.key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((hash, id)) = found else {
        return Ok(None);
    };
    match live(conn, &id)? {
        Some(_) if hash != idem.request_hash => Err(StoreError::IdempotencyMismatch),
        Some(resource) => Ok(Some(resource)),
        None => {
            conn.prepare_cached("DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2")?
                .execute(params![idem.scope, idem.key])?;
            Ok(None)
        }
    }
}

/// `Ok(None)` for NotFound: the shape `check_idempotency`'s `live` wants.
fn found<T>(read: StoreResult<T>) -> StoreResult<Option<T>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn record_idempotency(
    conn: &Connection,
    idem: &Idempotency,
    resource: &str,
    now: Timestamp,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![idem.scope, idem.key, idem.request_hash, resource, now.0])?;
    Ok(())
}

/// Ends an operation with `outcome` (already in `state`), sets its purge time, and
/// raises its final event in the same transaction.
fn finish_row(
    conn: &Connection,
    routes: &[OutboxRoute],
    op: &Operation,
    now: Timestamp,
) -> StoreResult<()> {
    let (response, code, message) = match &op.state {
        OperationState::Done(herald_core::operation::Outcome::Response(r)) => {
            (Some(serde_json::to_string(r)?), None, None)
        }
        OperationState::Done(herald_core::operation::Outcome::Error(e)) => {
            (None, Some(e.code.clone()), Some(e.message.clone()))
        }
        _ => {
            return Err(StoreError::Backend(
                "finish_row called on an unfinished operation".into(),
            ))
        }
    };
    conn.prepare_cached(
        "UPDATE operations SET state = ?2, response = ?3, error_code = ?4, error_message = ?5, \
         lease_token = NULL, lease_expires_at = NULL, updated_at = ?6, purge_at = ?6 + retention_ms, \
         metadata = ?7 WHERE id = ?1",
    )?
    .execute(params![
        op.id.to_string(),
        op.state.label(),
        response,
        code,
        message,
        now.0,
        serde_json::to_string(&op.metadata)?
    ])?;
    if let Some(event_type) = op.final_event_type() {
        let data = op.to_resource();
        let data_json = serde_json::to_string(&data)?;
        let event = NewEvent {
            id: EventId::generate(),
            tenant: op.tenant,
            event_type,
            key: None,
            request_hash: String::new(),
            data,
            created_at: now,
        };
        insert_event_row(conn, routes, event, &data_json)?;
    }
    Ok(())
}

/// Stores an event, numbers it within its key, and creates one delivery per matching webhook.
/// Returns the event and how many deliveries it made.
/// `data_json` is `e.data` serialised, done by the caller: off the writer thread where it can be.
fn insert_event_row(
    conn: &Connection,
    routes: &[OutboxRoute],
    e: NewEvent,
    data_json: &str,
) -> StoreResult<(Event, usize)> {
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
    conn.prepare_cached(
        "INSERT INTO events (id, tenant_id, type, key, sequence, data, request_hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        e.id.to_string(),
        e.tenant.map(|t| t.to_string()),
        e.event_type,
        e.key,
        sequence,
        data_json,
        e.request_hash,
        e.created_at.0
    ])?;
    let event = Event {
        id: e.id,
        tenant: e.tenant,
        event_type: e.event_type,
        key: e.key,
        sequence,
        data: e.data,
        created_at: e.created_at,
    };
    let fanned = fan_out(conn, &event)? + fan_out_to_routes(conn, routes, &event)?;
    Ok((event, fanned))
}

/// Webhooks that may receive one tenant's events: id and parsed patterns.
type FanOutTargets = Rc<Vec<(String, Vec<EventPattern>)>>;

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
    let mut stmt = conn.prepare_cached(
        "SELECT id, events FROM webhooks WHERE tenant_id IS ?1 AND deleted = 0 AND disabled = 0",
    )?;
    let rows: Vec<(String, String)> = stmt
        .query_map(params![tenant.map(|t| t.to_string())], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut targets = Vec::with_capacity(rows.len());
    for (webhook_id, patterns) in rows {
        let patterns: Vec<String> = serde_json::from_str(&patterns)?;
        // A pattern that no longer parses matches nothing, as before.
        let patterns = patterns
            .iter()
            .filter_map(|p| EventPattern::parse(p).ok())
            .collect();
        targets.push((webhook_id, patterns));
    }
    let targets = Rc::new(targets);
    FAN_OUT_TARGETS.with(|c| c.borrow_mut().insert(tenant, targets.clone()));
    Ok(targets)
}

fn fan_out(conn: &Connection, e: &Event) -> StoreResult<usize> {
    let targets = fan_out_targets(conn, e.tenant)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_id, webhook_id, tenant_id, event_type, event_created_at, status, \
         next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?6, ?6, ?6)",
    )?;
    let mut count = 0;
    let (event_id, tenant) = (e.id.to_string(), e.tenant.map(|t| t.to_string()));
    for (webhook_id, patterns) in targets.iter() {
        if patterns.iter().any(|p| p.matches(&e.event_type)) {
            insert.execute(params![
                DeliveryId::generate().to_string(),
                event_id,
                webhook_id,
                tenant,
                e.event_type,
                e.created_at.0
            ])?;
            count += 1;
        }
    }
    Ok(count)
}

/// The outbox: one delivery per broker route the event matches, in the event's transaction.
fn fan_out_to_routes(conn: &Connection, routes: &[OutboxRoute], e: &Event) -> StoreResult<usize> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_id, route, ordering_key, tenant_id, event_type, event_created_at, status, \
         next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?7, ?7, ?7)",
    )?;
    let mut count = 0;
    for route in routes {
        if !herald_core::pattern::any_matches(&route.events, &e.event_type) {
            continue;
        }
        insert.execute(params![
            DeliveryId::generate().to_string(),
            e.id.to_string(),
            route.name,
            route.key_of(e),
            e.tenant.map(|t| t.to_string()),
            e.event_type,
            e.created_at.0
        ])?;
        count += 1;
    }
    Ok(count)
}

/// A pending route delivery is claimable when no older pending delivery shares its route and key.
const HEAD_OF_LINE: &str =
    "(ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries AS earlier \
     WHERE earlier.route = deliveries.route AND earlier.ordering_key = deliveries.ordering_key \
     AND earlier.status = 'pending' AND earlier.id < deliveries.id))";

fn get_event_row(conn: &Connection, id: &str) -> StoreResult<Event> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id])?;
    match rows.next()? {
        Some(row) => rows::event(row),
        None => Err(StoreError::NotFound),
    }
}

fn get_webhook_row(conn: &Connection, id: &str) -> StoreResult<Webhook> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1 AND deleted = 0");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id])?;
    match rows.next()? {
        Some(row) => rows::webhook(row),
        None => Err(StoreError::NotFound),
    }
}

fn get_delivery_row(conn: &Connection, id: &str) -> StoreResult<Delivery> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id])?;
    match rows.next()? {
        Some(row) => rows::delivery(row),
        None => Err(StoreError::NotFound),
    }
}

fn query_all<T>(
    conn: &Connection,
    sql: &str,
    args: Vec<Sql>,
    map: fn(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// `WHERE` clauses and their arguments, built up from optional filters.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Sql>,
}

impl Where {
    fn add(&mut self, clause: &str, arg: Sql) {
        self.args.push(arg);
        self.clauses
            .push(clause.replace('?', &format!("?{}", self.args.len())));
    }
    fn fixed(&mut self, clause: &str) {
        self.clauses.push(clause.to_owned());
    }
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn signals(&self) -> &Arc<Signals> {
        &self.signals
    }

    async fn create_tenant(&self, tenant: Tenant) -> StoreResult<Tenant> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![tenant.id.to_string(), tenant.name, tenant.created_at.0],
            )?;
            Ok(tenant)
        })
        .await
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT name, created_at FROM tenants WHERE id = ?1",
                params![id.to_string()],
                |r| {
                    Ok(Tenant {
                        id,
                        name: r.get(0)?,
                        created_at: Timestamp(r.get(1)?),
                    })
                },
            )
            .optional()?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn create_key(&self, key: ApiKey) -> StoreResult<()> {
        self.write(move |conn| {
            let (role, tenant) = role_columns(&key.role);
            let (scope_types, scope_tenants) = key.scope.to_columns();
            conn.execute(
                "INSERT INTO api_keys (id, hash, role, tenant_id, created_at, scope_types, scope_tenants) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![key.id.to_string(), key.hash, role, tenant, key.created_at.0, scope_types, scope_tenants],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_key(&self, id: KeyId) -> StoreResult<ApiKey> {
        self.read(move |conn| {
            type KeyRow = (String, String, Option<String>, i64, Option<i64>, Option<String>, Option<String>);
            let row: Option<KeyRow> = conn
                .prepare_cached(
                    "SELECT hash, role, tenant_id, created_at, revoked_at, scope_types, scope_tenants \
                     FROM api_keys WHERE id = ?1",
                )?
                .query_row(params![id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })
                .optional()?;
            let (hash, role, tenant, created_at, revoked_at, scope_types, scope_tenants) =
                row.ok_or(StoreError::NotFound)?;
            Ok(ApiKey {
                id,
                hash,
                role: role_from(&role, tenant)?,
                created_at: Timestamp(created_at),
                revoked: revoked_at.is_some(),
                scope: WorkerScope::from_columns(scope_types, scope_tenants)?,
            })
        })
        .await
    }

    async fn revoke_key(&self, id: KeyId, now: Timestamp) -> StoreResult<()> {
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id.to_string(), now.0],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn count_live_admin_keys(&self) -> StoreResult<u64> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn create_operation(
        &self,
        op: NewOperation,
        idem: Option<Idempotency>,
    ) -> StoreResult<Created<Operation>> {
        let created = self
            .write(move |conn| {
                if let Some(idem) = &idem {
                    let live = |conn: &Connection, id: &str| {
                        found(get_live_operation_row(conn, parse_id(id, OperationId::parse)?))
                    };
                    if let Some(existing) = check_idempotency(conn, idem, live)? {
                        return Ok(Created::Existing(existing));
                    }
                }
                conn.prepare_cached(
                    "INSERT INTO operations (id, tenant_id, type, state, metadata, input, max_attempts, \
                     created_at, updated_at, deadline_at, retention_ms) \
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
                )?
                .execute(params![
                    op.id.to_string(),
                    op.tenant.map(|t| t.to_string()),
                    op.op_type,
                    serde_json::to_string(&op.metadata)?,
                    serde_json::to_string(&op.input)?,
                    op.max_attempts,
                    op.created_at.0,
                    op.deadline_at.map(|t| t.0),
                    ms(op.retention)
                ])?;
                if let Some(idem) = &idem {
                    record_idempotency(conn, idem, &op.id.to_string(), op.created_at)?;
                }
                Ok(Created::New(get_operation_row(conn, op.id)?))
            })
            .await?;
        if created.is_new() {
            self.signals.operations_queued.notify_waiters();
        }
        Ok(created)
    }

    async fn get_operation(&self, id: OperationId) -> StoreResult<Operation> {
        self.read_now(move |conn| get_live_operation_row(conn, id))
    }

    async fn get_operation_for_worker(&self, id: OperationId) -> StoreResult<Operation> {
        // Deleted or not: the client's DELETE does not take the operation from its worker.
        self.read_now(move |conn| get_operation_row(conn, id))
    }

    async fn list_operations(&self, f: OperationFilter) -> StoreResult<Vec<Operation>> {
        self.read(move |conn| {
            let mut w = Where::default();
            w.fixed("deleted = 0");
            if let Some(t) = f.tenant {
                w.add("tenant_id = ?", text(t));
            }
            if let Some(t) = &f.op_type {
                w.add("type = ?", text(t));
            }
            match f.done {
                Some(true) => w.fixed("state IN ('succeeded', 'failed', 'cancelled')"),
                Some(false) => w.fixed("state IN ('queued', 'running')"),
                None => {}
            }
            if let Some(b) = f.before {
                w.add("id < ?", text(b));
            }
            let sql = format!(
                "SELECT {OPERATION_COLUMNS} FROM operations {} ORDER BY id DESC LIMIT {}",
                w.sql(),
                list_limit(f.limit)
            );
            query_all(conn, &sql, w.args, rows::operation)
        })
        .await
    }

    async fn cancel_operation(&self, id: OperationId, now: Timestamp) -> StoreResult<Operation> {
        let routes = self.routes();
        let op = self
            .write(move |conn| {
                let mut op = get_operation_row(conn, id)?;
                match op.state {
                    OperationState::Done(_) => {}
                    OperationState::Queued => {
                        op.state = OperationState::Done(herald_core::operation::Outcome::Error(OperationError::new(
                            codes::CANCELLED,
                            "The operation was cancelled before it started.",
                        )));
                        op.updated_at = now;
                        finish_row(conn, &routes, &op, now)?;
                    }
                    OperationState::Running { .. } => {
                        conn.execute(
                            "UPDATE operations SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
                            params![id.to_string(), now.0],
                        )?;
                        op.cancel_requested = true;
                    }
                }
                Ok(op)
            })
            .await?;
        self.signals.operation_changed(id);
        if op.state.is_done() {
            self.signals.deliveries_due.notify_waiters();
        }
        Ok(op)
    }

    async fn delete_operation(&self, id: OperationId, now: Timestamp) -> StoreResult<()> {
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE operations SET deleted = 1, updated_at = ?2, \
                 purge_at = CASE WHEN state IN ('succeeded', 'failed', 'cancelled') THEN ?2 ELSE purge_at END \
                 WHERE id = ?1 AND deleted = 0",
                params![id.to_string(), now.0],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn claim_operations(&self, claim: ClaimRequest) -> StoreResult<Vec<Operation>> {
        if claim.types.is_empty()
            || claim.max == 0
            || claim.tenants.as_ref().is_some_and(Vec::is_empty)
        {
            return Ok(vec![]);
        }
        let claimed = self
            .write(move |conn| {
                let placeholders: Vec<String> = (0..claim.types.len()).map(|i| format!("?{}", i + 2)).collect();
                // A tenant-scoped worker: only its tenants' operations (never one of no tenant).
                let tenant_clause = match &claim.tenants {
                    Some(tenants) => {
                        let first = claim.types.len() + 2;
                        let marks: Vec<String> = (first..first + tenants.len()).map(|i| format!("?{i}")).collect();
                        format!(" AND tenant_id IN ({})", marks.join(", "))
                    }
                    None => String::new(),
                };
                let sql = format!(
                    "SELECT id FROM operations WHERE state = 'queued' AND type IN ({}){tenant_clause} \
                     ORDER BY created_at LIMIT ?1",
                    placeholders.join(", ")
                );
                let mut args: Vec<Sql> = vec![Sql::Integer(claim.max.min(1000) as i64)];
                args.extend(claim.types.iter().map(text));
                args.extend(claim.tenants.iter().flatten().map(text));
                let ids: Vec<String> = conn
                    .prepare_cached(&sql)?
                    .query_map(params_from_iter(args), |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let expires = claim.now.plus(claim.lease);
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    conn.prepare_cached(
                        "UPDATE operations SET state = 'running', lease_token = ?2, lease_expires_at = ?3, \
                         attempt = attempt + 1, updated_at = ?4 WHERE id = ?1",
                    )?
                    .execute(params![id, lease_token(), expires.0, claim.now.0])?;
                    out.push(get_operation_row(conn, parse_id(&id, OperationId::parse)?)?);
                }
                Ok(out)
            })
            .await?;
        for op in &claimed {
            self.signals.operation_changed(op.id);
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, beat: Heartbeat) -> StoreResult<Operation> {
        let id = beat.id;
        let op = self
            .write(move |conn| {
                let mut op = get_operation_row(conn, beat.id)?;
                match &op.state {
                    OperationState::Running { lease_token, .. } if *lease_token == beat.lease_token => {}
                    OperationState::Done(_) => return Err(StoreError::AlreadyDone),
                    _ => return Err(StoreError::StaleLease),
                }
                if let Some(patch) = beat.metadata {
                    for (k, v) in patch {
                        if k != "type" {
                            op.metadata.insert(k, v);
                        }
                    }
                }
                let expires = beat.now.plus(beat.lease);
                conn.prepare_cached(
                    "UPDATE operations SET metadata = ?2, lease_expires_at = ?3, updated_at = ?4 WHERE id = ?1",
                )?
                .execute(params![beat.id.to_string(), serde_json::to_string(&op.metadata)?, expires.0, beat.now.0])?;
                op.state = OperationState::Running { lease_token: beat.lease_token, lease_expires_at: expires };
                op.updated_at = beat.now;
                Ok(op)
            })
            .await?;
        self.signals.operation_changed(id);
        Ok(op)
    }

    async fn finish_operation(&self, finish: Finish) -> StoreResult<Operation> {
        let id = finish.id;
        let routes = self.routes();
        let op = self
            .write(move |conn| {
                let mut op = get_operation_row(conn, finish.id)?;
                match &op.state {
                    OperationState::Running { lease_token, .. } if *lease_token == finish.lease_token => {}
                    OperationState::Done(_) => return Err(StoreError::AlreadyDone),
                    _ => return Err(StoreError::StaleLease),
                }
                op.updated_at = finish.now;
                match finish.outcome {
                    FinishAs::Complete(response) => {
                        op.metadata.insert("progress_percent".into(), 100.into());
                        op.state = OperationState::Done(herald_core::operation::Outcome::Response(response));
                        finish_row(conn, &routes, &op, finish.now)?;
                    }
                    FinishAs::Fail { error, retryable }
                        if retryable && op.attempt < op.max_attempts && !op.cancel_requested =>
                    {
                        conn.execute(
                            "UPDATE operations SET state = 'queued', lease_token = NULL, lease_expires_at = NULL, \
                             updated_at = ?2 WHERE id = ?1",
                            params![finish.id.to_string(), finish.now.0],
                        )?;
                        tracing::info!(operation = %finish.id, code = %error.code, "retryable failure; operation requeued");
                        op.state = OperationState::Queued;
                    }
                    FinishAs::Fail { error, .. } => {
                        op.state = OperationState::Done(herald_core::operation::Outcome::Error(error));
                        finish_row(conn, &routes, &op, finish.now)?;
                    }
                }
                Ok(op)
            })
            .await?;
        self.signals.operation_changed(id);
        match op.state {
            OperationState::Queued => self.signals.operations_queued.notify_waiters(),
            _ => self.signals.deliveries_due.notify_waiters(),
        }
        Ok(op)
    }

    async fn reap_operations(&self, now: Timestamp) -> StoreResult<ReapReport> {
        let routes = self.routes();
        let (report, changed) = self
            .write_internal(move |conn| {
                let mut report = ReapReport::default();
                let mut changed = Vec::new();
                let expired: Vec<String> = conn
                    .prepare_cached(
                        "SELECT id FROM operations WHERE state = 'running' AND lease_expires_at <= ?1 LIMIT 1000",
                    )?
                    .query_map(params![now.0], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in expired {
                    let mut op = get_operation_row(conn, parse_id(&id, OperationId::parse)?)?;
                    op.updated_at = now;
                    if op.cancel_requested {
                        op.state = OperationState::Done(herald_core::operation::Outcome::Error(OperationError::new(
                            codes::CANCELLED,
                            "The operation was cancelled while running.",
                        )));
                        finish_row(conn, &routes, &op, now)?;
                        report.worker_lost += 1;
                    } else if op.attempt < op.max_attempts {
                        conn.execute(
                            "UPDATE operations SET state = 'queued', lease_token = NULL, lease_expires_at = NULL, \
                             updated_at = ?2 WHERE id = ?1",
                            params![id, now.0],
                        )?;
                        report.requeued += 1;
                    } else {
                        op.state = OperationState::Done(herald_core::operation::Outcome::Error(OperationError::new(
                            codes::WORKER_LOST,
                            format!("The worker's lease expired on each of {} attempts.", op.attempt),
                        )));
                        finish_row(conn, &routes, &op, now)?;
                        report.worker_lost += 1;
                    }
                    changed.push(op.id);
                }
                let late: Vec<String> = conn
                    .prepare_cached(
                        "SELECT id FROM operations WHERE deadline_at <= ?1 AND state IN ('queued', 'running') LIMIT 1000",
                    )?
                    .query_map(params![now.0], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in late {
                    let mut op = get_operation_row(conn, parse_id(&id, OperationId::parse)?)?;
                    op.updated_at = now;
                    op.state = OperationState::Done(herald_core::operation::Outcome::Error(OperationError::new(
                        codes::DEADLINE_EXCEEDED,
                        "The operation did not finish before its deadline.",
                    )));
                    finish_row(conn, &routes, &op, now)?;
                    report.deadline_exceeded += 1;
                    changed.push(op.id);
                }
                report.purged = conn.execute(
                    "DELETE FROM operations WHERE id IN (SELECT id FROM operations WHERE purge_at <= ?1 LIMIT 1000)",
                    params![now.0],
                )? as u64;
                // Idempotency keys answer retries for a day.
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE rowid IN \
                     (SELECT rowid FROM idempotency_keys WHERE created_at <= ?1 LIMIT 1000)",
                    params![now.0 - 86_400_000],
                )?;
                Ok((report, changed))
            })
            .await?;
        for id in changed {
            self.signals.operation_changed(id);
        }
        if report.requeued > 0 {
            self.signals.operations_queued.notify_waiters();
        }
        if report.worker_lost + report.deadline_exceeded > 0 {
            self.signals.deliveries_due.notify_waiters();
        }
        Ok(report)
    }

    async fn next_operation_timer(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            let t: Option<i64> = conn.query_row(
                "SELECT MIN(t) FROM ( \
                   SELECT MIN(lease_expires_at) AS t FROM operations WHERE state = 'running' \
                   UNION ALL SELECT MIN(deadline_at) FROM operations WHERE deadline_at IS NOT NULL AND state IN ('queued', 'running') \
                   UNION ALL SELECT MIN(purge_at) FROM operations WHERE purge_at IS NOT NULL)",
                [],
                |r| r.get(0),
            )?;
            Ok(t.map(Timestamp))
        })
        .await
    }

    async fn insert_event(
        &self,
        event: NewEvent,
        idem: Option<Idempotency>,
    ) -> StoreResult<Created<Event>> {
        let routes = self.routes();
        // Serialised here, in the request's task, not on the single writer thread.
        let data_json = serde_json::to_string(&event.data)?;
        let (created, fanned) = self
            .write(move |conn| {
                if let Some(idem) = &idem {
                    let live = |conn: &Connection, id: &str| found(get_event_row(conn, id));
                    if let Some(existing) = check_idempotency(conn, idem, live)? {
                        return Ok((Created::Existing(existing), 0));
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
                        0,
                    ));
                }
                let created_at = event.created_at;
                let (stored, fanned) = insert_event_row(conn, &routes, event, &data_json)?;
                if let Some(idem) = &idem {
                    record_idempotency(conn, idem, &stored.id.to_string(), created_at)?;
                }
                Ok((Created::New(stored), fanned))
            })
            .await?;
        if fanned > 0 {
            self.signals.deliveries_due.notify_waiters();
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
                return Ok(PurgeReport::default());
            }
            let ids = serde_json::to_string(&ids)?;
            let attempts = conn.prepare_cached(PURGE_ATTEMPTS)?.execute(params![ids])? as u64;
            let deliveries = conn
                .prepare_cached(PURGE_DELIVERIES)?
                .execute(params![ids])? as u64;
            let events = conn.prepare_cached(PURGE_EVENTS)?.execute(params![ids])? as u64;
            Ok(PurgeReport {
                events,
                deliveries,
                attempts,
            })
        })
        .await
    }

    async fn get_event(&self, id: EventId) -> StoreResult<Event> {
        self.read_now(move |conn| get_event_row(conn, &id.to_string()))
    }

    async fn list_events(&self, f: EventFilter) -> StoreResult<Vec<Event>> {
        self.read(move |conn| {
            let mut w = Where::default();
            if let Some(t) = f.tenant {
                w.add("tenant_id = ?", text(t));
            }
            if let Some(t) = &f.event_type {
                w.add("type = ?", text(t));
            }
            if let Some(k) = &f.key {
                w.add("key = ?", text(k));
            }
            if let Some(a) = f.after {
                w.add("id > ?", text(a));
            }
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events {} ORDER BY id ASC LIMIT {}",
                w.sql(),
                list_limit(f.limit)
            );
            query_all(conn, &sql, w.args, rows::event)
        })
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
            let mut stmt =
                conn.prepare_cached("SELECT name, schema FROM event_types ORDER BY name")?;
            let rows: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(name, schema)| {
                    Ok(EventType {
                        name,
                        schema: serde_json::from_str(&schema)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn create_webhook(&self, wh: Webhook) -> StoreResult<Webhook> {
        self.create_webhook_capped(wh, u32::MAX).await
    }

    async fn create_webhook_capped(
        &self,
        wh: Webhook,
        max_per_tenant: u32,
    ) -> StoreResult<Webhook> {
        self.write(move |conn| {
            // The one writer thread runs this count and the insert back to back.
            let live: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM webhooks WHERE tenant_id IS ?1 AND deleted = 0",
                )?
                .query_row(params![wh.tenant.map(|t| t.to_string())], |r| r.get(0))?;
            if live >= i64::from(max_per_tenant) {
                return Err(StoreError::LimitReached);
            }
            forget_fan_out_targets();
            conn.execute(
                "INSERT INTO webhooks (id, tenant_id, url, events, format, secret, secret_version, previous_secret, \
                 previous_secret_until, schedule, max_concurrency, disabled, disabled_reason, description, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    wh.id.to_string(),
                    wh.tenant.map(|t| t.to_string()),
                    wh.url,
                    patterns_json(&wh.events),
                    wh.format.as_str(),
                    wh.secret,
                    wh.secret_version,
                    wh.previous_secret.as_ref().map(|p| p.0.clone()),
                    wh.previous_secret.as_ref().map(|p| p.1 .0),
                    schedule_json(&wh.schedule),
                    wh.max_concurrency,
                    wh.disabled as i64,
                    wh.disabled_reason,
                    wh.description,
                    wh.created_at.0,
                    wh.updated_at.0
                ],
            )?;
            Ok(wh)
        })
        .await
    }

    async fn get_webhook(&self, id: WebhookId) -> StoreResult<Webhook> {
        self.read_now(move |conn| get_webhook_row(conn, &id.to_string()))
    }

    async fn list_webhooks(&self, f: WebhookFilter) -> StoreResult<Vec<Webhook>> {
        self.read(move |conn| {
            let mut w = Where::default();
            w.fixed("deleted = 0");
            if !f.all_tenants {
                w.add("tenant_id IS ?", opt_text(f.tenant));
            }
            if let Some(a) = f.after {
                w.add("id > ?", text(a));
            }
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks {} ORDER BY id ASC LIMIT {}",
                w.sql(),
                list_limit(f.limit)
            );
            query_all(conn, &sql, w.args, rows::webhook)
        })
        .await
    }

    async fn update_webhook(
        &self,
        id: WebhookId,
        change: WebhookChange,
        now: Timestamp,
    ) -> StoreResult<Webhook> {
        let out = self
            .write(move |conn| {
                let before = get_webhook_row(conn, &id.to_string())?;
                let wh = change.apply(before.clone(), now)?;
                forget_fan_out_targets();
                conn.execute(
                    "UPDATE webhooks SET url = ?2, events = ?3, format = ?4, secret = ?5, secret_version = ?6, \
                     previous_secret = ?7, previous_secret_until = ?8, schedule = ?9, max_concurrency = ?10, \
                     disabled = ?11, disabled_reason = ?12, description = ?13, updated_at = ?14 WHERE id = ?1",
                    params![
                        wh.id.to_string(),
                        wh.url,
                        patterns_json(&wh.events),
                        wh.format.as_str(),
                        wh.secret,
                        wh.secret_version,
                        wh.previous_secret.as_ref().map(|p| p.0.clone()),
                        wh.previous_secret.as_ref().map(|p| p.1 .0),
                        schedule_json(&wh.schedule),
                        wh.max_concurrency,
                        wh.disabled as i64,
                        wh.disabled_reason,
                        wh.description,
                        now.0
                    ],
                )?;
                if before.disabled != wh.disabled {
                    // Disabled: pending deliveries wait (no due time). Enabled: they are due now.
                    let next = if wh.disabled { Sql::Null } else { Sql::Integer(now.0) };
                    conn.execute(
                        "UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?3 WHERE webhook_id = ?1 AND status = 'pending'",
                        params![wh.id.to_string(), next, now.0],
                    )?;
                }
                Ok(wh)
            })
            .await?;
        if !out.disabled {
            self.signals.deliveries_due.notify_waiters();
        }
        Ok(out)
    }

    async fn delete_webhook(&self, id: WebhookId, now: Timestamp) -> StoreResult<()> {
        self.write(move |conn| {
            forget_fan_out_targets();
            let n = conn.execute(
                "UPDATE webhooks SET deleted = 1, updated_at = ?2 WHERE id = ?1 AND deleted = 0",
                params![id.to_string(), now.0],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            conn.execute(
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted', \
                 updated_at = ?2 WHERE webhook_id = ?1 AND status = 'pending'",
                params![id.to_string(), now.0],
            )?;
            Ok(())
        })
        .await
    }

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
                   AND (lease_until IS NULL OR lease_until <= ?2) ORDER BY next_attempt_at LIMIT ?3) \
                 RETURNING {DELIVERY_COLUMNS}"
            );
            let deliveries = query_all(
                conn,
                &sql,
                vec![Sql::Integer(now.plus(lease).0), Sql::Integer(now.0), Sql::Integer(limit.clamp(1, 5000) as i64)],
                rows::delivery,
            )?;
            let mut webhooks: HashMap<WebhookId, Option<Webhook>> = HashMap::new();
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
                            Ok(w) => Some(w),
                            Err(StoreError::NotFound) => None,
                            Err(e) => return Err(e),
                        };
                        webhooks.insert(webhook_id, w.clone());
                        w
                    }
                };
                let event = match get_event_row(conn, &d.event_id.to_string()) {
                    Ok(e) => Some(e),
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(e),
                };
                match (webhook, event) {
                    (Some(webhook), Some(event)) => {
                        jobs.push(DeliveryJob { delivery: d, event, webhook, unsendable: None })
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
        self.write_internal(move |conn| {
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
                let (status, next): (&str, Option<i64>) = match r.outcome {
                    AttemptOutcome::Succeeded => ("succeeded", None),
                    AttemptOutcome::RetryAt(t) => ("pending", Some(t.0)),
                    AttemptOutcome::Failed => ("failed", None),
                    AttemptOutcome::Deferred(t) => ("pending", Some(t.0)),
                };
                // A retry for a webhook disabled meanwhile (say by a 410 to another delivery) waits
                // with no due time, like every pending delivery of a disabled webhook.
                if counted == 1 {
                    conn.prepare_cached(
                        "UPDATE deliveries SET status = ?2, lease_until = NULL, \
                         next_attempt_at = CASE WHEN (SELECT disabled FROM webhooks WHERE id = deliveries.webhook_id) = 1 \
                           THEN NULL ELSE ?3 END, \
                         attempts = attempts + 1, window_attempts = window_attempts + 1, last_status_code = ?4, \
                         last_error = ?5, updated_at = ?6 WHERE id = ?1",
                    )?
                    .execute(params![id, status, next, code, error, at.0])?;
                } else {
                    conn.prepare_cached(
                        "UPDATE deliveries SET status = ?2, lease_until = NULL, \
                         next_attempt_at = CASE WHEN (SELECT disabled FROM webhooks WHERE id = deliveries.webhook_id) = 1 \
                           THEN NULL ELSE ?3 END WHERE id = ?1",
                    )?
                    .execute(params![id, status, next])?;
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
                    conn.execute(
                        "UPDATE webhooks SET disabled = 1, disabled_reason = ?2, updated_at = ?3 WHERE id = ?1",
                        params![webhook.to_string(), reason, at.0],
                    )?;
                    conn.execute(
                        "UPDATE deliveries SET next_attempt_at = NULL WHERE webhook_id = ?1 AND status = 'pending'",
                        params![webhook.to_string()],
                    )?;
                }
            }
            Ok(())
        })
        .await?;
        // A retry may now be the earliest due delivery: let the dispatcher re-plan its sleep.
        self.signals.deliveries_due.notify_waiters();
        Ok(())
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            let t: Option<i64> = conn.query_row(
                "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM deliveries \
                 WHERE status = 'pending' AND route IS NULL AND next_attempt_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(t.map(Timestamp))
        })
        .await
    }

    async fn list_deliveries(&self, f: DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        self.read(move |conn| {
            let mut w = Where::default();
            if let Some(t) = f.tenant {
                w.add("tenant_id = ?", text(t));
            }
            if let Some(wh) = f.webhook {
                w.add("webhook_id = ?", text(wh));
            }
            if let Some(r) = &f.route {
                w.add("route = ?", text(r));
            }
            if f.webhooks_only {
                w.fixed("webhook_id IS NOT NULL");
            }
            if let Some(s) = f.status {
                w.add("status = ?", text(s.as_str()));
            }
            if let Some(t) = &f.event_type {
                w.add("event_type = ?", text(t));
            }
            if let Some(t) = f.since {
                w.add("created_at >= ?", Sql::Integer(t.0));
            }
            if let Some(t) = f.until {
                w.add("created_at < ?", Sql::Integer(t.0));
            }
            if let Some(b) = f.before {
                w.add("id < ?", text(b));
            }
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries {} ORDER BY id DESC LIMIT {}",
                w.sql(),
                list_limit(f.limit)
            );
            query_all(conn, &sql, w.args, rows::delivery)
        })
        .await
    }

    async fn get_delivery(&self, id: DeliveryId) -> StoreResult<(Delivery, Vec<Attempt>)> {
        self.read(move |conn| {
            let d = get_delivery_row(conn, &id.to_string())?;
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
                get_delivery_row(conn, &id.to_string())
            })
            .await?;
        self.signals.deliveries_due.notify_waiters();
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
                let looked_at: Vec<(String, i64)> = conn
                    .prepare_cached(
                        "SELECT id, event_created_at FROM deliveries \
                         WHERE webhook_id = ?1 AND webhook_id IS NOT NULL AND event_created_at >= ?2 \
                         AND event_created_at < ?3 AND (event_created_at > ?2 OR id > ?4) \
                         ORDER BY event_created_at, id LIMIT ?5",
                    )?
                    .query_map(
                        params![r.webhook.to_string(), from_at, r.until.0, from_id, limit],
                        |row| Ok((row.get(0)?, row.get(1)?)),
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
                for (id, _) in &looked_at {
                    replayed += update.execute(params![id, next, r.now.0])? as u64;
                }
                let next = match looked_at.last() {
                    Some((id, at)) if looked_at.len() == limit as usize => Some(ReplayCursor {
                        event_created_at: Timestamp(*at),
                        delivery: parse_id(id, DeliveryId::parse)?,
                    }),
                    _ => None,
                };
                Ok(ReplayBatch { replayed, next })
            })
            .await?;
        if batch.replayed > 0 {
            self.signals.deliveries_due.notify_waiters();
        }
        Ok(batch)
    }

    async fn state_counts(&self, tenant: Option<TenantId>) -> StoreResult<StateCounts> {
        self.read(move |conn| {
            let mut ops = Where::default();
            ops.fixed("deleted = 0");
            let mut dls = Where::default();
            if let Some(t) = tenant {
                ops.add("tenant_id = ?", text(t));
                // A tenant's view counts its webhooks' deliveries; routes are the operator's.
                dls.add("tenant_id = ?", text(t));
                dls.fixed("route IS NULL");
            }
            let count = |row: &rusqlite::Row<'_>| -> StoreResult<(String, u64)> {
                Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64))
            };
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
            let mut w = Where::default();
            w.add("a.at >= ?", Sql::Integer(f.since.0));
            w.add("a.at < ?", Sql::Integer(f.until.0));
            if let Some(t) = f.tenant {
                w.add("d.tenant_id = ?", text(t));
                w.fixed("d.route IS NULL");
            }
            let sql = format!(
                "SELECT d.webhook_id, d.route, a.at, a.status_code, a.latency_ms, a.error \
                 FROM attempts a JOIN deliveries d ON d.id = a.delivery_id {} \
                 ORDER BY a.at DESC LIMIT {limit}",
                w.sql()
            );
            let mut attempts = query_all(conn, &sql, w.args, |row| {
                Ok(AttemptSample {
                    destination: crate::model::destination_of(row.get(0)?, row.get(1)?)?,
                    at: Timestamp(row.get(2)?),
                    status_code: row.get::<_, Option<i64>>(3)?.map(|c| c as u16),
                    latency_ms: row.get::<_, i64>(4)?.max(0) as u64,
                    error: row.get(5)?,
                })
            })?;
            attempts.reverse();

            // Pending at some instant of the window: created before its end, and either
            // still pending or last changed after its start.
            let mut w = Where::default();
            w.add("created_at < ?", Sql::Integer(f.until.0));
            w.add(
                "(status = 'pending' OR updated_at >= ?)",
                Sql::Integer(f.since.0),
            );
            if let Some(t) = f.tenant {
                w.add("tenant_id = ?", text(t));
                w.fixed("route IS NULL");
            }
            let sql = format!(
                "SELECT created_at, status, updated_at FROM deliveries {} \
                 ORDER BY created_at DESC LIMIT {limit}",
                w.sql()
            );
            let mut deliveries = query_all(conn, &sql, w.args, |row| {
                let status: String = row.get(1)?;
                Ok(DeliverySpan {
                    created_at: Timestamp(row.get(0)?),
                    status: DeliveryStatus::parse(&status).ok_or_else(|| {
                        StoreError::Backend(format!("bad delivery status {status:?}"))
                    })?,
                    updated_at: Timestamp(row.get(2)?),
                })
            })?;
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
