//! The [`PosEngine`] façade: what the app creates, configures and talks to.
//!
//! It owns the configuration, the trusted clock, the current connectivity and
//! the event bus, and hands each request to the sans-I/O rules. Every method
//! fails with [`PosError::Closed`] after [`PosEngine::close`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::{Clock, SystemClock, Timestamp, TrustedClock};
use crate::error::{PosError, Result};
use crate::events::{EventBus, EventListener, PosEvent, Subscription};
use crate::money::Currency;

/// The library version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the app sets up an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Where the engine keeps its files. Must be non-empty.
    pub data_dir: PathBuf,
    /// This device's identifier at the processor: 1–64 of `[A-Za-z0-9._-]`.
    pub device_id: String,
    /// The shop's main currency.
    pub currency: Currency,
}

impl EngineConfig {
    /// Validates raw values from the app.
    pub fn new(data_dir: impl Into<PathBuf>, device_id: &str, currency_code: &str) -> Result<Self> {
        let data_dir = data_dir.into();
        if data_dir.as_os_str().is_empty() {
            return Err(PosError::InvalidConfig {
                reason: "data_dir is empty".into(),
            });
        }
        let id_ok = (1..=64).contains(&device_id.len())
            && device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(PosError::InvalidConfig {
                reason: "device_id must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            });
        }
        let currency = Currency::parse(currency_code).map_err(|e| PosError::InvalidConfig {
            reason: e.to_string(),
        })?;
        Ok(EngineConfig {
            data_dir,
            device_id: device_id.to_owned(),
            currency,
        })
    }
}

/// Connectivity as the app sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectivityStatus {
    /// Nothing reported yet.
    Unknown,
    Online {
        since: Timestamp,
    },
    /// The device has no internet.
    NetworkOutage {
        since: Timestamp,
    },
    /// The internet works, the payment service does not.
    ServiceDisruption {
        since: Timestamp,
    },
}

/// A snapshot of the engine for the app's status screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    pub version: String,
    pub device_id: String,
    pub currency: Currency,
    pub connectivity: ConnectivityStatus,
    pub pending_offline_payments: u64,
}

/// The engine. Cheap to clone; all clones share one engine.
#[derive(Debug, Clone)]
pub struct PosEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: EngineConfig,
    clock: TrustedClock,
    state: Mutex<State>,
    events: Arc<EventBus>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct State {
    connectivity: ConnectivityStatus,
    pending_offline_payments: u64,
}

