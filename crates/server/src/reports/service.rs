//! The reports: usage across tenants (sorted, paged, CSV) and compliance findings (signed).

use std::cmp::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::audit::service::Audit;
use crate::kernel::clock::{SharedClock, stamp};
use crate::kernel::error::{ApiError, ApiResult};
use crate::licenses::service::Licenses;
use crate::licenses::usage::{Finding, UsageRow};
use crate::tenants::service::Tenants;

/// What `/api/v1/usage` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Tenant name, then product (the default).
    Name,
    /// active / seats.
    Utilisation,
    /// Seats held above those bought.
    Overage,
    /// People waiting.
    Waitlisted,
    /// Idle seats.
    Idle,
    /// Term end (open-ended terms last).
    EndsAt,
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// One row of the usage report.
#[derive(Debug, Clone, Serialize)]
pub struct TenantUsage {
    /// The tenant's name.
    pub tenant_name: String,
    /// The subscription's usage.
    #[serde(flatten)]
    pub usage: UsageRow,
}

/// A page of the usage report.
#[derive(Debug, Clone, Serialize)]
pub struct UsagePage {
    /// Rows of this page.
    pub usage: Vec<TenantUsage>,
    /// Rows in the whole report.
    pub total: usize,
    /// Where the next page starts (`null` on the last).
    pub next_cursor: Option<String>,
}

/// The compliance report.
#[derive(Debug, Clone, Serialize)]
pub struct Compliance {
    /// When it was computed.
    pub generated_at: String,
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
}

/// Largest page of the usage report.
pub const MAX_PAGE: usize = 10_000;

/// Where a page ended: the last row's sort value and its tie-breakers. The next page starts
/// after it, so rows added or removed meanwhile never shift a page onto rows already seen.
#[derive(Serialize, serde::Deserialize)]
struct Cursor {
    s: Sort,
    o: Order,
    key: Key,
}

/// A row's place in the report's order.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Key {
    value: SortValue,
    name: String,
    tenant: String,
    product: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(untagged)]
enum SortValue {
    Number(f64),
    Text(Option<String>),
}

/// A [`SortValue`], borrowed from the row it sorts.
#[derive(Clone, Copy)]
enum ValueRef<'a> {
    Number(f64),
    Text(Option<&'a str>),
}

impl ValueRef<'_> {
    fn cmp(&self, other: &ValueRef<'_>) -> Ordering {
        match (self, other) {
            (ValueRef::Number(a), ValueRef::Number(b)) => a.total_cmp(b),
            // Open-ended terms (no end) after every dated one.
            (ValueRef::Text(a), ValueRef::Text(b)) => match (a, b) {
                (Some(p), Some(q)) => p.cmp(q),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
            (ValueRef::Number(_), ValueRef::Text(_)) => Ordering::Less,
            (ValueRef::Text(_), ValueRef::Number(_)) => Ordering::Greater,
        }
    }

    fn owned(&self) -> SortValue {
        match self {
            ValueRef::Number(n) => SortValue::Number(*n),
            ValueRef::Text(t) => SortValue::Text(t.map(str::to_string)),
        }
    }
}

/// A [`Key`], borrowed.
#[derive(Clone, Copy)]
struct KeyRef<'a> {
    value: ValueRef<'a>,
    name: &'a str,
    tenant: &'a str,
    product: &'a str,
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            value: match &self.value {
                SortValue::Number(n) => ValueRef::Number(*n),
                SortValue::Text(t) => ValueRef::Text(t.as_deref()),
            },
            name: &self.name,
            tenant: &self.tenant,
            product: &self.product,
        }
    }
}

impl KeyRef<'_> {
    fn owned(&self) -> Key {
        Key {
            value: self.value.owned(),
            name: self.name.to_string(),
            tenant: self.tenant.to_string(),
            product: self.product.to_string(),
        }
    }
}

/// A row that may be on the page: its seat counts, its tenant's name (and in lower case,
/// the name sort's value) and its idle seats as the sort sees them.
struct Candidate<'a> {
    row: &'a UsageRow,
    name: &'a str,
    lower: &'a str,
    idle: usize,
}

