//! The simulator's test cards and the opening of sealed card data.
//!
//! The processor holds the X25519 private key that readers seal card data to
//! (`pos_rules::card_seal`); this module opens it, and checks that a
//! version-2 read was signed by the certified reader its header names
//! ([`reader_signer`]). The PAN decides the outcome through the table of
//! test cards.

use std::fmt;

use pos_rules::card_seal::{
    aad, aad_v2, content_key, content_key_v2, parse_v2, CardBinding, CardSecret, HEADER_LEN,
    PUBLIC_KEY_LEN, SEAL_VERSION, SEAL_VERSION_2,
};
use pos_rules::gateway::wire::{self, PaymentBody};
use pos_rules::lifecycle::DeclineReason;
use pos_rules::policy::Network;
use pos_rules::reader_trust::{self, ReaderCertificate, CARD_CONTEXT};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use x25519_dalek::{PublicKey, StaticSecret};

/// What the processor decides for a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardOutcome {
    Approve,
    Decline(DeclineReason),
}

/// A test card: present it on the simulated reader, forward the payment,
/// and the simulator decides `outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCard {
    pub pan: &'static str,
    pub expiry: &'static str,
    pub network: Network,
    pub description: &'static str,
    pub outcome: CardOutcome,
}

impl TestCard {
    /// The card's secret, as a reader would seal it.
    pub fn secret(&self) -> CardSecret {
        CardSecret {
            pan: self.pan.to_owned(),
            expiry: self.expiry.to_owned(),
        }
    }

    /// The last four digits.
    pub fn last4(&self) -> &'static str {
        &self.pan[self.pan.len() - 4..]
    }
}

/// Every test card. Unknown Luhn-valid numbers approve; others decline
/// with code `invalid_card`.
pub fn test_cards() -> &'static [TestCard] {
    use CardOutcome::{Approve, Decline};
    use DeclineReason as D;
    const fn card(
        pan: &'static str,
        network: Network,
        description: &'static str,
        outcome: CardOutcome,
    ) -> TestCard {
        TestCard {
            pan,
            expiry: "1230",
            network,
            description,
            outcome,
        }
    }
    static CARDS: [TestCard; 9] = [
        card("4242424242424242", Network::Visa, "Visa, approves", Approve),
        card(
            "5555555555554444",
            Network::Mastercard,
            "Mastercard, approves",
            Approve,
        ),
        card("378282246310005", Network::Amex, "Amex, approves", Approve),
        card(
            "4000000000009995",
            Network::Visa,
            "declines: insufficient funds",
            Decline(D::InsufficientFunds),
        ),
        card(
            "4000000000009987",
            Network::Visa,
            "declines: lost card",
            Decline(D::LostCard),
        ),
        card(
            "4000000000009979",
            Network::Visa,
            "declines: stolen card",
            Decline(D::StolenCard),
        ),
        card(
            "4000000000000069",
            Network::Visa,
            "declines: expired card",
            Decline(D::ExpiredCard),
        ),
        card(
            "4000000000000002",
            Network::Visa,
            "declines: do not honour",
            Decline(D::DoNotHonour),
        ),
        card(
            "4000000000000119",
            Network::Visa,
            "declines: processing error",
            Decline(D::ProcessingError),
        ),
    ];
    &CARDS
}

/// The test card with this outcome (the first one).
pub fn card_for(outcome: &CardOutcome) -> &'static TestCard {
    test_cards()
        .iter()
        .find(|c| &c.outcome == outcome)
        .unwrap_or(&test_cards()[0])
}

/// Luhn check of a digit string.
pub fn luhn_valid(pan: &str) -> bool {
    if !(12..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = pan
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The decision for a PAN.
pub fn decide(pan: &str) -> CardOutcome {
    if let Some(c) = test_cards().iter().find(|c| c.pan == pan) {
        return c.outcome.clone();
    }
    if luhn_valid(pan) {
        CardOutcome::Approve
    } else {
        CardOutcome::Decline(DeclineReason::Other {
            code: "invalid_card".into(),
        })
    }
}

/// Why sealed card data could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("card data is too short, malformed or of an unknown version")]
    Format,
    /// A wrong processor key, or any byte changed: of the ciphertext, the
    /// tag, or the clear header that binds a version-2 blob to its payment.
    #[error("card data does not open with the processor's key")]
    Authentication,
    #[error("card data content is malformed")]
    Content,
}

/// Sealed card data, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedCard {
    pub secret: CardSecret,
    /// What a version-2 blob is bound to, authenticated by the opening;
    /// `None` for version 1, bound to nothing.
    pub binding: Option<CardBinding>,
    /// The blob's ephemeral X25519 key: fresh for every card read, so a
    /// key seen twice means the same read used twice.
    pub eph_pub: [u8; PUBLIC_KEY_LEN],
}

