//! Billing and CRM events in: verified, reduced to subscription changes, applied once.

pub mod http;
pub mod service;
pub mod store;
