//! The offline decision: "may this card payment be taken offline now?"
//! (SPEC R4–R12, B3, B4, B6), the device-limit warning, and the guard on
//! actions that would lose pending payments (R13).
//!
//! Sans I/O: pure functions of a [`Policy`], an [`OfflineContext`] (what the
//! engine knows now: time, session, staff, reader, running totals) and an
//! [`OfflineCardRequest`]. Every refusal is a typed [`Refusal`] that names its
//! SPEC rule ([`Refusal::rule_id`]) and carries the figures.
//!
//! The running totals come from the caller. To keep concurrent checkouts from
//! pushing a total over a limit (B3), the caller must check and record the
//! payment under one lock (or one store transaction), with totals that
//! include every payment already accepted but not yet durable.
//!
//! # Order of checks
//!
//! [`check_offline_payment`] returns the first refusal, in this fixed order:
//!
//! 1. policy: [`OfflineDisabled`](Refusal::OfflineDisabled) (R4),
//!    [`InvalidPolicy`](Refusal::InvalidPolicy) (R4);
//! 2. context, cheapest first: [`OutageCauseNotAllowed`](Refusal::OutageCauseNotAllowed) (B6),
//!    [`StaffNotPermitted`](Refusal::StaffNotPermitted) (R12),
//!    [`AcceptanceWindowClosed`](Refusal::AcceptanceWindowClosed) (R7),
//!    [`RequireOnlineNearDeadline`](Refusal::RequireOnlineNearDeadline) (B4),
//!    [`TapToPayRefused`](Refusal::TapToPayRefused) (R10),
//!    [`ReaderNotOfflineCapable`](Refusal::ReaderNotOfflineCapable) (R11);
//! 3. the card: [`NotACardTender`](Refusal::NotACardTender),
//!    [`TenderRefused`](Refusal::TenderRefused),
//!    [`EntryModeRefused`](Refusal::EntryModeRefused),
//!    [`BrandNotAllowed`](Refusal::BrandNotAllowed),
//!    [`NetworkRefused`](Refusal::NetworkRefused),
//!    [`TipsRefused`](Refusal::TipsRefused) (R9, R10);
//! 4. amounts: [`CurrencyNotConfigured`](Refusal::CurrencyNotConfigured),
//!    [`InvalidAmount`](Refusal::InvalidAmount), [`CurrencyMismatch`](Refusal::CurrencyMismatch),
//!    [`AmountOverflow`](Refusal::AmountOverflow);
//! 5. limits, narrowest first: [`PerPaymentLimit`](Refusal::PerPaymentLimit) (B3),
//!    [`PerOrderLimit`](Refusal::PerOrderLimit) (R5),
//!    [`PerCardLimit`](Refusal::PerCardLimit) (B3),
//!    [`DeviceCountLimit`](Refusal::DeviceCountLimit) (B3),
//!    [`DeviceAmountLimit`](Refusal::DeviceAmountLimit) (R6).
//!
//! A limit is reached, not exceeded, when the total after the payment equals
//! it: `total <= limit` is accepted, `total > limit` refused. A sum that does
//! not fit in 64 bits is refused, never wrapped.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::money::{Currency, Money};
use crate::policy::{EntryMode, Network, OfflineReason, Policy, PolicyError, TenderKind};

/// The device that reads the card.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reader {
    /// A card reader or terminal, by model name as it reports it (R11).
    External { model: String },
    /// The phone itself (Tap to Pay on iPhone / Android) (R10).
    TapToPayOnPhone,
}

/// What the engine knows when a card payment is about to be taken offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineContext {
    /// Why the engine is offline (B6).
    pub reason: OfflineReason,
    /// The trusted time (B13).
    pub now: Timestamp,
    /// When the session's acceptance window closes (R7): payments are
    /// accepted while `now < window_closes_at`.
    pub window_closes_at: Timestamp,
    /// The session is close to its forwarding deadline and new payments must
    /// go online (B4).
    pub require_online: bool,
    /// The signed-in staff member holds the "accept offline credit and debit
    /// payments" permission (R12).
    pub staff_permitted: bool,
    /// The device that will read the card.
    pub reader: Reader,
    /// Total of unforwarded offline card payments on the device, in the
    /// payment's currency (R6).
    pub device_total: Money,
    /// Number of unforwarded offline card payments on the device, in the
    /// payment's currency (B3).
    pub device_count: u32,
    /// Total of offline card payments already on this order (R5).
    pub order_total: Money,
    /// Total this card already paid offline in this session, keyed by the
    /// card fingerprint the caller holds; zero for a new or unidentifiable
    /// card (B3).
    pub card_total: Money,
}

/// The card payment asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OfflineCardRequest {
    /// The amount before tip; must be positive.
    pub amount: Money,
    /// A tip added on top of `amount`; the card is charged `amount + tip`.
    pub tip: Option<Money>,
    pub entry_mode: EntryMode,
    pub network: Network,
    pub tender: TenderKind,
}

impl OfflineCardRequest {
    /// What the card is charged: `amount + tip`, checked. This is the figure
    /// every limit is applied to and the one the caller must record.
    pub fn charged(&self) -> Result<Money, Refusal> {
        let Some(tip) = self.tip else {
            return Ok(self.amount);
        };
        if tip.currency() != self.amount.currency() {
            return Err(Refusal::CurrencyMismatch {
                field: AmountField::Tip,
                expected: self.amount.currency(),
                found: tip.currency(),
            });
        }
        self.amount
            .checked_add(&tip)
            .map_err(|_| Refusal::AmountOverflow)
    }
}

/// Which amount of a request or context a [`Refusal`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AmountField {
    Amount,
    Tip,
    DeviceTotal,
    OrderTotal,
    CardTotal,
}

impl fmt::Display for AmountField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountField::Amount => "amount",
            AmountField::Tip => "tip",
            AmountField::DeviceTotal => "device total",
            AmountField::OrderTotal => "order total",
            AmountField::CardTotal => "card total",
        })
    }
}

/// Why a card payment may not be taken offline. Carries no card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// The merchant has not turned offline payments on (R4).
    #[error("offline payments are turned off")]
    OfflineDisabled,
    /// The stored policy is inconsistent; fix the settings (R4).
    #[error("the offline payment settings are invalid: {error}")]
    InvalidPolicy { error: PolicyError },
    /// The policy does not take offline payments for this cause (B6).
    #[error("offline payments are not allowed during a {reason}")]
    OutageCauseNotAllowed { reason: OfflineReason },
    /// The staff member lacks the offline-payment permission (R12).
    #[error("this staff member may not accept offline card payments")]
    StaffNotPermitted,
    /// The session's acceptance window has closed (R7).
    #[error("the offline acceptance window closed at {closes_at:?} (now {now:?})")]
    AcceptanceWindowClosed {
        closes_at: Timestamp,
        now: Timestamp,
    },
    /// The session is close to its forwarding deadline; take payments online (B4).
    #[error("the offline session is close to its deadline: payments require online")]
    RequireOnlineNearDeadline,
    /// Phone tap-to-pay cannot take offline payments (R10).
    #[error("Tap to Pay on the phone cannot take offline payments")]
    TapToPayRefused,
    /// The reader model does not support offline mode (R11).
    #[error("reader {model:?} does not support offline payments")]
    ReaderNotOfflineCapable { model: String },
    /// Not a card tender: cash needs no offline authorization and is recorded
    /// as cash, outside the offline limits (S0: offline payments concern card
    /// payments only; R5: the rest can be paid in cash).
    #[error("{kind} is not a card payment")]
    NotACardTender { kind: TenderKind },
    /// The tender kind is refused offline (R9, R10).
    #[error("{kind} is not accepted offline")]
    TenderRefused { kind: TenderKind },
    /// The card entry mode is refused offline (R9, R10).
    #[error("{mode} is not accepted offline")]
    EntryModeRefused { mode: EntryMode },
    /// The card network is not on the policy's allow-list (R10).
    #[error("{network} cards are not accepted offline")]
    BrandNotAllowed { network: Network },
    /// The network is refused offline for merchants of `country` (R10).
    #[error("{network} cards are not accepted offline by merchants in {country}")]
    NetworkRefused { network: Network, country: String },
    /// Tips are refused offline (R10).
    #[error("tips are not accepted offline (tip {tip})")]
    TipsRefused { tip: Money },
    /// The policy has no limits for this currency, so it cannot be taken offline (R6).
    #[error("no offline limits are set for {currency}")]
    CurrencyNotConfigured { currency: Currency },
    /// An amount is out of range: a payment must be positive, a tip or a
    /// total may not be negative (B3).
    #[error("invalid {field}: {amount}")]
    InvalidAmount { field: AmountField, amount: Money },
    /// An amount is in another currency than the payment (B3).
    #[error("{field} is in {found}, the payment in {expected}")]
    CurrencyMismatch {
        field: AmountField,
        expected: Currency,
        found: Currency,
    },
    /// `amount + tip` does not fit in 64 bits (B3).
    #[error("the amount with tip overflows")]
    AmountOverflow,
    /// The payment is above the per-payment limit (B3).
    #[error("{attempted} is above the offline per-payment limit of {limit}")]
    PerPaymentLimit { limit: Money, attempted: Money },
    /// The order's offline card total would exceed the per-order limit (R5).
    #[error("{attempted} on top of {current} would exceed the offline per-order limit of {limit}")]
    PerOrderLimit {
        limit: Money,
        current: Money,
        attempted: Money,
    },
    /// The card's offline total this session would exceed the per-card limit (B3).
    #[error("{attempted} on top of {current} would exceed the offline per-card limit of {limit}")]
    PerCardLimit {
        limit: Money,
        current: Money,
        attempted: Money,
    },
    /// The device already holds as many offline payments as allowed (B3).
    #[error("the device already holds {current} offline payments (limit {limit})")]
    DeviceCountLimit { limit: u32, current: u32 },
    /// The device's unforwarded offline total would exceed the device limit (R6).
    #[error("{attempted} on top of {current} would exceed the offline device limit of {limit}")]
    DeviceAmountLimit {
        limit: Money,
        current: Money,
        attempted: Money,
    },
}

