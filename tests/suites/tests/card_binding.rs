//! Sealed card data bound to its payment (`pos_core::card_seal`, version 2)
//! as the processor checks it, through the engine's HTTP gateway: a blob is
//! charged only with the request it was sealed for (payment id, device,
//! amount, currency, entry mode, network, last four) and signed by the
//! certified reader its header names, once (that reader's counter and the
//! ephemeral key), and a legitimate retry still gets its first answer.
//! Then the engine's part: it sends its reader's certificate and signature
//! on both routes, and keeps a reader with pending payments.

#![allow(clippy::unwrap_used)]

use pos_test_support::sim as support;
use support::{authorize_request as authorize, PaidWith, ReaderProof, Rig, Sale};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pos_core::card_seal::{
    aad_v2, content_key_v2, parse_v2, seal, seal_v1, CardBinding, ProcessorKey, PHONE_NONCE_LEN,
};
use pos_core::gateway::StaticToken;
use pos_core::gateway::{ForwardRequest, Gateway, GatewayDecision};
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::lifecycle::{DeclineReason, ForwardErrorKind, PaymentState};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network};
use pos_core::reader_trust::{ReaderAuthority, ReaderIdentity, CARD_CONTEXT};
use pos_core::PosError;
use pos_sim::{test_cards, ChargeOutcome, Fault, FaultPlan, SimConfig, Simulator, TestCard};

/// The HTTP gateway's request timeout: only bounds a hang (the simulator
/// answers at once, but a loaded test machine may not run it for a while).
const LIMIT: Duration = Duration::from_secs(60);

const MISMATCH: GatewayDecision = GatewayDecision::Declined {
    reason: DeclineReason::Mismatch,
};
const REPLAYED: GatewayDecision = GatewayDecision::Declined {
    reason: DeclineReason::Replayed,
};

fn sim() -> Simulator {
    Simulator::start(SimConfig::default()).unwrap()
}

fn gateway(sim: &Simulator) -> HttpGateway {
    let mut c = HttpGatewayConfig::new(sim.base_url());
    c.allow_plain_http = true;
    c.request_timeout = LIMIT;
    HttpGateway::new(c, Arc::new(StaticToken(sim.token()))).unwrap()
}

fn visa() -> &'static TestCard {
    &test_cards()[0]
}

/// A reader counter no other test in this binary uses.
fn fresh_counter() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// A test card that declines (insufficient funds).
fn declining() -> &'static TestCard {
    &test_cards()[3]
}

/// What a reader binds a chip read of the Visa test card to.
fn binding(device: &str, id: &str, cents: i64) -> CardBinding {
    binding_of(visa(), device, id, cents)
}

/// What the reader WP3-1 binds a chip read of `card` to, with a fresh
/// counter.
fn binding_of(card: &TestCard, device: &str, id: &str, cents: i64) -> CardBinding {
    CardBinding {
        payment_id: id.into(),
        device_id: device.into(),
        amount_minor: cents,
        currency: "EUR".into(),
        reader_serial: "WP3-1".into(),
        counter: fresh_counter(),
        phone_nonce: [9; PHONE_NONCE_LEN],
        read_at_ms: 1_800_000_000_000,
        entry_mode: EntryMode::Chip,
        network: card.network,
        last4: card.last4().into(),
        fingerprint: format!("fp-{}", card.last4()),
    }
}

fn sealed(sim: &Simulator, b: &CardBinding) -> Vec<u8> {
    seal(b, &visa().secret(), &sim.processor_key()).unwrap()
}

/// The certificate and signature the certified reader named in the header
/// of `card_data` sends with it (none for data whose header does not read,
/// version 1 included).
fn reader_proof(card_data: &[u8]) -> ReaderProof {
    match parse_v2(card_data) {
        Ok(p) => support::signed_by(
            &support::certified_reader(&p.binding.reader_serial),
            card_data,
        ),
        Err(_) => (None, None),
    }
}

