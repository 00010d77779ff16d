//! The processor gateway for Swift and Kotlin: either the built-in HTTP
//! gateway (`PosEngine.useHttpGateway`) or one the app implements over its
//! own backend (`PaymentGateway`, a foreign trait), and the forwarding
//! controls (forward now, pause, resume).
//!
//! Foreign gateway methods are called on the engine's worker threads, never
//! on the app's main thread, and may block (do the HTTP call synchronously).

use std::fmt;
use std::sync::Arc;

use pos_core::gateway as gw;
use pos_core::lifecycle as life;

use crate::money::Money;
use crate::types::{CardNetwork, CustomerContact, DeclineReason, EntryMode, MerchantAccount};

/// A payment sent to the processor: an offline payment to forward, or an
/// online one to authorize (`online`). `card_data` is sealed for the
/// processor; the app cannot open it and must send it as it is, with
/// `reader_certificate` and `reader_signature`.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct GatewayPayment {
    /// The device that took it.
    pub device_id: String,
    /// The idempotency key: send it with every request for this payment.
    pub payment_id: String,
    /// Its order's id.
    pub order_id: String,
    /// Charged, tip included.
    pub amount: Money,
    /// The tip, included in `amount`.
    pub tip: Option<Money>,
    /// How the card was read.
    pub entry_mode: EntryMode,
    /// The card network.
    pub network: CardNetwork,
    /// The last four digits of the card number.
    pub last4: String,
    /// Offline payments: when it was taken, in ms since the Unix epoch.
    pub taken_at_ms: Option<i64>,
    /// Offline payments: its forwarding deadline, in ms since the Unix epoch.
    pub deadline_ms: Option<i64>,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// An online authorization (`authorize`), not a forwarded payment.
    pub online: bool,
    /// The card data, sealed for the processor.
    pub card_data: Vec<u8>,
    /// The certificate of the reader that read the card (the remembered
    /// reader's, encoded): send it with `card_data` (the HTTP protocol's
    /// `reader_certificate`). Null for a vendor SDK's reader, or a reader
    /// no longer remembered. The processor declines version-2 card data
    /// without a certificate of one of its reader authorities (`mismatch`).
    #[uniffi(default)]
    pub reader_certificate: Option<Vec<u8>>,
    /// The reader's signature of `card_data` (the HTTP protocol's
    /// `reader_signature`): send it as it is. Null for a vendor SDK's
    /// reader.
    #[uniffi(default)]
    pub reader_signature: Option<Vec<u8>>,
    /// The merchant account and location the payment was taken under:
    /// send it under this account only, with its credentials, whatever
    /// account the device has switched to since (null: taken before the
    /// device was bound to one).
    #[uniffi(default)]
    pub account: Option<MerchantAccount>,
}

impl fmt::Debug for GatewayPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayPayment")
            .field("payment_id", &self.payment_id)
            .field("amount", &self.amount)
            .field("online", &self.online)
            .finish_non_exhaustive()
    }
}

/// A queued receipt to deliver. The customer's address is in `recipient`
/// (`email()` or `phone()`), an object, so that the generated `toString` /
/// `description` of this record never prints it.
#[derive(Clone, uniffi::Record)]
pub struct GatewayReceipt {
    /// The device that queued it.
    pub device_id: String,
    /// The receipt's id.
    pub receipt_id: String,
    /// Its order's id.
    pub order_id: String,
    /// "email" or "sms".
    pub channel: String,
    /// Who gets it: `email()` or `phone()`, as `channel` says.
    pub recipient: Arc<CustomerContact>,
    /// The merchant account and location the receipt was requested under:
    /// deliver it under this account.
    #[uniffi(default)]
    pub account: Option<MerchantAccount>,
}

impl fmt::Debug for GatewayReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayReceipt")
            .field("receipt_id", &self.receipt_id)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// The processor's decision.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum GatewayDecision {
    /// Approved: the money was taken.
    Approved {
        /// The processor's reference for the payment.
        processor_ref: String,
    },
    /// Declined (B9).
    Declined {
        /// Why.
        reason: DeclineReason,
    },
}

