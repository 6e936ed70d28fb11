//! `/api/v1/billing`: the signed billing endpoints (generic and Stripe), their secrets and
//! Stripe mappings, and a tenant's billing event log.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::billing::service::StandardHeaders;
use crate::kernel::error::ApiResult;
use crate::kernel::extract::{
    AdminAuth, Json, Path, Query, RawBody, RequestId, ScimJson, empty, header, with_status,
};
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most events one feed page returns.
const MAX_PAGE: i64 = 1000;

/// The billing routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(generic_event))
        .routes(routes!(stripe_event))
        .routes(routes!(rotate_secret, set_secret))
        .routes(routes!(set_stripe_secret))
        .routes(routes!(map_price, unmap_price))
        .routes(routes!(map_customer, unmap_customer))
        .routes(routes!(billing_log))
}

#[utoipa::path(
    post,
    path = "/api/v1/billing/events",
    summary = "A billing event (Standard Webhooks signature)",
    request_body = ref("#/components/schemas/BillingEvent"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/BillingOutcome"), content_type = "application/scim+json")),
    tag = "billing"
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/billing/stripe",
    summary = "A Stripe event (Stripe-Signature)",
    request_body = ref("#/components/schemas/StripeEvent"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/BillingOutcome"), content_type = "application/scim+json")),
    tag = "billing"
)]
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
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    /// 16 to 256 characters (whsec_… base64, or any text)
    #[schema(value_type = String, min_length = 16, max_length = 256)]
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

#[utoipa::path(
    post,
    path = "/api/v1/billing/secret",
    summary = "Rotate the billing secret (the old one stays valid 24 h)",
    responses((status = 201, description = "The new secret, shown once", body = crate::billing::service::SecretSet, content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "billing"
)]
async fn rotate_secret(State(state): State<Shared>, auth: AdminAuth) -> ApiResult<Response> {
    let set = state.billing.set_secret(&auth.actor(), None).await?;
    Ok(with_status(StatusCode::CREATED, ScimJson(json!(set))))
}

#[utoipa::path(
    put,
    path = "/api/v1/billing/secret",
    summary = "Set the billing secret",
    request_body = SecretBody,
    responses((status = 201, description = "The secret set, and until when the previous one is accepted", body = crate::billing::service::SecretSet, content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "billing"
)]
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

#[utoipa::path(
    put,
    path = "/api/v1/billing/stripe/secret",
    summary = "Set the Stripe signing secret",
    request_body = SecretBody,
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Ok"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "billing"
)]
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
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PriceMap {
    product: String,
    plan: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/billing/stripe/prices/{price}",
    summary = "Map a Stripe price or product to a catalogue plan",
    params(("price" = String, Path, description = "A Stripe price id")),
    request_body = PriceMap,
    responses((status = 200, description = "Success", body = ref("#/components/schemas/PriceMapping"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "billing"
)]
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

#[utoipa::path(
    delete,
    path = "/api/v1/billing/stripe/prices/{price}",
    summary = "Remove a Stripe price mapping",
    params(("price" = String, Path, description = "A Stripe price id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "billing"
)]
async fn unmap_price(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(price): Path<String>,
) -> ApiResult<Response> {
    state.billing.unmap_price(&auth.actor(), &price).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `{"tenant"}` a Stripe customer maps to.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerMap {
    tenant: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/billing/stripe/customers/{customer}",
    summary = "Map a Stripe customer to a tenant",
    params(("customer" = String, Path, description = "A Stripe customer id")),
    request_body = CustomerMap,
    responses((status = 200, description = "Success", body = ref("#/components/schemas/CustomerMapping"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "billing"
)]
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

#[utoipa::path(
    delete,
    path = "/api/v1/billing/stripe/customers/{customer}",
    summary = "Remove a Stripe customer mapping",
    params(("customer" = String, Path, description = "A Stripe customer id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "billing"
)]
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Events at most (newest first; default 100)
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/billing/events",
    summary = "The billing events received for a tenant",
    params(("id" = String, Path, description = "The tenant's id"), LogQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/BillingLog"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "billing"
)]
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
