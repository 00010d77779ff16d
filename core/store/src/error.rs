//! SQLite, I/O, key and crypto failures mapped to typed [`StoreError`]s.

use crate::{ENOSPC, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB};
use pos_rules::crypto::KeyError;
use pos_rules::store::StoreError;

/// The error's kind, for the logs (its details may name app data or paths).
pub(crate) fn kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Locked => "locked",
        StoreError::DiskFull => "disk_full",
        StoreError::Io(_) => "io",
        StoreError::WrongKey => "wrong_key",
        StoreError::Tampered { .. } => "tampered",
        StoreError::RolledBack { .. } => "rolled_back",
        StoreError::NewerSchema { .. } => "newer_schema",
        StoreError::Corrupt { .. } => "corrupt",
        StoreError::KeyProviderFailed { .. } => "key_provider_failed",
    }
}

pub(crate) fn tampered(seq: u64, what: &str) -> StoreError {
    StoreError::Tampered {
        seq,
        what: what.to_owned(),
    }
}

pub(crate) fn corrupt(detail: &str) -> StoreError {
    StoreError::Corrupt {
        detail: detail.to_owned(),
    }
}

pub(crate) fn closed() -> StoreError {
    StoreError::Io("the store is closed".into())
}

pub(crate) fn io(what: &str, e: &std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(ENOSPC) {
        return StoreError::DiskFull;
    }
    StoreError::Io(format!("cannot {what}: {}", e.kind()))
}

pub(crate) fn key_error(e: KeyError) -> StoreError {
    match e {
        KeyError::Unavailable => StoreError::Locked,
        KeyError::Failed(detail) => StoreError::KeyProviderFailed { detail },
    }
}

pub(crate) fn crypto_failure(e: pos_rules::crypto::CryptoError) -> StoreError {
    StoreError::Io(format!("cryptography failed: {e}"))
}

/// Maps a SQLite error: a full disk and a corrupt file are typed; the rest
/// is I/O. SQLite's messages name tables and columns, never values.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
            match code {
                SQLITE_FULL => StoreError::DiskFull,
                SQLITE_CORRUPT | SQLITE_NOTADB => corrupt(d.message()),
                _ => StoreError::Io(format!("sqlite: {}", d.message())),
            }
        }
        sqlx::Error::Io(io_err) => io("use the store file", io_err),
        _ => StoreError::Io(e.to_string()),
    }
}
