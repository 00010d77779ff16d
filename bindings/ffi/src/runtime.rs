//! The library's tokio runtime: the one handle for background work and for
//! finishing a blocking constructor, and [`in_runtime`], which every async
//! export's body is wrapped in (by `#[pos_ffi_macros::export]`) so that it
//! is polled inside that runtime's context whatever executor polls it.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use crate::error::PosError;

/// The runtime the FFI layer uses for background work and to finish a
/// blocking constructor; started on first use, with one worker thread.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, PosError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pos-core-ffi")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| PosError::Internal {
        reason: format!("runtime: {e}"),
    })
}

/// A future polled inside the library's tokio runtime context, whatever
/// executor polls it (a Kotlin coroutine, a Swift task): what
/// `#[pos_ffi_macros::export]` wraps every async export's body in. Boxed, so
/// that each output type has one poll function rather than each future.
pub(crate) struct InRuntime<'a, T>(Pin<Box<dyn Future<Output = T> + Send + 'a>>);

impl<T> Future for InRuntime<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Without a runtime (it failed to start) the body reports it itself.
        let _guard = runtime().ok().map(|rt| rt.enter());
        self.0.as_mut().poll(cx)
    }
}

/// Wraps `f` in [`InRuntime`].
pub(crate) fn in_runtime<'a, T>(f: impl Future<Output = T> + Send + 'a) -> InRuntime<'a, T> {
    InRuntime(Box::pin(f))
}
