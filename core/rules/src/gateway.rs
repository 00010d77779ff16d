//! The processor, seen from the engine: the [`Gateway`] trait and the JSON
//! protocol of the built-in HTTP gateway (`docs/gateway-openapi.yaml`).
//!
//! The engine calls a gateway to authorize an online payment, forward a
//! stored offline payment, probe the service and deliver a queued receipt.
//! The built-in `HttpGateway` (`pos_core::http_gateway`) speaks the protocol in
//! [`wire`]; an app may implement the trait itself (in Swift or Kotlin
//! through the FFI) to go through its own backend.
//!
//! Calls are blocking: the engine runs them on tokio's blocking pool, several
//! at a time, never under one of its locks. Every request that can charge a
//! card carries the payment's stable id as its idempotency key (B2), so a
//! retry after a lost answer can never charge twice.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::account::MerchantAccount;
use crate::clock::Timestamp;
use crate::lifecycle::{DeclineReason, ForwardErrorKind, OrderId, PaymentId};
use crate::money::Money;
use crate::policy::{EntryMode, Network};

/// A stored offline payment, as sent to the processor.
#[derive(Clone, PartialEq, Eq)]
pub struct ForwardRequest {
    pub device_id: String,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    /// The amount charged, tip included.
    pub amount: Money,
    pub tip: Option<Money>,
    pub entry_mode: EntryMode,
    pub network: Network,
    pub last4: String,
    pub taken_at: Timestamp,
    pub deadline: Timestamp,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The reader's card data, sealed for the processor.
    pub sealed_card_data: Vec<u8>,
    /// The certificate (`reader_trust::ReaderCertificate`, encoded) of the
    /// remembered reader that read the card, at the time the request is
    /// built; `None` for a vendor SDK's reader or a reader no longer
    /// remembered. The processor checks it against its reader authorities.
    pub reader_certificate: Option<Vec<u8>>,
    /// The reader's Ed25519 signature of `sealed_card_data`
    /// (`reader_trust::CARD_CONTEXT`), as stored with the payment; `None`
    /// for a vendor SDK's reader.
    pub reader_signature: Option<Vec<u8>>,
    /// For an online payment whose answer was lost: the authorization to
    /// send again (same id) instead of a forward. Set by the engine only.
    pub online: Option<AuthorizeRequest>,
    /// The merchant account and location the payment was taken under: it
    /// is sent under this account only (`None`: taken before the device was
    /// bound to one).
    pub account: Option<MerchantAccount>,
}

/// An online card payment to authorize now.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub device_id: String,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount: Money,
    pub tip: Option<Money>,
    pub entry_mode: EntryMode,
    pub network: Network,
    pub last4: String,
    pub sealed_card_data: Vec<u8>,
    /// The reader's certificate, as in [`ForwardRequest::reader_certificate`].
    pub reader_certificate: Option<Vec<u8>>,
    /// The reader's signature of `sealed_card_data`, as in
    /// [`ForwardRequest::reader_signature`].
    pub reader_signature: Option<Vec<u8>>,
    /// The merchant account and location the payment is taken under.
    pub account: Option<MerchantAccount>,
}

/// A queued receipt to deliver (R16). The address leaves the device only
/// here, over TLS, to the processor's receipt service.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiptDelivery {
    pub device_id: String,
    /// Stable id of the request (its idempotency key).
    pub receipt_id: String,
    pub order_id: OrderId,
    /// `"email"` or `"sms"`.
    pub channel: String,
    pub address: String,
    /// The merchant account and location the receipt was requested under.
    pub account: Option<MerchantAccount>,
}

macro_rules! redacted_debug {
    ($t:ty, $($field:ident),*) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}
redacted_debug!(ForwardRequest, payment_id, order_id, amount, attempt);
redacted_debug!(AuthorizeRequest, payment_id, order_id, amount);
redacted_debug!(ReceiptDelivery, receipt_id, order_id, channel);

/// The processor's decision on a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayDecision {
    Approved { processor_ref: String },
    Declined { reason: DeclineReason },
}

/// A question about one payment id, asked when its outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    pub device_id: String,
    pub payment_id: PaymentId,
    /// The merchant account the payment was taken under.
    pub account: Option<MerchantAccount>,
}

/// What the processor knows about a payment id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentLookup {
    /// It decided: this is the decision it returned (or would return) to
    /// the payment's own request.
    Decided(GatewayDecision),
    /// It has no record of the id. It also closes the id: a request with it
    /// that arrives later is refused, so a request still travelling can no
    /// longer take money once the device has counted the payment lost.
    NotFound,
    /// A request with this id is being processed right now: ask again.
    InProgress,
}

