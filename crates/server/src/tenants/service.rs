//! Tenants and their credentials: each change one transaction with its audit record on the
//! tenant's chain and, for credentials, an outbox event.

use serde_json::json;

use crate::kernel::auth::{Credential, generate_token, hash_token};
use crate::kernel::catalogue::EventType;
use crate::kernel::clock::{SharedClock, stamp};
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::ids::Name;
use crate::kernel::scopes::Scopes;
use crate::kernel::store::VENDOR;
use crate::kernel::store::{Actor, Change, Store, StoreResult};
use crate::tenants::store::{AdminKeyRow, CredentialRow, TenantRow};

/// A new admin key; `token` is shown once and never stored.
pub struct CreatedAdminKey {
    /// The key as stored.
    pub row: AdminKeyRow,
    /// The secret.
    pub token: String,
}

/// A new credential; `token` is shown once and never stored.
pub struct CreatedToken {
    /// The credential as stored.
    pub row: CredentialRow,
    /// The secret.
    pub token: String,
}

/// What deleting a tenant removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeletedTenant {
    /// The tenant as it was.
    pub tenant: TenantRow,
    /// The licenses it held.
    pub licenses: i64,
    /// Rows removed, per table.
    pub removed: std::collections::BTreeMap<String, i64>,
}

/// The tenants service.
#[derive(Clone)]
pub struct Tenants {
    store: Store,
    clock: SharedClock,
}

fn credential_json(kind: Credential, c: &CredentialRow) -> serde_json::Value {
    json!({"id": c.id, "kind": kind.noun(), "name": c.name, "created": c.created, "revoked": c.revoked})
}

impl Tenants {
    /// The service over a store.
    pub fn new(store: Store, clock: SharedClock) -> Tenants {
        Tenants { store, clock }
    }

