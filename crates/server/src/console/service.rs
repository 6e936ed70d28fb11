//! What the console's pages show, gathered through the other domains' services, and its
//! sessions.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use time::Duration;

use crate::audit::service::Audit;
use crate::audit::store::AuditQuery;
use crate::directory::service::{Ctx, Engine, Kind};
use crate::events::service::Events;
use crate::kernel::auth::{generate_token, hash_token, hashes_equal};
use crate::kernel::chain::AuditRow;
use crate::kernel::clock::{SharedClock, stamp};
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::Store;
use crate::licenses::service::Licenses;
use crate::licenses::usage::{Finding, UsageRow};
use crate::reports::service::{Order, Reports, Sort};
use crate::tenants::service::Tenants;

/// An event as the outbox holds it.
pub use crate::kernel::store::OutboxRow as EventRow;

/// How long a console session lasts.
pub const SESSION_LIFETIME: Duration = Duration::hours(8);

/// Tenants on one overview page (by name).
pub const OVERVIEW_PAGE: usize = 25;

/// A new session: the cookie's token (shown once; only its hash is stored).
pub struct NewSession {
    /// Goes in the cookie.
    pub token: String,
}

/// One subscription on a console page.
#[derive(Debug, Clone)]
pub struct SubView {
    /// The usage figures.
    pub usage: UsageRow,
    /// Compliance findings of this subscription.
    pub findings: Vec<Finding>,
    /// Its usage history (the tenant page only).
    pub history: Vec<crate::licenses::history::HistoryPoint>,
}

/// One tenant on the overview.
#[derive(Debug, Clone)]
pub struct TenantView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its subscriptions, by product.
    pub subs: Vec<SubView>,
}

/// The overview page.
pub struct Overview {
    /// The tenants of this page.
    pub tenants: Vec<TenantView>,
    /// Tenants matching the search.
    pub matching: usize,
    /// The next page's cursor.
    pub next: Option<String>,
}

/// The tenant page.
pub struct TenantPage {
    /// The tenant and its subscriptions.
    pub tenant: TenantView,
    /// Waiting licenses, in line order per product.
    pub waitlist: Vec<Value>,
    /// Idle licenses, longest idle first.
    pub idle: Value,
    /// Rules, by name: (name, filter, product, plan, priority).
    pub rules: Vec<(String, String, String, String, i64)>,
    /// Newest events first.
    pub events: Vec<Value>,
    /// Users whose seats the deprovision brake holds.
    pub held: Vec<crate::licenses::store::HeldRow>,
    /// Administrators' pins (imports included).
    pub pins: Vec<Value>,
}

/// The services the console's pages read through.
pub struct Reads {
    pub tenants: Tenants,
    pub licenses: Licenses,
    pub reports: Reports,
    pub events: Events,
    pub audit: Audit,
    pub engine: Engine,
}

/// The console service.
#[derive(Clone)]
pub struct Console {
    store: Store,
    clock: SharedClock,
    tenants: Tenants,
    licenses: Licenses,
    reports: Reports,
    events: Events,
    audit: Audit,
    engine: Engine,
}

impl Console {
    /// Builds it over the services its pages read.
    pub fn new(store: Store, clock: SharedClock, reads: Reads) -> Console {
        Console {
            store,
            clock,
            tenants: reads.tenants,
            licenses: reads.licenses,
            reports: reads.reports,
            events: reads.events,
            audit: reads.audit,
            engine: reads.engine,
        }
    }

    // ---- sessions ----

    /// Starts a session (the caller has checked the admin token).
    pub async fn start_session(&self) -> ApiResult<NewSession> {
        let now = self.clock.now();
        let token = generate_token("sks_");
        let csrf = generate_token("skc_");
        self.store
            .create_console_session(
                &hash_token(&token),
                &csrf,
                &stamp(now),
                &stamp(now + SESSION_LIFETIME),
            )
            .await?;
        Ok(NewSession { token })
    }

    /// The form token of a live session, if the cookie's token names one.
    pub async fn session(&self, token: &str) -> ApiResult<Option<String>> {
        Ok(self
            .store
            .console_session(&hash_token(token), &stamp(self.clock.now()))
            .await?)
    }

    /// Ends a session.
    pub async fn end_session(&self, token: &str) -> ApiResult<()> {
        Ok(self
            .store
            .delete_console_session(&hash_token(token))
            .await?)
    }

