//! `/api/v1`: the licensing model, subscriptions, rules, usage and explanations (admin token).

use crate::kernel::extract::{Path, Query};
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::kernel::error::ApiResult;
use crate::kernel::extract::{AdminAuth, ScimJson, read_json};
use crate::licenses::service::Write;
use crate::state::Shared;

/// The admin routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/api/v1/tenants/{id}/subscriptions",
            get(list_subscriptions),
        )
        .route(
            "/api/v1/tenants/{id}/subscriptions/{product}",
            put(put_subscription)
                .patch(patch_subscription)
                .delete(delete_subscription),
        )
        .route("/api/v1/tenants/{id}/rules", get(list_rules))
        .route(
            "/api/v1/tenants/{id}/rules/{name}",
            put(put_rule).delete(delete_rule),
        )
        .route("/api/v1/tenants/{id}/role-rules", get(list_role_rules))
        .route(
            "/api/v1/tenants/{id}/role-rules/{name}",
            put(put_role_rule).delete(delete_role_rule),
        )
        .route("/api/v1/tenants/{id}/pins", get(list_pins))
        .route("/api/v1/tenants/{id}/import", post(import))
        .route("/api/v1/tenants/{id}/claims", get(list_claims))
        .route("/api/v1/tenants/{id}/reconcile", post(reconcile))
        .route(
            "/api/v1/tenants/{id}/settings",
            get(get_settings).put(put_settings),
        )
        .route("/api/v1/tenants/{id}/held", get(list_held))
        .route("/api/v1/tenants/{id}/held/approve", post(approve_held))
        .route("/api/v1/tenants/{id}/held/reject", post(reject_held))
        .route(
            "/api/v1/tenants/{id}/users/{user_id}/pins/{product}",
            put(put_pin).delete(delete_pin),
        )
        .route("/api/v1/tenants/{id}/usage", get(usage))
        .route("/api/v1/tenants/{id}/idle", get(idle))
        .route("/api/v1/tenants/{id}/usage/history", get(history))
        .route(
            "/api/v1/tenants/{id}/users/{user_id}/licenses",
            get(user_licenses),
        )
        .route("/api/v1/model", put(put_model).get(get_model))
        .route("/api/v1/scheduler/run", post(run_scheduler))
}

#[derive(serde::Deserialize)]
struct DryRun {
    dry_run: Option<String>,
}

impl DryRun {
    fn on(&self) -> ApiResult<bool> {
        flag("dry_run", self.dry_run.as_deref())
    }
}

/// `?force=true`: change a subscription a billing system manages.
#[derive(serde::Deserialize)]
struct Force {
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
struct ReconcileQuery {
    format: Option<HistoryFormat>,
}

/// The application's view (CSV or JSON lines of user, product[, plan]) against the licenses.
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

async fn list_claims(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let claims = state.licenses.claims(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "claims": claims})).into_response())
}

async fn get_settings(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let s = state.licenses.settings(&id).await?;
    Ok(ScimJson(s).into_response())
}

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

async fn list_held(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let held = state.licenses.held(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "held": held})).into_response())
}

async fn approve_held(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    decide_held(&state, &auth, &id, true).await
}

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

async fn list_pins(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let pins = state.licenses.pins(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "pins": pins})).into_response())
}

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

async fn list_role_rules(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rules = state.licenses.role_rules(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "role_rules": rules})).into_response())
}

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

async fn list_rules(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let rules = state.licenses.rules(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "rules": rules})).into_response())
}

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

async fn delete_rule(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let outcome = state.licenses.delete_rule(auth.actor(), &id, &name).await?;
    Ok(ScimJson(json!({"licenses": outcome})).into_response())
}

async fn usage(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ScimJson(state.licenses.usage(&id).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdleQuery {
    product: Option<String>,
    limit: Option<i64>,
    preview: Option<Preview>,
}

/// `preview=reclaim`: who the next reclaim pass would take.
#[derive(serde::Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Preview {
    Reclaim,
}

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
struct HistoryQuery {
    product: Option<String>,
    from: Option<crate::kernel::ids::Instant>,
    to: Option<crate::kernel::ids::Instant>,
    step: Option<crate::licenses::history::Step>,
    format: Option<HistoryFormat>,
}

#[derive(serde::Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum HistoryFormat {
    Json,
    Csv,
}

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

async fn user_licenses(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    let out = state.licenses.user_licenses(&id, &user).await?;
    Ok(ScimJson(out).into_response())
}

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

async fn get_model(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    Ok(ScimJson(state.licenses.catalogue().await?).into_response())
}

/// `?tenant=ID`: that tenant's due work only.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerQuery {
    tenant: Option<String>,
}

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
