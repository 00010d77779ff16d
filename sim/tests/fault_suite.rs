//! The forwarding fault suite (issue 5): for each fault mode of the
//! simulator, and for a mix of all, take offline payments, forward them
//! through the engine's HTTP gateway, and check that the simulator's ledger
//! and the device agree on every payment: exactly one charge per approved
//! id, zero lost, zero duplicated, every decline reported once.
//!
//! Deterministic: a virtual clock (retries are due when the test moves time
//! to them, not after sleeps) and seeded faults. `POS_FAULT_PAYMENTS` sets
//! the payments per mode (default 120; `cargo xtask soak` runs 10,000).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_core::card_seal::seal;
use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::{Clock, Timestamp, VirtualClock};
use pos_core::engine::StaffSession;
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::StaticToken;
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{PaymentId, PaymentState, StaffId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{CurrencyLimits, EntryMode, Policy, TenderKind};
use pos_core::store::MemoryStore;
use pos_core::{EngineConfig, EventListener, PosEngine, PosEvent};
use pos_sim::{test_cards, CardOutcome, ChargeOutcome, FaultMode, SimConfig, Simulator};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

#[derive(Default)]
struct Declines(Mutex<BTreeMap<String, u32>>);
impl EventListener for Declines {
    fn on_event(&self, e: PosEvent) {
        if let PosEvent::PaymentDeclined(n) = e {
            *self
                .0
                .lock()
                .unwrap()
                .entry(n.payment_id.as_str().to_owned())
                .or_insert(0) += 1;
        }
    }
}

fn payments_per_mode() -> usize {
    std::env::var("POS_FAULT_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

async fn run_mode(mode: FaultMode, n: usize, seed: u64) {
    let sim = Simulator::start(SimConfig {
        seed,
        faults: pos_sim::FaultPlan {
            hold: Duration::from_millis(600),
            ..mode.plan(None)
        },
        ..SimConfig::default()
    })
    .unwrap();
    let clock = VirtualClock::new(T0);
    let mut config = EngineConfig::new("/tmp/pos-fault-suite", "till-7", "EUR").unwrap();
    config.forwarding = ForwardingConfig {
        automatic: false,
        jitter_seed: Some(seed),
        ..ForwardingConfig::default()
    };
    let engine = PosEngine::open_with(
        config,
        Arc::new(clock.clone()),
        Arc::new(MemoryStore::new()),
    )
    .await
    .unwrap();
    let mut policy = Policy::shopify_pos(eur()).with_enabled(true);
    let big = Money::new(1_000_000_000, eur());
    policy = policy.with_limits(
        eur(),
        CurrencyLimits {
            per_payment: None,
            per_order: big,
            device_amount: None,
            device_count: None,
            per_card: None,
            warn_percent: 100,
        },
    );
    let reader = policy.offline_readers.iter().next().unwrap().clone();
    engine.set_policy(policy).await.unwrap();
    engine
        .sign_in(StaffSession {
            staff_id: StaffId::parse("cashier-1").unwrap(),
            may_take_offline_payments: true,
        })
        .unwrap();
    let declines = Arc::new(Declines::default());
    let _sub = engine.subscribe(declines.clone()).unwrap();
    engine.report_network(false).await.unwrap();
    let mut mut_config = HttpGatewayConfig::new(sim.base_url());
    mut_config.allow_plain_http = true;
    mut_config.request_timeout = Duration::from_millis(300);
    engine
        .set_gateway(Arc::new(
            HttpGateway::new(mut_config, Arc::new(StaticToken(sim.token()))).unwrap(),
        ))
        .unwrap();

    // Take the payments: one card in ten declines (each decline kind in turn).
    let decline_cards: Vec<_> = test_cards()
        .iter()
        .filter(|c| c.outcome != CardOutcome::Approve)
        .collect();
    let mut expected: BTreeMap<PaymentId, (i64, bool)> = BTreeMap::new();
    for i in 0..n {
        let card = if i % 10 == 9 {
            decline_cards[(i / 10) % decline_cards.len()]
        } else {
            &test_cards()[i % 3]
        };
        let cents = 100 + (i as i64 % 50) * 7;
        let order = engine
            .create_order(NewOrder {
                order_id: None,
                total: Money::new(cents, eur()),
                contact: None,
            })
            .await
            .unwrap();
        let d = engine
            .begin_card_payment(CardPaymentRequest {
                order_id: order.id,
                payment_id: None,
                amount: Money::new(cents, eur()),
                tip: None,
                behaviour: OfflineBehaviour::PreferOnline,
                tender: TenderKind::Card,
            })
            .await
            .unwrap();
        engine
            .confirm_card_payment(
                &d.payment_id,
                CardRead {
                    entry_mode: EntryMode::Chip,
                    network: card.network,
                    last4: card.last4().into(),
                    fingerprint: None,
                    reader_model: reader.clone(),
                    sealed_card_data: seal(&card.secret(), &sim.processor_key()).unwrap(),
                },
            )
            .await
            .unwrap();
        expected.insert(d.payment_id, (cents, card.outcome == CardOutcome::Approve));
    }

    // Forward until every payment has a decision, moving the virtual clock
    // to the next retry between rounds.
    let mut rounds = 0;
    loop {
        engine.forward_now().await.unwrap();
        rounds += 1;
        let open: Vec<_> = engine
            .list_payments()
            .unwrap()
            .into_iter()
            .filter(|p| !p.state.is_final())
            .collect();
        if open.is_empty() {
            break;
        }
        assert!(
            rounds < 200,
            "{mode}: {} payments never settled",
            open.len()
        );
        let next = open
            .iter()
            .filter_map(|p| match p.state {
                PaymentState::FailedToForward {
                    next_retry_at: Some(t),
                    ..
                } => Some(t),
                _ => None,
            })
            .min()
            .unwrap_or_else(|| clock.wall_now());
        let now = clock.wall_now();
        if next > now {
            clock.advance(Duration::from_millis((next.millis() - now.millis()) as u64));
        }
    }

    // The device and the processor agree on every payment.
    let ledger: BTreeMap<String, _> = sim
        .ledger()
        .into_iter()
        .map(|c| (c.payment_id.clone(), c))
        .collect();
    assert_eq!(
        ledger.len(),
        n,
        "{mode}: one ledger entry per payment, none unknown"
    );
    let mut approved = 0;
    let mut declined = 0;
    for p in engine.list_payments().unwrap() {
        let (cents, approves) = expected[&p.id];
        let c = ledger
            .get(p.id.as_str())
            .unwrap_or_else(|| panic!("{mode}: {} lost", p.id));
        assert_eq!(c.amount, cents, "{mode}");
        assert!(!c.online);
        match (&p.state, &c.outcome) {
            (
                PaymentState::Approved { processor_ref, .. },
                ChargeOutcome::Approved { processor_ref: r },
            ) => {
                assert!(approves);
                assert_eq!(
                    processor_ref, r,
                    "{mode}: the first decision, never a second charge"
                );
                approved += 1;
            }
            (PaymentState::Declined { .. }, ChargeOutcome::Declined { .. }) => {
                assert!(!approves);
                declined += 1;
            }
            (device, processor) => panic!(
                "{mode}: {} device {device:?} vs processor {processor:?}",
                p.id
            ),
        }
    }
    assert_eq!(approved + declined, n);
    // Each decline reported exactly once (events are delivered on their own
    // thread: wait for them, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while declines.0.lock().unwrap().len() < declined && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = declines.0.lock().unwrap().clone();
    assert_eq!(seen.len(), declined, "{mode}");
    assert!(
        seen.values().all(|&c| c == 1),
        "{mode}: a decline reported twice"
    );
    let stats = sim.stats();
    println!(
        "{mode:>17}: {n} payments, {approved} approved, {declined} declined, {rounds} rounds, \
         {} requests, {} replays, faults {:?}",
        stats.requests, stats.idempotent_replays, stats.faults
    );
    engine.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_mode_agrees_with_the_processor() {
    let n = payments_per_mode();
    for (i, mode) in FaultMode::ALL.into_iter().enumerate() {
        run_mode(mode, n, 100 + i as u64).await;
    }
}
