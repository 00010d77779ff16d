//! Checkout and the life of stored payments, as methods of [`PosEngine`].
//!
//! - Orders with several tenders: cash and offline cards (R5 split tender).
//! - Card payments in two steps (B1): `begin_card_payment` fixes the payment
//!   id (B2) and decides the route from the per-payment behaviour and the
//!   connectivity; `confirm_card_payment` re-checks the route explicitly, runs
//!   every offline rule with the card's details, and stores the payment. The
//!   check of the limits and the write of the payment happen under the
//!   engine's write lock, so racing checkouts never push a total over a limit.
//! - Receipts requested offline are queued (R16); listing and totals (R19).
//! - Hooks for the forwarding engine: what is due, oldest deadline first, and
//!   the recording of each forwarding step; `tick` expires payments past their
//!   deadline (R8) and raises session warnings (B4).

use std::fmt;

pub use crate::card_seal::CardChallenge;
pub use crate::requests::{BegunPayment, CardPaymentRequest, NewOrder, OfflineBehaviour, Route};

use crate::audit::AuditKind;
use crate::clock::{duration_ms, Timestamp};
use crate::engine::{PosEngine, State};
use crate::error::{PosError, Result};
use crate::events::PosEvent;
use crate::ledger::{CardRead, Ledger, OfflinePayment, Order, Tender, Write};
use crate::lifecycle::{
    ForwardErrorKind, OrderId, OrderStatus, PaymentEvent, PaymentId, PaymentState, PaymentStatus,
    ReceiptChannel, ReceiptEvent, ReceiptRequest, StaffId,
};
use crate::money::{Currency, Money};
use crate::policy::{EntryMode, Network, OfflineReason, TenderKind};
use crate::rules::{
    check_offline_payment, limit_warnings, OfflineCardRequest, OfflineContext, Reader, Refusal,
};
use crate::session::{OfflineSession, SessionRefusal};

/// What `begin_card_payment` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentDecision {
    /// The payment's id, stable from now on (B2).
    pub payment_id: PaymentId,
    pub route: Route,
    /// What to hand the reader's `take_card`.
    pub challenge: CardChallenge,
}

/// An order as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub total: Money,
    pub paid: Money,
    pub balance: Money,
    /// The badge (R15).
    pub status: OrderStatus,
    pub tenders: Vec<Tender>,
    /// A redacted hint of the captured contact (`j***@e***.com`).
    pub contact_hint: Option<String>,
}

/// A stored offline payment as the app lists it (R19).
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentView {
    pub id: PaymentId,
    pub order_id: OrderId,
    pub amount: Money,
    pub tip: Option<Money>,
    pub status: PaymentStatus,
    pub state: PaymentState,
    pub network: Network,
    pub entry_mode: EntryMode,
    pub last4: String,
    pub taken_by: StaffId,
    pub taken_at: Timestamp,
    pub deadline: Timestamp,
    /// Milliseconds left before the deadline; 0 once past or settled.
    pub time_left_ms: i64,
    /// The merchant account it was taken under (and is forwarded under).
    pub account: Option<crate::account::MerchantAccount>,
}

impl fmt::Debug for PaymentView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentView")
            .field("id", &self.id)
            .field("order_id", &self.order_id)
            .field("amount", &self.amount)
            .field("status", &self.status)
            .field("network", &self.network)
            .field("last4", &self.last4)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What `tick` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Payments expired: no attempt can have reached the processor.
    pub expired: Vec<PaymentId>,
    /// Payments whose deadline passed while an attempt may have reached the
    /// processor: `OutcomeUnknown`, to be asked about.
    pub outcome_unknown: Vec<PaymentId>,
    /// Attempts that had lost their task, recorded as "no answer" (retried
    /// with the same id before the deadline).
    pub recovered: Vec<PaymentId>,
    pub warnings: usize,
}

fn new_id_bytes() -> Result<[u8; 16]> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PosError::Internal {
            reason: "no randomness available".into(),
        })?;
    Ok(b)
}

fn invalid(reason: impl fmt::Display) -> PosError {
    PosError::InvalidInput {
        reason: reason.to_string(),
    }
}

fn not_found(what: impl fmt::Display) -> PosError {
    PosError::NotFound {
        what: what.to_string(),
    }
}

/// The amount a card payment charges: its amount plus its tip.
fn charged_of(request: &CardPaymentRequest) -> Result<Money> {
    match request.tip {
        Some(tip) => request.amount.checked_add(&tip).map_err(invalid),
        None => Ok(request.amount),
    }
}

/// A tip is never negative and is in the payment's currency, whatever the
/// route: a malformed tip is `InvalidInput`, before anything is begun. (The
/// policy's own refusal of tips offline, R10, is a rule checked later.)
fn check_tip(request: &CardPaymentRequest) -> Result<()> {
    let Some(tip) = request.tip else {
        return Ok(());
    };
    if tip.currency() != request.amount.currency() {
        return Err(invalid(format!(
            "the tip is in {}, the payment in {}",
            tip.currency(),
            request.amount.currency()
        )));
    }
    if tip.minor_units() < 0 {
        return Err(invalid(format!("the tip {tip} is negative")));
    }
    request.amount.checked_add(&tip).map_err(invalid)?;
    Ok(())
}

