//! End to end: the real `seatkeeper` binary on 127.0.0.1, driven over HTTP and its CLI.

use crate::binary;
use crate::common::{self, GROUP, PATCH, USER};

use std::process::Command;
use std::time::Duration;

use binary::{Api, BIN, Server, cli_ok, database};
use common::Backend;
use serde_json::{Value, json};

async fn provisioning_through_the_binary(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Contoso"]);
    let tenant = tenant.trim();
    assert_eq!(
        tenant.len(),
        36,
        "tenant create prints the id alone: {tenant:?}"
    );
    let token = cli_ok(
        &db,
        &["token", "create", "--tenant", tenant, "--name", "entra"],
    );
    let token = token.trim();
    assert!(token.starts_with("skt_") && !token.contains('\n'));
    let server = Server::start_as(&db, Some("e2e-admin"), &[]);
    let c = Api::new(&server.base, token, "");

    // Entra ID: look up, create, update, deactivate.
    let (s, found) = c
        .scim(
            "GET",
            "/Users?filter=userName%20eq%20%22e2e%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!((s, found["totalResults"].clone()), (200, json!(0)));
    let (s, user) = c.scim("POST", "/Users", Some(json!({"schemas": [USER], "userName": "e2e@contoso.com", "active": true, "externalId": "x1"}))).await;
    assert_eq!(s, 201, "{user}");
    let id = user["id"].as_str().unwrap().to_string();
    assert!(
        user["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with(&server.base)
    );
    let (s, _) = c
        .scim(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "E2E@contoso.com"})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, off) = c.scim("PATCH", &format!("/Users/{id}"), Some(json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}))).await;
    assert_eq!((s, off["active"].clone()), (200, json!(false)));
    // Groups: create, add and remove members.
    let (s, g) = c
        .scim(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "E2E"})),
        )
        .await;
    assert_eq!(s, 201);
    let gid = g["id"].as_str().unwrap().to_string();
    // A group PATCH answers 204; asked for attributes, 200 with the group.
    let (s, g) = c.scim("PATCH", &format!("/Groups/{gid}"), Some(json!({"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": id}]}]})))
        .await;
    assert_eq!((s, g), (204, Value::Null));
    let (s, g) = c.scim("GET", &format!("/Groups/{gid}"), None).await;
    assert_eq!((s, g["members"][0]["value"].clone()), (200, json!(id)));
    let (s, g) = c.scim("PATCH", &format!("/Groups/{gid}?excludedAttributes=externalId"), Some(json!({"schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": id}]}]})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(g["displayName"], "E2E");
    assert!(g.get("members").is_none(), "{g}");
    // Okta: PUT replaces the whole user, including deactivation.
    let (s, okta) = c.scim("POST", "/Users", Some(json!({"schemas": [USER], "userName": "okta@contoso.com", "name": {"givenName": "O", "familyName": "K"}, "active": true})))
        .await;
    assert_eq!(s, 201);
    let oid = okta["id"].as_str().unwrap().to_string();
    let (s, put) = c.scim("PUT", &format!("/Users/{oid}"), Some(json!({"schemas": [USER], "id": oid, "userName": "okta@contoso.com", "name": {"givenName": "Okta"}, "active": false})))
        .await;
    assert_eq!(s, 200, "{put}");
    assert_eq!(
        (put["active"].clone(), put["name"].clone()),
        (json!(false), json!({"givenName": "Okta"}))
    );
    let (s, _) = c.scim("GET", "/Groups/not-a-real-id", None).await;
    assert_eq!(s, 404);
    let (s, _) = c.scim("GET", "/Users/not-a-real-id", None).await;
    assert_eq!(s, 404);
    let (s, _) = c.scim("DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(s, 204);
    // Operations endpoints.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("seatkeeper_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("seatkeeper_http_request_duration_seconds"));
    assert_eq!(
        reqwest::get(format!("{}/readyz", server.base))
            .await
            .unwrap()
            .status(),
        200
    );
    // The admin API creates tenants too.
    let t = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client")
        .post(format!("{}/api/v1/tenants", server.base))
        .bearer_auth("e2e-admin")
        .json(&json!({"name": "Fabrikam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 201);
    drop(server);
    let verify = cli_ok(&db, &["audit", "verify", "--tenant", tenant]);
    assert!(verify.starts_with("ok"), "{verify}");
}

/// Every answered write survives a SIGKILL of the process.
async fn committed_writes_survive_sigkill(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Crash"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let mut server = Server::start_as(&db, Some("x"), &[]);
    let c = Api::new(&server.base, &token, "");
    let mut ids = Vec::new();
    for i in 0..50 {
        let (s, u) = c
            .scim(
                "POST",
                "/Users",
                Some(json!({"schemas": [USER], "userName": format!("crash{i}")})),
            )
            .await;
        assert_eq!(s, 201);
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    server.kill(); // SIGKILL
    let server = Server::start_as(&db, Some("x"), &[]);
    let c = Api::new(&server.base, &token, "");
    for id in &ids {
        let (s, _) = c.scim("GET", &format!("/Users/{id}"), None).await;
        assert_eq!(s, 200, "user {id} was answered 201 but lost");
    }
    drop(server);
    assert!(cli_ok(&db, &["audit", "verify", "--tenant", &tenant]).starts_with("ok"));
}

/// The admin token is generated on first start, printed once, and kept.
#[tokio::test]
async fn admin_token_is_generated_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("admin.db").display());
    let mut first = Server::start_as(&db, None, &[]);
    std::thread::sleep(Duration::from_millis(100));
    let printed = first.stdout.join("");
    let token: String = printed
        .split("generated admin token")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().find(|w| w.starts_with("ska_")))
        .expect("the first start prints the admin token")
        .to_string();
    let ok = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client")
        .get(format!("{}/api/v1/tenants", first.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    first.kill();
    let second = Server::start_as(&db, None, &[]);
    assert!(!second.stdout.join("").contains("generated admin token"));
    let still = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client")
        .get(format!("{}/api/v1/tenants", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
}

/// `audit verify` fails, naming the record, after a stored row is edited by hand.
#[tokio::test]
async fn audit_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    let tenant = cli_ok(&db, &["tenant", "create", "Audit"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let server = Server::start_as(&db, Some("x"), &[]);
    let c = Api::new(&server.base, &token, "");
    for i in 0..3 {
        c.scim(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": format!("a{i}")})),
        )
        .await;
    }
    drop(server);
    // The tenant's creation and its token's (by the CLI) come first, then the three users.
    assert!(cli_ok(&db, &["audit", "verify"]).contains("5 records, chain intact"));
    let store = seatkeeper::Store::connect(&db, &Default::default())
        .await
        .unwrap();
    store
        .execute_unchecked(
            "UPDATE audit_log SET after_doc = '{\"userName\":\"evil\"}' WHERE seq = 4",
            vec![],
        )
        .await
        .unwrap();
    store.close().await;
    let out = Command::new(BIN)
        .args(["audit", "verify", "--database", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BROKEN") && text.contains("record 4"),
        "{text}"
    );
}

/// Two `seatkeeper` processes on one PostgreSQL: racing creates of one userName give exactly
/// one user, every other create lands, and the tenant's audit chain stays one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_keep_uniqueness_and_one_audit_chain() {
    let db = common::postgres_url();
    let tenant = cli_ok(&db, &["tenant", "create", "TwoNodes"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let (a, b) = (
        Server::start_as(&db, Some("x"), &[]),
        Server::start_as(&db, Some("x"), &[]),
    );
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let mut tasks = Vec::new();
    for i in 0..60 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (http, token) = (http.clone(), token.clone());
        // Every third request races for the same userName; the rest are distinct.
        let user_name = if i % 3 == 0 {
            "contended@x".to_string()
        } else {
            format!("distinct{i}@x")
        };
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/scim/v2/Users"))
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(json!({"schemas": [USER], "userName": user_name}).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let created = statuses.iter().filter(|s| **s == 201).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, conflicts), (41, 19), "{statuses:?}");
    let c = Api::new(&b.base, &token, "");
    let (_, list) = c.scim("GET", "/Users?count=0", None).await;
    assert_eq!(list["totalResults"], 41);
    drop((a, b));
    let verify = cli_ok(&db, &["audit", "verify", "--tenant", &tenant]);
    // 41 users after the tenant's creation and its token's.
    assert!(verify.contains("43 records, chain intact"), "{verify}");
}

/// A user the server keeps rendered in memory follows a change another process commits to
/// the SQLite file (an operator's repair here; the CLI's `apply` the same way) within the
/// server's look interval, though nothing in the server wrote it.
#[tokio::test]
async fn a_cached_user_follows_another_process_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("outside.db").display());
    let tenant = cli_ok(&db, &["tenant", "create", "Outside"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let server = Server::start(&db, &[]);
    let c = Api::new(&server.base, &token, &tenant);
    let (status, user) = c
        .scim(
            "POST",
            "/Users",
            Some(
                json!({"schemas": [USER], "userName": "kept@example.com", "displayName": "Before"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let path = format!("/Users/{}", user["id"].as_str().unwrap());
    for _ in 0..3 {
        let (_, u) = c.scim("GET", &path, None).await;
        assert_eq!(u["displayName"], "Before");
    }
    let store = seatkeeper::Store::connect(&db, &Default::default())
        .await
        .unwrap();
    store
        .execute_unchecked(
            "UPDATE scim_users SET doc = json_set(doc, '$.displayName', 'After') WHERE id = $1",
            vec![user["id"].as_str().unwrap().into()],
        )
        .await
        .unwrap();
    store.close().await;
    let started = std::time::Instant::now();
    loop {
        let (_, u) = c.scim("GET", &path, None).await;
        if u["displayName"] == "After" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the server still answers {u} after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The look interval is 250 ms; allow a loaded machine some slack.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// The compliance report through the binary: saved as received, it verifies with
/// `seatkeeper audit verify-report` against the key `seatkeeper audit public-key` prints, and
/// fails once a byte is changed. `/api/v1/usage` answers the same tenants as CSV.
#[tokio::test]
async fn a_signed_compliance_report_verifies_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("report.db").display());
    let tenant = cli_ok(&db, &["tenant", "create", "Reported"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let key = cli_ok(&db, &["audit", "public-key"]).trim().to_string();
    let server = Server::start(&db, &[]);
    let c = Api::new(&server.base, &token, &tenant);
    c.admin(
        "PUT",
        "/model",
        Some(json!({
            "products": [{"key": "ws", "name": "Workspace", "plans": [{"key": "pro", "rank": 0, "features": ["x"]}]}],
            "tenants": [{"id": tenant, "rules": [], "subscriptions": [{"product": "ws", "plan": "pro", "seats": 1,
                "enforcement": "soft", "starts_at": "2026-01-01T00:00:00Z"}]}],
        })),
    )
    .await;
    c.user("a@r.test", json!({})).await;
    c.user("b@r.test", json!({})).await;
    let resp = c
        .http
        .get(format!("{}/api/v1/reports/compliance", server.base))
        .bearer_auth(binary::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let signature = resp.headers()["seatkeeper-signature"]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.bytes().await.unwrap();
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["finding"] == "overage" && f["tenant"] == tenant.as_str()),
        "{report}"
    );
    let file = dir.path().join("report.json");
    std::fs::write(&file, &body).unwrap();
    let verify = |path: &std::path::Path| {
        Command::new(BIN)
            .args([
                "audit",
                "verify-report",
                path.to_str().unwrap(),
                "--signature",
                &signature,
                "--public-key",
                &key,
            ])
            .output()
            .unwrap()
    };
    let ok = verify(&file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("signature valid"));
    let changed = dir.path().join("changed.json");
    std::fs::write(
        &changed,
        String::from_utf8_lossy(&body).replacen("overage", "overagf", 1),
    )
    .unwrap();
    let bad = verify(&changed);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("INVALID"));

    let csv = c
        .http
        .get(format!("{}/api/v1/usage?format=csv", server.base))
        .bearer_auth(binary::ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with(tenant.as_str()))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        row.starts_with(&format!("{tenant},Reported,ws,pro,")),
        "{row}"
    );
}

both_backends!(
    provisioning_through_the_binary,
    committed_writes_survive_sigkill
);
