//! # pos-core
//!
//! The engine of POS Core, the crate an app embeds (through `bindings/ffi`
//! for Swift and Kotlin): [`PosEngine`] decides whether a card payment may
//! be taken offline, keeps what was taken, and settles it when the service
//! is back.
//!
//! The decisions are in `pos-rules` (sans I/O) and the encrypted SQLite
//! store in `pos-store`; both are re-exported here under their module
//! names, so `pos_core::money::Money` or `pos_core::sqlite_store::SqliteStore`
//! is all an app needs. This crate adds the I/O around them: the façade and
//! its commit path ([`engine`]), the checkout ([`checkout`]), the forwarding
//! engine ([`forwarding`]), events ([`events`]), the error type ([`error`])
//! and the built-in HTTP gateway.

pub mod checkout;
pub mod engine;
pub mod error;
pub mod events;
pub mod forwarder;
pub mod forwarding;
#[cfg(feature = "http-gateway")]
pub mod http_gateway;
mod open;
pub mod requests;

pub use pos_rules::{
    account, audit, card_seal, clock, connectivity, gateway, inbox, ledger, lifecycle, money,
    policy, reader_trust, rules, session, store,
};
pub use pos_store as sqlite_store;

/// Key types and primitives ([`pos_rules::crypto`]) and the store's key
/// provider for desktops and tests ([`pos_store::keys::FileKeyProvider`]).
pub mod crypto {
    pub use pos_rules::crypto::*;
    pub use pos_store::keys::FileKeyProvider;
}

pub use engine::{EngineConfig, EngineStatus, PosEngine, VERSION};
pub use error::PosError;
pub use events::{EventListener, PosEvent, Subscription};
