//! btleplug's real Linux backend, through `pos_reader::ble`, against the
//! BlueZ double on a private system bus: scanning, connecting, discovering,
//! subscribing, pairing (the profile's handshake) and taking a card, at the
//! smallest MTU and a large one; a disconnection mid-message either way with
//! automatic reconnection; the reader out of range and back; a device that
//! stays silent; the adapter switched off.
//!
//! The tests take turns on the one bus of this process (`BlueZ::start`). If
//! the bus cannot start, they fail.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{Central as _, CentralState, Manager as _, Peripheral as _};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use pos_bluez_double::{gatt, BlueZ, Silence};
use pos_reader::ble::{scan, BleError, BleTransport};
use pos_reader::client::{ConnectOptions, LinkTrust, ReaderClient, ReaderError};
use pos_reader::link::{LinkError, Transport as _};
use pos_reader::reconnect::{supervise, ReconnectPolicy, Supervision};
use pos_reader::sim::{Presented, SimReader, SimReaderConfig};
use pos_rules::card_seal::{parse_v2, CardChallenge, CardSecret};
use pos_rules::ledger::CardRead;
use pos_rules::lifecycle::PaymentId;
use pos_rules::money::{Currency, Money};
use pos_rules::policy::{EntryMode, Network};
use pos_rules::reader_trust::simulator_authority;
use tokio::sync::mpsc;
use tokio::time::timeout;

const READER: &str = "C0:FF:EE:00:00:01";
const HEART_RATE: &str = "0000180d-0000-1000-8000-00805f9b34fb";
/// Long enough for any one step here; a step that takes it has hung.
const STEP: Duration = Duration::from_secs(20);

async fn double() -> BlueZ {
    BlueZ::start()
        .await
        .expect("the BlueZ double must start (dbus-daemon: `cargo xtask install`)")
}

fn config(serial: &str) -> SimReaderConfig {
    pos_bluez_double::app_reader_config(serial, "Chipper 2X BT", 81).unwrap()
}

fn trust() -> LinkTrust {
    LinkTrust {
        authorities: vec![simulator_authority().public_key()],
        remembered: vec![],
        online: true,
    }
}

fn challenge(minor: i64) -> CardChallenge {
    CardChallenge {
        payment_id: PaymentId::from_random([minor as u8; 16]),
        device_id: "till-1".into(),
        amount: Money::new(minor, Currency::parse("USD").unwrap()),
        nonce: [0x5A; 16],
    }
}

fn card(pan: &str, network: Network) -> Presented {
    Presented {
        secret: CardSecret {
            pan: pan.into(),
            expiry: "1230".into(),
        },
        network,
        entry_mode: EntryMode::Chip,
    }
}

/// The reader's transaction counter, from the sealed card data.
fn counter(card: &CardRead) -> u64 {
    parse_v2(&card.sealed_card_data).unwrap().binding.counter
}

/// The only adapter, through btleplug's `Manager` (D-Bus system bus).
async fn adapter() -> Adapter {
    let mut adapters = Manager::new().await.unwrap().adapters().await.unwrap();
    assert_eq!(adapters.len(), 1, "the double has one adapter");
    adapters.remove(0)
}

/// Scans briefly and returns the one reader found.
async fn find_reader(adapter: &Adapter) -> PeripheralId {
    let found = scan(adapter, Duration::from_millis(100)).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].id.clone()
}

