//! `Store` for PostgreSQL: each method is one transaction; claims lock with
//! `FOR UPDATE SKIP LOCKED`, so nodes never wait for (or take) each other's rows.

use super::rows::{self, *};
use super::{is_transient, Note, PgStore};
use crate::model::*;
use crate::sqlite::rows::parse_id;
use crate::{Signals, Store, StoreError, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::operation::{codes, Operation, OperationError, OperationState, Outcome};
use herald_core::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

type Param<'a> = &'a (dyn ToSql + Sync);
type Owned = Box<dyn ToSql + Sync + Send>;

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn lease_token() -> String {
    format!("lt_{}", ulid::Ulid::new().to_string().to_lowercase())
}

async fn query(tx: &Transaction<'_>, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, params).await?)
}

async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<Option<Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&stmt, params).await?)
}

async fn execute(tx: &Transaction<'_>, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, params).await?)
}

fn refs(args: &[Owned]) -> Vec<Param<'_>> {
    args.iter().map(|a| a.as_ref() as Param<'_>).collect()
}

/// `WHERE` clauses and their arguments, built up from optional filters.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Owned>,
}

impl Where {
    fn add(&mut self, clause: &str, arg: Owned) {
        self.args.push(arg);
        self.clauses
            .push(clause.replace('?', &format!("${}", self.args.len())));
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

/// Wake-ups a transaction owes: fired locally once it has committed, and passed to the
/// node's notifier, which tells the other nodes (see [`super::Note`]).
#[derive(Default)]
struct Wake {
    changed: Vec<OperationId>,
    queued: bool,
    due: bool,
    event_types: bool,
}

impl Wake {
    fn fire(&self, signals: &Signals, notes: &tokio::sync::mpsc::UnboundedSender<Note>) {
        for id in &self.changed {
            signals.operation_changed(*id);
            let _ = notes.send(Note::Changed(*id));
        }
        if self.queued {
            signals.operations_queued.notify_waiters();
            let _ = notes.send(Note::Queued);
        }
        if self.due {
            signals.deliveries_due.notify_waiters();
            let _ = notes.send(Note::Due);
        }
        if self.event_types {
            signals.event_types_changed();
            let _ = notes.send(Note::EventTypes);
        }
    }
}

async fn get_operation_row(
    tx: &Transaction<'_>,
    id: OperationId,
    for_update: bool,
) -> StoreResult<Operation> {
    let sql = format!(
        "SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1{}",
        if for_update { " FOR UPDATE" } else { "" }
    );
    match query_opt(tx, &sql, &[&id.to_string()]).await? {
        Some(row) => rows::operation(&row),
        None => Err(StoreError::NotFound),
    }
}

/// Records `idem` for the operation `op`, or finds the operation an earlier identical
/// request made. A concurrent request with the same key waits here until the first commits.
/// A key whose operation is gone (deleted by its client, or purged) is released: it is
/// given to `op`, and the caller makes it.
async fn claim_idempotency(
    tx: &Transaction<'_>,
    idem: &Idempotency,
    op: OperationId,
    now: Timestamp,
) -> StoreResult<Option<Operation>> {
    let resource = op.to_string();
    let inserted = execute(
        tx,
        "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
        &[
            &idem.scope,
            &idem.key,
            &idem.request_hash,
            &resource,
            &now.0,
        ],
    )
    .await?;
    if inserted == 1 {
        return Ok(None);
    }
    // Locked: two retries that both find the operation gone take the key one at a time,
    // and the second finds the first's operation.
    let row = query_opt(
        tx,
        "SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = $1 AND key = $2 FOR UPDATE",
        &[&idem.scope, &idem.key],
    )
    .await?
    .ok_or_else(|| StoreError::Backend("idempotency key vanished".into()))?;
    let hash: String = row.try_get(0)?;
    let earlier = parse_id(&row.try_get::<_, String>(1)?, OperationId::parse)?;
    let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1 AND NOT deleted");
    match query_opt(tx, &sql, &[&earlier.to_string()]).await? {
        Some(_) if hash != idem.request_hash => Err(StoreError::IdempotencyMismatch),
        Some(row) => Ok(Some(rows::operation(&row)?)),
        None => {
            execute(
                tx,
                "UPDATE idempotency_keys SET request_hash = $3, resource_id = $4, created_at = $5 \
                 WHERE scope = $1 AND key = $2",
                &[
                    &idem.scope,
                    &idem.key,
                    &idem.request_hash,
                    &resource,
                    &now.0,
                ],
            )
            .await?;
            Ok(None)
        }
    }
}

/// Ends an operation (already in its final `state`), sets its purge time, and raises its
/// final event in the same transaction. Returns how many deliveries that event made.
async fn finish_row(
    tx: &Transaction<'_>,
    routes: &[OutboxRoute],
    op: &Operation,
    now: Timestamp,
) -> StoreResult<usize> {
    let (response, code, message) = match &op.state {
        OperationState::Done(Outcome::Response(r)) => (Some(serde_json::to_string(r)?), None, None),
        OperationState::Done(Outcome::Error(e)) => {
            (None, Some(e.code.clone()), Some(e.message.clone()))
        }
        _ => {
            return Err(StoreError::Backend(
                "finish_row called on an unfinished operation".into(),
            ))
        }
    };
    execute(
        tx,
        "UPDATE operations SET state = $2, response = $3, error_code = $4, error_message = $5, \
         lease_token = NULL, lease_expires_at = NULL, updated_at = $6, purge_at = $6 + retention_ms, \
         metadata = $7 WHERE id = $1",
        &[
            &op.id.to_string(),
            &op.state.label(),
            &response,
            &code,
            &message,
            &now.0,
            &serde_json::to_string(&op.metadata)?,
        ],
    )
    .await?;
    let mut fanned = 0;
    if let Some(event_type) = op.final_event_type() {
        let event = NewEvent {
            id: EventId::generate(),
            tenant: op.tenant,
            event_type,
            key: None,
            request_hash: String::new(),
            data: op.to_resource(),
            created_at: now,
        };
        fanned = insert_event_row(tx, routes, &event).await?.1;
    }
    Ok(fanned)
}

/// Stores an event, numbers it within its key, and creates one delivery per matching webhook.
async fn insert_event_row(
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
    let event = Event {
        id: e.id,
        tenant: e.tenant,
        event_type: e.event_type.clone(),
        key: e.key.clone(),
        sequence,
        data: e.data.clone(),
        created_at: e.created_at,
    };
    let fanned = fan_out(tx, e).await? + fan_out_to_routes(tx, routes, &event).await?;
    Ok((event, fanned))
}

async fn fan_out(tx: &Transaction<'_>, e: &NewEvent) -> StoreResult<usize> {
    let tenant = e.tenant.map(|t| t.to_string());
    let targets = query(
        tx,
        "SELECT id, events FROM webhooks WHERE tenant_id IS NOT DISTINCT FROM $1 AND NOT deleted AND NOT disabled",
        &[&tenant],
    )
    .await?;
    let mut webhook_ids = Vec::new();
    for row in targets {
        let patterns: String = row.try_get(1)?;
        let patterns: Vec<String> = serde_json::from_str(&patterns)?;
        let matched = patterns.iter().any(|p| {
            herald_core::pattern::EventPattern::parse(p)
                .map(|p| p.matches(&e.event_type))
                .unwrap_or(false)
        });
        if matched {
            webhook_ids.push(row.try_get::<_, String>(0)?);
        }
    }
    if webhook_ids.is_empty() {
        return Ok(0);
    }
    let delivery_ids: Vec<String> = webhook_ids
        .iter()
        .map(|_| DeliveryId::generate().to_string())
        .collect();
    execute(
        tx,
        "INSERT INTO deliveries (id, event_id, webhook_id, tenant_id, event_type, event_created_at, status, \
         next_attempt_at, created_at, updated_at) \
         SELECT d, $3, w, $4, $5, $6, 'pending', $6, $6, $6 FROM unnest($1::text[], $2::text[]) AS u(d, w)",
        &[
            &delivery_ids,
            &webhook_ids,
            &e.id.to_string(),
            &tenant,
            &e.event_type,
            &e.created_at.0,
        ],
    )
    .await?;
    Ok(webhook_ids.len())
}

/// The outbox: one delivery per broker route the event matches, in the event's transaction.
/// `line_seq` (a sequence) orders a key's deliveries across nodes: the event's per-key row
/// lock is held to commit, so a later event of the key always draws a larger number.
async fn fan_out_to_routes(
    tx: &Transaction<'_>,
    routes: &[OutboxRoute],
    e: &Event,
) -> StoreResult<usize> {
    let mut count = 0;
    for route in routes {
        if !herald_core::pattern::any_matches(&route.events, &e.event_type) {
            continue;
        }
        execute(
            tx,
            "INSERT INTO deliveries (id, event_id, route, ordering_key, tenant_id, event_type, event_created_at, \
             status, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $7, $7, $7)",
            &[
                &DeliveryId::generate().to_string(),
                &e.id.to_string(),
                &route.name,
                &route.key_of(e),
                &e.tenant.map(|t| t.to_string()),
                &e.event_type,
                &e.created_at.0,
            ],
        )
        .await?;
        count += 1;
    }
    Ok(count)
}

/// Runs a claim (`… ORDER BY next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED`) with sorting
/// made a last resort for this transaction, so the due-time index is walked in order and
/// the scan stops after n rows. Left to its statistics, the planner sorts every pending
/// delivery whenever it believes there are few of them (a young or never-analyzed table,
/// e.g. the first minute of a burst): 85 ms per claim of 257 at 40,000 pending, spilling
/// the sort to disk, against well under 10 ms by the index.
///
/// A claim also commits without waiting for its WAL flush (`synchronous_commit = off`).
/// A claim only sets a lease, and losing one costs no more than a repeated attempt: if the
/// server crashes before the flush, the deliveries come back unleased and are claimed and
/// sent again, which at-least-once delivery allows. Nothing acknowledged depends on it:
/// the attempt's result commits synchronously, and its flush takes the claim's WAL with it
/// (the log is written in order). It saves a WAL flush per claim, which on a busy server is
/// a large share of a claim's time and of the flushes other commits queue behind.
///
/// The `SET`s go out in the same round trip as the claim (pipelined) and end with the
/// transaction.
async fn claim_in_due_order(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<Vec<Row>> {
    // force_custom_plan: the claim is a prepared statement, and its generic plan, made
    // while `deliveries` has no statistics (a new database, until autovacuum's first
    // ANALYZE), is a sequential scan of the whole table for `id = ANY(…)`, which each
    // pooled connection then keeps: every claim cost time in proportion to the table.
    let no_sort = async {
        tx.batch_execute(
            "SET LOCAL enable_sort = off; SET LOCAL synchronous_commit = off; \
             SET LOCAL plan_cache_mode = force_custom_plan",
        )
        .await
        .map_err(StoreError::from)
    };
    let (_, rows) = futures::try_join!(no_sort, query(tx, sql, params))?;
    Ok(rows)
}

/// A pending route delivery is claimable when no older pending delivery shares its route and key.
const HEAD_OF_LINE: &str =
    "(d.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries AS earlier \
     WHERE earlier.route = d.route AND earlier.ordering_key = d.ordering_key \
     AND earlier.status = 'pending' AND earlier.line_seq < d.line_seq))";

async fn get_event_row(tx: &Transaction<'_>, id: &str) -> StoreResult<Event> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
    match query_opt(tx, &sql, &[&id]).await? {
        Some(row) => rows::event(&row),
        None => Err(StoreError::NotFound),
    }
}

async fn get_webhook_row(tx: &Transaction<'_>, id: &str, for_update: bool) -> StoreResult<Webhook> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND NOT deleted{}",
        if for_update { " FOR UPDATE" } else { "" }
    );
    match query_opt(tx, &sql, &[&id]).await? {
        Some(row) => rows::webhook(&row),
        None => Err(StoreError::NotFound),
    }
}

async fn get_delivery_row(tx: &Transaction<'_>, id: &str) -> StoreResult<Delivery> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
    match query_opt(tx, &sql, &[&id]).await? {
        Some(row) => rows::delivery(&row),
        None => Err(StoreError::NotFound),
    }
}

fn map_rows<T>(rows: Vec<Row>, map: fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(map).collect()
}

/// Runs `$body` (an expression using `$tx`) in one transaction, commits, and then fires
/// the wake-ups recorded in `$wake`.
macro_rules! in_tx {
    ($self:ident, |$tx:ident, $wake:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client.transaction().await?;
        #[allow(unused_mut)]
        let mut $wake = Wake::default();
        // An error (`?` or `return Err`) in the body ends this block, so the transaction is
        // rolled back here, before the connection goes back to the pool. Dropped instead, it
        // would roll back later in the background, and meanwhile its row locks would make
        // `SKIP LOCKED` claims on other connections pass those rows over.
        #[allow(clippy::needless_question_mark)]
        let out: StoreResult<_> = async { Ok($body) }.await;
        match out {
            Ok(value) => {
                $tx.commit().await?;
                $wake.fire($self.signals_arc(), $self.notes());
                value
            }
            Err(e) => {
                let _ = $tx.rollback().await;
                return Err(e);
            }
        }
    }};
}

#[async_trait]
impl Store for PgStore {
    fn signals(&self) -> &Arc<Signals> {
        self.signals_arc()
    }

