//! The settings every command shares: the database, the server's flags, secrets from files.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use seatkeeper::{Config, Open, Store, StoreOptions};

#[derive(clap::Args, Clone)]
pub(crate) struct DbArgs {
    /// Database URL: sqlite://PATH (embedded) or postgres://USER:PASS@HOST/DB[?sslmode=…]
    /// [default: sqlite://seatkeeper.db].
    #[arg(long, env = "SEATKEEPER_DATABASE", hide_env_values = true)]
    pub(crate) database: Option<String>,
    /// A file holding the database URL, instead of --database (keeps its password out of
    /// the environment and the process list).
    #[arg(long, env = "SEATKEEPER_DATABASE_FILE", value_name = "PATH")]
    pub(crate) database_file: Option<std::path::PathBuf>,
}

impl DbArgs {
    /// The database URL, from the flag, the environment or the file.
    pub(crate) fn url(&self) -> anyhow::Result<String> {
        Ok(secret_setting(
            "SEATKEEPER_DATABASE",
            self.database.as_deref(),
            self.database_file.as_deref(),
        )?
        .unwrap_or_else(|| "sqlite://seatkeeper.db".to_string()))
    }
}

/// A secret setting given directly or as a file (the `*_FILE` variant, as container and
/// systemd credentials provide them): the file's content without its final newline.
pub(crate) fn secret_setting(
    name: &str,
    value: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    let value = value.filter(|v| !v.is_empty());
    match (value, file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("{name} and {name}_FILE are both set; set one of them")
        }
        (Some(v), None) => Ok(Some(v.to_string())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{name}_FILE: reading {}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                anyhow::bail!("{name}_FILE: {} is empty", path.display());
            }
            Ok(Some(text.to_string()))
        }
        (None, None) => Ok(None),
    }
}