impl Refusal {
    /// The SPEC rule that refused the payment, e.g. `"R5"`. R9 (S0) and R10
    /// (S3) both list refusals; where both list one, `"R9"` is returned.
    pub fn rule_id(&self) -> &'static str {
        match self {
            Refusal::OfflineDisabled | Refusal::InvalidPolicy { .. } => "R4",
            Refusal::OutageCauseNotAllowed { .. } => "B6",
            Refusal::StaffNotPermitted => "R12",
            Refusal::AcceptanceWindowClosed { .. } => "R7",
            Refusal::RequireOnlineNearDeadline => "B4",
            Refusal::TapToPayRefused => "R10",
            Refusal::ReaderNotOfflineCapable { .. } => "R11",
            Refusal::NotACardTender { .. } | Refusal::TenderRefused { .. } => "R9",
            Refusal::EntryModeRefused { mode } => match mode {
                EntryMode::Swipe => "R10",
                EntryMode::Chip | EntryMode::Contactless | EntryMode::Manual => "R9",
            },
            Refusal::BrandNotAllowed { .. }
            | Refusal::NetworkRefused { .. }
            | Refusal::TipsRefused { .. } => "R10",
            Refusal::CurrencyNotConfigured { .. } => "R6",
            Refusal::InvalidAmount { .. }
            | Refusal::CurrencyMismatch { .. }
            | Refusal::AmountOverflow
            | Refusal::PerPaymentLimit { .. }
            | Refusal::PerCardLimit { .. }
            | Refusal::DeviceCountLimit { .. } => "B3",
            Refusal::PerOrderLimit { .. } => "R5",
            Refusal::DeviceAmountLimit { .. } => "R6",
        }
    }

    /// The figures an app shows with the refusal, where the rule has them:
    /// `(limit, current, attempted)` ("limit 100.00, current 60.00,
    /// attempted 50.00"; a refused tip is the attempted amount).
    pub fn figures(&self) -> (Option<Money>, Option<Money>, Option<Money>) {
        match self {
            Refusal::PerPaymentLimit { limit, attempted } => (Some(*limit), None, Some(*attempted)),
            Refusal::PerOrderLimit {
                limit,
                current,
                attempted,
            }
            | Refusal::PerCardLimit {
                limit,
                current,
                attempted,
            }
            | Refusal::DeviceAmountLimit {
                limit,
                current,
                attempted,
            } => (Some(*limit), Some(*current), Some(*attempted)),
            Refusal::TipsRefused { tip } => (None, None, Some(*tip)),
            _ => (None, None, None),
        }
    }

    /// The refusal's name, e.g. `"PerOrderLimit"`: what the app matches on.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::OfflineDisabled => "OfflineDisabled",
            Refusal::InvalidPolicy { .. } => "InvalidPolicy",
            Refusal::OutageCauseNotAllowed { .. } => "OutageCauseNotAllowed",
            Refusal::StaffNotPermitted => "StaffNotPermitted",
            Refusal::AcceptanceWindowClosed { .. } => "AcceptanceWindowClosed",
            Refusal::RequireOnlineNearDeadline => "RequireOnlineNearDeadline",
            Refusal::TapToPayRefused => "TapToPayRefused",
            Refusal::ReaderNotOfflineCapable { .. } => "ReaderNotOfflineCapable",
            Refusal::NotACardTender { .. } => "NotACardTender",
            Refusal::TenderRefused { .. } => "TenderRefused",
            Refusal::EntryModeRefused { .. } => "EntryModeRefused",
            Refusal::BrandNotAllowed { .. } => "BrandNotAllowed",
            Refusal::NetworkRefused { .. } => "NetworkRefused",
            Refusal::TipsRefused { .. } => "TipsRefused",
            Refusal::CurrencyNotConfigured { .. } => "CurrencyNotConfigured",
            Refusal::InvalidAmount { .. } => "InvalidAmount",
            Refusal::CurrencyMismatch { .. } => "CurrencyMismatch",
            Refusal::AmountOverflow => "AmountOverflow",
            Refusal::PerPaymentLimit { .. } => "PerPaymentLimit",
            Refusal::PerOrderLimit { .. } => "PerOrderLimit",
            Refusal::PerCardLimit { .. } => "PerCardLimit",
            Refusal::DeviceCountLimit { .. } => "DeviceCountLimit",
            Refusal::DeviceAmountLimit { .. } => "DeviceAmountLimit",
        }
    }
}

/// Longest reader model name carried in a refusal.
const MAX_MODEL_CHARS: usize = 64;

/// Decides whether `request` may be taken offline now. `Ok(())` means every
/// rule passed; the caller then records [`OfflineCardRequest::charged`] and
/// adds it to the totals, under the same lock as this check. See the module
/// documentation for the order of checks.
pub fn check_offline_payment(
    policy: &Policy,
    ctx: &OfflineContext,
    request: &OfflineCardRequest,
) -> Result<(), Refusal> {
    if !policy.enabled {
        return Err(Refusal::OfflineDisabled);
    }
    policy
        .validate()
        .map_err(|error| Refusal::InvalidPolicy { error })?;
    check_context(policy, ctx)?;
    check_card(policy, request)?;
    let charged = check_amounts(policy, ctx, request)?;
    check_limits(policy, ctx, charged)
}

fn check_context(policy: &Policy, ctx: &OfflineContext) -> Result<(), Refusal> {
    if !policy.outage.allows(ctx.reason) {
        return Err(Refusal::OutageCauseNotAllowed { reason: ctx.reason });
    }
    if policy.staff_permission_required && !ctx.staff_permitted {
        return Err(Refusal::StaffNotPermitted);
    }
    if ctx.now >= ctx.window_closes_at {
        return Err(Refusal::AcceptanceWindowClosed {
            closes_at: ctx.window_closes_at,
            now: ctx.now,
        });
    }
    if ctx.require_online {
        return Err(Refusal::RequireOnlineNearDeadline);
    }
    match &ctx.reader {
        Reader::TapToPayOnPhone if !policy.tap_to_pay_on_phone => Err(Refusal::TapToPayRefused),
        Reader::TapToPayOnPhone => Ok(()),
        Reader::External { model } if !policy.reader_is_offline_capable(model) => {
            Err(Refusal::ReaderNotOfflineCapable {
                model: model.chars().take(MAX_MODEL_CHARS).collect(),
            })
        }
        Reader::External { .. } => Ok(()),
    }
}

