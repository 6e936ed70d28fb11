//! The application API: entitlement checks, effective sets and signed tokens (app keys),
//! app key management and token key rotation (admin token), and the public JWKS.

use crate::kernel::extract::Path;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use licensing::entitlements::{Answer, Question};
use serde_json::{Value, json};

use crate::kernel::auth::Credential;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{
    AdminAuth, Json, RawJson, ScimJson, bearer, empty, parse_typed, with_status,
};
use crate::kernel::ids::Named;
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most checks in one batch call.
pub const MAX_BATCH_CHECKS: usize = 1000;
/// Longest user reference, feature or limit name accepted.
const MAX_NAME: usize = 256;

/// The application routes (under `/api/v1`).
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(check))
        .routes(routes!(report_activity))
        .routes(routes!(user_entitlements))
        .routes(routes!(issue_token))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(rotate_keys))
}

/// Routes outside `/api/v1`.
pub fn public_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(jwks))
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

/// A name in a check: a user reference, feature or limit (borrowed from the body when it
/// holds no escapes).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// One check: the user, and exactly one of a feature or a limit.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Check<'a> {
    #[serde(borrow)]
    user: Option<Text<'a>>,
    #[serde(borrow)]
    feature: Option<Text<'a>>,
    #[serde(borrow)]
    limit: Option<Text<'a>>,
    #[serde(borrow)]
    permission: Option<Text<'a>>,
}

/// What a check asks: a feature or limit of the user's plans, or a permission of their
/// roles.
#[derive(Clone, Copy)]
enum Ask<'a> {
    Entitled(Question<'a>),
    Permission(&'a str),
}

/// `POST /check`: one check, or `{"checks": [...]}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody<'a> {
    #[serde(borrow)]
    user: Option<Text<'a>>,
    #[serde(borrow)]
    feature: Option<Text<'a>>,
    #[serde(borrow)]
    limit: Option<Text<'a>>,
    #[serde(borrow)]
    permission: Option<Text<'a>>,
    #[serde(borrow)]
    checks: Option<Vec<Check<'a>>>,
}

fn name<'a>(field: &str, v: &'a Option<Text<'a>>) -> ApiResult<Option<&'a str>> {
    match v {
        None => Ok(None),
        Some(Text(s)) if !s.is_empty() && s.len() <= MAX_NAME => Ok(Some(s)),
        Some(_) => Err(scim::Error::InvalidValue(format!(
            "'{field}' must be a non-empty string of at most {MAX_NAME} characters"
        ))
        .into()),
    }
}

impl<'a> Check<'a> {
    /// The user and the question.
    fn question(&'a self) -> ApiResult<(&'a str, Ask<'a>)> {
        let user = name("user", &self.user)?
            .ok_or_else(|| scim::Error::InvalidValue("'user' is required".into()))?;
        let question = match (
            name("feature", &self.feature)?,
            name("limit", &self.limit)?,
            name("permission", &self.permission)?,
        ) {
            (Some(f), None, None) => Ask::Entitled(Question::Feature(f)),
            (None, Some(l), None) => Ask::Entitled(Question::Limit(l)),
            (None, None, Some(p)) => Ask::Permission(p),
            _ => {
                return Err(scim::Error::InvalidValue(
                    "a check names exactly one of 'feature', 'limit' or 'permission'".into(),
                )
                .into());
            }
        };
        Ok((user, question))
    }
}

/// A permission answer as the API shows it.
#[derive(serde::Serialize)]
struct PermissionOut<'a> {
    user: &'a str,
    allowed: bool,
    roles: &'a [String],
    reason: &'a str,
}

/// The answer to either kind of check.
enum Reply {
    Entitled(Option<Answer>),
    Permission(Option<licensing::roles::PermissionAnswer>),
}

impl<'a> PermissionOut<'a> {
    fn of(user: &'a str, a: &'a Option<licensing::roles::PermissionAnswer>) -> PermissionOut<'a> {
        match a {
            Some(a) => PermissionOut {
                user,
                allowed: a.allowed,
                roles: &a.roles,
                reason: &a.reason,
            },
            None => PermissionOut {
                user,
                allowed: false,
                roles: &[],
                reason: "unknown user",
            },
        }
    }
}

