//! What an operator deploying the binary relies on: secrets that stay secret (help, errors,
//! logs, `*_FILE` settings), webhooks that cannot be pointed at the private network, the
//! health check a container runs, and a version that names its commit.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::{ADMIN, Api, BIN, Server};

const PASSWORD: &str = "s3cret-Pw";

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("SEATKEEPER_DATABASE")
        .env_remove("SEATKEEPER_ADMIN_TOKEN")
        .env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The database password shows nowhere: not in `--help` (from the environment), not in a
/// connection error; CLI errors are one message, never a backtrace.
#[test]
fn secrets_stay_out_of_help_and_errors() {
    let url = format!("postgres://alice:{PASSWORD}@127.0.0.1:1/seatkeeper");
    let help = run(&["serve", "--help"], &[("SEATKEEPER_DATABASE", &url)]);
    assert!(help.status.success());
    let help = text(&help);
    assert!(help.contains("SEATKEEPER_DATABASE"), "{help}");
    assert!(
        !help.contains(PASSWORD),
        "--help shows the password:\n{help}"
    );

    // Nothing listens on port 1: the error names the database without its password.
    let failed = run(&["tenant", "list"], &[("SEATKEEPER_DATABASE", &url)]);
    assert!(!failed.status.success());
    let err = text(&failed);
    assert!(err.contains("connection refused to 127.0.0.1:1"), "{err}");
    assert!(
        !err.contains(PASSWORD),
        "the error shows the password: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("stack backtrace") && !err.contains("Stack backtrace"),
        "{err}"
    );
}

/// Every secret setting can come from a file; a value and a file together are refused.
#[tokio::test]
async fn secrets_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("files.db").display());
    let db_file = dir.path().join("database-url");
    std::fs::write(&db_file, format!("{db}\n")).unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "file-admin-token-0123456789\n").unwrap();
    let billing_file = dir.path().join("billing-secret");
    std::fs::write(&billing_file, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();

    let mut cmd = Command::new(BIN);
    cmd.env("SEATKEEPER_DATABASE_FILE", &db_file)
        .env("SEATKEEPER_ADMIN_TOKEN_FILE", &token_file)
        .env("SEATKEEPER_BILLING_SECRET_FILE", &billing_file);
    // No --database: the file names it.
    let mut server = Server::start_by(cmd, "", None, &[]);
    let r = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client")
        .get(format!("{}/api/v1/tenants", server.base))
        .bearer_auth("file-admin-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the admin token from its file is the token"
    );
    server.kill();

    // The CLI reads the URL from the file too.
    let out = run(
        &["tenant", "create", "From a file"],
        &[("SEATKEEPER_DATABASE_FILE", db_file.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out));

    let both = run(
        &["tenant", "list"],
        &[
            ("SEATKEEPER_DATABASE", &db),
            ("SEATKEEPER_DATABASE_FILE", db_file.to_str().unwrap()),
        ],
    );
    assert!(!both.status.success());
    let err = text(&both);
    assert!(
        err.contains("SEATKEEPER_DATABASE") && err.contains("one"),
        "{err}"
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = run(
        &["tenant", "list"],
        &[("SEATKEEPER_DATABASE_FILE", empty.to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("is empty"), "{}", text(&out));
}

/// A generated admin token is printed once on stdout as plain text, and never inside a log
/// record (JSON logs go to the same stream).
#[test]
fn the_generated_admin_token_is_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gen.db").display());
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .env_remove("SEATKEEPER_ADMIN_TOKEN")
        .env("SEATKEEPER_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.contains("generated admin token"))
        .expect("the token is printed");
    assert!(!line.starts_with('{'), "printed as a log record: {line}");
    let token = line
        .split_whitespace()
        .find(|w| w.starts_with("ska_"))
        .expect("the token");
    let records: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.starts_with('{'))
        .collect();
    assert!(!records.is_empty(), "the server logged in JSON");
    for r in records {
        assert!(!r.contains(token), "a log record holds the token: {r}");
    }
}

/// `seatkeeper healthcheck` exits 0 only against a ready server; `--version` names the commit.
#[test]
fn healthcheck_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("health.db").display());
    let server = Server::start(&db, &[]);
    let ok = run(&["healthcheck", "--url", &server.base], &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    // Through --listen, as a container's HEALTHCHECK calls it.
    let listen = server.base.trim_start_matches("http://");
    let ok = run(&["healthcheck"], &[("SEATKEEPER_LISTEN", listen)]);
    assert!(ok.status.success(), "{}", text(&ok));
    drop(server);
    let down = run(
        &[
            "healthcheck",
            "--url",
            "http://127.0.0.1:1",
            "--timeout",
            "1",
        ],
        &[],
    );
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    assert!(text(&down).contains("127.0.0.1:1"), "{}", text(&down));

    let v = run(&["--version"], &[]);
    let v = text(&v);
    assert!(v.starts_with("seatkeeper 0."), "{v}");
    assert!(v.contains(seatkeeper::BUILD_COMMIT), "{v}");
    assert!(v.contains('(') && v.contains(')'), "{v}");
}

fn setup(db: &str, base: &str) -> Api {
    crate::binary::tenant_api(db, base, "Deploy")
}

fn without_private_webhooks() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("SEATKEEPER_ALLOW_PRIVATE_WEBHOOKS", "false");
    cmd
}

/// Webhooks to loopback, private, link-local and metadata addresses are refused when they
/// are registered and again when they are delivered (an endpoint registered while they were
/// allowed is not reached once they are not).
#[tokio::test]
async fn webhooks_cannot_reach_private_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("ssrf.db").display());
    let server = Server::start_by(without_private_webhooks(), &db, Some(ADMIN), &[]);
    let api = setup(&db, &server.base);
    let path = format!("/api/v1/tenants/{}/webhooks", api.tenant);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://192.168.1.10/hook",
    ] {
        let (status, body) = api
            .call(ADMIN, "POST", &path, Some(json!({"url": url})))
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("--allow-private-webhooks"),
            "{url}: {detail}"
        );
    }
    let (_, listed) = api.call(ADMIN, "GET", &path, None).await;
    assert_eq!(listed["webhooks"], json!([]), "nothing was registered");
    drop(server);

    // Registered while allowed, delivered while not: every attempt is refused, and says so.
    let mut allowed = Server::start(&db, &[]);
    let hook = api_on(&api, &allowed.base)
        .webhook(9, json!(["user.*"]))
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    allowed.kill();
    let server = Server::start_by(without_private_webhooks(), &db, Some(ADMIN), &[]);
    let api = api_on(&api, &server.base);
    let (status, _) = api.create_user("ssrf-probe").await;
    assert_eq!(status, 201);
    let deliveries = format!(
        "/api/v1/tenants/{}/webhooks/{hook_id}/deliveries?state=pending",
        api.tenant
    );
    let mut last = Value::Null;
    for _ in 0..50 {
        let (_, log) = api.call(ADMIN, "GET", &deliveries, None).await;
        if log.to_string().contains("refused") {
            last = log;
            break;
        }
        last = log;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = last.to_string();
    assert!(
        text.contains("refused") && text.contains("127.0.0.1"),
        "the delivery was refused: {last}"
    );
}

