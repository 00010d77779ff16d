//! The ledger: every order, offline payment, queued receipt and audit entry
//! the engine holds, and the records the store persists.
//!
//! The engine never edits the ledger directly. An operation builds a batch of
//! [`Write`]s, the store makes the batch durable, and only then
//! [`Ledger::apply`] applies the same batch here. Loading a store replays its
//! records through the same function, so what is in memory is always what is
//! on disk, and a failed write changes nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::account::MerchantAccount;
use crate::audit::{AuditEntry, AuditLog};
use crate::clock::{ClockAnchor, Timestamp};
use crate::lifecycle::{
    order_status, CustomerContact, OrderId, OrderStatus, PaymentId, PaymentState, PaymentStatus,
    ReceiptRequest, StaffId, TenderView,
};
use crate::money::{Currency, Money, MoneyError};
use crate::policy::{EntryMode, Network, Policy};
use crate::session::OfflineSession;

/// What the reader returned for a card (SPEC section 4): the card data sealed
/// for the processor (the POS holds no key that opens it), the displayable
/// summary, and a keyed fingerprint used only for the per-card limit.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRead {
    pub entry_mode: EntryMode,
    pub network: Network,
    /// The last four digits, for receipts and lists.
    pub last4: String,
    /// A keyed hash of the card number computed by the reader; `None` when
    /// the reader gives none (the per-card limit then sees each payment alone).
    pub fingerprint: Option<String>,
    /// The reader model as it reports itself (R11).
    pub reader_model: String,
    /// The card data, already encrypted for the processor. Opaque here.
    /// Stored as base64 (schema 2; schema 1 wrote a JSON array of numbers,
    /// still read). Empty once the payment is settled: the record that
    /// settles it no longer carries it (nor the reader's signature).
    #[serde(with = "compact_bytes")]
    pub sealed_card_data: Vec<u8>,
    /// The serial of the reader that read the card: a reader the engine
    /// remembers (`PosEngine::remember_reader`). `None` only on reads the
    /// engine refuses (`ReaderNotPaired`) and on records of older versions.
    #[serde(default)]
    pub reader_serial: Option<String>,
    /// The reader's Ed25519 signature of `sealed_card_data` under its
    /// identity key (`reader_trust::CARD_CONTEXT`): present for the
    /// profile's readers, absent for a vendor SDK's (trusted through the
    /// vendor, see `docs/reader-profile.md`).
    #[serde(default)]
    pub reader_signature: Option<Vec<u8>>,
    /// Read by the phone itself (Tap to Pay on iPhone or Android, through
    /// the platform's SDK, which seals the card data for its processor)
    /// rather than by a card reader: R10 decides whether it may be taken
    /// offline, and it names no reader serial and carries no reader
    /// signature. Not stored: it only decides the checks at confirmation.
    #[serde(skip)]
    pub tap_to_pay_on_phone: bool,
}

/// Bytes as one base64 string in JSON (a quarter more than the bytes,
/// against about 3.5 characters per byte for serde's array of numbers);
/// reads both forms.
mod compact_bytes {
    use base64::Engine as _;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            // Binary formats (the store's snapshot) keep the bytes as they are.
            s.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if !d.is_human_readable() {
            return d.deserialize_byte_buf(Either);
        }
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("base64 text or an array of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| E::custom("invalid base64"))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16 * 1024));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Either)
    }
}

impl CardRead {
    /// Drops what only a payment still to be sent needs: the card data
    /// sealed for the processor and the reader's signature over it. The
    /// record that settles a payment carries neither (the earlier records
    /// keep them sealed in the journal).
    pub fn forget_card_data(&mut self) {
        self.sealed_card_data = Vec::new();
        self.reader_signature = None;
    }

    /// Checks the shape of what the reader (or the app) handed over.
    pub fn validate(&self) -> Result<(), String> {
        if self.last4.len() != 4 || !self.last4.bytes().all(|b| b.is_ascii_digit()) {
            return Err("last4 must be exactly four digits".into());
        }
        if let Some(f) = &self.fingerprint {
            if f.is_empty()
                || f.len() > 128
                || !f
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err("fingerprint must be 1-128 characters of [A-Za-z0-9_-]".into());
            }
        }
        if self.reader_model.trim().is_empty() || self.reader_model.len() > 64 {
            return Err("reader_model must be 1-64 characters".into());
        }
        if self.sealed_card_data.is_empty() || self.sealed_card_data.len() > 16 * 1024 {
            return Err("sealed_card_data must be 1 byte to 16 KiB".into());
        }
        if let Some(s) = &self.reader_serial {
            if !crate::ledger::reader_name_ok(s) {
                return Err("reader_serial must be 1-64 printable ASCII characters".into());
            }
        }
        if let Some(sig) = &self.reader_signature {
            if sig.len() != crate::reader_trust::SIGNATURE_LEN {
                return Err("reader_signature must be 64 bytes".into());
            }
        }
        Ok(())
    }
}

/// Never prints the fingerprint or the sealed data.
impl fmt::Debug for CardRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardRead")
            .field("entry_mode", &self.entry_mode)
            .field("network", &self.network)
            .field("last4", &self.last4)
            .field(
                "fingerprint",
                &self.fingerprint.as_ref().map(|_| "<redacted>"),
            )
            .field("reader_model", &self.reader_model)
            .field(
                "sealed_card_data",
                &format_args!("<{} bytes>", self.sealed_card_data.len()),
            )
            .finish()
    }
}

