//! The key provider the app implements (a foreign trait): the platform keeps
//! the key-encryption key that wraps the store's data key — a Keychain item
//! on iOS, an Android Keystore-protected secret on Android — and the store's
//! rollback anchor, somewhere a copy of the data folder does not roll back.

use std::fmt;
use std::sync::Arc;

use pos_core::crypto;

/// A 256-bit key-encryption key and its identifier.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct KeyMaterial {
    /// Names the key (changes when the key is rotated).
    pub key_id: String,
    /// Exactly 32 bytes.
    pub key: Vec<u8>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why the provider cannot give the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum KeyProviderError {
    /// The key exists but cannot be used now (the phone is locked): the
    /// engine reports `PosError.StoreLocked` and keeps everything (B8).
    #[error("the key is not available now")]
    Unavailable,
    /// Anything else (no key, a keystore error). Never put key material here.
    #[error("key provider failure: {reason}")]
    Failed {
        /// What failed; never key material.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyProviderError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        KeyProviderError::Failed { reason: e.reason }
    }
}

/// Implemented in Swift or Kotlin over the platform keystore.
///
/// Besides the key, the provider keeps the store's **rollback anchor**: a
/// few opaque bytes per store (under 100), MACed by the store, that name
/// the journal's last record. At open, a store older than its anchor (a
/// restored copy of the files, a deleted `-wal`) is refused with
/// `StoreIntegrity`. This only works if the anchor is kept where a copy of
/// the app's data folder does not bring back an older one: next to the key
/// in the Keychain or under the Keystore, never in the data folder.
#[uniffi::export(foreign)]
pub trait KeyProvider: Send + Sync {
    /// The current key-encryption key.
    fn key_encryption_key(&self) -> Result<KeyMaterial, KeyProviderError>;
    /// Keeps `anchor` for the store `store_id` (32 lowercase hex
    /// characters), replacing the previous one atomically: after a crash
    /// the old or the new anchor is there, never a mix. Called after
    /// commits, on the store's own thread, at most every 100 ms while
    /// writes come, and before close returns. A failure is reported
    /// (`PosEvent.AnchorSaveFailed`, `EngineStatus.anchor`); the commit
    /// itself has already succeeded.
    fn save_anchor(&self, store_id: String, anchor: Vec<u8>) -> Result<(), KeyProviderError>;
    /// The anchor last saved for `store_id`, or none if none was ever
    /// saved. Any failure to read it must throw (`Unavailable` while the
    /// device is locked, `Failed` otherwise), never return none: the open
    /// then fails with that error, whereas a missing anchor makes an
    /// anchored store look tampered with, and lets one that predates
    /// anchors open unchecked.
    fn load_anchor(&self, store_id: String) -> Result<Option<Vec<u8>>, KeyProviderError>;
}

fn key_error(e: KeyProviderError) -> crypto::KeyError {
    match e {
        KeyProviderError::Unavailable => crypto::KeyError::Unavailable,
        KeyProviderError::Failed { reason } => crypto::KeyError::Failed(reason),
    }
}

pub(crate) struct KeyProviderAdapter(pub Arc<dyn KeyProvider>);

impl fmt::Debug for KeyProviderAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyProviderAdapter")
    }
}

impl crypto::KeyProvider for KeyProviderAdapter {
    fn key_encryption_key(&self) -> Result<crypto::Kek, crypto::KeyError> {
        let m = self.0.key_encryption_key().map_err(key_error)?;
        let mut m = m;
        let bytes: [u8; crypto::KEY_LEN] = m.key.as_slice().try_into().map_err(|_| {
            crypto::KeyError::Failed(format!(
                "the key must be {} bytes, got {}",
                crypto::KEY_LEN,
                m.key.len()
            ))
        })?;
        crypto::wipe(&mut m.key);
        if m.key_id.is_empty() || m.key_id.len() > 64 {
            return Err(crypto::KeyError::Failed(
                "key_id must be 1-64 characters".into(),
            ));
        }
        Ok(crypto::Kek::new(
            m.key_id,
            crypto::SecretKey::from_bytes(bytes),
        ))
    }

    /// Foreign providers must keep anchors: the trait has no opt-out.
    fn keeps_anchors(&self) -> bool {
        true
    }

    fn save_anchor(&self, store_id: &str, anchor: &[u8]) -> Result<(), crypto::KeyError> {
        self.0
            .save_anchor(store_id.to_owned(), anchor.to_vec())
            .map_err(key_error)
    }

    /// An error stays an error (the store refuses to open with it), so a
    /// keystore made to fail cannot pass for one that holds no anchor.
    fn load_anchor(&self, store_id: &str) -> Result<Option<Vec<u8>>, crypto::KeyError> {
        self.0.load_anchor(store_id.to_owned()).map_err(key_error)
    }
}
