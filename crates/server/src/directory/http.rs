//! `/scim/v2`: discovery, Users, Groups, search and Bulk (RFC 7644).

use std::collections::HashMap;

use crate::kernel::extract::Path;
use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use scim::list::{self, RawListParams};
use scim::resource::Projection;
use scim::schema::{self, BULK_REQUEST_SCHEMA, BULK_RESPONSE_SCHEMA};
use serde_json::{Value, json};

use crate::directory::service::Kind;
use crate::directory::service::{Ctx, Rendered, etag, etag_matches, resource_type};
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{ScimAuth, ScimJson, empty, read_json};
use crate::state::Shared;

/// Marker types so one generic handler serves both resource types.
pub trait KindMarker: Send + Sync + 'static {
    /// The kind.
    const KIND: Kind;
}
/// Users.
pub struct U;
/// Groups.
pub struct G;
impl KindMarker for U {
    const KIND: Kind = Kind::User;
}
impl KindMarker for G {
    const KIND: Kind = Kind::Group;
}

/// The `/scim/v2` routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/scim/v2/Schemas", get(schemas))
        .route("/scim/v2/Schemas/{id}", get(schema_by_id))
        .route("/scim/v2/ResourceTypes", get(resource_types))
        .route("/scim/v2/ResourceTypes/{name}", get(resource_type_by_name))
        .route("/scim/v2/Users", get(list_resources::<U>).post(create::<U>))
        .route("/scim/v2/Users/.search", post(search::<U>))
        .route(
            "/scim/v2/Users/{id}",
            get(get_one::<U>)
                .put(replace::<U>)
                .patch(patch::<U>)
                .delete(delete::<U>),
        )
        .route(
            "/scim/v2/Groups",
            get(list_resources::<G>).post(create::<G>),
        )
        .route("/scim/v2/Groups/.search", post(search::<G>))
        .route(
            "/scim/v2/Groups/{id}",
            get(get_one::<G>)
                .put(replace::<G>)
                .patch(patch::<G>)
                .delete(delete::<G>),
        )
        .route("/scim/v2/.search", post(search_all))
        .route("/scim/v2/Bulk", post(bulk))
        .route("/scim/v2/Me", axum::routing::any(me))
}

/// The query string's pairs, percent-decoded. A value that is not UTF-8 once decoded is
/// refused (a filter's as `invalidFilter`), never patched with U+FFFD and run.
fn query_pairs(raw: &Option<String>) -> ApiResult<Vec<(String, String)>> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(std::borrow::Cow::into_owned)
    };
    let mut out = Vec::new();
    for pair in raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(k) = decode(k) else {
            return Err(scim::Error::InvalidParameter(
                "the query string is not UTF-8 once percent-decoded".into(),
            )
            .into());
        };
        let Some(v) = decode(v) else {
            return Err(if k.eq_ignore_ascii_case("filter") {
                scim::Error::InvalidFilter("the filter is not UTF-8 once percent-decoded".into())
            } else {
                scim::Error::InvalidParameter(format!("{k}: not UTF-8 once percent-decoded"))
            }
            .into());
        };
        out.push((k, v));
    }
    Ok(out)
}