fn check_card(policy: &Policy, request: &OfflineCardRequest) -> Result<(), Refusal> {
    let kind = request.tender;
    if kind == TenderKind::Cash {
        return Err(Refusal::NotACardTender { kind });
    }
    if !policy.tender_available_offline(kind) {
        return Err(Refusal::TenderRefused { kind });
    }
    if !policy.entry_mode_allowed(request.entry_mode) {
        return Err(Refusal::EntryModeRefused {
            mode: request.entry_mode,
        });
    }
    let network = request.network;
    if !policy.network_allowed(network) {
        return Err(Refusal::BrandNotAllowed { network });
    }
    if let Some(rule) = policy.regional_refusal(network) {
        return Err(Refusal::NetworkRefused {
            network,
            country: rule.merchant_country.clone(),
        });
    }
    if let Some(tip) = request.tip {
        if !policy.tips_allowed && tip.minor_units() > 0 {
            return Err(Refusal::TipsRefused { tip });
        }
    }
    Ok(())
}

/// Checks currencies and signs; returns the amount charged (amount + tip).
fn check_amounts(
    policy: &Policy,
    ctx: &OfflineContext,
    request: &OfflineCardRequest,
) -> Result<Money, Refusal> {
    let currency = request.amount.currency();
    if policy.limits_for(currency).is_none() {
        return Err(Refusal::CurrencyNotConfigured { currency });
    }
    if request.amount.minor_units() <= 0 {
        return Err(Refusal::InvalidAmount {
            field: AmountField::Amount,
            amount: request.amount,
        });
    }
    let others = [
        (AmountField::Tip, request.tip),
        (AmountField::DeviceTotal, Some(ctx.device_total)),
        (AmountField::OrderTotal, Some(ctx.order_total)),
        (AmountField::CardTotal, Some(ctx.card_total)),
    ];
    for (field, amount) in others {
        let Some(amount) = amount else { continue };
        if amount.currency() != currency {
            return Err(Refusal::CurrencyMismatch {
                field,
                expected: currency,
                found: amount.currency(),
            });
        }
        if amount.minor_units() < 0 {
            return Err(Refusal::InvalidAmount { field, amount });
        }
    }
    request.charged()
}

/// `current + attempted <= limit`, with an overflowing sum counted as over.
fn within(limit: Money, current: Money, attempted: Money) -> bool {
    current
        .minor_units()
        .checked_add(attempted.minor_units())
        .is_some_and(|after| after <= limit.minor_units())
}

fn check_limits(policy: &Policy, ctx: &OfflineContext, charged: Money) -> Result<(), Refusal> {
    let currency = charged.currency();
    let Some(limits) = policy.limits_for(currency) else {
        return Err(Refusal::CurrencyNotConfigured { currency });
    };
    let zero = Money::zero(currency);
    if let Some(limit) = limits.per_payment {
        if !within(limit, zero, charged) {
            return Err(Refusal::PerPaymentLimit {
                limit,
                attempted: charged,
            });
        }
    }
    if !within(limits.per_order, ctx.order_total, charged) {
        return Err(Refusal::PerOrderLimit {
            limit: limits.per_order,
            current: ctx.order_total,
            attempted: charged,
        });
    }
    if let Some(limit) = limits.per_card {
        if !within(limit, ctx.card_total, charged) {
            return Err(Refusal::PerCardLimit {
                limit,
                current: ctx.card_total,
                attempted: charged,
            });
        }
    }
    // Even without a count limit, a count that cannot grow is refused.
    let count_limit = limits.device_count.unwrap_or(u32::MAX);
    if ctx.device_count >= count_limit {
        return Err(Refusal::DeviceCountLimit {
            limit: count_limit,
            current: ctx.device_count,
        });
    }
    if let Some(limit) = limits.device_amount {
        if !within(limit, ctx.device_total, charged) {
            return Err(Refusal::DeviceAmountLimit {
                limit,
                current: ctx.device_total,
                attempted: charged,
            });
        }
    } else if ctx.device_total.checked_add(&charged).is_err() {
        // No device limit, but the running total must still be representable.
        return Err(Refusal::DeviceAmountLimit {
            limit: Money::new(i64::MAX, currency),
            current: ctx.device_total,
            attempted: charged,
        });
    }
    Ok(())
}

/// The device total nearing its limit, for the cashier's warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitNear {
    pub currency: Currency,
    /// The policy's threshold, in percent of the limit.
    pub warn_percent: u8,
    /// Set when the device amount is at or above the threshold.
    pub amount: Option<AmountNear>,
    /// Set when the device count is at or above the threshold.
    pub count: Option<CountNear>,
}

/// The device amount and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmountNear {
    pub total: Money,
    pub limit: Money,
}

/// The device count and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountNear {
    pub count: u32,
    pub limit: u32,
}

/// `value * 100 >= limit * percent`, exactly (no floats, no overflow).
fn at_or_above(value: i64, limit: i64, percent: u8) -> bool {
    i128::from(value) * 100 >= i128::from(limit) * i128::from(percent)
}

/// Whether the device totals *after* a payment are at or above the policy's
/// warning percentage of the device limits of `currency`. Level-triggered:
/// it answers for every payment past the threshold, and the caller decides
/// how often to tell the cashier. `None` when below the threshold, when the
/// currency has no device limit, or when `device_total_after` is in another
/// currency.
pub fn limit_warnings(
    policy: &Policy,
    currency: Currency,
    device_total_after: Money,
    device_count_after: u32,
) -> Option<LimitNear> {
    if device_total_after.currency() != currency {
        return None;
    }
    let limits = policy.limits_for(currency)?;
    let percent = limits.warn_percent;
    let amount = limits
        .device_amount
        .filter(|l| at_or_above(device_total_after.minor_units(), l.minor_units(), percent))
        .map(|limit| AmountNear {
            total: device_total_after,
            limit,
        });
    let count = limits
        .device_count
        .filter(|l| at_or_above(i64::from(device_count_after), i64::from(*l), percent))
        .map(|limit| CountNear {
            count: device_count_after,
            limit,
        });
    (amount.is_some() || count.is_some()).then_some(LimitNear {
        currency,
        warn_percent: percent,
        amount,
        count,
    })
}

/// An action that would lose stored offline payments if taken while some
/// are pending (SPEC R13, B7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GuardedAction {
    LogOut,
    SwitchLocation,
    ResetStore,
    RemoveDevice,
    /// Another merchant account (`PosEngine::switch_account`).
    SwitchAccount,
}

impl fmt::Display for GuardedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuardedAction::LogOut => "log out",
            GuardedAction::SwitchLocation => "switch location",
            GuardedAction::ResetStore => "reset the store",
            GuardedAction::RemoveDevice => "remove the device",
            GuardedAction::SwitchAccount => "switch merchant account",
        })
    }
}

/// The unforwarded offline payments on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingExposure {
    /// How many are pending.
    pub count: u64,
    /// Their total, one entry per currency.
    pub at_risk: Vec<Money>,
}

impl PendingExposure {
    /// Whether anything is pending.
    pub fn is_pending(&self) -> bool {
        self.count > 0 || self.at_risk.iter().any(|m| !m.is_zero())
    }
}

/// A person's explicit decision to go ahead anyway, to be written to the
/// audit log. It must restate the money at risk, as shown to that person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOverride {
    /// Who decided (a staff identifier, not a name).
    pub staff_id: String,
    /// Why, in their words.
    pub reason: String,
    /// The totals at risk they acknowledged, one per currency.
    pub acknowledged_at_risk: Vec<Money>,
}

/// A guarded action may go ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardOutcome {
    /// Nothing is pending.
    Allowed,
    /// Payments are pending and an override accepted the risk: log it.
    Overridden {
        action: GuardedAction,
        count: u64,
        at_risk: Vec<Money>,
    },
}

