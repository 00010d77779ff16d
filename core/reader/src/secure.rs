//! The secure link of profile version 2 (`docs/reader-profile.md`, "Secure
//! link"): a SIGMA-style authenticated key exchange, in which the reader
//! proves its certified identity key and both sides derive session keys
//! from fresh X25519 ephemerals, and the sealing of every message after it.
//!
//! ```text
//! M1 = 0x01 || e_p (32) || n_p (16)                              phone → reader
//! M2 = 0x02 || e_r (32) || n_r (16) || AEAD(k_hs, th1,
//!          u16 len(cert) || cert || sig (64) || mac_r (32))      reader → phone
//! M3 = 0x03 || mac_p (32)                                        phone → reader
//!
//! th1   = SHA-256(LABEL || 0x00 || M1 || e_r || n_r)
//! th2   = SHA-256(LABEL || 0x00 || M1 || e_r || n_r || "reader")
//! sig   = Ed25519(reader identity, HANDSHAKE_CONTEXT, th2)
//! th3   = SHA-256(th2 || u16 len(cert) || cert || sig)
//! thF   = SHA-256(LABEL || 0x00 || M1 || M2)                     the full transcript
//! prk   = HKDF-Extract(salt = th1, X25519(e_p, e_r))
//! k_hs  = HKDF-Expand(prk, "pos-reader v2 handshake key" || th1, 32)
//! fk_r  = HKDF-Expand(prk, "pos-reader v2 reader finished" || th1, 32)
//! fk_p  = HKDF-Expand(prk, "pos-reader v2 phone finished" || th1, 32)
//! mac_r = HMAC-SHA256(fk_r, th3)
//! mac_p = HMAC-SHA256(fk_p, thF)
//! k_pr  = HKDF-Expand(prk, "pos-reader v2 phone->reader" || thF, 32)
//! k_rp  = HKDF-Expand(prk, "pos-reader v2 reader->phone" || thF, 32)
//! sid   = HKDF-Expand(prk, "pos-reader v2 session id" || thF, 16)
//! ```
//!
//! A sealed message's body is `counter (u64 LE) || AES-256-GCM
//! ciphertext || tag (16)` under the direction's key, nonce
//! `0x00000000 || counter (u64 BE)`, associated data `sid || direction ||
//! counter (u64 LE) || message id (u16 LE) || frame kind`. The receiver
//! keeps a replay window (the highest counter and a 64-bit bitmap below it).

use pos_rules::reader_trust::{
    self, ReaderCertificate, ReaderIdentity, TrustError, HANDSHAKE_CONTEXT, PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{self, SHA256};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The protocol label every transcript hash starts with.
pub const LABEL: &[u8] = b"pos-reader secure link v2";
/// First byte of M1.
pub const M1: u8 = 1;
/// First byte of M2.
pub const M2: u8 = 2;
/// First byte of M3.
pub const M3: u8 = 3;
/// Length of each side's handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Length of a session id.
pub const SESSION_ID_LEN: usize = 16;
/// Length of M1.
pub const M1_LEN: usize = 1 + PUBLIC_KEY_LEN + NONCE_LEN;
/// Length of M3.
pub const M3_LEN: usize = 1 + 32;
/// Bytes a sealed message adds to its plaintext (counter and tag).
pub const SEALED_OVERHEAD: usize = 8 + TAG_LEN;
/// Counters below the highest one seen that are still accepted (once).
pub const REPLAY_WINDOW: u64 = 64;

const TAG_LEN: usize = 16;
const MAC_LEN: usize = 32;
const HASH_LEN: usize = 32;

/// Why a handshake or a sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureError {
    #[error("malformed handshake message")]
    Malformed,
    #[error("the handshake failed (key agreement or decryption)")]
    Handshake,
    #[error("the reader certificate is not signed by a trusted reader authority")]
    UntrustedAuthority,
    #[error("the reader's handshake signature does not verify with its certificate's key")]
    BadSignature,
    #[error("the peer's key confirmation is wrong")]
    Confirmation,
    #[error("remembered reader {serial} presented another identity key; pair it again online")]
    KeyChanged { serial: String },
    #[error("a new reader can be paired only while online")]
    NewReaderOffline,
    #[error("a sealed message failed authentication")]
    Authentication,
    #[error("a sealed message was replayed (counter {0})")]
    Replay(u64),
    #[error("a sealed message is older than the replay window (counter {0})")]
    Stale(u64),
    #[error("a plain message after the handshake")]
    Plaintext,
    #[error("a sealed message without a session")]
    NoSession,
    #[error("an unexpected handshake message")]
    UnexpectedHandshake,
    #[error("the message counter is spent")]
    CounterSpent,
    #[error("no randomness")]
    Random,
}

