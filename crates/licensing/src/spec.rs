//! The model as code: a TOML (or the same shape in JSON) file declaring products, plans and
//! entitlements, and optionally tenants with their subscriptions and rules; and the diff
//! between two such declarations, printed like a migration plan.
//!
//! Unknown keys are refused (a typo must not silently drop a setting), and every value is
//! checked with a message that names where it is: `tenants[0].subscriptions[1].seats: …`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};
use crate::model::{
    Enforcement, Key, OnExpiry, OnIdle, Pin, Plan, Product, Role, Rule, Status, Subscription,
};
use crate::roles::{RoleRule, RoleSource};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    products: Vec<RawProduct>,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    key: String,
    name: Option<String>,
    #[serde(default)]
    plans: Vec<RawPlan>,
    #[serde(default)]
    roles: Vec<RawRole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    key: String,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default = "seated_by_default")]
    requires_license: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleRule {
    name: String,
    filter: String,
    product: String,
    role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    key: String,
    rank: i32,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    limits: BTreeMap<String, i64>,
    #[serde(default = "seated_by_default")]
    seated: bool,
}

fn seated_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    pins: Vec<RawPin>,
    #[serde(default)]
    role_rules: Vec<RawRoleRule>,
    role_source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    user: String,
    product: String,
    plan: Option<String>,
    #[serde(default)]
    exclude: bool,
    reason: String,
    expires_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscription {
    product: String,
    plan: String,
    seats: i64,
    starts_at: String,
    ends_at: Option<String>,
    status: Option<String>,
    #[serde(default)]
    grace_days: i64,
    on_expiry: Option<String>,
    enforcement: Option<String>,
    idle_after_days: Option<i64>,
    on_idle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    filter: String,
    product: String,
    plan: String,
    #[serde(default)]
    priority: i32,
}

/// One tenant's declared subscriptions and rules.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSpec {
    /// An existing tenant's id.
    pub id: String,
    /// Subscriptions, at most one per product.
    pub subscriptions: Vec<Subscription>,
    /// Assignment rules, unique by name.
    pub rules: Vec<Rule>,
    /// Pins, at most one per user and product; each is put, and pins the file does not
    /// name are left alone (an administrator may have set them).
    pub pins: Vec<PinSpec>,
    /// Role rules, unique by name.
    pub role_rules: Vec<RoleRule>,
    /// Where roles come from, when the file says (else left as it is).
    pub role_source: Option<RoleSource>,
}

/// A pin as a model file declares it: the user by id, userName or externalId (resolved when
/// the file is applied); `by` is left empty (the applying actor).
#[derive(Debug, Clone, PartialEq)]
pub struct PinSpec {
    /// The user.
    pub user: String,
    /// The pin.
    pub pin: Pin,
}

/// A validated declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Products and their plans.
    pub products: Vec<Product>,
    /// Tenants with subscriptions and rules.
    pub tenants: Vec<TenantSpec>,
}

fn at(path: &str, e: Error) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{path}: {m}")),
        Error::BadFilter(m) => Error::BadFilter(format!("{path}: {m}")),
        Error::UnknownPlan { product, plan } => {
            Error::Invalid(format!("{path}: product {product} has no plan {plan}"))
        }
    }
}

fn date(path: &str, s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        Error::Invalid(format!(
            "{path}: '{s}' is not an RFC 3339 date-time such as 2026-01-01T00:00:00Z"
        ))
    })
}

impl Spec {
    /// Parses and validates TOML.
    pub fn from_toml(text: &str) -> Result<Spec> {
        Spec::from_toml_with(text, &[])
    }

    /// Parses and validates TOML whose subscriptions and rules may also name products of
    /// `known` (the catalogue as it is) without declaring them.
    pub fn from_toml_with(text: &str, known: &[Product]) -> Result<Spec> {
        let raw: RawSpec = toml::from_str(text)
            .map_err(|e| Error::Invalid(format!("model file: {}", e.message())))?;
        Spec::from_raw(raw, known)
    }

    /// Parses and validates the same shape as JSON.
    pub fn from_json(value: &serde_json::Value) -> Result<Spec> {
        Spec::from_json_with(value, &[])
    }

