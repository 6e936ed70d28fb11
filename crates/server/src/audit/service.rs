//! The audit trail as a service: queries and exports of a chain (a tenant's or the vendor's),
//! verification of every chain, and pruning behind signed checkpoints.

pub use crate::audit::store::AuditQuery;
use crate::kernel::chain::{self as audit, AuditRow};
use crate::kernel::clock::{self, SharedClock};
use crate::kernel::error::ApiResult;
use crate::kernel::store::{self, Actor, Store, VENDOR};
use serde_json::{Value, json};

/// The audit service.
#[derive(Clone)]
pub struct Audit {
    store: Store,
    clock: SharedClock,
}

/// A chain's verification: `(chain, records, Ok | first broken link)`.
pub type Verified = (String, i64, Result<(), audit::BrokenLink>);

impl Audit {
    /// The service over a store.
    pub fn new(store: Store, clock: SharedClock) -> Audit {
        Audit { store, clock }
    }

    /// Records of a chain after `after` that match the query, oldest first.
    pub async fn query(
        &self,
        chain: &str,
        q: &AuditQuery,
        after: i64,
        limit: i64,
    ) -> ApiResult<Vec<AuditRow>> {
        Ok(self.store.audit_query(chain, q, after, limit).await?)
    }

    /// Verifies every chain (the tenants' and the vendor's), or one.
    pub async fn verify(
        &self,
        chain: Option<&str>,
        pinned: Option<&ed25519_dalek::VerifyingKey>,
    ) -> Result<Vec<Verified>, store::StoreError> {
        verify_audit(&self.store, chain, pinned).await
    }

    /// Prunes records older than `days` from every chain (or one), each behind a checkpoint
    /// signed with the server's audit key; the pruning is itself recorded on the chain.
    pub async fn prune(
        &self,
        actor: &Actor,
        days: u32,
        chain: Option<&str>,
    ) -> Result<Vec<(String, Option<audit::Checkpoint>)>, store::StoreError> {
        prune_audit(&self.store, &*self.clock, actor, days, chain).await
    }

    /// Signs bytes with the audit key (Ed25519): the signature and the public key, base64.
    pub async fn sign(&self, body: &[u8]) -> Result<(String, String), store::StoreError> {
        use base64::Engine as _;
        use ed25519_dalek::Signer as _;
        let key = self.store.audit_key().await?;
        let sig = key.sign(body);
        Ok((
            base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
            audit::public_key_text(&key),
        ))
    }

    /// Every record of a chain matching `q`, as CSV (with a header line) or JSON lines.
    pub async fn export(&self, chain: &str, q: &AuditQuery, csv: bool) -> ApiResult<String> {
        let mut out = if csv {
            CSV_HEADER.to_string()
        } else {
            String::new()
        };
        let mut after = 0;
        loop {
            let rows = self.store.audit_query(chain, q, after, 1000).await?;
            for r in &rows {
                if csv {
                    out.push_str(&audit_csv(r));
                } else {
                    out.push_str(&audit_json(r).to_string());
                    out.push('\n');
                }
            }
            match rows.last() {
                Some(last) if rows.len() == 1000 => after = last.seq,
                _ => return Ok(out),
            }
        }
    }

    /// The public half of the audit key, for pinning outside the database.
    pub async fn public_key(&self) -> Result<String, store::StoreError> {
        Ok(audit::public_key_text(&self.store.audit_key().await?))
    }
}

/// Every chain: each tenant's, then the vendor's.
async fn chains(store: &Store, one: Option<&str>) -> Result<Vec<String>, store::StoreError> {
    Ok(match one {
        Some(t) => vec![t.to_string()],
        None => {
            let mut all: Vec<String> = store.tenants().await?.into_iter().map(|t| t.id).collect();
            all.push(VENDOR.to_string());
            all
        }
    })
}

