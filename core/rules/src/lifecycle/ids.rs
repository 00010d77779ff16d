//! Stable identifiers: [`PaymentId`], [`OrderId`] and [`StaffId`] (B2).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted from the app.
pub const ID_MAX_CHARS: usize = 64;

/// Why an identifier supplied by the app was refused. The refused value is
/// never echoed: an app might pass personal data where an id is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is the empty string.
    #[error("{what} is empty")]
    Empty {
        /// Which identifier, e.g. `"payment id"`.
        what: &'static str,
    },
    /// The identifier is longer than [`ID_MAX_CHARS`].
    #[error("{what} is {chars} characters long; at most 64 are allowed")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// Its length in characters.
        chars: usize,
    },
    /// The identifier holds a character outside `A-Z a-z 0-9 _ -`.
    #[error("{what} has a character other than A-Z a-z 0-9 _ - at position {position}")]
    InvalidCharacter {
        /// Which identifier.
        what: &'static str,
        /// Zero-based position of the first bad character.
        position: usize,
    },
}

/// The bytes an identifier may hold: `A-Z a-z 0-9 _ -`.
const ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    t
};

fn validate_id(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    // Byte by byte (this runs for every identifier a snapshot holds): the
    // first byte refused is ASCII or starts a multi-byte character, and
    // every byte before it is ASCII, so its index is also its position in
    // characters.
    if let Some(position) = s.bytes().position(|b| !ID_BYTES[usize::from(b)]) {
        return Err(IdError::InvalidCharacter { what, position });
    }
    // Only ASCII is left, so bytes and characters are the same count.
    if s.len() > ID_MAX_CHARS {
        return Err(IdError::TooLong {
            what,
            chars: s.len(),
        });
    }
    Ok(())
}

/// `prefix` followed by the 32 lowercase hex digits of `bytes`.
fn hex_id(prefix: &str, bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(prefix.len() + 32);
    s.push_str(prefix);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        // Written as a string without a copy; read with the same check as
        // `parse`, from a borrowed string when the format allows it.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).map_err(E::custom)
                    }
                    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<$name, E> {
                        $name::try_from(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl $name {
            /// Validates an identifier supplied by the app: 1 to 64
            /// characters of `A-Z a-z 0-9 _ -`. Deserialisation applies the
            /// same check.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate_id($what, s)?;
                Ok($name(s.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                validate_id($what, &s)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

string_id!(
    /// The stable identifier of one card payment, chosen once at creation
    /// (B2) and used for the online attempt and for every forwarding retry,
    /// so that the processor can deduplicate: one tap is charged at most once.
    ///
    /// Either the app's own idempotency key ([`PaymentId::parse`]) or
    /// generated from 128 random bits ([`PaymentId::from_random`]).
    PaymentId,
    "payment id"
);

string_id!(
    /// The identifier of one order (a sale that one or more tenders pay).
    OrderId,
    "order id"
);

string_id!(
    /// The identifier of a staff member, as the app knows them (R12, B12).
    /// Use an opaque id, not a name or an email address.
    StaffId,
    "staff id"
);

impl PaymentId {
    /// A new id, `pay_` followed by 32 lowercase hex digits.
    ///
    /// `bytes` must come from a cryptographically secure random generator
    /// (the platform's, through the app): two payments given the same bytes
    /// get the same id, and the processor would treat the second as a retry
    /// of the first.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        PaymentId(hex_id("pay_", bytes))
    }
}

impl OrderId {
    /// A new id, `ord_` followed by 32 lowercase hex digits. `bytes` must be
    /// random, as for [`PaymentId::from_random`].
    pub fn from_random(bytes: [u8; 16]) -> Self {
        OrderId(hex_id("ord_", bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // --- identifiers -----------------------------------------------------

    #[test]
    fn app_keys_are_validated() {
        assert_eq!(
            PaymentId::parse("order-42_card-1").map(|p| p.to_string()),
            Ok("order-42_card-1".to_owned())
        );
        assert!(PaymentId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            PaymentId::parse(""),
            Err(IdError::Empty { what: "payment id" })
        );
        assert_eq!(
            PaymentId::parse(&"a".repeat(65)),
            Err(IdError::TooLong {
                what: "payment id",
                chars: 65
            })
        );
        for (bad, position) in [("a b", 1), ("é", 0), ("x/y", 1), ("a.b", 1), ("ok\n", 2)] {
            assert_eq!(
                OrderId::parse(bad),
                Err(IdError::InvalidCharacter {
                    what: "order id",
                    position
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn id_errors_do_not_echo_the_value() {
        let err = StaffId::parse("jane.doe@example.com").expect_err("refused");
        assert!(!err.to_string().contains("jane"));
        assert!(!format!("{err:?}").contains("jane"));
    }

    #[test]
    fn random_ids_are_prefixed_lowercase_hex() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0xAB;
        bytes[15] = 0x01;
        let id = PaymentId::from_random(bytes);
        assert_eq!(id.as_str(), "pay_ab000000000000000000000000000001");
        assert_eq!(id.as_str().len(), 36);
        assert!(PaymentId::parse(id.as_str()).is_ok(), "valid as a key too");
        assert_eq!(
            OrderId::from_random([0xff; 16]).as_str(),
            format!("ord_{}", "f".repeat(32))
        );
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let id = PaymentId::parse("k1").expect("valid");
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, r#""k1""#);
        assert_eq!(serde_json::from_str::<PaymentId>(&json).expect("parse"), id);
        assert!(serde_json::from_str::<PaymentId>(r#""no spaces""#).is_err());
        assert!(serde_json::from_str::<StaffId>(r#""""#).is_err());
    }
}
