//! [`OperationStore`] for PostgreSQL: each method is one transaction; claims lock with
//! `FOR UPDATE SKIP LOCKED`, so nodes never wait for (or take) each other's rows.

use super::events::*;
use super::rows::{self, *};
use super::sql::*;
use super::PgStore;
use crate::filter::{self};
use crate::model::*;
use crate::rows::parse_id;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use herald_core::ids::*;
use herald_core::operation::{Operation, OperationState, Outcome};
use herald_core::Timestamp;

pub(super) async fn get_operation_row(
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
pub(super) async fn claim_idempotency(
    tx: &Transaction<'_>,
    idem: &Idempotency,
    op: OperationId,
    now: Timestamp,
) -> StoreResult<Option<Operation>> {
    let resource = op.to_string();
    // The key as this request records it: scope, key, hash, resource, time.
    let record: [Param<'_>; 5] = [
        &idem.scope,
        &idem.key,
        &idem.request_hash,
        &resource,
        &now.0,
    ];
    let inserted = execute(
        tx,
        "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
        &record,
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
                &record,
            )
            .await?;
            Ok(None)
        }
    }
}

/// Ends an operation (already in its final `state`), sets its purge time, and raises its
/// final event in the same transaction. Returns how many deliveries that event made.
pub(super) async fn finish_row(
    tx: &Transaction<'_>,
    routes: &[OutboxRoute],
    op: &Operation,
    now: Timestamp,
) -> StoreResult<usize> {
    let (response, code, message) = rules::finish_columns(op)?;
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
    if let Some(event) = rules::final_event(op, now) {
        fanned = insert_event_row(tx, routes, &event).await?.1;
    }
    Ok(fanned)
}

#[async_trait]
impl OperationStore for PgStore {
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
        let q = filter::operations(filter::POSTGRES, &f);
        self.read_all(&q.sql, &refs(&pg_args(q.args)), rows::operation)
            .await
    }

    async fn cancel_operation(&self, id: OperationId, now: Timestamp) -> StoreResult<Operation> {
        let routes = self.routes();
        in_tx!(self, |tx, wake| {
            let mut op = get_operation_row(&tx, id, true).await?;
            match op.state {
                OperationState::Done(_) => {}
                OperationState::Queued => {
                    op.state = rules::cancelled_before_start();
                    op.updated_at = now;
                    wake.events.push(op.tenant);
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
            rules::found(n as u64)?;
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
            rules::check_lease(&op, &beat.lease_token)?;
            rules::merge_metadata(&mut op, beat.metadata);
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
            rules::check_lease(&op, &finish.lease_token)?;
            op.updated_at = finish.now;
            match finish.outcome {
                FinishAs::Complete(response) => {
                    op.metadata.insert("progress_percent".into(), 100.into());
                    op.state = OperationState::Done(Outcome::Response(response));
                    wake.events.push(op.tenant);
                    wake.due = finish_row(&tx, &routes, &op, finish.now).await? > 0;
                }
                FinishAs::Fail { error, retryable } if rules::requeues(&op, retryable) => {
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
                    wake.events.push(op.tenant);
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
                    op.state = rules::cancelled_while_running();
                    wake.events.push(op.tenant);
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
                    op.state = rules::worker_lost(op.attempt);
                    wake.events.push(op.tenant);
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
                op.state = rules::deadline_exceeded();
                wake.events.push(op.tenant);
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
}
