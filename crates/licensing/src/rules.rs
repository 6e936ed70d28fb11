//! Which plan each user should hold: assignment rules evaluated against the user.
//!
//! For each product, the matching rule with the highest priority wins; equal priorities go to
//! the higher-ranked plan, then to the rule name (so the outcome never depends on the order
//! rules were written in). A user never holds two plans of one product. A tenant without any
//! rules gives every active user the plan of each subscription. Inactive users hold nothing.
//!
//! A pin (direct assignment by an administrator) overrides the rules for its user and product
//! until it expires: a plan, or nothing at all (an exclusion). It is still capped by the plan
//! the subscription grants, and still takes a seat like any license.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{Key, Pin, Product, Rule, Subscription};

/// Why a user should hold a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Because {
    /// This rule matched (and won).
    Rule(Key),
    /// The tenant has no rules: every active user holds each subscription's plan.
    NoRules,
    /// An administrator pinned the plan.
    Pinned {
        /// Who pinned it.
        by: String,
        /// Why, as they wrote it.
        reason: String,
    },
}

/// What a user should hold for one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The plan.
    pub plan: Key,
    /// Why.
    pub because: Because,
}

/// What a user should hold for one product once the subscription's term is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The plan in force.
    pub plan: Key,
    /// Why the user should hold the product.
    pub because: Because,
    /// The plan the rule asked for, when the term lowered it (expiry with `downgrade`).
    pub capped_from: Option<Key>,
}

/// The plan per product a user should hold at `now`: [`desired`], then the subscription's
/// term. A rule never grants more than the plan the subscription grants at that instant: after
/// expiry with `downgrade:free`, a rule for `pro` gives `free`; with `revoke` (or before the
/// term starts) it gives nothing.
pub fn decide(
    user: &Value,
    active: bool,
    rules: &[Rule],
    subscriptions: &[Subscription],
    products: &[Product],
    now: time::OffsetDateTime,
) -> BTreeMap<Key, Decided> {
    decide_pinned(user, active, rules, &[], subscriptions, products, now)
}

