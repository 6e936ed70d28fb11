//! Entitlement snapshots: each node answers applications' checks from memory.
//!
//! A tenant's snapshot holds its users (by id, userName and externalId), the licenses they
//! hold with their plans resolved, and its subscriptions. It is loaded whole on the first
//! check for the tenant (checks wait; a snapshot never answers before it is complete), then
//! kept current from the tenant's outbox, whose ids grow in commit order: every change that
//! can move an entitlement writes an event there (users, licenses, subscriptions), and a
//! model change moves the tenant's model version, which reloads the snapshot.
//!
//! - A commit on this node catches its tenants up before the write returns
//!   ([`crate::store::AfterCommit`]), so an app that triggered a change sees it next call.
//! - Other nodes' commits arrive by PostgreSQL `NOTIFY`; a tick every [`CATCH_UP_TICK`]
//!   catches up anyway, which bounds how stale a node can be. After the listener reconnects
//!   (notifications may have been missed) every snapshot is rebuilt from the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use licensing::entitlements::{Answer, Grant, LicenseState, Question, answer, answers};
use licensing::lifecycle::{self, Phase};
use licensing::model::{Product, Status, Subscription};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::clock::SharedClock;
use crate::store::apps::{SnapLicense, SnapUser};
use crate::store::{Store, StoreResult};

/// How often every snapshot catches up even without a notification: the bound on how long
/// another node's commit can take to reach this node's answers.
pub const CATCH_UP_TICK: Duration = Duration::from_millis(500);

/// More changes than this since the last catch-up reload the whole tenant.
const MAX_CHANGES: i64 = 5_000;

/// A license with its plan resolved (indexes into the tenant's catalogue).
#[derive(Debug, Clone, Copy)]
struct Held {
    product: u32,
    plan: u32,
    waiting: bool,
}

#[derive(Debug, Clone)]
struct User {
    id: Box<str>,
    user_name: Box<str>,
    external_id: Option<Box<str>>,
    active: bool,
    held: Vec<Held>,
}

/// One tenant's entitlements as of an outbox position.
#[derive(Debug, Clone)]
pub struct Snapshot {
    model_version: i64,
    cursor: i64,
    products: Arc<Vec<Product>>,
    subscriptions: Vec<Subscription>,
    users: HashMap<Box<str>, User>,
    by_name: HashMap<Box<str>, Box<str>>,
    by_external: HashMap<Box<str>, Box<str>>,
}

impl Snapshot {
    /// Builds a snapshot from rows.
    pub fn build(
        products: Vec<Product>,
        subscriptions: Vec<Subscription>,
        users: Vec<SnapUser>,
        licenses: Vec<SnapLicense>,
    ) -> Snapshot {
        let mut s = Snapshot {
            model_version: 0,
            cursor: 0,
            products: Arc::new(products),
            subscriptions,
            users: HashMap::with_capacity(users.len()),
            by_name: HashMap::with_capacity(users.len()),
            by_external: HashMap::new(),
        };
        s.replace_users(&[], users, licenses);
        s
    }

    fn resolve(&self, l: &SnapLicense) -> Option<Held> {
        let (pi, product) = self
            .products
            .iter()
            .enumerate()
            .find(|(_, p)| p.key.as_str() == l.product)?;
        let (ki, _) = product
            .plans
            .iter()
            .enumerate()
            .find(|(_, p)| p.key.as_str() == l.plan)?;
        Some(Held {
            product: pi as u32,
            plan: ki as u32,
            waiting: l.state != "active",
        })
    }

    /// Replaces these users (and adds any new ones among `users`): ids in `ids` that are not
    /// in `users` are gone.
    fn replace_users(&mut self, ids: &[String], users: Vec<SnapUser>, licenses: Vec<SnapLicense>) {
        for id in ids {
            self.forget(id);
        }
        let mut held: HashMap<String, Vec<Held>> = HashMap::new();
        for l in &licenses {
            if let Some(h) = self.resolve(l) {
                held.entry(l.user_id.clone()).or_default().push(h);
            }
        }
        for u in users {
            self.forget(&u.id);
            let id: Box<str> = u.id.as_str().into();
            self.by_name
                .insert(u.user_name.to_lowercase().into(), id.clone());
            if let Some(e) = &u.external_id {
                self.by_external.insert(e.as_str().into(), id.clone());
            }
            let user = User {
                id: id.clone(),
                user_name: u.user_name.to_lowercase().into(),
                external_id: u.external_id.map(Into::into),
                active: u.active,
                held: held.remove(&u.id).unwrap_or_default(),
            };
            self.users.insert(id, user);
        }
    }

