//! Model-based property test of the engine: random sequences of
//! connectivity changes, checkouts, policy edits, clock jumps, reboots,
//! forwarding outcomes and ticks, run against the public API and checked
//! after every step against an independent model of SPEC sections 2-3.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pos_test_support::{self as support, Reader, Rig};
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};

use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour, PaymentView, Route};
use pos_core::clock::{Timestamp, VirtualClock};
use pos_core::connectivity::{ConnectivityState, ProbeOutcome};
use pos_core::engine::StaffSession;
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{
    DeclineReason, ForwardErrorKind, PaymentEvent, PaymentId, PaymentState, PaymentStatus, StaffId,
};
use pos_core::money::{Currency, Money};
use pos_core::policy::{CurrencyLimits, EntryMode, Network, OfflineReason, Policy, TenderKind};
use pos_core::rules::{ActionOverride, GuardOutcome, GuardedAction};
use pos_core::session::{DeadlineAnchor, SessionRules};
use pos_core::store::MemoryStore;
use pos_core::{EngineConfig, PosEngine, PosError};

const T0: i64 = 1_800_000_000_000;
const HOUR_MS: i64 = 3_600_000;
/// How far the trusted time may run ahead of the persisted floor before a
/// tick persists it (checkout.rs).
const FLOOR_STEP_MS: i64 = 60_000;

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct CardSpec {
    amount: i64,
    tip: i64,
    mode: u8,
    network: u8,
    reader: u8,
    fingerprint: u8,
    behaviour: u8,
    gift: bool,
    /// The store fails while this payment is confirmed.
    store_down_at_confirm: bool,
}

#[derive(Debug, Clone)]
struct PolicySpec {
    preset: u8,
    enabled: bool,
    forced: bool,
    service: bool,
    permission: bool,
    device: Option<i64>,
    per_order: i64,
    per_card: Option<i64>,
}

#[derive(Debug, Clone)]
enum Op {
    Network(bool),
    Probe(u8),
    Checkout {
        cards: Vec<CardSpec>,
        cash: i64,
        eur: bool,
    },
    SetPolicy(PolicySpec),
    SignIn(bool),
    Logout {
        with_override: bool,
    },
    Advance(i64),
    SetWall(i64),
    /// A reboot after `off` ms powered off, the wall clock then set back
    /// by `back` ms (a lost clock battery, a user fixing the time).
    Reboot {
        off: i64,
        back: i64,
    },
    Forward {
        which: usize,
        event: u8,
        retry_ms: i64,
    },
    Tick,
    /// `op` with every store write failing: it either needs no write, or
    /// fails with a storage error and changes nothing.
    StoreDown(Box<Op>),
}

fn card_spec() -> impl Strategy<Value = CardSpec> {
    (
        prop_oneof![3 => 1i64..4_000, 2 => 1i64..12_000, 1 => 9_000i64..20_000],
        prop_oneof![4 => Just(0i64), 1 => 1i64..800],
        prop_oneof![4 => Just(0u8), 1 => 1u8..4],
        prop_oneof![4 => Just(0u8), 1 => 1u8..4],
        prop_oneof![6 => Just(0u8), 1 => Just(1u8)],
        0u8..3,
        prop_oneof![6 => Just(1u8), 1 => Just(0u8), 2 => Just(2u8)],
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(
                amount,
                tip,
                mode,
                network,
                reader,
                fingerprint,
                behaviour,
                gift,
                store_down_at_confirm,
            )| CardSpec {
                amount,
                tip,
                mode,
                network,
                reader,
                fingerprint,
                behaviour,
                gift,
                store_down_at_confirm,
            },
        )
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        0u8..3,
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.6, 5_000i64..40_000),
        2_000i64..12_000,
        prop::option::weighted(0.3, 1_000i64..15_000),
    )
        .prop_map(
            |(preset, enabled, forced, service, permission, device, per_order, per_card)| {
                PolicySpec {
                    preset,
                    enabled,
                    forced,
                    service,
                    permission,
                    device,
                    per_order,
                    per_card,
                }
            },
        )
}

fn plain_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::bool::weighted(0.3).prop_map(Op::Network),
        4 => prop_oneof![1 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8)].prop_map(Op::Probe),
        12 => (prop::collection::vec(card_spec(), 1..4), prop_oneof![3 => Just(0i64), 1 => 1i64..3_000], prop::bool::weighted(0.05))
            .prop_map(|(cards, cash, eur)| Op::Checkout { cards, cash, eur }),
        2 => policy_spec().prop_map(Op::SetPolicy),
        1 => prop::bool::weighted(0.8).prop_map(Op::SignIn),
        1 => any::<bool>().prop_map(|with_override| Op::Logout { with_override }),
        7 => prop_oneof![
            5 => 0i64..300_000,
            2 => 0i64..HOUR_MS,
            2 => 0i64..(30 * HOUR_MS),
        ].prop_map(Op::Advance),
        1 => (-48 * HOUR_MS..48 * HOUR_MS).prop_map(Op::SetWall),
        1 => (
            prop_oneof![0i64..600_000, 0i64..(3 * HOUR_MS)],
            prop_oneof![Just(0i64), 0i64..(48 * HOUR_MS)],
        )
            .prop_map(|(off, back)| Op::Reboot { off, back }),
        9 => (any::<usize>(), 0u8..12, 0i64..(2 * HOUR_MS)).prop_map(|(which, event, retry_ms)| Op::Forward { which, event, retry_ms }),
        3 => Just(Op::Tick),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => plain_op(),
        // The same operation with the store failing every write.
        1 => plain_op().prop_filter("a restart needs the store", |o| !matches!(o, Op::Reboot { .. }))
            .prop_map(|o| Op::StoreDown(Box::new(o))),
    ]
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum MState {
    Pending,
    Forwarding {
        maybe: bool,
    },
    Failed {
        maybe: bool,
        retry: Option<i64>,
    },
    Approved(String),
    Declined(DeclineReason),
    Expired,
    /// Deadline passed while the processor may hold it.
    Unknown,
}