/// Seals like `card_seal::seal` but with the ephemeral X25519 key chosen
/// by the caller (a reader whose randomness repeats): the header is
/// `seal`'s own, its ephemeral key and nonce replaced, then encrypted again.
fn sealed_with_ephemeral(
    processor: &ProcessorKey,
    b: &CardBinding,
    eph_secret: [u8; 32],
    nonce: [u8; 12],
) -> Vec<u8> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    use x25519_dalek::{PublicKey, StaticSecret};
    let template = seal(b, &visa().secret(), processor).unwrap();
    let header_len = parse_v2(&template).unwrap().header_len;
    let eph = StaticSecret::from(eph_secret);
    let eph_pub = *PublicKey::from(&eph).as_bytes();
    let mut header = template[..header_len].to_vec();
    header[header_len - 44..header_len - 12].copy_from_slice(&eph_pub);
    header[header_len - 12..].copy_from_slice(&nonce);
    let shared = eph.diffie_hellman(&PublicKey::from(processor.0));
    let key = content_key_v2(shared.as_bytes(), &eph_pub, &processor.0);
    let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    let mut body = serde_json::to_vec(&visa().secret()).unwrap();
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad_v2(&header, &processor.0)),
            &mut body,
        )
        .unwrap();
    [header, body].concat()
}

/// A forwarding request of `cents` from `device` for payment `id`,
/// carrying `card_data` and the Visa card's summary, read by chip, signed
/// by the certified reader its header names.
fn forward(device: &str, id: &str, cents: i64, card_data: &[u8]) -> ForwardRequest {
    forward_of(
        visa(),
        device,
        id,
        cents,
        card_data,
        reader_proof(card_data),
    )
}

/// A forwarding request carrying `card_data` with the summary of `card`
/// and the reader certificate and signature `proof`.
fn forward_of(
    card: &TestCard,
    device: &str,
    id: &str,
    cents: i64,
    card_data: &[u8],
    proof: ReaderProof,
) -> ForwardRequest {
    support::forward_request(device, id, cents, card, card_data.to_vec(), proof)
}

fn approved(sim: &Simulator) -> Vec<(String, String, i64)> {
    sim.ledger()
        .into_iter()
        .filter(|c| matches!(c.outcome, ChargeOutcome::Approved { .. }))
        .map(|c| (c.device_id, c.payment_id, c.amount))
        .collect()
}

fn is_approved(d: &GatewayDecision) -> bool {
    matches!(d, GatewayDecision::Approved { .. })
}

#[test]
fn a_blob_replayed_from_the_same_device_under_a_new_payment_id_is_a_mismatch() {
    let s = sim();
    let g = gateway(&s);
    let blob = sealed(&s, &binding("till-1", "pay-1", 1_000));
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-1", 1_000, &blob))
            .unwrap()
    ));
    for cents in [1_000, 99_999] {
        let id = format!("pay-again-{cents}");
        assert_eq!(
            g.forward(&forward("till-1", &id, cents, &blob)).unwrap(),
            MISMATCH
        );
        assert_eq!(
            g.authorize(&authorize(&forward(
                "till-1",
                &format!("{id}-online"),
                cents,
                &blob
            )))
            .unwrap(),
            MISMATCH
        );
    }
    assert_eq!(approved(&s), [("till-1".into(), "pay-1".into(), 1_000)]);
}

#[test]
fn a_blob_replayed_from_another_device_is_a_mismatch() {
    // A copied blob: 10.00 on till-1, then the same blob for 999.99
    // from another device id (and with the same amount and payment id).
    let s = sim();
    let g = gateway(&s);
    let blob = sealed(&s, &binding("till-1", "pay-1", 1_000));
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-1", 1_000, &blob))
            .unwrap()
    ));
    assert_eq!(
        g.forward(&forward("till-2", "pay-1", 99_999, &blob))
            .unwrap(),
        MISMATCH
    );
    assert_eq!(
        g.forward(&forward("till-2", "pay-1", 1_000, &blob))
            .unwrap(),
        MISMATCH
    );
    assert_eq!(
        g.authorize(&authorize(&forward("till-3", "pay-1", 1_000, &blob)))
            .unwrap(),
        MISMATCH
    );
    assert_eq!(approved(&s), [("till-1".into(), "pay-1".into(), 1_000)]);
}

