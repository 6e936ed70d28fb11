//! `/api/v1/tenants`: tenants and their SCIM tokens (admin token).

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde_json::{Value, json};

use crate::app::Shared;
use crate::kernel::auth::Credential;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, ScimJson, empty, read_json, with_status};
use crate::tenants::service as ops;

/// The tenant routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/tenants", post(create_tenant).get(list_tenants))
        .route("/tenants/{id}", axum::routing::get(get_tenant))
        .route("/tenants/{id}/scim-tokens", post(create_token))
        .route("/tenants/{id}/scim-tokens/{token_id}", delete(revoke_token))
}

pub(crate) fn name_field(body: &Value, field: &str, required: bool) -> ApiResult<Option<String>> {
    match body.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => {
            Ok(Some(s.trim().to_string()))
        }
        _ => Err(scim::Error::InvalidValue(format!(
            "'{field}' must be a non-empty string of at most 200 characters"
        ))
        .into()),
    }
}

async fn create_tenant(
    State(state): State<Shared>,
    _auth: AdminAuth,
    req: Request,
) -> ApiResult<Response> {
    let body = read_json(req, state.config.max_body_bytes).await?;
    let name = name_field(&body, "name", true)?.unwrap_or_default();
    let t = ops::create_tenant(&state.store, &*state.engine_clock(), &name).await?;
    Ok(with_status(StatusCode::CREATED, ScimJson(json!(t))))
}

async fn list_tenants(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let tenants = state.store.tenants().await?;
    Ok(ScimJson(json!({"tenants": tenants})).into_response())
}

async fn get_tenant(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = state
        .store
        .tenant(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("tenant {id} not found")))?;
    Ok(ScimJson(json!(t)).into_response())
}

async fn create_token(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let has_body = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0");
    let body = if has_body {
        read_json(req, state.config.max_body_bytes).await?
    } else {
        json!({})
    };
    let name = name_field(&body, "name", false)?.unwrap_or_else(|| "scim".into());
    let created = ops::create_credential(
        &state.store,
        &*state.engine_clock(),
        Credential::Scim,
        &id,
        &name,
    )
    .await?;
    Ok(with_status(
        StatusCode::CREATED,
        ScimJson(json!({"id": created.id, "tenant": id, "name": name, "token": created.token})),
    ))
}

async fn revoke_token(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    revoke_credential(&state, Credential::Scim, &id, &token_id).await
}

/// Revokes a SCIM token or app key of a tenant; it stops working on this node at once.
pub(crate) async fn revoke_credential(
    state: &Shared,
    kind: Credential,
    tenant: &str,
    id: &str,
) -> ApiResult<Response> {
    let now = crate::kernel::clock::stamp(state.engine_clock().now());
    if !state
        .store
        .revoke_credential(kind, tenant, id, &now)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "{} {id} not found in tenant {tenant}",
            kind.noun()
        )));
    }
    state.gate.forget(kind);
    Ok(empty(StatusCode::NO_CONTENT))
}