fn key<'a>(sort: Sort, c: &Candidate<'a>) -> KeyRef<'a> {
    let u = c.row;
    KeyRef {
        value: match sort {
            Sort::Name => ValueRef::Text(Some(c.lower)),
            Sort::Utilisation => ValueRef::Number(u.utilisation),
            Sort::Overage => ValueRef::Number(u.overage as f64),
            Sort::Waitlisted => ValueRef::Number(u.waitlisted as f64),
            Sort::Idle => ValueRef::Number(c.idle as f64),
            Sort::EndsAt => ValueRef::Text(u.ends_at.as_deref()),
        },
        name: c.name,
        tenant: &u.tenant,
        product: &u.product,
    }
}

/// The report's order: the sort value in the asked direction, then name, tenant and product
/// ascending whatever the direction.
fn order_of(order: Order, a: &KeyRef<'_>, b: &KeyRef<'_>) -> Ordering {
    let by = a.value.cmp(&b.value);
    let by = if order == Order::Desc {
        by.reverse()
    } else {
        by
    };
    by.then_with(|| a.name.cmp(b.name))
        .then_with(|| a.tenant.cmp(b.tenant))
        .then_with(|| a.product.cmp(b.product))
}

/// The reports service.
#[derive(Clone)]
pub struct Reports {
    licenses: Licenses,
    tenants: Tenants,
    audit: Audit,
    clock: SharedClock,
}

impl Reports {
    /// Builds it over the services it reads.
    pub fn new(licenses: Licenses, tenants: Tenants, audit: Audit, clock: SharedClock) -> Self {
        Reports {
            licenses,
            tenants,
            audit,
            clock,
        }
    }

    /// Every tenant's subscriptions with their usage (of tenants whose name or id contains
    /// `q`), sorted, one page from `cursor`.
    pub async fn usage(
        &self,
        sort: Sort,
        order: Order,
        limit: usize,
        cursor: Option<&str>,
        q: Option<&str>,
    ) -> ApiResult<UsagePage> {
        let q = q.map(str::to_lowercase).filter(|q| !q.is_empty());
        let after: Option<Key> = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => {
                let parsed: Option<Cursor> = URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                match parsed {
                    Some(p) if p.s == sort && p.o == order => Some(p.key),
                    Some(_) => {
                        return Err(invalid(
                            "cursor belongs to another sort or order: keep sort and order while paging",
                        ));
                    }
                    None => return Err(invalid(&format!("cursor '{c}' is not one this API gave"))),
                }
            }
        };
        let tenants = self.tenants.list().await?;
        let ids: Vec<String> = tenants.iter().map(|t| t.id.clone()).collect();
        let names: std::collections::HashMap<&str, (&str, String)> = tenants
            .iter()
            .map(|t| (t.id.as_str(), (t.name.as_str(), t.name.to_lowercase())))
            .collect();
        // The seat counts of every row are cheap, and kept between requests (the usage
        // board); idle seats and waits are not. Rows sort on the seat counts — by idle, on the
        // idle seats of the usage history's latest sample (at most an hour old; idle seats
        // move by days) — and only the page's rows are then completed with live figures.
        let rows = self.licenses.seat_rows(&ids).await?;
        let sampled = match sort {
            Sort::Idle => Some(self.licenses.sampled_idle().await?),
            _ => None,
        };
        let candidates: Vec<Candidate<'_>> = rows
            .iter()
            .filter_map(|r| {
                let (name, lower) = names.get(r.tenant.as_str())?;
                let wanted = q
                    .as_deref()
                    .is_none_or(|q| lower.contains(q) || r.tenant.contains(q));
                wanted.then(|| Candidate {
                    row: r,
                    name,
                    lower,
                    idle: sampled.as_ref().map_or(0, |s| {
                        s.get(&(r.tenant.clone(), r.product.clone()))
                            .copied()
                            .unwrap_or(0)
                    }),
                })
            })
            .collect();
        let total = candidates.len();
        let after = after.as_ref().map(Key::as_ref);
        let mut keyed: Vec<(KeyRef<'_>, &Candidate<'_>)> = candidates
            .iter()
            .map(|c| (key(sort, c), c))
            .filter(|(k, _)| {
                after
                    .as_ref()
                    .is_none_or(|a| order_of(order, k, a) == Ordering::Greater)
            })
            .collect();
        let limit = limit.clamp(1, MAX_PAGE);
        let more = keyed.len() > limit;
        if more {
            // Only the page is put in order: the rest need only be after it.
            keyed.select_nth_unstable_by(limit, |a, b| order_of(order, &a.0, &b.0));
            keyed.truncate(limit);
        }
        keyed.sort_by(|a, b| order_of(order, &a.0, &b.0));
        let next_cursor = more.then(|| keyed.last()).flatten().map(|(k, _)| {
            URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&Cursor {
                    s: sort,
                    o: order,
                    key: k.owned(),
                })
                .unwrap_or_default(),
            )
        });
        let mut page: Vec<TenantUsage> = keyed
            .iter()
            .map(|(_, c)| {
                let mut usage = c.row.clone();
                usage.idle = c.idle;
                TenantUsage {
                    tenant_name: c.name.to_string(),
                    usage,
                }
            })
            .collect();
        if !page.is_empty() {
            let mut ids: Vec<String> = page.iter().map(|r| r.usage.tenant.clone()).collect();
            ids.sort();
            ids.dedup();
            let full: std::collections::HashMap<(String, String), UsageRow> = self
                .licenses
                .usage_rows(Some(&ids))
                .await?
                .into_iter()
                .map(|(u, _)| ((u.tenant.clone(), u.product.clone()), u))
                .collect();
            for r in &mut page {
                if let Some(u) = full.get(&(r.usage.tenant.clone(), r.usage.product.clone())) {
                    r.usage = u.clone();
                }
            }
        }
        Ok(UsagePage {
            usage: page,
            total,
            next_cursor,
        })
    }

    /// The compliance findings of every tenant (or one).
    pub async fn compliance(&self, tenant: Option<&str>) -> ApiResult<Compliance> {
        let generated_at = stamp(self.clock.now());
        let findings = match tenant {
            Some(t) => {
                self.tenants.require(t).await?;
                self.licenses.findings(Some(&[t.to_string()])).await?
            }
            None => self.licenses.findings(None).await?,
        };
        Ok(Compliance {
            generated_at,
            findings,
        })
    }

    /// Signs a report's bytes with the server's audit key: (signature, public key), both
    /// base64.
    pub async fn sign(&self, body: &[u8]) -> ApiResult<(String, String)> {
        Ok(self.audit.sign(body).await?)
    }
}

