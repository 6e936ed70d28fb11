//! Changes to the licensing model — the catalogue, a tenant's subscriptions and rules — each
//! applied in one transaction together with the license changes they cause, and the
//! scheduler's term transitions. Shared by the admin API and the CLI.

use std::collections::{BTreeMap, BTreeSet};

use licensing::lifecycle::{self, Phase};
use licensing::model::{Enforcement, Key, Pin, Product, Status, Subscription};
use licensing::spec::{self, Spec, TenantSpec};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::kernel::catalogue::EventType;
use crate::kernel::clock::Clock;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::{NewAudit, Store, StoreError, Tx};
use crate::licenses::decide::{Cause, Outcome, Scope, relicense};
use crate::licenses::roles::RoleRuleRow;
use crate::licenses::store::{RuleRow, pin_json, rule_of, time_text};
use crate::licenses::usage::{self, Finding, UsageRow};

pub use crate::kernel::store::Actor;
pub use crate::licenses::store::LicenseRow;

/// The result of applying (or planning) a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    /// Nothing was written.
    pub dry_run: bool,
    /// Added (`+`), changed (`~`) and removed (`-`) plans, subscriptions and rules.
    pub changes: Vec<String>,
    /// Declared changes to subscriptions a billing system manages: refused unless forced
    /// (a dry run lists them and plans as if forced).
    pub conflicts: Vec<String>,
    /// License changes per tenant.
    pub licenses: BTreeMap<String, Outcome>,
}

/// Ends a transaction: roll back with a result (dry runs) or with an error.
enum Abort<T> {
    Rollback(T),
    Failed(ApiError),
}

impl<T> From<StoreError> for Abort<T> {
    fn from(e: StoreError) -> Self {
        Abort::Failed(e.into())
    }
}

impl<T> From<ApiError> for Abort<T> {
    fn from(e: ApiError) -> Self {
        Abort::Failed(e)
    }
}

/// Runs `f` in one transaction; a dry run rolls everything back and still returns the result.
pub(crate) async fn transact<T, F>(store: &Store, dry_run: bool, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> ApiResult<T> + Send + 'static,
{
    let out = store
        .write(move |tx| -> Result<T, Abort<T>> {
            let out = f(tx)?;
            if dry_run {
                Err(Abort::Rollback(out))
            } else {
                Ok(out)
            }
        })
        .await;
    match out {
        Ok(v) | Err(Abort::Rollback(v)) => Ok(v),
        Err(Abort::Failed(e)) => Err(e),
    }
}

pub(crate) fn cause(tenant: &str, actor: &Actor, action: &str, now: OffsetDateTime) -> Cause {
    Cause {
        tenant: tenant.to_string(),
        actor: actor.name.clone(),
        request_id: actor.request_id.clone(),
        action: action.to_string(),
        now,
    }
}

/// A subscription as the API shows it.
pub fn subscription_json(s: &Subscription) -> Value {
    json!({
        "product": s.product.as_str(),
        "plan": s.plan.as_str(),
        "seats": s.seats,
        "starts_at": time_text(s.starts_at),
        "ends_at": s.ends_at.map(time_text),
        "status": s.status.as_str(),
        "grace_days": s.grace_days,
        "on_expiry": s.on_expiry.to_string(),
        "enforcement": match s.enforcement { Enforcement::Hard => "hard", Enforcement::Soft => "soft" },
        "idle_after_days": s.idle_after_days,
        "on_idle": s.on_idle.as_str(),
    })
}

/// Who manages a subscription: the admin API.
pub const BY_ADMIN: &str = "admin";
/// Who manages a subscription: a model file (`apply`, `PUT /api/v1/model`).
pub const BY_APPLY: &str = "apply";

/// The owner a billing source writes (`billing:generic`, `billing:stripe`).
pub fn by_billing(source: &str) -> String {
    format!("billing:{source}")
}

/// Whether a billing system manages a subscription with this owner.
fn billing_owned(owner: Option<&String>) -> bool {
    owner.is_some_and(|o| o.starts_with("billing:"))
}

fn managed_elsewhere(tenant: &str, product: &str, owner: &str) -> ApiError {
    ApiError::Conflict(format!(
        "subscription {product} of tenant {tenant} is managed by {owner}: change it there, or \
         force it (?force=true, seatkeeper apply --force); the billing system's next event still applies"
    ))
}

/// How an admin write treats the subscription there is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Write {
    /// Merge the body's fields over the stored subscription (`PATCH`) instead of replacing
    /// it (`PUT`).
    pub merge: bool,
    /// Change it even when a billing system manages it.
    pub force: bool,
}