/// One way an order is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tender {
    /// Cash, paid at once.
    Cash { amount: Money },
    /// A card payment taken offline, stored until forwarded.
    OfflineCard {
        payment_id: PaymentId,
        amount: Money,
    },
    /// A card payment authorized online (its record is kept until the
    /// processor's decision is known, B2).
    OnlineCard {
        payment_id: PaymentId,
        amount: Money,
    },
}

impl Tender {
    pub fn amount(&self) -> Money {
        match self {
            Tender::Cash { amount }
            | Tender::OfflineCard { amount, .. }
            | Tender::OnlineCard { amount, .. } => *amount,
        }
    }
}

/// An order and its tenders (R5 split tender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub total: Money,
    pub tenders: Vec<Tender>,
    /// Captured so a declined payment can be collected later (R17).
    pub contact: Option<CustomerContact>,
    pub created_at: Timestamp,
    pub created_by: StaffId,
    /// When a tender was last added (`None`: none yet). With its
    /// payments' decisions, it says how recently the order was settled,
    /// which decides how long it stays in memory ([`Ledger::archive_cut`]).
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
}

impl Order {
    /// What the tenders cover so far.
    pub fn paid(&self) -> Result<Money, MoneyError> {
        Money::sum(
            self.total.currency(),
            self.tenders
                .iter()
                .map(Tender::amount)
                .collect::<Vec<_>>()
                .iter(),
        )
    }

    /// What is left to pay.
    pub fn balance(&self) -> Result<Money, MoneyError> {
        self.total.checked_sub(&self.paid()?)
    }

    /// Total of the card tenders of this order: the amounts applied to it,
    /// tips excluded (the per-order limit uses [`Ledger::order_offline_charged`]).
    pub fn offline_card_total(&self) -> Result<Money, MoneyError> {
        let cards: Vec<Money> = self
            .tenders
            .iter()
            .filter_map(|t| match t {
                Tender::OfflineCard { amount, .. } => Some(*amount),
                Tender::Cash { .. } | Tender::OnlineCard { .. } => None,
            })
            .collect();
        Money::sum(self.total.currency(), cards.iter())
    }
}

/// A card payment taken offline and kept until forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflinePayment {
    pub id: PaymentId,
    pub order_id: OrderId,
    /// What the card is charged, tip included.
    pub amount: Money,
    pub tip: Option<Money>,
    pub card: CardRead,
    pub taken_by: StaffId,
    pub taken_at: Timestamp,
    /// Never forwarded at or after this time (R8).
    pub deadline: Timestamp,
    /// When the offline session it was taken in began (for the per-card limit).
    pub session_started_at: Timestamp,
    pub state: PaymentState,
    /// An online payment whose record is kept until the processor's
    /// decision is known: retried with `authorize` and the same id, never
    /// counted against the offline limits.
    #[serde(default)]
    pub online: bool,
    /// The merchant account and location it was taken under: it is
    /// forwarded under this account only (`None`: taken before the device
    /// was bound to an account).
    #[serde(default)]
    pub account: Option<MerchantAccount>,
}

impl OfflinePayment {
    /// Not yet settled: it still counts against the device limit and is at risk.
    pub fn is_unsettled(&self) -> bool {
        !self.state.is_final()
    }
}

/// Settings the engine persists beside the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub policy: Policy,
    /// The current offline session, if any.
    pub session: Option<OfflineSession>,
    /// The trusted clock's floor (B13).
    pub clock_floor: Timestamp,
}

impl Settings {
    /// Before any policy was set: offline payments disabled.
    pub fn initial() -> Self {
        Settings {
            policy: Policy::default(),
            session: None,
            clock_floor: Timestamp(0),
        }
    }

    /// The record that saves this session and clock floor (not the policy).
    pub fn session_write(&self) -> Write {
        Write::Session {
            session: self.session.clone(),
            clock_floor: self.clock_floor,
        }
    }
}

/// A card reader paired on this device: it may reconnect while offline; a
/// reader not remembered is paired only while online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedReader {
    pub serial: String,
    /// For a profile reader, the model its certificate names (R11 checks
    /// this one); for a vendor SDK's reader, the model the vendor reports.
    pub model: String,
    pub firmware: String,
    pub paired_at: Timestamp,
    /// The reader's certificate (`reader_trust::ReaderCertificate`), checked
    /// against the policy's reader authorities when it was remembered.
    /// `None`: a vendor SDK's reader (`vendor`), which the engine cannot
    /// authenticate, or a reader paired by a version without certificates.
    #[serde(default)]
    pub certificate: Option<Vec<u8>>,
    /// Remembered as a vendor SDK's reader (`PosEngine::remember_reader`):
    /// its reads are taken unsigned, on the vendor's word. A record with
    /// neither a certificate nor this flag (paired by an earlier version)
    /// takes no card until the reader is paired again.
    #[serde(default)]
    pub vendor: bool,
}

impl RememberedReader {
    /// The identity key of a profile reader.
    pub fn identity_key(&self) -> Option<[u8; crate::reader_trust::PUBLIC_KEY_LEN]> {
        let c =
            crate::reader_trust::ReaderCertificate::decode(self.certificate.as_deref()?).ok()?;
        Some(c.public_key)
    }
}

