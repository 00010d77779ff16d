//! The phone side against the simulated reader, over the profile's bytes.

#![allow(clippy::unwrap_used)]

use pos_reader::client::{LinkTrust, ReaderClient, ReaderError};
use pos_reader::link::{MemoryLink, Transport};
use pos_reader::sim::{simulated_identity, Presented, SimReader, SimReaderConfig};
use pos_rules::card_seal::CardChallenge;
use pos_rules::card_seal::{parse_v2, CardSecret, ProcessorKey};
use pos_rules::lifecycle::PaymentId;
use pos_rules::money::{Currency, Money};
use pos_rules::policy::{EntryMode, Network};
use pos_rules::reader_trust::{simulator_authority, verify, CARD_CONTEXT};

fn processor() -> ProcessorKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(5);
    }
    ProcessorKey(k)
}

fn config(serial: &str, model: &str) -> SimReaderConfig {
    SimReaderConfig {
        model: model.into(),
        serial: serial.into(),
        firmware: "1.4.2".into(),
        battery_percent: 81,
        identity: simulated_identity(serial, model).unwrap(),
        processor: processor(),
        fingerprint_key: [3; 32],
    }
}

fn start(mtu: usize) -> (SimReader, MemoryLink) {
    let (phone, reader) = MemoryLink::pair(mtu);
    let sim = SimReader::start(config("SIM-0001", "Chipper 2X BT"), reader);
    (sim, phone)
}

fn trust() -> LinkTrust {
    LinkTrust {
        authorities: vec![simulator_authority().public_key()],
        remembered: vec![],
        online: true,
    }
}

/// Connects and runs the handshake.
async fn paired<T: Transport>(link: T) -> ReaderClient<T> {
    let mut c = ReaderClient::connect(link).await.unwrap();
    c.pair(&trust()).await.unwrap();
    c
}

