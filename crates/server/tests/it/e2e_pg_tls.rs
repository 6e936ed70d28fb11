//! PostgreSQL over TLS with the real binary (issue 16): a server with `ssl = on`, a CA and
//! certificates made with openssl (`.ci/postgres.sh` with `SEATKEEPER_TEST_PG_TLS=1`);
//! `sslmode` from `disable` to `verify-full`, a client certificate, clear failures, and
//! `--notify-database` holding the `LISTEN`.

use std::time::{Duration, Instant};

use crate::binary::{OwnPostgres, Server, cli, cli_ok};

/// Below Linux's ephemeral range, apart from the fault tests' ports.
const PORT: u16 = 23443;

async fn scalar(url: &str, sql: &'static str) -> i64 {
    use sqlx::Row;
    seatkeeper::crypto::install();
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query(sql)
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_and_the_client() {
    let pg = OwnPostgres::start_with(PORT, true);
    let tls = pg.tls_dir();
    let db = |user: &str, params: &str| {
        format!("postgres://{user}@localhost:{PORT}/seatkeeper_test?{params}")
    };
    let full = db(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={tls}/ca.crt"),
    );

    // verify-full with the CA that signed the server's certificate.
    let out = cli_ok(&full, &["migrate"]);
    assert!(out.contains("schema at version"), "{out}");
    // The test's own connection, the same way, is encrypted.
    assert_eq!(
        scalar(
            &full,
            "SELECT count(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
        )
        .await,
        1
    );

    // Another CA: refused, saying why.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=another CA", "-keyout"])
        .arg(other.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success());
    let wrong = db(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
    );
    let (ok, _, err) = cli(&wrong, &["tenant", "list"]);
    assert!(!ok);
    assert!(err.contains("TLS failed with sslmode=verify-full"), "{err}");
    assert!(
        err.contains("UnknownIssuer") && err.contains("sslrootcert"),
        "{err}"
    );

    // verify-ca checks the chain but not the host name, so 127.0.0.1 works with either mode.
    let by_ip = format!(
        "postgres://postgres@127.0.0.1:{PORT}/seatkeeper_test?sslmode=verify-ca&sslrootcert={tls}/ca.crt"
    );
    cli_ok(&by_ip, &["tenant", "list"]);

    // A role that must present a client certificate.
    let with_cert = db(
        "certuser",
        &format!(
            "sslmode=verify-full&sslrootcert={tls}/ca.crt&sslcert={tls}/client.crt&sslkey={tls}/client.key"
        ),
    );
    let tenant = cli_ok(&with_cert, &["tenant", "create", "over-tls"]);
    assert!(!tenant.trim().is_empty());
    let (ok, _, err) = cli(
        &db(
            "certuser",
            &format!("sslmode=verify-full&sslrootcert={tls}/ca.crt"),
        ),
        &["tenant", "list"],
    );
    assert!(!ok);
    assert!(err.contains("client certificate"), "{err}");

    // require, against a server that offers no TLS (the tests' main PostgreSQL).
    let plain = crate::common::postgres_url();
    let sep = if plain.contains('?') { '&' } else { '?' };
    let (ok, _, err) = cli(&format!("{plain}{sep}sslmode=require"), &["tenant", "list"]);
    assert!(!ok);
    assert!(
        err.contains("the server does not offer TLS, and sslmode=require requires it"),
        "{err}"
    );
    // disable: plain text, as asked.
    cli_ok(&db("postgres", "sslmode=disable"), &["tenant", "list"]);

    // A server over verify-full, its LISTEN on the --notify-database connection (as behind
    // PgBouncer in transaction mode), its pool's connections all encrypted.
    let notify = format!("{full}&application_name=sk-notify");
    let server = Server::start(&full, &["--notify-database", &notify]);
    let api = crate::binary::tenant_api(&full, &server.base, "tls-tenant");
    let (status, _) = api.create_user("over-tls@example.com").await;
    assert_eq!(status, 201);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = scalar(
            &full,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sk-notify' AND query ILIKE 'LISTEN%'",
        )
        .await;
        if listening == 1 {
            break;
        }
        assert!(
            Instant::now() < until,
            "no LISTEN on the --notify-database connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        scalar(
            &full,
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = 'seatkeeper_test' AND a.backend_type = 'client backend' AND NOT s.ssl"
        )
        .await,
        0,
        "every connection to the TLS server is encrypted"
    );
    drop(server);
}
