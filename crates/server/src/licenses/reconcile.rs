//! Reconciliation, two ways.
//!
//! **Against the application's view**: the vendor's application says who actually holds or
//! uses each product; the report names who uses a product without a license
//! (`unlicensed_use`), who holds a license the application does not see (`unused_license`),
//! whose plan differs (`plan_mismatch`) and whom the directory does not know
//! (`unknown_user`).
//!
//! **Against itself** (`seatkeeper reconcile --check`): every decision is made again from
//! scratch — the directory, the model, the pins and the time — and compared with the stored
//! licenses and seat counts; `--repair` brings them back, one transaction per tenant.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::Tx;
use crate::licenses::decide::{Cause, Model, Outcome, Scope, is_active, relicense};
use crate::licenses::store::{LicenseRow, Line, NO_SEAT};
use licensing::model::Enforcement;

/// One row of the application's view: a user uses a product (on a plan, if it says).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseRow {
    /// The user: id, userName, an email or externalId.
    pub user: String,
    /// The product.
    pub product: String,
    /// The plan the application sees, if it knows.
    #[serde(default)]
    pub plan: Option<String>,
}

/// A finding of the reconciliation against the application's view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UseFinding {
    /// `unlicensed_use`, `unused_license`, `plan_mismatch` or `unknown_user`.
    pub category: &'static str,
    /// The user as the application named them (or their userName).
    pub user: String,
    /// The user's id, when the directory knows them.
    pub user_id: Option<String>,
    /// The product.
    pub product: String,
    /// The plan the application sees.
    pub app_plan: Option<String>,
    /// The plan the user's license grants (with its state), if any.
    pub licensed_plan: Option<String>,
}

/// Every category, in report order, with what it means.
pub const CATEGORIES: &[(&str, &str)] = &[
    ("unlicensed_use", "in the list, but holds no active license"),
    (
        "unused_license",
        "holds an active license, but is not in the list",
    ),
    ("plan_mismatch", "the plan differs"),
    ("unknown_user", "not in the directory"),
];

fn bad(m: String) -> ApiError {
    ApiError::Scim(scim::Error::InvalidValue(m))
}

/// Reads the application's view: CSV with a header naming `user`, `product` (and `plan`),
/// or JSON lines.
pub fn parse_uses(body: &[u8], json_lines: bool) -> ApiResult<Vec<UseRow>> {
    let mut rows = Vec::new();
    if json_lines {
        let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            rows.push(
                serde_json::from_str::<UseRow>(line)
                    .map_err(|e| bad(format!("line {}: {e}", i + 1)))?,
            );
        }
    } else {
        let mut r = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(body);
        let headers = r
            .headers()
            .map_err(|e| bad(format!("the CSV header: {e}")))?
            .clone();
        let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(u), Some(p)) = (col("user"), col("product")) else {
            return Err(bad(
                "the CSV header must name user and product (and plan)".into()
            ));
        };
        let l = col("plan");
        for (i, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| bad(format!("line {}: {e}", i + 2)))?;
            let get = |j: usize| rec.get(j).unwrap_or_default().to_string();
            rows.push(UseRow {
                user: get(u),
                product: get(p),
                plan: l.map(get).filter(|s| !s.is_empty()),
            });
        }
    }
    if rows.is_empty() {
        return Err(bad("the list holds no rows".into()));
    }
    if rows.len() > crate::licenses::import::MAX_ROWS {
        return Err(bad(format!(
            "at most {} rows per reconciliation",
            crate::licenses::import::MAX_ROWS
        )));
    }
    Ok(rows)
}

