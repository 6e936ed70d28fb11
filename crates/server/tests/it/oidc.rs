//! A local OpenID Connect issuer for the sign-in tests: its own key pairs (RS256, ES256,
//! EdDSA), a discovery document and a JWKS served on 127.0.0.1, rotation, and a count of JWKS
//! fetches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One signing key: its private half and its public JWK.
pub struct KeyPair {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl KeyPair {
    pub fn new(alg: Algorithm) -> KeyPair {
        let kid = format!("k-{}", uuid::Uuid::new_v4());
        let (encoding, jwk) = match alg {
            Algorithm::RS256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
                let der = key.to_pkcs1_der().unwrap();
                let public = key.to_public_key();
                (
                    EncodingKey::from_rsa_der(der.as_bytes()),
                    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                        "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())}),
                )
            }
            Algorithm::ES256 => {
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                use p256::pkcs8::EncodePrivateKey;
                let key = p256::SecretKey::random(&mut rand::thread_rng());
                let der = key.to_pkcs8_der().unwrap();
                let point = key.public_key().to_encoded_point(false);
                (
                    EncodingKey::from_ec_der(der.as_bytes()),
                    json!({"kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
                )
            }
            Algorithm::EdDSA => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                let key = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
                let der = key.to_pkcs8_der().unwrap();
                (
                    EncodingKey::from_ed_der(der.as_bytes()),
                    json!({"kty": "OKP", "use": "sig", "alg": "EdDSA", "kid": kid, "crv": "Ed25519",
                        "x": b64(key.verifying_key().as_bytes())}),
                )
            }
            other => panic!("no test keys for {other:?}"),
        };
        KeyPair {
            kid,
            alg,
            encoding,
            jwk,
        }
    }

    /// A token of these claims signed with this key (its `kid` in the header).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The issuer: serves `/.well-known/openid-configuration` and `/jwks` for its published keys.
pub struct Issuer {
    pub url: String,
    /// The time tokens are issued at (the server's clock, unix seconds).
    pub now: i64,
    published: Arc<RwLock<Vec<Value>>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    pub async fn start(now: i64) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let published: Arc<RwLock<Vec<Value>>> = Arc::default();
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"]});
        let (keys, fetches) = (published.clone(), jwks_fetches.clone());
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
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = keys.read().unwrap().clone();
                    async move { axum::Json(json!({ "keys": keys })) }
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Issuer {
            url,
            now,
            published,
            jwks_fetches,
            task,
        }
    }

    /// Publishes a key.
    pub fn publish(&self, key: &KeyPair) {
        self.published.write().unwrap().push(key.jwk.clone());
    }

    /// Publishes only these keys (a rotation).
    pub fn rotate_to(&self, keys: &[&KeyPair]) {
        *self.published.write().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// ID token claims for a user, valid for five minutes.
    pub fn claims(&self, sub: &str, email: &str, extra: Value) -> Value {
        let mut c = json!({"iss": self.url, "aud": "client-1", "sub": sub, "email": email,
            "iat": self.now, "exp": self.now + 300});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }
}
