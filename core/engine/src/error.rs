//! The public error of the engine: few variants, each one something the app
//! can act on. Internal errors (money, policy, storage, ids) are mapped here
//! in one place. Messages never carry card data or contact details: the
//! types they come from redact them.

use crate::lifecycle::PaymentId;
use crate::money::MoneyError;
use crate::requests::Route;
use crate::rules::{ActionRefused, Refusal};
use crate::store::StoreError;

/// What went wrong, as the app sees it. When an operation fails, nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PosError {
    /// The engine configuration is unusable (empty device id, unknown currency...).
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
    /// An argument from the app is unusable.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// The policy is inconsistent (negative limit, per-order above device limit...).
    #[error("invalid policy: {reason}")]
    InvalidPolicy { reason: String },
    /// An offline card payment was refused by a rule; `refusal` names the
    /// rule (`refusal.rule_id()`) and carries the figures.
    #[error("offline payment refused ({}): {refusal}", refusal.rule_id())]
    Refused { refusal: Refusal },
    /// The payment requires online and the engine is offline (B1).
    #[error("this payment requires online processing and the service is unreachable")]
    OnlineRequired,
    /// Connectivity changed between the start of the payment and its
    /// confirmation: nothing was taken; begin again to confirm the new route (B1).
    #[error("the payment route changed from {decided:?} to {now:?}; begin the payment again")]
    RouteChanged { decided: Route, now: Route },
    /// Online authorization needs the gateway, which is not configured.
    #[error("online authorization is not available: no gateway is configured")]
    OnlineUnavailable,
    /// The card read did not come from a reader this device remembers: no
    /// reader serial, a reader never paired (or forgotten), or a signature
    /// that the remembered reader's key does not verify. Pair the reader
    /// (online) and read the card again; nothing was taken.
    #[error("the card was not read by a paired reader ({reason})")]
    ReaderNotPaired { reason: String },
    /// The card read does not belong to this payment: the reader sealed it
    /// for another payment id, device, amount, currency or challenge, or
    /// its summary differs from what the reader signed. Nothing was taken.
    #[error("the card read does not match this payment ({field})")]
    CardReadMismatch { field: String },
    /// The store belongs to another merchant account than the one the app
    /// opened it for (`EngineConfig::account`): its payments are forwarded
    /// under their own account only. Open it for its own account (or
    /// without one) to forward them, then `switch_account` (B7).
    #[error("this store belongs to merchant account {stored}, not {configured}")]
    AccountMismatch { stored: String, configured: String },
    /// A payment with this id already exists (B2: ids are never reused).
    #[error("payment {payment_id} already exists")]
    DuplicatePayment { payment_id: String },
    /// No such order, payment or receipt.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The operation needs a signed-in staff member.
    #[error("no staff member is signed in")]
    NotSignedIn,
    /// A guarded action (logout, location switch, reset) was refused (R13).
    #[error("{refusal}")]
    ActionRefused { refusal: ActionRefused },
    /// The payment cannot make this move (a terminal state, a passed deadline...).
    #[error("invalid payment transition: {reason}")]
    InvalidTransition { reason: String },
    /// The platform keystore cannot give the key (B8); nothing was lost.
    #[error("the store is locked")]
    StoreLocked,
    /// The key the platform gave does not open this store; nothing changed.
    #[error("the key does not open this store")]
    WrongKey,
    /// The store was tampered with, rolled back, written by a newer version,
    /// or is corrupt. It was kept as it is; see docs/store-recovery.md.
    #[error("the store cannot be trusted: {reason}")]
    StoreIntegrity {
        reason: String,
        /// For a store rolled back to an older copy: the records it holds
        /// and the records the rollback anchor says were written.
        rolled_back: Option<RolledBack>,
    },
    /// The store could not record the operation (disk full, I/O); nothing changed.
    #[error("storage error: {reason}")]
    Storage { reason: String },
    /// The engine was closed; create a new one.
    #[error("the engine is closed")]
    Closed,
    /// The app's order source failed while filling the inbox (R18); the
    /// inbox keeps what it had.
    #[error("the order source failed: {reason}")]
    OrderSourceFailed { reason: String },
    /// A bug or an environment failure (a thread could not start...).
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl From<MoneyError> for PosError {
    fn from(e: MoneyError) -> Self {
        PosError::InvalidInput {
            reason: e.to_string(),
        }
    }
}

