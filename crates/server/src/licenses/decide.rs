//! The licensing engine: re-decides the licenses of the users a change affects, inside the
//! change's own transaction, and records every license change with an audit entry and an
//! outbox event.
//!
//! Each call first takes the tenant's lock ([`Tx::lock_tenant`]), then counts seats: two
//! requests of one tenant never count at the same time, on SQLite (one writer) or on
//! PostgreSQL (a row lock held to commit), so a hard subscription is never oversold, even
//! with several processes.
//!
//! The decisions themselves come from `crates/licensing`: [`licensing::rules::decide`] says
//! which plan a user should hold, [`licensing::seats::rebalance`] how many users to promote
//! or demote, in queue order. Rows change only where the decision differs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use licensing::lifecycle::{self, Phase};
use licensing::model::{Enforcement, Key, Pin, Product, Rule, Subscription};
use licensing::rules::{Because, Decided};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::kernel::catalogue::EventType;
use crate::kernel::error::ApiResult;
use crate::kernel::store::{AuditEntry, Tx};
use crate::licenses::roles;
use crate::licenses::store::{LicenseRow, Line, NO_SEAT, RuleRow, rule_of, time_text};

/// Which users a change affects.
#[derive(Debug, Clone)]
pub enum Scope {
    /// A user created in this transaction (no groups, no licenses yet), with what it matches.
    Created(String, BTreeMap<Key, Decided>),
    /// These users (missing ones count as gone: their licenses are freed).
    Users(Vec<String>),
    /// A user changed in this transaction, with its document as written (not read back;
    /// its groups are read only when rules look at groups), and its licenses when they were
    /// read under the tenant's lock with the user and nothing has changed them since.
    Patched(String, Value, Option<Vec<LicenseRow>>),
    /// These users, arriving in this order (an import: earlier assignments take their place
    /// in line first), rather than by id.
    InOrder(Vec<String>),
    /// Every user of the tenant (subscription, rule and model changes; the scheduler).
    All,
    /// No user: only these products' seat lines brought to their fixed point (seats freed
    /// outside a re-decision, such as a reclaim, go to the waitlist).
    Rebalance(Vec<String>),
}

/// What caused a re-decision: recorded in every audit entry and explanation.
#[derive(Debug, Clone)]
pub struct Cause {
    /// Tenant.
    pub tenant: String,
    /// Who (token name, `admin`, `scheduler`).
    pub actor: String,
    /// The request id.
    pub request_id: String,
    /// What happened, e.g. `user.create`, `subscription.put`, `term.expired`.
    pub action: String,
    /// When.
    pub now: OffsetDateTime,
}

impl Cause {
    /// Records an audit record of this cause's actor and request on the tenant's chain.
    pub(crate) fn audit(
        &self,
        tx: &mut Tx<'_>,
        action: &str,
        (resource_type, resource_id): (&str, &str),
        before: Option<Value>,
        after: Option<Value>,
    ) -> ApiResult<()> {
        let actor = crate::kernel::store::Actor {
            name: self.actor.clone(),
            request_id: self.request_id.clone(),
        };
        tx.record_change(
            &actor,
            &time_text(self.now),
            crate::kernel::store::Change {
                chain: &self.tenant,
                action,
                resource_type,
                resource_id,
                before,
                after,
            },
        )?;
        Ok(())
    }
}

/// How many licenses changed, by kind of change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// New licenses holding a seat.
    pub assigned: usize,
    /// New licenses waiting, or holders moved to the waitlist by a seat cut.
    pub waitlisted: usize,
    /// Waiting licenses given a seat.
    pub promoted: usize,
    /// Licenses removed.
    pub revoked: usize,
    /// Licenses whose plan changed.
    pub changed: usize,
    /// Idle seats given to the waitlist.
    pub reclaimed: usize,
}

impl Outcome {
    /// Total license changes.
    pub fn total(&self) -> usize {
        self.assigned
            + self.waitlisted
            + self.promoted
            + self.revoked
            + self.changed
            + self.reclaimed
    }

    /// Adds another outcome.
    pub fn add(&mut self, o: &Outcome) {
        self.assigned += o.assigned;
        self.waitlisted += o.waitlisted;
        self.promoted += o.promoted;
        self.revoked += o.revoked;
        self.changed += o.changed;
        self.reclaimed += o.reclaimed;
    }
}

/// A tenant's licensing model as one transaction sees it.
pub struct Model {
    /// The catalogue.
    pub products: Vec<Product>,
    /// The tenant's subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// The tenant's rules, validated.
    pub rules: Vec<Rule>,
    /// The same rules as stored (for explanations).
    pub rule_rows: Vec<RuleRow>,
    /// Administrators' pins, by user.
    pub pins: HashMap<String, Vec<Pin>>,
    /// Users whose seats the deprovision brake holds: their licenses stay as they are.
    pub held: std::collections::HashSet<String>,
    /// Whether one of them was deleted (a create may be that user coming back).
    pub holds_deleted: bool,
    /// Whether an import left claims for users not in the directory yet.
    pub has_claims: bool,
    /// The tenant's role rules, validated.
    pub role_rules: Vec<licensing::roles::RoleRule>,
    /// Where the tenant's roles come from.
    pub role_source: licensing::roles::RoleSource,
    /// Whether some user holds a role (when the model was read).
    pub has_user_roles: bool,
}

/// Parsed models by tenant, with the version they were read at.
type ModelCache = std::sync::Mutex<HashMap<String, (i64, Arc<Model>)>>;
static MODELS: std::sync::LazyLock<ModelCache> = std::sync::LazyLock::new(Default::default);

impl Model {
    /// The model of a tenant, from the cache when `version` (read under the tenant's lock)
    /// says it is current, else loaded and cached.
    pub fn current(tx: &mut Tx<'_>, tenant: &str, version: i64) -> ApiResult<Arc<Model>> {
        if let Ok(cache) = MODELS.lock()
            && let Some((v, m)) = cache.get(tenant)
            && *v == version
        {
            return Ok(m.clone());
        }
        let model = Arc::new(Model::load(tx, tenant)?);
        if let Ok(mut cache) = MODELS.lock() {
            cache.insert(tenant.to_string(), (version, model.clone()));
        }
        Ok(model)
    }