    /// Removes a user and its names.
    fn forget(&mut self, id: &str) {
        if let Some(old) = self.users.remove(id) {
            self.by_name.remove(old.user_name.as_ref());
            if let Some(e) = &old.external_id {
                self.by_external.remove(e.as_ref());
            }
        }
    }

    /// The user named by id, userName (any case) or externalId.
    fn find(&self, user: &str) -> Option<&User> {
        if let Some(u) = self.users.get(user) {
            return Some(u);
        }
        let id = self
            .by_external
            .get(user)
            .or_else(|| self.by_name.get(user.to_lowercase().as_str()))?;
        self.users.get(id)
    }

    /// Answers a check, with the user's id; `None` for a user this tenant does not have.
    pub fn answer(
        &self,
        user: &str,
        question: Question<'_>,
        now: OffsetDateTime,
    ) -> Option<(&str, Answer)> {
        let u = self.find(user)?;
        let mut grants = Vec::with_capacity(u.held.len());
        for h in &u.held {
            if let Some(plan) = self
                .products
                .get(h.product as usize)
                .and_then(|p| p.plans.get(h.plan as usize))
            {
                grants.push(Grant {
                    plan,
                    state: if h.waiting {
                        LicenseState::Waitlisted
                    } else {
                        LicenseState::Active
                    },
                });
            }
        }
        let a = answer(u.active, &grants, question, || self.lapsed(question, now));
        Some((u.id.as_ref(), a))
    }

    /// Whether a product that would answer has a subscription that is over.
    fn lapsed(&self, question: Question<'_>, now: OffsetDateTime) -> bool {
        self.subscriptions.iter().any(|s| {
            (s.status == Status::Expired || lifecycle::phase(s, now) == Phase::Over)
                && self
                    .products
                    .iter()
                    .any(|p| p.key == s.product && answers(p, question))
        })
    }

    /// A user's whole effective set: plans per product (with state), features, limits; with
    /// the user's id.
    pub fn entitlements(&self, user: &str) -> Option<(&str, Value)> {
        let u = self.find(user)?;
        let mut licenses = Vec::new();
        let mut features = std::collections::BTreeSet::new();
        let mut limits: std::collections::BTreeMap<&str, i64> = Default::default();
        for h in &u.held {
            let Some(product) = self.products.get(h.product as usize) else {
                continue;
            };
            let Some(plan) = product.plans.get(h.plan as usize) else {
                continue;
            };
            licenses.push(json!({
                "product": product.key.as_str(),
                "plan": plan.key.as_str(),
                "state": if h.waiting { "waitlisted" } else { "active" },
            }));
            if h.waiting || !u.active {
                continue;
            }
            features.extend(plan.features.iter().map(|f| f.as_str()));
            for (k, v) in &plan.limits {
                let slot = limits.entry(k.as_str()).or_insert(*v);
                *slot = (*slot).max(*v);
            }
        }
        let set = json!({
            "id": u.id.as_ref(),
            "active": u.active,
            "licenses": licenses,
            "features": features,
            "limits": limits,
        });
        Some((u.id.as_ref(), set))
    }