#[test]
fn a_blob_sent_for_another_amount_is_a_mismatch_and_its_copy_does_not_burn_it() {
    let s = sim();
    let g = gateway(&s);
    let blob = sealed(&s, &binding("till-1", "pay-1", 1_000));
    // A copy sent first, for another amount, from another device: refused,
    // and the read is not marked used by it.
    assert_eq!(
        g.forward(&forward("till-9", "pay-1", 99_999, &blob))
            .unwrap(),
        MISMATCH
    );
    // The blob's own device and id, another amount: refused.
    let b = binding("till-1", "pay-2", 1_000);
    let other = sealed(&s, &b);
    assert_eq!(
        g.forward(&forward("till-1", "pay-2", 1_001, &other))
            .unwrap(),
        MISMATCH
    );
    // Asked again, the same answer.
    assert_eq!(
        g.forward(&forward("till-1", "pay-2", 1_001, &other))
            .unwrap(),
        MISMATCH
    );
    // A copy sent first under the blob's own device and id, for another
    // amount: refused, and the id is still the device's.
    assert_eq!(
        g.forward(&forward("till-1", "pay-1", 99_999, &blob))
            .unwrap(),
        MISMATCH
    );
    // The genuine request is charged.
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-1", 1_000, &blob))
            .unwrap()
    ));
    assert_eq!(approved(&s), [("till-1".into(), "pay-1".into(), 1_000)]);
    assert_eq!(s.stats().card_data_refusals, 4);
}

#[test]
fn every_bound_field_is_checked_at_both_routes() {
    let s = sim();
    let g = gateway(&s);
    let changes: [fn(&mut ForwardRequest); 4] = [
        |r| r.amount = Money::new(r.amount.minor_units(), Currency::parse("USD").unwrap()),
        |r| r.entry_mode = EntryMode::Manual,
        |r| r.network = Network::Mastercard,
        |r| r.last4 = "0000".into(),
    ];
    for (i, change) in changes.iter().enumerate() {
        for online in [false, true] {
            let id = format!("field-{i}-{online}");
            let blob = sealed(&s, &binding("till-1", &id, 1_000));
            let mut r = forward("till-1", &id, 1_000, &blob);
            change(&mut r);
            let d = if online {
                g.authorize(&authorize(&r)).unwrap()
            } else {
                g.forward(&r).unwrap()
            };
            assert_eq!(d, MISMATCH, "change {i}, online {online}");
        }
    }
    assert!(approved(&s).is_empty());
}

#[test]
fn a_changed_header_byte_is_declined_and_cannot_rebind_a_blob() {
    let s = sim();
    let g = gateway(&s);
    let b = binding("till-1", "pay-1", 1_000);
    let blob = sealed(&s, &b);
    // The amount's first byte, in the clear header.
    let at = 1 + 1 + b.payment_id.len() + 1 + b.device_id.len();
    assert_eq!(
        i64::from_le_bytes(blob[at..at + 8].try_into().unwrap()),
        1_000
    );
    // Re-bound to 999.99: the header reads so, the request says so, and it
    // does not open.
    let mut rebound = blob.clone();
    rebound[at..at + 8].copy_from_slice(&99_999i64.to_le_bytes());
    assert_eq!(parse_v2(&rebound).unwrap().binding.amount_minor, 99_999);
    assert_eq!(
        g.forward(&forward("till-1", "pay-1", 99_999, &rebound))
            .unwrap(),
        MISMATCH
    );
    // Re-bound to another device.
    let mut moved = blob.clone();
    moved[1 + 1 + b.payment_id.len() + 1 + 5] = b'9';
    assert_eq!(parse_v2(&moved).unwrap().binding.device_id, "till-9");
    assert_eq!(
        g.forward(&forward("till-9", "pay-1", 1_000, &moved))
            .unwrap(),
        MISMATCH
    );
    // One flipped bit of the reader counter, request unchanged.
    let mut flipped = blob.clone();
    let counter_at = at + 8 + 1 + 3 + 1 + b.reader_serial.len();
    flipped[counter_at] ^= 1;
    assert_eq!(
        g.forward(&forward("till-1", "pay-2", 1_000, &flipped))
            .unwrap(),
        MISMATCH
    );
    assert!(approved(&s).is_empty());
    // The untouched blob is still good.
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-1", 1_000, &blob))
            .unwrap()
    ));
}