fn view_order(ledger: &Ledger, o: &Order) -> Result<OrderView> {
    Ok(OrderView {
        id: o.id.clone(),
        total: o.total,
        paid: ledger.order_paid(o)?,
        balance: ledger.order_balance(o)?,
        status: ledger.order_status(o),
        tenders: o.tenders.clone(),
        contact_hint: o.contact.as_ref().map(|c| {
            c.email()
                .map(|e| e.hint())
                .or_else(|| c.phone().map(|p| p.hint()))
                .unwrap_or_default()
        }),
    })
}

/// Views of `payments`, unsettled first by deadline, then settled.
fn sorted_views<'a>(
    payments: impl Iterator<Item = &'a OfflinePayment>,
    now: Timestamp,
) -> Vec<PaymentView> {
    let mut v: Vec<PaymentView> = payments.map(|p| view_payment(p, now)).collect();
    v.sort_by(|a, b| {
        (a.status.is_final(), a.deadline, &a.id).cmp(&(b.status.is_final(), b.deadline, &b.id))
    });
    v
}

fn view_payment(p: &OfflinePayment, now: Timestamp) -> PaymentView {
    let time_left_ms = if p.is_unsettled() {
        duration_ms(now.until(p.deadline))
    } else {
        0
    };
    PaymentView {
        id: p.id.clone(),
        order_id: p.order_id.clone(),
        amount: p.amount,
        tip: p.tip,
        status: p.state.status(),
        state: p.state.clone(),
        network: p.card.network,
        entry_mode: p.card.entry_mode,
        last4: p.card.last4.clone(),
        taken_by: p.taken_by.clone(),
        taken_at: p.taken_at,
        deadline: p.deadline,
        time_left_ms,
        account: p.account.clone(),
    }
}

impl PosEngine {
    fn signed_in(s: &State) -> Result<StaffId> {
        s.staff
            .as_ref()
            .map(|st| st.staff_id.clone())
            .ok_or(PosError::NotSignedIn)
    }

    /// Creates an order. Needs a signed-in staff member. An app-supplied
    /// id that the engine holds with the same figures is a retry and gets
    /// that order back. The engine does not remember the ids of orders
    /// that left memory ([`EngineConfig::settled_in_memory`]): such an id
    /// makes a new order (its payments still get ids of their own).
    ///
    /// [`EngineConfig::settled_in_memory`]: crate::engine::EngineConfig::settled_in_memory
    pub async fn create_order(&self, new: NewOrder) -> Result<OrderView> {
        self.check_open()?;
        let total = Money::positive(new.total.minor_units(), new.total.currency())?;
        let id = match &new.order_id {
            Some(s) => OrderId::parse(s).map_err(invalid)?,
            None => OrderId::from_random(new_id_bytes()?),
        };
        let _w = self.write_lock().await;
        let now = self.now();
        let order = {
            let s = self.state();
            let staff = Self::signed_in(&s)?;
            if let Some(existing) = s.ledger.orders.get(&id) {
                // The same key again with the same figures is a retry: answer it.
                if existing.total == total && existing.contact == new.contact {
                    return view_order(&s.ledger, existing);
                }
                return Err(invalid(format!(
                    "order {id} already exists with other figures"
                )));
            }
            Order {
                id,
                total,
                tenders: Vec::new(),
                contact: new.contact,
                created_at: now,
                created_by: staff,
                updated_at: None,
            }
        };
        self.commit(vec![Write::Order(order.clone())]).await?;
        view_order(&self.state().ledger, &order)
    }

    /// The order with this id, if the engine holds it: every order not
    /// yet settled, and the latest [`EngineConfig::settled_in_memory`]
    /// settled ones (`NotFound` for an older one).
    ///
    /// [`EngineConfig::settled_in_memory`]: crate::engine::EngineConfig::settled_in_memory
    pub fn order(&self, order_id: &OrderId) -> Result<OrderView> {
        self.check_open()?;
        let s = self.state();
        let o = s
            .ledger
            .orders
            .get(order_id)
            .ok_or_else(|| not_found(format!("order {order_id}")))?;
        view_order(&s.ledger, o)
    }

    /// Records a cash tender (never subject to offline rules).
    pub async fn add_cash(&self, order_id: &OrderId, amount: Money) -> Result<OrderView> {
        self.check_open()?;
        let amount = Money::positive(amount.minor_units(), amount.currency())?;
        let _w = self.write_lock().await;
        let now = self.now();
        let order = {
            let s = self.state();
            let mut o = s
                .ledger
                .orders
                .get(order_id)
                .cloned()
                .ok_or_else(|| not_found(format!("order {order_id}")))?;
            let balance = s.ledger.order_balance(&o)?;
            if amount.currency() != balance.currency()
                || amount.minor_units() > balance.minor_units()
            {
                return Err(invalid(format!(
                    "cash {amount} exceeds the balance {balance}"
                )));
            }
            o.tenders.push(Tender::Cash { amount });
            o.updated_at = Some(now);
            o
        };
        self.commit(vec![Write::Order(order.clone())]).await?;
        view_order(&self.state().ledger, &order)
    }

