//! The usage history sampler (see [`crate::licenses::history`]): follows the tenants this
//! process committed to and the hour, and writes their points.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::kernel::clock::SharedClock;
use crate::kernel::error::ApiResult;
use crate::kernel::store::{Store, StoreResult};
use crate::licenses::history::Point;
use crate::licenses::usage::UsageRow;

/// The sampler: follows the store's touched tenants and the hour.
pub struct Sampler {
    store: Store,
    clock: SharedClock,
    licenses: crate::licenses::service::Licenses,
    retention_days: u32,
    last_hour: i64,
    /// Idle seats by tenant and product, as last counted, and the tenants counted in the
    /// current minute (`idle_minute`): a tenant's idle seats are counted once a minute, not
    /// at every tick (counting reads every seat holder of the tenant, and idle thresholds are
    /// days).
    idle: BTreeMap<(String, String), usize>,
    idle_counted: std::collections::BTreeSet<String>,
    idle_minute: i64,
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl Sampler {
    /// A sampler keeping points for `retention_days`.
    pub fn new(store: Store, clock: SharedClock, retention_days: u32) -> Sampler {
        Sampler {
            licenses: crate::licenses::service::Licenses::new(store.clone(), clock.clone()),
            store,
            clock,
            retention_days,
            last_hour: i64::MIN,
            idle: BTreeMap::new(),
            idle_counted: Default::default(),
            idle_minute: i64::MIN,
        }
    }

    /// Writes the points of these usage rows whose counts differ from their tenant's latest
    /// point, at `at`.
    async fn record(&self, rows: Vec<UsageRow>, at: i64) -> StoreResult<usize> {
        let mut by_tenant: BTreeMap<String, Vec<UsageRow>> = BTreeMap::new();
        for r in rows {
            by_tenant.entry(r.tenant.clone()).or_default().push(r);
        }
        let mut out = Vec::new();
        for (tenant, rows) in by_tenant {
            let latest = self.store.latest_points(&tenant).await?;
            for r in rows {
                let p = Point::of(&r, at);
                match latest.get(&r.product) {
                    // The same counts: nothing to store (unless it is this minute's point,
                    // which is already right).
                    Some(l) if l.same_counts(&p) => {}
                    _ => out.push((tenant.clone(), r.product.clone(), p)),
                }
            }
        }
        let n = out.len();
        self.store.put_points(out).await?;
        Ok(n)
    }

    /// One round: the touched tenants at the current minute; on a new hour, every
    /// subscription at the hour, and retention.
    pub async fn tick(&mut self) -> ApiResult<usize> {
        let now = unix(self.clock.now());
        let mut written = 0;
        let touched = self.store.take_touched();
        let minute = now - now.rem_euclid(60);
        if minute != self.idle_minute {
            self.idle_counted.clear();
            self.idle_minute = minute;
        }
        if !touched.is_empty() {
            // Idle seats are counted for the tenants not counted yet this minute.
            let fresh: Vec<String> = touched
                .iter()
                .filter(|t| !self.idle_counted.contains(*t))
                .cloned()
                .collect();
            let rows = self
                .licenses
                .usage_rows_idle_from(&touched, &fresh, &mut self.idle)
                .await?;
            self.idle_counted.extend(fresh);
            written += self.record(rows, minute).await?;
        }
        let hour = now - now.rem_euclid(3600);
        if hour > self.last_hour {
            let rows = self.licenses.usage_rows(None).await?;
            written += self
                .record(rows.into_iter().map(|(r, _)| r).collect(), hour)
                .await?;
            if self.retention_days > 0 {
                self.store
                    .prune_points(now - i64::from(self.retention_days) * 86_400)
                    .await?;
            }
            self.last_hour = hour;
        }
        Ok(written)
    }

    /// Runs [`Sampler::tick`] every `every` until aborted.
    pub fn spawn(mut self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "usage history sampling failed");
                }
            }
        })
    }
}
