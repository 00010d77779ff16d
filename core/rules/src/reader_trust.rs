//! Who a card reader is, and how the engine knows it (SPEC section 4).
//!
//! Every reader of the open profile holds an Ed25519 **identity key**. Its
//! maker (or the acquirer that registers readers) signs a
//! [`ReaderCertificate`] binding the reader's serial, its model and that key;
//! the engine trusts the makers' keys listed in the policy
//! (`Policy::reader_authorities`). So the model that R11 checks is the one
//! the certificate names, never the string a reader reports about itself.
//!
//! The identity key signs, each under its own context label (so no
//! signature made for one purpose is accepted for another):
//! - the link handshake's transcript ([`HANDSHAKE_CONTEXT`], `pos-reader`'s
//!   `secure` module), which proves the phone talks to the remembered reader;
//! - every sealed card read ([`CARD_CONTEXT`], over the whole sealed blob),
//!   which lets the engine check, at `confirm_card_payment`, that the card
//!   came from a remembered reader and was read for this very payment.
//!
//! Certificate format (version 1), all lengths in bytes:
//!
//! ```text
//! 0x01 || len(serial) u8 || serial || len(model) u8 || model
//!      || reader identity key (32) || authority key (32)
//!      || Ed25519 signature by the authority (64) over
//!         "pos-reader certificate v1" || 0x00 || every byte before it
//! ```

use std::fmt;

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Context of a certificate signature.
pub const CERTIFICATE_CONTEXT: &[u8] = b"pos-reader certificate v1";
/// Context of a card-read signature.
pub const CARD_CONTEXT: &[u8] = b"pos-reader card v2";
/// Context of the responder's handshake signature.
pub const HANDSHAKE_CONTEXT: &[u8] = b"pos-reader handshake v2";
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Certificate format version.
pub const CERTIFICATE_VERSION: u8 = 1;
/// Longest serial or model a certificate carries.
pub const MAX_NAME_LEN: usize = 64;

/// Why a certificate or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("the reader certificate is malformed")]
    Malformed,
    #[error("the reader certificate is not signed by a trusted reader authority")]
    UntrustedAuthority,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("a key could not be created")]
    Key,
}

/// A reader's certificate: its serial, model and identity key, signed by a
/// reader authority.
#[derive(Clone, PartialEq, Eq)]
pub struct ReaderCertificate {
    pub serial: String,
    pub model: String,
    pub public_key: [u8; PUBLIC_KEY_LEN],
    pub authority: [u8; PUBLIC_KEY_LEN],
    signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for ReaderCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderCertificate")
            .field("serial", &self.serial)
            .field("model", &self.model)
            .field("public_key", &short_hex(&self.public_key))
            .finish_non_exhaustive()
    }
}

fn short_hex(b: &[u8]) -> String {
    crate::crypto::hex(&b[..b.len().min(4)]) + "…"
}

fn name_ok(v: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

impl ReaderCertificate {
    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.serial.len() + self.model.len() + 64);
        out.push(CERTIFICATE_VERSION);
        out.push(self.serial.len() as u8);
        out.extend_from_slice(self.serial.as_bytes());
        out.push(self.model.len() as u8);
        out.extend_from_slice(self.model.as_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&self.authority);
        out
    }

    /// The certificate's bytes (what the reader sends in the handshake and
    /// the engine stores for a remembered reader).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads a certificate's bytes; checks the shape only (see
    /// [`ReaderCertificate::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<ReaderCertificate, TrustError> {
        let mut r = Cursor(bytes);
        if r.u8()? != CERTIFICATE_VERSION {
            return Err(TrustError::Malformed);
        }
        let serial = r.name()?;
        let model = r.name()?;
        let public_key = r.array::<PUBLIC_KEY_LEN>()?;
        let authority = r.array::<PUBLIC_KEY_LEN>()?;
        let signature = r.array::<SIGNATURE_LEN>()?;
        if !r.0.is_empty() {
            return Err(TrustError::Malformed);
        }
        Ok(ReaderCertificate {
            serial,
            model,
            public_key,
            authority,
            signature,
        })
    }

    /// Checks that one of `authorities` signed this certificate.
    pub fn verify(&self, authorities: &[[u8; PUBLIC_KEY_LEN]]) -> Result<(), TrustError> {
        if !authorities.contains(&self.authority) {
            return Err(TrustError::UntrustedAuthority);
        }
        verify(
            &self.authority,
            CERTIFICATE_CONTEXT,
            &self.signed_part(),
            &self.signature,
        )
        .map_err(|_| TrustError::UntrustedAuthority)
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> Result<u8, TrustError> {
        let (&b, rest) = self.0.split_first().ok_or(TrustError::Malformed)?;
        self.0 = rest;
        Ok(b)
    }
    fn take(&mut self, n: usize) -> Result<&[u8], TrustError> {
        if self.0.len() < n {
            return Err(TrustError::Malformed);
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TrustError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn name(&mut self) -> Result<String, TrustError> {
        let n = usize::from(self.u8()?);
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| TrustError::Malformed)?;
        if !name_ok(s) {
            return Err(TrustError::Malformed);
        }
        Ok(s.to_owned())
    }
}

fn labelled(context: &[u8], message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + message.len());
    m.extend_from_slice(context);
    m.push(0);
    m.extend_from_slice(message);
    m
}

