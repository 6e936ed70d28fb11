//! seatkeeper: SCIM 2.0 provisioning joined to licensing. See `ARCHITECTURE.md` for the map.

pub mod app;
pub mod apps;
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
use kernel::chain as audit;
use kernel::clock::{self, SharedClock};
use kernel::config::Config;
use kernel::store::{self as store, Store};

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
            match licenses::service::run_due(&store, &*clock).await {
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

/// Verifies every tenant's audit chain (or one); returns `(tenant, records, Ok | first broken link)`.
/// A pruned chain is verified from its checkpoint, whose signature must verify with
/// `pinned` (a public key kept outside the database) or, without it, with the server's
/// own audit key.
pub async fn verify_audit(
    store: &Store,
    tenant: Option<&str>,
    pinned: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Vec<(String, i64, Result<(), audit::BrokenLink>)>, store::StoreError> {
    let tenants: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => store.tenants().await?.into_iter().map(|t| t.id).collect(),
    };
    let own = match pinned {
        Some(_) => None,
        None => Some(store.audit_key().await?.verifying_key()),
    };
    let key = pinned.or(own.as_ref());
    let mut out = Vec::new();
    for t in tenants {
        let mut pos = (0i64, audit::GENESIS.to_string());
        let mut result = Ok(());
        if let Some(cp) = store.audit_checkpoint(&t).await? {
            if key.is_some_and(|k| cp.verify(k)) {
                pos = (cp.seq, cp.hash.clone());
            } else {
                out.push((
                    t,
                    cp.seq,
                    Err(audit::BrokenLink {
                        seq: cp.seq,
                        reason: "the retention checkpoint's signature does not verify".into(),
                    }),
                ));
                continue;
            }
        }
        loop {
            let rows = store.audit_rows(&t, pos.0, 5000).await?;
            if rows.is_empty() {
                break;
            }
            match audit::verify_chain((pos.0, &pos.1), &rows) {
                Ok(next) => pos = next,
                Err(broken) => {
                    result = Err(broken);
                    break;
                }
            }
        }
        if result.is_ok()
            && let Some((seq, hash)) = store.audit_head(&t).await?
            && (seq != pos.0 || hash != pos.1)
        {
            result = Err(audit::BrokenLink {
                seq: pos.0 + 1,
                reason: format!("the chain ends at record {} but its tip says {seq}", pos.0),
            });
        }
        out.push((t, pos.0, result));
    }
    Ok(out)
}

/// Prunes audit records older than `days` for every tenant (or one), each behind a signed
/// checkpoint; returns what was done per tenant.
pub async fn prune_audit(
    store: &Store,
    clock: &dyn clock::Clock,
    days: u32,
    tenant: Option<&str>,
) -> Result<Vec<(String, Option<audit::Checkpoint>)>, store::StoreError> {
    let now = clock.now();
    let before = clock::stamp(now - time::Duration::days(i64::from(days)));
    let key = store.audit_key().await?;
    let tenants: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => store.tenants().await?.into_iter().map(|t| t.id).collect(),
    };
    let mut out = Vec::new();
    for t in tenants {
        let cp = store
            .prune_audit(&t, &before, &clock::stamp(now), key.clone())
            .await?;
        out.push((t, cp));
    }
    Ok(out)
}
