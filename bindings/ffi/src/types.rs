//! Shared FFI records and enums: ids, card data, payment states,
//! connectivity and reader information, each mirrored from `pos-core` with
//! conversions in both directions where the app sends them. A conversion
//! from the app (money included) validates and fails with
//! `PosError.InvalidInput`.

use std::sync::Arc;

use pos_core::clock::Timestamp;
use pos_core::lifecycle as life;
use pos_core::money as m;
use pos_core::policy as pol;

use crate::error::PosError;
use crate::money::Money;

pub(crate) fn invalid(reason: impl std::fmt::Display) -> PosError {
    PosError::InvalidInput {
        reason: reason.to_string(),
    }
}

pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn ts(t: Timestamp) -> i64 {
    t.millis()
}

/// Money from the app, checked: `InvalidInput` for an unknown currency.
impl TryFrom<Money> for m::Money {
    type Error = PosError;
    fn try_from(x: Money) -> Result<Self, PosError> {
        Ok(m::Money::new(
            x.minor_units,
            m::Currency::parse(&x.currency).map_err(invalid)?,
        ))
    }
}

/// A merchant account and one of its locations, as the processor names
/// them (SPEC B7): each 1–64 of `[A-Za-z0-9._-]`. Every payment, receipt
/// and audit entry records the account it was taken under and is forwarded
/// under that account only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct MerchantAccount {
    pub account_id: String,
    pub location_id: String,
}

impl From<pos_core::account::MerchantAccount> for MerchantAccount {
    fn from(a: pos_core::account::MerchantAccount) -> Self {
        MerchantAccount {
            account_id: a.account_id,
            location_id: a.location_id,
        }
    }
}

impl TryFrom<MerchantAccount> for pos_core::account::MerchantAccount {
    type Error = PosError;
    fn try_from(a: MerchantAccount) -> Result<Self, PosError> {
        pos_core::account::MerchantAccount::new(&a.account_id, &a.location_id).map_err(invalid)
    }
}

pub(crate) fn currency(code: &str) -> Result<m::Currency, PosError> {
    m::Currency::parse(code).map_err(invalid)
}

pub(crate) fn money_opt(x: Option<Money>) -> Result<Option<m::Money>, PosError> {
    x.map(m::Money::try_from).transpose()
}

macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident = $core:path { $($v:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
        pub enum $name { $($v),+ }
        impl From<$core> for $name {
            fn from(x: $core) -> Self { use $core as C; match x { $(C::$v => $name::$v),+ } }
        }
        impl From<$name> for $core {
            fn from(x: $name) -> Self { use $core as C; match x { $($name::$v => C::$v),+ } }
        }
    };
}
pub(crate) use mirror_enum;

mirror_enum!(
    /// How the card was read.
    EntryMode = pol::EntryMode { Chip, Contactless, Swipe, Manual }
);
mirror_enum!(
    /// The card network (brand).
    CardNetwork = pol::Network { Visa, Mastercard, Amex, Discover, Jcb, UnionPay, Interac, Eftpos, Other }
);
mirror_enum!(
    /// What kind of tender pays.
    TenderKind = pol::TenderKind { Card, Cash, GiftCard, BuyNowPayLater }
);
mirror_enum!(
    /// Why the engine is offline.
    OfflineReason = pol::OfflineReason { NetworkOutage, ServiceDisruption, ForcedOffline }
);
mirror_enum!(
    /// Where a stored payment is in its life.
    PaymentStatus = life::PaymentStatus { Pending, Forwarding, FailedToForward, Approved, Declined, Expired, OutcomeUnknown }
);
mirror_enum!(
    /// The order badge (R15).
    OrderStatus = life::OrderStatus { PaymentPending, Paid, CardDeclined, Expired }
);

/// Why the processor declined (B9).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum DeclineReason {
    InsufficientFunds,
    LostCard,
    StolenCard,
    ExpiredCard,
    DoNotHonour,
    ProcessingError,
    Other {
        code: String,
    },
    /// The card data was already used: a reader counter or an ephemeral key
    /// the processor has seen (a replayed card read).
    Replayed,
    /// The card data was sealed for another payment, device, amount or card
    /// summary than the request (or is bound to nothing).
    Mismatch,
}

