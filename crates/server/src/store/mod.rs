//! The store: SQLite (embedded, default) or PostgreSQL, behind one implementation.
//!
//! Both backends are reached through sqlx's `Any` driver with SQL written once (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`, recursive CTEs all work on both). What differs —
//! connection setup, DDL types, single-writer pooling on SQLite — is decided here, at
//! connect time, and nowhere else: no call site branches on the backend.

pub mod directory;
mod migrate;

use std::str::FromStr;
use std::sync::Arc;

use futures::future::BoxFuture;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

pub use directory::{GroupRef, Member, StoredResource};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (userName, displayName…).
    #[error("unique constraint violated: {0}")]
    Unique(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored document could not be read back.
    #[error("corrupt stored document: {0}")]
    Corrupt(String),
    /// The database URL is not one we support.
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://…")]
    BadUrl(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file in WAL mode.
    Sqlite,
    /// A PostgreSQL server shared by any number of nodes.
    Postgres,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections in the read pool (and, on PostgreSQL, the only pool).
    pub max_connections: u32,
    /// SQLite `synchronous` mode: `NORMAL` (default: durable across process crashes) or
    /// `FULL` (also across power loss).
    pub sqlite_synchronous: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            sqlite_synchronous: "NORMAL".into(),
        }
    }
}

/// The store handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    read: AnyPool,
    write: AnyPool,
}

/// A write transaction.
pub struct Tx {
    pub(crate) tx: Transaction<'static, Any>,
}

fn map_db_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Unique(db.message().to_string());
    }
    StoreError::Db(e)
}

impl Store {
    /// Connects, creating the SQLite file if needed, and applies pending migrations.
    pub async fn connect(url: &str, opts: &StoreOptions) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let store = match backend {
            Backend::Sqlite => {
                let url = if url.contains("mode=") {
                    url.to_string()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let sync = match opts.sqlite_synchronous.to_ascii_uppercase().as_str() {
                    "FULL" => "FULL",
                    "EXTRA" => "EXTRA",
                    _ => "NORMAL",
                };
                let pragmas: Arc<Vec<String>> = Arc::new(
                    [
                        "PRAGMA journal_mode = WAL".to_string(),
                        format!("PRAGMA synchronous = {sync}"),
                        "PRAGMA busy_timeout = 10000".into(),
                        "PRAGMA foreign_keys = ON".into(),
                        "PRAGMA case_sensitive_like = ON".into(),
                        "PRAGMA cache_size = -65536".into(),
                        "PRAGMA temp_store = MEMORY".into(),
                    ]
                    .to_vec(),
                );
                let p2 = pragmas.clone();
                // One writer connection: SQLite has one writer at a time anyway, and a single
                // connection avoids busy-retry storms and upgrade deadlocks between writers.
                let write = AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |c, _| apply_pragmas(c, pragmas.clone()))
                    .connect(&url)
                    .await?;
                migrate::run(&write, backend).await?;
                let read = AnyPoolOptions::new()
                    .max_connections(opts.max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |c, _| apply_pragmas(c, p2.clone()))
                    .connect(&url)
                    .await?;
                Store {
                    backend,
                    read,
                    write,
                }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(opts.max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?;
                migrate::run(&pool, backend).await?;
                Store {
                    backend,
                    read: pool.clone(),
                    write: pool,
                }
            }
        };
        Ok(store)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.read).await.is_ok()
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(Tx {
            tx: self.write.begin().await?,
        })
    }

    pub(crate) fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Closes all connections.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    // ---- settings ----

    /// Reads a setting.
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.write)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Writes a setting if it is not set yet; returns whether it was written.
    pub async fn init_setting(&self, key: &str, value: &str) -> StoreResult<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- tenants and tokens ----

    /// Creates a tenant and the tip of its audit chain.
    pub async fn create_tenant(&self, id: &str, name: &str, now: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO tenants (id, name, created) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx.tx)
            .await
            .map_err(map_db_err)?;
        sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)")
            .bind(id)
            .bind(crate::audit::GENESIS)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await
    }

    /// A tenant's name, if it exists.
    pub async fn tenant(&self, id: &str) -> StoreResult<Option<TenantRow>> {
        let row = sqlx::query("SELECT id, name, created FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| TenantRow {
            id: r.get(0),
            name: r.get(1),
            created: r.get(2),
        }))
    }

    /// All tenants.
    pub async fn tenants(&self) -> StoreResult<Vec<TenantRow>> {
        let rows = sqlx::query("SELECT id, name, created FROM tenants ORDER BY created, id")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TenantRow {
                id: r.get(0),
                name: r.get(1),
                created: r.get(2),
            })
            .collect())
    }

    /// Stores a SCIM token (by hash only).
    pub async fn create_scim_token(
        &self,
        id: &str,
        tenant: &str,
        name: &str,
        hash: &str,
        now: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO scim_tokens (id, tenant_id, name, token_hash, created) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(tenant)
            .bind(name)
            .bind(hash)
            .bind(now)
            .execute(&self.write)
            .await
            .map_err(map_db_err)?;
        Ok(())
    }

    /// Revokes a token of a tenant; returns whether one was revoked.
    pub async fn revoke_scim_token(&self, tenant: &str, id: &str, now: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE scim_tokens SET revoked = $3 WHERE tenant_id = $1 AND id = $2 AND revoked IS NULL")
            .bind(tenant)
            .bind(id)
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Looks a live token up by its hash.
    pub async fn find_scim_token(&self, hash: &str) -> StoreResult<Option<TokenRow>> {
        let row = sqlx::query("SELECT id, tenant_id, name, token_hash FROM scim_tokens WHERE token_hash = $1 AND revoked IS NULL")
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| TokenRow {
            id: r.get(0),
            tenant_id: r.get(1),
            name: r.get(2),
            hash: r.get(3),
        }))
    }

    // ---- audit (read side) ----

    /// Audit rows of a tenant from `after_seq` on, oldest first.
    pub async fn audit_rows(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::audit::AuditRow>> {
        let rows = sqlx::query(
            "SELECT tenant_id, seq, at, actor, action, resource_type, resource_id, request_id, \
             before_doc, after_doc, prev_hash, hash FROM audit_log \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    /// The tip of a tenant's audit chain.
    pub async fn audit_head(&self, tenant: &str) -> StoreResult<Option<(i64, String)>> {
        let row = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Outbox events of a tenant after an id, oldest first.
    pub async fn outbox_after(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, event_type, resource_type, resource_id, payload, created FROM outbox \
             WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                tenant_id: r.get(1),
                event_type: r.get(2),
                resource_type: r.get(3),
                resource_id: r.get(4),
                payload: r.get(5),
                created: r.get(6),
            })
            .collect())
    }
}

