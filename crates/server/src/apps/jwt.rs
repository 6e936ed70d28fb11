//! Signed entitlement tokens: short-lived JWTs (EdDSA, Ed25519) an application verifies
//! offline with the keys published at `/.well-known/jwks.json`.
//!
//! Keys live in the store, so every node signs with the same current key. Rotation adds a
//! key and retires the current one; a retired key stays published until every token it
//! signed has expired (its `published_until`), then leaves the JWKS.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::apps::store::SigningKeyRow;
use crate::kernel::clock::{SharedClock, stamp};
use crate::kernel::store::{Actor, Store, StoreError, StoreResult};

/// How long a node signs with the key it last read before reading again (a rotation on
/// another node reaches this one within it; the old key stays published meanwhile).
const KEY_CACHE: Duration = Duration::from_secs(10);

/// Issues and publishes entitlement tokens.
pub struct Signer {
    store: Store,
    clock: SharedClock,
    ttl: Duration,
    current: RwLock<Option<(String, EncodingKey, Instant)>>,
}

fn encoding_key(seed: &str) -> StoreResult<EncodingKey> {
    let key = crate::kernel::chain::signing_key(seed)
        .ok_or_else(|| StoreError::Corrupt("a token signing key is not a valid seed".into()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| StoreError::Corrupt(format!("token signing key: {e}")))?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
}

fn published(k: &SigningKeyRow, now: &str) -> bool {
    k.published_until.as_deref().is_none_or(|until| until > now)
}

impl Signer {
    /// A signer whose tokens live `ttl`.
    pub fn new(store: Store, clock: SharedClock, ttl: Duration) -> Signer {
        Signer {
            store,
            clock,
            ttl,
            current: RwLock::new(None),
        }
    }

    /// Adds a new signing key and retires the current one (still published until the
    /// tokens it signed have expired). Returns the new key's id.
    pub async fn rotate(&self, actor: &Actor) -> StoreResult<String> {
        let now = self.clock.now();
        let kid = uuid::Uuid::now_v7().simple().to_string();
        let until = stamp(now + self.ttl + Duration::from_secs(60));
        self.store
            .rotate_signing_key(
                actor,
                &kid,
                &crate::kernel::chain::new_signing_key(),
                &stamp(now),
                &until,
            )
            .await?;
        if let Ok(mut c) = self.current.write() {
            *c = None;
        }
        Ok(kid)
    }

    async fn key(&self) -> StoreResult<(String, EncodingKey)> {
        if let Ok(c) = self.current.read()
            && let Some((kid, key, at)) = c.as_ref()
            && at.elapsed() < KEY_CACHE
        {
            return Ok((kid.clone(), key.clone()));
        }
        let keys = self.store.signing_keys().await?;
        let row = match keys.into_iter().find(|k| k.retired.is_none()) {
            Some(row) => row,
            None => {
                let first = Actor {
                    name: "seatkeeper".into(),
                    request_id: "first-signing-key".into(),
                };
                self.rotate(&first).await?;
                self.store
                    .signing_keys()
                    .await?
                    .into_iter()
                    .find(|k| k.retired.is_none())
                    .ok_or_else(|| StoreError::Corrupt("no token signing key".into()))?
            }
        };
        let key = encoding_key(&row.seed)?;
        if let Ok(mut c) = self.current.write() {
            *c = Some((row.kid.clone(), key.clone(), Instant::now()));
        }
        Ok((row.kid, key))
    }

    /// Signs `claims` (a JSON object) with `iat` and `exp` added; returns the token and its
    /// expiry.
    pub async fn sign(&self, mut claims: Value) -> StoreResult<(String, OffsetDateTime)> {
        let (kid, key) = self.key().await?;
        let now = self.clock.now();
        let exp = now + self.ttl;
        claims["iat"] = json!(now.unix_timestamp());
        claims["exp"] = json!(exp.unix_timestamp());
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid);
        header.typ = Some("JWT".into());
        crate::kernel::crypto::install();
        let token = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| StoreError::Corrupt(format!("signing a token: {e}")))?;
        Ok((token, exp))
    }

    /// The published keys as a JWK Set.
    pub async fn jwks(&self) -> StoreResult<Value> {
        let now = stamp(self.clock.now());
        let keys: Vec<Value> = self
            .store
            .signing_keys()
            .await?
            .iter()
            .filter(|k| published(k, &now))
            .filter_map(|k| {
                let key = crate::kernel::chain::signing_key(&k.seed)?;
                let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(key.verifying_key().to_bytes());
                Some(json!({
                    "kty": "OKP", "crv": "Ed25519", "x": x, "kid": k.kid,
                    "alg": "EdDSA", "use": "sig",
                }))
            })
            .collect();
        Ok(json!({ "keys": keys }))
    }
}

/// The claims of an entitlement token from a user's effective set (as
/// [`crate::apps::snapshot::Snapshot::entitlements`] gives it): plans in force, features,
/// limits, roles and permissions.
pub fn claims_of(tenant: &str, set: &Value) -> Value {
    let plans: serde_json::Map<String, Value> = set["licenses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["state"] == "active" && set["active"] == true)
        .map(|l| {
            (
                l["product"].as_str().unwrap_or_default().to_string(),
                l["plan"].clone(),
            )
        })
        .collect();
    serde_json::json!({
        "iss": "seatkeeper",
        "sub": set["id"],
        "tenant": tenant,
        "active": set["active"],
        "plans": plans,
        "features": set["features"],
        "limits": set["limits"],
        "roles": set["roles"],
        "permissions": set["permissions"],
    })
}
