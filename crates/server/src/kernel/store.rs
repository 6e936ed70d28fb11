//! The store: SQLite (embedded, default) or PostgreSQL, behind one implementation.
//!
//! SQL is written once (`$n` placeholders, `ON CONFLICT`, `RETURNING` and recursive CTEs
//! work on both). What differs — drivers, connection setup, DDL types — lives in [`db`] and
//! [`migrate`], decided at connect time; no call site branches on the backend.

use std::path::PathBuf;

pub use super::db::Tx;
use super::db::{P, Pool, Row, placeholders};
use super::migrate;
use sqlx::postgres::PgPoolOptions;

use crate::params;

pub use crate::directory::store::{GroupRef, Member, StoredResource};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (userName, displayName…).
    #[error("unique constraint violated: {0}")]
    Unique(String),
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite failed.
    #[error("sqlite error: {0}")]
    Sqlite(String),
    /// A stored document could not be read back.
    #[error("corrupt stored document: {0}")]
    Corrupt(String),
    /// The database URL is not one we support.
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://…")]
    BadUrl(String),
}

/// Result of store operations.
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
    /// Most pooled connections (SQLite readers, or PostgreSQL connections).
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
    pub(crate) pool: Pool,
    /// Counts commits that wrote events (on this node, and on others via PostgreSQL
    /// `LISTEN`): the dispatcher and event streams wait on it instead of polling.
    events: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Counts (re)connections of the PostgreSQL listener: after one, notifications may have
    /// been missed.
    listens: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Told, before a write returns, which tenants the commit changed.
    after_commit: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn AfterCommit>>>,
}

/// Something that must see a tenant's commits before the writer's response leaves (the
/// entitlement snapshots: an app that triggered a change sees it on its next call).
pub trait AfterCommit: Send + Sync {
    /// The commit that changed these tenants is durable.
    fn committed(&self, tenants: Vec<String>) -> futures::future::BoxFuture<'_, ()>;
}

fn sqlite_path(url: &str) -> StoreResult<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::BadUrl(url.into()))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(StoreError::BadUrl(url.into()));
    }
    Ok(PathBuf::from(path))
}

impl Store {
    /// Connects, creating the SQLite file if needed, and applies pending migrations.
    pub async fn connect(url: &str, opts: &StoreOptions) -> StoreResult<Store> {
        let store = if url.starts_with("sqlite:") {
            let sync = match opts.sqlite_synchronous.to_ascii_uppercase().as_str() {
                "FULL" => "FULL",
                "EXTRA" => "EXTRA",
                _ => "NORMAL",
            };
            let sqlite =
                super::db::Sqlite::open(sqlite_path(url)?, sync, opts.max_connections as usize)?;
            Store {
                backend: Backend::Sqlite,
                pool: Pool::Sqlite(std::sync::Arc::new(sqlite)),
                events: Default::default(),
                listens: Default::default(),
                after_commit: Default::default(),
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = PgPoolOptions::new()
                .max_connections(opts.max_connections.max(2))
                .acquire_timeout(std::time::Duration::from_secs(30))
                .connect(url)
                .await?;
            Store {
                backend: Backend::Postgres,
                pool: Pool::Postgres(pg),
                events: Default::default(),
                listens: Default::default(),
                after_commit: Default::default(),
            }
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        migrate::run(&store.pool, store.backend).await?;
        Ok(store)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.pool.fetch("SELECT 1", &[]).await.is_ok()
    }

    /// Runs `f` in one write transaction: committed if it returns `Ok`, rolled back if not.
    /// Every engine command is one call to this.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        let (out, wrote_events, tenants) = self
            .pool
            .write(move |tx| {
                f(tx).map(|v| {
                    let tenants: Vec<String> = tx.tips.iter().map(|t| t.tenant.clone()).collect();
                    (v, !tx.pending.outbox.is_empty(), tenants)
                })
            })
            .await?;
        if wrote_events {
            self.events.send_modify(|n| *n = n.wrapping_add(1));
        }
        if let Some(hook) = self.after_commit.get()
            && !tenants.is_empty()
        {
            hook.committed(tenants).await;
        }
        Ok(out)
    }

    /// Sets what sees every commit before its write returns (once).
    pub fn set_after_commit(&self, hook: std::sync::Arc<dyn AfterCommit>) {
        let _ = self.after_commit.set(hook);
    }

    /// A receiver that changes each time the PostgreSQL listener (re)connects.
    pub fn listener_connects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.listens.subscribe()
    }

