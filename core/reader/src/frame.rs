//! The frame codec of the reader profile (`docs/reader-profile.md`): splits
//! a message into frames that fit one BLE write (MTU − 3 bytes) and
//! reassembles them, whatever the order, with duplicates, a size cap, a
//! CRC-32 over the whole message and a timeout for incomplete messages.
//! Bad bytes are a typed [`FrameError`], never a panic.
//!
//! ```text
//! byte 0      protocol version (1)
//! bytes 1-2   message id (u16, little-endian)
//! byte 3      kind: 1 = message (JSON, plain), 2 = acknowledgement (plain),
//!             3 = handshake message, 4 = sealed message,
//!             5 = sealed acknowledgement
//! byte 4      fragment index (0-based)
//! byte 5      fragment count (1..=255)
//! bytes 6-7   total message length (u16, little-endian)
//! bytes 8-11  CRC-32 (IEEE) of the whole message (u32, little-endian)
//! bytes 12..  this fragment's bytes
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Protocol version carried by every frame.
pub const FRAME_VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest message, whatever the MTU.
pub const MAX_MESSAGE: usize = 4096;
/// Smallest ATT MTU (BLE 4.0 default).
pub const MIN_MTU: usize = 23;
/// Incomplete messages older than this are dropped.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Incomplete messages kept at once.
pub const MAX_PARTIALS: usize = 8;
/// Delivered message ids remembered to drop duplicates.
pub const DELIVERED_IDS: usize = 64;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A plain JSON message: before the handshake, and every message of
    /// profile version 1.
    Message,
    /// The acknowledgement of a plain message (empty body).
    Ack,
    /// A handshake message (`secure`): neither acknowledged nor resent.
    Handshake,
    /// A message sealed under the session (`secure::Session::seal`).
    Sealed,
    /// The acknowledgement of a sealed message, itself sealed (empty
    /// plaintext).
    SealedAck,
}

impl Kind {
    /// The kind's byte in the frame header.
    pub fn byte(self) -> u8 {
        match self {
            Kind::Message => 1,
            Kind::Ack => 2,
            Kind::Handshake => 3,
            Kind::Sealed => 4,
            Kind::SealedAck => 5,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Message,
            2 => Kind::Ack,
            3 => Kind::Handshake,
            4 => Kind::Sealed,
            5 => Kind::SealedAck,
            _ => return None,
        })
    }
}

/// Why bytes from the link were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame shorter than its header ({0} bytes)")]
    TooShort(usize),
    #[error("unsupported frame version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("fragment {index} of {count} is impossible")]
    Fragment { index: u8, count: u8 },
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte cap")]
    TooLarge(usize),
    #[error("fragment sizes do not add up to the announced length")]
    Length,
    #[error("message {0} failed its CRC check")]
    Crc(u16),
    #[error("MTU {0} is below the BLE minimum of {MIN_MTU}")]
    Mtu(usize),
}

/// Bytes of payload per frame at this MTU.
pub fn chunk_len(mtu: usize) -> Result<usize, FrameError> {
    if mtu < MIN_MTU {
        return Err(FrameError::Mtu(mtu));
    }
    Ok(mtu - 3 - HEADER_LEN)
}

/// Splits one message into frames for this MTU (each at most MTU − 3 bytes).
pub fn encode(id: u16, kind: Kind, message: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, FrameError> {
    let chunk = chunk_len(mtu)?;
    if message.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge(message.len()));
    }
    let count = message.len().div_ceil(chunk).max(1);
    let count_u8 = u8::try_from(count).map_err(|_| FrameError::TooLarge(message.len()))?;
    let crc = crc32fast::hash(message);
    let len = u16::try_from(message.len()).map_err(|_| FrameError::TooLarge(message.len()))?;
    let mut frames = Vec::with_capacity(count);
    for i in 0..count {
        let part = &message[(i * chunk).min(message.len())..((i + 1) * chunk).min(message.len())];
        let mut f = Vec::with_capacity(HEADER_LEN + part.len());
        f.push(FRAME_VERSION);
        f.extend_from_slice(&id.to_le_bytes());
        f.push(kind.byte());
        f.push(u8::try_from(i).unwrap_or(u8::MAX));
        f.push(count_u8);
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&crc.to_le_bytes());
        f.extend_from_slice(part);
        frames.push(f);
    }
    Ok(frames)
}

/// A frame's header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    id: u16,
    kind: Kind,
    index: u8,
    count: u8,
    len: u16,
    crc: u32,
}

