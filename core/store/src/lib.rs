//! The encrypted SQLite store: [`SqliteStore`] implements [`Store`] on one
//! SQLite file (SPEC section 4 "The store"; `docs/store-recovery.md`).
//!
//! Owns the file format, the migrations, the MAC chain and the open-time
//! checks. The key hierarchy is in [`keys`], the primitives in
//! [`pos_rules::crypto`].
//!
//! # File format (schema 4)
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
//!   (the whole serialised `Write`, AES-256-GCM) and `mac`. Indexed by
//!   `record_key` (schema 5): [`Store::payment_recorded`] answers whether
//!   a payment id was ever taken from it, so the engine keeps no archived
//!   ids in memory.
//! - `snapshot` (schema 2): at most one row, the engine's whole state as of
//!   record `upto_seq` (whose chain MAC is `upto_mac`), encoded with
//!   postcard (binary, bound to this version's types: a snapshot of another
//!   `format` is not used) and sealed under the data key with both in its
//!   associated data. Opening decrypts it and
//!   verifies and replays only the records after it; nothing is deleted, and
//!   [`Store::load`] still verifies the whole journal from the start. A
//!   removed or older snapshot only makes opening replay more.
//! - The journal is the whole history. The engine takes settled history
//!   out of its memory with an `archive` record (schema 4); its records
//!   stay here, and a snapshot holds only what the engine still holds.
//! - The associated data of a record binds it to its table, store, `seq`,
//!   `format`, `key_id`, `kind` (empty from format 3 on; rows of formats 1
//!   and 2 keep the kind they were sealed under, see `row_kind`) and
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
//! the store's anchor thread (`AnchorSaver`): at most one save at a time,
//! the newest head only, and no more often than every [`ANCHOR_INTERVAL`]
//! while writes keep coming; `close` (and drop) saves the last head before
//! returning. So the anchor trails the journal by at most that interval plus
//! one save (never ahead of it); a crash leaves it behind, which is accepted
//! and caught up at the next open. A rollback to a copy taken within that
//! trail is not detected (ADR 0006).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection};

use pos_rules::crypto::{hex, wipe, KeyProvider, ID_LEN, MAC_LEN};
use pos_rules::ledger::{Ledger, Write};
use pos_rules::lifecycle::PaymentId;
use pos_rules::store::{AnchorReporter, BoxFuture, Store, StoreError};

use crate::keys::{DataKey, FreshNonces, StoreKeys};

mod anchor;
mod codec;
mod error;
mod journal;
mod schema;
mod snapshot;

pub mod keys;

pub use self::anchor::ANCHOR_INTERVAL;
use self::anchor::*;
use self::error::*;
use self::journal::*;
use self::schema::*;
use self::snapshot::*;

/// Whether any journal row has this `record_key` (through the index of
/// schema 5).
pub const FIND_RECORD_KEY: &str = "SELECT 1 FROM journal WHERE record_key = ? LIMIT 1";

/// The schema version this library writes and reads.
pub const SCHEMA_VERSION: u32 = 5;

/// The numbered migrations (`migrations/NNNN_*.sql`): entry `n-1` brings
/// the file from version `n-1` to `n` and sets `user_version` to `n`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_meta_and_journal.sql"),
    include_str!("../migrations/0002_snapshot.sql"),
    include_str!("../migrations/0003_kinds_out_of_the_file.sql"),
    include_str!("../migrations/0004_archived_history.sql"),
    include_str!("../migrations/0005_payment_index.sql"),
];

/// The first schema whose records keep their kind only inside the sealed
/// body (their `kind` column is empty and so is the kind in their
/// associated data).
const SEALED_KIND_FORMAT: u32 = 3;

