//! Effective entitlements: what a user may use, from the licenses they hold.
//!
//! Features are the union of the features of every active license's plan; a limit is the
//! largest value any active license's plan gives it. A waitlisted license grants nothing of
//! its plan; while it waits, it grants the product's best seat-free plan ranked below it, if
//! there is one ([`Product::while_waiting`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Key, Plan, Product};

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
    for h in held {
        let Some((product, plan)) = products
            .iter()
            .find(|p| p.key == h.product)
            .and_then(|p| Some((p, p.plan(&h.plan)?)))
        else {
            continue;
        };
        let plan = match h.state {
            LicenseState::Active => plan,
            LicenseState::Waitlisted => match product.while_waiting(plan) {
                Some(meanwhile) => meanwhile,
                None => continue,
            },
        };
        out.plans.insert(h.product.clone(), plan.key.clone());
        out.features.extend(plan.features.iter().cloned());
        for (k, v) in &plan.limits {
            let slot = out.limits.entry(k.clone()).or_insert(*v);
            *slot = (*slot).max(*v);
        }
    }
    out
}

/// What an application asks about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question<'a> {
    /// May the user use this feature?
    Feature(&'a str),
    /// What is the user's value of this limit?
    Limit(&'a str),
}

/// A license as a check reads it: the plan itself, resolved once when the license is loaded,
/// so a check looks nothing up but the feature or limit.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Its state.
    pub state: LicenseState,
}

/// The answer to a check, with a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Allowed or not (for a limit: the user holds it with a value above zero).
    pub allowed: bool,
    /// The plan that answered (allowed), or the plan held that did not.
    pub plan: Option<Key>,
    /// A limit's value.
    pub value: Option<i64>,
    /// Why: `plan pro grants feature export`, `plan free lacks feature export`,
    /// `waitlisted: seat limit reached`, `subscription expired`, `not licensed`,
    /// `user inactive`.
    pub reason: String,
}

fn deny(plan: Option<Key>, reason: String) -> Answer {
    Answer {
        allowed: false,
        plan,
        value: None,
        reason,
    }
}