/// Verifies an Ed25519 signature made under `context`.
pub fn verify(
    public_key: &[u8; PUBLIC_KEY_LEN],
    context: &[u8],
    message: &[u8],
    sig: &[u8],
) -> Result<(), TrustError> {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&labelled(context, message), sig)
        .map_err(|_| TrustError::BadSignature)
}

fn key_pair(seed: &[u8; 32]) -> Result<Ed25519KeyPair, TrustError> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| TrustError::Key)
}

fn public_of(k: &Ed25519KeyPair) -> [u8; PUBLIC_KEY_LEN] {
    let mut p = [0u8; PUBLIC_KEY_LEN];
    p.copy_from_slice(k.public_key().as_ref());
    p
}

/// A reader maker's signing key: issues certificates. Lives in the maker's
/// factory (here: the simulator and tests), never in a POS app.
pub struct ReaderAuthority {
    key: Ed25519KeyPair,
}

impl fmt::Debug for ReaderAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReaderAuthority({})", short_hex(&self.public_key()))
    }
}

impl ReaderAuthority {
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, TrustError> {
        Ok(ReaderAuthority {
            key: key_pair(seed)?,
        })
    }

    /// The key an engine lists in `Policy::reader_authorities` to trust it.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        public_of(&self.key)
    }

    /// Certifies that the reader `serial` of `model` holds `reader_key`.
    pub fn issue(
        &self,
        serial: &str,
        model: &str,
        reader_key: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<ReaderCertificate, TrustError> {
        if !name_ok(serial) || !name_ok(model) {
            return Err(TrustError::Malformed);
        }
        let mut cert = ReaderCertificate {
            serial: serial.to_owned(),
            model: model.to_owned(),
            public_key: *reader_key,
            authority: self.public_key(),
            signature: [0; SIGNATURE_LEN],
        };
        let sig = self
            .key
            .sign(&labelled(CERTIFICATE_CONTEXT, &cert.signed_part()));
        cert.signature.copy_from_slice(sig.as_ref());
        Ok(cert)
    }
}

/// A reader's identity: its private key and its certificate. Lives in the
/// reader (here: the simulated reader and tests).
pub struct ReaderIdentity {
    key: Ed25519KeyPair,
    certificate: ReaderCertificate,
}

impl fmt::Debug for ReaderIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderIdentity")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl ReaderIdentity {
    /// A reader's key from `seed`, certified by `authority` for this serial
    /// and model.
    pub fn provision(
        seed: &[u8; 32],
        authority: &ReaderAuthority,
        serial: &str,
        model: &str,
    ) -> Result<Self, TrustError> {
        let key = key_pair(seed)?;
        let certificate = authority.issue(serial, model, &public_of(&key))?;
        Ok(ReaderIdentity { key, certificate })
    }

    /// A reader's key from `seed` with a certificate made elsewhere (which
    /// need not match: a reader presenting another's certificate).
    pub fn with_certificate(
        seed: &[u8; 32],
        certificate: ReaderCertificate,
    ) -> Result<Self, TrustError> {
        Ok(ReaderIdentity {
            key: key_pair(seed)?,
            certificate,
        })
    }

    pub fn certificate(&self) -> &ReaderCertificate {
        &self.certificate
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        public_of(&self.key)
    }

    /// Signs `message` under `context`.
    pub fn sign(&self, context: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.key.sign(&labelled(context, message)).as_ref());
        out
    }
}

