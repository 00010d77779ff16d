//! UniFFI bindings of `pos-core` for Swift and Kotlin.
//!
//! Mainly small wrappers: each FFI object holds the core object, each FFI
//! record or enum mirrors a core type with a `From` conversion, and every
//! export goes through `#[pos_ffi_macros::export]` so async methods run on
//! tokio. The logic lives in `pos-core`; nothing here decides anything.

// UniFFI lowers errors by value and cannot carry a boxed payload, so the
// `Refused` case (rule, kind and its figures) makes `PosError` large; the
// size only matters on the error path.
#![allow(clippy::result_large_err)]

uniffi::setup_scaffolding!();

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future polled inside the library's tokio runtime context, whatever
/// executor polls it (a Kotlin coroutine, a Swift task): what
/// `#[pos_ffi_macros::export]` wraps every async export's body in. Boxed, so
/// that each output type has one poll function rather than each future.
pub(crate) struct InRuntime<'a, T>(Pin<Box<dyn Future<Output = T> + Send + 'a>>);

impl<T> Future for InRuntime<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Without a runtime (it failed to start) the body reports it itself.
        let _guard = engine::runtime().ok().map(|rt| rt.enter());
        self.0.as_mut().poll(cx)
    }
}

/// Wraps `f` in [`InRuntime`].
pub(crate) fn in_runtime<'a, T>(f: impl Future<Output = T> + Send + 'a) -> InRuntime<'a, T> {
    InRuntime(Box::pin(f))
}

mod checkout;
mod engine;
mod error;
mod events;
mod gateway;
mod keys;
mod policy;
mod reader;
mod types;

pub use checkout::*;
pub use engine::*;
pub use error::*;
pub use events::*;
pub use gateway::*;
pub use keys::*;
pub use policy::*;
pub use reader::*;
pub use types::*;
