//! `/api/v1/billing`: the signed billing endpoints (generic and Stripe), their secrets and
//! Stripe mappings, and a tenant's billing event log.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::app::Shared;
use crate::billing::service as billing;
use crate::kernel::clock::{Clock, SystemClock};
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{
    AdminAuth, RequestId, ScimJson, json_from_bytes, read_json, with_status,
};
use crate::kernel::signing::{self, SignatureError};

/// Settings keys of the billing secrets.
const BILLING_SECRET: &str = "billing.secret";
const BILLING_SECRET_PREVIOUS: &str = "billing.secret.previous";
const BILLING_SECRET_PREVIOUS_UNTIL: &str = "billing.secret.previous_until";
const STRIPE_SECRET: &str = "billing.stripe.secret";
/// How long a rotated-out billing secret keeps verifying, so the billing system can switch.
const ROTATION_OVERLAP: time::Duration = time::Duration::hours(24);
/// Most events one feed page returns.
const MAX_PAGE: i64 = 1000;

/// The billing routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/billing/events", post(generic_event))
        .route("/billing/stripe", post(stripe_event))
        .route("/billing/secret", post(rotate_secret).put(set_secret))
        .route("/billing/stripe/secret", put(set_stripe_secret))
        .route(
            "/billing/stripe/prices/{price}",
            put(map_price).delete(unmap_price),
        )
        .route(
            "/billing/stripe/customers/{customer}",
            put(map_customer).delete(unmap_customer),
        )
        .route("/tenants/{id}/billing/events", get(billing_log))
}

fn bad_signature(e: SignatureError) -> ApiError {
    ApiError::Unauthorized(format!("the billing event's signature is not valid: {e}"))
}

/// A signed billing body, checked against the size limit after its signature.
fn parse_body(body: &Bytes, limit: usize) -> ApiResult<Value> {
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the request body exceeds {limit} bytes"
        )));
    }
    json_from_bytes(body)
}

/// The secrets a generic billing event may be signed with: the configured one, the stored
/// one, and the previous stored one during its overlap.
async fn billing_secrets(state: &Shared) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    if let Some(s) = &state.config.billing_secret {
        out.push(s.clone());
    }
    if let Some(s) = state.store.setting(BILLING_SECRET).await? {
        out.push(s);
    }
    if let (Some(prev), Some(until)) = (
        state.store.setting(BILLING_SECRET_PREVIOUS).await?,
        state.store.setting(BILLING_SECRET_PREVIOUS_UNTIL).await?,
    ) && crate::kernel::clock::stamp(SystemClock.now()) < until
    {
        out.push(prev);
    }
    Ok(out)
}

async fn generic_event(
    State(state): State<Shared>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let secrets = billing_secrets(&state).await?;
    if secrets.is_empty() {
        return Err(ApiError::Unauthorized(
            "no billing secret is configured: set SEATKEEPER_BILLING_SECRET or POST /api/v1/billing/secret".into(),
        ));
    }
    signing::standard_verify(
        &secrets,
        crate::kernel::extract::header(&headers, "webhook-id"),
        crate::kernel::extract::header(&headers, "webhook-timestamp"),
        crate::kernel::extract::header(&headers, "webhook-signature"),
        &body,
        SystemClock.now().unix_timestamp(),
        state.config.signature_tolerance,
    )
    .map_err(bad_signature)?;
    let value = parse_body(&body, state.config.max_body_bytes)?;
    let ev = billing::parse_generic(&value)?;
    let applied = billing::apply(&state.store, &*state.engine_clock(), &rid.0, ev).await?;
    metrics::counter!("seatkeeper_billing_events_total", "source" => "generic", "outcome" => applied.outcome.clone()).increment(1);
    Ok(ScimJson(json!(applied)).into_response())
}

async fn stripe_event(
    State(state): State<Shared>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let mut secrets = Vec::new();
    if let Some(s) = &state.config.stripe_secret {
        secrets.push(s.clone());
    }
    if let Some(s) = state.store.setting(STRIPE_SECRET).await? {
        secrets.push(s);
    }
    if secrets.is_empty() {
        return Err(ApiError::Unauthorized(
            "no Stripe endpoint secret is configured: set SEATKEEPER_STRIPE_SECRET or PUT /api/v1/billing/stripe/secret".into(),
        ));
    }
    signing::stripe_verify(
        &secrets,
        crate::kernel::extract::header(&headers, "stripe-signature"),
        &body,
        SystemClock.now().unix_timestamp(),
        state.config.signature_tolerance,
    )
    .map_err(bad_signature)?;
    let value = parse_body(&body, state.config.max_body_bytes)?;
    let maps = state.store.stripe_maps().await?;
    let ev = billing::parse_stripe(&value, &maps)?;
    let applied = billing::apply(&state.store, &*state.engine_clock(), &rid.0, ev).await?;
    metrics::counter!("seatkeeper_billing_events_total", "source" => "stripe", "outcome" => applied.outcome.clone()).increment(1);
    Ok(ScimJson(json!(applied)).into_response())
}

