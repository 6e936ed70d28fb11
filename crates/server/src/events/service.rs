//! Events out, as commands: webhook endpoints (each change audited on the tenant's chain and
//! announced as a `webhook.*` event), their delivery logs and replays, the pull feed and the
//! live stream.

use std::convert::Infallible;
use std::time::Duration;

use serde_json::{Value, json};

use crate::events::destination::{self, Destinations};
use crate::events::dispatcher::{envelope, event_id};
use crate::events::store::{DeliveryRow, WebhookRow};
use crate::kernel::catalogue::{self, EventType};
use crate::kernel::clock::{SharedClock, stamp};
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::signing;
use crate::kernel::store::{Actor, Change, OutboxRow, Store, Tx, VENDOR};
use crate::tenants::service::Tenants;

/// Most event types or patterns one endpoint may name.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Longest endpoint URL.
pub const MAX_URL: usize = 2048;

/// A webhook endpoint to register.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where deliveries go: an absolute http(s) URL.
    pub url: String,
    /// Event types and patterns (`license.*`, `*`); all events when absent.
    pub events: Option<Vec<String>>,
}

/// Which deliveries to queue again.
#[derive(Debug, Clone)]
pub enum Replay {
    /// One delivery, by id.
    One(i64),
    /// Every delivery of events created in `[from, to]` (stamps).
    Range(String, String),
}

/// A page of the feed.
#[derive(Debug, serde::Serialize)]
pub struct FeedPage {
    /// The events, oldest first.
    pub events: Vec<Value>,
    /// Where the next page starts.
    pub next_cursor: String,
    /// Whether a full page was returned (more may follow).
    pub has_more: bool,
}

/// A vendor-feed position as its cursor text (`{tx}.{id}`).
pub fn position_text(p: (i64, i64)) -> String {
    format!("{}.{}", p.0, p.1)
}

/// A vendor-feed cursor: what [`position_text`] wrote.
pub fn parse_position(s: &str) -> Option<(i64, i64)> {
    let (tx, id) = s.split_once('.')?;
    let (tx, id) = (tx.parse().ok()?, id.parse().ok()?);
    (tx >= 0 && id >= 0).then_some((tx, id))
}

/// The events service.
#[derive(Clone)]
pub struct Events {
    store: Store,
    clock: SharedClock,
    tenants: Tenants,
    destinations: Destinations,
}

/// The public view of an endpoint (never its secret).
pub fn webhook_json(w: &WebhookRow) -> Value {
    json!({"id": w.id, "url": w.url, "events": w.events, "created": w.created, "disabled": w.disabled})
}

fn not_found(scope: &str, id: &str) -> ApiError {
    if scope == VENDOR {
        ApiError::NotFound(format!("there is no vendor-wide webhook {id}"))
    } else {
        ApiError::NotFound(format!("tenant {scope} has no webhook {id}"))
    }
}

fn invalid(msg: String) -> ApiError {
    scim::Error::InvalidValue(msg).into()
}

impl NewWebhook {
    fn validate(self) -> ApiResult<(String, Vec<String>)> {
        let url = self.url;
        let parsed = url::Url::parse(&url)
            .map_err(|_| invalid(format!("url '{url}' is not an absolute http(s) URL")))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host().is_none()
            || url.len() > MAX_URL
        {
            return Err(invalid(format!(
                "url '{url}' must be an absolute http(s) URL of at most {MAX_URL} characters"
            )));
        }
        let events = match self.events {
            None => vec!["*".to_string()],
            Some(list) if !list.is_empty() && list.len() <= MAX_SUBSCRIPTIONS => {
                if let Some(bad) = list.iter().find(|e| !catalogue::subscribable(e)) {
                    return Err(invalid(format!(
                        "events: '{bad}' is not one of {}",
                        catalogue::subscribable_names().join(", ")
                    )));
                }
                list
            }
            Some(_) => {
                return Err(invalid(format!(
                    "events must be a list of 1 to {MAX_SUBSCRIPTIONS} event types (\"*\" for all)"
                )));
            }
        };
        Ok((url, events))
    }
}

/// The audit record and outbox event of an endpoint's change.
fn webhook_changed(
    tx: &mut Tx<'_>,
    actor: &Actor,
    at: &str,
    w: &WebhookRow,
    event: EventType,
    before: Option<Value>,
    extra: Value,
) -> ApiResult<()> {
    let action = match event {
        EventType::WebhookCreated => "webhook.create",
        EventType::WebhookDisabled => "webhook.disable",
        _ => "webhook.replay",
    };
    let after = webhook_json(w);
    tx.record_change(
        actor,
        at,
        Change {
            chain: &w.tenant,
            action,
            resource_type: "Webhook",
            resource_id: &w.id,
            before,
            after: Some(after.clone()),
        },
    )?;
    // A vendor endpoint belongs to no tenant's feed: its changes are on the vendor chain only.
    if w.is_vendor() {
        return Ok(());
    }
    let mut payload = json!({"webhook": after, "request_id": actor.request_id});
    if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        p.extend(extra);
    }
    tx.outbox(&w.tenant, event, "Webhook", &w.id, &payload.to_string(), at)?;
    Ok(())
}

