//! The licensing model and seat holders from files: `apply`, `import`, `reconcile`.

use anyhow::Context;
use seatkeeper::SharedClock;

use crate::args::{DbArgs, Output, open, print_json};
use crate::serve::init_logging;

/// Rows the CLI imports per transaction.
const IMPORT_PART: usize = 20_000;

/// `seatkeeper apply`: returns whether anything changes (or, in a dry run, would).
pub(crate) async fn apply(
    file: std::path::PathBuf,
    dry_run: bool,
    force: bool,
    db: DbArgs,
    clock: SharedClock,
    output: Output,
) -> anyhow::Result<bool> {
    init_logging(false);
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let store = open(&db.url()?, None).await?;
    let licenses = seatkeeper::Licenses::new(store.clone(), clock.clone());
    let known = licenses.products().await?;
    let spec = licensing::spec::Spec::from_toml_with(&text, &known)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let actor = seatkeeper::Actor {
        name: "cli".into(),
        request_id: format!("apply-{}", uuid::Uuid::new_v4()),
    };
    let working = crate::progress::spinner(if dry_run {
        "planning: deciding every affected user's licenses again"
    } else {
        "applying: deciding every affected user's licenses again, in one transaction"
    });
    let applied = licenses.apply(actor, spec, dry_run, force).await;
    working.finish_and_clear();
    store.close().await;
    let applied = applied.map_err(|e| anyhow::anyhow!("{e}"))?;
    match output {
        Output::Text => print!("{}", seatkeeper::plan_text(&applied)),
        Output::Json => print_json(&applied)?,
    }
    let pending = !applied.changes.is_empty()
        || !applied.conflicts.is_empty()
        || applied.licenses.values().any(|o| o.total() > 0);
    Ok(pending)
}

/// `seatkeeper reconcile`.
pub(crate) async fn reconcile(
    file: Option<std::path::PathBuf>,
    tenant: Option<String>,
    check: bool,
    repair: bool,
    csv: bool,
    db: DbArgs,
    clock: SharedClock,
) -> anyhow::Result<()> {
    init_logging(false);
    let actor = seatkeeper::Actor {
        name: "cli".into(),
        request_id: format!("reconcile-{}", uuid::Uuid::new_v4()),
    };
    if check {
        let store = open(&db.url()?, None).await?;
        let licenses = seatkeeper::Licenses::new(store.clone(), clock.clone());
        let working = crate::progress::spinner("deciding every license again and comparing");
        let found = licenses
            .self_check(actor, tenant.as_deref(), repair)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"));
        working.finish_and_clear();
        store.close().await;
        let found = found?;
        print!("{}", seatkeeper::differences_text(&found));
        if found.is_empty() {
            println!("no differences: every license and seat count is as deciding again gives");
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
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let json_lines = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson")
    ) || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let uses = seatkeeper::parse_uses(&bytes, json_lines)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let store = open(&db.url()?, None).await?;
    let working = crate::progress::spinner("comparing the application's view with the licenses");
    let report = seatkeeper::Licenses::new(store.clone(), clock.clone())
        .reconcile_uses(&tenant, uses)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"));
    working.finish_and_clear();
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

/// `seatkeeper import`.
pub(crate) async fn import(
    file: std::path::PathBuf,
    tenant: String,
    dry_run: bool,
    db: DbArgs,
    clock: SharedClock,
) -> anyhow::Result<()> {
    init_logging(false);
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
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
    let bar = crate::progress::bar(total as u64, "rows");
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
        bar.set_position(done as u64);
        // Without a terminal (a pipe, a log), progress is a line per part.
        if !dry_run && !crate::progress::shown() {
            eprintln!(
                "imported {done}/{total} rows ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    bar.finish_and_clear();
    store.close().await;
    print!("{}", seatkeeper::import_text(&all));
    Ok(())
}