#[test]
fn a_fresh_blob_reusing_a_reader_counter_is_replayed() {
    let s = sim();
    let g = gateway(&s);
    let first = binding("till-1", "pay-1", 1_000);
    let blob = sealed(&s, &first);
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-1", 1_000, &blob))
            .unwrap()
    ));
    // Another payment, correctly bound, the same reader and counter.
    let mut again = binding("till-1", "pay-2", 2_000);
    again.counter = first.counter;
    let blob2 = sealed(&s, &again);
    assert_eq!(
        g.forward(&forward("till-1", "pay-2", 2_000, &blob2))
            .unwrap(),
        REPLAYED
    );
    // At the other route too.
    let mut online = binding("till-1", "pay-3", 3_000);
    online.counter = first.counter;
    let blob3 = sealed(&s, &online);
    assert_eq!(
        g.authorize(&authorize(&forward("till-1", "pay-3", 3_000, &blob3)))
            .unwrap(),
        REPLAYED
    );
    // The same counter from another reader is another read.
    let mut other_reader = binding("till-1", "pay-4", 4_000);
    other_reader.counter = first.counter;
    other_reader.reader_serial = "WP3-2".into();
    let blob4 = sealed(&s, &other_reader);
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-4", 4_000, &blob4))
            .unwrap()
    ));
    assert_eq!(approved(&s).len(), 2);
}

#[test]
fn the_same_ephemeral_key_twice_is_replayed() {
    let s = sim();
    let g = gateway(&s);
    let key = s.processor_key();
    let eph = [0x5a; 32];
    let a = sealed_with_ephemeral(&key, &binding("till-1", "pay-1", 1_000), eph, [1; 12]);
    let b = sealed_with_ephemeral(&key, &binding("till-1", "pay-2", 2_000), eph, [2; 12]);
    assert_eq!(parse_v2(&a).unwrap().eph_pub, parse_v2(&b).unwrap().eph_pub);
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-1", 1_000, &a)).unwrap()
    ));
    assert_eq!(
        g.forward(&forward("till-1", "pay-2", 2_000, &b)).unwrap(),
        REPLAYED
    );
    let c = sealed_with_ephemeral(&key, &binding("till-1", "pay-3", 3_000), eph, [3; 12]);
    assert_eq!(
        g.authorize(&authorize(&forward("till-1", "pay-3", 3_000, &c)))
            .unwrap(),
        REPLAYED
    );
    assert_eq!(approved(&s).len(), 1);
}

#[test]
fn a_legit_retry_gets_its_first_answer_not_replayed() {
    // The first answer is lost after the charge; every retry of the same
    // id, at either route, gets that answer and charges nothing more.
    let s = Simulator::start(SimConfig {
        faults: FaultPlan::none().once_for("pay-1", Fault::DropAfterCommit),
        ..SimConfig::default()
    })
    .unwrap();
    let g = gateway(&s);
    let blob = sealed(&s, &binding("till-1", "pay-1", 1_000));
    let r = forward("till-1", "pay-1", 1_000, &blob);
    assert_eq!(g.forward(&r).unwrap_err().kind, ForwardErrorKind::NoAnswer);
    let first = g.forward(&r).unwrap();
    assert!(is_approved(&first), "{first:?}");
    assert_eq!(g.forward(&r).unwrap(), first);
    assert_eq!(g.authorize(&authorize(&r)).unwrap(), first);
    let ledger = s.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].requests, 4);
    assert_eq!(s.stats().card_data_refusals, 0);
    // An online authorization retried the same way.
    let blob = sealed(&s, &binding("till-1", "pay-online", 500));
    let online = authorize(&forward("till-1", "pay-online", 500, &blob));
    let first = g.authorize(&online).unwrap();
    assert!(is_approved(&first));
    assert_eq!(g.authorize(&online).unwrap(), first);
    assert_eq!(approved(&s).len(), 2);
}

