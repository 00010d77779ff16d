//! Misuse and attack tests of the encrypted SQLite store (see
//! `docs/store-recovery.md`): every edit an attacker or an accident can make
//! to the files gives its typed error at open, and the store that failed to
//! open is kept byte for byte. Also: nothing in clear on disk, a locked key,
//! a wrong key, a newer schema, key rotation, durability across a crash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use pos_core::audit::{AuditEntry, AuditKind};
use pos_core::clock::{Timestamp, VirtualClock};
use pos_core::crypto::{FileKeyProvider, Kek, KeyError, KeyProvider, SecretKey};
use pos_core::engine::StaffSession;
use pos_core::ledger::{CardRead, OfflinePayment, Order, Tender, Write};
use pos_core::lifecycle::{
    CustomerContact, EmailAddress, OrderId, PaymentId, PaymentState, PhoneNumber, ReceiptChannel,
    StaffId,
};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network, Policy};
use pos_core::sqlite_store::{SqliteStore, SCHEMA_VERSION};
use pos_core::store::{Store, StoreError};
use pos_core::{EngineConfig, PosEngine, PosError};

use pos_test_support as support;
use support::keys::LockableKeys;

const T0: Timestamp = Timestamp(1_800_000_000_000);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pos-core-misuse-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn cents(n: i64) -> Money {
    Money::new(n, usd())
}

fn staff() -> StaffId {
    StaffId::parse("cashier-1").unwrap()
}

fn audit(seq: u64) -> Write {
    Write::Audit(AuditEntry {
        seq,
        at: T0,
        actor: Some(staff()),
        kind: AuditKind::LeftOfflineMode,
        account: None,
    })
}

fn payment(id: &str, pan: &str) -> Write {
    Write::Payment(Box::new(OfflinePayment {
        id: PaymentId::parse(id).unwrap(),
        order_id: OrderId::parse("order-1").unwrap(),
        amount: cents(1_000),
        tip: None,
        card: CardRead {
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            last4: pan[pan.len() - 4..].into(),
            fingerprint: Some(pan.into()),
            reader_model: "Wisepad 3".into(),
            sealed_card_data: format!("PAN={pan};EXP=12/30").into_bytes(),
            reader_serial: Some("SN-1".into()),
            reader_signature: None,
            tap_to_pay_on_phone: false,
        },
        taken_by: staff(),
        taken_at: T0,
        deadline: Timestamp(T0.0 + 86_400_000),
        session_started_at: T0,
        state: PaymentState::Pending,
        online: false,
        account: None,
    }))
}

/// A directory with a key file and a store of six records in three batches.
struct Rig {
    dir: PathBuf,
    db: PathBuf,
    provider: Arc<FileKeyProvider>,
}

impl Rig {
    async fn new(name: &str) -> Rig {
        let dir = temp_dir(name);
        let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
        let rig = Rig {
            db: dir.join("store.db"),
            dir,
            provider,
        };
        let s = rig.open().await.unwrap();
        s.apply(&[audit(1), audit(2)]).await.unwrap();
        s.apply(&[payment("p-1", "4111111111111111"), audit(3)])
            .await
            .unwrap();
        s.apply(&[audit(4), audit(5)]).await.unwrap();
        s.close().await;
        rig
    }

    async fn open(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.db, self.provider.clone()).await
    }

    async fn open_with(&self, p: Arc<dyn KeyProvider>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.db, p).await
    }

    /// Opens, expecting a failure; checks the store was kept unchanged.
    async fn refused(&self) -> StoreError {
        self.refused_with(self.provider.clone()).await
    }

    async fn refused_with(&self, p: Arc<dyn KeyProvider>) -> StoreError {
        let before = files(&self.dir);
        let e = self.open_with(p).await.expect_err("the store opened");
        assert_eq!(
            files(&self.dir),
            before,
            "a store that fails to open is kept as it was ({e})"
        );
        e
    }

    fn anchor_file(&self) -> PathBuf {
        let name = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|n| n.starts_with("kek.anchor-") && !n.ends_with(".tmp"))
            .expect("an anchor file");
        self.dir.join(name)
    }

    fn finish(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every file of the directory: name, length and a digest of its bytes,
/// sorted by name. SQLite's shared-memory index and an empty log, which
/// SQLite may leave beside a file it could not open, hold no data and are
/// left out.
fn files(dir: &Path) -> Vec<(String, usize, u64)> {
    let mut v: Vec<(String, usize, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let len = e.metadata().unwrap().len();
            let no_data = name.ends_with("-shm") || (name.ends_with("-wal") && len == 0);
            (!no_data).then_some(e)
        })
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            // FNV-1a: enough to see a change.
            let digest = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            (e.file_name().into_string().unwrap(), bytes.len(), digest)
        })
        .collect();
    v.sort();
    v
}

async fn raw(db: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap()
}

