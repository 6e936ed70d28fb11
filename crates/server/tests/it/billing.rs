//! Billing events in, through the HTTP API on SQLite and PostgreSQL: signatures are
//! checked, each event applies exactly once, late events are ignored, failures apply
//! nothing; and the event feed and webhook registration that carry changes out.

use crate::common;

use axum::http::StatusCode;
use common::{Backend, TestApp};
use seatkeeper::Config;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_stripe_test_secret";

async fn app(b: Backend) -> TestApp {
    common::app_with(
        b,
        Config {
            rate_per_second: 100_000,
            rate_burst: 100_000,
            billing_secret: Some(SECRET.into()),
            stripe_secret: Some(STRIPE_SECRET.into()),
            // Endpoints here are named, not resolved (no DNS in tests).
            allow_private_webhooks: true,
            ..Config::default()
        },
    )
    .await
}

fn product(app: &TestApp) -> String {
    format!("bl-{}", &app.tenant[app.tenant.len() - 12..])
}

/// A catalogue product (free < pro < enterprise) and a hard subscription of `seats` pro seats.
async fn setup(app: &TestApp, seats: u32) {
    let m = json!({
        "products": [{"key": product(app), "name": "Billed", "plans": [
            {"key": "free", "rank": 0, "features": ["read"]},
            {"key": "pro", "rank": 1, "features": ["read", "write"]},
            {"key": "enterprise", "rank": 2, "features": ["read", "write", "sso"]},
        ]}],
        "tenants": [{"id": app.tenant, "subscriptions": [{
            "product": product(app), "plan": "pro", "seats": seats,
            "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z",
            "on_expiry": "downgrade:free", "enforcement": "hard"}], "rules": []}],
    });
    let r = app.admin("PUT", "/api/v1/model", Some(m)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
}

/// Now on the app's clock, which governs the signature tolerance.
fn now(app: &TestApp) -> i64 {
    use seatkeeper::Clock;
    app.clock.now().unix_timestamp()
}

/// Posts a generic billing event with these Standard Webhooks headers (id, timestamp, signature).
async fn post_signed(app: &TestApp, event: &Value, id: &str, ts: &str, sig: &str) -> common::Resp {
    app.req_as(
        "",
        "POST",
        "/api/v1/billing/events",
        Some(event.clone()),
        &[
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ],
    )
    .await
}

/// Posts a Stripe event with this `Stripe-Signature`.
async fn post_stripe(app: &TestApp, event: &Value, signature: &str) -> common::Resp {
    app.req_as(
        "",
        "POST",
        "/api/v1/billing/stripe",
        Some(event.clone()),
        &[("stripe-signature", signature)],
    )
    .await
}

/// Posts a generic billing event signed with `secret` (Standard Webhooks).
async fn post_event(app: &TestApp, secret: &str, event: &Value) -> common::Resp {
    let body = event.to_string();
    let ts = now(app);
    let msg = event["id"].as_str().unwrap_or("x").to_string();
    let sig = seatkeeper::standard_sign(secret, &msg, ts, body.as_bytes());
    post_signed(app, event, &msg, &ts.to_string(), &sig).await
}

fn event(app: &TestApp, id: &str, kind: &str, created: &str, sub: Value) -> Value {
    let mut s = json!({"product": product(app)});
    for (k, v) in sub.as_object().unwrap() {
        s[k] = v.clone();
    }
    // Event ids are unique per source across tenants (and across runs on one PostgreSQL).
    let id = format!("{id}-{}", product(app));
    json!({"id": id, "type": kind, "created_at": created, "tenant": app.tenant, "subscription": s})
}

async fn subscription(app: &TestApp) -> Value {
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/subscriptions", app.tenant),
            None,
        )
        .await;
    r.body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["product"] == json!(product(app)))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn states(app: &TestApp) -> (usize, usize) {
    let line = app.store.lines(&app.tenant).await.unwrap();
    let l = line.get(&product(app)).copied().unwrap_or_default();
    (l.active, l.waiting)
}

