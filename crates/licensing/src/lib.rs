//! seatkeeper's licensing model as a library, with no I/O: given the same inputs and the same
//! instant, the same decisions.
//!
//! - [`model`]: products, plans (ranked tiers), entitlements, subscriptions, assignment rules.
//! - [`rules`]: which plan each user should hold (rules are SCIM filters over the user).
//! - [`seats`]: who holds an active seat and who waits, under hard or soft enforcement.
//! - [`lifecycle`]: terms, trials, grace and expiry as functions of time.
//! - [`entitlements`]: effective features and limits, and the answer to an application's
//!   check (feature or limit) with a reason.
//! - [`roles`]: roles given by role rules or SCIM `roles`, and permission checks.
//! - [`spec`]: the model as code (TOML or JSON), validated, and the diff between two versions.
//!
//! The server persists these decisions (`crates/server/src/licensing.rs`) and answers checks
//! from an in-memory snapshot built on [`entitlements::answer`].
#![warn(missing_docs)]

pub mod entitlements;
pub mod error;
pub mod lifecycle;
pub mod model;
pub mod roles;
pub mod rules;
pub mod seats;
pub mod spec;

pub use error::{Error, Result};
