//! UniFFI bindings of `pos-core` for Swift and Kotlin.
//!
//! Mainly small wrappers: each FFI object holds the core object, each FFI
//! record or enum mirrors a core type with a `From` conversion, and every
//! export goes through `#[pos_ffi_macros::export]` so async methods run on
//! tokio. The logic lives in `pos-core` and `pos-reader`; nothing here
//! decides anything.

// UniFFI lowers errors by value and cannot carry a boxed payload, so the
// `Refused` case (rule, kind and its figures) makes `PosError` large; the
// size only matters on the error path.
#![allow(clippy::result_large_err)]
// Every public item is exported to Swift and Kotlin, and UniFFI carries its
// doc comment into the generated code: none may go undocumented.
#![warn(missing_docs)]

uniffi::setup_scaffolding!();

mod checkout;
mod engine;
mod error;
mod events;
mod gateway;
mod inbox;
mod keys;
mod logging;
mod money;
mod policy;
mod reader;
mod runtime;
#[cfg(feature = "simulator")]
mod simulator;
mod types;

pub use checkout::*;
pub use engine::*;
pub use error::*;
pub use events::*;
pub use gateway::*;
pub use inbox::*;
pub use keys::*;
pub use logging::{set_log_sink, LogLevel, LogRecord, LogSink};
pub use money::*;
pub use policy::*;
pub use reader::*;
#[cfg(feature = "simulator")]
pub use simulator::*;
pub use types::*;
