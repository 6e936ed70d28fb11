//! Who may do what: scoped admin keys (scopes, one tenant's confinement, no escalation,
//! revocation, the audit trail), on SQLite and PostgreSQL.

use std::sync::Arc;

use crate::common;

use axum::http::StatusCode;
use common::{Backend, TestApp};
use serde_json::{Value, json};

async fn new_key(app: &TestApp, as_token: &str, body: Value) -> common::Resp {
    app.req_as(as_token, "POST", "/api/v1/admin-keys", Some(body), &[])
        .await
}

async fn admin_keys_are_scoped_and_confined(b: Backend) {
    let app = common::app(b).await;
    let other = common::new_tenant(&app.store, Arc::new(app.clock.clone()), "Other").await;
    let t = app.tenant.clone();

    // Bad input: unknown scope, no scope, unknown tenant.
    let r = new_key(&app, common::ADMIN, json!({"name": "x", "scopes": ["tenants:admin"]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert_eq!(r.body["scimType"], "invalidValue");
    assert!(r.raw.contains("tenants:admin"), "{}", r.raw);
    let r = new_key(&app, common::ADMIN, json!({"name": "x", "scopes": []})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    let r = new_key(
        &app,
        common::ADMIN,
        json!({"name": "x", "scopes": ["tenants:read"], "tenant": "nope"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);

    // A vendor-wide read-only key.
    let r = new_key(
        &app,
        common::ADMIN,
        json!({"name": "auditor", "scopes": ["tenants:read", "audit:read"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let reader = r.body["token"].as_str().unwrap().to_string();
    assert!(reader.starts_with("ska_"));
    assert_eq!(r.body["scopes"], json!(["tenants:read", "audit:read"]));
    assert_eq!(r.body["tenant"], Value::Null);

    let r = app.req_as(&reader, "GET", "/api/v1/tenants", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .req_as(&reader, "GET", &format!("/api/v1/tenants/{}/usage", other.id), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .req_as(&reader, "POST", "/api/v1/tenants", Some(json!({"name": "n"})), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("tenants:write"), "{}", r.raw);
    let r = app
        .req_as(&reader, "PUT", "/api/v1/model", Some(json!({"products": []})), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("model:write"), "{}", r.raw);
    let r = app
        .req_as(&reader, "GET", "/api/v1/events", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("events:read"), "{}", r.raw);
    let r = app
        .req_as(&reader, "GET", &format!("/api/v1/tenants/{t}/audit"), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    // Nor can it mint itself more power.
    let r = new_key(&app, &reader, json!({"name": "x", "scopes": ["tenants:read"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("credentials:write"), "{}", r.raw);

    // A key holding credentials:write may create keys only within its own scopes.
    let r = new_key(
        &app,
        common::ADMIN,
        json!({"name": "minter", "scopes": ["credentials:write", "tenants:read"]}),
    )
    .await;
    let minter = r.body["token"].as_str().unwrap().to_string();
    let r = new_key(&app, &minter, json!({"name": "x", "scopes": ["tenants:write"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("own scopes"), "{}", r.raw);

    // A key confined to one tenant.
    let r = new_key(
        &app,
        &minter,
        json!({"name": "acme-it", "scopes": ["tenants:read", "credentials:write"], "tenant": t}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert_eq!(r.body["tenant"], json!(t));
    let scoped = r.body["token"].as_str().unwrap().to_string();
    let r = app
        .req_as(&scoped, "GET", &format!("/api/v1/tenants/{t}/usage"), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .req_as(&scoped, "GET", &format!("/api/v1/tenants/{}/usage", other.id), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    let r = app
        .req_as(&scoped, "GET", &format!("/api/v1/tenants/{}", other.id), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    for (method, path) in [
        ("GET", "/api/v1/tenants"),
        ("GET", "/api/v1/usage"),
        ("GET", "/api/v1/reports/compliance"),
        ("GET", "/api/v1/admin-keys"),
    ] {
        let r = app.req_as(&scoped, method, path, None, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.raw);
        assert!(r.raw.contains("confined"), "{}", r.raw);
    }
    let r = app
        .req_as(
            &scoped,
            "POST",
            &format!("/api/v1/tenants/{t}/scim-tokens"),
            Some(json!({"name": "entra"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let r = app
        .req_as(
            &scoped,
            "PUT",
            &format!("/api/v1/tenants/{t}/settings"),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("tenants:write"), "{}", r.raw);

    // The audit trail names the key.
    let r = app
        .admin("GET", &format!("/api/v1/tenants/{t}/audit?action=credential.create"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert!(r.raw.contains("admin-key:acme-it"), "{}", r.raw);
    let r = app.admin("GET", "/api/v1/audit?action=admin_key.create", None).await;
    assert!(r.raw.contains("admin-key:minter"), "{}", r.raw);

    // Listed without secrets; revoked, it stops working at once.
    let r = app.admin("GET", "/api/v1/admin-keys", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let keys = r.body["admin_keys"].as_array().unwrap();
    for name in ["auditor", "minter", "acme-it"] {
        assert!(keys.iter().any(|k| k["name"] == name), "{}", r.raw);
    }
    assert!(!r.raw.contains(&scoped) && !r.raw.contains("token_hash"));
    let id = keys.iter().find(|k| k["name"] == "acme-it").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.admin("DELETE", &format!("/api/v1/admin-keys/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    let r = app.admin("DELETE", &format!("/api/v1/admin-keys/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    let r = app
        .req_as(&scoped, "GET", &format!("/api/v1/tenants/{t}/usage"), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    // An admin key is no SCIM token, and a SCIM token no admin key.
    let r = app.req_as(&reader, "GET", "/scim/v2/Users", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    let r = app
        .req_as(&app.token, "GET", "/api/v1/tenants", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
}

both_backends!(admin_keys_are_scoped_and_confined);