async fn events(app: &TestApp) -> Vec<String> {
    app.store
        .outbox_after(&app.tenant, 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn audit_len(app: &TestApp) -> i64 {
    app.store.audit_head(&app.tenant).await.unwrap().unwrap().0
}

async fn an_event_applies_exactly_once(b: Backend) {
    let app = app(b).await;
    setup(&app, 2).await;
    for u in ["ann", "bob", "cid"] {
        app.user(u).await;
    }
    assert_eq!(states(&app).await, (2, 1));
    let ev = event(
        &app,
        "evt_seats_3",
        "subscription.updated",
        "2026-11-22T10:00:00Z",
        json!({"seats": 3}),
    );
    let r = post_event(&app, SECRET, &ev).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    assert_eq!(r.body["licenses"]["promoted"], 1, "{}", r.raw);
    assert_eq!(states(&app).await, (3, 0));
    assert_eq!(subscription(&app).await["seats"], 3);
    let promoted = events(&app)
        .await
        .iter()
        .filter(|e| *e == "license.promoted")
        .count();
    assert_eq!(promoted, 1);
    // The same event twice more: 200, and nothing changes: no audit record, no event.
    let (audit, outbox) = (audit_len(&app).await, events(&app).await.len());
    for _ in 0..2 {
        let r = post_event(&app, SECRET, &ev).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        assert_eq!(r.body["outcome"], "duplicate", "{}", r.raw);
    }
    assert_eq!(audit_len(&app).await, audit);
    assert_eq!(events(&app).await.len(), outbox);
    // The audit trail names the source and the event.
    let rows = app.store.audit_rows(&app.tenant, 0, 10_000).await.unwrap();
    let billed = rows
        .iter()
        .find(|r| r.action == "billing.updated")
        .expect("audited");
    assert_eq!(billed.actor, "billing:generic");
    assert!(billed.after.as_deref().unwrap().contains("evt_seats_3"));
}

async fn late_events_are_recorded_and_ignored(b: Backend) {
    let app = app(b).await;
    setup(&app, 5).await;
    let newer = event(
        &app,
        "evt_new",
        "subscription.updated",
        "2026-11-22T09:30:00Z",
        json!({"seats": 8}),
    );
    let older = event(
        &app,
        "evt_old",
        "subscription.updated",
        "2026-11-22T09:00:00Z",
        json!({"seats": 6}),
    );
    assert_eq!(
        post_event(&app, SECRET, &newer).await.body["outcome"],
        "applied"
    );
    let (outbox, audit) = (events(&app).await.len(), audit_len(&app).await);
    let r = post_event(&app, SECRET, &older).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["outcome"], "stale", "{}", r.raw);
    // Audited (accepted) but nothing changed: no event goes out.
    assert_eq!(events(&app).await.len(), outbox);
    assert_eq!(audit_len(&app).await, audit + 1);
    assert!(
        r.body["detail"].as_str().unwrap().contains("evt_new"),
        "{}",
        r.raw
    );
    assert_eq!(subscription(&app).await["seats"], 8);
    let log = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/billing/events", app.tenant),
            None,
        )
        .await;
    let outcomes: Vec<&str> = log.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"stale") && outcomes.contains(&"applied"),
        "{}",
        log.raw
    );
}