    /// Loads the model of a tenant.
    pub fn load(tx: &mut Tx<'_>, tenant: &str) -> ApiResult<Model> {
        let products = tx.products()?;
        let subscriptions = tx.subscriptions(tenant)?;
        let rule_rows = tx.rule_rows(tenant)?;
        let rules = rule_rows
            .iter()
            .map(rule_of)
            .collect::<Result<Vec<_>, _>>()?;
        let mut pins: HashMap<String, Vec<Pin>> = HashMap::new();
        for (user, pin) in tx.pins(tenant)? {
            pins.entry(user).or_default().push(pin);
        }
        let held_rows = tx.held(tenant)?;
        let holds_deleted = held_rows.iter().any(|h| h.gone == "deleted");
        let held = held_rows.into_iter().map(|h| h.user).collect();
        let has_claims = tx.has_claims(tenant)?;
        let role_rules = roles::role_rules_of(&tx.role_rule_rows(tenant)?, &products);
        let role_source = roles::role_source(&tx.tenant_settings(tenant)?);
        let has_user_roles = tx.has_user_roles(tenant)?;
        Ok(Model {
            role_rules,
            role_source,
            has_user_roles,
            products,
            subscriptions,
            rules,
            rule_rows,
            pins,
            held,
            holds_deleted,
            has_claims,
        })
    }

    /// Whether any rule (or role rule) reads the user's groups (only then are memberships
    /// loaded).
    pub fn reads_groups(&self) -> bool {
        self.rules.iter().any(|r| reads_groups(&r.filter))
            || self.role_rules.iter().any(|r| reads_groups(&r.filter))
    }

    fn subscription(&self, product: &str) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.product.as_str() == product)
    }

    /// Whether a license of this plan takes a seat (plans the catalogue no longer has do).
    pub(crate) fn seated(&self, product: &str, plan: &str) -> bool {
        self.products
            .iter()
            .find(|p| p.key.as_str() == product)
            .and_then(|p| p.plans.iter().find(|pl| pl.key.as_str() == plan))
            .is_none_or(|pl| pl.seated)
    }

    fn rule_row(&self, name: &Key) -> Option<&RuleRow> {
        self.rule_rows.iter().find(|r| r.name == name.as_str())
    }
}

/// Whether a filter reads the user's `groups`.
fn reads_groups(f: &scim::filter::Filter) -> bool {
    f.paths()
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case("groups"))
}

/// Whether group changes of this tenant can change licenses or roles: a role rule reads
/// `groups`, or the tenant subscribes to something and a rule reads them. Decided from the
/// tenant's cached model (read under its lock).
pub fn groups_matter(tx: &mut Tx<'_>, tenant: &str) -> ApiResult<bool> {
    let version = tx.lock_tenant(tenant)?;
    let m = Model::current(tx, tenant, version)?;
    Ok(m.role_rules.iter().any(|r| reads_groups(&r.filter))
        || (!m.subscriptions.is_empty() && m.rules.iter().any(|r| reads_groups(&r.filter))))
}

/// Whether a stored user document is active (absent `active` means active).
pub fn is_active(doc: &Value) -> bool {
    doc.get("active").and_then(Value::as_bool).unwrap_or(true)
}

/// A license change about to be recorded.
struct Event {
    kind: &'static str,
    before: Option<LicenseRow>,
    after: Option<LicenseRow>,
}

fn phase_text(sub: &Subscription, now: OffsetDateTime) -> String {
    match lifecycle::phase(sub, now) {
        Phase::NotStarted => "not started".into(),
        Phase::InTerm => "in term".into(),
        Phase::InGrace(until) => format!("in grace until {}", time_text(until)),
        Phase::Over => format!("over: on_expiry {}", sub.on_expiry),
    }
}

fn seat_words(sub: &Subscription, plan: &str, in_use: usize) -> String {
    match sub.enforcement {
        Enforcement::Hard => format!("{plan} {in_use}/{} seats (hard)", sub.seats),
        Enforcement::Soft if in_use > sub.seats as usize => format!(
            "{plan} {in_use}/{} seats (soft: {} over)",
            sub.seats,
            in_use - sub.seats as usize
        ),
        Enforcement::Soft => format!("{plan} {in_use}/{} seats (soft)", sub.seats),
    }
}

fn pinned_words(by: &str, reason: &str) -> String {
    if reason.is_empty() {
        format!("pinned by {by}")
    } else {
        format!("pinned by {by}: {reason}")
    }
}

fn seat_free_words(d: &Decided) -> String {
    format!("plan {} takes no seat", d.plan)
}

/// Moves a license into a seat-free plan (it leaves the seat line: its seat, or its place in
/// line, frees up) or out of one (it joins the seat line at its end and goes through the seat
/// check: a seat if one is free and nobody waits ahead, else the waitlist). Updates the line;
/// returns the license as written.
fn change_seat_kind(
    tx: &mut Tx<'_>,
    c: &Cause,
    sub: &Subscription,
    row: &LicenseRow,
    d: &Decided,
    line: &mut Line,
    audit_seq: Option<i64>,
) -> ApiResult<LicenseRow> {
    let mut next = row.clone();
    next.plan = d.plan.to_string();
    next.changed = time_text(c.now);
    next.audit_seq = audit_seq;
    if row.queue != NO_SEAT {
        if row.state == "active" {
            line.active = line.active.saturating_sub(1);
        } else if row.state == "waitlisted" {
            line.waiting = line.waiting.saturating_sub(1);
        }
        line.free += 1;
        next.state = "active".into();
        next.queue = NO_SEAT;
        next.reason = format!("{}; {}", because_words(d), seat_free_words(d));
        next.explain = explain(c, sub, d, line.active, "moved to a plan that takes no seat");
    } else {
        line.free = line.free.saturating_sub(1);
        next.queue = line.next_queue;
        line.next_queue += 1;
        let seat = sub.enforcement == Enforcement::Soft
            || (line.active < sub.seats as usize && line.waiting == 0);
        if seat {
            line.active += 1;
            next.state = "active".into();
            next.reason = format!(
                "{}; {}",
                because_words(d),
                seat_words(sub, d.plan.as_str(), line.active)
            );
            next.explain = explain(c, sub, d, line.active, "moved to a seated plan: seat free");
        } else {
            line.waiting += 1;
            next.state = "waitlisted".into();
            next.reason = format!(
                "seat limit reached: {}",
                seat_words(sub, d.plan.as_str(), line.active)
            );
            next.explain = explain(
                c,
                sub,
                d,
                line.active,
                "moved to a seated plan: no seat free, waiting at the end of the line",
            );
        }
    }
    tx.update_license(&c.tenant, &next)?;
    Ok(next)
}

fn because_words(d: &Decided) -> String {
    let mut s = match &d.because {
        Because::Rule(name) => format!("rule {name} matched"),
        Because::NoRules => "no rules: every active user holds the subscription's plan".into(),
        Because::Pinned { by, reason } => pinned_words(by, reason),
    };
    if let Some(from) = &d.capped_from {
        s.push_str(&format!(
            "; lowered from {from} to {} by the subscription's term",
            d.plan
        ));
    }
    s
}

