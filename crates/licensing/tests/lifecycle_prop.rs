//! Property tests over whole histories: users created, (de)activated, moved between nested
//! groups and retitled; rules switched on and off; seats, plans and terms changed; the clock
//! moved. After every step, under hard enforcement:
//! - active licenses never exceed seats;
//! - no inactive user holds a license;
//! - seats go by queue order: the state is exactly what `seats::allocate` decides from the
//!   claims (nobody waits while a seat is free, the earliest in line hold the seats);
//! - deciding again changes nothing.
//!
//! The outcome does not depend on how arrivals and seat moves are batched: settling after
//! every step or after several gives the same licenses (each step has its own instant, and a
//! user who stops qualifying loses the license with that step).

use std::collections::{BTreeMap, BTreeSet};

use licensing::model::{Enforcement, Key, OnExpiry, Plan, Product, Rule, Status, Subscription};
use licensing::rules::decide;
use licensing::seats::{Claim, allocate, rebalance};
use proptest::prelude::*;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

fn k(s: &str) -> Key {
    Key::new("key", s).unwrap()
}

const GROUPS: [&str; 3] = ["Engineering", "Platform", "Sales"]; // Platform sits inside Engineering

#[derive(Debug, Clone)]
enum Step {
    AddUser {
        manager: bool,
        group: Option<usize>,
    },
    SetActive(usize, bool),
    Join(usize, usize),
    Leave(usize, usize),
    Retitle(usize, bool),
    ToggleRule(usize),
    Seats(u32),
    Plan(bool),
    Term {
        days: i64,
        grace: u32,
        on_expiry: u8,
    },
    Advance(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<bool>(), prop::option::of(0usize..3)).prop_map(|(manager, group)| Step::AddUser { manager, group }),
        2 => (0usize..12, any::<bool>()).prop_map(|(u, a)| Step::SetActive(u, a)),
        2 => (0usize..12, 0usize..3).prop_map(|(u, g)| Step::Join(u, g)),
        1 => (0usize..12, 0usize..3).prop_map(|(u, g)| Step::Leave(u, g)),
        1 => (0usize..12, any::<bool>()).prop_map(|(u, m)| Step::Retitle(u, m)),
        1 => (0usize..3).prop_map(Step::ToggleRule),
        1 => (0u32..8).prop_map(Step::Seats),
        1 => any::<bool>().prop_map(Step::Plan),
        1 => (1i64..40, 0u32..5, 0u8..3).prop_map(|(days, grace, on_expiry)| Step::Term { days, grace, on_expiry }),
        1 => (0i64..20).prop_map(Step::Advance),
    ]
}

#[derive(Debug, Clone)]
struct User {
    name: String,
    active: bool,
    manager: bool,
    groups: BTreeSet<usize>,
}

/// A license as a store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct License {
    plan: Key,
    active: bool,
    /// Place in line: when the user began to qualify.
    queue: i64,
}

#[derive(Debug, Clone)]
struct World {
    users: Vec<User>,
    rules_on: [bool; 3],
    sub: Subscription,
    now: OffsetDateTime,
    /// Microseconds since the start, one per step: each change has its own instant.
    tick: i64,
    /// When each user began to qualify for the product (kept while they qualify).
    since: BTreeMap<String, i64>,
    licenses: BTreeMap<String, License>,
}

fn products() -> Vec<Product> {
    let plan = |key: &str, rank| Plan {
        key: k(key),
        rank,
        features: Default::default(),
        limits: Default::default(),
        seated: true,
    };
    vec![
        Product::new(
            k("ws"),
            "Workspace".into(),
            vec![plan("free", 0), plan("pro", 1), plan("enterprise", 2)],
        )
        .unwrap(),
    ]
}

fn all_rules() -> [Rule; 3] {
    [
        Rule::new(
            k("engineering"),
            r#"groups.display eq "Engineering""#,
            k("ws"),
            k("pro"),
            10,
        )
        .unwrap(),
        Rule::new(
            k("managers"),
            r#"title co "Manager""#,
            k("ws"),
            k("enterprise"),
            10,
        )
        .unwrap(),
        Rule::new(k("everyone"), "userName pr", k("ws"), k("free"), 1).unwrap(),
    ]
}

impl World {
    fn new() -> World {
        let start = time::macros::datetime!(2026-01-01 0:00 UTC);
        World {
            users: Vec::new(),
            rules_on: [true, false, false],
            sub: Subscription {
                product: k("ws"),
                plan: k("enterprise"),
                seats: 3,
                starts_at: start,
                ends_at: Some(start + Duration::days(30)),
                status: Status::Active,
                grace_days: 2,
                on_expiry: OnExpiry::Downgrade(k("free")),
                enforcement: Enforcement::Hard,
                idle_after_days: 30,
                on_idle: Default::default(),
            },
            now: start + Duration::days(1),
            tick: 0,
            since: BTreeMap::new(),
            licenses: BTreeMap::new(),
        }
    }

    fn doc(&self, u: &User) -> Value {
        let mut groups: BTreeSet<usize> = u.groups.clone();
        if groups.contains(&1) {
            groups.insert(0); // nested: Platform is inside Engineering
        }
        json!({
            "userName": u.name,
            "active": u.active,
            "title": if u.manager { "Engineering Manager" } else { "Engineer" },
            "groups": groups.iter().map(|g| json!({"value": format!("g{g}"), "display": GROUPS[*g]})).collect::<Vec<_>>(),
        })
    }

