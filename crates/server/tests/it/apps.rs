//! The application API on SQLite and PostgreSQL: app keys, checks answered from the
//! snapshot (a deprovisioned user is denied on the very next call), signed entitlement
//! tokens verified with a standard JWT library from the JWKS alone, and activity.

use crate::common;

use axum::http::StatusCode;
use common::{ADMIN, Backend, TestApp};
use serde_json::{Value, json};

fn product(app: &TestApp) -> String {
    format!("ap-{}", &app.tenant[app.tenant.len() - 12..])
}

/// Two seats of `pro` for the tenant; everyone active gets it.
async fn setup(app: &TestApp) -> String {
    let m = json!({
        "products": [{
            "key": product(app), "name": "Workspace",
            "plans": [
                {"key": "free", "rank": 0, "features": ["docs.read"], "limits": {"projects": 3}},
                {"key": "pro", "rank": 1, "features": ["docs.read", "export"], "limits": {"projects": 100}},
            ],
        }],
        "tenants": [{"id": app.tenant, "subscriptions": [{
            "product": product(app), "plan": "pro", "seats": 2,
            "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard",
        }]}],
    });
    let r = app.admin("PUT", "/api/v1/model", Some(m)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/tenants/{}/app-keys", app.tenant),
            Some(json!({"name": "billing-app"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let key = r.body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("skp_"));
    key
}

async fn check(app: &TestApp, key: &str, body: Value) -> Value {
    let r = app
        .req_as(key, "POST", "/api/v1/check", Some(body), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r.body
}

async fn checks_follow_the_directory(b: Backend) {
    let app = common::app(b).await;
    let key = setup(&app).await;
    let alice = app.user("alice@example.com").await;
    let _bob = app.user("bob@example.com").await;
    let _carol = app.user("carol@example.com").await;

    // Named by id, userName (any case) or externalId: the same answer.
    let a = check(&app, &key, json!({"user": alice, "feature": "export"})).await;
    assert_eq!(a["allowed"], true, "{a}");
    assert_eq!(a["plan"], "pro");
    assert_eq!(a["reason"], "plan pro grants feature export");
    let a = check(
        &app,
        &key,
        json!({"user": "ALICE@example.com", "feature": "export"}),
    )
    .await;
    assert_eq!(a["allowed"], true, "{a}");
    let a = check(&app, &key, json!({"user": alice, "limit": "projects"})).await;
    assert_eq!(
        (a["allowed"].clone(), a["value"].clone()),
        (json!(true), json!(100))
    );
    let a = check(&app, &key, json!({"user": alice, "feature": "sso"})).await;
    assert_eq!(a["reason"], "plan pro lacks feature sso");
    // Two seats: carol waits.
    let a = check(
        &app,
        &key,
        json!({"user": "carol@example.com", "feature": "export"}),
    )
    .await;
    assert_eq!(
        (a["allowed"].clone(), a["reason"].clone()),
        (json!(false), json!("waitlisted: seat limit reached"))
    );

    // Deactivating alice: denied on the very next call; carol gets the seat at once.
    app.set_active(&alice, false).await;
    let a = check(&app, &key, json!({"user": alice, "feature": "export"})).await;
    assert_eq!(
        (a["allowed"].clone(), a["reason"].clone()),
        (json!(false), json!("user inactive"))
    );
    let a = check(
        &app,
        &key,
        json!({"user": "carol@example.com", "feature": "export"}),
    )
    .await;
    assert_eq!(a["allowed"], true, "{a}");
    // A user created after the snapshot loaded is known at once.
    let dave = app.user("dave@example.com").await;
    let a = check(&app, &key, json!({"user": dave, "feature": "docs.read"})).await;
    assert_eq!(a["reason"], "waitlisted: seat limit reached");
    // Deleted: unknown.
    let r = app
        .req("DELETE", &format!("/scim/v2/Users/{dave}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let a = check(&app, &key, json!({"user": dave, "feature": "docs.read"})).await;
    assert_eq!(a["reason"], "unknown user");

    // A batch.
    let r = check(
        &app,
        &key,
        json!({"checks": [
            {"user": "bob@example.com", "feature": "export"},
            {"user": "nobody", "feature": "export"},
            {"user": "carol@example.com", "limit": "projects"},
        ]}),
    )
    .await;
    let results: Vec<(Value, Value)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["allowed"].clone(), x["reason"].clone()))
        .collect();
    assert_eq!(
        results,
        [
            (json!(true), json!("plan pro grants feature export")),
            (json!(false), json!("unknown user")),
            (json!(true), json!("plan pro sets limit projects to 100")),
        ]
    );

    // The whole set.
    let r = app
        .req_as(
            &key,
            "GET",
            "/api/v1/users/bob@example.com/entitlements",
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["features"], json!(["docs.read", "export"]));
    assert_eq!(r.body["limits"], json!({"projects": 100}));

    // Bad input: clear 400s, never a 500.
    for bad in [
        json!({"user": alice}),
        json!({"user": alice, "feature": "a", "limit": "b"}),
        json!({"feature": "export"}),
        json!({"user": 7, "feature": "export"}),
        json!({"checks": []}),
        json!({"checks": [{"user": "x"}]}),
        json!([1, 2]),
    ] {
        let r = app
            .req_as(&key, "POST", "/api/v1/check", Some(bad.clone()), &[])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
        assert_eq!(r.body["scimType"], "invalidValue", "{bad}");
    }
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"user": "x", "feature": "y"}))
        .collect();
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({ "checks": many })),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Activity: the users asked about are written in a batch.
    let mut seen = None;
    for _ in 0..200 {
        seen = app.store.last_seen(&app.tenant, &alice).await.unwrap();
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen.is_some(), "alice's last_seen was never written");
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/users/{alice}/licenses", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.body["last_seen"], json!(seen));
}

