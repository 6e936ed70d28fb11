//! The tamper-evident audit chain.
//!
//! Each tenant's records form a chain: `hash = SHA-256(prev_hash "\n" canonical(record))`,
//! where the canonical form is a JSON array of the stored columns in a fixed order. Editing,
//! inserting or deleting any stored row breaks the chain at that row, and [`verify_chain`]
//! names the first broken link.

use sha2::{Digest, Sha256};

/// The audit chain of actions that belong to no tenant (billing secrets, Stripe mappings,
/// signing keys, audit pruning). No tenant id can take this name: tenant ids are UUIDs.
pub const VENDOR: &str = "vendor";

/// The `prev_hash` of a tenant's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    /// Tenant.
    pub tenant_id: String,
    /// Position in the tenant's chain, from 1.
    pub seq: i64,
    /// When.
    pub at: String,
    /// Who: the token name (or `admin`).
    pub actor: String,
    /// What, e.g. `user.create`.
    pub action: String,
    /// `User`, `Group`…
    pub resource_type: String,
    /// Which.
    pub resource_id: String,
    /// The HTTP request id.
    pub request_id: String,
    /// State before, JSON.
    pub before: Option<String>,
    /// State after, JSON.
    pub after: Option<String>,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

impl AuditRow {
    /// The hash this record should carry.
    pub fn compute_hash(&self) -> String {
        // The canonical form is the compact JSON array of the fields, serialised straight
        // into the hash (the same bytes a `serde_json::Value` array would print).
        let canonical = (
            &self.tenant_id,
            self.seq,
            &self.at,
            &self.actor,
            &self.action,
            &self.resource_type,
            &self.resource_id,
            &self.request_id,
            &self.before,
            &self.after,
        );
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        // Writing into a hasher cannot fail.
        let _ = serde_json::to_writer(&mut h, &canonical);
        hex::encode(h.finalize())
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The first record that does not verify.
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// Verifies consecutive records, starting after a known `(seq, hash)`.
pub fn verify_chain(start: (i64, &str), rows: &[AuditRow]) -> Result<(i64, String), BrokenLink> {
    let (mut seq, mut prev) = (start.0, start.1.to_string());
    for row in rows {
        if row.seq != seq + 1 {
            return Err(BrokenLink {
                seq: seq + 1,
                reason: format!("record {} is missing (found {})", seq + 1, row.seq),
            });
        }
        if row.prev_hash != prev {
            return Err(BrokenLink {
                seq: row.seq,
                reason: "prev_hash does not match the previous record".into(),
            });
        }
        if row.compute_hash() != row.hash {
            return Err(BrokenLink {
                seq: row.seq,
                reason: "content does not match its hash (edited)".into(),
            });
        }
        seq = row.seq;
        prev = row.hash.clone();
    }
    Ok((seq, prev))
}

/// Where a tenant's chain begins after its older records were pruned: the last pruned
/// record's `seq` and `hash`, signed with the server's audit key (Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    /// Tenant.
    pub tenant_id: String,
    /// The last pruned record.
    pub seq: i64,
    /// Its hash: the `prev_hash` of the first kept record.
    pub hash: String,
    /// When that record was written.
    pub at: String,
    /// When the pruning happened.
    pub pruned: String,
    /// Ed25519 signature (base64) over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The signed text.
    pub fn message(&self) -> String {
        format!(
            "seatkeeper audit checkpoint v1\n{}\n{}\n{}\n{}\n{}",
            self.tenant_id, self.seq, self.hash, self.at, self.pruned
        )
    }

    /// Signs it.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) {
        self.signature = sign_text(key, &self.message());
    }

    /// Whether the signature is valid for `key`.
    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey) -> bool {
        signature_holds(key, self.message().as_bytes(), &self.signature)
    }
}

/// A chain's head — its last record's `seq` and `hash` — signed with the audit key. Heads are
/// appended to the chain itself (action `audit.head`) and sent as `audit.head` events, so
/// anyone keeping one elsewhere is a witness: a chain that no longer holds that record with
/// that hash was truncated or rewritten, whoever holds the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedHead {
    /// The chain (a tenant id, or `vendor`).
    pub tenant_id: String,
    /// The record attested.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When the head was signed.
    pub at: String,
    /// Ed25519 signature (base64) over [`SignedHead::message`].
    pub signature: String,
}

impl SignedHead {
    /// A head of `(seq, hash)`, signed now.
    pub fn signed(
        tenant: &str,
        seq: i64,
        hash: &str,
        at: &str,
        key: &ed25519_dalek::SigningKey,
    ) -> SignedHead {
        let mut head = SignedHead {
            tenant_id: tenant.to_string(),
            seq,
            hash: hash.to_string(),
            at: at.to_string(),
            signature: String::new(),
        };
        head.signature = sign_text(key, &head.message());
        head
    }

    /// The signed text.
    pub fn message(&self) -> String {
        format!(
            "seatkeeper audit head v1\n{}\n{}\n{}\n{}",
            self.tenant_id, self.seq, self.hash, self.at
        )
    }

    /// Whether the signature is valid for `key`.
    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey) -> bool {
        signature_holds(key, self.message().as_bytes(), &self.signature)
    }
}

/// The action of a signed head record.
pub const HEAD_ACTION: &str = "audit.head";

