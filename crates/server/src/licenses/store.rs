//! Licensing rows: the product catalogue, subscriptions, rules and licenses.
//!
//! Model values are stored as plain columns (plans as one JSON list) and rebuilt into the
//! validated types of `crates/licensing` when read, so the decision code sees only values
//! that passed validation.

use std::collections::{BTreeMap, BTreeSet};

use licensing::model::{
    Enforcement, Key, OnExpiry, OnIdle, Pin, Plan, Product, Rule, Status, Subscription,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::kernel::db::Backend;
use crate::kernel::db::tuples;
use crate::kernel::db::{P, Row, placeholders};
use crate::kernel::store::{Store, StoreError, StoreResult, Tx, audit_from_row, model_key};
use crate::params;

/// One license row.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenseRow {
    /// The user.
    pub user_id: String,
    /// Product key.
    pub product: String,
    /// Plan key.
    pub plan: String,
    /// `active` or `waitlisted`.
    pub state: String,
    /// Position in the seat line (see the schema); [`NO_SEAT`] for a license of a seat-free
    /// plan, which holds no place in it.
    pub queue: i64,
    /// When the license entered its state.
    pub changed: String,
    /// Why, in a sentence.
    pub reason: String,
    /// The explanation chain (JSON).
    pub explain: String,
    /// The tenant's audit record of the license's latest change (each license record names
    /// the one before it, so a history is read without an index).
    pub audit_seq: Option<i64>,
}

/// The queue of a license that takes no seat (a seat-free plan's): seat lines start at 1.
pub const NO_SEAT: i64 = 0;

impl LicenseRow {
    /// Whether this license holds one of the subscription's seats.
    pub fn holds_seat(&self) -> bool {
        self.state == "active" && self.queue != NO_SEAT
    }
}

/// A rule as stored (the filter as text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleRow {
    /// Name, unique per tenant.
    pub name: String,
    /// SCIM filter over the user.
    pub filter: String,
    /// Target product.
    pub product: String,
    /// Target plan.
    pub plan: String,
    /// Higher wins.
    pub priority: i64,
}

/// Seat counts of one product line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Line {
    /// Licenses holding a seat.
    pub active: usize,
    /// Licenses waiting.
    pub waiting: usize,
    /// The queue position the next newcomer takes.
    pub next_queue: i64,
    /// Active licenses of seat-free plans (they hold no seat and never wait).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub free: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Line {
    /// A line no license has joined yet.
    pub const EMPTY: Line = Line {
        active: 0,
        waiting: 0,
        next_queue: 1,
        free: 0,
    };
}

/// A tenant's stored seat counts: `{"product": {"active": …, "waiting": …, "next_queue": …}}`.
fn parse_lines(text: &str) -> StoreResult<BTreeMap<String, Line>> {
    serde_json::from_str(text).map_err(|e| corrupt("seat lines", e))
}

/// A tenant's seat counts per product, kept on its head row for the length of a transaction.
#[derive(Debug, Default)]
struct SeatLines(BTreeMap<String, Line>);

impl crate::kernel::db::HeadState for SeatLines {
    fn stored(&self) -> StoreResult<String> {
        serde_json::to_string(&self.0).map_err(|e| corrupt("seat lines", e))
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn key(what: &str, s: &str) -> StoreResult<Key> {
    Key::new(what, s).map_err(|e| corrupt(what, e))
}

/// Parses a stored (or RFC 3339) instant.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    scim::filter::parse_datetime(s)
}

/// Plans as stored.
pub fn plans_json(plans: &[Plan]) -> Value {
    Value::Array(
        plans
            .iter()
            .map(|p| {
                json!({
                    "key": p.key.as_str(),
                    "rank": p.rank,
                    "features": p.features.iter().map(Key::as_str).collect::<Vec<_>>(),
                    "limits": p.limits.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "seated": p.seated,
                })
            })
            .collect(),
    )
}

/// The stored form of a product's roles.
pub fn roles_json(roles: &[licensing::model::Role]) -> Value {
    Value::Array(
        roles
            .iter()
            .map(|r| {
                json!({
                    "key": r.key.as_str(),
                    "permissions": r.permissions.iter().map(Key::as_str).collect::<Vec<_>>(),
                    "requires_license": r.requires_license,
                })
            })
            .collect(),
    )
}

/// A product's roles from their stored form.
pub(crate) fn roles_from_text(text: &str) -> StoreResult<Vec<licensing::model::Role>> {
    let v: Value = serde_json::from_str(text).map_err(|e| corrupt("roles", e))?;
    let mut out = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let permissions = r
            .get("permissions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|p| key("permission", p))
            .collect::<StoreResult<BTreeSet<_>>>()?;
        out.push(licensing::model::Role {
            key: key(
                "role",
                r.get("key").and_then(Value::as_str).unwrap_or_default(),
            )?,
            permissions,
            requires_license: r
                .get("requires_license")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        });
    }
    Ok(out)
}

/// A catalogue product from its row (`key, name, plans, roles`).
pub(crate) fn product_from_row(r: &Row) -> StoreResult<Product> {
    let plans: Value = serde_json::from_str(&r.text(2)).map_err(|e| corrupt("plans", e))?;
    let mut out = Vec::new();
    for p in plans.as_array().into_iter().flatten() {
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
        let features = p
            .get("features")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|f| key("feature", f))
            .collect::<StoreResult<BTreeSet<_>>>()?;
        let limits = p
            .get("limits")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| Ok((key("limit", k)?, v.as_i64().unwrap_or_default())))
            .collect::<StoreResult<BTreeMap<_, _>>>()?;
        out.push(Plan {
            key: key("plan", text("key"))?,
            rank: p.get("rank").and_then(Value::as_i64).unwrap_or_default() as i32,
            features,
            limits,
            seated: p.get("seated").and_then(Value::as_bool).unwrap_or(true),
        });
    }
    let roles = roles_from_text(&r.text(3))?;
    Product::new(key("product", &r.text(0))?, r.text(1), out)
        .and_then(|p| p.with_roles(roles))
        .map_err(|e| corrupt("product", e))
}

/// See [`Store::usage_inputs`].
#[derive(Debug, Default)]
pub(crate) struct UsageInputs {
    /// (tenant, subscription), by tenant then product.
    pub subscriptions: Vec<(String, Subscription)>,
    /// Kept seat counts per tenant and product.
    pub lines: BTreeMap<String, BTreeMap<String, Line>>,
    /// When the longest waiter of each (tenant, product) line began waiting.
    pub oldest_waiting: BTreeMap<(String, String), String>,
}

/// A held seat whose user has not been seen for the subscription's `idle_after_days`.
#[derive(Debug, Clone)]
pub(crate) struct IdleRow {
    pub user_id: String,
    /// None when the user is gone (its license is about to be freed).
    pub user_name: Option<String>,
    pub product: String,
    pub plan: String,
    /// The user's last activity, if ever.
    pub last_seen: Option<String>,
    /// When the seat was first held (a plan change does not move it).
    pub held_since: String,
}

/// `WITH c(days, cutoff) AS (VALUES …)`: each `idle_after_days` in use with its cutoff
/// instant, as parameters from `$start`.
fn cutoff_table(cutoffs: &[(u32, String)], start: usize) -> (String, Vec<P>) {
    let mut ps = Vec::with_capacity(cutoffs.len() * 2);
    let rows: Vec<String> = cutoffs
        .iter()
        .enumerate()
        .map(|(i, (days, cutoff))| {
            ps.push(P::Int(i64::from(*days)));
            ps.push(P::from(cutoff.as_str()));
            format!("(${}, ${})", start + 2 * i, start + 2 * i + 1)
        })
        .collect();
    (
        format!("WITH c(days, cutoff) AS (VALUES {})", rows.join(", ")),
        ps,
    )
}

const SUB_COLUMNS: &str = "product, plan, seats, starts_at, ends_at, status, grace_days, on_expiry, enforcement, idle_after_days, on_idle";

fn sub_from_row(r: &Row) -> StoreResult<Subscription> {
    let time = |i: usize| -> StoreResult<OffsetDateTime> {
        parse_time(&r.text(i)).ok_or_else(|| corrupt("subscription time", r.text(i)))
    };
    Ok(Subscription {
        product: key("product", &r.text(0))?,
        plan: key("plan", &r.text(1))?,
        seats: u32::try_from(r.int(2)).map_err(|e| corrupt("seats", e))?,
        starts_at: time(3)?,
        ends_at: r.opt_text(4).map(|_| time(4)).transpose()?,
        status: Status::parse(&r.text(5)).map_err(|e| corrupt("status", e))?,
        grace_days: u32::try_from(r.int(6)).map_err(|e| corrupt("grace_days", e))?,
        on_expiry: OnExpiry::parse(&r.text(7)).map_err(|e| corrupt("on_expiry", e))?,
        enforcement: Enforcement::parse(&r.text(8)).map_err(|e| corrupt("enforcement", e))?,
        idle_after_days: u32::try_from(r.int(9)).map_err(|e| corrupt("idle_after_days", e))?,
        on_idle: OnIdle::parse(&r.text(10)).map_err(|e| corrupt("on_idle", e))?,
    })
}

