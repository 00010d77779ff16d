//! The forwarding engine (SPEC R3, R8, B2, B4, B5): sends every stored
//! offline payment to the processor, exactly once, most urgent deadline
//! first, and tells the app each outcome.
//!
//! How "exactly once" holds:
//! - before a request leaves, the payment is durably `Forwarding` (B2), in a
//!   group commit with the other payments of the same refill;
//! - every request carries the payment's stable id as its idempotency key,
//!   so a retry after a lost answer returns the first decision instead of
//!   charging again;
//! - an attempt found `Forwarding` at start-up (a crash during it) is
//!   recorded as "no answer" and retried with the same id; so is one whose
//!   task was lost while the engine runs ([`LiveAttempt`]: a failed round, a
//!   panicking gateway), at the next tick, which the lost task wakes;
//! - a round runs on its own task: a caller that stops waiting for
//!   [`PosEngine::forward_now`] (a cancelled coroutine or Swift task) does
//!   not stop it, and every answer received is recorded;
//! - a payment some attempt may have reached is never expired on the
//!   device's word alone: at its deadline it becomes `OutcomeUnknown`, and
//!   rounds ask the processor about that id ([`Gateway::payment_status`])
//!   until it answers; only "not found" expires it;
//! - the state machine ([`PaymentState::apply`]) never starts an attempt at
//!   or after the deadline (R8) and never accepts a second, different outcome.
//!
//! A *round* ([`PosEngine::forward_now`]) sends everything due now with at
//! most `max_in_flight` requests at once, records results in group commits as
//! they arrive, and ends when nothing due is left; failed attempts get a
//! retry time with exponential back-off and jitter. The *driver*, a tokio
//! task started with the engine, runs rounds by itself: when connectivity
//! returns (R3), when a payment is stored while online, and when a retry
//! falls due; it also probes the service while offline. Tests turn it off
//! ([`ForwardingConfig::automatic`]) and run rounds on a virtual clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::audit::{AuditKind, ForwardOutcome};
use crate::clock::{duration_ms, Timestamp};
use crate::connectivity::{ConnectivityState, ProbeOutcome};
use crate::engine::{PosEngine, State};
use crate::error::{PosError, Result};
use crate::events::PosEvent;
use crate::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, PaymentLookup,
    ServiceStatus, StatusAnswer, StatusQuery, MAX_RETRY_AFTER,
};
use crate::ledger::{OfflinePayment, Write};
use crate::lifecycle::{
    Deadline, DeclineNotice, ForwardErrorKind, PaymentEvent, PaymentId, PaymentState, PaymentStatus,
};
use crate::money::Money;

/// How the forwarding engine behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingConfig {
    /// Requests in flight at once (1–256).
    pub max_in_flight: usize,
    /// Back-off before the first retry; doubled at each attempt.
    pub retry_base: Duration,
    /// Longest back-off.
    pub retry_max: Duration,
    /// Whether the driver forwards by itself. Off in tests that run rounds
    /// themselves on a virtual clock.
    pub automatic: bool,
    /// Seed of the back-off jitter (deterministic tests); `None` draws one.
    pub jitter_seed: Option<u64>,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        ForwardingConfig {
            max_in_flight: 32,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(10 * 60),
            automatic: true,
            jitter_seed: None,
        }
    }
}

impl ForwardingConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(1..=256).contains(&self.max_in_flight) {
            return Err(PosError::InvalidConfig {
                reason: "max_in_flight must be 1-256".into(),
            });
        }
        if self.retry_base.is_zero() || self.retry_max < self.retry_base {
            return Err(PosError::InvalidConfig {
                reason: "retry_base must be > 0 and <= retry_max".into(),
            });
        }
        Ok(())
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardReport {
    /// Attempts started.
    pub attempts: u64,
    pub approved: u64,
    pub declined: u64,
    /// Attempts that ended without a decision (retried later).
    pub failed: u64,
    /// Payments expired by this round (R8).
    pub expired: u64,
    /// Receipts queued offline and delivered in this round (R16).
    pub receipts_sent: u64,
    /// Payments whose outcome is still unknown at the end of the round
    /// (deadline passed, the processor not yet able to say what it decided).
    pub outcome_unknown: u64,
}

