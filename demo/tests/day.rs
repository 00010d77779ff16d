//! The demo's day runs in the test suite (quiet, small) for every preset and
//! for several fault modes; its reconciliation is asserted.

#![allow(clippy::unwrap_used)]

use pos_demo::{run, Options, Preset};
use pos_sim::FaultMode;

async fn day(preset: Preset, fault: Option<FaultMode>, payments: usize) {
    let s = run(Options {
        preset,
        fault,
        payments,
        quiet: true,
        seed: 7,
        ..Options::default()
    })
    .await
    .unwrap();
    let label = format!("{} / {:?}", preset.name(), fault);
    assert!(s.reconciled(), "{label}:\n{}", s.table());
    assert_eq!(s.lost_payments, 0, "{label}");
    assert_eq!(s.duplicated, 0, "{label}");
    // Scripted: two declines (insufficient funds, stolen card), one expiry.
    assert_eq!(s.declined, 2, "{label}");
    assert_eq!(s.declines_reported, 2, "{label}");
    assert_eq!(s.expired, 1, "{label}");
    assert_eq!(s.expiries_reported, 1, "{label}");
    assert!(s.lost_amount.minor_units() > 0, "{label}");
    // 3 online sales + `payments` offline + 2 split cards, minus declines and the expiry.
    assert_eq!(s.approved as usize, 3 + payments + 2 - 3, "{label}");
    assert_eq!(s.receipts_delivered, 2, "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_reconciles() {
    for preset in Preset::ALL {
        day(preset, None, 6).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_modes_reconcile() {
    for fault in [
        FaultMode::DropAfterCommit,
        FaultMode::ServerError,
        FaultMode::Timeout,
        FaultMode::Intermittent,
        FaultMode::Mix,
    ] {
        day(Preset::SquareReader, Some(fault), 6).await;
    }
}