fn challenge(minor: i64) -> CardChallenge {
    CardChallenge {
        payment_id: PaymentId::from_random([minor as u8; 16]),
        device_id: "till-1".into(),
        amount: Money::new(minor, Currency::parse("USD").unwrap()),
        nonce: [0x5A; 16],
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

#[tokio::test]
async fn discover_pair_and_take_a_card_at_each_mtu() {
    for mtu in [23, 185, 517] {
        let (sim, link) = start(mtu);
        let mut c = ReaderClient::connect(link).await.unwrap();
        let paired = c.pair(&trust()).await.unwrap();
        let info = paired.info;
        assert_eq!(
            (
                info.model.as_str(),
                info.serial.as_str(),
                info.battery_percent
            ),
            ("Chipper 2X BT", "SIM-0001", 81)
        );
        let cert = c.certificate().unwrap().clone();
        assert_eq!(paired.certificate, cert.encode());
        sim.present(visa());
        let ch = challenge(4_200);
        let card = c.take_card(&ch, &[EntryMode::Chip], true).await.unwrap();
        assert_eq!(card.last4, "4242");
        assert_eq!(card.reader_model, "Chipper 2X BT");
        assert_eq!(card.reader_serial.as_deref(), Some("SIM-0001"));
        card.validate().unwrap();
        // Bound to the payment and signed by the reader's identity key.
        let b = parse_v2(&card.sealed_card_data).unwrap().binding;
        assert_eq!(
            (b.payment_id.as_str(), b.amount_minor, b.phone_nonce),
            (ch.payment_id.as_str(), 4_200, ch.nonce)
        );
        let first = b.counter;
        verify(
            &cert.public_key,
            CARD_CONTEXT,
            &card.sealed_card_data,
            card.reader_signature.as_deref().unwrap(),
        )
        .unwrap();
        // The next read carries the next counter.
        sim.present(visa());
        let card = c
            .take_card(&challenge(100), &[EntryMode::Chip], true)
            .await
            .unwrap();
        assert_eq!(
            parse_v2(&card.sealed_card_data).unwrap().binding.counter,
            first + 1
        );
        let hay = String::from_utf8_lossy(&card.sealed_card_data);
        assert!(
            !hay.contains("4242424242424242"),
            "the phone never sees the PAN"
        );
        assert!(!format!("{card:?}").contains("4242424242424242"));
    }
}

#[tokio::test]
async fn a_new_reader_pairs_only_online_a_remembered_one_reconnects_offline() {
    let (_sim, link) = start(185);
    let mut c = ReaderClient::connect(link).await.unwrap();
    let offline = LinkTrust {
        online: false,
        ..trust()
    };
    assert_eq!(
        c.pair(&offline).await.unwrap_err(),
        ReaderError::NewReaderOffline
    );
    assert!(!c.is_authenticated());
    let key = simulated_identity("SIM-0001", "Chipper 2X BT")
        .unwrap()
        .public_key();
    let remembered = LinkTrust {
        remembered: vec![("SIM-0001".into(), key)],
        ..offline
    };
    let paired = c.pair(&remembered).await.unwrap();
    assert_eq!(paired.info.serial, "SIM-0001");
    assert!(c.is_authenticated());
}

#[tokio::test]
async fn an_entry_mode_the_payment_refuses_is_a_typed_error() {
    let (sim, link) = start(185);
    let mut c = paired(link).await;
    sim.present(Presented {
        entry_mode: EntryMode::Swipe,
        ..visa()
    });
    assert_eq!(
        c.take_card(&challenge(100), &[EntryMode::Chip], true)
            .await
            .unwrap_err(),
        ReaderError::Refused {
            code: "entry_mode_not_allowed".into()
        }
    );
}

#[tokio::test]
async fn a_disconnect_mid_message_recovers_with_nothing_lost_or_doubled() {
    let (sim, link) = start(23);
    let mut c = paired(link).await;
    // The sealed request is ~230 bytes (about 29 frames at MTU 23) and the
    // card result about 600. Cut the link 6 frames into the exchange, in the
    // middle of a message.
    c.link().disconnect_after(6);
    sim.present(visa());
    let ch = challenge(900);
    let first = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        c.take_card(&ch, &[EntryMode::Chip], true),
    )
    .await;
    assert!(first.is_err() || first.unwrap().is_err(), "cut mid-message");
    assert!(!c.link().is_connected());
    // Back in range: each end sends again what the other did not
    // acknowledge; the same payment goes on and its card arrives once.
    assert_eq!(c.reconnect(), 1, "the cut request is pending");
    let card = tokio::time::timeout(std::time::Duration::from_secs(60), c.await_card(&ch))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(card.last4, "4242");
    // Nothing more arrives: the card was delivered once.
    let again =
        tokio::time::timeout(std::time::Duration::from_millis(200), c.await_card(&ch)).await;
    assert!(again.is_err(), "a second card result arrived");
    assert_eq!(c.rejected(), 0, "resent messages are not refusals");
}

#[tokio::test]
async fn an_app_driven_transport_speaks_to_the_reader() {
    use pos_reader::link::ExternalTransport;
    use std::sync::Arc;
    // The "app's Bluetooth stack": writes go to the simulated reader's link,
    // notifications are pumped back into the transport.
    let (bridge, reader_end) = MemoryLink::pair(185);
    let bridge = Arc::new(bridge);
    let sim = SimReader::start(config("APP-1", "Wisepad 3"), reader_end);
    let out = Arc::clone(&bridge);
    let transport = Arc::new(ExternalTransport::new(185, move |f| out.write(f)).unwrap());
    let inbound = Arc::clone(&bridge);
    let t2 = Arc::clone(&transport);
    tokio::spawn(async move {
        while let Some(f) = inbound.read().await {
            t2.deliver(f);
        }
    });
    let mut c = ReaderClient::connect(Arc::clone(&transport)).await.unwrap();
    assert_eq!(c.pair(&trust()).await.unwrap().info.model, "Wisepad 3");
    sim.present(visa());
    assert_eq!(
        c.take_card(&challenge(700), &[EntryMode::Chip], true)
            .await
            .unwrap()
            .last4,
        "4242"
    );
    transport.set_connected(false);
    assert!(!transport.is_connected());
}

#[tokio::test(start_paused = true)]
async fn the_supervisor_reconnects_with_back_off_and_the_payment_goes_on_once() {
    use pos_reader::reconnect::{supervise, ReconnectPolicy, Supervision};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let (sim, link) = start(23);
    let control = link.control();
    let c = paired(link).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let started = tokio::time::Instant::now();
    let task = supervise(
        control.clone(),
        ReconnectPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_attempts: 20,
        },
        move |s| log.lock().unwrap().push((s, started.elapsed().as_millis())),
    );
    // The reader walks out of range in the middle of the card result.
    control.leave_range_after(6);
    sim.present(visa());
    let ch = challenge(900);
    let mut c = c;
    let payment = tokio::spawn(async move {
        let card = c.take_card(&ch, &[EntryMode::Chip], true).await;
        (card, c, ch)
    });
    // Out of range for a while: attempts at 0, 100, 200, 400, 400, ... ms.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    control.set_in_range(true);
    let (card, mut c, ch) = payment.await.unwrap();
    assert_eq!(card.unwrap().last4, "4242");
    let events = seen.lock().unwrap().clone();
    assert_eq!(events[0].0, Supervision::Disconnected);
    let attempts: Vec<u128> = events
        .iter()
        .filter(|(s, _)| matches!(s, Supervision::Reconnecting { .. }))
        .map(|(_, at)| at)
        .copied()
        .collect();
    assert_eq!(attempts, vec![0, 100, 300, 700, 1_100], "{events:?}");
    assert_eq!(
        events.last().unwrap().0,
        Supervision::Reconnected { attempts: 5 }
    );
    // The card was delivered once.
    let again = tokio::time::timeout(Duration::from_secs(2), c.await_card(&ch)).await;
    assert!(again.is_err(), "a second card result arrived");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn the_supervisor_gives_up_then_watches_again() {
    use pos_reader::reconnect::{supervise, ReconnectPolicy, Supervision};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let (_sim, link) = start(185);
    let control = link.control();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let task = supervise(
        control.clone(),
        ReconnectPolicy {
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            max_attempts: 3,
        },
        move |s| log.lock().unwrap().push(s),
    );
    control.set_in_range(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    control.set_in_range(true);
    control.reconnect(); // the cashier reconnects by hand
    tokio::time::sleep(Duration::from_millis(10)).await;
    control.disconnect(); // and the supervisor is watching again
    tokio::time::sleep(Duration::from_secs(1)).await;
    use Supervision::*;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Disconnected,
            Reconnecting { attempt: 1 },
            Reconnecting { attempt: 2 },
            Reconnecting { attempt: 3 },
            GaveUp { attempts: 3 },
            Disconnected,
            Reconnecting { attempt: 1 },
            Reconnected { attempts: 1 },
        ]
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_flat_battery_refuses_payments_and_latency_slows_replies() {
    use std::time::Duration;
    let (sim, link) = start(185);
    let mut c = paired(link).await;
    sim.set_battery(4);
    assert_eq!(c.info().await.unwrap().battery_percent, 4);
    assert_eq!(
        c.take_card(&challenge(900), &[EntryMode::Chip], true).await,
        Err(ReaderError::Refused {
            code: "battery_critical".into()
        })
    );
    sim.set_battery(60);
    sim.set_latency(Duration::from_millis(250));
    let t = tokio::time::Instant::now();
    assert_eq!(c.info().await.unwrap().battery_percent, 60);
    assert!(t.elapsed() >= Duration::from_millis(250));
    sim.present(visa());
    assert_eq!(
        c.take_card(&challenge(900), &[EntryMode::Chip], true)
            .await
            .unwrap()
            .last4,
        "4242"
    );
}
