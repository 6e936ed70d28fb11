//! The command line as scripts use it: `--output json`, listing and revoking credentials,
//! shell completions.

use serde_json::Value;

use crate::binary::{BIN, Server, cli_ok};

fn json(db: &str, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = cli_ok(db, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// Tokens and app keys are created (their id with `--output json`), listed without their
/// secrets, and revoked; a revoked token no longer opens SCIM.
#[tokio::test]
async fn credentials_are_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let tenant = json(&db, &["tenant", "create", "CLI"]);
    let tenant = tenant["id"].as_str().unwrap().to_string();
    let listed = json(&db, &["tenant", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == tenant.as_str() && t["name"] == "CLI" && t["created"].is_string()),
        "{listed}"
    );

    for kind in ["token", "app-key"] {
        let made = json(
            &db,
            &[kind, "create", "--tenant", &tenant, "--name", "first"],
        );
        let (id, secret) = (
            made["id"].as_str().unwrap().to_string(),
            made["token"].as_str().unwrap().to_string(),
        );
        // Text output stays the secret alone.
        let plain = cli_ok(
            &db,
            &[kind, "create", "--tenant", &tenant, "--name", "second"],
        );
        assert_eq!(plain.trim().lines().count(), 1, "{plain}");
        assert!(!plain.contains('\t'), "{plain}");

        let rows = json(&db, &[kind, "list", "--tenant", &tenant]);
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0]["id"], id.as_str());
        assert_eq!(rows[0]["name"], "first");
        assert!(rows[0]["created"].is_string());
        assert!(!Value::Array(rows.clone()).to_string().contains(&secret));
        let text = cli_ok(&db, &[kind, "list", "--tenant", &tenant]);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .starts_with(&format!("{id}\tfirst\t")),
            "{text}"
        );

        let revoked = cli_ok(&db, &[kind, "revoke", "--tenant", &tenant, &id]);
        assert!(revoked.contains(&id), "{revoked}");
        let rows = json(&db, &[kind, "list", "--tenant", &tenant]);
        assert!(rows[0]["revoked"].is_string(), "{rows}");
        assert!(rows[1]["revoked"].is_null(), "{rows}");

        if kind == "token" {
            let server = Server::start(&db, &[]);
            let r = seatkeeper::crypto::http_client()
                .build()
                .expect("an HTTP client")
                .get(format!("{}/scim/v2/Users", server.base))
                .bearer_auth(&secret)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "a revoked token opens nothing");
        }
    }

    // Revoking what does not exist says so.
    let out = std::process::Command::new(BIN)
        .args(["token", "revoke", "--tenant", &tenant, "no-such-id"])
        .env("SEATKEEPER_DATABASE", &db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

/// Completion scripts for bash, zsh and fish name the commands.
#[test]
fn completions_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["serve", "tenant", "app-key", "healthcheck"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}

fn run(db: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("SEATKEEPER_DATABASE", db)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Only `serve`, `demo`, `migrate` and `tenant create` create or migrate a database; a
/// mistyped path is an error, and a database newer than the binary is refused.
#[test]
fn only_some_commands_create_or_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let db = format!("sqlite://{}", path.display());
    let (ok, out) = run(&db, &["tenant", "list"]);
    assert!(!ok && out.contains("there is no database at"), "{out}");
    assert!(!path.exists(), "a read created the file");
    let (ok, out) = run(&db, &["audit", "verify"]);
    assert!(!ok && out.contains("no database"), "{out}");

    let (ok, out) = run(&db, &["migrate"]);
    assert!(ok && out.contains("applied 1, 2"), "{out}");
    let (ok, out) = run(&db, &["migrate"]);
    assert!(ok && out.contains("nothing to apply"), "{out}");
    let (ok, _) = run(&db, &["tenant", "list"]);
    assert!(ok);

    // A newer seatkeeper migrated it: this one neither reads nor migrates it.
    let marked = mark_schema_newer(&path);
    assert!(marked, "marked the schema newer");
    for args in [&["tenant", "list"][..], &["migrate"][..]] {
        let (ok, out) = run(&db, args);
        assert!(
            !ok && out.contains("newer than this binary"),
            "{args:?}: {out}"
        );
    }
}

/// Marks the database as migrated by a newer release (through the library's own store).
fn mark_schema_newer(path: &std::path::Path) -> bool {
    let url = format!("sqlite://{}", path.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = seatkeeper::Store::connect(&url, &Default::default())
            .await
            .unwrap();
        let n = store
            .execute_unchecked(
                "INSERT INTO schema_migrations (version, description) VALUES (9999, 'from the future')",
                vec![],
            )
            .await
            .unwrap();
        store.close().await;
        n == 1
    })
}

/// `apply --dry-run --exit-code` exits 2 while the file would change something and 0 once
/// it is applied; `--output json` prints the plan as data.
#[test]
fn apply_exit_codes_tell_pending_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("apply.db").display());
    let tenant = cli_ok(&db, &["tenant", "create", "Apply"])
        .trim()
        .to_string();
    let model = format!(
        "[[products]]\nkey = \"ap\"\n[[products.plans]]\nkey = \"pro\"\nrank = 1\nfeatures = [\"export\"]\n\
         [[tenants]]\nid = \"{tenant}\"\n[[tenants.subscriptions]]\nproduct = \"ap\"\nplan = \"pro\"\nseats = 5\n\
         starts_at = \"2026-01-01T00:00:00Z\"\n"
    );
    let file = dir.path().join("model.toml");
    std::fs::write(&file, model).unwrap();
    let file = file.to_str().unwrap();
    let status = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("SEATKEEPER_DATABASE", &db)
            .output()
            .unwrap()
    };
    let pending = status(&["apply", file, "--dry-run", "--exit-code"]);
    assert_eq!(pending.status.code(), Some(2), "changes are pending");
    let plan = json(&db, &["apply", file, "--dry-run"]);
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert!(!plan["changes"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(status(&["apply", file]).status.code(), Some(0));
    let done = status(&["apply", file, "--dry-run", "--exit-code"]);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stdout)
    );
    // --exit-code means nothing without --dry-run: a usage error.
    let alone = status(&["apply", file, "--exit-code"]);
    assert!(!alone.status.success());
    assert!(String::from_utf8_lossy(&alone.stderr).contains("--dry-run"));
}

/// `tenant rename` and `tenant delete` (refused while licenses are held, unless --force).
#[test]
fn tenants_are_renamed_and_deleted_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tenants.db").display());
    let tenant = cli_ok(&db, &["tenant", "create", "Old Name"])
        .trim()
        .to_string();
    let renamed = json(&db, &["tenant", "rename", &tenant, "New Name"]);
    assert_eq!(renamed["name"], "New Name");
    assert!(cli_ok(&db, &["tenant", "list"]).contains("New Name"));
    let (ok, out) = run(&db, &["tenant", "delete", "no-such-tenant"]);
    assert!(!ok && out.contains("not found"), "{out}");
    let gone = cli_ok(&db, &["tenant", "delete", &tenant]);
    assert!(
        gone.starts_with(&format!("deleted {tenant} (New Name)")),
        "{gone}"
    );
    assert!(!cli_ok(&db, &["tenant", "list"]).contains(&tenant));
    assert!(cli_ok(&db, &["audit", "verify"]).contains("ok      vendor chain"));
}
