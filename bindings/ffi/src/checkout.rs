//! Checkout records: orders, card payments, listings and guards, mirrored
//! from `pos_core::checkout`.

use pos_core::checkout as co;
use pos_core::ledger as led;
use pos_core::lifecycle as life;
use pos_core::rules;

use crate::error::PosError;
use crate::money::Money;
use crate::types::{
    invalid, mirror_enum, money_opt, ts, CardNetwork, CustomerContact, DeclineReason, EntryMode,
    OfflineReason, OrderStatus, PaymentStatus, TenderKind,
};

/// Who is signed in (R12 permission).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StaffSession {
    /// Their staff id, recorded on the payments they take and in the audit log.
    pub staff_id: String,
    /// They hold the permission to accept offline card payments (R12).
    pub may_take_offline_payments: bool,
}

/// A new order.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewOrder {
    /// The app's order id (idempotency key), or null to generate one.
    pub order_id: Option<String>,
    /// The order's total; more than zero.
    pub total: Money,
    /// The customer's email or phone, to collect a declined payment (R17).
    pub contact: Option<std::sync::Arc<CustomerContact>>,
}

mirror_enum!(
    /// How one card payment may use offline mode (B1).
    OfflineBehaviour = co::OfflineBehaviour {
        /// Online only: `OnlineRequired` while offline.
        RequireOnline,
        /// Online when the service is reachable, offline otherwise.
        PreferOnline,
        /// Offline even when online (a known-bad connection), if the policy allows it.
        ForceOffline,
    }
);

/// How a payment will be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PaymentRoute {
    /// Authorized online through the gateway at confirmation.
    Online,
    /// Taken offline: stored, then forwarded when the service is back.
    Offline {
        /// Why the payment goes offline.
        reason: OfflineReason,
    },
}

impl From<co::Route> for PaymentRoute {
    fn from(r: co::Route) -> Self {
        match r {
            co::Route::Online => PaymentRoute::Online,
            co::Route::Offline { reason } => PaymentRoute::Offline {
                reason: reason.into(),
            },
        }
    }
}

/// A card payment the cashier starts.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CardPaymentRequest {
    /// The order it pays (all or part of).
    pub order_id: String,
    /// The app's idempotency key, or null to generate one (B2). It must be
    /// unique per device forever, across store resets and reinstalls too:
    /// the processor never forgets an id. An id the store holds a payment
    /// for (final ones included) is refused with `DuplicatePayment`; an id
    /// begun and cancelled was never sent and may be begun again.
    pub payment_id: Option<String>,
    /// The amount applied to the order, before tip.
    pub amount: Money,
    /// A tip charged on top of `amount` (offline only where the policy allows tips, R10).
    pub tip: Option<Money>,
    /// Whether it may be taken offline (B1).
    pub behaviour: OfflineBehaviour,
    /// Card, or a gift card or buy now, pay later (refused offline, R9, R10).
    pub tender: TenderKind,
}

impl TryFrom<CardPaymentRequest> for co::CardPaymentRequest {
    type Error = PosError;
    fn try_from(r: CardPaymentRequest) -> Result<Self, PosError> {
        Ok(co::CardPaymentRequest {
            order_id: crate::types::order_id(&r.order_id)?,
            payment_id: r.payment_id,
            amount: r.amount.try_into()?,
            tip: money_opt(r.tip)?,
            behaviour: r.behaviour.into(),
            tender: r.tender.into(),
        })
    }
}

/// What `begin_card_payment` decided: the payment's stable id and its route.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PaymentDecision {
    /// The payment's id, used for every attempt (B2).
    pub payment_id: String,
    /// Online or offline; re-checked at confirmation (B1).
    pub route: PaymentRoute,
    /// What to hand `CardReader.takeCard`: the reader seals the card for it.
    pub challenge: CardChallenge,
}

/// What the reader binds a card read to (sealed card data version 2): the
/// payment, the device, the amount charged (tip included) and a nonce fresh
/// for this payment. `confirmCardPayment` and the processor check it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CardChallenge {
    /// The payment's id.
    pub payment_id: String,
    /// This device's id.
    pub device_id: String,
    /// The amount charged, tip included.
    pub amount: Money,
    /// 16 random bytes, fresh for this payment.
    pub nonce: Vec<u8>,
}

impl From<co::CardChallenge> for CardChallenge {
    fn from(c: co::CardChallenge) -> Self {
        CardChallenge {
            payment_id: c.payment_id.as_str().to_owned(),
            device_id: c.device_id,
            amount: c.amount.into(),
            nonce: c.nonce.to_vec(),
        }
    }
}

