//! The encrypted SQLite store: [`SqliteStore`] implements [`Store`] on one
//! SQLite file (SPEC section 4 "The store"; `docs/store-recovery.md`).
//!
//! Owns the file format, the migrations, the MAC chain and the open-time
//! checks. The key hierarchy and the primitives are in [`crate::crypto`].
//!
//! # File format (schema 3)
//!
//! - `PRAGMA user_version` is the schema version. Migrations are numbered
//!   ([`MIGRATIONS`]`[n-1]` brings version `n-1` to `n`), each in its own
//!   transaction that also sets the version. A file of a newer version is
//!   refused with [`StoreError::NewerSchema`] before anything is written.
//! - `meta`: one row, the store header: a random store id, the data key's
//!   id, the id of the key-encryption key (KEK) that wraps it, the wrapped
//!   data key, a canary sealed under the data key, the journal's head
//!   (last `seq` and its MAC), whether a rollback anchor is kept, and a MAC
//!   over all of it.
//! - `journal`: append-only, one row per [`Write`]: `seq` (1, 2, 3...),
//!   `kind` (empty since schema 3: the kind, order, payment, audit..., is
//!   only inside the sealed record, so the file does not tell how many
//!   records of each kind it holds), `record_key` (a keyed hash of the
//!   record's kind and id: ids are not stored in clear), `format` (the
//!   schema version it was written under), `key_id`, `nonce`, `ciphertext`
//!   (the whole serialised `Write`, AES-256-GCM) and `mac`.
//! - `snapshot` (schema 2): at most one row, the engine's whole state as of
//!   record `upto_seq` (whose chain MAC is `upto_mac`), encoded with
//!   postcard (binary, bound to this version's types: a snapshot of another
//!   `format` is not used) and sealed under the data key with both in its
//!   associated data. Opening decrypts it and
//!   verifies and replays only the records after it; nothing is deleted, and
//!   [`Store::load`] still verifies the whole journal from the start. A
//!   removed or older snapshot only makes opening replay more.
//! - The associated data of a record binds it to its table, store, `seq`,
//!   `format`, `key_id`, `kind` (empty from format 3 on; rows of formats 1
//!   and 2 keep the kind they were sealed under, see [`row_kind`]) and
//!   `record_key`; the MAC of record `n` is
//!   HMAC(chain key, MAC of record `n-1` ‖ that associated data ‖ nonce ‖
//!   ciphertext), starting from a genesis MAC bound to the store id. An
//!   edited, deleted, inserted, reordered or moved record breaks the chain.
//!
//! # Durability
//!
//! WAL journal with `synchronous=FULL` (and `fullfsync` on Apple platforms),
//! set explicitly on every connection: a batch acknowledged by
//! [`Store::apply`] survives a crash or a power loss. One writer connection
//! (serialised by a lock that also keeps the chain head) and a small pool of
//! read-only connections for [`Store::load`].
//!
//! # Rollback
//!
//! The chain proves the journal is a prefix of what was written, not that it
//! is all of it: a whole older copy of the file verifies. After every write
//! the head is also given to the [`KeyProvider`] as an opaque, MACed
//! *anchor*; at open, a journal shorter than the anchor, or one that differs
//! from it, is refused. This only helps if the provider keeps the anchor
//! where a copier cannot roll it back with the file (a Keychain item); with
//! a provider that keeps no anchors, or an attacker who rolls back the
//! provider's storage too, a rollback to an older, genuine copy is not
//! detected. The anchor is saved after the commit, off the commit path, by
//! the store's anchor thread ([`AnchorSaver`]): at most one save at a time,
//! the newest head only, and no more often than every [`ANCHOR_INTERVAL`]
//! while writes keep coming; `close` (and drop) saves the last head before
//! returning. So the anchor trails the journal by at most that interval plus
//! one save (never ahead of it); a crash leaves it behind, which is accepted
//! and caught up at the next open. A rollback to a copy taken within that
//! trail is not detected (ADR 0006).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use crate::crypto::{
    ct_eq, hex, random_array, sync_parent, wipe, DataKey, FreshNonces, Kek, KeyError, KeyProvider,
    MacKey, StoreKeys, ID_LEN, MAC_LEN,
};
use crate::ledger::{Ledger, Write};
use crate::store::{AnchorReport, AnchorReporter, BoxFuture, Store, StoreError};

/// The schema version this library writes and reads.
pub const SCHEMA_VERSION: u32 = 3;

/// The numbered migrations: entry `n-1` brings the file from version `n-1`
/// to `n` and sets `user_version` to `n`.
pub const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3];

const MIGRATION_1: &str = "
CREATE TABLE meta (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    store_id    BLOB    NOT NULL,
    key_id      BLOB    NOT NULL,
    kek_id      TEXT    NOT NULL,
    wrapped_key BLOB    NOT NULL,
    canary      BLOB    NOT NULL,
    head_seq    INTEGER NOT NULL,
    head_mac    BLOB    NOT NULL,
    anchored    INTEGER NOT NULL,
    meta_mac    BLOB    NOT NULL
) STRICT;
CREATE TABLE journal (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    record_key  BLOB    NOT NULL,
    format      INTEGER NOT NULL,
    key_id      BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    mac         BLOB    NOT NULL
) STRICT;
PRAGMA user_version = 1;
";

/// Schema 2 adds a record kind (`session`), stores sealed card data as
/// base64 inside the sealed JSON (schema-1 records stay as they are and are
/// read as before: each record carries its own `format`), and adds the
/// snapshot table.
const MIGRATION_2: &str = "
CREATE TABLE snapshot (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    upto_seq    INTEGER NOT NULL,
    upto_mac    BLOB    NOT NULL,
    format      INTEGER NOT NULL,
    key_id      BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL
) STRICT;
PRAGMA user_version = 2;
";

/// Schema 3 takes the record kinds out of the file: the `kind` column of
/// every row becomes empty (a record's kind is inside its sealed body,
/// and its keyed `record_key` commits to it). Rows written before keep
/// their kind in their MAC and associated data, so the kind of a row of
/// format 1 or 2 is the one of [`KINDS`] its MAC verifies with. The file
/// is then rebuilt (`VACUUM`, see [`migrate`]), so the old values do not
/// stay in free space.
const MIGRATION_3: &str = "
UPDATE journal SET kind = '' WHERE kind <> '';
PRAGMA user_version = 3;
";

/// The first schema whose records keep their kind only inside the sealed
/// body (their `kind` column is empty and so is the kind in their
/// associated data).
const SEALED_KIND_FORMAT: u32 = 3;

/// The first schema whose snapshots are encoded as this version's are
/// (schema 3 changed the journal's rows, not the snapshot).
const SNAPSHOT_ENCODING_SINCE: u32 = 2;

/// Every record kind (see [`identify`]).
const KINDS: [&str; 9] = [
    "order", "payment", "receipt", "audit", "settings", "session", "reader", "clock", "device",
];

const NONCE_LEN: usize = 12;
const CANARY: &[u8] = b"pos-core store canary v1";
/// Rows read per query when replaying the journal.
const PAGE: i64 = 256;
/// Readers in the pool.
const READERS: u32 = 2;
/// SQLite's own largest page count (the default `max_page_count`).
const NO_SIZE_LIMIT_PAGES: u64 = 4_294_967_294;

/// SQLite result codes (primary) this store tells apart.
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_NOTADB: i32 = 26;
/// `ENOSPC` on Linux, Android, macOS and iOS.
const ENOSPC: i32 = 28;

/// The durability settings in force on the writer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `wal` for this store.
    pub journal_mode: String,
    /// SQLite's `synchronous` level: 2 is `FULL`.
    pub synchronous: i64,
}

/// The encrypted, tamper-evident SQLite store. See the module docs.
pub struct SqliteStore {
    path: PathBuf,
    store_id: [u8; ID_LEN],
    key_id: [u8; ID_LEN],
    /// The data key, kept to re-wrap it on rotation; wiped on drop.
    data_key: DataKey,
    keys: Arc<StoreKeys>,
    provider: Mutex<Arc<dyn KeyProvider>>,
    writer: tokio::sync::Mutex<Writer>,
    readers: SqlitePool,
    registration: Mutex<Option<Registration>>,
    /// What `open` verified and decoded, handed once to `open_state` so
    /// the engine's start does not verify and decrypt the journal twice.
    /// Dropped by the first write; `load` always reads and verifies the file.
    opened: Mutex<Option<OpenedState>>,
    /// Saves rollback anchors off the commit path.
    anchors: AnchorSaver,
    /// Records written after the snapshot (all of them without one).
    since_snapshot: std::sync::atomic::AtomicU64,
}

/// The least time between two anchor saves while writes keep coming.
pub const ANCHOR_INTERVAL: Duration = Duration::from_millis(100);

