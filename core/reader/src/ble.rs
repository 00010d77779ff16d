//! The Bluetooth LE transport over btleplug (feature `ble`). It runs end to
//! end against a BlueZ double on a private D-Bus (`tests/bluez`); it has
//! never run against a radio (there is none on the build machines): that
//! test runs only when `POS_BLE_ADAPTER` names an adapter.
//!
//! - scanning filters by the profile's service UUID and filters again on our
//!   side (BlueZ merges scan filters across apps);
//! - connect and service discovery with timeouts, subscription to the notify
//!   characteristic, writes without response (one frame per write);
//! - disconnections seen on the adapter's event stream;
//! - reconnection re-fetches the peripheral, reconnects, rediscovers and
//!   resubscribes, then bumps the generation so the channel resends.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{
    Central, CentralEvent, Characteristic, Peripheral as _, ScanFilter, ValueNotification,
    WriteType,
};
use btleplug::platform::{Adapter, Peripheral, PeripheralId};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch, Mutex};
use uuid::Uuid;

use crate::link::{LinkError, Transport};
use crate::uuids;

/// Why a Bluetooth operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BleError {
    #[error("bluetooth: {0}")]
    Bluetooth(String),
    #[error("the reader does not offer the POS Core reader service")]
    NotAReader,
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

fn bt(e: btleplug::Error) -> BleError {
    BleError::Bluetooth(e.to_string())
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap_or_default()
}

/// A reader seen while scanning.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub id: PeripheralId,
    pub name: Option<String>,
    /// Signal strength, dBm.
    pub rssi: Option<i16>,
}

/// Scans for `duration` and returns the readers that advertise the service,
/// strongest signal first.
pub async fn scan(adapter: &Adapter, duration: Duration) -> Result<Vec<Discovered>, BleError> {
    let service = uuid(uuids::SERVICE);
    adapter
        .start_scan(ScanFilter {
            services: vec![service],
        })
        .await
        .map_err(bt)?;
    tokio::time::sleep(duration).await;
    // Read before stopping: BlueZ drops every device's RSSI when discovery
    // stops (found by the BlueZ double, `tests/bluez`).
    let found = readers(adapter).await;
    adapter.stop_scan().await.map_err(bt)?;
    let mut found = found?;
    found.sort_by_key(|d| std::cmp::Reverse(d.rssi.unwrap_or(i16::MIN)));
    Ok(found)
}

/// The devices the adapter knows that offer the reader service.
async fn readers(adapter: &Adapter) -> Result<Vec<Discovered>, BleError> {
    let mut found = Vec::new();
    for p in adapter.peripherals().await.map_err(bt)? {
        let Some(props) = p.properties().await.map_err(bt)? else {
            continue;
        };
        // Filtered again here: another app's filter may have let it through.
        let services: Vec<String> = props.services.iter().map(Uuid::to_string).collect();
        if !crate::offers_reader_service(&services) {
            continue;
        }
        found.push(Discovered {
            id: p.id(),
            name: props.local_name,
            rssi: props.rssi,
        });
    }
    Ok(found)
}

/// The request and notify characteristics, the notifications and the
/// adapter's events of one connection.
type Opened = (
    Characteristic,
    Characteristic,
    Pin<Box<dyn Stream<Item = ValueNotification> + Send>>,
    Pin<Box<dyn Stream<Item = CentralEvent> + Send>>,
);

