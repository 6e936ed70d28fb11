//! The HTTP call the load drivers (`soak`, `scale`) share.

use serde_json::Value;

/// Transport errors reported so far (the first few are printed, to tell a timeout from a
/// refused or reset connection).
static REPORTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn report(e: &reqwest::Error) {
    if REPORTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 10 {
        use std::error::Error as _;
        let mut why = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            why.push_str(&format!(": {s}"));
            src = s.source();
        }
        eprintln!("no answer: {why}");
    }
}

/// One request with a bearer token and an optional SCIM JSON body: `(status, body)`, or
/// `(0, null)` when no answer came.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    match request(http, method, url, token, body).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => {
            report(&e);
            (0, Value::Null)
        }
    }
}

/// [`call`] for a load driver that needs only the status: the body is read (so the
/// connection is reused) but not parsed, which keeps the driver's own CPU off the figures.
/// (The scale driver checks every answer's body, so it does not use this.)
#[allow(dead_code)]
pub async fn status_of(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> u16 {
    match request(http, method, url, token, body).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            match r.bytes().await {
                Ok(_) => s,
                Err(e) => {
                    report(&e);
                    0
                }
            }
        }
        Err(e) => {
            report(&e);
            0
        }
    }
}

/// A request with a bearer token and an optional SCIM JSON body.
fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let req = http.request(method, url).bearer_auth(token);
    match body {
        Some(b) => req
            .header("content-type", "application/scim+json")
            .body(b.to_string()),
        None => req,
    }
}
