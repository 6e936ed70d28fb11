//! Who is calling and what they sent: credentials per kind (SCIM token, app key, admin
//! token) checked against the [`Gate`], per-tenant rate limits, the request id, JSON bodies
//! (typed, with errors through the one error table), and small response helpers.

use std::num::NonZeroU32;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kernel::auth::{Credential, TokenRow, TokenVerifier, hash_token, hashes_equal};
use crate::kernel::config::Config;
pub use crate::kernel::error::ScimJson;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::scopes::{self, Scope, Scopes};
use crate::kernel::store::Store;

/// What the extractors check credentials and limits against: one per application.
pub struct Gate {
    store: Store,
    /// SCIM token verification.
    pub(crate) scim: TokenVerifier,
    /// App key verification.
    pub(crate) apps: TokenVerifier,
    /// Scoped admin key verification.
    pub(crate) admin_keys: TokenVerifier,
    scim_limiter: DefaultKeyedRateLimiter<String>,
    app_limiter: DefaultKeyedRateLimiter<String>,
    admin_hash: String,
    public_url: Option<String>,
    /// Largest request body, in bytes.
    pub(crate) max_body: usize,
}

impl Gate {
    /// A gate over the store's credentials, with the configured limits.
    pub fn new(store: Store, config: &Config, admin_hash: String) -> Gate {
        Gate {
            store,
            scim: TokenVerifier::new(Credential::Scim),
            apps: TokenVerifier::new(Credential::App),
            admin_keys: TokenVerifier::new(Credential::Admin),
            scim_limiter: RateLimiter::keyed(quota(config.rate_per_second, config.rate_burst)),
            app_limiter: RateLimiter::keyed(quota(
                config.app_rate_per_second,
                config.app_rate_burst,
            )),
            admin_hash,
            public_url: config.public_url.clone(),
            max_body: config.max_body_bytes,
        }
    }

    /// Whether this is the admin token (the console's sign-in).
    pub(crate) fn is_admin_token(&self, token: &str) -> bool {
        hashes_equal(&hash_token(token), &self.admin_hash)
    }

    /// The configured public base URL, if any.
    pub(crate) fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Forgets cached credentials of a kind (after a revocation on this node).
    pub fn forget(&self, kind: Credential) {
        match kind {
            Credential::Scim => self.scim.forget_all(),
            Credential::App => self.apps.forget_all(),
            Credential::Admin => self.admin_keys.forget_all(),
        }
    }

    /// The live app key `key`, within its tenant's rate limit.
    pub(crate) async fn app_key(&self, key: &str) -> ApiResult<std::sync::Arc<TokenRow>> {
        let row = self
            .apps
            .verify(&self.store, key)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the app key is not valid".into()))?;
        admit(&self.app_limiter, &row.tenant_id)?;
        Ok(row)
    }

    /// The base URL of the SCIM endpoint for a request.
    pub(crate) fn scim_base(&self, headers: &HeaderMap) -> String {
        format!("{}/scim/v2", base_url(self, headers))
    }
}

/// Application state that holds a [`Gate`].
pub trait HasGate {
    /// The gate.
    fn gate(&self) -> &Gate;
}

/// Who is acting, for which tenant, in which request (a SCIM token's tenant and name).
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The tenant all reads and writes are confined to.
    pub tenant: String,
    /// The actor recorded in the audit trail (the token's name).
    pub actor: String,
    /// The request id recorded in the audit trail.
    pub request_id: String,
    /// Base URL of the SCIM endpoint, for `meta.location`.
    pub base_url: String,
}

fn request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// A JSON body deserialized into `T`: malformed JSON is `invalidSyntax`; a field of the
/// wrong type, a missing one or one `T` does not know is `invalidValue` naming the field.
/// Request types refuse unknown fields (`#[serde(deny_unknown_fields)]`).
pub struct Json<T>(pub T);

