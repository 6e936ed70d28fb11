//! Tenants and their credentials (SCIM tokens, app keys).

pub mod http;
pub mod service;
pub mod store;