#[derive(clap::Args, Clone)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on http://ADDR`).
    #[arg(long, env = "SEATKEEPER_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// Public base URL for `meta.location` (default: from the Host header).
    #[arg(long, env = "SEATKEEPER_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// Sustained SCIM requests per second per tenant.
    #[arg(long, env = "SEATKEEPER_RATE_LIMIT", default_value_t = 100)]
    pub(crate) rate_limit: u32,
    /// Burst of SCIM requests per tenant above the sustained rate.
    #[arg(long, env = "SEATKEEPER_RATE_BURST", default_value_t = 1000)]
    pub(crate) rate_burst: u32,
    /// Sustained application API requests (checks, entitlements, tokens) per second per
    /// tenant.
    #[arg(long, env = "SEATKEEPER_APP_RATE_LIMIT", default_value_t = 100_000)]
    pub(crate) app_rate_limit: u32,
    /// Burst of application API requests per tenant above the sustained rate.
    #[arg(long, env = "SEATKEEPER_APP_RATE_BURST", default_value_t = 200_000)]
    pub(crate) app_rate_burst: u32,
    /// Largest request body in bytes (Bulk: --bulk-max-payload).
    #[arg(long, env = "SEATKEEPER_MAX_BODY", default_value_t = 1024 * 1024)]
    pub(crate) max_body: usize,
    /// Largest Bulk request body in bytes.
    #[arg(long, env = "SEATKEEPER_BULK_MAX_PAYLOAD", default_value_t = 4 * 1024 * 1024)]
    pub(crate) bulk_max_payload: usize,
    /// Most operations in one Bulk request.
    #[arg(long, env = "SEATKEEPER_BULK_MAX_OPERATIONS", default_value_t = 1000)]
    pub(crate) bulk_max_operations: usize,
    /// Seconds before a request is abandoned with 503.
    #[arg(long, env = "SEATKEEPER_REQUEST_TIMEOUT", default_value_t = 30)]
    pub(crate) request_timeout: u64,
    /// Seconds a client has to send a request's headers, and to start its next request on a
    /// kept-alive connection.
    #[arg(long, env = "SEATKEEPER_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) header_timeout: u64,
    /// Seconds a connection may go without a byte sent or read (a trickled body, an unread
    /// answer) before it is closed.
    #[arg(long, env = "SEATKEEPER_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) idle_timeout: u64,
    /// Open client connections at most; more are answered 503 and closed (kept under the
    /// process's open-file limit).
    #[arg(long, env = "SEATKEEPER_CONNECTION_LIMIT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) connection_limit: u64,
    /// Largest request head (request line and headers) in bytes; more is a 431.
    #[arg(long, env = "SEATKEEPER_MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    pub(crate) max_header_bytes: u64,
    /// Longest string value of a SCIM attribute, in bytes.
    #[arg(long, env = "SEATKEEPER_MAX_ATTRIBUTE_BYTES", default_value_t = 64 * 1024)]
    pub(crate) max_attribute_bytes: usize,
    /// Largest SCIM resource as JSON, in bytes (a group's members not counted).
    #[arg(long, env = "SEATKEEPER_MAX_RESOURCE_BYTES", default_value_t = 128 * 1024)]
    pub(crate) max_resource_bytes: usize,
    /// Largest list page as JSON, in bytes: a page stops early (itemsPerPage says how many
    /// it holds) rather than exceed it.
    #[arg(long, env = "SEATKEEPER_MAX_PAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub(crate) max_page_bytes: usize,
    /// Failed authentications allowed per client address per minute; past it, the address
    /// is answered 429 (with Retry-After) until its allowance refills. 0: no limit.
    #[arg(long, env = "SEATKEEPER_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    pub(crate) auth_failure_limit: u32,
    /// Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For names the
    /// client; from anyone else it is ignored.
    #[arg(long, env = "SEATKEEPER_TRUSTED_PROXIES", default_value = "", value_parser = trusted_proxies)]
    pub(crate) trusted_proxies: Proxies,
    /// Let webhooks reach loopback, private, link-local and metadata addresses (receivers on
    /// this host or network). Off by default: an endpoint there is refused at registration
    /// and at delivery.
    #[arg(long, env = "SEATKEEPER_ALLOW_PRIVATE_WEBHOOKS")]
    pub(crate) allow_private_webhooks: bool,
    /// Tenants labelled on their own in the seat gauges of `/metrics` (the largest by seats;
    /// the rest are summed under `tenant="_other"`).
    #[arg(long, env = "SEATKEEPER_METRICS_TENANT_LIMIT", default_value_t = 100)]
    pub(crate) metrics_tenant_limit: usize,
    /// Seconds between refreshes of the seat, outbox and snapshot gauges.
    #[arg(long, env = "SEATKEEPER_METRICS_INTERVAL", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) metrics_interval: u64,
    /// Database connections (read pool on SQLite; the whole pool on PostgreSQL).
    #[arg(long, env = "SEATKEEPER_MAX_CONNECTIONS", default_value_t = 8)]
    pub(crate) max_connections: u32,
    /// PostgreSQL: a direct connection URL for LISTEN/NOTIFY, when --database goes through a
    /// pooler in transaction mode (PgBouncer), which cannot hold a LISTEN. Same TLS settings
    /// as --database.
    #[arg(
        long,
        env = "SEATKEEPER_NOTIFY_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) notify_database: Option<String>,
    /// SQLite synchronous mode: NORMAL (survives process crashes) or FULL (also power loss).
    #[arg(long, env = "SEATKEEPER_SQLITE_SYNCHRONOUS", default_value = "NORMAL")]
    pub(crate) sqlite_synchronous: String,
    /// Seconds between scheduler ticks (term and grace transitions).
    #[arg(long, env = "SEATKEEPER_SCHEDULER_INTERVAL", default_value_t = 5)]
    pub(crate) scheduler_interval: u64,
    /// Secret of the generic billing endpoint (Standard Webhooks `whsec_…`); more can be
    /// stored and rotated with `POST /api/v1/billing/secret`.
    #[arg(long, env = "SEATKEEPER_BILLING_SECRET", hide_env_values = true)]
    pub(crate) billing_secret: Option<String>,
    /// A file holding the billing endpoint's secret, instead of --billing-secret.
    #[arg(long, env = "SEATKEEPER_BILLING_SECRET_FILE", value_name = "PATH")]
    pub(crate) billing_secret_file: Option<std::path::PathBuf>,
    /// Signing secret of the Stripe endpoint (`whsec_…` from Stripe's dashboard).
    #[arg(long, env = "SEATKEEPER_STRIPE_SECRET", hide_env_values = true)]
    pub(crate) stripe_secret: Option<String>,
    /// A file holding the Stripe endpoint's secret, instead of --stripe-secret.
    #[arg(long, env = "SEATKEEPER_STRIPE_SECRET_FILE", value_name = "PATH")]
    pub(crate) stripe_secret_file: Option<std::path::PathBuf>,
    /// Seconds a signed billing event's timestamp may be away from now.
    #[arg(long, env = "SEATKEEPER_SIGNATURE_TOLERANCE", default_value_t = 300)]
    pub(crate) signature_tolerance: i64,
    /// Attempts of one webhook delivery before it is dead-lettered.
    #[arg(long, env = "SEATKEEPER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub(crate) webhook_max_attempts: u32,
    /// Milliseconds before the first webhook retry (doubling each attempt, up to an hour).
    #[arg(long, env = "SEATKEEPER_WEBHOOK_RETRY_BASE_MS", default_value_t = 5000)]
    pub(crate) webhook_retry_base_ms: u64,
    /// Seconds one webhook request may take.
    #[arg(long, env = "SEATKEEPER_WEBHOOK_TIMEOUT", default_value_t = 10)]
    pub(crate) webhook_timeout: u64,
    /// Days of audit records to keep (older ones are pruned hourly behind a signed
    /// checkpoint); 0 keeps everything.
    #[arg(long, env = "SEATKEEPER_AUDIT_RETENTION_DAYS", default_value_t = 0)]
    pub(crate) audit_retention_days: u32,
    /// Seconds between signatures of the audit chains' heads (each chain that moved gets an
    /// `audit.head` record and event).
    #[arg(long, env = "SEATKEEPER_AUDIT_HEAD_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) audit_head_seconds: u64,
    /// Days before a term ends that `subscription.expiring` is sent.
    #[arg(long, env = "SEATKEEPER_EXPIRY_NOTICE_DAYS", default_value_t = 7)]
    pub(crate) expiry_notice_days: u32,
    /// Seconds a signed entitlement token lives (1 to 86400).
    #[arg(long, env = "SEATKEEPER_TOKEN_TTL", default_value_t = 300)]
    pub(crate) token_ttl: u64,
    /// Seconds between writes of users seen by applications (`last_seen`).
    #[arg(long, env = "SEATKEEPER_ACTIVITY_FLUSH", default_value_t = 5)]
    pub(crate) activity_flush: u64,
    /// Days of usage history (seat counts per subscription over time) to keep; 0 keeps all.
    #[arg(long, env = "SEATKEEPER_USAGE_RETENTION_DAYS", default_value_t = 400)]
    pub(crate) usage_retention_days: u32,
    /// Seconds between looks at the tenants whose counts may have moved, for the usage
    /// history (at most one point per subscription per minute is kept; 0 keeps no history).
    #[arg(long, env = "SEATKEEPER_USAGE_SAMPLE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub(crate) usage_sample_seconds: u64,
    /// Megabytes of rendered users kept for `GET /Users/{id}` (0 turns it off; on
    /// PostgreSQL, other nodes' commits reach it through LISTEN/NOTIFY).
    #[arg(long, env = "SEATKEEPER_USER_CACHE_MB", default_value_t = 64)]
    pub(crate) user_cache_mb: u64,
    /// For tests only: run on a clock that starts at this RFC 3339 instant and moves only
    /// through `POST /api/v1/clock`.
    #[arg(long)]
    pub(crate) test_clock: Option<String>,
}

