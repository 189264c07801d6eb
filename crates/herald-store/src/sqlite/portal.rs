//! [`PortalStore`] for SQLite: portal sessions and tenants' portal settings.

use super::rows::*;
use super::sql::*;
use super::SqliteStore;
use crate::filter::Arg;
use crate::model::*;
use crate::rules;
use crate::*;
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::Timestamp;
use rusqlite::{params, params_from_iter};

fn session_where(
    conn: &rusqlite::Connection,
    clause: &str,
    arg: &str,
) -> StoreResult<PortalSession> {
    let sql = format!("SELECT {PORTAL_SESSION_COLUMNS} FROM portal_sessions WHERE {clause}");
    query_all(conn, &sql, vec![Arg::text(arg)], portal_session)?
        .pop()
        .ok_or(StoreError::NotFound)
}

#[async_trait]
impl PortalStore for SqliteStore {
    async fn create_portal_session(&self, session: PortalSession) -> StoreResult<PortalSession> {
        self.write(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO portal_sessions ({PORTAL_SESSION_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params_from_iter(portal_session_args(&session)),
            )?;
            Ok(session)
        })
        .await
    }

    async fn get_portal_session(&self, id: PortalSessionId) -> StoreResult<PortalSession> {
        self.read(move |conn| session_where(conn, "id = ?1", &id.to_string()))
            .await
    }

    async fn exchange_portal_token(
        &self,
        token_hash: String,
        cookie_hash: String,
        now: Timestamp,
    ) -> StoreResult<PortalSession> {
        self.write(move |conn| {
            // One statement: of two exchanges of one token, exactly one changes the row.
            let n = conn.execute(
                "UPDATE portal_sessions SET cookie_hash = ?2, exchanged_at = ?3 \
                 WHERE token_hash = ?1 AND exchanged_at IS NULL AND revoked = 0 AND expires_at > ?3",
                params![token_hash, cookie_hash, now.0],
            )?;
            rules::found(n as u64)?;
            session_where(conn, "token_hash = ?1", &token_hash)
        })
        .await
    }

    async fn portal_session_by_token(&self, token_hash: String) -> StoreResult<PortalSession> {
        self.read(move |conn| session_where(conn, "token_hash = ?1", &token_hash))
            .await
    }

    async fn portal_session_by_cookie(&self, cookie_hash: String) -> StoreResult<PortalSession> {
        self.read(move |conn| session_where(conn, "cookie_hash = ?1", &cookie_hash))
            .await
    }

    async fn revoke_portal_session(&self, id: PortalSessionId, _now: Timestamp) -> StoreResult<()> {
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE portal_sessions SET revoked = 1 WHERE id = ?1",
                params![id.to_string()],
            )?;
            rules::found(n as u64)
        })
        .await
    }

    async fn get_portal_settings(&self, tenant: TenantId) -> StoreResult<PortalSettings> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT frame_origins, branding FROM portal_settings WHERE tenant_id = ?1",
            )?;
            let mut rows = stmt.query(params![tenant.to_string()])?;
            match rows.next()? {
                Some(row) => portal_settings(&row.get::<_, String>(0)?, &row.get::<_, String>(1)?),
                None => Ok(PortalSettings::default()),
            }
        })
        .await
    }

    async fn put_portal_settings(
        &self,
        tenant: TenantId,
        settings: PortalSettings,
    ) -> StoreResult<PortalSettings> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO portal_settings (tenant_id, frame_origins, branding) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET frame_origins = ?2, branding = ?3",
                params![
                    tenant.to_string(),
                    serde_json::to_string(&settings.frame_origins)?,
                    serde_json::to_string(&settings.branding)?
                ],
            )?;
            Ok(settings)
        })
        .await
    }
}
