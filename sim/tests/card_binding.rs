//! Sealed card data bound to its payment (`pos_core::card_seal`, version 2)
//! as the processor checks it, through the engine's HTTP gateway: a blob is
//! charged only with the request it was sealed for (payment id, device,
//! amount, currency, entry mode, network, last four), once (reader counter
//! and ephemeral key), and a legitimate retry still gets its first answer.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pos_core::card_seal::{
    aad_v2, content_key_v2, parse_v2, seal, seal_v1, CardBinding, ProcessorKey, PHONE_NONCE_LEN,
};
use pos_core::clock::Timestamp;
use pos_core::gateway::StaticToken;
use pos_core::gateway::{AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision};
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::lifecycle::{DeclineReason, ForwardErrorKind, OrderId, PaymentId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network};
use pos_sim::{test_cards, ChargeOutcome, Fault, FaultPlan, SimConfig, Simulator, TestCard};

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
    c.request_timeout = Duration::from_secs(2);
    HttpGateway::new(c, Arc::new(StaticToken(sim.token()))).unwrap()
}

fn visa() -> &'static TestCard {
    &test_cards()[0]
}

fn eur(cents: i64) -> Money {
    Money::new(cents, Currency::parse("EUR").unwrap())
}

/// A reader counter no other test in this binary uses.
fn fresh_counter() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// What a reader binds a chip read of the Visa test card to.
fn binding(device: &str, id: &str, cents: i64) -> CardBinding {
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
        network: Network::Visa,
        last4: visa().last4().into(),
        fingerprint: "fp-visa".into(),
    }
}

fn sealed(sim: &Simulator, b: &CardBinding) -> Vec<u8> {
    seal(b, &visa().secret(), &sim.processor_key()).unwrap()
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
/// carrying `card_data` and the Visa card's summary, read by chip.
fn forward(device: &str, id: &str, cents: i64, card_data: &[u8]) -> ForwardRequest {
    ForwardRequest {
        device_id: device.into(),
        payment_id: PaymentId::parse(id).unwrap(),
        order_id: OrderId::parse("order-1").unwrap(),
        amount: eur(cents),
        tip: None,
        entry_mode: EntryMode::Chip,
        network: Network::Visa,
        last4: visa().last4().into(),
        taken_at: Timestamp(1_800_000_000_000),
        deadline: Timestamp(1_800_086_400_000),
        attempt: 1,
        sealed_card_data: card_data.to_vec(),
        online: None,
        account: None,
    }
}

fn authorize(r: &ForwardRequest) -> AuthorizeRequest {
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
        account: r.account.clone(),
    }
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
    // The reviewer's replay: 10.00 on till-1, then the same blob for 999.99
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