fn header(frame: &[u8]) -> Result<Header, FrameError> {
    if frame.len() < HEADER_LEN {
        return Err(FrameError::TooShort(frame.len()));
    }
    if frame[0] != FRAME_VERSION {
        return Err(FrameError::Version(frame[0]));
    }
    let kind = Kind::from_byte(frame[3]).ok_or(FrameError::Kind(frame[3]))?;
    let (index, count) = (frame[4], frame[5]);
    if count == 0 || index >= count {
        return Err(FrameError::Fragment { index, count });
    }
    let len = u16::from_le_bytes([frame[6], frame[7]]);
    if usize::from(len) > MAX_MESSAGE {
        return Err(FrameError::TooLarge(usize::from(len)));
    }
    Ok(Header {
        id: u16::from_le_bytes([frame[1], frame[2]]),
        kind,
        index,
        count,
        len,
        crc: u32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]),
    })
}

/// What one frame completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// More fragments are needed.
    Incomplete,
    /// A whole message whose id was not delivered yet.
    Complete { id: u16, kind: Kind, bytes: Vec<u8> },
    /// A whole message whose id was already delivered
    /// ([`Reassembler::mark_delivered`]), sent again after a reconnection:
    /// once authenticated, acknowledge it again, never deliver it twice.
    Duplicate { id: u16, kind: Kind, bytes: Vec<u8> },
}

struct Partial {
    header: Header,
    parts: Vec<Option<Vec<u8>>>,
    started_ms: u64,
}

