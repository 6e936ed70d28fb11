//! `/api/v1/tenants/{id}/sso` (admin) and `/api/v1/sso/login` (app key).

use crate::kernel::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::apps::http::AppAuth;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, Json, RequestId, ScimJson, empty};
use crate::sso::service::{LoginError, MAX_TOKEN};
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The SSO routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(put_connection, get_connection, delete_connection))
        .routes(routes!(login))
}

#[utoipa::path(
    put,
    path = "/api/v1/tenants/{id}/sso",
    summary = "Create or replace the tenant's OIDC connection",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = ref("#/components/schemas/SsoConnection"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SsoConnection"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "sso"
)]
async fn put_connection(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let conn = state.sso.put_connection(&auth.actor(), &id, &body).await?;
    Ok(ScimJson(json!(conn)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/sso",
    summary = "The tenant's OIDC connection",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SsoConnection"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "sso"
)]
async fn get_connection(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ScimJson(json!(state.sso.connection(&id).await?)).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/sso",
    summary = "Remove the tenant's OIDC connection",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "sso"
)]
async fn delete_connection(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.sso.delete_connection(&auth.actor(), &id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `{"id_token": "…", "nonce": "…"?}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    id_token: String,
    nonce: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/sso/login",
    summary = "Sign a user in with an ID token from the tenant's identity provider: verified, the user found or created (jit), licensed, and answered with entitlements and a token; 401 with a reason when refused",
    request_body = ref("#/components/schemas/SsoLogin"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SsoLoggedIn"))),
    security(("app" = [])),
    tag = "sso"
)]
async fn login(
    State(state): State<Shared>,
    app: AppAuth,
    request_id: Option<axum::Extension<RequestId>>,
    Json(body): Json<Login>,
) -> ApiResult<Response> {
    if body.id_token.is_empty() || body.id_token.len() > MAX_TOKEN {
        return Err(scim::Error::InvalidValue(format!(
            "id_token: a JWT of 1 to {MAX_TOKEN} characters"
        ))
        .into());
    }
    if body
        .nonce
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > 512)
    {
        return Err(scim::Error::InvalidValue("nonce: 1 to 512 characters".into()).into());
    }
    let request_id = request_id.map(|r| r.0.0).unwrap_or_default();
    let who = match state
        .sso
        .login(
            &app.tenant,
            &body.id_token,
            body.nonce.as_deref(),
            &request_id,
        )
        .await
    {
        Ok(who) => who,
        Err(LoginError::Refused(r)) => {
            metrics::counter!("seatkeeper_sso_refusals_total", "reason" => r.0.as_str())
                .increment(1);
            return Err(ApiError::SignInRefused {
                reason: r.0.as_str(),
                detail: r.1,
            });
        }
        Err(LoginError::Api(e)) => return Err(e),
    };
    let set = state
        .snapshots
        .entitlements(&app.tenant, &who.id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("user {} vanished after sign-in", who.id)))?;
    let (token, exp) = state
        .signer
        .sign(crate::apps::jwt::claims_of(&app.tenant, &set))
        .await?;
    let answer = json!({
        "user": {"id": who.id, "userName": who.user_name, "created": who.created, "logins": who.logins},
        "licenses": set["licenses"],
        "features": set["features"],
        "limits": set["limits"],
        "roles": set["roles"],
        "permissions": set["permissions"],
        "token": token,
        "expires_at": crate::kernel::clock::stamp(exp),
    });
    Ok(ScimJson(answer).into_response())
}
