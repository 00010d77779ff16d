//! A caller that gives up in the middle of a write (a cancelled Kotlin
//! coroutine or Swift task drops the future) never leaves the engine and
//! its store disagreeing: the commit finishes on its own.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pos_core::ledger::Write;
use pos_core::store::{BoxFuture, MemoryStore, Store, StoreError};
use pos_core::PosEngine;
use tokio::sync::{mpsc, Notify};

use pos_test_support as support;

/// A store that, when held, makes each batch durable and then waits (the
/// moment between the store's commit and the engine's memory update).
#[derive(Debug)]
struct Held {
    inner: MemoryStore,
    hold: AtomicBool,
    written: mpsc::UnboundedSender<()>,
    release: Notify,
}

impl Store for Held {
    fn load(&self) -> BoxFuture<'_, Result<Vec<Write>, StoreError>> {
        self.inner.load()
    }

    fn apply<'a>(&'a self, batch: &'a [Write]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.inner.apply(batch).await?;
            if self.hold.load(Ordering::SeqCst) {
                let _ = self.written.send(());
                self.release.notified().await;
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_cancelled_after_its_write_still_reaches_memory() {
    let memory = MemoryStore::new();
    let (written, mut on_written) = mpsc::unbounded_channel();
    let store = Arc::new(Held {
        inner: memory.clone(),
        hold: AtomicBool::new(false),
        written,
        release: Notify::new(),
    });
    let rig = support::Rig::builder().store(store.clone()).open().await;
    let engine = rig.engine.clone();
    support::sell_offline(&engine, 1, 1_000).await;
    let id = support::begin_sale(&engine, 2, 2_000).await;
    // The capture's batch is durable, and its caller gives up right then.
    store.hold.store(true, Ordering::SeqCst);
    let e = engine.clone();
    let card = support::chip_card_for(&engine, &id, 2);
    let caller = tokio::spawn(async move { e.confirm_card_payment(&id, card).await });
    on_written.recv().await.unwrap();
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    store.hold.store(false, Ordering::SeqCst);
    store.release.notify_one();
    // The next sale waits for the cancelled commit, which went on: memory
    // and store agree (the payment the store has is in memory too), and
    // the next audit entry is numbered after it.
    support::sell_offline(&engine, 3, 3_000).await;
    assert_eq!(engine.list_payments().unwrap().len(), 3);
    engine.close();
    let reopened = PosEngine::open_with(rig.config, Arc::new(rig.clock), Arc::new(memory))
        .await
        .expect("the store opens: no audit number was used twice");
    assert_eq!(reopened.list_payments().unwrap().len(), 3);
}
