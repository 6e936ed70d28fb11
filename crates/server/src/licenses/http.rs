//! `/api/v1`: the licensing model, subscriptions, rules, usage and explanations (admin token).

use crate::kernel::extract::{Path, Query};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::kernel::error::ApiResult;
use crate::kernel::extract::{AdminAuth, ScimJson, read_json};
use crate::licenses::service::Write;
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The admin routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_subscriptions))
        .routes(routes!(
            put_subscription,
            patch_subscription,
            delete_subscription
        ))
        .routes(routes!(list_rules))
        .routes(routes!(put_rule, delete_rule))
        .routes(routes!(list_role_rules))
        .routes(routes!(put_role_rule, delete_role_rule))
        .routes(routes!(list_pins))
        .routes(routes!(import))
        .routes(routes!(list_claims))
        .routes(routes!(reconcile))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(list_held))
        .routes(routes!(approve_held))
        .routes(routes!(reject_held))
        .routes(routes!(put_pin, delete_pin))
        .routes(routes!(usage))
        .routes(routes!(idle))
        .routes(routes!(history))
        .routes(routes!(user_licenses))
        .routes(routes!(put_model, get_model))
        .routes(routes!(run_scheduler))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DryRun {
    /// `true`: decide and answer, then roll everything back
    dry_run: Option<String>,
}

impl DryRun {
    fn on(&self) -> ApiResult<bool> {
        flag("dry_run", self.dry_run.as_deref())
    }
}

/// `?force=true`: change a subscription a billing system manages.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Force {
    /// `true`: apply even when the change revokes licenses that are held
    force: Option<String>,
}

impl Force {
    fn on(&self) -> ApiResult<bool> {
        flag("force", self.force.as_deref())
    }
}

fn flag(name: &str, value: Option<&str>) -> ApiResult<bool> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(scim::Error::InvalidValue(format!(
            "{name} must be true or false, not '{other}'"
        ))
        .into()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/subscriptions",
    summary = "List a tenant's subscriptions",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SubscriptionList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn list_subscriptions(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let subs = state.licenses.subscriptions(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "subscriptions": subs})).into_response())
}

/// A subscription or rule as the model file writes it: the licensing crate's parser checks
/// it (types, ranges, unknown keys) with located errors.
async fn model_body(req: Request, limit: usize) -> ApiResult<Value> {
    read_json(req, limit).await
}

#[utoipa::path(
    put,
    path = "/api/v1/tenants/{id}/subscriptions/{product}",
    summary = "Create or replace a subscription; re-decides every license (?force=true over billing)",
    params(("id" = String, Path, description = "The tenant's id"), ("product" = String, Path, description = "A product key"), Force),
    request_body = ref("#/components/schemas/Subscription"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SubscriptionChanged"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn put_subscription(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, product)): Path<(String, String)>,
    Query(force): Query<Force>,
    req: Request,
) -> ApiResult<Response> {
    let how = Write {
        merge: false,
        force: force.on()?,
    };
    write_subscription(&state, &auth, (&id, &product), req, how).await
}

/// `PATCH`: the fields given change, the others stay (as billing events merge).
#[utoipa::path(
    patch,
    path = "/api/v1/tenants/{id}/subscriptions/{product}",
    summary = "Change some fields of a subscription (merged like billing events; ?force=true over billing)",
    params(("id" = String, Path, description = "The tenant's id"), ("product" = String, Path, description = "A product key"), Force),
    request_body = ref("#/components/schemas/SubscriptionPatch"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SubscriptionChanged"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn patch_subscription(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, product)): Path<(String, String)>,
    Query(force): Query<Force>,
    req: Request,
) -> ApiResult<Response> {
    let how = Write {
        merge: true,
        force: force.on()?,
    };
    write_subscription(&state, &auth, (&id, &product), req, how).await
}