    /// Whether a form's token is the session's.
    pub fn csrf_holds(expected: &str, sent: Option<&str>) -> bool {
        sent.is_some_and(|s| !s.is_empty() && hashes_equal(s, expected))
    }

    // ---- pages ----

    /// Subscriptions with their findings for these tenants.
    async fn subs_of(&self, ids: &[String]) -> ApiResult<BTreeMap<String, Vec<SubView>>> {
        let rows = self.licenses.usage_rows(Some(ids)).await?;
        let findings = self.licenses.findings(Some(ids)).await?;
        let mut out: BTreeMap<String, Vec<SubView>> = BTreeMap::new();
        for (usage, _) in rows {
            let mine = findings
                .iter()
                .filter(|f| f.tenant == usage.tenant && f.product == usage.product)
                .cloned()
                .collect();
            out.entry(usage.tenant.clone()).or_default().push(SubView {
                usage,
                findings: mine,
                history: Vec::new(),
            });
        }
        Ok(out)
    }

    /// The overview: tenants whose name or id contains `q`, by name, one page after
    /// `cursor`; or, sorted by a figure, the subscriptions of every tenant (each row its
    /// tenant).
    pub async fn overview(
        &self,
        q: &str,
        sort: Sort,
        order: Order,
        cursor: Option<&str>,
    ) -> ApiResult<Overview> {
        let q = q.trim().to_lowercase();
        if sort != Sort::Name {
            let page = self
                .reports
                .usage(sort, order, 50, cursor, Some(&q))
                .await?;
            let ids: Vec<String> = page.usage.iter().map(|r| r.usage.tenant.clone()).collect();
            let findings = self.licenses.findings(Some(&ids)).await?;
            let tenants = page
                .usage
                .into_iter()
                .map(|r| TenantView {
                    id: r.usage.tenant.clone(),
                    name: r.tenant_name,
                    subs: vec![SubView {
                        history: Vec::new(),
                        findings: findings
                            .iter()
                            .filter(|f| f.tenant == r.usage.tenant && f.product == r.usage.product)
                            .cloned()
                            .collect(),
                        usage: r.usage,
                    }],
                })
                .collect();
            return Ok(Overview {
                tenants,
                matching: page.total,
                next: page.next_cursor,
            });
        }
        let mut all: Vec<(String, String)> = self
            .tenants
            .list()
            .await?
            .into_iter()
            .filter(|t| q.is_empty() || t.name.to_lowercase().contains(&q) || t.id.contains(&q))
            .map(|t| (t.name, t.id))
            .collect();
        all.sort_by(|a, b| {
            let by =
                a.0.to_lowercase()
                    .cmp(&b.0.to_lowercase())
                    .then_with(|| a.1.cmp(&b.1));
            if order == Order::Desc {
                by.reverse()
            } else {
                by
            }
        });
        let matching = all.len();
        let start = match cursor.filter(|c| !c.is_empty()) {
            None => 0,
            Some(c) => {
                let after = URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::Scim(scim::Error::InvalidValue(format!(
                            "cursor '{c}' is not one this page gave"
                        )))
                    })?;
                all.iter()
                    .position(|(_, id)| *id == after)
                    .map_or(0, |i| i + 1)
            }
        };
        let page: Vec<(String, String)> = all
            .into_iter()
            .skip(start)
            .take(OVERVIEW_PAGE + 1)
            .collect();
        let more = page.len() > OVERVIEW_PAGE;
        let page: Vec<(String, String)> = page.into_iter().take(OVERVIEW_PAGE).collect();
        let ids: Vec<String> = page.iter().map(|(_, id)| id.clone()).collect();
        let mut subs = self.subs_of(&ids).await?;
        let next = more
            .then(|| page.last().map(|(_, id)| URL_SAFE_NO_PAD.encode(id)))
            .flatten();
        Ok(Overview {
            tenants: page
                .into_iter()
                .map(|(name, id)| TenantView {
                    subs: subs.remove(&id).unwrap_or_default(),
                    id,
                    name,
                })
                .collect(),
            matching,
            next,
        })
    }

    /// Live figures of these tenants' subscriptions (for the pages' event stream).
    pub async fn figures(&self, ids: &[String]) -> ApiResult<Vec<UsageRow>> {
        Ok(self
            .licenses
            .usage_rows(Some(ids))
            .await?
            .into_iter()
            .map(|(u, _)| u)
            .collect())
    }

    /// The tenant page, with `days` of usage history per subscription.
    pub async fn tenant(&self, id: &str, days: i64) -> ApiResult<TenantPage> {
        let t = self
            .tenants
            .list()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("tenant {id} not found")))?;
        let mut subs = self.subs_of(std::slice::from_ref(&t.id)).await?;
        let now = self.clock.now();
        let step = if days <= 30 {
            crate::licenses::history::Step::Hour
        } else {
            crate::licenses::history::Step::Day
        };
        for s in subs.values_mut().flatten() {
            s.history = self
                .licenses
                .history(
                    id,
                    Some(&s.usage.product),
                    Some(now - Duration::days(days)),
                    Some(now),
                    Some(step),
                )
                .await?
                .points;
        }
        let events = self
            .events
            .recent(id, 20)
            .await?
            .iter()
            .map(crate::events::dispatcher::envelope)
            .collect();
        Ok(TenantPage {
            waitlist: self.licenses.waitlist(id, 50).await?,
            idle: self.licenses.idle(id, None, 50, false).await?,
            rules: self
                .licenses
                .rules(id)
                .await?
                .into_iter()
                .map(|r| (r.name, r.filter, r.product, r.plan, r.priority))
                .collect(),
            events,
            held: self.licenses.held(id).await?,
            pins: self.licenses.pins(id).await?,
            tenant: TenantView {
                subs: subs.remove(&t.id).unwrap_or_default(),
                id: t.id,
                name: t.name,
            },
        })
    }

    /// A tenant's name.
    pub async fn tenant_name(&self, id: &str) -> ApiResult<String> {
        self.tenants
            .list()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .map(|t| t.name)
            .ok_or_else(|| ApiError::NotFound(format!("tenant {id} not found")))
    }

    /// The user page: the user's userName, licenses with their explanations, history and
    /// last activity.
    pub async fn user(&self, tenant: &str, user: &str) -> ApiResult<(String, Value)> {
        let ctx = Ctx {
            tenant: tenant.to_string(),
            actor: "console".into(),
            request_id: String::new(),
            base_url: String::new(),
        };
        let name = match self.engine.get(&ctx, Kind::User, user, false).await {
            Ok(r) => r.body["userName"].as_str().unwrap_or(user).to_string(),
            Err(ApiError::NotFound(_)) => user.to_string(),
            Err(e) => return Err(e),
        };
        Ok((name, self.licenses.user_licenses(tenant, user).await?))
    }

    /// Changes after every commit that wrote events (here, or on another node).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.event_commits()
    }

    /// The id of the tenant's newest event (where a page's live events start).
    pub async fn newest_event(&self, tenant: &str) -> ApiResult<i64> {
        self.events.last_event_id(tenant).await
    }

    /// The tenant's events after `after`, oldest first, as (id, envelope).
    pub async fn events_after(&self, tenant: &str, after: i64) -> ApiResult<Vec<(i64, Value)>> {
        let rows = self.events.recent(tenant, 50).await?;
        let mut new: Vec<(i64, Value)> = rows
            .iter()
            .filter(|r| r.id > after)
            .map(|r| (r.id, crate::events::dispatcher::envelope(r)))
            .collect();
        new.reverse();
        Ok(new)
    }

    /// The events page: the newest 100 events across tenants (or of one), of a type or
    /// prefix, newest first; and where their live stream starts.
    pub async fn events(
        &self,
        tenant: Option<&str>,
        kind: Option<&str>,
    ) -> ApiResult<(Vec<Value>, (i64, i64))> {
        let start = self.events.last_position().await?;
        let rows = self.events.recent_all(100, tenant, kind).await?;
        Ok((
            rows.iter()
                .map(crate::events::dispatcher::envelope)
                .collect(),
            start,
        ))
    }

    /// Where a live stream of every tenant's events starts now.
    pub async fn events_start(&self) -> ApiResult<(i64, i64)> {
        self.events.last_position().await
    }

    /// Every tenant's events after `after`, live (the events page's stream).
    pub fn events_live(
        &self,
        after: (i64, i64),
    ) -> impl futures::Stream<Item = Result<((i64, i64), EventRow), std::convert::Infallible>> + use<>
    {
        self.events.stream_all(after)
    }

    /// The audit page: one page of the tenant's records matching the filters.
    pub async fn audit(
        &self,
        tenant: &str,
        q: &AuditQuery,
        after: i64,
    ) -> ApiResult<Vec<AuditRow>> {
        self.tenants.require(tenant).await?;
        self.audit.query(tenant, q, after, 100).await
    }
}
