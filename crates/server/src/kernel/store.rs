//! The store: SQLite (embedded, default) or PostgreSQL, behind one implementation.
//!
//! SQL is written once (`$n` placeholders, `ON CONFLICT`, `RETURNING` and recursive CTEs
//! work on both). What differs — drivers, connection setup, DDL types — lives in [`db`] and
//! [`migrate`], decided at connect time; no call site branches on the backend.

use std::path::PathBuf;

pub use super::chain::VENDOR;
pub use super::db::{Backend, StoreError, StoreResult, Tx};
use super::db::{COMMITS_CHANNEL, EVENTS_CHANNEL, P, Pool, Reach, Row};
use super::migrate;
use sqlx::postgres::PgPoolOptions;

use crate::params;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most pooled connections (SQLite readers, or PostgreSQL connections).
    pub max_connections: u32,
    /// SQLite `synchronous` mode: `NORMAL` (default: durable across process crashes) or
    /// `FULL` (also across power loss).
    pub sqlite_synchronous: String,
    /// What opening may do to the database.
    pub open: Open,
    /// PostgreSQL: a direct connection for `LISTEN` (`--notify-database`), when the main URL
    /// goes through a pooler in transaction mode (PgBouncer), which cannot hold a `LISTEN`.
    pub notify_url: Option<String>,
}

/// What opening a database may do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Create a missing SQLite file and apply pending migrations (the server, `migrate`).
    CreateAndMigrate,
    /// Create a missing SQLite file but leave the schema as it is (`migrate`, which then
    /// reports what it applies).
    Create,
    /// Use the database as it is: a missing SQLite file, or a schema behind or ahead of
    /// this binary, is an error that says what to run (the other CLI commands).
    Existing,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            sqlite_synchronous: "NORMAL".into(),
            open: Open::CreateAndMigrate,
            notify_url: None,
        }
    }
}

/// The store handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    pub(crate) pool: Pool,
    /// PostgreSQL: where `LISTEN` connects, when not through the pool.
    notify: Option<sqlx::PgPool>,
    /// Counts commits that wrote events (on this node, and on others via PostgreSQL
    /// `LISTEN`): the dispatcher and event streams wait on it instead of polling.
    events: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Counts (re)connections of the PostgreSQL listener: after one, notifications may have
    /// been missed.
    listens: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Counts other nodes' commits (PostgreSQL `LISTEN` only, by their notices): what this
    /// node's own commits changed, [`AfterCommit`] already saw.
    others: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// What the notices counted in `others` named, until [`Store::take_heard`] takes it.
    heard: std::sync::Arc<std::sync::Mutex<Heard>>,
    /// Told, before a write returns, which tenants the commit changed.
    after_commit: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn AfterCommit>>>,
    /// Moved by every commit of this process, before the write returns.
    generations: std::sync::Arc<Generations>,
    /// The writer connection's `PRAGMA data_version` when last looked at (SQLite).
    outside_version: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Tenants this process committed to since [`Store::take_touched`] last took them, once
    /// something follows them ([`Store::follow_touched`]).
    touched: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    following: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// PostgreSQL: the listener hears every node's commits (`seatkeeper_commits`), so what
    /// readers rendered may be kept ([`Store::is_current`]); false until it first listens and
    /// from a lost connection until it listens again.
    hears_commits: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Commit generations, for caches of what readers render: a reader takes a [`Mark`] before
/// it reads, and what it rendered is current while the mark is. Every commit of this process
/// moves the generation of each tenant it locked (tenants share [`Generations::SLOTS`] slots:
/// a shared slot costs a neighbour a cache miss, never a stale answer), or the global one
/// when it reaches everything; it moves them after the commit and before the write returns,
/// so a client that wrote and then reads never reads what was rendered before its write.
/// Commits of other processes are seen by [`Store::look_for_outside_commits`].
pub(crate) struct Generations {
    global: std::sync::atomic::AtomicU64,
    slots: Box<[std::sync::atomic::AtomicU64]>,
}

/// The tenants other nodes' commits named since [`Store::take_heard`] last took them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Heard {
    /// A commit reached everything, or notices may have been missed (the listener connected).
    pub everything: bool,
    /// The tenants the notices named.
    pub tenants: std::collections::BTreeSet<String>,
}