/// A serial, model or firmware name: 1-64 printable ASCII characters.
pub fn reader_name_ok(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// One durable change. A batch of them is applied atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Order(Order),
    /// Boxed, like the settings: a `Vec<Write>` of a large store (the
    /// snapshot, the journal at open) then takes 152 bytes a record instead
    /// of 424, which keeps the peak memory of an open low. Serialised as
    /// the value itself.
    Payment(Box<OfflinePayment>),
    Receipt {
        id: u64,
        request: ReceiptRequest,
    },
    Audit(AuditEntry),
    Settings(Box<Settings>),
    /// The offline session and the clock floor alone (schema 2): what a
    /// capture, a tick or a connectivity change updates, without writing
    /// the whole policy again. Replayed over the latest [`Write::Settings`].
    Session {
        session: Option<OfflineSession>,
        clock_floor: Timestamp,
    },
    /// A reader remembered (`Some`) or forgotten (`None`).
    Reader {
        serial: String,
        reader: Option<RememberedReader>,
    },
    /// The trusted clock's anchor in the current boot (B13): what lets an
    /// app restart in the same boot resume trusted time without the wall
    /// clock. Replaces the previous one.
    Clock(ClockAnchor),
    /// The device id the store's payments were taken under: it scopes their
    /// ids at the processor, so the store opens under no other. Written once.
    Device {
        device_id: String,
    },
    /// The merchant account and location the device takes payments for
    /// from now on (B7). Replaces the previous one; payments keep theirs.
    Account(MerchantAccount),
    /// Settled history taken out of memory ([`Ledger::archive_cut`]): the
    /// orders, their final payments and their finished receipts, and the
    /// audit entries up to a sequence number. They stay in the store's
    /// journal, whole and verified (the store answers whether a payment id
    /// was taken, [`crate::store::Store::payment_recorded`]); the ledger
    /// keeps their totals.
    Archive(Box<ArchiveCut>),
    /// What a ledger keeps of the history it archived: the first record of
    /// a snapshot of such a ledger ([`Ledger::snapshot_writes`]).
    Archived(Box<Archived>),
    // New kinds go last: snapshots encode a record by its position.
}

/// The settled history one [`Write::Archive`] takes out of memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveCut {
    /// Fully paid orders whose card payments are all final.
    pub orders: Vec<OrderId>,
    /// The payments of those orders, all final.
    pub payments: Vec<PaymentId>,
    /// Receipts of those orders that are no longer queued.
    pub receipts: Vec<u64>,
    /// Audit entries up to this sequence number leave memory (at least the
    /// last entry stays).
    pub audit_through: u64,
}

/// What the ledger keeps of its archived history: counts, the totals that
/// `status()` reports, and where the in-memory audit log starts. Archived
/// payment ids are not kept here: the store keeps every payment record and
/// answers whether an id was ever taken ([`crate::store::Store::payment_recorded`]),
/// so memory and snapshots do not grow with the history. Order ids are not
/// kept either: an order carries no money to the processor, and its
/// payments keep their own ids.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archived {
    /// Orders archived.
    pub orders: u64,
    /// Payments archived.
    pub payments: u64,
    /// Receipts archived.
    pub receipts: u64,
    /// The last audit entry archived (0: none).
    pub audit_through: u64,
    /// The archived payments per currency and status.
    tallies: BTreeMap<Currency, StatusTallies>,
}

/// Everything the engine holds in memory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub orders: BTreeMap<OrderId, Order>,
    /// Every payment by id. Read it freely; change it only through
    /// [`Ledger::apply`], which keeps the running totals and the payment
    /// index that `status()` and the forwarding driver read.
    pub payments: BTreeMap<PaymentId, OfflinePayment>,
    pub receipts: BTreeMap<u64, ReceiptRequest>,
    pub audit: AuditLog,
    pub settings: Option<Settings>,
    pub readers: BTreeMap<String, RememberedReader>,
    /// The trusted clock's latest persisted anchor.
    pub clock_anchor: Option<ClockAnchor>,
    /// The device id the store belongs to ([`Write::Device`]).
    pub device_id: Option<String>,
    /// The merchant account the device takes payments for now
    /// ([`Write::Account`]).
    pub account: Option<MerchantAccount>,
    /// What the status, the limit checks and the driver read of the
    /// payments, kept by [`Ledger::apply`].
    index: PaymentIndex,
    /// The settled history taken out of memory ([`Write::Archive`]).
    archived: Archived,
}

/// How many payments, and their amounts summed in minor units (wide enough
/// that no sum of `i64` amounts overflows).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub minor_units: i128,
}

impl Tally {
    fn add(&mut self, amount: Money) {
        self.count = self.count.saturating_add(1);
        self.minor_units = self
            .minor_units
            .saturating_add(i128::from(amount.minor_units()));
    }

    fn remove(&mut self, amount: Money) {
        self.count = self.count.saturating_sub(1);
        self.minor_units = self
            .minor_units
            .saturating_sub(i128::from(amount.minor_units()));
    }

    /// The sum as an amount of `currency`; an overflow error when it does
    /// not fit in 64 bits.
    pub fn amount(&self, currency: Currency) -> Result<Money, MoneyError> {
        i64::try_from(self.minor_units)
            .map(|m| Money::new(m, currency))
            .map_err(|_| MoneyError::Overflow)
    }
}

/// One [`Tally`] per payment status, of the payments of one currency.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusTallies([Tally; 7]);

