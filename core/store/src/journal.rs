//! The journal's records: sealing, record keys, the MAC chain, batched
//! inserts and the verification at open.

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row};

use crate::codec::{fixed, lp};
use crate::error::{corrupt, crypto_failure, db_error, tampered};
use crate::keys::{FreshNonces, MacKey, StoreKeys};
use crate::snapshot::stored_mac;
use crate::{Meta, Verified, KINDS, NONCE_LEN, PAGE, SCHEMA_VERSION, SEALED_KIND_FORMAT};
use pos_rules::crypto::{ct_eq, wipe, MAC_LEN};
use pos_rules::ledger::Write;
use pos_rules::store::StoreError;

pub(crate) fn genesis_mac(keys: &StoreKeys, store_id: &[u8]) -> [u8; MAC_LEN] {
    keys.mac(MacKey::Chain, &[b"pos-core/chain/v1/genesis\0", store_id])
}

/// One sealed journal row, ready to insert.
pub(crate) struct SealedRow {
    pub(crate) seq: u64,
    pub(crate) record_key: [u8; 16],
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) mac: [u8; MAC_LEN],
}

/// The kind column and the id a record replaces earlier records by.
pub(crate) fn identify(w: &Write) -> (&'static str, String) {
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
        Write::Archive(cut) => ("archive", cut.audit_through.to_string()),
        Write::Archived(_) => ("archived", String::new()),
    }
}

pub(crate) fn record_key(keys: &StoreKeys, kind: &str, id: &str) -> [u8; 16] {
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
pub(crate) fn row_kind(
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
pub(crate) fn record_aad(
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

pub(crate) fn chain_mac(
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

pub(crate) fn seal_record(
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
pub(crate) const ROWS_PER_INSERT: usize = 64;

/// The header columns a commit compares (the current values) and sets.
pub(crate) const META_CAS: &str = "UPDATE meta SET kek_id = ?, wrapped_key = ?, head_seq = ?, \
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
pub(crate) async fn insert_rows(
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
pub(crate) async fn verify_journal(
    conn: &mut SqliteConnection,
    keys: &StoreKeys,
    meta: &Meta,
    mac_wanted_at: Option<u64>,
    start: Option<(u64, [u8; MAC_LEN])>,
) -> Result<Verified, StoreError> {
    let mut writes = Vec::new();
    let mut keep = |w: Write| {
        writes.push(w);
        Ok(())
    };
    let (head_seq, head_mac, mac_at) =
        verify_journal_each(conn, keys, meta, mac_wanted_at, start, &mut keep).await?;
    Ok(Verified {
        head_seq,
        head_mac,
        mac_at,
        writes,
    })
}

/// [`verify_journal`], handing each record to `visit` as soon as it is
/// verified and decoded instead of keeping them: the memory it takes does
/// not grow with the journal. An error of `visit` stops it and is
/// returned. Returns the head (seq and MAC) and the MAC asked for.
#[allow(clippy::type_complexity)]
pub(crate) async fn verify_journal_each(
    conn: &mut SqliteConnection,
    keys: &StoreKeys,
    meta: &Meta,
    mac_wanted_at: Option<u64>,
    start: Option<(u64, [u8; MAC_LEN])>,
    visit: &mut (dyn FnMut(Write) -> Result<(), StoreError> + Send),
) -> Result<(u64, [u8; MAC_LEN], Option<[u8; MAC_LEN]>), StoreError> {
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
                visit(write)?;
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
    Ok((seq, prev, mac_at))
}
