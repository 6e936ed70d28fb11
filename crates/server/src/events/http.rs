//! `/api/v1` routes for billing events in and events out: the signed billing endpoints
//! (generic and Stripe), their secrets and Stripe mappings, webhook endpoints and their
//! delivery logs, the pull feed and the server-sent event stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::app::{AdminAuth, RequestId, ScimJson, Shared, json_from_bytes, read_json, with_status};
use crate::billing::service as billing;
use crate::events::store::WebhookRow;
use crate::kernel::clock::{Clock, SystemClock};
use crate::kernel::error::{ApiError, ApiResult};
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

/// The routes.
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
        .route(
            "/tenants/{id}/webhooks",
            post(create_webhook).get(list_webhooks),
        )
        .route(
            "/tenants/{id}/webhooks/{wid}",
            get(get_webhook).delete(delete_webhook),
        )
        .route("/tenants/{id}/webhooks/{wid}/deliveries", get(deliveries))
        .route(
            "/tenants/{id}/webhooks/{wid}/deliveries/{did}/replay",
            post(replay_one),
        )
        .route("/tenants/{id}/webhooks/{wid}/replay", post(replay_range))
        .route("/tenants/{id}/events", get(feed_of))
        .route("/tenants/{id}/audit", get(audit))
        .route("/events", get(feed))
        .route("/events/stream", get(stream))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
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
        header(&headers, "webhook-id"),
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
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
        header(&headers, "stripe-signature"),
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
    Ok(crate::app::empty(StatusCode::NO_CONTENT))
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
    Ok(crate::app::empty(StatusCode::NO_CONTENT))
}

async fn require_tenant(state: &Shared, id: &str) -> ApiResult<()> {
    if state.store.tenant(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {id} not found")));
    }
    Ok(())
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
    require_tenant(&state, &id).await?;
    let rows = state
        .store
        .billing_events(&id, q.limit.unwrap_or(100).clamp(1, MAX_PAGE))
        .await?;
    Ok(ScimJson(json!({"tenant": id, "events": rows})).into_response())
}

/// Every event type an endpoint may ask for.
pub const EVENT_TYPES: [&str; 19] = [
    "user.provisioned",
    "user.updated",
    "user.deprovisioned",
    "group.created",
    "group.updated",
    "group.deleted",
    "license.assigned",
    "license.waitlisted",
    "license.promoted",
    "license.revoked",
    "license.changed",
    "subscription.changed",
    "subscription.expiring",
    "seats.exhausted",
    "rule.changed",
    "user.*",
    "group.*",
    "license.*",
    "*",
];

fn webhook_json(w: &WebhookRow) -> Value {
    json!({"id": w.id, "url": w.url, "events": w.events, "created": w.created, "disabled": w.disabled})
}

