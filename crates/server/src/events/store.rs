//! Rows of events out: webhook endpoints, deliveries, and the per-tenant event feed.
//!
//! A tenant's outbox ids grow in commit order: every outbox write holds the tenant's lock
//! (`Tx::outbox` takes it), and ids are drawn while it is held. So a reader that has seen
//! event N of a tenant has seen every earlier one of that tenant: per-tenant cursors (the
//! feed, the event stream, each webhook's fan-out) never skip an event that commits late.

use serde_json::Value;

use crate::kernel::db::{P, Row, placeholders};
use crate::kernel::secret::REDACTED;
use crate::kernel::store::{OutboxRow, Store, StoreResult, Tx, VENDOR};
use crate::params;

/// A webhook endpoint.
#[derive(Clone)]
pub struct WebhookRow {
    /// Tenant.
    pub tenant: String,
    /// Id.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Event types it wants (`*` and `prefix.*` allowed).
    pub events: Vec<String>,
    /// Signing secret (`whsec_…`).
    pub secret: String,
    /// When it was registered.
    pub created: String,
    /// Last outbox id fanned out to it.
    pub cursor: i64,
    /// A vendor endpoint's cursor is a vendor-feed position: `(cursor_tx, cursor)`.
    pub cursor_tx: i64,
    /// When it was disabled, if it was.
    pub disabled: Option<String>,
}

impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &REDACTED)
            .field("created", &self.created)
            .field("cursor", &self.cursor)
            .field("cursor_tx", &self.cursor_tx)
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("attempts", &self.attempts)
            .field("url", &self.url)
            .field("secret", &REDACTED)
            .field("event", &self.event)
            .finish()
    }
}

const WEBHOOK_COLUMNS: &str =
    "tenant_id, id, url, events, secret, created, cursor, disabled, cursor_tx";

fn webhook_from_row(r: &Row) -> WebhookRow {
    WebhookRow {
        tenant: r.text(0),
        id: r.text(1),
        url: r.text(2),
        events: serde_json::from_str(&r.text(3)).unwrap_or_default(),
        secret: r.text(4),
        created: r.text(5),
        cursor: r.int(6),
        disabled: r.opt_text(7),
        cursor_tx: r.int(8),
    }
}

impl WebhookRow {
    /// Whether this endpoint receives every tenant's events.
    pub(crate) fn is_vendor(&self) -> bool {
        self.tenant == VENDOR
    }

    /// Whether this endpoint wants events of this type.
    pub(crate) fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| {
            e == "*"
                || e == event_type
                || e.strip_suffix(".*").is_some_and(|prefix| {
                    event_type.len() > prefix.len()
                        && event_type.starts_with(prefix)
                        && event_type.as_bytes()[prefix.len()] == b'.'
                })
        })
    }
}

/// One delivery as the log shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRow {
    /// Id.
    pub id: i64,
    /// The endpoint.
    pub webhook_id: String,
    /// The tenant whose event it is.
    pub tenant: String,
    /// The outbox event.
    pub event_id: i64,
    /// Its type.
    pub event_type: String,
    /// The resource whose events stay in order.
    pub order_key: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Next attempt (unix ms) while pending.
    pub next_attempt: i64,
    /// HTTP status of the last attempt.
    pub last_status: Option<i64>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// Created.
    pub created: String,
    /// Last changed.
    pub updated: String,
}

fn delivery_from_row(r: &Row) -> DeliveryRow {
    DeliveryRow {
        id: r.int(0),
        webhook_id: r.text(1),
        event_id: r.int(2),
        event_type: r.text(3),
        order_key: r.text(4),
        state: r.text(5),
        attempts: r.int(6),
        next_attempt: r.int(7),
        last_status: r.opt_text(8).map(|_| r.int(8)),
        last_error: r.opt_text(9),
        created: r.text(10),
        updated: r.text(11),
        tenant: r.text(12),
    }
}

const DELIVERY_SELECT: &str = "SELECT d.id, d.webhook_id, d.event_id, o.event_type, d.order_key, d.state, d.attempts, \
     d.next_attempt, d.last_status, d.last_error, d.created, d.updated, o.tenant_id \
     FROM deliveries d JOIN outbox o ON o.id = d.event_id";

