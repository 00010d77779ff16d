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

/// The key file and the store's rollback anchor are kept outside the data
/// folder (beside it by default), so that a copy of that folder cannot roll
/// the anchor back with the store; a key folder inside it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_and_the_anchor_are_kept_outside_the_data_folder() {
    let base = std::env::temp_dir().join(format!("pos-demo-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let data = base.join("data");
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let s = run(Options {
        data_dir: Some(data.clone()),
        quiet: true,
        payments: 1,
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(s.reconciled(), "{}", s.table());
    let in_data = names(&data);
    assert!(
        in_data.iter().all(|n| n.starts_with("pos-core.sqlite")),
        "{in_data:?}"
    );
    let in_keys = names(&base.join("data.keys"));
    assert_eq!(in_keys.len(), 2, "{in_keys:?}");
    assert_eq!(in_keys[0], "pos-core.kek");
    assert!(
        in_keys[1].starts_with("pos-core.kek.anchor-"),
        "{in_keys:?}"
    );
    let refused = run(Options {
        data_dir: Some(data.clone()),
        key_dir: Some(data.join("keys")),
        quiet: true,
        payments: 1,
        ..Options::default()
    })
    .await;
    assert!(refused.unwrap_err().contains("outside the data folder"));
    let _ = std::fs::remove_dir_all(&base);
}