impl PosEngine {
    /// Opens an engine on the real clock.
    pub fn open(config: EngineConfig) -> Result<Self> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens an engine on the given clock (a [`crate::clock::VirtualClock`] in tests).
    pub fn open_with_clock(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let events = EventBus::start().map_err(|e| PosError::Internal {
            reason: format!("event thread: {e}"),
        })?;
        let inner = Inner {
            config,
            clock: TrustedClock::start(clock, None),
            state: Mutex::new(State {
                connectivity: ConnectivityStatus::Unknown,
                pending_offline_payments: 0,
            }),
            events,
            closed: AtomicBool::new(false),
        };
        Ok(PosEngine {
            inner: Arc::new(inner),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(PosError::Closed);
        }
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current status.
    pub fn status(&self) -> Result<EngineStatus> {
        self.check_open()?;
        let s = self.state();
        Ok(EngineStatus {
            version: VERSION.to_owned(),
            device_id: self.inner.config.device_id.clone(),
            currency: self.inner.config.currency,
            connectivity: s.connectivity,
            pending_offline_payments: s.pending_offline_payments,
        })
    }

    /// The app's reachability monitor reports whether the device has internet.
    pub async fn report_network(&self, reachable: bool) -> Result<ConnectivityStatus> {
        self.check_open()?;
        let now = self.inner.clock.now();
        let change = {
            let mut s = self.state();
            let from = s.connectivity;
            let to = match (reachable, from) {
                (true, ConnectivityStatus::Online { .. })
                | (false, ConnectivityStatus::NetworkOutage { .. }) => from,
                (true, _) => ConnectivityStatus::Online { since: now },
                (false, _) => ConnectivityStatus::NetworkOutage { since: now },
            };
            s.connectivity = to;
            (from != to).then_some((from, to))
        };
        if let Some((from, to)) = change {
            let banner = match to {
                ConnectivityStatus::NetworkOutage { .. } => {
                    Some("Offline: reconnect to take payments".to_owned())
                }
                _ => None,
            };
            self.inner.events.emit(PosEvent::ConnectivityChanged {
                from,
                to,
                at: now,
                banner,
            });
        }
        Ok(change.map_or_else(|| self.state().connectivity, |(_, to)| to))
    }

    /// Subscribes a listener; it first receives a [`PosEvent::Snapshot`].
    pub fn subscribe(&self, listener: Arc<dyn EventListener>) -> Result<Subscription> {
        self.check_open()?;
        let first = {
            let s = self.state();
            PosEvent::Snapshot {
                connectivity: s.connectivity,
                pending_offline_payments: s.pending_offline_payments,
            }
        };
        Ok(self.inner.events.subscribe(listener, first))
    }

    /// Closes the engine: stops event delivery (after a final
    /// [`PosEvent::Closed`]) and makes every later call fail with
    /// [`PosError::Closed`]. Idempotent.
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.events.stop();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use std::sync::mpsc;
    use std::time::Duration;

    fn config() -> EngineConfig {
        EngineConfig::new("/tmp/pos-test", "till-1", "USD").unwrap()
    }

    fn engine() -> (VirtualClock, PosEngine) {
        let clock = VirtualClock::new(Timestamp(1_800_000_000_000));
        let e = PosEngine::open_with_clock(config(), Arc::new(clock.clone())).unwrap();
        (clock, e)
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        for (dir, id, cur) in [
            ("", "a", "USD"),
            ("/x", "", "USD"),
            ("/x", "a b", "USD"),
            ("/x", "a", "XYZ"),
        ] {
            assert!(
                matches!(
                    EngineConfig::new(dir, id, cur),
                    Err(PosError::InvalidConfig { .. })
                ),
                "{dir} {id} {cur}"
            );
        }
        assert!(EngineConfig::new("/x", &"a".repeat(65), "USD").is_err());
    }

    #[test]
    fn status_starts_unknown_and_empty() {
        let (_, e) = engine();
        let s = e.status().unwrap();
        assert_eq!(s.connectivity, ConnectivityStatus::Unknown);
        assert_eq!(s.pending_offline_payments, 0);
        assert_eq!(s.version, VERSION);
        assert_eq!(s.currency.code(), "USD");
    }

    #[tokio::test]
    async fn network_reports_change_connectivity_and_emit_events() {
        let (clock, e) = engine();
        struct L(Mutex<mpsc::Sender<PosEvent>>);
        impl EventListener for L {
            fn on_event(&self, ev: PosEvent) {
                let _ = self.0.lock().unwrap().send(ev);
            }
        }
        let (tx, rx) = mpsc::channel();
        let _sub = e.subscribe(Arc::new(L(Mutex::new(tx)))).unwrap();
        let t0 = Timestamp(1_800_000_000_000);
        assert_eq!(
            e.report_network(false).await.unwrap(),
            ConnectivityStatus::NetworkOutage { since: t0 }
        );
        clock.advance(Duration::from_secs(5));
        // The same report again changes nothing and emits nothing.
        assert_eq!(
            e.report_network(false).await.unwrap(),
            ConnectivityStatus::NetworkOutage { since: t0 }
        );
        e.close();
        let got: Vec<PosEvent> = rx.iter().collect();
        assert!(matches!(got[0], PosEvent::Snapshot { .. }));
        assert!(matches!(
            got[1],
            PosEvent::ConnectivityChanged {
                banner: Some(_),
                ..
            }
        ));
        assert_eq!(got[2], PosEvent::Closed);
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn close_is_idempotent_and_later_calls_fail_typed() {
        let (_, e) = engine();
        e.close();
        e.close();
        assert!(e.is_closed());
        assert_eq!(e.status(), Err(PosError::Closed));
        assert_eq!(e.report_network(true).await, Err(PosError::Closed));
    }
}