/// A delivery claimed for sending, with what it needs to send.
#[derive(Clone)]
pub struct Claimed {
    /// Delivery id.
    pub id: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    /// Endpoint URL.
    pub url: String,
    /// Endpoint secret.
    pub secret: String,
    /// The event.
    pub event: OutboxRow,
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Delivery id.
    pub id: i64,
    /// HTTP status, if the endpoint answered.
    pub status: Option<i64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Delivered (2xx).
    pub ok: bool,
    /// When to try again (unix ms), or `None` to give up (dead letter).
    pub retry_at: Option<i64>,
}

pub(crate) fn outbox_from_row(r: &Row, at: usize) -> OutboxRow {
    OutboxRow {
        id: r.int(at),
        tenant_id: r.text(at + 1),
        event_type: r.text(at + 2),
        resource_type: r.text(at + 3),
        resource_id: r.text(at + 4),
        payload: r.text(at + 5),
        created: r.text(at + 6),
    }
}

impl Tx<'_> {
    /// Moves new events into one endpoint's deliveries, from its cursor on (at most `limit`
    /// events): a tenant endpoint's tenant's events, or for a vendor endpoint the vendor
    /// feed. Returns how many deliveries were created. Skips an endpoint another node is
    /// fanning out (PostgreSQL `SKIP LOCKED`).
    pub fn fan_out(
        &mut self,
        tenant: &str,
        webhook: &str,
        now: &str,
        limit: i64,
    ) -> StoreResult<usize> {
        self.reaches_nothing_rendered();
        let Some(row) = self.fetch_opt(
            &format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2 AND disabled IS NULL{}",
                self.skip_locked_clause("webhooks")
            ),
            &params![tenant, webhook],
        )?
        else {
            return Ok(0);
        };
        let hook = webhook_from_row(&row);
        // id, event_type, resource_id, tenant_id, tx: in the order the endpoint walks them.
        let events = if hook.is_vendor() {
            self.fetch(
                &format!(
                    "SELECT id, event_type, resource_id, tenant_id, tx FROM outbox {} LIMIT $3",
                    crate::kernel::db::settled_outbox(self.backend())
                ),
                &params![hook.cursor_tx, hook.cursor, limit],
            )?
        } else {
            self.fetch(
                "SELECT id, event_type, resource_id, tenant_id, 0 FROM outbox \
                 WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &params![tenant, hook.cursor, limit],
            )?
        };
        let Some((last_id, last_tx)) = events.last().map(|r| (r.int(0), r.int(4))) else {
            return Ok(0);
        };
        let wanted: Vec<&Row> = events.iter().filter(|r| hook.wants(&r.text(1))).collect();
        for chunk in wanted.chunks(100) {
            let mut sql = String::from(
                "INSERT INTO deliveries (tenant_id, webhook_id, event_id, order_key, state, attempts, next_attempt, lease_until, created, updated) VALUES ",
            );
            let mut ps: Vec<P> = Vec::with_capacity(chunk.len() * 5);
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 5;
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, 'pending', 0, 0, 0, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 5
                ));
                // Resource ids are unique within a tenant only.
                let order_key = if hook.is_vendor() {
                    format!("{}/{}", r.text(3), r.text(2))
                } else {
                    r.text(2)
                };
                ps.extend([
                    P::from(tenant),
                    P::from(webhook),
                    P::Int(r.int(0)),
                    P::from(order_key),
                    P::from(now),
                ]);
            }
            self.execute(&sql, &ps)?;
        }
        self.execute(
            "UPDATE webhooks SET cursor = $3, cursor_tx = $4 WHERE tenant_id = $1 AND id = $2",
            &params![tenant, webhook, last_id, last_tx],
        )?;
        Ok(wanted.len())
    }

    /// Claims up to `limit` due deliveries for `lease_ms`: the pending delivery of the oldest
    /// event of each (endpoint, resource) only, so one resource's events reach an endpoint in
    /// order. Events are ordered by outbox id, which follows commit order within a tenant
    /// (and a resource belongs to one tenant), whatever order an endpoint fanned them out in.
    pub(crate) fn claim_deliveries(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Claimed>> {
        self.reaches_nothing_rendered();
        let ids: Vec<i64> = self
            .fetch(
                &format!(
                    "SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND d.next_attempt <= $1 \
                     AND d.lease_until <= $1 AND NOT EXISTS (SELECT 1 FROM deliveries e \
                     WHERE e.webhook_id = d.webhook_id AND e.order_key = d.order_key AND e.event_id < d.event_id \
                     AND e.state = 'pending' AND e.tenant_id = d.tenant_id) \
                     ORDER BY d.id LIMIT $2{}",
                    self.skip_locked_clause("d")
                ),
                &params![now_ms, limit],
            )?
            .iter()
            .map(|r| r.int(0))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = placeholders(2, ids.len());
        let mut ps = vec![P::Int(now_ms + lease_ms)];
        ps.extend(ids.iter().map(|i| P::Int(*i)));
        self.execute(
            &format!("UPDATE deliveries SET lease_until = $1 WHERE id IN ({list})"),
            &ps,
        )?;
        let ps: Vec<P> = ids.iter().map(|i| P::Int(*i)).collect();
        let list = placeholders(1, ids.len());
        let rows = self.fetch(
            &format!(
                "SELECT d.id, d.attempts, w.url, w.secret, o.id, o.tenant_id, o.event_type, o.resource_type, \
                 o.resource_id, o.payload, o.created FROM deliveries d \
                 JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.id = d.webhook_id \
                 JOIN outbox o ON o.id = d.event_id WHERE d.id IN ({list}) ORDER BY d.id"
            ),
            &ps,
        )?;
        Ok(rows
            .iter()
            .map(|r| Claimed {
                id: r.int(0),
                attempts: r.int(1),
                url: r.text(2),
                secret: r.text(3),
                event: outbox_from_row(r, 4),
            })
            .collect())
    }

    /// Records the results of attempts.
    ///
    /// A delivery replayed while its attempt was in flight (the replay clears the lease) keeps
    /// the replay: the attempt's outcome is not recorded over it, so it is sent again.
    pub(crate) fn record_attempts(&mut self, results: &[Attempt], now: &str) -> StoreResult<()> {
        self.reaches_nothing_rendered();
        for a in results {
            let (state, next) = match (a.ok, a.retry_at) {
                (true, _) => ("delivered", 0),
                (false, Some(at)) => ("pending", at),
                (false, None) => ("dead", 0),
            };
            self.execute(
                "UPDATE deliveries SET state = $2, attempts = attempts + 1, next_attempt = $3, lease_until = 0, \
                 last_status = NULLIF($4, -1), last_error = $5, updated = $6 WHERE id = $1 AND lease_until > 0",
                &[
                    P::Int(a.id),
                    P::from(state),
                    P::Int(next),
                    // Always an integer: a NULL would be bound as text, and PostgreSQL keeps
                    // one prepared statement per SQL text, typed by its first use.
                    P::Int(a.status.unwrap_or(-1)),
                    P::from(a.error.clone()),
                    P::from(now),
                ],
            )?;
        }
        Ok(())
    }

    /// Stores a new endpoint; it receives the events committed after this point. A tenant
    /// endpoint's cursor starts at the tenant's newest event, read under the tenant's lock; a
    /// vendor endpoint's at the vendor feed's newest settled position.
    pub(crate) fn insert_webhook(&mut self, w: &WebhookRow) -> StoreResult<()> {
        self.lock_tenant(&w.tenant)?;
        let (cursor_tx, cursor) = if w.is_vendor() {
            self.fetch_opt(crate::kernel::db::last_settled_outbox(self.backend()), &[])?
                .map_or((0, 0), |r| (r.int(0), r.int(1)))
        } else {
            let newest = self.fetch_opt(
                "SELECT MAX(id) FROM outbox WHERE tenant_id = $1",
                &params![&w.tenant],
            )?;
            (0, newest.map_or(0, |r| r.int(0)))
        };
        self.execute(
            &format!(
                "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)"
            ),
            &params![
                &w.tenant,
                &w.id,
                &w.url,
                serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into()),
                &w.secret,
                &w.created,
                cursor,
                cursor_tx
            ],
        )?;
        Ok(())
    }

    /// Disables a live endpoint and kills its pending deliveries; returns it as it was.
    pub(crate) fn disable_webhook(
        &mut self,
        tenant: &str,
        id: &str,
        now: &str,
    ) -> StoreResult<Option<WebhookRow>> {
        let Some(before) = self
            .fetch_opt(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2 AND disabled IS NULL"),
                &params![tenant, id],
            )?
            .map(|r| webhook_from_row(&r))
        else {
            return Ok(None);
        };
        self.execute(
            "UPDATE webhooks SET disabled = $3 WHERE tenant_id = $1 AND id = $2",
            &params![tenant, id, now],
        )?;
        self.execute(
            "UPDATE deliveries SET state = 'dead', last_error = 'endpoint disabled' \
             WHERE tenant_id = $1 AND webhook_id = $2 AND state = 'pending'",
            &params![tenant, id],
        )?;
        Ok(Some(before))
    }

    /// Makes deliveries of a tenant's endpoint due again now (replay): by id, or every
    /// delivery of events created in `[from, to]`. Returns how many.
    pub(crate) fn replay(
        &mut self,
        tenant: &str,
        webhook: &str,
        delivery: Option<i64>,
        range: Option<(&str, &str)>,
        now: &str,
    ) -> StoreResult<u64> {
        match (delivery, range) {
            (Some(id), _) => self.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt = 0, lease_until = 0, updated = $4 \
                 WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3",
                &params![tenant, webhook, id, now],
            ),
            (None, Some((from, to))) => self.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt = 0, lease_until = 0, updated = $5 \
                 WHERE tenant_id = $1 AND webhook_id = $2 AND EXISTS (SELECT 1 FROM outbox o \
                 WHERE o.id = deliveries.event_id AND o.created >= $3 AND o.created <= $4)",
                &params![tenant, webhook, from, to, now],
            ),
            (None, None) => Ok(0),
        }
    }
}

