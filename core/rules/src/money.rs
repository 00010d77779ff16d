//! Money: amounts in minor units of an ISO 4217 currency.
//!
//! Owns the currency table (code → minor-unit exponent) and checked money
//! arithmetic. There are no floats anywhere: an amount is an `i64` count of
//! the currency's minor unit (cents for USD, yen for JPY, fils for KWD).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a currency or an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not an ISO 4217 currency this library knows.
    #[error("unknown currency code {code:?}")]
    UnknownCurrency { code: String },
    /// An amount that must be positive was zero or negative.
    #[error("amount must be positive, got {minor_units} minor units")]
    NotPositive { minor_units: i64 },
    /// Two amounts of different currencies were combined.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    /// The result does not fit in 64 bits of minor units.
    #[error("amount overflow")]
    Overflow,
}

/// ISO 4217 currencies with their minor-unit exponent. Kept sorted by code.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

/// A known ISO 4217 currency. Construct with [`Currency::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    /// Parses an upper-case three-letter ISO 4217 code.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        // Echo the code only when it has the shape of one (3 capital letters).
        let unknown = || MoneyError::UnknownCurrency {
            code: if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
                code.to_owned()
            } else {
                "(not a 3-letter code)".to_owned()
            },
        };
        let idx = CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .map_err(|_| unknown())?;
        let (c, exponent) = CURRENCIES[idx];
        let b = c.as_bytes();
        Ok(Currency {
            code: [b[0], b[1], b[2]],
            exponent,
        })
    }

    /// The three-letter code, e.g. `"USD"`.
    pub fn code(&self) -> &str {
        // The bytes come from the ASCII table above.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of decimal places of the minor unit (USD 2, JPY 0, KWD 3).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// Every currency this library knows, for UIs and tests.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .filter_map(|(c, _)| Currency::parse(c).ok())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Written as its code, read back through [`Currency::parse`], without a
/// heap copy either way (a snapshot holds one per payment and per order).
impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 4217 currency code")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Currency, E> {
                Currency::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_owned()
    }
}

/// An amount of money: minor units of one currency. May be zero or negative
/// (totals, balances); use [`Money::positive`] where a payment amount is meant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

impl Money {
    /// Any amount, including zero and negative ones.
    pub fn new(minor_units: i64, currency: Currency) -> Self {
        Money {
            minor_units,
            currency,
        }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Money::new(0, currency)
    }

    /// A strictly positive amount, as every payment and tender must be.
    pub fn positive(minor_units: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor_units <= 0 {
            return Err(MoneyError::NotPositive { minor_units });
        }
        Ok(Money::new(minor_units, currency))
    }

    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.minor_units == 0
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        Ok(())
    }

    /// `self + other`, refusing a currency mismatch or an overflow.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let sum = self
            .minor_units
            .checked_add(other.minor_units)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(sum, self.currency))
    }

    /// `self - other`, refusing a currency mismatch or an overflow.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let diff = self
            .minor_units
            .checked_sub(other.minor_units)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(diff, self.currency))
    }

    /// Sums amounts that must all be in `currency`.
    pub fn sum<'a>(
        currency: Currency,
        items: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        items
            .into_iter()
            .try_fold(Money::zero(currency), |acc, m| acc.checked_add(m))
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Formats as `12.34 USD`, `1200 JPY`, `1.500 KWD` (no locale, no floats).
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = u32::from(self.currency.exponent);
        let sign = if self.minor_units < 0 { "-" } else { "" };
        let abs = self.minor_units.unsigned_abs();
        if exp == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exp);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
            width = exp as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::parse(code).expect("known currency")
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(c("JPY").exponent(), 0);
        assert_eq!(c("USD").exponent(), 2);
        assert_eq!(c("KWD").exponent(), 3);
    }

    #[test]
    fn unknown_and_malformed_codes_are_refused() {
        for bad in ["", "usd", "XXX", "USDD", "US", "€"] {
            assert!(
                matches!(
                    Currency::parse(bad),
                    Err(MoneyError::UnknownCurrency { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn positive_refuses_zero_and_negative() {
        assert_eq!(
            Money::positive(0, c("USD")),
            Err(MoneyError::NotPositive { minor_units: 0 })
        );
        assert!(Money::positive(-5, c("USD")).is_err());
        assert_eq!(Money::positive(5, c("USD")).map(|m| m.minor_units()), Ok(5));
    }

    #[test]
    fn arithmetic_is_checked() {
        let usd = c("USD");
        let max = Money::new(i64::MAX, usd);
        assert_eq!(
            max.checked_add(&Money::new(1, usd)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::new(i64::MIN, usd).checked_sub(&Money::new(1, usd)),
            Err(MoneyError::Overflow)
        );
        assert!(matches!(
            Money::new(1, usd).checked_add(&Money::new(1, c("EUR"))),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        let items = [Money::new(150, usd), Money::new(250, usd)];
        assert_eq!(Money::sum(usd, &items), Ok(Money::new(400, usd)));
    }

    #[test]
    fn display_uses_the_exponent() {
        assert_eq!(Money::new(1234, c("USD")).to_string(), "12.34 USD");
        assert_eq!(Money::new(-5, c("USD")).to_string(), "-0.05 USD");
        assert_eq!(Money::new(1200, c("JPY")).to_string(), "1200 JPY");
        assert_eq!(Money::new(1500, c("KWD")).to_string(), "1.500 KWD");
    }

    #[test]
    fn serde_round_trips_and_refuses_unknown_codes() {
        let m = Money::new(99, c("EUR"));
        let json = serde_json::to_string(&m).expect("serialize");
        assert_eq!(json, r#"{"minor_units":99,"currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).expect("parse"), m);
        assert!(serde_json::from_str::<Money>(r#"{"minor_units":1,"currency":"ABC"}"#).is_err());
    }
}
