//! The store conformance suite: the same cases for every [`Store`] backend
//! (the in-memory store here, the encrypted SQLite store in `pos-store`, a
//! platform's own). A backend passes when it gives back every record
//! applied, in order, atomically per batch, across a reopen and after a
//! failed write.
//!
//! A backend implements [`Backend`] and runs every case with
//! [`store_conformance_tests!`](crate::store_conformance_tests) inside a
//! module of its tests; the macro's tests run on tokio, which the caller
//! provides.

#![allow(clippy::unwrap_used, clippy::expect_used, async_fn_in_trait)]

use std::sync::Arc;

use crate::audit::{AuditEntry, AuditKind};
use crate::clock::Timestamp;
use crate::ledger::{CardRead, OfflinePayment, Order, Settings, Tender, Write};
use crate::lifecycle::{
    CustomerContact, EmailAddress, OrderId, PaymentId, PaymentState, ReceiptChannel,
    ReceiptRequest, StaffId,
};
use crate::money::{Currency, Money};
use crate::policy::{EntryMode, Network, Policy};
use crate::store::{BoxFuture, MemoryStore, Store, StoreError};

/// The time every record of the suite is stamped with.
pub const T0: Timestamp = Timestamp(1_800_000_000_000);

/// What the suite needs from a backend beyond the [`Store`] trait.
pub trait Backend: Sized {
    type S: Store + 'static;
    /// A fresh, empty store; `name` tells the cases apart (a folder name).
    async fn fresh(name: &str) -> Self;
    fn store(&self) -> Arc<Self::S>;
    /// Closes and opens the store again (an app restart).
    async fn reopen(&mut self);
    /// The next write that needs space fails as on a full disk.
    async fn fill_disk(&self);
    /// Space is back.
    async fn free_disk(&self);
    async fn finish(self);
}

/// The in-memory store as a backend.
#[derive(Debug)]
pub struct Memory {
    store: Arc<MemoryStore>,
}

impl Backend for Memory {
    type S = MemoryStore;

    async fn fresh(_name: &str) -> Self {
        Memory {
            store: Arc::new(MemoryStore::new()),
        }
    }

    fn store(&self) -> Arc<MemoryStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        // Clones share the records: a new handle on the same store.
        self.store = Arc::new(self.store.as_ref().clone());
    }

    async fn fill_disk(&self) {
        self.store.fail_next_write(StoreError::DiskFull);
    }

    async fn free_disk(&self) {}

    async fn finish(self) {}
}

// Records of every kind.

pub fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

pub fn cents(n: i64) -> Money {
    Money::new(n, usd())
}

pub fn staff() -> StaffId {
    StaffId::parse("cashier-1").unwrap()
}

pub fn order(id: &str, email: &str) -> Write {
    Write::Order(Order {
        id: OrderId::parse(id).unwrap(),
        total: cents(4_200),
        tenders: vec![Tender::OfflineCard {
            payment_id: PaymentId::parse(&format!("{id}-pay")).unwrap(),
            amount: cents(4_200),
        }],
        contact: Some(CustomerContact::parse(Some(email), Some("+33 6 12 34 56 78")).unwrap()),
        created_at: T0,
        created_by: staff(),
        updated_at: None,
    })
}

pub fn payment(id: &str, order: &str, state: PaymentState, sealed_len: usize) -> Write {
    Write::Payment(Box::new(OfflinePayment {
        id: PaymentId::parse(id).unwrap(),
        order_id: OrderId::parse(order).unwrap(),
        amount: cents(4_200),
        tip: Some(cents(300)),
        card: CardRead {
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            last4: "4242".into(),
            fingerprint: Some("fp_4f2a".into()),
            reader_model: "Lecteur café ☕ 2".into(),
            sealed_card_data: (0..sealed_len).map(|i| (i % 251) as u8).collect(),
            reader_serial: Some("SN-7".into()),
            reader_signature: Some(vec![0x5a; 64]),
            tap_to_pay_on_phone: false,
        },
        taken_by: staff(),
        taken_at: T0,
        deadline: Timestamp(T0.0 + 86_400_000),
        session_started_at: T0,
        state,
        online: false,
        account: None,
    }))
}

pub fn receipt(id: u64) -> Write {
    Write::Receipt {
        id,
        request: ReceiptRequest::queue(
            OrderId::parse("order-1").unwrap(),
            ReceiptChannel::Email(EmailAddress::parse("receipt@example.org").unwrap()),
            T0,
        ),
    }
}