fn list_params(raw: &Option<String>) -> ApiResult<RawListParams> {
    let pairs = query_pairs(raw)?;
    Ok(RawListParams::from_pairs(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

fn projection(kind: Kind, raw: &Option<String>) -> ApiResult<Projection> {
    let p = list_params(raw)?;
    Ok(Projection::parse(
        resource_type(kind),
        p.attributes.as_deref(),
        p.excluded_attributes.as_deref(),
    )?)
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn resource_response(status: StatusCode, kind: Kind, r: &Rendered, proj: &Projection) -> Response {
    let body = proj.apply(resource_type(kind), &r.body);
    let mut resp = (status, ScimJson(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&r.location)
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn related_wanted(kind: Kind, proj: &Projection) -> bool {
    let rt = resource_type(kind);
    match kind {
        Kind::User => proj.wants(rt, "groups"),
        Kind::Group => proj.wants(rt, "members"),
    }
}

async fn list_resources<K: KindMarker>(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = list_params(&raw)?.parse(resource_type(K::KIND))?;
    let page = state.engine.list(&ctx, K::KIND, &q).await?;
    Ok(ScimJson(list::list_response(
        page.total,
        page.start_index,
        page.resources,
        page.next_cursor,
        None,
    ))
    .into_response())
}

async fn search<K: KindMarker>(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    req: Request,
) -> ApiResult<Response> {
    let body = read_json(req, state.config.max_body_bytes).await?;
    let q = RawListParams::from_search_body(&body)?.parse(resource_type(K::KIND))?;
    let page = state.engine.list(&ctx, K::KIND, &q).await?;
    Ok(ScimJson(list::list_response(
        page.total,
        page.start_index,
        page.resources,
        page.next_cursor,
        None,
    ))
    .into_response())
}

/// `POST /.search`: searches Users and Groups together (RFC 7644 §3.4.3). The filter is
/// applied to each type it is valid for; results are ordered by type, then as asked.
async fn search_all(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    req: Request,
) -> ApiResult<Response> {
    let body = read_json(req, state.config.max_body_bytes).await?;
    let raw = RawListParams::from_search_body(&body)?;
    let mut parsed = Vec::new();
    let mut first_err = None;
    for kind in [Kind::User, Kind::Group] {
        match raw.parse(resource_type(kind)) {
            Ok(q) => parsed.push((kind, q)),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if parsed.is_empty() {
        return Err(first_err
            .map(ApiError::from)
            .unwrap_or_else(|| ApiError::Internal("no resource type".into())));
    }
    let (start, count) = match parsed[0].1.paging {
        list::Paging::Index(s) => (s, parsed[0].1.count),
        list::Paging::Cursor(_) => {
            return Err(scim::Error::InvalidParameter("cursor pagination is offered per resource type; use /Users/.search or /Groups/.search".into()).into());
        }
    };
    let mut all = Vec::new();
    for (kind, mut q) in parsed {
        q.paging = list::Paging::Index(1);
        q.count = list::MAX_PAGE_SIZE;
        loop {
            let page = state.engine.list(&ctx, kind, &q).await?;
            let n = page.resources.len();
            all.extend(page.resources);
            let list::Paging::Index(s) = q.paging else {
                break;
            };
            if n < q.count || s + n > page.total {
                break;
            }
            if all.len() > 10 * list::MAX_PAGE_SIZE {
                return Err(scim::Error::TooMany("the search matches too many resources; narrow the filter or search one resource type".into()).into());
            }
            q.paging = list::Paging::Index(s + n);
        }
    }
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start - 1).take(count).collect();
    Ok(ScimJson(list::list_response(total, Some(start), page, None, None)).into_response())
}

async fn get_one<K: KindMarker>(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let proj = projection(K::KIND, &raw)?;
    if K::KIND == Kind::User && proj.is_default() {
        let r = state.engine.get_user_as_sent(&ctx, &id).await?;
        if let Some(resp) = not_modified(&headers, r.version) {
            return Ok(resp);
        }
        let mut resp = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/scim+json"),
            )],
            r.body.clone(),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    let r = state
        .engine
        .get(&ctx, K::KIND, &id, related_wanted(K::KIND, &proj))
        .await?;
    if let Some(resp) = not_modified(&headers, r.version) {
        return Ok(resp);
    }
    Ok(resource_response(StatusCode::OK, K::KIND, &r, &proj))
}

/// Whether the query string asks for a representation (`attributes` or `excludedAttributes`).
fn asks_for_attributes(raw: &Option<String>) -> bool {
    raw.as_deref().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, _)| k == "attributes" || k == "excludedAttributes")
    })
}

/// `304 Not Modified` when `If-None-Match` names this version.
fn not_modified(headers: &HeaderMap, version: i64) -> Option<Response> {
    let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    if !etag_matches(inm, version) {
        return None;
    }
    let mut resp = empty(StatusCode::NOT_MODIFIED);
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Some(resp)
}

async fn create<K: KindMarker>(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    req: Request,
) -> ApiResult<Response> {
    let raw = req.uri().query().map(str::to_string);
    let proj = projection(K::KIND, &raw)?;
    let body = read_json(req, state.config.max_body_bytes).await?;
    let r = state.engine.create(&ctx, K::KIND, &body).await?;
    Ok(resource_response(StatusCode::CREATED, K::KIND, &r, &proj))
}

/// PUT and PATCH: both take a body and `If-Match`, and answer the resource.
#[derive(Clone, Copy)]
enum Change {
    Replace,
    Patch,
}

async fn change<K: KindMarker>(
    state: Shared,
    ctx: Ctx,
    id: String,
    req: Request,
    how: Change,
) -> ApiResult<Response> {
    let raw = req.uri().query().map(str::to_string);
    let proj = projection(K::KIND, &raw)?;
    let im = if_match(req.headers());
    let body = read_json(req, state.config.max_body_bytes).await?;
    if matches!(how, Change::Patch) && K::KIND == Kind::Group && !asks_for_attributes(&raw) {
        // A group PATCH is answered 204 No Content (RFC 7644 §3.5.2), as Entra ID and Okta
        // expect: the whole group would carry every member, however few the PATCH touched.
        // Asking for `attributes` or `excludedAttributes` gets the group with 200.
        let stored = state
            .engine
            .patch_unrendered(&ctx, K::KIND, &id, &body, im.as_deref())
            .await?;
        let mut resp = empty(StatusCode::NO_CONTENT);
        if let Ok(v) = HeaderValue::from_str(&etag(stored.version)) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    let r = match how {
        Change::Replace => {
            state
                .engine
                .replace(&ctx, K::KIND, &id, &body, im.as_deref())
                .await?
        }
        Change::Patch => {
            state
                .engine
                .patch(&ctx, K::KIND, &id, &body, im.as_deref())
                .await?
        }
    };
    Ok(resource_response(StatusCode::OK, K::KIND, &r, &proj))
}

async fn replace<K: KindMarker>(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    change::<K>(state, ctx, id, req, Change::Replace).await
}

async fn patch<K: KindMarker>(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    change::<K>(state, ctx, id, req, Change::Patch).await
}

async fn delete<K: KindMarker>(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state
        .engine
        .delete(&ctx, K::KIND, &id, if_match(&headers).as_deref())
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn me() -> ApiError {
    ApiError::NotImplemented(
        "/Me is not offered: SCIM clients here are identity providers, not end users".into(),
    )
}

// ---- discovery (RFC 7644 §4): served without authentication; nothing tenant-specific ----

fn discovery_base(state: &Shared, headers: &HeaderMap) -> String {
    state.gate.scim_base(headers)
}

fn reject_filter(raw: &Option<String>) -> ApiResult<()> {
    if list_params(raw)?.filter.is_some() {
        return Err(ApiError::Forbidden(
            "filtering is not supported on discovery endpoints (RFC 7644 §4)".into(),
        ));
    }
    Ok(())
}

/// The ServiceProviderConfig document: it advertises exactly what this server does.
pub fn service_provider_config_doc(state: &Shared, base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {
            "supported": true,
            "maxOperations": state.config.bulk_max_operations,
            "maxPayloadSize": state.config.bulk_max_payload,
        },
        "filter": {"supported": true, "maxResults": list::MAX_PAGE_SIZE},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": list::DEFAULT_PAGE_SIZE,
            "maxPageSize": list::MAX_PAGE_SIZE,
        },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A per-tenant SCIM token created with `seatkeeper token create` or the admin API, sent as `Authorization: Bearer <token>`.",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        }
    })
}

async fn service_provider_config(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let base = discovery_base(&state, &headers);
    ScimJson(service_provider_config_doc(&state, &base)).into_response()
}

async fn schemas(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    reject_filter(&raw)?;
    let base = discovery_base(&state, &headers);
    let docs: Vec<Value> = schema::all_schemas()
        .iter()
        .map(|s| s.to_json(&base))
        .collect();
    Ok(ScimJson(list::list_response(docs.len(), Some(1), docs, None, None)).into_response())
}

async fn schema_by_id(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let base = discovery_base(&state, &headers);
    let s = schema::all_schemas()
        .into_iter()
        .find(|s| s.id.eq_ignore_ascii_case(&id))
        .ok_or_else(|| ApiError::NotFound(format!("schema {id} not found")))?;
    Ok(ScimJson(s.to_json(&base)).into_response())
}

async fn resource_types(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    reject_filter(&raw)?;
    let base = discovery_base(&state, &headers);
    let docs: Vec<Value> = [&*schema::USER_TYPE, &*schema::GROUP_TYPE]
        .iter()
        .map(|r| r.to_json(&base))
        .collect();
    Ok(ScimJson(list::list_response(docs.len(), Some(1), docs, None, None)).into_response())
}

async fn resource_type_by_name(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let base = discovery_base(&state, &headers);
    let rt = [&*schema::USER_TYPE, &*schema::GROUP_TYPE]
        .into_iter()
        .find(|r| r.name.eq_ignore_ascii_case(&name))
        .ok_or_else(|| ApiError::NotFound(format!("resource type {name} not found")))?;
    Ok(ScimJson(rt.to_json(&base)).into_response())
}

// ---- Bulk (RFC 7644 §3.7) ----

fn substitute_bulk_ids(v: &mut Value, ids: &HashMap<String, String>, missing: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Some(key) = s.strip_prefix("bulkId:") {
                match ids.get(key) {
                    Some(id) => *s = id.clone(),
                    None => missing.push(key.to_string()),
                }
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| substitute_bulk_ids(x, ids, missing)),
        Value::Object(o) => o
            .values_mut()
            .for_each(|x| substitute_bulk_ids(x, ids, missing)),
        _ => {}
    }
}

