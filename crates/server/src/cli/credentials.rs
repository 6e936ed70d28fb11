//! Credentials from the command line: SCIM tokens, app keys and scoped admin keys.

use clap::Subcommand;
use seatkeeper::{Credential, SharedClock};

use crate::args::{DbArgs, Output, cli_actor, open, print_json};
use crate::serve::init_logging;

/// `token` and `app-key` share their commands: a tenant's credentials of one kind.
#[derive(Subcommand)]
pub(crate) enum CredentialCmd {
    /// Creates one for a tenant and prints its secret alone on stdout (shown once); with
    /// `--output json`, `{"id", "token"}`.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// A name for it (the actor in the audit trail; which application holds a key).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Lists a tenant's, oldest first: id, name, creation time and revocation time as
    /// tab-separated lines (never a secret).
    List {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revokes one by id. A running server stops accepting it within 10 s (its
    /// verification cache); one revoked through the admin API stops at once on that node.
    Revoke {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// Its id (from `list`).
        id: String,
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

/// `seatkeeper token …` and `seatkeeper app-key …`.
pub(crate) async fn credential(
    kind: Credential,
    action: CredentialCmd,
    clock: SharedClock,
    output: Output,
) -> anyhow::Result<()> {
    init_logging(false);
    let db = match &action {
        CredentialCmd::Create { db, .. }
        | CredentialCmd::List { db, .. }
        | CredentialCmd::Revoke { db, .. } => db,
    };
    let store = open(&db.url()?, None).await?;
    let tenants = seatkeeper::Tenants::new(store.clone(), clock);
    let done = async {
        match &action {
            CredentialCmd::Create { tenant, name, .. } => {
                let name = name.clone().unwrap_or_else(|| match kind {
                    Credential::App => "app".into(),
                    _ => "scim".into(),
                });
                let name = seatkeeper::Name::parse(&name).map_err(anyhow::Error::msg)?;
                let created = tenants
                    .create_credential(&cli_actor(), kind, tenant, &name)
                    .await?;
                match output {
                    Output::Text => println!("{}", created.token),
                    Output::Json => print_json(&serde_json::json!({
                        "id": created.row.id,
                        "name": created.row.name,
                        "created": created.row.created,
                        "token": created.token,
                    }))?,
                }
            }
            CredentialCmd::List { tenant, .. } => {
                let rows = tenants.credentials(kind, tenant).await?;
                match output {
                    Output::Text => {
                        for r in rows {
                            println!(
                                "{}\t{}\t{}\t{}",
                                r.id,
                                r.name,
                                r.created,
                                r.revoked.as_deref().unwrap_or("-")
                            );
                        }
                    }
                    Output::Json => print_json(&rows)?,
                }
            }
            CredentialCmd::Revoke { tenant, id, .. } => {
                tenants
                    .revoke_credential(&cli_actor(), kind, tenant, id)
                    .await?;
                print_revoked(id, output)?;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    store.close().await;
    done
}

/// `seatkeeper admin-key …`.
pub(crate) async fn admin_key(
    action: AdminKeyCmd,
    clock: SharedClock,
    output: Output,
) -> anyhow::Result<()> {
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
                match output {
                    Output::Text => println!("{}", created.token),
                    Output::Json => print_json(&serde_json::json!({
                        "id": created.row.id,
                        "name": created.row.name,
                        "scopes": created.row.scopes,
                        "tenant": created.row.tenant,
                        "token": created.token,
                    }))?,
                }
            }
            AdminKeyCmd::List { .. } if output == Output::Json => {
                print_json(&tenants.admin_keys().await?)?;
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
            AdminKeyCmd::Revoke { id, .. } => {
                tenants.revoke_admin_key(&cli_actor(), id).await?;
                print_revoked(id, output)?;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    store.close().await;
    done
}

/// What `revoke` prints.
fn print_revoked(id: &str, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Text => println!("revoked {id}"),
        Output::Json => print_json(&serde_json::json!({"id": id, "revoked": true}))?,
    }
    Ok(())
}