impl StatusTallies {
    fn slot(status: PaymentStatus) -> usize {
        match status {
            PaymentStatus::Pending => 0,
            PaymentStatus::Forwarding => 1,
            PaymentStatus::FailedToForward => 2,
            PaymentStatus::Approved => 3,
            PaymentStatus::Declined => 4,
            PaymentStatus::Expired => 5,
            PaymentStatus::OutcomeUnknown => 6,
        }
    }

    /// The payments in `status`.
    pub fn get(&self, status: PaymentStatus) -> Tally {
        self.0[Self::slot(status)]
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|t| t.count == 0)
    }

    /// Adds `other`'s payments to these.
    fn absorb(&mut self, other: &StatusTallies) {
        for (t, o) in self.0.iter_mut().zip(other.0.iter()) {
            t.count = t.count.saturating_add(o.count);
            t.minor_units = t.minor_units.saturating_add(o.minor_units);
        }
    }
}

/// A running index of the payments, kept by [`Ledger::apply`] (each
/// payment's old record taken out, its new one put in) so that the status
/// and the driver's next wake-up read it without walking every payment,
/// settled history included. Times are kept as counts per instant: several
/// payments may share one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct PaymentIndex {
    /// Per currency, the payments of each status.
    tallies: BTreeMap<Currency, StatusTallies>,
    /// Per currency, the unsettled offline payments (online ones count
    /// against no offline limit), read by the limit checks of every
    /// capture. Exact in 128 bits: adding and removing payments always
    /// comes back to the same figure, whatever the amounts.
    offline_unsettled: BTreeMap<Currency, Tally>,
    /// The deadlines of the unsettled payments.
    unsettled_deadlines: BTreeMap<Timestamp, u32>,
    /// The deadlines of the payments waiting for an attempt: pending, or
    /// failed to forward.
    waiting_deadlines: BTreeMap<Timestamp, u32>,
    /// The planned retries of the payments that failed to forward.
    retries: BTreeMap<Timestamp, u32>,
}

impl PaymentIndex {
    fn times(p: &OfflinePayment) -> [(bool, Timestamp); 3] {
        let waiting = matches!(
            p.state,
            PaymentState::Pending | PaymentState::FailedToForward { .. }
        );
        let retry = match p.state {
            PaymentState::FailedToForward {
                next_retry_at: Some(t),
                ..
            } => Some(t),
            _ => None,
        };
        [
            (p.is_unsettled(), p.deadline),
            (waiting, p.deadline),
            (retry.is_some(), retry.unwrap_or_default()),
        ]
    }

    fn sets(&mut self) -> [&mut BTreeMap<Timestamp, u32>; 3] {
        [
            &mut self.unsettled_deadlines,
            &mut self.waiting_deadlines,
            &mut self.retries,
        ]
    }

    fn offline_unsettled(p: &OfflinePayment) -> bool {
        !p.online && p.is_unsettled()
    }

    fn add(&mut self, p: &OfflinePayment) {
        let currency = p.amount.currency();
        self.tallies.entry(currency).or_default().0[StatusTallies::slot(p.state.status())]
            .add(p.amount);
        if Self::offline_unsettled(p) {
            self.offline_unsettled
                .entry(currency)
                .or_default()
                .add(p.amount);
        }
        for (set, (member, t)) in self.sets().into_iter().zip(Self::times(p)) {
            if member {
                *set.entry(t).or_default() += 1;
            }
        }
    }

    fn remove(&mut self, p: &OfflinePayment) {
        let currency = p.amount.currency();
        if let Some(t) = self.tallies.get_mut(&currency) {
            t.0[StatusTallies::slot(p.state.status())].remove(p.amount);
            if t.is_empty() {
                // No empty entries: a ledger rebuilt from a snapshot
                // compares equal.
                self.tallies.remove(&currency);
            }
        }
        if Self::offline_unsettled(p) {
            if let Some(t) = self.offline_unsettled.get_mut(&currency) {
                t.remove(p.amount);
                if t.count == 0 {
                    self.offline_unsettled.remove(&currency);
                }
            }
        }
        for (set, (member, t)) in self.sets().into_iter().zip(Self::times(p)) {
            if member {
                if let Some(n) = set.get_mut(&t) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        set.remove(&t);
                    }
                }
            }
        }
    }
}

/// A ledger record that cannot be applied: the store and memory disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger record rejected: {0}")]
pub struct ApplyError(pub String);

impl Ledger {
    /// The records that rebuild this ledger when applied, in this order, to
    /// an empty one: what a store keeps as a snapshot so that opening does
    /// not replay every superseded record. `None` when the audit
    /// log does not start at entry 1 (it cannot be replayed from records).
    pub fn snapshot_writes(&self) -> Option<Vec<Write>> {
        let audit = self.audit.entries();
        let first = self.archived.audit_through.saturating_add(1);
        if audit.first().is_some_and(|e| e.seq != first)
            || (audit.is_empty() && self.audit.last_seq() != self.archived.audit_through)
        {
            return None;
        }
        let mut out = Vec::with_capacity(
            3 + self.readers.len()
                + self.orders.len()
                + self.payments.len()
                + self.receipts.len()
                + audit.len(),
        );
        out.extend(self.settings.clone().map(|s| Write::Settings(Box::new(s))));
        out.extend(self.clock_anchor.clone().map(Write::Clock));
        out.extend(
            self.device_id
                .clone()
                .map(|device_id| Write::Device { device_id }),
        );
        out.extend(self.account.clone().map(Write::Account));
        if self.archived != Archived::default() {
            out.push(Write::Archived(Box::new(self.archived.clone())));
        }
        out.extend(self.readers.iter().map(|(serial, r)| Write::Reader {
            serial: serial.clone(),
            reader: Some(r.clone()),
        }));
        out.extend(self.orders.values().cloned().map(Write::Order));
        out.extend(
            self.payments
                .values()
                .map(|p| Write::Payment(Box::new(p.clone()))),
        );
        out.extend(self.receipts.iter().map(|(id, r)| Write::Receipt {
            id: *id,
            request: r.clone(),
        }));
        out.extend(audit.iter().cloned().map(Write::Audit));
        Some(out)
    }

