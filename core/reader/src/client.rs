//! The phone side: version negotiation, the authenticated handshake
//! ([`crate::secure`]), reader information over the sealed link, and taking
//! a card bound to its payment.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use pos_rules::card_seal;
use pos_rules::card_seal::CardChallenge;
use pos_rules::ledger::CardRead;
use pos_rules::policy::EntryMode;
use pos_rules::reader_trust::{self, ReaderCertificate, CARD_CONTEXT, SIGNATURE_LEN};

use crate::link::{Channel, Inbound, LinkError, MemoryLink, Transport};
use crate::message::{self, Reply, Request, LEGACY_VERSION, PROFILE_VERSION};
use crate::secure::{PhoneHandshake, SecureError};

pub use crate::secure::LinkTrust;

/// What the reader says about itself. On a paired reader, `model` and
/// `serial` are its certificate's; `firmware` and `battery_percent` come
/// from its sealed `info` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub battery_percent: u8,
}

/// An authenticated reader: what [`ReaderClient::pair`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedReader {
    pub info: ReaderInfo,
    /// The reader's certificate, encoded (`ReaderCertificate::encode`): what
    /// the engine remembers for the reader.
    pub certificate: Vec<u8>,
}

/// How [`ReaderClient::connect_with`] connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Accept a reader that speaks only profile version 1 (no handshake, no
    /// sealing). Off by default; when a v1 reader is accepted,
    /// [`ReaderClient::is_insecure_v1`] says so. Such a reader can show its
    /// information but never pairs nor takes a card.
    pub allow_v1: bool,
    /// How long to wait for each answer.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            allow_v1: false,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Which check a card read from the reader failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardCheck {
    /// The reply names another reader than the authenticated one.
    Serial,
    /// The sealed data or the signature is not what the profile sends.
    Malformed,
    /// The sealed data is bound to another payment, device, amount, nonce
    /// or reader, or disagrees with the reply's summary.
    Binding,
    /// The signature does not verify with the reader's certificate key.
    Signature,
}

/// Why a reader operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReaderError {
    #[error("link: {0}")]
    Link(#[from] LinkError),
    #[error("the reader speaks no accepted profile version")]
    Version,
    #[error("the reader is not authenticated: pair first")]
    NotAuthenticated,
    #[error("the reader's certificate is not from a trusted reader authority")]
    UntrustedReader,
    #[error("remembered reader {serial} presented another identity key; pair it again online")]
    KeyChanged { serial: String },
    #[error("a new reader can be paired only while online; remembered readers reconnect offline")]
    NewReaderOffline,
    #[error("the handshake failed: {0}")]
    Handshake(SecureError),
    #[error("the reader's card read failed a check: {0:?}")]
    BadCardRead(CardCheck),
    #[error("the reader refused: {code}")]
    Refused { code: String },
    #[error("unexpected answer from the reader")]
    Unexpected,
}

impl From<SecureError> for ReaderError {
    fn from(e: SecureError) -> Self {
        match e {
            SecureError::UntrustedAuthority => ReaderError::UntrustedReader,
            SecureError::KeyChanged { serial } => ReaderError::KeyChanged { serial },
            SecureError::NewReaderOffline => ReaderError::NewReaderOffline,
            e => ReaderError::Handshake(e),
        }
    }
}

/// A connected reader.
#[derive(Debug)]
pub struct ReaderClient<T: Transport = MemoryLink> {
    chan: Arc<Channel<T>>,
    version: u8,
    info: Option<ReaderInfo>,
    certificate: Option<ReaderCertificate>,
    timeout: Duration,
}

impl<T: Transport> ReaderClient<T> {
    /// Connects over `link` and negotiates profile version 2; a reader that
    /// speaks only version 1 is refused ([`ReaderError::Version`]).
    pub async fn connect(link: T) -> Result<ReaderClient<T>, ReaderError> {
        Self::connect_with(link, ConnectOptions::default()).await
    }

    /// Connects with `options` (version 1 only when `allow_v1`).
    pub async fn connect_with(
        link: T,
        options: ConnectOptions,
    ) -> Result<ReaderClient<T>, ReaderError> {
        let mut c = ReaderClient {
            chan: Arc::new(Channel::new(Arc::new(link))),
            version: 0,
            info: None,
            certificate: None,
            timeout: options.timeout,
        };
        let versions = if options.allow_v1 {
            vec![LEGACY_VERSION, PROFILE_VERSION]
        } else {
            vec![PROFILE_VERSION]
        };
        let offered = versions.clone();
        match c.call(&Request::Hello { versions }).await? {
            Reply::HelloAck { version } if offered.contains(&version) => {
                c.version = version;
                tracing::debug!(version, "reader connected");
                if version == LEGACY_VERSION {
                    tracing::warn!(
                        "reader accepted on profile version 1: unauthenticated, no card reads"
                    );
                }
                Ok(c)
            }
            Reply::Error { .. } | Reply::HelloAck { .. } => Err(ReaderError::Version),
            _ => Err(ReaderError::Unexpected),
        }
    }

