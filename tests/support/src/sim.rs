//! Shared set-up of the simulator's tests and benchmark: an engine with
//! limits out of the way, a profile reader paired to it, offline payments
//! taken with test cards that reader seals for each payment (card data
//! version 2) and signs, and forwarding until every payment is settled on a
//! virtual clock.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pos_core::card_seal::{seal, CardBinding, ProcessorKey};
use pos_core::checkout::{CardChallenge, CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::{Clock, VirtualClock};
use pos_core::connectivity::ProbeOutcome;
use pos_core::engine::StaffSession;
use pos_core::gateway::StaticToken;
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{PaymentId, PaymentState, StaffId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{CurrencyLimits, EntryMode, Policy, TenderKind};
use pos_core::reader_trust::{
    simulator_authority, simulator_reader_seed, ReaderIdentity, CARD_CONTEXT,
};
use pos_core::PosEngine;
use pos_sim::{Simulator, TestCard};

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

/// The serial of the simulated reader the tests pair.
pub const READER_SERIAL: &str = "SIM-READER-1";

/// A profile reader certified by the simulator's reader authority.
pub struct SimCardReader {
    pub serial: String,
    /// The model its certificate names (one the policy lets take offline
    /// payments).
    pub model: String,
    pub identity: ReaderIdentity,
}

/// The model certified for the readers of [`certified_reader`].
pub const CERTIFIED_MODEL: &str = "Wisepad 3";

/// A reader of `serial` certified by the simulator's reader authority, its
/// key derived from the serial (as the simulated reader's): the reader a
/// test that builds requests by hand signs its card data with.
pub fn certified_reader(serial: &str) -> ReaderIdentity {
    ReaderIdentity::provision(
        &simulator_reader_seed(serial),
        &simulator_authority(),
        serial,
        CERTIFIED_MODEL,
    )
    .unwrap()
}

/// What a request carries with `sealed` read by `reader`: its certificate
/// and its signature of the whole blob (`reader_certificate`,
/// `reader_signature`).
pub fn signed_by(reader: &ReaderIdentity, sealed: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    (
        Some(reader.certificate().encode()),
        Some(reader.sign(CARD_CONTEXT, sealed).to_vec()),
    )
}

/// The next reader counter: strictly increasing, also across processes
/// (the crash test's children take payments with the same reader against
/// one simulator, which refuses a counter it has seen), so it starts from
/// the wall clock in microseconds and never goes below it.
pub fn next_counter() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap();
    now.max(previous + 1)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The binding a reader seals for `challenge`, reading `card` by chip.
pub fn binding_for(challenge: &CardChallenge, serial: &str, card: &TestCard) -> CardBinding {
    CardBinding {
        payment_id: challenge.payment_id.as_str().to_owned(),
        device_id: challenge.device_id.clone(),
        amount_minor: challenge.amount.minor_units(),
        currency: challenge.amount.currency().code().to_owned(),
        reader_serial: serial.to_owned(),
        counter: next_counter(),
        phone_nonce: challenge.nonce,
        read_at_ms: 1_800_000_000_000,
        entry_mode: EntryMode::Chip,
        network: card.network,
        last4: card.last4().to_owned(),
        fingerprint: fingerprint(card),
    }
}

/// A stand-in for the reader's keyed fingerprint of the card number.
pub fn fingerprint(card: &TestCard) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, card.pan.as_bytes());
    hex(&d.as_ref()[..8])
}

/// Shopify's preset with every limit out of the way (thousands of payments),
/// trusting the simulator's reader authority.
pub fn permissive_policy() -> Policy {
    let mut policy = Policy::shopify_pos(eur()).with_enabled(true).with_limits(
        eur(),
        CurrencyLimits {
            per_payment: None,
            per_order: Money::new(1_000_000_000, eur()),
            device_amount: None,
            device_count: None,
            per_card: None,
            warn_percent: 100,
        },
    );
    policy
        .reader_authorities
        .insert(hex(&simulator_authority().public_key()));
    policy
}

/// The engine's HTTP gateway to `sim`.
pub fn gateway(sim: &Simulator, timeout: Duration) -> Arc<HttpGateway> {
    let mut c = HttpGatewayConfig::new(sim.base_url());
    c.allow_plain_http = true;
    c.request_timeout = timeout;
    Arc::new(HttpGateway::new(c, Arc::new(StaticToken(sim.token()))).unwrap())
}

/// Policy, the simulated reader paired (the service is reported healthy
/// first: a new reader is paired only online), a permitted cashier, the
/// network down. Returns the reader.
pub async fn prepare(engine: &PosEngine) -> SimCardReader {
    let policy = permissive_policy();
    let model = policy.offline_readers.iter().next().unwrap().clone();
    engine.set_policy(policy).await.unwrap();
    let identity = ReaderIdentity::provision(
        &simulator_reader_seed(READER_SERIAL),
        &simulator_authority(),
        READER_SERIAL,
        &model,
    )
    .unwrap();
    engine.report_network(true).await.unwrap();
    for _ in 0..5 {
        let _ = engine.report_probe(ProbeOutcome::Healthy).await;
    }
    engine
        .remember_paired_reader(&identity.certificate().encode(), "1.0")
        .await
        .unwrap();
    engine
        .sign_in(StaffSession {
            staff_id: StaffId::parse("cashier-1").unwrap(),
            may_take_offline_payments: true,
        })
        .unwrap();
    engine.report_network(false).await.unwrap();
    SimCardReader {
        serial: READER_SERIAL.into(),
        model,
        identity,
    }
}

/// Takes one offline payment of `cents` with `card`, read by `reader` for
/// this payment and sealed to `key`.
pub async fn take(
    engine: &PosEngine,
    reader: &SimCardReader,
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
    let binding = binding_for(&d.challenge, &reader.serial, card);
    let sealed = seal(&binding, &card.secret(), key).unwrap();
    let signature = reader.identity.sign(CARD_CONTEXT, &sealed).to_vec();
    engine
        .confirm_card_payment(
            &d.payment_id,
            CardRead {
                entry_mode: EntryMode::Chip,
                network: card.network,
                last4: card.last4().into(),
                fingerprint: Some(binding.fingerprint),
                reader_model: reader.model.clone(),
                sealed_card_data: sealed,
                reader_serial: Some(reader.serial.clone()),
                reader_signature: Some(signature),
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
