//! What `/metrics` says and what each metric means: one table of names, kinds and HELP texts
//! (every metric the code records is in it), and the gauges an on-call engineer reads first,
//! refreshed every `--metrics-interval` (15 s):
//!
//! - seats per tenant and product (bought, active, waitlisted, overage, idle), the largest
//!   `--metrics-tenant-limit` tenants by seats under their own `tenant` label and the rest
//!   summed under `tenant="_other"`, so label cardinality stays bounded;
//! - the webhook outbox: events not yet fanned out, deliveries pending and dead, the age of
//!   the oldest undelivered one;
//! - entitlement snapshots loaded and about how much memory they hold;
//! - `seatkeeper_build_info{version, commit}`.
//!
//! Gauges that stop being set (a tenant that left the top, or was deleted) leave the
//! exposition after [`STALE_AFTER`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::apps::snapshot::Snapshots;
use crate::kernel::clock::SharedClock;
use crate::kernel::store::Store;
use crate::licenses::service::Licenses;

/// How long a gauge no longer set stays exposed (four refreshes at the default interval).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// The label that sums the tenants beyond the limit.
pub const OTHER: &str = "_other";

/// A metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (Prometheus buckets).
    Histogram,
}

/// Every metric seatkeeper records: name, kind, HELP text.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "seatkeeper_build_info",
        Kind::Gauge,
        "Always 1; its labels name the running version and the git commit it was built from.",
    ),
    (
        "seatkeeper_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by route template, method and status.",
    ),
    (
        "seatkeeper_http_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's arrival to its answer, by route template and method.",
    ),
    (
        "seatkeeper_http_connections_open",
        Kind::Gauge,
        "Client connections open now.",
    ),
    (
        "seatkeeper_http_connections_refused_total",
        Kind::Counter,
        "Connections answered 503 at once because --connection-limit was reached.",
    ),
    (
        "seatkeeper_http_connections_timed_out_total",
        Kind::Counter,
        "Connections closed by the header or idle timeout, by which.",
    ),
    (
        "seatkeeper_rate_limited_total",
        Kind::Counter,
        "Requests answered 429 by a per-tenant rate limit, by limit.",
    ),
    (
        "seatkeeper_auth_failures_total",
        Kind::Counter,
        "Requests refused for a missing or wrong credential.",
    ),
    (
        "seatkeeper_auth_throttled_total",
        Kind::Counter,
        "Requests answered 429 because their address failed authentication too often.",
    ),
    (
        "seatkeeper_database_unavailable_total",
        Kind::Counter,
        "Requests answered 503 because the database could not be reached or written.",
    ),
    (
        "seatkeeper_database_round_trips_total",
        Kind::Counter,
        "Statements sent to PostgreSQL, each a round trip, by kind (read: outside a write transaction; write: in one, BEGIN and COMMIT included).",
    ),
    (
        "seatkeeper_write_batches_run_again_total",
        Kind::Counter,
        "PostgreSQL write batches run without savepoints in which a write failed, run again with a savepoint per write.",
    ),
    (
        "seatkeeper_license_changes_total",
        Kind::Counter,
        "License changes committed, by change (assigned, waitlisted, promoted, changed, revoked).",
    ),
    (
        "seatkeeper_billing_events_total",
        Kind::Counter,
        "Billing events received, by source and outcome (applied, duplicate, stale, refused).",
    ),
    (
        "seatkeeper_webhook_deliveries_total",
        Kind::Counter,
        "Webhook delivery attempts, by outcome.",
    ),
    (
        "seatkeeper_snapshot_loads_total",
        Kind::Counter,
        "Entitlement snapshots loaded whole from the database.",
    ),
    (
        "seatkeeper_snapshot_catch_ups_total",
        Kind::Counter,
        "Entitlement snapshot catch-ups, by how they read (read=alone: one statement for the tenant; together: one statement with other tenants; covered: a read begun after it was asked for had seen it).",
    ),
    (
        "seatkeeper_sso_logins_total",
        Kind::Counter,
        "OIDC sign-ins completed.",
    ),
    (
        "seatkeeper_sso_refusals_total",
        Kind::Counter,
        "OIDC sign-ins refused, by reason.",
    ),
    (
        "seatkeeper_sso_jwks_fetches_total",
        Kind::Counter,
        "Identity providers' signing keys fetched.",
    ),
    (
        "seatkeeper_usage_board_reads_total",
        Kind::Counter,
        "Reads of the usage board, by how much of it was read again.",
    ),
    (
        "seatkeeper_seats",
        Kind::Gauge,
        "Seats bought, by tenant and product (tenants beyond --metrics-tenant-limit summed as _other).",
    ),
    (
        "seatkeeper_seats_active",
        Kind::Gauge,
        "Licenses holding a seat, by tenant and product.",
    ),
    (
        "seatkeeper_seats_waitlisted",
        Kind::Gauge,
        "Licenses waiting for a seat, by tenant and product.",
    ),
    (
        "seatkeeper_seats_overage",
        Kind::Gauge,
        "Held seats beyond those bought (soft enforcement), by tenant and product.",
    ),
    (
        "seatkeeper_seats_idle",
        Kind::Gauge,
        "Held seats whose user has not been seen for the subscription's idle threshold, by tenant and product (as last sampled).",
    ),
    (
        "seatkeeper_tenants",
        Kind::Gauge,
        "Tenants, all of them (the seat gauges label only the largest).",
    ),
    (
        "seatkeeper_outbox_backlog_events",
        Kind::Gauge,
        "Events written after the slowest enabled webhook endpoint's fan-out position.",
    ),
    (
        "seatkeeper_webhook_deliveries_pending",
        Kind::Gauge,
        "Webhook deliveries waiting to be sent or retried.",
    ),
    (
        "seatkeeper_webhook_deliveries_dead",
        Kind::Gauge,
        "Webhook deliveries that gave up after the last attempt.",
    ),
    (
        "seatkeeper_webhook_oldest_pending_seconds",
        Kind::Gauge,
        "Age of the oldest webhook delivery not yet delivered (0: none waits).",
    ),
    (
        "seatkeeper_sqlite_memory_bytes",
        Kind::Gauge,
        "Bytes SQLite holds in this process: every connection's page cache (up to 64 MiB each), prepared statements and the rest of its heap (SQLite only).",
    ),
    (
        "seatkeeper_user_cache_bytes",
        Kind::Gauge,
        "Bytes of rendered users kept for GET /Users/{id} (at most --user-cache-mb).",
    ),
    (
        "seatkeeper_snapshots_loaded",
        Kind::Gauge,
        "Tenants whose entitlement snapshot is in memory.",
    ),
    (
        "seatkeeper_snapshot_bytes",
        Kind::Gauge,
        "About how many bytes the loaded entitlement snapshots hold.",
    ),
];