/// A content-key derivation of `card_seal` (one per format version).
type DeriveKey = fn(&[u8], &[u8; PUBLIC_KEY_LEN], &[u8; PUBLIC_KEY_LEN]) -> [u8; 32];

/// The processor's X25519 key pair.
pub struct ProcessorKeys {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for ProcessorKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorKeys")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl ProcessorKeys {
    /// A key pair derived from `seed` (deterministic simulators).
    pub fn from_seed(seed: u64) -> Self {
        let mut bytes = [0u8; 32];
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"pos-sim processor key".as_slice(), &seed.to_le_bytes()].concat(),
        );
        bytes.copy_from_slice(d.as_ref());
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        ProcessorKeys { secret, public }
    }

    /// The public key readers seal to.
    pub fn public_key(&self) -> pos_rules::card_seal::ProcessorKey {
        pos_rules::card_seal::ProcessorKey(*self.public.as_bytes())
    }

    /// Opens sealed card data of either version (`pos_rules::card_seal`).
    /// A version-2 blob opens only if no byte of it changed, its clear
    /// header included (the header and the processor key are the AEAD's
    /// associated data); the binding returned is then the one the reader
    /// sealed. Checking it against the request is the caller's part.
    pub fn open(&self, sealed: &[u8]) -> Result<OpenedCard, OpenError> {
        match sealed.first() {
            Some(&SEAL_VERSION) => self.open_v1(sealed),
            Some(&SEAL_VERSION_2) => self.open_v2(sealed),
            _ => Err(OpenError::Format),
        }
    }

    fn open_v1(&self, sealed: &[u8]) -> Result<OpenedCard, OpenError> {
        if sealed.len() < HEADER_LEN + 16 {
            return Err(OpenError::Format);
        }
        let mut eph_pub = [0u8; PUBLIC_KEY_LEN];
        eph_pub.copy_from_slice(&sealed[1..1 + PUBLIC_KEY_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1 + PUBLIC_KEY_LEN..HEADER_LEN]);
        let secret = self.decrypt(
            &eph_pub,
            nonce,
            &aad(&eph_pub, self.public.as_bytes()),
            &sealed[HEADER_LEN..],
            content_key,
        )?;
        Ok(OpenedCard {
            secret,
            binding: None,
            eph_pub,
        })
    }

    fn open_v2(&self, sealed: &[u8]) -> Result<OpenedCard, OpenError> {
        let parsed = parse_v2(sealed).map_err(|_| OpenError::Format)?;
        let header = &sealed[..parsed.header_len];
        let secret = self.decrypt(
            &parsed.eph_pub,
            parsed.nonce,
            &aad_v2(header, self.public.as_bytes()),
            &sealed[parsed.header_len..],
            content_key_v2,
        )?;
        Ok(OpenedCard {
            secret,
            binding: Some(parsed.binding),
            eph_pub: parsed.eph_pub,
        })
    }

    fn decrypt(
        &self,
        eph_pub: &[u8; PUBLIC_KEY_LEN],
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        body: &[u8],
        derive: DeriveKey,
    ) -> Result<CardSecret, OpenError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*eph_pub));
        if !shared.was_contributory() {
            return Err(OpenError::Authentication);
        }
        let key = derive(shared.as_bytes(), eph_pub, self.public.as_bytes());
        let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| OpenError::Authentication)?;
        let opening = LessSafeKey::new(unbound);
        let mut body = body.to_vec();
        let plain = opening
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| OpenError::Authentication)?;
        serde_json::from_slice(plain).map_err(|_| OpenError::Content)
    }
}

/// The first field in which a binding differs from the payment request it
/// came with, or `None` when it matches. The request's `amount` is the
/// amount charged, tip included, as the binding's is.
pub fn binding_mismatch(binding: &CardBinding, request: &PaymentBody) -> Option<&'static str> {
    if binding.payment_id != request.payment_id {
        Some("payment_id")
    } else if binding.device_id != request.device_id {
        Some("device_id")
    } else if binding.amount_minor != request.amount {
        Some("amount")
    } else if binding.currency != request.currency {
        Some("currency")
    } else if wire::entry_mode_name(binding.entry_mode) != request.entry_mode {
        Some("entry_mode")
    } else if wire::network_name(binding.network) != request.network {
        Some("network")
    } else if binding.last4 != request.last4 {
        Some("last4")
    } else {
        None
    }
}