async fn credentials_stay_in_their_lane(b: Backend) {
    let app = common::app(b).await;
    let key = setup(&app).await;
    let alice = app.user("alice@example.com").await;
    // App keys reach neither SCIM nor admin routes.
    for (method, uri) in [
        ("GET", "/scim/v2/Users".to_string()),
        ("GET", format!("/api/v1/tenants/{}/usage", app.tenant)),
        ("GET", format!("/api/v1/tenants/{}/app-keys", app.tenant)),
    ] {
        let r = app.req_as(&key, method, &uri, None, &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    // SCIM tokens and the admin token do not reach checks.
    for token in [app.token.as_str(), ADMIN] {
        let r = app
            .req_as(
                token,
                "POST",
                "/api/v1/check",
                Some(json!({"user": alice, "feature": "export"})),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Another tenant's key: the same words as for nobody.
    let other = common::new_tenant(&app.store, seatkeeper::system_clock(), "Other").await;
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/tenants/{}/app-keys", other.id),
            Some(json!({"name": "x"})),
        )
        .await;
    let other_key = r.body["key"].as_str().unwrap().to_string();
    let a = check(
        &app,
        &other_key,
        json!({"user": alice, "feature": "export"}),
    )
    .await;
    assert_eq!(a["reason"], "unknown user");
    let a = check(
        &app,
        &other_key,
        json!({"user": "alice@example.com", "feature": "export"}),
    )
    .await;
    assert_eq!(a["reason"], "unknown user");
    let r = app
        .req_as(
            &other_key,
            "GET",
            &format!("/api/v1/users/{alice}/entitlements"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A revoked key stops working.
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/app-keys", app.tenant),
            None,
        )
        .await;
    let id = r.body["app_keys"][0]["id"].as_str().unwrap().to_string();
    let r = app
        .admin(
            "DELETE",
            &format!("/api/v1/tenants/{}/app-keys/{id}", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({"user": alice, "feature": "export"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn issue(app: &TestApp, key: &str) -> String {
    let r = app
        .req_as(
            key,
            "POST",
            "/api/v1/tokens/entitlements",
            Some(json!({"user": "alice@example.com"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r.body["token"].as_str().unwrap().to_string()
}

async fn jwks(app: &TestApp) -> Value {
    let r = app
        .req_as("", "GET", "/.well-known/jwks.json", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r.body
}

fn verify(token: &str, jwks: &Value) -> Result<Value, String> {
    seatkeeper::crypto::install();
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap_or_default())
        .ok_or("no published key with this kid")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.leeway = 0;
    v.set_issuer(&["seatkeeper"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

async fn tokens_verify_from_the_jwks_alone(b: Backend) {
    let app = common::app(b).await;
    let key = setup(&app).await;
    let alice = app.user("alice@example.com").await;
    // The test clock is days behind the wall clock that JWT libraries use: a token issued
    // now by it has already expired.
    let stale = issue(&app, &key).await;
    let err = verify(&stale, &jwks(&app).await).unwrap_err();
    assert!(err.contains("Expired"), "{err}");
    // Bring the clock to the wall clock: the token verifies and carries the entitlements.
    let lag = seatkeeper::system_clock().now() - seatkeeper::Clock::now(&app.clock);
    app.clock.advance(lag);
    let token = issue(&app, &key).await;
    let claims = verify(&token, &jwks(&app).await).unwrap();
    assert_eq!(claims["sub"], json!(alice));
    assert_eq!(claims["tenant"], json!(app.tenant));
    assert_eq!(claims["plans"][product(&app)], "pro");
    assert_eq!(claims["features"], json!(["docs.read", "export"]));
    assert_eq!(claims["limits"]["projects"], 100);
    // Tampered: rejected.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert!(verify(&parts.join("."), &jwks(&app).await).is_err());
    // Rotation: the old key stays published until its tokens expire, then leaves.
    let r = app.admin("POST", "/api/v1/signing-keys/rotate", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert!(verify(&token, &jwks(&app).await).is_ok());
    let fresh = issue(&app, &key).await;
    assert_ne!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid,
        jsonwebtoken::decode_header(&token).unwrap().kid
    );
    app.clock.advance(time::Duration::hours(1));
    let set = jwks(&app).await;
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        verify(&token, &set).unwrap_err(),
        "no published key with this kid"
    );
}

async fn app_calls_are_rate_limited_per_tenant(b: Backend) {
    let app = common::app_with(
        b,
        seatkeeper::Config {
            rate_per_second: 100_000,
            rate_burst: 100_000,
            app_rate_per_second: 1,
            app_rate_burst: 2,
            ..Default::default()
        },
    )
    .await;
    let key = setup(&app).await;
    let ask = json!({"user": "nobody", "feature": "export"});
    for _ in 0..2 {
        let r = app
            .req_as(&key, "POST", "/api/v1/check", Some(ask.clone()), &[])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    }
    let r = app
        .req_as(&key, "POST", "/api/v1/check", Some(ask), &[])
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.raw);
    assert!(r.headers.get("retry-after").is_some());
    // SCIM has its own limiter: the identity provider is not slowed by the applications.
    let r = app.req("GET", "/scim/v2/Users?count=1", None).await;
    assert_eq!(r.status, StatusCode::OK);
}

both_backends!(
    app_calls_are_rate_limited_per_tenant,
    checks_follow_the_directory,
    credentials_stay_in_their_lane,
    tokens_verify_from_the_jwks_alone,
);
