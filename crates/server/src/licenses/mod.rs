//! Licensing: the catalogue, subscriptions, assignment rules, licenses and the decisions
//! that keep them in step with the directory.

pub mod board;
pub mod brake;
pub mod decide;
pub mod history;
pub mod http;
pub mod import;
pub mod reconcile;
pub mod roles;
pub mod sampler;
pub mod service;
pub mod store;
pub mod usage;
