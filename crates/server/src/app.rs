//! HTTP: routing, middleware (request ids, metrics, timeouts), extractors and responses.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;

use crate::directory::service::{Ctx, Engine};
use crate::kernel::auth::{TokenVerifier, hash_token, hashes_equal};
use crate::kernel::config::Config;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::Store;

/// Shared state of the HTTP layer.
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// The store.
    pub store: Store,
    /// SCIM token verification.
    pub tokens: TokenVerifier,
    /// App key verification.
    pub apps: TokenVerifier,
    /// Entitlement snapshots, for checks.
    pub snapshots: std::sync::Arc<crate::apps::snapshot::Snapshots>,
    /// Signs entitlement tokens.
    pub signer: crate::apps::jwt::Signer,
    /// Per-tenant rate limiter of SCIM requests.
    pub limiter: DefaultKeyedRateLimiter<String>,
    /// Per-tenant rate limiter of application API requests.
    pub app_limiter: DefaultKeyedRateLimiter<String>,
    /// Limits and knobs.
    pub config: Config,
    /// Hash of the admin token.
    pub admin_hash: String,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// The test clock, when the server runs on one (`--test-clock`): `POST /api/v1/clock`
    /// moves it.
    pub manual_clock: Option<crate::kernel::clock::ManualClock>,
}

impl AppState {
    /// The clock the engine runs on.
    pub fn engine_clock(&self) -> crate::kernel::clock::SharedClock {
        self.engine.clock().clone()
    }

    /// Builds the state.
    pub fn new(
        engine: Engine,
        config: Config,
        admin_hash: String,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        let store = engine.store().clone();
        let snapshots =
            crate::apps::snapshot::Snapshots::new(store.clone(), engine.clock().clone());
        store.set_after_commit(snapshots.clone());
        snapshots.spawn(config.activity_flush);
        AppState {
            signer: crate::apps::jwt::Signer::new(
                store.clone(),
                engine.clock().clone(),
                config.token_ttl,
            ),
            snapshots,
            store,
            engine,
            tokens: TokenVerifier::new(crate::kernel::auth::Credential::Scim),
            apps: TokenVerifier::new(crate::kernel::auth::Credential::App),
            limiter: RateLimiter::keyed(quota(config.rate_per_second, config.rate_burst)),
            app_limiter: RateLimiter::keyed(quota(
                config.app_rate_per_second,
                config.app_rate_burst,
            )),
            config,
            admin_hash,
            metrics,
            manual_clock: None,
        }
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// Lets a tenant's request through its limiter, or answers 429 with `Retry-After`.
// `&String`: the limiter's key type, borrowed from the credential's row without a copy.
#[allow(clippy::ptr_arg)]
pub(crate) fn admit(limiter: &DefaultKeyedRateLimiter<String>, tenant: &String) -> ApiResult<()> {
    match limiter.check_key(tenant) {
        Ok(()) => Ok(()),
        Err(not_until) => {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            metrics::counter!("seatkeeper_rate_limited_total").increment(1);
            Err(ApiError::RateLimited {
                retry_after: wait.as_secs().max(1),
            })
        }
    }
}

/// The shared state handle.
pub type Shared = Arc<AppState>;

/// The whole application router.
pub fn router(state: Shared) -> Router {
    Router::new()
        .nest("/scim/v2", crate::directory::http::routes())
        .nest(
            "/api/v1",
            crate::licenses::http::routes()
                .merge(crate::tenants::http::routes())
                .merge(crate::events::http::routes())
                .merge(crate::billing::http::routes())
                .merge(crate::audit::http::routes())
                .merge(crate::apps::http::routes())
                .merge(crate::ops::openapi::routes())
                .merge(crate::ops::http::api_routes()),
        )
        .merge(crate::ops::http::routes())
        .merge(crate::apps::http::public_routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .layer(middleware::from_fn_with_state(
            state.config.request_timeout,
            timeout,
        ))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// A request id: the caller's `X-Request-Id` if sane, else a fresh one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let elapsed = start.elapsed().as_secs_f64();
    metrics::counter!("seatkeeper_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.clone()).increment(1);
    metrics::histogram!("seatkeeper_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone()).record(elapsed);
    if resp.status().is_server_error() {
        tracing::warn!(request_id = %id, %route, %method, %status, "request failed");
    } else {
        tracing::debug!(request_id = %id, %route, %method, %status, elapsed_ms = elapsed * 1000.0, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn timeout(State(limit): State<std::time::Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// A JSON response with the SCIM media type.
pub struct ScimJson(pub Value);

impl IntoResponse for ScimJson {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/scim+json"),
            )],
            body,
        )
            .into_response()
    }
}

/// Reads a JSON body: checks the media type, enforces the size limit, and turns malformed
/// JSON into SCIM `invalidSyntax` (never axum's plain-text rejection).
pub async fn read_json(req: Request, limit: usize) -> ApiResult<Value> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence != "application/scim+json" && essence != "application/json" {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type must be application/scim+json or application/json, got '{essence}'"
            )));
        }
    }
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!("the request body exceeds {limit} bytes"))
        })?;
    json_from_bytes(&bytes)
}

/// Parses a body already read (endpoints that verify a signature over the raw bytes first):
/// malformed JSON is SCIM `invalidSyntax`.
pub fn json_from_bytes(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.is_empty() {
        return Err(scim::Error::InvalidSyntax("the request body is empty".into()).into());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| scim::Error::InvalidSyntax(format!("the body is not valid JSON: {e}")).into())
}

/// A header's value as text, if it is text.
pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The base URL for `meta.location`.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// A request authenticated with a tenant's SCIM token and within its rate limit.
pub struct ScimAuth(pub Ctx);

impl FromRequestParts<Shared> for ScimAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
        let row = state
            .tokens
            .verify(&state.store, token)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
        admit(&state.limiter, &row.tenant_id)?;
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Ok(ScimAuth(Ctx {
            tenant: row.tenant_id.clone(),
            actor: row.name.clone(),
            request_id,
            base_url: format!("{}/scim/v2", base_url(state, &parts.headers)),
        }))
    }
}

/// A request authenticated with the admin token.
pub struct AdminAuth {
    /// The request id.
    pub request_id: String,
}

impl FromRequestParts<Shared> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("the admin bearer token is required".into()))?;
        if !hashes_equal(&hash_token(token), &state.admin_hash) {
            return Err(ApiError::Unauthorized(
                "the admin token is not valid".into(),
            ));
        }
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Ok(AdminAuth { request_id })
    }
}

/// Sets the status of a response.
pub fn with_status(status: StatusCode, resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    *r.status_mut() = status;
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn slow_requests_are_answered_503_in_scim_form() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async { tokio::time::sleep(std::time::Duration::from_secs(5)).await }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(middleware::from_fn_with_state(
                std::time::Duration::from_millis(20),
                timeout,
            ));
        let slow = app
            .clone()
            .oneshot(Request::builder().uri("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            slow.headers()[header::CONTENT_TYPE],
            "application/scim+json"
        );
        let body: Value =
            serde_json::from_slice(&slow.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["status"], "503");
        assert_eq!(body["detail"], "the request timed out");
        let fast = app
            .oneshot(Request::builder().uri("/fast").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
