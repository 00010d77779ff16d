//! Against a real Bluetooth adapter, only when `POS_BLE_ADAPTER` names one
//! (e.g. `hci0`); there is no radio on the build machines, so in the normal
//! run this test only checks that the btleplug transport links.

#![cfg(feature = "ble")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Duration;

use btleplug::api::{Central as _, Manager as _};
use btleplug::platform::Manager;
use pos_reader::ble::{scan, BleTransport};
use pos_reader::client::ReaderClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_and_connect_to_a_real_reader_when_an_adapter_is_named() {
    let Ok(name) = std::env::var("POS_BLE_ADAPTER") else {
        println!("POS_BLE_ADAPTER not set: no radio here, skipped");
        return;
    };
    let manager = Manager::new().await.unwrap();
    let mut chosen = None;
    for a in manager.adapters().await.unwrap() {
        if a.adapter_info().await.unwrap_or_default().contains(&name) {
            chosen = Some(a);
        }
    }
    let adapter = chosen.expect("no adapter with that name");
    let found = scan(&adapter, Duration::from_secs(5)).await.unwrap();
    println!("readers: {found:?}");
    if let Some(r) = found.first() {
        let t = BleTransport::connect(adapter.clone(), r.id.clone(), Duration::from_secs(10))
            .await
            .unwrap();
        // Connecting negotiates the version; the reader's information needs
        // the handshake, which needs the reader's authority (not known here).
        let c = ReaderClient::connect(t).await.unwrap();
        println!("reader speaks profile version {}", c.version());
    }
}
