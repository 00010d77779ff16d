//! Review of the status and the driver's wake-up read from the ledger's
//! running index: on the encrypted store, through sales, forwarding
//! rounds with every kind of answer, expiries, snapshots, restarts (opened
//! from the snapshot), account switches and the background, `status()`
//! and `next_wake_at()` must be exactly what a recount of
//! `list_payments()` gives, and `verify_store` must find the state opened
//! from a snapshot equal to a full replay.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_core::account::MerchantAccount;
use pos_core::clock::Timestamp;
use pos_core::connectivity::ConnectivityState;
use pos_core::crypto::FileKeyProvider;
use pos_core::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, PaymentLookup,
    ReceiptDelivery, ServiceStatus, StatusQuery,
};
use pos_core::lifecycle::{DeclineReason, ForwardErrorKind, PaymentState, PaymentStatus};
use pos_core::money::{Currency, Money};
use pos_core::sqlite_store::SqliteStore;
use pos_test_support::rig::manual_forwarding;
use pos_test_support::rng::Rng;
use pos_test_support::store::temp_dir;
use pos_test_support::Rig;

/// A processor whose answer to each forwarding request is drawn from a
/// seeded generator: approved, declined, or one of the errors that leave a
/// payment failed to forward (with a planned retry, or without one), or
/// with an outcome that may have reached it.
#[derive(Debug)]
struct Dice(Mutex<Rng>);

impl Gateway for Dice {
    fn authorize(&self, _: &AuthorizeRequest) -> Result<GatewayDecision, GatewayError> {
        Ok(GatewayDecision::Approved {
            processor_ref: "ref".into(),
        })
    }

    fn forward(&self, _: &ForwardRequest) -> Result<GatewayDecision, GatewayError> {
        match self.0.lock().unwrap().below(5) {
            0 => Ok(GatewayDecision::Approved {
                processor_ref: "ref".into(),
            }),
            1 => Ok(GatewayDecision::Declined {
                reason: DeclineReason::InsufficientFunds,
            }),
            2 => Err(GatewayError::new(ForwardErrorKind::NoAnswer, "test: lost")),
            3 => Err(GatewayError::new(
                ForwardErrorKind::NotSent,
                "test: no route",
            )),
            _ => Err(GatewayError::new(
                ForwardErrorKind::Rejected,
                "test: refused",
            )),
        }
    }

    fn status(&self) -> Result<ServiceStatus, GatewayError> {
        Ok(ServiceStatus::Available)
    }

    fn payment_status(&self, _: &StatusQuery) -> Result<PaymentLookup, GatewayError> {
        Err(GatewayError::new(ForwardErrorKind::NoAnswer, "test: lost"))
    }

    fn deliver_receipt(&self, _: &ReceiptDelivery) -> Result<(), GatewayError> {
        Ok(())
    }
}

type Recount = BTreeMap<Currency, [(u32, i64); 5]>;

/// The status totals of a recount of `list_payments()`: pending (pending,
/// forwarding, failed to forward, outcome unknown), approved, declined,
/// expired, outcome unknown.
fn recount_totals(rig: &Rig<SqliteStore>) -> Recount {
    let mut out = Recount::new();
    for p in rig.engine.list_payments().unwrap() {
        let t = out.entry(p.amount.currency()).or_default();
        let slot = match p.status {
            PaymentStatus::Approved => 1,
            PaymentStatus::Declined => 2,
            PaymentStatus::Expired => 3,
            _ => 0,
        };
        t[slot].0 += 1;
        t[slot].1 += p.amount.minor_units();
        if p.status == PaymentStatus::OutcomeUnknown {
            t[4].0 += 1;
            t[4].1 += p.amount.minor_units();
        }
    }
    out
}