/// Reassembles frames from one peer. Time is given by the caller (ms), so
/// tests need no sleeps. A message's id counts as delivered only when the
/// caller says so ([`Reassembler::mark_delivered`], after authenticating
/// it): a forged message never enters the duplicate list.
pub struct Reassembler {
    partials: BTreeMap<(u16, u8), Partial>,
    delivered: VecDeque<(u16, u8)>,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("partials", &self.partials.len())
            .finish_non_exhaustive()
    }
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembler {
    pub fn new() -> Self {
        Reassembler {
            partials: BTreeMap::new(),
            delivered: VecDeque::new(),
        }
    }

    /// Forgets incomplete messages (the link dropped: the sender sends
    /// unacknowledged messages again, whole).
    pub fn reset(&mut self) {
        self.partials.clear();
    }

    /// Forgets everything, the delivered ids too: the peer started a new
    /// session (a new handshake, a rebooted reader) and numbers its messages
    /// from 1 again.
    pub fn new_session(&mut self) {
        self.partials.clear();
        self.delivered.clear();
    }

    /// Records a message as delivered: the same id and kind sent again is
    /// then a [`Pushed::Duplicate`]. The last [`DELIVERED_IDS`] are kept.
    pub fn mark_delivered(&mut self, id: u16, kind: Kind) {
        let key = (id, kind.byte());
        if self.delivered.contains(&key) {
            return;
        }
        self.delivered.push_back(key);
        if self.delivered.len() > DELIVERED_IDS {
            self.delivered.pop_front();
        }
    }

    /// Incomplete messages held.
    pub fn partials(&self) -> usize {
        self.partials.len()
    }

    /// Drops incomplete messages older than the timeout; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let limit = REASSEMBLY_TIMEOUT.as_millis() as u64;
        let before = self.partials.len();
        self.partials
            .retain(|_, p| now_ms.saturating_sub(p.started_ms) < limit);
        before - self.partials.len()
    }

    /// Takes one frame. A fragment whose header disagrees with the
    /// incomplete message of the same id and kind starts that message
    /// again: the sender resent it (a resent sealed message has a fresh
    /// counter, hence other bytes and another CRC).
    pub fn push(&mut self, frame: &[u8], now_ms: u64) -> Result<Pushed, FrameError> {
        let h = header(frame)?;
        let body = &frame[HEADER_LEN..];
        let key = (h.id, h.kind.byte());
        let stale = self.partials.get(&key).is_some_and(|p| {
            p.header.count != h.count || p.header.len != h.len || p.header.crc != h.crc
        });
        if stale {
            self.partials.remove(&key);
        }
        if !self.partials.contains_key(&key) {
            if self.partials.len() >= MAX_PARTIALS {
                // Drop the oldest incomplete message to bound memory.
                if let Some(oldest) = self
                    .partials
                    .iter()
                    .min_by_key(|(_, p)| p.started_ms)
                    .map(|(k, _)| *k)
                {
                    self.partials.remove(&oldest);
                }
            }
            self.partials.insert(
                key,
                Partial {
                    header: h,
                    parts: vec![None; usize::from(h.count)],
                    started_ms: now_ms,
                },
            );
        }
        let Some(p) = self.partials.get_mut(&key) else {
            return Ok(Pushed::Incomplete);
        };
        let slot = &mut p.parts[usize::from(h.index)];
        if slot.is_none() {
            *slot = Some(body.to_vec());
        }
        if p.parts.iter().any(Option::is_none) {
            return Ok(Pushed::Incomplete);
        }
        let Some(p) = self.partials.remove(&key) else {
            return Ok(Pushed::Incomplete);
        };
        let bytes: Vec<u8> = p.parts.into_iter().flatten().flatten().collect();
        if bytes.len() != usize::from(h.len) {
            return Err(FrameError::Length);
        }
        if crc32fast::hash(&bytes) != h.crc {
            return Err(FrameError::Crc(h.id));
        }
        if self.delivered.contains(&key) {
            return Ok(Pushed::Duplicate {
                id: h.id,
                kind: h.kind,
                bytes,
            });
        }
        Ok(Pushed::Complete {
            id: h.id,
            kind: h.kind,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(msg: &[u8], mtu: usize) -> Vec<u8> {
        let frames = encode(7, Kind::Message, msg, mtu).unwrap();
        assert!(frames.iter().all(|f| f.len() <= mtu - 3));
        let mut r = Reassembler::new();
        let mut out = None;
        for f in &frames {
            if let Pushed::Complete { bytes, .. } = r.push(f, 0).unwrap() {
                out = Some(bytes);
            }
        }
        out.unwrap()
    }

    #[test]
    fn one_two_and_ten_write_sizes_reassemble_at_each_mtu() {
        for mtu in [23, 185, 517] {
            let w = mtu - 3;
            for n in [1, 2, 10] {
                let len = (w * n).min(MAX_MESSAGE);
                let msg: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                assert_eq!(roundtrip(&msg, mtu), msg, "mtu {mtu} × {n}");
            }
        }
    }

    #[test]
    fn out_of_order_and_duplicate_fragments() {
        let msg: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut frames = encode(9, Kind::Message, &msg, 23).unwrap();
        frames.reverse();
        let dup = frames[3].clone();
        frames.insert(5, dup);
        let mut r = Reassembler::new();
        let mut got = Vec::new();
        for f in &frames {
            if let Pushed::Complete { bytes, .. } = r.push(f, 0).unwrap() {
                got.push(bytes);
            }
        }
        assert_eq!(got, vec![msg.clone()]);
        r.mark_delivered(9, Kind::Message);
        // The whole message again (a retransmission): not delivered twice.
        let again = encode(9, Kind::Message, &msg, 23).unwrap();
        let mut dups = 0;
        for f in &again {
            match r.push(f, 0).unwrap() {
                Pushed::Complete { .. } => panic!("delivered twice"),
                Pushed::Duplicate { id, .. } => {
                    assert_eq!(id, 9);
                    dups += 1;
                }
                Pushed::Incomplete => {}
            }
        }
        assert_eq!(dups, 1);
    }

    #[test]
    fn a_resend_with_other_bytes_restarts_the_incomplete_message() {
        // The first transmission is cut after two fragments; the resend of
        // the same id carries other bytes (a sealed message gets a fresh
        // counter) and completes on its own.
        let first = encode(4, Kind::Sealed, &[1u8; 60], 23).unwrap();
        let resent_msg = vec![2u8; 70];
        let resent = encode(4, Kind::Sealed, &resent_msg, 23).unwrap();
        let mut r = Reassembler::new();
        for f in &first[..2] {
            assert_eq!(r.push(f, 0).unwrap(), Pushed::Incomplete);
        }
        let mut got = None;
        for f in &resent {
            if let Pushed::Complete { bytes, .. } = r.push(f, 0).unwrap() {
                got = Some(bytes);
            }
        }
        assert_eq!(got, Some(resent_msg));
        assert_eq!(r.partials(), 0);
    }

    #[test]
    fn missing_fragments_time_out_and_corruption_is_caught() {
        let msg = vec![5u8; 100];
        let frames = encode(1, Kind::Message, &msg, 23).unwrap();
        let mut r = Reassembler::new();
        for f in &frames[..frames.len() - 1] {
            assert_eq!(r.push(f, 1_000).unwrap(), Pushed::Incomplete);
        }
        assert_eq!(r.expire(1_000 + 4_999), 0);
        assert_eq!(r.expire(1_000 + 5_000), 1);
        let mut bad = frames.clone();
        let last = bad[2].len() - 1;
        bad[2][last] ^= 0xFF;
        let mut r = Reassembler::new();
        let mut err = None;
        for f in &bad {
            if let Err(e) = r.push(f, 0) {
                err = Some(e);
            }
        }
        assert_eq!(err, Some(FrameError::Crc(1)));
        assert_eq!(r.push(&[1, 2, 3], 0), Err(FrameError::TooShort(3)));
        assert!(encode(1, Kind::Message, &vec![0; MAX_MESSAGE + 1], 517).is_err());
        assert_eq!(chunk_len(20), Err(FrameError::Mtu(20)));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(msg in proptest::collection::vec(any::<u8>(), 0..2000), mtu in 23usize..600) {
            prop_assert_eq!(roundtrip(&msg, mtu), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..40)) {
            let mut r = Reassembler::new();
            for (i, f) in frames.iter().enumerate() {
                let _ = r.push(f, i as u64 * 100);
            }
        }
    }
}
