//! Card data sealed for the processor (SPEC section 4).
//!
//! The reader encrypts what it read from the card to the processor's public
//! key before it leaves the reader; the phone stores and forwards the sealed
//! bytes and holds no key that opens them. This module is the *sealing* side
//! only (used by the simulated reader, and by tests). Opening needs the
//! processor's private key and lives in the processor (`pos-sim` here).
//!
//! Format, version 2 (hybrid public-key encryption, in the spirit of HPKE
//! base mode, with the transaction bound in the clear header):
//!
//! ```text
//! header = 0x02
//!     || str(payment_id) || str(device_id) || amount_minor (i64 LE)
//!     || str(currency) || str(reader_serial) || counter (u64 LE)
//!     || phone_nonce (16) || read_at_ms (i64 LE)
//!     || str(entry_mode) || str(network) || str(last4) || str(fingerprint)
//!     || eph_pub (32) || nonce (12)
//!   str(x) = len (u8) || UTF-8 bytes
//! blob = header || AES-256-GCM(JSON CardSecret { pan, expiry }) || tag (16)
//!
//! shared = X25519(eph_priv, processor_pub)
//! key    = HKDF-SHA256(salt = eph_pub || processor_pub, ikm = shared,
//!                      info = "pos-core card data v2") -> 32 bytes
//! aad    = header || processor_pub
//! ```
//!
//! The header is readable by anyone (the engine checks it against the
//! payment at confirmation) and authenticated by the AEAD: the processor
//! opens the blob only if no byte of it changed, then checks every field
//! against the request it came with ([`CardBinding`]), and refuses a
//! reader counter or an ephemeral key it has seen before. The reader signs
//! the whole blob with its identity key (`reader_trust`), so the engine
//! knows which remembered reader read it.
//!
//! Version 1 (`0x01 || eph_pub || nonce || ciphertext`, bound to nothing)
//! is still produced by [`seal_v1`] for tests of the processor's refusal.
//!
//! The ephemeral key is fresh for every card read, so two reads of the same
//! card never give the same bytes.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::lifecycle::PaymentId;
use crate::money::Money;
use crate::policy::{EntryMode, Network};

/// First byte of a version-1 blob.
pub const SEAL_VERSION: u8 = 1;
/// First byte of a version-2 blob (bound to its payment).
pub const SEAL_VERSION_2: u8 = 2;
/// HKDF `info` for the version-2 content key.
pub const HKDF_INFO_V2: &[u8] = b"pos-core card data v2";
/// Length of the phone's per-payment nonce.
pub const PHONE_NONCE_LEN: usize = 16;

/// What the reader must bind the card read to (sealed card data version 2,
/// `card_seal`): handed to the reader's `take_card`, checked by the engine
/// at `confirm_card_payment` and by the processor when it opens the card data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardChallenge {
    pub payment_id: PaymentId,
    pub device_id: String,
    /// The amount the card is charged, tip included.
    pub amount: Money,
    /// Fresh for this payment: a read made for another payment, or before
    /// this one began, never matches it.
    pub nonce: [u8; PHONE_NONCE_LEN],
}

/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// HKDF `info` for the content key.
pub const HKDF_INFO: &[u8] = b"pos-core card data v1";
/// Header length: version, ephemeral public key, nonce.
pub const HEADER_LEN: usize = 1 + PUBLIC_KEY_LEN + NONCE_LEN;

/// What the card gave, before sealing. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSecret {
    /// The primary account number, digits only.
    pub pan: String,
    /// Expiry as `MMYY`.
    pub expiry: String,
}

impl fmt::Debug for CardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardSecret(<redacted>)")
    }
}

/// The processor's public key that card data is sealed to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessorKey(pub [u8; PUBLIC_KEY_LEN]);

impl fmt::Debug for ProcessorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessorKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Why sealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no randomness available")]
    Random,
    #[error("the processor key is not a valid X25519 public key")]
    BadKey,
    #[error("card data could not be encoded")]
    Encode,
    #[error("sealed card data is malformed or of an unknown version")]
    Malformed,
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// Derives the version-1 AES-256-GCM key both sides use. Public so that
/// the opening side (the processor) derives it the same way from its own
/// X25519 result.
pub fn content_key(
    shared_secret: &[u8],
    eph_pub: &[u8; PUBLIC_KEY_LEN],
    processor_pub: &[u8; PUBLIC_KEY_LEN],
) -> [u8; 32] {
    derive_key(shared_secret, eph_pub, processor_pub, HKDF_INFO)
}

