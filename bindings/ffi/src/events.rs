//! Events and the listener the app implements (a foreign trait).

use std::sync::Arc;

use pos_core::events as core;

use crate::money::Money;
use crate::types::{ConnectivityStatus, DeclineNotice, OrderStatus, PaymentStatus};

/// Mirrors `pos_core::PosEvent`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum PosEvent {
    /// The current state, sent first to every new subscriber.
    Snapshot {
        /// The connectivity now.
        connectivity: ConnectivityStatus,
        /// Unsettled offline payments.
        pending_offline_payments: u64,
    },
    /// Connectivity changed (R1).
    ConnectivityChanged {
        /// Before.
        from: ConnectivityStatus,
        /// After.
        to: ConnectivityStatus,
        /// When, in ms since the Unix epoch.
        at_ms: i64,
        /// What the app's banner should say; null: hide it.
        banner: Option<String>,
    },
    /// A stored payment changed state.
    PaymentStateChanged {
        /// The payment's id.
        payment_id: String,
        /// Its order's id.
        order_id: String,
        /// Its new status.
        status: PaymentStatus,
        /// Its order's badge now (R15).
        order_status: Option<OrderStatus>,
    },
    /// The processor declined a forwarded payment: collect the amount due
    /// (R17, B9).
    PaymentDeclined {
        /// The amount due, the reason and the captured contact.
        notice: DeclineNotice,
    },
    /// A payment reached its forwarding deadline unforwarded: its amount is
    /// lost (R8).
    PaymentExpired {
        /// The payment's id.
        payment_id: String,
        /// Its order's id.
        order_id: String,
        /// The amount lost.
        amount: Money,
    },
    /// The deadline passed while the processor may hold the payment: its
    /// outcome is unknown ("check with the processor"), not lost. The
    /// engine asks the processor about it; a `PaymentStateChanged` follows.
    PaymentOutcomeUnknown {
        /// The payment's id.
        payment_id: String,
        /// Its order's id.
        order_id: String,
        /// Its amount, tip included.
        amount: Money,
    },
    /// The offline session's forwarding deadline is near, or its acceptance
    /// window closed (B4).
    SessionWarning {
        /// "deadline_approaching" or "acceptance_window_closed".
        kind: String,
        /// For `deadline_approaching`: the warning threshold that fired (one
        /// of the policy's `warningsBeforeDeadlineMs`).
        threshold_ms: Option<u64>,
        /// The forwarding deadline, in ms since the Unix epoch; null while it
        /// counts from a first offline payment not taken yet.
        deadline_ms: Option<i64>,
        /// Milliseconds left before the deadline when raised.
        time_left_ms: Option<u64>,
    },
    /// The device's offline total or count reached the policy's warning
    /// percentage of its limit (B3).
    LimitNear {
        /// The currency of the limits.
        currency: String,
        /// The policy's threshold, in percent of the limit.
        warn_percent: u8,
        /// The device total, when at or above the threshold.
        total: Option<Money>,
        /// The device amount limit, with `total`.
        limit: Option<Money>,
        /// The device count, when at or above the threshold.
        count: Option<u32>,
        /// The device count limit, with `count`.
        count_limit: Option<u32>,
    },
    /// A forwarding round's progress (for a progress bar).
    ForwardingProgress {
        /// Payments decided in this round.
        done: u64,
        /// Payments of the round.
        total: u64,
        /// The amount of the decided payments, shop currency.
        amount_done: Money,
        /// The amount of all payments of the round, shop currency.
        amount_total: Money,
        /// The round is over.
        finished: bool,
    },
    /// Saving the store's rollback anchor with the `KeyProvider` failed:
    /// the anchor trails the store by `behind` records, so a rollback to a
    /// copy taken since the last saved anchor would not be detected. Sent
    /// once when saves start failing; `EngineStatus.anchor` says whether
    /// they still fail. `reason` is the provider's message.
    AnchorSaveFailed {
        /// The provider's message.
        reason: String,
        /// Records the anchor trails the store by.
        behind: u64,
    },
    /// Forwarding is blocked: payments wait until the cause is fixed and
    /// "forward now" is asked. Sent when it becomes blocked or the reason
    /// changes; `ForwardingUnblocked` follows when forwarding resumes.
    /// `EngineStatus.forwardingBlocked` holds the current reason.
    ForwardingBlocked {
        /// Why.
        reason: ForwardingBlockedReason,
    },
    /// Forwarding resumed after `ForwardingBlocked`.
    ForwardingUnblocked,
    /// The background check of the whole store, run when the engine is
    /// idle after each snapshot, found its history edited, deleted or
    /// inserted, or not replaying to the engine's state. Nothing is
    /// changed; keep the store for inspection (docs/store-recovery.md).
    StoreVerificationFailed {
        /// What was found; no card data or contact.
        reason: String,
    },
    /// The engine was closed; no events follow.
    Closed,
}

/// Why forwarding is blocked (mirrors
/// `pos_core::forwarding::ForwardingBlockedReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ForwardingBlockedReason {
    /// The processor refused the credentials (HTTP 401 or 403, or the app's
    /// gateway threw `GatewayError.Unauthorized`): the token provider must
    /// supply new ones.
    CredentialsRejected,
    /// The processor refused a request for another reason (a 4xx): it
    /// needs a person.
    ProcessorRefusing,
    /// The store cannot be written: its key is unavailable (device locked).
    StoreLocked,
    /// The processor refused a payment sent under its own merchant account
    /// with another account's credentials (`account_mismatch`, or the app's
    /// gateway threw `GatewayError.AccountMismatch`): the token provider
    /// must supply that account's credentials. Never a decline: the
    /// payment waits.
    AccountMismatch,
}

