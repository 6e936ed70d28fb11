//! Access through the real binary, on SQLite and PostgreSQL: an admin key made by the CLI and
//! confined to one tenant, roles from a TOML model, OIDC sign-in against a local issuer
//! (just-in-time user, groups claim → role → permission), and a portal link.

use crate::binary::{ADMIN, Server, cli_ok, database};
use crate::common::{self, Backend};
use crate::oidc::{Issuer, KeyPair};

use serde_json::{Value, json};

async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn access_through_the_binary(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Access"])
        .trim()
        .to_string();
    let other = cli_ok(&db, &["tenant", "create", "Elsewhere"])
        .trim()
        .to_string();
    let key = cli_ok(
        &db,
        &[
            "admin-key",
            "create",
            "--scopes",
            "tenants:read,credentials:write",
            "--tenant",
            &tenant,
            "--name",
            "acme-csm",
        ],
    )
    .trim()
    .to_string();
    assert!(key.starts_with("ska_"), "{key}");
    let listed = cli_ok(&db, &["admin-key", "list"]);
    assert!(
        listed.contains("acme-csm") && listed.contains("tenants:read,credentials:write"),
        "{listed}"
    );
    let app_key = cli_ok(&db, &["app-key", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let product = format!("ax-{}", &tenant[tenant.len() - 12..]);
    let model = format!(
        "[[products]]\nkey = \"{product}\"\n[[products.plans]]\nkey = \"pro\"\nrank = 1\nfeatures = [\"export\"]\n\
         [[products.roles]]\nkey = \"admin\"\npermissions = [\"billing.manage\", \"users.invite\"]\n\
         [[products.roles]]\nkey = \"viewer\"\npermissions = [\"docs.read\"]\nrequires_license = false\n\
         [[tenants]]\nid = \"{tenant}\"\n[[tenants.subscriptions]]\nproduct = \"{product}\"\nplan = \"pro\"\nseats = 5\n\
         starts_at = \"2026-01-01T00:00:00Z\"\n\
         [[tenants.role_rules]]\nname = \"it-admins\"\nfilter = 'groups.display eq \"IT Admins\"'\nproduct = \"{product}\"\nrole = \"admin\"\n"
    );
    let file = dir.path().join("model.toml");
    std::fs::write(&file, model).unwrap();
    let plan = cli_ok(&db, &["apply", file.to_str().unwrap()]);
    assert!(
        plan.contains("role") && plan.contains("it-admins"),
        "{plan}"
    );

    let server = Server::start(&db, &["--test-clock", "2026-11-20T12:00:00Z"]);
    let base = server.base.clone();
    let http = seatkeeper::crypto::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    use reqwest::Method;

    // The confined admin key.
    let (s, _) = call(
        &http,
        &key,
        Method::GET,
        &format!("{base}/api/v1/tenants/{tenant}/usage"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &http,
        &key,
        Method::GET,
        &format!("{base}/api/v1/tenants/{other}/usage"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = call(
        &http,
        &key,
        Method::PUT,
        &format!("{base}/api/v1/tenants/{tenant}/settings"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("tenants:write"),
        "{v}"
    );
    let (s, _) = call(
        &http,
        &key,
        Method::GET,
        &format!("{base}/api/v1/tenants"),
        None,
    )
    .await;
    assert_eq!(s, 403);

    // SSO against a local issuer, configured with the admin key (credentials:write).
    let issuer =
        Issuer::start(time::macros::datetime!(2026-11-20 12:00 UTC).unix_timestamp()).await;
    let signing = KeyPair::new(jsonwebtoken::Algorithm::ES256);
    issuer.publish(&signing);
    let (s, v) = call(
        &http,
        &key,
        Method::PUT,
        &format!("{base}/api/v1/tenants/{tenant}/sso"),
        Some(json!({"issuer": issuer.url, "audiences": ["client-1"], "claims": {"groups": "groups"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let token = signing.sign(&issuer.claims(
        "emp-7",
        "grace@access.example",
        json!({"groups": ["IT Admins"], "given_name": "Grace"}),
    ));
    let (s, v) = call(
        &http,
        &app_key,
        Method::POST,
        &format!("{base}/api/v1/sso/login"),
        Some(json!({"id_token": token})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"]["created"], true);
    assert_eq!(v["roles"], json!(["admin"]), "{v}");
    assert_eq!(v["licenses"][0]["state"], "active");
    let user = v["user"]["id"].as_str().unwrap().to_string();
    let (s, v) = call(
        &http,
        &app_key,
        Method::POST,
        &format!("{base}/api/v1/check"),
        Some(json!({"user": "grace@access.example", "permission": "users.invite"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(
        v["reason"],
        "role admin (rule it-admins) grants users.invite"
    );
    let expired = signing.sign(&issuer.claims(
        "emp-7",
        "grace@access.example",
        json!({"exp": issuer.now - 3600}),
    ));
    let (s, v) = call(
        &http,
        &app_key,
        Method::POST,
        &format!("{base}/api/v1/sso/login"),
        Some(json!({"id_token": expired})),
    )
    .await;
    assert_eq!((s, v["reason"].as_str()), (401, Some("expired")), "{v}");
    let (_, v) = call(
        &http,
        ADMIN,
        Method::GET,
        &format!("{base}/api/v1/tenants/{tenant}/events?limit=1000"),
        None,
    )
    .await;
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"user.login") && kinds.contains(&"role.granted"),
        "{kinds:?}"
    );
    let (_, v) = call(
        &http,
        ADMIN,
        Method::GET,
        &format!("{base}/api/v1/tenants/{tenant}/users/{user}/licenses"),
        None,
    )
    .await;
    assert_eq!(v["roles"][0]["matched"][0]["rule"], "it-admins", "{v}");

    // A portal link, made with the admin key, opens once.
    let (s, v) = call(
        &http,
        &key,
        Method::POST,
        &format!("{base}/api/v1/tenants/{tenant}/portal-links"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = http
        .get(format!("{base}/portal"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("grace@access.example"));
    assert_eq!(http.get(&url).send().await.unwrap().status(), 410);
    let _ = common::USER;
}

both_backends!(access_through_the_binary);