    /// The negotiated profile version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Whether this is an unauthenticated version-1 link (accepted only with
    /// [`ConnectOptions::allow_v1`]).
    pub fn is_insecure_v1(&self) -> bool {
        self.version == LEGACY_VERSION
    }

    /// Whether the handshake completed: the link is sealed and the reader's
    /// certificate verified.
    pub fn is_authenticated(&self) -> bool {
        self.certificate.is_some() && self.chan.is_secure()
    }

    /// The authenticated reader's certificate.
    pub fn certificate(&self) -> Option<&ReaderCertificate> {
        self.certificate.as_ref()
    }

    /// Frames and messages refused on this link so far (failed
    /// authentication, replays, injected or reflected messages, plain
    /// messages after the handshake, malformed frames). Nothing refused is
    /// ever delivered.
    pub fn rejected(&self) -> u64 {
        self.chan.rejected()
    }

    /// Reads [`ReaderClient::rejected`] without holding the client (a
    /// status screen while a card read waits).
    pub fn rejected_counter(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let chan = Arc::clone(&self.chan);
        move || chan.rejected()
    }

    /// The next inbound item, skipping what the channel refused (counted in
    /// [`ReaderClient::rejected`]).
    async fn next_inbound(&self) -> Result<Inbound, ReaderError> {
        let wait = async {
            loop {
                match self.chan.recv().await {
                    None => return Err(LinkError::Disconnected.into()),
                    Some(Err(_)) => continue,
                    Some(Ok(inbound)) => return Ok(inbound),
                }
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| LinkError::Timeout)?
    }

    async fn next_reply(&self) -> Result<Reply, ReaderError> {
        loop {
            match self.next_inbound().await? {
                Inbound::Message(bytes) => {
                    return message::decode(&bytes).map_err(|_| LinkError::Message.into())
                }
                // No handshake is running: refused.
                Inbound::Handshake(_) => self.chan.note_rejected(),
            }
        }
    }

    async fn call(&self, req: &Request) -> Result<Reply, ReaderError> {
        self.chan.send(message::encode(req))?;
        self.next_reply().await
    }

    fn authenticated(&self) -> Result<&ReaderCertificate, ReaderError> {
        match &self.certificate {
            Some(c) if self.chan.is_secure() => Ok(c),
            _ => Err(ReaderError::NotAuthenticated),
        }
    }

    /// Runs the handshake: the reader proves the identity key its
    /// certificate names (checked under `trust.authorities`; a remembered
    /// serial must present its remembered key; a new reader only
    /// `trust.online`), and every later message is sealed. Then reads the
    /// reader's information over the sealed link.
    pub async fn pair(&mut self, trust: &LinkTrust) -> Result<PairedReader, ReaderError> {
        if self.version != PROFILE_VERSION {
            return Err(ReaderError::Version);
        }
        if let Some(cert) = self.certificate.clone() {
            // Already authenticated on this connection (a reader never
            // replaces a confirmed session on it): the session stands if
            // the trust still admits its certificate.
            cert.verify(&trust.authorities)
                .map_err(|_| ReaderError::UntrustedReader)?;
            trust.admits(&cert)?;
            let info = self.info().await?;
            return Ok(PairedReader {
                info,
                certificate: cert.encode(),
            });
        }
        let (handshake, m1) = PhoneHandshake::start()?;
        self.chan.send_handshake(&m1)?;
        let m2 = match self.next_inbound().await? {
            Inbound::Handshake(m2) => m2,
            Inbound::Message(bytes) => {
                return match message::decode::<Reply>(&bytes) {
                    Ok(Reply::Error { code, .. }) => Err(ReaderError::Refused { code }),
                    _ => Err(ReaderError::Unexpected),
                }
            }
        };
        let done = match handshake.finish(&m2, trust) {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "reader pairing failed: the handshake was refused");
                self.chan.note_rejected();
                return Err(e.into());
            }
        };
        self.chan.install_session(done.session);
        self.chan.send_handshake(&done.m3)?;
        self.certificate = Some(done.certificate);
        self.info = None;
        let info = self.info().await?;
        let certificate = self.authenticated()?.encode();
        tracing::info!(
            model = %info.model,
            serial = %info.serial,
            firmware = %info.firmware,
            battery_percent = info.battery_percent,
            "reader paired: the link is sealed"
        );
        Ok(PairedReader { info, certificate })
    }

    /// Reader model, serial, firmware, battery, over the sealed link (on a
    /// version-1 link, in the clear and as the reader reports them).
    pub async fn info(&mut self) -> Result<ReaderInfo, ReaderError> {
        let cert = if self.is_insecure_v1() {
            None
        } else {
            Some(self.authenticated()?.clone())
        };
        match self.call(&Request::GetInfo).await? {
            Reply::Info {
                model,
                serial,
                firmware,
                battery_percent,
            } => {
                let (model, serial) = match cert {
                    Some(c) => (c.model, c.serial),
                    None => (model, serial),
                };
                let i = ReaderInfo {
                    model,
                    serial,
                    firmware,
                    battery_percent,
                };
                self.info = Some(i.clone());
                Ok(i)
            }
            Reply::Error { code, .. } => Err(ReaderError::Refused { code }),
            _ => Err(ReaderError::Unexpected),
        }
    }

    /// Asks the reader for a card for this payment and returns what the
    /// engine needs: the summary, the keyed fingerprint, the card data
    /// sealed for the processor and bound to `challenge`, and the reader's
    /// serial and signature.
    pub async fn take_card(
        &mut self,
        challenge: &CardChallenge,
        entry_modes: &[EntryMode],
        offline: bool,
    ) -> Result<CardRead, ReaderError> {
        self.authenticated()?;
        self.chan.send(message::encode(&Request::StartPayment {
            payment_id: challenge.payment_id.as_str().to_owned(),
            device_id: challenge.device_id.clone(),
            amount_minor: challenge.amount.minor_units(),
            currency: challenge.amount.currency().code().to_owned(),
            nonce: pos_rules::crypto::hex(&challenge.nonce),
            entry_modes: entry_modes.to_vec(),
            offline,
        }))?;
        self.await_card(challenge).await
    }

    /// Waits for the card of the payment in progress: after a disconnect
    /// and [`ReaderClient::reconnect`], the same payment goes on (its request
    /// or the reader's reply is sent again), never a second one. The card is
    /// checked against `challenge` and the reader's certificate.
    pub async fn await_card(&mut self, challenge: &CardChallenge) -> Result<CardRead, ReaderError> {
        let cert = self.authenticated()?.clone();
        loop {
            match self.next_reply().await? {
                Reply::CardPresented { .. } => continue,
                Reply::CardResult {
                    entry_mode,
                    network,
                    last4,
                    fingerprint,
                    sealed,
                    serial,
                    signature,
                } => {
                    return checked_card(
                        &cert,
                        challenge,
                        CardRead {
                            entry_mode,
                            network,
                            last4,
                            fingerprint: Some(fingerprint),
                            reader_model: cert.model.clone(),
                            sealed_card_data: Vec::new(),
                            reader_serial: Some(serial),
                            reader_signature: None,
                            tap_to_pay_on_phone: false,
                        },
                        &sealed,
                        &signature,
                    )
                    .inspect_err(|check| tracing::warn!(?check, "card read refused"))
                    .map_err(ReaderError::BadCardRead);
                }
                Reply::Error { code, .. } => return Err(ReaderError::Refused { code }),
                _ => return Err(ReaderError::Unexpected),
            }
        }
    }

    /// The reader model, once known.
    pub fn model(&self) -> Option<&str> {
        self.info.as_ref().map(|i| i.model.as_str())
    }

    /// Messages sent and not yet acknowledged by the reader.
    pub fn unacked(&self) -> usize {
        self.chan.unacked()
    }

    pub fn link(&self) -> &T {
        self.chan.link()
    }
}