/// Audits a put of a named model item (a rule, a role rule) if it changed:
/// `{prefix}.create` or `{prefix}.update`, with its event.
#[allow(clippy::too_many_arguments)]
fn audit_put<T: serde::Serialize + PartialEq>(
    tx: &mut Tx<'_>,
    tenant: &str,
    actor: &Actor,
    now: &str,
    (prefix, kind): (&str, &str),
    name: &str,
    before: Option<&T>,
    after: &T,
) -> ApiResult<()> {
    if before == Some(after) {
        return Ok(());
    }
    let action = format!(
        "{prefix}.{}",
        if before.is_some() { "update" } else { "create" }
    );
    audit_model(
        tx,
        tenant,
        actor,
        now,
        &action,
        kind,
        name,
        before.map(|b| json!(b)),
        Some(json!(after)),
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn audit_model(
    tx: &mut Tx<'_>,
    tenant: &str,
    actor: &Actor,
    now: &str,
    action: &str,
    kind: &str,
    id: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> ApiResult<()> {
    tx.audit(NewAudit {
        tenant_id: tenant,
        at: now,
        actor: &actor.name,
        action,
        resource_type: kind,
        resource_id: id,
        request_id: &actor.request_id,
        before: before.as_ref().map(Value::to_string),
        after: after.as_ref().map(Value::to_string),
    })?;
    let event = if kind == "Subscription" {
        EventType::SubscriptionChanged
    } else {
        EventType::RuleChanged
    };
    let payload = json!({
        "request_id": actor.request_id, "action": action, "before": before, "after": after,
    });
    tx.outbox(tenant, event, kind, id, &payload.to_string(), now)?;
    Ok(())
}

/// Records where each subscription stands at `now`: `expired` once its term and grace are
/// over, and when the scheduler should look next.
pub fn settle_terms(
    tx: &mut Tx<'_>,
    tenant: &str,
    actor: &Actor,
    now: OffsetDateTime,
) -> ApiResult<()> {
    let now_text = time_text(now);
    let notice = expiry_notice(tx)?;
    for sub in tx.subscriptions(tenant)? {
        let mut status = sub.status;
        if lifecycle::phase(&sub, now) == Phase::Over && status != Status::Expired {
            status = Status::Expired;
            let mut after = sub.clone();
            after.status = status;
            audit_model(
                tx,
                tenant,
                actor,
                &now_text,
                "subscription.expire",
                "Subscription",
                sub.product.as_str(),
                Some(subscription_json(&sub)),
                Some(subscription_json(&after)),
            )?;
        }
        // `subscription.expiring`, once per term end, `notice` before it.
        let mut notice_at = None;
        if status != Status::Expired
            && let Some(end) = sub.ends_at
        {
            let end_text = time_text(end);
            let sent = tx.expiring_sent(tenant, sub.product.as_str())?;
            if sent.as_deref() != Some(end_text.as_str()) {
                if now >= end - notice && lifecycle::phase(&sub, now) != Phase::Over {
                    let payload = json!({
                        "product": sub.product.as_str(), "plan": sub.plan.as_str(),
                        "status": status.as_str(), "ends_at": end_text,
                        "access_ends_at": lifecycle::access_ends(&sub).map(time_text),
                        "on_expiry": sub.on_expiry.to_string(),
                        "request_id": actor.request_id,
                    });
                    tx.outbox(
                        tenant,
                        EventType::SubscriptionExpiring,
                        "Subscription",
                        sub.product.as_str(),
                        &payload.to_string(),
                        &now_text,
                    )?;
                    tx.set_expiring_sent(tenant, sub.product.as_str(), &end_text)?;
                } else if now < end - notice {
                    notice_at = Some(end - notice);
                }
            }
        }
        let next = if status == Status::Expired {
            None
        } else {
            [lifecycle::next_transition(&sub, now), notice_at]
                .into_iter()
                .flatten()
                .min()
                .map(time_text)
        };
        tx.set_next_check(tenant, sub.product.as_str(), next, status.as_str())?;
    }
    Ok(())
}

/// Settings key: days before a term ends that `subscription.expiring` is sent.
pub const EXPIRY_NOTICE_DAYS: &str = "events.expiry_notice_days";

/// How long before a term's end `subscription.expiring` is sent (7 days unless set).
fn expiry_notice(tx: &mut Tx<'_>) -> ApiResult<time::Duration> {
    let days = tx
        .fetch_opt(
            "SELECT value FROM settings WHERE key = $1",
            &crate::params![EXPIRY_NOTICE_DAYS],
        )?
        .and_then(|r| r.text(0).parse::<i64>().ok())
        .unwrap_or(7)
        .clamp(0, 3650);
    Ok(time::Duration::days(days))
}

pub(crate) fn require_tenant(tx: &mut Tx<'_>, tenant: &str) -> ApiResult<()> {
    let found = tx.fetch_opt(
        "SELECT id FROM tenants WHERE id = $1",
        &crate::params![tenant],
    )?;
    if found.is_none() {
        return Err(ApiError::NotFound(format!("tenant {tenant} not found")));
    }
    Ok(())
}

/// `PUT` (or with `merge`, `PATCH`) `/api/v1/tenants/{id}/subscriptions/{product}`.
async fn put_subscription(
    store: &Store,
    clock: &dyn Clock,
    actor: Actor,
    (tenant, product): (&str, &str),
    body: Value,
    how: Write,
) -> ApiResult<(Value, Outcome)> {
    let now = clock.now();
    let (tenant, product) = (tenant.to_string(), product.to_string());
    transact(store, false, move |tx| {
        require_tenant(tx, &tenant)?;
        tx.lock_tenant(&tenant)?;
        tx.bump_model(&tenant)?;
        let products = tx.products()?;
        if !products.iter().any(|p| p.key.as_str() == product) {
            return Err(ApiError::Model(licensing::Error::Invalid(format!(
                "no product {product} in the catalogue; declare it with PUT /api/v1/model or seatkeeper apply"
            ))));
        }
        let before = tx
            .subscriptions(&tenant)?
            .into_iter()
            .find(|s| s.product.as_str() == product);
        let owner = tx.subscription_owners(&tenant)?.remove(&product);
        if billing_owned(owner.as_ref()) && !how.force {
            return Err(managed_elsewhere(&tenant, &product, owner.as_deref().unwrap_or_default()));
        }
        let body = match (&before, how.merge) {
            (Some(b), true) => merged_fields(subscription_json(b), &body)?,
            (None, true) => {
                return Err(ApiError::NotFound(format!(
                    "tenant {tenant} has no subscription to {product}; PUT creates one"
                )));
            }
            (_, false) => body,
        };
        let sub = spec::subscription_from_json(&product, &body, &products)?;
        let now_text = time_text(now);
        tx.put_subscription(&tenant, &sub, None, &now_text)?;
        tx.clear_billing_anchor(&tenant, &product)?;
        // A forced change leaves a billing system in charge: its next event still applies.
        if !billing_owned(owner.as_ref()) {
            tx.set_subscription_owner(&tenant, &product, BY_ADMIN)?;
        }
        if before.as_ref() != Some(&sub) {
            audit_model(
                tx,
                &tenant,
                &actor,
                &now_text,
                if before.is_some() { "subscription.update" } else { "subscription.create" },
                "Subscription",
                &product,
                before.as_ref().map(subscription_json),
                Some(subscription_json(&sub)),
            )?;
        }
        settle_terms(tx, &tenant, &actor, now)?;
        let outcome = relicense(tx, &cause(&tenant, &actor, "subscription.put", now), Scope::All)?;
        let stored = tx
            .subscriptions(&tenant)?
            .into_iter()
            .find(|s| s.product == sub.product)
            .unwrap_or(sub);
        Ok((subscription_json(&stored), outcome))
    })
    .await
}

/// A `PATCH` body's fields over the stored subscription (`null` clears a field).
fn merged_fields(mut stored: Value, patch: &Value) -> ApiResult<Value> {
    let (Some(base), Some(fields)) = (stored.as_object_mut(), patch.as_object()) else {
        return Err(ApiError::Model(licensing::Error::Invalid(
            "a subscription patch must be a JSON object of the fields to change".into(),
        )));
    };
    for (k, v) in fields {
        if v.is_null() {
            base.remove(k);
        } else {
            base.insert(k.clone(), v.clone());
        }
    }
    Ok(stored)
}

/// `DELETE /api/v1/tenants/{id}/subscriptions/{product}`: every license of it is freed.
async fn delete_subscription(
    store: &Store,
    clock: &dyn Clock,
    actor: Actor,
    (tenant, product): (&str, &str),
    force: bool,
) -> ApiResult<Outcome> {
    let now = clock.now();
    let (tenant, product) = (tenant.to_string(), product.to_string());
    transact(store, false, move |tx| {
        require_tenant(tx, &tenant)?;
        tx.lock_tenant(&tenant)?;
        tx.bump_model(&tenant)?;
        let before = tx
            .subscriptions(&tenant)?
            .into_iter()
            .find(|s| s.product.as_str() == product)
            .ok_or_else(|| {
                ApiError::NotFound(format!("tenant {tenant} has no subscription to {product}"))
            })?;
        let owner = tx.subscription_owners(&tenant)?.remove(&product);
        if billing_owned(owner.as_ref()) && !force {
            return Err(managed_elsewhere(
                &tenant,
                &product,
                owner.as_deref().unwrap_or_default(),
            ));
        }
        tx.delete_subscription(&tenant, &product)?;
        let now_text = time_text(now);
        audit_model(
            tx,
            &tenant,
            &actor,
            &now_text,
            "subscription.delete",
            "Subscription",
            &product,
            Some(subscription_json(&before)),
            None,
        )?;
        relicense(
            tx,
            &cause(&tenant, &actor, "subscription.delete", now),
            Scope::All,
        )
    })
    .await
}

/// Settings as the API shows them: each with its value in force (defaults filled in).
fn settings_view(stored: &Value) -> Value {
    json!({
        "deprovision_brake": crate::licenses::brake::Brake::of(stored),
        "role_source": crate::licenses::roles::role_source(stored).as_str(),
    })
}

/// Longest reason a pin may give.
pub const MAX_PIN_REASON: usize = 500;

/// A pin as the admin API takes it: `{"plan": "pro" | null, "reason": "…", "expires_at": …?}`.
fn pin_of(body: &Value, product: &Product, by: &str, now: OffsetDateTime) -> ApiResult<Pin> {
    let bad = |m: String| ApiError::Scim(scim::Error::InvalidValue(m));
    let Some(obj) = body.as_object() else {
        return Err(bad(
            "a pin must be a JSON object: {\"plan\", \"reason\", \"expires_at\"?}".into(),
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["plan", "reason", "expires_at"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "{k}: not a field of a pin (plan, reason, expires_at)"
        )));
    }
    let plan = match obj.get("plan") {
        Some(Value::Null) => None,
        Some(Value::String(p)) => {
            let key = Key::new("plan", p).map_err(|e| bad(format!("plan: {e}")))?;
            if product.plan(&key).is_none() {
                return Err(bad(format!(
                    "plan: product {} has no plan {p}",
                    product.key
                )));
            }
            Some(key)
        }
        _ => {
            return Err(bad(
                "plan: a plan of the product, or null to exclude the user from it".into(),
            ));
        }
    };
    let reason = match obj.get("reason") {
        Some(Value::String(r)) if !r.trim().is_empty() && r.chars().count() <= MAX_PIN_REASON => {
            r.trim().to_string()
        }
        _ => {
            return Err(bad(format!(
                "reason: why the pin is there, 1 to {MAX_PIN_REASON} characters"
            )));
        }
    };
    let expires_at = match obj.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => {
            let at = crate::kernel::ids::Instant::parse(t)
                .map_err(|e| bad(format!("expires_at: {e}")))?;
            let at = at.at();
            if at <= now {
                return Err(bad(format!("expires_at: {t} has passed")));
            }
            Some(at)
        }
        Some(_) => return Err(bad("expires_at: an RFC 3339 instant".into())),
    };
    Ok(Pin {
        product: product.key.clone(),
        plan,
        by: by.to_string(),
        reason,
        expires_at,
    })
}

/// `PUT /api/v1/tenants/{id}/users/{user}/pins/{product}`: the pin, and the license changes.
async fn put_pin(
    store: &Store,
    clock: &dyn Clock,
    actor: Actor,
    (tenant, user, product): (&str, &str, &str),
    body: Value,
) -> ApiResult<(Value, Outcome)> {
    let now = clock.now();
    let (tenant, user, product) = (tenant.to_string(), user.to_string(), product.to_string());
    transact(store, false, move |tx| {
        require_tenant(tx, &tenant)?;
        tx.lock_tenant(&tenant)?;
        if tx.find_user(&tenant, &user)?.as_deref() != Some(user.as_str()) {
            return Err(ApiError::NotFound(format!("User {user} not found")));
        }
        let catalogue = tx.products()?;
        let Some(p) = catalogue.iter().find(|p| p.key.as_str() == product) else {
            return Err(ApiError::NotFound(format!(
                "no product {product} in the catalogue"
            )));
        };
        let pin = pin_of(&body, p, &actor.name, now)?;
        tx.bump_model(&tenant)?;
        let now_text = time_text(now);
        let before = tx.put_pin(&tenant, &user, &pin, &now_text)?;
        let after = pin_json(&user, &pin);
        audit_model(
            tx,
            &tenant,
            &actor,
            &now_text,
            "pin.put",
            "Pin",
            &format!("{user}/{product}"),
            before.map(|b| pin_json(&user, &b)),
            Some(after.clone()),
        )?;
        let outcome = relicense(
            tx,
            &cause(&tenant, &actor, "pin.put", now),
            Scope::Users(vec![user]),
        )?;
        Ok((after, outcome))
    })
    .await
}

/// `DELETE /api/v1/tenants/{id}/users/{user}/pins/{product}`: the rules decide again.
async fn delete_pin(
    store: &Store,
    clock: &dyn Clock,
    actor: Actor,
    (tenant, user, product): (&str, &str, &str),
    action: &'static str,
) -> ApiResult<Outcome> {
    let now = clock.now();
    let (tenant, user, product) = (tenant.to_string(), user.to_string(), product.to_string());
    transact(store, false, move |tx| {
        require_tenant(tx, &tenant)?;
        tx.lock_tenant(&tenant)?;
        let Some(before) = tx.delete_pin(&tenant, &user, &product)? else {
            return Err(ApiError::NotFound(format!(
                "user {user} has no pin of {product}"
            )));
        };
        tx.bump_model(&tenant)?;
        let now_text = time_text(now);
        audit_model(
            tx,
            &tenant,
            &actor,
            &now_text,
            action,
            "Pin",
            &format!("{user}/{product}"),
            Some(pin_json(&user, &before)),
            None,
        )?;
        relicense(
            tx,
            &cause(&tenant, &actor, action, now),
            Scope::Users(vec![user]),
        )
    })
    .await
}

/// Removes the pins past their expiry (the scheduler's pass), re-deciding their users.
async fn expire_pins(
    store: &Store,
    clock: &dyn Clock,
    only: Option<&str>,
) -> ApiResult<BTreeMap<String, Outcome>> {
    let now = clock.now();
    let now_text = time_text(now);
    let expired = store
        .write(move |tx| -> ApiResult<Vec<(String, String, String)>> {
            Ok(tx.expired_pins(&now_text)?)
        })
        .await?;
    let actor = Actor {
        name: "scheduler".into(),
        request_id: format!("pin-expiry-{}", time_text(now)),
    };
    let mut out: BTreeMap<String, Outcome> = BTreeMap::new();
    for (tenant, user, product) in expired {
        if only.is_some_and(|o| o != tenant) {
            continue;
        }
        match delete_pin(
            store,
            clock,
            actor.clone(),
            (&tenant, &user, &product),
            "pin.expire",
        )
        .await
        {
            Ok(o) => out.entry(tenant).or_default().add(&o),
            // Another node (or an administrator) removed it first.
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `PUT /api/v1/tenants/{id}/rules/{name}`.
async fn put_rule(
    store: &Store,
    clock: &dyn Clock,
    actor: Actor,
    tenant: &str,
    name: &str,
    body: Value,
) -> ApiResult<(Value, Outcome)> {
    let now = clock.now();
    let (tenant, name) = (tenant.to_string(), name.to_string());
    transact(store, false, move |tx| {
        require_tenant(tx, &tenant)?;
        tx.lock_tenant(&tenant)?;
        tx.bump_model(&tenant)?;
        let products = tx.products()?;
        let rule = spec::rule_from_json(&name, &body, &products)?;
        let row = RuleRow {
            name: rule.name.to_string(),
            filter: rule.filter.to_string(),
            product: rule.product.to_string(),
            plan: rule.plan.to_string(),
            priority: i64::from(rule.priority),
        };
        let before = tx
            .rule_rows(&tenant)?
            .into_iter()
            .find(|r| r.name == row.name);
        let now_text = time_text(now);
        tx.put_rule(&tenant, &row, &now_text)?;
        audit_put(
            tx,
            &tenant,
            &actor,
            &now_text,
            ("rule", "Rule"),
            &row.name,
            before.as_ref(),
            &row,
        )?;
        let outcome = relicense(tx, &cause(&tenant, &actor, "rule.put", now), Scope::All)?;
        Ok((json!(row), outcome))
    })
    .await
}

/// `DELETE /api/v1/tenants/{id}/rules/{name}`.
async fn delete_rule(
    store: &Store,
    clock: &dyn Clock,
    actor: Actor,
    tenant: &str,
    name: &str,
) -> ApiResult<Outcome> {
    let now = clock.now();
    let (tenant, name) = (tenant.to_string(), name.to_string());
    transact(store, false, move |tx| {
        require_tenant(tx, &tenant)?;
        tx.lock_tenant(&tenant)?;
        tx.bump_model(&tenant)?;
        let before = tx
            .rule_rows(&tenant)?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("tenant {tenant} has no rule {name}")))?;
        tx.delete_rule(&tenant, &name)?;
        let now_text = time_text(now);
        audit_model(
            tx,
            &tenant,
            &actor,
            &now_text,
            "rule.delete",
            "Rule",
            &name,
            Some(json!(before)),
            None,
        )?;
        relicense(tx, &cause(&tenant, &actor, "rule.delete", now), Scope::All)
    })
    .await
}

/// Makes a declared tenant's role rules exactly the declared ones, and its role source the
/// declared one (when declared), each change audited.
fn put_declared_roles(
    tx: &mut Tx<'_>,
    t: &TenantSpec,
    actor: &Actor,
    now_text: &str,
) -> ApiResult<()> {
    let old = tx.role_rule_rows(&t.id)?;
    for r in &old {
        if !t.role_rules.iter().any(|n| n.name.as_str() == r.name) {
            tx.delete_role_rule(&t.id, &r.name)?;
            audit_model(
                tx,
                &t.id,
                actor,
                now_text,
                "role_rule.delete",
                "RoleRule",
                &r.name,
                Some(json!(r)),
                None,
            )?;
        }
    }
    for r in &t.role_rules {
        let row = RoleRuleRow::of(r);
        let prev = old.iter().find(|o| o.name == row.name);
        if prev != Some(&row) {
            tx.put_role_rule(&t.id, &row, now_text)?;
            audit_put(
                tx,
                &t.id,
                actor,
                now_text,
                ("role_rule", "RoleRule"),
                &row.name,
                prev,
                &row,
            )?;
        }
    }
    if let Some(source) = t.role_source {
        let before = tx.tenant_settings(&t.id)?;
        if crate::licenses::roles::role_source(&before) != source {
            let mut after = before.clone();
            after["role_source"] = json!(source.as_str());
            tx.put_tenant_settings(&t.id, &after)?;
            audit_model(
                tx,
                &t.id,
                actor,
                now_text,
                "settings.update",
                "Tenant",
                &t.id,
                Some(settings_view(&before)),
                Some(settings_view(&after)),
            )?;
        }
    }
    Ok(())
}

/// The model as stored, for the declared products and tenants.
fn current_spec(tx: &mut Tx<'_>, products: &[String], tenants: &[String]) -> ApiResult<Spec> {
    let products = tx
        .products()?
        .into_iter()
        .filter(|p| products.iter().any(|k| k == p.key.as_str()))
        .collect();
    let mut out = Vec::new();
    for t in tenants {
        let rules = tx
            .rule_rows(t)?
            .iter()
            .map(rule_of)
            .collect::<Result<Vec<_>, _>>()?;
        let all_products = tx.products()?;
        let role_rules =
            crate::licenses::roles::role_rules_of(&tx.role_rule_rows(t)?, &all_products);
        let role_source = Some(crate::licenses::roles::role_source(&tx.tenant_settings(t)?));
        out.push(TenantSpec {
            id: t.clone(),
            subscriptions: tx.subscriptions(t)?,
            rules,
            // Pins are compared by `apply` itself (a file's pins are put, never removed).
            pins: Vec::new(),
            role_rules,
            role_source,
        });
    }
    Ok(Spec {
        products,
        tenants: out,
    })
}

/// Applies a declared model in one transaction (or plans it, with `dry_run`): each declared
/// product becomes exactly as declared (plans added, changed, removed); each declared
/// tenant's subscriptions and rules become exactly the declared ones; products and tenants
/// the file does not mention are left alone. Then every tenant the change can reach is
/// re-decided.
async fn apply(
    store: &Store,
    clock: &dyn Clock,
    actor: Actor,
    mut spec: Spec,
    (dry_run, force): (bool, bool),
) -> ApiResult<Applied> {
    let now = clock.now();
    transact(store, dry_run, move |tx| {
        let declared: Vec<String> = spec.tenants.iter().map(|t| t.id.clone()).collect();
        for (i, t) in declared.iter().enumerate() {
            require_tenant(tx, t).map_err(|_| {
                ApiError::Model(licensing::Error::Invalid(format!(
                    "tenants[{i}].id: no tenant {t}; create it first (seatkeeper tenant create)"
                )))
            })?;
        }
        let declared_products: Vec<String> =
            spec.products.iter().map(|p| p.key.to_string()).collect();
        let old = current_spec(tx, &declared_products, &declared)?;
        check_undeclared_products(tx, &spec)?;
        // Subscriptions a billing system manages: a file that leaves one out keeps it; one
        // that changes it is refused unless forced.
        let mut owners: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for t in &mut spec.tenants {
            let mine = tx.subscription_owners(&t.id)?;
            let before = old.tenants.iter().find(|o| o.id == t.id);
            for s in before.map(|b| b.subscriptions.as_slice()).unwrap_or_default() {
                let owner = mine.get(s.product.as_str());
                if !billing_owned(owner) {
                    continue;
                }
                match t.subscriptions.iter().find(|n| n.product == s.product) {
                    None => t.subscriptions.push(s.clone()),
                    Some(n) if n != s => conflicts.push(format!(
                        "subscription {}/{} is managed by {}",
                        t.id,
                        s.product,
                        owner.map_or("", String::as_str)
                    )),
                    Some(_) => {}
                }
            }
            owners.insert(t.id.clone(), mine);
        }
        if !conflicts.is_empty() && !force && !dry_run {
            return Err(ApiError::Conflict(format!(
                "{}: change it there, or force it (?force=true, seatkeeper apply --force); nothing was applied",
                conflicts.join("; ")
            )));
        }
        let mut changes: Vec<String> = spec::diff(&old, &spec)
            .iter()
            .map(ToString::to_string)
            .collect();
        let now_text = time_text(now);

        // Catalogue: the declared products are written whole; products the file does not
        // mention stay as they are (one file need not carry every product).
        for p in &spec.products {
            check_plans_in_use(tx, p, &spec)?;
            tx.put_product(p, &now_text)?;
        }
        for t in &spec.tenants {
            tx.lock_tenant(&t.id)?;
            tx.bump_model(&t.id)?;
            let before = old.tenants.iter().find(|o| o.id == t.id);
            let old_subs = before.map(|b| b.subscriptions.clone()).unwrap_or_default();
            for s in &old_subs {
                if !t.subscriptions.iter().any(|n| n.product == s.product) {
                    tx.delete_subscription(&t.id, s.product.as_str())?;
                    audit_model(
                        tx,
                        &t.id,
                        &actor,
                        &now_text,
                        "subscription.delete",
                        "Subscription",
                        s.product.as_str(),
                        Some(subscription_json(s)),
                        None,
                    )?;
                }
            }
            for s in &t.subscriptions {
                let prev = old_subs.iter().find(|o| o.product == s.product);
                if prev != Some(s) {
                    tx.put_subscription(&t.id, s, None, &now_text)?;
                    tx.clear_billing_anchor(&t.id, s.product.as_str())?;
                    // A forced change leaves a billing system in charge.
                    let owner = owners.get(&t.id).and_then(|o| o.get(s.product.as_str()));
                    if !billing_owned(owner) {
                        tx.set_subscription_owner(&t.id, s.product.as_str(), BY_APPLY)?;
                    }
                    audit_model(
                        tx,
                        &t.id,
                        &actor,
                        &now_text,
                        if prev.is_some() {
                            "subscription.update"
                        } else {
                            "subscription.create"
                        },
                        "Subscription",
                        s.product.as_str(),
                        prev.map(subscription_json),
                        Some(subscription_json(s)),
                    )?;
                }
            }
            put_declared_pins(tx, t, (&actor, now), &mut changes)?;
            let old_rules = tx.rule_rows(&t.id)?;
            for r in &old_rules {
                if !t.rules.iter().any(|n| n.name.as_str() == r.name) {
                    tx.delete_rule(&t.id, &r.name)?;
                    audit_model(
                        tx,
                        &t.id,
                        &actor,
                        &now_text,
                        "rule.delete",
                        "Rule",
                        &r.name,
                        Some(json!(r)),
                        None,
                    )?;
                }
            }
            for r in &t.rules {
                let row = RuleRow {
                    name: r.name.to_string(),
                    filter: r.filter.to_string(),
                    product: r.product.to_string(),
                    plan: r.plan.to_string(),
                    priority: i64::from(r.priority),
                };
                let prev = old_rules.iter().find(|o| o.name == row.name);
                if prev != Some(&row) {                    tx.put_rule(&t.id, &row, &now_text)?;
                    audit_put(
                        tx,
                        &t.id,
                        &actor,
                        &now_text,
                        ("rule", "Rule"),
                        &row.name,
                        prev,
                        &row,
                    )?;
                }
            }
            put_declared_roles(tx, t, &actor, &now_text)?;
        }
        // Re-decide every tenant the change can reach.
        let mut tenants: BTreeSet<String> = declared.iter().cloned().collect();
        for p in &spec.products {
            tenants.extend(tx.subscribers(p.key.as_str())?);
            tenants.extend(tx.role_rule_tenants(p.key.as_str())?);
        }
        let mut licenses = BTreeMap::new();
        for t in tenants {
            tx.lock_tenant(&t)?;
            tx.bump_model(&t)?;
            settle_terms(tx, &t, &actor, now)?;
            let outcome = relicense(tx, &cause(&t, &actor, "model.apply", now), Scope::All)?;
            licenses.insert(t, outcome);
        }
        Ok(Applied {
            dry_run,
            changes,
            conflicts,
            licenses,
        })
    })
    .await
}

/// Puts a tenant's declared pins (each user found by id, userName or externalId), noting
/// each one that changes.
fn put_declared_pins(
    tx: &mut Tx<'_>,
    t: &TenantSpec,
    (actor, now): (&Actor, OffsetDateTime),
    changes: &mut Vec<String>,
) -> ApiResult<()> {
    let now_text = time_text(now);
    let current = tx.pins(&t.id)?;
    for (j, p) in t.pins.iter().enumerate() {
        let Some(user) = tx.find_user(&t.id, &p.user)? else {
            return Err(ApiError::Model(licensing::Error::Invalid(format!(
                "tenant {}: pins[{j}].user: no user {} (by id, userName or externalId)",
                t.id, p.user
            ))));
        };
        if p.pin.expires_at.is_some_and(|e| e <= now) {
            return Err(ApiError::Model(licensing::Error::Invalid(format!(
                "tenant {}: pins[{j}].expires_at has passed",
                t.id
            ))));
        }
        let mut pin = p.pin.clone();
        pin.by.clone_from(&actor.name);
        let before = current
            .iter()
            .find(|(u, x)| *u == user && x.product == pin.product)
            .map(|(_, x)| x);
        // Who pinned it is not part of what the file declares.
        if before.is_some_and(|b| {
            Pin {
                by: pin.by.clone(),
                ..b.clone()
            } == pin
        }) {
            continue;
        }
        let what = |x: &Pin| match &x.plan {
            Some(plan) => format!("plan {plan} ({})", x.reason),
            None => format!("excluded ({})", x.reason),
        };
        changes.push(match before {
            Some(b) => format!(
                "~ pin {}/{}/{}: {} ⇒ {}",
                t.id,
                p.user,
                pin.product,
                what(b),
                what(&pin)
            ),
            None => format!("+ pin {}/{}/{}: {}", t.id, p.user, pin.product, what(&pin)),
        });
        tx.put_pin(&t.id, &user, &pin, &now_text)?;
        audit_model(
            tx,
            &t.id,
            actor,
            &now_text,
            "pin.put",
            "Pin",
            &format!("{user}/{}", pin.product),
            before.map(|b| pin_json(&user, b)),
            Some(pin_json(&user, &pin)),
        )?;
    }
    Ok(())
}

/// A model file may name products it does not declare when the catalogue has them (it was
/// parsed against the catalogue; this checks again under the transaction, in case a
/// concurrent change removed one).
fn check_undeclared_products(tx: &mut Tx<'_>, spec: &Spec) -> ApiResult<()> {
    let catalogue = tx.products()?;
    let known = |product: &Key, plan: &Key| {
        spec.products
            .iter()
            .chain(catalogue.iter())
            .find(|p| &p.key == product)
            .is_some_and(|p| p.plan(plan).is_some())
    };
    for t in &spec.tenants {
        let named = t
            .subscriptions
            .iter()
            .map(|s| (&s.product, &s.plan))
            .chain(t.rules.iter().map(|r| (&r.product, &r.plan)));
        for (product, plan) in named {
            if !known(product, plan) {
                return Err(ApiError::Model(licensing::Error::Invalid(format!(
                    "tenant {}: product {product} has no plan {plan} in the file or the catalogue",
                    t.id
                ))));
            }
        }
    }
    Ok(())
}

/// A plan may leave the catalogue only when no subscription or rule still names it.
fn check_plans_in_use(tx: &mut Tx<'_>, p: &Product, spec: &Spec) -> ApiResult<()> {
    for tenant in tx.subscribers(p.key.as_str())? {
        if spec.tenants.iter().any(|t| t.id == tenant) {
            continue; // re-declared in this file: validated with the file
        }
        for s in tx.subscriptions(&tenant)? {
            if s.product == p.key {
                s.validate(p).map_err(|e| {
                    ApiError::Model(licensing::Error::Invalid(format!(
                        "tenant {tenant}'s subscription to {}: {e}; change the subscription first",
                        p.key
                    )))
                })?;
            }
        }
        for r in tx.rule_rows(&tenant)? {
            if r.product == p.key.as_str() && !p.plans.iter().any(|pl| pl.key.as_str() == r.plan) {
                return Err(ApiError::Model(licensing::Error::Invalid(format!(
                    "tenant {tenant}'s rule {} names plan {} that the file removes",
                    r.name, r.plan
                ))));
            }
        }
    }
    Ok(())
}

/// Runs every term transition that is due at `now`: each subscription whose start, end or
/// end of grace has passed is settled and its tenant re-decided, once. Safe to run on every
/// node at once: each tenant is re-checked under its lock.
async fn run_due(
    store: &Store,
    clock: &dyn Clock,
    only: Option<&str>,
) -> ApiResult<BTreeMap<String, Outcome>> {
    let now = clock.now();
    let now_text = time_text(now);
    let due_text = now_text.clone();
    let due = store
        .write(move |tx| -> ApiResult<Vec<(String, String)>> {
            Ok(tx.due_subscriptions(&due_text)?)
        })
        .await?;
    let tenants: BTreeSet<String> = due
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| only.is_none_or(|o| o == t))
        .collect();
    let mut out = BTreeMap::new();
    for tenant in tenants {
        let t = tenant.clone();
        let now_text = now_text.clone();
        let outcome = store
            .write(move |tx| -> ApiResult<Option<Outcome>> {
                tx.lock_tenant(&t)?;
                tx.bump_model(&t)?;
                let still_due = tx
                    .due_subscriptions(&now_text)?
                    .iter()
                    .any(|(x, _)| x == &t);
                if !still_due {
                    return Ok(None); // another node took it
                }
                let actor = Actor {
                    name: "scheduler".into(),
                    request_id: format!("term-{}", now_text),
                };
                settle_terms(tx, &t, &actor, now)?;
                Ok(Some(relicense(
                    tx,
                    &cause(&t, &actor, "term.transition", now),
                    Scope::All,
                )?))
            })
            .await?;
        if let Some(o) = outcome {
            out.insert(tenant, o);
        }
    }
    for (tenant, o) in expire_pins(store, clock, only).await? {
        out.entry(tenant).or_default().add(&o);
    }
    for (tenant, o) in reclaim_idle(store, clock, only).await? {
        out.entry(tenant).or_default().add(&o);
    }
    Ok(out)
}

/// The reclaim pass: for each subscription with `on_idle = "reclaim"` that has someone
/// waiting, idle seats go to the waitlist, longest idle first, as many as there are waiters
/// (a seat is never freed for no one). One transaction per subscription.
async fn reclaim_idle(
    store: &Store,
    clock: &dyn Clock,
    only: Option<&str>,
) -> ApiResult<BTreeMap<String, Outcome>> {
    let now = clock.now();
    let actor = Actor {
        name: "scheduler".into(),
        request_id: format!("reclaim-{}", time_text(now)),
    };
    let mut out: BTreeMap<String, Outcome> = BTreeMap::new();
    for (tenant, product, days) in store.reclaiming().await? {
        if only.is_some_and(|o| o != tenant) {
            continue;
        }
        let (t, actor) = (tenant.clone(), actor.clone());
        let cutoff = time_text(now - time::Duration::days(days));
        let o = transact(store, false, move |tx| {
            tx.lock_tenant(&t)?;
            let waiting = tx.line(&t, &product)?.waiting;
            if waiting == 0 {
                return Ok(Outcome::default());
            }
            let idle = tx.idle_holders(&t, &product, &cutoff, waiting as i64)?;
            if idle.is_empty() {
                return Ok(Outcome::default());
            }
            crate::licenses::decide::reclaim(
                tx,
                &cause(&t, &actor, "license.reclaim", now),
                &product,
                idle,
            )
        })
        .await?;
        if o.total() > 0 {
            out.entry(tenant).or_default().add(&o);
        }
    }
    Ok(out)
}

/// Seat usage per subscription of a tenant.
async fn usage(store: &Store, clock: &dyn Clock, tenant: &str) -> ApiResult<Value> {
    if store.tenant(tenant).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {tenant} not found")));
    }
    let rows = usage_rows(store, clock.now(), Some(&[tenant.to_string()])).await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(r, _)| {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("tenant");
            }
            v
        })
        .collect();
    Ok(json!({"tenant": tenant, "subscriptions": items}))
}

