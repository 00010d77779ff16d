//! Opening an engine: the store is read back and checked, the records of
//! this opening are written, attempts a previous process left in flight are
//! recovered, and the forwarding driver and the anchor watch start. The
//! composition root of the engine: it sits above the checkout and the
//! forwarding rounds.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::audit::{AuditEntry, AuditKind};
use crate::clock::{Clock, SystemClock, Timestamp, TrustedClock};
use crate::connectivity::{ConnectivityConfig, ConnectivityMachine};
use crate::engine::{EngineConfig, Inner, PosEngine, State};
use crate::error::{PosError, Result};
use crate::events::EventBus;
use crate::forwarder::Forwarding;
use crate::ledger::{Ledger, Write};
use crate::store::{MemoryStore, Store};

impl PosEngine {
    /// Opens an engine on the real clock and an in-memory store.
    pub async fn open(config: EngineConfig) -> Result<Self> {
        Self::open_with(config, Arc::new(SystemClock), Arc::new(MemoryStore::new())).await
    }

    /// Opens an engine on the given clock and store: loads what the store
    /// holds (its snapshot, rebuilt, and every record after it:
    /// [`Store::open_state`]), so an engine opened with no network serves
    /// what it stored before (B10).
    pub async fn open_with(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
    ) -> Result<Self> {
        let forwarding = Forwarding::new(config.forwarding.clone())?;
        let anchor_clock = Arc::clone(&clock);
        let started = std::time::Instant::now();
        let (mut ledger, records) = store.open_state().await?;
        for w in records {
            ledger.apply(w).map_err(|e| PosError::Internal {
                reason: e.to_string(),
            })?;
        }
        // Trusted time never restarts below anything already recorded: the
        // persisted floor, nor the last audit entry (audited steps such as
        // forwarding outcomes do not move the floor, and the journal refuses
        // an entry dated before the previous one).
        let last_audit = ledger.audit.entries().last().map(|e| e.at);
        let floor = ledger
            .settings
            .as_ref()
            .map(|s| s.clock_floor)
            .max(last_audit);
        // In the boot of the persisted anchor, trusted time goes on from
        // time since boot; after a reboot it restarts from the wall clock.
        // Payment ids are scoped by the device id at the processor: a store
        // opens only under the device id its payments were taken under.
        if let Some(d) = &ledger.device_id {
            if *d != config.device_id {
                tracing::warn!("engine not opened: the store belongs to another device id");
                return Err(PosError::InvalidConfig {
                    reason: format!(
                        "this store belongs to device id {d:?}, not {:?}: its payments are \
                         known to the processor under that id",
                        config.device_id
                    ),
                });
            }
        }
        // Payments are forwarded under the account they were taken for: a
        // store opens for no other account than its own.
        if let (Some(stored), Some(configured)) = (&ledger.account, &config.account) {
            if stored != configured {
                tracing::warn!("engine not opened: the store belongs to another merchant account");
                return Err(PosError::AccountMismatch {
                    stored: stored.to_string(),
                    configured: configured.to_string(),
                });
            }
        }
        let clock = TrustedClock::resume(clock, floor, ledger.clock_anchor.as_ref());
        Self::save_open_records(&mut ledger, store.as_ref(), &clock, &config).await?;
        let now = clock.now();
        Self::recover_attempts_in_flight(&mut ledger, store.as_ref(), now).await?;
        let connectivity =
            ConnectivityMachine::new(ConnectivityConfig::default(), now).map_err(|e| {
                PosError::Internal {
                    reason: e.to_string(),
                }
            })?;
        let events = EventBus::start().map_err(|e| PosError::Internal {
            reason: format!("event thread: {e}"),
        })?;
        tracing::info!(
            payments = ledger.payments.len(),
            orders = ledger.orders.len(),
            elapsed = ?started.elapsed(),
            "engine opened"
        );
        let state = State {
            ledger,
            connectivity,
            staff: None,
            begun: BTreeMap::new(),
        };
        let inner = Inner {
            config,
            clock,
            state: Mutex::new(state),
            write_lock: tokio::sync::Mutex::new(()),
            commit_lock: Arc::new(tokio::sync::Mutex::new(())),
            store,
            events,
            forwarding,
            closed: AtomicBool::new(false),
            background: AtomicBool::new(false),
            archive_wanted: AtomicBool::new(false),
            anchors: Arc::default(),
            anchor_clock,
            verify: Arc::default(),
            inbox: crate::inbox::Inbox::new(),
            order_source: crate::engine::OrderSourceSlot::default(),
        };
        let engine = PosEngine {
            inner: Arc::new(inner),
        };
        engine.watch_anchors();
        engine.start_driver();
        // The open's transient buffers are freed: hand their pages back.
        crate::engine::release_freed_memory();
        Ok(engine)
    }