    fn route(s: &State, behaviour: OfflineBehaviour) -> Result<Route> {
        let conn = s.connectivity.state();
        let reason = match conn.outage_cause() {
            Some(crate::connectivity::OutageCause::NetworkOutage) => {
                Some(OfflineReason::NetworkOutage)
            }
            Some(crate::connectivity::OutageCause::ServiceDisruption) => {
                Some(OfflineReason::ServiceDisruption)
            }
            None => None,
        };
        match (behaviour, reason) {
            (OfflineBehaviour::ForceOffline, r) => Ok(Route::Offline {
                reason: r.unwrap_or(OfflineReason::ForcedOffline),
            }),
            (OfflineBehaviour::RequireOnline, Some(_)) => Err(PosError::OnlineRequired),
            (_, None) => Ok(Route::Online),
            (OfflineBehaviour::PreferOnline, Some(reason)) => Ok(Route::Offline { reason }),
        }
    }

    /// Starts a card payment: fixes its id and decides its route. An offline
    /// route is pre-checked against every rule that does not depend on the
    /// card, so an over-limit amount is refused before the card is presented.
    /// Nothing is stored until [`PosEngine::confirm_card_payment`].
    pub async fn begin_card_payment(&self, request: CardPaymentRequest) -> Result<PaymentDecision> {
        self.check_open()?;
        Money::positive(request.amount.minor_units(), request.amount.currency())?;
        check_tip(&request)?;
        let id = match &request.payment_id {
            Some(k) => PaymentId::parse(k).map_err(invalid)?,
            None => PaymentId::from_random(new_id_bytes()?),
        };
        let _w = self.write_lock().await;
        // An id of 128 fresh random bits was never used: only an
        // app-supplied one is looked up among the archived.
        if request.payment_id.is_some() && self.payment_archived(&id).await? {
            return Err(PosError::duplicate(&id));
        }
        let now = self.now();
        let mut s = self.state();
        if s.ledger.payments.contains_key(&id) {
            return Err(PosError::duplicate(&id));
        }
        if let Some(b) = s.begun.get(&id) {
            // The same request again (an app retry) gets the same answer;
            // another request under the same id is refused, never swapped in.
            if b.request == request {
                return Ok(PaymentDecision {
                    payment_id: id,
                    route: b.route,
                    challenge: b.challenge.clone(),
                });
            }
            return Err(PosError::duplicate(&id));
        }
        let order = s
            .ledger
            .orders
            .get(&request.order_id)
            .ok_or_else(|| not_found(format!("order {}", request.order_id)))?;
        let balance = s.ledger.order_balance(order)?;
        if request.amount.currency() != balance.currency()
            || request.amount.minor_units() > balance.minor_units()
        {
            return Err(invalid(format!(
                "the payment {} exceeds the balance {balance}",
                request.amount
            )));
        }
        let route = Self::route(&s, request.behaviour)?;
        if let Route::Offline { reason } = route {
            // A card the policy accepts: the card-specific rules pass, so
            // the checks after them (tender, tip, amounts, limits) run too.
            // (With an empty reader model the reader check refused first,
            // and was ignored as card-specific, so no limit was ever checked here.)
            let settings = s.settings_ref();
            let policy = &settings.policy;
            const NETWORKS: [Network; 9] = [
                Network::Visa,
                Network::Mastercard,
                Network::Amex,
                Network::Discover,
                Network::Jcb,
                Network::UnionPay,
                Network::Interac,
                Network::Eftpos,
                Network::Other,
            ];
            let probe = CardRead {
                entry_mode: policy
                    .allowed_entry_modes
                    .iter()
                    .next()
                    .copied()
                    .unwrap_or(EntryMode::Chip),
                network: NETWORKS
                    .into_iter()
                    .find(|n| policy.network_allowed(*n) && policy.regional_refusal(*n).is_none())
                    .unwrap_or(Network::Visa),
                last4: "0000".into(),
                fingerprint: None,
                reader_model: policy
                    .offline_readers
                    .iter()
                    .next()
                    .cloned()
                    .unwrap_or_default(),
                sealed_card_data: Vec::new(),
                reader_serial: None,
                reader_signature: None,
                tap_to_pay_on_phone: false,
            };
            match Self::check_offline(&s, now, reason, &request, &probe) {
                Ok(_) => {}
                Err(PosError::Refused { refusal }) if card_specific(&refusal) => {}
                Err(e) => return Err(e),
            }
        }
        let challenge = CardChallenge {
            payment_id: id.clone(),
            device_id: self.inner.config.device_id.clone(),
            amount: charged_of(&request)?,
            nonce: new_id_bytes()?,
        };
        s.begun.insert(
            id.clone(),
            BegunPayment {
                id: id.clone(),
                request,
                route,
                begun_at: now,
                challenge: challenge.clone(),
            },
        );
        Ok(PaymentDecision {
            payment_id: id,
            route,
            challenge,
        })
    }

    /// The challenge of a begun payment (what its `PaymentDecision` carried):
    /// for an app that hands the reader the payment after the decision is gone.
    pub fn card_challenge(&self, payment_id: &PaymentId) -> Result<CardChallenge> {
        self.check_open()?;
        self.state()
            .begun
            .get(payment_id)
            .map(|b| b.challenge.clone())
            .ok_or_else(|| not_found(format!("begun payment {payment_id}")))
    }