async fn create_webhook(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    require_tenant(&state, &id).await?;
    let v = read_json(req, 64 * 1024).await?;
    let url = v.get("url").and_then(Value::as_str).unwrap_or_default();
    let parsed = url::Url::parse(url).map_err(|_| {
        ApiError::Scim(scim::Error::InvalidValue(format!(
            "url '{url}' is not an absolute http(s) URL"
        )))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() || url.len() > 2048 {
        return Err(scim::Error::InvalidValue(format!(
            "url '{url}' must be an absolute http(s) URL of at most 2048 characters"
        ))
        .into());
    }
    let events: Vec<String> = match v.get("events") {
        None => vec!["*".into()],
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 64 => {
            let mut out = Vec::new();
            for e in a {
                let e = e.as_str().unwrap_or_default();
                if !EVENT_TYPES.contains(&e) {
                    return Err(scim::Error::InvalidValue(format!(
                        "events: '{e}' is not one of {}",
                        EVENT_TYPES.join(", ")
                    ))
                    .into());
                }
                out.push(e.to_string());
            }
            out
        }
        Some(_) => {
            return Err(scim::Error::InvalidValue(
                "events must be a non-empty list of event types (\"*\" for all)".into(),
            )
            .into());
        }
    };
    let row = WebhookRow {
        tenant: id.clone(),
        id: uuid::Uuid::now_v7().to_string(),
        url: url.to_string(),
        events,
        secret: signing::new_secret(),
        created: crate::kernel::clock::stamp(SystemClock.now()),
        cursor: 0,
        disabled: None,
    };
    state.store.create_webhook(&row).await?;
    let mut out = webhook_json(&row);
    out["secret"] = Value::String(row.secret.clone());
    Ok(with_status(StatusCode::CREATED, ScimJson(out)))
}

async fn list_webhooks(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_tenant(&state, &id).await?;
    let hooks: Vec<Value> = state
        .store
        .webhooks(&id)
        .await?
        .iter()
        .map(webhook_json)
        .collect();
    Ok(ScimJson(json!({"tenant": id, "webhooks": hooks})).into_response())
}

async fn find_webhook(state: &Shared, id: &str, wid: &str) -> ApiResult<WebhookRow> {
    state
        .store
        .webhooks(id)
        .await?
        .into_iter()
        .find(|w| w.id == wid)
        .ok_or_else(|| ApiError::NotFound(format!("tenant {id} has no webhook {wid}")))
}

async fn get_webhook(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, wid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let w = find_webhook(&state, &id, &wid).await?;
    let mut out = webhook_json(&w);
    out["deliveries"] = state.store.delivery_counts(&id, &wid).await?;
    Ok(ScimJson(out).into_response())
}

async fn delete_webhook(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, wid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let now = crate::kernel::clock::stamp(SystemClock.now());
    if !state.store.disable_webhook(&id, &wid, &now).await? {
        return Err(ApiError::NotFound(format!(
            "tenant {id} has no webhook {wid}"
        )));
    }
    Ok(crate::app::empty(StatusCode::NO_CONTENT))
}

#[derive(serde::Deserialize)]
struct DeliveryQuery {
    state: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

async fn deliveries(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, wid)): Path<(String, String)>,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<Response> {
    find_webhook(&state, &id, &wid).await?;
    if let Some(s) = &q.state
        && !["pending", "delivered", "dead"].contains(&s.as_str())
    {
        return Err(scim::Error::InvalidValue(format!(
            "state '{s}' must be pending, delivered or dead"
        ))
        .into());
    }
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let rows = state
        .store
        .deliveries(&id, &wid, q.state.as_deref(), q.before, limit)
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let items: Vec<Value> = rows
        .iter()
        .map(|d| {
            let mut v = json!(d);
            v["event"] = Value::String(crate::events::dispatcher::event_id(d.event_id));
            v
        })
        .collect();
    Ok(ScimJson(json!({"deliveries": items, "next_before": next})).into_response())
}

async fn replay_one(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, wid, did)): Path<(String, String, i64)>,
) -> ApiResult<Response> {
    find_webhook(&state, &id, &wid).await?;
    let now = crate::kernel::clock::stamp(SystemClock.now());
    let n = state
        .store
        .write(move |tx| tx.replay(&id, &wid, Some(did), None, &now))
        .await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no delivery {did}")));
    }
    Ok(with_status(
        StatusCode::ACCEPTED,
        ScimJson(json!({"replayed": n})),
    ))
}

#[derive(serde::Deserialize)]
struct Range {
    from: String,
    to: String,
}

async fn replay_range(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, wid)): Path<(String, String)>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    find_webhook(&state, &id, &wid).await?;
    let v = read_json(req, 64 * 1024).await?;
    let range: Range = serde_json::from_value(v).map_err(|_| {
        ApiError::Scim(scim::Error::InvalidValue(
            "the body must be {\"from\": RFC 3339, \"to\": RFC 3339}".into(),
        ))
    })?;
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(crate::kernel::clock::stamp)
            .map_err(|_| {
                ApiError::Scim(scim::Error::InvalidValue(format!(
                    "'{s}' is not an RFC 3339 instant"
                )))
            })
    };
    let (from, to) = (parse(&range.from)?, parse(&range.to)?);
    if to < from {
        return Err(scim::Error::InvalidValue("to is before from".into()).into());
    }
    let now = crate::kernel::clock::stamp(SystemClock.now());
    let n = state
        .store
        .write(move |tx| tx.replay(&id, &wid, None, Some((&from, &to)), &now))
        .await?;
    Ok(with_status(
        StatusCode::ACCEPTED,
        ScimJson(json!({"replayed": n})),
    ))
}

#[derive(serde::Deserialize)]
struct FeedQuery {
    tenant: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

fn parse_cursor(after: Option<&str>) -> ApiResult<i64> {
    match after {
        None | Some("") => Ok(0),
        Some(s) => s
            .strip_prefix("evt_")
            .unwrap_or(s)
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::Scim(scim::Error::InvalidValue(format!(
                    "after '{s}' is not a cursor this feed gave"
                )))
            }),
    }
}

