//! The two database drivers behind one small interface: run a statement, get rows.
//!
//! SQL is written once with `$1, $2, …` placeholders, which PostgreSQL takes natively and
//! SQLite takes as named parameters. SQLite runs in-process through rusqlite, inline on the
//! calling task: a statement costs microseconds, and avoiding a hop to a worker thread per
//! statement (as async SQLite drivers do) is what makes a SCIM write cost one transaction
//! rather than a dozen thread switches. Writes go to the one writer connection, owned by a
//! thread of its own that commits waiting writes together (SQLite allows one writer at a
//! time anyway); reads use a pool of reader connections (WAL lets them run beside the
//! writer). PostgreSQL goes through sqlx.
//! These enum matches are the only places that know which database is in use.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Column, Postgres, Row as _, TypeInfo};

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
    /// A text value holds the NUL character, which PostgreSQL cannot store: refused on both
    /// backends alike, before anything runs.
    #[error("text values must not contain the NUL character (U+0000)")]
    Nul,
    /// The database's schema is not this binary's: not created yet, behind, or newer.
    #[error("{0}")]
    Schema(String),
    /// The database cannot be reached or written now (PostgreSQL down or restarting, the
    /// connection cut, SQLite's disk full): nothing was written; retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The same failure, for each job of a batch it failed (its kind kept where it matters:
    /// an unavailable database stays unavailable).
    fn for_each(&self) -> StoreError {
        match self {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Nul => StoreError::Nul,
            other => StoreError::Sqlite(other.to_string()),
        }
    }

    /// Whether the database is out of reach rather than the request wrong: a connection
    /// refused, reset or timed out, a server shutting down or starting, a disk full.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Db(e) => pg_unavailable(e),
            _ => false,
        }
    }
}

/// PostgreSQL errors that mean "not now" (SQLSTATE class 08, connection exceptions; 57P0x,
/// the server shutting down or starting; 53xxx, out of resources), and the pool's own.
fn pg_unavailable(e: &sqlx::Error) -> bool {
    pg_connection_lost(e)
        || match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                true
            }
            sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("53")),
            _ => false,
        }
}

/// Whether an error says the connection it came on is gone (closed, reset, or ended by the
/// server): another connection may work. A protocol error is a connection that answered
/// nonsense (a broken link or proxy, seen first as a bad reply to the TLS request).
fn pg_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// Until when (milliseconds from [`EPOCH`]) every pooled connection is tested before it is
/// handed out, because one was found dead: those that died with it are replaced rather than
/// failing a request each.
static SUSPECT_UNTIL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);
/// How long the pool's connections stay suspect after one was found dead.
const SUSPECT_FOR: std::time::Duration = std::time::Duration::from_secs(5);

fn millis_since_epoch() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn suspect_connections() {
    let until = millis_since_epoch() + SUSPECT_FOR.as_millis() as u64;
    SUSPECT_UNTIL.fetch_max(until, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a connection was found dead lately (see `kernel::store`'s pool test).
pub(crate) fn connections_suspect() -> bool {
    millis_since_epoch() < SUSPECT_UNTIL.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sends what `send` sends (a read, or a `BEGIN`: nothing that changes anything) once more if
/// it met a dead connection. A pooled connection is not tested before it is handed out unless
/// it sat idle (or one was found dead lately), so one that died in the pool fails the first
/// thing sent on it: then the pool's connections are tested for a while, and the second try
/// gets a tested one.
async fn once_more_if_lost<T, F, Fut>(kind: &'static str, send: F) -> Result<T, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    pg_round_trip(kind);
    match send().await {
        Err(e) if pg_connection_lost(&e) => {
            suspect_connections();
            pg_round_trip(kind);
            send().await
        }
        sent => sent,
    }
}

/// Begins a transaction (see [`once_more_if_lost`]).
async fn pg_begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    once_more_if_lost("write", || pool.begin()).await
}

/// Refuses text parameters holding NUL (PostgreSQL's `text` cannot hold one; SQLite would
/// truncate it in places): one answer on both backends.
fn no_nul(params: &[P]) -> StoreResult<()> {
    if params
        .iter()
        .any(|p| matches!(p, P::Text(s) if s.as_bytes().contains(&0)))
    {
        return Err(StoreError::Nul);
    }
    Ok(())
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

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum P {
    /// SQL NULL (typed as text on PostgreSQL).
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
}

impl From<&str> for P {
    fn from(s: &str) -> P {
        P::Text(s.to_string())
    }
}
impl From<String> for P {
    fn from(s: String) -> P {
        P::Text(s)
    }
}
impl From<&String> for P {
    fn from(s: &String) -> P {
        P::Text(s.clone())
    }
}
impl From<i64> for P {
    fn from(i: i64) -> P {
        P::Int(i)
    }
}
impl From<Option<String>> for P {
    fn from(s: Option<String>) -> P {
        s.map_or(P::Null, P::Text)
    }
}
impl From<&Option<String>> for P {
    fn from(s: &Option<String>) -> P {
        s.clone().map_or(P::Null, P::Text)
    }
}
impl From<&scim::sql::SqlParam> for P {
    fn from(p: &scim::sql::SqlParam) -> P {
        match p {
            scim::sql::SqlParam::Text(s) => P::Text(s.clone()),
            scim::sql::SqlParam::Int(i) => P::Int(*i),
        }
    }
}

/// Builds a parameter array: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    ($($p:expr),* $(,)?) => { [$($crate::__P::from($p)),*] };
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Int(i64),
    Text(String),
}

/// `$start, $start+1, …`: the placeholders of an `IN` list of `n` parameters.
pub fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The vendor feed's read of the outbox after position ($1 = tx, $2 = id): on PostgreSQL in
/// (tx, id) order and only rows no running transaction can still precede (`tx` below the
/// oldest running transaction); on SQLite (one writer, ids in commit order, every tx 0) by id.
pub(crate) fn settled_outbox(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "WHERE $1 = $1 AND id > $2 ORDER BY id",
        Backend::Postgres => {
            "WHERE (tx > $1 OR (tx = $1 AND id > $2)) \
             AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint ORDER BY tx, id"
        }
    }
}

/// Whether a vendor endpoint `w` has settled events past its cursor (see [`settled_outbox`]).
pub(crate) fn vendor_endpoint_behind(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "EXISTS (SELECT 1 FROM outbox o WHERE o.id > w.cursor)",
        Backend::Postgres => {
            "EXISTS (SELECT 1 FROM outbox o WHERE (o.tx > w.cursor_tx OR (o.tx = w.cursor_tx AND o.id > w.cursor)) \
             AND o.tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"
        }
    }
}

/// The vendor feed's newest settled position (see [`settled_outbox`]).
pub(crate) fn last_settled_outbox(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SELECT tx, id FROM outbox ORDER BY id DESC LIMIT 1",
        Backend::Postgres => {
            "SELECT tx, id FROM outbox WHERE tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
             ORDER BY tx DESC, id DESC LIMIT 1"
        }
    }
}

/// A result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<V>);

impl Row {
    /// The row without its first `n` columns.
    pub(crate) fn skip(&self, n: usize) -> Row {
        Row(self.0.iter().skip(n).cloned().collect())
    }

    /// Column `i` as text ("" when NULL).
    pub(crate) fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }

    /// Column `i` as borrowed text ("" when NULL or not text).
    pub fn str(&self, i: usize) -> &str {
        match self.0.get(i) {
            Some(V::Text(s)) => s,
            _ => "",
        }
    }

    /// Column `i` as optional text.
    pub(crate) fn opt_text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(V::Text(s)) => Some(s.clone()),
            Some(V::Int(n)) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Column `i` as an optional integer.
    pub(crate) fn opt_int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(V::Int(n)) => Some(*n),
            Some(V::Text(s)) => s.parse().ok(),
            _ => None,
        }
    }

    /// Column `i` as an integer (0 when NULL).
    pub(crate) fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(V::Int(n)) => *n,
            Some(V::Text(s)) => s.parse().unwrap_or_default(),
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------- SQLite

/// The SQL as SQLite prepares it: each `$n` becomes `?n`, SQLite's placeholder for the n-th
/// parameter, so parameters bind by position. (To SQLite a `$n` is a *named* parameter,
/// numbered by first appearance, and finding a name is a linear scan: binding a 1,200-value
/// multi-row insert by name took milliseconds.) Quoted text is left as it is.
fn sqlite_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return std::borrow::Cow::Borrowed(sql);
    }
    std::borrow::Cow::Owned(renumber(sql, |n| format!("?{n}")))
}

/// `sql` with each `$n` outside quotes renumbered `$(n + by)` (a statement placed after
/// others' parameters).
pub(crate) fn shift_placeholders(sql: &str, by: usize) -> String {
    renumber(sql, |n| format!("${}", n + by))
}

/// `sql` with each placeholder `$n` outside quoted text replaced by `to(n)`.
fn renumber(sql: &str, to: impl Fn(usize) -> String) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    chars.next();
                }
                out.push_str(&to(n));
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

fn map_sqlite(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        // SQLITE_CONSTRAINT_UNIQUE (2067) and SQLITE_CONSTRAINT_PRIMARYKEY (1555).
        if f.extended_code == 2067 || f.extended_code == 1555 {
            return StoreError::Unique(msg.clone().unwrap_or_default());
        }
        // The disk is full (or the file may grow no more), or the file cannot be written.
        if matches!(
            f.code,
            rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::ReadOnly
        ) {
            return StoreError::Unavailable(e.to_string());
        }
    }
    StoreError::Sqlite(e.to_string())
}

