//! Real answers against the OpenAPI document. A tour of the admin and application API
//! through the real binary: every request body it sends and every answer it gets is checked
//! against the document the server itself serves (the operation the path matches, the
//! answer's status and media type, and its body against the schema), and every event of the
//! tenant's feed against the `webhooks` section.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::binary::{ADMIN, Server, database};
use crate::common::{Backend, USER};

/// A body to send: JSON, or text of a media type.
enum Body {
    None,
    Json(Value),
    Text(&'static str, String),
}

/// The tour's client: sends requests, checks them and their answers against the document.
struct Tour {
    http: reqwest::Client,
    base: String,
    doc: Value,
    /// Compiled schemas, by their JSON text.
    validators: BTreeMap<String, jsonschema::Validator>,
    /// (method, path template) of each operation called.
    called: BTreeSet<(String, String)>,
    problems: Vec<String>,
}

impl Tour {
    fn new(base: &str, doc: Value) -> Tour {
        Tour {
            http: seatkeeper::crypto::http_client().build().unwrap(),
            base: base.to_string(),
            doc,
            validators: BTreeMap::new(),
            called: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// The document's path template a request path matches (the most literal segments win).
    fn template(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for t in self.doc["paths"].as_object().unwrap().keys() {
            let tparts: Vec<&str> = t.split('/').collect();
            if tparts.len() != parts.len() {
                continue;
            }
            let mut literal = 0;
            let matches = tparts.iter().zip(&parts).all(|(t, p)| {
                if t.starts_with('{') {
                    !p.is_empty()
                } else {
                    literal += 1;
                    t == p
                }
            });
            if matches && best.as_ref().is_none_or(|(n, _)| literal > *n) {
                best = Some((literal, t.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    /// Checks `value` against `schema` (which may refer to the document's components).
    fn check(&mut self, what: &str, schema: &Value, value: &Value) {
        let key = schema.to_string();
        if !self.validators.contains_key(&key) {
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": self.doc["components"].clone(),
                "allOf": [schema],
            });
            match jsonschema::validator_for(&root) {
                Ok(v) => {
                    self.validators.insert(key.clone(), v);
                }
                Err(e) => {
                    self.problems
                        .push(format!("{what}: the schema does not compile: {e}"));
                    return;
                }
            }
        }
        let errors: Vec<String> = self.validators[&key]
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .take(5)
            .collect();
        if !errors.is_empty() {
            let shown: String = value.to_string().chars().take(600).collect();
            self.problems.push(format!(
                "{what}: {} — the body was {shown}",
                errors.join("; ")
            ));
        }
    }

    /// Sends a request, checks it and its answer; returns the status and the JSON answer
    /// (`Null` when it is not JSON).
    async fn call(
        &mut self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Body,
        headers: &[(&str, String)],
    ) -> (u16, Value) {
        let bare = path.split('?').next().unwrap_or(path);
        let Some(template) = self.template(bare) else {
            self.problems
                .push(format!("{method} {bare}: no operation in the document"));
            return (0, Value::Null);
        };
        let op = self.doc["paths"][&template][method.to_ascii_lowercase()].clone();
        let what = format!("{method} {template}");
        if op.is_null() {
            self.problems
                .push(format!("{what}: no such operation in the document"));
            return (0, Value::Null);
        }
        self.called
            .insert((method.to_ascii_lowercase(), template.clone()));
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match body {
            Body::None => {}
            Body::Json(v) => {
                match op.pointer("/requestBody/content/application~1json/schema") {
                    Some(schema) => {
                        let schema = schema.clone();
                        self.check(&format!("{what} request"), &schema, &v);
                    }
                    None => self.problems.push(format!(
                        "{what}: sends a JSON body the document does not take"
                    )),
                }
                req = req
                    .header("content-type", "application/json")
                    .body(v.to_string());
            }
            Body::Text(ct, text) => {
                if op
                    .pointer(&format!("/requestBody/content/{}", ct.replace('/', "~1")))
                    .is_none()
                {
                    self.problems.push(format!(
                        "{what}: sends {ct}, which the document does not take"
                    ));
                }
                req = req.header("content-type", ct).body(text);
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_string());
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // SEATKEEPER_OPENAPI_SAMPLES=FILE keeps every exchange, for writing schemas.
        if let Ok(file) = std::env::var("SEATKEEPER_OPENAPI_SAMPLES") {
            use std::io::Write as _;
            let line = json!({"op": what, "status": status, "ct": ct, "body": json, "text": if json.is_null() { text.chars().take(300).collect::<String>() } else { String::new() }});
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        }
        let answers = &op["responses"];
        let range = format!("{}XX", status / 100);
        let answer = [status.to_string(), range, "default".to_string()]
            .iter()
            .find_map(|k| answers.get(k))
            .cloned();
        let Some(answer) = answer else {
            self.problems.push(format!(
                "{what}: answered {status}, which the document does not list: {text}"
            ));
            return (status, json);
        };
        match (answer.get("content"), ct) {
            (None, _) if text.is_empty() => {}
            (None, ct) => self.problems.push(format!(
                "{what}: answered {status} with a body ({ct:?}) the document does not describe"
            )),
            (Some(_), None) if text.is_empty() => self.problems.push(format!(
                "{what}: answered {status} without the body the document describes"
            )),
            (Some(content), ct) => {
                let ct = ct.unwrap_or_default();
                match content.get(&ct) {
                    None => self.problems.push(format!(
                        "{what}: answered {status} as {ct}, not one of {:?}",
                        content.as_object().map(|o| o.keys().collect::<Vec<_>>())
                    )),
                    Some(media) if ct == "application/json" || ct.ends_with("+json") => {
                        if let Some(schema) = media.get("schema") {
                            let schema = schema.clone();
                            self.check(&format!("{what} → {status}"), &schema, &json);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        (status, json)
    }

    async fn admin(&mut self, method: &str, path: &str, body: Body) -> (u16, Value) {
        self.call(Some(ADMIN), method, path, body, &[]).await
    }

    /// An admin call that must succeed; returns its answer.
    async fn ok(&mut self, method: &str, path: &str, body: Body) -> Value {
        let (status, v) = self.admin(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }
}

/// A SCIM user (SCIM has its own self-description, not this document).
async fn scim_user(http: &reqwest::Client, base: &str, token: &str, name: &str) -> String {
    let r = http
        .post(format!("{base}/scim/v2/Users"))
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": [USER], "userName": name}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(Backend::Sqlite, &dir);
    let billing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let server = Server::start(
        &db,
        &[
            "--allow-private-webhooks",
            "--test-clock",
            "2026-11-26T12:00:00Z",
            "--billing-secret",
            billing_secret,
        ],
    );
    let base = server.base.clone();
    let doc: Value = seatkeeper::crypto::http_client()
        .build()
        .unwrap()
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc,
        seatkeeper::openapi(),
        "the served document is the built one"
    );
    let mut t = Tour::new(&base, doc);

    // The public operations.
    t.call(None, "GET", "/api/v1/openapi.json", Body::None, &[])
        .await;
    t.call(None, "GET", "/api/v1/limits", Body::None, &[]).await;
    t.call(None, "GET", "/.well-known/jwks.json", Body::None, &[])
        .await;

    // Tenants and SCIM tokens.
    let tenant = t
        .ok(
            "POST",
            "/api/v1/tenants",
            Body::Json(json!({"name": "Conformance"})),
        )
        .await;
    let id = tenant["id"].as_str().unwrap().to_string();
    let tp = format!("/api/v1/tenants/{id}");
    t.ok("GET", "/api/v1/tenants", Body::None).await;
    t.ok("GET", &tp, Body::None).await;
    t.ok("PATCH", &tp, Body::Json(json!({"name": "Conformance Inc"})))
        .await;
    let tok = t
        .ok(
            "POST",
            &format!("{tp}/scim-tokens"),
            Body::Json(json!({"name": "okta"})),
        )
        .await;
    let scim = tok["token"].as_str().unwrap().to_string();
    let spare = t
        .ok(
            "POST",
            &format!("{tp}/scim-tokens"),
            Body::Json(json!({"name": "spare"})),
        )
        .await;
    t.ok(
        "DELETE",
        &format!("{tp}/scim-tokens/{}", spare["id"].as_str().unwrap()),
        Body::None,
    )
    .await;

    // The model, a subscription, rules, roles.
    t.ok(
        "PUT",
        "/api/v1/model",
        Body::Json(json!({"products": [{"key": "workspace", "name": "Workspace",
            "plans": [{"key": "free", "rank": 0, "features": ["read"]},
                      {"key": "pro", "rank": 1, "features": ["read", "export"], "limits": {"projects": 10}}],
            "roles": [{"key": "admin", "permissions": ["billing.manage"]}]}]})),
    )
    .await;
    t.ok("GET", "/api/v1/model", Body::None).await;
    let sub = format!("{tp}/subscriptions/workspace");
    t.ok(
        "PUT",
        &sub,
        Body::Json(json!({"plan": "pro", "seats": 2, "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2028-01-01T00:00:00Z"})),
    )
    .await;
    t.ok("PATCH", &sub, Body::Json(json!({"seats": 3}))).await;
    t.ok("GET", &format!("{tp}/subscriptions"), Body::None)
        .await;
    t.ok(
        "PUT",
        &format!("{tp}/rules/everyone"),
        Body::Json(json!({"filter": "active eq true", "product": "workspace", "plan": "pro", "priority": 1})),
    )
    .await;
    t.ok("GET", &format!("{tp}/rules"), Body::None).await;
    t.ok(
        "PUT",
        &format!("{tp}/role-rules/admins"),
        Body::Json(json!({"filter": "userName sw \"a\"", "product": "workspace", "role": "admin"})),
    )
    .await;
    t.ok("GET", &format!("{tp}/role-rules"), Body::None).await;

    // Users (through SCIM), pins, usage.
    let http = t.http.clone();
    let alice = scim_user(&http, &base, &scim, "alice").await;
    let bob = scim_user(&http, &base, &scim, "bob").await;
    let carol = scim_user(&http, &base, &scim, "carol").await;
    scim_user(&http, &base, &scim, "dave").await;
    let pin = format!("{tp}/users/{alice}/pins/workspace");
    t.ok(
        "PUT",
        &pin,
        Body::Json(json!({"plan": "pro", "reason": "the Q4 audit"})),
    )
    .await;
    t.ok("GET", &format!("{tp}/pins"), Body::None).await;
    t.ok("DELETE", &pin, Body::None).await;
    t.ok("GET", &format!("{tp}/usage"), Body::None).await;
    t.ok("GET", &format!("{tp}/idle?product=workspace"), Body::None)
        .await;
    t.ok(
        "GET",
        &format!("{tp}/idle?product=workspace&preview=reclaim"),
        Body::None,
    )
    .await;
    t.ok(
        "GET",
        &format!("{tp}/usage/history?product=workspace"),
        Body::None,
    )
    .await;
    t.ok(
        "GET",
        &format!("{tp}/usage/history?product=workspace&format=csv"),
        Body::None,
    )
    .await;
    t.ok("GET", &format!("{tp}/users/{alice}/licenses"), Body::None)
        .await;

    // Seat hygiene: the brake, import, reconcile.
    t.ok(
        "PUT",
        &format!("{tp}/settings"),
        Body::Json(
            json!({"deprovision_brake": {"percent": 1, "min_users": 1, "window_minutes": 60}}),
        ),
    )
    .await;
    t.ok("GET", &format!("{tp}/settings"), Body::None).await;
    for u in [&bob, &carol] {
        let r = http
            .patch(format!("{base}/scim/v2/Users/{u}"))
            .bearer_auth(&scim)
            .header("content-type", "application/scim+json")
            .body(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let held = t.ok("GET", &format!("{tp}/held"), Body::None).await;
    assert!(!held["held"].as_array().unwrap().is_empty(), "{held}");
    t.ok("POST", &format!("{tp}/held/approve"), Body::None)
        .await;
    t.ok("POST", &format!("{tp}/held/reject"), Body::None).await;
    let rows = "user,product,plan,assigned_at\r\nalice,workspace,pro,2026-01-01T00:00:00Z\r\nzed,workspace,pro,2026-01-02T00:00:00Z\r\n";
    t.ok(
        "POST",
        &format!("{tp}/import?dry_run=true"),
        Body::Text("text/csv", rows.into()),
    )
    .await;
    t.ok(
        "POST",
        &format!("{tp}/import"),
        Body::Text("text/csv", rows.into()),
    )
    .await;
    let claims = t.ok("GET", &format!("{tp}/claims"), Body::None).await;
    assert_eq!(
        claims["claims"].as_array().map(Vec::len),
        Some(1),
        "{claims}"
    );
    let uses = "user,product\r\nalice,workspace\r\nghost,workspace\r\n";
    t.ok(
        "POST",
        &format!("{tp}/reconcile"),
        Body::Text("text/csv", uses.into()),
    )
    .await;
    t.ok(
        "POST",
        &format!("{tp}/reconcile?format=csv"),
        Body::Text("text/csv", uses.into()),
    )
    .await;

    // Applications: keys, checks, entitlements, tokens, activity.
    let key = t
        .ok(
            "POST",
            &format!("{tp}/app-keys"),
            Body::Json(json!({"name": "web"})),
        )
        .await;
    let app = key["key"].as_str().unwrap().to_string();
    t.ok("GET", &format!("{tp}/app-keys"), Body::None).await;
    for check in [
        json!({"user": "alice", "feature": "export"}),
        json!({"user": "alice", "limit": "projects"}),
        json!({"user": "alice", "permission": "billing.manage"}),
        json!({"user": "nobody", "feature": "export"}),
        json!({"checks": [{"user": "alice", "feature": "export"}, {"user": "bob", "permission": "billing.manage"}]}),
    ] {
        let (s, v) = t
            .call(Some(&app), "POST", "/api/v1/check", Body::Json(check), &[])
            .await;
        assert_eq!(s, 200, "{v}");
    }
    t.call(
        Some(&app),
        "GET",
        "/api/v1/users/alice/entitlements",
        Body::None,
        &[],
    )
    .await;
    t.call(
        Some(&app),
        "POST",
        "/api/v1/tokens/entitlements",
        Body::Json(json!({"user": "alice"})),
        &[],
    )
    .await;
    t.call(
        Some(&app),
        "POST",
        "/api/v1/activity",
        Body::Json(json!({"users": ["alice", "ghost"]})),
        &[],
    )
    .await;

    // Webhooks: a tenant's endpoint and a vendor-wide one (nothing listens on port 9: the
    // deliveries fail and are retried, which is what the log shows).
    for scope in [tp.clone(), "/api/v1".to_string()] {
        let w = t
            .ok(
                "POST",
                &format!("{scope}/webhooks"),
                Body::Json(json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})),
            )
            .await;
        let wp = format!("{scope}/webhooks/{}", w["id"].as_str().unwrap());
        t.ok("GET", &format!("{scope}/webhooks"), Body::None).await;
        t.ok("GET", &wp, Body::None).await;
        // The first attempt (it fails: nothing listens) shows in the log.
        let mut log = Value::Null;
        for _ in 0..50 {
            log = t.ok("GET", &format!("{wp}/deliveries"), Body::None).await;
            if log["deliveries"].as_array().is_some_and(|d| !d.is_empty()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let first = log["deliveries"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(|d| d["id"].as_i64());
        if let Some(did) = first {
            t.ok("POST", &format!("{wp}/deliveries/{did}/replay"), Body::None)
                .await;
        }
        t.ok(
            "POST",
            &format!("{wp}/replay"),
            Body::Json(json!({"from": "2026-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"})),
        )
        .await;
        t.ok("DELETE", &wp, Body::None).await;
    }

    // Billing: a signed generic event, the log, the Stripe mappings.
    let event = json!({"id": "evt-conformance-1", "type": "subscription.updated", "created_at": "2026-11-25T10:00:00Z",
        "tenant": id, "subscription": {"product": "workspace", "seats": 4}});
    let body = event.to_string();
    // The server's (test) clock: 2026-11-26T12:00:00Z.
    let ts = 1_795_694_400;
    let sig = seatkeeper::standard_sign(billing_secret, "evt-conformance-1", ts, body.as_bytes());
    let (s, v) = t
        .call(
            None,
            "POST",
            "/api/v1/billing/events",
            Body::Json(event),
            &[
                ("webhook-id", "evt-conformance-1".into()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sig),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = t
        .call(
            None,
            "POST",
            "/api/v1/billing/events",
            Body::Json(json!({"type": "subscription.updated", "created_at": "2026-11-25T10:00:00Z", "tenant": id, "subscription": {"product": "workspace"}})),
            &[],
        )
        .await;
    assert_eq!(s, 401);
    t.ok("GET", &format!("{tp}/billing/events"), Body::None)
        .await;
    t.ok(
        "PUT",
        "/api/v1/billing/secret",
        Body::Json(json!({"secret": billing_secret})),
    )
    .await;
    t.ok("POST", "/api/v1/billing/secret", Body::None).await;
    t.ok(
        "PUT",
        "/api/v1/billing/stripe/secret",
        Body::Json(json!({"secret": "whsec_stripe_conformance_secret"})),
    )
    .await;
    t.ok(
        "PUT",
        "/api/v1/billing/stripe/prices/price_123",
        Body::Json(json!({"product": "workspace", "plan": "pro"})),
    )
    .await;
    t.ok(
        "PUT",
        "/api/v1/billing/stripe/customers/cus_123",
        Body::Json(json!({"tenant": id})),
    )
    .await;
    t.ok(
        "DELETE",
        "/api/v1/billing/stripe/prices/price_123",
        Body::None,
    )
    .await;
    t.ok(
        "DELETE",
        "/api/v1/billing/stripe/customers/cus_123",
        Body::None,
    )
    .await;

    // Audit and reports, in each of their forms.
    for q in [
        "",
        "?format=csv",
        "?format=jsonl",
        "?action=license.*&limit=5",
    ] {
        t.ok("GET", &format!("{tp}/audit{q}"), Body::None).await;
    }
    t.ok("GET", "/api/v1/audit", Body::None).await;
    t.ok("GET", "/api/v1/usage", Body::None).await;
    t.ok("GET", "/api/v1/usage?format=csv", Body::None).await;
    t.ok("GET", "/api/v1/reports/compliance", Body::None).await;
    t.ok("GET", "/api/v1/reports/compliance?format=csv", Body::None)
        .await;

    // Sign-in: a connection, a refused login, the portal.
    t.ok(
        "PUT",
        &format!("{tp}/sso"),
        Body::Json(json!({"issuer": "http://127.0.0.1:9/issuer", "jwks_uri": "http://127.0.0.1:9/jwks", "audiences": ["conformance"]})),
    )
    .await;
    t.ok("GET", &format!("{tp}/sso"), Body::None).await;
    let (s, _) = t
        .call(
            Some(&app),
            "POST",
            "/api/v1/sso/login",
            Body::Json(json!({"id_token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"})),
            &[],
        )
        .await;
    assert_eq!(s, 401);
    t.ok("DELETE", &format!("{tp}/sso"), Body::None).await;
    t.ok(
        "POST",
        &format!("{tp}/portal-links"),
        Body::Json(json!({"expires_in": 600})),
    )
    .await;

    // Admin keys: one that may only read, refused a write.
    let k = t
        .ok(
            "POST",
            "/api/v1/admin-keys",
            Body::Json(json!({"name": "reader", "scopes": ["tenants:read"]})),
        )
        .await;
    let reader = k["token"].as_str().unwrap().to_string();
    let (s, _) = t
        .call(
            Some(&reader),
            "POST",
            "/api/v1/tenants",
            Body::Json(json!({"name": "not allowed"})),
            &[],
        )
        .await;
    assert_eq!(s, 403);
    t.ok("GET", "/api/v1/admin-keys", Body::None).await;
    t.ok(
        "DELETE",
        &format!("/api/v1/admin-keys/{}", k["id"].as_str().unwrap()),
        Body::None,
    )
    .await;

    // Operations.
    t.ok("POST", "/api/v1/signing-keys/rotate", Body::None)
        .await;
    t.ok("POST", "/api/v1/scheduler/run", Body::None).await;
    t.ok(
        "POST",
        "/api/v1/clock",
        Body::Json(json!({"advance_seconds": 31 * 86_400})),
    )
    .await;
    t.ok("POST", "/api/v1/scheduler/run", Body::None).await;
    let idle = t
        .ok("GET", &format!("{tp}/idle?product=workspace"), Body::None)
        .await;
    assert!(idle["total"].as_i64() > Some(0), "{idle}");
    t.ok(
        "GET",
        &format!("{tp}/usage/history?product=workspace"),
        Body::None,
    )
    .await;
    t.ok("GET", "/api/v1/reports/compliance", Body::None).await;

    // Errors: each in the document's error shape.
    let (s, _) = t
        .admin("GET", "/api/v1/tenants/no-such-tenant", Body::None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = t
        .admin("POST", "/api/v1/tenants", Body::Json(json!({"name": ""})))
        .await;
    assert_eq!(s, 400);
    let (s, _) = t
        .call(None, "GET", "/api/v1/tenants", Body::None, &[])
        .await;
    assert_eq!(s, 401);

    // The tenant's events against the webhooks section, then the feeds.
    let feed = t
        .ok(
            "GET",
            &format!("/api/v1/events?tenant={id}&limit=1000"),
            Body::None,
        )
        .await;
    t.ok("GET", &format!("{tp}/events"), Body::None).await;
    let mut types = BTreeSet::new();
    for e in feed["events"].as_array().unwrap() {
        let kind = e["type"].as_str().unwrap().to_string();
        let schema = t.doc["webhooks"][&kind]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]
            .clone();
        if schema.is_null() {
            t.problems
                .push(format!("event type {kind} is not in the webhooks section"));
            continue;
        }
        t.check(&format!("event {kind}"), &schema, e);
        types.insert(kind);
    }
    assert!(types.len() >= 8, "the tour made few event types: {types:?}");

    // Cleanup operations last.
    t.ok("DELETE", &format!("{tp}/role-rules/admins"), Body::None)
        .await;
    t.ok("DELETE", &format!("{tp}/rules/everyone"), Body::None)
        .await;
    t.ok(
        "DELETE",
        &format!("{tp}/app-keys/{}", key["id"].as_str().unwrap()),
        Body::None,
    )
    .await;
    t.ok("DELETE", &format!("{sub}?force=true"), Body::None)
        .await;
    t.ok("DELETE", &format!("{tp}?force=true"), Body::None)
        .await;

    // Every operation but the live stream was called.
    let all: BTreeSet<(String, String)> = t.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.clone(), p.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let missed: Vec<_> = all.difference(&t.called).collect();
    eprintln!(
        "called {} of {} operations; not called: {missed:?}",
        t.called.len(),
        all.len()
    );
    assert!(
        t.problems.is_empty(),
        "{} disagreements with the document:\n{}",
        t.problems.len(),
        t.problems.join("\n")
    );
    assert!(
        missed.len() <= 4,
        "{} of {} operations not called: {missed:?}",
        missed.len(),
        all.len()
    );
    drop(server);
}