#[test]
fn unbound_v1_card_data_is_a_mismatch_unless_accepted_and_then_charged_once() {
    let s = sim();
    let g = gateway(&s);
    let v1 = seal_v1(&visa().secret(), &s.processor_key()).unwrap();
    assert_eq!(
        g.forward(&forward("till-1", "pay-1", 1_000, &v1)).unwrap(),
        MISMATCH
    );
    assert!(approved(&s).is_empty());

    // Accepted for a transition: charged, but the same blob again (the
    // reviewer's replay, from another device for another amount) is refused.
    let s = Simulator::start(SimConfig {
        accept_unbound_card_data: true,
        ..SimConfig::default()
    })
    .unwrap();
    let g = gateway(&s);
    let v1 = seal_v1(&visa().secret(), &s.processor_key()).unwrap();
    let r = forward("till-1", "pay-1", 1_000, &v1);
    let first = g.forward(&r).unwrap();
    assert!(is_approved(&first));
    assert_eq!(g.forward(&r).unwrap(), first, "a retry is not a replay");
    assert_eq!(
        g.forward(&forward("till-2", "pay-1", 99_999, &v1)).unwrap(),
        REPLAYED
    );
    assert_eq!(approved(&s), [("till-1".into(), "pay-1".into(), 1_000)]);
}

// Card data minted by someone else than the reader: anyone can seal a blob
// to the processor's public key, naming any reader serial and counter; only
// the certified reader can sign it.

/// The ways to send a minted blob that names the reader `victim` without
/// its key: unsigned; with the victim's (public) certificate alone, or with
/// a signature by another key; with a certificate for the victim's serial
/// from an authority the processor does not trust, and a signature by that
/// certificate's key.
fn forged_proofs(victim: &ReaderIdentity, blob: &[u8]) -> Vec<(&'static str, ReaderProof)> {
    let cert = victim.certificate();
    let uncertified = ReaderIdentity::with_certificate(&[0x66; 32], cert.clone()).unwrap();
    let rogue_authority = ReaderAuthority::from_seed(&[0x77; 32]).unwrap();
    let rogue = ReaderIdentity::provision(&[0x66; 32], &rogue_authority, &cert.serial, &cert.model)
        .unwrap();
    vec![
        ("unsigned", (None, None)),
        (
            "certificate without a signature",
            (Some(victim.certificate().encode()), None),
        ),
        (
            "signed by an uncertified key",
            (
                Some(victim.certificate().encode()),
                Some(uncertified.sign(CARD_CONTEXT, blob).to_vec()),
            ),
        ),
        (
            "certified by an untrusted authority",
            support::signed_by(&rogue, blob),
        ),
    ]
}

