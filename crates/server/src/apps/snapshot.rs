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
//!   ([`crate::kernel::store::AfterCommit`]), so an app that triggered a change sees it next call.
//! - Other nodes' commits arrive by PostgreSQL `NOTIFY`; a tick every [`CATCH_UP_TICK`]
//!   catches up anyway, which bounds how stale a node can be. After the listener reconnects
//!   (notifications may have been missed) every snapshot is rebuilt from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use licensing::entitlements::{Answer, Grant, LicenseState, Question, answer, answers};
use licensing::lifecycle::{self, Phase};
use licensing::model::{Product, Status, Subscription};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::apps::store::{CatchUp, SnapLicense, SnapRole, SnapUser};
use crate::kernel::clock::SharedClock;
use crate::kernel::store::{Store, StoreResult};

/// How often every snapshot catches up even without a notification: the bound on how long
/// another node's commit can take to reach this node's answers.
pub const CATCH_UP_TICK: Duration = Duration::from_millis(500);

/// `last_seen` is kept to the minute: a user asked about again within the minute it was
/// last written costs no write (idle seats are counted in days).
const SEEN_RESOLUTION: i64 = 60;

/// Users written per activity transaction.
const ACTIVITY_CHUNK: usize = 500;

/// More changes than this since the last catch-up reload the whole tenant.
const MAX_CHANGES: i64 = 5_000;

/// A license with its plan resolved (indexes into the tenant's catalogue).
#[derive(Debug, Clone, Copy)]
struct Held {
    product: u32,
    plan: u32,
    waiting: bool,
    /// An idle seat given to the waitlist: back when the user is active again.
    reclaimed: bool,
}

/// A role given to a user, resolved (indexes into the tenant's catalogue).
#[derive(Debug)]
struct GivenRole {
    product: u32,
    role: u32,
    source: Box<str>,
}

#[derive(Debug)]
struct User {
    id: Box<str>,
    user_name: Box<str>,
    external_id: Option<Box<str>>,
    active: bool,
    held: Box<[Held]>,
    roles: Box<[GivenRole]>,
    /// When an application last asked about the user (unix seconds; 0: not since loaded),
    /// and the value last written to the store.
    seen: AtomicI64,
    written: AtomicI64,
}

/// One tenant's entitlements as of an outbox position. Users sit in a slab; the three
/// names lead to a slot.
#[derive(Debug)]
pub struct Snapshot {
    model_version: i64,
    cursor: i64,
    products: Arc<Vec<Product>>,
    subscriptions: Vec<Subscription>,
    users: Vec<Option<User>>,
    free: Vec<u32>,
    by_id: Index,
    by_name: Index,
    by_external: Index,
}

/// A lookup from a user reference to the user's slot. A fast hasher: a check is a few of
/// these lookups, and SipHash was a visible share of its time.
type Index = HashMap<Box<str>, u32, foldhash::fast::RandomState>;

