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
    /// The merchant account's id.
    pub account_id: String,
    /// The location's id within the account.
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
    ($(#[$meta:meta])* $name:ident = $core:path { $($(#[$vmeta:meta])* $v:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
        pub enum $name { $($(#[$vmeta])* $v),+ }
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
    EntryMode = pol::EntryMode {
        /// EMV chip inserted.
        Chip,
        /// Contactless tap (card or wallet).
        Contactless,
        /// Magnetic stripe swipe.
        Swipe,
        /// Card number keyed in by hand (MOTO).
        Manual,
    }
);
mirror_enum!(
    /// The card network (brand).
    CardNetwork = pol::Network {
        /// Visa.
        Visa,
        /// Mastercard.
        Mastercard,
        /// American Express.
        Amex,
        /// Discover.
        Discover,
        /// JCB.
        Jcb,
        /// UnionPay.
        UnionPay,
        /// Interac, Canadian debit.
        Interac,
        /// eftpos, Australian debit.
        Eftpos,
        /// Any other network.
        Other,
    }
);
mirror_enum!(
    /// What kind of tender pays.
    TenderKind = pol::TenderKind {
        /// A credit or debit card.
        Card,
        /// Cash: never an offline card payment, never counted in the limits.
        Cash,
        /// A gift card.
        GiftCard,
        /// Buy now, pay later (instalments).
        BuyNowPayLater,
    }
);
mirror_enum!(
    /// Why the engine is offline.
    OfflineReason = pol::OfflineReason {
        /// The device has no internet.
        NetworkOutage,
        /// The internet works, the payment service does not.
        ServiceDisruption,
        /// The app forced the payment offline (`ForceOffline`).
        ForcedOffline,
    }
);
mirror_enum!(
    /// Where a stored payment is in its life.
    PaymentStatus = life::PaymentStatus {
        /// Stored offline, not sent yet.
        Pending,
        /// An attempt to forward it is in flight.
        Forwarding,
        /// The last attempt ended without a decision; it waits for the next.
        FailedToForward,
        /// Final: the processor approved it, the money was taken.
        Approved,
        /// Final: the processor declined it; the amount is due (B9).
        Declined,
        /// Final: the deadline passed before a decision; the amount is lost (R8).
        Expired,
        /// The deadline passed while an attempt may have reached the
        /// processor: not lost; the engine asks the processor.
        OutcomeUnknown,
    }
);
mirror_enum!(
    /// The order badge (R15).
    OrderStatus = life::OrderStatus {
        /// A card payment has no decision yet (or the order has no tender).
        PaymentPending,
        /// Every tender is paid: cash, and every card approved.
        Paid,
        /// A card payment was declined.
        CardDeclined,
        /// A card payment expired, and none was declined.
        Expired,
    }
);

/// Why the processor declined (B9).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum DeclineReason {
    /// Not enough money or credit on the account.
    InsufficientFunds,
    /// The card was reported lost.
    LostCard,
    /// The card was reported stolen.
    StolenCard,
    /// The card is past its expiry date.
    ExpiredCard,
    /// The issuer refused without saying why.
    DoNotHonour,
    /// The processor or issuer could not process the payment.
    ProcessingError,
    /// Any other reason.
    Other {
        /// The processor's decline code, as it sent it.
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

    /// The email address, if any. Never log it.
    pub fn email(&self) -> Option<String> {
        self.inner.email().map(|e| e.reveal().to_owned())
    }

    /// The phone number, if any. Never log it.
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
    /// How the card was read.
    pub entry_mode: EntryMode,
    /// The card network.
    pub network: CardNetwork,
    /// The last four digits of the card number.
    pub last4: String,
    /// A keyed hash of the card number from the reader, for the per-card
    /// limit (B3); null when the reader gives none.
    pub fingerprint: Option<String>,
    /// The model as the reader reports it; the engine checks R11 against the
    /// remembered reader's model instead (a profile reader's certificate).
    pub reader_model: String,
    /// The card data, encrypted for the processor: pass it on as it is.
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
    /// The declined payment.
    pub payment_id: String,
    /// Its order.
    pub order_id: String,
    /// What the customer still owes: the declined payment's amount.
    pub amount_due: Money,
    /// Why the processor declined.
    pub reason: DeclineReason,
    /// The contact captured with the order, if any.
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
    /// No decisive evidence yet (a fresh start): a probe is due.
    Unknown,
    /// The payment service answers and is healthy: payments go online.
    Online {
        /// Since when.
        since_ms: i64,
    },
    /// The device cannot reach the internet (R1).
    NetworkOutage {
        /// Since when.
        since_ms: i64,
    },
    /// The internet works, the payment service is down or degraded (R1).
    ServiceDisruption {
        /// Since when.
        since_ms: i64,
    },
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
    /// The reader's model (a profile reader's certificate names it).
    pub model: String,
    /// Its serial number.
    pub serial: String,
    /// Its firmware version.
    pub firmware: String,
    /// Its battery charge, 0-100 %.
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
