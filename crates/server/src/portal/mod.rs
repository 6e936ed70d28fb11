//! The customer admin portal: a single-use link starts an 8-hour session for one tenant's IT
//! admin, who sets up SCIM (their own token), sees their seats, waitlist and idle seats, why
//! each user holds what they hold, and their audit trail — nothing of any other tenant.

pub mod http;
pub mod pages;
pub mod service;
pub mod store;
