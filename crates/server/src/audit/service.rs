//! Verifying the audit chains and pruning them behind signed checkpoints.

use crate::kernel::chain as audit;
use crate::kernel::clock;
use crate::kernel::store::{self, Store};

/// Verifies every tenant's audit chain (or one); returns `(tenant, records, Ok | first broken link)`.
/// A pruned chain is verified from its checkpoint, whose signature must verify with
/// `pinned` (a public key kept outside the database) or, without it, with the server's
/// own audit key.
pub async fn verify_audit(
    store: &Store,
    tenant: Option<&str>,
    pinned: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Vec<(String, i64, Result<(), audit::BrokenLink>)>, store::StoreError> {
    let tenants: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => store.tenants().await?.into_iter().map(|t| t.id).collect(),
    };
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
pub async fn prune_audit(
    store: &Store,
    clock: &dyn clock::Clock,
    days: u32,
    tenant: Option<&str>,
) -> Result<Vec<(String, Option<audit::Checkpoint>)>, store::StoreError> {
    let now = clock.now();
    let before = clock::stamp(now - time::Duration::days(i64::from(days)));
    let key = store.audit_key().await?;
    let tenants: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => store.tenants().await?.into_iter().map(|t| t.id).collect(),
    };
    let mut out = Vec::new();
    for t in tenants {
        let cp = store
            .prune_audit(&t, &before, &clock::stamp(now), key.clone())
            .await?;
        out.push((t, cp));
    }
    Ok(out)
}
