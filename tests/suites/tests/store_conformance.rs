//! The store conformance suite (`pos_rules::testing`) on the in-memory
//! store (the SQLite store runs it in `pos-store`'s own tests), and one case
//! that needs the engine, on both backends: an engine reopened on the store
//! serves what it stored (B10).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pos_test_support as support;

use std::sync::Arc;

use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::VirtualClock;
use pos_core::engine::StaffSession;
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{CustomerContact, EmailAddress, ReceiptChannel};
use pos_core::policy::{EntryMode, Network, Policy, TenderKind};
use pos_core::{EngineConfig, PosEngine};
use pos_rules::testing::{cents, staff, usd, Backend, Memory, T0};
use pos_test_support::store::Sqlite;

mod memory {
    pos_rules::store_conformance_tests!(pos_rules::testing::Memory);
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
                tap_to_pay_on_phone: false,
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

#[tokio::test]
async fn an_engine_reopened_on_the_memory_store_serves_what_it_stored() {
    an_engine_reopened_on_the_store_serves_what_it_stored::<Memory>().await;
}

#[tokio::test]
async fn an_engine_reopened_on_the_sqlite_store_serves_what_it_stored() {
    an_engine_reopened_on_the_store_serves_what_it_stored::<Sqlite>().await;
}
