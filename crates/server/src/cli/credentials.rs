//! Credentials from the command line: SCIM tokens, app keys and scoped admin keys.

use clap::Subcommand;
use seatkeeper::{Credential, SharedClock};

use crate::args::{DbArgs, cli_actor, open};
use crate::serve::init_logging;

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
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
pub(crate) enum AppKeyCmd {
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
pub(crate) enum AdminKeyCmd {
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

/// Creates a SCIM token or app key and prints it alone on stdout.
pub(crate) async fn print_new_credential(
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
pub(crate) async fn admin_key(action: AdminKeyCmd, clock: SharedClock) -> anyhow::Result<()> {
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
