//! Every background task, started here and stopped here in one orderly shutdown:
//!
//! | task | what it does | started by |
//! |---|---|---|
//! | `snapshots` | keeps entitlement snapshots current (commits, `NOTIFY`, a 500 ms tick) and writes batched `last_seen` | every app |
//! | `listener` | PostgreSQL `LISTEN` for other nodes' commits | every app on PostgreSQL |
//! | `outside` | looks, every [`OUTSIDE_LOOK`], for commits another process made to the SQLite file (they make cached reads stale) | every app on SQLite |
//! | `history` | usage history: points for the tenants that changed (each minute's last counts), every subscription hourly, retention | every app |
//! | `scheduler` | term transitions (trial and term ends, grace ends), catching up at start | the server |
//! | `dispatcher` | outbound webhooks: fan-out, claim, send, retry | the server |
//! | `retention` | prunes audit records older than `--audit-retention-days`, hourly | the server, when set |
//! | `heads` | signs the head of every audit chain that moved, every `--audit-head-seconds` | the server |
//! | `metrics` | the seat, outbox and snapshot gauges, every `--metrics-interval` | the server |
//!
//! The SQLite writer and checkpoint threads belong to the store (`kernel::db`) and end with it.
//! Time comes from the clock the app runs on (the test clock under `--test-clock`).

use std::sync::Arc;
use std::time::Duration;

use crate::apps::snapshot::Snapshots;
use crate::events::dispatcher::{self, DispatchConfig};
use crate::kernel::clock::SharedClock;
use crate::kernel::store::{Actor, Store};
use crate::licenses::service::Licenses;

/// How often an app on SQLite looks for commits made by another process (the CLI's
/// `apply` beside a running server): the bound on how long a cached read can miss them.
pub const OUTSIDE_LOOK: Duration = Duration::from_millis(100);

/// The operating system's clock, for the process to inject (`main` builds it; nothing else
/// reads the system time).
pub fn system_clock() -> SharedClock {
    Arc::new(crate::kernel::clock::SystemClock)
}

/// What the server's own tasks need to know.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// How often the scheduler looks for due term transitions.
    pub scheduler_every: Duration,
    /// Audit records older than this many days are pruned (0: kept forever).
    pub audit_retention_days: u32,
    /// How often the heads of audit chains that moved are signed.
    pub audit_head_every: Duration,
    /// Outbound webhook delivery.
    pub dispatch: DispatchConfig,
    /// Tenants with their own labels on the seat gauges (the rest are summed).
    pub metrics_tenant_limit: usize,
    /// How often the gauges are computed.
    pub metrics_every: Duration,
}

/// The running background tasks of an app. Dropping it aborts them; [`Jobs::shutdown`] stops
/// them in order and writes what is still buffered.
pub struct Jobs {
    store: Store,
    clock: SharedClock,
    snapshots: Arc<Snapshots>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Jobs {
    /// Starts the tasks every app needs (snapshots, and on PostgreSQL the listener).
    pub(crate) fn for_app(
        store: Store,
        clock: SharedClock,
        snapshots: Arc<Snapshots>,
        activity_every: Duration,
    ) -> Jobs {
        let mut tasks = vec![("snapshots", snapshots.spawn(activity_every))];
        if let Some(listener) = store.listen_other_nodes() {
            tasks.push(("listener", listener));
        }
        if store.caches_reads() {
            tasks.push(("outside", outside(store.clone(), snapshots.clone())));
        }
        Jobs {
            store,
            clock,
            snapshots,
            tasks,
        }
    }

    /// Starts the usage history sampler (points kept `retention_days`, 0: forever).
    pub(crate) fn sample_usage(&mut self, retention_days: u32, every: Duration) {
        if every.is_zero() {
            // No history: nothing follows the commits either.
            return;
        }
        self.store.follow_touched();
        let sampler = crate::licenses::sampler::Sampler::new(
            self.store.clone(),
            self.clock.clone(),
            retention_days,
        );
        self.tasks.push(("history", sampler.spawn(every)));
    }

    /// Starts the server's own tasks: the scheduler, the webhook dispatcher and retention.
    pub fn start_server(&mut self, schedule: Schedule) {
        let (store, clock) = (self.store.clone(), self.clock.clone());
        self.tasks.push((
            "scheduler",
            scheduler(store.clone(), clock.clone(), schedule.scheduler_every),
        ));
        self.tasks.push((
            "dispatcher",
            dispatcher::spawn(store.clone(), clock.clone(), schedule.dispatch),
        ));
        self.tasks.push((
            "heads",
            heads(store.clone(), clock.clone(), schedule.audit_head_every),
        ));
        self.tasks.push((
            "metrics",
            crate::ops::metrics::spawn(
                store.clone(),
                clock.clone(),
                self.snapshots.clone(),
                schedule.metrics_tenant_limit,
                schedule.metrics_every,
            ),
        ));
        if schedule.audit_retention_days > 0 {
            self.tasks.push((
                "retention",
                retention(store, clock, schedule.audit_retention_days),
            ));
        }
    }

    /// Stops every task (the last started first), then writes the activity still buffered.
    pub async fn shutdown(mut self) {
        for (name, task) in self.tasks.drain(..).rev() {
            task.abort();
            let _ = task.await;
            tracing::debug!(task = name, "stopped");
        }
        match self.snapshots.flush_activity().await {
            Ok(n) if n > 0 => tracing::info!(users = n, "activity written at shutdown"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "writing activity at shutdown failed"),
        }
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

/// Looks for other processes' commits every [`OUTSIDE_LOOK`]; after one, the entitlement
/// snapshots catch up at once (their own tick is slower), so a CLI `apply` reaches checks
/// within about that long.
fn outside(store: Store, snapshots: Arc<Snapshots>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OUTSIDE_LOOK);
        loop {
            tick.tick().await;
            match store.look_for_outside_commits().await {
                Ok(true) => {
                    snapshots.catch_up_all().await;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "looking for other processes' commits failed");
                }
            }
        }
    })
}

/// Runs due term transitions now and then every `every`. Catches up at start: whatever fell
/// due while the server was down is applied on the first tick.
fn scheduler(store: Store, clock: SharedClock, every: Duration) -> tokio::task::JoinHandle<()> {
    let licenses = Licenses::new(store, clock);
    tokio::spawn(async move {
        loop {
            match licenses.run_due().await {
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

/// Signs, every `every`, the head of each audit chain that moved since its last signed head
/// (only those: an idle tenant costs nothing but its row in one query).
fn heads(store: Store, clock: SharedClock, every: Duration) -> tokio::task::JoinHandle<()> {
    let audit = crate::audit::service::Audit::new(store, clock);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match audit.sign_heads(None).await {
                Ok(signed) if !signed.is_empty() => {
                    tracing::debug!(chains = signed.len(), "audit heads signed");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "signing audit heads failed; retrying"),
            }
        }
    })
}

/// Prunes audit records older than `days`, hourly, each tenant behind a signed checkpoint.
fn retention(store: Store, clock: SharedClock, days: u32) -> tokio::task::JoinHandle<()> {
    let audit = crate::audit::service::Audit::new(store, clock);
    let actor = Actor {
        name: "retention".into(),
        request_id: "retention".into(),
    };
    tokio::spawn(async move {
        loop {
            match audit.prune(&actor, days, None).await {
                Ok(done) => {
                    for (t, cp) in done {
                        if let Some(cp) = cp {
                            tracing::info!(tenant = %t, through = cp.seq, "audit records pruned");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "audit pruning failed; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}
