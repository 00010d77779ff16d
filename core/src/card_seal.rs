//! Card data sealed for the processor (SPEC section 4).
//!
//! The reader encrypts what it read from the card to the processor's public
//! key before it leaves the reader; the phone stores and forwards the sealed
//! bytes and holds no key that opens them. This module is the *sealing* side
//! only (used by the simulated reader, and by tests). Opening needs the
//! processor's private key and lives in the processor (`pos-sim` here).
//!
//! Format, version 1 (hybrid public-key encryption, in the spirit of HPKE
//! base mode):
//!
//! ```text
//! 0x01 || eph_pub (32) || nonce (12) || AES-256-GCM(ciphertext || tag 16)
//!
//! shared = X25519(eph_priv, processor_pub)
//! key    = HKDF-SHA256(salt = eph_pub || processor_pub, ikm = shared,
//!                      info = "pos-core card data v1") -> 32 bytes
//! aad    = 0x01 || eph_pub || processor_pub
//! plaintext = JSON CardSecret { pan, expiry }
//! ```
//!
//! The ephemeral key is fresh for every card read, so two reads of the same
//! card never give the same bytes.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// First byte of a sealed blob: the format version.
pub const SEAL_VERSION: u8 = 1;
/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// HKDF `info` for the content key.
pub const HKDF_INFO: &[u8] = b"pos-core card data v1";
/// Header length: version, ephemeral public key, nonce.
pub const HEADER_LEN: usize = 1 + PUBLIC_KEY_LEN + NONCE_LEN;

/// What the card gave, before sealing. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSecret {
    /// The primary account number, digits only.
    pub pan: String,
    /// Expiry as `MMYY`.
    pub expiry: String,
}

impl fmt::Debug for CardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardSecret(<redacted>)")
    }
}

/// The processor's public key that card data is sealed to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessorKey(pub [u8; PUBLIC_KEY_LEN]);

impl fmt::Debug for ProcessorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessorKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Why sealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no randomness available")]
    Random,
    #[error("the processor key is not a valid X25519 public key")]
    BadKey,
    #[error("card data could not be encoded")]
    Encode,
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// Derives the AES-256-GCM key both sides use. Public so that the opening
/// side (the processor) derives it the same way from its own X25519 result.
pub fn content_key(
    shared_secret: &[u8],
    eph_pub: &[u8; PUBLIC_KEY_LEN],
    processor_pub: &[u8; PUBLIC_KEY_LEN],
) -> [u8; 32] {
    let mut salt = [0u8; 2 * PUBLIC_KEY_LEN];
    salt[..PUBLIC_KEY_LEN].copy_from_slice(eph_pub);
    salt[PUBLIC_KEY_LEN..].copy_from_slice(processor_pub);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared_secret);
    let mut key = [0u8; 32];
    // Expanding 32 bytes from SHA-256 cannot fail (limit is 255 × 32).
    if let Ok(okm) = prk.expand(&[HKDF_INFO], Len32) {
        let _ = okm.fill(&mut key);
    }
    key
}

/// The associated data both sides bind into the AEAD.
pub fn aad(eph_pub: &[u8; PUBLIC_KEY_LEN], processor_pub: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut a = Vec::with_capacity(1 + 2 * PUBLIC_KEY_LEN);
    a.push(SEAL_VERSION);
    a.extend_from_slice(eph_pub);
    a.extend_from_slice(processor_pub);
    a
}

/// Seals `secret` to `processor`. The result is what the reader hands the
/// phone (`CardRead::sealed_card_data`).
pub fn seal(secret: &CardSecret, processor: &ProcessorKey) -> Result<Vec<u8>, SealError> {
    let rng = SystemRandom::new();
    let eph = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| SealError::Random)?;
    let eph_pub_bytes = eph.compute_public_key().map_err(|_| SealError::Random)?;
    let mut eph_pub = [0u8; PUBLIC_KEY_LEN];
    eph_pub.copy_from_slice(eph_pub_bytes.as_ref());
    let peer = UnparsedPublicKey::new(&X25519, processor.0);
    let mut key = agreement::agree_ephemeral(eph, &peer, |shared| {
        content_key(shared, &eph_pub, &processor.0)
    })
    .map_err(|_| SealError::BadKey)?;
    let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| SealError::BadKey)?;
    crate::crypto::wipe(&mut key);
    let sealing = LessSafeKey::new(unbound);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
    let mut body = serde_json::to_vec(secret).map_err(|_| SealError::Encode)?;
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(&eph_pub, &processor.0)),
            &mut body,
        )
        .map_err(|_| SealError::Encode)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    crate::crypto::wipe(&mut body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_key() -> ProcessorKey {
        // Any 32 bytes are a valid X25519 public key for ring except the
        // all-zero low-order points; use a fixed non-trivial one.
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(9);
        }
        ProcessorKey(k)
    }

    #[test]
    fn sealed_bytes_hide_the_pan_and_differ_each_time() {
        let s = CardSecret {
            pan: "4242424242424242".into(),
            expiry: "1230".into(),
        };
        let a = seal(&s, &some_key()).unwrap();
        let b = seal(&s, &some_key()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a[0], SEAL_VERSION);
        assert!(a.len() > HEADER_LEN + 16);
        let hay = String::from_utf8_lossy(&a);
        assert!(!hay.contains("4242424242424242"));
        assert_eq!(format!("{s:?}"), "CardSecret(<redacted>)");
    }

    #[test]
    fn a_low_order_key_is_refused() {
        let s = CardSecret {
            pan: "4242424242424242".into(),
            expiry: "1230".into(),
        };
        assert_eq!(seal(&s, &ProcessorKey([0; 32])), Err(SealError::BadKey));
    }
}