impl Reply {
    fn out<'a>(&'a self, user: &'a str) -> Value {
        match self {
            Reply::Entitled(a) => json!(AnswerOut::of(user, a)),
            Reply::Permission(a) => json!(PermissionOut::of(user, a)),
        }
    }
}

/// Asks the tenant's snapshot.
async fn ask(state: &Shared, tenant: &str, user: &str, q: Ask<'_>) -> ApiResult<Reply> {
    Ok(match q {
        Ask::Entitled(q) => Reply::Entitled(state.snapshots.check(tenant, user, q).await?),
        Ask::Permission(p) => Reply::Permission(state.snapshots.permit(tenant, user, p).await?),
    })
}

/// An answer as the API shows it.
#[derive(serde::Serialize)]
struct AnswerOut<'a> {
    user: &'a str,
    allowed: bool,
    plan: Option<&'a str>,
    value: Option<i64>,
    reason: &'a str,
}

impl<'a> AnswerOut<'a> {
    fn of(user: &'a str, a: &'a Option<Answer>) -> AnswerOut<'a> {
        match a {
            Some(a) => AnswerOut {
                user,
                allowed: a.allowed,
                plan: a.plan.as_ref().map(|p| p.as_str()),
                value: a.value,
                reason: &a.reason,
            },
            // The same words whether the user exists in another tenant or nowhere.
            None => AnswerOut {
                user,
                allowed: false,
                plan: None,
                value: None,
                reason: "unknown user",
            },
        }
    }
}

/// A JSON response serialized straight from a typed value.
fn json_response<T: serde::Serialize>(v: &T) -> ApiResult<Response> {
    let body = serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// Most users one activity report may name.
pub const MAX_ACTIVITY_USERS: usize = 10_000;

/// `{"users": [id, userName or externalId, …], "at": RFC 3339?}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ActivityBody {
    /// 1 to 10,000 users: id, userName or externalId
    users: Vec<String>,
    /// When they were active (RFC 3339; default now)
    #[schema(value_type = Option<String>, format = DateTime)]
    at: Option<crate::kernel::ids::Instant>,
}

