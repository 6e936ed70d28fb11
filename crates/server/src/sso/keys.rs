//! The identity providers' signing keys: discovered from `{issuer}/.well-known/openid-configuration`
//! when a connection names no `jwks_uri`, fetched from the JWKS, cached, and fetched again
//! when a token names a key the cache lacks (a rotation) — at most once per
//! [`MIN_REFRESH`] per JWKS, so a stream of forged `kid`s cannot make seatkeeper hammer the
//! provider. ID tokens are verified with `jsonwebtoken`: RS256, ES256 and EdDSA only.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The least time between two fetches of one JWKS (or discovery document): tokens naming
/// unknown keys cost the identity provider at most one request per this interval.
pub const MIN_REFRESH: Duration = Duration::from_secs(2);
/// How long fetched keys are trusted before they are fetched again on next use.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 256 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;
/// The algorithms an ID token may be signed with.
pub const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Why a token was refused: the `reason` of a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a JWT, an algorithm not accepted, no key that verifies it, or a bad signature.
    InvalidSignature,
    /// Past `exp` (or before `nbf`) beyond the leeway.
    Expired,
    /// No audience of the connection.
    WrongAudience,
    /// Not the connection's issuer (or the tenant has no connection).
    UnknownIssuer,
    /// The nonce differs from the one given.
    NonceMismatch,
    /// The user is deactivated.
    UserInactive,
    /// `existing_only`, and no user matches.
    UnknownUser,
}

impl Refusal {
    /// The `reason` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::InvalidSignature => "invalid_signature",
            Refusal::Expired => "expired",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::NonceMismatch => "nonce_mismatch",
            Refusal::UserInactive => "user_inactive",
            Refusal::UnknownUser => "unknown_user",
        }
    }
}

/// A refusal with what a person is told.
#[derive(Debug, Clone)]
pub struct Refused(pub Refusal, pub String);

fn refuse(r: Refusal, detail: impl Into<String>) -> Refused {
    Refused(r, detail.into())
}

struct KeySet {
    keys: Vec<(Option<String>, Jwk)>,
    fetched: Instant,
}

/// Keys by JWKS URL, and JWKS URLs by issuer (discovered).
pub struct Keys {
    client: reqwest::Client,
    sets: RwLock<HashMap<String, KeySet>>,
    discovered: RwLock<HashMap<String, String>>,
    /// When each URL was last fetched (successfully or not).
    attempts: std::sync::Mutex<HashMap<String, Instant>>,
    fetch: tokio::sync::Mutex<()>,
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            client: crate::kernel::crypto::http_client()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            sets: RwLock::default(),
            discovered: RwLock::default(),
            attempts: Default::default(),
            fetch: tokio::sync::Mutex::new(()),
        }
    }
}