    /// Starts an online card payment for what is still owed on an order: the
    /// amount of a declined (or expired) card payment, to collect from the
    /// customer (R17, B9). Online only: offline it fails with
    /// `OnlineRequired`. The app presents the card and confirms as usual.
    pub async fn begin_balance_payment(&self, order_id: &OrderId) -> Result<PaymentDecision> {
        self.check_open()?;
        let balance = {
            let s = self.state();
            let order = s
                .ledger
                .orders
                .get(order_id)
                .ok_or_else(|| not_found(format!("order {order_id}")))?;
            s.ledger.order_balance(order)?
        };
        if balance.minor_units() <= 0 {
            return Err(invalid("nothing is owed on this order"));
        }
        self.begin_card_payment(CardPaymentRequest {
            order_id: order_id.clone(),
            payment_id: None,
            amount: balance,
            tip: None,
            behaviour: OfflineBehaviour::RequireOnline,
            tender: TenderKind::Card,
        })
        .await
    }

    /// Runs every offline rule. Returns the (possibly new) session and the
    /// payment's charged amount.
    fn check_offline(
        s: &State,
        now: Timestamp,
        reason: OfflineReason,
        request: &CardPaymentRequest,
        card: &CardRead,
    ) -> Result<(OfflineSession, Money)> {
        let settings = s.settings_ref();
        let policy = &settings.policy;
        // A payment forced offline while online runs in a session of its own;
        // once that session's window has closed, the next forced payment
        // starts a new one (its payments keep their own deadlines). A real
        // outage's session is never restarted here.
        let session = match settings.session.clone() {
            Some(sess)
                if reason != OfflineReason::ForcedOffline || sess.is_acceptance_open(now) =>
            {
                sess
            }
            _ => OfflineSession::start(policy.session.clone(), now),
        };
        let currency = request.amount.currency();
        let (device_count, device_total) = s.ledger.unsettled(currency)?;
        let order = s
            .ledger
            .orders
            .get(&request.order_id)
            .ok_or_else(|| not_found("order"))?;
        let staff_permitted = !policy.staff_permission_required
            || s.staff
                .as_ref()
                .is_some_and(|st| st.may_take_offline_payments);
        // Past or near the forwarding deadline, new payments must go online (B4).
        let require_online = matches!(
            session.check_acceptance(now),
            Err(SessionRefusal::DeadlinePassed { .. } | SessionRefusal::TooCloseToDeadline { .. })
        );
        let ctx = OfflineContext {
            reason,
            now,
            window_closes_at: session.acceptance_closes_at(),
            require_online,
            staff_permitted,
            reader: if card.tap_to_pay_on_phone {
                Reader::TapToPayOnPhone
            } else {
                Reader::External {
                    model: card.reader_model.clone(),
                }
            },
            device_total,
            device_count,
            order_total: s.ledger.order_offline_charged(order)?,
            card_total: s.ledger.card_total(
                card.fingerprint.as_deref(),
                session.started_at(),
                currency,
            )?,
        };
        let req = OfflineCardRequest {
            amount: request.amount,
            tip: request.tip,
            entry_mode: card.entry_mode,
            network: card.network,
            tender: request.tender,
        };
        check_offline_payment(policy, &ctx, &req)?;
        let charged = req.charged()?;
        Ok((session, charged))
    }

