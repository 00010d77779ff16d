//! Attacks on the secure link (profile version 2) between the phone side and
//! the simulated reader: replay, relay between sessions, reflection,
//! injection, untrusted or borrowed certificates, changed keys, new readers
//! offline, and version 1.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_reader::client::{ConnectOptions, LinkTrust, ReaderClient, ReaderError};
use pos_reader::frame::{self, Kind};
use pos_reader::link::{Channel, Inbound, MemoryLink};
use pos_reader::message::{self, Reply, Request};
use pos_reader::secure::{PhoneHandshake, SecureError};
use pos_reader::sim::{simulated_identity, Presented, SimReader, SimReaderConfig};
use pos_rules::card_seal::CardChallenge;
use pos_rules::card_seal::{CardSecret, ProcessorKey};
use pos_rules::lifecycle::PaymentId;
use pos_rules::money::{Currency, Money};
use pos_rules::policy::{EntryMode, Network};
use pos_rules::reader_trust::{simulator_authority, ReaderAuthority, ReaderIdentity};

const SERIAL: &str = "SIM-0001";
const MODEL: &str = "Chipper 2X BT";

fn config(identity: Arc<ReaderIdentity>) -> SimReaderConfig {
    SimReaderConfig {
        model: MODEL.into(),
        serial: SERIAL.into(),
        firmware: "2.0.0".into(),
        battery_percent: 80,
        identity,
        processor: ProcessorKey([0x42; 32]),
        fingerprint_key: [3; 32],
    }
}

fn identity() -> Arc<ReaderIdentity> {
    simulated_identity(SERIAL, MODEL).unwrap()
}

fn trust() -> LinkTrust {
    LinkTrust {
        authorities: vec![simulator_authority().public_key()],
        remembered: vec![],
        online: true,
    }
}

fn visa() -> Presented {
    Presented {
        secret: CardSecret {
            pan: "4242424242424242".into(),
            expiry: "1230".into(),
        },
        network: Network::Visa,
        entry_mode: EntryMode::Chip,
    }
}

fn challenge(n: u8) -> CardChallenge {
    CardChallenge {
        payment_id: PaymentId::from_random([n; 16]),
        device_id: "till-1".into(),
        amount: Money::new(1_000 + i64::from(n), Currency::parse("USD").unwrap()),
        nonce: [n; 16],
    }
}

/// An attacker in the middle of the radio: forwards every frame, keeps a
/// copy, and can write frames of its own to either side.
struct Tap {
    to_phone: Arc<MemoryLink>,
    to_reader: Arc<MemoryLink>,
    from_phone: Arc<Mutex<Vec<Vec<u8>>>>,
    from_reader: Arc<Mutex<Vec<Vec<u8>>>>,
    /// While set, the phone's frames are kept and not forwarded.
    withhold_from_phone: Arc<AtomicBool>,
}

fn forward(
    from: Arc<MemoryLink>,
    to: Arc<MemoryLink>,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
    withhold: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        while let Some(f) = from.read().await {
            log.lock().unwrap().push(f.clone());
            if !withhold.load(Ordering::SeqCst) {
                let _ = to.write(f);
            }
        }
    });
}

/// A simulated reader behind a tap, and the phone's end of the link.
fn tapped(identity: Arc<ReaderIdentity>) -> (SimReader, MemoryLink, Tap) {
    let (phone, mid_phone) = MemoryLink::pair(185);
    let (mid_reader, reader) = MemoryLink::pair(185);
    let (mid_phone, mid_reader) = (Arc::new(mid_phone), Arc::new(mid_reader));
    let tap = Tap {
        to_phone: Arc::clone(&mid_phone),
        to_reader: Arc::clone(&mid_reader),
        from_phone: Arc::default(),
        from_reader: Arc::default(),
        withhold_from_phone: Arc::default(),
    };
    forward(
        Arc::clone(&mid_phone),
        Arc::clone(&mid_reader),
        Arc::clone(&tap.from_phone),
        Arc::clone(&tap.withhold_from_phone),
    );
    forward(
        mid_reader,
        mid_phone,
        Arc::clone(&tap.from_reader),
        Arc::default(),
    );
    (SimReader::start(config(identity), reader), phone, tap)
}

/// The frames of the last whole message of `kind` in `log`.
fn last_message(log: &Mutex<Vec<Vec<u8>>>, kind: Kind) -> Vec<Vec<u8>> {
    let log = log.lock().unwrap();
    let last = log
        .iter()
        .rev()
        .find(|f| f[3] == kind.byte())
        .expect("no such message");
    let id = [last[1], last[2]];
    log.iter()
        .filter(|f| f[3] == kind.byte() && f[1..3] == id)
        .cloned()
        .collect()
}