fn invalid(msg: &str) -> ApiError {
    scim::Error::InvalidValue(msg.to_string()).into()
}

/// The usage report's CSV columns.
pub const USAGE_CSV_COLUMNS: &[&str] = &[
    "tenant",
    "tenant_name",
    "product",
    "plan",
    "plan_in_force",
    "status",
    "phase",
    "enforcement",
    "seats",
    "active",
    "waitlisted",
    "seat_free",
    "available",
    "overage",
    "idle",
    "idle_after_days",
    "utilisation",
    "oldest_waiting_since",
    "ends_at",
    "access_ends_at",
];

/// The usage rows as CSV (RFC 4180), with a header line.
pub fn usage_csv(rows: &[TenantUsage]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(USAGE_CSV_COLUMNS)?;
    for r in rows {
        let u = &r.usage;
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        w.write_record([
            u.tenant.clone(),
            crate::kernel::csv_cell::cell(&r.tenant_name).into_owned(),
            u.product.clone(),
            u.plan.clone(),
            opt(&u.plan_in_force),
            u.status.clone(),
            u.phase.clone(),
            u.enforcement.clone(),
            u.seats.to_string(),
            u.active.to_string(),
            u.waitlisted.to_string(),
            u.seat_free.to_string(),
            u.available.to_string(),
            u.overage.to_string(),
            u.idle.to_string(),
            u.idle_after_days.to_string(),
            u.utilisation.to_string(),
            opt(&u.oldest_waiting_since),
            opt(&u.ends_at),
            opt(&u.access_ends_at),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The compliance findings as CSV, with a header line.
pub fn findings_csv(findings: &[Finding]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "finding", "tenant", "product", "severity", "count", "detail",
    ])?;
    for f in findings {
        w.write_record([
            f.finding,
            &f.tenant,
            &f.product,
            f.severity,
            &f.count.to_string(),
            &crate::kernel::csv_cell::cell(&f.detail),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
