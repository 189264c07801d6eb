//! [`PortalStore`] for PostgreSQL: portal sessions and tenants' portal settings.

use super::rows::*;
use super::sql::*;
use super::PgStore;
use crate::model::*;
use crate::rules;
use crate::*;
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::Timestamp;

#[async_trait]
impl PortalStore for PgStore {
    async fn create_portal_session(&self, session: PortalSession) -> StoreResult<PortalSession> {
        let sql = format!(
            "INSERT INTO portal_sessions ({PORTAL_SESSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        let args = pg_args(portal_session_args(&session));
        in_tx!(self, |tx, wake| execute(&tx, &sql, &refs(&args)).await?);
        Ok(session)
    }

    async fn get_portal_session(&self, id: PortalSessionId) -> StoreResult<PortalSession> {
        let sql = format!("SELECT {PORTAL_SESSION_COLUMNS} FROM portal_sessions WHERE id = $1");
        let row = in_tx!(self, |tx, wake| query_opt(&tx, &sql, &[&id.to_string()])
            .await?);
        portal_session(&row.ok_or(StoreError::NotFound)?)
    }

    async fn exchange_portal_token(
        &self,
        token_hash: String,
        cookie_hash: String,
        now: Timestamp,
    ) -> StoreResult<PortalSession> {
        // One statement: of two exchanges of one token, exactly one changes the row.
        let sql = format!(
            "UPDATE portal_sessions SET cookie_hash = $2, exchanged_at = $3 \
             WHERE token_hash = $1 AND exchanged_at IS NULL AND NOT revoked AND expires_at > $3 \
             RETURNING {PORTAL_SESSION_COLUMNS}"
        );
        let row = in_tx!(self, |tx, wake| query_opt(
            &tx,
            &sql,
            &[&token_hash, &cookie_hash, &now.0]
        )
        .await?);
        portal_session(&row.ok_or(StoreError::NotFound)?)
    }

    async fn portal_session_by_token(&self, token_hash: String) -> StoreResult<PortalSession> {
        let sql =
            format!("SELECT {PORTAL_SESSION_COLUMNS} FROM portal_sessions WHERE token_hash = $1");
        let row = in_tx!(self, |tx, wake| query_opt(&tx, &sql, &[&token_hash])
            .await?);
        portal_session(&row.ok_or(StoreError::NotFound)?)
    }

    async fn portal_session_by_cookie(&self, cookie_hash: String) -> StoreResult<PortalSession> {
        let sql =
            format!("SELECT {PORTAL_SESSION_COLUMNS} FROM portal_sessions WHERE cookie_hash = $1");
        let row = in_tx!(self, |tx, wake| query_opt(&tx, &sql, &[&cookie_hash])
            .await?);
        portal_session(&row.ok_or(StoreError::NotFound)?)
    }

    async fn revoke_portal_session(&self, id: PortalSessionId, _now: Timestamp) -> StoreResult<()> {
        let n = in_tx!(self, |tx, wake| execute(
            &tx,
            "UPDATE portal_sessions SET revoked = TRUE WHERE id = $1",
            &[&id.to_string()]
        )
        .await?);
        rules::found(n)
    }

    async fn get_portal_settings(&self, tenant: TenantId) -> StoreResult<PortalSettings> {
        let row = in_tx!(self, |tx, wake| query_opt(
            &tx,
            "SELECT frame_origins, branding FROM portal_settings WHERE tenant_id = $1",
            &[&tenant.to_string()]
        )
        .await?);
        match row {
            Some(row) => {
                portal_settings(&row.try_get::<_, String>(0)?, &row.try_get::<_, String>(1)?)
            }
            None => Ok(PortalSettings::default()),
        }
    }

    async fn put_portal_settings(
        &self,
        tenant: TenantId,
        settings: PortalSettings,
    ) -> StoreResult<PortalSettings> {
        let origins = serde_json::to_string(&settings.frame_origins)?;
        let branding = serde_json::to_string(&settings.branding)?;
        in_tx!(self, |tx, wake| execute(
            &tx,
            "INSERT INTO portal_settings (tenant_id, frame_origins, branding) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET frame_origins = $2, branding = $3",
            &[&tenant.to_string(), &origins, &branding]
        )
        .await?);
        Ok(settings)
    }
}
