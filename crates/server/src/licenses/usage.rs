//! Seat usage per subscription — bought, held, waiting, over, idle — and the compliance
//! findings that follow from it. Pure: the store gathers the inputs, this computes.

use std::collections::BTreeMap;

use licensing::lifecycle::{self, Phase};
use licensing::model::{Enforcement, OnExpiry, Status, Subscription};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::kernel::clock::stamp;
use crate::licenses::store::{UsageInputs, time_text};

/// One subscription's usage.
#[derive(Debug, Clone, Serialize)]
pub struct UsageRow {
    /// The tenant's id.
    pub tenant: String,
    /// The product.
    pub product: String,
    /// The purchased plan.
    pub plan: String,
    /// The plan users get now (`null` when the term grants nothing).
    pub plan_in_force: Option<String>,
    /// Lifecycle status.
    pub status: String,
    /// `not_started`, `in_term`, `in_grace` or `over`.
    pub phase: String,
    /// `hard` or `soft`.
    pub enforcement: String,
    /// Seats bought.
    pub seats: u32,
    /// Licenses holding a seat.
    pub active: usize,
    /// Licenses waiting for one.
    pub waitlisted: usize,
    /// Active licenses of seat-free plans (they hold no seat).
    pub seat_free: usize,
    /// Seats free.
    pub available: usize,
    /// Held seats above those bought (soft enforcement).
    pub overage: usize,
    /// Held seats whose user has not been seen for `idle_after_days`.
    pub idle: usize,
    /// The subscription's idle threshold.
    pub idle_after_days: u32,
    /// active / seats (0 when no seats are bought).
    pub utilisation: f64,
    /// When the longest waiter began waiting.
    pub oldest_waiting_since: Option<String>,
    /// End of the term.
    pub ends_at: Option<String>,
    /// When access ends (term end plus grace).
    pub access_ends_at: Option<String>,
}

/// The cutoff instant of every `idle_after_days` in use: a seat last used (or, never used,
/// first held) before it is idle.
pub fn idle_cutoffs<'a>(
    subs: impl IntoIterator<Item = &'a Subscription>,
    now: OffsetDateTime,
) -> Vec<(u32, String)> {
    let mut days: Vec<u32> = subs.into_iter().map(|s| s.idle_after_days).collect();
    days.sort_unstable();
    days.dedup();
    days.into_iter()
        .map(|d| (d, stamp(now - Duration::days(i64::from(d)))))
        .collect()
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::NotStarted => "not_started",
        Phase::InTerm => "in_term",
        Phase::InGrace(_) => "in_grace",
        Phase::Over => "over",
    }
}

/// One row per subscription of the inputs, with `idle` from `idle` by (tenant, product).
pub fn rows(
    inputs: &UsageInputs,
    idle: &BTreeMap<(String, String), usize>,
    now: OffsetDateTime,
) -> Vec<UsageRow> {
    inputs
        .subscriptions
        .iter()
        .map(|(tenant, s)| {
            let line = inputs
                .lines
                .get(tenant)
                .and_then(|l| l.get(s.product.as_str()))
                .copied()
                .unwrap_or_default();
            let key = (tenant.clone(), s.product.to_string());
            let seats = s.seats as usize;
            UsageRow {
                tenant: tenant.clone(),
                product: s.product.to_string(),
                plan: s.plan.to_string(),
                plan_in_force: match lifecycle::grant(s, now) {
                    lifecycle::Grant::Plan(p) => Some(p.to_string()),
                    lifecycle::Grant::Nothing(_) => None,
                },
                status: s.status.as_str().to_string(),
                phase: phase_name(lifecycle::phase(s, now)).to_string(),
                enforcement: match s.enforcement {
                    Enforcement::Hard => "hard",
                    Enforcement::Soft => "soft",
                }
                .to_string(),
                seats: s.seats,
                active: line.active,
                waitlisted: line.waiting,
                seat_free: line.free,
                available: seats.saturating_sub(line.active),
                overage: line.active.saturating_sub(seats),
                idle: idle.get(&key).copied().unwrap_or(0),
                idle_after_days: s.idle_after_days,
                utilisation: if seats == 0 {
                    0.0
                } else {
                    ((line.active as f64 / seats as f64) * 1000.0).round() / 1000.0
                },
                oldest_waiting_since: inputs.oldest_waiting.get(&key).cloned(),
                ends_at: s.ends_at.map(time_text),
                access_ends_at: lifecycle::access_ends(s).map(time_text),
            }
        })
        .collect()
}

