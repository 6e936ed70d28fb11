//! The event catalogue: every event type seatkeeper emits, with what it means. Outbox writes
//! take an [`EventType`]; webhook subscriptions, the OpenAPI document and the README's table
//! are all built from [`EventType::ALL`] and [`PATTERNS`].

/// An event type, as it appears in the `type` field of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A user is created, or reactivated.
    UserProvisioned,
    /// A user changes.
    UserUpdated,
    /// A user is deactivated or deleted.
    UserDeprovisioned,
    /// A group is created.
    GroupCreated,
    /// A group changes.
    GroupUpdated,
    /// A group is deleted.
    GroupDeleted,
    /// A user gets a seat.
    LicenseAssigned,
    /// A user waits for a seat.
    LicenseWaitlisted,
    /// A waiting user gets a seat.
    LicensePromoted,
    /// A user loses a license.
    LicenseRevoked,
    /// A license changes plan or reason.
    LicenseChanged,
    /// An idle seat is given to the waitlist.
    LicenseReclaimed,
    /// A subscription changes.
    SubscriptionChanged,
    /// A subscription's term ends soon.
    SubscriptionExpiring,
    /// A hard subscription fills up.
    SeatsExhausted,
    /// An assignment rule changes.
    RuleChanged,
    /// A SCIM token or app key is created.
    CredentialCreated,
    /// A SCIM token or app key is revoked.
    CredentialRevoked,
    /// A webhook endpoint is registered.
    WebhookCreated,
    /// A webhook endpoint is disabled.
    WebhookDisabled,
    /// Deliveries of a webhook endpoint are replayed.
    WebhookReplayed,
    /// The deprovision brake holds a user's seats.
    DeprovisionHeld,
    /// Held deprovisions are approved (seats freed) or rejected (seats kept).
    DeprovisionDecided,
    /// A role is given to a user.
    RoleGranted,
    /// A role is taken from a user.
    RoleRevoked,
    /// A user signs in through the tenant's SSO connection.
    UserLogin,
    /// The tenant's audit chain head is signed.
    AuditHead,
}

use EventType::*;