/// What the phone trusts when it authenticates a reader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkTrust {
    /// Reader authorities' Ed25519 keys (`Policy::reader_authorities`).
    pub authorities: Vec<[u8; PUBLIC_KEY_LEN]>,
    /// Remembered readers: serial and identity key. A remembered serial
    /// must present the same key ([`SecureError::KeyChanged`] otherwise).
    pub remembered: Vec<(String, [u8; PUBLIC_KEY_LEN])>,
    /// Whether a reader not remembered may be paired now (only online).
    pub online: bool,
}

impl LinkTrust {
    /// Whether an authenticated reader may be paired now: a remembered
    /// serial must present its remembered key, a new one only online.
    /// (The certificate's authority and signature are checked before.)
    pub fn admits(&self, certificate: &ReaderCertificate) -> Result<(), SecureError> {
        match self
            .remembered
            .iter()
            .find(|(serial, _)| *serial == certificate.serial)
        {
            Some((_, key)) if *key != certificate.public_key => Err(SecureError::KeyChanged {
                serial: certificate.serial.clone(),
            }),
            Some(_) => Ok(()),
            None if self.online => Ok(()),
            None => Err(SecureError::NewReaderOffline),
        }
    }
}

/// The direction of a sealed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    PhoneToReader,
    ReaderToPhone,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::PhoneToReader => 1,
            Direction::ReaderToPhone => 2,
        }
    }

    fn other(self) -> Direction {
        match self {
            Direction::PhoneToReader => Direction::ReaderToPhone,
            Direction::ReaderToPhone => Direction::PhoneToReader,
        }
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(
    prk: &hkdf::Prk,
    label: &[u8],
    th: &[u8],
) -> Result<[u8; N], SecureError> {
    let mut out = [0u8; N];
    prk.expand(&[label, th], Len(N))
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| SecureError::Handshake)?;
    Ok(out)
}

fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut ctx = digest::Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn mac(key: &[u8; 32], msg: &[u8]) -> [u8; MAC_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn mac_ok(key: &[u8; 32], msg: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), msg, tag).is_ok()
}

fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey, SecureError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| SecureError::Handshake)
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], SecureError> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(|_| SecureError::Random)?;
    Ok(out)
}

fn th1(m1: &[u8], e_r: &[u8], n_r: &[u8]) -> [u8; HASH_LEN] {
    hash(&[LABEL, &[0], m1, e_r, n_r])
}

fn th2(m1: &[u8], e_r: &[u8], n_r: &[u8]) -> [u8; HASH_LEN] {
    hash(&[LABEL, &[0], m1, e_r, n_r, b"reader"])
}

fn th3(th2: &[u8], cert: &[u8], sig: &[u8]) -> [u8; HASH_LEN] {
    let len = u16::try_from(cert.len()).unwrap_or(u16::MAX).to_le_bytes();
    hash(&[th2, &len, cert, sig])
}

fn th_full(m1: &[u8], m2: &[u8]) -> [u8; HASH_LEN] {
    hash(&[LABEL, &[0], m1, m2])
}

/// The keys both sides derive from the shared secret.
struct Schedule {
    prk: hkdf::Prk,
    handshake_key: [u8; 32],
    reader_finished: [u8; 32],
    phone_finished: [u8; 32],
}