/// A status answer with the processor's time, when it sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusAnswer {
    pub status: ServiceStatus,
    /// The processor's clock when it answered: corrects the device's
    /// trusted clock (`PosEngine::correct_clock`).
    pub processor_time: Option<Timestamp>,
}

/// What the service says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    Available,
    /// Reachable but not processing payments (R1 "service disruption").
    Disrupted,
}

/// The longest `Retry-After` the engine honours.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A call that ended without a decision. `kind` says whether the processor
/// may have seen the request and whether a retry can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct GatewayError {
    pub kind: ForwardErrorKind,
    /// For logs: never contains card data, contacts or tokens.
    pub detail: String,
    /// How long the processor asked the whole gateway to wait (HTTP
    /// `Retry-After` on a 429 or 503): the forwarding engine starts no new
    /// attempt, lookup or receipt delivery, for any payment, before then
    /// (a new online payment is still sent).
    pub retry_after: Option<std::time::Duration>,
    /// The HTTP status of the answer, when there was one: a `Rejected`
    /// 401 or 403 means the credentials were refused.
    pub http_status: Option<u16>,
    /// The processor's error code, when it sent one (`account_mismatch`:
    /// the request was sent under another account than the credentials').
    pub code: Option<String>,
}

impl GatewayError {
    pub fn new(kind: ForwardErrorKind, detail: impl Into<String>) -> Self {
        GatewayError {
            kind,
            detail: detail.into(),
            retry_after: None,
            http_status: None,
            code: None,
        }
    }

    /// The same error, with the HTTP status of the answer.
    pub fn with_http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// Whether the processor refused a request sent under another merchant
    /// account than its credentials' (`account_mismatch`).
    pub fn account_mismatch(&self) -> bool {
        self.kind == ForwardErrorKind::Rejected && self.code.as_deref() == Some(ACCOUNT_MISMATCH)
    }

    /// Whether the processor refused the credentials (a `Rejected` 401 or 403).
    pub fn credentials_rejected(&self) -> bool {
        self.kind == ForwardErrorKind::Rejected && matches!(self.http_status, Some(401 | 403))
    }

    /// The same error, with the processor's `Retry-After`, at most
    /// [`MAX_RETRY_AFTER`] (a wrong header, or a foreign gateway's wrong
    /// figure, cannot stop forwarding for days).
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait.min(MAX_RETRY_AFTER));
        self
    }
}

/// The processor. Implementations must be safe to call from several threads
/// at once; each call may block (network I/O) and should bound its own time.
pub trait Gateway: Send + Sync + fmt::Debug {
    /// Authorizes an online payment. Called again with the same id when an
    /// earlier call got no answer: the processor must then return the first
    /// decision, not charge again.
    fn authorize(&self, request: &AuthorizeRequest) -> Result<GatewayDecision, GatewayError>;

    /// Forwards a stored offline payment (same idempotency contract).
    fn forward(&self, request: &ForwardRequest) -> Result<GatewayDecision, GatewayError>;

    /// Probes the service (R1: reachable but disrupted is not online).
    fn status(&self) -> Result<ServiceStatus, GatewayError>;

    /// The same probe with the processor's time, for a gateway whose
    /// answer carries it (the HTTP protocol's `time_ms`). The forwarding
    /// driver calls this one.
    fn status_with_time(&self) -> Result<StatusAnswer, GatewayError> {
        Ok(StatusAnswer {
            status: self.status()?,
            processor_time: None,
        })
    }

    /// What the processor knows about one payment id (same device). Asked
    /// only about payments whose deadline passed while an attempt may have
    /// reached the processor; "not found" must close the id (see
    /// [`PaymentLookup::NotFound`]).
    fn payment_status(&self, query: &StatusQuery) -> Result<PaymentLookup, GatewayError>;

    /// Delivers a receipt queued offline (R16).
    fn deliver_receipt(&self, delivery: &ReceiptDelivery) -> Result<(), GatewayError>;
}

/// Supplies the bearer token for the HTTP gateway. May return a cached token
/// so that the engine starts and forwards after an offline start (B10); the
/// gateway calls it before every request and calls `invalidate` after a 401.
pub trait TokenProvider: Send + Sync + fmt::Debug {
    fn token(&self) -> Result<String, GatewayError>;
    /// The credentials of `account` (the one a request is sent under: a
    /// payment's own account, which may no longer be the device's after
    /// `switch_account`). Default: [`TokenProvider::token`], for an app
    /// with one account.
    fn token_for(&self, account: Option<&MerchantAccount>) -> Result<String, GatewayError> {
        let _ = account;
        self.token()
    }
    fn invalidate(&self) {}
}