const PIN_COLUMNS: &str = "user_id, product, plan, reason, pinned_by, expires_at, created";

fn pin_from_row(r: &Row) -> StoreResult<Pin> {
    Ok(Pin {
        product: key("product", &r.text(1))?,
        plan: r.opt_text(2).map(|p| key("plan", &p)).transpose()?,
        reason: r.text(3),
        by: r.text(4),
        expires_at: r
            .opt_text(5)
            .map(|t| parse_time(&t).ok_or_else(|| corrupt("pin expiry", t)))
            .transpose()?,
    })
}

/// A pin as the admin API shows it.
pub fn pin_json(user: &str, pin: &Pin) -> Value {
    json!({
        "user": user,
        "product": pin.product.as_str(),
        "plan": pin.plan.as_ref().map(Key::as_str),
        "reason": pin.reason,
        "pinned_by": pin.by,
        "expires_at": pin.expires_at.map(time_text),
    })
}

fn rule_from_row(r: &Row) -> RuleRow {
    RuleRow {
        name: r.text(0),
        filter: r.text(1),
        product: r.text(2),
        plan: r.text(3),
        priority: r.int(4),
    }
}

/// Builds the validated rule of a stored row.
pub fn rule_of(r: &RuleRow) -> StoreResult<Rule> {
    Rule::new(
        key("rule", &r.name)?,
        &r.filter,
        key("product", &r.product)?,
        key("plan", &r.plan)?,
        i32::try_from(r.priority).map_err(|e| corrupt("priority", e))?,
    )
    .map_err(|e| corrupt("rule", e))
}

fn license_from_row(r: &Row) -> LicenseRow {
    LicenseRow {
        user_id: r.text(0),
        product: r.text(1),
        plan: r.text(2),
        state: r.text(3),
        queue: r.int(4),
        changed: r.text(5),
        reason: r.text(6),
        explain: r.text(7),
        audit_seq: r.opt_int(8),
    }
}

const LICENSE_COLUMNS: &str =
    "user_id, product, plan, state, queue, changed, reason, explain, audit_seq";

/// Licenses per multi-row statement on PostgreSQL: 9 parameters each, far below its 65,535.
const LICENSE_ROWS: usize = 1000;

/// PostgreSQL: inserts `rows` licenses given by [`license_params`].
/// New licenses written with a unit of work's end ([`Tx::insert_licenses_with_end`]): the
/// tenant leads, nine parameters a license.
static LICENSES_INSERT: crate::kernel::db::RowsInsert = crate::kernel::db::RowsInsert {
    sql: licenses_insert,
    width: 9,
};

fn licenses_insert(rows: usize) -> String {
    format!(
        "INSERT INTO licenses (tenant_id, {LICENSE_COLUMNS}, held_since) \
         SELECT $1, v.user_id, v.product, v.plan, v.state, v.queue, v.changed, v.reason, v.explain, \
         NULLIF(v.audit_seq, -1), CASE WHEN v.state = 'active' THEN v.changed END \
         FROM (VALUES {}) AS v({LICENSE_COLUMNS})",
        tuples(2, 9, rows)
    )
}

/// The tenant, then each license's columns in [`LICENSE_COLUMNS`] order.
fn license_params(tenant: &str, rows: &[LicenseRow]) -> Vec<P> {
    let mut params = Vec::with_capacity(1 + rows.len() * 9);
    params.push(P::from(tenant));
    for l in rows {
        params.extend(params![
            &l.user_id,
            &l.product,
            &l.plan,
            &l.state,
            l.queue,
            &l.changed,
            &l.reason,
            &l.explain,
            audit_seq_param(l)
        ]);
    }
    params
}

/// A license's audit pointer as a parameter: -1 for none (`NULLIF` turns it back into NULL;
/// a NULL parameter would fix the prepared statement's type to text on PostgreSQL).
fn audit_seq_param(l: &LicenseRow) -> i64 {
    l.audit_seq.unwrap_or(-1)
}

/// The stored text of an instant.
pub fn time_text(t: OffsetDateTime) -> String {
    crate::kernel::clock::stamp(t)
}