/// Binds `params[i]` to `?{i+1}` (see [`sqlite_sql`]); values past the highest placeholder
/// the SQL uses are not bound.
fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[P]) -> rusqlite::Result<()> {
    let count = stmt.parameter_count();
    for (i, p) in params.iter().enumerate().take(count) {
        let idx = i + 1;
        match p {
            P::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null)?,
            P::Int(n) => stmt.raw_bind_parameter(idx, n)?,
            P::Text(s) => stmt.raw_bind_parameter(idx, s.as_str())?,
        }
    }
    Ok(())
}

/// SQL texts by address and length: the text as written, and as SQLite prepares it.
type PreparedSql = std::collections::HashMap<(usize, usize), (String, std::rc::Rc<str>)>;

thread_local! {
    /// Each thread's SQL as SQLite prepares it, by the text's address and length (the text is
    /// compared on a hit: an address can be reused by another statement). Most statements are
    /// literals: rewriting them at every call allocated and copied each one.
    static SQLITE_SQL: std::cell::RefCell<PreparedSql> = Default::default();
}

/// [`sqlite_sql`], remembered per thread.
fn with_sqlite_sql<T>(sql: &str, f: impl FnOnce(&str) -> T) -> T {
    if !sql.contains('$') {
        return f(sql);
    }
    let key = (sql.as_ptr() as usize, sql.len());
    let hit = SQLITE_SQL.with(|c| {
        c.borrow()
            .get(&key)
            .filter(|(orig, _)| orig == sql)
            .map(|(_, prepared)| prepared.clone())
    });
    let prepared = match hit {
        Some(p) => p,
        None => {
            let p: std::rc::Rc<str> = sqlite_sql(sql).into();
            SQLITE_SQL.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() > 2048 {
                    c.clear();
                }
                c.insert(key, (sql.to_string(), p.clone()));
            });
            p
        }
    };
    f(&prepared)
}

fn sqlite_fetch(conn: &rusqlite::Connection, sql: &str, params: &[P]) -> StoreResult<Vec<Row>> {
    no_nul(params)?;
    let mut stmt = with_sqlite_sql(sql, |s| conn.prepare_cached(s)).map_err(map_sqlite)?;
    bind(&mut stmt, params).map_err(map_sqlite)?;
    let n = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_sqlite)? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            vals.push(match r.get_ref(i).map_err(map_sqlite)? {
                ValueRef::Null => V::Null,
                ValueRef::Integer(n) => V::Int(n),
                ValueRef::Real(f) => V::Int(f as i64),
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    V::Text(String::from_utf8_lossy(t).into_owned())
                }
            });
        }
        out.push(Row(vals));
    }
    Ok(out)
}

fn sqlite_exec(conn: &rusqlite::Connection, sql: &str, params: &[P]) -> StoreResult<u64> {
    no_nul(params)?;
    let mut stmt = with_sqlite_sql(sql, |s| conn.prepare_cached(s)).map_err(map_sqlite)?;
    bind(&mut stmt, params).map_err(map_sqlite)?;
    stmt.raw_execute().map(|n| n as u64).map_err(map_sqlite)
}

/// A unit of work for the SQLite writer thread. It runs inside a savepoint of the batch's
/// transaction, keeps its own result, and is answered once the batch's fate is known: a job
/// is told it succeeded only if it succeeded and the batch committed.
trait Job: Send {
    /// Runs the work in the batch's transaction; returns whether it succeeded. `carried`
    /// (PostgreSQL batches) holds the chain tips the batch's earlier writes left (under locks
    /// this transaction holds), and is replaced by this write's when it succeeds.
    fn run(&mut self, conn: TxRef<'_>, carried: Option<&mut Vec<Carried>>) -> bool;
    /// Whether the work may run again after its transaction rolled back (see
    /// [`Pool::write_keyed_again`]).
    fn again(&self) -> bool {
        false
    }
    /// Answers the caller. A job that never ran is answered with an error.
    fn answer(self: Box<Self>, batch: Result<(), StoreError>);
}

/// Runs a unit of work and then its end ([`Tx::flush`]); on success, leaves its chain tips in
/// `carried` for the batch's next write.
fn run_unit<T, E>(
    work: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    conn: TxRef<'_>,
    carried: Option<&mut Vec<Carried>>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    let mut tx = Tx::new(conn);
    if let Some(carried) = &carried {
        tx.tips = carried.iter().map(Carried::tip).collect();
    }
    let result = work(&mut tx).and_then(|v| tx.flush().map(|()| v).map_err(E::from));
    if result.is_ok()
        && let Some(carried) = carried
    {
        match tx
            .tips
            .iter()
            .map(Carried::of)
            .collect::<StoreResult<Vec<_>>>()
        {
            Ok(next) => *carried = next,
            // The next write reads the head rows again.
            Err(_) => carried.clear(),
        }
    }
    result
}

/// Answers a job's caller from its own result and its batch's.
fn answer_unit<T, E>(
    result: Option<Result<T, E>>,
    batch: Result<(), StoreError>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
) where
    E: From<StoreError>,
{
    let out = match (result, batch) {
        (Some(Ok(v)), Ok(())) => Ok(v),
        (Some(Err(e)), _) => Err(e),
        (Some(Ok(_)) | None, Err(e)) => Err(E::from(e)),
        (None, Ok(())) => Err(E::from(StoreError::Sqlite(
            "the write could not run".into(),
        ))),
    };
    let _ = reply.send(out);
}

struct Unit<T, E, F> {
    work: Option<F>,
    result: Option<Result<T, E>>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Unit<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
{
    fn run(&mut self, conn: TxRef<'_>, carried: Option<&mut Vec<Carried>>) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = run_unit(work, conn, carried);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, batch: Result<(), StoreError>) {
        answer_unit(self.result, batch, self.reply);
    }
}

/// A unit of work that may run again: its result is the last run's.
struct Again<T, E, F> {
    work: F,
    result: Option<Result<T, E>>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Again<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnMut(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
{
    fn run(&mut self, conn: TxRef<'_>, carried: Option<&mut Vec<Carried>>) -> bool {
        let result = run_unit(&mut self.work, conn, carried);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn again(&self) -> bool {
        true
    }

    fn answer(self: Box<Self>, batch: Result<(), StoreError>) {
        answer_unit(self.result, batch, self.reply);
    }
}

/// Statements the writer is made to fail, to test what a failing savepoint does (empty
/// outside tests).
#[derive(Default)]
struct Faults {
    #[cfg(test)]
    fail: Mutex<Vec<&'static str>>,
}

impl Faults {
    /// Fails `sql` if a test asked for it (once per request).
    fn check(&self, _sql: &str) -> StoreResult<()> {
        #[cfg(test)]
        if let Ok(mut fail) = self.fail.lock()
            && let Some(i) = fail.iter().position(|s| *s == _sql)
        {
            fail.remove(i);
            return Err(StoreError::Sqlite(format!("injected failure of {_sql}")));
        }
        Ok(())
    }
}

/// Runs one of the writer's own statements (BEGIN, SAVEPOINT…).
fn writer_exec(conn: &rusqlite::Connection, faults: &Faults, sql: &str) -> StoreResult<()> {
    faults.check(sql)?;
    sqlite_exec(conn, sql, &[]).map(|_| ())
}

/// Most jobs committed together by one SQLite transaction.
const MAX_BATCH: usize = 256;

/// The SQLite side: one writer thread with group commit, a pool of readers.
///
/// Writes are jobs sent to a dedicated thread that owns the only writer connection. The
/// thread takes every job waiting, runs each in its own savepoint (a failing job rolls back
/// alone), commits them in one transaction, and only then answers them: every answered write
/// is committed, and under load many writes share one commit.
pub struct Sqlite {
    path: PathBuf,
    pragmas: Vec<String>,
    jobs: std::sync::mpsc::Sender<Box<dyn Job>>,
    #[cfg_attr(not(test), allow(dead_code))]
    faults: Arc<Faults>,
    readers: Mutex<Vec<rusqlite::Connection>>,
    max_readers: usize,
}

impl Sqlite {
    pub(crate) fn open(
        path: PathBuf,
        synchronous: &str,
        max_readers: usize,
    ) -> StoreResult<Sqlite> {
        let pragmas = vec![
            "PRAGMA journal_mode = WAL".to_string(),
            format!("PRAGMA synchronous = {synchronous}"),
            "PRAGMA busy_timeout = 10000".into(),
            "PRAGMA foreign_keys = ON".into(),
            // LIKE must be case-sensitive: folded columns carry case-insensitivity, and
            // caseExact attributes must not match another case.
            "PRAGMA case_sensitive_like = ON".into(),
            "PRAGMA cache_size = -65536".into(),
            // No memory-mapped reads: a reader in WAL mode drops its page cache whenever
            // another connection has committed, so under steady writes it reads its pages
            // again (a `pread` and a copy each), but with a map every growth of the file
            // remapped it in every connection, which cost as much (page faults, unmaps, TLB
            // shootdowns in the soak's profile).
            // temp_store stays FILE: see `statement_journals_spill_to_a_file`.
        ];
        let writer = Self::connect(&path, &pragmas)?;
        writer
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}"
            ))
            .map_err(map_sqlite)?;
        let checkpointer = Self::connect(&path, &pragmas)?;
        let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, kicked))
            .map_err(|e| StoreError::Sqlite(format!("cannot start the checkpoint thread: {e}")))?;
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn Job>>();
        let faults = Arc::new(Faults::default());
        let writer_faults = faults.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, kick, &writer_faults))
            .map_err(|e| StoreError::Sqlite(format!("cannot start the writer thread: {e}")))?;
        Ok(Sqlite {
            path,
            pragmas,
            jobs,
            faults,
            readers: Mutex::new(Vec::new()),
            max_readers: max_readers.max(1),
        })
    }

    fn connect(path: &PathBuf, pragmas: &[String]) -> StoreResult<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path).map_err(map_sqlite)?;
        conn.set_prepared_statement_cache_capacity(256);
        // The query planner stability guarantee: a plan never depends on bound values. Without
        // it, SQLite 3.5x re-prepares a cached statement whenever a new value is bound to a
        // parameter the plan looked at (`LIMIT $n`, for one), which is nearly every step here.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(map_sqlite)?;
        for p in pragmas {
            // journal_mode returns a row; the others return nothing.
            let mut stmt = conn.prepare(p).map_err(map_sqlite)?;
            let mut rows = stmt.raw_query();
            while rows.next().map_err(map_sqlite)?.is_some() {}
        }
        Ok(conn)
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let conn = self.readers.lock().ok().and_then(|mut v| v.pop());
        let conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.path, &self.pragmas)?,
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < self.max_readers
        {
            pool.push(conn);
        }
        result
    }

    async fn submit<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        let (reply, recv) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Box<dyn Job> = Box::new(Unit {
            work: Some(f),
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .map_err(|_| E::from(StoreError::Sqlite("the writer thread has stopped".into())))?;
        recv.await
            .map_err(|_| E::from(StoreError::Sqlite("the writer thread dropped a job".into())))?
    }
}