impl From<life::DeclineReason> for DeclineReason {
    fn from(x: life::DeclineReason) -> Self {
        use life::DeclineReason as C;
        match x {
            C::InsufficientFunds => DeclineReason::InsufficientFunds,
            C::LostCard => DeclineReason::LostCard,
            C::StolenCard => DeclineReason::StolenCard,
            C::ExpiredCard => DeclineReason::ExpiredCard,
            C::DoNotHonour => DeclineReason::DoNotHonour,
            C::ProcessingError => DeclineReason::ProcessingError,
            C::Other { code } => DeclineReason::Other { code },
            C::Replayed => DeclineReason::Replayed,
            C::Mismatch => DeclineReason::Mismatch,
        }
    }
}

impl From<DeclineReason> for life::DeclineReason {
    fn from(x: DeclineReason) -> Self {
        use life::DeclineReason as C;
        match x {
            DeclineReason::InsufficientFunds => C::InsufficientFunds,
            DeclineReason::LostCard => C::LostCard,
            DeclineReason::StolenCard => C::StolenCard,
            DeclineReason::ExpiredCard => C::ExpiredCard,
            DeclineReason::DoNotHonour => C::DoNotHonour,
            DeclineReason::ProcessingError => C::ProcessingError,
            DeclineReason::Other { code } => C::Other { code },
            DeclineReason::Replayed => C::Replayed,
            DeclineReason::Mismatch => C::Mismatch,
        }
    }
}

/// The customer's contact, captured to collect a declined payment (R17).
/// An object, not a record, so that neither Kotlin's `toString()` nor
/// Swift's `description` can print the address or number: read them with
/// `email()` / `phone()` when you need them, show `hint()` otherwise. Stored sealed.
#[derive(Clone, PartialEq, Eq, uniffi::Object)]
pub struct CustomerContact {
    inner: life::CustomerContact,
}

impl std::fmt::Debug for CustomerContact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerContact(<redacted>)")
    }
}

#[pos_ffi_macros::export]
impl CustomerContact {
    /// At least one of the two; the email must look like one and the phone
    /// must be international (`+` and 7–15 digits). `InvalidInput` otherwise.
    #[uniffi::constructor]
    pub fn new(email: Option<String>, phone: Option<String>) -> Result<Arc<Self>, PosError> {
        let inner =
            life::CustomerContact::parse(email.as_deref(), phone.as_deref()).map_err(invalid)?;
        Ok(Arc::new(CustomerContact { inner }))
    }

    pub fn email(&self) -> Option<String> {
        self.inner.email().map(|e| e.reveal().to_owned())
    }

    pub fn phone(&self) -> Option<String> {
        self.inner.phone().map(|p| p.reveal().to_owned())
    }

    /// A redacted hint for screens and logs (`a***@e***.com`).
    pub fn hint(&self) -> String {
        self.inner
            .email()
            .map(|e| e.hint())
            .or_else(|| self.inner.phone().map(|p| p.hint()))
            .unwrap_or_default()
    }
}

impl From<&CustomerContact> for life::CustomerContact {
    fn from(c: &CustomerContact) -> Self {
        c.inner.clone()
    }
}

impl From<life::CustomerContact> for CustomerContact {
    fn from(inner: life::CustomerContact) -> Self {
        CustomerContact { inner }
    }
}

/// What the card reader returned (SPEC section 4). `sealed_card_data` is
/// encrypted for the processor: the POS cannot open it.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct CardRead {
    pub entry_mode: EntryMode,
    pub network: CardNetwork,
    pub last4: String,
    pub fingerprint: Option<String>,
    /// The model as the reader reports it; the engine checks R11 against the
    /// remembered reader's model instead (a profile reader's certificate).
    pub reader_model: String,
    pub sealed_card_data: Vec<u8>,
    /// The serial of the remembered reader that read the card; without it
    /// `confirmCardPayment` refuses the read (`ReaderNotPaired`).
    #[uniffi(default)]
    pub reader_serial: Option<String>,
    /// The profile reader's signature of `sealedCardData` (set by
    /// `CardReader.takeCard`); `null` for a vendor SDK's reader.
    #[uniffi(default)]
    pub reader_signature: Option<Vec<u8>>,
    /// Read by the phone itself (Tap to Pay on iPhone or Android, through
    /// the platform's SDK) rather than by a card reader: no reader serial
    /// or signature; offline, the policy's `tapToPayOnPhone` decides (R10).
    #[uniffi(default = false)]
    pub tap_to_pay_on_phone: bool,
}

