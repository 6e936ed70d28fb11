//! Property tests of the seat decisions: under hard enforcement active seats never exceed
//! those bought, the waitlist is served in queue order, and deciding is a fixed point.

use licensing::seats::{Claim, allocate, rebalance};
use proptest::prelude::*;

fn claims() -> impl Strategy<Value = Vec<Claim>> {
    prop::collection::vec((any::<bool>(), 0i64..50), 0..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (holds_seat, since))| Claim {
                user: format!("u{i:02}"),
                holds_seat,
                since,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hard_never_exceeds_seats_and_serves_the_queue_in_order(seats in 0u32..20, cs in claims()) {
        let a = allocate(seats, true, &cs);
        prop_assert!(a.active.len() as u32 <= seats);
        prop_assert_eq!(a.active.len() + a.waitlisted.len(), cs.len());
        // Nobody waits while a seat is free.
        if !a.waitlisted.is_empty() {
            prop_assert_eq!(a.active.len() as u32, seats);
        }
        // Among users who did not hold a seat, every promoted one was ahead in the queue of
        // every one still waiting.
        let since = |u: &String| cs.iter().find(|c| &c.user == u).map(|c| (c.since, c.user.clone())).unwrap();
        let promoted: Vec<_> = a.active.iter().filter(|u| !cs.iter().any(|c| &c.user == *u && c.holds_seat)).collect();
        for p in &promoted {
            for w in &a.waitlisted {
                if !cs.iter().any(|c| &c.user == w && c.holds_seat) {
                    prop_assert!(since(p) < since(w), "{:?} promoted ahead of {:?}", p, w);
                }
            }
        }
        // Holders are demoted only when seats were cut, latest assignment first.
        let holders = cs.iter().filter(|c| c.holds_seat).count() as u32;
        let demoted: Vec<_> = a.waitlisted.iter().filter(|u| cs.iter().any(|c| &c.user == *u && c.holds_seat)).collect();
        prop_assert_eq!(demoted.len() as u32, holders.saturating_sub(seats));
    }

    #[test]
    fn deciding_twice_changes_nothing(seats in 0u32..20, cs in claims()) {
        let a = allocate(seats, true, &cs);
        let again: Vec<Claim> = cs
            .iter()
            .map(|c| Claim { holds_seat: a.active.contains(&c.user), ..c.clone() })
            .collect();
        prop_assert_eq!(allocate(seats, true, &again), a);
    }

    #[test]
    fn soft_gives_everyone_a_seat(seats in 0u32..20, cs in claims()) {
        let a = allocate(seats, false, &cs);
        prop_assert_eq!(a.active.len(), cs.len());
        prop_assert_eq!(a.overage, (cs.len() as u32).saturating_sub(seats));
    }
}

/// One change to a subscription's claimants.
#[derive(Debug, Clone)]
enum Op {
    /// A user starts to qualify (created, activated, joined a group, matched a rule).
    Arrive(u8),
    /// A user stops qualifying (deactivated, deleted, left the group, rule removed).
    Leave(u8),
    /// Seats bought change.
    Seats(u32),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0u8..30).prop_map(Op::Arrive),
            2 => (0u8..30).prop_map(Op::Leave),
            1 => (0u32..15).prop_map(Op::Seats),
        ],
        0..80,
    )
}

/// The claimants after some ops, as a store keeps them: (user, holds_seat, since).
#[derive(Debug, Clone, Default)]
struct World {
    seats: u32,
    claims: Vec<Claim>,
    clock: i64,
}

impl World {
    fn apply(&mut self, op: &Op) {
        self.clock += 1;
        match op {
            Op::Arrive(u) => {
                let user = format!("u{u:02}");
                if !self.claims.iter().any(|c| c.user == user) {
                    self.claims.push(Claim {
                        user,
                        holds_seat: false,
                        since: self.clock,
                    });
                }
            }
            Op::Leave(u) => self.claims.retain(|c| c.user != format!("u{u:02}")),
            Op::Seats(n) => self.seats = *n,
        }
    }

    /// Decides from scratch with `allocate`.
    fn settle_full(&mut self) {
        let a = allocate(self.seats, true, &self.claims);
        for c in &mut self.claims {
            c.holds_seat = a.active.contains(&c.user);
        }
    }

    /// Decides the way the server does: counts, then `rebalance` moves in queue order.
    fn settle_incremental(&mut self) {
        let active = self.claims.iter().filter(|c| c.holds_seat).count();
        let waiting = self.claims.len() - active;
        let moves = rebalance(self.seats, true, active, waiting);
        let key = |c: &Claim| (c.since, c.user.clone());
        let mut holders: Vec<(i64, String)> = self
            .claims
            .iter()
            .filter(|c| c.holds_seat)
            .map(key)
            .collect();
        holders.sort();
        let mut queue: Vec<(i64, String)> = self
            .claims
            .iter()
            .filter(|c| !c.holds_seat)
            .map(key)
            .collect();
        queue.sort();
        let demote: Vec<String> = holders
            .iter()
            .rev()
            .take(moves.demote)
            .map(|k| k.1.clone())
            .collect();
        let promote: Vec<String> = queue
            .iter()
            .take(moves.promote)
            .map(|k| k.1.clone())
            .collect();
        for c in &mut self.claims {
            if demote.contains(&c.user) {
                c.holds_seat = false;
            }
            if promote.contains(&c.user) {
                c.holds_seat = true;
            }
        }
    }

    fn outcome(&self) -> (Vec<String>, Vec<String>) {
        let mut active: Vec<String> = self
            .claims
            .iter()
            .filter(|c| c.holds_seat)
            .map(|c| c.user.clone())
            .collect();
        let mut waiting: Vec<String> = self
            .claims
            .iter()
            .filter(|c| !c.holds_seat)
            .map(|c| c.user.clone())
            .collect();
        active.sort();
        waiting.sort();
        (active, waiting)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// For any sequence of arrivals, departures and seat changes: the server's incremental
    /// moves reach exactly what deciding from scratch gives, never exceed the seats, and the
    /// outcome does not depend on how the changes were batched into transactions.
    #[test]
    fn incremental_equals_full_and_batching_does_not_matter(ops in ops(), batch in 1usize..8) {
        let (mut inc, mut full, mut batched) = (World::default(), World::default(), World::default());
        for op in &ops {
            inc.apply(op);
            inc.settle_incremental();
            full.apply(op);
            full.settle_full();
            prop_assert!(inc.claims.iter().filter(|c| c.holds_seat).count() as u32 <= inc.seats);
            prop_assert_eq!(inc.outcome(), full.outcome());
        }
        for chunk in ops.chunks(batch) {
            for op in chunk {
                batched.apply(op);
            }
            batched.settle_incremental();
        }
        prop_assert_eq!(batched.outcome(), full.outcome());
    }
}