/// The processor's error code for a request sent under another merchant
/// account than its credentials'.
pub const ACCOUNT_MISMATCH: &str = "account_mismatch";

/// A fixed token (tests, the demo).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenProvider for StaticToken {
    fn token(&self) -> Result<String, GatewayError> {
        Ok(self.0.clone())
    }
}

/// The JSON bodies of the HTTP protocol, exactly as on the wire
/// (`docs/gateway-openapi.yaml`). Shared with the processor simulator.
pub mod wire {
    use super::*;

    /// Path of the online authorization endpoint (POST).
    pub const AUTHORIZE_PATH: &str = "/v1/payments";
    /// Path of the offline forwarding endpoint (POST).
    pub const FORWARD_PATH: &str = "/v1/offline-payments";
    /// Path of the status endpoint (GET).
    pub const STATUS_PATH: &str = "/v1/status";
    /// Path of the payment lookup endpoint (POST: the ids travel in the
    /// body, never in a URL that proxies log).
    pub const LOOKUP_PATH: &str = "/v1/payment-lookups";
    /// Path of the receipt endpoint (POST).
    pub const RECEIPT_PATH: &str = "/v1/receipts";
    /// Header carrying the idempotency key (the payment or receipt id).
    pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

    /// Body of `POST /v1/payments` and `POST /v1/offline-payments`.
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PaymentBody {
        pub device_id: String,
        pub payment_id: String,
        pub order_id: String,
        /// Amount charged in minor units, tip included.
        pub amount: i64,
        pub currency: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tip: Option<i64>,
        /// `chip`, `contactless`, `swipe` or `manual`.
        pub entry_mode: String,
        /// `visa`, `mastercard`, ...
        pub network: String,
        pub last4: String,
        /// Offline payments only: when it was taken and its deadline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub taken_at_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub deadline_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub attempt: Option<u32>,
        /// The sealed card data, base64 (standard alphabet, padded).
        pub card_data: String,
        /// The certificate of the reader that sealed `card_data`
        /// (`reader_trust::ReaderCertificate`), base64; omitted when the
        /// device has none (a vendor SDK's reader). A processor requires it
        /// for version-2 card data: signed by one of its reader
        /// authorities, naming the header's reader serial.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reader_certificate: Option<String>,
        /// The reader's Ed25519 signature of the whole `card_data` blob
        /// under `reader_trust::CARD_CONTEXT`, base64; omitted with the
        /// certificate. A processor requires it for version-2 card data,
        /// by the certificate's key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reader_signature: Option<String>,
        /// The merchant account and location the request is sent under
        /// (the payment's own, see [`MerchantAccount`]): both or neither;
        /// omitted for a payment taken before the device was bound to an
        /// account. A processor refuses a request whose account is not its
        /// credentials' (403 `account_mismatch`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub account_id: Option<String>,
        /// The location of `account_id`, sent with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub location_id: Option<String>,
    }

