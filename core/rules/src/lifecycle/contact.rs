//! The customer's contact details (R16, R17): never in clear in `Debug`,
//! `Display` or an error.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a contact detail was refused. The refused value is never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// The email address does not have the shape of one.
    #[error("invalid email address: {problem}")]
    InvalidEmail {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The phone number is not an international (E.164) number.
    #[error("invalid phone number: {problem}")]
    InvalidPhone {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A customer contact was made with neither an email nor a phone.
    #[error("a customer contact needs an email address or a phone number")]
    Empty,
}

const EMAIL_MAX_CHARS: usize = 254;
const EMAIL_LOCAL_MAX_CHARS: usize = 64;
const DOMAIN_MAX_CHARS: usize = 253;
const DOMAIN_LABEL_MAX_CHARS: usize = 63;
const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~.-";

/// An email address whose shape was checked. Never shown in clear by
/// `Debug` or `Display`; see [`EmailAddress::reveal`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Checks the shape `local@domain.tld` (surrounding spaces are trimmed):
    /// one `@`; a local part of 1–64 letters, digits and
    /// ``!#$%&'*+/=?^_`{|}~.-`` with no leading, trailing or double dot; a
    /// domain of at least two dot-separated labels of letters, digits and
    /// inner hyphens, with a top-level label that is not all digits.
    /// Quoted local parts and address literals are not accepted.
    pub fn parse(s: &str) -> Result<Self, ContactError> {
        let bad = |problem| Err(ContactError::InvalidEmail { problem });
        let s = s.trim();
        if s.is_empty() {
            return bad("empty");
        }
        if s.chars().count() > EMAIL_MAX_CHARS {
            return bad("longer than 254 characters");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return bad("no @");
        };
        if domain.contains('@') {
            return bad("more than one @");
        }
        if local.is_empty() || local.chars().count() > EMAIL_LOCAL_MAX_CHARS {
            return bad("the part before @ must be 1 to 64 characters");
        }
        if !local
            .chars()
            .all(|c| c.is_alphanumeric() || LOCAL_SPECIALS.contains(c))
        {
            return bad("the part before @ has a character not allowed there");
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return bad("the part before @ has a misplaced dot");
        }
        if domain.chars().count() > DOMAIN_MAX_CHARS {
            return bad("the domain is longer than 253 characters");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return bad("the domain needs a dot");
        }
        for label in &labels {
            if label.is_empty() || label.chars().count() > DOMAIN_LABEL_MAX_CHARS {
                return bad("a domain label is empty or longer than 63 characters");
            }
            if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
                return bad("the domain has a character not allowed there");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return bad("a domain label starts or ends with a hyphen");
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return bad("the top-level domain is all digits");
        }
        Ok(EmailAddress(s.to_owned()))
    }

    /// The address in clear: only for the code that sends the receipt or
    /// contacts the customer. Never log it.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// A masked hint for the app's UI, e.g. `j***@e***.com` for
    /// `jane@example.com`.
    pub fn hint(&self) -> String {
        let (local, domain) = self.0.split_once('@').unwrap_or(("", ""));
        let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
        let tld = domain.rsplit('.').next().unwrap_or("");
        format!("{}***@{}***.{}", first(local), first(domain), tld)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailAddress(<redacted>)")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted email>")
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = ContactError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        EmailAddress::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(e: EmailAddress) -> String {
        e.0
    }
}

const PHONE_MIN_DIGITS: usize = 7;
const PHONE_MAX_DIGITS: usize = 15;

