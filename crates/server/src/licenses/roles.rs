//! Roles: each product's roles as stored, tenants' role rules, and the roles users are given.
//!
//! Roles are decided with licenses, in the same transaction and for the same users
//! (`crate::licenses::decide::assign_roles`): a user matching a role rule (or holding
//! the role in their SCIM `roles`, when the tenant's `role_source` says so) is given the role,
//! recorded in `user_roles`, audited and announced as `role.granted`; one who no longer
//! matches, or is deactivated or deleted, loses it (`role.revoked`). Whether a given role
//! counts — its holder holds an active license of the product, when the role requires one —
//! is decided when a check asks ([`licensing::roles::permit`]).

use licensing::model::Product;
use licensing::roles::{RoleRule, RoleSource};
use serde_json::Value;

use crate::kernel::db::{P, Row, placeholders};
use crate::kernel::store::{Store, StoreResult, Tx};
use crate::licenses::store::key;
use crate::params;

/// A role rule as stored (the filter as text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleRuleRow {
    /// Unique name within the tenant.
    pub name: String,
    /// The SCIM filter.
    pub filter: String,
    /// The product.
    pub product: String,
    /// The role of that product.
    pub role: String,
}

impl RoleRuleRow {
    /// The stored form of a validated rule.
    pub fn of(r: &RoleRule) -> RoleRuleRow {
        RoleRuleRow {
            name: r.name.to_string(),
            filter: r.filter.to_string(),
            product: r.product.to_string(),
            role: r.role.to_string(),
        }
    }
}

/// The validated rules of stored rows; a rule naming a role the catalogue no longer has
/// gives nothing (and says so in the log) rather than stopping every decision.
pub fn role_rules_of(rows: &[RoleRuleRow], products: &[Product]) -> Vec<RoleRule> {
    rows.iter()
        .filter_map(|r| {
            let built = key("role rule", &r.name).and_then(|name| {
                Ok((name, key("product", &r.product)?, key("role", &r.role)?))
            });
            let rule = built.ok().and_then(|(name, product, role)| {
                RoleRule::new(name, &r.filter, product, role, products).ok()
            });
            if rule.is_none() {
                tracing::warn!(rule = %r.name, "a role rule names a role the catalogue lacks; it gives nothing");
            }
            rule
        })
        .collect()
}

/// Where a tenant's roles come from, from its settings.
pub fn role_source(settings: &Value) -> RoleSource {
    settings
        .get("role_source")
        .and_then(Value::as_str)
        .and_then(|s| RoleSource::parse(s).ok())
        .unwrap_or_default()
}

/// A role a user is given, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRoleRow {
    /// The user.
    pub user_id: String,
    /// The product.
    pub product: String,
    /// The role.
    pub role: String,
    /// What gave it: the names of the rules that matched, then `scim`, separated by spaces.
    pub source: String,
    /// Since when.
    pub granted: String,
}

fn user_role(r: &Row) -> UserRoleRow {
    UserRoleRow {
        user_id: r.text(0),
        product: r.text(1),
        role: r.text(2),
        source: r.text(3),
        granted: r.text(4),
    }
}

const USER_ROLE_COLUMNS: &str = "user_id, product, role, source, granted";

