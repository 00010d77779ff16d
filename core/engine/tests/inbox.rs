//! Other channels' online orders (SPEC R18): the engine's inbox follows
//! connectivity (hidden offline, syncing after a reconnection) and is filled
//! only from the app's order source, never with a lock held.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pos_core::clock::Timestamp;
use pos_core::inbox::{
    InboxError, InboxView, OrderBatch, OrderSource, RefreshOutcome, RemoteOrder,
};
use pos_core::PosError;
use pos_test_support::{usd, Rig};

/// One order from scratch; fails while `failing` is set.
struct Source {
    failing: AtomicBool,
}

impl OrderSource for Source {
    fn fetch_since(&self, cursor: Option<String>) -> Result<OrderBatch, InboxError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(InboxError::Unavailable {
                reason: "web shop down".into(),
            });
        }
        Ok(match cursor {
            None => OrderBatch {
                orders: vec![RemoteOrder {
                    id: "web-1".into(),
                    channel: "web".into(),
                    placed_at: Timestamp(1_800_000_000_000),
                    total: usd(2_500),
                }],
                next_cursor: Some("c1".into()),
                ..OrderBatch::default()
            },
            Some(_) => OrderBatch::default(),
        })
    }
}

#[tokio::test]
async fn the_inbox_is_hidden_offline_and_a_failing_source_changes_nothing() {
    let rig = Rig::builder().offline(false).open().await;
    let engine = rig.engine.clone();
    // No source yet: a typed error.
    assert!(matches!(
        engine.refresh_inbox().await,
        Err(PosError::InvalidInput { .. })
    ));
    let source = Arc::new(Source {
        failing: AtomicBool::new(false),
    });
    engine.set_order_source(source.clone()).unwrap();
    assert_eq!(engine.inbox().unwrap(), InboxView::Syncing);
    assert!(matches!(
        engine.refresh_inbox().await.unwrap(),
        RefreshOutcome::Updated { added: 1, .. }
    ));
    let InboxView::Ready(orders) = engine.inbox().unwrap() else {
        panic!("not ready")
    };
    assert_eq!(orders.len(), 1);
    // The source fails: a typed error, and the inbox keeps what it had.
    source.failing.store(true, Ordering::SeqCst);
    assert!(matches!(
        engine.refresh_inbox().await,
        Err(PosError::OrderSourceFailed { .. })
    ));
    assert_eq!(engine.inbox().unwrap(), InboxView::Ready(orders));
    // Offline: hidden, and the source is not called.
    engine.report_network(false).await.unwrap();
    assert_eq!(engine.inbox().unwrap(), InboxView::Hidden);
    assert_eq!(
        engine.refresh_inbox().await.unwrap(),
        RefreshOutcome::Offline
    );
}
