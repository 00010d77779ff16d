//! Settled history leaves memory (`EngineConfig::settled_in_memory`,
//! `audit_in_memory`) and stays in the store: what the engine still
//! answers, that an id of the archived history is never taken again, and
//! that reopening, verifying and the history reads see everything.

#![allow(clippy::unwrap_used)]

use pos_test_support as support;
use std::sync::Arc;

use pos_core::checkout::NewOrder;
use pos_core::crypto::FileKeyProvider;
use pos_core::forwarding::ForwardingConfig;
use pos_core::ledger::Write;
use pos_core::lifecycle::{DeclineReason, OrderId, PaymentEvent, PaymentId, PaymentStatus};
use pos_core::sqlite_store::SqliteStore;
use pos_core::store::Store;
use pos_core::PosError;

/// A fresh SQLite store in a folder of its own.
async fn sqlite(name: &str) -> Arc<SqliteStore> {
    let dir = support::store::temp_dir(name);
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    Arc::new(SqliteStore::open(dir.join("store.db"), keys).await.unwrap())
}

/// An engine on a SQLite store that keeps 3 settled orders and 5 audit
/// entries in memory, with 10 payments taken offline (app-supplied ids
/// `pay-0`..`pay-9`, orders `order-0`..`order-9`) and forwarded.
async fn ten_settled(name: &str) -> support::Rig<SqliteStore> {
    let rig = support::Rig::builder()
        .store(sqlite(name).await)
        .configure(|c| {
            c.settled_in_memory = 3;
            c.audit_in_memory = 5;
            c.forwarding = ForwardingConfig {
                automatic: false,
                ..ForwardingConfig::default()
            };
        })
        .gateway(Arc::new(support::approving::Approving::default()))
        .offline(true)
        .open()
        .await;
    for i in 0..10 {
        let order = rig
            .engine
            .create_order(NewOrder {
                order_id: Some(format!("order-{i}")),
                total: rig.money(100),
                contact: None,
            })
            .await
            .unwrap()
            .id;
        rig.sale(100)
            .on(&order)
            .payment_id(format!("pay-{i}"))
            .sell(&rig.engine)
            .await;
    }
    rig.online().await;
    let report = rig.engine.forward_now().await.unwrap();
    assert_eq!(report.approved, 10, "{report:?}");
    rig
}

#[tokio::test]
async fn settled_history_leaves_memory_and_stays_in_the_store() {
    let mut rig = ten_settled("history-leaves").await;
    let last_seq = rig.engine.audit_entries(0).unwrap().last().unwrap().seq;
    // Everything is still held until the next snapshot.
    assert_eq!(rig.engine.list_payments().unwrap().len(), 10);
    rig.engine.compact_store().await.unwrap();

    let held = rig.engine.list_payments().unwrap();
    assert_eq!(held.len(), 3, "the 3 latest settled orders' payments");
    let held_ids: Vec<&str> = held.iter().map(|p| p.id.as_str()).collect();
    for id in ["pay-7", "pay-8", "pay-9"] {
        assert!(held_ids.contains(&id), "{held_ids:?}");
    }
    let audit = rig.engine.audit_entries(last_seq - 5).unwrap();
    assert_eq!(audit.len(), 5);
    assert_eq!(audit.last().unwrap().seq, last_seq, "numbering unchanged");
    assert!(matches!(
        rig.engine.order(&OrderId::parse("order-0").unwrap()),
        Err(PosError::NotFound { .. })
    ));

    // status() still counts every payment.
    let totals = rig.engine.status().unwrap().totals;
    assert_eq!(totals[0].approved_count, 10);
    assert_eq!(totals[0].approved_amount, rig.money(1_000));

    // The history reads see everything, from the store.
    let all = rig.engine.payment_history().await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|p| p.status == PaymentStatus::Approved));
    let entries = rig.engine.audit_history(0).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=last_seq).collect::<Vec<_>>()
    );
    let csv = rig.engine.export_audit_history_csv().await.unwrap();
    assert_eq!(
        csv.lines().count() as u64,
        last_seq + 1,
        "header + every entry"
    );
    assert_eq!(
        rig.engine.audit_history(last_seq - 2).await.unwrap().len(),
        2,
        "from memory"
    );

    // The journal replays to what the engine holds, and a reopen (from the
    // snapshot) holds the same.
    rig.engine.verify_store().await.unwrap();
    rig.reopen().await;
    assert_eq!(
        rig.store.records_since_compaction(),
        Some(0),
        "opened from the snapshot, not by replaying the journal"
    );
    assert_eq!(rig.engine.list_payments().unwrap().len(), 3);
    assert_eq!(rig.engine.status().unwrap().totals[0].approved_count, 10);
    rig.engine.verify_store().await.unwrap();
    assert_eq!(rig.engine.payment_history().await.unwrap().len(), 10);
}

#[tokio::test]
async fn an_id_of_the_archived_history_is_never_taken_again() {
    let mut rig = ten_settled("history-ids").await;
    rig.engine.compact_store().await.unwrap();
    for _ in 0..2 {
        rig.network_down().await;
        // A payment id used by an archived payment: refused, as a held one is.
        let order = rig.order(100).await;
        let reused = rig
            .sale(100)
            .on(&order)
            .payment_id("pay-0")
            .try_sell(&rig.engine)
            .await;
        assert!(
            matches!(reused, Err(PosError::DuplicatePayment { .. })),
            "{reused:?}"
        );
        let held = rig
            .sale(100)
            .on(&order)
            .payment_id("pay-9")
            .try_sell(&rig.engine)
            .await;
        assert!(
            matches!(held, Err(PosError::DuplicatePayment { .. })),
            "{held:?}"
        );
        // The same after a reopen.
        rig.reopen().await;
    }
    // A new id is taken.
    rig.network_down().await;
    let order = rig.order(100).await;
    rig.sale(100)
        .on(&order)
        .payment_id("pay-10")
        .sell(&rig.engine)
        .await;
}