    fn apply(&mut self, s: &Step) {
        self.tick += 1;
        match s {
            Step::AddUser { manager, group } => {
                let name = format!("u{:02}", self.users.len());
                self.users.push(User {
                    name,
                    active: true,
                    manager: *manager,
                    groups: group.iter().copied().collect(),
                });
            }
            Step::SetActive(u, a) => {
                if let Some(u) = self.users.get_mut(*u) {
                    u.active = *a
                }
            }
            Step::Join(u, g) => {
                if let Some(u) = self.users.get_mut(*u) {
                    u.groups.insert(*g);
                }
            }
            Step::Leave(u, g) => {
                if let Some(u) = self.users.get_mut(*u) {
                    u.groups.remove(g);
                }
            }
            Step::Retitle(u, m) => {
                if let Some(u) = self.users.get_mut(*u) {
                    u.manager = *m
                }
            }
            Step::ToggleRule(r) => self.rules_on[*r] = !self.rules_on[*r],
            Step::Seats(n) => self.sub.seats = *n,
            Step::Plan(e) => self.sub.plan = k(if *e { "enterprise" } else { "pro" }),
            Step::Term {
                days,
                grace,
                on_expiry,
            } => {
                self.sub.ends_at = Some(self.now + Duration::days(*days));
                self.sub.grace_days = *grace;
                self.sub.status = Status::Active;
                self.sub.on_expiry = match on_expiry {
                    0 => OnExpiry::Revoke,
                    1 => OnExpiry::Keep,
                    _ => OnExpiry::Downgrade(k("free")),
                };
            }
            Step::Advance(d) => self.now += Duration::days(*d),
        }
        // Who qualifies changes with each step; note when each user began to qualify.
        let wanted = self.wanted();
        self.since.retain(|u, _| wanted.contains_key(u));
        for u in wanted.keys() {
            self.since.entry(u.clone()).or_insert(self.tick);
        }
        // A user who stops qualifying loses the license with that change (in the server every
        // change is its own transaction); a batch only defers arrivals and seat moves.
        let since = &self.since;
        self.licenses.retain(|u, _| since.contains_key(u));
    }

    fn rules(&self) -> Vec<Rule> {
        all_rules()
            .into_iter()
            .zip(self.rules_on)
            .filter(|(_, on)| *on)
            .map(|(r, _)| r)
            .collect()
    }

    /// The plan each user should hold now.
    fn wanted(&self) -> BTreeMap<String, Key> {
        let (rules, products) = (self.rules(), products());
        let subs = [self.sub.clone()];
        self.users
            .iter()
            .filter_map(|u| {
                let d = decide(&self.doc(u), u.active, &rules, &subs, &products, self.now);
                d.get(&k("ws")).map(|d| (u.name.clone(), d.plan.clone()))
            })
            .collect()
    }

    /// Re-decides, the way the server's engine does: licenses follow the wanted plans (plan
    /// swaps keep the seat), newcomers join the line at their `since`, then `rebalance` moves
    /// seats in queue order.
    fn settle(&mut self) {
        let wanted = self.wanted();
        self.licenses.retain(|u, _| wanted.contains_key(u));
        for (u, plan) in &wanted {
            match self.licenses.get_mut(u) {
                Some(l) => l.plan = plan.clone(),
                None => {
                    self.licenses.insert(
                        u.clone(),
                        License {
                            plan: plan.clone(),
                            active: false,
                            queue: self.since[u],
                        },
                    );
                }
            }
        }
        let active = self.licenses.values().filter(|l| l.active).count();
        let moves = rebalance(self.sub.seats, true, active, self.licenses.len() - active);
        let mut holders: Vec<(i64, String)> = self
            .licenses
            .iter()
            .filter(|(_, l)| l.active)
            .map(|(u, l)| (l.queue, u.clone()))
            .collect();
        holders.sort();
        for (_, u) in holders.iter().rev().take(moves.demote) {
            self.licenses.get_mut(u).unwrap().active = false;
        }
        let mut line: Vec<(i64, String)> = self
            .licenses
            .iter()
            .filter(|(_, l)| !l.active)
            .map(|(u, l)| (l.queue, u.clone()))
            .collect();
        line.sort();
        for (_, u) in line.iter().take(moves.promote) {
            self.licenses.get_mut(u).unwrap().active = true;
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let active: Vec<&String> = self
            .licenses
            .iter()
            .filter(|(_, l)| l.active)
            .map(|(u, _)| u)
            .collect();
        prop_assert!(
            active.len() as u32 <= self.sub.seats,
            "{} active for {} seats",
            active.len(),
            self.sub.seats
        );
        for u in &self.users {
            if !u.active {
                prop_assert!(
                    !self.licenses.contains_key(&u.name),
                    "inactive {} holds a license",
                    u.name
                );
            }
        }
        // Exactly what allocate decides from the claims: queue order, no free seat while
        // someone waits, and deciding again changes nothing.
        let claims: Vec<Claim> = self
            .licenses
            .iter()
            .map(|(u, l)| Claim {
                user: u.clone(),
                holds_seat: l.active,
                since: l.queue,
            })
            .collect();
        let a = allocate(self.sub.seats, true, &claims);
        let mut expected: Vec<String> = a.active.clone();
        expected.sort();
        let mut got: Vec<String> = active.into_iter().cloned().collect();
        got.sort();
        prop_assert_eq!(got, expected);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn histories_keep_the_invariants_whatever_the_batching(steps in prop::collection::vec(step(), 0..60), batch in 1usize..6) {
        let mut one_by_one = World::new();
        for s in &steps {
            one_by_one.apply(s);
            one_by_one.settle();
            one_by_one.check()?;
        }
        let mut batched = World::new();
        for chunk in steps.chunks(batch) {
            for s in chunk {
                batched.apply(s);
            }
            batched.settle();
            batched.check()?;
        }
        prop_assert_eq!(&batched.licenses, &one_by_one.licenses);
    }
}
