//! The key vocabulary shared by the store, the card seal and the reader
//! trust: key types that wipe themselves and never print, the platform's
//! [`KeyProvider`], and small primitives (random bytes, constant-time
//! comparison, hex). The store's envelope encryption (SPEC section 4) is
//! built on them in `pos-store`'s `keys` module:
//!
//! - A **key-encryption key** (KEK) is kept by the platform (Keychain on iOS,
//!   Keystore on Android, a file on desktops and in tests) and handed over by
//!   a [`KeyProvider`]. It never leaves the provider except to wrap or unwrap
//!   the data key, and is wiped from memory when the [`Kek`] is dropped.
//! - A random 256-bit **data key** is generated here, at store creation, and
//!   is only ever stored wrapped (AES-256-GCM) by the KEK. Rotating the KEK
//!   re-wraps the data key; records are not rewritten.
//! - From the data key, HKDF-SHA256 derives one key per purpose: sealing
//!   records (AES-256-GCM, random 96-bit nonces), the MAC chain over the
//!   journal (HMAC-SHA256), the record-key index, the store header MAC and
//!   the rollback anchor MAC.
//!
//! Key material is zeroed when dropped where our own types hold it
//! ([`SecretKey`], [`Kek`], the data key). ring's own key schedules cannot be
//! wiped from outside; they live as long as the open store. No key material
//! ever appears in `Debug`, in a log line or in an error.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};

/// Length of every symmetric key here, in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// Length of a MAC (HMAC-SHA256 output), in bytes.
pub const MAC_LEN: usize = 32;

/// Length of a random identifier (store id, key id), in bytes.
pub const ID_LEN: usize = 16;

/// Overwrites `buf` with zeros in a way the optimiser does not remove
/// (best effort without `unsafe`: the zeroed buffer is passed through
/// [`std::hint::black_box`] and a compiler fence).
pub fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        *b = 0;
    }
    std::hint::black_box(&*buf);
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// 32 bytes of key material, zeroed on drop, never printed.
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Takes ownership of raw key bytes (the caller should wipe its copy).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = SecretKey([0; KEY_LEN]);
        fill_random(&mut k.0)?;
        Ok(k)
    }

    /// The key bytes, for wrapping or key derivation only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A key-encryption key handed over by a [`KeyProvider`], with the
/// identifier the provider gives it (recorded beside the wrapped data key so
/// a rotation can be told from a wrong key). Wiped on drop.
pub struct Kek {
    id: String,
    key: SecretKey,
}

impl Kek {
    /// `id` names the key (not secret: it is stored in clear); `key` is the
    /// 256-bit key itself.
    pub fn new(id: impl Into<String>, key: SecretKey) -> Self {
        Kek { id: id.into(), key }
    }

    /// The key's identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key itself, for wrapping the store's data key only.
    pub fn secret(&self) -> &SecretKey {
        &self.key
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a [`KeyProvider`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key exists but cannot be used now (a locked phone, B8). The
    /// store reports [`crate::store::StoreError::Locked`] and keeps everything.
    #[error("the key is not available now")]
    Unavailable,
    /// The provider failed (no key, a keystore error...). The message must not
    /// carry key material.
    #[error("key provider failure: {0}")]
    Failed(String),
}

/// Where the platform keeps the key-encryption key (a foreign trait in the
/// bindings: Keychain on iOS, Keystore on Android).
///
/// A provider may also keep the store's **rollback anchor**: a small opaque
/// value (the position and MAC of the journal's last record, itself MACed)
/// that the store saves after every write and checks at open. Kept somewhere
/// an attacker who copies the device's files cannot roll back together with
/// the database (a Keychain item, a hardware-backed counter...), it reveals a
/// store replaced by an older copy of itself. The default keeps nothing:
/// rollback is then detected only within one copy of the file.
///
/// Methods are called from the store's async tasks and should return
/// promptly. They must not call back into the store.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The current key-encryption key, or [`KeyError::Unavailable`] while the
    /// device is locked.
    fn key_encryption_key(&self) -> Result<Kek, KeyError>;

    /// Whether [`save_anchor`](Self::save_anchor) keeps what it is given.
    /// When true, a store whose anchor has disappeared is refused.
    fn keeps_anchors(&self) -> bool {
        false
    }

    /// Keeps `anchor` (opaque bytes) for the store `store_id`, replacing the
    /// previous one. Default: keeps nothing.
    fn save_anchor(&self, store_id: &str, anchor: &[u8]) -> Result<(), KeyError> {
        let _ = (store_id, anchor);
        Ok(())
    }

    /// The last anchor saved for `store_id`, if any. Default: none.
    fn load_anchor(&self, store_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        let _ = store_id;
        Ok(None)
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The bytes of a hexadecimal string (either case); `None` for an odd
/// length or a non-hex character.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A cryptographic operation failed. Says which, never with key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// A ciphertext did not open: wrong key, wrong associated data, or edited.
    #[error("authentication failed")]
    Authentication,
    /// A key could not be set up.
    #[error("key setup failed")]
    KeySetup,
}

/// Fills `buf` from the operating system's generator.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| CryptoError::Random)
}

/// Random bytes.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut a = [0u8; N];
    fill_random(&mut a)?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wipe_zeroes_the_buffer() {
        let mut b = [7u8; 40];
        wipe(&mut b);
        assert!(b.iter().all(|x| *x == 0));
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
