//! The [`PosEngine`] façade: what the app creates, configures and talks to.
//!
//! It owns the configuration, the trusted clock, the connectivity machine,
//! the ledger and the store, and hands each request to the sans-I/O rules.
//! Every mutating operation runs under one async write lock: it builds a
//! batch of records, makes it durable, and only then applies it in memory and
//! emits events. Reads take a short synchronous lock. Listeners are never
//! called under a lock. Every method fails with [`PosError::Closed`] after
//! [`PosEngine::close`].
//!
//! Checkout, listing and forwarding hooks are in `checkout.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::audit::ForwardOutcome;
use crate::audit::{AuditEntry, AuditKind, OfflineCause, OverrideAction};
use crate::clock::{Clock, ClockCorrection, Timestamp, TrustedClock};
use crate::connectivity::{
    ConnectivityInput, ConnectivityMachine, ConnectivityState, OutageCause, ProbeOutcome,
};
use crate::error::{PosError, Result};
use crate::events::{EventBus, EventListener, PosEvent, Subscription};
use crate::forwarder::{Forwarding, ForwardingBlockedReason, ForwardingConfig, StepEffects};
use crate::gateway::{Gateway, GatewayDecision, GatewayError};
use crate::inbox::{InboxView, OrderSource, RefreshOutcome};
use crate::ledger::OfflinePayment;
use crate::ledger::{Ledger, Settings, Tally, Write};
use crate::lifecycle::StaffId;
use crate::lifecycle::{
    Deadline, DeclineNotice, ForwardErrorKind, PaymentEvent, PaymentId, PaymentState, PaymentStatus,
};
use crate::money::{Currency, Money};
use crate::policy::Policy;
use crate::rules::{
    check_guarded_action, ActionOverride, GuardOutcome, GuardedAction, PendingExposure,
};
use crate::session::OfflineSession;
use crate::store::Store;

/// The library version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the app sets up an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Where the engine keeps its files. Must be non-empty.
    pub data_dir: PathBuf,
    /// This device's identifier at the processor: 1–64 of `[A-Za-z0-9._-]`.
    /// It scopes every payment id at the processor (idempotency, lookups),
    /// so a store belongs to the device id it was first opened with: opening
    /// it under another is refused (`InvalidConfig`).
    pub device_id: String,
    /// The shop's main currency.
    pub currency: Currency,
    /// How stored payments are forwarded.
    pub forwarding: ForwardingConfig,
    /// Records between two automatic snapshots of the store (at least 1;
    /// default [`crate::store::COMPACT_EVERY`]): opening after a crash
    /// replays at most this many on top of the last snapshot.
    pub compact_every: u64,
    /// The merchant account and location the app runs as (B7). A store not
    /// bound to an account yet is bound to it at open; a store bound to
    /// another one does not open (`AccountMismatch`): switching is
    /// [`PosEngine::switch_account`], guarded while payments are pending.
    /// `None`: the store's own account, whatever it is (or none).
    pub account: Option<crate::account::MerchantAccount>,
    /// Settled orders held in memory (default [`SETTLED_IN_MEMORY`]): the
    /// most recent ones, fully paid with every payment final, stay with
    /// their payments and receipts; older ones leave memory when the
    /// engine next takes a snapshot. They stay in the store:
    /// [`PosEngine::payment_history`] reads them. Memory and the open's
    /// time then follow what is pending, not the history.
    pub settled_in_memory: usize,
    /// Audit entries held in memory (at least 1; default
    /// [`AUDIT_IN_MEMORY`]): older ones leave memory with the settled
    /// history and stay in the store ([`PosEngine::audit_history`]).
    pub audit_in_memory: u64,
}

/// Settled orders the engine holds in memory by default
/// ([`EngineConfig::settled_in_memory`]): a busy shop's day.
pub const SETTLED_IN_MEMORY: usize = 1_000;

/// Audit entries the engine holds in memory by default
/// ([`EngineConfig::audit_in_memory`]): about 300 bytes each, so the
/// default holds about 0.6 MB of them. The whole log stays in the store.
pub const AUDIT_IN_MEMORY: u64 = 2_000;

impl EngineConfig {
    /// Validates raw values from the app.
    pub fn new(data_dir: impl Into<PathBuf>, device_id: &str, currency_code: &str) -> Result<Self> {
        let data_dir = data_dir.into();
        if !data_dir.is_absolute() {
            return Err(PosError::InvalidConfig {
                reason: "data_dir must be an absolute path".into(),
            });
        }
        if data_dir.as_os_str().is_empty() {
            return Err(PosError::InvalidConfig {
                reason: "data_dir is empty".into(),
            });
        }
        let id_ok = (1..=64).contains(&device_id.len())
            && device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(PosError::InvalidConfig {
                reason: "device_id must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            });
        }
        let currency = Currency::parse(currency_code).map_err(|e| PosError::InvalidConfig {
            reason: e.to_string(),
        })?;
        Ok(EngineConfig {
            data_dir,
            device_id: device_id.to_owned(),
            currency,
            forwarding: ForwardingConfig::default(),
            compact_every: crate::store::COMPACT_EVERY,
            account: None,
            settled_in_memory: SETTLED_IN_MEMORY,
            audit_in_memory: AUDIT_IN_MEMORY,
        })
    }
}

/// Who is signed in on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffSession {
    pub staff_id: StaffId,
    /// The role permission "accept offline credit and debit payments" (R12).
    pub may_take_offline_payments: bool,
}

/// Totals of one currency (R19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub currency: Currency,
    /// Unsettled offline payments (pending, forwarding, failed to forward).
    pub pending_count: u32,
    /// Their amount: the money at risk.
    pub pending_amount: Money,
    pub approved_count: u32,
    pub approved_amount: Money,
    pub declined_count: u32,
    pub declined_amount: Money,
    /// Expired payments: this amount is lost (R8).
    pub expired_count: u32,
    pub expired_amount: Money,
    /// Payments whose deadline passed while the processor may hold them
    /// (`OutcomeUnknown`): neither taken nor lost until the processor says.
    /// Also counted in `pending_count` / `pending_amount` (money at risk).
    pub unknown_count: u32,
    pub unknown_amount: Money,
}

/// A connectivity state's name for the logs (its `since` left out).
fn state_name(state: &ConnectivityState) -> &'static str {
    match state {
        ConnectivityState::Unknown => "unknown",
        ConnectivityState::Online { .. } => "online",
        ConnectivityState::NetworkOutage { .. } => "network_outage",
        ConnectivityState::ServiceDisruption { .. } => "service_disruption",
    }
}

/// Unsettled payments read by the reader `serial`.
fn pending_reads_of(ledger: &Ledger, serial: &str) -> usize {
    ledger
        .payments
        .values()
        .filter(|p| !p.state.is_final())
        .filter(|p| p.card.reader_serial.as_deref() == Some(serial))
        .count()
}

/// What a reader link handshake trusts ([`PosEngine::reader_trust`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderTrust {
    /// The reader authorities' Ed25519 keys.
    pub authorities: Vec<[u8; 32]>,
    /// Remembered profile readers: serial and identity key.
    pub remembered: Vec<(String, [u8; 32])>,
    /// Whether a new reader may be paired now.
    pub online: bool,
}

/// A snapshot of the engine for the app's status screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    pub version: String,
    pub device_id: String,
    pub currency: Currency,
    pub connectivity: ConnectivityState,
    pub offline_enabled: bool,
    /// Unsettled offline payments, all currencies.
    pub pending_offline_payments: u64,
    /// Per-currency totals, for every currency with payments.
    pub totals: Vec<CurrencyTotals>,
    /// When the current offline session began, if any.
    pub session_started_at: Option<Timestamp>,
    /// When offline acceptance closes in the current session.
    pub acceptance_closes_at: Option<Timestamp>,
    /// The earliest forwarding deadline of an unsettled payment.
    pub next_deadline: Option<Timestamp>,
    /// Milliseconds left before `next_deadline` (0 when past).
    pub time_left_ms: Option<i64>,
    /// When the engine next has something to do by itself
    /// ([`PosEngine::next_wake_up`]): when an app not running should be
    /// woken (WorkManager, BGTaskScheduler) to call `tick`.
    pub next_wake_up: Option<Timestamp>,
    pub signed_in: Option<StaffId>,
    /// The store's rollback anchor; `None` when the store keeps none (a
    /// memory store, or a key provider that keeps no anchors).
    pub anchor: Option<AnchorStatus>,
    /// Why forwarding is blocked, if it is
    /// ([`PosEvent::ForwardingBlocked`]).
    pub forwarding_blocked: Option<crate::forwarder::ForwardingBlockedReason>,
    /// The merchant account and location new payments are taken for.
    pub account: Option<crate::account::MerchantAccount>,
    /// The schema version of the store's files (`None`: a memory store).
    /// A library older than it cannot open the store: block a downgrade of
    /// the app while payments are pending.
    pub store_schema: Option<u32>,
}

/// Whether the store's rollback anchor is kept up to date with the key
/// provider (`docs/store-recovery.md`). While saves fail, a rollback of the
/// store to a copy taken since `last_saved_at` is not detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorStatus {
    /// The latest save failed (a new commit or the next open tries again).
    pub failing: bool,
    /// Failed saves in a row.
    pub failures: u64,
    /// Records the anchor trails the journal by after the latest failure
    /// (0 when the latest save succeeded).
    pub behind: u64,
    /// When the anchor was last saved, or found current at open.
    pub last_saved_at: Option<Timestamp>,
    /// The latest failure's reason (the provider's message, no key
    /// material), kept after a later success.
    pub last_error: Option<String>,
}

/// What the engine heard from the store's anchor saves
/// ([`Store::report_anchors`]), on the store's thread. It holds no engine
/// reference: the engine may be dropped on that thread's watch.
#[derive(Debug, Default)]
pub(crate) struct AnchorWatch {
    pub(crate) kept: bool,
    /// The highest journal position reported (older outcomes are ignored).
    seq: u64,
    failures: u64,
    behind: u64,
    /// The clock's time since boot at the last good save.
    saved_at_boot: Option<std::time::Duration>,
    last_error: Option<String>,
}