    /// [`Spec::from_toml_with`], as JSON.
    pub fn from_json_with(value: &serde_json::Value, known: &[Product]) -> Result<Spec> {
        let raw: RawSpec = serde_json::from_value(value.clone())
            .map_err(|e| Error::Invalid(format!("model: {e}")))?;
        Spec::from_raw(raw, known)
    }

    fn from_raw(raw: RawSpec, known: &[Product]) -> Result<Spec> {
        let mut products = Vec::new();
        let mut product_keys = BTreeSet::new();
        for (i, p) in raw.products.into_iter().enumerate() {
            let path = format!("products[{i}]");
            let key = Key::new("product", &p.key).map_err(|e| at(&path, e))?;
            if !product_keys.insert(key.clone()) {
                return Err(Error::Invalid(format!(
                    "{path}: product {key} is declared twice"
                )));
            }
            let mut plans = Vec::new();
            for (j, plan) in p.plans.into_iter().enumerate() {
                let ppath = format!("{path}.plans[{j}]");
                let features = plan
                    .features
                    .iter()
                    .map(|f| Key::new("feature", f))
                    .collect::<Result<BTreeSet<_>>>()
                    .map_err(|e| at(&ppath, e))?;
                let limits = plan
                    .limits
                    .iter()
                    .map(|(k, v)| Ok((Key::new("limit", k)?, *v)))
                    .collect::<Result<BTreeMap<_, _>>>()
                    .map_err(|e| at(&ppath, e))?;
                plans.push(Plan {
                    key: Key::new("plan", &plan.key).map_err(|e| at(&ppath, e))?,
                    rank: plan.rank,
                    features,
                    limits,
                    seated: plan.seated,
                });
            }
            let mut roles = Vec::new();
            for (j, r) in p.roles.into_iter().enumerate() {
                let rpath = format!("{path}.roles[{j}]");
                let permissions = r
                    .permissions
                    .iter()
                    .map(|f| Key::new("permission", f))
                    .collect::<Result<BTreeSet<_>>>()
                    .map_err(|e| at(&rpath, e))?;
                roles.push(Role {
                    key: Key::new("role", &r.key).map_err(|e| at(&rpath, e))?,
                    permissions,
                    requires_license: r.requires_license,
                });
            }
            let name = p.name.unwrap_or_else(|| key.to_string());
            products.push(
                Product::new(key, name, plans)
                    .and_then(|p| p.with_roles(roles))
                    .map_err(|e| at(&path, e))?,
            );
        }
        // What subscriptions and rules may name: the declared products, then the known ones
        // the file does not redeclare.
        let nameable: Vec<Product> = products
            .iter()
            .cloned()
            .chain(
                known
                    .iter()
                    .filter(|k| !product_keys.contains(&k.key))
                    .cloned(),
            )
            .collect();
        let mut tenants = Vec::new();
        let mut tenant_ids = BTreeSet::new();
        for (i, t) in raw.tenants.into_iter().enumerate() {
            let path = format!("tenants[{i}]");
            if t.id.trim().is_empty() {
                return Err(Error::Invalid(format!(
                    "{path}.id: a tenant id is required"
                )));
            }
            if !tenant_ids.insert(t.id.clone()) {
                return Err(Error::Invalid(format!(
                    "{path}: tenant {} is declared twice",
                    t.id
                )));
            }
            let mut subscriptions: Vec<Subscription> = Vec::new();
            for (j, s) in t.subscriptions.into_iter().enumerate() {
                let spath = format!("{path}.subscriptions[{j}]");
                let sub = build_subscription(&spath, s, &nameable)?;
                if subscriptions.iter().any(|x| x.product == sub.product) {
                    return Err(Error::Invalid(format!(
                        "{spath}: a tenant holds one subscription per product; {} appears twice",
                        sub.product
                    )));
                }
                subscriptions.push(sub);
            }
            let mut rules: Vec<Rule> = Vec::new();
            for (j, r) in t.rules.into_iter().enumerate() {
                let rpath = format!("{path}.rules[{j}]");
                let rule = build_rule(&rpath, r, &nameable)?;
                if rules.iter().any(|x| x.name == rule.name) {
                    return Err(Error::Invalid(format!(
                        "{rpath}: rule {} is declared twice",
                        rule.name
                    )));
                }
                rules.push(rule);
            }
            let mut pins: Vec<PinSpec> = Vec::new();
            for (j, p) in t.pins.into_iter().enumerate() {
                let ppath = format!("{path}.pins[{j}]");
                let pin = build_pin(&ppath, p, &nameable)?;
                if pins
                    .iter()
                    .any(|x| x.user == pin.user && x.pin.product == pin.pin.product)
                {
                    return Err(Error::Invalid(format!(
                        "{ppath}: user {} has two pins of {}",
                        pin.user, pin.pin.product
                    )));
                }
                pins.push(pin);
            }
            let mut role_rules: Vec<RoleRule> = Vec::new();
            for (j, r) in t.role_rules.into_iter().enumerate() {
                let rpath = format!("{path}.role_rules[{j}]");
                let rule = build_role_rule(&r, &nameable).map_err(|e| at(&rpath, e))?;
                if role_rules.iter().any(|x| x.name == rule.name) {
                    return Err(Error::Invalid(format!(
                        "{rpath}: role rule {} is declared twice",
                        rule.name
                    )));
                }
                role_rules.push(rule);
            }
            let role_source = t
                .role_source
                .as_deref()
                .map(RoleSource::parse)
                .transpose()
                .map_err(|e| at(&format!("{path}.role_source"), e))?;
            tenants.push(TenantSpec {
                id: t.id,
                subscriptions,
                rules,
                pins,
                role_rules,
                role_source,
            });
        }
        Ok(Spec { products, tenants })
    }
}