/// A thread that saves the newest rollback anchor through the key provider,
/// after the commits, coalescing: while one save runs or the interval has
/// not passed, newer heads replace the waiting one. Anchors are saved in
/// increasing journal order only. Each outcome goes to the reporter set by
/// [`Store::report_anchors`]; a failed save is not retried on its own (the
/// next commit's anchor, or the next open, saves the head again).
struct AnchorSaver {
    shared: Arc<(Mutex<AnchorState>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct PendingAnchor {
    seq: u64,
    /// The store id (hex) and the anchor's bytes (a MAC under the store's
    /// keys): computed by the saver thread for the heads it saves only, not
    /// on the commit path for every head.
    encode: Box<dyn FnOnce() -> (String, Vec<u8>) + Send>,
    provider: Arc<dyn KeyProvider>,
}

#[derive(Default)]
struct AnchorState {
    pending: Option<PendingAnchor>,
    /// Highest seq submitted (a later submission of a lower one is ignored).
    submitted: u64,
    busy: bool,
    /// Save now, without waiting for the interval (close, flush).
    urgent: bool,
    /// The thread waits out the interval: a new head needs no wake-up (it
    /// is picked up when the interval ends), which spares a context switch
    /// per commit.
    resting: bool,
    stop: bool,
    /// The journal position the provider's anchor names, as far as this
    /// store knows (found or saved at open, or saved since).
    saved: u64,
    /// The latest outcome, given to a reporter when it is set.
    last: Option<AnchorReport>,
    reporter: Option<AnchorReporter>,
}

/// The longest reason an [`AnchorReport::Failed`] carries (the provider's
/// message is the app's text; it is cut, never parsed).
const ANCHOR_REASON_MAX: usize = 200;

fn anchor_failure(seq: u64, saved: u64, reason: String) -> AnchorReport {
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
    fn start(saved: u64, opened: Option<AnchorReport>) -> Result<Self, StoreError> {
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

    fn state(&self) -> std::sync::MutexGuard<'_, AnchorState> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(&self, anchor: PendingAnchor) {
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
    fn record_saved(&self, seq: u64) {
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
    fn set_reporter(&self, reporter: AnchorReporter) {
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
    fn flush(&self) {
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

    fn stop(&self) {
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

fn anchor_thread(shared: &(Mutex<AnchorState>, Condvar)) {
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

struct Writer {
    /// `None` once closed.
    conn: Option<SqliteConnection>,
    /// The header exactly as this store last wrote or verified it; the next
    /// write replaces it only if the file still holds these very values.
    meta: Meta,
    /// The header a commit is writing, until it is known to have landed or
    /// not. Still set at the next operation when that commit's future was
    /// dropped half-way (its transaction may still be open on the
    /// connection): see [`SqliteStore::settle_interrupted`].
    in_flight: Option<Meta>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("head_seq", &self.meta.head_seq)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("store_id", &hex(&self.store_id))
            .finish_non_exhaustive()
    }
}

/// The stored header row.
#[derive(Clone)]
struct Meta {
    store_id: [u8; ID_LEN],
    key_id: [u8; ID_LEN],
    kek_id: String,
    wrapped_key: Vec<u8>,
    canary: Vec<u8>,
    head_seq: u64,
    head_mac: [u8; MAC_LEN],
    anchored: bool,
    meta_mac: Vec<u8>,
}

/// What a verified journal ends with.
struct Verified {
    head_seq: u64,
    head_mac: [u8; MAC_LEN],
    /// The MAC of the record asked for (the anchor's), when the journal has it.
    mac_at: Option<[u8; MAC_LEN]>,
    writes: Vec<Write>,
}

/// What `open` verified and decoded, for the engine's first load: the
/// ledger rebuilt from the snapshot (`None`: there was none), then the
/// records after it.
struct OpenedState {
    ledger: Option<Ledger>,
    writes: Vec<Write>,
}

/// A decoded rollback anchor.
struct Anchor {
    seq: u64,
    mac: [u8; MAC_LEN],
}

impl SqliteStore {
    /// Opens the store at `path`, creating it if the file does not exist.
    ///
    /// Creation needs the key: with the device locked it fails with
    /// [`StoreError::Locked`] and creates nothing. Opening an existing file
    /// checks, in order: that it is a store of a version this library reads
    /// ([`StoreError::Corrupt`], [`StoreError::NewerSchema`]), that the key is
    /// available ([`StoreError::Locked`]) and right ([`StoreError::WrongKey`]),
    /// that the header, the snapshot if any, and every record after it
    /// verify and decrypt (the records before the snapshot: the first one
    /// and the snapshot's own; all of them with [`Store::load`])
    /// ([`StoreError::Tampered`]), and that the journal is not older than the
    /// provider's anchor ([`StoreError::RolledBack`]). A store that fails to
    /// open is left as it is: never deleted, repaired or migrated past what
    /// was checked.
    pub async fn open(
        path: impl AsRef<Path>,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), provider, false).await
    }

    /// Opens a store that [`open`](Self::open) refused with
    /// [`StoreError::RolledBack`], or for a missing or unverifiable rollback
    /// anchor, accepting the file as it is and anchoring its current end.
    /// Every other check still runs.
    ///
    /// Only for a person's decision, for example after restoring a backup on
    /// purpose: the records written after that copy are lost, and the
    /// payments they held must be reconciled with the processor.
    pub async fn open_accepting_rollback(
        path: impl AsRef<Path>,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), provider, true).await
    }

    async fn open_inner(
        path: &Path,
        provider: Arc<dyn KeyProvider>,
        accept_rollback: bool,
    ) -> Result<Self, StoreError> {
        let path = std::path::absolute(path).map_err(|e| io("resolve the path", &e))?;
        let registration = Registration::claim(&path)?;
        let exists = path
            .try_exists()
            .map_err(|e| io("look for the store", &e))?;
        if exists {
            restrict_modes(&path);
        } else {
            create(&path, provider.as_ref()).await?;
        }
        let mut conn = connect(&path, false).await?;
        match prepare(&mut conn, provider.as_ref(), accept_rollback).await {
            Ok(p) => {
                let since_snapshot = p.meta.head_seq.saturating_sub(p.snapshot_seq);
                let readers = SqlitePoolOptions::new()
                    .max_connections(READERS)
                    .min_connections(0)
                    .connect_lazy_with(reader_options(&path));
                Ok(SqliteStore {
                    path,
                    store_id: p.store_id,
                    key_id: p.key_id,
                    data_key: p.data_key,
                    keys: Arc::new(p.keys),
                    provider: Mutex::new(provider),
                    writer: tokio::sync::Mutex::new(Writer {
                        conn: Some(conn),
                        meta: p.meta,
                        in_flight: None,
                    }),
                    readers,
                    registration: Mutex::new(Some(registration)),
                    since_snapshot: std::sync::atomic::AtomicU64::new(since_snapshot),
                    opened: Mutex::new(Some(p.opened)),
                    anchors: AnchorSaver::start(p.anchor.0, p.anchor.1)?,
                })
            }
            Err(e) => {
                let _ = conn.close().await;
                Err(e)
            }
        }
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's random identifier (not secret), as the key provider sees it.
    pub fn store_id(&self) -> String {
        hex(&self.store_id)
    }

    /// Closes every connection (the WAL is checkpointed into the file).
    /// Later operations fail with [`StoreError::Io`]. Idempotent.
    pub async fn close(&self) {
        // No write after this: the writer is taken (a write cut off earlier
        // is settled first), then the last head's anchor is saved.
        let conn = {
            let mut w = self.writer.lock().await;
            self.settle_interrupted(&mut w).await;
            w.conn.take()
        };
        self.anchors.flush();
        // Readers first: the writer, closing last, checkpoints the log into
        // the file and removes it (a read-only connection cannot).
        self.readers.close().await;
        if let Some(c) = conn {
            let _ = c.close().await;
        }
        self.registration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// The journal mode and `synchronous` level of the writer connection.
    pub async fn durability(&self) -> Result<Durability, StoreError> {
        let mut w = self.writer.lock().await;
        self.settle_interrupted(&mut w).await;
        let conn = w.conn.as_mut().ok_or_else(closed)?;
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(Durability {
            journal_mode,
            synchronous,
        })
    }

    /// Caps the file's size (`None`: no cap). A write that would pass it
    /// fails with [`StoreError::DiskFull`] and changes nothing, exactly as on
    /// a full disk. A cap below the current size holds the store at its
    /// current size. For quotas, and to test a full disk.
    pub async fn set_size_limit(&self, max_bytes: Option<u64>) -> Result<(), StoreError> {
        let mut w = self.writer.lock().await;
        self.settle_interrupted(&mut w).await;
        let conn = w.conn.as_mut().ok_or_else(closed)?;
        let pages = match max_bytes {
            None => NO_SIZE_LIMIT_PAGES,
            Some(bytes) => {
                let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
                let page_size = u64::try_from(page_size).unwrap_or(4096).max(512);
                (bytes / page_size).clamp(1, NO_SIZE_LIMIT_PAGES)
            }
        };
        // An integer we computed: nothing from outside reaches the SQL text.
        let sql = format!("PRAGMA max_page_count = {pages}");
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Rotates the key-encryption key: wraps the data key under the key of
    /// `new_provider` and uses that provider from now on. Records are not
    /// rewritten. Atomic: on failure the old key still opens the store. The
    /// old key may be destroyed once this returns.
    pub async fn rekey(&self, new_provider: Arc<dyn KeyProvider>) -> Result<(), StoreError> {
        let kek = new_provider.key_encryption_key().map_err(key_error)?;
        let wrapped = self
            .data_key
            .wrap(&kek, &wrap_aad(&self.store_id, kek.id()))
            .map_err(crypto_failure)?;
        let mut w = self.writer.lock().await;
        self.settle_interrupted(&mut w).await;
        let anchored = if new_provider.keeps_anchors() {
            let anchor = encode_anchor(
                &self.keys,
                &self.store_id,
                w.meta.head_seq,
                &w.meta.head_mac,
            );
            new_provider
                .save_anchor(&self.store_id(), &anchor)
                .map_err(key_error)?;
            true
        } else {
            false
        };
        let (head_seq, head_mac) = (w.meta.head_seq, w.meta.head_mac);
        let conn = w.conn.as_mut().ok_or_else(closed)?;
        let mut meta = read_current_meta(conn, &self.keys, head_seq, &head_mac).await?;
        meta.kek_id = kek.id().to_owned();
        meta.wrapped_key = wrapped;
        meta.anchored = anchored;
        meta.meta_mac = header_mac(&self.keys, &meta).to_vec();
        write_meta(conn, &meta).await?;
        w.meta = meta;
        drop(w);
        *self.provider.lock().unwrap_or_else(|p| p.into_inner()) = new_provider;
        if anchored {
            self.anchors.record_saved(head_seq);
        }
        Ok(())
    }

    fn provider(&self) -> Arc<dyn KeyProvider> {
        self.provider
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn apply_batch(&self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut w = self.writer.lock().await;
        self.settle_interrupted(&mut w).await;
        let mut rows = Vec::with_capacity(batch.len());
        let mut seq = w.meta.head_seq;
        let mut prev = w.meta.head_mac;
        // One call to the system's generator for the whole batch.
        let mut nonces = FreshNonces::draw(batch.len()).map_err(crypto_failure)?;
        for write in batch {
            seq = seq
                .checked_add(1)
                .ok_or_else(|| StoreError::Io("the journal is full".into()))?;
            let row = seal_record(
                &self.keys,
                &self.store_id,
                &self.key_id,
                seq,
                &prev,
                write,
                &mut nonces,
            )?;
            prev = row.mac;
            rows.push(row);
        }
        let mut meta = w.meta.clone();
        meta.head_seq = seq;
        meta.head_mac = prev;
        meta.meta_mac = header_mac(&self.keys, &meta).to_vec();
        w.in_flight = Some(meta.clone());
        let Writer {
            conn,
            meta: current,
            ..
        } = &mut *w;
        let conn = conn.as_mut().ok_or_else(closed)?;
        if let Err(e) = insert_rows(conn, &rows, current, &meta).await {
            // The transaction was rolled back and the head in memory is
            // unchanged. Should SQLite have committed all the same (an
            // ambiguous commit error), the batch is durable: follow the
            // header it wrote, as read by another connection (which sees
            // committed data only), and say so.
            if !self.committed(&meta).await {
                // `in_flight` stays set: the next operation rolls back
                // whatever may still be open and checks again.
                return Err(e);
            }
        }
        w.in_flight = None;
        let anchored = meta.anchored;
        w.meta = meta;
        drop(w);
        self.since_snapshot
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if anchored {
            let (keys, store_id) = (Arc::clone(&self.keys), self.store_id);
            self.anchors.submit(PendingAnchor {
                seq,
                encode: Box::new(move || {
                    (hex(&store_id), encode_anchor(&keys, &store_id, seq, &prev))
                }),
                provider: self.provider(),
            });
        }
        Ok(())
    }

    /// Whether the file's committed header is `next` (read through a
    /// reader connection, which never sees an open transaction).
    async fn committed(&self, next: &Meta) -> bool {
        let Ok(mut c) = self.readers.acquire().await else {
            return false;
        };
        match read_meta(&mut c).await {
            Ok(m) => {
                header_verifies(&self.keys, &m)
                    && m.head_seq == next.head_seq
                    && m.meta_mac == next.meta_mac
            }
            Err(_) => false,
        }
    }

    /// Before any use of the writer: a commit whose future was dropped
    /// half-way may have left its transaction open on the connection (sqlx
    /// stops a query whose caller is gone) or may have committed. Roll back
    /// whatever is open, then follow the header the file holds if it is
    /// that commit's; otherwise the head is unchanged.
    async fn settle_interrupted(&self, w: &mut Writer) {
        let Some(next) = w.in_flight.take() else {
            return;
        };
        if let Some(conn) = w.conn.as_mut() {
            // "No transaction is active" when nothing was left open.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        }
        if self.committed(&next).await {
            w.meta = next;
        }
    }

    /// Seals `state` as the snapshot at the current head (see the module
    /// docs), replacing the previous one.
    async fn write_snapshot(&self, state: &[Write]) -> Result<(), StoreError> {
        let plain = postcard::to_allocvec(state)
            .map_err(|_| StoreError::Io("the snapshot cannot be encoded".into()))?;
        self.write_snapshot_body(plain).await
    }

    /// Seals the encoded snapshot `plain` (wiped) at the current head.
    async fn write_snapshot_body(&self, mut plain: Vec<u8>) -> Result<(), StoreError> {
        let mut w = self.writer.lock().await;
        self.settle_interrupted(&mut w).await;
        let (upto_seq, upto_mac) = (w.meta.head_seq, w.meta.head_mac);
        let aad = snapshot_aad(
            &self.store_id,
            upto_seq,
            &upto_mac,
            SCHEMA_VERSION,
            &self.key_id,
        );
        let sealed = self.keys.seal(&aad, &plain);
        wipe(&mut plain);
        drop(plain);
        let mut sealed = sealed.map_err(crypto_failure)?;
        let ciphertext = sealed.split_off(NONCE_LEN);
        let conn = w.conn.as_mut().ok_or_else(closed)?;
        sqlx::query(
            "INSERT OR REPLACE INTO snapshot (id, upto_seq, upto_mac, format, key_id, nonce, \
             ciphertext) VALUES (1, ?, ?, ?, ?, ?, ?)",
        )
        .bind(i64::try_from(upto_seq).map_err(|_| StoreError::Io("the journal is full".into()))?)
        .bind(&upto_mac[..])
        .bind(i64::from(SCHEMA_VERSION))
        .bind(&self.key_id[..])
        .bind(&sealed[..])
        .bind(&ciphertext[..])
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        // Reset while the writer is held: no commit is counted before it.
        self.since_snapshot
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<Write>, StoreError> {
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        let meta = read_meta(&mut tx).await?;
        if meta.store_id != self.store_id || meta.key_id != self.key_id {
            return Err(tampered(0, "the store header changed while open"));
        }
        if !header_verifies(&self.keys, &meta) {
            return Err(tampered(0, "the store header does not verify"));
        }
        // The header names this store and key (checked above).
        let v = verify_journal(&mut tx, &self.keys, &meta, None, None).await?;
        let _ = tx.commit().await;
        Ok(v.writes)
    }
}

impl Store for SqliteStore {
    fn schema(&self) -> Option<u32> {
        Some(SCHEMA_VERSION)
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Write>, StoreError>> {
        Box::pin(self.load_all())
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.close())
    }

    /// The ledger rebuilt from the snapshot while `open` verified the
    /// journal, and the records after it, when no write came since.
    fn open_state(&self) -> BoxFuture<'_, Result<(Ledger, Vec<Write>), StoreError>> {
        let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(async move {
            match opened {
                Some(o) => Ok((o.ledger.unwrap_or_default(), o.writes)),
                None => Ok((Ledger::default(), self.load_all().await?)),
            }
        })
    }

    fn apply<'a>(&'a self, batch: &'a [Write]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.apply_batch(batch))
    }

    fn records_since_compaction(&self) -> Option<u64> {
        Some(
            self.since_snapshot
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn compact<'a>(&'a self, state: &'a [Write]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write_snapshot(state))
    }

    fn report_anchors(&self, reporter: AnchorReporter) -> bool {
        if !self.provider().keeps_anchors() {
            return false;
        }
        self.anchors.set_reporter(reporter);
        true
    }
}

// ---------------------------------------------------------------------------
// Open and create
// ---------------------------------------------------------------------------

/// What `prepare` learnt from a verified store.
struct Prepared {
    store_id: [u8; ID_LEN],
    key_id: [u8; ID_LEN],
    data_key: DataKey,
    keys: StoreKeys,
    /// The header as verified (and possibly rewritten) at open.
    meta: Meta,
    /// Where the snapshot the open started from ends (0: none).
    snapshot_seq: u64,
    /// The state verified and decoded at open, for the first `load`.
    opened: OpenedState,
    /// The position the provider's anchor names after the open, and what
    /// the open found or did about it (`None`: the provider keeps none).
    anchor: (u64, Option<AnchorReport>),
}

/// Options that never read the database at connect time, so that a
/// damaged file fails on a connection this store holds and closes (a
/// failure inside sqlx's connect would close it in the background).
fn base_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(5))
        .pragma("fullfsync", "ON")
        .pragma("checkpoint_fullfsync", "ON")
        .disable_statement_logging()
}

/// The readers: read-only, created only once the store verified.
fn reader_options(path: &Path) -> SqliteConnectOptions {
    base_options(path)
        .synchronous(SqliteSynchronous::Full)
        .read_only(true)
}

async fn connect(path: &Path, create: bool) -> Result<SqliteConnection, StoreError> {
    base_options(path)
        .create_if_missing(create)
        .connect()
        .await
        .map_err(db_error)
}

/// `synchronous=FULL`, explicitly (SQLite's default may be changed at build
/// time): with WAL, a commit is durable once it returns.
async fn set_full_sync(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Checks and opens an existing file on `conn`: the version, the key's
/// availability and SQLite's own check come first and write nothing; then
/// forward migrations (which never touch a record), then the full
/// verification, then the anchor.
async fn prepare(
    conn: &mut SqliteConnection,
    provider: &dyn KeyProvider,
    accept_rollback: bool,
) -> Result<Prepared, StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    let version = u32::try_from(version).map_err(|_| corrupt("invalid schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        return Err(corrupt("the file is not a POS Core store (no schema)"));
    }
    set_full_sync(conn).await?;
    let kek = provider.key_encryption_key().map_err(key_error)?;
    // The key, the header's MAC and the canary are checked before anything
    // is migrated: a store opened with the wrong key, or whose header was
    // edited, is refused as it is, still readable by the version that
    // wrote it. (The header is the same in every schema.)
    let meta = read_meta(conn).await?;
    let (data_key, keys) = unlock(&kek, &meta)?;
    drop(kek);
    if version < SCHEMA_VERSION {
        // Before the first write to an older file, SQLite's own check of
        // every page: a damaged file is refused as it is, not migrated.
        // (Every open reads and verifies the header, the snapshot and every
        // record after it, so damage there stops an ordinary open too.)
        let check: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if check != "ok" {
            return Err(corrupt("the database file does not pass SQLite's check"));
        }
        migrate(conn, version).await?;
    }
    set_wal(conn).await?;
    let store_hex = hex(&meta.store_id);
    let anchor = if provider.keeps_anchors() {
        match provider.load_anchor(&store_hex).map_err(key_error)? {
            Some(bytes) => match decode_anchor(&keys, &meta.store_id, &bytes) {
                Ok(a) => Some(a),
                // A person chose to trust the file as it is: it is anchored anew.
                Err(_) if accept_rollback => None,
                Err(e) => return Err(e),
            },
            None if meta.anchored && !accept_rollback => {
                return Err(tampered(
                    meta.head_seq,
                    "the rollback anchor kept by the key provider is missing",
                ))
            }
            None => None,
        }
    } else {
        None
    };
    let opened = read_snapshot(conn, &keys, &meta).await?;
    let start = opened.as_ref().map(|s| (s.upto_seq, s.upto_mac));
    // The snapshot is decoded on a blocking thread while the journal after
    // it is read and verified here (the two largest costs of an open). If
    // the open stops before it is done (an error, or its caller gone), the
    // guard tells the decoding to stop too.
    let decoding = opened.map(|o| {
        let upto_seq = o.upto_seq;
        let stop = StopOnDrop::default();
        let flag = Arc::clone(&stop.0);
        let task = tokio::task::spawn_blocking(move || decode_snapshot(o.body, &flag));
        (upto_seq, task, stop)
    });
    let anchor_seq = anchor.as_ref().map(|a| a.seq);
    let mut v = verify_journal(conn, &keys, &meta, anchor_seq, start).await?;
    let snapshot = match decoding {
        // A decoding that panicked (its plaintext is wiped on the way out)
        // is treated like one that failed: the journal alone rebuilds it all.
        Some((upto_seq, task, _stop)) => match task.await {
            Ok(Some(ledger)) => Some(Snapshot { upto_seq, ledger }),
            Ok(None) | Err(_) => None,
        },
        None => None,
    };
    if start.is_some() && snapshot.is_none() {
        // Authentic but not rebuilt by this build (a type changed without a
        // schema bump, or records that do not apply): a snapshot is only a
        // shortcut, so the whole journal is verified and replayed instead
        // (`records_since_compaction` then counts all of it, and the next
        // compaction replaces the snapshot). Nothing is lost either way.
        v = verify_journal(conn, &keys, &meta, anchor_seq, None).await?;
    }
    // The anchor's record may lie before the snapshot: its stored MAC is
    // compared then (the chain up to the snapshot was verified when the
    // snapshot was written; `load` verifies it again).
    let mac_at = match (&anchor, &snapshot) {
        // Anchored when the store was created, never since.
        (Some(a), Some(_)) if a.seq == 0 => Some(genesis_mac(&keys, &meta.store_id)),
        (Some(a), Some(s)) if a.seq < s.upto_seq => stored_mac(conn, a.seq).await?,
        _ => v.mac_at,
    };
    if let (Some(a), false) = (&anchor, accept_rollback) {
        // Shorter than the anchor, or a different history up to it.
        if a.seq > v.head_seq || mac_at.as_ref() != Some(&a.mac) {
            return Err(StoreError::RolledBack {
                found: v.head_seq,
                expected: a.seq,
            });
        }
    }
    let mut meta = meta;
    let mut anchor_at_open = (0, None);
    if provider.keeps_anchors() {
        let found = anchor.as_ref().map_or(0, |a| a.seq);
        anchor_at_open = (found, Some(AnchorReport::Saved { seq: v.head_seq }));
        let behind = anchor.as_ref().is_none_or(|a| a.seq != v.head_seq);
        if behind || accept_rollback {
            let bytes = encode_anchor(&keys, &meta.store_id, v.head_seq, &v.head_mac);
            // A provider that cannot save now leaves the anchor behind:
            // accepted at the next open, as after a crash; reported.
            match provider.save_anchor(&store_hex, &bytes) {
                Ok(()) => {
                    anchor_at_open.0 = v.head_seq;
                    if !meta.anchored {
                        meta.anchored = true;
                        meta.meta_mac = header_mac(&keys, &meta).to_vec();
                        write_meta(conn, &meta).await?;
                    }
                }
                Err(e) => {
                    let found = found.min(v.head_seq);
                    anchor_at_open = (
                        found,
                        Some(anchor_failure(v.head_seq, found, e.to_string())),
                    );
                }
            }
        }
    }
    let (snapshot_seq, opened) = match snapshot {
        Some(s) => (
            s.upto_seq,
            OpenedState {
                ledger: Some(s.ledger),
                writes: v.writes,
            },
        ),
        None => (
            0,
            OpenedState {
                ledger: None,
                writes: v.writes,
            },
        ),
    };
    Ok(Prepared {
        store_id: meta.store_id,
        key_id: meta.key_id,
        data_key,
        keys,
        meta,
        snapshot_seq,
        opened,
        anchor: anchor_at_open,
    })
}

/// Unwraps the data key and checks the header MAC and the canary.
fn unlock(kek: &Kek, meta: &Meta) -> Result<(DataKey, StoreKeys), StoreError> {
    if kek.id() != meta.kek_id {
        return Err(StoreError::WrongKey);
    }
    let data_key = DataKey::unwrap(
        kek,
        &wrap_aad(&meta.store_id, &meta.kek_id),
        &meta.wrapped_key,
    )
    .map_err(|_| StoreError::WrongKey)?;
    let keys = data_key.derive().map_err(crypto_failure)?;
    if !header_verifies(&keys, meta) {
        return Err(tampered(0, "the store header does not verify"));
    }
    let mut canary = keys
        .open(&canary_aad(&meta.store_id, &meta.key_id), &meta.canary)
        .map_err(|_| StoreError::WrongKey)?;
    let ok = canary == CANARY;
    wipe(&mut canary);
    if !ok {
        return Err(StoreError::WrongKey);
    }
    Ok((data_key, keys))
}

async fn set_wal(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Io(format!(
            "the store cannot use a write-ahead log (journal mode {mode})"
        )));
    }
    Ok(())
}

async fn migrate(conn: &mut SqliteConnection, from: u32) -> Result<(), StoreError> {
    run_migrations(conn, from).await?;
    if (1..SEALED_KIND_FORMAT).contains(&from) {
        // The kinds the file held in clear may still be in the free space
        // of its pages and in free pages: the file is rebuilt without them.
        // Best effort: the rebuild needs as much free space as the file,
        // and a store too big for it still opens (the migration itself is
        // done; only old free pages may keep the old kinds).
        let _ = sqlx::query("VACUUM").execute(&mut *conn).await;
    }
    Ok(())
}

async fn run_migrations(conn: &mut SqliteConnection, from: u32) -> Result<(), StoreError> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let mut tx = conn.begin().await.map_err(db_error)?;
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if usize::try_from(version).ok() != Some(i + 1) {
            return Err(StoreError::Io(format!(
                "migration {} did not set the schema version",
                i + 1
            )));
        }
        tx.commit().await.map_err(db_error)?;
    }
    Ok(())
}

/// Creates a new store at `path`: built under a temporary name, then
/// renamed into place, so a file at `path` is always a complete store.
async fn create(path: &Path, provider: &dyn KeyProvider) -> Result<(), StoreError> {
    let kek = provider.key_encryption_key().map_err(key_error)?;
    let tmp = with_suffix(path, ".init");
    // Leftovers of a creation that crashed: they never held a record.
    for p in [
        tmp.clone(),
        with_suffix(&tmp, "-wal"),
        with_suffix(&tmp, "-shm"),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove an unfinished store", &e)),
        }
    }
    create_private(&tmp)?;
    let mut conn = connect(&tmp, true).await?;
    let r = initialise(&mut conn, &kek, provider).await;
    let closed = conn.close().await.map_err(db_error);
    r?;
    closed?;
    std::fs::rename(&tmp, path).map_err(|e| io("move the new store into place", &e))?;
    sync_parent(path);
    Ok(())
}

async fn initialise(
    conn: &mut SqliteConnection,
    kek: &Kek,
    provider: &dyn KeyProvider,
) -> Result<(), StoreError> {
    set_full_sync(conn).await?;
    set_wal(conn).await?;
    migrate(conn, 0).await?;
    let store_id = random_array::<ID_LEN>().map_err(crypto_failure)?;
    let key_id = random_array::<ID_LEN>().map_err(crypto_failure)?;
    let data_key = DataKey::generate().map_err(crypto_failure)?;
    let wrapped_key = data_key
        .wrap(kek, &wrap_aad(&store_id, kek.id()))
        .map_err(crypto_failure)?;
    let keys = data_key.derive().map_err(crypto_failure)?;
    let canary = keys
        .seal(&canary_aad(&store_id, &key_id), CANARY)
        .map_err(crypto_failure)?;
    let genesis = genesis_mac(&keys, &store_id);
    let anchored = if provider.keeps_anchors() {
        provider
            .save_anchor(
                &hex(&store_id),
                &encode_anchor(&keys, &store_id, 0, &genesis),
            )
            .map_err(key_error)?;
        true
    } else {
        false
    };
    let mut meta = Meta {
        store_id,
        key_id,
        kek_id: kek.id().to_owned(),
        wrapped_key,
        canary,
        head_seq: 0,
        head_mac: genesis,
        anchored,
        meta_mac: Vec::new(),
    };
    meta.meta_mac = header_mac(&keys, &meta).to_vec();
    sqlx::query(
        "INSERT INTO meta (id, store_id, key_id, kek_id, wrapped_key, canary, head_seq, \
         head_mac, anchored, meta_mac) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(meta.store_id.to_vec())
    .bind(meta.key_id.to_vec())
    .bind(meta.kek_id.clone())
    .bind(meta.wrapped_key.clone())
    .bind(meta.canary.clone())
    .bind(0_i64)
    .bind(meta.head_mac.to_vec())
    .bind(i64::from(meta.anchored))
    .bind(meta.meta_mac.clone())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Creates the empty file SQLite then opens as a new database, readable
/// and writable by its owner only. SQLite gives the log and shared-memory
/// files it creates beside a database the database's permissions.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .map_err(|e| io("create the store file", &e))
}

/// Makes an existing store's files (database, log, shared memory)
/// readable and writable by their owner only, before SQLite opens them.
/// Best effort: a file system that keeps no Unix modes (vfat, exFAT, some
/// network shares) or a file owned by another user still opens, as it did.
fn restrict_modes(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [
            path.to_owned(),
            with_suffix(path, "-wal"),
            with_suffix(path, "-shm"),
        ] {
            let Ok(mode) = std::fs::metadata(&p).map(|m| m.permissions().mode()) else {
                continue;
            };
            if mode & 0o077 != 0 {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o700));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

// ---------------------------------------------------------------------------
// The header
// ---------------------------------------------------------------------------

async fn read_meta(conn: &mut SqliteConnection) -> Result<Meta, StoreError> {
    let row = sqlx::query(
        "SELECT store_id, key_id, kek_id, wrapped_key, canary, head_seq, head_mac, anchored, \
         meta_mac FROM meta WHERE id = 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?
    .ok_or_else(|| corrupt("the store header is missing"))?;
    let bad = |_| corrupt("the store header is unreadable");
    let blob = |name: &str| -> Result<Vec<u8>, StoreError> { row.try_get(name).map_err(bad) };
    let head_seq: i64 = row.try_get("head_seq").map_err(bad)?;
    let anchored: i64 = row.try_get("anchored").map_err(bad)?;
    Ok(Meta {
        store_id: fixed(&blob("store_id")?, "store id")?,
        key_id: fixed(&blob("key_id")?, "key id")?,
        kek_id: row.try_get("kek_id").map_err(bad)?,
        wrapped_key: blob("wrapped_key")?,
        canary: blob("canary")?,
        head_seq: u64::try_from(head_seq).map_err(|_| corrupt("invalid journal head"))?,
        head_mac: fixed(&blob("head_mac")?, "journal head")?,
        anchored: anchored != 0,
        meta_mac: blob("meta_mac")?,
    })
}

/// The header as the writer is about to rewrite it: it must still verify
/// and end where the writer's journal ends, so that a rewrite (which MACs
/// the header anew) never launders an edit made behind the store's back.
async fn read_current_meta(
    conn: &mut SqliteConnection,
    keys: &StoreKeys,
    head_seq: u64,
    head_mac: &[u8; MAC_LEN],
) -> Result<Meta, StoreError> {
    let meta = read_meta(conn).await?;
    if !header_verifies(keys, &meta) {
        return Err(tampered(0, "the store header does not verify"));
    }
    if meta.head_seq != head_seq || &meta.head_mac != head_mac {
        return Err(tampered(
            meta.head_seq,
            "the journal changed behind this store's back",
        ));
    }
    Ok(meta)
}

async fn write_meta(conn: &mut SqliteConnection, meta: &Meta) -> Result<(), StoreError> {
    update_meta(meta)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

fn update_meta(
    meta: &Meta,
) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(
        "UPDATE meta SET kek_id = ?, wrapped_key = ?, head_seq = ?, head_mac = ?, \
         anchored = ?, meta_mac = ? WHERE id = 1",
    )
    .bind(meta.kek_id.clone())
    .bind(meta.wrapped_key.clone())
    .bind(i64::try_from(meta.head_seq).unwrap_or(i64::MAX))
    .bind(meta.head_mac.to_vec())
    .bind(i64::from(meta.anchored))
    .bind(meta.meta_mac.clone())
}

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    <[u8; N]>::try_from(v).map_err(|_| corrupt(&format!("the {what} has the wrong length")))
}

/// Length-prefixes a field (u32, big-endian).
fn lp(out: &mut Vec<u8>, field: &[u8]) {
    let n = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(field);
}

fn header_bytes(meta: &Meta) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(b"pos-core/header/v1\0");
    lp(&mut b, &meta.store_id);
    lp(&mut b, &meta.key_id);
    lp(&mut b, meta.kek_id.as_bytes());
    lp(&mut b, &meta.wrapped_key);
    lp(&mut b, &meta.canary);
    b.extend_from_slice(&meta.head_seq.to_be_bytes());
    lp(&mut b, &meta.head_mac);
    b.push(u8::from(meta.anchored));
    b
}

fn header_mac(keys: &StoreKeys, meta: &Meta) -> [u8; MAC_LEN] {
    keys.mac(MacKey::Header, &[&header_bytes(meta)])
}

fn header_verifies(keys: &StoreKeys, meta: &Meta) -> bool {
    keys.verify(MacKey::Header, &[&header_bytes(meta)], &meta.meta_mac)
}

fn wrap_aad(store_id: &[u8], kek_id: &str) -> Vec<u8> {
    let mut a = b"pos-core/wrap/v1\0".to_vec();
    lp(&mut a, store_id);
    lp(&mut a, kek_id.as_bytes());
    a
}

fn canary_aad(store_id: &[u8], key_id: &[u8]) -> Vec<u8> {
    let mut a = b"pos-core/canary/v1\0".to_vec();
    lp(&mut a, store_id);
    lp(&mut a, key_id);
    a
}

fn genesis_mac(keys: &StoreKeys, store_id: &[u8]) -> [u8; MAC_LEN] {
    keys.mac(MacKey::Chain, &[b"pos-core/chain/v1/genesis\0", store_id])
}

// ---------------------------------------------------------------------------
// The rollback anchor: 1 (version) ‖ seq (u64 BE) ‖ head MAC ‖ anchor MAC
// ---------------------------------------------------------------------------

const ANCHOR_VERSION: u8 = 1;
const ANCHOR_LEN: usize = 1 + 8 + MAC_LEN + MAC_LEN;

fn anchor_body(store_id: &[u8], seq: u64, mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut b = b"pos-core/anchor/v1\0".to_vec();
    lp(&mut b, store_id);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(mac);
    b
}

fn encode_anchor(keys: &StoreKeys, store_id: &[u8], seq: u64, mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let tag = keys.mac(MacKey::Anchor, &[&anchor_body(store_id, seq, mac)]);
    let mut out = Vec::with_capacity(ANCHOR_LEN);
    out.push(ANCHOR_VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(mac);
    out.extend_from_slice(&tag);
    out
}

fn decode_anchor(keys: &StoreKeys, store_id: &[u8], bytes: &[u8]) -> Result<Anchor, StoreError> {
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

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// One sealed journal row, ready to insert.
struct SealedRow {
    seq: u64,
    record_key: [u8; 16],
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
    mac: [u8; MAC_LEN],
}

/// The kind column and the id a record replaces earlier records by.
fn identify(w: &Write) -> (&'static str, String) {
    match w {
        Write::Order(o) => ("order", o.id.as_str().to_owned()),
        Write::Payment(p) => ("payment", p.id.as_str().to_owned()),
        Write::Receipt { id, .. } => ("receipt", id.to_string()),
        Write::Audit(e) => ("audit", e.seq.to_string()),
        Write::Settings(_) => ("settings", String::new()),
        Write::Session { .. } => ("session", String::new()),
        Write::Reader { serial, .. } => ("reader", serial.clone()),
        Write::Clock(_) => ("clock", String::new()),
        Write::Device { .. } => ("device", String::new()),
        Write::Account(_) => ("account", String::new()),
    }
}

fn record_key(keys: &StoreKeys, kind: &str, id: &str) -> [u8; 16] {
    let mut b = Vec::with_capacity(kind.len() + id.len() + 8);
    lp(&mut b, kind.as_bytes());
    lp(&mut b, id.as_bytes());
    let mac = keys.mac(MacKey::Index, &[&b]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&mac[..16]);
    out
}

/// The kind a row was sealed under and its associated data, if its MAC
/// verifies: an empty kind for a row of schema 3 or later (its kind is in
/// its sealed body); for an older row, the kind in its `kind` column, or,
/// once the migration emptied that column, the one of [`KINDS`] its MAC
/// verifies with (a MAC binds exactly one kind).
#[allow(clippy::too_many_arguments)]
fn row_kind(
    keys: &StoreKeys,
    store_id: &[u8],
    seq: u64,
    format: u32,
    key_id: &[u8],
    column: &str,
    record_key: &[u8],
    prev: &[u8; MAC_LEN],
    nonce: &[u8],
    body: &[u8],
    mac: &[u8],
) -> Option<(&'static str, Vec<u8>)> {
    let verifies = |kind: &str| {
        let aad = record_aad(store_id, seq, format, key_id, kind, record_key);
        ct_eq(&chain_mac(keys, prev, &aad, nonce, body), mac).then_some(aad)
    };
    if format >= SEALED_KIND_FORMAT {
        return if column.is_empty() {
            verifies("").map(|aad| ("", aad))
        } else {
            None
        };
    }
    if !column.is_empty() {
        let kind = KINDS.iter().find(|k| **k == column)?;
        return verifies(kind).map(|aad| (*kind, aad));
    }
    KINDS.iter().find_map(|k| verifies(k).map(|aad| (*k, aad)))
}

/// The associated data of a record: table, store, position, format, key,
/// kind (empty from schema 3 on) and record key.
fn record_aad(
    store_id: &[u8],
    seq: u64,
    format: u32,
    key_id: &[u8],
    kind: &str,
    record_key: &[u8],
) -> Vec<u8> {
    let mut a = b"pos-core/journal/v1\0".to_vec();
    lp(&mut a, store_id);
    a.extend_from_slice(&seq.to_be_bytes());
    a.extend_from_slice(&format.to_be_bytes());
    lp(&mut a, key_id);
    lp(&mut a, kind.as_bytes());
    lp(&mut a, record_key);
    a
}

fn chain_mac(
    keys: &StoreKeys,
    prev: &[u8; MAC_LEN],
    aad: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
) -> [u8; MAC_LEN] {
    let mut lens = Vec::with_capacity(16);
    lp(&mut lens, nonce);
    let n = u64::try_from(ciphertext.len()).unwrap_or(u64::MAX);
    keys.mac(
        MacKey::Chain,
        &[
            b"pos-core/chain/v1\0",
            prev,
            aad,
            &lens,
            &n.to_be_bytes(),
            ciphertext,
        ],
    )
}

fn seal_record(
    keys: &StoreKeys,
    store_id: &[u8],
    key_id: &[u8],
    seq: u64,
    prev: &[u8; MAC_LEN],
    write: &Write,
    nonces: &mut FreshNonces,
) -> Result<SealedRow, StoreError> {
    let (kind, id) = identify(write);
    let rkey = record_key(keys, kind, &id);
    // The kind stays inside the sealed body; `rkey` commits to it.
    let aad = record_aad(store_id, seq, SCHEMA_VERSION, key_id, "", &rkey);
    let mut ciphertext = serde_json::to_vec(write).map_err(|e| {
        StoreError::Io(format!(
            "a {kind} record cannot be encoded: {:?}",
            e.classify()
        ))
    })?;
    // Sealed where it was encoded: the plaintext is never copied.
    let nonce = keys
        .seal_in_place(&aad, nonces, &mut ciphertext)
        .map_err(crypto_failure)?;
    let mac = chain_mac(keys, prev, &aad, &nonce, &ciphertext);
    Ok(SealedRow {
        seq,
        record_key: rkey,
        nonce,
        ciphertext,
        mac,
    })
}

/// Rows per `INSERT` statement (8 parameters each, far under SQLite's
/// limit); a larger batch is committed with one `INSERT` per chunk, still
/// in one transaction.
const ROWS_PER_INSERT: usize = 64;

/// The header columns a commit compares (the current values) and sets.
const META_CAS: &str = "UPDATE meta SET kek_id = ?, wrapped_key = ?, head_seq = ?, \
    head_mac = ?, anchored = ?, meta_mac = ? WHERE id = 1 AND store_id = ? AND key_id = ? \
    AND kek_id = ? AND wrapped_key = ? AND canary = ? AND head_seq = ? AND head_mac = ? \
    AND anchored = ? AND meta_mac = ?;";

/// Appends `rows` and replaces the header `current` by `next`, in one
/// transaction sent to SQLite as one multi-statement query (one round trip
/// to sqlx's worker thread instead of four): `BEGIN IMMEDIATE`, the header
/// update, the inserts, `COMMIT`. The header is replaced only if the file
/// still holds exactly `current` (what this store last wrote), and each
/// insert runs only if that update changed the row (`changes() = 1`): after
/// an edit made behind the store's back the transaction commits nothing and
/// the edit is refused, never MACed anew ("laundered").
async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[SealedRow],
    current: &Meta,
    next: &Meta,
) -> Result<(), StoreError> {
    let mut sql = String::from("BEGIN IMMEDIATE;");
    sql.push_str(META_CAS);
    for (k, chunk) in rows.chunks(ROWS_PER_INSERT).enumerate() {
        sql.push_str(
            "INSERT INTO journal (seq, kind, record_key, format, key_id, nonce, ciphertext, mac) \
             SELECT * FROM (VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?, ?, ?)"
            });
        }
        // `changes()` counts the rows of the statement before (it changes
        // only when a statement ends): the header update (1) for the first
        // insert, the previous full chunk for the next ones. So each insert
        // runs only if everything before it did.
        if k == 0 {
            sql.push_str(") WHERE changes() = 1;");
        } else {
            sql.push_str(&format!(") WHERE changes() = {ROWS_PER_INSERT};"));
        }
    }
    // What the header holds now: this commit's, or someone else's.
    sql.push_str("SELECT head_seq, meta_mac FROM meta WHERE id = 1;");
    sql.push_str("COMMIT;");
    // Placeholders only: no value reaches the SQL text.
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(next.kek_id.as_str())
        .bind(&next.wrapped_key[..])
        .bind(i64::try_from(next.head_seq).unwrap_or(i64::MAX))
        .bind(&next.head_mac[..])
        .bind(i64::from(next.anchored))
        .bind(&next.meta_mac[..])
        .bind(&current.store_id[..])
        .bind(&current.key_id[..])
        .bind(current.kek_id.as_str())
        .bind(&current.wrapped_key[..])
        .bind(&current.canary[..])
        .bind(i64::try_from(current.head_seq).unwrap_or(i64::MAX))
        .bind(&current.head_mac[..])
        .bind(i64::from(current.anchored))
        .bind(&current.meta_mac[..]);
    for r in rows {
        q = q
            .bind(i64::try_from(r.seq).map_err(|_| StoreError::Io("the journal is full".into()))?)
            .bind("")
            .bind(&r.record_key[..])
            .bind(i64::from(SCHEMA_VERSION))
            .bind(&next.key_id[..])
            .bind(&r.nonce[..])
            .bind(&r.ciphertext[..])
            .bind(&r.mac[..]);
    }
    match q.fetch_all(&mut *conn).await {
        Ok(found) => {
            let ours = found.first().is_some_and(|row| {
                row.try_get::<i64, _>(0).ok() == i64::try_from(next.head_seq).ok()
                    && row.try_get::<&[u8], _>(1).ok() == Some(&next.meta_mac[..])
            });
            if ours {
                return Ok(());
            }
            // The header was not the one this store wrote: the update and
            // the inserts changed nothing, and an empty transaction was
            // committed.
            Err(tampered(
                0,
                "the store header changed behind this store's back",
            ))
        }
        Err(e) => {
            // A statement failed (a full disk...): the transaction is still
            // open on this connection; roll it back so nothing is written.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(db_error(e))
        }
    }
}

/// Replays the journal from `start` (a snapshot's end; the genesis when
/// `None`): checks the sequence, the MAC chain, the key id and the
/// associated data of every record, that the journal ends at the header's
/// head and holds nothing else, and returns the records. Nothing is
/// dropped or repaired: the first problem is the error.
async fn verify_journal(
    conn: &mut SqliteConnection,
    keys: &StoreKeys,
    meta: &Meta,
    mac_wanted_at: Option<u64>,
    start: Option<(u64, [u8; MAC_LEN])>,
) -> Result<Verified, StoreError> {
    let (store_id, key_id) = (&meta.store_id, &meta.key_id);
    let (mut seq, mut prev) = start.unwrap_or((0, genesis_mac(keys, store_id)));
    let from = i64::try_from(seq).map_err(|_| corrupt("the journal is too long"))?;
    // Rows after the start (all of them from the genesis): a row outside
    // the sequence shows as a count that does not match. Only the pages
    // after the snapshot are read.
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE seq > ?")
        .bind(if from == 0 { i64::MIN } else { from })
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    if from > 0 {
        // Cheap checks of the history before the snapshot (two b-tree
        // lookups; `load` verifies all of it): it still starts at 1, and
        // the snapshot's own record is there with the MAC the snapshot names.
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM journal")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if first != Some(1) {
            return Err(tampered(1, "records before the snapshot were removed"));
        }
        if stored_mac(conn, seq).await?.as_ref() != Some(&prev) {
            return Err(tampered(
                seq,
                "the record the snapshot ends at was removed or edited",
            ));
        }
    }
    let start_seq = seq;
    let mut mac_at = (mac_wanted_at == Some(seq)).then_some(prev);
    let mut writes = Vec::new();
    loop {
        let after = i64::try_from(seq).map_err(|_| corrupt("the journal is too long"))?;
        let rows = sqlx::query(
            "SELECT seq, kind, record_key, format, key_id, nonce, ciphertext, mac FROM journal \
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let expected = seq + 1;
            let bad = |_| corrupt(&format!("record {expected} is unreadable"));
            let found: i64 = row.try_get("seq").map_err(bad)?;
            if u64::try_from(found).ok() != Some(expected) {
                return Err(tampered(expected, "the record is missing"));
            }
            // Borrowed from the row, but the ciphertext (decrypted in place).
            let kind: &str = row.try_get("kind").map_err(bad)?;
            let rkey: &[u8] = row.try_get("record_key").map_err(bad)?;
            let format: i64 = row.try_get("format").map_err(bad)?;
            let row_key_id: &[u8] = row.try_get("key_id").map_err(bad)?;
            let nonce: &[u8] = row.try_get("nonce").map_err(bad)?;
            let mut body: Vec<u8> = row.try_get("ciphertext").map_err(bad)?;
            let mac: &[u8] = row.try_get("mac").map_err(bad)?;
            let format = u32::try_from(format).unwrap_or(u32::MAX);
            let Some((kind, aad)) = row_kind(
                keys, store_id, expected, format, row_key_id, kind, rkey, &prev, nonce, &body, mac,
            ) else {
                return Err(tampered(
                    expected,
                    "the record does not verify (edited, moved, reordered or removed)",
                ));
            };
            if row_key_id != key_id.as_slice() {
                return Err(tampered(expected, "the record names an unknown key id"));
            }
            if !(1..=SCHEMA_VERSION).contains(&format) {
                return Err(corrupt(&format!(
                    "record {expected} has an unknown format {format}"
                )));
            }
            {
                keys.open_in_place(&aad, nonce, &mut body)
                    .map_err(|_| tampered(expected, "the record does not decrypt"))?;
                let parsed = serde_json::from_slice::<Write>(&body);
                wipe(&mut body);
                let write = parsed.map_err(|e| {
                    corrupt(&format!(
                        "record {expected} cannot be decoded ({:?} error at line {}, column {})",
                        e.classify(),
                        e.line(),
                        e.column()
                    ))
                })?;
                let (k, id) = identify(&write);
                if (!kind.is_empty() && k != kind) || record_key(keys, k, &id).as_slice() != rkey {
                    return Err(tampered(
                        expected,
                        "the record does not match its kind or key",
                    ));
                }
                writes.push(write);
            }
            prev = fixed(mac, "record MAC")?;
            seq = expected;
            if mac_wanted_at == Some(seq) {
                mac_at = Some(prev);
            }
        }
    }
    if seq != meta.head_seq || prev != meta.head_mac {
        return Err(tampered(
            seq.max(meta.head_seq),
            "the journal does not end where the store header says (records removed or added)",
        ));
    }
    if u64::try_from(count).ok() != Some(seq - start_seq) {
        return Err(tampered(
            seq,
            "the journal holds records outside its sequence",
        ));
    }
    Ok(Verified {
        head_seq: seq,
        head_mac: prev,
        mac_at,
        writes,
    })
}

// ---------------------------------------------------------------------------
// The snapshot
// ---------------------------------------------------------------------------

/// A verified snapshot.
struct Snapshot {
    upto_seq: u64,
    ledger: Ledger,
}

fn snapshot_aad(
    store_id: &[u8],
    upto_seq: u64,
    upto_mac: &[u8],
    format: u32,
    key_id: &[u8],
) -> Vec<u8> {
    let mut a = b"pos-core/snapshot/v1\0".to_vec();
    lp(&mut a, store_id);
    a.extend_from_slice(&upto_seq.to_be_bytes());
    lp(&mut a, upto_mac);
    a.extend_from_slice(&format.to_be_bytes());
    lp(&mut a, key_id);
    a
}

/// A snapshot read, verified and decrypted, not decoded yet.
struct OpenedSnapshot {
    upto_seq: u64,
    upto_mac: [u8; MAC_LEN],
    body: Plaintext,
}

/// Decrypted bytes, wiped when dropped: on every path, a panic or a task
/// dropped before it ran included.
struct Plaintext(Vec<u8>);

impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Set when dropped: tells a decoding on another thread that nobody waits
/// for it any more.
#[derive(Default)]
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The ledger a snapshot's plaintext rebuilds, or `None` when this build
/// cannot decode it or apply its records (or `stop` was set). The plaintext
/// is wiped when this returns or unwinds. Runs on a blocking thread while
/// the journal after the snapshot is verified: the records are applied where
/// they were decoded, so the memory they free is reused by the ledger (one
/// allocator arena).
fn decode_snapshot(body: Plaintext, stop: &std::sync::atomic::AtomicBool) -> Option<Ledger> {
    use serde::de::DeserializeSeed;
    let mut ledger = Ledger::default();
    let mut de = postcard::Deserializer::from_bytes(&body.0);
    ApplyEach {
        ledger: &mut ledger,
        stop,
    }
    .deserialize(&mut de)
    .ok()?;
    Some(ledger)
}

/// Decodes a sequence of records and applies each to the ledger as soon
/// as it is decoded: the records are never all held at once (a snapshot of
/// 10,000 payments would hold them twice, as records and in the ledger).
struct ApplyEach<'a> {
    ledger: &'a mut Ledger,
    stop: &'a std::sync::atomic::AtomicBool,
}

impl<'de> serde::de::DeserializeSeed<'de> for ApplyEach<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ApplyEach<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of store records")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(w) = seq.next_element::<Write>()? {
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(serde::de::Error::custom("the open stopped"));
            }
            self.ledger.apply(w).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

