//! The audit trail: queries, exports, verification and retention.

pub mod http;
pub mod service;
pub mod store;