/// `--trusted-proxies`, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Proxies(Vec<ipnet::IpNet>);

pub(crate) fn trusted_proxies(text: &str) -> Result<Proxies, String> {
    seatkeeper::parse_trusted_proxies(text).map(Proxies)
}

pub(crate) fn config_from(args: &ServeArgs) -> anyhow::Result<Config> {
    Ok(Config {
        public_url: args.public_url.clone(),
        max_body_bytes: args.max_body,
        bulk_max_payload: args.bulk_max_payload,
        bulk_max_operations: args.bulk_max_operations,
        rate_per_second: args.rate_limit,
        rate_burst: args.rate_burst,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        billing_secret: secret_setting(
            "SEATKEEPER_BILLING_SECRET",
            args.billing_secret.as_deref(),
            args.billing_secret_file.as_deref(),
        )?,
        stripe_secret: secret_setting(
            "SEATKEEPER_STRIPE_SECRET",
            args.stripe_secret.as_deref(),
            args.stripe_secret_file.as_deref(),
        )?,
        signature_tolerance: args.signature_tolerance.max(1),
        app_rate_per_second: args.app_rate_limit,
        app_rate_burst: args.app_rate_burst,
        token_ttl: Duration::from_secs(args.token_ttl.clamp(1, 86_400)),
        activity_flush: Duration::from_secs(args.activity_flush.max(1)),
        user_cache_bytes: args.user_cache_mb.saturating_mul(1024 * 1024),
        usage_retention_days: args.usage_retention_days,
        usage_sample_every: Duration::from_secs(args.usage_sample_seconds),
        max_attribute_bytes: args.max_attribute_bytes.max(256),
        max_resource_bytes: args.max_resource_bytes.max(1024),
        max_page_bytes: args.max_page_bytes.max(1024),
        auth_failures_per_minute: args.auth_failure_limit,
        trusted_proxies: args.trusted_proxies.0.clone(),
        allow_private_webhooks: args.allow_private_webhooks,
    })
}