impl AnchorWatch {
    /// Takes one outcome; returns the event to send (the first failure of a run).
    pub(crate) fn take(
        &mut self,
        report: crate::store::AnchorReport,
        since_boot: std::time::Duration,
    ) -> Option<PosEvent> {
        use crate::store::AnchorReport as R;
        let seq = match &report {
            R::Saved { seq } | R::Failed { seq, .. } => *seq,
        };
        if seq < self.seq {
            return None;
        }
        self.seq = seq;
        match report {
            R::Saved { .. } => {
                self.failures = 0;
                self.behind = 0;
                self.saved_at_boot = Some(since_boot);
                None
            }
            R::Failed { behind, reason, .. } => {
                self.failures = self.failures.saturating_add(1);
                self.behind = behind;
                self.last_error = Some(reason.clone());
                (self.failures == 1).then_some(PosEvent::AnchorSaveFailed { reason, behind })
            }
        }
    }

    fn status(&self, now: Timestamp, since_boot: std::time::Duration) -> Option<AnchorStatus> {
        self.kept.then(|| AnchorStatus {
            failing: self.failures > 0,
            failures: self.failures,
            behind: self.behind,
            last_saved_at: self.saved_at_boot.map(|then| {
                let ago = crate::clock::duration_ms(since_boot.saturating_sub(then));
                Timestamp(now.0.saturating_sub(ago))
            }),
            last_error: self.last_error.clone(),
        })
    }
}

/// The engine. Cheap to clone; all clones share one engine.
#[derive(Debug, Clone)]
pub struct PosEngine {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) clock: TrustedClock,
    pub(crate) state: Mutex<State>,
    /// Serialises every mutating operation across its store write.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// Held by a commit from its audit check to its memory update. When the
    /// commit's caller is cancelled mid-write (a Kotlin coroutine, a Swift
    /// task), the task that finishes the commit holds it; every write lock
    /// waits for it ([`PosEngine::write_lock`]).
    pub(crate) commit_lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) forwarding: Forwarding,
    pub(crate) closed: AtomicBool,
    /// The app is in the background ([`PosEngine::on_background`]): the
    /// forwarding driver does not probe the service.
    pub(crate) background: AtomicBool,
    /// A snapshot came due with settled history to archive: the driver
    /// archives and takes it ([`PosEngine::compact_if_due`]) once the
    /// commit that made it due is over.
    pub(crate) archive_wanted: AtomicBool,
    /// The store's anchor saves, and the clock that dates them.
    pub(crate) anchors: Arc<Mutex<AnchorWatch>>,
    pub(crate) anchor_clock: Arc<dyn Clock>,
    /// The background verification of the store after a snapshot.
    pub(crate) verify: Arc<BackgroundVerify>,
    /// Other channels' online orders (R18): hidden while offline.
    pub(crate) inbox: crate::inbox::Inbox,
    pub(crate) order_source: OrderSourceSlot,
}

impl Drop for Inner {
    /// The last handle is gone without `close()`: the forwarding driver,
    /// which holds only a weak reference and may be waiting with nothing
    /// scheduled, wakes, finds no engine and ends (and its timer thread
    /// with it).
    fn drop(&mut self) {
        self.forwarding.wake.notify_one();
    }
}

/// The app's source of other channels' orders, once set.
#[derive(Default)]
pub(crate) struct OrderSourceSlot(Mutex<Option<Arc<dyn OrderSource>>>);

impl std::fmt::Debug for OrderSourceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.lock().map(|s| s.is_some()).unwrap_or(false);
        f.debug_struct("OrderSourceSlot")
            .field("set", &set)
            .finish()
    }
}

/// How long the engine must be idle (no commit) after a snapshot before the
/// store is verified in the background.
const VERIFY_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// The longest a background verification may run; past it, it is given up
/// (and tried again after the next snapshot).
const VERIFY_BOUND: std::time::Duration = std::time::Duration::from_secs(120);

/// The background verification of the whole store ([`PosEngine::verify_store`]
/// without the write lock): started after a snapshot, once the engine is
/// idle, on the runtime (reading and replaying the journal as it is read)
/// and a blocking thread (rebuilding the snapshot and comparing);
/// cancelled by the next commit, since the store it reads is then no
/// longer the one the snapshot describes. At most one runs at a time.
#[derive(Debug, Default)]
pub(crate) struct BackgroundVerify {
    /// Commits so far.
    commits: std::sync::atomic::AtomicU64,
    /// Snapshots so far.
    snapshots: std::sync::atomic::AtomicU64,
    /// The latest snapshot's records.
    pending: Mutex<Option<Arc<Vec<Write>>>>,
    /// Wakes a running verification to restart it (or, once `closed`, to
    /// stop it).
    commit_made: tokio::sync::Notify,
    running: AtomicBool,
    /// The engine was closed: no verification runs any more.
    pub(crate) closed: AtomicBool,
}

impl BackgroundVerify {
    fn marks(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Acquire),
            self.snapshots.load(Ordering::Acquire),
        )
    }

    /// Verifies the store against the latest snapshot once the engine is
    /// idle; the reason of a problem found, `None` when it is sound or
    /// cannot be checked (a locked store, no snapshot count, the engine
    /// gone). The store is held only while it is read, so a closed engine's
    /// store is released and can be opened again.
    async fn run(&self, store: std::sync::Weak<dyn Store>) -> Option<String> {
        // A problem is reported only when two checks in a row find it: a
        // commit that lands between the count of the records after the
        // snapshot and the read of the journal could make one check see a
        // record too many; damage is still there at the second.
        let mut suspect: Option<String> = None;
        loop {
            let marks = self.marks();
            let cancelled = self.commit_made.notified();
            tokio::pin!(cancelled);
            cancelled.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(VERIFY_IDLE) => {}
                _ = &mut cancelled => continue,
            }
            if self.marks() != marks {
                continue;
            }
            let state = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()?;
            let store = store.upgrade()?;
            // The records up to the snapshot are replayed as they are read;
            // the last `after` (those since the snapshot) wait in `tail`
            // and are not. So the check holds one ledger and a few records,
            // not the whole journal. A commit meanwhile changes `marks`:
            // the check starts again.
            let after = usize::try_from(store.records_since_compaction()?).ok()?;
            let mut replay = Replay::new(after);
            let mut visit = |w| replay.push(w);
            let loaded = tokio::select! {
                r = store.verify_each(&mut visit) => r,
                _ = &mut cancelled => continue,
            };
            drop(store);
            if self.marks() != marks {
                continue;
            }
            let problem = match loaded {
                Err(e) => match replay.failure.take() {
                    Some(reason) => reason,
                    None => match PosError::from(e) {
                        PosError::StoreIntegrity { reason, .. } => reason,
                        _ => return None,
                    },
                },
                Ok(()) => {
                    if replay.tail.len() < after {
                        return None;
                    }
                    let replayed = replay.ledger;
                    let checked =
                        tokio::task::spawn_blocking(move || check_replayed(&replayed, &state))
                            .await;
                    if self.marks() != marks {
                        continue;
                    }
                    match checked {
                        Ok(Err(PosError::StoreIntegrity { reason, .. })) => reason,
                        _ => return None,
                    }
                }
            };
            if suspect.is_some() {
                return Some(problem);
            }
            suspect = Some(problem);
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) ledger: Ledger,
    pub(crate) connectivity: ConnectivityMachine,
    pub(crate) staff: Option<StaffSession>,
    /// Card payments begun but not yet confirmed (in memory only: nothing is
    /// taken until confirmation).
    pub(crate) begun: BTreeMap<crate::lifecycle::PaymentId, crate::requests::BegunPayment>,
}

impl State {
    /// The settings, borrowed: a capture reads the policy several times and
    /// should not copy it each time.
    pub(crate) fn settings_ref(&self) -> std::borrow::Cow<'_, Settings> {
        match &self.ledger.settings {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(Settings::initial()),
        }
    }

    pub(crate) fn settings(&self) -> Settings {
        self.ledger
            .settings
            .clone()
            .unwrap_or_else(Settings::initial)
    }
}