fn build_role_rule(r: &RawRoleRule, products: &[Product]) -> Result<RoleRule> {
    RoleRule::new(
        Key::new("role rule", &r.name)?,
        &r.filter,
        Key::new("product", &r.product)?,
        Key::new("role", &r.role)?,
        products,
    )
}

/// Builds a role rule from an API body (`{"filter", "product", "role"}`) named by its path.
pub fn role_rule_from_json(
    name: &str,
    body: &serde_json::Value,
    products: &[Product],
) -> Result<RoleRule> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        filter: String,
        product: String,
        role: String,
    }
    let b: Body = serde_json::from_value(body.clone())
        .map_err(|e| Error::Invalid(format!("role rule: {e}")))?;
    build_role_rule(
        &RawRoleRule {
            name: name.to_string(),
            filter: b.filter,
            product: b.product,
            role: b.role,
        },
        products,
    )
}

fn build_pin(ppath: &str, p: RawPin, products: &[Product]) -> Result<PinSpec> {
    if p.user.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "{ppath}.user: the user's id, userName or externalId"
        )));
    }
    let product_key = Key::new("product", &p.product).map_err(|e| at(ppath, e))?;
    let product = products
        .iter()
        .find(|x| x.key == product_key)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{ppath}.product: no product {product_key} is declared or in the catalogue"
            ))
        })?;
    let plan = match (p.plan, p.exclude) {
        (Some(plan), false) => {
            let key = Key::new("plan", &plan).map_err(|e| at(ppath, e))?;
            if product.plan(&key).is_none() {
                return Err(Error::Invalid(format!(
                    "{ppath}.plan: product {product_key} has no plan {plan}"
                )));
            }
            Some(key)
        }
        (None, true) => None,
        _ => {
            return Err(Error::Invalid(format!(
                "{ppath}: a pin gives a plan (plan = \"…\") or excludes the user (exclude = true), one of the two"
            )));
        }
    };
    if p.reason.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "{ppath}.reason: why the pin is there"
        )));
    }
    let expires_at = p
        .expires_at
        .map(|t| date(&format!("{ppath}.expires_at"), &t))
        .transpose()?;
    Ok(PinSpec {
        user: p.user,
        pin: Pin {
            product: product_key,
            plan,
            by: String::new(),
            reason: p.reason.trim().to_string(),
            expires_at,
        },
    })
}