impl Schedule {
    fn new(shared: &[u8], th1: &[u8; HASH_LEN]) -> Result<Schedule, SecureError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, th1).extract(shared);
        Ok(Schedule {
            handshake_key: expand(&prk, b"pos-reader v2 handshake key", th1)?,
            reader_finished: expand(&prk, b"pos-reader v2 reader finished", th1)?,
            phone_finished: expand(&prk, b"pos-reader v2 phone finished", th1)?,
            prk,
        })
    }

    fn session(&self, th_full: &[u8; HASH_LEN], me: Direction) -> Result<Session, SecureError> {
        let pr: [u8; 32] = expand(&self.prk, b"pos-reader v2 phone->reader", th_full)?;
        let rp: [u8; 32] = expand(&self.prk, b"pos-reader v2 reader->phone", th_full)?;
        let id = expand(&self.prk, b"pos-reader v2 session id", th_full)?;
        let (send, recv) = match me {
            Direction::PhoneToReader => (pr, rp),
            Direction::ReaderToPhone => (rp, pr),
        };
        Ok(Session {
            id,
            me,
            send: aead_key(&send)?,
            recv: aead_key(&recv)?,
            next_counter: 0,
            window: ReplayWindow::default(),
        })
    }
}

fn agree(
    private: EphemeralPrivateKey,
    peer: &[u8],
    th1: &[u8; HASH_LEN],
) -> Result<Schedule, SecureError> {
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |shared| {
        Schedule::new(shared, th1)
    })
    .map_err(|_| SecureError::Handshake)?
}

fn ephemeral(rng: &SystemRandom) -> Result<(EphemeralPrivateKey, [u8; 32]), SecureError> {
    let private = EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| SecureError::Random)?;
    let public = private
        .compute_public_key()
        .map_err(|_| SecureError::Random)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(public.as_ref());
    Ok((private, out))
}

/// The phone's half of a handshake in progress: it sent M1.
pub struct PhoneHandshake {
    private: EphemeralPrivateKey,
    m1: Vec<u8>,
}

impl std::fmt::Debug for PhoneHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneHandshake").finish_non_exhaustive()
    }
}

/// A handshake the phone completed: M3 to send, the session, and the
/// reader's verified certificate.
#[derive(Debug)]
pub struct PhoneFinished {
    pub m3: Vec<u8>,
    pub session: Session,
    pub certificate: ReaderCertificate,
}

impl PhoneHandshake {
    /// A fresh ephemeral key and nonce; returns M1.
    pub fn start() -> Result<(PhoneHandshake, Vec<u8>), SecureError> {
        let rng = SystemRandom::new();
        let (private, public) = ephemeral(&rng)?;
        let nonce: [u8; NONCE_LEN] = random(&rng)?;
        let m1 = [&[M1][..], &public, &nonce].concat();
        Ok((
            PhoneHandshake {
                private,
                m1: m1.clone(),
            },
            m1,
        ))
    }

