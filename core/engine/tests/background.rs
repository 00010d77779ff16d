//! Going to the background on a durable store: the engine snapshots what it
//! holds and the store saves its latest rollback anchor before
//! `on_background` returns, so nothing is pending while the app may be
//! suspended or killed.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use pos_core::crypto::{FileKeyProvider, KeyProvider};
use pos_core::sqlite_store::SqliteStore;
use pos_core::store::Store;
use pos_test_support::store::temp_dir;
use pos_test_support::Rig;

/// An engine offline on a durable store in a folder of its own, with three
/// payments taken.
async fn three_sales_offline(
    name: &str,
) -> (
    PathBuf,
    Arc<FileKeyProvider>,
    Arc<SqliteStore>,
    Rig<SqliteStore>,
) {
    let dir = temp_dir(name);
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let store = Arc::new(
        SqliteStore::open(dir.join("store.db"), keys.clone())
            .await
            .unwrap(),
    );
    let rig = Rig::builder()
        .store(store.clone())
        .offline(true)
        .open()
        .await;
    for cents in [300, 400, 500] {
        rig.sale(cents).sell(&rig.engine).await;
    }
    (dir, keys, store, rig)
}

#[tokio::test]
async fn going_to_the_background_snapshots_and_saves_the_latest_anchor() {
    let (dir, keys, store, rig) = three_sales_offline("background").await;
    assert!(store.records_since_compaction().unwrap() > 0);
    rig.engine.on_background().await.unwrap();
    assert_eq!(store.records_since_compaction(), Some(0));
    // The anchor saved when `on_background` returned is the last one: the
    // store's close, which saves the last head's anchor, changes nothing.
    let anchor = keys.load_anchor(&store.store_id()).unwrap();
    assert!(anchor.is_some());
    let status = rig.engine.status().unwrap().anchor.unwrap();
    assert_eq!(status.behind, 0);
    // Going to the background again with nothing new writes nothing.
    rig.engine.on_background().await.unwrap();
    assert_eq!(store.records_since_compaction(), Some(0));
    assert_eq!(keys.load_anchor(&store.store_id()).unwrap(), anchor);
    store.close().await;
    assert_eq!(keys.load_anchor(&store.store_id()).unwrap(), anchor);
    drop(rig);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn after_going_to_the_background_the_database_file_alone_holds_every_payment() {
    let (dir, _keys, store, rig) = three_sales_offline("background-checkpoint").await;
    rig.engine.on_background().await.unwrap();
    // What a backup, or a process killed with its write-ahead log lost,
    // leaves: the database file and the key provider's files, no log.
    let copy = temp_dir("background-checkpoint-copy");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if !name.ends_with("-wal") && !name.ends_with("-shm") {
            std::fs::copy(entry.path(), copy.join(&name)).unwrap();
        }
    }
    let copy_keys = Arc::new(FileKeyProvider::open_or_create(copy.join("kek")).unwrap());
    let reopened = SqliteStore::open(copy.join("store.db"), copy_keys)
        .await
        .expect("the file alone is the latest state: its anchor matches");
    let (ledger, records) = reopened.open_state().await.unwrap();
    let mut restored = ledger;
    for w in records {
        restored.apply(w).unwrap();
    }
    assert_eq!(
        restored.payments.len(),
        rig.engine.list_payments().unwrap().len()
    );
    assert_eq!(restored.payments.len(), 3);
    reopened.close().await;
    store.close().await;
    drop(rig);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
}