/// Moves the generations another node's commit, heard of on [`COMMITS_CHANNEL`], reached,
/// and keeps what it named in `heard`; returns whether it was another node's (this node's
/// own commits moved them before their writes returned).
fn heard_commit(generations: &Generations, heard: &std::sync::Mutex<Heard>, payload: &str) -> bool {
    let (node, reached) = payload.split_once('|').unwrap_or(("", payload));
    if node == super::db::NODE.as_str() {
        return false;
    }
    let mut heard = heard.lock().unwrap_or_else(|e| e.into_inner());
    if reached == "*" || reached.is_empty() {
        generations.moved(&[], Reach::Everything);
        heard.everything = true;
    } else {
        let tenants: Vec<String> = reached.split(',').map(str::to_string).collect();
        generations.moved(&tenants, Reach::Nothing);
        if !heard.everything {
            heard.tenants.extend(tenants);
        }
    }
    true
}

pub(crate) use super::db::model_key;

/// What a reader saw of the generations before it read (see [`Generations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Mark {
    global: u64,
    slot: u64,
}

impl Generations {
    const SLOTS: usize = 1024;

    fn slot_index(tenant: &str) -> usize {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::with_seed(0x5ea7).hash_one(tenant);
        (h as usize) % Self::SLOTS
    }

    fn slot(&self, tenant: &str) -> &std::sync::atomic::AtomicU64 {
        &self.slots[Self::slot_index(tenant)]
    }

    fn mark(&self, tenant: &str) -> Mark {
        use std::sync::atomic::Ordering::Acquire;
        Mark {
            global: self.global.load(Acquire),
            slot: self.slot(tenant).load(Acquire),
        }
    }

    fn moved(&self, tenants: &[String], reach: Reach) {
        use std::sync::atomic::Ordering::Release;
        // A locked tenant always moves: what it locked it may have changed.
        for t in tenants {
            self.slot(t).fetch_add(1, Release);
        }
        let global = match reach {
            Reach::Everything => true,
            Reach::Locked => tenants.is_empty(),
            Reach::Nothing => false,
        };
        if global {
            self.global.fetch_add(1, Release);
        }
    }
}

/// Every generation at once, for a cache that spans tenants (see [`Generations`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Marks {
    global: u64,
    slots: Vec<u64>,
}

impl Marks {
    /// Whether a commit that reached everything came between `self` and `later` (a cache
    /// built under `self` is then stale as a whole).
    pub(crate) fn everything_moved(&self, later: &Marks) -> bool {
        self.global != later.global || self.slots.len() != later.slots.len()
    }

    /// The slots whose tenants committed between `self` and `later`.
    pub(crate) fn moved_slots(&self, later: &Marks) -> Vec<bool> {
        self.slots
            .iter()
            .zip(&later.slots)
            .map(|(a, b)| a != b)
            .collect()
    }
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            global: Default::default(),
            slots: (0..Self::SLOTS).map(|_| Default::default()).collect(),
        }
    }
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
        .ok_or_else(|| StoreError::BadUrl(super::secret::redact_url(url)))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(StoreError::BadUrl(super::secret::redact_url(url)));
    }
    Ok(PathBuf::from(path))
}

/// How long the first connection to PostgreSQL may take before start-up gives up.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes one connection before the pool does, so that a failure is reported with its cause
/// (refused, no answer, TLS, authentication) within [`CONNECT_TIMEOUT`], not as a pool
/// timeout half a minute later.
async fn first_connection(options: &sqlx::postgres::PgConnectOptions) -> StoreResult<()> {
    use sqlx::Connection;
    let at = format!("{}:{}", options.get_host(), options.get_port());
    let connecting = sqlx::postgres::PgConnection::connect_with(options);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from PostgreSQL at {at} within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(sqlx::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(
            StoreError::Unavailable(format!("connection refused to {at}")),
        ),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {at}: {}",
            connect_failure(options, &e)
        ))),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

/// Every statement on this connection keeps one plan whatever values it is given
/// (`plan_cache_mode = force_generic_plan`), as SQLite's query planner stability guarantee
/// does there. Left to choose, PostgreSQL plans a prepared statement afresh for its values
/// whenever its estimates favour that, and after an `ANALYZE` it did so for nearly every
/// lookup by filter: planning took five times as long as running it, and the two-node soak
/// fell behind (BENCHMARKS.md). The statements here are written so that one plan serves
/// every value: they narrow by the tenant and an index's key, never by a value's rarity.
async fn plans_never_follow_values(
    conn: &mut sqlx::postgres::PgConnection,
) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    conn.execute("SET plan_cache_mode = force_generic_plan")
        .await
        .map(|_| ())
}