fn apply_pragmas(
    conn: &mut sqlx::AnyConnection,
    pragmas: Arc<Vec<String>>,
) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        for p in pragmas.iter() {
            conn.execute(p.as_str()).await?;
        }
        Ok(())
    })
}

fn audit_from_row(r: &AnyRow) -> crate::audit::AuditRow {
    crate::audit::AuditRow {
        tenant_id: r.get(0),
        seq: r.get(1),
        at: r.get(2),
        actor: r.get(3),
        action: r.get(4),
        resource_type: r.get(5),
        resource_id: r.get(6),
        request_id: r.get(7),
        before: r.get(8),
        after: r.get(9),
        prev_hash: r.get(10),
        hash: r.get(11),
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

/// A SCIM token (hash only).
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Token id (not secret).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name, used as the audit actor.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
}

/// One outbox event.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Monotonic id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// e.g. `user.created`.
    pub event_type: String,
    /// `User` or `Group`.
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: String,
    /// JSON payload.
    pub payload: String,
    /// When it was written.
    pub created: String,
}

/// A new audit entry (the chain fields are computed in [`Tx::audit`]).
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// When.
    pub at: &'a str,
    /// Who (token name).
    pub actor: &'a str,
    /// What, e.g. `user.create`.
    pub action: &'a str,
    /// `User` or `Group`.
    pub resource_type: &'a str,
    /// Which.
    pub resource_id: &'a str,
    /// The HTTP request id.
    pub request_id: &'a str,
    /// State before (JSON), if any.
    pub before: Option<String>,
    /// State after (JSON), if any.
    pub after: Option<String>,
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await.map_err(map_db_err)
    }

    /// Appends an audit record to the tenant's hash chain.
    pub async fn audit(&mut self, entry: NewAudit<'_>) -> StoreResult<i64> {
        // Advancing the tip first takes the tip's row lock (PostgreSQL) for the rest of the
        // transaction, so concurrent writers of one tenant chain one after another.
        let row = sqlx::query(
            "UPDATE audit_heads SET seq = seq + 1 WHERE tenant_id = $1 RETURNING seq, hash",
        )
        .bind(entry.tenant_id)
        .fetch_one(&mut *self.tx)
        .await?;
        let seq: i64 = row.get(0);
        let prev: String = row.get(1);
        let mut rec = crate::audit::AuditRow {
            tenant_id: entry.tenant_id.to_string(),
            seq,
            at: entry.at.to_string(),
            actor: entry.actor.to_string(),
            action: entry.action.to_string(),
            resource_type: entry.resource_type.to_string(),
            resource_id: entry.resource_id.to_string(),
            request_id: entry.request_id.to_string(),
            before: entry.before,
            after: entry.after,
            prev_hash: prev,
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, seq, at, actor, action, resource_type, resource_id, \
             request_id, before_doc, after_doc, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&rec.tenant_id)
        .bind(rec.seq)
        .bind(&rec.at)
        .bind(&rec.actor)
        .bind(&rec.action)
        .bind(&rec.resource_type)
        .bind(&rec.resource_id)
        .bind(&rec.request_id)
        .bind(&rec.before)
        .bind(&rec.after)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("UPDATE audit_heads SET hash = $2 WHERE tenant_id = $1")
            .bind(entry.tenant_id)
            .bind(&rec.hash)
            .execute(&mut *self.tx)
            .await?;
        Ok(seq)
    }

    /// Writes an outbox event.
    pub async fn outbox(
        &mut self,
        tenant: &str,
        event_type: &str,
        resource_type: &str,
        resource_id: &str,
        payload: &str,
        now: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO outbox (tenant_id, event_type, resource_type, resource_id, payload, created) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant)
        .bind(event_type)
        .bind(resource_type)
        .bind(resource_id)
        .bind(payload)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl FromStr for Backend {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" => Ok(Backend::Postgres),
            other => Err(StoreError::BadUrl(other.to_string())),
        }
    }
}