async fn page(state: &Shared, tenant: &str, after: i64, limit: i64) -> ApiResult<Response> {
    require_tenant(state, tenant).await?;
    let rows = state.store.outbox_after(tenant, after, limit).await?;
    let next = rows.last().map_or(after, |r| r.id);
    let events: Vec<Value> = rows
        .iter()
        .map(crate::events::dispatcher::envelope)
        .collect();
    Ok(ScimJson(json!({
        "events": events,
        "next_cursor": crate::events::dispatcher::event_id(next),
        "has_more": rows.len() as i64 == limit,
    }))
    .into_response())
}

async fn feed(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Query(q): Query<FeedQuery>,
) -> ApiResult<Response> {
    let tenant = q.tenant.clone().ok_or_else(|| {
        ApiError::Scim(scim::Error::InvalidValue(
            "tenant is required: ?tenant=ID".into(),
        ))
    })?;
    feed_page(&state, &tenant, &q).await
}

async fn feed_of(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    Query(q): Query<FeedQuery>,
) -> ApiResult<Response> {
    feed_page(&state, &id, &q).await
}

async fn feed_page(state: &Shared, tenant: &str, q: &FeedQuery) -> ApiResult<Response> {
    let after = parse_cursor(q.after.as_deref())?;
    page(
        state,
        tenant,
        after,
        q.limit.unwrap_or(100).clamp(1, MAX_PAGE),
    )
    .await
}

