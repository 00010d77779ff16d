//! Test helpers every POS Core suite shares: the test reader that seals
//! and signs card data for a payment's challenge, one sale helper (order →
//! begin → read → confirm), seeded randomness, the power-cut workload and,
//! with the `sim` feature, the processor-simulator rig.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod rng;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod workload;

#[allow(unused_imports)]
pub use workload::{online, remember_vendor_reader};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use pos_core::card_seal::{CardBinding, CardSecret, ProcessorKey};
use pos_core::checkout::{CardChallenge, CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::engine::StaffSession;
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{PaymentId, StaffId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network, Policy, TenderKind};
use pos_core::reader_trust::{simulator_authority, ReaderIdentity, CARD_CONTEXT};
use pos_core::PosEngine;

pub fn usd(cents: i64) -> Money {
    Money::new(cents, Currency::parse("USD").unwrap())
}

/// The test reader's serial.
pub const READER_SERIAL: &str = "WP3-TEST-1";

/// A profile reader for tests: a "Wisepad 3" certified by the simulator's
/// reader authority, sealing to a fixed processor key and signing its reads.
pub struct TestReader {
    pub identity: ReaderIdentity,
    counter: AtomicU64,
    processor: ProcessorKey,
}

/// The one test reader (its counter goes on across tests of a binary).
pub fn test_reader() -> &'static TestReader {
    static R: OnceLock<TestReader> = OnceLock::new();
    R.get_or_init(|| TestReader {
        identity: ReaderIdentity::provision(
            &pos_core::reader_trust::simulator_reader_seed(READER_SERIAL),
            &simulator_authority(),
            READER_SERIAL,
            "Wisepad 3",
        )
        .unwrap(),
        counter: AtomicU64::new(1),
        processor: processor_key(),
    })
}

/// Any valid X25519 public key (the tests never open what is sealed).
pub fn processor_key() -> ProcessorKey {
    let rng = ring::rand::SystemRandom::new();
    let k = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng).unwrap();
    let mut p = [0u8; 32];
    p.copy_from_slice(k.compute_public_key().unwrap().as_ref());
    ProcessorKey(p)
}

impl TestReader {
    /// Reads `card` for `challenge`: sealed v2, signed.
    pub fn read(&self, challenge: &CardChallenge, card: CardRead) -> CardRead {
        let counter = self.counter.fetch_add(1, Ordering::SeqCst);
        read_as(
            &self.identity,
            READER_SERIAL,
            counter,
            &self.processor,
            challenge,
            card,
        )
    }
}

/// `card` read by the reader `identity` (serial `serial`) for `challenge`.
pub fn read_with(
    identity: &ReaderIdentity,
    serial: &str,
    challenge: &CardChallenge,
    card: CardRead,
) -> CardRead {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let counter = COUNTER.fetch_add(1, Ordering::SeqCst);
    read_as(identity, serial, counter, &processor_key(), challenge, card)
}

fn read_as(
    identity: &ReaderIdentity,
    serial: &str,
    counter: u64,
    processor: &ProcessorKey,
    challenge: &CardChallenge,
    mut card: CardRead,
) -> CardRead {
    let binding = CardBinding {
        payment_id: challenge.payment_id.as_str().to_owned(),
        device_id: challenge.device_id.clone(),
        amount_minor: challenge.amount.minor_units(),
        currency: challenge.amount.currency().code().to_owned(),
        reader_serial: serial.into(),
        counter,
        phone_nonce: challenge.nonce,
        read_at_ms: 1_800_000_000_000,
        entry_mode: card.entry_mode,
        network: card.network,
        last4: card.last4.clone(),
        fingerprint: card.fingerprint.clone().unwrap_or_default(),
    };
    let secret = CardSecret {
        pan: format!("424242424242{}", card.last4),
        expiry: "1230".into(),
    };
    card.sealed_card_data = pos_core::card_seal::seal(&binding, &secret, processor).unwrap();
    card.reader_signature = Some(identity.sign(CARD_CONTEXT, &card.sealed_card_data).to_vec());
    card.reader_serial = Some(serial.into());
    card
}

/// Pairs the reader `identity` (online first).
pub async fn pair_identity(engine: &PosEngine, identity: &ReaderIdentity) {
    online(engine).await;
    engine
        .remember_paired_reader(&identity.certificate().encode(), "1.0")
        .await
        .unwrap();
}

/// The policy `policy` trusting the simulator's reader authority.
pub fn trusting_the_test_reader(mut policy: Policy) -> Policy {
    policy
        .reader_authorities
        .insert(pos_core::crypto::hex(&simulator_authority().public_key()));
    policy
}

/// Pairs the test reader (the service is reported healthy first: a new
/// reader is paired only online). The policy must trust its authority.
pub async fn pair_test_reader(engine: &PosEngine) {
    pair_identity(engine, &test_reader().identity).await;
}

/// Shopify POS policy enabled, the test reader paired, a cashier who may
/// take offline payments signed in, the network reported down.
pub async fn go_offline(engine: &PosEngine) {
    engine
        .set_policy(trusting_the_test_reader(
            Policy::shopify_pos(Currency::parse("USD").unwrap()).with_enabled(true),
        ))
        .await
        .unwrap();
    pair_test_reader(engine).await;
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

/// A chip Visa card as a "Wisepad 3" (offline-capable under Shopify POS)
/// reports it, its fingerprint told apart by `n`; not yet read for a
/// payment (see [`chip_card_for`]).
pub fn chip_card(n: usize) -> CardRead {
    CardRead {
        entry_mode: EntryMode::Chip,
        network: Network::Visa,
        last4: "4242".into(),
        fingerprint: Some(format!("fp-{n}")),
        reader_model: "Wisepad 3".into(),
        sealed_card_data: vec![n as u8; 48],
        reader_serial: None,
        reader_signature: None,
    }
}

/// [`chip_card`]`(n)` read by the test reader for the begun payment `id`.
pub fn chip_card_for(engine: &PosEngine, id: &PaymentId, n: usize) -> CardRead {
    read_for(engine, id, chip_card(n))
}

/// `card` read by the test reader for the begun payment `id`.
pub fn read_for(engine: &PosEngine, id: &PaymentId, card: CardRead) -> CardRead {
    test_reader().read(&engine.card_challenge(id).unwrap(), card)
}

/// Order `order-<n>` of `cents`, paid whole by [`chip_card`]`(n)`.
pub async fn sell_offline(engine: &PosEngine, n: usize, cents: i64) -> PaymentId {
    let id = begin_sale(engine, n, cents).await;
    engine
        .confirm_card_payment(&id, chip_card_for(engine, &id, n))
        .await
        .unwrap()
        .id
}
