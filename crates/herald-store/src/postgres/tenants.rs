//! [`TenantStore`] for PostgreSQL: tenants and API keys.

use super::rows::{self, *};
use super::sql::*;
use super::PgStore;
use crate::model::*;
use crate::rules;
use crate::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use herald_core::ids::*;
use herald_core::Timestamp;

#[async_trait]
impl TenantStore for PgStore {
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
        rows::tenant_row(id, &row.ok_or(StoreError::NotFound)?)
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
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = in_tx!(self, |tx, wake| {
            query_opt(&tx, &sql, &[&id.to_string()]).await?
        });
        rows::api_key(id, &row.ok_or(StoreError::NotFound)?)
    }

    async fn revoke_key(&self, id: KeyId, now: Timestamp) -> StoreResult<()> {
        in_tx!(self, |tx, wake| {
            let n = execute(
                &tx,
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id.to_string(), &now.0],
            )
            .await?;
            rules::found(n as u64)?;
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
}