impl Snapshot {
    /// An empty snapshot over a catalogue and subscriptions.
    pub fn new(products: Vec<Product>, subscriptions: Vec<Subscription>) -> Snapshot {
        Snapshot {
            model_version: 0,
            cursor: 0,
            products: Arc::new(products),
            subscriptions,
            users: Vec::new(),
            free: Vec::new(),
            by_id: Index::default(),
            by_name: Index::default(),
            by_external: Index::default(),
        }
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
            reclaimed: l.state == "reclaimed",
        })
    }

    /// Whether any product of the catalogue has roles (only then are users' roles read).
    pub fn has_roles(&self) -> bool {
        self.products.iter().any(|p| !p.roles.is_empty())
    }

    fn resolve_role(&self, r: &SnapRole) -> Option<GivenRole> {
        let (pi, product) = self
            .products
            .iter()
            .enumerate()
            .find(|(_, p)| p.key.as_str() == r.product)?;
        let ri = product
            .roles
            .iter()
            .position(|x| x.key.as_str() == r.role)?;
        Some(GivenRole {
            product: pi as u32,
            role: ri as u32,
            source: r.source.split(' ').next().unwrap_or_default().into(),
        })
    }

    /// Puts these users in (replacing any with the same id) with their licenses and roles;
    /// ids in `gone` that are not among `users` are removed.
    pub fn put_users(
        &mut self,
        gone: &[String],
        users: Vec<SnapUser>,
        licenses: &[SnapLicense],
        roles: &[SnapRole],
    ) {
        let mut held: HashMap<&str, Vec<Held>> = HashMap::new();
        for l in licenses {
            if let Some(h) = self.resolve(l) {
                held.entry(l.user_id.as_str()).or_default().push(h);
            }
        }
        let mut given: HashMap<&str, Vec<GivenRole>> = HashMap::new();
        for r in roles {
            if let Some(g) = self.resolve_role(r) {
                given.entry(r.user_id.as_str()).or_default().push(g);
            }
        }
        let mut carried: HashMap<Box<str>, (i64, i64)> = HashMap::new();
        for id in gone
            .iter()
            .map(String::as_str)
            .chain(users.iter().map(|u| u.id.as_str()))
        {
            if let Some(old) = self.forget(id) {
                carried.insert(old.id, (old.seen.into_inner(), old.written.into_inner()));
            }
        }
        self.users
            .reserve(users.len().saturating_sub(self.free.len()));
        for u in users {
            let id: Box<str> = u.id.as_str().into();
            let user_name: Box<str> = u.user_name.to_lowercase().into();
            let (seen, written) = carried.get(&id).copied().unwrap_or_default();
            let user = User {
                id: id.clone(),
                user_name: user_name.clone(),
                external_id: u.external_id.map(Into::into),
                active: u.active,
                held: held.remove(u.id.as_str()).unwrap_or_default().into(),
                roles: given.remove(u.id.as_str()).unwrap_or_default().into(),
                seen: AtomicI64::new(seen),
                written: AtomicI64::new(written),
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.users[slot as usize] = Some(user);
                    slot
                }
                None => {
                    self.users.push(Some(user));
                    (self.users.len() - 1) as u32
                }
            };
            if let Some(Some(u)) = self.users.get(slot as usize)
                && let Some(e) = &u.external_id
            {
                self.by_external.insert(e.clone(), slot);
            }
            self.by_name.insert(user_name, slot);
            self.by_id.insert(id, slot);
        }
    }

    /// Removes a user and its names; returns it.
    fn forget(&mut self, id: &str) -> Option<User> {
        let slot = self.by_id.remove(id)?;
        let old = self.users.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        self.by_name.remove(old.user_name.as_ref());
        if let Some(e) = &old.external_id {
            self.by_external.remove(e.as_ref());
        }
        Some(old)
    }

    /// The user named by id, userName (any case) or externalId.
    fn find(&self, user: &str) -> Option<&User> {
        let slot = match self.by_id.get(user).or_else(|| self.by_external.get(user)) {
            Some(slot) => *slot,
            None if user.bytes().any(|b| b.is_ascii_uppercase()) || !user.is_ascii() => {
                *self.by_name.get(user.to_lowercase().as_str())?
            }
            None => *self.by_name.get(user)?,
        };
        self.users.get(slot as usize)?.as_ref()
    }

    /// Answers a check (`None`: a user this tenant does not have), marking the user seen.
    pub fn answer(
        &self,
        user: &str,
        question: Question<'_>,
        now: OffsetDateTime,
    ) -> Option<Answer> {
        let u = self.find(user)?;
        u.seen.store(now.unix_timestamp(), Ordering::Relaxed);
        let mut grants: Vec<Grant<'_>> = Vec::with_capacity(u.held.len());
        for h in u.held.iter() {
            let Some(product) = self.products.get(h.product as usize) else {
                continue;
            };
            let Some(plan) = product.plans.get(h.plan as usize) else {
                continue;
            };
            if !h.waiting {
                grants.push(Grant {
                    plan,
                    state: LicenseState::Active,
                });
                continue;
            }
            grants.push(Grant {
                plan,
                state: LicenseState::Waitlisted,
            });
            // Waiting for a seat: the best seat-free plan below it meanwhile.
            if let Some(meanwhile) = product.while_waiting(plan) {
                grants.push(Grant {
                    plan: meanwhile,
                    state: LicenseState::Active,
                });
            }
        }
        Some(answer(u.active, &grants, question, || {
            self.lapsed(question, now)
        }))
    }

    /// The roles given to a user, with whether each is licensed.
    fn given<'s>(&'s self, u: &'s User) -> Vec<licensing::roles::Given<'s>> {
        u.roles
            .iter()
            .filter_map(|g| {
                let product = self.products.get(g.product as usize)?;
                let role = product.roles.get(g.role as usize)?;
                let licensed = u.held.iter().any(|h| h.product == g.product && !h.waiting);
                Some(licensing::roles::Given {
                    product,
                    role,
                    source: &g.source,
                    licensed,
                })
            })
            .collect()
    }

    /// Answers a permission check (`None`: a user this tenant does not have), marking the
    /// user seen.
    pub fn permit(
        &self,
        user: &str,
        permission: &str,
        now: OffsetDateTime,
    ) -> Option<licensing::roles::PermissionAnswer> {
        let u = self.find(user)?;
        u.seen.store(now.unix_timestamp(), Ordering::Relaxed);
        Some(licensing::roles::permit(
            u.active,
            &self.given(u),
            permission,
        ))
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

    /// A user's whole effective set: plans per product (with state), features, limits;
    /// marks the user seen.
    pub fn entitlements(&self, user: &str, now: OffsetDateTime) -> Option<Value> {
        let u = self.find(user)?;
        u.seen.store(now.unix_timestamp(), Ordering::Relaxed);
        let mut licenses = Vec::new();
        let mut features = std::collections::BTreeSet::new();
        let mut limits: std::collections::BTreeMap<&str, i64> = Default::default();
        for h in u.held.iter() {
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
            if !u.active {
                continue;
            }
            let plan = match (h.waiting, product.while_waiting(plan)) {
                (false, _) => plan,
                (true, Some(meanwhile)) => meanwhile,
                (true, None) => continue,
            };
            features.extend(plan.features.iter().map(|f| f.as_str()));
            for (k, v) in &plan.limits {
                let slot = limits.entry(k.as_str()).or_insert(*v);
                *slot = (*slot).max(*v);
            }
        }
        let mut roles = std::collections::BTreeSet::new();
        let mut permissions = std::collections::BTreeSet::new();
        if u.active {
            for g in self.given(u).iter().filter(|g| g.counts()) {
                roles.insert(g.role.key.as_str());
                permissions.extend(g.role.permissions.iter().map(|p| p.as_str()));
            }
        }
        Some(json!({
            "id": u.id.as_ref(),
            "active": u.active,
            "licenses": licenses,
            "features": features,
            "limits": limits,
            "roles": roles,
            "permissions": permissions,
        }))
    }

    /// Users seen in a later minute than their last write: (id, unix seconds). `mark` records
    /// them as written.
    fn unwritten(&self, mark: bool) -> Vec<(String, i64)> {
        self.users
            .iter()
            .flatten()
            .filter_map(|u| {
                let seen = u.seen.load(Ordering::Relaxed);
                let written = u.written.load(Ordering::Relaxed);
                (seen / SEEN_RESOLUTION > written / SEEN_RESOLUTION).then(|| {
                    if mark {
                        u.written.store(seen, Ordering::Relaxed);
                    }
                    (u.id.to_string(), seen)
                })
            })
            .collect()
    }

    /// How many users it holds.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// About how many bytes it holds: its users' slots and strings, the three indexes
    /// (each a key copy and a slot, with the table's spare room), and its licenses and roles.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let strings: usize = self
            .users
            .iter()
            .flatten()
            .map(|u| {
                u.id.len()
                    + u.user_name.len()
                    + u.external_id.as_ref().map_or(0, |e| e.len())
                    + u.held.len() * size_of::<Held>()
                    + u.roles.len() * size_of::<GivenRole>()
            })
            .sum();
        let slots = self.users.capacity() * size_of::<Option<User>>();
        let index = |i: &Index| {
            i.capacity() * (size_of::<Box<str>>() + size_of::<u32>() + 1)
                + i.keys().map(|k| k.len()).sum::<usize>()
        };
        slots + strings + index(&self.by_id) + index(&self.by_name) + index(&self.by_external)
    }

    /// Whether it holds no users.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// How a catch-up read what it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The tenant's snapshot is not loaded: nothing to catch up.
    Unloaded,
    /// Another catch-up's read, begun after this one was asked for, had seen it all.
    Covered,
    /// With other tenants, in one statement.
    Together,
    /// On its own.
    Alone,
}

