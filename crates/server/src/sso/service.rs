//! OIDC sign-in with just-in-time provisioning.
//!
//! The application signs its user in with the tenant's identity provider, then hands the ID
//! token to `POST /api/v1/sso/login`. seatkeeper verifies it against the tenant's connection
//! ([`crate::sso::keys`]), then:
//! - with `jit`, creates the user from the mapped claims (licenses decided in the create's
//!   transaction, as for SCIM) or, for a user sign-in created before, brings its attributes
//!   and groups up to the claims; groups the claims name that do not exist are created and
//!   marked JIT-managed;
//! - with `existing_only`, only finds the user: by userName, then email, then externalId.
//!
//! SCIM stays the source of truth: sign-in never reactivates a user, and never changes a user
//! (or group) SCIM created. Each sign-in is counted, is the user's activity (`last_seen`), and
//! is announced as `user.login`. The actor is `sso:<tenant>`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::directory::service::{Ctx, Engine};
use crate::directory::store::Kind;
use crate::kernel::catalogue::EventType;
use crate::kernel::clock::stamp;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::{Actor, Change};
use crate::sso::keys::{Keys, Refusal, Refused};

/// Most audiences a connection may list.
pub const MAX_AUDIENCES: usize = 16;
/// Most groups one sign-in's claim may name.
pub const MAX_GROUPS: usize = 100;
/// Longest ID token accepted.
pub const MAX_TOKEN: usize = 16 * 1024;

/// Which claim fills which attribute.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMap {
    /// userName (default `email`).
    #[serde(rename = "userName", default = "default_user_name")]
    pub user_name: String,
    /// externalId (default `sub`).
    #[serde(rename = "externalId", default = "default_sub")]
    pub external_id: String,
    /// The primary email (default `email`).
    #[serde(default = "default_email")]
    pub email: String,
    /// name.givenName (default `given_name`).
    #[serde(rename = "givenName", default = "default_given")]
    pub given_name: String,
    /// name.familyName (default `family_name`).
    #[serde(rename = "familyName", default = "default_family")]
    pub family_name: String,
    /// Group display names (none: sign-in changes no membership).
    #[serde(default)]
    pub groups: Option<String>,
}

fn default_user_name() -> String {
    "email".into()
}
fn default_sub() -> String {
    "sub".into()
}
fn default_email() -> String {
    "email".into()
}
fn default_given() -> String {
    "given_name".into()
}
fn default_family() -> String {
    "family_name".into()
}

impl Default for ClaimMap {
    fn default() -> ClaimMap {
        ClaimMap {
            user_name: default_user_name(),
            external_id: default_sub(),
            email: default_email(),
            given_name: default_given(),
            family_name: default_family(),
            groups: None,
        }
    }
}

/// What a sign-in may do with an unknown user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provisioning {
    /// Create it (and keep JIT-created users up to date).
    Jit,
    /// Refuse: only existing users sign in.
    ExistingOnly,
}

/// A tenant's OIDC connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// The issuer (`iss`), an https URL (http only on a loopback host).
    pub issuer: String,
    /// The JWKS; discovered from the issuer when absent.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted audiences (`aud`): the application's client ids.
    pub audiences: Vec<String>,
    /// Claim mapping.
    #[serde(default)]
    pub claims: ClaimMap,
    /// `jit` (default) or `existing_only`.
    #[serde(default = "jit")]
    pub provisioning: Provisioning,
}

fn jit() -> Provisioning {
    Provisioning::Jit
}

fn invalid(m: String) -> ApiError {
    scim::Error::InvalidValue(m).into()
}

fn check_url(field: &str, u: &str) -> ApiResult<()> {
    let parsed =
        url::Url::parse(u).map_err(|e| invalid(format!("{field}: '{u}' is not a URL: {e}")))?;
    let loopback = matches!(parsed.host(), Some(url::Host::Domain("localhost")))
        || matches!(parsed.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid(format!(
            "{field}: '{u}' must be an https URL (http only on a loopback host)"
        ))),
    }
}

