//! Test support shared by the crate's own tests and the integration tests (`tests/it`):
//! stores on both backends and PostgreSQL databases of their own. Not part of the API.

use crate::kernel::store::{Store, StoreOptions};

pub use crate::apps::snapshot::Snapshot;
pub use crate::apps::store::{SnapLicense, SnapRole, SnapUser};

/// The backends a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL for tests. `.ci/run` always sets it; without it the PostgreSQL
/// variants fail (they are never silently skipped).
pub fn postgres_url() -> String {
    std::env::var("SEATKEEPER_TEST_POSTGRES_URL").expect(
        "SEATKEEPER_TEST_POSTGRES_URL is not set: run `bash .ci/run`, or point it at a PostgreSQL database, \
         or exclude these tests with `cargo nextest run -E 'not test(/postgres/)'`",
    )
}

pub struct TestStore {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn store(backend: Backend) -> TestStore {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            let store = Store::connect(&url, &StoreOptions::default())
                .await
                .unwrap();
            TestStore {
                store,
                url,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let url = postgres_url();
            let store = Store::connect(
                &url,
                &StoreOptions {
                    max_connections: 4,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            TestStore {
                store,
                url,
                _dir: None,
            }
        }
    }
}

/// Generates `mod name { sqlite, postgres }` tests from one async body taking a `Backend`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::testing::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::testing::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// A PostgreSQL database of one test alone, so no other test's server works on its rows.
pub struct OwnDatabase {
    pub url: String,
    name: String,
    admin: sqlx::PgPool,
}

impl OwnDatabase {
    pub async fn create(tag: &str) -> OwnDatabase {
        let base_url = postgres_url();
        let (prefix, _) = base_url.rsplit_once('/').unwrap();
        let name = format!("sk_{tag}_{}", std::process::id());
        let admin = sqlx::PgPool::connect(&base_url).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        OwnDatabase {
            url: format!("{prefix}/{name}"),
            name,
            admin,
        }
    }

    /// Drops the database (after the test's servers are gone).
    pub async fn drop_database(self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }

    /// Cuts every connection to the database (each node's pool and listener).
    pub async fn cut_connections(&self) -> u64 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .execute(&self.admin)
        .await
        .unwrap()
        .rows_affected()
    }
}

/// A new signing key for a test identity provider: its private half for jsonwebtoken and its
/// public JWK (without `kid`). ES256 and EdDSA keys come from ring; ring cannot make RSA
/// keys, so RS256 keys come from `openssl genpkey` (installed by `.ci/run`).
pub fn signing_key(alg: jsonwebtoken::Algorithm) -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use ring::signature::{self as sig, KeyPair as _};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rng = ring::rand::SystemRandom::new();
    match alg {
        Algorithm::RS256 => {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .args(["-outform", "DER"])
                .output()
                .expect("openssl, to make an RSA key");
            assert!(out.status.success(), "openssl genpkey failed");
            // A DER private key from genpkey is PKCS#1 (RSAPrivateKey).
            let pair = sig::RsaKeyPair::from_der(&out.stdout).expect("an RSA key");
            let public = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
            (
                EncodingKey::from_rsa_der(&out.stdout),
                serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256",
                    "n": b64(&public.n), "e": b64(&public.e)}),
            )
        }
        Algorithm::ES256 => {
            let p8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("an EC key");
            let pair = sig::EcdsaKeyPair::from_pkcs8(
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                p8.as_ref(),
                &rng,
            )
            .expect("an EC key");
            let point = pair.public_key().as_ref();
            (
                EncodingKey::from_ec_der(p8.as_ref()),
                serde_json::json!({"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            )
        }
        Algorithm::EdDSA => {
            let p8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).expect("an Ed25519 key");
            let pair = sig::Ed25519KeyPair::from_pkcs8(p8.as_ref()).expect("an Ed25519 key");
            (
                EncodingKey::from_ed_der(p8.as_ref()),
                serde_json::json!({"kty": "OKP", "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
                    "x": b64(pair.public_key().as_ref())}),
            )
        }
        other => panic!("no test keys for {other:?}"),
    }
}
