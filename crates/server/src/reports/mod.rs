//! Reports across tenants: seat usage of every subscription, and compliance findings signed
//! with the server's audit key.

pub mod http;
pub mod service;
