//! One conformance suite for every [`Store`] backend (STYLE.md "Tests":
//! matrix-sdk's store integration-test macro): the same cases run against
//! the in-memory store and the encrypted SQLite store. A backend passes when
//! it gives back every record applied, in order, atomically per batch, across
//! a reopen and after a failed write; and when an engine reopened on it
//! serves what it stored (B10).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pos_test_support as support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pos_core::audit::{AuditEntry, AuditKind};
use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::{Timestamp, VirtualClock};
use pos_core::crypto::FileKeyProvider;
use pos_core::engine::StaffSession;
use pos_core::ledger::{CardRead, OfflinePayment, Order, Settings, Tender, Write};
use pos_core::lifecycle::{
    CustomerContact, EmailAddress, OrderId, PaymentId, PaymentState, ReceiptChannel,
    ReceiptRequest, StaffId,
};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network, Policy, TenderKind};
use pos_core::sqlite_store::SqliteStore;
use pos_core::store::{MemoryStore, Store, StoreError};
use pos_core::{EngineConfig, PosEngine};

const T0: Timestamp = Timestamp(1_800_000_000_000);

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// What the suite needs from a backend beyond the [`Store`] trait.
trait Backend: Sized {
    type S: Store + 'static;
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

struct Memory {
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

struct Sqlite {
    dir: PathBuf,
    provider: Arc<FileKeyProvider>,
    store: Arc<SqliteStore>,
}

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pos-core-conformance-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Backend for Sqlite {
    type S = SqliteStore;

    async fn fresh(name: &str) -> Self {
        let dir = temp_dir(name);
        let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
        let store = SqliteStore::open(dir.join("store.db"), provider.clone())
            .await
            .unwrap();
        Sqlite {
            dir,
            provider,
            store: Arc::new(store),
        }
    }

    fn store(&self) -> Arc<SqliteStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::new(
            SqliteStore::open(self.dir.join("store.db"), self.provider.clone())
                .await
                .unwrap(),
        );
    }

    async fn fill_disk(&self) {
        // Holds the file at its current size.
        self.store.set_size_limit(Some(0)).await.unwrap();
    }

    async fn free_disk(&self) {
        self.store.set_size_limit(None).await.unwrap();
    }