/// Usage rows (with their subscriptions) for these tenants (`None`: all).
async fn usage_rows(
    store: &Store,
    now: OffsetDateTime,
    tenants: Option<&[String]>,
) -> ApiResult<Vec<(UsageRow, Subscription)>> {
    usage_rows_of(store, now, tenants, true).await
}

/// Usage rows; without `full`, idle counts are 0 and the longest waits unknown (what a sort
/// by the other figures needs, at a fraction of the cost).
async fn usage_rows_of(
    store: &Store,
    now: OffsetDateTime,
    tenants: Option<&[String]>,
    full: bool,
) -> ApiResult<Vec<(UsageRow, Subscription)>> {
    let inputs = store.usage_inputs(tenants, full).await?;
    let idle = if full {
        let cutoffs = usage::idle_cutoffs(inputs.subscriptions.iter().map(|(_, s)| s), now);
        store.idle_counts(tenants, &cutoffs).await?
    } else {
        Default::default()
    };
    let rows = usage::rows(&inputs, &idle, now);
    Ok(rows
        .into_iter()
        .zip(inputs.subscriptions.into_iter().map(|(_, s)| s))
        .collect())
}

/// A user's licenses with their explanation chains and history.
async fn user_licenses(store: &Store, tenant: &str, user: &str) -> ApiResult<Value> {
    let rows = store.licenses_of(tenant, &[user.to_string()]).await?;
    let exists = store.user_exists(tenant, user).await?;
    if !exists && rows.is_empty() {
        return Err(ApiError::NotFound(format!("User {user} not found")));
    }
    let products = store.products().await?;
    let rules = store.rule_rows(tenant).await?;
    let subscriptions = store.subscriptions(tenant).await?;
    let keys: Vec<String> = products.iter().map(|p| p.key.to_string()).collect();
    let heads: Vec<i64> = rows.iter().filter_map(|l| l.audit_seq).collect();
    let history = store
        .license_history(tenant, user, &keys, &heads, 100)
        .await?;
    let licenses: Vec<Value> = rows
        .iter()
        .map(|l| {
            json!({
                "product": l.product,
                "plan": l.plan,
                "state": l.state,
                "reason": l.reason,
                "since": l.changed,
                "queue": l.queue,
                "explanation": crate::licenses::decide::expand_explanation(
                    l,
                    &rules,
                    &subscriptions,
                    history.iter().find(|a| Some(a.seq) == l.audit_seq),
                ),
            })
        })
        .collect();
    let history: Vec<Value> = history
        .iter()
        .map(|a| {
            json!({
                "seq": a.seq, "at": a.at, "action": a.action, "actor": a.actor,
                "request_id": a.request_id,
                "before": a.before.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()),
                "after": a.after.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()),
            })
        })
        .collect();
    let last_seen = store.last_seen(tenant, user).await?;
    let role_rules = store.role_rule_rows(tenant).await?;
    let roles: Vec<Value> = store
        .roles_of(tenant, user)
        .await?
        .iter()
        .map(|r| {
            let role = products
                .iter()
                .find(|p| p.key.as_str() == r.product)
                .and_then(|p| p.role(&r.role));
            let licensed = rows
                .iter()
                .any(|l| l.product == r.product && l.state == "active");
            let counts = licensed || role.is_some_and(|x| !x.requires_license);
            let matched: Vec<Value> = r
                .source
                .split(' ')
                .map(|s| match role_rules.iter().find(|x| x.name == s) {
                    Some(rule) => json!({"rule": rule.name, "filter": rule.filter}),
                    None => json!({"rule": null, "source": s}),
                })
                .collect();
            json!({
                "product": r.product, "role": r.role, "since": r.granted,
                "matched": matched,
                "permissions": role.map(|x| x.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
                "counts": counts,
                "reason": if counts {
                    "in force".to_string()
                } else {
                    format!("requires an active {} license", r.product)
                },
            })
        })
        .collect();
    let sign_ins = store
        .logins(tenant, user)
        .await?
        .map(|(count, last)| json!({"count": count, "last": last}));
    Ok(json!({
        "tenant": tenant, "user": user, "last_seen": last_seen, "sign_ins": sign_ins,
        "licenses": licenses, "roles": roles, "history": history,
    }))
}