    impl fmt::Debug for PaymentBody {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("PaymentBody")
                .field("payment_id", &self.payment_id)
                .field("amount", &self.amount)
                .field("currency", &self.currency)
                .finish_non_exhaustive()
        }
    }

    /// The processor's answer to a payment request (HTTP 200).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DecisionBody {
        pub payment_id: String,
        /// `approved` or `declined`.
        pub outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub processor_ref: Option<String>,
        /// When declined: see [`decline_code`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub decline_code: Option<String>,
    }

    /// Body of every non-200 answer.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ErrorBody {
        /// Machine-readable: `in_flight`, `idempotency_mismatch`,
        /// `unauthorized`, `account_mismatch` (see
        /// [`ACCOUNT_MISMATCH`]),
        /// `bad_request`, `unknown_payment`, `closed`, `unavailable`,
        /// `internal`. Kept in [`GatewayError::code`].
        pub error: String,
        #[serde(default)]
        pub message: String,
    }

    /// Body of `POST /v1/payment-lookups`. The answer is a [`DecisionBody`]
    /// (200), `unknown_payment` (404, and the id is closed) or `in_flight`
    /// (409).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct LookupBody {
        pub device_id: String,
        pub payment_id: String,
        /// The merchant account and location the request is sent under
        /// (the payment's own, see [`MerchantAccount`]): both or neither;
        /// omitted for a payment taken before the device was bound to an
        /// account. A processor refuses a request whose account is not its
        /// credentials' (403 `account_mismatch`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub account_id: Option<String>,
        /// The location of `account_id`, sent with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub location_id: Option<String>,
    }

    /// Body of `GET /v1/status`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StatusBody {
        /// `available` or `disrupted`.
        pub status: String,
        /// The processor's clock when it answered, ms since the epoch (UTC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub time_ms: Option<i64>,
    }

    /// Body of `POST /v1/receipts`.
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ReceiptBody {
        pub device_id: String,
        pub receipt_id: String,
        pub order_id: String,
        /// `email` or `sms`.
        pub channel: String,
        pub address: String,
        /// The merchant account and location the request is sent under
        /// (the payment's own, see [`MerchantAccount`]): both or neither;
        /// omitted for a payment taken before the device was bound to an
        /// account. A processor refuses a request whose account is not its
        /// credentials' (403 `account_mismatch`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub account_id: Option<String>,
        /// The location of `account_id`, sent with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub location_id: Option<String>,
    }

    impl fmt::Debug for ReceiptBody {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ReceiptBody")
                .field("receipt_id", &self.receipt_id)
                .field("channel", &self.channel)
                .finish_non_exhaustive()
        }
    }

    /// The wire code of a decline reason.
    pub fn decline_code(reason: &DeclineReason) -> &str {
        match reason {
            DeclineReason::InsufficientFunds => "insufficient_funds",
            DeclineReason::LostCard => "lost_card",
            DeclineReason::StolenCard => "stolen_card",
            DeclineReason::ExpiredCard => "expired_card",
            DeclineReason::DoNotHonour => "do_not_honour",
            DeclineReason::ProcessingError => "processing_error",
            DeclineReason::Other { code } => code,
            DeclineReason::Replayed => "replayed",
            DeclineReason::Mismatch => "mismatch",
        }
    }

    /// The decline reason of a wire code (unknown codes are kept as `Other`).
    pub fn decline_reason(code: &str) -> DeclineReason {
        match code {
            "insufficient_funds" => DeclineReason::InsufficientFunds,
            "lost_card" => DeclineReason::LostCard,
            "stolen_card" => DeclineReason::StolenCard,
            "expired_card" => DeclineReason::ExpiredCard,
            "do_not_honour" => DeclineReason::DoNotHonour,
            "processing_error" => DeclineReason::ProcessingError,
            "replayed" => DeclineReason::Replayed,
            "mismatch" => DeclineReason::Mismatch,
            other => DeclineReason::Other { code: other.into() },
        }
    }

    /// The wire name of an entry mode.
    pub fn entry_mode_name(m: EntryMode) -> &'static str {
        match m {
            EntryMode::Chip => "chip",
            EntryMode::Contactless => "contactless",
            EntryMode::Swipe => "swipe",
            EntryMode::Manual => "manual",
        }
    }

    /// The wire name of a card network.
    pub fn network_name(n: Network) -> &'static str {
        match n {
            Network::Visa => "visa",
            Network::Mastercard => "mastercard",
            Network::Amex => "amex",
            Network::Discover => "discover",
            Network::Jcb => "jcb",
            Network::UnionPay => "unionpay",
            Network::Interac => "interac",
            Network::Eftpos => "eftpos",
            Network::Other => "other",
        }
    }

    /// The `account_id` and `location_id` of a request sent under
    /// `account` (both `None` without one).
    pub fn account_ids(account: Option<&MerchantAccount>) -> (Option<String>, Option<String>) {
        match account {
            Some(a) => (Some(a.account_id.clone()), Some(a.location_id.clone())),
            None => (None, None),
        }
    }

    /// Standard base64 with padding, for `card_data` (and the reader's
    /// certificate and signature).
    pub fn encode_card_data(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Decodes `card_data` (or the reader's certificate or signature);
    /// `None` when it is not valid base64.
    pub fn decode_card_data(s: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(s).ok()
    }

    impl PaymentBody {
        /// The body of a forwarding request.
        pub fn forward(r: &ForwardRequest) -> Self {
            let (account_id, location_id) = account_ids(r.account.as_ref());
            PaymentBody {
                device_id: r.device_id.clone(),
                payment_id: r.payment_id.as_str().into(),
                order_id: r.order_id.as_str().into(),
                amount: r.amount.minor_units(),
                currency: r.amount.currency().code().into(),
                tip: r.tip.map(|t| t.minor_units()),
                entry_mode: entry_mode_name(r.entry_mode).into(),
                network: network_name(r.network).into(),
                last4: r.last4.clone(),
                taken_at_ms: Some(r.taken_at.millis()),
                deadline_ms: Some(r.deadline.millis()),
                attempt: Some(r.attempt),
                card_data: encode_card_data(&r.sealed_card_data),
                reader_certificate: r.reader_certificate.as_deref().map(encode_card_data),
                reader_signature: r.reader_signature.as_deref().map(encode_card_data),
                account_id,
                location_id,
            }
        }

        /// The body of an online authorization.
        pub fn authorize(r: &AuthorizeRequest) -> Self {
            let (account_id, location_id) = account_ids(r.account.as_ref());
            PaymentBody {
                device_id: r.device_id.clone(),
                payment_id: r.payment_id.as_str().into(),
                order_id: r.order_id.as_str().into(),
                amount: r.amount.minor_units(),
                currency: r.amount.currency().code().into(),
                tip: r.tip.map(|t| t.minor_units()),
                entry_mode: entry_mode_name(r.entry_mode).into(),
                network: network_name(r.network).into(),
                last4: r.last4.clone(),
                taken_at_ms: None,
                deadline_ms: None,
                attempt: None,
                card_data: encode_card_data(&r.sealed_card_data),
                reader_certificate: r.reader_certificate.as_deref().map(encode_card_data),
                reader_signature: r.reader_signature.as_deref().map(encode_card_data),
                account_id,
                location_id,
            }
        }
    }

    impl DecisionBody {
        /// Checks an answer against the request it answers and turns it into
        /// a decision. An answer for another payment, or one that is neither
        /// approved nor declined, is a protocol error: treated as no answer
        /// (the retry with the same id gets the real one).
        pub fn into_decision(self, payment_id: &str) -> Result<GatewayDecision, GatewayError> {
            if self.payment_id != payment_id {
                return Err(GatewayError::new(
                    ForwardErrorKind::NoAnswer,
                    "the answer is for another payment",
                ));
            }
            match (self.outcome.as_str(), self.processor_ref, self.decline_code) {
                ("approved", Some(r), _) if !r.is_empty() && r.len() <= 128 => {
                    Ok(GatewayDecision::Approved { processor_ref: r })
                }
                ("declined", _, Some(code)) if !code.is_empty() && code.len() <= 64 => {
                    Ok(GatewayDecision::Declined {
                        reason: decline_reason(&code),
                    })
                }
                _ => Err(GatewayError::new(
                    ForwardErrorKind::NoAnswer,
                    "malformed decision from the processor",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

    #[test]
    fn a_retry_after_is_never_longer_than_an_hour_whoever_gives_it() {
        let e = GatewayError::new(ForwardErrorKind::ServiceUnavailable, "busy")
            .with_retry_after(std::time::Duration::from_secs(10 * 3600));
        assert_eq!(e.retry_after, Some(MAX_RETRY_AFTER));
        let e = GatewayError::new(ForwardErrorKind::ServiceUnavailable, "busy")
            .with_retry_after(std::time::Duration::from_secs(30));
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn decline_codes_round_trip() {
        for r in [
            DeclineReason::InsufficientFunds,
            DeclineReason::LostCard,
            DeclineReason::StolenCard,
            DeclineReason::ExpiredCard,
            DeclineReason::DoNotHonour,
            DeclineReason::ProcessingError,
            DeclineReason::Other {
                code: "velocity".into(),
            },
            DeclineReason::Replayed,
            DeclineReason::Mismatch,
        ] {
            assert_eq!(decline_reason(decline_code(&r)), r);
        }
    }

    #[test]
    fn a_decision_for_another_payment_is_no_answer() {
        let d = DecisionBody {
            payment_id: "b".into(),
            outcome: "approved".into(),
            processor_ref: Some("ch_1".into()),
            decline_code: None,
        };
        assert_eq!(
            d.into_decision("a").unwrap_err().kind,
            ForwardErrorKind::NoAnswer
        );
    }

    #[test]
    fn malformed_decisions_are_no_answer() {
        for (outcome, r, code) in [
            ("approved", None, None),
            ("declined", None, None),
            ("maybe", Some("x"), None),
            ("approved", Some(""), None),
        ] {
            let d = DecisionBody {
                payment_id: "a".into(),
                outcome: outcome.into(),
                processor_ref: r.map(String::from),
                decline_code: code,
            };
            assert_eq!(
                d.into_decision("a").unwrap_err().kind,
                ForwardErrorKind::NoAnswer
            );
        }
    }

    #[test]
    fn card_data_base64_round_trips_and_rejects_garbage() {
        let b = vec![0u8, 1, 2, 250, 255];
        assert_eq!(decode_card_data(&encode_card_data(&b)), Some(b));
        assert_eq!(decode_card_data("%%%"), None);
    }
}