/// Why a guarded action was refused (R13).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ActionRefused {
    /// Payments are pending; forward them first (or override).
    #[error("cannot {action}: {count} offline payments are not forwarded yet")]
    PaymentsPending {
        action: GuardedAction,
        count: u64,
        at_risk: Vec<Money>,
    },
    /// Payments are pending and the policy allows no override.
    #[error("cannot {action}: {count} offline payments are pending and overrides are off")]
    OverrideNotAllowed {
        action: GuardedAction,
        count: u64,
        at_risk: Vec<Money>,
    },
    /// The override has no staff identifier or no reason; `count` and
    /// `at_risk` are what is pending.
    #[error(
        "an override needs a staff identifier and a reason ({count} offline payments are pending)"
    )]
    OverrideIncomplete { count: u64, at_risk: Vec<Money> },
    /// The override acknowledged other figures than those at risk now.
    #[error("the override acknowledged {acknowledged:?} but {at_risk:?} is at risk")]
    OverrideFiguresMismatch {
        acknowledged: Vec<Money>,
        count: u64,
        at_risk: Vec<Money>,
    },
}

impl ActionRefused {
    /// The SPEC rule: always `"R13"`.
    pub fn rule_id(&self) -> &'static str {
        "R13"
    }
}

fn sorted(amounts: &[Money]) -> Vec<Money> {
    let mut v: Vec<Money> = amounts.iter().filter(|m| !m.is_zero()).copied().collect();
    v.sort_by_key(|m| (m.currency(), m.minor_units()));
    v
}