/// Compares the application's view with the licenses (in a read transaction).
pub fn against_uses(tx: &mut Tx<'_>, tenant: &str, uses: &[UseRow]) -> ApiResult<Vec<UseFinding>> {
    let licenses = tx.licenses(tenant, None)?;
    let mut by_user: HashMap<(String, String), &LicenseRow> = HashMap::new();
    for l in &licenses {
        by_user.insert((l.user_id.clone(), l.product.clone()), l);
    }
    let mut emails: Option<HashMap<String, String>> = None;
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut out = Vec::new();
    for u in uses {
        let mut id = tx.find_user(tenant, &u.user)?;
        if id.is_none() && u.user.contains('@') {
            let map = match &mut emails {
                Some(m) => m,
                None => emails.insert(tx.user_emails(tenant)?.into_iter().collect()),
            };
            id = map.get(&u.user.to_lowercase()).cloned();
        }
        let Some(id) = id else {
            out.push(UseFinding {
                category: "unknown_user",
                user: u.user.clone(),
                user_id: None,
                product: u.product.clone(),
                app_plan: u.plan.clone(),
                licensed_plan: None,
            });
            continue;
        };
        seen.insert((id.clone(), u.product.clone()));
        let row = by_user.get(&(id.clone(), u.product.clone()));
        match row.filter(|l| l.state == "active") {
            None => out.push(UseFinding {
                category: "unlicensed_use",
                user: u.user.clone(),
                user_id: Some(id),
                product: u.product.clone(),
                app_plan: u.plan.clone(),
                licensed_plan: row.map(|l| format!("{} ({})", l.plan, l.state)),
            }),
            Some(l) if u.plan.as_deref().is_some_and(|p| p != l.plan) => out.push(UseFinding {
                category: "plan_mismatch",
                user: u.user.clone(),
                user_id: Some(id),
                product: u.product.clone(),
                app_plan: u.plan.clone(),
                licensed_plan: Some(l.plan.clone()),
            }),
            Some(_) => {}
        }
    }
    // Licenses of the products the list covers that the application does not see.
    let products: BTreeSet<&str> = uses.iter().map(|u| u.product.as_str()).collect();
    let names: HashMap<String, String> = tx.user_names(tenant)?.into_iter().collect();
    for l in &licenses {
        if l.state == "active"
            && products.contains(l.product.as_str())
            && !seen.contains(&(l.user_id.clone(), l.product.clone()))
        {
            out.push(UseFinding {
                category: "unused_license",
                user: names
                    .get(&l.user_id)
                    .cloned()
                    .unwrap_or_else(|| l.user_id.clone()),
                user_id: Some(l.user_id.clone()),
                product: l.product.clone(),
                app_plan: None,
                licensed_plan: Some(l.plan.clone()),
            });
        }
    }
    let rank = |c: &str| CATEGORIES.iter().position(|(n, _)| *n == c).unwrap_or(99);
    out.sort_by(|a, b| {
        rank(a.category)
            .cmp(&rank(b.category))
            .then_with(|| a.user.cmp(&b.user))
            .then_with(|| a.product.cmp(&b.product))
    });
    Ok(out)
}

/// The findings as CSV, with a header.
pub fn uses_csv(findings: &[UseFinding]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "category",
        "user",
        "user_id",
        "product",
        "app_plan",
        "licensed_plan",
    ])?;
    for f in findings {
        // The user and plans come from the uploaded file: never a formula in the report.
        let cell = crate::kernel::csv_cell::cell;
        w.write_record([
            f.category,
            &cell(&f.user),
            f.user_id.as_deref().unwrap_or_default(),
            &cell(&f.product),
            &cell(f.app_plan.as_deref().unwrap_or_default()),
            f.licensed_plan.as_deref().unwrap_or_default(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// A difference between what is stored and what deciding again from scratch gives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The tenant.
    pub tenant: String,
    /// `missing_license`, `extra_license`, `wrong_plan`, `wrong_state` or `seat_count`.
    pub kind: &'static str,
    /// The user (none for a seat count).
    pub user: Option<String>,
    /// The product.
    pub product: String,
    /// What is stored.
    pub stored: String,
    /// What it should be.
    pub expected: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}{}: stored {}, expected {}",
            self.tenant,
            self.kind,
            self.product,
            self.user
                .as_deref()
                .map(|u| format!(" user {u}"))
                .unwrap_or_default(),
            self.stored,
            self.expected
        )
    }
}

