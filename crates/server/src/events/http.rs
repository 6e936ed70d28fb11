//! `/api/v1` routes for events out: webhook endpoints (a tenant's, and vendor-wide ones that
//! receive every tenant's events) and their delivery logs, the pull feed and the server-sent
//! event stream.

use std::time::Duration;

use crate::kernel::extract::{Path, Query};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::events::dispatcher::{envelope, event_id};
use crate::events::service::{NewWebhook, Replay, webhook_json};
use crate::kernel::chain::VENDOR;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, Json, ScimJson, empty, header, with_status};
use crate::kernel::ids::Instant;
use crate::state::Shared;
use futures::StreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most events one feed page returns.
const MAX_PAGE: i64 = 1000;

/// The routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(deliveries))
        .routes(routes!(replay_one))
        .routes(routes!(replay_range))
        .routes(routes!(create_vendor_webhook, list_vendor_webhooks))
        .routes(routes!(vendor_get_webhook, vendor_delete_webhook))
        .routes(routes!(vendor_deliveries))
        .routes(routes!(vendor_replay_one))
        .routes(routes!(vendor_replay_range))
        .routes(routes!(feed_of))
        .routes(routes!(feed))
        .routes(routes!(stream))
}

// Each endpoint route exists twice: under a tenant (its events) and at the top (every
// tenant's events, scope VENDOR). The handlers below take the scope.

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/webhooks",
    summary = "Register a webhook endpoint (its secret is shown once)",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = ref("#/components/schemas/Webhook"),
    responses((status = 201, description = "Success", body = ref("#/components/schemas/WebhookCreated"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn create_webhook(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(body): Json<NewWebhook>,
) -> ApiResult<Response> {
    create(&state, &auth, &id, body).await
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    summary = "Register a vendor-wide webhook endpoint: every tenant's events (its secret is shown once)",
    request_body = ref("#/components/schemas/Webhook"),
    responses((status = 201, description = "Success", body = ref("#/components/schemas/WebhookCreated"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn create_vendor_webhook(
    State(state): State<Shared>,
    auth: AdminAuth,
    Json(body): Json<NewWebhook>,
) -> ApiResult<Response> {
    create(&state, &auth, VENDOR, body).await
}

async fn create(
    state: &Shared,
    auth: &AdminAuth,
    scope: &str,
    body: NewWebhook,
) -> ApiResult<Response> {
    let row = state
        .events
        .create_webhook(&auth.actor(), scope, body)
        .await?;
    let mut out = webhook_json(&row);
    out["secret"] = Value::String(row.secret.clone());
    Ok(with_status(StatusCode::CREATED, ScimJson(out)))
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/webhooks",
    summary = "List webhook endpoints",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/WebhookList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn list_webhooks(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let hooks = list(&state, &id).await?;
    Ok(ScimJson(json!({"tenant": id, "webhooks": hooks})).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    summary = "List vendor-wide webhook endpoints",
    responses((status = 200, description = "Success", body = ref("#/components/schemas/WebhookList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn list_vendor_webhooks(
    State(state): State<Shared>,
    _auth: AdminAuth,
) -> ApiResult<Response> {
    let hooks = list(&state, VENDOR).await?;
    Ok(ScimJson(json!({"webhooks": hooks})).into_response())
}

async fn list(state: &Shared, scope: &str) -> ApiResult<Vec<Value>> {
    Ok(state
        .events
        .webhooks(scope)
        .await?
        .iter()
        .map(webhook_json)
        .collect())
}

/// The scope and endpoint a route names: `/tenants/{id}/webhooks/{wid}…` or `/webhooks/{wid}…`.
struct Endpoint {
    scope: String,
    id: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Endpoint {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
        let scope = params
            .get("id")
            .cloned()
            .unwrap_or_else(|| VENDOR.to_string());
        let id = params.get("wid").cloned().unwrap_or_default();
        Ok(Endpoint { scope, id })
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/webhooks/{wid}",
    summary = "Get a webhook endpoint",
    params(("id" = String, Path, description = "The tenant's id"), ("wid" = String, Path, description = "The webhook's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/WebhookWithCounts"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn get_webhook(
    State(state): State<Shared>,
    _auth: AdminAuth,
    e: Endpoint,
) -> ApiResult<Response> {
    let w = state.events.webhook(&e.scope, &e.id).await?;
    let mut out = webhook_json(&w);
    out["deliveries"] = state.events.delivery_counts(&e.scope, &e.id).await?;
    Ok(ScimJson(out).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/webhooks/{wid}",
    summary = "Disable a webhook endpoint",
    params(("id" = String, Path, description = "The tenant's id"), ("wid" = String, Path, description = "The webhook's id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "events"
)]
async fn delete_webhook(
    State(state): State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
) -> ApiResult<Response> {
    state
        .events
        .disable_webhook(&auth.actor(), &e.scope, &e.id)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// Only deliveries in this state: pending, delivered, failed or dead
    state: Option<String>,
    /// Only deliveries older than this id (the next page)
    before: Option<i64>,
    /// Deliveries at most (default 100)
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/webhooks/{wid}/deliveries",
    summary = "The delivery log (?state=, paging)",
    params(("id" = String, Path, description = "The tenant's id"), ("wid" = String, Path, description = "The webhook's id"), DeliveryQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/DeliveryPage"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn deliveries(
    State(state): State<Shared>,
    _auth: AdminAuth,
    e: Endpoint,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let rows = state
        .events
        .deliveries(&e.scope, &e.id, q.state.as_deref(), q.before, limit)
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let items: Vec<Value> = rows
        .iter()
        .map(|d| {
            let mut v = json!(d);
            v["event"] = Value::String(event_id(d.event_id));
            v
        })
        .collect();
    Ok(ScimJson(json!({"deliveries": items, "next_before": next})).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/webhooks/{wid}/deliveries/{did}/replay",
    summary = "Send one delivery again",
    params(("id" = String, Path, description = "The tenant's id"), ("wid" = String, Path, description = "The webhook's id"), ("did" = String, Path, description = "The delivery's id")),
    responses((status = 202, description = "Queued again", body = ref("#/components/schemas/Replayed"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn replay_one(
    State(state): State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
    Path(params): Path<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let did = params
        .get("did")
        .and_then(|d| d.parse::<i64>().ok())
        .ok_or_else(|| ApiError::NotFound("no such delivery".into()))?;
    let n = state
        .events
        .replay(&auth.actor(), &e.scope, &e.id, Replay::One(did))
        .await?;
    Ok(with_status(
        StatusCode::ACCEPTED,
        ScimJson(json!({"replayed": n})),
    ))
}

/// `{"from": RFC 3339, "to": RFC 3339}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Range {
    /// From this instant (RFC 3339)
    #[schema(value_type = String, format = DateTime)]
    from: Instant,
    /// To this instant (RFC 3339)
    #[schema(value_type = String, format = DateTime)]
    to: Instant,
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/webhooks/{wid}/replay",
    summary = "Send a time range of events again",
    request_body = Range,
    params(("id" = String, Path, description = "The tenant's id"), ("wid" = String, Path, description = "The webhook's id")),
    responses((status = 202, description = "Success", body = ref("#/components/schemas/Replayed"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn replay_range(
    State(state): State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
    Json(range): Json<Range>,
) -> ApiResult<Response> {
    let what = Replay::Range(range.from.stamp(), range.to.stamp());
    let n = state
        .events
        .replay(&auth.actor(), &e.scope, &e.id, what)
        .await?;
    Ok(with_status(
        StatusCode::ACCEPTED,
        ScimJson(json!({"replayed": n})),
    ))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FeedQuery {
    /// Only this tenant's events (vendor feed)
    tenant: Option<String>,
    /// Events after this id (a cursor: the last id seen)
    after: Option<String>,
    /// Events at most (default 100)
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
    let page = state.events.feed(tenant, after, limit).await?;
    Ok(ScimJson(json!(page)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/events",
    summary = "The event feed (?tenant=&after=&limit=)",
    params(FeedQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/EventPage"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn feed(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Query(q): Query<FeedQuery>,
) -> ApiResult<Response> {
    let Some(tenant) = q.tenant.clone() else {
        // Every tenant's events, in one feed.
        let after = match q.after.as_deref() {
            None | Some("") => (0, 0),
            Some(s) => crate::events::service::parse_position(s).ok_or_else(|| {
                ApiError::Scim(scim::Error::InvalidValue(format!(
                    "after '{s}' is not a cursor this feed gave"
                )))
            })?,
        };
        let page = state
            .events
            .feed_all(after, q.limit.unwrap_or(100).clamp(1, MAX_PAGE))
            .await?;
        return Ok(ScimJson(json!({
            "events": page.events, "next_cursor": page.next_cursor, "has_more": page.has_more,
        }))
        .into_response());
    };
    feed_page(&state, &tenant, &q).await
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/events",
    summary = "A tenant's event feed (?after=&limit=)",
    params(("id" = String, Path, description = "The tenant's id"), FeedQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/EventPage"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    summary = "Events as server-sent events (Last-Event-ID resumes)",
    params(FeedQuery),
    responses((status = 200, description = "Server-sent events: `id:` is the event id, `event:` its type, `data:` the event (schema Event)", body = String, content_type = "text/event-stream")),
    security(("admin" = [])),
    tag = "events"
)]
async fn stream(
    State(state): State<Shared>,
    _auth: AdminAuth,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> ApiResult<Response> {
    let Some(tenant) = q.tenant.clone() else {
        // Every tenant's events, live. The SSE id is the feed position, so Last-Event-ID
        // resumes exactly.
        let after = match header(&headers, "last-event-id").or(q.after.as_deref()) {
            Some(s) => crate::events::service::parse_position(s).ok_or_else(|| {
                ApiError::Scim(scim::Error::InvalidValue(format!(
                    "'{s}' is not a position this stream gave"
                )))
            })?,
            None => state.events.last_position().await?,
        };
        let events = state.events.stream_all(after).map(|e| {
            e.map(|(pos, r)| {
                SseEvent::default()
                    .id(crate::events::service::position_text(pos))
                    .event(r.event_type.clone())
                    .data(envelope(&r).to_string())
            })
        });
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    };
    // Resume after the last event the client saw, else after `after`, else from now.
    let cursor = match header(&headers, "last-event-id").or(q.after.as_deref()) {
        Some(s) => {
            state.tenants.require(&tenant).await?;
            parse_cursor(Some(s))?
        }
        None => state.events.last_event_id(&tenant).await?,
    };
    let events = state.events.stream(tenant, cursor).map(|e| {
        e.map(|r| {
            SseEvent::default()
                .id(event_id(r.id))
                .event(r.event_type.clone())
                .data(envelope(&r).to_string())
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

// The vendor-wide endpoints (`/api/v1/webhooks/…`) are the tenant routes' handlers under
// their own paths, each documented as its own operation.

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{wid}",
    summary = "Get a vendor-wide webhook endpoint",
    params(("wid" = String, Path, description = "The webhook's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/WebhookWithCounts"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn vendor_get_webhook(
    state: State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
) -> ApiResult<Response> {
    get_webhook(state, auth, e).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{wid}",
    summary = "Disable a vendor-wide webhook endpoint",
    params(("wid" = String, Path, description = "The webhook's id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "events"
)]
async fn vendor_delete_webhook(
    state: State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
) -> ApiResult<Response> {
    delete_webhook(state, auth, e).await
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{wid}/deliveries",
    summary = "A vendor-wide endpoint's delivery log (?state=, paging; each names its tenant)",
    params(("wid" = String, Path, description = "The webhook's id"), DeliveryQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/DeliveryPage"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn vendor_deliveries(
    state: State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
    q: Query<DeliveryQuery>,
) -> ApiResult<Response> {
    deliveries(state, auth, e, q).await
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{wid}/deliveries/{did}/replay",
    summary = "Send one delivery of a vendor-wide endpoint again",
    params(("wid" = String, Path, description = "The webhook's id"), ("did" = String, Path, description = "The delivery's id")),
    responses((status = 202, description = "Queued again", body = ref("#/components/schemas/Replayed"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn vendor_replay_one(
    state: State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
    p: Path<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    replay_one(state, auth, e, p).await
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{wid}/replay",
    summary = "Send a time range of a vendor-wide endpoint's events again",
    request_body = Range,
    params(("wid" = String, Path, description = "The webhook's id")),
    responses((status = 202, description = "Success", body = ref("#/components/schemas/Replayed"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "events"
)]
async fn vendor_replay_range(
    state: State<Shared>,
    auth: AdminAuth,
    e: Endpoint,
    range: Json<Range>,
) -> ApiResult<Response> {
    replay_range(state, auth, e, range).await
}