/// A typed query string: a missing, malformed or unknown parameter (with
/// `deny_unknown_fields`) is a 400 `invalidValue` naming it, through the one error table.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                scim::Error::InvalidValue(format!("query string: {text}")).into()
            })
    }
}

/// Typed path parameters: a segment that is not valid UTF-8 once percent-decoded, or not of
/// the parameter's type, is a 400 `invalidValue` through the one error table (never axum's
/// plain-text rejection).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let detail = match e.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        format!("path: {key} is not valid UTF-8 once percent-decoded")
                    }
                    _ => format!("path: {}", e.body_text()),
                };
                Err(scim::Error::InvalidValue(detail).into())
            }
            Err(other) => Err(ApiError::Rejected {
                status: other.status(),
                detail: other.body_text(),
            }),
        }
    }
}

impl<S: HasGate + Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = state.gate().max_body;
        let bytes = read_body(req, limit).await?;
        parse_typed(&bytes).map(Json)
    }
}

/// Parses a typed body from bytes already read (see [`Json`]).
pub fn parse_typed<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(scim::Error::InvalidSyntax("the request body is empty".into()).into());
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A key named twice is a malformed body, not a wrong value.
        if inner.is_data() && !inner.to_string().starts_with("duplicate field") {
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            scim::Error::InvalidValue(format!("{at}{}", strip_position(&inner.to_string()))).into()
        } else {
            scim::Error::InvalidSyntax(format!("the body is not valid JSON: {inner}")).into()
        }
    })
}

/// serde's messages end with " at line 1 column 12", which says nothing to a caller.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

/// A JSON body's bytes, its media type and size checked, for handlers that deserialize a
/// type borrowing from them.
pub struct RawJson(pub Bytes);

impl<S: HasGate + Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, state.gate().max_body).await.map(RawJson)
    }
}

/// A body's exact bytes within the size limit, whatever its media type (signed webhooks
/// are verified over them).
pub struct RawBody(pub Bytes);

impl<S: HasGate + Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        limited(req, state.gate().max_body).await.map(RawBody)
    }
}

/// An optional typed body: an absent or empty body is `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S: HasGate + Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = state.gate().max_body;
        let bytes = read_body(req, limit).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_typed(&bytes).map(OptionalJson)
    }
}

/// Checks the media type and reads the body within `limit` bytes.
async fn read_body(req: Request, limit: usize) -> ApiResult<Bytes> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence != "application/scim+json" && essence != "application/json" {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type must be application/scim+json or application/json, got '{essence}'"
            )));
        }
    }
    limited(req, limit).await
}

/// Reads the body within `limit` bytes (413 past it).
async fn limited(req: Request, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(format!("the request body exceeds {limit} bytes")))
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// Lets a tenant's request through its limiter, or answers 429 with `Retry-After`.
// `&String`: the limiter's key type, borrowed from the credential's row without a copy.
#[allow(clippy::ptr_arg)]
pub(crate) fn admit(limiter: &DefaultKeyedRateLimiter<String>, tenant: &String) -> ApiResult<()> {
    match limiter.check_key(tenant) {
        Ok(()) => Ok(()),
        Err(not_until) => {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            metrics::counter!("seatkeeper_rate_limited_total").increment(1);
            Err(ApiError::RateLimited {
                retry_after: wait.as_secs().max(1),
            })
        }
    }
}

/// A request id: the caller's `X-Request-Id` if sane, else a fresh one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Reads a JSON body of any shape (SCIM resources, which the protocol crate validates):
/// checks the media type, enforces the size limit, and turns malformed JSON into SCIM
/// `invalidSyntax` (never axum's plain-text rejection).
pub async fn read_json(req: Request, limit: usize) -> ApiResult<Value> {
    json_from_bytes(&read_body(req, limit).await?)
}

