//! Seat imports: a vendor moving its customers onto seatkeeper brings their existing seat
//! holders in, with the order they got their seats in.
//!
//! Each row names a user (id, userName, an email or externalId), a product, a plan and when
//! the seat was assigned. A row whose user is in the directory becomes a pin by `import`
//! (the plan holds over the rules until an operator removes the pin) and the users are
//! decided in `assigned_at` order, so earlier assignments take their places in line first
//! (the seat check still applies). A row whose user is not in the directory yet is kept as a
//! pending claim, honoured when SCIM creates a matching user. Rows that cannot apply are
//! refused, each with its reason; the rest apply in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use time::OffsetDateTime;

use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::Tx;
use crate::licenses::decide::{Cause, Model, Outcome, Scope, imported_queue, relicense, reseat};
use crate::licenses::store::{ClaimRow, LicenseRow, time_text};
use licensing::model::{Key, Pin};

/// Most rows one import request may carry (the CLI sends larger files in parts).
pub const MAX_ROWS: usize = 200_000;

/// One row of an import, as read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportRow {
    /// Its line in the input (1 is the first data line).
    #[serde(skip_deserializing)]
    pub line: usize,
    /// The user: id, userName, an email or externalId.
    pub user: String,
    /// The product.
    pub product: String,
    /// The plan.
    pub plan: String,
    /// When the seat was assigned (RFC 3339).
    pub assigned_at: String,
}

/// A refused row and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    /// Its line.
    pub line: usize,
    /// The user as the row named them.
    pub user: String,
    /// Why it was refused.
    pub reason: String,
}

/// What an import did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// Rows whose user is in the directory: (row, the user's id).
    pub matched: Vec<Matched>,
    /// Rows kept until their user arrives.
    pub pending: Vec<ImportRow>,
    /// Rows refused, each with its reason.
    pub refused: Vec<Refused>,
    /// The license changes.
    pub licenses: Outcome,
}

/// A matched row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Matched {
    /// The row.
    #[serde(flatten)]
    pub row: ImportRow,
    /// The user's id.
    pub user_id: String,
}

/// The input's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header naming `user`, `product`, `plan`, `assigned_at` (any order).
    Csv,
    /// One JSON object per line.
    JsonLines,
}

fn bad(m: String) -> ApiError {
    ApiError::Scim(scim::Error::InvalidValue(m))
}

/// Reads an import's rows.
pub fn parse(body: &[u8], format: Format) -> ApiResult<Vec<ImportRow>> {
    let mut rows = Vec::new();
    match format {
        Format::Csv => {
            let mut r = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(body);
            let headers = r
                .headers()
                .map_err(|e| bad(format!("the CSV header: {e}")))?
                .clone();
            let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
            let (Some(u), Some(p), Some(l), Some(a)) =
                (col("user"), col("product"), col("plan"), col("assigned_at"))
            else {
                return Err(bad(
                    "the CSV header must name user, product, plan and assigned_at".into(),
                ));
            };
            for (i, rec) in r.records().enumerate() {
                let rec = rec.map_err(|e| bad(format!("line {}: {e}", i + 2)))?;
                let get = |j: usize| rec.get(j).unwrap_or_default().to_string();
                rows.push(ImportRow {
                    line: i + 1,
                    user: get(u),
                    product: get(p),
                    plan: get(l),
                    assigned_at: get(a),
                });
                if rows.len() > MAX_ROWS {
                    return Err(bad(format!("at most {MAX_ROWS} rows per import")));
                }
            }
        }
        Format::JsonLines => {
            let text =
                std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let mut row: ImportRow =
                    serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
                row.line = i + 1;
                rows.push(row);
                if rows.len() > MAX_ROWS {
                    return Err(bad(format!("at most {MAX_ROWS} rows per import")));
                }
            }
        }
    }
    if rows.is_empty() {
        return Err(bad("the import holds no rows".into()));
    }
    Ok(rows)
}