/// A paired phone behind a tap that took one card.
async fn after_one_card() -> (SimReader, ReaderClient, Tap) {
    let (sim, link, tap) = tapped(identity());
    let mut c = ReaderClient::connect(link).await.unwrap();
    c.pair(&trust()).await.unwrap();
    sim.present(visa());
    c.take_card(&challenge(1), &[EntryMode::Chip], true)
        .await
        .unwrap();
    (sim, c, tap)
}

/// Nothing arrives for `await_card` (a refused message is not an answer).
async fn nothing_arrives(c: &mut ReaderClient, ch: &CardChallenge) {
    let got = tokio::time::timeout(Duration::from_millis(300), c.await_card(ch)).await;
    assert!(got.is_err(), "something was delivered: {got:?}");
}

#[tokio::test]
async fn a_replayed_card_result_is_refused_and_counted() {
    let (_sim, mut c, tap) = after_one_card().await;
    assert_eq!(c.rejected(), 0);
    let sniffed = last_message(&tap.from_reader, Kind::Sealed);
    for f in sniffed {
        tap.to_phone.write(f).unwrap();
    }
    nothing_arrives(&mut c, &challenge(1)).await;
    assert_eq!(c.rejected(), 1);
}

#[tokio::test]
async fn a_replayed_payment_request_is_refused_by_the_reader() {
    let (sim, mut c, tap) = after_one_card().await;
    let sniffed = last_message(&tap.from_phone, Kind::Sealed);
    for f in sniffed {
        tap.to_reader.write(f).unwrap();
    }
    // Were the request accepted, the reader would take this card and answer.
    sim.present(visa());
    nothing_arrives(&mut c, &challenge(1)).await;
    assert_eq!(sim.rejected(), 1);
}

#[tokio::test]
async fn a_message_relayed_from_another_session_is_refused() {
    // Two sessions with the same reader (same identity, two connections).
    let (_sim_a, mut a, tap_a) = after_one_card().await;
    let (sim_b, link_b, tap_b) = tapped(identity());
    let mut b = ReaderClient::connect(link_b).await.unwrap();
    b.pair(&trust()).await.unwrap();
    // A's card result into B's phone; A's payment request into B's reader.
    for f in last_message(&tap_a.from_reader, Kind::Sealed) {
        tap_b.to_phone.write(f).unwrap();
    }
    for f in last_message(&tap_a.from_phone, Kind::Sealed) {
        tap_b.to_reader.write(f).unwrap();
    }
    sim_b.present(visa());
    nothing_arrives(&mut b, &challenge(1)).await;
    assert_eq!(b.rejected(), 1);
    assert_eq!(sim_b.rejected(), 1);
    // Session A goes on.
    assert_eq!(a.info().await.unwrap().serial, SERIAL);
}

#[tokio::test]
async fn a_reflected_message_is_refused() {
    let (_sim, mut c, tap) = after_one_card().await;
    // The phone's next payment request never reaches the reader; it is
    // sent back to the phone instead. Its counter is fresh for the phone
    // (the phone has not seen it from the reader): only the direction's own
    // key and label refuse it.
    tap.withhold_from_phone.store(true, Ordering::SeqCst);
    let ch = challenge(2);
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        c.take_card(&ch, &[EntryMode::Chip], true),
    )
    .await;
    assert!(cut.is_err());
    for f in last_message(&tap.from_phone, Kind::Sealed) {
        tap.to_phone.write(f).unwrap();
    }
    nothing_arrives(&mut c, &ch).await;
    assert_eq!(c.rejected(), 1);
}

#[tokio::test]
async fn an_injected_plain_or_forged_message_is_refused() {
    let (_sim, mut c, tap) = after_one_card().await;
    let fake = message::encode(&Reply::Error {
        code: "declined".into(),
        message: "injected".into(),
    });
    for f in frame::encode(40, Kind::Message, &fake, 185).unwrap() {
        tap.to_phone.write(f).unwrap();
    }
    for f in frame::encode(41, Kind::Sealed, &[9u8; 60], 185).unwrap() {
        tap.to_phone.write(f).unwrap();
    }
    nothing_arrives(&mut c, &challenge(1)).await;
    assert_eq!(c.rejected(), 2);
}

