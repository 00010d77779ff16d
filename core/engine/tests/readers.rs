//! Remembered card readers: a new reader is paired only online, a
//! remembered one survives restarts in the encrypted store, the policy's
//! offline-capable list decides which models may take offline payments (R11).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use pos_core::clock::{Timestamp, VirtualClock};
use pos_core::connectivity::ProbeOutcome;
use pos_core::crypto::FileKeyProvider;
use pos_core::money::Currency;
use pos_core::policy::Policy;
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EngineConfig, PosEngine, PosError};

async fn open(dir: &std::path::Path, clock: &VirtualClock) -> PosEngine {
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let store = SqliteStore::open(&dir.join("store.db"), keys)
        .await
        .unwrap();
    let config = EngineConfig::new(dir, "till-1", "USD").unwrap();
    PosEngine::open_with(config, Arc::new(clock.clone()), Arc::new(store))
        .await
        .unwrap()
}

#[tokio::test]
async fn readers_are_remembered_across_restarts_and_new_ones_need_the_service() {
    let dir = std::env::temp_dir().join(format!("pos-readers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = VirtualClock::new(Timestamp(1_800_000_000_000));
    let engine = open(&dir, &clock).await;
    engine.report_network(false).await.unwrap();
    // Offline: a new reader is refused, nothing stored.
    assert!(matches!(
        engine.remember_reader("SN-1", "Chipper 2X BT", "1.0").await,
        Err(PosError::OnlineRequired)
    ));
    assert!(engine.remembered_readers().unwrap().is_empty());
    // Online: paired and remembered.
    engine.report_network(true).await.unwrap();
    for _ in 0..5 {
        let _ = engine.report_probe(ProbeOutcome::Healthy).await;
    }
    engine
        .remember_reader("SN-1", "Chipper 2X BT", "1.0")
        .await
        .unwrap();
    assert!(
        engine.remember_reader("", "x", "1").await.is_err(),
        "bad input refused"
    );
    engine.close();
    drop(engine);

    // After a restart, offline: the remembered reader may reconnect (and be
    // updated), a new one may not.
    let engine = open(&dir, &clock).await;
    engine.report_network(false).await.unwrap();
    let readers = engine.remembered_readers().unwrap();
    assert_eq!(readers.len(), 1);
    assert_eq!(readers[0].model, "Chipper 2X BT");
    engine
        .remember_reader("SN-1", "Chipper 2X BT", "1.1")
        .await
        .unwrap();
    assert!(engine
        .remember_reader("SN-2", "Wisepad 3", "2")
        .await
        .is_err());
    // R11: the policy's list decides.
    engine
        .set_policy(Policy::shopify_pos(Currency::parse("USD").unwrap()).with_enabled(true))
        .await
        .unwrap();
    assert!(engine
        .reader_may_take_offline_payments("Chipper 2X BT")
        .unwrap());
    assert!(!engine
        .reader_may_take_offline_payments("Some Phone NFC")
        .unwrap());
    engine.forget_reader("SN-1").await.unwrap();
    assert!(engine.remembered_readers().unwrap().is_empty());
    engine.close();
    drop(engine);
    let engine = open(&dir, &clock).await;
    assert!(
        engine.remembered_readers().unwrap().is_empty(),
        "forgetting is durable"
    );
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
}
