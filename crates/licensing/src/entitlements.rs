//! Effective entitlements: what a user may use, from the licenses they hold.
//!
//! Features are the union of the features of every active license's plan; a limit is the
//! largest value any active license's plan gives it. A waitlisted license grants nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Key, Product};

/// The state of one license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseState {
    /// Holds a seat.
    Active,
    /// Waiting for a seat.
    Waitlisted,
}

/// A license as the entitlement computation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Product.
    pub product: Key,
    /// Plan.
    pub plan: Key,
    /// State.
    pub state: LicenseState,
}

/// What a user may use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entitlements {
    /// Plans in force, per product.
    pub plans: BTreeMap<Key, Key>,
    /// Features granted.
    pub features: BTreeSet<Key>,
    /// Limits granted.
    pub limits: BTreeMap<Key, i64>,
}

/// Computes a user's entitlements from their licenses.
pub fn effective(held: &[Held], products: &[Product]) -> Entitlements {
    let mut out = Entitlements::default();
    for h in held.iter().filter(|h| h.state == LicenseState::Active) {
        let Some(plan) = products
            .iter()
            .find(|p| p.key == h.product)
            .and_then(|p| p.plan(&h.plan))
        else {
            continue;
        };
        out.plans.insert(h.product.clone(), h.plan.clone());
        out.features.extend(plan.features.iter().cloned());
        for (k, v) in &plan.limits {
            let slot = out.limits.entry(k.clone()).or_insert(*v);
            *slot = (*slot).max(*v);
        }
    }
    out
}

/// The answer to "may this user use this feature?", with a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed or not.
    pub allowed: bool,
    /// Why: `licensed`, `not licensed`, `waitlisted: seat limit reached`,
    /// `plan free lacks feature export`.
    pub reason: String,
}

/// Decides a feature check.
pub fn check_feature(held: &[Held], products: &[Product], feature: &Key) -> Verdict {
    let ent = effective(held, products);
    if ent.features.contains(feature) {
        return Verdict {
            allowed: true,
            reason: "licensed".into(),
        };
    }
    if let Some(plan) = ent.plans.values().next() {
        return Verdict {
            allowed: false,
            reason: format!("plan {plan} lacks feature {feature}"),
        };
    }
    if held.iter().any(|h| h.state == LicenseState::Waitlisted) {
        return Verdict {
            allowed: false,
            reason: "waitlisted: seat limit reached".into(),
        };
    }
    Verdict {
        allowed: false,
        reason: "not licensed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Plan;

    fn k(s: &str) -> Key {
        Key::new("key", s).unwrap()
    }

    fn products() -> Vec<Product> {
        let plan = |key: &str, rank, features: &[&str], projects| Plan {
            key: k(key),
            rank,
            features: features.iter().map(|f| k(f)).collect(),
            limits: [(k("projects"), projects)].into_iter().collect(),
        };
        vec![
            Product::new(
                k("workspace"),
                "Workspace".into(),
                vec![
                    plan("free", 0, &["docs.read"], 3),
                    plan("pro", 1, &["docs.read", "export"], 100),
                ],
            )
            .unwrap(),
            Product::new(
                k("analytics"),
                "Analytics".into(),
                vec![plan("basic", 0, &["charts"], 10)],
            )
            .unwrap(),
        ]
    }

    #[test]
    fn union_of_features_and_largest_limits() {
        let held = [
            Held {
                product: k("workspace"),
                plan: k("pro"),
                state: LicenseState::Active,
            },
            Held {
                product: k("analytics"),
                plan: k("basic"),
                state: LicenseState::Active,
            },
        ];
        let e = effective(&held, &products());
        assert_eq!(
            e.features,
            [k("charts"), k("docs.read"), k("export")]
                .into_iter()
                .collect()
        );
        assert_eq!(e.limits[&k("projects")], 100);
    }

    #[test]
    fn reasons_are_specific() {
        let p = products();
        let free = [Held {
            product: k("workspace"),
            plan: k("free"),
            state: LicenseState::Active,
        }];
        assert_eq!(
            check_feature(&free, &p, &k("export")).reason,
            "plan free lacks feature export"
        );
        assert!(check_feature(&free, &p, &k("docs.read")).allowed);
        let waiting = [Held {
            product: k("workspace"),
            plan: k("pro"),
            state: LicenseState::Waitlisted,
        }];
        assert_eq!(
            check_feature(&waiting, &p, &k("export")),
            Verdict {
                allowed: false,
                reason: "waitlisted: seat limit reached".into()
            }
        );
        assert_eq!(check_feature(&[], &p, &k("export")).reason, "not licensed");
    }
}
