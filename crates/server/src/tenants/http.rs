//! `/api/v1/tenants`: tenants and their SCIM tokens (admin token).

use crate::kernel::extract::Path;
use crate::kernel::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::kernel::auth::Credential;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, Json, OptionalJson, ScimJson, empty, with_status};
use crate::kernel::ids::{Name, Named};
use crate::kernel::scopes::Scopes;
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The tenant routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, rename_tenant, delete_tenant))
        .routes(routes!(create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(create_admin_key, list_admin_keys))
        .routes(routes!(revoke_admin_key))
}

/// `POST /api/v1/admin-keys`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdminKey {
    name: Name,
    scopes: Vec<String>,
    tenant: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/admin-keys",
    summary = "Create a scoped admin key (shown once), optionally confined to one tenant",
    request_body = ref("#/components/schemas/NewAdminKey"),
    responses((status = 201, description = "Success", body = ref("#/components/schemas/AdminKey"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn create_admin_key(
    State(state): State<Shared>,
    auth: AdminAuth,
    Json(body): Json<NewAdminKey>,
) -> ApiResult<Response> {
    let scopes = Scopes::parse(body.scopes.iter().map(String::as_str))
        .map_err(|e| scim::Error::InvalidValue(format!("scopes: {e}")))?;
    if !auth.scopes().covers(&scopes) {
        return Err(ApiError::Forbidden(
            "an admin key may only create keys within its own scopes".into(),
        ));
    }
    let created = state
        .tenants
        .create_admin_key(&auth.actor(), &body.name, &scopes, body.tenant.as_deref())
        .await?;
    let mut out = json!(created.row);
    out["token"] = json!(created.token);
    Ok(with_status(StatusCode::CREATED, ScimJson(out)))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin-keys",
    summary = "List admin keys (no secrets)",
    responses((status = 200, description = "Success", body = ref("#/components/schemas/AdminKeyList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn list_admin_keys(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let keys = state.tenants.admin_keys().await?;
    Ok(ScimJson(json!({"admin_keys": keys})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin-keys/{key_id}",
    summary = "Revoke an admin key",
    params(("key_id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn revoke_admin_key(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(key_id): Path<String>,
) -> ApiResult<Response> {
    state
        .tenants
        .revoke_admin_key(&auth.actor(), &key_id)
        .await?;
    state.gate.forget(Credential::Admin);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `{"name": …}` or nothing.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaybeNamed {
    pub name: Option<Name>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants",
    summary = "Create a tenant",
    request_body = ref("#/components/schemas/Named"),
    responses((status = 201, description = "Success", body = ref("#/components/schemas/Tenant"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn create_tenant(
    State(state): State<Shared>,
    auth: AdminAuth,
    Json(body): Json<Named>,
) -> ApiResult<Response> {
    let t = state.tenants.create(&auth.actor(), &body.name).await?;
    Ok(with_status(StatusCode::CREATED, ScimJson(json!(t))))
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    summary = "List tenants",
    responses((status = 200, description = "Success", body = ref("#/components/schemas/TenantList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn list_tenants(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let tenants = state.tenants.list().await?;
    Ok(ScimJson(json!({"tenants": tenants})).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}",
    summary = "Get a tenant",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Tenant"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn get_tenant(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ScimJson(json!(state.tenants.get(&id).await?)).into_response())
}

#[utoipa::path(
    patch,
    path = "/api/v1/tenants/{id}",
    summary = "Rename a tenant",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = ref("#/components/schemas/Named"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Tenant"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn rename_tenant(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(body): Json<Named>,
) -> ApiResult<Response> {
    let t = state.tenants.rename(&auth.actor(), &id, &body.name).await?;
    Ok(ScimJson(json!(t)).into_response())
}

/// `DELETE /api/v1/tenants/{id}?force=true`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Delete even when the tenant still holds licenses
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}",
    summary = "Delete a tenant and everything it holds (?force=true while it holds licenses)",
    params(("id" = String, Path, description = "The tenant's id"), DeleteQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/DeletedTenant"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn delete_tenant(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Response> {
    if auth.key.as_ref().is_some_and(|k| !k.tenant_id.is_empty()) {
        return Err(ApiError::Forbidden(
            "a key confined to a tenant cannot delete it".into(),
        ));
    }
    let deleted = state.tenants.delete(&auth.actor(), &id, q.force).await?;
    // Its credentials stop working on this node at once (other nodes: within their cache's
    // lifetime, 10 s).
    for kind in [Credential::Scim, Credential::App, Credential::Admin] {
        state.gate.forget(kind);
    }
    Ok(ScimJson(json!(deleted)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/scim-tokens",
    summary = "Create a SCIM token (shown once)",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = ref("#/components/schemas/Named"),
    responses((status = 201, description = "Success", body = ref("#/components/schemas/CreatedCredential"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn create_token(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<MaybeNamed>,
) -> ApiResult<Response> {
    let name = match body.name {
        Some(n) => n,
        None => Name::parse("scim").map_err(scim::Error::InvalidValue)?,
    };
    let created = state
        .tenants
        .create_credential(&auth.actor(), Credential::Scim, &id, &name)
        .await?;
    Ok(with_status(
        StatusCode::CREATED,
        ScimJson(json!({"id": created.row.id, "tenant": id, "name": name, "token": created.token})),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/scim-tokens/{token_id}",
    summary = "Revoke a SCIM token",
    params(("id" = String, Path, description = "The tenant's id"), ("token_id" = String, Path, description = "The SCIM token's id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "tenants"
)]
async fn revoke_token(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    state
        .tenants
        .revoke_credential(&auth.actor(), Credential::Scim, &id, &token_id)
        .await?;
    state.gate.forget(Credential::Scim);
    Ok(empty(StatusCode::NO_CONTENT))
}