async fn a_failing_event_applies_nothing(b: Backend) {
    let app = app(b).await;
    setup(&app, 2).await;
    app.user("ann").await;
    let before = (
        subscription(&app).await,
        audit_len(&app).await,
        events(&app).await.len(),
    );
    let bad = event(
        &app,
        "evt_plat",
        "subscription.updated",
        "2026-11-22T10:00:00Z",
        json!({"plan": "platinum", "seats": 9}),
    );
    let r = post_event(&app, SECRET, &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    assert_eq!(r.body["status"], "422");
    assert!(
        r.body["detail"].as_str().unwrap().contains("platinum"),
        "{}",
        r.raw
    );
    let after = (
        subscription(&app).await,
        audit_len(&app).await,
        events(&app).await.len(),
    );
    assert_eq!(before, after, "nothing applied");
    // Unknown product and unknown tenant are refused the same way.
    let mut p = bad.clone();
    p["id"] = json!(format!("evt_prod-{}", product(&app)));
    p["subscription"] = json!({"product": "no-such-product", "plan": "pro"});
    assert_eq!(
        post_event(&app, SECRET, &p).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut t = bad.clone();
    t["id"] = json!(format!("evt_tenant-{}", product(&app)));
    t["tenant"] = "no-such-tenant".into();
    assert_eq!(
        post_event(&app, SECRET, &t).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Negative seats are a bad value.
    let mut n = bad.clone();
    n["id"] = json!(format!("evt_neg-{}", product(&app)));
    n["subscription"]["plan"] = "pro".into();
    n["subscription"]["seats"] = json!(-3);
    assert_eq!(
        post_event(&app, SECRET, &n).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Once the sender fixes it, the same event id is processed.
    let mut fixed = bad.clone();
    fixed["subscription"]["plan"] = "enterprise".into();
    let r = post_event(&app, SECRET, &fixed).await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    assert_eq!(subscription(&app).await["plan"], "enterprise");
    // Malformed events: 400 with a SCIM error body.
    for body in [json!({"id": "x"}), json!([1, 2])] {
        let r = post_event(&app, SECRET, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
        assert_eq!(r.body["scimType"], "invalidValue", "{}", r.raw);
    }
}

async fn signatures_are_required(b: Backend) {
    let app = app(b).await;
    setup(&app, 2).await;
    let ev = event(
        &app,
        "evt_sig",
        "subscription.updated",
        "2026-11-22T10:00:00Z",
        json!({"seats": 4}),
    );
    let r = post_event(&app, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &ev).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    let r = app
        .req_as("", "POST", "/api/v1/billing/events", Some(ev.clone()), &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    // A valid signature over another body.
    let body = ev.to_string();
    let ts = now(&app);
    let sig = seatkeeper::standard_sign(SECRET, "m1", ts, b"{}");
    let ts_text = ts.to_string();
    let r = post_signed(&app, &ev, "m1", &ts_text, &sig).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    // A replay from an hour ago.
    let old = (ts - 3600).to_string();
    let sig = seatkeeper::standard_sign(SECRET, "m1", ts - 3600, body.as_bytes());
    let r = post_signed(&app, &ev, "m1", &old, &sig).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    assert_eq!(subscription(&app).await["seats"], 2, "nothing applied");
    let log = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/billing/events", app.tenant),
            None,
        )
        .await;
    assert_eq!(log.body["events"], json!([]), "{}", log.raw);
}

async fn lifecycle_events(b: Backend) {
    let app = app(b).await;
    setup(&app, 5).await;
    let ann = app.user("ann").await;
    // A failed payment keeps access (past_due until the term and grace end).
    let r = post_event(
        &app,
        SECRET,
        &event(
            &app,
            "evt_pf",
            "subscription.payment_failed",
            "2026-11-22T10:00:00Z",
            json!({}),
        ),
    )
    .await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    assert_eq!(subscription(&app).await["status"], "past_due");
    assert_eq!(states(&app).await, (1, 0));
    // A renewal makes it active again with a new term; the start stays where it was, so
    // access never pauses until the new period begins.
    let r = post_event(
        &app,
        SECRET,
        &event(
            &app,
            "evt_rn",
            "subscription.renewed",
            "2026-11-22T10:01:00Z",
            json!({"starts_at": "2027-01-01T00:00:00Z", "ends_at": "2028-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    let s = subscription(&app).await;
    assert_eq!(
        (s["status"].as_str(), s["ends_at"].as_str()),
        (Some("active"), Some("2028-01-01T00:00:00.000000Z"))
    );
    // Expired: on_expiry (downgrade to free) applies at once.
    let r = post_event(
        &app,
        SECRET,
        &event(
            &app,
            "evt_ex",
            "subscription.expired",
            "2026-11-22T10:02:00Z",
            json!({}),
        ),
    )
    .await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    assert_eq!(r.body["licenses"]["changed"], 1, "{}", r.raw);
    let lic = app.store.licenses_of(&app.tenant, &[ann]).await.unwrap();
    assert_eq!(lic[0].plan, "free");
    assert!(events(&app).await.contains(&"license.changed".to_string()));
}

async fn stripe_events(b: Backend) {
    let app = app(b).await;
    setup(&app, 1).await;
    for u in ["ann", "bob"] {
        app.user(u).await;
    }
    let price = format!("price_{}", product(&app));
    let r = app
        .admin(
            "PUT",
            &format!("/api/v1/billing/stripe/prices/{price}"),
            Some(json!({"product": product(&app), "plan": "enterprise"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .admin(
            "PUT",
            "/api/v1/billing/stripe/prices/price_bad",
            Some(json!({"product": "nope", "plan": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    let ev = json!({"id": format!("evt_{}", product(&app)), "object": "event", "type": "customer.subscription.updated",
        "created": 1_795_000_000,
        "data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "metadata": {"seatkeeper_tenant": app.tenant},
            "items": {"data": [{"quantity": 2, "current_period_start": 1_790_000_000, "current_period_end": 1_800_000_000,
                "price": {"id": price, "product": "prod_1"}}]}}}});
    let body = ev.to_string();
    let header = seatkeeper::stripe_sign(STRIPE_SECRET, now(&app), body.as_bytes());
    let r = post_stripe(&app, &ev, &header).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    let s = subscription(&app).await;
    assert_eq!(
        (s["plan"].as_str(), s["seats"].as_u64()),
        (Some("enterprise"), Some(2)),
        "{s}"
    );
    assert_eq!(states(&app).await, (2, 0));
    // Redelivered: nothing changes. Wrong secret: 401.
    let r = post_stripe(&app, &ev, &header).await;
    assert_eq!(r.body["outcome"], "duplicate", "{}", r.raw);
    let forged = seatkeeper::stripe_sign("whsec_other", now(&app), body.as_bytes());
    let r = post_stripe(&app, &ev, &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    // Other event types are accepted and recorded without effect.
    let inv = json!({"id": format!("evt_inv_{}", product(&app)), "type": "invoice.paid", "created": 1_795_000_001, "data": {"object": {}}});
    let h = seatkeeper::stripe_sign(STRIPE_SECRET, now(&app), inv.to_string().as_bytes());
    let r = post_stripe(&app, &inv, &h).await;
    assert_eq!(r.body["outcome"], "ignored", "{}", r.raw);
    // Deleted: the subscription is canceled and ended (here, days before the server's
    // clock, without grace): on_expiry applies at once, everyone moves to free.
    let mut del = ev.clone();
    del["id"] = json!(format!("evt_del_{}", product(&app)));
    del["type"] = "customer.subscription.deleted".into();
    del["created"] = json!(1_795_000_002);
    del["data"]["object"]["status"] = "canceled".into();
    del["data"]["object"]["ended_at"] = json!(1_795_000_002);
    let h = seatkeeper::stripe_sign(STRIPE_SECRET, now(&app), del.to_string().as_bytes());
    let r = post_stripe(&app, &del, &h).await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    assert_eq!(r.body["licenses"]["changed"], 2, "{}", r.raw);
    assert_eq!(subscription(&app).await["status"], "expired");
}

async fn webhooks_and_the_feed(b: Backend) {
    let app = app(b).await;
    let base = format!("/api/v1/tenants/{}/webhooks", app.tenant);
    for bad in [
        json!({"url": "not a url"}),
        json!({"url": "ftp://x.example/"}),
        json!({"url": "https://x.example/", "events": ["user.exploded"]}),
        json!({"url": "https://x.example/", "events": []}),
    ] {
        let r = app.admin("POST", &base, Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
    let r = app.admin("POST",
        &base,
        Some(
            json!({"url": "https://hooks.example/in", "events": ["license.*", "user.provisioned"]}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert!(r.body["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = r.body["id"].as_str().unwrap().to_string();
    let list = app.admin("GET", &base, None).await;
    assert_eq!(list.body["webhooks"][0]["id"], json!(id));
    assert!(
        list.body["webhooks"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    // SCIM tokens cannot manage webhooks.
    let r = app
        .req("POST", &base, Some(json!({"url": "https://x.example/"})))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Vendor-wide endpoints: the same checks, their own 404s, none of them a tenant's.
    for bad in [
        json!({"url": "not a url"}),
        json!({"url": "https://x.example/", "events": ["user.exploded"]}),
        json!({"url": "https://x.example/", "tenant": "x"}),
    ] {
        let r = app
            .admin("POST", "/api/v1/webhooks", Some(bad.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
    let r = app
        .req(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": "https://x.example/"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a SCIM token cannot");
    for (method, path) in [
        ("GET", "/api/v1/webhooks/nope"),
        ("DELETE", "/api/v1/webhooks/nope"),
        ("GET", "/api/v1/webhooks/nope/deliveries"),
        ("POST", "/api/v1/webhooks/nope/deliveries/1/replay"),
        ("GET", &format!("/api/v1/webhooks/{id}")),
    ] {
        let r = app.admin(method, path, None).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.raw
        );
    }
    let r = app
        .admin(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": "https://vendor.example/in"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let vendor_hook = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["events"], json!(["*"]));
    let r = app
        .admin("GET", &format!("{base}/{vendor_hook}"), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "not the tenant's: {}",
        r.raw
    );
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/webhooks/{vendor_hook}/deliveries?state=lost"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    let r = app
        .admin("DELETE", &format!("/api/v1/webhooks/{vendor_hook}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    // The feed pages through a tenant's events with a cursor; the first is the test token's
    // creation.
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/events?tenant={}", app.tenant),
            None,
        )
        .await;
    assert_eq!(
        r.body["events"][0]["type"], "credential.created",
        "{}",
        r.raw
    );
    assert_eq!(
        r.body["events"][0]["data"]["credential"]["name"],
        "test-idp"
    );
    assert!(!r.raw.contains("skt_"), "no secret in the event: {}", r.raw);
    let start = r.body["next_cursor"].as_str().unwrap().to_string();
    for u in ["a1", "a2", "a3"] {
        app.user(u).await;
    }
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/events?tenant={}&limit=2&after={start}", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["events"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["events"][0]["type"], "user.provisioned");
    assert_eq!(r.body["events"][0]["data"]["user"]["userName"], "a1");
    assert_eq!(r.body["has_more"], true);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/events?tenant={}&after={cursor}", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1, "{}", r.raw);
    assert_eq!(r.body["events"][0]["data"]["user"]["userName"], "a3");
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/events?tenant={}&after=nonsense", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Without a tenant: every tenant's events in one feed, each naming its tenant, each
    // tenant's in its own order, every event once.
    let other =
        common::new_tenant(&app.store, std::sync::Arc::new(app.clock.clone()), "Other").await;
    let other_token = common::new_credential(
        &app.store,
        std::sync::Arc::new(app.clock.clone()),
        seatkeeper::Credential::Scim,
        &other.id,
        "other-idp",
    )
    .await
    .token;
    let r = app
        .req_as(
            &other_token,
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [common::USER], "userName": "b1"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let mut mine: Vec<(String, String, i64)> = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..100 {
        mine.clear();
        ids.clear();
        let mut after = String::new();
        loop {
            let r = app
                .admin(
                    "GET",
                    &format!("/api/v1/events?limit=1000&after={after}"),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
            for e in r.body["events"].as_array().unwrap() {
                assert!(
                    ids.insert(e["id"].as_str().unwrap().to_string()),
                    "{e} came twice"
                );
                let t = e["tenant"].as_str().unwrap().to_string();
                if t == app.tenant || t == other.id {
                    let id: i64 = e["id"].as_str().unwrap()[4..].parse().unwrap();
                    mine.push((t, e["type"].as_str().unwrap().to_string(), id));
                }
            }
            after = r.body["next_cursor"].as_str().unwrap().to_string();
            if r.body["has_more"] != true {
                break;
            }
        }
        // Wait out transactions of other tests still running (they hold the feed back).
        if mine
            .iter()
            .any(|(t, k, _)| *t == other.id && k == "user.provisioned")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let of = |t: &str| {
        mine.iter()
            .filter(|(x, _, _)| x == t)
            .map(|(_, _, id)| *id)
            .collect::<Vec<_>>()
    };
    assert!(of(&other.id).len() >= 2, "{mine:?}");
    assert!(of(&app.tenant).len() >= 4, "{mine:?}");
    for t in [&app.tenant, &other.id] {
        let ids = of(t);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{t}'s events out of order: {ids:?}"
        );
    }
    let r = app.admin("GET", "/api/v1/events?after=evt_1", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    // Another tenant's feed holds none of these.
    let other = common::new_tenant(&app.store, seatkeeper::system_clock(), "Other").await;
    let r = app
        .admin("GET", &format!("/api/v1/events?tenant={}", other.id), None)
        .await;
    assert_eq!(r.body["events"], json!([]), "{}", r.raw);
    // The endpoint received deliveries for the events it asked for, once fanned out.
    let hooks = app.store.active_webhooks().await.unwrap();
    let stamp = "2026-11-22T10:00:00.000000Z".to_string();
    let n = app
        .store
        .write(move |tx| {
            let mut n = 0;
            for (t, w) in &hooks {
                n += tx.fan_out(t, w, &stamp, 1000)?;
            }
            Ok::<_, seatkeeper::StoreError>(n)
        })
        .await
        .unwrap();
    assert!(n >= 3, "three user.provisioned at least, got {n}");
    let log = app
        .admin("GET", &format!("{base}/{id}/deliveries"), None)
        .await;
    let types: Vec<&str> = log.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_type"].as_str().unwrap())
        .collect();
    assert!(
        types
            .iter()
            .all(|t| *t == "user.provisioned" || t.starts_with("license.")),
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "user.provisioned").count(),
        3
    );
    let r = app.admin("DELETE", &format!("{base}/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.admin("GET", &format!("{base}/{id}"), None).await;
    assert!(r.body["disabled"].is_string(), "{}", r.raw);
}

async fn audit_get(app: &TestApp, q: &str) -> common::Resp {
    let uri = format!("/api/v1/tenants/{}/audit?{q}", app.tenant);
    app.admin("GET", &uri, None).await
}

async fn the_audit_trail_is_searchable_and_exportable(b: Backend) {
    let app = app(b).await;
    setup(&app, 1).await;
    for u in ["ann", "bob"] {
        app.user(u).await;
    }
    let r = app
        .req_h("POST", "/scim/v2/Users", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "cid"})),
            &[("x-request-id", "req-cid-1")])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let cid = r.body["id"].as_str().unwrap().to_string();
    let base = format!("/api/v1/tenants/{}/audit", app.tenant);
    // By action (exact and by prefix), actor, request and resource.
    let r = audit_get(&app, "action=user.create").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["records"].as_array().unwrap().len(), 3, "{}", r.raw);
    let r = audit_get(&app, "action=license.*").await;
    let actions: Vec<&str> = r.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "license.assigned",
            "license.waitlisted",
            "license.waitlisted"
        ],
        "{}",
        r.raw
    );
    let r = audit_get(&app, "request_id=req-cid-1").await;
    assert_eq!(
        r.body["records"].as_array().unwrap().len(),
        2,
        "the user and its license: {}",
        r.raw
    );
    let r = audit_get(&app, &format!("resource_type=User&resource_id={cid}")).await;
    assert_eq!(r.body["records"][0]["after"]["userName"], "cid");
    let r = audit_get(&app, "actor=test-idp&limit=2").await;
    assert_eq!(r.body["records"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["has_more"], true);
    let next = r.body["next_cursor"].as_str().unwrap().to_string();
    let r2 = audit_get(&app, &format!("actor=test-idp&limit=2&after={next}")).await;
    assert!(r2.body["records"][0]["seq"].as_i64() > r.body["records"][1]["seq"].as_i64());
    let r = audit_get(&app, "from=2026-11-22T09:00:00Z&to=2026-11-22T11:00:00Z").await;
    assert!(!r.body["records"].as_array().unwrap().is_empty());
    let r = audit_get(&app, "from=2027-01-01T00:00:00Z").await;
    assert_eq!(r.body["records"], json!([]));
    for bad in ["from=yesterday", "after=-4", "format=xml"] {
        let r = audit_get(&app, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
    // Exports: the whole selection as JSON Lines and as CSV.
    let r = audit_get(&app, "format=jsonl&action=user.create").await;
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = r
        .raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let r = audit_get(&app, "format=csv").await;
    let mut rows = r.raw.split("\r\n").filter(|l| !l.is_empty());
    assert!(rows.next().unwrap().starts_with("seq,at,actor,action"));
    let total = app
        .admin("GET", &format!("{base}?limit=1000"), None)
        .await
        .body["records"]
        .as_array()
        .unwrap()
        .len();
    // Documents hold commas and quotes: each record is one CSV row only if quoting works.
    let csv_rows = r
        .raw
        .split("\r\n")
        .filter(|row| {
            [",test-idp,", ",admin,", ",test,"]
                .iter()
                .any(|a| row.contains(a))
        })
        .count();
    assert_eq!(csv_rows, total, "{}", r.raw);
    // Another tenant's trail is not reachable through this one, nor with a SCIM token.
    let r = app.req("GET", &base, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// A subscription a billing event changed belongs to billing: `apply` and the admin API refuse
/// to change or remove it (409 naming the owner) unless forced, a dry run lists the conflict,
/// a model file that leaves it out keeps it, and a file of tenants alone (products already in
/// the catalogue) applies. PATCH merges like billing events do.
async fn billing_owns_its_subscriptions(b: Backend) {
    let app = app(b).await;
    setup(&app, 2).await;
    assert_eq!(subscription(&app).await["managed_by"], "apply");
    let ev = event(
        &app,
        "own-1",
        "subscription.updated",
        "2026-11-01T00:00:00Z",
        json!({"plan": "enterprise", "seats": 4}),
    );
    let r = post_event(&app, SECRET, &ev).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let sub = subscription(&app).await;
    assert_eq!(
        (
            sub["plan"].clone(),
            sub["seats"].clone(),
            sub["managed_by"].clone()
        ),
        (json!("enterprise"), json!(4), json!("billing:generic"))
    );
    // The model file still says pro × 2: applying it again is refused, and changes nothing.
    let model = |subs: Value, products: bool| {
        let mut m = json!({"tenants": [{"id": app.tenant, "subscriptions": subs, "rules": []}]});
        if products {
            m["products"] = json!([{"key": product(&app), "name": "Billed", "plans": [
                {"key": "free", "rank": 0, "features": ["read"]},
                {"key": "pro", "rank": 1, "features": ["read", "write"]},
                {"key": "enterprise", "rank": 2, "features": ["read", "write", "sso"]}]}]);
        }
        m
    };
    let pro2 = json!([{"product": product(&app), "plan": "pro", "seats": 2,
        "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z",
        "on_expiry": "downgrade:free", "enforcement": "hard"}]);
    let audit_before = audit_len(&app).await;
    let r = app
        .admin("PUT", "/api/v1/model", Some(model(pro2.clone(), true)))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.raw);
    assert_eq!(r.body["status"], "409");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("billing:generic"),
        "{}",
        r.raw
    );
    assert_eq!(
        subscription(&app).await["plan"],
        "enterprise",
        "nothing applied"
    );
    assert_eq!(audit_len(&app).await, audit_before, "nothing audited");
    // The dry run shows the conflict and what forcing would do.
    let r = app
        .admin(
            "PUT",
            "/api/v1/model?dry_run=true",
            Some(model(pro2.clone(), true)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        r.body["conflicts"].as_array().unwrap().len(),
        1,
        "{}",
        r.raw
    );
    assert!(
        r.body["changes"].to_string().contains("enterprise"),
        "{}",
        r.raw
    );
    // A file that leaves the subscription out keeps it; one of tenants alone applies.
    let r = app
        .admin("PUT", "/api/v1/model", Some(model(json!([]), false)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["conflicts"], json!([]));
    assert_eq!(subscription(&app).await["plan"], "enterprise", "kept");
    // The admin API: PUT, PATCH and DELETE are refused, and go through when forced.
    let path = format!(
        "/api/v1/tenants/{}/subscriptions/{}",
        app.tenant,
        product(&app)
    );
    let put = json!({"plan": "pro", "seats": 3, "starts_at": "2026-01-01T00:00:00Z"});
    for (method, body) in [
        ("PUT", Some(put.clone())),
        ("PATCH", Some(json!({"seats": 9}))),
        ("DELETE", None),
    ] {
        let r = app.admin(method, &path, body).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{method}: {}", r.raw);
    }
    let r = app
        .admin(
            "PATCH",
            &format!("{path}?force=true"),
            Some(json!({"seats": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let sub = subscription(&app).await;
    assert_eq!(
        (
            sub["plan"].clone(),
            sub["seats"].clone(),
            sub["ends_at"].clone(),
            sub["managed_by"].clone()
        ),
        (
            json!("enterprise"),
            json!(5),
            json!("2027-01-01T00:00:00.000000Z"),
            json!("billing:generic")
        ),
        "PATCH changed the seats alone; billing still manages it"
    );
    let r = app
        .admin(
            "PUT",
            "/api/v1/model?force=true",
            Some(model(pro2.clone(), false)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(subscription(&app).await["plan"], "pro", "forced");
    // An admin-managed one takes PATCH and PUT without force; PATCH of a missing one is 404.
    let r = app
        .admin("DELETE", &format!("{path}?force=true"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app.admin("PATCH", &path, Some(json!({"seats": 1}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    let r = app.admin("PUT", &path, Some(put)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(subscription(&app).await["managed_by"], "admin");
    let r = app
        .admin(
            "PATCH",
            &path,
            Some(json!({"seats": 6, "enforcement": "soft"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let sub = subscription(&app).await;
    assert_eq!(
        (
            sub["seats"].clone(),
            sub["enforcement"].clone(),
            sub["plan"].clone()
        ),
        (json!(6), json!("soft"), json!("pro"))
    );
    for bad in [json!([1]), json!({"seats": -1}), json!({"colour": "red"})] {
        let r = app.admin("PATCH", &path, Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
    let r = app
        .admin("PUT", &format!("{path}?force=maybe"), Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    // A file naming a product neither declared nor in the catalogue is refused.
    let r = app.admin("PUT", "/api/v1/model", Some(json!({"tenants": [{"id": app.tenant, "rules": [],
        "subscriptions": [{"product": "no-such-product", "plan": "pro", "seats": 1, "starts_at": "2026-01-01T00:00:00Z"}]}]}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
}

/// What an attacker's probe found in billing (issue 15): a far-future event could freeze a
/// subscription; a reversed term, or a malformed event older than the newest, was not
/// refused; `webhook-id` was not tied to the body's id; equal instants raced.
async fn billing_events_are_hardened(b: Backend) {
    let app = app(b).await;
    setup(&app, 5).await;
    // 1. Far in the future (beyond the signature tolerance of 300 s): 422, nothing applied,
    //    and the subscription still takes later events.
    let future = event(
        &app,
        "evt_future",
        "subscription.updated",
        "9999-12-31T23:59:59Z",
        json!({"seats": 50}),
    );
    let r = post_event(&app, SECRET, &future).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    assert!(r.raw.contains("future"), "{}", r.raw);
    assert_eq!(subscription(&app).await["seats"], 5);
    // Within the tolerance is fine (clocks drift).
    let soon = event(
        &app,
        "evt_soon",
        "subscription.updated",
        "2026-11-22T10:04:00Z",
        json!({"seats": 6}),
    );
    let r = post_event(&app, SECRET, &soon).await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);

    // 2. Merged terms ending before they start: 422, nothing revoked.
    let (outbox, audit) = (events(&app).await.len(), audit_len(&app).await);
    let reversed = event(
        &app,
        "evt_reversed",
        "subscription.renewed",
        "2026-11-22T10:04:30Z",
        json!({"ends_at": "2025-06-01T00:00:00Z"}),
    );
    let r = post_event(&app, SECRET, &reversed).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    assert!(r.raw.contains("ends_at"), "{}", r.raw);
    assert_eq!(
        subscription(&app).await["ends_at"],
        "2027-01-01T00:00:00.000000Z"
    );
    assert_eq!(
        events(&app).await.len(),
        outbox,
        "no event for a refused change"
    );
    assert_eq!(
        audit_len(&app).await,
        audit,
        "no audit for a refused change"
    );

    // 3. Malformed and older than the newest applied: still 422 (validation comes before
    //    the order check), and its id is not spent: corrected, it is processed.
    let bad_old = event(
        &app,
        "evt_bad_old",
        "subscription.updated",
        "2026-11-22T09:00:00Z",
        json!({"plan": "no-such-plan"}),
    );
    let r = post_event(&app, SECRET, &bad_old).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);
    let mut fixed = bad_old.clone();
    fixed["subscription"]["plan"] = json!("pro");
    let r = post_event(&app, SECRET, &fixed).await;
    assert_eq!(
        r.body["outcome"], "stale",
        "processed again, then found late: {}",
        r.raw
    );

    // 4. `webhook-id` is the event's id: a body naming another id is a 400; a redelivery
    //    under the same webhook-id is a duplicate; a body without an id takes the header's.
    let ev = event(
        &app,
        "evt_tied",
        "subscription.updated",
        "2026-11-22T10:04:40Z",
        json!({"seats": 7}),
    );
    let body = ev.to_string();
    let ts = now(&app);
    let sig = seatkeeper::standard_sign(SECRET, "msg_other", ts, body.as_bytes());
    let r = post_signed(&app, &ev, "msg_other", &ts.to_string(), &sig).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(r.raw.contains("webhook-id"), "{}", r.raw);
    assert_eq!(subscription(&app).await["seats"], 6);
    let mut anonymous = ev.clone();
    anonymous.as_object_mut().unwrap().remove("id");
    let id = format!("msg_anon-{}", product(&app));
    let body = anonymous.to_string();
    let sig = seatkeeper::standard_sign(SECRET, &id, ts, body.as_bytes());
    let r = post_signed(&app, &anonymous, &id, &ts.to_string(), &sig).await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    assert_eq!(r.body["event"], json!(id));
    let r = post_signed(&app, &anonymous, &id, &ts.to_string(), &sig).await;
    assert_eq!(r.body["outcome"], "duplicate", "{}", r.raw);

    // 5. Equal `created_at`: the greater event id wins, whatever the arrival order.
    let at = "2026-11-22T10:04:50Z";
    let a = event(
        &app,
        "evt_same_a",
        "subscription.updated",
        at,
        json!({"seats": 11}),
    );
    let z = event(
        &app,
        "evt_same_z",
        "subscription.updated",
        at,
        json!({"seats": 12}),
    );
    assert_eq!(
        post_event(&app, SECRET, &z).await.body["outcome"],
        "applied"
    );
    let r = post_event(&app, SECRET, &a).await;
    assert_eq!(r.body["outcome"], "stale", "{}", r.raw);
    assert_eq!(subscription(&app).await["seats"], 12);

    // 6. An admin change resets the order anchor: the next event applies even though the
    //    newest billing event (within the tolerance) is dated later.
    let ahead = event(
        &app,
        "evt_ahead",
        "subscription.updated",
        "2026-11-22T10:04:59Z",
        json!({"seats": 13}),
    );
    assert_eq!(
        post_event(&app, SECRET, &ahead).await.body["outcome"],
        "applied"
    );
    let path = format!(
        "/api/v1/tenants/{}/subscriptions/{}",
        app.tenant,
        product(&app)
    );
    let r = app
        .admin(
            "PATCH",
            &format!("{path}?force=true"),
            Some(json!({"seats": 20})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let after_admin = event(
        &app,
        "evt_after_admin",
        "subscription.updated",
        "2026-11-22T10:00:20Z",
        json!({"seats": 21}),
    );
    let r = post_event(&app, SECRET, &after_admin).await;
    assert_eq!(r.body["outcome"], "applied", "{}", r.raw);
    assert_eq!(subscription(&app).await["seats"], 21);
    // From there on, order holds again.
    let older = event(
        &app,
        "evt_older",
        "subscription.updated",
        "2026-11-22T10:00:10Z",
        json!({"seats": 2}),
    );
    let r = post_event(&app, SECRET, &older).await;
    assert_eq!(r.body["outcome"], "stale", "{}", r.raw);
}

both_backends!(
    billing_events_are_hardened,
    billing_owns_its_subscriptions,
    the_audit_trail_is_searchable_and_exportable,
    an_event_applies_exactly_once,
    late_events_are_recorded_and_ignored,
    a_failing_event_applies_nothing,
    signatures_are_required,
    lifecycle_events,
    stripe_events,
    webhooks_and_the_feed,
);
