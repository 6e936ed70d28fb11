//! Events out: the outbox dispatcher. After a commit that wrote events (or at the latest
//! every poll interval), it
//!
//! 1. fans new events of each endpoint's tenant out into deliveries (from the endpoint's
//!    cursor; see `store::events` for why a per-tenant cursor never skips an event);
//! 2. claims due deliveries — on PostgreSQL with `FOR UPDATE SKIP LOCKED` and a lease, so
//!    each is sent by one node — taking only the oldest pending delivery of each
//!    (endpoint, resource), so one user's events reach an endpoint in order;
//! 3. sends them concurrently, signed per Standard Webhooks (`webhook-id` is the event's
//!    stable id, the same on every retry);
//! 4. records each result: delivered (2xx), retried later with exponential backoff and
//!    jitter, or dead after the last attempt.
//!
//! Everything it needs is in the database, so it survives restarts: a delivery in flight
//! when a node dies is retried once its lease runs out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::events::destination::{self, Destinations};
use crate::events::store::{Attempt, Claimed};
use crate::kernel::clock::{Clock, SharedClock};
use crate::kernel::store::{OutboxRow, Store};

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Attempts before a delivery is dead.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each attempt.
    pub retry_base: Duration,
    /// Longest delay between attempts.
    pub retry_max: Duration,
    /// Time allowed for one HTTP attempt.
    pub timeout: Duration,
    /// Deliveries claimed at once.
    pub batch: i64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Which addresses deliveries may reach.
    pub destinations: Destinations,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_attempts: 12,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            batch: 128,
            concurrency: 128,
            destinations: Destinations::PublicOnly,
        }
    }
}

/// The public form of an event: what webhooks, the feed and the stream carry.
pub fn envelope(e: &OutboxRow) -> Value {
    let data: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
    json!({
        "id": event_id(e.id),
        "type": e.event_type,
        "tenant": e.tenant_id,
        "created_at": e.created,
        "resource": {"type": e.resource_type, "id": e.resource_id},
        "data": data,
    })
}

/// An event's public id, stable across retries and replays.
pub fn event_id(outbox_id: i64) -> String {
    format!("evt_{outbox_id}")
}

/// The delay before attempt `attempts + 1`: `base · 2^attempts`, capped, with jitter
/// (between half and all of it), so endpoints that come back are not hit by every retry at
/// once.
pub fn backoff(cfg: &DispatchConfig, attempts: u32) -> Duration {
    let exp = cfg
        .retry_base
        .saturating_mul(2u32.saturating_pow(attempts.min(30)));
    let d = exp.min(cfg.retry_max);
    let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
    d.mul_f64(jitter)
}

fn now_ms(clock: &dyn Clock) -> i64 {
    (clock.now().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Starts the dispatcher; it runs for the life of the process.
pub fn spawn(store: Store, clock: SharedClock, cfg: DispatchConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let builder = crate::kernel::crypto::http_client()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("seatkeeper-webhooks/", env!("CARGO_PKG_VERSION")));
        let client = match destination::guard(builder, cfg.destinations).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook HTTP client; no deliveries");
                return;
            }
        };
        let mut commits = store.event_commits();
        let poll = cfg
            .retry_base
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(20));
        // When no endpoint was enabled at the last look, commits do not look again before
        // `NO_WEBHOOKS_LOOK` has passed or this node added one: a busy node without webhooks
        // would otherwise ask the database after every commit.
        let mut none_since: Option<(std::time::Instant, u64)> = None;
        loop {
            commits.borrow_and_update();
            let added = WEBHOOKS_ADDED.load(std::sync::atomic::Ordering::Acquire);
            let mut wait = poll;
            match none_since {
                Some((at, seen)) if seen == added && at.elapsed() < NO_WEBHOOKS_LOOK => {
                    wait = wait.min(NO_WEBHOOKS_LOOK - at.elapsed());
                }
                _ => {
                    none_since = None;
                    match tick(&store, &clock, &client, &cfg).await {
                        Ok(Some(n)) if n > 0 => continue,
                        Ok(Some(_)) => {}
                        Ok(None) => none_since = Some((std::time::Instant::now(), added)),
                        Err(e) => tracing::warn!(error = %e, "webhook dispatch failed; retrying"),
                    }
                }
            }
            tokio::select! {
                _ = commits.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// How long a dispatcher that found no enabled endpoint waits before it looks again, however
/// many commits come (unless this node adds one): the first events after another node adds
/// the first endpoint wait at most this.
const NO_WEBHOOKS_LOOK: Duration = Duration::from_millis(100);

/// Endpoints this process added (a count): its dispatcher looks again when it moves.
pub(crate) static WEBHOOKS_ADDED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// One round: fan out, claim, send, record. Returns how many deliveries it handled, or `None`
/// when no endpoint is enabled.
async fn tick(
    store: &Store,
    clock: &SharedClock,
    client: &reqwest::Client,
    cfg: &DispatchConfig,
) -> Result<Option<usize>, crate::kernel::store::StoreError> {
    if !store.any_webhook().await? {
        return Ok(None);
    }
    let hooks = store.active_webhooks().await?;
    if !hooks.is_empty() {
        let stamp = crate::kernel::clock::stamp(clock.now());
        store
            .write(move |tx| {
                let mut n = 0;
                for (tenant, id) in &hooks {
                    n += tx.fan_out(tenant, id, &stamp, 1000)?;
                }
                Ok::<usize, crate::kernel::store::StoreError>(n)
            })
            .await?;
    }
    // One batch is sent in one round (no more than `concurrency` requests), so its lease
    // only needs to outlast one request: a node that dies holding it delays those
    // deliveries by at most the lease.
    let lease = cfg.timeout.as_millis() as i64 + 5_000;
    let batch = cfg.batch.min(cfg.concurrency as i64).max(1);
    let now = now_ms(&**clock);
    let claimed = store
        .write(move |tx| tx.claim_deliveries(now, lease, batch))
        .await?;
    if claimed.is_empty() {
        return Ok(Some(0));
    }
    let n = claimed.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for c in claimed {
        let (client, sem, cfg, clock) = (client.clone(), sem.clone(), cfg.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            send(&client, &*clock, &cfg, c).await
        }));
    }
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(a) = t.await {
            results.push(a);
        }
    }
    for a in &results {
        let outcome = match (a.ok, a.retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "retry",
            (false, None) => "dead",
        };
        metrics::counter!("seatkeeper_webhook_deliveries_total", "outcome" => outcome).increment(1);
    }
    let now_text = crate::kernel::clock::stamp(clock.now());
    store
        .write(move |tx| tx.record_attempts(&results, &now_text))
        .await?;
    Ok(Some(n))
}

