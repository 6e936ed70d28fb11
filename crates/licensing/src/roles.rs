//! Roles and permissions: which roles a user is given (by a tenant's role rules, SCIM
//! filters over the user as license rules are, or by the user's own SCIM `roles`), and the
//! answer to "may this user do X?" with a reason.
//!
//! A role is *assigned* by the rules; it *counts* only while its holder is active and, when
//! the role requires a license (the default), holds an active license of its product.

use std::collections::BTreeMap;

use scim::filter::Filter;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Key, Product};

/// A tenant's rule giving a role of a product to the users its filter matches.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleRule {
    /// Unique name within the tenant.
    pub name: Key,
    /// A SCIM filter over the user (groups, nested groups included, as for license rules).
    pub filter: Filter,
    /// The product.
    pub product: Key,
    /// The role of that product.
    pub role: Key,
}

impl RoleRule {
    /// Builds a role rule: its filter parsed and validated against the User schema, its
    /// product and role known to `products`.
    pub fn new(
        name: Key,
        filter: &str,
        product: Key,
        role: Key,
        products: &[Product],
    ) -> Result<RoleRule> {
        let parsed = scim::filter::parse(filter)
            .map_err(|e| Error::BadFilter(format!("role rule {name}: {e}")))?;
        parsed
            .validate(&scim::schema::USER_TYPE)
            .map_err(|e| Error::BadFilter(format!("role rule {name}: {e}")))?;
        let p = products.iter().find(|p| p.key == product).ok_or_else(|| {
            Error::Invalid(format!(
                "role rule {name}: no product {product} is declared or in the catalogue"
            ))
        })?;
        if p.role(role.as_str()).is_none() {
            return Err(Error::Invalid(format!(
                "role rule {name}: product {product} has no role {role}"
            )));
        }
        Ok(RoleRule {
            name,
            filter: parsed,
            product,
            role,
        })
    }
}

/// Where a tenant's roles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoleSource {
    /// The tenant's role rules only.
    #[default]
    Rules,
    /// The values of the user's SCIM `roles` only (`role` or `product:role`).
    Scim,
    /// Both.
    Both,
}

impl RoleSource {
    /// Its name in model files and settings.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleSource::Rules => "rules",
            RoleSource::Scim => "scim",
            RoleSource::Both => "both",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<RoleSource> {
        match s {
            "rules" => Ok(RoleSource::Rules),
            "scim" => Ok(RoleSource::Scim),
            "both" => Ok(RoleSource::Both),
            _ => Err(Error::Invalid(format!(
                "role_source '{s}' must be rules, scim or both"
            ))),
        }
    }
}

/// The name a role given by the user's SCIM `roles` carries as its source.
pub const SCIM_SOURCE: &str = "scim";

/// The roles a user is given, by (product, role), each with everything that gave it: the
/// matching rules' names in the order given, then [`SCIM_SOURCE`]. An inactive user is given
/// none.
pub fn assign(
    user: &Value,
    active: bool,
    rules: &[RoleRule],
    source: RoleSource,
    products: &[Product],
) -> BTreeMap<(Key, Key), Vec<String>> {
    let mut out: BTreeMap<(Key, Key), Vec<String>> = BTreeMap::new();
    if !active {
        return out;
    }
    if source != RoleSource::Scim {
        for rule in rules {
            if rule.filter.matches(&scim::schema::USER_TYPE, user) {
                out.entry((rule.product.clone(), rule.role.clone()))
                    .or_default()
                    .push(rule.name.to_string());
            }
        }
    }
    if source != RoleSource::Rules {
        let values = user
            .get("roles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("value").and_then(Value::as_str));
        for value in values {
            let (product, role) = match value.split_once(':') {
                Some((p, r)) => (Some(p), r),
                None => (None, value),
            };
            for p in products {
                if product.is_some_and(|want| want != p.key.as_str()) {
                    continue;
                }
                if let Some(r) = p.role(role) {
                    let from = out.entry((p.key.clone(), r.key.clone())).or_default();
                    if !from.iter().any(|f| f == SCIM_SOURCE) {
                        from.push(SCIM_SOURCE.to_string());
                    }
                }
            }
        }
    }
    out
}

/// A role a user is given, as a permission check reads it.
#[derive(Debug, Clone, Copy)]
pub struct Given<'a> {
    /// The product.
    pub product: &'a Product,
    /// Its role.
    pub role: &'a crate::model::Role,
    /// What gave it: a rule's name or [`SCIM_SOURCE`] (the first, when several did).
    pub source: &'a str,
    /// Whether the user holds an active license of the product.
    pub licensed: bool,
}

impl Given<'_> {
    /// Whether the role counts.
    pub fn counts(&self) -> bool {
        self.licensed || !self.role.requires_license
    }

    fn origin(&self) -> String {
        if self.source == SCIM_SOURCE {
            "SCIM roles".into()
        } else {
            format!("rule {}", self.source)
        }
    }
}

/// The answer to a permission check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionAnswer {
    /// Allowed or not.
    pub allowed: bool,
    /// The roles that count for the user (keys, sorted, once each).
    pub roles: Vec<String>,
    /// Why: `role admin (rule it-admins) grants billing.manage`, `role admin requires an
    /// active workspace license`, `roles viewer lack permission billing.manage`, `no role
    /// grants billing.manage`, `user inactive`.
    pub reason: String,
}

