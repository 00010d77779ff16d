//! The simulator's test cards and the opening of sealed card data.
//!
//! The processor holds the X25519 private key that readers seal card data to
//! (`pos_core::card_seal`); this module opens it. The PAN decides the
//! outcome through the table of test cards.

use std::fmt;

use pos_core::card_seal::{aad, content_key, CardSecret, HEADER_LEN, PUBLIC_KEY_LEN, SEAL_VERSION};
use pos_core::lifecycle::DeclineReason;
use pos_core::policy::Network;
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
    #[error("card data is too short or of an unknown version")]
    Format,
    #[error("card data does not open with the processor's key")]
    Authentication,
    #[error("card data content is malformed")]
    Content,
}

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
    pub fn public_key(&self) -> pos_core::card_seal::ProcessorKey {
        pos_core::card_seal::ProcessorKey(*self.public.as_bytes())
    }

    /// Opens sealed card data.
    pub fn open(&self, sealed: &[u8]) -> Result<CardSecret, OpenError> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != SEAL_VERSION {
            return Err(OpenError::Format);
        }
        let mut eph = [0u8; PUBLIC_KEY_LEN];
        eph.copy_from_slice(&sealed[1..1 + PUBLIC_KEY_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1 + PUBLIC_KEY_LEN..HEADER_LEN]);
        let shared = self.secret.diffie_hellman(&PublicKey::from(eph));
        if !shared.was_contributory() {
            return Err(OpenError::Authentication);
        }
        let key = content_key(shared.as_bytes(), &eph, self.public.as_bytes());
        let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| OpenError::Authentication)?;
        let opening = LessSafeKey::new(unbound);
        let mut body = sealed[HEADER_LEN..].to_vec();
        let plain = opening
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&eph, self.public.as_bytes())),
                &mut body,
            )
            .map_err(|_| OpenError::Authentication)?;
        serde_json::from_slice(plain).map_err(|_| OpenError::Content)
    }
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

    #[test]
    fn sealed_card_data_opens_only_with_the_processor_key() {
        let keys = ProcessorKeys::from_seed(1);
        let card = &test_cards()[3];
        let sealed = pos_core::card_seal::seal(&card.secret(), &keys.public_key()).unwrap();
        assert_eq!(keys.open(&sealed).unwrap(), card.secret());
        let other = ProcessorKeys::from_seed(2);
        assert_eq!(other.open(&sealed), Err(OpenError::Authentication));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(keys.open(&tampered), Err(OpenError::Authentication));
        assert_eq!(keys.open(&sealed[..10]), Err(OpenError::Format));
    }
}
