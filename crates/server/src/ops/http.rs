//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, and `/api/v1/clock` on a test clock.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, Json, ScimJson};
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The operations routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// The operations routes under `/api/v1`.
pub fn api_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(move_clock))
        .routes(routes!(limits))
}

/// Every limit a client can run into, so none has to be found by trial.
#[utoipa::path(
    get,
    path = "/api/v1/limits",
    summary = "The limits this server enforces (body, attribute, resource and page sizes, rates)",
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Limits"), content_type = "application/json")),
    security(()),
    tag = "ops"
)]
async fn limits(State(state): State<Shared>) -> Response {
    let c = &state.config;
    let r = state.engine.limits();
    axum::Json(json!({
        "max_body_bytes": c.max_body_bytes,
        "bulk_max_payload_bytes": c.bulk_max_payload,
        "bulk_max_operations": c.bulk_max_operations,
        "max_attribute_bytes": r.max_attribute_bytes,
        "max_resource_bytes": r.max_resource_bytes,
        "max_page_bytes": r.max_page_bytes,
        "max_page_size": scim::list::MAX_PAGE_SIZE,
        "max_uri_bytes": crate::transport::MAX_URI_BYTES,
        "request_timeout_seconds": c.request_timeout.as_secs(),
        "scim_requests_per_second": c.rate_per_second,
        "scim_burst": c.rate_burst,
        "app_requests_per_second": c.app_rate_per_second,
        "app_burst": c.app_rate_burst,
        "auth_failures_per_minute": c.auth_failures_per_minute,
    }))
    .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<Shared>) -> Response {
    if state.ready().await {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "database unavailable"})),
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    let body = state
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Moves the test clock (only when the server runs on one: `--test-clock`), then runs the
/// term transitions that became due, as the scheduler would.
/// `{"advance_seconds": N}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Advance {
    /// Seconds to move forward (0 to 100 years)
    advance_seconds: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/clock",
    summary = "Move the test clock (servers started with --test-clock only)",
    request_body = Advance,
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ClockMoved"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "ops"
)]
async fn move_clock(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Json(body): Json<Advance>,
) -> ApiResult<Response> {
    let Some(clock) = state.manual_clock.clone() else {
        return Err(ApiError::NotFound(
            "the clock can only be moved when the server runs with --test-clock".into(),
        ));
    };
    let secs = Some(body.advance_seconds)
        .filter(|s| (0..=100 * 365 * 86_400).contains(s))
        .ok_or_else(|| {
            scim::Error::InvalidValue(
                "'advance_seconds' must be a whole number of seconds from 0 to 100 years".into(),
            )
        })?;
    clock.advance(time::Duration::seconds(secs));
    let out = state.licenses.run_due_at(&clock).await?;
    Ok(ScimJson(json!({
        "now": crate::kernel::clock::stamp(crate::kernel::clock::Clock::now(&clock)),
        "tenants": out,
    }))
    .into_response())
}
