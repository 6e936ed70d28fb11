//! The process's cryptography is ring's: TLS (rustls, for PostgreSQL, webhooks and OIDC
//! discovery) and JSON Web Tokens (jsonwebtoken, through [`JWT`]). Nothing links aws-lc, and
//! nothing uses RustCrypto's `rsa` (RUSTSEC-2023-0071).
//!
//! [`install`] makes both the process defaults; everything that signs, verifies or opens a TLS
//! client calls it first, so no caller has to remember.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as sig, KeyPair as _};

/// Makes ring the process's provider for rustls and for jsonwebtoken (once; later calls do
/// nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another provider installed first (by an embedding program) is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = JWT.install_default();
    });
}

/// An HTTP client builder whose TLS is rustls with ring.
#[allow(clippy::disallowed_methods)] // the one place that builds reqwest clients
pub fn http_client() -> reqwest::ClientBuilder {
    install();
    reqwest::Client::builder()
}

/// jsonwebtoken's cryptography, on ring: RS256/384/512, PS256/384/512, ES256/384, EdDSA and
/// HS256/384/512. Which algorithms a caller accepts is the caller's policy (SSO refuses HMAC).
pub static JWT: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_of_private_key,
        rsa_pub_components_from_public_key: unsupported_rsa_public_components,
        ec_pub_components_from_private_key: ec_components_of_private_key,
        ed_pub_components_from_private_key: ed_component_of_private_key,
        compute_digest: digest,
    },
};

fn rejected(kind: ErrorKind) -> impl FnOnce(ring::error::KeyRejected) -> Error {
    move |_| new_error(kind)
}

// ---- signing

enum SigningKey {
    Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
    Hmac(ring::hmac::Key),
}

struct Signer {
    alg: Algorithm,
    key: SigningKey,
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if key.family() != alg.family() {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    let der = key.as_bytes();
    let rng = ring::rand::SystemRandom::new();
    let rsa = |encoding: &'static dyn sig::RsaEncoding| -> Result<SigningKey, Error> {
        let pair = rsa_key_pair(der)?;
        Ok(SigningKey::Rsa(pair, encoding))
    };
    let ecdsa = |alg: &'static sig::EcdsaSigningAlgorithm| -> Result<SigningKey, Error> {
        sig::EcdsaKeyPair::from_pkcs8(alg, der, &rng)
            .map(SigningKey::Ecdsa)
            .map_err(rejected(ErrorKind::InvalidEcdsaKey))
    };
    let hmac = |alg: ring::hmac::Algorithm| SigningKey::Hmac(ring::hmac::Key::new(alg, der));
    let key = match alg {
        Algorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256)?,
        Algorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384)?,
        Algorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512)?,
        Algorithm::PS256 => rsa(&sig::RSA_PSS_SHA256)?,
        Algorithm::PS384 => rsa(&sig::RSA_PSS_SHA384)?,
        Algorithm::PS512 => rsa(&sig::RSA_PSS_SHA512)?,
        Algorithm::ES256 => ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)?,
        Algorithm::ES384 => ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING)?,
        Algorithm::EdDSA => sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(SigningKey::Ed25519)
            .map_err(rejected(ErrorKind::InvalidEddsaKey))?,
        Algorithm::HS256 => hmac(ring::hmac::HMAC_SHA256),
        Algorithm::HS384 => hmac(ring::hmac::HMAC_SHA384),
        Algorithm::HS512 => hmac(ring::hmac::HMAC_SHA512),
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    Ok(Box::new(Signer { alg: *alg, key }))
}

impl signature::Signer<Vec<u8>> for Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = ring::rand::SystemRandom::new();
        match &self.key {
            SigningKey::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SigningKey::Ecdsa(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SigningKey::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
            SigningKey::Hmac(key) => Ok(ring::hmac::sign(key, msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for Signer {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

// ---- verification

struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != alg.family() {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    Ok(Box::new(Verifier {
        alg: *alg,
        key: key.clone(),
    }))
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let public = |alg: &'static dyn sig::VerificationAlgorithm| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => sig::UnparsedPublicKey::new(alg, bytes)
                .verify(msg, signature)
                .map_err(|_| signature::Error::new()),
            DecodingKeyKind::RsaModulusExponent { .. } => Err(signature::Error::new()),
        };
        let rsa = |params: &'static sig::RsaParameters| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(_) => public(params),
            DecodingKeyKind::RsaModulusExponent { n, e } => sig::RsaPublicKeyComponents { n, e }
                .verify(params, msg, signature)
                .map_err(|_| signature::Error::new()),
        };
        let hmac = |alg: ring::hmac::Algorithm| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(secret) => {
                ring::hmac::verify(&ring::hmac::Key::new(alg, secret), msg, signature)
                    .map_err(|_| signature::Error::new())
            }
            DecodingKeyKind::RsaModulusExponent { .. } => Err(signature::Error::new()),
        };
        match self.alg {
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
            Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256),
            Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384),
            Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512),
            Algorithm::ES256 => public(&sig::ECDSA_P256_SHA256_FIXED),
            Algorithm::ES384 => public(&sig::ECDSA_P384_SHA384_FIXED),
            Algorithm::EdDSA => public(&sig::ED25519),
            Algorithm::HS256 => hmac(ring::hmac::HMAC_SHA256),
            Algorithm::HS384 => hmac(ring::hmac::HMAC_SHA384),
            Algorithm::HS512 => hmac(ring::hmac::HMAC_SHA512),
            _ => Err(signature::Error::new()),
        }
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