    async fn finish(self) {
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn cents(n: i64) -> Money {
    Money::new(n, usd())
}

fn staff() -> StaffId {
    StaffId::parse("cashier-1").unwrap()
}

fn order(id: &str, email: &str) -> Write {
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
    })
}

fn payment(id: &str, order: &str, state: PaymentState, sealed_len: usize) -> Write {
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

fn receipt(id: u64) -> Write {
    Write::Receipt {
        id,
        request: ReceiptRequest::queue(
            OrderId::parse("order-1").unwrap(),
            ReceiptChannel::Email(EmailAddress::parse("receipt@example.org").unwrap()),
            T0,
        ),
    }
}

fn audit(seq: u64) -> Write {
    Write::Audit(AuditEntry {
        seq,
        at: T0,
        actor: Some(staff()),
        kind: AuditKind::LeftOfflineMode,
        account: Some(pos_core::account::MerchantAccount::new("acct_1", "loc_1").unwrap()),
    })
}

fn settings(enabled: bool) -> Write {
    Write::Settings(Box::new(Settings {
        policy: Policy::shopify_pos(usd()).with_enabled(enabled),
        session: None,
        clock_floor: T0,
    }))
}

fn every_kind() -> Vec<Write> {
    vec![
        settings(true),
        order("order-1", "jane@example.com"),
        payment("order-1-pay", "order-1", PaymentState::Pending, 64),
        receipt(1),
        audit(1),
    ]
}

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

async fn a_new_store_is_empty<B: Backend>() {
    let b = B::fresh("empty").await;
    assert_eq!(b.store().load().await.unwrap(), vec![]);
    b.finish().await;
}

async fn records_come_back_in_order_with_every_kind<B: Backend>() {
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

async fn an_empty_batch_changes_nothing<B: Backend>() {
    let b = B::fresh("empty-batch").await;
    let s = b.store();
    s.apply(&[]).await.unwrap();
    assert!(s.load().await.unwrap().is_empty());
    s.apply(&[audit(1)]).await.unwrap();
    s.apply(&[]).await.unwrap();
    assert_eq!(s.load().await.unwrap(), vec![audit(1)]);
    b.finish().await;
}

async fn later_records_of_a_key_follow_earlier_ones<B: Backend>() {
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

async fn records_survive_a_reopen<B: Backend>() {
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

async fn a_failed_write_changes_nothing_and_the_store_goes_on<B: Backend>() {
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

async fn large_records_round_trip<B: Backend>() {
    let mut b = B::fresh("large").await;
    let big = payment("p-big", "order-1", PaymentState::Pending, 16 * 1024);
    b.store().apply(std::slice::from_ref(&big)).await.unwrap();
    b.reopen().await;
    assert_eq!(b.store().load().await.unwrap(), vec![big]);
    b.finish().await;
}

async fn concurrent_batches_stay_whole<B: Backend>() {
    let b = B::fresh("concurrent").await;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let s = b.store();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Write> = (0..5).map(|i| receipt(t * 100 + i)).collect();
            s.apply(&batch).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
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

async fn an_engine_reopened_on_the_store_serves_what_it_stored<B: Backend>() {
    let mut b = B::fresh("engine").await;
    let clock = VirtualClock::new(T0);
    let config = EngineConfig::new("/tmp/pos-core-conformance", "till-1", "USD").unwrap();
    let policy = Policy::shopify_pos(usd()).with_enabled(true);
    let reader = policy.offline_readers.iter().next().unwrap().clone();
    let engine = PosEngine::open_with(config.clone(), Arc::new(clock.clone()), b.store())
        .await
        .unwrap();
    engine.set_policy(policy).await.unwrap();
    engine
        .sign_in(StaffSession {
            staff_id: staff(),
            may_take_offline_payments: true,
        })
        .unwrap();
    support::remember_vendor_reader(&engine, "SN-1", &reader).await;
    engine.report_network(false).await.unwrap();
    let order = engine
        .create_order(NewOrder {
            order_id: Some("order-7".into()),
            total: cents(5_000),
            contact: Some(CustomerContact::parse(Some("buyer@example.com"), None).unwrap()),
        })
        .await
        .unwrap();
    let d = engine
        .begin_card_payment(CardPaymentRequest {
            order_id: order.id.clone(),
            payment_id: Some("pay-7".into()),
            amount: cents(5_000),
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
                network: Network::Visa,
                last4: "4242".into(),
                fingerprint: None,
                reader_model: reader,
                sealed_card_data: vec![0xA5; 48],
                reader_serial: Some("SN-1".into()),
                reader_signature: None,
            },
        )
        .await
        .unwrap();
    engine
        .request_receipt(
            &order.id,
            ReceiptChannel::Email(EmailAddress::parse("buyer@example.com").unwrap()),
        )
        .await
        .unwrap();
    let before = (
        engine.status().unwrap(),
        engine.list_payments().unwrap(),
        engine.order(&order.id).unwrap(),
        engine.audit_entries(0).unwrap(),
        engine.queued_receipts().unwrap(),
    );
    engine.close();
    drop(engine);
    b.reopen().await;
    let engine = PosEngine::open_with(config, Arc::new(clock.clone()), b.store())
        .await
        .unwrap();
    engine
        .sign_in(StaffSession {
            staff_id: staff(),
            may_take_offline_payments: true,
        })
        .unwrap();
    let after = (
        engine.status().unwrap(),
        engine.list_payments().unwrap(),
        engine.order(&order.id).unwrap(),
        engine.audit_entries(0).unwrap(),
        engine.queued_receipts().unwrap(),
    );
    assert_eq!(after.0.pending_offline_payments, 1);
    assert_eq!(after.0.totals, before.0.totals);
    assert_eq!(after.0.session_started_at, before.0.session_started_at);
    assert_eq!(after.1, before.1);
    assert_eq!(after.2, before.2);
    assert_eq!(after.3, before.3);
    assert_eq!(after.4, before.4);
    engine.close();
    drop(engine);
    b.finish().await;
}

/// Runs every case against one backend.
macro_rules! conformance {
    ($module:ident, $backend:ty) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn a_new_store_is_empty() {
                super::a_new_store_is_empty::<$backend>().await
            }
            #[tokio::test]
            async fn records_come_back_in_order_with_every_kind() {
                super::records_come_back_in_order_with_every_kind::<$backend>().await
            }
            #[tokio::test]
            async fn an_empty_batch_changes_nothing() {
                super::an_empty_batch_changes_nothing::<$backend>().await
            }
            #[tokio::test]
            async fn later_records_of_a_key_follow_earlier_ones() {
                super::later_records_of_a_key_follow_earlier_ones::<$backend>().await
            }
            #[tokio::test]
            async fn records_survive_a_reopen() {
                super::records_survive_a_reopen::<$backend>().await
            }
            #[tokio::test]
            async fn a_failed_write_changes_nothing_and_the_store_goes_on() {
                super::a_failed_write_changes_nothing_and_the_store_goes_on::<$backend>().await
            }
            #[tokio::test]
            async fn large_records_round_trip() {
                super::large_records_round_trip::<$backend>().await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_batches_stay_whole() {
                super::concurrent_batches_stay_whole::<$backend>().await
            }
            #[tokio::test]
            async fn an_engine_reopened_on_the_store_serves_what_it_stored() {
                super::an_engine_reopened_on_the_store_serves_what_it_stored::<$backend>().await
            }
        }
    };
}

conformance!(memory, Memory);
conformance!(sqlite, Sqlite);