pub fn audit(seq: u64) -> Write {
    Write::Audit(AuditEntry {
        seq,
        at: T0,
        actor: Some(staff()),
        kind: AuditKind::LeftOfflineMode,
        account: Some(crate::account::MerchantAccount::new("acct_1", "loc_1").unwrap()),
    })
}

pub fn settings(enabled: bool) -> Write {
    Write::Settings(Box::new(Settings {
        policy: Policy::shopify_pos(usd()).with_enabled(enabled),
        session: None,
        clock_floor: T0,
    }))
}

pub fn every_kind() -> Vec<Write> {
    vec![
        settings(true),
        order("order-1", "jane@example.com"),
        payment("order-1-pay", "order-1", PaymentState::Pending, 64),
        receipt(1),
        audit(1),
        // Orders and receipts no longer held are skipped: a cut that
        // replays as nothing, but goes through the store whole.
        Write::Archive(Box::new(crate::ledger::ArchiveCut {
            orders: vec![OrderId::parse("order-9").unwrap()],
            payments: Vec::new(),
            receipts: vec![9],
            audit_through: 0,
        })),
    ]
}

// The cases. Each starts a fresh store of its backend and finishes it.

pub async fn a_new_store_is_empty<B: Backend>() {
    let b = B::fresh("empty").await;
    assert_eq!(b.store().load().await.unwrap(), vec![]);
    b.finish().await;
}

pub async fn records_come_back_in_order_with_every_kind<B: Backend>() {
    let b = B::fresh("order").await;
    let s = b.store();
    let first = every_kind();
    let second = vec![audit(2), settings(false), receipt(2)];
    s.apply(&first).await.unwrap();
    s.apply(&second).await.unwrap();
    let all: Vec<Write> = first.into_iter().chain(second).collect();
    assert_eq!(s.load().await.unwrap(), all);
    // Loading twice gives the same and changes nothing.
    assert_eq!(s.load().await.unwrap(), all);
    b.finish().await;
}

pub async fn an_empty_batch_changes_nothing<B: Backend>() {
    let b = B::fresh("empty-batch").await;
    let s = b.store();
    s.apply(&[]).await.unwrap();
    assert!(s.load().await.unwrap().is_empty());
    s.apply(&[audit(1)]).await.unwrap();
    s.apply(&[]).await.unwrap();
    assert_eq!(s.load().await.unwrap(), vec![audit(1)]);
    b.finish().await;
}

pub async fn later_records_of_a_key_follow_earlier_ones<B: Backend>() {
    let b = B::fresh("supersede").await;
    let s = b.store();
    let pending = payment("p-1", "order-1", PaymentState::Pending, 32);
    let approved = payment(
        "p-1",
        "order-1",
        PaymentState::Approved {
            at: Timestamp(T0.0 + 60_000),
            processor_ref: "ch_123".into(),
        },
        32,
    );
    s.apply(std::slice::from_ref(&pending)).await.unwrap();
    s.apply(std::slice::from_ref(&approved)).await.unwrap();
    assert_eq!(s.load().await.unwrap(), vec![pending, approved]);
    b.finish().await;
}

pub async fn records_survive_a_reopen<B: Backend>() {
    let mut b = B::fresh("reopen").await;
    b.store().apply(&every_kind()).await.unwrap();
    b.reopen().await;
    assert_eq!(b.store().load().await.unwrap(), every_kind());
    // Writing after a reopen continues the same store.
    b.store().apply(&[audit(2)]).await.unwrap();
    b.reopen().await;
    let mut want = every_kind();
    want.push(audit(2));
    assert_eq!(b.store().load().await.unwrap(), want);
    b.finish().await;
}

pub async fn a_payment_id_ever_recorded_is_found<B: Backend>() {
    let mut b = B::fresh("payment-recorded").await;
    let id = |s: &str| PaymentId::parse(s).unwrap();
    b.store().apply(&every_kind()).await.unwrap();
    // Taken, then archived: still found.
    b.store()
        .apply(&[
            payment("later-pay", "order-1", PaymentState::Pending, 8),
            Write::Archive(Box::new(crate::ledger::ArchiveCut {
                orders: vec![OrderId::parse("order-1").unwrap()],
                payments: vec![id("order-1-pay"), id("later-pay")],
                receipts: Vec::new(),
                audit_through: 0,
            })),
        ])
        .await
        .unwrap();
    b.reopen().await;
    let store = b.store();
    assert!(store.payment_recorded(&id("order-1-pay")).await.unwrap());
    assert!(store.payment_recorded(&id("later-pay")).await.unwrap());
    // Not a payment id: an order's, or one never used.
    assert!(!store.payment_recorded(&id("order-1")).await.unwrap());
    assert!(!store.payment_recorded(&id("never-taken")).await.unwrap());
    b.finish().await;
}