/// The explanation chain of a license as stored: only what cannot be read back later (the
/// rule's name, the seat count and phase that applied). The causing event is the license's
/// own audit record; [`expand_explanation`] joins them with the rule and subscription.
fn explain(c: &Cause, sub: &Subscription, d: &Decided, in_use: usize, note: &str) -> String {
    // Fields in name order: the stored text reads the same as before it was a struct.
    #[derive(serde::Serialize)]
    struct Stored<'a> {
        asked: Option<&'a str>,
        cause: &'a str,
        enforcement: &'a str,
        in_use: usize,
        note: &'a str,
        phase: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pin: Option<Value>,
        rule: Option<&'a str>,
        seats: u32,
    }
    let stored = Stored {
        asked: d.capped_from.as_ref().map(Key::as_str),
        cause: &c.action,
        enforcement: match sub.enforcement {
            Enforcement::Hard => "hard",
            Enforcement::Soft => "soft",
        },
        in_use,
        note,
        phase: phase_text(sub, c.now),
        pin: match &d.because {
            Because::Pinned { by, reason } => Some(json!({"by": by, "reason": reason})),
            _ => None,
        },
        rule: match &d.because {
            Because::Rule(name) => Some(name.as_str()),
            Because::NoRules | Because::Pinned { .. } => None,
        },
        seats: sub.seats,
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

/// The explanation chain of a license for an operator: which rule matched (with its filter
/// and priority as they are now), which plan and seat count applied, what the subscription
/// was doing, and which event changed the license.
pub fn expand_explanation(
    row: &LicenseRow,
    rules: &[RuleRow],
    subscriptions: &[Subscription],
    last_change: Option<&crate::kernel::chain::AuditRow>,
) -> Value {
    let e: Value = serde_json::from_str(&row.explain).unwrap_or(Value::Null);
    let rule_name = e["rule"].as_str();
    let rule = rule_name.map(|name| match rules.iter().find(|r| r.name == name) {
        Some(r) => {
            json!({"name": r.name, "filter": r.filter, "plan": r.plan, "priority": r.priority})
        }
        None => json!({"name": name, "removed": true}),
    });
    let mut decision = match (rule_name, e["pin"].as_object()) {
        (_, Some(pin)) => pinned_words(
            pin.get("by").and_then(Value::as_str).unwrap_or_default(),
            pin.get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ),
        (Some(name), None) => format!("rule {name} matched"),
        (None, None) => "no rules: every active user holds the subscription's plan".to_string(),
    };
    if let Some(asked) = e["asked"].as_str() {
        decision.push_str(&format!(
            "; lowered from {asked} to {} by the subscription's term",
            row.plan
        ));
    }
    let sub = subscriptions
        .iter()
        .find(|s| s.product.as_str() == row.product);
    json!({
        "decision": decision,
        "rule": rule,
        "pin": e["pin"],
        "plan": row.plan,
        "requested_plan": e["asked"],
        "subscription": {
            "product": row.product,
            "plan": sub.map(|s| s.plan.as_str()),
            "status": sub.map(|s| s.status.as_str()),
            "on_expiry": sub.map(|s| s.on_expiry.to_string()),
            "phase_at_decision": e["phase"],
            "seats_at_decision": e["seats"],
            "enforcement_at_decision": e["enforcement"],
        },
        "seat": {"state": row.state, "in_use": e["in_use"], "seats": e["seats"], "note": e["note"], "queue": row.queue},
        "event": last_change.map(|a| {
            let cause = a.after.as_deref().or(a.before.as_deref())
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .map(|d| d["cause"].clone())
                .unwrap_or(Value::Null);
            json!({"action": cause, "change": a.action, "actor": a.actor, "request_id": a.request_id, "at": a.at, "seq": a.seq})
        }),
    })
}

/// Re-decides the licenses of `scope` at `cause.now`, in the caller's transaction.
pub fn relicense(tx: &mut Tx<'_>, c: &Cause, scope: Scope) -> ApiResult<Outcome> {
    Ok(decide_and_write(tx, c, scope)?.0)
}

/// What a new user matches, decided before its transaction from the tenant's cached model
/// (rules are evaluated on the request's thread, not the writer's), with that model's
/// version: under the tenant's lock it is used only if the model is still that version.
pub struct Early {
    version: i64,
    decided: BTreeMap<Key, Decided>,
}

/// Decides what a user about to be created matches, if the tenant's model is cached and
/// subscribes to anything (else the transaction decides, or there is nothing to decide).
pub fn decide_early(tenant: &str, id: &str, doc: &Value, now: OffsetDateTime) -> Option<Early> {
    let (version, model) = MODELS.lock().ok()?.get(tenant).cloned()?;
    if model.subscriptions.is_empty() {
        return None;
    }
    let decided = decide_new(&model, id, doc, now);
    Some(Early { version, decided })
}

/// What a new user (in no group yet) matches under `model`.
fn decide_new(model: &Model, id: &str, doc: &Value, now: OffsetDateTime) -> BTreeMap<Key, Decided> {
    let mut doc = doc.clone();
    doc["id"] = Value::String(id.to_string());
    licensing::rules::decide(
        &doc,
        is_active(&doc),
        &model.rules,
        &model.subscriptions,
        &model.products,
        now,
    )
}

/// Decides the licenses of a user created in this transaction (taking `early` if it was
/// decided under the current model); returns them with the model they were decided under,
/// so the response can show them without reading them back.
pub fn license_created(
    tx: &mut Tx<'_>,
    c: &Cause,
    id: &str,
    doc: &Value,
    early: Option<Early>,
) -> ApiResult<(Vec<LicenseRow>, Arc<Model>)> {
    let version = tx.lock_tenant(&c.tenant)?;
    let decided = match early.filter(|e| e.version == version) {
        Some(early) => early.decided,
        None => decide_new(&*Model::current(tx, &c.tenant, version)?, id, doc, c.now),
    };
    let (_, inserted, model) = decide_and_write(tx, c, Scope::Created(id.to_string(), decided))?;
    if roles_matter(&model) {
        let mut doc = doc.clone();
        doc["id"] = Value::String(id.to_string());
        let users = BTreeMap::from([(id.to_string(), Some(&doc))]);
        assign_roles(tx, c, &model, &users, false)?;
    }
    Ok((inserted, model))
}

/// Whether a create must look further before deciding (from the cached model): the
/// deprovision brake holds a deleted user (who may be coming back), or an import left claims.
pub fn create_looks_further(tx: &mut Tx<'_>, tenant: &str) -> ApiResult<(bool, bool)> {
    let version = tx.lock_tenant(tenant)?;
    let m = Model::current(tx, tenant, version)?;
    Ok((m.holds_deleted, m.has_claims))
}

/// Decides the licenses of a user created in this transaction who already holds licenses
/// (a held deleted user come back); returns them as [`license_created`] does.
pub fn license_returned(
    tx: &mut Tx<'_>,
    c: &Cause,
    id: &str,
) -> ApiResult<(Vec<LicenseRow>, Arc<Model>)> {
    let (_, _, model) = decide_and_write(tx, c, Scope::Users(vec![id.to_string()]))?;
    Ok((tx.licenses(&c.tenant, Some(&[id.to_string()]))?, model))
}

/// Gives idle seats of one product to the waitlist: each license (a seat holder idle since
/// the time given with it) becomes `reclaimed` — it grants nothing and holds no place until
/// its user is active again — and the first waiters are promoted, in one transaction.
pub fn reclaim(
    tx: &mut Tx<'_>,
    c: &Cause,
    product: &str,
    idle: Vec<(LicenseRow, String)>,
) -> ApiResult<Outcome> {
    let tenant = c.tenant.as_str();
    let version = tx.lock_tenant(tenant)?;
    let model = Model::current(tx, tenant, version)?;
    let Some(sub) = model.subscription(product) else {
        return Ok(Outcome::default());
    };
    let now_text = time_text(c.now);
    let first_seq = tx.next_audit_seq(tenant)?;
    let mut line = tx.line(tenant, product)?;
    let mut events = Vec::with_capacity(idle.len());
    for (row, since) in idle {
        if !row.holds_seat() {
            continue;
        }
        let d = decided_of(&model, &row);
        let mut next = row.clone();
        next.state = "reclaimed".into();
        next.changed = now_text.clone();
        let day = since.get(..10).unwrap_or(&since);
        next.reason = format!("idle since {day}: seat given to the waitlist");
        line.active = line.active.saturating_sub(1);
        next.explain = explain(
            c,
            sub,
            &d,
            line.active,
            "idle seat reclaimed for the waitlist",
        );
        next.audit_seq = Some(first_seq + events.len() as i64);
        tx.update_license(tenant, &next)?;
        events.push(Event {
            kind: "reclaimed",
            before: Some(row),
            after: Some(next),
        });
    }
    if events.is_empty() {
        return Ok(Outcome::default());
    }
    tx.put_line(tenant, product, line)?;
    record_all(tx, c, &now_text, first_seq, &events)?;
    let mut out = Outcome {
        reclaimed: events.len(),
        ..Outcome::default()
    };
    out.add(&relicense(
        tx,
        c,
        Scope::Rebalance(vec![product.to_string()]),
    )?);
    Ok(out)
}

/// The queue position of a seat assigned at `at` in another system (an import): before every
/// position seatkeeper gives (those count up from 1), in the order of the assignments.
pub fn imported_queue(at: OffsetDateTime) -> i64 {
    // Seconds since 1970 minus a constant larger than any of them until the year 2286: the
    // result is negative, and never 0 (which means "no seat").
    at.unix_timestamp().clamp(0, 9_999_999_999) - 10_000_000_000
}

/// Seats a product's line again in queue order (an import made the other system's order
/// the line's): `queues` gives users their imported places; then the first `seats` seated
/// licenses hold seats and the rest wait, whoever held a seat before (hard enforcement; under
/// soft, everyone keeps one).
pub fn reseat(
    tx: &mut Tx<'_>,
    c: &Cause,
    product: &str,
    queues: &HashMap<String, i64>,
) -> ApiResult<Outcome> {
    let tenant = c.tenant.as_str();
    let version = tx.lock_tenant(tenant)?;
    let model = Model::current(tx, tenant, version)?;
    let Some(sub) = model.subscription(product) else {
        return Ok(Outcome::default());
    };
    let mut rows: Vec<LicenseRow> = tx
        .line_rows(tenant, product)?
        .into_iter()
        .filter(|l| l.queue != NO_SEAT && (l.state == "active" || l.state == "waitlisted"))
        .collect();
    for l in &mut rows {
        if let Some(q) = queues.get(&l.user_id)
            && *q != l.queue
        {
            l.queue = *q;
            tx.update_license(tenant, l)?;
        }
    }
    if sub.enforcement == Enforcement::Soft {
        return Ok(Outcome::default());
    }
    rows.sort_by(|a, b| {
        a.queue
            .cmp(&b.queue)
            .then_with(|| a.user_id.cmp(&b.user_id))
    });
    let seats = sub.seats as usize;
    let now_text = time_text(c.now);
    let first_seq = tx.next_audit_seq(tenant)?;
    let mut events = Vec::new();
    let mut line = tx.line(tenant, product)?;
    for (i, row) in rows.into_iter().enumerate() {
        let want = if i < seats { "active" } else { "waitlisted" };
        if row.state == want {
            continue;
        }
        let d = decided_of(&model, &row);
        let mut next = row.clone();
        next.state = want.into();
        next.changed = now_text.clone();
        if want == "active" {
            line.active += 1;
            line.waiting = line.waiting.saturating_sub(1);
            next.reason = format!(
                "{}; seated in the imported order: {}",
                because_words(&d),
                seat_words(sub, &row.plan, seats.min(i + 1))
            );
        } else {
            line.active = line.active.saturating_sub(1);
            line.waiting += 1;
            next.reason = format!(
                "seat limit reached: {}; earlier assignments (imported) come first",
                seat_words(sub, &row.plan, seats)
            );
        }
        next.explain = explain(
            c,
            sub,
            &d,
            line.active,
            "the line follows the imported order",
        );
        next.audit_seq = Some(first_seq + events.len() as i64);
        tx.update_license(tenant, &next)?;
        events.push(Event {
            kind: if want == "active" {
                "promoted"
            } else {
                "waitlisted"
            },
            before: Some(row),
            after: Some(next),
        });
    }
    if events.is_empty() {
        return Ok(Outcome::default());
    }
    tx.put_line(tenant, product, line)?;
    record_all(tx, c, &now_text, first_seq, &events)?;
    Ok(outcome_of(&events))
}

/// Users active again (a check, a token, an activity report): each reclaimed license of
/// theirs gets a seat if one is free and nobody waits ahead, else joins the end of the
/// waitlist.
pub fn restore_reclaimed(tx: &mut Tx<'_>, c: &Cause, users: &[String]) -> ApiResult<Outcome> {
    let tenant = c.tenant.as_str();
    let version = tx.lock_tenant(tenant)?;
    let model = Model::current(tx, tenant, version)?;
    let rows: Vec<LicenseRow> = tx
        .licenses(tenant, Some(users))?
        .into_iter()
        .filter(|l| l.state == "reclaimed")
        .collect();
    if rows.is_empty() {
        return Ok(Outcome::default());
    }
    let now_text = time_text(c.now);
    let first_seq = tx.next_audit_seq(tenant)?;
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(sub) = model.subscription(&row.product) else {
            continue;
        };
        let d = decided_of(&model, &row);
        let line = line_of(tx, &mut lines, tenant, &row.product)?;
        let mut next = row.clone();
        next.changed = now_text.clone();
        next.queue = line.next_queue;
        line.next_queue += 1;
        let seat = sub.enforcement == Enforcement::Soft
            || (line.active < sub.seats as usize && line.waiting == 0);
        let kind = if seat {
            line.active += 1;
            next.state = "active".into();
            next.reason = format!(
                "{}; active again after a reclaim: {}",
                because_words(&d),
                seat_words(sub, &row.plan, line.active)
            );
            "assigned"
        } else {
            line.waiting += 1;
            next.state = "waitlisted".into();
            next.reason = format!(
                "active again after a reclaim; seat limit reached: {}",
                seat_words(sub, &row.plan, line.active)
            );
            "waitlisted"
        };
        next.explain = explain(c, sub, &d, line.active, "active again after a reclaim");
        next.audit_seq = Some(first_seq + events.len() as i64);
        tx.update_license(tenant, &next)?;
        events.push(Event {
            kind,
            before: Some(row),
            after: Some(next),
        });
    }
    for (product, line) in &lines {
        tx.put_line(tenant, product, *line)?;
    }
    record_all(tx, c, &now_text, first_seq, &events)?;
    Ok(outcome_of(&events))
}

