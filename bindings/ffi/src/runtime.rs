//! The library's tokio runtime: the one handle for background work and for
//! finishing a blocking constructor, and [`in_runtime`], which every async
//! export's body is wrapped in (by `#[pos_ffi_macros::export]`) so that it
//! is polled inside that runtime's context whatever executor polls it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

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

/// Runs `f` to completion and returns its result, with one trip through
/// the caller's executor at most: each poll of an async export is a trip
/// through the foreign executor (a JNA callback and a coroutine resume on
/// the JVM), which costs more than the work between two awaits of a
/// checkout.
///
/// `f` is first polled here, on the caller's thread inside the runtime's
/// context, up to its first await that is not ready (a checkout's store
/// write): a call refused for its input or state then returns without a
/// thread switch, and a write is already sent to the store when the
/// caller's thread moves on. So `f` must do little before it first waits
/// (the caller may be a UI thread); work that may not, use
/// [`on_runtime_only`]. If `f` is not done, it continues as a task
/// of the library's runtime, which polls it again at once (the first poll's
/// waker is a no-op), and the caller's executor is woken once, when the task
/// is done. Dropping the returned future (a cancelled Kotlin coroutine;
/// Swift's generated code never drops it early) aborts the task at its next
/// await, as dropping `f` itself would; work already committed stays
/// committed. A panic, here or in the task, is `PosError::Internal`. The task
/// runs on the runtime's worker, where the caller's continuation may also be
/// resumed: nothing here may block it.
pub(crate) async fn on_runtime<T: Send + 'static>(
    f: impl Future<Output = Result<T, PosError>> + Send + 'static,
) -> Result<T, PosError> {
    run(f, true).await
}

/// [`on_runtime`] without the first poll on the caller's thread: for work
/// that may take long before it first waits (a whole export formatted from
/// memory).
pub(crate) async fn on_runtime_only<T: Send + 'static>(
    f: impl Future<Output = Result<T, PosError>> + Send + 'static,
) -> Result<T, PosError> {
    run(f, false).await
}

async fn run<T: Send + 'static>(
    f: impl Future<Output = Result<T, PosError>> + Send + 'static,
    start_here: bool,
) -> Result<T, PosError> {
    let rt = runtime()?;
    let mut f = Box::pin(f);
    if start_here {
        let first = {
            let _guard = rt.enter();
            let mut cx = Context::from_waker(Waker::noop());
            std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(&mut cx)))
        };
        match first {
            Ok(Poll::Ready(out)) => return out,
            Ok(Poll::Pending) => {}
            Err(_) => return Err(panicked()),
        }
    }
    let mut task = AbortOnDrop(rt.spawn(f));
    match (&mut task.0).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => Err(panicked()),
        Err(_) => Err(PosError::Internal {
            reason: "a library task was cancelled".to_owned(),
        }),
    }
}

/// What a panic in a library task is to the caller.
fn panicked() -> PosError {
    PosError::Internal {
        reason: "a library task panicked".to_owned(),
    }
}

/// Aborts the task when dropped (a no-op once it has finished).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Counts the polls its future gets: each one is a trip through the
    /// foreign executor when the future is an async export's.
    struct Counted<F> {
        inner: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.inner.as_mut().poll(cx)
        }
    }

    /// Ten awaits that each return to the executor, as a store write does.
    async fn ten_hops() -> Result<u32, PosError> {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        Ok(7)
    }

    /// A foreign executor: a runtime of its own, as a Kotlin dispatcher is
    /// not the library's.
    fn foreign() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_callers_executor_polls_a_task_on_the_runtime_at_most_twice() {
        let polls = Arc::new(AtomicUsize::new(0));
        let out = foreign().block_on(Counted {
            inner: Box::pin(on_runtime(ten_hops())),
            polls: polls.clone(),
        });
        assert_eq!(out.unwrap(), 7);
        assert!(polls.load(Ordering::SeqCst) <= 2, "{polls:?} polls");

        // Polled where the caller polls, each hop comes back to the caller.
        let hops = Arc::new(AtomicUsize::new(0));
        foreign()
            .block_on(Counted {
                inner: Box::pin(in_runtime(ten_hops())),
                polls: hops.clone(),
            })
            .unwrap();
        assert!(hops.load(Ordering::SeqCst) > 10, "{hops:?} polls");
    }

    #[test]
    fn work_that_never_waits_returns_on_the_callers_thread_in_one_poll() {
        let caller = std::thread::current().id();
        let polls = Arc::new(AtomicUsize::new(0));
        let ran_on = foreign()
            .block_on(Counted {
                inner: Box::pin(on_runtime(async { Ok(std::thread::current().id()) })),
                polls: polls.clone(),
            })
            .unwrap();
        assert_eq!(ran_on, caller);
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn work_that_must_not_start_here_runs_on_the_runtime_only() {
        let ran_on = foreign()
            .block_on(on_runtime_only(async {
                Ok(std::thread::current().name().map(str::to_owned))
            }))
            .unwrap();
        assert_eq!(ran_on.as_deref(), Some("pos-core-ffi"));
    }

    #[test]
    fn work_that_waits_starts_on_the_callers_thread_and_ends_on_the_runtime() {
        let caller = std::thread::current().id();
        let (before, after) = foreign()
            .block_on(on_runtime(async {
                let before = std::thread::current().id();
                tokio::task::yield_now().await;
                Ok((before, std::thread::current().name().map(str::to_owned)))
            }))
            .unwrap();
        assert_eq!(before, caller);
        assert_eq!(after.as_deref(), Some("pos-core-ffi"));
    }

    /// Says so when dropped: the task's future was released.
    struct Dropped(std::sync::mpsc::Sender<()>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    #[test]
    fn dropping_the_call_aborts_its_task_at_the_next_await() {
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let guard = Dropped(dropped_tx);
        let forever = async move {
            let _guard = guard;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
            Ok(())
        };
        foreign().block_on(async {
            let mut call = Box::pin(on_runtime(forever));
            // Polled until the task runs on the runtime, then given up.
            while started_rx.try_recv().is_err() {
                let _ = tokio::time::timeout(Duration::from_millis(5), call.as_mut()).await;
            }
        });
        dropped_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the task still runs after its caller gave up");
    }

    #[test]
    fn a_panicking_task_is_an_internal_error_not_a_crash() {
        // On the caller's thread, then in the runtime's task.
        for wait_first in [false, true] {
            let out: Result<(), PosError> = foreign().block_on(on_runtime(async move {
                if wait_first {
                    tokio::task::yield_now().await;
                }
                if true {
                    panic!("boom");
                }
                Ok(())
            }));
            assert!(
                matches!(out, Err(PosError::Internal { ref reason }) if reason.contains("panicked")),
                "{out:?}"
            );
        }
    }
}