    /// Creates a tenant; the first record of its audit chain says who did.
    pub async fn create(&self, actor: &Actor, name: &Name) -> ApiResult<TenantRow> {
        let row = TenantRow {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_string(),
            created: stamp(self.clock.now()),
        };
        let (actor, out) = (actor.clone(), row.clone());
        self.store
            .write(move |tx| {
                tx.insert_tenant(&row.id, &row.name, &row.created)?;
                tx.record_change(
                    &actor,
                    &row.created,
                    Change {
                        chain: &row.id,
                        action: "tenant.create",
                        resource_type: "Tenant",
                        resource_id: &row.id,
                        before: None,
                        after: Some(json!(row)),
                    },
                )?;
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(out)
    }

    /// Renames a tenant, audited on its chain and the vendor's.
    pub async fn rename(&self, actor: &Actor, id: &str, name: &Name) -> ApiResult<TenantRow> {
        let now = stamp(self.clock.now());
        let (actor, id, name) = (actor.clone(), id.to_string(), name.to_string());
        self.store
            .write(move |tx| {
                if !tx.tenant_exists(&id)? {
                    return Err(ApiError::NotFound(format!("tenant {id} not found")));
                }
                tx.lock_tenant(&id)?;
                let Some(before) = tx.rename_tenant(&id, &name)? else {
                    return Err(ApiError::NotFound(format!("tenant {id} not found")));
                };
                let after = TenantRow {
                    name: name.clone(),
                    ..before.clone()
                };
                // The names tenants are listed by change: every reader's cache with them.
                tx.reaches_everything();
                for chain in [id.as_str(), VENDOR] {
                    tx.record_change(
                        &actor,
                        &now,
                        Change {
                            chain,
                            action: "tenant.rename",
                            resource_type: "Tenant",
                            resource_id: &id,
                            before: Some(json!(before)),
                            after: Some(json!(after)),
                        },
                    )?;
                }
                Ok::<_, ApiError>(after)
            })
            .await
    }

    /// Deletes a tenant with everything it holds: users, groups, licenses, subscriptions,
    /// credentials, webhooks and their deliveries, events, its audit chain. Refused while it
    /// holds licenses unless `force`. The deletion is recorded on the vendor's chain (the
    /// tenant's own chain goes with it), with what was removed.
    pub async fn delete(&self, actor: &Actor, id: &str, force: bool) -> ApiResult<DeletedTenant> {
        let now = stamp(self.clock.now());
        let (actor, id) = (actor.clone(), id.to_string());
        self.store
            .write(move |tx| {
                let Some(before) = tx.fetch_tenant(&id)? else {
                    return Err(ApiError::NotFound(format!("tenant {id} not found")));
                };
                let licenses = tx.license_count(&id)?;
                if licenses > 0 && !force {
                    return Err(ApiError::Conflict(format!(
                        "tenant {id} holds {licenses} licenses: free them first, or delete with \
                         force (CLI --force, API ?force=true) to remove them with the tenant"
                    )));
                }
                let removed = tx.delete_tenant_rows(&id)?;
                tx.reaches_everything();
                tx.record_change(
                    &actor,
                    &now,
                    Change {
                        chain: VENDOR,
                        action: "tenant.delete",
                        resource_type: "Tenant",
                        resource_id: &id,
                        before: Some(json!({"tenant": before, "licenses": licenses})),
                        after: Some(json!({"removed": removed, "forced": force})),
                    },
                )?;
                Ok::<_, ApiError>(DeletedTenant {
                    tenant: before,
                    licenses,
                    removed,
                })
            })
            .await
    }

    /// Every tenant.
    pub async fn list(&self) -> ApiResult<Vec<TenantRow>> {
        Ok(self.store.tenants().await?)
    }

    /// A tenant, or 404.
    pub async fn get(&self, id: &str) -> ApiResult<TenantRow> {
        self.store
            .tenant(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("tenant {id} not found")))
    }

    /// Fails with 404 unless the tenant exists.
    pub async fn require(&self, id: &str) -> ApiResult<()> {
        self.get(id).await.map(|_| ())
    }

    /// Creates a SCIM token or an app key for an existing tenant: audited, and announced as
    /// `credential.created` (never the secret).
    pub async fn create_credential(
        &self,
        actor: &Actor,
        kind: Credential,
        tenant: &str,
        name: &Name,
    ) -> ApiResult<CreatedToken> {
        self.issue_credential(actor, kind, tenant, name, false)
            .await
    }

    /// Revokes a SCIM token or app key: audited, and announced as `credential.revoked`. The
    /// caller forgets cached credentials of the kind so it stops working on this node at once.
    pub async fn revoke_credential(
        &self,
        actor: &Actor,
        kind: Credential,
        tenant: &str,
        id: &str,
    ) -> ApiResult<()> {
        let now = stamp(self.clock.now());
        let (actor, tenant, id) = (actor.clone(), tenant.to_string(), id.to_string());
        self.store
            .write(move |tx| {
                let Some(before) = tx.revoke_credential(kind, &tenant, &id, &now)? else {
                    return Err(ApiError::NotFound(format!(
                        "{} {id} not found in tenant {tenant}",
                        kind.noun()
                    )));
                };
                let mut after = before.clone();
                after.revoked = Some(now.clone());
                credential_changed(
                    tx,
                    &actor,
                    kind,
                    &after,
                    Some(&before),
                    EventType::CredentialRevoked,
                )
            })
            .await
    }

    /// Replaces a tenant's live credentials of one kind and name with a new one, in one
    /// transaction: each revocation and the creation audited and announced.
    pub async fn rotate_credential(
        &self,
        actor: &Actor,
        kind: Credential,
        tenant: &str,
        name: &Name,
    ) -> ApiResult<CreatedToken> {
        self.issue_credential(actor, kind, tenant, name, true).await
    }

    /// A new credential, in one transaction with (`replace`) the revocation of the tenant's
    /// live ones of that kind and name.
    async fn issue_credential(
        &self,
        actor: &Actor,
        kind: Credential,
        tenant: &str,
        name: &Name,
        replace: bool,
    ) -> ApiResult<CreatedToken> {
        let token = generate_token(kind.prefix());
        let now = stamp(self.clock.now());
        let row = CredentialRow {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            created: now.clone(),
            revoked: None,
        };
        let (actor, hash, out) = (actor.clone(), hash_token(&token), row.clone());
        self.store
            .write(move |tx| {
                if !tx.tenant_exists(&row.tenant)? {
                    return Err(ApiError::NotFound(format!(
                        "tenant {} not found",
                        row.tenant
                    )));
                }
                let replaced = if replace {
                    tx.live_credentials_named(kind, &row.tenant, &row.name)?
                } else {
                    Vec::new()
                };
                for old in replaced {
                    if let Some(before) = tx.revoke_credential(kind, &row.tenant, &old, &now)? {
                        let mut after = before.clone();
                        after.revoked = Some(now.clone());
                        credential_changed(
                            tx,
                            &actor,
                            kind,
                            &after,
                            Some(&before),
                            EventType::CredentialRevoked,
                        )?;
                    }
                }
                tx.insert_credential(kind, &row, &hash)?;
                credential_changed(tx, &actor, kind, &row, None, EventType::CredentialCreated)
            })
            .await?;
        Ok(CreatedToken { row: out, token })
    }

    /// A tenant's credentials of one kind, oldest first (404 for an unknown tenant).
    pub async fn credentials(
        &self,
        kind: Credential,
        tenant: &str,
    ) -> ApiResult<Vec<CredentialRow>> {
        self.require(tenant).await?;
        Ok(self.store.credentials(kind, tenant).await?)
    }
}

impl Tenants {
    /// Creates a scoped admin key, audited on the vendor chain (and on its tenant's, when it
    /// is bound to one). `tenant` must exist.
    pub async fn create_admin_key(
        &self,
        actor: &Actor,
        name: &Name,
        scopes: &Scopes,
        tenant: Option<&str>,
    ) -> ApiResult<CreatedAdminKey> {
        let token = generate_token(Credential::Admin.prefix());
        let row = AdminKeyRow {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_string(),
            scopes: scopes.names(),
            tenant: tenant.map(str::to_string),
            created: stamp(self.clock.now()),
            created_by: actor.name.clone(),
            revoked: None,
        };
        let (actor, hash, stored, out) = (
            actor.clone(),
            hash_token(&token),
            scopes.to_stored(),
            row.clone(),
        );
        self.store
            .write(move |tx| {
                if let Some(t) = &row.tenant
                    && !tx.tenant_exists(t)?
                {
                    return Err(ApiError::NotFound(format!("tenant {t} not found")));
                }
                tx.insert_admin_key(&row, &stored, &hash)?;
                admin_key_changed(tx, &actor, &row, None)
            })
            .await?;
        Ok(CreatedAdminKey { row: out, token })
    }

