//! End to end: the real `seatkeeper` binary on 127.0.0.1, driven over HTTP and its CLI.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Backend;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_seatkeeper");
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn cli(db: &str, args: &[&str]) -> String {
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

struct Server {
    child: Child,
    base: String,
    stdout: Vec<String>,
}

impl Server {
    fn start(db: &str, admin: Option<&str>) -> Server {
        Server::start_with(db, admin, &[])
    }

    fn start_with(db: &str, admin: Option<&str>, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db,
            "--rate-limit",
            "100000",
            "--rate-burst",
            "100000",
        ])
        .env("SEATKEEPER_LOG_FORMAT", "text")
        .env_remove("SEATKEEPER_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        cmd.args(extra);
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
        std::thread::spawn(move || for _ in reader.lines() {});
        Server {
            child,
            base,
            stdout,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        if status != 204 {
            assert!(
                resp.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/scim+json")
            );
        }
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn database(b: Backend, dir: &tempfile::TempDir) -> String {
    match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("e2e.db").display()),
        Backend::Postgres => common::postgres_url(),
    }
}

async fn provisioning_through_the_binary(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli(&db, &["tenant", "create", "Contoso"]);
    let tenant = tenant.trim();
    assert_eq!(
        tenant.len(),
        36,
        "tenant create prints the id alone: {tenant:?}"
    );
    let token = cli(
        &db,
        &["token", "create", "--tenant", tenant, "--name", "entra"],
    );
    let token = token.trim();
    assert!(token.starts_with("skt_") && !token.contains('\n'));
    let server = Server::start(&db, Some("e2e-admin"));
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("{}/scim/v2", server.base),
        token: token.to_string(),
    };

    // Entra ID: look up, create, update, deactivate.
    let (s, found) = c
        .call(
            "GET",
            "/Users?filter=userName%20eq%20%22e2e%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!((s, found["totalResults"].clone()), (200, json!(0)));
    let (s, user) = c.call("POST", "/Users", Some(json!({"schemas": [USER], "userName": "e2e@contoso.com", "active": true, "externalId": "x1"}))).await;
    assert_eq!(s, 201, "{user}");
    let id = user["id"].as_str().unwrap().to_string();
    assert!(
        user["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with(&server.base)
    );
    let (s, _) = c
        .call(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "E2E@contoso.com"})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, off) = c.call("PATCH", &format!("/Users/{id}"), Some(json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}))).await;
    assert_eq!((s, off["active"].clone()), (200, json!(false)));
    // Groups: create, add and remove members.
    let (s, g) = c
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "E2E"})),
        )
        .await;
    assert_eq!(s, 201);
    let gid = g["id"].as_str().unwrap().to_string();
    let (s, g) = c
        .call("PATCH", &format!("/Groups/{gid}"), Some(json!({"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": id}]}]})))
        .await;
    assert_eq!((s, g["members"][0]["value"].clone()), (200, json!(id)));
    let (s, g) = c
        .call("PATCH", &format!("/Groups/{gid}"), Some(json!({"schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": id}]}]})))
        .await;
    assert_eq!(s, 200);
    assert!(g.get("members").is_none(), "{g}");
    // Okta: PUT replaces the whole user, including deactivation.
    let (s, okta) = c
        .call("POST", "/Users", Some(json!({"schemas": [USER], "userName": "okta@contoso.com", "name": {"givenName": "O", "familyName": "K"}, "active": true})))
        .await;
    assert_eq!(s, 201);
    let oid = okta["id"].as_str().unwrap().to_string();
    let (s, put) = c
        .call("PUT", &format!("/Users/{oid}"), Some(json!({"schemas": [USER], "id": oid, "userName": "okta@contoso.com", "name": {"givenName": "Okta"}, "active": false})))
        .await;
    assert_eq!(s, 200, "{put}");
    assert_eq!(
        (put["active"].clone(), put["name"].clone()),
        (json!(false), json!({"givenName": "Okta"}))
    );
    let (s, _) = c.call("GET", "/Groups/not-a-real-id", None).await;
    assert_eq!(s, 404);
    let (s, _) = c.call("GET", "/Users/not-a-real-id", None).await;
    assert_eq!(s, 404);
    let (s, _) = c.call("DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(s, 204);
    // Operations endpoints.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("seatkeeper_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("seatkeeper_http_request_duration_seconds"));
    assert_eq!(
        reqwest::get(format!("{}/readyz", server.base))
            .await
            .unwrap()
            .status(),
        200
    );
    // The admin API creates tenants too.
    let t = reqwest::Client::new()
        .post(format!("{}/api/v1/tenants", server.base))
        .bearer_auth("e2e-admin")
        .json(&json!({"name": "Fabrikam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 201);
    drop(server);
    let verify = cli(&db, &["audit", "verify", "--tenant", tenant]);
    assert!(verify.starts_with("ok"), "{verify}");
}

/// Every answered write survives a SIGKILL of the process.
async fn committed_writes_survive_sigkill(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli(&db, &["tenant", "create", "Crash"]).trim().to_string();
    let token = cli(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let mut server = Server::start(&db, Some("x"));
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("{}/scim/v2", server.base),
        token: token.clone(),
    };
    let mut ids = Vec::new();
    for i in 0..50 {
        let (s, u) = c
            .call(
                "POST",
                "/Users",
                Some(json!({"schemas": [USER], "userName": format!("crash{i}")})),
            )
            .await;
        assert_eq!(s, 201);
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    server.kill(); // SIGKILL
    let server = Server::start(&db, Some("x"));
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("{}/scim/v2", server.base),
        token,
    };
    for id in &ids {
        let (s, _) = c.call("GET", &format!("/Users/{id}"), None).await;
        assert_eq!(s, 200, "user {id} was answered 201 but lost");
    }
    drop(server);
    assert!(cli(&db, &["audit", "verify", "--tenant", &tenant]).starts_with("ok"));
}

/// The admin token is generated on first start, printed once, and kept.
#[tokio::test]
async fn admin_token_is_generated_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("admin.db").display());
    let mut first = Server::start(&db, None);
    std::thread::sleep(Duration::from_millis(100));
    let printed = first.stdout.join("");
    let token: String = printed
        .split("generated admin token")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().find(|w| w.starts_with("ska_")))
        .expect("the first start prints the admin token")
        .to_string();
    let ok = reqwest::Client::new()
        .get(format!("{}/api/v1/tenants", first.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    first.kill();
    let second = Server::start(&db, None);
    assert!(!second.stdout.join("").contains("generated admin token"));
    let still = reqwest::Client::new()
        .get(format!("{}/api/v1/tenants", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
}

/// `audit verify` fails, naming the record, after a stored row is edited by hand.
#[tokio::test]
async fn audit_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    let tenant = cli(&db, &["tenant", "create", "Audit"]).trim().to_string();
    let token = cli(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let server = Server::start(&db, Some("x"));
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("{}/scim/v2", server.base),
        token,
    };
    for i in 0..3 {
        c.call(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": format!("a{i}")})),
        )
        .await;
    }
    drop(server);
    // The tenant's creation and its token's (by the CLI) come first, then the three users.
    assert!(cli(&db, &["audit", "verify"]).contains("5 records, chain intact"));
    let store = seatkeeper::kernel::store::Store::connect(&db, &Default::default())
        .await
        .unwrap();
    store
        .execute_unchecked(
            "UPDATE audit_log SET after_doc = '{\"userName\":\"evil\"}' WHERE seq = 4",
            vec![],
        )
        .await
        .unwrap();
    store.close().await;
    let out = Command::new(BIN)
        .args(["audit", "verify", "--database", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BROKEN") && text.contains("record 4"),
        "{text}"
    );
}

/// Two `seatkeeper` processes on one PostgreSQL: racing creates of one userName give exactly
/// one user, every other create lands, and the tenant's audit chain stays one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_keep_uniqueness_and_one_audit_chain() {
    let db = common::postgres_url();
    let tenant = cli(&db, &["tenant", "create", "TwoNodes"])
        .trim()
        .to_string();
    let token = cli(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let (a, b) = (Server::start(&db, Some("x")), Server::start(&db, Some("x")));
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (http, token) = (http.clone(), token.clone());
        // Every third request races for the same userName; the rest are distinct.
        let user_name = if i % 3 == 0 {
            "contended@x".to_string()
        } else {
            format!("distinct{i}@x")
        };
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/scim/v2/Users"))
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(json!({"schemas": [USER], "userName": user_name}).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let created = statuses.iter().filter(|s| **s == 201).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, conflicts), (41, 19), "{statuses:?}");
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("{}/scim/v2", b.base),
        token,
    };
    let (_, list) = c.call("GET", "/Users?count=0", None).await;
    assert_eq!(list["totalResults"], 41);
    drop((a, b));
    let verify = cli(&db, &["audit", "verify", "--tenant", &tenant]);
    // 41 users after the tenant's creation and its token's.
    assert!(verify.contains("43 records, chain intact"), "{verify}");
}

both_backends!(
    provisioning_through_the_binary,
    committed_writes_survive_sigkill
);
