//! In-process HTTP tests of the SCIM API, on SQLite and PostgreSQL.

use crate::common::{self, ENT, GROUP, PATCH, USER};

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::{Backend, TestApp, app, app_with};
use seatkeeper::Config;
use serde_json::{Value, json};

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH], "Operations": ops})
}

fn assert_scim_error(r: &common::Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status.as_u16(), status, "{}", r.raw);
    assert_eq!(r.headers["content-type"], "application/scim+json");
    assert_eq!(
        r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{}",
        r.raw
    );
    assert_eq!(r.body["status"], json!(status.to_string()), "{}", r.raw);
    assert_eq!(
        r.body.get("scimType").and_then(Value::as_str),
        scim_type,
        "{}",
        r.raw
    );
}

async fn outbox_types(app: &TestApp) -> Vec<String> {
    app.store
        .outbox_after(&app.tenant, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn create_get_and_duplicate(b: Backend) {
    let app = app(b).await;
    let r = app
        .req("POST", "/scim/v2/Users", Some(json!({"schemas": [USER], "userName": "Alice@Example.com", "emails": [{"value": "alice@example.com", "primary": true}], "password": "p"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert_eq!(r.headers["content-type"], "application/scim+json");
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.headers["location"],
        format!("http://scim.test/scim/v2/Users/{id}")
    );
    assert_eq!(r.headers["etag"], "W/\"1\"");
    assert_eq!(r.body["active"], json!(true));
    assert!(
        r.body.get("password").is_none(),
        "password is never returned"
    );
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert_eq!(r.body["meta"]["version"], "W/\"1\"");
    assert_eq!(r.body["meta"]["created"], "2026-11-22T10:00:00.000000Z");
    let g = app.req("GET", &format!("/scim/v2/Users/{id}"), None).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body, r.body);
    let dup = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "alice@EXAMPLE.com"})),
        )
        .await;
    assert_scim_error(&dup, 409, Some("uniqueness"));
    // A rename to a taken name, by PATCH and by PUT (on PostgreSQL the new document is
    // written with the transaction's last statement): 409, and nothing of it is kept.
    let bob = app.user("bob@example.com").await;
    let bob_before = app.req("GET", &format!("/scim/v2/Users/{bob}"), None).await;
    let audited = app.store.audit_head(&app.tenant).await.unwrap();
    let rename = json!([{"op": "replace", "path": "userName", "value": "ALICE@example.com"}]);
    for r in [
        app.req(
            "PATCH",
            &format!("/scim/v2/Users/{bob}"),
            Some(patch(rename)),
        )
        .await,
        app.req(
            "PUT",
            &format!("/scim/v2/Users/{bob}"),
            Some(json!({"schemas": [USER], "userName": "alice@example.COM", "displayName": "Bob"})),
        )
        .await,
    ] {
        assert_scim_error(&r, 409, Some("uniqueness"));
        assert!(
            r.body["detail"].as_str().unwrap().contains("already taken"),
            "{}",
            r.raw
        );
    }
    let bob_after = app.req("GET", &format!("/scim/v2/Users/{bob}"), None).await;
    assert_eq!(bob_after.body, bob_before.body);
    assert_eq!(app.store.audit_head(&app.tenant).await.unwrap(), audited);
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Users/{bob}"),
            Some(patch(
                json!([{"op": "replace", "path": "userName", "value": "robert@example.com"}]),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["meta"]["version"], "W/\"2\"");
    let r = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc("userName eq \"robert@example.com\"")
            ),
            None,
        )
        .await;
    assert_eq!(r.body["Resources"][0]["id"], bob, "{}", r.raw);
    let gdup1 = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Eng"})),
        )
        .await;
    assert_eq!(gdup1.status, StatusCode::CREATED);
    let gdup2 = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "ENG"})),
        )
        .await;
    assert_scim_error(&gdup2, 409, Some("uniqueness"));
}

