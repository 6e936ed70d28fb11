//! Tenants and the credentials they hold.

use crate::kernel::auth::Credential;
use crate::kernel::store::{Store, StoreResult};
use crate::params;

impl Store {
    /// Creates a tenant and the tip of its audit chain.
    pub async fn create_tenant(&self, id: &str, name: &str, now: &str) -> StoreResult<()> {
        let (id, name, now) = (id.to_string(), name.to_string(), now.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO tenants (id, name, created) VALUES ($1, $2, $3)",
                &params![&id, &name, &now],
            )?;
            tx.execute(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)",
                &params![&id, crate::kernel::chain::GENESIS],
            )?;
            Ok(())
        })
        .await
    }

    /// A tenant, if it exists.
    pub async fn tenant(&self, id: &str) -> StoreResult<Option<TenantRow>> {
        let row = self
            .pool
            .fetch_opt(
                "SELECT id, name, created FROM tenants WHERE id = $1",
                &params![id],
            )
            .await?;
        Ok(row.map(|r| TenantRow {
            id: r.text(0),
            name: r.text(1),
            created: r.text(2),
        }))
    }

    /// All tenants.
    pub async fn tenants(&self) -> StoreResult<Vec<TenantRow>> {
        let rows = self
            .pool
            .fetch(
                "SELECT id, name, created FROM tenants ORDER BY created, id",
                &[],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TenantRow {
                id: r.text(0),
                name: r.text(1),
                created: r.text(2),
            })
            .collect())
    }

    /// Stores a credential (by hash only).
    pub async fn create_credential(
        &self,
        kind: Credential,
        id: &str,
        tenant: &str,
        name: &str,
        hash: &str,
        now: &str,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO {} (id, tenant_id, name, token_hash, created) VALUES ($1, $2, $3, $4, $5)",
            kind.table()
        );
        self.pool
            .execute(&sql, &params![id, tenant, name, hash, now])
            .await?;
        Ok(())
    }

    /// Revokes a credential of a tenant; returns whether one was revoked.
    pub async fn revoke_credential(
        &self,
        kind: Credential,
        tenant: &str,
        id: &str,
        now: &str,
    ) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE {} SET revoked = $3 WHERE tenant_id = $1 AND id = $2 AND revoked IS NULL",
            kind.table()
        );
        let n = self.pool.execute(&sql, &params![tenant, id, now]).await?;
        Ok(n == 1)
    }

    /// A tenant's credentials of one kind (id, name, created, revoked), oldest first.
    pub async fn credentials(
        &self,
        kind: Credential,
        tenant: &str,
    ) -> StoreResult<Vec<serde_json::Value>> {
        let sql = format!(
            "SELECT id, name, created, revoked FROM {} WHERE tenant_id = $1 ORDER BY created, id",
            kind.table()
        );
        Ok(self
            .pool
            .fetch(&sql, &params![tenant])
            .await?
            .iter()
            .map(|r| {
                serde_json::json!({"id": r.text(0), "name": r.text(1), "created": r.text(2), "revoked": r.opt_text(3)})
            })
            .collect())
    }
}

/// A tenant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantRow {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created: String,
}