impl EventType {
    /// Every event type, in the order the catalogue lists them.
    pub const ALL: [EventType; 27] = [
        UserProvisioned,
        UserUpdated,
        UserDeprovisioned,
        GroupCreated,
        GroupUpdated,
        GroupDeleted,
        LicenseAssigned,
        LicenseWaitlisted,
        LicensePromoted,
        LicenseRevoked,
        LicenseChanged,
        LicenseReclaimed,
        SubscriptionChanged,
        SubscriptionExpiring,
        SeatsExhausted,
        RuleChanged,
        CredentialCreated,
        CredentialRevoked,
        WebhookCreated,
        WebhookDisabled,
        WebhookReplayed,
        DeprovisionHeld,
        DeprovisionDecided,
        RoleGranted,
        RoleRevoked,
        UserLogin,
        AuditHead,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            UserProvisioned => "user.provisioned",
            UserUpdated => "user.updated",
            UserDeprovisioned => "user.deprovisioned",
            GroupCreated => "group.created",
            GroupUpdated => "group.updated",
            GroupDeleted => "group.deleted",
            LicenseAssigned => "license.assigned",
            LicenseWaitlisted => "license.waitlisted",
            LicensePromoted => "license.promoted",
            LicenseRevoked => "license.revoked",
            LicenseChanged => "license.changed",
            LicenseReclaimed => "license.reclaimed",
            SubscriptionChanged => "subscription.changed",
            SubscriptionExpiring => "subscription.expiring",
            SeatsExhausted => "seats.exhausted",
            RuleChanged => "rule.changed",
            CredentialCreated => "credential.created",
            CredentialRevoked => "credential.revoked",
            WebhookCreated => "webhook.created",
            WebhookDisabled => "webhook.disabled",
            WebhookReplayed => "webhook.replayed",
            DeprovisionHeld => "deprovision.held",
            DeprovisionDecided => "deprovision.decided",
            RoleGranted => "role.granted",
            RoleRevoked => "role.revoked",
            UserLogin => "user.login",
            AuditHead => "audit.head",
        }
    }

    /// When it happens, in one line.
    pub fn meaning(self) -> &'static str {
        match self {
            UserProvisioned => "a user is created, or reactivated (`data.reason`)",
            UserUpdated => "a user changes",
            UserDeprovisioned => "a user is deactivated or deleted (`data.reason`)",
            GroupCreated => "a group is created",
            GroupUpdated => "a group changes (attributes or members)",
            GroupDeleted => "a group is deleted",
            LicenseAssigned => "a user gets a seat (`data.before`/`after`, `data.cause`)",
            LicenseWaitlisted => "a user waits for a seat",
            LicensePromoted => "a waiting user gets a seat that freed up",
            LicenseRevoked => "a user loses a license",
            LicenseChanged => "a license changes plan or reason",
            LicenseReclaimed => {
                "an idle seat is given to the waitlist (`on_idle = \"reclaim\"`); the license grants nothing until its user is active again"
            }
            SubscriptionChanged => {
                "a subscription changes (admin API, `apply`, billing, term ends)"
            }
            SubscriptionExpiring => {
                "`--expiry-notice-days` (7) before `ends_at`, once per term end"
            }
            SeatsExhausted => "a hard subscription fills up, or someone waits for lack of a seat",
            RuleChanged => "an assignment rule is created, changed or deleted",
            CredentialCreated => "a SCIM token or app key is created (`data.kind`, `data.name`)",
            CredentialRevoked => "a SCIM token or app key is revoked",
            WebhookCreated => "a webhook endpoint is registered (never its secret)",
            WebhookDisabled => "a webhook endpoint is disabled",
            WebhookReplayed => "deliveries of an endpoint are queued again (`data.count`)",
            DeprovisionHeld => {
                "the deprovision brake holds a deprovisioned user's seats (`data.users`)"
            }
            DeprovisionDecided => {
                "held deprovisions are approved or rejected (`data.decision`, `data.users`)"
            }
            RoleGranted => {
                "a role rule or the user's SCIM roles give a user a role (`data.product`, `data.role`, `data.source`)"
            }
            RoleRevoked => "a user no longer has a role",
            UserLogin => "a user signs in through the tenant's OIDC connection (`data.created`)",
            AuditHead => {
                "the tenant's audit chain head is signed (`data`: `tenant_id`, `seq`, `hash`, `at`, `signature`); keep it to witness the chain"
            }
        }
    }

    /// The event type of a name.
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Patterns a webhook may subscribe to besides the names: each matches a family.
pub const PATTERNS: [(&str, &str); 10] = [
    ("user.*", "every `user.` event"),
    ("group.*", "every `group.` event"),
    ("license.*", "every `license.` event"),
    ("subscription.*", "every `subscription.` event"),
    ("credential.*", "every `credential.` event"),
    ("webhook.*", "every `webhook.` event"),
    ("deprovision.*", "every `deprovision.` event"),
    ("role.*", "every `role.` event"),
    ("audit.*", "every `audit.` event"),
    ("*", "every event (the default)"),
];

/// Whether `name` is an event type or a pattern a subscription may name.
pub fn subscribable(name: &str) -> bool {
    EventType::from_name(name).is_some() || PATTERNS.iter().any(|(p, _)| *p == name)
}

/// Every name a subscription may use: the types, then the patterns.
pub fn subscribable_names() -> Vec<&'static str> {
    EventType::ALL
        .iter()
        .map(|e| e.name())
        .chain(PATTERNS.iter().map(|(p, _)| *p))
        .collect()
}

/// The README's table of event types.
#[cfg(test)]
pub fn markdown_table() -> String {
    let mut out = String::from("| type | when |\n|---|---|\n");
    for e in EventType::ALL {
        out.push_str(&format!("| `{}` | {} |\n", e.name(), e.meaning()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for e in EventType::ALL {
            assert!(seen.insert(e.name()), "{} twice", e.name());
            assert_eq!(EventType::from_name(e.name()), Some(e));
        }
        assert!(subscribable("license.*") && subscribable("*") && !subscribable("nope"));
    }

    #[test]
    fn every_pattern_matches_some_type() {
        for (p, _) in PATTERNS {
            let family = p.trim_end_matches('*');
            assert!(
                EventType::ALL.iter().any(|e| e.name().starts_with(family)),
                "{p} matches nothing"
            );
        }
    }

    #[test]
    fn the_readme_lists_the_catalogue() {
        let readme = include_str!("../../../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's event table differs from the catalogue; paste this:\n{}",
            markdown_table()
        );
    }
}