fn build_subscription(
    spath: &str,
    s: RawSubscription,
    products: &[Product],
) -> Result<Subscription> {
    let product_key = Key::new("product", &s.product).map_err(|e| at(spath, e))?;
    let product = products
        .iter()
        .find(|p| p.key == product_key)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{spath}.product: no product {product_key} is declared or in the catalogue"
            ))
        })?;
    if s.seats < 0 || s.seats > i64::from(u32::MAX) {
        return Err(Error::Invalid(format!(
            "{spath}.seats: {} is not a seat count (0 or more)",
            s.seats
        )));
    }
    if s.grace_days < 0 || s.grace_days > 3650 {
        return Err(Error::Invalid(format!(
            "{spath}.grace_days: {} must be between 0 and 3650",
            s.grace_days
        )));
    }
    let idle_after_days = s
        .idle_after_days
        .unwrap_or(i64::from(crate::model::DEFAULT_IDLE_AFTER_DAYS));
    if !(1..=3650).contains(&idle_after_days) {
        return Err(Error::Invalid(format!(
            "{spath}.idle_after_days: {idle_after_days} must be between 1 and 3650"
        )));
    }
    let sub = Subscription {
        product: product_key.clone(),
        plan: Key::new("plan", &s.plan).map_err(|e| at(spath, e))?,
        seats: s.seats as u32,
        starts_at: date(&format!("{spath}.starts_at"), &s.starts_at)?,
        ends_at: s
            .ends_at
            .as_deref()
            .map(|d| date(&format!("{spath}.ends_at"), d))
            .transpose()?,
        status: Status::parse(s.status.as_deref().unwrap_or("active")).map_err(|e| at(spath, e))?,
        grace_days: s.grace_days as u32,
        on_expiry: OnExpiry::parse(s.on_expiry.as_deref().unwrap_or("revoke"))
            .map_err(|e| at(spath, e))?,
        enforcement: Enforcement::parse(s.enforcement.as_deref().unwrap_or("hard"))
            .map_err(|e| at(spath, e))?,
        idle_after_days: idle_after_days as u32,
        on_idle: OnIdle::parse(s.on_idle.as_deref().unwrap_or("keep")).map_err(|e| at(spath, e))?,
    };
    sub.validate(product).map_err(|e| at(spath, e))?;
    Ok(sub)
}

fn build_rule(rpath: &str, r: RawRule, products: &[Product]) -> Result<Rule> {
    let product_key = Key::new("product", &r.product).map_err(|e| at(rpath, e))?;
    let product = products
        .iter()
        .find(|p| p.key == product_key)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{rpath}.product: no product {product_key} is declared or in the catalogue"
            ))
        })?;
    let plan = Key::new("plan", &r.plan).map_err(|e| at(rpath, e))?;
    if product.plan(&plan).is_none() {
        return Err(Error::Invalid(format!(
            "{rpath}.plan: product {product_key} has no plan {plan}"
        )));
    }
    Rule::new(
        Key::new("rule", &r.name).map_err(|e| at(rpath, e))?,
        &r.filter,
        product_key,
        plan,
        r.priority,
    )
    .map_err(|e| at(rpath, e))
}

/// Parses one subscription as the admin API takes it (`PUT …/subscriptions/{product}`): the
/// same keys as in a model file, without `product`, which the path gives.
pub fn subscription_from_json(
    product: &str,
    body: &serde_json::Value,
    products: &[Product],
) -> Result<Subscription> {
    let mut body = body.clone();
    let Some(obj) = body.as_object_mut() else {
        return Err(Error::Invalid(
            "a subscription must be a JSON object".into(),
        ));
    };
    if obj.contains_key("product")
        && obj.get("product") != Some(&serde_json::Value::String(product.into()))
    {
        return Err(Error::Invalid(format!(
            "product: the body names another product than the path ({product})"
        )));
    }
    obj.insert("product".into(), product.into());
    let raw: RawSubscription =
        serde_json::from_value(body).map_err(|e| Error::Invalid(format!("subscription: {e}")))?;
    build_subscription("subscription", raw, products)
}

/// Parses one rule as the admin API takes it (`PUT …/rules/{name}`).
pub fn rule_from_json(name: &str, body: &serde_json::Value, products: &[Product]) -> Result<Rule> {
    let mut body = body.clone();
    let Some(obj) = body.as_object_mut() else {
        return Err(Error::Invalid("a rule must be a JSON object".into()));
    };
    if obj.contains_key("name") && obj.get("name") != Some(&serde_json::Value::String(name.into()))
    {
        return Err(Error::Invalid(format!(
            "name: the body names another rule than the path ({name})"
        )));
    }
    obj.insert("name".into(), name.into());
    let raw: RawRule =
        serde_json::from_value(body).map_err(|e| Error::Invalid(format!("rule: {e}")))?;
    build_rule("rule", raw, products)
}