/// The request sequence Microsoft Entra ID's provisioning service sends.
async fn entra_sequence(b: Backend) {
    let app = app(b).await;
    let lookup = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc(r#"userName eq "jdoe@contoso.com""#)
            ),
            None,
        )
        .await;
    assert_eq!(lookup.status, StatusCode::OK);
    assert_eq!(lookup.body["totalResults"], 0);
    let manager = app.user("boss@contoso.com").await;
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({
                "schemas": [USER, ENT],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "jdoe@contoso.com",
                "active": true,
                "displayName": "John Doe",
                "emails": [{"primary": true, "type": "work", "value": "jdoe@contoso.com"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "John Doe", "familyName": "Doe", "givenName": "John"},
                "roles": [],
                ENT: {"department": "Sales"}
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let id = r.body["id"].as_str().unwrap().to_string();
    let found = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc(r#"userName eq "JDOE@contoso.com""#)
            ),
            None,
        )
        .await;
    assert_eq!(found.body["totalResults"], 1);
    // Entra ID matching on the work email.
    let by_email = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc(r#"emails[type eq "work"].value eq "JDoe@Contoso.com""#)
            ),
            None,
        )
        .await;
    assert_eq!(by_email.status, StatusCode::OK, "{}", by_email.raw);
    assert_eq!(by_email.body["totalResults"], 1, "{}", by_email.raw);
    assert_eq!(by_email.body["Resources"][0]["id"], json!(id));
    let by_ext = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc(r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef""#)
            ),
            None,
        )
        .await;
    assert_eq!(by_ext.body["totalResults"], 1);
    // Entra's attribute updates: capitalised ops, no-path replace with path keys, manager as a string.
    let p = app
        .req("PATCH", &format!("/scim/v2/Users/{id}"), Some(patch(json!([
            {"op": "Replace", "path": "displayName", "value": "Johnny Doe"},
            {"op": "Replace", "value": {"name.givenName": "Johnny", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D"}},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": manager},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "johnny@contoso.com"},
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"}
        ]))))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.raw);
    assert_eq!(p.body["displayName"], "Johnny Doe");
    assert_eq!(p.body["name"]["givenName"], "Johnny");
    assert_eq!(p.body[ENT]["department"], "R&D");
    assert_eq!(p.body[ENT]["manager"]["value"], json!(manager));
    assert_eq!(p.body["emails"][0]["value"], "johnny@contoso.com");
    assert_eq!(
        p.body["phoneNumbers"][0],
        json!({"type": "mobile", "value": "+1 555 0100"})
    );
    assert_eq!(p.body["meta"]["version"], "W/\"2\"");
    // The email index follows the change.
    let by_mail = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc(r#"emails.value eq "Johnny@contoso.com""#)
            ),
            None,
        )
        .await;
    assert_eq!(by_mail.body["totalResults"], 1, "{}", by_mail.raw);
    // Groups: create, add members, remove with a value list, keep responses small.
    let g = app.req("POST", "/scim/v2/Groups", Some(json!({"schemas": [GROUP], "displayName": "Sales", "externalId": "g-1", "members": []}))).await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.raw);
    let gid = g.body["id"].as_str().unwrap().to_string();
    let add = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{gid}?excludedAttributes=members"),
            Some(patch(json!([
                {"op": "Add", "path": "members", "value": [{"value": id}, {"value": manager}]}
            ]))),
        )
        .await;
    assert_eq!(add.status, StatusCode::OK, "{}", add.raw);
    assert!(add.body.get("members").is_none());
    let full = app
        .req("GET", &format!("/scim/v2/Groups/{gid}"), None)
        .await;
    assert_eq!(full.body["members"].as_array().unwrap().len(), 2);
    let user = app.req("GET", &format!("/scim/v2/Users/{id}"), None).await;
    assert_eq!(user.body["groups"][0]["value"], json!(gid));
    assert_eq!(user.body["groups"][0]["type"], "direct");
    let rm = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{gid}"),
            Some(patch(json!([
                {"op": "Remove", "path": "members", "value": [{"value": manager}]}
            ]))),
        )
        .await;
    assert_eq!(rm.status, StatusCode::NO_CONTENT, "{}", rm.raw);
    let after = app
        .req("GET", &format!("/scim/v2/Groups/{gid}"), None)
        .await;
    assert_eq!(after.body["members"].as_array().unwrap().len(), 1);
    // Deprovisioning: active "False" as a string, a first-class transition.
    let off = app
        .req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(patch(
                json!([{"op": "Replace", "path": "active", "value": "False"}]),
            )),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.raw);
    assert_eq!(off.body["active"], json!(false));
    let inactive = app
        .req(
            "GET",
            &format!("/scim/v2/Users?filter={}", enc("active eq false")),
            None,
        )
        .await;
    assert_eq!(inactive.body["totalResults"], 1);
    assert!(
        outbox_types(&app)
            .await
            .contains(&"user.deprovisioned".to_string())
    );
    // A PATCH that changes nothing succeeds and keeps the version.
    let again = app
        .req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(patch(
                json!([{"op": "Replace", "path": "active", "value": false}]),
            )),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["meta"]["version"], off.body["meta"]["version"]);
    // 30 days later Entra deletes.
    let del = app
        .req("DELETE", &format!("/scim/v2/Users/{id}"), None)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_scim_error(
        &app.req("GET", &format!("/scim/v2/Users/{id}"), None).await,
        404,
        None,
    );
    let group_after = app
        .req("GET", &format!("/scim/v2/Groups/{gid}"), None)
        .await;
    assert!(
        group_after.body.get("members").is_none(),
        "deleted users leave their groups: {}",
        group_after.raw
    );
}

/// The request sequence Okta sends: lookup, create, PUT replace (deactivation), group pushes.
async fn okta_sequence(b: Backend) {
    let app = app(b).await;
    let lookup = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}&startIndex=1&count=100",
                enc(r#"userName eq "dade.murphy@example.com""#)
            ),
            None,
        )
        .await;
    assert_eq!(lookup.body["totalResults"], 0);
    let body = json!({
        "schemas": [USER], "userName": "dade.murphy@example.com",
        "name": {"givenName": "Dade", "familyName": "Murphy"},
        "emails": [{"primary": true, "value": "dade.murphy@example.com", "type": "work"}],
        "displayName": "Dade Murphy", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [], "password": "1mz050nq", "active": true
    });
    let r = app.req("POST", "/scim/v2/Users", Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let id = r.body["id"].as_str().unwrap().to_string();
    let mut put = body.clone();
    put["id"] = json!(id);
    put["active"] = json!(false);
    put["name"]["givenName"] = json!("Zero Cool");
    let p = app
        .req("PUT", &format!("/scim/v2/Users/{id}"), Some(put))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.raw);
    assert_eq!(p.body["active"], json!(false));
    assert_eq!(p.body["name"]["givenName"], "Zero Cool");
    let okta_deact = app
        .req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(patch(json!([{"op": "replace", "value": {"active": true}}]))),
        )
        .await;
    assert_eq!(okta_deact.body["active"], json!(true));
    let g = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Test SCIMv2", "members": []})),
        )
        .await;
    let gid = g.body["id"].as_str().unwrap().to_string();
    let rename = app
        .req("PATCH", &format!("/scim/v2/Groups/{gid}"), Some(patch(json!([{"op": "replace", "value": {"id": gid, "displayName": "Test SCIMv2 renamed"}}]))))
        .await;
    // A group PATCH answers 204 with the new ETag, as Okta and Entra ID expect.
    assert_eq!(rename.status, StatusCode::NO_CONTENT, "{}", rename.raw);
    assert!(rename.raw.is_empty(), "{}", rename.raw);
    assert_eq!(rename.headers["etag"], "W/\"2\"");
    let renamed = app
        .req("GET", &format!("/scim/v2/Groups/{gid}"), None)
        .await;
    assert_eq!(renamed.body["displayName"], "Test SCIMv2 renamed");
    assert_eq!(renamed.body["meta"]["version"], "W/\"2\"");
    // Asking for attributes gets the group back with 200.
    let add = app
        .req("PATCH", &format!("/scim/v2/Groups/{gid}?attributes=members"), Some(patch(json!([{"op": "add", "path": "members", "value": [{"value": id, "display": "dade.murphy@example.com"}]}]))))
        .await;
    assert_eq!(add.status, StatusCode::OK, "{}", add.raw);
    assert_eq!(add.body["members"][0]["value"], json!(id));
    let rm = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{gid}?excludedAttributes=members"),
            Some(patch(
                json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]),
            )),
        )
        .await;
    assert_eq!(rm.status, StatusCode::OK, "{}", rm.raw);
    assert_eq!(rm.body["displayName"], "Test SCIMv2 renamed");
    assert!(rm.body.get("members").is_none());
    let put_group = app
        .req("PUT", &format!("/scim/v2/Groups/{gid}"), Some(json!({"schemas": [GROUP], "id": gid, "displayName": "Final", "members": [{"value": id}]})))
        .await;
    assert_eq!(put_group.body["members"].as_array().unwrap().len(), 1);
    assert_scim_error(
        &app.req(
            "GET",
            "/scim/v2/Users/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await,
        404,
        None,
    );
}

