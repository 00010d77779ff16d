//! The log bridge: the library's `tracing` events, each formatted into one
//! line and handed to the app's [`LogSink`] (ADR 0013).
//!
//! A small subscriber on `tracing-core`, installed as the process's global
//! default by the first [`set_log_sink`]. It records events only (no spans).
//! Events of POS Core's crates (targets `pos_*`) pass at the level the app
//! chose; those of dependencies (SQLite's driver) only from `Warn` up.
//! Filtering is one atomic load ([`Bridge::enabled`]), and with no sink
//! `tracing`'s own global level is off, so a disabled event costs a
//! comparison.
//!
//! The sink is held in a lock only long enough to clone it: it is called
//! with no lock held, so it may log, or replace or clear itself, from
//! inside [`LogSink::log`]. What it logs from there is dropped (a sink that
//! logs would otherwise call itself without end); what another thread logs
//! meanwhile is delivered as usual.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Dispatch, Event, Level, LevelFilter, Metadata};

/// How severe a log record is, from the most to the least severe. Setting a
/// minimum level delivers that level and every more severe one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    /// Something failed and was not handled (a store that fails
    /// verification, a forwarding round stopped by a store error).
    Error,
    /// Something went wrong and was handled (a gateway error, a refused
    /// reader, a store that could not be opened).
    Warn,
    /// What happened, once per step: connectivity changes, forwarding
    /// rounds, store opens and snapshots, readers paired. The most verbose
    /// level a release build carries.
    Info,
    /// Detail for diagnosis: each forwarding attempt, probes, link
    /// events. Compiled out of release builds.
    Debug,
    /// The finest detail. Compiled out of release builds.
    Trace,
}

impl LogLevel {
    /// 1 (error) to 5 (trace), above [`LOG_OFF`].
    fn rank(self) -> u8 {
        match self {
            LogLevel::Error => 1,
            LogLevel::Warn => 2,
            LogLevel::Info => 3,
            LogLevel::Debug => 4,
            LogLevel::Trace => 5,
        }
    }
}

impl From<&Level> for LogLevel {
    fn from(level: &Level) -> Self {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }
}

/// One log line of the library, as the app's [`LogSink`] receives it. It
/// never holds card data, contacts, tokens or keys.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    /// How severe it is.
    pub level: LogLevel,
    /// Where it comes from: the Rust module path, such as
    /// `pos_core::forwarding` or `pos_store` (a tag for Android's `Log`, a
    /// category for `os.Logger`).
    pub target: String,
    /// What happened, followed by its fields as ` name=value`, such as
    /// `forwarding round finished attempts=3 approved=2 declined=1`.
    pub message: String,
    /// When it was logged: wall-clock time, in milliseconds since the Unix
    /// epoch.
    pub timestamp_ms: i64,
}

/// Receives the library's log records: implemented in Kotlin (over
/// `android.util.Log`) or Swift (over `os.Logger`), set with
/// [`set_log_sink`].
#[uniffi::export(foreign)]
pub trait LogSink: Send + Sync {
    /// One record. Called on the thread that logged it (an engine thread,
    /// a tokio worker, the caller's thread), possibly from several threads
    /// at once: hand the record to the platform logger and return. Never
    /// wait for the engine here (it may log while it holds its write lock),
    /// nor for a thread that may be calling `setLogSink`.
    /// What the library logs during this call, on this thread, is dropped.
    fn log(&self, record: LogRecord);
}