    /// A receiver that changes after every commit that wrote events.
    pub fn event_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// On PostgreSQL, listens for other nodes' commits of events (`NOTIFY`) and passes them
    /// on to [`Store::event_commits`]; reconnects after a lost connection (and then counts
    /// one commit and one [`Store::listener_connects`], since notifications may have been
    /// missed). Nothing to do on SQLite.
    pub fn listen_other_nodes(&self) -> Option<tokio::task::JoinHandle<()>> {
        let Pool::Postgres(pg) = &self.pool else {
            return None;
        };
        let (pg, events, listens) = (pg.clone(), self.events.clone(), self.listens.clone());
        Some(tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pg).await {
                    Ok(mut listener) => {
                        if listener.listen("seatkeeper_events").await.is_ok() {
                            listens.send_modify(|n| *n = n.wrapping_add(1));
                            events.send_modify(|n| *n = n.wrapping_add(1));
                            // `Ok(None)`: the connection was lost (the next call reconnects and
                            // listens again); whatever was sent meanwhile is lost, so it counts
                            // as a new connection.
                            loop {
                                match listener.try_recv().await {
                                    Ok(Some(_)) => {}
                                    Ok(None) => {
                                        tracing::warn!("LISTEN connection lost; reconnecting");
                                        listens.send_modify(|n| *n = n.wrapping_add(1));
                                    }
                                    Err(_) => break,
                                }
                                events.send_modify(|n| *n = n.wrapping_add(1));
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }))
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs one statement outside the engine, as a database console would: for operators'
    /// repairs and for tests that play an attacker editing rows by hand. Never used by the
    /// request path.
    pub async fn execute_unchecked(&self, sql: &str, params: Vec<P>) -> StoreResult<u64> {
        self.pool.execute(sql, &params).await
    }

    /// Closes all connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- settings ----

    /// Reads a setting.
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self
            .pool
            .fetch_opt("SELECT value FROM settings WHERE key = $1", &params![key])
            .await?
            .map(|r| r.text(0)))
    }