impl Read {
    /// Counts it (`seatkeeper_snapshot_catch_ups_total{read}`).
    fn counted(self) -> Read {
        let read = match self {
            Read::Unloaded => return self,
            Read::Covered => "covered",
            Read::Together => "together",
            Read::Alone => "alone",
        };
        metrics::counter!("seatkeeper_snapshot_catch_ups_total", "read" => read).increment(1);
        self
    }
}

/// A tenant's part in a catch-up of several: what its snapshot was when the read was asked
/// for.
struct Asked {
    id: String,
    tenant: Arc<Tenant>,
    /// Its catch-up's ticket ([`Tenant::asked`]), taken before the read began.
    ticket: u64,
    version: i64,
    cursor: i64,
    roles: bool,
}

/// What a read of several tenants read for one of them (`None`: the tenant is gone).
struct Shared {
    asked: Asked,
    caught: Option<CatchUp>,
}

struct Tenant {
    /// Serialises loads and catch-ups of this tenant (reads happen inside it, so a later
    /// catch-up never applies older rows than an earlier one).
    update: tokio::sync::Mutex<()>,
    snap: RwLock<Option<Arc<RwLock<Snapshot>>>>,
    /// Catch-ups asked for so far: each asks after the commits it must see.
    asked: std::sync::atomic::AtomicU64,
    /// The catch-ups asked for before the read of the last applied catch-up began: those
    /// are answered by it, and need no read of their own (the writes of one batch, and
    /// other nodes' commits heard meanwhile, cost one read).
    covered: std::sync::atomic::AtomicU64,
}