impl MState {
    fn status(&self) -> PaymentStatus {
        match self {
            MState::Pending => PaymentStatus::Pending,
            MState::Forwarding { .. } => PaymentStatus::Forwarding,
            MState::Failed { .. } => PaymentStatus::FailedToForward,
            MState::Approved(_) => PaymentStatus::Approved,
            MState::Declined(_) => PaymentStatus::Declined,
            MState::Expired => PaymentStatus::Expired,
            MState::Unknown => PaymentStatus::OutcomeUnknown,
        }
    }

    fn unsettled(&self) -> bool {
        !self.status().is_final()
    }
}

#[derive(Debug, Clone)]
struct MPay {
    seq: usize,
    amount: i64,
    deadline: i64,
    taken_at: i64,
    session_start: i64,
    fingerprint: Option<String>,
    state: MState,
    /// The device limit of the policy in force when it was accepted.
    device_limit_then: Option<i64>,
}

#[derive(Debug, Clone)]
struct MSession {
    start: i64,
    rules: SessionRules,
    first: Option<i64>,
}

impl MSession {
    fn closes_at(&self) -> i64 {
        self.start + ms(self.rules.acceptance_window)
    }

    fn deadline_for_new(&self, now: i64) -> i64 {
        let d = ms(self.rules.forwarding_deadline);
        match self.rules.deadline_anchor {
            DeadlineAnchor::ConnectionLoss => self.start + d,
            DeadlineAnchor::FirstOfflinePayment => self.first.unwrap_or(now) + d,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap()
}

struct Model {
    policy: Policy,
    staff_permitted: Option<bool>,
    conn: ConnectivityState,
    session: Option<MSession>,
    wall: i64,
    now: i64,
    floor: Option<i64>,
    /// When the last audit entry was written: the trusted time never
    /// restarts below it either.
    audited_at: Option<i64>,
    payments: BTreeMap<PaymentId, MPay>,
    next_seq: usize,
}

impl Model {
    fn unsettled_total(&self) -> i64 {
        self.payments
            .values()
            .filter(|p| p.state.unsettled())
            .map(|p| p.amount)
            .sum()
    }

    fn persist_floor(&mut self) {
        self.floor = Some(self.now);
    }

    fn audited(&mut self) {
        self.audited_at = Some(self.now);
    }
}

fn usd_c() -> Currency {
    Currency::parse("USD").unwrap()
}

fn eur_c() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn build_policy(spec: &PolicySpec) -> Policy {
    let usd = usd_c();
    let mut p = match spec.preset {
        0 => Policy::shopify_pos(usd),
        1 => Policy::square_reader(usd),
        _ => Policy::square_terminal(usd),
    }
    .with_enabled(spec.enabled);
    p.outage.offline_when_forced = spec.forced;
    if spec.service {
        p.outage.offline_on_service_disruption = true;
    }
    if spec.permission {
        p.staff_permission_required = true;
    }
    if spec.device.is_some() || spec.per_card.is_some() {
        let device = spec.device;
        let per_order = device.map_or(spec.per_order, |d| spec.per_order.min(d));
        let mut limits = CurrencyLimits::per_order(Money::new(per_order, usd));
        if let Some(d) = device {
            limits = limits.with_device_amount(Money::new(d, usd));
        }
        if let Some(c) = spec.per_card {
            let c = device.map_or(c, |d| c.min(d));
            limits = limits.with_per_card(Money::new(c, usd));
        }
        p = p.with_limits(usd, limits);
    }
    p
}

const MODES: [EntryMode; 4] = [
    EntryMode::Chip,
    EntryMode::Contactless,
    EntryMode::Swipe,
    EntryMode::Manual,
];
const NETWORKS: [Network; 4] = [
    Network::Visa,
    Network::Mastercard,
    Network::Interac,
    Network::Amex,
];
const BEHAVIOURS: [OfflineBehaviour; 3] = [
    OfflineBehaviour::RequireOnline,
    OfflineBehaviour::PreferOnline,
    OfflineBehaviour::ForceOffline,
];

/// The serial of the vendor reader remembered for `model`.
fn reader_serial(model: &str) -> String {
    format!("SN {model}").chars().take(64).collect()
}

fn reader_name(policy: &Policy, which: u8) -> String {
    if which == 0 {
        policy
            .offline_readers
            .iter()
            .next()
            .cloned()
            .unwrap_or_else(|| "Wisepad 3".into())
    } else {
        "Mystery Reader 9000".into()
    }
}

fn error_name(e: &PosError) -> String {
    let text = match e {
        PosError::Refused { refusal } => format!("{refusal:?}"),
        other => format!("{other:?}"),
    };
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// What a card payment should give, from the model alone.
enum Expect {
    /// Refused with one of these errors (by name).
    Fail(Vec<&'static str>),
    /// Taken offline with this reason and this deadline.
    Offline {
        reason: OfflineReason,
        deadline: i64,
    },
}

struct Harness {
    clock: VirtualClock,
    store: MemoryStore,
    engine: PosEngine,
    model: Model,
    staff_id: &'static str,
    /// What happened, by kind: printed with `POS_MODEL_STATS=1` to check
    /// that the generator reaches the interesting paths.
    stats: BTreeMap<String, u32>,
    /// Every store write fails (see [`Op::StoreDown`]).
    store_down: bool,
    /// Storage errors seen while the store was down.
    storage_errors: u32,
    /// Each payment's state when it was first seen final: it never changes.
    finals: BTreeMap<PaymentId, PaymentState>,
}

/// What a failed write must leave unchanged.
#[derive(Debug, PartialEq)]
struct Snapshot {
    payments: Vec<PaymentView>,
    status: pos_core::EngineStatus,
    policy: Policy,
    records: usize,
    due: Vec<PaymentId>,
}

fn config() -> EngineConfig {
    EngineConfig::new("/tmp/pos-core-model", "till-model", "USD").unwrap()
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        prop_assert!($cond, $($fmt)*)
    };
}

impl Harness {
    async fn new() -> Harness {
        // Every reader model the cards use, remembered as vendor readers
        // (their trust is the vendor's: the card reads carry the serial and
        // no signature), so R11 sees the remembered model.
        let mut models: Vec<String> = [
            Policy::shopify_pos(usd_c()),
            Policy::square_reader(usd_c()),
            Policy::square_terminal(usd_c()),
        ]
        .iter()
        .map(|p| reader_name(p, 0))
        .collect();
        models.push(reader_name(&Policy::default(), 1));
        let policy = Policy::shopify_pos(usd_c()).with_enabled(true);
        let staff_id = "staff-1";
        let rig = models.iter().fold(
            Rig::builder()
                .config(config())
                .policy(policy.clone())
                .staff(support::staff(staff_id, true))
                .offline(false),
            |rig, model| rig.stored_reader(Reader::vendor(&reader_serial(model), model)),
        );
        let Rig {
            clock,
            store,
            engine,
            ..
        } = rig.open().await;
        let model = Model {
            policy,
            staff_permitted: Some(true),
            conn: ConnectivityState::Unknown,
            session: None,
            wall: T0,
            now: T0,
            floor: Some(T0),
            audited_at: Some(T0),
            payments: BTreeMap::new(),
            next_seq: 0,
        };
        Harness {
            clock,
            store: MemoryStore::clone(&store),
            engine,
            model,
            staff_id,
            stats: BTreeMap::new(),
            store_down: false,
            storage_errors: 0,
            finals: BTreeMap::new(),
        }
    }

    /// A storage error while the store is down: the operation changed nothing
    /// (checked by the caller against a snapshot).
    fn swallowed<T>(&mut self, r: &Result<T, PosError>) -> bool {
        let hit = self.store_down && matches!(r, Err(PosError::Storage { .. }));
        if hit {
            self.storage_errors += 1;
        }
        hit
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            payments: self.engine.list_payments().unwrap(),
            status: self.engine.status().unwrap(),
            policy: self.engine.policy().unwrap(),
            records: self.store.len(),
            due: self.engine.due_for_forwarding(1_000).unwrap(),
        }
    }

    fn sign_in(&mut self, permitted: bool) {
        self.engine
            .sign_in(StaffSession {
                staff_id: StaffId::parse(self.staff_id).unwrap(),
                may_take_offline_payments: permitted,
            })
            .unwrap();
        self.model.staff_permitted = Some(permitted);
    }

    async fn connectivity(
        &mut self,
        result: Result<ConnectivityState, PosError>,
    ) -> Result<(), TestCaseError> {
        let to =
            result.map_err(|e| TestCaseError::fail(format!("connectivity input failed: {e:?}")))?;
        let m = &mut self.model;
        let from = m.conn;
        if to != from {
            m.persist_floor();
            m.audited();
            match (from.outage_cause(), to.outage_cause()) {
                // Connection lost: a new session from the outage's start,
                // unless a restart left one (it goes on, never extended).
                (None, Some(_)) if m.session.is_none() || from.is_online() => {
                    m.session = Some(MSession {
                        start: to.since().unwrap().0,
                        rules: m.policy.session.clone(),
                        first: None,
                    });
                }
                (_, None) if to.is_online() => m.session = None,
                _ => {}
            }
            if let Some(since) = to.since() {
                check!(
                    since.0 <= m.now,
                    "a state beginning in the future: {to:?} at {}",
                    m.now
                );
            }
        }
        m.conn = to;
        Ok(())
    }

    fn expect_card(&self, card: &CardSpec, currency: Currency, order_charged: i64) -> Expect {
        let m = &self.model;
        let behaviour = BEHAVIOURS[usize::from(card.behaviour)];
        let cause = match m.conn {
            ConnectivityState::NetworkOutage { .. } => Some(OfflineReason::NetworkOutage),
            ConnectivityState::ServiceDisruption { .. } => Some(OfflineReason::ServiceDisruption),
            _ => None,
        };
        let reason = match (behaviour, cause) {
            (OfflineBehaviour::ForceOffline, c) => c.unwrap_or(OfflineReason::ForcedOffline),
            (OfflineBehaviour::RequireOnline, Some(_)) => {
                return Expect::Fail(vec!["OnlineRequired"])
            }
            (_, None) => return Expect::Fail(vec!["OnlineUnavailable"]),
            (OfflineBehaviour::PreferOnline, Some(c)) => c,
        };
        let p = &m.policy;
        let now = m.now;
        // A forced-offline payment while online whose session's window has
        // closed starts a new session (a real outage's session is kept).
        let session = match m.session.clone() {
            Some(s) if reason != OfflineReason::ForcedOffline || now < s.closes_at() => s,
            _ => MSession {
                start: now,
                rules: p.session.clone(),
                first: None,
            },
        };
        let mut why = Vec::new();
        if !p.enabled {
            why.push("OfflineDisabled");
        }
        if !p.outage.allows(reason) {
            why.push("OutageCauseNotAllowed");
        }
        if p.staff_permission_required && m.staff_permitted != Some(true) {
            why.push("StaffNotPermitted");
        }
        if now >= session.closes_at() {
            why.push("AcceptanceWindowClosed");
        }
        let deadline = session.deadline_for_new(now);
        if deadline - now < ms(session.rules.require_online_margin) {
            why.push("RequireOnlineNearDeadline");
        }
        if !p.reader_is_offline_capable(&reader_name(p, card.reader)) {
            why.push("ReaderNotOfflineCapable");
        }
        if card.gift {
            why.push("TenderRefused");
        }
        if !p.entry_mode_allowed(MODES[usize::from(card.mode)]) {
            why.push("EntryModeRefused");
        }
        let network = NETWORKS[usize::from(card.network)];
        if !p.network_allowed(network) {
            why.push("BrandNotAllowed");
        }
        if p.regional_refusal(network).is_some() {
            why.push("NetworkRefused");
        }
        if card.tip > 0 && !p.tips_allowed {
            why.push("TipsRefused");
        }
        let charged = card.amount + card.tip;
        match p.limits_for(currency) {
            None => why.push("CurrencyNotConfigured"),
            Some(l) => {
                if l.per_payment.is_some_and(|x| charged > x.minor_units()) {
                    why.push("PerPaymentLimit");
                }
                if order_charged + charged > l.per_order.minor_units() {
                    why.push("PerOrderLimit");
                }
                if let Some(limit) = l.per_card {
                    // Without a fingerprint the payment is seen alone.
                    let fp = fingerprint(card);
                    let before: i64 = m
                        .payments
                        .values()
                        .filter(|q| {
                            fp.is_some() && q.session_start == session.start && q.fingerprint == fp
                        })
                        .map(|q| q.amount)
                        .sum();
                    if before + charged > limit.minor_units() {
                        why.push("PerCardLimit");
                    }
                }
                if l.device_count.is_some() {
                    why.push("DeviceCountLimit");
                }
                if l.device_amount
                    .is_some_and(|d| m.unsettled_total() + charged > d.minor_units())
                {
                    why.push("DeviceAmountLimit");
                }
            }
        }
        if why.is_empty() {
            Expect::Offline { reason, deadline }
        } else {
            Expect::Fail(why)
        }
    }

    async fn checkout(
        &mut self,
        cards: &[CardSpec],
        cash: i64,
        eur: bool,
    ) -> Result<(), TestCaseError> {
        let currency = if eur { eur_c() } else { usd_c() };
        let total: i64 = cards.iter().map(|c| c.amount).sum::<i64>() + cash;
        let created = self
            .engine
            .create_order(NewOrder {
                order_id: None,
                total: Money::new(total, currency),
                contact: None,
            })
            .await;
        if self.swallowed(&created) {
            return Ok(());
        }
        let order = match (created, self.model.staff_permitted) {
            (Err(PosError::NotSignedIn), None) => return Ok(()),
            (Ok(o), Some(_)) => o.id,
            (other, staff) => {
                return Err(TestCaseError::fail(format!(
                    "create_order: {other:?} (staff {staff:?})"
                )))
            }
        };
        let mut order_charged = 0;
        for card in cards {
            let expect = self.expect_card(card, currency, order_charged);
            let req = CardPaymentRequest {
                order_id: order.clone(),
                payment_id: None,
                amount: Money::new(card.amount, currency),
                tip: (card.tip > 0).then(|| Money::new(card.tip, currency)),
                behaviour: BEHAVIOURS[usize::from(card.behaviour)],
                tender: if card.gift {
                    TenderKind::GiftCard
                } else {
                    TenderKind::Card
                },
            };
            let read = CardRead {
                entry_mode: MODES[usize::from(card.mode)],
                network: NETWORKS[usize::from(card.network)],
                last4: "1234".into(),
                fingerprint: fingerprint(card),
                reader_model: reader_name(&self.model.policy, card.reader),
                sealed_card_data: vec![7; 16],
                reader_serial: Some(reader_serial(&reader_name(&self.model.policy, card.reader))),
                reader_signature: None,
                tap_to_pay_on_phone: false,
            };
            let result = match self.engine.begin_card_payment(req).await {
                Err(e) => Err(e),
                Ok(d) => {
                    let want_route = match &expect {
                        Expect::Offline { reason, .. } => Some(Route::Offline { reason: *reason }),
                        Expect::Fail(w) if w == &vec!["OnlineUnavailable"] => Some(Route::Online),
                        Expect::Fail(_) => None,
                    };
                    if let Some(r) = want_route {
                        prop_assert_eq!(d.route, r);
                    }
                    if card.store_down_at_confirm {
                        let before = self.snapshot();
                        self.store
                            .fail_always(pos_core::store::StoreError::DiskFull);
                        let r = self
                            .engine
                            .confirm_card_payment(&d.payment_id, read.clone())
                            .await;
                        self.store.heal();
                        if matches!(r, Err(PosError::Storage { .. })) {
                            prop_assert_eq!(
                                self.snapshot(),
                                before,
                                "a failed confirm changed something"
                            );
                            *self
                                .stats
                                .entry("confirm failed to store".into())
                                .or_default() += 1;
                            continue;
                        }
                        r
                    } else {
                        self.engine
                            .confirm_card_payment(&d.payment_id, read.clone())
                            .await
                    }
                    .inspect_err(|e| {
                        // A refusal at confirmation is audited.
                        if matches!(e, PosError::Refused { .. }) {
                            self.model.audited_at = Some(self.model.now);
                        }
                    })
                }
            };
            let outcome = match &result {
                Ok(_) => "accepted".to_owned(),
                Err(e) => error_name(e),
            };
            *self.stats.entry(format!("checkout {outcome}")).or_default() += 1;
            match (result, expect) {
                (Ok(view), Expect::Offline { deadline, .. }) => {
                    self.accepted(&view, card, deadline)?;
                    order_charged += card.amount + card.tip;
                }
                (Err(e), Expect::Fail(why)) => {
                    let name = error_name(&e);
                    check!(
                        why.contains(&name.as_str()),
                        "refused with {e:?}, the model expected one of {why:?}"
                    );
                }
                (Ok(view), Expect::Fail(why)) => {
                    return Err(TestCaseError::fail(format!(
                        "accepted {view:?} ({card:?}) although the model refuses it: {why:?}"
                    )))
                }
                (Err(e), Expect::Offline { .. }) => {
                    return Err(TestCaseError::fail(format!(
                        "refused {card:?} with {e:?}; the model accepts it"
                    )))
                }
            }
        }
        Ok(())
    }

    fn accepted(
        &mut self,
        view: &PaymentView,
        card: &CardSpec,
        deadline: i64,
    ) -> Result<(), TestCaseError> {
        let m = &mut self.model;
        let charged = card.amount + card.tip;
        prop_assert_eq!(view.amount, Money::new(charged, usd_c()));
        prop_assert_eq!(view.status, PaymentStatus::Pending);
        prop_assert_eq!(view.taken_at, Timestamp(m.now), "taken at the trusted time");
        prop_assert_eq!(view.deadline, Timestamp(deadline));
        check!(
            view.taken_at < view.deadline,
            "taken at or after its own deadline"
        );
        // Acceptance invariants, stated directly. With no outage, the payment
        // was forced offline: a closed forced session is replaced (see above).
        let no_outage = !matches!(
            m.conn,
            ConnectivityState::NetworkOutage { .. } | ConnectivityState::ServiceDisruption { .. }
        );
        if no_outage && m.session.as_ref().is_some_and(|s| m.now >= s.closes_at()) {
            m.session = None;
        }
        let session = m.session.get_or_insert(MSession {
            start: m.now,
            rules: m.policy.session.clone(),
            first: None,
        });
        check!(
            m.now < session.closes_at(),
            "accepted outside the window: {} >= {}",
            m.now,
            session.closes_at()
        );
        check!(
            !m.policy.staff_permission_required || m.staff_permitted == Some(true),
            "accepted without the staff permission"
        );
        check!(m.policy.enabled, "accepted while offline payments are off");
        if session.first.is_none() {
            session.first = Some(m.now);
        }
        let session_start = session.start;
        let device_limit_then = m
            .policy
            .limits_for(usd_c())
            .and_then(|l| l.device_amount)
            .map(|d| d.minor_units());
        m.payments.insert(
            view.id.clone(),
            MPay {
                seq: m.next_seq,
                amount: charged,
                deadline,
                taken_at: m.now,
                session_start,
                fingerprint: fingerprint(card),
                state: MState::Pending,
                device_limit_then,
            },
        );
        m.next_seq += 1;
        m.audited();
        if let Some(limit) = device_limit_then {
            check!(
                m.unsettled_total() <= limit,
                "device total {} over the limit {limit}",
                m.unsettled_total()
            );
        }
        m.persist_floor();
        Ok(())
    }

    async fn forward(
        &mut self,
        which: usize,
        event: u8,
        retry_ms: i64,
    ) -> Result<(), TestCaseError> {
        if self.model.payments.is_empty() {
            return Ok(());
        }
        // Mostly an unsettled payment and the event a forwarder would send
        // next; sometimes anything at all.
        let unsettled: Vec<PaymentId> = self
            .model
            .payments
            .iter()
            .filter(|(_, p)| p.state.unsettled())
            .map(|(id, _)| id.clone())
            .collect();
        let id = if event < 9 && !unsettled.is_empty() {
            unsettled[which % unsettled.len()].clone()
        } else {
            self.model
                .payments
                .keys()
                .nth(which % self.model.payments.len())
                .unwrap()
                .clone()
        };
        let passed = self.model.now >= self.model.payments[&id].deadline;
        let event = if event < 7 {
            match self.model.payments[&id].state {
                MState::Pending if passed => 6,
                MState::Pending => 0,
                MState::Forwarding { .. } => [3, 5, 2, 1, 8, 3][(which / 7) % 6],
                MState::Failed { .. } if passed => 6,
                MState::Failed { maybe: true, .. } if which.is_multiple_of(3) => 3,
                MState::Failed { .. } => 0,
                _ => 3,
            }
        } else {
            event % 9
        };
        let now = self.model.now;
        let retry = Some(now + retry_ms);
        let ev = match event {
            0 => PaymentEvent::StartForwarding,
            1 => PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::NotSent,
                next_retry_at: None,
            },
            2 => PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::NoAnswer,
                next_retry_at: retry.map(Timestamp),
            },
            3 => PaymentEvent::Approved {
                processor_ref: "ref-a".into(),
            },
            4 => PaymentEvent::Approved {
                processor_ref: "ref-b".into(),
            },
            5 => PaymentEvent::Declined {
                reason: DeclineReason::InsufficientFunds,
            },
            6 => PaymentEvent::DeadlineReached,
            7 => PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::Rejected,
                next_retry_at: None,
            },
            _ => PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::ServiceUnavailable,
                next_retry_at: retry.map(Timestamp),
            },
        };
        let p = self.model.payments[&id].clone();
        let passed = now >= p.deadline;
        let next = match (&p.state, &ev) {
            (MState::Pending, PaymentEvent::StartForwarding) if !passed => {
                Some(MState::Forwarding { maybe: false })
            }
            (
                MState::Pending | MState::Failed { maybe: false, .. },
                PaymentEvent::DeadlineReached,
            ) if passed => Some(MState::Expired),
            (MState::Failed { maybe: true, .. }, PaymentEvent::DeadlineReached) if passed => {
                Some(MState::Unknown)
            }
            (MState::Unknown, PaymentEvent::Approved { processor_ref }) => {
                Some(MState::Approved(processor_ref.clone()))
            }
            (MState::Unknown, PaymentEvent::Declined { reason }) => {
                Some(MState::Declined(reason.clone()))
            }
            (
                MState::Forwarding { maybe },
                PaymentEvent::ForwardFailed {
                    error,
                    next_retry_at,
                },
            ) => Some(MState::Failed {
                maybe: *maybe
                    || matches!(
                        error,
                        ForwardErrorKind::NoAnswer | ForwardErrorKind::ServiceUnavailable
                    ),
                retry: next_retry_at.map(|t| t.0),
            }),
            (MState::Forwarding { .. }, PaymentEvent::Approved { processor_ref }) => {
                Some(MState::Approved(processor_ref.clone()))
            }
            (MState::Forwarding { .. }, PaymentEvent::Declined { reason }) => {
                Some(MState::Declined(reason.clone()))
            }
            (MState::Failed { maybe, .. }, PaymentEvent::StartForwarding) if !passed => {
                Some(MState::Forwarding { maybe: *maybe })
            }
            (MState::Failed { maybe: true, .. }, PaymentEvent::Approved { processor_ref }) => {
                Some(MState::Approved(processor_ref.clone()))
            }
            (MState::Failed { maybe: true, .. }, PaymentEvent::Declined { reason }) => {
                Some(MState::Declined(reason.clone()))
            }
            _ => None,
        };
        let before_final = p.state.status().is_final();
        let result = self.engine.record_forwarding(&id, ev.clone()).await;
        if self.swallowed(&result) {
            return Ok(());
        }
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        *self
            .stats
            .entry(format!("forward {:?} {outcome}", ev.kind()))
            .or_default() += 1;
        match (result, next) {
            (Ok(view), Some(next)) => {
                if matches!(ev, PaymentEvent::StartForwarding) {
                    check!(now < p.deadline, "forwarding started at/after the deadline");
                }
                check!(!before_final, "a final state changed");
                if !matches!(ev, PaymentEvent::StartForwarding) {
                    // Every outcome and every expiry is audited.
                    self.model.audited();
                }
                prop_assert_eq!(view.status, next.status());
                self.model.payments.get_mut(&id).unwrap().state = next;
            }
            (Err(PosError::InvalidTransition { .. }), None) => {}
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "record_forwarding({ev:?}) on {:?} at {now} (deadline {}): got {got:?}, model {want:?}",
                    p.state, p.deadline
                )))
            }
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), TestCaseError> {
        let report = self.engine.tick().await;
        if self.swallowed(&report) {
            return Ok(());
        }
        let report = report.map_err(|e| TestCaseError::fail(format!("tick: {e:?}")))?;
        let now = self.model.now;
        let due = |maybe_received: bool| {
            let mut ids: Vec<PaymentId> = self
                .model
                .payments
                .iter()
                .filter(|(_, p)| {
                    p.deadline <= now
                        && match p.state {
                            MState::Pending => !maybe_received,
                            MState::Failed { maybe, .. } => maybe == maybe_received,
                            _ => false,
                        }
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort();
            ids
        };
        let (want, want_unknown) = (due(false), due(true));
        let mut got = report.expired.clone();
        let mut got_unknown = report.outcome_unknown.clone();
        got.sort();
        got_unknown.sort();
        prop_assert_eq!(&got, &want, "expired by tick");
        prop_assert_eq!(&got_unknown, &want_unknown, "outcome unknown by tick");
        prop_assert!(report.recovered.is_empty(), "no attempt lost its task");
        for id in &got {
            self.model.payments.get_mut(id).unwrap().state = MState::Expired;
            self.model.audited();
        }
        for id in &got_unknown {
            self.model.payments.get_mut(id).unwrap().state = MState::Unknown;
            self.model.audited();
        }
        let got: Vec<PaymentId> = got.into_iter().chain(got_unknown).collect();
        *self.stats.entry("tick expired".into()).or_default() += u32::try_from(got.len()).unwrap();
        let floor = self.model.floor.unwrap_or(i64::MIN);
        if report.warnings > 0 || !got.is_empty() || now >= floor.saturating_add(FLOOR_STEP_MS) {
            self.model.persist_floor();
        }
        Ok(())
    }

    async fn logout(&mut self, with_override: bool) -> Result<(), TestCaseError> {
        let pending: Vec<&MPay> = self
            .model
            .payments
            .values()
            .filter(|p| p.state.unsettled())
            .collect();
        let count = pending.len() as u64;
        let at_risk: i64 = pending.iter().map(|p| p.amount).sum();
        let o = with_override.then(|| ActionOverride {
            staff_id: "manager-1".into(),
            reason: "closing".into(),
            acknowledged_at_risk: vec![Money::new(at_risk, usd_c())],
        });
        let r = self.engine.guarded_action(GuardedAction::LogOut, o).await;
        if self.swallowed(&r) {
            return Ok(());
        }
        match r {
            Ok(GuardOutcome::Allowed) => check!(count == 0, "logout allowed with {count} pending"),
            Ok(GuardOutcome::Overridden {
                count: c,
                at_risk: a,
                ..
            }) => {
                check!(
                    with_override && count > 0,
                    "override outcome without override"
                );
                prop_assert_eq!(c, count);
                prop_assert_eq!(a, vec![Money::new(at_risk, usd_c())]);
                self.model.audited();
            }
            Err(PosError::ActionRefused { .. }) => {
                check!(
                    count > 0 && !with_override,
                    "logout refused with {count} pending, override {with_override}"
                );
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("logout: {e:?}"))),
        }
        self.model.staff_permitted = None;
        Ok(())
    }

    async fn reboot(&mut self, off_ms: i64, back_ms: i64) -> Result<(), TestCaseError> {
        self.clock
            .reboot(Duration::from_millis(u64::try_from(off_ms).unwrap()));
        self.model.wall += off_ms - back_ms;
        self.clock.set_wall(Timestamp(self.model.wall));
        self.engine.close();
        self.engine = PosEngine::open_with(
            config(),
            Arc::new(self.clock.clone()),
            Arc::new(self.store.clone()),
        )
        .await
        .map_err(|e| TestCaseError::fail(format!("the store no longer loads: {e:?}")))?;
        let m = &mut self.model;
        m.now = m
            .wall
            .max(m.floor.unwrap_or(i64::MIN))
            .max(m.audited_at.unwrap_or(i64::MIN));
        m.conn = ConnectivityState::Unknown;
        // An attempt in flight when the engine stopped is recorded as failed
        // with no answer: it may have reached the processor.
        let now = m.now;
        let mut recovered = false;
        for p in m.payments.values_mut() {
            if let MState::Forwarding { .. } = p.state {
                p.state = MState::Failed {
                    maybe: true,
                    retry: None,
                };
                recovered = true;
            }
        }
        if recovered {
            m.audited_at = Some(now);
        }
        // The app signs the same person in again.
        if let Some(permitted) = m.staff_permitted {
            self.sign_in(permitted);
        }
        Ok(())
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Network(up) => {
                let r = self.engine.report_network(*up).await;
                if !self.swallowed(&r) {
                    self.connectivity(r).await?;
                }
            }
            Op::Probe(o) => {
                let outcome = [
                    ProbeOutcome::Healthy,
                    ProbeOutcome::Unhealthy,
                    ProbeOutcome::Unreachable,
                ][usize::from(*o)];
                let r = self.engine.report_probe(outcome).await;
                if !self.swallowed(&r) {
                    self.connectivity(r).await?;
                }
            }
            Op::Checkout { cards, cash, eur } => self.checkout(cards, *cash, *eur).await?,
            Op::SetPolicy(spec) => {
                let p = build_policy(spec);
                prop_assert_eq!(p.validate(), Ok(()));
                let r = self.engine.set_policy(p.clone()).await;
                if self.swallowed(&r) {
                    return Ok(());
                }
                r.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                self.model.policy = p;
                self.model.persist_floor();
                self.model.audited();
            }
            Op::SignIn(permitted) => self.sign_in(*permitted),
            Op::Logout { with_override } => self.logout(*with_override).await?,
            Op::Advance(d) => {
                self.clock
                    .advance(Duration::from_millis(u64::try_from(*d).unwrap()));
                self.model.wall += d;
                self.model.now += d;
            }
            Op::SetWall(offset) => {
                self.model.wall += offset;
                self.clock.set_wall(Timestamp(self.model.wall));
            }
            Op::Reboot { off, back } => self.reboot(*off, *back).await?,
            Op::Forward {
                which,
                event,
                retry_ms,
            } => self.forward(*which, *event, *retry_ms).await?,
            Op::Tick => self.tick().await?,
            Op::StoreDown(inner) => {
                let before = self.snapshot();
                let errors = self.storage_errors;
                self.store
                    .fail_always(pos_core::store::StoreError::Io("storage unplugged".into()));
                self.store_down = true;
                let r = Box::pin(self.step(inner)).await;
                self.store_down = false;
                self.store.heal();
                r?;
                if self.storage_errors > errors {
                    *self
                        .stats
                        .entry("store down: write refused".into())
                        .or_default() += 1;
                    prop_assert_eq!(self.snapshot(), before, "a failed write changed something");
                }
            }
        }
        Ok(())
    }

    /// Every invariant, against the engine's own listing and status.
    fn invariants(&mut self) -> Result<(), TestCaseError> {
        let m = &self.model;
        let listed = self.engine.list_payments().unwrap();
        let status = self.engine.status().unwrap();

        // Nothing lost, nothing invented; each payment in exactly one state.
        prop_assert_eq!(listed.len(), m.payments.len(), "payments listed");
        let mut seen = std::collections::BTreeSet::new();
        for v in &listed {
            check!(seen.insert(v.id.clone()), "{:?} listed twice", v.id);
            let p = m.payments.get(&v.id);
            check!(p.is_some(), "unknown payment {:?}", v.id);
            let p = p.unwrap();
            prop_assert_eq!(v.amount, Money::new(p.amount, usd_c()));
            prop_assert_eq!(v.status, p.state.status(), "state of {:?}", v.id);
            prop_assert_eq!(v.state.status(), v.status);
            if v.status.is_final() {
                let first = self
                    .finals
                    .entry(v.id.clone())
                    .or_insert_with(|| v.state.clone());
                prop_assert_eq!(&v.state, &*first, "a final state changed");
            } else {
                check!(
                    !self.finals.contains_key(&v.id),
                    "{:?} left its final state",
                    v.id
                );
            }
            prop_assert_eq!(v.deadline, Timestamp(p.deadline), "deadline never moves");
            prop_assert_eq!(v.taken_at, Timestamp(p.taken_at));
            let left = if p.state.unsettled() {
                (p.deadline - m.now).max(0)
            } else {
                0
            };
            prop_assert_eq!(v.time_left_ms, left, "time left of {:?}", v.id);
        }

        // Totals equal the sums over the listing (and over the model).
        let mut sums: BTreeMap<&'static str, (u32, i64)> = BTreeMap::new();
        for v in &listed {
            let key = match v.status {
                PaymentStatus::Approved => "approved",
                PaymentStatus::Declined => "declined",
                PaymentStatus::Expired => "expired",
                _ => "pending",
            };
            let e = sums.entry(key).or_default();
            e.0 += 1;
            e.1 += v.amount.minor_units();
        }
        let get = |k: &str| sums.get(k).copied().unwrap_or_default();
        if listed.is_empty() {
            check!(
                status.totals.is_empty(),
                "totals without payments: {:?}",
                status.totals
            );
        } else {
            prop_assert_eq!(status.totals.len(), 1);
            let t = &status.totals[0];
            prop_assert_eq!(
                (t.pending_count, t.pending_amount.minor_units()),
                get("pending")
            );
            prop_assert_eq!(
                (t.approved_count, t.approved_amount.minor_units()),
                get("approved")
            );
            prop_assert_eq!(
                (t.declined_count, t.declined_amount.minor_units()),
                get("declined")
            );
            prop_assert_eq!(
                (t.expired_count, t.expired_amount.minor_units()),
                get("expired")
            );
            prop_assert_eq!(t.pending_amount.minor_units(), m.unsettled_total());
        }
        prop_assert_eq!(status.pending_offline_payments, u64::from(get("pending").0));

        // The device limit of the policy in force when each payment was
        // accepted was never exceeded: what is still unsettled of the
        // payments up to it stays within that limit.
        let mut ordered: Vec<&MPay> = m.payments.values().collect();
        ordered.sort_by_key(|p| p.seq);
        let mut running = 0;
        for p in ordered {
            if p.state.unsettled() {
                running += p.amount;
                if let Some(limit) = p.device_limit_then {
                    check!(
                        running <= limit,
                        "unsettled {running} over the device limit {limit} of payment {}",
                        p.seq
                    );
                }
            }
        }

        // The deadline and the trusted time.
        let next = m
            .payments
            .values()
            .filter(|p| p.state.unsettled())
            .map(|p| p.deadline)
            .min();
        prop_assert_eq!(status.next_deadline, next.map(Timestamp));
        prop_assert_eq!(
            status.time_left_ms,
            next.map(|d| (d - m.now).max(0)),
            "trusted time"
        );

        // What is due for forwarding: unsettled, not in flight, before the
        // deadline, past its retry time; most urgent first.
        let mut due: Vec<(i64, &PaymentId)> = m
            .payments
            .iter()
            .filter(|(_, p)| p.deadline > m.now)
            .filter(|(_, p)| match p.state {
                MState::Pending => true,
                MState::Failed { retry, .. } => retry.is_none_or(|t| t <= m.now),
                _ => false,
            })
            .map(|(id, p)| (p.deadline, id))
            .collect();
        due.sort();
        let due: Vec<PaymentId> = due.into_iter().map(|(_, id)| id.clone()).collect();
        prop_assert_eq!(self.engine.due_for_forwarding(1_000).unwrap(), due);

        // Session, connectivity, policy.
        prop_assert_eq!(status.connectivity, m.conn);
        prop_assert_eq!(
            status.session_started_at,
            m.session.as_ref().map(|s| Timestamp(s.start))
        );
        prop_assert_eq!(
            status.acceptance_closes_at,
            m.session.as_ref().map(|s| Timestamp(s.closes_at()))
        );
        prop_assert_eq!(&self.engine.policy().unwrap(), &m.policy);
        prop_assert_eq!(status.offline_enabled, m.policy.enabled);
        let exposure = self.engine.exposure().unwrap();
        prop_assert_eq!(exposure.count, u64::from(get("pending").0));
        Ok(())
    }
}