/// The pin an imported seat becomes.
fn import_pin(product: &str, plan: &str, assigned_at: &str) -> ApiResult<Pin> {
    Ok(Pin {
        product: Key::new("product", product).map_err(|e| bad(e.to_string()))?,
        plan: Some(Key::new("plan", plan).map_err(|e| bad(e.to_string()))?),
        by: "import".into(),
        reason: format!("imported: assigned {assigned_at}"),
        expires_at: None,
    })
}

/// Applies an import's rows in the caller's transaction (under the tenant's lock).
pub fn run(tx: &mut Tx<'_>, c: &Cause, rows: Vec<ImportRow>) -> ApiResult<ImportReport> {
    let tenant = c.tenant.as_str();
    tx.lock_tenant(tenant)?;
    let products = tx.products()?;
    let subscribed: BTreeSet<String> = tx
        .subscriptions(tenant)?
        .iter()
        .map(|s| s.product.to_string())
        .collect();
    let mut report = ImportReport::default();
    let mut valid: Vec<(ImportRow, OffsetDateTime)> = Vec::with_capacity(rows.len());
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for row in rows {
        let refuse = |reason: String| Refused {
            line: row.line,
            user: row.user.clone(),
            reason,
        };
        let checked = (|| -> Result<OffsetDateTime, String> {
            if row.user.trim().is_empty() {
                return Err("no user".into());
            }
            let product = products
                .iter()
                .find(|p| p.key.as_str() == row.product)
                .ok_or_else(|| format!("no product {} in the catalogue", row.product))?;
            if !subscribed.contains(&row.product) {
                return Err(format!("the tenant has no subscription to {}", row.product));
            }
            let plan = Key::new("plan", &row.plan).map_err(|e| e.to_string())?;
            if product.plan(&plan).is_none() {
                return Err(format!("product {} has no plan {}", row.product, row.plan));
            }
            let at = crate::kernel::ids::Instant::parse(&row.assigned_at)
                .map_err(|e| format!("assigned_at: {e}"))?
                .at();
            if at > c.now {
                return Err(format!("assigned_at {} is in the future", row.assigned_at));
            }
            if !seen.insert((row.user.to_lowercase(), row.product.clone())) {
                return Err("a second row for this user and product".into());
            }
            Ok(at)
        })();
        match checked {
            Ok(at) => valid.push((row, at)),
            Err(reason) => report.refused.push(refuse(reason)),
        }
    }
    // Earlier assignments first; the input's order breaks ties.
    valid.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.line.cmp(&b.0.line)));
    let now = time_text(c.now);
    let mut emails: Option<HashMap<String, String>> = None;
    let mut order: Vec<String> = Vec::new();
    let mut in_order: BTreeSet<String> = BTreeSet::new();
    for (row, at) in valid {
        let mut found = tx.find_user(tenant, &row.user)?;
        if found.is_none() && row.user.contains('@') {
            let map = match &mut emails {
                Some(m) => m,
                None => emails.insert(tx.user_emails(tenant)?.into_iter().collect()),
            };
            found = map.get(&row.user.to_lowercase()).cloned();
        }
        match found {
            Some(id) => {
                let pin = import_pin(&row.product, &row.plan, &time_text(at))?;
                tx.put_pin(tenant, &id, &pin, &now)?;
                if in_order.insert(id.clone()) {
                    order.push(id.clone());
                }
                report.matched.push(Matched { row, user_id: id });
            }
            None => {
                tx.put_claim(
                    tenant,
                    &ClaimRow {
                        user: row.user.to_lowercase(),
                        product: row.product.clone(),
                        plan: row.plan.clone(),
                        assigned_at: time_text(at),
                    },
                    &now,
                )?;
                report.pending.push(row);
            }
        }
    }
    tx.bump_model(tenant)?;
    c.audit(
        tx,
        "import.apply",
        ("Tenant", tenant),
        None,
        Some(serde_json::json!({
            "matched": report.matched.len(),
            "pending": report.pending.len(),
            "refused": report.refused.len(),
        })),
    )?;
    if !order.is_empty() {
        report.licenses = relicense(tx, c, Scope::InOrder(order))?;
        // The other system's order becomes the line's: each imported seat takes its place by
        // assigned_at, ahead of seats seatkeeper gave, and the line is seated again.
        let mut queues: BTreeMap<String, HashMap<String, i64>> = BTreeMap::new();
        for m in &report.matched {
            if let Ok(at) = crate::kernel::ids::Instant::parse(&m.row.assigned_at) {
                let q = imported_queue(at.at());
                let slot = queues
                    .entry(m.row.product.clone())
                    .or_default()
                    .entry(m.user_id.clone())
                    .or_insert(q);
                *slot = (*slot).min(q);
            }
        }
        for (product, q) in &queues {
            let o = reseat(tx, c, product, q)?;
            report.licenses.add(&o);
        }
    }
    Ok(report)
}