    /// Checks M2: the certificate under `trust.authorities`, the signature
    /// with the certificate's key, the reader's key confirmation, then the
    /// remembered readers and `trust.online`. Returns M3 and the session.
    pub fn finish(self, m2: &[u8], trust: &LinkTrust) -> Result<PhoneFinished, SecureError> {
        let head = 1 + PUBLIC_KEY_LEN + NONCE_LEN;
        if m2.len() < head + TAG_LEN || m2[0] != M2 {
            return Err(SecureError::Malformed);
        }
        let e_r = &m2[1..1 + PUBLIC_KEY_LEN];
        let n_r = &m2[1 + PUBLIC_KEY_LEN..head];
        let th1 = th1(&self.m1, e_r, n_r);
        let keys = agree(self.private, e_r, &th1)?;
        let mut body = m2[head..].to_vec();
        let plain = aead_key(&keys.handshake_key)?
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(th1),
                &mut body,
            )
            .map_err(|_| SecureError::Handshake)?;
        let (cert_bytes, sig, mac_r) = split_identity(plain)?;
        let certificate =
            ReaderCertificate::decode(cert_bytes).map_err(|_| SecureError::Malformed)?;
        certificate
            .verify(&trust.authorities)
            .map_err(|_| SecureError::UntrustedAuthority)?;
        let th2 = th2(&self.m1, e_r, n_r);
        reader_trust::verify(&certificate.public_key, HANDSHAKE_CONTEXT, &th2, sig).map_err(
            |e| match e {
                TrustError::BadSignature => SecureError::BadSignature,
                _ => SecureError::Malformed,
            },
        )?;
        if !mac_ok(&keys.reader_finished, &th3(&th2, cert_bytes, sig), mac_r) {
            return Err(SecureError::Confirmation);
        }
        trust.admits(&certificate)?;
        let th_f = th_full(&self.m1, m2);
        let m3 = [&[M3][..], &mac(&keys.phone_finished, &th_f)].concat();
        Ok(PhoneFinished {
            m3,
            session: keys.session(&th_f, Direction::PhoneToReader)?,
            certificate,
        })
    }
}

/// The certificate, the signature and the key confirmation of M2's body.
type Identity<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn split_identity(plain: &[u8]) -> Result<Identity<'_>, SecureError> {
    let (len, rest) = plain.split_at_checked(2).ok_or(SecureError::Malformed)?;
    let n = usize::from(u16::from_le_bytes([len[0], len[1]]));
    if rest.len() != n + SIGNATURE_LEN + MAC_LEN {
        return Err(SecureError::Malformed);
    }
    let (cert, rest) = rest.split_at(n);
    let (sig, mac_r) = rest.split_at(SIGNATURE_LEN);
    Ok((cert, sig, mac_r))
}

/// The reader's half of a handshake in progress: it answered M1 with M2 and
/// waits for the phone's key confirmation.
pub struct ReaderHandshake {
    session: Session,
    phone_finished: [u8; 32],
    th_full: [u8; HASH_LEN],
}

impl std::fmt::Debug for ReaderHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderHandshake").finish_non_exhaustive()
    }
}

impl ReaderHandshake {
    /// Answers M1 with M2, proving `identity`.
    pub fn respond(
        identity: &ReaderIdentity,
        m1: &[u8],
    ) -> Result<(ReaderHandshake, Vec<u8>), SecureError> {
        if m1.len() != M1_LEN || m1[0] != M1 {
            return Err(SecureError::Malformed);
        }
        let e_p = &m1[1..1 + PUBLIC_KEY_LEN];
        let rng = SystemRandom::new();
        let (private, e_r) = ephemeral(&rng)?;
        let n_r: [u8; NONCE_LEN] = random(&rng)?;
        let th1 = th1(m1, &e_r, &n_r);
        let keys = agree(private, e_p, &th1)?;
        let th2 = th2(m1, &e_r, &n_r);
        let sig = identity.sign(HANDSHAKE_CONTEXT, &th2);
        let cert = identity.certificate().encode();
        let cert_len = u16::try_from(cert.len()).map_err(|_| SecureError::Malformed)?;
        let mac_r = mac(&keys.reader_finished, &th3(&th2, &cert, &sig));
        let mut body = [&cert_len.to_le_bytes()[..], &cert, &sig, &mac_r].concat();
        aead_key(&keys.handshake_key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(th1),
                &mut body,
            )
            .map_err(|_| SecureError::Handshake)?;
        let m2 = [&[M2][..], &e_r, &n_r, &body].concat();
        let th_f = th_full(m1, &m2);
        Ok((
            ReaderHandshake {
                session: keys.session(&th_f, Direction::ReaderToPhone)?,
                phone_finished: keys.phone_finished,
                th_full: th_f,
            },
            m2,
        ))
    }

