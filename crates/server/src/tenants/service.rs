//! Operator actions shared by the CLI and the admin API.

use crate::kernel::auth::Credential;
use crate::kernel::auth::{generate_token, hash_token};
use crate::kernel::clock::{Clock, stamp};
use crate::kernel::store::{Store, StoreResult};
use crate::tenants::store::TenantRow;

/// A new credential; `token` is shown once and never stored.
pub struct CreatedToken {
    /// Token id (for revocation).
    pub id: String,
    /// The secret.
    pub token: String,
}

/// Creates a tenant.
pub async fn create_tenant(store: &Store, clock: &dyn Clock, name: &str) -> StoreResult<TenantRow> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = stamp(clock.now());
    store.create_tenant(&id, name, &now).await?;
    Ok(TenantRow {
        id,
        name: name.to_string(),
        created: now,
    })
}

/// Creates a SCIM token or an app key for an existing tenant.
pub async fn create_credential(
    store: &Store,
    clock: &dyn Clock,
    kind: Credential,
    tenant: &str,
    name: &str,
) -> Result<CreatedToken, crate::kernel::error::ApiError> {
    if store.tenant(tenant).await?.is_none() {
        return Err(crate::kernel::error::ApiError::NotFound(format!(
            "tenant {tenant} not found"
        )));
    }
    let token = generate_token(kind.prefix());
    let id = uuid::Uuid::now_v7().to_string();
    store
        .create_credential(
            kind,
            &id,
            tenant,
            name,
            &hash_token(&token),
            &stamp(clock.now()),
        )
        .await?;
    Ok(CreatedToken { id, token })
}

/// The admin token's hash: from `SEATKEEPER_ADMIN_TOKEN` if set, else the one generated on
/// first start (returned in clear that one time, so the caller can print it).
pub async fn admin_token_hash(
    store: &Store,
    from_env: Option<&str>,
) -> StoreResult<(String, Option<String>)> {
    if let Some(t) = from_env.filter(|t| !t.is_empty()) {
        return Ok((hash_token(t), None));
    }
    if let Some(h) = store.setting("admin_token_hash").await? {
        return Ok((h, None));
    }
    let token = generate_token("ska_");
    let hash = hash_token(&token);
    if store.init_setting("admin_token_hash", &hash).await? {
        Ok((hash, Some(token)))
    } else {
        // Another node won the race; use its token.
        Ok((
            store.setting("admin_token_hash").await?.unwrap_or(hash),
            None,
        ))
    }
}

/// Fails with 404 unless the tenant exists.
pub async fn require_tenant(store: &Store, id: &str) -> crate::kernel::error::ApiResult<()> {
    if store.tenant(id).await?.is_none() {
        return Err(crate::kernel::error::ApiError::NotFound(format!(
            "tenant {id} not found"
        )));
    }
    Ok(())
}
