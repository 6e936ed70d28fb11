//! Fault injection against the real binary (issue 15): PostgreSQL restarted under two nodes,
//! one node cut off from PostgreSQL by a proxy and healed, SQLite out of disk. Each test
//! starts the PostgreSQL it breaks; `.ci/run` runs this module on its own, one test at a time
//! (`faults::`), after the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::binary::{Api, OwnPostgres, Server, cli_ok, script};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A new tenant and a SCIM token for it, made with the CLI.
fn tenant_with_token(db: &str, name: &str) -> (String, String) {
    let tenant = cli_ok(db, &["tenant", "create", name]).trim().to_string();
    let token = cli_ok(db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    (tenant, token)
}

/// A product of `seats` hard seats that every user is given.
async fn licensed(api: &Api, product: &str, seats: u32) {
    let model = json!({
        "products": [{"key": product, "name": "Faults", "plans": [
            {"key": "pro", "rank": 1, "features": ["write"]}]}],
        "tenants": [{"id": api.tenant, "subscriptions": [{
            "product": product, "plan": "pro", "seats": seats,
            "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z",
            "enforcement": "hard"}],
            "rules": [{"name": "everyone", "filter": "userName pr", "product": product, "plan": "pro", "priority": 1}]}],
    });
    api.admin("PUT", "/model", Some(model)).await;
}

/// One answered request.
#[derive(Debug)]
struct Answer {
    node: usize,
    what: &'static str,
    status: u16,
    at: Instant,
    took: Duration,
    id: Option<String>,
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(20));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => panic!("{path}: no answer: {e}"),
    }
}

/// Creates, PATCHes and checks on both nodes until `stop`.
async fn load(
    bases: Vec<String>,
    token: String,
    app_key: String,
    worker: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Answer> {
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let mut out = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let node = (worker + i) % bases.len();
        let base = &bases[node];
        let t = Instant::now();
        let (status, v) = send(
            &http,
            base,
            &token,
            reqwest::Method::POST,
            "/scim/v2/Users",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("w{worker}-{i}@example.com")}),
            ),
        )
        .await;
        let id = v["id"].as_str().map(str::to_string);
        out.push(Answer {
            node,
            what: "create",
            status,
            at: Instant::now(),
            took: t.elapsed(),
            id: id.clone(),
        });
        if let Some(id) = id {
            let t = Instant::now();
            let (status, _) = send(
                &http,
                base,
                &token,
                reqwest::Method::PATCH,
                &format!("/scim/v2/Users/{id}"),
                Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "displayName", "value": format!("W {i}")}]})),
            )
            .await;
            out.push(Answer {
                node,
                what: "patch",
                status,
                at: Instant::now(),
                took: t.elapsed(),
                id: None,
            });
            let t = Instant::now();
            let (status, _) = send(
                &http,
                base,
                &app_key,
                reqwest::Method::POST,
                "/api/v1/check",
                Some(json!({"user": id, "feature": "write"})),
            )
            .await;
            out.push(Answer {
                node,
                what: "check",
                status,
                at: Instant::now(),
                took: t.elapsed(),
                id: None,
            });
        }
        i += 1;
    }
    out
}

/// `seatkeeper reconcile --check`: every license and seat count as deciding again gives.
fn consistent(db: &str) {
    let out = cli_ok(db, &["reconcile", "--check"]);
    assert!(out.contains("no differences"), "{out}");
    let out = cli_ok(db, &["audit", "verify"]);
    assert!(!out.contains("BROKEN"), "{out}");
}

