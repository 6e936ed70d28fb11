//! Seat decisions for one subscription: who holds an active seat and who waits.
//!
//! Hard enforcement (never more active seats than bought):
//! 1. Users who already hold a seat keep it, oldest assignment first. If seats were cut below
//!    that number, the most recently assigned lose their seat and join the waitlist.
//! 2. Free seats go to waiting users in queue order: the queue position of a user who never
//!    had a seat is when they started waiting; a demoted user keeps the position of their
//!    original assignment, so they are the first to get a seat back. Ties go to the user id.
//!
//! Soft enforcement gives everyone a seat and reports the overage.
//! Deciding twice gives the same answer (the decision is a fixed point).

/// A user who should hold a seat of this subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The user.
    pub user: String,
    /// Whether the user holds an active seat now.
    pub holds_seat: bool,
    /// Queue order: when the seat was assigned (holders) or when waiting began (others).
    /// A user arriving now takes a value after every existing one.
    pub since: i64,
}

/// The outcome for a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allocation {
    /// Users with an active seat, in seat order.
    pub active: Vec<String>,
    /// Users waiting, in queue order.
    pub waitlisted: Vec<String>,
    /// Active seats beyond the bought ones (soft enforcement only).
    pub overage: u32,
}

/// Decides seats. `claims` holds every user who should hold this subscription's plan; users
/// who no longer should (deactivated, deleted, out of every rule) are simply absent, and so
/// free their seats.
pub fn allocate(seats: u32, hard: bool, claims: &[Claim]) -> Allocation {
    let mut holders: Vec<&Claim> = claims.iter().filter(|c| c.holds_seat).collect();
    let mut waiting: Vec<&Claim> = claims.iter().filter(|c| !c.holds_seat).collect();
    let by_queue = |a: &&Claim, b: &&Claim| a.since.cmp(&b.since).then_with(|| a.user.cmp(&b.user));
    holders.sort_by(by_queue);
    if !hard {
        let mut all: Vec<&Claim> = holders.into_iter().chain(waiting).collect();
        all.sort_by(by_queue);
        let n = all.len() as u32;
        return Allocation {
            active: all.into_iter().map(|c| c.user.clone()).collect(),
            waitlisted: Vec::new(),
            overage: n.saturating_sub(seats),
        };
    }
    let keep = (seats as usize).min(holders.len());
    let demoted = holders.split_off(keep);
    waiting.extend(demoted);
    waiting.sort_by(by_queue);
    let free = seats as usize - holders.len();
    let promoted = waiting.len().min(free);
    let still_waiting = waiting.split_off(promoted);
    let mut active: Vec<&Claim> = holders.into_iter().chain(waiting).collect();
    active.sort_by(by_queue);
    Allocation {
        active: active.into_iter().map(|c| c.user.clone()).collect(),
        waitlisted: still_waiting.into_iter().map(|c| c.user.clone()).collect(),
        overage: 0,
    }
}

/// How to bring a subscription back to a fixed point of [`allocate`] after a change, knowing
/// only counts: a store applies it with two indexed queries instead of loading every claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rebalance {
    /// Promote this many waiting users, first in queue order.
    pub promote: usize,
    /// Demote this many seat holders, most recently assigned first.
    pub demote: usize,
}

/// The moves that turn a state with `active` seat holders and `waiting` users into the
/// outcome of [`allocate`]. Valid when the holders are ordered as `allocate` orders them
/// (which every state this crate produces is).
pub fn rebalance(seats: u32, hard: bool, active: usize, waiting: usize) -> Rebalance {
    let seats = seats as usize;
    if !hard {
        return Rebalance {
            promote: waiting,
            demote: 0,
        };
    }
    if active > seats {
        Rebalance {
            promote: 0,
            demote: active - seats,
        }
    } else {
        Rebalance {
            promote: waiting.min(seats - active),
            demote: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(user: &str, holds_seat: bool, since: i64) -> Claim {
        Claim {
            user: user.into(),
            holds_seat,
            since,
        }
    }

    #[test]
    fn newcomers_fill_free_seats_then_wait_in_arrival_order() {
        let a = allocate(
            2,
            true,
            &[
                claim("a", true, 1),
                claim("c", false, 3),
                claim("b", false, 2),
            ],
        );
        assert_eq!(a.active, ["a", "b"]);
        assert_eq!(a.waitlisted, ["c"]);
    }

    #[test]
    fn seat_cut_demotes_the_most_recently_assigned() {
        let a = allocate(
            1,
            true,
            &[
                claim("a", true, 1),
                claim("b", true, 5),
                claim("w", false, 3),
            ],
        );
        assert_eq!(a.active, ["a"]);
        assert_eq!(a.waitlisted, ["w", "b"]);
    }

    #[test]
    fn demoted_users_get_their_seat_back_first() {
        let a = allocate(
            1,
            true,
            &[
                claim("a", true, 1),
                claim("b", true, 2),
                claim("w", false, 3),
            ],
        );
        assert_eq!(
            (a.active.clone(), a.waitlisted.clone()),
            (
                vec!["a".to_string()],
                vec!["b".to_string(), "w".to_string()]
            )
        );
        // "a" leaves: "b" (assigned at 2) comes back before "w" (waiting since 3).
        let again = allocate(1, true, &[claim("b", false, 2), claim("w", false, 3)]);
        assert_eq!(again.active, ["b"]);
    }

    #[test]
    fn soft_enforcement_flags_overage() {
        let a = allocate(1, false, &[claim("a", true, 1), claim("b", false, 2)]);
        assert_eq!(a.active, ["a", "b"]);
        assert_eq!(a.overage, 1);
    }
}
