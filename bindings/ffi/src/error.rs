//! The error Swift and Kotlin see: a `PosException` subclass per variant in
//! Kotlin, an `Error` enum in Swift. Mirrors `pos_core::PosError`.

/// Every error of the library. Messages never carry card data or contacts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum PosError {
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    #[error("the engine is closed")]
    Closed,
    #[error("internal error: {reason}")]
    Internal { reason: String },
    /// A foreign callback (listener, provider) failed unexpectedly.
    #[error("callback failed: {reason}")]
    Callback { reason: String },
}

impl From<pos_core::PosError> for PosError {
    fn from(e: pos_core::PosError) -> Self {
        use pos_core::PosError as C;
        match e {
            C::InvalidConfig { reason } => PosError::InvalidConfig { reason },
            C::InvalidInput { reason } => PosError::InvalidInput { reason },
            C::Closed => PosError::Closed,
            C::Internal { reason } => PosError::Internal { reason },
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for PosError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        PosError::Callback { reason: e.reason }
    }
}