/// What deciding a tenant again gives: each user's plan per product, then each line's states.
struct Expected {
    /// (user, product) → plan.
    plans: BTreeMap<(String, String), String>,
    /// (user, product) → state, for the licenses that exist with the right plan.
    states: BTreeMap<(String, String), &'static str>,
}

fn expected(tx: &mut Tx<'_>, c: &Cause, stored: &[LicenseRow]) -> ApiResult<Expected> {
    let tenant = c.tenant.as_str();
    let model = Model::load(tx, tenant)?;
    let subjects = tx.rule_subjects(tenant, None, model.reads_groups())?;
    let mut plans = BTreeMap::new();
    for (user, doc) in &subjects {
        if model.held.contains(user) {
            continue;
        }
        let decided = licensing::rules::decide_pinned(
            doc,
            is_active(doc),
            &model.rules,
            model.pins.get(user).map_or(&[], Vec::as_slice),
            &model.subscriptions,
            &model.products,
            c.now,
        );
        for (product, d) in decided {
            plans.insert((user.clone(), product.to_string()), d.plan.to_string());
        }
    }
    // Held users keep what they hold.
    for l in stored.iter().filter(|l| model.held.contains(&l.user_id)) {
        plans.insert((l.user_id.clone(), l.product.clone()), l.plan.clone());
    }
    // Seats: the stored line order (queue) is the memory of who came first; deciding again
    // gives each line's fixed point in that order.
    let mut states = BTreeMap::new();
    for sub in &model.subscriptions {
        let product = sub.product.as_str();
        let seated = |plan: &str| model.seated(product, plan);
        let mut claims = Vec::new();
        for l in stored.iter().filter(|l| l.product == product) {
            let key = (l.user_id.clone(), l.product.clone());
            let Some(plan) = plans.get(&key) else {
                continue;
            };
            if model.held.contains(&l.user_id) {
                // Held: as stored.
                states.insert(key, state_name(&l.state));
                continue;
            }
            if !seated(plan) {
                states.insert(key, "active");
            } else if l.state == "reclaimed" {
                states.insert(key, "reclaimed");
            } else if l.queue != NO_SEAT {
                claims.push(licensing::seats::Claim {
                    user: l.user_id.clone(),
                    holds_seat: l.state == "active",
                    since: l.queue,
                });
            }
        }
        let a =
            licensing::seats::allocate(sub.seats, sub.enforcement == Enforcement::Hard, &claims);
        for u in a.active {
            states.insert((u, product.to_string()), "active");
        }
        for u in a.waitlisted {
            states.insert((u, product.to_string()), "waitlisted");
        }
    }
    Ok(Expected { plans, states })
}

fn state_name(s: &str) -> &'static str {
    match s {
        "active" => "active",
        "waitlisted" => "waitlisted",
        "reclaimed" => "reclaimed",
        _ => "unknown",
    }
}

/// Decides one tenant again from scratch and lists where the stored licenses and seat counts
/// differ.
pub fn check(tx: &mut Tx<'_>, c: &Cause) -> ApiResult<Vec<Difference>> {
    let tenant = c.tenant.as_str();
    tx.lock_tenant(tenant)?;
    let stored = tx.licenses(tenant, None)?;
    let want = expected(tx, c, &stored)?;
    let mut out = Vec::new();
    let diff = |kind, user: &str, product: &str, stored: String, expected: String| Difference {
        tenant: tenant.to_string(),
        kind,
        user: Some(user.to_string()),
        product: product.to_string(),
        stored,
        expected,
    };
    let mut have: BTreeSet<(String, String)> = BTreeSet::new();
    for l in &stored {
        let key = (l.user_id.clone(), l.product.clone());
        have.insert(key.clone());
        match want.plans.get(&key) {
            None => out.push(diff(
                "extra_license",
                &l.user_id,
                &l.product,
                format!("{} ({})", l.plan, l.state),
                "no license".into(),
            )),
            Some(plan) if *plan != l.plan => out.push(diff(
                "wrong_plan",
                &l.user_id,
                &l.product,
                l.plan.clone(),
                plan.clone(),
            )),
            Some(_) => {
                if let Some(state) = want.states.get(&key)
                    && *state != l.state
                {
                    out.push(diff(
                        "wrong_state",
                        &l.user_id,
                        &l.product,
                        l.state.clone(),
                        state.to_string(),
                    ));
                }
            }
        }
    }
    for ((user, product), plan) in &want.plans {
        if !have.contains(&(user.clone(), product.clone())) {
            out.push(diff(
                "missing_license",
                user,
                product,
                "no license".into(),
                plan.clone(),
            ));
        }
    }
    // The kept seat counts must be the stored rows' counts.
    let kept = tx.seat_lines_of(tenant)?;
    let counted = tx.count_lines(tenant)?;
    let products: BTreeSet<&String> = kept.keys().chain(counted.keys()).collect();
    let shown =
        |(a, w, f): (usize, usize, usize)| format!("{a} active, {w} waiting, {f} seat-free");
    for product in products {
        let k = kept
            .get(product)
            .map_or((0, 0, 0), |l| (l.active, l.waiting, l.free));
        let c = counted.get(product).copied().unwrap_or_default();
        if k != c {
            out.push(Difference {
                tenant: tenant.to_string(),
                kind: "seat_count",
                user: None,
                product: product.clone(),
                stored: shown(k),
                expected: shown(c),
            });
        }
    }
    Ok(out)
}