impl PosEngine {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(PosError::Closed);
        }
        Ok(())
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Takes the write lock, once any commit cut off by a cancelled caller
    /// has finished (so what the caller reads next includes it).
    pub(crate) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let guard = self.inner.write_lock.lock().await;
        drop(self.inner.commit_lock.lock().await);
        guard
    }

    /// Makes `batch` durable, then applies it in memory. On a store error
    /// nothing changes. The caller holds the write lock.
    ///
    /// Cannot be cut in the middle: if the caller's future is dropped (a
    /// cancelled coroutine or task) while the store is writing, the rest of
    /// the commit (the store's answer, then the memory update) goes on in a
    /// task of its own, holding the commit lock that every next write waits
    /// for; the batch is never written and forgotten (which would make the
    /// next batch reuse its audit number and the store unopenable). When the
    /// caller is not cancelled, nothing is spawned.
    pub(crate) async fn commit(&self, batch: Vec<Write>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let permit = Arc::clone(&self.inner.commit_lock).lock_owned().await;
        // Refuse before the store, not after it: a record the ledger rejects
        // once durable would also be rejected at every later load, leaving
        // the store unloadable. Only audit entries can be rejected.
        self.check_audit_entries(&batch)?;
        let batch = Arc::new(batch);
        let store = Arc::clone(&self.inner.store);
        let written = Arc::clone(&batch);
        let mut finish = FinishOnDrop {
            write: Some(Box::pin(async move { store.apply(&written).await })),
            engine: self.clone(),
            batch: Arc::clone(&batch),
            permit: Some(permit),
            runtime: tokio::runtime::Handle::current(),
        };
        let result = match finish.write.as_mut() {
            Some(write) => write.await,
            None => Ok(()),
        };
        // Done here: nothing is left for the drop guard (the write future
        // and its share of the batch go with it).
        finish.write = None;
        let _permit = finish.permit.take();
        drop(finish);
        result?;
        self.after_write(batch).await
    }

    /// The memory side of a commit whose batch is durable, and a snapshot
    /// when one is due. The batch is moved into the ledger when no one else
    /// holds it (always, once the store's write is over).
    async fn after_write(&self, batch: Arc<Vec<Write>>) -> Result<()> {
        let verify = &self.inner.verify;
        verify.commits.fetch_add(1, Ordering::AcqRel);
        verify.commit_made.notify_waiters();
        let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
        let snapshot = {
            let mut s = self.state();
            for w in batch {
                s.ledger.apply(w).map_err(|e| PosError::Internal {
                    reason: e.to_string(),
                })?;
            }
            // During a forwarding round every payment changes and the
            // journal grows fast: a snapshot (the whole state, ~130 ms at
            // 10,000 pending payments) every `compact_every` records would
            // cost the round a fifth of its time; the round takes one at
            // its end instead.
            if self.snapshot_due() && !self.forwarding_round_running() {
                // Once asked, the driver archives; until it has (or when it
                // is not running), snapshots are taken as before.
                if !self.inner.archive_wanted.load(Ordering::Acquire) && self.archive_due(&s) {
                    // The cut is a commit of its own, which cannot run
                    // inside this one: the forwarding driver takes the
                    // write lock after it, archives, then takes the snapshot.
                    self.inner.archive_wanted.store(true, Ordering::Release);
                    self.wake_forwarder();
                    None
                } else {
                    s.ledger.snapshot_writes()
                }
            } else {
                None
            }
        };
        if let Some(state) = snapshot {
            // The batch is durable and applied; a failed snapshot only
            // means the next open replays more (it is tried again later).
            if self.inner.store.compact(&state).await.is_ok() {
                self.verify_in_background(state);
            } else {
                tracing::warn!("snapshot failed: tried again later");
            }
        }
        Ok(())
    }

    /// After the snapshot `state`: once no commit came for
    /// [`VERIFY_IDLE`], verifies the whole journal (every record's seal
    /// and chain, from the first) and that the records up to the snapshot
    /// replay to `state`, without the write lock, on the runtime (reading
    /// and replaying) and a blocking thread (comparing). A commit or a new snapshot during
    /// the check restarts it (after the next idle moment); it is given up
    /// after [`VERIFY_BOUND`] (and runs again after the next snapshot). A
    /// problem is reported as [`PosEvent::StoreVerificationFailed`].
    fn verify_in_background(&self, state: Vec<Write>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let verify = Arc::clone(&self.inner.verify);
        verify.snapshots.fetch_add(1, Ordering::AcqRel);
        *verify.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(state));
        if verify.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = Arc::downgrade(&self.inner.store);
        let events = Arc::downgrade(&self.inner.events);
        handle.spawn(async move {
            loop {
                let seen = verify.snapshots.load(Ordering::Acquire);
                let found = tokio::time::timeout(VERIFY_BOUND, verify.run(store.clone()))
                    .await
                    .ok()
                    .flatten();
                if let Some(reason) = found {
                    tracing::error!(%reason, "store verification failed");
                    if let Some(bus) = events.upgrade() {
                        bus.emit(PosEvent::StoreVerificationFailed { reason });
                    }
                }
                // The records are not kept once checked (their memory),
                // unless a snapshot came meanwhile: that one is checked too.
                let mut pending = verify.pending.lock().unwrap_or_else(|p| p.into_inner());
                if verify.snapshots.load(Ordering::Acquire) == seen
                    || verify.closed.load(Ordering::Acquire)
                {
                    *pending = None;
                    verify.running.store(false, Ordering::Release);
                    break;
                }
            }
            // The replayed journal and the snapshot's records are freed.
            release_freed_memory();
        });
    }

    /// Whether the store has taken `compact_every` records since its last
    /// snapshot.
    fn snapshot_due(&self) -> bool {
        self.inner
            .store
            .records_since_compaction()
            .is_some_and(|n| n >= self.inner.config.compact_every.max(1))
    }

    /// Takes a snapshot if one is due (a failure only means the next open
    /// replays more; it is tried again later).
    pub(crate) async fn compact_if_due(&self) {
        if !self.snapshot_due() || self.check_open().is_err() {
            return;
        }
        let _w = self.write_lock().await;
        if self.snapshot_due() && self.archive_and_snapshot().await.is_err() {
            tracing::warn!("snapshot failed: tried again later");
        }
    }

    /// Takes settled history beyond what [`EngineConfig`] keeps out of
    /// memory ([`Write::Archive`], a commit like any change), then a
    /// snapshot, unless committing the cut already took one. A failed cut
    /// is logged and the snapshot still taken. The caller holds the write
    /// lock.
    async fn archive_and_snapshot(&self) -> Result<()> {
        let cut = self.archive_cut_of(&self.state());
        if let Some(cut) = cut {
            let (orders, audit_through) = (cut.orders.len(), cut.audit_through);
            match self.commit(vec![Write::Archive(Box::new(cut))]).await {
                Ok(()) => tracing::info!(orders, audit_through, "settled history archived"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "archiving settled history failed: tried again later"
                ),
            }
        }
        if self.inner.store.records_since_compaction() == Some(0) {
            return Ok(());
        }
        let state = self.state().ledger.snapshot_writes();
        if let Some(state) = state {
            self.inner.store.compact(&state).await?;
            self.verify_in_background(state);
        }
        Ok(())
    }

    /// Verifies the whole store, history included: every record from the
    /// first (the open verifies only the snapshot and what follows it), and
    /// that replaying them gives exactly the state the engine holds. For
    /// an idle moment, or before an audit export. A problem is
    /// `PosError::StoreIntegrity` (nothing is changed or repaired).
    pub async fn verify_store(&self) -> Result<()> {
        self.check_open()?;
        // The write lock also waits for a commit cut off by a cancellation.
        let _w = self.write_lock().await;
        let mut replay = Replay::new(0);
        let loaded = self.inner.store.verify_each(&mut |w| replay.push(w)).await;
        if let Some(reason) = replay.failure {
            return Err(PosError::StoreIntegrity {
                reason,
                rolled_back: None,
            });
        }
        loaded?;
        if replay.ledger != self.state().ledger {
            tracing::error!("store verification failed: the journal and the open state differ");
            return Err(PosError::StoreIntegrity {
                reason: "the store's journal and the state opened from its snapshot differ".into(),
                rolled_back: None,
            });
        }
        tracing::info!("store verified: the whole journal replays to the engine's state");
        Ok(())
    }

    /// The app goes to the background (Android `onStop`, iOS
    /// `sceneDidEnterBackground`): saves a snapshot of everything held
    /// ([`compact_store`](Self::compact_store)) unless nothing changed
    /// since the last one, moves the store's log into
    /// its file and saves its rollback anchor, then pauses probes (the
    /// forwarding driver no longer probes the service while offline, and
    /// [`next_wake_up`](Self::next_wake_up) leaves probes out). Forwarding
    /// that is under way goes on; retries and deadlines still count. Call
    /// [`on_foreground`](Self::on_foreground) when the app comes back.
    pub async fn on_background(&self) -> Result<()> {
        self.check_open()?;
        self.inner.background.store(true, Ordering::SeqCst);
        // Nothing new since the last snapshot: it is still current.
        if self.inner.store.records_since_compaction() != Some(0) {
            self.compact_store().await?;
        }
        self.inner.store.flush().await?;
        Ok(())
    }

    /// The app is in the foreground again: probes resume, and the
    /// forwarding driver is woken at once (it probes while offline).
    pub fn on_foreground(&self) -> Result<()> {
        self.check_open()?;
        self.inner.background.store(false, Ordering::SeqCst);
        self.wake_forwarder();
        Ok(())
    }

    /// Whether the engine probes the service by itself now: offline, and
    /// not in the background. The driver and the wake-up time both ask this.
    pub(crate) fn probes_due(&self, online: bool) -> bool {
        !online && !self.in_background()
    }

    /// Whether the app said it is in the background
    /// ([`on_background`](Self::on_background)).
    pub fn in_background(&self) -> bool {
        self.inner.background.load(Ordering::SeqCst)
    }

    /// Saves a snapshot of everything the engine holds, so that the next
    /// open reads it instead of replaying the journal's superseded records
    /// (the engine also does this every [`crate::store::COMPACT_EVERY`]
    /// records). For example before the app goes to the background. First,
    /// settled history beyond what [`EngineConfig`] keeps in memory leaves
    /// it (it stays in the store).
    pub async fn compact_store(&self) -> Result<()> {
        self.check_open()?;
        let _w = self.write_lock().await;
        self.archive_and_snapshot().await
    }

    /// The settled history beyond what the configuration keeps in memory,
    /// if any ([`Ledger::archive_cut`]).
    fn archive_cut_of(&self, s: &State) -> Option<crate::ledger::ArchiveCut> {
        let session = s
            .ledger
            .settings
            .as_ref()
            .and_then(|st| st.session.as_ref())
            .map(OfflineSession::started_at);
        s.ledger.archive_cut(
            self.inner.config.settled_in_memory,
            self.inner.config.audit_in_memory,
            session,
        )
    }

    /// Whether some settled history may be due to leave memory: from
    /// counts, on the commit path ([`Ledger::archive_may_be_due`]); the
    /// driver computes the cut itself.
    fn archive_due(&self, s: &State) -> bool {
        s.ledger.archive_may_be_due(
            self.inner.config.settled_in_memory,
            self.inner.config.audit_in_memory,
        )
    }

    /// Checks the batch's audit entries as the journal will: consecutive
    /// numbers, valid fields, time never going back.
    fn check_audit_entries(&self, batch: &[Write]) -> Result<()> {
        let mut entries: Vec<AuditEntry> = batch
            .iter()
            .filter_map(|w| match w {
                Write::Audit(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let s = self.state();
        let log = &s.ledger.audit;
        let pruned_through = match log.entries().last() {
            Some(last) => {
                entries.insert(0, last.clone());
                last.seq.saturating_sub(1)
            }
            None => log.last_seq(),
        };
        crate::audit::AuditLog::restore(pruned_through, entries).map_err(|e| {
            PosError::Internal {
                reason: format!("audit entry refused, nothing stored: {e}"),
            }
        })?;
        Ok(())
    }

    /// An audit record with the next sequence number after `already` records
    /// of this batch.
    pub(crate) fn audit(
        s: &State,
        already: &[Write],
        at: Timestamp,
        actor: Option<StaffId>,
        kind: AuditKind,
    ) -> Write {
        let pending = already
            .iter()
            .filter(|w| matches!(w, Write::Audit(_)))
            .count() as u64;
        Write::Audit(AuditEntry {
            seq: s.ledger.next_audit_seq() + pending,
            at,
            actor,
            kind,
            account: s.ledger.account.clone(),
        })
    }

    /// The current status.
    pub fn status(&self) -> Result<EngineStatus> {
        self.check_open()?;
        self.status_now()
    }

    /// The status, also after close (for a subscriber's first snapshot).
    fn status_now(&self) -> Result<EngineStatus> {
        let now = self.now();
        let next_wake_up = self.next_wake_up_at();
        let s = self.state();
        let settings = s.settings_ref();
        let totals = totals(&s.ledger)?;
        let pending = s.ledger.unsettled_offline_count();
        let next_deadline = s.ledger.next_unsettled_deadline();
        Ok(EngineStatus {
            version: VERSION.to_owned(),
            device_id: self.inner.config.device_id.clone(),
            currency: self.inner.config.currency,
            connectivity: s.connectivity.state(),
            offline_enabled: settings.policy.enabled,
            pending_offline_payments: pending,
            totals,
            session_started_at: settings.session.as_ref().map(OfflineSession::started_at),
            acceptance_closes_at: settings
                .session
                .as_ref()
                .map(OfflineSession::acceptance_closes_at),
            next_deadline,
            time_left_ms: next_deadline.map(|d| crate::clock::duration_ms(now.until(d))),
            next_wake_up,
            signed_in: s.staff.as_ref().map(|st| st.staff_id.clone()),
            anchor: self
                .inner
                .anchors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .status(now, self.inner.anchor_clock.since_boot()),
            forwarding_blocked: self.forwarding_blocked(),
            account: s.ledger.account.clone(),
            store_schema: self.inner.store.schema(),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> Result<Policy> {
        self.check_open()?;
        Ok(self.state().settings().policy)
    }

    /// Replaces the policy (R4: at any time; stored payments are never
    /// discarded, even when offline payments are turned off). An inconsistent
    /// policy is refused and nothing changes.
    pub async fn set_policy(&self, policy: Policy) -> Result<()> {
        self.check_open()?;
        policy.validate().map_err(|e| PosError::InvalidPolicy {
            reason: e.to_string(),
        })?;
        let _w = self.write_lock().await;
        let now = self.now();
        let batch = {
            let s = self.state();
            let mut settings = s.settings();
            let mut summary = format!(
                "offline {}",
                if policy.enabled {
                    "enabled"
                } else {
                    "disabled"
                }
            );
            // Who may certify readers is a security setting: name changes.
            let before = &settings.policy.reader_authorities;
            let short = |k: &String| k.get(..16).unwrap_or(k).to_owned();
            let added: Vec<String> = policy
                .reader_authorities
                .difference(before)
                .map(short)
                .collect();
            let removed: Vec<String> = before
                .difference(&policy.reader_authorities)
                .map(short)
                .collect();
            if !added.is_empty() {
                summary.push_str(&format!("; reader authorities added: {}", added.join(" ")));
            }
            if !removed.is_empty() {
                summary.push_str(&format!(
                    "; reader authorities removed: {}",
                    removed.join(" ")
                ));
            }
            settings.policy = policy;
            settings.clock_floor = now;
            let actor = s.staff.as_ref().map(|st| st.staff_id.clone());
            let audit = Self::audit(
                &s,
                &[],
                now,
                actor,
                AuditKind::PolicyChanged {
                    setting: "policy".into(),
                    summary,
                },
            );
            vec![Write::Settings(Box::new(settings)), audit]
        };
        self.commit(batch).await
    }

    /// Signs a staff member in (R12 permission travels with them).
    pub fn sign_in(&self, staff: StaffSession) -> Result<()> {
        self.check_open()?;
        self.state().staff = Some(staff);
        Ok(())
    }

    /// The unsettled payments: what a guarded action would put at risk.
    pub fn exposure(&self) -> Result<PendingExposure> {
        self.check_open()?;
        let s = self.state();
        let totals = totals(&s.ledger)?;
        Ok(PendingExposure {
            count: totals.iter().map(|t| u64::from(t.pending_count)).sum(),
            at_risk: totals
                .iter()
                .filter(|t| t.pending_count > 0)
                .map(|t| t.pending_amount)
                .collect(),
        })
    }

    /// Checks, and on success records, an action that would lose stored
    /// payments (R13, B7): log out, switch location, reset the store, remove
    /// the device. Refused while payments are pending unless `override_`
    /// states the money at risk; an override is written to the audit log.
    /// A successful log-out also signs the staff member out; the stored
    /// payments stay and are forwarded after the next sign-in.
    pub async fn guarded_action(
        &self,
        action: GuardedAction,
        override_: Option<ActionOverride>,
    ) -> Result<GuardOutcome> {
        self.check_open()?;
        if action == GuardedAction::SwitchAccount {
            return Err(PosError::InvalidInput {
                reason: "switching account names the new one: use switch_account".into(),
            });
        }
        let _w = self.write_lock().await;
        let (outcome, batch) = self.guard(action, override_.as_ref())?;
        if !batch.is_empty() {
            self.commit(batch).await?;
        }
        if action == GuardedAction::LogOut {
            self.state().staff = None;
        }
        Ok(outcome)
    }

    /// Switches the merchant account and location new payments are taken
    /// for (B7), a guarded action: refused while payments are pending,
    /// unless `override_` names the money at risk (audited). Pending
    /// payments keep their account and are forwarded under it only; the
    /// app's token provider must keep supplying that account's credentials
    /// (`TokenProvider::token_for`) until they are settled. The audit trail
    /// names both accounts (`AuditKind::AccountSwitched`). Switching to the
    /// current account changes nothing.
    pub async fn switch_account(
        &self,
        to: crate::account::MerchantAccount,
        override_: Option<ActionOverride>,
    ) -> Result<GuardOutcome> {
        self.check_open()?;
        if !to.is_valid() {
            return Err(PosError::InvalidInput {
                reason: "account and location ids must be 1-64 characters of A-Z a-z 0-9 . _ -"
                    .into(),
            });
        }
        let _w = self.write_lock().await;
        let from = self.state().ledger.account.clone();
        if from.as_ref() == Some(&to) {
            return Ok(GuardOutcome::Allowed);
        }
        let (outcome, mut batch) = self.guard(GuardedAction::SwitchAccount, override_.as_ref())?;
        {
            let s = self.state();
            let actor = override_
                .as_ref()
                .and_then(|o| StaffId::parse(&o.staff_id).ok())
                .or_else(|| s.staff.as_ref().map(|st| st.staff_id.clone()));
            let kind = AuditKind::AccountSwitched {
                from,
                to: to.clone(),
            };
            let entry = Self::audit(&s, &batch, self.now(), actor, kind);
            batch.push(entry);
            batch.push(Write::Account(to));
        }
        self.commit(batch).await?;
        Ok(outcome)
    }

    /// Runs the guard of `action` on the pending payments: the outcome, and
    /// the audit entry of an override (empty when none was needed).
    fn guard(
        &self,
        action: GuardedAction,
        override_: Option<&ActionOverride>,
    ) -> Result<(GuardOutcome, Vec<Write>)> {
        let exposure = self.exposure()?;
        let policy = self.state().settings().policy;
        let outcome = check_guarded_action(&policy, action, &exposure, override_)
            .map_err(|e| PosError::ActionRefused { refusal: e })?;
        let (GuardOutcome::Overridden { at_risk, .. }, Some(o)) = (&outcome, override_) else {
            return Ok((outcome, Vec::new()));
        };
        let actor = StaffId::parse(&o.staff_id).map_err(|e| PosError::InvalidInput {
            reason: e.to_string(),
        })?;
        if o.reason.chars().count() > crate::audit::MAX_TEXT_CHARS {
            return Err(PosError::InvalidInput {
                reason: format!(
                    "the override reason is longer than {} characters",
                    crate::audit::MAX_TEXT_CHARS
                ),
            });
        }
        let s = self.state();
        let kind = AuditKind::Override {
            action: match action {
                GuardedAction::LogOut => OverrideAction::Logout,
                GuardedAction::SwitchLocation => OverrideAction::SwitchLocation,
                GuardedAction::ResetStore => OverrideAction::ResetStore,
                GuardedAction::RemoveDevice => OverrideAction::RemoveDevice,
                GuardedAction::SwitchAccount => OverrideAction::SwitchAccount,
            },
            money_at_risk: at_risk.clone(),
            reason: o.reason.clone(),
        };
        let batch = vec![Self::audit(&s, &[], self.now(), Some(actor), kind)];
        drop(s);
        Ok((outcome, batch))
    }

    /// Whether the device may change network while offline (R14: terminal
    /// profiles may not). The app enforces it in its network settings.
    pub fn may_change_network_while_offline(&self) -> Result<bool> {
        self.check_open()?;
        let s = self.state();
        let offline = s.connectivity.state().outage_cause().is_some();
        Ok(!offline || s.settings_ref().policy.may_change_network_while_offline())
    }

    /// Remembers a vendor SDK's reader (`VendorCardReader`), by the serial
    /// and model the vendor reports: the engine cannot authenticate it, its
    /// trust comes from the vendor's SDK (see `docs/reader-profile.md`).
    /// Its card reads carry no reader signature. A reader not remembered yet
    /// as a vendor reader, or remembered with another model, is accepted
    /// only while online (offline, remembering it again may only update its
    /// firmware: a model change would move R11). A profile reader is
    /// remembered with
    /// [`PosEngine::remember_paired_reader`] instead, and is not replaced
    /// by a vendor record.
    pub async fn remember_reader(&self, serial: &str, model: &str, firmware: &str) -> Result<()> {
        self.check_open()?;
        use crate::ledger::reader_name_ok as ok;
        if !ok(serial) || !ok(model) || !(firmware.is_empty() || ok(firmware)) {
            return Err(PosError::InvalidInput {
                reason: "serial, model and firmware must be 1-64 printable ASCII characters".into(),
            });
        }
        let _w = self.write_lock().await;
        let now = self.now();
        {
            let s = self.state();
            let online = s.connectivity.state().is_online();
            match s.ledger.readers.get(serial) {
                Some(r) if r.certificate.is_some() => {
                    return Err(PosError::InvalidInput {
                        reason: "this serial is a paired profile reader: forget it first".into(),
                    })
                }
                Some(r) if r.vendor && r.model == model => {}
                _ if !online => return Err(PosError::OnlineRequired),
                _ => {}
            }
        }
        let reader = crate::ledger::RememberedReader {
            serial: serial.to_owned(),
            model: model.to_owned(),
            firmware: firmware.to_owned(),
            paired_at: now,
            certificate: None,
            vendor: true,
        };
        let (batch, _) = self.reader_batch(now, reader);
        if batch.is_empty() {
            return Ok(());
        }
        self.commit(batch).await
    }

    /// Remembers `reader`: the records to commit (an audit entry when it is
    /// new or its model, key or kind changed), and the record kept. A
    /// reconnection that changes nothing writes nothing and keeps the
    /// pairing time; one that only refreshes the firmware is not audited.
    fn reader_batch(
        &self,
        now: Timestamp,
        reader: crate::ledger::RememberedReader,
    ) -> (Vec<Write>, crate::ledger::RememberedReader) {
        let s = self.state();
        let old = s.ledger.readers.get(&reader.serial);
        let same = |o: &crate::ledger::RememberedReader| {
            o.model == reader.model
                && o.certificate == reader.certificate
                && o.vendor == reader.vendor
        };
        if let Some(o) = old.filter(|o| same(o) && o.firmware == reader.firmware) {
            return (Vec::new(), o.clone());
        }
        let mut batch = Vec::with_capacity(2);
        if !old.is_some_and(same) {
            let actor = s.staff.as_ref().map(|st| st.staff_id.clone());
            let kind = AuditKind::ReaderPaired {
                serial: reader.serial.clone(),
                model: reader.model.clone(),
                vendor: reader.vendor,
            };
            batch.push(Self::audit(&s, &[], now, actor, kind));
        }
        batch.push(Write::Reader {
            serial: reader.serial.clone(),
            reader: Some(reader.clone()),
        });
        (batch, reader)
    }

    /// Remembers a profile reader after its authenticated pairing: its
    /// `certificate` (what `CardReader.pair` returns) must be signed by one
    /// of the policy's reader authorities; the serial and the model the
    /// engine keeps are the certificate's, whatever the reader reports. A
    /// reader not remembered yet, or one whose key changed, is accepted
    /// only while online (pairing needs the service). Returns the record.
    pub async fn remember_paired_reader(
        &self,
        certificate: &[u8],
        firmware: &str,
    ) -> Result<crate::ledger::RememberedReader> {
        self.check_open()?;
        if !(firmware.is_empty() || crate::ledger::reader_name_ok(firmware)) {
            return Err(PosError::InvalidInput {
                reason: "firmware must be 1-64 printable ASCII characters".into(),
            });
        }
        let cert = crate::reader_trust::ReaderCertificate::decode(certificate).map_err(|e| {
            PosError::InvalidInput {
                reason: e.to_string(),
            }
        })?;
        let _w = self.write_lock().await;
        let now = self.now();
        {
            let s = self.state();
            cert.verify(&s.settings_ref().policy.reader_authority_keys())
                .map_err(|e| PosError::ReaderNotPaired {
                    reason: e.to_string(),
                })?;
            let same_key = s
                .ledger
                .readers
                .get(&cert.serial)
                .and_then(|r| r.identity_key())
                == Some(cert.public_key);
            if !same_key && !s.connectivity.state().is_online() {
                return Err(PosError::OnlineRequired);
            }
            // Pending payments are sent with the certificate of the reader
            // that signed them: a new key would have them declined.
            // (Scanned only for a new key: a reconnection skips it.)
            let pending = if same_key {
                0
            } else {
                pending_reads_of(&s.ledger, &cert.serial)
            };
            if pending > 0 {
                return Err(PosError::InvalidInput {
                    reason: format!(
                        "{pending} pending payment(s) were read by this reader under its \
                         former key: pair the new key once they are settled"
                    ),
                });
            }
        }
        let reader = crate::ledger::RememberedReader {
            serial: cert.serial.clone(),
            model: cert.model.clone(),
            firmware: firmware.to_owned(),
            paired_at: now,
            certificate: Some(certificate.to_vec()),
            vendor: false,
        };
        let (batch, kept) = self.reader_batch(now, reader);
        if !batch.is_empty() {
            self.commit(batch).await?;
        }
        Ok(kept)
    }

    /// What a reader link handshake must trust now: the policy's reader
    /// authorities, the identity keys of the remembered profile readers, and
    /// whether a reader not remembered may be paired (only online).
    pub fn reader_trust(&self) -> Result<ReaderTrust> {
        self.check_open()?;
        let s = self.state();
        Ok(ReaderTrust {
            authorities: s.settings_ref().policy.reader_authority_keys(),
            remembered: s
                .ledger
                .readers
                .values()
                .filter_map(|r| Some((r.serial.clone(), r.identity_key()?)))
                .collect(),
            online: s.connectivity.state().is_online(),
        })
    }

    /// Forgets a reader: it must be paired again, online. Refused
    /// (`InvalidInput`) while a payment it read is not final: forwarding
    /// sends the certificate of the reader remembered under the payment's
    /// reader serial, and the processor declines a profile reader's card
    /// data without it.
    pub async fn forget_reader(&self, serial: &str) -> Result<()> {
        self.check_open()?;
        let _w = self.write_lock().await;
        {
            let s = self.state();
            if !s.ledger.readers.contains_key(serial) {
                return Err(PosError::NotFound {
                    what: "reader".into(),
                });
            }
            let pending = pending_reads_of(&s.ledger, serial);
            if pending > 0 {
                return Err(PosError::InvalidInput {
                    reason: format!(
                        "{pending} pending payment(s) were read by this reader: \
                         forget it once they are settled"
                    ),
                });
            }
        }
        let batch = {
            let s = self.state();
            let actor = s.staff.as_ref().map(|st| st.staff_id.clone());
            let kind = AuditKind::ReaderForgotten {
                serial: serial.to_owned(),
            };
            vec![
                Self::audit(&s, &[], self.now(), actor, kind),
                Write::Reader {
                    serial: serial.to_owned(),
                    reader: None,
                },
            ]
        };
        self.commit(batch).await
    }

    /// The readers paired on this device, by serial.
    pub fn remembered_readers(&self) -> Result<Vec<crate::ledger::RememberedReader>> {
        self.check_open()?;
        Ok(self.state().ledger.readers.values().cloned().collect())
    }

    /// Whether the policy lets this reader model take offline payments (R11).
    pub fn reader_may_take_offline_payments(&self, model: &str) -> Result<bool> {
        self.check_open()?;
        Ok(self
            .state()
            .settings()
            .policy
            .offline_readers
            .contains(model))
    }

    /// The app's reachability monitor reports whether the device has internet.
    pub async fn report_network(&self, reachable: bool) -> Result<ConnectivityState> {
        self.connectivity_input(ConnectivityInput::NetworkReport { reachable })
            .await
    }

    /// The result of a probe of the processor's status endpoint (R2).
    pub async fn report_probe(&self, outcome: ProbeOutcome) -> Result<ConnectivityState> {
        self.connectivity_input(ConnectivityInput::Probe(outcome))
            .await
    }

    /// When the next status probe is due (the forwarding engine or the app runs it).
    pub fn next_probe_at(&self) -> Result<Timestamp> {
        self.check_open()?;
        Ok(self.state().connectivity.next_probe_at())
    }

    /// Corrects the trusted clock from the processor's time, read from an
    /// answer that took `round_trip` from request to answer (B13): one step
    /// of at most [`crate::clock::MAX_CORRECTION_STEP`] towards the band
    /// that holds real time (see the `clock` module for why this is safe in
    /// both directions), persisted with the clock floor and its anchor and
    /// audited (`clock_corrected`). `None` when the trusted time is within
    /// that band. The forwarding driver calls it with every status answer
    /// that carries the processor's time.
    pub async fn correct_clock(
        &self,
        processor_time: Timestamp,
        round_trip: std::time::Duration,
    ) -> Result<Option<ClockCorrection>> {
        self.check_open()?;
        let _w = self.write_lock().await;
        let Some(c) = self.inner.clock.plan_correction(processor_time, round_trip) else {
            return Ok(None);
        };
        let batch = {
            let s = self.state();
            let mut settings = s.settings();
            settings.clock_floor = settings.clock_floor.max(c.after);
            let mut batch = vec![settings.session_write(), Write::Clock(c.anchor.clone())];
            let kind = AuditKind::ClockCorrected {
                error_ms: c.error_ms,
                step_ms: c.step_ms,
            };
            batch.push(Self::audit(&s, &batch, c.after, None, kind));
            batch
        };
        self.commit(batch).await?;
        // Re-anchored since it was planned (time since boot went back):
        // the next tick saves the new anchor.
        self.inner.clock.apply_correction(&c);
        tracing::info!(
            error_ms = c.error_ms,
            step_ms = c.step_ms,
            "trusted clock corrected from the processor's time"
        );
        Ok(Some(c))
    }

    async fn connectivity_input(&self, input: ConnectivityInput) -> Result<ConnectivityState> {
        self.check_open()?;
        let _w = self.write_lock().await;
        let now = self.now();
        // The machine is in memory only (connectivity is re-learnt at each
        // start); work on a copy so a failed write of the session changes nothing.
        let (mut machine, change) = {
            let s = self.state();
            let mut m = s.connectivity.clone();
            let change = m.handle(input, now);
            (m, change)
        };
        let Some(change) = change else {
            self.state().connectivity = machine;
            return Ok(self.state().connectivity.state());
        };
        let batch = {
            let s = self.state();
            let mut settings = s.settings();
            let mut batch = Vec::new();
            let actor = s.staff.as_ref().map(|st| st.staff_id.clone());
            match (change.from.outage_cause(), change.to.outage_cause()) {
                (None, Some(cause)) => {
                    // An outage began: the offline session starts at its
                    // beginning. Coming from online, the connection was just
                    // lost: a new session, even if a forced-offline payment
                    // left one. Coming from unknown (a restart), the stored
                    // session goes on: a restart never extends it.
                    let started = change.to.since().unwrap_or(now);
                    if settings.session.is_none() || change.from.is_online() {
                        settings.session = Some(OfflineSession::start(
                            settings.policy.session.clone(),
                            started,
                        ));
                    }
                    let cause = match cause {
                        OutageCause::NetworkOutage => OfflineCause::NetworkOutage,
                        OutageCause::ServiceDisruption => OfflineCause::ServiceDisruption,
                    };
                    batch.push(Self::audit(
                        &s,
                        &batch,
                        now,
                        actor,
                        AuditKind::EnteredOfflineMode { cause },
                    ));
                }
                (from, None)
                    if change.to.is_online() && (from.is_some() || settings.session.is_some()) =>
                {
                    // Back online: the session ends; stored payments keep their
                    // deadlines. Also from unknown: a restart during an outage
                    // left the session stored, and the outage is over now.
                    settings.session = None;
                    batch.push(Self::audit(
                        &s,
                        &batch,
                        now,
                        actor,
                        AuditKind::LeftOfflineMode,
                    ));
                }
                _ => {}
            }
            settings.clock_floor = now;
            batch.insert(0, settings.session_write());
            batch
        };
        self.commit(batch).await?;
        let to = change.to;
        tracing::info!(
            from = state_name(&change.from),
            to = state_name(&to),
            recovery = change.is_recovery(),
            "connectivity changed"
        );
        std::mem::swap(&mut self.state().connectivity, &mut machine);
        self.inner.inbox.on_connectivity(to.is_online());
        // Back: stored payments are forwarded now (R3). Down: the driver,
        // which may be waiting with nothing scheduled, starts probing.
        self.wake_forwarder();
        self.inner.events.emit(PosEvent::ConnectivityChanged {
            from: change.from,
            to,
            at: change.at,
            banner: change.banner.default_text().map(str::to_owned),
        });
        Ok(to)
    }

    /// Sets (or replaces) the app's source of other channels' online orders
    /// (R18): the inbox is filled from it by [`refresh_inbox`](Self::refresh_inbox).
    pub fn set_order_source(&self, source: Arc<dyn OrderSource>) -> Result<()> {
        self.check_open()?;
        *self
            .inner
            .order_source
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
        Ok(())
    }

    /// Fetches what changed from the order source, on a blocking thread
    /// with no engine lock held. Offline it does not call the source
    /// ([`RefreshOutcome::Offline`]); the inbox is hidden then (R18).
    pub async fn refresh_inbox(&self) -> Result<RefreshOutcome> {
        self.check_open()?;
        let source = self
            .inner
            .order_source
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PosError::InvalidInput {
                reason: "no order source is set".into(),
            })?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.inbox.refresh(source.as_ref()))
            .await
            .map_err(|_| PosError::Internal {
                reason: "the order source panicked".into(),
            })?
            .map_err(|e| PosError::OrderSourceFailed {
                reason: e.to_string(),
            })
    }

    /// What the app may show of other channels' orders: hidden while
    /// offline, syncing until the first refresh after reconnection (R18).
    pub fn inbox(&self) -> Result<InboxView> {
        self.check_open()?;
        Ok(self.inner.inbox.view())
    }

    /// The audit log (B12) held in memory, oldest first, from entry
    /// `since_seq` (exclusive): the latest [`EngineConfig::audit_in_memory`]
    /// entries at least. [`audit_history`](Self::audit_history) also reads
    /// the older ones from the store.
    ///
    /// Entries after `since_seq` that already left memory are not skipped
    /// silently: the call fails with `InvalidInput` and names where memory
    /// starts.
    pub fn audit_entries(&self, since_seq: u64) -> Result<Vec<AuditEntry>> {
        self.check_open()?;
        let s = self.state();
        let through = s.ledger.archived().audit_through;
        if since_seq < through {
            return Err(PosError::InvalidInput {
                reason: format!(
                    "audit entries up to {through} left memory: read them with audit_history"
                ),
            });
        }
        Ok(s.ledger.audit.entries_since(since_seq).to_vec())
    }

    /// The audit log held in memory as CSV, for reconciliation (B12). It
    /// holds ids, amounts and staff ids, never card data or contacts.
    /// [`export_audit_history_csv`](Self::export_audit_history_csv) exports
    /// the whole log.
    pub fn export_audit_csv(&self) -> Result<String> {
        self.check_open()?;
        Ok(crate::audit::export_csv(
            self.state().ledger.audit.entries(),
        ))
    }

    /// The whole audit log from entry `since_seq` (exclusive), archived
    /// entries included, oldest first. When entries that left memory are
    /// asked for, it reads and verifies the store's whole journal (every
    /// record's seal and chain): seconds on a large history.
    pub async fn audit_history(&self, since_seq: u64) -> Result<Vec<AuditEntry>> {
        self.check_open()?;
        {
            let s = self.state();
            if since_seq >= s.ledger.archived().audit_through {
                return Ok(s.ledger.audit.entries_since(since_seq).to_vec());
            }
        }
        let mut entries = Vec::new();
        self.inner
            .store
            .load_each(&mut |w| {
                match w {
                    Write::Audit(e) if e.seq > since_seq => entries.push(e),
                    _ => {}
                }
                Ok(())
            })
            .await?;
        Ok(entries)
    }

    /// [`audit_history`](Self::audit_history) from the first entry, as CSV.
    pub async fn export_audit_history_csv(&self) -> Result<String> {
        Ok(crate::audit::export_csv(&self.audit_history(0).await?))
    }

    /// Subscribes a listener; it first receives a [`PosEvent::Snapshot`].
    pub fn subscribe(&self, listener: Arc<dyn EventListener>) -> Result<Subscription> {
        self.check_open()?;
        // The snapshot is built on the event thread at the subscription's
        // place in the queue, so no event is lost between it and the next.
        let weak = Arc::downgrade(&self.inner);
        let first = Box::new(move || {
            let engine = PosEngine {
                inner: weak.upgrade()?,
            };
            let status = engine.status_now().ok()?;
            Some(PosEvent::Snapshot {
                connectivity: status.connectivity,
                pending_offline_payments: status.pending_offline_payments,
            })
        });
        Ok(self.inner.events.subscribe(listener, first))
    }

    /// Waits until every event emitted before the call has reached every
    /// listener: a test or a scenario runner checks a step's events after
    /// it, without sleeping.
    pub async fn events_delivered(&self) {
        self.inner.events.flush().await;
    }

    /// Closes the engine: stops event delivery (after a final
    /// [`PosEvent::Closed`]) and makes every later call fail with
    /// [`PosError::Closed`]. Idempotent.
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!("engine closed");
        self.inner.events.stop();
        self.inner.forwarding.wake.notify_one();
        self.inner.verify.closed.store(true, Ordering::Release);
        self.inner.verify.commit_made.notify_waiters();
    }

    /// Closes the engine ([`close`](Self::close)) and waits until its store
    /// has released its files (connections closed, log checkpointed, last
    /// anchor saved). Call it before the app copies, replaces or deletes
    /// the store's files; other calls are refused from the start.
    pub async fn close_and_release(&self) {
        self.close();
        self.inner.store.release().await;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

/// The commit path of a payment's forwarding steps, and the forwarding
/// handle's accessors: shared by the checkout (online payments) and the
/// forwarding rounds.
impl PosEngine {
    /// When the forwarding driver next has something to do by itself, on
    /// the trusted clock: a retry falls due (online), a payment's deadline
    /// passes, or a probe is due (offline); never before the processor's
    /// `Retry-After` ends. `None` when nothing is scheduled.
    pub fn next_wake_at(&self) -> Option<Timestamp> {
        let now = self.now();
        let next = {
            let s = self.state();
            let online = matches!(s.connectivity.state(), ConnectivityState::Online { .. });
            // The deadline of every payment waiting for an attempt, and,
            // online only, its planned retry: offline the probe schedule
            // decides when to look again (a retry already due would
            // otherwise make the driver probe in a loop).
            let mut next = s.ledger.next_waiting_deadline();
            if online {
                next = match (next, s.ledger.next_retry()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            // In the background probes are paused: the app's own network
            // callback or scheduled work brings it back.
            if self.probes_due(online) {
                let probe = s.connectivity.next_probe_at();
                next = Some(next.map_or(probe, |n| n.min(probe)));
            }
            next
        };
        // Nothing starts before the processor's `Retry-After` ends.
        match (next, self.inner.forwarding.busy_until(now)) {
            (Some(t), Some(busy)) => Some(t.max(busy)),
            (next, _) => next,
        }
    }

    /// When the engine next has something to do by itself, on the trusted
    /// clock: [`next_wake_at`](Self::next_wake_at) (a retry, a deadline, a
    /// probe) or a session warning (the acceptance window's close, a
    /// deadline threshold). Apps schedule their background work for then
    /// (WorkManager, BGTaskScheduler) and call `tick`. `None`: nothing is
    /// scheduled.
    pub fn next_wake_up(&self) -> Result<Option<Timestamp>> {
        self.check_open()?;
        Ok(self.next_wake_up_at())
    }

    pub(crate) fn next_wake_up_at(&self) -> Option<Timestamp> {
        let warning = self
            .state()
            .settings_ref()
            .session
            .as_ref()
            .and_then(|s| s.next_warning_at());
        match (self.next_wake_at(), warning) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn emit_payment(&self, p: &OfflinePayment) {
        let order_status = {
            let s = self.state();
            s.ledger
                .orders
                .get(&p.order_id)
                .map(|o| s.ledger.order_status(o))
        };
        self.inner.events.emit(PosEvent::PaymentStateChanged {
            payment_id: p.id.clone(),
            order_id: p.order_id.clone(),
            status: p.state.status(),
            order_status,
        });
    }

    /// Records whether forwarding is blocked, and tells the app when that
    /// changes (`ForwardingBlocked`, `ForwardingUnblocked`).
    pub(crate) fn set_forwarding_blocked(&self, reason: Option<ForwardingBlockedReason>) {
        let old = std::mem::replace(
            &mut *self
                .inner
                .forwarding
                .blocked
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            reason,
        );
        if old == reason {
            return;
        }
        match reason {
            Some(reason) => tracing::warn!(?reason, "forwarding blocked"),
            None => tracing::info!("forwarding unblocked"),
        }
        self.inner.events.emit(match reason {
            Some(reason) => PosEvent::ForwardingBlocked { reason },
            None => PosEvent::ForwardingUnblocked,
        });
    }

    /// The processor accepted our credentials (a receipt delivered, a
    /// lookup answered): they no longer block forwarding.
    pub(crate) fn credentials_accepted(&self) {
        if self.forwarding_blocked() == Some(ForwardingBlockedReason::CredentialsRejected) {
            self.set_forwarding_blocked(None);
        }
    }

    /// What a gateway answer says about forwarding being blocked: a
    /// decision clears it, a refusal blocks it; other errors say nothing.
    pub(crate) fn note_blocking(&self, answer: std::result::Result<(), &GatewayError>) {
        match answer {
            Ok(()) => self.set_forwarding_blocked(None),
            Err(e) if e.account_mismatch() => {
                self.set_forwarding_blocked(Some(ForwardingBlockedReason::AccountMismatch))
            }
            Err(e) if e.credentials_rejected() => {
                self.set_forwarding_blocked(Some(ForwardingBlockedReason::CredentialsRejected))
            }
            Err(e) if e.kind == ForwardErrorKind::Rejected => {
                self.set_forwarding_blocked(Some(ForwardingBlockedReason::ProcessorRefusing))
            }
            Err(_) => {}
        }
    }

    pub(crate) fn gateway(&self) -> Option<Arc<dyn Gateway>> {
        self.inner.forwarding.gateway()
    }

    /// Why forwarding is blocked, if it is ([`PosEvent::ForwardingBlocked`]).
    pub(crate) fn forwarding_blocked(&self) -> Option<ForwardingBlockedReason> {
        *self
            .inner
            .forwarding
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a forwarding round is running (its commits leave the
    /// snapshot to the round's end).
    pub(crate) fn forwarding_round_running(&self) -> bool {
        self.inner.forwarding.round.try_lock().is_err()
    }

    /// The payment event for a processor's answer to attempt `attempt`.
    pub(crate) fn answer_event(
        &self,
        answer: std::result::Result<GatewayDecision, GatewayError>,
        attempt: u32,
    ) -> PaymentEvent {
        if answer.is_ok() {
            self.note_blocking(Ok(()));
        }
        match answer {
            Ok(GatewayDecision::Approved { processor_ref }) => {
                PaymentEvent::Approved { processor_ref }
            }
            Ok(GatewayDecision::Declined { reason }) => PaymentEvent::Declined { reason },
            Err(e) => {
                self.note_blocking(Err(&e));
                let now = self.now();
                let busy = self.inner.forwarding.note_retry_after(&e, now);
                PaymentEvent::ForwardFailed {
                    error: e.kind,
                    next_retry_at: e.kind.is_retryable().then(|| {
                        let retry = now.plus(self.inner.forwarding.backoff(attempt));
                        busy.map_or(retry, |b| retry.max(b))
                    }),
                }
            }
        }
    }

    /// The due payments, most urgent deadline first (B4). Payments that
    /// wait for no automatic retry are due only in a `manual` round.
    pub(crate) fn due_ids(
        &self,
        s: &State,
        now: Timestamp,
        limit: usize,
        manual: bool,
    ) -> Vec<PaymentId> {
        let mut due: Vec<&OfflinePayment> = s
            .ledger
            .payments
            .values()
            .filter(|p| Self::is_due(p, now, manual))
            .collect();
        due.sort_by(|a, b| (a.deadline, &a.id).cmp(&(b.deadline, &b.id)));
        due.into_iter().take(limit).map(|p| p.id.clone()).collect()
    }

    /// Whether payment `p` waits for a forwarding attempt now: before its
    /// deadline, pending or failed with its retry time passed (a manual
    /// round also retries those that wait for one).
    pub(crate) fn is_due(p: &OfflinePayment, now: Timestamp, manual: bool) -> bool {
        p.deadline > now
            && match &p.state {
                PaymentState::Pending => true,
                PaymentState::FailedToForward { next_retry_at, .. } => match next_retry_at {
                    Some(t) => *t <= now,
                    None => manual,
                },
                _ => false,
            }
    }

    /// Whether `id` names a payment taken before and no longer held: its
    /// settled order left memory (`Write::Archive`). The store answers (it
    /// keeps every payment record); it is asked only once the ledger
    /// archived a payment, and never for a payment held in memory.
    pub(crate) async fn payment_archived(&self, id: &PaymentId) -> Result<bool> {
        {
            let s = self.state();
            if s.ledger.payments.contains_key(id) || s.ledger.archived().payments == 0 {
                return Ok(false);
            }
        }
        Ok(self.inner.store.payment_recorded(id).await?)
    }

    /// Records one forwarding step; the error says why a step was refused.
    pub(crate) async fn record_step(
        &self,
        id: &PaymentId,
        event: PaymentEvent,
    ) -> Result<OfflinePayment> {
        let _w = self.write_lock().await;
        if self.payment_archived(id).await? {
            // Final, and out of memory: no step applies to it any more.
            return Err(PosError::InvalidTransition {
                reason: format!(
                    "payment {id} is settled and archived: its outcome is final \
                     (see payment_history)"
                ),
            });
        }
        let now = self.now();
        let (batch, effects) = {
            let s = self.state();
            let mut batch = Vec::new();
            let e = Self::step_writes(&s, &mut batch, id, event, now)?;
            (batch, e)
        };
        self.commit(batch).await?;
        self.emit_steps(vec![effects])
            .pop()
            .ok_or_else(|| PosError::Internal {
                reason: "recorded step vanished".into(),
            })
    }

    pub(crate) fn emit_steps(&self, effects: Vec<StepEffects>) -> Vec<OfflinePayment> {
        let mut out = Vec::with_capacity(effects.len());
        for e in effects {
            self.emit_payment(&e.payment);
            if let Some(notice) = e.decline {
                self.inner.events.emit(PosEvent::PaymentDeclined(notice));
            }
            match e.payment.state.status() {
                PaymentStatus::Expired => self.inner.events.emit(PosEvent::PaymentExpired {
                    payment_id: e.payment.id.clone(),
                    order_id: e.payment.order_id.clone(),
                    amount: e.payment.amount,
                }),
                PaymentStatus::OutcomeUnknown => {
                    self.inner.events.emit(PosEvent::PaymentOutcomeUnknown {
                        payment_id: e.payment.id.clone(),
                        order_id: e.payment.order_id.clone(),
                        amount: e.payment.amount,
                    })
                }
                _ => {}
            }
            out.push(e.payment);
        }
        out
    }

    /// The writes of one step, appended to `batch`: the payment, an audit
    /// entry for each outcome (B12), an expiry entry (R8).
    pub(crate) fn step_writes(
        s: &State,
        batch: &mut Vec<Write>,
        id: &PaymentId,
        event: PaymentEvent,
        now: Timestamp,
    ) -> Result<StepEffects> {
        let Some(p) = s.ledger.payments.get(id).cloned() else {
            return Err(PosError::NotFound {
                what: format!("payment {id}"),
            });
        };
        Self::step_writes_on(s, batch, p, event, now)
    }

    /// [`Self::step_writes`] on payment `p` as it stands (which may be a
    /// step ahead of the ledger when two steps share a batch).
    pub(crate) fn step_writes_on(
        s: &State,
        batch: &mut Vec<Write>,
        mut p: OfflinePayment,
        event: PaymentEvent,
        now: Timestamp,
    ) -> Result<StepEffects> {
        let next = p
            .state
            .apply(event.clone(), Deadline(p.deadline), now)
            .map_err(|e| PosError::InvalidTransition {
                reason: e.to_string(),
            })?;
        let attempt = match &p.state {
            PaymentState::Forwarding { attempt, .. } => *attempt,
            other => other.attempts().unwrap_or(0),
        };
        p.state = next;
        if p.state.is_final() {
            // Settled: the card data is never sent again.
            p.card.forget_card_data();
        }
        batch.push(Write::Payment(Box::new(p.clone())));
        let outcome = match &event {
            PaymentEvent::Approved { processor_ref } => Some(ForwardOutcome::Approved {
                processor_ref: processor_ref.clone(),
            }),
            PaymentEvent::Declined { reason } => Some(ForwardOutcome::Declined {
                reason: reason.clone(),
            }),
            PaymentEvent::ForwardFailed { error, .. } => {
                Some(ForwardOutcome::Failed { error: *error })
            }
            PaymentEvent::StartForwarding
            | PaymentEvent::DeadlineReached
            | PaymentEvent::NotFoundAtProcessor => None,
        };
        if let Some(outcome) = outcome {
            let kind = AuditKind::ForwardAttempt {
                payment_id: p.id.clone(),
                attempt,
                outcome,
            };
            let entry = Self::audit(s, batch, now, None, kind);
            batch.push(entry);
        }
        let kind = match p.state {
            PaymentState::Expired { maybe_received, .. } => Some(AuditKind::PaymentExpired {
                payment_id: p.id.clone(),
                order_id: p.order_id.clone(),
                amount: p.amount,
                maybe_received,
            }),
            PaymentState::OutcomeUnknown { .. } => Some(AuditKind::PaymentOutcomeUnknown {
                payment_id: p.id.clone(),
                order_id: p.order_id.clone(),
                amount: p.amount,
            }),
            _ => None,
        };
        if let Some(kind) = kind {
            let entry = Self::audit(s, batch, now, None, kind);
            batch.push(entry);
        }
        let contact = s
            .ledger
            .orders
            .get(&p.order_id)
            .and_then(|o| o.contact.clone());
        let decline = DeclineNotice::for_payment(
            p.id.clone(),
            p.order_id.clone(),
            p.amount,
            &p.state,
            contact,
        )?;
        Ok(StepEffects {
            payment: p,
            decline,
        })
    }

    /// Wakes the driver (a payment was stored, connectivity changed).
    pub(crate) fn wake_forwarder(&self) {
        self.inner.forwarding.wake.notify_one();
    }
}

/// Per-currency totals of the stored payments (R19).
pub(crate) fn totals(ledger: &Ledger) -> Result<Vec<CurrencyTotals>> {
    let count = |t: Tally| u32::try_from(t.count).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(ledger.status_tallies().len());
    for (&c, t) in ledger.status_tallies() {
        let mut pending = Tally::default();
        for status in [
            PaymentStatus::Pending,
            PaymentStatus::Forwarding,
            PaymentStatus::FailedToForward,
            PaymentStatus::OutcomeUnknown,
        ] {
            pending.count = pending.count.saturating_add(t.get(status).count);
            pending.minor_units = pending
                .minor_units
                .saturating_add(t.get(status).minor_units);
        }
        let approved = t.get(PaymentStatus::Approved);
        let declined = t.get(PaymentStatus::Declined);
        let expired = t.get(PaymentStatus::Expired);
        let unknown = t.get(PaymentStatus::OutcomeUnknown);
        out.push(CurrencyTotals {
            currency: c,
            pending_count: count(pending),
            pending_amount: pending.amount(c)?,
            approved_count: count(approved),
            approved_amount: approved.amount(c)?,
            declined_count: count(declined),
            declined_amount: declined.amount(c)?,
            expired_count: count(expired),
            expired_amount: expired.amount(c)?,
            unknown_count: count(unknown),
            unknown_amount: unknown.amount(c)?,
        });
    }
    Ok(out)
}

/// The rest of a commit whose caller went away while the store was
/// writing: see [`PosEngine::commit`].
struct FinishOnDrop {
    write:
        Option<crate::store::BoxFuture<'static, std::result::Result<(), crate::store::StoreError>>>,
    engine: PosEngine,
    batch: Arc<Vec<Write>>,
    permit: Option<tokio::sync::OwnedMutexGuard<()>>,
    runtime: tokio::runtime::Handle,
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        let (Some(write), Some(permit)) = (self.write.take(), self.permit.take()) else {
            return;
        };
        let engine = self.engine.clone();
        let batch = Arc::clone(&self.batch);
        // A Handle spawns from any thread (the foreign one that dropped us).
        self.runtime.spawn(async move {
            let _permit = permit;
            if write.await.is_ok() {
                let _ = engine.after_write(batch).await;
            }
        });
    }
}

/// A journal replayed as it is read ([`Store::load_each`]), all but its
/// last `lag` records.
struct Replay {
    lag: usize,
    tail: std::collections::VecDeque<Write>,
    ledger: Ledger,
    /// Why a record did not apply (the load was stopped there).
    failure: Option<String>,
}

impl Replay {
    fn new(lag: usize) -> Self {
        Replay {
            lag,
            tail: std::collections::VecDeque::with_capacity(lag.min(4_096)),
            ledger: Ledger::default(),
            failure: None,
        }
    }

    fn push(&mut self, w: Write) -> std::result::Result<(), crate::store::StoreError> {
        self.tail.push_back(w);
        if self.tail.len() > self.lag {
            if let Some(w) = self.tail.pop_front() {
                if let Err(e) = self.ledger.apply(w) {
                    let reason = format!("the journal does not replay: {e}");
                    self.failure = Some(reason.clone());
                    return Err(crate::store::StoreError::Io(reason));
                }
            }
        }
        Ok(())
    }
}

/// Whether a replayed journal is the state a snapshot holds.
fn check_replayed(replayed: &Ledger, state: &[Write]) -> Result<()> {
    let mut snapshot = Ledger::default();
    for w in state {
        snapshot.apply(w.clone()).map_err(|e| PosError::Internal {
            reason: format!("the snapshot does not rebuild: {e}"),
        })?;
    }
    if *replayed != snapshot {
        return Err(PosError::StoreIntegrity {
            reason: "the store's journal and its latest snapshot differ".into(),
            rolled_back: None,
        });
    }
    Ok(())
}

/// Asks the C allocator, on a blocking thread, to return its free pages to
/// the system. Called after the work that frees large transient buffers:
/// the open (the snapshot's plaintext, the copies SQLite and sqlx made of
/// it, the growth of the ledger's collections) and a snapshot's background
/// verification (the whole journal decoded and replayed). glibc (Linux
/// desktops and servers) keeps such pages resident until asked, spread over
/// one arena per thread that allocated them. Android's Scudo and Apple's
/// allocator release free pages by themselves; there this does nothing.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn_blocking(malloc_trim);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn malloc_trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: malloc_trim takes no pointer and touches no live allocation:
    // it only hands free pages back to the system.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use crate::connectivity::ConnectivityConfig;
    use crate::store::MemoryStore;
    use std::sync::mpsc;
    use std::time::Duration;

    fn config() -> EngineConfig {
        EngineConfig::new("/tmp/pos-test", "till-1", "USD").unwrap()
    }

    async fn engine() -> (VirtualClock, PosEngine) {
        let (clock, e, _) = engine_on_store().await;
        (clock, e)
    }

    /// An engine on a memory store the test can look into.
    async fn engine_on_store() -> (VirtualClock, PosEngine, MemoryStore) {
        let clock = VirtualClock::new(Timestamp(1_800_000_000_000));
        let store = MemoryStore::new();
        let e = PosEngine::open_with(config(), Arc::new(clock.clone()), Arc::new(store.clone()))
            .await
            .unwrap();
        (clock, e, store)
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        for (dir, id, cur) in [
            ("", "a", "USD"),
            ("/x", "", "USD"),
            ("/x", "a b", "USD"),
            ("/x", "a", "XYZ"),
        ] {
            assert!(
                matches!(
                    EngineConfig::new(dir, id, cur),
                    Err(PosError::InvalidConfig { .. })
                ),
                "{dir} {id} {cur}"
            );
        }
        assert!(EngineConfig::new("/x", &"a".repeat(65), "USD").is_err());
    }

    #[tokio::test]
    async fn status_starts_unknown_and_empty() {
        let (_, e) = engine().await;
        let s = e.status().unwrap();
        assert_eq!(s.connectivity, ConnectivityState::Unknown);
        assert_eq!(s.pending_offline_payments, 0);
        assert_eq!(s.version, VERSION);
        assert_eq!(s.currency.code(), "USD");
        assert!(
            !s.offline_enabled,
            "offline payments are off by default (R4)"
        );
    }

    #[tokio::test]
    async fn network_reports_change_connectivity_and_emit_events() {
        let (clock, e) = engine().await;
        struct L(Mutex<mpsc::Sender<PosEvent>>);
        impl EventListener for L {
            fn on_event(&self, ev: PosEvent) {
                let _ = self.0.lock().unwrap().send(ev);
            }
        }
        let (tx, rx) = mpsc::channel();
        let _sub = e.subscribe(Arc::new(L(Mutex::new(tx)))).unwrap();
        let t0 = Timestamp(1_800_000_000_000);
        assert_eq!(
            e.report_network(false).await.unwrap(),
            ConnectivityState::NetworkOutage { since: t0 }
        );
        assert_eq!(e.status().unwrap().session_started_at, Some(t0));
        clock.advance(Duration::from_secs(5));
        // The same report again changes nothing and emits nothing.
        assert_eq!(
            e.report_network(false).await.unwrap(),
            ConnectivityState::NetworkOutage { since: t0 }
        );
        e.close();
        let got: Vec<PosEvent> = rx.iter().collect();
        assert!(matches!(got[0], PosEvent::Snapshot { .. }));
        assert!(matches!(
            got[1],
            PosEvent::ConnectivityChanged {
                banner: Some(_),
                ..
            }
        ));
        assert_eq!(got[2], PosEvent::Closed);
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn close_is_idempotent_and_later_calls_fail_typed() {
        let (_, e) = engine().await;
        e.close();
        e.close();
        assert!(e.is_closed());
        assert_eq!(e.status(), Err(PosError::Closed));
        assert_eq!(e.report_network(true).await, Err(PosError::Closed));
    }

    #[tokio::test]
    async fn an_inconsistent_policy_is_refused_and_changes_nothing() {
        let (_, e) = engine().await;
        let usd = Currency::parse("USD").unwrap();
        let mut bad = Policy::shopify_pos(usd).with_enabled(true);
        bad.session.acceptance_window = Duration::ZERO;
        assert!(matches!(
            e.set_policy(bad).await,
            Err(PosError::InvalidPolicy { .. })
        ));
        assert!(!e.policy().unwrap().enabled);
    }

    #[tokio::test]
    async fn an_oversized_policy_string_is_refused_and_nothing_is_stored() {
        let (_clock, e, store) = engine_on_store().await;
        let usd = Currency::parse("USD").unwrap();
        let stored = store.len();
        let mut p = Policy::shopify_pos(usd).with_enabled(true);
        p.offline_readers.insert("W".repeat(10 * 1024 * 1024));
        let r = e.set_policy(p).await;
        let Err(PosError::InvalidPolicy { reason }) = r else {
            panic!("accepted: {r:?}");
        };
        assert!(reason.len() < 200, "{} bytes of reason", reason.len());
        assert_eq!(store.len(), stored);
        assert!(e
            .policy()
            .unwrap()
            .offline_readers
            .iter()
            .all(|m| m.len() < 1000));
    }

    #[tokio::test]
    async fn a_failed_store_write_changes_nothing() {
        let (_clock, e, store) = engine_on_store().await;
        let usd = Currency::parse("USD").unwrap();
        // Opening saved the device id and the clock's anchor, nothing else.
        let opened = store.len();
        assert_eq!(opened, 2);
        store.fail_next_write(crate::store::StoreError::DiskFull);
        let r = e
            .set_policy(Policy::shopify_pos(usd).with_enabled(true))
            .await;
        assert_eq!(
            r,
            Err(PosError::Storage {
                reason: "the device is out of storage space".into()
            })
        );
        assert!(!e.policy().unwrap().enabled);
        assert_eq!(store.len(), opened);
    }

    #[tokio::test]
    async fn recovery_ends_the_session_and_audits_both_edges() {
        let (clock, e) = engine().await;
        e.report_network(false).await.unwrap();
        clock.advance(Duration::from_secs(60));
        e.report_network(true).await.unwrap();
        for _ in 0..ConnectivityConfig::default().healthy_probes_to_recover {
            e.report_probe(ProbeOutcome::Healthy).await.unwrap();
        }
        let s = e.status().unwrap();
        assert!(
            matches!(s.connectivity, ConnectivityState::Online { .. }),
            "{:?}",
            s.connectivity
        );
        assert_eq!(s.session_started_at, None);
        let kinds: Vec<&'static str> = e
            .state()
            .ledger
            .audit
            .entries()
            .iter()
            .map(|a| a.kind.name())
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
    }

    /// The background check replays the journal as it reads it, holding
    /// back the records written since the snapshot: with exactly those
    /// held back (an archive cut among the records before), the replay is
    /// the snapshot; with one too few or too many, it is not.
    #[tokio::test]
    async fn a_lagged_replay_stops_where_the_snapshot_was_taken() {
        let (_clock, e, store) = engine_on_store().await;
        e.sign_in(StaffSession {
            staff_id: crate::lifecycle::StaffId::parse("cashier-1").unwrap(),
            may_take_offline_payments: true,
        })
        .unwrap();
        let cash_sale = || async {
            let id = e
                .create_order(crate::requests::NewOrder {
                    order_id: None,
                    total: Money::new(500, Currency::parse("USD").unwrap()),
                    contact: None,
                })
                .await
                .unwrap()
                .id;
            e.add_cash(&id, Money::new(500, Currency::parse("USD").unwrap()))
                .await
                .unwrap();
        };
        for _ in 0..3 {
            cash_sale().await;
        }
        let mut journal = store.load().await.unwrap();
        let mut ledger = Ledger::default();
        for w in &journal {
            ledger.apply(w.clone()).unwrap();
        }
        let cut = ledger
            .archive_cut(1, 1, None)
            .expect("two orders to archive");
        ledger.apply(Write::Archive(Box::new(cut.clone()))).unwrap();
        journal.push(Write::Archive(Box::new(cut)));
        let state = ledger.snapshot_writes().unwrap();
        // Written after the snapshot.
        let before = store.load().await.unwrap().len();
        cash_sale().await;
        let since = store.load().await.unwrap().split_off(before);
        assert_eq!(since.len(), 2);
        journal.extend(since.iter().cloned());
        let replayed = |lag: usize| {
            let mut replay = Replay::new(lag);
            for w in &journal {
                replay.push(w.clone()).unwrap();
            }
            assert_eq!(replay.tail.len(), lag);
            check_replayed(&replay.ledger, &state)
        };
        replayed(since.len()).unwrap();
        assert!(replayed(since.len() - 1).is_err());
        assert!(replayed(since.len() + 1).is_err());
    }
}
