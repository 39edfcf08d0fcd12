//! RSA keys and SHA256withRSA (PKCS#1 v1.5), the one signature scheme both platforms use, plus
//! the injectable clock the timestamp checks read.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::rngs::OsRng;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::error::PayError;

/// A private RSA key (merchant API key, Alipay app key, or a mock platform key). Never printed.
///
/// Parsed once; signing goes through ring's constant-time RSA (about 4x faster than the `rsa`
/// crate's blinded signing, which took ~2 ms a signature and dominated a paid checkout). Keys ring
/// will not take (below 2048 bits) sign with `rsa`.
#[derive(Clone)]
pub struct PrivateKey {
    rsa: RsaPrivateKey,
    ring: Option<Arc<ring::signature::RsaKeyPair>>,
}

/// A public RSA key (WeChat Pay platform key, Alipay public key, or a merchant key in a mock).
/// Verification goes through ring (~20 µs against ~180 µs with `rsa`); keys below 2048 bits,
/// which ring refuses, verify with `rsa`.
#[derive(Clone)]
pub struct PublicKey {
    rsa: RsaPublicKey,
    ring: Option<Arc<ring::signature::RsaPublicKeyComponents<Vec<u8>>>>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.rsa == other.rsa
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(RSA)")
    }
}

/// Platforms hand out keys as PKCS#8 PEM (WeChat `apiclient_key.pem`), PKCS#1 PEM, or the bare
/// base64 body of either (Alipay's key tool); all are accepted.
impl PrivateKey {
    pub fn from_pem(text: &str) -> Result<Self, PayError> {
        let text = text.trim();
        let parsed = if text.contains("BEGIN RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| PayError::InvalidKey(e.to_string()))
        } else if text.contains("BEGIN") {
            RsaPrivateKey::from_pkcs8_pem(text).map_err(|e| PayError::InvalidKey(e.to_string()))
        } else {
            let der = B64
                .decode(strip_whitespace(text))
                .map_err(|e| PayError::InvalidKey(format!("bare key is not base64: {e}")))?;
            RsaPrivateKey::from_pkcs8_der(&der)
                .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
                .map_err(|e| PayError::InvalidKey(e.to_string()))
        };
        parsed.and_then(Self::new)
    }

