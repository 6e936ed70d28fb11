//! A local OpenID Connect issuer for the sign-in tests: its own key pairs (RS256, ES256,
//! EdDSA), a discovery document and a JWKS served on 127.0.0.1, rotation, and a count of JWKS
//! fetches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

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
        seatkeeper::crypto::install();
        let (encoding, mut jwk) = seatkeeper::testing::signing_key(alg);
        jwk["kid"] = json!(kid);
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