/// Reads, verifies and decrypts the snapshot, if the store has one (and
/// it was written in this schema's encoding). A snapshot that does not
/// verify is an error, never skipped.
async fn read_snapshot(
    conn: &mut SqliteConnection,
    keys: &StoreKeys,
    meta: &Meta,
) -> Result<Option<OpenedSnapshot>, StoreError> {
    let row = sqlx::query(
        "SELECT upto_seq, upto_mac, format, key_id, nonce, ciphertext FROM snapshot WHERE id = 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    let bad = |_| corrupt("the snapshot is unreadable");
    let upto_seq: i64 = row.try_get("upto_seq").map_err(bad)?;
    let upto_seq = u64::try_from(upto_seq).map_err(|_| corrupt("invalid snapshot position"))?;
    let upto_mac: Vec<u8> = row.try_get("upto_mac").map_err(bad)?;
    let format: i64 = row.try_get("format").map_err(bad)?;
    let format = u32::try_from(format).unwrap_or(u32::MAX);
    let key_id: Vec<u8> = row.try_get("key_id").map_err(bad)?;
    let nonce: Vec<u8> = row.try_get("nonce").map_err(bad)?;
    let mut body = Plaintext(row.try_get("ciphertext").map_err(bad)?);
    drop(row);
    let what = "the snapshot does not verify (edited, moved or from another store)";
    if upto_seq > meta.head_seq || key_id.as_slice() != meta.key_id.as_slice() {
        return Err(tampered(upto_seq.min(meta.head_seq), what));
    }
    let aad = snapshot_aad(&meta.store_id, upto_seq, &upto_mac, format, &key_id);
    keys.open_in_place(&aad, &nonce, &mut body.0)
        .map_err(|_| tampered(upto_seq, what))?;
    if !(SNAPSHOT_ENCODING_SINCE..=SCHEMA_VERSION).contains(&format) {
        // Authentic, but written by an older version in another encoding:
        // not used; the journal is replayed from the start instead.
        return Ok(None);
    }
    let upto_mac = fixed(&upto_mac, "snapshot position")?;
    Ok(Some(OpenedSnapshot {
        upto_seq,
        upto_mac,
        body,
    }))
}

/// The MAC stored with record `seq`, if it exists.
async fn stored_mac(
    conn: &mut SqliteConnection,
    seq: u64,
) -> Result<Option<[u8; MAC_LEN]>, StoreError> {
    let seq = i64::try_from(seq).map_err(|_| corrupt("invalid anchor position"))?;
    let mac: Option<Vec<u8>> = sqlx::query_scalar("SELECT mac FROM journal WHERE seq = ?")
        .bind(seq)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(mac.and_then(|m| <[u8; MAC_LEN]>::try_from(m.as_slice()).ok()))
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

fn tampered(seq: u64, what: &str) -> StoreError {
    StoreError::Tampered {
        seq,
        what: what.to_owned(),
    }
}

fn corrupt(detail: &str) -> StoreError {
    StoreError::Corrupt {
        detail: detail.to_owned(),
    }
}

fn closed() -> StoreError {
    StoreError::Io("the store is closed".into())
}

fn io(what: &str, e: &std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(ENOSPC) {
        return StoreError::DiskFull;
    }
    StoreError::Io(format!("cannot {what}: {}", e.kind()))
}

fn key_error(e: KeyError) -> StoreError {
    match e {
        KeyError::Unavailable => StoreError::Locked,
        KeyError::Failed(detail) => StoreError::KeyProviderFailed { detail },
    }
}

fn crypto_failure(e: crate::crypto::CryptoError) -> StoreError {
    StoreError::Io(format!("cryptography failed: {e}"))
}

/// Maps a SQLite error: a full disk and a corrupt file are typed; the rest
/// is I/O. SQLite's messages name tables and columns, never values.
fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
            match code {
                SQLITE_FULL => StoreError::DiskFull,
                SQLITE_CORRUPT | SQLITE_NOTADB => corrupt(d.message()),
                _ => StoreError::Io(format!("sqlite: {}", d.message())),
            }
        }
        sqlx::Error::Io(io_err) => io("use the store file", io_err),
        _ => StoreError::Io(e.to_string()),
    }
}

