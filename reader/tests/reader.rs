//! The phone side against the simulated reader, over the profile's bytes.

#![allow(clippy::unwrap_used)]

use pos_core::card_seal::{CardSecret, ProcessorKey};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network};
use pos_reader::client::{ReaderClient, ReaderError};
use pos_reader::link::MemoryLink;
use pos_reader::sim::{Presented, SimReader, SimReaderConfig};

const READER_KEY: [u8; 32] = [7; 32];

fn processor() -> ProcessorKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(5);
    }
    ProcessorKey(k)
}

fn start(mtu: usize) -> (SimReader, MemoryLink) {
    let (phone, reader) = MemoryLink::pair(mtu);
    let sim = SimReader::start(
        SimReaderConfig {
            model: "Chipper 2X BT".into(),
            serial: "SIM-0001".into(),
            firmware: "1.4.2".into(),
            battery_percent: 81,
            reader_key: READER_KEY,
            processor: processor(),
            fingerprint_key: [3; 32],
        },
        reader,
    );
    (sim, phone)
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
        let info = c.pair(&READER_KEY, true, &[]).await.unwrap();
        assert_eq!(
            (info.model.as_str(), info.battery_percent),
            ("Chipper 2X BT", 81)
        );
        sim.present(visa());
        let usd = Money::new(4_200, Currency::parse("USD").unwrap());
        let card = c.take_card(usd, &[EntryMode::Chip], true).await.unwrap();
        assert_eq!(card.last4, "4242");
        assert_eq!(card.reader_model, "Chipper 2X BT");
        card.validate().unwrap();
        let hay = String::from_utf8_lossy(&card.sealed_card_data);
        assert!(
            !hay.contains("4242424242424242"),
            "the phone never sees the PAN"
        );
        assert!(!format!("{card:?}").contains("4242424242424242"));
    }
}

#[tokio::test]
async fn a_wrong_reader_key_fails_pairing() {
    let (_sim, link) = start(185);
    let mut c = ReaderClient::connect(link).await.unwrap();
    assert_eq!(
        c.pair(&[8; 32], true, &[]).await.unwrap_err(),
        ReaderError::PairingFailed
    );
}

#[tokio::test]
async fn a_new_reader_pairs_only_online_a_remembered_one_reconnects_offline() {
    let (_sim, link) = start(185);
    let mut c = ReaderClient::connect(link).await.unwrap();
    assert_eq!(
        c.pair(&READER_KEY, false, &[]).await.unwrap_err(),
        ReaderError::NewReaderOffline
    );
    let info = c
        .pair(&READER_KEY, false, &["SIM-0001".into()])
        .await
        .unwrap();
    assert_eq!(info.serial, "SIM-0001");
}

#[tokio::test]
async fn an_entry_mode_the_payment_refuses_is_a_typed_error() {
    let (sim, link) = start(185);
    let mut c = ReaderClient::connect(link).await.unwrap();
    sim.present(Presented {
        entry_mode: EntryMode::Swipe,
        ..visa()
    });
    let usd = Money::new(100, Currency::parse("USD").unwrap());
    assert_eq!(
        c.take_card(usd, &[EntryMode::Chip], true)
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
    let mut c = ReaderClient::connect(link).await.unwrap();
    c.info().await.unwrap();
    // The card result is ~200 bytes: about 25 frames at MTU 23. Cut the
    // link 6 frames into the exchange, in the middle of a message.
    c.link().disconnect_after(6);
    sim.present(visa());
    let usd = Money::new(900, Currency::parse("USD").unwrap());
    let first = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        c.take_card(usd, &[EntryMode::Chip], true),
    )
    .await;
    assert!(first.is_err() || first.unwrap().is_err(), "cut mid-message");
    assert!(!c.link().is_connected());
    // Back in range: each end sends again what the other did not
    // acknowledge; the same payment goes on and its card arrives once.
    assert_eq!(c.reconnect(), 1, "the cut request is pending");
    let card = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        c.await_card("Chipper 2X BT".into()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(card.last4, "4242");
    // Nothing more arrives: the card was delivered once.
    let again = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        c.await_card("Chipper 2X BT".into()),
    )
    .await;
    assert!(again.is_err(), "a second card result arrived");
}

#[tokio::test]
async fn an_app_driven_transport_speaks_to_the_reader() {
    use pos_reader::link::ExternalTransport;
    use std::sync::Arc;
    // The "app's Bluetooth stack": writes go to the simulated reader's link,
    // notifications are pumped back into the transport.
    let (bridge, reader_end) = MemoryLink::pair(185);
    let bridge = Arc::new(bridge);
    let sim = SimReader::start(
        SimReaderConfig {
            model: "Wisepad 3".into(),
            serial: "APP-1".into(),
            firmware: "3.0".into(),
            battery_percent: 40,
            reader_key: READER_KEY,
            processor: processor(),
            fingerprint_key: [3; 32],
        },
        reader_end,
    );
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
    assert_eq!(
        c.pair(&READER_KEY, true, &[]).await.unwrap().model,
        "Wisepad 3"
    );
    sim.present(visa());
    let usd = Money::new(700, Currency::parse("USD").unwrap());
    assert_eq!(
        c.take_card(usd, &[EntryMode::Chip], true)
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
    let mut c = ReaderClient::connect(link).await.unwrap();
    c.info().await.unwrap();
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
    let usd = Money::new(900, Currency::parse("USD").unwrap());
    let payment = tokio::spawn(async move {
        let card = c.take_card(usd, &[EntryMode::Chip], true).await;
        (card, c)
    });
    // Out of range for a while: attempts at 0, 100, 200, 400, 400, ... ms.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    control.set_in_range(true);
    let (card, mut c) = payment.await.unwrap();
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
    let again =
        tokio::time::timeout(Duration::from_secs(2), c.await_card("Chipper 2X BT".into())).await;
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
    let mut c = ReaderClient::connect(link).await.unwrap();
    sim.set_battery(4);
    assert_eq!(c.info().await.unwrap().battery_percent, 4);
    let usd = Money::new(900, Currency::parse("USD").unwrap());
    assert_eq!(
        c.take_card(usd, &[EntryMode::Chip], true).await,
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
        c.take_card(usd, &[EntryMode::Chip], true)
            .await
            .unwrap()
            .last4,
        "4242"
    );
}