/// What the processor knows about one payment id
/// (`PaymentGateway.paymentStatus`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum PaymentLookup {
    /// It decided: the decision its own request got (or would get).
    Decided {
        /// That decision.
        decision: GatewayDecision,
    },
    /// It has no record of the id, and has closed it: a request with this id
    /// that reaches it later must be refused.
    NotFound,
    /// A request with this id is being processed now: ask again later.
    InProgress,
}

/// What the service says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ServiceStatus {
    /// It works.
    Available,
    /// It is down or degraded.
    Disrupted,
}

/// A status answer. `processor_time_ms` is the processor's clock when it
/// answered (ms since the epoch, UTC), when its answer carries it: it
/// corrects the device's trusted clock in bounded, audited steps. Never put
/// the device's own clock there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct ServiceStatusAnswer {
    /// What the service says about itself.
    pub status: ServiceStatus,
    /// The processor's clock when it answered, if its answer carries it.
    pub processor_time_ms: Option<i64>,
}

/// A call that ended without a decision. The case tells the engine whether
/// the processor may have seen the request and whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum GatewayError {
    /// Never sent (no route, DNS, connect, TLS): retried.
    #[error("not sent: {detail}")]
    NotSent {
        /// What happened.
        detail: String,
    },
    /// Sent, no answer (timeout, connection lost): retried with the same id.
    #[error("no answer: {detail}")]
    NoAnswer {
        /// What happened.
        detail: String,
    },
    /// The service cannot process it now (5xx, 409 in flight, 429): retried.
    /// `retry_after_ms`: how long the processor asked to wait (its
    /// `Retry-After`, at most an hour): the engine forwards nothing, for
    /// any payment, before then.
    #[error("service unavailable: {detail}")]
    ServiceUnavailable {
        /// What happened.
        detail: String,
        /// How long the processor asked to wait, in ms.
        retry_after_ms: Option<u64>,
    },
    /// The request itself is refused (malformed, refused by the
    /// processor): not retried until "forward now".
    #[error("rejected: {detail}")]
    Rejected {
        /// What happened.
        detail: String,
    },
    /// The processor refused the credentials (HTTP 401 or 403): not retried
    /// until "forward now"; the app is told (`ForwardingBlocked`).
    #[error("unauthorized: {detail}")]
    Unauthorized {
        /// What happened.
        detail: String,
    },
    /// The processor refused a request sent under one merchant account
    /// with another account's credentials (its code `account_mismatch`):
    /// never a decline, not retried until "forward now"; the app is told
    /// (`ForwardingBlocked` with `AccountMismatch`).
    #[error("account mismatch: {detail}")]
    AccountMismatch {
        /// What happened.
        detail: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for GatewayError {
    /// An unexpected exception in the app's gateway: the request may have
    /// left, so it counts as "no answer" and is retried with the same id.
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        GatewayError::NoAnswer { detail: e.reason }
    }
}

impl From<GatewayError> for gw::GatewayError {
    fn from(e: GatewayError) -> Self {
        let mut wait = None;
        let mut status = None;
        let mut code = None;
        let (kind, detail) = match e {
            GatewayError::NotSent { detail } => (life::ForwardErrorKind::NotSent, detail),
            GatewayError::NoAnswer { detail } => (life::ForwardErrorKind::NoAnswer, detail),
            GatewayError::ServiceUnavailable {
                detail,
                retry_after_ms,
            } => {
                wait = retry_after_ms.map(std::time::Duration::from_millis);
                (life::ForwardErrorKind::ServiceUnavailable, detail)
            }
            GatewayError::Rejected { detail } => (life::ForwardErrorKind::Rejected, detail),
            GatewayError::Unauthorized { detail } => {
                status = Some(401);
                (life::ForwardErrorKind::Rejected, detail)
            }
            GatewayError::AccountMismatch { detail } => {
                code = Some(gw::ACCOUNT_MISMATCH.to_owned());
                (life::ForwardErrorKind::Rejected, detail)
            }
        };
        let mut e = gw::GatewayError::new(kind, detail.chars().take(256).collect::<String>());
        if let Some(s) = status {
            e = e.with_http_status(s);
        }
        e.code = code;
        match wait {
            // The same bound as the built-in gateway's.
            Some(w) => e.with_retry_after(w),
            None => e,
        }
    }
}