/// One difference between two declarations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Something new.
    Added(String),
    /// Something that differs; the text says how.
    Changed(String),
    /// Something gone.
    Removed(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added(s) => write!(f, "+ {s}"),
            Change::Changed(s) => write!(f, "~ {s}"),
            Change::Removed(s) => write!(f, "- {s}"),
        }
    }
}

fn plan_summary(p: &Plan) -> String {
    let features: Vec<&str> = p.features.iter().map(Key::as_str).collect();
    let limits: Vec<String> = p.limits.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "rank {}, features [{}], limits [{}]{}",
        p.rank,
        features.join(", "),
        limits.join(", "),
        if p.seated { "" } else { ", takes no seat" }
    )
}

fn sub_summary(s: &Subscription) -> String {
    let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    format!(
        "plan {}, {} seats ({}), {} → {}, {}, grace {} d, on expiry {}",
        s.plan,
        s.seats,
        if s.enforcement == Enforcement::Hard {
            "hard"
        } else {
            "soft"
        },
        fmt(s.starts_at),
        s.ends_at.map(fmt).unwrap_or_else(|| "open-ended".into()),
        s.status.as_str(),
        s.grace_days,
        s.on_expiry
    ) + &match s.on_idle {
        OnIdle::Keep => String::new(),
        OnIdle::Reclaim => format!(", idle seats reclaimed after {} d", s.idle_after_days),
    }
}

fn rule_summary(r: &Rule) -> String {
    format!(
        "{} → {}/{} (priority {})",
        r.filter, r.product, r.plan, r.priority
    )
}

fn diff_maps<T>(
    label: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    summary: impl Fn(&T) -> String,
    out: &mut Vec<Change>,
) where
    T: PartialEq,
{
    for (k, v) in new {
        match old.get(k) {
            None => out.push(Change::Added(format!("{label} {k}: {}", summary(v)))),
            Some(o) if o != v => out.push(Change::Changed(format!(
                "{label} {k}: {} ⇒ {}",
                summary(o),
                summary(v)
            ))),
            _ => {}
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            out.push(Change::Removed(format!("{label} {k}: {}", summary(v))));
        }
    }
}

/// The changes that turn `old` into `new`, in a stable order. Tenants absent from `new` keep
/// what they have (a file need not list every tenant), so only declared tenants are compared.
pub fn diff(old: &Spec, new: &Spec) -> Vec<Change> {
    let mut out = Vec::new();
    let plans = |s: &Spec| -> BTreeMap<String, Plan> {
        s.products
            .iter()
            .flat_map(|p| {
                p.plans
                    .iter()
                    .map(move |pl| (format!("{}/{}", p.key, pl.key), pl.clone()))
            })
            .collect()
    };
    diff_maps("plan", &plans(old), &plans(new), plan_summary, &mut out);
    let roles = |s: &Spec| -> BTreeMap<String, Role> {
        s.products
            .iter()
            .flat_map(|p| {
                p.roles
                    .iter()
                    .map(move |r| (format!("{}/{}", p.key, r.key), r.clone()))
            })
            .collect()
    };
    diff_maps("role", &roles(old), &roles(new), role_summary, &mut out);
    for t in &new.tenants {
        let before = old.tenants.iter().find(|o| o.id == t.id);
        let subs = |ts: Option<&TenantSpec>| -> BTreeMap<String, Subscription> {
            ts.map(|ts| {
                ts.subscriptions
                    .iter()
                    .map(|s| (format!("{}:{}", ts.id, s.product), s.clone()))
                    .collect()
            })
            .unwrap_or_default()
        };
        diff_maps(
            "subscription",
            &subs(before),
            &subs(Some(t)),
            sub_summary,
            &mut out,
        );
        let rules = |ts: Option<&TenantSpec>| -> BTreeMap<String, Rule> {
            ts.map(|ts| {
                ts.rules
                    .iter()
                    .map(|r| (format!("{}:{}", ts.id, r.name), r.clone()))
                    .collect()
            })
            .unwrap_or_default()
        };
        diff_maps(
            "rule",
            &rules(before),
            &rules(Some(t)),
            rule_summary,
            &mut out,
        );
        let role_rules = |ts: Option<&TenantSpec>| -> BTreeMap<String, RoleRule> {
            ts.map(|ts| {
                ts.role_rules
                    .iter()
                    .map(|r| (format!("{}:{}", ts.id, r.name), r.clone()))
                    .collect()
            })
            .unwrap_or_default()
        };
        diff_maps(
            "role rule",
            &role_rules(before),
            &role_rules(Some(t)),
            |r| format!("{} → {}/{}", r.filter, r.product, r.role),
            &mut out,
        );
        let source_before = before.and_then(|b| b.role_source);
        if let Some(source) = t.role_source
            && Some(source) != source_before
        {
            out.push(Change::Changed(format!(
                "role source {}: {}",
                t.id,
                source.as_str()
            )));
        }
    }
    out
}

