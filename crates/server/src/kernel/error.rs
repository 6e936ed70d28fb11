//! The server's errors and the one table that maps each to `(HTTP status, scimType)`.
//! SCIM and admin-API errors share the body shape of RFC 7644 §3.12.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::kernel::store::StoreError;
use serde_json::Value;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A protocol error from the SCIM library.
    #[error(transparent)]
    Scim(#[from] scim::Error),
    /// The licensing model refused a value (bad key, unknown plan, bad rule filter…).
    #[error("{0}")]
    Model(#[from] licensing::Error),
    /// Well-formed, but it cannot be applied (a billing event naming an unknown plan…).
    #[error("{0}")]
    Unprocessable(String),
    /// No such resource in this tenant (also for resources of other tenants).
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness conflict.
    #[error("{0}")]
    Uniqueness(String),
    /// The resource is managed by someone else (a billing system owns the subscription).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` did not match.
    #[error("{0}")]
    PreconditionFailed(String),
    /// Missing or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// A sign-in refused: 401 whose body names the `reason` (`expired`, `wrong_audience`…).
    #[error("{detail}")]
    SignInRefused {
        /// The reason's name.
        reason: &'static str,
        /// What a person is told.
        detail: String,
    },
    /// Authenticated, but this credential may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Over the tenant's rate limit.
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request URI is too long.
    #[error("{0}")]
    UriTooLong(String),
    /// The request's headers are too large.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The server cannot serve this now (at its connection limit, the database out of
    /// reach); nothing was written, retry shortly.
    #[error("{0}")]
    Unavailable(String),
    /// A rejection raised below the handlers (by the HTTP layer or a framework extractor)
    /// with its own status, carried into this table's body.
    #[error("{detail}")]
    Rejected {
        /// The status it was raised with.
        status: StatusCode,
        /// What it said.
        detail: String,
    },
    /// The method is not supported here.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body's media type is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The endpoint exists in SCIM but is not offered here (e.g. `/Me`).
    #[error("{0}")]
    NotImplemented(String),
    /// The request took too long.
    #[error("the request timed out")]
    Timeout,
    /// The store is unavailable or failed; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unique(_) => {
                ApiError::Uniqueness("a resource with this unique value already exists".into())
            }
            StoreError::Nul => {
                ApiError::Scim(scim::Error::InvalidValue(StoreError::Nul.to_string()))
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                metrics::counter!("seatkeeper_database_unavailable_total").increment(1);
                ApiError::Unavailable(
                    "the database is unavailable; nothing was written; retry shortly".into(),
                )
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// The status and `scimType` of this error: the single mapping table.
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status_and_type().0
    }

    /// What a person is told (internal errors say nothing of their cause).
    pub fn detail(&self) -> String {
        self.body()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn status_and_type(&self) -> (StatusCode, Option<&'static str>) {
        match self {
            ApiError::Scim(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                e.scim_type_str(),
            ),
            ApiError::Model(licensing::Error::BadFilter(_)) => {
                (StatusCode::BAD_REQUEST, Some("invalidFilter"))
            }
            ApiError::Model(_) => (StatusCode::BAD_REQUEST, Some("invalidValue")),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, Some("invalidValue")),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            ApiError::Uniqueness(_) => (StatusCode::CONFLICT, Some("uniqueness")),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, None),
            ApiError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None),
            ApiError::Unauthorized(_) | ApiError::SignInRefused { .. } => {
                (StatusCode::UNAUTHORIZED, None)
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, None),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, None),
            ApiError::HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            ApiError::Rejected { status, .. } if *status == StatusCode::BAD_REQUEST => {
                (*status, Some("invalidSyntax"))
            }
            ApiError::Rejected { status, .. } => (*status, None),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, None),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("invalidSyntax"))
            }
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, None),
            ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        }
    }

    /// The SCIM error body.
    pub fn body(&self) -> serde_json::Value {
        let (status, scim_type) = self.status_and_type();
        let mut body = scim::error::error_body(status.as_u16(), scim_type, &self.to_string());
        if let ApiError::SignInRefused { reason, .. } = self {
            body["reason"] = Value::String((*reason).to_string());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_type();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let mut resp = (status, ScimJson(self.body())).into_response();
        match &self {
            ApiError::Unauthorized(_) | ApiError::SignInRefused { .. } => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"seatkeeper\""),
                );
                if matches!(self, ApiError::SignInRefused { .. }) {
                    resp.extensions_mut()
                        .insert(crate::kernel::throttle::NotTheCallers);
                }
            }
            ApiError::RateLimited { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            // The body was not read to its end: the connection cannot carry another request,
            // and the client is told so rather than finding out on its next one.
            ApiError::PayloadTooLarge(_) => {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Unavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON response with the SCIM media type.
pub struct ScimJson(pub Value);

impl IntoResponse for ScimJson {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/scim+json"),
            )],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_status() {
        let cases = [
            (
                ApiError::Scim(scim::Error::InvalidFilter("x".into())),
                400,
                Some("invalidFilter"),
            ),
            (
                ApiError::Scim(scim::Error::InvalidCursor("x".into())),
                400,
                Some("invalidCursor"),
            ),
            (ApiError::NotFound("x".into()), 404, None),
            (ApiError::Uniqueness("x".into()), 409, Some("uniqueness")),
            (ApiError::PreconditionFailed("x".into()), 412, None),
            (ApiError::Unauthorized("x".into()), 401, None),
            (ApiError::RateLimited { retry_after: 1 }, 429, None),
            (ApiError::PayloadTooLarge("x".into()), 413, None),
            (ApiError::UriTooLong("x".into()), 414, None),
            (ApiError::HeadersTooLarge("x".into()), 431, None),
            (ApiError::Unavailable("x".into()), 503, None),
            (
                ApiError::Rejected {
                    status: StatusCode::BAD_REQUEST,
                    detail: "x".into(),
                },
                400,
                Some("invalidSyntax"),
            ),
            (ApiError::Internal("secret detail".into()), 500, None),
        ];
        for (e, status, ty) in cases {
            assert_eq!(
                e.status_and_type(),
                (StatusCode::from_u16(status).unwrap(), ty)
            );
            let body = e.body();
            assert_eq!(body["status"], serde_json::json!(status.to_string()));
        }
        assert!(
            !ApiError::Internal("secret detail".into())
                .body()
                .to_string()
                .contains("secret")
        );
    }
}