/// Completes `card` (its summary from the reply) with the sealed data and
/// the signature once they pass every check: the reader named is the
/// authenticated one, the sealed data is version 2 bound to `challenge`, to
/// that reader and to the summary, and the signature verifies with the
/// certificate's key. Nothing is returned otherwise.
fn checked_card(
    cert: &ReaderCertificate,
    challenge: &CardChallenge,
    mut card: CardRead,
    sealed_b64: &str,
    signature_b64: &str,
) -> Result<CardRead, CardCheck> {
    if card.reader_serial.as_deref() != Some(cert.serial.as_str()) {
        return Err(CardCheck::Serial);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let sealed = b64.decode(sealed_b64).map_err(|_| CardCheck::Malformed)?;
    let signature = b64
        .decode(signature_b64)
        .map_err(|_| CardCheck::Malformed)?;
    if signature.len() != SIGNATURE_LEN {
        return Err(CardCheck::Malformed);
    }
    let b = card_seal::parse_v2(&sealed)
        .map_err(|_| CardCheck::Malformed)?
        .binding;
    if b.mismatch(challenge, &card).is_some() {
        return Err(CardCheck::Binding);
    }
    reader_trust::verify(&cert.public_key, CARD_CONTEXT, &sealed, &signature)
        .map_err(|_| CardCheck::Signature)?;
    card.sealed_card_data = sealed;
    card.reader_signature = Some(signature);
    // Bad data from a reader is a typed error, never stored.
    card.validate().map_err(|_| CardCheck::Malformed)?;
    Ok(card)
}

impl ReaderClient<MemoryLink> {
    /// The radio is back: both ends send again what the other did not
    /// acknowledge; returns how many of the phone's messages were pending.
    pub fn reconnect(&self) -> usize {
        let pending = self.chan.unacked();
        self.chan.link().reconnect();
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pos_rules::card_seal::{CardBinding, CardSecret, ProcessorKey};
    use pos_rules::lifecycle::PaymentId;
    use pos_rules::money::{Currency, Money};
    use pos_rules::policy::Network;
    use pos_rules::reader_trust::{ReaderAuthority, ReaderIdentity};

    fn challenge() -> CardChallenge {
        CardChallenge {
            payment_id: PaymentId::from_random([9; 16]),
            device_id: "till-1".into(),
            amount: Money::new(4_200, Currency::parse("USD").unwrap()),
            nonce: [5; 16],
        }
    }

    fn binding(c: &CardChallenge) -> CardBinding {
        CardBinding {
            payment_id: c.payment_id.as_str().into(),
            device_id: c.device_id.clone(),
            amount_minor: 4_200,
            currency: "USD".into(),
            reader_serial: "SIM-1".into(),
            counter: 1,
            phone_nonce: c.nonce,
            read_at_ms: 1,
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            last4: "4242".into(),
            fingerprint: "ab".repeat(16),
        }
    }

    fn summary() -> CardRead {
        CardRead {
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            last4: "4242".into(),
            fingerprint: Some("ab".repeat(16)),
            reader_model: "M".into(),
            sealed_card_data: Vec::new(),
            reader_serial: Some("SIM-1".into()),
            reader_signature: None,
            tap_to_pay_on_phone: false,
        }
    }

    fn sealed(r: &ReaderIdentity, b: &CardBinding) -> (String, String) {
        let secret = CardSecret {
            pan: "4242424242424242".into(),
            expiry: "1230".into(),
        };
        let blob = card_seal::seal(b, &secret, &ProcessorKey([7; 32])).unwrap();
        let sig = r.sign(CARD_CONTEXT, &blob);
        let e = base64::engine::general_purpose::STANDARD;
        (e.encode(&blob), e.encode(sig))
    }

    #[test]
    fn a_card_read_must_be_bound_to_the_challenge_and_signed_by_the_reader() {
        let a = ReaderAuthority::from_seed(&[1; 32]).unwrap();
        let r = ReaderIdentity::provision(&[2; 32], &a, "SIM-1", "M").unwrap();
        let cert = r.certificate().clone();
        let c = challenge();
        let (blob, sig) = sealed(&r, &binding(&c));
        let card = checked_card(&cert, &c, summary(), &blob, &sig).unwrap();
        assert_eq!(card.reader_signature.as_ref().map(Vec::len), Some(64));
        // Another reader's serial in the reply.
        let other = CardRead {
            reader_serial: Some("SIM-2".into()),
            ..summary()
        };
        assert_eq!(
            checked_card(&cert, &c, other, &blob, &sig),
            Err(CardCheck::Serial)
        );
        // Bound to another payment, amount, nonce, or summary.
        let mut wrong = Vec::new();
        let mut b = binding(&c);
        b.payment_id = PaymentId::from_random([8; 16]).as_str().into();
        wrong.push(b);
        let mut b = binding(&c);
        b.amount_minor = 4_201;
        wrong.push(b);
        let mut b = binding(&c);
        b.phone_nonce = [6; 16];
        wrong.push(b);
        let mut b = binding(&c);
        b.last4 = "0000".into();
        wrong.push(b);
        let mut b = binding(&c);
        b.device_id = "till-2".into();
        wrong.push(b);
        for b in wrong {
            let (blob, sig) = sealed(&r, &b);
            assert_eq!(
                checked_card(&cert, &c, summary(), &blob, &sig),
                Err(CardCheck::Binding),
                "{b:?}"
            );
        }
        // Signed by another key.
        let impostor = ReaderIdentity::provision(&[3; 32], &a, "SIM-1", "M").unwrap();
        let (blob, sig) = sealed(&impostor, &binding(&c));
        assert_eq!(
            checked_card(&cert, &c, summary(), &blob, &sig),
            Err(CardCheck::Signature)
        );
        assert_eq!(
            checked_card(&cert, &c, summary(), "%%", &sig),
            Err(CardCheck::Malformed)
        );
    }
}
