//! Operations: health, readiness, metrics, the OpenAPI document, the test clock.

pub mod http;
pub mod metrics;
pub mod openapi;