async fn errors_are_scim_and_never_partial(b: Backend) {
    let app = app(b).await;
    let id = app.user("e@x").await;
    let bad_json = app
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri("/scim/v2/Users")
                .header("authorization", format!("Bearer {}", app.token))
                .header("content-type", "application/scim+json")
                .body(axum::body::Body::from("{\"userName\": "))
                .unwrap(),
        )
        .await;
    assert_scim_error(&bad_json, 400, Some("invalidSyntax"));
    let wrong_type = app
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri("/scim/v2/Users")
                .header("authorization", format!("Bearer {}", app.token))
                .header("content-type", "text/plain")
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_scim_error(&wrong_type, 415, Some("invalidSyntax"));
    assert_scim_error(
        &app.req(
            "GET",
            &format!("/scim/v2/Users?filter={}", enc("userName eq")),
            None,
        )
        .await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &app.req(
            "GET",
            &format!("/scim/v2/Users?filter={}", enc("nosuch eq 1")),
            None,
        )
        .await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &app.req("POST", "/scim/v2/Users", Some(json!({"schemas": [USER]})))
            .await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &app.req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "x", "active": "perhaps"})),
        )
        .await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &app.req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(patch(
                json!([{"op": "replace", "path": "bad[[", "value": 1}]),
            )),
        )
        .await,
        400,
        Some("invalidPath"),
    );
    assert_scim_error(
        &app.req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(patch(json!([{"op": "remove"}]))),
        )
        .await,
        400,
        Some("noTarget"),
    );
    assert_scim_error(
        &app.req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(patch(
                json!([{"op": "replace", "path": "groups", "value": []}]),
            )),
        )
        .await,
        400,
        Some("mutability"),
    );
    assert_scim_error(
        &app.req("GET", "/scim/v2/Users?count=abc", None).await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &app.req("GET", "/scim/v2/Users?sortBy=nosuch", None).await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &app.req("GET", "/scim/v2/Users?attributes=nosuch", None)
            .await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &app.req("GET", "/scim/v2/Users?cursor=zzzz", None).await,
        400,
        Some("invalidCursor"),
    );
    assert_scim_error(&app.req("DELETE", "/scim/v2/Users", None).await, 405, None);
    assert_scim_error(&app.req("GET", "/scim/v2/Nothing", None).await, 404, None);
    assert_scim_error(&app.req("GET", "/scim/v2/Me", None).await, 501, None);
    let unauth = app.req_as("", "GET", "/scim/v2/Users", None, &[]).await;
    assert_scim_error(&unauth, 401, None);
    assert_eq!(
        unauth.headers["www-authenticate"],
        "Bearer realm=\"seatkeeper\""
    );
    assert_scim_error(
        &app.req_as("skt_wrong", "GET", "/scim/v2/Users", None, &[])
            .await,
        401,
        None,
    );
    let big = "x".repeat(1024 * 1024 + 10);
    assert_scim_error(
        &app.req("POST", "/scim/v2/Users", Some(json!({"userName": big})))
            .await,
        413,
        None,
    );
    // A PATCH whose second operation fails changes nothing.
    let before = app.req("GET", &format!("/scim/v2/Users/{id}"), None).await;
    let audit_before = app.store.audit_head(&app.tenant).await.unwrap();
    let failed = app
        .req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(patch(json!([
                {"op": "replace", "path": "displayName", "value": "changed"},
                {"op": "replace", "path": "active", "value": "maybe"}
            ]))),
        )
        .await;
    assert_scim_error(&failed, 400, Some("invalidValue"));
    assert_eq!(
        app.req("GET", &format!("/scim/v2/Users/{id}"), None)
            .await
            .body,
        before.body
    );
    assert_eq!(
        app.store.audit_head(&app.tenant).await.unwrap(),
        audit_before
    );
    // A group with an unknown member is refused whole.
    let g = app.req("POST", "/scim/v2/Groups", Some(json!({"schemas": [GROUP], "displayName": "G", "members": [{"value": id}, {"value": "nope"}]}))).await;
    assert_scim_error(&g, 400, Some("invalidValue"));
    let groups = app.req("GET", "/scim/v2/Groups", None).await;
    assert_eq!(groups.body["totalResults"], 0);
}

async fn tenant_isolation(b: Backend) {
    let app = app(b).await;
    let a_user = app.user("shared-name@x").await;
    let clock = seatkeeper::ManualClock::at(time::macros::datetime!(2026-11-22 10:00:00 UTC));
    let clock: seatkeeper::SharedClock = std::sync::Arc::new(clock);
    let t2 = common::new_tenant(&app.store, clock.clone(), "Other").await;
    let tok2 = common::new_credential(
        &app.store,
        clock,
        seatkeeper::Credential::Scim,
        &t2.id,
        "other-idp",
    )
    .await
    .token;
    for (method, body) in [
        ("GET", None),
        ("PUT", Some(json!({"schemas": [USER], "userName": "x"}))),
        (
            "PATCH",
            Some(patch(
                json!([{"op": "replace", "path": "active", "value": false}]),
            )),
        ),
        ("DELETE", None),
    ] {
        let r = app
            .req_as(
                &tok2,
                method,
                &format!("/scim/v2/Users/{a_user}"),
                body,
                &[],
            )
            .await;
        assert_scim_error(&r, 404, None);
    }
    let list = app
        .req_as(
            &tok2,
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc(r#"userName eq "shared-name@x""#)
            ),
            None,
            &[],
        )
        .await;
    assert_eq!(list.body["totalResults"], 0);
    // The same userName is free in the other tenant.
    let same = app
        .req_as(
            &tok2,
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "shared-name@x"})),
            &[],
        )
        .await;
    assert_eq!(same.status, StatusCode::CREATED);
    // Tenant B cannot reference tenant A's user as a member.
    let g = app
        .req_as(
            &tok2,
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "B", "members": [{"value": a_user}]})),
            &[],
        )
        .await;
    assert_scim_error(&g, 400, Some("invalidValue"));
    let all_a = app.req("GET", "/scim/v2/Users", None).await;
    assert_eq!(all_a.body["totalResults"], 1);
    assert_eq!(
        app.req("GET", &format!("/scim/v2/Users/{a_user}"), None)
            .await
            .body["active"],
        json!(true)
    );
}