// ---------------------------------------------------------------------------
// One open store per file in this process
// ---------------------------------------------------------------------------

static OPEN_STORES: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Marks a file as open in this process; released on drop. A second
/// writer on the same file would fork the journal.
#[derive(Debug)]
struct Registration(PathBuf);

impl Registration {
    fn claim(path: &Path) -> Result<Self, StoreError> {
        let mut open = OPEN_STORES.lock().unwrap_or_else(|p| p.into_inner());
        if !open.insert(path.to_path_buf()) {
            return Err(StoreError::Io(
                "the store is already open in this process".into(),
            ));
        }
        Ok(Registration(path.to_path_buf()))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        OPEN_STORES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::{AuditEntry, AuditKind};
    use crate::clock::Timestamp;

    fn audit(seq: u64) -> Write {
        Write::Audit(AuditEntry {
            seq,
            at: Timestamp(1),
            actor: None,
            kind: AuditKind::LeftOfflineMode,
            account: None,
        })
    }

    fn keys() -> StoreKeys {
        DataKey::generate().unwrap().derive().unwrap()
    }

    /// The associated data alone (MAC chain aside) binds a ciphertext to its
    /// store, position, format, key id and record key (which commits to the
    /// kind; the kind itself is empty from schema 3 on).
    #[test]
    fn a_record_opens_only_under_its_own_associated_data() {
        let k = keys();
        let (store, key) = ([1u8; ID_LEN], [2u8; ID_LEN]);
        let genesis = genesis_mac(&k, &store);
        let row = seal_record(
            &k,
            &store,
            &key,
            3,
            &genesis,
            &audit(1),
            &mut FreshNonces::draw(1).unwrap(),
        )
        .unwrap();
        let sealed = [&row.nonce[..], &row.ciphertext[..]].concat();
        let aad = |store: &[u8], seq, format, key: &[u8], kind, rkey: &[u8]| {
            record_aad(store, seq, format, key, kind, rkey)
        };
        let rk = row.record_key;
        assert_eq!(rk, record_key(&k, "audit", "1"));
        assert!(k
            .open(&aad(&store, 3, SCHEMA_VERSION, &key, "", &rk), &sealed)
            .is_ok());
        for wrong in [
            aad(&[9u8; ID_LEN], 3, SCHEMA_VERSION, &key, "", &rk),
            aad(&store, 4, SCHEMA_VERSION, &key, "", &rk),
            aad(&store, 3, SCHEMA_VERSION + 1, &key, "", &rk),
            aad(&store, 3, SCHEMA_VERSION, &[3u8; ID_LEN], "", &rk),
            aad(&store, 3, SCHEMA_VERSION, &key, "audit", &rk),
            aad(
                &store,
                3,
                SCHEMA_VERSION,
                &key,
                "",
                &record_key(&k, "order", "1"),
            ),
            aad(&store, 3, SCHEMA_VERSION, &key, "", &[0u8; 16]),
        ] {
            assert!(k.open(&wrong, &sealed).is_err());
        }
    }

    #[test]
    fn the_chain_depends_on_every_earlier_record() {
        let k = keys();
        let (store, key) = ([1u8; ID_LEN], [2u8; ID_LEN]);
        let g = genesis_mac(&k, &store);
        let seal = |seq, prev: &[u8; MAC_LEN], w: &Write| {
            let mut nonces = FreshNonces::draw(1).unwrap();
            seal_record(&k, &store, &key, seq, prev, w, &mut nonces).unwrap()
        };
        let a = seal(1, &g, &audit(1));
        let b = seal(2, &a.mac, &audit(2));
        let b_elsewhere = seal(2, &g, &audit(2));
        assert_ne!(b.mac, b_elsewhere.mac);
        assert_ne!(genesis_mac(&k, &[7u8; ID_LEN]), g, "bound to the store");
    }

    #[test]
    fn record_keys_hide_ids_and_tell_records_apart() {
        let k = keys();
        let a = record_key(&k, "payment", "pay-1");
        assert_eq!(a, record_key(&k, "payment", "pay-1"));
        assert_ne!(a, record_key(&k, "payment", "pay-2"));
        assert_ne!(a, record_key(&k, "order", "pay-1"));
        assert_ne!(a, record_key(&keys(), "payment", "pay-1"));
    }

    #[test]
    fn an_anchor_verifies_only_for_its_store_and_intact() {
        let k = keys();
        let store = [1u8; ID_LEN];
        let mac = [5u8; MAC_LEN];
        let bytes = encode_anchor(&k, &store, 42, &mac);
        let a = decode_anchor(&k, &store, &bytes).unwrap();
        assert_eq!((a.seq, a.mac), (42, mac));
        assert!(decode_anchor(&k, &[2u8; ID_LEN], &bytes).is_err());
        assert!(decode_anchor(&keys(), &store, &bytes).is_err());
        let mut edited = bytes.clone();
        edited[8] ^= 1;
        assert!(decode_anchor(&k, &store, &edited).is_err());
        assert!(decode_anchor(&k, &store, &bytes[..40]).is_err());
    }

    #[test]
    fn sqlite_errors_map_to_typed_store_errors() {
        let e = std::io::Error::from_raw_os_error(ENOSPC);
        assert_eq!(io("write", &e), StoreError::DiskFull);
        assert_eq!(key_error(KeyError::Unavailable), StoreError::Locked);
        assert!(matches!(
            key_error(KeyError::Failed("x".into())),
            StoreError::KeyProviderFailed { .. }
        ));
    }

    /// Records every anchor it is given, in order.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<u64>>);

    impl KeyProvider for Recorder {
        fn key_encryption_key(&self) -> Result<Kek, KeyError> {
            Err(KeyError::Unavailable)
        }
        fn keeps_anchors(&self) -> bool {
            true
        }
        fn save_anchor(&self, _store_id: &str, anchor: &[u8]) -> Result<(), KeyError> {
            let seq = u64::from_be_bytes(anchor[..8].try_into().unwrap());
            self.0.lock().unwrap().push(seq);
            Ok(())
        }
    }

    #[test]
    fn anchors_are_saved_newest_first_never_out_of_order_and_flushed() {
        let saver = AnchorSaver::start(0, None).unwrap();
        let rec = Arc::new(Recorder::default());
        let provider: Arc<dyn KeyProvider> = rec.clone();
        let submit = |seq: u64| {
            saver.submit(PendingAnchor {
                seq,
                encode: Box::new(move || ("s".into(), seq.to_be_bytes().to_vec())),
                provider: Arc::clone(&provider),
            })
        };
        // Out of order (two writers finishing in the other order): the
        // older head is ignored.
        for seq in (1..=500).chain([250, 3]) {
            submit(seq);
        }
        saver.flush();
        let saved = rec.0.lock().unwrap().clone();
        assert_eq!(saved.last(), Some(&500), "flush saves the newest head");
        assert!(saved.windows(2).all(|w| w[0] < w[1]), "{saved:?}");
        assert!(saved.len() < 500, "coalesced: {} saves", saved.len());
        submit(501);
        saver.stop();
        assert_eq!(
            rec.0.lock().unwrap().last(),
            Some(&501),
            "stop saves it too"
        );
    }

    /// Saves anchors while `fail` is false; otherwise fails with a long reason.
    #[derive(Debug, Default)]
    struct Flaky {
        fail: std::sync::atomic::AtomicBool,
    }

    impl KeyProvider for Flaky {
        fn key_encryption_key(&self) -> Result<Kek, KeyError> {
            Err(KeyError::Unavailable)
        }
        fn keeps_anchors(&self) -> bool {
            true
        }
        fn save_anchor(&self, _store_id: &str, _anchor: &[u8]) -> Result<(), KeyError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(KeyError::Failed("é".repeat(300)));
            }
            Ok(())
        }
    }

    #[test]
    fn every_anchor_outcome_is_reported_and_a_new_reporter_hears_the_last() {
        let saver = AnchorSaver::start(4, Some(AnchorReport::Saved { seq: 4 })).unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = Arc::clone(&heard);
        saver.set_reporter(Arc::new(move |r| h.lock().unwrap().push(r)));
        let flaky = Arc::new(Flaky::default());
        let submit = |seq: u64| {
            let provider: Arc<dyn KeyProvider> = flaky.clone();
            saver.submit(PendingAnchor {
                seq,
                encode: Box::new(move || ("s".into(), seq.to_be_bytes().to_vec())),
                provider,
            });
            saver.flush();
        };
        submit(6);
        flaky.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        submit(9);
        let got = heard.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            AnchorReport::Saved { seq: 4 },
            "the open's outcome first"
        );
        assert_eq!(got[1], AnchorReport::Saved { seq: 6 });
        match &got[2] {
            AnchorReport::Failed {
                seq,
                behind,
                reason,
            } => {
                assert_eq!((*seq, *behind), (9, 3), "behind the last saved anchor (6)");
                assert!(reason.starts_with("key provider failure: é"), "{reason}");
                assert!(reason.len() <= ANCHOR_REASON_MAX, "cut: {}", reason.len());
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // A reporter set later hears the latest outcome at once.
        let late = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&late);
        saver.set_reporter(Arc::new(move |r| l.lock().unwrap().push(r)));
        assert_eq!(late.lock().unwrap().as_slice(), &got[2..]);
        saver.stop();
    }

    #[test]
    fn migrations_are_numbered_up_to_the_schema_version() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert!(
                m.contains(&format!("PRAGMA user_version = {}", i + 1)),
                "migration {} sets its version",
                i + 1
            );
        }
    }
    /// A decoding whose open stopped gives up (and so does one whose
    /// records do not apply); otherwise it rebuilds the ledger.
    #[test]
    fn a_snapshot_decoding_stops_when_told_and_on_records_that_do_not_apply() {
        use std::sync::atomic::AtomicBool;
        let body = || Plaintext(postcard::to_allocvec(&vec![audit(1), audit(2)]).unwrap());
        let ledger = decode_snapshot(body(), &AtomicBool::new(false)).unwrap();
        assert_eq!(ledger.audit.last_seq(), 2);
        assert!(decode_snapshot(body(), &AtomicBool::new(true)).is_none());
        let gap = Plaintext(postcard::to_allocvec(&vec![audit(1), audit(3)]).unwrap());
        assert!(decode_snapshot(gap, &AtomicBool::new(false)).is_none());
    }

    /// A snapshot that is authentic (sealed with the store's key, at its
    /// position) but that this build's types cannot decode is not used: the
    /// open, which starts verifying the journal after it while it decodes,
    /// verifies and replays the whole journal instead, and loses nothing.
    #[test]
    fn an_authentic_snapshot_that_does_not_decode_is_replaced_by_the_journal() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!(
                "pos-core-undecodable-snapshot-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let provider: Arc<dyn KeyProvider> =
                Arc::new(crate::crypto::FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
            let open = || SqliteStore::open(dir.join("store.db"), Arc::clone(&provider));
            let s = open().await.unwrap();
            s.apply(&[audit(1), audit(2), audit(3)]).await.unwrap();
            let all = s.load().await.unwrap();
            // Enum variant 200 of `Write` does not exist.
            s.write_snapshot_body(vec![1, 200, 0, 0]).await.unwrap();
            s.apply(&[audit(4)]).await.unwrap();
            s.close().await;

            let s = open().await.unwrap();
            assert_eq!(
                s.records_since_compaction(),
                Some(4),
                "replayed from record 1"
            );
            let mut expected = all;
            expected.push(audit(4));
            let (ledger, records) = s.open_state().await.unwrap();
            assert_eq!(ledger, Ledger::default(), "nothing from the snapshot");
            assert_eq!(records, expected);
            s.close().await;
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