impl Connection {
    /// Parses and checks a connection as the API takes it.
    pub fn parse(body: &Value) -> ApiResult<Connection> {
        let c: Connection = serde_json::from_value(body.clone())
            .map_err(|e| invalid(format!("sso connection: {e}")))?;
        check_url("issuer", &c.issuer)?;
        if let Some(j) = &c.jwks_uri {
            check_url("jwks_uri", j)?;
        }
        if c.audiences.is_empty() || c.audiences.len() > MAX_AUDIENCES {
            return Err(invalid(format!(
                "audiences: 1 to {MAX_AUDIENCES} client ids"
            )));
        }
        if c.audiences.iter().any(|a| a.is_empty() || a.len() > 512) {
            return Err(invalid("audiences: each 1 to 512 characters".into()));
        }
        let m = &c.claims;
        for (name, claim) in [
            ("userName", Some(&m.user_name)),
            ("externalId", Some(&m.external_id)),
            ("email", Some(&m.email)),
            ("givenName", Some(&m.given_name)),
            ("familyName", Some(&m.family_name)),
            ("groups", m.groups.as_ref()),
        ] {
            if let Some(claim) = claim
                && (claim.is_empty() || claim.len() > 128)
            {
                return Err(invalid(format!(
                    "claims.{name}: a claim name of 1 to 128 characters"
                )));
            }
        }
        Ok(c)
    }
}

/// A sign-in that went through.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The user's id.
    pub id: String,
    /// userName.
    pub user_name: String,
    /// Whether this sign-in created the user.
    pub created: bool,
    /// How many times the user has signed in.
    pub logins: i64,
}

/// A sign-in refused (401 with `reason`) or failed otherwise.
#[derive(Debug)]
pub enum LoginError {
    /// 401 with a reason.
    Refused(Refused),
    /// Anything else.
    Api(ApiError),
}

impl From<ApiError> for LoginError {
    fn from(e: ApiError) -> Self {
        LoginError::Api(e)
    }
}

impl From<crate::kernel::store::StoreError> for LoginError {
    fn from(e: crate::kernel::store::StoreError) -> Self {
        LoginError::Api(e.into())
    }
}

/// The SSO service.
#[derive(Clone)]
pub struct Sso {
    engine: Engine,
    keys: Arc<Keys>,
}

