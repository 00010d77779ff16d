//! A key provider a test can lock, as a phone locks its keystore (B8).

use std::sync::atomic::{AtomicBool, Ordering};

use pos_core::crypto::{FileKeyProvider, Kek, KeyError, KeyProvider};

/// A [`FileKeyProvider`] whose key and rollback anchors become
/// unavailable while locked.
#[derive(Debug)]
pub struct LockableKeys {
    inner: FileKeyProvider,
    locked: AtomicBool,
}

impl LockableKeys {
    pub fn new(inner: FileKeyProvider, locked: bool) -> Self {
        LockableKeys {
            inner,
            locked: AtomicBool::new(locked),
        }
    }

    pub fn set_locked(&self, locked: bool) {
        self.locked.store(locked, Ordering::SeqCst);
    }

    fn available(&self) -> Result<(), KeyError> {
        if self.locked.load(Ordering::SeqCst) {
            Err(KeyError::Unavailable)
        } else {
            Ok(())
        }
    }
}

impl KeyProvider for LockableKeys {
    fn key_encryption_key(&self) -> Result<Kek, KeyError> {
        self.available()?;
        self.inner.key_encryption_key()
    }

    fn keeps_anchors(&self) -> bool {
        self.inner.keeps_anchors()
    }

    fn save_anchor(&self, store_id: &str, anchor: &[u8]) -> Result<(), KeyError> {
        self.available()?;
        self.inner.save_anchor(store_id, anchor)
    }

    fn load_anchor(&self, store_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        self.available()?;
        self.inner.load_anchor(store_id)
    }
}
