//! The built-in HTTP gateway: the JSON protocol of [`crate::gateway::wire`]
//! (documented in `docs/gateway-openapi.yaml`) over HTTP/1.1, TLS by rustls
//! with the ring provider (no OpenSSL, no aws-lc), through `ureq`
//! (ADR 0004). Blocking calls, run by the engine on tokio's blocking pool.
//!
//! Every payment request carries the payment id as `Idempotency-Key`; the
//! server keeps it for as long as a payment can be forwarded, so a retry
//! after a lost answer returns the first decision (B2).
//!
//! Every request about a payment or receipt is sent under that payment's
//! own merchant account: its body names the account (`account_id`,
//! `location_id`) and its bearer token is the token provider's for that
//! account ([`TokenProvider::token_for`]), whatever account the device has
//! switched to since. The status request, about no payment, uses
//! [`TokenProvider::token`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::gateway::wire::{
    self, DecisionBody, ErrorBody, LookupBody, PaymentBody, ReceiptBody, StatusBody,
};
use crate::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, MerchantAccount,
    PaymentLookup, ReceiptDelivery, ServiceStatus, StatusAnswer, StatusQuery, TokenProvider,
};
use crate::lifecycle::ForwardErrorKind;

/// How the HTTP gateway connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGatewayConfig {
    /// `https://host[:port][/prefix]`; plain `http://` only when
    /// `allow_plain_http`, and then only to a loopback host (127.0.0.0/8,
    /// `[::1]`, `localhost`: tests and the demo).
    pub base_url: String,
    /// Time to connect, TLS handshake included.
    pub connect_timeout: Duration,
    /// Time for a whole request, answer included.
    pub request_timeout: Duration,
    pub allow_plain_http: bool,
}

impl HttpGatewayConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpGatewayConfig {
            base_url: base_url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            allow_plain_http: false,
        }
    }
}

/// Why a gateway configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gateway configuration: {0}")]
pub struct HttpGatewayConfigError(pub String);

/// The built-in gateway.
pub struct HttpGateway {
    base: String,
    agent: ureq::Agent,
    tokens: Arc<dyn TokenProvider>,
}

impl fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpGateway")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Whether an `http://` URL names a loopback host: an address in
/// 127.0.0.0/8, `[::1]` or `localhost`, with an optional port. The
/// authority may hold only host and port characters, so no user info or
/// other trick can make a URL parser see a different host.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty()
        || !authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return false;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, port)) = v6.split_once(']') else {
            return false;
        };
        let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(valid_port);
        return port_ok
            && addr
                .parse::<std::net::Ipv6Addr>()
                .is_ok_and(|a| a.is_loopback());
    }
    let (host, port_ok) = match authority.split_once(':') {
        Some((host, port)) => (host, valid_port(port)),
        None => (authority, true),
    };
    port_ok
        && (host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback()))
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// `Bearer <token>`, for a token of visible ASCII only.
fn authorization(t: String) -> Result<String, GatewayError> {
    if t.is_empty() || t.len() > 4096 || t.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(GatewayError::new(
            ForwardErrorKind::Rejected,
            "the token provider returned an unusable token",
        ));
    }
    Ok(format!("Bearer {t}"))
}

/// Largest answer body read (a decision is a few hundred bytes).
const MAX_BODY: u64 = 64 * 1024;