async fn stream(
    State(state): State<Shared>,
    _auth: AdminAuth,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> ApiResult<Response> {
    let tenant = q.tenant.clone().ok_or_else(|| {
        ApiError::Scim(scim::Error::InvalidValue(
            "tenant is required: ?tenant=ID".into(),
        ))
    })?;
    require_tenant(&state, &tenant).await?;
    // Resume after the last event the client saw, else after `after`, else from now.
    let cursor = match header(&headers, "last-event-id").or(q.after.as_deref()) {
        Some(s) => parse_cursor(Some(s))?,
        None => state.store.last_event_id(&tenant).await?,
    };
    let store = state.store.clone();
    let s = async_stream(store, tenant, cursor);
    Ok(Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// What the event stream carries between polls.
struct StreamState {
    store: crate::kernel::store::Store,
    tenant: String,
    cursor: i64,
    commits: tokio::sync::watch::Receiver<u64>,
    queue: std::collections::VecDeque<SseEvent>,
}

fn async_stream(
    store: crate::kernel::store::Store,
    tenant: String,
    cursor: i64,
) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> {
    let commits = store.event_commits();
    let start = StreamState {
        store,
        tenant,
        cursor,
        commits,
        queue: Default::default(),
    };
    futures::stream::unfold(start, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            st.commits.borrow_and_update();
            match st.store.outbox_after(&st.tenant, st.cursor, 500).await {
                Ok(rows) if !rows.is_empty() => {
                    for r in rows {
                        st.cursor = r.id;
                        let data = crate::events::dispatcher::envelope(&r).to_string();
                        st.queue.push_back(
                            SseEvent::default()
                                .id(crate::events::dispatcher::event_id(r.id))
                                .event(r.event_type.clone())
                                .data(data),
                        );
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "event stream read failed"),
            }
            tokio::select! {
                r = st.commits.changed() => if r.is_err() { return None; },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

#[derive(serde::Deserialize)]
struct AuditParams {
    #[serde(flatten)]
    query: crate::kernel::store::AuditQuery,
    after: Option<String>,
    limit: Option<i64>,
    format: Option<String>,
}

fn audit_json(r: &crate::kernel::chain::AuditRow) -> Value {
    let doc = |d: &Option<String>| {
        d.as_deref()
            .map(|s| serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.to_string())))
            .unwrap_or(Value::Null)
    };
    json!({
        "seq": r.seq, "at": r.at, "actor": r.actor, "action": r.action,
        "resource_type": r.resource_type, "resource_id": r.resource_id, "request_id": r.request_id,
        "before": doc(&r.before), "after": doc(&r.after), "prev_hash": r.prev_hash, "hash": r.hash,
    })
}

const CSV_HEADER: &str =
    "seq,at,actor,action,resource_type,resource_id,request_id,before,after,prev_hash,hash\r\n";

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn audit_csv(r: &crate::kernel::chain::AuditRow) -> String {
    let fields = [
        r.seq.to_string(),
        r.at.clone(),
        r.actor.clone(),
        r.action.clone(),
        r.resource_type.clone(),
        r.resource_id.clone(),
        r.request_id.clone(),
        r.before.clone().unwrap_or_default(),
        r.after.clone().unwrap_or_default(),
        r.prev_hash.clone(),
        r.hash.clone(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn instant(name: &str, v: &Option<String>) -> ApiResult<Option<String>> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(crate::kernel::clock::stamp)
                .map_err(|_| {
                    ApiError::Scim(scim::Error::InvalidValue(format!(
                        "{name} '{s}' is not an RFC 3339 instant"
                    )))
                })
        })
        .transpose()
}

/// `GET /api/v1/tenants/{id}/audit`: filtered by time range, actor, action, resource and
/// request id; a page of JSON with a cursor, or the whole selection streamed as JSON Lines
/// (`format=jsonl`) or CSV (`format=csv`).
async fn audit(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Query<AuditParams>,
) -> ApiResult<Response> {
    require_tenant(&state, &id).await?;
    let mut q = p.query.clone();
    q.from = instant("from", &q.from)?;
    q.to = instant("to", &q.to)?;
    for (name, v) in [
        ("actor", &q.actor),
        ("action", &q.action),
        ("resource_type", &q.resource_type),
        ("resource_id", &q.resource_id),
        ("request_id", &q.request_id),
    ] {
        if v.as_ref().is_some_and(|s| s.len() > 256) {
            return Err(
                scim::Error::InvalidValue(format!("{name} is longer than 256 characters")).into(),
            );
        }
    }
    let after = match p.after.as_deref() {
        None | Some("") => 0,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::Scim(scim::Error::InvalidValue(format!(
                "after '{s}' is not a cursor this API gave"
            )))
        })?,
    };
    let accept = header(&headers, "accept").unwrap_or_default();
    let format = match p.format.as_deref() {
        Some(f) => f.to_string(),
        None if accept.contains("text/csv") => "csv".into(),
        None if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") => {
            "jsonl".into()
        }
        None => "json".into(),
    };
    match format.as_str() {
        "json" => {
            let limit = p.limit.unwrap_or(100).clamp(1, MAX_PAGE);
            let rows = state.store.audit_query(&id, &q, after, limit).await?;
            let next = rows.last().map_or(after, |r| r.seq);
            let records: Vec<Value> = rows.iter().map(audit_json).collect();
            Ok(ScimJson(json!({
                "tenant": id, "records": records,
                "next_cursor": next.to_string(), "has_more": rows.len() as i64 == limit,
            }))
            .into_response())
        }
        "jsonl" | "csv" => {
            let csv = format == "csv";
            let store = state.store.clone();
            let start = (store, id, q, after, false, csv);
            let body =
                futures::stream::unfold(start, |(store, id, q, after, done, csv)| async move {
                    if done {
                        return None;
                    }
                    let mut chunk = String::new();
                    match store.audit_query(&id, &q, after, 1000).await {
                        Ok(rows) => {
                            let last = rows.last().map_or(after, |r| r.seq);
                            for r in &rows {
                                if csv {
                                    chunk.push_str(&audit_csv(r));
                                } else {
                                    chunk.push_str(&audit_json(r).to_string());
                                    chunk.push('\n');
                                }
                            }
                            let finished = rows.len() < 1000;
                            Some((
                                Ok::<_, std::io::Error>(Bytes::from(chunk)),
                                (store, id, q, last, finished, csv),
                            ))
                        }
                        Err(e) => Some((
                            Err(std::io::Error::other(e.to_string())),
                            (store, id, q, after, true, csv),
                        )),
                    }
                });
            let head =
                futures::stream::iter(csv.then(|| Ok(Bytes::from_static(CSV_HEADER.as_bytes()))));
            let body = axum::body::Body::from_stream(futures::StreamExt::chain(head, body));
            let ct = if csv {
                "text/csv; charset=utf-8"
            } else {
                "application/x-ndjson"
            };
            Ok(([(axum::http::header::CONTENT_TYPE, ct)], body).into_response())
        }
        other => Err(scim::Error::InvalidValue(format!(
            "format '{other}' must be json, jsonl or csv"
        ))
        .into()),
    }
}
