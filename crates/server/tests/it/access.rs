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
    let r = new_key(
        &app,
        common::ADMIN,
        json!({"name": "x", "scopes": ["tenants:admin"]}),
    )
    .await;
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

    let r = app
        .req_as(&reader, "GET", "/api/v1/tenants", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .req_as(
            &reader,
            "GET",
            &format!("/api/v1/tenants/{}/usage", other.id),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .req_as(
            &reader,
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "n"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("tenants:write"), "{}", r.raw);
    let r = app
        .req_as(
            &reader,
            "PUT",
            "/api/v1/model",
            Some(json!({"products": []})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("model:write"), "{}", r.raw);
    let r = app
        .req_as(&reader, "GET", "/api/v1/events", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.raw.contains("events:read"), "{}", r.raw);
    let r = app
        .req_as(
            &reader,
            "GET",
            &format!("/api/v1/tenants/{t}/audit"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    // Nor can it mint itself more power.
    let r = new_key(
        &app,
        &reader,
        json!({"name": "x", "scopes": ["tenants:read"]}),
    )
    .await;
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
    let r = new_key(
        &app,
        &minter,
        json!({"name": "x", "scopes": ["tenants:write"]}),
    )
    .await;
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
        .req_as(
            &scoped,
            "GET",
            &format!("/api/v1/tenants/{t}/usage"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .req_as(
            &scoped,
            "GET",
            &format!("/api/v1/tenants/{}/usage", other.id),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    let r = app
        .req_as(
            &scoped,
            "GET",
            &format!("/api/v1/tenants/{}", other.id),
            None,
            &[],
        )
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
        .admin(
            "GET",
            &format!("/api/v1/tenants/{t}/audit?action=credential.create"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert!(r.raw.contains("admin-key:acme-it"), "{}", r.raw);
    let r = app
        .admin("GET", "/api/v1/audit?action=admin_key.create", None)
        .await;
    assert!(r.raw.contains("admin-key:minter"), "{}", r.raw);

    // Listed without secrets; revoked, it stops working at once.
    let r = app.admin("GET", "/api/v1/admin-keys", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let keys = r.body["admin_keys"].as_array().unwrap();
    for name in ["auditor", "minter", "acme-it"] {
        assert!(keys.iter().any(|k| k["name"] == name), "{}", r.raw);
    }
    assert!(!r.raw.contains(&scoped) && !r.raw.contains("token_hash"));
    let id = keys
        .iter()
        .find(|k| k["name"] == "acme-it" && k["tenant"] == json!(t))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .admin("DELETE", &format!("/api/v1/admin-keys/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    let r = app
        .admin("DELETE", &format!("/api/v1/admin-keys/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    let r = app
        .req_as(
            &scoped,
            "GET",
            &format!("/api/v1/tenants/{t}/usage"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    // An admin key is no SCIM token, and a SCIM token no admin key.
    let r = app
        .req_as(&reader, "GET", "/scim/v2/Users", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    let r = app
        .req_as(&app.token, "GET", "/api/v1/tenants", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
}

both_backends!(admin_keys_are_scoped_and_confined);

fn group(name: &str, members: &[&str]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    json!({"schemas": [common::GROUP], "displayName": name, "members": members})
}

async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/events?limit=1000", app.tenant),
            None,
        )
        .await;
    r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

async fn permit(app: &TestApp, key: &str, user: &str, permission: &str) -> Value {
    let r = app
        .req_as(
            key,
            "POST",
            "/api/v1/check",
            Some(json!({"user": user, "permission": permission})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r.body
}

async fn roles_cascade_into_permissions(b: Backend) {
    let app = common::app(b).await;
    let t = app.tenant.clone();
    let product = format!("rp-{}", &t[t.len() - 12..]);
    let model = json!({
        "products": [{
            "key": product, "name": "Workspace",
            "plans": [{"key": "pro", "rank": 1, "features": ["export"]}],
            "roles": [
                {"key": "admin", "permissions": ["billing.manage", "users.invite"]},
                {"key": "viewer", "permissions": ["docs.read"], "requires_license": false},
            ],
        }],
        "tenants": [{"id": t,
            "subscriptions": [{"product": product, "plan": "pro", "seats": 1,
                "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}],
            "role_rules": [
                {"name": "it-admins", "filter": "groups.display eq \"IT Admins\"", "product": product, "role": "admin"},
                {"name": "everyone", "filter": "active eq true", "product": product, "role": "viewer"},
            ],
        }],
    });
    let r = app.admin("PUT", "/api/v1/model", Some(model)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app.admin("GET", "/api/v1/model", None).await;
    assert!(r.raw.contains("billing.manage"), "{}", r.raw);
    let r = app
        .admin("GET", &format!("/api/v1/tenants/{t}/role-rules"), None)
        .await;
    assert_eq!(
        r.body["role_rules"].as_array().unwrap().len(),
        2,
        "{}",
        r.raw
    );

    let key = app
        .admin(
            "POST",
            &format!("/api/v1/tenants/{t}/app-keys"),
            Some(json!({"name": "app"})),
        )
        .await
        .body["key"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let it = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(group("IT Admins", &[&alice])),
        )
        .await;
    assert_eq!(it.status, StatusCode::CREATED, "{}", it.raw);
    let it = it.body["id"].as_str().unwrap().to_string();

    // Alice: in IT Admins, holding the one seat.
    let a = permit(&app, &key, "alice@example.com", "billing.manage").await;
    assert_eq!(a["allowed"], true, "{a}");
    assert_eq!(
        a["reason"],
        "role admin (rule it-admins) grants billing.manage"
    );
    assert_eq!(a["roles"], json!(["admin", "viewer"]));
    // Bob: a viewer (no license needed) and nothing more.
    let a = permit(&app, &key, &bob, "docs.read").await;
    assert_eq!(a["allowed"], true, "{a}");
    let a = permit(&app, &key, &bob, "billing.manage").await;
    assert_eq!(a["allowed"], false, "{a}");
    assert_eq!(a["reason"], "role viewer lacks permission billing.manage");

    // Bob joins IT Admins: given admin, but it counts only with a seat (he waits for one).
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{it}"),
            Some(json!({"schemas": [common::PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": bob}]}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let a = permit(&app, &key, &bob, "billing.manage").await;
    assert_eq!(a["allowed"], false, "{a}");
    assert_eq!(
        a["reason"],
        format!(
            "role admin (rule it-admins) grants billing.manage but requires an active {product} license"
        )
    );

    // A batch mixes feature, limit and permission checks.
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({"checks": [
                {"user": alice, "feature": "export"},
                {"user": alice, "permission": "users.invite"},
                {"user": bob, "permission": "users.invite"},
                {"user": "nobody", "permission": "users.invite"},
            ]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results[0]["allowed"], true);
    assert_eq!(results[0]["plan"], "pro");
    assert_eq!(results[1]["allowed"], true);
    assert_eq!(results[2]["allowed"], false);
    assert_eq!(results[3]["reason"], "unknown user");
    // Exactly one of feature, limit or permission.
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({"user": alice, "feature": "export", "permission": "x"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);

    // Entitlements and the token carry roles and permissions.
    let r = app
        .req_as(
            &key,
            "GET",
            &format!("/api/v1/users/{alice}/entitlements"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.body["roles"], json!(["admin", "viewer"]), "{}", r.raw);
    assert_eq!(
        r.body["permissions"],
        json!(["billing.manage", "docs.read", "users.invite"])
    );
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/tokens/entitlements",
            Some(json!({"user": alice})),
            &[],
        )
        .await;
    let token = r.body["token"].as_str().unwrap();
    let claims = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["roles"], json!(["admin", "viewer"]));
    assert!(
        claims["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("billing.manage"))
    );

    // The explanation names the rules that matched.
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{t}/users/{bob}/licenses"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let roles = r.body["roles"].as_array().unwrap();
    let admin = roles.iter().find(|r| r["role"] == "admin").unwrap();
    assert_eq!(admin["matched"][0]["rule"], "it-admins");
    assert_eq!(admin["counts"], false);

    // Alice leaves the group: the role goes, audited and announced.
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{it}"),
            Some(json!({"schemas": [common::PATCH], "Operations": [{"op": "remove", "path": format!("members[value eq \"{alice}\"]")}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let a = permit(&app, &key, &alice, "billing.manage").await;
    assert_eq!(a["allowed"], false, "{a}");
    let granted = events_of(&app, "role.granted").await;
    assert!(granted.len() >= 3, "{granted:?}");
    let revoked = events_of(&app, "role.revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["data"]["user"], json!(alice));
    assert_eq!(revoked[0]["data"]["role"], "admin");
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{t}/audit?action=role.revoked"),
            None,
        )
        .await;
    assert!(r.raw.contains(&alice), "{}", r.raw);

    // Deactivated: no role counts.
    app.set_active(&bob, false).await;
    let a = permit(&app, &key, &bob, "docs.read").await;
    assert_eq!(a["reason"], "user inactive");

    // SCIM roles as the source.
    let r = app
        .admin(
            "PUT",
            &format!("/api/v1/tenants/{t}/settings"),
            Some(json!({"role_source": "scim"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["role_source"], "scim");
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(
                json!({"schemas": [common::USER], "userName": "carol@example.com",
                "roles": [{"value": format!("{product}:viewer")}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let a = permit(&app, &key, "carol@example.com", "docs.read").await;
    assert_eq!(a["allowed"], true, "{a}");
    assert_eq!(a["reason"], "role viewer (SCIM roles) grants docs.read");
    // The rules no longer give anything: alice (licensed, in no group now) is no viewer.
    let a = permit(&app, &key, &alice, "docs.read").await;
    assert_eq!(a["allowed"], false, "{a}");

    // Role rules through their own endpoint: bad input refused, nothing written.
    let path = format!("/api/v1/tenants/{t}/role-rules/owners");
    let r = app
        .admin(
            "PUT",
            &path,
            Some(json!({"filter": "userName eq", "product": product, "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert_eq!(r.body["scimType"], "invalidFilter");
    let r = app
        .admin(
            "PUT",
            &path,
            Some(json!({"filter": "active eq true", "product": product, "role": "owner"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(r.raw.contains("no role owner"), "{}", r.raw);
    let r = app
        .admin(
            "PUT",
            &path,
            Some(json!({"filter": "userName sw \"carol\"", "product": product, "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .admin(
            "PUT",
            &format!("/api/v1/tenants/{t}/settings"),
            Some(json!({"role_source": "both"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let a = permit(&app, &key, "carol@example.com", "users.invite").await;
    assert_eq!(
        a["roles"],
        json!(["viewer"]),
        "carol holds no seat: admin does not count"
    );
    let r = app.admin("DELETE", &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    let r = app.admin("DELETE", &path, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
}

both_backends!(roles_cascade_into_permissions);
