//! Shared by the store tests: an offline sale through the engine.

#![allow(dead_code, clippy::unwrap_used)]

use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::engine::StaffSession;
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{PaymentId, StaffId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network, Policy, TenderKind};
use pos_core::PosEngine;

pub fn usd(cents: i64) -> Money {
    Money::new(cents, Currency::parse("USD").unwrap())
}

/// Shopify POS policy enabled, a cashier who may take offline payments
/// signed in, the network reported down.
pub async fn go_offline(engine: &PosEngine) {
    engine
        .set_policy(Policy::shopify_pos(Currency::parse("USD").unwrap()).with_enabled(true))
        .await
        .unwrap();
    sign_in_and_lose_the_network(engine).await;
}

/// A cashier who may take offline payments signed in, the network down.
pub async fn sign_in_and_lose_the_network(engine: &PosEngine) {
    engine
        .sign_in(StaffSession {
            staff_id: StaffId::parse("cashier-1").unwrap(),
            may_take_offline_payments: true,
        })
        .unwrap();
    engine.report_network(false).await.unwrap();
}

/// Order `order-<n>` of `cents`, and its card payment begun (the whole
/// order): the id to confirm.
pub async fn begin_sale(engine: &PosEngine, n: usize, cents: i64) -> PaymentId {
    begin_order_payment(
        engine,
        NewOrder {
            order_id: Some(format!("order-{n}")),
            total: usd(cents),
            contact: None,
        },
    )
    .await
}

/// Creates `order` and begins a card payment of its whole total (offline
/// when the network is down): the id to confirm.
pub async fn begin_order_payment(engine: &PosEngine, order: NewOrder) -> PaymentId {
    let amount = order.total;
    let order = engine.create_order(order).await.unwrap();
    engine
        .begin_card_payment(CardPaymentRequest {
            order_id: order.id.clone(),
            payment_id: None,
            amount,
            tip: None,
            behaviour: OfflineBehaviour::PreferOnline,
            tender: TenderKind::Card,
        })
        .await
        .unwrap()
        .payment_id
}

/// A chip Visa card read by a "Wisepad 3" (offline-capable under Shopify
/// POS), its fingerprint and sealed data told apart by `n`.
pub fn chip_card(n: usize) -> CardRead {
    CardRead {
        entry_mode: EntryMode::Chip,
        network: Network::Visa,
        last4: "4242".into(),
        fingerprint: Some(format!("fp-{n}")),
        reader_model: "Wisepad 3".into(),
        sealed_card_data: vec![n as u8; 48],
    }
}

/// Order `order-<n>` of `cents`, paid whole by [`chip_card`]`(n)`.
pub async fn sell_offline(engine: &PosEngine, n: usize, cents: i64) -> PaymentId {
    let id = begin_sale(engine, n, cents).await;
    engine
        .confirm_card_payment(&id, chip_card(n))
        .await
        .unwrap()
        .id
}