/// A user just created (in this transaction): the import claims that name them (userName,
/// an email or externalId, any case) become their pins, the user is decided with them, and
/// each claimed seat takes its imported place in line. Returns the user's licenses when a
/// claim named them.
#[allow(clippy::type_complexity)]
pub fn honour_claims(
    tx: &mut Tx<'_>,
    c: &Cause,
    id: &str,
    doc: &Value,
) -> ApiResult<Option<(Vec<LicenseRow>, std::sync::Arc<Model>)>> {
    let tenant = c.tenant.as_str();
    let mut refs: Vec<String> = Vec::new();
    for v in [doc.get("userName"), doc.get("externalId")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        refs.push(v.to_lowercase());
    }
    for e in doc["emails"].as_array().into_iter().flatten() {
        if let Some(v) = e["value"].as_str() {
            refs.push(v.to_lowercase());
        }
    }
    refs.sort();
    refs.dedup();
    let claims = tx.take_claims(tenant, &refs)?;
    if claims.is_empty() {
        return Ok(None);
    }
    let now = time_text(c.now);
    for claim in &claims {
        let pin = import_pin(&claim.product, &claim.plan, &claim.assigned_at)?;
        tx.put_pin(tenant, id, &pin, &now)?;
    }
    tx.bump_model(tenant)?;
    c.audit(
        tx,
        "import.claim",
        ("User", id),
        None,
        Some(serde_json::json!({"claims": claims})),
    )?;
    let (_, model) = crate::licenses::decide::license_returned(tx, c, id)?;
    for claim in &claims {
        if let Ok(at) = crate::kernel::ids::Instant::parse(&claim.assigned_at) {
            let queues = HashMap::from([(id.to_string(), imported_queue(at.at()))]);
            reseat(tx, c, &claim.product, &queues)?;
        }
    }
    Ok(Some((tx.licenses(tenant, Some(&[id.to_string()]))?, model)))
}

/// The report as the CLI prints it: counts, then each refused row with its reason.
pub fn import_text(r: &ImportReport) -> String {
    let mut out = format!(
        "matched: {} rows (users in the directory)\npending: {} rows (kept until SCIM creates their users)\nrefused: {} rows\n",
        r.matched.len(),
        r.pending.len(),
        r.refused.len()
    );
    for x in &r.refused {
        out.push_str(&format!("  line {}: {}: {}\n", x.line, x.user, x.reason));
    }
    let o = &r.licenses;
    out.push_str(&format!(
        "licenses: {} assigned, {} waitlisted, {} promoted, {} changed plan, {} revoked\n",
        o.assigned, o.waitlisted, o.promoted, o.changed, o.revoked
    ));
    out.push_str(if r.dry_run {
        "dry run: nothing was imported\n"
    } else {
        "imported\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_lines_read_alike() {
        let csv = b"plan,user,assigned_at,product\npro, alice@x.test ,2025-01-01T00:00:00Z,ws\n";
        let rows = parse(csv, Format::Csv).unwrap();
        assert_eq!(rows[0].user, "alice@x.test");
        assert_eq!(rows[0].line, 1);
        let jl = br#"{"user": "alice@x.test", "product": "ws", "plan": "pro", "assigned_at": "2025-01-01T00:00:00Z"}"#;
        let rows2 = parse(jl, Format::JsonLines).unwrap();
        assert_eq!(rows, rows2);
        assert!(parse(b"user,product\nx,y\n", Format::Csv).is_err());
        assert!(parse(b"{\"user\": 1}", Format::JsonLines).is_err());
        assert!(parse(b"", Format::JsonLines).is_err());
    }
}
