//! Errors of the SCIM protocol layer and their wire form (RFC 7644 §3.12).

use serde_json::{Value, json};

/// The URN of the SCIM error message schema (RFC 7644 §3.12).
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The `scimType` keywords of RFC 7644 §3.12, table 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    /// The filter syntax was invalid or the attribute and comparison combination is unsupported.
    InvalidFilter,
    /// The filter yields more results than the server is willing to process.
    TooMany,
    /// A value violates a uniqueness constraint.
    Uniqueness,
    /// The attempted modification is not compatible with the attribute's mutability.
    Mutability,
    /// The request body message structure was invalid or did not conform to the schema.
    InvalidSyntax,
    /// The PATCH path attribute was invalid or malformed.
    InvalidPath,
    /// The PATCH path did not yield an attribute or value that could be operated on.
    NoTarget,
    /// A required value was missing or a value was not compatible with its type.
    InvalidValue,
    /// The specified SCIM protocol version is not supported.
    InvalidVers,
    /// The request cannot be completed because it contains sensitive information.
    Sensitive,
}

impl ScimType {
    /// The keyword as it appears in the `scimType` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

/// Every error the protocol layer can raise. Each maps to one HTTP status and `scimType`
/// through [`Error::status`] and [`Error::scim_type`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A filter could not be parsed or refers to something it may not.
    #[error("{0}")]
    InvalidFilter(String),
    /// A PATCH path could not be parsed or names no attribute.
    #[error("{0}")]
    InvalidPath(String),
    /// A PATCH operation found nothing to act on.
    #[error("{0}")]
    NoTarget(String),
    /// A value has the wrong type, is missing, or breaks a rule of its attribute.
    #[error("{0}")]
    InvalidValue(String),
    /// The body is not the message structure the endpoint expects.
    #[error("{0}")]
    InvalidSyntax(String),
    /// A change to a readOnly or immutable attribute.
    #[error("{0}")]
    Mutability(String),
    /// A request asks for more than the advertised limits allow.
    #[error("{0}")]
    TooMany(String),
    /// A query parameter (sortBy, count, cursor…) is malformed.
    #[error("{0}")]
    InvalidParameter(String),
    /// An RFC 9865 cursor is malformed or expired.
    #[error("{0}")]
    InvalidCursor(String),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidFilter(_)
            | Error::InvalidPath(_)
            | Error::NoTarget(_)
            | Error::InvalidValue(_)
            | Error::InvalidSyntax(_)
            | Error::Mutability(_)
            | Error::TooMany(_)
            | Error::InvalidParameter(_)
            | Error::InvalidCursor(_) => 400,
        }
    }

    /// The `scimType` keyword, where RFC 7644 defines one for this error.
    pub fn scim_type(&self) -> Option<ScimType> {
        match self {
            Error::InvalidFilter(_) => Some(ScimType::InvalidFilter),
            Error::InvalidPath(_) => Some(ScimType::InvalidPath),
            Error::NoTarget(_) => Some(ScimType::NoTarget),
            Error::InvalidValue(_) => Some(ScimType::InvalidValue),
            Error::InvalidSyntax(_) => Some(ScimType::InvalidSyntax),
            Error::Mutability(_) => Some(ScimType::Mutability),
            Error::TooMany(_) => Some(ScimType::TooMany),
            Error::InvalidParameter(_) => Some(ScimType::InvalidValue),
            // RFC 9865 §2.4 names the scimType `invalidCursor`.
            Error::InvalidCursor(_) => None,
        }
    }

    /// The `scimType` string on the wire, including RFC 9865's cursor keyword.
    pub fn scim_type_str(&self) -> Option<&'static str> {
        match self {
            Error::InvalidCursor(_) => Some("invalidCursor"),
            other => other.scim_type().map(ScimType::as_str),
        }
    }

    /// The error as a SCIM error body.
    pub fn to_body(&self) -> Value {
        error_body(self.status(), self.scim_type_str(), &self.to_string())
    }
}

/// Builds a SCIM error body (RFC 7644 §3.12). `status` is a string on the wire.
pub fn error_body(status: u16, scim_type: Option<&str>, detail: &str) -> Value {
    let mut body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = Value::String(t.to_string());
    }
    body
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