/// The plan of an apply, as the CLI prints it.
pub fn plan_text(a: &Applied) -> String {
    let mut out = String::new();
    if a.changes.is_empty() {
        out.push_str("model: no changes\n");
    } else {
        out.push_str("model:\n");
        for c in &a.changes {
            out.push_str(&format!("  {c}\n"));
        }
    }
    if !a.conflicts.is_empty() {
        out.push_str("managed by billing (refused without --force):\n");
        for c in &a.conflicts {
            out.push_str(&format!("  ! {c}\n"));
        }
    }
    out.push_str("licenses:\n");
    if a.licenses.values().all(|o| o.total() == 0) {
        out.push_str("  no license changes\n");
    }
    for (tenant, o) in &a.licenses {
        if o.total() == 0 {
            continue;
        }
        out.push_str(&format!(
            "  tenant {tenant}: {} assigned, {} waitlisted, {} promoted, {} changed plan, {} revoked\n",
            o.assigned, o.waitlisted, o.promoted, o.changed, o.revoked
        ));
    }
    out.push_str(if a.dry_run {
        "dry run: nothing was applied\n"
    } else {
        "applied in one transaction\n"
    });
    out
}

/// The licensing service: the catalogue, subscriptions and rules, each change one transaction
/// with the license changes it causes; term transitions; usage and explanations.
#[derive(Clone)]
pub struct Licenses {
    store: Store,
    clock: crate::kernel::clock::SharedClock,
    board: std::sync::Arc<crate::licenses::board::Board>,
}