// ---- key utilities (JWK building and thumbprints)

/// An RSA private key in PKCS#1 or PKCS#8 DER.
fn rsa_key_pair(der: &[u8]) -> Result<sig::RsaKeyPair, Error> {
    sig::RsaKeyPair::from_der(der)
        .or_else(|_| sig::RsaKeyPair::from_pkcs8(der))
        .map_err(|e| new_error(ErrorKind::InvalidRsaKey(e.to_string())))
}

type Components = Result<(Vec<u8>, Vec<u8>), Error>;

fn rsa_components_of_private_key(der: &[u8]) -> Components {
    let pair = rsa_key_pair(der)?;
    let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((c.n, c.e))
}

fn unsupported_rsa_public_components(_der: &[u8]) -> Components {
    Err(new_error(ErrorKind::Provider(
        "RSA public keys in DER are not read here; give the key as a JWK (n, e)".into(),
    )))
}

fn ec_components_of_private_key(
    der: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    let (curve, signing, half) = match alg {
        Algorithm::ES256 => (
            EllipticCurve::P256,
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            32,
        ),
        Algorithm::ES384 => (
            EllipticCurve::P384,
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            48,
        ),
        _ => return Err(new_error(ErrorKind::InvalidEcdsaKey)),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der, &ring::rand::SystemRandom::new())
        .map_err(rejected(ErrorKind::InvalidEcdsaKey))?;
    // An uncompressed point: 0x04, x, y.
    let point = pair.public_key().as_ref();
    if point.len() != 1 + 2 * half || point[0] != 4 {
        return Err(new_error(ErrorKind::InvalidEcdsaKey));
    }
    Ok((curve, point[1..=half].to_vec(), point[1 + half..].to_vec()))
}

fn ed_component_of_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, Error> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(new_error(ErrorKind::InvalidEddsaKey));
    }
    let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(rejected(ErrorKind::InvalidEddsaKey))?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    Ok(ring::digest::digest(alg, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Header, Validation, decode, encode};
    use serde_json::{Value, json};

    fn round_trip(alg: Algorithm, enc: &EncodingKey, dec: &DecodingKey) {
        install();
        let claims = json!({"sub": "x", "exp": 4_000_000_000u64});
        let token = encode(&Header::new(alg), &claims, enc).unwrap();
        let mut v = Validation::new(alg);
        v.validate_aud = false;
        let got = decode::<Value>(&token, dec, &v).unwrap();
        assert_eq!(got.claims["sub"], "x");
        // One flipped signature byte fails.
        // The signature of another message does not verify this one.
        let (head, _) = token.rsplit_once('.').unwrap();
        let other = jsonwebtoken::crypto::sign(b"other", enc, alg).unwrap();
        let forged = format!("{head}.{other}");
        assert!(decode::<Value>(&forged, dec, &v).is_err(), "{alg:?}");
    }

    #[test]
    fn ecdsa_eddsa_and_hmac_sign_and_verify() {
        let rng = ring::rand::SystemRandom::new();
        let p8 =
            sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let (_, x, y) = ec_components_of_private_key(p8.as_ref(), Algorithm::ES256).unwrap();
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        round_trip(
            Algorithm::ES256,
            &EncodingKey::from_ec_der(p8.as_ref()),
            &DecodingKey::from_ec_components(&b64(&x), &b64(&y)).unwrap(),
        );
        let p8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let x = ed_component_of_private_key(p8.as_ref(), &EllipticCurve::Ed25519).unwrap();
        round_trip(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(p8.as_ref()),
            &DecodingKey::from_ed_components(&b64(&x)).unwrap(),
        );
        round_trip(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"secret"),
            &DecodingKey::from_secret(b"secret"),
        );
    }

    #[test]
    fn a_key_of_another_family_is_refused() {
        install();
        let token = encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let rsa = DecodingKey::from_rsa_raw_components(&[1; 256], &[1, 0, 1]);
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        assert!(decode::<Value>(&token, &rsa, &v).is_err());
    }
}
