//! What an attacker's probe found at the HTTP layer (issue 15), through the real binary:
//! stalled clients cannot hold the server, every error is in our format, a 413 says it
//! closes.

use std::time::{Duration, Instant};

use crate::binary::{ADMIN, Server, cli_ok, database};
use crate::common::Backend;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// An answer read off a raw connection.
struct Raw {
    status: u16,
    head: String,
    body: Value,
    /// The server closed the connection after the answer.
    closed: bool,
}

/// Sends raw bytes on a new connection and reads one answer (and whether the connection
/// closes after it).
async fn raw(addr: &str, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer before it has read everything (a 413, a 431): a failed write
    // is not the test's failure, a missing answer is.
    let _ = s.write_all(request).await;
    read_answer(&mut s).await
}

async fn read_answer(s: &mut TcpStream) -> Raw {
    read_half(s).await
}

async fn read_half(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let (head_end, length) = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        assert!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        assert!(n > 0, "the body was cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await,
        Ok(Ok(0) | Err(_))
    );
    Raw {
        status,
        head,
        body,
        closed,
    }
}

/// Our error body: the SCIM error schema, the status as text, a detail.
fn assert_ours(r: &Raw, status: u16) {
    assert_eq!(r.status, status, "{}{}", r.head, r.body);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: application/scim+json"),
        "{}",
        r.head
    );
    assert_eq!(
        r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{}",
        r.body
    );
    assert_eq!(r.body["status"], status.to_string(), "{}", r.body);
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