impl HttpGateway {
    pub fn new(
        config: HttpGatewayConfig,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<Self, HttpGatewayConfigError> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        let https = base.starts_with("https://");
        let http = base.starts_with("http://");
        if !(https || (http && config.allow_plain_http)) {
            return Err(HttpGatewayConfigError(
                "base_url must start with https:// (http:// only with allow_plain_http)".into(),
            ));
        }
        if http && !is_loopback_http(&base) {
            return Err(HttpGatewayConfigError(
                "plain http:// is allowed only for a loopback host (127.0.0.0/8, [::1], localhost)"
                    .into(),
            ));
        }
        if base.len() > 2048 || base.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(HttpGatewayConfigError("base_url is not a valid URL".into()));
        }
        if config.connect_timeout.is_zero() || config.request_timeout.is_zero() {
            return Err(HttpGatewayConfigError("timeouts must be > 0".into()));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.request_timeout))
            .http_status_as_error(false)
            .https_only(!config.allow_plain_http)
            .max_idle_connections_per_host(64)
            .max_idle_connections(64)
            .user_agent(format!("pos-core/{}", crate::VERSION))
            .build()
            .into();
        Ok(HttpGateway {
            base,
            agent,
            tokens,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The `Authorization` header of a request about no payment (the
    /// status).
    fn bearer(&self) -> Result<String, GatewayError> {
        authorization(self.tokens.token()?)
    }

    /// The `Authorization` header of a request sent under `account`: its
    /// credentials (`None`: a payment taken before the device was bound to
    /// an account).
    fn bearer_for(&self, account: Option<&MerchantAccount>) -> Result<String, GatewayError> {
        authorization(self.tokens.token_for(account)?)
    }

    fn post_payment(
        &self,
        path: &str,
        account: Option<&MerchantAccount>,
        body: &PaymentBody,
    ) -> Result<GatewayDecision, GatewayError> {
        let auth = self.bearer_for(account)?;
        let response = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &auth)
            .header(wire::IDEMPOTENCY_HEADER, &body.payment_id)
            .send_json(body)
            .map_err(classify)?;
        let status = response.status().as_u16();
        let wait = retry_after(status, response.headers());
        let mut body_reader = response.into_body();
        let reader = body_reader.with_config().limit(MAX_BODY);
        if status == 200 {
            let text = reader.read_to_string().map_err(classify)?;
            let decision: DecisionBody = serde_json::from_str(&text).map_err(|_| {
                GatewayError::new(ForwardErrorKind::NoAnswer, "unreadable decision")
            })?;
            return decision.into_decision(&body.payment_id);
        }
        let text = reader.read_to_string().unwrap_or_default();
        let err = error_body(&text);
        if status == 401 {
            self.tokens.invalidate();
        }
        Err(with_wait(status_error(status, err), wait))
    }
}

pub use crate::gateway::MAX_RETRY_AFTER;

/// The `Retry-After` of a 429 or 503, in seconds (the HTTP-date form is
/// not used by the protocol and is ignored), at most [`MAX_RETRY_AFTER`].
fn retry_after(status: u16, headers: &ureq::http::HeaderMap) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let secs: u64 = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

fn with_wait(e: GatewayError, wait: Option<Duration>) -> GatewayError {
    match wait {
        Some(w) => e.with_retry_after(w),
        None => e,
    }
}

/// The error body of a non-200 answer, if it is one.
fn error_body(text: &str) -> Option<ErrorBody> {
    serde_json::from_str(text).ok()
}

/// The meaning of a non-200 status (see the OpenAPI document). The
/// answer's error code is kept in [`GatewayError::code`]
/// (`account_mismatch` makes [`GatewayError::account_mismatch`] true).
fn status_error(status: u16, body: Option<ErrorBody>) -> GatewayError {
    let code: Option<String> = body
        .map(|b| b.error.chars().take(64).collect::<String>())
        .filter(|c| !c.is_empty());
    let kind = match status {
        // The same id is being processed: its decision will come; retry.
        409 => ForwardErrorKind::ServiceUnavailable,
        429 => ForwardErrorKind::ServiceUnavailable,
        500..=599 => ForwardErrorKind::ServiceUnavailable,
        // 400, 401, 403, 404, 422: the request itself is refused.
        _ => ForwardErrorKind::Rejected,
    };
    let mut e = GatewayError::new(
        kind,
        format!("HTTP {status} {}", code.as_deref().unwrap_or_default()),
    )
    .with_http_status(status);
    e.code = code;
    e
}

/// Whether the request may have reached the processor decides the kind.
fn classify(e: ureq::Error) -> GatewayError {
    use ureq::Error as E;
    let kind = match &e {
        E::HostNotFound | E::ConnectionFailed | E::Tls(_) | E::Rustls(_) | E::BadUri(_) => {
            ForwardErrorKind::NotSent
        }
        E::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => ForwardErrorKind::NotSent,
        E::Timeout(_) => ForwardErrorKind::NoAnswer,
        E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            ForwardErrorKind::NotSent
        }
        E::RequireHttpsOnly(_) | E::TlsRequired => ForwardErrorKind::Rejected,
        _ => ForwardErrorKind::NoAnswer,
    };
    // ureq's messages hold the URL and the error, never the body.
    GatewayError::new(kind, e.to_string())
}

