//! Running the real `seatkeeper` binary: the CLI, and a server on `127.0.0.1:0`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::Backend;

pub const BIN: &str = env!("CARGO_BIN_EXE_seatkeeper");
pub const ADMIN: &str = "e2e-admin";

/// Runs a CLI command against `db` and returns its stdout; panics if it fails.
pub fn cli_ok(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("SEATKEEPER_DATABASE", db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A database URL for an end-to-end test.
pub fn database(b: Backend, dir: &tempfile::TempDir) -> String {
    match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("e2e.db").display()),
        Backend::Postgres => crate::common::postgres_url(),
    }
}

/// A running `seatkeeper serve`, killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(db: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", db])
            .args(["--rate-limit", "100000", "--rate-burst", "100000"])
            .args(extra)
            .env("SEATKEEPER_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let base = loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "server exited early"
            );
            if let Some(idx) = line.find("listening on http://") {
                let addr: String = line[idx + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                break format!("http://{addr}");
            }
        };
        // Warnings and errors of the server show in the test's output when it fails.
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("server: {line}");
                }
            }
        });
        Server { child, base }
    }

    /// SIGKILL, no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL database of one test alone, so no other test's server works on its rows.
pub struct OwnDatabase {
    pub url: String,
    name: String,
    admin: sqlx::PgPool,
}

impl OwnDatabase {
    pub async fn create(tag: &str) -> OwnDatabase {
        let base_url = crate::common::postgres_url();
        let (prefix, _) = base_url.rsplit_once('/').unwrap();
        let name = format!("sk_{tag}_{}", std::process::id());
        let admin = sqlx::PgPool::connect(&base_url).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        OwnDatabase {
            url: format!("{prefix}/{name}"),
            name,
            admin,
        }
    }

    /// Drops the database (after the test's servers are gone).
    pub async fn drop_database(self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await;
    }

    /// Cuts every connection to the database (each node's pool and listener).
    pub async fn cut_connections(&self) -> u64 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .execute(&self.admin)
        .await
        .unwrap()
        .rows_affected()
    }
}
