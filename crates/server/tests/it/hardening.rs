//! What an attacker's probe found (issue 15), each answered the same on both backends.

use crate::common;

use axum::http::StatusCode;
use common::{Backend, GROUP, PATCH, USER};
use serde_json::{Value, json};

/// NUL (U+0000), which PostgreSQL cannot store, is a 400 `invalidValue` wherever it comes in
/// — body fields, filters, paths, cursors, names — on SQLite as on PostgreSQL, and nothing is
/// written.
async fn nul_is_refused_alike(b: Backend) {
    let app = common::app(b).await;
    let alice = app.user("alice@example.com").await;
    let group = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Ops"})),
        )
        .await;
    let group = group.body["id"].as_str().unwrap().to_string();
    let nul = "a\u{0}b";
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        (
            "POST",
            "/scim/v2/Users".into(),
            Some(json!({"schemas": [USER], "userName": nul})),
        ),
        (
            "POST",
            "/scim/v2/Users".into(),
            Some(json!({"schemas": [USER], "userName": "x1@example.com", "externalId": nul})),
        ),
        (
            "POST",
            "/scim/v2/Users".into(),
            Some(
                json!({"schemas": [USER], "userName": "x2@example.com", "emails": [{"value": nul}]}),
            ),
        ),
        (
            "POST",
            "/scim/v2/Groups".into(),
            Some(json!({"schemas": [GROUP], "displayName": nul})),
        ),
        (
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22a%00b%22".into(),
            None,
        ),
        (
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22a%5Cu0000b%22".into(),
            None,
        ),
        ("GET", "/scim/v2/Users/abc%00".into(), None),
        ("GET", "/scim/v2/Users?cursor=a%00b&count=5".into(), None),
        (
            "PATCH",
            format!("/scim/v2/Users/{alice}"),
            Some(
                json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "emails", "value": [{"value": nul}]}]}),
            ),
        ),
        (
            "PATCH",
            format!("/scim/v2/Users/{alice}"),
            Some(
                json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": nul}]}),
            ),
        ),
        (
            "PATCH",
            format!("/scim/v2/Groups/{group}"),
            Some(
                json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": nul}]}),
            ),
        ),
        (
            "POST",
            "/scim/v2/Users/.search".into(),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq \"a\\u0000b\""}),
            ),
        ),
    ];
    for (method, path, body) in cases {
        let r = app.req(method, &path, body.clone()).await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
            "{method} {path} {body:?}: {} {}",
            r.status,
            r.raw
        );
        if r.status == StatusCode::BAD_REQUEST {
            assert!(r.body["scimType"].is_string(), "{method} {path}: {}", r.raw);
        }
    }
    // Admin names.
    for (path, body) in [
        ("/api/v1/tenants".to_string(), json!({"name": nul})),
        (
            format!("/api/v1/tenants/{}/scim-tokens", app.tenant),
            json!({"name": nul}),
        ),
    ] {
        let r = app.admin("POST", &path, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.raw);
    }
    // Nothing was written: alice is as she was, and no user or group came of it.
    let r = app
        .req("GET", &format!("/scim/v2/Users/{alice}"), None)
        .await;
    assert!(
        r.body.get("emails").is_none() && r.body.get("displayName").is_none(),
        "{}",
        r.raw
    );
    let r = app.req("GET", "/scim/v2/Users?count=0", None).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.raw);
    let r = app.req("GET", "/scim/v2/Groups?count=0", None).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.raw);
}

both_backends!(nul_is_refused_alike);
