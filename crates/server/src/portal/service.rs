//! The customer admin portal: single-use links the vendor hands a tenant's IT admin, and the
//! sessions they start. A session reaches its tenant alone, and only what its link's
//! capabilities allow: `scim_setup` (setup steps and their own SCIM token), `seats`
//! (seats, waitlist, idle seats, why each user holds what they hold), `audit` (their trail).

use serde_json::json;
use time::Duration;

use crate::kernel::auth::{generate_token, hash_token, hashes_equal};
use crate::kernel::clock::{SharedClock, stamp};
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::{Actor, Change, Store};
use crate::portal::store::SessionRow;

/// How long a portal session lasts.
pub const SESSION_LIFETIME: Duration = Duration::hours(8);
/// Shortest and longest a link may stay unused.
pub const LINK_LIFETIME: (i64, i64) = (60, 7 * 86_400);
/// What a link may grant.
pub const CAPABILITIES: [&str; 3] = ["scim_setup", "seats", "audit"];
/// The name of the SCIM token the portal creates (and rotates).
pub const PORTAL_TOKEN_NAME: &str = "portal";

/// A new link: its secret (in the URL, shown once) and when it expires.
pub struct NewLink {
    /// The secret.
    pub token: String,
    /// Expiry.
    pub expires_at: String,
    /// What it grants.
    pub capabilities: Vec<String>,
}

/// A portal session as the pages read it.
#[derive(Clone)]
pub struct Session {
    /// The session's own secret (the cookie).
    pub token: String,
    /// Its tenant.
    pub tenant: String,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Its form token.
    pub csrf: String,
    /// When it ends.
    pub expires: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &crate::kernel::secret::REDACTED)
            .field("tenant", &self.tenant)
            .field("capabilities", &self.capabilities)
            .field("csrf", &crate::kernel::secret::REDACTED)
            .field("expires", &self.expires)
            .finish()
    }
}

impl Session {
    /// Whether the session may use a capability.
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Whether a form's token is this session's.
    pub fn csrf_holds(&self, sent: Option<&str>) -> bool {
        sent.is_some_and(|s| !s.is_empty() && hashes_equal(s, &self.csrf))
    }
}

/// The portal service.
#[derive(Clone)]
pub struct Portal {
    store: Store,
    clock: SharedClock,
}

/// The audit actor of everything the portal does.
pub fn portal_actor(request_id: &str) -> Actor {
    Actor {
        name: "portal".into(),
        request_id: request_id.to_string(),
    }
}

impl Portal {
    /// The service over a store.
    pub fn new(store: Store, clock: SharedClock) -> Portal {
        Portal { store, clock }
    }