async fn etags(b: Backend) {
    let app = app(b).await;
    let id = app.user("etag@x").await;
    let uri = format!("/scim/v2/Users/{id}");
    let p = patch(json!([{"op": "replace", "path": "title", "value": "CTO"}]));
    assert_scim_error(
        &app.req_h("PATCH", &uri, Some(p.clone()), &[("if-match", "W/\"7\"")])
            .await,
        412,
        None,
    );
    let ok = app
        .req_h("PATCH", &uri, Some(p), &[("if-match", "W/\"1\"")])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["etag"], "W/\"2\"");
    let nm = app
        .req_h("GET", &uri, None, &[("if-none-match", "W/\"2\"")])
        .await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    assert_scim_error(
        &app.req_h("DELETE", &uri, None, &[("if-match", "W/\"1\"")])
            .await,
        412,
        None,
    );
    assert_eq!(
        app.req_h("DELETE", &uri, None, &[("if-match", "W/\"2\"")])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

async fn pagination_sorting_projection(b: Backend) {
    let app = app(b).await;
    for i in 0..25 {
        let r = app
            .req("POST", "/scim/v2/Users", Some(json!({"schemas": [USER], "userName": format!("user{i:02}"), "title": if i % 2 == 0 { "Even" } else { "Odd" }, "name": {"familyName": format!("F{}", 25 - i)}})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let zero = app.req("GET", "/scim/v2/Users?count=0", None).await;
    assert_eq!(zero.body["totalResults"], 25);
    assert_eq!(zero.body["Resources"], json!([]));
    let page = app
        .req(
            "GET",
            "/scim/v2/Users?startIndex=11&count=5&sortBy=userName",
            None,
        )
        .await;
    let names: Vec<&str> = page.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["user10", "user11", "user12", "user13", "user14"]);
    assert_eq!(page.body["startIndex"], 11);
    assert_eq!(page.body["itemsPerPage"], 5);
    let desc = app
        .req(
            "GET",
            "/scim/v2/Users?count=2&sortBy=userName&sortOrder=descending",
            None,
        )
        .await;
    assert_eq!(desc.body["Resources"][0]["userName"], "user24");
    // Sorting by an attribute without a column goes through memory, with the same result shape.
    let by_family = app
        .req("GET", "/scim/v2/Users?count=3&sortBy=name.familyName", None)
        .await;
    assert_eq!(by_family.body["Resources"][0]["name"]["familyName"], "F1");
    assert_eq!(by_family.body["totalResults"], 25);
    // Cursor pagination (RFC 9865), with and without a filter the SQL cannot decide.
    for filter in ["", "&filter=title%20eq%20%22Even%22"] {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let r = app
                .req(
                    "GET",
                    &format!("/scim/v2/Users?count=4&cursor={cursor}{filter}"),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
            for res in r.body["Resources"].as_array().unwrap() {
                seen.push(res["userName"].as_str().unwrap().to_string());
            }
            match r.body.get("nextCursor").and_then(Value::as_str) {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "no duplicates");
        assert_eq!(seen.len(), if filter.is_empty() { 25 } else { 13 });
    }
    let proj = app
        .req("GET", "/scim/v2/Users?count=1&attributes=userName", None)
        .await;
    let keys: BTreeSet<&str> = proj.body["Resources"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["schemas", "id", "userName"]));
    let ex = app
        .req(
            "GET",
            "/scim/v2/Users?count=1&excludedAttributes=name,meta",
            None,
        )
        .await;
    assert!(ex.body["Resources"][0].get("name").is_none());
    assert!(ex.body["Resources"][0].get("meta").is_none());
    assert!(
        ex.body["Resources"][0].get("id").is_some(),
        "id is returned always"
    );
}

/// Filters decided by SQL, by memory, or both, give exactly what the evaluator says.
async fn sql_and_memory_filters_agree(b: Backend) {
    let app = app(b).await;
    let people = [
        (
            "ann",
            "Ann Lee",
            Some("e1"),
            true,
            "Engineering",
            vec!["ann@work.com", "ann@home.org"],
        ),
        (
            "Bob",
            "bob smith",
            None,
            false,
            "Sales",
            vec!["bob@work.com"],
        ),
        (
            "carl",
            "Carl O'Brien",
            Some("E1"),
            true,
            "Engineering",
            vec![],
        ),
        (
            "dana%",
            "Dana_X",
            Some("e2"),
            true,
            "Support",
            vec!["DANA@WORK.COM"],
        ),
        ("eve", "Eve", None, true, "Sales", vec!["eve@home.org"]),
    ];
    for (u, d, ext, active, dept, emails) in &people {
        let mut body = json!({"schemas": [USER, ENT], "userName": u, "displayName": d, "active": active, ENT: {"department": dept},
            "emails": emails.iter().map(|e| json!({"value": e, "type": if e.contains("work") { "work" } else { "home" }})).collect::<Vec<_>>()});
        if let Some(e) = ext {
            body["externalId"] = json!(e);
        }
        assert_eq!(
            app.req("POST", "/scim/v2/Users", Some(body)).await.status,
            StatusCode::CREATED
        );
    }
    let all = app.req("GET", "/scim/v2/Users", None).await.body["Resources"]
        .as_array()
        .unwrap()
        .clone();
    let filters = [
        r#"userName eq "ANN""#,
        r#"userName sw "b""#,
        r#"userName co "%""#,
        r#"displayName co "_""#,
        r#"displayName ew "O'BRIEN""#,
        r#"externalId eq "e1""#,
        r#"externalId eq "E1""#,
        r#"externalId pr"#,
        r#"not (externalId pr)"#,
        r#"externalId ne "e1""#,
        r#"active eq false"#,
        r#"active eq true and emails.value co "work""#,
        r#"emails[type eq "work" and value ew ".com"]"#,
        r#"emails[value eq "dana@work.com"]"#,
        r#"emails[type eq "work"].value eq "ANN@work.com""#,
        r#"emails[type eq "home"].value eq "ann@work.com""#,
        r#"emails[type eq "work"].value co "work" and active eq true"#,
        r#"emails[value eq "eve@home.org" or value eq "bob@work.com"]"#,
        r#"emails.value pr"#,
        r#"not (emails pr)"#,
        r#"department eq "engineering""#,
        r#"department eq "sales" or userName eq "carl""#,
        r#"not (department eq "sales") and active eq true"#,
        r#"userName gt "c" and userName le "eve""#,
        r#"meta.lastModified ge "2026-11-22T10:00:00Z""#,
        r#"meta.lastModified gt "2026-11-22T10:00:00Z""#,
        r#"displayName eq null"#,
        r#"title eq null and userName ne "eve""#,
    ];
    for f in filters {
        let parsed = scim::filter::parse(f).unwrap();
        let want: BTreeSet<String> = all
            .iter()
            .filter(|r| parsed.matches(&scim::schema::USER_TYPE, r))
            .map(|r| r["userName"].as_str().unwrap().to_string())
            .collect();
        let got = app
            .req("GET", &format!("/scim/v2/Users?filter={}", enc(f)), None)
            .await;
        assert_eq!(got.status, StatusCode::OK, "{f}: {}", got.raw);
        let got: BTreeSet<String> = got.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["userName"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "filter {f}");
        assert_eq!(
            got.len(),
            app.req(
                "GET",
                &format!("/scim/v2/Users?count=0&filter={}", enc(f)),
                None
            )
            .await
            .body["totalResults"]
                .as_u64()
                .unwrap() as usize,
            "{f}"
        );
    }
    // Orders decided by SQL (indexed columns) equal the evaluator's order, nulls last.
    for sort_by in ["userName", "displayName", "externalId", "meta.lastModified"] {
        for order in ["ascending", "descending"] {
            let path = scim::filter::AttrPath::parse(sort_by).unwrap();
            let so = if order == "descending" {
                scim::list::SortOrder::Descending
            } else {
                scim::list::SortOrder::Ascending
            };
            let mut want: Vec<(Option<scim::list::SortKey>, String, String)> = all
                .iter()
                .map(|r| {
                    (
                        scim::list::sort_key(&scim::schema::USER_TYPE, r, &path),
                        r["id"].as_str().unwrap().to_string(),
                        r["userName"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            want.sort_by(|a, b| scim::list::compare_keys((&a.0, &a.1), (&b.0, &b.1), so));
            let want: Vec<String> = want.into_iter().map(|w| w.2).collect();
            let got = app
                .req(
                    "GET",
                    &format!("/scim/v2/Users?sortBy={sort_by}&sortOrder={order}"),
                    None,
                )
                .await;
            let got: Vec<String> = got.body["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["userName"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, want, "sortBy={sort_by} {order}");
        }
    }
    // Sanity: the expectations are not trivially empty or full.
    let one = app
        .req(
            "GET",
            &format!("/scim/v2/Users?filter={}", enc(r#"externalId eq "e1""#)),
            None,
        )
        .await;
    assert_eq!(one.body["totalResults"], 1);
}

async fn nested_groups_and_cycles(b: Backend) {
    let app = app(b).await;
    let u = app.user("nested@x").await;
    let inner = app.req("POST", "/scim/v2/Groups", Some(json!({"schemas": [GROUP], "displayName": "Inner", "members": [{"value": u, "type": "User"}]}))).await;
    let inner_id = inner.body["id"].as_str().unwrap().to_string();
    let outer = app.req("POST", "/scim/v2/Groups", Some(json!({"schemas": [GROUP], "displayName": "Outer", "members": [{"value": inner_id, "type": "Group"}]}))).await;
    assert_eq!(outer.status, StatusCode::CREATED, "{}", outer.raw);
    let outer_id = outer.body["id"].as_str().unwrap().to_string();
    let user = app.req("GET", &format!("/scim/v2/Users/{u}"), None).await;
    let groups: Vec<(String, String)> = user.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["display"].as_str().unwrap().into(),
                g["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("Inner".to_string(), "direct".to_string()),
            ("Outer".to_string(), "indirect".to_string())
        ]
    );
    let listed = app
        .req(
            "GET",
            &format!("/scim/v2/Users?filter={}", enc(r#"userName eq "nested@x""#)),
            None,
        )
        .await;
    assert_eq!(
        listed.body["Resources"][0]["groups"], user.body["groups"],
        "lists carry the same groups as reads"
    );
    let by_group = app
        .req(
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                enc(r#"groups.display eq "outer""#)
            ),
            None,
        )
        .await;
    assert_eq!(by_group.body["totalResults"], 1, "{}", by_group.raw);
    let cycle = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{inner_id}"),
            Some(patch(
                json!([{"op": "add", "path": "members", "value": [{"value": outer_id}]}]),
            )),
        )
        .await;
    assert_scim_error(&cycle, 400, Some("invalidValue"));
    let wrong_type = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{outer_id}"),
            Some(patch(
                json!([{"op": "add", "path": "members", "value": [{"value": u, "type": "Group"}]}]),
            )),
        )
        .await;
    assert_scim_error(&wrong_type, 400, Some("invalidValue"));
    // A member that is no user or group of the tenant, beside one that is; a rename to a
    // taken name (on PostgreSQL written with the transaction's last statement): refused
    // whole.
    let before = app
        .req("GET", &format!("/scim/v2/Groups/{outer_id}"), None)
        .await;
    let unknown = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{outer_id}"),
            Some(patch(
                json!([{"op": "add", "path": "members", "value": [{"value": u}, {"value": "no-such-id"}]}]),
            )),
        )
        .await;
    assert_scim_error(&unknown, 400, Some("invalidValue"));
    let taken = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{outer_id}"),
            Some(patch(json!([
                {"op": "add", "path": "members", "value": [{"value": u}]},
                {"op": "replace", "path": "displayName", "value": "INNER"},
            ]))),
        )
        .await;
    assert_scim_error(&taken, 409, Some("uniqueness"));
    assert!(
        taken.body["detail"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{}",
        taken.raw
    );
    let after = app
        .req("GET", &format!("/scim/v2/Groups/{outer_id}"), None)
        .await;
    assert_eq!(after.body, before.body, "nothing of either kept");
}

async fn bulk_and_large_membership(b: Backend) {
    let app = app(b).await;
    let ops: Vec<Value> = (0..1000)
        .map(|i| json!({"method": "POST", "path": "/Users", "bulkId": format!("u{i}"), "data": {"schemas": [USER], "userName": format!("bulk{i:04}")}}))
        .collect();
    let r = app.req("POST", "/scim/v2/Bulk", Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}))).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        &r.raw[..r.raw.len().min(500)]
    );
    let results = r.body["Operations"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|o| o["status"] == "201"));
    let ids: Vec<String> = results
        .iter()
        .map(|o| {
            o["location"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let g = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Everyone"})),
        )
        .await;
    let gid = g.body["id"].as_str().unwrap().to_string();
    let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let add = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{gid}?excludedAttributes=members"),
            Some(patch(
                json!([{"op": "add", "path": "members", "value": members}]),
            )),
        )
        .await;
    assert_eq!(add.status, StatusCode::OK, "{}", add.raw);
    let full = app
        .req("GET", &format!("/scim/v2/Groups/{gid}"), None)
        .await;
    assert_eq!(full.body["members"].as_array().unwrap().len(), 1000);
    let rm = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{gid}"),
            Some(patch(
                json!([{"op": "remove", "path": "members", "value": members}]),
            )),
        )
        .await;
    assert_eq!(rm.status, StatusCode::NO_CONTENT);
    let emptied = app
        .req("GET", &format!("/scim/v2/Groups/{gid}"), None)
        .await;
    assert!(emptied.body.get("members").is_none(), "{}", emptied.raw);
    // bulkId references, and failOnErrors.
    let r = app
        .req("POST", "/scim/v2/Bulk", Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
            {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {"schemas": [GROUP], "displayName": "Refs", "members": [{"type": "User", "value": "bulkId:newbie"}]}},
            {"method": "POST", "path": "/Users", "bulkId": "newbie", "data": {"schemas": [USER], "userName": "newbie"}},
            {"method": "PATCH", "path": "/Users/bulkId:newbie", "data": patch(json!([{"op": "replace", "path": "title", "value": "New"}]))},
            {"method": "POST", "path": "/Users", "bulkId": "dup", "data": {"schemas": [USER], "userName": "newbie"}},
            {"method": "DELETE", "path": "/Users/nope"}
        ]})))
        .await;
    let statuses: Vec<&str> = r.body["Operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201", "201", "200", "409", "404"], "{}", r.raw);
    let stop = app
        .req("POST", "/scim/v2/Bulk", Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "failOnErrors": 1, "Operations": [
            {"method": "DELETE", "path": "/Users/nope"},
            {"method": "POST", "path": "/Users", "bulkId": "x", "data": {"schemas": [USER], "userName": "never"}}
        ]})))
        .await;
    assert_eq!(stop.body["Operations"].as_array().unwrap().len(), 1);
    let never = app
        .req(
            "GET",
            &format!("/scim/v2/Users?filter={}", enc(r#"userName eq "never""#)),
            None,
        )
        .await;
    assert_eq!(never.body["totalResults"], 0);
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")}))
        .collect();
    let r = app.req("POST", "/scim/v2/Bulk", Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": too_many}))).await;
    assert_scim_error(&r, 413, None);
}

/// Member PATCHes that name their members read only those members; the result must be the
/// same as applying the operations to the whole list.
async fn member_patches_change_only_what_they_name(b: Backend) {
    let app = app(b).await;
    let mut ids = Vec::new();
    for name in ["ma", "mb", "mc", "md"] {
        let r = app
            .req(
                "POST",
                "/scim/v2/Users",
                Some(json!({"schemas": [USER], "userName": name})),
            )
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let (a, b2, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let g = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Named",
                "members": [{"value": a}, {"value": b2}, {"value": c}]})),
        )
        .await;
    let gid = g.body["id"].as_str().unwrap().to_string();
    let members = |r: &common::Resp| -> BTreeSet<String> {
        r.body["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|v| v["value"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Asking for attributes (all but externalId): each PATCH answers with the group.
    let url = format!("/scim/v2/Groups/{gid}?excludedAttributes=externalId");
    // An existing member added again, a new one added, one removed by filter, a non-member
    // removed by value (Entra ID's form), and a rename, in one request.
    let r = app
        .req(
            "PATCH",
            &url,
            Some(patch(json!([
                {"op": "add", "path": "members", "value": [{"value": b2}, {"value": d}]},
                {"op": "remove", "path": format!("members[value eq \"{c}\"]")},
                {"op": "Remove", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:members", "value": [{"value": "not-a-member"}]},
                {"op": "replace", "path": "displayName", "value": "Named 2"},
            ]))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        members(&r),
        BTreeSet::from([a.clone(), b2.clone(), d.clone()])
    );
    assert_eq!(r.body["displayName"], "Named 2");
    let version = r.headers["etag"].clone();
    // Adding a member who is already there changes nothing: no new version.
    let again = app
        .req(
            "PATCH",
            &url,
            Some(patch(
                json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
            )),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.raw);
    assert_eq!(again.headers["etag"], version);
    // Ids are case-exact: an upper-cased id names no member.
    let upper = app
        .req(
            "PATCH",
            &url,
            Some(patch(json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", a.to_uppercase())}]))),
        )
        .await;
    assert_eq!(upper.status, StatusCode::OK, "{}", upper.raw);
    assert_eq!(members(&upper).len(), 3);
    // An unknown id added is refused, and nothing of the request is written.
    let bad = app
        .req(
            "PATCH",
            &url,
            Some(patch(json!([
                {"op": "remove", "path": format!("members[value eq \"{a}\"]")},
                {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
            ]))),
        )
        .await;
    assert_scim_error(&bad, 400, Some("invalidValue"));
    let now = app.req("GET", &url, None).await;
    assert_eq!(
        members(&now),
        BTreeSet::from([a.clone(), b2.clone(), d.clone()])
    );
    // A remove without a value or filter clears the list.
    let clear = app
        .req(
            "PATCH",
            &url,
            Some(patch(json!([{"op": "remove", "path": "members"}]))),
        )
        .await;
    assert_eq!(clear.status, StatusCode::OK, "{}", clear.raw);
    assert!(members(&clear).is_empty());
}

async fn audit_and_outbox_are_atomic(b: Backend) {
    let app = app(b).await;
    let id = app.user("audited@x").await;
    app.req(
        "PATCH",
        &format!("/scim/v2/Users/{id}"),
        Some(patch(
            json!([{"op": "replace", "path": "active", "value": false}]),
        )),
    )
    .await;
    app.req(
        "PATCH",
        &format!("/scim/v2/Users/{id}"),
        Some(patch(
            json!([{"op": "replace", "path": "active", "value": true}]),
        )),
    )
    .await;
    app.req(
        "POST",
        "/scim/v2/Users",
        Some(json!({"schemas": [USER], "userName": "AUDITED@x"})),
    )
    .await; // 409: no record
    app.req("DELETE", &format!("/scim/v2/Users/{id}"), None)
        .await;
    let after_delete = app.req("GET", "/scim/v2/Users?count=0", None).await;
    assert_eq!(
        after_delete.body["totalResults"], 0,
        "the kept count follows deletes"
    );
    let rows = app.store.audit_rows(&app.tenant, 0, 100).await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "credential.create",
            "user.create",
            "user.deactivate",
            "user.reactivate",
            "user.delete"
        ]
    );
    // The tenant and its token were made by the test harness; the SCIM writes by the token.
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r.action.starts_with("user."))
        .collect();
    assert!(
        rows.iter()
            .all(|r| r.actor == "test-idp" && !r.request_id.is_empty())
    );
    assert!(
        rows[1]
            .before
            .as_deref()
            .unwrap()
            .contains("\"active\":true")
    );
    assert!(
        rows[1]
            .after
            .as_deref()
            .unwrap()
            .contains("\"active\":false")
    );
    assert_eq!(
        outbox_types(&app).await,
        [
            "credential.created",
            "user.provisioned",
            "user.deprovisioned",
            "user.provisioned",
            "user.deprovisioned"
        ]
    );
    let verified = common::verify_audit(&app.store, Some(&app.tenant), None)
        .await
        .unwrap();
    assert!(verified[0].2.is_ok(), "{:?}", verified);
    assert_eq!(verified[0].1, 6);
}

async fn concurrent_duplicate_creates(b: Backend) {
    let app = app(b).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let router = app.router.clone();
        let token = app.token.clone();
        tasks.push(tokio::spawn(async move {
            let req = axum::http::Request::builder()
                .method("POST")
                .uri("/scim/v2/Users")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/scim+json")
                .body(axum::body::Body::from(
                    json!({"schemas": [USER], "userName": "race@x"}).to_string(),
                ))
                .unwrap();
            tower::ServiceExt::oneshot(router, req)
                .await
                .unwrap()
                .status()
        }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((created, conflicts), (1, 19));
    let rows = app.store.audit_rows(&app.tenant, 0, 100).await.unwrap();
    let creates = rows.iter().filter(|r| r.action == "user.create").count();
    assert_eq!(creates, 1);
}

/// PATCHes racing on one user with the same `If-Match`, and on others without one, in one
/// batch of the tenant's writes: exactly one conditional PATCH wins, the rest get 412 and
/// change nothing, and every unconditional one lands once (on PostgreSQL the batch runs
/// again with a savepoint per write when one fails).
async fn concurrent_conditional_patches(b: Backend) {
    let app = std::sync::Arc::new(app(b).await);
    let raced = app.user("raced@x").await;
    let mut others = Vec::new();
    for i in 0..10 {
        others.push(app.user(&format!("other{i}@x")).await);
    }
    let mut tasks = Vec::new();
    for i in 0..30 {
        let app = app.clone();
        let (id, condition) = if i % 3 == 0 {
            (others[i / 3].clone(), None)
        } else {
            (raced.clone(), Some("W/\"1\""))
        };
        tasks.push(tokio::spawn(async move {
            let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": format!("patch {i}")}]});
            let headers: Vec<(&str, &str)> = condition.iter().map(|c| ("if-match", *c)).collect();
            let r = app
                .req_h("PATCH", &format!("/scim/v2/Users/{id}"), Some(body), &headers)
                .await;
            (condition.is_some(), r.status)
        }));
    }
    let (mut won, mut refused, mut plain) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (true, StatusCode::OK) => won += 1,
            (true, StatusCode::PRECONDITION_FAILED) => refused += 1,
            (false, StatusCode::OK) => plain += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, refused, plain), (1, 19, 10));
    let r = app
        .req("GET", &format!("/scim/v2/Users/{raced}"), None)
        .await;
    assert_eq!(r.headers["etag"], "W/\"2\"");
    let rows = app.store.audit_rows(&app.tenant, 0, 1000).await.unwrap();
    let updates = rows.iter().filter(|r| r.action == "user.update").count();
    assert_eq!(updates, 11);
    let verified = common::verify_audit(&app.store, Some(&app.tenant), None)
        .await
        .unwrap();
    assert!(verified[0].2.is_ok(), "{:?}", verified);
}

async fn discovery_search_and_admin(b: Backend) {
    let app = app(b).await;
    let spc = app
        .req_as("", "GET", "/scim/v2/ServiceProviderConfig", None, &[])
        .await;
    assert_eq!(spc.status, StatusCode::OK);
    assert_eq!(spc.body["bulk"]["maxOperations"], 1000);
    assert_eq!(spc.body["pagination"]["cursor"], true);
    assert_eq!(spc.body["changePassword"]["supported"], false);
    let schemas = app.req("GET", "/scim/v2/Schemas", None).await;
    assert_eq!(schemas.body["totalResults"], 4);
    let one = app
        .req("GET", &format!("/scim/v2/Schemas/{ENT}"), None)
        .await;
    assert_eq!(one.body["name"], "EnterpriseUser");
    let rts = app.req("GET", "/scim/v2/ResourceTypes", None).await;
    assert_eq!(
        rts.body["Resources"][0]["schemaExtensions"][0]["schema"],
        ENT
    );
    assert_eq!(
        app.req("GET", "/scim/v2/ResourceTypes/Group", None)
            .await
            .body["endpoint"],
        "/Groups"
    );
    app.user("searchme@x").await;
    app.req(
        "POST",
        "/scim/v2/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "searchme"})),
    )
    .await;
    let s = app
        .req("POST", "/scim/v2/Users/.search", Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName sw \"search\"", "attributes": ["userName"], "count": 10})))
        .await;
    assert_eq!(s.body["totalResults"], 1, "{}", s.raw);
    let all = app
        .req("POST", "/scim/v2/.search", Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "meta.lastModified pr"})))
        .await;
    assert_eq!(all.body["totalResults"], 2, "{}", all.raw);
    // Admin API: tenants and tokens.
    let bad = app
        .req_as(
            "wrong",
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "x"})),
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let t = app
        .req_as(
            common::ADMIN,
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "Acme"})),
            &[],
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{}", t.raw);
    let tid = t.body["id"].as_str().unwrap();
    let tok = app
        .req_as(
            common::ADMIN,
            "POST",
            &format!("/api/v1/tenants/{tid}/scim-tokens"),
            Some(json!({"name": "okta"})),
            &[],
        )
        .await;
    assert_eq!(tok.status, StatusCode::CREATED);
    let token = tok.body["token"].as_str().unwrap();
    assert_eq!(
        app.req_as(token, "GET", "/scim/v2/Users", None, &[])
            .await
            .body["totalResults"],
        0
    );
    let missing = app
        .req_as(
            common::ADMIN,
            "POST",
            "/api/v1/tenants/nope/scim-tokens",
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let revoke = app
        .req_as(
            common::ADMIN,
            "DELETE",
            &format!(
                "/api/v1/tenants/{tid}/scim-tokens/{}",
                tok.body["id"].as_str().unwrap()
            ),
            None,
            &[],
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.req_as(token, "GET", "/scim/v2/Users", None, &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.req_as("", "GET", "/healthz", None, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.req_as("", "GET", "/readyz", None, &[]).await.status,
        StatusCode::OK
    );
}

async fn rate_limit_answers_429(b: Backend) {
    let app = app_with(
        b,
        Config {
            rate_per_second: 1,
            rate_burst: 3,
            ..Config::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.req("GET", "/scim/v2/Users?count=0", None).await.status,
            StatusCode::OK
        );
    }
    let r = app.req("GET", "/scim/v2/Users?count=0", None).await;
    assert_scim_error(&r, 429, None);
    assert!(
        r.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

/// What discovery advertises is a contract with IdPs: any change to it must be deliberate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_snapshot() {
    let app = app(Backend::Sqlite).await;
    let spc = app
        .req_as("", "GET", "/scim/v2/ServiceProviderConfig", None, &[])
        .await;
    insta::assert_json_snapshot!("service_provider_config", spc.body);
    let rts = app
        .req_as("", "GET", "/scim/v2/ResourceTypes", None, &[])
        .await;
    insta::assert_json_snapshot!("resource_types", rts.body);
}

/// `GET /Users/{id}` answers from rendered users kept in memory (SQLite): every change to
/// what a user shows reaches the next read — its own PATCH, a group it is in (directly or
/// nested) renamed or joined, a plan of the product catalogue changed by a model that names
/// another tenant, its deletion — and a read under another host is not served another
/// host's links. On PostgreSQL nothing is cached and the same holds.
async fn a_cached_user_follows_every_change(b: Backend) {
    let app = app(b).await;
    let get = |id: String| {
        let app = &app;
        async move {
            let r = app.req("GET", &format!("/scim/v2/Users/{id}"), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
            r
        }
    };
    let groups = |r: &common::Resp| -> BTreeSet<String> {
        r.body["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g["display"].as_str().unwrap().to_string())
            .collect()
    };
    let u = app.user("cached@example.com").await;
    let first = get(u.clone()).await;
    assert_eq!(
        get(u.clone()).await.raw,
        first.raw,
        "a second read answers the same"
    );
    assert!(groups(&first).is_empty());

    // Its own PATCH.
    app.set_active(&u, false).await;
    let r = get(u.clone()).await;
    assert_eq!(r.body["active"], json!(false), "{}", r.raw);
    assert_ne!(r.headers["etag"], first.headers["etag"]);

    // A group it joins, then a group that group joins: the user's version does not move.
    let r = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Inner", "members": [{"value": u}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let inner = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        groups(&get(u.clone()).await),
        BTreeSet::from(["Inner".to_string()])
    );
    let r = app
        .req(
            "POST",
            "/scim/v2/Groups",
            Some(
                json!({"schemas": [GROUP], "displayName": "Outer", "members": [{"value": inner}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let outer = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        groups(&get(u.clone()).await),
        BTreeSet::from(["Inner".to_string(), "Outer".to_string()])
    );
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Groups/{outer}"),
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "Renamed"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    assert_eq!(
        groups(&get(u.clone()).await),
        BTreeSet::from(["Inner".to_string(), "Renamed".to_string()])
    );

    // The catalogue, changed by a model that names another tenant: every tenant's users show
    // it.
    app.set_active(&u, true).await;
    let product = format!("cache-{}", &app.tenant[app.tenant.len() - 12..]);
    let model = |features: Value, tenants: Value| {
        json!({
            "products": [{"key": product, "name": "Cached", "plans": [{"key": "pro", "rank": 0, "features": features}]}],
            "tenants": tenants,
        })
    };
    let sub = json!([{"id": app.tenant, "rules": [], "subscriptions": [{
        "product": product, "plan": "pro", "seats": 10,
        "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2027-06-01T00:00:00Z"}]}]);
    let r = app
        .admin("PUT", "/api/v1/model", Some(model(json!(["a", "b"]), sub)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let features = |r: &common::Resp| r.body[common::EXT]["features"].clone();
    assert_eq!(features(&get(u.clone()).await), json!(["a", "b"]));
    // The second model changes the product and locks only another tenant.
    let other = app
        .admin("POST", "/api/v1/tenants", Some(json!({"name": "Other"})))
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.raw);
    let other = json!([{"id": other.body["id"], "rules": [], "subscriptions": []}]);
    let r = app
        .admin(
            "PUT",
            "/api/v1/model",
            Some(model(json!(["a", "c"]), other)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(features(&get(u.clone()).await), json!(["a", "c"]));

    // Another host: its own links.
    let r = app
        .send(
            axum::http::Request::get(format!("/scim/v2/Users/{u}"))
                .header("host", "other.test")
                .header("authorization", format!("Bearer {}", app.token))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert!(
        r.body["meta"]["location"]
            .as_str()
            .unwrap()
            .contains("other.test"),
        "{}",
        r.raw
    );
    assert!(
        get(u.clone()).await.body["meta"]["location"]
            .as_str()
            .unwrap()
            .contains("scim.test")
    );

    // Deleted: gone, not served from memory.
    let r = app
        .req("DELETE", &format!("/scim/v2/Users/{u}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    let r = app.req("GET", &format!("/scim/v2/Users/{u}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
}

both_backends!(
    a_cached_user_follows_every_change,
    create_get_and_duplicate,
    entra_sequence,
    okta_sequence,
    errors_are_scim_and_never_partial,
    tenant_isolation,
    etags,
    pagination_sorting_projection,
    sql_and_memory_filters_agree,
    nested_groups_and_cycles,
    bulk_and_large_membership,
    member_patches_change_only_what_they_name,
    audit_and_outbox_are_atomic,
    concurrent_duplicate_creates,
    concurrent_conditional_patches,
    discovery_search_and_admin,
    rate_limit_answers_429,
);
