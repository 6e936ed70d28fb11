//! A local OpenID Connect issuer for `bench/sso.sh`: makes one signing key (RS256, ES256 or
//! EdDSA), serves its discovery document and JWKS on 127.0.0.1, and writes ID tokens for
//! `seed<i>@bench.example` (aud `bench`, valid for two hours) to a file, one per line.
//!
//! Usage: oidc_issuer ALG FIRST COUNT TOKENS_FILE [NOW_UNIX]
//! Prints `issuer http://127.0.0.1:PORT` once the tokens are written, then serves until killed.

use std::io::Write;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(alg: Algorithm) -> (EncodingKey, serde_json::Value) {
    match alg {
        Algorithm::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let k = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("an RSA key");
            let der = k.to_pkcs1_der().expect("DER");
            let p = k.to_public_key();
            (
                EncodingKey::from_rsa_der(der.as_bytes()),
                json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "bench-1",
                    "n": b64(&p.n().to_bytes_be()), "e": b64(&p.e().to_bytes_be())}),
            )
        }
        Algorithm::ES256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            use p256::pkcs8::EncodePrivateKey;
            let k = p256::SecretKey::random(&mut rand::thread_rng());
            let der = k.to_pkcs8_der().expect("DER");
            let pt = k.public_key().to_encoded_point(false);
            (
                EncodingKey::from_ec_der(der.as_bytes()),
                json!({"kty": "EC", "alg": "ES256", "use": "sig", "kid": "bench-1", "crv": "P-256",
                    "x": b64(pt.x().expect("x")), "y": b64(pt.y().expect("y"))}),
            )
        }
        _ => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let k = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
            let der = k.to_pkcs8_der().expect("DER");
            (
                EncodingKey::from_ed_der(der.as_bytes()),
                json!({"kty": "OKP", "alg": "EdDSA", "use": "sig", "kid": "bench-1", "crv": "Ed25519",
                    "x": b64(k.verifying_key().as_bytes())}),
            )
        }
    }
}

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
    let (encoding, jwk) = key(alg);
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
