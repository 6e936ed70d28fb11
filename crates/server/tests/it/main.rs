//! seatkeeper's integration tests: one binary, one module per domain, one harness.
//!
//! - [`harness`]: stores on both backends, the in-process app and its request helper, the
//!   SCIM and licensing helpers (`both_backends!` runs a body on SQLite and PostgreSQL).
//! - [`binary`]: the real `seatkeeper` binary (CLI and server on `127.0.0.1:0`) and an HTTP
//!   client for it.

#[macro_use]
extern crate seatkeeper;

mod binary;
mod hardening;
mod harness;
mod oidc;
mod openapi;

pub(crate) use harness as common;

mod access;
mod admin_audit;
mod apps;
mod architecture;
mod billing;
mod browser;
mod e2e;
mod e2e_access;
mod e2e_apps;
mod e2e_cli;
mod e2e_deploy;
mod e2e_events;
mod e2e_hardening;
mod e2e_licensing;
mod e2e_openapi;
mod e2e_pg_tls;
mod faults;
mod licensing;
mod reports;
mod scim;