impl Store {
    /// The id of a tenant's newest event (0 if none).
    pub(crate) async fn last_event_id(&self, tenant: &str) -> StoreResult<i64> {
        Ok(self
            .pool()
            .fetch_opt(
                "SELECT MAX(id) FROM outbox WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?
            .map(|r| r.int(0))
            .unwrap_or(0))
    }

    /// Every tenant's events after the position (tx, id), in feed order: settled ones only.
    pub(crate) async fn outbox_all_after(
        &self,
        after: (i64, i64),
        limit: i64,
    ) -> StoreResult<Vec<(i64, OutboxRow)>> {
        let rows = self
            .pool()
            .fetch(
                &format!(
                    "SELECT id, tenant_id, event_type, resource_type, resource_id, payload, created, tx FROM outbox \
                     {} LIMIT $3",
                    crate::kernel::db::settled_outbox(self.backend())
                ),
                &params![after.0, after.1, limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.int(7), outbox_from_row(r, 0)))
            .collect())
    }

    /// The feed position of the newest settled event of any tenant.
    pub(crate) async fn last_position(&self) -> StoreResult<(i64, i64)> {
        Ok(self
            .pool()
            .fetch_opt(crate::kernel::db::last_settled_outbox(self.backend()), &[])
            .await?
            .map(|r| (r.int(0), r.int(1)))
            .unwrap_or((0, 0)))
    }

