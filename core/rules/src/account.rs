//! The merchant account and location payments are taken for (SPEC B7).
//!
//! A device belongs to one merchant account and location at a time. Every
//! payment, receipt and audit entry records the account it was taken under,
//! and is forwarded under that account only, whatever account the device
//! has switched to since (`PosEngine::switch_account`). A processor refuses
//! a payment forwarded under another account (`account_mismatch`); the
//! engine reports that as blocked forwarding, never as a decline.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A merchant account and one of its locations, as the processor names
/// them: each 1–64 of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MerchantAccount {
    pub account_id: String,
    pub location_id: String,
}

/// Why an account or location id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be 1-64 characters of A-Z a-z 0-9 . _ -")]
pub struct AccountError {
    pub field: &'static str,
}

fn id_ok(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl MerchantAccount {
    /// Checks raw ids from the app.
    pub fn new(account_id: &str, location_id: &str) -> Result<Self, AccountError> {
        if !id_ok(account_id) {
            return Err(AccountError {
                field: "account_id",
            });
        }
        if !id_ok(location_id) {
            return Err(AccountError {
                field: "location_id",
            });
        }
        Ok(MerchantAccount {
            account_id: account_id.to_owned(),
            location_id: location_id.to_owned(),
        })
    }

    /// Whether both ids are well-formed (records read back from a store or
    /// the wire are checked again).
    pub fn is_valid(&self) -> bool {
        id_ok(&self.account_id) && id_ok(&self.location_id)
    }
}

impl fmt::Display for MerchantAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account_id, self.location_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        let a = MerchantAccount::new("acct_1", "loc.paris-2").unwrap();
        assert_eq!(a.to_string(), "acct_1/loc.paris-2");
        assert!(a.is_valid());
        assert_eq!(
            MerchantAccount::new("", "loc"),
            Err(AccountError {
                field: "account_id"
            })
        );
        assert_eq!(
            MerchantAccount::new("acct", "loc/1"),
            Err(AccountError {
                field: "location_id"
            })
        );
        assert!(MerchantAccount::new(&"a".repeat(65), "l").is_err());
    }
}