async fn write_subscription(
    state: &Shared,
    auth: &AdminAuth,
    (id, product): (&str, &str),
    req: Request,
    how: Write,
) -> ApiResult<Response> {
    let body = model_body(req, state.config.max_body_bytes).await?;
    let (sub, outcome) = state
        .licenses
        .put_subscription(auth.actor(), id, product, body, how)
        .await?;
    Ok(ScimJson(json!({"subscription": sub, "licenses": outcome})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/subscriptions/{product}",
    summary = "Remove a subscription; its licenses are revoked",
    params(("id" = String, Path, description = "The tenant's id"), ("product" = String, Path, description = "A product key"), Force),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/LicenseChangesOnly"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn delete_subscription(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, product)): Path<(String, String)>,
    Query(force): Query<Force>,
) -> ApiResult<Response> {
    let outcome = state
        .licenses
        .delete_subscription(auth.actor(), &id, &product, force.on()?)
        .await?;
    Ok(ScimJson(json!({"licenses": outcome})).into_response())
}

/// Largest import body (about 1.5 million CSV rows' worth; the row limit is lower).
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

/// A body of rows (an import, an application's view): its bytes, and whether they are JSON
/// lines — by media type (`text/csv`, or a JSON one), else by the first character.
async fn rows_body(req: Request) -> ApiResult<(axum::body::Bytes, bool)> {
    let kind = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = axum::body::to_bytes(req.into_body(), MAX_IMPORT_BYTES)
        .await
        .map_err(|_| {
            crate::kernel::error::ApiError::PayloadTooLarge(format!(
                "a body of rows may hold at most {MAX_IMPORT_BYTES} bytes"
            ))
        })?;
    let json_lines = kind.contains("json")
        || (!kind.starts_with("text/csv")
            && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'));
    Ok((body, json_lines))
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/import",
    summary = "Import seat holders (CSV or JSON lines: user, product, plan, assigned_at; ?dry_run=true)",
    params(("id" = String, Path, description = "The tenant's id"), DryRun),
    request_body(
        description = "CSV with a header naming user, product, plan, assigned_at (any order), or one JSON object per line",
        content((String = "text/csv"), (String = "application/x-ndjson"))
    ),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ImportReport"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn import(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Query(dry): Query<DryRun>,
    req: Request,
) -> ApiResult<Response> {
    use crate::licenses::import::{Format, parse};
    let dry_run = dry.on()?;
    let (body, json_lines) = rows_body(req).await?;
    let format = if json_lines {
        Format::JsonLines
    } else {
        Format::Csv
    };
    let rows = parse(&body, format)?;
    let report = state
        .licenses
        .import(auth.actor(), &id, rows, dry_run)
        .await?;
    Ok(ScimJson(json!(report)).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReconcileQuery {
    /// json (default) or csv
    #[param(inline)]
    format: Option<HistoryFormat>,
}

/// The application's view (CSV or JSON lines of user, product[, plan]) against the licenses.
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/reconcile",
    summary = "The application's view (user, product[, plan]) against the licenses (?format=csv)",
    params(("id" = String, Path, description = "The tenant's id"), ReconcileQuery),
    request_body(
        description = "Who uses the application: CSV with a header naming user, product and optionally plan, or one JSON object per line",
        content((String = "text/csv"), (String = "application/x-ndjson"))
    ),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ReconcileReport"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn reconcile(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    crate::kernel::extract::Query(q): crate::kernel::extract::Query<ReconcileQuery>,
    req: Request,
) -> ApiResult<Response> {
    let (body, json_lines) = rows_body(req).await?;
    let uses = crate::licenses::reconcile::parse_uses(&body, json_lines)?;
    let (at, findings) = state.licenses.reconcile_uses(&id, uses).await?;
    if q.format == Some(HistoryFormat::Csv) {
        let bytes = crate::licenses::reconcile::uses_csv(&findings)
            .map_err(|e| crate::kernel::error::ApiError::Internal(format!("writing CSV: {e}")))?;
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            bytes,
        )
            .into_response());
    }
    Ok(ScimJson(crate::licenses::reconcile::uses_json(&at, &findings)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/claims",
    summary = "An import's pending claims (users not in the directory yet)",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ClaimList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn list_claims(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let claims = state.licenses.claims(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "claims": claims})).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/settings",
    summary = "A tenant's settings (the deprovision brake)",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Settings"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn get_settings(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let s = state.licenses.settings(&id).await?;
    Ok(ScimJson(s).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/tenants/{id}/settings",
    summary = "Change a tenant's settings: {\"deprovision_brake\": {percent, min_users, window_minutes} | null}",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = ref("#/components/schemas/SettingsRequest"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/Settings"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn put_settings(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let body = model_body(req, state.config.max_body_bytes).await?;
    let s = state.licenses.put_settings(auth.actor(), &id, body).await?;
    Ok(ScimJson(s).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/held",
    summary = "Users whose seats the deprovision brake holds",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/HeldList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn list_held(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let held = state.licenses.held(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "held": held})).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/held/approve",
    summary = "Release the held users' seats (waiters are promoted)",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/HeldDecision"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn approve_held(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    decide_held(&state, &auth, &id, true).await
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{id}/held/reject",
    summary = "Keep the held users' seats reserved until the identity provider sends them back",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/HeldDecision"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn reject_held(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    decide_held(&state, &auth, &id, false).await
}

async fn decide_held(
    state: &Shared,
    auth: &AdminAuth,
    id: &str,
    approve: bool,
) -> ApiResult<Response> {
    let (users, outcome) = state
        .licenses
        .decide_held(auth.actor(), id, approve)
        .await?;
    Ok(ScimJson(json!({
        "decision": if approve { "approved" } else { "rejected" },
        "users": users,
        "licenses": outcome,
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/pins",
    summary = "A tenant's pins (direct assignments over the rules)",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/PinList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn list_pins(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let pins = state.licenses.pins(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "pins": pins})).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/tenants/{id}/users/{user_id}/pins/{product}",
    summary = "Pin a user's plan of a product (plan null: exclude them), with a reason and an optional expiry",
    params(("id" = String, Path, description = "The tenant's id"), ("user_id" = String, Path, description = "The user's id"), ("product" = String, Path, description = "A product key")),
    request_body = ref("#/components/schemas/PinRequest"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/PinSet"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn put_pin(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, user, product)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let body = model_body(req, state.config.max_body_bytes).await?;
    let (pin, outcome) = state
        .licenses
        .put_pin(auth.actor(), (&id, &user, &product), body)
        .await?;
    Ok(ScimJson(json!({"pin": pin, "licenses": outcome})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/users/{user_id}/pins/{product}",
    summary = "Remove a pin: the rules decide again",
    params(("id" = String, Path, description = "The tenant's id"), ("user_id" = String, Path, description = "The user's id"), ("product" = String, Path, description = "A product key")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/LicenseChangesOnly"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn delete_pin(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, user, product)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let outcome = state
        .licenses
        .delete_pin(auth.actor(), (&id, &user, &product))
        .await?;
    Ok(ScimJson(json!({"licenses": outcome})).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/role-rules",
    summary = "List a tenant's role rules",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/RoleRuleList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn list_role_rules(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rules = state.licenses.role_rules(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "role_rules": rules})).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/tenants/{id}/role-rules/{name}",
    summary = "Create or replace a role rule (a SCIM filter gives a role of a product); re-decides every user's roles",
    params(("id" = String, Path, description = "The tenant's id"), ("name" = String, Path, description = "The rule's name")),
    request_body = ref("#/components/schemas/RoleRule"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/RoleRuleSet"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn put_role_rule(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, name)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let body = model_body(req, state.config.max_body_bytes).await?;
    let rule = state
        .licenses
        .put_role_rule(auth.actor(), &id, &name, body)
        .await?;
    Ok(ScimJson(json!({"role_rule": rule})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/role-rules/{name}",
    summary = "Remove a role rule; the roles it gave are taken back",
    params(("id" = String, Path, description = "The tenant's id"), ("name" = String, Path, description = "The rule's name")),
    responses((status = 204, description = "Success")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn delete_role_rule(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    state
        .licenses
        .delete_role_rule(auth.actor(), &id, &name)
        .await?;
    Ok(crate::kernel::extract::empty(
        axum::http::StatusCode::NO_CONTENT,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/rules",
    summary = "List assignment rules",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/RuleList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn list_rules(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let rules = state.licenses.rules(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "rules": rules})).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/tenants/{id}/rules/{name}",
    summary = "Create or change an assignment rule",
    params(("id" = String, Path, description = "The tenant's id"), ("name" = String, Path, description = "The rule's name")),
    request_body = ref("#/components/schemas/Rule"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/RuleSet"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn put_rule(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, name)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let body = model_body(req, state.config.max_body_bytes).await?;
    let (rule, outcome) = state
        .licenses
        .put_rule(auth.actor(), &id, &name, body)
        .await?;
    Ok(ScimJson(json!({"rule": rule, "licenses": outcome})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{id}/rules/{name}",
    summary = "Remove an assignment rule",
    params(("id" = String, Path, description = "The tenant's id"), ("name" = String, Path, description = "The rule's name")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/LicenseChangesOnly"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn delete_rule(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let outcome = state.licenses.delete_rule(auth.actor(), &id, &name).await?;
    Ok(ScimJson(json!({"licenses": outcome})).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/usage",
    summary = "Seats, active, waitlisted, overage and status per subscription",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/TenantUsage"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn usage(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ScimJson(state.licenses.usage(&id).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct IdleQuery {
    /// Only this product
    product: Option<String>,
    /// Licenses at most
    limit: Option<i64>,
    /// `reclaim`: who the next reclaim pass would take
    #[param(inline)]
    preview: Option<Preview>,
}

/// `preview=reclaim`: who the next reclaim pass would take.
#[derive(serde::Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Preview {
    Reclaim,
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/idle",
    summary = "Idle licenses (?product=P&limit=N): held seats whose user has shown no activity for the subscription's idle_after_days — user, userName, product, plan, last_seen, held_since",
    params(("id" = String, Path, description = "The tenant's id"), IdleQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/IdleList"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn idle(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    crate::kernel::extract::Query(q): crate::kernel::extract::Query<IdleQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    Ok(ScimJson(
        state
            .licenses
            .idle(
                &id,
                q.product.as_deref(),
                limit,
                q.preview == Some(Preview::Reclaim),
            )
            .await?,
    )
    .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// The subscription's product (may be left out when the tenant has one)
    product: Option<String>,
    /// Start (RFC 3339; default 30 days before `to`)
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<crate::kernel::ids::Instant>,
    /// End (RFC 3339; default now)
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<crate::kernel::ids::Instant>,
    /// Bucket width (default: hour up to 7 days, else day)
    #[param(inline)]
    step: Option<crate::licenses::history::Step>,
    /// json (default) or csv
    #[param(inline)]
    format: Option<HistoryFormat>,
}

#[derive(serde::Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum HistoryFormat {
    Json,
    Csv,
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/usage/history",
    summary = "A subscription's seat counts over time (?product=P&from=&to=&step=hour|day&format=json|csv): {points: [{at, seats, active, waitlisted, overage, idle}]}, each bucket the counts at its end",
    params(("id" = String, Path, description = "The tenant's id"), HistoryQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/UsageHistory"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn history(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    crate::kernel::extract::Query(q): crate::kernel::extract::Query<HistoryQuery>,
) -> ApiResult<Response> {
    let h = state
        .licenses
        .history(
            &id,
            q.product.as_deref(),
            q.from.map(|i| i.at()),
            q.to.map(|i| i.at()),
            q.step,
        )
        .await?;
    if q.format == Some(HistoryFormat::Csv) {
        let mut out = String::from("at,seats,active,waitlisted,overage,idle\r\n");
        for p in &h.points {
            let c = &p.counts;
            out.push_str(&format!(
                "{},{},{},{},{},{}\r\n",
                p.at, c.seats, c.active, c.waitlisted, c.overage, c.idle
            ));
        }
        return Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("text/csv; charset=utf-8"),
            )],
            out,
        )
            .into_response());
    }
    Ok(ScimJson(serde_json::to_value(&h).unwrap_or_default()).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/users/{user_id}/licenses",
    summary = "A user's licenses with their explanation chains, history and last_seen",
    params(("id" = String, Path, description = "The tenant's id"), ("user_id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/UserLicenses"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn user_licenses(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let out = state.licenses.user_licenses(&id, &user).await?;
    Ok(ScimJson(out).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/model",
    summary = "Apply a licensing model (?dry_run=true prints the plan only)",
    params(DryRun, Force),
    request_body = ref("#/components/schemas/Model"),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ModelApplied"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn put_model(
    State(state): State<Shared>,
    auth: AdminAuth,
    Query(dry): Query<DryRun>,
    Query(force): Query<Force>,
    req: Request,
) -> ApiResult<Response> {
    let dry_run = dry.on()?;
    let force = force.on()?;
    let body = model_body(req, state.config.max_body_bytes).await?;
    let known = state.licenses.products().await?;
    let spec = licensing::spec::Spec::from_json_with(&body, &known)?;
    let applied = state
        .licenses
        .apply(auth.actor(), spec, dry_run, force)
        .await?;
    Ok(ScimJson(json!(applied)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/model",
    summary = "The licensing model as stored",
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ModelView"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn get_model(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    Ok(ScimJson(state.licenses.catalogue().await?).into_response())
}

/// `?tenant=ID`: that tenant's due work only.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SchedulerQuery {
    /// Only this tenant
    tenant: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/scheduler/run",
    summary = "Run due term transitions now",
    params(SchedulerQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/SchedulerPass"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "licenses"
)]
async fn run_scheduler(
    State(state): State<Shared>,
    _auth: AdminAuth,
    crate::kernel::extract::Query(q): crate::kernel::extract::Query<SchedulerQuery>,
) -> ApiResult<Response> {
    let out = match q.tenant {
        Some(t) => {
            state.tenants.require(&t).await?;
            state.licenses.run_due_for(&t).await?
        }
        None => state.licenses.run_due().await?,
    };
    Ok(ScimJson(json!({"tenants": out})).into_response())
}