/// A pooled connection that sat idle is asked whether it is still alive before it is
/// handed out (one round trip); one in steady use is not, unless a connection was found
/// dead lately. sqlx's own test asks every time, which cost a round trip per read and per
/// transaction. A connection that died in the pool fails the first statement sent on it;
/// reads and `BEGIN` are then sent once more (`kernel::db`), and for a few seconds every
/// connection is tested here, so those that died with it are replaced without failing a
/// request each.
const TEST_IF_IDLE_FOR: std::time::Duration = std::time::Duration::from_millis(500);

async fn alive_if_idle(
    conn: &mut sqlx::postgres::PgConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if meta.idle_for >= TEST_IF_IDLE_FOR || super::db::connections_suspect() {
        conn.ping().await?;
    }
    Ok(true)
}

/// A connection failure in an operator's words, with the TLS setting that explains it.
fn connect_failure(options: &sqlx::postgres::PgConnectOptions, e: &sqlx::Error) -> String {
    use sqlx::postgres::PgSslMode;
    let mode = match options.get_ssl_mode() {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    };
    let text = e.to_string();
    if matches!(e, sqlx::Error::Database(_)) {
        // The server's own refusal (authentication, a missing client certificate): as it is.
        return text;
    }
    if text.contains("does not support TLS") || text.contains("does not support SSL") {
        return format!("the server does not offer TLS, and sslmode={mode} requires it");
    }
    if matches!(e, sqlx::Error::Tls(_)) || text.contains("peer certificate") {
        return format!(
            "TLS failed with sslmode={mode}: {text}. Check that sslrootcert names the CA that \
             signed the server's certificate and, with verify-full, that the host is one the \
             certificate names"
        );
    }
    text
}

/// A unit of work's result and what its commit changes on this node.
struct Written<T> {
    out: T,
    wrote_events: bool,
    tenants: Vec<String>,
    reach: Reach,
}

