//! [`WebhookStore`] for PostgreSQL.

use super::deliveries::settle_lines;
use super::rows::{self, *};
use super::sql::*;
use super::PgStore;
use crate::filter::{self, Arg};
use crate::lines;
use crate::model::*;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::webhook::Ordering;
use herald_core::Timestamp;

#[async_trait]
impl WebhookStore for PgStore {
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
                 previous_secret_until, schedule, max_concurrency, disabled, disabled_reason, description, created_at, updated_at, \
                 ordering, headers, filter, rate_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
                &refs(&pg_args(
                    [Arg::text(wh.id), Arg::opt_text(wh.tenant)]
                        .into_iter()
                        .chain(webhook_settings(&wh))
                        .chain([Arg::Int(wh.created_at.0), Arg::Int(wh.updated_at.0), ordering_arg(wh.ordering)]).chain(options_args(&wh.options))
                        .collect(),
                )),
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
        let q = filter::webhooks(filter::POSTGRES, &f);
        self.read_all(&q.sql, &refs(&pg_args(q.args)), rows::webhook)
            .await
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
            rules::found(n as u64)?;
            execute(
                &tx,
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted', \
                 updated_at = $2 WHERE webhook_id = $1 AND status = 'pending'",
                &[&id.to_string(), &now.0],
            )
            .await?;
            execute(
                &tx,
                "DELETE FROM failure_notices WHERE webhook_id = $1",
                &[&id.to_string()],
            )
            .await?;
        });
        Ok(())
    }
}

impl PgStore {
    pub(super) async fn update_webhook_once(
        &self,
        id: WebhookId,
        change: WebhookChange,
        now: Timestamp,
    ) -> StoreResult<Webhook> {
        let routes = self.routes();
        in_tx!(self, |tx, wake| {
            let id = id.to_string();
            // FOR UPDATE: a concurrent change waits for this one and then applies to its result.
            let before = get_webhook_row(&tx, &id, true).await?;
            let wh = change.apply(before.clone(), now)?;
            execute(
                &tx,
                "UPDATE webhooks SET url = $2, events = $3, format = $4, secret = $5, secret_version = $6, \
                 previous_secret = $7, previous_secret_until = $8, schedule = $9, max_concurrency = $10, \
                 disabled = $11, disabled_reason = $12, description = $13, updated_at = $14, ordering = $15, \
                 headers = $16, filter = $17, rate_limit = $18 WHERE id = $1",
                &refs(&pg_args(
                    std::iter::once(Arg::Text(id.clone()))
                        .chain(webhook_settings(&wh))
                        .chain([Arg::Int(now.0), ordering_arg(wh.ordering)]).chain(options_args(&wh.options))
                        .collect(),
                )),
            )
            .await?;
            if before.disabled != wh.disabled {
                // Disabled: pending deliveries wait (no due time). Enabled: they are due now,
                // but for those an ordered line holds back.
                let next = if wh.disabled { None } else { Some(now.0) };
                execute(
                    &tx,
                    "UPDATE deliveries SET next_attempt_at = $2, updated_at = $3 WHERE webhook_id = $1 AND status = 'pending'",
                    &[&id, &next, &now.0],
                )
                .await?;
                if !wh.disabled {
                    settle_lines(&tx, &id, now).await?;
                }
            }
            if before.ordering == Ordering::Key && wh.ordering == Ordering::None {
                execute(&tx, &lines::dissolve_lines_sql("$1", "$2"), &[&id, &now.0]).await?;
            }
            wake.due = !wh.disabled;
            if !before.disabled && wh.disabled {
                let event = rules::webhook_disabled_event(&wh, now);
                super::events::insert_event_row(&tx, &routes, &event).await?;
                wake.due = true;
                wake.events.push(event.tenant);
            }
            Ok(wh)
        })
    }
}
