//! The scale driver (`bench/scale.sh`).
//!
//! - `scale seed --base URL --admin TOKEN --tenants N --users U --out FILE [--product P]`:
//!   N tenants, each with a SCIM token, an app key, a subscription and a rule licensing every
//!   user, and U users created through SCIM Bulk (the product's own write path), several
//!   tenants at once. Writes `index tenant token app_key` lines to FILE.
//! - `scale lookups --base URL --token T --users U --requests R`: R `userName eq` lookups of
//!   random users, 8 at a time; prints p50/p99.
//! - `scale first-check --base URL --keys FILE`: the first check of a tenant chosen at random
//!   (its snapshot loaded on demand); prints the time.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

#[path = "support/http.rs"]
mod http;
use http::call;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn need(name: &str) -> String {
    flag(name).unwrap_or_else(|| panic!("{name} is required"))
}

async fn seed() {
    let base = need("--base");
    let admin = need("--admin");
    let tenants: usize = need("--tenants").parse().unwrap();
    let users: usize = need("--users").parse().unwrap();
    let out = need("--out");
    let product = flag("--product").unwrap_or_else(|| "scale".into());
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let t0 = Instant::now();
    // The catalogue product once.
    let (s, v) = call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/api/v1/model"),
        &admin,
        Some(
            json!({"products": [{"key": product, "name": "Scale", "plans": [
            {"key": "pro", "rank": 1, "features": ["write"]},
            {"key": "enterprise", "rank": 2, "features": ["write", "sso"]}]}]}),
        ),
    )
    .await;
    assert!(s < 300, "{s} {v}");
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = 4;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (http, base, admin, product, lines, next) = (
            http.clone(),
            base.clone(),
            admin.clone(),
            product.clone(),
            lines.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= tenants {
                    return;
                }
                let (_, t) = call(&http, reqwest::Method::POST, format!("{base}/api/v1/tenants"), &admin,
                    Some(json!({"name": format!("scale-{i}")}))).await;
                let id = t["id"].as_str().expect("tenant").to_string();
                let (_, tok) = call(&http, reqwest::Method::POST, format!("{base}/api/v1/tenants/{id}/scim-tokens"), &admin,
                    Some(json!({"name": "idp"}))).await;
                let (_, key) = call(&http, reqwest::Method::POST, format!("{base}/api/v1/tenants/{id}/app-keys"), &admin,
                    Some(json!({"name": "app"}))).await;
                let token = tok["token"].as_str().expect("token").to_string();
                let key = key["key"].as_str().expect("key").to_string();
                let (s, v) = call(&http, reqwest::Method::PUT, format!("{base}/api/v1/model"), &admin,
                    Some(json!({"tenants": [{"id": id, "subscriptions": [{"product": product, "plan": "enterprise",
                        "seats": users * 2, "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}],
                        "rules": [{"name": "everyone", "filter": "active eq true", "product": product, "plan": "pro", "priority": 1}]}]}))).await;
                assert!(s < 300, "{s} {v}");
                for chunk in 0..users.div_ceil(1000) {
                    let ops: Vec<Value> = (chunk * 1000..((chunk + 1) * 1000).min(users))
                        .map(|u| json!({"method": "POST", "path": "/Users", "bulkId": format!("b{u}"),
                            "data": {"schemas": [USER], "userName": format!("user{u}@t{i}.example.com"), "active": true}}))
                        .collect();
                    let (s, v) = call(&http, reqwest::Method::POST, format!("{base}/scim/v2/Bulk"), &token,
                        Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}))).await;
                    assert_eq!(s, 200, "{v}");
                }
                lines.lock().unwrap().push(format!("{i} {id} {token} {key}"));
                if i % 500 == 0 {
                    eprintln!("{i} tenants seeded");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    std::fs::write(&out, lines.lock().unwrap().join("\n") + "\n").unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "seeded {tenants} tenants × {users} users = {} users in {secs:.0} s ({:.0} users/s)",
        tenants * users,
        (tenants * users) as f64 / secs
    );
}

async fn lookups() {
    let base = need("--base");
    let token = need("--token");
    let tenant_index = flag("--tenant-index").unwrap_or_else(|| "0".into());
    let users: usize = need("--users").parse().unwrap();
    let requests: usize = need("--requests").parse().unwrap();
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(requests)));
    let mut tasks = Vec::new();
    let per = requests / 8;
    for w in 0..8 {
        let (http, base, token, samples, tenant_index) = (
            http.clone(),
            base.clone(),
            token.clone(),
            samples.clone(),
            tenant_index.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for r in 0..per {
                let u = (w * per + r) * 7919 % users;
                let q = url::form_urlencoded::byte_serialize(
                    format!("userName eq \"user{u}@t{tenant_index}.example.com\"").as_bytes(),
                )
                .collect::<String>();
                let t = Instant::now();
                let (s, v) = call(
                    &http,
                    reqwest::Method::GET,
                    format!("{base}/scim/v2/Users?filter={q}"),
                    &token,
                    None,
                )
                .await;
                let took = t.elapsed();
                assert_eq!((s, v["totalResults"].clone()), (200, json!(1)), "{v}");
                samples.lock().unwrap().push(took);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut s = samples.lock().unwrap().clone();
    s.sort();
    let p = |q: f64| s[((s.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "lookups by userName eq: {} requests, p50 {:.2} ms, p99 {:.2} ms",
        s.len(),
        p(0.5),
        p(0.99)
    );
}

async fn first_check() {
    let base = need("--base");
    let keys = std::fs::read_to_string(need("--keys")).unwrap();
    let lines: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    let pick = lines[(std::process::id() as usize * 7919) % lines.len()];
    let parts: Vec<&str> = pick.split(' ').collect();
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let t = Instant::now();
    let (s, v) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/check"),
        parts[3],
        Some(json!({"user": format!("user0@t{}.example.com", parts[0]), "feature": "write"})),
    )
    .await;
    let took = t.elapsed();
    assert_eq!((s, v["allowed"].clone()), (200, json!(true)), "{v}");
    println!(
        "first check of a cold tenant: {:.1} ms",
        took.as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("seed") => seed().await,
        Some("lookups") => lookups().await,
        Some("first-check") => first_check().await,
        _ => eprintln!("usage: scale seed|lookups|first-check …"),
    }
}
