//! `/api/v1/billing`: the signed billing endpoints (generic and Stripe), their secrets and
//! Stripe mappings, and a tenant's billing event log.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use crate::billing::service::StandardHeaders;
use crate::kernel::error::ApiResult;
use crate::kernel::extract::{
    AdminAuth, Json, Path, Query, RawBody, RequestId, ScimJson, empty, header, with_status,
};
use crate::state::Shared;

/// Most events one feed page returns.
const MAX_PAGE: i64 = 1000;

/// The billing routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/billing/events", post(generic_event))
        .route("/api/v1/billing/stripe", post(stripe_event))
        .route(
            "/api/v1/billing/secret",
            post(rotate_secret).put(set_secret),
        )
        .route("/api/v1/billing/stripe/secret", put(set_stripe_secret))
        .route(
            "/api/v1/billing/stripe/prices/{price}",
            put(map_price).delete(unmap_price),
        )
        .route(
            "/api/v1/billing/stripe/customers/{customer}",
            put(map_customer).delete(unmap_customer),
        )
        .route("/api/v1/tenants/{id}/billing/events", get(billing_log))
}

async fn generic_event(
    State(state): State<Shared>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let signed = StandardHeaders {
        id: header(&headers, "webhook-id"),
        timestamp: header(&headers, "webhook-timestamp"),
        signature: header(&headers, "webhook-signature"),
    };
    let applied = state.billing.receive_generic(&rid.0, signed, &body).await?;
    Ok(ScimJson(json!(applied)).into_response())
}

async fn stripe_event(
    State(state): State<Shared>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let signature = header(&headers, "stripe-signature");
    let applied = state
        .billing
        .receive_stripe(&rid.0, signature, &body)
        .await?;
    Ok(ScimJson(json!(applied)).into_response())
}

/// A secret to set.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    secret: Secret,
}

/// A secret of 8 to 256 characters.
struct Secret(String);

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() < 8 || s.len() > 256 {
            return Err(serde::de::Error::custom(
                "must be a secret of 8 to 256 characters (whsec_… base64, or any text)",
            ));
        }
        Ok(Secret(s))
    }
}

async fn rotate_secret(State(state): State<Shared>, auth: AdminAuth) -> ApiResult<Response> {
    let set = state.billing.set_secret(&auth.actor(), None).await?;
    Ok(with_status(StatusCode::CREATED, ScimJson(json!(set))))
}

async fn set_secret(
    State(state): State<Shared>,
    auth: AdminAuth,
    Json(body): Json<SecretBody>,
) -> ApiResult<Response> {
    if body.secret.0.len() < 16 {
        return Err(scim::Error::InvalidValue(
            "secret: must be a string of 16 to 256 characters (whsec_… base64, or any text)".into(),
        )
        .into());
    }
    let set = state
        .billing
        .set_secret(&auth.actor(), Some(body.secret.0))
        .await?;
    Ok(with_status(StatusCode::CREATED, ScimJson(json!(set))))
}

async fn set_stripe_secret(
    State(state): State<Shared>,
    auth: AdminAuth,
    Json(body): Json<SecretBody>,
) -> ApiResult<Response> {
    state
        .billing
        .set_stripe_secret(&auth.actor(), &body.secret.0)
        .await?;
    Ok(ScimJson(json!({"ok": true})).into_response())
}

/// `{"product", "plan"}` a Stripe price maps to.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceMap {
    product: String,
    plan: String,
}

async fn map_price(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(price): Path<String>,
    Json(body): Json<PriceMap>,
) -> ApiResult<Response> {
    state
        .billing
        .map_price(&auth.actor(), &price, &body.product, &body.plan)
        .await?;
    Ok(
        ScimJson(json!({"price": price, "product": body.product, "plan": body.plan}))
            .into_response(),
    )
}

async fn unmap_price(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(price): Path<String>,
) -> ApiResult<Response> {
    state.billing.unmap_price(&auth.actor(), &price).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `{"tenant"}` a Stripe customer maps to.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerMap {
    tenant: String,
}

async fn map_customer(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(customer): Path<String>,
    Json(body): Json<CustomerMap>,
) -> ApiResult<Response> {
    state
        .billing
        .map_customer(&auth.actor(), &customer, &body.tenant)
        .await?;
    Ok(ScimJson(json!({"customer": customer, "tenant": body.tenant})).into_response())
}

async fn unmap_customer(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(customer): Path<String>,
) -> ApiResult<Response> {
    state
        .billing
        .unmap_customer(&auth.actor(), &customer)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[derive(serde::Deserialize)]
struct LogQuery {
    limit: Option<i64>,
}

async fn billing_log(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let rows = state
        .billing
        .log(&id, q.limit.unwrap_or(100).clamp(1, MAX_PAGE))
        .await?;
    Ok(ScimJson(json!({"tenant": id, "events": rows})).into_response())
}