fn fingerprint(card: &CardSpec) -> Option<String> {
    match card.fingerprint {
        0 => None,
        1 => Some("fp-a".into()),
        _ => Some("fp-b".into()),
    }
}

async fn run(ops: Vec<Op>, stats: &mut BTreeMap<String, u32>) -> Result<(), TestCaseError> {
    let mut h = Harness::new().await;
    h.invariants()?;
    for (i, op) in ops.iter().enumerate() {
        h.step(op)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
        h.invariants()
            .map_err(|e| TestCaseError::fail(format!("after step {i} {op:?}: {e}")))?;
        let kind = format!("{op:?}")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>();
        *h.stats.entry(format!("op {kind}")).or_default() += 1;
        if h.model.session.is_some() && h.model.conn.is_online() {
            *h.stats
                .entry("forced session while online".into())
                .or_default() += 1;
        }
    }
    h.engine.close();
    for (k, v) in h.stats {
        *stats.entry(k).or_default() += v;
    }
    Ok(())
}

static STATS: std::sync::Mutex<BTreeMap<String, u32>> = std::sync::Mutex::new(BTreeMap::new());
const CASES: u32 = 64;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        rng_seed: RngSeed::Fixed(0x0FF1_1E5E_ED00_0001),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_follows_the_model(ops in prop::collection::vec(op(), 40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut stats = BTreeMap::new();
        rt.block_on(run(ops, &mut stats))?;
        let mut all = STATS.lock().unwrap();
        for (k, v) in stats {
            *all.entry(k).or_default() += v;
        }
        let cases = all.entry("cases".into()).or_default();
        *cases += 1;
        if *cases == CASES && std::env::var_os("POS_MODEL_STATS").is_some() {
            eprintln!("{all:#?}");
        }
    }
}