    /// Applies one durable change. Called only after the store accepted it.
    pub fn apply(&mut self, write: Write) -> Result<(), ApplyError> {
        match write {
            Write::Order(o) => {
                self.orders.insert(o.id.clone(), o);
            }
            Write::Payment(p) => {
                self.index.add(&p);
                if let Some(old) = self.payments.insert(p.id.clone(), *p) {
                    self.index.remove(&old);
                }
            }
            Write::Receipt { id, request } => {
                self.receipts.insert(id, request);
            }
            Write::Audit(e) => {
                let expected = self.audit.last_seq().saturating_add(1);
                if e.seq != expected {
                    return Err(ApplyError(format!(
                        "audit entry {} where {expected} was expected",
                        e.seq
                    )));
                }
                self.audit
                    .append_under(e.at, e.actor, e.kind, e.account)
                    .map_err(|e| ApplyError(e.to_string()))?;
            }
            Write::Settings(s) => self.settings = Some(*s),
            Write::Session {
                session,
                clock_floor,
            } => {
                let s = self.settings.get_or_insert_with(Settings::initial);
                s.session = session;
                s.clock_floor = clock_floor;
            }
            Write::Clock(anchor) => self.clock_anchor = Some(anchor),
            Write::Account(account) => {
                if !account.is_valid() {
                    return Err(ApplyError("a merchant account id is malformed".into()));
                }
                self.account = Some(account);
            }
            Write::Device { device_id } => match &self.device_id {
                Some(d) if *d != device_id => {
                    return Err(ApplyError(
                        "the store already belongs to another device id".into(),
                    ))
                }
                _ => self.device_id = Some(device_id),
            },
            Write::Reader { serial, reader } => match reader {
                Some(r) => {
                    self.readers.insert(serial, r);
                }
                None => {
                    self.readers.remove(&serial);
                }
            },
            Write::Archive(cut) => self.archive(*cut)?,
            Write::Archived(base) => {
                if self.archived != Archived::default()
                    || self.audit.last_seq() != 0
                    || !self.payments.is_empty()
                    || !self.orders.is_empty()
                {
                    return Err(ApplyError(
                        "an archive summary on a ledger that already holds records".into(),
                    ));
                }
                for (c, t) in &base.tallies {
                    self.index.tallies.entry(*c).or_default().absorb(t);
                }
                self.audit = AuditLog::restore(base.audit_through, Vec::new())
                    .map_err(|e| ApplyError(e.to_string()))?;
                self.archived = *base;
            }
        }
        Ok(())
    }

    /// Applies an [`ArchiveCut`]: checked whole first, so a cut that does
    /// not fit changes nothing.
    ///
    /// What the ledger no longer holds is skipped (a payment, order or
    /// receipt archived already, audit entries at or before where it
    /// starts): applying a cut twice is applying it once.
    fn archive(&mut self, cut: ArchiveCut) -> Result<(), ApplyError> {
        for id in &cut.payments {
            if self.payments.get(id).is_some_and(|p| !p.state.is_final()) {
                return Err(ApplyError(format!("archived payment {id} is not final")));
            }
        }
        for id in &cut.receipts {
            if let Some(r) = self.receipts.get(id) {
                if matches!(r.state, crate::lifecycle::ReceiptState::Queued { .. }) {
                    return Err(ApplyError(format!("archived receipt {id} is still queued")));
                }
            }
        }
        let through = cut.audit_through.max(self.archived.audit_through);
        if through > self.archived.audit_through && through >= self.audit.last_seq() {
            return Err(ApplyError(format!(
                "audit entries archived through {through}: out of range"
            )));
        }
        // A held order that is not settled (an id used again by a new order
        // after the cut was first applied) stays. Judged before any of the
        // cut's payments leave.
        let settled: Vec<OrderId> = cut
            .orders
            .iter()
            .filter(|id| self.orders.get(*id).is_some_and(|o| self.order_settled(o)))
            .cloned()
            .collect();
        for id in cut.payments {
            if let Some(p) = self.payments.remove(&id) {
                // Still counted by status(): the running tallies keep it.
                self.archived
                    .tallies
                    .entry(p.amount.currency())
                    .or_default()
                    .0[StatusTallies::slot(p.state.status())]
                .add(p.amount);
                self.archived.payments = self.archived.payments.saturating_add(1);
            }
        }
        for id in cut.orders {
            if settled.contains(&id) && self.orders.remove(&id).is_some() {
                self.archived.orders = self.archived.orders.saturating_add(1);
            }
        }
        for id in cut.receipts {
            if self.receipts.remove(&id).is_some() {
                self.archived.receipts = self.archived.receipts.saturating_add(1);
            }
        }
        self.audit.prune_through(through);
        self.archived.audit_through = through;
        Ok(())
    }

