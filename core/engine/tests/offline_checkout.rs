//! Offline checkout scenarios through the public engine API, on a virtual
//! clock and an in-memory store (SPEC sections 2 and 3).

#![allow(clippy::unwrap_used)]

use pos_test_support as support;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use pos_core::audit::{AuditEntry, AuditKind, OverrideAction};
use pos_core::checkout::{NewOrder, OfflineBehaviour, Route};
use pos_core::clock::Timestamp;
use pos_core::connectivity::ConnectivityState;
use pos_core::ledger::Write;
use pos_core::lifecycle::{
    CustomerContact, DeclineReason, OrderStatus, PaymentEvent, PaymentId, PaymentStatus, StaffId,
};
use pos_core::money::{Currency, Money};
use pos_core::policy::{CurrencyLimits, EntryMode, Network, OfflineReason, Policy, TenderKind};
use pos_core::rules::{ActionOverride, ActionRefused, GuardOutcome, GuardedAction, Refusal};
use pos_core::store::StoreError;
use pos_core::{EngineConfig, PosError, PosEvent};
use support::{listen, processor_key, staff, CardReader, Rig, T0};

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn usd_currency() -> Currency {
    Currency::parse("USD").unwrap()
}

fn usd(cents: i64) -> Money {
    Money::new(cents, usd_currency())
}

fn at(d: Duration) -> Timestamp {
    T0.plus(d)
}

/// `policy` trusting the simulator's reader authority (the test readers').
fn trusting(policy: Policy) -> Policy {
    support::trusting_the_test_reader(policy)
}

fn shopify() -> Policy {
    trusting(Policy::shopify_pos(usd_currency()).with_enabled(true))
}

fn square_reader() -> Policy {
    trusting(Policy::square_reader(usd_currency()).with_enabled(true))
}

fn square_terminal() -> Policy {
    trusting(Policy::square_terminal(usd_currency()).with_enabled(true))
}

/// The profile reader of `model` (serial `SN <model>`), certified by the
/// simulator's authority.
fn reader_of(model: &str) -> Arc<CardReader> {
    Arc::new(CardReader::certified(
        &format!("SN {model}"),
        model,
        processor_key(),
    ))
}

/// An engine on a fresh store at `T0` with `policy` and a permitted
/// cashier; every reader model these tests read cards with was paired
/// before (pairing is online; most tests start with the connectivity
/// unknown). Cards are read by the reader of the first model `policy`
/// accepts offline.
async fn open(policy: Policy) -> Rig {
    // The preset's reader first: the one the sales read with.
    let mut models: Vec<String> = policy.offline_readers.iter().take(1).cloned().collect();
    let presets = [shopify(), square_reader(), square_terminal()];
    let others = presets
        .iter()
        .flat_map(|p| p.offline_readers.iter().cloned());
    for model in others.chain(["Mystery Reader".to_owned()]) {
        if !models.contains(&model) {
            models.push(model);
        }
    }
    let rig = Rig::builder().policy(policy).offline(false);
    models
        .iter()
        .fold(rig, |rig, model| rig.stored_reader(reader_of(model)))
        .open()
        .await
}

/// [`open`], then the network goes down: the outage begins at `T0`.
async fn offline(policy: Policy) -> Rig {
    let rig = open(policy).await;
    rig.network_down().await;
    rig
}

/// The device reboots after being off for `off`, its wall clock a day
/// behind, and the app opens again.
async fn reboot_a_day_behind(rig: &mut Rig, off: Duration) {
    rig.clock.reboot(off);
    rig.clock.set_wall(Timestamp(T0.0 - 86_400_000));
    rig.reopen().await;
}

/// Records `events` for payment `id`, in order; each must be taken.
async fn record(rig: &Rig, id: &PaymentId, events: impl IntoIterator<Item = PaymentEvent>) {
    for event in events {
        rig.engine.record_forwarding(id, event).await.unwrap();
    }
}

/// The processor's approval, its reference `processor_ref`.
fn approval(processor_ref: &str) -> PaymentEvent {
    PaymentEvent::Approved {
        processor_ref: processor_ref.into(),
    }
}

/// An attempt that failed before anything was sent, with no retry time.
fn not_sent() -> PaymentEvent {
    PaymentEvent::ForwardFailed {
        error: pos_core::lifecycle::ForwardErrorKind::NotSent,
        next_retry_at: None,
    }
}

/// Forwarding `id` is refused as a transition its state does not allow.
async fn start_is_refused(rig: &Rig, id: &PaymentId) {
    assert!(matches!(
        rig.engine
            .record_forwarding(id, PaymentEvent::StartForwarding)
            .await,
        Err(PosError::InvalidTransition { .. })
    ));
}

/// What `pick` finds in the audit entries the store holds.
async fn audited<T>(rig: &Rig, pick: impl Fn(AuditEntry) -> Option<T>) -> Vec<T> {
    rig.records()
        .await
        .into_iter()
        .filter_map(|w| match w {
            Write::Audit(e) => pick(e),
            _ => None,
        })
        .collect()
}

