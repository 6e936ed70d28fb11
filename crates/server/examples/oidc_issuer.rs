//! A local OpenID Connect issuer for `bench/sso.sh`: makes one signing key (RS256, ES256 or
//! EdDSA), serves its discovery document and JWKS on 127.0.0.1, and writes ID tokens for
//! `seed<i>@bench.example` (aud `bench`, valid for two hours) to a file, one per line.
//!
//! Usage: oidc_issuer ALG FIRST COUNT TOKENS_FILE [NOW_UNIX]
//! Prints `issuer http://127.0.0.1:PORT` once the tokens are written, then serves until killed.

use std::io::Write;

use axum::Router;
use axum::routing::get;
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let alg = match args.get(1).map(String::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        _ => Algorithm::EdDSA,
    };
    let first: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let count: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let file = args.get(4).cloned().unwrap_or_else(|| "tokens.txt".into());
    let now: i64 = args
        .get(5)
        .and_then(|s| s.parse().ok())
        .expect("NOW_UNIX: the server's clock, in seconds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    seatkeeper::crypto::install();
    let (encoding, mut jwk) = seatkeeper::testing::signing_key(alg);
    jwk["kid"] = json!("bench-1");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("the tokens file"));
    let mut header = Header::new(alg);
    header.kid = Some("bench-1".into());
    for i in first..first + count {
        let claims = json!({"iss": url, "aud": "bench", "sub": format!("e{i}"),
            "email": format!("seed{i}@bench.example"), "iat": now, "exp": now + 7200});
        let t = jsonwebtoken::encode(&header, &claims, &encoding).expect("a token");
        writeln!(out, "{t}").expect("written");
    }
    out.flush().expect("flushed");
    drop(out);
    let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
    let jwks = json!({"keys": [jwk]});
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let k = jwks.clone();
                async move { axum::Json(k) }
            }),
        );
    println!("issuer {url}");
    axum::serve(listener, app).await.expect("serving");
}
