//! The audit trail from the command line: verify, signed heads, prune, keys, reports.

use anyhow::Context;
use clap::Subcommand;
use seatkeeper::SharedClock;

use crate::args::{DbArgs, cli_actor, open};
use crate::serve::init_logging;

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
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

/// `seatkeeper audit …`.
pub(crate) async fn run(action: AuditCmd, clock: SharedClock) -> anyhow::Result<()> {
    match action {
        AuditCmd::Verify {
            tenant,
            public_key,
            head,
            db,
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
            let bar = crate::progress::bar(0, "records");
            let results = seatkeeper::Audit::new(store.clone(), clock.clone())
                .verify_reporting(
                    tenant.as_deref(),
                    pinned.as_ref(),
                    &witnesses,
                    &|done, total| {
                        bar.set_length(total);
                        bar.set_position(done);
                    },
                )
                .await;
            bar.finish_and_clear();
            let results = results?;
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
        AuditCmd::Head { tenant, db } => {
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
        AuditCmd::Prune {
            older_than_days,
            tenant,
            db,
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
        AuditCmd::VerifyReport {
            file,
            signature,
            public_key,
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
        AuditCmd::PublicKey { db } => {
            init_logging(false);
            let store = open(&db.url()?, None).await?;
            let key = seatkeeper::Audit::new(store.clone(), clock.clone())
                .public_key()
                .await;
            store.close().await;
            println!("{}", key?);
            Ok(())
        }
    }
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
