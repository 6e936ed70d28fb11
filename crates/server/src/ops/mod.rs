//! Operations: health, readiness, metrics, the OpenAPI document, the test clock.

pub mod http;
pub mod openapi;