impl Events {
    /// The service over a store.
    pub fn new(
        store: Store,
        clock: SharedClock,
        tenants: Tenants,
        destinations: Destinations,
    ) -> Events {
        Events {
            store,
            clock,
            tenants,
            destinations,
        }
    }

    /// 404 unless the scope is a tenant that exists or the vendor (every tenant).
    async fn require_scope(&self, scope: &str) -> ApiResult<()> {
        if scope == VENDOR {
            return Ok(());
        }
        self.tenants.require(scope).await?;
        Ok(())
    }

    /// Registers an endpoint of a tenant, or of the vendor (`scope` [`VENDOR`]: every
    /// tenant's events); the answer holds its signing secret, the only time it is shown.
    /// The endpoint receives events committed after it (a tenant endpoint its own
    /// `webhook.created` included).
    pub async fn create_webhook(
        &self,
        actor: &Actor,
        tenant: &str,
        new: NewWebhook,
    ) -> ApiResult<WebhookRow> {
        self.require_scope(tenant).await?;
        let (url, events) = new.validate()?;
        let parsed = url::Url::parse(&url)
            .map_err(|_| invalid(format!("url '{url}' is not an absolute http(s) URL")))?;
        destination::check_url(&parsed, self.destinations)
            .await
            .map_err(|why| {
                invalid(format!(
                    "url '{url}' may not receive webhooks: {why}. Loopback, private, link-local and \
                     metadata addresses are refused unless the server runs with \
                     --allow-private-webhooks"
                ))
            })?;
        let row = WebhookRow {
            tenant: tenant.to_string(),
            id: uuid::Uuid::now_v7().to_string(),
            url,
            events,
            secret: signing::new_secret(),
            created: stamp(self.clock.now()),
            cursor: 0,
            cursor_tx: 0,
            disabled: None,
        };
        let (actor, out) = (actor.clone(), row.clone());
        self.store
            .write(move |tx| {
                let at = row.created.clone();
                webhook_changed(
                    tx,
                    &actor,
                    &at,
                    &row,
                    EventType::WebhookCreated,
                    None,
                    json!({}),
                )?;
                // The announcement is written first, so the endpoint's cursor starts at it.
                tx.flush()?;
                tx.insert_webhook(&row)?;
                Ok::<_, ApiError>(())
            })
            .await?;
        // This node's dispatcher looks for endpoints again at once (other nodes' within
        // their look interval).
        crate::events::dispatcher::WEBHOOKS_ADDED
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.store.wake_event_readers();
        Ok(out)
    }

    /// A tenant's endpoints, or the vendor's (404 for an unknown tenant).
    pub async fn webhooks(&self, tenant: &str) -> ApiResult<Vec<WebhookRow>> {
        self.require_scope(tenant).await?;
        Ok(self.store.webhooks(tenant).await?)
    }

    /// One endpoint, or 404.
    pub async fn webhook(&self, tenant: &str, id: &str) -> ApiResult<WebhookRow> {
        self.store
            .webhooks(tenant)
            .await?
            .into_iter()
            .find(|w| w.id == id)
            .ok_or_else(|| not_found(tenant, id))
    }

    /// An endpoint's deliveries by state.
    pub async fn delivery_counts(&self, tenant: &str, id: &str) -> ApiResult<Value> {
        Ok(self.store.delivery_counts(tenant, id).await?)
    }

    /// Disables an endpoint; its pending deliveries become dead.
    pub async fn disable_webhook(&self, actor: &Actor, tenant: &str, id: &str) -> ApiResult<()> {
        let now = stamp(self.clock.now());
        let (actor, tenant, id) = (actor.clone(), tenant.to_string(), id.to_string());
        self.store
            .write(move |tx| {
                let Some(before) = tx.disable_webhook(&tenant, &id, &now)? else {
                    return Err(not_found(&tenant, &id));
                };
                let mut after = before.clone();
                after.disabled = Some(now.clone());
                webhook_changed(
                    tx,
                    &actor,
                    &now,
                    &after,
                    EventType::WebhookDisabled,
                    Some(webhook_json(&before)),
                    json!({}),
                )
            })
            .await
    }