impl Tx<'_> {
    /// The tenant's chain tip, holding its seat counts as this transaction has them (parsed
    /// on first use), under the tenant's lock.
    fn lines_tip(&mut self, tenant: &str) -> StoreResult<&mut crate::kernel::db::ChainTip> {
        self.lock_tenant(tenant)?;
        let tip = self
            .tips
            .iter_mut()
            .find(|t| t.tenant == tenant)
            .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant}: lock not held")))?;
        if tip.seat_lines.is_none() {
            tip.seat_lines = Some(Box::new(SeatLines(parse_lines(&tip.seat_lines_text)?)));
        }
        Ok(tip)
    }

    /// The tenant's seat counts, under its lock.
    fn seat_lines(
        &mut self,
        tenant: &str,
    ) -> StoreResult<(&mut BTreeMap<String, Line>, &mut bool)> {
        let tip = self.lines_tip(tenant)?;
        let lines = tip
            .seat_lines
            .as_mut()
            .and_then(|s| s.as_any().downcast_mut::<SeatLines>())
            .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant}: seat lines missing")))?;
        Ok((&mut lines.0, &mut tip.lines_moved))
    }

    /// Marks a tenant's licensing model as changed (cached copies are then reloaded). The
    /// new version is random, not a counter: a rolled-back change (a dry run) must never
    /// leave a cached model under a version that a later change could take again.
    pub(crate) fn bump_model(&mut self, tenant: &str) -> StoreResult<()> {
        self.lock_tenant(tenant)?;
        let version = (uuid::Uuid::new_v4().as_u128() as i64) & i64::MAX;
        let held = self
            .fetch_opt(
                "UPDATE audit_heads SET model_version = $2 WHERE tenant_id = $1 RETURNING held_version",
                &params![tenant, version],
            )?
            .map_or(0, |r| r.int(0));
        if let Some(tip) = self.tips.iter_mut().find(|t| t.tenant == tenant) {
            tip.model_version = model_key(version, held);
        }
        Ok(())
    }

    /// Marks the users the deprovision brake holds as changed: decisions reload the tenant's
    /// model (which knows them), but entitlement snapshots, which follow `model_version`, stay
    /// loaded. A hold, a return or a release changes no license, so a snapshot has nothing to
    /// reload; a mass deprovision used to reload every node's snapshot of the tenant once per
    /// held user.
    pub(crate) fn bump_held(&mut self, tenant: &str) -> StoreResult<()> {
        self.lock_tenant(tenant)?;
        let version = (uuid::Uuid::new_v4().as_u128() as i64) & i64::MAX;
        let model = self
            .fetch_opt(
                "UPDATE audit_heads SET held_version = $2 WHERE tenant_id = $1 RETURNING model_version",
                &params![tenant, version],
            )?
            .map_or(0, |r| r.int(0));
        if let Some(tip) = self.tips.iter_mut().find(|t| t.tenant == tenant) {
            tip.model_version = model_key(model, version);
        }
        Ok(())
    }

    /// The product catalogue.
    pub(crate) fn products(&mut self) -> StoreResult<Vec<Product>> {
        self.fetch(
            "SELECT key, name, plans, roles FROM lic_products ORDER BY key",
            &[],
        )?
        .iter()
        .map(product_from_row)
        .collect()
    }

    /// Writes a product (insert or replace).
    pub(crate) fn put_product(&mut self, p: &Product, now: &str) -> StoreResult<()> {
        // Every tenant's users show the catalogue's features.
        self.reaches_everything();
        self.execute(
            "INSERT INTO lic_products (key, name, plans, roles, updated) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET name = excluded.name, plans = excluded.plans, roles = excluded.roles, updated = excluded.updated",
            &params![
                p.key.as_str(),
                &p.name,
                plans_json(&p.plans).to_string(),
                roles_json(&p.roles).to_string(),
                now
            ],
        )?;
        Ok(())
    }

    /// Tenants subscribed to a product.
    pub(crate) fn subscribers(&mut self, product: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .fetch(
                "SELECT tenant_id FROM lic_subscriptions WHERE product = $1 ORDER BY tenant_id",
                &params![product],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect())
    }

    /// A tenant's subscriptions.
    pub(crate) fn subscriptions(&mut self, tenant: &str) -> StoreResult<Vec<Subscription>> {
        self.fetch(
            &format!(
                "SELECT {SUB_COLUMNS} FROM lic_subscriptions WHERE tenant_id = $1 ORDER BY product"
            ),
            &params![tenant],
        )?
        .iter()
        .map(sub_from_row)
        .collect()
    }

    /// Who manages each of a tenant's subscriptions (`admin`, `apply`, `billing:…`), by product.
    pub(crate) fn subscription_owners(
        &mut self,
        tenant: &str,
    ) -> StoreResult<BTreeMap<String, String>> {
        Ok(self
            .fetch(
                "SELECT product, managed_by FROM lic_subscriptions WHERE tenant_id = $1",
                &params![tenant],
            )?
            .iter()
            .map(|r| (r.text(0), r.text(1)))
            .collect())
    }

    /// Records who manages a subscription from now on.
    pub(crate) fn set_subscription_owner(
        &mut self,
        tenant: &str,
        product: &str,
        owner: &str,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE lic_subscriptions SET managed_by = $3 WHERE tenant_id = $1 AND product = $2",
            &params![tenant, product, owner],
        )?;
        Ok(())
    }

    /// Sets a subscription's billing order anchor, the newest billing event applied to it:
    /// events dated before `at` (or at `at` with an id not after `event`) are stale.
    pub(crate) fn anchor_billing(
        &mut self,
        tenant: &str,
        product: &str,
        at: &str,
        event: &str,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE lic_subscriptions SET billing_at = $3, billing_event = $4 WHERE tenant_id = $1 AND product = $2",
            &params![tenant, product, at, event],
        )?;
        Ok(())
    }

    /// Forgets a subscription's billing order anchor (after an admin change): the next
    /// billing event applies whatever its date, so billing can correct what was changed.
    pub(crate) fn clear_billing_anchor(&mut self, tenant: &str, product: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE lic_subscriptions SET billing_at = NULL, billing_event = NULL WHERE tenant_id = $1 AND product = $2",
            &params![tenant, product],
        )?;
        Ok(())
    }

    /// Writes a subscription (insert or replace).
    pub(crate) fn put_subscription(
        &mut self,
        tenant: &str,
        s: &Subscription,
        next_check: Option<String>,
        now: &str,
    ) -> StoreResult<()> {
        let enforcement = match s.enforcement {
            Enforcement::Hard => "hard",
            Enforcement::Soft => "soft",
        };
        self.execute(
            "INSERT INTO lic_subscriptions (tenant_id, product, plan, seats, starts_at, ends_at, status, grace_days, on_expiry, enforcement, next_check, updated, idle_after_days, on_idle) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (tenant_id, product) DO UPDATE SET plan = excluded.plan, seats = excluded.seats, \
             starts_at = excluded.starts_at, ends_at = excluded.ends_at, status = excluded.status, \
             grace_days = excluded.grace_days, on_expiry = excluded.on_expiry, enforcement = excluded.enforcement, \
             next_check = excluded.next_check, updated = excluded.updated, idle_after_days = excluded.idle_after_days, \
             on_idle = excluded.on_idle",
            &params![
                tenant,
                s.product.as_str(),
                s.plan.as_str(),
                i64::from(s.seats),
                time_text(s.starts_at),
                s.ends_at.map(time_text),
                s.status.as_str(),
                i64::from(s.grace_days),
                s.on_expiry.to_string(),
                enforcement,
                next_check,
                now,
                i64::from(s.idle_after_days),
                s.on_idle.as_str()
            ],
        )?;
        Ok(())
    }

    /// Sets when the scheduler should next look at a subscription.
    pub(crate) fn set_next_check(
        &mut self,
        tenant: &str,
        product: &str,
        next_check: Option<String>,
        status: &str,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE lic_subscriptions SET next_check = $3, status = $4 WHERE tenant_id = $1 AND product = $2",
            &params![tenant, product, next_check, status],
        )?;
        Ok(())
    }

    /// Removes a subscription; returns whether it existed.
    pub(crate) fn delete_subscription(&mut self, tenant: &str, product: &str) -> StoreResult<bool> {
        Ok(self.execute(
            "DELETE FROM lic_subscriptions WHERE tenant_id = $1 AND product = $2",
            &params![tenant, product],
        )? == 1)
    }

    /// A tenant's pins: (user, pin).
    pub(crate) fn pins(&mut self, tenant: &str) -> StoreResult<Vec<(String, Pin)>> {
        self.fetch(
            &format!(
                "SELECT {PIN_COLUMNS} FROM lic_pins WHERE tenant_id = $1 ORDER BY user_id, product"
            ),
            &params![tenant],
        )?
        .iter()
        .map(|r| Ok((r.text(0), pin_from_row(r)?)))
        .collect()
    }

    /// Writes a pin (insert or replace); returns the one it replaced.
    pub(crate) fn put_pin(
        &mut self,
        tenant: &str,
        user: &str,
        pin: &Pin,
        now: &str,
    ) -> StoreResult<Option<Pin>> {
        let before = self.delete_pin(tenant, user, pin.product.as_str())?;
        self.execute(
            "INSERT INTO lic_pins (tenant_id, user_id, product, plan, reason, pinned_by, created, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &params![
                tenant,
                user,
                pin.product.as_str(),
                pin.plan.as_ref().map(|p| p.to_string()),
                &pin.reason,
                &pin.by,
                now,
                pin.expires_at.map(time_text)
            ],
        )?;
        Ok(before)
    }

    /// Removes a pin; returns it.
    pub(crate) fn delete_pin(
        &mut self,
        tenant: &str,
        user: &str,
        product: &str,
    ) -> StoreResult<Option<Pin>> {
        let before = self
            .fetch_opt(
                &format!("SELECT {PIN_COLUMNS} FROM lic_pins WHERE tenant_id = $1 AND user_id = $2 AND product = $3"),
                &params![tenant, user, product],
            )?
            .map(|r| pin_from_row(&r))
            .transpose()?;
        if before.is_some() {
            self.execute(
                "DELETE FROM lic_pins WHERE tenant_id = $1 AND user_id = $2 AND product = $3",
                &params![tenant, user, product],
            )?;
        }
        Ok(before)
    }

    /// Pins past their expiry at `now`, of every tenant: (tenant, user, product).
    pub(crate) fn expired_pins(&mut self, now: &str) -> StoreResult<Vec<(String, String, String)>> {
        Ok(self
            .fetch(
                "SELECT tenant_id, user_id, product FROM lic_pins WHERE expires_at IS NOT NULL AND expires_at <= $1 \
                 ORDER BY tenant_id, user_id, product",
                &params![now],
            )?
            .iter()
            .map(|r| (r.text(0), r.text(1), r.text(2)))
            .collect())
    }

    /// A tenant's rules as stored.
    pub(crate) fn rule_rows(&mut self, tenant: &str) -> StoreResult<Vec<RuleRow>> {
        Ok(self
            .fetch(
                "SELECT name, filter, product, plan, priority FROM lic_rules WHERE tenant_id = $1 ORDER BY name",
                &params![tenant],
            )?
            .iter()
            .map(rule_from_row)
            .collect())
    }

    /// Writes a rule (insert or replace).
    pub(crate) fn put_rule(&mut self, tenant: &str, r: &RuleRow, now: &str) -> StoreResult<()> {
        self.execute(
            "INSERT INTO lic_rules (tenant_id, name, filter, product, plan, priority, updated) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET filter = excluded.filter, product = excluded.product, \
             plan = excluded.plan, priority = excluded.priority, updated = excluded.updated",
            &params![tenant, &r.name, &r.filter, &r.product, &r.plan, r.priority, now],
        )?;
        Ok(())
    }

    /// Removes a rule; returns whether it existed.
    pub(crate) fn delete_rule(&mut self, tenant: &str, name: &str) -> StoreResult<bool> {
        Ok(self.execute(
            "DELETE FROM lic_rules WHERE tenant_id = $1 AND name = $2",
            &params![tenant, name],
        )? == 1)
    }

    /// Licenses of some users (or of the whole tenant).
    pub(crate) fn licenses(
        &mut self,
        tenant: &str,
        users: Option<&[String]>,
    ) -> StoreResult<Vec<LicenseRow>> {
        let mut out = Vec::new();
        match users {
            None => {
                for r in self.fetch(
                    &format!("SELECT {LICENSE_COLUMNS} FROM licenses WHERE tenant_id = $1"),
                    &params![tenant],
                )? {
                    out.push(license_from_row(&r));
                }
            }
            Some(users) => {
                for chunk in users.chunks(500) {
                    let sql = format!(
                        "SELECT {LICENSE_COLUMNS} FROM licenses WHERE tenant_id = $1 AND user_id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut params = vec![P::from(tenant)];
                    params.extend(chunk.iter().map(P::from));
                    for r in self.fetch(&sql, &params)? {
                        out.push(license_from_row(&r));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Inserts a license.
    pub(crate) fn insert_license(&mut self, tenant: &str, l: &LicenseRow) -> StoreResult<()> {
        self.execute(
            &format!("INSERT INTO licenses (tenant_id, {LICENSE_COLUMNS}, held_since) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULLIF($10, -1), \
                      CASE WHEN $5 = 'active' THEN $7 END)"),
            &params![tenant, &l.user_id, &l.product, &l.plan, &l.state, l.queue, &l.changed, &l.reason, &l.explain, audit_seq_param(l)],
        )?;
        Ok(())
    }

    /// Rewrites a license.
    pub(crate) fn update_license(&mut self, tenant: &str, l: &LicenseRow) -> StoreResult<()> {
        self.execute(
            "UPDATE licenses SET plan = $4, state = $5, queue = $6, changed = $7, reason = $8, explain = $9, \
             audit_seq = NULLIF($10, -1), \
             held_since = CASE WHEN $5 <> 'active' THEN NULL WHEN state = 'active' THEN held_since ELSE $7 END \
             WHERE tenant_id = $1 AND user_id = $2 AND product = $3",
            &params![tenant, &l.user_id, &l.product, &l.plan, &l.state, l.queue, &l.changed, &l.reason, &l.explain, audit_seq_param(l)],
        )?;
        Ok(())
    }

    /// Inserts many licenses (a rule or an import that reaches thousands of users): on
    /// PostgreSQL as multi-row inserts, [`LICENSE_ROWS`] a statement, instead of a round trip
    /// each; on SQLite, where a statement costs no round trip, one by one.
    pub(crate) fn insert_licenses(&mut self, tenant: &str, rows: &[LicenseRow]) -> StoreResult<()> {
        if self.backend() != Backend::Postgres || rows.len() == 1 {
            for l in rows {
                self.insert_license(tenant, l)?;
            }
            return Ok(());
        }
        for chunk in rows.chunks(LICENSE_ROWS) {
            self.execute(
                &licenses_insert(chunk.len()),
                &license_params(tenant, chunk),
            )?;
        }
        Ok(())
    }

    /// [`Tx::insert_licenses`] for rows nothing later in the unit of work reads back (a new
    /// user's first licenses): on PostgreSQL they go with the unit of work's end statement
    /// ([`Tx::defer`]), one round trip less per create.
    pub(crate) fn insert_licenses_with_end(
        &mut self,
        tenant: &str,
        rows: &[LicenseRow],
    ) -> StoreResult<()> {
        if self.backend() != Backend::Postgres {
            return self.insert_licenses(tenant, rows);
        }
        for chunk in rows.chunks(LICENSE_ROWS) {
            let mut params = license_params(tenant, chunk);
            let rows = params.split_off(1);
            self.defer_rows(&LICENSES_INSERT, params, rows)?;
        }
        Ok(())
    }

    /// Rewrites many licenses (a plan change for every user of a rule): on PostgreSQL as
    /// `UPDATE … FROM (VALUES …)`, [`LICENSE_ROWS`] a statement, instead of a round trip each;
    /// on SQLite one by one. Each row's `held_since` follows [`Tx::update_license`]'s rule.
    pub(crate) fn update_licenses(&mut self, tenant: &str, rows: &[LicenseRow]) -> StoreResult<()> {
        if self.backend() != Backend::Postgres || rows.len() == 1 {
            for l in rows {
                self.update_license(tenant, l)?;
            }
            return Ok(());
        }
        for chunk in rows.chunks(LICENSE_ROWS) {
            let sql = format!(
                "UPDATE licenses AS l SET plan = v.plan, state = v.state, queue = v.queue, changed = v.changed, \
                 reason = v.reason, explain = v.explain, audit_seq = NULLIF(v.audit_seq, -1), \
                 held_since = CASE WHEN v.state <> 'active' THEN NULL WHEN l.state = 'active' THEN l.held_since ELSE v.changed END \
                 FROM (VALUES {}) AS v({LICENSE_COLUMNS}) \
                 WHERE l.tenant_id = $1 AND l.user_id = v.user_id AND l.product = v.product",
                tuples(2, 9, chunk.len())
            );
            self.execute(&sql, &license_params(tenant, chunk))?;
        }
        Ok(())
    }

    /// Removes a license.
    pub(crate) fn delete_license(
        &mut self,
        tenant: &str,
        user: &str,
        product: &str,
    ) -> StoreResult<()> {
        self.execute(
            "DELETE FROM licenses WHERE tenant_id = $1 AND user_id = $2 AND product = $3",
            &params![tenant, user, product],
        )?;
        Ok(())
    }

    /// Seat counts of a product's line, under the tenant's lock.
    pub(crate) fn line(&mut self, tenant: &str, product: &str) -> StoreResult<Line> {
        let (lines, _) = self.seat_lines(tenant)?;
        Ok(lines.get(product).copied().unwrap_or(Line::EMPTY))
    }

    /// Sets a product line's counts (as absolute values); they are stored with the
    /// tenant's head row when the transaction ends.
    pub(crate) fn put_line(&mut self, tenant: &str, product: &str, line: Line) -> StoreResult<()> {
        let (lines, moved) = self.seat_lines(tenant)?;
        if lines.get(product) != Some(&line) {
            lines.insert(product.to_string(), line);
            *moved = true;
        }
        Ok(())
    }

    /// The first `n` waiting licenses of a line, in queue order (they are indexed: a seat
    /// that frees up reaches the head of the line in one read).
    pub(crate) fn first_waiting(
        &mut self,
        tenant: &str,
        product: &str,
        n: usize,
    ) -> StoreResult<Vec<LicenseRow>> {
        self.line_slice(
            "state = 'waitlisted' ORDER BY queue, user_id",
            tenant,
            product,
            n,
        )
    }

    /// The `n` most recently assigned seat holders of a line. Only a seat cut asks, so
    /// holders are not indexed by queue (a create would pay for it); this reads the tenant's
    /// licenses.
    pub(crate) fn last_holders(
        &mut self,
        tenant: &str,
        product: &str,
        n: usize,
    ) -> StoreResult<Vec<LicenseRow>> {
        self.line_slice(
            "state = 'active' AND queue <> 0 ORDER BY queue DESC, user_id DESC",
            tenant,
            product,
            n,
        )
    }

    /// The state condition and order are literal, so the planner can use the partial index.
    fn line_slice(
        &mut self,
        state_and_order: &str,
        tenant: &str,
        product: &str,
        n: usize,
    ) -> StoreResult<Vec<LicenseRow>> {
        Ok(self
            .fetch(
                &format!(
                    "SELECT {LICENSE_COLUMNS} FROM licenses WHERE tenant_id = $1 AND product = $2 AND {state_and_order} LIMIT $3"
                ),
                &params![tenant, product, n as i64],
            )?
            .iter()
            .map(license_from_row)
            .collect())
    }

    /// Users as the rules see them: the stored document with `id` and, when asked, `groups`
    /// (direct and nested). `None` loads the whole tenant.
    pub(crate) fn rule_subjects(
        &mut self,
        tenant: &str,
        users: Option<&[String]>,
        with_groups: bool,
    ) -> StoreResult<BTreeMap<String, Value>> {
        if let Some(users) = users
            && users.len() > 500
        {
            let mut out = BTreeMap::new();
            for chunk in users.chunks(500) {
                out.extend(self.rule_subjects(tenant, Some(chunk), with_groups)?);
            }
            return Ok(out);
        }
        let mut out = BTreeMap::new();
        let mut load = |tx: &mut Tx<'_>, sql: &str, params: &[P]| -> StoreResult<()> {
            for r in tx.fetch(sql, params)? {
                let mut doc: Value =
                    serde_json::from_str(&r.text(1)).map_err(|e| corrupt("user", e))?;
                doc["id"] = Value::String(r.text(0));
                out.insert(r.text(0), doc);
            }
            Ok(())
        };
        match users {
            None => load(
                self,
                "SELECT id, doc FROM scim_users WHERE tenant_id = $1",
                &params![tenant],
            )?,
            Some(users) => {
                let sql = format!(
                    "SELECT id, doc FROM scim_users WHERE tenant_id = $1 AND id IN ({})",
                    placeholders(2, users.len())
                );
                let mut params = vec![P::from(tenant)];
                params.extend(users.iter().map(P::from));
                load(self, &sql, &params)?;
            }
        }
        if !with_groups || out.is_empty() {
            return Ok(out);
        }
        let seed = match users {
            None => "SELECT member_id, group_id, 0 FROM scim_group_members WHERE tenant_id = $1 AND member_type = 'User'".to_string(),
            Some(u) => format!(
                "SELECT member_id, group_id, 0 FROM scim_group_members WHERE tenant_id = $1 AND member_id IN ({})",
                placeholders(2, u.len())
            ),
        };
        let sql = format!(
            "WITH RECURSIVE anc(user_id, group_id, depth) AS ({seed} UNION \
             SELECT anc.user_id, m.group_id, 1 FROM scim_group_members m JOIN anc ON m.tenant_id = $1 AND m.member_id = anc.group_id) \
             SELECT anc.user_id, anc.group_id, MIN(anc.depth), g.display_name FROM anc \
             JOIN scim_groups g ON g.tenant_id = $1 AND g.id = anc.group_id \
             GROUP BY anc.user_id, anc.group_id, g.display_name ORDER BY anc.user_id, g.display_name"
        );
        let mut params = vec![P::from(tenant)];
        if let Some(u) = users {
            params.extend(u.iter().map(P::from));
        }
        for r in self.fetch(&sql, &params)? {
            if let Some(doc) = out.get_mut(&r.text(0)) {
                let groups = doc.as_object_mut().map(|o| {
                    o.entry("groups")
                        .or_insert_with(|| Value::Array(Vec::new()))
                });
                if let Some(Value::Array(list)) = groups {
                    list.push(json!({
                        "value": r.text(1),
                        "display": r.text(3),
                        "type": if r.int(2) == 0 { "direct" } else { "indirect" },
                    }));
                }
            }
        }
        Ok(out)
    }

    /// Every user under a group, directly or through nested groups.
    pub(crate) fn users_under(&mut self, tenant: &str, group: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .fetch(
                "WITH RECURSIVE sub(id) AS (SELECT member_id FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 \
                 UNION SELECT m.member_id FROM scim_group_members m JOIN sub ON m.tenant_id = $1 AND m.group_id = sub.id) \
                 SELECT u.id FROM sub JOIN scim_users u ON u.tenant_id = $1 AND u.id = sub.id",
                &params![tenant, group],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect())
    }

    /// Subscriptions whose term changes what they grant at or before `now`.
    pub(crate) fn due_subscriptions(&mut self, now: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(self
            .fetch(
                "SELECT tenant_id, product FROM lic_subscriptions WHERE next_check IS NOT NULL AND next_check <= $1 ORDER BY next_check",
                &params![now],
            )?
            .iter()
            .map(|r| (r.text(0), r.text(1)))
            .collect())
    }
}

impl Store {
    /// Whether a user exists (licensing reads the directory's users; the directory writes
    /// them).
    pub(crate) async fn user_exists(&self, tenant: &str, user: &str) -> StoreResult<bool> {
        Ok(self
            .pool()
            .fetch_opt(
                "SELECT 1 FROM scim_users WHERE tenant_id = $1 AND id = $2",
                &params![tenant, user],
            )
            .await?
            .is_some())
    }
}

impl Store {
    /// The product catalogue.
    pub(crate) async fn products(&self) -> StoreResult<Vec<Product>> {
        self.pool()
            .fetch(
                "SELECT key, name, plans, roles FROM lic_products ORDER BY key",
                &[],
            )
            .await?
            .iter()
            .map(product_from_row)
            .collect()
    }

    /// The named products of the catalogue (those that exist), in key order: what rendering a
    /// user's licenses needs, at a cost that does not grow with the catalogue.
    pub(crate) async fn products_named(&self, keys: &[&str]) -> StoreResult<Vec<Product>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT key, name, plans, roles FROM lic_products WHERE key IN ({}) ORDER BY key",
            placeholders(1, keys.len())
        );
        let params: Vec<P> = keys.iter().map(|k| P::from(*k)).collect();
        self.pool()
            .fetch(&sql, &params)
            .await?
            .iter()
            .map(product_from_row)
            .collect()
    }

    /// A tenant's subscriptions.
    pub(crate) async fn subscriptions(&self, tenant: &str) -> StoreResult<Vec<Subscription>> {
        self.pool()
            .fetch(
                &format!("SELECT {SUB_COLUMNS} FROM lic_subscriptions WHERE tenant_id = $1 ORDER BY product"),
                &params![tenant],
            )
            .await?
            .iter()
            .map(sub_from_row)
            .collect()
    }

    /// Who manages each of a tenant's subscriptions, by product.
    pub(crate) async fn subscription_owners(
        &self,
        tenant: &str,
    ) -> StoreResult<BTreeMap<String, String>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT product, managed_by FROM lic_subscriptions WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?
            .iter()
            .map(|r| (r.text(0), r.text(1)))
            .collect())
    }

    /// A tenant's rules.
    pub(crate) async fn rule_rows(&self, tenant: &str) -> StoreResult<Vec<RuleRow>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT name, filter, product, plan, priority FROM lic_rules WHERE tenant_id = $1 ORDER BY name",
                &params![tenant],
            )
            .await?
            .iter()
            .map(rule_from_row)
            .collect())
    }

    /// Licenses of some users.
    pub async fn licenses_of(
        &self,
        tenant: &str,
        users: &[String],
    ) -> StoreResult<Vec<LicenseRow>> {
        let mut out = Vec::new();
        for chunk in users.chunks(500) {
            let sql = format!(
                "SELECT {LICENSE_COLUMNS} FROM licenses WHERE tenant_id = $1 AND user_id IN ({}) ORDER BY user_id, product",
                placeholders(2, chunk.len())
            );
            let mut params = vec![P::from(tenant)];
            params.extend(chunk.iter().map(P::from));
            out.extend(
                self.pool()
                    .fetch(&sql, &params)
                    .await?
                    .iter()
                    .map(license_from_row),
            );
        }
        Ok(out)
    }

    /// Seat counts per product of a tenant.
    pub async fn lines(&self, tenant: &str) -> StoreResult<BTreeMap<String, Line>> {
        match self
            .pool()
            .fetch_opt(
                "SELECT seat_lines FROM audit_heads WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?
        {
            Some(r) => parse_lines(&r.text(0)),
            None => Ok(BTreeMap::new()),
        }
    }

    /// What seat usage is computed from, for these tenants (`None`: every tenant): their
    /// subscriptions, their kept seat counts, and when each line's longest waiter began
    /// waiting.
    pub(crate) async fn usage_inputs(
        &self,
        tenants: Option<&[String]>,
        with_waits: bool,
    ) -> StoreResult<UsageInputs> {
        let mut out = UsageInputs::default();
        if tenants.is_some_and(|t| t.is_empty()) {
            return Ok(out);
        }
        let (clause, ps) = match tenants {
            Some(ts) => (
                format!("WHERE tenant_id IN ({})", placeholders(1, ts.len())),
                ts.iter().map(P::from).collect::<Vec<_>>(),
            ),
            None => (String::new(), Vec::new()),
        };
        for r in self
            .pool()
            .fetch(
                &format!("SELECT tenant_id, {SUB_COLUMNS} FROM lic_subscriptions {clause} ORDER BY tenant_id, product"),
                &ps,
            )
            .await?
        {
            let sub = sub_from_row(&r.skip(1))?;
            out.subscriptions.push((r.text(0), sub));
        }
        let heads_clause = if clause.is_empty() {
            "WHERE seat_lines <> '{}'".to_string()
        } else {
            format!("{clause} AND seat_lines <> '{{}}'")
        };
        for r in self
            .pool()
            .fetch(
                &format!("SELECT tenant_id, seat_lines FROM audit_heads {heads_clause}"),
                &ps,
            )
            .await?
        {
            out.lines.insert(r.text(0), parse_lines(&r.text(1))?);
        }
        if !with_waits {
            return Ok(out);
        }
        let waiting_clause = if clause.is_empty() {
            "WHERE state = 'waitlisted'".to_string()
        } else {
            format!("{clause} AND state = 'waitlisted'")
        };
        for r in self
            .pool()
            .fetch(
                &format!("SELECT tenant_id, product, MIN(changed) FROM licenses {waiting_clause} GROUP BY tenant_id, product"),
                &ps,
            )
            .await?
        {
            out.oldest_waiting.insert((r.text(0), r.text(1)), r.text(2));
        }
        Ok(out)
    }

    /// A tenant's waiting licenses in line order, per product: (user id, userName, product,
    /// plan, waiting since), at most `limit` per product.
    pub(crate) async fn waitlist(
        &self,
        tenant: &str,
        limit: i64,
    ) -> StoreResult<Vec<(String, Option<String>, String, String, String)>> {
        let rows = self
            .pool()
            .fetch(
                "SELECT l.user_id, u.user_name, l.product, l.plan, l.changed FROM licenses l \
                 LEFT JOIN scim_users u ON u.tenant_id = l.tenant_id AND u.id = l.user_id \
                 WHERE l.tenant_id = $1 AND l.state = 'waitlisted' ORDER BY l.product, l.queue, l.user_id",
                &params![tenant],
            )
            .await?;
        let mut per: BTreeMap<String, i64> = BTreeMap::new();
        Ok(rows
            .iter()
            .filter(|r| {
                let n = per.entry(r.text(2)).or_default();
                *n += 1;
                *n <= limit
            })
            .map(|r| (r.text(0), r.opt_text(1), r.text(2), r.text(3), r.text(4)))
            .collect())
    }

    /// Idle licenses of a tenant (of one product, or all): held seats whose user's last
    /// activity — or, never seen, when the seat was first held — is before the cutoff of the
    /// subscription's `idle_after_days` (`cutoffs`: days → instant). Longest idle first, at
    /// most `limit`, with how many there are.
    pub(crate) async fn idle_licenses(
        &self,
        tenant: &str,
        product: Option<&str>,
        cutoffs: &[(u32, String)],
        limit: i64,
    ) -> StoreResult<(Vec<IdleRow>, usize)> {
        if cutoffs.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let (cte, mut ps) = cutoff_table(cutoffs, 2);
        ps.insert(0, P::from(tenant));
        let product_clause = match product {
            Some(p) => {
                ps.push(P::from(p));
                format!("AND l.product = ${}", ps.len())
            }
            None => String::new(),
        };
        let rows = self
            .pool()
            .fetch(
                &format!(
                    "{cte} SELECT l.user_id, u.user_name, l.product, l.plan, a.last_seen, COALESCE(l.held_since, l.changed) \
                     FROM lic_subscriptions s JOIN c ON c.days = s.idle_after_days \
                     JOIN licenses l ON l.tenant_id = s.tenant_id AND l.product = s.product AND l.state = 'active' AND l.queue <> 0 \
                     LEFT JOIN user_activity a ON a.tenant_id = l.tenant_id AND a.user_id = l.user_id \
                     LEFT JOIN scim_users u ON u.tenant_id = l.tenant_id AND u.id = l.user_id \
                     WHERE s.tenant_id = $1 {product_clause} \
                     AND COALESCE(a.last_seen, l.held_since, l.changed) < c.cutoff \
                     ORDER BY COALESCE(a.last_seen, l.held_since, l.changed), l.user_id, l.product"
                ),
                &ps,
            )
            .await?;
        let total = rows.len();
        Ok((
            rows.iter()
                .take(limit.max(0) as usize)
                .map(|r| IdleRow {
                    user_id: r.text(0),
                    user_name: r.opt_text(1),
                    product: r.text(2),
                    plan: r.text(3),
                    last_seen: r.opt_text(4),
                    held_since: r.text(5),
                })
                .collect(),
            total,
        ))
    }

    /// Idle seats per tenant and product, for these tenants (`None`: every tenant); see
    /// [`Store::idle_licenses`].
    pub(crate) async fn idle_counts(
        &self,
        tenants: Option<&[String]>,
        cutoffs: &[(u32, String)],
    ) -> StoreResult<BTreeMap<(String, String), usize>> {
        let mut out = BTreeMap::new();
        if cutoffs.is_empty() || tenants.is_some_and(|t| t.is_empty()) {
            return Ok(out);
        }
        let (cte, mut ps) = cutoff_table(cutoffs, 1);
        let tenant_clause = match tenants {
            Some(ts) => {
                let start = ps.len() + 1;
                ps.extend(ts.iter().map(P::from));
                format!("AND s.tenant_id IN ({})", placeholders(start, ts.len()))
            }
            None => String::new(),
        };
        for r in self
            .pool()
            .fetch(
                &format!(
                    "{cte} SELECT s.tenant_id, s.product, COUNT(*) \
                     FROM lic_subscriptions s JOIN c ON c.days = s.idle_after_days \
                     JOIN licenses l ON l.tenant_id = s.tenant_id AND l.product = s.product AND l.state = 'active' AND l.queue <> 0 \
                     LEFT JOIN user_activity a ON a.tenant_id = l.tenant_id AND a.user_id = l.user_id \
                     WHERE COALESCE(a.last_seen, l.held_since, l.changed) < c.cutoff {tenant_clause} \
                     GROUP BY s.tenant_id, s.product"
                ),
                &ps,
            )
            .await?
        {
            out.insert((r.text(0), r.text(1)), r.int(2) as usize);
        }
        Ok(out)
    }

    /// Counts a tenant's licenses row by row, (seat holders, waiting, seat-free) per product
    /// (for checks that the kept counts are right).
    pub async fn count_licenses(
        &self,
        tenant: &str,
    ) -> StoreResult<BTreeMap<String, (usize, usize, usize)>> {
        Ok(line_counts(
            &self.pool().fetch(COUNT_LINES, &params![tenant]).await?,
        ))
    }
}

