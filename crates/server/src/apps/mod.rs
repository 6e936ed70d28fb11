//! The application API: entitlement checks from in-memory snapshots, signed entitlement
//! tokens, app keys and activity.

pub mod http;
pub mod jwt;
pub mod snapshot;
pub mod store;