/// Re-decides `scope` under the tenant's lock.
fn decide_and_write(
    tx: &mut Tx<'_>,
    c: &Cause,
    scope: Scope,
) -> ApiResult<(Outcome, Vec<LicenseRow>, Arc<Model>)> {
    let tenant = c.tenant.as_str();
    let version = tx.lock_tenant(tenant)?;
    let shared = Model::current(tx, tenant, version)?;
    let model = &*shared;
    let ids: Option<Vec<String>> = match &scope {
        Scope::Created(id, _) | Scope::Patched(id, ..) => Some(vec![id.clone()]),
        Scope::Users(ids) | Scope::InOrder(ids) => Some(ids.clone()),
        Scope::All => None,
        Scope::Rebalance(_) => Some(Vec::new()),
    };
    let arrival: HashMap<String, usize> = match &scope {
        Scope::InOrder(ids) => ids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i))
            .collect(),
        _ => HashMap::new(),
    };
    let rebalanced: Vec<String> = match &scope {
        Scope::Rebalance(products) => products.clone(),
        _ => Vec::new(),
    };
    if model.subscriptions.is_empty() && ids.is_some() {
        // Nothing to hold; a user of such a tenant can only have licenses if a subscription
        // was removed, and removing one re-decides the whole tenant. Roles may still move.
        if let Some(ids) = ids.as_deref().filter(|_| roles_matter(model)) {
            let docs = tx.rule_subjects(tenant, Some(ids), model.reads_groups())?;
            let users = ids.iter().map(|u| (u.clone(), docs.get(u))).collect();
            assign_roles(tx, c, model, &users, false)?;
        }
        return Ok((Outcome::default(), Vec::new(), shared.clone()));
    }
    let rebalance_only = matches!(scope, Scope::Rebalance(_));
    let created_id = match &scope {
        Scope::Created(id, _) => Some(id.clone()),
        _ => None,
    };
    let (subjects, existing, mut created) = match scope {
        // A user created in this transaction is decided already, and holds nothing yet.
        Scope::Created(_, decided) => (BTreeMap::new(), Vec::new(), Some(decided)),
        Scope::Rebalance(_) => (BTreeMap::new(), Vec::new(), None),
        Scope::Patched(id, mut doc, held) if !model.reads_groups() => {
            doc["id"] = Value::String(id.clone());
            let held = match held {
                Some(held) => held,
                None => tx.licenses(tenant, ids.as_deref())?,
            };
            (BTreeMap::from([(id, doc)]), held, None)
        }
        _ => (
            tx.rule_subjects(tenant, ids.as_deref(), model.reads_groups())?,
            tx.licenses(tenant, ids.as_deref())?,
            None,
        ),
    };
    let now_text = time_text(c.now);
    // Each license change gets the next audit record of the tenant's chain (written by
    // `record_all`, in `events` order); a changed row points at its record.
    let first_seq = tx.next_audit_seq(tenant)?;
    let seq_of = |events: &Vec<Event>| Some(first_seq + events.len() as i64);

    let mut held: BTreeMap<String, BTreeMap<String, LicenseRow>> = BTreeMap::new();
    for l in existing {
        held.entry(l.user_id.clone())
            .or_default()
            .insert(l.product.clone(), l);
    }
    let mut everyone: BTreeSet<String> = match &ids {
        Some(ids) => ids.iter().cloned().collect(),
        None => subjects.keys().cloned().collect(),
    };
    everyone.extend(held.keys().cloned());

    let mut events: Vec<Event> = Vec::new();
    let mut inserted: Vec<LicenseRow> = Vec::new();
    // Each touched product line's counts, kept in memory and written once at the end.
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    let mut lines_before: BTreeMap<String, Line> = BTreeMap::new();
    // Users who should newly hold a product, per product, with their decision.
    let mut arrivals: BTreeMap<String, Vec<(String, Decided)>> = BTreeMap::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    // Plan swaps, written together after the visit (one statement per thousand on PostgreSQL):
    // nothing in the visit reads another user's license row.
    let mut swaps: Vec<LicenseRow> = Vec::new();
    // Users are visited by id, or (an import) in the order given: a move into a seated plan
    // takes the seat line's next place.
    let mut everyone: Vec<String> = everyone.into_iter().collect();
    if !arrival.is_empty() {
        everyone.sort_by_key(|u| arrival.get(u).copied().unwrap_or(usize::MAX));
    }
    for user in &everyone {
        // Held by the deprovision brake: their licenses (and seats) stay as they are.
        if model.held.contains(user) {
            held.remove(user);
            continue;
        }
        // The created scope has one user, decided already.
        let decided = match (created.take(), subjects.get(user)) {
            (Some(decided), _) => decided,
            (None, Some(doc)) => licensing::rules::decide_pinned(
                doc,
                is_active(doc),
                &model.rules,
                model.pins.get(user).map_or(&[], Vec::as_slice),
                &model.subscriptions,
                &model.products,
                c.now,
            ),
            (None, None) => BTreeMap::new(),
        };
        let mine = held.remove(user).unwrap_or_default();
        for (product, row) in &mine {
            if !decided.keys().any(|k| k.as_str() == product) {
                tx.delete_license(tenant, user, product)?;
                let line = line_of(tx, &mut lines, tenant, product)?;
                if row.holds_seat() {
                    line.active = line.active.saturating_sub(1);
                } else if row.state == "active" {
                    line.free = line.free.saturating_sub(1);
                } else if row.state == "waitlisted" {
                    line.waiting = line.waiting.saturating_sub(1);
                }
                touched.insert(product.clone());
                events.push(Event {
                    kind: "revoked",
                    before: Some(row.clone()),
                    after: None,
                });
            }
        }
        for (product, d) in decided {
            let product = product.to_string();
            match mine.get(&product) {
                None => arrivals
                    .entry(product.clone())
                    .or_default()
                    .push((user.clone(), d)),
                Some(row) => {
                    let plan_changed = row.plan != d.plan.as_str();
                    let Some(sub) = model.subscription(&product) else {
                        continue;
                    };
                    let seated = model.seated(&product, d.plan.as_str());
                    if seated != (row.queue != NO_SEAT) {
                        // Into or out of a seat-free plan: the seat line changes.
                        let mut line = *line_of(tx, &mut lines, tenant, &product)?;
                        let next =
                            change_seat_kind(tx, c, sub, row, &d, &mut line, seq_of(&events))?;
                        lines.insert(product.clone(), line);
                        touched.insert(product.clone());
                        events.push(Event {
                            kind: "changed",
                            before: Some(row.clone()),
                            after: Some(next),
                        });
                        continue;
                    }
                    if plan_changed || decided_of(model, row).because != d.because {
                        // A plan swap keeps the seat and its place in line: no gap in access.
                        let mut next = row.clone();
                        next.plan = d.plan.to_string();
                        if !seated {
                            next.reason = format!("{}; {}", because_words(&d), seat_free_words(&d));
                        } else if row.state == "active" {
                            next.reason = format!("{}; holds a seat", because_words(&d));
                        }
                        let in_use = line_of(tx, &mut lines, tenant, &product)?.active;
                        let note = if seated {
                            "plan changed, seat kept"
                        } else {
                            "plan changed; it takes no seat"
                        };
                        next.explain = explain(c, sub, &d, in_use, note);
                        if plan_changed {
                            next.changed = now_text.clone();
                            next.audit_seq = seq_of(&events);
                        }
                        swaps.push(next.clone());
                        if plan_changed {
                            events.push(Event {
                                kind: "changed",
                                before: Some(row.clone()),
                                after: Some(next),
                            });
                        }
                    }
                }
            }
        }
    }

    tx.update_licenses(tenant, &swaps)?;
    drop(swaps);
    let mut products: BTreeSet<String> = touched;
    products.extend(arrivals.keys().cloned());
    products.extend(rebalanced);
    if ids.is_none() {
        products.extend(model.subscriptions.iter().map(|s| s.product.to_string()));
    }
    for product in products {
        let Some(sub) = model.subscription(&product) else {
            continue;
        };
        let hard = sub.enforcement == Enforcement::Hard;
        let line = *line_of(tx, &mut lines, tenant, &product)?;
        lines_before.entry(product.clone()).or_insert(line);
        let mut newcomers = arrivals.remove(&product).unwrap_or_default();
        // Arrival order: the order of the change (user ids break ties deterministically), or
        // the order given.
        newcomers.sort_by(|a, b| {
            let at = |u: &String| arrival.get(u).copied().unwrap_or(usize::MAX);
            at(&a.0).cmp(&at(&b.0)).then_with(|| a.0.cmp(&b.0))
        });
        // Holders of seat-free plans are active at once and stay out of the seat line.
        // New rows are written together (one statement per thousand on PostgreSQL) before
        // the next read of this line's rows.
        let mut fresh: Vec<LicenseRow> = Vec::new();
        let (seat_free, newcomers): (Vec<_>, Vec<_>) = newcomers
            .into_iter()
            .partition(|(_, d)| !model.seated(&product, d.plan.as_str()));
        for (user, d) in seat_free {
            let row = LicenseRow {
                user_id: user,
                product: product.clone(),
                plan: d.plan.to_string(),
                state: "active".into(),
                queue: NO_SEAT,
                changed: now_text.clone(),
                reason: format!("{}; {}", because_words(&d), seat_free_words(&d)),
                explain: explain(c, sub, &d, line.active, "the plan takes no seat"),
                audit_seq: seq_of(&events),
            };
            fresh.push(row.clone());
            line_of(tx, &mut lines, tenant, &product)?.free += 1;
            events.push(Event {
                kind: "assigned",
                before: None,
                after: Some(row),
            });
        }
        if created_id.is_some() {
            // A new user's licenses: nothing after this reads them back (the seat line's
            // holders and waiters read below exclude seat-free rows).
            tx.insert_licenses_with_end(tenant, &fresh)?;
        } else {
            tx.insert_licenses(tenant, &fresh)?;
        }
        inserted.append(&mut fresh);
        let moves = licensing::seats::rebalance(
            sub.seats,
            hard,
            line.active,
            line.waiting + newcomers.len(),
        );
        let mut in_use = line.active + moves.promote - moves.demote;
        if !hard {
            in_use = line.active + line.waiting + newcomers.len();
        }
        let seat_text = |plan: &str| seat_words(sub, plan, in_use);
        // Seat cut: the most recently assigned wait first, keeping their place in line.
        // Demoted and promoted rows, each group read at once and written together.
        let mut moved: Vec<LicenseRow> = Vec::new();
        if moves.demote > 0 {
            for row in tx.last_holders(tenant, &product, moves.demote)? {
                let d = decided_of(model, &row);
                let mut next = row.clone();
                next.state = "waitlisted".into();
                next.changed = now_text.clone();
                next.reason = format!(
                    "seat limit reached: {}; seats cut, the most recently assigned wait first",
                    seat_text(&row.plan)
                );
                next.explain = explain(c, sub, &d, in_use, "demoted by a seat cut");
                next.audit_seq = seq_of(&events);
                moved.push(next.clone());
                let l = line_of(tx, &mut lines, tenant, &product)?;
                l.active = l.active.saturating_sub(1);
                l.waiting += 1;
                events.push(Event {
                    kind: "waitlisted",
                    before: Some(row),
                    after: Some(next),
                });
            }
        }
        tx.update_licenses(tenant, &moved)?;
        moved.clear();
        // Free seats go first to those already waiting, in queue order, then to newcomers.
        let mut promote = moves.promote;
        let waiting_first = promote.min(line.waiting);
        if waiting_first > 0 {
            for row in tx.first_waiting(tenant, &product, waiting_first)? {
                let d = decided_of(model, &row);
                let mut next = row.clone();
                next.state = "active".into();
                next.changed = now_text.clone();
                next.reason = format!(
                    "{}; promoted from the waitlist: {}",
                    because_words(&d),
                    seat_text(&row.plan)
                );
                next.explain = explain(c, sub, &d, in_use, "promoted in queue order");
                next.audit_seq = seq_of(&events);
                moved.push(next.clone());
                let l = line_of(tx, &mut lines, tenant, &product)?;
                l.active += 1;
                l.waiting = l.waiting.saturating_sub(1);
                events.push(Event {
                    kind: "promoted",
                    before: Some(row),
                    after: Some(next),
                });
            }
        }
        tx.update_licenses(tenant, &moved)?;
        promote -= waiting_first;
        if !newcomers.is_empty() {
            let first = line.next_queue;
            for (queue, (user, d)) in (first..).zip(newcomers) {
                let active = promote > 0;
                if active {
                    promote -= 1;
                }
                let state = if active { "active" } else { "waitlisted" };
                let reason = if active {
                    format!("{}; {}", because_words(&d), seat_text(d.plan.as_str()))
                } else {
                    format!("seat limit reached: {}", seat_text(d.plan.as_str()))
                };
                let row = LicenseRow {
                    user_id: user,
                    product: product.clone(),
                    plan: d.plan.to_string(),
                    state: state.into(),
                    queue,
                    changed: now_text.clone(),
                    reason,
                    explain: explain(
                        c,
                        sub,
                        &d,
                        in_use,
                        if active {
                            "seat free"
                        } else {
                            "no seat free: waiting in arrival order"
                        },
                    ),
                    audit_seq: seq_of(&events),
                };
                fresh.push(row.clone());
                let l = line_of(tx, &mut lines, tenant, &product)?;
                if active {
                    l.active += 1;
                } else {
                    l.waiting += 1;
                }
                l.next_queue = queue + 1;
                events.push(Event {
                    kind: if active { "assigned" } else { "waitlisted" },
                    before: None,
                    after: Some(row),
                });
            }
        }
        if created_id.is_some() {
            // A new user's licenses: nothing after this reads them back (the seat line's
            // holders and waiters read below exclude seat-free rows).
            tx.insert_licenses_with_end(tenant, &fresh)?;
        } else {
            tx.insert_licenses(tenant, &fresh)?;
        }
        inserted.append(&mut fresh);
    }

    for (product, line) in &lines {
        tx.put_line(tenant, product, *line)?;
    }
    // A hard line that this change filled, or in which someone now waits for lack of a
    // seat, is announced once per change.
    for (product, before) in &lines_before {
        let (Some(sub), Some(after)) = (model.subscription(product), lines.get(product)) else {
            continue;
        };
        let seats = sub.seats as usize;
        let newly_waiting = events.iter().any(|e| {
            e.kind == "waitlisted" && e.after.as_ref().is_some_and(|a| &a.product == product)
        });
        if sub.enforcement == Enforcement::Hard
            && after.active >= seats
            && (before.active < seats || newly_waiting)
        {
            let payload = json!({
                "product": product, "plan": sub.plan.as_str(), "seats": sub.seats,
                "active": after.active, "waitlisted": after.waiting,
                "cause": c.action, "request_id": c.request_id,
            });
            tx.outbox(
                tenant,
                EventType::SeatsExhausted,
                "Subscription",
                product,
                &payload.to_string(),
                &now_text,
            )?;
        }
    }
    let outcome = outcome_of(&events);
    record_all(tx, c, &now_text, first_seq, &events)?;
    // Roles after licenses: their audit records follow the licenses' numbered ones.
    if roles_matter(model) && created_id.is_none() && !rebalance_only {
        let users = everyone
            .iter()
            .map(|u| (u.clone(), subjects.get(u)))
            .collect();
        assign_roles(tx, c, model, &users, ids.is_none())?;
    }
    Ok((outcome, inserted, shared.clone()))
}

