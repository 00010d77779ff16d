//! # pos-rules
//!
//! The rules of POS Core without I/O: they take inputs (the trusted time,
//! connectivity reports, a checkout request, the records read back from a
//! store) and return decisions and records to write. No async runtime, no
//! database, no HTTP client and no radio: the engine (`pos-core`) drives
//! them, the store (`pos-store`) keeps their records, the reader
//! (`pos-reader`) and the processor simulator (`pos-sim`) share their
//! vocabulary without compiling SQLite.
//!
//! - Money and time: [`money`], [`clock`].
//! - Whether a payment may be taken offline: [`connectivity`], [`session`],
//!   [`policy`], [`rules`], [`account`].
//! - Cards and readers: [`card_seal`] (sealed card data bound to its
//!   payment), [`reader_trust`] (reader certificates), [`crypto`] (key
//!   types and primitives).
//! - What is kept: [`lifecycle`] (ids, the payment state machine, contacts,
//!   receipts), [`ledger`] (the state and its writes), [`audit`], [`inbox`].
//! - The seams the engine drives: [`store::Store`] (with [`store::MemoryStore`])
//!   and [`gateway::Gateway`] (with its wire types).

pub mod account;
pub mod audit;
pub mod card_seal;
pub mod clock;
pub mod connectivity;
pub mod crypto;
pub mod gateway;
pub mod inbox;
pub mod ledger;
pub mod lifecycle;
pub mod money;
pub mod policy;
pub mod reader_trust;
pub mod rules;
pub mod session;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
