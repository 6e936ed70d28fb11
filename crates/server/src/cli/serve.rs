//! Running the server: `serve`, `demo`, and the `healthcheck` a container runs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use seatkeeper::{SharedClock, Store};

use crate::args::{ServeArgs, config_from, open_creating};

pub(crate) fn init_logging(to_stdout: bool) {
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

pub(crate) async fn serve(
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
        metrics_tenant_limit: args.metrics_tenant_limit,
        metrics_every: Duration::from_secs(args.metrics_interval),
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

/// How long a stopping server waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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

/// Calls `/readyz` and succeeds only when the server answers ready.
pub(crate) async fn healthcheck(
    url: Option<String>,
    listen: SocketAddr,
    timeout: u64,
) -> anyhow::Result<()> {
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
    let client = seatkeeper::crypto::http_client()
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

/// `seatkeeper demo`: a temporary SQLite file with a demo tenant, then the server.
pub(crate) async fn demo(
    args: ServeArgs,
    users: usize,
    clock: SharedClock,
    admin_env: Option<String>,
) -> anyhow::Result<()> {
    init_logging(true);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let store = open_creating(&url, Some(&args)).await?;
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