/// Least time between two background checkpoints.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// WAL pages after which the writer checkpoints by itself, which is what brings the WAL back
/// to its start (a checkpoint beside a busy writer rarely finishes the log). Four times
/// SQLite's default: between two of the writer's turns the checkpoint thread has copied
/// nearly everything, so the writer's turn is short.
const WRITER_CHECKPOINT_PAGES: u32 = 4_000;

/// Copies committed WAL pages into the database file beside the writer, so the writer seldom
/// stops for the copy and its fsyncs (a PASSIVE checkpoint waits for no one). Woken by
/// commits; at most one checkpoint per pause.
fn checkpoint_loop(conn: rusqlite::Connection, kicked: std::sync::mpsc::Receiver<()>) {
    while kicked.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint failed");
        }
        std::thread::sleep(CHECKPOINT_PAUSE);
    }
}

fn writer_loop(
    conn: rusqlite::Connection,
    rx: std::sync::mpsc::Receiver<Box<dyn Job>>,
    kick: std::sync::mpsc::SyncSender<()>,
    faults: &Faults,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = writer_exec(&conn, faults, "BEGIN IMMEDIATE") {
            // Nothing ran: every job is answered with the error.
            for job in batch {
                job.answer(Err(e.for_each()));
            }
            continue;
        }
        // Each job in its own savepoint, so a failing one rolls back alone. If a savepoint
        // cannot be taken, rolled back or released, the batch can no longer tell one job's
        // writes from another's: nothing more runs and the whole batch rolls back.
        let mut broken: Option<StoreError> = None;
        for job in batch.iter_mut() {
            if broken.is_some() {
                break;
            }
            if let Err(e) = writer_exec(&conn, faults, "SAVEPOINT job") {
                broken = Some(e);
                break;
            }
            if !job.run(TxRef::Sqlite(&conn), None)
                && let Err(e) = writer_exec(&conn, faults, "ROLLBACK TO job")
            {
                broken = Some(e);
                break;
            }
            if let Err(e) = writer_exec(&conn, faults, "RELEASE job") {
                broken = Some(e);
            }
        }
        let outcome = match broken {
            Some(e) => {
                tracing::error!(error = %e, "a savepoint failed; the write batch is rolled back");
                Err(e)
            }
            None => writer_exec(&conn, faults, "COMMIT"),
        };
        match &outcome {
            Ok(()) => {
                // Full: a wake-up is already pending.
                let _ = kick.try_send(());
            }
            // SQLite may have rolled the transaction back itself (an I/O error, a full disk).
            Err(_) if !conn.is_autocommit() => {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "rolling back a failed write batch failed");
                }
            }
            Err(_) => {}
        }
        for job in batch {
            job.answer(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(e.for_each()),
            });
        }
    }
}

// ---------------------------------------------------------------- PostgreSQL

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn pg_bind<'q>(sql: &'q str, params: &'q [P]) -> PgQuery<'q> {
    // Statements are assembled from this crate's fixed fragments and placeholders; every
    // value, including all client text, is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in params {
        q = match p {
            P::Null => q.bind(None::<String>),
            P::Int(n) => q.bind(*n),
            P::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

fn pg_row(r: &PgRow) -> StoreResult<Row> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match col.type_info().name() {
            "INT8" => r.try_get::<Option<i64>, _>(i)?.map_or(V::Null, V::Int),
            "INT4" => r
                .try_get::<Option<i32>, _>(i)?
                .map_or(V::Null, |n| V::Int(n.into())),
            "INT2" => r
                .try_get::<Option<i16>, _>(i)?
                .map_or(V::Null, |n| V::Int(n.into())),
            "BOOL" => r
                .try_get::<Option<bool>, _>(i)?
                .map_or(V::Null, |b| V::Int(b.into())),
            _ => r.try_get::<Option<String>, _>(i)?.map_or(V::Null, V::Text),
        };
        vals.push(v);
    }
    Ok(Row(vals))
}

fn map_pg(e: sqlx::Error) -> StoreError {
    if pg_connection_lost(&e) {
        suspect_connections();
    }
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Unique(db.message().to_string());
    }
    if pg_unavailable(&e) {
        return StoreError::Unavailable(e.to_string());
    }
    StoreError::Db(e)
}

/// Statements sent to PostgreSQL (each a round trip), by whether a write transaction sent it.
fn pg_round_trip(kind: &'static str) {
    metrics::counter!("seatkeeper_database_round_trips_total", "kind" => kind).increment(1);
}

/// How long a tenant's write lane waits for work before it ends (a new one starts with the
/// tenant's next write).
const LANE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The PostgreSQL side: a connection pool, and a write lane per tenant with work waiting.
///
/// A tenant's writes all take its row lock (`audit_heads`), so on PostgreSQL they run one
/// after another however many connections carry them, and each used to hold the lock across
/// its own `BEGIN`, statements and `COMMIT` with its flush. A lane does for a tenant what the
/// SQLite writer thread does for the file: it takes every write of the tenant waiting on this
/// node, runs each in its own savepoint in one transaction (a failing write rolls back
/// alone), commits once, and only then answers them. Nodes still coordinate through the row
/// lock: a lane's transaction waits for another node's as a single write did.
pub struct Pg {
    pub(crate) pool: PgPool,
    lanes:
        Mutex<std::collections::HashMap<String, tokio::sync::mpsc::UnboundedSender<Box<dyn Job>>>>,
}

