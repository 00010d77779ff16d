//! Transports, and the message channel over them.
//!
//! A [`Transport`] moves frames (each at most MTU − 3 bytes) both ways and
//! reports disconnections. [`MemoryLink`] connects the phone side to the
//! simulated reader in-process; [`ExternalTransport`] carries the frames of
//! an app's own Bluetooth stack (the FFI's `AppReaderTransport`); btleplug's
//! transport is `BleTransport` in the `ble` module (feature `ble`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use crate::frame::{self, FrameError, Kind, Pushed, Reassembler};
use crate::secure::{SecureError, Session};

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
    #[error("refused by the secure link: {0}")]
    Secure(#[from] SecureError),
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

    /// The next frame from the peer if one is waiting.
    pub fn try_read(&self) -> Option<Vec<u8>> {
        self.rx.try_lock().ok()?.try_recv().ok()
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

/// What the channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A whole message: plain before the handshake, authenticated and
    /// opened after it.
    Message(Vec<u8>),
    /// A handshake message (`secure`), for the channel's owner to check.
    Handshake(Vec<u8>),
}

/// Messages over a link: ids, fragmentation, acknowledgements, and the
/// sending again, whole, of every unacknowledged message after a reconnection
/// (the receiver drops the duplicates, so nothing is lost or delivered twice).
///
/// Once a [`Session`] is installed every message and acknowledgement, both
/// ways, is sealed; a message is delivered, and its id recorded as
/// delivered, only after it authenticated. Refused frames and messages are
/// counted ([`Channel::rejected`]). Time is tokio's
/// ([`tokio::time::Instant`]): incomplete messages expire after
/// [`frame::REASSEMBLY_TIMEOUT`].
#[derive(Debug)]
pub struct Channel<T: Transport = MemoryLink> {
    link: Arc<T>,
    generation: Mutex<tokio::sync::watch::Receiver<u64>>,
    state: std::sync::Mutex<State>,
    rejected: AtomicU64,
    started: tokio::time::Instant,
}

#[derive(Debug)]
struct State {
    next_id: u16,
    /// Unacknowledged messages, in plaintext: sealed again, with a fresh
    /// counter, when resent.
    unacked: BTreeMap<u16, Vec<u8>>,
    reassembler: Reassembler,
    session: Option<Session>,
}

impl<T: Transport> Channel<T> {
    pub fn new(link: Arc<T>) -> Self {
        Channel {
            generation: Mutex::new(link.generations()),
            link,
            state: std::sync::Mutex::new(State {
                next_id: 1,
                unacked: BTreeMap::new(),
                reassembler: Reassembler::new(),
                session: None,
            }),
            rejected: AtomicU64::new(0),
            started: tokio::time::Instant::now(),
        }
    }

    pub fn link(&self) -> &T {
        &self.link
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs a session from a completed handshake. The peer starts
    /// afresh: its message ids count from the start again (the duplicate
    /// list is cleared), incomplete messages and this side's unacknowledged
    /// messages of the previous session are dropped.
    pub fn install_session(&self, session: Session) {
        let mut st = self.state();
        st.reassembler.new_session();
        st.unacked.clear();
        st.session = Some(session);
    }

    /// Whether a session is installed (every message is then sealed).
    pub fn is_secure(&self) -> bool {
        self.state().session.is_some()
    }

    /// Frames and messages refused so far: malformed frames, messages that
    /// failed authentication, replays, plain messages after the handshake,
    /// and handshake messages the owner refused ([`Channel::note_rejected`]).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::SeqCst)
    }

    /// Counts one refusal decided by the channel's owner (a bad handshake
    /// message).
    pub fn note_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::SeqCst);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn next_id(st: &mut State) -> u16 {
        let id = st.next_id;
        st.next_id = st.next_id.wrapping_add(1).max(1);
        id
    }

    /// The kind and body of a message, sealed when a session is installed.
    fn wire(st: &mut State, id: u16, bytes: &[u8]) -> Result<(Kind, Vec<u8>), LinkError> {
        match st.session.as_mut() {
            Some(s) => Ok((Kind::Sealed, s.seal(id, Kind::Sealed.byte(), bytes)?)),
            None => Ok((Kind::Message, bytes.to_vec())),
        }
    }

    /// Sends a message; it is kept until acknowledged. A disconnect while
    /// sending is not an error here: [`Channel::resend_unacked`] sends it
    /// again after the reconnection.
    pub fn send(&self, bytes: Vec<u8>) -> Result<u16, LinkError> {
        let (id, kind, body) = {
            let mut st = self.state();
            let id = Self::next_id(&mut st);
            let (kind, body) = Self::wire(&mut st, id, &bytes)?;
            st.unacked.insert(id, bytes);
            (id, kind, body)
        };
        let _ = self.write_message(id, kind, &body);
        Ok(id)
    }

    /// Sends a handshake message: not acknowledged and not resent (a
    /// handshake cut by the link fails, and is run again).
    pub fn send_handshake(&self, bytes: &[u8]) -> Result<(), LinkError> {
        let id = Self::next_id(&mut self.state());
        self.write_message(id, Kind::Handshake, bytes)
    }

    fn write_message(&self, id: u16, kind: Kind, bytes: &[u8]) -> Result<(), LinkError> {
        for f in frame::encode(id, kind, bytes, self.link.mtu())? {
            self.link.write(f)?;
        }
        Ok(())
    }

    fn acknowledge(&self, id: u16) {
        let ack = {
            let mut st = self.state();
            match st.session.as_mut() {
                Some(s) => s
                    .seal(id, Kind::SealedAck.byte(), &[])
                    .map(|b| (Kind::SealedAck, b)),
                None => Ok((Kind::Ack, Vec::new())),
            }
        };
        if let Ok((kind, body)) = ack {
            let _ = self.write_message(id, kind, &body);
        }
    }

    /// After a reconnection: sends every unacknowledged message again,
    /// whole and with its id (sealed again under a fresh counter). Incoming
    /// partial messages are kept: the peer resends them whole, and those
    /// never completed expire.
    pub fn resend_unacked(&self) -> Result<usize, LinkError> {
        let pending: Vec<(u16, Kind, Vec<u8>)> = {
            let mut st = self.state();
            let plain: Vec<(u16, Vec<u8>)> =
                st.unacked.iter().map(|(k, v)| (*k, v.clone())).collect();
            let mut out = Vec::with_capacity(plain.len());
            for (id, bytes) in plain {
                let (kind, body) = Self::wire(&mut st, id, &bytes)?;
                out.push((id, kind, body));
            }
            out
        };
        for (id, kind, body) in &pending {
            self.write_message(*id, *kind, body)?;
        }
        tracing::debug!(
            messages = pending.len(),
            "resent the unacknowledged messages"
        );
        Ok(pending.len())
    }

    pub fn unacked(&self) -> usize {
        self.state().unacked.len()
    }

    /// Incomplete incoming messages held.
    pub fn partials(&self) -> usize {
        self.state().reassembler.partials()
    }

    fn refuse(&self, e: impl Into<LinkError>) -> Option<Result<Inbound, LinkError>> {
        self.note_rejected();
        let e = e.into();
        tracing::debug!(error = %e, "refused a frame or message from the peer");
        Some(Err(e))
    }

    /// Takes one frame from the peer: `None` while its message is
    /// incomplete or when nothing is to be delivered (an acknowledgement, a
    /// duplicate), else what to deliver or why it was refused.
    pub fn push_frame(&self, frame: &[u8]) -> Option<Result<Inbound, LinkError>> {
        let now = self.now_ms();
        let pushed = {
            let mut st = self.state();
            st.reassembler.expire(now);
            st.reassembler.push(frame, now)
        };
        let (id, kind, bytes, duplicate) = match pushed {
            Err(e) => return self.refuse(e),
            Ok(Pushed::Incomplete) => return None,
            Ok(Pushed::Complete { id, kind, bytes }) => (id, kind, bytes, false),
            Ok(Pushed::Duplicate { id, kind, bytes }) => (id, kind, bytes, true),
        };
        let opened = {
            let mut st = self.state();
            match (kind, st.session.as_mut()) {
                (Kind::Handshake, _) => Ok(bytes),
                (Kind::Message | Kind::Ack, None) => Ok(bytes),
                (Kind::Message | Kind::Ack, Some(_)) => Err(SecureError::Plaintext),
                (Kind::Sealed | Kind::SealedAck, None) => Err(SecureError::NoSession),
                (Kind::Sealed | Kind::SealedAck, Some(s)) => s.open(id, kind.byte(), &bytes),
            }
        };
        let bytes = match opened {
            Ok(b) => b,
            Err(e) => return self.refuse(e),
        };
        match kind {
            Kind::Handshake => Some(Ok(Inbound::Handshake(bytes))),
            Kind::Ack | Kind::SealedAck => {
                if !bytes.is_empty() {
                    return self.refuse(LinkError::Message);
                }
                self.state().unacked.remove(&id);
                None
            }
            Kind::Message | Kind::Sealed => {
                self.acknowledge(id);
                if duplicate {
                    return None;
                }
                self.state().reassembler.mark_delivered(id, kind);
                Some(Ok(Inbound::Message(bytes)))
            }
        }
    }

    /// The next whole message or handshake message from the peer
    /// (acknowledged as it arrives), or why a frame or message was refused
    /// (counted; the caller may keep receiving). `None` when the link's
    /// other end is gone.
    pub async fn recv(&self) -> Option<Result<Inbound, LinkError>> {
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
            if let Some(out) = self.push_frame(&frame) {
                return Some(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::{LinkTrust, PhoneHandshake, ReaderHandshake};
    use pos_rules::reader_trust::{ReaderAuthority, ReaderIdentity};
    use std::time::Duration;

    /// A phone session and a reader session from one handshake.
    fn sessions() -> (Session, Session) {
        let a = ReaderAuthority::from_seed(&[1; 32]).unwrap();
        let r = ReaderIdentity::provision(&[2; 32], &a, "SIM-1", "M").unwrap();
        let (phone, m1) = PhoneHandshake::start().unwrap();
        let (reader, m2) = ReaderHandshake::respond(&r, &m1).unwrap();
        let trust = LinkTrust {
            authorities: vec![a.public_key()],
            remembered: vec![],
            online: true,
        };
        let done = phone.finish(&m2, &trust).unwrap();
        (done.session, reader.finish(&done.m3).unwrap())
    }

    /// The phone's channel and the reader's, sealed, and the two ends of
    /// their link (frames for the phone are read from `phone_end`).
    fn secured(mtu: usize) -> (Channel, Channel, Arc<MemoryLink>, Arc<MemoryLink>) {
        let (p, r) = MemoryLink::pair(mtu);
        let (p, r) = (Arc::new(p), Arc::new(r));
        let (phone, reader) = (Channel::new(Arc::clone(&p)), Channel::new(Arc::clone(&r)));
        let (ps, rs) = sessions();
        phone.install_session(ps);
        reader.install_session(rs);
        (phone, reader, p, r)
    }

    /// Every frame waiting on `end`, for the channel that reads it.
    fn frames(end: &MemoryLink) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| end.try_read()).collect()
    }

    /// Feeds `frames` to `chan`; returns what it delivered and refused.
    fn feed(chan: &Channel, frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<LinkError>) {
        let (mut delivered, mut refused) = (Vec::new(), Vec::new());
        for f in frames {
            match chan.push_frame(f) {
                Some(Ok(Inbound::Message(m) | Inbound::Handshake(m))) => delivered.push(m),
                Some(Err(e)) => refused.push(e),
                None => {}
            }
        }
        (delivered, refused)
    }

    #[tokio::test(start_paused = true)]
    async fn incomplete_messages_expire_on_tokio_time() {
        let (p, _r) = MemoryLink::pair(23);
        let chan = Channel::new(Arc::new(p));
        let first = encode(1, &[b'a'; 40]);
        let (delivered, _) = feed(&chan, &first[..first.len() - 1]);
        assert!(delivered.is_empty());
        assert_eq!(chan.partials(), 1);
        tokio::time::advance(Duration::from_millis(4_900)).await;
        let (delivered, _) = feed(&chan, &first[first.len() - 1..]);
        assert_eq!(delivered, vec![vec![b'a'; 40]], "completes within 5 s");
        let second = encode(2, &[b'b'; 40]);
        feed(&chan, &second[..second.len() - 1]);
        tokio::time::advance(Duration::from_secs(5)).await;
        let (delivered, _) = feed(&chan, &second[second.len() - 1..]);
        assert!(delivered.is_empty(), "expired after 5 s");
        // Only the late fragment is held, as the start of a new message.
        assert_eq!(chan.partials(), 1);
    }

    fn encode(id: u16, msg: &[u8]) -> Vec<Vec<u8>> {
        frame::encode(id, Kind::Message, msg, 23).unwrap()
    }

    #[test]
    fn a_new_session_resets_the_duplicate_list() {
        let (phone, reader, phone_end, reader_end) = secured(185);
        for i in 0..64u8 {
            reader.send(vec![i]).unwrap();
        }
        let (delivered, refused) = feed(&phone, &frames(&phone_end));
        assert_eq!((delivered.len(), refused.len()), (64, 0));
        // The reader reboots: a new channel numbering from 1, a new
        // handshake. Ids 1..=64 are delivered again.
        let rebooted = Channel::new(Arc::clone(&reader_end));
        let (ps, rs) = sessions();
        phone.install_session(ps);
        rebooted.install_session(rs);
        for i in 0..64u8 {
            assert_eq!(rebooted.send(vec![i, i]).unwrap(), u16::from(i) + 1);
        }
        let (delivered, refused) = feed(&phone, &frames(&phone_end));
        assert_eq!((delivered.len(), refused.len()), (64, 0));
        assert_eq!(delivered[63], vec![63, 63]);
    }

    #[test]
    fn a_resent_message_is_delivered_once_within_a_session() {
        let (phone, reader, phone_end, reader_end) = secured(23);
        reader.send(b"card_result".to_vec()).unwrap();
        assert_eq!(feed(&phone, &frames(&phone_end)).0.len(), 1);
        // The acknowledgement has not reached the reader: it resends,
        // sealed again under a fresh counter.
        assert_eq!(reader.resend_unacked().unwrap(), 1);
        let (delivered, refused) = feed(&phone, &frames(&phone_end));
        assert_eq!((delivered.len(), refused.len()), (0, 0));
        // Both acknowledgements authenticate; the message is no longer pending.
        let (_, refused) = feed(&reader, &frames(&reader_end));
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(reader.unacked(), 0);
        assert_eq!(phone.rejected() + reader.rejected(), 0);
    }

    #[test]
    fn an_injected_message_never_enters_the_duplicate_list() {
        let (phone, reader, phone_end, _) = secured(185);
        // Forged messages with the ids the reader will use next: a sealed
        // one with a made-up body, and a plain one.
        let forged = frame::encode(1, Kind::Sealed, &[7u8; 40], 185).unwrap();
        let plain = frame::encode(2, Kind::Message, b"{\"t\":\"cancelled\"}", 185).unwrap();
        let (delivered, refused) = feed(&phone, &[forged, plain].concat());
        assert!(delivered.is_empty());
        assert_eq!(
            refused,
            vec![
                LinkError::Secure(SecureError::Authentication),
                LinkError::Secure(SecureError::Plaintext)
            ]
        );
        assert_eq!(phone.rejected(), 2);
        // The reader's real messages 1 and 2 are still delivered.
        reader.send(b"one".to_vec()).unwrap();
        reader.send(b"two".to_vec()).unwrap();
        let (delivered, _) = feed(&phone, &frames(&phone_end));
        assert_eq!(delivered, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_replayed_message_is_refused_inside_and_outside_the_duplicate_list() {
        let (phone, reader, phone_end, _) = secured(185);
        reader.send(b"card_result".to_vec()).unwrap();
        let sniffed = frames(&phone_end);
        assert_eq!(feed(&phone, &sniffed).0.len(), 1);
        // At once: its id is a duplicate, and its counter was seen.
        let (delivered, refused) = feed(&phone, &sniffed);
        assert!(delivered.is_empty());
        assert_eq!(refused, vec![LinkError::Secure(SecureError::Replay(0))]);
        // Later, once its id left the duplicate list: the window refuses it.
        for i in 0..70u8 {
            reader.send(vec![i]).unwrap();
        }
        assert_eq!(feed(&phone, &frames(&phone_end)).0.len(), 70);
        let (delivered, refused) = feed(&phone, &sniffed);
        assert!(delivered.is_empty());
        assert_eq!(refused, vec![LinkError::Secure(SecureError::Stale(0))]);
        assert_eq!(phone.rejected(), 2);
    }

    #[test]
    fn only_a_sealed_acknowledgement_takes_a_message_off_the_resend_list() {
        let (phone, reader, phone_end, reader_end) = secured(185);
        let id = phone.send(b"start_payment".to_vec()).unwrap();
        let _ = frames(&reader_end);
        let plain_ack = frame::encode(id, Kind::Ack, &[], 185).unwrap();
        let forged_ack = frame::encode(id, Kind::SealedAck, &[0u8; 24], 185).unwrap();
        let (_, refused) = feed(&phone, &[plain_ack, forged_ack].concat());
        assert_eq!(refused.len(), 2);
        assert_eq!(phone.unacked(), 1);
        // The reader's own acknowledgement does.
        assert_eq!(phone.resend_unacked().unwrap(), 1);
        let (delivered, _) = feed(&reader, &frames(&reader_end));
        assert_eq!(delivered, vec![b"start_payment".to_vec()]);
        let (_, refused) = feed(&phone, &frames(&phone_end));
        assert!(refused.is_empty());
        assert_eq!(phone.unacked(), 0);
    }
}
