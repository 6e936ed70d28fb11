//! `/api/v1`: the licensing model, subscriptions, rules, usage and explanations (admin token).

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::app::Shared;
use crate::kernel::error::ApiResult;
use crate::kernel::extract::{AdminAuth, ScimJson, read_json};
use crate::licenses::service as model;

/// The admin routes.
pub fn routes() -> Router<Shared> {
    Router::new()
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
    state.tenants.require(&id).await?;
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
    state.tenants.require(&id).await?;
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
    state.tenants.require(&id).await?;
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
                "plans": crate::licenses::store::plans_json(&p.plans),
            })
        })
        .collect();
    Ok(ScimJson(json!({"products": products})).into_response())
}

async fn run_scheduler(State(state): State<Shared>, _auth: AdminAuth) -> ApiResult<Response> {
    let out = model::run_due(&state.store, &*state.engine_clock()).await?;
    Ok(ScimJson(json!({"tenants": out})).into_response())
}
