//! Connections, creation, migrations and the store header (`meta`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};

use crate::anchor::{anchor_failure, decode_anchor, encode_anchor};
use crate::codec::{fixed, lp};
use crate::error::{corrupt, crypto_failure, db_error, io, key_error, tampered};
use crate::journal::{genesis_mac, verify_journal};
use crate::keys::{sync_parent, DataKey, MacKey, StoreKeys};
use crate::snapshot::{decode_snapshot, read_snapshot, stored_mac, Snapshot, StopOnDrop};
use crate::{Meta, OpenedState, CANARY, MIGRATIONS, SCHEMA_VERSION, SEALED_KIND_FORMAT};
use pos_rules::crypto::{hex, random_array, wipe, Kek, KeyProvider, ID_LEN, MAC_LEN};
use pos_rules::store::{AnchorReport, StoreError};

/// What `prepare` learnt from a verified store.
pub(crate) struct Prepared {
    pub(crate) store_id: [u8; ID_LEN],
    pub(crate) key_id: [u8; ID_LEN],
    pub(crate) data_key: DataKey,
    pub(crate) keys: StoreKeys,
    /// The header as verified (and possibly rewritten) at open.
    pub(crate) meta: Meta,
    /// Where the snapshot the open started from ends (0: none).
    pub(crate) snapshot_seq: u64,
    /// The state verified and decoded at open, for the first `load`.
    pub(crate) opened: OpenedState,
    /// The position the provider's anchor names after the open, and what
    /// the open found or did about it (`None`: the provider keeps none).
    pub(crate) anchor: (u64, Option<AnchorReport>),
}

/// Options that never read the database at connect time, so that a
/// damaged file fails on a connection this store holds and closes (a
/// failure inside sqlx's connect would close it in the background).
pub(crate) fn base_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(5))
        .pragma("fullfsync", "ON")
        .pragma("checkpoint_fullfsync", "ON")
        .disable_statement_logging()
}

/// The readers: read-only, created only once the store verified.
pub(crate) fn reader_options(path: &Path) -> SqliteConnectOptions {
    base_options(path)
        .synchronous(SqliteSynchronous::Full)
        .read_only(true)
}

pub(crate) async fn connect(path: &Path, create: bool) -> Result<SqliteConnection, StoreError> {
    base_options(path)
        .create_if_missing(create)
        .connect()
        .await
        .map_err(db_error)
}

/// `synchronous=FULL`, explicitly (SQLite's default may be changed at build
/// time): with WAL, a commit is durable once it returns.
pub(crate) async fn set_full_sync(conn: &mut SqliteConnection) -> Result<(), StoreError> {
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
pub(crate) async fn prepare(
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
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "migrating the store's schema"
        );
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
        tracing::warn!("the snapshot was not rebuilt: the whole journal is replayed instead");
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
        if accept_rollback {
            tracing::warn!(
                records = v.head_seq,
                "store accepted as it is (a person's decision): anchored anew"
            );
        }
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
pub(crate) fn unlock(kek: &Kek, meta: &Meta) -> Result<(DataKey, StoreKeys), StoreError> {
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

pub(crate) async fn set_wal(conn: &mut SqliteConnection) -> Result<(), StoreError> {
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

pub(crate) async fn migrate(conn: &mut SqliteConnection, from: u32) -> Result<(), StoreError> {
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

pub(crate) async fn run_migrations(
    conn: &mut SqliteConnection,
    from: u32,
) -> Result<(), StoreError> {
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
pub(crate) async fn create(path: &Path, provider: &dyn KeyProvider) -> Result<(), StoreError> {
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

pub(crate) async fn initialise(
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
pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
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
pub(crate) fn restrict_modes(path: &Path) {
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

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(crate) async fn read_meta(conn: &mut SqliteConnection) -> Result<Meta, StoreError> {
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
pub(crate) async fn read_current_meta(
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

pub(crate) async fn write_meta(conn: &mut SqliteConnection, meta: &Meta) -> Result<(), StoreError> {
    update_meta(meta)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(crate) fn update_meta(
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

pub(crate) fn header_bytes(meta: &Meta) -> Vec<u8> {
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

pub(crate) fn header_mac(keys: &StoreKeys, meta: &Meta) -> [u8; MAC_LEN] {
    keys.mac(MacKey::Header, &[&header_bytes(meta)])
}

pub(crate) fn header_verifies(keys: &StoreKeys, meta: &Meta) -> bool {
    keys.verify(MacKey::Header, &[&header_bytes(meta)], &meta.meta_mac)
}

pub(crate) fn wrap_aad(store_id: &[u8], kek_id: &str) -> Vec<u8> {
    let mut a = b"pos-core/wrap/v1\0".to_vec();
    lp(&mut a, store_id);
    lp(&mut a, kek_id.as_bytes());
    a
}

pub(crate) fn canary_aad(store_id: &[u8], key_id: &[u8]) -> Vec<u8> {
    let mut a = b"pos-core/canary/v1\0".to_vec();
    lp(&mut a, store_id);
    lp(&mut a, key_id);
    a
}