#[test]
fn blobs_minted_by_another_device_naming_a_readers_next_counter_do_not_burn_it() {
    // Attack 1: another device, with its own credentials, device id and
    // payment ids, seals reads naming the victim's reader and its next
    // counter, with a declining card, so that the victim's genuine offline
    // payment with that counter would be declined `replayed`.
    let s = sim();
    let g = gateway(&s);
    let genuine_binding = binding("till-1", "pay-1", 1_000);
    let genuine = sealed(&s, &genuine_binding);
    let mut minted = 0;
    for next in [genuine_binding.counter, genuine_binding.counter + 1] {
        let id = format!("evil-{next}");
        let mut b = binding_of(declining(), "till-evil", &id, 500);
        b.counter = next;
        let blob = seal(&b, &declining().secret(), &s.processor_key()).unwrap();
        for (how, proof) in forged_proofs(&support::certified_reader("WP3-1"), &blob) {
            let r = forward_of(declining(), "till-evil", &id, 500, &blob, proof);
            assert_eq!(g.forward(&r).unwrap(), MISMATCH, "forward, {how}");
            assert_eq!(
                g.authorize(&authorize(&r)).unwrap(),
                MISMATCH,
                "authorize, {how}"
            );
            minted += 2;
        }
    }
    assert!(s.ledger().is_empty(), "nothing recorded: {:?}", s.ledger());
    assert_eq!(s.stats().card_data_refusals, minted);
    // The victim's genuine payment with that counter, then the next one.
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-1", 1_000, &genuine))
            .unwrap()
    ));
    let mut then = binding("till-1", "pay-2", 2_000);
    then.counter = genuine_binding.counter + 1;
    assert!(is_approved(
        &g.authorize(&authorize(&forward(
            "till-1",
            "pay-2",
            2_000,
            &sealed(&s, &then)
        )))
        .unwrap()
    ));
    assert_eq!(approved(&s).len(), 2);
}

#[test]
fn a_certified_readers_signature_on_a_blob_naming_another_serial_is_a_mismatch() {
    // A genuinely certified reader (WP3-9, trusted authority) signs a blob
    // whose header names WP3-1: the certificate's serial is not the
    // header's, at both routes, and WP3-1's counter stays unused.
    let s = sim();
    let g = gateway(&s);
    let other = support::certified_reader("WP3-9");
    let mut b = binding_of(declining(), "till-evil", "evil-1", 500);
    let counter = b.counter;
    assert_eq!(b.reader_serial, "WP3-1");
    let blob = seal(&b, &declining().secret(), &s.processor_key()).unwrap();
    let r = forward_of(
        declining(),
        "till-evil",
        "evil-1",
        500,
        &blob,
        support::signed_by(&other, &blob),
    );
    assert_eq!(g.forward(&r).unwrap(), MISMATCH);
    assert_eq!(g.authorize(&authorize(&r)).unwrap(), MISMATCH);
    // The same blob under its own reader's signature is a read of WP3-1.
    assert_eq!(
        g.forward(&forward_of(
            declining(),
            "till-evil",
            "evil-1",
            500,
            &blob,
            reader_proof(&blob)
        ))
        .unwrap(),
        GatewayDecision::Declined {
            reason: DeclineReason::InsufficientFunds
        }
    );
    // And WP3-9 signing a blob naming itself, with the same counter: its
    // own counter, not WP3-1's.
    b = binding("till-1", "pay-9", 900);
    b.reader_serial = "WP3-9".into();
    b.counter = counter;
    let own = sealed(&s, &b);
    assert!(is_approved(
        &g.forward(&forward("till-1", "pay-9", 900, &own)).unwrap()
    ));
    assert_eq!(s.stats().card_data_refusals, 2);
}

#[test]
fn a_processor_trusting_other_authorities_refuses_the_simulators_readers() {
    let s = Simulator::start(SimConfig {
        reader_authorities: vec![ReaderAuthority::from_seed(&[0x77; 32])
            .unwrap()
            .public_key()],
        ..SimConfig::default()
    })
    .unwrap();
    let g = gateway(&s);
    let blob = sealed(&s, &binding("till-1", "pay-1", 1_000));
    assert_eq!(
        g.forward(&forward("till-1", "pay-1", 1_000, &blob))
            .unwrap(),
        MISMATCH
    );
    assert!(s.ledger().is_empty());
}

// Through the engine: its paired reader's certificate and signature go with
// every request.

