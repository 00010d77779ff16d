//! Shared set-up of the simulator's tests and benchmark: an engine with
//! limits out of the way, offline payments taken with sealed test cards,
//! and forwarding until every payment is settled on a virtual clock.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use pos_core::card_seal::{seal, ProcessorKey};
use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::{Clock, VirtualClock};
use pos_core::engine::StaffSession;
use pos_core::gateway::StaticToken;
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{PaymentId, PaymentState, StaffId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{CurrencyLimits, EntryMode, Policy, TenderKind};
use pos_core::PosEngine;
use pos_sim::{Simulator, TestCard};

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

/// Shopify's preset with every limit out of the way (thousands of payments).
pub fn permissive_policy() -> Policy {
    Policy::shopify_pos(eur()).with_enabled(true).with_limits(
        eur(),
        CurrencyLimits {
            per_payment: None,
            per_order: Money::new(1_000_000_000, eur()),
            device_amount: None,
            device_count: None,
            per_card: None,
            warn_percent: 100,
        },
    )
}

/// The engine's HTTP gateway to `sim`.
pub fn gateway(sim: &Simulator, timeout: Duration) -> Arc<HttpGateway> {
    let mut c = HttpGatewayConfig::new(sim.base_url());
    c.allow_plain_http = true;
    c.request_timeout = timeout;
    Arc::new(HttpGateway::new(c, Arc::new(StaticToken(sim.token()))).unwrap())
}

/// Policy, a permitted cashier, the network down. Returns the reader model.
pub async fn prepare(engine: &PosEngine) -> String {
    let policy = permissive_policy();
    let reader = policy.offline_readers.iter().next().unwrap().clone();
    engine.set_policy(policy).await.unwrap();
    engine
        .sign_in(StaffSession {
            staff_id: StaffId::parse("cashier-1").unwrap(),
            may_take_offline_payments: true,
        })
        .unwrap();
    engine.report_network(false).await.unwrap();
    reader
}

/// Takes one offline payment of `cents` with `card` sealed to `key`.
pub async fn take(
    engine: &PosEngine,
    reader: &str,
    key: &ProcessorKey,
    card: &TestCard,
    cents: i64,
    payment_id: Option<String>,
) -> PaymentId {
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
            payment_id,
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
                reader_model: reader.to_owned(),
                sealed_card_data: seal(&card.secret(), key).unwrap(),
            },
        )
        .await
        .unwrap();
    d.payment_id
}

/// Forwards until every payment is settled (or `max_rounds`), moving the
/// virtual clock between rounds to the first retry time, or to the last one
/// when `all_retries_together`. Returns the rounds run.
pub async fn settle(
    engine: &PosEngine,
    clock: &VirtualClock,
    all_retries_together: bool,
    max_rounds: u32,
) -> u32 {
    let mut rounds = 0;
    loop {
        engine.forward_now().await.unwrap();
        rounds += 1;
        let retries: Vec<_> = engine
            .list_payments()
            .unwrap()
            .into_iter()
            .filter(|p| !p.state.is_final())
            .map(|p| match p.state {
                PaymentState::FailedToForward {
                    next_retry_at: Some(t),
                    ..
                } => t,
                _ => clock.wall_now(),
            })
            .collect();
        if retries.is_empty() || rounds >= max_rounds {
            return rounds;
        }
        let next = if all_retries_together {
            retries.iter().max()
        } else {
            retries.iter().min()
        }
        .copied()
        .unwrap_or_else(|| clock.wall_now());
        let now = clock.wall_now();
        if next > now {
            clock.advance(Duration::from_millis((next.millis() - now.millis()) as u64));
        }
    }
}
