//! `/api/v1/tenants/{id}/audit`: the audit trail, queried and exported.

use crate::kernel::extract::{Path, Query};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::audit::service::{CSV_HEADER, audit_csv, audit_json};
use crate::kernel::chain::VENDOR;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, ScimJson};
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most events one feed page returns.
const MAX_PAGE: i64 = 1000;

/// The audit routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(tenant_audit))
        .routes(routes!(vendor_audit))
}

#[derive(serde::Deserialize)]
struct AuditParams {
    #[serde(flatten)]
    query: crate::audit::service::AuditQuery,
    after: Option<String>,
    limit: Option<i64>,
    format: Option<String>,
}

/// The audit filters as query parameters (written out: the filter set is flattened in).
impl utoipa::IntoParams for AuditParams {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        [
            ("from", Type::String, "At or after this instant (RFC 3339)"),
            ("to", Type::String, "At or before this instant (RFC 3339)"),
            ("actor", Type::String, "Who (at most 256 characters)"),
            (
                "action",
                Type::String,
                "What; `license.*` matches by prefix",
            ),
            (
                "resource_type",
                Type::String,
                "User, Group, License, Subscription, Rule…",
            ),
            ("resource_id", Type::String, "Which resource"),
            ("request_id", Type::String, "The request that did it"),
            (
                "user",
                Type::String,
                "Every record about this user: their own and their licenses'",
            ),
            ("after", Type::String, "The cursor of the previous page"),
            ("limit", Type::Integer, "Records per page (JSON)"),
            (
                "format",
                Type::String,
                "json (a page), jsonl or csv (the whole selection, streamed); default from Accept",
            ),
        ]
        .into_iter()
        .map(|(name, kind, about)| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .description(Some(about))
                .schema(Some(ObjectBuilder::new().schema_type(kind)))
                .build()
        })
        .collect()
    }
}

fn instant(name: &str, v: &Option<String>) -> ApiResult<Option<String>> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(crate::kernel::clock::stamp)
                .map_err(|_| {
                    ApiError::Scim(scim::Error::InvalidValue(format!(
                        "{name} '{s}' is not an RFC 3339 instant"
                    )))
                })
        })
        .transpose()
}

/// `GET /api/v1/tenants/{id}/audit`: filtered by time range, actor, action, resource and
/// request id; a page of JSON with a cursor, or the whole selection streamed as JSON Lines
/// (`format=jsonl`) or CSV (`format=csv`).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{id}/audit",
    summary = "Audit records (filters; JSON, JSON Lines or CSV)",
    params(("id" = String, Path, description = "The tenant's id"), AuditParams),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/AuditPage"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "audit"
)]
async fn tenant_audit(
    State(state): State<Shared>,
    _auth: AdminAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Query<AuditParams>,
) -> ApiResult<Response> {
    state.tenants.require(&id).await?;
    trail(&state, id, &headers, p).await
}

/// `GET /api/v1/audit`: the vendor chain (billing secrets, Stripe mappings, signing keys),
/// queried like a tenant's.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    summary = "The vendor audit chain: billing secrets, Stripe mappings, signing keys (filters as for a tenant)",
    params(AuditParams),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/AuditPage"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "audit"
)]
async fn vendor_audit(
    State(state): State<Shared>,
    _auth: AdminAuth,
    headers: HeaderMap,
    Query(p): Query<AuditParams>,
) -> ApiResult<Response> {
    trail(&state, VENDOR.to_string(), &headers, p).await
}

async fn trail(
    state: &Shared,
    id: String,
    headers: &HeaderMap,
    p: AuditParams,
) -> ApiResult<Response> {
    let mut q = p.query.clone();
    q.from = instant("from", &q.from)?;
    q.to = instant("to", &q.to)?;
    for (name, v) in [
        ("actor", &q.actor),
        ("action", &q.action),
        ("resource_type", &q.resource_type),
        ("resource_id", &q.resource_id),
        ("request_id", &q.request_id),
    ] {
        if v.as_ref().is_some_and(|s| s.len() > 256) {
            return Err(
                scim::Error::InvalidValue(format!("{name} is longer than 256 characters")).into(),
            );
        }
    }
    let after = match p.after.as_deref() {
        None | Some("") => 0,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::Scim(scim::Error::InvalidValue(format!(
                "after '{s}' is not a cursor this API gave"
            )))
        })?,
    };
    let accept = crate::kernel::extract::header(headers, "accept").unwrap_or_default();
    let format = match p.format.as_deref() {
        Some(f) => f.to_string(),
        None if accept.contains("text/csv") => "csv".into(),
        None if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") => {
            "jsonl".into()
        }
        None => "json".into(),
    };
    match format.as_str() {
        "json" => {
            let limit = p.limit.unwrap_or(100).clamp(1, MAX_PAGE);
            let rows = state.audit.query(&id, &q, after, limit).await?;
            let next = rows.last().map_or(after, |r| r.seq);
            let records: Vec<Value> = rows.iter().map(audit_json).collect();
            Ok(ScimJson(json!({
                "tenant": id, "records": records,
                "next_cursor": next.to_string(), "has_more": rows.len() as i64 == limit,
            }))
            .into_response())
        }
        "jsonl" | "csv" => {
            let csv = format == "csv";
            let audit = state.audit.clone();
            let start = (audit, id, q, after, false, csv);
            let body =
                futures::stream::unfold(start, |(audit, id, q, after, done, csv)| async move {
                    if done {
                        return None;
                    }
                    let mut chunk = String::new();
                    match audit.query(&id, &q, after, 1000).await {
                        Ok(rows) => {
                            let last = rows.last().map_or(after, |r| r.seq);
                            for r in &rows {
                                if csv {
                                    chunk.push_str(&audit_csv(r));
                                } else {
                                    chunk.push_str(&audit_json(r).to_string());
                                    chunk.push('\n');
                                }
                            }
                            let finished = rows.len() < 1000;
                            Some((
                                Ok::<_, std::io::Error>(Bytes::from(chunk)),
                                (audit, id, q, last, finished, csv),
                            ))
                        }
                        Err(e) => Some((
                            Err(std::io::Error::other(e.to_string())),
                            (audit, id, q, after, true, csv),
                        )),
                    }
                });
            let head =
                futures::stream::iter(csv.then(|| Ok(Bytes::from_static(CSV_HEADER.as_bytes()))));
            let body = axum::body::Body::from_stream(futures::StreamExt::chain(head, body));
            let ct = if csv {
                "text/csv; charset=utf-8"
            } else {
                "application/x-ndjson"
            };
            Ok(([(axum::http::header::CONTENT_TYPE, ct)], body).into_response())
        }
        other => Err(scim::Error::InvalidValue(format!(
            "format '{other}' must be json, jsonl or csv"
        ))
        .into()),
    }
}