/// Users read per query while a snapshot loads (bounds the rows held at once).
const LOAD_PAGE: i64 = 5_000;

/// Every tenant's snapshot on this node.
pub struct Snapshots {
    store: Store,
    clock: SharedClock,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    /// Activity of snapshots dropped (reloaded or forgotten) or not yet written: (tenant,
    /// user, unix seconds).
    pending: std::sync::Mutex<Vec<(String, String, i64)>>,
}

impl Snapshots {
    /// No snapshots yet; each loads on its tenant's first check.
    pub fn new(store: Store, clock: SharedClock) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            store,
            clock,
            tenants: RwLock::default(),
            pending: Default::default(),
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
                    asked: Default::default(),
                    covered: Default::default(),
                })
            })
            .clone()
    }

    fn loaded(&self, id: &str) -> Option<Arc<Tenant>> {
        let t = self.tenants.read().ok()?.get(id)?.clone();
        let has = t.snap.read().ok()?.is_some();
        has.then_some(t)
    }

    /// Replaces a tenant's snapshot, keeping the activity the old one had not written.
    fn replace(&self, tenant: &str, t: &Tenant, fresh: Option<Snapshot>) {
        let Ok(mut slot) = t.snap.write() else {
            return;
        };
        if let Some(old) = slot.take() {
            self.keep_unwritten(tenant, &old);
        }
        *slot = fresh.map(|s| Arc::new(RwLock::new(s)));
    }

    fn keep_unwritten(&self, tenant: &str, snap: &RwLock<Snapshot>) {
        let marks = snap.read().map(|s| s.unwritten(true)).unwrap_or_default();
        if let Ok(mut p) = self.pending.lock() {
            p.extend(marks.into_iter().map(|(u, at)| (tenant.to_string(), u, at)));
        }
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
        let fresh = self.load(tenant).await?;
        self.replace(tenant, &t, fresh);
        Ok(t.snap.read().ok().and_then(|s| s.clone()))
    }

    async fn load(&self, tenant: &str) -> StoreResult<Option<Snapshot>> {
        // Marks first: whatever commits after them is caught up again later.
        let Some((model_version, cursor)) = self.store.snapshot_marks(tenant).await? else {
            return Ok(None);
        };
        let products = self.store.products().await?;
        let subscriptions = self.store.subscriptions(tenant).await?;
        let mut snap = Snapshot::new(products, subscriptions);
        snap.model_version = model_version;
        snap.cursor = cursor;
        // A page of users at a time, with their licenses, so a large tenant never sits in
        // memory twice.
        let mut after = String::new();
        let with_roles = snap.has_roles();
        loop {
            let (users, licenses, roles) = self
                .store
                .snapshot_page(tenant, &after, LOAD_PAGE, with_roles)
                .await?;
            let Some(last) = users.last().map(|u| u.id.clone()) else {
                break;
            };
            let full = users.len() as i64 == LOAD_PAGE;
            snap.put_users(&[], users, &licenses, &roles);
            if !full {
                break;
            }
            after = last;
        }
        snap.by_id.shrink_to_fit();
        snap.by_name.shrink_to_fit();
        snap.by_external.shrink_to_fit();
        snap.users.shrink_to_fit();
        metrics::counter!("seatkeeper_snapshot_loads_total").increment(1);
        Ok(Some(snap))
    }

    /// Brings a loaded snapshot up to the store: the users its outbox names since the last
    /// catch-up are reloaded; a new model version, or too many changes, reloads it whole.
    pub async fn catch_up(&self, tenant: &str) -> StoreResult<()> {
        let Some(t) = self.loaded(tenant) else {
            return Ok(());
        };
        let ticket = t.asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.catch_up_from(tenant, &t, ticket, None)
            .await
            .map(|_| ())
    }

    /// [`Snapshots::catch_up`] of a tenant whose catch-up `ticket` was asked for, with what
    /// a read of several tenants already read for it, used only if the snapshot has not
    /// moved since that read was asked for.
    async fn catch_up_from(
        &self,
        tenant: &str,
        t: &Tenant,
        ticket: u64,
        shared: Option<Shared>,
    ) -> StoreResult<Read> {
        let _guard = t.update.lock().await;
        // A read that began after this catch-up was asked for has seen what it must see.
        if t.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(Read::Covered.counted());
        }
        let Some(snap) = t.snap.read().ok().and_then(|s| s.clone()) else {
            return Ok(Read::Unloaded);
        };
        let (version, cursor, with_roles) = match snap.read() {
            Ok(s) => (s.model_version, s.cursor, s.has_roles()),
            Err(_) => return Ok(Read::Unloaded),
        };
        let (how, covers, caught) = match shared {
            Some(Shared { asked, caught })
                if asked.version == version && asked.cursor == cursor =>
            {
                (Read::Together, asked.ticket, caught)
            }
            _ => {
                let covers = t.asked.load(Ordering::SeqCst);
                // The model version, the changes and the users they name, in one statement.
                let caught = self
                    .store
                    .catch_up_rows(tenant, cursor, MAX_CHANGES, with_roles)
                    .await?;
                (Read::Alone, covers, caught)
            }
        };
        let Some(caught) = caught else {
            // The tenant is gone.
            self.replace(tenant, t, None);
            return Ok(how.counted());
        };
        let changes = caught.changes;
        if caught.model_version != version || changes.len() as i64 >= MAX_CHANGES {
            let covers = t.asked.load(Ordering::SeqCst);
            let fresh = self.load(tenant).await?;
            self.replace(tenant, t, fresh);
            t.covered.fetch_max(covers, Ordering::SeqCst);
            return Ok(how.counted());
        }
        if let Some(last) = changes.last().map(|c| c.0) {
            let mut users: Vec<String> = Vec::new();
            let mut subscriptions = false;
            for (_, kind, id) in &changes {
                // A sign-in (`Login`) changes nothing a check reads.
                match kind.as_str() {
                    "User" | "License" => users.push(id.clone()),
                    "Subscription" => subscriptions = true,
                    _ => {}
                }
            }
            users.sort();
            users.dedup();
            let (rows, licenses, roles) = caught.rows;
            let subs = if subscriptions {
                Some(self.store.subscriptions(tenant).await?)
            } else {
                None
            };
            if let Ok(mut s) = snap.write() {
                s.put_users(&users, rows, &licenses, &roles);
                if let Some(subs) = subs {
                    s.subscriptions = subs;
                }
                s.cursor = last;
            }
        }
        t.covered.fetch_max(covers, Ordering::SeqCst);
        Ok(how.counted())
    }

    /// Catches up several loaded snapshots, reading them together (one statement for up to
    /// 32 tenants instead of one each); returns how many were caught up by that read.
    async fn catch_up_many(&self, ids: Vec<String>) -> usize {
        // Each tenant's ticket and marks, taken before the read.
        let wants: Vec<Asked> = ids
            .into_iter()
            .filter_map(|id| {
                let tenant = self.loaded(&id)?;
                let ticket = tenant.asked.fetch_add(1, Ordering::SeqCst) + 1;
                let snap = tenant.snap.read().ok()?.clone()?;
                let s = snap.read().ok()?;
                Some(Asked {
                    version: s.model_version,
                    cursor: s.cursor,
                    roles: s.has_roles(),
                    id,
                    tenant: tenant.clone(),
                    ticket,
                })
            })
            .collect();
        let mut read = if wants.len() > 1 {
            let asks: Vec<(String, i64, bool)> = wants
                .iter()
                .map(|a| (a.id.clone(), a.cursor, a.roles))
                .collect();
            match self.store.catch_up_rows_of(&asks, MAX_CHANGES).await {
                Ok(read) => Some(read),
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot catch-up failed");
                    return 0;
                }
            }
        } else {
            None
        };
        let mut together = 0;
        for asked in wants {
            // Every ticket was asked for before the read began, so the read covers each.
            let (id, tenant, ticket) = (asked.id.clone(), asked.tenant.clone(), asked.ticket);
            let shared = read.as_mut().map(|r| Shared {
                caught: r.remove(&id),
                asked,
            });
            match self.catch_up_from(&id, &tenant, ticket, shared).await {
                Ok(Read::Together) => together += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(tenant = %id, error = %e, "snapshot catch-up failed"),
            }
        }
        together
    }

    fn tenant_ids(&self) -> Vec<String> {
        self.tenants
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Catches up the loaded snapshots of the tenants other nodes' commits named since the
    /// last call, or every loaded snapshot when a commit reached everything.
    async fn catch_up_heard(&self) -> usize {
        let heard = self.store.take_heard();
        if heard.everything {
            return self.catch_up_all().await;
        }
        // Tenants without a loaded snapshot are skipped there.
        self.catch_up_many(heard.tenants.into_iter().collect())
            .await
    }

    /// Catches every loaded snapshot up. One query (per 500 tenants) tells which moved; only
    /// those are caught up, so a tick costs the same whether 1 or 10,000 snapshots sit idle.
    /// Returns how many were caught up by a read of several together.
    pub async fn catch_up_all(&self) -> usize {
        let ids = self.tenant_ids();
        if ids.is_empty() {
            return 0;
        }
        let now = match self.store.snapshot_marks_of(&ids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot catch-up failed");
                return 0;
            }
        };
        let moved: Vec<String> = ids
            .into_iter()
            .filter(|id| match (self.marks_of(id), now.get(id)) {
                (None, _) => false,
                (Some((version, cursor)), Some((v, newest))) => *v != version || *newest > cursor,
                // The tenant is gone: catch_up drops its snapshot.
                (Some(_), None) => true,
            })
            .collect();
        self.catch_up_many(moved).await
    }

    /// A loaded snapshot's model version and outbox cursor.
    fn marks_of(&self, tenant: &str) -> Option<(i64, i64)> {
        let t = self.loaded(tenant)?;
        let snap = t.snap.read().ok()?.clone()?;
        let s = snap.read().ok()?;
        Some((s.model_version, s.cursor))
    }

    /// How many snapshots are loaded, and about how many bytes they hold.
    pub fn loaded_stats(&self) -> (usize, usize) {
        let mut count = 0;
        let mut bytes = 0;
        for id in self.tenant_ids() {
            if let Some(t) = self.loaded(&id)
                && let Ok(slot) = t.snap.read()
                && let Some(snap) = slot.as_ref()
                && let Ok(s) = snap.read()
            {
                count += 1;
                bytes += s.approx_bytes();
            }
        }
        (count, bytes)
    }

    /// Forgets every snapshot: each is rebuilt from the store on its next check.
    pub fn forget_all(&self) {
        let all = match self.tenants.write() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        for (id, t) in all {
            self.replace(&id, &t, None);
        }
    }

    /// Asks the tenant's snapshot (`None`: unknown tenant, or the question's own `None`).
    async fn ask<T>(
        &self,
        tenant: &str,
        ask: impl FnOnce(&Snapshot, OffsetDateTime) -> Option<T>,
    ) -> StoreResult<Option<T>> {
        let Some(snap) = self.get(tenant).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let s = snap.read().unwrap_or_else(|e| e.into_inner());
        Ok(ask(&s, now))
    }

    /// Answers a check (`None`: unknown user or tenant); the user is marked seen.
    pub async fn check(
        &self,
        tenant: &str,
        user: &str,
        question: Question<'_>,
    ) -> StoreResult<Option<Answer>> {
        self.ask(tenant, |s, now| s.answer(user, question, now))
            .await
    }

    /// Answers a permission check (`None`: unknown user or tenant); the user is marked seen.
    pub async fn permit(
        &self,
        tenant: &str,
        user: &str,
        permission: &str,
    ) -> StoreResult<Option<licensing::roles::PermissionAnswer>> {
        self.ask(tenant, |s, now| s.permit(user, permission, now))
            .await
    }

    /// A user's whole effective set (`None`: unknown user or tenant); the user is marked
    /// seen.
    pub async fn entitlements(&self, tenant: &str, user: &str) -> StoreResult<Option<Value>> {
        self.ask(tenant, |s, now| s.entitlements(user, now)).await
    }

    /// Writes the users seen since the last flush, in one transaction; returns how many.
    pub async fn flush_activity(self: &Arc<Self>) -> StoreResult<usize> {
        // Walking every loaded user is CPU work: off the request threads.
        let me = self.clone();
        let (rows, stamped, back) = tokio::task::spawn_blocking(move || me.unwritten_activity())
            .await
            .map_err(|e| {
                crate::kernel::store::StoreError::Corrupt(format!("activity scan: {e}"))
            })?;
        let n = rows.len();
        // Small transactions, paced: a burst of activity never holds the writer (or the CPU
        // the request threads need) for long.
        let mut stamped = stamped.into_iter().peekable();
        let mut done = 0;
        while stamped.peek().is_some() {
            let chunk: Vec<_> = stamped.by_ref().take(ACTIVITY_CHUNK).collect();
            let len = chunk.len();
            if let Err(e) = self.store.record_activity(chunk).await {
                // What was not written is kept for the next flush.
                if let Ok(mut p) = self.pending.lock() {
                    p.extend(rows.into_iter().skip(done));
                }
                return Err(e);
            }
            done += len;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Users active again get their reclaimed seats back (or a place in line).
        for (tenant, users) in back {
            let c = crate::licenses::decide::Cause {
                tenant,
                actor: "activity".into(),
                request_id: format!("activity-{}", uuid::Uuid::now_v7()),
                action: "activity.seen".into(),
                now: self.clock.now(),
            };
            let result = self
                .store
                .write(move |tx| crate::licenses::decide::restore_reclaimed(tx, &c, &users))
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "giving reclaimed seats back failed");
            }
        }
        Ok(n)
    }

    /// Activity not yet written, marked as written: as kept, and as the store takes it; and
    /// the users among them with a reclaimed license (by tenant), to be given it back.
    #[allow(clippy::type_complexity)]
    fn unwritten_activity(
        &self,
    ) -> (
        Vec<(String, String, i64)>,
        Vec<(String, String, String)>,
        BTreeMap<String, Vec<String>>,
    ) {
        let mut rows: Vec<(String, String, i64)> = self
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let mut back: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in self.tenant_ids() {
            let snap = self.loaded(&id).and_then(|t| t.snap.read().ok()?.clone());
            if let Some(snap) = snap
                && let Ok(s) = snap.read()
            {
                for (u, at) in s.unwritten(true) {
                    if s.find(&u)
                        .is_some_and(|x| x.held.iter().any(|h| h.reclaimed))
                    {
                        back.entry(id.clone()).or_default().push(u.clone());
                    }
                    rows.push((id.clone(), u, at));
                }
            }
        }
        let stamped = rows
            .iter()
            .map(|(t, u, at)| {
                let at =
                    OffsetDateTime::from_unix_timestamp(*at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
                (t.clone(), u.clone(), crate::kernel::clock::stamp(at))
            })
            .collect();
        (rows, stamped, back)
    }

    /// Keeps snapshots current from other nodes' commits, rebuilds them after the listener
    /// reconnects, and writes activity every `activity_every`.
    pub fn spawn(self: &Arc<Self>, activity_every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            // This node's own commits were caught up before their writes returned.
            let mut commits = me.store.other_node_commits();
            let mut connects = me.store.listener_connects();
            let mut tick = tokio::time::interval(CATCH_UP_TICK);
            let mut activity = tokio::time::interval(activity_every);
            loop {
                tokio::select! {
                    Ok(()) = connects.changed() => me.forget_all(),
                    Ok(()) = commits.changed() => {
                        me.catch_up_heard().await;
                    }
                    _ = tick.tick() => {
                        me.catch_up_all().await;
                    }
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

impl crate::kernel::store::AfterCommit for Snapshots {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::store::{Kind, StoredResource};
    use crate::kernel::catalogue::EventType;
    use crate::kernel::db::P;
    use crate::kernel::store::StoreError;
    use crate::testing::{self as common, Backend};

    fn user(id: &str, name: &str) -> StoredResource {
        StoredResource {
            id: id.into(),
            doc: serde_json::json!({"userName": name}),
            created: "2026-01-01T00:00:00.000000Z".into(),
            last_modified: "2026-01-01T00:00:00.000000Z".into(),
            version: 1,
        }
    }

    /// Writes as another node would: nothing tells `snapshots` (no after-commit hook).
    /// `adds` are new users, `stops` users made inactive; each writes its outbox row.
    async fn elsewhere(store: &Store, tenant: &str, adds: &[(&str, &str)], stops: &[&str]) {
        let (t, adds, stops): (String, Vec<(String, String)>, Vec<String>) = (
            tenant.into(),
            adds.iter()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect(),
            stops.iter().map(|s| s.to_string()).collect(),
        );
        store
            .write(move |tx| {
                for (id, name) in &adds {
                    tx.insert_resource(Kind::User, &t, &user(id, name))?;
                    tx.outbox(&t, EventType::UserProvisioned, "User", id, "{}", "now")?;
                }
                for id in &stops {
                    tx.execute(
                        "UPDATE scim_users SET active = 0 WHERE tenant_id = $1 AND id = $2",
                        &[P::from(t.as_str()), P::from(id.as_str())],
                    )?;
                    tx.outbox(&t, EventType::UserDeprovisioned, "User", id, "{}", "now")?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
    }

    fn knows(snapshots: &Snapshots, tenant: &str, user: &str) -> Option<bool> {
        let t = snapshots.loaded(tenant)?;
        let snap = t.snap.read().ok()?.clone()?;
        let s = snap.read().ok()?;
        s.find(user).map(|u| u.active)
    }

    /// Several tenants another node changed are caught up by one read: new users appear,
    /// deactivated ones turn inactive, each cursor reaches its tenant's newest change, and a
    /// snapshot that moved after the marks were taken reads again on its own.
    async fn several_tenants_catch_up_in_one_read(b: Backend) {
        let db = common::store(b).await;
        let store = db.store.clone();
        let ids: Vec<String> = (0..3)
            .map(|i| format!("t{i}-{}", uuid::Uuid::new_v4()))
            .collect();
        for id in &ids {
            let t = id.clone();
            store
                .write(move |tx| tx.insert_tenant(&t, &t, "2026-01-01T00:00:00.000000Z"))
                .await
                .unwrap();
            elsewhere(&store, id, &[("u1", "ann")], &[]).await;
        }
        let clock: SharedClock = Arc::new(crate::kernel::clock::ManualClock::at(
            time::macros::datetime!(2026-11-22 10:00:00 UTC),
        ));
        let snapshots = Snapshots::new(store.clone(), clock);
        for id in &ids {
            snapshots.get(id).await.unwrap().unwrap();
            assert_eq!(knows(&snapshots, id, "ann"), Some(true));
        }
        assert_eq!(snapshots.catch_up_all().await, 0, "nothing moved");

        for id in &ids {
            elsewhere(&store, id, &[("u2", "bob")], &["u1"]).await;
        }
        assert_eq!(snapshots.catch_up_all().await, 3, "one read for the three");
        let marks = store.snapshot_marks_of(&ids).await.unwrap();
        for id in &ids {
            assert_eq!(knows(&snapshots, id, "ann"), Some(false), "{id}");
            assert_eq!(knows(&snapshots, id, "bob"), Some(true), "{id}");
            assert_eq!(snapshots.marks_of(id), marks.get(id).copied(), "{id}");
        }

        // Marks taken, then one snapshot moves on its own before the shared read is applied:
        // it does not take the older read, and still ends current.
        elsewhere(&store, &ids[0], &[("u3", "cy")], &[]).await;
        elsewhere(&store, &ids[1], &[("u3", "cy")], &[]).await;
        let t0 = snapshots.loaded(&ids[0]).unwrap();
        let ticket = t0.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let (version, cursor) = snapshots.marks_of(&ids[0]).unwrap();
        let shared = |ticket, caught| Shared {
            asked: Asked {
                id: ids[0].clone(),
                tenant: t0.clone(),
                ticket,
                version,
                cursor,
                roles: false,
            },
            caught,
        };
        let stale = store
            .catch_up_rows_of(&[(ids[0].clone(), cursor, false)], MAX_CHANGES)
            .await
            .unwrap()
            .remove(&ids[0]);
        elsewhere(&store, &ids[0], &[("u4", "dee")], &[]).await;
        snapshots.catch_up(&ids[0]).await.unwrap();
        let read = snapshots
            .catch_up_from(&ids[0], &t0, ticket, Some(shared(ticket, stale.clone())))
            .await
            .unwrap();
        assert_eq!(read, Read::Covered, "the later catch-up had seen it");
        // Had no later catch-up covered it, the moved snapshot reads again rather than take
        // the older rows (which would move its cursor back).
        let read = snapshots
            .catch_up_from(&ids[0], &t0, u64::MAX, Some(shared(0, stale)))
            .await
            .unwrap();
        assert_eq!(read, Read::Alone);
        assert_eq!(knows(&snapshots, &ids[0], "dee"), Some(true));
        let newest = store.snapshot_marks(&ids[0]).await.unwrap();
        assert_eq!(snapshots.marks_of(&ids[0]), newest);
        assert_eq!(
            snapshots.catch_up_all().await,
            0,
            "one tenant moved: read alone"
        );
        assert_eq!(knows(&snapshots, &ids[1], "cy"), Some(true));
        db.store.close().await;
    }

    crate::both_backends!(several_tenants_catch_up_in_one_read);
}