/// Connects, negotiates the version and pairs (the handshake).
async fn paired(
    bluez: &BlueZ,
    mtu: u16,
) -> (
    SimReader,
    Arc<BleTransport>,
    ReaderClient<Arc<BleTransport>>,
) {
    let sim = bluez.advertise_reader(READER, "Reader", -60, mtu, config("SIM-BLE-1"));
    let adapter = adapter().await;
    let id = find_reader(&adapter).await;
    let t = Arc::new(
        BleTransport::connect(adapter, id, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let mut c = ReaderClient::connect(Arc::clone(&t)).await.unwrap();
    let p = c.pair(&trust()).await.unwrap();
    assert_eq!(p.info.serial, "SIM-BLE-1");
    (sim, t, c)
}

/// Reconnection attempts at 0, 50, 100, 200, 200, … ms.
fn quick() -> ReconnectPolicy {
    ReconnectPolicy {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_attempts: 100,
    }
}

/// The supervisor's reports, in order.
fn supervised(
    t: &Arc<BleTransport>,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<Supervision>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = supervise(Arc::clone(t), quick(), move |s| {
        let _ = tx.send(s);
    });
    (task, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Supervision>) -> Supervision {
    timeout(STEP, rx.recv()).await.unwrap().unwrap()
}

/// Waits for `Reconnected`; returns the attempts it took.
async fn reconnected(rx: &mut mpsc::UnboundedReceiver<Supervision>) -> u32 {
    loop {
        match next(rx).await {
            Supervision::Reconnected { attempts } => return attempts,
            Supervision::GaveUp { .. } => panic!("the supervisor gave up"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_lists_only_readers_strongest_first_with_their_signal() {
    let bluez = double().await;
    bluez.advertise_reader(
        "C0:FF:EE:00:00:0F",
        "Reader far",
        -88,
        185,
        config("SIM-FAR"),
    );
    bluez.advertise_other("AA:BB:CC:00:00:01", "Heart strap", -40, &[HEART_RATE]);
    bluez.advertise_reader(
        "C0:FF:EE:00:00:0E",
        "Reader near",
        -52,
        185,
        config("SIM-NEAR"),
    );
    // Another app scans without a filter: BlueZ reports the strap to us too.
    bluez.merge_with_an_unfiltered_scan(true);
    let adapter = adapter().await;
    let found = scan(&adapter, Duration::from_millis(200)).await.unwrap();
    let seen: Vec<(Option<String>, Option<i16>)> =
        found.iter().map(|d| (d.name.clone(), d.rssi)).collect();
    assert_eq!(
        seen,
        vec![
            (Some("Reader near".into()), Some(-52)),
            (Some("Reader far".into()), Some(-88)),
        ],
        "readers only, strongest first, with the RSSI seen while scanning"
    );
    assert_eq!(
        bluez.discovery_filter(),
        vec![gatt::SERVICE_UUID.to_owned()]
    );
    let mut names = Vec::new();
    for p in adapter.peripherals().await.unwrap() {
        names.push(p.properties().await.unwrap().unwrap().local_name.unwrap());
    }
    assert!(
        names.contains(&"Heart strap".to_owned()),
        "BlueZ let it through: {names:?}"
    );
}

async fn pair_and_take_a_card_at(mtu: u16) {
    let bluez = double().await;
    let (sim, t, mut c) = paired(&bluez, mtu).await;
    assert_eq!(t.mtu(), usize::from(mtu), "the MTU BlueZ negotiated");
    sim.present(card("4242424242424242", Network::Visa));
    let read = c
        .take_card(&challenge(1_500), &[EntryMode::Chip], true)
        .await
        .unwrap();
    assert_eq!(read.last4, "4242");
    assert_eq!(read.reader_serial.as_deref(), Some("SIM-BLE-1"));
    let s = bluez.radio_stats(READER);
    let payload = usize::from(mtu) - 3;
    assert_eq!(
        (s.largest_write, s.largest_notification),
        (payload, payload),
        "frames fill MTU − 3 both ways: {s:?}"
    );
    assert_eq!(
        (s.connections, s.notify_sessions_opened, s.refused_writes),
        (1, 1, 0)
    );
    assert_eq!(s.lost_notifications, 0, "{s:?}");
    assert_eq!(c.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_discover_subscribe_pair_and_take_a_card_at_mtu_23() {
    pair_and_take_a_card_at(23).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_discover_subscribe_pair_and_take_a_card_at_mtu_185() {
    pair_and_take_a_card_at(185).await;
}

/// The link drops `after` frames into the payment; the supervisor
/// reconnects; the card arrives once (a second payment gets its own card,
/// with the next counter, not a copy of the first).
async fn drop_mid_payment_and_reconnect(after: usize) {
    let bluez = double().await;
    let (sim, t, mut c) = paired(&bluez, 23).await;
    let (task, mut events) = supervised(&t);
    sim.set_next_counter(500);
    bluez.drop_connection_after(READER, after);
    sim.present(card("4242424242424242", Network::Visa));
    let first = timeout(STEP, c.take_card(&challenge(900), &[EntryMode::Chip], true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.last4.as_str(), counter(&first)), ("4242", 500));
    assert_eq!(next(&mut events).await, Supervision::Disconnected);
    assert_eq!(reconnected(&mut events).await, 1);
    assert_eq!(bluez.radio_stats(READER).connections, 2);
    sim.present(card("5555555555554444", Network::Mastercard));
    let second = timeout(STEP, c.take_card(&challenge(901), &[EntryMode::Chip], true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.last4.as_str(), counter(&second)), ("4444", 501));
    assert_eq!(c.rejected(), 0, "resent messages are not refusals");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_in_the_request_reconnects_by_itself_and_the_card_arrives_once() {
    // 6 frames into the ~29 frames of the sealed start_payment at MTU 23.
    drop_mid_payment_and_reconnect(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_in_the_card_result_reconnects_by_itself_and_the_card_arrives_once() {
    // Past the request, its acknowledgement and card_presented: inside the
    // ~75 frames of card_result.
    drop_mid_payment_and_reconnect(60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_walks_out_of_range_mid_payment_and_comes_back() {
    let bluez = double().await;
    let (sim, t, mut c) = paired(&bluez, 23).await;
    let (task, mut events) = supervised(&t);
    bluez.leave_range_after(READER, 6);
    sim.present(card("4242424242424242", Network::Visa));
    let payment = tokio::spawn(async move {
        let read = c.take_card(&challenge(700), &[EntryMode::Chip], true).await;
        (read, c)
    });
    assert_eq!(next(&mut events).await, Supervision::Disconnected);
    // Attempts fail while it is away...
    for n in 1..=3 {
        assert_eq!(
            next(&mut events).await,
            Supervision::Reconnecting { attempt: n }
        );
    }
    assert!(!bluez.is_connected(READER));
    bluez.set_in_range(READER, true).await;
    // ...and one after it is back succeeds; the payment goes on.
    assert!(reconnected(&mut events).await >= 3);
    let (read, c) = timeout(STEP, payment).await.unwrap().unwrap();
    assert_eq!(read.unwrap().last4, "4242");
    assert_eq!(c.rejected(), 0);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_times_out_when_the_reader_never_answers() {
    let bluez = double().await;
    bluez.advertise_reader(READER, "Reader", -60, 185, config("SIM-BLE-1"));
    let adapter = adapter().await;
    let id = find_reader(&adapter).await;
    bluez.stay_silent(READER, Silence::Connect);
    let started = tokio::time::Instant::now();
    let e = BleTransport::connect(adapter, id, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BleError::Bluetooth(m) if m.contains("Timed out")),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!bluez.is_connected(READER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_times_out_when_services_never_resolve_and_no_connection_is_left() {
    let bluez = double().await;
    bluez.advertise_reader(READER, "Reader", -60, 185, config("SIM-BLE-1"));
    let adapter = adapter().await;
    let id = find_reader(&adapter).await;
    bluez.stay_silent(READER, Silence::Services);
    let e = BleTransport::connect(adapter, id, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BleError::Bluetooth(m) if m.contains("Timed out")),
        "{e:?}"
    );
    assert!(
        !bluez.is_connected(READER),
        "the reader is left connected to a phone that gave up on it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_times_out_when_the_reader_stays_silent_after_connecting() {
    let bluez = double().await;
    bluez.advertise_reader(READER, "Reader", -60, 185, config("SIM-BLE-1"));
    let adapter = adapter().await;
    let id = find_reader(&adapter).await;
    bluez.stay_silent(READER, Silence::Reader);
    let t = BleTransport::connect(adapter, id, Duration::from_secs(5))
        .await
        .unwrap();
    let options = ConnectOptions {
        timeout: Duration::from_millis(300),
        ..ConnectOptions::default()
    };
    let e = ReaderClient::connect_with(t, options).await.unwrap_err();
    assert_eq!(e, ReaderError::Link(LinkError::Timeout));
    assert_eq!(bluez.radio_stats(READER).writes, 1, "the hello went out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bluetooth_switched_off_scans_fail_and_the_reader_comes_back_when_it_is_on() {
    let bluez = double().await;
    let (_sim, t, mut c) = paired(&bluez, 185).await;
    let (task, mut events) = supervised(&t);
    bluez.switch_bluetooth(false).await;
    assert_eq!(next(&mut events).await, Supervision::Disconnected);
    for n in 1..=2 {
        assert_eq!(
            next(&mut events).await,
            Supervision::Reconnecting { attempt: n }
        );
    }
    let adapter = adapter().await;
    assert_eq!(
        adapter.adapter_state().await.unwrap(),
        CentralState::PoweredOff
    );
    let e = scan(&adapter, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BleError::Bluetooth(m) if m.contains("rfkill")),
        "{e:?}"
    );
    bluez.switch_bluetooth(true).await;
    reconnected(&mut events).await;
    assert_eq!(c.info().await.unwrap().serial, "SIM-BLE-1");
    task.abort();
}
