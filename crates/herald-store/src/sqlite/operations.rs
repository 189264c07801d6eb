//! [`OperationStore`] for SQLite: each method is one write job (group-committed) or one read.

use super::events::*;
use super::rows::{self, *};
use super::sql::*;
use super::SqliteStore;
use crate::filter::{self};
use crate::model::*;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::operation::{Operation, OperationState};
use herald_core::Timestamp;
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection};

pub(super) fn get_operation_row(conn: &Connection, id: OperationId) -> StoreResult<Operation> {
    read_operation_row(conn, id, "")
}

/// The operation unless deleted: a deleted operation reads as missing.
pub(super) fn get_live_operation_row(conn: &Connection, id: OperationId) -> StoreResult<Operation> {
    read_operation_row(conn, id, " AND deleted = 0")
}

pub(super) fn read_operation_row(
    conn: &Connection,
    id: OperationId,
    filter: &str,
) -> StoreResult<Operation> {
    let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = ?1{filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id.to_string()])?;
    match rows.next()? {
        Some(row) => rows::operation(row),
        None => Err(StoreError::NotFound),
    }
}

/// Ends an operation with `outcome` (already in `state`), sets its purge time, and
/// raises its final event in the same transaction.
pub(super) fn finish_row(
    conn: &Connection,
    routes: &[OutboxRoute],
    op: &Operation,
    now: Timestamp,
) -> StoreResult<()> {
    let (response, code, message) = rules::finish_columns(op)?;
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
    if let Some(event) = rules::final_event(op, now) {
        let data_json = serde_json::to_string(&event.data)?;
        insert_event_row(conn, routes, event, &data_json, None)?;
    }
    Ok(())
}

#[async_trait]
impl OperationStore for SqliteStore {
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
        let q = filter::operations(filter::SQLITE, &f);
        self.read(move |conn| query_all(conn, &q.sql, q.args, rows::operation))
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
                        op.state = rules::cancelled_before_start();
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
            self.signals.deliveries_changed();
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
            rules::found(n as u64)?;
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
                rules::check_lease(&op, &beat.lease_token)?;
                rules::merge_metadata(&mut op, beat.metadata);
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
                rules::check_lease(&op, &finish.lease_token)?;
                op.updated_at = finish.now;
                match finish.outcome {
                    FinishAs::Complete(response) => {
                        op.metadata.insert("progress_percent".into(), 100.into());
                        op.state = OperationState::Done(herald_core::operation::Outcome::Response(response));
                        finish_row(conn, &routes, &op, finish.now)?;
                    }
                    FinishAs::Fail { error, retryable }
                        if rules::requeues(&op, retryable) =>
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
            _ => self.signals.deliveries_changed(),
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
                        op.state = rules::cancelled_while_running();
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
                        op.state = rules::worker_lost(op.attempt);
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
                    op.state = rules::deadline_exceeded();
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
            self.signals.deliveries_changed();
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
}