/// How many licenses changed, by kind, in these changes.
fn outcome_of(events: &[Event]) -> Outcome {
    let mut out = Outcome::default();
    for e in events {
        match e.kind {
            "assigned" => out.assigned += 1,
            "waitlisted" => out.waitlisted += 1,
            "promoted" => out.promoted += 1,
            "revoked" => out.revoked += 1,
            "reclaimed" => out.reclaimed += 1,
            _ => out.changed += 1,
        }
    }
    out
}

/// The decision behind an existing row, for explanations of seat moves.
fn decided_of(model: &Model, row: &LicenseRow) -> Decided {
    let e = serde_json::from_str::<Value>(&row.explain).unwrap_or(Value::Null);
    let because = match e["pin"].as_object() {
        Some(pin) => Because::Pinned {
            by: pin
                .get("by")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            reason: pin
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        },
        None => e["rule"]
            .as_str()
            .and_then(|n| Key::new("rule", n).ok())
            .filter(|k| model.rule_row(k).is_some())
            .map_or(Because::NoRules, Because::Rule),
    };
    Decided {
        plan: Key::new("plan", &row.plan).unwrap_or_else(|_| because_placeholder_plan()),
        because,
        capped_from: None,
    }
}

/// A product line's counts as this transaction has them (read once, then kept in memory).
fn line_of<'a>(
    tx: &mut Tx<'_>,
    lines: &'a mut BTreeMap<String, Line>,
    tenant: &str,
    product: &str,
) -> ApiResult<&'a mut Line> {
    if !lines.contains_key(product) {
        let line = tx.line(tenant, product)?;
        lines.insert(product.to_string(), line);
    }
    Ok(lines.entry(product.to_string()).or_default())
}