    /// Listens to the store's anchor saves: a failure is an event (the
    /// first of a run) and shows in [`EngineStatus::anchor`]. The reporter
    /// holds the watch, the clock and the bus, never the engine: it runs on
    /// the store's thread, where dropping the last engine would wait on
    /// that very thread.
    fn watch_anchors(&self) {
        let watch = Arc::clone(&self.inner.anchors);
        let clock = Arc::clone(&self.inner.anchor_clock);
        let bus = Arc::downgrade(&self.inner.events);
        let kept = self.inner.store.report_anchors(Arc::new(move |report| {
            let event = watch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(report, clock.since_boot());
            if let (Some(e), Some(bus)) = (event, bus.upgrade()) {
                bus.emit(e);
            }
        }));
        self.inner
            .anchors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kept = kept;
    }

    /// Persists, in one batch, the device id the store belongs to (once) and
    /// the clock's anchor when it differs from the saved one (a new boot,
    /// the first start), before anything is stamped with its time: the next
    /// start in this boot then resumes from it, whatever the wall clock says.
    async fn save_open_records(
        ledger: &mut Ledger,
        store: &dyn Store,
        clock: &TrustedClock,
        config: &EngineConfig,
    ) -> Result<()> {
        let mut batch = Vec::new();
        if ledger.device_id.is_none() {
            batch.push(Write::Device {
                device_id: config.device_id.clone(),
            });
        }
        if let (None, Some(account)) = (&ledger.account, &config.account) {
            // The first binding, audited like every switch.
            batch.push(Write::Account(account.clone()));
            batch.push(Write::Audit(AuditEntry {
                seq: ledger.next_audit_seq(),
                at: clock.now(),
                actor: None,
                kind: AuditKind::AccountSwitched {
                    from: None,
                    to: account.clone(),
                },
                account: Some(account.clone()),
            }));
        }
        let anchor = clock.anchor();
        if anchor.supersedes(ledger.clock_anchor.as_ref()) {
            batch.push(Write::Clock(anchor));
        }
        if batch.is_empty() {
            return Ok(());
        }
        store.apply(&batch).await?;
        for w in batch {
            ledger.apply(w).map_err(|e| PosError::Internal {
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// An attempt in flight when the previous process ended (crash, kill,
    /// power loss) cannot still be running: it is recorded as failed with no
    /// answer (the processor may hold it), durably, so that the payment is
    /// retried with the same id, or expires at its deadline, instead of
    /// staying "forwarding" for ever (see `PaymentState::Forwarding`).
    async fn recover_attempts_in_flight(
        ledger: &mut Ledger,
        store: &dyn Store,
        now: Timestamp,
    ) -> Result<()> {
        use crate::audit::ForwardOutcome;
        use crate::lifecycle::{Deadline, ForwardErrorKind, PaymentEvent, PaymentState};
        let internal = |e: String| PosError::Internal { reason: e };
        let mut batch = Vec::new();
        let mut seq = ledger.next_audit_seq();
        for p in ledger.payments.values() {
            let PaymentState::Forwarding { attempt, .. } = p.state else {
                continue;
            };
            let mut p = p.clone();
            // Due again at once: the forwarding driver retries it with the
            // same id (an automatic round skips payments with no retry time).
            let failed = PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::NoAnswer,
                next_retry_at: Some(now),
            };
            p.state = p
                .state
                .apply(failed, Deadline(p.deadline), now)
                .map_err(|e| internal(e.to_string()))?;
            let kind = AuditKind::ForwardAttempt {
                payment_id: p.id.clone(),
                attempt,
                outcome: ForwardOutcome::Failed {
                    error: ForwardErrorKind::NoAnswer,
                },
            };
            batch.push(Write::Payment(Box::new(p)));
            batch.push(Write::Audit(AuditEntry {
                seq,
                at: now,
                actor: None,
                kind,
                account: ledger.account.clone(),
            }));
            seq = seq.saturating_add(1);
        }
        if batch.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            payments = batch.len() / 2,
            "attempts left in flight by the previous process recorded as unanswered: \
             retried with the same ids"
        );
        store.apply(&batch).await?;
        for w in batch {
            ledger.apply(w).map_err(|e| internal(e.to_string()))?;
        }
        Ok(())
    }
}
