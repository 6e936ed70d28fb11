//! Usage history: each subscription's counts (seats, active, waitlisted, overage, idle) as a
//! time series.
//!
//! - A commit marks its tenants; every few seconds (`Config::usage_sample_every`, 5 s) the
//!   sampler writes, for each marked
//!   tenant's subscription whose counts moved, a point at the current minute — coalesced:
//!   more changes in the same minute rewrite that minute's point.
//! - Every hour it samples every subscription (idle seats move with time alone). An hour whose
//!   counts equal the point before it stores nothing: readers carry the last point forward,
//!   so the series still answers every hour, and a quiet subscription costs no rows.
//! - Points older than `--usage-retention-days` are deleted at the hourly sample.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::kernel::db::P;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::{Store, StoreError, StoreResult};
use crate::licenses::usage::UsageRow;
use crate::params;

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Unix seconds.
    #[serde(skip)]
    pub at: i64,
    pub seats: i64,
    pub active: i64,
    pub waitlisted: i64,
    pub overage: i64,
    pub idle: i64,
}

impl Point {
    pub(crate) fn of(r: &UsageRow, at: i64) -> Point {
        Point {
            at,
            seats: i64::from(r.seats),
            active: r.active as i64,
            waitlisted: r.waitlisted as i64,
            overage: r.overage as i64,
            idle: r.idle as i64,
        }
    }

    pub(crate) fn same_counts(&self, o: &Point) -> bool {
        (
            self.seats,
            self.active,
            self.waitlisted,
            self.overage,
            self.idle,
        ) == (o.seats, o.active, o.waitlisted, o.overage, o.idle)
    }
}

/// Bucket width of a history answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// One point per hour.
    Hour,
    /// One point per day.
    Day,
}

impl Step {
    fn seconds(self) -> i64 {
        match self {
            Step::Hour => 3600,
            Step::Day => 86_400,
        }
    }
}

/// Most buckets one answer holds.
pub const MAX_BUCKETS: i64 = 20_000;

impl Store {
    /// The latest point at or before `at` of each of a tenant's products.
    pub(crate) async fn latest_points(&self, tenant: &str) -> StoreResult<BTreeMap<String, Point>> {
        let rows = self
            .pool()
            .fetch(
                "SELECT p.product, p.at, p.seats, p.active, p.waitlisted, p.overage, p.idle FROM usage_points p \
                 WHERE p.tenant_id = $1 AND p.at = (SELECT MAX(q.at) FROM usage_points q \
                 WHERE q.tenant_id = p.tenant_id AND q.product = p.product)",
                &params![tenant],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.text(0),
                    Point {
                        at: r.int(1),
                        seats: r.int(2),
                        active: r.int(3),
                        waitlisted: r.int(4),
                        overage: r.int(5),
                        idle: r.int(6),
                    },
                )
            })
            .collect())
    }

    /// Idle seats of every series as of its latest point (at most an hour old: the hourly
    /// sample writes any change).
    pub(crate) async fn latest_idle(&self) -> StoreResult<BTreeMap<(String, String), usize>> {
        let rows = self
            .pool()
            .fetch(
                "SELECT p.tenant_id, p.product, p.idle FROM usage_points p JOIN \
                 (SELECT tenant_id, product, MAX(at) AS at FROM usage_points GROUP BY tenant_id, product) l \
                 ON p.tenant_id = l.tenant_id AND p.product = l.product AND p.at = l.at",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ((r.text(0), r.text(1)), r.int(2).max(0) as usize))
            .collect())
    }

    /// Writes points (a point already at that instant is replaced: coalescing).
    pub(crate) async fn put_points(&self, points: Vec<(String, String, Point)>) -> StoreResult<()> {
        if points.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            tx.reaches_nothing_rendered();
            for chunk in points.chunks(100) {
                let mut ps: Vec<P> = Vec::with_capacity(chunk.len() * 8);
                let values: Vec<String> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, (t, product, p))| {
                        ps.extend([
                            P::from(t.as_str()),
                            P::from(product.as_str()),
                            P::Int(p.at),
                            P::Int(p.seats),
                            P::Int(p.active),
                            P::Int(p.waitlisted),
                            P::Int(p.overage),
                            P::Int(p.idle),
                        ]);
                        let b = i * 8;
                        format!(
                            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                            b + 1,
                            b + 2,
                            b + 3,
                            b + 4,
                            b + 5,
                            b + 6,
                            b + 7,
                            b + 8
                        )
                    })
                    .collect();
                tx.execute(
                    &format!(
                        "INSERT INTO usage_points (tenant_id, product, at, seats, active, waitlisted, overage, idle) \
                         VALUES {} ON CONFLICT (tenant_id, product, at) DO UPDATE SET seats = excluded.seats, \
                         active = excluded.active, waitlisted = excluded.waitlisted, overage = excluded.overage, \
                         idle = excluded.idle",
                        values.join(", ")
                    ),
                    &ps,
                )?;
            }
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Deletes points older than `before` (unix seconds).
    pub(crate) async fn prune_points(&self, before: i64) -> StoreResult<u64> {
        self.write(move |tx| {
            tx.reaches_nothing_rendered();
            tx.execute("DELETE FROM usage_points WHERE at < $1", &params![before])
        })
        .await
    }

    /// A series' points from `from` to `to` (unix seconds), and the last point before
    /// `from` (what the series starts from).
    async fn points(
        &self,
        tenant: &str,
        product: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<(Option<Point>, Vec<Point>)> {
        let point = |r: &crate::kernel::db::Row| Point {
            at: r.int(0),
            seats: r.int(1),
            active: r.int(2),
            waitlisted: r.int(3),
            overage: r.int(4),
            idle: r.int(5),
        };
        let before = self
            .pool()
            .fetch_opt(
                "SELECT at, seats, active, waitlisted, overage, idle FROM usage_points \
                 WHERE tenant_id = $1 AND product = $2 AND at < $3 ORDER BY at DESC LIMIT 1",
                &params![tenant, product, from],
            )
            .await?
            .as_ref()
            .map(point);
        let rows = self
            .pool()
            .fetch(
                "SELECT at, seats, active, waitlisted, overage, idle FROM usage_points \
                 WHERE tenant_id = $1 AND product = $2 AND at >= $3 AND at <= $4 ORDER BY at",
                &params![tenant, product, from, to],
            )
            .await?;
        Ok((before, rows.iter().map(point).collect()))
    }
}

