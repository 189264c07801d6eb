//! [`TenantStore`] for PostgreSQL: tenants and API keys.

use super::rows::{self, *};
use super::sql::*;
use super::PgStore;
use crate::model::*;
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
            role: rows::role_from(&role, row.try_get(2)?)?,
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
}