    async fn create_tenant(&self, tenant: Tenant) -> StoreResult<Tenant> {
        in_tx!(self, |tx, wake| {
            execute(
                &tx,
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
                &[&tenant.id.to_string(), &tenant.name, &tenant.created_at.0],
            )
            .await?
        });
        Ok(tenant)
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant> {
        let row = in_tx!(self, |tx, wake| {
            query_opt(
                &tx,
                "SELECT name, created_at FROM tenants WHERE id = $1",
                &[&id.to_string()],
            )
            .await?
        });
        let row = row.ok_or(StoreError::NotFound)?;
        Ok(Tenant {
            id,
            name: row.try_get(0)?,
            created_at: Timestamp(row.try_get(1)?),
        })
    }

    async fn create_key(&self, key: ApiKey) -> StoreResult<()> {
        let (role, tenant) = role_columns(&key.role);
        let (scope_types, scope_tenants) = key.scope.to_columns();
        in_tx!(self, |tx, wake| {
            execute(
                &tx,
                "INSERT INTO api_keys (id, hash, role, tenant_id, created_at, scope_types, scope_tenants) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &key.id.to_string(),
                    &key.hash,
                    &role,
                    &tenant,
                    &key.created_at.0,
                    &scope_types,
                    &scope_tenants,
                ],
            )
            .await?
        });
        Ok(())
    }

