//! seatkeeper: SCIM 2.0 provisioning joined to licensing. See `ARCHITECTURE.md` for the map.

pub(crate) mod app;
pub use app::openapi;
pub(crate) mod apps;
pub(crate) mod audit;

pub(crate) mod billing;
pub(crate) mod console;
pub(crate) mod demo;
pub(crate) mod directory;
pub(crate) mod events;
pub(crate) mod jobs;
pub(crate) mod kernel;
pub(crate) mod licenses;
pub(crate) mod ops;
pub(crate) mod portal;
pub(crate) mod reports;
pub(crate) mod sso;
pub(crate) mod state;
pub(crate) mod tenants;
pub mod transport;
#[doc(hidden)]
#[macro_use]
pub mod testing;

#[cfg(test)]
mod store_contract;

use std::sync::Arc;

#[doc(hidden)]
pub use kernel::db::P as __P;

pub use audit::service::{Audit, Verified};
pub use demo::load as load_demo;
pub use events::destination::Destinations;

/// The git commit this binary was built from ("unknown" outside a checkout).
pub const BUILD_COMMIT: &str = env!("SEATKEEPER_COMMIT");

/// `seatkeeper --version`: the version and the commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SEATKEEPER_COMMIT"),
    ")"
);
pub use events::dispatcher::DispatchConfig;
pub use jobs::{Jobs, Schedule, system_clock};
pub use kernel::auth::{Credential, generate_token, hash_token};
pub use kernel::chain::{AuditRow, SignedHead, VENDOR, public_key, signature_holds};
pub use kernel::clock::{Clock, ManualClock, SharedClock};
pub use kernel::config::Config;
pub use kernel::crypto;
pub use kernel::ids::Instant;
pub use kernel::ids::Name;
pub use kernel::scopes::{Scope, Scopes};
pub use kernel::secret::{redact_url, scrub as scrub_secret};
pub use kernel::signing::{standard_sign, standard_verify, stripe_sign};
pub use kernel::store::{Actor, Open, Store, StoreError, StoreOptions};
pub use kernel::throttle::parse_trusted as parse_trusted_proxies;
pub use licenses::import::{
    Format as ImportFormat, ImportReport, ImportRow, import_text, parse as parse_import,
};
pub use licenses::reconcile::{
    differences_text, parse_uses, uses_csv as reconcile_csv, uses_json as reconcile_json,
};
pub use licenses::service::{Licenses, plan_text};
pub use tenants::service::{CreatedToken, Tenants, admin_token_hash};
pub use tenants::store::TenantRow;

use directory::service::Engine;

/// Entry points for the fuzz targets (`fuzz/`): the parsers that take a stranger's bytes,
/// called as the endpoints call them. Each returns whether the input was accepted; none may
/// panic.
#[doc(hidden)]
pub mod fuzzing {
    /// A generic billing event body, with its `webhook-id`.
    pub fn billing_generic(body: &[u8], webhook_id: Option<&str>) -> bool {
        crate::kernel::extract::json_from_bytes(body)
            .and_then(|v| crate::billing::service::parse_generic(&v, webhook_id))
            .is_ok()
    }

    /// A Stripe event body, against one mapped price and one mapped customer.
    pub fn billing_stripe(body: &[u8]) -> bool {
        let mut maps = crate::billing::store::StripeMaps::default();
        maps.prices
            .insert("price_pro".into(), ("workspace".into(), "pro".into()));
        maps.customers.insert("cus_1".into(), "tenant-1".into());
        crate::kernel::extract::json_from_bytes(body)
            .and_then(|v| crate::billing::service::parse_stripe(&v, &maps))
            .is_ok()
    }

    /// Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    pub fn standard_headers(id: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
        crate::kernel::signing::standard_verify(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()],
            Some(id),
            Some(timestamp),
            Some(signature),
            body,
            1_700_000_000,
            300,
        )
        .is_ok()
    }

    /// A `Stripe-Signature` header.
    pub fn stripe_header(header: &str, body: &[u8]) -> bool {
        crate::kernel::signing::stripe_verify(
            &["whsec_stripe_test_secret".to_string()],
            Some(header),
            body,
            1_700_000_000,
            300,
        )
        .is_ok()
    }

    /// A JSON body as every endpoint reads one (duplicate keys refused).
    pub fn json_body(body: &[u8]) -> bool {
        crate::kernel::extract::json_from_bytes(body).is_ok()
    }
}
use kernel::clock;

/// An application: its router and its background tasks (drop it to stop them, or call
/// [`jobs::Jobs::shutdown`] for an orderly stop).
pub struct App {
    /// The HTTP application.
    pub router: axum::Router,
    /// Its background tasks.
    pub jobs: jobs::Jobs,
}

/// Builds the HTTP application over a store, with the background tasks every app needs.
pub fn app(
    store: Store,
    clock: SharedClock,
    config: Config,
    admin_hash: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> App {
    build(store, clock, None, config, admin_hash, metrics)
}

/// Builds the HTTP application on a test clock that `POST /api/v1/clock` moves.
pub fn app_on_test_clock(
    store: Store,
    clock: clock::ManualClock,
    config: Config,
    admin_hash: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> App {
    let shared: SharedClock = Arc::new(clock.clone());
    build(store, shared, Some(clock), config, admin_hash, metrics)
}

fn build(
    store: Store,
    clock: SharedClock,
    manual: Option<clock::ManualClock>,
    config: Config,
    admin_hash: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> App {
    let activity_every = config.activity_flush;
    let history = (config.usage_retention_days, config.usage_sample_every);
    let engine =
        Engine::new(store.clone(), clock.clone()).with_limits(directory::service::ResourceLimits {
            max_attribute_bytes: config.max_attribute_bytes,
            max_resource_bytes: config.max_resource_bytes,
            max_page_bytes: config.max_page_bytes,
        });
    let mut state = app::AppState::new(engine, config, admin_hash, metrics);
    state.manual_clock = manual;
    let mut jobs = jobs::Jobs::for_app(store, clock, state.snapshots.clone(), activity_every);
    jobs.sample_usage(history.0, history.1);
    App {
        router: app::router(Arc::new(state)),
        jobs,
    }
}

/// Installs the Prometheus recorder (once per process).
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&buckets)
        .ok()?
        // A gauge no longer set (a tenant gone from the labelled top) leaves the exposition.
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(ops::metrics::STALE_AFTER),
        )
        .install_recorder()
        .ok()?;
    ops::metrics::describe();
    Some(handle)
}
