//! `/portal`: the customer admin portal's pages, and `POST /api/v1/tenants/{id}/portal-links`
//! (admin) that makes its links. Every page needs a portal session cookie; every form carries
//! the session's CSRF token; the console's security headers apply.

use std::collections::BTreeMap;

use crate::kernel::extract::Path;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cookie::Cookie;
use serde_json::{Value, json};

use crate::console::http::{cookie_value, forbidden, page, secure_headers};
use crate::kernel::auth::Credential;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, OptionalJson, RequestId, ScimJson, base_url, with_status};
use crate::kernel::ids::Name;
use crate::portal::pages::{ErrorView, Home, UserView};
use crate::portal::service::{PORTAL_TOKEN_NAME, SESSION_LIFETIME, Session, portal_actor};
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const COOKIE: &str = "sk_portal";

/// The portal's pages.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/portal", get(home))
        .route("/portal/{token}", get(open))
        .route("/portal/users/{user_id}", get(user))
        .route("/portal/scim-token", post(rotate_token))
        .route("/portal/logout", post(logout))
        .layer(axum::middleware::map_response(secure_headers))
}

/// `{"expires_in": seconds?, "capabilities": [...]?}`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewLink {
    expires_in: Option<i64>,
    capabilities: Option<Vec<String>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/portal-links",
    summary = "A single-use link to the customer admin portal for the tenant's IT admin (its first visit starts an 8-hour session)",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = ref("#/components/schemas/PortalLinkRequest"),
    responses((status = 201, description = "Success", body = ref("#/components/schemas/PortalLink"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "portal"
)]
async fn create_link(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<NewLink>,
) -> ApiResult<Response> {
    let caps = body.capabilities.unwrap_or_else(|| {
        crate::portal::service::CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect()
    });
    let link = state
        .portal
        .create_link(&auth.actor(), &id, body.expires_in.unwrap_or(3600), &caps)
        .await?;
    let url = format!("{}/portal/{}", base_url(&state.gate, &headers), link.token);
    Ok(with_status(
        StatusCode::CREATED,
        ScimJson(
            json!({"url": url, "expires_at": link.expires_at, "capabilities": link.capabilities}),
        ),
    ))
}

fn portal_cookie(state: &Shared, value: &str, max_age: i64) -> HeaderValue {
    let c = Cookie::build((COOKIE, value.to_string()))
        .path("/portal")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(
            state
                .gate
                .public_url()
                .is_some_and(|u| u.starts_with("https://")),
        )
        .max_age(cookie::time::Duration::seconds(max_age));
    HeaderValue::from_str(&c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
}

fn error_view(status: StatusCode, message: String) -> Response {
    page(
        ErrorView {
            tenant_name: "seatkeeper".into(),
            csrf: String::new(),
            can_setup: false,
            can_seats: false,
            can_audit: false,
            status: status.as_u16(),
            message,
        },
        status,
    )
}

fn failed(e: ApiError) -> Response {
    let status = e.status();
    let message = match &e {
        ApiError::Internal(_) => "Something went wrong on the server; it is logged.".to_string(),
        other => other.detail(),
    };
    error_view(status, message)
}

/// A browser with a live portal session.
struct PortalSession(Session);

impl FromRequestParts<Shared> for PortalSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let none = || {
            error_view(
                StatusCode::UNAUTHORIZED,
                "Your portal session has ended. Ask your vendor for a new portal link.".into(),
            )
        };
        let Some(token) = cookie_value(&parts.headers, COOKIE) else {
            return Err(none());
        };
        match state.portal.session(&token).await {
            Ok(Some(s)) => Ok(PortalSession(s)),
            Ok(None) => Err(none()),
            Err(e) => Err(failed(e)),
        }
    }
}

async fn open(
    State(state): State<Shared>,
    Path(token): Path<String>,
    request_id: Option<axum::Extension<RequestId>>,
) -> Response {
    let rid = request_id.map(|r| r.0.0).unwrap_or_default();
    match state.portal.open(&token, &rid).await {
        Ok(Some(s)) => {
            let mut resp = Redirect::to("/portal").into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                portal_cookie(&state, &s.token, SESSION_LIFETIME.whole_seconds()),
            );
            resp
        }
        Ok(None) => error_view(
            StatusCode::GONE,
            "This portal link has been used or has expired. Ask your vendor for a new one.".into(),
        ),
        Err(e) => failed(e),
    }
}

async fn tenant_name(state: &Shared, tenant: &str) -> ApiResult<String> {
    Ok(state.tenants.get(tenant).await?.name)
}

