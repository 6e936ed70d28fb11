//! What every domain uses and which imports no domain: the two database drivers and their
//! migrations, the transaction (tenant lock, audit append, outbox write), the one error table,
//! request extractors, the authentication-failure throttle, the clock, configuration, the process's cryptography (ring), secrets' redaction, signatures and the audit hash chain.

pub mod auth;
pub mod catalogue;
pub mod chain;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod csv_cell;
pub mod db;
pub mod error;
pub mod extract;
pub mod ids;
pub(crate) mod migrate;
pub mod scopes;
pub mod secret;
pub mod signing;
pub mod store;
pub mod throttle;
