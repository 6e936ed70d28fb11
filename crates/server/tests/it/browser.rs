//! The console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs) driven over WebDriver against `seatkeeper
//! demo`. Screenshots land in `target/ui-screenshots/`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::binary::BIN;
use crate::common::USER;

const ADMIN: &str = "browser-admin-token";

/// A child process killed when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `seatkeeper demo` on a free port: (process, base URL, SCIM token, tenant id, database).
fn demo() -> (Kill, String, String, String, String) {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--users", "40"])
        .env("SEATKEEPER_ADMIN_TOKEN", ADMIN)
        .env("SEATKEEPER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token, mut tenant) = (String::new(), String::new(), String::new());
    let mut db = String::new();
    for line in out.by_ref() {
        let line = line.unwrap();
        if let Some(i) = line.find("sqlite://") {
            db = line[i..].trim().to_string();
        }
        let value = |l: &str| {
            l.split_once(':')
                .map(|(_, v)| v.split_whitespace().next().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        if line.trim_start().starts_with("console") {
            base = value(&line).trim_end_matches("/ui").to_string();
        } else if line.trim_start().starts_with("SCIM token") {
            token = value(&line);
        } else if line.trim_start().starts_with("tenant id") {
            tenant = value(&line);
        } else if line.trim_start().starts_with("metrics") {
            break;
        }
    }
    // Keep reading what it prints: a closed pipe would end it.
    std::thread::spawn(move || for _ in out {});
    assert!(
        base.starts_with("http://") && !token.is_empty() && !tenant.is_empty(),
        "demo printed no console URL, token or tenant"
    );
    // The demo prints before it listens; wait for it.
    for _ in 0..100 {
        if std::net::TcpStream::connect(base.trim_start_matches("http://")).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (Kill(child), base, token, tenant, db)
}

/// chromedriver on a free port, and a headless Chromium session at `width` × 900.
async fn browser() -> (Kill, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: `apt-get install chromium chromium-driver` (bash .ci/run does)");
    let driver = Kill(driver);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1280,900", "--lang=en-US"]}),
    );
    let started = Instant::now();
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(name), png).unwrap();
}

async fn figure(c: &Client, id: &str) -> i64 {
    let text = c
        .find(Locator::Css(&format!("[data-testid=\"{id}\"]")))
        .await
        .unwrap_or_else(|e| panic!("no figure {id}: {e}"))
        .text()
        .await
        .unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("figure {id} is not a number alone: {text:?}"))
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui/login")).await.unwrap();
    let field = c.find(Locator::Css("input[name=token]")).await.unwrap();
    field.send_keys(token).await.unwrap();
    c.find(Locator::Css("[data-testid=login]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The whole console journey: the sign-in wall, a wrong token, the overview's figures, a
/// SCIM create moving a figure on the open tenant page within a second, a user's
/// explanation, signing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let (_demo, base, scim_token, tenant, db) = demo();
    let (_driver, c) = browser().await;

    // No session: every page sends to the sign-in.
    c.goto(&format!("{base}/ui/tenants/{tenant}"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));

    // A wrong token: a clear message.
    sign_in(&c, &base, "not-the-token").await;
    let msg = c
        .wait()
        .for_element(Locator::Css("[data-testid=login-error]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(msg.contains("not the admin token"), "{msg}");

    // The right one: the overview with the demo tenant's figures.
    sign_in(&c, &base, ADMIN).await;
    c.wait()
        .for_element(Locator::Css("[data-testid=matching]"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/ui");
    let seats = figure(&c, &format!("{tenant}.workspace.seats")).await;
    let active = figure(&c, &format!("{tenant}.workspace.active")).await;
    let waiting = figure(&c, &format!("{tenant}.workspace.waitlisted")).await;
    // The page says what the admin API says.
    let usage: serde_json::Value = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client")
        .get(format!("{base}/api/v1/tenants/{tenant}/usage"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws = usage["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["product"] == "workspace")
        .unwrap();
    assert_eq!(
        (seats, active, waiting),
        (
            ws["seats"].as_i64().unwrap(),
            ws["active"].as_i64().unwrap(),
            ws["waitlisted"].as_i64().unwrap()
        )
    );
    assert!(
        seats == 5 && active == 5 && waiting > 0,
        "the demo's 8 engineers on 5 hard seats"
    );
    assert!(
        ws["seat_free"].as_i64().unwrap() > 20,
        "everyone else on the seat-free plan: {ws}"
    );
    figure(&c, &format!("{tenant}.analytics.overage")).await;
    figure(&c, &format!("{tenant}.analytics.idle")).await;
    shot(&c, "overview.png").await;
    c.set_window_size(390, 844).await.unwrap();
    shot(&c, "overview-390.png").await;
    c.set_window_size(1280, 900).await.unwrap();

    // The tenant page follows a SCIM create live.
    c.goto(&format!("{base}/ui/tenants/{tenant}"))
        .await
        .unwrap();
    let before = figure(&c, &format!("{tenant}.workspace.active")).await
        + figure(&c, &format!("{tenant}.workspace.waitlisted")).await;
    // Let the page's live stream connect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let created = Instant::now();
    let r: serde_json::Value = http
        .post(format!("{base}/scim/v2/Users"))
        .bearer_auth(&scim_token)
        .json(&json!({"schemas": [USER], "userName": "live@demo.test", "title": "Manager"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = r["id"].as_str().unwrap().to_string();
    loop {
        let now = figure(&c, &format!("{tenant}.workspace.active")).await
            + figure(&c, &format!("{tenant}.workspace.waitlisted")).await;
        if now == before + 1 {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(1),
            "the open page did not follow the create within 1 s ({before} → {now})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seen_after = created.elapsed();
    shot(&c, "tenant.png").await;

    // Ninety days of history (written beside the server, as a long-running one would have
    // it): the chart is drawn from it.
    let store = seatkeeper::Store::connect(&db, &Default::default())
        .await
        .unwrap();
    let now = seatkeeper::system_clock().now().unix_timestamp();
    let hour = now - now.rem_euclid(3600);
    for d in (1..=90).rev() {
        let at = hour - d * 86_400;
        let active = 10 + (90 - d) / 5;
        store
            .execute_unchecked(
                "INSERT INTO usage_points (tenant_id, product, at, seats, active, waitlisted, overage, idle) \
                 VALUES ($1, 'workspace', $2, 30, $3, $4, 0, 0)",
                vec![tenant.as_str().into(), at.into(), active.min(30).into(), (active - 30).max(0).into()],
            )
            .await
            .unwrap();
    }
    store.close().await;
    c.goto(&format!("{base}/ui/tenants/{tenant}?days=90"))
        .await
        .unwrap();
    let svg = c
        .find(Locator::Css("svg.chart polyline.active"))
        .await
        .unwrap();
    assert!(
        svg.attr("points")
            .await
            .unwrap()
            .unwrap()
            .split(' ')
            .count()
            >= 90
    );
    shot(&c, "tenant-history.png").await;

    // A user's explanation.
    c.goto(&format!("{base}/ui/tenants/{tenant}/users/{user}"))
        .await
        .unwrap();
    let why = c
        .find(Locator::Css("[data-testid=explanation]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        why.contains("rule managers matched"),
        "the explanation names the rule: {why}"
    );
    // A manager is a workspace admin (rule managers-admin).
    let roles = c
        .find(Locator::Css("[data-testid=roles]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        roles.contains("admin")
            && roles.contains("managers-admin")
            && roles.contains("billing.manage"),
        "{roles}"
    );
    shot(&c, "user.png").await;
    c.execute(
        "document.querySelector('[data-testid=roles]').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    shot(&c, "user-roles.png").await;

    // Pins and the deprovision brake show on the tenant page: the live user pinned, then a
    // wave of deactivations (the demo's 40 users: past 10 the brake holds their seats).
    let r = http
        .put(format!(
            "{base}/api/v1/tenants/{tenant}/users/{user}/pins/workspace"
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"plan": "pro", "reason": "covering for a manager"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let users: serde_json::Value = http
        .get(format!(
            "{base}/scim/v2/Users?count=14&filter=active%20eq%20true"
        ))
        .bearer_auth(&scim_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for u in users["Resources"].as_array().unwrap() {
        let r = http
            .patch(format!(
                "{base}/scim/v2/Users/{}",
                u["id"].as_str().unwrap()
            ))
            .bearer_auth(&scim_token)
            .json(
                &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    c.goto(&format!("{base}/ui/tenants/{tenant}"))
        .await
        .unwrap();
    let held = c
        .find(Locator::Css("[data-testid=held] tbody"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        held.contains("deactivated") && held.contains("pending"),
        "{held}"
    );
    let pins = c
        .find(Locator::Css("[data-testid=pins] tbody"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(pins.contains("covering for a manager"), "{pins}");
    c.find(Locator::Css("[data-testid=held]"))
        .await
        .unwrap()
        .click()
        .await
        .ok();
    shot(&c, "tenant-held.png").await;

    // Events across tenants, filtered by type, live.
    c.goto(&format!("{base}/ui/events?type=user.*"))
        .await
        .unwrap();
    let count = |c: &Client| {
        let c = c.clone();
        async move {
            c.find_all(Locator::Css("[data-testid=events] li"))
                .await
                .unwrap()
                .len()
        }
    };
    let before = count(&c).await;
    let shown = c
        .find(Locator::Css("[data-testid=events]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !shown.contains("license."),
        "the type filter lets license events through: {shown}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http
        .post(format!("{base}/scim/v2/Users"))
        .bearer_auth(&scim_token)
        .json(&json!({"schemas": [USER], "userName": "events@demo.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created = Instant::now();
    while count(&c).await == before {
        assert!(
            created.elapsed() < Duration::from_secs(3),
            "the events page did not show the new user"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = c
        .find(Locator::Css("[data-testid=events] li"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        first.contains("user.provisioned") && first.contains(&tenant),
        "{first}"
    );
    shot(&c, "events.png").await;

    // Sign out: the session is gone.
    c.find(Locator::Css("[data-testid=logout]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=token]"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    c.goto(&format!("{base}/ui")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    c.close().await.unwrap();
    eprintln!("the tenant page showed the create after {seen_after:?}");
}

/// Forms without their CSRF token are refused; pages without a session redirect.
#[tokio::test]
async fn console_forms_need_their_csrf_token() {
    let (_demo, base, _, _, _) = demo();
    let http = seatkeeper::crypto::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // No session: a redirect to the sign-in, for every page.
    for path in ["/ui", "/ui/tenants/x", "/ui/live?tenants=x"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/ui/login", "{path}");
    }
    // The sign-in form without its token (or with another's): 403.
    let r = http
        .post(format!("{base}/ui/login"))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Sign in properly: the form's token and its cookie.
    let r = http.get(format!("{base}/ui/login")).send().await.unwrap();
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let login_cookie = cookie.split(';').next().unwrap().to_string();
    let html = r.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = http
        .post(format!("{base}/ui/login"))
        .header("cookie", &login_cookie)
        .form(&[("token", ADMIN), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("sk_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
            && session.contains("Max-Age=28800"),
        "{session}"
    );
    let session = session.split(';').next().unwrap().to_string();
    let r = http
        .get(format!("{base}/ui"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Signing out without the session's form token: 403, and the session lives on.
    let r = http
        .post(format!("{base}/ui/logout"))
        .header("cookie", &session)
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{base}/ui/logout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{base}/ui"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the session survived the refused sign-outs"
    );
}

/// The customer admin portal in a real browser against `seatkeeper demo`: a single-use link,
/// the tenant's seats and setup steps, their own SCIM token created and working, a user's
/// explanation, their audit trail, and a spent link refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_in_a_real_browser() {
    let (_demo, base, _scim_token, tenant, _db) = demo();
    let http = seatkeeper::crypto::http_client()
        .build()
        .expect("an HTTP client");
    let link: serde_json::Value = http
        .post(format!("{base}/api/v1/tenants/{tenant}/portal-links"))
        .bearer_auth(ADMIN)
        .json(&json!({"expires_in": 3600, "capabilities": ["scim_setup", "seats", "audit"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{base}/portal/")), "{link}");
    let (_driver, c) = browser().await;

    c.goto(&url).await.unwrap();
    c.wait()
        .for_element(Locator::Css("[data-testid=scim-url]"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/portal");
    let scim_url = c
        .find(Locator::Css("[data-testid=scim-url]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(scim_url, format!("{base}/scim/v2"));
    // The seats the admin API reports.
    let usage: serde_json::Value = http
        .get(format!("{base}/api/v1/tenants/{tenant}/usage"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = c
        .find_all(Locator::Css("[data-testid=seat-row]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), usage["subscriptions"].as_array().unwrap().len());
    let actives: Vec<i64> = {
        let mut v = Vec::new();
        for e in c
            .find_all(Locator::Css("[data-testid=seats-active]"))
            .await
            .unwrap()
        {
            v.push(e.text().await.unwrap().trim().parse().unwrap());
        }
        v
    };
    let mut expected: Vec<i64> = usage["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["active"].as_i64().unwrap())
        .collect();
    let mut shown = actives.clone();
    expected.sort();
    shown.sort();
    assert_eq!(shown, expected);
    shot(&c, "portal.png").await;
    c.goto(&format!("{base}/portal#seats")).await.unwrap();
    shot(&c, "portal-seats.png").await;

    // Their own SCIM token, shown once, works against SCIM.
    c.find(Locator::Css("[data-testid=rotate-scim-token]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let token = c
        .wait()
        .for_element(Locator::Css("[data-testid=new-scim-token]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(token.starts_with("skt_"), "{token}");
    shot(&c, "portal-token.png").await;
    let r = http
        .get(format!("{base}/scim/v2/Users?count=1"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Why a user holds what they hold.
    c.goto(&format!("{base}/portal")).await.unwrap();
    let first = c
        .wait()
        .for_element(Locator::Css("[data-testid=holder] a"))
        .await
        .unwrap();
    first.click().await.unwrap();
    c.wait()
        .for_element(Locator::Css("[data-testid=explanation]"))
        .await
        .unwrap();
    shot(&c, "portal-user.png").await;

    // The audit trail shows the portal's own actions.
    c.goto(&format!("{base}/portal#audit")).await.unwrap();
    let trail = c
        .wait()
        .for_element(Locator::Css("[data-testid=portal-audit]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        trail.contains("portal") && trail.contains("credential.create"),
        "{trail}"
    );

    // The link was spent on the first visit; signing out ends the session.
    c.find(Locator::Css("[data-testid=portal-logout]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let bye = c
        .wait()
        .for_element(Locator::Css("[data-testid=portal-error]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(bye.contains("signed out"), "{bye}");
    c.goto(&url).await.unwrap();
    let msg = c
        .wait()
        .for_element(Locator::Css("[data-testid=portal-error]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(msg.contains("used or has expired"), "{msg}");
    shot(&c, "portal-spent.png").await;
    c.goto(&format!("{base}/portal")).await.unwrap();
    let msg = c
        .wait()
        .for_element(Locator::Css("[data-testid=portal-error]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(msg.contains("session has ended"), "{msg}");
    c.close().await.unwrap();
}