    /// How many users it holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether it holds no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

struct Tenant {
    /// Serialises loads and catch-ups of this tenant (reads happen inside it, so a later
    /// catch-up never applies older rows than an earlier one).
    update: tokio::sync::Mutex<()>,
    snap: RwLock<Option<Arc<RwLock<Snapshot>>>>,
}

/// Every tenant's snapshot on this node.
pub struct Snapshots {
    store: Store,
    clock: SharedClock,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    seen: std::sync::Mutex<HashMap<(String, String), OffsetDateTime>>,
}

impl Snapshots {
    /// No snapshots yet; each loads on its tenant's first check.
    pub fn new(store: Store, clock: SharedClock) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            store,
            clock,
            tenants: RwLock::default(),
            seen: Default::default(),
        })
    }

    fn tenant(&self, id: &str) -> Arc<Tenant> {
        if let Ok(t) = self.tenants.read()
            && let Some(t) = t.get(id)
        {
            return t.clone();
        }
        let mut all = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        all.entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Tenant {
                    update: tokio::sync::Mutex::new(()),
                    snap: RwLock::new(None),
                })
            })
            .clone()
    }

    fn loaded(&self, id: &str) -> Option<Arc<Tenant>> {
        let t = self.tenants.read().ok()?.get(id)?.clone();
        let has = t.snap.read().ok()?.is_some();
        has.then_some(t)
    }

    /// The tenant's snapshot, loaded whole first if this node has none (`None`: no such
    /// tenant).
    pub async fn get(&self, tenant: &str) -> StoreResult<Option<Arc<RwLock<Snapshot>>>> {
        let t = self.tenant(tenant);
        if let Some(s) = t.snap.read().ok().and_then(|s| s.clone()) {
            return Ok(Some(s));
        }
        let _guard = t.update.lock().await;
        if let Some(s) = t.snap.read().ok().and_then(|s| s.clone()) {
            return Ok(Some(s));
        }
        let Some(snap) = self.load(tenant).await? else {
            return Ok(None);
        };
        let snap = Arc::new(RwLock::new(snap));
        if let Ok(mut slot) = t.snap.write() {
            *slot = Some(snap.clone());
        }
        Ok(Some(snap))
    }

    async fn load(&self, tenant: &str) -> StoreResult<Option<Snapshot>> {
        // Marks first: whatever commits after them is caught up again later.
        let Some((model_version, cursor)) = self.store.snapshot_marks(tenant).await? else {
            return Ok(None);
        };
        let products = self.store.products().await?;
        let subscriptions = self.store.subscriptions(tenant).await?;
        let (users, licenses) = self.store.snapshot_rows(tenant, None).await?;
        let mut snap = Snapshot::build(products, subscriptions, users, licenses);
        snap.model_version = model_version;
        snap.cursor = cursor;
        metrics::counter!("seatkeeper_snapshot_loads_total").increment(1);
        Ok(Some(snap))
    }

    /// Brings a loaded snapshot up to the store: the users its outbox names since the last
    /// catch-up are reloaded; a new model version, or too many changes, reloads it whole.
    pub async fn catch_up(&self, tenant: &str) -> StoreResult<()> {
        let Some(t) = self.loaded(tenant) else {
            return Ok(());
        };
        let _guard = t.update.lock().await;
        let Some(snap) = t.snap.read().ok().and_then(|s| s.clone()) else {
            return Ok(());
        };
        let (version, cursor) = match snap.read() {
            Ok(s) => (s.model_version, s.cursor),
            Err(_) => return Ok(()),
        };
        let Some((now_version, _)) = self.store.snapshot_marks(tenant).await? else {
            // The tenant is gone.
            if let Ok(mut slot) = t.snap.write() {
                *slot = None;
            }
            return Ok(());
        };
        let changes = self
            .store
            .changes_after(tenant, cursor, MAX_CHANGES)
            .await?;
        if now_version != version || changes.len() as i64 >= MAX_CHANGES {
            let fresh = self.load(tenant).await?;
            if let Ok(mut slot) = t.snap.write() {
                *slot = fresh.map(|s| Arc::new(RwLock::new(s)));
            }
            return Ok(());
        }
        let Some(last) = changes.last().map(|c| c.0) else {
            return Ok(());
        };
        let mut users: Vec<String> = Vec::new();
        let mut subscriptions = false;
        for (_, kind, id) in &changes {
            match kind.as_str() {
                "User" | "License" => users.push(id.clone()),
                "Subscription" => subscriptions = true,
                _ => {}
            }
        }
        users.sort();
        users.dedup();
        let (rows, licenses) = if users.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.store.snapshot_rows(tenant, Some(&users)).await?
        };
        let subs = if subscriptions {
            Some(self.store.subscriptions(tenant).await?)
        } else {
            None
        };
        if let Ok(mut s) = snap.write() {
            s.replace_users(&users, rows, licenses);
            if let Some(subs) = subs {
                s.subscriptions = subs;
            }
            s.cursor = last;
        }
        Ok(())
    }

    /// Catches every loaded snapshot up.
    pub async fn catch_up_all(&self) {
        let ids: Vec<String> = match self.tenants.read() {
            Ok(t) => t.keys().cloned().collect(),
            Err(_) => return,
        };
        for id in ids {
            if let Err(e) = self.catch_up(&id).await {
                tracing::warn!(tenant = %id, error = %e, "snapshot catch-up failed");
            }
        }
    }

    /// Forgets every snapshot: each is rebuilt from the store on its next check.
    pub fn forget_all(&self) {
        if let Ok(mut t) = self.tenants.write() {
            t.clear();
        }
    }

    /// Asks the tenant's snapshot something about a user (`None`: unknown user or tenant);
    /// a user found is noted as seen.
    async fn ask<T>(
        &self,
        tenant: &str,
        ask: impl FnOnce(&Snapshot, OffsetDateTime) -> Option<(&str, T)>,
    ) -> StoreResult<Option<T>> {
        let Some(snap) = self.get(tenant).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let found = {
            let s = snap.read().unwrap_or_else(|e| e.into_inner());
            ask(&s, now).map(|(id, out)| (id.to_string(), out))
        };
        Ok(found.map(|(id, out)| {
            self.seen(tenant, id, now);
            out
        }))
    }

    /// Answers a check (`None`: unknown user or tenant).
    pub async fn check(
        &self,
        tenant: &str,
        user: &str,
        question: Question<'_>,
    ) -> StoreResult<Option<Answer>> {
        self.ask(tenant, |s, now| s.answer(user, question, now))
            .await
    }

    /// A user's whole effective set (`None`: unknown user or tenant).
    pub async fn entitlements(&self, tenant: &str, user: &str) -> StoreResult<Option<Value>> {
        self.ask(tenant, |s, _| s.entitlements(user)).await
    }

    fn seen(&self, tenant: &str, user: String, now: OffsetDateTime) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert((tenant.to_string(), user), now);
        }
    }

    /// Writes the users seen since the last flush, in one transaction.
    pub async fn flush_activity(&self) -> StoreResult<usize> {
        let seen = match self.seen.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return Ok(0),
        };
        let n = seen.len();
        let rows = seen
            .into_iter()
            .map(|((t, u), at)| (t, u, crate::clock::stamp(at)))
            .collect();
        self.store.record_activity(rows).await?;
        Ok(n)
    }

    /// Keeps snapshots current from other nodes' commits, rebuilds them after the listener
    /// reconnects, and writes activity every `activity_every`.
    pub fn spawn(self: &Arc<Self>, activity_every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut commits = me.store.event_commits();
            let mut connects = me.store.listener_connects();
            let mut tick = tokio::time::interval(CATCH_UP_TICK);
            let mut activity = tokio::time::interval(activity_every);
            loop {
                tokio::select! {
                    Ok(()) = connects.changed() => me.forget_all(),
                    Ok(()) = commits.changed() => me.catch_up_all().await,
                    _ = tick.tick() => me.catch_up_all().await,
                    _ = activity.tick() => {
                        if let Err(e) = me.flush_activity().await {
                            tracing::warn!(error = %e, "writing user activity failed");
                        }
                    }
                }
            }
        })
    }
}

impl crate::store::AfterCommit for Snapshots {
    fn committed(&self, tenants: Vec<String>) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            for t in tenants {
                if let Err(e) = self.catch_up(&t).await {
                    tracing::warn!(tenant = %t, error = %e, "snapshot catch-up failed");
                }
            }
        })
    }
}
