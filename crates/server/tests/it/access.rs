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

    let key = app.app_key(&t).await;
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
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
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
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
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

    // Nested groups: a member of Platform, a group inside IT Admins, is given admin too.
    let dana = app.user("dana@example.com").await;
    let platform = app
        .req("POST", "/scim/v2/Groups", Some(group("Platform", &[&dana])))
        .await;
    let platform = platform.body["id"].as_str().unwrap().to_string();
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{it}"),
            Some(json!({"schemas": [common::PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": platform, "type": "Group"}]}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    // (She waits for a seat, so the role is given but not in force.)
    let a = permit(&app, &key, &dana, "billing.manage").await;
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .starts_with("role admin (rule it-admins) grants billing.manage but requires"),
        "{a}"
    );

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

async fn sign_in(app: &TestApp, key: &str, token: &str, nonce: Option<&str>) -> common::Resp {
    let mut body = json!({"id_token": token});
    if let Some(n) = nonce {
        body["nonce"] = json!(n);
    }
    app.req_as(key, "POST", "/api/v1/sso/login", Some(body), &[])
        .await
}

fn refused(r: &common::Resp, reason: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    assert_eq!(r.body["reason"], reason, "{}", r.raw);
    assert_eq!(r.body["status"], "401", "{}", r.raw);
}

async fn oidc_sign_in_provisions_just_in_time(b: Backend) {
    use crate::oidc::{Issuer, KeyPair};
    use jsonwebtoken::Algorithm;
    use seatkeeper::Clock;
    let app = common::app(b).await;
    let t = app.tenant.clone();
    let issuer = Issuer::start(app.clock.now().unix_timestamp()).await;
    let now = || issuer.now;
    let rsa = KeyPair::new(Algorithm::RS256);
    let ec = KeyPair::new(Algorithm::ES256);
    let ed = KeyPair::new(Algorithm::EdDSA);
    for k in [&rsa, &ec, &ed] {
        issuer.publish(k);
    }
    let product = format!("sp-{}", &t[t.len() - 12..]);
    let model = json!({
        "products": [{"key": product, "plans": [{"key": "pro", "rank": 1, "features": ["export"]}],
            "roles": [{"key": "admin", "permissions": ["billing.manage"]}]}],
        "tenants": [{"id": t,
            "subscriptions": [{"product": product, "plan": "pro", "seats": 2,
                "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}],
            "role_rules": [{"name": "it", "filter": "groups.display eq \"IT Admins\"", "product": product, "role": "admin"}]}],
    });
    let r = app.admin("PUT", "/api/v1/model", Some(model)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let key = app.app_key(&t).await;
    let sso = format!("/api/v1/tenants/{t}/sso");

    // Before a connection: no issuer is known.
    let token = rsa.sign(&issuer.claims("u-1", "alice@example.com", json!({})));
    refused(&sign_in(&app, &key, &token, None).await, "unknown_issuer");

    // Bad connections are refused whole.
    for bad in [
        json!({"issuer": "ftp://x", "audiences": ["client-1"]}),
        json!({"issuer": "http://idp.example.com", "audiences": ["client-1"]}),
        json!({"issuer": issuer.url, "audiences": []}),
        json!({"issuer": issuer.url, "audiences": ["client-1"], "provisioning": "sometimes"}),
        json!({"issuer": issuer.url, "audiences": ["client-1"], "claims": {"userName": ""}}),
        json!({"issuer": issuer.url, "audiences": ["client-1"], "colour": "blue"}),
    ] {
        let r = app.admin("PUT", &sso, Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
        assert_eq!(r.body["scimType"], "invalidValue", "{}", r.raw);
    }
    assert_eq!(
        app.admin("GET", &sso, None).await.status,
        StatusCode::NOT_FOUND
    );
    // jwks_uri discovered from the issuer.
    let conn = json!({"issuer": issuer.url, "audiences": ["client-1"],
        "claims": {"groups": "groups"}, "provisioning": "jit"});
    let r = app.admin("PUT", &sso, Some(conn)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["claims"]["userName"], "email");

    // First sign-in: alice is created, licensed and given her role from the groups claim.
    let nonce = "n-0S6_WzA2Mj";
    let claims = issuer.claims(
        "u-1",
        "alice@example.com",
        json!({"given_name": "Alice", "family_name": "Liddell", "groups": ["IT Admins"], "nonce": nonce}),
    );
    let r = sign_in(&app, &key, &rsa.sign(&claims), Some(nonce)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["user"]["created"], true);
    assert_eq!(r.body["user"]["userName"], "alice@example.com");
    assert_eq!(r.body["licenses"][0]["state"], "active", "{}", r.raw);
    assert_eq!(r.body["features"], json!(["export"]));
    assert_eq!(r.body["roles"], json!(["admin"]), "{}", r.raw);
    assert_eq!(r.body["permissions"], json!(["billing.manage"]));
    assert!(r.body["token"].as_str().unwrap().split('.').count() == 3);
    let alice = r.body["user"]["id"].as_str().unwrap().to_string();
    let u = app
        .req("GET", &format!("/scim/v2/Users/{alice}"), None)
        .await;
    assert_eq!(u.body["externalId"], "u-1", "{}", u.raw);
    assert_eq!(u.body["name"]["givenName"], "Alice");
    assert_eq!(u.body["groups"][0]["display"], "IT Admins", "{}", u.raw);
    // The created user and group are audited with the SSO actor.
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{t}/audit?actor=sso:{t}"),
            None,
        )
        .await;
    assert!(
        r.raw.contains("Group") && r.raw.contains(&alice),
        "{}",
        r.raw
    );

    // Again, with an ES256 key: the same user, counted, nothing rewritten.
    let updates_before = events_of(&app, "user.updated").await.len();
    let claims = issuer.claims(
        "u-1",
        "alice@example.com",
        json!({"given_name": "Alice", "family_name": "Liddell", "groups": ["IT Admins"]}),
    );
    let r = sign_in(&app, &key, &ec.sign(&claims), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["user"]["created"], false);
    assert_eq!(r.body["user"]["logins"], 2);
    assert_eq!(r.body["user"]["id"], json!(alice));
    assert_eq!(events_of(&app, "user.updated").await.len(), updates_before);
    assert_eq!(events_of(&app, "user.login").await.len(), 2);
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{t}/users/{alice}/licenses"),
            None,
        )
        .await;
    assert_eq!(r.body["sign_ins"]["count"], 2, "{}", r.raw);
    assert!(r.body["last_seen"].is_string(), "{}", r.raw);

    // EdDSA; bob takes the second seat; carol waits for one.
    let r = sign_in(
        &app,
        &key,
        &ed.sign(&issuer.claims("u-2", "bob@example.com", json!({}))),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["licenses"][0]["state"], "active");
    let r = sign_in(
        &app,
        &key,
        &ed.sign(&issuer.claims("u-3", "carol@example.com", json!({}))),
        None,
    )
    .await;
    assert_eq!(r.body["licenses"][0]["state"], "waitlisted", "{}", r.raw);

    // Refusals, each with its reason.
    let expired = issuer.claims("u-1", "alice@example.com", json!({"exp": now() - 120}));
    refused(
        &sign_in(&app, &key, &rsa.sign(&expired), None).await,
        "expired",
    );
    let skewed = issuer.claims("u-1", "alice@example.com", json!({"exp": now() - 30}));
    assert_eq!(
        sign_in(&app, &key, &rsa.sign(&skewed), None).await.status,
        StatusCode::OK,
        "within the 60 s leeway"
    );
    let early = issuer.claims("u-1", "alice@example.com", json!({"nbf": now() + 600}));
    refused(
        &sign_in(&app, &key, &rsa.sign(&early), None).await,
        "expired",
    );
    let other = issuer.claims("u-1", "alice@example.com", json!({"aud": "someone-else"}));
    refused(
        &sign_in(&app, &key, &rsa.sign(&other), None).await,
        "wrong_audience",
    );
    let foreign = issuer.claims(
        "u-1",
        "alice@example.com",
        json!({"iss": "https://evil.example.com"}),
    );
    refused(
        &sign_in(&app, &key, &rsa.sign(&foreign), None).await,
        "unknown_issuer",
    );
    let fine = issuer.claims("u-1", "alice@example.com", json!({"nonce": "abc"}));
    refused(
        &sign_in(&app, &key, &rsa.sign(&fine), Some("xyz")).await,
        "nonce_mismatch",
    );
    let good = rsa.sign(&fine);
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let forged = issuer.claims("u-1", "mallory@example.com", json!({}));
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged.to_string(),
    );
    refused(
        &sign_in(&app, &key, &parts.join("."), None).await,
        "invalid_signature",
    );
    seatkeeper::crypto::install();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &fine,
        &jsonwebtoken::EncodingKey::from_secret(b"client-secret"),
    )
    .unwrap();
    refused(&sign_in(&app, &key, &hs, None).await, "invalid_signature");
    let none = format!(
        "{}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"alg":"none","typ":"JWT"}"#
        ),
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            fine.to_string()
        )
    );
    refused(&sign_in(&app, &key, &none, None).await, "invalid_signature");
    // A key the issuer never published: one fetch to look, then no more within the limit.
    let stranger = KeyPair::new(Algorithm::EdDSA);
    let fetched = issuer.fetches();
    for _ in 0..5 {
        refused(
            &sign_in(&app, &key, &stranger.sign(&fine), None).await,
            "invalid_signature",
        );
    }
    assert!(
        issuer.fetches() <= fetched + 1,
        "{} fetches",
        issuer.fetches() - fetched
    );
    // Bad bodies.
    let r = app
        .req_as(
            &key,
            "POST",
            "/api/v1/sso/login",
            Some(json!({"token": "x"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    let r = sign_in(&app, &key, "", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    let r = app
        .req_as(
            &app.token,
            "POST",
            "/api/v1/sso/login",
            Some(json!({"id_token": good})),
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a SCIM token is no app key"
    );

    // SCIM is the source of truth: a deactivated user stays out…
    app.set_active(&alice, false).await;
    let claims = issuer.claims("u-1", "alice@example.com", json!({}));
    refused(
        &sign_in(&app, &key, &rsa.sign(&claims), None).await,
        "user_inactive",
    );
    let u = app
        .req("GET", &format!("/scim/v2/Users/{alice}"), None)
        .await;
    assert_eq!(u.body["active"], false);
    // …and a user SCIM created keeps SCIM's attributes and groups.
    let dave = app.user("dave@example.com").await;
    let claims = issuer.claims(
        "u-4",
        "dave@example.com",
        json!({"given_name": "Not Dave", "groups": ["Sales"]}),
    );
    let r = sign_in(&app, &key, &rsa.sign(&claims), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["user"]["id"], json!(dave));
    let u = app
        .req("GET", &format!("/scim/v2/Users/{dave}"), None)
        .await;
    assert!(u.body.get("name").is_none(), "{}", u.raw);
    assert!(
        u.body
            .get("groups")
            .is_none_or(|g| g.as_array().unwrap().is_empty()),
        "{}",
        u.raw
    );

    // Key rotation: the new key is fetched when a token names it (once the refresh limit
    // the stranger's tokens hit has passed).
    let rsa2 = KeyPair::new(Algorithm::EdDSA);
    issuer.rotate_to(&[&rsa2]);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let claims = issuer.claims("u-2", "bob@example.com", json!({}));
    let r = sign_in(&app, &key, &rsa2.sign(&claims), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);

    // existing_only: known users sign in, strangers are refused and nothing is created.
    let conn = json!({"issuer": issuer.url, "jwks_uri": format!("{}/jwks", issuer.url),
        "audiences": ["client-1", "client-2"], "provisioning": "existing_only"});
    assert_eq!(
        app.admin("PUT", &sso, Some(conn)).await.status,
        StatusCode::OK
    );
    let claims = issuer.claims("u-9", "erin@example.com", json!({"aud": "client-2"}));
    refused(
        &sign_in(&app, &key, &rsa2.sign(&claims), None).await,
        "unknown_user",
    );
    let r = app
        .req(
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22erin@example.com%22",
            None,
        )
        .await;
    assert_eq!(r.body["totalResults"], 0, "{}", r.raw);
    // Matched by email when userName differs, then by externalId.
    let claims = issuer.claims(
        "u-2",
        "robert@example.com",
        json!({"email": "bob@example.com"}),
    );
    let r = sign_in(&app, &key, &rsa2.sign(&claims), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["user"]["userName"], "bob@example.com");
    let claims = issuer.claims("u-3", "nobody@example.com", json!({}));
    let r = sign_in(&app, &key, &rsa2.sign(&claims), None).await;
    assert_eq!(r.body["user"]["userName"], "carol@example.com", "{}", r.raw);

    let r = app.admin("DELETE", &sso, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    refused(
        &sign_in(&app, &key, &rsa2.sign(&claims), None).await,
        "unknown_issuer",
    );
}

both_backends!(oidc_sign_in_provisions_just_in_time);

/// A browser's request to the portal: (status, Set-Cookie, body).
async fn portal_get(app: &TestApp, path: &str, cookie: &str) -> common::Resp {
    let mut headers = vec![];
    if !cookie.is_empty() {
        headers.push(("cookie", cookie));
    }
    app.req_as("", "GET", path, None, &headers).await
}

async fn portal_post(app: &TestApp, path: &str, cookie: &str, form: &str) -> common::Resp {
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "scim.test")
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(form.to_string()))
        .unwrap();
    app.send(req).await
}

fn csrf_of(html: &str) -> String {
    let i = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[i..].split('"').next().unwrap().to_string()
}

async fn the_portal_shows_one_tenant_to_its_admin(b: Backend) {
    use seatkeeper::Clock;
    let app = common::app(b).await;
    let t = app.tenant.clone();
    let other = common::new_tenant(&app.store, Arc::new(app.clock.clone()), "Other Co").await;
    let product = format!("pp-{}", &t[t.len() - 12..]);
    let model = json!({
        "products": [{"key": product, "plans": [{"key": "pro", "rank": 1, "features": ["export"]}]}],
        "tenants": [{"id": t, "subscriptions": [{"product": product, "plan": "pro", "seats": 1,
            "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}]}],
    });
    assert_eq!(
        app.admin("PUT", "/api/v1/model", Some(model)).await.status,
        StatusCode::OK
    );
    let alice = app.user("alice@example.com").await;
    let _bob = app.user("bob@example.com").await;
    let links = format!("/api/v1/tenants/{t}/portal-links");

    // Bad links are refused.
    for bad in [
        json!({"expires_in": 10}),
        json!({"expires_in": 3600, "capabilities": ["billing"]}),
        json!({"capabilities": []}),
        json!({"colour": "blue"}),
    ] {
        let r = app.admin("POST", &links, Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
    // A key confined to the tenant, with credentials:write, may make one; to another, 404.
    let r = app
        .admin(
            "POST",
            "/api/v1/admin-keys",
            Some(json!({"name": "csm", "scopes": ["credentials:write"], "tenant": t})),
        )
        .await;
    let csm = r.body["token"].as_str().unwrap().to_string();
    let r = app
        .req_as(
            &csm,
            "POST",
            &format!("/api/v1/tenants/{}/portal-links", other.id),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
    let r = app
        .req_as(
            &csm,
            "POST",
            &links,
            Some(json!({"expires_in": 3600, "capabilities": ["scim_setup", "seats", "audit"]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let url = r.body["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://scim.test/portal/skl_"), "{url}");
    let path = url.trim_start_matches("http://scim.test").to_string();

    // Without a session: nothing.
    let r = portal_get(&app, "/portal", "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The first visit starts a session and spends the link.
    let r = portal_get(&app, &path, "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.raw);
    let set = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/portal"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let r = portal_get(&app, &path, "").await;
    assert_eq!(r.status, StatusCode::GONE, "a link opens once");
    assert!(r.raw.contains("used or has expired"));

    let r = portal_get(&app, "/portal", &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert!(
        r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let html = r.raw;
    assert!(
        html.contains("http://scim.test/scim/v2"),
        "the tenant's SCIM URL"
    );
    assert!(html.contains("Microsoft Entra ID") && html.contains("Okta"));
    assert!(html.contains("alice@example.com") && html.contains("bob@example.com"));
    assert!(html.contains("waitlisted"), "bob waits for the one seat");
    assert!(!html.contains("Other Co") && !html.contains(&other.id));
    assert!(!html.contains(&app.token), "no credential is shown");
    let csrf = csrf_of(&html);

    // The user page explains; another tenant's user is not found.
    let r = portal_get(&app, &format!("/portal/users/{alice}"), &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert!(r.raw.contains("data-testid=\"explanation\""), "{}", r.raw);
    let stranger = common::new_credential(
        &app.store,
        Arc::new(app.clock.clone()),
        seatkeeper::Credential::Scim,
        &other.id,
        "idp",
    )
    .await;
    let r = app
        .req_as(
            &stranger.token,
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [common::USER], "userName": "zed@other.example"})),
            &[],
        )
        .await;
    let zed = r.body["id"].as_str().unwrap().to_string();
    let r = portal_get(&app, &format!("/portal/users/{zed}"), &cookie).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);

    // Their own SCIM token: CSRF needed; shown once; works; a rotation revokes the last one.
    let r = portal_post(&app, "/portal/scim-token", &cookie, "csrf=wrong").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = portal_post(&app, "/portal/scim-token", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let first = r
        .raw
        .split("data-testid=\"new-scim-token\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert!(first.starts_with("skt_"), "{first}");
    let r = app
        .req_as(&first, "GET", "/scim/v2/Users?count=1", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = portal_post(&app, "/portal/scim-token", &cookie, &format!("csrf={csrf}")).await;
    let second = r
        .raw
        .split("data-testid=\"new-scim-token\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    let r = app
        .req_as(&first, "GET", "/scim/v2/Users?count=1", None, &[])
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the rotated token stops working"
    );
    assert_eq!(
        app.req_as(&second, "GET", "/scim/v2/Users?count=1", None, &[])
            .await
            .status,
        StatusCode::OK
    );
    // The test's own IdP token is untouched.
    assert_eq!(
        app.req("GET", "/scim/v2/Users?count=1", None).await.status,
        StatusCode::OK
    );
    // Audited with actor portal, and shown in their trail.
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{t}/audit?actor=portal"),
            None,
        )
        .await;
    assert!(
        r.raw.contains("credential.create")
            && r.raw.contains("credential.revoke")
            && r.raw.contains("portal.open"),
        "{}",
        r.raw
    );
    let html = portal_get(&app, "/portal", &cookie).await.raw;
    assert!(html.contains("credential.revoke"), "their audit trail");

    // A link with fewer capabilities shows less and may do less.
    let r = app
        .admin("POST", &links, Some(json!({"capabilities": ["audit"]})))
        .await;
    let path2 = r.body["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://scim.test")
        .to_string();
    let r = portal_get(&app, &path2, "").await;
    let cookie2 = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = portal_get(&app, "/portal", &cookie2).await.raw;
    assert!(
        !html.contains("/scim/v2")
            && !html.contains("alice@example.com")
            && html.contains("portal.open")
    );
    let r = portal_post(
        &app,
        "/portal/scim-token",
        &cookie2,
        &format!("csrf={}", csrf_of(&html)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        portal_get(&app, &format!("/portal/users/{alice}"), &cookie2)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // An unused link expires; a session ends after 8 hours, or on sign-out.
    let r = app
        .admin("POST", &links, Some(json!({"expires_in": 60})))
        .await;
    let path3 = r.body["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://scim.test")
        .to_string();
    app.clock.advance(time::Duration::seconds(61));
    assert_eq!(portal_get(&app, &path3, "").await.status, StatusCode::GONE);
    let r = portal_post(
        &app,
        "/portal/logout",
        &cookie2,
        &format!("csrf={}", csrf_of(&html)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        portal_get(&app, "/portal", &cookie2).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        portal_get(&app, "/portal", &cookie).await.status,
        StatusCode::OK
    );
    app.clock.advance(time::Duration::hours(8));
    let _ = app.clock.now();
    assert_eq!(
        portal_get(&app, "/portal", &cookie).await.status,
        StatusCode::UNAUTHORIZED
    );
}

both_backends!(the_portal_shows_one_tenant_to_its_admin);
