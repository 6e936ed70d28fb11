//! Time: where a subscription stands at a given instant, and which plan it grants then.
//!
//! A term (or a trial) runs from `starts_at` to `ends_at`; access continues for `grace_days`
//! after it; then `on_expiry` applies. A subscription recorded as `expired` has applied it
//! already. Nothing here reads a clock: `now` is always a parameter.

use time::{Duration, OffsetDateTime};

use crate::model::{Key, OnExpiry, Status, Subscription};

/// Where a subscription stands at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Before `starts_at`: nothing is granted yet.
    NotStarted,
    /// Within the term (or trial).
    InTerm,
    /// After `ends_at`, within the grace period that ends at the given instant.
    InGrace(OffsetDateTime),
    /// The term and grace are over (or the subscription is recorded as expired).
    Over,
}

/// What a subscription grants at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Licenses of this plan.
    Plan(Key),
    /// Nothing, for this reason.
    Nothing(&'static str),
}

/// The end of access: `ends_at` plus the grace period.
pub fn access_ends(sub: &Subscription) -> Option<OffsetDateTime> {
    sub.ends_at
        .map(|end| end + Duration::days(i64::from(sub.grace_days)))
}

/// The phase at `now`.
pub fn phase(sub: &Subscription, now: OffsetDateTime) -> Phase {
    if sub.status == Status::Expired {
        return Phase::Over;
    }
    if now < sub.starts_at {
        return Phase::NotStarted;
    }
    match (sub.ends_at, access_ends(sub)) {
        (Some(end), _) if now < end => Phase::InTerm,
        (Some(_), Some(grace_end)) if now < grace_end => Phase::InGrace(grace_end),
        (Some(_), _) => Phase::Over,
        (None, _) => Phase::InTerm,
    }
}

/// The plan granted at `now`: the purchased plan until access ends, then what `on_expiry` says.
pub fn grant(sub: &Subscription, now: OffsetDateTime) -> Grant {
    match phase(sub, now) {
        Phase::NotStarted => Grant::Nothing("subscription not started"),
        Phase::InTerm | Phase::InGrace(_) => Grant::Plan(sub.plan.clone()),
        Phase::Over => match &sub.on_expiry {
            OnExpiry::Keep => Grant::Plan(sub.plan.clone()),
            OnExpiry::Downgrade(p) => Grant::Plan(p.clone()),
            OnExpiry::Revoke => Grant::Nothing("subscription expired"),
        },
    }
}

/// The next instant after `now` at which [`grant`] may change, for the scheduler.
pub fn next_transition(sub: &Subscription, now: OffsetDateTime) -> Option<OffsetDateTime> {
    [Some(sub.starts_at), sub.ends_at, access_ends(sub)]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Enforcement, Key};
    use time::macros::datetime;

    fn sub(on_expiry: OnExpiry) -> Subscription {
        Subscription {
            product: Key::new("product", "workspace").unwrap(),
            plan: Key::new("plan", "pro").unwrap(),
            seats: 10,
            starts_at: datetime!(2026-01-01 0:00 UTC),
            ends_at: Some(datetime!(2027-01-01 0:00 UTC)),
            status: Status::Active,
            grace_days: 7,
            on_expiry,
            enforcement: Enforcement::Hard,
            idle_after_days: 30,
            on_idle: Default::default(),
        }
    }

    #[test]
    fn term_grace_then_expiry() {
        let free = Key::new("plan", "free").unwrap();
        let s = sub(OnExpiry::Downgrade(free.clone()));
        assert_eq!(
            grant(&s, datetime!(2025-12-31 0:00 UTC)),
            Grant::Nothing("subscription not started")
        );
        assert_eq!(phase(&s, datetime!(2026-06-01 0:00 UTC)), Phase::InTerm);
        assert_eq!(
            phase(&s, datetime!(2027-01-03 0:00 UTC)),
            Phase::InGrace(datetime!(2027-01-08 0:00 UTC))
        );
        assert_eq!(
            grant(&s, datetime!(2027-01-03 0:00 UTC)),
            Grant::Plan(s.plan.clone())
        );
        assert_eq!(grant(&s, datetime!(2027-01-08 0:00 UTC)), Grant::Plan(free));
        assert_eq!(
            grant(&sub(OnExpiry::Revoke), datetime!(2027-02-01 0:00 UTC)),
            Grant::Nothing("subscription expired")
        );
        assert_eq!(
            grant(&sub(OnExpiry::Keep), datetime!(2027-02-01 0:00 UTC)),
            Grant::Plan(s.plan.clone())
        );
        assert_eq!(
            next_transition(&s, datetime!(2026-06-01 0:00 UTC)),
            Some(datetime!(2027-01-01 0:00 UTC))
        );
        assert_eq!(
            next_transition(&s, datetime!(2027-01-02 0:00 UTC)),
            Some(datetime!(2027-01-08 0:00 UTC))
        );
        assert_eq!(next_transition(&s, datetime!(2027-02-01 0:00 UTC)), None);
    }

    #[test]
    fn recorded_expiry_applies_at_once() {
        let mut s = sub(OnExpiry::Revoke);
        s.status = Status::Expired;
        assert_eq!(
            grant(&s, datetime!(2026-06-01 0:00 UTC)),
            Grant::Nothing("subscription expired")
        );
    }
}
