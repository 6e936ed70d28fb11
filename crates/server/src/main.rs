//! The `seatkeeper` command line.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use seatkeeper::Config;
use seatkeeper::Credential;
use seatkeeper::SharedClock;
use seatkeeper::{Store, StoreOptions};

// mimalloc: malloc was a tenth of the request path's CPU in profiles (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "seatkeeper",
    version = seatkeeper::LONG_VERSION,
    about = "SCIM 2.0 provisioning joined to licensing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DbArgs {
    /// Database URL: sqlite://PATH (embedded) or postgres://USER:PASS@HOST/DB[?sslmode=…]
    /// [default: sqlite://seatkeeper.db].
    #[arg(long, env = "SEATKEEPER_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// A file holding the database URL, instead of --database (keeps its password out of
    /// the environment and the process list).
    #[arg(long, env = "SEATKEEPER_DATABASE_FILE", value_name = "PATH")]
    database_file: Option<std::path::PathBuf>,
}

impl DbArgs {
    /// The database URL, from the flag, the environment or the file.
    fn url(&self) -> anyhow::Result<String> {
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
fn secret_setting(
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
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on http://ADDR`).
    #[arg(long, env = "SEATKEEPER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Public base URL for `meta.location` (default: from the Host header).
    #[arg(long, env = "SEATKEEPER_PUBLIC_URL")]
    public_url: Option<String>,
    /// Sustained SCIM requests per second per tenant.
    #[arg(long, env = "SEATKEEPER_RATE_LIMIT", default_value_t = 100)]
    rate_limit: u32,
    /// Burst of SCIM requests per tenant above the sustained rate.
    #[arg(long, env = "SEATKEEPER_RATE_BURST", default_value_t = 1000)]
    rate_burst: u32,
    /// Sustained application API requests (checks, entitlements, tokens) per second per
    /// tenant.
    #[arg(long, env = "SEATKEEPER_APP_RATE_LIMIT", default_value_t = 100_000)]
    app_rate_limit: u32,
    /// Burst of application API requests per tenant above the sustained rate.
    #[arg(long, env = "SEATKEEPER_APP_RATE_BURST", default_value_t = 200_000)]
    app_rate_burst: u32,
    /// Largest request body in bytes (Bulk: --bulk-max-payload).
    #[arg(long, env = "SEATKEEPER_MAX_BODY", default_value_t = 1024 * 1024)]
    max_body: usize,
    /// Largest Bulk request body in bytes.
    #[arg(long, env = "SEATKEEPER_BULK_MAX_PAYLOAD", default_value_t = 4 * 1024 * 1024)]
    bulk_max_payload: usize,
    /// Most operations in one Bulk request.
    #[arg(long, env = "SEATKEEPER_BULK_MAX_OPERATIONS", default_value_t = 1000)]
    bulk_max_operations: usize,
    /// Seconds before a request is abandoned with 503.
    #[arg(long, env = "SEATKEEPER_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout: u64,
    /// Seconds a client has to send a request's headers, and to start its next request on a
    /// kept-alive connection.
    #[arg(long, env = "SEATKEEPER_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a connection may go without a byte sent or read (a trickled body, an unread
    /// answer) before it is closed.
    #[arg(long, env = "SEATKEEPER_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_timeout: u64,
    /// Open client connections at most; more are answered 503 and closed (kept under the
    /// process's open-file limit).
    #[arg(long, env = "SEATKEEPER_CONNECTION_LIMIT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    connection_limit: u64,
    /// Largest request head (request line and headers) in bytes; more is a 431.
    #[arg(long, env = "SEATKEEPER_MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    max_header_bytes: u64,
    /// Longest string value of a SCIM attribute, in bytes.
    #[arg(long, env = "SEATKEEPER_MAX_ATTRIBUTE_BYTES", default_value_t = 64 * 1024)]
    max_attribute_bytes: usize,
    /// Largest SCIM resource as JSON, in bytes (a group's members not counted).
    #[arg(long, env = "SEATKEEPER_MAX_RESOURCE_BYTES", default_value_t = 128 * 1024)]
    max_resource_bytes: usize,
    /// Largest list page as JSON, in bytes: a page stops early (itemsPerPage says how many
    /// it holds) rather than exceed it.
    #[arg(long, env = "SEATKEEPER_MAX_PAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_page_bytes: usize,
    /// Failed authentications allowed per client address per minute; past it, the address
    /// is answered 429 (with Retry-After) until its allowance refills. 0: no limit.
    #[arg(long, env = "SEATKEEPER_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    auth_failure_limit: u32,
    /// Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For names the
    /// client; from anyone else it is ignored.
    #[arg(long, env = "SEATKEEPER_TRUSTED_PROXIES", default_value = "", value_parser = trusted_proxies)]
    trusted_proxies: Proxies,
    /// Let webhooks reach loopback, private, link-local and metadata addresses (receivers on
    /// this host or network). Off by default: an endpoint there is refused at registration
    /// and at delivery.
    #[arg(long, env = "SEATKEEPER_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// Database connections (read pool on SQLite; the whole pool on PostgreSQL).
    #[arg(long, env = "SEATKEEPER_MAX_CONNECTIONS", default_value_t = 8)]
    max_connections: u32,
    /// SQLite synchronous mode: NORMAL (survives process crashes) or FULL (also power loss).
    #[arg(long, env = "SEATKEEPER_SQLITE_SYNCHRONOUS", default_value = "NORMAL")]
    sqlite_synchronous: String,
    /// Seconds between scheduler ticks (term and grace transitions).
    #[arg(long, env = "SEATKEEPER_SCHEDULER_INTERVAL", default_value_t = 5)]
    scheduler_interval: u64,
    /// Secret of the generic billing endpoint (Standard Webhooks `whsec_…`); more can be
    /// stored and rotated with `POST /api/v1/billing/secret`.
    #[arg(long, env = "SEATKEEPER_BILLING_SECRET", hide_env_values = true)]
    billing_secret: Option<String>,
    /// A file holding the billing endpoint's secret, instead of --billing-secret.
    #[arg(long, env = "SEATKEEPER_BILLING_SECRET_FILE", value_name = "PATH")]
    billing_secret_file: Option<std::path::PathBuf>,
    /// Signing secret of the Stripe endpoint (`whsec_…` from Stripe's dashboard).
    #[arg(long, env = "SEATKEEPER_STRIPE_SECRET", hide_env_values = true)]
    stripe_secret: Option<String>,
    /// A file holding the Stripe endpoint's secret, instead of --stripe-secret.
    #[arg(long, env = "SEATKEEPER_STRIPE_SECRET_FILE", value_name = "PATH")]
    stripe_secret_file: Option<std::path::PathBuf>,
    /// Seconds a signed billing event's timestamp may be away from now.
    #[arg(long, env = "SEATKEEPER_SIGNATURE_TOLERANCE", default_value_t = 300)]
    signature_tolerance: i64,
    /// Attempts of one webhook delivery before it is dead-lettered.
    #[arg(long, env = "SEATKEEPER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    webhook_max_attempts: u32,
    /// Milliseconds before the first webhook retry (doubling each attempt, up to an hour).
    #[arg(long, env = "SEATKEEPER_WEBHOOK_RETRY_BASE_MS", default_value_t = 5000)]
    webhook_retry_base_ms: u64,
    /// Seconds one webhook request may take.
    #[arg(long, env = "SEATKEEPER_WEBHOOK_TIMEOUT", default_value_t = 10)]
    webhook_timeout: u64,
    /// Days of audit records to keep (older ones are pruned hourly behind a signed
    /// checkpoint); 0 keeps everything.
    #[arg(long, env = "SEATKEEPER_AUDIT_RETENTION_DAYS", default_value_t = 0)]
    audit_retention_days: u32,
    /// Seconds between signatures of the audit chains' heads (each chain that moved gets an
    /// `audit.head` record and event).
    #[arg(long, env = "SEATKEEPER_AUDIT_HEAD_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    audit_head_seconds: u64,
    /// Days before a term ends that `subscription.expiring` is sent.
    #[arg(long, env = "SEATKEEPER_EXPIRY_NOTICE_DAYS", default_value_t = 7)]
    expiry_notice_days: u32,
    /// Seconds a signed entitlement token lives (1 to 86400).
    #[arg(long, env = "SEATKEEPER_TOKEN_TTL", default_value_t = 300)]
    token_ttl: u64,
    /// Seconds between writes of users seen by applications (`last_seen`).
    #[arg(long, env = "SEATKEEPER_ACTIVITY_FLUSH", default_value_t = 5)]
    activity_flush: u64,
    /// Days of usage history (seat counts per subscription over time) to keep; 0 keeps all.
    #[arg(long, env = "SEATKEEPER_USAGE_RETENTION_DAYS", default_value_t = 400)]
    usage_retention_days: u32,
    /// Seconds between looks at the tenants whose counts may have moved, for the usage
    /// history (at most one point per subscription per minute is kept; 0 keeps no history).
    #[arg(long, env = "SEATKEEPER_USAGE_SAMPLE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60))]
    usage_sample_seconds: u64,
    /// Megabytes of rendered users kept for `GET /Users/{id}` (SQLite only; 0 turns it off).
    #[arg(long, env = "SEATKEEPER_USER_CACHE_MB", default_value_t = 64)]
    user_cache_mb: u64,
    /// For tests only: run on a clock that starts at this RFC 3339 instant and moves only
    /// through `POST /api/v1/clock`.
    #[arg(long)]
    test_clock: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Runs the server on a temporary SQLite file with a demo tenant, users and groups.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// How many demo users to create.
        #[arg(long, default_value_t = 200)]
        users: usize,
    },
    /// Manages tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantCmd,
    },
    /// Manages SCIM bearer tokens.
    Token {
        #[command(subcommand)]
        action: TokenCmd,
    },
    /// Manages application keys (entitlement checks and tokens only).
    AppKey {
        #[command(subcommand)]
        action: AppKeyCmd,
    },
    /// Manages scoped admin keys (the admin API within scopes, optionally one tenant).
    AdminKey {
        #[command(subcommand)]
        action: AdminKeyCmd,
    },
    /// Applies a licensing model file (TOML): prints the plan, then applies it in one
    /// transaction (or only prints it, with --dry-run).
    Apply {
        /// The model file.
        file: std::path::PathBuf,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Change subscriptions a billing system manages too (its next event still applies).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Imports existing seat holders (CSV or JSON lines: user, product, plan, assigned_at):
    /// users in the directory get those plans, in the order of assigned_at; the others are
    /// kept as claims until SCIM creates them. Prints progress, then the report.
    Import {
        /// The file (`.csv`, or `.jsonl`/`.ndjson`; otherwise told by its first character).
        file: std::path::PathBuf,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Report what would happen and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Reconciles licenses: with FILE, against the application's view (CSV or JSON lines of
    /// user, product[, plan]); with --check, against a decision made again from scratch
    /// (exit 1 on differences; --repair fixes them).
    Reconcile {
        /// Who uses which product, as the application sees it.
        file: Option<std::path::PathBuf>,
        /// The tenant (required with FILE; with --check, every tenant when absent).
        #[arg(long)]
        tenant: Option<String>,
        /// Decide everything again and compare with the stored licenses and seat counts.
        #[arg(long, conflicts_with = "file")]
        check: bool,
        /// With --check: fix what differs (one transaction per tenant, audited).
        #[arg(long, requires = "check")]
        repair: bool,
        /// Print the report as CSV (with FILE).
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Checks the audit trail.
    Audit {
        #[command(subcommand)]
        action: AuditCmd,
    },
    /// Exits 0 when the server is ready (`GET /readyz` answers 200), 1 otherwise: for a
    /// container's HEALTHCHECK and other probes.
    Healthcheck {
        /// The server's base URL [default: http:// and the --listen address, with 0.0.0.0 or
        /// :: read as this host's loopback].
        #[arg(long)]
        url: Option<String>,
        /// The address the server listens on (as given to `serve`).
        #[arg(long, env = "SEATKEEPER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Creates a tenant and prints its id alone on stdout.
    Create {
        /// Display name.
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Lists tenants (id, name) as tab-separated lines.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Creates a SCIM token for a tenant and prints it alone on stdout.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// A name for the token; it is the actor in the audit trail.
        #[arg(long, default_value = "scim")]
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum AppKeyCmd {
    /// Creates an app key for a tenant and prints it alone on stdout.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// A name for the key (which application holds it).
        #[arg(long, default_value = "app")]
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum AdminKeyCmd {
    /// Creates an admin key and prints it alone on stdout (shown once).
    Create {
        /// Its scopes, comma-separated: tenants:read, tenants:write, model:write,
        /// billing:write, audit:read, events:read, webhooks:write, credentials:write.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Confine the key to this tenant (every other tenant answers 404).
        #[arg(long)]
        tenant: Option<String>,
        /// A name for the key; its actions are audited as `admin-key:<name>`.
        #[arg(long, default_value = "admin-key")]
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Lists admin keys (id, name, scopes, tenant, revoked) as tab-separated lines.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revokes an admin key by id.
    Revoke {
        /// The key's id.
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verifies the hash chain of every tenant (or one) and names the first broken link.
    Verify {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Check retention checkpoints against this public key (from `audit public-key`,
        /// kept outside the database) instead of the database's own key.
        #[arg(long)]
        public_key: Option<String>,
        /// Signed heads kept elsewhere (the output of `audit head`, or `audit.head` events'
        /// data, one JSON object per line): proves nothing up to them was removed or
        /// rewritten.
        #[arg(long)]
        head: Option<std::path::PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Signs the head of every chain (or one) that moved since its last signed head, and
    /// prints each chain's latest signed head as a JSON line: keep them elsewhere, and
    /// `audit verify --head FILE` proves the chains still hold them.
    Head {
        /// Only this tenant (`vendor` for the vendor's chain).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Removes audit records older than a limit; the kept chain stays verifiable from a
    /// signed checkpoint.
    Prune {
        /// Remove records written more than this many days ago.
        #[arg(long)]
        older_than_days: u32,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Prints the public key that verifies retention checkpoints and signed reports (keep a
    /// copy elsewhere).
    PublicKey {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Checks a signed report (`GET /api/v1/reports/compliance`): the file must be the
    /// response body exactly as received, the signature its `Seatkeeper-Signature` header.
    VerifyReport {
        /// The report as received.
        file: std::path::PathBuf,
        /// The `Seatkeeper-Signature` header's value.
        #[arg(long)]
        signature: String,
        /// The public key from `seatkeeper audit public-key`, kept outside the server.
        #[arg(long)]
        public_key: String,
    },
}

fn init_logging(to_stdout: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SEATKEEPER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("SEATKEEPER_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    use std::io::IsTerminal;
    let ansi = if to_stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match (to_stdout, json) {
        (true, true) => builder.json().with_writer(std::io::stdout).init(),
        (true, false) => builder.with_writer(std::io::stdout).init(),
        (false, true) => builder.json().with_writer(std::io::stderr).init(),
        (false, false) => builder.with_writer(std::io::stderr).init(),
    }
}

/// `--trusted-proxies`, parsed.
#[derive(Debug, Clone)]
struct Proxies(Vec<ipnet::IpNet>);

fn trusted_proxies(text: &str) -> Result<Proxies, String> {
    seatkeeper::parse_trusted_proxies(text).map(Proxies)
}

fn config_from(args: &ServeArgs) -> anyhow::Result<Config> {
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

async fn open(url: &str, args: Option<&ServeArgs>) -> anyhow::Result<Store> {
    let mut opts = StoreOptions::default();
    if let Some(a) = args {
        opts.max_connections = a.max_connections;
        opts.sqlite_synchronous = a.sqlite_synchronous.clone();
    }
    Store::connect(url, &opts).await.map_err(|e| {
        // A driver's message may quote the URL: its password never reaches the terminal.
        anyhow::anyhow!(
            "opening database {}: {}",
            seatkeeper::redact_url(url),
            seatkeeper::scrub_secret(&e.to_string(), url)
        )
    })
}

async fn serve(
    store: Store,
    clock: SharedClock,
    args: &ServeArgs,
    admin_from_env: Option<String>,
) -> anyhow::Result<()> {
    let (admin_hash, generated) =
        seatkeeper::admin_token_hash(&store, admin_from_env.as_deref()).await?;
    if let Some(token) = generated {
        // Printed once, on stdout and never as a log record: log pipelines keep records.
        println!(
            "generated admin token (shown once; set SEATKEEPER_ADMIN_TOKEN or SEATKEEPER_ADMIN_TOKEN_FILE to choose your own): {token}"
        );
    }
    let app = match &args.test_clock {
        Some(start) => {
            let start =
                time::OffsetDateTime::parse(start, &time::format_description::well_known::Rfc3339)
                    .with_context(|| format!("--test-clock {start} is not an RFC 3339 instant"))?;
            tracing::warn!("running on a test clock that only POST /api/v1/clock moves");
            seatkeeper::app_on_test_clock(
                store.clone(),
                seatkeeper::ManualClock::at(start),
                config_from(args)?,
                admin_hash,
                seatkeeper::install_metrics(),
            )
        }
        None => seatkeeper::app(
            store.clone(),
            clock.clone(),
            config_from(args)?,
            admin_hash,
            seatkeeper::install_metrics(),
        ),
    };
    seatkeeper::Licenses::new(store.clone(), clock)
        .set_expiry_notice_days(args.expiry_notice_days)
        .await?;
    let seatkeeper::App { router, mut jobs } = app;
    jobs.start_server(seatkeeper::Schedule {
        scheduler_every: Duration::from_secs(args.scheduler_interval.max(1)),
        audit_retention_days: args.audit_retention_days,
        audit_head_every: Duration::from_secs(args.audit_head_seconds),
        dispatch: seatkeeper::DispatchConfig {
            max_attempts: args.webhook_max_attempts.max(1),
            retry_base: Duration::from_millis(args.webhook_retry_base_ms.max(10)),
            timeout: Duration::from_secs(args.webhook_timeout.max(1)),
            destinations: if args.allow_private_webhooks {
                seatkeeper::Destinations::AnyAddress
            } else {
                seatkeeper::Destinations::PublicOnly
            },
            ..Default::default()
        },
    });
    let limits = seatkeeper::transport::Limits {
        header_timeout: Duration::from_secs(args.header_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_connections: seatkeeper::transport::fit_connection_cap(
            usize::try_from(args.connection_limit).unwrap_or(usize::MAX),
        ),
        max_header_bytes: usize::try_from(args.max_header_bytes).unwrap_or(64 * 1024),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(backend = ?store.backend(), connection_limit = limits.max_connections, "listening on http://{addr}");
    // On SIGTERM or Ctrl-C, stop accepting and let requests in flight finish, for at most
    // SHUTDOWN_GRACE: a client that holds a connection open must not keep a stopped server
    // alive (answered writes are committed either way).
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = seatkeeper::transport::serve(listener, router, limits, async move {
        shutdown().await;
        let _ = stopping.send(());
    });
    tokio::select! {
        () = server => {},
        () = async {
            let _ = stopped.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("requests still open after {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    jobs.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates a SCIM token or app key and prints it alone on stdout.
async fn print_new_credential(
    db: &DbArgs,
    clock: SharedClock,
    kind: Credential,
    tenant: &str,
    name: &str,
) -> anyhow::Result<()> {
    init_logging(false);
    let store = open(&db.url()?, None).await?;
    let name = seatkeeper::Name::parse(name).map_err(anyhow::Error::msg)?;
    let created = seatkeeper::Tenants::new(store.clone(), clock)
        .create_credential(&cli_actor(), kind, tenant, &name)
        .await?;
    println!("{}", created.token);
    store.close().await;
    Ok(())
}

/// `seatkeeper admin-key …`.
async fn admin_key(action: AdminKeyCmd, clock: SharedClock) -> anyhow::Result<()> {
    init_logging(false);
    let db = match &action {
        AdminKeyCmd::Create { db, .. }
        | AdminKeyCmd::List { db }
        | AdminKeyCmd::Revoke { db, .. } => db,
    };
    let store = open(&db.url()?, None).await?;
    let tenants = seatkeeper::Tenants::new(store.clone(), clock);
    let done = async {
        match &action {
            AdminKeyCmd::Create {
                scopes,
                tenant,
                name,
                ..
            } => {
                let name = seatkeeper::Name::parse(name).map_err(anyhow::Error::msg)?;
                let scopes = seatkeeper::Scopes::parse(scopes.iter().map(|s| s.trim()))
                    .map_err(anyhow::Error::msg)?;
                let created = tenants
                    .create_admin_key(&cli_actor(), &name, &scopes, tenant.as_deref())
                    .await?;
                println!("{}", created.token);
            }
            AdminKeyCmd::List { .. } => {
                for k in tenants.admin_keys().await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.name,
                        k.scopes.join(","),
                        k.tenant.as_deref().unwrap_or("*"),
                        k.revoked.as_deref().unwrap_or("-")
                    );
                }
            }
            AdminKeyCmd::Revoke { id, .. } => tenants.revoke_admin_key(&cli_actor(), id).await?,
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    store.close().await;
    done
}

/// Signed heads from a file: JSON lines (the output of `audit head`), a JSON list, or the
/// `audit.head` events themselves (their `data`).
fn read_heads(path: &std::path::Path) -> anyhow::Result<Vec<seatkeeper::SignedHead>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Array(list)) => list,
        Ok(one) => vec![one],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not JSON lines of signed heads", path.display()))?,
    };
    values
        .into_iter()
        .map(|v| {
            let v = v.get("data").cloned().unwrap_or(v);
            serde_json::from_value(v).with_context(|| {
                format!(
                    "{}: not a signed head (tenant_id, seq, hash, at, signature)",
                    path.display()
                )
            })
        })
        .collect()
}

/// How the CLI names an audit chain.
fn chain_label(chain: &str) -> String {
    if chain == seatkeeper::VENDOR {
        "vendor chain".into()
    } else {
        format!("tenant {chain}")
    }
}

/// The command line as the audit trail records it.
fn cli_actor() -> seatkeeper::Actor {
    seatkeeper::Actor {
        name: "cli".into(),
        request_id: format!("cli-{}", uuid::Uuid::new_v4()),
    }
}

/// How long a stopping server waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Rows the CLI imports per transaction.
const IMPORT_PART: usize = 20_000;

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The message and its causes, never a backtrace (RUST_BACKTRACE is for panics).
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Calls `/readyz` and succeeds only when the server answers ready.
async fn healthcheck(url: Option<String>, listen: SocketAddr, timeout: u64) -> anyhow::Result<()> {
    let base = url.unwrap_or_else(|| {
        // A server listening on every address is reached on this host's loopback.
        let mut at = listen;
        if at.ip().is_unspecified() {
            at.set_ip(match at {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{at}")
    });
    let target = format!("{}/readyz", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout.max(1)))
        .build()?;
    let resp = client
        .get(&target)
        .send()
        .await
        .with_context(|| format!("{target}: no answer"))?;
    let status = resp.status();
    if status.is_success() {
        println!("ready: {target}");
        Ok(())
    } else {
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        anyhow::bail!("{target} answered {status}: {body}")
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let clock: SharedClock = seatkeeper::system_clock();
    let admin_env = secret_setting(
        "SEATKEEPER_ADMIN_TOKEN",
        std::env::var("SEATKEEPER_ADMIN_TOKEN").ok().as_deref(),
        std::env::var_os("SEATKEEPER_ADMIN_TOKEN_FILE")
            .map(std::path::PathBuf::from)
            .as_deref(),
    )?;
    match cli.command {
        Command::Serve { db, serve: args } => {
            init_logging(true);
            let store = open(&db.url()?, Some(&args)).await?;
            serve(store, clock, &args, admin_env).await
        }
        Command::Demo { serve: args, users } => {
            init_logging(true);
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("demo.db").display());
            let store = open(&url, Some(&args)).await?;
            let admin = admin_env.unwrap_or_else(|| seatkeeper::generate_token("ska_"));
            let demo = seatkeeper::load_demo(&store, clock.clone(), users).await?;
            let listener = std::net::TcpListener::bind(args.listen)
                .with_context(|| format!("binding {}", args.listen))?;
            let addr = listener.local_addr()?;
            drop(listener);
            let mut args = args;
            args.listen = addr;
            println!(
                "\nseatkeeper demo — {users} users in {} groups, on {url}\n",
                demo.groups
            );
            println!("  console       : http://{addr}/ui   (sign in with the admin token below)");
            println!("  SCIM base URL : http://{addr}/scim/v2");
            println!("  SCIM token    : {}", demo.token);
            println!("  tenant id     : {}", demo.tenant);
            println!("  admin API     : http://{addr}/api/v1   (admin token: {admin})");
            println!(
                "  app key       : {}   (checks, entitlement tokens)",
                demo.app_key
            );
            println!("  JWKS          : http://{addr}/.well-known/jwks.json");
            println!("  metrics       : http://{addr}/metrics\n");
            println!(
                "  licensing     : workspace (enterprise, hard seat limit) and analytics (soft), 4 rules\n"
            );
            println!(
                "  try: curl -H 'Authorization: Bearer {}' 'http://{addr}/scim/v2/Users?filter=userName%20sw%20%22a%22&count=3'",
                demo.token
            );
            println!(
                "       curl -H 'Authorization: Bearer {admin}' http://{addr}/api/v1/tenants/{}/usage",
                demo.tenant
            );
            println!(
                "       curl -H 'Authorization: Bearer {}' 'http://{addr}/scim/v2/Users?count=5&attributes=userName&filter=urn:seatkeeper:params:scim:schemas:extension:licensing:2.0:User:licenses.state%20eq%20%22waitlisted%22'",
                demo.token
            );
            println!(
                "       curl -H 'Authorization: Bearer {admin}' 'http://{addr}/api/v1/events?tenant={}&limit=5'      # events",
                demo.tenant
            );
            println!(
                "       curl -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"user\":\"{}\",\"feature\":\"export\"}}' http://{addr}/api/v1/check\n",
                demo.app_key, demo.first_user
            );
            let result = serve(store, clock, &args, Some(admin)).await;
            drop(dir);
            result
        }
        Command::Tenant { action } => {
            init_logging(false);
            match action {
                TenantCmd::Create { name, db } => {
                    let store = open(&db.url()?, None).await?;
                    let t = seatkeeper::Tenants::new(store.clone(), clock.clone())
                        .create(
                            &cli_actor(),
                            &seatkeeper::Name::parse(&name).map_err(anyhow::Error::msg)?,
                        )
                        .await?;
                    println!("{}", t.id);
                    store.close().await;
                }
                TenantCmd::List { db } => {
                    let store = open(&db.url()?, None).await?;
                    for t in store.tenants().await? {
                        println!("{}\t{}", t.id, t.name);
                    }
                    store.close().await;
                }
            }
            Ok(())
        }
        Command::Token {
            action: TokenCmd::Create { tenant, name, db },
        } => print_new_credential(&db, clock.clone(), Credential::Scim, &tenant, &name).await,
        Command::AppKey {
            action: AppKeyCmd::Create { tenant, name, db },
        } => print_new_credential(&db, clock.clone(), Credential::App, &tenant, &name).await,
        Command::AdminKey { action } => admin_key(action, clock.clone()).await,
        Command::Apply {
            file,
            dry_run,
            force,
            db,
        } => {
            init_logging(false);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let store = open(&db.url()?, None).await?;
            let licenses = seatkeeper::Licenses::new(store.clone(), clock.clone());
            let known = licenses.products().await?;
            let spec = licensing::spec::Spec::from_toml_with(&text, &known)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let actor = seatkeeper::Actor {
                name: "cli".into(),
                request_id: format!("apply-{}", uuid::Uuid::new_v4()),
            };
            let applied = licenses.apply(actor, spec, dry_run, force).await;
            store.close().await;
            let applied = applied.map_err(|e| anyhow::anyhow!("{e}"))?;
            print!("{}", seatkeeper::plan_text(&applied));
            Ok(())
        }
        Command::Reconcile {
            file,
            tenant,
            check,
            repair,
            csv,
            db,
        } => {
            init_logging(false);
            let actor = seatkeeper::Actor {
                name: "cli".into(),
                request_id: format!("reconcile-{}", uuid::Uuid::new_v4()),
            };
            if check {
                let store = open(&db.url()?, None).await?;
                let licenses = seatkeeper::Licenses::new(store.clone(), clock.clone());
                let found = licenses
                    .self_check(actor, tenant.as_deref(), repair)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"));
                store.close().await;
                let found = found?;
                print!("{}", seatkeeper::differences_text(&found));
                if found.is_empty() {
                    println!(
                        "no differences: every license and seat count is as deciding again gives"
                    );
                    return Ok(());
                }
                if repair {
                    println!("repaired {} differences", found.len());
                    return Ok(());
                }
                println!(
                    "{} differences (seatkeeper reconcile --check --repair fixes them)",
                    found.len()
                );
                std::process::exit(1);
            }
            let Some(file) = file else {
                anyhow::bail!("reconcile needs FILE (the application's view) or --check");
            };
            let Some(tenant) = tenant else {
                anyhow::bail!("reconcile FILE needs --tenant");
            };
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let json_lines = matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("jsonl" | "ndjson")
            ) || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let uses = seatkeeper::parse_uses(&bytes, json_lines)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let store = open(&db.url()?, None).await?;
            let report = seatkeeper::Licenses::new(store.clone(), clock.clone())
                .reconcile_uses(&tenant, uses)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"));
            store.close().await;
            let (at, findings) = report?;
            if csv {
                let bytes = seatkeeper::reconcile_csv(&findings)?;
                std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&seatkeeper::reconcile_json(&at, &findings))?
                );
            }
            Ok(())
        }
        Command::Import {
            file,
            tenant,
            dry_run,
            db,
        } => {
            init_logging(false);
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let ext = file
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let format = match ext.as_str() {
                "csv" => seatkeeper::ImportFormat::Csv,
                "jsonl" | "ndjson" => seatkeeper::ImportFormat::JsonLines,
                _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => {
                    seatkeeper::ImportFormat::JsonLines
                }
                _ => seatkeeper::ImportFormat::Csv,
            };
            let mut rows = seatkeeper::parse_import(&bytes, format)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            // Earlier assignments first across the parts, as within one.
            rows.sort_by_cached_key(|r| {
                seatkeeper::Instant::parse(&r.assigned_at)
                    .map(|i| i.at())
                    .ok()
            });
            let store = open(&db.url()?, None).await?;
            let licenses = seatkeeper::Licenses::new(store.clone(), clock.clone());
            let total = rows.len();
            // A dry run reports on the whole file at once; an import applies it in parts of
            // IMPORT_PART rows, each in its own transaction, printing progress.
            let part = if dry_run { total.max(1) } else { IMPORT_PART };
            let mut all = seatkeeper::ImportReport {
                dry_run,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let mut done = 0;
            for chunk in rows.chunks(part) {
                let actor = seatkeeper::Actor {
                    name: "cli".into(),
                    request_id: format!("import-{}", uuid::Uuid::new_v4()),
                };
                let r = licenses
                    .import(actor, &tenant, chunk.to_vec(), dry_run)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                done += chunk.len();
                all.matched.extend(r.matched);
                all.pending.extend(r.pending);
                all.refused.extend(r.refused);
                all.licenses.add(&r.licenses);
                if !dry_run {
                    eprintln!(
                        "imported {done}/{total} rows ({:.1} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            store.close().await;
            print!("{}", seatkeeper::import_text(&all));
            Ok(())
        }
        Command::Audit {
            action:
                AuditCmd::Verify {
                    tenant,
                    public_key,
                    head,
                    db,
                },
        } => {
            init_logging(false);
            let pinned = match &public_key {
                Some(k) => Some(
                    seatkeeper::public_key(k)
                        .context("--public-key is not a base64 Ed25519 public key")?,
                ),
                None => None,
            };
            let witnesses = match &head {
                Some(path) => read_heads(path)?,
                None => Vec::new(),
            };
            let store = open(&db.url()?, None).await?;
            let results = seatkeeper::Audit::new(store.clone(), clock.clone())
                .verify(tenant.as_deref(), pinned.as_ref(), &witnesses)
                .await?;
            store.close().await;
            let mut broken = false;
            for (t, n, r) in results {
                let t = chain_label(&t);
                match r {
                    Ok(()) => println!("ok      {t}: {n} records, chain intact"),
                    Err(b) => {
                        broken = true;
                        println!(
                            "BROKEN  {t}: first broken link at record {}: {}",
                            b.seq, b.reason
                        );
                    }
                }
            }
            if broken {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit {
            action: AuditCmd::Head { tenant, db },
        } => {
            init_logging(false);
            let store = open(&db.url()?, None).await?;
            let heads = seatkeeper::Audit::new(store.clone(), clock.clone())
                .heads(tenant.as_deref())
                .await;
            store.close().await;
            for h in heads? {
                println!("{}", serde_json::to_string(&h)?);
            }
            Ok(())
        }
        Command::Audit {
            action:
                AuditCmd::Prune {
                    older_than_days,
                    tenant,
                    db,
                },
        } => {
            init_logging(false);
            let store = open(&db.url()?, None).await?;
            let done = seatkeeper::Audit::new(store.clone(), clock.clone())
                .prune(&cli_actor(), older_than_days, tenant.as_deref())
                .await;
            store.close().await;
            for (t, cp) in done? {
                let t = chain_label(&t);
                match cp {
                    Some(cp) => println!(
                        "pruned  {t}: records 1..={} removed; the chain now starts from a signed checkpoint",
                        cp.seq
                    ),
                    None => {
                        println!("kept    {t}: nothing older than {older_than_days} days")
                    }
                }
            }
            Ok(())
        }
        Command::Audit {
            action:
                AuditCmd::VerifyReport {
                    file,
                    signature,
                    public_key,
                },
        } => {
            let key = seatkeeper::public_key(&public_key)
                .context("--public-key is not a base64 Ed25519 public key")?;
            let body =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if seatkeeper::signature_holds(&key, &body, &signature) {
                println!("signature valid: {} was signed by this key", file.display());
                Ok(())
            } else {
                println!(
                    "signature INVALID: {} was not signed by this key, or was changed",
                    file.display()
                );
                std::process::exit(1);
            }
        }
        Command::Audit {
            action: AuditCmd::PublicKey { db },
        } => {
            init_logging(false);
            let store = open(&db.url()?, None).await?;
            let key = seatkeeper::Audit::new(store.clone(), clock.clone())
                .public_key()
                .await;
            store.close().await;
            println!("{}", key?);
            Ok(())
        }
        Command::Healthcheck {
            url,
            listen,
            timeout,
        } => healthcheck(url, listen, timeout).await,
    }
}
