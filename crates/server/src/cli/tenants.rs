//! Tenants from the command line.

use clap::Subcommand;
use seatkeeper::SharedClock;

use crate::args::{DbArgs, Output, cli_actor, open, open_creating, print_json};
use crate::serve::init_logging;

#[derive(Subcommand)]
pub(crate) enum TenantCmd {
    /// Creates a tenant and prints its id alone on stdout.
    Create {
        /// Display name.
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Renames a tenant (audited on its chain and the vendor's).
    Rename {
        /// The tenant's id.
        id: String,
        /// Its new display name.
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Deletes a tenant and everything it holds (users, groups, licenses, subscriptions,
    /// credentials, webhooks, events, its audit chain); recorded on the vendor's audit chain.
    /// Refused while it holds licenses, unless --force.
    Delete {
        /// The tenant's id.
        id: String,
        /// Delete it even though it holds licenses.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Lists tenants (id, name, creation time) as tab-separated lines.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `seatkeeper tenant …`.
pub(crate) async fn run(
    action: TenantCmd,
    clock: SharedClock,
    output: Output,
) -> anyhow::Result<()> {
    init_logging(false);
    match action {
        TenantCmd::Create { name, db } => {
            // The first command on a new database: it may create and migrate it.
            let store = open_creating(&db.url()?, None).await?;
            let t = seatkeeper::Tenants::new(store.clone(), clock.clone())
                .create(
                    &cli_actor(),
                    &seatkeeper::Name::parse(&name).map_err(anyhow::Error::msg)?,
                )
                .await?;
            match output {
                Output::Text => println!("{}", t.id),
                Output::Json => print_json(&t)?,
            }
            store.close().await;
        }
        TenantCmd::Rename { id, name, db } => {
            let store = open(&db.url()?, None).await?;
            let name = seatkeeper::Name::parse(&name).map_err(anyhow::Error::msg)?;
            let t = seatkeeper::Tenants::new(store.clone(), clock.clone())
                .rename(&cli_actor(), &id, &name)
                .await;
            store.close().await;
            let t = t?;
            match output {
                Output::Text => println!("renamed {}: {}", t.id, t.name),
                Output::Json => print_json(&t)?,
            }
        }
        TenantCmd::Delete { id, force, db } => {
            let store = open(&db.url()?, None).await?;
            let gone = seatkeeper::Tenants::new(store.clone(), clock.clone())
                .delete(&cli_actor(), &id, force)
                .await;
            store.close().await;
            let gone = gone?;
            match output {
                Output::Text => {
                    let rows: i64 = gone.removed.values().sum();
                    println!(
                        "deleted {} ({}): {} licenses, {rows} rows in {} tables",
                        gone.tenant.id,
                        gone.tenant.name,
                        gone.licenses,
                        gone.removed.len()
                    );
                }
                Output::Json => print_json(&gone)?,
            }
        }
        TenantCmd::List { db } => {
            let store = open(&db.url()?, None).await?;
            let all = store.tenants().await?;
            match output {
                Output::Text => {
                    for t in all {
                        println!("{}\t{}\t{}", t.id, t.name, t.created);
                    }
                }
                Output::Json => print_json(&all)?,
            }
            store.close().await;
        }
    }
    Ok(())
}
