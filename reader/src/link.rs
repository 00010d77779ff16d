//! Transports, and the message channel over them.
//!
//! A [`Transport`] moves frames (each at most MTU − 3 bytes) both ways and
//! reports disconnections. [`MemoryLink`] connects the phone side to the
//! simulated reader in-process; [`ExternalTransport`] carries the frames of
//! an app's own Bluetooth stack (the FFI's `AppReaderTransport`); btleplug's
//! transport is `BleTransport` in the `ble` module (feature `ble`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use crate::frame::{self, FrameError, Kind, Pushed, Reassembler};

/// Why a link operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the reader is disconnected")]
    Disconnected,
    #[error("bad frame from the peer: {0}")]
    Frame(#[from] FrameError),
    #[error("bad message from the peer")]
    Message,
    #[error("the peer did not answer in time")]
    Timeout,
}

/// One end of an in-memory link. Frames written on one end arrive, in
/// order, at the other; `disconnect_after(n)` cuts the link after `n` more
/// frames (a disconnect in the middle of a message).
#[derive(Debug)]
pub struct MemoryLink {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    rx: Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    state: Arc<LinkState>,
    pub mtu: usize,
}

#[derive(Debug)]
struct LinkState {
    /// Bumped at every reconnection; each end's channel then resends.
    generation: tokio::sync::watch::Sender<u64>,
    /// Whether the radio link is up; watched by the reconnection supervisor.
    connected: tokio::sync::watch::Sender<bool>,
    /// Whether the reader is in range: out of range, reconnecting fails.
    in_range: AtomicBool,
    /// The cut that the frame budget makes also takes the reader out of range.
    leave_range_on_cut: AtomicBool,
    /// Frames left before the link drops (usize::MAX: never).
    budget: AtomicUsize,
}

impl MemoryLink {
    /// Two connected ends with this MTU.
    pub fn pair(mtu: usize) -> (MemoryLink, MemoryLink) {
        let (a_tx, a_rx) = mpsc::unbounded_channel();
        let (b_tx, b_rx) = mpsc::unbounded_channel();
        let state = Arc::new(LinkState {
            generation: tokio::sync::watch::channel(0).0,
            connected: tokio::sync::watch::channel(true).0,
            in_range: AtomicBool::new(true),
            leave_range_on_cut: AtomicBool::new(false),
            budget: AtomicUsize::new(usize::MAX),
        });
        (
            MemoryLink {
                tx: a_tx,
                rx: Mutex::new(b_rx),
                state: Arc::clone(&state),
                mtu,
            },
            MemoryLink {
                tx: b_tx,
                rx: Mutex::new(a_rx),
                state,
                mtu,
            },
        )
    }

    pub fn is_connected(&self) -> bool {
        *self.state.connected.borrow()
    }

    /// A handle that controls this link (the radio, in tests and demos).
    pub fn control(&self) -> LinkControl {
        LinkControl {
            state: Arc::clone(&self.state),
        }
    }

    /// Drops the link after `frames` more frames (from either end).
    pub fn disconnect_after(&self, frames: usize) {
        self.control().disconnect_after(frames);
    }

    pub fn disconnect(&self) {
        self.control().disconnect();
    }

    /// The radio comes back (the reader is in range again).
    pub fn reconnect(&self) {
        self.control().reconnect();
    }

    /// Sends one frame.
    pub fn write(&self, frame: Vec<u8>) -> Result<(), LinkError> {
        if !self.is_connected() {
            return Err(LinkError::Disconnected);
        }
        let left = self.state.budget.load(Ordering::SeqCst);
        if left == 0 {
            if self.state.leave_range_on_cut.swap(false, Ordering::SeqCst) {
                self.state.in_range.store(false, Ordering::SeqCst);
            }
            self.disconnect();
            return Err(LinkError::Disconnected);
        }
        if left != usize::MAX {
            self.state.budget.store(left - 1, Ordering::SeqCst);
        }
        self.tx.send(frame).map_err(|_| LinkError::Disconnected)
    }

    /// The next frame from the peer (`None`: the peer is gone).
    pub async fn read(&self) -> Option<Vec<u8>> {
        self.rx.lock().await.recv().await
    }
}