fn check(rig: &Rig<SqliteStore>, step: usize) {
    let status = rig.engine.status().unwrap();
    let payments = rig.engine.list_payments().unwrap();
    let totals: Recount = status
        .totals
        .iter()
        .map(|t| {
            let m = |a: Money| a.minor_units();
            (
                t.currency,
                [
                    (t.pending_count, m(t.pending_amount)),
                    (t.approved_count, m(t.approved_amount)),
                    (t.declined_count, m(t.declined_amount)),
                    (t.expired_count, m(t.expired_amount)),
                    (t.unknown_count, m(t.unknown_amount)),
                ],
            )
        })
        .collect();
    assert_eq!(totals, recount_totals(rig), "totals at step {step}");
    let unsettled = || payments.iter().filter(|p| !p.status.is_final());
    // Every payment here was taken offline.
    assert_eq!(
        status.pending_offline_payments,
        unsettled().count() as u64,
        "pending at step {step}"
    );
    assert_eq!(
        status.next_deadline,
        unsettled().map(|p| p.deadline).min(),
        "next deadline at step {step}"
    );
    // The driver's wake-up: the deadline of every payment waiting for an
    // attempt; online, its planned retry; offline and in the foreground,
    // the next probe. (No `Retry-After` here: no answer asks for one.)
    let online = matches!(status.connectivity, ConnectivityState::Online { .. });
    let mut next: Option<Timestamp> = None;
    let mut at = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
    for p in &payments {
        match &p.state {
            PaymentState::Pending => at(p.deadline),
            PaymentState::FailedToForward { next_retry_at, .. } => {
                at(p.deadline);
                if let (true, Some(t)) = (online, next_retry_at) {
                    at(*t);
                }
            }
            _ => {}
        }
    }
    if !online && !rig.engine.in_background() {
        at(rig.engine.next_probe_at().unwrap());
    }
    assert_eq!(rig.engine.next_wake_at(), next, "wake-up at step {step}");
}

#[tokio::test]
async fn status_and_wake_up_match_a_recount_across_snapshots_and_restarts() {
    let dir = temp_dir("status-index-review");
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let store = Arc::new(
        SqliteStore::open(dir.join("store.db"), keys.clone())
            .await
            .unwrap(),
    );
    let gateway: Arc<dyn Gateway> = Arc::new(Dice(Mutex::new(Rng::new(11))));
    let mut rig = Rig::builder()
        .store(store.clone())
        .gateway(gateway.clone())
        .configure(|c| c.forwarding = manual_forwarding(5))
        .open()
        .await;
    let mut rng = Rng::new(7);
    let (mut snapshots, mut reopens, mut rounds) = (0, 0, 0);
    check(&rig, 0);
    for step in 1..=120 {
        match rng.below(10) {
            0..=3 => {
                rig.network_down().await;
                let cents = i64::try_from(rng.range(100, 4_000)).unwrap();
                let _ = rig.sale(cents).try_sell(&rig.engine).await;
            }
            4 | 5 => {
                rig.online().await;
                let _ = rig.engine.forward_now().await;
                rounds += 1;
            }
            6 => {
                let hours = rng.range(1, 30);
                rig.clock.advance(Duration::from_secs(3600 * hours));
                rig.engine.tick().await.unwrap();
            }
            7 => {
                rig.engine.compact_store().await.unwrap();
                snapshots += 1;
            }
            8 => {
                rig.engine.compact_store().await.unwrap();
                rig.reopen().await;
                rig.engine.set_gateway(gateway.clone()).unwrap();
                reopens += 1;
            }
            _ => {
                if rng.below(2) == 0 {
                    rig.engine.on_background().await.unwrap();
                } else {
                    rig.engine.on_foreground().unwrap();
                }
                let to = MerchantAccount::new(&format!("acct-{}", rng.below(2)), "loc-1").unwrap();
                let _ = rig.engine.switch_account(to, None).await;
            }
        }
        check(&rig, step);
    }
    let statuses: Vec<PaymentStatus> = rig
        .engine
        .list_payments()
        .unwrap()
        .iter()
        .map(|p| p.status)
        .collect();
    // The run went through what it is meant to cover.
    assert!(snapshots > 3 && reopens > 3 && rounds > 3);
    for s in [
        PaymentStatus::Approved,
        PaymentStatus::Declined,
        PaymentStatus::FailedToForward,
    ] {
        assert!(statuses.contains(&s), "no payment {s:?}: {statuses:?}");
    }
    assert!(
        statuses
            .iter()
            .any(|s| matches!(s, PaymentStatus::Expired | PaymentStatus::OutcomeUnknown)),
        "no payment expired or with an unknown outcome: {statuses:?}"
    );
    rig.engine.verify_store().await.unwrap();
    rig.engine.close();
    let _ = std::fs::remove_dir_all(&dir);
}
