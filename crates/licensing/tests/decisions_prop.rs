//! Property tests of the seat decisions: under hard enforcement active seats never exceed
//! those bought, the waitlist is served in queue order, and deciding is a fixed point.

use licensing::seats::{Claim, allocate};
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