impl TryFrom<CardChallenge> for co::CardChallenge {
    type Error = crate::error::PosError;
    fn try_from(c: CardChallenge) -> Result<Self, Self::Error> {
        let invalid = |reason: &str| crate::error::PosError::InvalidInput {
            reason: reason.to_owned(),
        };
        Ok(co::CardChallenge {
            payment_id: pos_core::lifecycle::PaymentId::parse(&c.payment_id)
                .map_err(|e| invalid(&e.to_string()))?,
            device_id: c.device_id,
            amount: c.amount.try_into()?,
            nonce: c
                .nonce
                .as_slice()
                .try_into()
                .map_err(|_| invalid("a challenge nonce is 16 bytes"))?,
        })
    }
}

impl From<co::PaymentDecision> for PaymentDecision {
    fn from(d: co::PaymentDecision) -> Self {
        PaymentDecision {
            payment_id: d.payment_id.as_str().to_owned(),
            route: d.route.into(),
            challenge: d.challenge.into(),
        }
    }
}

/// One way an order is paid.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Tender {
    /// Cash, paid at once.
    Cash {
        /// The amount paid.
        amount: Money,
    },
    /// A card payment taken offline, stored until forwarded.
    OfflineCard {
        /// The payment's id.
        payment_id: String,
        /// The amount applied to the order, before tip.
        amount: Money,
    },
    /// A card payment authorized online.
    OnlineCard {
        /// The payment's id.
        payment_id: String,
        /// The amount applied to the order, before tip.
        amount: Money,
    },
}

/// An order as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OrderView {
    /// The order's id.
    pub id: String,
    /// The order's total.
    pub total: Money,
    /// What its tenders paid, declined and expired card payments excluded.
    pub paid: Money,
    /// What is left to pay: `total` minus `paid`.
    pub balance: Money,
    /// Its badge (R15).
    pub status: OrderStatus,
    /// Its tenders, in the order they were added.
    pub tenders: Vec<Tender>,
    /// A redacted hint of the captured contact (`j***@e***.com`).
    pub contact_hint: Option<String>,
}

impl From<co::OrderView> for OrderView {
    fn from(o: co::OrderView) -> Self {
        OrderView {
            id: o.id.as_str().to_owned(),
            total: o.total.into(),
            paid: o.paid.into(),
            balance: o.balance.into(),
            status: o.status.into(),
            tenders: o
                .tenders
                .into_iter()
                .map(|t| match t {
                    led::Tender::Cash { amount } => Tender::Cash {
                        amount: amount.into(),
                    },
                    led::Tender::OfflineCard { payment_id, amount } => Tender::OfflineCard {
                        payment_id: payment_id.as_str().to_owned(),
                        amount: amount.into(),
                    },
                    led::Tender::OnlineCard { payment_id, amount } => Tender::OnlineCard {
                        payment_id: payment_id.as_str().to_owned(),
                        amount: amount.into(),
                    },
                })
                .collect(),
            contact_hint: o.contact_hint,
        }
    }
}

/// A stored offline payment (R19). Times are ms since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PaymentView {
    /// The payment's id.
    pub id: String,
    /// Its order's id.
    pub order_id: String,
    /// The amount charged, tip included.
    pub amount: Money,
    /// The tip, included in `amount`.
    pub tip: Option<Money>,
    /// Where it is in its life.
    pub status: PaymentStatus,
    /// Why the processor declined it (`Declined` only).
    pub decline_reason: Option<DeclineReason>,
    /// The card network.
    pub network: CardNetwork,
    /// How the card was read.
    pub entry_mode: EntryMode,
    /// The last four digits of the card number.
    pub last4: String,
    /// The staff id of who took it.
    pub taken_by: String,
    /// When it was taken.
    pub taken_at_ms: i64,
    /// Its forwarding deadline (R8): never forwarded at or after it.
    pub deadline_ms: i64,
    /// Milliseconds left before the deadline; 0 once past or settled.
    pub time_left_ms: i64,
    /// The merchant account it was taken under (and is forwarded under):
    /// keep that account's credentials while such payments are pending.
    pub account: Option<crate::types::MerchantAccount>,
}

impl From<co::PaymentView> for PaymentView {
    fn from(p: co::PaymentView) -> Self {
        let decline_reason = match &p.state {
            life::PaymentState::Declined { reason, .. } => Some(reason.clone().into()),
            _ => None,
        };
        PaymentView {
            id: p.id.as_str().to_owned(),
            order_id: p.order_id.as_str().to_owned(),
            amount: p.amount.into(),
            tip: p.tip.map(Into::into),
            status: p.status.into(),
            decline_reason,
            network: p.network.into(),
            entry_mode: p.entry_mode.into(),
            last4: p.last4,
            taken_by: p.taken_by.as_str().to_owned(),
            taken_at_ms: ts(p.taken_at),
            deadline_ms: ts(p.deadline),
            time_left_ms: p.time_left_ms,
            account: p.account.map(Into::into),
        }
    }
}