impl From<gw::GatewayError> for GatewayError {
    fn from(e: gw::GatewayError) -> Self {
        let credentials = e.credentials_rejected();
        let account = e.account_mismatch();
        let detail = e.detail;
        match e.kind {
            life::ForwardErrorKind::NotSent => GatewayError::NotSent { detail },
            life::ForwardErrorKind::NoAnswer => GatewayError::NoAnswer { detail },
            life::ForwardErrorKind::ServiceUnavailable => GatewayError::ServiceUnavailable {
                detail,
                retry_after_ms: e
                    .retry_after
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            },
            life::ForwardErrorKind::Rejected if account => GatewayError::AccountMismatch { detail },
            life::ForwardErrorKind::Rejected if credentials => {
                GatewayError::Unauthorized { detail }
            }
            life::ForwardErrorKind::Rejected => GatewayError::Rejected { detail },
        }
    }
}

/// Implemented in Swift or Kotlin to reach the processor through the app's
/// own backend. Every method may block; each must bound its own time.
#[uniffi::export(foreign)]
pub trait PaymentGateway: Send + Sync {
    /// Authorizes an online payment (`payment.online`); with the same
    /// `payment_id` again, the processor must return its first decision.
    fn authorize(&self, payment: GatewayPayment) -> Result<GatewayDecision, GatewayError>;
    /// Forwards a stored offline payment (same idempotency contract).
    fn forward(&self, payment: GatewayPayment) -> Result<GatewayDecision, GatewayError>;
    /// Probes the service; with the processor's time when its answer
    /// carries it.
    fn status(&self) -> Result<ServiceStatusAnswer, GatewayError>;
    /// What the processor knows about `payment_id` from `device_id`, taken
    /// under `account` (ask under that account, with its credentials). Asked
    /// only after a payment's deadline passed while an attempt may have
    /// reached the processor; until it answers, the payment stays
    /// `OutcomeUnknown` (never counted as lost). `NotFound` expires the
    /// payment: return it only when the processor said it has no record of
    /// the id, and it must also close the id there (a later request with it
    /// is refused). When the backend cannot tell, throw `NoAnswer` (or
    /// return `InProgress`): a stub that returns `NotFound` would count
    /// payments the processor took as lost.
    fn payment_status(
        &self,
        device_id: String,
        payment_id: String,
        account: Option<MerchantAccount>,
    ) -> Result<PaymentLookup, GatewayError>;
    /// Delivers a receipt queued offline.
    fn deliver_receipt(&self, receipt: GatewayReceipt) -> Result<(), GatewayError>;
}

/// Supplies the bearer token of the built-in HTTP gateway. Both methods are
/// called on the engine's worker threads and may block.
#[cfg(feature = "http-gateway")]
#[uniffi::export(foreign)]
pub trait TokenProvider: Send + Sync {
    /// The token to send, before every request: the credentials of
    /// `account`, the merchant account the request is sent under (a
    /// payment's own account, which may no longer be the device's after
    /// `switchAccount`; null: no account). Keep an old account's
    /// credentials until its payments are settled. May return a cached
    /// token so the engine forwards after an offline start (B10).
    fn token(&self, account: Option<MerchantAccount>) -> Result<String, GatewayError>;
    /// The processor refused the last token (HTTP 401): drop the cached
    /// token, so the next `token()` gets a fresh one. An error thrown here
    /// is ignored.
    fn invalidate(&self) -> Result<(), GatewayError>;
}

pub(crate) struct GatewayAdapter(pub Arc<dyn PaymentGateway>);

impl fmt::Debug for GatewayAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForeignGateway")
    }
}

fn check_decision(d: GatewayDecision) -> Result<gw::GatewayDecision, gw::GatewayError> {
    let bad = |what: &str| {
        gw::GatewayError::new(
            life::ForwardErrorKind::NoAnswer,
            format!("the app's gateway returned an invalid {what}"),
        )
    };
    let ok = |v: &str| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic());
    Ok(match d {
        GatewayDecision::Approved { processor_ref } => {
            if !ok(&processor_ref) {
                return Err(bad("processor reference"));
            }
            gw::GatewayDecision::Approved { processor_ref }
        }
        GatewayDecision::Declined { reason } => {
            if let DeclineReason::Other { code } = &reason {
                if !ok(code) {
                    return Err(bad("decline code"));
                }
            }
            gw::GatewayDecision::Declined {
                reason: reason.into(),
            }
        }
    })
}

