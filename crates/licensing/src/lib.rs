//! seatkeeper's licensing model as a library, with no I/O: given the same inputs and the same
//! instant, the same decisions.
//!
//! - [`model`]: products, plans (ranked tiers), entitlements, subscriptions, assignment rules.
//! - [`rules`]: which plan each user should hold (rules are SCIM filters over the user).
//! - [`seats`]: who holds an active seat and who waits, under hard or soft enforcement.
//! - [`lifecycle`]: terms, trials, grace and expiry as functions of time.
//! - [`entitlements`]: effective features and limits, and feature checks with reasons.
//! - [`spec`]: the model as code (TOML or JSON), validated, and the diff between two versions.
//!
//! Status: this is the first step of issue 3; the engine that persists these decisions in the
//! server is not wired in yet.
#![warn(missing_docs)]

pub mod entitlements;
pub mod error;
pub mod lifecycle;
pub mod model;
pub mod rules;
pub mod seats;
pub mod spec;

pub use error::{Error, Result};
