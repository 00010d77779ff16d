//! The encrypted SQLite store as a backend of `pos_rules::testing`'s store
//! conformance suite.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pos_core::crypto::FileKeyProvider;
use pos_core::sqlite_store::SqliteStore;
use pos_rules::testing::Backend;

/// The encrypted SQLite store as a backend of the store conformance suite.
#[derive(Debug)]
pub struct Sqlite {
    dir: PathBuf,
    provider: Arc<FileKeyProvider>,
    store: Arc<SqliteStore>,
}

/// A fresh, empty folder under the system's temporary folder.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pos-core-conformance-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Backend for Sqlite {
    type S = SqliteStore;

    async fn fresh(name: &str) -> Self {
        let dir = temp_dir(name);
        let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
        let store = SqliteStore::open(dir.join("store.db"), provider.clone())
            .await
            .unwrap();
        Sqlite {
            dir,
            provider,
            store: Arc::new(store),
        }
    }

    fn store(&self) -> Arc<SqliteStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::new(
            SqliteStore::open(self.dir.join("store.db"), self.provider.clone())
                .await
                .unwrap(),
        );
    }

    async fn fill_disk(&self) {
        // Holds the file at its current size.
        self.store.set_size_limit(Some(0)).await.unwrap();
    }

    async fn free_disk(&self) {
        self.store.set_size_limit(None).await.unwrap();
    }

    async fn finish(self) {
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