/// Answers a check for a user from the licenses they hold. `lapsed` is asked only when the
/// user holds nothing: whether a product that would answer has a subscription whose term is
/// over (then the reason is `subscription expired` rather than `not licensed`).
pub fn answer(
    active: bool,
    grants: &[Grant<'_>],
    question: Question<'_>,
    lapsed: impl FnOnce() -> bool,
) -> Answer {
    if !active {
        return deny(None, "user inactive".into());
    }
    let held = || grants.iter().filter(|g| g.state == LicenseState::Active);
    // The best active plan that answers: highest rank for a feature, largest value for a limit.
    let mut best: Option<(&Plan, Option<i64>)> = None;
    for g in held() {
        let found = match question {
            Question::Feature(f) => g.plan.features.contains(f).then_some(None),
            Question::Limit(l) => g.plan.limits.get(l).map(|v| Some(*v)),
        };
        if let Some(value) = found {
            let better = match best {
                None => true,
                Some((p, v)) => value > v || (value == v && g.plan.rank > p.rank),
            };
            if better {
                best = Some((g.plan, value));
            }
        }
    }
    if let Some((plan, value)) = best {
        return match (question, value) {
            (Question::Feature(f), _) => Answer {
                allowed: true,
                plan: Some(plan.key.clone()),
                value: None,
                reason: format!("plan {} grants feature {f}", plan.key),
            },
            (Question::Limit(l), value) => {
                let v = value.unwrap_or_default();
                Answer {
                    allowed: v > 0,
                    plan: Some(plan.key.clone()),
                    value: Some(v),
                    reason: format!("plan {} sets limit {l} to {v}", plan.key),
                }
            }
        };
    }
    let plans: Vec<&str> = held().map(|g| g.plan.key.as_str()).collect();
    if let Some(first) = plans.first() {
        let (noun, verb) = if plans.len() == 1 {
            ("plan", "lacks")
        } else {
            ("plans", "lack")
        };
        let what = match question {
            Question::Feature(f) => format!("feature {f}"),
            Question::Limit(l) => format!("limit {l}"),
        };
        let plan = Key::new("plan", first).ok();
        let mut reason = format!("{noun} {} {verb} {what}", plans.join(", "));
        if grants.iter().any(|g| g.state == LicenseState::Waitlisted) {
            reason.push_str("; waitlisted: seat limit reached");
        }
        return deny(plan, reason);
    }
    if grants.iter().any(|g| g.state == LicenseState::Waitlisted) {
        return deny(None, "waitlisted: seat limit reached".into());
    }
    if lapsed() {
        return deny(None, "subscription expired".into());
    }
    deny(None, "not licensed".into())
}

/// Whether a plan of a product would answer a question (a feature it grants, a limit it
/// sets): which products matter for `subscription expired`.
pub fn answers(product: &Product, question: Question<'_>) -> bool {
    product.plans.iter().any(|p| match question {
        Question::Feature(f) => p.features.contains(f),
        Question::Limit(l) => p.limits.contains_key(l),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Key {
        Key::new("key", s).unwrap()
    }

    fn products() -> Vec<Product> {
        let plan = |key: &str, rank, features: &[&str], projects| Plan {
            key: k(key),
            rank,
            features: features.iter().map(|f| k(f)).collect(),
            limits: [(k("projects"), projects)].into_iter().collect(),
            seated: true,
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
        let free = p[0].plan(&k("free")).unwrap();
        let pro = p[0].plan(&k("pro")).unwrap();
        let basic = p[1].plan(&k("basic")).unwrap();
        let active = |plan| Grant {
            plan,
            state: LicenseState::Active,
        };
        let ask = |grants: &[Grant<'_>], q| answer(true, grants, q, || false);
        let a = ask(&[active(free)], Question::Feature("export"));
        assert_eq!(
            (a.allowed, a.reason.as_str()),
            (false, "plan free lacks feature export")
        );
        assert_eq!(a.plan, Some(k("free")));
        let a = ask(&[active(free), active(pro)], Question::Feature("export"));
        assert_eq!((a.allowed, a.plan), (true, Some(k("pro"))));
        assert_eq!(a.reason, "plan pro grants feature export");
        let a = ask(&[active(free), active(basic)], Question::Feature("export"));
        assert_eq!(a.reason, "plans free, basic lack feature export");
        let a = ask(&[active(free), active(pro)], Question::Limit("projects"));
        assert_eq!(
            (a.allowed, a.value, a.plan),
            (true, Some(100), Some(k("pro")))
        );
        assert_eq!(a.reason, "plan pro sets limit projects to 100");
        let a = ask(&[active(basic)], Question::Limit("seats"));
        assert_eq!(
            (a.allowed, a.reason.as_str()),
            (false, "plan basic lacks limit seats")
        );
        let waiting = [Grant {
            plan: pro,
            state: LicenseState::Waitlisted,
        }];
        let a = ask(&waiting, Question::Feature("export"));
        assert_eq!(
            (a.allowed, a.reason.as_str()),
            (false, "waitlisted: seat limit reached")
        );
        assert_eq!(ask(&[], Question::Feature("export")).reason, "not licensed");
        let a = answer(true, &[], Question::Feature("export"), || true);
        assert_eq!(a.reason, "subscription expired");
        let a = answer(false, &[active(pro)], Question::Feature("export"), || false);
        assert_eq!((a.allowed, a.reason.as_str()), (false, "user inactive"));
        assert!(answers(&p[0], Question::Feature("export")));
        assert!(!answers(&p[1], Question::Feature("export")));
    }

    #[test]
    fn waiting_for_a_seat_keeps_the_seat_free_plan_below() {
        let mut p = products();
        let waiting = [Held {
            product: k("workspace"),
            plan: k("pro"),
            state: LicenseState::Waitlisted,
        }];
        // Every plan seated: a waiting license grants nothing.
        assert_eq!(effective(&waiting, &p), Entitlements::default());
        // free takes no seat: the user keeps it while waiting for pro.
        p[0].plans[0].seated = false;
        let e = effective(&waiting, &p);
        assert_eq!(e.plans.get(&k("workspace")), Some(&k("free")));
        assert_eq!(e.features, [k("docs.read")].into_iter().collect());
        assert_eq!(e.limits.get(&k("projects")), Some(&3));
        let pro = p[0].plan(&k("pro")).unwrap();
        let free = p[0].plan(&k("free")).unwrap();
        assert_eq!(p[0].while_waiting(free), None, "nothing below free");
        let grants = [
            Grant {
                plan: pro,
                state: LicenseState::Waitlisted,
            },
            Grant {
                plan: p[0].while_waiting(pro).unwrap(),
                state: LicenseState::Active,
            },
        ];
        let a = answer(true, &grants, Question::Feature("docs.read"), || false);
        assert!(a.allowed, "{a:?}");
        let a = answer(true, &grants, Question::Feature("export"), || false);
        assert_eq!(
            a.reason,
            "plan free lacks feature export; waitlisted: seat limit reached"
        );
    }
}