impl Licenses {
    /// The service over a store.
    pub fn new(store: Store, clock: crate::kernel::clock::SharedClock) -> Licenses {
        Licenses {
            store,
            clock,
            board: Default::default(),
        }
    }

    /// Creates or changes a subscription (the body as the model file has it, or with
    /// `how.merge` the fields to change); re-decides every license of the tenant. A
    /// subscription a billing system manages is changed only with `how.force`.
    pub async fn put_subscription(
        &self,
        actor: Actor,
        tenant: &str,
        product: &str,
        body: Value,
        how: Write,
    ) -> ApiResult<(Value, Outcome)> {
        put_subscription(
            &self.store,
            &*self.clock,
            actor,
            (tenant, product),
            body,
            how,
        )
        .await
    }

    /// Removes a subscription; its licenses are revoked. One a billing system manages is
    /// removed only with `force`.
    pub async fn delete_subscription(
        &self,
        actor: Actor,
        tenant: &str,
        product: &str,
        force: bool,
    ) -> ApiResult<Outcome> {
        delete_subscription(&self.store, &*self.clock, actor, (tenant, product), force).await
    }

    /// A tenant's subscriptions, each with who manages it (`managed_by`).
    pub async fn subscriptions(&self, tenant: &str) -> ApiResult<Vec<Value>> {
        let owners = self.store.subscription_owners(tenant).await?;
        Ok(self
            .store
            .subscriptions(tenant)
            .await?
            .iter()
            .map(|s| {
                let mut v = subscription_json(s);
                v["managed_by"] = json!(owners.get(s.product.as_str()));
                v
            })
            .collect())
    }

