//! `/api/v1`: the operator's admin API (admin token).

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::{Value, json};

use super::{AdminAuth, ScimJson, Shared, empty, read_json, with_status};
use crate::error::{ApiError, ApiResult};
use crate::store::Credential;
use crate::{model, ops};

/// The admin routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/tenants", post(create_tenant).get(list_tenants))
        .route("/tenants/{id}", axum::routing::get(get_tenant))
        .route("/tenants/{id}/scim-tokens", post(create_token))
        .route("/tenants/{id}/scim-tokens/{token_id}", delete(revoke_token))
        .route("/tenants/{id}/subscriptions", get(list_subscriptions))
        .route(
            "/tenants/{id}/subscriptions/{product}",
            put(put_subscription).delete(delete_subscription),
        )
        .route("/tenants/{id}/rules", get(list_rules))
        .route(
            "/tenants/{id}/rules/{name}",
            put(put_rule).delete(delete_rule),
        )
        .route("/tenants/{id}/usage", get(usage))
        .route("/tenants/{id}/users/{user_id}/licenses", get(user_licenses))
        .route("/model", put(put_model).get(get_model))
        .route("/scheduler/run", post(run_scheduler))
        .route("/clock", post(move_clock))
}

fn actor(auth: &AdminAuth) -> model::Actor {
    model::Actor {
        name: "admin".into(),
        request_id: auth.request_id.clone(),
    }
}

#[derive(serde::Deserialize)]
struct DryRun {
    dry_run: Option<String>,
}

impl DryRun {
    fn on(&self) -> ApiResult<bool> {
        match self.dry_run.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(scim::Error::InvalidValue(format!(
                "dry_run must be true or false, not '{other}'"
            ))
            .into()),
        }
    }
}

async fn list_subscriptions(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_tenant(&state, &id).await?;
    let subs: Vec<Value> = state
        .store
        .subscriptions(&id)
        .await?
        .iter()
        .map(model::subscription_json)
        .collect();
    Ok(ScimJson(json!({"tenant": id, "subscriptions": subs})).into_response())
}

async fn put_subscription(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, product)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let body = read_json(req, state.config.max_body_bytes).await?;
    let (sub, outcome) = model::put_subscription(
        &state.store,
        &*state.engine_clock(),
        actor(&auth),
        &id,
        &product,
        body,
    )
    .await?;
    Ok(ScimJson(json!({"subscription": sub, "licenses": outcome})).into_response())
}

async fn delete_subscription(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, product)): Path<(String, String)>,
) -> ApiResult<Response> {
    let outcome = model::delete_subscription(
        &state.store,
        &*state.engine_clock(),
        actor(&auth),
        &id,
        &product,
    )
    .await?;
    Ok(ScimJson(json!({"licenses": outcome})).into_response())
}

async fn list_rules(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_tenant(&state, &id).await?;
    let rules = state.store.rule_rows(&id).await?;
    Ok(ScimJson(json!({"tenant": id, "rules": rules})).into_response())
}

async fn put_rule(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, name)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let body = read_json(req, state.config.max_body_bytes).await?;
    let (rule, outcome) = model::put_rule(
        &state.store,
        &*state.engine_clock(),
        actor(&auth),
        &id,
        &name,
        body,
    )
    .await?;
    Ok(ScimJson(json!({"rule": rule, "licenses": outcome})).into_response())
}

async fn delete_rule(
    State(state): State<Shared>,
    auth: AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let outcome = model::delete_rule(
        &state.store,
        &*state.engine_clock(),
        actor(&auth),
        &id,
        &name,
    )
    .await?;
    Ok(ScimJson(json!({"licenses": outcome})).into_response())
}

async fn usage(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let usage = model::usage(&state.store, &*state.engine_clock(), &id).await?;
    Ok(ScimJson(usage).into_response())
}

async fn user_licenses(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_tenant(&state, &id).await?;
    let out = model::user_licenses(&state.store, &id, &user).await?;
    Ok(ScimJson(out).into_response())
}

async fn put_model(
    State(state): State<Shared>,
    auth: AdminAuth,
    Query(dry): Query<DryRun>,
    req: Request,
) -> ApiResult<Response> {
    let dry_run = dry.on()?;
    let body = read_json(req, state.config.max_body_bytes).await?;
    let spec = licensing::spec::Spec::from_json(&body)?;
    let applied = model::apply(
        &state.store,
        &*state.engine_clock(),
        actor(&auth),
        spec,
        dry_run,
    )
    .await?;
    Ok(ScimJson(json!(applied)).into_response())
}

async fn get_model(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let products = state.store.products().await?;
    let products: Vec<Value> = products
        .iter()
        .map(|p| {
            json!({
                "key": p.key.as_str(),
                "name": p.name,
                "plans": crate::store::licensing::plans_json(&p.plans),
            })
        })
        .collect();
    Ok(ScimJson(json!({"products": products})).into_response())
}

async fn run_scheduler(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let out = model::run_due(&state.store, &*state.engine_clock()).await?;
    Ok(ScimJson(json!({"tenants": out})).into_response())
}

/// Moves the test clock (only when the server runs on one: `--test-clock`), then runs the
/// term transitions that became due, as the scheduler would.
async fn move_clock(
    State(state): State<Shared>,
    _auth: AdminAuth,
    req: Request,
) -> ApiResult<Response> {
    let Some(clock) = state.manual_clock.clone() else {
        return Err(ApiError::NotFound(
            "the clock can only be moved when the server runs with --test-clock".into(),
        ));
    };
    let body = read_json(req, state.config.max_body_bytes).await?;
    let secs = body
        .get("advance_seconds")
        .and_then(Value::as_i64)
        .filter(|s| (0..=100 * 365 * 86_400).contains(s))
        .ok_or_else(|| {
            scim::Error::InvalidValue(
                "'advance_seconds' must be a whole number of seconds from 0 to 100 years".into(),
            )
        })?;
    clock.advance(time::Duration::seconds(secs));
    let out = model::run_due(&state.store, &clock).await?;
    Ok(ScimJson(json!({
        "now": crate::clock::stamp(crate::clock::Clock::now(&clock)),
        "tenants": out,
    }))
    .into_response())
}

async fn require_tenant(state: &Shared, id: &str) -> ApiResult<()> {
    if state.store.tenant(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {id} not found")));
    }
    Ok(())
}

pub(super) fn name_field(body: &Value, field: &str, required: bool) -> ApiResult<Option<String>> {
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
pub(super) async fn revoke_credential(
    state: &Shared,
    kind: Credential,
    tenant: &str,
    id: &str,
) -> ApiResult<Response> {
    let now = crate::clock::stamp(state.engine_clock().now());
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
    match kind {
        Credential::Scim => state.tokens.forget_all(),
        Credential::App => state.apps.forget_all(),
    }
    Ok(empty(StatusCode::NO_CONTENT))
}
