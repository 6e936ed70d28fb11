//! Tenants from the command line.

use clap::Subcommand;
use seatkeeper::SharedClock;

use crate::args::{DbArgs, cli_actor, open};
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
    /// Lists tenants (id, name) as tab-separated lines.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `seatkeeper tenant …`.
pub(crate) async fn run(action: TenantCmd, clock: SharedClock) -> anyhow::Result<()> {
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