/// The claims of a token, read without verifying it (to route it: which issuer).
pub fn unverified_claims(token: &str) -> Option<Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Keys {
    /// Whether `url` may be fetched now (not within [`MIN_REFRESH`] of the last attempt);
    /// records the attempt.
    fn may_fetch(&self, url: &str) -> bool {
        let Ok(mut a) = self.attempts.lock() else {
            return false;
        };
        if a.get(url).is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return false;
        }
        a.insert(url.to_string(), Instant::now());
        true
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_DOCUMENT)
        {
            return Err(format!("{url} is larger than {MAX_DOCUMENT} bytes"));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?;
        if bytes.len() > MAX_DOCUMENT {
            return Err(format!("{url} is larger than {MAX_DOCUMENT} bytes"));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{url} is not JSON: {e}"))
    }

    /// The JWKS URL of a connection: its own, or the issuer's discovered one.
    async fn jwks_uri(&self, issuer: &str, configured: Option<&str>) -> Result<String, Refused> {
        if let Some(u) = configured {
            return Ok(u.to_string());
        }
        if let Some(u) = self
            .discovered
            .read()
            .ok()
            .and_then(|d| d.get(issuer).cloned())
        {
            return Ok(u);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let _one = self.fetch.lock().await;
        if let Some(u) = self
            .discovered
            .read()
            .ok()
            .and_then(|d| d.get(issuer).cloned())
        {
            return Ok(u);
        }
        if !self.may_fetch(&url) {
            return Err(refuse(
                Refusal::InvalidSignature,
                "the identity provider's discovery document is not available yet; retry shortly",
            ));
        }
        let doc = self.get_json(&url).await.map_err(|e| {
            tracing::warn!(error = %e, "OIDC discovery failed");
            refuse(
                Refusal::InvalidSignature,
                format!("OIDC discovery failed: {e}"),
            )
        })?;
        let uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                refuse(
                    Refusal::InvalidSignature,
                    format!("{url} names no jwks_uri"),
                )
            })?
            .to_string();
        if let Ok(mut d) = self.discovered.write() {
            d.insert(issuer.to_string(), uri.clone());
        }
        Ok(uri)
    }

    /// Fetches a JWKS (if allowed now) into the cache.
    async fn refresh(&self, url: &str) -> Result<(), String> {
        let _one = self.fetch.lock().await;
        if !self.may_fetch(url) {
            return Ok(());
        }
        let doc = self.get_json(url).await?;
        let set: JwkSet =
            serde_json::from_value(doc).map_err(|e| format!("{url} is not a JWK Set: {e}"))?;
        let keys = set
            .keys
            .into_iter()
            .map(|k| (k.common.key_id.clone(), k))
            .collect();
        if let Ok(mut s) = self.sets.write() {
            s.insert(
                url.to_string(),
                KeySet {
                    keys,
                    fetched: Instant::now(),
                },
            );
        }
        metrics::counter!("seatkeeper_sso_jwks_fetches_total").increment(1);
        Ok(())
    }

    /// The keys of a JWKS that may verify a token of this `kid` and algorithm.
    fn candidates(&self, url: &str, kid: Option<&str>, alg: Algorithm) -> Option<Vec<Jwk>> {
        let sets = self.sets.read().ok()?;
        let set = sets.get(url)?;
        if set.fetched.elapsed() > MAX_AGE {
            return None;
        }
        let found: Vec<Jwk> = set
            .keys
            .iter()
            .filter(|(k, _)| kid.is_none() || k.as_deref() == kid)
            .filter(|(_, j)| {
                j.common
                    .key_algorithm
                    .is_none_or(|a| a.to_string() == format!("{alg:?}"))
            })
            .map(|(_, j)| j.clone())
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// Verifies an ID token for a connection: signature (a key of the provider's JWKS),
    /// `iss`, `aud`, `exp` and `nbf` with [`LEEWAY_SECONDS`]. Returns its claims.
    pub async fn verify(
        &self,
        token: &str,
        (issuer, jwks_uri): (&str, Option<&str>),
        audiences: &[String],
        now: i64,
    ) -> Result<Value, Refused> {
        crate::kernel::crypto::install();
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            refuse(
                Refusal::InvalidSignature,
                format!("the ID token is not a signed JWT of an accepted algorithm: {e}"),
            )
        })?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(refuse(
                Refusal::InvalidSignature,
                format!(
                    "algorithm {:?} is not accepted (RS256, ES256, EdDSA)",
                    header.alg
                ),
            ));
        }
        let claimed = unverified_claims(token).ok_or_else(|| {
            refuse(
                Refusal::InvalidSignature,
                "the ID token's claims are not JSON",
            )
        })?;
        if claimed.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(refuse(
                Refusal::UnknownIssuer,
                format!("the ID token's issuer is not {issuer}"),
            ));
        }
        let url = self.jwks_uri(issuer, jwks_uri).await?;
        let kid = header.kid.as_deref();
        let keys = match self.candidates(&url, kid, header.alg) {
            Some(k) => k,
            None => {
                if let Err(e) = self.refresh(&url).await {
                    tracing::warn!(error = %e, "fetching the identity provider's keys failed");
                }
                self.candidates(&url, kid, header.alg).ok_or_else(|| {
                    refuse(
                        Refusal::InvalidSignature,
                        format!(
                            "no key of the identity provider matches kid {}",
                            kid.unwrap_or("(none)")
                        ),
                    )
                })?
            }
        };
        // `exp` and `nbf` are checked against seatkeeper's clock below, not the library's.
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_issuer(&[issuer]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut last = refuse(Refusal::InvalidSignature, "the signature does not verify");
        for jwk in keys {
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<Value>(token, &key, &validation) {
                Ok(data) => return in_time(data.claims, now),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::ExpiredSignature => refuse(Refusal::Expired, "the ID token has expired"),
                        K::ImmatureSignature => {
                            refuse(Refusal::Expired, "the ID token is not valid yet (nbf)")
                        }
                        K::InvalidAudience => refuse(
                            Refusal::WrongAudience,
                            "the ID token is not meant for this connection's audiences",
                        ),
                        K::InvalidIssuer => refuse(
                            Refusal::UnknownIssuer,
                            format!("the ID token's issuer is not {issuer}"),
                        ),
                        K::MissingRequiredClaim(c) => refuse(
                            Refusal::InvalidSignature,
                            format!("the ID token lacks the claim {c}"),
                        ),
                        _ => refuse(
                            Refusal::InvalidSignature,
                            format!("the signature does not verify: {e}"),
                        ),
                    };
                    // A claim failure is final: the signature held.
                    if last.0 != Refusal::InvalidSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// Forgets what was discovered for an issuer (its connection changed).
    pub fn forget(&self, issuer: &str) {
        if let Ok(mut d) = self.discovered.write() {
            d.remove(issuer);
        }
    }
}

/// The claims, if `exp` (required) and `nbf` (if present) hold at `now`, with the leeway.
fn in_time(claims: Value, now: i64) -> Result<Value, Refused> {
    let leeway = LEEWAY_SECONDS as i64;
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return Err(refuse(
            Refusal::InvalidSignature,
            "the ID token has no numeric exp",
        ));
    };
    if now > exp + leeway {
        return Err(refuse(Refusal::Expired, "the ID token has expired"));
    }
    if let Some(nbf) = claims.get("nbf") {
        match nbf.as_i64() {
            Some(nbf) if now + leeway < nbf => {
                return Err(refuse(
                    Refusal::Expired,
                    "the ID token is not valid yet (nbf)",
                ));
            }
            Some(_) => {}
            None => {
                return Err(refuse(
                    Refusal::InvalidSignature,
                    "the ID token's nbf is not a number",
                ));
            }
        }
    }
    Ok(claims)
}
