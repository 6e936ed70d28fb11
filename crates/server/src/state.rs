//! The application state: the domain services, the gate, configuration. Domain routers take
//! it as their state; it knows the services, never their routes.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::directory::service::Engine;
use crate::kernel::config::Config;
use crate::kernel::extract::{Gate, HasGate};

/// Shared state of the HTTP layer.
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Credentials and rate limits.
    pub gate: Gate,
    /// Tenants and their credentials.
    pub tenants: crate::tenants::service::Tenants,
    /// Events out: webhooks, the feed and the stream.
    pub events: crate::events::service::Events,
    /// The licensing model, subscriptions, rules, usage.
    pub licenses: crate::licenses::service::Licenses,
    /// Billing events in and billing settings.
    pub billing: crate::billing::service::Billing,
    /// The audit trail.
    pub audit: crate::audit::service::Audit,
    /// Reports across tenants.
    pub reports: crate::reports::service::Reports,
    /// The console's pages and sessions.
    pub console: crate::console::service::Console,
    /// The customer admin portal.
    pub portal: crate::portal::service::Portal,
    /// OIDC connections and sign-in.
    pub sso: crate::sso::service::Sso,
    /// Entitlement snapshots, for checks.
    pub snapshots: std::sync::Arc<crate::apps::snapshot::Snapshots>,
    /// Signs entitlement tokens.
    pub signer: crate::apps::jwt::Signer,
    /// Limits and knobs.
    pub config: Config,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// The test clock, when the server runs on one (`--test-clock`): `POST /api/v1/clock`
    /// moves it.
    pub manual_clock: Option<crate::kernel::clock::ManualClock>,
}

impl AppState {
    /// Whether the database answers (readiness).
    pub async fn ready(&self) -> bool {
        self.engine.store().ping().await
    }

    /// Builds the state.
    pub fn new(
        engine: Engine,
        config: Config,
        admin_hash: String,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        let engine = engine.with_user_cache(config.user_cache_bytes);
        let store = engine.store().clone();
        let snapshots =
            crate::apps::snapshot::Snapshots::new(store.clone(), engine.clock().clone());
        store.set_after_commit(snapshots.clone());
        let gate = Gate::new(store.clone(), &config, admin_hash);
        let tenants = crate::tenants::service::Tenants::new(store.clone(), engine.clock().clone());
        let licenses =
            crate::licenses::service::Licenses::new(store.clone(), engine.clock().clone());
        let audit = crate::audit::service::Audit::new(store.clone(), engine.clock().clone());
        let reports = crate::reports::service::Reports::new(
            licenses.clone(),
            tenants.clone(),
            audit.clone(),
            engine.clock().clone(),
        );
        let events = crate::events::service::Events::new(
            store.clone(),
            engine.clock().clone(),
            tenants.clone(),
            if config.allow_private_webhooks {
                crate::events::destination::Destinations::AnyAddress
            } else {
                crate::events::destination::Destinations::PublicOnly
            },
        );
        AppState {
            console: crate::console::service::Console::new(
                store.clone(),
                engine.clock().clone(),
                crate::console::service::Reads {
                    tenants: tenants.clone(),
                    licenses: licenses.clone(),
                    reports: reports.clone(),
                    events: events.clone(),
                    audit: audit.clone(),
                    engine: engine.clone(),
                },
            ),
            reports,
            gate,
            billing: crate::billing::service::Billing::new(
                store.clone(),
                engine.clock().clone(),
                &config,
                licenses.clone(),
                tenants.clone(),
            ),
            licenses,
            audit,
            tenants: tenants.clone(),
            events,
            signer: crate::apps::jwt::Signer::new(
                store.clone(),
                engine.clock().clone(),
                config.token_ttl,
            ),
            snapshots,
            sso: crate::sso::service::Sso::new(engine.clone()),
            portal: crate::portal::service::Portal::new(store.clone(), engine.clock().clone()),
            engine,
            config,
            metrics,
            manual_clock: None,
        }
    }
}

/// The shared state handle.
pub type Shared = Arc<AppState>;

impl HasGate for Shared {
    fn gate(&self) -> &Gate {
        &self.gate
    }
}
