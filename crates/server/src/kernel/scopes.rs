//! What an admin key may do: its scopes, and the one table naming the scope each admin route
//! needs. A route missing from the table is refused to every admin key (only the bootstrap
//! admin token reaches it), so a new route is closed until someone decides its scope.

use axum::http::Method;

/// One permission of an admin key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read tenants, their users' licenses, usage, reports, settings and credentials' names.
    TenantsRead,
    /// Create tenants; change settings, rules, pins, imports, reconciliation, the scheduler.
    TenantsWrite,
    /// Replace the licensing model.
    ModelWrite,
    /// Subscriptions, billing events and billing mappings.
    BillingWrite,
    /// Read audit trails.
    AuditRead,
    /// Read the event feed, billing events received and webhook deliveries.
    EventsRead,
    /// Register, remove and replay webhooks.
    WebhooksWrite,
    /// Create and revoke SCIM tokens, app keys, admin keys, signing keys, secrets, SSO
    /// connections and portal links.
    CredentialsWrite,
}

impl Scope {
    /// Every scope, in the order the README lists them.
    pub const ALL: [Scope; 8] = [
        Scope::TenantsRead,
        Scope::TenantsWrite,
        Scope::ModelWrite,
        Scope::BillingWrite,
        Scope::AuditRead,
        Scope::EventsRead,
        Scope::WebhooksWrite,
        Scope::CredentialsWrite,
    ];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TenantsRead => "tenants:read",
            Scope::TenantsWrite => "tenants:write",
            Scope::ModelWrite => "model:write",
            Scope::BillingWrite => "billing:write",
            Scope::AuditRead => "audit:read",
            Scope::EventsRead => "events:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::CredentialsWrite => "credentials:write",
        }
    }

    /// The scope of a name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A set of scopes, as stored: names separated by spaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Parses names, refusing unknown ones and an empty list.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut out = Vec::new();
        for n in names {
            let s = Scope::parse(n).ok_or_else(|| {
                format!(
                    "unknown scope '{n}'; scopes are {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })?;
            out.push(s);
        }
        if out.is_empty() {
            return Err("'scopes' must name at least one scope".into());
        }
        out.sort();
        out.dedup();
        Ok(Scopes(out))
    }

    /// Reads the stored form (unknown names, from a newer version, are dropped).
    pub fn from_stored(text: &str) -> Scopes {
        let mut v: Vec<Scope> = text.split_whitespace().filter_map(Scope::parse).collect();
        v.sort();
        v.dedup();
        Scopes(v)
    }

    /// The stored form.
    pub fn to_stored(&self) -> String {
        self.names().join(" ")
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.as_str()).collect()
    }

    /// Whether the set holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    /// Whether every scope of `other` is in this set.
    pub fn covers(&self, other: &Scopes) -> bool {
        other.0.iter().all(|s| self.has(*s))
    }
}

/// The scope an admin route needs, by method and route pattern; `None` for routes no admin
/// key may use.
pub fn required(method: &Method, route: &str) -> Option<Scope> {
    let read = method == Method::GET || method == Method::HEAD;
    let under = |prefix: &str| route == prefix || route.starts_with(&format!("{prefix}/"));
    let scope = if route == "/api/v1/model" {
        if read {
            Scope::TenantsRead
        } else {
            Scope::ModelWrite
        }
    } else if route == "/api/v1/audit" || route == "/api/v1/tenants/{id}/audit" {
        if !read {
            return None;
        }
        Scope::AuditRead
    } else if under("/api/v1/webhooks") || under("/api/v1/tenants/{id}/webhooks") {
        if read {
            Scope::EventsRead
        } else {
            Scope::WebhooksWrite
        }
    } else if under("/api/v1/events") || route == "/api/v1/tenants/{id}/events" {
        if !read {
            return None;
        }
        Scope::EventsRead
    } else if route == "/api/v1/billing/secret"
        || route == "/api/v1/billing/stripe/secret"
        || route == "/api/v1/signing-keys/rotate"
        || under("/api/v1/admin-keys")
        || under("/api/v1/tenants/{id}/scim-tokens")
        || under("/api/v1/tenants/{id}/app-keys")
        || under("/api/v1/tenants/{id}/sso")
        || under("/api/v1/tenants/{id}/portal-links")
    {
        if read {
            Scope::TenantsRead
        } else {
            Scope::CredentialsWrite
        }
    } else if under("/api/v1/billing")
        || under("/api/v1/tenants/{id}/billing")
        || under("/api/v1/tenants/{id}/subscriptions")
    {
        if read {
            Scope::EventsRead
        } else {
            Scope::BillingWrite
        }
    } else if route == "/api/v1/clock" {
        // Moving the test clock is the bootstrap token's alone.
        return None;
    } else if under("/api/v1") {
        if read {
            Scope::TenantsRead
        } else {
            Scope::TenantsWrite
        }
    } else {
        return None;
    };
    Some(scope)
}

/// The tenant a route is confined to: the `{id}` of `/api/v1/tenants/{id}/…`, read from the
/// request's path. `None` for vendor-wide routes.
pub fn tenant_of<'a>(route: &str, path: &'a str) -> Option<&'a str> {
    if !route.starts_with("/api/v1/tenants/{id}") {
        return None;
    }
    path.split('/').nth(4).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_store_and_cover() {
        let s = Scopes::parse(["tenants:read", "audit:read", "tenants:read"]).unwrap();
        assert_eq!(s.names(), ["tenants:read", "audit:read"]);
        assert_eq!(Scopes::from_stored(&s.to_stored()), s);
        assert!(
            Scopes::parse(["tenants:admin"])
                .unwrap_err()
                .contains("unknown scope")
        );
        assert!(Scopes::parse([]).is_err());
        let all = Scopes::parse(Scope::ALL.map(Scope::as_str)).unwrap();
        assert!(all.covers(&s) && !s.covers(&all));
    }

    #[test]
    fn routes_need_the_scope_of_what_they_touch() {
        let get = Method::GET;
        let post = Method::POST;
        let put = Method::PUT;
        assert_eq!(required(&get, "/api/v1/tenants"), Some(Scope::TenantsRead));
        assert_eq!(
            required(&post, "/api/v1/tenants"),
            Some(Scope::TenantsWrite)
        );
        assert_eq!(required(&put, "/api/v1/model"), Some(Scope::ModelWrite));
        assert_eq!(
            required(&post, "/api/v1/tenants/{id}/scim-tokens"),
            Some(Scope::CredentialsWrite)
        );
        assert_eq!(
            required(&Method::DELETE, "/api/v1/tenants/{id}/webhooks/{wid}"),
            Some(Scope::WebhooksWrite)
        );
        assert_eq!(
            required(
                &Method::PATCH,
                "/api/v1/tenants/{id}/subscriptions/{product}"
            ),
            Some(Scope::BillingWrite)
        );
        assert_eq!(
            required(&get, "/api/v1/tenants/{id}/audit"),
            Some(Scope::AuditRead)
        );
        assert_eq!(required(&post, "/api/v1/clock"), None);
        assert_eq!(required(&get, "/ui"), None);
        assert_eq!(
            tenant_of("/api/v1/tenants/{id}/usage", "/api/v1/tenants/t-1/usage"),
            Some("t-1")
        );
        assert_eq!(tenant_of("/api/v1/tenants", "/api/v1/tenants"), None);
        assert_eq!(tenant_of("/api/v1/usage", "/api/v1/usage"), None);
    }
}