/// Verifies every tenant's audit chain (or one); returns `(tenant, records, Ok | first broken link)`.
/// A pruned chain is verified from its checkpoint, whose signature must verify with
/// `pinned` (a public key kept outside the database) or, without it, with the server's
/// own audit key.
async fn verify_audit(
    store: &Store,
    tenant: Option<&str>,
    pinned: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Vec<Verified>, store::StoreError> {
    let tenants = chains(store, tenant).await?;
    let own = match pinned {
        Some(_) => None,
        None => Some(store.audit_key().await?.verifying_key()),
    };
    let key = pinned.or(own.as_ref());
    let mut out = Vec::new();
    for t in tenants {
        let mut pos = (0i64, audit::GENESIS.to_string());
        let mut result = Ok(());
        if let Some(cp) = store.audit_checkpoint(&t).await? {
            if key.is_some_and(|k| cp.verify(k)) {
                pos = (cp.seq, cp.hash.clone());
            } else {
                out.push((
                    t,
                    cp.seq,
                    Err(audit::BrokenLink {
                        seq: cp.seq,
                        reason: "the retention checkpoint's signature does not verify".into(),
                    }),
                ));
                continue;
            }
        }
        loop {
            let rows = store.audit_rows(&t, pos.0, 5000).await?;
            if rows.is_empty() {
                break;
            }
            match audit::verify_chain((pos.0, &pos.1), &rows) {
                Ok(next) => pos = next,
                Err(broken) => {
                    result = Err(broken);
                    break;
                }
            }
        }
        if result.is_ok()
            && let Some((seq, hash)) = store.audit_head(&t).await?
            && (seq != pos.0 || hash != pos.1)
        {
            result = Err(audit::BrokenLink {
                seq: pos.0 + 1,
                reason: format!("the chain ends at record {} but its tip says {seq}", pos.0),
            });
        }
        out.push((t, pos.0, result));
    }
    Ok(out)
}

/// Prunes audit records older than `days` for every tenant (or one), each behind a signed
/// checkpoint; returns what was done per tenant.
async fn prune_audit(
    store: &Store,
    clock: &dyn clock::Clock,
    actor: &Actor,
    days: u32,
    tenant: Option<&str>,
) -> Result<Vec<(String, Option<audit::Checkpoint>)>, store::StoreError> {
    let now = clock.now();
    let before = clock::stamp(now - time::Duration::days(i64::from(days)));
    let key = store.audit_key().await?;
    let tenants = chains(store, tenant).await?;
    let mut out = Vec::new();
    for t in tenants {
        let cp = store
            .prune_audit(actor, &t, &before, &clock::stamp(now), key.clone())
            .await?;
        out.push((t, cp));
    }
    Ok(out)
}

/// An audit record as the API shows it.
pub(crate) fn audit_json(r: &crate::kernel::chain::AuditRow) -> Value {
    let doc = |d: &Option<String>| {
        d.as_deref()
            .map(|s| serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.to_string())))
            .unwrap_or(Value::Null)
    };
    json!({
        "seq": r.seq, "at": r.at, "actor": r.actor, "action": r.action,
        "resource_type": r.resource_type, "resource_id": r.resource_id, "request_id": r.request_id,
        "before": doc(&r.before), "after": doc(&r.after), "prev_hash": r.prev_hash, "hash": r.hash,
    })
}

pub(crate) const CSV_HEADER: &str =
    "seq,at,actor,action,resource_type,resource_id,request_id,before,after,prev_hash,hash\r\n";

/// One CSV field (RFC 4180): neutralised if it could run as a formula, quoted when it holds
/// a comma, quote or line break.
fn csv_field(s: &str) -> String {
    let s = crate::kernel::csv_cell::cell(s);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(crate) fn audit_csv(r: &crate::kernel::chain::AuditRow) -> String {
    let fields = [
        r.seq.to_string(),
        r.at.clone(),
        r.actor.clone(),
        r.action.clone(),
        r.resource_type.clone(),
        r.resource_id.clone(),
        r.request_id.clone(),
        r.before.clone().unwrap_or_default(),
        r.after.clone().unwrap_or_default(),
        r.prev_hash.clone(),
        r.hash.clone(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}
