//! The mass-deprovision brake: when an identity provider deactivates or deletes more of a
//! tenant's users in a window than the tenant's threshold allows, further deprovisions still
//! succeed in the directory (the IdP never sees an error) and access stops at once, but the
//! users' seats are **held**, not handed to the waitlist, until an operator approves (the
//! seats are freed) or rejects (they stay reserved until the IdP sends those users back).
//! Entra ID's accidental-deletion prevention, for seats.
//!
//! Everything here runs in the caller's transaction, under the tenant's lock.

use serde_json::{Value, json};
use time::Duration;

use crate::kernel::catalogue::EventType;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::Tx;
use crate::licenses::decide::{Cause, Outcome, Scope, relicense};
use crate::licenses::store::{HeldRow, time_text};

/// The brake's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brake {
    /// Share of the active users (percent) whose deprovision in one window engages it.
    pub percent: u32,
    /// It never engages below this many deprovisions in a window.
    pub min_users: u32,
    /// The window.
    pub window_minutes: u32,
}

impl Default for Brake {
    fn default() -> Self {
        Brake {
            percent: 25,
            min_users: 10,
            window_minutes: 60,
        }
    }
}

/// Longest window (a week).
pub const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;

impl Brake {
    /// The tenant's brake (`None`: turned off) from its settings.
    pub fn of(settings: &Value) -> Option<Brake> {
        match settings.get("deprovision_brake") {
            None => Some(Brake::default()),
            Some(Value::Null) => None,
            Some(v) => serde_json::from_value(v.clone()).ok(),
        }
    }

    /// Checks a `deprovision_brake` value as the settings API takes it.
    pub fn parse(v: &Value) -> ApiResult<Option<Brake>> {
        let bad = |m: String| ApiError::Scim(scim::Error::InvalidValue(m));
        if v.is_null() {
            return Ok(None);
        }
        let b: Brake = serde_json::from_value(v.clone()).map_err(|e| {
            bad(format!(
                "deprovision_brake: {e} (expected {{\"percent\", \"min_users\", \"window_minutes\"}} or null)"
            ))
        })?;
        if !(1..=100).contains(&b.percent) {
            return Err(bad("deprovision_brake.percent: 1 to 100".into()));
        }
        if !(1..=MAX_WINDOW_MINUTES).contains(&b.window_minutes) {
            return Err(bad(format!(
                "deprovision_brake.window_minutes: 1 to {MAX_WINDOW_MINUTES}"
            )));
        }
        Ok(Some(b))
    }

    /// How many deprovisions a window may apply, for a tenant of `population` users.
    pub fn allows(&self, population: i64) -> i64 {
        let share = (i64::from(self.percent) * population + 99) / 100;
        share.max(i64::from(self.min_users))
    }
}

/// How a user left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// `active` set to false.
    Deactivated,
    /// Deleted.
    Deleted,
}

impl Gone {
    fn name(self) -> &'static str {
        match self {
            Gone::Deactivated => "deactivated",
            Gone::Deleted => "deleted",
        }
    }
}

/// A user just deprovisioned (already written to the directory in this transaction): whether
/// the brake holds their seats (then the caller does not re-decide their licenses).
pub fn on_deprovision(
    tx: &mut Tx<'_>,
    c: &Cause,
    (user, user_name, external_id): (&str, &str, Option<&str>),
    gone: Gone,
) -> ApiResult<bool> {
    let tenant = c.tenant.as_str();
    let Some(brake) = Brake::of(&tx.tenant_settings(tenant)?) else {
        return Ok(false);
    };
    let now = time_text(c.now);
    let window_start = c.now - Duration::minutes(i64::from(brake.window_minutes));
    let mut since = time_text(window_start);
    if let Some(decided) = tx.brake_since(tenant)?
        && decided > since
    {
        since = decided;
    }
    let held = tx.held(tenant)?;
    let pending = held.iter().filter(|h| h.state == "pending").count();
    let recent = tx.deprovisions_since(tenant, &since)?;
    // The population before this window's deprovisions: who is active now, and those who
    // left in it (this one included).
    let population = tx.active_users(tenant)? + recent + 1;
    if pending == 0 && recent < brake.allows(population) {
        let forget = time_text(c.now - Duration::minutes(i64::from(MAX_WINDOW_MINUTES)));
        tx.record_deprovision(tenant, user, &now, &forget)?;
        return Ok(false);
    }
    let row = HeldRow {
        user: user.to_string(),
        user_name: user_name.to_string(),
        gone: gone.name().to_string(),
        state: "pending".into(),
        since: now.clone(),
    };
    tx.insert_held(tenant, &row, external_id)?;
    tx.bump_held(tenant)?;
    let detail = json!({
        "users": [{"id": user, "userName": user_name, "gone": gone.name()}],
        "engaged": pending == 0,
        "deprovisions_in_window": recent + 1,
        "allowed_in_window": brake.allows(population),
        "brake": brake,
        "cause": c.action,
        "request_id": c.request_id,
    });
    c.audit(
        tx,
        "deprovision.hold",
        ("User", user),
        None,
        Some(detail.clone()),
    )?;
    tx.outbox(
        tenant,
        EventType::DeprovisionHeld,
        "User",
        user,
        &detail.to_string(),
        &now,
    )?;
    Ok(true)
}

