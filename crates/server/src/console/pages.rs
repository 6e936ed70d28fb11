//! The console's pages: askama templates (in `templates/`, compiled into the binary) and the
//! small view helpers they call.

use askama::Template;
use serde_json::Value;

use crate::console::service::{SubView, TenantView};
use crate::kernel::chain::AuditRow;

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
pub struct Login {
    /// The form token (double-submitted with a cookie).
    pub csrf: String,
    /// What went wrong, if the last attempt failed.
    pub error: Option<String>,
}

/// The overview.
#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub csrf: String,
    pub tenants: Vec<TenantView>,
    pub matching: usize,
    pub q: String,
    pub sort: String,
    pub order: String,
    pub next: Option<String>,
    /// Comma-separated tenant ids, for the live stream.
    pub live: String,
}

/// One tenant.
#[derive(Template)]
#[template(path = "tenant.html")]
pub struct TenantPageView {
    pub csrf: String,
    /// Days of history shown.
    pub days: i64,
    pub tenant: TenantView,
    pub waitlist: Vec<Value>,
    pub idle: Vec<Value>,
    pub idle_total: u64,
    pub rules: Vec<(String, String, String, String, i64)>,
    pub events: Vec<Value>,
    pub held: Vec<crate::licenses::store::HeldRow>,
    pub pins: Vec<Value>,
}

/// Events across tenants.
#[derive(Template)]
#[template(path = "events.html")]
pub struct EventsPage {
    pub csrf: String,
    pub events: Vec<Value>,
    pub kind: String,
    pub tenant: String,
    /// The live stream's URL (with the filters and the starting position).
    pub live: String,
}

/// One user of a tenant.
#[derive(Template)]
#[template(path = "user.html")]
pub struct UserPage {
    pub csrf: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub user_id: String,
    pub user_name: String,
    pub last_seen: String,
    pub licenses: Vec<Value>,
    /// The roles the user is given, with the rules that matched.
    pub roles: Vec<Value>,
    /// How many times the user signed in through SSO.
    pub sign_ins: i64,
    pub history: Vec<Value>,
}

/// A tenant's audit trail.
#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub csrf: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub records: Vec<AuditRow>,
    pub action: String,
    pub actor: String,
    pub resource_type: String,
    pub resource_id: String,
    pub user: String,
    pub from: String,
    pub to: String,
    /// The query string of these filters (for export links and the next page).
    pub filters: String,
    pub next: Option<i64>,
}

/// A page that could not be shown.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub csrf: String,
    pub status: u16,
    pub message: String,
}

/// The items of a JSON array (none for anything else).
pub fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// A JSON value as text for a page: strings bare, null empty, the rest as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The data-testid of one figure.
pub fn figure_id(tenant: &str, product: &str, metric: &str) -> String {
    format!("{tenant}.{product}.{metric}")
}

/// An instant shortened to the minute for a table (`2026-11-22 10:00`).
pub fn short_time(s: impl AsRef<str>) -> String {
    let s = s.as_ref();
    if s.len() >= 16 {
        s[..16].replace('T', " ")
    } else {
        s.to_string()
    }
}

/// A usage chart drawn on the server: seats (dashed), active and waitlisted over the
/// subscription's history, as inline SVG (no script, nothing fetched).
pub fn chart(s: &SubView) -> String {
    let pts = &s.history;
    let (w, h, pad) = (600.0_f64, 160.0_f64, 4.0_f64);
    if pts.len() < 2 {
        return format!(
            "<p class=\"muted\">History starts with the first hourly sample; {} point(s) so far.</p>",
            pts.len()
        );
    }
    let top = pts
        .iter()
        .map(|p| p.counts.seats.max(p.counts.active + p.counts.waitlisted))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (pts.len() - 1) as f64;
    let y = |v: i64| h - pad - (h - 2.0 * pad) * v as f64 / top;
    let line = |f: &dyn Fn(&crate::licenses::history::Point) -> i64| {
        pts.iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(f(&p.counts))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let label = format!(
        "{}: active seats from {} ({}) to {} ({}), of {} bought",
        s.usage.product,
        short_time(&pts[0].at),
        pts[0].counts.active,
        short_time(&pts[pts.len() - 1].at),
        pts[pts.len() - 1].counts.active,
        s.usage.seats
    );
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{label}\" preserveAspectRatio=\"none\">\
<polyline class=\"seats\" points=\"{}\"/><polyline class=\"waitlisted\" points=\"{}\"/><polyline class=\"active\" points=\"{}\"/></svg>\
<p class=\"legend\"><span class=\"k active\">active</span> <span class=\"k waitlisted\">waitlisted</span> <span class=\"k seats\">seats</span> · {} to {}</p>",
        line(&|c| c.seats),
        line(&|c| c.waitlisted),
        line(&|c| c.active),
        short_time(&pts[0].at),
        short_time(&pts[pts.len() - 1].at),
    )
}

/// The utilisation of a subscription as a whole percentage.
pub fn percent(s: &SubView) -> u64 {
    (s.usage.utilisation * 100.0).round() as u64
}

/// A JSON value laid out for reading.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