/// Derives the version-2 content key.
pub fn content_key_v2(
    shared_secret: &[u8],
    eph_pub: &[u8; PUBLIC_KEY_LEN],
    processor_pub: &[u8; PUBLIC_KEY_LEN],
) -> [u8; 32] {
    derive_key(shared_secret, eph_pub, processor_pub, HKDF_INFO_V2)
}

fn derive_key(
    shared_secret: &[u8],
    eph_pub: &[u8; PUBLIC_KEY_LEN],
    processor_pub: &[u8; PUBLIC_KEY_LEN],
    info: &[u8],
) -> [u8; 32] {
    let mut salt = [0u8; 2 * PUBLIC_KEY_LEN];
    salt[..PUBLIC_KEY_LEN].copy_from_slice(eph_pub);
    salt[PUBLIC_KEY_LEN..].copy_from_slice(processor_pub);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared_secret);
    let mut key = [0u8; 32];
    // Expanding 32 bytes from SHA-256 cannot fail (limit is 255 × 32).
    if let Ok(okm) = prk.expand(&[info], Len32) {
        let _ = okm.fill(&mut key);
    }
    key
}

/// The associated data both sides bind into the AEAD.
pub fn aad(eph_pub: &[u8; PUBLIC_KEY_LEN], processor_pub: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut a = Vec::with_capacity(1 + 2 * PUBLIC_KEY_LEN);
    a.push(SEAL_VERSION);
    a.extend_from_slice(eph_pub);
    a.extend_from_slice(processor_pub);
    a
}

/// Seals `secret` to `processor` in the version-1 format, bound to nothing.
/// Only for tests of the processor's refusal of unbound card data.
pub fn seal_v1(secret: &CardSecret, processor: &ProcessorKey) -> Result<Vec<u8>, SealError> {
    seal_with(secret, processor, content_key, |eph_pub, nonce| {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.push(SEAL_VERSION);
        header.extend_from_slice(eph_pub);
        header.extend_from_slice(nonce);
        Ok((header, aad(eph_pub, &processor.0)))
    })
}

/// The hybrid encryption both versions share: a fresh ephemeral X25519 key
/// agreed with the processor's, the content key `derive` makes of it, a
/// fresh nonce, AES-256-GCM. `header` gives the bytes before the ciphertext
/// and the associated data, from the ephemeral public key and the nonce.
/// Derives a content key from the X25519 result and both public keys.
type DeriveKey = fn(&[u8], &[u8; PUBLIC_KEY_LEN], &[u8; PUBLIC_KEY_LEN]) -> [u8; 32];

fn seal_with(
    secret: &CardSecret,
    processor: &ProcessorKey,
    derive: DeriveKey,
    header: impl FnOnce(
        &[u8; PUBLIC_KEY_LEN],
        &[u8; NONCE_LEN],
    ) -> Result<(Vec<u8>, Vec<u8>), SealError>,
) -> Result<Vec<u8>, SealError> {
    let rng = SystemRandom::new();
    let eph = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| SealError::Random)?;
    let eph_pub_bytes = eph.compute_public_key().map_err(|_| SealError::Random)?;
    let mut eph_pub = [0u8; PUBLIC_KEY_LEN];
    eph_pub.copy_from_slice(eph_pub_bytes.as_ref());
    let peer = UnparsedPublicKey::new(&X25519, processor.0);
    let mut key =
        agreement::agree_ephemeral(eph, &peer, |shared| derive(shared, &eph_pub, &processor.0))
            .map_err(|_| SealError::BadKey)?;
    let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| SealError::BadKey)?;
    crate::crypto::wipe(&mut key);
    let sealing = LessSafeKey::new(unbound);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
    let (mut out, aad) = header(&eph_pub, &nonce)?;
    let mut body = serde_json::to_vec(secret).map_err(|_| SealError::Encode)?;
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| SealError::Encode)?;
    out.extend_from_slice(&body);
    crate::crypto::wipe(&mut body);
    Ok(out)
}

/// What a version-2 blob is bound to: the transaction, the reader and the
/// card's summary. Readable by anyone; changing any byte of it makes the
/// blob fail to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardBinding {
    pub payment_id: String,
    pub device_id: String,
    /// The amount charged, tip included, in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    pub reader_serial: String,
    /// The reader's transaction counter: strictly increasing per reader.
    pub counter: u64,
    /// Chosen by the phone for this payment (the engine, at
    /// `begin_card_payment`).
    pub phone_nonce: [u8; PHONE_NONCE_LEN],
    /// The reader's time of the read, Unix milliseconds.
    pub read_at_ms: i64,
    pub entry_mode: EntryMode,
    pub network: Network,
    pub last4: String,
    /// The keyed fingerprint of the card number (hex), for R7.
    pub fingerprint: String,
}

