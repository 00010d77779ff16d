//! The card readers the tests read cards with: profile readers certified by
//! the simulator's reader authority that seal a card (card data version 2)
//! for one payment's challenge and sign what they sealed, the shared test
//! reader among them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use pos_core::card_seal::{CardBinding, CardChallenge, CardSecret, ProcessorKey};
use pos_core::clock::Timestamp;
use pos_core::ledger::{CardRead, RememberedReader};
use pos_core::policy::{EntryMode, Network, Policy};
use pos_core::reader_trust::{
    simulator_authority, simulator_reader_seed, ReaderIdentity, CARD_CONTEXT,
};
use pos_core::PosEngine;

use crate::workload::online;

/// The test reader's serial.
pub const READER_SERIAL: &str = "WP3-TEST-1";

/// The test reader's model (offline-capable under every preset that names
/// readers).
pub const TEST_READER_MODEL: &str = "Wisepad 3";

/// A profile reader: certified by the simulator's reader authority, it
/// seals each card it reads to `processor` for the payment's challenge and
/// signs the sealed data.
pub struct CardReader {
    pub identity: ReaderIdentity,
    pub serial: String,
    /// The model its certificate names.
    pub model: String,
    /// The processor key it seals to.
    pub processor: ProcessorKey,
}

impl CardReader {
    /// The reader `serial` of `model`, its key derived from the serial (as
    /// a simulated reader's), sealing to `processor`.
    pub fn certified(serial: &str, model: &str, processor: ProcessorKey) -> CardReader {
        CardReader {
            identity: certified_identity(serial, model),
            serial: serial.into(),
            model: model.into(),
            processor,
        }
    }

    /// Reads `card` for `challenge`: sealed (the number made from its last
    /// four) and signed.
    pub fn read(&self, challenge: &CardChallenge, card: CardRead) -> CardRead {
        let secret = secret_of(&card);
        self.read_sealing(challenge, card, &secret)
    }

    /// Reads `card`, whose number and expiry are `secret`, for `challenge`.
    pub fn read_sealing(
        &self,
        challenge: &CardChallenge,
        card: CardRead,
        secret: &CardSecret,
    ) -> CardRead {
        seal_and_sign(
            &self.identity,
            &self.serial,
            &self.processor,
            challenge,
            card,
            secret,
        )
    }

    /// What an engine that paired it at `at` remembers of it.
    pub fn remembered(&self, at: Timestamp) -> RememberedReader {
        RememberedReader {
            serial: self.serial.clone(),
            model: self.model.clone(),
            firmware: "1.0".into(),
            paired_at: at,
            certificate: Some(self.identity.certificate().encode()),
            vendor: false,
        }
    }
}

/// The identity of the reader `serial` of `model`, certified by the
/// simulator's reader authority, its key derived from the serial (as a
/// simulated reader's).
pub fn certified_identity(serial: &str, model: &str) -> ReaderIdentity {
    ReaderIdentity::provision(
        &simulator_reader_seed(serial),
        &simulator_authority(),
        serial,
        model,
    )
    .unwrap()
}

/// The one test reader: a "Wisepad 3" sealing to a throwaway processor key
/// (the tests never open what it seals).
pub fn test_reader() -> &'static Arc<CardReader> {
    static R: OnceLock<Arc<CardReader>> = OnceLock::new();
    R.get_or_init(|| {
        Arc::new(CardReader::certified(
            READER_SERIAL,
            TEST_READER_MODEL,
            processor_key(),
        ))
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

/// `card` read by the reader `identity` (serial `serial`) for `challenge`,
/// sealed to a throwaway key.
pub fn read_with(
    identity: &ReaderIdentity,
    serial: &str,
    challenge: &CardChallenge,
    card: CardRead,
) -> CardRead {
    let secret = secret_of(&card);
    seal_and_sign(identity, serial, &processor_key(), challenge, card, &secret)
}

/// A test number ending in the card's last four.
fn secret_of(card: &CardRead) -> CardSecret {
    CardSecret {
        pan: format!("424242424242{}", card.last4),
        expiry: "1230".into(),
    }
}

fn seal_and_sign(
    identity: &ReaderIdentity,
    serial: &str,
    processor: &ProcessorKey,
    challenge: &CardChallenge,
    mut card: CardRead,
    secret: &CardSecret,
) -> CardRead {
    let binding = CardBinding {
        payment_id: challenge.payment_id.as_str().to_owned(),
        device_id: challenge.device_id.clone(),
        amount_minor: challenge.amount.minor_units(),
        currency: challenge.amount.currency().code().to_owned(),
        reader_serial: serial.into(),
        counter: next_counter(),
        phone_nonce: challenge.nonce,
        read_at_ms: 1_800_000_000_000,
        entry_mode: card.entry_mode,
        network: card.network,
        last4: card.last4.clone(),
        fingerprint: card.fingerprint.clone().unwrap_or_default(),
    };
    card.sealed_card_data = pos_core::card_seal::seal(&binding, secret, processor).unwrap();
    card.reader_signature = Some(identity.sign(CARD_CONTEXT, &card.sealed_card_data).to_vec());
    card.reader_serial = Some(serial.into());
    card
}

/// A chip Visa card as a "Wisepad 3" reports it, its fingerprint told
/// apart by `n`; not yet read for a payment (see [`chip_card_for`]).
pub fn chip_card(n: usize) -> CardRead {
    CardRead {
        entry_mode: EntryMode::Chip,
        network: Network::Visa,
        last4: "4242".into(),
        fingerprint: Some(format!("fp-{n}")),
        reader_model: TEST_READER_MODEL.into(),
        sealed_card_data: vec![n as u8; 48],
        reader_serial: None,
        reader_signature: None,
        tap_to_pay_on_phone: false,
    }
}

/// [`chip_card`]`(n)` read by the test reader for the begun payment `id`.
pub fn chip_card_for(
    engine: &PosEngine,
    id: &pos_core::lifecycle::PaymentId,
    n: usize,
) -> CardRead {
    read_for(engine, id, chip_card(n))
}

/// `card` read by the test reader for the begun payment `id`.
pub fn read_for(
    engine: &PosEngine,
    id: &pos_core::lifecycle::PaymentId,
    card: CardRead,
) -> CardRead {
    test_reader().read(&engine.card_challenge(id).unwrap(), card)
}

/// Pairs the reader `identity` (online first: a new reader is paired only
/// online). The engine stays online.
pub async fn pair_identity(engine: &PosEngine, identity: &ReaderIdentity) {
    online(engine).await;
    engine
        .remember_paired_reader(&identity.certificate().encode(), "1.0")
        .await
        .unwrap();
}

/// Pairs the test reader. The policy must trust its authority.
pub async fn pair_test_reader(engine: &PosEngine) {
    pair_identity(engine, &test_reader().identity).await;
}

/// The policy `policy` trusting the simulator's reader authority (the
/// test readers').
pub fn trusting_the_test_reader(mut policy: Policy) -> Policy {
    policy
        .reader_authorities
        .insert(pos_core::crypto::hex(&simulator_authority().public_key()));
    policy
}