fn payment(r: &gw::AuthorizeRequest) -> GatewayPayment {
    GatewayPayment {
        device_id: r.device_id.clone(),
        payment_id: r.payment_id.as_str().to_owned(),
        order_id: r.order_id.as_str().to_owned(),
        amount: r.amount.into(),
        tip: r.tip.map(Into::into),
        entry_mode: r.entry_mode.into(),
        network: r.network.into(),
        last4: r.last4.clone(),
        taken_at_ms: None,
        deadline_ms: None,
        attempt: 1,
        online: true,
        card_data: r.sealed_card_data.clone(),
        reader_certificate: r.reader_certificate.clone(),
        reader_signature: r.reader_signature.clone(),
        account: r.account.clone().map(Into::into),
    }
}

impl gw::Gateway for GatewayAdapter {
    fn authorize(&self, r: &gw::AuthorizeRequest) -> Result<gw::GatewayDecision, gw::GatewayError> {
        check_decision(self.0.authorize(payment(r))?)
    }

    fn forward(&self, r: &gw::ForwardRequest) -> Result<gw::GatewayDecision, gw::GatewayError> {
        let p = GatewayPayment {
            device_id: r.device_id.clone(),
            payment_id: r.payment_id.as_str().to_owned(),
            order_id: r.order_id.as_str().to_owned(),
            amount: r.amount.into(),
            tip: r.tip.map(Into::into),
            entry_mode: r.entry_mode.into(),
            network: r.network.into(),
            last4: r.last4.clone(),
            taken_at_ms: Some(r.taken_at.millis()),
            deadline_ms: Some(r.deadline.millis()),
            attempt: r.attempt,
            online: false,
            card_data: r.sealed_card_data.clone(),
            reader_certificate: r.reader_certificate.clone(),
            reader_signature: r.reader_signature.clone(),
            account: r.account.clone().map(Into::into),
        };
        check_decision(self.0.forward(p)?)
    }

    fn status(&self) -> Result<gw::ServiceStatus, gw::GatewayError> {
        self.status_with_time().map(|a| a.status)
    }

    fn status_with_time(&self) -> Result<gw::StatusAnswer, gw::GatewayError> {
        let answer = self.0.status()?;
        Ok(gw::StatusAnswer {
            status: match answer.status {
                ServiceStatus::Available => gw::ServiceStatus::Available,
                ServiceStatus::Disrupted => gw::ServiceStatus::Disrupted,
            },
            processor_time: answer.processor_time_ms.map(pos_core::clock::Timestamp),
        })
    }

    fn payment_status(&self, q: &gw::StatusQuery) -> Result<gw::PaymentLookup, gw::GatewayError> {
        Ok(
            match self.0.payment_status(
                q.device_id.clone(),
                q.payment_id.as_str().to_owned(),
                q.account.clone().map(Into::into),
            )? {
                PaymentLookup::Decided { decision } => {
                    gw::PaymentLookup::Decided(check_decision(decision)?)
                }
                PaymentLookup::NotFound => gw::PaymentLookup::NotFound,
                PaymentLookup::InProgress => gw::PaymentLookup::InProgress,
            },
        )
    }

    fn deliver_receipt(&self, d: &gw::ReceiptDelivery) -> Result<(), gw::GatewayError> {
        let contact = match d.channel.as_str() {
            "email" => life::CustomerContact::parse(Some(&d.address), None),
            _ => life::CustomerContact::parse(None, Some(&d.address)),
        }
        .map_err(|e| gw::GatewayError::new(life::ForwardErrorKind::Rejected, e.to_string()))?;
        Ok(self.0.deliver_receipt(GatewayReceipt {
            device_id: d.device_id.clone(),
            receipt_id: d.receipt_id.clone(),
            order_id: d.order_id.as_str().to_owned(),
            channel: d.channel.clone(),
            recipient: Arc::new(contact.into()),
            account: d.account.clone().map(Into::into),
        })?)
    }
}

#[cfg(feature = "http-gateway")]
pub(crate) struct TokenAdapter(pub Arc<dyn TokenProvider>);

#[cfg(feature = "http-gateway")]
impl fmt::Debug for TokenAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForeignTokenProvider")
    }
}

#[cfg(feature = "http-gateway")]
impl gw::TokenProvider for TokenAdapter {
    fn token(&self) -> Result<String, gw::GatewayError> {
        Ok(self.0.token(None)?)
    }