async fn home_page(
    state: &Shared,
    s: &Session,
    headers: &HeaderMap,
    new_token: Option<String>,
) -> ApiResult<Home> {
    let t = &s.tenant;
    let (can_setup, can_seats, can_audit) = (s.can("scim_setup"), s.can("seats"), s.can("audit"));
    let portal_tokens = if can_setup {
        state
            .tenants
            .credentials(Credential::Scim, t)
            .await?
            .iter()
            .filter(|c| c.name == PORTAL_TOKEN_NAME && c.revoked.is_none())
            .count()
    } else {
        0
    };
    let (subscriptions, waitlist, idle, holders) = if can_seats {
        let idle = state.licenses.idle(t, None, 100, false).await?;
        (
            state
                .licenses
                .usage_rows(Some(std::slice::from_ref(t)))
                .await?
                .into_iter()
                .map(|(u, _)| u)
                .collect(),
            state.licenses.waitlist(t, 100).await?,
            idle["idle"].as_array().cloned().unwrap_or_default(),
            state.portal.holders(t).await?,
        )
    } else {
        (Vec::new(), Vec::new(), Vec::new(), Vec::new())
    };
    let audit = if can_audit {
        state.portal.audit(t).await?
    } else {
        Vec::new()
    };
    Ok(Home {
        tenant_name: tenant_name(state, t).await?,
        csrf: s.csrf.clone(),
        can_setup,
        can_seats,
        can_audit,
        expires: s.expires.clone(),
        scim_url: state.gate.scim_base(headers),
        portal_tokens,
        new_token,
        subscriptions,
        waitlist,
        idle,
        holders,
        audit,
    })
}

async fn home(
    State(state): State<Shared>,
    PortalSession(s): PortalSession,
    headers: HeaderMap,
) -> Response {
    match home_page(&state, &s, &headers, None).await {
        Ok(p) => page(p, StatusCode::OK),
        Err(e) => failed(e),
    }
}

async fn user(
    State(state): State<Shared>,
    PortalSession(s): PortalSession,
    Path(user_id): Path<String>,
) -> Response {
    if !s.can("seats") {
        return error_view(
            StatusCode::FORBIDDEN,
            "This portal link does not show seats.".into(),
        );
    }
    let shown = async {
        let v: Value = state.licenses.user_licenses(&s.tenant, &user_id).await?;
        let name = state
            .portal
            .holders(&s.tenant)
            .await?
            .into_iter()
            .find(|h| h.0 == user_id)
            .map_or_else(|| user_id.clone(), |h| h.1);
        Ok::<_, ApiError>(UserView {
            tenant_name: tenant_name(&state, &s.tenant).await?,
            csrf: s.csrf.clone(),
            can_setup: s.can("scim_setup"),
            can_seats: true,
            can_audit: s.can("audit"),
            user_name: name,
            licenses: v["licenses"].as_array().cloned().unwrap_or_default(),
            roles: v["roles"].as_array().cloned().unwrap_or_default(),
        })
    }
    .await;
    match shown {
        Ok(p) => page(p, StatusCode::OK),
        Err(e) => failed(e),
    }
}

type Form = Result<axum::Form<BTreeMap<String, String>>, axum::extract::rejection::FormRejection>;

async fn rotate_token(
    State(state): State<Shared>,
    PortalSession(s): PortalSession,
    headers: HeaderMap,
    request_id: Option<axum::Extension<RequestId>>,
    form: Form,
) -> Response {
    let form = form.map(|f| f.0).unwrap_or_default();
    if !s.csrf_holds(form.get("csrf").map(String::as_str)) {
        return forbidden("the form's CSRF token is missing or wrong; reload the portal");
    }
    if !s.can("scim_setup") {
        return error_view(
            StatusCode::FORBIDDEN,
            "This portal link does not set up provisioning.".into(),
        );
    }
    let rid = request_id.map(|r| r.0.0).unwrap_or_default();
    let done = async {
        let name = Name::parse(PORTAL_TOKEN_NAME).map_err(scim::Error::InvalidValue)?;
        let created = state
            .tenants
            .rotate_credential(&portal_actor(&rid), Credential::Scim, &s.tenant, &name)
            .await?;
        state.gate.forget(Credential::Scim);
        home_page(&state, &s, &headers, Some(created.token)).await
    }
    .await;
    match done {
        Ok(p) => page(p, StatusCode::OK),
        Err(e) => failed(e),
    }
}

async fn logout(
    State(state): State<Shared>,
    PortalSession(s): PortalSession,
    form: Form,
) -> Response {
    let form = form.map(|f| f.0).unwrap_or_default();
    if !s.csrf_holds(form.get("csrf").map(String::as_str)) {
        return forbidden("the form's CSRF token is missing or wrong");
    }
    if let Err(e) = state.portal.end(&s.token).await {
        return failed(e);
    }
    let mut resp = error_view(StatusCode::OK, "You have signed out of the portal.".into());
    resp.headers_mut()
        .append(header::SET_COOKIE, portal_cookie(&state, "", 0));
    resp
}

/// The admin API's route (last in this file: the OpenAPI test reads routes from here on).
pub fn api_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(create_link))
}
