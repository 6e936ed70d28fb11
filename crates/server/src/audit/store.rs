//! The audit trail's read side: rows, checkpoints, queries, and pruning behind a checkpoint.

use crate::kernel::chain::{HEAD_ACTION, SignedHead};
use crate::kernel::store::{NewAudit, Store, StoreError, StoreResult, audit_from_row};
use crate::params;

impl Store {
    /// Audit rows of a tenant after `after_seq`, oldest first.
    pub async fn audit_rows(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::kernel::chain::AuditRow>> {
        let rows = self
            .pool
            .fetch(
                "SELECT tenant_id, seq, at, actor, action, resource_type, resource_id, request_id, \
                 before_doc, after_doc, prev_hash, hash FROM audit_log \
                 WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &params![tenant, after_seq, limit],
            )
            .await?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    /// The audit signing key, created on first use.
    pub(crate) async fn audit_key(&self) -> StoreResult<ed25519_dalek::SigningKey> {
        const KEY: &str = "audit.signing_key";
        self.init_setting(KEY, &crate::kernel::chain::new_signing_key())
            .await?;
        let stored = self.setting(KEY).await?.unwrap_or_default();
        crate::kernel::chain::signing_key(&stored)
            .ok_or_else(|| StoreError::Corrupt("the audit signing key is not readable".into()))
    }

    /// A tenant's audit checkpoint, if its chain was pruned.
    pub(crate) async fn audit_checkpoint(
        &self,
        tenant: &str,
    ) -> StoreResult<Option<crate::kernel::chain::Checkpoint>> {
        Ok(self
            .pool
            .fetch_opt(
                "SELECT tenant_id, seq, hash, at, pruned, signature FROM audit_checkpoints WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?
            .map(|r| crate::kernel::chain::Checkpoint {
                tenant_id: r.text(0),
                seq: r.int(1),
                hash: r.text(2),
                at: r.text(3),
                pruned: r.text(4),
                signature: r.text(5),
            }))
    }

    /// Removes a tenant's audit records written before `before` (a stored stamp), in one
    /// transaction with a signed checkpoint where the kept chain now begins and an
    /// `audit.prune` record saying so. Returns the checkpoint, or `None` if nothing was
    /// old enough.
    pub(crate) async fn prune_audit(
        &self,
        actor: &crate::kernel::store::Actor,
        tenant: &str,
        before: &str,
        now: &str,
        key: ed25519_dalek::SigningKey,
    ) -> StoreResult<Option<crate::kernel::chain::Checkpoint>> {
        let (actor, tenant, before, now) = (
            actor.clone(),
            tenant.to_string(),
            before.to_string(),
            now.to_string(),
        );
        self.write(move |tx| {
            tx.lock_tenant(&tenant)?;
            let Some(last) = tx.fetch_opt(
                "SELECT seq, hash, at FROM audit_log WHERE tenant_id = $1 AND at < $2 ORDER BY seq DESC LIMIT 1",
                &params![&tenant, &before],
            )?
            else {
                return Ok(None);
            };
            let mut cp = crate::kernel::chain::Checkpoint {
                tenant_id: tenant.clone(),
                seq: last.int(0),
                hash: last.text(1),
                at: last.text(2),
                pruned: now.clone(),
                signature: String::new(),
            };
            cp.sign(&key);
            let removed = tx.execute(
                "DELETE FROM audit_log WHERE tenant_id = $1 AND seq <= $2",
                &params![&tenant, cp.seq],
            )?;
            tx.execute(
                "INSERT INTO audit_checkpoints (tenant_id, seq, hash, at, pruned, signature) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, \
                 pruned = excluded.pruned, signature = excluded.signature",
                &params![&tenant, cp.seq, &cp.hash, &cp.at, &cp.pruned, &cp.signature],
            )?;
            let after = serde_json::json!({"through_seq": cp.seq, "before": before, "removed": removed, "checkpoint_hash": cp.hash});
            tx.audit(NewAudit {
                tenant_id: &tenant,
                at: &now,
                actor: &actor.name,
                action: "audit.prune",
                resource_type: "AuditLog",
                resource_id: &tenant,
                request_id: &actor.request_id,
                before: None,
                after: Some(after.to_string()),
            })?;
            Ok(Some(cp))
        })
        .await
    }

    /// Audit records of a tenant after `after_seq` that match a query, oldest first.
    pub(crate) async fn audit_query(
        &self,
        tenant: &str,
        q: &AuditQuery,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::kernel::chain::AuditRow>> {
        // An action ending in `.*` matches by prefix (`license.*`).
        let (action, action_prefix) = match q.action.as_deref() {
            Some(a) if a.ends_with(".*") => (String::new(), format!("{}.%", &a[..a.len() - 2])),
            Some(a) => (a.to_string(), String::new()),
            None => (String::new(), String::new()),
        };
        let rows = self
            .pool
            .fetch(
                "SELECT tenant_id, seq, at, actor, action, resource_type, resource_id, request_id, \
                 before_doc, after_doc, prev_hash, hash FROM audit_log \
                 WHERE tenant_id = $1 AND seq > $2 \
                 AND ($3 = '' OR at >= $3) AND ($4 = '' OR at <= $4) \
                 AND ($5 = '' OR actor = $5) AND ($6 = '' OR action = $6) AND ($7 = '' OR action LIKE $7) \
                 AND ($8 = '' OR resource_type = $8) AND ($9 = '' OR resource_id = $9) \
                 AND ($10 = '' OR request_id = $10) \
                 AND ($12 = '' OR resource_id = $12 OR (resource_id > $12 || '/' AND resource_id < $12 || '0')) \
                 ORDER BY seq LIMIT $11",
                &params![
                    tenant,
                    after_seq,
                    q.from.as_deref().unwrap_or(""),
                    q.to.as_deref().unwrap_or(""),
                    q.actor.as_deref().unwrap_or(""),
                    &action,
                    &action_prefix,
                    q.resource_type.as_deref().unwrap_or(""),
                    q.resource_id.as_deref().unwrap_or(""),
                    q.request_id.as_deref().unwrap_or(""),
                    limit,
                    q.user.as_deref().unwrap_or("")
                ],
            )
            .await?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    /// The chains whose last record is not a signed head: records came since.
    pub(crate) async fn unsigned_chains(&self) -> StoreResult<Vec<String>> {
        let rows = self
            .pool
            .fetch(
                "SELECT h.tenant_id FROM audit_heads h WHERE h.seq > 0 AND NOT EXISTS \
                 (SELECT 1 FROM audit_log l WHERE l.tenant_id = h.tenant_id AND l.seq = h.seq AND l.action = $1)",
                &params![HEAD_ACTION],
            )
            .await?;
        Ok(rows.iter().map(|r| r.text(0)).collect())
    }

    /// Signs a chain's head, appended to the chain as an `audit.head` record and sent as an
    /// `audit.head` event (tenant chains), when records came since its last signed head.
    /// Returns the chain's latest signed head (`None` for an empty chain).
    pub(crate) async fn sign_head(
        &self,
        tenant: &str,
        at: &str,
        key: ed25519_dalek::SigningKey,
    ) -> StoreResult<Option<SignedHead>> {
        let (tenant, at) = (tenant.to_string(), at.to_string());
        self.write(move |tx| {
            let (seq, hash) = tx.audit_tip(&tenant)?;
            if seq == 0 {
                return Ok(None);
            }
            let last = tx.fetch_opt(
                "SELECT action, after_doc FROM audit_log WHERE tenant_id = $1 AND seq = $2",
                &params![tenant.as_str(), seq],
            )?;
            if let Some(r) = last
                && r.text(0) == HEAD_ACTION
            {
                return Ok(serde_json::from_str(&r.text(1)).ok());
            }
            let head = SignedHead::signed(&tenant, seq, &hash, &at, &key);
            let doc = serde_json::to_string(&head).unwrap_or_default();
            tx.audit(NewAudit {
                tenant_id: &tenant,
                at: &at,
                actor: "seatkeeper",
                action: HEAD_ACTION,
                resource_type: "AuditChain",
                resource_id: &tenant,
                request_id: "",
                before: None,
                after: Some(doc.clone()),
            })?;
            if tenant != crate::kernel::chain::VENDOR {
                tx.outbox(
                    &tenant,
                    crate::kernel::catalogue::EventType::AuditHead,
                    "AuditChain",
                    &tenant,
                    &doc,
                    &at,
                )?;
            }
            Ok(Some(head))
        })
        .await
    }

    /// The tip of a tenant's audit chain.
    pub async fn audit_head(&self, tenant: &str) -> StoreResult<Option<(i64, String)>> {
        let row = self
            .pool
            .fetch_opt(
                "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1",
                &params![tenant],
            )
            .await?;
        Ok(row.map(|r| (r.int(0), r.text(1))))
    }
}

/// What to select from a tenant's audit trail (every part optional; times are stored
/// stamps, compared as text).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AuditQuery {
    /// At or after this instant.
    pub from: Option<String>,
    /// At or before this instant.
    pub to: Option<String>,
    /// Who.
    pub actor: Option<String>,
    /// What (`license.*` matches by prefix).
    pub action: Option<String>,
    /// `User`, `Group`, `License`, `Subscription`, `Rule`.
    pub resource_type: Option<String>,
    /// Which.
    pub resource_id: Option<String>,
    /// The request that did it.
    pub request_id: Option<String>,
    /// Every record about this user: the user's own, and those of their licenses (whose
    /// resource id is `{user}/{product}`).
    pub user: Option<String>,
}