    fn token_for(&self, account: Option<&gw::MerchantAccount>) -> Result<String, gw::GatewayError> {
        Ok(self.0.token(account.cloned().map(Into::into))?)
    }

    fn invalidate(&self) {
        // Nothing to do about a provider that fails here: the next token()
        // answers for it.
        let _ = self.0.invalidate();
    }
}

/// What a forwarding round did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ForwardReport {
    /// Attempts started.
    pub attempts: u64,
    /// Payments approved.
    pub approved: u64,
    /// Payments declined.
    pub declined: u64,
    /// Attempts that ended without a decision (retried later).
    pub failed: u64,
    /// Payments expired by this round (R8).
    pub expired: u64,
    /// Queued receipts delivered (R16).
    pub receipts_sent: u64,
    /// Payments whose outcome is still unknown after the round.
    pub outcome_unknown: u64,
}

impl From<pos_core::forwarding::ForwardReport> for ForwardReport {
    fn from(r: pos_core::forwarding::ForwardReport) -> Self {
        ForwardReport {
            attempts: r.attempts,
            approved: r.approved,
            declined: r.declined,
            failed: r.failed,
            expired: r.expired,
            receipts_sent: r.receipts_sent,
            outcome_unknown: r.outcome_unknown,
        }
    }
}

#[cfg(all(test, feature = "http-gateway"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct CountingTokens {
        tokens: AtomicU32,
        invalidated: AtomicU32,
    }

    impl TokenProvider for CountingTokens {
        fn token(&self, _account: Option<MerchantAccount>) -> Result<String, GatewayError> {
            self.tokens.fetch_add(1, Ordering::SeqCst);
            Ok("stale-token".into())
        }

        fn invalidate(&self) -> Result<(), GatewayError> {
            self.invalidated.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// The app's gateway says "credentials refused" with `Unauthorized`,
    /// and carries a `Retry-After` in `ServiceUnavailable`.
    #[test]
    fn unauthorized_and_retry_after_cross_the_boundary() {
        let e: gw::GatewayError = GatewayError::Unauthorized {
            detail: "expired".into(),
        }
        .into();
        assert!(e.credentials_rejected());
        assert_eq!(
            GatewayError::from(e),
            GatewayError::Unauthorized {
                detail: "expired".into()
            }
        );
        let e: gw::GatewayError = GatewayError::Rejected {
            detail: "bad".into(),
        }
        .into();
        assert!(!e.credentials_rejected());
        let e: gw::GatewayError = GatewayError::ServiceUnavailable {
            detail: "busy".into(),
            retry_after_ms: Some(5_000),
        }
        .into();
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(5)));
        assert_eq!(
            GatewayError::from(e),
            GatewayError::ServiceUnavailable {
                detail: "busy".into(),
                retry_after_ms: Some(5_000)
            }
        );
    }

    /// The app's gateway reports the processor's `account_mismatch` with
    /// `AccountMismatch`: a refusal with that code, never a decline.
    #[test]
    fn account_mismatch_crosses_the_boundary() {
        let e: gw::GatewayError = GatewayError::AccountMismatch {
            detail: "other account".into(),
        }
        .into();
        assert!(e.account_mismatch());
        assert!(!e.credentials_rejected());
        assert_eq!(e.code.as_deref(), Some(gw::ACCOUNT_MISMATCH));
        assert_eq!(
            GatewayError::from(e),
            GatewayError::AccountMismatch {
                detail: "other account".into()
            }
        );
    }

    struct AccountTokens;

    impl TokenProvider for AccountTokens {
        fn token(&self, account: Option<MerchantAccount>) -> Result<String, GatewayError> {
            Ok(account.map_or_else(|| "none".into(), |a| a.account_id))
        }

        fn invalidate(&self) -> Result<(), GatewayError> {
            Ok(())
        }
    }

    /// The foreign token provider is asked for the credentials of the
    /// account a request is sent under.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_token_provider_gets_the_account() {
        let tokens = TokenAdapter(Arc::new(AccountTokens));
        let a = pos_core::account::MerchantAccount::new("acct_a", "loc_1").unwrap();
        assert_eq!(
            gw::TokenProvider::token_for(&tokens, Some(&a)).unwrap(),
            "acct_a"
        );
        assert_eq!(gw::TokenProvider::token_for(&tokens, None).unwrap(), "none");
        assert_eq!(gw::TokenProvider::token(&tokens).unwrap(), "none");
    }

    /// The built-in gateway tells the app's token provider that its token
    /// was refused (401), so the app can drop a cached token.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_401_invalidates_the_foreign_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
        });
        let tokens = Arc::new(CountingTokens::default());
        let mut config = pos_core::http_gateway::HttpGatewayConfig::new(format!("http://{addr}"));
        config.allow_plain_http = true;
        let gateway = pos_core::http_gateway::HttpGateway::new(
            config,
            Arc::new(TokenAdapter(tokens.clone())),
        )
        .unwrap();
        let err = gw::Gateway::deliver_receipt(
            &gateway,
            &gw::ReceiptDelivery {
                device_id: "till-1".into(),
                receipt_id: "till-1-r1".into(),
                order_id: life::OrderId::parse("o-1").unwrap(),
                channel: "email".into(),
                address: "a@example.com".into(),
                account: None,
            },
        )
        .unwrap_err();
        server.join().unwrap();
        assert_eq!(err.kind, life::ForwardErrorKind::Rejected);
        assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 1);
    }

    /// A foreign gateway that keeps the payments it is given.
    #[derive(Default)]
    struct Keeping(std::sync::Mutex<Vec<GatewayPayment>>);

    impl PaymentGateway for Keeping {
        fn authorize(&self, payment: GatewayPayment) -> Result<GatewayDecision, GatewayError> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(payment);
            Ok(GatewayDecision::Approved {
                processor_ref: "ch_1".into(),
            })
        }
        fn forward(&self, payment: GatewayPayment) -> Result<GatewayDecision, GatewayError> {
            self.authorize(payment)
        }
        fn status(&self) -> Result<ServiceStatusAnswer, GatewayError> {
            Err(GatewayError::NotSent {
                detail: "unused".into(),
            })
        }
        fn payment_status(
            &self,
            _device_id: String,
            _payment_id: String,
            _account: Option<MerchantAccount>,
        ) -> Result<PaymentLookup, GatewayError> {
            Ok(PaymentLookup::InProgress)
        }
        fn deliver_receipt(&self, _receipt: GatewayReceipt) -> Result<(), GatewayError> {
            Ok(())
        }
    }

    #[test]
    fn the_readers_certificate_and_signature_reach_the_foreign_gateway() {
        let keeping = Arc::new(Keeping::default());
        let adapter = GatewayAdapter(keeping.clone());
        let eur = pos_core::money::Currency::parse("EUR").unwrap();
        let forward = gw::ForwardRequest {
            device_id: "till-1".into(),
            payment_id: life::PaymentId::parse("pay-1").unwrap(),
            order_id: life::OrderId::parse("o-1").unwrap(),
            amount: pos_core::money::Money::new(1_000, eur),
            tip: None,
            entry_mode: pos_core::policy::EntryMode::Chip,
            network: pos_core::policy::Network::Visa,
            last4: "4242".into(),
            taken_at: pos_core::clock::Timestamp(1),
            deadline: pos_core::clock::Timestamp(2),
            attempt: 1,
            sealed_card_data: vec![2, 3],
            reader_certificate: Some(vec![1; 8]),
            reader_signature: Some(vec![9; 64]),
            online: None,
            account: None,
        };
        let online = gw::AuthorizeRequest {
            device_id: forward.device_id.clone(),
            payment_id: life::PaymentId::parse("pay-2").unwrap(),
            order_id: forward.order_id.clone(),
            amount: forward.amount,
            tip: None,
            entry_mode: forward.entry_mode,
            network: forward.network,
            last4: forward.last4.clone(),
            sealed_card_data: vec![4],
            reader_certificate: None,
            reader_signature: None,
            account: None,
        };
        gw::Gateway::forward(&adapter, &forward).unwrap();
        gw::Gateway::authorize(&adapter, &online).unwrap();
        let kept = keeping.0.lock().unwrap();
        assert_eq!(kept[0].reader_certificate, Some(vec![1; 8]));
        assert_eq!(kept[0].reader_signature, Some(vec![9; 64]));
        assert_eq!((kept[1].online, &kept[1].reader_certificate), (true, &None));
        assert_eq!(kept[1].reader_signature, None);
    }
}
