//! The storage trait the engine persists through, and its in-memory
//! implementation.
//!
//! A store keeps [`Write`] records and gives them back, in order, at open.
//! [`Store::apply`] is atomic: the whole batch is durable, or none of it is
//! and an error says why. The encrypted SQLite store implements the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::ledger::{Ledger, Write};
use crate::lifecycle::PaymentId;

/// A boxed future, so the trait can be used as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation failed. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The platform keystore cannot give the key now (a locked phone, B8).
    #[error("the store is locked: the key is not available")]
    Locked,
    /// No space left; the operation was not recorded.
    #[error("the device is out of storage space")]
    DiskFull,
    /// Any other failure to read or write.
    #[error("storage failure: {0}")]
    Io(String),
    /// The key the platform gave does not open this store (another device's
    /// or a reset keystore's key). The store was not changed.
    #[error("the key does not open this store")]
    WrongKey,
    /// A record or the store header was edited, removed, reordered or moved:
    /// the journal's MAC chain does not verify at record `seq` (0: the
    /// header). Nothing was dropped or repaired; the store was not changed.
    #[error("the store was tampered with at record {seq}: {what}")]
    Tampered { seq: u64, what: String },
    /// The store is an older copy of itself: it ends at record `found`
    /// while record `expected` was written before (a restored backup or a
    /// copied file). Nothing was changed.
    #[error("the store was rolled back: it ends at record {found}, record {expected} was written")]
    RolledBack { found: u64, expected: u64 },
    /// The store was written by a newer version of the library (schema
    /// `found`, this version reads up to `supported`). Nothing was changed.
    #[error("the store was written by a newer version (schema {found}, supported {supported})")]
    NewerSchema { found: u32, supported: u32 },
    /// The file is not a readable store (truncated, not a database, missing
    /// its header). It was kept as it is.
    #[error("the store is corrupt: {detail}")]
    Corrupt { detail: String },
    /// The platform key provider failed (not a locked device: a missing key,
    /// a keystore error). The store was not changed.
    #[error("the key provider failed: {detail}")]
    KeyProviderFailed { detail: String },
}

/// Durable storage of the engine's records.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Every record ever applied, oldest first (later records of the same
    /// key replace earlier ones when replayed).
    fn load(&self) -> BoxFuture<'_, Result<Vec<Write>, StoreError>>;
    /// [`Store::load`], handing each record to `visit`, oldest first, as
    /// it is read and checked instead of returning them all: a store that
    /// streams its records (the SQLite store does) holds only a page of
    /// them at a time, so the memory does not grow with the history. An
    /// error of `visit` stops the load and is returned. Default: `load`,
    /// then each record.
    fn load_each<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Write) -> Result<(), StoreError> + Send),
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for w in self.load().await? {
                visit(w)?;
            }
            Ok(())
        })
    }
    /// [`Store::load_each`] as a check of the whole store (the engine's
    /// background check, `verify_store`): besides every record, whatever
    /// the store keeps beside its records must agree with them (the SQLite
    /// store checks its journal's index, which the archived-id lookups
    /// read). Default: [`Store::load_each`].
    fn verify_each<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Write) -> Result<(), StoreError> + Send),
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.load_each(visit)
    }
    /// Whether a payment record with this id was ever applied: a payment id
    /// the processor may have seen, so never to be taken again (B2), also
    /// once the engine took it out of memory. The engine asks under its
    /// write lock, for app-supplied ids once history left memory: a store
    /// answers from an index (the SQLite store) or its records in memory
    /// ([`MemoryStore`]); a store that wraps another must forward this.
    /// Default: every record of [`Store::load_each`], a whole read.
    fn payment_recorded<'a>(
        &'a self,
        id: &'a PaymentId,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut found = false;
            let mut visit = |w: Write| {
                if let Write::Payment(p) = &w {
                    found |= p.id == *id;
                }
                Ok(())
            };
            self.load_each(&mut visit).await?;
            Ok(found)
        })
    }
    /// The schema version of the store's files (`None`: a store without
    /// files, such as [`MemoryStore`]). A library older than the schema
    /// refuses the store (`NewerSchema`): an app must not downgrade the
    /// library while it holds payments (`docs/store-recovery.md`).
    fn schema(&self) -> Option<u32> {
        None
    }
    /// What the engine opens with: a ledger the store already rebuilt
    /// (from its snapshot; empty when it has none) and the records to
    /// apply to it, in order. A store that verified and decoded its records
    /// while opening hands those over once instead of reading them again.
    /// The ledger must be built with [`Ledger::apply`] only: its payment
    /// index and unsettled totals (which `status()` and the forwarding
    /// driver's wake-ups read) follow its payments only through `apply`.
    /// Default: an empty ledger and [`Store::load`].
    fn open_state(&self) -> BoxFuture<'_, Result<(Ledger, Vec<Write>), StoreError>> {
        Box::pin(async move { Ok((Ledger::default(), self.load().await?)) })
    }
    /// Makes the whole batch durable, atomically.
    fn apply<'a>(&'a self, batch: &'a [Write]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records applied since the last [`Store::compact`] (or since the
    /// store was created); `None` for a store that does not compact. The
    /// engine compacts when this passes [`COMPACT_EVERY`].
    fn records_since_compaction(&self) -> Option<u64> {
        None
    }

    /// Keeps `state` (records that rebuild everything applied so far, from
    /// `Ledger::snapshot_writes`) so that [`Store::open_state`] can start
    /// from it instead of replaying every superseded record. The caller
    /// guarantees that no `apply` runs meanwhile. Nothing is deleted: the
    /// journal and [`Store::load`] keep the whole history. Default: nothing.
    fn compact<'a>(&'a self, state: &'a [Write]) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = state;
        Box::pin(async { Ok(()) })
    }

    /// Gives `reporter` every outcome of saving the store's rollback anchor
    /// from now on, starting at once with the latest one (the anchor as
    /// found or saved at open). Reports come from the store's own thread,
    /// after the commits, in journal order. Returns `false` for a store
    /// that keeps no anchor (nothing is ever reported). Default: `false`.
    fn report_anchors(&self, reporter: AnchorReporter) -> bool {
        let _ = reporter;
        false
    }

    /// Makes what was applied as cheap as possible to find again after the
    /// process is suspended or killed: a durable store moves its log into
    /// its main file and saves its latest rollback anchor, and returns once
    /// both are done. For going to the background. Default: nothing to do.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Releases the store's files: after it returns nothing of this store
    /// writes to them (a durable store closes its connections, checkpoints
    /// its log and saves its last anchor). Default: nothing to release.
    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The outcome of one save of a store's rollback anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorReport {
    /// The anchor now names record `seq` (saved, or found current at open).
    Saved { seq: u64 },
    /// Saving the anchor of record `seq` failed: the anchor stays behind
    /// the journal (by `behind` records), and a rollback to a copy taken
    /// since the last saved anchor would not be detected. `reason` is the
    /// key provider's error message (it names no key material).
    Failed {
        seq: u64,
        behind: u64,
        reason: String,
    },
}

