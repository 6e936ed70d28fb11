//! Events benchmark (issue 4): the release `seatkeeper` binary on a temporary SQLite file,
//! a webhook receiver in this process, everything over loopback.
//!
//! 1. Propagation latency, over N billing events applied one after another (each swaps the
//!    plan of one licensed user): from the start of `POST /api/v1/billing/events` to
//!    (a) the new plan visible in the licensing API (`GET …/users/{id}/licenses`), and
//!    (b) the `license.changed` webhook received.
//! 2. Delivery throughput: a plan swap that changes M users' licenses at once; the time from
//!    the change's commit until the receiver holds all M `license.changed` deliveries.
//!
//! Usage: cargo run --release --example events_bench -- [BIN] [EVENTS] [USERS]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn cli(bin: &str, db: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("SEATKEEPER_DATABASE", db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Deliveries the receiver got: (arrival, type, body).
type Inbox = Arc<Mutex<Vec<(Instant, String, Value)>>>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/seatkeeper".into());
    let events: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let users: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("events.db").display());
    let tenant = cli(&bin, &db, &["tenant", "create", "Bench"]);
    let token = cli(&bin, &db, &["token", "create", "--tenant", &tenant]);

    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .args([
            "--rate-limit",
            "100000000",
            "--rate-burst",
            "100000000",
            "--billing-secret",
            SECRET,
        ])
        .env("SEATKEEPER_ADMIN_TOKEN", ADMIN)
        .env("SEATKEEPER_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let base = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "server exited");
        if let Some(i) = line.find("listening on http://") {
            let addr: String = line[i + 20..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            break format!("http://{addr}");
        }
    };
    std::thread::spawn(move || for _ in reader.lines() {});
    let http = seatkeeper::crypto::http_client()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let admin = |method: reqwest::Method, path: String, body: Option<Value>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut r = http
                .request(method, format!("{base}/api/v1{path}"))
                .bearer_auth(ADMIN);
            if let Some(b) = body {
                r = r
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let resp = r.send().await.unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {v}");
            v
        }
    };
    let model = json!({
        "products": [{"key": "workspace", "name": "Workspace", "plans": [
            {"key": "free", "rank": 0, "features": ["read"]},
            {"key": "pro", "rank": 1, "features": ["read", "write"]},
            {"key": "enterprise", "rank": 2, "features": ["read", "write", "sso"]}]}],
        "tenants": [{"id": tenant, "subscriptions": [{"product": "workspace", "plan": "pro",
            "seats": users + 10, "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}], "rules": []}],
    });
    admin(reqwest::Method::PUT, "/model".into(), Some(model)).await;

    // The receiver.
    let inbox: Inbox = Default::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let (ib, nt) = (inbox.clone(), notify.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let (ib, nt) = (ib.clone(), nt.clone());
            async move {
                let at = Instant::now();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let t = v["type"].as_str().unwrap_or_default().to_string();
                ib.lock().unwrap().push((at, t, v));
                nt.notify_waiters();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // One licensed user, then the webhook (it receives what happens from now on).
    let resp = http
        .post(format!("{base}/scim/v2/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(json!({"userName": "alice@bench.example"}).to_string())
        .send()
        .await
        .unwrap();
    let alice: Value = resp.json().await.unwrap();
    let alice = alice["id"].as_str().unwrap().to_string();
    admin(
        reqwest::Method::POST,
        format!("/tenants/{tenant}/webhooks"),
        Some(
            json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["license.changed"]}),
        ),
    )
    .await;

    // 1. Latency.
    let (mut visible, mut webhook) = (Vec::new(), Vec::new());
    let start_time = time::macros::datetime!(2026-11-25 00:00 UTC);
    for i in 0..events {
        let plan = if i % 2 == 0 { "enterprise" } else { "pro" };
        let created = start_time + time::Duration::seconds(i as i64);
        let ev = json!({"id": format!("evt_{i}"), "type": "subscription.updated",
            "created_at": created.format(&time::format_description::well_known::Rfc3339).unwrap(),
            "tenant": tenant, "subscription": {"product": "workspace", "plan": plan}});
        let body = ev.to_string();
        let now = { seatkeeper::system_clock().now().unix_timestamp() };
        let sig = seatkeeper::standard_sign(SECRET, &format!("evt_{i}"), now, body.as_bytes());
        let before = inbox.lock().unwrap().len();
        let t0 = Instant::now();
        let waiter = notify.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        let resp = http
            .post(format!("{base}/api/v1/billing/events"))
            .header("content-type", "application/json")
            .header("webhook-id", format!("evt_{i}"))
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "{}",
            resp.text().await.unwrap_or_default()
        );
        // (a) visible in the licensing API
        loop {
            let v = admin(
                reqwest::Method::GET,
                format!("/tenants/{tenant}/users/{alice}/licenses"),
                None,
            )
            .await;
            if v["licenses"][0]["plan"] == json!(plan) {
                visible.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        // (b) the webhook received
        loop {
            if inbox.lock().unwrap().len() > before {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), waiter.as_mut()).await;
            waiter.set(notify.notified());
            waiter.as_mut().enable();
        }
        let at = inbox.lock().unwrap()[before].0;
        webhook.push(at.duration_since(t0).as_secs_f64() * 1000.0);
    }
    visible.sort_by(f64::total_cmp);
    webhook.sort_by(f64::total_cmp);

    // 2. Throughput: seed users (before their deliveries matter), then one plan swap.
    for chunk in (0..users).collect::<Vec<_>>().chunks(1000) {
        let ops: Vec<Value> = chunk.iter().map(|i| json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"),
            "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": format!("u{i}@bench.example")}})).collect();
        let r = http
            .post(format!("{base}/scim/v2/Bulk"))
            .bearer_auth(&token)
            .header("content-type", "application/scim+json")
            .body(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let before = inbox.lock().unwrap().len();
    let t0 = Instant::now();
    let v = admin(reqwest::Method::PUT, "/tenants/".to_string() + &tenant + "/subscriptions/workspace",
        Some(json!({"plan": "enterprise", "seats": users + 10, "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}))).await;
    let changed = v["licenses"]["changed"].as_u64().unwrap() as usize;
    let committed = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while inbox.lock().unwrap().len() < before + changed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = inbox.lock().unwrap().len() - before;
    let last = inbox.lock().unwrap().last().map(|x| x.0).unwrap();
    let delivering = last.duration_since(t0 + committed).as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "seatkeeper events benchmark — {} cores, release build, SQLite, loopback",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!(
        "Propagation latency over {events} billing events (POST /api/v1/billing/events, one plan swap each):"
    );
    println!();
    println!(
        "| {:<52} | {:>8} | {:>8} | {:>8} |",
        "from the POST's start to", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(10)
    );
    for (label, v) in [
        ("the new plan visible in the licensing API", &visible),
        ("the license.changed webhook received", &webhook),
    ] {
        println!(
            "| {:<52} | {:>8.2} | {:>8.2} | {:>8.2} |",
            label,
            percentile(v, 0.5),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    }
    println!();
    println!(
        "Delivery throughput: one plan swap changing {changed} licenses (committed in {:.0} ms):",
        committed.as_secs_f64() * 1000.0
    );
    println!();
    println!(
        "| {:<52} | {:>10} | {:>10} |",
        "deliveries", "seconds", "events/s"
    );
    println!("|{}|{}|{}|", "-".repeat(54), "-".repeat(12), "-".repeat(12));
    println!(
        "| {:<52} | {:>10.2} | {:>10.0} |",
        format!("{got} of {changed} license.changed to one endpoint"),
        delivering,
        got as f64 / delivering
    );
}