/// Runs SQL on the file behind the store's back, as an attacker would.
async fn edit(db: &Path, sql: &str) {
    let mut c = raw(db).await;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

async fn blob(db: &Path, seq: i64, column: &str) -> Vec<u8> {
    let mut c = raw(db).await;
    let sql = format!("SELECT {column} FROM journal WHERE seq = ?");
    let v: Vec<u8> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(seq)
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    v
}

async fn set_blob(db: &Path, seq: i64, column: &str, value: Vec<u8>) {
    let mut c = raw(db).await;
    let sql = format!("UPDATE journal SET {column} = ? WHERE seq = ?");
    sqlx::query(AssertSqlSafe(sql))
        .bind(value)
        .bind(seq)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

/// All journal rows as their bytes, for before/after comparisons.
async fn journal_rows(db: &Path) -> Vec<Vec<Vec<u8>>> {
    let mut c = raw(db).await;
    let rows =
        sqlx::query("SELECT record_key, key_id, nonce, ciphertext, mac FROM journal ORDER BY seq")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.unwrap();
    rows.iter()
        .map(|r| (0..5).map(|i| r.get::<Vec<u8>, _>(i)).collect())
        .collect()
}

fn tampered_at(e: &StoreError) -> u64 {
    match e {
        StoreError::Tampered { seq, .. } => *seq,
        other => panic!("expected Tampered, got {other:?}"),
    }
}

/// Gives a fixed key under a chosen id; keeps no anchors.
#[derive(Debug)]
struct FixedKey {
    id: String,
    byte: u8,
}

impl KeyProvider for FixedKey {
    fn key_encryption_key(&self) -> Result<Kek, KeyError> {
        Ok(Kek::new(
            self.id.clone(),
            SecretKey::from_bytes([self.byte; 32]),
        ))
    }
}

// ---------------------------------------------------------------------------
// Edited journals
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_untouched_store_opens_with_every_record() {
    let rig = Rig::new("untouched").await;
    let s = rig.open().await.unwrap();
    let records = s.load().await.unwrap();
    assert_eq!(records.len(), 6);
    assert_eq!(records[2], payment("p-1", "4111111111111111"));
    s.close().await;
    rig.finish();
}

#[tokio::test]
async fn a_flipped_byte_in_a_record_is_tampered() {
    let rig = Rig::new("flip").await;
    let mut ct = blob(&rig.db, 3, "ciphertext").await;
    ct[5] ^= 0x01;
    set_blob(&rig.db, 3, "ciphertext", ct).await;
    assert_eq!(tampered_at(&rig.refused().await), 3);
    rig.finish();
}

#[tokio::test]
async fn a_flipped_byte_in_a_nonce_or_mac_is_tampered() {
    let rig = Rig::new("flip-nonce").await;
    let mut n = blob(&rig.db, 2, "nonce").await;
    n[0] ^= 0x80;
    set_blob(&rig.db, 2, "nonce", n).await;
    assert_eq!(tampered_at(&rig.refused().await), 2);
    rig.finish();

    let rig = Rig::new("flip-mac").await;
    let mut m = blob(&rig.db, 6, "mac").await;
    m[31] ^= 0x01;
    set_blob(&rig.db, 6, "mac", m).await;
    assert_eq!(tampered_at(&rig.refused().await), 6);
    rig.finish();
}

#[tokio::test]
async fn ciphertexts_swapped_between_rows_are_tampered() {
    let rig = Rig::new("swap").await;
    let (n2, c2) = (
        blob(&rig.db, 2, "nonce").await,
        blob(&rig.db, 2, "ciphertext").await,
    );
    let (n4, c4) = (
        blob(&rig.db, 4, "nonce").await,
        blob(&rig.db, 4, "ciphertext").await,
    );
    set_blob(&rig.db, 2, "nonce", n4).await;
    set_blob(&rig.db, 2, "ciphertext", c4).await;
    set_blob(&rig.db, 4, "nonce", n2).await;
    set_blob(&rig.db, 4, "ciphertext", c2).await;
    assert_eq!(tampered_at(&rig.refused().await), 2);
    rig.finish();
}

#[tokio::test]
async fn reordered_records_are_tampered() {
    let rig = Rig::new("reorder").await;
    // Whole rows, MACs included, change places.
    edit(
        &rig.db,
        "UPDATE journal SET seq = 100 WHERE seq = 2;
         UPDATE journal SET seq = 2 WHERE seq = 3;
         UPDATE journal SET seq = 3 WHERE seq = 100;",
    )
    .await;
    assert_eq!(tampered_at(&rig.refused().await), 2);
    rig.finish();
}

#[tokio::test]
async fn a_changed_key_id_is_tampered() {
    let rig = Rig::new("key-id").await;
    set_blob(&rig.db, 4, "key_id", vec![7u8; 16]).await;
    assert_eq!(tampered_at(&rig.refused().await), 4);
    rig.finish();

    // In the header: the header's MAC catches it.
    let rig = Rig::new("key-id-meta").await;
    edit(&rig.db, "UPDATE meta SET key_id = zeroblob(16)").await;
    assert_eq!(tampered_at(&rig.refused().await), 0);
    rig.finish();
}

#[tokio::test]
async fn a_changed_format_version_on_a_record_is_tampered() {
    let rig = Rig::new("format").await;
    edit(&rig.db, "UPDATE journal SET format = 1 WHERE seq = 5").await;
    assert_eq!(tampered_at(&rig.refused().await), 5);
    rig.finish();
}

#[tokio::test]
async fn a_deleted_journal_row_is_tampered() {
    let rig = Rig::new("delete-middle").await;
    edit(&rig.db, "DELETE FROM journal WHERE seq = 3").await;
    let e = rig.refused().await;
    assert_eq!(tampered_at(&e), 3, "{e}");
    rig.finish();

    // The last one: the chain of what is left verifies, the header's head does not.
    let rig = Rig::new("delete-last").await;
    edit(&rig.db, "DELETE FROM journal WHERE seq = 6").await;
    assert_eq!(tampered_at(&rig.refused().await), 6);
    rig.finish();

    // The last one and the header's head moved back with it (a copied MAC):
    // the header's own MAC does not verify.
    let rig = Rig::new("delete-last-and-head").await;
    let mac5 = blob(&rig.db, 5, "mac").await;
    edit(&rig.db, "DELETE FROM journal WHERE seq = 6").await;
    let mut c = raw(&rig.db).await;
    sqlx::query("UPDATE meta SET head_seq = 5, head_mac = ?")
        .bind(mac5)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    assert_eq!(tampered_at(&rig.refused().await), 0);
    rig.finish();
}

#[tokio::test]
async fn an_index_rebuilt_without_a_payment_is_tampered_at_the_next_full_read() {
    let rig = Rig::new("index-swap").await;
    let p1 = PaymentId::parse("p-1").unwrap();
    // The attack: an index built over every row but the payment's, put in
    // the place of the journal's own (SQLite's writable schema). Every
    // row, nonce and MAC is left as it was.
    edit(
        &rig.db,
        "CREATE TABLE shadow (seq INTEGER PRIMARY KEY, record_key BLOB NOT NULL) STRICT; \
         INSERT INTO shadow SELECT seq, record_key FROM journal WHERE seq != 3; \
         CREATE INDEX shadow_by_record_key ON shadow (record_key);",
    )
    .await;
    let mut c = raw(&rig.db).await;
    let root = |name: &'static str| {
        sqlx::query_scalar::<_, i64>("SELECT rootpage FROM sqlite_schema WHERE name = ?").bind(name)
    };
    let ours = root("journal_by_record_key")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let shadow = root("shadow_by_record_key")
        .fetch_one(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PRAGMA writable_schema = ON; \
         UPDATE sqlite_schema SET rootpage = {shadow} WHERE name = 'journal_by_record_key'; \
         UPDATE sqlite_schema SET rootpage = {ours} WHERE name = 'shadow_by_record_key'; \
         PRAGMA writable_schema = OFF;"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();

    let s = rig.open().await.expect("every row still verifies");
    assert!(
        !s.payment_recorded(&p1).await.unwrap(),
        "the attack hides the id from the lookup"
    );
    // The next check of the whole store (the background check,
    // verifyStore) checks the index against the rows.
    let e = s
        .verify_each(&mut |_| Ok(()))
        .await
        .expect_err("an index that lost a row");
    assert_eq!(tampered_at(&e), 0, "{e}");
    s.close().await;
    rig.finish();
}

#[tokio::test]
async fn an_inserted_or_duplicated_row_is_tampered() {
    let rig = Rig::new("insert").await;
    edit(
        &rig.db,
        "INSERT INTO journal SELECT 7, kind, record_key, format, key_id, nonce, ciphertext, mac
         FROM journal WHERE seq = 3",
    )
    .await;
    assert_eq!(tampered_at(&rig.refused().await), 7);
    rig.finish();

    // Outside the sequence (seq 0 would never be replayed): still refused.
    let rig = Rig::new("insert-zero").await;
    edit(
        &rig.db,
        "INSERT INTO journal SELECT 0, kind, record_key, format, key_id, nonce, ciphertext, mac
         FROM journal WHERE seq = 3",
    )
    .await;
    assert!(matches!(rig.refused().await, StoreError::Tampered { .. }));
    rig.finish();
}

#[tokio::test]
async fn a_record_from_another_store_is_tampered() {
    let a = Rig::new("foreign-a").await;
    let b = Rig::new("foreign-b").await;
    for col in ["record_key", "key_id", "nonce", "ciphertext", "mac"] {
        let v = blob(&b.db, 1, col).await;
        set_blob(&a.db, 1, col, v).await;
    }
    assert_eq!(tampered_at(&a.refused().await), 1);
    a.finish();
    b.finish();
}

#[tokio::test]
async fn an_edited_header_is_tampered() {
    let rig = Rig::new("header").await;
    edit(&rig.db, "UPDATE meta SET anchored = 0").await;
    assert_eq!(tampered_at(&rig.refused().await), 0);
    rig.finish();
}

#[tokio::test]
async fn an_edit_behind_an_open_store_is_refused_not_laundered() {
    let rig = Rig::new("behind").await;
    let s = rig.open().await.unwrap();
    // The next write would MAC the header anew: it refuses instead.
    edit(&rig.db, "UPDATE meta SET anchored = 0").await;
    assert_eq!(tampered_at(&s.apply(&[audit(7)]).await.unwrap_err()), 0);
    assert_eq!(tampered_at(&s.load().await.unwrap_err()), 0);
    s.close().await;
    assert_eq!(tampered_at(&rig.refused().await), 0);
    rig.finish();

    // A record removed while open: the next load says so.
    let rig = Rig::new("behind-row").await;
    let s = rig.open().await.unwrap();
    edit(&rig.db, "DELETE FROM journal WHERE seq = 2").await;
    assert_eq!(tampered_at(&s.load().await.unwrap_err()), 2);
    s.close().await;
    rig.finish();
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let rig = Rig::new("wrong-key").await;
    let other = Arc::new(FileKeyProvider::open_or_create(rig.dir.join("other-kek")).unwrap());
    let before = files(&rig.dir);
    assert_eq!(
        rig.open_with(other).await.unwrap_err(),
        StoreError::WrongKey
    );
    assert_eq!(files(&rig.dir), before);

    // A different key under the same id: the wrapped data key does not open.
    let id = rig.provider.key_encryption_key().unwrap().id().to_owned();
    assert_eq!(
        rig.refused_with(Arc::new(FixedKey { id, byte: 9 })).await,
        StoreError::WrongKey
    );
    // The right key still opens it: nothing was lost.
    let s = rig.open().await.unwrap();
    assert_eq!(s.load().await.unwrap().len(), 6);
    s.close().await;
    rig.finish();
}

#[tokio::test]
async fn a_swapped_wrapped_key_is_refused() {
    // Another store's header, wrapped under the same KEK: bound to its own
    // store id, it does not open here.
    let a = Rig::new("wrapped-a").await;
    let b_db = a.dir.join("b.db");
    let b = SqliteStore::open(&b_db, a.provider.clone()).await.unwrap();
    b.close().await;
    let mut c = raw(&b_db).await;
    let wrapped: Vec<u8> = sqlx::query_scalar("SELECT wrapped_key FROM meta")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut c = raw(&a.db).await;
    sqlx::query("UPDATE meta SET wrapped_key = ?")
        .bind(wrapped)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    assert_eq!(a.refused().await, StoreError::WrongKey);
    a.finish();
}

#[tokio::test]
async fn a_locked_key_is_a_typed_locked_error_and_keeps_everything() {
    let rig = Rig::new("locked").await;
    let lockable = Arc::new(LockableKeys::new(
        FileKeyProvider::open_or_create(rig.dir.join("kek")).unwrap(),
        true,
    ));
    let e = rig.refused_with(lockable.clone()).await;
    assert_eq!(e, StoreError::Locked);
    assert_eq!(PosError::from(e), PosError::StoreLocked);
    lockable.set_locked(false);
    let s = rig.open_with(lockable.clone()).await.unwrap();
    assert_eq!(s.load().await.unwrap().len(), 6);
    s.close().await;

    // Creating a store while locked creates nothing.
    let fresh = rig.dir.join("new.db");
    lockable.set_locked(true);
    assert_eq!(
        SqliteStore::open(&fresh, lockable.clone())
            .await
            .unwrap_err(),
        StoreError::Locked
    );
    assert!(!fresh.exists());
    rig.finish();
}

#[tokio::test]
async fn a_missing_key_file_is_a_provider_failure() {
    let rig = Rig::new("no-key").await;
    std::fs::remove_file(rig.dir.join("kek")).unwrap();
    assert!(matches!(
        rig.refused().await,
        StoreError::KeyProviderFailed { .. }
    ));
    rig.finish();
}

#[tokio::test]
async fn key_rotation_rewraps_the_data_key_without_rewriting_records() {
    let rig = Rig::new("rotate").await;
    let rows_before = journal_rows(&rig.db).await;
    let new = Arc::new(FileKeyProvider::open_or_create(rig.dir.join("kek-2")).unwrap());
    let s = rig.open().await.unwrap();
    s.rekey(new.clone()).await.unwrap();
    s.apply(&[audit(7)]).await.unwrap();
    s.close().await;
    let rows_after = journal_rows(&rig.db).await;
    assert_eq!(&rows_after[..6], &rows_before[..], "records not rewritten");
    assert_eq!(rows_after.len(), 7);
    // The old key no longer opens the store; the new one does.
    assert_eq!(rig.refused().await, StoreError::WrongKey);
    let s = rig.open_with(new).await.unwrap();
    let records = s.load().await.unwrap();
    assert_eq!(records.len(), 7);
    assert_eq!(records[6], audit(7));
    s.close().await;
    rig.finish();
}

#[tokio::test]
async fn the_key_file_is_private_and_key_material_is_never_printed() {
    let rig = Rig::new("private").await;
    let key_path = rig.dir.join("kek");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key_bytes = std::fs::read(&key_path).unwrap();
    let key_hex: String = key_bytes[24..].iter().map(|b| format!("{b:02x}")).collect();
    let key_dec = format!("{:?}", &key_bytes[24..]);
    let s = rig.open().await.unwrap();
    let kek = rig.provider.key_encryption_key().unwrap();
    let errors = [
        StoreError::WrongKey.to_string(),
        PosError::from(StoreError::WrongKey).to_string(),
    ];
    for text in [
        format!("{s:?}"),
        format!("{:?}", rig.provider),
        format!("{kek:?}"),
        format!("{:?}", SecretKey::from_bytes([0x5a; 32])),
    ]
    .iter()
    .chain(errors.iter())
    {
        assert!(!text.contains(&key_hex), "{text}");
        assert!(!text.contains(&key_dec[1..20]), "{text}");
        assert!(!text.contains("5a5a"), "{text}");
        assert!(!text.contains("90, 90"), "{text}");
    }
    s.close().await;
    rig.finish();
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_truncated_file_is_corrupt_and_kept() {
    for (name, keep) in [("half", 0usize), ("header", 100), ("empty", 1)] {
        let rig = Rig::new(name).await;
        let bytes = std::fs::read(&rig.db).unwrap();
        let len = match keep {
            0 => bytes.len() / 2,
            1 => 0,
            n => n,
        };
        std::fs::write(&rig.db, &bytes[..len]).unwrap();
        let e = rig.refused().await;
        assert!(matches!(e, StoreError::Corrupt { .. }), "{name}: {e:?}");
        assert_eq!(std::fs::read(&rig.db).unwrap().len(), len, "kept");
        rig.finish();
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_store_is_corrupt_and_kept() {
    let dir = temp_dir("not-a-store");
    let db = dir.join("store.db");
    std::fs::write(&db, b"hello, this is not a database at all, sorry").unwrap();
    let p = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let e = SqliteStore::open(&db, p).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"hello, this is not a database at all, sorry"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_nothing_changes() {
    let rig = Rig::new("newer").await;
    edit(&rig.db, "PRAGMA user_version = 99").await;
    let e = rig.refused().await;
    assert_eq!(
        e,
        StoreError::NewerSchema {
            found: 99,
            supported: SCHEMA_VERSION
        }
    );
    assert!(matches!(PosError::from(e), PosError::StoreIntegrity { .. }));
    rig.finish();
}

#[tokio::test]
async fn the_store_uses_a_write_ahead_log_with_full_sync() {
    let rig = Rig::new("wal").await;
    let s = rig.open().await.unwrap();
    let d = s.durability().await.unwrap();
    assert_eq!(d.journal_mode.to_lowercase(), "wal");
    assert_eq!(d.synchronous, 2, "synchronous = FULL");
    s.close().await;
    rig.finish();
}

#[tokio::test]
async fn a_second_open_of_the_same_file_in_one_process_is_refused() {
    let rig = Rig::new("twice").await;
    let s = rig.open().await.unwrap();
    assert!(matches!(rig.open().await, Err(StoreError::Io(_))));
    s.close().await;
    // Once closed, it opens again.
    rig.open().await.unwrap().close().await;
    rig.finish();
}

// ---------------------------------------------------------------------------
// Rollback
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_store_rolled_back_to_an_older_copy_is_refused() {
    let rig = Rig::new("rollback").await;
    let old = std::fs::read(&rig.db).unwrap();
    let s = rig.open().await.unwrap();
    s.apply(&[audit(7), audit(8)]).await.unwrap();
    s.close().await;
    std::fs::write(&rig.db, &old).unwrap();
    assert_eq!(
        rig.refused().await,
        StoreError::RolledBack {
            found: 6,
            expected: 8
        }
    );
    // A person decides to keep the old copy: it opens, and is anchored anew.
    let s = SqliteStore::open_accepting_rollback(&rig.db, rig.provider.clone())
        .await
        .unwrap();
    assert_eq!(s.load().await.unwrap().len(), 6);
    s.close().await;
    rig.open().await.unwrap().close().await;
    rig.finish();
}

#[tokio::test]
async fn a_copy_with_a_different_history_is_refused() {
    let rig = Rig::new("fork").await;
    let six = std::fs::read(&rig.db).unwrap();
    let s = rig.open().await.unwrap();
    s.apply(&[audit(7), audit(8)]).await.unwrap();
    s.close().await;
    let eight = std::fs::read(&rig.db).unwrap();
    // Back to six records (accepted on purpose), then a different seventh.
    std::fs::write(&rig.db, &six).unwrap();
    let s = SqliteStore::open_accepting_rollback(&rig.db, rig.provider.clone())
        .await
        .unwrap();
    s.apply(&[payment("p-other", "5555555555554444")])
        .await
        .unwrap();
    s.close().await;
    // The copy with eight records is longer, but its seventh is not the anchored one.
    std::fs::write(&rig.db, &eight).unwrap();
    assert_eq!(
        rig.refused().await,
        StoreError::RolledBack {
            found: 8,
            expected: 7
        }
    );
    rig.finish();
}

#[tokio::test]
async fn a_missing_or_edited_anchor_is_refused() {
    let rig = Rig::new("anchor-missing").await;
    std::fs::remove_file(rig.anchor_file()).unwrap();
    assert!(matches!(rig.refused().await, StoreError::Tampered { .. }));
    let s = SqliteStore::open_accepting_rollback(&rig.db, rig.provider.clone())
        .await
        .unwrap();
    s.close().await;
    rig.open().await.unwrap().close().await;
    rig.finish();

    let rig = Rig::new("anchor-edited").await;
    let path = rig.anchor_file();
    let mut a = std::fs::read(&path).unwrap();
    a[8] ^= 1;
    std::fs::write(&path, a).unwrap();
    assert_eq!(tampered_at(&rig.refused().await), 0);
    // A person's decision to trust the file anchors it anew.
    let s = SqliteStore::open_accepting_rollback(&rig.db, rig.provider.clone())
        .await
        .unwrap();
    assert_eq!(s.load().await.unwrap().len(), 6);
    s.close().await;
    rig.open().await.unwrap().close().await;
    rig.finish();
}

#[tokio::test]
async fn without_anchors_a_whole_older_copy_is_not_detected_as_documented() {
    // The documented limit: a provider that keeps no anchors cannot tell a
    // genuine older copy of the file from the current one.
    let dir = temp_dir("no-anchor");
    let db = dir.join("store.db");
    let p: Arc<dyn KeyProvider> = Arc::new(FixedKey {
        id: "fixed".into(),
        byte: 3,
    });
    let s = SqliteStore::open(&db, p.clone()).await.unwrap();
    s.apply(&[audit(1)]).await.unwrap();
    s.close().await;
    let old = std::fs::read(&db).unwrap();
    let s = SqliteStore::open(&db, p.clone()).await.unwrap();
    s.apply(&[audit(2)]).await.unwrap();
    s.close().await;
    std::fs::write(&db, old).unwrap();
    let s = SqliteStore::open(&db, p).await.unwrap();
    assert_eq!(s.load().await.unwrap(), vec![audit(1)]);
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// File modes
// ---------------------------------------------------------------------------

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn store_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [db.to_owned(), with("-wal"), with("-shm")]
}

#[cfg(unix)]
#[tokio::test]
async fn the_store_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::new("modes").await;
    let s = rig.open().await.unwrap();
    s.apply(&[audit(6)]).await.unwrap();
    for f in store_files(&rig.db) {
        assert_eq!(mode(&f), 0o600, "{} while open", f.display());
    }
    s.close().await;
    assert_eq!(mode(&rig.db), 0o600);

    // A store whose files were left readable by others is fixed at open.
    let [db, wal, shm] = store_files(&rig.db);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&wal, b"").unwrap();
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _ = std::fs::remove_file(&shm);
    let s = rig.open().await.unwrap();
    s.apply(&[audit(7)]).await.unwrap();
    for f in store_files(&rig.db) {
        assert_eq!(mode(&f), 0o600, "{} after reopening", f.display());
    }
    assert_eq!(s.load().await.unwrap().len(), 8);
    s.close().await;
    rig.finish();
}

// ---------------------------------------------------------------------------
// Nothing in clear
// ---------------------------------------------------------------------------

const TEST_PANS: &[&str] = &[
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "4000056655665556",
    "3566002020360505",
];
const EMAILS: &[&str] = &[
    "jane.doe@example.com",
    "kenji.sato@example.jp",
    "marie.curie@example.fr",
    "buyer+pos@example.org",
    "x9@example.net",
    "zoe@example.co.uk",
];
const PHONES: &[&str] = &[
    "+14155550123",
    "+33612345678",
    "+819012345678",
    "+442071838750",
    "+61291234567",
    "+4915112345678",
];

fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Every Luhn-valid run of 13 to 19 ASCII digits in `bytes` (and every
/// longer run).
fn luhn_runs(bytes: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let run = &bytes[start..i];
        // A run longer than any card number is reported too: nothing here
        // should ever be a long number in clear.
        if run.len() > 19 || (run.len() >= 13 && luhn_valid(run)) {
            hits.push(String::from_utf8_lossy(run).into_owned());
        }
    }
    hits
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What a scan of the store's files finds in clear.
fn scan(db: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut scanned = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let Ok(bytes) = std::fs::read(PathBuf::from(p)) else {
            continue;
        };
        scanned += 1;
        for needle in TEST_PANS.iter().chain(EMAILS).chain(PHONES) {
            if contains(&bytes, needle.as_bytes()) {
                found.push(format!("{suffix}: {needle}"));
            }
        }
        for run in luhn_runs(&bytes) {
            found.push(format!("{suffix}: Luhn-valid run {run}"));
        }
    }
    assert!(scanned > 0, "nothing to scan");
    found
}

/// The record kinds a journal could hold in clear.
const KINDS: [&str; 8] = [
    "order", "payment", "receipt", "audit", "settings", "session", "reader", "clock",
];

fn kinds_in_clear(db: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for suffix in ["", "-wal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let Ok(bytes) = std::fs::read(PathBuf::from(p)) else {
            continue;
        };
        for kind in KINDS {
            let n = bytes
                .windows(kind.len())
                .filter(|w| *w == kind.as_bytes())
                .count();
            if n > 0 {
                found.push(format!("{suffix}: {kind} x{n}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn record_kinds_are_not_stored_in_clear() {
    let rig = Rig::new("kinds").await;
    let s = rig.open().await.unwrap();
    s.apply(&[
        Write::Order(Order {
            id: OrderId::parse("o-9").unwrap(),
            total: cents(1_000),
            tenders: vec![Tender::Cash {
                amount: cents(1_000),
            }],
            contact: None,
            created_at: T0,
            created_by: staff(),
            updated_at: None,
        }),
        payment("p-2", "5555555555554444"),
        audit(6),
    ])
    .await
    .unwrap();
    assert!(PathBuf::from(format!("{}-wal", rig.db.display())).exists());
    assert_eq!(kinds_in_clear(&rig.db), Vec::<String>::new(), "while open");
    assert_eq!(s.load().await.unwrap().len(), 9);
    s.close().await;
    assert_eq!(kinds_in_clear(&rig.db), Vec::<String>::new(), "after close");
    let s = rig.open().await.unwrap();
    assert_eq!(s.load().await.unwrap().len(), 9);
    s.close().await;
    rig.finish();
}

#[test]
fn the_scanner_finds_what_it_looks_for() {
    let mut bytes = b"abc".to_vec();
    bytes.extend_from_slice(TEST_PANS[2].as_bytes());
    bytes.extend_from_slice(b"xyz");
    assert_eq!(luhn_runs(&bytes), vec![TEST_PANS[2].to_owned()]);
    assert!(luhn_runs(b"4111111111111112").is_empty());
    assert!(luhn_runs(b"411111111111").is_empty(), "12 digits");
    assert_eq!(luhn_runs(b"a12345678901234567890b").len(), 1, "20 digits");
    assert!(contains(b"..jane.doe@example.com..", EMAILS[0].as_bytes()));
    for pan in TEST_PANS {
        assert!(luhn_valid(pan.as_bytes()), "{pan}");
    }
}

#[tokio::test]
async fn nothing_sensitive_is_stored_in_clear() {
    let dir = temp_dir("clear");
    let db = dir.join("store.db");
    let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let store = Arc::new(SqliteStore::open(&db, provider.clone()).await.unwrap());

    // Through the engine: orders with contacts, card payments whose reader
    // (wrongly) hands over the card number in clear, receipts by email and SMS.
    // A vendor reader: its card reads carry no signature.
    let rig = support::Rig::builder()
        .store(store.clone())
        .config(EngineConfig::new(&dir, "till-1", "USD").unwrap())
        .policy(Policy::shopify_pos(usd()).with_enabled(true))
        .reader(support::Reader::vendor("SN-1", "Wisepad 3"))
        .staff(StaffSession {
            staff_id: staff(),
            may_take_offline_payments: true,
        })
        .open()
        .await;
    let engine = &rig.engine;
    for (i, ((pan, email), phone)) in TEST_PANS.iter().zip(EMAILS).zip(PHONES).enumerate() {
        let contact = CustomerContact::parse(Some(email), Some(phone)).unwrap();
        let sale = support::Sale::of(cents(1_000))
            .order_id(format!("order-{i}"))
            .contact(Some(contact))
            .card(CardRead {
                entry_mode: EntryMode::Chip,
                network: Network::Visa,
                last4: pan[pan.len() - 4..].into(),
                fingerprint: Some((*pan).to_owned()),
                reader_model: "Wisepad 3".into(),
                sealed_card_data: format!("{pan}=3012101123").into_bytes(),
                reader_serial: None,
                reader_signature: None,
                tap_to_pay_on_phone: false,
            })
            .reader(rig.reader.clone());
        let order = sale.sell(engine).await.order_id;
        engine
            .request_receipt(
                &order,
                ReceiptChannel::Email(EmailAddress::parse(email).unwrap()),
            )
            .await
            .unwrap();
        engine
            .request_receipt(
                &order,
                ReceiptChannel::Sms(PhoneNumber::parse(phone).unwrap()),
            )
            .await
            .unwrap();
    }
    // Directly too: an order whose tender list names every payment.
    store
        .apply(&[Write::Order(Order {
            id: OrderId::parse("order-direct").unwrap(),
            total: cents(1_000),
            tenders: vec![Tender::Cash {
                amount: cents(1_000),
            }],
            contact: Some(CustomerContact::parse(Some(EMAILS[0]), Some(PHONES[0])).unwrap()),
            created_at: T0,
            created_by: staff(),
            updated_at: None,
        })])
        .await
        .unwrap();

    // The values did reach the store...
    let records = store.load().await.unwrap();
    let text = format!("{:?}", records.len());
    assert_eq!(
        engine.list_payments().unwrap().len(),
        TEST_PANS.len(),
        "{text}"
    );
    let payments: Vec<&OfflinePayment> = records
        .iter()
        .filter_map(|w| match w {
            Write::Payment(p) => Some(&**p),
            _ => None,
        })
        .collect();
    for pan in TEST_PANS {
        assert!(payments
            .iter()
            .any(|p| p.card.fingerprint.as_deref() == Some(*pan)));
    }

    // A snapshot holds them all too (contacts, fingerprints, receipts).
    engine.compact_store().await.unwrap();
    // ...and none of them is on disk in clear, while open (WAL and
    // shared-memory files present) and after close (all in the main file).
    assert!(PathBuf::from(format!("{}-wal", db.display())).exists());
    assert_eq!(scan(&db), Vec::<String>::new());
    engine.close();
    drop(rig);
    store.close().await;
    assert_eq!(scan(&db), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Crash
// ---------------------------------------------------------------------------

const CRASH_ENV: &str = "POS_CORE_STORE_CRASH_DIR";

/// Runs only as the child of [`a_write_acknowledged_before_a_crash_survives`]:
/// writes, and dies the moment the write is acknowledged.
#[tokio::test]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let p = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let s = SqliteStore::open(dir.join("store.db"), p).await.unwrap();
    s.apply(&[payment("p-crash", "4111111111111111"), audit(1)])
        .await
        .unwrap();
    std::process::abort();
}

#[tokio::test]
async fn a_write_acknowledged_before_a_crash_survives() {
    let dir = temp_dir("crash");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--test-threads=1"])
        .env(CRASH_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child was to die");
    // It died with the write in the log, not yet checkpointed.
    assert!(dir.join("store.db-wal").exists());
    let p = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let s = SqliteStore::open(dir.join("store.db"), p).await.unwrap();
    assert_eq!(
        s.load().await.unwrap(),
        vec![payment("p-crash", "4111111111111111"), audit(1)]
    );
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_open_state_hands_over_exactly_what_load_reads_and_only_once() {
    let rig = Rig::new("load-at-open").await;
    let s = rig.open().await.unwrap();
    let (ledger, at_open) = s.open_state().await.unwrap();
    assert_eq!(ledger, pos_core::ledger::Ledger::default(), "no snapshot");
    assert!(!at_open.is_empty());
    assert_eq!(at_open, s.load().await.unwrap());
    // Handed over once: a second call reads (and verifies) the file again.
    edit(&rig.db, "DELETE FROM journal WHERE seq = 2").await;
    assert_eq!(tampered_at(&s.open_state().await.unwrap_err()), 2);
    s.close().await;
    rig.finish();
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

fn rebuild(records: Vec<Write>) -> pos_core::ledger::Ledger {
    let mut l = pos_core::ledger::Ledger::default();
    for w in records {
        l.apply(w).unwrap();
    }
    l
}

/// The state the engine would open with: the store's open state, its
/// records applied.
async fn state_at_open(s: &SqliteStore) -> pos_core::ledger::Ledger {
    let (mut l, records) = s.open_state().await.unwrap();
    for w in records {
        l.apply(w).unwrap();
    }
    l
}

/// A rig whose store has a snapshot after record 6, then records 7-8.
async fn snapshot_rig(name: &str) -> Rig {
    let rig = Rig::new(name).await;
    let s = rig.open().await.unwrap();
    let state = rebuild(s.load().await.unwrap()).snapshot_writes().unwrap();
    s.compact(&state).await.unwrap();
    assert_eq!(s.records_since_compaction(), Some(0));
    s.apply(&[audit(6), audit(7)]).await.unwrap();
    assert_eq!(s.records_since_compaction(), Some(2));
    s.close().await;
    rig
}

#[tokio::test]
async fn an_open_starts_from_the_snapshot_and_rebuilds_what_the_journal_does() {
    let rig = snapshot_rig("snap-ok").await;
    let s = rig.open().await.unwrap();
    assert_eq!(s.records_since_compaction(), Some(2), "the tail after it");
    let (ledger, tail) = s.open_state().await.unwrap();
    let from_snapshot = ledger.snapshot_writes().unwrap();
    assert_eq!(
        from_snapshot.len() + tail.len(),
        6 + 2,
        "the snapshot's 6 records, then 2"
    );
    assert_eq!(tail.len(), 2);
    let mut at_open = from_snapshot;
    at_open.extend(tail);
    assert_eq!(rebuild(at_open), rebuild(s.load().await.unwrap()));
    s.close().await;
    rig.finish();
}

#[tokio::test]
async fn the_open_state_is_the_snapshot_rebuilt_and_the_records_after_it() {
    let rig = snapshot_rig("snap-state").await;
    let s = rig.open().await.unwrap();
    let expected = rebuild(s.load().await.unwrap());
    let (mut ledger, tail) = s.open_state().await.unwrap();
    assert_eq!(tail.len(), 2, "records 7 and 8, after the snapshot");
    assert_ne!(
        ledger,
        pos_core::ledger::Ledger::default(),
        "rebuilt from the snapshot"
    );
    for w in tail {
        ledger.apply(w).unwrap();
    }
    assert_eq!(ledger, expected);
    // Handed over once: then an empty ledger and the whole journal.
    let (ledger, all) = s.open_state().await.unwrap();
    assert_eq!(ledger, pos_core::ledger::Ledger::default());
    assert_eq!(rebuild(all), expected);
    s.close().await;
    rig.finish();
}

#[tokio::test]
async fn an_edited_or_moved_snapshot_is_tampered() {
    for sql in [
        "UPDATE snapshot SET ciphertext = randomblob(length(ciphertext))",
        "UPDATE snapshot SET nonce = randomblob(12)",
        "UPDATE snapshot SET upto_seq = 4",
        "UPDATE snapshot SET upto_seq = 99",
        "UPDATE snapshot SET upto_mac = randomblob(32)",
        "UPDATE snapshot SET key_id = randomblob(length(key_id))",
        "UPDATE snapshot SET format = 1",
    ] {
        let rig = snapshot_rig("snap-edit").await;
        edit(&rig.db, sql).await;
        let e = rig.refused().await;
        assert!(
            matches!(e, StoreError::Tampered { .. } | StoreError::Corrupt { .. }),
            "{sql}: {e:?}"
        );
        rig.finish();
    }
}

#[tokio::test]
async fn a_removed_or_older_snapshot_only_makes_the_open_replay_more() {
    // Removed: the open replays the whole journal, and loses nothing.
    let rig = snapshot_rig("snap-gone").await;
    let s = rig.open().await.unwrap();
    let expected = rebuild(s.load().await.unwrap());
    s.close().await;
    edit(&rig.db, "DELETE FROM snapshot").await;
    let s = rig.open().await.unwrap();
    assert_eq!(s.records_since_compaction(), Some(8));
    assert_eq!(state_at_open(&s).await, expected);
    s.close().await;
    rig.finish();

    // Older (a copy of an earlier snapshot put back): the open replays the
    // longer tail after it, to the same state.
    let rig = snapshot_rig("snap-old").await;
    let mut c = raw(&rig.db).await;
    let old = sqlx::query("SELECT * FROM snapshot")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let old: Vec<(String, Vec<u8>)> = ["nonce", "ciphertext", "upto_mac"]
        .iter()
        .map(|col| ((*col).to_owned(), old.get::<Vec<u8>, _>(*col)))
        .collect();
    let old_seq: i64 = sqlx::query_scalar("SELECT upto_seq FROM snapshot")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let s = rig.open().await.unwrap();
    s.apply(&[audit(8)]).await.unwrap();
    let state = rebuild(s.load().await.unwrap()).snapshot_writes().unwrap();
    s.compact(&state).await.unwrap();
    let expected = rebuild(s.load().await.unwrap());
    s.close().await;
    let mut c = raw(&rig.db).await;
    for (col, v) in &old {
        sqlx::query(AssertSqlSafe(format!("UPDATE snapshot SET {col} = ?")))
            .bind(v.clone())
            .execute(&mut c)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE snapshot SET upto_seq = ?")
        .bind(old_seq)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let s = rig.open().await.unwrap();
    assert_eq!(
        s.records_since_compaction(),
        Some(3),
        "records 7-9 replayed"
    );
    assert_eq!(state_at_open(&s).await, expected);
    s.close().await;
    rig.finish();
}

/// Through the engine: payments, a snapshot (by hand and automatic), more
/// payments; the reopened engine shows exactly what it showed before.
#[tokio::test]
async fn the_engine_reopens_from_its_snapshot_with_the_same_state() {
    let dir = temp_dir("snap-engine");
    let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let open = || async {
        Arc::new(
            SqliteStore::open(dir.join("store.db"), provider.clone())
                .await
                .unwrap(),
        )
    };
    let store = open().await;
    let clock = VirtualClock::new(T0);
    let mut config = EngineConfig::new(&dir, "till-1", "USD").unwrap();
    config.compact_every = 10;
    let engine = PosEngine::open_with(config.clone(), Arc::new(clock.clone()), store.clone())
        .await
        .unwrap();
    support::go_offline(&engine).await;
    for i in 0..7 {
        support::sell_offline(&engine, i, 1_000 + i as i64).await;
        if i == 3 {
            engine.compact_store().await.unwrap();
        }
    }
    let since = store.records_since_compaction().unwrap();
    assert!(
        since < 10,
        "automatic snapshots every 10 records: {since} since the last"
    );
    let before = (
        engine.status().unwrap(),
        engine.list_payments().unwrap(),
        engine.export_audit_csv().unwrap(),
    );
    engine.close();
    drop(engine);
    store.close().await;
    drop(store);
    let store = open().await;
    let engine = PosEngine::open_with(config, Arc::new(clock), store.clone())
        .await
        .unwrap();
    let after = (
        engine.status().unwrap(),
        engine.list_payments().unwrap(),
        engine.export_audit_csv().unwrap(),
    );
    assert_eq!(after.0.pending_offline_payments, 7);
    assert_eq!(after.1, before.1);
    assert_eq!(after.2, before.2);
    assert_eq!(after.0.totals, before.0.totals);
    // The whole journal verifies and replays to the state opened from the
    // snapshot; an edit in the history before the snapshot is found.
    engine.verify_store().await.unwrap();
    edit(
        &dir.join("store.db"),
        "UPDATE journal SET ciphertext = randomblob(length(ciphertext)) WHERE seq = 2",
    )
    .await;
    assert!(matches!(
        engine.verify_store().await,
        Err(PosError::StoreIntegrity { .. })
    ));
    engine.close();
    drop(engine);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn history_before_the_snapshot_is_checked_at_open_where_cheap_and_by_load() {
    // The first record, or the one the snapshot ends at: refused at open.
    for (sql, at) in [
        ("DELETE FROM journal WHERE seq = 1", 1),
        ("DELETE FROM journal WHERE seq = 6", 6),
        ("UPDATE journal SET mac = randomblob(32) WHERE seq = 6", 6),
    ] {
        let rig = snapshot_rig("snap-history").await;
        edit(&rig.db, sql).await;
        assert_eq!(tampered_at(&rig.refused().await), at, "{sql}");
        rig.finish();
    }
    // A record in the middle of the history: the open starts from the
    // snapshot (the state is whole), and the full verification says so.
    let rig = snapshot_rig("snap-middle").await;
    edit(
        &rig.db,
        "UPDATE journal SET ciphertext = randomblob(length(ciphertext)) WHERE seq = 3",
    )
    .await;
    let s = rig.open().await.unwrap();
    assert_eq!(tampered_at(&s.load().await.unwrap_err()), 3);
    s.close().await;
    rig.finish();
}

/// A batch of more rows than one INSERT statement carries (forwarding
/// rounds, a copied store) commits whole; after an edit behind the store's
/// back it commits nothing at all.
#[tokio::test]
async fn a_large_batch_commits_whole_or_not_at_all() {
    let rig = Rig::new("large").await;
    let s = rig.open().await.unwrap();
    let batch: Vec<Write> = (6..=205).map(audit).collect();
    s.apply(&batch).await.unwrap();
    assert_eq!(s.load().await.unwrap().len(), 6 + 200);
    edit(&rig.db, "UPDATE meta SET anchored = 0").await;
    let before = journal_rows(&rig.db).await;
    let more: Vec<Write> = (206..=405).map(audit).collect();
    assert_eq!(tampered_at(&s.apply(&more).await.unwrap_err()), 0);
    assert_eq!(journal_rows(&rig.db).await, before, "nothing was written");
    s.close().await;
    edit(&rig.db, "UPDATE meta SET anchored = 1").await;
    let s = rig.open().await.unwrap();
    assert_eq!(s.load().await.unwrap().len(), 206);
    s.apply(&more).await.unwrap();
    s.close().await;
    let s = rig.open().await.unwrap();
    assert_eq!(s.load().await.unwrap().len(), 406);
    s.close().await;
    rig.finish();
}

/// Keeps the anchor it was given when the store was created, then fails to
/// save any other (a keystore that stays locked in the background).
#[derive(Debug)]
struct FirstAnchorOnly {
    inner: FileKeyProvider,
    saved_once: AtomicBool,
}

impl KeyProvider for FirstAnchorOnly {
    fn key_encryption_key(&self) -> Result<Kek, KeyError> {
        self.inner.key_encryption_key()
    }
    fn keeps_anchors(&self) -> bool {
        true
    }
    fn save_anchor(&self, store_id: &str, anchor: &[u8]) -> Result<(), KeyError> {
        if self.saved_once.swap(true, Ordering::SeqCst) {
            return Err(KeyError::Unavailable);
        }
        self.inner.save_anchor(store_id, anchor)
    }
    fn load_anchor(&self, store_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        self.inner.load_anchor(store_id)
    }
}

/// An anchor left at the store's creation (record 0) with a snapshot after
/// it: behind, not a rollback.
#[tokio::test]
async fn an_anchor_from_creation_before_a_snapshot_is_behind_not_a_rollback() {
    let dir = temp_dir("anchor-zero");
    let provider = Arc::new(FirstAnchorOnly {
        inner: FileKeyProvider::open_or_create(dir.join("kek")).unwrap(),
        saved_once: AtomicBool::new(false),
    });
    let db = dir.join("store.db");
    let s = SqliteStore::open(&db, provider.clone()).await.unwrap();
    s.apply(&[audit(1), audit(2)]).await.unwrap();
    let state = rebuild(s.load().await.unwrap()).snapshot_writes().unwrap();
    s.compact(&state).await.unwrap();
    s.apply(&[audit(3)]).await.unwrap();
    s.close().await;
    let s = SqliteStore::open(&db, provider)
        .await
        .expect("opens: the anchor is only behind");
    assert_eq!(s.load().await.unwrap().len(), 3);
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Saves anchors through a key file until told to fail.
#[derive(Debug)]
struct SaveSwitch {
    inner: FileKeyProvider,
    fail: AtomicBool,
}

impl KeyProvider for SaveSwitch {
    fn key_encryption_key(&self) -> Result<Kek, KeyError> {
        self.inner.key_encryption_key()
    }
    fn keeps_anchors(&self) -> bool {
        true
    }
    fn save_anchor(&self, store_id: &str, anchor: &[u8]) -> Result<(), KeyError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(KeyError::Failed("keystore write refused".into()));
        }
        self.inner.save_anchor(store_id, anchor)
    }
    fn load_anchor(&self, store_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        self.inner.load_anchor(store_id)
    }
}

struct Heard(std::sync::Mutex<std::sync::mpsc::Sender<pos_core::PosEvent>>);

impl pos_core::EventListener for Heard {
    fn on_event(&self, event: pos_core::PosEvent) {
        let _ = self.0.lock().unwrap().send(event);
    }
}

/// Polls `f` until it holds (the anchor is saved on its own thread), for up
/// to a minute: only a bound on a hang.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < limit, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A failed anchor save is an event (once per run of failures) and shows in
/// the engine's status, with how far the anchor trails and when it was last
/// saved; a failure at open shows too. A store that keeps no anchor says so.
#[tokio::test]
async fn a_failed_anchor_save_is_an_event_and_shows_in_the_status() {
    use pos_core::engine::AnchorStatus;
    use pos_core::PosEvent;
    let dir = temp_dir("anchor-fails");
    let provider = Arc::new(SaveSwitch {
        inner: FileKeyProvider::open_or_create(dir.join("kek")).unwrap(),
        fail: AtomicBool::new(false),
    });
    let db = dir.join("store.db");
    let config = EngineConfig::new(&dir, "till-1", "USD").unwrap();
    let clock = VirtualClock::new(T0);
    let store = Arc::new(SqliteStore::open(&db, provider.clone()).await.unwrap());
    let engine = PosEngine::open_with(config.clone(), Arc::new(clock.clone()), store.clone())
        .await
        .unwrap();
    let ok_at = |at: Timestamp| AnchorStatus {
        failing: false,
        failures: 0,
        behind: 0,
        last_saved_at: Some(at),
        last_error: None,
    };
    assert_eq!(
        engine.status().unwrap().anchor,
        Some(ok_at(T0)),
        "current at open"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let _sub = engine
        .subscribe(Arc::new(Heard(std::sync::Mutex::new(tx))))
        .unwrap();

    clock.advance(std::time::Duration::from_secs(60));
    provider.fail.store(true, Ordering::SeqCst);
    support::go_offline(&engine).await;
    let failed = loop {
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("an AnchorSaveFailed event");
        if matches!(e, PosEvent::AnchorSaveFailed { .. }) {
            break e;
        }
    };
    let PosEvent::AnchorSaveFailed { reason, behind } = failed else {
        unreachable!()
    };
    assert_eq!(reason, "key provider failure: keystore write refused");
    assert!(behind >= 1, "{behind}");
    let status = engine.status().unwrap().anchor.unwrap();
    assert!(status.failing && status.failures >= 1, "{status:?}");
    assert!(status.behind >= behind, "{status:?}");
    // The last good save: the open's (its anchor may reach the provider
    // just after the clock moved, before saves were made to fail).
    let minute = T0.plus(std::time::Duration::from_secs(60));
    assert!(
        status.last_saved_at.is_some_and(|t| t == T0 || t == minute),
        "{status:?}"
    );
    assert_eq!(status.last_error.as_deref(), Some(reason.as_str()));

    // More failing saves send no second event; the next good save clears it.
    support::sell_offline(&engine, 1, 1_000).await;
    eventually("a second failure", || {
        engine.status().unwrap().anchor.unwrap().behind > status.behind
    })
    .await;
    clock.advance(std::time::Duration::from_secs(60));
    provider.fail.store(false, Ordering::SeqCst);
    support::sell_offline(&engine, 2, 1_000).await;
    eventually("a good save", || {
        !engine.status().unwrap().anchor.unwrap().failing
    })
    .await;
    let healed = engine.status().unwrap().anchor.unwrap();
    assert_eq!(
        (healed.failures, healed.behind, healed.last_saved_at),
        (0, 0, Some(Timestamp(T0.0 + 120_000)))
    );
    assert_eq!(healed.last_error.as_deref(), Some(reason.as_str()), "kept");
    engine.close();
    let failures = rx
        .iter()
        .filter(|e| matches!(e, PosEvent::AnchorSaveFailed { .. }))
        .count();
    assert_eq!(failures, 0, "one event for the whole run of failures");
    drop(engine);
    store.close().await;
    drop(store);

    // Records written while saves fail leave the anchor behind; the open
    // cannot catch it up either, and the status says so from the start.
    let store = Arc::new(SqliteStore::open(&db, provider.clone()).await.unwrap());
    let engine = PosEngine::open_with(config.clone(), Arc::new(clock.clone()), store.clone())
        .await
        .unwrap();
    provider.fail.store(true, Ordering::SeqCst);
    support::sign_in_and_lose_the_network(&engine).await;
    support::sell_offline(&engine, 3, 1_000).await;
    engine.close();
    drop(engine);
    store.close().await;
    drop(store);
    let store = Arc::new(SqliteStore::open(&db, provider.clone()).await.unwrap());
    let engine = PosEngine::open_with(config, Arc::new(clock.clone()), store.clone())
        .await
        .unwrap();
    let at_open = engine.status().unwrap().anchor.unwrap();
    assert!(at_open.failing && at_open.failures == 1, "{at_open:?}");
    assert!(at_open.behind >= 2, "{at_open:?}");
    assert_eq!(at_open.last_saved_at, None);
    engine.close();
    drop(engine);
    provider.fail.store(false, Ordering::SeqCst);
    store.close().await;
    drop(store);

    let memory = PosEngine::open_with(
        EngineConfig::new(&dir, "till-2", "USD").unwrap(),
        Arc::new(clock),
        Arc::new(pos_core::store::MemoryStore::new()),
    )
    .await
    .unwrap();
    assert_eq!(
        memory.status().unwrap().anchor,
        None,
        "a memory store keeps no anchor"
    );
    memory.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A write whose caller gives up at once (its future dropped at the first
/// await, while sqlx's SQLite thread runs the transaction): whether it
/// landed or not, the store stays whole and the next writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_half_way_leaves_no_transaction_open() {
    let rig = Rig::new("dropped").await;
    let s = rig.open().await.unwrap();
    for n in 0..20u64 {
        let batch: Vec<Write> = (0..3).map(|k| audit(100 + n * 3 + k)).collect();
        let _ = tokio::time::timeout(std::time::Duration::ZERO, s.apply(&batch)).await;
        // The next write settles the dropped one first.
        s.apply(&[audit(1_000 + n)]).await.unwrap();
    }
    let records = s.load().await.unwrap().len();
    assert!((6 + 20..=6 + 20 * 4).contains(&records), "{records}");
    s.close().await;
    let s = rig.open().await.unwrap();
    assert_eq!(
        s.load().await.unwrap().len(),
        records,
        "reopens with the same records"
    );
    s.close().await;
    rig.finish();
}

/// A record of the history edited before a snapshot is found by the
/// verification the engine runs by itself when idle after the snapshot,
/// and reported as an event; the engine keeps working meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_edited_before_a_snapshot_is_reported_by_the_idle_verification() {
    use pos_core::{EventListener, PosEvent};
    use std::time::Duration;
    struct Collect(std::sync::Mutex<std::sync::mpsc::Sender<PosEvent>>);
    impl EventListener for Collect {
        fn on_event(&self, e: PosEvent) {
            let _ = self.0.lock().unwrap().send(e);
        }
    }
    let dir = temp_dir("idle-verify");
    let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let store = Arc::new(
        SqliteStore::open(dir.join("store.db"), provider.clone())
            .await
            .unwrap(),
    );
    let mut config = EngineConfig::new(&dir, "till-1", "USD").unwrap();
    config.compact_every = 10;
    let engine = PosEngine::open_with(config, Arc::new(VirtualClock::new(T0)), store.clone())
        .await
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let _sub = engine
        .subscribe(Arc::new(Collect(std::sync::Mutex::new(tx))))
        .unwrap();
    support::go_offline(&engine).await;
    // A snapshot of an intact store: verified, nothing reported.
    support::sell_offline(&engine, 0, 1_000).await;
    engine.compact_store().await.unwrap();
    let failed = |timeout: Duration| loop {
        match rx.recv_timeout(timeout) {
            Ok(PosEvent::StoreVerificationFailed { reason }) => break Some(reason),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert_eq!(failed(Duration::from_secs(3)), None);
    edit(
        &dir.join("store.db"),
        "UPDATE journal SET ciphertext = randomblob(length(ciphertext)) WHERE seq = 2",
    )
    .await;
    // More sales: the next automatic snapshot (every 10 records) is
    // followed, once the engine is idle, by the verification.
    for i in 1..6 {
        support::sell_offline(&engine, i, 1_000 + i as i64).await;
    }
    let reason = failed(Duration::from_secs(30)).expect("no StoreVerificationFailed event");
    assert!(!reason.is_empty());
    // The engine is untouched and still takes payments.
    support::sell_offline(&engine, 9, 900).await;
    assert_eq!(engine.status().unwrap().pending_offline_payments, 7);
    engine.close();
    drop(engine);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_store_opens_only_under_the_device_id_its_payments_were_taken_under() {
    let dir = temp_dir("device-bound");
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let db = dir.join("store.db");
    let clock = VirtualClock::new(T0);
    let open = |device: &'static str| {
        let (db, keys, dir, clock) = (db.clone(), keys.clone(), dir.clone(), clock.clone());
        async move {
            let store = Arc::new(SqliteStore::open(&db, keys).await.unwrap());
            let config = EngineConfig::new(&dir, device, "USD").unwrap();
            let engine = PosEngine::open_with(config, Arc::new(clock), store.clone()).await;
            (engine, store)
        }
    };
    let (engine, store) = open("till-1").await;
    let engine = engine.unwrap();
    support::go_offline(&engine).await;
    let paid = support::sell_offline(&engine, 1, 1_000).await;
    engine.close();
    drop(engine);
    store.close().await;
    let records = {
        let s = SqliteStore::open(&db, keys.clone()).await.unwrap();
        let n = s.load().await.unwrap().len();
        s.close().await;
        n
    };

    // Under another device id its payments would be forwarded and looked up
    // under ids the processor never saw: refused, and nothing is written.
    let (refused, store) = open("till-2").await;
    match refused {
        Err(PosError::InvalidConfig { reason }) => assert!(reason.contains("till-1"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.load().await.unwrap().len(), records);
    store.close().await;

    let (engine, store) = open("till-1").await;
    let engine = engine.unwrap();
    assert!(engine.list_payments().unwrap().iter().any(|p| p.id == paid));
    engine.close();
    drop(engine);
    store.close().await;
}

#[tokio::test]
async fn close_and_release_leaves_the_files_to_the_app() {
    let dir = temp_dir("release");
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let db = dir.join("store.db");
    let store = Arc::new(SqliteStore::open(&db, keys).await.unwrap());
    let config = EngineConfig::new(&dir, "till-1", "USD").unwrap();
    let engine = PosEngine::open_with(config, Arc::new(VirtualClock::new(T0)), store)
        .await
        .unwrap();
    support::go_offline(&engine).await;
    support::sell_offline(&engine, 1, 1_000).await;
    let wal = dir.join("store.db-wal");
    assert!(
        wal.exists(),
        "the log holds the latest records while it runs"
    );
    engine.close_and_release().await;
    // The log was written back into the file and removed: a copy of the
    // file alone is the whole store, and nothing writes to it any more.
    assert!(!wal.exists());
    assert!(matches!(engine.status(), Err(PosError::Closed)));
}