fn because_placeholder_plan() -> Key {
    Key::new("plan", "unknown").expect("a valid key")
}

/// A license as events show it.
#[derive(serde::Serialize)]
struct LicenseView<'a> {
    plan: &'a str,
    state: &'a str,
    reason: &'a str,
}

impl<'a> LicenseView<'a> {
    fn of(l: &'a LicenseRow) -> LicenseView<'a> {
        LicenseView {
            plan: &l.plan,
            state: &l.state,
            reason: &l.reason,
        }
    }
}

/// The payload of a `license.*` event.
#[derive(serde::Serialize)]
struct LicenseEvent<'a> {
    user: &'a str,
    product: &'a str,
    cause: &'a str,
    before: Option<LicenseView<'a>>,
    after: Option<LicenseView<'a>>,
}

/// A license change as its audit record keeps it: the license before and after, the action
/// that caused the change (which the explanation shows), and `prev`, the license's previous
/// record (its history is read by following them).
#[derive(serde::Serialize)]
struct AuditDoc<'a> {
    plan: &'a str,
    state: &'a str,
    reason: &'a str,
    cause: Option<String>,
    prev: Option<i64>,
}

/// The action that caused a license's latest change, as its explanation keeps it (licenses
/// written before it was kept have none).
fn cause_of(l: &LicenseRow) -> Option<String> {
    serde_json::from_str::<Value>(&l.explain)
        .ok()
        .and_then(|e| e["cause"].as_str().map(str::to_string))
}