    /// Creates a link for a tenant, audited.
    pub async fn create_link(
        &self,
        actor: &Actor,
        tenant: &str,
        expires_in: i64,
        capabilities: &[String],
    ) -> ApiResult<NewLink> {
        let bad = |m: String| -> ApiError { scim::Error::InvalidValue(m).into() };
        if !(LINK_LIFETIME.0..=LINK_LIFETIME.1).contains(&expires_in) {
            return Err(bad(format!(
                "expires_in: {} to {} seconds",
                LINK_LIFETIME.0, LINK_LIFETIME.1
            )));
        }
        let mut caps: Vec<String> = Vec::new();
        for c in capabilities {
            if !CAPABILITIES.contains(&c.as_str()) {
                return Err(bad(format!(
                    "capabilities: unknown '{c}'; they are {}",
                    CAPABILITIES.join(", ")
                )));
            }
            if !caps.contains(c) {
                caps.push(c.clone());
            }
        }
        if caps.is_empty() {
            return Err(bad("capabilities: name at least one".into()));
        }
        let now = self.clock.now();
        let token = generate_token("skl_");
        let expires_at = stamp(now + Duration::seconds(expires_in));
        let (actor, tenant, hash, stored) = (
            actor.clone(),
            tenant.to_string(),
            hash_token(&token),
            caps.join(" "),
        );
        let (now_text, exp) = (stamp(now), expires_at.clone());
        self.store
            .write(move |tx| {
                if !tx.tenant_exists(&tenant)? {
                    return Err(ApiError::NotFound(format!("tenant {tenant} not found")));
                }
                tx.insert_portal_link(&hash, &tenant, &stored, (&now_text, &actor.name, &exp))?;
                // The audit trail names the link by a prefix of its hash, never the secret.
                tx.record_change(
                    &actor,
                    &now_text,
                    Change {
                        chain: &tenant,
                        action: "portal_link.create",
                        resource_type: "PortalLink",
                        resource_id: &hash[..16],
                        before: None,
                        after: Some(json!({"capabilities": stored, "expires_at": exp})),
                    },
                )?;
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(NewLink {
            token,
            expires_at,
            capabilities: caps,
        })
    }

    /// Spends a link and starts its session (`None`: unknown, used or expired).
    pub async fn open(&self, link: &str, request_id: &str) -> ApiResult<Option<Session>> {
        let now = self.clock.now();
        let (now_text, expires) = (stamp(now), stamp(now + SESSION_LIFETIME));
        let token = generate_token("skq_");
        let csrf = generate_token("skc_");
        let (link_hash, session_hash) = (hash_token(link), hash_token(&token));
        let (c, actor, ends) = (csrf.clone(), portal_actor(request_id), expires.clone());
        let opened = self
            .store
            .write(move |tx| {
                tx.reaches_nothing_rendered();
                let Some((tenant, capabilities)) = tx.spend_portal_link(&link_hash, &now_text)?
                else {
                    return Ok::<_, ApiError>(None);
                };
                let row = SessionRow {
                    tenant: tenant.clone(),
                    capabilities: capabilities.clone(),
                    csrf: c,
                    expires,
                };
                tx.insert_portal_session(&session_hash, &row, &now_text)?;
                tx.record_change(
                    &actor,
                    &now_text,
                    Change {
                        chain: &tenant,
                        action: "portal.open",
                        resource_type: "PortalLink",
                        resource_id: &link_hash[..16],
                        before: None,
                        after: Some(json!({"capabilities": capabilities})),
                    },
                )?;
                Ok(Some((tenant, capabilities)))
            })
            .await?;
        Ok(opened.map(|(tenant, caps)| Session {
            token,
            tenant,
            capabilities: caps.split_whitespace().map(str::to_string).collect(),
            csrf,
            expires: ends,
        }))
    }

    /// The live session a cookie names.
    pub async fn session(&self, token: &str) -> ApiResult<Option<Session>> {
        let row = self
            .store
            .portal_session(&hash_token(token), &stamp(self.clock.now()))
            .await?;
        Ok(row.map(|r| Session {
            token: token.to_string(),
            tenant: r.tenant,
            capabilities: r
                .capabilities
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            csrf: r.csrf,
            expires: r.expires,
        }))
    }

    /// Ends a session.
    pub async fn end(&self, token: &str) -> ApiResult<()> {
        let hash = hash_token(token);
        self.store
            .write(move |tx| {
                tx.reaches_nothing_rendered();
                tx.delete_portal_session(&hash)?;
                Ok::<_, ApiError>(())
            })
            .await
    }

    /// The tenant's license holders and why (user id, userName, product, plan, state,
    /// reason).
    pub async fn holders(
        &self,
        tenant: &str,
    ) -> ApiResult<Vec<(String, String, String, String, String, String)>> {
        Ok(self.store.portal_holders(tenant, 1000).await?)
    }
}

impl Portal {
    /// The tenant's newest audit records.
    pub async fn audit(&self, tenant: &str) -> ApiResult<Vec<crate::portal::store::AuditLine>> {
        Ok(self.store.portal_audit(tenant, 100).await?)
    }
}