/// Hears about anchor saves ([`Store::report_anchors`]).
pub type AnchorReporter = Arc<dyn Fn(AnchorReport) + Send + Sync>;

/// Records between two compactions the engine asks for: opening after a
/// crash replays at most this many records on top of the snapshot.
pub const COMPACT_EVERY: u64 = 2_048;

/// Keeps records in memory: for tests, the demo and apps that opt out of
/// persistence. Clones share the same records, so a test can "reopen" it.
/// Failures can be injected to test that a failed write changes nothing.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    records: Vec<Write>,
    fail_next: Option<StoreError>,
    fail_always: Option<StoreError>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemoryInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The next `apply` fails with `error` and writes nothing.
    pub fn fail_next_write(&self, error: StoreError) {
        self.with(|s| s.fail_next = Some(error));
    }

    /// Every `apply` and `load` fails with `error` until [`MemoryStore::heal`].
    pub fn fail_always(&self, error: StoreError) {
        self.with(|s| s.fail_always = Some(error));
    }

    pub fn heal(&self) {
        self.with(|s| s.fail_always = None);
    }

    /// How many records were made durable.
    pub fn len(&self) -> usize {
        self.with(|s| s.records.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store for MemoryStore {
    fn load(&self) -> BoxFuture<'_, Result<Vec<Write>, StoreError>> {
        let r = self.with(|s| match &s.fail_always {
            Some(e) => Err(e.clone()),
            None => Ok(s.records.clone()),
        });
        Box::pin(async move { r })
    }

    fn payment_recorded<'a>(
        &'a self,
        id: &'a PaymentId,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let r = self.with(|s| match &s.fail_always {
            Some(e) => Err(e.clone()),
            None => Ok(s
                .records
                .iter()
                .any(|w| matches!(w, Write::Payment(p) if p.id == *id))),
        });
        Box::pin(async move { r })
    }

    fn apply<'a>(&'a self, batch: &'a [Write]) -> BoxFuture<'a, Result<(), StoreError>> {
        let r = self.with(|s| {
            if let Some(e) = s.fail_always.clone().or_else(|| s.fail_next.take()) {
                return Err(e);
            }
            s.records.extend_from_slice(batch);
            Ok(())
        });
        Box::pin(async move { r })
    }
}
