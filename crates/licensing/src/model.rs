//! The licensing model: products, plans, entitlements, subscriptions and assignment rules.
//! Values are validated once, when built, so the decision code can trust them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use scim::filter::Filter;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// A key (product, plan, feature, limit, rule name): 1–64 characters of `a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

// Keys compare as their text, so sets and maps of keys are searched by `&str`.
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Key {
    /// Validates a key.
    pub fn new(what: &str, s: &str) -> Result<Key> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if ok {
            Ok(Key(s.to_string()))
        } else {
            Err(Error::Invalid(format!(
                "{what} '{s}' must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-'"
            )))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plan: what it grants, and its rank among the product's plans (free < pro < enterprise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The plan's key, unique within its product.
    pub key: Key,
    /// Higher ranks are higher tiers; "upgrade" and "downgrade" follow rank.
    pub rank: i32,
    /// On/off entitlements.
    pub features: BTreeSet<Key>,
    /// Numeric entitlements.
    pub limits: BTreeMap<Key, i64>,
    /// Whether a license of this plan takes one of the subscription's seats. A seat-free
    /// plan (a free tier, viewers) is always active and never counts against seats.
    pub seated: bool,
}

/// A product and its plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// The product's key.
    pub key: Key,
    /// Display name.
    pub name: String,
    /// Plans, unique by key and by rank.
    pub plans: Vec<Plan>,
    /// Roles of the product, unique by key: what each permits (see [`crate::roles`]).
    pub roles: Vec<Role>,
}

/// A role of a product: the permissions it grants, to users a tenant's role rules (or their
/// SCIM `roles`) give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The role's key, unique within its product.
    pub key: Key,
    /// What it permits (`billing.manage`).
    pub permissions: BTreeSet<Key>,
    /// Whether it counts only while its holder has an active license of the product.
    pub requires_license: bool,
}

impl Product {
    /// Builds a product, checking that plan keys and ranks are unique.
    pub fn new(key: Key, name: String, plans: Vec<Plan>) -> Result<Product> {
        let mut keys = BTreeSet::new();
        let mut ranks = BTreeSet::new();
        for p in &plans {
            if !keys.insert(&p.key) {
                return Err(Error::Invalid(format!(
                    "product {key}: plan {} is declared twice",
                    p.key
                )));
            }
            if !ranks.insert(p.rank) {
                return Err(Error::Invalid(format!(
                    "product {key}: two plans have rank {}; ranks order the tiers and must differ",
                    p.rank
                )));
            }
        }
        Ok(Product {
            key,
            name,
            plans,
            roles: Vec::new(),
        })
    }

    /// The product with these roles, checking that their keys are unique.
    pub fn with_roles(mut self, roles: Vec<Role>) -> Result<Product> {
        let mut keys = BTreeSet::new();
        for r in &roles {
            if !keys.insert(&r.key) {
                return Err(Error::Invalid(format!(
                    "product {}: role {} is declared twice",
                    self.key, r.key
                )));
            }
        }
        self.roles = roles;
        Ok(self)
    }

    /// A role by key.
    pub fn role(&self, key: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.key.as_str() == key)
    }

    /// A plan by key.
    pub fn plan(&self, key: &Key) -> Option<&Plan> {
        self.plans.iter().find(|p| &p.key == key)
    }

    /// What a user waiting for a seat of `plan` may use meanwhile: the highest seat-free plan
    /// ranked below it, if the product has one (a viewer moved up to a paid plan keeps
    /// viewing while they wait).
    pub fn while_waiting(&self, plan: &Plan) -> Option<&Plan> {
        self.plans
            .iter()
            .filter(|p| !p.seated && p.rank < plan.rank)
            .max_by_key(|p| p.rank)
    }
}

/// An administrator's direct assignment of one user's plan of a product, over the rules
/// (Microsoft 365's direct assignment next to group assignment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The product.
    pub product: Key,
    /// The plan; `None` excludes the user from the product.
    pub plan: Option<Key>,
    /// Who pinned it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When it stops applying (the rules decide again).
    pub expires_at: Option<time::OffsetDateTime>,
}

impl Pin {
    /// Whether the pin applies at `now`.
    pub fn in_force(&self, now: time::OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// Where a subscription stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// In a trial.
    Trialing,
    /// Paid and current.
    Active,
    /// A payment failed; access continues until the term (and grace) ends.
    PastDue,
    /// Canceled: access continues until the term (and grace) ends.
    Canceled,
    /// Over: `on_expiry` has been applied.
    Expired,
}

impl Status {
    /// Parses the status names used in files and APIs.
    pub fn parse(s: &str) -> Result<Status> {
        Ok(match s {
            "trialing" => Status::Trialing,
            "active" => Status::Active,
            "past_due" => Status::PastDue,
            "canceled" => Status::Canceled,
            "expired" => Status::Expired,
            other => {
                return Err(Error::Invalid(format!(
                    "status '{other}' must be trialing, active, past_due, canceled or expired"
                )));
            }
        })
    }

    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Trialing => "trialing",
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Canceled => "canceled",
            Status::Expired => "expired",
        }
    }
}

/// What happens when the term and grace are over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnExpiry {
    /// Every license of the subscription is revoked.
    Revoke,
    /// Licenses move to a fallback plan of the same product.
    Downgrade(Key),
    /// Licenses stay as they are.
    Keep,
}