/// The simulator's rig (support::rig) as device `till-bind`, its HTTP
/// gateway to `sim`, offline, forwarding by hand.
async fn engine_for(sim: &Simulator) -> Rig {
    support::rig(sim.processor_key())
        .configure(|c| c.device_id = "till-bind".into())
        .gateway(support::gateway(sim, LIMIT))
        .open()
        .await
}

/// A sale of `cents` paid with the Visa test card.
fn visa_sale(rig: &Rig, cents: i64) -> Sale {
    rig.sale(cents).paid_with(visa())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_minted_for_a_pending_payment_and_sent_first_cannot_take_its_id() {
    // Attack 2: a thief holding the device's processor credentials seals a
    // declining card for a pending offline payment's device, id and amount
    // (all in the clear header of its genuine read) and sends it first.
    let s = sim();
    let rig = engine_for(&s).await;
    let id = visa_sale(&rig, 1_000).sell(&rig.engine).await.id;
    let g = gateway(&s);
    let card = declining();
    let mut b = binding_of(card, "till-bind", id.as_str(), 1_000);
    b.reader_serial = support::READER_SERIAL.into();
    let blob = seal(&b, &card.secret(), &s.processor_key()).unwrap();
    let reader = support::sim_reader(s.processor_key());
    for (how, proof) in forged_proofs(&reader.identity, &blob) {
        let r = forward_of(card, "till-bind", id.as_str(), 1_000, &blob, proof);
        assert_eq!(g.forward(&r).unwrap(), MISMATCH, "forward, {how}");
        assert_eq!(
            g.authorize(&authorize(&r)).unwrap(),
            MISMATCH,
            "authorize, {how}"
        );
    }
    assert!(s.ledger().is_empty());
    // The device forwards its genuine read: charged.
    support::settle(&rig.engine, &rig.clock, false, 5).await;
    assert!(
        matches!(rig.state(&id), PaymentState::Approved { .. }),
        "{:?}",
        rig.state(&id)
    );
    assert_eq!(
        approved(&s),
        [("till-bind".into(), id.as_str().into(), 1_000)]
    );
    rig.engine.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_sends_its_readers_certificate_and_signature_on_both_routes() {
    let s = sim();
    let rig = engine_for(&s).await;
    // Offline, then forwarded.
    let offline = visa_sale(&rig, 1_200).sell(&rig.engine).await.id;
    support::settle(&rig.engine, &rig.clock, false, 5).await;
    assert!(matches!(rig.state(&offline), PaymentState::Approved { .. }));
    // Online: authorized at once.
    rig.online().await;
    let online = visa_sale(&rig, 800).sell(&rig.engine).await.id;
    assert!(matches!(rig.state(&online), PaymentState::Approved { .. }));
    let ledger = s.ledger();
    assert_eq!(ledger.len(), 2);
    assert!(ledger
        .iter()
        .all(|c| matches!(c.outcome, ChargeOutcome::Approved { .. })));
    assert!(ledger
        .iter()
        .any(|c| c.online && c.payment_id == online.as_str()));
    assert!(ledger
        .iter()
        .any(|c| !c.online && c.payment_id == offline.as_str()));
    assert_eq!(s.stats().card_data_refusals, 0);
    rig.engine.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_with_pending_payments_cannot_be_forgotten() {
    let s = sim();
    let rig = engine_for(&s).await;
    let engine = &rig.engine;
    let id = visa_sale(&rig, 1_000).sell(engine).await.id;
    match engine.forget_reader(support::READER_SERIAL).await {
        Err(PosError::InvalidInput { reason }) => {
            assert!(reason.starts_with("1 pending payment"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.remembered_readers().unwrap().len(), 1);
    // Settled (with the reader's certificate), it may go.
    support::settle(engine, &rig.clock, false, 5).await;
    assert!(matches!(rig.state(&id), PaymentState::Approved { .. }));
    engine.forget_reader(support::READER_SERIAL).await.unwrap();
    assert!(engine.remembered_readers().unwrap().is_empty());
    engine.close();
}