/// A compliance finding.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// One of [`FINDINGS`].
    pub finding: &'static str,
    /// The tenant's id.
    pub tenant: String,
    /// The product.
    pub product: String,
    /// `high`, `medium` or `low`.
    pub severity: &'static str,
    /// How many seats, licenses or people it concerns.
    pub count: usize,
    /// One sentence for a person.
    pub detail: String,
}

/// Every finding's name, with when it is raised.
pub const FINDINGS: &[(&str, &str)] = &[
    (
        "overage",
        "a soft subscription has more active licenses than seats",
    ),
    (
        "expired_access",
        "the term is over but licenses are still active (in grace or `keep`)",
    ),
    ("past_due", "the subscription is past due"),
    ("waitlist_stale", "someone has waited more than 7 days"),
    ("idle_seats", "at least 10 % of seats are idle"),
    ("expiring_soon", "the term ends within 30 days"),
];

/// How long a wait is stale.
const STALE_WAIT: Duration = Duration::days(7);
/// How soon a term end is worth a finding.
const EXPIRING_WITHIN: Duration = Duration::days(30);

/// The findings of one subscription's usage (`sub` is the subscription the row was made
/// from).
pub fn findings(row: &UsageRow, sub: &Subscription, now: OffsetDateTime) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |finding, severity, count, detail: String| {
        out.push(Finding {
            finding,
            tenant: row.tenant.clone(),
            product: row.product.clone(),
            severity,
            count,
            detail,
        })
    };
    if row.overage > 0 {
        add(
            "overage",
            "high",
            row.overage,
            format!(
                "{} active licenses on {} seats ({} over)",
                row.active, row.seats, row.overage
            ),
        );
    }
    let ended = sub.ends_at.is_some_and(|e| e <= now);
    if ended && row.active > 0 {
        let why = match (lifecycle::phase(sub, now), &sub.on_expiry) {
            (Phase::InGrace(_), _) => "in grace".to_string(),
            (_, OnExpiry::Keep) => "kept after expiry".to_string(),
            (_, OnExpiry::Downgrade(p)) => format!("downgraded to {p}"),
            _ => "after the term".to_string(),
        };
        add(
            "expired_access",
            "high",
            row.active,
            format!(
                "the term ended {}; {} licenses still active ({why})",
                row.ends_at.clone().unwrap_or_default(),
                row.active
            ),
        );
    }
    if sub.status == Status::PastDue {
        add(
            "past_due",
            "high",
            row.active,
            format!("payment is past due; {} licenses active", row.active),
        );
    }
    if let Some(since) = &row.oldest_waiting_since
        && let Some(at) = crate::licenses::store::parse_time(since)
        && now - at > STALE_WAIT
    {
        add(
            "waitlist_stale",
            "medium",
            row.waitlisted,
            format!(
                "{} waiting; the first since {since} ({} days)",
                row.waitlisted,
                (now - at).whole_days()
            ),
        );
    }
    if row.seats > 0 && row.idle * 10 >= row.seats as usize && row.idle > 0 {
        add(
            "idle_seats",
            "medium",
            row.idle,
            format!(
                "{} of {} seats idle (no activity for {} days)",
                row.idle, row.seats, row.idle_after_days
            ),
        );
    }
    if let Some(end) = sub.ends_at
        && end > now
        && end - now <= EXPIRING_WITHIN
        && sub.status != Status::Expired
    {
        add(
            "expiring_soon",
            "low",
            row.active,
            format!(
                "the term ends {} ({} days)",
                row.ends_at.clone().unwrap_or_default(),
                (end - now).whole_days()
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_names_every_finding() {
        let readme = include_str!("../../../../README.md");
        for (name, _) in FINDINGS {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "README.md's findings table lacks {name}"
            );
        }
    }
}
