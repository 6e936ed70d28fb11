//! The usage board: every subscription's seat counts across tenants, kept between requests so
//! a page of the usage report sorted by a figure does not read 20,000 subscriptions each time.
//!
//! It follows the store's commit generations ([`crate::kernel::store::Marks`]): a request
//! takes the marks before it reads; tenants whose generation moved since the board was last
//! brought up to date (and tenants it has not seen) are read again, alone; a commit that
//! reached everything (the product catalogue, another process's commit to the SQLite file)
//! makes it read everything. So the board is never older than the marks its reader took,
//! like the rendered-user cache. On PostgreSQL, where other nodes commit unseen, it keeps
//! nothing and every request reads every row.
//!
//! Only the seat counts are kept (seats, active, waitlisted, overage, utilisation, term end):
//! what the report sorts on. Idle seats come from the usage history's latest sample, kept
//! for a minute; the rows of the page shown are completed live by their reader.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::kernel::store::{Marks, Store, StoreResult};
use crate::licenses::usage::{self, UsageRow};

/// Above this many tenants to read again, the board is read whole (one query beats a long
/// `IN` list).
const PARTIAL_LIMIT: usize = 500;

/// How long the sampled idle seats are kept: the samples themselves are up to an hour apart.
const IDLE_KEPT: time::Duration = time::Duration::seconds(60);

/// The rows, in tenant and product order.
pub type Rows = Arc<Vec<Arc<UsageRow>>>;

/// Idle seats by (tenant, product), as last sampled.
pub type SampledIdle = Arc<BTreeMap<(String, String), usize>>;

/// See the module documentation.
#[derive(Default)]
pub struct Board {
    built: tokio::sync::Mutex<Option<Built>>,
    idle: tokio::sync::Mutex<Option<(OffsetDateTime, SampledIdle)>>,
}

struct Built {
    marks: Marks,
    by_tenant: BTreeMap<String, Vec<Arc<UsageRow>>>,
    known: HashSet<String>,
    flat: Rows,
}

impl Built {
    fn flatten(&mut self) {
        self.flat = Arc::new(self.by_tenant.values().flatten().cloned().collect());
    }
}

async fn read(
    store: &Store,
    now: OffsetDateTime,
    tenants: Option<&[String]>,
) -> StoreResult<Vec<UsageRow>> {
    let inputs = store.usage_inputs(tenants, false).await?;
    Ok(usage::rows(&inputs, &BTreeMap::new(), now))
}

impl Board {
    /// Every subscription's seat counts, current as of this call; `tenants` is every
    /// tenant's id (read by the caller: a tenant the board has not seen is read).
    pub async fn rows(
        &self,
        store: &Store,
        now: OffsetDateTime,
        tenants: &[String],
    ) -> StoreResult<Rows> {
        if !store.caches_reads() {
            return Ok(Arc::new(
                read(store, now, None)
                    .await?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            ));
        }
        let mut built = self.built.lock().await;
        // Taken before anything is read: a commit after this moves them again.
        let marks = store.marks();
        if let Some(b) = built.as_mut()
            && !b.marks.everything_moved(&marks)
        {
            let moved = b.marks.moved_slots(&marks);
            let stale: Vec<String> = tenants
                .iter()
                .filter(|t| !b.known.contains(*t) || moved[store.slot_of(t)])
                .cloned()
                .collect();
            if stale.len() <= PARTIAL_LIMIT {
                if !stale.is_empty() {
                    let rows = read(store, now, Some(&stale)).await?;
                    for t in &stale {
                        b.by_tenant.remove(t);
                        b.known.insert(t.clone());
                    }
                    for r in rows {
                        b.by_tenant
                            .entry(r.tenant.clone())
                            .or_default()
                            .push(Arc::new(r));
                    }
                    b.flatten();
                    metrics::counter!("seatkeeper_usage_board_reads_total", "read" => "partial")
                        .increment(1);
                }
                b.marks = marks;
                return Ok(b.flat.clone());
            }
        }
        let mut by_tenant: BTreeMap<String, Vec<Arc<UsageRow>>> = BTreeMap::new();
        for r in read(store, now, None).await? {
            by_tenant
                .entry(r.tenant.clone())
                .or_default()
                .push(Arc::new(r));
        }
        let mut b = Built {
            marks,
            by_tenant,
            known: tenants.iter().cloned().collect(),
            flat: Arc::default(),
        };
        b.flatten();
        metrics::counter!("seatkeeper_usage_board_reads_total", "read" => "whole").increment(1);
        let out = b.flat.clone();
        *built = Some(b);
        Ok(out)
    }

    /// Every subscription's idle seats as of the usage history's latest sample (kept for a
    /// minute; samples are up to an hour apart).
    pub async fn sampled_idle(
        &self,
        store: &Store,
        now: OffsetDateTime,
    ) -> StoreResult<SampledIdle> {
        let mut kept = self.idle.lock().await;
        if let Some((at, idle)) = kept.as_ref()
            && now >= *at
            && now - *at < IDLE_KEPT
        {
            return Ok(idle.clone());
        }
        let idle: SampledIdle = Arc::new(store.latest_idle().await?);
        *kept = Some((now, idle.clone()));
        Ok(idle)
    }
}
