//! The licensing engine through the HTTP API, on SQLite and PostgreSQL: licenses follow the
//! directory in the same transaction, seats are never oversold, terms expire on schedule,
//! and every decision can be explained.

use crate::common::{self, EXT};

use std::collections::BTreeMap;

use axum::http::StatusCode;
use common::{Backend, TestApp};
use serde_json::{Value, json};

/// A product key of this test alone: the catalogue is shared by every tenant of a database.
fn product(app: &TestApp) -> String {
    format!("ws-{}", &app.tenant[app.tenant.len() - 12..])
}

fn model(app: &TestApp, seats: u32, extra_sub: Value, rules: Value) -> Value {
    let mut sub = json!({
        "product": product(app), "plan": "pro", "seats": seats,
        "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2027-06-01T00:00:00Z",
        "grace_days": 7, "on_expiry": "downgrade:free", "enforcement": "hard",
    });
    if let (Some(s), Some(extra)) = (sub.as_object_mut(), extra_sub.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "products": [{
            "key": product(app), "name": "Workspace",
            "plans": [
                {"key": "free", "rank": 0, "features": ["docs.read"], "limits": {"projects": 3}},
                {"key": "pro", "rank": 1, "features": ["docs.read", "docs.write", "export"], "limits": {"projects": 100}},
                {"key": "enterprise", "rank": 2, "features": ["docs.read", "docs.write", "export", "sso"], "limits": {"projects": 1000}},
            ],
        }],
        "tenants": [{"id": app.tenant, "subscriptions": [sub], "rules": rules}],
    })
}