struct BulkOp {
    method: String,
    bulk_id: Option<String>,
    path: String,
    data: Value,
    version: Option<String>,
}

fn parse_bulk_op(i: usize, op: &Value) -> ApiResult<BulkOp> {
    let s = |k: &str| {
        scim::filter::get_ci(op, k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let method = s("method")
        .ok_or_else(|| scim::Error::InvalidSyntax(format!("operation {i}: 'method' is required")))?
        .to_ascii_uppercase();
    let path = s("path")
        .ok_or_else(|| scim::Error::InvalidSyntax(format!("operation {i}: 'path' is required")))?;
    let bulk_id = s("bulkId");
    if method == "POST" && bulk_id.is_none() {
        return Err(
            scim::Error::InvalidSyntax(format!("operation {i}: POST needs a 'bulkId'")).into(),
        );
    }
    Ok(BulkOp {
        method,
        bulk_id,
        path,
        data: scim::filter::get_ci(op, "data")
            .cloned()
            .unwrap_or(Value::Null),
        version: s("version"),
    })
}

async fn run_bulk_op(
    state: &Shared,
    ctx: &Ctx,
    op: &BulkOp,
) -> ApiResult<(StatusCode, Option<Rendered>)> {
    let path = op.path.trim_end_matches('/');
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let kind = match parts.next().unwrap_or_default() {
        "Users" => Kind::User,
        "Groups" => Kind::Group,
        other => {
            return Err(
                scim::Error::InvalidValue(format!("unsupported bulk path '/{other}'")).into(),
            );
        }
    };
    let id = parts.next();
    let engine = &state.engine;
    match (op.method.as_str(), id) {
        ("POST", None) => Ok((
            StatusCode::CREATED,
            Some(engine.create(ctx, kind, &op.data).await?),
        )),
        ("PUT", Some(id)) => Ok((
            StatusCode::OK,
            Some(
                engine
                    .replace(ctx, kind, id, &op.data, op.version.as_deref())
                    .await?,
            ),
        )),
        ("PATCH", Some(id)) => Ok((
            StatusCode::OK,
            Some(
                engine
                    .patch(ctx, kind, id, &op.data, op.version.as_deref())
                    .await?,
            ),
        )),
        ("DELETE", Some(id)) => {
            engine.delete(ctx, kind, id, op.version.as_deref()).await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        (m, _) => Err(scim::Error::InvalidValue(format!(
            "method {m} is not valid for bulk path '{}'",
            op.path
        ))
        .into()),
    }
}

async fn bulk(
    State(state): State<Shared>,
    ScimAuth(ctx): ScimAuth,
    req: Request,
) -> ApiResult<Response> {
    let body = read_json(req, state.config.bulk_max_payload).await?;
    let schemas_ok = scim::filter::get_ci(&body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(BULK_REQUEST_SCHEMA)));
    if !schemas_ok {
        return Err(scim::Error::InvalidSyntax(format!(
            "'schemas' must contain {BULK_REQUEST_SCHEMA}"
        ))
        .into());
    }
    let raw_ops = scim::filter::get_ci(&body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| scim::Error::InvalidSyntax("'Operations' must be a list".into()))?;
    if raw_ops.len() > state.config.bulk_max_operations {
        return Err(ApiError::PayloadTooLarge(format!(
            "the bulk request has {} operations; maxOperations is {}",
            raw_ops.len(),
            state.config.bulk_max_operations
        )));
    }
    let fail_on_errors = match scim::filter::get_ci(&body, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            scim::Error::InvalidSyntax("'failOnErrors' must be an integer >= 1".into())
        })? as usize),
    };
    let ops = raw_ops
        .iter()
        .enumerate()
        .map(|(i, op)| parse_bulk_op(i, op))
        .collect::<ApiResult<Vec<_>>>()?;
    let declared: Vec<String> = ops
        .iter()
        .filter(|o| o.method == "POST")
        .filter_map(|o| o.bulk_id.clone())
        .collect();

    let mut results: Vec<Option<Value>> = vec![None; ops.len()];
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    let mut errors = 0usize;
    let error_result = |op: &BulkOp, e: &ApiError| {
        let (status, _) = e.status_and_type();
        json!({"method": op.method, "bulkId": op.bulk_id, "status": status.as_u16().to_string(), "response": e.body()})
    };
    'outer: while !pending.is_empty() {
        let mut progressed = false;
        let mut still = Vec::new();
        for &i in &pending {
            let op = &ops[i];
            let mut resolved = BulkOp {
                method: op.method.clone(),
                bulk_id: op.bulk_id.clone(),
                path: op.path.clone(),
                data: op.data.clone(),
                version: op.version.clone(),
            };
            let mut missing = Vec::new();
            substitute_bulk_ids(&mut resolved.data, &ids, &mut missing);
            let mut path_v = Value::String(resolved.path.clone());
            if let Some((head, tail)) = resolved.path.rsplit_once('/') {
                let mut t = Value::String(tail.to_string());
                substitute_bulk_ids(&mut t, &ids, &mut missing);
                path_v = Value::String(format!("{head}/{}", t.as_str().unwrap_or_default()));
            }
            resolved.path = path_v.as_str().unwrap_or_default().to_string();
            let waiting = missing
                .iter()
                .any(|m| declared.contains(m) && !results_failed_for(&results, &ops, m));
            if !missing.is_empty() && waiting {
                still.push(i);
                continue;
            }
            progressed = true;
            let outcome = if missing.is_empty() {
                run_bulk_op(&state, &ctx, &resolved).await
            } else {
                Err(scim::Error::InvalidValue(format!(
                    "bulkId reference(s) {} cannot be resolved",
                    missing.join(", ")
                ))
                .into())
            };
            results[i] = Some(match outcome {
                Ok((status, rendered)) => {
                    let mut r = json!({"method": op.method, "status": status.as_u16().to_string()});
                    if let Some(b) = &op.bulk_id {
                        r["bulkId"] = json!(b);
                    }
                    if let Some(rendered) = rendered {
                        if let (Some(b), Some(id)) =
                            (&op.bulk_id, rendered.body.get("id").and_then(Value::as_str))
                        {
                            ids.insert(b.clone(), id.to_string());
                        }
                        r["location"] = json!(rendered.location);
                        r["version"] = json!(etag(rendered.version));
                    } else if let Some(rest) = resolved.path.strip_prefix('/') {
                        r["location"] = json!(format!("{}/{rest}", ctx.base_url));
                    }
                    r
                }
                Err(e) => {
                    if matches!(e, ApiError::Internal(_)) {
                        tracing::error!(request_id = %ctx.request_id, error = %e, "bulk operation failed");
                    }
                    errors += 1;
                    error_result(op, &e)
                }
            });
            if fail_on_errors.is_some_and(|n| errors >= n) {
                break 'outer;
            }
        }
        if !progressed {
            // Circular or unresolvable references (RFC 7644 §3.7.1).
            for &i in &still {
                let e: ApiError =
                    scim::Error::InvalidValue("circular or unresolvable bulkId reference".into())
                        .into();
                results[i] = Some(error_result(&ops[i], &e));
            }
            break;
        }
        pending = still;
    }
    let out: Vec<Value> = results.into_iter().flatten().collect();
    Ok(ScimJson(json!({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": out})).into_response())
}

fn results_failed_for(results: &[Option<Value>], ops: &[BulkOp], bulk_id: &str) -> bool {
    ops.iter().zip(results).any(|(op, r)| {
        op.bulk_id.as_deref() == Some(bulk_id)
            && r.as_ref()
                .and_then(|r| r.get("status"))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.starts_with('2'))
    })
}