/// Checks the signed head records among consecutive rows: each verifies with `key` and
/// attests the record just before it.
pub fn check_heads(
    rows: &[AuditRow],
    key: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<(), BrokenLink> {
    for row in rows.iter().filter(|r| r.action == HEAD_ACTION) {
        let head: Option<SignedHead> = row
            .after
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok());
        let holds = head.as_ref().is_some_and(|h| {
            h.tenant_id == row.tenant_id
                && h.seq == row.seq - 1
                && h.hash == row.prev_hash
                && key.is_some_and(|k| h.verify(k))
        });
        if !holds {
            return Err(BrokenLink {
                seq: row.seq,
                reason: "a signed head does not verify, or does not attest the record before it (rewritten)".into(),
            });
        }
    }
    Ok(())
}

/// Checks consecutive rows against heads witnessed elsewhere: a row a witness names must
/// carry the witnessed hash.
pub fn check_witnesses(rows: &[AuditRow], witnesses: &[&SignedHead]) -> Result<(), BrokenLink> {
    for w in witnesses {
        if let Some(row) = rows.iter().find(|r| r.seq == w.seq)
            && row.hash != w.hash
        {
            return Err(BrokenLink {
                seq: w.seq,
                reason: format!(
                    "record {} differs from the head witnessed at {}: the chain was rewritten",
                    w.seq, w.at
                ),
            });
        }
    }
    Ok(())
}

/// Signs a text with the audit key: the signature in base64.
fn sign_text(key: &ed25519_dalek::SigningKey, text: &str) -> String {
    use base64::Engine as _;
    use ed25519_dalek::Signer;
    base64::engine::general_purpose::STANDARD.encode(key.sign(text.as_bytes()).to_bytes())
}

/// The audit signing key from its stored form (base64 of the 32-byte seed).
pub fn signing_key(stored: &str) -> Option<ed25519_dalek::SigningKey> {
    use base64::Engine as _;
    let seed = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .ok()?;
    let seed: [u8; 32] = seed.try_into().ok()?;
    Some(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// A new audit signing key in its stored form.
pub fn new_signing_key() -> String {
    use base64::Engine as _;
    // The key is its 32-byte seed (RFC 8032 §5.1.5), from a cryptographic generator.
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    base64::engine::general_purpose::STANDARD.encode(seed)
}

/// A public key as operators pin it: base64 of its 32 bytes.
pub fn public_key_text(key: &ed25519_dalek::SigningKey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}

/// A pinned public key from its text form.
pub fn public_key(text: &str) -> Option<ed25519_dalek::VerifyingKey> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

/// Whether `signature` (base64 Ed25519) signs exactly `body` under `key` (a signed report).
pub fn signature_holds(key: &ed25519_dalek::VerifyingKey, body: &[u8], signature: &str) -> bool {
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
        return false;
    };
    key.verify_strict(body, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_signed() {
        let key = signing_key(&new_signing_key()).unwrap();
        let mut cp = Checkpoint {
            tenant_id: "t".into(),
            seq: 10,
            hash: "ab".repeat(32),
            at: "2026-01-01T00:00:00.000000Z".into(),
            pruned: "2026-06-01T00:00:00.000000Z".into(),
            signature: String::new(),
        };
        cp.sign(&key);
        let public = public_key(&public_key_text(&key)).unwrap();
        assert!(cp.verify(&public));
        let mut moved = cp.clone();
        moved.seq = 11;
        assert!(!moved.verify(&public));
        let other = signing_key(&new_signing_key()).unwrap();
        assert!(!cp.verify(&other.verifying_key()));
    }

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRow {
                    tenant_id: "t".into(),
                    seq,
                    at: "2026-01-01T00:00:00.000000Z".into(),
                    actor: "okta".into(),
                    action: "user.create".into(),
                    resource_type: "User".into(),
                    resource_id: format!("u{seq}"),
                    request_id: "r".into(),
                    before: None,
                    after: Some("{}".into()),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = r.compute_hash();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    /// The hash is the format stored chains were written in: a record hashed by any
    /// version of seatkeeper verifies under every later one.
    #[test]
    fn the_hash_format_never_changes() {
        let mut r = chain(1).remove(0);
        r.before = Some("{\"userName\":\"zoë \\\"q\\\"\\n\"}".into());
        r.resource_id = "ü/\u{1}".into();
        assert_eq!(
            r.compute_hash(),
            "24263c66426130ad4ae5a51baa21cc0fe0b2f7927b9668f461d14b020ad3cf4c"
        );
        assert_eq!(
            chain(3)[2].hash,
            "760e0d85ce0847bf67360a2e36fa6a2afaf228c6a32816d8f0a4ae584fc172c4"
        );
    }

    #[test]
    fn intact_chain_verifies_and_any_edit_breaks_it() {
        let rows = chain(5);
        assert!(verify_chain((0, GENESIS), &rows).is_ok());
        let mut edited = rows.clone();
        edited[2].actor = "mallory".into();
        assert_eq!(verify_chain((0, GENESIS), &edited).unwrap_err().seq, 3);
        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(verify_chain((0, GENESIS), &deleted).unwrap_err().seq, 2);
        let mut rehashed = rows;
        rehashed[1].after = Some("{\"x\":1}".into());
        rehashed[1].hash = rehashed[1].compute_hash();
        assert_eq!(verify_chain((0, GENESIS), &rehashed).unwrap_err().seq, 3);
    }
}