/// [`decide`] with the user's pins: each pin in force at `now` replaces what the rules want
/// for its product (a plan, or nothing).
pub fn decide_pinned(
    user: &Value,
    active: bool,
    rules: &[Rule],
    pins: &[Pin],
    subscriptions: &[Subscription],
    products: &[Product],
    now: time::OffsetDateTime,
) -> BTreeMap<Key, Decided> {
    let mut wanted = desired(user, active, rules, subscriptions, products);
    if active {
        for pin in pins.iter().filter(|p| p.in_force(now)) {
            if !subscriptions.iter().any(|s| s.product == pin.product) {
                continue;
            }
            match &pin.plan {
                None => {
                    wanted.remove(&pin.product);
                }
                Some(plan) => {
                    wanted.insert(
                        pin.product.clone(),
                        Desired {
                            plan: plan.clone(),
                            because: Because::Pinned {
                                by: pin.by.clone(),
                                reason: pin.reason.clone(),
                            },
                        },
                    );
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (product, want) in wanted {
        let Some(sub) = subscriptions.iter().find(|s| s.product == product) else {
            continue;
        };
        let Some(prod) = products.iter().find(|p| p.key == product) else {
            continue;
        };
        let granted = match crate::lifecycle::grant(sub, now) {
            crate::lifecycle::Grant::Plan(p) => p,
            crate::lifecycle::Grant::Nothing(_) => continue,
        };
        let rank = |k: &Key| prod.plan(k).map_or(i32::MIN, |p| p.rank);
        let (plan, capped_from) = if rank(&want.plan) > rank(&granted) {
            (granted, Some(want.plan))
        } else {
            (want.plan, None)
        };
        out.insert(
            product,
            Decided {
                plan,
                because: want.because,
                capped_from,
            },
        );
    }
    out
}

/// The desired plan per product for one user.
///
/// `user` is the SCIM User resource as the filter engine sees it (with `groups`, including
/// nested memberships, so rules on groups see indirect members). Only products the tenant
/// subscribes to are considered.
pub fn desired(
    user: &Value,
    active: bool,
    rules: &[Rule],
    subscriptions: &[Subscription],
    products: &[Product],
) -> BTreeMap<Key, Desired> {
    let mut out = BTreeMap::new();
    if !active {
        return out;
    }
    if rules.is_empty() {
        for s in subscriptions {
            out.insert(
                s.product.clone(),
                Desired {
                    plan: s.plan.clone(),
                    because: Because::NoRules,
                },
            );
        }
        return out;
    }
    let rank = |product: &Key, plan: &Key| -> i32 {
        products
            .iter()
            .find(|p| &p.key == product)
            .and_then(|p| p.plan(plan))
            .map_or(i32::MIN, |p| p.rank)
    };
    let mut best: BTreeMap<Key, &Rule> = BTreeMap::new();
    for rule in rules {
        if !subscriptions.iter().any(|s| s.product == rule.product) {
            continue;
        }
        if !rule.filter.matches(&scim::schema::USER_TYPE, user) {
            continue;
        }
        let better = match best.get(&rule.product) {
            None => true,
            Some(cur) => {
                (
                    rule.priority,
                    rank(&rule.product, &rule.plan),
                    std::cmp::Reverse(&rule.name),
                ) > (
                    cur.priority,
                    rank(&cur.product, &cur.plan),
                    std::cmp::Reverse(&cur.name),
                )
            }
        };
        if better {
            best.insert(rule.product.clone(), rule);
        }
    }
    for (product, rule) in best {
        out.insert(
            product,
            Desired {
                plan: rule.plan.clone(),
                because: Because::Rule(rule.name.clone()),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Enforcement, OnExpiry, Plan, Status};
    use serde_json::json;
    use time::macros::datetime;

    fn k(s: &str) -> Key {
        Key::new("key", s).unwrap()
    }

    fn setup() -> (Vec<Product>, Vec<Subscription>) {
        let plan = |key: &str, rank| Plan {
            key: k(key),
            rank,
            features: Default::default(),
            limits: Default::default(),
            seated: true,
        };
        let product = Product::new(
            k("workspace"),
            "Workspace".into(),
            vec![plan("free", 0), plan("pro", 1), plan("enterprise", 2)],
        )
        .unwrap();
        let sub = Subscription {
            product: k("workspace"),
            plan: k("pro"),
            seats: 5,
            starts_at: datetime!(2026-01-01 0:00 UTC),
            ends_at: None,
            status: Status::Active,
            grace_days: 0,
            on_expiry: OnExpiry::Revoke,
            enforcement: Enforcement::Hard,
            idle_after_days: 30,
            on_idle: Default::default(),
        };
        (vec![product], vec![sub])
    }

    fn user() -> Value {
        json!({"userName": "alice", "title": "Engineering Manager", "groups": [{"value": "g1", "display": "Engineering", "type": "indirect"}]})
    }

    #[test]
    fn highest_priority_then_highest_rank_wins() {
        let (products, subs) = setup();
        let rules = vec![
            Rule::new(
                k("eng"),
                r#"groups.display eq "Engineering""#,
                k("workspace"),
                k("pro"),
                10,
            )
            .unwrap(),
            Rule::new(
                k("managers"),
                r#"title co "Manager""#,
                k("workspace"),
                k("enterprise"),
                10,
            )
            .unwrap(),
            Rule::new(k("everyone"), "userName pr", k("workspace"), k("free"), 1).unwrap(),
        ];
        let d = desired(&user(), true, &rules, &subs, &products);
        assert_eq!(
            d[&k("workspace")],
            Desired {
                plan: k("enterprise"),
                because: Because::Rule(k("managers"))
            }
        );
        let d = desired(&json!({"userName": "bob"}), true, &rules, &subs, &products);
        assert_eq!(d[&k("workspace")].plan, k("free"));
        assert!(
            desired(&user(), false, &rules, &subs, &products).is_empty(),
            "inactive users hold nothing"
        );
    }

    #[test]
    fn no_rules_means_every_active_user_gets_the_subscription_plan() {
        let (products, subs) = setup();
        let d = desired(&user(), true, &[], &subs, &products);
        assert_eq!(
            d[&k("workspace")],
            Desired {
                plan: k("pro"),
                because: Because::NoRules
            }
        );
    }

    #[test]
    fn bad_rule_filters_are_refused() {
        assert!(matches!(
            Rule::new(k("x"), "title eq", k("workspace"), k("pro"), 1),
            Err(crate::Error::BadFilter(_))
        ));
        assert!(matches!(
            Rule::new(k("x"), r#"nosuch eq "y""#, k("workspace"), k("pro"), 1),
            Err(crate::Error::BadFilter(_))
        ));
        assert!(Key::new("plan", "Pro Plan").is_err());
    }
}
