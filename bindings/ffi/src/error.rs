//! The error Swift and Kotlin see: a `PosException` subclass per variant in
//! Kotlin, a `PosError` enum conforming to `Error` in Swift. Mirrors
//! `pos_core::PosError`; a refusal is flattened into its rule id, its kind
//! and its figures so the app can show "limit 100.00, current 60.00,
//! attempted 50.00" without parsing text.

use crate::money::Money;

/// Every error of the library. Messages never carry card data or contacts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum PosError {
    /// The engine configuration is unusable (an empty device id, an unknown
    /// currency).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// An argument from the app is unusable.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// The policy is inconsistent (a negative limit, a per-order limit above
    /// the device limit).
    #[error("invalid policy: {reason}")]
    InvalidPolicy {
        /// What is wrong.
        reason: String,
    },
    /// An offline payment was refused. `rule` is the SPEC rule id ("R5"),
    /// `kind` the refusal's name ("PerOrderLimit"), and the figures are set
    /// when the rule has them.
    #[error("offline payment refused ({rule}, {kind}): {detail}")]
    Refused {
        /// The SPEC rule id, e.g. "R5".
        rule: String,
        /// The refusal's name, e.g. "PerOrderLimit".
        kind: String,
        /// A readable explanation.
        detail: String,
        /// The rule's limit.
        limit: Option<Money>,
        /// The total the limit already counts, before this payment.
        current: Option<Money>,
        /// What this payment would add (a refused tip: the tip).
        attempted: Option<Money>,
    },
    /// The payment requires online and the engine is offline (B1).
    #[error("this payment requires online processing and the service is unreachable")]
    OnlineRequired,
    /// Connectivity changed between the start of the payment and its
    /// confirmation: nothing was taken; begin it again (B1).
    #[error("the payment route changed; begin the payment again")]
    RouteChanged {
        /// The route decided at the start.
        decided: String,
        /// The route now.
        now: String,
    },
    /// Online authorization needs a gateway, and none is set.
    #[error("online authorization is not available: no gateway is configured")]
    OnlineUnavailable,
    /// A payment with this id already exists: ids are never reused (B2).
    #[error("payment {payment_id} already exists")]
    DuplicatePayment {
        /// The id.
        payment_id: String,
    },
    /// The card was not read by a reader this device remembers (or its
    /// signature is not that reader's): pair it online, read the card again.
    #[error("the card was not read by a paired reader ({reason})")]
    ReaderNotPaired {
        /// Why the read is refused.
        reason: String,
    },
    /// The card read was made for another payment, device, amount or
    /// challenge, or its summary differs from what the reader signed.
    #[error("the card read does not match this payment ({field})")]
    CardReadMismatch {
        /// What differs.
        field: String,
    },
    /// The store belongs to another merchant account than
    /// `EngineConfig.account` (`stored` and `configured` as
    /// "account/location"): its payments are forwarded under their own
    /// account only. Open it for its own account (or without one) to
    /// forward them, then `switchAccount` (SPEC B7).
    #[error("this store belongs to merchant account {stored}, not {configured}")]
    AccountMismatch {
        /// The store's account.
        stored: String,
        /// The account it was opened for.
        configured: String,
    },
    /// No such order, payment or receipt.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The call needs a signed-in staff member (`signIn`).
    #[error("no staff member is signed in")]
    NotSignedIn,
    /// A guarded action was refused (R13); `at_risk` is the money pending.
    #[error("{detail}")]
    ActionRefused {
        /// A readable explanation.
        detail: String,
        /// Unsettled payments.
        pending_count: u64,
        /// Their amount, one per currency.
        at_risk: Vec<Money>,
    },
    /// The payment cannot make this move (a final state, a passed deadline).
    #[error("invalid payment transition: {reason}")]
    InvalidTransition {
        /// What is wrong.
        reason: String,
    },
    /// The key provider cannot give the key now (`Unavailable`: a locked
    /// device); nothing was lost (B8).
    #[error("the store is locked")]
    StoreLocked,
    /// The key provider's key does not open this store.
    #[error("the key does not open this store")]
    WrongKey,
    /// Tampered, rolled back, newer schema or corrupt: kept as it is
    /// (docs/store-recovery.md). For a store rolled back to an older copy,
    /// `records_found` is the last record it holds and `records_written`
    /// the last one its rollback anchor says was written (both null
    /// otherwise).
    #[error("the store cannot be trusted: {reason}")]
    StoreIntegrity {
        /// What was found.
        reason: String,
        /// A rolled-back store's last record.
        records_found: Option<u64>,
        /// The last record its rollback anchor says was written.
        records_written: Option<u64>,
    },
    /// The store could not record the operation (disk full, I/O); nothing
    /// changed.
    #[error("storage error: {reason}")]
    Storage {
        /// What failed.
        reason: String,
    },
    /// The engine was closed; open a new one.
    #[error("the engine is closed")]
    Closed,
    /// The app's order source failed while filling the inbox (R18); the
    /// inbox keeps what it had.
    #[error("the order source failed: {reason}")]
    OrderSourceFailed {
        /// The source's error, as it gave it.
        reason: String,
    },
    /// A bug or an environment failure (a thread that could not start).
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
    /// A foreign callback (listener, provider) failed unexpectedly.
    #[error("callback failed: {reason}")]
    Callback {
        /// The foreign exception's message.
        reason: String,
    },
}