    /// Confirms a begun card payment with what the reader returned. The route
    /// is re-checked: if connectivity changed since the start, nothing is
    /// taken and [`PosError::RouteChanged`] asks the app to begin again (B1).
    /// An offline payment is stored only after every rule passed, and the
    /// call returns once it is durable. Confirming an already-stored payment
    /// returns it again (a retry), never a second payment; one that already
    /// left memory ([`EngineConfig::settled_in_memory`]) is refused as
    /// `DuplicatePayment`.
    ///
    /// [`EngineConfig::settled_in_memory`]: crate::engine::EngineConfig::settled_in_memory
    pub async fn confirm_card_payment(
        &self,
        payment_id: &PaymentId,
        card: CardRead,
    ) -> Result<PaymentView> {
        self.check_open()?;
        card.validate().map_err(invalid)?;
        let w = self.write_lock().await;
        // A begun payment was looked up when it began.
        let begun_here = self.state().begun.contains_key(payment_id);
        let archived = !begun_here && self.payment_archived(payment_id).await?;
        let now = self.now();
        let (begun, decided_now) = {
            let mut s = self.state();
            if let Some(p) = s.ledger.payments.get(payment_id) {
                return Ok(view_payment(p, now));
            }
            if archived {
                return Err(PosError::duplicate(payment_id));
            }
            let begun = s
                .begun
                .get(payment_id)
                .cloned()
                .ok_or_else(|| not_found(format!("payment {payment_id}")))?;
            let decided_now = Self::route(&s, begun.request.behaviour);
            if decided_now.as_ref().ok() != Some(&begun.route) {
                s.begun.remove(payment_id);
            }
            (begun, decided_now)
        };
        let now_route = decided_now?;
        if now_route != begun.route {
            return Err(PosError::RouteChanged {
                decided: begun.route,
                now: now_route,
            });
        }
        let mut card = card;
        {
            let s = self.state();
            Self::check_card_origin(&s, &begun, &mut card)?;
        }
        let Route::Offline { reason } = begun.route else {
            return self.confirm_online(w, begun, card, now).await;
        };
        let checked = {
            let s = self.state();
            Self::check_offline(&s, now, reason, &begun.request, &card)
                .map(|ok| (ok, Self::signed_in(&s)))
        };
        let ((mut session, charged), staff) = match checked {
            Ok(ok) => ok,
            Err(PosError::Refused { refusal }) => {
                // The refusal itself is audited (B12); the payment is not taken.
                let batch = {
                    let s = self.state();
                    let actor = s.staff.as_ref().map(|st| st.staff_id.clone());
                    let kind = AuditKind::OfflinePaymentRefused {
                        rule: refusal.rule_id().to_owned(),
                        amount: begun.request.amount,
                    };
                    vec![Self::audit(&s, &[], now, actor, kind)]
                };
                self.commit(batch).await?;
                tracing::info!(rule = refusal.rule_id(), "offline payment refused");
                return Err(PosError::Refused { refusal });
            }
            Err(e) => return Err(e),
        };
        let staff = staff?;
        let deadline = session.record_offline_payment(now);
        let (batch, payment, order_id) = {
            let s = self.state();
            let mut order = s
                .ledger
                .orders
                .get(&begun.request.order_id)
                .cloned()
                .ok_or_else(|| not_found("order"))?;
            let balance = s.ledger.order_balance(&order)?;
            if begun.request.amount.minor_units() > balance.minor_units() {
                return Err(invalid(format!(
                    "the payment {} exceeds the balance {balance}",
                    begun.request.amount
                )));
            }
            // The order is paid by the amount; the tip goes on the card only
            // (tendering amount + tip would leave a negative balance: change due).
            order.updated_at = Some(now);
            order.tenders.push(Tender::OfflineCard {
                payment_id: payment_id.clone(),
                amount: begun.request.amount,
            });
            let payment = OfflinePayment {
                id: payment_id.clone(),
                order_id: order.id.clone(),
                amount: charged,
                tip: begun.request.tip,
                card,
                taken_by: staff.clone(),
                taken_at: now,
                deadline,
                session_started_at: session.started_at(),
                state: PaymentState::Pending,
                online: false,
                account: s.ledger.account.clone(),
            };
            // The session and the clock floor only: the policy is unchanged.
            let mut batch = vec![
                Write::Session {
                    session: Some(session),
                    clock_floor: now,
                },
                Write::Payment(Box::new(payment.clone())),
                Write::Order(order.clone()),
            ];
            let kind = AuditKind::OfflinePaymentTaken {
                payment_id: payment_id.clone(),
                order_id: order.id.clone(),
                amount: charged,
            };
            batch.push(Self::audit(&s, &batch, now, Some(staff), kind));
            (batch, payment, order.id)
        };
        self.commit(batch).await?;
        let (order_status, near) = {
            let mut s = self.state();
            s.begun.remove(payment_id);
            let status = s
                .ledger
                .orders
                .get(&order_id)
                .map(|o| s.ledger.order_status(o));
            let currency = charged.currency();
            let near = s
                .ledger
                .unsettled(currency)
                .ok()
                .and_then(|(count, total)| {
                    limit_warnings(&s.settings_ref().policy, currency, total, count)
                });
            (status, near)
        };
        tracing::info!(%payment_id, "offline payment stored");
        self.inner.events.emit(PosEvent::PaymentStateChanged {
            payment_id: payment_id.clone(),
            order_id,
            status: PaymentStatus::Pending,
            order_status,
        });
        if let Some(near) = near {
            self.inner.events.emit(PosEvent::LimitNear(near));
        }
        if self.state().connectivity.state().is_online() {
            // Taken offline while online (forced): forward it now.
            self.wake_forwarder();
        }
        Ok(view_payment(&payment, now))
    }

    /// An online payment: its record is made durable first (B2: the id is
    /// known and the attempt is "in flight"), the write lock is released,
    /// the processor is asked, and its answer recorded. With no answer the
    /// payment stays "failed to forward" and the forwarding engine asks
    /// again with the same id: it is never taken again as a new payment.
    /// Where the card came from (SPEC section 4): a reader this device
    /// remembers, and, for the profile's readers, a read the remembered
    /// reader signed, sealed for this payment's challenge. On success the
    /// card's model is the remembered one (the certificate's), so R11 never
    /// sees what a reader says about itself.
    fn check_card_origin(s: &State, begun: &BegunPayment, card: &mut CardRead) -> Result<()> {
        let not_paired = |reason: &str| PosError::ReaderNotPaired {
            reason: reason.to_owned(),
        };
        if card.tap_to_pay_on_phone {
            // The phone's own NFC, on the platform SDK's word (as a vendor
            // SDK's reader): no reader of ours read it. Offline, R10 decides.
            if card.reader_serial.is_some() || card.reader_signature.is_some() {
                return Err(PosError::CardReadMismatch {
                    field: "reader".into(),
                });
            }
            return Ok(());
        }
        let serial = card
            .reader_serial
            .as_deref()
            .ok_or_else(|| not_paired("the card read names no reader serial"))?;
        let reader = s
            .ledger
            .readers
            .get(serial)
            .ok_or_else(|| not_paired("no reader with this serial is paired on this device"))?;
        match (&reader.certificate, &card.reader_signature) {
            (None, _) if !reader.vendor => {
                return Err(not_paired(
                    "the reader was paired by an earlier version: pair it again (online)",
                ))
            }
            (None, None) => {}
            (None, Some(_)) => {
                return Err(not_paired(
                    "the reader was remembered as a vendor reader, not a profile reader",
                ))
            }
            (Some(_), None) => {
                return Err(not_paired("the read is not signed by the paired reader"))
            }
            (Some(cert), Some(sig)) => {
                let cert = crate::reader_trust::ReaderCertificate::decode(cert)
                    .map_err(|_| not_paired("the paired reader's certificate is unreadable"))?;
                // Its signature was verified when it was paired (the store is
                // tamper-evident); what may have changed since is the policy.
                if !s
                    .settings_ref()
                    .policy
                    .reader_authority_keys()
                    .contains(&cert.authority)
                {
                    return Err(not_paired(
                        "the paired reader's authority is no longer trusted by the policy",
                    ));
                }
                crate::reader_trust::verify(
                    &cert.public_key,
                    crate::reader_trust::CARD_CONTEXT,
                    &card.sealed_card_data,
                    sig,
                )
                .map_err(|_| not_paired("the signature is not the paired reader's"))?;
                let sealed = crate::card_seal::parse_v2(&card.sealed_card_data).map_err(|_| {
                    PosError::CardReadMismatch {
                        field: "version".into(),
                    }
                })?;
                if let Some(field) = sealed.binding.mismatch(&begun.challenge, card) {
                    return Err(PosError::CardReadMismatch {
                        field: field.to_owned(),
                    });
                }
            }
        }
        card.reader_model = reader.model.clone();
        Ok(())
    }