impl Pg {
    pub(crate) fn new(pool: PgPool) -> Pg {
        Pg {
            pool,
            lanes: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Queues a job on the tenant's lane, starting the lane if it is not running.
    fn enqueue(self: &Arc<Self>, tenant: &str, job: Box<dyn Job>) {
        let Ok(mut lanes) = self.lanes.lock() else {
            job.answer(Err(StoreError::Sqlite(
                "the write lanes are poisoned".into(),
            )));
            return;
        };
        // Sent under the map's lock: a lane removes itself under it too, and only when
        // nothing is waiting, so no job is left in a lane that has ended.
        let job = match lanes.get(tenant) {
            Some(lane) => match lane.send(job) {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (send, recv) = tokio::sync::mpsc::unbounded_channel();
        let _ = send.send(job);
        lanes.insert(tenant.to_string(), send);
        tokio::spawn(self.clone().lane(tenant.to_string(), recv));
    }

    async fn lane(
        self: Arc<Self>,
        tenant: String,
        mut jobs: tokio::sync::mpsc::UnboundedReceiver<Box<dyn Job>>,
    ) {
        loop {
            let first = match tokio::time::timeout(LANE_IDLE, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    if let Ok(mut lanes) = self.lanes.lock()
                        && jobs.is_empty()
                    {
                        lanes.remove(&tenant);
                        return;
                    }
                    continue;
                }
            };
            let (batch, outcome) = pg_batch(&self.pool, &tenant, first, &mut jobs).await;
            match outcome {
                Some(outcome) => {
                    for job in batch {
                        // A job that failed alone keeps its own error: the batch's is only
                        // what it caused.
                        job.answer(match &outcome {
                            Ok(()) => Ok(()),
                            Err(e) => Err(e.for_each()),
                        });
                    }
                }
                // A panicking job dropped its batch (their callers get an error); the lane
                // goes on with the writes still queued.
                None => tracing::error!(
                    "a PostgreSQL write batch panicked; its writes are answered with an error"
                ),
            }
        }
    }
}

/// A lane's transaction, begun with the tenant's lock held and its head row read (the
/// chain tip, model version and seat counts its first write would read), or why not. Both
/// round trips run on the lane's task: only the units of work need a blocking thread.
async fn pg_open(pool: &PgPool, tenant: &str) -> StoreResult<(PgTx, Vec<Carried>)> {
    let mut tx = pg_begin(pool).await.map_err(map_pg)?;
    let params = params![tenant];
    no_nul(&params)?;
    pg_round_trip("write");
    let row = pg_bind(LOCK_TENANT, &params)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_pg)?;
    let mut carried = Vec::new();
    if let Some(row) = row {
        carried.push(Carried::locked(tenant, &pg_row(&row)?));
    }
    let pgtx = PgTx {
        tx: Some(tx),
        handle: tokio::runtime::Handle::current(),
        merging: false,
        merged: None,
    };
    Ok((pgtx, carried))
}

/// Runs a lane's batch in one transaction and returns it with the outcome to answer it with
/// (`None`: a job panicked and the batch is lost). A batch of writes that may all run again
/// is first tried without savepoints (a round trip less per write); if one of them fails,
/// that transaction is rolled back and the batch runs again with a savepoint per write, so
/// the failing write rolls back alone. Otherwise each write has its own savepoint (none when
/// it is alone).
///
/// The lock is taken before the batch is gathered: writes that came while another node held
/// it join this batch instead of waiting for the next.
async fn pg_batch(
    pool: &PgPool,
    tenant: &str,
    first: Box<dyn Job>,
    jobs: &mut tokio::sync::mpsc::UnboundedReceiver<Box<dyn Job>>,
) -> (Vec<Box<dyn Job>>, Option<Result<(), StoreError>>) {
    let opened = pg_open(pool, tenant).await;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    let first_without_savepoints = batch.len() > 1 && batch.iter().all(|j| j.again());
    let savepoints = batch.len() > 1 && !first_without_savepoints;
    let (mut batch, mut attempt) = pg_attempt(opened, batch, savepoints).await;
    if first_without_savepoints && matches!(attempt, Attempt::Again) {
        metrics::counter!("seatkeeper_write_batches_run_again_total").increment(1);
        (batch, attempt) = pg_attempt(pg_open(pool, tenant).await, batch, true).await;
    }
    let outcome = match attempt {
        Attempt::Done(outcome) => Some(outcome),
        // Only a batch without savepoints is run again, and only once.
        Attempt::Again => Some(Err(finished())),
        Attempt::Panicked => None,
    };
    if outcome
        .as_ref()
        .is_some_and(|o| o.is_err() && batch.len() > 1)
    {
        tracing::error!(
            "a PostgreSQL write batch failed as a whole; every write in it is answered with the error"
        );
    }
    (batch, outcome)
}

/// How a batch's transaction ended.
enum Attempt {
    /// Committed, or failed with this error.
    Done(Result<(), StoreError>),
    /// Rolled back without savepoints after a write failed: run it again with them.
    Again,
    /// A job panicked; the batch is gone.
    Panicked,
}

/// How the jobs left a batch's transaction, for the lane's task to end it.
enum Ran {
    Commit,
    RollBack(StoreError),
    Again,
}

/// One transaction over a batch: the jobs run on a blocking thread (each in its own
/// savepoint when `savepoints`), then the lane's task commits or rolls back. Without
/// savepoints, a failing job rolls everything back and the answer is [`Attempt::Again`].
async fn pg_attempt(
    opened: StoreResult<(PgTx, Vec<Carried>)>,
    batch: Vec<Box<dyn Job>>,
    savepoints: bool,
) -> (Vec<Box<dyn Job>>, Attempt) {
    let (pgtx, carried) = match opened {
        Ok(opened) => opened,
        Err(e) => return (batch, Attempt::Done(Err(e))),
    };
    let ran = tokio::task::spawn_blocking(move || {
        let (mut pgtx, mut carried, mut batch) = (pgtx, carried, batch);
        let ran = pg_run(&mut pgtx, &mut carried, &mut batch, savepoints);
        (batch, pgtx.tx.take(), ran)
    })
    .await;
    let Ok((batch, tx, ran)) = ran else {
        return (Vec::new(), Attempt::Panicked);
    };
    let attempt = match (ran, tx) {
        (Ran::Commit, Some(tx)) => {
            pg_round_trip("write");
            Attempt::Done(tx.commit().await.map_err(map_pg))
        }
        (Ran::Commit, None) => Attempt::Done(Err(finished())),
        (rolled_back, tx) => {
            if let Some(tx) = tx {
                pg_round_trip("write");
                let _ = tx.rollback().await;
            }
            match rolled_back {
                Ran::RollBack(e) => Attempt::Done(Err(e)),
                _ => Attempt::Again,
            }
        }
    };
    (batch, attempt)
}

/// Runs a batch's jobs in its transaction (on a blocking thread), and their merged end.
fn pg_run(
    pgtx: &mut PgTx,
    carried: &mut Vec<Carried>,
    batch: &mut [Box<dyn Job>],
    savepoints: bool,
) -> Ran {
    // Without savepoints, the writes' ends go as one statement before the commit.
    let merging = !savepoints && batch.len() > 1;
    pgtx.merging = merging;
    let mut failed = false;
    // Each write starts from the tips the previous one left (the first from those read with
    // the lock), so none reads the tenant's head row again.
    for (i, job) in batch.iter_mut().enumerate() {
        if savepoints {
            // The previous job's savepoint is ended and the next one taken in one round trip.
            let step = match (i, failed) {
                (0, _) => "SAVEPOINT job",
                (_, false) => "RELEASE SAVEPOINT job; SAVEPOINT job",
                (_, true) => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job; SAVEPOINT job",
            };
            if let Err(e) = pgtx.simple(step) {
                return Ran::RollBack(e);
            }
        }
        failed = !job.run(TxRef::Postgres(pgtx), Some(carried));
        if failed && !savepoints {
            if batch.len() > 1 {
                return Ran::Again;
            }
            return Ran::RollBack(StoreError::Sqlite("the write failed".into()));
        }
    }
    if savepoints
        && failed
        && let Err(e) = pgtx.simple("ROLLBACK TO SAVEPOINT job")
    {
        return Ran::RollBack(e);
    }
    if merging && let Err(e) = pgtx.send_merged() {
        // Which write it was is not known: they run again, each in its savepoint.
        if !e.is_unavailable() {
            return Ran::Again;
        }
        return Ran::RollBack(e);
    }
    Ran::Commit
}

impl PgTx {
    /// Runs SQL without parameters, possibly several statements, in one round trip.
    fn simple(&mut self, sql: &'static str) -> StoreResult<()> {
        let tx = self.tx.as_mut().ok_or_else(finished)?;
        pg_round_trip("write");
        self.handle
            .block_on(sqlx::raw_sql(sql).execute(&mut **tx))
            .map(|_| ())
            .map_err(map_pg)
    }
}

// ---------------------------------------------------------------- the pool

/// A connection pool to either database.
#[derive(Clone)]
pub enum Pool {
    /// Embedded SQLite.
    Sqlite(Arc<Sqlite>),
    /// PostgreSQL.
    Postgres(Arc<Pg>),
}

impl Pool {
    /// Runs a read query.
    pub(crate) async fn fetch(&self, sql: &str, params: &[P]) -> StoreResult<Vec<Row>> {
        match self {
            Pool::Sqlite(s) => s.with_reader(|c| sqlite_fetch(c, sql, params)),
            Pool::Postgres(pg) => {
                no_nul(params)?;
                once_more_if_lost("read", || pg_bind(sql, params).fetch_all(&pg.pool))
                    .await
                    .map_err(map_pg)?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    }

    /// Runs a read query that scans much of a table once (a snapshot load): on SQLite the
    /// reader then frees its page cache, which the scan filled with pages no request needs.
    pub(crate) async fn scan(&self, sql: &str, params: &[P]) -> StoreResult<Vec<Row>> {
        match self {
            Pool::Sqlite(s) => s.with_reader(|c| {
                let rows = sqlite_fetch(c, sql, params);
                let _ = c.execute_batch("PRAGMA shrink_memory");
                rows
            }),
            Pool::Postgres(_) => self.fetch(sql, params).await,
        }
    }

    /// Runs a read query expecting at most one row.
    pub(crate) async fn fetch_opt(&self, sql: &str, params: &[P]) -> StoreResult<Option<Row>> {
        Ok(self.fetch(sql, params).await?.into_iter().next())
    }

    /// Runs one write statement in its own transaction.
    pub(crate) async fn execute(&self, sql: &str, params: &[P]) -> StoreResult<u64> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.write(move |tx| tx.execute(&sql, &params)).await
    }

    /// Runs `f` in one write transaction: committed if it returns `Ok`, rolled back if not.
    /// On SQLite the work runs on the writer thread (and may share its commit with other
    /// writes); on PostgreSQL it runs on a blocking thread with its own transaction.
    pub(crate) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_keyed(None, f).await
    }

    /// [`Pool::write`] for a unit of work that locks `tenant` and no other tenant: on
    /// PostgreSQL it joins the tenant's write lane (see [`Pg`]) and may share its
    /// transaction and commit with the tenant's other waiting writes. (On SQLite every write
    /// already shares the writer's batches.)
    pub(crate) async fn write_keyed<T, E, F>(&self, tenant: Option<&str>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        match self {
            Pool::Sqlite(s) => s.submit(f).await,
            Pool::Postgres(pg) if tenant.is_some() => {
                let (reply, recv) = tokio::sync::oneshot::channel::<Result<T, E>>();
                let job: Box<dyn Job> = Box::new(Unit {
                    work: Some(f),
                    result: None,
                    reply,
                });
                pg.enqueue(tenant.unwrap_or_default(), job);
                recv.await
                    .map_err(|_| E::from(StoreError::Sqlite("a write lane dropped a job".into())))?
            }
            Pool::Postgres(pg) => {
                let pg = pg.pool.clone();
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let tx = handle
                        .block_on(pg_begin(&pg))
                        .map_err(|e| E::from(map_pg(e)))?;
                    let mut pgtx = PgTx {
                        tx: Some(tx),
                        handle: handle.clone(),
                        merging: false,
                        merged: None,
                    };
                    let mut tx = Tx::new(TxRef::Postgres(&mut pgtx));
                    let result = f(&mut tx).and_then(|v| tx.flush().map(|()| v).map_err(E::from));
                    drop(tx);
                    let tx = pgtx.tx.take();
                    match (result, tx) {
                        (Ok(v), Some(tx)) => {
                            pg_round_trip("write");
                            handle
                                .block_on(tx.commit())
                                .map_err(|e| E::from(map_pg(e)))?;
                            Ok(v)
                        }
                        (Ok(_), None) => Err(E::from(finished())),
                        (Err(e), tx) => {
                            if let Some(tx) = tx {
                                let _ = handle.block_on(tx.rollback());
                            }
                            Err(e)
                        }
                    }
                })
                .await
                .map_err(|e| E::from(StoreError::Sqlite(format!("write task failed: {e}"))))?
            }
        }
    }