    /// The settled history to take out of memory, if any: beyond the
    /// `keep_orders` most recently settled orders (by their last tender or
    /// payment decision; fully paid, every payment
    /// final, no queued receipt, no payment of the offline session that
    /// began at `session_start`, which its per-card limit still counts),
    /// those orders with their payments and finished receipts; and the
    /// audit entries beyond the `keep_audit` most recent (at least one
    /// stays). `None`: nothing to archive.
    pub fn archive_cut(
        &self,
        keep_orders: usize,
        keep_audit: u64,
        session_start: Option<Timestamp>,
    ) -> Option<ArchiveCut> {
        let mut payments_of: BTreeMap<&OrderId, Vec<&OfflinePayment>> = BTreeMap::new();
        for p in self.payments.values() {
            payments_of.entry(&p.order_id).or_default().push(p);
        }
        let queued: std::collections::BTreeSet<&OrderId> = self
            .receipts
            .values()
            .filter(|r| matches!(r.state, crate::lifecycle::ReceiptState::Queued { .. }))
            .map(|r| &r.order_id)
            .collect();
        // How recently an order was settled: its last tender, or its
        // payments' last decision, whichever is later.
        let settled_at = |o: &Order| {
            let decided = payments_of
                .get(&o.id)
                .into_iter()
                .flatten()
                .filter_map(|p| match &p.state {
                    PaymentState::Approved { at, .. }
                    | PaymentState::Declined { at, .. }
                    | PaymentState::Expired { at, .. } => Some(*at),
                    _ => None,
                })
                .max();
            [Some(o.created_at), o.updated_at, decided]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(o.created_at)
        };
        // Ties (payments approved in one round) go by creation.
        let mut settled: Vec<(Timestamp, Timestamp, &OrderId)> = self
            .orders
            .values()
            .filter(|o| {
                let mine = payments_of.get(&o.id).map_or(&[][..], Vec::as_slice);
                self.order_settled(o)
                    && !queued.contains(&o.id)
                    && mine
                        .iter()
                        .all(|p| p.state.is_final() && Some(p.session_started_at) != session_start)
            })
            .map(|o| (settled_at(o), o.created_at, &o.id))
            .collect();
        let excess = settled.len().saturating_sub(keep_orders);
        let mut cut = ArchiveCut {
            orders: Vec::new(),
            payments: Vec::new(),
            receipts: Vec::new(),
            audit_through: self.archived.audit_through,
        };
        if excess > 0 {
            settled.sort_unstable();
            settled.truncate(excess);
            let orders: std::collections::BTreeSet<&OrderId> =
                settled.iter().map(|(_, _, id)| *id).collect();
            cut.orders = orders.iter().map(|id| (*id).clone()).collect();
            cut.payments = orders
                .iter()
                .flat_map(|id| payments_of.get(*id).into_iter().flatten())
                .map(|p| p.id.clone())
                .collect();
            cut.receipts = self
                .receipts
                .iter()
                .filter(|(_, r)| orders.contains(&r.order_id))
                .map(|(id, _)| *id)
                .collect();
        }
        let last = self.audit.last_seq();
        let through = last.saturating_sub(keep_audit.max(1));
        if through > cut.audit_through {
            cut.audit_through = through;
        }
        (!cut.orders.is_empty() || cut.audit_through > self.archived.audit_through).then_some(cut)
    }

    /// Whether [`Ledger::archive_cut`] may find something, from counts
    /// alone (no scan): never `false` when it would. More orders held than
    /// `keep_orders` (settled or not), or more audit entries than
    /// `keep_audit`.
    pub fn archive_may_be_due(&self, keep_orders: usize, keep_audit: u64) -> bool {
        self.orders.len() > keep_orders
            || self.audit.last_seq().saturating_sub(keep_audit.max(1)) > self.archived.audit_through
    }

    /// Whether `order` is settled: fully paid, and each of its card
    /// payments held and final.
    fn order_settled(&self, order: &Order) -> bool {
        self.order_balance(order)
            .is_ok_and(|b| b.minor_units() == 0)
            && order.tenders.iter().all(|t| match t {
                Tender::Cash { .. } => true,
                Tender::OfflineCard { payment_id, .. } | Tender::OnlineCard { payment_id, .. } => {
                    self.payments
                        .get(payment_id)
                        .is_some_and(|p| p.state.is_final())
                }
            })
    }

    /// What this ledger archived ([`Write::Archive`]).
    pub fn archived(&self) -> &Archived {
        &self.archived
    }

    /// The unsettled offline payments in `currency`: (count, total), from
    /// the running totals (no scan). [`MoneyError::Overflow`] when the
    /// total does not fit in 64 bits of minor units.
    pub fn unsettled(&self, currency: Currency) -> Result<(u32, Money), MoneyError> {
        let t = self
            .index
            .offline_unsettled
            .get(&currency)
            .copied()
            .unwrap_or_default();
        Ok((
            u32::try_from(t.count).unwrap_or(u32::MAX),
            t.amount(currency)?,
        ))
    }

    /// The payments of each currency, per status, from the running index
    /// (no scan); currencies in order, none without payments.
    pub fn status_tallies(&self) -> &BTreeMap<Currency, StatusTallies> {
        &self.index.tallies
    }

    /// How many offline payments are unsettled, all currencies (no scan).
    pub fn unsettled_offline_count(&self) -> u64 {
        self.index.offline_unsettled.values().map(|t| t.count).sum()
    }