    /// Revokes an admin key, audited. The caller forgets cached admin keys.
    pub async fn revoke_admin_key(&self, actor: &Actor, id: &str) -> ApiResult<()> {
        let now = stamp(self.clock.now());
        let (actor, id) = (actor.clone(), id.to_string());
        self.store
            .write(move |tx| {
                let Some(before) = tx.revoke_admin_key(&id, &now)? else {
                    return Err(ApiError::NotFound(format!("admin key {id} not found")));
                };
                let mut after = before.clone();
                after.revoked = Some(now.clone());
                admin_key_changed(tx, &actor, &after, Some(&before))
            })
            .await
    }

    /// Every admin key, oldest first.
    pub async fn admin_keys(&self) -> ApiResult<Vec<AdminKeyRow>> {
        Ok(self.store.admin_keys().await?)
    }
}

/// The audit records of an admin key's change: on the vendor chain, and on its tenant's.
fn admin_key_changed(
    tx: &mut crate::kernel::store::Tx<'_>,
    actor: &Actor,
    now: &AdminKeyRow,
    before: Option<&AdminKeyRow>,
) -> ApiResult<()> {
    let at = now.revoked.clone().unwrap_or_else(|| now.created.clone());
    let chains = std::iter::once(VENDOR).chain(now.tenant.as_deref());
    for chain in chains {
        tx.record_change(
            actor,
            &at,
            Change {
                chain,
                action: if before.is_some() {
                    "admin_key.revoke"
                } else {
                    "admin_key.create"
                },
                resource_type: "AdminKey",
                resource_id: &now.id,
                before: before.map(|b| json!(b)),
                after: Some(json!(now)),
            },
        )?;
    }
    Ok(())
}

/// The audit record and outbox event of a credential's change.
fn credential_changed(
    tx: &mut crate::kernel::store::Tx<'_>,
    actor: &Actor,
    kind: Credential,
    now: &CredentialRow,
    before: Option<&CredentialRow>,
    event: EventType,
) -> ApiResult<()> {
    let at = now.revoked.clone().unwrap_or_else(|| now.created.clone());
    let after = credential_json(kind, now);
    tx.record_change(
        actor,
        &at,
        Change {
            chain: &now.tenant,
            action: if before.is_some() {
                "credential.revoke"
            } else {
                "credential.create"
            },
            resource_type: "Credential",
            resource_id: &now.id,
            before: before.map(|b| credential_json(kind, b)),
            after: Some(after.clone()),
        },
    )?;
    let payload = json!({"credential": after, "request_id": actor.request_id});
    tx.outbox(
        &now.tenant,
        event,
        "Credential",
        &now.id,
        &payload.to_string(),
        &at,
    )?;
    Ok(())
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