fn refusal(r: Result<impl std::fmt::Debug, PosError>) -> Refusal {
    match r {
        Err(PosError::Refused { refusal }) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Waits (without sleeping) for the first event matching `pred`; the
/// minute only bounds a hang.
fn wait_for(rx: &mpsc::Receiver<PosEvent>, pred: impl Fn(&PosEvent) -> bool) -> PosEvent {
    loop {
        let ev = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("event not delivered");
        if pred(&ev) {
            return ev;
        }
    }
}

// ---------------------------------------------------------------------------
// Shopify POS preset: outage, split tender, limits, refusals (R1, R5, R6, R10, R12)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn network_outage_takes_the_engine_offline_with_a_session() {
    let rig = open(shopify()).await;
    assert_eq!(
        rig.network_down().await,
        ConnectivityState::NetworkOutage { since: T0 }
    );
    let s = rig.engine.status().unwrap();
    assert_eq!(s.session_started_at, Some(T0));
    assert_eq!(s.acceptance_closes_at, Some(at(HOUR)));
    assert!(s.offline_enabled);
}

#[tokio::test]
async fn a_100_dollar_order_is_paid_by_two_cards() {
    let rig = offline(shopify()).await;
    let order = rig.order(10_000).await;
    let a = rig.pay(&order, 6_000).await.unwrap();
    let b = rig.pay(&order, 4_000).await.unwrap();
    assert_eq!((a.amount, b.amount), (usd(6_000), usd(4_000)));
    assert_eq!(a.status, PaymentStatus::Pending);
    let view = rig.engine.order(&order).unwrap();
    assert_eq!(view.paid, usd(10_000));
    assert_eq!(view.balance, usd(0));
    assert_eq!(view.status, OrderStatus::PaymentPending);
    assert_eq!(view.tenders.len(), 2);
    let s = rig.engine.status().unwrap();
    assert_eq!(s.pending_offline_payments, 2);
    assert_eq!(s.totals[0].pending_amount, usd(10_000));
}

#[tokio::test]
async fn a_100_dollar_order_is_paid_by_three_cards_and_cash() {
    let rig = offline(shopify()).await;
    let order = rig.order(10_000).await;
    for cents in [3_000, 3_000, 2_500] {
        rig.pay(&order, cents).await.unwrap();
    }
    let view = rig.engine.add_cash(&order, usd(1_500)).await.unwrap();
    assert_eq!(view.balance, usd(0));
    assert_eq!(view.tenders.len(), 4);
    // Cash never counts towards the offline totals.
    assert_eq!(
        rig.engine.status().unwrap().totals[0].pending_amount,
        usd(8_500)
    );
    // Nothing more can be paid on it, by card or cash.
    assert!(matches!(
        rig.pay(&order, 1).await,
        Err(PosError::InvalidInput { .. })
    ));
    assert!(matches!(
        rig.engine.add_cash(&order, usd(1)).await,
        Err(PosError::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn the_card_that_would_push_an_order_over_100_dollars_is_refused_with_figures() {
    let rig = offline(shopify()).await;
    // An order of $150: $100 of it may go on cards offline, the rest in cash.
    let order = rig.order(15_000).await;
    rig.pay(&order, 6_000).await.unwrap();
    let r = refusal(rig.pay(&order, 5_000).await);
    assert_eq!(
        r,
        Refusal::PerOrderLimit {
            limit: usd(10_000),
            current: usd(6_000),
            attempted: usd(5_000)
        }
    );
    assert_eq!(r.rule_id(), "R5");
    rig.pay(&order, 4_000).await.unwrap();
    let r = refusal(rig.pay(&order, 1).await);
    assert_eq!(
        r,
        Refusal::PerOrderLimit {
            limit: usd(10_000),
            current: usd(10_000),
            attempted: usd(1)
        }
    );
    rig.engine.add_cash(&order, usd(5_000)).await.unwrap();
    assert_eq!(rig.engine.order(&order).unwrap().balance, usd(0));
    assert_eq!(rig.engine.list_payments().unwrap().len(), 2);
}

#[tokio::test]
async fn an_over_limit_amount_is_refused_when_the_payment_begins() {
    // checkout.rs promises that card-independent rules (limits, tips) are
    // checked at begin_card_payment, before the card is presented.
    let rig = offline(shopify()).await;
    let order = rig.order(15_000).await;
    let r = rig.sale(10_001).on(&order).begin(&rig.engine).await;
    assert_eq!(
        refusal(r),
        Refusal::PerOrderLimit {
            limit: usd(10_000),
            current: usd(0),
            attempted: usd(10_001)
        }
    );
    let with_tip = rig.sale(1_000).on(&order).tip(usd(100));
    assert_eq!(
        refusal(with_tip.begin(&rig.engine).await),
        Refusal::TipsRefused { tip: usd(100) }
    );
    let gift = rig.sale(1_000).on(&order).tender(TenderKind::GiftCard);
    assert_eq!(
        refusal(gift.begin(&rig.engine).await),
        Refusal::TenderRefused {
            kind: TenderKind::GiftCard
        }
    );
}

#[tokio::test]
async fn a_tip_is_charged_to_the_card_but_never_pays_the_order_itself() {
    // Square presets allow tips: the card is charged amount + tip, the order
    // is paid by the amount only (a negative balance would tell the cashier
    // to hand back change).
    let rig = offline(square_reader()).await;
    let order = rig.order(10_000).await;
    let tipped = rig.sale(6_000).on(&order).tip(usd(500));
    let p = tipped.try_sell(&rig.engine).await.unwrap();
    assert_eq!((p.amount, p.tip), (usd(6_500), Some(usd(500))));
    let view = rig.engine.order(&order).unwrap();
    assert_eq!(view.balance, usd(4_000));
    // The tip counts towards the per-order limit (limits apply to what is charged).
    assert_eq!(
        refusal(rig.pay(&order, 4_000).await),
        Refusal::PerOrderLimit {
            limit: usd(10_000),
            current: usd(6_500),
            attempted: usd(4_000)
        }
    );
    rig.pay(&order, 3_500).await.unwrap();
    let view = rig.engine.add_cash(&order, usd(500)).await.unwrap();
    assert_eq!(view.balance, usd(0));
    let s = rig.engine.status().unwrap();
    assert_eq!(s.totals[0].pending_amount, usd(10_000));
}

#[tokio::test]
async fn a_limit_reached_between_begin_and_confirm_is_refused_at_confirm() {
    let rig = offline(shopify()).await;
    let order = rig.order(15_000).await;
    let (first, second) = (rig.sale(6_000).on(&order), rig.sale(5_000).on(&order));
    let first_id = first.begun(&rig.engine).await;
    let second_id = second.begun(&rig.engine).await;
    first.confirm(&rig.engine, &first_id).await.unwrap();
    let r = refusal(second.confirm(&rig.engine, &second_id).await);

    assert_eq!(
        r,
        Refusal::PerOrderLimit {
            limit: usd(10_000),
            current: usd(6_000),
            attempted: usd(5_000)
        }
    );
    assert_eq!(rig.engine.list_payments().unwrap().len(), 1);
}

#[tokio::test]
async fn the_5000_dollar_device_limit_is_reached_across_orders_then_refused_with_figures() {
    let rig = offline(shopify()).await;
    // 49 orders of $100 and one of $99.99: $4,999.99.
    for _ in 0..49 {
        let order = rig.order(10_000).await;
        rig.pay(&order, 6_000).await.unwrap();
        rig.pay(&order, 4_000).await.unwrap();
    }
    let order = rig.order(9_999).await;
    rig.pay(&order, 9_999).await.unwrap();
    assert_eq!(
        rig.engine.status().unwrap().totals[0].pending_amount,
        usd(499_999)
    );
    // One cent more reaches the limit exactly: allowed.
    let order = rig.order(10_000).await;
    rig.pay(&order, 1).await.unwrap();
    // The next payment, on a fresh order, is refused with the figures.
    let r = refusal(rig.pay(&order, 2_000).await);
    assert_eq!(
        r,
        Refusal::DeviceAmountLimit {
            limit: usd(500_000),
            current: usd(500_000),
            attempted: usd(2_000)
        }
    );
    assert_eq!(r.rule_id(), "R6");
    let other = rig.order(500).await;
    let r = refusal(rig.pay(&other, 500).await);
    assert_eq!(
        r,
        Refusal::DeviceAmountLimit {
            limit: usd(500_000),
            current: usd(500_000),
            attempted: usd(500)
        }
    );
    let s = rig.engine.status().unwrap();
    assert_eq!(s.pending_offline_payments, 100);
    assert_eq!(s.totals[0].pending_amount, usd(500_000));
}

#[tokio::test]
async fn forwarding_frees_room_under_the_device_limit() {
    let policy = shopify().with_limits(
        usd_currency(),
        CurrencyLimits::per_order(usd(10_000)).with_device_amount(usd(15_000)),
    );
    let rig = offline(policy).await;
    let a = rig.order(10_000).await;
    let pa = rig.pay(&a, 10_000).await.unwrap();
    let b = rig.order(10_000).await;
    assert_eq!(
        refusal(rig.pay(&b, 10_000).await),
        Refusal::DeviceAmountLimit {
            limit: usd(15_000),
            current: usd(10_000),
            attempted: usd(10_000)
        }
    );
    rig.engine
        .record_forwarding(&pa.id, PaymentEvent::StartForwarding)
        .await
        .unwrap();
    // In flight: still unsettled, still counted.
    assert!(refusal(rig.pay(&b, 10_000).await).rule_id() == "R6");
    rig.engine
        .record_forwarding(
            &pa.id,
            PaymentEvent::Approved {
                processor_ref: "ch_1".into(),
            },
        )
        .await
        .unwrap();
    rig.pay(&b, 10_000).await.unwrap();
}

#[tokio::test]
async fn swipe_is_refused_offline_by_the_shopify_preset() {
    let rig = offline(shopify()).await;
    let order = rig.order(1_000).await;
    for (mode, rule) in [(EntryMode::Swipe, "R10"), (EntryMode::Manual, "R9")] {
        let read = rig.sale(1_000).on(&order).entry_mode(mode);
        let r = refusal(read.try_sell(&rig.engine).await);
        assert_eq!(r, Refusal::EntryModeRefused { mode });
        assert_eq!(r.rule_id(), rule);
    }

    assert!(rig.engine.list_payments().unwrap().is_empty());
    // Contactless and chip are fine.
    for (mode, network) in [
        (EntryMode::Contactless, Network::Visa),
        (EntryMode::Chip, Network::Mastercard),
    ] {
        let read = rig.sale(500).on(&order).entry_mode(mode).network(network);
        read.try_sell(&rig.engine).await.unwrap();
    }
    // A reader that cannot work offline is refused (R11).
    let order = rig.order(1_000).await;
    let mystery = rig
        .sale(1_000)
        .on(&order)
        .reader(reader_of("Mystery Reader"));
    let r = refusal(mystery.try_sell(&rig.engine).await);
    assert_eq!(r.rule_id(), "R11");
}

#[tokio::test]
async fn a_staff_member_without_the_offline_permission_is_refused() {
    let rig = open(shopify()).await;
    rig.engine.sign_in(staff("trainee-7", false)).unwrap();
    rig.network_down().await;
    let order = rig.order(1_000).await;
    let r = refusal(rig.pay(&order, 1_000).await);
    assert_eq!(r, Refusal::StaffNotPermitted);
    assert_eq!(r.rule_id(), "R12");
    assert!(rig.engine.list_payments().unwrap().is_empty());
    // A payment begun by a permitted cashier and confirmed after a
    // trainee signed in is refused too, and the refusal is in the audit
    // journal, attributed to the trainee.
    rig.engine.sign_in(staff("manager-1", true)).unwrap();
    let sale = rig.sale(1_000).on(&order);
    let id = sale.begun(&rig.engine).await;
    rig.engine.sign_in(staff("trainee-7", false)).unwrap();
    assert_eq!(
        refusal(sale.confirm(&rig.engine, &id).await),
        Refusal::StaffNotPermitted
    );
    let refused = audited(&rig, |e| match e.kind {
        AuditKind::OfflinePaymentRefused { rule, amount } => Some((e.actor, rule, amount)),
        _ => None,
    })
    .await;

    assert_eq!(
        refused,
        vec![(
            Some(StaffId::parse("trainee-7").unwrap()),
            "R12".to_owned(),
            usd(1_000)
        )]
    );
    rig.engine.sign_in(staff("manager-1", true)).unwrap();
    rig.pay(&order, 1_000).await.unwrap();
}

#[tokio::test]
async fn the_phone_profile_accepts_offline_for_one_hour_only() {
    let rig = offline(shopify()).await;
    rig.clock.advance(HOUR - Duration::from_millis(1));
    let order = rig.order(2_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(Duration::from_millis(1));
    let r = refusal(rig.pay(&order, 1_000).await);
    assert_eq!(
        r,
        Refusal::AcceptanceWindowClosed {
            closes_at: at(HOUR),
            now: at(HOUR)
        }
    );
    assert_eq!(r.rule_id(), "R7");
    rig.clock.advance(5 * HOUR);
    assert!(matches!(
        refusal(rig.pay(&order, 1_000).await),
        Refusal::AcceptanceWindowClosed { .. }
    ));
}

// ---------------------------------------------------------------------------
// Forwarding deadline (R8) and expiry
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_phone_reader_deadline_is_24h_after_the_connection_was_lost() {
    let rig = offline(square_reader()).await;
    rig.clock.advance(40 * MIN);
    let order = rig.order(2_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.taken_at, at(40 * MIN));
    assert_eq!(p.deadline, at(24 * HOUR));
    assert_eq!(p.time_left_ms, (24 * HOUR - 40 * MIN).as_millis() as i64);
    rig.clock.advance(10 * MIN);
    let q = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(q.deadline, at(24 * HOUR));
    assert_eq!(
        rig.engine.status().unwrap().next_deadline,
        Some(at(24 * HOUR))
    );
}

#[tokio::test]
async fn the_terminal_deadline_is_24h_after_the_first_offline_payment() {
    let rig = offline(square_terminal()).await;
    rig.clock.advance(2 * HOUR);
    let order = rig.order(2_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.deadline, at(26 * HOUR));
    // A terminal accepts for 24 h; a later payment shares the first one's deadline.
    rig.clock.advance(3 * HOUR);
    let q = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(q.deadline, at(26 * HOUR));
    let s = rig.engine.status().unwrap();
    assert_eq!(s.acceptance_closes_at, Some(at(24 * HOUR)));
    assert_eq!(s.next_deadline, Some(at(26 * HOUR)));
}

#[tokio::test]
async fn tick_after_the_deadline_expires_pending_payments_and_counts_them_lost() {
    let rig = open(square_reader()).await;
    let (_sub, rx) = listen(&rig.engine);
    rig.network_down().await;
    let order = rig.order(3_000).await;
    let pending = rig.pay(&order, 1_000).await.unwrap();
    let failed = rig.pay(&order, 1_200).await.unwrap();
    let in_flight = rig.pay(&order, 800).await.unwrap();
    record(
        &rig,
        &failed.id,
        [PaymentEvent::StartForwarding, not_sent()],
    )
    .await;
    record(&rig, &in_flight.id, [PaymentEvent::StartForwarding]).await;

    // Just before the deadline nothing expires.
    rig.clock.advance(24 * HOUR - Duration::from_millis(1));
    assert!(rig.engine.tick().await.unwrap().expired.is_empty());
    rig.clock.advance(Duration::from_millis(1));
    // At the deadline a forward is refused even before tick runs (R8).
    start_is_refused(&rig, &pending.id).await;
    let mut expired = rig.engine.tick().await.unwrap().expired;
    expired.sort();
    let mut want = vec![pending.id.clone(), failed.id.clone()];
    want.sort();
    assert_eq!(expired, want, "the payment in flight waits for its answer");

    let mut events = vec![
        wait_for(&rx, |e| matches!(e, PosEvent::PaymentExpired { .. })),
        wait_for(&rx, |e| matches!(e, PosEvent::PaymentExpired { .. })),
    ];
    events.sort_by_key(|e| match e {
        PosEvent::PaymentExpired { amount, .. } => amount.minor_units(),
        _ => 0,
    });
    assert_eq!(
        events,
        vec![
            PosEvent::PaymentExpired {
                payment_id: pending.id.clone(),
                order_id: order.clone(),
                amount: usd(1_000)
            },
            PosEvent::PaymentExpired {
                payment_id: failed.id.clone(),
                order_id: order.clone(),
                amount: usd(1_200)
            },
        ]
    );

    let s = rig.engine.status().unwrap();
    let t = &s.totals[0];
    assert_eq!((t.expired_count, t.expired_amount), (2, usd(2_200)));
    assert_eq!((t.pending_count, t.pending_amount), (1, usd(800)));
    assert_eq!(
        rig.engine.order(&order).unwrap().status,
        OrderStatus::Expired
    );
    for id in [&pending.id, &failed.id] {
        start_is_refused(&rig, id).await;
    }
    // A second tick expires nothing more; the late answer of the one in
    // flight still decides it.
    assert!(rig.engine.tick().await.unwrap().expired.is_empty());
    record(&rig, &in_flight.id, [approval("ch_9")]).await;
    let t = rig.engine.status().unwrap().totals[0].clone();
    assert_eq!(
        (t.approved_count, t.expired_count, t.pending_count),
        (1, 2, 0)
    );
    assert!(rig.engine.due_for_forwarding(10).unwrap().is_empty());
}

#[tokio::test]
async fn an_expiry_recorded_by_the_forwarder_is_reported_like_one_found_by_tick() {
    let rig = open(square_reader()).await;
    let (_sub, rx) = listen(&rig.engine);
    rig.network_down().await;
    let order = rig.order(1_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(24 * HOUR);
    let v = rig
        .engine
        .record_forwarding(&p.id, PaymentEvent::DeadlineReached)
        .await
        .unwrap();
    assert_eq!(v.status, PaymentStatus::Expired);
    let ev = wait_for(&rx, |e| matches!(e, PosEvent::PaymentExpired { .. }));
    assert_eq!(
        ev,
        PosEvent::PaymentExpired {
            payment_id: p.id.clone(),
            order_id: order,
            amount: usd(1_000)
        }
    );
    let expired = audited(&rig, |e| match e.kind {
        AuditKind::PaymentExpired {
            payment_id, amount, ..
        } => Some((payment_id, amount)),
        _ => None,
    })
    .await;

    assert_eq!(expired, vec![(p.id.clone(), usd(1_000))]);
    assert_eq!(
        rig.engine.status().unwrap().totals[0].expired_amount,
        usd(1_000)
    );
}

// ---------------------------------------------------------------------------
// Clock safety (B13)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn setting_the_wall_clock_back_never_extends_the_window_or_the_deadline() {
    let rig = offline(square_reader()).await;
    rig.clock.advance(30 * MIN);
    rig.clock.set_wall(Timestamp(T0.0 - 10 * 3_600_000));
    let order = rig.order(3_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.taken_at, at(30 * MIN));
    assert_eq!(p.deadline, at(24 * HOUR));
    rig.clock.advance(30 * MIN);
    assert!(matches!(
        refusal(rig.pay(&order, 1_000).await),
        Refusal::AcceptanceWindowClosed { .. }
    ));
    // Setting it forward does not hasten anything either.
    rig.clock.set_wall(at(100 * HOUR));
    assert!(rig.engine.tick().await.unwrap().expired.is_empty());
    rig.clock.advance(23 * HOUR);
    assert_eq!(rig.engine.tick().await.unwrap().expired, vec![p.id.clone()]);
}

#[tokio::test]
async fn a_reboot_with_the_wall_clock_set_back_never_extends_the_window_or_the_deadline() {
    let mut rig = offline(square_reader()).await;
    rig.clock.advance(20 * MIN);
    let order = rig.order(3_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    reboot_a_day_behind(&mut rig, Duration::from_secs(60)).await;
    // The payment survived, with its deadline.
    let listed = rig.engine.list_payments().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].deadline, at(24 * HOUR));
    // Still offline after the restart: the session is the one begun at T0.
    rig.network_down().await;
    let s = rig.engine.status().unwrap();
    assert_eq!(s.session_started_at, Some(T0));
    assert_eq!(s.acceptance_closes_at, Some(at(HOUR)));
    let q = rig.pay(&order, 1_000).await.unwrap();
    assert!(q.taken_at >= p.taken_at);
    assert_eq!(q.deadline, at(24 * HOUR));
    rig.clock.advance(HOUR);
    assert!(matches!(
        refusal(rig.pay(&order, 1_000).await),
        Refusal::AcceptanceWindowClosed { .. }
    ));
    rig.clock.advance(23 * HOUR);
    assert_eq!(rig.engine.tick().await.unwrap().expired.len(), 2);
}

#[tokio::test]
async fn a_reboot_with_the_wall_clock_set_back_after_audited_steps_keeps_the_engine_usable() {
    // Forwarding steps are audited at the trusted time without moving the
    // persisted clock floor. After a reboot with the wall clock set back, the
    // trusted time must not restart below what the audit journal already
    // holds: an entry dated earlier than the last one is rejected, which
    // would fail every audited operation and make the store unloadable.
    let mut rig = offline(square_reader()).await;
    let order = rig.order(3_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(30 * MIN);
    record(&rig, &p.id, [PaymentEvent::StartForwarding, not_sent()]).await;
    reboot_a_day_behind(&mut rig, Duration::ZERO).await;
    rig.network_down().await;
    let q = rig.pay(&order, 1_000).await.unwrap();
    assert!(
        q.taken_at >= at(30 * MIN),
        "trusted time went back to {:?}",
        q.taken_at
    );
    record(&rig, &p.id, [PaymentEvent::StartForwarding]).await;
    // And the store still loads.
    rig.reopen().await;
    assert_eq!(rig.engine.list_payments().unwrap().len(), 2);
}

#[tokio::test]
async fn a_reboot_never_extends_the_terminal_deadline() {
    let mut rig = offline(square_terminal()).await;
    rig.clock.advance(HOUR);
    let order = rig.order(3_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.deadline, at(25 * HOUR));
    reboot_a_day_behind(&mut rig, 10 * MIN).await;
    rig.network_down().await;
    let q = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(q.deadline, at(25 * HOUR));
}

#[tokio::test]
async fn time_that_passed_before_a_reboot_is_not_given_back_by_setting_the_wall_clock_back() {
    // B13: the trusted time must survive a reboot with the wall clock set
    // back, at least up to the engine's last periodic tick.
    let mut rig = offline(square_reader()).await;
    let order = rig.order(3_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(50 * MIN);
    rig.engine.tick().await.unwrap();
    reboot_a_day_behind(&mut rig, Duration::ZERO).await;
    rig.network_down().await;
    // 50 minutes of the hour were used before the reboot: 10 are left.
    rig.clock.advance(10 * MIN);
    assert!(matches!(
        refusal(rig.pay(&order, 1_000).await),
        Refusal::AcceptanceWindowClosed { .. }
    ));
}

#[tokio::test]
async fn an_attempt_in_flight_when_the_app_died_is_retried_after_the_restart() {
    // lifecycle.rs: `Forwarding` is made durable before the request leaves,
    // "so that a crash during the attempt is seen at the next start: the
    // engine then records ForwardFailed { NoAnswer } and retries with the
    // same id". Without it the payment is neither forwarded nor expired, and
    // blocks logout for ever.
    let mut rig = offline(square_reader()).await;
    let order = rig.order(1_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    rig.online().await;
    record(&rig, &p.id, [PaymentEvent::StartForwarding]).await;
    // The app is killed during the attempt.
    rig.clock.advance(MIN);
    rig.reopen().await;
    let listed = rig.engine.list_payments().unwrap();
    assert_eq!(listed[0].status, PaymentStatus::FailedToForward);
    assert!(matches!(
        listed[0].state,
        pos_core::lifecycle::PaymentState::FailedToForward {
            attempts: 1,
            last_error: pos_core::lifecycle::ForwardErrorKind::NoAnswer,
            maybe_received: true,
            ..
        }
    ));
    assert_eq!(
        rig.engine.due_for_forwarding(10).unwrap(),
        vec![p.id.clone()]
    );
    // The retry uses the same id; the processor's answer settles it.
    record(
        &rig,
        &p.id,
        [PaymentEvent::StartForwarding, approval("ch_1")],
    )
    .await;
    // Had it never been answered, the processor may hold it: the deadline
    // makes its outcome unknown (to be asked about), never lost.
    let q = {
        rig.network_down().await;
        let o = rig.order(1_000).await;
        rig.pay(&o, 1_000).await.unwrap()
    };
    record(&rig, &q.id, [PaymentEvent::StartForwarding]).await;
    rig.reopen().await;
    rig.clock.advance(25 * HOUR);
    let t = rig.engine.tick().await.unwrap();
    assert!(t.expired.is_empty(), "{t:?}");
    assert_eq!(t.outcome_unknown, vec![q.id.clone()]);
}

#[tokio::test]
async fn payments_survive_a_restart_and_are_forwarded_after_it() {
    let mut rig = offline(shopify()).await;
    let order = rig.order(3_000).await;
    let p = rig.pay(&order, 3_000).await.unwrap();
    let before = rig.engine.list_payments().unwrap();
    rig.reopen().await;
    assert_eq!(rig.engine.list_payments().unwrap(), before);
    assert_eq!(
        rig.engine.status().unwrap().connectivity,
        ConnectivityState::Unknown
    );
    rig.online().await;
    assert_eq!(
        rig.engine.due_for_forwarding(10).unwrap(),
        vec![p.id.clone()]
    );
    record(
        &rig,
        &p.id,
        [PaymentEvent::StartForwarding, approval("ch_1")],
    )
    .await;
    assert_eq!(rig.engine.order(&order).unwrap().status, OrderStatus::Paid);
}

// ---------------------------------------------------------------------------
// Sessions across reconnections
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_new_outage_after_recovery_opens_a_new_window() {
    let rig = offline(square_reader()).await;
    let order = rig.order(3_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(2 * HOUR);
    rig.online().await;
    assert_eq!(rig.engine.status().unwrap().session_started_at, None);
    rig.clock.advance(HOUR);
    rig.network_down().await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.deadline, at(27 * HOUR));
}

#[tokio::test]
async fn recovery_after_a_restart_ends_the_offline_session() {
    // Restarted during an outage; the service answers healthy at the next
    // start: the outage is over, and the next one gets its own window.
    let mut rig = offline(square_reader()).await;
    let order = rig.order(3_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(10 * MIN);
    rig.reopen().await;
    rig.online().await;
    assert_eq!(
        rig.engine.status().unwrap().session_started_at,
        None,
        "online: no offline session"
    );
    rig.clock.advance(3 * HOUR);
    let down = rig.network_down().await;
    assert_eq!(down.since(), Some(at(3 * HOUR + 10 * MIN)));
    assert_eq!(
        rig.engine.status().unwrap().session_started_at,
        down.since()
    );
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.deadline, at(27 * HOUR + 10 * MIN));
}

#[tokio::test]
async fn a_forced_offline_payment_does_not_shorten_the_next_outage() {
    let mut policy = square_reader();
    policy.outage.offline_when_forced = true;
    let rig = open(policy).await;
    rig.online().await;
    let order = rig.order(3_000).await;
    let forced = rig.sale(1_000).on(&order);
    let forced = forced.behaviour(OfflineBehaviour::ForceOffline);
    forced.try_sell(&rig.engine).await.unwrap();
    rig.clock.advance(2 * HOUR);

    let down = rig.network_down().await;
    assert_eq!(
        rig.engine.status().unwrap().session_started_at,
        down.since(),
        "the connection was lost now"
    );
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.deadline, at(26 * HOUR));
}

#[tokio::test]
async fn forced_offline_while_online_starts_a_new_session_once_the_window_closed() {
    let mut policy = square_reader();
    policy.outage.offline_when_forced = true;
    let rig = open(policy).await;
    rig.online().await;
    let order = rig.order(3_000).await;
    let forced = rig.sale(1_000).on(&order);
    let forced = forced.behaviour(OfflineBehaviour::ForceOffline);
    let first = forced.try_sell(&rig.engine).await.unwrap();
    // Past the 1 h window of the phone profile: the next forced payment is not
    // stuck behind the closed window, it runs in a new session of its own.
    rig.clock.advance(2 * HOUR);
    let second = forced.try_sell(&rig.engine).await.unwrap();
    assert_eq!(first.deadline, at(24 * HOUR));
    assert_eq!(second.deadline, at(26 * HOUR));
    assert_eq!(rig.engine.list_payments().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------
// B1: per-payment offline behaviour
// ---------------------------------------------------------------------------

#[tokio::test]
async fn require_online_is_refused_while_offline() {
    let rig = offline(shopify()).await;
    let order = rig.order(1_000).await;
    let online_only = rig.sale(1_000).on(&order);
    let online_only = online_only.behaviour(OfflineBehaviour::RequireOnline);
    let r = online_only.begin(&rig.engine).await;
    assert_eq!(r, Err(PosError::OnlineRequired));

    assert!(rig.engine.list_payments().unwrap().is_empty());
}

#[tokio::test]
async fn prefer_online_decided_offline_then_reconnected_before_confirm_changes_route_and_stores_nothing(
) {
    let rig = offline(shopify()).await;
    let order = rig.order(1_000).await;
    let sale = rig.sale(1_000).on(&order);
    let d = sale.begin(&rig.engine).await.unwrap();
    assert_eq!(
        d.route,
        Route::Offline {
            reason: OfflineReason::NetworkOutage
        }
    );
    let before = rig.store.len();
    rig.online().await;
    let records_after_reconnect = rig.store.len();
    assert!(records_after_reconnect > before);
    let r = sale.confirm(&rig.engine, &d.payment_id).await;
    assert_eq!(
        r,
        Err(PosError::RouteChanged {
            decided: Route::Offline {
                reason: OfflineReason::NetworkOutage
            },
            now: Route::Online
        })
    );
    assert!(rig.engine.list_payments().unwrap().is_empty());
    assert_eq!(rig.store.len(), records_after_reconnect, "nothing stored");
    assert_eq!(rig.engine.order(&order).unwrap().balance, usd(1_000));
    assert_eq!(rig.engine.status().unwrap().pending_offline_payments, 0);
    // The begun payment is gone: confirming it again finds nothing.
    assert!(matches!(
        sale.confirm(&rig.engine, &d.payment_id).await,
        Err(PosError::NotFound { .. })
    ));
}

#[tokio::test]
async fn force_offline_works_while_online() {
    let mut policy = shopify();
    policy.outage.offline_when_forced = true;
    let rig = open(policy).await;
    rig.online().await;
    let order = rig.order(1_000).await;
    let forced = rig.sale(1_000).on(&order);
    let forced = forced.behaviour(OfflineBehaviour::ForceOffline);
    let d = forced.begin(&rig.engine).await.unwrap();
    assert_eq!(
        d.route,
        Route::Offline {
            reason: OfflineReason::ForcedOffline
        }
    );
    let p = forced.confirm(&rig.engine, &d.payment_id).await.unwrap();
    assert_eq!(p.status, PaymentStatus::Pending);
    assert_eq!(p.deadline, p.taken_at.plus(24 * HOUR));
    // The preset itself does not allow forcing (B6).
    let rig = open(shopify()).await;
    rig.online().await;
    let order = rig.order(1_000).await;
    let forced = rig.sale(1_000).on(&order);
    let forced = forced.behaviour(OfflineBehaviour::ForceOffline);
    assert_eq!(
        refusal(forced.begin(&rig.engine).await),
        Refusal::OutageCauseNotAllowed {
            reason: OfflineReason::ForcedOffline
        }
    );
}

#[tokio::test]
async fn prefer_online_while_online_is_not_taken_offline() {
    let rig = open(shopify()).await;
    rig.online().await;
    let order = rig.order(1_000).await;
    let sale = rig.sale(1_000).on(&order);
    let d = sale.begin(&rig.engine).await.unwrap();
    assert_eq!(d.route, Route::Online);
    assert_eq!(
        sale.confirm(&rig.engine, &d.payment_id).await,
        Err(PosError::OnlineUnavailable)
    );
    assert!(rig.engine.list_payments().unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// B2: exactly once
// ---------------------------------------------------------------------------

#[tokio::test]
async fn confirming_twice_returns_the_same_payment_not_two() {
    let rig = offline(shopify()).await;
    let order = rig.order(2_000).await;
    let sale = rig.sale(1_000).on(&order);
    let id = sale.begun(&rig.engine).await;
    let first = sale.confirm(&rig.engine, &id).await.unwrap();
    let records = rig.store.len();
    let again = sale.confirm(&rig.engine, &id).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(rig.engine.list_payments().unwrap().len(), 1);
    assert_eq!(rig.engine.order(&order).unwrap().paid, usd(1_000));
    assert_eq!(rig.store.len(), records);
    assert_eq!(
        rig.engine.status().unwrap().totals[0].pending_amount,
        usd(1_000)
    );
}

/// A negative tip, or one in another currency than the payment, is malformed
/// input on every route: refused with `InvalidInput` when the payment
/// begins, and nothing is begun or stored.
#[tokio::test]
async fn a_negative_or_foreign_currency_tip_is_invalid_input_on_every_route() {
    let rig = open(shopify()).await;
    let order = rig.order(2_000).await;
    let bad_tips = [usd(-1), Money::new(100, Currency::parse("EUR").unwrap())];
    let mut routes = Vec::new();
    for offline in [false, true] {
        if offline {
            rig.network_down().await;
        }
        for tip in bad_tips {
            for behaviour in [
                OfflineBehaviour::PreferOnline,
                OfflineBehaviour::ForceOffline,
            ] {
                let id = format!("tip-{offline}-{}", routes.len());
                let sale = rig.sale(1_000).on(&order).behaviour(behaviour);
                let sale = sale.payment_id(id.clone()).tip(tip);
                let r = sale.begin(&rig.engine).await;
                assert!(
                    matches!(r, Err(PosError::InvalidInput { .. })),
                    "tip {tip} ({behaviour:?}, offline {offline}): {r:?}"
                );
                // Nothing was begun: confirming finds no payment.
                let id = PaymentId::parse(&id).unwrap();
                assert!(matches!(
                    sale.confirm(&rig.engine, &id).await,
                    Err(PosError::NotFound { .. })
                ));
                routes.push(behaviour);
            }
        }
    }
    assert!(rig.engine.list_payments().unwrap().is_empty());
    // A zero tip is no tip, and a positive one in the payment's currency is
    // the policy's to accept or refuse.
    let no_tip = rig.sale(1_000).on(&order).tip(usd(0));
    no_tip.begin(&rig.engine).await.unwrap();
}

#[tokio::test]
async fn an_app_supplied_payment_id_reused_is_a_duplicate() {
    let rig = offline(shopify()).await;
    let order = rig.order(2_000).await;
    let keyed = rig.sale(1_000).on(&order).payment_id("app-key-1");
    let d = keyed.begin(&rig.engine).await.unwrap();
    assert_eq!(d.payment_id, PaymentId::parse("app-key-1").unwrap());
    keyed.confirm(&rig.engine, &d.payment_id).await.unwrap();
    let other = rig.order(500).await;
    let elsewhere = rig.sale(500).on(&other).payment_id("app-key-1");
    for again in [keyed, elsewhere] {
        assert_eq!(
            again.begin(&rig.engine).await,
            Err(PosError::DuplicatePayment {
                payment_id: "app-key-1".into()
            })
        );
    }

    assert_eq!(rig.engine.list_payments().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// R4: turning offline payments off
// ---------------------------------------------------------------------------

#[tokio::test]
async fn turning_the_policy_off_keeps_stored_payments_and_refuses_new_ones() {
    let rig = offline(shopify()).await;
    let order = rig.order(5_000).await;
    rig.pay(&order, 2_000).await.unwrap();
    rig.pay(&order, 1_000).await.unwrap();
    let before = rig.engine.list_payments().unwrap();
    let status_before = rig.engine.status().unwrap();
    rig.engine
        .set_policy(shopify().with_enabled(false))
        .await
        .unwrap();
    assert_eq!(rig.engine.list_payments().unwrap(), before);
    let status_after = rig.engine.status().unwrap();
    assert!(!status_after.offline_enabled);
    assert_eq!(status_after.totals, status_before.totals);
    assert_eq!(
        refusal(rig.pay(&order, 1_000).await),
        Refusal::OfflineDisabled
    );
    assert_eq!(Refusal::OfflineDisabled.rule_id(), "R4");
    // Stored payments are still forwarded.
    assert_eq!(rig.engine.due_for_forwarding(10).unwrap().len(), 2);
}

// ---------------------------------------------------------------------------
// R13: guarded actions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn logout_is_guarded_while_payments_are_pending() {
    let rig = offline(shopify()).await;
    let order = rig.order(5_000).await;
    let a = rig.pay(&order, 2_000).await.unwrap();
    let b = rig.pay(&order, 1_500).await.unwrap();

    let r = rig.engine.guarded_action(GuardedAction::LogOut, None).await;
    assert_eq!(
        r,
        Err(PosError::ActionRefused {
            refusal: ActionRefused::PaymentsPending {
                action: GuardedAction::LogOut,
                count: 2,
                at_risk: vec![usd(3_500)]
            }
        })
    );
    assert_eq!(
        rig.engine.status().unwrap().signed_in,
        Some(StaffId::parse("cashier-1").unwrap())
    );

    // An override with other figures is refused.
    let wrong = ActionOverride {
        staff_id: "manager-1".into(),
        reason: "end of shift".into(),
        acknowledged_at_risk: vec![usd(2_000)],
    };
    assert!(matches!(
        rig.engine
            .guarded_action(GuardedAction::LogOut, Some(wrong))
            .await,
        Err(PosError::ActionRefused {
            refusal: ActionRefused::OverrideFiguresMismatch { .. }
        })
    ));

    let ok = ActionOverride {
        staff_id: "manager-1".into(),
        reason: "end of shift".into(),
        acknowledged_at_risk: vec![usd(3_500)],
    };
    let outcome = rig
        .engine
        .guarded_action(GuardedAction::LogOut, Some(ok))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        GuardOutcome::Overridden {
            action: GuardedAction::LogOut,
            count: 2,
            at_risk: vec![usd(3_500)]
        }
    );
    let overrides = audited(&rig, |e| match e.kind {
        AuditKind::Override {
            action,
            money_at_risk,
            reason,
        } => Some((e.actor, action, money_at_risk, reason)),
        _ => None,
    })
    .await;
    assert_eq!(
        overrides,
        vec![(
            Some(StaffId::parse("manager-1").unwrap()),
            OverrideAction::Logout,
            vec![usd(3_500)],
            "end of shift".to_owned()
        )]
    );
    assert_eq!(rig.engine.status().unwrap().signed_in, None);
    // Stored payments survive the logout.
    assert_eq!(rig.engine.list_payments().unwrap().len(), 2);
    assert!(matches!(
        rig.engine
            .create_order(NewOrder {
                order_id: None,
                total: usd(1),
                contact: None
            })
            .await,
        Err(PosError::NotSignedIn)
    ));

    // Next sign-in: forward everything, then logging out is simply allowed.
    rig.engine.sign_in(staff("cashier-2", true)).unwrap();
    rig.online().await;
    for p in [&a, &b] {
        let charged = approval(&format!("ch_{}", p.id));
        record(&rig, &p.id, [PaymentEvent::StartForwarding, charged]).await;
    }
    assert_eq!(
        rig.engine.order(&order).unwrap().status,
        OrderStatus::PaymentPending,
        "balance unpaid, cards approved"
    );
    let audit_count = rig.store.len();
    assert_eq!(
        rig.engine.guarded_action(GuardedAction::LogOut, None).await,
        Ok(GuardOutcome::Allowed)
    );
    assert_eq!(rig.store.len(), audit_count, "no override, nothing to log");
    assert_eq!(rig.engine.status().unwrap().signed_in, None);
}

#[tokio::test]
async fn other_guarded_actions_are_refused_while_pending() {
    let rig = offline(square_reader()).await;
    let order = rig.order(1_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    for action in [
        GuardedAction::SwitchLocation,
        GuardedAction::ResetStore,
        GuardedAction::RemoveDevice,
    ] {
        let r = rig.engine.guarded_action(action, None).await;
        assert!(
            matches!(
                r,
                Err(PosError::ActionRefused {
                    refusal: ActionRefused::PaymentsPending { .. }
                })
            ),
            "{r:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Declines (R15, R17, B9)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_decline_raises_an_event_with_the_contact_and_the_amount_due() {
    let rig = open(shopify()).await;
    let (_sub, rx) = listen(&rig.engine);
    rig.network_down().await;
    let contact =
        CustomerContact::parse(Some("jane.doe@example.com"), Some("+33612345678")).unwrap();
    let first_card = rig.sale(5_000).order_id("ord-42").total(usd(7_500));
    let declined = first_card
        .contact(Some(contact.clone()))
        .try_sell(&rig.engine)
        .await
        .unwrap();
    let order = declined.order_id.clone();
    let approved = rig.pay(&order, 2_500).await.unwrap();
    rig.online().await;
    for p in [&declined, &approved] {
        record(&rig, &p.id, [PaymentEvent::StartForwarding]).await;
    }
    record(&rig, &approved.id, [approval("ch_ok")]).await;

    let v = rig
        .engine
        .record_forwarding(
            &declined.id,
            PaymentEvent::Declined {
                reason: DeclineReason::InsufficientFunds,
            },
        )
        .await
        .unwrap();
    assert_eq!(v.status, PaymentStatus::Declined);

    let ev = wait_for(&rx, |e| matches!(e, PosEvent::PaymentDeclined(_)));
    let PosEvent::PaymentDeclined(notice) = ev else {
        unreachable!()
    };
    assert_eq!(notice.payment_id, declined.id);
    assert_eq!(notice.order_id, order);
    assert_eq!(notice.amount_due, usd(5_000));
    assert_eq!(notice.reason, DeclineReason::InsufficientFunds);
    assert_eq!(notice.contact, Some(contact));
    assert_eq!(
        rig.engine.order(&order).unwrap().status,
        OrderStatus::CardDeclined
    );
    let t = rig.engine.status().unwrap().totals[0].clone();
    assert_eq!((t.declined_count, t.declined_amount), (1, usd(5_000)));
    assert_eq!((t.approved_count, t.approved_amount), (1, usd(2_500)));
    // A decline is final.
    assert!(matches!(
        rig.engine
            .record_forwarding(&declined.id, approval("x"))
            .await,
        Err(PosError::InvalidTransition { .. })
    ));
}

// ---------------------------------------------------------------------------
// Storage failures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_store_write_during_confirm_changes_nothing() {
    let rig = offline(shopify()).await;
    let order = rig.order(5_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    let sale = rig.sale(2_000).on(&order);
    let id = sale.begun(&rig.engine).await;
    let list = rig.engine.list_payments().unwrap();
    let status = rig.engine.status().unwrap();
    let records = rig.records().await;
    let order_view = rig.engine.order(&order).unwrap();

    rig.store.fail_next_write(StoreError::DiskFull);
    let r = sale.confirm(&rig.engine, &id).await;
    assert_eq!(
        r,
        Err(PosError::Storage {
            reason: "the device is out of storage space".into()
        })
    );
    assert_eq!(rig.engine.list_payments().unwrap(), list);
    assert_eq!(rig.engine.status().unwrap(), status);
    assert_eq!(rig.records().await, records, "no record, no audit entry");
    assert_eq!(rig.engine.order(&order).unwrap(), order_view);

    // The same payment can be confirmed once the disk has room.
    let p = sale.confirm(&rig.engine, &id).await.unwrap();
    assert_eq!(p.id, id);
    assert_eq!(rig.engine.list_payments().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_store_write_during_forwarding_or_tick_changes_nothing() {
    let rig = offline(square_reader()).await;
    let order = rig.order(5_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    rig.store.fail_next_write(StoreError::Io("fsync".into()));
    assert!(matches!(
        rig.engine
            .record_forwarding(&p.id, PaymentEvent::StartForwarding)
            .await,
        Err(PosError::Storage { .. })
    ));
    assert_eq!(
        rig.engine.list_payments().unwrap()[0].status,
        PaymentStatus::Pending
    );
    rig.clock.advance(25 * HOUR);
    let status = rig.engine.status().unwrap();
    rig.store.fail_next_write(StoreError::DiskFull);
    assert!(matches!(
        rig.engine.tick().await,
        Err(PosError::Storage { .. })
    ));
    assert_eq!(rig.engine.status().unwrap(), status);
    assert_eq!(rig.engine.tick().await.unwrap().expired, vec![p.id]);
}

#[tokio::test]
async fn a_locked_store_is_reported_typed() {
    let rig = offline(shopify()).await;
    let order = rig.order(5_000).await;
    rig.store.fail_always(StoreError::Locked);
    assert_eq!(rig.pay(&order, 1_000).await, Err(PosError::StoreLocked));
    rig.store.heal();
    rig.pay(&order, 1_000).await.unwrap();
}

// ---------------------------------------------------------------------------
// Concurrency (B3)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_checkouts_never_push_the_device_total_over_its_limit() {
    let rig = offline(shopify()).await;
    // $4,900 already taken: room for ten more $10 payments.
    for _ in 0..49 {
        let order = rig.order(10_000).await;
        rig.pay(&order, 10_000).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let engine = rig.engine.clone();
        // On an order of its own.
        let sale = rig.sale(1_000);
        tasks.push(tokio::spawn(async move {
            let d = sale.begin(&engine).await?;
            tokio::task::yield_now().await;
            sale.confirm(&engine, &d.payment_id).await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(PosError::Refused {
                refusal:
                    Refusal::DeviceAmountLimit {
                        limit,
                        current,
                        attempted,
                    },
            }) => {
                assert_eq!(limit, usd(500_000));
                assert_eq!(attempted, usd(1_000));
                assert!(current.minor_units() + attempted.minor_units() > limit.minor_units());
                refused += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, refused), (10, 6));
    let s = rig.engine.status().unwrap();
    assert_eq!(s.totals[0].pending_amount, usd(500_000));
    assert_eq!(s.pending_offline_payments, 59);
    assert_eq!(rig.engine.list_payments().unwrap().len(), 59);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_split_cards_on_one_order_never_exceed_the_order_limit() {
    let rig = offline(shopify()).await;
    let order = rig.order(50_000).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let engine = rig.engine.clone();
        let sale = rig.sale(3_000).on(&order);
        tasks.push(tokio::spawn(async move {
            let d = sale.begin(&engine).await?;
            tokio::task::yield_now().await;
            sale.confirm(&engine, &d.payment_id).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(PosError::Refused {
                refusal: Refusal::PerOrderLimit { .. },
            }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(rig.engine.order(&order).unwrap().paid, usd(9_000));
}

#[tokio::test]
async fn an_override_with_an_overlong_reason_is_refused_and_breaks_nothing() {
    let mut rig = offline(shopify()).await;
    let order = rig.order(1_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    let long = ActionOverride {
        staff_id: "manager-1".into(),
        reason: "x".repeat(501),
        acknowledged_at_risk: vec![usd(1_000)],
    };
    let records = rig.store.len();
    let r = rig
        .engine
        .guarded_action(GuardedAction::LogOut, Some(long))
        .await;
    assert!(matches!(r, Err(PosError::InvalidInput { .. })), "{r:?}");
    assert_eq!(rig.store.len(), records, "nothing stored");
    assert!(
        rig.engine.status().unwrap().signed_in.is_some(),
        "still signed in"
    );
    // The engine and its store keep working.
    let other = rig.order(500).await;
    rig.pay(&other, 500).await.unwrap();
    rig.reopen().await;
    assert_eq!(rig.engine.list_payments().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------
// Begun payments: retries, reuse of an id, cancellation racing confirmation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn beginning_again_with_the_same_key_is_a_retry_and_another_request_is_refused() {
    let rig = offline(shopify()).await;
    let order = rig.order(5_000).await;
    let keyed = rig.sale(1_000).on(&order).payment_id("app-key-1");
    let first = keyed.begin(&rig.engine).await.unwrap();
    let again = keyed.begin(&rig.engine).await.unwrap();
    assert_eq!(first, again);
    let other = rig.sale(2_000).on(&order).payment_id("app-key-1");
    assert_eq!(
        other.begin(&rig.engine).await,
        Err(PosError::DuplicatePayment {
            payment_id: "app-key-1".into()
        })
    );
    // The confirmed payment is the one first begun.
    let p = keyed.confirm(&rig.engine, &first.payment_id).await.unwrap();
    assert_eq!(p.amount, usd(1_000));
}

#[tokio::test]
async fn a_taken_payment_cannot_be_cancelled() {
    let rig = offline(shopify()).await;
    let order = rig.order(5_000).await;
    let sale = rig.sale(1_000).on(&order);
    let taken = sale.try_sell(&rig.engine).await.unwrap();
    assert!(matches!(
        rig.engine.cancel_card_payment(&taken.id).await,
        Err(PosError::DuplicatePayment { .. })
    ));
    assert_eq!(rig.engine.list_payments().unwrap().len(), 1);
    // A begun, unconfirmed payment is dropped.
    let id = sale.begun(&rig.engine).await;
    rig.engine.cancel_card_payment(&id).await.unwrap();
    assert!(matches!(
        sale.confirm(&rig.engine, &id).await,
        Err(PosError::NotFound { .. })
    ));
}

#[test]
fn a_relative_data_dir_is_refused() {
    assert!(matches!(
        EngineConfig::new("relative/dir", "till-1", "USD"),
        Err(PosError::InvalidConfig { .. })
    ));
}

/// The next wake-up an app schedules background work for: offline, the
/// earliest of the next probe, a payment's deadline and the session's next
/// warning; online with a payment pending (no retry scheduled), its
/// deadline. The status carries the same time.
#[tokio::test]
async fn the_next_wake_up_is_the_earliest_probe_deadline_or_warning() {
    let rig = Rig::offline().await;
    let order = rig.order(1_000).await;
    let paid = rig.pay(&order, 1_000).await.unwrap();
    let status = rig.engine.status().unwrap();
    let expected = [
        Some(rig.engine.next_probe_at().unwrap()),
        Some(paid.deadline),
        status.acceptance_closes_at,
    ]
    .into_iter()
    .flatten()
    .min();
    assert_eq!(rig.engine.next_wake_up().unwrap(), expected);
    assert_eq!(status.next_wake_up, expected);
    // Online (no probes) with the payment still pending and no retry
    // scheduled: its deadline.
    rig.online().await;
    assert_eq!(rig.engine.next_wake_up().unwrap(), Some(paid.deadline));
    assert_eq!(
        rig.engine.status().unwrap().next_wake_up,
        Some(paid.deadline)
    );
    rig.engine.close();
    assert!(matches!(rig.engine.next_wake_up(), Err(PosError::Closed)));
}
