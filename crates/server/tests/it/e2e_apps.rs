//! Entitlement checks through the real binary: two `seatkeeper serve` processes on one
//! PostgreSQL. A change made through node 1 is answered by node 2 within the stated bound
//! (`snapshot::CATCH_UP_TICK` plus a query: 1 s), and again after every database connection
//! of both nodes has been cut.

use crate::binary;

use std::time::{Duration, Instant};

use binary::{Server, cli_ok};
use serde_json::{Value, json};

/// The bound the README states for another node's change to reach a node's answers.
const BOUND: Duration = Duration::from_secs(1);

struct Node {
    http: reqwest::Client,
    base: String,
}

impl Node {
    async fn check(&self, key: &str, user: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/api/v1/check", self.base))
            .bearer_auth(key)
            .json(&json!({"user": user, "feature": "export"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn scim(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}/scim/v2{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// Creates a user through SCIM; returns its id.
    async fn create_user(&self, token: &str, user_name: &str) -> String {
        self.scim(
            token,
            reqwest::Method::POST,
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string()
    }

    async fn set_active(&self, token: &str, id: &str, active: bool) {
        self.scim(
            token,
            reqwest::Method::PATCH,
            &format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "active", "value": active}]}),
        )
        .await;
    }
}

/// Two servers on `db`, and a client for each.
fn two_nodes(db: &str) -> (Server, Server, Node, Node) {
    let (one, two) = (Server::start(db, &[]), Server::start(db, &[]));
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let n1 = Node {
        http: http.clone(),
        base: one.base.clone(),
    };
    let n2 = Node {
        http,
        base: two.base.clone(),
    };
    (one, two, n1, n2)
}

/// Applies a model with one product (`workspace`, its plan `pro` granting `export`) and
/// `seats` seats of it for `tenant`.
fn apply_workspace(db: &str, dir: &tempfile::TempDir, tenant: &str, seats: u32) {
    let model = dir.path().join("model.toml");
    std::fs::write(
        &model,
        format!(
            r#"
[[products]]
key = "workspace"
name = "Workspace"
[[products.plans]]
key = "pro"
rank = 1
features = ["export"]
[[tenants]]
id = "{tenant}"
[[tenants.subscriptions]]
product = "workspace"
plan = "pro"
seats = {seats}
starts_at = "2026-01-01T00:00:00Z"
"#
        ),
    )
    .unwrap();
    cli_ok(db, &["apply", model.to_str().unwrap()]);
}

/// Polls `probe` until it says done; returns how long that took, and panics (with what the
/// probe last saw) past `limit`.
async fn within<T: std::fmt::Debug>(
    limit: Duration,
    pause: Duration,
    mut probe: impl AsyncFnMut() -> (bool, T),
) -> Duration {
    let start = Instant::now();
    loop {
        let (done, seen) = probe().await;
        if done {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {seen:?} after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(pause).await;
    }
}

/// How long until `node` answers `allowed` for `user`; panics past `limit`.
async fn seen_within(
    node: &Node,
    key: &str,
    user: &str,
    allowed: bool,
    limit: Duration,
) -> Duration {
    within(limit, Duration::from_millis(10), async || {
        let a = node.check(key, user).await;
        (a["allowed"] == allowed, a)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_the_other_postgres() {
    let own = binary::OwnDatabase::create("apps_two_nodes").await;
    let db = own.url.clone();
    let tenant = cli_ok(&db, &["tenant", "create", "two-nodes"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let key = cli_ok(&db, &["app-key", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    apply_workspace(&db, &dir, &tenant, 10);
    let (one, two, n1, n2) = two_nodes(&db);
    let alice = n1.create_user(&token, "alice").await;
    // Both nodes load the tenant's snapshot.
    assert_eq!(n1.check(&key, "alice").await["allowed"], true);
    assert_eq!(n2.check(&key, "alice").await["allowed"], true);

    // Deprovisioned on node 1: node 1 denies at once, node 2 within the bound.
    n1.set_active(&token, &alice, false).await;
    assert_eq!(n1.check(&key, "alice").await["reason"], "user inactive");
    let took = seen_within(&n2, &key, "alice", false, BOUND).await;
    eprintln!("node 2 saw the deactivation after {took:?}");

    // Every connection of both nodes cut (pools and listeners), then a change on node 1.
    assert!(own.cut_connections().await >= 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    n1.set_active(&token, &alice, true).await;
    let took = seen_within(&n2, &key, "alice", true, BOUND).await;
    eprintln!("node 2 saw the reactivation after {took:?} (connections cut before)");
    // And the other way round, once more after the reconnection.
    n2.set_active(&token, &alice, false).await;
    assert_eq!(n2.check(&key, "alice").await["allowed"], false);
    seen_within(&n1, &key, "alice", false, BOUND).await;

    drop((one, two));
    own.drop_database().await;
}

/// `GET /Users/{id}` on `node`: its status and body.
async fn get_user(node: &Node, token: &str, id: &str) -> (u16, Value) {
    let r = node
        .http
        .get(format!("{}/scim/v2/Users/{id}", node.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// How long until `node` reads `user` as `want` says; panics past `limit`.
async fn read_within(
    node: &Node,
    token: &str,
    id: &str,
    want: impl Fn(u16, &Value) -> bool,
    limit: Duration,
) -> Duration {
    within(limit, Duration::from_millis(5), async || {
        let (status, body) = get_user(node, token, id).await;
        (want(status, &body), (status, body))
    })
    .await
}

/// Each node keeps rendered users (`--user-cache-mb`); a write on another node reaches them
/// through its commit's `NOTIFY`, also after every connection was cut, and a deletion too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_reaches_the_others_cached_reads_postgres() {
    let own = binary::OwnDatabase::create("cache_two_nodes").await;
    let db = own.url.clone();
    let tenant = cli_ok(&db, &["tenant", "create", "cache-nodes"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let (one, two, n1, n2) = two_nodes(&db);
    let alice = n1.create_user(&token, "alice").await;
    let nick = |n: &str| {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "replace", "path": "nickName", "value": n}]})
    };
    let path = format!("/Users/{alice}");
    // Node 2 renders alice and keeps her; the same bytes come back while nothing changes.
    let (status, first) = get_user(&n2, &token, &alice).await;
    assert_eq!(status, 200);
    assert_eq!(get_user(&n2, &token, &alice).await.1, first);
    for (round, name) in ["one", "two", "three"].into_iter().enumerate() {
        if round == 1 {
            // Every connection of both nodes cut, the listeners' too.
            assert!(own.cut_connections().await >= 2);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        n1.scim(&token, reqwest::Method::PATCH, &path, nick(name))
            .await;
        // Node 1 reads its own write at once.
        assert_eq!(get_user(&n1, &token, &alice).await.1["nickName"], name);
        let took = read_within(&n2, &token, &alice, |_, b| b["nickName"] == name, BOUND).await;
        eprintln!("node 2 read nickName {name} after {took:?}");
        // And keeps reading it (nothing older comes back from its cache).
        for _ in 0..20 {
            assert_eq!(get_user(&n2, &token, &alice).await.1["nickName"], name);
        }
    }
    n1.scim(&token, reqwest::Method::DELETE, &path, Value::Null)
        .await;
    read_within(&n2, &token, &alice, |s, _| s == 404, BOUND).await;

    drop((one, two));
    own.drop_database().await;
}

/// `seatkeeper_snapshot_loads_total` of the server at `base`.
async fn snapshot_loads(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("seatkeeper_snapshot_loads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A mass deprovision the brake holds changes no license, so the tenant's entitlement
/// snapshot stays loaded through it (it used to be reloaded whole once per held user), and its
/// answers still follow every user: the held ones are denied, one who comes back is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brake_holds_keep_the_snapshot_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("brake.db").display());
    let api = binary::tenant_api(&db, "http://unused", "brake");
    let key = cli_ok(&db, &["app-key", "create", "--tenant", &api.tenant])
        .trim()
        .to_string();
    apply_workspace(&db, &dir, &api.tenant, 40);
    let server = Server::start(&db, &[]);
    let api = api.via(&server.base);
    let node = Node {
        http: seatkeeper::crypto::http_client()
            .build()
            .expect("an HTTP client"),
        base: server.base.clone(),
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(api.user(&format!("u{i:02}"), json!({})).await);
    }
    assert_eq!(node.check(&key, "u00").await["allowed"], true);
    let loads = snapshot_loads(&server.base).await;
    assert!(loads >= 1.0);
    // The brake's defaults (25 %, at least 10, in 60 minutes): of 15 deprovisions, 10 are
    // applied and 5 held.
    for id in &ids[..15] {
        api.set_active(id, false).await;
    }
    let held = api
        .admin("GET", &format!("/tenants/{}/held", api.tenant), None)
        .await;
    assert_eq!(held["held"].as_array().map(Vec::len), Some(5), "{held}");
    for i in [0, 12, 14] {
        let a = node.check(&key, &format!("u{i:02}")).await;
        assert_eq!(a["reason"], "user inactive", "{a}");
    }
    // One held user comes back: allowed again.
    api.set_active(&ids[12], true).await;
    assert_eq!(node.check(&key, "u12").await["allowed"], true);
    assert_eq!(node.check(&key, "u19").await["allowed"], true);
    assert_eq!(
        snapshot_loads(&server.base).await,
        loads,
        "the holds reloaded the snapshot"
    );
}
