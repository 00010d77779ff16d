//! What the app asks the checkout for, and what it keeps of a card payment
//! begun and not yet confirmed: the vocabulary the engine's layers share.

use serde::{Deserialize, Serialize};

use crate::card_seal::CardChallenge;
use crate::clock::Timestamp;
use crate::lifecycle::{CustomerContact, OrderId, PaymentId};
use crate::money::Money;
use crate::policy::{OfflineReason, TenderKind};

/// How a payment will be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    Online,
    Offline { reason: OfflineReason },
}

/// A new order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The app's own order id (idempotency key), or `None` to generate one.
    pub order_id: Option<String>,
    pub total: Money,
    /// The customer's email or phone, to collect a declined payment (R17).
    pub contact: Option<CustomerContact>,
}

/// A card payment the cashier starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPaymentRequest {
    pub order_id: OrderId,
    /// The app's idempotency key for this payment, or `None` to generate one (B2).
    ///
    /// An app-supplied id must be unique per device forever: the processor
    /// keeps its idempotency on (device, payment id) without expiry, so an
    /// id used again would get the first payment's answer. The engine
    /// refuses an id its store holds a payment for, whatever that payment's
    /// state (`DuplicatePayment`); it cannot know ids from before a store
    /// reset or a reinstall, so the app must never reuse those either (a
    /// random UUID, or `None`, is safe). An id begun and then cancelled, or
    /// refused before confirmation, was never stored or sent and may be
    /// begun again.
    pub payment_id: Option<String>,
    /// The amount applied to the order, before tip.
    pub amount: Money,
    pub tip: Option<Money>,
    pub behaviour: OfflineBehaviour,
    /// Card, or a gift card / buy-now-pay-later (refused offline, R9/R10).
    pub tender: TenderKind,
}

/// A card payment begun and not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BegunPayment {
    pub id: PaymentId,
    pub request: CardPaymentRequest,
    pub route: Route,
    pub begun_at: Timestamp,
    pub challenge: CardChallenge,
}

/// How one card payment may use offline mode, chosen by the app when the
/// payment starts (B1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OfflineBehaviour {
    /// Online only: refused while offline.
    RequireOnline,
    /// Online when the service is reachable, offline otherwise.
    PreferOnline,
    /// Offline even when online (for example a known-bad connection).
    ForceOffline,
}