impl Store {
    /// The latest `limit` license records of a user, oldest first. A license's records form
    /// a chain (each names the one before it in `prev`): chains start at the current
    /// licenses' latest records (`heads`) and at the user's revocations (indexed), and are
    /// read a link at a time for all of them at once. Records written before the chains
    /// existed (no `prev`) are found by scanning the tenant's older license records.
    pub(crate) async fn license_history(
        &self,
        tenant: &str,
        user: &str,
        products: &[String],
        heads: &[i64],
        limit: usize,
    ) -> StoreResult<Vec<crate::kernel::chain::AuditRow>> {
        const COLUMNS: &str = "tenant_id, seq, at, actor, action, resource_type, resource_id, \
                               request_id, before_doc, after_doc, prev_hash, hash";
        let ids: Vec<String> = products.iter().map(|p| format!("{user}/{p}")).collect();
        let mut frontier: Vec<i64> = heads.to_vec();
        if !ids.is_empty() {
            // Literal conditions: the planner uses the partial index on revocations.
            let sql = format!(
                "SELECT seq FROM audit_log WHERE tenant_id = $1 AND resource_type = 'License' \
                 AND action = 'license.revoked' AND resource_id IN ({}) ORDER BY seq DESC LIMIT {limit}",
                placeholders(2, ids.len())
            );
            let mut params = vec![P::from(tenant)];
            params.extend(ids.iter().map(P::from));
            frontier.extend(
                self.pool
                    .fetch(&sql, &params)
                    .await?
                    .iter()
                    .map(|r| r.int(0)),
            );
        }
        let mut found = std::collections::BTreeMap::<i64, crate::kernel::chain::AuditRow>::new();
        while !frontier.is_empty() && found.len() < limit {
            frontier.sort_unstable();
            frontier.dedup();
            frontier.retain(|s| !found.contains_key(s));
            if frontier.is_empty() {
                break;
            }
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq IN ({})",
                placeholders(2, frontier.len())
            );
            let mut params = vec![P::from(tenant)];
            params.extend(frontier.iter().map(|s| P::Int(*s)));
            let mut next = Vec::new();
            for row in self.pool.fetch(&sql, &params).await? {
                let rec = audit_from_row(&row);
                if rec.resource_type != "License" || !ids.contains(&rec.resource_id) {
                    continue;
                }
                match license_prev(&rec) {
                    Some(Some(prev)) => next.push(prev),
                    Some(None) => {}
                    None => {
                        let sql = format!(
                            "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq < $2 \
                             AND resource_type = 'License' AND resource_id = $3 ORDER BY seq DESC LIMIT {limit}"
                        );
                        let older = self
                            .pool
                            .fetch(&sql, &params![tenant, rec.seq, rec.resource_id.as_str()])
                            .await?;
                        for r in older {
                            let r = audit_from_row(&r);
                            found.insert(r.seq, r);
                        }
                    }
                }
                found.insert(rec.seq, rec);
            }
            frontier = next;
        }
        let skip = found.len().saturating_sub(limit);
        Ok(found.into_values().skip(skip).collect())
    }
}