impl From<pos_core::forwarding::ForwardingBlockedReason> for ForwardingBlockedReason {
    fn from(r: pos_core::forwarding::ForwardingBlockedReason) -> Self {
        use pos_core::forwarding::ForwardingBlockedReason as R;
        match r {
            R::CredentialsRejected => ForwardingBlockedReason::CredentialsRejected,
            R::ProcessorRefusing => ForwardingBlockedReason::ProcessorRefusing,
            R::StoreLocked => ForwardingBlockedReason::StoreLocked,
            R::AccountMismatch => ForwardingBlockedReason::AccountMismatch,
        }
    }
}

impl From<core::PosEvent> for PosEvent {
    fn from(e: core::PosEvent) -> Self {
        match e {
            core::PosEvent::Snapshot {
                connectivity,
                pending_offline_payments,
            } => PosEvent::Snapshot {
                connectivity: connectivity.into(),
                pending_offline_payments,
            },
            core::PosEvent::ConnectivityChanged {
                from,
                to,
                at,
                banner,
            } => PosEvent::ConnectivityChanged {
                from: from.into(),
                to: to.into(),
                at_ms: at.millis(),
                banner,
            },
            core::PosEvent::PaymentStateChanged {
                payment_id,
                order_id,
                status,
                order_status,
            } => PosEvent::PaymentStateChanged {
                payment_id: payment_id.as_str().to_owned(),
                order_id: order_id.as_str().to_owned(),
                status: status.into(),
                order_status: order_status.map(Into::into),
            },
            core::PosEvent::PaymentDeclined(notice) => PosEvent::PaymentDeclined {
                notice: notice.into(),
            },
            core::PosEvent::PaymentOutcomeUnknown {
                payment_id,
                order_id,
                amount,
            } => PosEvent::PaymentOutcomeUnknown {
                payment_id: payment_id.as_str().to_owned(),
                order_id: order_id.as_str().to_owned(),
                amount: amount.into(),
            },
            core::PosEvent::PaymentExpired {
                payment_id,
                order_id,
                amount,
            } => PosEvent::PaymentExpired {
                payment_id: payment_id.as_str().to_owned(),
                order_id: order_id.as_str().to_owned(),
                amount: amount.into(),
            },
            core::PosEvent::SessionWarning(w) => {
                use pos_core::session::SessionWarningKind as K;
                let (kind, threshold_ms) = match w.kind {
                    K::DeadlineApproaching { threshold } => {
                        ("deadline_approaching", Some(crate::types::ms(threshold)))
                    }
                    K::AcceptanceWindowClosed { .. } => ("acceptance_window_closed", None),
                };
                PosEvent::SessionWarning {
                    kind: kind.to_owned(),
                    threshold_ms,
                    deadline_ms: w.deadline.map(|d| d.millis()),
                    time_left_ms: w.time_left.map(crate::types::ms),
                }
            }
            core::PosEvent::LimitNear(n) => PosEvent::LimitNear {
                currency: n.currency.code().to_owned(),
                warn_percent: n.warn_percent,
                total: n.amount.map(|a| a.total.into()),
                limit: n.amount.map(|a| a.limit.into()),
                count: n.count.map(|c| c.count),
                count_limit: n.count.map(|c| c.limit),
            },
            core::PosEvent::ForwardingProgress(p) => PosEvent::ForwardingProgress {
                done: p.done,
                total: p.total,
                amount_done: p.amount_done.into(),
                amount_total: p.amount_total.into(),
                finished: p.finished,
            },
            core::PosEvent::AnchorSaveFailed { reason, behind } => {
                PosEvent::AnchorSaveFailed { reason, behind }
            }
            core::PosEvent::ForwardingBlocked { reason } => PosEvent::ForwardingBlocked {
                reason: reason.into(),
            },
            core::PosEvent::ForwardingUnblocked => PosEvent::ForwardingUnblocked,
            core::PosEvent::StoreVerificationFailed { reason } => {
                PosEvent::StoreVerificationFailed { reason }
            }
            core::PosEvent::Closed => PosEvent::Closed,
        }
    }
}

/// Implemented in Swift or Kotlin. Called on the engine's event thread, never
/// on the caller's, one event at a time and in order.
#[uniffi::export(foreign)]
pub trait EventListener: Send + Sync {
    /// Receives one event.
    fn on_event(&self, event: PosEvent);
}

pub(crate) struct ListenerAdapter(pub Arc<dyn EventListener>);

impl core::EventListener for ListenerAdapter {
    fn on_event(&self, event: core::PosEvent) {
        self.0.on_event(event.into());
    }
}

/// Keeps a listener subscribed until `cancel()` (or until it is closed/freed).
#[derive(Debug, uniffi::Object)]
pub struct Subscription {
    inner: core::Subscription,
}

impl Subscription {
    pub(crate) fn new(inner: core::Subscription) -> Arc<Self> {
        Arc::new(Subscription { inner })
    }
}

#[pos_ffi_macros::export]
impl Subscription {
    /// Stops delivery to this listener. Idempotent.
    pub fn cancel(&self) {
        self.inner.cancel();
    }
}