impl std::fmt::Debug for CardRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardRead")
            .field("entry_mode", &self.entry_mode)
            .field("network", &self.network)
            .field("last4", &self.last4)
            .finish_non_exhaustive()
    }
}

impl From<pos_core::ledger::CardRead> for CardRead {
    fn from(c: pos_core::ledger::CardRead) -> Self {
        CardRead {
            entry_mode: c.entry_mode.into(),
            network: c.network.into(),
            last4: c.last4,
            fingerprint: c.fingerprint,
            reader_model: c.reader_model,
            sealed_card_data: c.sealed_card_data,
            reader_serial: c.reader_serial,
            reader_signature: c.reader_signature,
            tap_to_pay_on_phone: c.tap_to_pay_on_phone,
        }
    }
}

impl From<CardRead> for pos_core::ledger::CardRead {
    fn from(c: CardRead) -> Self {
        pos_core::ledger::CardRead {
            entry_mode: c.entry_mode.into(),
            network: c.network.into(),
            last4: c.last4,
            fingerprint: c.fingerprint,
            reader_model: c.reader_model,
            sealed_card_data: c.sealed_card_data,
            reader_serial: c.reader_serial,
            reader_signature: c.reader_signature,
            tap_to_pay_on_phone: c.tap_to_pay_on_phone,
        }
    }
}

/// A declined payment to collect again (R17, B9).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeclineNotice {
    pub payment_id: String,
    pub order_id: String,
    pub amount_due: Money,
    pub reason: DeclineReason,
    pub contact: Option<Arc<CustomerContact>>,
}

impl From<life::DeclineNotice> for DeclineNotice {
    fn from(n: life::DeclineNotice) -> Self {
        DeclineNotice {
            payment_id: n.payment_id.as_str().to_owned(),
            order_id: n.order_id.as_str().to_owned(),
            amount_due: n.amount_due.into(),
            reason: n.reason.into(),
            contact: n.contact.map(|c| Arc::new(c.into())),
        }
    }
}

/// Connectivity as the app sees it. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectivityStatus {
    Unknown,
    Online { since_ms: i64 },
    NetworkOutage { since_ms: i64 },
    ServiceDisruption { since_ms: i64 },
}

impl From<pos_core::connectivity::ConnectivityState> for ConnectivityStatus {
    fn from(c: pos_core::connectivity::ConnectivityState) -> Self {
        use pos_core::connectivity::ConnectivityState as C;
        match c {
            C::Unknown => ConnectivityStatus::Unknown,
            C::Online { since } => ConnectivityStatus::Online {
                since_ms: ts(since),
            },
            C::NetworkOutage { since } => ConnectivityStatus::NetworkOutage {
                since_ms: ts(since),
            },
            C::ServiceDisruption { since } => ConnectivityStatus::ServiceDisruption {
                since_ms: ts(since),
            },
        }
    }
}

pub(crate) fn payment_id(s: &str) -> Result<life::PaymentId, PosError> {
    life::PaymentId::parse(s).map_err(invalid)
}

pub(crate) fn order_id(s: &str) -> Result<life::OrderId, PosError> {
    life::OrderId::parse(s).map_err(invalid)
}

/// What the reader says about itself.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReaderInfo {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub battery_percent: u8,
}

impl From<pos_reader::client::ReaderInfo> for ReaderInfo {
    fn from(i: pos_reader::client::ReaderInfo) -> Self {
        ReaderInfo {
            model: i.model,
            serial: i.serial,
            firmware: i.firmware,
            battery_percent: i.battery_percent,
        }
    }
}

impl From<ReaderInfo> for pos_reader::client::ReaderInfo {
    fn from(i: ReaderInfo) -> Self {
        pos_reader::client::ReaderInfo {
            model: i.model,
            serial: i.serial,
            firmware: i.firmware,
            battery_percent: i.battery_percent,
        }
    }
}