/// Why forwarding is blocked ([`PosEvent::ForwardingBlocked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardingBlockedReason {
    /// The processor refused the credentials (401 or 403): the token
    /// provider must supply new ones.
    CredentialsRejected,
    /// The processor refused a request for another reason (a 4xx): it
    /// needs a person (the processor's support, a configuration fix).
    ProcessorRefusing,
    /// The store cannot be written: its key is unavailable (the device is
    /// locked).
    StoreLocked,
    /// The processor refused a payment sent under its own merchant account
    /// with credentials of another (`account_mismatch`): the token provider
    /// must supply that account's credentials (`TokenProvider::token_for`).
    /// Never a decline: the payment waits.
    AccountMismatch,
}

/// Progress of the current round, for a progress bar (B5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingProgress {
    /// Payments with a decision in this round.
    pub done: u64,
    /// Payments due when the round started (plus any added during it).
    pub total: u64,
    /// Amount of the decided payments, shop currency.
    pub amount_done: Money,
    /// Amount of all payments of the round, shop currency.
    pub amount_total: Money,
    /// The round is over.
    pub finished: bool,
}

/// The forwarding part of the engine's shared state.
#[derive(Debug)]
pub(crate) struct Forwarding {
    pub(crate) config: ForwardingConfig,
    gateway: Mutex<Option<Arc<dyn Gateway>>>,
    paused: AtomicBool,
    /// Wakes the driver: connectivity back, payment stored, forward now,
    /// resume, close.
    pub(crate) wake: Arc<Notify>,
    /// One round at a time.
    round: tokio::sync::Mutex<()>,
    /// Jitter generator state (splitmix64).
    rng: Mutex<u64>,
    /// The payments whose attempt has a live task (see [`LiveAttempt`]),
    /// with how many live attempts name each.
    live: Arc<Mutex<BTreeMap<PaymentId, usize>>>,
    /// Attempts the app started through `record_forwarding`, held until it
    /// records their outcome.
    held: Mutex<BTreeMap<PaymentId, LiveAttempt>>,
    /// When an automatic round last asked the processor about payments of
    /// unknown outcome (manual rounds always ask).
    last_lookup: Mutex<Option<Timestamp>>,
    /// Until when the processor asked the whole gateway to wait (a 429 or
    /// 503 with `Retry-After`): no round starts a request before then.
    busy_until: Mutex<Option<Timestamp>>,
    /// Why forwarding is blocked, if it is.
    blocked: Mutex<Option<ForwardingBlockedReason>>,
}

/// One forwarding attempt whose task is alive: the task that will record
/// its answer (a round's, or an online confirmation's) holds it. Registered
/// under the write lock before the payment is made `Forwarding`, released
/// once the answer is recorded. A `Forwarding` payment with no live attempt
/// lost its task (a failed round, a panicking gateway, a dropped task): the
/// next tick records it as "no answer" and it is retried with the same id.
/// Dropping an attempt whose answer was not recorded wakes the driver for
/// that tick.
#[derive(Debug)]
pub(crate) struct LiveAttempt {
    live: Arc<Mutex<BTreeMap<PaymentId, usize>>>,
    wake: Arc<Notify>,
    id: PaymentId,
    recorded: bool,
}

impl LiveAttempt {
    /// The answer is recorded: nothing to recover.
    pub(crate) fn recorded(mut self) {
        self.recorded = true;
    }
}

impl Drop for LiveAttempt {
    fn drop(&mut self) {
        {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = live.get_mut(&self.id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    live.remove(&self.id);
                }
            }
        }
        if !self.recorded {
            self.wake.notify_one();
        }
    }
}

