//! SSO rows: each tenant's OIDC connection, the users and groups sign-in created, sign-in
//! counts, and the lookups a sign-in makes.

use serde_json::Value;

use crate::kernel::store::{Store, StoreResult, Tx};
use crate::params;

/// A user a sign-in may be: its id, whether it is active, and whether sign-in created it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Id.
    pub id: String,
    /// userName.
    pub user_name: String,
    /// Active.
    pub active: bool,
    /// Whether sign-in created it (only then does sign-in change it).
    pub jit: bool,
}

impl Tx<'_> {
    /// Puts a tenant's connection.
    pub(crate) fn put_sso_connection(
        &mut self,
        tenant: &str,
        config: &Value,
        now: &str,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO sso_connections (tenant_id, config, updated) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET config = excluded.config, updated = excluded.updated",
            &params![tenant, config.to_string(), now],
        )?;
        Ok(())
    }

    /// Removes a tenant's connection; whether there was one.
    pub(crate) fn delete_sso_connection(&mut self, tenant: &str) -> StoreResult<bool> {
        Ok(self.execute(
            "DELETE FROM sso_connections WHERE tenant_id = $1",
            &params![tenant],
        )? > 0)
    }

    /// A tenant's connection as stored.
    pub(crate) fn sso_connection_tx(&mut self, tenant: &str) -> StoreResult<Option<Value>> {
        Ok(self
            .fetch_opt(
                "SELECT config FROM sso_connections WHERE tenant_id = $1",
                &params![tenant],
            )?
            .and_then(|r| serde_json::from_str(&r.text(0)).ok()))
    }

    /// Marks a user or group as created by sign-in.
    pub(crate) fn mark_sso_managed(
        &mut self,
        tenant: &str,
        kind: &str,
        id: &str,
        now: &str,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO sso_managed (tenant_id, kind, resource_id, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, kind, resource_id) DO NOTHING",
            &params![tenant, kind, id, now],
        )?;
        Ok(())
    }

    /// Counts a sign-in and records it as the user's activity; returns the count.
    pub(crate) fn record_login(&mut self, tenant: &str, user: &str, now: &str) -> StoreResult<i64> {
        let n = self
            .fetch_opt(
                "INSERT INTO sso_logins (tenant_id, user_id, logins, last_login) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET logins = sso_logins.logins + 1, last_login = excluded.last_login \
                 RETURNING logins",
                &params![tenant, user, now],
            )?
            .map(|r| r.int(0))
            .unwrap_or(1);
        self.execute(
            "INSERT INTO user_activity (tenant_id, user_id, last_seen) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seen = excluded.last_seen \
             WHERE excluded.last_seen > user_activity.last_seen",
            &params![tenant, user, now],
        )?;
        Ok(n)
    }
}

const CANDIDATE: &str = "SELECT u.id, u.user_name, u.active, \
     CASE WHEN s.resource_id IS NULL THEN 0 ELSE 1 END \
     FROM scim_users u LEFT JOIN sso_managed s \
     ON s.tenant_id = u.tenant_id AND s.kind = 'User' AND s.resource_id = u.id \
     WHERE u.tenant_id = $1";

fn candidate(r: &crate::kernel::db::Row) -> Candidate {
    Candidate {
        id: r.text(0),
        user_name: r.text(1),
        active: r.int(2) != 0,
        jit: r.int(3) != 0,
    }
}

impl Store {
    /// A tenant's connection as stored.
    pub(crate) async fn sso_connection(&self, tenant: &str) -> StoreResult<Option<Value>> {
        Ok(self
            .pool
            .fetch_opt(
                "SELECT config FROM sso_connections WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?
            .and_then(|r| serde_json::from_str(&r.text(0)).ok()))
    }

    /// The user a sign-in names: by userName, then email, then externalId.
    pub(crate) async fn login_candidate(
        &self,
        tenant: &str,
        user_name: Option<&str>,
        email: Option<&str>,
        external_id: Option<&str>,
    ) -> StoreResult<Option<Candidate>> {
        if let Some(n) = user_name {
            let sql = format!("{CANDIDATE} AND u.user_name_lc = $2");
            if let Some(r) = self
                .pool
                .fetch_opt(&sql, &params![tenant, n.to_lowercase()])
                .await?
            {
                return Ok(Some(candidate(&r)));
            }
        }
        // Several users may share an email or externalId: the oldest id wins. (The ids are
        // read by the value's own index and compared here: a MIN() in SQL would walk the
        // tenant's primary key instead.)
        for (value, sql) in [
            (
                email.map(str::to_lowercase),
                "SELECT user_id FROM scim_user_emails WHERE tenant_id = $1 AND value_lc = $2",
            ),
            (
                external_id.map(str::to_string),
                "SELECT id FROM scim_users WHERE tenant_id = $1 AND external_id = $2",
            ),
        ] {
            let Some(value) = value else { continue };
            let first = self
                .pool
                .fetch(sql, &params![tenant, value])
                .await?
                .iter()
                .map(|r| r.text(0))
                .min();
            if let Some(id) = first {
                let sql = format!("{CANDIDATE} AND u.id = $2");
                if let Some(r) = self.pool.fetch_opt(&sql, &params![tenant, id]).await? {
                    return Ok(Some(candidate(&r)));
                }
            }
        }
        Ok(None)
    }

    /// A group by display name (any case).
    pub(crate) async fn group_named(
        &self,
        tenant: &str,
        name: &str,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .pool
            .fetch_opt(
                "SELECT id FROM scim_groups WHERE tenant_id = $1 AND display_name_lc = $2 ORDER BY id LIMIT 1",
                &params![tenant, name.to_lowercase()],
            )
            .await?
            .map(|r| r.text(0)))
    }

    /// The groups a user is a direct member of: (id, display name, created by sign-in).
    pub(crate) async fn direct_groups(
        &self,
        tenant: &str,
        user: &str,
    ) -> StoreResult<Vec<(String, String, bool)>> {
        Ok(self
            .pool
            .fetch(
                "SELECT g.id, g.display_name, \
                        CASE WHEN s.resource_id IS NULL THEN 0 ELSE 1 END \
                 FROM scim_group_members m \
                 JOIN scim_groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id \
                 LEFT JOIN sso_managed s ON s.tenant_id = g.tenant_id AND s.kind = 'Group' AND s.resource_id = g.id \
                 WHERE m.tenant_id = $1 AND m.member_id = $2",
                &params![tenant, user],
            )
            .await?
            .iter()
            .map(|r| (r.text(0), r.text(1), r.int(2) != 0))
            .collect())
    }

    /// A user's sign-ins: how many, and the last.
    pub(crate) async fn logins(
        &self,
        tenant: &str,
        user: &str,
    ) -> StoreResult<Option<(i64, String)>> {
        Ok(self
            .pool
            .fetch_opt(
                "SELECT logins, last_login FROM sso_logins WHERE tenant_id = $1 AND user_id = $2",
                &params![tenant, user],
            )
            .await?
            .map(|r| (r.int(0), r.text(1))))
    }
}