#[tokio::test]
async fn a_reader_certified_by_an_untrusted_authority_is_refused() {
    let rogue = ReaderAuthority::from_seed(&[0x66; 32]).unwrap();
    let id = ReaderIdentity::provision(&[0x77; 32], &rogue, SERIAL, MODEL).unwrap();
    let (_sim, link, _tap) = tapped(Arc::new(id));
    let mut c = ReaderClient::connect(link).await.unwrap();
    assert_eq!(
        c.pair(&trust()).await.unwrap_err(),
        ReaderError::UntrustedReader
    );
    assert!(!c.is_authenticated());
    assert_eq!(c.info().await.unwrap_err(), ReaderError::NotAuthenticated);
}

#[tokio::test]
async fn a_reader_presenting_another_readers_certificate_is_refused() {
    // A genuine certificate, copied from the real reader, with the
    // impostor's own key (it cannot have the real one).
    let real = identity();
    let impostor =
        ReaderIdentity::with_certificate(&[0x13; 32], real.certificate().clone()).unwrap();
    let (_sim, link, _tap) = tapped(Arc::new(impostor));
    let mut c = ReaderClient::connect(link).await.unwrap();
    assert_eq!(
        c.pair(&trust()).await.unwrap_err(),
        ReaderError::Handshake(SecureError::BadSignature)
    );
}

#[tokio::test]
async fn a_remembered_reader_whose_key_changed_is_refused_until_paired_again() {
    let (_sim, link, _tap) = tapped(identity());
    let mut c = ReaderClient::connect(link).await.unwrap();
    let other_key = simulated_identity("SIM-OTHER", MODEL).unwrap().public_key();
    for online in [false, true] {
        let t = LinkTrust {
            remembered: vec![(SERIAL.into(), other_key)],
            online,
            ..trust()
        };
        assert_eq!(
            c.pair(&t).await.unwrap_err(),
            ReaderError::KeyChanged {
                serial: SERIAL.into()
            }
        );
    }
    // Paired again online (the app forgot the old key): accepted.
    let paired = c.pair(&trust()).await.unwrap();
    assert_eq!(paired.certificate, identity().certificate().encode());
}

#[tokio::test]
async fn a_new_reader_offline_is_refused() {
    let (_sim, link, _tap) = tapped(identity());
    let mut c = ReaderClient::connect(link).await.unwrap();
    let offline = LinkTrust {
        online: false,
        ..trust()
    };
    assert_eq!(
        c.pair(&offline).await.unwrap_err(),
        ReaderError::NewReaderOffline
    );
    // The same reader remembered with its key reconnects offline.
    let remembered = LinkTrust {
        remembered: vec![(SERIAL.into(), identity().public_key())],
        ..offline
    };
    c.pair(&remembered).await.unwrap();
}

#[tokio::test]
async fn nothing_but_the_version_works_before_the_handshake() {
    let (sim, link, _tap) = tapped(identity());
    let mut c = ReaderClient::connect(link).await.unwrap();
    assert_eq!(c.version(), 2);
    assert!(!c.is_insecure_v1());
    assert_eq!(c.info().await.unwrap_err(), ReaderError::NotAuthenticated);
    sim.present(visa());
    assert_eq!(
        c.take_card(&challenge(1), &[EntryMode::Chip], true)
            .await
            .unwrap_err(),
        ReaderError::NotAuthenticated
    );
    assert_eq!(
        c.await_card(&challenge(1)).await.unwrap_err(),
        ReaderError::NotAuthenticated
    );
    // And the reader itself refuses a plain request.
    let (phone, reader) = MemoryLink::pair(185);
    let _sim = SimReader::start(config(identity()), reader);
    let chan = Channel::new(Arc::new(phone));
    chan.send(message::encode(&Request::GetInfo)).unwrap();
    let Inbound::Message(reply) = next(&chan).await else {
        panic!("no reply")
    };
    assert!(matches!(
        message::decode::<Reply>(&reply).unwrap(),
        Reply::Error { code, .. } if code == "handshake_required"
    ));
}