/// The previous record a license record names: `Some(None)` for the first of its chain,
/// `None` for a record written before records named their predecessor.
fn license_prev(rec: &crate::kernel::chain::AuditRow) -> Option<Option<i64>> {
    let doc = rec.after.as_deref().or(rec.before.as_deref())?;
    let doc: serde_json::Value = serde_json::from_str(doc).ok()?;
    doc.get("prev").map(serde_json::Value::as_i64)
}

impl Tx<'_> {
    /// The ends_at for which `subscription.expiring` was sent.
    pub(crate) fn expiring_sent(
        &mut self,
        tenant: &str,
        product: &str,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .fetch_opt(
                "SELECT expiring_sent FROM lic_subscriptions WHERE tenant_id = $1 AND product = $2",
                &params![tenant, product],
            )?
            .and_then(|r| r.opt_text(0)))
    }

    /// Notes that `subscription.expiring` was sent for this ends_at.
    pub(crate) fn set_expiring_sent(
        &mut self,
        tenant: &str,
        product: &str,
        ends: &str,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE lic_subscriptions SET expiring_sent = $3 WHERE tenant_id = $1 AND product = $2",
            &params![tenant, product, ends],
        )?;
        Ok(())
    }
}

impl Tx<'_> {
    /// The id of a tenant's user named by id, userName (any case) or externalId.
    pub(crate) fn find_user(&mut self, tenant: &str, name: &str) -> StoreResult<Option<String>> {
        Ok(self
            .fetch_opt(
                "SELECT id FROM scim_users WHERE tenant_id = $1 AND id = $2 \
                 UNION SELECT id FROM scim_users WHERE tenant_id = $1 AND user_name_lc = $3 \
                 UNION SELECT id FROM scim_users WHERE tenant_id = $1 AND external_id = $2 LIMIT 1",
                &params![tenant, name, name.to_lowercase()],
            )?
            .map(|r| r.text(0)))
    }
}