async fn send(
    client: &reqwest::Client,
    clock: &dyn Clock,
    cfg: &DispatchConfig,
    c: Claimed,
) -> Attempt {
    let body = envelope(&c.event).to_string();
    let msg_id = event_id(c.event.id);
    let ts = clock.now().unix_timestamp();
    let signature = crate::kernel::signing::standard_sign(&c.secret, &msg_id, ts, body.as_bytes());
    let attempts = u32::try_from(c.attempts + 1).unwrap_or(u32::MAX);
    let retry_at = (attempts < cfg.max_attempts)
        .then(|| now_ms(clock) + backoff(cfg, attempts - 1).as_millis() as i64);
    // An address in the URL itself never meets the resolver: it is checked here.
    if let Some(why) = literal_refusal(&c.url, cfg.destinations) {
        return Attempt {
            id: c.id,
            status: None,
            error: Some(why),
            ok: false,
            retry_at,
        };
    }
    let sent = client
        .post(&c.url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let clean = |s: String| -> String { s.chars().filter(|c| !c.is_control()).take(300).collect() };
    match sent {
        Ok(resp) if resp.status().is_success() => Attempt {
            id: c.id,
            status: Some(i64::from(resp.status().as_u16())),
            error: None,
            ok: true,
            retry_at: None,
        },
        Ok(resp) => Attempt {
            id: c.id,
            status: Some(i64::from(resp.status().as_u16())),
            error: Some(clean(format!("the endpoint answered {}", resp.status()))),
            ok: false,
            retry_at,
        },
        Err(e) => Attempt {
            id: c.id,
            status: None,
            error: Some(clean(if e.is_timeout() {
                format!("no answer within {:?}", cfg.timeout)
            } else if e.is_connect() {
                format!("cannot connect to the endpoint: {}", root_cause(&e))
            } else {
                format!("request failed: {e}")
            })),
            ok: false,
            retry_at,
        },
    }
}

/// Why a URL whose host is an address literal may not be reached under `policy`.
fn literal_refusal(url: &str, policy: Destinations) -> Option<String> {
    if policy == Destinations::AnyAddress {
        return None;
    }
    let ip = match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
        url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    destination::refusal(ip).map(|why| {
        format!("refused: {ip} is {why} (the server allows it only with --allow-private-webhooks)")
    })
}

/// The innermost error's message (a refused address, a refused connection).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let cfg = DispatchConfig {
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            ..DispatchConfig::default()
        };
        for _ in 0..100 {
            let d0 = backoff(&cfg, 0);
            assert!(
                d0 >= Duration::from_secs(1) && d0 <= Duration::from_secs(2),
                "{d0:?}"
            );
            let d3 = backoff(&cfg, 3);
            assert!(
                d3 >= Duration::from_secs(8) && d3 <= Duration::from_secs(16),
                "{d3:?}"
            );
            let d20 = backoff(&cfg, 20);
            assert!(
                d20 >= Duration::from_secs(30) && d20 <= Duration::from_secs(60),
                "{d20:?}"
            );
        }
    }

    #[test]
    fn endpoints_choose_events() {
        let hook = |events: &[&str]| crate::events::store::WebhookRow {
            tenant: "t".into(),
            id: "w".into(),
            url: "http://x".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            secret: String::new(),
            created: String::new(),
            cursor: 0,
            cursor_tx: 0,
            disabled: None,
        };
        assert!(hook(&["*"]).wants("license.assigned"));
        assert!(hook(&["license.*"]).wants("license.assigned"));
        assert!(!hook(&["license.*"]).wants("licenses.x"));
        assert!(!hook(&["license.*"]).wants("user.provisioned"));
        assert!(hook(&["user.provisioned", "seats.exhausted"]).wants("seats.exhausted"));
        assert!(!hook(&[]).wants("user.provisioned"));
    }
}
