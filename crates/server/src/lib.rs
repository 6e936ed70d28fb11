//! seatkeeper: SCIM 2.0 provisioning joined to licensing. See `ARCHITECTURE.md` for the map.

pub mod app;
pub mod apps;
pub mod audit;

pub mod billing;
pub mod demo;
pub mod directory;
pub mod events;
pub mod kernel;
pub mod licenses;
pub mod ops;
pub mod tenants;

use std::sync::Arc;

use directory::service::Engine;
use kernel::clock::{self, SharedClock};
use kernel::config::Config;
use kernel::store::Store;

/// Builds the HTTP application over a store.
pub fn app(
    store: Store,
    clock: SharedClock,
    config: Config,
    admin_hash: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> axum::Router {
    let engine = Engine::new(store, clock);
    let state = Arc::new(app::AppState::new(engine, config, admin_hash, metrics));
    app::router(state)
}

/// Builds the HTTP application on a test clock that `POST /api/v1/clock` moves.
pub fn app_on_test_clock(
    store: Store,
    clock: clock::ManualClock,
    config: Config,
    admin_hash: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> axum::Router {
    let engine = Engine::new(store, Arc::new(clock.clone()));
    let mut state = app::AppState::new(engine, config, admin_hash, metrics);
    state.manual_clock = Some(clock);
    app::router(Arc::new(state))
}

/// Runs due term transitions (trial and term ends, grace ends) now and then every
/// `every`, for as long as the process lives. Catches up at start: whatever fell due while
/// the server was down is applied on the first tick.
pub fn spawn_scheduler(
    store: Store,
    clock: SharedClock,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match licenses::service::Licenses::new(store.clone(), clock.clone())
                .run_due()
                .await
            {
                Ok(done) => {
                    for (tenant, outcome) in done {
                        tracing::info!(%tenant, changed = outcome.total(), "term transitions applied");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler tick failed; retrying"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Installs the Prometheus recorder (once per process).
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&buckets)
        .ok()?
        .install_recorder()
        .ok()
}