impl Store {
    /// A tenant's pins: (user, pin), by user and product.
    pub(crate) async fn pins(&self, tenant: &str) -> StoreResult<Vec<(String, Pin)>> {
        self.pool()
            .fetch(
                &format!("SELECT {PIN_COLUMNS} FROM lic_pins WHERE tenant_id = $1 ORDER BY user_id, product"),
                &params![tenant],
            )
            .await?
            .iter()
            .map(|r| Ok((r.text(0), pin_from_row(r)?)))
            .collect()
    }
}

/// A tenant's licenses by product, state and whether they take a seat (see [`line_counts`]).
const COUNT_LINES: &str = "SELECT product, state, CASE WHEN queue = 0 THEN 1 ELSE 0 END AS free, COUNT(*) \
     FROM licenses WHERE tenant_id = $1 GROUP BY product, state, free";

/// (seat holders, waiting, seat-free) per product from [`COUNT_LINES`]; reclaimed licenses
/// are in no line.
fn line_counts(rows: &[Row]) -> BTreeMap<String, (usize, usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for r in rows {
        let n = usize::try_from(r.int(3)).unwrap_or_default();
        let e = out.entry(r.text(0)).or_default();
        match (r.text(1).as_str(), r.int(2) == 1) {
            ("active", true) => e.2 += n,
            ("active", false) => e.0 += n,
            ("waitlisted", _) => e.1 += n,
            _ => {}
        }
    }
    out
}