impl Gateway for HttpGateway {
    fn authorize(&self, request: &AuthorizeRequest) -> Result<GatewayDecision, GatewayError> {
        self.post_payment(
            wire::AUTHORIZE_PATH,
            request.account.as_ref(),
            &PaymentBody::authorize(request),
        )
    }

    fn forward(&self, request: &ForwardRequest) -> Result<GatewayDecision, GatewayError> {
        self.post_payment(
            wire::FORWARD_PATH,
            request.account.as_ref(),
            &PaymentBody::forward(request),
        )
    }

    fn status(&self) -> Result<ServiceStatus, GatewayError> {
        self.status_with_time().map(|a| a.status)
    }

    fn status_with_time(&self) -> Result<StatusAnswer, GatewayError> {
        let auth = self.bearer()?;
        let response = self
            .agent
            .get(&self.url(wire::STATUS_PATH))
            .header("Authorization", &auth)
            .call()
            .map_err(classify)?;
        let status = response.status().as_u16();
        if (500..=599).contains(&status) {
            return Ok(StatusAnswer {
                status: ServiceStatus::Disrupted,
                processor_time: None,
            });
        }
        let mut body = response.into_body();
        let read = body.with_config().limit(MAX_BODY).read_to_string();
        if status != 200 {
            let text = read.unwrap_or_default();
            return Err(status_error(status, error_body(&text)));
        }
        let text = read.map_err(classify)?;
        let s: StatusBody = serde_json::from_str(&text)
            .map_err(|_| GatewayError::new(ForwardErrorKind::NoAnswer, "unreadable status"))?;
        Ok(StatusAnswer {
            status: match s.status.as_str() {
                "available" => ServiceStatus::Available,
                _ => ServiceStatus::Disrupted,
            },
            processor_time: s.time_ms.map(Timestamp),
        })
    }

    fn payment_status(&self, q: &StatusQuery) -> Result<PaymentLookup, GatewayError> {
        let auth = self.bearer_for(q.account.as_ref())?;
        let (account_id, location_id) = wire::account_ids(q.account.as_ref());
        let body = LookupBody {
            device_id: q.device_id.clone(),
            payment_id: q.payment_id.as_str().into(),
            account_id,
            location_id,
        };
        let response = self
            .agent
            .post(&self.url(wire::LOOKUP_PATH))
            .header("Authorization", &auth)
            .send_json(&body)
            .map_err(classify)?;
        let status = response.status().as_u16();
        let wait = retry_after(status, response.headers());
        let mut body_reader = response.into_body();
        let text = body_reader
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(classify)?;
        let err = error_body(&text);
        match status {
            200 => {
                let decision: DecisionBody = serde_json::from_str(&text).map_err(|_| {
                    GatewayError::new(ForwardErrorKind::NoAnswer, "unreadable lookup answer")
                })?;
                Ok(PaymentLookup::Decided(
                    decision.into_decision(q.payment_id.as_str())?,
                ))
            }
            // Only the protocol's own `unknown_payment` counts: a 404 from a
            // proxy, a wrong base URL or a server without this endpoint says
            // nothing about the payment.
            404 if err.as_ref().is_some_and(|e| e.error == "unknown_payment") => {
                Ok(PaymentLookup::NotFound)
            }
            // A processor that answers a lookup of an id it already closed
            // with its "closed" refusal: the same answer, given earlier.
            422 if err.as_ref().is_some_and(|e| e.error == "closed") => Ok(PaymentLookup::NotFound),
            409 => Ok(PaymentLookup::InProgress),
            _ => {
                if status == 401 {
                    self.tokens.invalidate();
                }
                Err(with_wait(status_error(status, err), wait))
            }
        }
    }

