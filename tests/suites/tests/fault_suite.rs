//! The forwarding fault suite: for each fault mode of the
//! simulator, and for a mix of all, take offline payments, forward them
//! through the engine's HTTP gateway, and check that the simulator's ledger
//! and the device agree on every payment: exactly one charge per approved
//! id, zero lost, zero duplicated, every decline reported once.
//!
//! Deterministic: a virtual clock (retries are due when the test moves time
//! to them, not after sleeps) and seeded faults. `POS_FAULT_PAYMENTS` sets
//! the payments per mode (default 120; `cargo xtask soak` runs 10,000).
//! The ordinary run sends each retry at its own time; above 1,000 payments
//! a round carries every retry due by the latest one (retries then go out
//! late: 4 to 12 rounds at 10,000, far inside the 24-hour deadline; a
//! payment that expired would show as a disagreement with the processor
//! and fail the suite).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use pos_test_support::sim as support;
use support::PaidWith;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_core::lifecycle::{PaymentId, PaymentState};
use pos_core::{EventListener, PosEvent};
use pos_sim::{test_cards, CardOutcome, ChargeOutcome, FaultMode, SimConfig, Simulator};

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
    let declines = Arc::new(Declines::default());
    let rig = support::rig(sim.processor_key())
        .configure(|c| {
            c.device_id = "till-7".into();
            c.forwarding = support::manual_forwarding(seed);
        })
        .listener(declines.clone())
        .gateway(support::gateway(&sim, Duration::from_millis(300)))
        .open()
        .await;
    let (engine, clock) = (&rig.engine, &rig.clock);

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
        let id = rig.sale(cents).paid_with(card).sell(engine).await.id;
        expected.insert(id, (cents, card.outcome == CardOutcome::Approve));
    }

    // Forward until every payment has a decision, moving the virtual clock
    // to the next retry between rounds: the earliest one (each retry at its
    // own time) for the ordinary run; with the 10,000 payments of `cargo
    // xtask soak`, the latest one, so that a round carries all the retries
    // due by then (each payment's jitter differs: at the earliest, 200
    // rounds left 1,568 retries, and each round waits on the faulty
    // connections in real time).
    let together = n > 1_000;
    let rounds = support::settle(engine, clock, together, 200).await;
    let unsettled: Vec<_> = engine
        .list_payments()
        .unwrap()
        .into_iter()
        .filter(|p| !p.state.is_final())
        .map(|p| p.state)
        .collect();
    assert!(
        unsettled.is_empty(),
        "{mode}: {} payments never settled after {rounds} rounds, e.g. {:?}",
        unsettled.len(),
        unsettled.iter().take(3).collect::<Vec<_>>()
    );

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
    // thread: wait until every event emitted so far has reached the
    // listener, so that a second report of a decline is counted too).
    engine.events_delivered().await;
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
