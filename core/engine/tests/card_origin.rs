//! Where a card came from (SPEC section 4): the engine takes a card read
//! only from a reader it remembers, signed by that reader and sealed for
//! this very payment; R11 checks the model the reader's certificate names.
//! Each test is an attack; each refusal stores nothing.

#![allow(clippy::unwrap_used)]

use pos_test_support as support;

use pos_core::card_seal::{self, CardBinding};
use pos_core::checkout::{CardPaymentRequest, OfflineBehaviour};
use pos_core::ledger::{CardRead, RememberedReader};
use pos_core::lifecycle::PaymentId;
use pos_core::money::Currency;
use pos_core::policy::{Policy, TenderKind};
use pos_core::reader_trust::{simulator_authority, ReaderAuthority, ReaderIdentity, CARD_CONTEXT};
use pos_core::rules::Refusal;
use pos_core::PosEngine;
use pos_core::PosError;
use support::{chip_card, chip_card_for, test_reader, usd, Rig};

/// The usual rig: the test reader paired, offline.
async fn engine() -> (PosEngine, Rig) {
    let rig = Rig::offline().await;
    (rig.engine.clone(), rig)
}

async fn begin(engine: &PosEngine, n: usize, cents: i64) -> PaymentId {
    support::begin_sale(engine, n, cents).await
}

/// What the engine stored: nothing new after a refusal.
fn payments(engine: &PosEngine) -> usize {
    engine.list_payments().unwrap().len()
}

/// Remembers a vendor SDK's reader `serial` as `model` (online), then the
/// network goes down.
async fn remember_vendor_offline(engine: &PosEngine, serial: &str, model: &str) {
    support::remember_vendor_reader(engine, serial, model).await;
    engine.report_network(false).await.unwrap();
}

/// [`chip_card`]`(n)` as the vendor reader `serial` reports it, naming
/// `model`.
fn vendor_read(n: usize, serial: &str, model: &str) -> CardRead {
    CardRead {
        reader_serial: Some(serial.into()),
        reader_model: model.into(),
        ..chip_card(n)
    }
}

/// Pairs the test reader's serial with another key (another device wearing
/// its serial, certified all the same).
async fn pair_swapped_key(engine: &PosEngine) -> Result<RememberedReader, PosError> {
    let swapped = ReaderIdentity::provision(
        &[4; 32],
        &simulator_authority(),
        support::READER_SERIAL,
        "Wisepad 3",
    )
    .unwrap();
    engine
        .remember_paired_reader(&swapped.certificate().encode(), "1.0")
        .await
}

fn not_paired(r: Result<impl std::fmt::Debug, PosError>) {
    assert!(
        matches!(r, Err(PosError::ReaderNotPaired { .. })),
        "expected ReaderNotPaired, got {r:?}"
    );
}