/// Gives every metric its HELP text (call once, after the recorder is installed).
pub fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// Seat counts of one (tenant label, product).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    /// Bought.
    pub seats: u64,
    /// Holding a seat.
    pub active: u64,
    /// Waiting.
    pub waitlisted: u64,
    /// Beyond those bought.
    pub overage: u64,
    /// Idle, as last sampled.
    pub idle: u64,
}

impl Seats {
    fn add(&mut self, o: &Seats) {
        self.seats += o.seats;
        self.active += o.active;
        self.waitlisted += o.waitlisted;
        self.overage += o.overage;
        self.idle += o.idle;
    }
}

/// Keeps the `limit` tenants with the most seats under their own label and sums the rest
/// under [`OTHER`], per product.
pub fn bounded(
    rows: &BTreeMap<(String, String), Seats>,
    limit: usize,
) -> BTreeMap<(String, String), Seats> {
    let mut per_tenant: BTreeMap<&str, u64> = BTreeMap::new();
    for ((tenant, _), s) in rows {
        *per_tenant.entry(tenant).or_default() += s.seats.max(s.active + s.waitlisted);
    }
    let mut ranked: Vec<(&str, u64)> = per_tenant.into_iter().collect();
    // Most seats first; ties by id, so the labelled set does not flicker.
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kept: std::collections::HashSet<&str> =
        ranked.iter().take(limit).map(|(t, _)| *t).collect();
    let mut out: BTreeMap<(String, String), Seats> = BTreeMap::new();
    for ((tenant, product), s) in rows {
        let label = if kept.contains(tenant.as_str()) {
            tenant.clone()
        } else {
            OTHER.to_string()
        };
        out.entry((label, product.clone())).or_default().add(s);
    }
    out
}

