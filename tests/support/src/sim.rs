//! The simulator's side of the rig: an engine in euros with its limits out
//! of the way, a simulated profile reader paired to it that seals each
//! card to the simulator's key, sales paid with the simulator's test cards
//! (built on [`Sale`]), the engine's HTTP gateway to the simulator, and
//! forwarding until every payment is settled on a virtual clock.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pos_core::card_seal::ProcessorKey;
use pos_core::clock::{Clock, VirtualClock};
use pos_core::gateway::{AuthorizeRequest, ForwardRequest, StaticToken};
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{OrderId, PaymentId, PaymentState};
use pos_core::money::{Currency, Money};
use pos_core::policy::{CurrencyLimits, EntryMode, Policy};
use pos_core::reader_trust::{ReaderIdentity, CARD_CONTEXT};
use pos_core::store::MemoryStore;
use pos_core::{EngineConfig, PosEngine};
use pos_sim::{Simulator, TestCard};

pub use crate::reader::{certified_identity, next_counter, trusting_the_test_reader, CardReader};
pub use crate::rig::{clock_corrections, manual_forwarding, Rig, RigBuilder, T0};
pub use crate::sale::{Reader, Sale};

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

/// `cents` in euros.
pub fn euros(cents: i64) -> Money {
    Money::new(cents, eur())
}

/// The serial of the simulated reader the tests pair.
pub const READER_SERIAL: &str = "SIM-READER-1";

/// The model certified for the readers of [`certified_reader`].
pub const CERTIFIED_MODEL: &str = "Wisepad 3";

/// A reader of `serial` certified by the simulator's reader authority, its
/// key derived from the serial (as the simulated reader's): the reader a
/// test that builds requests by hand signs its card data with.
pub fn certified_reader(serial: &str) -> ReaderIdentity {
    certified_identity(serial, CERTIFIED_MODEL)
}

/// What a request carries with `sealed` read by `reader`: its certificate
/// and its signature of the whole blob (`reader_certificate`,
/// `reader_signature`).
pub fn signed_by(reader: &ReaderIdentity, sealed: &[u8]) -> ReaderProof {
    (
        Some(reader.certificate().encode()),
        Some(reader.sign(CARD_CONTEXT, sealed).to_vec()),
    )
}

/// A request's `reader_certificate` and `reader_signature`.
pub type ReaderProof = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A forwarding request as a device sends it, built by hand: payment `id`
/// of `cents` euros from `device` for order `order-1`, taken at [`T0`] with
/// a deadline a day later, the first attempt, `card` read by chip, its
/// sealed data `sealed` and the reader's `proof` ([`signed_by`]).
pub fn forward_request(
    device: &str,
    id: &str,
    cents: i64,
    card: &TestCard,
    sealed: Vec<u8>,
    proof: ReaderProof,
) -> ForwardRequest {
    ForwardRequest {
        device_id: device.into(),
        payment_id: PaymentId::parse(id).unwrap(),
        order_id: OrderId::parse("order-1").unwrap(),
        amount: euros(cents),
        tip: None,
        entry_mode: EntryMode::Chip,
        network: card.network,
        last4: card.last4().into(),
        taken_at: T0,
        deadline: T0.plus(Duration::from_secs(24 * 3600)),
        attempt: 1,
        sealed_card_data: sealed,
        reader_certificate: proof.0,
        reader_signature: proof.1,
        online: None,
        account: None,
    }
}

/// The online authorization of what `r` forwards.
pub fn authorize_request(r: &ForwardRequest) -> AuthorizeRequest {
    AuthorizeRequest {
        device_id: r.device_id.clone(),
        payment_id: r.payment_id.clone(),
        order_id: r.order_id.clone(),
        amount: r.amount,
        tip: r.tip,
        entry_mode: r.entry_mode,
        network: r.network,
        last4: r.last4.clone(),
        sealed_card_data: r.sealed_card_data.clone(),
        reader_certificate: r.reader_certificate.clone(),
        reader_signature: r.reader_signature.clone(),
        account: r.account.clone(),
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stand-in for the reader's keyed fingerprint of the card number.
pub fn fingerprint(card: &TestCard) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, card.pan.as_bytes());
    hex(&d.as_ref()[..8])
}

/// Shopify's preset with every limit out of the way (thousands of payments),
/// trusting the simulator's reader authority.
pub fn permissive_policy() -> Policy {
    trusting_the_test_reader(Policy::shopify_pos(eur()).with_enabled(true).with_limits(
        eur(),
        CurrencyLimits {
            per_payment: None,
            per_order: Money::new(1_000_000_000, eur()),
            device_amount: None,
            device_count: None,
            per_card: None,
            warn_percent: 100,
        },
    ))
}

/// The engine's HTTP gateway to `sim`.
pub fn gateway(sim: &Simulator, timeout: Duration) -> Arc<HttpGateway> {
    let mut c = HttpGatewayConfig::new(sim.base_url());
    c.allow_plain_http = true;
    c.request_timeout = timeout;
    Arc::new(HttpGateway::new(c, Arc::new(StaticToken(sim.token()))).unwrap())
}

/// The simulated reader ([`READER_SERIAL`], of the first model the
/// [`permissive_policy`] lets take offline payments), sealing to `key`.
pub fn sim_reader(key: ProcessorKey) -> Arc<CardReader> {
    let policy = permissive_policy();
    let model = policy.offline_readers.iter().next().unwrap();
    Arc::new(CardReader::certified(READER_SERIAL, model, key))
}

/// The rig against a simulator whose processor key is `key`: device
/// `till-1` in euros, the [`permissive_policy`], the [`sim_reader`] paired
/// (online first), a cashier signed in, the network down, forwarding by
/// hand (jitter seed 7).
pub fn rig(key: ProcessorKey) -> RigBuilder<MemoryStore> {
    rig_of(sim_reader(key))
}

fn rig_of(reader: Arc<CardReader>) -> RigBuilder<MemoryStore> {
    let config = EngineConfig::new(std::env::temp_dir().join("pos-sim-rig"), "till-1", "EUR");
    Rig::builder()
        .config(config.unwrap())
        .configure(|c| c.forwarding = manual_forwarding(7))
        .policy(permissive_policy())
        .reader(reader)
}

/// The set-up of [`rig`] on `engine`, opened elsewhere. Returns the reader.
pub async fn prepare(engine: &PosEngine, key: ProcessorKey) -> Arc<CardReader> {
    let reader = sim_reader(key);
    rig_of(reader.clone()).set_up(engine).await;
    reader
}

/// A sale paid with one of the simulator's test cards.
pub trait PaidWith {
    /// Paid by chip with `card`: its summary, its fingerprint and its
    /// number sealed (the simulator decides by the number).
    fn paid_with(self, card: &TestCard) -> Sale;
}

impl PaidWith for Sale {
    fn paid_with(self, card: &TestCard) -> Sale {
        self.card(CardRead {
            entry_mode: EntryMode::Chip,
            network: card.network,
            last4: card.last4().into(),
            fingerprint: Some(fingerprint(card)),
            reader_model: String::new(),
            sealed_card_data: Vec::new(),
            reader_serial: None,
            reader_signature: None,
            tap_to_pay_on_phone: false,
        })
        .sealing(card.secret())
    }
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
