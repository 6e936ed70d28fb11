//! The directory: SCIM Users and Groups, their memberships, Bulk, listing and search.

pub mod cache;
pub mod http;
pub mod service;
pub mod store;