/// A user reactivated (or created again after a held deletion): whether they were held. Their
/// licenses were kept, so re-deciding them restores their seats and places.
pub fn on_return(tx: &mut Tx<'_>, c: &Cause, user: &str) -> ApiResult<bool> {
    let tenant = c.tenant.as_str();
    if !tx.delete_held(tenant, user)? {
        return Ok(false);
    }
    tx.bump_held(tenant)?;
    c.audit(
        tx,
        "deprovision.restore",
        ("User", user),
        None,
        Some(json!({"cause": c.action})),
    )?;
    Ok(true)
}

/// A user created with the userName or externalId of a held deleted user: that user's
/// licenses (and places in line) become the new user's. Returns whether it happened.
pub fn claim_held(
    tx: &mut Tx<'_>,
    c: &Cause,
    (user, user_name, external_id): (&str, &str, Option<&str>),
) -> ApiResult<bool> {
    let tenant = c.tenant.as_str();
    let Some(old) = tx.held_returning(tenant, user_name, external_id)? else {
        return Ok(false);
    };
    tx.move_licenses(tenant, &old, user)?;
    on_return(tx, c, &old)?;
    Ok(true)
}

/// The operator's decision on the pending held users: `approve` frees their seats (waiters
/// are promoted), `reject` keeps them reserved until the IdP sends the users back. Either
/// way, deprovisions before now stop counting towards the brake.
pub fn decide(tx: &mut Tx<'_>, c: &Cause, approve: bool) -> ApiResult<(Vec<HeldRow>, Outcome)> {
    let tenant = c.tenant.as_str();
    let held = tx.held(tenant)?;
    let now = time_text(c.now);
    tx.set_brake_since(tenant, &now)?;
    let (decided, outcome) = if approve {
        // Reserved users (rejected earlier) are released too: approving lets every seat go.
        for h in &held {
            tx.delete_held(tenant, &h.user)?;
        }
        tx.bump_held(tenant)?;
        let users: Vec<String> = held.iter().map(|h| h.user.clone()).collect();
        let outcome = if users.is_empty() {
            Outcome::default()
        } else {
            relicense(tx, c, Scope::Users(users))?
        };
        (held, outcome)
    } else {
        tx.set_held_state(tenant, "pending", "reserved")?;
        let pending: Vec<HeldRow> = held.into_iter().filter(|h| h.state == "pending").collect();
        (pending, Outcome::default())
    };
    let decision = if approve { "approved" } else { "rejected" };
    let detail = json!({
        "decision": decision,
        "users": decided.iter().map(|h| json!({"id": h.user, "userName": h.user_name, "gone": h.gone})).collect::<Vec<_>>(),
        "licenses": outcome,
        "request_id": c.request_id,
    });
    c.audit(
        tx,
        if approve {
            "deprovision.approve"
        } else {
            "deprovision.reject"
        },
        ("Tenant", tenant),
        None,
        Some(detail.clone()),
    )?;
    tx.outbox(
        tenant,
        EventType::DeprovisionDecided,
        "Tenant",
        tenant,
        &detail.to_string(),
        &now,
    )?;
    Ok((decided, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_on_and_null_turns_it_off() {
        assert_eq!(Brake::of(&json!({})), Some(Brake::default()));
        assert_eq!(Brake::of(&json!({"deprovision_brake": null})), None);
        let b = Brake::parse(&json!({"percent": 10, "min_users": 3, "window_minutes": 5}))
            .unwrap()
            .unwrap();
        assert_eq!(Brake::of(&json!({"deprovision_brake": b})), Some(b));
        for bad in [
            json!({"percent": 0, "min_users": 3, "window_minutes": 5}),
            json!({"percent": 101, "min_users": 3, "window_minutes": 5}),
            json!({"percent": 10, "min_users": 3, "window_minutes": 0}),
            json!({"percent": 10, "min_users": 3}),
            json!({"percent": 10, "min_users": 3, "window_minutes": 5, "x": 1}),
            json!("on"),
        ] {
            assert!(Brake::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_threshold_is_a_share_but_never_below_min_users() {
        let b = Brake::default();
        assert_eq!(b.allows(40), 10);
        assert_eq!(b.allows(1000), 250);
        assert_eq!(b.allows(5), 10);
        assert_eq!(b.allows(41), 11, "rounded up");
    }
}