    async fn confirm_online(
        &self,
        lock: tokio::sync::MutexGuard<'_, ()>,
        begun: BegunPayment,
        card: CardRead,
        now: Timestamp,
    ) -> Result<PaymentView> {
        let id = begun.id.clone();
        let Some(gateway) = self.gateway() else {
            self.state().begun.remove(&id);
            return Err(PosError::OnlineUnavailable);
        };
        // Computed at begin: what the card read was bound to.
        let charged = begun.challenge.amount;
        let (batch, request, live) = {
            let s = self.state();
            let staff = Self::signed_in(&s)?;
            let mut order = s
                .ledger
                .orders
                .get(&begun.request.order_id)
                .cloned()
                .ok_or_else(|| not_found("order"))?;
            let balance = s.ledger.order_balance(&order)?;
            if begun.request.amount.minor_units() > balance.minor_units() {
                return Err(invalid(format!(
                    "the payment {} exceeds the balance {balance}",
                    begun.request.amount
                )));
            }
            order.updated_at = Some(now);
            order.tenders.push(Tender::OnlineCard {
                payment_id: id.clone(),
                amount: begun.request.amount,
            });
            let request = crate::gateway::AuthorizeRequest {
                device_id: self.inner.config.device_id.clone(),
                payment_id: id.clone(),
                order_id: order.id.clone(),
                amount: charged,
                tip: begun.request.tip,
                entry_mode: card.entry_mode,
                network: card.network,
                last4: card.last4.clone(),
                sealed_card_data: card.sealed_card_data.clone(),
                // The certificate of the reader the read was just checked
                // against (remembered under its serial).
                reader_certificate: card
                    .reader_serial
                    .as_ref()
                    .and_then(|serial| s.ledger.readers.get(serial))
                    .and_then(|r| r.certificate.clone()),
                reader_signature: card.reader_signature.clone(),
                account: s.ledger.account.clone(),
            };
            let payment = OfflinePayment {
                id: id.clone(),
                order_id: order.id.clone(),
                amount: charged,
                tip: begun.request.tip,
                card,
                taken_by: staff,
                taken_at: now,
                deadline: now.plus(ONLINE_RESOLUTION_WINDOW),
                session_started_at: now,
                state: PaymentState::Forwarding {
                    attempt: 1,
                    started_at: now,
                    maybe_received: false,
                },
                online: true,
                account: s.ledger.account.clone(),
            };
            (
                vec![Write::Payment(Box::new(payment)), Write::Order(order)],
                request,
                self.inner.forwarding.live_attempt(&id),
            )
        };
        if let Err(e) = self.commit(batch).await {
            // Nothing was marked in flight: no attempt to recover.
            live.recorded();
            return Err(e);
        }
        self.state().begun.remove(&id);
        drop(lock);
        // The request and the recording of its answer run on their own
        // task: a caller that stops waiting (a cancelled coroutine or Swift
        // task) does not lose the answer.
        let engine = self.clone();
        let recorded = tokio::spawn(async move {
            // The live attempt goes with the request, as in a round.
            let answer = tokio::task::spawn_blocking(move || {
                (
                    crate::forwarder::guarded(|| gateway.authorize(&request)),
                    live,
                )
            })
            .await;
            let (answer, live) = answer.map_err(|e| PosError::Internal {
                reason: format!("authorization task failed: {e}"),
            })?;
            crate::forwarder::log_answer(&id, 1, &answer);
            let event = engine.answer_event(answer, 1);
            let p = engine.record_step(&id, event).await?;
            live.recorded();
            Ok::<_, PosError>(p)
        })
        .await
        .map_err(|e| PosError::Internal {
            reason: format!("authorization task failed: {e}"),
        })??;
        Ok(view_payment(&recorded, self.now()))
    }

    /// Drops a begun payment that will not be confirmed (the customer left).
    /// Fails with `DuplicatePayment` when the payment was already taken
    /// (a confirmation won the race): a stored payment is never cancelled here.
    pub async fn cancel_card_payment(&self, payment_id: &PaymentId) -> Result<()> {
        self.check_open()?;
        let _w = self.write_lock().await;
        let begun_here = self.state().begun.contains_key(payment_id);
        if !begun_here && self.payment_archived(payment_id).await? {
            return Err(PosError::duplicate(payment_id));
        }
        let mut s = self.state();
        if s.ledger.payments.contains_key(payment_id) {
            return Err(PosError::duplicate(payment_id));
        }
        s.begun
            .remove(payment_id)
            .map(|_| ())
            .ok_or_else(|| not_found(format!("payment {payment_id}")))
    }