    /// Checks M3 (the phone holds the session keys); returns the session.
    pub fn finish(self, m3: &[u8]) -> Result<Session, SecureError> {
        if m3.len() != M3_LEN || m3[0] != M3 {
            return Err(SecureError::Malformed);
        }
        if !mac_ok(&self.phone_finished, &self.th_full, &m3[1..]) {
            return Err(SecureError::Confirmation);
        }
        Ok(self.session)
    }
}

/// The replay window of one direction: the highest counter accepted and a
/// bitmap of the [`REPLAY_WINDOW`] counters up to it (bit `i`: counter
/// `highest - i` was accepted), as in DTLS and IPsec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    seen: u64,
}

impl ReplayWindow {
    /// Whether `counter` may be accepted (checked before decrypting).
    pub fn check(&self, counter: u64) -> Result<(), SecureError> {
        let Some(h) = self.highest else {
            return Ok(());
        };
        if counter > h {
            return Ok(());
        }
        let back = h - counter;
        if back >= REPLAY_WINDOW {
            return Err(SecureError::Stale(counter));
        }
        if self.seen >> back & 1 == 1 {
            return Err(SecureError::Replay(counter));
        }
        Ok(())
    }

    /// Records `counter` as accepted (only after it authenticated).
    pub fn accept(&mut self, counter: u64) {
        match self.highest {
            Some(h) if counter <= h => {
                let back = h - counter;
                if back < REPLAY_WINDOW {
                    self.seen |= 1 << back;
                }
            }
            Some(h) => {
                let shift = counter - h;
                self.seen = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(counter);
            }
            None => {
                self.seen = 1;
                self.highest = Some(counter);
            }
        }
    }
}

/// An established session: one key per direction, the session id, the
/// send counter and the receive replay window.
pub struct Session {
    id: [u8; SESSION_ID_LEN],
    me: Direction,
    send: LessSafeKey,
    recv: LessSafeKey,
    next_counter: u64,
    window: ReplayWindow,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sends", &self.me)
            .field("next_counter", &self.next_counter)
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn message_aad(
    id: &[u8; SESSION_ID_LEN],
    dir: Direction,
    counter: u64,
    msg_id: u16,
    kind: u8,
) -> [u8; SESSION_ID_LEN + 12] {
    let mut a = [0u8; SESSION_ID_LEN + 12];
    a[..SESSION_ID_LEN].copy_from_slice(id);
    a[SESSION_ID_LEN] = dir.byte();
    a[SESSION_ID_LEN + 1..SESSION_ID_LEN + 9].copy_from_slice(&counter.to_le_bytes());
    a[SESSION_ID_LEN + 9..SESSION_ID_LEN + 11].copy_from_slice(&msg_id.to_le_bytes());
    a[SESSION_ID_LEN + 11] = kind;
    a
}

impl Session {
    /// The session id (both sides derive the same).
    pub fn id(&self) -> [u8; SESSION_ID_LEN] {
        self.id
    }

    /// The direction this side sends in.
    pub fn direction(&self) -> Direction {
        self.me
    }