    /// The newest `n` events of every tenant (or one), of a type or type prefix (`license.*`),
    /// newest first.
    pub(crate) async fn recent_all(
        &self,
        n: i64,
        tenant: Option<&str>,
        kind: Option<&str>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let mut clauses = Vec::new();
        let mut ps: Vec<crate::kernel::db::P> = Vec::new();
        if let Some(t) = tenant {
            ps.push(t.into());
            clauses.push(format!("tenant_id = ${}", ps.len()));
        }
        if let Some(k) = kind {
            match k.strip_suffix('*') {
                Some(prefix) => {
                    ps.push(format!("{prefix}%").into());
                    clauses.push(format!("event_type LIKE ${}", ps.len()));
                }
                None => {
                    ps.push(k.into());
                    clauses.push(format!("event_type = ${}", ps.len()));
                }
            }
        }
        ps.push(n.into());
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        Ok(self
            .pool()
            .fetch(
                &format!(
                    "SELECT id, tenant_id, event_type, resource_type, resource_id, payload, created FROM outbox \
                     {filter} ORDER BY id DESC LIMIT ${}",
                    ps.len()
                ),
                &ps,
            )
            .await?
            .iter()
            .map(|r| outbox_from_row(r, 0))
            .collect())
    }

    /// A tenant's newest `n` events, newest first.
    pub(crate) async fn recent_events(&self, tenant: &str, n: i64) -> StoreResult<Vec<OutboxRow>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT id, tenant_id, event_type, resource_type, resource_id, payload, created FROM outbox \
                 WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
                &params![tenant, n],
            )
            .await?
            .iter()
            .map(|r| outbox_from_row(r, 0))
            .collect())
    }

    /// A tenant's webhook endpoints.
    pub(crate) async fn webhooks(&self, tenant: &str) -> StoreResult<Vec<WebhookRow>> {
        Ok(self
            .pool()
            .fetch(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY created, id"),
                &params![tenant],
            )
            .await?
            .iter()
            .map(webhook_from_row)
            .collect())
    }

    /// Whether any endpoint is enabled (the dispatcher idles when none is).
    pub(crate) async fn any_webhook(&self) -> StoreResult<bool> {
        Ok(self
            .pool()
            .fetch_opt("SELECT 1 FROM webhooks WHERE disabled IS NULL LIMIT 1", &[])
            .await?
            .is_some())
    }

    /// The enabled endpoints with events they have not fanned out yet: `(tenant, id)`
    /// (`vendor` for a vendor endpoint). One indexed probe per endpoint, so idle endpoints
    /// cost little.
    pub async fn active_webhooks(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(self
            .pool()
            .fetch(
                &format!(
                    "SELECT w.tenant_id, w.id FROM webhooks w WHERE w.disabled IS NULL AND w.tenant_id <> $1 AND EXISTS \
                     (SELECT 1 FROM outbox o WHERE o.tenant_id = w.tenant_id AND o.id > w.cursor) \
                     UNION ALL SELECT w.tenant_id, w.id FROM webhooks w WHERE w.disabled IS NULL AND w.tenant_id = $1 AND {}",
                    crate::kernel::db::vendor_endpoint_behind(self.backend())
                ),
                &params![VENDOR],
            )
            .await?
            .iter()
            .map(|r| (r.text(0), r.text(1)))
            .collect())
    }

    /// An endpoint's delivery log, newest first, optionally by state, before an id.
    pub(crate) async fn deliveries(
        &self,
        tenant: &str,
        webhook: &str,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRow>> {
        let rows = self
            .pool()
            .fetch(
                &format!(
                    "{DELIVERY_SELECT} WHERE d.tenant_id = $1 AND d.webhook_id = $2 \
                     AND ($3 = '' OR d.state = $3) AND d.id < $4 ORDER BY d.id DESC LIMIT $5"
                ),
                &params![
                    tenant,
                    webhook,
                    state.unwrap_or(""),
                    before.unwrap_or(i64::MAX),
                    limit
                ],
            )
            .await?;
        Ok(rows.iter().map(delivery_from_row).collect())
    }

    /// How many deliveries are pending or dead, for metrics and the health of an endpoint.
    pub(crate) async fn delivery_counts(&self, tenant: &str, webhook: &str) -> StoreResult<Value> {
        let rows = self
            .pool()
            .fetch(
                "SELECT state, COUNT(*) FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2 GROUP BY state",
                &params![tenant, webhook],
            )
            .await?;
        let mut out = serde_json::Map::new();
        for s in ["pending", "delivered", "dead"] {
            out.insert(s.into(), Value::from(0));
        }
        for r in rows {
            out.insert(r.text(0), Value::from(r.int(1)));
        }
        Ok(Value::Object(out))
    }
}

