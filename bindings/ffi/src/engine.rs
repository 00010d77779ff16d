//! The `PosEngine` object and its configuration and status records.

use std::sync::Arc;

use pos_core::engine as core;

use crate::error::PosError;
use crate::events::{EventListener, ListenerAdapter, Subscription};

/// How the app sets up an engine.
#[derive(Debug, Clone, uniffi::Record)]
pub struct EngineConfig {
    /// Where the engine keeps its files (the app's private data folder).
    pub data_dir: String,
    /// This device's identifier at the processor: 1–64 of `[A-Za-z0-9._-]`.
    pub device_id: String,
    /// ISO 4217 code of the shop's main currency, e.g. "USD".
    pub currency: String,
}

/// Connectivity as the app sees it. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectivityStatus {
    Unknown,
    Online { since_ms: i64 },
    NetworkOutage { since_ms: i64 },
    ServiceDisruption { since_ms: i64 },
}

impl From<core::ConnectivityStatus> for ConnectivityStatus {
    fn from(c: core::ConnectivityStatus) -> Self {
        use core::ConnectivityStatus as C;
        match c {
            C::Unknown => ConnectivityStatus::Unknown,
            C::Online { since } => ConnectivityStatus::Online {
                since_ms: since.millis(),
            },
            C::NetworkOutage { since } => ConnectivityStatus::NetworkOutage {
                since_ms: since.millis(),
            },
            C::ServiceDisruption { since } => ConnectivityStatus::ServiceDisruption {
                since_ms: since.millis(),
            },
        }
    }
}

/// A snapshot for the app's status screen.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EngineStatus {
    pub version: String,
    pub device_id: String,
    pub currency: String,
    pub connectivity: ConnectivityStatus,
    pub pending_offline_payments: u64,
}

impl From<core::EngineStatus> for EngineStatus {
    fn from(s: core::EngineStatus) -> Self {
        EngineStatus {
            version: s.version,
            device_id: s.device_id,
            currency: s.currency.code().to_owned(),
            connectivity: s.connectivity.into(),
            pending_offline_payments: s.pending_offline_payments,
        }
    }
}

/// The engine. Create one per data folder; `close()` it when done.
#[derive(Debug, uniffi::Object)]
pub struct PosEngine {
    inner: core::PosEngine,
}

#[pos_ffi_macros::export]
impl PosEngine {
    /// Opens the engine. Fails with `InvalidConfig` for an empty device id,
    /// an unknown currency code or an empty data folder.
    #[uniffi::constructor]
    pub fn new(config: EngineConfig) -> Result<Arc<Self>, PosError> {
        let config = core::EngineConfig::new(config.data_dir, &config.device_id, &config.currency)?;
        Ok(Arc::new(PosEngine {
            inner: core::PosEngine::open(config)?,
        }))
    }

    pub fn status(&self) -> Result<EngineStatus, PosError> {
        Ok(self.inner.status()?.into())
    }

    /// Reports the device's network reachability; returns the new connectivity.
    pub async fn report_network(&self, reachable: bool) -> Result<ConnectivityStatus, PosError> {
        Ok(self.inner.report_network(reachable).await?.into())
    }

    /// Subscribes a listener. It receives a `Snapshot` first, then every event,
    /// on the engine's event thread, until the subscription is cancelled.
    pub fn subscribe(
        &self,
        listener: Arc<dyn EventListener>,
    ) -> Result<Arc<Subscription>, PosError> {
        let sub = self.inner.subscribe(Arc::new(ListenerAdapter(listener)))?;
        Ok(Subscription::new(sub))
    }

    /// Closes the engine: a final `Closed` event, then every call fails with
    /// `PosError.Closed`. Idempotent. In Kotlin this is `shutdown()`, because
    /// Kotlin's own `close()` (AutoCloseable) also frees the native handle.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Drop for PosEngine {
    /// Swift's deinit and Kotlin's `close()`/cleaner end here: stop the engine too.
    fn drop(&mut self) {
        self.inner.close();
    }
}
