//! The two database drivers behind one small interface: run a statement, get rows.
//!
//! SQL is written once with `$1, $2, …` placeholders, which PostgreSQL takes natively and
//! SQLite takes as named parameters. SQLite runs in-process through rusqlite, inline on the
//! calling task: a statement costs microseconds, and avoiding a hop to a worker thread per
//! statement (as async SQLite drivers do) is what makes a SCIM write cost one transaction
//! rather than a dozen thread switches. Writes go through one writer connection guarded by
//! an async mutex (SQLite allows one writer at a time anyway); reads use a pool of reader
//! connections (WAL lets them run beside the writer). PostgreSQL goes through sqlx.
//! These enum matches are the only places that know which database is in use.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Column, Postgres, Row as _, TypeInfo};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::{StoreError, StoreResult};

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

/// Builds a parameter list: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$($crate::store::db::P::from($p)),*] };
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Int(i64),
    Text(String),
}

/// A result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<V>);

impl Row {
    /// Column `i` as text ("" when NULL).
    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }

    /// Column `i` as optional text.
    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(V::Text(s)) => Some(s.clone()),
            Some(V::Int(n)) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Column `i` as an integer (0 when NULL).
    pub fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(V::Int(n)) => *n,
            Some(V::Text(s)) => s.parse().unwrap_or_default(),
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------- SQLite

const PARAM_NAMES: [&str; 16] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
    "$16",
];

fn map_sqlite(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        // SQLITE_CONSTRAINT_UNIQUE (2067) and SQLITE_CONSTRAINT_PRIMARYKEY (1555).
        if f.extended_code == 2067 || f.extended_code == 1555 {
            return StoreError::Unique(msg.clone().unwrap_or_default());
        }
    }
    StoreError::Sqlite(e.to_string())
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[P]) -> rusqlite::Result<()> {
    for (i, p) in params.iter().enumerate() {
        let owned;
        let name = match PARAM_NAMES.get(i) {
            Some(n) => *n,
            None => {
                owned = format!("${}", i + 1);
                owned.as_str()
            }
        };
        let Some(idx) = stmt.parameter_index(name)? else {
            continue;
        };
        match p {
            P::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null)?,
            P::Int(n) => stmt.raw_bind_parameter(idx, n)?,
            P::Text(s) => stmt.raw_bind_parameter(idx, s.as_str())?,
        }
    }
    Ok(())
}

fn sqlite_fetch(conn: &rusqlite::Connection, sql: &str, params: &[P]) -> StoreResult<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_sqlite)?;
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
    let mut stmt = conn.prepare_cached(sql).map_err(map_sqlite)?;
    bind(&mut stmt, params).map_err(map_sqlite)?;
    stmt.raw_execute().map(|n| n as u64).map_err(map_sqlite)
}

/// The SQLite side: one writer, a pool of readers.
pub struct Sqlite {
    path: PathBuf,
    pragmas: Vec<String>,
    writer: Arc<AsyncMutex<rusqlite::Connection>>,
    readers: Mutex<Vec<rusqlite::Connection>>,
    max_readers: usize,
}

impl Sqlite {
    pub fn open(path: PathBuf, synchronous: &str, max_readers: usize) -> StoreResult<Sqlite> {
        let pragmas = vec![
            "PRAGMA journal_mode = WAL".to_string(),
            format!("PRAGMA synchronous = {synchronous}"),
            "PRAGMA busy_timeout = 10000".into(),
            "PRAGMA foreign_keys = ON".into(),
            // LIKE must be case-sensitive: folded columns carry case-insensitivity, and
            // caseExact attributes must not match another case.
            "PRAGMA case_sensitive_like = ON".into(),
            "PRAGMA cache_size = -65536".into(),
            "PRAGMA temp_store = MEMORY".into(),
        ];
        let writer = Self::connect(&path, &pragmas)?;
        Ok(Sqlite {
            path,
            pragmas,
            writer: Arc::new(AsyncMutex::new(writer)),
            readers: Mutex::new(Vec::new()),
            max_readers: max_readers.max(1),
        })
    }

    fn connect(path: &PathBuf, pragmas: &[String]) -> StoreResult<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path).map_err(map_sqlite)?;
        conn.set_prepared_statement_cache_capacity(256);
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
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < self.max_readers {
                pool.push(conn);
            }
        }
        result
    }
}

// ---------------------------------------------------------------- PostgreSQL

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn pg_bind<'q>(sql: &'q str, params: &'q [P]) -> PgQuery<'q> {
    let mut q = sqlx::query(sql);
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
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Unique(db.message().to_string());
        }
    }
    StoreError::Db(e)
}