/// Parses a body already read (endpoints that verify a signature over the raw bytes first):
/// malformed JSON is SCIM `invalidSyntax`.
pub fn json_from_bytes(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.is_empty() {
        return Err(scim::Error::InvalidSyntax("the request body is empty".into()).into());
    }
    serde_json::from_slice::<Strict>(bytes)
        .map(|v| v.0)
        .map_err(|e| scim::Error::InvalidSyntax(format!("the body is not valid JSON: {e}")).into())
}

/// A JSON value that refuses an object naming a key twice (which would otherwise keep the
/// last value silently: two readers of one body could disagree on what it says).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key '{key}' appears twice in one object"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// A header's value as text, if it is text.
pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The base URL for `meta.location`.
pub(crate) fn base_url(gate: &Gate, headers: &HeaderMap) -> String {
    if let Some(u) = &gate.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// A request authenticated with a tenant's SCIM token and within its rate limit.
pub struct ScimAuth(pub Ctx);

impl<S: HasGate + Send + Sync> FromRequestParts<S> for ScimAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
        let gate = state.gate();
        let row = gate
            .scim
            .verify(&gate.store, token)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
        admit(&gate.scim_limiter, &row.tenant_id)?;
        let request_id = request_id(parts);
        Ok(ScimAuth(Ctx {
            tenant: row.tenant_id.clone(),
            actor: row.name.clone(),
            request_id,
            base_url: format!("{}/scim/v2", base_url(gate, &parts.headers)),
        }))
    }
}

/// A request authenticated with the bootstrap admin token, or with an admin key whose scopes
/// cover the route and whose tenant, if it has one, is the route's.
pub struct AdminAuth {
    /// The request id.
    pub request_id: String,
    /// The admin key, or `None` for the bootstrap admin token (full access).
    pub key: Option<std::sync::Arc<TokenRow>>,
}

impl AdminAuth {
    /// The admin as the audit trail records them: `admin`, or `admin-key:<name>`.
    pub fn actor(&self) -> crate::kernel::store::Actor {
        crate::kernel::store::Actor {
            name: match &self.key {
                None => "admin".into(),
                Some(k) => format!("admin-key:{}", k.name),
            },
            request_id: self.request_id.clone(),
        }
    }

    /// The scopes this caller holds (every scope for the bootstrap token).
    pub fn scopes(&self) -> Scopes {
        match &self.key {
            None => Scopes::parse(Scope::ALL.map(Scope::as_str)).unwrap_or_default(),
            Some(k) => Scopes::from_stored(&k.scopes),
        }
    }
}

impl<S: HasGate + Send + Sync> FromRequestParts<S> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("the admin bearer token is required".into()))?;
        let gate = state.gate();
        let request_id = request_id(parts);
        if hashes_equal(&hash_token(token), &gate.admin_hash) {
            return Ok(AdminAuth {
                request_id,
                key: None,
            });
        }
        let key = gate
            .admin_keys
            .verify(&gate.store, token)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the admin token is not valid".into()))?;
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        if !key.tenant_id.is_empty() {
            match scopes::tenant_of(&route, parts.uri.path()) {
                Some(t) if t == key.tenant_id => {}
                Some(t) => return Err(ApiError::NotFound(format!("tenant {t} not found"))),
                None => {
                    return Err(ApiError::Forbidden(format!(
                        "admin key '{}' is confined to tenant {}; vendor-wide calls are refused",
                        key.name, key.tenant_id
                    )));
                }
            }
        }
        match scopes::required(&parts.method, &route) {
            Some(scope) if Scopes::from_stored(&key.scopes).has(scope) => {}
            Some(scope) => {
                return Err(ApiError::Forbidden(format!(
                    "admin key '{}' lacks the scope '{}'",
                    key.name,
                    scope.as_str()
                )));
            }
            None => {
                return Err(ApiError::Forbidden(
                    "only the bootstrap admin token may call this endpoint".into(),
                ));
            }
        }
        Ok(AdminAuth {
            request_id,
            key: Some(key),
        })
    }
}

/// Sets the status of a response.
pub fn with_status(status: StatusCode, resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    *r.status_mut() = status;
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}