async fn apply(app: &TestApp, m: Value) -> Value {
    let r = app.admin("PUT", "/api/v1/model", Some(m)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r.body
}

/// (state, plan) of every license of the test's product, by userName.
async fn licenses(app: &TestApp) -> BTreeMap<String, (String, String)> {
    assert_counts_agree(app).await;
    let mut out = BTreeMap::new();
    let r = app.req("GET", "/scim/v2/Users?count=1000", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    for u in r.body["Resources"].as_array().unwrap() {
        for l in u[EXT]["licenses"].as_array().into_iter().flatten() {
            if l["product"] == json!(product(app)) {
                out.insert(
                    u["userName"].as_str().unwrap().to_string(),
                    (
                        l["state"].as_str().unwrap().to_string(),
                        l["plan"].as_str().unwrap().to_string(),
                    ),
                );
            }
        }
    }
    out
}

/// Every user of a page (the whole list, and each looked up by `userName`) is rendered as a
/// GET of that user renders it: groups, licenses and features.
async fn assert_pages_show_users_as_get(app: &TestApp, users: usize) {
    let page = app.req("GET", "/scim/v2/Users?count=1000", None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.raw);
    let listed = page.body["Resources"].as_array().unwrap();
    assert_eq!(listed.len(), users, "{}", page.raw);
    for u in listed {
        let id = u["id"].as_str().unwrap();
        let one = app.req("GET", &format!("/scim/v2/Users/{id}"), None).await;
        assert_eq!(u, &one.body, "listed and read alike");
        let name = u["userName"].as_str().unwrap();
        let q = format!(
            "/scim/v2/Users?filter={}",
            urlencoding(&format!("userName eq \"{name}\""))
        );
        let found = app.req("GET", &q, None).await;
        assert_eq!(
            found.body["Resources"],
            json!([one.body]),
            "looked up and read alike"
        );
    }
}

/// The seat counts the engine keeps agree with the license rows.
async fn assert_counts_agree(app: &TestApp) {
    let kept = app.store.lines(&app.tenant).await.unwrap();
    let counted = app.store.count_licenses(&app.tenant).await.unwrap();
    for (product, line) in &kept {
        let counts = counted.get(product).copied().unwrap_or_default();
        assert_eq!(
            (line.active, line.waiting, line.free),
            counts,
            "kept counts of {product} drifted"
        );
    }
    for product in counted.keys() {
        assert!(kept.contains_key(product), "no kept counts for {product}");
    }
}

fn count(l: &BTreeMap<String, (String, String)>, state: &str) -> usize {
    l.values().filter(|(s, _)| s == state).count()
}

async fn usage(app: &TestApp) -> Value {
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/usage", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r.body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["product"] == json!(product(app)))
        .cloned()
        .unwrap()
}

async fn seats_follow_the_directory(b: Backend) {
    let app = common::app(b).await;
    apply(&app, model(&app, 2, json!({}), json!([]))).await;
    let a = app.user("alice").await;
    let bob = app.user("bob").await;
    let r = app
        .req("POST", "/scim/v2/Users", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "carol",
            EXT: {"licenses": [{"product": product(&app), "plan": "enterprise", "state": "active"}]}})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    // The SCIM create succeeds and answers with the decision; the client's own licensing
    // value (read-only) is ignored.
    let carol_license = &r.body[EXT]["licenses"][0];
    assert_eq!(carol_license["state"], "waitlisted", "{}", r.raw);
    assert_eq!(carol_license["plan"], "pro");
    assert_eq!(
        carol_license["reason"],
        "seat limit reached: pro 2/2 seats (hard)"
    );
    let carol = r.body["id"].as_str().unwrap().to_string();

    let l = licenses(&app).await;
    assert_eq!(l["alice"], ("active".into(), "pro".into()));
    assert_eq!(l["bob"], ("active".into(), "pro".into()));
    let got = app.req("GET", &format!("/scim/v2/Users/{a}"), None).await;
    assert_eq!(
        got.body[EXT]["features"],
        json!(["docs.read", "docs.write", "export"])
    );
    assert!(
        got.body["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(EXT))
    );

    // Everyone waitlisted, by SCIM filter.
    let r = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                urlencoding(&format!("{EXT}:licenses.state eq \"waitlisted\""))
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["userName"], "carol");

    // Deactivating alice frees her seat before the request returns: carol is promoted.
    app.set_active(&a, false).await;
    let l = licenses(&app).await;
    assert!(!l.contains_key("alice"));
    assert_eq!(l["carol"].0, "active");
    // Reactivation goes through the seat check: no seat, so alice waits.
    app.set_active(&a, true).await;
    let l = licenses(&app).await;
    assert_eq!(l["alice"].0, "waitlisted");
    assert_eq!((count(&l, "active"), count(&l, "waitlisted")), (2, 1));
    // Deleting bob promotes alice.
    assert_eq!(
        app.req("DELETE", &format!("/scim/v2/Users/{bob}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let l = licenses(&app).await;
    assert_eq!(l["alice"].0, "active");
    let u = usage(&app).await;
    assert_eq!(
        (
            u["seats"].clone(),
            u["active"].clone(),
            u["waitlisted"].clone()
        ),
        (json!(2), json!(2), json!(0))
    );

    // The explanation chain and the history of carol's license.
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{carol}/licenses", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let lic = &r.body["licenses"][0];
    assert_eq!(lic["explanation"]["seat"]["seats"], 2);
    assert_eq!(lic["explanation"]["event"]["action"], "user.deactivate");
    assert!(
        lic["explanation"]["decision"]
            .as_str()
            .unwrap()
            .contains("no rules")
    );
    let actions: Vec<&str> = r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["license.waitlisted", "license.promoted"]);

    // Alice's history spans the license she lost (deactivated) and the one she got back.
    let history = |b: &Value| -> Vec<String> {
        b["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["action"].as_str().unwrap().to_string())
            .collect()
    };
    let alice_uri = format!("/api/v1/tenants/{}/users/{a}/licenses", app.tenant);
    let r = app.admin("GET", &alice_uri, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let alice_history = [
        "license.assigned",
        "license.revoked",
        "license.waitlisted",
        "license.promoted",
    ];
    assert_eq!(history(&r.body), alice_history);
    assert_eq!(
        r.body["licenses"][0]["explanation"]["event"]["change"],
        "license.promoted"
    );

    // Every license change has its audit record and outbox event.
    let events = app
        .store
        .outbox_after(&app.tenant, 0, 10_000)
        .await
        .unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.event_type.as_str())
        .filter(|t| t.starts_with("license."))
        .collect();
    assert_eq!(
        kinds,
        [
            "license.assigned",
            "license.assigned",
            "license.waitlisted",
            "license.revoked",
            "license.promoted",
            "license.waitlisted",
            "license.revoked",
            "license.promoted"
        ]
    );
    let audit = app.store.audit_rows(&app.tenant, 0, 10_000).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action.starts_with("license."))
            .count(),
        kinds.len()
    );
    assert!(
        common::verify_audit(&app.store, Some(&app.tenant), None)
            .await
            .unwrap()[0]
            .2
            .is_ok()
    );

    // Last, as it edits the audit rows: records written before records named their predecessor are still found.
    let strip = match b {
        Backend::Sqlite => "json_remove(after_doc, '$.prev')",
        Backend::Postgres => "((after_doc::jsonb) - 'prev')::text",
    };
    app.store
        .execute_unchecked(
            &format!("UPDATE audit_log SET after_doc = {strip} WHERE resource_type = 'License' AND after_doc IS NOT NULL"),
            vec![],
        )
        .await
        .unwrap();
    let r = app.admin("GET", &alice_uri, None).await;
    assert_eq!(history(&r.body), alice_history);
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn concurrent_creates_never_oversell(b: Backend) {
    let app = std::sync::Arc::new(common::app(b).await);
    apply(&app, model(&app, 50, json!({}), json!([]))).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.user(&format!("user{i:03}")).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let l = licenses(&app).await;
    assert_eq!((count(&l, "active"), count(&l, "waitlisted")), (50, 150));

    // Deactivating 10 seat holders at once promotes exactly 10, the first 10 in line.
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/usage", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let active: Vec<String> = l
        .iter()
        .filter(|(_, v)| v.0 == "active")
        .map(|(k, _)| k.clone())
        .take(10)
        .collect();
    let mut queue: Vec<(i64, String)> = Vec::new();
    for id in &ids {
        let r = app
            .admin(
                "GET",
                &format!("/api/v1/tenants/{}/users/{id}/licenses", app.tenant),
                None,
            )
            .await;
        let lic = &r.body["licenses"][0];
        if lic["state"] == "waitlisted" {
            queue.push((lic["queue"].as_i64().unwrap(), id.clone()));
        }
    }
    queue.sort();
    let first_in_line: Vec<String> = queue.iter().take(10).map(|(_, id)| id.clone()).collect();
    let by_name: BTreeMap<String, String> = {
        let r = app
            .req("GET", "/scim/v2/Users?count=1000&attributes=userName", None)
            .await;
        r.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["userName"].as_str().unwrap().to_string(),
                    u["id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let mut tasks = Vec::new();
    for name in &active {
        let app = app.clone();
        let id = by_name[name].clone();
        tasks.push(tokio::spawn(
            async move { app.set_active(&id, false).await },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = licenses(&app).await;
    assert_eq!(
        (count(&after, "active"), count(&after, "waitlisted")),
        (50, 140)
    );
    for id in &first_in_line {
        let name = by_name.iter().find(|(_, v)| *v == id).unwrap().0;
        assert_eq!(
            after[name].0, "active",
            "{name} was among the first 10 in line"
        );
    }
    let events = app
        .store
        .outbox_after(&app.tenant, 0, 100_000)
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "license.promoted")
            .count(),
        10
    );
}

async fn seat_cut_plan_swap_and_more_seats(b: Backend) {
    let app = common::app(b).await;
    apply(&app, model(&app, 5, json!({}), json!([]))).await;
    for n in ["u1", "u2", "u3", "u4", "u5"] {
        app.user(n).await;
        app.clock.advance(time::Duration::seconds(1));
    }
    let path = format!(
        "/api/v1/tenants/{}/subscriptions/{}",
        app.tenant,
        product(&app)
    );
    let sub = |seats: u32, plan: &str| {
        json!({"plan": plan, "seats": seats, "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2027-06-01T00:00:00Z", "grace_days": 7, "on_expiry": "downgrade:free", "enforcement": "hard"})
    };
    // Seats cut from 5 to 3: the two most recently assigned wait.
    let r = app.admin("PUT", &path, Some(sub(3, "pro"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["licenses"]["waitlisted"], 2);
    let l = licenses(&app).await;
    assert_eq!(l["u4"].0, "waitlisted");
    assert_eq!(l["u5"].0, "waitlisted");
    assert_eq!(l["u1"].0, "active");
    // Plan swap: every license moves to the new plan at once, seats and line kept.
    let r = app.admin("PUT", &path, Some(sub(3, "enterprise"))).await;
    assert_eq!(r.body["licenses"]["changed"], 5, "{}", r.raw);
    let l = licenses(&app).await;
    assert_eq!(l["u1"], ("active".into(), "enterprise".into()));
    assert_eq!(l["u5"], ("waitlisted".into(), "enterprise".into()));
    // More seats: the demoted get theirs back, in their original order.
    let r = app.admin("PUT", &path, Some(sub(4, "enterprise"))).await;
    assert_eq!(r.body["licenses"]["promoted"], 1, "{}", r.raw);
    let l = licenses(&app).await;
    assert_eq!(l["u4"].0, "active");
    assert_eq!(l["u5"].0, "waitlisted");
    // Applying the same state again changes nothing.
    let r = app.admin("PUT", &path, Some(sub(4, "enterprise"))).await;
    assert_eq!(
        r.body["licenses"],
        json!({"assigned": 0, "waitlisted": 0, "promoted": 0, "revoked": 0, "changed": 0, "reclaimed": 0})
    );
}

async fn rules_follow_nested_groups(b: Backend) {
    let app = common::app(b).await;
    let rules = json!([
        {"name": "engineering", "filter": "groups.display eq \"Engineering\"", "product": product(&app), "plan": "pro", "priority": 10},
        {"name": "managers", "filter": "title co \"Manager\"", "product": product(&app), "plan": "enterprise", "priority": 10},
        {"name": "everyone", "filter": "userName pr and not (userType eq \"Contractor\")", "product": product(&app), "plan": "free", "priority": 1},
    ]);
    // The tenant bought enterprise seats; rules hand out enterprise, pro or free.
    apply(&app, model(&app, 100, json!({"plan": "enterprise"}), rules)).await;
    let alice = app.user("alice").await;
    app.user("bob").await;
    let r = app.req("POST", "/scim/v2/Users", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "carl", "userType": "Contractor"}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.req("POST", "/scim/v2/Users", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "mia", "title": "Engineering Manager"}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let l = licenses(&app).await;
    assert_eq!(l["alice"].1, "free");
    assert!(!l.contains_key("carl"), "no rule matches a contractor");
    assert_eq!(l["mia"].1, "enterprise");

    // alice is in Platform, which is inside Engineering: the nested membership counts.
    let platform = app.req("POST", "/scim/v2/Groups", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Platform", "members": [{"value": alice}]}))).await;
    assert_eq!(platform.status, StatusCode::CREATED, "{}", platform.raw);
    let platform = platform.body["id"].as_str().unwrap().to_string();
    let eng = app.req("POST", "/scim/v2/Groups", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering", "members": [{"value": platform, "type": "Group"}]}))).await;
    assert_eq!(eng.status, StatusCode::CREATED, "{}", eng.raw);
    let eng = eng.body["id"].as_str().unwrap().to_string();
    assert_eq!(licenses(&app).await["alice"].1, "pro");
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{alice}/licenses", app.tenant),
            None,
        )
        .await;
    assert_eq!(
        r.body["licenses"][0]["explanation"]["rule"]["name"], "engineering",
        "{}",
        r.raw
    );
    assert_eq!(
        r.body["licenses"][0]["explanation"]["event"]["action"],
        "group.create"
    );

    // Platform leaves Engineering: alice falls back to the lower-priority rule.
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{eng}"),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": format!("members[value eq \"{platform}\"]")}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    assert_eq!(licenses(&app).await["alice"].1, "free");
    // Users of different plans (and one without a license), listed and looked up by filter,
    // show as a GET of each shows them: the licenses a page reads with it go to their users.
    assert_pages_show_users_as_get(&app, 4).await;
    // A rule change re-decides everyone; removing the rule frees the seats it gave.
    let r = app
        .admin(
            "DELETE",
            &format!("/api/v1/tenants/{}/rules/everyone", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["licenses"]["revoked"], 2, "{}", r.raw);
    let l = licenses(&app).await;
    assert_eq!(l.keys().collect::<Vec<_>>(), ["mia"]);
}

async fn terms_expire_on_schedule(b: Backend) {
    let app = common::app(b).await;
    // A 14-day trial from now that turns into the free plan.
    let m = model(
        &app,
        10,
        json!({"status": "trialing", "starts_at": "2026-11-01T00:00:00Z", "ends_at": "2026-12-06T10:00:00Z", "grace_days": 0}),
        json!([]),
    );
    apply(&app, m).await;
    app.user("ann").await;
    assert_eq!(licenses(&app).await["ann"].1, "pro");
    let clock: seatkeeper::SharedClock = std::sync::Arc::new(app.clock.clone());
    let expiring = |app: &common::TestApp| {
        let (store, tenant) = (app.store.clone(), app.tenant.clone());
        async move {
            store
                .outbox_after(&tenant, 0, 10_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.event_type == "subscription.expiring")
                .count()
        }
    };
    // Eight days before the end: nothing yet.
    app.clock.advance(time::Duration::days(6));
    assert!(
        seatkeeper::Licenses::new(app.store.clone(), clock.clone())
            .run_due_for(&app.tenant)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(expiring(&app).await, 0);
    // Within the 7-day notice: `subscription.expiring` once, and no license changes.
    app.clock.advance(time::Duration::days(7));
    let done = seatkeeper::Licenses::new(app.store.clone(), clock.clone())
        .run_due_for(&app.tenant)
        .await
        .unwrap();
    assert!(done.values().all(|o| o.total() == 0), "{done:?}");
    assert_eq!(expiring(&app).await, 1);
    assert!(
        seatkeeper::Licenses::new(app.store.clone(), clock.clone())
            .run_due_for(&app.tenant)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(expiring(&app).await, 1, "sent once per term end");
    app.clock.advance(time::Duration::days(2));
    let done = seatkeeper::Licenses::new(app.store.clone(), clock.clone())
        .run_due_for(&app.tenant)
        .await
        .unwrap();
    assert_eq!(done[&app.tenant].changed, 1);
    assert_eq!(licenses(&app).await["ann"].1, "free");
    let u = usage(&app).await;
    assert_eq!(
        (u["status"].clone(), u["plan_in_force"].clone()),
        (json!("expired"), json!("free"))
    );
    // Running again changes nothing: each transition applies once.
    assert!(
        seatkeeper::Licenses::new(app.store.clone(), clock.clone())
            .run_due_for(&app.tenant)
            .await
            .unwrap()
            .is_empty()
    );

    // A term that revokes after a 7-day grace period.
    let path = format!(
        "/api/v1/tenants/{}/subscriptions/{}",
        app.tenant,
        product(&app)
    );
    let r = app
        .admin(
            "PUT",
            &path,
            Some(
                json!({"plan": "pro", "seats": 10, "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2026-12-10T00:00:00Z", "grace_days": 7, "on_expiry": "revoke"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(licenses(&app).await["ann"].1, "pro");
    app.clock.advance(time::Duration::days(3)); // past ends_at, within grace
    seatkeeper::Licenses::new(app.store.clone(), clock.clone())
        .run_due_for(&app.tenant)
        .await
        .unwrap();
    assert_eq!(licenses(&app).await["ann"], ("active".into(), "pro".into()));
    assert_eq!(usage(&app).await["phase"], "in_grace");
    app.clock.advance(time::Duration::days(7)); // grace over
    let done = seatkeeper::Licenses::new(app.store.clone(), clock.clone())
        .run_due_for(&app.tenant)
        .await
        .unwrap();
    assert_eq!(done[&app.tenant].revoked, 1);
    assert!(licenses(&app).await.is_empty());
}

async fn bad_model_input_is_refused_and_writes_nothing(b: Backend) {
    let app = common::app(b).await;
    apply(&app, model(&app, 5, json!({}), json!([]))).await;
    app.user("ann").await;
    let path = format!(
        "/api/v1/tenants/{}/subscriptions/{}",
        app.tenant,
        product(&app)
    );
    let base = json!({"plan": "pro", "seats": 5, "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("seats", json!(-1)), "seats"),
        (with("plan", json!("gold")), "no plan gold"),
        (
            with("ends_at", json!("2025-01-01T00:00:00Z")),
            "ends_at must be after starts_at",
        ),
        (with("on_expiry", json!("downgrade:nope")), "no plan nope"),
        (with("enforcement", json!("maybe")), "hard or soft"),
        (with("starts_at", json!("yesterday")), "RFC 3339"),
        (with("seatz", json!(5)), "seatz"),
    ];
    for (body, needle) in cases {
        let r = app.admin("PUT", &path, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
        assert_eq!(r.body["scimType"], "invalidValue", "{}", r.raw);
        assert!(
            r.body["detail"].as_str().unwrap().contains(needle),
            "{needle}: {}",
            r.raw
        );
    }
    let rule = format!("/api/v1/tenants/{}/rules/eng", app.tenant);
    for (body, ty) in [
        (
            json!({"filter": "groups.display eq", "product": product(&app), "plan": "pro"}),
            "invalidFilter",
        ),
        (
            json!({"filter": format!("{EXT}:licenses.state eq \"active\""), "product": product(&app), "plan": "pro"}),
            "invalidFilter",
        ),
        (
            json!({"filter": "title pr", "product": product(&app), "plan": "gold"}),
            "invalidValue",
        ),
        (
            json!({"filter": "title pr", "product": "nope", "plan": "pro"}),
            "invalidValue",
        ),
    ] {
        let r = app.admin("PUT", &rule, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
        assert_eq!(r.body["scimType"], ty, "{}", r.raw);
    }
    let r = app
        .admin(
            "PUT",
            &format!("/api/v1/tenants/nope/subscriptions/{}", product(&app)),
            Some(base.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nothing changed.
    let u = usage(&app).await;
    assert_eq!(
        (u["seats"].clone(), u["active"].clone()),
        (json!(5), json!(1))
    );

    // A dry run reports the plan and writes nothing.
    let r = app
        .admin(
            "PUT",
            "/api/v1/model?dry_run=true",
            Some(model(&app, 0, json!({}), json!([]))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["dry_run"], true);
    assert_eq!(
        r.body["licenses"][&app.tenant]["waitlisted"], 1,
        "{}",
        r.raw
    );
    assert!(
        r.body["changes"][0]
            .as_str()
            .unwrap()
            .starts_with("~ subscription"),
        "{}",
        r.raw
    );
    assert_eq!(licenses(&app).await["ann"].0, "active");
    assert_eq!(usage(&app).await["seats"], 5);
    // A model that fails part-way (an unknown tenant) applies nothing.
    let mut bad = model(&app, 0, json!({}), json!([]));
    bad["tenants"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "no-such-tenant"}));
    let r = app.admin("PUT", "/api/v1/model", Some(bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(r.raw.contains("tenants[1].id"), "{}", r.raw);
    assert_eq!(usage(&app).await["seats"], 5);
}

async fn the_extension_is_advertised(b: Backend) {
    let app = common::app(b).await;
    let r = app
        .req("GET", &format!("/scim/v2/Schemas/{EXT}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["attributes"][0]["name"], "licenses");
    assert_eq!(r.body["attributes"][0]["mutability"], "readOnly");
    let r = app.req("GET", "/scim/v2/ResourceTypes/User", None).await;
    assert!(r.raw.contains(EXT), "{}", r.raw);
    // A user without licenses carries no licensing extension.
    let id = app.user("plain").await;
    let r = app.req("GET", &format!("/scim/v2/Users/{id}"), None).await;
    assert!(r.body.get(EXT).is_none(), "{}", r.raw);
    // Its values cannot be written (read-only): a client that sends it reads back the
    // (empty) container it sent, and no license.
    let r = app
        .req("PATCH", &format!("/scim/v2/Users/{id}"), Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": EXT, "value": {"licenses": [{"product": "x", "plan": "y", "state": "active"}]}}]})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body[EXT], json!({}), "{}", r.raw);
    let r = app.req("GET", &format!("/scim/v2/Users/{id}"), None).await;
    assert_eq!(r.body[EXT], json!({}), "{}", r.raw);
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": EXT}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert!(r.body.get(EXT).is_none(), "{}", r.raw);
}

/// Seat-free plans: a free tier takes no seat and never waits; moving up to a seated plan goes
/// through the seat check (a free seat, or the end of the line), moving down frees the seat for
/// the first in line; `/usage` counts seated holders in `active` and the others in
/// `seat_free`; a catalogue change of `seated` re-decides the holders.
async fn seat_free_plans_take_no_seat(b: Backend) {
    let app = common::app(b).await;
    let rules = json!([
        {"name": "engineers", "filter": "title eq \"Engineer\"", "product": product(&app), "plan": "pro", "priority": 10},
        {"name": "everyone", "filter": "userName pr", "product": product(&app), "plan": "free", "priority": 1},
    ]);
    let mut m = model(&app, 2, json!({}), rules.clone());
    m["products"][0]["plans"][0]["seated"] = json!(false);
    apply(&app, m.clone()).await;
    let got = app.admin("GET", "/api/v1/model", None).await;
    assert!(
        got.raw.contains("\"seated\":false"),
        "the catalogue keeps seated = false: {}",
        got.raw
    );
    let title = |t: &str| json!({"schemas": [common::USER], "userName": "x", "title": t});
    let mut ids = BTreeMap::new();
    for (name, t) in [
        ("e1", "Engineer"),
        ("e2", "Engineer"),
        ("e3", "Engineer"),
        ("v1", "Viewer"),
        ("v2", "Viewer"),
    ] {
        let mut body = title(t);
        body["userName"] = json!(name);
        let r = app.req("POST", "/scim/v2/Users", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        ids.insert(name, r.body["id"].as_str().unwrap().to_string());
        app.clock.advance(time::Duration::seconds(1));
    }
    let l = licenses(&app).await;
    assert_eq!(l["e1"], ("active".into(), "pro".into()));
    assert_eq!(l["e2"], ("active".into(), "pro".into()));
    assert_eq!(l["e3"], ("waitlisted".into(), "pro".into()));
    assert_eq!(
        l["v1"],
        ("active".into(), "free".into()),
        "a free user never waits"
    );
    assert_eq!(l["v2"], ("active".into(), "free".into()));
    let u = usage(&app).await;
    assert_eq!(
        (
            u["active"].clone(),
            u["waitlisted"].clone(),
            u["seat_free"].clone()
        ),
        (json!(2), json!(1), json!(2)),
        "{u}"
    );
    let r = app
        .req("GET", &format!("/scim/v2/Users/{}", ids["v1"]), None)
        .await;
    assert!(
        r.body[EXT]["licenses"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("takes no seat"),
        "{}",
        r.raw
    );
    let retitle = |id: &str, t: &str| {
        let id = id.to_string();
        let t = t.to_string();
        let app = &app;
        async move {
            let r = app
                .req(
                    "PATCH",
                    &format!("/scim/v2/Users/{id}"),
                    Some(json!({"schemas": [common::PATCH],
                    "Operations": [{"op": "replace", "path": "title", "value": t}]})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        }
    };
    // Up from free: no seat free and e3 waits ahead, so v1 joins the end of the line.
    retitle(&ids["v1"], "Engineer").await;
    let l = licenses(&app).await;
    assert_eq!(l["v1"], ("waitlisted".into(), "pro".into()));
    // While it waits for a pro seat, v1 keeps what free gives.
    let r = app
        .req("GET", &format!("/scim/v2/Users/{}", ids["v1"]), None)
        .await;
    assert_eq!(r.body[EXT]["features"], json!(["docs.read"]), "{}", r.raw);
    let u = usage(&app).await;
    assert_eq!(
        (
            u["active"].clone(),
            u["waitlisted"].clone(),
            u["seat_free"].clone()
        ),
        (json!(2), json!(2), json!(1)),
        "{u}"
    );
    // Down to free: e1's seat goes to the first in line (e3, not v1), and e1 keeps access.
    retitle(&ids["e1"], "Viewer").await;
    let l = licenses(&app).await;
    assert_eq!(l["e1"], ("active".into(), "free".into()));
    assert_eq!(l["e3"], ("active".into(), "pro".into()));
    assert_eq!(l["v1"], ("waitlisted".into(), "pro".into()));
    // A free holder leaving frees nothing but its own license.
    app.set_active(&ids["v2"], false).await;
    let l = licenses(&app).await;
    assert!(!l.contains_key("v2"));
    assert_eq!(l["v1"].0, "waitlisted");
    // Up from free with a seat free and nobody waiting ahead: straight to a seat.
    let path = format!(
        "/api/v1/tenants/{}/subscriptions/{}",
        app.tenant,
        product(&app)
    );
    let sub = |seats: u32| {
        json!({"plan": "pro", "seats": seats, "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2027-06-01T00:00:00Z", "grace_days": 7, "on_expiry": "downgrade:free", "enforcement": "hard"})
    };
    let r = app.admin("PUT", &path, Some(sub(4))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        licenses(&app).await["v1"].0,
        "active",
        "promoted when seats were bought"
    );
    retitle(&ids["e1"], "Engineer").await;
    let l = licenses(&app).await;
    assert_eq!(l["e1"], ("active".into(), "pro".into()));
    let u = usage(&app).await;
    assert_eq!(
        (
            u["active"].clone(),
            u["waitlisted"].clone(),
            u["seat_free"].clone()
        ),
        (json!(4), json!(0), json!(0)),
        "{u}"
    );
    // The catalogue makes free seated again: its holders join the seat line.
    retitle(&ids["e2"], "Viewer").await;
    let r = app.admin("PUT", &path, Some(sub(3))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let u = usage(&app).await;
    assert_eq!(
        (
            u["active"].clone(),
            u["waitlisted"].clone(),
            u["seat_free"].clone()
        ),
        (json!(3), json!(0), json!(1)),
        "{u}"
    );
    let mut seated = m.clone();
    seated["products"][0]["plans"][0]["seated"] = json!(true);
    seated["tenants"][0]["subscriptions"][0]["seats"] = json!(3);
    apply(&app, seated).await;
    let l = licenses(&app).await;
    assert_eq!(
        l["e2"],
        ("waitlisted".into(), "free".into()),
        "no seat left for it"
    );
    let u = usage(&app).await;
    assert_eq!(
        (
            u["active"].clone(),
            u["waitlisted"].clone(),
            u["seat_free"].clone()
        ),
        (json!(3), json!(1), json!(0)),
        "{u}"
    );
}

/// Explanations and history read right: after a plan swap the explanation shows the seats in
/// use (not 0), a history entry's `before.cause` is the cause of the state before (not of
/// this change), a revocation's `after` names its cause, and the audit API's `user=` finds a
/// user's license records, which `resource_id=` does not.
async fn explanations_history_and_audit_by_user(b: Backend) {
    let app = common::app(b).await;
    apply(&app, model(&app, 3, json!({}), json!([]))).await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for n in ["h1", "h2", "h3"] {
            v.push(app.user(n).await);
        }
        v
    };
    let path = format!(
        "/api/v1/tenants/{}/subscriptions/{}",
        app.tenant,
        product(&app)
    );
    let r = app
        .admin("PATCH", &path, Some(json!({"plan": "enterprise"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{}/licenses", app.tenant, ids[0]),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let l = &r.body["licenses"][0];
    assert_eq!(l["plan"], "enterprise", "{}", r.raw);
    assert_eq!(l["explanation"]["seat"]["in_use"], json!(3), "{}", r.raw);
    let changed = r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["action"] == "license.changed")
        .unwrap_or_else(|| panic!("no license.changed in {}", r.raw));
    assert_eq!(changed["after"]["cause"], "subscription.put", "{}", r.raw);
    let assigned = r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["action"] == "license.assigned")
        .unwrap();
    assert_ne!(
        changed["before"]["cause"], changed["after"]["cause"],
        "before.cause is the earlier change's: {}",
        r.raw
    );
    assert_eq!(
        changed["before"]["cause"], assigned["after"]["cause"],
        "{}",
        r.raw
    );
    // A revocation names its own cause.
    app.set_active(&ids[1], false).await;
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{}/licenses", app.tenant, ids[1]),
            None,
        )
        .await;
    let revoked = r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["action"] == "license.revoked")
        .unwrap_or_else(|| panic!("no license.revoked in {}", r.raw));
    assert_eq!(revoked["after"]["state"], "revoked", "{}", r.raw);
    assert_ne!(
        revoked["after"]["cause"], revoked["before"]["cause"],
        "{}",
        r.raw
    );
    // The audit API by user: the user's records and their licenses'.
    let audit = |q: String| {
        let app = &app;
        async move {
            let r = app
                .admin(
                    "GET",
                    &format!("/api/v1/tenants/{}/audit?{q}&limit=1000", app.tenant),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
            r.body["records"].as_array().unwrap().clone()
        }
    };
    let by_user = audit(format!("user={}", ids[0])).await;
    let kinds: std::collections::BTreeSet<String> = by_user
        .iter()
        .map(|r| r["resource_type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains("User") && kinds.contains("License"),
        "{kinds:?}"
    );
    assert!(
        by_user.iter().all(|r| {
            let id = r["resource_id"].as_str().unwrap();
            id == ids[0] || id.starts_with(&format!("{}/", ids[0]))
        }),
        "only this user's records"
    );
    let by_id = audit(format!("resource_id={}", ids[0])).await;
    assert!(by_id.iter().all(|r| r["resource_type"] != "License"));
    assert!(by_user.len() > by_id.len());
}

/// Pins: an administrator's direct assignment over the rules — a plan (capped by what the
/// subscription grants) or an exclusion — audited, explained, listed; a pinned user takes a
/// seat like anyone and does not jump the waitlist; an expired pin gives way to the rules;
/// model files declare pins by userName; bad input is refused with nothing written.
async fn pins_override_the_rules(b: Backend) {
    let app = common::app(b).await;
    let rules = json!([
        {"name": "engineers", "filter": "title eq \"Engineer\"", "product": product(&app), "plan": "pro", "priority": 10},
        {"name": "everyone", "filter": "userName pr", "product": product(&app), "plan": "free", "priority": 1},
    ]);
    let mut m = model(&app, 2, json!({}), rules);
    m["products"][0]["plans"][0]["seated"] = json!(false);
    apply(&app, m.clone()).await;
    let mut ids = BTreeMap::new();
    for (name, t) in [
        ("a", "Engineer"),
        ("d", "Engineer"),
        ("e", "Engineer"),
        ("b", "Viewer"),
        ("c", "Viewer"),
    ] {
        let r = app
            .req(
                "POST",
                "/scim/v2/Users",
                Some(json!({"schemas": [common::USER], "userName": name, "title": t})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        ids.insert(name, r.body["id"].as_str().unwrap().to_string());
        app.clock.advance(time::Duration::seconds(1));
    }
    let l = licenses(&app).await;
    assert_eq!(l["e"], ("waitlisted".into(), "pro".into()));
    let pin_path = |user: &str| {
        format!(
            "/api/v1/tenants/{}/users/{}/pins/{}",
            app.tenant,
            ids[user],
            product(&app)
        )
    };
    // A pinned user takes a seat like anyone: no seat is free, so b waits behind e.
    let r = app
        .admin(
            "PUT",
            &pin_path("b"),
            Some(json!({"plan": "pro", "reason": "needs export for the audit"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["pin"]["plan"], "pro");
    let l = licenses(&app).await;
    assert_eq!(l["b"], ("waitlisted".into(), "pro".into()));
    // Excluding a frees a's seat: e (first in line) gets it, not b.
    let r = app
        .admin(
            "PUT",
            &pin_path("a"),
            Some(json!({"plan": null, "reason": "left the project"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let l = licenses(&app).await;
    assert!(!l.contains_key("a"), "excluded: {l:?}");
    assert_eq!(l["e"].0, "active");
    assert_eq!(l["b"].0, "waitlisted");
    // Capped by the plan the subscription grants: enterprise asked, pro given.
    let r = app
        .admin(
            "PUT",
            &pin_path("c"),
            Some(json!({"plan": "enterprise", "reason": "CEO's assistant",
            "expires_at": "2026-12-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{}/licenses", app.tenant, ids["c"]),
            None,
        )
        .await;
    let l = &r.body["licenses"][0];
    assert_eq!(l["plan"], "pro", "{}", r.raw);
    assert_eq!(
        l["explanation"]["requested_plan"], "enterprise",
        "{}",
        r.raw
    );
    let decision = l["explanation"]["decision"].as_str().unwrap();
    assert!(
        decision.starts_with("pinned by ") && decision.contains(": CEO's assistant"),
        "{decision}"
    );
    let r = app
        .admin("GET", &format!("/api/v1/tenants/{}/pins", app.tenant), None)
        .await;
    assert_eq!(r.body["pins"].as_array().unwrap().len(), 3, "{}", r.raw);
    let audit = app
        .admin(
            "GET",
            &format!(
                "/api/v1/tenants/{}/audit?user={}&action=pin.*",
                app.tenant, ids["c"]
            ),
            None,
        )
        .await;
    assert_eq!(
        audit.body["records"].as_array().unwrap().len(),
        1,
        "{}",
        audit.raw
    );
    // Bad input: nothing written.
    let pins_before = app
        .admin("GET", &format!("/api/v1/tenants/{}/pins", app.tenant), None)
        .await
        .raw;
    for (path, body, status) in [
        (
            format!(
                "/api/v1/tenants/{}/users/nobody/pins/{}",
                app.tenant,
                product(&app)
            ),
            json!({"plan": "pro", "reason": "x"}),
            StatusCode::NOT_FOUND,
        ),
        (
            format!(
                "/api/v1/tenants/{}/users/{}/pins/no-product",
                app.tenant, ids["d"]
            ),
            json!({"plan": "pro", "reason": "x"}),
            StatusCode::NOT_FOUND,
        ),
        (
            pin_path("d"),
            json!({"plan": "platinum", "reason": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            pin_path("d"),
            json!({"plan": "pro"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            pin_path("d"),
            json!({"reason": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            pin_path("d"),
            json!({"plan": "pro", "reason": "x", "expires_at": "2020-01-01T00:00:00Z"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            pin_path("d"),
            json!({"plan": "pro", "reason": "x", "colour": "red"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            pin_path("d"),
            json!({"plan": "pro", "reason": "x".repeat(501)}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = app.admin("PUT", &path, Some(body.clone())).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.raw);
    }
    assert_eq!(
        app.admin("GET", &format!("/api/v1/tenants/{}/pins", app.tenant), None)
            .await
            .raw,
        pins_before
    );
    // The pin expires: the scheduler removes it and the rules decide again (c is a Viewer).
    app.clock.advance(time::Duration::days(30));
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/scheduler/run?tenant={}", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let l = licenses(&app).await;
    assert_eq!(l["c"], ("active".into(), "free".into()));
    let audit = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/audit?action=pin.expire", app.tenant),
            None,
        )
        .await;
    assert_eq!(
        audit.body["records"].as_array().unwrap().len(),
        1,
        "{}",
        audit.raw
    );
    // Removing a pin gives the user back to the rules; a second DELETE is 404.
    let r = app.admin("DELETE", &pin_path("a"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(licenses(&app).await["a"].1, "pro");
    let r = app.admin("DELETE", &pin_path("a"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    // A model file pins by userName.
    let mut with_pins = m.clone();
    with_pins["tenants"][0]["pins"] = json!([
        {"user": "D", "product": product(&app), "exclude": true, "reason": "on leave"}]);
    let r = apply(&app, with_pins.clone()).await;
    assert!(r["changes"].to_string().contains("+ pin"), "{r}");
    assert!(!licenses(&app).await.contains_key("d"));
    let r = apply(&app, with_pins).await;
    assert!(!r["changes"].to_string().contains("pin"), "unchanged: {r}");
    let mut unknown = m.clone();
    unknown["tenants"][0]["pins"] =
        json!([{"user": "zed", "product": product(&app), "plan": "pro", "reason": "x"}]);
    let r = app.admin("PUT", "/api/v1/model", Some(unknown)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
}

/// The mass-deprovision brake (on by default: 25 %, at least 10, in 60 minutes): past the
/// threshold, deprovisions still succeed in the directory and access stops, but seats are held
/// (not handed to the waitlist) until an operator approves or rejects; a reactivation or a
/// deleted user created again restores their seats at once.
async fn the_deprovision_brake_holds_seats(b: Backend) {
    let app = common::app(b).await;
    apply(&app, model(&app, 20, json!({}), json!([]))).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(app.user(&format!("u{i:02}")).await);
        app.clock.advance(time::Duration::seconds(1));
    }
    let settings = format!("/api/v1/tenants/{}/settings", app.tenant);
    let r = app.admin("GET", &settings, None).await;
    assert_eq!(
        r.body["deprovision_brake"],
        json!({"percent": 25, "min_users": 10, "window_minutes": 60}),
        "{}",
        r.raw
    );
    let key = app.app_key(&app.tenant).await;
    let held_path = format!("/api/v1/tenants/{}/held", app.tenant);
    // 15 seat holders leave: 10 are applied (10 waiters promoted), 5 are held.
    for id in &ids[..15] {
        app.set_active(id, false).await;
    }
    let u = usage(&app).await;
    assert_eq!(
        (u["active"].clone(), u["waitlisted"].clone()),
        (json!(20), json!(10)),
        "{u}"
    );
    let held = app.admin("GET", &held_path, None).await;
    let list = held.body["held"].as_array().unwrap();
    assert_eq!(list.len(), 5, "{}", held.raw);
    assert!(
        list.iter()
            .all(|h| h["state"] == "pending" && h["gone"] == "deactivated")
    );
    assert_eq!(list[0]["userName"], "u10");
    let l = licenses(&app).await;
    assert_eq!(l["u10"].0, "active", "a held user's seat stays");
    // Access stops at once all the same.
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({"user": "u10", "feature": "export"})),
            &[],
        )
        .await;
    assert_eq!(
        (r.body["allowed"].clone(), r.body["reason"].clone()),
        (json!(false), json!("user inactive")),
        "{}",
        r.raw
    );
    let events = app
        .store
        .outbox_after(&app.tenant, 0, 100_000)
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "deprovision.held")
            .count(),
        5
    );
    // A held user who comes back is restored at once, seat and all.
    app.set_active(&ids[10], true).await;
    assert_eq!(licenses(&app).await["u10"].0, "active");
    assert_eq!(
        app.admin("GET", &held_path, None).await.body["held"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // A deleted user while the brake is on: held too; created again, they get their seat back.
    let r = app
        .req("DELETE", &format!("/scim/v2/Users/{}", ids[16]), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.admin("GET", &held_path, None).await.body["held"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let back = app.user("U16").await;
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{back}/licenses", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.body["licenses"][0]["state"], "active", "{}", r.raw);
    assert_eq!(
        app.admin("GET", &held_path, None).await.body["held"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Reject: the seats stay reserved and the brake lets go (new deprovisions count afresh).
    let r = app
        .admin("POST", &format!("{held_path}/reject"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["users"].as_array().unwrap().len(), 4);
    let held = app.admin("GET", &held_path, None).await;
    assert!(
        held.body["held"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["state"] == "reserved")
    );
    let waiting = usage(&app).await["waitlisted"].clone();
    app.set_active(&ids[17], false).await;
    assert_eq!(
        usage(&app).await["waitlisted"],
        json!(waiting.as_i64().unwrap() - 1),
        "applied, not held"
    );
    // Approve: every held seat goes to the waitlist, in one transaction.
    let r = app
        .admin("POST", &format!("{held_path}/approve"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["licenses"]["revoked"], json!(4), "{}", r.raw);
    assert_eq!(r.body["licenses"]["promoted"], json!(4), "{}", r.raw);
    assert_eq!(
        app.admin("GET", &held_path, None).await.body["held"],
        json!([])
    );
    let audit = app
        .admin(
            "GET",
            &format!(
                "/api/v1/tenants/{}/audit?action=deprovision.*&limit=1000",
                app.tenant
            ),
            None,
        )
        .await;
    let actions: Vec<&str> = audit.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in [
        "deprovision.hold",
        "deprovision.restore",
        "deprovision.reject",
        "deprovision.approve",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    // Turned off: nothing is held any more. Bad settings are refused.
    let r = app
        .admin("PUT", &settings, Some(json!({"deprovision_brake": null})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["deprovision_brake"], json!(null));
    for id in &ids[18..32] {
        app.set_active(id, false).await;
    }
    assert_eq!(
        app.admin("GET", &held_path, None).await.body["held"],
        json!([])
    );
    for bad in [
        json!({"deprovision_brake": {"percent": 0, "min_users": 1, "window_minutes": 5}}),
        json!({"deprovision_brake": {"percent": 10}}),
        json!({"colour": 1}),
        json!([1]),
    ] {
        let r = app.admin("PUT", &settings, Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
    let r = app
        .admin(
            "PUT",
            &settings,
            Some(
                json!({"deprovision_brake": {"percent": 10, "min_users": 2, "window_minutes": 5}}),
            ),
        )
        .await;
    assert_eq!(
        r.body["deprovision_brake"]["percent"],
        json!(10),
        "{}",
        r.raw
    );
}

/// Idle reclaim: with `on_idle = "reclaim"`, the scheduler gives idle seats to the waitlist,
/// longest idle first and only as many as there are waiters; a reclaimed license grants
/// nothing until its user is active again (an activity report, or a check), then gets a seat
/// if one is free, else the end of the line.
async fn idle_seats_are_reclaimed_for_the_waitlist(b: Backend) {
    let app = common::app_with(
        b,
        seatkeeper::Config {
            rate_per_second: 100_000,
            rate_burst: 100_000,
            activity_flush: std::time::Duration::from_secs(1),
            ..seatkeeper::Config::default()
        },
    )
    .await;
    apply(
        &app,
        model(
            &app,
            3,
            json!({"on_idle": "reclaim", "idle_after_days": 30}),
            json!([]),
        ),
    )
    .await;
    for n in ["u1", "u2", "u3", "u4"] {
        app.user(n).await;
        app.clock.advance(time::Duration::seconds(1));
    }
    assert_eq!(licenses(&app).await["u4"].0, "waitlisted");
    let key = app.app_key(&app.tenant).await;
    let report = |users: Value| {
        let (app, key) = (&app, key.clone());
        async move {
            app.req_as(
                &key,
                "POST",
                "/api/v1/activity",
                Some(json!({"users": users})),
                &[],
            )
            .await
        }
    };
    app.clock.advance(time::Duration::days(31));
    let r = report(json!(["u1", "nobody"])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        (r.body["recorded"].clone(), r.body["unknown"].clone()),
        (json!(1), json!(["nobody"]))
    );
    // u2 and u3 are idle, one waits: the preview names u2 alone (the longest idle).
    let idle = format!("/api/v1/tenants/{}/idle", app.tenant);
    assert_eq!(app.admin("GET", &idle, None).await.body["total"], json!(2));
    let preview = app
        .admin("GET", &format!("{idle}?preview=reclaim"), None)
        .await;
    assert_eq!(preview.body["total"], json!(1), "{}", preview.raw);
    assert_eq!(preview.body["idle"][0]["userName"], "u2");
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/scheduler/run?tenant={}", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        r.body["tenants"][&app.tenant]["reclaimed"],
        json!(1),
        "{}",
        r.raw
    );
    let l = licenses(&app).await;
    assert_eq!(l["u2"].0, "reclaimed");
    assert_eq!(l["u3"].0, "active", "a seat is never freed for no one");
    assert_eq!(l["u4"].0, "active", "the waiter got u2's seat");
    let r = app
        .req(
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22u2%22",
            None,
        )
        .await;
    let lic = &r.body["Resources"][0][EXT]["licenses"][0];
    assert!(
        lic["reason"]
            .as_str()
            .unwrap()
            .starts_with("idle since 2026-"),
        "{lic}"
    );
    assert!(
        r.body["Resources"][0][EXT]["features"]
            .as_array()
            .unwrap()
            .is_empty(),
        "grants nothing: {}",
        r.raw
    );
    let events = app
        .store
        .outbox_after(&app.tenant, 0, 100_000)
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "license.reclaimed")
            .count(),
        1
    );
    // Nothing more while nobody waits.
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/scheduler/run?tenant={}", app.tenant),
            None,
        )
        .await;
    assert!(r.body["tenants"].get(&app.tenant).is_none(), "{}", r.raw);
    // u2 is active again: no seat is free, so u2 joins the end of the line.
    let r = report(json!(["u2"])).await;
    assert_eq!(r.body["licenses"]["waitlisted"], json!(1), "{}", r.raw);
    assert_eq!(licenses(&app).await["u2"].0, "waitlisted");
    // A reclaim again (u3 idle, u2 waiting), then u3 asks through a check: back at the end.
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/scheduler/run?tenant={}", app.tenant),
            None,
        )
        .await;
    assert_eq!(
        r.body["tenants"][&app.tenant]["reclaimed"],
        json!(1),
        "{}",
        r.raw
    );
    let l = licenses(&app).await;
    assert_eq!(
        (l["u3"].0.as_str(), l["u2"].0.as_str()),
        ("reclaimed", "active")
    );
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({"user": "u3", "feature": "export"})),
            &[],
        )
        .await;
    assert_eq!(r.body["allowed"], json!(false), "{}", r.raw);
    let mut back = false;
    for _ in 0..100 {
        if licenses(&app).await["u3"].0 == "waitlisted" {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        back,
        "a check brings a reclaimed user back within the activity flush"
    );
    // Bad reports are refused.
    for bad in [
        json!({"users": []}),
        json!({"users": ["x"], "colour": 1}),
        json!({"users": [""]}),
        json!({"users": vec!["u"; 10_001]}),
        json!({"users": ["u1"], "at": "yesterday"}),
    ] {
        let r = app
            .req_as(&key, "POST", "/api/v1/activity", Some(bad.clone()), &[])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    }
    let r = app
        .req("POST", "/api/v1/activity", Some(json!({"users": ["u1"]})))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a SCIM token is not an app key"
    );
}

/// Imports bring existing seat holders in: users in the directory get the imported plan, in
/// the order of `assigned_at` (the seat check still applies); unknown users are kept as claims
/// until SCIM creates them; bad rows are refused with their reasons; a dry run writes nothing.
async fn imports_keep_the_order_in_line(b: Backend) {
    let app = common::app(b).await;
    let rules = json!([{"name": "everyone", "filter": "userName pr", "product": product(&app), "plan": "free", "priority": 1}]);
    let mut m = model(&app, 3, json!({}), rules);
    m["products"][0]["plans"][0]["seated"] = json!(false);
    apply(&app, m).await;
    for n in ["e", "a", "b", "c", "d"] {
        let r = app
            .req(
                "POST",
                "/scim/v2/Users",
                Some(json!({"schemas": [common::USER], "userName": n,
                "emails": [{"value": format!("{n}@mail.test"), "type": "work"}]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    }
    let p = product(&app);
    // e holds a seat seatkeeper gave before the import.
    let e_id = {
        let r = app
            .req("GET", "/scim/v2/Users?filter=userName%20eq%20%22e%22", None)
            .await;
        r.body["Resources"][0]["id"].as_str().unwrap().to_string()
    };
    let r = app
        .admin(
            "PUT",
            &format!("/api/v1/tenants/{}/users/{e_id}/pins/{p}", app.tenant),
            Some(json!({"plan": "pro", "reason": "early adopter"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(licenses(&app).await["e"].0, "active");
    let csv = format!(
        "user,product,plan,assigned_at\n\
         c,{p},pro,2023-01-01T00:00:00Z\n\
         D@MAIL.TEST,{p},pro,2020-01-01T00:00:00Z\n\
         b,{p},pro,2021-01-01T00:00:00Z\n\
         a,{p},pro,2022-01-01T00:00:00Z\n\
         zoe@new.test,{p},pro,2019-01-01T00:00:00Z\n\
         a,no-such-product,pro,2020-01-01T00:00:00Z\n\
         b,{p},platinum,2020-01-01T00:00:00Z\n\
         c,{p},pro,last tuesday\n\
         d,{p},pro,2099-01-01T00:00:00Z\n\
         a,{p},pro,2024-01-01T00:00:00Z\n"
    );
    let send = |dry: bool, body: String, kind: &'static str| {
        let app = &app;
        async move {
            let req = axum::http::Request::builder()
                .method("POST")
                .uri(format!(
                    "/api/v1/tenants/{}/import?dry_run={dry}",
                    app.tenant
                ))
                .header("authorization", format!("Bearer {}", common::ADMIN))
                .header("content-type", kind)
                .body(axum::body::Body::from(body))
                .unwrap();
            app.send(req).await
        }
    };
    let before = licenses(&app).await;
    let r = send(true, csv.clone(), "text/csv").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        (
            r.body["matched"].as_array().unwrap().len(),
            r.body["pending"].as_array().unwrap().len(),
            r.body["refused"].as_array().unwrap().len()
        ),
        (4, 1, 5),
        "{}",
        r.raw
    );
    assert_eq!(licenses(&app).await, before, "a dry run writes nothing");
    let r = send(false, csv, "text/csv").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let reasons: Vec<&str> = r.body["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap())
        .collect();
    for want in [
        "no product no-such-product",
        "has no plan platinum",
        "assigned_at",
        "in the future",
        "a second row",
    ] {
        assert!(
            reasons.iter().any(|x| x.contains(want)),
            "{want}: {reasons:?}"
        );
    }
    // Seats in assigned_at order: d (2020), b (2021), a (2022); c (2023) waits.
    let l = licenses(&app).await;
    assert_eq!(l["d"], ("active".into(), "pro".into()));
    assert_eq!(l["b"], ("active".into(), "pro".into()));
    assert_eq!(l["a"], ("active".into(), "pro".into()));
    assert_eq!(l["c"], ("waitlisted".into(), "pro".into()));
    assert_eq!(
        l["e"],
        ("waitlisted".into(), "pro".into()),
        "e's seat came later than every imported one"
    );
    let id_of = |n: &str| {
        r.body["matched"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user"].as_str().unwrap().eq_ignore_ascii_case(n))
            .unwrap()["user_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let d = id_of("D@MAIL.TEST");
    let r2 = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{d}/licenses", app.tenant),
            None,
        )
        .await;
    assert!(
        r2.body["licenses"][0]["explanation"]["decision"]
            .as_str()
            .unwrap()
            .contains("imported"),
        "{}",
        r2.raw
    );
    // The claim waits for its user; SCIM creates zoe: the claim is honoured (no seat: waits).
    let claims = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/claims", app.tenant),
            None,
        )
        .await;
    assert_eq!(
        claims.body["claims"].as_array().unwrap().len(),
        1,
        "{}",
        claims.raw
    );
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [common::USER], "userName": "Zoe@New.test"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert_eq!(r.body[EXT]["licenses"][0]["plan"], "pro", "{}", r.raw);
    // Her seat was assigned first of all (2019): she takes one, and a (2022) waits.
    let l = licenses(&app).await;
    assert_eq!(l["Zoe@New.test"].0, "active", "{l:?}");
    assert_eq!(r.body[EXT]["licenses"][0]["state"], "active", "{}", r.raw);
    assert_eq!(l["a"].0, "waitlisted");
    assert_eq!((l["d"].0.as_str(), l["b"].0.as_str()), ("active", "active"));
    let claims = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/claims", app.tenant),
            None,
        )
        .await;
    assert_eq!(claims.body["claims"], json!([]));
    // JSON lines read the same; a body without rows is refused.
    let jl = format!(
        "{{\"user\": \"e@late.test\", \"product\": \"{p}\", \"plan\": \"pro\", \"assigned_at\": \"2018-01-01T00:00:00Z\"}}\n"
    );
    let r = send(false, jl, "application/x-ndjson").await;
    assert_eq!(r.body["pending"].as_array().unwrap().len(), 1, "{}", r.raw);
    let r = send(false, String::new(), "text/csv").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
}

/// Reconciliation against the application's view: who uses a product without a license, who
/// holds one the application does not see, whose plan differs, whom the directory does not
/// know; JSON or CSV.
async fn reconcile_against_the_application(b: Backend) {
    let app = common::app(b).await;
    apply(&app, model(&app, 2, json!({}), json!([]))).await;
    for n in ["a", "b", "c"] {
        app.user(n).await;
        app.clock.advance(time::Duration::seconds(1));
    }
    // a and b hold pro seats; c waits.
    let p = product(&app);
    let list = format!("user,product,plan\nA,{p},pro\nc,{p},pro\nghost@x.test,{p},\n");
    let send = |body: String, q: &'static str| {
        let app = &app;
        async move {
            let req = axum::http::Request::builder()
                .method("POST")
                .uri(format!("/api/v1/tenants/{}/reconcile{q}", app.tenant))
                .header("authorization", format!("Bearer {}", common::ADMIN))
                .header("content-type", "text/csv")
                .body(axum::body::Body::from(body))
                .unwrap();
            app.send(req).await
        }
    };
    let r = send(list.clone(), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let got: Vec<(String, String)> = r.body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["category"].as_str().unwrap().to_string(),
                f["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("unlicensed_use".into(), "c".into()),
            ("unused_license".into(), "b".into()),
            ("unknown_user".into(), "ghost@x.test".into()),
        ],
        "{}",
        r.raw
    );
    assert_eq!(r.body["findings"][0]["licensed_plan"], "pro (waitlisted)");
    let r = send(
        format!("user,product,plan\na,{p},enterprise\nb,{p},pro\n"),
        "",
    )
    .await;
    assert_eq!(r.body["counts"]["plan_mismatch"], json!(1), "{}", r.raw);
    let r = send(list, "?format=csv").await;
    assert!(
        r.raw
            .starts_with("category,user,user_id,product,app_plan,licensed_plan\n"),
        "{}",
        r.raw
    );
    assert_eq!(r.raw.lines().count(), 4, "{}", r.raw);
    for bad in ["", "who,what\nx,y\n"] {
        let r = send(bad.to_string(), "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    }
}

both_backends!(
    reconcile_against_the_application,
    imports_keep_the_order_in_line,
    idle_seats_are_reclaimed_for_the_waitlist,
    the_deprovision_brake_holds_seats,
    pins_override_the_rules,
    explanations_history_and_audit_by_user,
    seat_free_plans_take_no_seat,
    seats_follow_the_directory,
    concurrent_creates_never_oversell,
    seat_cut_plan_swap_and_more_seats,
    rules_follow_nested_groups,
    terms_expire_on_schedule,
    bad_model_input_is_refused_and_writes_nothing,
    the_extension_is_advertised,
);