    /// An endpoint's delivery log, newest first.
    pub async fn deliveries(
        &self,
        tenant: &str,
        id: &str,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> ApiResult<Vec<DeliveryRow>> {
        self.webhook(tenant, id).await?;
        if let Some(s) = state
            && !["pending", "delivered", "dead"].contains(&s)
        {
            return Err(invalid(format!(
                "state '{s}' must be pending, delivered or dead"
            )));
        }
        Ok(self
            .store
            .deliveries(tenant, id, state, before, limit)
            .await?)
    }

    /// Queues deliveries again; returns how many. Audited, and announced as
    /// `webhook.replayed`.
    pub async fn replay(
        &self,
        actor: &Actor,
        tenant: &str,
        id: &str,
        what: Replay,
    ) -> ApiResult<u64> {
        let hook = self.webhook(tenant, id).await?;
        if let Replay::Range(from, to) = &what
            && to < from
        {
            return Err(invalid("to is before from".into()));
        }
        let now = stamp(self.clock.now());
        let actor = actor.clone();
        self.store
            .write(move |tx| {
                let n = match &what {
                    Replay::One(did) => {
                        tx.replay(&hook.tenant, &hook.id, Some(*did), None, &now)?
                    }
                    Replay::Range(from, to) => {
                        tx.replay(&hook.tenant, &hook.id, None, Some((from, to)), &now)?
                    }
                };
                if let Replay::One(did) = what
                    && n == 0
                {
                    return Err(ApiError::NotFound(format!("no delivery {did}")));
                }
                let asked = match &what {
                    Replay::One(did) => json!({"delivery": did}),
                    Replay::Range(from, to) => json!({"from": from, "to": to}),
                };
                webhook_changed(
                    tx,
                    &actor,
                    &now,
                    &hook,
                    EventType::WebhookReplayed,
                    None,
                    json!({"count": n, "replay": asked}),
                )?;
                Ok(n)
            })
            .await
    }

    /// A page of a tenant's events after the cursor.
    pub async fn feed(&self, tenant: &str, after: i64, limit: i64) -> ApiResult<FeedPage> {
        self.tenants.require(tenant).await?;
        let rows = self.store.outbox_after(tenant, after, limit).await?;
        let next = rows.last().map_or(after, |r| r.id);
        Ok(FeedPage {
            events: rows.iter().map(envelope).collect(),
            next_cursor: event_id(next),
            has_more: rows.len() as i64 == limit,
        })
    }

    /// A page of every tenant's events after a vendor-feed position, in feed order.
    pub async fn feed_all(&self, after: (i64, i64), limit: i64) -> ApiResult<FeedPage> {
        let rows = self.store.outbox_all_after(after, limit).await?;
        let next = rows.last().map_or(after, |(tx, r)| (*tx, r.id));
        Ok(FeedPage {
            events: rows.iter().map(|(_, r)| envelope(r)).collect(),
            next_cursor: position_text(next),
            has_more: rows.len() as i64 == limit,
        })
    }

    /// The vendor feed's newest position (where its live stream starts by default).
    pub async fn last_position(&self) -> ApiResult<(i64, i64)> {
        Ok(self.store.last_position().await?)
    }

    /// Every tenant's events after a vendor-feed position, then live as they commit.
    pub fn stream_all(
        &self,
        after: (i64, i64),
    ) -> impl futures::Stream<Item = Result<((i64, i64), OutboxRow), Infallible>> + use<> {
        let store = self.store.clone();
        let commits = store.event_commits();
        let start = (store, after, commits, std::collections::VecDeque::new());
        futures::stream::unfold(
            start,
            |(store, mut pos, mut commits, mut queue)| async move {
                loop {
                    if let Some(e) = queue.pop_front() {
                        return Some((Ok(e), (store, pos, commits, queue)));
                    }
                    commits.borrow_and_update();
                    match store.outbox_all_after(pos, 500).await {
                        Ok(rows) if !rows.is_empty() => {
                            for (tx, r) in rows {
                                pos = (tx, r.id);
                                queue.push_back((pos, r));
                            }
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "vendor event stream read failed"),
                    }
                    tokio::select! {
                        r = commits.changed() => if r.is_err() { return None; },
                        // A transaction still running held back what came after it: look again.
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            },
        )
    }

    /// The newest `n` events of every tenant (or one), of a type or prefix, newest first.
    pub async fn recent_all(
        &self,
        n: i64,
        tenant: Option<&str>,
        kind: Option<&str>,
    ) -> ApiResult<Vec<OutboxRow>> {
        Ok(self.store.recent_all(n, tenant, kind).await?)
    }

    /// A tenant's newest `n` events, newest first.
    pub async fn recent(&self, tenant: &str, n: i64) -> ApiResult<Vec<OutboxRow>> {
        Ok(self.store.recent_events(tenant, n).await?)
    }

    /// The id of a tenant's newest event (where a live stream starts by default).
    pub async fn last_event_id(&self, tenant: &str) -> ApiResult<i64> {
        self.tenants.require(tenant).await?;
        Ok(self.store.last_event_id(tenant).await?)
    }

    /// A tenant's events after the cursor, then live as they commit.
    pub fn stream(
        &self,
        tenant: String,
        cursor: i64,
    ) -> impl futures::Stream<Item = Result<OutboxRow, Infallible>> + use<> {
        let store = self.store.clone();
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
                        if let Some(last) = rows.last() {
                            st.cursor = last.id;
                        }
                        st.queue.extend(rows);
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
}

/// What the event stream carries between polls.
struct StreamState {
    store: Store,
    tenant: String,
    cursor: i64,
    commits: tokio::sync::watch::Receiver<u64>,
    queue: std::collections::VecDeque<OutboxRow>,
}