async fn rotate_secret(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let secret = signing::new_secret();
    store_billing_secret(&state, &secret).await
}

async fn set_secret(
    State(state): State<Shared>,
    _auth: AdminAuth,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let v = read_json(req, 64 * 1024).await?;
    let secret = v
        .get("secret")
        .and_then(Value::as_str)
        .filter(|s| s.len() >= 16 && s.len() <= 256)
        .ok_or_else(|| {
            ApiError::Scim(scim::Error::InvalidValue(
                "secret must be a string of 16 to 256 characters (whsec_… base64, or any text)"
                    .into(),
            ))
        })?;
    store_billing_secret(&state, secret).await
}

async fn store_billing_secret(state: &Shared, secret: &str) -> ApiResult<Response> {
    let until = SystemClock.now() + ROTATION_OVERLAP;
    let until_text = crate::kernel::clock::stamp(until);
    if let Some(old) = state.store.setting(BILLING_SECRET).await? {
        state
            .store
            .put_setting(BILLING_SECRET_PREVIOUS, &old)
            .await?;
        state
            .store
            .put_setting(BILLING_SECRET_PREVIOUS_UNTIL, &until_text)
            .await?;
    }
    state.store.put_setting(BILLING_SECRET, secret).await?;
    Ok(with_status(
        StatusCode::CREATED,
        ScimJson(json!({"secret": secret, "previous_valid_until": until_text})),
    ))
}

async fn set_stripe_secret(
    State(state): State<Shared>,
    _auth: AdminAuth,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let v = read_json(req, 64 * 1024).await?;
    let secret = v
        .get("secret")
        .and_then(Value::as_str)
        .filter(|s| s.len() >= 8 && s.len() <= 256)
        .ok_or_else(|| {
            ApiError::Scim(scim::Error::InvalidValue(
                "secret must be the endpoint's signing secret (whsec_…)".into(),
            ))
        })?;
    state.store.put_setting(STRIPE_SECRET, secret).await?;
    Ok(ScimJson(json!({"ok": true})).into_response())
}

async fn map_price(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(price): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let v = read_json(req, 64 * 1024).await?;
    let (product, plan) = (
        v.get("product").and_then(Value::as_str).unwrap_or_default(),
        v.get("plan").and_then(Value::as_str).unwrap_or_default(),
    );
    let products = state.store.products().await?;
    let known = products
        .iter()
        .find(|p| p.key.as_str() == product)
        .is_some_and(|p| p.plans.iter().any(|pl| pl.key.as_str() == plan));
    if !known {
        return Err(scim::Error::InvalidValue(format!(
            "product '{product}' with plan '{plan}' is not in the catalogue"
        ))
        .into());
    }
    state.store.put_stripe_price(&price, product, plan).await?;
    Ok(ScimJson(json!({"price": price, "product": product, "plan": plan})).into_response())
}

async fn unmap_price(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(price): Path<String>,
) -> ApiResult<Response> {
    if !state.store.delete_stripe_price(&price).await? {
        return Err(ApiError::NotFound(format!("price {price} is not mapped")));
    }
    Ok(crate::kernel::extract::empty(StatusCode::NO_CONTENT))
}

async fn map_customer(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(customer): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let v = read_json(req, 64 * 1024).await?;
    let tenant = v.get("tenant").and_then(Value::as_str).unwrap_or_default();
    if state.store.tenant(tenant).await?.is_none() {
        return Err(scim::Error::InvalidValue(format!("no tenant '{tenant}'")).into());
    }
    state.store.put_stripe_customer(&customer, tenant).await?;
    Ok(ScimJson(json!({"customer": customer, "tenant": tenant})).into_response())
}

async fn unmap_customer(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(customer): Path<String>,
) -> ApiResult<Response> {
    if !state.store.delete_stripe_customer(&customer).await? {
        return Err(ApiError::NotFound(format!(
            "customer {customer} is not mapped"
        )));
    }
    Ok(crate::kernel::extract::empty(StatusCode::NO_CONTENT))
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
    state.tenants.require(&id).await?;
    let rows = state
        .store
        .billing_events(&id, q.limit.unwrap_or(100).clamp(1, MAX_PAGE))
        .await?;
    Ok(ScimJson(json!({"tenant": id, "events": rows})).into_response())
}