    /// The stored payments held in memory, most urgent deadline first, then
    /// the settled ones (R19): every unsettled payment, the settled ones of
    /// the latest [`EngineConfig::settled_in_memory`] settled orders, and
    /// those of orders still owed or of the current offline session.
    /// [`payment_history`](Self::payment_history) lists them all.
    ///
    /// [`EngineConfig::settled_in_memory`]: crate::engine::EngineConfig::settled_in_memory
    pub fn list_payments(&self) -> Result<Vec<PaymentView>> {
        self.check_open()?;
        let now = self.now();
        let s = self.state();
        Ok(sorted_views(s.ledger.payments.values(), now))
    }

    /// Every payment the store holds, archived history included, in the
    /// order of [`list_payments`](Self::list_payments). It reads, verifies
    /// and replays the store's whole journal: seconds on a large history.
    pub async fn payment_history(&self) -> Result<Vec<PaymentView>> {
        self.check_open()?;
        let mut all: std::collections::BTreeMap<PaymentId, OfflinePayment> = Default::default();
        self.inner
            .store
            .load_each(&mut |w| {
                if let Write::Payment(p) = w {
                    all.insert(p.id.clone(), *p);
                }
                Ok(())
            })
            .await?;
        Ok(sorted_views(all.values(), self.now()))
    }

    /// Queues a receipt for an order (R16). It is sent when the device is
    /// back online (by the forwarding engine); returns the receipt's id.
    ///
    /// The id is random (63 bits, the top bit set, so it never equals an
    /// id numbered from 1 by an older version) and stored with the receipt:
    /// every delivery attempt sends the same id (`{device}-r{id}`), and a
    /// new store, after a reset or a reinstall, does not reuse the ids the
    /// processor has already seen from this device.
    pub async fn request_receipt(
        &self,
        order_id: &OrderId,
        channel: ReceiptChannel,
    ) -> Result<u64> {
        self.check_open()?;
        let _w = self.write_lock().await;
        let now = self.now();
        let (id, request) = {
            let s = self.state();
            if !s.ledger.orders.contains_key(order_id) {
                return Err(not_found(format!("order {order_id}")));
            }
            let id = loop {
                let b = new_id_bytes()?;
                let mut eight = [0u8; 8];
                eight.copy_from_slice(&b[..8]);
                let id = u64::from_be_bytes(eight) | (1 << 63);
                if !s.ledger.receipts.contains_key(&id) {
                    break id;
                }
            };
            let mut request = ReceiptRequest::queue(order_id.clone(), channel, now);
            request.account = s.ledger.account.clone();
            (id, request)
        };
        self.commit(vec![Write::Receipt { id, request }]).await?;
        Ok(id)
    }

    /// The receipts still queued, oldest first.
    pub fn queued_receipts(&self) -> Result<Vec<(u64, ReceiptRequest)>> {
        self.check_open()?;
        let s = self.state();
        let mut queued: Vec<(u64, ReceiptRequest)> = s
            .ledger
            .receipts
            .iter()
            .filter(|(_, r)| matches!(r.state, crate::lifecycle::ReceiptState::Queued { .. }))
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        queued.sort_by_key(|(id, r)| (r.requested_at, *id));
        Ok(queued)
    }