    /// [`Pool::write_keyed`] for a unit of work that may run again, from the start, after its
    /// transaction rolled back: it reads what it needs in the transaction and changes nothing
    /// outside it. On PostgreSQL a lane's batch of such writes takes no savepoints unless one
    /// of them fails (see [`pg_batch`]). On SQLite it is [`Pool::write_keyed`].
    pub(crate) async fn write_keyed_again<T, E, F>(&self, tenant: &str, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        match self {
            Pool::Postgres(pg) => {
                let (reply, recv) = tokio::sync::oneshot::channel::<Result<T, E>>();
                let job: Box<dyn Job> = Box::new(Again {
                    work: f,
                    result: None,
                    reply,
                });
                pg.enqueue(tenant, job);
                recv.await
                    .map_err(|_| E::from(StoreError::Sqlite("a write lane dropped a job".into())))?
            }
            Pool::Sqlite(_) => self.write_keyed(Some(tenant), f).await,
        }
    }

    /// Closes connections.
    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(s) => {
                if let Ok(mut r) = s.readers.lock() {
                    r.clear();
                }
            }
            Pool::Postgres(pg) => pg.pool.close().await,
        }
    }
}

/// A PostgreSQL transaction driven from a blocking thread.
pub struct PgTx {
    tx: Option<sqlx::Transaction<'static, Postgres>>,
    handle: tokio::runtime::Handle,
    /// Writes keep their ends for one statement of the batch ([`PgTx::merge`]).
    merging: bool,
    merged: Option<Merged>,
}

enum TxRef<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a mut PgTx),
}

/// The open write transaction a unit of work runs in. Its calls are synchronous: on SQLite
/// they run on the writer thread, on PostgreSQL they block a blocking-pool thread.
pub struct Tx<'a> {
    conn: TxRef<'a>,
    /// The audit chain tips of the tenants this transaction has locked, as this transaction
    /// last left them (see `lock_tenant`).
    pub(crate) tips: Vec<ChainTip>,
    /// Audit records and outbox events written by this unit of work, inserted together
    /// (multi-row statements) just before it commits.
    pub(crate) pending: Pending,
    /// What readers' caches must forget when this transaction commits.
    pub(crate) reach: Reach,
    /// The commit notice an earlier [`Tx::flush`] of this unit of work already sent (a unit
    /// of work may end itself, to answer what its end statement refused).
    pub(crate) flushed: Option<Option<String>>,
    /// An earlier [`Tx::flush`] of this unit of work wrote events.
    pub(crate) wrote_events: bool,
}

/// Bytes SQLite holds in this process (every connection's page cache, statements, and the
/// rest of its heap), as `sqlite3_memory_used` counts them.
pub fn sqlite_memory_bytes() -> i64 {
    // SAFETY: a read of SQLite's own counter, which is thread-safe and takes no arguments.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// The `NOTIFY` channel of commits that wrote events (the dispatcher and event streams wake).
pub(crate) const EVENTS_CHANNEL: &str = "seatkeeper_events";
/// The `NOTIFY` channel of every commit that changes what readers render: its payload is the
/// tenants it locked, comma-separated, or `*` for everything.
pub(crate) const COMMITS_CHANNEL: &str = "seatkeeper_commits";

/// This process among the nodes that share a PostgreSQL database: its commit notices name it,
/// so its own listener tells them from other nodes' (what its own commits changed, it saw
/// before their writes returned).
pub(crate) static NODE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// What a transaction's commit makes stale in what readers have rendered (see
/// [`crate::kernel::store::Generations`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// The tenants the transaction locked, or everything when it locked none: the default,
    /// safe for any write.
    #[default]
    Locked,
    /// Every tenant, whatever it locked (the product catalogue, which every tenant's users
    /// show).
    Everything,
    /// Only the tenants it locked, none when it locked none (delivery bookkeeping, activity
    /// stamps).
    Nothing,
}

/// Rows a unit of work appends, written by its end ([`Tx::flush`]).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub audit: Vec<crate::kernel::chain::AuditRow>,
    pub outbox: Vec<[String; 6]>,
    /// Rows nothing in the unit of work reads back ([`Tx::defer_rows`]; PostgreSQL).
    pub rows: Vec<DeferredRows>,
    /// Changes to `resource_counts` ([`Tx::defer_count`]; PostgreSQL), one per tenant and kind.
    pub counts: Vec<(String, &'static str, i64)>,
}

/// A multi-row insert whose rows a unit of work's end writes: the rows of several writes of
/// a batch join one statement.
#[derive(Debug)]
pub(crate) struct RowsInsert {
    /// The statement for `n` rows: the leading parameters `$1..` first, then the rows'.
    pub sql: fn(usize) -> String,
    /// Parameters per row.
    pub width: usize,
}

/// Rows waiting for a unit of work's end, under the leading parameters they share.
#[derive(Debug)]
pub(crate) struct DeferredRows {
    insert: &'static RowsInsert,
    lead: Vec<P>,
    rows: Vec<P>,
}

impl Pending {
    /// Nothing waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.audit.is_empty()
            && self.outbox.is_empty()
            && self.rows.is_empty()
            && self.counts.is_empty()
    }

    /// Parameters the rows bind.
    fn params(&self) -> usize {
        self.audit.len() * AUDIT_INSERT.columns
            + self.outbox.len() * OUTBOX_INSERT.columns
            + self
                .rows
                .iter()
                .map(|d| d.lead.len() + d.rows.len())
                .sum::<usize>()
            + self.counts.len() * 3
    }

    fn add_rows(&mut self, insert: &'static RowsInsert, lead: Vec<P>, rows: Vec<P>) {
        match self.rows.iter_mut().find(|d| {
            std::ptr::eq(d.insert, insert)
                && d.lead == lead
                && d.rows.len() + rows.len() <= END_PARAMS
        }) {
            Some(d) => d.rows.extend(rows),
            None => self.rows.push(DeferredRows { insert, lead, rows }),
        }
    }

    fn add_count(&mut self, tenant: &str, kind: &'static str, by: i64) {
        match self
            .counts
            .iter_mut()
            .find(|(t, k, _)| t == tenant && *k == kind)
        {
            Some((_, _, n)) => *n += by,
            None => self.counts.push((tenant.to_string(), kind, by)),
        }
    }

    /// Takes another unit of work's rows after these.
    fn append(&mut self, other: Pending) {
        self.audit.extend(other.audit);
        self.outbox.extend(other.outbox);
        for d in other.rows {
            self.add_rows(d.insert, d.lead, d.rows);
        }
        for (tenant, kind, by) in other.counts {
            self.add_count(&tenant, kind, by);
        }
    }
}

/// A chain tip as a write of a PostgreSQL batch left it, for the batch's next write.
#[derive(Debug, Clone)]
pub(crate) struct Carried {
    tenant: String,
    seq: i64,
    hash: String,
    model_version: i64,
    seat_lines_text: String,
}

/// Takes a tenant's lock: its head row, read under the row lock every write of the tenant
/// takes, with what [`Carried::locked`] and `Tx::lock_tenant` read from it.
pub(crate) const LOCK_TENANT: &str = "UPDATE audit_heads SET seq = seq WHERE tenant_id = $1 \
     RETURNING model_version, seq, hash, seat_lines, held_version";

/// The version a tenant's cached licensing model is kept under: its `model_version` and the
/// brake's `held_version` (both random), combined so that either moving changes it.
pub(crate) fn model_key(model_version: i64, held_version: i64) -> i64 {
    model_version ^ held_version
}

impl Carried {
    /// The tip as [`LOCK_TENANT`] read it.
    fn locked(tenant: &str, row: &Row) -> Carried {
        Carried {
            tenant: tenant.to_string(),
            seq: row.int(1),
            hash: row.text(2),
            model_version: model_key(row.int(0), row.int(4)),
            seat_lines_text: row.text(3),
        }
    }