    /// Creates or changes an assignment rule; re-decides every license of the tenant.
    pub async fn put_rule(
        &self,
        actor: Actor,
        tenant: &str,
        name: &str,
        body: Value,
    ) -> ApiResult<(Value, Outcome)> {
        put_rule(&self.store, &*self.clock, actor, tenant, name, body).await
    }

    /// Pins a user's plan of a product (`"plan": null` excludes them from it), over the
    /// rules; re-decides the user.
    pub async fn put_pin(
        &self,
        actor: Actor,
        (tenant, user, product): (&str, &str, &str),
        body: Value,
    ) -> ApiResult<(Value, Outcome)> {
        put_pin(
            &self.store,
            &*self.clock,
            actor,
            (tenant, user, product),
            body,
        )
        .await
    }

    /// Removes a pin: the rules decide again.
    pub async fn delete_pin(
        &self,
        actor: Actor,
        (tenant, user, product): (&str, &str, &str),
    ) -> ApiResult<Outcome> {
        delete_pin(
            &self.store,
            &*self.clock,
            actor,
            (tenant, user, product),
            "pin.delete",
        )
        .await
    }

    /// A tenant's pins.
    pub async fn pins(&self, tenant: &str) -> ApiResult<Vec<Value>> {
        Ok(self
            .store
            .pins(tenant)
            .await?
            .iter()
            .map(|(user, pin)| pin_json(user, pin))
            .collect())
    }

    /// Users an application saw (by id, userName or externalId) active at `at`: recorded as
    /// activity, so their seats are not idle, and their reclaimed licenses come back (a seat if
    /// one is free, else the end of the waitlist). Returns (recorded, unknown, license changes).
    pub async fn report_activity(
        &self,
        tenant: &str,
        app: &str,
        users: Vec<String>,
        at: Option<OffsetDateTime>,
    ) -> ApiResult<(usize, Vec<String>, Outcome)> {
        let now = self.clock.now();
        let at = at.unwrap_or(now).min(now);
        let tenant = tenant.to_string();
        let actor = Actor {
            name: format!("app:{app}"),
            request_id: format!("activity-{}", uuid::Uuid::now_v7()),
        };
        transact(&self.store, false, move |tx| {
            tx.lock_tenant(&tenant)?;
            let mut found = Vec::new();
            let mut unknown = Vec::new();
            for u in users {
                match tx.find_user(&tenant, &u)? {
                    Some(id) => found.push(id),
                    None => unknown.push(u),
                }
            }
            found.sort();
            found.dedup();
            tx.record_seen(&tenant, &found, &time_text(at))?;
            let outcome = crate::licenses::decide::restore_reclaimed(
                tx,
                &cause(&tenant, &actor, "activity.report", now),
                &found,
            )?;
            Ok((found.len(), unknown, outcome))
        })
        .await
    }

    /// Imports seat holders (see [`crate::licenses::import`]): in one transaction, or with
    /// `dry_run` only reported.
    pub async fn import(
        &self,
        actor: Actor,
        tenant: &str,
        rows: Vec<crate::licenses::import::ImportRow>,
        dry_run: bool,
    ) -> ApiResult<crate::licenses::import::ImportReport> {
        let now = self.clock.now();
        let tenant = tenant.to_string();
        transact(&self.store, dry_run, move |tx| {
            require_tenant(tx, &tenant)?;
            let mut report =
                crate::licenses::import::run(tx, &cause(&tenant, &actor, "import", now), rows)?;
            report.dry_run = dry_run;
            Ok(report)
        })
        .await
    }

    /// Compares the application's view (who uses which product) with the licenses.
    pub async fn reconcile_uses(
        &self,
        tenant: &str,
        uses: Vec<crate::licenses::reconcile::UseRow>,
    ) -> ApiResult<(String, Vec<crate::licenses::reconcile::UseFinding>)> {
        let at = time_text(self.clock.now());
        let tenant = tenant.to_string();
        transact(&self.store, true, move |tx| {
            require_tenant(tx, &tenant)?;
            let findings = crate::licenses::reconcile::against_uses(tx, &tenant, &uses)?;
            Ok((at, findings))
        })
        .await
    }

    /// Decides every license of a tenant (or of every tenant) again from scratch and lists
    /// where the stored licenses and seat counts differ; with `repair`, brings them back (one
    /// transaction per tenant, audited as `license.repaired`).
    pub async fn self_check(
        &self,
        actor: Actor,
        tenant: Option<&str>,
        repair: bool,
    ) -> ApiResult<Vec<crate::licenses::reconcile::Difference>> {
        let tenants = match tenant {
            Some(t) => vec![t.to_string()],
            None => self.store.tenant_ids().await?,
        };
        let now = self.clock.now();
        let mut out = Vec::new();
        for t in tenants {
            let actor = actor.clone();
            let found = transact(&self.store, !repair, move |tx| {
                require_tenant(tx, &t)?;
                let c = cause(&t, &actor, "license.repair", now);
                if repair {
                    Ok(crate::licenses::reconcile::repair(tx, &c)?.0)
                } else {
                    crate::licenses::reconcile::check(tx, &c)
                }
            })
            .await?;
            out.extend(found);
        }
        Ok(out)
    }

