//! Seat hygiene and reports on SQLite and PostgreSQL: idle seats (never used, then used),
//! usage across tenants (sorted, keyset-paged, CSV), and compliance findings signed with the
//! audit key.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, TestApp};
use seatkeeper::Config;
use serde_json::{Value, json};

fn product(app: &TestApp) -> String {
    format!("rp-{}", &app.tenant[app.tenant.len() - 12..])
}

async fn app(b: Backend) -> TestApp {
    common::app_with(
        b,
        Config {
            rate_per_second: 100_000,
            rate_burst: 100_000,
            activity_flush: Duration::from_secs(1),
            usage_sample_every: Duration::from_millis(100),
            ..Config::default()
        },
    )
    .await
}

/// A tenant of its own (its name sorts the test's tenants together).
async fn tenant(app: &TestApp, name: &str) -> String {
    let r = app
        .admin("POST", "/api/v1/tenants", Some(json!({"name": name})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    r.body["id"].as_str().unwrap().to_string()
}

fn sub(app: &TestApp, seats: u32, extra: Value) -> Value {
    let mut s = json!({"product": product(app), "plan": "pro", "seats": seats,
        "starts_at": "2026-01-01T00:00:00Z"});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

async fn apply(app: &TestApp, tenants: Value) {
    let m = json!({
        "products": [{"key": product(app), "name": "Reports", "plans": [
            {"key": "pro", "rank": 0, "features": ["export"]}]}],
        "tenants": tenants,
    });
    let r = app.admin("PUT", "/api/v1/model", Some(m)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
}

async fn users(app: &TestApp, tenant: &str, names: &[&str]) -> Vec<String> {
    let token = common::new_credential(
        &app.store,
        std::sync::Arc::new(app.clock.clone()),
        seatkeeper::Credential::Scim,
        tenant,
        "idp",
    )
    .await
    .token;
    let mut out = Vec::new();
    for n in names {
        let r = app
            .req_as(
                &token,
                "POST",
                "/scim/v2/Users",
                Some(json!({"schemas": [common::USER], "userName": n})),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        out.push(r.body["id"].as_str().unwrap().to_string());
    }
    out
}

async fn get(app: &TestApp, uri: &str) -> common::Resp {
    let r = app.admin("GET", uri, None).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.raw);
    r
}

/// Idle seats: a seat never used is idle once held for idle_after_days; one used since is
/// not; both show in /idle and /usage.
async fn idle_seats_follow_activity(b: Backend) {
    let app = app(b).await;
    let t = app.tenant.clone();
    apply(&app, json!([{"id": t, "rules": [], "subscriptions": [sub(&app, 10, json!({"idle_after_days": 10}))]}])).await;
    let ids = users(&app, &t, &["a@x.test", "b@x.test", "c@x.test"]).await;
    let usage = |r: &common::Resp| r.body["subscriptions"][0].clone();
    let u = usage(&get(&app, &format!("/api/v1/tenants/{t}/usage")).await);
    assert_eq!(
        (
            u["active"].clone(),
            u["idle"].clone(),
            u["idle_after_days"].clone()
        ),
        (json!(3), json!(0), json!(10)),
        "{u}"
    );

    // Eleven days later nobody has been seen: all three idle.
    app.clock.advance(time::Duration::days(11));
    let r = get(&app, &format!("/api/v1/tenants/{t}/idle")).await;
    assert_eq!(r.body["total"], json!(3), "{}", r.raw);
    let first = &r.body["idle"][0];
    assert_eq!(first["product"], json!(product(&app)));
    assert_eq!(first["plan"], "pro");
    assert_eq!(first["last_seen"], Value::Null);
    assert!(
        first["held_since"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-22"),
        "{first}"
    );
    assert!(first["userName"].as_str().unwrap().ends_with("@x.test"));

    // An application asks about a: a is no longer idle once its activity is written.
    seen_by_an_app(&app, &t, "a@x.test").await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        let r = get(
            &app,
            &format!("/api/v1/tenants/{t}/idle?product={}", product(&app)),
        )
        .await;
        idle = r.body["idle"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["user"].as_str().unwrap().to_string())
            .collect();
        if idle.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        idle.iter().cloned().collect::<BTreeSet<_>>(),
        ids[1..].iter().cloned().collect::<BTreeSet<_>>()
    );
    let u = usage(&get(&app, &format!("/api/v1/tenants/{t}/usage")).await);
    assert_eq!(u["idle"], json!(2), "{u}");
    // Across tenants, sorted by idle (on the latest sample's idle seats): the tenant's row is
    // there with its live figures.
    let mut row = Value::Null;
    for _ in 0..100 {
        let r = get(&app, "/api/v1/usage?sort=idle&order=desc&limit=10000").await;
        let rows = r.body["usage"].as_array().unwrap().clone();
        if let Some(i) = rows.iter().position(|x| x["tenant"] == t.as_str()) {
            row = rows[i].clone();
            if row["idle"] == json!(2) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(row["idle"], json!(2), "{row}");
    // A limit keeps the longest idle; the total still counts them all.
    let r = get(&app, &format!("/api/v1/tenants/{t}/idle?limit=1")).await;
    assert_eq!(
        (
            r.body["idle"].as_array().unwrap().len(),
            r.body["total"].clone()
        ),
        (1, json!(2))
    );
    // Eleven days more: a was last seen before the cutoff, so a is idle again, with b and c
    // (never seen): the counts and the list agree on all three.
    app.clock.advance(time::Duration::days(11));
    let u = usage(&get(&app, &format!("/api/v1/tenants/{t}/usage")).await);
    assert_eq!(u["idle"], json!(3), "{u}");
    let r = get(&app, &format!("/api/v1/tenants/{t}/idle")).await;
    assert_eq!(r.body["total"], json!(3), "{}", r.raw);

    // Bad input: a clear 4xx, never a 500.
    for (uri, status) in [
        (
            format!("/api/v1/tenants/{t}/idle?product=nope"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/v1/tenants/{t}/idle?limit=abc"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/tenants/{t}/idle?colour=red"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/tenants/nope/idle".to_string(),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = app.admin("GET", &uri, None).await;
        assert_eq!(r.status, status, "{uri}: {}", r.raw);
        assert_eq!(
            r.body["status"],
            json!(status.as_u16().to_string()),
            "{uri}: {}",
            r.raw
        );
    }
    let bad = json!({"products": [{"key": product(&app), "name": "R", "plans": [{"key": "pro", "rank": 0, "features": []}]}],
        "tenants": [{"id": t, "rules": [], "subscriptions": [sub(&app, 1, json!({"idle_after_days": 0}))]}]});
    let r = app.admin("PUT", "/api/v1/model", Some(bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(r.raw.contains("idle_after_days"), "{}", r.raw);
}

/// `/api/v1/usage`: one row per tenant × subscription, sortable both ways, paged by a cursor
/// that survives rows added meanwhile, CSV on request.
async fn usage_across_tenants(b: Backend) {
    let app = app(b).await;
    let mark = &app.tenant[app.tenant.len() - 12..];
    let names: Vec<String> = (0..4).map(|i| format!("zz {mark} {i}")).collect();
    let mut ids = Vec::new();
    for n in &names {
        ids.push(tenant(&app, n).await);
    }
    apply(
        &app,
        json!(
            ids.iter()
                .map(|id| json!({"id": id, "rules": [],
            "subscriptions": [sub(&app, 4, json!({"enforcement": "soft"}))]}))
                .collect::<Vec<_>>()
        ),
    )
    .await;
    // Tenant i gets i + 1 users: utilisation 0.25, 0.5, 0.75, 1.
    for (i, id) in ids.iter().enumerate() {
        let names: Vec<String> = (0..=i).map(|j| format!("u{j}@t.test")).collect();
        users(
            &app,
            id,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    }
    let mine = |rows: &Value| -> Vec<Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| ids.contains(&r["tenant"].as_str().unwrap().to_string()))
            .cloned()
            .collect()
    };
    let r = get(
        &app,
        "/api/v1/usage?sort=utilisation&order=desc&limit=10000",
    )
    .await;
    let rows = mine(&r.body["usage"]);
    assert_eq!(rows.len(), 4, "{}", r.raw);
    assert_eq!(
        rows.iter()
            .map(|r| r["tenant_name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        names.iter().rev().cloned().collect::<Vec<_>>()
    );
    let top = &rows[0];
    for field in [
        "seats",
        "active",
        "waitlisted",
        "overage",
        "idle",
        "utilisation",
        "oldest_waiting_since",
        "ends_at",
        "plan",
        "status",
    ] {
        assert!(top.get(field).is_some(), "{field} missing from {top}");
    }
    assert_eq!(
        (top["active"].clone(), top["utilisation"].clone()),
        (json!(4), json!(1.0))
    );
    let r = get(&app, "/api/v1/usage?sort=utilisation&order=asc&limit=10000").await;
    assert_eq!(mine(&r.body["usage"])[0]["utilisation"], json!(0.25));
    // The sorted report follows each commit at once, though its seat counts are kept between
    // requests: tenant 0's seats cut from 4 to 1 (its one user fills it) and a user added to
    // tenant 1 (2 → 3 of 4) reorder it on the next request.
    let r = app
        .admin(
            "PUT",
            &format!("/api/v1/tenants/{}/subscriptions/{}", ids[0], product(&app)),
            Some(sub(&app, 1, json!({"enforcement": "soft"}))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    users(&app, &ids[1], &["late@t.test"]).await;
    let r = get(
        &app,
        "/api/v1/usage?sort=utilisation&order=desc&limit=10000",
    )
    .await;
    let order: Vec<(String, Value)> = mine(&r.body["usage"])
        .iter()
        .map(|r| {
            (
                r["tenant_name"].as_str().unwrap().to_string(),
                r["utilisation"].clone(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (names[0].clone(), json!(1.0)),
            (names[3].clone(), json!(1.0)),
            (names[1].clone(), json!(0.75)),
            (names[2].clone(), json!(0.75)),
        ]
    );
    // A change to the catalogue reaches every tenant: a second product shows at once.
    let second = format!("{}-2", product(&app));
    let m = json!({
        "products": [
            {"key": product(&app), "name": "Reports", "plans": [{"key": "pro", "rank": 0, "features": ["export"]}]},
            {"key": second, "name": "Second", "plans": [{"key": "pro", "rank": 0, "features": ["export"]}]}],
        "tenants": [{"id": ids[2], "rules": [], "subscriptions": [
            sub(&app, 4, json!({"enforcement": "soft"})),
            {"product": second, "plan": "pro", "seats": 8, "starts_at": "2026-01-01T00:00:00Z"}]}],
    });
    let r = app.admin("PUT", "/api/v1/model", Some(m)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = get(&app, "/api/v1/usage?sort=utilisation&order=asc&limit=10000").await;
    assert!(
        mine(&r.body["usage"])
            .iter()
            .any(|r| r["product"] == json!(second) && r["seats"] == json!(8)),
        "{}",
        r.raw
    );

    // Paged by name, two rows a page; a tenant created between pages does not shift them.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/usage?sort=name&limit=2&cursor={c}"),
            None => "/api/v1/usage?sort=name&limit=2".to_string(),
        };
        let r = get(&app, &uri).await;
        for row in r.body["usage"].as_array().unwrap() {
            seen.push(format!(
                "{}/{}",
                row["tenant"].as_str().unwrap(),
                row["product"].as_str().unwrap()
            ));
        }
        pages += 1;
        if pages == 1 {
            tenant(&app, &format!("aaa {mark} added meanwhile")).await;
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 100_000);
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row came twice while paging");
    for id in &ids {
        assert!(
            seen.iter().any(|s| s.starts_with(id.as_str())),
            "{id} never came"
        );
    }

    // CSV: a header, then one line per row.
    let r = get(&app, "/api/v1/usage?format=csv").await;
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut lines = r.raw.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("tenant,tenant_name,product,plan,"),
        "{}",
        r.raw
    );
    for id in &ids {
        assert!(
            r.raw.lines().any(|l| l.starts_with(id.as_str())),
            "{id} not in the CSV"
        );
    }

    // Bad input.
    let other = get(&app, "/api/v1/usage?sort=idle&limit=1").await;
    let c = other.body["next_cursor"].as_str().unwrap().to_string();
    for uri in [
        "/api/v1/usage?sort=colour".to_string(),
        "/api/v1/usage?order=sideways".to_string(),
        "/api/v1/usage?limit=-1".to_string(),
        "/api/v1/usage?cursor=garbage".to_string(),
        format!("/api/v1/usage?sort=name&cursor={c}"),
        "/api/v1/usage?format=xml".to_string(),
    ] {
        let r = app.admin("GET", &uri, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.raw);
        assert_eq!(r.body["scimType"], "invalidValue", "{uri}: {}", r.raw);
    }
}

/// Compliance: each finding raised when its condition holds and only then; the report is
/// signed over its exact bytes by the audit key.
async fn compliance_findings_are_signed(b: Backend) {
    let app = app(b).await;
    let mark = &app.tenant[app.tenant.len() - 12..];
    let over = tenant(&app, &format!("c {mark} over")).await;
    let waits = tenant(&app, &format!("c {mark} waits")).await;
    let clean = tenant(&app, &format!("c {mark} clean")).await;
    // now = 2026-11-22 (the test clock).
    apply(&app, json!([
        {"id": over, "rules": [], "subscriptions": [sub(&app, 2, json!({
            "enforcement": "soft", "ends_at": "2026-12-10T00:00:00Z", "idle_after_days": 5}))]},
        {"id": waits, "rules": [], "subscriptions": [sub(&app, 1, json!({"status": "past_due"}))]},
        {"id": clean, "rules": [], "subscriptions": [sub(&app, 5, json!({}))]},
    ]))
    .await;
    users(&app, &over, &["a@o.test", "b@o.test", "c@o.test"]).await;
    users(&app, &waits, &["a@w.test", "b@w.test"]).await;
    users(&app, &clean, &["a@c.test"]).await;
    app.clock.advance(time::Duration::days(8));

    let findings = |body: &Value| -> BTreeMap<(String, String), Value> {
        body["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    (
                        f["tenant"].as_str().unwrap().to_string(),
                        f["finding"].as_str().unwrap().to_string(),
                    ),
                    f.clone(),
                )
            })
            .collect()
    };
    let r = get(&app, "/api/v1/reports/compliance").await;
    assert!(
        r.body["generated_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-30"),
        "{}",
        r.raw
    );
    let all = findings(&r.body);
    let of = |t: &str| -> BTreeSet<String> {
        all.keys()
            .filter(|(x, _)| x == t)
            .map(|(_, f)| f.clone())
            .collect()
    };
    assert_eq!(
        of(&over),
        BTreeSet::from([
            "overage".into(),
            "idle_seats".into(),
            "expiring_soon".into()
        ])
    );
    assert_eq!(all[&(over.clone(), "overage".into())]["count"], json!(1));
    assert_eq!(all[&(over.clone(), "overage".into())]["severity"], "high");
    assert_eq!(all[&(over.clone(), "idle_seats".into())]["count"], json!(3));
    assert_eq!(
        of(&waits),
        BTreeSet::from(["past_due".into(), "waitlist_stale".into()])
    );
    assert_eq!(
        all[&(waits.clone(), "waitlist_stale".into())]["count"],
        json!(1)
    );
    assert!(of(&clean).is_empty(), "{:?}", of(&clean));
    // Most severe first.
    let sev: Vec<&str> = r.body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    let rank = |s: &str| {
        ["high", "medium", "low"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    assert!(sev.windows(2).all(|w| rank(w[0]) <= rank(w[1])), "{sev:?}");

    // One tenant, and its CSV.
    let r = get(&app, &format!("/api/v1/reports/compliance?tenant={waits}")).await;
    assert_eq!(findings(&r.body).len(), 2, "{}", r.raw);
    let csv = get(
        &app,
        &format!("/api/v1/reports/compliance?tenant={waits}&format=csv"),
    )
    .await;
    let lines: Vec<&str> = csv.raw.lines().collect();
    assert_eq!(lines[0], "finding,tenant,product,severity,count,detail");
    assert_eq!(lines.len(), 3, "{}", csv.raw);

    // Signed: the signature holds over the exact bytes, and not over changed ones.
    for resp in [&r, &csv] {
        let key =
            seatkeeper::public_key(resp.headers["seatkeeper-signature-key"].to_str().unwrap())
                .unwrap();
        let sig = resp.headers["seatkeeper-signature"].to_str().unwrap();
        assert!(seatkeeper::signature_holds(&key, resp.raw.as_bytes(), sig));
        let tampered = resp.raw.replacen(&waits, &clean, 1);
        assert!(!seatkeeper::signature_holds(&key, tampered.as_bytes(), sig));
    }
    let key = seatkeeper::Audit::new(app.store.clone(), std::sync::Arc::new(app.clock.clone()))
        .public_key()
        .await
        .unwrap();
    assert_eq!(r.headers["seatkeeper-signature-key"].to_str().unwrap(), key);

    let r = app
        .admin("GET", "/api/v1/reports/compliance?tenant=nope", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
}

/// An application of the tenant (a new app key) checks a feature for `user`, which records
/// the user's activity.
async fn seen_by_an_app(app: &TestApp, tenant: &str, user: &str) {
    let key = app.app_key(tenant).await;
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({"user": user, "feature": "export"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
}

/// Waits until the last bucket of the history at `path?query` shows `value` for `field`.
async fn history_shows(app: &TestApp, path: &str, query: &str, field: &str, value: i64) {
    let mut last = Value::Null;
    for _ in 0..100 {
        let r = get(app, &format!("{path}?{query}")).await;
        if r.body["points"]
            .as_array()
            .and_then(|p| p.last())
            .map(|p| p[field].clone())
            == Some(json!(value))
        {
            return;
        }
        last = r.body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the history never showed {field} {value}: {last}");
}

/// Usage history: points follow changes (the minute's last counts), hours without change are
/// carried forward, buckets hold the counts at their end; CSV; bad ranges refused.
async fn usage_history_follows_changes(b: Backend) {
    let app = app(b).await;
    let t = app.tenant.clone();
    apply(
        &app,
        json!([{"id": t, "rules": [], "subscriptions": [sub(&app, 3, json!({}))]}]),
    )
    .await;
    let path = format!("/api/v1/tenants/{t}/usage/history");
    // Waits until the series' last bucket shows `active`.
    let wait_for = |active: i64, query: String| {
        let app = &app;
        let path = path.clone();
        async move {
            let mut last = Value::Null;
            for _ in 0..100 {
                let r = get(app, &format!("{path}?{query}")).await;
                last = r.body.clone();
                if r.body["points"]
                    .as_array()
                    .and_then(|p| p.last())
                    .map(|p| p["active"].clone())
                    == Some(json!(active))
                {
                    return r.body;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the history never showed {active} active: {last}");
        }
    };
    // 10:00 — two users.
    users(&app, &t, &["a@h.test", "b@h.test"]).await;
    wait_for(
        2,
        "step=hour&from=2026-11-22T10:00:00Z&to=2026-11-22T10:59:00Z".into(),
    )
    .await;
    // 11:30 — a third.
    app.clock.advance(time::Duration::minutes(90));
    users(&app, &t, &["c@h.test"]).await;
    wait_for(
        3,
        "step=hour&from=2026-11-22T10:00:00Z&to=2026-11-22T11:59:00Z".into(),
    )
    .await;
    // A day later, nothing moved: every hour still answers, carried forward.
    app.clock.advance(time::Duration::days(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let h = get(
        &app,
        &format!("{path}?step=hour&from=2026-11-22T10:00:00Z&to=2026-11-23T11:00:00Z"),
    )
    .await
    .body;
    let points = h["points"].as_array().unwrap();
    assert_eq!(points.len(), 26, "{h}");
    assert_eq!(points[0]["at"], "2026-11-22T10:00:00.000000Z");
    assert_eq!(
        (points[0]["active"].clone(), points[0]["seats"].clone()),
        (json!(2), json!(3))
    );
    assert!(points[1..].iter().all(|p| p["active"] == json!(3)), "{h}");
    for field in ["seats", "active", "waitlisted", "overage", "idle"] {
        assert!(points[0].get(field).is_some(), "{field}");
    }
    // By day, and as CSV.
    let d = get(
        &app,
        &format!("{path}?step=day&from=2026-11-22T00:00:00Z&to=2026-11-23T12:00:00Z"),
    )
    .await
    .body;
    let days: Vec<(String, Value)> = d["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["at"].as_str().unwrap().to_string(), p["active"].clone()))
        .collect();
    assert_eq!(
        days,
        vec![
            ("2026-11-22T00:00:00.000000Z".to_string(), json!(3)),
            ("2026-11-23T00:00:00.000000Z".to_string(), json!(3))
        ]
    );
    let csv = get(
        &app,
        &format!("{path}?step=day&from=2026-11-22T00:00:00Z&to=2026-11-23T12:00:00Z&format=csv"),
    )
    .await;
    assert_eq!(
        csv.raw.lines().next(),
        Some("at,seats,active,waitlisted,overage,idle")
    );
    assert_eq!(csv.raw.lines().count(), 3, "{}", csv.raw);
    // 100 days on, nobody seen: a change marks the tenant, and the minute's point counts
    // all three seats idle. An application then sees b; a minute later, the next change's
    // point counts idle seats again (they are counted once a minute): two.
    app.clock.advance(time::Duration::days(100));
    let later = "step=hour&from=2027-03-03T00:00:00Z&to=2027-03-03T23:00:00Z";
    users(&app, &t, &["d@h.test"]).await;
    history_shows(&app, &path, later, "idle", 3).await;
    seen_by_an_app(&app, &t, "b@h.test").await;
    for _ in 0..100 {
        let r = get(&app, &format!("/api/v1/tenants/{t}/idle")).await;
        if r.body["total"] == json!(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.clock.advance(time::Duration::minutes(1));
    users(&app, &t, &["e@h.test"]).await;
    history_shows(&app, &path, later, "idle", 2).await;
    // The product by name; bad input.
    let r = get(&app, &format!("{path}?product={}", product(&app))).await;
    assert!(!r.body["points"].as_array().unwrap().is_empty());
    for (q, status) in [
        ("step=minute", StatusCode::BAD_REQUEST),
        (
            "from=2026-11-23T00:00:00Z&to=2026-11-22T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("from=yesterday", StatusCode::BAD_REQUEST),
        (
            "step=hour&from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("product=nope", StatusCode::NOT_FOUND),
    ] {
        let r = app.admin("GET", &format!("{path}?{q}"), None).await;
        assert_eq!(r.status, status, "{q}: {}", r.raw);
    }
}

both_backends!(
    idle_seats_follow_activity,
    usage_history_follows_changes,
    usage_across_tenants,
    compliance_findings_are_signed,
);