fn api_on(api: &Api, base: &str) -> Api {
    Api::new(base, &api.scim_token, &api.tenant)
}

/// `/metrics` gives every metric a HELP text and carries what on-call reads first: seats per
/// tenant and product (the largest tenants labelled, the rest summed as `_other`), the
/// webhook backlog, snapshots loaded, and the build.
#[tokio::test]
async fn metrics_show_seats_backlog_and_build() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("metrics.db").display());
    let server = Server::start(
        &db,
        &["--metrics-interval", "1", "--metrics-tenant-limit", "1"],
    );
    let big = setup(&db, &server.base);
    let small = setup(&db, &server.base);
    let model = |t: &str, seats: u32| {
        json!({"id": t, "subscriptions": [{"product": "mx", "plan": "pro", "seats": seats,
            "starts_at": "2026-01-01T00:00:00Z"}],
            "rules": [{"name": "all", "filter": "active eq true", "product": "mx", "plan": "pro", "priority": 1}]})
    };
    big.admin(
        "PUT",
        "/model",
        Some(json!({
            "products": [{"key": "mx", "name": "Metrics", "plans": [{"key": "pro", "rank": 1, "features": ["x"]}]}],
            "tenants": [model(&big.tenant, 40), model(&small.tenant, 3)],
        })),
    )
    .await;
    for i in 0..3 {
        assert_eq!(big.create_user(&format!("m{i}")).await.0, 201);
    }
    assert_eq!(small.create_user("s0").await.0, 201);
    // A webhook to nowhere keeps deliveries pending.
    big.admin(
        "POST",
        &format!("/tenants/{}/webhooks", big.tenant),
        Some(json!({"url": "http://127.0.0.1:9/hook"})),
    )
    .await;
    assert_eq!(big.create_user("m3").await.0, 201);
    let mut text = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        text = reqwest::get(format!("{}/metrics", server.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("seatkeeper_seats_active{")
            && text.contains("seatkeeper_webhook_deliveries_pending ")
        {
            break;
        }
    }
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let big_labels = format!("{{tenant=\"{}\",product=\"mx\"}}", big.tenant);
    assert_eq!(value(&format!("seatkeeper_seats{big_labels}")), 40.0);
    assert_eq!(value(&format!("seatkeeper_seats_active{big_labels}")), 4.0);
    // The smaller tenant is beyond the limit of 1: summed, not labelled.
    assert!(!text.contains(&small.tenant), "{text}");
    assert_eq!(
        value("seatkeeper_seats{tenant=\"_other\",product=\"mx\"}"),
        3.0
    );
    assert_eq!(
        value("seatkeeper_seats_active{tenant=\"_other\",product=\"mx\"}"),
        1.0
    );
    assert!(value("seatkeeper_webhook_deliveries_pending ") >= 1.0);
    assert!(value("seatkeeper_tenants ") >= 2.0);
    assert!(
        text.contains(&format!("commit=\"{}\"", seatkeeper::BUILD_COMMIT)),
        "{text}"
    );
    assert!(text.contains("seatkeeper_snapshot_bytes "), "{text}");
    // SQLite's heap: at least the page caches of the connections used so far.
    assert!(value("seatkeeper_sqlite_memory_bytes ") > 100_000.0);
    // Every metric exposed has its HELP.
    for line in text.lines().filter(|l| l.starts_with("seatkeeper_")) {
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# HELP {base} ")) || text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
}