impl From<pos_core::PosError> for PosError {
    fn from(e: pos_core::PosError) -> Self {
        use pos_core::PosError as C;
        match e {
            C::InvalidConfig { reason } => PosError::InvalidConfig { reason },
            C::InvalidInput { reason } => PosError::InvalidInput { reason },
            C::InvalidPolicy { reason } => PosError::InvalidPolicy { reason },
            C::Refused { refusal } => {
                let (limit, current, attempted) = refusal.figures();
                PosError::Refused {
                    rule: refusal.rule_id().to_owned(),
                    kind: refusal.kind().to_owned(),
                    detail: refusal.to_string(),
                    limit: limit.map(Into::into),
                    current: current.map(Into::into),
                    attempted: attempted.map(Into::into),
                }
            }
            C::OnlineRequired => PosError::OnlineRequired,
            C::RouteChanged { decided, now } => PosError::RouteChanged {
                decided: format!("{decided:?}"),
                now: format!("{now:?}"),
            },
            C::OnlineUnavailable => PosError::OnlineUnavailable,
            C::DuplicatePayment { payment_id } => PosError::DuplicatePayment { payment_id },
            C::ReaderNotPaired { reason } => PosError::ReaderNotPaired { reason },
            C::CardReadMismatch { field } => PosError::CardReadMismatch { field },
            C::AccountMismatch { stored, configured } => {
                PosError::AccountMismatch { stored, configured }
            }
            C::NotFound { what } => PosError::NotFound { what },
            C::NotSignedIn => PosError::NotSignedIn,
            C::ActionRefused { refusal } => {
                use pos_core::rules::ActionRefused as A;
                let (pending_count, at_risk) = match &refusal {
                    A::PaymentsPending { count, at_risk, .. }
                    | A::OverrideNotAllowed { count, at_risk, .. }
                    | A::OverrideIncomplete { count, at_risk }
                    | A::OverrideFiguresMismatch { count, at_risk, .. } => {
                        (*count, at_risk.iter().map(|m| Money::from(*m)).collect())
                    }
                };
                PosError::ActionRefused {
                    detail: refusal.to_string(),
                    pending_count,
                    at_risk,
                }
            }
            C::InvalidTransition { reason } => PosError::InvalidTransition { reason },
            C::StoreLocked => PosError::StoreLocked,
            C::WrongKey => PosError::WrongKey,
            C::StoreIntegrity {
                reason,
                rolled_back,
            } => PosError::StoreIntegrity {
                reason,
                records_found: rolled_back.map(|r| r.records_found),
                records_written: rolled_back.map(|r| r.records_written),
            },
            C::Storage { reason } => PosError::Storage { reason },
            C::Closed => PosError::Closed,
            C::OrderSourceFailed { reason } => PosError::OrderSourceFailed { reason },
            C::Internal { reason } => PosError::Internal { reason },
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for PosError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        PosError::Callback { reason: e.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pos_core::money::{Currency, Money as CoreMoney};
    use pos_core::policy::Policy;
    use pos_core::rules::Refusal;
    use pos_core::rules::{check_guarded_action, ActionOverride, GuardedAction, PendingExposure};

    #[allow(clippy::unwrap_used)]
    fn usd(cents: i64) -> CoreMoney {
        CoreMoney::new(cents, Currency::parse("USD").unwrap())
    }

    /// `kind` is the refusal's variant name, for every variant (the same
    /// names the app saw when they were read off the `Debug` form).
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_refusal_kind_is_its_variant_name() {
        use pos_core::clock::Timestamp;
        use pos_core::policy::{EntryMode, Network, OfflineReason, PolicyError, TenderKind};
        use pos_core::rules::AmountField;
        let usd_ = Currency::parse("USD").unwrap();
        let m = usd(100);
        let all = [
            Refusal::OfflineDisabled,
            Refusal::InvalidPolicy {
                error: PolicyError::NoCurrencyConfigured,
            },
            Refusal::OutageCauseNotAllowed {
                reason: OfflineReason::NetworkOutage,
            },
            Refusal::StaffNotPermitted,
            Refusal::AcceptanceWindowClosed {
                closes_at: Timestamp(1),
                now: Timestamp(2),
            },
            Refusal::RequireOnlineNearDeadline,
            Refusal::TapToPayRefused,
            Refusal::ReaderNotOfflineCapable { model: "M".into() },
            Refusal::NotACardTender {
                kind: TenderKind::Cash,
            },
            Refusal::TenderRefused {
                kind: TenderKind::GiftCard,
            },
            Refusal::EntryModeRefused {
                mode: EntryMode::Swipe,
            },
            Refusal::BrandNotAllowed {
                network: Network::Amex,
            },
            Refusal::NetworkRefused {
                network: Network::Interac,
                country: "CA".into(),
            },
            Refusal::TipsRefused { tip: m },
            Refusal::CurrencyNotConfigured { currency: usd_ },
            Refusal::InvalidAmount {
                field: AmountField::Tip,
                amount: m,
            },
            Refusal::CurrencyMismatch {
                field: AmountField::Amount,
                expected: usd_,
                found: Currency::parse("EUR").unwrap(),
            },
            Refusal::AmountOverflow,
            Refusal::PerPaymentLimit {
                limit: m,
                attempted: m,
            },
            Refusal::PerOrderLimit {
                limit: m,
                current: m,
                attempted: m,
            },
            Refusal::PerCardLimit {
                limit: m,
                current: m,
                attempted: m,
            },
            Refusal::DeviceCountLimit {
                limit: 1,
                current: 1,
            },
            Refusal::DeviceAmountLimit {
                limit: m,
                current: m,
                attempted: m,
            },
        ];
        for r in &all {
            let name = format!("{r:?}");
            let name = name.split([' ', '{', '(']).next().unwrap();
            assert_eq!(r.kind(), name);
        }
        let e = PosError::from(pos_core::PosError::Refused {
            refusal: all[19].clone(),
        });
        assert!(
            matches!(&e, PosError::Refused { rule, kind, .. } if rule == "R5" && kind == "PerOrderLimit"),
            "{e:?}"
        );
    }

    /// Every refused override reports the payments pending and the money at
    /// risk, as the plain refusal does.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_refused_override_reports_the_real_figures() {
        let policy = Policy::shopify_pos(Currency::parse("USD").unwrap());
        let pending = PendingExposure {
            count: 3,
            at_risk: vec![usd(12_000)],
        };
        let incomplete = ActionOverride {
            staff_id: "mgr-7".into(),
            reason: " ".into(),
            acknowledged_at_risk: vec![usd(12_000)],
        };
        let wrong_figures = ActionOverride {
            staff_id: "mgr-7".into(),
            reason: "device broken".into(),
            acknowledged_at_risk: vec![usd(100)],
        };
        for o in [None, Some(incomplete), Some(wrong_figures)] {
            let refusal =
                check_guarded_action(&policy, GuardedAction::LogOut, &pending, o.as_ref())
                    .unwrap_err();
            let e = PosError::from(pos_core::PosError::ActionRefused { refusal });
            let PosError::ActionRefused {
                pending_count,
                at_risk,
                ..
            } = e
            else {
                panic!("not an ActionRefused: {e:?}");
            };
            assert_eq!(pending_count, 3, "{o:?}");
            assert_eq!(at_risk, vec![Money::from(usd(12_000))], "{o:?}");
        }
    }
}