/// The first schema whose snapshots are encoded as this version's are
/// (schema 5 took the archived payment ids out of the snapshot; an older
/// snapshot is not used, and the first open after the upgrade replays the
/// whole journal once).
const SNAPSHOT_ENCODING_SINCE: u32 = 5;

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
        let started = std::time::Instant::now();
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
                tracing::info!(
                    created = !exists,
                    records = p.meta.head_seq,
                    snapshot_at = p.snapshot_seq,
                    elapsed = ?started.elapsed(),
                    "store opened"
                );
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
                tracing::warn!(
                    error = error::kind(&e),
                    "store not opened; the file is left as it is"
                );
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
        tracing::info!("store closed");
        self.registration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// For going to the background: waits for a write cut off earlier,
    /// copies the write-ahead log into the main file as far as no reader
    /// holds it back (a passive checkpoint: it never waits for a reader),
    /// and saves the latest rollback anchor, returning once it is saved or
    /// its failure reported. Everything committed was durable already; this
    /// makes the next open read less log and leaves no anchor pending while
    /// the process may be suspended or killed.
    pub async fn flush_for_background(&self) -> Result<(), StoreError> {
        {
            let mut w = self.writer.lock().await;
            self.settle_interrupted(&mut w).await;
            let conn = w.conn.as_mut().ok_or_else(closed)?;
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        self.anchors.flush();
        Ok(())
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
        let committed = self.committed(&next).await;
        tracing::info!(committed, "settled a write cut off earlier");
        if committed {
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
        tracing::info!(
            upto = upto_seq,
            bytes = ciphertext.len(),
            "snapshot written"
        );
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<Write>, StoreError> {
        let mut writes = Vec::new();
        self.load_streaming(
            &mut |w| {
                writes.push(w);
                Ok(())
            },
            false,
        )
        .await?;
        Ok(writes)
    }

    /// Whether a journal row carries the keyed hash of this payment id
    /// (`record_key`, indexed since schema 5). Every payment record has
    /// one, and it is bound into the row's sealed associated data and its
    /// chain MAC: a row edited to hide an id, or removed, fails the
    /// journal's verification ([`Store::load`]); the whole-store check
    /// ([`Store::verify_each`]: the background check, `verify_store`) also
    /// checks the index against the rows.
    ///
    /// Asked on the writer's connection: the one that holds this store's
    /// file open since it was verified (a reader may be reopened by path),
    /// and that no long read holds (the history reads and the background
    /// check use the readers). The engine asks under its write lock, so the
    /// writer is otherwise idle.
    async fn find_payment(&self, id: &PaymentId) -> Result<bool, StoreError> {
        let key = record_key(&self.keys, "payment", id.as_str());
        let mut w = self.writer.lock().await;
        self.settle_interrupted(&mut w).await;
        let conn = w.conn.as_mut().ok_or_else(closed)?;
        let found: Option<i64> = sqlx::query_scalar(FIND_RECORD_KEY)
            .bind(&key[..])
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }

    /// Reads and verifies the whole journal, handing each record to
    /// `visit`; with `check_index`, then checks the journal's index
    /// against its rows in the same read.
    async fn load_streaming(
        &self,
        visit: &mut (dyn FnMut(Write) -> Result<(), StoreError> + Send),
        check_index: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        let meta = read_meta(&mut tx).await?;
        if meta.store_id != self.store_id || meta.key_id != self.key_id {
            return Err(tampered(0, "the store header changed while open"));
        }
        if !header_verifies(&self.keys, &meta) {
            return Err(tampered(0, "the store header does not verify"));
        }
        // The header names this store and key (checked above).
        let (records, _, _) =
            verify_journal_each(&mut tx, &self.keys, &meta, None, None, visit).await?;
        if check_index {
            // The index the archived-id lookups read (schema 5), against
            // the rows just verified, in the same read: an index rebuilt
            // without an entry would hide a payment id from them with every
            // row and MAC intact.
            let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check(journal)")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            if check != ["ok"] {
                return Err(tampered(
                    0,
                    "the journal's index does not match its records",
                ));
            }
        }
        let _ = tx.commit().await;
        tracing::debug!(
            records,
            check_index,
            "journal verified from its first record"
        );
        Ok(())
    }
}

impl Store for SqliteStore {
    fn schema(&self) -> Option<u32> {
        Some(SCHEMA_VERSION)
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Write>, StoreError>> {
        Box::pin(self.load_all())
    }

    fn load_each<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Write) -> Result<(), StoreError> + Send),
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.load_streaming(visit, false))
    }

    fn verify_each<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Write) -> Result<(), StoreError> + Send),
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.load_streaming(visit, true))
    }

    fn payment_recorded<'a>(
        &'a self,
        id: &'a PaymentId,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.find_payment(id))
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.close())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.flush_for_background())
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

// One open store per file in this process.

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
    use pos_rules::audit::{AuditEntry, AuditKind};
    use pos_rules::clock::Timestamp;
    use pos_rules::crypto::{Kek, KeyError};
    use pos_rules::store::AnchorReport;

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
                Arc::new(crate::keys::FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
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
