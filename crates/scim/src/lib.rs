//! The SCIM 2.0 protocol as a library, with no I/O.
//!
//! - [`schema`]: the User, Enterprise User and Group schemas and attribute characteristics.
//! - [`filter`]: the RFC 7644 §3.4.2.2 filter grammar: parse, print, validate, evaluate.
//! - [`sql`]: translation of filters to SQL over indexed columns, with exactness tracking.
//! - [`patch`]: RFC 7644 §3.5.2 PATCH, including the forms Entra ID and Okta send.
//! - [`resource`]: input normalisation and `attributes`/`excludedAttributes` projection.
//! - [`list`]: list and search parameters, sorting, index and cursor (RFC 9865) pagination.
//! - [`error`]: protocol errors and their `(status, scimType)` wire form.
//! - [`text`]: what text may be: NFC normalisation, and the characters names refuse.
#![warn(missing_docs)]

pub mod error;
pub mod filter;
pub mod list;
pub mod patch;
pub mod resource;
pub mod schema;
pub mod sql;
pub mod text;

pub use error::{Error, Result, ScimType};
