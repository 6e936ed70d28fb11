//! Server configuration: flags and `SEATKEEPER_*` environment variables (see `main.rs`).

use std::time::Duration;

/// Limits and knobs of a running server.
#[derive(Clone)]
pub struct Config {
    /// Public base URL (scheme://host[:port]) used in `meta.location`; derived from the
    /// `Host` header when unset.
    pub public_url: Option<String>,
    /// Largest request body, in bytes (Bulk has its own limit).
    pub max_body_bytes: usize,
    /// Largest Bulk request body, in bytes (advertised as `bulk.maxPayloadSize`).
    pub bulk_max_payload: usize,
    /// Most operations in one Bulk request (advertised as `bulk.maxOperations`).
    pub bulk_max_operations: usize,
    /// Sustained SCIM requests per second per tenant.
    pub rate_per_second: u32,
    /// Burst of SCIM requests per tenant.
    pub rate_burst: u32,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Secret of the generic billing endpoint (Standard Webhooks), besides stored ones.
    pub billing_secret: Option<String>,
    /// Signing secret of the Stripe endpoint, besides a stored one.
    pub stripe_secret: Option<String>,
    /// Largest distance, in seconds, between a signed event's timestamp and now.
    pub signature_tolerance: i64,
    /// Sustained application API requests (checks, entitlements, tokens) per second per
    /// tenant.
    pub app_rate_per_second: u32,
    /// Burst of application API requests per tenant.
    pub app_rate_burst: u32,
    /// How long a signed entitlement token lives.
    pub token_ttl: Duration,
    /// How often users seen by applications are written (`last_seen`).
    pub activity_flush: Duration,
    /// Most bytes of rendered users kept for `GET /Users/{id}` (0: none).
    pub user_cache_bytes: u64,
    /// Days of usage history kept (0: forever).
    pub usage_retention_days: u32,
    /// How often the usage history sampler looks at the tenants that changed (zero: no
    /// usage history is kept).
    pub usage_sample_every: Duration,
    /// Longest string value of a SCIM attribute, in bytes.
    pub max_attribute_bytes: usize,
    /// Largest SCIM resource as JSON, in bytes.
    pub max_resource_bytes: usize,
    /// Largest list page as JSON, in bytes (a page stops early rather than exceed it).
    pub max_page_bytes: usize,
    /// Failed authentications allowed per client address per minute before it is answered
    /// 429 (0: no limit).
    pub auth_failures_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether webhooks may be registered for and delivered to loopback, private,
    /// link-local and metadata addresses (off: server-side request forgery).
    pub allow_private_webhooks: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| super::secret::REDACTED);
        f.debug_struct("Config")
            .field("public_url", &self.public_url)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("bulk_max_payload", &self.bulk_max_payload)
            .field("bulk_max_operations", &self.bulk_max_operations)
            .field("rate_per_second", &self.rate_per_second)
            .field("rate_burst", &self.rate_burst)
            .field("request_timeout", &self.request_timeout)
            .field("billing_secret", &hidden(&self.billing_secret))
            .field("stripe_secret", &hidden(&self.stripe_secret))
            .field("signature_tolerance", &self.signature_tolerance)
            .field("app_rate_per_second", &self.app_rate_per_second)
            .field("app_rate_burst", &self.app_rate_burst)
            .field("token_ttl", &self.token_ttl)
            .field("activity_flush", &self.activity_flush)
            .field("user_cache_bytes", &self.user_cache_bytes)
            .field("usage_retention_days", &self.usage_retention_days)
            .field("usage_sample_every", &self.usage_sample_every)
            .field("max_attribute_bytes", &self.max_attribute_bytes)
            .field("max_resource_bytes", &self.max_resource_bytes)
            .field("max_page_bytes", &self.max_page_bytes)
            .field("auth_failures_per_minute", &self.auth_failures_per_minute)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allow_private_webhooks", &self.allow_private_webhooks)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_url: None,
            max_body_bytes: 1024 * 1024,
            bulk_max_payload: 4 * 1024 * 1024,
            bulk_max_operations: 1000,
            rate_per_second: 100,
            rate_burst: 1000,
            request_timeout: Duration::from_secs(30),
            billing_secret: None,
            stripe_secret: None,
            signature_tolerance: 300,
            app_rate_per_second: 100_000,
            app_rate_burst: 200_000,
            token_ttl: Duration::from_secs(300),
            activity_flush: Duration::from_secs(5),
            user_cache_bytes: 64 * 1024 * 1024,
            usage_retention_days: 400,
            usage_sample_every: Duration::from_secs(5),
            max_attribute_bytes: 64 * 1024,
            max_resource_bytes: 128 * 1024,
            max_page_bytes: 4 * 1024 * 1024,
            auth_failures_per_minute: 20,
            trusted_proxies: Vec::new(),
            allow_private_webhooks: false,
        }
    }
}
