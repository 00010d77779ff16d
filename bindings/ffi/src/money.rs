//! Money as the app sees it: minor units and an ISO 4217 code. It depends
//! on no other module of the crate, so that the error (whose refusals carry
//! amounts) and the records can both use it; the checked conversion from
//! the app, which fails with `PosError`, is in `types.rs`.

use pos_core::money as m;

/// An amount in minor units (cents, yen, fils) of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Money {
    /// The amount in minor units of `currency`.
    pub minor_units: i64,
    /// The ISO 4217 code, e.g. "USD".
    pub currency: String,
}

impl From<m::Money> for Money {
    fn from(x: m::Money) -> Self {
        Money {
            minor_units: x.minor_units(),
            currency: x.currency().code().to_owned(),
        }
    }
}
