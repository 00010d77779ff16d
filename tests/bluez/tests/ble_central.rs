//! `BleCentral`, the FFI object apps use for btleplug (pos-ffi feature
//! `ble`), through its Rust API against the BlueZ double: the first
//! adapter, a scan that lists only the reader, connect, pair with an engine
//! (trusting the simulator's reader authority) and a card taken for a begun
//! payment, confirmed and stored; the FFI's refusals (scan length, an id
//! not from the last scan, an untrusted reader).
//!
//! The tests take turns on the one bus of this process (`BlueZ::start`).
//! If the bus cannot start, they fail.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_bluez_double::{app_reader_config, BlueZ};
use pos_ffi::{
    policy_preset, simulator_reader_authority, BleCentral, CardPaymentRequest, EngineConfig,
    EntryMode, KeyMaterial, KeyProvider, KeyProviderError, Money, NewOrder, OfflineBehaviour,
    PaymentRoute, PaymentStatus, PolicyPreset, PosEngine, ProbeOutcome, ReaderError, ReaderEvent,
    ReaderListener, StaffSession, TenderKind, TestClock,
};
use pos_reader::sim::Presented;
use pos_rules::card_seal::CardSecret;
use pos_rules::policy::{EntryMode as CardEntry, Network};
use tokio::time::timeout;

const READER: &str = "C0:FF:EE:00:00:01";
const HEART_RATE: &str = "0000180d-0000-1000-8000-00805f9b34fb";
const MODEL: &str = "Chipper 2X BT";
/// Long enough for any one step here; a step that takes it has hung.
const STEP: Duration = Duration::from_secs(20);

async fn double() -> BlueZ {
    BlueZ::start()
        .await
        .expect("the BlueZ double must start (dbus-daemon: `cargo xtask install`)")
}

/// Keeps the key and the anchors in memory.
#[derive(Default)]
struct Keys(Mutex<HashMap<String, Vec<u8>>>);

impl KeyProvider for Keys {
    fn key_encryption_key(&self) -> Result<KeyMaterial, KeyProviderError> {
        Ok(KeyMaterial {
            key_id: "test".into(),
            key: vec![7; 32],
        })
    }

    fn save_anchor(&self, store_id: String, anchor: Vec<u8>) -> Result<(), KeyProviderError> {
        self.0.lock().unwrap().insert(store_id, anchor);
        Ok(())
    }

    fn load_anchor(&self, store_id: String) -> Result<Option<Vec<u8>>, KeyProviderError> {
        Ok(self.0.lock().unwrap().get(&store_id).cloned())
    }
}

/// Reader events as they arrive.
#[derive(Default)]
struct Events(Mutex<Vec<ReaderEvent>>);

