//! End to end: events out of the real `seatkeeper` binary to a real HTTP receiver on
//! loopback — signed webhooks that survive a receiver outage and a SIGKILL of the server,
//! billing events in, and term events at the right (test-clock) time.

use crate::binary;
use crate::common::{self, PATCH, USER};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use binary::{Api, Server, cli_ok, database};
use common::Backend;
use serde_json::{Value, json};

/// What the receiver got: (webhook-id, verified, body).
type Inbox = Arc<Mutex<Vec<(String, bool, Value)>>>;

/// A webhook receiver on `port` that checks each delivery's signature with `secret`. It
/// answers only its tenant's path (`Api::webhook` registers `/hook/{tenant}`): tests share a
/// PostgreSQL database, and a port freed by one test can be taken by another's receiver, so
/// another test's endpoint may point here.
async fn receiver(
    port: u16,
    tenant: &str,
    secret: Arc<Mutex<String>>,
    inbox: Inbox,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        &format!("/hook/{tenant}"),
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (secret, inbox) = (secret.clone(), inbox.clone());
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let now = seatkeeper::system_clock().now().unix_timestamp();
                let key = secret.lock().unwrap().clone();
                let ok = seatkeeper::standard_verify(
                    &[key],
                    h("webhook-id").as_deref(),
                    h("webhook-timestamp").as_deref(),
                    h("webhook-signature").as_deref(),
                    &body,
                    now,
                    300,
                )
                .is_ok();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                inbox
                    .lock()
                    .unwrap()
                    .push((h("webhook-id").unwrap_or_default(), ok, v));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn setup(db: &str, base: &str) -> Api {
    crate::binary::tenant_api(db, base, "Events")
}

fn model(tenant: &str, product: &str, seats: u32, ends_at: &str) -> Value {
    json!({
        "products": [{"key": product, "name": "Events", "plans": [
            {"key": "free", "rank": 0, "features": ["read"]},
            {"key": "pro", "rank": 1, "features": ["read", "write"]}]}],
        "tenants": [{"id": tenant, "subscriptions": [{"product": product, "plan": "pro", "seats": seats,
            "starts_at": "2026-01-01T00:00:00Z", "ends_at": ends_at, "grace_days": 0,
            "on_expiry": "downgrade:free", "enforcement": "hard"}], "rules": []}],
    })
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    for _ in 0..secs * 20 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Received events by id (duplicates only ever carry the same id and body), all verified.
fn received(inbox: &Inbox) -> BTreeMap<String, Value> {
    let got = inbox.lock().unwrap();
    let mut out = BTreeMap::new();
    for (id, ok, body) in got.iter() {
        assert!(ok, "a delivery with a bad signature: {body}");
        assert_eq!(body["id"], json!(id), "webhook-id is the event id");
        if let Some(prev) = out.insert(id.clone(), body.clone()) {
            assert_eq!(prev, *body, "a duplicate carries the same event");
        }
    }
    out
}

/// A receiver that is down at first gets every event once it is back: valid signatures,
/// none lost, duplicates only with the same id, one user's events in order. A seat bought
/// through a billing event promotes the waiting user and fires `license.promoted`.
async fn webhooks_survive_an_outage(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let server = Server::start(
        &db,
        &[
            "--webhook-retry-base-ms",
            "100",
            "--webhook-timeout",
            "2",
            "--billing-secret",
            secret,
        ],
    );
    let api = setup(&db, &server.base);
    let product = format!("ev-{}", &api.tenant[api.tenant.len() - 12..]);
    api.admin(
        "PUT",
        "/model",
        Some(model(&api.tenant, &product, 3, "2027-01-01T00:00:00Z")),
    )
    .await;
    let port = free_port();
    let hook = api.webhook(port, json!(["user.*", "license.*"])).await;
    let hook_secret = Arc::new(Mutex::new(hook["secret"].as_str().unwrap().to_string()));
    // The receiver is down while 4 users arrive (one waits for a seat) and one leaves.
    let mut ids = Vec::new();
    for i in 0..4 {
        let (status, v) = api.create_user(&format!("u{i}")).await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (status, _) = api
        .call(&api.scim_token, "PATCH", &format!("/scim/v2/Users/{}", ids[0]),
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]})))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let log = api
        .admin(
            "GET",
            &format!(
                "/tenants/{}/webhooks/{}/deliveries?state=pending",
                api.tenant,
                hook["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let attempts: Vec<i64> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attempts"].as_i64().unwrap())
        .collect();
    assert!(
        attempts.iter().any(|a| *a >= 2),
        "retried while down: {log}"
    );
    // Only each user's oldest event is tried; the rest wait behind it, in order.
    assert!(attempts.contains(&0), "{log}");
    // Back up: everything arrives.
    let inbox: Inbox = Default::default();
    let _rx = receiver(port, &api.tenant, hook_secret.clone(), inbox.clone()).await;
    let wanted: BTreeSet<String> = api
        .feed()
        .await
        .iter()
        .filter(|e| {
            let t = e["type"].as_str().unwrap();
            t.starts_with("user.") || t.starts_with("license.")
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        wanted.len() >= 4 + 4 + 2,
        "provisioned ×4, licenses ×4, deprovisioned, revoked/promoted: {wanted:?}"
    );
    wait_for("every event", 30, || {
        received(&inbox).keys().cloned().collect::<BTreeSet<_>>() == wanted
    })
    .await;
    // One user's events arrive in the order they happened.
    let order: Vec<(String, i64)> = inbox
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _, body)| {
            let user = body["data"]["user"]["id"]
                .as_str()
                .or(body["data"]["user"].as_str())
                .unwrap_or_default()
                .to_string();
            (user, id.trim_start_matches("evt_").parse::<i64>().unwrap())
        })
        .collect();
    for u in &ids {
        let seq: Vec<i64> = order
            .iter()
            .filter(|(x, _)| x == u)
            .map(|(_, n)| *n)
            .collect();
        let mut sorted = seq.clone();
        sorted.sort();
        sorted.dedup();
        let mut firsts = seq.clone();
        firsts.dedup();
        assert_eq!(firsts, sorted, "events of user {u} out of order: {seq:?}");
    }
    // One more user waits (u1–u3 hold the 3 seats); a billing event buys a fourth seat:
    // the waiting user is promoted and the endpoint hears it.
    let (status, v) = api.create_user("u4").await;
    assert_eq!(status, 201, "{v}");
    let promoted = |inbox: &Inbox| {
        received(inbox)
            .values()
            .filter(|e| e["type"] == "license.promoted")
            .count()
    };
    wait_for("u4 waiting", 10, || {
        received(&inbox)
            .values()
            .any(|e| e["type"] == "license.waitlisted" && e["data"]["user"] == json!(v["id"]))
    })
    .await;
    let before = promoted(&inbox);
    let product_ = product.clone();
    let ev = json!({"id": format!("evt-buy-{product_}"), "type": "subscription.updated", "created_at": "2026-11-25T10:00:00Z",
        "tenant": api.tenant, "subscription": {"product": product_, "seats": 4}});
    let body = ev.to_string();
    let ts = seatkeeper::system_clock().now().unix_timestamp();
    let id = ev["id"].as_str().unwrap().to_string();
    let sig = seatkeeper::standard_sign(secret, &id, ts, body.as_bytes());
    for _ in 0..3 {
        let resp = api
            .http
            .post(format!("{}/api/v1/billing/events", api.base))
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", &sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    wait_for("license.promoted", 10, || promoted(&inbox) > before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        promoted(&inbox),
        before + 1,
        "three deliveries of one billing event promote once"
    );
    // Replays: one delivery, then a time range; the receiver sees the same ids again.
    let hook_id = hook["id"].as_str().unwrap();
    let log = api
        .admin(
            "GET",
            &format!(
                "/tenants/{}/webhooks/{hook_id}/deliveries?state=delivered&limit=1",
                api.tenant
            ),
            None,
        )
        .await;
    let one = log["deliveries"][0].clone();
    let count = |inbox: &Inbox, id: &str| {
        inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|(x, _, _)| x == id)
            .count()
    };
    let event = one["event"].as_str().unwrap().to_string();
    let seen = count(&inbox, &event);
    api.admin(
        "POST",
        &format!(
            "/tenants/{}/webhooks/{hook_id}/deliveries/{}/replay",
            api.tenant, one["id"]
        ),
        None,
    )
    .await;
    wait_for("the replayed delivery", 10, || {
        count(&inbox, &event) == seen + 1
    })
    .await;
    let total = inbox.lock().unwrap().len();
    let r = api
        .admin(
            "POST",
            &format!("/tenants/{}/webhooks/{hook_id}/replay", api.tenant),
            Some(json!({"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})),
        )
        .await;
    let n = r["replayed"].as_u64().unwrap() as usize;
    assert!(n >= wanted.len(), "{r}");
    wait_for("the replayed range", 20, || {
        inbox.lock().unwrap().len() >= total + n
    })
    .await;
    let _ = received(&inbox); // signatures verified, duplicates identical
}

/// SIGKILL in the middle of a burst: after a restart every committed change's events are
/// delivered, and nothing is delivered that was not committed.
async fn events_survive_sigkill(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let mut server = Server::start(
        &db,
        &["--webhook-retry-base-ms", "100", "--webhook-timeout", "2"],
    );
    let api = setup(&db, &server.base);
    let port = free_port();
    let inbox: Inbox = Default::default();
    let hook = api.webhook(port, json!(["user.provisioned"])).await;
    let _rx = receiver(
        port,
        &api.tenant,
        Arc::new(Mutex::new(hook["secret"].as_str().unwrap().to_string())),
        inbox.clone(),
    )
    .await;
    let base = server.base.clone();
    let burst: Vec<_> = (0..4)
        .map(|t| {
            let api = api.via(&base);
            tokio::spawn(async move {
                for i in 0..400 {
                    if api.create_user(&format!("k{t}-{i}")).await.0 == 0 {
                        break;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill();
    for t in burst {
        let _ = t.await;
    }
    let server = Server::start(
        &db,
        &["--webhook-retry-base-ms", "100", "--webhook-timeout", "2"],
    );
    let api = api.via(&server.base);
    let committed: BTreeSet<String> = api
        .feed()
        .await
        .iter()
        .filter(|e| e["type"] == "user.provisioned")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!committed.is_empty());
    wait_for("every committed event", 60, || {
        received(&inbox).keys().cloned().collect::<BTreeSet<_>>() == committed
    })
    .await;
    // Each delivered user exists: nothing was sent for an uncommitted create.
    let got = received(&inbox);
    for e in got.values().take(50) {
        let id = e["data"]["user"]["id"].as_str().unwrap();
        let (status, _) = api
            .call(
                &api.scim_token,
                "GET",
                &format!("/scim/v2/Users/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
}

/// On the test clock, a subscription sends `subscription.expiring` inside the notice window
/// and, at the end of the term, moves everyone to the fallback plan (`license.changed`).
async fn term_events_on_the_test_clock(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let server = Server::start(
        &db,
        &[
            "--test-clock",
            "2026-11-01T00:00:00Z",
            "--scheduler-interval",
            "3600",
            "--expiry-notice-days",
            "7",
        ],
    );
    let api = setup(&db, &server.base);
    let product = format!("tm-{}", &api.tenant[api.tenant.len() - 12..]);
    api.admin(
        "PUT",
        "/model",
        Some(model(&api.tenant, &product, 5, "2026-11-20T00:00:00Z")),
    )
    .await;
    let (status, _) = api.create_user("ann").await;
    assert_eq!(status, 201);
    let types = |api: &Api| {
        let api = api.via(&api.base);
        async move {
            api.feed()
                .await
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // Nov 10: ten days left, no notice yet.
    api.admin(
        "POST",
        "/clock",
        Some(json!({"advance_seconds": 9 * 86_400})),
    )
    .await;
    api.admin(
        "POST",
        &format!("/scheduler/run?tenant={}", api.tenant),
        None,
    )
    .await;
    assert!(
        !types(&api)
            .await
            .contains(&"subscription.expiring".to_string())
    );
    // Nov 14: inside the 7-day notice.
    api.admin(
        "POST",
        "/clock",
        Some(json!({"advance_seconds": 4 * 86_400})),
    )
    .await;
    api.admin(
        "POST",
        &format!("/scheduler/run?tenant={}", api.tenant),
        None,
    )
    .await;
    let t = types(&api).await;
    assert_eq!(
        t.iter().filter(|x| *x == "subscription.expiring").count(),
        1,
        "{t:?}"
    );
    assert!(!t.contains(&"license.changed".to_string()));
    // Nov 21: the term is over; ann moves to free.
    api.admin(
        "POST",
        "/clock",
        Some(json!({"advance_seconds": 7 * 86_400})),
    )
    .await;
    api.admin(
        "POST",
        &format!("/scheduler/run?tenant={}", api.tenant),
        None,
    )
    .await;
    let t = types(&api).await;
    assert!(t.contains(&"license.changed".to_string()), "{t:?}");
    assert!(t.contains(&"subscription.changed".to_string()), "{t:?}");
    assert_eq!(
        t.iter().filter(|x| *x == "subscription.expiring").count(),
        1,
        "sent once: {t:?}"
    );
}

/// Retention through the CLI: `audit prune` removes old records behind a signed checkpoint,
/// `audit verify` passes from it (also pinned to `audit public-key`), and fails once the
/// checkpoint is edited by hand.
async fn audit_retention_through_the_cli(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let server = Server::start(&db, &[]);
    let api = setup(&db, &server.base);
    for i in 0..3 {
        assert_eq!(api.create_user(&format!("r{i}")).await.0, 201);
    }
    drop(server);
    let key = cli_ok(&db, &["audit", "public-key"]);
    let out = cli_ok(
        &db,
        &[
            "audit",
            "prune",
            "--older-than-days",
            "0",
            "--tenant",
            &api.tenant,
        ],
    );
    assert!(out.contains("pruned"), "{out}");
    let out = cli_ok(
        &db,
        &[
            "audit",
            "verify",
            "--tenant",
            &api.tenant,
            "--public-key",
            key.trim(),
        ],
    );
    assert!(out.starts_with("ok"), "{out}");
    let store = seatkeeper::Store::connect(&db, &Default::default())
        .await
        .unwrap();
    store
        .execute_unchecked(
            "UPDATE audit_checkpoints SET hash = $2 WHERE tenant_id = $1",
            seatkeeper::params![&api.tenant, "00"].to_vec(),
        )
        .await
        .unwrap();
    let out = std::process::Command::new(binary::BIN)
        .args(["audit", "verify", "--tenant", &api.tenant])
        .env("SEATKEEPER_DATABASE", &db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN"));
}

/// Two `seatkeeper` processes on one PostgreSQL database of their own, one endpoint: every
/// event is delivered exactly once — each delivery is claimed by one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_event_once_postgres() {
    // A database of this test alone, so no other test's server claims its deliveries.
    let own = binary::OwnDatabase::create("two_nodes").await;
    let db = own.url.clone();
    let one = Server::start(&db, &["--webhook-timeout", "2"]);
    let two = Server::start(&db, &["--webhook-timeout", "2"]);
    let api = setup(&db, &one.base);
    let port = free_port();
    let inbox: Inbox = Default::default();
    let hook = api.webhook(port, json!(["user.provisioned"])).await;
    let _rx = receiver(
        port,
        &api.tenant,
        Arc::new(Mutex::new(hook["secret"].as_str().unwrap().to_string())),
        inbox.clone(),
    )
    .await;
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let base = if t % 2 == 0 {
                one.base.clone()
            } else {
                two.base.clone()
            };
            let api = api.via(&base);
            tokio::spawn(async move {
                for i in 0..75 {
                    assert_eq!(api.create_user(&format!("n{t}-{i}")).await.0, 201);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    wait_for("300 deliveries", 30, || received(&inbox).len() == 300).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = inbox.lock().unwrap().len();
    assert_eq!(
        got, 300,
        "each event delivered once, by one of the two nodes"
    );
    drop((one, two));
    own.drop_database().await;
}

/// The vendor-wide stream: one connection carries every tenant's events as they commit, and
/// `Last-Event-ID` resumes right after the last one seen.
async fn the_vendor_stream_carries_every_tenant(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = binary::database(b, &dir);
    let server = binary::Server::start(&db, &[]);
    let mut tenants = Vec::new();
    for name in ["Stream A", "Stream B"] {
        let t = binary::cli_ok(&db, &["tenant", "create", name])
            .trim()
            .to_string();
        let token = binary::cli_ok(&db, &["token", "create", "--tenant", &t])
            .trim()
            .to_string();
        tenants.push((t, token));
    }
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let open = |last: Option<String>| {
        let mut r = http
            .get(format!("{}/api/v1/events/stream", server.base))
            .bearer_auth(binary::ADMIN);
        if let Some(l) = last {
            r = r.header("last-event-id", l);
        }
        r.send()
    };
    // Reads (id, event) pairs until `want` users of these tenants came, or 10 s passed.
    async fn read(
        mut resp: reqwest::Response,
        want: usize,
        tenants: &[String],
    ) -> Vec<(String, Value)> {
        let mut buf = String::new();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.len() < want && std::time::Instant::now() < deadline {
            let Ok(Ok(Some(chunk))) =
                tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await
            else {
                break;
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let id = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("id:"))
                    .map(|s| s.trim().to_string());
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(|s| s.trim().to_string());
                if let (Some(id), Some(data)) = (id, data) {
                    let e: Value = serde_json::from_str(&data).unwrap();
                    if e["type"] == "user.provisioned"
                        && tenants.iter().any(|t| e["tenant"] == t.as_str())
                    {
                        out.push((id, e));
                    }
                }
            }
        }
        out
    }
    let names: Vec<String> = tenants.iter().map(|(t, _)| t.clone()).collect();
    let resp = open(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    for (i, (_, token)) in tenants.iter().enumerate() {
        let r = http
            .post(format!("{}/scim/v2/Users", server.base))
            .bearer_auth(token)
            .json(&json!({"schemas": [USER], "userName": format!("s{i}@stream.test")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let got = read(resp, 2, &names).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let seen: Vec<&str> = got
        .iter()
        .map(|(_, e)| e["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(
        seen,
        vec![names[0].as_str(), names[1].as_str()],
        "in commit order"
    );
    // Resuming after the first: the second comes again, and nothing before it.
    let again = read(open(Some(got[0].0.clone())).await.unwrap(), 1, &names).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].1["id"], got[1].1["id"]);
}

/// A vendor-wide endpoint hears every tenant's events: signed, none lost while it was down,
/// each naming its tenant, one user's events in order. Its delivery log names each event's
/// tenant; replays and DELETE work as for a tenant's endpoint.
async fn vendor_webhooks_hear_every_tenant(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let server = Server::start(
        &db,
        &["--webhook-retry-base-ms", "100", "--webhook-timeout", "2"],
    );
    let (a, c) = (setup(&db, &server.base), setup(&db, &server.base));
    let port = free_port();
    let tag = format!("vendor-{}", &a.tenant[a.tenant.len() - 12..]);
    let hook = a
        .admin(
            "POST",
            "/webhooks",
            Some(
                json!({"url": format!("http://127.0.0.1:{port}/hook/{tag}"), "events": ["user.*"]}),
            ),
        )
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    assert!(
        hook["secret"].as_str().unwrap().starts_with("whsec_"),
        "{hook}"
    );
    let listed = a.admin("GET", "/webhooks", None).await;
    assert!(
        listed["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == json!(hook_id)),
        "{listed}"
    );
    // A tenant's list does not hold it, and a tenant path does not reach it.
    let theirs = a
        .admin("GET", &format!("/tenants/{}/webhooks", a.tenant), None)
        .await;
    assert_eq!(theirs["webhooks"], json!([]), "{theirs}");
    let (status, _) = a
        .call(
            binary::ADMIN,
            "GET",
            &format!("/api/v1/tenants/{}/webhooks/{hook_id}", a.tenant),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // The receiver is down while users arrive in both tenants and one changes twice.
    let mut ids = Vec::new();
    for (api, n) in [(&a, "a0"), (&c, "c0"), (&a, "a1"), (&c, "c1")] {
        let (status, v) = api.create_user(n).await;
        assert_eq!(status, 201, "{v}");
        ids.push((api.tenant.clone(), v["id"].as_str().unwrap().to_string()));
    }
    for active in [false, true] {
        a.set_active(&ids[0].1, active).await;
    }
    let inbox: Inbox = Default::default();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let secret = Arc::new(Mutex::new(hook["secret"].as_str().unwrap().to_string()));
    let _rx = receiver(port, &tag, secret, inbox.clone()).await;
    let mut wanted = BTreeSet::new();
    for api in [&a, &c] {
        wanted.extend(
            api.feed()
                .await
                .iter()
                .filter(|e| e["type"].as_str().unwrap().starts_with("user."))
                .map(|e| e["id"].as_str().unwrap().to_string()),
        );
    }
    assert!(wanted.len() >= 6, "{wanted:?}");
    let mine = |inbox: &Inbox| -> BTreeMap<String, Value> {
        received(inbox)
            .into_iter()
            .filter(|(_, e)| e["tenant"] == json!(a.tenant) || e["tenant"] == json!(c.tenant))
            .collect()
    };
    wait_for("every event of both tenants", 30, || {
        mine(&inbox).keys().cloned().collect::<BTreeSet<_>>() == wanted
    })
    .await;
    // Nothing but user.* arrived, and each event names its tenant.
    for e in received(&inbox).values() {
        assert!(e["type"].as_str().unwrap().starts_with("user."), "{e}");
    }
    let tenants: BTreeSet<String> = mine(&inbox)
        .values()
        .map(|e| e["tenant"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tenants,
        BTreeSet::from([a.tenant.clone(), c.tenant.clone()])
    );
    // One user's events arrive in the order they happened.
    let seq: Vec<i64> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, e)| e["resource"]["id"] == json!(ids[0].1))
        .map(|(id, _, _)| id.trim_start_matches("evt_").parse::<i64>().unwrap())
        .collect();
    assert!(
        seq.len() >= 3,
        "provisioned, deprovisioned, reprovisioned: {seq:?}"
    );
    let mut sorted = seq.clone();
    sorted.sort();
    let mut firsts = seq.clone();
    firsts.dedup();
    sorted.dedup();
    assert_eq!(firsts, sorted, "one user's events out of order: {seq:?}");
    // The delivery log names each event's tenant; one delivery replays.
    let log = a
        .admin(
            "GET",
            &format!("/webhooks/{hook_id}/deliveries?state=delivered&limit=1000"),
            None,
        )
        .await;
    let rows = log["deliveries"].as_array().unwrap();
    let one = rows
        .iter()
        .find(|d| d["tenant"] == json!(c.tenant))
        .unwrap_or_else(|| panic!("no delivery of tenant {}: {log}", c.tenant))
        .clone();
    let count = |inbox: &Inbox, id: &str| {
        inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|(x, _, _)| x == id)
            .count()
    };
    let event = one["event"].as_str().unwrap().to_string();
    let seen = count(&inbox, &event);
    let r = a
        .admin(
            "POST",
            &format!("/webhooks/{hook_id}/deliveries/{}/replay", one["id"]),
            None,
        )
        .await;
    assert_eq!(r["replayed"], json!(1), "{r}");
    wait_for("the replayed delivery", 10, || {
        count(&inbox, &event) == seen + 1
    })
    .await;
    let r = a
        .admin(
            "POST",
            &format!("/webhooks/{hook_id}/replay"),
            Some(json!({"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})),
        )
        .await;
    assert!(
        r["replayed"].as_u64().unwrap() as usize >= wanted.len(),
        "{r}"
    );
    let counts = a.admin("GET", &format!("/webhooks/{hook_id}"), None).await;
    assert!(counts["deliveries"].is_object(), "{counts}");
    // Disabled: 204, shown as disabled, and later events are not sent.
    let (status, _) = a
        .call(
            binary::ADMIN,
            "DELETE",
            &format!("/api/v1/webhooks/{hook_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let gone = a.admin("GET", &format!("/webhooks/{hook_id}"), None).await;
    assert!(gone["disabled"].is_string(), "{gone}");
    let (status, _) = a
        .call(
            binary::ADMIN,
            "DELETE",
            &format!("/api/v1/webhooks/{hook_id}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "a disabled endpoint is not disabled twice");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = inbox.lock().unwrap().len();
    let (status, v) = c.create_user("c2").await;
    assert_eq!(status, 201, "{v}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let late = inbox
        .lock()
        .unwrap()
        .iter()
        .skip(before)
        .filter(|(_, _, e)| e["resource"]["id"] == v["id"])
        .count();
    assert_eq!(late, 0, "a disabled endpoint got a later event");
    // The change of the endpoint is audited on the vendor chain.
    let trail = a.admin("GET", "/audit?action=webhook.create", None).await;
    assert!(trail.to_string().contains(&hook_id), "{trail}");
}

both_backends!(
    the_vendor_stream_carries_every_tenant,
    vendor_webhooks_hear_every_tenant,
    webhooks_survive_an_outage,
    events_survive_sigkill,
    term_events_on_the_test_clock,
    audit_retention_through_the_cli
);