/// The simulator's reader authority (a fixed, public test key: trusting it
/// in production would trust any simulated reader).
pub fn simulator_authority() -> ReaderAuthority {
    let d = ring::digest::digest(&ring::digest::SHA256, b"pos-sim reader authority");
    let mut seed = [0u8; 32];
    seed.copy_from_slice(d.as_ref());
    // A 32-byte seed is always a valid Ed25519 seed.
    ReaderAuthority::from_seed(&seed).unwrap_or_else(|_| unreachable!())
}

/// A simulated reader's identity seed, derived from its serial (so a
/// simulated reader keeps its key across restarts).
pub fn simulator_reader_seed(serial: &str) -> [u8; 32] {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        &[b"pos-sim reader identity\0".as_slice(), serial.as_bytes()].concat(),
    );
    let mut seed = [0u8; 32];
    seed.copy_from_slice(d.as_ref());
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(n: u8) -> ReaderAuthority {
        ReaderAuthority::from_seed(&[n; 32]).unwrap()
    }

    #[test]
    fn a_certificate_round_trips_and_verifies_only_under_its_authority() {
        let a = authority(1);
        let r = ReaderIdentity::provision(&[7; 32], &a, "WP3-1", "Wisepad 3").unwrap();
        let bytes = r.certificate().encode();
        let c = ReaderCertificate::decode(&bytes).unwrap();
        assert_eq!(&c, r.certificate());
        assert_eq!(c.public_key, r.public_key());
        c.verify(&[a.public_key()]).unwrap();
        assert_eq!(
            c.verify(&[authority(2).public_key()]),
            Err(TrustError::UntrustedAuthority)
        );
        assert_eq!(c.verify(&[]), Err(TrustError::UntrustedAuthority));
    }

    #[test]
    fn a_certificate_with_a_changed_model_fails() {
        let a = authority(1);
        let r = ReaderIdentity::provision(&[7; 32], &a, "CHP-1", "Chipper 2X BT").unwrap();
        let mut bytes = r.certificate().encode();
        // "Chipper" -> "Dhipper": the model is covered by the signature.
        let at = bytes
            .iter()
            .position(|&b| b == b'C' && bytes.len() > 10)
            .unwrap();
        let at = at
            + bytes[at..]
                .windows(7)
                .position(|w| w == b"Chipper")
                .unwrap();
        bytes[at] = b'D';
        let c = ReaderCertificate::decode(&bytes).unwrap();
        assert_eq!(c.model, "Dhipper 2X BT");
        assert_eq!(
            c.verify(&[a.public_key()]),
            Err(TrustError::UntrustedAuthority)
        );
    }

    #[test]
    fn malformed_certificates_are_typed_errors() {
        let a = authority(1);
        let r = ReaderIdentity::provision(&[7; 32], &a, "S", "M").unwrap();
        let bytes = r.certificate().encode();
        for n in 0..bytes.len() {
            assert_eq!(
                ReaderCertificate::decode(&bytes[..n]),
                Err(TrustError::Malformed)
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ReaderCertificate::decode(&longer),
            Err(TrustError::Malformed)
        );
        assert!(a.issue("", "M", &[0; 32]).is_err());
        assert!(a.issue("S", &"m".repeat(65), &[0; 32]).is_err());
    }

    #[test]
    fn a_signature_is_bound_to_its_context() {
        let a = authority(1);
        let r = ReaderIdentity::provision(&[7; 32], &a, "S", "M").unwrap();
        let sig = r.sign(CARD_CONTEXT, b"blob");
        verify(&r.public_key(), CARD_CONTEXT, b"blob", &sig).unwrap();
        assert_eq!(
            verify(&r.public_key(), HANDSHAKE_CONTEXT, b"blob", &sig),
            Err(TrustError::BadSignature)
        );
        assert_eq!(
            verify(&r.public_key(), CARD_CONTEXT, b"blob2", &sig),
            Err(TrustError::BadSignature)
        );
        assert_eq!(
            verify(&r.public_key(), CARD_CONTEXT, b"blob", &sig[..63]),
            Err(TrustError::BadSignature)
        );
    }
}
