//! Tenants and the credentials they hold.

use crate::kernel::auth::Credential;
use crate::kernel::store::{Store, StoreResult, Tx};
use crate::params;

impl Tx<'_> {
    /// Inserts a tenant and the tip of its audit chain.
    pub(crate) fn insert_tenant(&mut self, id: &str, name: &str, now: &str) -> StoreResult<()> {
        self.execute(
            "INSERT INTO tenants (id, name, created) VALUES ($1, $2, $3)",
            &params![id, name, now],
        )?;
        self.execute(
            "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)",
            &params![id, crate::kernel::chain::GENESIS],
        )?;
        Ok(())
    }

    /// A tenant, in the transaction.
    pub(crate) fn fetch_tenant(&mut self, id: &str) -> StoreResult<Option<TenantRow>> {
        Ok(self
            .fetch_opt(
                "SELECT id, name, created FROM tenants WHERE id = $1",
                &params![id],
            )?
            .map(|r| TenantRow {
                id: r.text(0),
                name: r.text(1),
                created: r.text(2),
            }))
    }

    /// Renames a tenant; its row before, if it exists.
    pub(crate) fn rename_tenant(&mut self, id: &str, name: &str) -> StoreResult<Option<TenantRow>> {
        let Some(before) = self.fetch_tenant(id)? else {
            return Ok(None);
        };
        self.execute(
            "UPDATE tenants SET name = $2 WHERE id = $1",
            &params![id, name],
        )?;
        Ok(Some(before))
    }

    /// How many licenses a tenant holds (active or waiting).
    pub(crate) fn license_count(&mut self, id: &str) -> StoreResult<i64> {
        Ok(self
            .fetch_opt(
                "SELECT COUNT(*) FROM licenses WHERE tenant_id = $1",
                &params![id],
            )?
            .map_or(0, |r| r.int(0)))
    }

    /// Removes a tenant and every row of every table that has a `tenant_id` (found in the
    /// database's catalogue, so a table added later is never forgotten), then the tenant
    /// itself. Returns the rows removed per table (tables with none left out).
    pub(crate) fn delete_tenant_rows(
        &mut self,
        id: &str,
    ) -> StoreResult<std::collections::BTreeMap<String, i64>> {
        let catalogue = match self.backend() {
            crate::kernel::db::Backend::Sqlite => {
                "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c \
                 WHERE m.type = 'table' AND c.name = 'tenant_id' ORDER BY m.name"
            }
            crate::kernel::db::Backend::Postgres => {
                "SELECT c.table_name FROM information_schema.columns c \
                 JOIN information_schema.tables t \
                   ON t.table_name = c.table_name AND t.table_schema = c.table_schema \
                 WHERE c.column_name = 'tenant_id' AND c.table_schema = current_schema() \
                   AND t.table_type = 'BASE TABLE' ORDER BY c.table_name"
            }
        };
        let tables: Vec<String> = self
            .fetch(catalogue, &[])?
            .iter()
            .map(|r| r.text(0))
            .collect();
        let mut removed = std::collections::BTreeMap::new();
        for table in tables {
            // Names from the catalogue, checked before they reach SQL.
            if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let n = self.execute(
                &format!("DELETE FROM {table} WHERE tenant_id = $1"),
                &params![id],
            )?;
            if n > 0 {
                removed.insert(table, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        self.execute("DELETE FROM tenants WHERE id = $1", &params![id])?;
        Ok(removed)
    }

    /// Whether a tenant exists.
    pub(crate) fn tenant_exists(&mut self, id: &str) -> StoreResult<bool> {
        Ok(self
            .fetch_opt("SELECT 1 FROM tenants WHERE id = $1", &params![id])?
            .is_some())
    }

    /// Stores a credential (by hash only).
    pub(crate) fn insert_credential(
        &mut self,
        kind: Credential,
        c: &CredentialRow,
        hash: &str,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO {} (id, tenant_id, name, token_hash, created) VALUES ($1, $2, $3, $4, $5)",
            kind.table()
        );
        self.execute(&sql, &params![&c.id, &c.tenant, &c.name, hash, &c.created])?;
        Ok(())
    }

    /// The ids of a tenant's live credentials of one kind with this name.
    pub(crate) fn live_credentials_named(
        &mut self,
        kind: Credential,
        tenant: &str,
        name: &str,
    ) -> StoreResult<Vec<String>> {
        let sql = format!(
            "SELECT id FROM {} WHERE tenant_id = $1 AND name = $2 AND revoked IS NULL",
            kind.table()
        );
        Ok(self
            .fetch(&sql, &params![tenant, name])?
            .iter()
            .map(|r| r.text(0))
            .collect())
    }

    /// Revokes a live credential of a tenant; returns it as it was, if there was one.
    pub(crate) fn revoke_credential(
        &mut self,
        kind: Credential,
        tenant: &str,
        id: &str,
        now: &str,
    ) -> StoreResult<Option<CredentialRow>> {
        let sql = format!(
            "UPDATE {} SET revoked = $3 WHERE tenant_id = $1 AND id = $2 AND revoked IS NULL \
             RETURNING id, tenant_id, name, created",
            kind.table()
        );
        Ok(self
            .fetch_opt(&sql, &params![tenant, id, now])?
            .map(|r| CredentialRow {
                id: r.text(0),
                tenant: r.text(1),
                name: r.text(2),
                created: r.text(3),
                revoked: None,
            }))
    }
}

impl Store {
    /// A tenant, if it exists.
    pub(crate) async fn tenant(&self, id: &str) -> StoreResult<Option<TenantRow>> {
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

    /// A tenant's credentials of one kind (id, name, created, revoked), oldest first.
    pub(crate) async fn credentials(
        &self,
        kind: Credential,
        tenant: &str,
    ) -> StoreResult<Vec<CredentialRow>> {
        let sql = format!(
            "SELECT id, name, created, revoked FROM {} WHERE tenant_id = $1 ORDER BY created, id",
            kind.table()
        );
        Ok(self
            .pool
            .fetch(&sql, &params![tenant])
            .await?
            .iter()
            .map(|r| CredentialRow {
                id: r.text(0),
                tenant: tenant.to_string(),
                name: r.text(1),
                created: r.text(2),
                revoked: r.opt_text(3),
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

/// A SCIM token or app key as stored (never its secret, which is kept only as a hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialRow {
    /// Its id (for revocation).
    pub id: String,
    /// The tenant it belongs to.
    #[serde(skip)]
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// Created.
    pub created: String,
    /// Revoked, if it was.
    pub revoked: Option<String>,
}

/// A scoped admin key as stored (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdminKeyRow {
    /// Its id (for revocation).
    pub id: String,
    /// Its name; the audit trail records its actions as `admin-key:<name>`.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<&'static str>,
    /// The one tenant it reaches, or none (every tenant).
    pub tenant: Option<String>,
    /// Created.
    pub created: String,
    /// Who created it.
    pub created_by: String,
    /// Revoked, if it was.
    pub revoked: Option<String>,
}

const ADMIN_KEY_COLUMNS: &str = "id, name, scopes, tenant_id, created, created_by, revoked";

fn admin_key(r: &crate::kernel::db::Row) -> AdminKeyRow {
    AdminKeyRow {
        id: r.text(0),
        name: r.text(1),
        scopes: crate::kernel::scopes::Scopes::from_stored(&r.text(2)).names(),
        tenant: r.opt_text(3),
        created: r.text(4),
        created_by: r.text(5),
        revoked: r.opt_text(6),
    }
}

impl Tx<'_> {
    /// Stores a new admin key.
    pub(crate) fn insert_admin_key(
        &mut self,
        k: &AdminKeyRow,
        scopes: &str,
        hash: &str,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO admin_keys (id, name, token_hash, scopes, tenant_id, created, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &params![
                &k.id,
                &k.name,
                hash,
                scopes,
                &k.tenant,
                &k.created,
                &k.created_by
            ],
        )?;
        Ok(())
    }

    /// Revokes a live admin key; returns it as it was, if there was one.
    pub(crate) fn revoke_admin_key(
        &mut self,
        id: &str,
        now: &str,
    ) -> StoreResult<Option<AdminKeyRow>> {
        let sql = format!(
            "UPDATE admin_keys SET revoked = $2 WHERE id = $1 AND revoked IS NULL \
             RETURNING {ADMIN_KEY_COLUMNS}"
        );
        Ok(self.fetch_opt(&sql, &params![id, now])?.map(|r| {
            let mut k = admin_key(&r);
            k.revoked = None;
            k
        }))
    }
}

impl Store {
    /// Every admin key, oldest first.
    pub(crate) async fn admin_keys(&self) -> StoreResult<Vec<AdminKeyRow>> {
        let sql = format!("SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys ORDER BY created, id");
        Ok(self
            .pool
            .fetch(&sql, &[])
            .await?
            .iter()
            .map(admin_key)
            .collect())
    }
}
