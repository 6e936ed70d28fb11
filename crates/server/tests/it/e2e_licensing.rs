//! End to end: licenses following the directory through the real `seatkeeper` binary — the
//! model applied with `seatkeeper apply`, users and groups pushed over SCIM, subscriptions
//! changed over the admin API, time moved on the server's test clock.

use crate::binary;
use crate::common::{self, EXT, GROUP};

use binary::{Api, BIN, Server, cli_ok, database};

use common::Backend;
use serde_json::json;

fn model_file(
    dir: &tempfile::TempDir,
    tenant: &str,
    product: &str,
    sub: &str,
    rules: &str,
) -> String {
    let text = format!(
        r#"
[[products]]
key = "{product}"
name = "Workspace"
[[products.plans]]
key = "free"
rank = 0
features = ["docs.read"]
limits = {{ projects = 3 }}
[[products.plans]]
key = "pro"
rank = 1
features = ["docs.read", "docs.write", "export"]
limits = {{ projects = 100 }}
[[products.plans]]
key = "enterprise"
rank = 2
features = ["docs.read", "docs.write", "export", "sso"]
limits = {{ projects = 1000 }}

[[tenants]]
id = "{tenant}"
[[tenants.subscriptions]]
product = "{product}"
{sub}
{rules}
"#
    );
    let path = dir.path().join(format!("model-{product}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn setup(db: &str) -> (String, String, String) {
    let tenant = cli_ok(db, &["tenant", "create", "Licensing"])
        .trim()
        .to_string();
    let token = cli_ok(db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let product = format!("ws-{}", &tenant[tenant.len() - 12..]);
    (tenant, token, product)
}

/// 200 concurrent SCIM creates against a 50-seat hard subscription give exactly 50 active and
/// 150 waitlisted; deactivating 10 promotes exactly 10. On PostgreSQL the requests are spread
/// over two `seatkeeper` processes sharing the database.
async fn seats_are_never_oversold(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let (tenant, token, product) = setup(&db);
    let sub = r#"plan = "pro"
seats = 50
starts_at = "2026-01-01T00:00:00Z"
enforcement = "hard""#;
    cli_ok(
        &db,
        &["apply", &model_file(&dir, &tenant, &product, sub, "")],
    );
    let servers: Vec<Server> = match b {
        Backend::Sqlite => vec![Server::start(&db, &[])],
        Backend::Postgres => vec![Server::start(&db, &[]), Server::start(&db, &[])],
    };
    let apis: Vec<Api> = servers
        .iter()
        .map(|s| Api {
            http: seatkeeper::crypto::http_client()
                .build()
                .expect("an HTTP client"),
            base: s.base.clone(),
            scim_token: token.clone(),
            tenant: tenant.clone(),
        })
        .collect();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let api = apis[i % apis.len()].clone();
        tasks.push(tokio::spawn(async move {
            api.user(&format!("u{i:03}"), json!({})).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let u = apis[0].usage(&product).await;
    assert_eq!(
        (u["active"].clone(), u["waitlisted"].clone()),
        (json!(50), json!(150)),
        "{u}"
    );

    let mut holders = Vec::new();
    for id in &ids {
        if apis[0].license(id, &product).await.unwrap().0 == "active" {
            holders.push(id.clone());
        }
    }
    assert_eq!(holders.len(), 50);
    let mut tasks = Vec::new();
    for (i, id) in holders.iter().take(10).enumerate() {
        let (api, id) = (apis[i % apis.len()].clone(), id.clone());
        tasks.push(tokio::spawn(
            async move { api.set_active(&id, false).await },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let u = apis[0].usage(&product).await;
    assert_eq!(
        (u["active"].clone(), u["waitlisted"].clone()),
        (json!(50), json!(140)),
        "{u}"
    );
    let (_, promoted) = apis[0]
        .scim(
            "GET",
            &format!(
                "/Users?count=0&filter={}",
                enc(&format!("{EXT}:licenses.state eq \"active\""))
            ),
            None,
        )
        .await;
    assert_eq!(promoted["totalResults"], 50);
    drop(servers);
    let verify = cli_ok(&db, &["audit", "verify", "--tenant", &tenant]);
    assert!(verify.contains("chain intact"), "{verify}");
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The scenarios of a subscription's life through the binary: a nested-group rule, a trial
/// that ends into `downgrade`, seats cut from 50 to 30, a plan swap, and a grace period
/// running out.
async fn a_subscription_lifecycle(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let (tenant, token, product) = setup(&db);
    // A 14-day enterprise trial that becomes free; engineers (nested groups count) get
    // enterprise, everyone else free.
    let sub = r#"plan = "enterprise"
seats = 50
status = "trialing"
starts_at = "2026-11-22T00:00:00Z"
ends_at = "2026-12-06T00:00:00Z"
on_expiry = "downgrade:free"
enforcement = "hard""#;
    let rules = format!(
        r#"[[tenants.rules]]
name = "engineering"
filter = 'groups.display eq "Engineering"'
product = "{product}"
plan = "enterprise"
priority = 10
[[tenants.rules]]
name = "everyone"
filter = 'userName pr'
product = "{product}"
plan = "free"
priority = 1"#
    );
    let file = model_file(&dir, &tenant, &product, sub, &rules);
    let plan = cli_ok(&db, &["apply", &file, "--dry-run"]);
    assert!(
        plan.contains(&format!(
            "+ subscription {tenant}:{product}: plan enterprise, 50 seats (hard)"
        )),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("+ rule {tenant}:engineering")),
        "{plan}"
    );
    assert!(plan.contains("dry run: nothing was applied"), "{plan}");
    // A broken file is refused with the place of the mistake, and applies nothing.
    let broken = file.replace(".toml", "-broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("seats = 50", "seats = -3"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["apply", &broken])
        .env("SEATKEEPER_DATABASE", &db)
        .output()
        .unwrap();
    let (ok, err) = (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        !ok && err.contains("tenants[0].subscriptions[0].seats"),
        "{err}"
    );
    cli_ok(&db, &["apply", &file]);

    let server = Server::start(&db, &["--test-clock", "2026-11-22T10:00:00Z"]);
    let api = Api {
        http: seatkeeper::crypto::http_client()
            .build()
            .expect("an HTTP client"),
        base: server.base.clone(),
        scim_token: token,
        tenant: tenant.clone(),
    };
    let alice = api.user("alice", json!({})).await;
    let bob = api.user("bob", json!({})).await;
    let (_, platform) = api.scim("POST", "/Groups", Some(json!({"schemas": [GROUP], "displayName": "Platform", "members": [{"value": alice}]}))).await;
    let platform = platform["id"].as_str().unwrap().to_string();
    let (status, _) = api.scim("POST", "/Groups", Some(json!({"schemas": [GROUP], "displayName": "Engineering", "members": [{"value": platform, "type": "Group"}]}))).await;
    assert_eq!(status, 201);
    assert_eq!(
        api.license(&alice, &product).await,
        Some(("active".into(), "enterprise".into()))
    );
    assert_eq!(
        api.license(&bob, &product).await,
        Some(("active".into(), "free".into()))
    );
    let why = api
        .admin(
            "GET",
            &format!("/tenants/{tenant}/users/{alice}/licenses"),
            None,
        )
        .await;
    assert_eq!(
        why["licenses"][0]["explanation"]["rule"]["name"], "engineering",
        "{why}"
    );

    // The trial ends: on the scheduler's next run, enterprise becomes free.
    let moved = api.advance_days(15).await;
    assert_eq!(moved["tenants"][&tenant]["changed"], 1, "{moved}");
    assert_eq!(
        api.license(&alice, &product).await,
        Some(("active".into(), "free".into()))
    );
    assert_eq!(api.usage(&product).await["status"], "expired");

    // Without rules, every active user holds the subscription's plan.
    for rule in ["engineering", "everyone"] {
        api.admin("DELETE", &format!("/tenants/{tenant}/rules/{rule}"), None)
            .await;
    }
    // A paid term: 50 pro seats, 50 users; seats cut to 30 put the last 20 on the waitlist.
    let path = format!("/tenants/{tenant}/subscriptions/{product}");
    let term = |seats: u32, plan: &str| {
        json!({"plan": plan, "seats": seats, "starts_at": "2026-12-07T00:00:00Z",
        "ends_at": "2027-01-01T00:00:00Z", "grace_days": 3, "on_expiry": "revoke", "enforcement": "hard"})
    };
    let r = api.admin("PUT", &path, Some(term(50, "pro"))).await;
    assert_eq!(r["licenses"]["changed"], 2, "{r}");
    let mut ids = vec![alice.clone(), bob.clone()];
    for i in 0..48 {
        ids.push(api.user(&format!("worker{i:02}"), json!({})).await);
    }
    assert_eq!(api.usage(&product).await["active"], 50);
    let r = api.admin("PUT", &path, Some(term(30, "pro"))).await;
    assert_eq!(r["licenses"]["waitlisted"], 20, "{r}");
    let u = api.usage(&product).await;
    assert_eq!(
        (u["active"].clone(), u["waitlisted"].clone()),
        (json!(30), json!(20))
    );
    assert_eq!(
        api.license(ids.last().unwrap(), &product).await.unwrap().0,
        "waitlisted"
    );
    assert_eq!(api.license(&bob, &product).await.unwrap().0, "active");

    // A plan swap moves every license at once, seats kept.
    let r = api.admin("PUT", &path, Some(term(30, "enterprise"))).await;
    assert_eq!(r["licenses"]["changed"], 50, "{r}");
    assert_eq!(
        api.license(&bob, &product).await,
        Some(("active".into(), "enterprise".into()))
    );
    assert_eq!(
        api.license(ids.last().unwrap(), &product).await,
        Some(("waitlisted".into(), "enterprise".into()))
    );

    // The term ends; access holds through 3 days of grace, then is revoked.
    api.advance_days(26).await; // 2027-01-02: in grace
    assert_eq!(api.usage(&product).await["phase"], "in_grace");
    assert_eq!(api.license(&alice, &product).await.unwrap().0, "active");
    let moved = api.advance_days(3).await; // 2027-01-05: grace over
    assert_eq!(moved["tenants"][&tenant]["revoked"], 50, "{moved}");
    assert_eq!(api.license(&alice, &product).await, None);
    drop(server);
    let verify = cli_ok(&db, &["audit", "verify", "--tenant", &tenant]);
    assert!(verify.contains("chain intact"), "{verify}");
}

/// `seatkeeper reconcile --check` decides everything again and finds a license row and a seat
/// count corrupted by hand (exit 1); `--repair` fixes both, and the check then passes.
async fn the_self_check_finds_and_repairs_corruption(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Corrupt"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let product = format!("rc-{}", &tenant[tenant.len() - 12..]);
    let model = format!(
        "[[products]]\nkey = \"{product}\"\n[[products.plans]]\nkey = \"pro\"\nrank = 1\n\
         [[products.plans]]\nkey = \"enterprise\"\nrank = 2\n\
         [[tenants]]\nid = \"{tenant}\"\n[[tenants.subscriptions]]\nproduct = \"{product}\"\nplan = \"pro\"\n\
         seats = 2\nstarts_at = \"2026-01-01T00:00:00Z\"\n"
    );
    let file = dir.path().join("model.toml");
    std::fs::write(&file, model).unwrap();
    cli_ok(&db, &["apply", file.to_str().unwrap()]);
    let server = Server::start(&db, &[]);
    let api = Api::new(&server.base, &token, &tenant);
    for n in ["x1", "x2", "x3"] {
        let (status, v) = api.create_user(n).await;
        assert_eq!(status, 201, "{v}");
    }
    drop(server);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary::BIN)
            .args(args)
            .env("SEATKEEPER_DATABASE", &db)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, out) = run(&["reconcile", "--check", "--tenant", &tenant]);
    assert_eq!(code, Some(0), "clean at first: {out}");
    // By hand: one license's plan, and the kept seat counts.
    let store = seatkeeper::Store::connect(&db, &Default::default())
        .await
        .unwrap();
    store
        .execute_unchecked(
            "UPDATE licenses SET plan = 'enterprise' WHERE tenant_id = $1 AND state = 'active' \
             AND user_id = (SELECT MIN(user_id) FROM licenses WHERE tenant_id = $1)",
            vec![tenant.as_str().into()],
        )
        .await
        .unwrap();
    store
        .execute_unchecked(
            "UPDATE audit_heads SET seat_lines = REPLACE(seat_lines, '\"waiting\":1', '\"waiting\":7') WHERE tenant_id = $1",
            vec![tenant.as_str().into()],
        )
        .await
        .unwrap();
    store.close().await;
    let (code, out) = run(&["reconcile", "--check", "--tenant", &tenant]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("wrong_plan") && out.contains("stored enterprise, expected pro"),
        "{out}"
    );
    assert!(
        out.contains("seat_count") && out.contains("7 waiting"),
        "{out}"
    );
    let (code, out) = run(&["reconcile", "--check", "--repair", "--tenant", &tenant]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("repaired 2 differences"), "{out}");
    let (code, out) = run(&["reconcile", "--check", "--tenant", &tenant]);
    assert_eq!(code, Some(0), "repaired: {out}");
    let trail = cli_ok(&db, &["audit", "verify", "--tenant", &tenant]);
    assert!(trail.contains("chain intact"), "{trail}");
}

/// Seat hygiene through the real binary: an idle seat reclaimed on the server's test clock,
/// `seatkeeper import` (a dry run, then with progress), and `apply` refusing a change to a
/// subscription billing manages unless `--force`d.
async fn seat_hygiene_through_the_binary(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(b, &dir);
    let tenant = cli_ok(&db, &["tenant", "create", "Hygiene"])
        .trim()
        .to_string();
    let token = cli_ok(&db, &["token", "create", "--tenant", &tenant])
        .trim()
        .to_string();
    let product = format!("hy-{}", &tenant[tenant.len() - 12..]);
    let model = |seats: u32, plan: &str| {
        format!(
            "[[products]]\nkey = \"{product}\"\n[[products.plans]]\nkey = \"pro\"\nrank = 1\n\
             [[products.plans]]\nkey = \"enterprise\"\nrank = 2\n\
             [[tenants]]\nid = \"{tenant}\"\n[[tenants.subscriptions]]\nproduct = \"{product}\"\nplan = \"{plan}\"\n\
             seats = {seats}\nstarts_at = \"2026-01-01T00:00:00Z\"\nidle_after_days = 30\non_idle = \"reclaim\"\n"
        )
    };
    let file = dir.path().join("model.toml");
    std::fs::write(&file, model(2, "pro")).unwrap();
    cli_ok(&db, &["apply", file.to_str().unwrap()]);
    let server = Server::start(
        &db,
        &[
            "--test-clock",
            "2026-11-01T00:00:00Z",
            "--scheduler-interval",
            "3600",
        ],
    );
    let api = Api::new(&server.base, &token, &tenant);
    let mut ids = Vec::new();
    for n in ["h1", "h2", "h3"] {
        let (status, v) = api.create_user(n).await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        api.license(&ids[2], &product).await.unwrap().0,
        "waitlisted"
    );
    // A month later (moving the test clock runs the scheduler, as its pass would).
    api.advance_days(31).await;
    api.admin("POST", &format!("/scheduler/run?tenant={tenant}"), None)
        .await;
    let reclaimed = api
        .admin(
            "GET",
            &format!("/tenants/{tenant}/audit?action=license.reclaimed"),
            None,
        )
        .await;
    assert_eq!(
        reclaimed["records"].as_array().unwrap().len(),
        1,
        "one seat, for one waiter: {reclaimed}"
    );
    assert_eq!(
        api.license(&ids[0], &product).await.unwrap().0,
        "reclaimed",
        "the longest idle"
    );
    assert_eq!(
        api.license(&ids[2], &product).await.unwrap().0,
        "active",
        "the waiter"
    );
    drop(server);
    // Import: the dry run reports and writes nothing; the import shows progress.
    let csv = dir.path().join("seats.csv");
    std::fs::write(
        &csv,
        format!("user,product,plan,assigned_at\nh2,{product},enterprise,2020-01-01T00:00:00Z\nnew@x.test,{product},pro,2020-01-02T00:00:00Z\nh3,nope,pro,2020-01-01T00:00:00Z\n"),
    )
    .unwrap();
    let out = cli_ok(
        &db,
        &[
            "import",
            csv.to_str().unwrap(),
            "--tenant",
            &tenant,
            "--dry-run",
        ],
    );
    assert!(
        out.contains("matched: 1") && out.contains("pending: 1") && out.contains("refused: 1"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was imported"), "{out}");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(BIN)
            .args(args)
            .env("SEATKEEPER_DATABASE", &db)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["import", csv.to_str().unwrap(), "--tenant", &tenant]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(err.contains("imported 3/3 rows"), "progress: {err}");
    assert!(out.contains("line 3: h3: no product nope"), "{out}");
    // Billing takes the subscription over; apply then refuses to change it, unless forced.
    let store = seatkeeper::Store::connect(&db, &Default::default())
        .await
        .unwrap();
    store
        .execute_unchecked(
            "UPDATE lic_subscriptions SET managed_by = 'billing:stripe' WHERE tenant_id = $1",
            vec![tenant.as_str().into()],
        )
        .await
        .unwrap();
    store.close().await;
    std::fs::write(&file, model(5, "enterprise")).unwrap();
    let (code, out, err) = run(&["apply", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("managed by billing") && out.contains("billing:stripe"),
        "{out}"
    );
    let (code, _, err) = run(&["apply", file.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("billing:stripe"), "{err}");
    let (code, out, err) = run(&["apply", file.to_str().unwrap(), "--force"]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (code, out, _) = run(&["reconcile", "--check", "--tenant", &tenant]);
    assert_eq!(code, Some(0), "consistent after it all: {out}");
}

both_backends!(
    seat_hygiene_through_the_binary,
    the_self_check_finds_and_repairs_corruption,
    seats_are_never_oversold,
    a_subscription_lifecycle
);