/// PostgreSQL restarted (`pg_ctl restart -m fast`) while two nodes take creates, PATCHes and
/// checks: no answered write is lost, writes during the outage get 503 within the request
/// timeout (never a 500 or a hang), both nodes answer again within 5 s of PostgreSQL's
/// return, and the seat counts equal the license rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_under_two_nodes() {
    let pg = OwnPostgres::start(23441);
    let db = pg.url.clone();
    let (tenant, token) = tenant_with_token(&db, "Restarts");
    let app_key = cli_ok(&db, &["app-key", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let args = ["--request-timeout", "5"];
    let nodes = [Server::start(&db, &args), Server::start(&db, &args)];
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let api = Api::new(&bases[0], &token, &tenant);
    licensed(&api, "faults", 100_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(load(
                bases.clone(),
                token.clone(),
                app_key.clone(),
                w,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarting = Instant::now();
    let env = pg.env.clone();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("bash")
            .arg(script())
            .arg("restart")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
    .unwrap();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }

    let count = |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count();
    let unavailable = count(&|a| a.status == 503);
    eprintln!(
        "{} answers; restart took {:?}; 503s: {unavailable}; statuses: {:?}",
        answers.len(),
        back - restarting,
        answers
            .iter()
            .fold(std::collections::BTreeMap::new(), |mut m, a| {
                *m.entry((a.what, a.status)).or_insert(0) += 1;
                m
            })
    );
    for a in &answers {
        assert!(
            matches!(a.status, 200 | 201 | 503),
            "{a:?}: only success or 503 while PostgreSQL restarts"
        );
        assert!(
            a.took < Duration::from_secs(7),
            "{a:?}: longer than the request timeout"
        );
    }
    // Both nodes answer writes again within 5 s of PostgreSQL's return.
    for node in 0..2 {
        let first = answers
            .iter()
            .filter(|a| a.node == node && a.what == "create" && a.status == 201 && a.at > back)
            .map(|a| a.at)
            .min()
            .unwrap_or_else(|| panic!("node {node} never wrote again"));
        assert!(
            first - back < Duration::from_secs(5),
            "node {node} wrote again {:?} after PostgreSQL returned",
            first - back
        );
    }
    // No answered write is lost: every user answered 201 is there, on either node.
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let created: Vec<&String> = answers
        .iter()
        .filter(|a| a.status == 201)
        .filter_map(|a| a.id.as_ref())
        .collect();
    assert!(created.len() > 50, "{} creates", created.len());
    for (i, id) in created.iter().enumerate() {
        let (status, _) = send(
            &http,
            &bases[i % 2],
            &token,
            reqwest::Method::GET,
            &format!("/scim/v2/Users/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "user {id}, answered 201, is gone");
    }
    // Checks on both nodes see users created after the restart (snapshots rebuilt).
    let last = created.last().unwrap();
    for base in &bases {
        let (status, v) = send(
            &http,
            base,
            &app_key,
            reqwest::Method::POST,
            "/api/v1/check",
            Some(json!({"user": last, "feature": "write"})),
        )
        .await;
        assert_eq!((status, v["allowed"].clone()), (200, json!(true)), "{v}");
    }
    drop(nodes);
    consistent(&db);
}

/// A TCP proxy that can be cut (every connection dropped, new ones refused) and healed.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !o.load(Ordering::Relaxed) {
                    let _ = client.shutdown().await;
                    continue;
                }
                let target = target.clone();
                let (o, g) = (o.clone(), g.clone());
                let born = g.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let cut = async {
                        while o.load(Ordering::Relaxed) && g.load(Ordering::Relaxed) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = cut => {}
                    }
                });
            }
        });
        Proxy {
            port,
            open,
            generation,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn heal(&self) {
        self.open.store(true, Ordering::Relaxed);
    }
}

