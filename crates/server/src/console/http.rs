//! `/ui`: the console's routes. Every page but the sign-in needs a session cookie (else a
//! redirect to `/ui/login`); every form that changes state carries the session's CSRF token
//! (else 403); every answer carries a `Content-Security-Policy` that allows this origin only.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use crate::kernel::extract::Path;
use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cookie::Cookie;
use futures::StreamExt as _;
use serde_json::json;

use crate::audit::service::AuditQuery;
use crate::console::pages::{
    AuditPage, ErrorPage, EventsPage, Login, OverviewPage, TenantPageView, UserPage,
};
use crate::console::service::{Console, EventRow, SESSION_LIFETIME};
use crate::kernel::error::ApiError;
use crate::kernel::extract::Query;
use crate::reports::service::{Order, Sort};
use crate::state::Shared;

const SESSION_COOKIE: &str = "sk_session";
const LOGIN_COOKIE: &str = "sk_login";
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const CSS: &str = include_str!("../../static/console.css");
const JS: &str = include_str!("../../static/console.js");

/// The routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(to_console))
        .route("/dashboard", get(to_console))
        .route("/ui/", get(to_console))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui", get(overview))
        .route("/ui/tenants/{id}", get(tenant))
        .route("/ui/tenants/{id}/users/{user_id}", get(user))
        .route("/ui/tenants/{id}/audit", get(audit))
        .route("/ui/tenants/{id}/audit/export", get(audit_export))
        .route("/ui/live", get(live))
        .route("/ui/events", get(events_page))
        .route("/ui/events/live", get(events_live))
        .route("/ui/static/console.css", get(css))
        .route("/ui/static/console.js", get(js))
        .layer(axum::middleware::map_response(secure_headers))
}

pub(crate) async fn secure_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn to_console() -> Redirect {
    Redirect::to("/ui")
}

async fn css() -> Response {
    static_asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    static_asset(JS, "text/javascript; charset=utf-8")
}

fn static_asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| Cookie::split_parse(v.to_string()))
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A cookie for `/ui`: HttpOnly, SameSite=Strict, Secure when the public URL is https.
fn ui_cookie(state: &Shared, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut c = Cookie::build((name.to_string(), value.to_string()))
        .path("/ui")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(
            state
                .gate
                .public_url()
                .is_some_and(|u| u.starts_with("https://")),
        );
    if let Some(s) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(s));
    }
    HeaderValue::from_str(&c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
}

pub(crate) fn page(t: impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

/// An error as a page.
fn error_page(csrf: &str, e: ApiError) -> Response {
    let status = e.status();
    let message = match &e {
        ApiError::Internal(_) => "Something went wrong on the server; it is logged.".to_string(),
        other => other.detail(),
    };
    page(
        ErrorPage {
            csrf: csrf.to_string(),
            status: status.as_u16(),
            message,
        },
        status,
    )
}

/// A signed-in browser: its session token and the session's CSRF token. Without one, the
/// request is sent to the sign-in page.
struct UiSession {
    token: String,
    csrf: String,
}

impl FromRequestParts<Shared> for UiSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let Some(token) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        match state.console.session(&token).await {
            Ok(Some(csrf)) => Ok(UiSession { token, csrf }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(error_page("", e)),
        }
    }
}

async fn login_page(State(state): State<Shared>) -> Response {
    let csrf = crate::kernel::auth::generate_token("skl_");
    let mut resp = page(
        Login {
            csrf: csrf.clone(),
            error: None,
        },
        StatusCode::OK,
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        ui_cookie(&state, LOGIN_COOKIE, &csrf, Some(3600)),
    );
    resp
}

pub(crate) fn forbidden(what: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("403 Forbidden: {what}"),
    )
        .into_response()
}

async fn login(
    State(state): State<Shared>,
    headers: HeaderMap,
    form: Result<axum::Form<BTreeMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    // A post that is not a form carries no token either: refused like one without it.
    let form = form.map(|f| f.0).unwrap_or_default();
    // The sign-in form's token is double-submitted: the cookie set with the form and the
    // field must agree.
    let expected = cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !Console::csrf_holds(&expected, form.get("csrf").map(String::as_str))
    {
        return forbidden("the form's CSRF token is missing or wrong; reload the sign-in page");
    }
    let token = form.get("token").map(String::as_str).unwrap_or_default();
    if token.is_empty() || !state.gate.is_admin_token(token) {
        return page(
            Login {
                csrf: expected,
                error: Some("That is not the admin token. Check SEATKEEPER_ADMIN_TOKEN (or what `seatkeeper demo` printed) and try again.".into()),
            },
            StatusCode::UNAUTHORIZED,
        );
    }
    match state.console.start_session().await {
        Ok(s) => {
            let mut resp = Redirect::to("/ui").into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                ui_cookie(
                    &state,
                    SESSION_COOKIE,
                    &s.token,
                    Some(SESSION_LIFETIME.whole_seconds()),
                ),
            );
            h.append(
                header::SET_COOKIE,
                ui_cookie(&state, LOGIN_COOKIE, "", Some(0)),
            );
            resp
        }
        Err(e) => error_page("", e),
    }
}