// ---------------------------------------------------------------- the pool

/// A connection pool to either database.
#[derive(Clone)]
pub enum Pool {
    /// Embedded SQLite.
    Sqlite(Arc<Sqlite>),
    /// PostgreSQL.
    Postgres(PgPool),
}

impl Pool {
    /// Runs a read query.
    pub async fn fetch(&self, sql: &str, params: &[P]) -> StoreResult<Vec<Row>> {
        match self {
            Pool::Sqlite(s) => s.with_reader(|c| sqlite_fetch(c, sql, params)),
            Pool::Postgres(pg) => pg_bind(sql, params)
                .fetch_all(pg)
                .await
                .map_err(map_pg)?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    /// Runs a read query expecting at most one row.
    pub async fn fetch_opt(&self, sql: &str, params: &[P]) -> StoreResult<Option<Row>> {
        Ok(self.fetch(sql, params).await?.into_iter().next())
    }

    /// Runs one write statement in its own transaction.
    pub async fn execute(&self, sql: &str, params: &[P]) -> StoreResult<u64> {
        match self {
            Pool::Sqlite(s) => {
                let w = s.writer.lock().await;
                sqlite_exec(&w, sql, params)
            }
            Pool::Postgres(pg) => Ok(pg_bind(sql, params)
                .execute(pg)
                .await
                .map_err(map_pg)?
                .rows_affected()),
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> StoreResult<DbTx> {
        match self {
            Pool::Sqlite(s) => {
                let guard = s.writer.clone().lock_owned().await;
                // IMMEDIATE takes the write lock now, so the transaction never has to upgrade.
                sqlite_exec(&guard, "BEGIN IMMEDIATE", &[])?;
                Ok(DbTx(Some(TxInner::Sqlite(guard))))
            }
            Pool::Postgres(pg) => Ok(DbTx(Some(TxInner::Postgres(
                pg.begin().await.map_err(map_pg)?,
            )))),
        }
    }

    /// Closes connections.
    pub async fn close(&self) {
        match self {
            Pool::Sqlite(s) => {
                if let Ok(mut r) = s.readers.lock() {
                    r.clear();
                }
            }
            Pool::Postgres(pg) => pg.close().await,
        }
    }
}

/// A write transaction. Dropped without [`DbTx::commit`], it rolls back.
pub struct DbTx(Option<TxInner>);

enum TxInner {
    /// SQLite: the writer connection, held for the transaction's life, inside `BEGIN IMMEDIATE`.
    Sqlite(OwnedMutexGuard<rusqlite::Connection>),
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, Postgres>),
}

fn finished() -> StoreError {
    StoreError::Sqlite("transaction already finished".into())
}

impl DbTx {
    /// Runs a query in the transaction.
    pub async fn fetch(&mut self, sql: &str, params: &[P]) -> StoreResult<Vec<Row>> {
        match self.0.as_mut().ok_or_else(finished)? {
            TxInner::Sqlite(c) => sqlite_fetch(c, sql, params),
            TxInner::Postgres(tx) => pg_bind(sql, params)
                .fetch_all(&mut **tx)
                .await
                .map_err(map_pg)?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    /// Runs a query expecting at most one row.
    pub async fn fetch_opt(&mut self, sql: &str, params: &[P]) -> StoreResult<Option<Row>> {
        Ok(self.fetch(sql, params).await?.into_iter().next())
    }

    /// Runs a statement in the transaction.
    pub async fn execute(&mut self, sql: &str, params: &[P]) -> StoreResult<u64> {
        match self.0.as_mut().ok_or_else(finished)? {
            TxInner::Sqlite(c) => sqlite_exec(c, sql, params),
            TxInner::Postgres(tx) => Ok(pg_bind(sql, params)
                .execute(&mut **tx)
                .await
                .map_err(map_pg)?
                .rows_affected()),
        }
    }

    /// Commits.
    pub async fn commit(mut self) -> StoreResult<()> {
        match self.0.take().ok_or_else(finished)? {
            TxInner::Sqlite(c) => {
                if let Err(e) = sqlite_exec(&c, "COMMIT", &[]) {
                    let _ = c.execute_batch("ROLLBACK");
                    return Err(e);
                }
                Ok(())
            }
            TxInner::Postgres(tx) => tx.commit().await.map_err(map_pg),
        }
    }
}

impl Drop for DbTx {
    fn drop(&mut self) {
        if let Some(TxInner::Sqlite(c)) = &self.0 {
            let _ = c.execute_batch("ROLLBACK");
        }
    }
}
