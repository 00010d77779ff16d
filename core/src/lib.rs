//! # pos-core
//!
//! The pure-Rust engine of POS Core: it decides whether a card payment may be
//! taken offline, keeps what was taken, and settles it when the service is
//! back. It knows nothing about the FFI; `bindings/ffi` wraps it for Swift and
//! Kotlin.
//!
//! The rules are "sans I/O": they take inputs (the trusted time, the
//! connectivity reports, a checkout request) and return decisions. Storage,
//! network and the card-reader radio sit behind traits.

pub mod account;
pub mod audit;
pub mod card_seal;
pub mod checkout;
pub mod clock;
pub mod connectivity;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod events;
pub mod forwarding;
pub mod gateway;
#[cfg(feature = "http-gateway")]
pub mod http_gateway;
pub mod inbox;
pub mod ledger;
pub mod lifecycle;
pub mod money;
pub mod policy;
pub mod reader_trust;
pub mod rules;
pub mod session;
pub mod sqlite_store;
pub mod store;

pub use engine::{EngineConfig, EngineStatus, PosEngine, VERSION};
pub use error::PosError;
pub use events::{EventListener, PosEvent, Subscription};