    /// The earliest deadline of an unsettled payment (no scan).
    pub fn next_unsettled_deadline(&self) -> Option<Timestamp> {
        self.index.unsettled_deadlines.keys().next().copied()
    }

    /// The earliest deadline of a payment waiting for an attempt, pending
    /// or failed to forward (no scan).
    pub fn next_waiting_deadline(&self) -> Option<Timestamp> {
        self.index.waiting_deadlines.keys().next().copied()
    }

    /// The earliest planned retry of a payment that failed to forward (no
    /// scan).
    pub fn next_retry(&self) -> Option<Timestamp> {
        self.index.retries.keys().next().copied()
    }

    /// The same by scanning every payment (the running totals' reference).
    pub fn unsettled_scan(&self, currency: Currency) -> Result<(u32, Money), MoneyError> {
        let mut count: u32 = 0;
        let mut total = Money::zero(currency);
        for p in self
            .payments
            .values()
            .filter(|p| !p.online && p.is_unsettled() && p.amount.currency() == currency)
        {
            count = count.saturating_add(1);
            total = total.checked_add(&p.amount)?;
        }
        Ok((count, total))
    }

    /// What one card (by fingerprint) paid offline in the session that began at `session_start`.
    pub fn card_total(
        &self,
        fingerprint: Option<&str>,
        session_start: Timestamp,
        currency: Currency,
    ) -> Result<Money, MoneyError> {
        let Some(fp) = fingerprint else {
            return Ok(Money::zero(currency));
        };
        let amounts: Vec<Money> = self
            .payments
            .values()
            .filter(|p| {
                !p.online
                    && p.session_started_at == session_start
                    && p.amount.currency() == currency
                    && p.card.fingerprint.as_deref() == Some(fp)
            })
            .map(|p| p.amount)
            .collect();
        Money::sum(currency, amounts.iter())
    }

    /// What the cards of `order` were charged offline, tips included: the
    /// figure the per-order limit applies to (R5). A card tender records
    /// only the amount applied to the order.
    pub fn order_offline_charged(&self, order: &Order) -> Result<Money, MoneyError> {
        let charged: Vec<Money> = order
            .tenders
            .iter()
            .filter_map(|t| match t {
                Tender::OfflineCard { payment_id, amount } => {
                    Some(self.payments.get(payment_id).map_or(*amount, |p| p.amount))
                }
                Tender::Cash { .. } | Tender::OnlineCard { .. } => None,
            })
            .collect();
        Money::sum(order.total.currency(), charged.iter())
    }

    /// The order badge (R15). An order is `Paid` only once its tenders
    /// cover its total: approved cards with a balance left are still
    /// "payment pending".
    pub fn order_status(&self, order: &Order) -> OrderStatus {
        let views: Vec<TenderView> = order
            .tenders
            .iter()
            .map(|t| match t {
                Tender::Cash { .. } => TenderView::Cash,
                Tender::OfflineCard { payment_id, .. } | Tender::OnlineCard { payment_id, .. } => {
                    TenderView::Card(
                        self.payments
                            .get(payment_id)
                            .map_or(PaymentStatus::Pending, |p| p.state.status()),
                    )
                }
            })
            .collect();
        match order_status(&views) {
            OrderStatus::Paid
                if self
                    .order_balance(order)
                    .map_or(true, |b| b.minor_units() > 0) =>
            {
                OrderStatus::PaymentPending
            }
            status => status,
        }
    }

    /// What the order's tenders cover: cash, and card payments that are
    /// not declined or expired (a declined or lost card payment is still
    /// owed, and may be paid again, R17).
    pub fn order_paid(&self, order: &Order) -> Result<Money, MoneyError> {
        let covered: Vec<Money> = order
            .tenders
            .iter()
            .filter(|t| match t {
                Tender::Cash { .. } => true,
                Tender::OfflineCard { payment_id, .. } | Tender::OnlineCard { payment_id, .. } => {
                    self.payments.get(payment_id).is_none_or(|p| {
                        !matches!(
                            p.state.status(),
                            PaymentStatus::Declined | PaymentStatus::Expired
                        )
                    })
                }
            })
            .map(Tender::amount)
            .collect();
        Money::sum(order.total.currency(), covered.iter())
    }

    /// What is left to pay on the order (see [`Ledger::order_paid`]).
    pub fn order_balance(&self, order: &Order) -> Result<Money, MoneyError> {
        order.total.checked_sub(&self.order_paid(order)?)
    }