/// A user the deprovision brake holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldRow {
    /// The user's id.
    pub user: String,
    /// Their userName.
    #[serde(rename = "userName")]
    pub user_name: String,
    /// `deactivated` or `deleted`.
    pub gone: String,
    /// `pending` (awaiting a decision) or `reserved` (rejected: kept until they come back).
    pub state: String,
    /// Held since.
    pub since: String,
}

impl Tx<'_> {
    /// A tenant's settings (`{}` when none were set).
    pub(crate) fn tenant_settings(&mut self, tenant: &str) -> StoreResult<Value> {
        let text = self
            .fetch_opt(
                "SELECT settings FROM tenants WHERE id = $1",
                &params![tenant],
            )?
            .map(|r| r.text(0))
            .unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or_else(|_| json!({})))
    }

    /// Replaces a tenant's settings.
    pub(crate) fn put_tenant_settings(
        &mut self,
        tenant: &str,
        settings: &Value,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE tenants SET settings = $2 WHERE id = $1",
            &params![tenant, settings.to_string()],
        )?;
        Ok(())
    }

    /// When an operator last decided on held users (deprovisions before it do not count).
    pub(crate) fn brake_since(&mut self, tenant: &str) -> StoreResult<Option<String>> {
        Ok(self
            .fetch_opt(
                "SELECT brake_since FROM tenants WHERE id = $1",
                &params![tenant],
            )?
            .and_then(|r| r.opt_text(0)))
    }

    /// Records an operator's decision on held users.
    pub(crate) fn set_brake_since(&mut self, tenant: &str, at: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE tenants SET brake_since = $2 WHERE id = $1",
            &params![tenant, at],
        )?;
        Ok(())
    }

    /// Deprovisions applied after `since`.
    pub(crate) fn deprovisions_since(&mut self, tenant: &str, since: &str) -> StoreResult<i64> {
        Ok(self
            .fetch_opt(
                "SELECT COUNT(*) FROM lic_deprovisions WHERE tenant_id = $1 AND at > $2",
                &params![tenant, since],
            )?
            .map_or(0, |r| r.int(0)))
    }

    /// Records an applied deprovision, forgetting those older than `forget_before`.
    pub(crate) fn record_deprovision(
        &mut self,
        tenant: &str,
        user: &str,
        at: &str,
        forget_before: &str,
    ) -> StoreResult<()> {
        self.execute(
            "DELETE FROM lic_deprovisions WHERE tenant_id = $1 AND at < $2",
            &params![tenant, forget_before],
        )?;
        self.execute(
            "INSERT INTO lic_deprovisions (tenant_id, at, user_id) VALUES ($1, $2, $3)",
            &params![tenant, at, user],
        )?;
        Ok(())
    }

    /// How many of a tenant's users are active.
    pub(crate) fn active_users(&mut self, tenant: &str) -> StoreResult<i64> {
        Ok(self
            .fetch_opt(
                "SELECT COUNT(*) FROM scim_users WHERE tenant_id = $1 AND active = 1",
                &params![tenant],
            )?
            .map_or(0, |r| r.int(0)))
    }

    /// Holds a deprovisioned user's seats.
    pub(crate) fn insert_held(
        &mut self,
        tenant: &str,
        row: &HeldRow,
        external_id: Option<&str>,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO lic_held (tenant_id, user_id, user_name, user_name_lc, external_id, gone, state, since) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
             gone = excluded.gone, state = excluded.state",
            &params![
                tenant,
                &row.user,
                &row.user_name,
                row.user_name.to_lowercase(),
                external_id.map(str::to_string),
                &row.gone,
                &row.state,
                &row.since
            ],
        )?;
        Ok(())
    }

    /// A tenant's held users, oldest first.
    pub(crate) fn held(&mut self, tenant: &str) -> StoreResult<Vec<HeldRow>> {
        Ok(self
            .fetch(
                "SELECT user_id, user_name, gone, state, since FROM lic_held WHERE tenant_id = $1 ORDER BY since, user_id",
                &params![tenant],
            )?
            .iter()
            .map(held_from_row)
            .collect())
    }

    /// Moves every held user of one state to another; returns how many.
    pub(crate) fn set_held_state(
        &mut self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> StoreResult<u64> {
        self.execute(
            "UPDATE lic_held SET state = $3 WHERE tenant_id = $1 AND state = $2",
            &params![tenant, from, to],
        )
    }

    /// Lets a held user go (released, or back); returns whether they were held.
    pub(crate) fn delete_held(&mut self, tenant: &str, user: &str) -> StoreResult<bool> {
        Ok(self.execute(
            "DELETE FROM lic_held WHERE tenant_id = $1 AND user_id = $2",
            &params![tenant, user],
        )? > 0)
    }

    /// A held deleted user the identity provider sends back (same userName, any case, or
    /// externalId).
    pub(crate) fn held_returning(
        &mut self,
        tenant: &str,
        user_name: &str,
        external_id: Option<&str>,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .fetch_opt(
                "SELECT user_id FROM lic_held WHERE tenant_id = $1 AND gone = 'deleted' \
                 AND (user_name_lc = $2 OR (external_id IS NOT NULL AND external_id = $3)) ORDER BY since LIMIT 1",
                &params![tenant, user_name.to_lowercase(), external_id.unwrap_or("")],
            )?
            .map(|r| r.text(0)))
    }

    /// Gives a user's licenses to another user id (a deleted user created again).
    pub(crate) fn move_licenses(&mut self, tenant: &str, from: &str, to: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE licenses SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2",
            &params![tenant, from, to],
        )?;
        Ok(())
    }
}

fn held_from_row(r: &Row) -> HeldRow {
    HeldRow {
        user: r.text(0),
        user_name: r.text(1),
        gone: r.text(2),
        state: r.text(3),
        since: r.text(4),
    }
}

impl Store {
    /// A tenant's held users, oldest first.
    pub(crate) async fn held(&self, tenant: &str) -> StoreResult<Vec<HeldRow>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT user_id, user_name, gone, state, since FROM lic_held WHERE tenant_id = $1 ORDER BY since, user_id",
                &params![tenant],
            )
            .await?
            .iter()
            .map(held_from_row)
            .collect())
    }
}

