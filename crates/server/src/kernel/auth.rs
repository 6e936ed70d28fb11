//! Bearer tokens: generated with 256 bits of randomness, stored only as SHA-256 hashes,
//! compared in constant time, cached briefly in memory so a request costs no query.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::kernel::store::{Store, StoreResult};
use crate::params;

/// How long a verified token is trusted from memory. A revoked token stops working on the
/// node that revoked it at once, and on other nodes within this bound.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// A new random token with a recognisable prefix (`skt_` SCIM, `skp_` app, `ska_` admin).
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

type TokenCache = HashMap<[u8; 32], (Arc<TokenRow>, Instant), foldhash::fast::RandomState>;

/// Verifies one kind of credential against the store, with a short-lived cache.
pub struct TokenVerifier {
    kind: Credential,
    /// Live tokens by their SHA-256 (the digest, not its hex: no allocation per request).
    /// The key is the digest of the presented token itself, so a hit is a match.
    cache: RwLock<TokenCache>,
}

impl TokenVerifier {
    /// A verifier of one kind of credential.
    pub(crate) fn new(kind: Credential) -> TokenVerifier {
        TokenVerifier {
            kind,
            cache: RwLock::default(),
        }
    }

    /// The token's row if the token is live.
    pub(crate) async fn verify(
        &self,
        store: &Store,
        token: &str,
    ) -> StoreResult<Option<Arc<TokenRow>>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(cache) = self.cache.read()
            && let Some((row, at)) = cache.get(&digest)
            && at.elapsed() < TOKEN_CACHE_TTL
        {
            return Ok(Some(row.clone()));
        }
        let hash = hex::encode(digest);
        let Some(row) = store.find_credential(self.kind, &hash).await?.map(Arc::new) else {
            return Ok(None);
        };
        if !hashes_equal(&row.hash, &hash) {
            return Ok(None);
        }
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(digest, (row.clone(), Instant::now()));
        }
        Ok(Some(row))
    }

    /// Forgets cached tokens (after a revocation on this node).
    pub(crate) fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = generate_token("skt_");
        let b = generate_token("skt_");
        assert_ne!(a, b);
        assert!(a.starts_with("skt_") && a.len() > 40);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert!(hashes_equal(&hash_token(&a), &hash_token(&a)));
        assert!(!hashes_equal(&hash_token(&a), &hash_token(&b)));
    }
}

/// A SCIM token (hash only).
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Owning tenant.
    pub tenant_id: String,
    /// Name, used as the audit actor.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// An admin key's scopes, stored form (empty for other kinds).
    pub scopes: String,
}

/// The kinds of bearer credential a tenant has, each in a table of its own: a credential of
/// one kind is never found when another kind is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// SCIM tokens (`skt_`): the identity provider's, for `/scim/v2`.
    Scim,
    /// Application keys (`skp_`): read-only, for entitlement checks and tokens.
    App,
    /// Scoped admin keys (`ska_`): the admin API within their scopes, and within one tenant
    /// when bound to it (`tenant_id` empty when not).
    Admin,
}

impl Credential {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Credential::Scim => "scim_tokens",
            Credential::App => "app_keys",
            Credential::Admin => "admin_keys",
        }
    }

    /// What an operator calls it.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Credential::Scim => "SCIM token",
            Credential::App => "app key",
            Credential::Admin => "admin key",
        }
    }

    /// The prefix of its secrets.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Credential::Scim => "skt_",
            Credential::App => "skp_",
            Credential::Admin => "ska_",
        }
    }
}

impl Store {
    /// Looks a live credential up by its hash.
    pub(crate) async fn find_credential(
        &self,
        kind: Credential,
        hash: &str,
    ) -> StoreResult<Option<TokenRow>> {
        let (tenant, scopes) = match kind {
            Credential::Admin => ("COALESCE(tenant_id, '')", "scopes"),
            Credential::Scim | Credential::App => ("tenant_id", "''"),
        };
        let sql = format!(
            "SELECT {tenant}, name, token_hash, {scopes} FROM {} WHERE token_hash = $1 AND revoked IS NULL",
            kind.table()
        );
        let row = self.pool.fetch_opt(&sql, &params![hash]).await?;
        Ok(row.map(|r| TokenRow {
            tenant_id: r.text(0),
            name: r.text(1),
            hash: r.text(2),
            scopes: r.text(3),
        }))
    }
}