/// Moves frames (each at most MTU − 3 bytes) to and from a reader.
pub trait Transport: Send + Sync + 'static {
    /// The link's ATT MTU.
    fn mtu(&self) -> usize;
    /// Queues one frame; fails at once when the link is down.
    fn write(&self, frame: Vec<u8>) -> Result<(), LinkError>;
    /// The next frame from the reader; `None` when the link is gone for good.
    fn read(&self) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send;
    /// Bumped at every reconnection: the channel then resends what the
    /// other side did not acknowledge.
    fn generations(&self) -> tokio::sync::watch::Receiver<u64>;
}

impl Transport for MemoryLink {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn write(&self, frame: Vec<u8>) -> Result<(), LinkError> {
        MemoryLink::write(self, frame)
    }

    fn read(&self) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send {
        MemoryLink::read(self)
    }

    fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.generation.subscribe()
    }
}

/// A transport an app drives over its own Bluetooth stack (CoreBluetooth,
/// Android's BluetoothGatt): frames to the reader go through `write`
/// (a write without response on the request characteristic); the app hands
/// each notification to [`ExternalTransport::deliver`] and reports the
/// connection with [`ExternalTransport::set_connected`].
pub struct ExternalTransport {
    mtu: usize,
    write: Box<dyn Fn(Vec<u8>) -> Result<(), LinkError> + Send + Sync>,
    frames_tx: mpsc::UnboundedSender<Vec<u8>>,
    frames: Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    connected: AtomicBool,
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for ExternalTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalTransport")
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl ExternalTransport {
    pub fn new(
        mtu: usize,
        write: impl Fn(Vec<u8>) -> Result<(), LinkError> + Send + Sync + 'static,
    ) -> Result<Self, LinkError> {
        frame::chunk_len(mtu)?;
        let (frames_tx, frames) = mpsc::unbounded_channel();
        Ok(ExternalTransport {
            mtu,
            write: Box::new(write),
            frames_tx,
            frames: Mutex::new(frames),
            connected: AtomicBool::new(true),
            generation: tokio::sync::watch::channel(0).0,
        })
    }

    /// A notification from the reader (one frame).
    pub fn deliver(&self, frame: Vec<u8>) {
        let _ = self.frames_tx.send(frame);
    }

    /// The app's stack lost or regained the reader. On regaining it, the
    /// channel resends what the reader did not acknowledge.
    pub fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::SeqCst);
        if connected && !was {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
}

impl Transport for ExternalTransport {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn write(&self, frame: Vec<u8>) -> Result<(), LinkError> {
        if !self.is_connected() {
            return Err(LinkError::Disconnected);
        }
        (self.write)(frame)
    }

    async fn read(&self) -> Option<Vec<u8>> {
        self.frames.lock().await.recv().await
    }

    fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A shared transport is a transport (the app keeps a handle to feed it).
impl<T: Transport> Transport for Arc<T> {
    fn mtu(&self) -> usize {
        (**self).mtu()
    }

    fn write(&self, frame: Vec<u8>) -> Result<(), LinkError> {
        (**self).write(frame)
    }

    fn read(&self) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send {
        (**self).read()
    }

    fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        (**self).generations()
    }
}

/// Controls a [`MemoryLink`] from outside: drop it (now, or after some
/// frames, in the middle of a message) and bring it back.
#[derive(Debug, Clone)]
pub struct LinkControl {
    state: Arc<LinkState>,
}

impl LinkControl {
    pub fn is_connected(&self) -> bool {
        *self.state.connected.borrow()
    }

    /// Follows the link going down and coming back.
    pub fn watch_connected(&self) -> tokio::sync::watch::Receiver<bool> {
        self.state.connected.subscribe()
    }

    pub fn disconnect_after(&self, frames: usize) {
        self.state.budget.store(frames, Ordering::SeqCst);
    }

    /// Like [`LinkControl::disconnect_after`], and the reader is then out of
    /// range (walked away mid-message) until [`LinkControl::set_in_range`].
    pub fn leave_range_after(&self, frames: usize) {
        self.state.leave_range_on_cut.store(true, Ordering::SeqCst);
        self.disconnect_after(frames);
    }

    pub fn disconnect(&self) {
        self.state
            .connected
            .send_if_modified(|c| std::mem::replace(c, false));
    }

    /// The reader walks out of range (the link drops and reconnecting
    /// fails) or comes back in range (reconnecting works again).
    pub fn set_in_range(&self, in_range: bool) {
        self.state.in_range.store(in_range, Ordering::SeqCst);
        if !in_range {
            self.disconnect();
        }
    }

