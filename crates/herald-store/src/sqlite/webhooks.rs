//! [`WebhookStore`] for SQLite.

use super::deliveries::settle_lines;
use super::events::*;
use super::rows::{self, *};
use super::sql::*;
use super::SqliteStore;
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
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter};

#[async_trait]
impl WebhookStore for SqliteStore {
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
                 previous_secret_until, schedule, max_concurrency, disabled, disabled_reason, description, created_at, updated_at, \
                 ordering, headers, filter, rate_limit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                params_from_iter(
                    [Arg::text(wh.id), Arg::opt_text(wh.tenant)]
                        .into_iter()
                        .chain(webhook_settings(&wh))
                        .chain([Arg::Int(wh.created_at.0), Arg::Int(wh.updated_at.0), ordering_arg(wh.ordering)]).chain(options_args(&wh.options)),
                ),
            )?;
            Ok(wh)
        })
        .await
    }

    async fn get_webhook(&self, id: WebhookId) -> StoreResult<Webhook> {
        self.read_now(move |conn| get_webhook_row(conn, &id.to_string()))
    }

    async fn list_webhooks(&self, f: WebhookFilter) -> StoreResult<Vec<Webhook>> {
        let q = filter::webhooks(filter::SQLITE, &f);
        self.read(move |conn| query_all(conn, &q.sql, q.args, rows::webhook))
            .await
    }

    async fn update_webhook(
        &self,
        id: WebhookId,
        change: WebhookChange,
        now: Timestamp,
    ) -> StoreResult<Webhook> {
        let routes = self.routes();
        let (out, raised) = self
            .write(move |conn| {
                let before = get_webhook_row(conn, &id.to_string())?;
                let wh = change.apply(before.clone(), now)?;
                forget_fan_out_targets();
                conn.execute(
                    "UPDATE webhooks SET url = ?2, events = ?3, format = ?4, secret = ?5, secret_version = ?6, \
                     previous_secret = ?7, previous_secret_until = ?8, schedule = ?9, max_concurrency = ?10, \
                     disabled = ?11, disabled_reason = ?12, description = ?13, updated_at = ?14, ordering = ?15, \
                 headers = ?16, filter = ?17, rate_limit = ?18 WHERE id = ?1",
                    params_from_iter(
                        std::iter::once(Arg::text(wh.id))
                            .chain(webhook_settings(&wh))
                            .chain([Arg::Int(now.0), ordering_arg(wh.ordering)]).chain(options_args(&wh.options)),
                    ),
                )?;
                let id = wh.id.to_string();
                if before.disabled != wh.disabled {
                    // Disabled: pending deliveries wait (no due time). Enabled: they are due
                    // now, but for those an ordered line holds back.
                    let next = if wh.disabled { Sql::Null } else { Sql::Integer(now.0) };
                    conn.execute(
                        "UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?3 WHERE webhook_id = ?1 AND status = 'pending'",
                        params![id, next, now.0],
                    )?;
                    if !wh.disabled {
                        settle_lines(conn, &id, now)?;
                    }
                }
                if before.ordering == Ordering::Key && wh.ordering == Ordering::None {
                    conn.execute(&lines::dissolve_lines_sql("?1", "?2"), params![id, now.0])?;
                }
                let raised = !before.disabled && wh.disabled;
                if raised {
                    raise_event(conn, &routes, rules::webhook_disabled_event(&wh, now))?;
                }
                Ok((wh, raised))
            })
            .await?;
        if !out.disabled || raised {
            self.signals.deliveries_changed();
        }
        if raised {
            self.signals.events_appended(crate::Appended::Anything);
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
            rules::found(n as u64)?;
            conn.execute(
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted', \
                 updated_at = ?2 WHERE webhook_id = ?1 AND status = 'pending'",
                params![id.to_string(), now.0],
            )?;
            conn.execute(
                "DELETE FROM failure_notices WHERE webhook_id = ?1",
                params![id.to_string()],
            )?;
            Ok(())
        })
        .await
    }
}
