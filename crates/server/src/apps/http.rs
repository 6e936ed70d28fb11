//! The application API: entitlement checks, effective sets and signed tokens (app keys),
//! app key management and token key rotation (admin token), and the public JWKS.

use axum::Router;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use licensing::entitlements::{Answer, Question};
use serde_json::{Value, json};

use crate::kernel::auth::Credential;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, Json, bearer, empty, read_json, with_status};
use crate::kernel::ids::Named;
use crate::state::Shared;

/// Most checks in one batch call.
pub const MAX_BATCH_CHECKS: usize = 1000;
/// Longest user reference, feature or limit name accepted.
const MAX_NAME: usize = 256;

/// The application routes (under `/api/v1`).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/check", post(check))
        .route("/users/{user}/entitlements", get(user_entitlements))
        .route("/tokens/entitlements", post(issue_token))
        .route("/tenants/{id}/app-keys", post(create_key).get(list_keys))
        .route("/tenants/{id}/app-keys/{key_id}", delete(revoke_key))
        .route("/signing-keys/rotate", post(rotate_keys))
}

/// Routes outside `/api/v1`.
pub fn public_routes() -> Router<Shared> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

/// An application, authenticated by its app key: the tenant it may ask about.
pub struct AppAuth {
    /// The key's tenant.
    pub tenant: String,
}

impl FromRequestParts<Shared> for AppAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("an app key is required".into()))?;
        let row = state.gate.app_key(key).await?;
        Ok(AppAuth {
            tenant: row.tenant_id.clone(),
        })
    }
}

fn text_field<'a>(item: &'a Value, field: &str) -> ApiResult<Option<&'a str>> {
    match item.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME => Ok(Some(s)),
        _ => Err(scim::Error::InvalidValue(format!(
            "'{field}' must be a non-empty string of at most {MAX_NAME} characters"
        ))
        .into()),
    }
}

/// One check of a request: the user and the question.
fn parse_check(item: &Value) -> ApiResult<(&str, Question<'_>)> {
    if !item.is_object() {
        return Err(scim::Error::InvalidValue("a check must be a JSON object".into()).into());
    }
    let user = text_field(item, "user")?
        .ok_or_else(|| scim::Error::InvalidValue("'user' is required".into()))?;
    let question = match (text_field(item, "feature")?, text_field(item, "limit")?) {
        (Some(f), None) => Question::Feature(f),
        (None, Some(l)) => Question::Limit(l),
        _ => {
            return Err(scim::Error::InvalidValue(
                "a check names exactly one of 'feature' or 'limit'".into(),
            )
            .into());
        }
    };
    Ok((user, question))
}

fn answer_json(user: &str, a: Option<Answer>) -> Value {
    match a {
        Some(a) => json!({
            "user": user, "allowed": a.allowed, "plan": a.plan.as_ref().map(|p| p.as_str()),
            "value": a.value, "reason": a.reason,
        }),
        // The same words whether the user exists in another tenant or nowhere.
        None => json!({
            "user": user, "allowed": false, "plan": null, "value": null, "reason": "unknown user",
        }),
    }
}

async fn check(State(state): State<Shared>, app: AppAuth, req: Request) -> ApiResult<Response> {
    let body = read_json(req, state.config.max_body_bytes).await?;
    if let Some(checks) = body.get("checks") {
        let Some(checks) = checks.as_array() else {
            return Err(scim::Error::InvalidValue("'checks' must be an array".into()).into());
        };
        if checks.is_empty() || checks.len() > MAX_BATCH_CHECKS {
            return Err(scim::Error::InvalidValue(format!(
                "'checks' must hold 1 to {MAX_BATCH_CHECKS} checks"
            ))
            .into());
        }
        let parsed = checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                parse_check(c).map_err(|e| match e {
                    ApiError::Scim(scim::Error::InvalidValue(m)) => {
                        scim::Error::InvalidValue(format!("checks[{i}]: {m}")).into()
                    }
                    other => other,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let mut results = Vec::with_capacity(parsed.len());
        for (user, q) in parsed {
            let a = state.snapshots.check(&app.tenant, user, q).await?;
            results.push(answer_json(user, a));
        }
        return Ok(axum::Json(json!({ "results": results })).into_response());
    }
    let (user, q) = parse_check(&body)?;
    let a = state.snapshots.check(&app.tenant, user, q).await?;
    Ok(axum::Json(answer_json(user, a)).into_response())
}

async fn user_entitlements(
    State(state): State<Shared>,
    app: AppAuth,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    let set = state
        .snapshots
        .entitlements(&app.tenant, &user)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown user".into()))?;
    Ok(axum::Json(set).into_response())
}

async fn issue_token(
    State(state): State<Shared>,
    app: AppAuth,
    req: Request,
) -> ApiResult<Response> {
    let body = read_json(req, state.config.max_body_bytes).await?;
    let user = text_field(&body, "user")?
        .ok_or_else(|| scim::Error::InvalidValue("'user' is required".into()))?;
    let set = state
        .snapshots
        .entitlements(&app.tenant, user)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown user".into()))?;
    let plans: serde_json::Map<String, Value> = set["licenses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["state"] == "active" && set["active"] == true)
        .map(|l| {
            (
                l["product"].as_str().unwrap_or_default().to_string(),
                l["plan"].clone(),
            )
        })
        .collect();
    let claims = json!({
        "iss": "seatkeeper",
        "sub": set["id"],
        "tenant": app.tenant,
        "active": set["active"],
        "plans": plans,
        "features": set["features"],
        "limits": set["limits"],
    });
    let (token, exp) = state.signer.sign(claims).await?;
    Ok(axum::Json(json!({
        "token": token,
        "expires_at": crate::kernel::clock::stamp(exp),
        "jwks_uri": "/.well-known/jwks.json",
    }))
    .into_response())
}

async fn jwks(State(state): State<Shared>) -> ApiResult<Response> {
    let set = state.signer.jwks().await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(set),
    )
        .into_response())
}

async fn create_key(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(body): Json<Named>,
) -> ApiResult<Response> {
    let created = state
        .tenants
        .create_credential(&auth.actor(), Credential::App, &id, &body.name)
        .await?;
    Ok(with_status(
        StatusCode::CREATED,
        axum::Json(
            json!({"id": created.row.id, "tenant": id, "name": body.name, "key": created.token}),
        ),
    ))
}

async fn list_keys(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let keys = state.tenants.credentials(Credential::App, &id).await?;
    Ok(axum::Json(json!({ "tenant": id, "app_keys": keys })).into_response())
}

async fn revoke_key(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    state
        .tenants
        .revoke_credential(&auth.actor(), Credential::App, &id, &key_id)
        .await?;
    state.gate.forget(Credential::App);
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn rotate_keys(State(state): State<Shared>, auth: AdminAuth) -> ApiResult<Response> {
    let kid = state.signer.rotate(&auth.actor()).await?;
    Ok(axum::Json(json!({ "kid": kid })).into_response())
}
