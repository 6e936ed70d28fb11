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
