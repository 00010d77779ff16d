//! The one sale helper: order → begin → read → confirm.
//!
//! A [`Sale`] says what is sold and how it is paid; by default a new order
//! of the sale's amount, paid whole, prefer-online, by a chip Visa that the
//! test reader reads for the payment. The steps run whole
//! ([`Sale::sell`], [`Sale::try_sell`]) or one by one ([`Sale::begin`],
//! [`Sale::confirm`]) for a test that does something in between.
//!
//! ```text
//! let view = Sale::of(usd(1_000)).tip(usd(100)).sell(&engine).await;
//! let refused = rig.sale(500).on(&order).entry_mode(EntryMode::Swipe).try_sell(&rig.engine).await;
//! ```

use std::sync::Arc;

use pos_core::card_seal::{CardChallenge, CardSecret};
use pos_core::checkout::{
    CardPaymentRequest, NewOrder, OfflineBehaviour, PaymentDecision, PaymentView,
};
use pos_core::clock::Timestamp;
use pos_core::ledger::{CardRead, RememberedReader};
use pos_core::lifecycle::{CustomerContact, OrderId, PaymentId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network, TenderKind};
use pos_core::{PosEngine, PosError};

use crate::reader::{chip_card, test_reader, CardReader};

pub fn usd(cents: i64) -> Money {
    Money::new(cents, Currency::parse("USD").unwrap())
}

/// Who reads a sale's card.
#[derive(Clone)]
pub enum Reader {
    /// A profile reader: it seals the card for the payment's challenge and
    /// signs it.
    Profile(Arc<CardReader>),
    /// A vendor SDK's reader, remembered under `serial` as `model`: the
    /// read names its serial and is taken on the vendor's word (no
    /// signature, the card data as given).
    Vendor { serial: String, model: String },
}

impl Reader {
    /// The shared test reader.
    pub fn test() -> Reader {
        Reader::Profile(test_reader().clone())
    }

    /// A vendor SDK's reader `serial` of `model`.
    pub fn vendor(serial: &str, model: &str) -> Reader {
        Reader::Vendor {
            serial: serial.into(),
            model: model.into(),
        }
    }

    /// The model it reports.
    pub fn model(&self) -> &str {
        match self {
            Reader::Profile(r) => &r.model,
            Reader::Vendor { model, .. } => model,
        }
    }

    /// What an engine that paired it at `at` remembers of it.
    pub fn remembered(&self, at: Timestamp) -> RememberedReader {
        match self {
            Reader::Profile(r) => r.remembered(at),
            Reader::Vendor { serial, model } => RememberedReader {
                serial: serial.clone(),
                model: model.clone(),
                firmware: "1.0".into(),
                paired_at: at,
                certificate: None,
                vendor: true,
            },
        }
    }

    /// `card` read for `challenge` (`None`: no payment was begun, the
    /// profile reader has nothing to seal for and hands the card as is).
    pub fn read(
        &self,
        challenge: Option<&CardChallenge>,
        mut card: CardRead,
        secret: Option<&CardSecret>,
    ) -> CardRead {
        match (self, challenge) {
            (Reader::Profile(r), Some(ch)) => match secret {
                Some(s) => r.read_sealing(ch, card, s),
                None => r.read(ch, card),
            },
            (Reader::Profile(_), None) => card,
            (Reader::Vendor { serial, .. }, _) => {
                card.reader_serial = Some(serial.clone());
                card
            }
        }
    }
}

impl From<Arc<CardReader>> for Reader {
    fn from(r: Arc<CardReader>) -> Reader {
        Reader::Profile(r)
    }
}

impl From<&Arc<CardReader>> for Reader {
    fn from(r: &Arc<CardReader>) -> Reader {
        Reader::Profile(r.clone())
    }
}

#[derive(Clone)]
enum OrderSpec {
    New {
        order_id: Option<String>,
        total: Option<Money>,
        contact: Option<CustomerContact>,
    },
    Existing(OrderId),
}

/// One card sale: the order, the payment request, the card and its reader.
#[derive(Clone)]
pub struct Sale {
    order: OrderSpec,
    payment_id: Option<String>,
    amount: Money,
    tip: Option<Money>,
    behaviour: OfflineBehaviour,
    tender: TenderKind,
    reader: Reader,
    /// An empty `reader_model` stands for the reader's model.
    card: CardRead,
    secret: Option<CardSecret>,
}

impl Sale {
    /// A sale of `amount` on a new order of that total, paid by a chip Visa
    /// (no fingerprint) that the test reader reads, prefer-online.
    pub fn of(amount: Money) -> Sale {
        Sale {
            order: OrderSpec::New {
                order_id: None,
                total: None,
                contact: None,
            },
            payment_id: None,
            amount,
            tip: None,
            behaviour: OfflineBehaviour::PreferOnline,
            tender: TenderKind::Card,
            reader: Reader::test(),
            card: CardRead {
                entry_mode: EntryMode::Chip,
                network: Network::Visa,
                last4: "4242".into(),
                fingerprint: None,
                reader_model: String::new(),
                sealed_card_data: vec![0xA5; 32],
                reader_serial: None,
                reader_signature: None,
                tap_to_pay_on_phone: false,
            },
            secret: None,
        }
    }

    /// Order `order-<n>` of `cents` US cents, paid whole by
    /// [`chip_card`]`(n)` (its fingerprint told apart by `n`).
    pub fn numbered(n: usize, cents: i64) -> Sale {
        Sale::of(usd(cents))
            .order_id(format!("order-{n}"))
            .card(chip_card(n))
    }