impl Tx<'_> {
    /// Up to `limit` seat holders of a product idle since before `cutoff`, longest idle first,
    /// with when each was last active (or, never, since when they held the seat).
    pub(crate) fn idle_holders(
        &mut self,
        tenant: &str,
        product: &str,
        cutoff: &str,
        limit: i64,
    ) -> StoreResult<Vec<(LicenseRow, String)>> {
        Ok(self
            .fetch(
                "SELECT l.user_id, l.product, l.plan, l.state, l.queue, l.changed, l.reason, l.explain, l.audit_seq, \
                 COALESCE(a.last_seen, l.held_since, l.changed) AS since FROM licenses l \
                 LEFT JOIN user_activity a ON a.tenant_id = l.tenant_id AND a.user_id = l.user_id \
                 WHERE l.tenant_id = $1 AND l.product = $2 AND l.state = 'active' AND l.queue <> 0 \
                 AND COALESCE(a.last_seen, l.held_since, l.changed) < $3 \
                 ORDER BY since, l.user_id LIMIT $4",
                &params![tenant, product, cutoff, limit],
            )?
            .iter()
            .map(|r| (license_from_row(r), r.text(9)))
            .collect())
    }

    /// Records users as active at `at` (never moving a later time back).
    pub(crate) fn record_seen(
        &mut self,
        tenant: &str,
        users: &[String],
        at: &str,
    ) -> StoreResult<()> {
        self.reaches_nothing_rendered();
        for chunk in users.chunks(300) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, ${}, $2)", i + 3))
                .collect();
            let mut ps = params![tenant, at].to_vec();
            ps.extend(chunk.iter().map(|u| P::from(u.as_str())));
            self.execute(
                &format!(
                    "INSERT INTO user_activity (tenant_id, user_id, last_seen) VALUES {} \
                     ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seen = excluded.last_seen \
                     WHERE excluded.last_seen > user_activity.last_seen",
                    values.join(", ")
                ),
                &ps,
            )?;
        }
        Ok(())
    }
}

impl Store {
    /// Every subscription that reclaims idle seats: (tenant, product, idle_after_days).
    pub(crate) async fn reclaiming(&self) -> StoreResult<Vec<(String, String, i64)>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT tenant_id, product, idle_after_days FROM lic_subscriptions WHERE on_idle = 'reclaim' \
                 ORDER BY tenant_id, product",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.text(0), r.text(1), r.int(2)))
            .collect())
    }
}

/// A pending claim of an import: a seat for a user not in the directory yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClaimRow {
    /// The user as the import named them (lower case).
    pub user: String,
    /// The product.
    pub product: String,
    /// The plan.
    pub plan: String,
    /// When the seat was assigned in the system it came from.
    pub assigned_at: String,
}

impl Tx<'_> {
    /// Keeps a claim until its user arrives (replacing one for the same user and product).
    pub(crate) fn put_claim(&mut self, tenant: &str, c: &ClaimRow, now: &str) -> StoreResult<()> {
        self.execute(
            "INSERT INTO lic_claims (tenant_id, user_ref_lc, product, plan, assigned_at, created) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, user_ref_lc, product) DO UPDATE SET \
             plan = excluded.plan, assigned_at = excluded.assigned_at",
            &params![tenant, &c.user, &c.product, &c.plan, &c.assigned_at, now],
        )?;
        Ok(())
    }

    /// Whether a tenant has pending claims.
    pub(crate) fn has_claims(&mut self, tenant: &str) -> StoreResult<bool> {
        Ok(self
            .fetch_opt(
                "SELECT 1 FROM lic_claims WHERE tenant_id = $1 LIMIT 1",
                &params![tenant],
            )?
            .is_some())
    }

    /// Takes (removes and returns) the claims naming any of these references (lower case).
    pub(crate) fn take_claims(
        &mut self,
        tenant: &str,
        refs: &[String],
    ) -> StoreResult<Vec<ClaimRow>> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let list = placeholders(2, refs.len());
        let mut ps = vec![P::from(tenant)];
        ps.extend(refs.iter().map(|r| P::from(r.as_str())));
        let rows: Vec<ClaimRow> = self
            .fetch(
                &format!(
                    "SELECT user_ref_lc, product, plan, assigned_at FROM lic_claims \
                     WHERE tenant_id = $1 AND user_ref_lc IN ({list}) ORDER BY assigned_at, product"
                ),
                &ps,
            )?
            .iter()
            .map(|r| ClaimRow {
                user: r.text(0),
                product: r.text(1),
                plan: r.text(2),
                assigned_at: r.text(3),
            })
            .collect();
        if !rows.is_empty() {
            self.execute(
                &format!("DELETE FROM lic_claims WHERE tenant_id = $1 AND user_ref_lc IN ({list})"),
                &ps,
            )?;
        }
        Ok(rows)
    }

    /// Every user's emails (lower case) of a tenant: (email, user id). Read once per import,
    /// only when a row names a user by neither id, userName nor externalId.
    pub(crate) fn user_emails(&mut self, tenant: &str) -> StoreResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for r in self.fetch(
            "SELECT id, doc FROM scim_users WHERE tenant_id = $1",
            &params![tenant],
        )? {
            let doc: Value = serde_json::from_str(&r.text(1)).unwrap_or(Value::Null);
            for e in doc["emails"].as_array().into_iter().flatten() {
                if let Some(v) = e["value"].as_str() {
                    out.push((v.to_lowercase(), r.text(0)));
                }
            }
        }
        Ok(out)
    }
}

impl Store {
    /// A tenant's pending claims.
    pub(crate) async fn claims(&self, tenant: &str) -> StoreResult<Vec<ClaimRow>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT user_ref_lc, product, plan, assigned_at FROM lic_claims WHERE tenant_id = $1 \
                 ORDER BY assigned_at, user_ref_lc, product",
                &params![tenant],
            )
            .await?
            .iter()
            .map(|r| ClaimRow {
                user: r.text(0),
                product: r.text(1),
                plan: r.text(2),
                assigned_at: r.text(3),
            })
            .collect())
    }
}

impl Tx<'_> {
    /// Every user's userName: (id, userName).
    pub(crate) fn user_names(&mut self, tenant: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(self
            .fetch(
                "SELECT id, user_name FROM scim_users WHERE tenant_id = $1",
                &params![tenant],
            )?
            .iter()
            .map(|r| (r.text(0), r.text(1)))
            .collect())
    }

    /// A tenant's kept seat counts, as stored (read in the transaction).
    pub(crate) fn seat_lines_of(&mut self, tenant: &str) -> StoreResult<BTreeMap<String, Line>> {
        let text = self
            .fetch_opt(
                "SELECT seat_lines FROM audit_heads WHERE tenant_id = $1",
                &params![tenant],
            )?
            .map(|r| r.text(0))
            .unwrap_or_else(|| "{}".into());
        parse_lines(&text)
    }

    /// A tenant's licenses counted row by row, (seat holders, waiting, seat-free) per product.
    pub(crate) fn count_lines(
        &mut self,
        tenant: &str,
    ) -> StoreResult<BTreeMap<String, (usize, usize, usize)>> {
        Ok(line_counts(&self.fetch(COUNT_LINES, &params![tenant])?))
    }

    /// The last queue position a product line gave.
    pub(crate) fn max_queue(&mut self, tenant: &str, product: &str) -> StoreResult<i64> {
        Ok(self
            .fetch_opt(
                "SELECT MAX(queue) FROM licenses WHERE tenant_id = $1 AND product = $2",
                &params![tenant, product],
            )?
            .map_or(0, |r| r.int(0)))
    }
}

impl Store {
    /// Every tenant's id.
    pub(crate) async fn tenant_ids(&self) -> StoreResult<Vec<String>> {
        Ok(self
            .pool()
            .fetch("SELECT id FROM tenants ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect())
    }
}

impl Tx<'_> {
    /// Every license of one product line.
    pub(crate) fn line_rows(
        &mut self,
        tenant: &str,
        product: &str,
    ) -> StoreResult<Vec<LicenseRow>> {
        Ok(self
            .fetch(
                &format!(
                    "SELECT {LICENSE_COLUMNS} FROM licenses WHERE tenant_id = $1 AND product = $2"
                ),
                &params![tenant, product],
            )?
            .iter()
            .map(license_from_row)
            .collect())
    }
}

impl Store {
    /// A tenant's settings (`{}` when none were set), or `None` for an unknown tenant.
    pub(crate) async fn tenant_settings(&self, tenant: &str) -> StoreResult<Option<Value>> {
        Ok(self
            .pool()
            .fetch_opt(
                "SELECT settings FROM tenants WHERE id = $1",
                &params![tenant],
            )
            .await?
            .map(|r| serde_json::from_str(&r.text(0)).unwrap_or_else(|_| json!({}))))
    }
}
