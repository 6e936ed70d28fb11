//! `/api/v1` routes for events out: webhook endpoints and their delivery logs, the pull feed
//! and the server-sent event stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::Shared;
use crate::events::store::WebhookRow;
use crate::kernel::catalogue;
use crate::kernel::clock::{Clock, SystemClock};
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, ScimJson, read_json, with_status};
use crate::kernel::signing::{self};

/// Most events one feed page returns.
const MAX_PAGE: i64 = 1000;

/// The routes.
pub fn routes() -> Router<Shared> {
    Router::new()
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
        .route("/events", get(feed))
        .route("/events/stream", get(stream))
}

fn webhook_json(w: &WebhookRow) -> Value {
    json!({"id": w.id, "url": w.url, "events": w.events, "created": w.created, "disabled": w.disabled})
}

async fn create_webhook(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
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
                if !catalogue::subscribable(e) {
                    return Err(scim::Error::InvalidValue(format!(
                        "events: '{e}' is not one of {}",
                        catalogue::subscribable_names().join(", ")
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
    state.tenants.require(&id).await?;
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
    Ok(crate::kernel::extract::empty(StatusCode::NO_CONTENT))
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
    state.tenants.require(tenant).await?;
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
    state.tenants.require(&tenant).await?;
    // Resume after the last event the client saw, else after `after`, else from now.
    let cursor =
        match crate::kernel::extract::header(&headers, "last-event-id").or(q.after.as_deref()) {
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
