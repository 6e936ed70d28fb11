//! Portal links and sessions: only SHA-256s of their secrets are stored.

use crate::kernel::store::{Store, StoreResult, Tx};
use crate::params;

/// A live portal session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The one tenant it reaches.
    pub tenant: String,
    /// What it may see and do (names separated by spaces).
    pub capabilities: String,
    /// Its form token.
    pub csrf: String,
    /// When it ends.
    pub expires: String,
}

impl Tx<'_> {
    /// Stores a new link.
    pub(crate) fn insert_portal_link(
        &mut self,
        hash: &str,
        tenant: &str,
        capabilities: &str,
        (now, by, expires): (&str, &str, &str),
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO portal_links (token_hash, tenant_id, capabilities, created, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &params![hash, tenant, capabilities, now, by, expires],
        )?;
        Ok(())
    }

    /// Spends a link that is unused and unexpired at `now`: (tenant, capabilities).
    pub(crate) fn spend_portal_link(
        &mut self,
        hash: &str,
        now: &str,
    ) -> StoreResult<Option<(String, String)>> {
        Ok(self
            .fetch_opt(
                "UPDATE portal_links SET used_at = $2 \
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                 RETURNING tenant_id, capabilities",
                &params![hash, now],
            )?
            .map(|r| (r.text(0), r.text(1))))
    }

    /// Starts a session (and forgets expired ones).
    pub(crate) fn insert_portal_session(
        &mut self,
        hash: &str,
        s: &SessionRow,
        now: &str,
    ) -> StoreResult<()> {
        self.execute(
            "DELETE FROM portal_sessions WHERE expires <= $1",
            &params![now],
        )?;
        self.execute(
            "INSERT INTO portal_sessions (id_hash, tenant_id, capabilities, csrf, created, expires) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &params![hash, &s.tenant, &s.capabilities, &s.csrf, now, &s.expires],
        )?;
        Ok(())
    }

    /// Ends a session.
    pub(crate) fn delete_portal_session(&mut self, hash: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM portal_sessions WHERE id_hash = $1",
            &params![hash],
        )?;
        Ok(())
    }
}

impl Store {
    /// A session live at `now`.
    pub(crate) async fn portal_session(
        &self,
        hash: &str,
        now: &str,
    ) -> StoreResult<Option<SessionRow>> {
        Ok(self
            .pool()
            .fetch_opt(
                "SELECT tenant_id, capabilities, csrf, expires FROM portal_sessions WHERE id_hash = $1 AND expires > $2",
                &params![hash, now],
            )
            .await?
            .map(|r| SessionRow {
                tenant: r.text(0),
                capabilities: r.text(1),
                csrf: r.text(2),
                expires: r.text(3),
            }))
    }

    /// A tenant's license holders with why they hold what they hold: (user id, userName,
    /// product, plan, state, reason), by userName.
    pub(crate) async fn portal_holders(
        &self,
        tenant: &str,
        limit: i64,
    ) -> StoreResult<Vec<(String, String, String, String, String, String)>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT l.user_id, COALESCE(u.user_name, l.user_id), l.product, l.plan, l.state, l.reason \
                 FROM licenses l LEFT JOIN scim_users u ON u.tenant_id = l.tenant_id AND u.id = l.user_id \
                 WHERE l.tenant_id = $1 ORDER BY 2, l.product LIMIT $2",
                &params![tenant, limit],
            )
            .await?
            .iter()
            .map(|r| (r.text(0), r.text(1), r.text(2), r.text(3), r.text(4), r.text(5)))
            .collect())
    }
}

/// An audit record as the portal lists it: (seq, at, actor, action, resource type, id).
pub type AuditLine = (i64, String, String, String, String, String);

impl Store {
    /// The tenant's newest audit records, newest first.
    pub(crate) async fn portal_audit(
        &self,
        tenant: &str,
        limit: i64,
    ) -> StoreResult<Vec<AuditLine>> {
        Ok(self
            .pool()
            .fetch(
                "SELECT seq, at, actor, action, resource_type, resource_id FROM audit_log \
                 WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2",
                &params![tenant, limit],
            )
            .await?
            .iter()
            .map(|r| {
                (
                    r.int(0),
                    r.text(1),
                    r.text(2),
                    r.text(3),
                    r.text(4),
                    r.text(5),
                )
            })
            .collect())
    }
}