pub async fn a_failed_write_changes_nothing_and_the_store_goes_on<B: Backend>() {
    let mut b = B::fresh("disk-full").await;
    b.store().apply(&every_kind()).await.unwrap();
    b.fill_disk().await;
    // Big enough to need new space in any backend: 40 payments of 16 KiB.
    let big: Vec<Write> = (0..40)
        .map(|i| {
            payment(
                &format!("big-{i}"),
                "order-1",
                PaymentState::Pending,
                16 * 1024,
            )
        })
        .collect();
    assert_eq!(b.store().apply(&big).await, Err(StoreError::DiskFull));
    assert_eq!(b.store().load().await.unwrap(), every_kind());
    b.free_disk().await;
    b.store().apply(&[audit(2)]).await.unwrap();
    let mut want = every_kind();
    want.push(audit(2));
    assert_eq!(b.store().load().await.unwrap(), want);
    b.reopen().await;
    assert_eq!(b.store().load().await.unwrap(), want);
    b.finish().await;
}

pub async fn large_records_round_trip<B: Backend>() {
    let mut b = B::fresh("large").await;
    let big = payment("p-big", "order-1", PaymentState::Pending, 16 * 1024);
    b.store().apply(std::slice::from_ref(&big)).await.unwrap();
    b.reopen().await;
    assert_eq!(b.store().load().await.unwrap(), vec![big]);
    b.finish().await;
}

/// `spawn` starts its future on the caller's runtime at once and returns
/// a future of its completion (the suite itself has no runtime).
pub async fn concurrent_batches_stay_whole<B: Backend>(
    spawn: impl Fn(BoxFuture<'static, ()>) -> BoxFuture<'static, ()>,
) {
    let b = B::fresh("concurrent").await;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let s = b.store();
        tasks.push(spawn(Box::pin(async move {
            let batch: Vec<Write> = (0..5).map(|i| receipt(t * 100 + i)).collect();
            s.apply(&batch).await.unwrap();
        })));
    }
    for t in tasks {
        t.await;
    }
    let ids: Vec<u64> = b
        .store()
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|w| match w {
            Write::Receipt { id, .. } => id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 40);
    for chunk in ids.chunks(5) {
        let base = chunk[0];
        assert_eq!(base % 100, 0, "{ids:?}");
        assert_eq!(chunk, &[base, base + 1, base + 2, base + 3, base + 4]);
    }
    b.finish().await;
}

/// Runs every case of the suite against a backend: `store_conformance_tests!(MyBackend);`
/// inside a test module, with tokio (`macros`, `rt-multi-thread`) among the
/// caller's dev-dependencies.
#[macro_export]
macro_rules! store_conformance_tests {
    ($backend:ty) => {
        #[tokio::test]
        async fn a_new_store_is_empty() {
            $crate::testing::a_new_store_is_empty::<$backend>().await;
        }
        #[tokio::test]
        async fn records_come_back_in_order_with_every_kind() {
            $crate::testing::records_come_back_in_order_with_every_kind::<$backend>().await;
        }
        #[tokio::test]
        async fn an_empty_batch_changes_nothing() {
            $crate::testing::an_empty_batch_changes_nothing::<$backend>().await;
        }
        #[tokio::test]
        async fn later_records_of_a_key_follow_earlier_ones() {
            $crate::testing::later_records_of_a_key_follow_earlier_ones::<$backend>().await;
        }
        #[tokio::test]
        async fn records_survive_a_reopen() {
            $crate::testing::records_survive_a_reopen::<$backend>().await;
        }
        #[tokio::test]
        async fn a_payment_id_ever_recorded_is_found() {
            $crate::testing::a_payment_id_ever_recorded_is_found::<$backend>().await;
        }
        #[tokio::test]
        async fn a_failed_write_changes_nothing_and_the_store_goes_on() {
            $crate::testing::a_failed_write_changes_nothing_and_the_store_goes_on::<$backend>()
                .await;
        }
        #[tokio::test]
        async fn large_records_round_trip() {
            $crate::testing::large_records_round_trip::<$backend>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_batches_stay_whole() {
            $crate::testing::concurrent_batches_stay_whole::<$backend>(|f| {
                let task = tokio::spawn(f);
                Box::pin(async move { task.await.expect("the batch task") })
            })
            .await;
        }
    };
}