/// A connected reader over btleplug.
pub struct BleTransport {
    adapter: Adapter,
    id: PeripheralId,
    mtu: usize,
    timeout: Duration,
    writes: mpsc::UnboundedSender<Vec<u8>>,
    pending_writes: Arc<Mutex<mpsc::UnboundedReceiver<Vec<u8>>>>,
    frames_tx: mpsc::UnboundedSender<Vec<u8>>,
    frames: Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    connected: Arc<watch::Sender<bool>>,
    generation: watch::Sender<u64>,
    pump: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for BleTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleTransport")
            .field("id", &self.id)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl BleTransport {
    /// Connects to the reader `id` (from [`scan`]).
    pub async fn connect(
        adapter: Adapter,
        id: PeripheralId,
        timeout: Duration,
    ) -> Result<Self, BleError> {
        let (writes, pending) = mpsc::unbounded_channel();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let t = BleTransport {
            adapter,
            id,
            mtu: crate::frame::MIN_MTU,
            timeout,
            writes,
            pending_writes: Arc::new(Mutex::new(pending)),
            frames_tx,
            frames: Mutex::new(frames),
            connected: Arc::new(watch::channel(false).0),
            generation: watch::channel(0).0,
            pump: std::sync::Mutex::new(None),
        };
        let mtu = t.open().await?;
        Ok(BleTransport { mtu, ..t })
    }

    /// Re-fetches the peripheral, reconnects, rediscovers and resubscribes;
    /// the channel then resends what the reader did not acknowledge.
    pub async fn reconnect(&self) -> Result<(), BleError> {
        self.open().await?;
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Reconnects with exponential back-off; returns the attempts it took.
    pub async fn reconnect_with_backoff(
        &self,
        policy: crate::reconnect::ReconnectPolicy,
    ) -> Result<u32, BleError> {
        crate::reconnect::reconnect_with_backoff(policy, || self.reconnect(), tokio::time::sleep)
            .await
    }

    /// Connects, discovers the service and enables notifications once their
    /// stream listens. BlueZ keeps a notify session across a disconnection
    /// and enables it again at the reconnection, before this side listens:
    /// the reader's resent frames would be lost. So the session is stopped
    /// and started again here, and the reader, seeing notifications enabled,
    /// sends again what it still holds (found by the BlueZ double).
    async fn subscribed(&self, p: &Peripheral) -> Result<Opened, BleError> {
        p.connect_with_timeout(self.timeout).await.map_err(bt)?;
        p.discover_services_with_timeout(self.timeout)
            .await
            .map_err(bt)?;
        let find = |u: &str| -> Option<Characteristic> {
            let u = uuid(u);
            p.characteristics().into_iter().find(|c| c.uuid == u)
        };
        let (Some(request), Some(notify)) = (find(uuids::REQUEST), find(uuids::NOTIFY)) else {
            return Err(BleError::NotAReader);
        };
        let notifications = p.notifications().await.map_err(bt)?;
        let _ = p.unsubscribe(&notify).await;
        p.subscribe(&notify).await.map_err(bt)?;
        let events = self.adapter.events().await.map_err(bt)?;
        Ok((request, notify, notifications, events))
    }

    /// Connects and starts the pump; returns the negotiated MTU.
    async fn open(&self) -> Result<usize, BleError> {
        let p: Peripheral = self.adapter.peripheral(&self.id).await.map_err(bt)?;
        let (request, notify, mut notifications, mut events) = match self.subscribed(&p).await {
            Ok(opened) => opened,
            Err(e) => {
                // BlueZ goes on connecting, or stays connected, after a
                // timeout: the reader would stay tied to a phone that gave
                // up on it (found by the BlueZ double).
                tracing::info!(error = %e, "Bluetooth LE connection to the reader failed");
                let _ = p.disconnect().await;
                return Err(e);
            }
        };
        let mtu = usize::from(p.mtu()).max(crate::frame::MIN_MTU);
        tracing::info!(mtu, "reader connected over Bluetooth LE");
        self.connected.send_replace(true);
        let connected = Arc::clone(&self.connected);
        let frames = self.frames_tx.clone();
        let pending = Arc::clone(&self.pending_writes);
        let id = self.id.clone();
        let notify_uuid = notify.uuid;
        let pump = tokio::spawn(async move {
            let mut pending = pending.lock().await;
            loop {
                tokio::select! {
                    n = notifications.next() => match n {
                        Some(n) if n.uuid == notify_uuid => { let _ = frames.send(n.value); }
                        Some(_) => {}
                        None => break,
                    },
                    e = events.next() => match e {
                        Some(CentralEvent::DeviceDisconnected(d)) if d == id => break,
                        Some(_) => {}
                        None => break,
                    },
                    w = pending.recv() => match w {
                        Some(frame) => {
                            if p.write(&request, &frame, WriteType::WithoutResponse).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            tracing::info!("Bluetooth LE link to the reader down");
            connected.send_replace(false);
        });
        if let Some(old) = self
            .pump
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(pump)
        {
            old.abort();
        }
        Ok(mtu)
    }
}

impl Transport for BleTransport {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn write(&self, frame: Vec<u8>) -> Result<(), LinkError> {
        if !self.is_connected() {
            return Err(LinkError::Disconnected);
        }
        self.writes.send(frame).map_err(|_| LinkError::Disconnected)
    }

    async fn read(&self) -> Option<Vec<u8>> {
        self.frames.lock().await.recv().await
    }

    fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// Automatic reconnection ([`crate::reconnect::supervise`]) over btleplug.
impl crate::reconnect::Reconnect for Arc<BleTransport> {
    fn watch_connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    fn try_reconnect(&self) -> impl std::future::Future<Output = Result<(), String>> + Send {
        let t = Arc::clone(self);
        async move { t.reconnect().await.map_err(|e| e.to_string()) }
    }
}