mirror_enum!(
    /// Actions that would lose stored payments (R13). `SwitchAccount` is
    /// guarded by `PosEngine.switchAccount`, which names the new account.
    GuardedAction = rules::GuardedAction {
        /// Log the staff member out.
        LogOut,
        /// Move the device to another location.
        SwitchLocation,
        /// Erase the store.
        ResetStore,
        /// Remove the device from the merchant's account.
        RemoveDevice,
        /// Switch to another merchant account.
        SwitchAccount,
    }
);

/// A person's explicit decision to go ahead while payments are pending.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ActionOverride {
    /// The staff id of who decides.
    pub staff_id: String,
    /// Why, in their words.
    pub reason: String,
    /// The money at risk exactly as shown to that person, one per currency.
    pub acknowledged_at_risk: Vec<Money>,
}

impl TryFrom<ActionOverride> for rules::ActionOverride {
    type Error = PosError;
    fn try_from(o: ActionOverride) -> Result<Self, PosError> {
        Ok(rules::ActionOverride {
            staff_id: o.staff_id,
            reason: o.reason,
            acknowledged_at_risk: o
                .acknowledged_at_risk
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A guarded action may go ahead.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum GuardOutcome {
    /// It goes ahead: nothing is pending (or nothing changes).
    Allowed,
    /// Payments are pending and the override accepted the risk (audited).
    Overridden {
        /// Unsettled payments.
        pending_count: u64,
        /// Their amount, one per currency.
        at_risk: Vec<Money>,
    },
}

impl From<rules::GuardOutcome> for GuardOutcome {
    fn from(o: rules::GuardOutcome) -> Self {
        match o {
            rules::GuardOutcome::Allowed => GuardOutcome::Allowed,
            rules::GuardOutcome::Overridden { count, at_risk, .. } => GuardOutcome::Overridden {
                pending_count: count,
                at_risk: at_risk.into_iter().map(Into::into).collect(),
            },
        }
    }
}

/// Where a receipt goes (R16): by email to the recipient's email, or by
/// SMS to their phone. The address is in the `CustomerContact` object, so
/// neither Kotlin's `toString()` nor Swift's `description` prints it.
/// `InvalidInput` when the recipient has no email (`Email`) or no phone
/// (`Sms`).
#[derive(Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ReceiptChannel {
    /// By email.
    Email {
        /// Who gets it; must have an email.
        recipient: std::sync::Arc<CustomerContact>,
    },
    /// By text message.
    Sms {
        /// Who gets it; must have a phone number.
        recipient: std::sync::Arc<CustomerContact>,
    },
}

impl std::fmt::Debug for ReceiptChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReceiptChannel::Email { .. } => "Email(<redacted>)",
            ReceiptChannel::Sms { .. } => "Sms(<redacted>)",
        })
    }
}

impl TryFrom<ReceiptChannel> for life::ReceiptChannel {
    type Error = PosError;
    fn try_from(c: ReceiptChannel) -> Result<Self, PosError> {
        let (contact, sms) = match c {
            ReceiptChannel::Email { recipient } => {
                (life::CustomerContact::from(&*recipient), false)
            }
            ReceiptChannel::Sms { recipient } => (life::CustomerContact::from(&*recipient), true),
        };
        if sms {
            let phone = contact
                .phone()
                .ok_or_else(|| invalid("an SMS receipt needs a recipient with a phone number"))?;
            Ok(life::ReceiptChannel::Sms(phone.clone()))
        } else {
            let email = contact
                .email()
                .ok_or_else(|| invalid("an email receipt needs a recipient with an email"))?;
            Ok(life::ReceiptChannel::Email(email.clone()))
        }
    }
}

/// What `tick` did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TickReport {
    /// Expired: no attempt can have reached the processor; counted lost.
    pub expired_payment_ids: Vec<String>,
    /// Deadline passed with the outcome unknown: the processor is asked.
    pub outcome_unknown_payment_ids: Vec<String>,
    /// Attempts that had lost their task, recorded as "no answer" and
    /// retried with the same id.
    pub recovered_payment_ids: Vec<String>,
    /// Session warnings raised (each also a `SessionWarning` event).
    pub warnings: u32,
}

impl From<co::TickReport> for TickReport {
    fn from(t: co::TickReport) -> Self {
        TickReport {
            expired_payment_ids: t.expired.iter().map(|p| p.as_str().to_owned()).collect(),
            outcome_unknown_payment_ids: t
                .outcome_unknown
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            recovered_payment_ids: t.recovered.iter().map(|p| p.as_str().to_owned()).collect(),
            warnings: u32::try_from(t.warnings).unwrap_or(u32::MAX),
        }
    }
}
