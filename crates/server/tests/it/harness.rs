//! Shared test support: stores on both backends, an in-process app, and a request helper.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use seatkeeper::Config;
use seatkeeper::Store;
pub use seatkeeper::testing::{Backend, TestStore, postgres_url, store};
use seatkeeper::{ManualClock, SharedClock};
use serde_json::Value;
use tower::ServiceExt;

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const EXT: &str = "urn:seatkeeper:params:scim:schemas:extension:licensing:2.0:User";

pub fn clock() -> ManualClock {
    ManualClock::at(time::macros::datetime!(2026-11-22 10:00:00 UTC))
}

pub const ADMIN: &str = "test-admin-token";

pub struct TestApp {
    pub router: Router,
    pub store: Store,
    pub tenant: String,
    pub token: String,
    pub clock: ManualClock,
    _jobs: seatkeeper::Jobs,
    _db: TestStore,
}

pub async fn app_with(backend: Backend, config: Config) -> TestApp {
    let db = store(backend).await;
    let clock = clock();
    let shared: SharedClock = Arc::new(clock.clone());
    let tenant = new_tenant(&db.store, shared.clone(), "Test").await;
    let token = new_credential(
        &db.store,
        shared.clone(),
        seatkeeper::Credential::Scim,
        &tenant.id,
        "test-idp",
    )
    .await;
    let app = seatkeeper::app(
        db.store.clone(),
        shared,
        config,
        seatkeeper::hash_token(ADMIN),
        None,
    );
    TestApp {
        router: app.router,
        _jobs: app.jobs,
        store: db.store.clone(),
        tenant: tenant.id,
        token: token.token,
        clock,
        _db: db,
    }
}

pub async fn app(backend: Backend) -> TestApp {
    app_with(
        backend,
        Config {
            rate_per_second: 100_000,
            rate_burst: 100_000,
            // Webhook receivers in tests listen on 127.0.0.1.
            allow_private_webhooks: true,
            ..Config::default()
        },
    )
    .await
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: String,
}

impl TestApp {
    pub async fn req(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        let token = self.token.clone();
        self.req_as(&token, method, uri, body, &[]).await
    }

    pub async fn req_h(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let token = self.token.clone();
        self.req_as(&token, method, uri, body, headers).await
    }

    pub async fn req_as(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri)
            .header("host", "scim.test");
        if !token.is_empty() {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/scim+json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let raw = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            raw,
        }
    }

    /// A request with the admin token.
    pub async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        self.req_as(ADMIN, method, uri, body, &[]).await
    }

    /// Activates or deactivates a user over SCIM PATCH.
    pub async fn set_active(&self, id: &str, active: bool) {
        let r = self
            .req(
                "PATCH",
                &format!("/scim/v2/Users/{id}"),
                Some(
                    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "value": {"active": active}}]}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    }

    /// Makes an application key named "app" for a tenant and returns its secret.
    pub async fn app_key(&self, tenant: &str) -> String {
        self.admin(
            "POST",
            &format!("/api/v1/tenants/{tenant}/app-keys"),
            Some(serde_json::json!({"name": "app"})),
        )
        .await
        .body["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a user and returns its id.
    pub async fn user(&self, user_name: &str) -> String {
        let r = self
            .req("POST", "/scim/v2/Users", Some(serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        r.body["id"].as_str().unwrap().to_string()
    }
}

fn test_actor() -> seatkeeper::Actor {
    seatkeeper::Actor {
        name: "test".into(),
        request_id: "test".into(),
    }
}

/// A new tenant, through the tenants service.
pub async fn new_tenant(store: &Store, clock: SharedClock, name: &str) -> seatkeeper::TenantRow {
    seatkeeper::Tenants::new(store.clone(), clock)
        .create(&test_actor(), &seatkeeper::Name::parse(name).unwrap())
        .await
        .unwrap()
}

/// A new SCIM token or app key, through the tenants service.
pub async fn new_credential(
    store: &Store,
    clock: SharedClock,
    kind: seatkeeper::Credential,
    tenant: &str,
    name: &str,
) -> seatkeeper::CreatedToken {
    seatkeeper::Tenants::new(store.clone(), clock)
        .create_credential(
            &test_actor(),
            kind,
            tenant,
            &seatkeeper::Name::parse(name).unwrap(),
        )
        .await
        .unwrap()
}

/// Verifies audit chains through the audit service.
pub async fn verify_audit(
    store: &Store,
    chain: Option<&str>,
    pinned: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Vec<seatkeeper::Verified>, seatkeeper::StoreError> {
    seatkeeper::Audit::new(store.clone(), seatkeeper::system_clock())
        .verify(chain, pinned, &[])
        .await
}
