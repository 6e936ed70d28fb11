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

/// A client's request id that is not 1–128 of `[A-Za-z0-9._:-]` is replaced, and no CSV
/// export carries a live formula (OWASP's CSV-injection guidance).
async fn csv_exports_run_no_formulas(b: Backend) {
    let app = common::app(b).await;
    let formula = "=HYPERLINK(\"http://x\")";
    // A token named like a formula: its name is the audit actor, a cell of its own.
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/tenants/{}/scim-tokens", app.tenant),
            Some(json!({"name": "=SUM(1+1)"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let evil = r.body["token"].as_str().unwrap().to_string();
    let r = app
        .req_as(
            &evil,
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "eve@example.com"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let r = app
        .req_h(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "=cmd|' /C calc'!A0@example.com"})),
            &[("x-request-id", formula)],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let rid = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(rid, formula);
    assert_eq!(rid.len(), 36, "a fresh UUID: {rid}");
    let r = app
        .req_h(
            "GET",
            "/scim/v2/Users?count=1",
            None,
            &[("x-request-id", "ok-id_1.2:3")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "ok-id_1.2:3");

    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/audit?format=csv", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let mut rdr = csv::ReaderBuilder::new().from_reader(r.raw.as_bytes());
    let mut cells = 0;
    for rec in rdr.records() {
        for cell in rec.unwrap().iter() {
            cells += 1;
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a live formula: {cell:?}"
            );
        }
    }
    assert!(cells > 10);
    // The actor is there, as text.
    assert!(r.raw.contains(",'=SUM(1+1),"), "{}", r.raw);
}

both_backends!(csv_exports_run_no_formulas);

/// Sends a raw body (bytes as given: duplicate keys survive) with the tenant's SCIM token.
async fn raw_body(
    app: &common::TestApp,
    method: &str,
    uri: &str,
    body: &str,
    admin: bool,
) -> common::Resp {
    let token = if admin {
        common::ADMIN.to_string()
    } else {
        app.token.clone()
    };
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/scim+json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    app.send(req).await
}

/// Lenient input the probe found: control and disguising characters in names, one name
/// spelt twice in Unicode, unknown schema URNs, keys named twice, a filter that is not
/// UTF-8. Each is refused, and nothing is written.
async fn input_is_strict(b: Backend) {
    let app = common::app(b).await;
    for bad in [
        "tab\tbed",
        "new\nline",
        "bell\u{7}",
        "rtl\u{202E}moc.evil",
        "\u{FEFF}bom",
    ] {
        for body in [
            json!({"schemas": [USER], "userName": bad}),
            json!({"schemas": [USER], "userName": "ok-name", "externalId": bad}),
            json!({"schemas": [USER], "userName": "ok-name2", "displayName": bad}),
        ] {
            let r = app.req("POST", "/scim/v2/Users", Some(body.clone())).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.raw);
            assert_eq!(r.body["scimType"], "invalidValue", "{}", r.raw);
        }
        let r = app
            .req(
                "POST",
                "/scim/v2/Groups",
                Some(json!({"schemas": [GROUP], "displayName": bad})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    }
    // Through PATCH too.
    let id = app.user("plain@example.com").await;
    let r = app
        .req(
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": "x\u{202E}y"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);

    // Composed and decomposed: one name.
    let composed = "\u{e9}mile@example.com";
    let decomposed = "e\u{301}mile@example.com";
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": composed})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": decomposed})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.raw);
    assert_eq!(r.body["scimType"], "uniqueness");
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "E\u{301}MILE@example.com"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "case and form both folded: {}",
        r.raw
    );
    // A filter in either form finds her.
    let filter =
        url::form_urlencoded::byte_serialize(format!("userName eq \"{decomposed}\"").as_bytes())
            .collect::<String>();
    let r = app
        .req("GET", &format!("/scim/v2/Users?filter={filter}"), None)
        .await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.raw);

    // Unknown schema URNs.
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER, "urn:example:params:scim:schemas:evil:2.0:User"], "userName": "s@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(r.raw.contains("urn:example"), "{}", r.raw);

    // Keys named twice: a SCIM body, a typed admin body, a billing-shaped map.
    let r = raw_body(
        &app,
        "POST",
        "/scim/v2/Users",
        &format!(r#"{{"schemas": ["{USER}"], "userName": "dup1@example.com", "userName": "dup2@example.com"}}"#),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert_eq!(r.body["scimType"], "invalidSyntax", "{}", r.raw);
    let r = raw_body(
        &app,
        "POST",
        "/api/v1/tenants",
        r#"{"name": "a", "name": "b"}"#,
        true,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert_eq!(r.body["scimType"], "invalidSyntax", "{}", r.raw);

    // A filter that is not UTF-8 once decoded.
    let r = app
        .req(
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22%ff%22",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert_eq!(r.body["scimType"], "invalidFilter", "{}", r.raw);

    // Nothing of it was written: plain and émile only.
    let r = app.req("GET", "/scim/v2/Users?count=0", None).await;
    assert_eq!(r.body["totalResults"], 2, "{}", r.raw);
    let r = app.req("GET", "/scim/v2/Groups?count=0", None).await;
    assert_eq!(r.body["totalResults"], 0, "{}", r.raw);
}

both_backends!(input_is_strict);

/// Sizes are bounded: one attribute (64 KiB by default), one resource (128 KiB), one page
/// (4 MiB; here 200 KB), each advertised at `/api/v1/limits`. A page that would pass its
/// budget stops early with a correct `itemsPerPage`, and paging still visits every resource
/// once, by index and by cursor.
async fn sizes_are_bounded(b: Backend) {
    let app = common::app_with(
        b,
        seatkeeper::Config {
            rate_per_second: 100_000,
            rate_burst: 100_000,
            max_page_bytes: 200_000,
            ..seatkeeper::Config::default()
        },
    )
    .await;
    let r = app.req("GET", "/api/v1/limits", None).await;
    assert_eq!(r.body["max_attribute_bytes"], 65_536, "{}", r.raw);
    assert_eq!(r.body["max_resource_bytes"], 131_072);
    assert_eq!(r.body["max_page_bytes"], 200_000);

    // The probe's million-character nickName.
    let huge = "n".repeat(1_000_000);
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "huge@example.com", "nickName": huge})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(r.raw.contains("'nickName' is 1000000 bytes"), "{}", r.raw);
    let over = "o".repeat(65_537);
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "over@example.com", "nickName": over})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(
        r.raw.contains("nickName") && r.raw.contains("65536"),
        "{}",
        r.raw
    );
    // Under each attribute's limit, over the resource's.
    let big = "b".repeat(60_000);
    let r = app
        .req(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER], "userName": "wide@example.com", "nickName": big, "title": big, "profileUrl": big})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(r.raw.contains("131072"), "{}", r.raw);
    // PATCH cannot grow a resource past it either.
    let id = app.user("grow@example.com").await;
    for (i, attr) in ["nickName", "title", "profileUrl"].iter().enumerate() {
        let r = app
            .req(
                "PATCH",
                &format!("/scim/v2/Users/{id}"),
                Some(json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": attr, "value": big}]})),
            )
            .await;
        let want = if i < 2 {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status, want, "{attr}: {}", r.raw);
    }

    // 9 users of ~60 KB (grow is one of them): three fit a 200 KB page.
    for i in 0..8 {
        let r = app
            .req(
                "POST",
                "/scim/v2/Users",
                Some(json!({"schemas": [USER], "userName": format!("page{i}@example.com"), "nickName": big})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut start = 1;
    loop {
        let r = app
            .req(
                "GET",
                &format!("/scim/v2/Users?startIndex={start}&count=100"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        assert!(
            r.raw.len() < 200_000 + 70_000,
            "a page of {} bytes",
            r.raw.len()
        );
        let items = r.body["Resources"].as_array().unwrap();
        assert_eq!(r.body["itemsPerPage"], items.len());
        assert_eq!(r.body["totalResults"], 9);
        assert!(!items.is_empty());
        for u in items {
            assert!(
                seen.insert(u["id"].as_str().unwrap().to_string()),
                "seen twice"
            );
        }
        start += items.len();
        if start > 9 {
            break;
        }
    }
    assert_eq!(seen.len(), 9);
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let r = app
            .req(
                "GET",
                &format!("/scim/v2/Users?cursor={cursor}&count=100"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        let items = r.body["Resources"].as_array().unwrap();
        assert_eq!(r.body["itemsPerPage"], items.len());
        for u in items {
            assert!(
                seen.insert(u["id"].as_str().unwrap().to_string()),
                "seen twice"
            );
        }
        pages += 1;
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9);
    assert!(pages >= 3, "{pages} pages");
    // A filter evaluated in memory pages the same way.
    let r = app
        .req("GET", "/scim/v2/Users?filter=nickName%20pr&count=100", None)
        .await;
    let n = r.body["Resources"].as_array().unwrap().len();
    assert!((1..9).contains(&n), "{n}");
    assert_eq!(r.body["itemsPerPage"], n);
}

both_backends!(sizes_are_bounded);