/// A version-2 blob, its header read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCardV2 {
    pub binding: CardBinding,
    pub eph_pub: [u8; PUBLIC_KEY_LEN],
    pub nonce: [u8; NONCE_LEN],
    /// Bytes of the header (the AEAD's associated data, with the processor key).
    pub header_len: usize,
}

fn put_str(out: &mut Vec<u8>, v: &str) -> Result<(), SealError> {
    let n = u8::try_from(v.len()).map_err(|_| SealError::Encode)?;
    out.push(n);
    out.extend_from_slice(v.as_bytes());
    Ok(())
}

fn serde_name<T: Serialize>(n: T) -> String {
    serde_json::to_value(n)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn parse_named<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, SealError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| SealError::Malformed)
}

impl CardBinding {
    /// The first field in which this binding differs from the challenge of
    /// the payment it is offered for, or from the card read's own summary
    /// (`None`: it is this read, made for this payment). A reader that
    /// computes no fingerprint binds an empty one. The engine checks it at
    /// confirmation, the phone's reader client as the read arrives.
    pub fn mismatch(
        &self,
        challenge: &CardChallenge,
        card: &crate::ledger::CardRead,
    ) -> Option<&'static str> {
        if self.payment_id != challenge.payment_id.as_str() {
            Some("payment_id")
        } else if self.device_id != challenge.device_id {
            Some("device_id")
        } else if self.amount_minor != challenge.amount.minor_units()
            || self.currency != challenge.amount.currency().code()
        {
            Some("amount")
        } else if self.phone_nonce != challenge.nonce {
            Some("nonce")
        } else if card.reader_serial.as_deref() != Some(self.reader_serial.as_str()) {
            Some("reader_serial")
        } else if self.entry_mode != card.entry_mode {
            Some("entry_mode")
        } else if self.network != card.network {
            Some("network")
        } else if self.last4 != card.last4 {
            Some("last4")
        } else if card.fingerprint.as_deref().unwrap_or("") != self.fingerprint {
            Some("fingerprint")
        } else {
            None
        }
    }

    fn encode_header(
        &self,
        eph_pub: &[u8; PUBLIC_KEY_LEN],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, SealError> {
        let mut h = Vec::with_capacity(192);
        h.push(SEAL_VERSION_2);
        put_str(&mut h, &self.payment_id)?;
        put_str(&mut h, &self.device_id)?;
        h.extend_from_slice(&self.amount_minor.to_le_bytes());
        put_str(&mut h, &self.currency)?;
        put_str(&mut h, &self.reader_serial)?;
        h.extend_from_slice(&self.counter.to_le_bytes());
        h.extend_from_slice(&self.phone_nonce);
        h.extend_from_slice(&self.read_at_ms.to_le_bytes());
        put_str(&mut h, &serde_name(self.entry_mode))?;
        put_str(&mut h, &serde_name(self.network))?;
        put_str(&mut h, &self.last4)?;
        put_str(&mut h, &self.fingerprint)?;
        h.extend_from_slice(eph_pub);
        h.extend_from_slice(nonce);
        Ok(h)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SealError> {
        let end = self.at.checked_add(n).ok_or(SealError::Malformed)?;
        let out = self.bytes.get(self.at..end).ok_or(SealError::Malformed)?;
        self.at = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SealError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn str(&mut self) -> Result<&'a str, SealError> {
        let n = usize::from(self.take(1)?[0]);
        std::str::from_utf8(self.take(n)?).map_err(|_| SealError::Malformed)
    }
}

/// Reads the clear header of a version-2 blob (the engine and the processor
/// both do). Checks the shape only: that the header was not changed is
/// proved by the processor opening the blob, and by the reader's signature.
pub fn parse_v2(blob: &[u8]) -> Result<SealedCardV2, SealError> {
    let mut c = Cursor { bytes: blob, at: 0 };
    if c.take(1)?[0] != SEAL_VERSION_2 {
        return Err(SealError::Malformed);
    }
    let payment_id = c.str()?.to_owned();
    let device_id = c.str()?.to_owned();
    let amount_minor = i64::from_le_bytes(c.array()?);
    let currency = c.str()?.to_owned();
    let reader_serial = c.str()?.to_owned();
    let counter = u64::from_le_bytes(c.array()?);
    let phone_nonce = c.array()?;
    let read_at_ms = i64::from_le_bytes(c.array()?);
    let entry_mode = parse_named(c.str()?)?;
    let network = parse_named(c.str()?)?;
    let last4 = c.str()?.to_owned();
    let fingerprint = c.str()?.to_owned();
    let eph_pub = c.array()?;
    let nonce = c.array()?;
    let header_len = c.at;
    // At least the tag must follow.
    if blob.len() < header_len + 16 {
        return Err(SealError::Malformed);
    }
    Ok(SealedCardV2 {
        binding: CardBinding {
            payment_id,
            device_id,
            amount_minor,
            currency,
            reader_serial,
            counter,
            phone_nonce,
            read_at_ms,
            entry_mode,
            network,
            last4,
            fingerprint,
        },
        eph_pub,
        nonce,
        header_len,
    })
}

/// The associated data of a version-2 blob.
pub fn aad_v2(header: &[u8], processor_pub: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    [header, processor_pub.as_slice()].concat()
}

/// Seals `secret` to `processor`, bound to `binding` (version 2). The result
/// is what the reader hands the phone (`CardRead::sealed_card_data`).
pub fn seal(
    binding: &CardBinding,
    secret: &CardSecret,
    processor: &ProcessorKey,
) -> Result<Vec<u8>, SealError> {
    seal_with(secret, processor, content_key_v2, |eph_pub, nonce| {
        let header = binding.encode_header(eph_pub, nonce)?;
        let aad = aad_v2(&header, &processor.0);
        Ok((header, aad))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_key() -> ProcessorKey {
        // Any 32 bytes are a valid X25519 public key for ring except the
        // all-zero low-order points; use a fixed non-trivial one.
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(9);
        }
        ProcessorKey(k)
    }

    #[test]
    fn sealed_bytes_hide_the_pan_and_differ_each_time() {
        let s = CardSecret {
            pan: "4242424242424242".into(),
            expiry: "1230".into(),
        };
        let a = seal_v1(&s, &some_key()).unwrap();
        let b = seal_v1(&s, &some_key()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a[0], SEAL_VERSION);
        assert!(a.len() > HEADER_LEN + 16);
        let hay = String::from_utf8_lossy(&a);
        assert!(!hay.contains("4242424242424242"));
        assert_eq!(format!("{s:?}"), "CardSecret(<redacted>)");
    }

    #[test]
    fn a_low_order_key_is_refused() {
        let s = CardSecret {
            pan: "4242424242424242".into(),
            expiry: "1230".into(),
        };
        assert_eq!(seal_v1(&s, &ProcessorKey([0; 32])), Err(SealError::BadKey));
        assert_eq!(
            seal(&binding(), &s, &ProcessorKey([0; 32])),
            Err(SealError::BadKey)
        );
    }

    fn binding() -> CardBinding {
        CardBinding {
            payment_id: "pay-1".into(),
            device_id: "till-1".into(),
            amount_minor: 1_000,
            currency: "USD".into(),
            reader_serial: "WP3-1".into(),
            counter: 7,
            phone_nonce: [3; PHONE_NONCE_LEN],
            read_at_ms: 1_700_000_000_000,
            entry_mode: EntryMode::Contactless,
            network: Network::Mastercard,
            last4: "4444".into(),
            fingerprint: "ab12".into(),
        }
    }

    #[test]
    fn a_v2_header_reads_back_what_was_bound() {
        let s = CardSecret {
            pan: "5555555555554444".into(),
            expiry: "1230".into(),
        };
        let blob = seal(&binding(), &s, &some_key()).unwrap();
        let parsed = parse_v2(&blob).unwrap();
        assert_eq!(parsed.binding, binding());
        assert_eq!(blob.len(), parsed.header_len + s.pan.len() + 26 + 16);
        assert!(!String::from_utf8_lossy(&blob).contains("5555555555554444"));
        // Every truncation is a typed error.
        for n in 0..parsed.header_len + 16 {
            assert_eq!(parse_v2(&blob[..n]), Err(SealError::Malformed), "{n}");
        }
        assert_eq!(
            parse_v2(&seal_v1(&s, &some_key()).unwrap()),
            Err(SealError::Malformed)
        );
    }
}