#[tokio::test]
async fn the_reader_refuses_a_wrong_key_confirmation() {
    let (phone, reader) = MemoryLink::pair(185);
    let sim = SimReader::start(config(identity()), reader);
    let chan = Channel::new(Arc::new(phone));
    let (hs, m1) = PhoneHandshake::start().unwrap();
    chan.send_handshake(&m1).unwrap();
    let Inbound::Handshake(m2) = next(&chan).await else {
        panic!("no M2")
    };
    let done = hs.finish(&m2, &trust()).unwrap();
    let mut m3 = done.m3.clone();
    m3[1] ^= 1;
    chan.send_handshake(&m3).unwrap();
    let Inbound::Message(reply) = next(&chan).await else {
        panic!("no refusal")
    };
    assert!(matches!(
        message::decode::<Reply>(&reply).unwrap(),
        Reply::Error { code, .. } if code == "handshake_failed"
    ));
    // The reader has no session: a sealed request gets no answer.
    chan.install_session(done.session);
    chan.send(message::encode(&Request::GetInfo)).unwrap();
    let got = tokio::time::timeout(Duration::from_millis(300), chan.recv()).await;
    assert!(got.is_err(), "{got:?}");
    assert_eq!(sim.rejected(), 2);
}

/// The next item from a raw channel (the minute only bounds a hang).
async fn next(chan: &Channel) -> Inbound {
    tokio::time::timeout(Duration::from_secs(60), chan.recv())
        .await
        .expect("nothing within a minute")
        .expect("link gone")
        .expect("refused")
}

/// A reader of profile version 1: answers `hello` and `get_info` in the clear.
fn v1_reader(link: MemoryLink) {
    let chan = Channel::new(Arc::new(link));
    tokio::spawn(async move {
        while let Some(msg) = chan.recv().await {
            let Ok(Inbound::Message(bytes)) = msg else {
                continue;
            };
            let reply = match message::decode::<Request>(&bytes) {
                Ok(Request::Hello { versions }) if versions.contains(&1) => {
                    Reply::HelloAck { version: 1 }
                }
                Ok(Request::GetInfo) => Reply::Info {
                    model: "Old".into(),
                    serial: "V1-1".into(),
                    firmware: "0.9".into(),
                    battery_percent: 50,
                },
                _ => Reply::Error {
                    code: "version".into(),
                    message: "no common profile version".into(),
                },
            };
            let _ = chan.send(message::encode(&reply));
        }
    });
}

#[tokio::test]
async fn version_1_is_refused_unless_explicitly_allowed() {
    let (phone, reader) = MemoryLink::pair(185);
    v1_reader(reader);
    assert_eq!(
        ReaderClient::connect(phone).await.unwrap_err(),
        ReaderError::Version
    );
    let (phone, reader) = MemoryLink::pair(185);
    v1_reader(reader);
    let options = ConnectOptions {
        allow_v1: true,
        ..ConnectOptions::default()
    };
    let mut c = ReaderClient::connect_with(phone, options).await.unwrap();
    assert!(c.is_insecure_v1());
    // Information in the clear; never a pairing nor a card.
    assert_eq!(c.info().await.unwrap().firmware, "0.9");
    assert_eq!(c.pair(&trust()).await.unwrap_err(), ReaderError::Version);
    assert_eq!(
        c.take_card(&challenge(1), &[EntryMode::Chip], true)
            .await
            .unwrap_err(),
        ReaderError::NotAuthenticated
    );
    // A version-2 reader answers a phone that allows version 1 with 2.
    let (phone, reader) = MemoryLink::pair(185);
    let _sim = SimReader::start(config(identity()), reader);
    let c = ReaderClient::connect_with(phone, options).await.unwrap();
    assert_eq!(c.version(), 2);
}

#[tokio::test]
async fn an_injected_handshake_cannot_take_over_a_live_session() {
    // An injector starts its own handshake with the reader mid-session: were
    // it answered, it could complete it (the reader does not authenticate
    // phones), replace the till's session and have the next tap read for
    // its own payment.
    let (sim, mut c, tap) = after_one_card().await;
    let before = tap.from_reader.lock().unwrap().len();
    let (_attacker, m1) = PhoneHandshake::start().unwrap();
    for f in frame::encode(50, Kind::Handshake, &m1, 185).unwrap() {
        tap.to_reader.write(f).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.rejected(), 1, "the injected M1 is refused and counted");
    assert_eq!(
        tap.from_reader.lock().unwrap().len(),
        before,
        "no M2 (nor anything else) goes out for it"
    );
    // The till's session goes on: its next card arrives.
    sim.present(visa());
    let card = c
        .take_card(&challenge(2), &[EntryMode::Chip], true)
        .await
        .unwrap();
    assert_eq!(card.reader_serial.as_deref(), Some(SERIAL));
    // And pairing again on this connection keeps the session.
    c.pair(&trust()).await.unwrap();
    assert_eq!(sim.rejected(), 1);
}
