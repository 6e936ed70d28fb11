//! The soak driver (`bench/soak.sh`): many tenants, each sending an Entra-like mix of SCIM
//! requests at a fixed rate — lookups by filter, creates, PATCHes, group member changes —
//! plus entitlement checks at a fixed total rate, open loop (a late answer does not delay
//! the next request, and its latency counts from when it was due). Like an identity
//! provider, each tenant has at most 8 requests in flight, and the checks 64 in all; the
//! rest wait their turn, which counts in their latency. Every `--sample` seconds
//! it records the servers' resident memory and the SQLite WAL's size. At the end it prints
//! p50/p99 per operation, errors, and the memory series.
//!
//! `soak --base URL[,URL…] --admin TOKEN --tenants 100 --rate 25 --checks 5000
//!  --seconds 600 [--pids PID,…] [--wal PATH] [--sample 30] [--steady USERS] [--warm 60]`
//!
//! `--steady USERS` keeps each tenant's population steady, as at a company whose joiners
//! match its leavers: once a tenant holds USERS users, its create slots alternate between a
//! create and a leaver's `DELETE` (a user taken out of the driver's picks two seconds
//! before, so no request in flight still names it). Without it the tenants grow all along.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "support/http.rs"]
mod http;
use http::{call, status_of};

// The driver shares the machine with the servers it measures: glibc's malloc was a fifth of
// its CPU (BENCHMARKS.md), mimalloc as in the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests of one tenant in flight at once (Entra ID and Okta use a handful of connections).
const PER_TENANT: usize = 8;

/// Entitlement checks in flight at once, across tenants (applications' connection pools).
const CHECK_LANES: usize = 64;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Args {
    bases: Vec<String>,
    admin: String,
    tenants: usize,
    rate: u32,
    checks: u32,
    seconds: u64,
    pids: Vec<u32>,
    wal: Option<String>,
    sample: u64,
    steady: Option<usize>,
    /// Seconds of warm-up before memory growth is measured.
    warm: u64,
}

