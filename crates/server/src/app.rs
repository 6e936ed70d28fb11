//! The application router, assembled from the domain routers, and the middleware every
//! request passes (request ids, metrics, timeouts).

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

use crate::kernel::error::ApiError;
use crate::kernel::extract::RequestId;
use crate::kernel::throttle::{NotTheCallers, Throttle};
pub use crate::state::{AppState, Shared};

/// The documented API: the admin and application operations, each with its OpenAPI
/// operation (the SCIM endpoint, the console and the portal pages, and the probes are not
/// part of it).
fn api() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .merge(crate::tenants::http::routes())
        .merge(crate::licenses::http::routes())
        .merge(crate::reports::http::routes())
        .merge(crate::events::http::routes())
        .merge(crate::billing::http::routes())
        .merge(crate::audit::http::routes())
        .merge(crate::apps::http::routes())
        .merge(crate::apps::http::public_routes())
        .merge(crate::sso::http::routes())
        .merge(crate::portal::http::api_routes())
        .merge(crate::ops::http::api_routes())
        .merge(crate::ops::openapi::routes())
}

/// The OpenAPI document of the API, as `/api/v1/openapi.json` serves it.
pub fn openapi() -> serde_json::Value {
    crate::ops::openapi::finish(api().into_openapi())
}

/// The whole application router.
pub fn router(state: Shared) -> Router {
    let (api, doc) = api().split_for_parts();
    crate::ops::openapi::publish(crate::ops::openapi::finish(doc));
    // Every domain router names its full paths: merged, not nested, a request is routed
    // once (a nested router strips its prefix and routes again).
    Router::new()
        .merge(crate::directory::http::routes())
        .merge(crate::console::http::routes())
        .merge(crate::portal::http::routes())
        .merge(crate::ops::http::routes())
        .merge(api)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(Throttle::new(
                state.config.auth_failures_per_minute,
                state.config.trusted_proxies.clone(),
            )),
            throttle,
        ))
        .layer(middleware::from_fn_with_state(
            state.config.request_timeout,
            observe,
        ))
        .with_state(state)
}

/// Failed authentication, throttled per client address (see [`Throttle`]).
async fn throttle(State(t): State<std::sync::Arc<Throttle>>, req: Request, next: Next) -> Response {
    let Some(client) = t.client(&req) else {
        return next.run(req).await;
    };
    if let Some(retry_after) = t.refused(client) {
        metrics::counter!("seatkeeper_auth_throttled_total").increment(1);
        return ApiError::RateLimited { retry_after }.into_response();
    }
    let resp = next.run(req).await;
    let not_the_callers = resp.extensions().get::<NotTheCallers>().is_some();
    match t.answered(client, resp.status(), not_the_callers) {
        // One past the allowance: this failure is answered as the next ones will be.
        Some(retry_after) => ApiError::RateLimited { retry_after }.into_response(),
        None => resp,
    }
}

/// Every request: its id, a time limit, and its metrics (one layer, not three: each layer
/// costs every request a boxed service clone).
async fn observe(
    State(limit): State<std::time::Duration>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        // 1–128 of [A-Za-z0-9._:-]; anything else (a formula, markup) gets a fresh id.
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let mut resp = in_our_format(timeout(limit, req, next).await).await;
    let status = resp.status().as_u16();
    let elapsed = start.elapsed().as_secs_f64();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (count, duration) = request_metrics(route, &method, status);
    count.increment(1);
    duration.record(elapsed);
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

type RequestMetrics = (metrics::Counter, metrics::Histogram);

thread_local! {
    /// Each request thread's handles of the per-route metrics: registering a labelled metric
    /// builds its key and hashes it into the registry, which cost more than some requests.
    #[allow(clippy::type_complexity)]
    static METRICS: std::cell::RefCell<
        std::collections::HashMap<String, std::collections::HashMap<(axum::http::Method, u16), RequestMetrics>>,
    > = Default::default();
}

/// The request counter and duration histogram of a route, method and status.
fn request_metrics(route: &str, method: &axum::http::Method, status: u16) -> RequestMetrics {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        let key = (method.clone(), status);
        if let Some(h) = m.get(route).and_then(|r| r.get(&key)) {
            return h.clone();
        }
        let (r, me) = (route.to_string(), method.to_string());
        let h = (
            metrics::counter!("seatkeeper_http_requests_total", "route" => r.clone(), "method" => me.clone(), "status" => status.to_string()),
            metrics::histogram!("seatkeeper_http_request_duration_seconds", "route" => r, "method" => me),
        );
        if m.len() > 4096 {
            m.clear();
        }
        m.entry(route.to_string()).or_default().insert(key, h.clone());
        h
    })
}

/// An error answered by something below the handlers (a framework extractor, a layer) in
/// its own format — plain text or nothing — goes out through the one error table. Pages
/// (HTML) and our JSON pass untouched.
async fn in_our_format(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let ours = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/scim+json")
                || ct.starts_with("application/json")
                || ct.starts_with("text/html")
        });
    if ours {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::Rejected { status, detail }.into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

async fn timeout(limit: std::time::Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use http_body_util::BodyExt;
    use serde_json::Value;
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
                observe,
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
