//! Events and the listener the app implements (a foreign trait).

use std::sync::Arc;

use pos_core::events as core;

use crate::engine::ConnectivityStatus;

/// Mirrors `pos_core::PosEvent`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum PosEvent {
    Snapshot {
        connectivity: ConnectivityStatus,
        pending_offline_payments: u64,
    },
    ConnectivityChanged {
        from: ConnectivityStatus,
        to: ConnectivityStatus,
        at_ms: i64,
        banner: Option<String>,
    },
    Closed,
}

impl From<core::PosEvent> for PosEvent {
    fn from(e: core::PosEvent) -> Self {
        match e {
            core::PosEvent::Snapshot {
                connectivity,
                pending_offline_payments,
            } => PosEvent::Snapshot {
                connectivity: connectivity.into(),
                pending_offline_payments,
            },
            core::PosEvent::ConnectivityChanged {
                from,
                to,
                at,
                banner,
            } => PosEvent::ConnectivityChanged {
                from: from.into(),
                to: to.into(),
                at_ms: at.millis(),
                banner,
            },
            core::PosEvent::Closed => PosEvent::Closed,
        }
    }
}

/// Implemented in Swift or Kotlin. Called on the engine's event thread, never
/// on the caller's, one event at a time and in order.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: PosEvent);
}

pub(crate) struct ListenerAdapter(pub Arc<dyn EventListener>);

impl core::EventListener for ListenerAdapter {
    fn on_event(&self, event: core::PosEvent) {
        self.0.on_event(event.into());
    }
}

/// Keeps a listener subscribed until `cancel()` (or until it is closed/freed).
#[derive(Debug, uniffi::Object)]
pub struct Subscription {
    inner: core::Subscription,
}

impl Subscription {
    pub(crate) fn new(inner: core::Subscription) -> Arc<Self> {
        Arc::new(Subscription { inner })
    }
}

#[pos_ffi_macros::export]
impl Subscription {
    /// Stops delivery to this listener. Idempotent.
    pub fn cancel(&self) {
        self.inner.cancel();
    }
}
