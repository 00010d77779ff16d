//! The life of one offline payment and what hangs off it (SPEC section 4,
//! R8, R15–R17, B2, B9).
//!
//! Owns:
//! - the stable identifiers [`PaymentId`], [`OrderId`] and [`StaffId`] (B2);
//! - the payment state machine: [`PaymentState`], its events
//!   [`PaymentEvent`] and its one transition function [`PaymentState::apply`]
//!   (pending → forwarding → approved | declined | expired, with
//!   failed-to-forward retries in between);
//! - the order badge [`OrderStatus`] and [`order_status`] (R15);
//! - the customer's contact details, [`EmailAddress`], [`PhoneNumber`] and
//!   [`CustomerContact`] (R17), the queued [`ReceiptRequest`] (R16) and the
//!   [`DeclineNotice`] (R17, B9).
//!
//! Everything here is pure and serde-serialisable: the store persists it, the
//! engine drives it. Contact details never appear in clear in `Debug`,
//! `Display` or an error message; only [`EmailAddress::reveal`] and
//! [`PhoneNumber::reveal`] (for the code that actually sends a receipt) and
//! serialisation (for the encrypted store) give them out. No type here holds
//! card data.

mod contact;
mod ids;
mod payment;
mod receipt;

pub use self::contact::*;
pub use self::ids::*;
pub use self::payment::*;
pub use self::receipt::*;

use crate::clock::Timestamp;
use crate::money::{Money, MoneyError};

/// Figures the lifecycle's tests share.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::money::Currency;

    pub(super) const T0: Timestamp = Timestamp(1_800_000_000_000);
    pub(super) const DEADLINE: Deadline = Deadline(Timestamp(1_800_000_000_000 + 86_400_000));
    pub(super) const EMAIL: &str = "jane.doe+shop@example.co.jp";
    pub(super) const PHONE: &str = "+81 90-1234-5678";

    pub(super) fn before() -> Timestamp {
        Timestamp(DEADLINE.0 .0 - 1)
    }

    pub(super) fn after() -> Timestamp {
        Timestamp(DEADLINE.0 .0 + 1)
    }

    pub(super) fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::parse("USD").expect("USD"))
    }
}