impl Forwarding {
    pub(crate) fn new(config: ForwardingConfig) -> Result<Self> {
        config.validate()?;
        let seed = match config.jitter_seed {
            Some(s) => s,
            None => {
                let mut b = [0u8; 8];
                use ring::rand::SecureRandom;
                ring::rand::SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| PosError::Internal {
                        reason: "no randomness available".into(),
                    })?;
                u64::from_le_bytes(b)
            }
        };
        Ok(Forwarding {
            config,
            gateway: Mutex::new(None),
            paused: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            round: tokio::sync::Mutex::new(()),
            rng: Mutex::new(seed),
            live: Arc::new(Mutex::new(BTreeMap::new())),
            held: Mutex::new(BTreeMap::new()),
            last_lookup: Mutex::new(None),
            busy_until: Mutex::new(None),
            blocked: Mutex::new(None),
        })
    }

    /// Registers a live attempt for `id` (call under the write lock, before
    /// the commit that makes the payment `Forwarding`).
    pub(crate) fn live_attempt(&self, id: &PaymentId) -> LiveAttempt {
        *self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_insert(0) += 1;
        LiveAttempt {
            live: Arc::clone(&self.live),
            wake: Arc::clone(&self.wake),
            id: id.clone(),
            recorded: false,
        }
    }

    /// When attempt `attempt + 1` may start, counted from `now`.
    pub(crate) fn retry_at(&self, now: Timestamp, attempt: u32) -> Timestamp {
        now.plus(self.backoff(attempt))
    }

    /// Whether the app holds the attempt in flight for `id` (it started it
    /// through `record_forwarding`).
    pub(crate) fn holds(&self, id: &PaymentId) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Whether the attempt in flight for `id` still has a live task.
    pub(crate) fn is_live(&self, id: &PaymentId) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Keeps an attempt the app started live until [`Self::release`].
    pub(crate) fn hold(&self, attempt: LiveAttempt) {
        let id = attempt.id.clone();
        let old = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, attempt);
        if let Some(old) = old {
            old.recorded();
        }
    }

    /// The app recorded the outcome of the attempt it started.
    pub(crate) fn release(&self, id: &PaymentId) {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(attempt) = held {
            attempt.recorded();
        }
    }

    /// The end of the processor's `Retry-After`, while it is in the future,
    /// never more than [`MAX_RETRY_AFTER`] away (a correction that moved the
    /// trusted clock back does not lengthen the wait).
    fn busy_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.busy_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .filter(|t| *t > now)
            .map(|t| t.min(now.plus(MAX_RETRY_AFTER)))
    }

    /// Notes an error's `Retry-After` (the latest end wins); returns the
    /// time the gateway is busy until.
    fn note_retry_after(&self, e: &GatewayError, now: Timestamp) -> Option<Timestamp> {
        let wait = e.retry_after?;
        let until = now.plus(wait);
        let mut busy = self.busy_until.lock().unwrap_or_else(|p| p.into_inner());
        let until = busy.filter(|t| *t > until).unwrap_or(until);
        *busy = Some(until);
        Some(until)
    }

    fn gateway(&self) -> Option<Arc<dyn Gateway>> {
        self.gateway
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// splitmix64: small, seedable, good enough for jitter.
    fn next_random(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Back-off before attempt `attempt + 1`: base × 2^(attempt−1), capped,
    /// with "equal jitter" (between half and all of it).
    fn backoff(&self, attempt: u32) -> Duration {
        let base = duration_ms(self.config.retry_base).max(1);
        let max = duration_ms(self.config.retry_max).max(base);
        let shift = attempt.saturating_sub(1).min(30);
        let full = base.saturating_mul(1i64 << shift).min(max);
        let half = full / 2;
        let span = u64::try_from(full - half).unwrap_or(0).saturating_add(1);
        let extra = i64::try_from(self.next_random() % span).unwrap_or(0);
        Duration::from_millis(u64::try_from(half + extra).unwrap_or(0))
    }
}

/// Adds `amount` to `total` when they share a currency (progress is shown
/// in the shop's currency).
fn add_if_same_currency(total: &mut Money, amount: Money) {
    if amount.currency() == total.currency() {
        *total = total.checked_add(&amount).unwrap_or(*total);
    }
}

/// Calls the gateway; a panic in it is an answer that never came (the
/// request may have left): "no answer", retried with back-off like any other.
pub(crate) fn guarded<T>(
    call: impl FnOnce() -> std::result::Result<T, GatewayError>,
) -> std::result::Result<T, GatewayError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(GatewayError::new(
            ForwardErrorKind::NoAnswer,
            "the gateway panicked",
        ))
    })
}

/// The effects of one recorded step, emitted after its commit.
pub(crate) struct StepEffects {
    pub(crate) payment: OfflinePayment,
    decline: Option<DeclineNotice>,
}

impl PosEngine {
    /// Sets (or replaces) the processor gateway used for forwarding, online
    /// payments, probes and receipts, and wakes the driver.
    pub fn set_gateway(&self, gateway: Arc<dyn Gateway>) -> Result<()> {
        self.check_open()?;
        *self
            .inner
            .forwarding
            .gateway
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(gateway);
        self.inner.forwarding.wake.notify_one();
        Ok(())
    }

    pub(crate) fn gateway(&self) -> Option<Arc<dyn Gateway>> {
        self.inner.forwarding.gateway()
    }

    /// Pauses automatic forwarding (B5). Attempts in flight finish; no new
    /// one starts until [`resume_forwarding`](Self::resume_forwarding) or
    /// [`forward_now`](Self::forward_now).
    pub fn pause_forwarding(&self) -> Result<()> {
        self.check_open()?;
        self.inner.forwarding.paused.store(true, Ordering::Release);
        Ok(())
    }