    fn deliver_receipt(&self, d: &ReceiptDelivery) -> Result<(), GatewayError> {
        let auth = self.bearer_for(d.account.as_ref())?;
        let (account_id, location_id) = wire::account_ids(d.account.as_ref());
        let body = ReceiptBody {
            device_id: d.device_id.clone(),
            receipt_id: d.receipt_id.clone(),
            order_id: d.order_id.as_str().into(),
            channel: d.channel.clone(),
            address: d.address.clone(),
            account_id,
            location_id,
        };
        let response = self
            .agent
            .post(&self.url(wire::RECEIPT_PATH))
            .header("Authorization", &auth)
            .header(wire::IDEMPOTENCY_HEADER, &d.receipt_id)
            .send_json(&body)
            .map_err(classify)?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let wait = retry_after(status, response.headers());
        let mut body_reader = response.into_body();
        let text = body_reader
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .unwrap_or_default();
        if status == 401 {
            self.tokens.invalidate();
        }
        Err(with_wait(status_error(status, error_body(&text)), wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::StaticToken;

    fn tokens() -> Arc<dyn TokenProvider> {
        Arc::new(StaticToken("t".into()))
    }

    #[test]
    fn plain_http_needs_an_explicit_opt_in() {
        assert!(HttpGateway::new(HttpGatewayConfig::new("http://127.0.0.1:1"), tokens()).is_err());
        let mut c = HttpGatewayConfig::new("http://127.0.0.1:1");
        c.allow_plain_http = true;
        assert!(HttpGateway::new(c, tokens()).is_ok());
        assert!(HttpGateway::new(HttpGatewayConfig::new("ftp://x"), tokens()).is_err());
        assert!(HttpGateway::new(HttpGatewayConfig::new("https://a b"), tokens()).is_err());
    }

    #[test]
    fn plain_http_is_for_loopback_hosts_only() {
        let plain = |url: &str| {
            let mut c = HttpGatewayConfig::new(url);
            c.allow_plain_http = true;
            HttpGateway::new(c, tokens())
        };
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5/api/",
            "http://[::1]:9000/v1",
            "http://localhost",
            "http://LOCALHOST:80/x",
        ] {
            assert!(plain(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "http://payments.example.com",
            "http://10.0.0.2:8080",
            "http://192.168.1.1",
            "http://[::2]:80",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://127.0.0.1@evil.example.com",
            "http://evil.example.com\\@127.0.0.1",
            "http://evil.example.com#@127.0.0.1",
            "http://",
        ] {
            assert!(plain(bad).is_err(), "{bad} accepted");
        }
        assert!(plain("https://payments.example.com").is_ok());
    }

    #[test]
    fn status_codes_map_to_retryable_or_not() {
        assert_eq!(
            status_error(409, None).kind,
            ForwardErrorKind::ServiceUnavailable
        );
        assert_eq!(
            status_error(503, None).kind,
            ForwardErrorKind::ServiceUnavailable
        );
        assert_eq!(status_error(422, None).kind, ForwardErrorKind::Rejected);
        assert_eq!(status_error(401, None).kind, ForwardErrorKind::Rejected);
    }

    #[test]
    fn retry_after_is_read_in_seconds_on_429_and_503_only() {
        let headers = |v: &str| {
            let mut h = ureq::http::HeaderMap::new();
            h.insert("retry-after", v.parse().unwrap());
            h
        };
        let s = Duration::from_secs;
        assert_eq!(retry_after(503, &headers("120")), Some(s(120)));
        assert_eq!(retry_after(429, &headers(" 7 ")), Some(s(7)));
        assert_eq!(
            retry_after(503, &headers("99999999")),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(500, &headers("120")), None);
        assert_eq!(
            retry_after(503, &headers("Wed, 21 Oct 2026 07:28:00 GMT")),
            None
        );
        assert_eq!(retry_after(503, &ureq::http::HeaderMap::new()), None);
    }

    #[test]
    fn a_refused_connection_is_not_sent() {
        // Port 1 on loopback: nothing listens there.
        let mut c = HttpGatewayConfig::new("http://127.0.0.1:1");
        c.allow_plain_http = true;
        c.connect_timeout = Duration::from_secs(2);
        let g = HttpGateway::new(c, tokens()).unwrap();
        let e = g.status().unwrap_err();
        assert_eq!(e.kind, ForwardErrorKind::NotSent, "{e}");
    }

    /// Tokens by account: `tok-<account_id>`, `legacy` without one,
    /// `current` for requests about no payment.
    #[derive(Debug)]
    struct ByAccount;

    impl TokenProvider for ByAccount {
        fn token(&self) -> Result<String, GatewayError> {
            Ok("current".into())
        }
        fn token_for(&self, account: Option<&MerchantAccount>) -> Result<String, GatewayError> {
            Ok(account.map_or_else(|| "legacy".into(), |a| format!("tok-{}", a.account_id)))
        }
    }

    fn acct(id: &str) -> MerchantAccount {
        MerchantAccount::new(id, "loc-1").unwrap()
    }

    fn forward_request(account: Option<MerchantAccount>) -> ForwardRequest {
        use crate::lifecycle::{OrderId, PaymentId};
        use crate::money::{Currency, Money};
        ForwardRequest {
            device_id: "till-1".into(),
            payment_id: PaymentId::parse("pay-1").unwrap(),
            order_id: OrderId::parse("order-1").unwrap(),
            amount: Money::new(1250, Currency::parse("EUR").unwrap()),
            tip: None,
            entry_mode: crate::policy::EntryMode::Chip,
            network: crate::policy::Network::Visa,
            last4: "4242".into(),
            taken_at: Timestamp(1_000),
            deadline: Timestamp(2_000),
            attempt: 1,
            sealed_card_data: vec![1, 2, 3],
            reader_certificate: None,
            reader_signature: None,
            online: None,
            account,
        }
    }

    #[test]
    fn a_payment_body_carries_the_readers_certificate_and_signature_or_omits_them() {
        let mut r = forward_request(None);
        let json = serde_json::to_value(PaymentBody::forward(&r)).unwrap();
        let fields = json.as_object().unwrap();
        assert!(
            !fields.contains_key("reader_certificate") && !fields.contains_key("reader_signature")
        );
        let back: PaymentBody = serde_json::from_value(json).unwrap();
        assert_eq!(
            (back.reader_certificate, back.reader_signature),
            (None, None)
        );
        r.reader_certificate = Some(vec![1, 250]);
        r.reader_signature = Some(vec![9; 64]);
        let body = PaymentBody::forward(&r);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["reader_certificate"], "Afo=");
        assert_eq!(
            wire::decode_card_data(json["reader_signature"].as_str().unwrap()),
            Some(vec![9; 64])
        );
        let online = crate::gateway::AuthorizeRequest {
            device_id: r.device_id.clone(),
            payment_id: r.payment_id.clone(),
            order_id: r.order_id.clone(),
            amount: r.amount,
            tip: None,
            entry_mode: r.entry_mode,
            network: r.network,
            last4: r.last4.clone(),
            sealed_card_data: r.sealed_card_data.clone(),
            reader_certificate: r.reader_certificate.clone(),
            reader_signature: r.reader_signature.clone(),
            account: None,
        };
        let authorize = PaymentBody::authorize(&online);
        assert_eq!(
            (authorize.reader_certificate, authorize.reader_signature),
            (body.reader_certificate, body.reader_signature)
        );
    }

    #[test]
    fn a_payment_body_names_its_account_and_omits_none() {
        let json =
            serde_json::to_value(PaymentBody::forward(&forward_request(Some(acct("A"))))).unwrap();
        assert_eq!(json["account_id"], "A");
        assert_eq!(json["location_id"], "loc-1");
        let json = serde_json::to_value(PaymentBody::forward(&forward_request(None))).unwrap();
        let fields = json.as_object().unwrap();
        assert!(!fields.contains_key("account_id") && !fields.contains_key("location_id"));
        // A server of the protocol before accounts reads it as before, and
        // a body without them reads back with none.
        let back: PaymentBody = serde_json::from_value(json).unwrap();
        assert_eq!((back.account_id, back.location_id), (None, None));
    }

    #[test]
    fn the_token_is_the_one_of_the_requests_account() {
        let mut c = HttpGatewayConfig::new("http://127.0.0.1:1");
        c.allow_plain_http = true;
        let g = HttpGateway::new(c, Arc::new(ByAccount)).unwrap();
        assert_eq!(g.bearer_for(Some(&acct("A"))).unwrap(), "Bearer tok-A");
        assert_eq!(g.bearer_for(Some(&acct("B"))).unwrap(), "Bearer tok-B");
        assert_eq!(g.bearer_for(None).unwrap(), "Bearer legacy");
        assert_eq!(g.bearer().unwrap(), "Bearer current");
    }

    #[test]
    fn an_error_code_is_kept_and_account_mismatch_recognised() {
        let body = |code: &str| {
            Some(ErrorBody {
                error: code.into(),
                message: String::new(),
            })
        };
        let e = status_error(403, body(crate::gateway::ACCOUNT_MISMATCH));
        assert_eq!(e.code.as_deref(), Some("account_mismatch"));
        assert!(e.account_mismatch());
        let e = status_error(401, body("unauthorized"));
        assert_eq!(e.code.as_deref(), Some("unauthorized"));
        assert!(!e.account_mismatch() && e.credentials_rejected());
        // The same code on a retryable status is not a refusal.
        assert!(!status_error(503, body("account_mismatch")).account_mismatch());
        assert_eq!(status_error(403, None).code, None);
        assert_eq!(status_error(403, body("")).code, None);
    }

    /// One HTTP exchange on loopback: the request as received (head and
    /// body), answered with `status` and `body`.
    fn serve_once(status: &str, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let status = status.to_owned();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&seen).to_string()
        });
        (url, handle)
    }