/// A phone number in international (E.164) form, `+` then 7–15 digits.
/// Never shown in clear by `Debug` or `Display`; see [`PhoneNumber::reveal`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Checks and normalises an international number: a leading `+`, then
    /// 7 to 15 digits, the first not `0`; spaces, `-`, `.`, `(` and `)` are
    /// allowed between digits and removed. National numbers (without the
    /// country code) are refused: the app, which knows the shop's country,
    /// adds it.
    pub fn parse(s: &str) -> Result<Self, ContactError> {
        let bad = |problem| Err(ContactError::InvalidPhone { problem });
        let s = s.trim();
        let Some(rest) = s.strip_prefix('+') else {
            return bad("must start with + and the country code");
        };
        let mut digits = String::with_capacity(PHONE_MAX_DIGITS + 1);
        digits.push('+');
        for c in rest.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
            } else if !matches!(c, ' ' | '-' | '.' | '(' | ')') {
                return bad("has a character other than digits and separators");
            }
        }
        let n = digits.len() - 1;
        if !(PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&n) {
            return bad("must have 7 to 15 digits");
        }
        if digits.as_bytes().get(1) == Some(&b'0') {
            return bad("a country code never starts with 0");
        }
        Ok(PhoneNumber(digits))
    }

    /// The number in clear, `+` and digits: only for the code that sends the
    /// text message or contacts the customer. Never log it.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// A masked hint for the app's UI: the last two digits, e.g. `+***78`.
    pub fn hint(&self) -> String {
        let tail: String = self
            .0
            .chars()
            .skip(self.0.len().saturating_sub(2))
            .collect();
        format!("+***{tail}")
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber(<redacted>)")
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted phone>")
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = ContactError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PhoneNumber::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

/// How to reach the customer of an offline order, to collect a declined
/// payment later (R17). Holds an email, a phone, or both; never empty.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ContactRecord", into = "ContactRecord")]
pub struct CustomerContact {
    email: Option<EmailAddress>,
    phone: Option<PhoneNumber>,
}

/// The serialised form of [`CustomerContact`], checked on the way in.
#[derive(Serialize, Deserialize)]
struct ContactRecord {
    email: Option<EmailAddress>,
    phone: Option<PhoneNumber>,
}

impl CustomerContact {
    /// A contact with at least one of `email` and `phone`.
    pub fn new(
        email: Option<EmailAddress>,
        phone: Option<PhoneNumber>,
    ) -> Result<Self, ContactError> {
        if email.is_none() && phone.is_none() {
            return Err(ContactError::Empty);
        }
        Ok(CustomerContact { email, phone })
    }

    /// Parses raw values from the app; empty or blank strings count as absent.
    pub fn parse(email: Option<&str>, phone: Option<&str>) -> Result<Self, ContactError> {
        fn present(s: Option<&str>) -> Option<&str> {
            s.filter(|s| !s.trim().is_empty())
        }
        let email = present(email).map(EmailAddress::parse).transpose()?;
        let phone = present(phone).map(PhoneNumber::parse).transpose()?;
        CustomerContact::new(email, phone)
    }

    /// The email address, if captured.
    pub fn email(&self) -> Option<&EmailAddress> {
        self.email.as_ref()
    }

    /// The phone number, if captured.
    pub fn phone(&self) -> Option<&PhoneNumber> {
        self.phone.as_ref()
    }
}

impl TryFrom<ContactRecord> for CustomerContact {
    type Error = ContactError;
    fn try_from(r: ContactRecord) -> Result<Self, Self::Error> {
        CustomerContact::new(r.email, r.phone)
    }
}

impl From<CustomerContact> for ContactRecord {
    fn from(c: CustomerContact) -> Self {
        ContactRecord {
            email: c.email,
            phone: c.phone,
        }
    }
}

impl fmt::Debug for CustomerContact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerContact")
            .field("email", &self.email)
            .field("phone", &self.phone)
            .finish()
    }
}

impl fmt::Display for CustomerContact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.email, &self.phone) {
            (Some(_), Some(_)) => f.write_str("<redacted email and phone>"),
            (Some(_), None) => f.write_str("<redacted email>"),
            (None, _) => f.write_str("<redacted phone>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::lifecycle::{
        DeclineNotice, DeclineReason, OrderId, PaymentId, PaymentState, ReceiptChannel,
        ReceiptRequest,
    };
    // --- contacts and redaction ------------------------------------------

    const PHONE_DIGITS: &str = "819012345678";