/// Answers "may this user do `permission`?" from the roles they are given.
pub fn permit(active: bool, given: &[Given<'_>], permission: &str) -> PermissionAnswer {
    if !active {
        return PermissionAnswer {
            allowed: false,
            roles: Vec::new(),
            reason: "user inactive".into(),
        };
    }
    let mut roles: Vec<String> = given
        .iter()
        .filter(|g| g.counts())
        .map(|g| g.role.key.to_string())
        .collect();
    roles.sort();
    roles.dedup();
    let grants = |g: &&Given<'_>| g.role.permissions.contains(permission);
    if let Some(g) = given.iter().filter(|g| g.counts()).find(grants) {
        let reason = format!("role {} ({}) grants {permission}", g.role.key, g.origin());
        return PermissionAnswer {
            allowed: true,
            roles,
            reason,
        };
    }
    let reason = if let Some(g) = given.iter().find(grants) {
        format!(
            "role {} ({}) grants {permission} but requires an active {} license",
            g.role.key,
            g.origin(),
            g.product.key
        )
    } else if roles.is_empty() {
        format!("no role grants {permission}")
    } else {
        let noun = if roles.len() == 1 { "role" } else { "roles" };
        let verb = if roles.len() == 1 { "lacks" } else { "lack" };
        format!("{noun} {} {verb} permission {permission}", roles.join(", "))
    };
    PermissionAnswer {
        allowed: false,
        roles,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Plan, Role};
    use serde_json::json;

    fn k(s: &str) -> Key {
        Key::new("key", s).unwrap()
    }

    fn workspace() -> Product {
        let plan = Plan {
            key: k("pro"),
            rank: 1,
            features: Default::default(),
            limits: Default::default(),
            seated: true,
        };
        let role = |key: &str, perms: &[&str], requires_license| Role {
            key: k(key),
            permissions: perms.iter().map(|p| k(p)).collect(),
            requires_license,
        };
        Product::new(k("workspace"), "Workspace".into(), vec![plan])
            .unwrap()
            .with_roles(vec![
                role("admin", &["billing.manage", "users.invite"], true),
                role("viewer", &["docs.read"], false),
            ])
            .unwrap()
    }

    #[test]
    fn rules_and_scim_roles_give_roles() {
        let products = vec![workspace()];
        let rule = |name: &str, filter: &str, role: &str| {
            RoleRule::new(k(name), filter, k("workspace"), k(role), &products).unwrap()
        };
        let rules = vec![
            rule("it-admins", r#"groups.display eq "IT Admins""#, "admin"),
            rule("everyone", "active eq true", "viewer"),
        ];
        let user = json!({"userName": "a", "active": true, "groups": [{"value": "g1", "display": "IT Admins"}],
            "roles": [{"value": "workspace:viewer"}, {"value": "admin"}, {"value": "nothing"}]});
        let by_rules = assign(&user, true, &rules, RoleSource::Rules, &products);
        assert_eq!(by_rules.len(), 2);
        assert_eq!(by_rules[&(k("workspace"), k("admin"))], ["it-admins"]);
        let by_scim = assign(&user, true, &rules, RoleSource::Scim, &products);
        assert_eq!(by_scim[&(k("workspace"), k("admin"))], [SCIM_SOURCE]);
        assert_eq!(by_scim[&(k("workspace"), k("viewer"))], [SCIM_SOURCE]);
        let both = assign(&user, true, &rules, RoleSource::Both, &products);
        assert_eq!(
            both[&(k("workspace"), k("admin"))],
            ["it-admins", SCIM_SOURCE]
        );
        assert!(assign(&user, false, &rules, RoleSource::Both, &products).is_empty());
        let plain = json!({"userName": "b", "active": true});
        let only = assign(&plain, true, &rules, RoleSource::Rules, &products);
        assert_eq!(
            only.keys().collect::<Vec<_>>(),
            [&(k("workspace"), k("viewer"))]
        );

        assert!(
            RoleRule::new(
                k("x"),
                "active eq true",
                k("workspace"),
                k("owner"),
                &products
            )
            .unwrap_err()
            .to_string()
            .contains("no role owner")
        );
        assert!(matches!(
            RoleRule::new(k("x"), "bogus eq", k("workspace"), k("admin"), &products),
            Err(Error::BadFilter(_))
        ));
    }

    #[test]
    fn permissions_need_a_counting_role() {
        let p = workspace();
        let admin = p.role("admin").unwrap();
        let viewer = p.role("viewer").unwrap();
        let given = |role, licensed| Given {
            product: &p,
            role,
            source: "it-admins",
            licensed,
        };
        let a = permit(true, &[given(admin, true)], "billing.manage");
        assert!(a.allowed);
        assert_eq!(
            a.reason,
            "role admin (rule it-admins) grants billing.manage"
        );
        assert_eq!(a.roles, ["admin"]);
        let a = permit(
            true,
            &[given(admin, false), given(viewer, false)],
            "billing.manage",
        );
        assert!(!a.allowed);
        assert_eq!(
            a.reason,
            "role admin (rule it-admins) grants billing.manage but requires an active workspace license"
        );
        assert_eq!(a.roles, ["viewer"], "a viewer needs no license");
        let a = permit(true, &[given(viewer, false)], "billing.manage");
        assert_eq!(a.reason, "role viewer lacks permission billing.manage");
        let a = permit(true, &[], "billing.manage");
        assert_eq!(a.reason, "no role grants billing.manage");
        let a = permit(false, &[given(admin, true)], "billing.manage");
        assert_eq!((a.allowed, a.reason.as_str()), (false, "user inactive"));
        let scim = Given {
            source: SCIM_SOURCE,
            ..given(admin, true)
        };
        assert_eq!(
            permit(true, &[scim], "users.invite").reason,
            "role admin (SCIM roles) grants users.invite"
        );
    }
}
