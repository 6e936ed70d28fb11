//! Running the real `seatkeeper` binary: the CLI, and a server on `127.0.0.1:0`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::common::{Backend, EXT, PATCH, USER};
pub use seatkeeper::testing::OwnDatabase;

pub const BIN: &str = env!("CARGO_BIN_EXE_seatkeeper");
pub const ADMIN: &str = "e2e-admin";

/// Runs a CLI command against `db`: its exit success, stdout and stderr.
pub fn cli(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("SEATKEEPER_DATABASE", db)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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

/// A new tenant (named `name`) with a SCIM token, created through the CLI, and a client for
/// the server at `base`.
pub fn tenant_api(db: &str, base: &str, name: &str) -> Api {
    let tenant = cli_ok(db, &["tenant", "create", name]).trim().to_string();
    let token = cli_ok(db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    Api::new(base, &token, &tenant)
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
    /// What the server printed up to its listening line.
    pub stdout: Vec<String>,
}

impl Server {
    /// A server with the admin token [`ADMIN`].
    pub fn start(db: &str, extra: &[&str]) -> Server {
        Server::start_as(db, Some(ADMIN), extra)
    }

    /// A server with this admin token, or none (it then generates one).
    pub fn start_as(db: &str, admin: Option<&str>, extra: &[&str]) -> Server {
        Server::start_by(Command::new(BIN), db, admin, extra)
    }

    /// A server started by `cmd` (the binary, or a shell that sets limits and `exec`s it,
    /// given the server's arguments after its own).
    pub fn start_by(mut cmd: Command, db: &str, admin: Option<&str>, extra: &[&str]) -> Server {
        // The tests' webhook receivers listen on 127.0.0.1: allowed unless a test says not.
        if !cmd
            .get_envs()
            .any(|(k, _)| k == "SEATKEEPER_ALLOW_PRIVATE_WEBHOOKS")
        {
            cmd.env("SEATKEEPER_ALLOW_PRIVATE_WEBHOOKS", "true");
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        // An empty `db`: the command's environment names the database.
        if !db.is_empty() {
            cmd.args(["--database", db]);
        }
        cmd.args(["--rate-limit", "100000", "--rate-burst", "100000"])
            .args(extra)
            .env("SEATKEEPER_LOG_FORMAT", "text")
            .env_remove("SEATKEEPER_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(a) = admin {
            cmd.env("SEATKEEPER_ADMIN_TOKEN", a);
        }
        let mut child = cmd.spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut stdout = Vec::new();
        let base = loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "server exited early: {stdout:?}"
            );
            stdout.push(line.clone());
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
        Server {
            child,
            base,
            stdout,
        }
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

/// An HTTP client for a running server: its SCIM token and tenant, and the admin token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub scim_token: String,
    pub tenant: String,
}

impl Api {
    pub fn new(base: &str, scim_token: &str, tenant: &str) -> Api {
        Api {
            http: seatkeeper::crypto::http_client()
                .build()
                .expect("an HTTP client"),
            base: base.to_string(),
            scim_token: scim_token.to_string(),
            tenant: tenant.to_string(),
        }
    }

    pub async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        // A server that is down (killed by the test) answers 0.
        let Ok(resp) = req.send().await else {
            return (0, Value::Null);
        };
        let status = resp.status().as_u16();
        if path.starts_with("/scim/v2") && status != 204 {
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok());
            assert!(
                ct.is_some_and(|c| c.starts_with("application/scim+json")),
                "{method} {path}: content-type {ct:?}"
            );
        }
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn scim(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(&self.scim_token, method, &format!("/scim/v2{path}"), body)
            .await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self
            .call(ADMIN, method, &format!("/api/v1{path}"), body)
            .await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    pub async fn user(&self, name: &str, extra: Value) -> String {
        let mut body = json!({"schemas": [USER], "userName": name});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let (status, v) = self.scim("POST", "/Users", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn set_active(&self, id: &str, active: bool) {
        let (status, v) = self
            .scim("PATCH", &format!("/Users/{id}"), Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": active}]})))
            .await;
        assert_eq!(status, 200, "{v}");
    }

    pub async fn usage(&self, product: &str) -> Value {
        let u = self
            .admin("GET", &format!("/tenants/{}/usage", self.tenant), None)
            .await;
        u["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["product"] == json!(product))
            .cloned()
            .unwrap()
    }

    /// (state, plan) of a user's license of `product`, if any.
    pub async fn license(&self, id: &str, product: &str) -> Option<(String, String)> {
        let (status, v) = self.scim("GET", &format!("/Users/{id}"), None).await;
        assert_eq!(status, 200);
        v[EXT]["licenses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["product"] == json!(product))
            .map(|l| {
                (
                    l["state"].as_str().unwrap().to_string(),
                    l["plan"].as_str().unwrap().to_string(),
                )
            })
    }

    pub async fn advance_days(&self, days: i64) -> Value {
        self.admin(
            "POST",
            "/clock",
            Some(json!({"advance_seconds": days * 86_400})),
        )
        .await
    }

    /// The same tenant and token through another server.
    pub fn via(&self, base: &str) -> Api {
        Api {
            http: seatkeeper::crypto::http_client()
                .build()
                .expect("an HTTP client"),
            base: base.to_string(),
            scim_token: self.scim_token.clone(),
            tenant: self.tenant.clone(),
        }
    }

    /// Registers an endpoint on a local receiver's port; returns the registration.
    pub async fn webhook(&self, port: u16, events: Value) -> Value {
        self.admin(
            "POST",
            &format!("/tenants/{}/webhooks", self.tenant),
            Some(json!({"url": format!("http://127.0.0.1:{port}/hook/{}", self.tenant), "events": events})),
        )
        .await
    }

    pub async fn create_user(&self, name: &str) -> (u16, Value) {
        self.call(
            &self.scim_token,
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": name})),
        )
        .await
    }

    /// Every event of the tenant, from the pull feed.
    pub async fn feed(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let v = self
                .admin(
                    "GET",
                    &format!("/events?tenant={}&after={after}&limit=1000", self.tenant),
                    None,
                )
                .await;
            out.extend(v["events"].as_array().unwrap().iter().cloned());
            after = v["next_cursor"].as_str().unwrap().to_string();
            if v["has_more"] != json!(true) {
                return out;
            }
        }
    }
}

/// A PostgreSQL of a test's own (`.ci/postgres.sh` on another port and data directory). Its
/// port lies below Linux's ephemeral range (32768–60999), so no client socket holds it.
pub struct OwnPostgres {
    pub env: Vec<(String, String)>,
    pub url: String,
}

pub fn script() -> String {
    format!("{}/../../.ci/postgres.sh", env!("CARGO_MANIFEST_DIR"))
}

impl OwnPostgres {
    pub fn start(port: u16) -> OwnPostgres {
        OwnPostgres::start_with(port, false)
    }

    /// With `tls`, the server requires nothing but offers TLS: a CA, a certificate for
    /// localhost and 127.0.0.1, and a client certificate for the role `certuser`, whose
    /// files lie in [`OwnPostgres::tls_dir`].
    pub fn start_with(port: u16, tls: bool) -> OwnPostgres {
        let mut env = vec![
            ("SEATKEEPER_TEST_PGPORT".to_string(), port.to_string()),
            (
                "SEATKEEPER_TEST_PGDATA".to_string(),
                format!("/tmp/seatkeeper-own-pg-{port}"),
            ),
        ];
        if tls {
            env.push(("SEATKEEPER_TEST_PG_TLS".to_string(), "1".to_string()));
        }
        let mut pg = OwnPostgres {
            env,
            url: String::new(),
        };
        pg.run("stop");
        let _ = std::fs::remove_dir_all(&pg.env[1].1);
        let out = pg.run("start");
        let url = out.lines().last().unwrap_or_default().to_string();
        assert!(
            url.starts_with("postgres://"),
            "PostgreSQL on port {port} did not start: {out}"
        );
        pg.url = url;
        pg
    }

    /// Where the client's TLS files are (`ca.crt`, `client.crt`, `client.key`).
    pub fn tls_dir(&self) -> String {
        format!("{}-tls", self.env[1].1)
    }

    /// Runs the script; its stdout, then its stderr.
    pub fn run(&self, action: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg(script())
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.run("stop");
        let _ = std::fs::remove_dir_all(&self.env[1].1);
    }
}