    /// Brings the link back, whatever the range (a test's or demo's radio).
    pub fn reconnect(&self) {
        self.state.budget.store(usize::MAX, Ordering::SeqCst);
        self.state.connected.send_replace(true);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// One reconnection attempt, as a phone makes it: fails while the
    /// reader is out of range.
    pub fn try_reconnect(&self) -> Result<(), LinkError> {
        if !self.state.in_range.load(Ordering::SeqCst) {
            return Err(LinkError::Disconnected);
        }
        self.reconnect();
        Ok(())
    }
}

/// Messages over a link: ids, fragmentation, acknowledgements, and the
/// sending again, whole, of every unacknowledged message after a reconnection
/// (the receiver drops the duplicates, so nothing is lost or delivered twice).
#[derive(Debug)]
pub struct Channel<T: Transport = MemoryLink> {
    link: Arc<T>,
    generation: Mutex<tokio::sync::watch::Receiver<u64>>,
    next_id: std::sync::Mutex<u16>,
    unacked: std::sync::Mutex<BTreeMap<u16, Vec<u8>>>,
    reassembler: std::sync::Mutex<Reassembler>,
}

impl<T: Transport> Channel<T> {
    pub fn new(link: Arc<T>) -> Self {
        Channel {
            generation: Mutex::new(link.generations()),
            link,
            next_id: std::sync::Mutex::new(1),
            unacked: std::sync::Mutex::new(BTreeMap::new()),
            reassembler: std::sync::Mutex::new(Reassembler::new()),
        }
    }

    pub fn link(&self) -> &T {
        &self.link
    }

    /// Sends a message; it is kept until acknowledged. A disconnect while
    /// sending is not an error here: [`Channel::resend_unacked`] sends it
    /// again after the reconnection.
    pub fn send(&self, bytes: Vec<u8>) -> Result<u16, LinkError> {
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            let id = *n;
            *n = n.wrapping_add(1).max(1);
            id
        };
        self.unacked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, bytes.clone());
        let _ = self.write_message(id, Kind::Message, &bytes);
        Ok(id)
    }

    fn write_message(&self, id: u16, kind: Kind, bytes: &[u8]) -> Result<(), LinkError> {
        for f in frame::encode(id, kind, bytes, self.link.mtu())? {
            self.link.write(f)?;
        }
        Ok(())
    }

    /// After a reconnection: sends every unacknowledged message again,
    /// whole and with its id. Incoming partial messages are kept: the peer
    /// resends them whole, their missing fragments complete them, and those
    /// never completed expire ([`Reassembler::expire`]).
    pub fn resend_unacked(&self) -> Result<usize, LinkError> {
        let pending: Vec<(u16, Vec<u8>)> = self
            .unacked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, bytes) in &pending {
            self.write_message(*id, Kind::Message, bytes)?;
        }
        Ok(pending.len())
    }

    pub fn unacked(&self) -> usize {
        self.unacked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The next whole message from the peer (acknowledged as it arrives).
    /// `None` when the link's other end is gone.
    pub async fn recv(&self, now_ms: u64) -> Option<Result<Vec<u8>, LinkError>> {
        loop {
            let frame = {
                let mut generation = self.generation.lock().await;
                tokio::select! {
                    f = self.link.read() => f?,
                    changed = generation.changed() => {
                        if changed.is_ok() {
                            // Reconnected: send again what the peer did not
                            // acknowledge.
                            let _ = self.resend_unacked();
                        }
                        continue;
                    }
                }
            };
            let pushed = self
                .reassembler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&frame, now_ms);
            match pushed {
                Err(e) => return Some(Err(e.into())),
                Ok(Pushed::Incomplete) => {}
                Ok(Pushed::Complete {
                    id,
                    kind: Kind::Ack,
                    ..
                }) => {
                    self.unacked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
                Ok(Pushed::Duplicate {
                    kind: Kind::Ack, ..
                }) => {}
                Ok(Pushed::Duplicate {
                    id,
                    kind: Kind::Message,
                }) => {
                    let _ = self.write_message(id, Kind::Ack, &[]);
                }
                Ok(Pushed::Complete {
                    id,
                    kind: Kind::Message,
                    bytes,
                }) => {
                    let _ = self.write_message(id, Kind::Ack, &[]);
                    return Some(Ok(bytes));
                }
            }
        }
    }
}