    /// Writes a setting (insert or replace).
    pub async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        self.pool
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &params![key, value],
            )
            .await?;
        Ok(())
    }

    /// Writes a setting if it is not set yet; returns whether it was written.
    pub async fn init_setting(&self, key: &str, value: &str) -> StoreResult<bool> {
        let n = self
            .pool
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &params![key, value],
            )
            .await?;
        Ok(n == 1)
    }

    // ---- tenants and tokens ----

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

    /// Looks a live credential up by its hash.
    pub async fn find_credential(
        &self,
        kind: Credential,
        hash: &str,
    ) -> StoreResult<Option<TokenRow>> {
        let sql = format!(
            "SELECT id, tenant_id, name, token_hash FROM {} WHERE token_hash = $1 AND revoked IS NULL",
            kind.table()
        );
        let row = self.pool.fetch_opt(&sql, &params![hash]).await?;
        Ok(row.map(|r| TokenRow {
            id: r.text(0),
            tenant_id: r.text(1),
            name: r.text(2),
            hash: r.text(3),
        }))
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

    // ---- audit and outbox (read side) ----

    /// Audit rows of a tenant after `after_seq`, oldest first.
    pub async fn audit_rows(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::kernel::chain::AuditRow>> {
        let rows = self
            .pool
            .fetch(
                "SELECT tenant_id, seq, at, actor, action, resource_type, resource_id, request_id, \
                 before_doc, after_doc, prev_hash, hash FROM audit_log \
                 WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &params![tenant, after_seq, limit],
            )
            .await?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    /// The audit signing key, created on first use.
    pub async fn audit_key(&self) -> StoreResult<ed25519_dalek::SigningKey> {
        const KEY: &str = "audit.signing_key";
        self.init_setting(KEY, &crate::kernel::chain::new_signing_key())
            .await?;
        let stored = self.setting(KEY).await?.unwrap_or_default();
        crate::kernel::chain::signing_key(&stored)
            .ok_or_else(|| StoreError::Corrupt("the audit signing key is not readable".into()))
    }

    /// A tenant's audit checkpoint, if its chain was pruned.
    pub async fn audit_checkpoint(
        &self,
        tenant: &str,
    ) -> StoreResult<Option<crate::kernel::chain::Checkpoint>> {
        Ok(self
            .pool
            .fetch_opt(
                "SELECT tenant_id, seq, hash, at, pruned, signature FROM audit_checkpoints WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?
            .map(|r| crate::kernel::chain::Checkpoint {
                tenant_id: r.text(0),
                seq: r.int(1),
                hash: r.text(2),
                at: r.text(3),
                pruned: r.text(4),
                signature: r.text(5),
            }))
    }

    /// Removes a tenant's audit records written before `before` (a stored stamp), in one
    /// transaction with a signed checkpoint where the kept chain now begins and an
    /// `audit.prune` record saying so. Returns the checkpoint, or `None` if nothing was
    /// old enough.
    pub async fn prune_audit(
        &self,
        tenant: &str,
        before: &str,
        now: &str,
        key: ed25519_dalek::SigningKey,
    ) -> StoreResult<Option<crate::kernel::chain::Checkpoint>> {
        let (tenant, before, now) = (tenant.to_string(), before.to_string(), now.to_string());
        self.write(move |tx| {
            tx.lock_tenant(&tenant)?;
            let Some(last) = tx.fetch_opt(
                "SELECT seq, hash, at FROM audit_log WHERE tenant_id = $1 AND at < $2 ORDER BY seq DESC LIMIT 1",
                &params![&tenant, &before],
            )?
            else {
                return Ok(None);
            };
            let mut cp = crate::kernel::chain::Checkpoint {
                tenant_id: tenant.clone(),
                seq: last.int(0),
                hash: last.text(1),
                at: last.text(2),
                pruned: now.clone(),
                signature: String::new(),
            };
            cp.sign(&key);
            let removed = tx.execute(
                "DELETE FROM audit_log WHERE tenant_id = $1 AND seq <= $2",
                &params![&tenant, cp.seq],
            )?;
            tx.execute(
                "INSERT INTO audit_checkpoints (tenant_id, seq, hash, at, pruned, signature) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, \
                 pruned = excluded.pruned, signature = excluded.signature",
                &params![&tenant, cp.seq, &cp.hash, &cp.at, &cp.pruned, &cp.signature],
            )?;
            let after = serde_json::json!({"through_seq": cp.seq, "before": before, "removed": removed, "checkpoint_hash": cp.hash});
            tx.audit(NewAudit {
                tenant_id: &tenant,
                at: &now,
                actor: "retention",
                action: "audit.prune",
                resource_type: "AuditLog",
                resource_id: &tenant,
                request_id: "retention",
                before: None,
                after: Some(after.to_string()),
            })?;
            Ok(Some(cp))
        })
        .await
    }

    /// Audit records of a tenant after `after_seq` that match a query, oldest first.
    pub async fn audit_query(
        &self,
        tenant: &str,
        q: &AuditQuery,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::kernel::chain::AuditRow>> {
        // An action ending in `.*` matches by prefix (`license.*`).
        let (action, action_prefix) = match q.action.as_deref() {
            Some(a) if a.ends_with(".*") => (String::new(), format!("{}.%", &a[..a.len() - 2])),
            Some(a) => (a.to_string(), String::new()),
            None => (String::new(), String::new()),
        };
        let rows = self
            .pool
            .fetch(
                "SELECT tenant_id, seq, at, actor, action, resource_type, resource_id, request_id, \
                 before_doc, after_doc, prev_hash, hash FROM audit_log \
                 WHERE tenant_id = $1 AND seq > $2 \
                 AND ($3 = '' OR at >= $3) AND ($4 = '' OR at <= $4) \
                 AND ($5 = '' OR actor = $5) AND ($6 = '' OR action = $6) AND ($7 = '' OR action LIKE $7) \
                 AND ($8 = '' OR resource_type = $8) AND ($9 = '' OR resource_id = $9) \
                 AND ($10 = '' OR request_id = $10) \
                 ORDER BY seq LIMIT $11",
                &params![
                    tenant,
                    after_seq,
                    q.from.as_deref().unwrap_or(""),
                    q.to.as_deref().unwrap_or(""),
                    q.actor.as_deref().unwrap_or(""),
                    &action,
                    &action_prefix,
                    q.resource_type.as_deref().unwrap_or(""),
                    q.resource_id.as_deref().unwrap_or(""),
                    q.request_id.as_deref().unwrap_or(""),
                    limit
                ],
            )
            .await?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    /// The latest `limit` license records of a user, oldest first. A license's records form
    /// a chain (each names the one before it in `prev`): chains start at the current
    /// licenses' latest records (`heads`) and at the user's revocations (indexed), and are
    /// read a link at a time for all of them at once. Records written before the chains
    /// existed (no `prev`) are found by scanning the tenant's older license records.
    pub async fn license_history(
        &self,
        tenant: &str,
        user: &str,
        products: &[String],
        heads: &[i64],
        limit: usize,
    ) -> StoreResult<Vec<crate::kernel::chain::AuditRow>> {
        const COLUMNS: &str = "tenant_id, seq, at, actor, action, resource_type, resource_id, \
                               request_id, before_doc, after_doc, prev_hash, hash";
        let ids: Vec<String> = products.iter().map(|p| format!("{user}/{p}")).collect();
        let mut frontier: Vec<i64> = heads.to_vec();
        if !ids.is_empty() {
            // Literal conditions: the planner uses the partial index on revocations.
            let sql = format!(
                "SELECT seq FROM audit_log WHERE tenant_id = $1 AND resource_type = 'License' \
                 AND action = 'license.revoked' AND resource_id IN ({}) ORDER BY seq DESC LIMIT {limit}",
                placeholders(2, ids.len())
            );
            let mut params = vec![P::from(tenant)];
            params.extend(ids.iter().map(P::from));
            frontier.extend(
                self.pool
                    .fetch(&sql, &params)
                    .await?
                    .iter()
                    .map(|r| r.int(0)),
            );
        }
        let mut found = std::collections::BTreeMap::<i64, crate::kernel::chain::AuditRow>::new();
        while !frontier.is_empty() && found.len() < limit {
            frontier.sort_unstable();
            frontier.dedup();
            frontier.retain(|s| !found.contains_key(s));
            if frontier.is_empty() {
                break;
            }
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq IN ({})",
                placeholders(2, frontier.len())
            );
            let mut params = vec![P::from(tenant)];
            params.extend(frontier.iter().map(|s| P::Int(*s)));
            let mut next = Vec::new();
            for row in self.pool.fetch(&sql, &params).await? {
                let rec = audit_from_row(&row);
                if rec.resource_type != "License" || !ids.contains(&rec.resource_id) {
                    continue;
                }
                match license_prev(&rec) {
                    Some(Some(prev)) => next.push(prev),
                    Some(None) => {}
                    None => {
                        let sql = format!(
                            "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq < $2 \
                             AND resource_type = 'License' AND resource_id = $3 ORDER BY seq DESC LIMIT {limit}"
                        );
                        let older = self
                            .pool
                            .fetch(&sql, &params![tenant, rec.seq, rec.resource_id.as_str()])
                            .await?;
                        for r in older {
                            let r = audit_from_row(&r);
                            found.insert(r.seq, r);
                        }
                    }
                }
                found.insert(rec.seq, rec);
            }
            frontier = next;
        }
        let skip = found.len().saturating_sub(limit);
        Ok(found.into_values().skip(skip).collect())
    }

    /// The tip of a tenant's audit chain.
    pub async fn audit_head(&self, tenant: &str) -> StoreResult<Option<(i64, String)>> {
        let row = self
            .pool
            .fetch_opt(
                "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?;
        Ok(row.map(|r| (r.int(0), r.text(1))))
    }

    /// Outbox events of a tenant after an id, oldest first.
    pub async fn outbox_after(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        let rows = self
            .pool
            .fetch(
                "SELECT id, tenant_id, event_type, resource_type, resource_id, payload, created FROM outbox \
                 WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &params![tenant, after, limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                id: r.int(0),
                tenant_id: r.text(1),
                event_type: r.text(2),
                resource_type: r.text(3),
                resource_id: r.text(4),
                payload: r.text(5),
                created: r.text(6),
            })
            .collect())
    }
}

/// The previous record a license record names: `Some(None)` for the first of its chain,
/// `None` for a record written before records named their predecessor.
fn license_prev(rec: &crate::kernel::chain::AuditRow) -> Option<Option<i64>> {
    let doc = rec.after.as_deref().or(rec.before.as_deref())?;
    let doc: serde_json::Value = serde_json::from_str(doc).ok()?;
    doc.get("prev").map(serde_json::Value::as_i64)
}

fn audit_from_row(r: &Row) -> crate::kernel::chain::AuditRow {
    crate::kernel::chain::AuditRow {
        tenant_id: r.text(0),
        seq: r.int(1),
        at: r.text(2),
        actor: r.text(3),
        action: r.text(4),
        resource_type: r.text(5),
        resource_id: r.text(6),
        request_id: r.text(7),
        before: r.opt_text(8),
        after: r.opt_text(9),
        prev_hash: r.text(10),
        hash: r.text(11),
    }
}

/// What to select from a tenant's audit trail (every part optional; times are stored
/// stamps, compared as text).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AuditQuery {
    /// At or after this instant.
    pub from: Option<String>,
    /// At or before this instant.
    pub to: Option<String>,
    /// Who.
    pub actor: Option<String>,
    /// What (`license.*` matches by prefix).
    pub action: Option<String>,
    /// `User`, `Group`, `License`, `Subscription`, `Rule`.
    pub resource_type: Option<String>,
    /// Which.
    pub resource_id: Option<String>,
    /// The request that did it.
    pub request_id: Option<String>,
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

/// The kinds of bearer credential a tenant has, each in a table of its own: a credential of
/// one kind is never found when another kind is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// SCIM tokens (`skt_`): the identity provider's, for `/scim/v2`.
    Scim,
    /// Application keys (`skp_`): read-only, for entitlement checks and tokens.
    App,
}

impl Credential {
    fn table(self) -> &'static str {
        match self {
            Credential::Scim => "scim_tokens",
            Credential::App => "app_keys",
        }
    }

    /// What an operator calls it.
    pub fn noun(self) -> &'static str {
        match self {
            Credential::Scim => "SCIM token",
            Credential::App => "app key",
        }
    }

    /// The prefix of its secrets.
    pub fn prefix(self) -> &'static str {
        match self {
            Credential::Scim => "skt_",
            Credential::App => "skp_",
        }
    }
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

