//! The `seatkeeper` command line: each group of commands in its own file, over the library.

mod args;
mod audit;
mod credentials;
mod model;
mod progress;
mod serve;
mod tenants;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use seatkeeper::{Credential, SharedClock};

use crate::args::{DbArgs, Output, ServeArgs};
use crate::audit::AuditCmd;
use crate::credentials::{AdminKeyCmd, CredentialCmd};
use crate::tenants::TenantCmd;

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
    /// How commands print what they found: text for people, json for scripts.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SEATKEEPER_OUTPUT"
    )]
    output: Output,
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
        action: CredentialCmd,
    },
    /// Manages application keys (entitlement checks and tokens only).
    AppKey {
        #[command(subcommand)]
        action: CredentialCmd,
    },
    /// Prints a shell completion script: `seatkeeper completions bash > /etc/bash_completion.d/seatkeeper`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
        /// With --dry-run: exit 2 when changes are pending, 0 when there are none (as
        /// `terraform plan -detailed-exitcode`).
        #[arg(long, requires = "dry_run")]
        exit_code: bool,
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
    /// Creates the database if needed and applies pending schema migrations (`serve` does
    /// too, at start). A database newer than this binary is refused.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    seatkeeper::crypto::install();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The message and its causes, never a backtrace (RUST_BACKTRACE is for panics).
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let clock: SharedClock = seatkeeper::system_clock();
    let admin_env = args::secret_setting(
        "SEATKEEPER_ADMIN_TOKEN",
        std::env::var("SEATKEEPER_ADMIN_TOKEN").ok().as_deref(),
        std::env::var_os("SEATKEEPER_ADMIN_TOKEN_FILE")
            .map(std::path::PathBuf::from)
            .as_deref(),
    )?;
    match cli.command {
        Command::Serve { db, serve: args } => {
            serve::init_logging(true);
            let store = args::open_creating(&db.url()?, Some(&args)).await?;
            serve::serve(store, clock, &args, admin_env).await
        }
        Command::Demo { serve: args, users } => serve::demo(args, users, clock, admin_env).await,
        Command::Tenant { action } => tenants::run(action, clock, cli.output).await,
        Command::Token { action } => {
            credentials::credential(Credential::Scim, action, clock, cli.output).await
        }
        Command::AppKey { action } => {
            credentials::credential(Credential::App, action, clock, cli.output).await
        }
        Command::AdminKey { action } => credentials::admin_key(action, clock, cli.output).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "seatkeeper",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Apply {
            file,
            dry_run,
            force,
            exit_code,
            db,
        } => {
            let pending = model::apply(file, dry_run, force, db, clock, cli.output).await?;
            if exit_code && pending {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Reconcile {
            file,
            tenant,
            check,
            repair,
            csv,
            db,
        } => model::reconcile(file, tenant, check, repair, csv, db, clock).await,
        Command::Import {
            file,
            tenant,
            dry_run,
            db,
        } => model::import(file, tenant, dry_run, db, clock).await,
        Command::Audit { action } => audit::run(action, clock).await,
        Command::Migrate { db } => {
            serve::init_logging(false);
            let store = args::open_for_migration(&db.url()?).await?;
            let applied = store.migrate().await;
            store.close().await;
            let applied = applied?;
            let version = seatkeeper::Store::schema_version();
            match cli.output {
                Output::Text if applied.is_empty() => {
                    println!("schema at version {version}: nothing to apply")
                }
                Output::Text => println!(
                    "schema at version {version}: applied {}",
                    applied
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Output::Json => {
                    args::print_json(&serde_json::json!({"version": version, "applied": applied}))?
                }
            }
            Ok(())
        }
        Command::Healthcheck {
            url,
            listen,
            timeout,
        } => serve::healthcheck(url, listen, timeout).await,
    }
}