    async fn get_key(&self, id: KeyId) -> StoreResult<ApiKey> {
        let row = in_tx!(self, |tx, wake| {
            query_opt(
                &tx,
                "SELECT hash, role, tenant_id, created_at, revoked_at, scope_types, scope_tenants \
                 FROM api_keys WHERE id = $1",
                &[&id.to_string()],
            )
            .await?
        });
        let row = row.ok_or(StoreError::NotFound)?;
        let role: String = row.try_get(1)?;
        Ok(ApiKey {
            id,
            hash: row.try_get(0)?,
            role: rows::role(&role, row.try_get(2)?)?,
            created_at: Timestamp(row.try_get(3)?),
            revoked: row.try_get::<_, Option<i64>>(4)?.is_some(),
            scope: WorkerScope::from_columns(row.try_get(5)?, row.try_get(6)?)?,
        })
    }

    async fn revoke_key(&self, id: KeyId, now: Timestamp) -> StoreResult<()> {
        in_tx!(self, |tx, wake| {
            let n = execute(
                &tx,
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id.to_string(), &now.0],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }

    async fn count_live_admin_keys(&self) -> StoreResult<u64> {
        let n: i64 = in_tx!(self, |tx, wake| {
            query(
                &tx,
                "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL",
                &[],
            )
            .await?[0]
                .try_get(0)?
        });
        Ok(n as u64)
    }

    async fn create_operation(
        &self,
        op: NewOperation,
        idem: Option<Idempotency>,
    ) -> StoreResult<Created<Operation>> {
        Ok(in_tx!(self, |tx, wake| {
            let existing = match &idem {
                Some(idem) => claim_idempotency(&tx, idem, op.id, op.created_at).await?,
                None => None,
            };
            match existing {
                Some(existing) => Created::Existing(existing),
                None => {
                    execute(
                        &tx,
                        "INSERT INTO operations (id, tenant_id, type, state, metadata, input, max_attempts, \
                         created_at, updated_at, deadline_at, retention_ms) \
                         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $7, $8, $9)",
                        &[
                            &op.id.to_string(),
                            &op.tenant.map(|t| t.to_string()),
                            &op.op_type,
                            &serde_json::to_string(&op.metadata)?,
                            &serde_json::to_string(&op.input)?,
                            &(op.max_attempts as i64),
                            &op.created_at.0,
                            &op.deadline_at.map(|t| t.0),
                            &ms(op.retention),
                        ],
                    )
                    .await?;
                    wake.queued = true;
                    Created::New(get_operation_row(&tx, op.id, false).await?)
                }
            }
        }))
    }

    async fn get_operation(&self, id: OperationId) -> StoreResult<Operation> {
        self.operations.get(id).await?.ok_or(StoreError::NotFound)
    }

    async fn get_operation_for_worker(&self, id: OperationId) -> StoreResult<Operation> {
        // Deleted or not: the client's DELETE does not take the operation from its worker.
        let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1");
        match self.read_one(&sql, &[&id.to_string()]).await? {
            Some(row) => rows::operation(&row),
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_operations(&self, f: OperationFilter) -> StoreResult<Vec<Operation>> {
        let mut w = Where::default();
        w.fixed("NOT deleted");
        if let Some(t) = f.tenant {
            w.add("tenant_id = ?", Box::new(t.to_string()));
        }
        if let Some(t) = &f.op_type {
            w.add("type = ?", Box::new(t.clone()));
        }
        match f.done {
            Some(true) => w.fixed("state IN ('succeeded', 'failed', 'cancelled')"),
            Some(false) => w.fixed("state IN ('queued', 'running')"),
            None => {}
        }
        if let Some(b) = f.before {
            w.add("id < ?", Box::new(b.to_string()));
        }
        let sql = format!(
            "SELECT {OPERATION_COLUMNS} FROM operations {} ORDER BY id DESC LIMIT {}",
            w.sql(),
            list_limit(f.limit)
        );
        self.read_all(&sql, &refs(&w.args), rows::operation).await
    }

    async fn cancel_operation(&self, id: OperationId, now: Timestamp) -> StoreResult<Operation> {
        let routes = self.routes();
        in_tx!(self, |tx, wake| {
            let mut op = get_operation_row(&tx, id, true).await?;
            match op.state {
                OperationState::Done(_) => {}
                OperationState::Queued => {
                    op.state = OperationState::Done(Outcome::Error(OperationError::new(
                        codes::CANCELLED,
                        "The operation was cancelled before it started.",
                    )));
                    op.updated_at = now;
                    wake.due = finish_row(&tx, &routes, &op, now).await? > 0;
                }
                OperationState::Running { .. } => {
                    execute(
                        &tx,
                        "UPDATE operations SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1",
                        &[&id.to_string(), &now.0],
                    )
                    .await?;
                    op.cancel_requested = true;
                }
            }
            wake.changed.push(id);
            Ok(op)
        })
    }

    async fn delete_operation(&self, id: OperationId, now: Timestamp) -> StoreResult<()> {
        in_tx!(self, |tx, wake| {
            let n = execute(
                &tx,
                "UPDATE operations SET deleted = TRUE, updated_at = $2, \
                 purge_at = CASE WHEN state IN ('succeeded', 'failed', 'cancelled') THEN $2 ELSE purge_at END \
                 WHERE id = $1 AND NOT deleted",
                &[&id.to_string(), &now.0],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }

    async fn claim_operations(&self, claim: ClaimRequest) -> StoreResult<Vec<Operation>> {
        if claim.types.is_empty()
            || claim.max == 0
            || claim.tenants.as_ref().is_some_and(Vec::is_empty)
        {
            return Ok(vec![]);
        }
        // A tenant-scoped worker: only its tenants' operations (never one of no tenant).
        // `$3` NULL places no limit.
        let tenants: Option<Vec<String>> = claim
            .tenants
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect());
        in_tx!(self, |tx, wake| {
            let ids: Vec<String> = query(
                &tx,
                "SELECT id FROM operations WHERE state = 'queued' AND type = ANY($1) \
                 AND ($3::text[] IS NULL OR tenant_id = ANY($3)) \
                 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&claim.types, &(claim.max.min(1000) as i64), &tenants],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(Ok(vec![]));
            }
            let tokens: Vec<String> = ids.iter().map(|_| lease_token()).collect();
            let expires = claim.now.plus(claim.lease);
            let sql = format!(
                "UPDATE operations SET state = 'running', lease_token = u.token, lease_expires_at = $3, \
                 attempt = attempt + 1, updated_at = $4 \
                 FROM unnest($1::text[], $2::text[]) AS u(claim_id, token) WHERE id = u.claim_id \
                 RETURNING {}",
                OPERATION_COLUMNS
                    .split(',')
                    .map(|c| format!("operations.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let rows = query(&tx, &sql, &[&ids, &tokens, &expires.0, &claim.now.0]).await?;
            let mut out = map_rows(rows, rows::operation)?;
            out.sort_by_key(|o| (o.created_at, o.id.to_string()));
            wake.changed.extend(out.iter().map(|o| o.id));
            Ok(out)
        })
    }

    async fn heartbeat(&self, beat: Heartbeat) -> StoreResult<Operation> {
        in_tx!(self, |tx, wake| {
            let mut op = get_operation_row(&tx, beat.id, true).await?;
            match &op.state {
                OperationState::Running { lease_token, .. } if *lease_token == beat.lease_token => {
                }
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
            execute(
                &tx,
                "UPDATE operations SET metadata = $2, lease_expires_at = $3, updated_at = $4 WHERE id = $1",
                &[
                    &beat.id.to_string(),
                    &serde_json::to_string(&op.metadata)?,
                    &expires.0,
                    &beat.now.0,
                ],
            )
            .await?;
            op.state = OperationState::Running {
                lease_token: beat.lease_token,
                lease_expires_at: expires,
            };
            op.updated_at = beat.now;
            wake.changed.push(beat.id);
            Ok(op)
        })
    }

    async fn finish_operation(&self, finish: Finish) -> StoreResult<Operation> {
        let routes = self.routes();
        in_tx!(self, |tx, wake| {
            let mut op = get_operation_row(&tx, finish.id, true).await?;
            match &op.state {
                OperationState::Running { lease_token, .. }
                    if *lease_token == finish.lease_token => {}
                OperationState::Done(_) => return Err(StoreError::AlreadyDone),
                _ => return Err(StoreError::StaleLease),
            }
            op.updated_at = finish.now;
            match finish.outcome {
                FinishAs::Complete(response) => {
                    op.metadata.insert("progress_percent".into(), 100.into());
                    op.state = OperationState::Done(Outcome::Response(response));
                    wake.due = finish_row(&tx, &routes, &op, finish.now).await? > 0;
                }
                FinishAs::Fail { error, retryable }
                    if retryable && op.attempt < op.max_attempts && !op.cancel_requested =>
                {
                    execute(
                        &tx,
                        "UPDATE operations SET state = 'queued', lease_token = NULL, lease_expires_at = NULL, \
                         updated_at = $2 WHERE id = $1",
                        &[&finish.id.to_string(), &finish.now.0],
                    )
                    .await?;
                    tracing::info!(operation = %finish.id, code = %error.code, "retryable failure; operation requeued");
                    op.state = OperationState::Queued;
                    wake.queued = true;
                }
                FinishAs::Fail { error, .. } => {
                    op.state = OperationState::Done(Outcome::Error(error));
                    wake.due = finish_row(&tx, &routes, &op, finish.now).await? > 0;
                }
            }
            wake.changed.push(finish.id);
            Ok(op)
        })
    }

    async fn reap_operations(&self, now: Timestamp) -> StoreResult<ReapReport> {
        let routes = self.routes();
        in_tx!(self, |tx, wake| {
            let mut report = ReapReport::default();
            // SKIP LOCKED: several nodes reap at once, each takes different rows.
            let sql = format!(
                "SELECT {OPERATION_COLUMNS} FROM operations WHERE state = 'running' AND lease_expires_at <= $1 \
                 ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED"
            );
            let expired = map_rows(query(&tx, &sql, &[&now.0]).await?, rows::operation)?;
            for mut op in expired {
                op.updated_at = now;
                if op.cancel_requested {
                    op.state = OperationState::Done(Outcome::Error(OperationError::new(
                        codes::CANCELLED,
                        "The operation was cancelled while running.",
                    )));
                    wake.due |= finish_row(&tx, &routes, &op, now).await? > 0;
                    report.worker_lost += 1;
                } else if op.attempt < op.max_attempts {
                    execute(
                        &tx,
                        "UPDATE operations SET state = 'queued', lease_token = NULL, lease_expires_at = NULL, \
                         updated_at = $2 WHERE id = $1",
                        &[&op.id.to_string(), &now.0],
                    )
                    .await?;
                    report.requeued += 1;
                    wake.queued = true;
                } else {
                    op.state = OperationState::Done(Outcome::Error(OperationError::new(
                        codes::WORKER_LOST,
                        format!(
                            "The worker's lease expired on each of {} attempts.",
                            op.attempt
                        ),
                    )));
                    wake.due |= finish_row(&tx, &routes, &op, now).await? > 0;
                    report.worker_lost += 1;
                }
                wake.changed.push(op.id);
            }
            let sql = format!(
                "SELECT {OPERATION_COLUMNS} FROM operations WHERE deadline_at <= $1 \
                 AND state IN ('queued', 'running') LIMIT 1000 FOR UPDATE SKIP LOCKED"
            );
            let late = map_rows(query(&tx, &sql, &[&now.0]).await?, rows::operation)?;
            for mut op in late {
                op.updated_at = now;
                op.state = OperationState::Done(Outcome::Error(OperationError::new(
                    codes::DEADLINE_EXCEEDED,
                    "The operation did not finish before its deadline.",
                )));
                wake.due |= finish_row(&tx, &routes, &op, now).await? > 0;
                report.deadline_exceeded += 1;
                wake.changed.push(op.id);
            }
            report.purged = execute(
                &tx,
                "DELETE FROM operations WHERE id IN \
                 (SELECT id FROM operations WHERE purge_at <= $1 LIMIT 1000 FOR UPDATE SKIP LOCKED)",
                &[&now.0],
            )
            .await?;
            // Idempotency keys answer retries for a day.
            execute(
                &tx,
                "DELETE FROM idempotency_keys WHERE (scope, key) IN \
                 (SELECT scope, key FROM idempotency_keys WHERE created_at <= $1 LIMIT 1000 FOR UPDATE SKIP LOCKED)",
                &[&(now.0 - 86_400_000)],
            )
            .await?;
            Ok(report)
        })
    }

    async fn next_operation_timer(&self) -> StoreResult<Option<Timestamp>> {
        let t: Option<i64> = in_tx!(self, |tx, wake| {
            query(
                &tx,
                "SELECT MIN(t) FROM ( \
                   SELECT MIN(lease_expires_at) AS t FROM operations WHERE state = 'running' \
                   UNION ALL SELECT MIN(deadline_at) FROM operations WHERE deadline_at IS NOT NULL AND state IN ('queued', 'running') \
                   UNION ALL SELECT MIN(purge_at) FROM operations WHERE purge_at IS NOT NULL) AS timers",
                &[],
            )
            .await?[0]
                .try_get(0)?
        });
        Ok(t.map(Timestamp))
    }

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
        let mut w = Where::default();
        if let Some(t) = f.tenant {
            w.add("tenant_id = ?", Box::new(t.to_string()));
        }
        if let Some(t) = &f.event_type {
            w.add("type = ?", Box::new(t.clone()));
        }
        if let Some(k) = &f.key {
            w.add("key = ?", Box::new(k.clone()));
        }
        if let Some(a) = f.after {
            w.add("id > ?", Box::new(a.to_string()));
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events {} ORDER BY id ASC LIMIT {}",
            w.sql(),
            list_limit(f.limit)
        );
        self.read_all(&sql, &refs(&w.args), rows::event).await
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
        rows.iter()
            .map(|r| {
                let schema: String = r.try_get(1)?;
                Ok(EventType {
                    name: r.try_get(0)?,
                    schema: serde_json::from_str(&schema)?,
                })
            })
            .collect()
    }

    async fn create_webhook(&self, wh: Webhook) -> StoreResult<Webhook> {
        self.create_webhook_capped(wh, u32::MAX).await
    }

    async fn create_webhook_capped(
        &self,
        wh: Webhook,
        max_per_tenant: u32,
    ) -> StoreResult<Webhook> {
        let tenant = wh.tenant.map(|t| t.to_string());
        in_tx!(self, |tx, wake| {
            // One tenant's creates, on every node, take this lock (held to commit) in
            // turn, so each counts what the one before it committed.
            query(
                &tx,
                "SELECT pg_advisory_xact_lock(hashtextextended('herald.webhooks/' || coalesce($1, ''), 0))",
                &[&tenant],
            )
            .await?;
            let live: i64 = query(
                &tx,
                "SELECT COUNT(*) FROM webhooks WHERE tenant_id IS NOT DISTINCT FROM $1 AND NOT deleted",
                &[&tenant],
            )
            .await?[0]
                .try_get(0)?;
            if live >= i64::from(max_per_tenant) {
                return Err(StoreError::LimitReached);
            }
            execute(
                &tx,
                "INSERT INTO webhooks (id, tenant_id, url, events, format, secret, secret_version, previous_secret, \
                 previous_secret_until, schedule, max_concurrency, disabled, disabled_reason, description, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                &[
                    &wh.id.to_string(),
                    &wh.tenant.map(|t| t.to_string()),
                    &wh.url,
                    &patterns_json(&wh.events),
                    &wh.format.as_str(),
                    &wh.secret,
                    &(wh.secret_version as i64),
                    &wh.previous_secret.as_ref().map(|p| p.0.clone()),
                    &wh.previous_secret.as_ref().map(|p| p.1 .0),
                    &schedule_json(&wh.schedule),
                    &wh.max_concurrency.map(|c| c as i64),
                    &wh.disabled,
                    &wh.disabled_reason,
                    &wh.description,
                    &wh.created_at.0,
                    &wh.updated_at.0,
                ],
            )
            .await?
        });
        Ok(wh)
    }

    async fn get_webhook(&self, id: WebhookId) -> StoreResult<Webhook> {
        in_tx!(self, |tx, wake| get_webhook_row(
            &tx,
            &id.to_string(),
            false
        )
        .await)
    }

    async fn list_webhooks(&self, f: WebhookFilter) -> StoreResult<Vec<Webhook>> {
        let mut w = Where::default();
        w.fixed("NOT deleted");
        if !f.all_tenants {
            w.add(
                "tenant_id IS NOT DISTINCT FROM ?",
                Box::new(f.tenant.map(|t| t.to_string())),
            );
        }
        if let Some(a) = f.after {
            w.add("id > ?", Box::new(a.to_string()));
        }
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks {} ORDER BY id ASC LIMIT {}",
            w.sql(),
            list_limit(f.limit)
        );
        self.read_all(&sql, &refs(&w.args), rows::webhook).await
    }

    async fn update_webhook(
        &self,
        id: WebhookId,
        change: WebhookChange,
        now: Timestamp,
    ) -> StoreResult<Webhook> {
        retry_on_conflict(|| self.update_webhook_once(id, change.clone(), now)).await
    }

    async fn delete_webhook(&self, id: WebhookId, now: Timestamp) -> StoreResult<()> {
        in_tx!(self, |tx, wake| {
            let n = execute(
                &tx,
                "UPDATE webhooks SET deleted = TRUE, updated_at = $2 WHERE id = $1 AND NOT deleted",
                &[&id.to_string(), &now.0],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            execute(
                &tx,
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted', \
                 updated_at = $2 WHERE webhook_id = $1 AND status = 'pending'",
                &[&id.to_string(), &now.0],
            )
            .await?;
        });
        Ok(())
    }

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
                   AND (lease_until IS NULL OR lease_until <= $2) ORDER BY next_attempt_at LIMIT $3 \
                   FOR UPDATE SKIP LOCKED)) \
                 RETURNING {DELIVERY_COLUMNS}"
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
            let webhooks: HashMap<WebhookId, Webhook> = map_rows(webhook_rows, rows::webhook)?
                .into_iter()
                .map(|w| (w.id, w))
                .collect();
            let events: HashMap<EventId, Event> = map_rows(event_rows, rows::event)?
                .into_iter()
                .map(|e| (e.id, e))
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
                "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0))) FROM deliveries \
                 WHERE status = 'pending' AND route IS NULL AND next_attempt_at IS NOT NULL",
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
        let mut w = Where::default();
        if let Some(t) = f.tenant {
            w.add("tenant_id = ?", Box::new(t.to_string()));
        }
        if let Some(wh) = f.webhook {
            w.add("webhook_id = ?", Box::new(wh.to_string()));
        }
        if let Some(r) = &f.route {
            w.add("route = ?", Box::new(r.clone()));
        }
        if f.webhooks_only {
            w.fixed("webhook_id IS NOT NULL");
        }
        if let Some(s) = f.status {
            w.add("status = ?", Box::new(s.as_str().to_owned()));
        }
        if let Some(t) = &f.event_type {
            w.add("event_type = ?", Box::new(t.clone()));
        }
        if let Some(t) = f.since {
            w.add("created_at >= ?", Box::new(t.0));
        }
        if let Some(t) = f.until {
            w.add("created_at < ?", Box::new(t.0));
        }
        if let Some(b) = f.before {
            w.add("id < ?", Box::new(b.to_string()));
        }
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries {} ORDER BY id DESC LIMIT {}",
            w.sql(),
            list_limit(f.limit)
        );
        self.read_all(&sql, &refs(&w.args), rows::delivery).await
    }

    async fn get_delivery(&self, id: DeliveryId) -> StoreResult<(Delivery, Vec<Attempt>)> {
        in_tx!(self, |tx, wake| {
            let d = get_delivery_row(&tx, &id.to_string()).await?;
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
            let paused = match d.destination.webhook() {
                Some(w) => get_webhook_row(&tx, &w.to_string(), false).await?.disabled,
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
            wake.due = true;
            get_delivery_row(&tx, &id.to_string()).await
        })
    }

    async fn replay(&self, r: Replay) -> StoreResult<ReplayBatch> {
        in_tx!(self, |tx, wake| {
            let webhook = get_webhook_row(&tx, &r.webhook.to_string(), false).await?;
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
                "SELECT id, event_created_at FROM deliveries WHERE webhook_id = $1 \
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
            let ids: Vec<String> = looked_at
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
            let status_clause = match r.status {
                Some(s) => format!("status = '{}'", s.as_str()),
                // Without a status, everything not already on its way.
                None => "status != 'pending'".to_owned(),
            };
            let replayed = execute(
                &tx,
                &format!(
                    "UPDATE deliveries SET status = 'pending', window_attempts = 0, next_attempt_at = $2, \
                     updated_at = $3 WHERE id = ANY($1) AND {status_clause}"
                ),
                &[&ids, &next, &r.now.0],
            )
            .await?;
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
            Ok(PurgeReport {
                events,
                deliveries,
                attempts,
            })
        })
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

/// Writes that lock many rows in an order they do not choose (all pending deliveries of a
/// webhook, a batch of results) may deadlock with one another; PostgreSQL then aborts one
/// of them, which is simply run again.
async fn retry_on_conflict<T, F, Fut>(mut run: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut tries = 0;
    loop {
        match run().await {
            Err(e) if tries < 3 && is_transient(&e) => {
                tries += 1;
                tracing::debug!(error = %e, "transaction conflicted; running it again");
            }
            other => return other,
        }
    }
}

/// One round of delivery results for `record_attempts`: at most one per delivery.
#[derive(Default)]
struct DeliveryResults {
    id: Vec<String>,
    status: Vec<String>,
    next: Vec<Option<i64>>,
    counted: Vec<bool>,
    code: Vec<Option<i64>>,
    error: Vec<Option<String>>,
    at: Vec<i64>,
}

impl PgStore {
    /// A read of one statement, outside any transaction (the statement is its own
    /// snapshot): one round trip instead of `BEGIN`, the query and `COMMIT`.
    /// One `SELECT` of many rows, as `read_one`: no transaction around a single statement.
    async fn read_all<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        map: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        map_rows(client.query(&stmt, params).await?, map)
    }

    async fn read_one(&self, sql: &str, params: &[Param<'_>]) -> StoreResult<Option<Row>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, params).await?)
    }

    async fn update_webhook_once(
        &self,
        id: WebhookId,
        change: WebhookChange,
        now: Timestamp,
    ) -> StoreResult<Webhook> {
        in_tx!(self, |tx, wake| {
            let id = id.to_string();
            // FOR UPDATE: a concurrent change waits for this one and then applies to its result.
            let before = get_webhook_row(&tx, &id, true).await?;
            let wh = change.apply(before.clone(), now)?;
            execute(
                &tx,
                "UPDATE webhooks SET url = $2, events = $3, format = $4, secret = $5, secret_version = $6, \
                 previous_secret = $7, previous_secret_until = $8, schedule = $9, max_concurrency = $10, \
                 disabled = $11, disabled_reason = $12, description = $13, updated_at = $14 WHERE id = $1",
                &[
                    &id,
                    &wh.url,
                    &patterns_json(&wh.events),
                    &wh.format.as_str(),
                    &wh.secret,
                    &(wh.secret_version as i64),
                    &wh.previous_secret.as_ref().map(|p| p.0.clone()),
                    &wh.previous_secret.as_ref().map(|p| p.1 .0),
                    &schedule_json(&wh.schedule),
                    &wh.max_concurrency.map(|c| c as i64),
                    &wh.disabled,
                    &wh.disabled_reason,
                    &wh.description,
                    &now.0,
                ],
            )
            .await?;
            if before.disabled != wh.disabled {
                // Disabled: pending deliveries wait (no due time). Enabled: they are due now.
                let next = if wh.disabled { None } else { Some(now.0) };
                execute(
                    &tx,
                    "UPDATE deliveries SET next_attempt_at = $2, updated_at = $3 WHERE webhook_id = $1 AND status = 'pending'",
                    &[&id, &next, &now.0],
                )
                .await?;
            }
            wake.due = !wh.disabled;
            Ok(wh)
        })
    }

    async fn record_attempts_once(&self, mut records: Vec<AttemptRecord>) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One order for every node, so two batches never lock the same rows crosswise.
        records.sort_by_key(|r| r.delivery_id.to_string());
        in_tx!(self, |tx, wake| {
            let mut disable: Vec<(String, String, i64)> = Vec::new();
            let (mut a_id, mut a_dlv, mut a_at, mut a_code, mut a_lat, mut a_err, mut a_ex) =
                (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            // One delivery can have two results in a batch (claimed again after a lease ran
            // out, say). An `UPDATE … FROM unnest(…)` applies only one row per target, so the
            // results go in rounds: the k-th result of each delivery in round k, in order.
            let mut rounds: Vec<DeliveryResults> = Vec::new();
            let mut seen: HashMap<DeliveryId, usize> = HashMap::new();
            let mut d_id: Vec<String> = Vec::with_capacity(records.len());
            for r in &records {
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
                let (status, next): (&str, Option<i64>) = match r.outcome {
                    AttemptOutcome::Succeeded => ("succeeded", None),
                    AttemptOutcome::RetryAt(t) => ("pending", Some(t.0)),
                    AttemptOutcome::Failed => ("failed", None),
                    AttemptOutcome::Deferred(t) => ("pending", Some(t.0)),
                };
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
            for (webhook, reason, at) in &disable {
                execute(
                    &tx,
                    "UPDATE webhooks SET disabled = TRUE, disabled_reason = $2, updated_at = $3 WHERE id = $1",
                    &[webhook, reason, at],
                )
                .await?;
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
            let update_deliveries = async {
                for u in &rounds {
                    execute(
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
                         WHERE d.id = u.rid",
                        &[&u.id, &u.status, &u.next, &u.counted, &u.code, &u.error, &u.at],
                    )
                    .await?;
                }
                Ok::<(), StoreError>(())
            };
            futures::try_join!(insert_attempts, update_deliveries)?;
            // A result that arrives after its webhook was deleted (sent while the delete ran)
            // must not leave the delivery pending: a deleted webhook owes nothing. A delete
            // that commits after this statement fails the delivery itself.
            execute(
                &tx,
                "UPDATE deliveries d SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted' \
                 FROM webhooks w WHERE d.id = ANY($1) AND d.status = 'pending' AND w.id = d.webhook_id AND w.deleted",
                &[&d_id],
            )
            .await?;
            if !disable.is_empty() {
                let ids: Vec<String> = disable.iter().map(|d| d.0.clone()).collect();
                execute(
                    &tx,
                    "UPDATE deliveries SET next_attempt_at = NULL WHERE webhook_id = ANY($1) AND status = 'pending'",
                    &[&ids],
                )
                .await?;
            }
        });
        // A retry may now be the earliest due delivery: let this node's dispatcher re-plan.
        self.signals_arc().deliveries_due.notify_waiters();
        Ok(())
    }
}