async fn logout(
    State(state): State<Shared>,
    session: UiSession,
    form: Result<axum::Form<BTreeMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.map(|f| f.0).unwrap_or_default();
    if !Console::csrf_holds(&session.csrf, form.get("csrf").map(String::as_str)) {
        return forbidden("the form's CSRF token is missing or wrong");
    }
    if let Err(e) = state.console.end_session(&session.token).await {
        return error_page(&session.csrf, e);
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        ui_cookie(&state, SESSION_COOKIE, "", Some(0)),
    );
    resp
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverviewQuery {
    q: Option<String>,
    sort: Option<Sort>,
    order: Option<Order>,
    cursor: Option<String>,
}

fn sort_name(s: Sort) -> &'static str {
    match s {
        Sort::Name => "name",
        Sort::Utilisation => "utilisation",
        Sort::Overage => "overage",
        Sort::Waitlisted => "waitlisted",
        Sort::Idle => "idle",
        Sort::EndsAt => "ends_at",
    }
}

async fn overview(
    State(state): State<Shared>,
    session: UiSession,
    q: Result<Query<OverviewQuery>, ApiError>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error_page(&session.csrf, e),
    };
    let sort = q.sort.unwrap_or(Sort::Name);
    let order = q.order.unwrap_or(Order::Asc);
    let search = q.q.unwrap_or_default();
    match state
        .console
        .overview(&search, sort, order, q.cursor.as_deref())
        .await
    {
        Ok(o) => {
            let mut ids: Vec<String> = o.tenants.iter().map(|t| t.id.clone()).collect();
            ids.dedup();
            page(
                OverviewPage {
                    csrf: session.csrf,
                    live: ids.join(","),
                    tenants: o.tenants,
                    matching: o.matching,
                    q: search,
                    sort: sort_name(sort).into(),
                    order: if order == Order::Desc { "desc" } else { "asc" }.into(),
                    next: o.next,
                },
                StatusCode::OK,
            )
        }
        Err(e) => error_page(&session.csrf, e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    days: Option<i64>,
}

async fn tenant(
    State(state): State<Shared>,
    session: UiSession,
    Path(id): Path<String>,
    q: Result<Query<TenantQuery>, ApiError>,
) -> Response {
    let days = match q {
        Ok(Query(q)) => match q.days.unwrap_or(30) {
            d @ (30 | 90 | 365) => d,
            other => {
                return error_page(
                    &session.csrf,
                    scim::Error::InvalidValue(format!("days must be 30, 90 or 365, not {other}"))
                        .into(),
                );
            }
        },
        Err(e) => return error_page(&session.csrf, e),
    };
    match state.console.tenant(&id, days).await {
        Ok(p) => page(
            TenantPageView {
                days,
                csrf: session.csrf,
                idle_total: p.idle["total"].as_u64().unwrap_or(0),
                idle: p.idle["idle"].as_array().cloned().unwrap_or_default(),
                tenant: p.tenant,
                waitlist: p.waitlist,
                rules: p.rules,
                events: p.events,
                held: p.held,
                pins: p.pins,
            },
            StatusCode::OK,
        ),
        Err(e) => error_page(&session.csrf, e),
    }
}

async fn user(
    State(state): State<Shared>,
    session: UiSession,
    Path((id, user_id)): Path<(String, String)>,
) -> Response {
    let name = match state.console.tenant_name(&id).await {
        Ok(n) => n,
        Err(e) => return error_page(&session.csrf, e),
    };
    match state.console.user(&id, &user_id).await {
        Ok((user_name, v)) => page(
            UserPage {
                csrf: session.csrf,
                tenant_id: id,
                tenant_name: name,
                user_id,
                user_name,
                last_seen: v["last_seen"].as_str().unwrap_or_default().to_string(),
                licenses: v["licenses"].as_array().cloned().unwrap_or_default(),
                roles: v["roles"].as_array().cloned().unwrap_or_default(),
                sign_ins: v["sign_ins"]["count"].as_i64().unwrap_or(0),
                history: v["history"].as_array().cloned().unwrap_or_default(),
            },
            StatusCode::OK,
        ),
        Err(e) => error_page(&session.csrf, e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuditFilters {
    action: Option<String>,
    actor: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<i64>,
    format: Option<String>,
}

impl AuditFilters {
    fn query(&self) -> AuditQuery {
        let some = |o: &Option<String>| o.clone().filter(|s| !s.trim().is_empty());
        AuditQuery {
            from: some(&self.from),
            to: some(&self.to),
            actor: some(&self.actor),
            action: some(&self.action),
            resource_type: some(&self.resource_type),
            resource_id: some(&self.resource_id),
            user: some(&self.user),
            ..Default::default()
        }
    }

    fn query_string(&self) -> String {
        let pairs = [
            ("action", &self.action),
            ("actor", &self.actor),
            ("resource_type", &self.resource_type),
            ("resource_id", &self.resource_id),
            ("user", &self.user),
            ("from", &self.from),
            ("to", &self.to),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| {
                v.as_deref()
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("{k}={}", urlencoding(v)))
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn audit(
    State(state): State<Shared>,
    session: UiSession,
    Path(id): Path<String>,
    f: Result<Query<AuditFilters>, ApiError>,
) -> Response {
    let Query(f) = match f {
        Ok(f) => f,
        Err(e) => return error_page(&session.csrf, e),
    };
    let name = match state.console.tenant_name(&id).await {
        Ok(n) => n,
        Err(e) => return error_page(&session.csrf, e),
    };
    match state
        .console
        .audit(&id, &f.query(), f.after.unwrap_or(0))
        .await
    {
        Ok(records) => {
            let next = (records.len() == 100)
                .then(|| records.last().map(|r| r.seq))
                .flatten();
            page(
                AuditPage {
                    csrf: session.csrf,
                    tenant_id: id,
                    tenant_name: name,
                    records,
                    filters: f.query_string(),
                    action: f.action.unwrap_or_default(),
                    actor: f.actor.unwrap_or_default(),
                    resource_type: f.resource_type.unwrap_or_default(),
                    resource_id: f.resource_id.unwrap_or_default(),
                    user: f.user.unwrap_or_default(),
                    from: f.from.unwrap_or_default(),
                    to: f.to.unwrap_or_default(),
                    next,
                },
                StatusCode::OK,
            )
        }
        Err(e) => error_page(&session.csrf, e),
    }
}

/// The audit records matching the filters, whole, as CSV or JSON lines (what the audit API
/// exports, for a signed-in browser).
async fn audit_export(
    State(state): State<Shared>,
    session: UiSession,
    Path(id): Path<String>,
    f: Result<Query<AuditFilters>, ApiError>,
) -> Response {
    let Query(f) = match f {
        Ok(f) => f,
        Err(e) => return error_page(&session.csrf, e),
    };
    let csv = match f.format.as_deref() {
        None | Some("csv") => true,
        Some("jsonl") => false,
        Some(other) => {
            return error_page(
                &session.csrf,
                scim::Error::InvalidValue(format!("format must be csv or jsonl, not '{other}'"))
                    .into(),
            );
        }
    };
    match state.audit.export(&id, &f.query(), csv).await {
        Ok(body) => {
            let (kind, name) = if csv {
                ("text/csv; charset=utf-8", "audit.csv")
            } else {
                ("application/x-ndjson", "audit.jsonl")
            };
            let mut resp = (
                [(header::CONTENT_TYPE, HeaderValue::from_static(kind))],
                body,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => error_page(&session.csrf, e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFilters {
    #[serde(rename = "type")]
    kind: Option<String>,
    tenant: Option<String>,
    after: Option<String>,
}

impl EventFilters {
    fn kind(&self) -> Option<&str> {
        self.kind
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn tenant(&self) -> Option<&str> {
        self.tenant
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn matches(&self, e: &EventRow) -> bool {
        self.tenant().is_none_or(|t| e.tenant_id == t)
            && self.kind().is_none_or(|k| match k.strip_suffix('*') {
                Some(prefix) => e.event_type.starts_with(prefix),
                None => e.event_type == k,
            })
    }
}

async fn events_page(
    State(state): State<Shared>,
    session: UiSession,
    f: Result<Query<EventFilters>, ApiError>,
) -> Response {
    let Query(f) = match f {
        Ok(f) => f,
        Err(e) => return error_page(&session.csrf, e),
    };
    match state.console.events(f.tenant(), f.kind()).await {
        Ok((events, start)) => {
            let mut live = format!(
                "/ui/events/live?after={}",
                crate::events::service::position_text(start)
            );
            if let Some(k) = f.kind() {
                live.push_str(&format!("&type={}", urlencoding(k)));
            }
            if let Some(t) = f.tenant() {
                live.push_str(&format!("&tenant={}", urlencoding(t)));
            }
            page(
                EventsPage {
                    csrf: session.csrf,
                    events,
                    kind: f.kind().unwrap_or_default().to_string(),
                    tenant: f.tenant().unwrap_or_default().to_string(),
                    live,
                },
                StatusCode::OK,
            )
        }
        Err(e) => error_page(&session.csrf, e),
    }
}

/// The events page's stream: every tenant's events after the page's position that match
/// its filters, as `event` messages.
async fn events_live(
    State(state): State<Shared>,
    _session: UiSession,
    headers: HeaderMap,
    f: Result<Query<EventFilters>, ApiError>,
) -> Response {
    let Query(f) = match f {
        Ok(f) => f,
        Err(e) => return error_page("", e),
    };
    let resume = crate::kernel::extract::header(&headers, "last-event-id")
        .or(f.after.as_deref())
        .and_then(crate::events::service::parse_position);
    let after = match resume {
        Some(p) => p,
        None => match state.console.events_start().await {
            Ok(p) => p,
            Err(e) => return error_page("", e),
        },
    };
    let stream = state.console.events_live(after).filter_map(move |e| {
        let out = match e {
            Ok((pos, r)) if f.matches(&r) => Some(Ok::<_, Infallible>(
                SseEvent::default()
                    .id(crate::events::service::position_text(pos))
                    .event("event")
                    .data(crate::events::dispatcher::envelope(&r).to_string()),
            )),
            _ => None,
        };
        std::future::ready(out)
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveQuery {
    tenants: String,
    events: Option<u8>,
}

/// Most tenants one page follows live.
const LIVE_MAX_TENANTS: usize = 100;

/// Live figures of a page's tenants: a `figures` event with the rows whose counts moved,
/// sent at most 200 ms after the commit that moved them (and checked every 2 s anyway);
/// with `events=1` (one tenant), each new event of the tenant as an `event`.
async fn live(
    State(state): State<Shared>,
    _session: UiSession,
    q: Result<Query<LiveQuery>, ApiError>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error_page("", e),
    };
    let ids: Vec<String> = q
        .tenants
        .split(',')
        .filter(|s| !s.is_empty())
        .take(LIVE_MAX_TENANTS)
        .map(str::to_string)
        .collect();
    let with_events = q.events == Some(1) && ids.len() == 1;
    let console = state.console.clone();
    let commits = state.console.commits();
    let last_event = if with_events {
        console.newest_event(&ids[0]).await.unwrap_or(0)
    } else {
        0
    };
    let start = Live {
        console,
        ids,
        with_events,
        last_event,
        sent: BTreeMap::new(),
        commits,
        first: true,
    };
    let stream = futures::stream::unfold(start, |mut st| async move {
        loop {
            if !st.first {
                tokio::select! {
                    r = st.commits.changed() => {
                        if r.is_err() { return None; }
                        // Let a burst of commits settle into one update.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            st.first = false;
            st.commits.borrow_and_update();
            let mut out: Vec<SseEvent> = Vec::new();
            if let Ok(rows) = st.console.figures(&st.ids).await {
                let moved: Vec<serde_json::Value> = rows
                    .iter()
                    .filter_map(|r| {
                        let key = format!("{}.{}", r.tenant, r.product);
                        let figs = [
                            r.seats as usize,
                            r.active,
                            r.waitlisted,
                            r.overage,
                            r.idle,
                            r.seat_free,
                        ];
                        if st.sent.get(&key) == Some(&figs) {
                            return None;
                        }
                        st.sent.insert(key, figs);
                        Some(
                            json!({"tenant": r.tenant, "product": r.product, "seats": r.seats,
                            "active": r.active, "waitlisted": r.waitlisted, "overage": r.overage,
                            "idle": r.idle, "seat_free": r.seat_free}),
                        )
                    })
                    .collect();
                if !moved.is_empty() {
                    out.push(
                        SseEvent::default()
                            .event("figures")
                            .data(serde_json::Value::Array(moved).to_string()),
                    );
                }
            }
            if st.with_events
                && let Ok(new) = st.console.events_after(&st.ids[0], st.last_event).await
            {
                for (id, e) in new {
                    st.last_event = id;
                    out.push(SseEvent::default().event("event").data(e.to_string()));
                }
            }
            if !out.is_empty() {
                return Some((
                    futures::stream::iter(out.into_iter().map(Ok::<_, Infallible>)),
                    st,
                ));
            }
        }
    });
    let stream = futures::StreamExt::flatten(stream);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Live {
    console: Console,
    ids: Vec<String>,
    with_events: bool,
    last_event: i64,
    sent: BTreeMap<String, [usize; 6]>,
    commits: tokio::sync::watch::Receiver<u64>,
    first: bool,
}