fn role_summary(r: &Role) -> String {
    let permissions: Vec<&str> = r.permissions.iter().map(Key::as_str).collect();
    format!(
        "permissions [{}]{}",
        permissions.join(", "),
        if r.requires_license {
            ""
        } else {
            ", without a license"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[products]]
key = "workspace"
name = "Workspace"
[[products.plans]]
key = "free"
rank = 0
features = ["docs.read"]
limits = { projects = 3 }
[[products.plans]]
key = "pro"
rank = 1
features = ["docs.read", "docs.write", "export"]
limits = { projects = 100 }

[[tenants]]
id = "t-1"
[[tenants.subscriptions]]
product = "workspace"
plan = "pro"
seats = 50
starts_at = "2026-01-01T00:00:00Z"
ends_at = "2027-01-01T00:00:00Z"
grace_days = 7
on_expiry = "downgrade:free"
enforcement = "hard"
[[tenants.rules]]
name = "engineering"
filter = 'groups.display eq "Engineering"'
product = "workspace"
plan = "pro"
priority = 10
"#;

    #[test]
    fn the_issue_example_parses() {
        let spec = Spec::from_toml(EXAMPLE).unwrap();
        assert_eq!(spec.products[0].plans.len(), 2);
        let sub = &spec.tenants[0].subscriptions[0];
        assert_eq!((sub.seats, sub.grace_days), (50, 7));
        assert_eq!(
            sub.on_expiry,
            OnExpiry::Downgrade(Key::new("plan", "free").unwrap())
        );
        assert_eq!(spec.tenants[0].rules[0].priority, 10);
        assert!(diff(&spec, &spec).is_empty());
    }

    #[test]
    fn every_mistake_is_named() {
        let cases = [
            (
                EXAMPLE.replace("seats = 50", "seats = -5"),
                "tenants[0].subscriptions[0].seats",
            ),
            (
                EXAMPLE.replace(
                    r#"plan = "pro"
seats"#,
                    r#"plan = "gold"
seats"#,
                ),
                "no plan gold",
            ),
            (
                EXAMPLE.replace("2027-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
                "ends_at must be after starts_at",
            ),
            (
                EXAMPLE.replace(
                    r#"'groups.display eq "Engineering"'"#,
                    r#"'groups.display eq'"#,
                ),
                "tenants[0].rules[0]",
            ),
            (
                EXAMPLE.replace("grace_days = 7", "grace_dayz = 7"),
                "grace_dayz",
            ),
            (
                EXAMPLE.replace("downgrade:free", "downgrade:nope"),
                "no plan nope",
            ),
            (EXAMPLE.replace("rank = 1", "rank = 0"), "rank"),
        ];
        for (text, needle) in cases {
            let e = Spec::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "expected '{needle}' in: {e}");
        }
    }

    #[test]
    fn diff_reads_like_a_migration_plan() {
        let old = Spec::from_toml(EXAMPLE).unwrap();
        let new = Spec::from_toml(
            &EXAMPLE
                .replace("seats = 50", "seats = 30")
                .replace(
                    r#"features = ["docs.read", "docs.write", "export"]"#,
                    r#"features = ["docs.read", "docs.write"]"#,
                )
                .replace("priority = 10", "priority = 20"),
        )
        .unwrap();
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with("~ plan workspace/pro:") && lines[0].contains("export"));
        assert!(
            lines[1].starts_with("~ subscription t-1:workspace:") && lines[1].contains("30 seats")
        );
        assert!(
            lines[2].starts_with("~ rule t-1:engineering:") && lines[2].contains("priority 20")
        );
    }
}