impl ReaderListener for Events {
    fn on_reader_event(&self, event: ReaderEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// An engine on a test clock in a fresh folder, online (a new reader pairs
/// only online), a cashier signed in, with the Shopify preset and, when
/// `trust_simulator`, the simulator's reader authority.
async fn online_engine(name: &str, trust_simulator: bool) -> (Arc<PosEngine>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("pos-ble-central-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = EngineConfig {
        data_dir: dir.to_string_lossy().into_owned(),
        device_id: "till-1".into(),
        currency: "USD".into(),
        max_in_flight: None,
        automatic_forwarding: Some(false),
        compact_every: None,
        account: None,
        settled_in_memory: None,
        audit_in_memory: None,
    };
    // Opening blocks (it runs the library's runtime): not on this one.
    let engine = tokio::task::spawn_blocking(|| {
        PosEngine::with_test_clock(
            config,
            Arc::new(Keys::default()),
            TestClock::new(1_800_000_000_000),
        )
        .unwrap()
    })
    .await
    .unwrap();
    let mut policy = policy_preset(PolicyPreset::ShopifyPos, "USD".into()).unwrap();
    policy.enabled = true;
    policy.reader_authorities = if trust_simulator {
        vec![simulator_reader_authority()]
    } else {
        vec![]
    };
    engine.set_policy(policy).await.unwrap();
    engine
        .sign_in(StaffSession {
            staff_id: "cashier-1".into(),
            may_take_offline_payments: true,
        })
        .unwrap();
    engine.report_network(true).await.unwrap();
    engine.report_probe(ProbeOutcome::Healthy).await.unwrap();
    engine.report_probe(ProbeOutcome::Healthy).await.unwrap();
    (engine, dir)
}

fn usd(minor_units: i64) -> Money {
    Money {
        minor_units,
        currency: "USD".into(),
    }
}

fn visa() -> Presented {
    Presented {
        secret: CardSecret {
            pan: "4242424242424242".into(),
            expiry: "1230".into(),
        },
        network: Network::Visa,
        entry_mode: CardEntry::Chip,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ble_central_scans_connects_pairs_and_a_card_taken_is_stored() {
    let bluez = double().await;
    let sim = bluez.advertise_reader(
        READER,
        MODEL,
        -60,
        185,
        app_reader_config("SIM-BLE-FFI-1", MODEL, 80).unwrap(),
    );
    // BlueZ reports the strap too (another app scans unfiltered).
    bluez.advertise_other("C0:FF:EE:00:00:02", "HR Strap", -40, &[HEART_RATE]);
    bluez.merge_with_an_unfiltered_scan(true);

    let central = timeout(STEP, BleCentral::first_adapter())
        .await
        .unwrap()
        .unwrap();
    let found = timeout(STEP, central.scan(1)).await.unwrap().unwrap();
    assert_eq!(found.len(), 1, "only the reader: {found:?}");
    assert_eq!(found[0].name.as_deref(), Some(MODEL));
    assert_eq!(found[0].rssi, Some(-60));

    let events = Arc::new(Events::default());
    let reader = timeout(STEP, central.connect(found[0].id.clone(), events.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(bluez.is_connected(READER));

    let (engine, dir) = online_engine("pay", true).await;
    let info = timeout(STEP, reader.pair(Arc::clone(&engine)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.serial, "SIM-BLE-FFI-1");
    assert_eq!(info.model, MODEL);
    assert!(
        matches!(
            events.0.lock().unwrap().first(),
            Some(ReaderEvent::Paired { .. })
        ),
        "{:?}",
        events.0.lock().unwrap()
    );
    assert_eq!(
        engine
            .remembered_readers()
            .unwrap()
            .into_iter()
            .map(|r| r.serial)
            .collect::<Vec<_>>(),
        ["SIM-BLE-FFI-1"],
        "remembered by the pairing"
    );

    // Offline now: the payment is taken on the reader's word and stored.
    engine.report_network(false).await.unwrap();
    let order = engine
        .create_order(NewOrder {
            order_id: None,
            total: usd(2_000),
            contact: None,
        })
        .await
        .unwrap();
    let decision = engine
        .begin_card_payment(CardPaymentRequest {
            order_id: order.id,
            payment_id: None,
            amount: usd(2_000),
            tip: None,
            behaviour: OfflineBehaviour::PreferOnline,
            tender: TenderKind::Card,
        })
        .await
        .unwrap();
    assert!(
        matches!(decision.route, PaymentRoute::Offline { .. }),
        "{:?}",
        decision.route
    );
    sim.present(visa());
    let card = timeout(
        STEP,
        reader.take_card(
            decision.challenge.clone(),
            vec![EntryMode::Chip, EntryMode::Contactless],
            true,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(card.last4, "4242");
    assert_eq!(card.reader_serial.as_deref(), Some("SIM-BLE-FFI-1"));
    assert_eq!(card.reader_signature.as_ref().map(Vec::len), Some(64));
    let taken = engine
        .confirm_card_payment(decision.payment_id.clone(), card)
        .await
        .unwrap();
    assert_eq!(taken.status, PaymentStatus::Pending);
    assert_eq!(taken.last4, "4242");
    assert_eq!(
        engine
            .list_payments()
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [taken.id],
        "stored"
    );
    assert_eq!(reader.rejected_messages(), 0);

    let radio = bluez.radio_stats(READER);
    assert_eq!(radio.connections, 1, "{radio:?}");
    assert_eq!(radio.refused_writes, 0, "{radio:?}");
    assert_eq!(radio.lost_notifications, 0, "{radio:?}");
    assert!(radio.writes > 0 && radio.notifications > 0, "{radio:?}");
    engine.close();
    drop(engine);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn ble_central_refuses_bad_scans_unknown_ids_and_untrusted_readers() {
    let bluez = double().await;
    let _sim = bluez.advertise_reader(
        READER,
        MODEL,
        -55,
        23,
        app_reader_config("SIM-BLE-FFI-2", MODEL, 80).unwrap(),
    );
    let central = timeout(STEP, BleCentral::first_adapter())
        .await
        .unwrap()
        .unwrap();
    for seconds in [0, 61] {
        assert!(
            matches!(
                central.scan(seconds).await,
                Err(ReaderError::InvalidInput { .. })
            ),
            "scan({seconds})"
        );
    }
    // Before any scan, no id is known.
    let unknown = central
        .connect(
            "/org/bluez/hci0/dev_C0_FF_EE_00_00_01".into(),
            Arc::new(Events::default()),
        )
        .await;
    assert!(
        matches!(unknown, Err(ReaderError::InvalidInput { .. })),
        "{:?}",
        unknown.err()
    );
    assert!(!bluez.is_connected(READER));

    let found = timeout(STEP, central.scan(1)).await.unwrap().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let reader = timeout(
        STEP,
        central.connect(found[0].id.clone(), Arc::new(Events::default())),
    )
    .await
    .unwrap()
    .unwrap();
    // A policy that lists no reader authority does not pair it.
    let (engine, dir) = online_engine("untrusted", false).await;
    let refused = timeout(STEP, reader.pair(Arc::clone(&engine)))
        .await
        .unwrap();
    assert_eq!(refused.err(), Some(ReaderError::UntrustedReader));
    assert!(engine.remembered_readers().unwrap().is_empty());
    engine.close();
    drop(engine);
    let _ = std::fs::remove_dir_all(dir);
}