/// Why a version-2 read is not taken as a certified reader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReaderCheckError {
    #[error("the request carries no reader certificate or no reader signature")]
    Missing,
    #[error("the reader certificate is malformed or not signed by a trusted reader authority")]
    Untrusted,
    #[error("the reader certificate names another reader serial than the card data")]
    Serial,
    #[error("the card data is not signed by the certified reader's key")]
    Signature,
}

/// The identity key of the reader that read a version-2 blob: the request's
/// `certificate` must be signed by one of `authorities` and name the
/// `binding`'s reader serial, and `signature` must be that key's signature
/// of the whole `sealed` blob under `reader_trust::CARD_CONTEXT`. Anyone
/// can seal a blob naming any serial and counter to the processor's public
/// key; this is what ties it to the reader.
pub fn reader_signer(
    binding: &CardBinding,
    sealed: &[u8],
    certificate: Option<&[u8]>,
    signature: Option<&[u8]>,
    authorities: &[[u8; reader_trust::PUBLIC_KEY_LEN]],
) -> Result<[u8; reader_trust::PUBLIC_KEY_LEN], ReaderCheckError> {
    let (Some(certificate), Some(signature)) = (certificate, signature) else {
        return Err(ReaderCheckError::Missing);
    };
    let certificate =
        ReaderCertificate::decode(certificate).map_err(|_| ReaderCheckError::Untrusted)?;
    certificate
        .verify(authorities)
        .map_err(|_| ReaderCheckError::Untrusted)?;
    if certificate.serial != binding.reader_serial {
        return Err(ReaderCheckError::Serial);
    }
    reader_trust::verify(&certificate.public_key, CARD_CONTEXT, sealed, signature)
        .map_err(|_| ReaderCheckError::Signature)?;
    Ok(certificate.public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_card_is_luhn_valid() {
        for c in test_cards() {
            assert!(luhn_valid(c.pan), "{}", c.pan);
            assert_eq!(decide(c.pan), c.outcome);
        }
        assert!(!luhn_valid("4242424242424241"));
    }

    fn binding(card: &TestCard) -> CardBinding {
        CardBinding {
            payment_id: "pay-1".into(),
            device_id: "till-1".into(),
            amount_minor: 1_000,
            currency: "EUR".into(),
            reader_serial: "WP3-1".into(),
            counter: 7,
            phone_nonce: [3; pos_rules::card_seal::PHONE_NONCE_LEN],
            read_at_ms: 1_800_000_000_000,
            entry_mode: pos_rules::policy::EntryMode::Chip,
            network: card.network,
            last4: card.last4().into(),
            fingerprint: "ab12".into(),
        }
    }

    #[test]
    fn a_v2_blob_opens_with_its_binding_and_only_with_the_processor_key() {
        let keys = ProcessorKeys::from_seed(1);
        let card = &test_cards()[3];
        let sealed =
            pos_rules::card_seal::seal(&binding(card), &card.secret(), &keys.public_key()).unwrap();
        let opened = keys.open(&sealed).unwrap();
        assert_eq!(opened.secret, card.secret());
        assert_eq!(opened.binding, Some(binding(card)));
        assert_eq!(opened.eph_pub, parse_v2(&sealed).unwrap().eph_pub);
        let other = ProcessorKeys::from_seed(2);
        assert_eq!(other.open(&sealed), Err(OpenError::Authentication));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(keys.open(&tampered), Err(OpenError::Authentication));
        assert_eq!(keys.open(&sealed[..10]), Err(OpenError::Format));
        assert_eq!(keys.open(&[]), Err(OpenError::Format));
        assert_eq!(keys.open(&[3; 100]), Err(OpenError::Format));
    }

    #[test]
    fn a_changed_header_byte_fails_to_open() {
        let keys = ProcessorKeys::from_seed(1);
        let card = &test_cards()[0];
        let sealed =
            pos_rules::card_seal::seal(&binding(card), &card.secret(), &keys.public_key()).unwrap();
        let header_len = parse_v2(&sealed).unwrap().header_len;
        for i in 1..header_len {
            let mut changed = sealed.clone();
            changed[i] ^= 0x01;
            // Either the header no longer reads, or it reads but the AEAD
            // refuses it: never a blob that opens with another binding.
            assert!(
                matches!(
                    keys.open(&changed),
                    Err(OpenError::Format | OpenError::Authentication)
                ),
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_v2_read_is_taken_only_with_its_certified_readers_signature() {
        use pos_rules::reader_trust::{ReaderAuthority, ReaderIdentity};
        let keys = ProcessorKeys::from_seed(1);
        let card = &test_cards()[0];
        let b = binding(card);
        let sealed = pos_rules::card_seal::seal(&b, &card.secret(), &keys.public_key()).unwrap();
        let trusted = ReaderAuthority::from_seed(&[1; 32]).unwrap();
        let untrusted = ReaderAuthority::from_seed(&[2; 32]).unwrap();
        let authorities = [trusted.public_key()];
        let reader = ReaderIdentity::provision(&[7; 32], &trusted, "WP3-1", "Wisepad 3").unwrap();
        let cert = reader.certificate().encode();
        let sig = reader.sign(CARD_CONTEXT, &sealed);
        let check = |cert: Option<&[u8]>, sig: Option<&[u8]>| {
            reader_signer(&b, &sealed, cert, sig, &authorities)
        };
        assert_eq!(check(Some(&cert), Some(&sig)), Ok(reader.public_key()));
        assert_eq!(check(None, Some(&sig)), Err(ReaderCheckError::Missing));
        assert_eq!(check(Some(&cert), None), Err(ReaderCheckError::Missing));
        assert_eq!(
            check(Some(&[1, 2, 3]), Some(&sig)),
            Err(ReaderCheckError::Untrusted)
        );
        // The same key certified by an authority the processor does not trust.
        let foreign = ReaderIdentity::provision(&[7; 32], &untrusted, "WP3-1", "Wisepad 3")
            .unwrap()
            .certificate()
            .encode();
        assert_eq!(
            check(Some(&foreign), Some(&sig)),
            Err(ReaderCheckError::Untrusted)
        );
        // A certified reader of another serial signing this blob.
        let other = ReaderIdentity::provision(&[8; 32], &trusted, "WP3-2", "Wisepad 3").unwrap();
        assert_eq!(
            check(
                Some(&other.certificate().encode()),
                Some(&other.sign(CARD_CONTEXT, &sealed))
            ),
            Err(ReaderCheckError::Serial)
        );
        // The right certificate, a signature by another key, of another
        // context, or of other bytes.
        let impostor =
            ReaderIdentity::with_certificate(&[9; 32], reader.certificate().clone()).unwrap();
        for bad in [
            impostor.sign(CARD_CONTEXT, &sealed),
            reader.sign(reader_trust::HANDSHAKE_CONTEXT, &sealed),
            reader.sign(CARD_CONTEXT, &sealed[1..]),
        ] {
            assert_eq!(
                check(Some(&cert), Some(&bad)),
                Err(ReaderCheckError::Signature)
            );
        }
    }

    #[test]
    fn a_v1_blob_opens_unbound() {
        let keys = ProcessorKeys::from_seed(1);
        let card = &test_cards()[0];
        let sealed = pos_rules::card_seal::seal_v1(&card.secret(), &keys.public_key()).unwrap();
        let opened = keys.open(&sealed).unwrap();
        assert_eq!(opened.secret, card.secret());
        assert_eq!(opened.binding, None);
        assert_eq!(&opened.eph_pub[..], &sealed[1..1 + PUBLIC_KEY_LEN]);
    }

    #[test]
    fn a_binding_is_checked_field_by_field_against_the_request() {
        let card = &test_cards()[0];
        let b = binding(card);
        let request = PaymentBody {
            device_id: "till-1".into(),
            payment_id: "pay-1".into(),
            order_id: "o-1".into(),
            amount: 1_000,
            currency: "EUR".into(),
            tip: None,
            entry_mode: "chip".into(),
            network: "visa".into(),
            last4: "4242".into(),
            taken_at_ms: None,
            deadline_ms: None,
            attempt: None,
            card_data: String::new(),
            reader_certificate: None,
            reader_signature: None,
            account_id: None,
            location_id: None,
        };
        assert_eq!(binding_mismatch(&b, &request), None);
        type Change = (&'static str, fn(&mut PaymentBody));
        let changes: [Change; 7] = [
            ("payment_id", |r| r.payment_id = "pay-2".into()),
            ("device_id", |r| r.device_id = "till-2".into()),
            ("amount", |r| r.amount = 99_999),
            ("currency", |r| r.currency = "USD".into()),
            ("entry_mode", |r| r.entry_mode = "manual".into()),
            ("network", |r| r.network = "mastercard".into()),
            ("last4", |r| r.last4 = "4444".into()),
        ];
        for (field, change) in changes {
            let mut r = request.clone();
            change(&mut r);
            assert_eq!(binding_mismatch(&b, &r), Some(field));
        }
    }
}