/// Sends the library's log records at `min_level` and more severe to
/// `sink`, replacing the previous sink; `None` stops logging. May be called
/// at any time, from any thread. Process-wide: one sink for every engine
/// and reader. Returns once no other thread is still handing a record to
/// the sink it replaced (or after 2 s, if one is stuck in `log`): after it,
/// that sink receives nothing more. Called from inside `log`, it does not
/// wait.
///
/// Debug and trace records exist only in builds with debug assertions; a
/// release build (the `mobile` profile) delivers info, warnings and errors.
/// If other Rust code in the process installed its own global `tracing`
/// subscriber first, that one keeps the records and the sink gets none.
#[pos_ffi_macros::export]
pub fn set_log_sink(min_level: LogLevel, sink: Option<Arc<dyn LogSink>>) {
    BRIDGE_INSTALLED.get_or_init(|| {
        tracing_core::dispatcher::set_global_default(Dispatch::new(Bridge)).is_ok()
    });
    let rank = if sink.is_some() {
        min_level.rank()
    } else {
        LOG_OFF
    };
    let new = sink.map(|sink| {
        Arc::new(Installed {
            sink,
            rank,
            delivering: AtomicUsize::new(0),
        })
    });
    let old = {
        let mut slot = SINK.lock().unwrap_or_else(|p| p.into_inner());
        MIN_RANK.store(rank, Ordering::Release);
        std::mem::replace(&mut *slot, new)
    };
    // Once this returns, the old sink gets nothing more: wait for the
    // records other threads are handing it (a sink that replaces itself
    // from inside `log` does not wait for itself).
    if let Some(old) = &old {
        if !IN_SINK.with(Cell::get) {
            // Bounded: a sink blocked on the thread that replaces it (a lock
            // they share) would otherwise wait for ever.
            let give_up = std::time::Instant::now() + SINK_DRAIN_LIMIT;
            let mut spins = 0u32;
            while old.delivering.load(Ordering::Acquire) > 0 && std::time::Instant::now() < give_up
            {
                spins += 1;
                if spins < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        }
    }
    // Released with no lock held: freeing a foreign sink calls into the app.
    drop(old);
    // `tracing` caches the subscriber's level (`max_level_hint`): re-read it.
    tracing_core::callsite::rebuild_interest_cache();
}

/// No record is delivered.
const LOG_OFF: u8 = 0;

/// How long `set_log_sink` waits for other threads to finish handing
/// records to the sink it replaces.
const SINK_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The rank ([`LogLevel::rank`]) of the least severe level delivered;
/// [`LOG_OFF`] when there is no sink.
static MIN_RANK: AtomicU8 = AtomicU8::new(LOG_OFF);

/// The app's sink with its level; locked only to replace or take it.
static SINK: Mutex<Option<Arc<Installed>>> = Mutex::new(None);

/// A sink as `set_log_sink` installed it.
struct Installed {
    sink: Arc<dyn LogSink>,
    /// The rank of the least severe level it was set with.
    rank: u8,
    /// Records being handed to it right now.
    delivering: AtomicUsize,
}

/// Counts one record being handed to a sink, until dropped.
struct Delivering(Arc<Installed>);

impl Drop for Delivering {
    fn drop(&mut self) {
        self.0.delivering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether [`Bridge`] became the global subscriber (set once).
static BRIDGE_INSTALLED: OnceLock<bool> = OnceLock::new();

thread_local! {
    /// This thread is inside [`LogSink::log`].
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`IN_SINK`] when the sink returns, or unwinds.
struct InSink;

impl InSink {
    fn enter() -> Option<InSink> {
        // `then`, not `then_some`: `then_some(InSink)` builds the guard even
        // when the flag was already set, and dropping it clears the flag.
        IN_SINK.with(|s| (!s.replace(true)).then(|| InSink))
    }
}

impl Drop for InSink {
    fn drop(&mut self) {
        IN_SINK.with(|s| s.set(false));
    }
}

/// Dependencies' events are delivered from this rank (warnings) up.
const DEPENDENCY_RANK: u8 = 2;

/// Whether an event with `metadata` is delivered at the current level.
fn delivered(metadata: &Metadata<'_>) -> bool {
    delivered_at(metadata, MIN_RANK.load(Ordering::Acquire))
}

/// Whether an event with `metadata` is delivered to a sink set at `min`.
fn delivered_at(metadata: &Metadata<'_>, min: u8) -> bool {
    let rank = LogLevel::from(metadata.level()).rank();
    let ours = metadata.target().starts_with("pos_");
    rank <= min && (ours || rank <= DEPENDENCY_RANK)
}

/// The global subscriber: formats events and hands them to [`SINK`].
struct Bridge;

impl Subscriber for Bridge {
    /// Spans are never recorded; events are filtered each time (the level
    /// can change).
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.is_event() {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && delivered(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match MIN_RANK.load(Ordering::Acquire) {
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            5 => LevelFilter::TRACE,
            _ => LevelFilter::OFF,
        })
    }

    // Spans are never enabled (`register_callsite`), so these are not
    // called; a span id must still be non-zero.
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if !delivered(metadata) {
            return;
        }
        // A record logged from inside the sink, on its thread, is dropped.
        let Some(_in_sink) = InSink::enter() else {
            return;
        };
        // Counted under the lock, so `set_log_sink` sees every record that
        // took the sink it replaces.
        let Some(installed) = SINK
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|i| {
                i.delivering.fetch_add(1, Ordering::AcqRel);
                Delivering(Arc::clone(i))
            })
        else {
            return;
        };
        // Checked again at the level this sink was set with: the level read
        // above may be its predecessor's, lower.
        if !delivered_at(metadata, installed.0.rank) {
            return;
        }
        let sink = &installed.0.sink;
        let mut line = Line::default();
        event.record(&mut line);
        let record = LogRecord {
            level: metadata.level().into(),
            target: metadata.target().to_owned(),
            message: line.finish(),
            timestamp_ms: now_ms(),
        };
        // A sink that panics (or a foreign one that throws) loses this
        // record, never the engine's work that logged it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.log(record)));
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 before it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An event's fields as one line: the message, then ` name=value` for each
/// other field (strings as they are, other values with `Debug`, which is
/// `Display` for fields logged with `%`).
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn finish(mut self) -> String {
        if self.message.is_empty() {
            self.fields.drain(..self.fields.len().min(1));
            return self.fields;
        }
        self.message.push_str(&self.fields);
        self.message
    }
}

impl Visit for Line {
    /// Left out: POS Core logs no floating-point field, and formatting one
    /// would link the float formatting code into the library. (SQLite's
    /// driver logs a slow statement's time both as a float and as a
    /// `Duration`: the `Duration` is kept.)
    fn record_f64(&mut self, _field: &Field, _value: f64) {}

    /// As a 64-bit number (no 128-bit formatting code either).
    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => self.record_str(field, "(over 64 bits)"),
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.record_i64(field, v),
            Err(_) => self.record_str(field, "(over 64 bits)"),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The sink is process-wide: these tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    /// The target of the records these tests log (other tests of this
    /// crate may log meanwhile: only these are looked at).
    const T: &str = "pos_ffi::logging::tests";

    #[derive(Default)]
    struct Collect(Mutex<Vec<LogRecord>>);

    impl Collect {
        fn mine(&self) -> Vec<(LogLevel, String)> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.target == T)
                .map(|r| (r.level, r.message.clone()))
                .collect()
        }
    }

    impl LogSink for Collect {
        fn log(&self, record: LogRecord) {
            self.0.lock().unwrap().push(record);
        }
    }

    fn turn() -> std::sync::MutexGuard<'static, ()> {
        TURN.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a thread of its own and fails (instead of hanging) if it
    /// does not return: a deadlock.
    fn finishes(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(),
            "deadlocked, or panicked"
        );
    }

    #[test]
    fn records_below_the_level_are_not_delivered_nor_dependencies_below_warnings() {
        let _t = turn();
        let sink = Arc::new(Collect::default());
        set_log_sink(LogLevel::Info, Some(sink.clone()));
        tracing::trace!(target: T, "t");
        tracing::debug!(target: T, "d");
        tracing::info!(target: T, "i");
        tracing::warn!(target: T, "w");
        tracing::error!(target: T, "e");
        assert_eq!(
            sink.mine(),
            vec![
                (LogLevel::Info, "i".into()),
                (LogLevel::Warn, "w".into()),
                (LogLevel::Error, "e".into())
            ]
        );
        assert_eq!(LevelFilter::current(), LevelFilter::INFO);
        set_log_sink(LogLevel::Trace, Some(sink.clone()));
        tracing::trace!(target: T, "t2");
        assert_eq!(sink.mine().last().unwrap(), &(LogLevel::Trace, "t2".into()));
        // A dependency (here SQLite's driver) only from warnings up.
        tracing::debug!(target: "sqlx::query", "select");
        tracing::info!(target: "sqlx::query", "select");
        tracing::warn!(target: "sqlx::query", "slow statement");
        let theirs: Vec<String> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == "sqlx::query")
            .map(|r| r.message.clone())
            .collect();
        assert_eq!(theirs, vec!["slow statement".to_owned()]);
        set_log_sink(LogLevel::Trace, None);
    }

    #[test]
    fn fields_follow_the_message() {
        let _t = turn();
        let sink = Arc::new(Collect::default());
        set_log_sink(LogLevel::Debug, Some(sink.clone()));
        let id = "pay_1";
        tracing::info!(target: T, payment_id = %id, attempts = 3u32, kind = ?LogLevel::Warn, name = "x", "round finished");
        tracing::info!(target: T, alone = true);
        // Floats are left out; 128-bit numbers are written while they fit
        // in 64 bits.
        let big = u128::from(u64::MAX) + 1;
        tracing::info!(target: T, secs = 1.5f64, small = 7u128, big, neg = -7i128, "odd");
        assert_eq!(
            sink.mine(),
            vec![
                (
                    LogLevel::Info,
                    "round finished payment_id=pay_1 attempts=3 kind=Warn name=x".into()
                ),
                (LogLevel::Info, "alone=true".into()),
                (
                    LogLevel::Info,
                    "odd small=7 big=(over 64 bits) neg=-7".into()
                )
            ]
        );
        set_log_sink(LogLevel::Debug, None);
    }

    #[test]
    fn a_sink_is_replaced_and_cleared() {
        let _t = turn();
        let (a, b) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        set_log_sink(LogLevel::Info, Some(a.clone()));
        tracing::info!(target: T, "to a");
        set_log_sink(LogLevel::Info, Some(b.clone()));
        tracing::info!(target: T, "to b");
        set_log_sink(LogLevel::Info, None);
        tracing::error!(target: T, "to no one");
        // Cleared: `tracing` skips every event before it reaches the bridge.
        assert_eq!(LevelFilter::current(), LevelFilter::OFF);
        assert_eq!(a.mine(), vec![(LogLevel::Info, "to a".into())]);
        assert_eq!(b.mine(), vec![(LogLevel::Info, "to b".into())]);
        // Neither is held any more.
        assert!(SINK.lock().unwrap().is_none());
    }

    /// Logs from inside `log`, then replaces itself with `next`.
    struct Reentrant {
        seen: Collect,
        next: Mutex<Option<Arc<dyn LogSink>>>,
    }

    impl LogSink for Reentrant {
        fn log(&self, record: LogRecord) {
            let mine = record.target == T;
            self.seen.log(record);
            if !mine {
                return;
            }
            // Would call this sink again without end if it were delivered;
            // the first one dropped must not let the second through.
            tracing::warn!(target: T, "from inside the sink");
            tracing::warn!(target: T, "again from inside the sink");
            if let Some(next) = self.next.lock().unwrap().take() {
                set_log_sink(LogLevel::Info, Some(next));
            }
        }
    }

    #[test]
    fn a_sink_may_log_and_replace_itself_from_inside_log() {
        let _t = turn();
        let after = Arc::new(Collect::default());
        let sink = Arc::new(Reentrant {
            seen: Collect::default(),
            next: Mutex::new(Some(after.clone())),
        });
        set_log_sink(LogLevel::Info, Some(sink.clone()));
        finishes(|| {
            tracing::info!(target: T, "first");
            tracing::info!(target: T, "second");
        });
        set_log_sink(LogLevel::Info, None);
        assert_eq!(sink.seen.mine(), vec![(LogLevel::Info, "first".into())]);
        assert_eq!(after.mine(), vec![(LogLevel::Info, "second".into())]);
    }

    struct Panics;

    impl LogSink for Panics {
        fn log(&self, _record: LogRecord) {
            panic!("a faulty sink");
        }
    }

    #[test]
    fn a_panicking_sink_loses_its_record_and_nothing_else() {
        let _t = turn();
        set_log_sink(LogLevel::Info, Some(Arc::new(Panics)));
        tracing::info!(target: T, "lost");
        let sink = Arc::new(Collect::default());
        set_log_sink(LogLevel::Info, Some(sink.clone()));
        tracing::info!(target: T, "kept");
        set_log_sink(LogLevel::Info, None);
        assert_eq!(sink.mine(), vec![(LogLevel::Info, "kept".into())]);
    }

    /// Holds each record until the test lets it go.
    struct Holds {
        entered: Mutex<std::sync::mpsc::Sender<()>>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
        finished: std::sync::atomic::AtomicBool,
    }

    impl LogSink for Holds {
        fn log(&self, record: LogRecord) {
            if record.target != T {
                return;
            }
            let _ = self.entered.lock().unwrap().send(());
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_secs(60));
            self.finished.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn once_a_sink_is_replaced_no_record_still_reaches_it() {
        let _t = turn();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let sink = Arc::new(Holds {
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
            finished: std::sync::atomic::AtomicBool::new(false),
        });
        set_log_sink(LogLevel::Info, Some(sink.clone()));
        // Another thread is handing the sink a record when it is cleared.
        let logging = std::thread::spawn(|| tracing::info!(target: T, "held"));
        entered
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap();
        let (cleared_tx, cleared) = std::sync::mpsc::channel();
        let clearing = std::thread::spawn(move || {
            set_log_sink(LogLevel::Info, None);
            let _ = cleared_tx.send(());
        });
        // Not while the record is being handed over.
        assert!(cleared
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        release.send(()).unwrap();
        cleared
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap();
        assert!(sink.finished.load(Ordering::SeqCst));
        logging.join().unwrap();
        clearing.join().unwrap();
    }

    #[test]
    fn a_record_below_a_new_sinks_level_never_reaches_it() {
        let _t = turn();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let logged = Arc::new(AtomicUsize::new(0));
        let logger = {
            let (stop, logged) = (Arc::clone(&stop), Arc::clone(&logged));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    tracing::debug!(target: T, "d");
                    logged.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // The sink is switched while the other thread logs: at least 2,000
        // times, and for at least 20,000 of its records.
        let strict = Arc::new(Collect::default());
        let mut switches = 0;
        while switches < 2_000 || logged.load(Ordering::Relaxed) < 20_000 {
            set_log_sink(LogLevel::Trace, Some(Arc::new(Collect::default())));
            set_log_sink(LogLevel::Info, Some(strict.clone()));
            switches += 1;
        }
        stop.store(true, Ordering::Relaxed);
        logger.join().unwrap();
        set_log_sink(LogLevel::Info, None);
        assert_eq!(strict.mine(), vec![]);
    }
}