fn mismatch(r: Result<impl std::fmt::Debug, PosError>, field: &str) {
    match r {
        Err(PosError::CardReadMismatch { field: f }) => assert_eq!(f, field),
        other => panic!("expected a {field} mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_read_from_an_authenticated_remembered_reader_for_this_payment_is_taken() {
    let (engine, _) = engine().await;
    let id = begin(&engine, 1, 1_000).await;
    let v = engine
        .confirm_card_payment(&id, chip_card_for(&engine, &id, 1))
        .await
        .unwrap();
    assert_eq!(v.id, id);
    let stored = engine.list_payments().unwrap();
    assert_eq!(stored.len(), 1);
}

#[tokio::test]
async fn a_card_read_naming_no_reader_or_an_unpaired_one_is_refused() {
    let (engine, _) = engine().await;
    let id = begin(&engine, 1, 1_000).await;
    // The reads of before: no serial, no signature.
    not_paired(engine.confirm_card_payment(&id, chip_card(1)).await);
    // A serial the device never paired, with a valid signature of an
    // unknown (but certified) reader.
    let stranger = ReaderIdentity::provision(
        &[9; 32],
        &simulator_authority(),
        "WP3-STRANGER",
        "Wisepad 3",
    )
    .unwrap();
    let mut card = chip_card_for(&engine, &id, 1);
    card.reader_serial = Some("WP3-STRANGER".into());
    card.reader_signature = Some(stranger.sign(CARD_CONTEXT, &card.sealed_card_data).to_vec());
    not_paired(engine.confirm_card_payment(&id, card).await);
    assert_eq!(payments(&engine), 0);
    // A forgotten reader is not paired any more.
    engine.forget_reader(support::READER_SERIAL).await.unwrap();
    not_paired(
        engine
            .confirm_card_payment(&id, chip_card_for(&engine, &id, 1))
            .await,
    );
    assert_eq!(payments(&engine), 0);
}

#[tokio::test]
async fn a_read_signed_by_another_key_than_the_paired_readers_is_refused() {
    let (engine, _) = engine().await;
    let id = begin(&engine, 1, 1_000).await;
    // An impostor claims the paired reader's serial with its own key.
    let impostor = ReaderIdentity::provision(
        &[8; 32],
        &simulator_authority(),
        support::READER_SERIAL,
        "Wisepad 3",
    )
    .unwrap();
    let mut card = chip_card_for(&engine, &id, 1);
    card.reader_signature = Some(impostor.sign(CARD_CONTEXT, &card.sealed_card_data).to_vec());
    not_paired(engine.confirm_card_payment(&id, card.clone()).await);
    // No signature at all from a profile reader.
    card.reader_signature = None;
    not_paired(engine.confirm_card_payment(&id, card).await);
    assert_eq!(payments(&engine), 0);
}

#[tokio::test]
async fn a_read_made_for_another_payment_or_amount_is_refused() {
    let (engine, _) = engine().await;
    let first = begin(&engine, 1, 1_000).await;
    let second = begin(&engine, 2, 1_000).await;
    // A read sniffed (or copied from the store) for the first payment,
    // offered for the second: the same reader signed it, but for `first`.
    let for_first = chip_card_for(&engine, &first, 1);
    mismatch(
        engine
            .confirm_card_payment(&second, for_first.clone())
            .await,
        "payment_id",
    );
    // A read sealed for the right payment id but with another challenge
    // (a read made before this payment began, under a cancelled id).
    engine.cancel_card_payment(&second).await.unwrap();
    let again = engine
        .begin_card_payment(CardPaymentRequest {
            order_id: pos_core::lifecycle::OrderId::parse("order-2").unwrap(),
            payment_id: Some(second.as_str().into()),
            amount: usd(1_000),
            tip: None,
            behaviour: OfflineBehaviour::PreferOnline,
            tender: TenderKind::Card,
        })
        .await;
    let d = again.unwrap();
    let stale = {
        let mut ch = engine.card_challenge(&d.payment_id).unwrap();
        ch.nonce = [0; 16];
        test_reader().read(&ch, chip_card(2))
    };
    mismatch(engine.confirm_card_payment(&second, stale).await, "nonce");
    // Another amount: the reader sealed 10.00 with a 2.00 tip; the payment
    // is 10.00 without one.
    let third = begin(&engine, 3, 1_000).await;
    let mut ch = engine.card_challenge(&third).unwrap();
    ch.amount = usd(1_200);
    let card = test_reader().read(&ch, chip_card(3));
    mismatch(engine.confirm_card_payment(&third, card).await, "amount");
    // Another device's read.
    let mut ch = engine.card_challenge(&third).unwrap();
    ch.device_id = "till-2".into();
    let card = test_reader().read(&ch, chip_card(3));
    mismatch(engine.confirm_card_payment(&third, card).await, "device_id");
    assert_eq!(payments(&engine), 0);
    // The genuine read of the first payment still goes through.
    engine
        .confirm_card_payment(&first, for_first)
        .await
        .unwrap();
    assert_eq!(payments(&engine), 1);
}

#[tokio::test]
async fn a_summary_that_differs_from_what_the_reader_signed_is_refused() {
    let (engine, _) = engine().await;
    let id = begin(&engine, 1, 1_000).await;
    let genuine = chip_card_for(&engine, &id, 1);
    // The fingerprint is the per-card limit's key: changing it would let one
    // card slip past R7.
    let mut card = genuine.clone();
    card.fingerprint = Some("fp-other".into());
    mismatch(engine.confirm_card_payment(&id, card).await, "fingerprint");
    let mut card = genuine.clone();
    card.entry_mode = pos_core::policy::EntryMode::Contactless;
    mismatch(engine.confirm_card_payment(&id, card).await, "entry_mode");
    let mut card = genuine.clone();
    card.network = pos_core::policy::Network::Mastercard;
    mismatch(engine.confirm_card_payment(&id, card).await, "network");
    let mut card = genuine.clone();
    card.last4 = "0005".into();
    mismatch(engine.confirm_card_payment(&id, card).await, "last4");
    // A changed header byte breaks the signature.
    let mut card = genuine.clone();
    let at = card.sealed_card_data.len() / 3;
    card.sealed_card_data[at] ^= 1;
    not_paired(engine.confirm_card_payment(&id, card).await);
    assert_eq!(payments(&engine), 0);
    engine.confirm_card_payment(&id, genuine).await.unwrap();
}

#[tokio::test]
async fn a_reader_that_lies_about_its_model_is_refused_offline() {
    let (engine, _) = engine().await;
    // Certified as a model no preset lets take offline payments...
    let liar =
        ReaderIdentity::provision(&[5; 32], &simulator_authority(), "MYS-1", "Mystery Reader")
            .unwrap();
    // ...paired while online...
    support::pair_identity(&engine, &liar).await;
    engine.report_network(false).await.unwrap();
    let id = begin(&engine, 1, 1_000).await;
    let ch = engine.card_challenge(&id).unwrap();
    // ...it says it is a Wisepad 3.
    let mut card = chip_card(1);
    card.reader_model = "Wisepad 3".into();
    let card = support::read_with(&liar, "MYS-1", &ch, card);
    match engine.confirm_card_payment(&id, card).await {
        Err(PosError::Refused {
            refusal: Refusal::ReaderNotOfflineCapable { model },
        }) => assert_eq!(model, "Mystery Reader"),
        other => panic!("expected R11 on the certified model, got {other:?}"),
    }
    assert_eq!(payments(&engine), 0);
}

#[tokio::test]
async fn pairing_needs_a_trusted_certificate_and_a_changed_key_needs_the_service() {
    let (engine, _) = engine().await;
    // A certificate from an authority the policy does not list.
    let rogue = ReaderAuthority::from_seed(&[77; 32]).unwrap();
    let fake = ReaderIdentity::provision(&[6; 32], &rogue, "WP3-FAKE", "Wisepad 3").unwrap();
    support::online(&engine).await;
    not_paired(
        engine
            .remember_paired_reader(&fake.certificate().encode(), "1.0")
            .await,
    );
    assert!(engine
        .remembered_readers()
        .unwrap()
        .iter()
        .all(|r| r.serial != "WP3-FAKE"));
    // Malformed bytes: a typed error, nothing stored.
    assert!(matches!(
        engine.remember_paired_reader(&[1, 2, 3], "1.0").await,
        Err(PosError::InvalidInput { .. })
    ));
    // The paired reader comes back with another key (another device
    // wearing its serial): offline, refused until paired again online.
    engine.report_network(false).await.unwrap();
    assert!(matches!(
        pair_swapped_key(&engine).await,
        Err(PosError::OnlineRequired)
    ));
    // The same key again offline is fine (a reconnection).
    engine
        .remember_paired_reader(&test_reader().identity.certificate().encode(), "1.1")
        .await
        .unwrap();
    // A vendor record cannot replace a paired profile reader.
    assert!(matches!(
        engine
            .remember_reader(support::READER_SERIAL, "Mystery Reader", "1")
            .await,
        Err(PosError::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn an_authority_removed_from_the_policy_is_no_longer_trusted() {
    let (engine, _) = engine().await;
    let id = begin(&engine, 1, 1_000).await;
    let card = chip_card_for(&engine, &id, 1);
    engine
        .set_policy(Policy::shopify_pos(Currency::parse("USD").unwrap()).with_enabled(true))
        .await
        .unwrap();
    not_paired(engine.confirm_card_payment(&id, card).await);
    assert_eq!(payments(&engine), 0);
}

#[tokio::test]
async fn a_vendor_readers_reads_are_taken_on_the_vendors_word() {
    let (engine, _) = engine().await;
    remember_vendor_offline(&engine, "M2-1", "Wisepad 3").await;
    let id = begin(&engine, 1, 1_000).await;
    // The model the vendor reported when it was remembered is the one R11
    // sees, not what the read says.
    let card = vendor_read(1, "M2-1", "Chipper 2X BT");
    engine
        .confirm_card_payment(&id, card.clone())
        .await
        .unwrap();
    // The other way round: a vendor reader remembered as a model that may
    // not take offline payments is refused, whatever model its read names.
    remember_vendor_offline(&engine, "MYS-V", "Mystery Reader").await;
    let id3 = begin(&engine, 3, 1_000).await;
    let claimed = vendor_read(3, "MYS-V", "Wisepad 3");
    match engine.confirm_card_payment(&id3, claimed).await {
        Err(PosError::Refused {
            refusal: Refusal::ReaderNotOfflineCapable { model },
        }) => assert_eq!(model, "Mystery Reader"),
        other => panic!("expected R11 on the remembered model, got {other:?}"),
    }
    // A vendor reader's read cannot carry a profile signature.
    let id2 = begin(&engine, 2, 1_000).await;
    let signed = CardRead {
        reader_signature: Some(vec![0; 64]),
        tap_to_pay_on_phone: false,
        ..card
    };
    not_paired(engine.confirm_card_payment(&id2, signed).await);
}

#[tokio::test]
async fn the_processor_can_check_what_the_engine_checked() {
    // The blob the engine took is bound to its payment: its clear header
    // names what the processor compares with the request.
    let (engine, rig) = engine().await;
    let id = begin(&engine, 1, 1_234).await;
    let card = chip_card_for(&engine, &id, 1);
    let sealed = card_seal::parse_v2(&card.sealed_card_data).unwrap();
    let want = CardBinding {
        payment_id: id.as_str().into(),
        device_id: "till-1".into(),
        amount_minor: 1_234,
        currency: "USD".into(),
        reader_serial: support::READER_SERIAL.into(),
        counter: sealed.binding.counter,
        phone_nonce: engine.card_challenge(&id).unwrap().nonce,
        read_at_ms: sealed.binding.read_at_ms,
        entry_mode: card.entry_mode,
        network: card.network,
        last4: card.last4.clone(),
        fingerprint: card.fingerprint.clone().unwrap(),
    };
    assert_eq!(sealed.binding, want);
    // The engine keeps and forwards that very blob, and the reader's
    // signature of it: what the processor verifies.
    engine
        .confirm_card_payment(&id, card.clone())
        .await
        .unwrap();
    let stored = rig
        .records()
        .await
        .into_iter()
        .rev()
        .find_map(|w| match w {
            pos_core::ledger::Write::Payment(p) if p.id == id => Some(p.card),
            _ => None,
        })
        .unwrap();
    assert_eq!(stored.sealed_card_data, card.sealed_card_data);
    assert_eq!(stored.reader_signature, card.reader_signature);
    assert_eq!(
        stored.reader_serial.as_deref(),
        Some(support::READER_SERIAL)
    );
    // R11 saw, and the payment keeps, the certificate's model.
    assert_eq!(stored.reader_model, "Wisepad 3");
}

#[tokio::test]
async fn a_reader_paired_by_an_earlier_version_takes_no_card_until_paired_again() {
    // A record as an earlier version wrote it: no certificate, no vendor flag.
    let store = pos_core::store::MemoryStore::new();
    pos_core::store::Store::apply(
        &store,
        &[pos_core::ledger::Write::Reader {
            serial: "OLD-1".into(),
            reader: serde_json::from_str(
                r#"{"serial":"OLD-1","model":"Wisepad 3","firmware":"1.0","paired_at":1}"#,
            )
            .unwrap(),
        }],
    )
    .await
    .unwrap();
    let rig = Rig::builder()
        .store(std::sync::Arc::new(store))
        .open()
        .await;
    let engine = rig.engine.clone();
    let id = begin(&engine, 1, 1_000).await;
    let card = vendor_read(1, "OLD-1", "Wisepad 3");
    not_paired(engine.confirm_card_payment(&id, card).await);
    assert_eq!(payments(&engine), 0);
}

#[tokio::test]
async fn a_vendor_readers_model_changes_only_online() {
    let (engine, _) = engine().await;
    remember_vendor_offline(&engine, "M2-1", "Stripe M2").await;
    // Offline, the firmware may change; the model (what R11 checks) may not.
    engine
        .remember_reader("M2-1", "Stripe M2", "2.1")
        .await
        .unwrap();
    assert!(matches!(
        engine.remember_reader("M2-1", "Wisepad 3", "2.1").await,
        Err(PosError::OnlineRequired)
    ));
    let r = engine
        .remembered_readers()
        .unwrap()
        .into_iter()
        .find(|r| r.serial == "M2-1")
        .unwrap();
    assert_eq!(
        (r.model.as_str(), r.firmware.as_str()),
        ("Stripe M2", "2.1")
    );
}

#[tokio::test]
async fn a_new_key_is_not_paired_over_pending_payments_of_the_old_one() {
    let (engine, _) = engine().await;
    support::sell_offline(&engine, 1, 1_000).await;
    support::online(&engine).await;
    // The same serial with another key: its pending payment is sent with the
    // certificate of the key that signed it, so the new key waits.
    assert!(matches!(
        pair_swapped_key(&engine).await,
        Err(PosError::InvalidInput { .. })
    ));
    assert_eq!(
        engine
            .remembered_readers()
            .unwrap()
            .iter()
            .find(|r| r.serial == support::READER_SERIAL)
            .and_then(|r| r.identity_key()),
        Some(test_reader().identity.public_key())
    );
}

#[tokio::test]
async fn pairing_forgetting_and_trusting_readers_are_audited() {
    let (engine, rig) = engine().await;
    support::remember_vendor_reader(&engine, "M2-1", "Stripe M2").await;
    // A reconnection that changes nothing writes nothing (no audit entry,
    // no record, the pairing time kept).
    let before = engine
        .remembered_readers()
        .unwrap()
        .into_iter()
        .find(|r| r.serial == support::READER_SERIAL)
        .unwrap();
    let records = rig.store.len();
    let kept = engine
        .remember_paired_reader(&test_reader().identity.certificate().encode(), "1.0")
        .await
        .unwrap();
    assert_eq!(rig.store.len(), records);
    assert_eq!(kept, before);
    engine.forget_reader("M2-1").await.unwrap();
    let csv = engine.export_audit_csv().unwrap();
    assert!(
        csv.contains(&format!(
            "serial={}; model=Wisepad 3; vendor=false",
            support::READER_SERIAL
        )),
        "{csv}"
    );
    assert_eq!(
        csv.matches(&format!("serial={};", support::READER_SERIAL))
            .count(),
        1,
        "{csv}"
    );
    assert!(
        csv.contains("serial=M2-1; model=Stripe M2; vendor=true"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains("reader_forgotten") && l.contains("serial=M2-1")),
        "{csv}"
    );
    // The policy that trusts the test reader's authority says so.
    let key = pos_core::crypto::hex(&simulator_authority().public_key()[..8]);
    assert!(
        csv.contains(&format!("reader authorities added: {key}")),
        "{csv}"
    );
}

/// Tap to Pay on the phone: the phone's own NFC, on the platform SDK's
/// word, names no reader. Offline, R10 refuses it unless the policy allows
/// Tap to Pay on the phone; a "phone" read that names a reader (to dodge
/// the pairing checks) is refused whatever the policy.
#[tokio::test]
async fn a_read_by_the_phone_is_taken_offline_only_where_the_policy_allows_tap_to_pay() {
    let (engine, _) = engine().await;
    let phone = CardRead {
        reader_serial: None,
        reader_signature: None,
        reader_model: "Tap to Pay".into(),
        entry_mode: pos_core::policy::EntryMode::Contactless,
        tap_to_pay_on_phone: true,
        ..chip_card(1)
    };
    let id = begin(&engine, 1, 1_000).await;
    match engine.confirm_card_payment(&id, phone.clone()).await {
        Err(PosError::Refused {
            refusal: Refusal::TapToPayRefused,
        }) => {}
        other => panic!("expected R10, got {other:?}"),
    }
    let id = begin(&engine, 2, 1_000).await;
    let named = CardRead {
        reader_serial: Some(support::READER_SERIAL.into()),
        ..phone.clone()
    };
    assert!(matches!(
        engine.confirm_card_payment(&id, named).await,
        Err(PosError::CardReadMismatch { .. })
    ));
    assert_eq!(payments(&engine), 0);
    let mut policy = engine.policy().unwrap();
    policy.tap_to_pay_on_phone = true;
    engine.set_policy(policy).await.unwrap();
    let id = begin(&engine, 3, 1_000).await;
    let taken = engine.confirm_card_payment(&id, phone).await.unwrap();
    assert_eq!(taken.id, id);
    assert_eq!(payments(&engine), 1);
}