    /// The next audit sequence number.
    pub fn next_audit_seq(&self) -> u64 {
        self.audit.last_seq().saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{ForwardErrorKind, PaymentState};
    use proptest::prelude::*;

    #[test]
    fn sealed_card_data_is_base64_and_the_schema_1_array_still_reads() {
        let card = CardRead {
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            last4: "4242".into(),
            fingerprint: None,
            reader_model: "Wisepad 3".into(),
            sealed_card_data: vec![0, 1, 2, 250, 255],
            reader_serial: None,
            reader_signature: None,
            tap_to_pay_on_phone: false,
        };
        let json = serde_json::to_string(&card).unwrap();
        assert!(json.contains(r#""sealed_card_data":"AAEC+v8=""#), "{json}");
        assert_eq!(serde_json::from_str::<CardRead>(&json).unwrap(), card);
        let v1 = json.replace(r#""AAEC+v8=""#, "[0,1,2,250,255]");
        assert_eq!(serde_json::from_str::<CardRead>(&v1).unwrap(), card);
        for bad in ["\"not base64!\"", "[0,1,256]", "[-1]", "7"] {
            let j = json.replace(r#""AAEC+v8=""#, bad);
            assert!(serde_json::from_str::<CardRead>(&j).is_err(), "{bad}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn payment(
        i: u8,
        cents: i64,
        eur: bool,
        online: bool,
        state: u8,
        deadline: i64,
        retry: Option<i64>,
    ) -> Write {
        let currency = Currency::parse(if eur { "EUR" } else { "USD" }).unwrap();
        let state = match state % 7 {
            0 => PaymentState::Pending,
            1 => PaymentState::FailedToForward {
                attempts: 1,
                last_error: ForwardErrorKind::NoAnswer,
                next_retry_at: retry.map(Timestamp),
                maybe_received: true,
            },
            5 => PaymentState::Declined {
                at: Timestamp(1),
                reason: crate::lifecycle::DeclineReason::InsufficientFunds,
            },
            6 => PaymentState::OutcomeUnknown {
                since: Timestamp(1),
                attempts: 1,
            },
            2 => PaymentState::Approved {
                at: Timestamp(1),
                processor_ref: "r".into(),
            },
            3 => PaymentState::Expired {
                at: Timestamp(1),
                attempts: 0,
                maybe_received: false,
            },
            _ => PaymentState::Forwarding {
                attempt: 1,
                started_at: Timestamp(1),
                maybe_received: false,
            },
        };
        Write::Payment(Box::new(OfflinePayment {
            id: PaymentId::parse(&format!("p-{i}")).unwrap(),
            order_id: OrderId::parse("o-1").unwrap(),
            amount: Money::new(cents, currency),
            tip: None,
            card: CardRead {
                entry_mode: EntryMode::Chip,
                network: Network::Visa,
                last4: "4242".into(),
                fingerprint: None,
                reader_model: "r".into(),
                sealed_card_data: vec![1],
                reader_serial: None,
                reader_signature: None,
                tap_to_pay_on_phone: false,
            },
            taken_by: StaffId::parse("s").unwrap(),
            taken_at: Timestamp(0),
            deadline: Timestamp(deadline),
            session_started_at: Timestamp(0),
            state,
            online,
            account: None,
        }))
    }

    /// The running index against a recount of every payment.
    fn check_index(l: &Ledger) -> Result<(), TestCaseError> {
        let mut tallies: BTreeMap<Currency, BTreeMap<String, (u64, i128)>> = BTreeMap::new();
        for p in l.payments.values() {
            let e = tallies
                .entry(p.amount.currency())
                .or_default()
                .entry(p.state.status().to_string())
                .or_default();
            e.0 += 1;
            e.1 += i128::from(p.amount.minor_units());
        }
        let kept: BTreeMap<Currency, BTreeMap<String, (u64, i128)>> = l
            .status_tallies()
            .iter()
            .map(|(c, t)| {
                let by_status = [
                    PaymentStatus::Pending,
                    PaymentStatus::Forwarding,
                    PaymentStatus::FailedToForward,
                    PaymentStatus::Approved,
                    PaymentStatus::Declined,
                    PaymentStatus::Expired,
                    PaymentStatus::OutcomeUnknown,
                ]
                .into_iter()
                .map(|s| (s.to_string(), t.get(s)))
                .filter(|(_, t)| t.count > 0)
                .map(|(s, t)| (s, (t.count, t.minor_units)))
                .collect();
                (*c, by_status)
            })
            .collect();
        prop_assert_eq!(kept, tallies);
        let payments = || l.payments.values();
        prop_assert_eq!(
            l.unsettled_offline_count(),
            payments().filter(|p| !p.online && p.is_unsettled()).count() as u64
        );
        prop_assert_eq!(
            l.next_unsettled_deadline(),
            payments()
                .filter(|p| p.is_unsettled())
                .map(|p| p.deadline)
                .min()
        );
        prop_assert_eq!(
            l.next_waiting_deadline(),
            payments()
                .filter(|p| matches!(
                    p.state,
                    PaymentState::Pending | PaymentState::FailedToForward { .. }
                ))
                .map(|p| p.deadline)
                .min()
        );
        prop_assert_eq!(
            l.next_retry(),
            payments()
                .filter_map(|p| match p.state {
                    PaymentState::FailedToForward { next_retry_at, .. } => next_retry_at,
                    _ => None,
                })
                .min()
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn running_totals_match_a_full_scan(
            writes in proptest::collection::vec(
                (
                    (0u8..8, 1i64..10_000, any::<bool>(), any::<bool>(), 0u8..7),
                    (5i64..9, proptest::option::of(0i64..12)),
                ),
                0..60,
            )
        ) {
            let mut l = Ledger::default();
            for ((i, cents, eur, online, state), (deadline, retry)) in writes {
                l.apply(payment(i, cents, eur, online, state, deadline, retry)).unwrap();
                for c in ["USD", "EUR"] {
                    let c = Currency::parse(c).unwrap();
                    prop_assert_eq!(l.unsettled(c).unwrap(), l.unsettled_scan(c).unwrap());
                }
                check_index(&l)?;
            }
            // A snapshot of it rebuilds the same ledger, running totals included.
            let mut rebuilt = Ledger::default();
            for w in l.snapshot_writes().unwrap() {
                rebuilt.apply(w).unwrap();
            }
            prop_assert_eq!(rebuilt, l);
        }
    }
}
