//! Byte-layout helpers shared by the header, the journal, the snapshot and
//! the anchor.

use crate::error::corrupt;
use pos_rules::store::StoreError;

pub(crate) fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    <[u8; N]>::try_from(v).map_err(|_| corrupt(&format!("the {what} has the wrong length")))
}

/// Length-prefixes a field (u32, big-endian).
pub(crate) fn lp(out: &mut Vec<u8>, field: &[u8]) {
    let n = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(field);
}