    fn of(t: &ChainTip) -> StoreResult<Carried> {
        Ok(Carried {
            tenant: t.tenant.clone(),
            seq: t.seq,
            hash: t.hash.clone(),
            model_version: t.model_version,
            seat_lines_text: match &t.seat_lines {
                Some(lines) => lines.stored()?,
                None => t.seat_lines_text.clone(),
            },
        })
    }

    fn tip(&self) -> ChainTip {
        ChainTip {
            tenant: self.tenant.clone(),
            seq: self.seq,
            hash: self.hash.clone(),
            model_version: self.model_version,
            moved: false,
            seat_lines_text: self.seat_lines_text.clone(),
            seat_lines: None,
            lines_moved: false,
        }
    }
}

/// A tenant's audit chain tip and model version, held under the tenant's lock.
#[derive(Debug)]
pub(crate) struct ChainTip {
    pub tenant: String,
    pub seq: i64,
    pub hash: String,
    pub model_version: i64,
    /// The tip moved in this transaction and must be stored.
    pub moved: bool,
    /// The tenant's seat counts per product, as stored (read with the lock; parsed when a
    /// licensing decision first asks).
    pub seat_lines_text: String,
    /// The seat counts once parsed, as this transaction has changed them (a type of the
    /// licensing domain's; the kernel only stores it back).
    pub seat_lines: Option<Box<dyn HeadState>>,
    /// The seat counts changed in this transaction and must be stored.
    pub lines_moved: bool,
}

/// State a domain keeps in the tenant's head row (`audit_heads.seat_lines`): read under the
/// tenant's lock, written back with the chain tip when the transaction ends.
pub(crate) trait HeadState: std::any::Any + Send + std::fmt::Debug {
    /// The stored form.
    fn stored(&self) -> StoreResult<String>;
    /// For the owning domain to reach its own type.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

fn finished() -> StoreError {
    StoreError::Sqlite("transaction already finished".into())
}

impl<'a> Tx<'a> {
    fn new(conn: TxRef<'a>) -> Tx<'a> {
        Tx {
            conn,
            tips: Vec::new(),
            pending: Pending::default(),
            reach: Reach::Locked,
            flushed: None,
            wrote_events: false,
        }
    }
}

impl Tx<'_> {
    /// Marks this transaction as changing what every tenant renders.
    pub(crate) fn reaches_everything(&mut self) {
        self.reach = Reach::Everything;
    }

    /// Marks this transaction as changing nothing a reader renders beyond the tenants it
    /// locks (unless it also reaches everything).
    pub(crate) fn reaches_nothing_rendered(&mut self) {
        if self.reach == Reach::Locked {
            self.reach = Reach::Nothing;
        }
    }

    /// The dialect this transaction speaks.
    pub(crate) fn backend(&self) -> Backend {
        match self.conn {
            TxRef::Sqlite(_) => Backend::Sqlite,
            TxRef::Postgres(_) => Backend::Postgres,
        }
    }

    /// ` FOR UPDATE OF {table} SKIP LOCKED` on PostgreSQL, where several nodes claim rows;
    /// nothing on SQLite, where the one writer already excludes everyone else.
    pub(crate) fn skip_locked_clause(&self, table: &str) -> String {
        match self.conn {
            TxRef::Sqlite(_) => String::new(),
            TxRef::Postgres(_) => format!(" FOR UPDATE OF {table} SKIP LOCKED"),
        }
    }

    /// Inserts rows nothing later in the unit of work reads back, nor anything reads as a
    /// result: on SQLite at once; on PostgreSQL with the unit of work's end (a data-modifying
    /// `WITH` clause of its last statement, shared with the other writes of its batch when
    /// they may run again), one round trip less. `lead` are the statement's leading
    /// parameters, `rows` every row's, [`RowsInsert::width`] a row.
    pub(crate) fn defer_rows(
        &mut self,
        insert: &'static RowsInsert,
        lead: Vec<P>,
        rows: Vec<P>,
    ) -> StoreResult<()> {
        let n = rows.len() / insert.width.max(1);
        if n == 0 {
            return Ok(());
        }
        match self.conn {
            TxRef::Sqlite(_) => {
                let mut params = lead;
                params.extend(rows);
                self.execute(&(insert.sql)(n), &params).map(|_| ())
            }
            TxRef::Postgres(_) => {
                no_nul(&lead)?;
                no_nul(&rows)?;
                self.pending.add_rows(insert, lead, rows);
                Ok(())
            }
        }
    }

    /// Moves a tenant's count of resources of a kind by `by`: on SQLite at once; on
    /// PostgreSQL with the unit of work's end, as [`Tx::defer_rows`].
    pub(crate) fn defer_count(
        &mut self,
        tenant: &str,
        kind: &'static str,
        by: i64,
    ) -> StoreResult<()> {
        match self.conn {
            TxRef::Sqlite(_) => self
                .execute(
                    COUNTS_UPSERT_ONE,
                    &[P::from(tenant), P::from(kind), P::Int(by)],
                )
                .map(|_| ()),
            TxRef::Postgres(_) => {
                no_nul(&[P::from(tenant)])?;
                self.pending.add_count(tenant, kind, by);
                Ok(())
            }
        }
    }

    /// Tells other nodes, when this transaction commits, that it wrote events and what it
    /// changed for readers (PostgreSQL `NOTIFY`, transactional; see [`Tx::commit_notice`]; on
    /// SQLite there are no other nodes).
    pub(crate) fn notify_other_nodes(
        &mut self,
        events: bool,
        notice: Option<String>,
    ) -> StoreResult<()> {
        if matches!(self.conn, TxRef::Sqlite(_)) {
            return Ok(());
        }
        let mut calls = Vec::new();
        if events {
            calls.push(format!("pg_notify('{EVENTS_CHANNEL}', '')"));
        }
        let mut params = Vec::new();
        if let Some(notice) = notice {
            params.push(P::Text(notice));
            calls.push(format!("pg_notify('{COMMITS_CHANNEL}', $1)"));
        }
        if calls.is_empty() {
            return Ok(());
        }
        self.execute(&format!("SELECT {}", calls.join(", ")), &params)
            .map(|_| ())
    }

    /// What this transaction's commit tells other nodes' readers (PostgreSQL): this node
    /// ([`NODE`]) and, after a `|`, the tenants it locked, or `*` when it reaches everything;
    /// nothing when it changes nothing rendered.
    pub(crate) fn commit_notice(&self) -> Option<String> {
        if matches!(self.conn, TxRef::Sqlite(_)) {
            return None;
        }
        let tenants: Vec<&str> = self.tips.iter().map(|t| t.tenant.as_str()).collect();
        let reached = match self.reach {
            Reach::Everything => Some("*".into()),
            Reach::Locked | Reach::Nothing if tenants.is_empty() => {
                (self.reach == Reach::Locked).then(|| "*".into())
            }
            // A NOTIFY payload holds under 8,000 bytes.
            _ if tenants.iter().map(|t| t.len() + 1).sum::<usize>() > 4_000 => Some("*".into()),
            _ => Some(tenants.join(",")),
        };
        reached.map(|r| format!("{}|{r}", &*NODE))
    }

    /// PostgreSQL: writes this unit of work's deferred rows and counts now, so that a
    /// statement after them sees them (they are otherwise written with its end).
    fn send_deferred(&mut self) -> StoreResult<()> {
        if self.pending.rows.is_empty() && self.pending.counts.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending.rows);
        let counts = std::mem::take(&mut self.pending.counts);
        self.send_rows(&rows, &counts)
    }