/// Repairs one tenant: states to their lines' fixed points, seat counts from the rows, then
/// every license decided again (missing ones assigned, extra ones revoked, plans corrected).
/// Each difference repaired is audited as `license.repaired`. Returns the differences found.
pub fn repair(tx: &mut Tx<'_>, c: &Cause) -> ApiResult<(Vec<Difference>, Outcome)> {
    let found = check(tx, c)?;
    if found.is_empty() {
        return Ok((found, Outcome::default()));
    }
    let tenant = c.tenant.as_str();
    let stored = tx.licenses(tenant, None)?;
    for d in found.iter().filter(|d| d.kind == "wrong_state") {
        if let Some(mut l) = stored
            .iter()
            .find(|l| Some(&l.user_id) == d.user.as_ref() && l.product == d.product)
            .cloned()
        {
            l.state = d.expected.clone();
            l.reason = format!("{}; repaired", l.reason);
            tx.update_license(tenant, &l)?;
        }
    }
    // Seat counts from the rows as they now are.
    let counted = tx.count_lines(tenant)?;
    let kept = tx.seat_lines_of(tenant)?;
    for (product, mut line) in kept {
        let (a, w, f) = counted.get(&product).copied().unwrap_or_default();
        line.active = a;
        line.waiting = w;
        line.free = f;
        tx.put_line(tenant, &product, line)?;
    }
    for (product, (a, w, f)) in &counted {
        if !tx.seat_lines_of(tenant)?.contains_key(product) {
            let line = Line {
                active: *a,
                waiting: *w,
                free: *f,
                next_queue: tx.max_queue(tenant, product)? + 1,
            };
            tx.put_line(tenant, product, line)?;
        }
    }
    for d in &found {
        c.audit(
            tx,
            "license.repaired",
            (
                "License",
                &match &d.user {
                    Some(u) => format!("{u}/{}", d.product),
                    None => d.product.clone(),
                },
            ),
            Some(json!({"kind": d.kind, "stored": d.stored})),
            Some(json!({"expected": d.expected})),
        )?;
    }
    tx.bump_model(tenant)?;
    let outcome = relicense(tx, c, Scope::All)?;
    Ok((found, outcome))
}

/// The differences as the CLI prints them.
pub fn differences_text(diffs: &[Difference]) -> String {
    diffs.iter().map(|d| format!("{d}\n")).collect()
}

/// The report of a reconciliation against the application's view, as JSON.
pub fn uses_json(generated_at: &str, findings: &[UseFinding]) -> Value {
    let mut counts = serde_json::Map::new();
    for (c, _) in CATEGORIES {
        counts.insert(
            (*c).to_string(),
            json!(findings.iter().filter(|f| f.category == *c).count()),
        );
    }
    json!({"generated_at": generated_at, "counts": counts, "findings": findings})
}