    /// An import's pending claims (users not in the directory yet).
    pub async fn claims(&self, tenant: &str) -> ApiResult<Vec<crate::licenses::store::ClaimRow>> {
        Ok(self.store.claims(tenant).await?)
    }

    /// A tenant's settings, with their defaults filled in.
    pub async fn settings(&self, tenant: &str) -> ApiResult<Value> {
        let s = self
            .store
            .tenant_settings(tenant)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("tenant {tenant} not found")))?;
        Ok(settings_view(&s))
    }

    /// Changes a tenant's settings: `{"deprovision_brake": {…} | null, "role_source":
    /// "rules" | "scim" | "both"}`. Audited; a new role source re-decides every user's roles.
    pub async fn put_settings(&self, actor: Actor, tenant: &str, body: Value) -> ApiResult<Value> {
        let now = self.clock.now();
        let tenant = tenant.to_string();
        transact(&self.store, false, move |tx| {
            require_tenant(tx, &tenant)?;
            tx.lock_tenant(&tenant)?;
            let Some(fields) = body.as_object() else {
                return Err(ApiError::Scim(scim::Error::InvalidValue(
                    "settings must be a JSON object: {\"deprovision_brake\": {…} | null, \"role_source\": …}".into(),
                )));
            };
            if let Some(k) = fields
                .keys()
                .find(|k| !matches!(k.as_str(), "deprovision_brake" | "role_source"))
            {
                return Err(ApiError::Scim(scim::Error::InvalidValue(format!(
                    "{k}: not a setting (deprovision_brake, role_source)"
                ))));
            }
            let before = tx.tenant_settings(&tenant)?;
            let mut after = before.clone();
            if let Some(v) = fields.get("deprovision_brake") {
                after["deprovision_brake"] = json!(crate::licenses::brake::Brake::parse(v)?);
            }
            if let Some(v) = fields.get("role_source") {
                let source = v
                    .as_str()
                    .ok_or_else(|| {
                        licensing::Error::Invalid("role_source must be rules, scim or both".into())
                    })
                    .and_then(licensing::roles::RoleSource::parse)?;
                after["role_source"] = json!(source.as_str());
            }
            tx.put_tenant_settings(&tenant, &after)?;
            let now_text = time_text(now);
            audit_model(
                tx,
                &tenant,
                &actor,
                &now_text,
                "settings.update",
                "Tenant",
                &tenant,
                Some(settings_view(&before)),
                Some(settings_view(&after)),
            )?;
            let roles = crate::licenses::roles::role_source;
            if roles(&before) != roles(&after) {
                tx.bump_model(&tenant)?;
                relicense(tx, &cause(&tenant, &actor, "settings.update", now), Scope::All)?;
            }
            Ok(settings_view(&after))
        })
        .await
    }

    /// Creates or changes a role rule; re-decides every user's roles (and licenses).
    pub async fn put_role_rule(
        &self,
        actor: Actor,
        tenant: &str,
        name: &str,
        body: Value,
    ) -> ApiResult<Value> {
        let now = self.clock.now();
        let (tenant, name) = (tenant.to_string(), name.to_string());
        transact(&self.store, false, move |tx| {
            require_tenant(tx, &tenant)?;
            tx.lock_tenant(&tenant)?;
            tx.bump_model(&tenant)?;
            let products = tx.products()?;
            let rule = spec::role_rule_from_json(&name, &body, &products)?;
            let row = RoleRuleRow::of(&rule);
            let before = tx
                .role_rule_rows(&tenant)?
                .into_iter()
                .find(|r| r.name == row.name);
            let now_text = time_text(now);
            tx.put_role_rule(&tenant, &row, &now_text)?;
            audit_put(
                tx,
                &tenant,
                &actor,
                &now_text,
                ("role_rule", "RoleRule"),
                &row.name,
                before.as_ref(),
                &row,
            )?;
            relicense(
                tx,
                &cause(&tenant, &actor, "role_rule.put", now),
                Scope::All,
            )?;
            Ok(json!(row))
        })
        .await
    }

    /// Removes a role rule; the roles it gave are taken back.
    pub async fn delete_role_rule(&self, actor: Actor, tenant: &str, name: &str) -> ApiResult<()> {
        let now = self.clock.now();
        let (tenant, name) = (tenant.to_string(), name.to_string());
        transact(&self.store, false, move |tx| {
            require_tenant(tx, &tenant)?;
            tx.lock_tenant(&tenant)?;
            tx.bump_model(&tenant)?;
            let before = tx
                .role_rule_rows(&tenant)?
                .into_iter()
                .find(|r| r.name == name)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("tenant {tenant} has no role rule {name}"))
                })?;
            tx.delete_role_rule(&tenant, &name)?;
            let now_text = time_text(now);
            audit_model(
                tx,
                &tenant,
                &actor,
                &now_text,
                "role_rule.delete",
                "RoleRule",
                &name,
                Some(json!(before)),
                None,
            )?;
            relicense(
                tx,
                &cause(&tenant, &actor, "role_rule.delete", now),
                Scope::All,
            )?;
            Ok(())
        })
        .await
    }

    /// A tenant's role rules (404 for an unknown tenant).
    pub async fn role_rules(&self, tenant: &str) -> ApiResult<Vec<RoleRuleRow>> {
        if self.store.tenant_settings(tenant).await?.is_none() {
            return Err(ApiError::NotFound(format!("tenant {tenant} not found")));
        }
        Ok(self.store.role_rule_rows(tenant).await?)
    }

    /// The roles given to a user, with the rules that gave them.
    pub async fn user_roles(
        &self,
        tenant: &str,
        user: &str,
    ) -> ApiResult<Vec<crate::licenses::roles::UserRoleRow>> {
        Ok(self.store.roles_of(tenant, user).await?)
    }

    /// The users whose seats the deprovision brake holds.
    pub async fn held(&self, tenant: &str) -> ApiResult<Vec<crate::licenses::store::HeldRow>> {
        Ok(self.store.held(tenant).await?)
    }

    /// Decides on the held users: `approve` frees their seats, `reject` keeps them reserved
    /// until the identity provider sends the users back.
    pub async fn decide_held(
        &self,
        actor: Actor,
        tenant: &str,
        approve: bool,
    ) -> ApiResult<(Vec<crate::licenses::store::HeldRow>, Outcome)> {
        let now = self.clock.now();
        let tenant = tenant.to_string();
        let action = if approve {
            "deprovision.approve"
        } else {
            "deprovision.reject"
        };
        transact(&self.store, false, move |tx| {
            require_tenant(tx, &tenant)?;
            tx.lock_tenant(&tenant)?;
            crate::licenses::brake::decide(tx, &cause(&tenant, &actor, action, now), approve)
        })
        .await
    }

    /// Removes an assignment rule.
    pub async fn delete_rule(&self, actor: Actor, tenant: &str, name: &str) -> ApiResult<Outcome> {
        delete_rule(&self.store, &*self.clock, actor, tenant, name).await
    }

    /// A tenant's assignment rules.
    pub async fn rules(&self, tenant: &str) -> ApiResult<Vec<RuleRow>> {
        Ok(self.store.rule_rows(tenant).await?)
    }

    /// Applies (or with `dry_run` plans) a model: products, plans, and tenants'
    /// subscriptions and rules. Changes to subscriptions a billing system manages are
    /// refused unless `force`d.
    pub async fn apply(
        &self,
        actor: Actor,
        spec: Spec,
        dry_run: bool,
        force: bool,
    ) -> ApiResult<Applied> {
        apply(&self.store, &*self.clock, actor, spec, (dry_run, force)).await
    }

    /// The products in the catalogue (what a model file may name without declaring).
    pub async fn products(&self) -> ApiResult<Vec<licensing::model::Product>> {
        Ok(self.store.products().await?)
    }

    /// The catalogue as JSON: products with their plans.
    pub async fn catalogue(&self) -> ApiResult<Value> {
        let products: Vec<Value> = self
            .store
            .products()
            .await?
            .iter()
            .map(|p| {
                json!({
                    "key": p.key.as_str(),
                    "name": p.name,
                    "plans": crate::licenses::store::plans_json(&p.plans),
                    "roles": crate::licenses::store::roles_json(&p.roles),
                })
            })
            .collect();
        Ok(json!({ "products": products }))
    }

    /// Whether the catalogue has this product and plan.
    pub async fn has_plan(&self, product: &str, plan: &str) -> ApiResult<bool> {
        Ok(self
            .store
            .products()
            .await?
            .iter()
            .find(|p| p.key.as_str() == product)
            .is_some_and(|p| p.plans.iter().any(|pl| pl.key.as_str() == plan)))
    }

    /// Applies every term transition due now (trial and term ends, grace ends).
    pub async fn run_due(&self) -> ApiResult<BTreeMap<String, Outcome>> {
        run_due(&self.store, &*self.clock, None).await
    }

    /// Runs one tenant's due work now (term transitions, pin expiries, the reclaim pass).
    pub async fn run_due_for(&self, tenant: &str) -> ApiResult<BTreeMap<String, Outcome>> {
        run_due(&self.store, &*self.clock, Some(tenant)).await
    }

    /// Runs due transitions at the instant of another clock (the test clock once moved).
    pub async fn run_due_at(&self, clock: &dyn Clock) -> ApiResult<BTreeMap<String, Outcome>> {
        run_due(&self.store, clock, None).await
    }

    /// A tenant's seats per subscription.
    pub async fn usage(&self, tenant: &str) -> ApiResult<Value> {
        usage(&self.store, &*self.clock, tenant).await
    }

    /// Every subscription's seat counts (no idle seats, no waits), in tenant and product
    /// order; `tenants` is every tenant's id. Kept between calls (see
    /// [`crate::licenses::board`]).
    pub async fn seat_rows(&self, tenants: &[String]) -> ApiResult<crate::licenses::board::Rows> {
        Ok(self
            .board
            .rows(&self.store, self.clock.now(), tenants)
            .await?)
    }

    /// Every subscription's idle seats as of its latest history point (at most an hour old).
    pub async fn sampled_idle(&self) -> ApiResult<crate::licenses::board::SampledIdle> {
        Ok(self
            .board
            .sampled_idle(&self.store, self.clock.now())
            .await?)
    }

    /// Every subscription's usage across tenants (`None`: all), with its subscription.
    pub async fn usage_rows(
        &self,
        tenants: Option<&[String]>,
    ) -> ApiResult<Vec<(UsageRow, Subscription)>> {
        usage_rows(&self.store, self.clock.now(), tenants).await
    }

    /// Every subscription's usage for these tenants, with their idle seats counted only for
    /// the tenants `count_idle` names; the others' are taken from `idle`, which keeps what
    /// was counted (by tenant and product) for the next call.
    pub async fn usage_rows_idle_from(
        &self,
        tenants: &[String],
        count_idle: &[String],
        idle: &mut BTreeMap<(String, String), usize>,
    ) -> ApiResult<Vec<UsageRow>> {
        let now = self.clock.now();
        let inputs = self.store.usage_inputs(Some(tenants), false).await?;
        if !count_idle.is_empty() {
            let counted: BTreeSet<&String> = count_idle.iter().collect();
            let cutoffs = usage::idle_cutoffs(
                inputs
                    .subscriptions
                    .iter()
                    .filter(|(t, _)| counted.contains(t))
                    .map(|(_, s)| s),
                now,
            );
            let fresh = self.store.idle_counts(Some(count_idle), &cutoffs).await?;
            idle.retain(|(t, _), _| !counted.contains(t));
            idle.extend(fresh);
        }
        Ok(usage::rows(&inputs, idle, now))
    }

    /// The compliance findings of these tenants (`None`: all), most severe first.
    pub async fn findings(&self, tenants: Option<&[String]>) -> ApiResult<Vec<Finding>> {
        let now = self.clock.now();
        let mut out: Vec<Finding> = usage_rows(&self.store, now, tenants)
            .await?
            .iter()
            .flat_map(|(r, s)| usage::findings(r, s, now))
            .collect();
        let rank = |s: &str| match s {
            "high" => 0,
            "medium" => 1,
            _ => 2,
        };
        out.sort_by(|a, b| {
            rank(a.severity)
                .cmp(&rank(b.severity))
                .then_with(|| a.tenant.cmp(&b.tenant))
                .then_with(|| a.product.cmp(&b.product))
                .then_with(|| a.finding.cmp(b.finding))
        });
        Ok(out)
    }

    /// A subscription's usage history from `from` to `to` (default: the last 30 days) in
    /// buckets of `step` (default: hours up to 7 days, else days). `product` may be left out
    /// when the tenant has one subscription.
    pub async fn history(
        &self,
        tenant: &str,
        product: Option<&str>,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
        step: Option<crate::licenses::history::Step>,
    ) -> ApiResult<crate::licenses::history::History> {
        use crate::licenses::history::Step;
        if self.store.tenant(tenant).await?.is_none() {
            return Err(ApiError::NotFound(format!("tenant {tenant} not found")));
        }
        let subs = self.store.subscriptions(tenant).await?;
        let product = match product {
            Some(p) => {
                if !subs.iter().any(|s| s.product.as_str() == p) {
                    return Err(ApiError::NotFound(format!(
                        "tenant {tenant} has no subscription to {p}"
                    )));
                }
                p.to_string()
            }
            None => match subs.as_slice() {
                [one] => one.product.to_string(),
                [] => {
                    return Err(ApiError::NotFound(format!(
                        "tenant {tenant} has no subscriptions"
                    )));
                }
                _ => {
                    return Err(scim::Error::InvalidValue(
                        "product is required: the tenant has several subscriptions".into(),
                    )
                    .into());
                }
            },
        };
        let to = to.unwrap_or_else(|| self.clock.now());
        let from = from.unwrap_or(to - time::Duration::days(30));
        let step = step.unwrap_or(if to - from <= time::Duration::days(7) {
            Step::Hour
        } else {
            Step::Day
        });
        crate::licenses::history::history(&self.store, tenant, &product, from, to, step).await
    }

    /// A tenant's waiting licenses in line order per product (at most `limit` each):
    /// `{user, userName, product, plan, place, since}`.
    pub async fn waitlist(&self, tenant: &str, limit: i64) -> ApiResult<Vec<Value>> {
        let mut place: BTreeMap<String, usize> = BTreeMap::new();
        Ok(self
            .store
            .waitlist(tenant, limit)
            .await?
            .into_iter()
            .map(|(user, name, product, plan, since)| {
                let n = place.entry(product.clone()).or_default();
                *n += 1;
                json!({"user": user, "userName": name, "product": product, "plan": plan,
                       "place": *n, "since": since})
            })
            .collect())
    }

    /// A tenant's idle licenses (of one product, or all): longest idle first, at most
    /// `limit`, with their number.
    pub async fn idle(
        &self,
        tenant: &str,
        product: Option<&str>,
        limit: i64,
        preview_reclaim: bool,
    ) -> ApiResult<Value> {
        if self.store.tenant(tenant).await?.is_none() {
            return Err(ApiError::NotFound(format!("tenant {tenant} not found")));
        }
        let subs = self.store.subscriptions(tenant).await?;
        if let Some(p) = product
            && !subs.iter().any(|s| s.product.as_str() == p)
        {
            return Err(ApiError::NotFound(format!(
                "tenant {tenant} has no subscription to {p}"
            )));
        }
        let cutoffs = usage::idle_cutoffs(&subs, self.clock.now());
        let (mut rows, mut total) = self
            .store
            .idle_licenses(
                tenant,
                product,
                &cutoffs,
                if preview_reclaim { i64::MAX / 2 } else { limit },
            )
            .await?;
        if preview_reclaim {
            // The next pass takes, per reclaiming subscription, as many of its longest idle
            // seats as it has waiters.
            let lines = self.store.lines(tenant).await?;
            let mut room: BTreeMap<String, usize> = subs
                .iter()
                .filter(|s| s.on_idle == licensing::model::OnIdle::Reclaim)
                .map(|s| {
                    let waiting = lines.get(s.product.as_str()).map_or(0, |l| l.waiting);
                    (s.product.to_string(), waiting)
                })
                .collect();
            rows.retain(|r| match room.get_mut(&r.product) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            });
            total = rows.len();
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        let idle: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                json!({
                    "user": r.user_id, "userName": r.user_name, "product": r.product,
                    "plan": r.plan, "last_seen": r.last_seen, "held_since": r.held_since,
                })
            })
            .collect();
        let mut out = json!({"tenant": tenant, "total": total, "idle": idle});
        if preview_reclaim {
            out["preview"] = json!("reclaim");
        }
        Ok(out)
    }

    /// A user's licenses, with why.
    pub async fn user_licenses(&self, tenant: &str, user: &str) -> ApiResult<Value> {
        user_licenses(&self.store, tenant, user).await
    }

    /// How many days before a term ends `subscription.expiring` goes out.
    pub async fn set_expiry_notice_days(&self, days: u32) -> ApiResult<()> {
        Ok(self
            .store
            .put_setting(EXPIRY_NOTICE_DAYS, &days.min(3650).to_string())
            .await?)
    }
}