/// One node cut off from PostgreSQL by a proxy: it answers 503 and fails `/readyz`; the other
/// node goes on; no seat is oversold across the partition; healed, the node answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_node_fails_ready_and_the_other_goes_on() {
    let pg = OwnPostgres::start(23442);
    let db = pg.url.clone();
    let (tenant, token) = tenant_with_token(&db, "Partition");
    let port: u16 = db
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = Proxy::start(format!("127.0.0.1:{port}")).await;
    let via_proxy = db.replace(&format!(":{port}/"), &format!(":{}/", proxy.port));
    let args = ["--request-timeout", "5"];
    let cut_off = Server::start(&via_proxy, &args);
    let other = Server::start(&db, &args);
    let api = Api::new(&other.base, &token, &tenant);
    licensed(&api, "scarce", 30).await;
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let create = |base: String, name: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            send(&http, &base, &token, reqwest::Method::POST, "/scim/v2/Users",
                Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}))).await.0
        }
    };
    for i in 0..10 {
        assert_eq!(
            create(cut_off.base.clone(), format!("before{i}@example.com")).await,
            201
        );
    }
    proxy.cut();
    // The proxy drops the connections it carries within 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let status = create(cut_off.base.clone(), "during@example.com".into()).await;
    assert_eq!(status, 503, "the cut-off node refuses writes");
    assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    let ready = http
        .get(format!("{}/readyz", cut_off.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    // The other node goes on, past the seats: the 31st user and on wait.
    for i in 0..30 {
        assert_eq!(
            create(other.base.clone(), format!("other{i}@example.com")).await,
            201
        );
    }
    let ready = http
        .get(format!("{}/readyz", other.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    proxy.heal();
    let healed = Instant::now();
    loop {
        let status = create(
            cut_off.base.clone(),
            format!("after-{}@example.com", healed.elapsed().as_millis()),
        )
        .await;
        if status == 201 {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "the healed node still answers {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let usage = api.usage("scarce").await;
    assert_eq!(usage["active"], 30, "never oversold: {usage}");
    assert_eq!(usage["waitlisted"], 11, "the rest wait: {usage}");
    drop((cut_off, other));
    consistent(&db);
}

/// SQLite out of disk (the server's files may grow no further: a file-size limit, its signal
/// ignored, so a write fails as on a full disk): writes get 503 with nothing partial, reads
/// go on, writes recover when space returns, and the audit chain still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_out_of_disk() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::binary::database(crate::common::Backend::Sqlite, &dir);
    let (_, token) = tenant_with_token(&db, "Full");
    // The shell ignores SIGXFSZ (inherited through exec) and sets a soft limit of 3 MiB on
    // every file the server writes; `$0 "$@"` is the server and its arguments.
    let mut cmd = std::process::Command::new("bash");
    cmd.args([
        "-c",
        "trap '' XFSZ; ulimit -S -f 3072; exec \"$0\" \"$@\"",
        crate::binary::BIN,
    ]);
    let server = Server::start_by(
        cmd,
        &db,
        Some(crate::binary::ADMIN),
        &["--user-cache-mb", "0"],
    );
    let pid = server.child.id() as i32;
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let padding = "p".repeat(20_000);
    let mut created = Vec::new();
    let mut refused = 0;
    for i in 0..2000 {
        let (status, v) = send(
            &http,
            &server.base,
            &token,
            reqwest::Method::POST,
            "/scim/v2/Users",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("u{i}@example.com"), "nickName": padding}),
            ),
        )
        .await;
        match status {
            201 => created.push(v["id"].as_str().unwrap().to_string()),
            503 => {
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("a write on a full disk answered {other}: {v}"),
        }
    }
    assert!(
        refused >= 5,
        "the limit was never reached ({} users)",
        created.len()
    );
    assert!(created.len() > 10, "{}", created.len());
    // Reads go on, and show exactly what was answered 201.
    let (status, v) = send(
        &http,
        &server.base,
        &token,
        reqwest::Method::GET,
        "/scim/v2/Users?count=0",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["totalResults"], created.len(), "nothing partial");
    let (status, _) = send(
        &http,
        &server.base,
        &token,
        reqwest::Method::GET,
        &format!("/scim/v2/Users/{}", created[0]),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Space returns: writes recover.
    rlimit::prlimit(
        pid,
        rlimit::Resource::FSIZE,
        Some((rlimit::INFINITY, rlimit::INFINITY)),
        None,
    )
    .unwrap();
    let back = Instant::now();
    loop {
        let (status, v) = send(&http, &server.base, &token, reqwest::Method::POST, "/scim/v2/Users",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "after@example.com"}))).await;
        if status == 201 {
            created.push(v["id"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "writes did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, v) = send(
        &http,
        &server.base,
        &token,
        reqwest::Method::GET,
        "/scim/v2/Users?count=0",
        None,
    )
    .await;
    assert_eq!(v["totalResults"], created.len());
    drop(server);
    consistent(&db);
}

/// Users by the thousand through SCIM Bulk.
async fn bulk_users(http: &reqwest::Client, base: &str, token: &str, prefix: &str, n: usize) {
    for chunk in 0..n.div_ceil(1000) {
        let ops: Vec<Value> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| {
                json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"),
                    "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": format!("{prefix}{i}@example.com")}})
            })
            .collect();
        let (status, v) = send(
            http,
            base,
            token,
            reqwest::Method::POST,
            "/scim/v2/Bulk",
            Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
}

/// SIGKILL in the middle of a plan change for 10,000 users, of a billing event and of an
/// audit prune: after each restart the change applied whole or not at all, with one event
/// per committed change, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_change_leaves_whole_or_nothing() {
    const USERS: usize = 10_000;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dir = tempfile::tempdir().unwrap();
    let db = crate::binary::database(crate::common::Backend::Sqlite, &dir);
    let (tenant, token) = tenant_with_token(&db, "Killed");
    let args = ["--billing-secret", SECRET];
    let mut server = Server::start(&db, &args);
    let api = Api::new(&server.base, &token, &tenant);
    let model = json!({
        "products": [{"key": "kill", "name": "Kill", "plans": [
            {"key": "pro", "rank": 1, "features": ["write"]},
            {"key": "enterprise", "rank": 2, "features": ["write", "sso"]}]}],
        "tenants": [{"id": tenant, "subscriptions": [{
            "product": "kill", "plan": "enterprise", "seats": 20_000,
            "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z", "enforcement": "hard"}],
            "rules": [{"name": "everyone", "filter": "userName pr", "product": "kill", "plan": "pro", "priority": 1}]}],
    });
    api.admin("PUT", "/model", Some(model)).await;
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    bulk_users(&http, &server.base, &token, "k", USERS).await;
    let changed = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["type"] == "license.changed")
            .count()
    };
    assert_eq!(changed(&api.feed().await), 0);

    // 1. The rule's plan, pro → enterprise, for 10,000 users; killed while it runs.
    let rule = format!("/api/v1/tenants/{tenant}/rules/everyone");
    let (base, t) = (server.base.clone(), crate::binary::ADMIN.to_string());
    let change = tokio::spawn(async move {
        seatkeeper::crypto::http_client().build().expect("an HTTP client")
            .put(format!("{base}{rule}"))
            .bearer_auth(t)
            .json(&json!({"filter": "userName pr", "product": "kill", "plan": "enterprise", "priority": 1}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    let answered = change.await.unwrap();
    let server = Server::start(&db, &args);
    let api = api.via(&server.base);
    let events = api.feed().await;
    let plan = api
        .admin("GET", &format!("/tenants/{tenant}/rules"), None)
        .await;
    let enterprise = plan.to_string().contains("\"enterprise\"");
    eprintln!(
        "plan change: answered {answered:?}, committed {enterprise}, {} license.changed",
        changed(&events)
    );
    if answered == Some(200) {
        assert!(enterprise, "an answered change is kept");
    }
    assert_eq!(
        changed(&events),
        if enterprise { USERS } else { 0 },
        "one event per committed change"
    );
    drop(server);
    consistent(&db);

    // 2. A billing event, killed just after it was sent; redelivered, it applies once.
    let mut server = Server::start(&db, &args);
    let ev = json!({"id": "evt_kill", "type": "subscription.updated", "created_at": "2026-11-20T00:00:00Z",
        "tenant": tenant, "subscription": {"product": "kill", "seats": 19_000}});
    let body = ev.to_string();
    let deliver = |base: String| {
        let body = body.clone();
        async move {
            let ts = seatkeeper::system_clock().now().unix_timestamp();
            let sig = seatkeeper::standard_sign(SECRET, "evt_kill", ts, body.as_bytes());
            seatkeeper::crypto::http_client()
                .build()
                .expect("an HTTP client")
                .post(format!("{base}/api/v1/billing/events"))
                .header("content-type", "application/json")
                .header("webhook-id", "evt_kill")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body)
                .send()
                .await
        }
    };
    let subscription_events = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["type"] == "subscription.changed")
            .count()
    };
    let before = subscription_events(&api.via(&server.base).feed().await);
    let first = tokio::spawn(deliver(server.base.clone()));
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.kill();
    let _ = first.await.unwrap();
    let server = Server::start(&db, &args);
    let again = deliver(server.base.clone()).await.unwrap();
    let v: Value = again.json().await.unwrap();
    assert!(
        v["outcome"] == "applied" || v["outcome"] == "duplicate",
        "{v}"
    );
    let api = api.via(&server.base);
    assert_eq!(api.usage("kill").await["seats"], 19_000);
    assert_eq!(
        subscription_events(&api.feed().await),
        before + 1,
        "the event applied once"
    );
    drop(server);
    consistent(&db);

    // 3. An audit prune, killed while it runs: the chain verifies either way.
    let mut prune = std::process::Command::new(crate::binary::BIN)
        .args([
            "audit",
            "prune",
            "--older-than-days",
            "0",
            "--database",
            &db,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let _ = prune.kill();
    let _ = prune.wait();
    consistent(&db);
}

/// SIGKILL while a webhook delivery is in flight (the receiver holds the request): after the
/// restart the delivery is made again under the same `webhook-id` with the same body
/// (at least once), and once answered it is not made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_webhook_delivery_delivers_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::binary::database(crate::common::Backend::Sqlite, &dir);
    let (tenant, token) = tenant_with_token(&db, "Hooked");
    // The receiver: the first delivery is held for 3 s (the server is killed meanwhile);
    // every delivery is recorded as (webhook-id, body).
    let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let held = Arc::new(AtomicBool::new(false));
    let (s, h) = (seen.clone(), held.clone());
    let app = axum::Router::new().route(
        &format!("/hook/{tenant}"),
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (s, h) = (s.clone(), h.clone());
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                s.lock().unwrap().push((id, body));
                if !h.swap(true, Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    // The lease of a claimed delivery is the webhook timeout + 5 s: the delivery cut off by
    // the kill is made again once it runs out.
    let args = ["--webhook-retry-base-ms", "100", "--webhook-timeout", "4"];
    let mut server = Server::start(&db, &args);
    let api = Api::new(&server.base, &token, &tenant);
    api.webhook(port, json!(["user.provisioned"])).await;
    let (status, _) = api.create_user("hooked@example.com").await;
    assert_eq!(status, 201);
    let t = Instant::now();
    while seen.lock().unwrap().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let server = Server::start(&db, &args);
    let t = Instant::now();
    while seen.lock().unwrap().len() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not delivered again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Answered now: no further delivery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], seen[1], "the same webhook-id and body");
    assert!(!seen[0].0.is_empty());
    drop(server);
    consistent(&db);
}