/// One record of an audit batch (the shared fields are given once).
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// What, e.g. `license.assigned`.
    pub action: String,
    /// Which resource.
    pub resource_id: String,
    /// State before (JSON), if any.
    pub before: Option<String>,
    /// State after (JSON), if any.
    pub after: Option<String>,
}

/// Rows per multi-row insert of [`Tx::flush`].
const FLUSH_ROWS: usize = 100;

/// A multi-row insert: its table and columns, and its statements by row count (built once).
struct MultiInsert {
    head: &'static str,
    columns: usize,
    by_rows: std::sync::OnceLock<Vec<String>>,
}

static AUDIT_INSERT: MultiInsert = MultiInsert {
    head: "INSERT INTO audit_log (tenant_id, seq, at, actor, action, resource_type, resource_id, \
           request_id, before_doc, after_doc, prev_hash, hash) VALUES ",
    columns: 12,
    by_rows: std::sync::OnceLock::new(),
};

static OUTBOX_INSERT: MultiInsert = MultiInsert {
    head: "INSERT INTO outbox (tenant_id, event_type, resource_type, resource_id, payload, created) VALUES ",
    columns: 6,
    by_rows: std::sync::OnceLock::new(),
};

/// The statement inserting `rows` rows (1 ..= FLUSH_ROWS).
fn multi_insert(m: &'static MultiInsert, rows: usize) -> &'static str {
    let all = m.by_rows.get_or_init(|| {
        (1..=FLUSH_ROWS)
            .map(|n| {
                let tuples: Vec<String> = (0..n)
                    .map(|i| format!("({})", placeholders(i * m.columns + 1, m.columns)))
                    .collect();
                format!("{}{}", m.head, tuples.join(", "))
            })
            .collect()
    });
    all[rows.clamp(1, FLUSH_ROWS) - 1].as_str()
}

impl Tx<'_> {
    /// Appends many records of one cause to the tenant's hash chain: the tip is advanced once
    /// and the links are computed in memory, so a change of 10,000 licenses costs one
    /// statement per record instead of three. Returns the sequence number of the first record.
    pub fn audit_batch(
        &mut self,
        tenant: &str,
        at: &str,
        actor: &str,
        request_id: &str,
        resource_type: &str,
        entries: Vec<AuditEntry>,
    ) -> StoreResult<i64> {
        let (mut seq, mut prev) = self.chain_tip(tenant)?;
        let first = seq + 1;
        if entries.is_empty() {
            return Ok(first);
        }
        for e in entries {
            seq += 1;
            let mut rec = crate::kernel::chain::AuditRow {
                tenant_id: tenant.to_string(),
                seq,
                at: at.to_string(),
                actor: actor.to_string(),
                action: e.action,
                resource_type: resource_type.to_string(),
                resource_id: e.resource_id,
                request_id: request_id.to_string(),
                before: e.before,
                after: e.after,
                prev_hash: prev,
                hash: String::new(),
            };
            rec.hash = rec.compute_hash();
            prev = rec.hash.clone();
            self.pending.audit.push(rec);
        }
        self.move_chain_tip(tenant, seq, prev);
        Ok(first)
    }

    /// The sequence number the tenant's next audit record takes (the tenant's lock is taken:
    /// it stays true until this transaction audits something).
    pub fn next_audit_seq(&mut self, tenant: &str) -> StoreResult<i64> {
        Ok(self.chain_tip(tenant)?.0 + 1)
    }

    /// The tip of a tenant's chain, taking the tenant's lock if this transaction has not.
    fn chain_tip(&mut self, tenant: &str) -> StoreResult<(i64, String)> {
        self.lock_tenant(tenant)?;
        match self.tips.iter().find(|t| t.tenant == tenant) {
            Some(tip) => Ok((tip.seq, tip.hash.clone())),
            None => Err(StoreError::Corrupt(format!(
                "tenant {tenant}: audit chain tip not held"
            ))),
        }
    }

    /// Moves a tenant's chain tip in this transaction; [`Tx::flush`] stores it.
    fn move_chain_tip(&mut self, tenant: &str, seq: i64, hash: String) {
        if let Some(tip) = self.tips.iter_mut().find(|t| t.tenant == tenant) {
            tip.seq = seq;
            tip.hash = hash;
            tip.moved = true;
        }
    }

    /// Writes what the unit of work appended to the audit log and the outbox — multi-row
    /// inserts, then the chain tip once — just before it commits.
    pub(crate) fn flush(&mut self) -> StoreResult<()> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.outbox.is_empty() {
            self.notify_other_nodes()?;
        }
        for chunk in pending.audit.chunks(FLUSH_ROWS) {
            let mut params: Vec<P> = Vec::with_capacity(chunk.len() * 12);
            for rec in chunk {
                params.extend(params![
                    &rec.tenant_id,
                    rec.seq,
                    &rec.at,
                    &rec.actor,
                    &rec.action,
                    &rec.resource_type,
                    &rec.resource_id,
                    &rec.request_id,
                    &rec.before,
                    &rec.after,
                    &rec.prev_hash,
                    &rec.hash
                ]);
            }
            self.execute(multi_insert(&AUDIT_INSERT, chunk.len()), &params)?;
        }
        for chunk in pending.outbox.chunks(FLUSH_ROWS) {
            let mut params: Vec<P> = Vec::with_capacity(chunk.len() * 6);
            for row in chunk {
                params.extend(row.iter().map(P::from));
            }
            self.execute(multi_insert(&OUTBOX_INSERT, chunk.len()), &params)?;
        }
        // Each tenant's head row once: the chain tip and, if licensing moved them, the seat
        // counts.
        let mut moved: Vec<(String, i64, String, Option<String>)> = Vec::new();
        for t in self.tips.iter_mut().filter(|t| t.moved || t.lines_moved) {
            let lines = match (t.lines_moved, &t.seat_lines) {
                (true, Some(lines)) => Some(crate::licenses::store::lines_text(lines)?),
                _ => None,
            };
            t.moved = false;
            t.lines_moved = false;
            moved.push((t.tenant.clone(), t.seq, t.hash.clone(), lines));
        }
        for (tenant, seq, hash, lines) in moved {
            match lines {
                Some(lines) => self.execute(
                    "UPDATE audit_heads SET seq = $2, hash = $3, seat_lines = $4 WHERE tenant_id = $1",
                    &params![&tenant, seq, &hash, &lines],
                )?,
                None => self.execute(
                    "UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1",
                    &params![&tenant, seq, &hash],
                )?,
            };
        }
        Ok(())
    }

    /// Appends an audit record to the tenant's hash chain.
    pub fn audit(&mut self, entry: NewAudit<'_>) -> StoreResult<i64> {
        // The tenant's lock (taken here if not yet) serialises a tenant's writers, so the
        // chain never forks.
        let (seq, prev) = self.chain_tip(entry.tenant_id)?;
        let mut rec = crate::kernel::chain::AuditRow {
            tenant_id: entry.tenant_id.to_string(),
            seq: seq + 1,
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
        let seq = rec.seq;
        self.move_chain_tip(entry.tenant_id, seq, rec.hash.clone());
        self.pending.audit.push(rec);
        Ok(seq)
    }

    /// Writes an outbox event (inserted with the unit of work's other events before commit).
    pub fn outbox(
        &mut self,
        tenant: &str,
        event_type: &str,
        resource_type: &str,
        resource_id: &str,
        payload: &str,
        now: &str,
    ) -> StoreResult<()> {
        // A tenant's outbox ids must grow in commit order (see `events`): drawn under its lock.
        self.lock_tenant(tenant)?;
        self.pending.outbox.push([
            tenant.to_string(),
            event_type.to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
            payload.to_string(),
            now.to_string(),
        ]);
        Ok(())
    }
}
