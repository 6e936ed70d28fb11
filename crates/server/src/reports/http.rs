//! `/api/v1/usage` and `/api/v1/reports/compliance` (admin token).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::extract::{AdminAuth, Query, ScimJson};
use crate::reports::service::{self, Order, Sort};
use crate::state::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The header carrying a report's Ed25519 signature (base64, over the body's bytes).
pub const SIGNATURE_HEADER: &str = "seatkeeper-signature";
/// The header naming the public key that verifies it (as `seatkeeper audit public-key`
/// prints it).
pub const SIGNATURE_KEY_HEADER: &str = "seatkeeper-signature-key";

/// The routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(compliance))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Csv,
}

fn format_of(asked: Option<Format>, headers: &HeaderMap) -> Format {
    asked.unwrap_or_else(|| {
        let accept = crate::kernel::extract::header(headers, "accept").unwrap_or_default();
        if accept.contains("text/csv") {
            Format::Csv
        } else {
            Format::Json
        }
    })
}

fn csv_response(body: Vec<u8>, name: &str) -> Response {
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// Sort key (default name)
    #[param(inline)]
    sort: Option<Sort>,
    /// asc or desc
    #[param(inline)]
    order: Option<Order>,
    /// Rows per page
    limit: Option<usize>,
    /// The next page's cursor, from the previous answer
    cursor: Option<String>,
    /// json or csv (default: from Accept)
    #[param(inline)]
    format: Option<Format>,
    /// Only tenants whose name contains this
    q: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/usage",
    summary = "Every tenant's subscriptions with their usage, idle seats, utilisation and oldest waiter (?sort=name|utilisation|overage|waitlisted|idle|ends_at&order=asc|desc&limit&cursor&format=json|csv)",
    params(UsageQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/UsageReport"), content_type = "application/scim+json")),
    security(("admin" = [])),
    tag = "reports"
)]
async fn usage(
    State(state): State<Shared>,
    _auth: AdminAuth,
    headers: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Response> {
    let format = format_of(q.format, &headers);
    let sort = q.sort.unwrap_or(Sort::Name);
    let order = q.order.unwrap_or(Order::Asc);
    // A CSV export takes every row unless it asks for a page.
    let limit = q.limit.unwrap_or(match format {
        Format::Json => 100,
        Format::Csv => service::MAX_PAGE,
    });
    let page = state
        .reports
        .usage(sort, order, limit, q.cursor.as_deref(), q.q.as_deref())
        .await?;
    match format {
        Format::Json => {
            Ok(ScimJson(serde_json::to_value(&page).unwrap_or_default()).into_response())
        }
        Format::Csv => {
            let body =
                service::usage_csv(&page.usage).map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut resp = csv_response(body, "usage.csv");
            if let Some(next) = page.next_cursor
                && let Ok(v) = HeaderValue::from_str(&format!("<?cursor={next}>; rel=\"next\""))
            {
                resp.headers_mut().insert(header::LINK, v);
            }
            Ok(resp)
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ComplianceQuery {
    /// Only this tenant
    tenant: Option<String>,
    /// json or csv (default: from Accept)
    #[param(inline)]
    format: Option<Format>,
}

#[utoipa::path(
    get,
    path = "/api/v1/reports/compliance",
    summary = "Compliance findings (?tenant=ID&format=json|csv), signed: Seatkeeper-Signature is the Ed25519 signature of the body's bytes by the key `seatkeeper audit public-key` prints (also in Seatkeeper-Signature-Key)",
    params(ComplianceQuery),
    responses((status = 200, description = "Success", body = ref("#/components/schemas/ComplianceReport"), content_type = "application/json")),
    security(("admin" = [])),
    tag = "reports"
)]
async fn compliance(
    State(state): State<Shared>,
    _auth: AdminAuth,
    headers: HeaderMap,
    Query(q): Query<ComplianceQuery>,
) -> ApiResult<Response> {
    let report = state.reports.compliance(q.tenant.as_deref()).await?;
    let (body, mut resp) = match format_of(q.format, &headers) {
        Format::Json => {
            let body =
                serde_json::to_vec(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
            let resp = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body.clone(),
            )
                .into_response();
            (body, resp)
        }
        Format::Csv => {
            let body = service::findings_csv(&report.findings)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            (body.clone(), csv_response(body, "compliance.csv"))
        }
    };
    // Signed as sent: an auditor checks these exact bytes against the server's audit key.
    let (signature, key) = state.reports.sign(&body).await?;
    for (name, value) in [(SIGNATURE_HEADER, signature), (SIGNATURE_KEY_HEADER, key)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}
