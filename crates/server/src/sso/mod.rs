//! Single sign-on: each tenant's OIDC connection, and sign-in with just-in-time
//! provisioning through the same engine (and seat check) as SCIM.

pub mod http;
pub mod keys;
pub mod service;
pub mod store;