impl Store {
    /// Outbox events of a tenant after an id, oldest first.
    pub async fn outbox_after(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        let rows = self
            .pool
            .fetch(
                "SELECT id, tenant_id, event_type, resource_type, resource_id, payload, created FROM outbox \
                 WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &params![tenant, after, limit],
            )
            .await?;
        Ok(rows.iter().map(|r| outbox_from_row(r, 0)).collect())
    }
}

/// The outbox and deliveries as the metrics see them.
#[derive(Debug, Clone, Default)]
pub struct OutboxStats {
    /// Events written after the slowest enabled endpoint's fan-out position.
    pub backlog: i64,
    /// Deliveries waiting.
    pub pending: i64,
    /// Deliveries given up.
    pub dead: i64,
    /// When the oldest waiting delivery was created.
    pub oldest_pending: Option<String>,
}

impl Store {
    /// Counts for the metrics: each an index range (`deliveries_due`), not a table scan.
    pub(crate) async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        let row = self
            .pool()
            .fetch_opt(
                "SELECT \
                 (SELECT COUNT(*) FROM deliveries WHERE state = 'pending'), \
                 (SELECT COUNT(*) FROM deliveries WHERE state = 'dead'), \
                 (SELECT MIN(created) FROM deliveries WHERE state = 'pending'), \
                 COALESCE((SELECT MAX(id) FROM outbox), 0) - \
                 COALESCE((SELECT MIN(cursor) FROM webhooks WHERE disabled IS NULL), \
                          (SELECT MAX(id) FROM outbox), 0)",
                &[],
            )
            .await?;
        Ok(row.map_or_else(OutboxStats::default, |r| OutboxStats {
            pending: r.int(0),
            dead: r.int(1),
            oldest_pending: r.opt_text(2),
            backlog: r.int(3).max(0),
        }))
    }
}