/// A license record's documents: `before` with the cause of the change that made it so,
/// `after` with this change's cause (for a revocation, the license as `revoked`).
fn audit_docs(e: &Event, cause: &str, prev: Option<i64>) -> (Option<String>, Option<String>) {
    let doc = |l: &LicenseRow, state: &str, cause: Option<String>| {
        serde_json::to_string(&AuditDoc {
            plan: &l.plan,
            state,
            reason: if state == "revoked" {
                "no longer held"
            } else {
                &l.reason
            },
            cause,
            prev,
        })
        .unwrap_or_default()
    };
    let before = e.before.as_ref().map(|b| doc(b, &b.state, cause_of(b)));
    let after = match (&e.after, &e.before) {
        (Some(a), _) => Some(doc(a, &a.state, Some(cause.to_string()))),
        (None, Some(b)) => Some(doc(b, "revoked", Some(cause.to_string()))),
        (None, None) => None,
    };
    (before, after)
}

/// Writes the audit entries (one batch on the tenant's chain, numbered from `first_seq` as
/// the rows were told) and outbox events of the license changes.
fn record_all(
    tx: &mut Tx<'_>,
    c: &Cause,
    at: &str,
    first_seq: i64,
    events: &[Event],
) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut audits = Vec::with_capacity(events.len());
    let mut outbox = Vec::with_capacity(events.len());
    for e in events {
        let Some(row) = e.after.as_ref().or(e.before.as_ref()) else {
            return Err(crate::kernel::store::StoreError::Corrupt(
                "a license change without a license".into(),
            )
            .into());
        };
        metrics::counter!("seatkeeper_license_changes_total", "change" => e.kind).increment(1);
        let id = format!("{}/{}", row.user_id, row.product);
        let event = match e.kind {
            "assigned" => EventType::LicenseAssigned,
            "waitlisted" => EventType::LicenseWaitlisted,
            "promoted" => EventType::LicensePromoted,
            "revoked" => EventType::LicenseRevoked,
            "reclaimed" => EventType::LicenseReclaimed,
            _ => EventType::LicenseChanged,
        };
        // The outbox row's columns carry the type, tenant, user and time; the payload
        // carries the rest.
        let payload = LicenseEvent {
            user: &row.user_id,
            product: &row.product,
            cause: &c.action,
            before: e.before.as_ref().map(LicenseView::of),
            after: e.after.as_ref().map(LicenseView::of),
        };
        let prev = e.before.as_ref().and_then(|b| b.audit_seq);
        let (before, after) = audit_docs(e, &c.action, prev);
        audits.push(AuditEntry {
            action: event.name().to_string(),
            resource_id: id,
            before,
            after,
        });
        let payload = serde_json::to_string(&payload).map_err(|e| {
            crate::kernel::store::StoreError::Corrupt(format!(
                "a license event would not serialise: {e}"
            ))
        })?;
        outbox.push((event, row.user_id.clone(), payload));
    }
    let first = tx.audit_batch(&c.tenant, at, &c.actor, &c.request_id, "License", audits)?;
    if first != first_seq {
        return Err(crate::kernel::store::StoreError::Corrupt(format!(
            "license records numbered from {first}, rows point from {first_seq}"
        ))
        .into());
    }
    for (event, user, payload) in outbox {
        tx.outbox(&c.tenant, event, "License", &user, &payload, at)?;
    }
    Ok(())
}