async fn errors_are_in_our_format(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Probe"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let server = Server::start(
        &db,
        &["--billing-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    );
    let a = addr(&server);
    let get = |path: &str, auth: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };

    // A path segment that is not UTF-8 once decoded.
    let r = raw(&a, &get("/scim/v2/Users/%ff", &token)).await;
    assert_ours(&r, 400);
    assert_eq!(r.body["scimType"], "invalidValue");
    // A query string that does not deserialise.
    let r = raw(
        &a,
        &get(&format!("/api/v1/tenants/{tenant}/audit?limit=lots"), ADMIN),
    )
    .await;
    assert_ours(&r, 400);
    // A URI over hyper's limit (hyper answers it itself; the answer is rewritten).
    let long = format!("/scim/v2/Users?filter={}", "a".repeat(100_000));
    let r = raw(&a, &get(&long, &token)).await;
    assert_ours(&r, 414);
    assert!(r.closed);
    // Headers over the limit.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let r = raw(&a, big.as_bytes()).await;
    assert_ours(&r, 431);
    // Not HTTP at all.
    let r = raw(&a, b"HELLO THERE\r\n\r\n").await;
    assert_ours(&r, 400);
    // No such endpoint, and a method the endpoint does not take.
    assert_ours(&raw(&a, &get("/nowhere", &token)).await, 404);

    // A body over the limit: 413 in our format, and the connection says it closes.
    let body = "x".repeat(3 * 1024 * 1024);
    let s = TcpStream::connect(&a).await.unwrap();
    let head = format!(
        "POST /api/v1/billing/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (mut rd, mut wr) = s.into_split();
    // The client goes on sending while the server answers.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(body.as_bytes()).await;
        wr
    });
    let r = read_half(&mut rd).await;
    drop(writer);
    assert_ours(&r, 413);
    assert!(
        r.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        r.head
    );
    assert!(r.closed, "a 413 closes the connection");
    // The same through a client that reuses connections: its next request works.
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let resp = http
        .post(format!("{}/scim/v2/Users", server.base))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body("y".repeat(2 * 1024 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "413");
    let resp = http
        .get(format!("{}/scim/v2/Users?count=1", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// A stalled half-request on a new connection, as the probe sent it.
async fn stall(a: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(a).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
        .await
        .ok()?;
    Some(s)
}

async fn healthz_within(http: &reqwest::Client, base: &str, limit: Duration) -> u16 {
    let t = Instant::now();
    let r = tokio::time::timeout(limit, http.get(format!("{base}/healthz")).send())
        .await
        .unwrap_or_else(|_| panic!("/healthz did not answer within {limit:?}"))
        .unwrap();
    assert!(t.elapsed() <= limit);
    r.status().as_u16()
}

/// 2,000 connections that never finish their headers: `/healthz` answers within 1 s
/// throughout, and they are closed after the header timeout. Past the connection cap a new
/// connection is answered 503 at once; a trickled body is cut after the idle timeout.
/// (The transport is the same on both backends; this runs on SQLite.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_cannot_hold_the_server() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = database(Backend::Sqlite, &dir);
    let server = Server::start(&db, &["--header-timeout", "3", "--idle-timeout", "2"]);
    let a = addr(&server);
    let http = seatkeeper::crypto::http_client()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut stalled = Vec::new();
    for i in 0..2000 {
        stalled.push(stall(&a).await.expect("a connection"));
        if i % 250 == 0 {
            assert_eq!(
                healthz_within(&http, &server.base, Duration::from_secs(1)).await,
                200
            );
        }
    }
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            healthz_within(&http, &server.base, Duration::from_secs(1)).await,
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // By now (past the 3 s header timeout) the server has closed every one of them.
    let mut closed = 0;
    for s in &mut stalled {
        let mut b = [0u8; 256];
        if matches!(
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    assert_eq!(closed, stalled.len(), "stalled connections still open");
    drop(stalled);

    // A body trickled and then stopped: cut after the idle timeout.
    let mut s = TcpStream::connect(&a).await.unwrap();
    s.write_all(b"POST /api/v1/billing/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id")
        .await
        .unwrap();
    let t = Instant::now();
    let mut b = [0u8; 256];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "the connection is closed");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    drop(server);

    // Past the cap: 503 at once, in our format, with Retry-After.
    let server = Server::start(&db, &["--connection-limit", "50"]);
    let a = addr(&server);
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(stall(&a).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let r = raw(&a, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_ours(&r, 503);
    assert!(
        r.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        r.head
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = raw(
        &a,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "a freed slot is taken again");
}

both_backends!(errors_are_in_our_format);

async fn scim_as(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    from: &str,
) -> (u16, Option<String>) {
    let r = http
        .get(format!("{base}/scim/v2/Users?count=1"))
        .bearer_auth(token)
        .header("x-forwarded-for", from)
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (r.status().as_u16(), retry)
}

/// Failed authentication is throttled per client address: 20 a minute, then 429 with
/// `Retry-After` for that address (valid credentials too), counted in metrics.
/// `X-Forwarded-For` names the client only from a trusted proxy.
async fn failed_authentication_is_throttled(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Throttled"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");

    // Behind a trusted proxy (this test, on 127.0.0.1): each forwarded client on its own.
    let server = Server::start(&db, &["--trusted-proxies", "127.0.0.1/32"]);
    let guesser = "198.51.100.7";
    for i in 0..20 {
        let (status, _) = scim_as(&http, &server.base, &format!("wrong-{i}"), guesser).await;
        assert_eq!(status, 401, "failure {i}");
    }
    let (status, retry) = scim_as(&http, &server.base, "wrong-21", guesser).await;
    assert_eq!(status, 429);
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Locked out: a right token from that address is refused too (a hit looks like a guess).
    assert_eq!(scim_as(&http, &server.base, &token, guesser).await.0, 429);
    // Another client behind the same proxy is not.
    assert_eq!(
        scim_as(&http, &server.base, &token, "198.51.100.8").await.0,
        200
    );
    let metrics = http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(ADMIN)
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("seatkeeper_auth_failures_total "))
        .expect("the failure counter")
        .trim()
        .parse()
        .unwrap();
    assert!(failures >= 20.0, "{failures}");
    assert!(
        metrics.contains("seatkeeper_auth_throttled_total"),
        "{metrics}"
    );
    drop(server);

    // Without trusted proxies, X-Forwarded-For is the client's say and changes nothing.
    let server = Server::start(&db, &[]);
    for i in 0..20 {
        let from = format!("203.0.113.{i}");
        assert_eq!(scim_as(&http, &server.base, "wrong", &from).await.0, 401);
    }
    assert_eq!(
        scim_as(&http, &server.base, "wrong", "203.0.113.99")
            .await
            .0,
        429
    );
}

both_backends!(failed_authentication_is_throttled);

/// A tenant whose chain holds a few records, a signed head kept in `file`, and a few records
/// after it.
fn witnessed_tenant(
    db: &str,
    name: &str,
    file: &std::path::Path,
) -> (String, seatkeeper::SignedHead) {
    let tenant = cli_ok(db, &["tenant", "create", name]).trim().to_string();
    for i in 0..4 {
        cli_ok(
            db,
            &[
                "token",
                "create",
                "--tenant",
                &tenant,
                "--name",
                &format!("t{i}"),
            ],
        );
    }
    let line = cli_ok(db, &["audit", "head", "--tenant", &tenant]);
    std::fs::write(file, &line).unwrap();
    let head: seatkeeper::SignedHead = serde_json::from_str(line.trim()).unwrap();
    for i in 4..6 {
        cli_ok(
            db,
            &[
                "token",
                "create",
                "--tenant",
                &tenant,
                "--name",
                &format!("t{i}"),
            ],
        );
    }
    (tenant, head)
}

async fn rows_of(store: &seatkeeper::Store, tenant: &str) -> Vec<seatkeeper::AuditRow> {
    store.audit_rows(tenant, 0, 10_000).await.unwrap()
}

/// Points the chain's tip at its last remaining record, as an attacker covering a deletion
/// would.
async fn rewind(store: &seatkeeper::Store, tenant: &str) {
    let (seq, hash) = rows_of(store, tenant)
        .await
        .last()
        .map(|r| (r.seq, r.hash.clone()))
        .unwrap_or((0, "0".repeat(64)));
    store
        .execute_unchecked(
            "UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1",
            seatkeeper::params![tenant, seq, hash].to_vec(),
        )
        .await
        .unwrap();
}

/// `audit verify` against signed heads kept elsewhere catches the four tamperings the probe
/// got past it: the last records removed, half a chain removed, a whole chain and its tip
/// removed, a record edited with every hash after it recomputed. Without the witness, the
/// first three are invisible (the README says so); the rewrite is caught by the signed head
/// inside the chain.
async fn audit_tampering_is_caught_with_a_witness(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let w = |n: &str| dir.path().join(format!("{n}.head"));
    let verify = |tenant: &str, file: Option<&std::path::Path>| {
        let mut args = vec!["audit", "verify", "--tenant", tenant];
        let f;
        if let Some(file) = file {
            f = file.display().to_string();
            args.extend(["--head", f.as_str()]);
        }
        let (ok, out, _) = crate::binary::cli(&db, &args);
        (ok, out)
    };
    let cases = ["tail", "half", "whole", "rewrite"];
    let mut tenants = Vec::new();
    for c in cases {
        let (t, head) = witnessed_tenant(&db, c, &w(c));
        let (ok, out) = verify(&t, Some(&w(c)));
        assert!(ok, "untouched, with its witness: {out}");
        tenants.push((t, head));
    }
    let store = seatkeeper::Store::connect(&db, &Default::default())
        .await
        .unwrap();

    // 1. The last records removed (the witnessed one among them), the tip rewound.
    let (t, head) = &tenants[0];
    store
        .execute_unchecked(
            "DELETE FROM audit_log WHERE tenant_id = $1 AND seq >= $2",
            seatkeeper::params![t.as_str(), head.seq].to_vec(),
        )
        .await
        .unwrap();
    rewind(&store, t).await;
    // 2. Half the chain removed, the tip rewound.
    let (t2, head2) = &tenants[1];
    store
        .execute_unchecked(
            "DELETE FROM audit_log WHERE tenant_id = $1 AND seq > $2",
            seatkeeper::params![t2.as_str(), head2.seq / 2].to_vec(),
        )
        .await
        .unwrap();
    rewind(&store, t2).await;
    // 3. The whole chain and its tip row removed.
    let (t3, _) = &tenants[2];
    for sql in [
        "DELETE FROM audit_log WHERE tenant_id = $1",
        "DELETE FROM audit_heads WHERE tenant_id = $1",
    ] {
        store
            .execute_unchecked(sql, seatkeeper::params![t3.as_str()].to_vec())
            .await
            .unwrap();
    }
    // 4. A record before the witness edited, and every hash from it on recomputed.
    let (t4, head4) = &tenants[3];
    let mut rows = rows_of(&store, t4).await;
    let mut prev = rows[0].prev_hash.clone();
    for r in rows.iter_mut() {
        if r.seq == 2 {
            r.actor = "mallory".into();
        }
        r.prev_hash = prev.clone();
        r.hash = r.compute_hash();
        prev = r.hash.clone();
        store
            .execute_unchecked(
                "UPDATE audit_log SET actor = $3, prev_hash = $4, hash = $5 WHERE tenant_id = $1 AND seq = $2",
                seatkeeper::params![t4.as_str(), r.seq, r.actor.as_str(), r.prev_hash.as_str(), r.hash.as_str()].to_vec(),
            )
            .await
            .unwrap();
    }
    rewind(&store, t4).await;
    store.close().await;

    for (i, c) in cases.iter().enumerate() {
        let t = &tenants[i].0;
        let (ok, out) = verify(t, Some(&w(c)));
        assert!(
            !ok && out.contains("BROKEN"),
            "{c}, with the witness: {out}"
        );
        let (ok, out) = verify(t, None);
        if *c == "rewrite" {
            assert!(!ok && out.contains("signed head"), "{c}, no witness: {out}");
        } else {
            assert!(ok, "{c}: without a witness the cover-up holds ({out})");
        }
    }
    let (_, out) = verify(&tenants[0].0, Some(&w("tail")));
    assert!(out.contains("removed"), "{out}");
    let (_, out) = verify(&tenants[3].0, Some(&w("rewrite")));
    assert!(out.contains("rewritten"), "{out}");
    // A forged witness (the signature no longer covers it) is refused, not trusted.
    let mut forged = head4.clone();
    forged.seq += 1;
    std::fs::write(w("forged"), serde_json::to_string(&forged).unwrap()).unwrap();
    let (ok, out) = verify(&tenants[3].0, Some(&w("forged")));
    assert!(!ok && out.contains("does not verify"), "{out}");
}

both_backends!(audit_tampering_is_caught_with_a_witness);

/// Generates a hostile request: a method, a path (known routes with ids, junk and bad
/// encodings), a query, a body (random JSON, broken JSON, duplicate keys, NUL, controls,
/// oversized strings) and credentials.
struct Fuzzer {
    rng: rand::rngs::StdRng,
}

const WORDS: &[&str] = &[
    "userName",
    "displayName",
    "emails",
    "members",
    "value",
    "type",
    "primary",
    "active",
    "name",
    "givenName",
    "externalId",
    "schemas",
    "Operations",
    "op",
    "path",
    "groups",
    "roles",
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:api:messages:2.0:PatchOp",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "eq",
    "ne",
    "co",
    "sw",
    "pr",
    "gt",
    "and",
    "or",
    "not",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "\\",
    "\u{0}",
    "\u{202E}",
    "\t",
    "é",
    "e\u{301}",
    "%ff",
    "%00",
    "'",
    ";",
    "--",
    "$1",
    "*",
    "..",
    "/",
    "{}",
    "[]",
    "null",
    "true",
    "-1",
    "0",
    "99999999999999999999",
    "1e309",
    "plan",
    "seats",
    "product",
    "feature",
    "user",
];

impl Fuzzer {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        use rand::RngExt;
        &items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        use rand::RngExt;
        self.rng.random_bool(p)
    }

    fn word(&mut self) -> String {
        use rand::RngExt;
        match self.rng.random_range(0..10) {
            0 => "x".repeat(self.rng.random_range(0..70_000)),
            1 => (0..self.rng.random_range(0..12))
                .map(|_| char::from_u32(self.rng.random_range(0..0x11_0000)).unwrap_or('?'))
                .collect(),
            _ => self.pick(WORDS).to_string(),
        }
    }

    fn text(&mut self) -> String {
        use rand::RngExt;
        (0..self.rng.random_range(1..6))
            .map(|_| self.word())
            .collect::<Vec<_>>()
            .join(if self.chance(0.5) { " " } else { "" })
    }

    fn json(&mut self, depth: u32) -> Value {
        use rand::RngExt;
        match self.rng.random_range(0..if depth > 3 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(0.5)),
            2 => serde_json::json!(self.rng.random_range(-5i64..100_000)),
            3 | 4 => Value::String(self.text()),
            5 | 6 => {
                let mut m = serde_json::Map::new();
                for _ in 0..self.rng.random_range(0..6) {
                    let k = self.word();
                    m.insert(k, self.json(depth + 1));
                }
                Value::Object(m)
            }
            _ => Value::Array(
                (0..self.rng.random_range(0..4))
                    .map(|_| self.json(depth + 1))
                    .collect(),
            ),
        }
    }

    fn body(&mut self) -> Option<Vec<u8>> {
        use rand::RngExt;
        match self.rng.random_range(0..10) {
            0 => None,
            1 => Some(self.text().into_bytes()),
            2 => Some(br#"{"userName": "a", "userName": "b", "schemas": []}"#.to_vec()),
            3 => {
                let mut b = self.json(0).to_string().into_bytes();
                let cut = self.rng.random_range(0..=b.len());
                b.truncate(cut);
                Some(b)
            }
            4 => Some(vec![0xff, 0xfe, b'{', 0x00, b'}']),
            5 => {
                let op = self
                    .pick(&["add", "replace", "remove", "Add", "bogus"])
                    .to_string();
                let path = self.text();
                let value = self.json(1);
                Some(
                    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": op, "path": path, "value": value}]})
                    .to_string()
                    .into_bytes(),
                )
            }
            6 => {
                let mut v = serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": self.text()});
                if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), self.json(0)) {
                    o.extend(extra);
                }
                Some(v.to_string().into_bytes())
            }
            _ => Some(self.json(0).to_string().into_bytes()),
        }
    }

    /// A method and a path: mostly a method the route takes.
    fn request(&mut self, ids: &[String], tenant: &str) -> (String, String) {
        let id = if self.chance(0.5) && !ids.is_empty() {
            self.pick(ids).clone()
        } else {
            let w = self.word();
            url::form_urlencoded::byte_serialize(w.as_bytes()).collect()
        };
        const READ: &[&str] = &["GET"];
        const COLLECTION: &[&str] = &["GET", "POST"];
        const ITEM: &[&str] = &["GET", "PUT", "PATCH", "DELETE"];
        const SEND: &[&str] = &["POST"];
        const MODEL: &[&str] = &["GET", "PUT"];
        let templates: Vec<(String, &'static [&'static str])> = vec![
            ("/scim/v2/Users".to_string(), COLLECTION),
            (format!("/scim/v2/Users/{id}"), ITEM),
            ("/scim/v2/Groups".to_string(), COLLECTION),
            (format!("/scim/v2/Groups/{id}"), ITEM),
            ("/scim/v2/Users/.search".to_string(), SEND),
            ("/scim/v2/Bulk".to_string(), SEND),
            ("/scim/v2/Schemas".to_string(), READ),
            (format!("/scim/v2/Schemas/{id}"), READ),
            ("/scim/v2/ServiceProviderConfig".to_string(), READ),
            ("/scim/v2/ResourceTypes".to_string(), READ),
            ("/scim/v2/Me".to_string(), READ),
            (format!("/api/v1/tenants/{tenant}"), READ),
            (format!("/api/v1/tenants/{tenant}/subscriptions/{id}"), ITEM),
            (format!("/api/v1/tenants/{tenant}/rules/{id}"), ITEM),
            (format!("/api/v1/tenants/{tenant}/audit"), READ),
            (format!("/api/v1/tenants/{tenant}/users/{id}/explain"), READ),
            (format!("/api/v1/tenants/{id}/usage"), READ),
            ("/api/v1/model".to_string(), MODEL),
            ("/api/v1/check".to_string(), SEND),
            ("/api/v1/check/batch".to_string(), SEND),
            ("/api/v1/billing/events".to_string(), SEND),
            ("/api/v1/billing/stripe".to_string(), SEND),
            ("/api/v1/tenants".to_string(), COLLECTION),
            ("/api/v1/limits".to_string(), READ),
            (format!("/{id}"), READ),
            ("/scim/v2/%ff%fe".to_string(), READ),
            ("/api/v1/tenants/%00".to_string(), READ),
        ];
        let (mut path, methods) = self.pick(&templates).clone();
        if self.chance(0.5) {
            let key = self.pick(&[
                "filter",
                "count",
                "startIndex",
                "cursor",
                "attributes",
                "excludedAttributes",
                "sortBy",
                "sortOrder",
                "limit",
                "after",
                "force",
                "format",
                "x",
            ]);
            let value = self.text();
            let value: String = if self.chance(0.2) {
                // Raw, not encoded: bad escapes and bytes that are not UTF-8.
                value.replace(' ', "%20") + *self.pick(&["%", "%f", "%ff", "%c3%28", ""])
            } else {
                url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
            };
            path = format!("{path}?{key}={value}");
        }
        let method = if self.chance(0.8) {
            self.pick(methods).to_string()
        } else {
            self.pick(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
                .to_string()
        };
        (method, path)
    }
}

/// Thousands of hostile requests against the running binary: not one 5xx, and every error
/// in our format.
async fn http_fuzzing_finds_no_5xx(b: Backend) {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("SEATKEEPER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5ea7_cee9);
    let requests: usize = std::env::var("SEATKEEPER_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Fuzzed"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let app_key = cli_ok(&db, &["app-key", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let server = Server::start(&db, &["--auth-failure-limit", "0"]);
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = http
            .post(format!("{}/scim/v2/Users", server.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": format!("seed{i}@example.com")}))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let mut f = Fuzzer {
        rng: rand::rngs::StdRng::seed_from_u64(seed),
    };
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for n in 0..requests {
        let (method, path) = f.request(&ids, &tenant);
        let body = f.body();
        // Mostly the credential the route takes, so requests get past the gate.
        let fitting = if path.starts_with("/scim") {
            token.as_str()
        } else if path.starts_with("/api/v1/check") {
            app_key.as_str()
        } else {
            ADMIN
        };
        let credential = if f.chance(0.75) {
            fitting.to_string()
        } else {
            f.pick(&[token.as_str(), ADMIN, app_key.as_str(), "", "garbage"])
                .to_string()
        };
        let mut req = http.request(method.parse().unwrap(), format!("{}{path}", server.base));
        if !credential.is_empty() {
            req = req.bearer_auth(&credential);
        }
        if let Some(b) = body.clone() {
            let ct = f
                .pick(&[
                    "application/scim+json",
                    "application/json",
                    "text/plain",
                    "",
                ])
                .to_string();
            if !ct.is_empty() {
                req = req.header("content-type", ct);
            }
            req = req.body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // reqwest refuses some URLs itself; the server never saw them.
            Err(e) if e.is_builder() => continue,
            Err(e) => panic!("request {n} ({method} {path}) failed: {e}"),
        };
        let status = resp.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let shown = || {
            format!(
                "seed {seed}, request {n}: {method} {} with {:?} → {status} {}",
                path.chars().take(200).collect::<String>(),
                body.as_ref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).to_string()),
                text.chars().take(300).collect::<String>()
            )
        };
        // RFC 7644 §3.11: a server without /Me answers it 501; that is the only 5xx allowed.
        let me = status == 501 && path.starts_with("/scim/v2/Me");
        assert!(status < 500 || me, "{}", shown());
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(
                ct.starts_with("application/scim+json")
                    && v["status"].as_str() == Some(status.to_string().as_str()),
                "not in our error format: {}",
                shown()
            );
        }
    }
    eprintln!("{requests} requests (seed {seed}): {by_status:?}");
    // The server is still well.
    let r = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

both_backends!(http_fuzzing_finds_no_5xx);