/// Whether `action` may go ahead with `pending` payments on the device (R13).
/// With nothing pending it is allowed; otherwise only with an override that
/// names who and why and restates exactly the totals at risk (zero entries
/// and order ignored), and only if the policy allows overrides.
pub fn check_guarded_action(
    policy: &Policy,
    action: GuardedAction,
    pending: &PendingExposure,
    override_: Option<&ActionOverride>,
) -> Result<GuardOutcome, ActionRefused> {
    if !pending.is_pending() {
        return Ok(GuardOutcome::Allowed);
    }
    let at_risk = sorted(&pending.at_risk);
    let Some(o) = override_ else {
        return Err(ActionRefused::PaymentsPending {
            action,
            count: pending.count,
            at_risk,
        });
    };
    if !policy.pending_override_allowed {
        return Err(ActionRefused::OverrideNotAllowed {
            action,
            count: pending.count,
            at_risk,
        });
    }
    if o.staff_id.trim().is_empty() || o.reason.trim().is_empty() {
        return Err(ActionRefused::OverrideIncomplete {
            count: pending.count,
            at_risk,
        });
    }
    let acknowledged = sorted(&o.acknowledged_at_risk);
    if acknowledged != at_risk {
        return Err(ActionRefused::OverrideFiguresMismatch {
            acknowledged,
            count: pending.count,
            at_risk,
        });
    }
    Ok(GuardOutcome::Overridden {
        action,
        count: pending.count,
        at_risk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{CurrencyLimits, RegionalNetworkRule};
    use std::collections::{BTreeSet, HashMap};
    use std::time::Duration;

    const T0: Timestamp = Timestamp(1_800_000_000_000);
    const H: Duration = Duration::from_secs(3600);

    /// The limits an app sets for a preset outside the seeds' currency:
    /// 100.00 per order in a two-decimal currency.
    fn app_limits(currency: Currency) -> CurrencyLimits {
        CurrencyLimits::per_order(Money::new(10_000, currency))
    }

    fn c(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn usd(minor: i64) -> Money {
        Money::new(minor, c("USD"))
    }

    /// Shopify preset, enabled, with every B3 limit set too.
    fn full_policy() -> Policy {
        let limits = CurrencyLimits::per_order(usd(10_000))
            .with_per_payment(usd(5_000))
            .with_device_amount(usd(30_000))
            .with_device_count(8)
            .with_per_card(usd(12_000));
        let mut p = Policy::shopify_pos(c("USD"))
            .with_limits(c("USD"), limits)
            .with_enabled(true);
        p.tips_allowed = true;
        p
    }

    fn ctx(currency: Currency, model: &str) -> OfflineContext {
        OfflineContext {
            reason: OfflineReason::NetworkOutage,
            now: T0,
            window_closes_at: T0.plus(H),
            require_online: false,
            staff_permitted: true,
            reader: Reader::External {
                model: model.to_owned(),
            },
            device_total: Money::zero(currency),
            device_count: 0,
            order_total: Money::zero(currency),
            card_total: Money::zero(currency),
        }
    }

    fn shop_ctx() -> OfflineContext {
        ctx(c("USD"), "POS Go")
    }

    fn card(amount: Money) -> OfflineCardRequest {
        OfflineCardRequest {
            amount,
            tip: None,
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            tender: TenderKind::Card,
        }
    }

    #[test]
    fn an_ordinary_payment_is_accepted() {
        assert_eq!(
            check_offline_payment(&full_policy(), &shop_ctx(), &card(usd(1_234))),
            Ok(())
        );
    }

    #[test]
    fn disabled_policy_refuses_first() {
        let p = full_policy().with_enabled(false);
        let mut x = shop_ctx();
        x.staff_permitted = false;
        let r = check_offline_payment(&p, &x, &card(usd(1))).unwrap_err();
        assert_eq!(r, Refusal::OfflineDisabled);
        assert_eq!(r.rule_id(), "R4");
        // Presets are disabled until the merchant opts in (R4).
        let r = check_offline_payment(&Policy::shopify_pos(c("USD")), &shop_ctx(), &card(usd(1)));
        assert_eq!(r, Err(Refusal::OfflineDisabled));
    }

    #[test]
    fn an_invalid_policy_refuses() {
        let mut p = full_policy();
        p.session.acceptance_window = Duration::ZERO;
        let r = check_offline_payment(&p, &shop_ctx(), &card(usd(1))).unwrap_err();
        assert_eq!(
            r,
            Refusal::InvalidPolicy {
                error: PolicyError::ZeroAcceptanceWindow
            }
        );
        assert_eq!(r.rule_id(), "R4");
    }

    #[test]
    fn outage_cause_is_checked_per_cause() {
        let p = full_policy();
        for reason in [
            OfflineReason::ServiceDisruption,
            OfflineReason::ForcedOffline,
        ] {
            let mut x = shop_ctx();
            x.reason = reason;
            let r = check_offline_payment(&p, &x, &card(usd(1))).unwrap_err();
            assert_eq!(r, Refusal::OutageCauseNotAllowed { reason });
            assert_eq!(r.rule_id(), "B6");
        }
        let mut p = p;
        p.outage.offline_when_forced = true;
        let mut x = shop_ctx();
        x.reason = OfflineReason::ForcedOffline;
        assert_eq!(check_offline_payment(&p, &x, &card(usd(1))), Ok(()));
    }

    #[test]
    fn staff_permission_is_required_when_the_policy_says_so() {
        let mut x = shop_ctx();
        x.staff_permitted = false;
        let r = check_offline_payment(&full_policy(), &x, &card(usd(1))).unwrap_err();
        assert_eq!(r, Refusal::StaffNotPermitted);
        assert_eq!(r.rule_id(), "R12");
        let mut p = full_policy();
        p.staff_permission_required = false;
        assert_eq!(check_offline_payment(&p, &x, &card(usd(1))), Ok(()));
    }

    #[test]
    fn acceptance_window_closes_at_its_end() {
        let p = full_policy();
        let mut x = shop_ctx();
        x.now = T0.plus(H - Duration::from_millis(1));
        assert_eq!(check_offline_payment(&p, &x, &card(usd(1))), Ok(()));
        x.now = T0.plus(H);
        let r = check_offline_payment(&p, &x, &card(usd(1))).unwrap_err();
        assert_eq!(
            r,
            Refusal::AcceptanceWindowClosed {
                closes_at: T0.plus(H),
                now: T0.plus(H)
            }
        );
        assert_eq!(r.rule_id(), "R7");
    }

    #[test]
    fn require_online_near_deadline_refuses() {
        let mut x = shop_ctx();
        x.require_online = true;
        let r = check_offline_payment(&full_policy(), &x, &card(usd(1))).unwrap_err();
        assert_eq!(r, Refusal::RequireOnlineNearDeadline);
        assert_eq!(r.rule_id(), "B4");
    }

    #[test]
    fn readers() {
        let p = full_policy();
        let mut x = shop_ctx();
        x.reader = Reader::TapToPayOnPhone;
        let r = check_offline_payment(&p, &x, &card(usd(1))).unwrap_err();
        assert_eq!(r, Refusal::TapToPayRefused);
        assert_eq!(r.rule_id(), "R10");
        let mut allowed = p.clone();
        allowed.tap_to_pay_on_phone = true;
        assert_eq!(check_offline_payment(&allowed, &x, &card(usd(1))), Ok(()));

        let x = ctx(c("USD"), "Square Reader");
        let r = check_offline_payment(&p, &x, &card(usd(1))).unwrap_err();
        assert_eq!(
            r,
            Refusal::ReaderNotOfflineCapable {
                model: "Square Reader".to_owned()
            }
        );
        assert_eq!(r.rule_id(), "R11");
        // The model list is data: adding a model makes it capable.
        let mut more = p;
        more.offline_readers.insert("Square Reader".to_owned());
        assert_eq!(check_offline_payment(&more, &x, &card(usd(1))), Ok(()));
        // A huge model name is truncated in the refusal.
        let x = ctx(c("USD"), &"X".repeat(1000));
        match check_offline_payment(&more, &x, &card(usd(1))) {
            Err(Refusal::ReaderNotOfflineCapable { model }) => assert_eq!(model.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tenders() {
        let p = full_policy();
        for kind in [TenderKind::GiftCard, TenderKind::BuyNowPayLater] {
            let mut req = card(usd(1));
            req.tender = kind;
            req.network = Network::Other;
            let r = check_offline_payment(&p, &shop_ctx(), &req).unwrap_err();
            assert_eq!(r, Refusal::TenderRefused { kind });
            assert_eq!(r.rule_id(), "R9");
        }
        let mut req = card(usd(1));
        req.tender = TenderKind::Cash;
        let r = check_offline_payment(&p, &shop_ctx(), &req).unwrap_err();
        assert_eq!(
            r,
            Refusal::NotACardTender {
                kind: TenderKind::Cash
            }
        );
    }

    #[test]
    fn entry_modes() {
        let p = full_policy();
        for (mode, rule) in [(EntryMode::Swipe, "R10"), (EntryMode::Manual, "R9")] {
            let mut req = card(usd(1));
            req.entry_mode = mode;
            let r = check_offline_payment(&p, &shop_ctx(), &req).unwrap_err();
            assert_eq!(r, Refusal::EntryModeRefused { mode });
            assert_eq!(r.rule_id(), rule);
        }
        let mut req = card(usd(1));
        req.entry_mode = EntryMode::Contactless;
        assert_eq!(check_offline_payment(&p, &shop_ctx(), &req), Ok(()));
    }

    #[test]
    fn brand_allow_list() {
        let mut p = full_policy();
        p.allowed_networks = Some(BTreeSet::from([Network::Visa, Network::Mastercard]));
        assert_eq!(
            check_offline_payment(&p, &shop_ctx(), &card(usd(1))),
            Ok(())
        );
        let mut req = card(usd(1));
        req.network = Network::Amex;
        let r = check_offline_payment(&p, &shop_ctx(), &req).unwrap_err();
        assert_eq!(
            r,
            Refusal::BrandNotAllowed {
                network: Network::Amex
            }
        );
        assert_eq!(r.rule_id(), "R10");
    }

    #[test]
    fn regional_networks_follow_the_merchant_country() {
        let interac = OfflineCardRequest {
            network: Network::Interac,
            ..card(Money::new(1_000, c("CAD")))
        };
        let eftpos = OfflineCardRequest {
            network: Network::Eftpos,
            ..card(Money::new(1_000, c("AUD")))
        };
        let ca = Policy::shopify_pos(c("CAD"))
            .with_limits(c("CAD"), app_limits(c("CAD")))
            .with_merchant_country("CA")
            .with_enabled(true);
        let r = check_offline_payment(&ca, &ctx(c("CAD"), "POS Go"), &interac).unwrap_err();
        assert_eq!(
            r,
            Refusal::NetworkRefused {
                network: Network::Interac,
                country: "CA".to_owned()
            }
        );
        assert_eq!(r.rule_id(), "R10");
        let visa = card(Money::new(1_000, c("CAD")));
        assert_eq!(
            check_offline_payment(&ca, &ctx(c("CAD"), "POS Go"), &visa),
            Ok(())
        );

        let au = Policy::shopify_pos(c("AUD"))
            .with_limits(c("AUD"), app_limits(c("AUD")))
            .with_merchant_country("AU")
            .with_enabled(true);
        let r = check_offline_payment(&au, &ctx(c("AUD"), "POS Go"), &eftpos).unwrap_err();
        assert_eq!(
            r,
            Refusal::NetworkRefused {
                network: Network::Eftpos,
                country: "AU".to_owned()
            }
        );
        // An eftpos rule does not apply to a Canadian merchant.
        let mut ca_eftpos = ca
            .clone()
            .with_limits(c("AUD"), au.limits[&c("AUD")].clone());
        ca_eftpos
            .refused_regional_networks
            .retain(|r| r != &RegionalNetworkRule::new(Network::Interac, "CA"));
        assert_eq!(
            check_offline_payment(&ca_eftpos, &ctx(c("AUD"), "POS Go"), &eftpos),
            Ok(())
        );
    }

    #[test]
    fn tips() {
        let mut p = full_policy();
        p.tips_allowed = false;
        let mut req = card(usd(1_000));
        req.tip = Some(usd(150));
        let r = check_offline_payment(&p, &shop_ctx(), &req).unwrap_err();
        assert_eq!(r, Refusal::TipsRefused { tip: usd(150) });
        assert_eq!(r.rule_id(), "R10");
        // A zero tip is no tip; a negative one is malformed, not a tip.
        req.tip = Some(usd(0));
        assert_eq!(check_offline_payment(&p, &shop_ctx(), &req), Ok(()));
        req.tip = Some(usd(-1));
        assert!(matches!(
            check_offline_payment(&p, &shop_ctx(), &req),
            Err(Refusal::InvalidAmount {
                field: AmountField::Tip,
                ..
            })
        ));
    }

    #[test]
    fn tips_count_towards_the_limits() {
        let p = full_policy();
        let mut req = card(usd(4_900));
        req.tip = Some(usd(100));
        assert_eq!(req.charged(), Ok(usd(5_000)));
        assert_eq!(check_offline_payment(&p, &shop_ctx(), &req), Ok(()));
        req.tip = Some(usd(101));
        assert_eq!(
            check_offline_payment(&p, &shop_ctx(), &req),
            Err(Refusal::PerPaymentLimit {
                limit: usd(5_000),
                attempted: usd(5_001)
            })
        );
    }

    #[test]
    fn currency_must_be_configured() {
        let eur = Money::new(100, c("EUR"));
        let r = check_offline_payment(&full_policy(), &ctx(c("EUR"), "POS Go"), &card(eur))
            .unwrap_err();
        assert_eq!(r, Refusal::CurrencyNotConfigured { currency: c("EUR") });
        assert_eq!(r.rule_id(), "R6");
    }

    #[test]
    fn amounts_must_be_sound() {
        let p = full_policy();
        for bad in [0, -100] {
            let r = check_offline_payment(&p, &shop_ctx(), &card(usd(bad))).unwrap_err();
            assert_eq!(
                r,
                Refusal::InvalidAmount {
                    field: AmountField::Amount,
                    amount: usd(bad)
                }
            );
            assert_eq!(r.rule_id(), "B3");
        }
        let mut req = card(usd(100));
        req.tip = Some(usd(-1));
        assert_eq!(
            check_offline_payment(&p, &shop_ctx(), &req),
            Err(Refusal::InvalidAmount {
                field: AmountField::Tip,
                amount: usd(-1)
            })
        );
        req.tip = Some(Money::new(1, c("EUR")));
        assert_eq!(
            check_offline_payment(&p, &shop_ctx(), &req),
            Err(Refusal::CurrencyMismatch {
                field: AmountField::Tip,
                expected: c("USD"),
                found: c("EUR")
            })
        );
        let mut x = shop_ctx();
        x.order_total = Money::new(0, c("EUR"));
        assert_eq!(
            check_offline_payment(&p, &x, &card(usd(1))),
            Err(Refusal::CurrencyMismatch {
                field: AmountField::OrderTotal,
                expected: c("USD"),
                found: c("EUR")
            })
        );
        let mut x = shop_ctx();
        x.device_total = usd(-5);
        assert_eq!(
            check_offline_payment(&p, &x, &card(usd(1))),
            Err(Refusal::InvalidAmount {
                field: AmountField::DeviceTotal,
                amount: usd(-5)
            })
        );
        let mut x = shop_ctx();
        x.card_total = usd(-5);
        assert!(matches!(
            check_offline_payment(&p, &x, &card(usd(1))),
            Err(Refusal::InvalidAmount {
                field: AmountField::CardTotal,
                ..
            })
        ));
    }

    #[test]
    fn overflow_is_a_refusal_never_a_wrap() {
        let mut req = card(usd(i64::MAX));
        req.tip = Some(usd(1));
        assert_eq!(req.charged(), Err(Refusal::AmountOverflow));
        let r = check_offline_payment(&full_policy(), &shop_ctx(), &req).unwrap_err();
        assert_eq!(r, Refusal::AmountOverflow);
        assert_eq!(r.rule_id(), "B3");

        // Huge limits and a huge running total: the sum overflows → refused.
        let max = usd(i64::MAX);
        let mut p = full_policy();
        p.limits.insert(
            c("USD"),
            CurrencyLimits::per_order(max).with_device_amount(max),
        );
        let mut x = shop_ctx();
        x.device_total = usd(i64::MAX - 10);
        assert_eq!(
            check_offline_payment(&p, &x, &card(usd(11))),
            Err(Refusal::DeviceAmountLimit {
                limit: max,
                current: usd(i64::MAX - 10),
                attempted: usd(11)
            })
        );
        assert_eq!(check_offline_payment(&p, &x, &card(usd(10))), Ok(()));
        // Without a device limit the running total must still fit.
        p.limits.insert(c("USD"), CurrencyLimits::per_order(max));
        assert!(matches!(
            check_offline_payment(&p, &x, &card(usd(11))),
            Err(Refusal::DeviceAmountLimit { .. })
        ));
        // And a count that cannot grow is refused.
        let mut x = shop_ctx();
        x.device_count = u32::MAX;
        assert_eq!(
            check_offline_payment(&p, &x, &card(usd(1))),
            Err(Refusal::DeviceCountLimit {
                limit: u32::MAX,
                current: u32::MAX
            })
        );
    }

    #[test]
    fn per_payment_limit_is_inclusive() {
        let p = full_policy();
        assert_eq!(
            check_offline_payment(&p, &shop_ctx(), &card(usd(5_000))),
            Ok(())
        );
        let r = check_offline_payment(&p, &shop_ctx(), &card(usd(5_001))).unwrap_err();
        assert_eq!(
            r,
            Refusal::PerPaymentLimit {
                limit: usd(5_000),
                attempted: usd(5_001)
            }
        );
        assert_eq!(r.rule_id(), "B3");
    }

    #[test]
    fn per_order_limit_is_inclusive() {
        let p = full_policy();
        let mut x = shop_ctx();
        x.order_total = usd(6_000);
        assert_eq!(check_offline_payment(&p, &x, &card(usd(4_000))), Ok(()));
        let r = check_offline_payment(&p, &x, &card(usd(4_001))).unwrap_err();
        assert_eq!(
            r,
            Refusal::PerOrderLimit {
                limit: usd(10_000),
                current: usd(6_000),
                attempted: usd(4_001)
            }
        );
        assert_eq!(r.rule_id(), "R5");
    }

    #[test]
    fn per_card_limit_is_inclusive() {
        let p = full_policy();
        let mut x = shop_ctx();
        x.card_total = usd(9_000);
        assert_eq!(check_offline_payment(&p, &x, &card(usd(3_000))), Ok(()));
        let r = check_offline_payment(&p, &x, &card(usd(3_001))).unwrap_err();
        assert_eq!(
            r,
            Refusal::PerCardLimit {
                limit: usd(12_000),
                current: usd(9_000),
                attempted: usd(3_001)
            }
        );
        assert_eq!(r.rule_id(), "B3");
    }

    #[test]
    fn device_count_limit_is_inclusive() {
        let p = full_policy();
        let mut x = shop_ctx();
        x.device_count = 7;
        assert_eq!(check_offline_payment(&p, &x, &card(usd(1))), Ok(()));
        x.device_count = 8;
        let r = check_offline_payment(&p, &x, &card(usd(1))).unwrap_err();
        assert_eq!(
            r,
            Refusal::DeviceCountLimit {
                limit: 8,
                current: 8
            }
        );
        assert_eq!(r.rule_id(), "B3");
    }

    #[test]
    fn device_amount_limit_is_inclusive() {
        let p = full_policy();
        let mut x = shop_ctx();
        x.device_total = usd(25_000);
        assert_eq!(check_offline_payment(&p, &x, &card(usd(5_000))), Ok(()));
        x.device_total = usd(25_001);
        let r = check_offline_payment(&p, &x, &card(usd(5_000))).unwrap_err();
        assert_eq!(
            r,
            Refusal::DeviceAmountLimit {
                limit: usd(30_000),
                current: usd(25_001),
                attempted: usd(5_000)
            }
        );
        assert_eq!(r.rule_id(), "R6");
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let p = full_policy();
        // Everything wrong at once: the permission check comes before the card
        // and the limits.
        let mut x = shop_ctx();
        x.staff_permitted = false;
        x.require_online = true;
        x.device_count = 100;
        let mut req = card(usd(1_000_000));
        req.entry_mode = EntryMode::Manual;
        assert_eq!(
            check_offline_payment(&p, &x, &req),
            Err(Refusal::StaffNotPermitted)
        );
        x.staff_permitted = true;
        assert_eq!(
            check_offline_payment(&p, &x, &req),
            Err(Refusal::RequireOnlineNearDeadline)
        );
        x.require_online = false;
        assert!(matches!(
            check_offline_payment(&p, &x, &req),
            Err(Refusal::EntryModeRefused { .. })
        ));
        req.entry_mode = EntryMode::Chip;
        // Narrowest limit first: per payment before order, card and device.
        x.order_total = usd(9_999);
        x.card_total = usd(11_999);
        assert!(matches!(
            check_offline_payment(&p, &x, &req),
            Err(Refusal::PerPaymentLimit { .. })
        ));
        req.amount = usd(2);
        assert!(matches!(
            check_offline_payment(&p, &x, &req),
            Err(Refusal::PerOrderLimit { .. })
        ));
        x.order_total = usd(0);
        assert!(matches!(
            check_offline_payment(&p, &x, &req),
            Err(Refusal::PerCardLimit { .. })
        ));
        x.card_total = usd(0);
        assert!(matches!(
            check_offline_payment(&p, &x, &req),
            Err(Refusal::DeviceCountLimit { .. })
        ));
    }

    // --- S3 (shopify_pos) against its own examples -------------------------

    /// "If the limit is set to 100 dollars, two or three card payments can be
    /// accepted on one order as long as the total does not exceed 100
    /// dollars; above that, complete the order with cash."
    #[test]
    fn s3_order_of_100_paid_by_two_or_three_cards() {
        let p = Policy::shopify_pos(c("USD")).with_enabled(true);
        for split in [&[6_000, 4_000][..], &[3_000, 3_000, 4_000][..]] {
            let mut x = shop_ctx();
            for (i, &part) in split.iter().enumerate() {
                x.card_total = usd(0); // a different card each time
                assert_eq!(
                    check_offline_payment(&p, &x, &card(usd(part))),
                    Ok(()),
                    "card {i} of {split:?}"
                );
                x.order_total = x.order_total.checked_add(&usd(part)).unwrap();
                x.device_total = x.device_total.checked_add(&usd(part)).unwrap();
                x.device_count += 1;
            }
            assert_eq!(x.order_total, usd(10_000));
        }
        // A 120-dollar order: two cards of 50 pass, the third card (20) would
        // push the order over 100 and is refused with the figures; the rest
        // is paid in cash, outside the offline rules.
        let mut x = shop_ctx();
        for _ in 0..2 {
            assert_eq!(check_offline_payment(&p, &x, &card(usd(5_000))), Ok(()));
            x.order_total = x.order_total.checked_add(&usd(5_000)).unwrap();
        }
        assert_eq!(
            check_offline_payment(&p, &x, &card(usd(2_000))),
            Err(Refusal::PerOrderLimit {
                limit: usd(10_000),
                current: usd(10_000),
                attempted: usd(2_000)
            })
        );
        let cash = OfflineCardRequest {
            tender: TenderKind::Cash,
            ..card(usd(2_000))
        };
        assert!(matches!(
            check_offline_payment(&p, &x, &cash),
            Err(Refusal::NotACardTender { .. })
        ));
        // A single card above 100 is refused outright.
        assert_eq!(
            check_offline_payment(&p, &shop_ctx(), &card(usd(10_001))),
            Err(Refusal::PerOrderLimit {
                limit: usd(10_000),
                current: usd(0),
                attempted: usd(10_001)
            })
        );
    }

    /// "If the device limit is set to 5,000 dollars, the POS device can
    /// process payments up to a total of 5,000 dollars."
    #[test]
    fn s3_device_limit_of_5000() {
        let p = Policy::shopify_pos(c("USD")).with_enabled(true);
        let mut x = shop_ctx();
        x.device_total = usd(495_000);
        x.device_count = 60;
        assert_eq!(check_offline_payment(&p, &x, &card(usd(5_000))), Ok(()));
        x.device_total = usd(500_000);
        assert_eq!(
            check_offline_payment(&p, &x, &card(usd(1))),
            Err(Refusal::DeviceAmountLimit {
                limit: usd(500_000),
                current: usd(500_000),
                attempted: usd(1)
            })
        );
        // In yen the app sets its own figures (exponent 0): ¥750,000.
        let yen = |m| Money::new(m, c("JPY"));
        let jpy = Policy::shopify_pos(c("JPY"))
            .with_limits(
                c("JPY"),
                CurrencyLimits::per_order(yen(15_000)).with_device_amount(yen(750_000)),
            )
            .with_enabled(true);
        let mut x = ctx(c("JPY"), "Wisepad 3");
        x.device_total = yen(749_950);
        assert_eq!(
            check_offline_payment(&jpy, &x, &card(Money::new(50, c("JPY")))),
            Ok(())
        );
        assert!(matches!(
            check_offline_payment(&jpy, &x, &card(Money::new(51, c("JPY")))),
            Err(Refusal::DeviceAmountLimit { .. })
        ));
    }

    #[test]
    fn s3_restrictions() {
        let p = Policy::shopify_pos(c("USD")).with_enabled(true);
        let x = shop_ctx();
        let swipe = OfflineCardRequest {
            entry_mode: EntryMode::Swipe,
            ..card(usd(100))
        };
        assert_eq!(
            check_offline_payment(&p, &x, &swipe),
            Err(Refusal::EntryModeRefused {
                mode: EntryMode::Swipe
            })
        );
        let tip = OfflineCardRequest {
            tip: Some(usd(100)),
            ..card(usd(100))
        };
        assert_eq!(
            check_offline_payment(&p, &x, &tip),
            Err(Refusal::TipsRefused { tip: usd(100) })
        );
        let gift = OfflineCardRequest {
            tender: TenderKind::GiftCard,
            ..card(usd(100))
        };
        assert!(matches!(
            check_offline_payment(&p, &x, &gift),
            Err(Refusal::TenderRefused { .. })
        ));
        let mut phone = shop_ctx();
        phone.reader = Reader::TapToPayOnPhone;
        assert_eq!(
            check_offline_payment(&p, &phone, &card(usd(100))),
            Err(Refusal::TapToPayRefused)
        );
        let mut disruption = shop_ctx();
        disruption.reason = OfflineReason::ServiceDisruption;
        assert!(matches!(
            check_offline_payment(&p, &disruption, &card(usd(100))),
            Err(Refusal::OutageCauseNotAllowed { .. })
        ));
        let mut no_role = shop_ctx();
        no_role.staff_permitted = false;
        assert_eq!(
            check_offline_payment(&p, &no_role, &card(usd(100))),
            Err(Refusal::StaffNotPermitted)
        );
    }

    // --- S0 (square_reader / square_terminal) against its own rules ---------

    #[test]
    fn s0_phone_reader_window_is_one_hour() {
        let p = Policy::square_reader(c("EUR"))
            .with_limits(c("EUR"), app_limits(c("EUR")))
            .with_enabled(true);
        let start = T0;
        let mut x = ctx(c("EUR"), "Square Reader");
        x.window_closes_at = start.plus(p.session.acceptance_window);
        x.now = start.plus(H - Duration::from_millis(1));
        let eur = |m| Money::new(m, c("EUR"));
        assert_eq!(check_offline_payment(&p, &x, &card(eur(2_500))), Ok(()));
        x.now = start.plus(H);
        assert_eq!(
            check_offline_payment(&p, &x, &card(eur(2_500))),
            Err(Refusal::AcceptanceWindowClosed {
                closes_at: start.plus(H),
                now: start.plus(H)
            })
        );
    }

    #[test]
    fn s0_terminal_window_is_24_hours() {
        let p = Policy::square_terminal(c("EUR"))
            .with_limits(c("EUR"), app_limits(c("EUR")))
            .with_enabled(true);
        let mut x = ctx(c("EUR"), "Square Terminal");
        x.window_closes_at = T0.plus(p.session.acceptance_window);
        x.now = T0.plus(23 * H);
        let eur = Money::new(2_500, c("EUR"));
        assert_eq!(check_offline_payment(&p, &x, &card(eur)), Ok(()));
        x.now = T0.plus(24 * H);
        assert!(matches!(
            check_offline_payment(&p, &x, &card(eur)),
            Err(Refusal::AcceptanceWindowClosed { .. })
        ));
        // A Square Reader is not one of this profile's devices.
        let x = ctx(c("EUR"), "Square Reader");
        assert!(matches!(
            check_offline_payment(&p, &x, &card(eur)),
            Err(Refusal::ReaderNotOfflineCapable { .. })
        ));
    }

    #[test]
    fn s0_refusals_and_allowances() {
        let p = Policy::square_reader(c("EUR"))
            .with_limits(c("EUR"), app_limits(c("EUR")))
            .with_enabled(true);
        let x = ctx(c("EUR"), "Square Stand");
        let eur = Money::new(2_500, c("EUR"));
        for mode in [EntryMode::Contactless, EntryMode::Manual] {
            let req = OfflineCardRequest {
                entry_mode: mode,
                ..card(eur)
            };
            let r = check_offline_payment(&p, &x, &req).unwrap_err();
            assert_eq!(r, Refusal::EntryModeRefused { mode });
            assert_eq!(r.rule_id(), "R9");
        }
        for kind in [TenderKind::GiftCard, TenderKind::BuyNowPayLater] {
            let req = OfflineCardRequest {
                tender: kind,
                ..card(eur)
            };
            assert_eq!(
                check_offline_payment(&p, &x, &req),
                Err(Refusal::TenderRefused { kind })
            );
        }
        // S0 refuses neither swipe nor tips, and takes payments during a
        // service disruption as well as a network outage.
        let swipe_tip = OfflineCardRequest {
            entry_mode: EntryMode::Swipe,
            tip: Some(Money::new(300, c("EUR"))),
            ..card(eur)
        };
        assert_eq!(check_offline_payment(&p, &x, &swipe_tip), Ok(()));
        let mut d = x.clone();
        d.reason = OfflineReason::ServiceDisruption;
        assert_eq!(check_offline_payment(&p, &d, &card(eur)), Ok(()));
        // S0 has no staff permission rule.
        let mut s = x.clone();
        s.staff_permitted = false;
        assert_eq!(check_offline_payment(&p, &s, &card(eur)), Ok(()));
        // Its transaction limit (editable) bounds the order.
        assert!(matches!(
            check_offline_payment(&p, &x, &card(Money::new(10_001, c("EUR")))),
            Err(Refusal::PerOrderLimit { .. })
        ));
    }

    #[test]
    fn refusals_round_trip_through_serde_and_carry_no_card_data() {
        let all = [
            Refusal::OfflineDisabled,
            Refusal::PerOrderLimit {
                limit: usd(10_000),
                current: usd(7_000),
                attempted: usd(4_000),
            },
            Refusal::AcceptanceWindowClosed {
                closes_at: T0,
                now: T0.plus(H),
            },
            Refusal::InvalidPolicy {
                error: PolicyError::NoCurrencyConfigured,
            },
            Refusal::NetworkRefused {
                network: Network::Interac,
                country: "CA".to_owned(),
            },
        ];
        for r in all {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Refusal>(&json).unwrap(), r);
        }
        let r = Refusal::PerOrderLimit {
            limit: usd(10_000),
            current: usd(7_000),
            attempted: usd(4_000),
        };
        assert_eq!(
            r.to_string(),
            "40.00 USD on top of 70.00 USD would exceed the offline per-order limit of 100.00 USD"
        );
    }

    // --- limit warnings ----------------------------------------------------

    #[test]
    fn limit_warnings_at_the_threshold() {
        let p = Policy::shopify_pos(c("USD")); // device 5,000.00, 80 %
        assert_eq!(limit_warnings(&p, c("USD"), usd(399_999), 10), None);
        let w = limit_warnings(&p, c("USD"), usd(400_000), 10).unwrap();
        assert_eq!(
            w,
            LimitNear {
                currency: c("USD"),
                warn_percent: 80,
                amount: Some(AmountNear {
                    total: usd(400_000),
                    limit: usd(500_000)
                }),
                count: None,
            }
        );
        // Wrong currency, unknown currency, no device limit: no warning.
        assert_eq!(limit_warnings(&p, c("EUR"), usd(450_000), 1), None);
        assert_eq!(
            limit_warnings(&p, c("EUR"), Money::new(450_000, c("EUR")), 1),
            None
        );
        let sq = Policy::square_reader(c("USD"));
        assert_eq!(limit_warnings(&sq, c("USD"), usd(i64::MAX), u32::MAX), None);
    }

    #[test]
    fn limit_warnings_on_count_and_without_overflow() {
        let p = full_policy().with_limits(
            c("USD"),
            CurrencyLimits::per_order(usd(i64::MAX))
                .with_device_amount(usd(i64::MAX))
                .with_device_count(10)
                .with_warn_percent(100),
        );
        assert_eq!(limit_warnings(&p, c("USD"), usd(i64::MAX - 1), 9), None);
        let w = limit_warnings(&p, c("USD"), usd(i64::MAX), 10).unwrap();
        assert!(w.amount.is_some());
        assert_eq!(
            w.count,
            Some(CountNear {
                count: 10,
                limit: 10
            })
        );
        let w = limit_warnings(&p, c("USD"), usd(0), 10).unwrap();
        assert_eq!(w.amount, None);
    }

    // --- R13 guard ---------------------------------------------------------

    fn exposure() -> PendingExposure {
        PendingExposure {
            count: 3,
            at_risk: vec![usd(12_000), Money::new(5_000, c("EUR"))],
        }
    }

    fn ov(ack: Vec<Money>) -> ActionOverride {
        ActionOverride {
            staff_id: "mgr-7".to_owned(),
            reason: "device broken".to_owned(),
            acknowledged_at_risk: ack,
        }
    }

    #[test]
    fn guarded_actions_without_pending_payments_are_allowed() {
        let p = Policy::shopify_pos(c("USD"));
        let none = PendingExposure {
            count: 0,
            at_risk: vec![usd(0)],
        };
        assert_eq!(
            check_guarded_action(&p, GuardedAction::LogOut, &none, None),
            Ok(GuardOutcome::Allowed)
        );
    }

    #[test]
    fn guarded_actions_with_pending_payments_need_an_exact_override() {
        let p = Policy::shopify_pos(c("USD"));
        let e = exposure();
        let sorted_risk = vec![Money::new(5_000, c("EUR")), usd(12_000)];
        let r = check_guarded_action(&p, GuardedAction::ResetStore, &e, None).unwrap_err();
        assert_eq!(
            r,
            ActionRefused::PaymentsPending {
                action: GuardedAction::ResetStore,
                count: 3,
                at_risk: sorted_risk.clone()
            }
        );
        assert_eq!(r.rule_id(), "R13");
        // Wrong figures are refused.
        assert!(matches!(
            check_guarded_action(&p, GuardedAction::LogOut, &e, Some(&ov(vec![usd(12_000)]))),
            Err(ActionRefused::OverrideFiguresMismatch { .. })
        ));
        // A blank reason is refused.
        let mut blank = ov(e.at_risk.clone());
        blank.reason = " ".to_owned();
        assert_eq!(
            check_guarded_action(&p, GuardedAction::LogOut, &e, Some(&blank)),
            Err(ActionRefused::OverrideIncomplete {
                count: 3,
                at_risk: sorted_risk.clone()
            })
        );
        // The right figures, in any order, go through and are reported for the log.
        let ok = ov(vec![Money::new(5_000, c("EUR")), usd(12_000)]);
        assert_eq!(
            check_guarded_action(&p, GuardedAction::SwitchLocation, &e, Some(&ok)),
            Ok(GuardOutcome::Overridden {
                action: GuardedAction::SwitchLocation,
                count: 3,
                at_risk: sorted_risk
            })
        );
        // A policy without overrides refuses even a correct one.
        let mut strict = p;
        strict.pending_override_allowed = false;
        assert!(matches!(
            check_guarded_action(&strict, GuardedAction::RemoveDevice, &e, Some(&ok)),
            Err(ActionRefused::OverrideNotAllowed { .. })
        ));
    }

    // --- property: accepted payments never push a total over its limit -----

    #[derive(Debug, Clone)]
    struct Op {
        order: u8,
        card: u8,
        amount: i64,
        tip: i64,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        (0u8..4, 0u8..5, 1i64..7_000, 0i64..600).prop_map(|(order, card, amount, tip)| Op {
            order,
            card,
            amount,
            tip,
        })
    }

    proptest::proptest! {
        #[test]
        fn accepted_payments_never_exceed_a_limit(ops in proptest::collection::vec(op(), 1..60)) {
            let p = full_policy();
            let l = p.limits_for(c("USD")).unwrap().clone();
            let (per_payment, per_card, device) = (
                l.per_payment.unwrap().minor_units(),
                l.per_card.unwrap().minor_units(),
                l.device_amount.unwrap().minor_units(),
            );
            let count_limit = l.device_count.unwrap();
            let mut orders: HashMap<u8, i64> = HashMap::new();
            let mut cards: HashMap<u8, i64> = HashMap::new();
            let (mut dev_total, mut dev_count) = (0i64, 0u32);
            for o in ops {
                let order_total = orders.get(&o.order).copied().unwrap_or(0);
                let card_total = cards.get(&o.card).copied().unwrap_or(0);
                let mut x = shop_ctx();
                x.order_total = usd(order_total);
                x.card_total = usd(card_total);
                x.device_total = usd(dev_total);
                x.device_count = dev_count;
                let req = OfflineCardRequest {
                    tip: (o.tip > 0).then(|| usd(o.tip)),
                    ..card(usd(o.amount))
                };
                let charged = o.amount + o.tip;
                let expected = charged <= per_payment
                    && order_total + charged <= l.per_order.minor_units()
                    && card_total + charged <= per_card
                    && dev_count < count_limit
                    && dev_total + charged <= device;
                let got = check_offline_payment(&p, &x, &req);
                proptest::prop_assert_eq!(got.is_ok(), expected, "{:?} -> {:?}", o, got);
                if got.is_ok() {
                    *orders.entry(o.order).or_default() += charged;
                    *cards.entry(o.card).or_default() += charged;
                    dev_total += charged;
                    dev_count += 1;
                    proptest::prop_assert!(orders.values().all(|&t| t <= l.per_order.minor_units()));
                    proptest::prop_assert!(cards.values().all(|&t| t <= per_card));
                    proptest::prop_assert!(dev_total <= device);
                    proptest::prop_assert!(dev_count <= count_limit);
                }
            }
        }
    }
}