/// Opens a database that exists and is at this binary's schema version: the commands that
/// read or change what is there never create a file or migrate.
pub(crate) async fn open(url: &str, args: Option<&ServeArgs>) -> anyhow::Result<Store> {
    connect(url, args, Open::Existing).await
}

/// Opens a database, creating a missing SQLite file and applying pending migrations
/// (`serve`, `demo`, `migrate`, `tenant create`).
pub(crate) async fn open_creating(url: &str, args: Option<&ServeArgs>) -> anyhow::Result<Store> {
    connect(url, args, Open::CreateAndMigrate).await
}

/// Opens a database for `migrate`: created if missing, its schema left to the caller.
pub(crate) async fn open_for_migration(url: &str) -> anyhow::Result<Store> {
    connect(url, None, Open::Create).await
}

async fn connect(url: &str, args: Option<&ServeArgs>, open: Open) -> anyhow::Result<Store> {
    let mut opts = StoreOptions {
        open,
        ..Default::default()
    };
    if let Some(a) = args {
        opts.max_connections = a.max_connections;
        opts.sqlite_synchronous = a.sqlite_synchronous.clone();
        opts.notify_url = a.notify_database.clone().filter(|u| !u.is_empty());
    }
    let notify = opts.notify_url.clone().unwrap_or_default();
    Store::connect(url, &opts).await.map_err(|e| {
        // A driver's message may quote a URL: no password reaches the terminal.
        let text = seatkeeper::scrub_secret(&e.to_string(), url);
        anyhow::anyhow!(
            "opening database {}: {}",
            seatkeeper::redact_url(url),
            seatkeeper::scrub_secret(&text, &notify)
        )
    })
}

/// The command line as the audit trail records it.
pub(crate) fn cli_actor() -> seatkeeper::Actor {
    seatkeeper::Actor {
        name: "cli".into(),
        request_id: format!("cli-{}", uuid::Uuid::new_v4()),
    }
}

/// How a command prints what it found (`--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// For people: lines, tab-separated where there are columns.
    Text,
    /// For scripts: one JSON document.
    Json,
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
