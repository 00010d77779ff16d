//! The key provider the app implements (a foreign trait): the platform keeps
//! the key-encryption key that wraps the store's data key — a Keychain item
//! on iOS, an Android Keystore-protected secret on Android.

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
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyProviderError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        KeyProviderError::Failed { reason: e.reason }
    }
}

/// Implemented in Swift or Kotlin over the platform keystore.
#[uniffi::export(with_foreign)]
pub trait KeyProvider: Send + Sync {
    /// The current key-encryption key.
    fn key_encryption_key(&self) -> Result<KeyMaterial, KeyProviderError>;
}

pub(crate) struct KeyProviderAdapter(pub Arc<dyn KeyProvider>);

impl fmt::Debug for KeyProviderAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyProviderAdapter")
    }
}

impl crypto::KeyProvider for KeyProviderAdapter {
    fn key_encryption_key(&self) -> Result<crypto::Kek, crypto::KeyError> {
        let m = self.0.key_encryption_key().map_err(|e| match e {
            KeyProviderError::Unavailable => crypto::KeyError::Unavailable,
            KeyProviderError::Failed { reason } => crypto::KeyError::Failed(reason),
        })?;
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
}