impl Tx<'_> {
    /// A tenant's role rules as stored, by name.
    pub(crate) fn role_rule_rows(&mut self, tenant: &str) -> StoreResult<Vec<RoleRuleRow>> {
        Ok(self
            .fetch(
                "SELECT name, filter, product, role FROM lic_role_rules WHERE tenant_id = $1 ORDER BY name",
                &params![tenant],
            )?
            .iter()
            .map(role_rule_row)
            .collect())
    }

    /// Writes a role rule (insert or replace).
    pub(crate) fn put_role_rule(
        &mut self,
        tenant: &str,
        r: &RoleRuleRow,
        now: &str,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO lic_role_rules (tenant_id, name, filter, product, role, updated) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET filter = excluded.filter, product = excluded.product, role = excluded.role, updated = excluded.updated",
            &params![tenant, &r.name, &r.filter, &r.product, &r.role, now],
        )?;
        Ok(())
    }

    /// Removes a role rule; whether it existed.
    pub(crate) fn delete_role_rule(&mut self, tenant: &str, name: &str) -> StoreResult<bool> {
        Ok(self.execute(
            "DELETE FROM lic_role_rules WHERE tenant_id = $1 AND name = $2",
            &params![tenant, name],
        )? > 0)
    }

    /// Tenants with a role rule naming a product.
    pub(crate) fn role_rule_tenants(&mut self, product: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .fetch(
                "SELECT DISTINCT tenant_id FROM lic_role_rules WHERE product = $1",
                &params![product],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect())
    }

    /// Whether any user of the tenant is given a role.
    pub(crate) fn has_user_roles(&mut self, tenant: &str) -> StoreResult<bool> {
        Ok(self
            .fetch_opt(
                "SELECT 1 FROM user_roles WHERE tenant_id = $1 LIMIT 1",
                &params![tenant],
            )?
            .is_some())
    }

    /// The roles given to these users (every user's, with `None`).
    pub(crate) fn user_roles(
        &mut self,
        tenant: &str,
        users: Option<&[String]>,
    ) -> StoreResult<Vec<UserRoleRow>> {
        let mut out = Vec::new();
        match users {
            None => {
                let sql = format!(
                    "SELECT {USER_ROLE_COLUMNS} FROM user_roles WHERE tenant_id = $1 ORDER BY user_id, product, role"
                );
                out.extend(self.fetch(&sql, &params![tenant])?.iter().map(user_role));
            }
            Some(ids) => {
                for chunk in ids.chunks(500) {
                    let sql = format!(
                        "SELECT {USER_ROLE_COLUMNS} FROM user_roles WHERE tenant_id = $1 AND user_id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut ps: Vec<P> = vec![tenant.into()];
                    ps.extend(chunk.iter().map(P::from));
                    out.extend(self.fetch(&sql, &ps)?.iter().map(user_role));
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn put_user_role(&mut self, tenant: &str, r: &UserRoleRow) -> StoreResult<()> {
        self.execute(
            "INSERT INTO user_roles (tenant_id, user_id, product, role, source, granted) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, user_id, product, role) DO UPDATE SET source = excluded.source",
            &params![tenant, &r.user_id, &r.product, &r.role, &r.source, &r.granted],
        )?;
        Ok(())
    }

    pub(crate) fn delete_user_role(&mut self, tenant: &str, r: &UserRoleRow) -> StoreResult<()> {
        self.execute(
            "DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2 AND product = $3 AND role = $4",
            &params![tenant, &r.user_id, &r.product, &r.role],
        )?;
        Ok(())
    }
}

fn role_rule_row(r: &Row) -> RoleRuleRow {
    RoleRuleRow {
        name: r.text(0),
        filter: r.text(1),
        product: r.text(2),
        role: r.text(3),
    }
}

impl Store {
    /// A tenant's role rules as stored.
    pub(crate) async fn role_rule_rows(&self, tenant: &str) -> StoreResult<Vec<RoleRuleRow>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT name, filter, product, role FROM lic_role_rules WHERE tenant_id = $1 ORDER BY name",
                &params![tenant],
            )
            .await?
            .iter()
            .map(role_rule_row)
            .collect())
    }

    /// The roles given to one user.
    pub(crate) async fn roles_of(&self, tenant: &str, user: &str) -> StoreResult<Vec<UserRoleRow>> {
        let sql = format!(
            "SELECT {USER_ROLE_COLUMNS} FROM user_roles WHERE tenant_id = $1 AND user_id = $2 ORDER BY product, role"
        );
        Ok(self
            .pool()
            .fetch(&sql, &params![tenant, user])
            .await?
            .iter()
            .map(user_role)
            .collect())
    }
}