    #[test]
    fn email_shapes() {
        for ok in [EMAIL, "a@b.co", " x_y@sub.domain.org ", "名前@例え.jp"] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "jane@",
            "jane@example",
            "jane@@example.com",
            "ja ne@example.com",
            ".jane@example.com",
            "jane.@example.com",
            "ja..ne@example.com",
            "jane@-example.com",
            "jane@example..com",
            "jane@1.2.3.4",
            "jane@exa_mple.com",
            "\"jane\"@example.com",
        ] {
            assert!(
                matches!(
                    EmailAddress::parse(bad),
                    Err(ContactError::InvalidEmail { .. })
                ),
                "{bad:?}"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&long_local).is_err());
    }

    #[test]
    fn phone_shapes() {
        assert_eq!(
            PhoneNumber::parse(PHONE).map(|p| p.reveal().to_owned()),
            Ok(format!("+{PHONE_DIGITS}"))
        );
        assert!(PhoneNumber::parse("+1 (415) 555-0100").is_ok());
        for bad in [
            "",
            "090-1234-5678",
            "+0 123 4567",
            "+123456",
            "+1234567890123456",
            "+1 415 555 01OO",
            "++14155550100",
            "+1415555O100",
        ] {
            assert!(
                matches!(
                    PhoneNumber::parse(bad),
                    Err(ContactError::InvalidPhone { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn contact_needs_one_way_to_reach_the_customer() {
        assert_eq!(
            CustomerContact::parse(None, Some("  ")),
            Err(ContactError::Empty)
        );
        let c = CustomerContact::parse(Some(EMAIL), None).expect("email only");
        assert_eq!(c.email().map(|e| e.reveal()), Some(EMAIL));
        assert!(c.phone().is_none());
        assert!(serde_json::from_str::<CustomerContact>(r#"{"email":null,"phone":null}"#).is_err());
        assert!(
            serde_json::from_str::<CustomerContact>(r#"{"email":"nope","phone":null}"#).is_err()
        );
    }

    #[test]
    fn contacts_round_trip_in_clear_for_the_encrypted_store() {
        let c = CustomerContact::parse(Some(EMAIL), Some(PHONE)).expect("valid");
        let json = serde_json::to_string(&c).expect("serialize");
        assert!(json.contains(EMAIL));
        assert_eq!(
            serde_json::from_str::<CustomerContact>(&json).expect("parse"),
            c
        );
    }

    #[test]
    fn hints_mask_most_of_the_value() {
        let e = EmailAddress::parse("jane@example.com").expect("valid");
        assert_eq!(e.hint(), "j***@e***.com");
        let p = PhoneNumber::parse(PHONE).expect("valid");
        assert_eq!(p.hint(), "+***78");
    }

    /// Substrings of the test email and phone that must never be printed.
    fn assert_redacted(text: &str) {
        for secret in [
            EMAIL,
            "jane",
            "doe",
            "example",
            PHONE,
            PHONE_DIGITS,
            "1234",
            "5678",
        ] {
            assert!(!text.contains(secret), "{secret:?} leaked in {text:?}");
        }
    }

    #[test]
    fn contact_details_never_appear_in_debug_display_or_errors() {
        let email = EmailAddress::parse(EMAIL).expect("valid");
        let phone = PhoneNumber::parse(PHONE).expect("valid");
        let contact =
            CustomerContact::new(Some(email.clone()), Some(phone.clone())).expect("valid");
        let order_id = OrderId::parse("o1").expect("valid");
        let receipt_email =
            ReceiptRequest::queue(order_id.clone(), ReceiptChannel::Email(email.clone()), T0);
        let receipt_sms =
            ReceiptRequest::queue(order_id.clone(), ReceiptChannel::Sms(phone.clone()), T0);
        let notice = DeclineNotice::for_payment(
            PaymentId::parse("p1").expect("valid"),
            order_id,
            usd(1250),
            &PaymentState::Declined {
                at: T0,
                reason: DeclineReason::InsufficientFunds,
            },
            Some(contact.clone()),
        )
        .expect("positive")
        .expect("declined");

        let printed = [
            format!("{email:?}"),
            format!("{email}"),
            format!("{email:#?}"),
            format!("{phone:?}"),
            format!("{phone}"),
            format!("{contact:?}"),
            format!("{contact:#?}"),
            format!("{contact}"),
            format!("{receipt_email:?}"),
            format!("{receipt_sms:#?}"),
            format!("{notice:?}"),
            format!("{notice:#?}"),
            format!("{:?}", Some(&contact)),
        ];
        for text in &printed {
            assert_redacted(text);
        }
        assert!(
            format!("{notice:?}").contains("12.50 USD"),
            "the amount is not secret"
        );

        // Errors about refused values do not carry them either.
        let bad_inputs = [
            "jane.doe@@example.com",
            "jane doe@example.com",
            "+81 90 1234 5678x",
        ];
        for bad in bad_inputs {
            let errs = [
                EmailAddress::parse(bad)
                    .err()
                    .map(|e| (e.to_string(), format!("{e:?}"))),
                PhoneNumber::parse(bad)
                    .err()
                    .map(|e| (e.to_string(), format!("{e:?}"))),
            ];
            for (display, debug) in errs.into_iter().flatten() {
                assert_redacted(&display);
                assert_redacted(&debug);
            }
        }
    }
}
