//! [`TenantStore`] for SQLite: tenants and API keys.

use super::rows::*;
use super::SqliteStore;
use crate::model::*;
use crate::rows as shared;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::Timestamp;
use rusqlite::params;

#[async_trait]
impl TenantStore for SqliteStore {
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
        // A point read by key: right here, not behind the bounded (and maybe busy) reads.
        self.read_now(move |conn| {
            conn.prepare_cached("SELECT name, created_at FROM tenants WHERE id = ?1")?
                .query(params![id.to_string()])?
                .next()?
                .map(|row| shared::tenant_row(id, row))
                .transpose()?
                .ok_or(StoreError::NotFound)
        })
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
        // Every request with an uncached key needs this: a point read, right here, never
        // behind heavy reads in the bounded queue.
        self.read_now(move |conn| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1");
            conn.prepare_cached(&sql)?
                .query(params![id.to_string()])?
                .next()?
                .map(|row| shared::api_key(id, row))
                .transpose()?
                .ok_or(StoreError::NotFound)
        })
    }

    async fn revoke_key(&self, id: KeyId, now: Timestamp) -> StoreResult<()> {
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id.to_string(), now.0],
            )?;
            rules::found(n as u64)?;
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
}
