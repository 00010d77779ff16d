//! The forwarding handle the engine holds: the forwarding configuration,
//! the driver's wake-up, whether forwarding is paused or blocked, the
//! backlog's progress, and the attempts live in this process. The rounds
//! that use it are in `forwarding`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::{duration_ms, Timestamp};
use crate::error::{PosError, Result};
use crate::gateway::{Gateway, GatewayError, MAX_RETRY_AFTER};
use crate::ledger::OfflinePayment;
use crate::lifecycle::{DeclineNotice, ForwardErrorKind, PaymentId};
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

/// Why forwarding is blocked ([`crate::PosEvent::ForwardingBlocked`]).
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
    pub(crate) gateway: Mutex<Option<Arc<dyn Gateway>>>,
    pub(crate) paused: AtomicBool,
    /// Wakes the driver: connectivity back, payment stored, forward now,
    /// resume, close.
    pub(crate) wake: Arc<Notify>,
    /// One round at a time.
    pub(crate) round: tokio::sync::Mutex<()>,
    /// Jitter generator state (splitmix64).
    pub(crate) rng: Mutex<u64>,
    /// The payments whose attempt has a live task (see [`LiveAttempt`]),
    /// with how many live attempts name each.
    pub(crate) live: Arc<Mutex<BTreeMap<PaymentId, usize>>>,
    /// Attempts the app started through `record_forwarding`, held until it
    /// records their outcome.
    pub(crate) held: Mutex<BTreeMap<PaymentId, LiveAttempt>>,
    /// When an automatic round last asked the processor about payments of
    /// unknown outcome (manual rounds always ask).
    pub(crate) last_lookup: Mutex<Option<Timestamp>>,
    /// Until when the processor asked the whole gateway to wait (a 429 or
    /// 503 with `Retry-After`): no round starts a request before then.
    pub(crate) busy_until: Mutex<Option<Timestamp>>,
    /// Why forwarding is blocked, if it is.
    pub(crate) blocked: Mutex<Option<ForwardingBlockedReason>>,
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
    pub(crate) live: Arc<Mutex<BTreeMap<PaymentId, usize>>>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) id: PaymentId,
    pub(crate) recorded: bool,
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
    pub(crate) fn busy_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.busy_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .filter(|t| *t > now)
            .map(|t| t.min(now.plus(MAX_RETRY_AFTER)))
    }

    /// Notes an error's `Retry-After` (the latest end wins); returns the
    /// time the gateway is busy until.
    pub(crate) fn note_retry_after(&self, e: &GatewayError, now: Timestamp) -> Option<Timestamp> {
        let wait = e.retry_after?;
        let until = now.plus(wait);
        let mut busy = self.busy_until.lock().unwrap_or_else(|p| p.into_inner());
        let until = busy.filter(|t| *t > until).unwrap_or(until);
        *busy = Some(until);
        Some(until)
    }

    pub(crate) fn gateway(&self) -> Option<Arc<dyn Gateway>> {
        self.gateway
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// splitmix64: small, seedable, good enough for jitter.
    pub(crate) fn next_random(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Back-off before attempt `attempt + 1`: base × 2^(attempt−1), capped,
    /// with "equal jitter" (between half and all of it).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
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
pub(crate) fn add_if_same_currency(total: &mut Money, amount: Money) {
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

/// Logs the processor's answer to attempt `attempt` of payment `id`:
/// an approval at debug, a decline at info, an error at warn.
pub(crate) fn log_answer(
    id: &PaymentId,
    attempt: u32,
    answer: &std::result::Result<crate::gateway::GatewayDecision, GatewayError>,
) {
    use crate::gateway::GatewayDecision;
    match answer {
        Ok(GatewayDecision::Approved { .. }) => {
            tracing::debug!(payment_id = %id, attempt, "payment approved")
        }
        Ok(GatewayDecision::Declined { reason }) => {
            tracing::info!(payment_id = %id, attempt, ?reason, "payment declined")
        }
        Err(e) => log_gateway_error("payment", Some(id), e),
    }
}

/// Logs a gateway error of `call` (for payment `id`, if any): its kind,
/// HTTP status, processor code and detail (which never holds card data,
/// contacts or tokens).
pub(crate) fn log_gateway_error(call: &'static str, id: Option<&PaymentId>, e: &GatewayError) {
    tracing::warn!(
        call,
        payment_id = id.map(tracing::field::display),
        kind = ?e.kind,
        http_status = e.http_status,
        code = e.code.as_deref(),
        retry_after = e.retry_after.map(tracing::field::debug),
        detail = %e.detail,
        "gateway error"
    );
}

/// The effects of one recorded step, emitted after its commit.
pub(crate) struct StepEffects {
    pub(crate) payment: OfflinePayment,
    pub(crate) decline: Option<DeclineNotice>,
}