fn args() -> Args {
    let mut a = Args {
        bases: Vec::new(),
        admin: String::new(),
        tenants: 100,
        rate: 25,
        checks: 5000,
        seconds: 600,
        pids: Vec::new(),
        wal: None,
        sample: 30,
        steady: None,
        warm: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--base" => a.bases = v.split(',').map(str::to_string).collect(),
            "--admin" => a.admin = v,
            "--tenants" => a.tenants = v.parse().expect("--tenants"),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--checks" => a.checks = v.parse().expect("--checks"),
            "--seconds" => a.seconds = v.parse().expect("--seconds"),
            "--pids" => a.pids = v.split(',').filter_map(|p| p.parse().ok()).collect(),
            "--wal" => a.wal = Some(v),
            "--sample" => a.sample = v.parse().expect("--sample"),
            "--steady" => a.steady = Some(v.parse().expect("--steady")),
            "--warm" => a.warm = v.parse().expect("--warm"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.bases.is_empty() && !a.admin.is_empty(),
        "--base and --admin are required"
    );
    a
}

/// One tenant's credentials and what it has made.
struct Tenant {
    token: String,
    app_key: String,
    users: Mutex<Vec<(String, String)>>,
    groups: Vec<String>,
    /// Leavers taken out of the picks, and when (`--steady`).
    leaving: Mutex<std::collections::VecDeque<(Instant, String)>>,
}

#[derive(Default)]
struct Stats {
    latencies: BTreeMap<&'static str, Vec<u32>>,
    errors: BTreeMap<(&'static str, u16), u64>,
    /// This sampling interval's latencies (all operations) and errors.
    recent: Vec<u32>,
    recent_errors: u64,
}

impl Stats {
    fn record(&mut self, op: &'static str, status: u16, took: Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.latencies.entry(op).or_default().push(us);
        self.recent.push(us);
        if status >= 400 || status == 0 {
            *self.errors.entry((op, status)).or_default() += 1;
            self.recent_errors += 1;
        }
    }
}

/// Requests sent and not yet answered.
static IN_FLIGHT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Counts a request in flight while it runs.
struct Flying;

impl Flying {
    fn start() -> Flying {
        IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Flying
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One sample of the run.
struct Sample {
    at: u64,
    /// Per node: the resident heap (the mean of the interval's one-second readings) and the
    /// mapped file, kB.
    rss_kb: Vec<(u64, u64)>,
    /// Per node, the highest one-second reading of the heap in the interval, kB.
    peak_kb: Vec<u64>,
    /// Per node, what its bounded caches held (bytes): SQLite's heap and the rendered users.
    caches: Vec<(f64, f64)>,
    wal: u64,
    answered: usize,
    p99_ms: f64,
    errors: u64,
    in_flight: i64,
}

/// A node's bounded caches, from its metrics: (SQLite's heap, rendered users) in bytes.
async fn caches(http: &reqwest::Client, base: &str) -> (f64, f64) {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("seatkeeper_sqlite_memory_bytes "),
        value("seatkeeper_user_cache_bytes "),
    )
}

/// A process's resident memory: (anonymous, file-backed) kB. File-backed pages are the
/// mapped database, the kernel's reclaimable file cache; anonymous pages are the heap, where a
/// leak would show.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

async fn setup(http: &reqwest::Client, a: &Args, i: usize) -> Tenant {
    let base = &a.bases[0];
    let (_, t) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/v1/tenants"),
        &a.admin,
        Some(json!({"name": format!("soak-{i}")})),
    )
    .await;
    let id = t["id"].as_str().expect("tenant id").to_string();
    let (_, tok) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/v1/tenants/{id}/scim-tokens"),
        &a.admin,
        Some(json!({"name": "entra"})),
    )
    .await;
    let (_, key) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/v1/tenants/{id}/app-keys"),
        &a.admin,
        Some(json!({"name": "app"})),
    )
    .await;
    let product = format!("soak{i}");
    let model = json!({
        "products": [{"key": product, "name": "Soak", "plans": [{"key": "pro", "rank": 1, "features": ["write"]}]}],
        "tenants": [{"id": id, "subscriptions": [{"product": product, "plan": "pro", "seats": 1_000_000,
            "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}],
            "rules": [{"name": "everyone", "filter": "active eq true", "product": product, "plan": "pro", "priority": 1}]}],
    });
    let (s, v) = call(
        http,
        reqwest::Method::PUT,
        format!("{base}/api/v1/model"),
        &a.admin,
        Some(model),
    )
    .await;
    assert!(s < 300, "model: {s} {v}");
    if a.steady.is_some() {
        // Leavers at a steady soak's pace (about 2 a second in a tenant of a few hundred)
        // are a mass deprovision by the brake's measure (25 % within an hour): it would hold
        // them all. A company with this churn turns the brake off.
        let (s, v) = call(
            http,
            reqwest::Method::PUT,
            format!("{base}/api/v1/tenants/{id}/settings"),
            &a.admin,
            Some(json!({"deprovision_brake": null})),
        )
        .await;
        assert!(s < 300, "settings: {s} {v}");
    }
    let token = tok["token"].as_str().expect("token").to_string();
    let app_key = key["key"]
        .as_str()
        .or(key["token"].as_str())
        .expect("app key")
        .to_string();
    let mut users = Vec::new();
    for u in 0..20 {
        let name = format!("seed{u}@t{i}.example.com");
        let (_, v) = call(
            http,
            reqwest::Method::POST,
            format!("{base}/scim/v2/Users"),
            &token,
            Some(json!({"schemas": [USER], "userName": name})),
        )
        .await;
        if let Some(id) = v["id"].as_str() {
            users.push((id.to_string(), name));
        }
    }
    let mut groups = Vec::new();
    for g in 0..3 {
        let (_, v) = call(
            http,
            reqwest::Method::POST,
            format!("{base}/scim/v2/Groups"),
            &token,
            Some(json!({"schemas": [GROUP], "displayName": format!("g{g}")})),
        )
        .await;
        if let Some(id) = v["id"].as_str() {
            groups.push(id.to_string());
        }
    }
    Tenant {
        token,
        app_key,
        users: Mutex::new(users),
        leaving: Mutex::default(),
        groups,
    }
}

/// One request of the Entra-like mix.
async fn entra_step(
    http: &reqwest::Client,
    base: &str,
    t: &Tenant,
    n: u64,
    steady: Option<usize>,
) -> (&'static str, u16) {
    let pick = |k: u64| {
        let users = t.users.lock().unwrap();
        users[(k as usize * 7919) % users.len()].clone()
    };
    match n % 20 {
        // 50 %: lookups by filter, as Entra does before every change.
        0..=9 => {
            let (_, name) = pick(n);
            let q =
                url::form_urlencoded::byte_serialize(format!("userName eq \"{name}\"").as_bytes())
                    .collect::<String>();
            let s = status_of(
                http,
                reqwest::Method::GET,
                format!("{base}/scim/v2/Users?filter={q}"),
                &t.token,
                None,
            )
            .await;
            ("lookup", s)
        }
        // 15 %: creates (with --steady, half of them leavers' deletes once the tenant is full).
        10..=12
            if steady
                .is_some_and(|cap| n.is_multiple_of(2) && t.users.lock().unwrap().len() >= cap) =>
        {
            // The first 20 users (the seed) stay; the oldest soak user leaves the picks now and
            // is deleted once two seconds have passed.
            {
                let mut users = t.users.lock().unwrap();
                let oldest = 20.min(users.len() - 1);
                let (id, _) = users.remove(oldest);
                t.leaving.lock().unwrap().push_back((Instant::now(), id));
            }
            let gone = {
                let mut leaving = t.leaving.lock().unwrap();
                match leaving.front() {
                    Some((at, _)) if at.elapsed() >= Duration::from_secs(2) => {
                        leaving.pop_front().map(|(_, id)| id)
                    }
                    _ => None,
                }
            };
            let Some(id) = gone else {
                return create_user(http, base, t, n).await;
            };
            let s = status_of(
                http,
                reqwest::Method::DELETE,
                format!("{base}/scim/v2/Users/{id}"),
                &t.token,
                None,
            )
            .await;
            ("delete", s)
        }
        10..=12 => create_user(http, base, t, n).await,
        // 25 %: PATCHes (attributes, and now and then active).
        13..=17 => {
            let (id, _) = pick(n);
            let ops = if n.is_multiple_of(97) {
                json!([{"op": "replace", "path": "active", "value": n.is_multiple_of(2)}])
            } else {
                json!([{"op": "replace", "path": "displayName", "value": format!("User {n}")}])
            };
            let s = status_of(
                http,
                reqwest::Method::PATCH,
                format!("{base}/scim/v2/Users/{id}"),
                &t.token,
                Some(json!({"schemas": [PATCH], "Operations": ops})),
            )
            .await;
            ("patch", s)
        }
        // 10 %: group member changes.
        _ => {
            let (id, _) = pick(n + 1);
            let group = &t.groups[n as usize % t.groups.len()];
            let op = if n.is_multiple_of(3) { "remove" } else { "add" };
            let body = if op == "add" {
                json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]})
            } else {
                json!({"schemas": [PATCH], "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]})
            };
            let s = status_of(
                http,
                reqwest::Method::PATCH,
                format!("{base}/scim/v2/Groups/{group}"),
                &t.token,
                Some(body),
            )
            .await;
            ("members", s)
        }
    }
}

/// A create of the mix: a new user, added to the tenant's picks.
async fn create_user(
    http: &reqwest::Client,
    base: &str,
    t: &Tenant,
    n: u64,
) -> (&'static str, u16) {
    let name = format!("u{n}-{}@soak.example.com", uuid::Uuid::new_v4().simple());
    let (s, v) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/scim/v2/Users"),
        &t.token,
        Some(json!({"schemas": [USER], "userName": name, "active": true})),
    )
    .await;
    if let Some(id) = v["id"].as_str() {
        t.users.lock().unwrap().push((id.to_string(), name));
    }
    ("create", s)
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    // Idle connections are dropped before the server's keep-alive timeout (10 s, the header
    // timeout) closes them: a request sent on a connection the server is closing at that
    // moment gets a reset, which an identity provider retries but this driver counts.
    let http = seatkeeper::crypto::http_client()
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut tenants = Vec::new();
    for i in 0..a.tenants {
        tenants.push(Arc::new(setup(&http, &a, i).await));
    }
    eprintln!(
        "{} tenants set up in {:.1} s; soaking for {} s",
        tenants.len(),
        started.elapsed().as_secs_f64(),
        a.seconds
    );
    let stats = Arc::new(Mutex::new(Stats::default()));
    let until = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        let (http, t, stats, a) = (http.clone(), t.clone(), stats.clone(), a.clone());
        // An identity provider sends a tenant's requests over a few connections at once;
        // the rest wait their turn (and their latency counts from when they were due).
        let lanes = Arc::new(tokio::sync::Semaphore::new(PER_TENANT));
        tasks.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / f64::from(a.rate));
            let mut due = Instant::now() + period.mul_f64(i as f64 / a.tenants as f64);
            let mut n = i as u64 * 1_000_003;
            while due < until {
                tokio::time::sleep_until(due.into()).await;
                let (http, t, stats, base) = (
                    http.clone(),
                    t.clone(),
                    stats.clone(),
                    a.bases[n as usize % a.bases.len()].clone(),
                );
                let (at, steady) = (due, a.steady);
                let lanes = lanes.clone();
                tokio::spawn(async move {
                    let _f = Flying::start();
                    let Ok(_lane) = lanes.acquire().await else {
                        return;
                    };
                    let (op, s) = entra_step(&http, &base, &t, n, steady).await;
                    stats.lock().unwrap().record(op, s, at.elapsed());
                });
                n += 1;
                due += period;
            }
        }));
    }
    let check_tasks = 50u32;
    let check_lanes = Arc::new(tokio::sync::Semaphore::new(CHECK_LANES));
    for w in 0..check_tasks {
        let (http, tenants, stats, a) = (http.clone(), tenants.clone(), stats.clone(), a.clone());
        let check_lanes = check_lanes.clone();
        tasks.push(tokio::spawn(async move {
            let rate = f64::from(a.checks.max(1)) / f64::from(check_tasks);
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut due = Instant::now() + period.mul_f64(f64::from(w) / f64::from(check_tasks));
            let mut n = u64::from(w);
            while due < until {
                tokio::time::sleep_until(due.into()).await;
                let t = tenants[n as usize % tenants.len()].clone();
                let (http, stats, base) = (
                    http.clone(),
                    stats.clone(),
                    a.bases[n as usize % a.bases.len()].clone(),
                );
                let at = due;
                let lanes = check_lanes.clone();
                tokio::spawn(async move {
                    let _f = Flying::start();
                    let Ok(_lane) = lanes.acquire().await else {
                        return;
                    };
                    let user = {
                        let users = t.users.lock().unwrap();
                        users[(n as usize * 31) % users.len()].0.clone()
                    };
                    let s = status_of(
                        &http,
                        reqwest::Method::POST,
                        format!("{base}/api/v1/check"),
                        &t.app_key,
                        Some(json!({"user": user, "feature": "write"})),
                    )
                    .await;
                    stats.lock().unwrap().record("check", s, at.elapsed());
                });
                n += u64::from(check_tasks);
                due += period;
            }
        }));
    }
    // The servers' resident heap, read every second: a reading catches the heap at one
    // instant, and under this load it moves by a tenth within seconds (requests and their
    // buffers come and go), so each interval reports the mean of its readings and the peak.
    let readings: Arc<Mutex<Vec<(u64, u64, u64)>>> = Arc::default();
    let reader = {
        let (a, readings) = (a.clone(), readings.clone());
        tokio::spawn(async move {
            while Instant::now() < until {
                let now: Vec<u64> = a.pids.iter().map(|p| rss_kb(*p).0).collect();
                {
                    let mut r = readings.lock().unwrap();
                    r.resize(now.len(), (0, 0, 0));
                    for ((sum, n, peak), kb) in r.iter_mut().zip(now) {
                        (*sum, *n, *peak) = (*sum + kb, *n + 1, (*peak).max(kb));
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    // Memory, WAL and the interval's latency, sampled.
    let sampler = {
        let (a, stats, http) = (a.clone(), stats.clone(), http.clone());
        tokio::spawn(async move {
            let mut series = Vec::new();
            let t0 = Instant::now();
            while Instant::now() < until {
                let taken = std::mem::take(&mut *readings.lock().unwrap());
                let mut rss: Vec<(u64, u64)> = a.pids.iter().map(|p| rss_kb(*p)).collect();
                let mut peak_kb: Vec<u64> = rss.iter().map(|(h, _)| *h).collect();
                for (i, (sum, n, peak)) in taken.into_iter().enumerate() {
                    if n > 0 && i < rss.len() {
                        rss[i].0 = sum / n;
                        peak_kb[i] = peak;
                    }
                }
                let mut held = Vec::new();
                for b in &a.bases {
                    held.push(caches(&http, b).await);
                }
                let wal = a
                    .wal
                    .as_ref()
                    .and_then(|w| std::fs::metadata(w).ok())
                    .map_or(0, |m| m.len());
                let (mut recent, errors) = {
                    let mut s = stats.lock().unwrap();
                    (
                        std::mem::take(&mut s.recent),
                        std::mem::take(&mut s.recent_errors),
                    )
                };
                let sample = Sample {
                    at: t0.elapsed().as_secs(),
                    rss_kb: rss,
                    peak_kb,
                    caches: held,
                    wal,
                    answered: recent.len(),
                    p99_ms: pct(&mut recent, 0.99),
                    errors,
                    in_flight: IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed),
                };
                eprintln!(
                    "t={}s rss (heap, file)={:?} MB caches (sqlite, users)={:?} MB wal={:.1} MB answered={} p99={:.1} ms errors={} in flight={}",
                    sample.at,
                    sample
                        .rss_kb
                        .iter()
                        .map(|(h, f)| (h / 1024, f / 1024))
                        .collect::<Vec<_>>(),
                    sample
                        .caches
                        .iter()
                        .map(|(s, u)| ((s / 1_048_576.0) as u64, (u / 1_048_576.0) as u64))
                        .collect::<Vec<_>>(),
                    sample.wal as f64 / 1_048_576.0,
                    sample.answered,
                    sample.p99_ms,
                    sample.errors,
                    sample.in_flight
                );
                series.push(sample);
                tokio::time::sleep(Duration::from_secs(a.sample)).await;
            }
            series
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    let _ = reader.await;
    // Let the last requests answer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let series = sampler.await.unwrap();
    let mut stats = stats.lock().unwrap();
    let seconds = a.seconds as f64;
    println!("| operation | requests | per second | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|");
    let errors = stats.errors.clone();
    for (op, v) in stats.latencies.iter_mut() {
        let n = v.len();
        let e: u64 = errors
            .iter()
            .filter(|((o, _), _)| o == op)
            .map(|(_, c)| c)
            .sum();
        println!(
            "| {op} | {n} | {:.0} | {:.2} | {:.2} | {e} |",
            n as f64 / seconds,
            pct(v, 0.50),
            pct(v, 0.99)
        );
    }
    if !errors.is_empty() {
        println!("\nerrors by status: {errors:?}");
    }
    println!(
        "\nResident heap: the mean of the interval's one-second readings (its peak in brackets).\n\n| t (s) | resident heap / mapped file per node (MB) | SQLite heap / rendered users per node (MB) | heap less those caches (MB) | WAL (MB) | answered in the interval | p99 ms | errors | in flight |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for x in &series {
        let rss: Vec<String> = x
            .rss_kb
            .iter()
            .zip(&x.peak_kb)
            .map(|((h, f), p)| {
                format!(
                    "{:.0} ({:.0}) / {:.0}",
                    *h as f64 / 1024.0,
                    *p as f64 / 1024.0,
                    *f as f64 / 1024.0
                )
            })
            .collect();
        let held: Vec<String> = x
            .caches
            .iter()
            .map(|(s, u)| format!("{:.0} / {:.0}", s / 1_048_576.0, u / 1_048_576.0))
            .collect();
        let rest: Vec<String> = x
            .rss_kb
            .iter()
            .zip(&x.caches)
            .map(|((h, _), (s, u))| format!("{:.0}", *h as f64 / 1024.0 - (s + u) / 1_048_576.0))
            .collect();
        println!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {} | {} |",
            x.at,
            rss.join(" / "),
            held.join(" / "),
            rest.join(" / "),
            x.wal as f64 / 1_048_576.0,
            x.answered,
            x.p99_ms,
            x.errors,
            x.in_flight
        );
    }
    // Growth after warm-up: the first interval `--warm` seconds in against the last, the
    // mean of the first half of the intervals after warm-up against the second's, and the
    // least-squares trend over them (its rise across the window, against its start).
    let after: Vec<&Sample> = series.iter().filter(|x| x.at >= a.warm).collect();
    if after.len() >= 4 {
        for i in 0..after[0].rss_kb.len() {
            let ys: Vec<f64> = after
                .iter()
                .map(|x| x.rss_kb[i].0 as f64 / 1024.0)
                .collect();
            let xs: Vec<f64> = after.iter().map(|x| x.at as f64).collect();
            let half = ys.len() / 2;
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let (early, late) = (mean(&ys[..half]), mean(&ys[ys.len() - half..]));
            let (mx, my) = (mean(&xs), mean(&ys));
            let slope = xs
                .iter()
                .zip(&ys)
                .map(|(x, y)| (x - mx) * (y - my))
                .sum::<f64>()
                / xs.iter().map(|x| (x - mx) * (x - mx)).sum::<f64>();
            let (x0, x1) = (xs[0], xs[xs.len() - 1]);
            let start = my + slope * (x0 - mx);
            println!(
                "node {i}: resident heap after warm-up, halves {early:.1} → {late:.1} MB ({:+.1} %); trend {start:.1} MB at {x0} s → {:.1} MB at {x1} s ({:+.1} %)",
                (late - early) / early * 100.0,
                start + slope * (x1 - x0),
                slope * (x1 - x0) / start * 100.0
            );
        }
    }
    if let (Some(warm), Some(last)) = (series.iter().find(|x| x.at >= a.warm), series.last()) {
        for (i, ((w, _), (l, _))) in warm.rss_kb.iter().zip(&last.rss_kb).enumerate() {
            let growth = if *w > 0 {
                (*l as f64 - *w as f64) / *w as f64 * 100.0
            } else {
                0.0
            };
            println!(
                "node {i}: resident heap {:.0} MB at {} s → {:.0} MB at {} s ({growth:+.1} %)",
                *w as f64 / 1024.0,
                warm.at,
                *l as f64 / 1024.0,
                last.at
            );
        }
        // The same without the bounded caches, which fill towards their caps as the
        // database and the population of users read grow.
        let rest = |x: &Sample, i: usize| {
            x.rss_kb[i].0 as f64 / 1024.0 - (x.caches[i].0 + x.caches[i].1) / 1_048_576.0
        };
        for i in 0..warm.rss_kb.len().min(warm.caches.len()) {
            let (w, l) = (rest(warm, i), rest(last, i));
            println!(
                "node {i}: resident heap less SQLite's heap and the rendered users {w:.0} MB at {} s → {l:.0} MB at {} s ({:+.1} %)",
                warm.at,
                last.at,
                if w > 0.0 { (l - w) / w * 100.0 } else { 0.0 }
            );
        }
    }
}