/// Computes the gauges once.
async fn refresh(
    store: &Store,
    licenses: &Licenses,
    snapshots: &Snapshots,
    clock: &SharedClock,
    tenant_limit: usize,
) -> crate::kernel::error::ApiResult<()> {
    metrics::gauge!(
        "seatkeeper_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => crate::BUILD_COMMIT
    )
    .set(1.0);
    let tenants: Vec<String> = store.tenants().await?.into_iter().map(|t| t.id).collect();
    metrics::gauge!("seatkeeper_tenants").set(tenants.len() as f64);
    let rows = licenses.seat_rows(&tenants).await?;
    let idle = licenses.sampled_idle().await?;
    let mut seats: BTreeMap<(String, String), Seats> = BTreeMap::new();
    for r in rows.iter() {
        let key = (r.tenant.clone(), r.product.clone());
        let s = seats.entry(key.clone()).or_default();
        s.seats += u64::from(r.seats);
        s.active += r.active as u64;
        s.waitlisted += r.waitlisted as u64;
        s.overage += r.overage as u64;
        s.idle += idle.get(&key).copied().unwrap_or(0) as u64;
    }
    for ((tenant, product), s) in bounded(&seats, tenant_limit) {
        let labels = [("tenant", tenant), ("product", product)];
        metrics::gauge!("seatkeeper_seats", &labels).set(s.seats as f64);
        metrics::gauge!("seatkeeper_seats_active", &labels).set(s.active as f64);
        metrics::gauge!("seatkeeper_seats_waitlisted", &labels).set(s.waitlisted as f64);
        metrics::gauge!("seatkeeper_seats_overage", &labels).set(s.overage as f64);
        metrics::gauge!("seatkeeper_seats_idle", &labels).set(s.idle as f64);
    }
    let outbox = store.outbox_stats().await?;
    metrics::gauge!("seatkeeper_outbox_backlog_events").set(outbox.backlog as f64);
    metrics::gauge!("seatkeeper_webhook_deliveries_pending").set(outbox.pending as f64);
    metrics::gauge!("seatkeeper_webhook_deliveries_dead").set(outbox.dead as f64);
    let oldest = outbox
        .oldest_pending
        .as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or(0.0, |at| (clock.now() - at).as_seconds_f64().max(0.0));
    metrics::gauge!("seatkeeper_webhook_oldest_pending_seconds").set(oldest);
    // Touched each round, so the exporter's stale-gauge sweep never drops it.
    metrics::gauge!("seatkeeper_http_connections_open").increment(0.0);
    if store.backend() == crate::kernel::db::Backend::Sqlite {
        metrics::gauge!("seatkeeper_sqlite_memory_bytes")
            .set(crate::kernel::db::sqlite_memory_bytes() as f64);
    }
    let (loaded, bytes) = snapshots.loaded_stats();
    metrics::gauge!("seatkeeper_snapshots_loaded").set(loaded as f64);
    metrics::gauge!("seatkeeper_snapshot_bytes").set(bytes as f64);
    Ok(())
}

/// Refreshes the gauges every `every` for the life of the process.
pub fn spawn(
    store: Store,
    clock: SharedClock,
    snapshots: Arc<Snapshots>,
    tenant_limit: usize,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let licenses = Licenses::new(store.clone(), clock.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = refresh(&store, &licenses, &snapshots, &clock, tenant_limit).await {
                tracing::debug!(error = %e, "metrics refresh failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_recorded_has_help() {
        let code = [
            include_str!("../app.rs"),
            include_str!("../transport.rs"),
            include_str!("../kernel/throttle.rs"),
            include_str!("../kernel/extract.rs"),
            include_str!("../kernel/error.rs"),
            include_str!("../licenses/decide.rs"),
            include_str!("../billing/service.rs"),
            include_str!("../events/dispatcher.rs"),
            include_str!("../apps/snapshot.rs"),
            include_str!("../sso/service.rs"),
            include_str!("../sso/http.rs"),
            include_str!("metrics.rs")
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default(),
            include_str!("../sso/keys.rs"),
            include_str!("../licenses/board.rs"),
        ]
        .join("\n");
        let named: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        let mut seen = 0;
        for mac in ["counter!(", "gauge!(", "histogram!("] {
            for part in code.split(mac).skip(1) {
                let Some(rest) = part.trim_start().strip_prefix('"') else {
                    continue;
                };
                let name = rest.split('"').next().unwrap_or_default();
                assert!(named.contains(&name), "{name} has no HELP text");
                seen += 1;
            }
        }
        assert!(seen > 15, "the scan found the recorded metrics ({seen})");
    }

    #[test]
    fn the_grafana_dashboard_names_only_metrics_that_exist() {
        let dashboard = include_str!("../../../../deploy/grafana-dashboard.json");
        let named: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        let mut seen = 0;
        for part in dashboard.split("seatkeeper_").skip(1) {
            let tail: String = part
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if tail.is_empty() {
                continue;
            }
            let name = format!("seatkeeper_{tail}");
            let base = name.trim_end_matches("_bucket");
            assert!(
                named.contains(&base),
                "the dashboard reads {name}, which does not exist"
            );
            seen += 1;
        }
        assert!(seen >= 15, "{seen}");
    }

    #[test]
    fn beyond_the_limit_tenants_are_summed() {
        let mut rows = BTreeMap::new();
        for (t, n) in [("a", 50), ("b", 10), ("c", 5), ("d", 1)] {
            rows.insert(
                (t.to_string(), "p".to_string()),
                Seats {
                    seats: n,
                    active: n / 2,
                    ..Default::default()
                },
            );
        }
        let out = bounded(&rows, 2);
        let keys: Vec<&str> = out.keys().map(|(t, _)| t.as_str()).collect();
        assert_eq!(keys, ["_other", "a", "b"]);
        let other = out[&(OTHER.to_string(), "p".to_string())];
        assert_eq!((other.seats, other.active), (6, 2));
    }
}