#[tokio::test]
async fn what_left_memory_is_not_skipped_silently() {
    let rig = ten_settled("history-errors").await;
    rig.engine.compact_store().await.unwrap();
    // An exporter that asks from before what memory holds gets an error,
    // not a gap.
    let through = rig.engine.audit_history(0).await.unwrap().len() as u64 - 5;
    assert!(matches!(
        rig.engine.audit_entries(0),
        Err(PosError::InvalidInput { .. })
    ));
    assert!(matches!(
        rig.engine.audit_entries(through - 1),
        Err(PosError::InvalidInput { .. })
    ));
    assert_eq!(rig.engine.audit_entries(through).unwrap().len(), 5);
    // A late answer for an archived payment is a conflict, not "not found".
    let late = rig
        .engine
        .record_forwarding(
            &PaymentId::parse("pay-0").unwrap(),
            PaymentEvent::Declined {
                reason: DeclineReason::InsufficientFunds,
            },
        )
        .await;
    assert!(
        matches!(late, Err(PosError::InvalidTransition { .. })),
        "{late:?}"
    );
    // Confirming an archived payment again is refused.
    let again = rig
        .engine
        .confirm_card_payment(&PaymentId::parse("pay-1").unwrap(), support::chip_card(1))
        .await;
    assert!(
        matches!(again, Err(PosError::DuplicatePayment { .. })),
        "{again:?}"
    );
    // So is cancelling it: it was taken, not merely begun.
    let cancel = rig
        .engine
        .cancel_card_payment(&PaymentId::parse("pay-2").unwrap())
        .await;
    assert!(
        matches!(cancel, Err(PosError::DuplicatePayment { .. })),
        "{cancel:?}"
    );
    // An id never used is not found.
    let unknown = rig
        .engine
        .cancel_card_payment(&PaymentId::parse("pay-99").unwrap())
        .await;
    assert!(
        matches!(unknown, Err(PosError::NotFound { .. })),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn history_leaves_memory_without_rounds_or_background() {
    // Cash only, no forwarding round, the app never goes to the
    // background: the snapshots the commits make due still archive.
    let rig = support::Rig::builder()
        .store(sqlite("history-no-rounds").await)
        .configure(|c| {
            c.settled_in_memory = 1;
            c.compact_every = 4;
        })
        .open()
        .await;
    let mut orders = Vec::new();
    for _ in 0..10 {
        // A second apart: the latest order is the one kept.
        rig.clock.advance(std::time::Duration::from_secs(1));
        let id = rig.order(100).await;
        rig.engine.add_cash(&id, rig.money(100)).await.unwrap();
        orders.push(id);
    }
    // The driver archives once the commit that made the snapshot due is
    // over: wait for it (bounded), then check.
    let mut archived = false;
    for _ in 0..3_000 {
        if rig.engine.order(&orders[0]).is_err() {
            archived = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(archived, "the oldest settled order is still held");
    assert!(rig.engine.order(&orders[9]).is_ok(), "the latest stays");
    rig.engine.verify_store().await.unwrap();
}

#[tokio::test]
async fn a_settled_payment_keeps_no_card_data() {
    let rig = ten_settled("history-card-data").await;
    let records = rig.records().await;
    let last_of = |id: &str| {
        records
            .iter()
            .rev()
            .find_map(|w| match w {
                Write::Payment(p) if p.id.as_str() == id => Some(p.clone()),
                _ => None,
            })
            .unwrap()
    };
    for i in 0..10 {
        let p = last_of(&format!("pay-{i}"));
        assert_eq!(p.state.status(), PaymentStatus::Approved);
        assert!(p.card.sealed_card_data.is_empty(), "pay-{i}");
        assert!(p.card.reader_signature.is_none(), "pay-{i}");
    }
    // The record that took it offline still holds it, sealed in the journal.
    assert!(records.iter().any(|w| matches!(
        w,
        Write::Payment(p) if p.id.as_str() == "pay-0" && !p.card.sealed_card_data.is_empty()
    )));
}

/// The archived-id lookup does not wait for the store's readers: with both
/// held by full reads of the journal (history reads, the background check),
/// a begin under a reused id is still answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archived_id_is_refused_while_full_reads_hold_the_readers() {
    let rig = ten_settled("history-busy-readers").await;
    rig.engine.compact_store().await.unwrap();
    rig.network_down().await;
    let order = rig.order(100).await;
    // Two full reads, each held open inside its first record until released.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let mut releases = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..2 {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        releases.push(release_tx);
        let started = started_tx.clone();
        let store = rig.store.clone();
        reads.push(tokio::task::spawn_blocking(move || {
            let mut first = true;
            let mut visit = move |_w: Write| {
                if std::mem::take(&mut first) {
                    let _ = started.send(());
                    let _ = release_rx.recv();
                }
                Ok(())
            };
            block_on_here(store.load_each(&mut visit))
        }));
    }
    for _ in 0..2 {
        started_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a full read started");
    }
    let reused = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        rig.sale(100)
            .on(&order)
            .payment_id("pay-0")
            .try_sell(&rig.engine),
    )
    .await
    .expect("the lookup waited for a reader");
    assert!(
        matches!(reused, Err(PosError::DuplicatePayment { .. })),
        "{reused:?}"
    );
    drop(releases);
    for r in reads {
        r.await.unwrap().unwrap();
    }
}

/// Runs a store future to its end on the calling (blocking) thread.
fn block_on_here<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