    /// The JSON body of a request as received.
    fn sent_json(request: &str) -> serde_json::Value {
        let (_, body) = request.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn a_forward_goes_under_its_account_and_a_mismatch_comes_back_typed() {
        let (url, server) = serve_once(
            "403 Forbidden",
            r#"{"error":"account_mismatch","message":"not this token's account"}"#,
        );
        let mut c = HttpGatewayConfig::new(url);
        c.allow_plain_http = true;
        let g = HttpGateway::new(c, Arc::new(ByAccount)).unwrap();
        let e = g.forward(&forward_request(Some(acct("A")))).unwrap_err();
        let seen = server.join().unwrap();
        assert!(seen.contains("Bearer tok-A"), "{seen}");
        let body = sent_json(&seen);
        assert_eq!(
            (&body["account_id"], &body["location_id"]),
            (&"A".into(), &"loc-1".into()),
            "{seen}"
        );
        assert_eq!(e.kind, ForwardErrorKind::Rejected);
        assert_eq!(e.http_status, Some(403));
        assert!(e.account_mismatch(), "{e}");
    }

    #[test]
    fn a_receipt_refusal_keeps_its_code() {
        let (url, server) = serve_once("403 Forbidden", r#"{"error":"account_mismatch"}"#);
        let mut c = HttpGatewayConfig::new(url);
        c.allow_plain_http = true;
        let g = HttpGateway::new(c, Arc::new(ByAccount)).unwrap();
        let e = g
            .deliver_receipt(&ReceiptDelivery {
                device_id: "till-1".into(),
                receipt_id: "till-1-r1".into(),
                order_id: crate::lifecycle::OrderId::parse("order-1").unwrap(),
                channel: "email".into(),
                address: "a@example.com".into(),
                account: Some(acct("B")),
            })
            .unwrap_err();
        let seen = server.join().unwrap();
        assert!(seen.contains("Bearer tok-B"), "{seen}");
        assert_eq!(sent_json(&seen)["account_id"], "B", "{seen}");
        assert!(e.account_mismatch(), "{e}");
    }

    #[test]
    fn an_unusable_token_is_rejected_before_sending() {
        let mut c = HttpGatewayConfig::new("http://127.0.0.1:1");
        c.allow_plain_http = true;
        let g = HttpGateway::new(c, Arc::new(StaticToken("bad token\n".into()))).unwrap();
        assert_eq!(g.status().unwrap_err().kind, ForwardErrorKind::Rejected);
    }
}