    fn new(rsa: RsaPrivateKey) -> Result<Self, PayError> {
        let der = rsa
            .to_pkcs8_der()
            .map_err(|e| PayError::InvalidKey(e.to_string()))?;
        let ring = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes())
            .ok()
            .map(Arc::new);
        Ok(Self { rsa, ring })
    }

    /// A fresh key for tests and local development. 2048 bits takes seconds in a debug build:
    /// generate once per process (or use checked-in fixtures).
    pub fn generate(bits: usize) -> Result<Self, PayError> {
        RsaPrivateKey::new(&mut OsRng, bits)
            .map_err(|e| PayError::InvalidKey(e.to_string()))
            .and_then(Self::new)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::new(self.rsa.to_public_key())
    }

    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`), the form both SDKs load.
    pub fn to_pkcs8_pem(&self) -> Result<String, PayError> {
        self.rsa
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| PayError::InvalidKey(e.to_string()))
    }

    /// SHA256withRSA, PKCS#1 v1.5, standard base64. Constant-time (ring) or blinded (`rsa`), so
    /// signing time does not leak the key.
    pub fn sign_sha256_base64(&self, message: &[u8]) -> Result<String, PayError> {
        if let Some(kp) = &self.ring {
            let mut sig = vec![0u8; kp.public().modulus_len()];
            kp.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .map_err(|_| PayError::InvalidKey("signing failed".into()))?;
            return Ok(B64.encode(sig));
        }
        let digest = Sha256::digest(message);
        self.rsa
            .sign_with_rng(&mut OsRng, Pkcs1v15Sign::new::<Sha256>(), &digest)
            .map(|sig| B64.encode(sig))
            .map_err(|e| PayError::InvalidKey(format!("signing failed: {e}")))
    }
}

impl PublicKey {
    pub fn from_pem(text: &str) -> Result<Self, PayError> {
        let text = text.trim();
        let parsed = if text.contains("BEGIN RSA PUBLIC KEY") {
            RsaPublicKey::from_pkcs1_pem(text).map_err(|e| PayError::InvalidKey(e.to_string()))
        } else if text.contains("BEGIN") {
            RsaPublicKey::from_public_key_pem(text).map_err(|e| PayError::InvalidKey(e.to_string()))
        } else {
            let der = B64
                .decode(strip_whitespace(text))
                .map_err(|e| PayError::InvalidKey(format!("bare key is not base64: {e}")))?;
            RsaPublicKey::from_public_key_der(&der)
                .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
                .map_err(|e| PayError::InvalidKey(e.to_string()))
        };
        parsed.map(Self::new)
    }

    fn new(rsa: RsaPublicKey) -> Self {
        let ring = (rsa.n().bits() >= 2048).then(|| {
            Arc::new(ring::signature::RsaPublicKeyComponents {
                n: rsa.n().to_bytes_be(),
                e: rsa.e().to_bytes_be(),
            })
        });
        Self { rsa, ring }
    }

    /// SPKI PEM (`BEGIN PUBLIC KEY`).
    pub fn to_pem(&self) -> Result<String, PayError> {
        self.rsa
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| PayError::InvalidKey(e.to_string()))
    }

    /// Verifies a base64 SHA256withRSA signature. Any failure (bad base64, wrong length, wrong
    /// key, altered message) is `SignatureInvalid`; rsa compares the padded digest in constant time.
    pub fn verify_sha256_base64(
        &self,
        message: &[u8],
        signature_b64: &str,
    ) -> Result<(), PayError> {
        let sig = B64
            .decode(signature_b64.trim())
            .map_err(|_| PayError::SignatureInvalid)?;
        if let Some(c) = &self.ring {
            return c
                .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
                .map_err(|_| PayError::SignatureInvalid);
        }
        let digest = Sha256::digest(message);
        self.rsa
            .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
            .map_err(|_| PayError::SignatureInvalid)
    }
}

fn strip_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Unix seconds. Injected wherever a timestamp window is checked, so tests can move time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_unix(&self) -> i64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }
}

/// A clock that stands still until told otherwise.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    pub fn new(now_unix: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(now_unix)))
    }

    pub fn set(&self, now_unix: i64) {
        self.0.store(now_unix, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const KEY: &str = include_str!("../tests/fixtures/alipay_app.key.pem");

    #[test]
    fn bare_base64_key_body_loads_like_the_pem() {
        let pem = PrivateKey::from_pem(KEY).unwrap();
        let body: String = KEY.lines().filter(|l| !l.starts_with("-----")).collect();
        let bare = PrivateKey::from_pem(&body).unwrap();
        assert_eq!(pem.public_key(), bare.public_key());
        let pub_pem = pem.public_key().to_pem().unwrap();
        let pub_body: String = pub_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(PublicKey::from_pem(&pub_body).unwrap(), pem.public_key());
    }

    #[test]
    fn signature_verifies_and_a_changed_message_does_not() {
        let key = PrivateKey::from_pem(KEY).unwrap();
        let sig = key.sign_sha256_base64(b"hello").unwrap();
        key.public_key()
            .verify_sha256_base64(b"hello", &sig)
            .unwrap();
        assert!(
            key.public_key()
                .verify_sha256_base64(b"hellO", &sig)
                .is_err()
        );
        assert!(
            key.public_key()
                .verify_sha256_base64(b"hello", "%%%")
                .is_err()
        );
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let key = PrivateKey::from_pem(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
    }

    #[test]
    fn ring_and_rsa_signatures_are_the_same_bytes() {
        // PKCS#1 v1.5 is deterministic: both paths must produce the identical signature.
        let key = PrivateKey::from_pem(KEY).unwrap();
        assert!(key.ring.is_some());
        let fast = key
            .sign_sha256_base64(b"appid\n1700000000\nnonce\nprepay_id=wx1\n")
            .unwrap();
        let slow = PrivateKey {
            rsa: key.rsa.clone(),
            ring: None,
        }
        .sign_sha256_base64(b"appid\n1700000000\nnonce\nprepay_id=wx1\n")
        .unwrap();
        assert_eq!(fast, slow);
    }
}