impl<T> Written<T> {
    fn of(tx: &Tx<'_>, out: T) -> Written<T> {
        Written {
            out,
            wrote_events: tx.wrote_events || !tx.pending.outbox.is_empty(),
            tenants: tx.tips.iter().map(|t| t.tenant.clone()).collect(),
            reach: tx.reach,
        }
    }
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
            let path = sqlite_path(url)?;
            if opts.open == Open::Existing && !path.exists() {
                return Err(StoreError::Schema(format!(
                    "there is no database at {}: check the path, or create it with \
                     `seatkeeper migrate` (or `seatkeeper serve`)",
                    path.display()
                )));
            }
            let sqlite = super::db::Sqlite::open(path, sync, opts.max_connections as usize)?;
            Store {
                backend: Backend::Sqlite,
                pool: Pool::Sqlite(std::sync::Arc::new(sqlite)),
                notify: None,
                events: Default::default(),
                listens: Default::default(),
                others: Default::default(),
                heard: Default::default(),
                after_commit: Default::default(),
                generations: Default::default(),
                outside_version: Default::default(),
                touched: Default::default(),
                following: Default::default(),
                hears_commits: Default::default(),
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| {
                StoreError::BadUrl(format!("{}: {e}", super::secret::redact_url(url)))
            })?;
            first_connection(&options).await?;
            let pg = PgPoolOptions::new()
                .max_connections(opts.max_connections.max(2))
                .acquire_timeout(std::time::Duration::from_secs(30))
                .after_connect(|conn, _| Box::pin(plans_never_follow_values(conn)))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| Box::pin(alive_if_idle(conn, meta)))
                .connect_with(options)
                .await?;
            let notify = match &opts.notify_url {
                Some(url) => {
                    let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| {
                        StoreError::BadUrl(format!(
                            "--notify-database {}: {e}",
                            super::secret::redact_url(url)
                        ))
                    })?;
                    first_connection(&options).await?;
                    // One connection, held by the listener.
                    Some(
                        PgPoolOptions::new()
                            .max_connections(1)
                            .connect_lazy_with(options),
                    )
                }
                None => None,
            };
            Store {
                backend: Backend::Postgres,
                pool: Pool::Postgres(std::sync::Arc::new(super::db::Pg::new(pg))),
                notify,
                events: Default::default(),
                listens: Default::default(),
                others: Default::default(),
                heard: Default::default(),
                after_commit: Default::default(),
                generations: Default::default(),
                outside_version: Default::default(),
                touched: Default::default(),
                following: Default::default(),
                hears_commits: Default::default(),
            }
        } else {
            return Err(StoreError::BadUrl(super::secret::redact_url(url)));
        };
        match opts.open {
            Open::CreateAndMigrate => {
                migrate::run(&store.pool, store.backend).await?;
            }
            Open::Create => {}
            Open::Existing => migrate::check(&store.pool, store.backend).await?,
        }
        Ok(store)
    }

    /// Applies pending migrations; returns the versions applied (none: already current).
    pub async fn migrate(&self) -> StoreResult<Vec<i64>> {
        migrate::run(&self.pool, self.backend).await
    }

    /// The schema version this binary writes.
    pub fn schema_version() -> i64 {
        migrate::latest()
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
        self.write_keyed(None, f).await
    }

    /// [`Store::write`] for a unit of work that locks `tenant` and no other tenant (a SCIM
    /// write): on PostgreSQL it may share its transaction and commit with the tenant's other
    /// waiting writes (a per-tenant group commit; see `kernel::db::Pg`).
    pub async fn write_for<T, E, F>(&self, tenant: &str, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_keyed(Some(tenant), f).await
    }

    /// [`Store::write_for`] for a unit of work that may run again from the start after its
    /// transaction rolled back: it reads what it needs in the transaction and changes nothing
    /// outside it. On PostgreSQL a batch of such writes takes no savepoints unless one of them
    /// fails (a round trip less per write; see `kernel::db::Pool::write_keyed_again`).
    pub async fn write_for_again<T, E, F>(&self, tenant: &str, mut f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        let done = self
            .pool
            .write_keyed_again(tenant, move |tx| f(tx).map(|v| Written::of(tx, v)))
            .await?;
        Ok(self.committed(done).await)
    }

    async fn write_keyed<T, E, F>(&self, tenant: Option<&str>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        let done = self
            .pool
            .write_keyed(tenant, move |tx| f(tx).map(|v| Written::of(tx, v)))
            .await?;
        Ok(self.committed(done).await)
    }

    /// What follows a commit on this node: readers' caches move, the tenants are noted for the
    /// followers, event readers wake, and the after-commit hook sees it.
    async fn committed<T>(&self, done: Written<T>) -> T {
        let Written {
            out,
            wrote_events,
            tenants,
            reach,
        } = done;
        self.generations.moved(&tenants, reach);
        if !tenants.is_empty()
            && self.following.load(std::sync::atomic::Ordering::Relaxed)
            && let Ok(mut t) = self.touched.lock()
        {
            t.extend(tenants.iter().cloned());
        }
        if wrote_events {
            self.events.send_modify(|n| *n = n.wrapping_add(1));
        }
        if let Some(hook) = self.after_commit.get()
            && !tenants.is_empty()
        {
            hook.committed(tenants).await;
        }
        out
    }

    /// Sets what sees every commit before its write returns (once).
    pub(crate) fn set_after_commit(&self, hook: std::sync::Arc<dyn AfterCommit>) {
        let _ = self.after_commit.set(hook);
    }

    /// A receiver that changes each time the PostgreSQL listener (re)connects.
    pub(crate) fn listener_connects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.listens.subscribe()
    }

    /// A receiver that changes after another node's commit (PostgreSQL; never on SQLite,
    /// where the tick and [`Store::look_for_outside_commits`] see other processes); what
    /// those commits named, [`Store::take_heard`] tells.
    pub(crate) fn other_node_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.others.subscribe()
    }

    /// What other nodes' commits named since the last call; `everything` after a commit that
    /// reached everything, or after the listener (re)connected and may have missed some.
    pub(crate) fn take_heard(&self) -> Heard {
        std::mem::take(&mut *self.heard.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Wakes whatever waits on [`Store::event_commits`] (the dispatcher, after this node added
    /// an endpoint).
    pub(crate) fn wake_event_readers(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes after every commit that wrote events.
    pub(crate) fn event_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// On PostgreSQL, listens for every node's commits (`NOTIFY`): those that wrote events
    /// (`seatkeeper_events`) are passed on to [`Store::event_commits`]; every other node's
    /// commit (`seatkeeper_commits`, its payload the node and the tenants it locked, or `*`)
    /// moves this node's generations, so what readers rendered here follows other nodes'
    /// writes, and is passed on to [`Store::other_node_commits`]. After a lost
    /// connection it listens again, moves every generation and counts one commit of events and
    /// one [`Store::listener_connects`], since notifications may have been missed; while it is
    /// not listening, nothing rendered is current. Nothing to do on SQLite.
    pub(crate) fn listen_other_nodes(&self) -> Option<tokio::task::JoinHandle<()>> {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        let Pool::Postgres(pg) = &self.pool else {
            return None;
        };
        let (pg, events, listens, others, heard, generations, hears) = (
            self.notify.clone().unwrap_or_else(|| pg.pool.clone()),
            self.events.clone(),
            self.listens.clone(),
            self.others.clone(),
            self.heard.clone(),
            self.generations.clone(),
            self.hears_commits.clone(),
        );
        Some(tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pg).await {
                    Ok(mut listener) => {
                        if listener
                            .listen_all([EVENTS_CHANNEL, COMMITS_CHANNEL])
                            .await
                            .is_ok()
                        {
                            // Anything rendered before now may have missed a commit.
                            generations.moved(&[], Reach::Everything);
                            heard.lock().unwrap_or_else(|e| e.into_inner()).everything = true;
                            hears.store(true, Release);
                            listens.send_modify(|n| *n = n.wrapping_add(1));
                            events.send_modify(|n| *n = n.wrapping_add(1));
                            others.send_modify(|n| *n = n.wrapping_add(1));
                            loop {
                                match listener.try_recv().await {
                                    Ok(Some(n)) if n.channel() == COMMITS_CHANNEL => {
                                        if heard_commit(&generations, &heard, n.payload()) {
                                            others.send_modify(|n| *n = n.wrapping_add(1));
                                        }
                                    }
                                    Ok(Some(_)) => {
                                        events.send_modify(|n| *n = n.wrapping_add(1));
                                    }
                                    // `Ok(None)`: the connection was lost; whatever was sent
                                    // meanwhile is lost with it. Listen again from the top.
                                    Ok(None) | Err(_) => break,
                                }
                            }
                            hears.store(false, Relaxed);
                            generations.moved(&[], Reach::Everything);
                            tracing::warn!("LISTEN connection lost; reconnecting");
                            continue;
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
        let n = self.pool.execute(sql, &params).await;
        self.generations.moved(&[], Reach::Everything);
        n
    }

    /// From now on, keeps the tenants each commit changed for [`Store::take_touched`].
    pub(crate) fn follow_touched(&self) {
        self.following
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The tenants this process has committed to since the last call (for samplers that
    /// follow changes without reading every tenant; see [`Store::follow_touched`]).
    pub(crate) fn take_touched(&self) -> Vec<String> {
        self.touched
            .lock()
            .map(|mut t| std::mem::take(&mut *t).into_iter().collect())
            .unwrap_or_default()
    }

    /// The commit generations as a reader sees them before reading `tenant`.
    pub(crate) fn mark(&self, tenant: &str) -> Mark {
        self.generations.mark(tenant)
    }

    /// Every generation as a reader sees them before reading across tenants.
    pub(crate) fn marks(&self) -> Marks {
        use std::sync::atomic::Ordering::Acquire;
        let g = &self.generations;
        Marks {
            global: g.global.load(Acquire),
            slots: g.slots.iter().map(|s| s.load(Acquire)).collect(),
        }
    }

    /// The slot of a tenant's generation, an index into [`Marks::moved_slots`].
    pub(crate) fn slot_of(&self, tenant: &str) -> usize {
        Generations::slot_index(tenant)
    }

    /// Whether what was rendered under `mark` is still current: no commit of this node
    /// since, and (PostgreSQL) none of another node heard of since, with the listener hearing.
    pub(crate) fn is_current(&self, tenant: &str, mark: Mark) -> bool {
        (self.backend == Backend::Sqlite
            || self
                .hears_commits
                .load(std::sync::atomic::Ordering::Acquire))
            && self.generations.mark(tenant) == mark
    }

    /// Looks whether another process committed to the SQLite file since the last look (the
    /// CLI's `apply`, or an operator's repair), and if so moves every generation. On
    /// PostgreSQL other nodes write all the time and nothing here can see it, so readers
    /// there cache nothing ([`Store::caches_reads`]). Returns whether another process had
    /// committed.
    pub(crate) async fn look_for_outside_commits(&self) -> StoreResult<bool> {
        if self.backend != Backend::Sqlite {
            return Ok(false);
        }
        // data_version is per connection and moves only for other connections' commits: on
        // the one writer connection, only for other processes'.
        let version = self
            .pool
            .write(|tx| {
                tx.reaches_nothing_rendered();
                Ok::<_, StoreError>(
                    tx.fetch_opt("PRAGMA data_version", &[])?
                        .map(|r| r.int(0))
                        .unwrap_or(0),
                )
            })
            .await?;
        let before = self
            .outside_version
            .swap(version, std::sync::atomic::Ordering::AcqRel);
        if before != version {
            self.generations.moved(&[], Reach::Everything);
        }
        Ok(before != version)
    }

    /// Whether readers may cache what they render: only where every writer is this process
    /// or is seen by [`Store::look_for_outside_commits`] (SQLite).
    pub(crate) fn caches_reads(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    /// Closes all connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- settings ----

    /// Reads a setting.
    pub(crate) async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self
            .pool
            .fetch_opt("SELECT value FROM settings WHERE key = $1", &params![key])
            .await?
            .map(|r| r.text(0)))
    }

    /// Writes a setting (insert or replace).
    pub(crate) async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        self.pool
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &params![key, value],
            )
            .await?;
        Ok(())
    }

    /// Writes a setting if it is not set yet; returns whether it was written.
    pub(crate) async fn init_setting(&self, key: &str, value: &str) -> StoreResult<bool> {
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

    // ---- audit and outbox (read side) ----
}

pub(crate) fn audit_from_row(r: &Row) -> crate::kernel::chain::AuditRow {
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

/// Who is acting, as the audit trail records it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Recorded as the audit actor (`admin`, `cli`, a token's name, `billing:stripe`…).
    pub name: String,
    /// Recorded as the request id.
    pub request_id: String,
}

/// An administrative change for the audit trail: what was done to which resource, with its
/// state before and after (secrets left out by the caller).
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// The chain: a tenant id, or [`VENDOR`].
    pub chain: &'a str,
    /// What, e.g. `credential.create`.
    pub action: &'a str,
    /// `Credential`, `Webhook`, `BillingSecret`…
    pub resource_type: &'a str,
    /// Which.
    pub resource_id: &'a str,
    /// State before, if any.
    pub before: Option<serde_json::Value>,
    /// State after, if any.
    pub after: Option<serde_json::Value>,
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

impl Tx<'_> {
    /// Appends many records of one cause to the tenant's hash chain: the tip is advanced once
    /// and the links are computed in memory, so a change of 10,000 licenses costs one
    /// statement per record instead of three. Returns the sequence number of the first record.
    pub(crate) fn audit_batch(
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
    pub(crate) fn next_audit_seq(&mut self, tenant: &str) -> StoreResult<i64> {
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
    pub(super) fn move_chain_tip(&mut self, tenant: &str, seq: i64, hash: String) {
        if let Some(tip) = self.tips.iter_mut().find(|t| t.tenant == tenant) {
            tip.seq = seq;
            tip.hash = hash;
            tip.moved = true;
        }
    }

    /// Serialises every write of a tenant: takes the row lock of the tenant's
    /// audit chain tip (PostgreSQL; SQLite has one writer anyway) before anything is counted.
    /// Returns the version of the tenant's licensing model (its `model_version` and the brake's
    /// `held_version` together: either moving gives a new one). The lock is taken once per
    /// transaction; the chain tip it returns is kept for the audit records that follow.
    pub(crate) fn lock_tenant(&mut self, tenant: &str) -> StoreResult<i64> {
        if let Some(tip) = self.tips.iter().find(|t| t.tenant == tenant) {
            return Ok(tip.model_version);
        }
        let row = self
            .fetch_opt(super::db::LOCK_TENANT, &params![tenant])?
            .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant} has no audit chain")))?;
        self.tips.push(crate::kernel::db::ChainTip {
            tenant: tenant.to_string(),
            seq: row.int(1),
            hash: row.text(2),
            model_version: model_key(row.int(0), row.int(4)),
            moved: false,
            seat_lines_text: row.text(3),
            seat_lines: None,
            lines_moved: false,
        });
        Ok(model_key(row.int(0), row.int(4)))
    }

    /// A setting, read in the transaction.
    pub(crate) fn setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        Ok(self
            .fetch_opt("SELECT value FROM settings WHERE key = $1", &params![key])?
            .map(|r| r.text(0)))
    }

    /// Writes a setting (insert or replace) in the transaction.
    pub(crate) fn put_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        self.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &params![key, value],
        )?;
        Ok(())
    }

    /// Records an administrative change on its chain (audit record only; the caller adds an
    /// outbox event where consumers care).
    pub(crate) fn record_change(
        &mut self,
        actor: &Actor,
        at: &str,
        c: Change<'_>,
    ) -> StoreResult<i64> {
        self.audit(NewAudit {
            tenant_id: c.chain,
            at,
            actor: &actor.name,
            action: c.action,
            resource_type: c.resource_type,
            resource_id: c.resource_id,
            request_id: &actor.request_id,
            before: c.before.as_ref().map(serde_json::Value::to_string),
            after: c.after.as_ref().map(serde_json::Value::to_string),
        })
    }

    /// The tip of a tenant's audit chain, `(seq, hash)`, under its lock.
    pub(crate) fn audit_tip(&mut self, tenant: &str) -> StoreResult<(i64, String)> {
        self.chain_tip(tenant)
    }

    /// Appends an audit record to the tenant's hash chain.
    pub(crate) fn audit(&mut self, entry: NewAudit<'_>) -> StoreResult<i64> {
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
    pub(crate) fn outbox(
        &mut self,
        tenant: &str,
        event_type: crate::kernel::catalogue::EventType,
        resource_type: &str,
        resource_id: &str,
        payload: &str,
        now: &str,
    ) -> StoreResult<()> {
        // A tenant's outbox ids must grow in commit order (see `events`): drawn under its lock.
        self.lock_tenant(tenant)?;
        self.pending.outbox.push([
            tenant.to_string(),
            event_type.name().to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
            payload.to_string(),
            now.to_string(),
        ]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_moves_what_it_may_have_changed() {
        let g = Generations::default();
        let (a, b) = ("tenant-a", "tenant-b");
        let before = (g.mark(a), g.mark(b));
        // A tenant it locked moves, whatever else the transaction says; another does not.
        for reach in [Reach::Locked, Reach::Nothing] {
            let m = (g.mark(a), g.mark(b));
            g.moved(&[a.to_string()], reach);
            assert_ne!(g.mark(a), m.0, "{reach:?}");
            if !std::ptr::eq(g.slot(a), g.slot(b)) {
                assert_eq!(g.mark(b), m.1, "{reach:?}");
            }
        }
        // Bookkeeping that locks nothing moves nothing.
        let m = (g.mark(a), g.mark(b));
        g.moved(&[], Reach::Nothing);
        assert_eq!((g.mark(a), g.mark(b)), m);
        // A write that locks nothing, or reaches everything, moves every tenant.
        for (locked, reach) in [
            (vec![], Reach::Locked),
            (vec![a.to_string()], Reach::Everything),
        ] {
            let m = (g.mark(a), g.mark(b));
            g.moved(&locked, reach);
            assert_ne!(g.mark(a), m.0);
            assert_ne!(g.mark(b), m.1);
        }
        assert_ne!((g.mark(a), g.mark(b)), before);
    }

    #[test]
    fn another_nodes_notices_name_what_to_catch_up() {
        let g = Generations::default();
        let heard = std::sync::Mutex::new(Heard::default());
        let own = format!("{}|a,b", &*super::super::db::NODE);
        assert!(!heard_commit(&g, &heard, &own), "this node's own commit");
        assert_eq!(*heard.lock().unwrap(), Heard::default());
        let m = g.mark("a");
        assert!(heard_commit(&g, &heard, "other|a,b"));
        assert!(heard_commit(&g, &heard, "other|b,c"));
        assert_ne!(g.mark("a"), m);
        let took = std::mem::take(&mut *heard.lock().unwrap());
        assert!(!took.everything);
        assert_eq!(
            took.tenants.into_iter().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        // A commit that reached everything catches everything up.
        assert!(heard_commit(&g, &heard, "other|d"));
        assert!(heard_commit(&g, &heard, "other|*"));
        assert!(heard.lock().unwrap().everything);
    }
}
