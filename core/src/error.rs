//! The public error of the engine: few variants, each one something the app
//! can act on. Internal errors (money, policy, storage, clock) are mapped here
//! in one place, which also guarantees that no card data or contact detail is
//! carried into a message.

use crate::money::MoneyError;

/// What went wrong, as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PosError {
    /// The engine configuration is unusable (empty device id, unknown currency...).
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
    /// An argument from the app is unusable; nothing was changed.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// The engine was closed; create a new one.
    #[error("the engine is closed")]
    Closed,
    /// A bug or an environment failure (thread could not start, ...). Nothing was changed.
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

pub type Result<T, E = PosError> = std::result::Result<T, E>;