/// Whether roles can change for this tenant's users: it has role rules, takes SCIM roles,
/// or some user holds a role (which may have to go).
pub fn roles_matter(model: &Model) -> bool {
    !model.role_rules.is_empty()
        || model.role_source != licensing::roles::RoleSource::Rules
        || model.has_user_roles
}

/// Gives and takes roles for `users` (id → stored document with `groups` when the rules read
/// them; an id without a document is gone), writing only what differs, each change audited
/// and announced. `held` users (the deprovision brake) keep what they have.
pub(crate) fn assign_roles(
    tx: &mut Tx<'_>,
    c: &Cause,
    model: &Model,
    users: &BTreeMap<String, Option<&Value>>,
    every_user: bool,
) -> ApiResult<()> {
    if !roles_matter(model) || users.is_empty() && !every_user {
        return Ok(());
    }
    let tenant = c.tenant.as_str();
    let ids: Vec<String> = users.keys().cloned().collect();
    let existing = tx.user_roles(tenant, (!every_user).then_some(ids.as_slice()))?;
    let mut had: BTreeMap<String, Vec<roles::UserRoleRow>> = BTreeMap::new();
    for r in existing {
        had.entry(r.user_id.clone()).or_default().push(r);
    }
    let everyone: BTreeSet<String> = users.keys().chain(had.keys()).cloned().collect();
    let now = time_text(c.now);
    for user in &everyone {
        if model.held.contains(user) {
            continue;
        }
        let wanted = match users.get(user).copied().flatten() {
            Some(doc) => licensing::roles::assign(
                doc,
                is_active(doc),
                &model.role_rules,
                model.role_source,
                &model.products,
            ),
            None => BTreeMap::new(),
        };
        let before = had.remove(user).unwrap_or_default();
        for old in &before {
            let still = wanted
                .keys()
                .any(|(p, r)| p.as_str() == old.product && r.as_str() == old.role);
            if !still {
                tx.delete_user_role(tenant, old)?;
                role_changed(tx, c, EventType::RoleRevoked, old)?;
            }
        }
        for ((product, role), sources) in wanted {
            let source = sources.join(" ");
            let was = before
                .iter()
                .find(|r| r.product == product.as_str() && r.role == role.as_str());
            if was.is_some_and(|r| r.source == source) {
                continue;
            }
            let row = roles::UserRoleRow {
                user_id: user.clone(),
                product: product.to_string(),
                role: role.to_string(),
                source,
                granted: was.map_or_else(|| now.clone(), |r| r.granted.clone()),
            };
            tx.put_user_role(tenant, &row)?;
            if was.is_none() {
                role_changed(tx, c, EventType::RoleGranted, &row)?;
            }
        }
    }
    Ok(())
}

/// The audit record and event of a role given or taken.
fn role_changed(
    tx: &mut Tx<'_>,
    c: &Cause,
    event: EventType,
    r: &roles::UserRoleRow,
) -> ApiResult<()> {
    let doc = json!({"user": r.user_id, "product": r.product, "role": r.role, "source": r.source, "cause": c.action});
    let (before, after) = match event {
        EventType::RoleRevoked => (Some(doc.clone()), None),
        _ => (None, Some(doc.clone())),
    };
    c.audit(tx, event.name(), ("User", &r.user_id), before, after)?;
    tx.outbox(
        &c.tenant,
        event,
        "User",
        &r.user_id,
        &doc.to_string(),
        &time_text(c.now),
    )?;
    Ok(())
}
