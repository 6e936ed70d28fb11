//! `/api/v1/tenants`: tenants and their SCIM tokens (admin token).

use crate::kernel::extract::Path;
use crate::kernel::extract::Query;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

use crate::kernel::auth::Credential;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, Json, OptionalJson, ScimJson, empty, with_status};
use crate::kernel::ids::{Name, Named};
use crate::kernel::scopes::Scopes;
use crate::state::Shared;

/// The tenant routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/api/v1/tenants/{id}",
            get(get_tenant).patch(rename_tenant).delete(delete_tenant),
        )
        .route("/api/v1/tenants/{id}/scim-tokens", post(create_token))
        .route(
            "/api/v1/tenants/{id}/scim-tokens/{token_id}",
            delete(revoke_token),
        )
        .route(
            "/api/v1/admin-keys",
            post(create_admin_key).get(list_admin_keys),
        )
        .route("/api/v1/admin-keys/{key_id}", delete(revoke_admin_key))
}

/// `POST /api/v1/admin-keys`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdminKey {
    name: Name,
    scopes: Vec<String>,
    tenant: Option<String>,
}

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

async fn list_admin_keys(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let keys = state.tenants.admin_keys().await?;
    Ok(ScimJson(json!({"admin_keys": keys})).into_response())
}

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

async fn create_tenant(
    State(state): State<Shared>,
    auth: AdminAuth,
    Json(body): Json<Named>,
) -> ApiResult<Response> {
    let t = state.tenants.create(&auth.actor(), &body.name).await?;
    Ok(with_status(StatusCode::CREATED, ScimJson(json!(t))))
}

async fn list_tenants(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let tenants = state.tenants.list().await?;
    Ok(ScimJson(json!({"tenants": tenants})).into_response())
}

async fn get_tenant(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ScimJson(json!(state.tenants.get(&id).await?)).into_response())
}

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
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

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