    /// Resumes automatic forwarding (B5).
    pub fn resume_forwarding(&self) -> Result<()> {
        self.check_open()?;
        self.inner.forwarding.paused.store(false, Ordering::Release);
        self.inner.forwarding.wake.notify_one();
        Ok(())
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
        self.inner.events.emit(match reason {
            Some(reason) => PosEvent::ForwardingBlocked { reason },
            None => PosEvent::ForwardingUnblocked,
        });
    }

    /// The processor accepted our credentials (a receipt delivered, a
    /// lookup answered): they no longer block forwarding.
    fn credentials_accepted(&self) {
        if self.forwarding_blocked() == Some(ForwardingBlockedReason::CredentialsRejected) {
            self.set_forwarding_blocked(None);
        }
    }

    /// What a gateway answer says about forwarding being blocked: a
    /// decision clears it, a refusal blocks it; other errors say nothing.
    fn note_blocking(&self, answer: std::result::Result<(), &GatewayError>) {
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

    /// Whether automatic forwarding is paused.
    pub fn forwarding_paused(&self) -> bool {
        self.inner.forwarding.paused.load(Ordering::Acquire)
    }

    /// Forwards everything due now and returns when it is done (B5: "forward
    /// now"), whatever the connectivity state and even when paused (the
    /// pause is lifted). Expired payments are reported first (R8).
    ///
    /// The round runs on its own task: if the caller stops waiting (a
    /// cancelled Kotlin coroutine or Swift task), the round still finishes
    /// and records every answer.
    pub async fn forward_now(&self) -> Result<ForwardReport> {
        self.check_open()?;
        self.inner.forwarding.paused.store(false, Ordering::Release);
        let engine = self.clone();
        tokio::spawn(async move { engine.forward_round(true).await })
            .await
            .map_err(|e| PosError::Internal {
                reason: format!("forwarding round failed: {e}"),
            })?
    }

    /// One round: see the module documentation.
    ///
    /// A `manual` round also retries payments whose last error was not
    /// retryable (they wait for "forward now"); an automatic one does not.
    pub(crate) async fn forward_round(&self, manual: bool) -> Result<ForwardReport> {
        let gateway = self.gateway().ok_or(PosError::OnlineUnavailable)?;
        let _round = self.inner.forwarding.round.lock().await;
        let mut report = ForwardReport {
            expired: self.tick().await?.expired.len() as u64,
            ..ForwardReport::default()
        };
        let max = self.inner.forwarding.config.max_in_flight;
        let currency = self.inner.config.currency;
        let due = {
            let s = self.state();
            self.due_ids(&s, self.now(), usize::MAX, manual)
        };
        let mut counted: BTreeSet<PaymentId> = due.iter().cloned().collect();
        // Each payment is attempted at most once per round: a failure waits
        // for its retry time (or the next manual round), never loops here.
        let mut tried: BTreeSet<PaymentId> = BTreeSet::new();
        let mut progress = ForwardingProgress {
            done: 0,
            total: due.len() as u64,
            amount_done: Money::zero(currency),
            amount_total: self.amount_of(&due),
            finished: false,
        };
        if !due.is_empty() {
            self.inner
                .events
                .emit(PosEvent::ForwardingProgress(progress.clone()));
        }
        type Answer = (
            PaymentId,
            u32,
            std::result::Result<GatewayDecision, GatewayError>,
            LiveAttempt,
        );
        let mut in_flight: JoinSet<Answer> = JoinSet::new();
        let mut steps: Vec<(PaymentId, PaymentEvent)> = Vec::new();
        // The live attempts of the answers in `steps`, released once these
        // are recorded.
        let mut answered: Vec<LiveAttempt> = Vec::new();
        // The first store error: no new attempt starts after it, but the
        // answers of those in flight are still waited for and recorded if
        // the store takes them.
        let mut failure: Option<PosError> = None;
        loop {
            // One commit records the answers received and marks the next
            // due payments as in flight (durably, before they are sent).
            let free = max.saturating_sub(in_flight.len());
            // The processor's `Retry-After` holds back every new attempt,
            // in manual rounds too.
            let may_start = failure.is_none()
                && free > 0
                && !self.forwarding_paused()
                && !self.is_closed()
                && self.inner.forwarding.busy_until(self.now()).is_none();
            match self
                .settle_and_start(&mut steps, if may_start { free } else { 0 }, manual, &tried)
                .await
            {
                Ok((recorded, started)) => {
                    if self.forwarding_blocked() == Some(ForwardingBlockedReason::StoreLocked)
                        && (!recorded.is_empty() || !started.is_empty())
                    {
                        // The store took a write again.
                        self.set_forwarding_blocked(None);
                    }
                    answered.drain(..).for_each(LiveAttempt::recorded);
                    if !recorded.is_empty() {
                        for p in recorded {
                            if p.state.is_final() {
                                progress.done += 1;
                                add_if_same_currency(&mut progress.amount_done, p.amount);
                            }
                        }
                        self.inner
                            .events
                            .emit(PosEvent::ForwardingProgress(progress.clone()));
                    }
                    for (request, attempt, live) in started {
                        report.attempts += 1;
                        tried.insert(request.payment_id.clone());
                        if counted.insert(request.payment_id.clone()) {
                            // Became due during the round (a retry time
                            // passed, a payment stored): it joins the total.
                            progress.total += 1;
                            add_if_same_currency(&mut progress.amount_total, request.amount);
                        }
                        let gw = Arc::clone(&gateway);
                        in_flight.spawn_blocking(move || {
                            let id = request.payment_id.clone();
                            let answer = guarded(|| match &request.online {
                                Some(auth) => gw.authorize(auth),
                                None => gw.forward(&request),
                            });
                            (id, attempt, answer, live)
                        });
                    }
                }
                Err(e) => {
                    if matches!(e, PosError::StoreLocked) {
                        self.set_forwarding_blocked(Some(ForwardingBlockedReason::StoreLocked));
                    }
                    failure.get_or_insert(e);
                }
            }
            let Some(first) = in_flight.join_next().await else {
                break;
            };
            let mut results = vec![first];
            while let Some(more) = in_flight.try_join_next() {
                results.push(more);
            }
            for r in results {
                // A task that panicked dropped its live attempt: the next
                // tick records it as "no answer".
                let Ok((id, attempt, outcome, live)) = r else {
                    report.failed += 1;
                    continue;
                };
                match &outcome {
                    Ok(GatewayDecision::Approved { .. }) => report.approved += 1,
                    Ok(GatewayDecision::Declined { .. }) => report.declined += 1,
                    Err(_) => report.failed += 1,
                }
                steps.push((id, self.answer_event(outcome, attempt)));
                answered.push(live);
            }
        }
        if failure.is_some() && !steps.is_empty() {
            // One last try for the answers the failed commits left.
            if self
                .settle_and_start(&mut steps, 0, manual, &tried)
                .await
                .is_ok()
            {
                answered.drain(..).for_each(LiveAttempt::recorded);
            }
        }
        // Answers still unrecorded release their attempts as lost.
        drop(answered);
        if !due.is_empty() || report.attempts > 0 {
            progress.finished = true;
            self.inner
                .events
                .emit(PosEvent::ForwardingProgress(progress));
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if self.inner.forwarding.busy_until(self.now()).is_none() {
            self.ask_about_unknown_outcomes(&gateway, manual, &mut report)
                .await?;
        }
        if self.inner.forwarding.busy_until(self.now()).is_none() {
            report.receipts_sent = self.deliver_receipts(&gateway).await?;
        }
        // The snapshot the round's commits made due (they do not take one
        // while the round runs: see `after_write`), once, at its end.
        self.compact_if_due().await;
        Ok(report)
    }

    /// Asks the processor about every payment of unknown outcome and
    /// records its answers: approved, declined, or expired when it has no
    /// record of the id. No answer leaves the payment as it is. An automatic
    /// round asks at most once per `retry_base`; a manual one always.
    async fn ask_about_unknown_outcomes(
        &self,
        gateway: &Arc<dyn Gateway>,
        manual: bool,
        report: &mut ForwardReport,
    ) -> Result<()> {
        let now = self.now();
        let unknown: Vec<PaymentId> = self
            .state()
            .ledger
            .payments
            .values()
            .filter(|p| matches!(p.state, PaymentState::OutcomeUnknown { .. }))
            .map(|p| p.id.clone())
            .collect();
        report.outcome_unknown = unknown.len() as u64;
        if unknown.is_empty() {
            return Ok(());
        }
        {
            let f = &self.inner.forwarding;
            let mut last = f.last_lookup.lock().unwrap_or_else(|p| p.into_inner());
            if !manual && last.is_some_and(|t| now < t.plus(f.config.retry_base)) {
                return Ok(());
            }
            *last = Some(now);
        }
        let device_id = self.inner.config.device_id.clone();
        let mut steps = Vec::new();
        for chunk in unknown.chunks(self.inner.forwarding.config.max_in_flight) {
            // The processor asked to wait (`Retry-After`): the rest wait too.
            if self.inner.forwarding.busy_until(self.now()).is_some() {
                break;
            }
            let mut asking = JoinSet::new();
            for id in chunk {
                let gw = Arc::clone(gateway);
                let query = StatusQuery {
                    device_id: device_id.clone(),
                    payment_id: id.clone(),
                    account: self
                        .state()
                        .ledger
                        .payments
                        .get(id)
                        .and_then(|p| p.account.clone()),
                };
                asking.spawn_blocking(move || {
                    let answer = gw.payment_status(&query);
                    (query.payment_id, answer)
                });
            }
            while let Some(r) = asking.join_next().await {
                let Ok((id, answer)) = r else { continue };
                if answer.is_ok() {
                    self.credentials_accepted();
                }
                let event = match answer {
                    Ok(PaymentLookup::Decided(GatewayDecision::Approved { processor_ref })) => {
                        report.approved += 1;
                        PaymentEvent::Approved { processor_ref }
                    }
                    Ok(PaymentLookup::Decided(GatewayDecision::Declined { reason })) => {
                        report.declined += 1;
                        PaymentEvent::Declined { reason }
                    }
                    Ok(PaymentLookup::NotFound) => {
                        report.expired += 1;
                        PaymentEvent::NotFoundAtProcessor
                    }
                    Ok(PaymentLookup::InProgress) => continue,
                    Err(e) => {
                        self.inner.forwarding.note_retry_after(&e, self.now());
                        continue;
                    }
                };
                steps.push((id, event));
            }
        }
        let decided = steps.len() as u64;
        self.settle_and_start(&mut steps, 0, manual, &BTreeSet::new())
            .await?;
        report.outcome_unknown = report.outcome_unknown.saturating_sub(decided);
        Ok(())
    }

    /// Whether a forwarding round is running (its commits leave the
    /// snapshot to the round's end).
    pub(crate) fn forwarding_round_running(&self) -> bool {
        self.inner.forwarding.round.try_lock().is_err()
    }

    /// Delivers the receipts queued offline (R16), one attempt each; a
    /// transient failure leaves the receipt queued for the next round.
    /// Returns how many were delivered.
    async fn deliver_receipts(&self, gateway: &Arc<dyn Gateway>) -> Result<u64> {
        use crate::lifecycle::{ReceiptChannel, ReceiptEvent};
        let mut sent = 0;
        for (id, request) in self.queued_receipts()? {
            let (channel, address) = match &request.channel {
                ReceiptChannel::Email(e) => ("email", e.reveal().to_owned()),
                ReceiptChannel::Sms(p) => ("sms", p.reveal().to_owned()),
            };
            let delivery = crate::gateway::ReceiptDelivery {
                device_id: self.inner.config.device_id.clone(),
                receipt_id: format!("{}-r{id}", self.inner.config.device_id),
                order_id: request.order_id.clone(),
                channel: channel.to_owned(),
                address,
                account: request.account.clone(),
            };
            let gw = Arc::clone(gateway);
            let answer = tokio::task::spawn_blocking(move || gw.deliver_receipt(&delivery))
                .await
                .map_err(|e| PosError::Internal {
                    reason: format!("receipt task failed: {e}"),
                })?;
            let mut busy = false;
            let event = match answer {
                Ok(()) => {
                    sent += 1;
                    self.credentials_accepted();
                    ReceiptEvent::Delivered
                }
                // Refused credentials say nothing about the receipt: it
                // waits, and so do the others, for a usable token.
                Err(e) if e.credentials_rejected() => {
                    self.note_blocking(Err(&e));
                    busy = true;
                    ReceiptEvent::TransientFailure
                }
                Err(e) if e.kind == ForwardErrorKind::Rejected => ReceiptEvent::PermanentFailure,
                Err(e) => {
                    busy = self
                        .inner
                        .forwarding
                        .note_retry_after(&e, self.now())
                        .is_some();
                    ReceiptEvent::TransientFailure
                }
            };
            self.record_receipt(id, event).await?;
            if busy {
                // The processor asked to wait: the others wait too.
                break;
            }
        }
        Ok(sent)
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

    fn amount_of(&self, ids: &[PaymentId]) -> Money {
        let currency = self.inner.config.currency;
        let s = self.state();
        ids.iter()
            .filter_map(|id| s.ledger.payments.get(id))
            .filter(|p| p.amount.currency() == currency)
            .fold(Money::zero(currency), |acc, p| {
                acc.checked_add(&p.amount).unwrap_or(acc)
            })
    }

    /// In one commit: records the answers in `steps` and marks up to
    /// `limit` due payments (not in `skip`) as in flight. Returns the
    /// payments as recorded and the requests to send, each with its live
    /// attempt. `steps` is emptied once recorded; a failed commit leaves it
    /// as it was, to try again.
    #[allow(clippy::type_complexity)]
    async fn settle_and_start(
        &self,
        steps: &mut Vec<(PaymentId, PaymentEvent)>,
        limit: usize,
        manual: bool,
        skip: &BTreeSet<PaymentId>,
    ) -> Result<(Vec<OfflinePayment>, Vec<(ForwardRequest, u32, LiveAttempt)>)> {
        if steps.is_empty() && limit == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let _w = self.write_lock().await;
        let now = self.now();
        let (batch, effects, started) = {
            let s = self.state();
            let mut batch = Vec::new();
            let mut effects = Vec::new();
            for (id, event) in steps.iter() {
                let (id, event) = (id, event.clone());
                // A step the payment cannot take is skipped, never applied.
                if let Ok(e) = Self::step_writes(&s, &mut batch, id, event, now) {
                    effects.push(e);
                }
            }
            let mut started = Vec::new();
            if limit > 0 {
                let due = self.due_ids(&s, now, limit.saturating_add(skip.len()), manual);
                for id in due.into_iter().filter(|id| !skip.contains(id)).take(limit) {
                    let Some(p) = s.ledger.payments.get(&id) else {
                        continue;
                    };
                    let Ok(next) =
                        p.state
                            .apply(PaymentEvent::StartForwarding, Deadline(p.deadline), now)
                    else {
                        continue;
                    };
                    let attempt = next.attempts().unwrap_or(1);
                    let mut p = p.clone();
                    p.state = next;
                    let live = self.inner.forwarding.live_attempt(&id);
                    started.push((self.request_for(&s, &p, attempt), attempt, live));
                    batch.push(Write::Payment(Box::new(p)));
                }
            }
            (batch, effects, started)
        };
        if let Err(e) = self.commit(batch).await {
            // Nothing was marked in flight: no attempt to recover.
            started.into_iter().for_each(|(_, _, live)| live.recorded());
            return Err(e);
        }
        steps.clear();
        Ok((self.emit_steps(effects), started))
    }

    /// The request that forwards (or, for an online payment, authorizes
    /// again) payment `p`, attempt `attempt`. It carries the reader's
    /// signature stored with the payment and the certificate of the reader
    /// remembered under its serial in `s` now (none if that reader was
    /// forgotten: the processor then declines the card data `mismatch`,
    /// which is why `PosEngine::forget_reader` refuses while such a payment
    /// is pending).
    fn request_for(&self, s: &State, p: &OfflinePayment, attempt: u32) -> ForwardRequest {
        let reader_certificate = p
            .card
            .reader_serial
            .as_ref()
            .and_then(|serial| s.ledger.readers.get(serial))
            .and_then(|r| r.certificate.clone());
        let reader_signature = p.card.reader_signature.clone();
        ForwardRequest {
            device_id: self.inner.config.device_id.clone(),
            payment_id: p.id.clone(),
            order_id: p.order_id.clone(),
            amount: p.amount,
            tip: p.tip,
            entry_mode: p.card.entry_mode,
            network: p.card.network,
            last4: p.card.last4.clone(),
            taken_at: p.taken_at,
            deadline: p.deadline,
            attempt,
            sealed_card_data: p.card.sealed_card_data.clone(),
            online: p.online.then(|| AuthorizeRequest {
                device_id: self.inner.config.device_id.clone(),
                payment_id: p.id.clone(),
                order_id: p.order_id.clone(),
                amount: p.amount,
                tip: p.tip,
                entry_mode: p.card.entry_mode,
                network: p.card.network,
                last4: p.card.last4.clone(),
                sealed_card_data: p.card.sealed_card_data.clone(),
                reader_certificate: reader_certificate.clone(),
                reader_signature: reader_signature.clone(),
                account: p.account.clone(),
            }),
            reader_certificate,
            reader_signature,
            account: p.account.clone(),
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
            .filter(|p| p.deadline > now)
            .filter(|p| match &p.state {
                PaymentState::Pending => true,
                PaymentState::FailedToForward { next_retry_at, .. } => match next_retry_at {
                    Some(t) => *t <= now,
                    None => manual,
                },
                _ => false,
            })
            .collect();
        due.sort_by(|a, b| (a.deadline, &a.id).cmp(&(b.deadline, &b.id)));
        due.into_iter().take(limit).map(|p| p.id.clone()).collect()
    }

    /// Records one forwarding step; the error says why a step was refused.
    pub(crate) async fn record_step(
        &self,
        id: &PaymentId,
        event: PaymentEvent,
    ) -> Result<OfflinePayment> {
        let _w = self.write_lock().await;
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
    fn step_writes(
        s: &State,
        batch: &mut Vec<Write>,
        id: &PaymentId,
        event: PaymentEvent,
        now: Timestamp,
    ) -> Result<StepEffects> {
        let p = s
            .ledger
            .payments
            .get(id)
            .cloned()
            .ok_or_else(|| PosError::NotFound {
                what: format!("payment {id}"),
            })?;
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

    /// Wakes the forwarding driver now, so it re-reads the time: for apps
    /// and demos that drive a virtual clock (the driver sleeps in real time
    /// until the next retry, probe or deadline).
    pub fn nudge_forwarding(&self) {
        self.wake_forwarder();
    }

    /// Starts the driver on the current tokio runtime, if there is one. It
    /// holds only a weak reference: it ends when the engine is closed or dropped.
    pub(crate) fn start_driver(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let wake = Arc::clone(&self.inner.forwarding.wake);
        handle.spawn(async move {
            loop {
                let notified = wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let wait = {
                    let Some(inner) = weak.upgrade() else { break };
                    let engine = PosEngine { inner };
                    if engine.is_closed() {
                        break;
                    }
                    engine.drive_once().await
                };
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// One pass of the driver; returns how long to sleep before the next
    /// one if nothing wakes it.
    async fn drive_once(&self) -> Duration {
        const IDLE: Duration = Duration::from_secs(30);
        const MIN: Duration = Duration::from_millis(20);
        let f = &self.inner.forwarding;
        if !f.config.automatic || self.forwarding_paused() {
            return IDLE;
        }
        let Some(gateway) = self.gateway() else {
            return IDLE;
        };
        let online = self.state().connectivity.state().is_online();
        if !online {
            // Probe the service (R2); connectivity decides when it is back.
            let sent = std::time::Instant::now();
            let answer = tokio::task::spawn_blocking(move || gateway.status_with_time()).await;
            if let Ok(Ok(StatusAnswer {
                processor_time: Some(t),
                ..
            })) = answer
            {
                // The processor's time corrects the trusted clock (B13); a
                // failed write leaves it for the next probe.
                let _ = self.correct_clock(t, sent.elapsed()).await;
            }
            let outcome = match answer.map(|r| r.map(|a| a.status)) {
                Ok(Ok(ServiceStatus::Available)) => ProbeOutcome::Healthy,
                Ok(Ok(ServiceStatus::Disrupted)) => ProbeOutcome::Unhealthy,
                Ok(Err(e))
                    if e.kind == ForwardErrorKind::NotSent
                        || e.kind == ForwardErrorKind::NoAnswer =>
                {
                    ProbeOutcome::Unreachable
                }
                Ok(Err(_)) => ProbeOutcome::Unhealthy,
                Err(_) => return IDLE,
            };
            if self.report_probe(outcome).await.is_err() {
                return IDLE;
            }
        }
        let online = matches!(
            self.state().connectivity.state(),
            ConnectivityState::Online { .. }
        );
        if online {
            // A failure here (store error) is retried at the next wake.
            let _ = self.forward_round(false).await;
        } else {
            let _ = self.tick().await;
        }
        // Sleep until the next retry, probe or deadline, in real time.
        let now = self.now();
        let next = self.next_wake_at();
        match next {
            Some(t) => now.until(t).clamp(MIN, IDLE),
            None => IDLE,
        }
    }

    /// When the forwarding driver next has something to do by itself, on
    /// the trusted clock: a retry falls due (online), a payment's deadline
    /// passes, or a probe is due (offline); never before the processor's
    /// `Retry-After` ends. `None` when nothing is scheduled.
    pub fn next_wake_at(&self) -> Option<Timestamp> {
        let now = self.now();
        let next = {
            let s = self.state();
            let online = matches!(s.connectivity.state(), ConnectivityState::Online { .. });
            let mut next: Option<Timestamp> = None;
            for p in s.ledger.payments.values() {
                // A retry matters only online: offline the probe schedule
                // decides when to look again (a retry already due would
                // otherwise make the driver probe in a loop).
                let t = match &p.state {
                    PaymentState::FailedToForward {
                        next_retry_at: Some(t),
                        ..
                    } if online => Some((*t).min(p.deadline)),
                    PaymentState::Pending | PaymentState::FailedToForward { .. } => {
                        Some(p.deadline)
                    }
                    _ => None,
                };
                next = match (next, t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if !online {
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
}