    /// Records a delivery attempt of a queued receipt.
    pub async fn record_receipt(&self, id: u64, event: ReceiptEvent) -> Result<()> {
        self.check_open()?;
        let _w = self.write_lock().await;
        let now = self.now();
        let mut request = self
            .state()
            .ledger
            .receipts
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(format!("receipt {id}")))?;
        request
            .record(event, now)
            .map_err(|e| PosError::InvalidTransition {
                reason: e.to_string(),
            })?;
        self.commit(vec![Write::Receipt { id, request }]).await
    }

    /// The payments the forwarding engine should send now, most urgent
    /// deadline first (B4), at most `limit`: unsettled, not in flight, before
    /// their deadline and past their retry time.
    pub fn due_for_forwarding(&self, limit: usize) -> Result<Vec<PaymentId>> {
        self.check_open()?;
        let now = self.now();
        let s = self.state();
        Ok(self.due_ids(&s, now, limit, true))
    }

    /// Records one step of forwarding a payment (start, failure, approval,
    /// decline), durably, with an audit entry for each outcome. A decline
    /// raises [`PosEvent::PaymentDeclined`] with the contact and the amount
    /// due (R17, B9). A step the payment cannot take (a second approval, a
    /// forward after the deadline) is refused and changes nothing.
    pub async fn record_forwarding(
        &self,
        payment_id: &PaymentId,
        event: PaymentEvent,
    ) -> Result<PaymentView> {
        self.check_open()?;
        // An attempt the app starts here is the app's to finish: it is held
        // live until the app records its outcome, so `tick` leaves it alone.
        let started = matches!(event, PaymentEvent::StartForwarding)
            .then(|| self.inner.forwarding.live_attempt(payment_id));
        // The outcome of an attempt the engine has in flight is the engine's
        // to record (its answer is on the way).
        if started.is_none()
            && self.inner.forwarding.is_live(payment_id)
            && !self.inner.forwarding.holds(payment_id)
        {
            return Err(PosError::InvalidTransition {
                reason: "the engine has an attempt of this payment in flight; \
                         its answer decides"
                    .into(),
            });
        }
        let payment = self.record_step(payment_id, event).await?;
        match started {
            Some(live) => self.inner.forwarding.hold(live),
            None if !matches!(payment.state, PaymentState::Forwarding { .. }) => {
                self.inner.forwarding.release(payment_id)
            }
            None => {}
        }
        Ok(view_payment(&payment, self.now()))
    }

    /// Time passes: expires every payment past its deadline that no attempt
    /// can have reached (R8: never forwarded after it; its amount counts as
    /// lost), makes one that an attempt may have reached `OutcomeUnknown`
    /// (the processor is asked about it; never counted lost on the device's
    /// word), records as "no answer" every attempt whose task was lost (it
    /// is retried with the same id), and raises the offline session's
    /// warnings (B4). Call it on a timer (the forwarding engine does).
    pub async fn tick(&self) -> Result<TickReport> {
        self.check_open()?;
        let _w = self.write_lock().await;
        let now = self.now();
        let (batch, effects, recovered, warnings) = {
            let s = self.state();
            let mut batch = Vec::new();
            let mut effects = Vec::new();
            let mut recovered = Vec::new();
            // Only a waiting payment past its deadline or one in
            // `Forwarding` (its task may be gone) can need a step: the
            // ledger's index tells whether there is any without a walk.
            let any_due = s.ledger.next_waiting_deadline().is_some_and(|d| d <= now);
            let any_forwarding = s
                .ledger
                .status_tallies()
                .values()
                .any(|t| t.get(PaymentStatus::Forwarding).count > 0);
            let candidates = if any_due || any_forwarding {
                Some(s.ledger.payments.values())
            } else {
                None
            };
            for p in candidates.into_iter().flatten() {
                let orphan = matches!(p.state, PaymentState::Forwarding { .. })
                    && !self.inner.forwarding.is_live(&p.id);
                let unsettled = matches!(
                    p.state,
                    PaymentState::Pending | PaymentState::FailedToForward { .. }
                );
                if !(orphan || unsettled && p.deadline <= now) {
                    continue;
                }
                let mut p = p.clone();
                let mut effect = None;
                if let PaymentState::Forwarding { attempt, .. } = p.state {
                    // Its task is gone, so its answer will never be
                    // recorded: "no answer", retried with the same id after
                    // the usual back-off (a task that keeps failing must not
                    // loop), or asked about after the deadline.
                    let failed = PaymentEvent::ForwardFailed {
                        error: ForwardErrorKind::NoAnswer,
                        next_retry_at: Some(self.inner.forwarding.retry_at(now, attempt)),
                    };
                    let e = Self::step_writes_on(&s, &mut batch, p, failed, now)?;
                    p = e.payment.clone();
                    effect = Some(e);
                    recovered.push(p.id.clone());
                }
                if p.deadline <= now {
                    effect = Some(Self::step_writes_on(
                        &s,
                        &mut batch,
                        p,
                        PaymentEvent::DeadlineReached,
                        now,
                    )?);
                }
                effects.extend(effect);
            }
            let mut settings = s.settings();
            let warnings = settings
                .session
                .as_mut()
                .map(|sess| sess.due_warnings(now))
                .unwrap_or_default();
            // The floor is also persisted as time passes (at most once a
            // minute), so that a reboot with the wall clock set back loses
            // at most that much trusted time (B13).
            if !warnings.is_empty()
                || !batch.is_empty()
                || now >= settings.clock_floor.plus(FLOOR_PERSIST_STEP)
            {
                settings.clock_floor = now;
                batch.insert(0, settings.session_write());
                // With the clock's anchor when it changed or its reading
                // of time since boot got old (reboots are seen by it).
                let anchor = self.inner.clock.anchor();
                if anchor.supersedes(s.ledger.clock_anchor.as_ref()) {
                    batch.insert(1, Write::Clock(anchor));
                }
            }
            (batch, effects, recovered, warnings)
        };
        self.commit(batch).await?;
        let mut report = TickReport {
            recovered,
            warnings: warnings.len(),
            ..TickReport::default()
        };
        for p in self.emit_steps(effects) {
            match p.state {
                PaymentState::Expired { .. } => report.expired.push(p.id),
                PaymentState::OutcomeUnknown { .. } => report.outcome_unknown.push(p.id),
                _ => {}
            }
        }
        for w in &warnings {
            self.inner.events.emit(PosEvent::SessionWarning(*w));
        }
        Ok(report)
    }

    /// The shop's currency, for convenience.
    pub fn currency(&self) -> Currency {
        self.inner.config.currency
    }
}

/// How long an online payment whose answer was lost is retried (with the
/// same id) before it is reported expired, "maybe received".
pub const ONLINE_RESOLUTION_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// How far the trusted time may run ahead of the persisted clock floor
/// before `tick` persists it again.
const FLOOR_PERSIST_STEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Refusals that depend on the card, which `begin_card_payment` cannot know yet.
fn card_specific(r: &Refusal) -> bool {
    matches!(
        r,
        Refusal::EntryModeRefused { .. }
            | Refusal::NetworkRefused { .. }
            | Refusal::BrandNotAllowed { .. }
            | Refusal::ReaderNotOfflineCapable { .. }
            | Refusal::PerCardLimit { .. }
    )
}
