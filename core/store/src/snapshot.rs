//! The sealed snapshot of the whole state, and its decoding.

use std::sync::Arc;

use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use crate::codec::{fixed, lp};
use crate::error::{corrupt, db_error, tampered};
use crate::keys::StoreKeys;
use crate::{Meta, SCHEMA_VERSION, SNAPSHOT_ENCODING_SINCE};
use pos_rules::crypto::{wipe, MAC_LEN};
use pos_rules::ledger::{Ledger, Write};
use pos_rules::store::StoreError;

/// A verified snapshot.
pub(crate) struct Snapshot {
    pub(crate) upto_seq: u64,
    pub(crate) ledger: Ledger,
}

pub(crate) fn snapshot_aad(
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
pub(crate) struct OpenedSnapshot {
    pub(crate) upto_seq: u64,
    pub(crate) upto_mac: [u8; MAC_LEN],
    pub(crate) body: Plaintext,
}

/// Decrypted bytes, wiped when dropped: on every path, a panic or a task
/// dropped before it ran included.
pub(crate) struct Plaintext(pub(crate) Vec<u8>);

impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Set when dropped: tells a decoding on another thread that nobody waits
/// for it any more.
#[derive(Default)]
pub(crate) struct StopOnDrop(pub(crate) Arc<std::sync::atomic::AtomicBool>);

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
pub(crate) fn decode_snapshot(
    body: Plaintext,
    stop: &std::sync::atomic::AtomicBool,
) -> Option<Ledger> {
    use serde::de::DeserializeSeed;
    let mut ledger = Ledger::default();
    let mut de = postcard::Deserializer::from_bytes(&body.0);
    ApplyEach {
        ledger: &mut ledger,
        stop,
    }
    .deserialize(&mut de)
    .ok()?;
    // Every byte decoded: a body of other types that happened to decode
    // in part is not taken for this state.
    if !de.finalize().ok()?.is_empty() {
        return None;
    }
    Some(ledger)
}

/// Decodes a sequence of records and applies each to the ledger as soon
/// as it is decoded: the records are never all held at once (a snapshot of
/// 10,000 payments would hold them twice, as records and in the ledger).
pub(crate) struct ApplyEach<'a> {
    pub(crate) ledger: &'a mut Ledger,
    pub(crate) stop: &'a std::sync::atomic::AtomicBool,
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
pub(crate) async fn read_snapshot(
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
pub(crate) async fn stored_mac(
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