impl OnExpiry {
    /// Parses `revoke`, `keep` or `downgrade:<plan>`.
    pub fn parse(s: &str) -> Result<OnExpiry> {
        match s {
            "revoke" => Ok(OnExpiry::Revoke),
            "keep" => Ok(OnExpiry::Keep),
            _ => match s.strip_prefix("downgrade:") {
                Some(plan) => Ok(OnExpiry::Downgrade(Key::new("plan", plan)?)),
                None => Err(Error::Invalid(format!(
                    "on_expiry '{s}' must be revoke, keep or downgrade:<plan>"
                ))),
            },
        }
    }
}

impl fmt::Display for OnExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnExpiry::Revoke => f.write_str("revoke"),
            OnExpiry::Keep => f.write_str("keep"),
            OnExpiry::Downgrade(p) => write!(f, "downgrade:{p}"),
        }
    }
}

/// Whether seats are a hard ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Never more active licenses than seats; the rest wait.
    Hard,
    /// Everyone gets a license; the overage is flagged.
    Soft,
}

impl Enforcement {
    /// Parses `hard` or `soft`.
    pub fn parse(s: &str) -> Result<Enforcement> {
        match s {
            "hard" => Ok(Enforcement::Hard),
            "soft" => Ok(Enforcement::Soft),
            other => Err(Error::Invalid(format!(
                "enforcement '{other}' must be hard or soft"
            ))),
        }
    }
}

/// A tenant's purchase of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The product.
    pub product: Key,
    /// The purchased plan.
    pub plan: Key,
    /// Seats bought.
    pub seats: u32,
    /// Start of the term.
    pub starts_at: OffsetDateTime,
    /// End of the term, if it has one.
    pub ends_at: Option<OffsetDateTime>,
    /// Lifecycle status as last recorded.
    pub status: Status,
    /// Days of access after `ends_at` before `on_expiry` applies.
    pub grace_days: u32,
    /// What expiry does.
    pub on_expiry: OnExpiry,
    /// Hard or soft seat enforcement.
    pub enforcement: Enforcement,
    /// Days without activity after which a held seat counts as idle.
    pub idle_after_days: u32,
    /// What happens to idle seats while someone waits.
    pub on_idle: OnIdle,
}

/// What happens to a subscription's idle seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnIdle {
    /// They stay with their holders (they are only shown).
    #[default]
    Keep,
    /// While someone waits, the scheduler gives them to the waitlist, longest idle first.
    Reclaim,
}

impl OnIdle {
    /// Parses `keep` or `reclaim`.
    pub fn parse(s: &str) -> Result<OnIdle> {
        match s {
            "keep" => Ok(OnIdle::Keep),
            "reclaim" => Ok(OnIdle::Reclaim),
            other => Err(Error::Invalid(format!(
                "on_idle: '{other}' must be keep or reclaim"
            ))),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnIdle::Keep => "keep",
            OnIdle::Reclaim => "reclaim",
        }
    }
}

/// `idle_after_days` when a subscription does not say.
pub const DEFAULT_IDLE_AFTER_DAYS: u32 = 30;

impl Subscription {
    /// Checks the subscription against its product: the plan and any downgrade plan exist,
    /// and the term ends after it starts.
    pub fn validate(&self, product: &Product) -> Result<()> {
        if product.key != self.product {
            return Err(Error::Invalid(format!(
                "subscription is for {}, not {}",
                self.product, product.key
            )));
        }
        if product.plan(&self.plan).is_none() {
            return Err(Error::UnknownPlan {
                product: self.product.to_string(),
                plan: self.plan.to_string(),
            });
        }
        if let OnExpiry::Downgrade(p) = &self.on_expiry
            && product.plan(p).is_none()
        {
            return Err(Error::UnknownPlan {
                product: self.product.to_string(),
                plan: p.to_string(),
            });
        }
        if let Some(end) = self.ends_at
            && end <= self.starts_at
        {
            return Err(Error::Invalid("ends_at must be after starts_at".into()));
        }
        Ok(())
    }
}

/// An assignment rule: users matching `filter` should hold `plan` of `product`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name within the tenant.
    pub name: Key,
    /// A SCIM filter over the user (validated against the User schema).
    pub filter: Filter,
    /// Target product.
    pub product: Key,
    /// Target plan.
    pub plan: Key,
    /// Higher wins when several rules match one product.
    pub priority: i32,
}

impl Rule {
    /// Builds a rule, parsing and validating its filter against the SCIM User schema.
    pub fn new(name: Key, filter: &str, product: Key, plan: Key, priority: i32) -> Result<Rule> {
        let parsed = scim::filter::parse(filter)
            .map_err(|e| Error::BadFilter(format!("rule {name}: {e}")))?;
        parsed
            .validate(&scim::schema::USER_TYPE)
            .map_err(|e| Error::BadFilter(format!("rule {name}: {e}")))?;
        let reads_licenses = parsed.paths().iter().any(|p| {
            scim::filter::resolve(&scim::schema::USER_TYPE, p).is_ok_and(|r| {
                r.location == scim::schema::Location::Extension(scim::schema::LICENSING_USER_SCHEMA)
            })
        });
        if reads_licenses {
            return Err(Error::BadFilter(format!(
                "rule {name}: a rule cannot read the licensing extension it decides"
            )));
        }
        Ok(Rule {
            name,
            filter: parsed,
            product,
            plan,
            priority,
        })
    }
}
