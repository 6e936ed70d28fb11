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
            let r = reqwest::Client::new()
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