/// The series in buckets of `step` from `from` to `to`: each bucket holds the counts as they
/// stood at its end (the last point in it, or carried forward from before). Buckets before
/// the series' first point are left out.
pub fn buckets(
    before: Option<Point>,
    points: &[Point],
    from: i64,
    to: i64,
    step: Step,
) -> Vec<(i64, Point)> {
    let width = step.seconds();
    let mut out = Vec::new();
    let mut current = before;
    let mut i = 0;
    let mut start = from - from.rem_euclid(width);
    while start <= to {
        let end = start + width;
        while i < points.len() && points[i].at < end {
            current = Some(points[i]);
            i += 1;
        }
        if let Some(p) = current {
            out.push((start, p));
        }
        start = end;
    }
    out
}

/// A history answer.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub tenant: String,
    pub product: String,
    pub step: &'static str,
    pub points: Vec<HistoryPoint>,
}

/// One bucket.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    /// The bucket's start (RFC 3339).
    pub at: String,
    #[serde(flatten)]
    pub counts: Point,
}

/// A subscription's history from `from` to `to` in buckets of `step`.
pub async fn history(
    store: &Store,
    tenant: &str,
    product: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    step: Step,
) -> ApiResult<History> {
    if to < from {
        return Err(scim::Error::InvalidValue("to is before from".into()).into());
    }
    let (f, t) = (from.unix_timestamp(), to.unix_timestamp());
    if (t - f) / step.seconds() > MAX_BUCKETS {
        return Err(scim::Error::InvalidValue(format!(
            "the range holds more than {MAX_BUCKETS} buckets of this step: shorten it or use step=day"
        ))
        .into());
    }
    let (before, points) = store.points(tenant, product, f, t).await?;
    let points = buckets(before, &points, f, t, step)
        .into_iter()
        .map(|(at, p)| {
            Ok(HistoryPoint {
                at: crate::kernel::clock::stamp(
                    OffsetDateTime::from_unix_timestamp(at)
                        .map_err(|e| ApiError::Internal(e.to_string()))?,
                ),
                counts: p,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(History {
        tenant: tenant.to_string(),
        product: product.to_string(),
        step: match step {
            Step::Hour => "hour",
            Step::Day => "day",
        },
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at: i64, active: i64) -> Point {
        Point {
            at,
            seats: 10,
            active,
            waitlisted: 0,
            overage: 0,
            idle: 0,
        }
    }

    #[test]
    fn buckets_hold_the_counts_at_their_end_and_carry_forward() {
        // Points at 00:10 (3), 00:50 (4), 02:30 (5); hours 00, 01, 02, 03.
        let pts = [p(600, 3), p(3000, 4), p(9000, 5)];
        let b = buckets(None, &pts, 0, 3 * 3600, Step::Hour);
        let got: Vec<(i64, i64)> = b.iter().map(|(at, p)| (*at, p.active)).collect();
        assert_eq!(got, vec![(0, 4), (3600, 4), (7200, 5), (10800, 5)]);
        // A point before the range starts it; none before: the empty buckets are left out.
        let b = buckets(Some(p(-10, 1)), &[], 0, 7200, Step::Hour);
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|(_, p)| p.active == 1));
        assert!(buckets(None, &[p(7300, 2)], 0, 3599, Step::Hour).is_empty());
        // Days.
        let b = buckets(None, &[p(600, 3), p(90_000, 6)], 0, 2 * 86_400, Step::Day);
        let got: Vec<(i64, i64)> = b.iter().map(|(at, p)| (*at, p.active)).collect();
        assert_eq!(got, vec![(0, 3), (86_400, 6), (172_800, 6)]);
    }
}