impl From<Refusal> for PosError {
    fn from(refusal: Refusal) -> Self {
        PosError::Refused { refusal }
    }
}

/// The figures of a store rolled back to an older copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// The last record the store holds.
    pub records_found: u64,
    /// The last record the rollback anchor says was written.
    pub records_written: u64,
}

/// A locked keystore (B8) and a wrong key are their own states; a store that
/// was tampered with, rolled back, written by a newer version or is corrupt
/// is `StoreIntegrity`; a full disk, an I/O error or a failing key provider
/// is `Storage` (`docs/store-recovery.md`). Store messages carry record
/// numbers and SQLite's text, never record contents.
impl From<StoreError> for PosError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Locked => PosError::StoreLocked,
            StoreError::WrongKey => PosError::WrongKey,
            StoreError::RolledBack { found, expected } => PosError::StoreIntegrity {
                reason: e.to_string(),
                rolled_back: Some(RolledBack {
                    records_found: found,
                    records_written: expected,
                }),
            },
            other @ (StoreError::Tampered { .. }
            | StoreError::NewerSchema { .. }
            | StoreError::Corrupt { .. }) => PosError::StoreIntegrity {
                reason: other.to_string(),
                rolled_back: None,
            },
            other @ (StoreError::DiskFull
            | StoreError::Io(_)
            | StoreError::KeyProviderFailed { .. }) => PosError::Storage {
                reason: other.to_string(),
            },
        }
    }
}

impl PosError {
    /// The variant's name, e.g. `"InvalidInput"`: the name the FFI's
    /// `PosError` gives the same case (scenario transcripts print it).
    pub fn kind(&self) -> &'static str {
        match self {
            PosError::InvalidConfig { .. } => "InvalidConfig",
            PosError::InvalidInput { .. } => "InvalidInput",
            PosError::InvalidPolicy { .. } => "InvalidPolicy",
            PosError::Refused { .. } => "Refused",
            PosError::OnlineRequired => "OnlineRequired",
            PosError::RouteChanged { .. } => "RouteChanged",
            PosError::OnlineUnavailable => "OnlineUnavailable",
            PosError::ReaderNotPaired { .. } => "ReaderNotPaired",
            PosError::CardReadMismatch { .. } => "CardReadMismatch",
            PosError::AccountMismatch { .. } => "AccountMismatch",
            PosError::DuplicatePayment { .. } => "DuplicatePayment",
            PosError::NotFound { .. } => "NotFound",
            PosError::NotSignedIn => "NotSignedIn",
            PosError::ActionRefused { .. } => "ActionRefused",
            PosError::InvalidTransition { .. } => "InvalidTransition",
            PosError::StoreLocked => "StoreLocked",
            PosError::WrongKey => "WrongKey",
            PosError::StoreIntegrity { .. } => "StoreIntegrity",
            PosError::Storage { .. } => "Storage",
            PosError::Closed => "Closed",
            PosError::OrderSourceFailed { .. } => "OrderSourceFailed",
            PosError::Internal { .. } => "Internal",
        }
    }

    pub(crate) fn duplicate(id: &PaymentId) -> Self {
        PosError::DuplicatePayment {
            payment_id: id.as_str().to_owned(),
        }
    }
}

pub type Result<T, E = PosError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// `kind` is the name `Debug` prints first, for every variant built here.
    #[test]
    fn a_kind_is_its_variant_name() {
        let reason = || "r".to_owned();
        let all = [
            PosError::InvalidConfig { reason: reason() },
            PosError::InvalidInput { reason: reason() },
            PosError::OnlineRequired,
            PosError::NotFound { what: reason() },
            PosError::NotSignedIn,
            PosError::StoreLocked,
            PosError::WrongKey,
            PosError::Storage { reason: reason() },
            PosError::Closed,
            PosError::OrderSourceFailed { reason: reason() },
            PosError::Internal { reason: reason() },
        ];
        for e in all {
            assert!(format!("{e:?}").starts_with(e.kind()), "{e:?}");
        }
    }
}
