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

    /// Verifies every chain (the tenants' and the vendor's), or one, against the signed
    /// heads in the chains and the `witnesses` kept elsewhere.
    pub async fn verify(
        &self,
        chain: Option<&str>,
        pinned: Option<&ed25519_dalek::VerifyingKey>,
        witnesses: &[audit::SignedHead],
    ) -> Result<Vec<Verified>, store::StoreError> {
        verify_audit(&self.store, chain, pinned, witnesses, None).await
    }

    /// [`Audit::verify`], telling `progress` (records verified, records in all) after every
    /// batch it reads: the CLI's progress bar over millions of records.
    pub async fn verify_reporting(
        &self,
        chain: Option<&str>,
        pinned: Option<&ed25519_dalek::VerifyingKey>,
        witnesses: &[audit::SignedHead],
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<Vec<Verified>, store::StoreError> {
        verify_audit(&self.store, chain, pinned, witnesses, Some(progress)).await
    }

    /// Signs the head of every chain that moved since its last signed head (or of one
    /// chain); returns the heads signed now.
    pub async fn sign_heads(
        &self,
        chain: Option<&str>,
    ) -> Result<Vec<audit::SignedHead>, store::StoreError> {
        let chains = match chain {
            Some(c) => vec![c.to_string()],
            None => self.store.unsigned_chains().await?,
        };
        if chains.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.store.audit_key().await?;
        let at = clock::stamp(self.clock.now());
        let mut out = Vec::new();
        for c in chains {
            if let Some(head) = self.store.sign_head(&c, &at, key.clone()).await?
                && head.at == at
            {
                out.push(head);
            }
        }
        Ok(out)
    }

    /// The latest signed head of every chain (or one), signing first where records came
    /// since: what an operator keeps elsewhere as a witness.
    pub async fn heads(
        &self,
        chain: Option<&str>,
    ) -> Result<Vec<audit::SignedHead>, store::StoreError> {
        let key = self.store.audit_key().await?;
        let at = clock::stamp(self.clock.now());
        let mut out = Vec::new();
        for c in chains(&self.store, chain).await? {
            if let Some(head) = self.store.sign_head(&c, &at, key.clone()).await? {
                out.push(head);
            }
        }
        Ok(out)
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
///
/// - Every record's hash and link (edits, insertions and deletions that were not covered up).
/// - Every signed head in the chain (`audit.head`): its signature, and that it attests the
///   record before it (a rewrite that recomputed the hashes forward past a signed head).
/// - Every witness kept elsewhere (`--head FILE`): its signature, that the chain still holds
///   its record with its hash (a rewrite), and reaches it (truncation, or a chain removed).
///
/// Signatures verify with `pinned` (a public key kept outside the database) or, without it,
/// the server's own audit key. A pruned chain is verified from its signed checkpoint.
async fn verify_audit(
    store: &Store,
    tenant: Option<&str>,
    pinned: Option<&ed25519_dalek::VerifyingKey>,
    witnesses: &[audit::SignedHead],
    progress: Option<&(dyn Fn(u64, u64) + Send + Sync)>,
) -> Result<Vec<Verified>, store::StoreError> {
    let mut tenants = chains(store, tenant).await?;
    for w in witnesses {
        if tenant.is_none_or(|t| t == w.tenant_id) && !tenants.contains(&w.tenant_id) {
            tenants.push(w.tenant_id.clone());
        }
    }
    // What the tips say is there (less any pruned records): the measure of progress, read
    // only when someone watches it.
    let mut total: u64 = 0;
    if let Some(report) = progress {
        for t in &tenants {
            if let Some((seq, _)) = store.audit_head(t).await? {
                total += u64::try_from(seq).unwrap_or(0);
            }
        }
        report(0, total);
    }
    let mut done: u64 = 0;
    let own = match pinned {
        Some(_) => None,
        None => Some(store.audit_key().await?.verifying_key()),
    };
    let key = pinned.or(own.as_ref());
    let mut out = Vec::new();
    for t in tenants {
        let seen: Vec<&audit::SignedHead> = witnesses.iter().filter(|w| w.tenant_id == t).collect();
        let broken = |seq: i64, reason: String| Err(audit::BrokenLink { seq, reason });
        if let Some(w) = seen.iter().find(|w| !key.is_some_and(|k| w.verify(k))) {
            out.push((
                t.clone(),
                0,
                broken(
                    w.seq,
                    format!(
                        "the witnessed head of record {} does not verify with the audit key",
                        w.seq
                    ),
                ),
            ));
            continue;
        }
        let mut pos = (0i64, audit::GENESIS.to_string());
        let mut result = Ok(());
        if let Some(cp) = store.audit_checkpoint(&t).await? {
            if key.is_some_and(|k| cp.verify(k)) {
                pos = (cp.seq, cp.hash.clone());
            } else {
                out.push((
                    t,
                    cp.seq,
                    broken(
                        cp.seq,
                        "the retention checkpoint's signature does not verify".into(),
                    ),
                ));
                continue;
            }
        }
        // A witness at the checkpoint itself is checked against it; older ones were pruned.
        for w in &seen {
            if w.seq == pos.0 && w.hash != pos.1 {
                result = broken(
                    w.seq,
                    format!(
                        "record {} differs from the witnessed head: the chain was rewritten",
                        w.seq
                    ),
                );
            }
        }
        while result.is_ok() {
            let rows = store.audit_rows(&t, pos.0, 5000).await?;
            if rows.is_empty() {
                break;
            }
            if let Err(b) = audit::verify_chain((pos.0, &pos.1), &rows)
                .map(|_| ())
                .and_then(|()| audit::check_heads(&rows, key))
                .and_then(|()| audit::check_witnesses(&rows, &seen))
            {
                result = Err(b);
                break;
            }
            if let Some(last) = rows.last() {
                done += u64::try_from(last.seq - pos.0).unwrap_or(0);
                pos = (last.seq, last.hash.clone());
            }
            if let Some(report) = progress {
                report(done.min(total), total);
            }
        }
        if result.is_ok()
            && let Some(w) = seen.iter().filter(|w| w.seq > pos.0).max_by_key(|w| w.seq)
        {
            result = broken(
                pos.0 + 1,
                format!(
                    "the chain ends at record {} but a head signed at {} saw record {}: records were removed",
                    pos.0, w.at, w.seq
                ),
            );
        }
        if result.is_ok()
            && let Some((seq, hash)) = store.audit_head(&t).await?
            && (seq != pos.0 || hash != pos.1)
        {
            result = broken(
                pos.0 + 1,
                format!("the chain ends at record {} but its tip says {seq}", pos.0),
            );
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
