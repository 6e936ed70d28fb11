//! Every administrative action leaves an audit record (and, where a consumer cares, an
//! event): credentials and webhooks on the tenant's chain, billing settings and signing keys
//! on the vendor chain. Request bodies are typed: an unknown or mistyped field is a 400 that
//! names it, and writes nothing.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::binary::{self, Api, Server, cli_ok};
use crate::common::{self, Backend, TestApp, USER};

fn actions(r: &common::Resp) -> Vec<String> {
    r.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["action"].as_str().unwrap().to_string())
        .collect()
}

async fn trail(app: &TestApp, query: &str) -> common::Resp {
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/tenants/{}/audit?{query}", app.tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r
}

async fn event_types(app: &TestApp) -> Vec<String> {
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
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn credentials_are_audited(b: Backend) {
    let app = common::app(b).await;
    let base = format!("/api/v1/tenants/{}/scim-tokens", app.tenant);
    let r = app
        .admin("POST", &base, Some(json!({"name": "okta-prod"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let (id, secret) = (
        r.body["id"].as_str().unwrap().to_string(),
        r.body["token"].as_str().unwrap().to_string(),
    );
    let r = app
        .req_h("DELETE", &format!("{base}/{id}"), None, &[])
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a SCIM token cannot revoke"
    );
    let r = app
        .req_as(
            common::ADMIN,
            "DELETE",
            &format!("{base}/{id}"),
            None,
            &[("x-request-id", "revoke-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    let r = trail(&app, "action=credential.*").await;
    // The harness's own token first, then this one's creation and revocation.
    assert_eq!(
        actions(&r),
        [
            "credential.create",
            "credential.create",
            "credential.revoke"
        ],
        "{}",
        r.raw
    );
    let revoke = &r.body["records"][2];
    assert_eq!(revoke["actor"], "admin");
    assert_eq!(revoke["request_id"], "revoke-1");
    assert_eq!(revoke["resource_id"], id.as_str());
    assert!(revoke["before"]["revoked"].is_null());
    assert!(revoke["after"]["revoked"].is_string());
    assert!(!r.raw.contains(&secret), "no secret in the trail");
    // App keys too, and both announce themselves.
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/tenants/{}/app-keys", app.tenant),
            Some(json!({"name": "billing-app"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let types = event_types(&app).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| t.starts_with("credential."))
            .collect::<Vec<_>>(),
        [
            "credential.created",
            "credential.created",
            "credential.revoked",
            "credential.created"
        ]
    );
    // Revoking it twice: 404, and no second record.
    let r = app.admin("DELETE", &format!("{base}/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        actions(&trail(&app, "action=credential.revoke").await).len(),
        1
    );
}

async fn webhooks_are_audited(b: Backend) {
    let app = common::app(b).await;
    let base = format!("/api/v1/tenants/{}/webhooks", app.tenant);
    let r = app
        .admin(
            "POST",
            &base,
            Some(json!({"url": "https://hooks.example/sk", "events": ["license.*"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let (wid, secret) = (
        r.body["id"].as_str().unwrap().to_string(),
        r.body["secret"].as_str().unwrap().to_string(),
    );
    let r = app
        .admin(
            "POST",
            &format!("{base}/{wid}/replay"),
            Some(json!({"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.raw);
    let r = app.admin("DELETE", &format!("{base}/{wid}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = trail(&app, "action=webhook.*").await;
    assert_eq!(
        actions(&r),
        ["webhook.create", "webhook.replay", "webhook.disable"]
    );
    assert!(!r.raw.contains(&secret), "no secret in the trail");
    let types = event_types(&app).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| t.starts_with("webhook."))
            .collect::<Vec<_>>(),
        ["webhook.created", "webhook.replayed", "webhook.disabled"]
    );
}

async fn billing_settings_go_to_the_vendor_chain(b: Backend) {
    let app = common::app(b).await;
    let before = app.admin("GET", "/api/v1/audit?limit=1000", None).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.raw);
    let seen = before.body["next_cursor"].as_str().unwrap().to_string();
    let secret = "a-billing-secret-of-some-length";
    let r = app
        .req_as(
            common::ADMIN,
            "PUT",
            "/api/v1/billing/secret",
            Some(json!({"secret": secret})),
            &[("x-request-id", "set-secret-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let r = app.admin("POST", "/api/v1/billing/secret", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let rotated = r.body["secret"].as_str().unwrap().to_string();
    let r = app
        .admin(
            "PUT",
            "/api/v1/billing/stripe/customers/cus_1",
            Some(json!({"tenant": app.tenant})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .admin("DELETE", "/api/v1/billing/stripe/customers/cus_1", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.admin("POST", "/api/v1/signing-keys/rotate", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = app
        .admin(
            "GET",
            &format!("/api/v1/audit?after={seen}&limit=1000"),
            None,
        )
        .await;
    let got = actions(&r);
    for want in [
        "billing.secret.set",
        "billing.secret.rotate",
        "billing.stripe_customer.put",
        "billing.stripe_customer.delete",
        "signing_key.rotate",
    ] {
        assert!(got.iter().any(|a| a == want), "{want} missing from {got:?}");
    }
    let set = r.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["action"] == "billing.secret.set")
        .unwrap();
    assert_eq!(set["request_id"], "set-secret-1");
    assert_eq!(set["actor"], "admin");
    assert!(
        !r.raw.contains(secret) && !r.raw.contains(&rotated),
        "a secret in the trail"
    );
    // Filters work on the vendor chain as on a tenant's.
    let r = app
        .admin("GET", "/api/v1/audit?action=billing.secret.*", None)
        .await;
    assert!(actions(&r).iter().all(|a| a.starts_with("billing.secret.")));
    // The tenant's own trail holds none of it.
    let r = trail(&app, "action=billing.*").await;
    assert!(actions(&r).is_empty(), "{}", r.raw);
}

async fn bad_fields_are_named_and_write_nothing(b: Backend) {
    let app = common::app(b).await;
    let tenants = app.admin("GET", "/api/v1/tenants", None).await;
    let count = tenants.body["tenants"].as_array().unwrap().len();
    for (body, field) in [
        (json!({"name": "Acme", "plan": "gold"}), "plan"),
        (json!({"name": 42}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({}), "name"),
    ] {
        let r = app
            .admin("POST", "/api/v1/tenants", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.raw);
        assert_eq!(r.body["scimType"], "invalidValue", "{body}: {}", r.raw);
        assert!(
            r.body["detail"].as_str().unwrap().contains(field),
            "{body}: {}",
            r.raw
        );
    }
    let r = app
        .admin(
            "POST",
            &format!("/api/v1/tenants/{}/webhooks", app.tenant),
            Some(json!({"url": "https://x.example/", "evnets": ["*"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(
        r.body["detail"].as_str().unwrap().contains("evnets"),
        "{}",
        r.raw
    );
    let r = app
        .admin("PUT", "/api/v1/billing/secret", Some(json!({"secret": 7})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["detail"].as_str().unwrap().contains("secret"),
        "{}",
        r.raw
    );
    let r = app.admin("POST", "/api/v1/tenants", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["scimType"], "invalidSyntax");
    let tenants = app.admin("GET", "/api/v1/tenants", None).await;
    assert_eq!(tenants.body["tenants"].as_array().unwrap().len(), count);
    let r = trail(&app, "action=webhook.*").await;
    assert!(actions(&r).is_empty());
}

/// Verifying reports its progress in records, ending with every record of the chains.
async fn verification_reports_progress(b: Backend) {
    let app = common::app(b).await;
    for i in 0..7 {
        app.user(&format!("progress{i}@example.com")).await;
    }
    let seen = std::sync::Mutex::new(Vec::new());
    let results = seatkeeper::Audit::new(app.store.clone(), std::sync::Arc::new(app.clock.clone()))
        .verify_reporting(Some(&app.tenant), None, &[], &|done, total| {
            seen.lock().unwrap().push((done, total));
        })
        .await
        .unwrap();
    assert!(results.iter().all(|(_, _, r)| r.is_ok()));
    let seen = seen.into_inner().unwrap();
    let (first, last) = (seen[0], *seen.last().unwrap());
    assert_eq!(first.0, 0, "{seen:?}");
    assert!(last.1 >= 7, "every user's creation is a record: {seen:?}");
    assert_eq!(last.0, last.1, "it ends at the total: {seen:?}");
    assert_eq!(
        last.1 as i64, results[0].1,
        "the total is the chain's length"
    );
}

/// A tenant is renamed, then deleted with everything it holds: refused while it holds
/// licenses, done with force; its data, credentials and webhooks are gone, other tenants are
/// untouched, and the vendor chain records the deletion and still verifies.
async fn tenants_are_renamed_and_deleted(b: Backend) {
    let app = common::app(b).await;
    let product = format!("del-{}", &app.tenant[app.tenant.len() - 12..]);
    let model = json!({
        "products": [{"key": product, "name": "Del", "plans": [{"key": "pro", "rank": 1, "features": ["x"]}]}],
        "tenants": [{"id": app.tenant, "subscriptions": [{"product": product, "plan": "pro", "seats": 10,
            "starts_at": "2026-01-01T00:00:00Z"}],
            "rules": [{"name": "all", "filter": "active eq true", "product": product, "plan": "pro", "priority": 1}]}],
    });
    let r = app.admin("PUT", "/api/v1/model", Some(model)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    for i in 0..3 {
        app.user(&format!("del{i}@example.com")).await;
    }
    let hook = app
        .admin(
            "POST",
            &format!("/api/v1/tenants/{}/webhooks", app.tenant),
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.raw);
    // Another tenant, which must not be touched.
    let other = app
        .admin(
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "Bystander"})),
        )
        .await;
    let other = other.body["id"].as_str().unwrap().to_string();

    let path = format!("/api/v1/tenants/{}", app.tenant);
    let renamed = app
        .admin("PATCH", &path, Some(json!({"name": "Renamed Co"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.raw);
    assert_eq!(
        app.admin("GET", &path, None).await.body["name"],
        "Renamed Co"
    );
    let bad = app.admin("PATCH", &path, Some(json!({"name": ""}))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.raw);

    let refused = app.admin("DELETE", &path, None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.raw);
    assert!(refused.raw.contains("3 licenses"), "{}", refused.raw);
    assert_eq!(app.admin("GET", &path, None).await.status, StatusCode::OK);

    let gone = app
        .admin("DELETE", &format!("{path}?force=true"), None)
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.raw);
    assert_eq!(gone.body["licenses"], 3);
    let removed = &gone.body["removed"];
    for table in [
        "scim_users",
        "licenses",
        "webhooks",
        "scim_tokens",
        "audit_log",
        "outbox",
    ] {
        assert!(
            removed[table].as_i64().unwrap_or(0) > 0,
            "{table}: {removed}"
        );
    }
    assert_eq!(
        app.admin("GET", &path, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.req("GET", "/scim/v2/Users", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        !app.store
            .tenants()
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == app.tenant),
        "the tenant row is gone"
    );
    let bystander = app
        .admin("GET", &format!("/api/v1/tenants/{other}"), None)
        .await;
    assert_eq!(bystander.status, StatusCode::OK);
    let again = app.admin("DELETE", &path, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    let vendor = app
        .admin("GET", "/api/v1/audit?action=tenant.delete", None)
        .await;
    assert_eq!(vendor.status, StatusCode::OK, "{}", vendor.raw);
    let acts = actions(&vendor);
    assert!(acts.iter().any(|a| a == "tenant.delete"), "{acts:?}");
    let verified =
        seatkeeper::Audit::new(app.store.clone(), std::sync::Arc::new(app.clock.clone()))
            .verify(Some(seatkeeper::VENDOR), None, &[])
            .await
            .unwrap();
    assert!(
        verified.iter().all(|(_, _, r)| r.is_ok()),
        "the vendor chain: {verified:?}"
    );
}

both_backends!(
    tenants_are_renamed_and_deleted,
    verification_reports_progress,
    credentials_are_audited,
    webhooks_are_audited,
    billing_settings_go_to_the_vendor_chain,
    bad_fields_are_named_and_write_nothing
);

/// Under `--test-clock`, time is the test clock's everywhere: a SCIM create's event is
/// stamped in 2030, and so is its audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stamped_by_the_test_clock() {
    let dir = tempfile::tempdir().unwrap();
    let db = binary::database(Backend::Sqlite, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Clocked"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let server = Server::start(&db, &["--test-clock", "2030-01-01T00:00:00Z"]);
    let api = Api::new(&server.base, &token, &tenant);
    let (status, user) = api
        .scim(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "ada@2030.example"})),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let feed = api.feed().await;
    let created = feed
        .iter()
        .find(|e| e["type"] == "user.provisioned")
        .expect("a user.provisioned event");
    assert!(
        created["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2030-01-01T"),
        "{created}"
    );
    let audit: Value = api
        .admin(
            "GET",
            &format!("/tenants/{tenant}/audit?action=user.create"),
            None,
        )
        .await;
    assert!(
        audit["records"][0]["at"]
            .as_str()
            .unwrap()
            .starts_with("2030-01-01T"),
        "{audit}"
    );
}