    /// Seals one message (channel message id `msg_id`, frame kind byte
    /// `kind`) under the next counter.
    pub fn seal(
        &mut self,
        msg_id: u16,
        kind: u8,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SecureError> {
        let counter = self.next_counter;
        self.next_counter = counter.checked_add(1).ok_or(SecureError::CounterSpent)?;
        let mut body = plaintext.to_vec();
        self.send
            .seal_in_place_append_tag(
                nonce(counter),
                Aad::from(message_aad(&self.id, self.me, counter, msg_id, kind)),
                &mut body,
            )
            .map_err(|_| SecureError::CounterSpent)?;
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&counter.to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens one sealed message from the peer: authenticates it under the
    /// peer's direction, its id and kind, then checks and records its
    /// counter in the replay window.
    pub fn open(&mut self, msg_id: u16, kind: u8, sealed: &[u8]) -> Result<Vec<u8>, SecureError> {
        let (counter, body) = sealed
            .split_at_checked(8)
            .ok_or(SecureError::Authentication)?;
        if body.len() < TAG_LEN {
            return Err(SecureError::Authentication);
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(counter);
        let counter = u64::from_le_bytes(c);
        self.window.check(counter)?;
        let mut body = body.to_vec();
        let plain_len = self
            .recv
            .open_in_place(
                nonce(counter),
                Aad::from(message_aad(
                    &self.id,
                    self.me.other(),
                    counter,
                    msg_id,
                    kind,
                )),
                &mut body,
            )
            .map_err(|_| SecureError::Authentication)?
            .len();
        self.window.accept(counter);
        body.truncate(plain_len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pos_rules::reader_trust::ReaderAuthority;

    fn identity() -> (ReaderAuthority, ReaderIdentity) {
        let a = ReaderAuthority::from_seed(&[1; 32]).unwrap();
        let r = ReaderIdentity::provision(&[2; 32], &a, "SIM-1", "Chipper 2X BT").unwrap();
        (a, r)
    }

    fn trust(a: &ReaderAuthority) -> LinkTrust {
        LinkTrust {
            authorities: vec![a.public_key()],
            remembered: vec![],
            online: true,
        }
    }

    #[test]
    fn both_sides_derive_the_same_session() {
        let (a, r) = identity();
        let (phone, m1) = PhoneHandshake::start().unwrap();
        let (reader, m2) = ReaderHandshake::respond(&r, &m1).unwrap();
        let done = phone.finish(&m2, &trust(&a)).unwrap();
        let mut reader_session = reader.finish(&done.m3).unwrap();
        let mut phone_session = done.session;
        assert_eq!(phone_session.id(), reader_session.id());
        assert_eq!(done.certificate.serial, "SIM-1");
        let sealed = phone_session.seal(7, 4, b"get_info").unwrap();
        assert_eq!(sealed.len(), 8 + SEALED_OVERHEAD);
        assert_eq!(reader_session.open(7, 4, &sealed).unwrap(), b"get_info");
        // The id and the kind are authenticated.
        let again = phone_session.seal(8, 4, b"x").unwrap();
        assert_eq!(
            reader_session.open(9, 4, &again),
            Err(SecureError::Authentication)
        );
        assert_eq!(
            reader_session.open(8, 5, &again),
            Err(SecureError::Authentication)
        );
        assert_eq!(reader_session.open(8, 4, &again).unwrap(), b"x");
    }

    #[test]
    fn a_wrong_m3_and_malformed_messages_are_refused() {
        let (a, r) = identity();
        let (phone, m1) = PhoneHandshake::start().unwrap();
        let (reader, m2) = ReaderHandshake::respond(&r, &m1).unwrap();
        let mut m3 = phone.finish(&m2, &trust(&a)).unwrap().m3;
        m3[5] ^= 1;
        assert_eq!(reader.finish(&m3).unwrap_err(), SecureError::Confirmation);
        assert_eq!(
            ReaderHandshake::respond(&r, &m1[..10]).unwrap_err(),
            SecureError::Malformed
        );
        let (phone, m1) = PhoneHandshake::start().unwrap();
        let (_, mut m2) = ReaderHandshake::respond(&r, &m1).unwrap();
        let last = m2.len() - 1;
        m2[last] ^= 1;
        assert_eq!(
            phone.finish(&m2, &trust(&a)).unwrap_err(),
            SecureError::Handshake
        );
    }

    #[test]
    fn the_replay_window_accepts_each_counter_once() {
        let mut w = ReplayWindow::default();
        for c in [5, 3, 9, 4, 70] {
            w.check(c).unwrap();
            w.accept(c);
        }
        assert_eq!(w.check(9), Err(SecureError::Replay(9)));
        assert_eq!(w.check(5), Err(SecureError::Stale(5)));
        w.check(69).unwrap();
        w.check(7).unwrap();
        w.check(6).unwrap_err();
        w.accept(69);
        assert_eq!(w.check(69), Err(SecureError::Replay(69)));
        w.check(200).unwrap();
    }
}