fn text<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Sso {
    /// The service over the directory engine.
    pub fn new(engine: Engine) -> Sso {
        Sso {
            engine,
            keys: Arc::new(Keys::default()),
        }
    }

    /// A tenant's connection (404 when it has none).
    pub async fn connection(&self, tenant: &str) -> ApiResult<Connection> {
        let stored = self
            .engine
            .store()
            .sso_connection(tenant)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("tenant {tenant} has no SSO connection")))?;
        serde_json::from_value(stored)
            .map_err(|e| ApiError::Internal(format!("stored SSO connection: {e}")))
    }

    /// Puts a tenant's connection, audited.
    pub async fn put_connection(
        &self,
        actor: &Actor,
        tenant: &str,
        body: &Value,
    ) -> ApiResult<Connection> {
        let conn = Connection::parse(body)?;
        let now = stamp(self.engine.clock().now());
        let (actor, tenant_id, out) = (actor.clone(), tenant.to_string(), conn.clone());
        let config = json!(conn);
        self.engine
            .store()
            .write(move |tx| {
                if !tx.tenant_exists(&tenant_id)? {
                    return Err(ApiError::NotFound(format!("tenant {tenant_id} not found")));
                }
                let before = tx.sso_connection_tx(&tenant_id)?;
                tx.put_sso_connection(&tenant_id, &config, &now)?;
                tx.record_change(
                    &actor,
                    &now,
                    Change {
                        chain: &tenant_id,
                        action: if before.is_some() {
                            "sso.update"
                        } else {
                            "sso.create"
                        },
                        resource_type: "SsoConnection",
                        resource_id: &tenant_id,
                        before,
                        after: Some(config.clone()),
                    },
                )?;
                Ok::<_, ApiError>(())
            })
            .await?;
        self.keys.forget(&out.issuer);
        Ok(out)
    }

    /// Removes a tenant's connection, audited.
    pub async fn delete_connection(&self, actor: &Actor, tenant: &str) -> ApiResult<()> {
        let now = stamp(self.engine.clock().now());
        let (actor, tenant_id) = (actor.clone(), tenant.to_string());
        self.engine
            .store()
            .write(move |tx| {
                let before = tx.sso_connection_tx(&tenant_id)?;
                if !tx.delete_sso_connection(&tenant_id)? {
                    return Err(ApiError::NotFound(format!(
                        "tenant {tenant_id} has no SSO connection"
                    )));
                }
                tx.record_change(
                    &actor,
                    &now,
                    Change {
                        chain: &tenant_id,
                        action: "sso.delete",
                        resource_type: "SsoConnection",
                        resource_id: &tenant_id,
                        before,
                        after: None,
                    },
                )?;
                Ok::<_, ApiError>(())
            })
            .await
    }

    /// Signs a user of `tenant` in with an ID token (and the nonce the application sent, if
    /// it checks one).
    pub async fn login(
        &self,
        tenant: &str,
        id_token: &str,
        nonce: Option<&str>,
        request_id: &str,
    ) -> Result<LoggedIn, LoginError> {
        let store = self.engine.store();
        let Some(stored) = store.sso_connection(tenant).await? else {
            return Err(LoginError::Refused(Refused(
                Refusal::UnknownIssuer,
                "this tenant has no SSO connection".into(),
            )));
        };
        let conn: Connection = serde_json::from_value(stored)
            .map_err(|e| ApiError::Internal(format!("stored SSO connection: {e}")))?;
        let claims = self
            .keys
            .verify(
                id_token,
                (&conn.issuer, conn.jwks_uri.as_deref()),
                &conn.audiences,
                self.engine.clock().now().unix_timestamp(),
            )
            .await
            .map_err(LoginError::Refused)?;
        if let Some(n) = nonce
            && text(&claims, "nonce") != Some(n)
        {
            return Err(LoginError::Refused(Refused(
                Refusal::NonceMismatch,
                "the ID token's nonce is not the one given".into(),
            )));
        }
        let m = &conn.claims;
        let user_name = text(&claims, &m.user_name);
        let email = text(&claims, &m.email);
        let external_id = text(&claims, &m.external_id);
        let ctx = Ctx {
            tenant: tenant.to_string(),
            actor: format!("sso:{tenant}"),
            request_id: request_id.to_string(),
            base_url: String::new(),
        };
        let found = store
            .login_candidate(tenant, user_name, email, external_id)
            .await?;
        let (id, user_name, created) = match found {
            Some(u) if !u.active => {
                return Err(LoginError::Refused(Refused(
                    Refusal::UserInactive,
                    format!("user {} is deactivated", u.user_name),
                )));
            }
            Some(u) => {
                if conn.provisioning == Provisioning::Jit && u.jit {
                    self.refresh_user(&ctx, &u, &claims, m).await?;
                    self.sync_groups(&ctx, &u.id, &claims, m).await?;
                }
                (u.id, u.user_name, false)
            }
            None if conn.provisioning == Provisioning::ExistingOnly => {
                return Err(LoginError::Refused(Refused(
                    Refusal::UnknownUser,
                    "no user matches the ID token, and this connection provisions none".into(),
                )));
            }
            None => {
                let Some(user_name) = user_name else {
                    return Err(LoginError::Api(invalid(format!(
                        "the ID token has no '{}' claim to name the user",
                        m.user_name
                    ))));
                };
                let doc = user_doc(user_name, &claims, m);
                let made = self.engine.create(&ctx, Kind::User, &doc).await?;
                let id = made.body["id"].as_str().unwrap_or_default().to_string();
                self.sync_groups(&ctx, &id, &claims, m).await?;
                (id, user_name.to_string(), true)
            }
        };
        let logins = self.record(tenant, &id, created, request_id).await?;
        metrics::counter!("seatkeeper_sso_logins_total").increment(1);
        Ok(LoggedIn {
            id,
            user_name,
            created,
            logins,
        })
    }

    async fn mark(&self, tenant: &str, kind: &'static str, id: &str) -> ApiResult<()> {
        let now = stamp(self.engine.clock().now());
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.engine
            .store()
            .write(move |tx| {
                tx.mark_sso_managed(&tenant, kind, &id, &now)?;
                Ok::<_, ApiError>(())
            })
            .await
    }

    /// Counts the sign-in, records it as activity and announces it, in one transaction.
    async fn record(
        &self,
        tenant: &str,
        user: &str,
        created: bool,
        request_id: &str,
    ) -> ApiResult<i64> {
        let now = stamp(self.engine.clock().now());
        let (tenant, user) = (tenant.to_string(), user.to_string());
        let payload =
            json!({"user": user, "created": created, "request_id": request_id}).to_string();
        self.engine
            .store()
            .write(move |tx| {
                // Nothing a SCIM read shows changes: no rendered user is invalidated.
                tx.reaches_nothing_rendered();
                if created {
                    tx.mark_sso_managed(&tenant, "User", &user, &now)?;
                }
                let n = tx.record_login(&tenant, &user, &now)?;
                tx.outbox(&tenant, EventType::UserLogin, "User", &user, &payload, &now)?;
                Ok::<_, ApiError>(n)
            })
            .await
    }

    /// Brings a JIT-created user's attributes up to the claims (only what differs).
    async fn refresh_user(
        &self,
        ctx: &Ctx,
        u: &crate::sso::store::Candidate,
        claims: &Value,
        m: &ClaimMap,
    ) -> ApiResult<()> {
        let want = user_doc(
            text(claims, &m.user_name).unwrap_or(&u.user_name),
            claims,
            m,
        );
        let have = self.engine.get(ctx, Kind::User, &u.id, false).await?.body;
        let mut ops = Vec::new();
        for attr in ["userName", "externalId", "name", "emails"] {
            if let Some(v) = want.get(attr)
                && have.get(attr) != Some(v)
            {
                ops.push(json!({"op": "replace", "path": attr, "value": v}));
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        self.engine
            .patch(ctx, Kind::User, &u.id, &patch, None)
            .await
            .map(|_| ())
    }

    /// Makes a JIT-created user's memberships follow the groups claim: added to each group it
    /// names (created, JIT-managed, when missing), removed from JIT-managed groups it no
    /// longer names. Groups SCIM manages are never left by sign-in.
    async fn sync_groups(
        &self,
        ctx: &Ctx,
        user: &str,
        claims: &Value,
        m: &ClaimMap,
    ) -> ApiResult<()> {
        let Some(claim) = &m.groups else {
            return Ok(());
        };
        let mut named: Vec<String> = match claims.get(claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
            _ => Vec::new(),
        };
        named.sort_by_key(|s| s.to_lowercase());
        named.dedup_by_key(|s| s.to_lowercase());
        named.truncate(MAX_GROUPS);
        let store = self.engine.store();
        let current = store.direct_groups(&ctx.tenant, user).await?;
        let member = |id: &str| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
        for name in &named {
            if current.iter().any(|(_, n, _)| n.eq_ignore_ascii_case(name)) {
                continue;
            }
            match store.group_named(&ctx.tenant, name).await? {
                Some(gid) => {
                    self.engine
                        .patch(ctx, Kind::Group, &gid, &member(user), None)
                        .await?;
                }
                None => {
                    let doc = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": name, "members": [{"value": user}]});
                    let made = self.engine.create(ctx, Kind::Group, &doc).await?;
                    let gid = made.body["id"].as_str().unwrap_or_default().to_string();
                    self.mark(&ctx.tenant, "Group", &gid).await?;
                }
            }
        }
        for (gid, name, jit) in &current {
            if *jit && !named.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "remove", "path": format!("members[value eq \"{user}\"]")}]});
                self.engine
                    .patch(ctx, Kind::Group, gid, &remove, None)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The SCIM user the claims describe.
fn user_doc(user_name: &str, claims: &Value, m: &ClaimMap) -> Value {
    let mut doc = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "active": true,
    });
    if let Some(x) = text(claims, &m.external_id) {
        doc["externalId"] = json!(x);
    }
    let mut name = serde_json::Map::new();
    if let Some(g) = text(claims, &m.given_name) {
        name.insert("givenName".into(), json!(g));
    }
    if let Some(f) = text(claims, &m.family_name) {
        name.insert("familyName".into(), json!(f));
    }
    if !name.is_empty() {
        doc["name"] = Value::Object(name);
    }
    if let Some(e) = text(claims, &m.email) {
        doc["emails"] = json!([{"value": e, "type": "work", "primary": true}]);
    }
    doc
}
