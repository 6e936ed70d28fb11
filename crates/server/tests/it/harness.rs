//! Shared test support: stores on both backends, an in-process app, and a request helper.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use seatkeeper::kernel::clock::{ManualClock, SharedClock};
use seatkeeper::kernel::config::Config;
use seatkeeper::kernel::store::{Store, StoreOptions};
use serde_json::Value;
use tower::ServiceExt;

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const EXT: &str = "urn:seatkeeper:params:scim:schemas:extension:licensing:2.0:User";

/// The backends a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL for tests. `.ci/run` always sets it; without it the PostgreSQL
/// variants fail (they are never silently skipped).
pub fn postgres_url() -> String {
    std::env::var("SEATKEEPER_TEST_POSTGRES_URL").expect(
        "SEATKEEPER_TEST_POSTGRES_URL is not set: run `bash .ci/run`, or point it at a PostgreSQL database, \
         or exclude these tests with `cargo nextest run -E 'not test(/postgres/)'`",
    )
}

pub struct TestStore {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn store(backend: Backend) -> TestStore {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            let store = Store::connect(&url, &StoreOptions::default())
                .await
                .unwrap();
            TestStore {
                store,
                url,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let url = postgres_url();
            let store = Store::connect(
                &url,
                &StoreOptions {
                    max_connections: 4,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            TestStore {
                store,
                url,
                _dir: None,
            }
        }
    }
}

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
    _jobs: seatkeeper::jobs::Jobs,
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
        seatkeeper::kernel::auth::Credential::Scim,
        &tenant.id,
        "test-idp",
    )
    .await;
    let app = seatkeeper::app(
        db.store.clone(),
        shared,
        config,
        seatkeeper::kernel::auth::hash_token(ADMIN),
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

    /// Creates a user and returns its id.
    pub async fn user(&self, user_name: &str) -> String {
        let r = self
            .req("POST", "/scim/v2/Users", Some(serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        r.body["id"].as_str().unwrap().to_string()
    }
}

/// Generates `mod name { sqlite, postgres }` tests from one async body taking a `Backend`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            }
        )*
    };
}

fn test_actor() -> seatkeeper::kernel::store::Actor {
    seatkeeper::kernel::store::Actor {
        name: "test".into(),
        request_id: "test".into(),
    }
}

/// A new tenant, through the tenants service.
pub async fn new_tenant(
    store: &Store,
    clock: SharedClock,
    name: &str,
) -> seatkeeper::tenants::store::TenantRow {
    seatkeeper::tenants::service::Tenants::new(store.clone(), clock)
        .create(
            &test_actor(),
            &seatkeeper::kernel::ids::Name::parse(name).unwrap(),
        )
        .await
        .unwrap()
}

/// A new SCIM token or app key, through the tenants service.
pub async fn new_credential(
    store: &Store,
    clock: SharedClock,
    kind: seatkeeper::kernel::auth::Credential,
    tenant: &str,
    name: &str,
) -> seatkeeper::tenants::service::CreatedToken {
    seatkeeper::tenants::service::Tenants::new(store.clone(), clock)
        .create_credential(
            &test_actor(),
            kind,
            tenant,
            &seatkeeper::kernel::ids::Name::parse(name).unwrap(),
        )
        .await
        .unwrap()
}

/// Verifies audit chains through the audit service.
pub async fn verify_audit(
    store: &Store,
    chain: Option<&str>,
    pinned: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Vec<seatkeeper::audit::service::Verified>, seatkeeper::kernel::store::StoreError> {
    seatkeeper::audit::service::Audit::new(
        store.clone(),
        Arc::new(seatkeeper::kernel::clock::SystemClock),
    )
    .verify(chain, pinned)
    .await
}

/// The actor tests record as.
pub fn actor() -> seatkeeper::kernel::store::Actor {
    test_actor()
}