    /// Pays on the existing order `order` instead of a new one.
    pub fn on(mut self, order: &OrderId) -> Sale {
        self.order = OrderSpec::Existing(order.clone());
        self
    }

    /// The new order's id.
    pub fn order_id(mut self, id: impl Into<String>) -> Sale {
        if let OrderSpec::New { order_id, .. } = &mut self.order {
            *order_id = Some(id.into());
        }
        self
    }

    /// The new order's total (by default the sale's amount).
    pub fn total(mut self, order_total: Money) -> Sale {
        if let OrderSpec::New { total, .. } = &mut self.order {
            *total = Some(order_total);
        }
        self
    }

    /// The new order's customer contact.
    pub fn contact(mut self, c: Option<CustomerContact>) -> Sale {
        if let OrderSpec::New { contact, .. } = &mut self.order {
            *contact = c;
        }
        self
    }

    /// The app's payment id.
    pub fn payment_id(mut self, id: impl Into<String>) -> Sale {
        self.payment_id = Some(id.into());
        self
    }

    pub fn tip(mut self, tip: Money) -> Sale {
        self.tip = Some(tip);
        self
    }

    pub fn behaviour(mut self, behaviour: OfflineBehaviour) -> Sale {
        self.behaviour = behaviour;
        self
    }

    pub fn tender(mut self, tender: TenderKind) -> Sale {
        self.tender = tender;
        self
    }

    /// Who reads the card.
    pub fn reader(mut self, reader: impl Into<Reader>) -> Sale {
        self.reader = reader.into();
        self
    }

    /// The card as the reader reports it before reading it for the payment.
    pub fn card(mut self, card: CardRead) -> Sale {
        self.card = card;
        self
    }

    pub fn entry_mode(mut self, mode: EntryMode) -> Sale {
        self.card.entry_mode = mode;
        self
    }

    pub fn network(mut self, network: Network) -> Sale {
        self.card.network = network;
        self
    }

    /// The card's number and expiry, as the reader seals them (by default a
    /// test number ending in its last four).
    pub fn sealing(mut self, secret: CardSecret) -> Sale {
        self.secret = Some(secret);
        self
    }

    /// The payment request on `order_id`.
    pub fn request(&self, order_id: OrderId) -> CardPaymentRequest {
        CardPaymentRequest {
            order_id,
            payment_id: self.payment_id.clone(),
            amount: self.amount,
            tip: self.tip,
            behaviour: self.behaviour,
            tender: self.tender,
        }
    }

    /// The card before it is read for a payment.
    pub fn unread_card(&self) -> CardRead {
        let mut card = self.card.clone();
        if card.reader_model.is_empty() {
            card.reader_model = self.reader.model().to_owned();
        }
        card
    }

    /// The card read for the begun payment `id` (as is when the engine has
    /// no challenge for it: not begun, or already confirmed).
    pub fn card_for(&self, engine: &PosEngine, id: &PaymentId) -> CardRead {
        let challenge = engine.card_challenge(id).ok();
        self.reader
            .read(challenge.as_ref(), self.unread_card(), self.secret.as_ref())
    }

    /// Creates the order (unless the sale is on an existing one) and begins
    /// the payment.
    pub async fn begin(&self, engine: &PosEngine) -> Result<PaymentDecision, PosError> {
        let order_id = match &self.order {
            OrderSpec::Existing(id) => id.clone(),
            OrderSpec::New {
                order_id,
                total,
                contact,
            } => {
                engine
                    .create_order(NewOrder {
                        order_id: order_id.clone(),
                        total: total.unwrap_or(self.amount),
                        contact: contact.clone(),
                    })
                    .await?
                    .id
            }
        };
        engine.begin_card_payment(self.request(order_id)).await
    }

    /// Confirms the begun payment `id` with the card read for it.
    pub async fn confirm(
        &self,
        engine: &PosEngine,
        id: &PaymentId,
    ) -> Result<PaymentView, PosError> {
        engine
            .confirm_card_payment(id, self.card_for(engine, id))
            .await
    }

    /// The whole sale: order, begin, read, confirm.
    pub async fn try_sell(&self, engine: &PosEngine) -> Result<PaymentView, PosError> {
        let d = self.begin(engine).await?;
        self.confirm(engine, &d.payment_id).await
    }

    /// The whole sale, which must be taken.
    pub async fn sell(&self, engine: &PosEngine) -> PaymentView {
        match self.try_sell(engine).await {
            Ok(view) => view,
            Err(e) => panic!("the sale of {} was not taken: {e:?}", self.amount),
        }
    }

    /// The payment begun, which must be.
    pub async fn begun(&self, engine: &PosEngine) -> PaymentId {
        match self.begin(engine).await {
            Ok(d) => d.payment_id,
            Err(e) => panic!("the payment of {} was not begun: {e:?}", self.amount),
        }
    }
}

/// Order `order-<n>` of `cents`, and its card payment begun (the whole
/// order): the id to confirm.
pub async fn begin_sale(engine: &PosEngine, n: usize, cents: i64) -> PaymentId {
    Sale::numbered(n, cents).begun(engine).await
}

/// Order `order-<n>` of `cents`, paid whole by [`chip_card`]`(n)`.
pub async fn sell_offline(engine: &PosEngine, n: usize, cents: i64) -> PaymentId {
    Sale::numbered(n, cents).sell(engine).await.id
}