/// Applications report which users were active (in batches): their seats are not idle, and
/// a reclaimed license of theirs comes back.
#[utoipa::path(
    post,
    path = "/api/v1/activity",
    summary = "Report users as active (1 to 10,000 a call): not idle, and reclaimed seats come back",
    request_body = ActivityBody,
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ActivityRecorded"), content_type = "application/scim+json")),
    security(("app" = [])),
    tag = "apps"
)]
async fn report_activity(
    State(state): State<Shared>,
    app: AppAuth,
    RawJson(bytes): RawJson,
) -> ApiResult<Response> {
    let body: ActivityBody = parse_typed(&bytes)?;
    if body.users.is_empty() || body.users.len() > MAX_ACTIVITY_USERS {
        return Err(scim::Error::InvalidValue(format!(
            "users must hold 1 to {MAX_ACTIVITY_USERS} user ids, userNames or externalIds"
        ))
        .into());
    }
    if let Some(bad) = body.users.iter().find(|u| u.is_empty() || u.len() > 1024) {
        return Err(scim::Error::InvalidValue(format!(
            "users: '{}' is not a user reference (1 to 1024 characters)",
            bad.chars().take(40).collect::<String>()
        ))
        .into());
    }
    let (recorded, unknown, licenses) = state
        .licenses
        .report_activity(&app.tenant, "activity", body.users, body.at.map(|a| a.at()))
        .await?;
    Ok(
        ScimJson(json!({"recorded": recorded, "unknown": unknown, "licenses": licenses}))
            .into_response(),
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/check",
    summary = "May a user use a feature, or what is their limit? One check or a batch",
    request_body = ref("#/components/schemas/CheckRequest"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/CheckResponse"), content_type = "application/json")),
    security(("app" = [])),
    tag = "apps"
)]
async fn check(
    State(state): State<Shared>,
    app: AppAuth,
    RawJson(bytes): RawJson,
) -> ApiResult<Response> {
    let body: CheckBody<'_> = parse_typed(&bytes)?;
    if let Some(checks) = &body.checks {
        if body.user.is_some()
            || body.feature.is_some()
            || body.limit.is_some()
            || body.permission.is_some()
        {
            return Err(scim::Error::InvalidValue(
                "a batch holds its checks in 'checks' alone".into(),
            )
            .into());
        }
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
                c.question().map_err(|e| match e {
                    ApiError::Scim(scim::Error::InvalidValue(m)) => {
                        scim::Error::InvalidValue(format!("checks[{i}]: {m}")).into()
                    }
                    other => other,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let mut answers = Vec::with_capacity(parsed.len());
        for (user, q) in &parsed {
            answers.push(ask(&state, &app.tenant, user, *q).await?);
        }
        let results: Vec<Value> = parsed
            .iter()
            .zip(&answers)
            .map(|((user, _), a)| a.out(user))
            .collect();
        return json_response(&json!({ "results": results }));
    }
    let one = Check {
        user: body.user,
        feature: body.feature,
        limit: body.limit,
        permission: body.permission,
    };
    let (user, q) = one.question()?;
    match q {
        // The hot path: serialised straight from the typed answer.
        Ask::Entitled(q) => {
            let a = state.snapshots.check(&app.tenant, user, q).await?;
            json_response(&AnswerOut::of(user, &a))
        }
        Ask::Permission(p) => {
            let a = state.snapshots.permit(&app.tenant, user, p).await?;
            json_response(&PermissionOut::of(user, &a))
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{user}/entitlements",
    summary = "A user's whole effective set",
    params(("user" = String, Path, description = "The user: id, userName or externalId")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Entitlements"), content_type = "application/json")),
    security(("app" = [])),
    tag = "apps"
)]
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

/// `POST /tokens/entitlements`: `{"user": …}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest<'a> {
    #[serde(borrow)]
    user: Option<Text<'a>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens/entitlements",
    summary = "A signed entitlement token (JWT, EdDSA)",
    request_body = ref("#/components/schemas/TokenRequest"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Token"), content_type = "application/json")),
    security(("app" = [])),
    tag = "apps"
)]
async fn issue_token(
    State(state): State<Shared>,
    app: AppAuth,
    RawJson(bytes): RawJson,
) -> ApiResult<Response> {
    let body: TokenRequest<'_> = parse_typed(&bytes)?;
    let user = name("user", &body.user)?
        .ok_or_else(|| scim::Error::InvalidValue("'user' is required".into()))?;
    let set = state
        .snapshots
        .entitlements(&app.tenant, user)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown user".into()))?;
    let claims = crate::apps::jwt::claims_of(&app.tenant, &set);
    let (token, exp) = state.signer.sign(claims).await?;
    Ok(axum::Json(json!({
        "token": token,
        "expires_at": crate::kernel::clock::stamp(exp),
        "jwks_uri": "/.well-known/jwks.json",
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    summary = "The keys that verify entitlement tokens (JWK Set)",
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Jwks"), content_type = "application/json")),
    security(()),
    tag = "apps"
)]
async fn jwks(State(state): State<Shared>) -> ApiResult<Response> {
    let set = state.signer.jwks().await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(set),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/app-keys",
    summary = "Create an app key (shown once)",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = ref("#/components/schemas/Named"),
    responses((status = 201, description = "Success", body = ref("#/components/schemas/CreatedCredential"), content_type = "application/json")),
    security(("admin" = [])),
    tag = "apps"
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/app-keys",
    summary = "List app keys (no secrets)",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/AppKeyList"), content_type = "application/json")),
    security(("admin" = [])),
    tag = "apps"
)]
async fn list_keys(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let keys = state.tenants.credentials(Credential::App, &id).await?;
    Ok(axum::Json(json!({ "tenant": id, "app_keys": keys })).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/app-keys/{key_id}",
    summary = "Revoke an app key",
    params(("id" = String, Path, description = "The tenant's id"), ("key_id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "apps"
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/signing-keys/rotate",
    summary = "Sign tokens with a new key (the old one stays published until its tokens expire)",
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SigningKey"), content_type = "application/json")),
    security(("admin" = [])),
    tag = "apps"
)]
async fn rotate_keys(State(state): State<Shared>, auth: AdminAuth) -> ApiResult<Response> {
    let kid = state.signer.rotate(&auth.actor()).await?;
    Ok(axum::Json(json!({ "kid": kid })).into_response())
}
