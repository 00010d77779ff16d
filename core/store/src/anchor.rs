//! The rollback anchor: the thread that saves it off the commit path, and
//! its encoding, 1 (version) ‖ seq (u64 BE) ‖ head MAC ‖ anchor MAC.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::codec::{fixed, lp};
use crate::error::{io, tampered};
use crate::keys::{MacKey, StoreKeys};
use crate::Anchor;
use pos_rules::crypto::{KeyProvider, MAC_LEN};
use pos_rules::store::{AnchorReport, AnchorReporter, StoreError};

/// The least time between two anchor saves while writes keep coming.
pub const ANCHOR_INTERVAL: Duration = Duration::from_millis(100);

/// A thread that saves the newest rollback anchor through the key provider,
/// after the commits, coalescing: while one save runs or the interval has
/// not passed, newer heads replace the waiting one. Anchors are saved in
/// increasing journal order only. Each outcome goes to the reporter set by
/// [`Store::report_anchors`]; a failed save is not retried on its own (the
/// next commit's anchor, or the next open, saves the head again).
pub(crate) struct AnchorSaver {
    pub(crate) shared: Arc<(Mutex<AnchorState>, Condvar)>,
    pub(crate) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub(crate) struct PendingAnchor {
    pub(crate) seq: u64,
    /// The store id (hex) and the anchor's bytes (a MAC under the store's
    /// keys): computed by the saver thread for the heads it saves only, not
    /// on the commit path for every head.
    pub(crate) encode: Box<dyn FnOnce() -> (String, Vec<u8>) + Send>,
    pub(crate) provider: Arc<dyn KeyProvider>,
}

#[derive(Default)]
pub(crate) struct AnchorState {
    pub(crate) pending: Option<PendingAnchor>,
    /// Highest seq submitted (a later submission of a lower one is ignored).
    pub(crate) submitted: u64,
    pub(crate) busy: bool,
    /// Save now, without waiting for the interval (close, flush).
    pub(crate) urgent: bool,
    /// The thread waits out the interval: a new head needs no wake-up (it
    /// is picked up when the interval ends), which spares a context switch
    /// per commit.
    pub(crate) resting: bool,
    pub(crate) stop: bool,
    /// The journal position the provider's anchor names, as far as this
    /// store knows (found or saved at open, or saved since).
    pub(crate) saved: u64,
    /// The latest outcome, given to a reporter when it is set.
    pub(crate) last: Option<AnchorReport>,
    pub(crate) reporter: Option<AnchorReporter>,
}

/// The longest reason an [`AnchorReport::Failed`] carries (the provider's
/// message is the app's text; it is cut, never parsed).
pub(crate) const ANCHOR_REASON_MAX: usize = 200;

pub(crate) fn anchor_failure(seq: u64, saved: u64, reason: String) -> AnchorReport {
    let mut reason = reason;
    if reason.len() > ANCHOR_REASON_MAX {
        let mut end = ANCHOR_REASON_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    AnchorReport::Failed {
        seq,
        behind: seq.saturating_sub(saved),
        reason,
    }
}

impl AnchorSaver {
    /// `saved`: the position the provider's anchor names at open; `opened`:
    /// what the open found or did about it (`None`: no anchor is kept).
    pub(crate) fn start(saved: u64, opened: Option<AnchorReport>) -> Result<Self, StoreError> {
        let shared: Arc<(Mutex<AnchorState>, Condvar)> = Arc::new((
            Mutex::new(AnchorState {
                saved,
                last: opened,
                ..AnchorState::default()
            }),
            Condvar::new(),
        ));
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("pos-store-anchor".into())
            .spawn(move || anchor_thread(&s))
            .map_err(|e| io("start the anchor thread", &e))?;
        Ok(AnchorSaver {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, AnchorState> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn submit(&self, anchor: PendingAnchor) {
        let mut st = self.state();
        if anchor.seq <= st.submitted {
            return;
        }
        st.submitted = anchor.seq;
        st.pending = Some(anchor);
        if !st.resting {
            self.shared.1.notify_all();
        }
    }

    /// Notes an anchor saved outside the thread (a key rotation).
    pub(crate) fn record_saved(&self, seq: u64) {
        let report = AnchorReport::Saved { seq };
        let reporter = {
            let mut st = self.state();
            st.saved = st.saved.max(seq);
            st.last = Some(report.clone());
            st.reporter.clone()
        };
        if let Some(r) = reporter {
            r(report);
        }
    }

    /// Sets the reporter and gives it the latest outcome.
    pub(crate) fn set_reporter(&self, reporter: AnchorReporter) {
        let last = {
            let mut st = self.state();
            st.reporter = Some(Arc::clone(&reporter));
            st.last.clone()
        };
        if let Some(l) = last {
            reporter(l);
        }
    }

    /// Returns once every submitted anchor was saved (or failed) and its
    /// outcome reported.
    pub(crate) fn flush(&self) {
        let mut st = self.state();
        while st.pending.is_some() || st.busy {
            if st.stop && !st.busy {
                return;
            }
            st.urgent = true;
            self.shared.1.notify_all();
            st = self.shared.1.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn stop(&self) {
        self.flush();
        self.state().stop = true;
        self.shared.1.notify_all();
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for AnchorSaver {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn anchor_thread(shared: &(Mutex<AnchorState>, Condvar)) {
    let (lock, cv) = shared;
    let mut last_save: Option<Instant> = None;
    let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if st.pending.is_none() {
            if st.stop {
                return;
            }
            st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        // Coalesce: wait out the interval unless asked to save now.
        if let Some(at) = last_save {
            let due = at + ANCHOR_INTERVAL;
            let now = Instant::now();
            if now < due && !st.urgent && !st.stop {
                st.resting = true;
                st = cv
                    .wait_timeout(st, due - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.resting = false;
                continue;
            }
        }
        let Some(a) = st.pending.take() else { continue };
        st.busy = true;
        drop(st);
        // The batch is durable already: a failed save leaves the anchor
        // behind the journal, which the next open accepts and catches up;
        // it is reported. A provider or a reporter that panics (a foreign
        // callback) must not leave `busy` set: `close` would wait for ever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (store_id, bytes) = (a.encode)();
            a.provider.save_anchor(&store_id, &bytes)
        }));
        last_save = Some(Instant::now());
        match &outcome {
            Ok(Ok(())) => tracing::trace!(seq = a.seq, "rollback anchor saved"),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    seq = a.seq,
                    "rollback anchor not saved: the key provider failed"
                )
            }
        }
        st = lock.lock().unwrap_or_else(|p| p.into_inner());
        let report = match outcome {
            Ok(Ok(())) => {
                st.saved = st.saved.max(a.seq);
                AnchorReport::Saved { seq: a.seq }
            }
            Ok(Err(e)) => anchor_failure(a.seq, st.saved, e.to_string()),
            Err(_) => anchor_failure(a.seq, st.saved, "the key provider panicked".into()),
        };
        st.last = Some(report.clone());
        if let Some(r) = st.reporter.clone() {
            drop(st);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r(report)));
            st = lock.lock().unwrap_or_else(|p| p.into_inner());
        }
        st.busy = false;
        if st.pending.is_none() {
            st.urgent = false;
        }
        cv.notify_all();
    }
}

pub(crate) const ANCHOR_VERSION: u8 = 1;
pub(crate) const ANCHOR_LEN: usize = 1 + 8 + MAC_LEN + MAC_LEN;

pub(crate) fn anchor_body(store_id: &[u8], seq: u64, mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut b = b"pos-core/anchor/v1\0".to_vec();
    lp(&mut b, store_id);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(mac);
    b
}

pub(crate) fn encode_anchor(
    keys: &StoreKeys,
    store_id: &[u8],
    seq: u64,
    mac: &[u8; MAC_LEN],
) -> Vec<u8> {
    let tag = keys.mac(MacKey::Anchor, &[&anchor_body(store_id, seq, mac)]);
    let mut out = Vec::with_capacity(ANCHOR_LEN);
    out.push(ANCHOR_VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(mac);
    out.extend_from_slice(&tag);
    out
}

pub(crate) fn decode_anchor(
    keys: &StoreKeys,
    store_id: &[u8],
    bytes: &[u8],
) -> Result<Anchor, StoreError> {
    let bad = || tampered(0, "the rollback anchor does not verify");
    if bytes.len() != ANCHOR_LEN || bytes[0] != ANCHOR_VERSION {
        return Err(bad());
    }
    let seq = u64::from_be_bytes(fixed::<8>(&bytes[1..9], "anchor").map_err(|_| bad())?);
    let mac: [u8; MAC_LEN] = fixed(&bytes[9..9 + MAC_LEN], "anchor").map_err(|_| bad())?;
    if !keys.verify(
        MacKey::Anchor,
        &[&anchor_body(store_id, seq, &mac)],
        &bytes[9 + MAC_LEN..],
    ) {
        return Err(bad());
    }
    Ok(Anchor { seq, mac })
}