    /// Writes deferred rows and counts, a statement each.
    fn send_rows(
        &mut self,
        rows: &[DeferredRows],
        counts: &[(String, &'static str, i64)],
    ) -> StoreResult<()> {
        for d in rows {
            let mut params = d.lead.clone();
            params.extend(d.rows.iter().cloned());
            self.execute(
                &(d.insert.sql)(d.rows.len() / d.insert.width.max(1)),
                &params,
            )?;
        }
        for (tenant, kind, by) in counts {
            self.execute(COUNTS_UPSERT_ONE, &params![tenant, *kind, *by])?;
        }
        Ok(())
    }

    /// Runs a query in the transaction.
    pub(crate) fn fetch(&mut self, sql: &str, params: &[P]) -> StoreResult<Vec<Row>> {
        if matches!(self.conn, TxRef::Postgres(_)) {
            self.send_deferred()?;
        }
        match &mut self.conn {
            TxRef::Sqlite(c) => sqlite_fetch(c, sql, params),
            TxRef::Postgres(pg) => {
                no_nul(params)?;
                pg.send_merged()?;
                let tx = pg.tx.as_mut().ok_or_else(finished)?;
                pg_round_trip("write");
                pg.handle
                    .block_on(pg_bind(sql, params).fetch_all(&mut **tx))
                    .map_err(map_pg)?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    }

    /// Runs a query expecting at most one row.
    pub(crate) fn fetch_opt(&mut self, sql: &str, params: &[P]) -> StoreResult<Option<Row>> {
        Ok(self.fetch(sql, params)?.into_iter().next())
    }

    /// Runs a statement in the transaction.
    pub(crate) fn execute(&mut self, sql: &str, params: &[P]) -> StoreResult<u64> {
        if matches!(self.conn, TxRef::Postgres(_)) {
            self.send_deferred()?;
        }
        match &mut self.conn {
            TxRef::Sqlite(c) => sqlite_exec(c, sql, params),
            TxRef::Postgres(pg) => {
                no_nul(params)?;
                pg.send_merged()?;
                let tx = pg.tx.as_mut().ok_or_else(finished)?;
                pg_round_trip("write");
                Ok(pg
                    .handle
                    .block_on(pg_bind(sql, params).execute(&mut **tx))
                    .map_err(map_pg)?
                    .rows_affected())
            }
        }
    }
}

// ---------------------------------------------------------------- the end of a unit of work

/// Rows per multi-row insert when a unit of work's end is written statement by statement.
const FLUSH_ROWS: usize = 100;
/// Parameters one end statement binds at most (PostgreSQL allows 65,535).
const END_PARAMS: usize = 30_000;

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

/// A count moved by one write.
const COUNTS_UPSERT_ONE: &str = "INSERT INTO resource_counts (tenant_id, kind, n) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant_id, kind) DO UPDATE SET n = resource_counts.n + excluded.n";

/// The statement inserting `rows` rows (1 ..= FLUSH_ROWS).
fn multi_insert(m: &'static MultiInsert, rows: usize) -> &'static str {
    let all = m.by_rows.get_or_init(|| {
        (1..=FLUSH_ROWS)
            .map(|n| format!("{}{}", m.head, tuples(1, m.columns, n)))
            .collect()
    });
    all[rows.clamp(1, FLUSH_ROWS) - 1].as_str()
}

/// `($first, …), (…)`: `rows` tuples of `columns` placeholders, numbered from `first`.
pub(crate) fn tuples(first: usize, columns: usize, rows: usize) -> String {
    (0..rows)
        .map(|i| format!("({})", placeholders(first + i * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An audit record's values, in [`AUDIT_INSERT`]'s column order.
fn audit_params(params: &mut Vec<P>, rec: &crate::kernel::chain::AuditRow) {
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

/// A tenant's head row as a unit of work leaves it: the chain tip, and the seat counts when
/// they moved.
#[derive(Debug)]
struct Head {
    tenant: String,
    seq: i64,
    hash: String,
    lines: Option<String>,
}

/// What the writes of a PostgreSQL batch that need no savepoints have ended with and not yet
/// sent: one end statement carries them all (see [`PgTx::merge`]).
#[derive(Debug, Default)]
struct Merged {
    pending: Pending,
    head: Option<Head>,
    /// Commit notices, each as [`Tx::commit_notice`] gives it.
    notices: Vec<String>,
}

/// One commit notice for several: every tenant named once, or `*`.
fn one_notice(notices: &[String]) -> Option<String> {
    if notices.is_empty() {
        return None;
    }
    if notices.iter().any(|n| n == "*") {
        return Some("*".into());
    }
    let mut tenants: Vec<&str> = notices.iter().flat_map(|n| n.split(',')).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let joined = tenants.join(",");
    // A NOTIFY payload holds under 8,000 bytes.
    Some(if joined.len() > 4_000 {
        "*".into()
    } else {
        joined
    })
}

/// The end of a unit of work (or of several) as one PostgreSQL statement: its deferred rows
/// and counts, audit records and events are inserted by data-modifying `WITH` clauses of the
/// statement that moves the tenant's head row, which also sends the `NOTIFY`s. `None` when
/// there is nothing to send.
fn end_statement(
    pending: &Pending,
    head: Option<&Head>,
    notice: Option<&str>,
) -> Option<(String, Vec<P>)> {
    let events = !pending.outbox.is_empty();
    if pending.is_empty() && head.is_none() && notice.is_none() {
        return None;
    }
    let mut params: Vec<P> = Vec::with_capacity(pending.params() + 8);
    let mut clauses: Vec<String> = Vec::new();
    for (i, d) in pending.rows.iter().enumerate() {
        let n = d.rows.len() / d.insert.width.max(1);
        clauses.push(format!(
            "r{i} AS ({})",
            shift_placeholders(&(d.insert.sql)(n), params.len())
        ));
        params.extend(d.lead.iter().cloned());
        params.extend(d.rows.iter().cloned());
    }
    if !pending.counts.is_empty() {
        let first = params.len() + 1;
        for (tenant, kind, by) in &pending.counts {
            params.extend(params![tenant, *kind, *by]);
        }
        clauses.push(format!(
            "c AS (INSERT INTO resource_counts (tenant_id, kind, n) VALUES {} \
             ON CONFLICT (tenant_id, kind) DO UPDATE SET n = resource_counts.n + excluded.n)",
            tuples(first, 3, pending.counts.len())
        ));
    }
    if !pending.audit.is_empty() {
        let first = params.len() + 1;
        for rec in &pending.audit {
            audit_params(&mut params, rec);
        }
        clauses.push(format!(
            "a AS ({}{})",
            AUDIT_INSERT.head,
            tuples(first, AUDIT_INSERT.columns, pending.audit.len())
        ));
    }
    if events {
        let first = params.len() + 1;
        for row in &pending.outbox {
            params.extend(row.iter().map(P::from));
        }
        clauses.push(format!(
            "o AS ({}{})",
            OUTBOX_INSERT.head,
            tuples(first, OUTBOX_INSERT.columns, pending.outbox.len())
        ));
    }
    let mut notices: Vec<String> = Vec::new();
    if events {
        notices.push(format!("pg_notify('{EVENTS_CHANNEL}', '')"));
    }
    if let Some(notice) = notice {
        params.push(P::from(notice));
        notices.push(format!("pg_notify('{COMMITS_CHANNEL}', ${})", params.len()));
    }
    let returning = if notices.is_empty() {
        String::new()
    } else {
        format!(" RETURNING {}", notices.join(", "))
    };
    let last = match head {
        Some(h) => {
            let n = params.len();
            params.extend(params![&h.tenant, h.seq, &h.hash]);
            match &h.lines {
                Some(lines) => {
                    params.push(P::from(lines));
                    format!(
                        "UPDATE audit_heads SET seq = ${}, hash = ${}, seat_lines = ${} WHERE tenant_id = ${}{returning}",
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 1
                    )
                }
                None => format!(
                    "UPDATE audit_heads SET seq = ${}, hash = ${} WHERE tenant_id = ${}{returning}",
                    n + 2,
                    n + 3,
                    n + 1
                ),
            }
        }
        None if !notices.is_empty() => format!("SELECT {}", notices.join(", ")),
        None => "SELECT 1".to_string(),
    };
    let sql = if clauses.is_empty() {
        last
    } else {
        format!("WITH {} {last}", clauses.join(", "))
    };
    Some((sql, params))
}

impl PgTx {
    /// Keeps a write's end for the batch's one end statement (sent before anything else
    /// reads or writes, and before the commit).
    fn merge(
        &mut self,
        pending: Pending,
        head: Option<Head>,
        notice: Option<String>,
    ) -> StoreResult<()> {
        if let (
            Some(h),
            Some(Merged {
                head: Some(old), ..
            }),
        ) = (&head, &self.merged)
            && h.tenant != old.tenant
        {
            self.send_merged()?;
        }
        let m = self.merged.get_or_insert_with(Merged::default);
        m.pending.append(pending);
        if let Some(mut h) = head {
            if h.lines.is_none()
                && let Some(old) = &m.head
            {
                h.lines = old.lines.clone();
            }
            m.head = Some(h);
        }
        if let Some(n) = notice
            && !m.notices.contains(&n)
        {
            m.notices.push(n);
        }
        if m.pending.params() > END_PARAMS {
            self.send_merged()?;
        }
        Ok(())
    }

    /// Sends what [`PgTx::merge`] kept, if anything.
    fn send_merged(&mut self) -> StoreResult<()> {
        let Some(m) = self.merged.take() else {
            return Ok(());
        };
        let notice = one_notice(&m.notices);
        let Some((sql, params)) = end_statement(&m.pending, m.head.as_ref(), notice.as_deref())
        else {
            return Ok(());
        };
        let tx = self.tx.as_mut().ok_or_else(finished)?;
        pg_round_trip("write");
        // Its text changes with every batch's make-up: not kept as a prepared statement.
        self.handle
            .block_on(pg_bind(&sql, &params).persistent(false).execute(&mut **tx))
            .map(|_| ())
            .map_err(map_pg)
    }
}

impl Tx<'_> {
    /// Writes what the unit of work deferred and appended (rows, counts, audit records,
    /// events) and moves each tenant's head row, just before it commits: on PostgreSQL in one
    /// statement when it fits (four round trips became one), or kept for its batch's one end
    /// statement; otherwise statement by statement. A unit of work may end itself to answer
    /// what its end refused; a second end with nothing new does nothing.
    pub(crate) fn flush(&mut self) -> StoreResult<()> {
        let notice = self.commit_notice();
        if self.pending.is_empty()
            && !self.tips.iter().any(|t| t.moved || t.lines_moved)
            && self.flushed.as_ref() == Some(&notice)
        {
            return Ok(());
        }
        self.flushed = Some(notice.clone());
        let pending = std::mem::take(&mut self.pending);
        self.wrote_events |= !pending.outbox.is_empty();
        // Each tenant's head row once: the chain tip and, if licensing moved them, the seat
        // counts.
        let mut moved: Vec<Head> = Vec::new();
        for t in self.tips.iter_mut().filter(|t| t.moved || t.lines_moved) {
            let lines = match (t.lines_moved, &t.seat_lines) {
                (true, Some(lines)) => Some(lines.stored()?),
                _ => None,
            };
            t.moved = false;
            t.lines_moved = false;
            moved.push(Head {
                tenant: t.tenant.clone(),
                seq: t.seq,
                hash: t.hash.clone(),
                lines,
            });
        }
        if let TxRef::Postgres(pg) = &mut self.conn
            && moved.len() <= 1
        {
            if pg.merging {
                return pg.merge(pending, moved.pop(), notice);
            }
            if pending.params() <= END_PARAMS {
                return match end_statement(&pending, moved.first(), notice.as_deref()) {
                    Some((sql, params)) => self.execute(&sql, &params).map(|_| ()),
                    None => Ok(()),
                };
            }
        }
        self.send_rows(&pending.rows, &pending.counts)?;
        self.notify_other_nodes(!pending.outbox.is_empty(), notice)?;
        for chunk in pending.audit.chunks(FLUSH_ROWS) {
            let mut params: Vec<P> = Vec::with_capacity(chunk.len() * AUDIT_INSERT.columns);
            for rec in chunk {
                audit_params(&mut params, rec);
            }
            self.execute(multi_insert(&AUDIT_INSERT, chunk.len()), &params)?;
        }
        for chunk in pending.outbox.chunks(FLUSH_ROWS) {
            let mut params: Vec<P> = Vec::with_capacity(chunk.len() * OUTBOX_INSERT.columns);
            for row in chunk {
                params.extend(row.iter().map(P::from));
            }
            self.execute(multi_insert(&OUTBOX_INSERT, chunk.len()), &params)?;
        }
        for h in moved {
            match h.lines {
                Some(lines) => self.execute(
                    "UPDATE audit_heads SET seq = $2, hash = $3, seat_lines = $4 WHERE tenant_id = $1",
                    &params![&h.tenant, h.seq, &h.hash, &lines],
                )?,
                None => self.execute(
                    "UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1",
                    &params![&h.tenant, h.seq, &h.hash],
                )?,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_makes_the_pool_test_its_connections_for_a_while() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(pg_connection_lost(&refused));
        assert!(!pg_connection_lost(&sqlx::Error::RowNotFound));
        assert!(!pg_connection_lost(&sqlx::Error::PoolTimedOut));
        SUSPECT_UNTIL.store(0, std::sync::atomic::Ordering::Relaxed);
        let _ = map_pg(sqlx::Error::RowNotFound);
        assert!(!connections_suspect());
        assert!(map_pg(refused).is_unavailable());
        assert!(connections_suspect());
        SUSPECT_UNTIL.store(0, std::sync::atomic::Ordering::Relaxed);
        assert!(!connections_suspect());
    }

    #[test]
    fn connections_keep_plans_independent_of_bound_values() {
        // Without the QPSG, SQLite re-prepares a statement whenever a value bound to a
        // parameter its plan looked at changes: `LIMIT $1` here, as in every page query.
        let dir = tempfile::tempdir().unwrap();
        let conn = Sqlite::connect(&dir.path().join("q.db"), &[]).unwrap();
        assert!(
            conn.db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .unwrap()
        );
        conn.execute_batch("CREATE TABLE t (a INTEGER)").unwrap();
        for n in 1..=20 {
            let mut stmt = conn.prepare_cached("SELECT a FROM t LIMIT ?1").unwrap();
            let _ = stmt.query_map([n], |r| r.get::<_, i64>(0)).unwrap().count();
        }
        let stmt = conn.prepare_cached("SELECT a FROM t LIMIT ?1").unwrap();
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "a cached page query was re-prepared"
        );
    }

    /// A statement inside a job's savepoint opens a statement journal, and closing it
    /// truncates the sub-journal back to where the statement began. Held in memory
    /// (`temp_store = MEMORY`) that truncation walks the journal from its start, and the
    /// journal holds every page the job changed: a job of many statements (a plan change
    /// for every user) went quadratic — 300,000 users took 20.9 s instead of 10.6 s, a
    /// million users more than 60 s. Spilled to a file, the truncation is one call.
    #[tokio::test]
    async fn statement_journals_spill_to_a_file() {
        let (_dir, db) = scratch().await;
        let conn = Sqlite::connect(&db.path, &db.pragmas).unwrap();
        let mode: i64 = conn
            .query_row("PRAGMA temp_store", [], |r| r.get(0))
            .unwrap();
        assert_ne!(
            mode, 2,
            "temp_store = MEMORY keeps statement journals in memory"
        );
    }

    #[test]
    fn placeholders_shift_outside_quotes() {
        assert_eq!(
            shift_placeholders("INSERT INTO t VALUES ($1, '$2', $10, $2)", 5),
            "INSERT INTO t VALUES ($6, '$2', $15, $7)"
        );
    }

    #[test]
    fn placeholders_become_positional_outside_quotes() {
        assert_eq!(
            sqlite_sql("UPDATE t SET a = $2, b = $10 WHERE id = $1 AND c = $2"),
            "UPDATE t SET a = ?2, b = ?10 WHERE id = ?1 AND c = ?2"
        );
        assert_eq!(
            sqlite_sql(
                "SELECT json_extract(doc, '$.x'), '$1 it''s $2', \"$3\" FROM t WHERE a = $1"
            ),
            "SELECT json_extract(doc, '$.x'), '$1 it''s $2', \"$3\" FROM t WHERE a = ?1"
        );
        assert_eq!(sqlite_sql("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn values_bind_by_position_in_any_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let rows = sqlite_fetch(
            &conn,
            "SELECT $3 || '-' || $1, $2 + 1, $1",
            &[P::from("a"), P::Int(41), P::from("c"), P::from("unused")],
        )
        .unwrap();
        assert_eq!(rows[0].text(0), "c-a");
        assert_eq!(rows[0].int(1), 42);
        assert_eq!(rows[0].text(2), "a");
    }

    /// A SQLite store in a temporary directory with one table `t (x)`.
    async fn scratch() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(dir.path().join("t.db"), "NORMAL", 2).unwrap();
        db.submit(|tx| tx.execute("CREATE TABLE t (x BIGINT)", &[]).map(|_| ()))
            .await
            .unwrap();
        (dir, db)
    }

    fn rows(db: &Sqlite) -> Vec<i64> {
        db.with_reader(|c| sqlite_fetch(c, "SELECT x FROM t ORDER BY x", &[]))
            .unwrap()
            .iter()
            .map(|r| r.int(0))
            .collect()
    }

    fn insert(x: i64) -> impl FnOnce(&mut Tx<'_>) -> StoreResult<()> + Send + 'static {
        move |tx| {
            tx.execute("INSERT INTO t (x) VALUES ($1)", &[P::Int(x)])
                .map(|_| ())
        }
    }

    fn insert_then_fail(x: i64) -> impl FnOnce(&mut Tx<'_>) -> StoreResult<()> + Send + 'static {
        move |tx| {
            tx.execute("INSERT INTO t (x) VALUES ($1)", &[P::Int(x)])?;
            Err(StoreError::Corrupt("the job fails after writing".into()))
        }
    }

    fn inject(db: &Sqlite, sql: &'static str) {
        db.faults.fail.lock().unwrap().push(sql);
    }

    #[tokio::test]
    async fn a_failed_job_commits_nothing_when_its_rollback_fails() {
        let (_dir, db) = scratch().await;
        inject(&db, "ROLLBACK TO job");
        assert!(db.submit(insert_then_fail(2)).await.is_err());
        assert_eq!(
            rows(&db),
            Vec::<i64>::new(),
            "the failed job's write was committed"
        );
        // The writer goes on afterwards.
        db.submit(insert(3)).await.unwrap();
        assert_eq!(rows(&db), [3]);
    }

    #[tokio::test]
    async fn a_job_whose_savepoint_cannot_be_taken_never_runs() {
        let (_dir, db) = scratch().await;
        inject(&db, "SAVEPOINT job");
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = ran.clone();
        let r = db
            .submit(move |tx| {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                insert(1)(tx)
            })
            .await;
        assert!(r.is_err());
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(rows(&db), Vec::<i64>::new());
    }

    #[tokio::test]
    async fn a_broken_savepoint_rolls_the_whole_batch_back_and_says_so() {
        let (_dir, db) = scratch().await;
        // Many jobs at once share batches; one release fails. Whatever was answered Ok is
        // in the table, and nothing else is.
        inject(&db, "RELEASE job");
        let jobs: Vec<_> = (0..40)
            .map(|i| {
                if i % 3 == 0 {
                    tokio::spawn(db_submit(&db, insert_then_fail(i)))
                } else {
                    tokio::spawn(db_submit(&db, insert(i)))
                }
            })
            .collect();
        let mut answered_ok = Vec::new();
        for (i, j) in jobs.into_iter().enumerate() {
            if j.await.unwrap().is_ok() {
                answered_ok.push(i as i64);
            }
        }
        assert!(answered_ok.iter().all(|i| i % 3 != 0));
        assert!(answered_ok.len() < 27, "the broken batch was answered Ok");
        assert_eq!(rows(&db), answered_ok);
    }

    fn db_submit(
        db: &Sqlite,
        f: impl FnOnce(&mut Tx<'_>) -> StoreResult<()> + Send + 'static,
    ) -> impl std::future::Future<Output = StoreResult<()>> + Send + 'static {
        let (reply, recv) = tokio::sync::oneshot::channel();
        let job: Box<dyn Job> = Box::new(Unit {
            work: Some(f),
            result: None,
            reply,
        });
        let sent = db.jobs.send(job);
        async move {
            sent.map_err(|_| StoreError::Sqlite("writer stopped".into()))?;
            recv.await
                .map_err(|_| StoreError::Sqlite("dropped".into()))?
        }
    }
}
