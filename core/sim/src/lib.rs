//! # pos-sim — a payment processor on loopback
//!
//! Implements the gateway protocol of `docs/gateway-openapi.yaml` (the JSON
//! bodies of `pos_rules::gateway::wire`) over HTTP/1.1 for tests, the demo and
//! the benchmarks:
//!
//! - holds the X25519 key that readers seal card data to, and opens it
//!   ([`cards`]); the PAN decides the outcome through [`cards::test_cards`];
//! - checks the sealed card data against the request it came with: a
//!   version-2 blob (`pos_rules::card_seal`) must be bound to this payment
//!   id, device, amount (tip included), currency, entry mode, network and
//!   last four digits, and come with the certificate of the reader its
//!   header names (signed by one of [`SimConfig::reader_authorities`]) and
//!   that reader's signature of the whole blob
//!   (`pos_rules::reader_trust::CARD_CONTEXT`), else the payment is declined
//!   `mismatch`; so is a blob that does not open (a changed byte, header
//!   included) and a version-1 blob, bound to nothing (unless
//!   [`SimConfig::accept_unbound_card_data`]). Anyone can seal a blob to
//!   the processor's public key; only a certified reader can sign one;
//! - keeps a replay record: a reader counter already used by that reader
//!   (its certified identity key), or an ephemeral key already used, is
//!   declined `replayed`.
//!   These two refusals are not recorded as the payment id's decision: the
//!   same request gets the same refusal again, and a copy of a device's
//!   card data sent first under that device's payment id cannot take the
//!   id from it;
//! - keeps a ledger of charges with idempotency on (device id, payment id)
//!   that never expires: a repeat returns the first decision and charges
//!   nothing (it is answered before any check of the card data, so a retry
//!   is never `replayed`); the same key with another amount is refused
//!   (422); a request while the same key is being processed gets 409;
//! - merchant accounts: [`Simulator::token_for`] issues one bearer token
//!   per account and location; [`Simulator::token`] is the account-less
//!   token of callers from before accounts. A request naming an account
//!   (`account_id`, `location_id`) other than its token's is refused 403
//!   `account_mismatch` on every route, before anything is charged or
//!   recorded; so is a request about a payment id or receipt id recorded
//!   under another account. A request naming no account is taken under its
//!   token's account (none for the account-less token). Every charge and
//!   receipt records the account it was taken under;
//! - a status endpoint that can be switched to an outage;
//! - fault injection ([`faults`]): latency, answer dropped after the charge,
//!   5xx, 409, connection closed, timeout, slow answers, at a seeded rate or
//!   for given payment ids.
//!
//! [`Simulator::start`] runs it on its own thread and tokio runtime, so it
//! can be started from synchronous code and from inside another runtime;
//! dropping the handle stops it.

pub mod cards;
pub mod faults;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pos_rules::gateway::wire::{
    self, DecisionBody, ErrorBody, LookupBody, PaymentBody, ReceiptBody, StatusBody,
};
use pos_rules::lifecycle::DeclineReason;
use tokio::sync::oneshot;

pub use cards::{test_cards, CardOutcome, TestCard};
pub use faults::{Fault, FaultMode, FaultPlan};
pub use pos_rules::account::MerchantAccount;

use cards::ProcessorKeys;
use faults::Rng;

/// How a simulator starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Seeds the processor key and the fault generator.
    pub seed: u64,
    /// The account-less bearer token (requests naming no account); the
    /// token of each merchant account is derived from it
    /// ([`Simulator::token_for`]).
    pub token: String,
    pub faults: FaultPlan,
    /// Accepts version-1 card data, bound to nothing, for a transition
    /// from readers that seal no binding. Off by default: such a blob is
    /// declined `mismatch`. When on, a version-1 blob is charged with no
    /// check against its request; only its ephemeral key goes in the replay
    /// record, so the same blob is still charged once at most.
    pub accept_unbound_card_data: bool,
    /// The reader authorities (Ed25519 public keys) whose certificates the
    /// processor accepts: a version-2 blob is charged only with a
    /// certificate signed by one of them, naming the blob's reader serial,
    /// and a signature of the blob by that certificate's key. Default: the
    /// simulator's authority (`pos_rules::reader_trust::simulator_authority`),
    /// which certifies the simulated readers.
    pub reader_authorities: Vec<[u8; pos_rules::reader_trust::PUBLIC_KEY_LEN]>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            token: "sim-token".into(),
            faults: FaultPlan::none(),
            accept_unbound_card_data: false,
            reader_authorities: vec![pos_rules::reader_trust::simulator_authority().public_key()],
        }
    }
}

/// The decision recorded for a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved { processor_ref: String },
    Declined { code: String },
}

/// One payment id in the simulator's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub device_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    /// Whether it came as an online authorization (else a forwarded offline payment).
    pub online: bool,
    pub outcome: ChargeOutcome,
    /// Requests seen for this id that reached the ledger (repeats included).
    pub requests: u64,
    /// The merchant account it was charged under: its token's (`None`:
    /// sent with the account-less token).
    pub account: Option<MerchantAccount>,
}

/// A delivered receipt. The address is kept for tests only; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveredReceipt {
    pub receipt_id: String,
    pub order_id: String,
    pub channel: String,
    pub address: String,
    /// The merchant account it was delivered under.
    pub account: Option<MerchantAccount>,
}

impl fmt::Debug for DeliveredReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveredReceipt")
            .field("receipt_id", &self.receipt_id)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Payment requests received.
    pub requests: u64,
    /// Repeats answered from the ledger.
    pub idempotent_replays: u64,
    /// Payments declined `mismatch` or `replayed` (card data that is not
    /// this request's, not signed by a certified reader, or used before).
    pub card_data_refusals: u64,
    /// Payment lookups answered (`POST /v1/payment-lookups`).
    pub lookups: u64,
    /// Requests refused 403 `account_mismatch`, on any route.
    pub account_mismatches: u64,
    /// Faults injected, by name.
    pub faults: BTreeMap<&'static str, u64>,
}

/// (device id, payment id): the idempotency key.
type ChargeKey = (String, String);

/// The card reads the processor has used, each with the payment it decided
/// with it (approved, or declined by the card). Written in the same
/// critical section as that payment's record in the ledger, and kept as
/// long as it: never removed here, as the idempotency records are not. A
/// processor that expires idempotency records must expire these no sooner,
/// or a read could be charged again once its record is gone.
#[derive(Default)]
struct ReplayRecord {
    /// (reader identity key, reader counter) of every version-2 read used:
    /// the key of the certificate that the read was checked against, so
    /// only the reader itself can use up its counters.
    counters: BTreeMap<([u8; pos_rules::reader_trust::PUBLIC_KEY_LEN], u64), ChargeKey>,
    /// The ephemeral key of every read used, of either version.
    ephemeral_keys: BTreeMap<[u8; pos_rules::card_seal::PUBLIC_KEY_LEN], ChargeKey>,
}

#[derive(Default)]
struct Ledger {
    charges: BTreeMap<ChargeKey, Charge>,
    replay: ReplayRecord,
    in_flight: BTreeSet<(String, String)>,
    /// Ids a lookup found unknown: refused from then on.
    closed: BTreeSet<(String, String)>,
    receipts: BTreeMap<String, DeliveredReceipt>,
    stats: SimStats,
}

struct Shared {
    token: String,
    /// The token of each merchant account issued by `token_for`.
    accounts: Mutex<BTreeMap<String, MerchantAccount>>,
    keys: ProcessorKeys,
    accept_unbound_card_data: bool,
    reader_authorities: Vec<[u8; pos_rules::reader_trust::PUBLIC_KEY_LEN]>,
    ledger: Mutex<Ledger>,
    faults: Mutex<FaultPlan>,
    rng: Mutex<Rng>,
    outage: std::sync::atomic::AtomicBool,
    /// The processor's clock, sent in status answers (`time_ms`).
    clock: Mutex<Option<Arc<dyn pos_rules::clock::Clock>>>,
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who sends a request with this `Authorization` header: `None` for
    /// an unknown token.
    fn caller(&self, authorization: Option<&str>) -> Option<Caller> {
        let token = authorization?.strip_prefix("Bearer ")?;
        if token == self.token {
            return Some(Caller(None));
        }
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        accounts.get(token).map(|a| Caller(Some(a.clone())))
    }

    /// The account a request is taken under: its token's. A request naming
    /// another account is refused `account_mismatch` (and counted); one
    /// naming none is taken under its token's account; an account id
    /// without its location id, or the reverse, is a bad request.
    fn account_of(
        &self,
        caller: &Caller,
        account_id: &Option<String>,
        location_id: &Option<String>,
    ) -> Result<Option<MerchantAccount>, Answer> {
        match (account_id, location_id) {
            (None, None) => Ok(caller.0.clone()),
            (Some(account_id), Some(location_id)) => match &caller.0 {
                Some(a) if a.account_id == *account_id && a.location_id == *location_id => {
                    Ok(caller.0.clone())
                }
                _ => Err(self.account_mismatch()),
            },
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "account_id and location_id go together",
            )),
        }
    }

    /// The 403 `account_mismatch` answer, counted.
    fn account_mismatch(&self) -> Answer {
        self.ledger().stats.account_mismatches += 1;
        error(
            StatusCode::FORBIDDEN,
            pos_rules::gateway::ACCOUNT_MISMATCH,
            "this request is for another merchant account than its token's",
        )
    }
}

/// The merchant account of a request's bearer token (`None`: the
/// account-less token).
struct Caller(Option<MerchantAccount>);

/// A running simulator. Stops when dropped.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds, starts serving on its own thread, and returns once listening.
    pub fn start(config: SimConfig) -> io::Result<Simulator> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pos-sim")
            .enable_all()
            .build()?;
        // Bound here with std (this may run inside another runtime, where
        // `block_on` is not allowed), handed to tokio on the simulator's thread.
        let std_listener = std::net::TcpListener::bind(config.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: config.token,
            accounts: Mutex::new(BTreeMap::new()),
            keys: ProcessorKeys::from_seed(config.seed),
            accept_unbound_card_data: config.accept_unbound_card_data,
            reader_authorities: config.reader_authorities,
            ledger: Mutex::new(Ledger::default()),
            faults: Mutex::new(config.faults),
            rng: Mutex::new(Rng::new(config.seed)),
            outage: std::sync::atomic::AtomicBool::new(false),
            clock: Mutex::new(None),
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("pos-sim-accept".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let _ = stream.set_nodelay(true);
                                let shared = Arc::clone(&serving);
                                tokio::spawn(async move {
                                    let service = service_fn(move |req| {
                                        let shared = Arc::clone(&shared);
                                        async move { handle(shared, req).await }
                                    });
                                    let _ = http1::Builder::new()
                                        .keep_alive(true)
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Simulator {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account-less token: requests sent with it may name no
    /// merchant account (as before accounts), and are charged under none.
    pub fn token(&self) -> String {
        self.shared.token.clone()
    }

    /// The bearer token of `account` (its account id and location id), valid
    /// from this call on. The same account always gets the same token
    /// (derived from [`SimConfig::token`]), so a simulator started again
    /// with the same configuration takes the tokens it gave before, once
    /// asked for them again. A request sent with it is taken under
    /// `account`: it may name `account` or no account, and is refused 403
    /// `account_mismatch` if it names another.
    pub fn token_for(&self, account: &MerchantAccount) -> String {
        let material = format!(
            "pos-sim account token\0{}\0{}\0{}",
            self.shared.token, account.account_id, account.location_id
        );
        let d = ring::digest::digest(&ring::digest::SHA256, material.as_bytes());
        let suffix = pos_rules::crypto::hex(&d.as_ref()[..12]);
        let token = format!("{}.acct-{suffix}", self.shared.token);
        self.shared
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), account.clone());
        token
    }

    /// The public key readers seal card data to.
    pub fn processor_key(&self) -> pos_rules::card_seal::ProcessorKey {
        self.shared.keys.public_key()
    }

    /// Switches the outage: status says `disrupted` and payment requests get
    /// 503 without being charged.
    pub fn set_outage(&self, on: bool) {
        self.shared
            .outage
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The processor's clock: its wall time goes in every status answer
    /// (`time_ms`), which corrects the devices' trusted clocks. `None` (the
    /// default) sends no time.
    pub fn set_clock(&self, clock: Option<Arc<dyn pos_rules::clock::Clock>>) {
        *self.shared.clock.lock().unwrap_or_else(|p| p.into_inner()) = clock;
    }

    pub fn set_faults(&self, plan: FaultPlan) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    /// Every payment id seen, in key order.
    pub fn ledger(&self) -> Vec<Charge> {
        self.shared.ledger().charges.values().cloned().collect()
    }

    pub fn receipts(&self) -> Vec<DeliveredReceipt> {
        self.shared.ledger().receipts.values().cloned().collect()
    }

    pub fn stats(&self) -> SimStats {
        self.shared.ledger().stats.clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An answer, or `None` to close the connection without one.
type Answer = Option<(StatusCode, String)>;

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Answer {
    Some((status, serde_json::to_string(body).unwrap_or_default()))
}

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    json(
        status,
        &ErrorBody {
            error: code.into(),
            message: message.into(),
        },
    )
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, io::Error> {
    let answer = route(&shared, req).await;
    match answer {
        Some((status, body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        // An error from the service makes hyper close the connection with
        // no response: the client sees the connection drop.
        None => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "fault")),
    }
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if path.starts_with("/_sim/") {
        return admin(shared, &parts.method, &path, parts.uri.query());
    }
    let caller = shared.caller(
        parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let Some(caller) = caller else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad or missing bearer token",
        );
    };
    let key = parts
        .headers
        .get(wire::IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = match Limited::new(body, 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "unreadable body"),
    };
    match (&parts.method, path.as_str()) {
        (&Method::GET, wire::STATUS_PATH) => {
            let status = if shared.outage.load(std::sync::atomic::Ordering::SeqCst) {
                "disrupted"
            } else {
                "available"
            };
            json(
                StatusCode::OK,
                &StatusBody {
                    status: status.into(),
                    time_ms: shared
                        .clock
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .map(|c| c.wall_now().millis()),
                },
            )
        }
        (&Method::POST, wire::AUTHORIZE_PATH) => payment(shared, &caller, &bytes, key, true).await,
        (&Method::POST, wire::FORWARD_PATH) => payment(shared, &caller, &bytes, key, false).await,
        (&Method::POST, wire::RECEIPT_PATH) => receipt(shared, &caller, &bytes, key),
        (&Method::POST, wire::LOOKUP_PATH) => lookup(shared, &caller, &bytes).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

fn admin(shared: &Arc<Shared>, method: &Method, path: &str, query: Option<&str>) -> Answer {
    match (method, path) {
        (&Method::GET, "/_sim/ledger") => {
            let rows: Vec<serde_json::Value> = shared
                .ledger()
                .charges
                .values()
                .map(|c| {
                    let (outcome, detail) = match &c.outcome {
                        ChargeOutcome::Approved { processor_ref } => ("approved", processor_ref),
                        ChargeOutcome::Declined { code } => ("declined", code),
                    };
                    serde_json::json!({
                        "device_id": c.device_id, "payment_id": c.payment_id,
                        "amount": c.amount, "currency": c.currency, "online": c.online,
                        "outcome": outcome, "detail": detail, "requests": c.requests,
                        "account_id": c.account.as_ref().map(|a| &a.account_id),
                        "location_id": c.account.as_ref().map(|a| &a.location_id),
                    })
                })
                .collect();
            json(StatusCode::OK, &rows)
        }
        (&Method::POST, "/_sim/outage") => {
            let on = query.is_some_and(|q| q.contains("on=1") || q.contains("on=true"));
            shared.outage.store(on, std::sync::atomic::Ordering::SeqCst);
            json(StatusCode::OK, &serde_json::json!({ "outage": on }))
        }
        (&Method::POST, "/_sim/faults") => {
            let mode = query
                .and_then(|q| q.strip_prefix("mode="))
                .and_then(|m| m.parse::<FaultMode>().ok());
            match mode {
                Some(m) => {
                    *shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = m.plan(None);
                    json(StatusCode::OK, &serde_json::json!({ "mode": m.name() }))
                }
                None => error(StatusCode::BAD_REQUEST, "bad_request", "mode=<fault mode>"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

/// Picks the fault for this request, if any, and the latency to add.
fn draw_fault(shared: &Shared, payment_id: &str) -> (Option<Fault>, Duration, Duration) {
    let mut plan = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
    let mut latency = plan.latency;
    let hold = plan.hold;
    let mut fault = plan.always.get(payment_id).copied();
    if fault.is_none() {
        if let Some(list) = plan.once.get_mut(payment_id) {
            if !list.is_empty() {
                fault = Some(list.remove(0));
            }
        }
    }
    let mut rng = shared.rng.lock().unwrap_or_else(|p| p.into_inner());
    if fault.is_none() {
        for (f, rate) in &plan.rates {
            if rng.below(1000) < u64::from(*rate) {
                fault = Some(*f);
                break;
            }
        }
    }
    if fault == Some(Fault::Slow) {
        latency += Duration::from_millis(50 + rng.below(200));
    }
    (fault, latency, hold)
}

fn count_fault(shared: &Shared, f: Fault) {
    *shared.ledger().stats.faults.entry(f.name()).or_insert(0) += 1;
}

async fn payment(
    shared: &Arc<Shared>,
    caller: &Caller,
    bytes: &[u8],
    key: Option<String>,
    online: bool,
) -> Answer {
    shared.ledger().stats.requests += 1;
    let Ok(body) = serde_json::from_slice::<PaymentBody>(bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed payment body",
        );
    };
    if key.as_deref() != Some(body.payment_id.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Idempotency-Key must equal payment_id",
        );
    }
    // Refused before faults, the ledger and the card data: nothing is
    // charged or recorded for a request under another account.
    let account = match shared.account_of(caller, &body.account_id, &body.location_id) {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    let (fault, latency, hold) = draw_fault(shared, &body.payment_id);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(f @ Fault::ServerError) => {
            count_fault(shared, f);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "injected 5xx",
            );
        }
        Some(f @ Fault::Conflict) => {
            count_fault(shared, f);
            return error(StatusCode::CONFLICT, "in_flight", "injected conflict");
        }
        Some(f @ Fault::Reset) => {
            count_fault(shared, f);
            return None;
        }
        Some(f @ Fault::Timeout) => {
            count_fault(shared, f);
            tokio::time::sleep(hold).await;
            return None;
        }
        _ => {}
    }
    if shared.outage.load(std::sync::atomic::Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service outage",
        );
    }
    let k = (body.device_id.clone(), body.payment_id.clone());
    {
        let mut l = shared.ledger();
        if l.charges.get(&k).is_some_and(|c| c.account != account) {
            // The id was charged under another account: its decision is
            // that account's only.
            drop(l);
            return shared.account_mismatch();
        }
        if let Some(c) = l.charges.get_mut(&k) {
            if c.amount != body.amount || c.currency != body.currency {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_mismatch",
                    "this payment id was used with another amount",
                );
            }
            c.requests += 1;
            let answer = decision_body(c);
            l.stats.idempotent_replays += 1;
            drop(l);
            return after_commit(shared, fault, answer);
        }
        if l.closed.contains(&k) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "closed",
                "a lookup found this payment id unknown; it is closed",
            );
        }
        if !l.in_flight.insert(k.clone()) {
            return error(
                StatusCode::CONFLICT,
                "in_flight",
                "this payment id is being processed",
            );
        }
    }
    let decoded = (
        wire::decode_card_data(&body.card_data),
        decode_optional(body.reader_certificate.as_deref()),
        decode_optional(body.reader_signature.as_deref()),
    );
    let (Some(sealed), Some(certificate), Some(signature)) = decoded else {
        shared.ledger().in_flight.remove(&k);
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "card_data, reader_certificate or reader_signature is not base64",
        );
    };
    let checked = check_card_data(
        shared,
        &sealed,
        certificate.as_deref(),
        signature.as_deref(),
        &body,
    );
    let mut l = shared.ledger();
    l.in_flight.remove(&k);
    // The replay record is read and written under the same lock as the
    // ledger, so two requests carrying the same card read cannot both pass.
    let read = match checked {
        Err(refusal) => Err(refusal),
        Ok(read) => match l.replay.used_by(&read) {
            Some(_) => Err(DeclineReason::Replayed),
            None => Ok(read),
        },
    };
    let read = match read {
        Ok(read) => read,
        Err(reason) => {
            // Not recorded under the idempotency key, and the read not
            // marked used: the refusal follows from the request and from
            // the reads already charged, so the same request gets it again,
            // and a copy of a device's card data sent first under the
            // device's own payment id cannot take that id from it.
            l.stats.card_data_refusals += 1;
            drop(l);
            let answer = DecisionBody {
                payment_id: body.payment_id,
                outcome: "declined".into(),
                processor_ref: None,
                decline_code: Some(wire::decline_code(&reason).to_owned()),
            };
            return after_commit(shared, fault, answer);
        }
    };
    l.replay.record(&read, &k);
    let outcome = match cards::decide(&read.opened.secret.pan) {
        CardOutcome::Approve => ChargeOutcome::Approved {
            processor_ref: format!("ch_{}", short_ref(&k)),
        },
        CardOutcome::Decline(reason) => ChargeOutcome::Declined {
            code: wire::decline_code(&reason).to_owned(),
        },
    };
    let charge = Charge {
        device_id: body.device_id.clone(),
        payment_id: body.payment_id.clone(),
        amount: body.amount,
        currency: body.currency.clone(),
        online,
        outcome,
        requests: 1,
        account,
    };
    let answer = decision_body(&charge);
    l.charges.insert(k, charge);
    drop(l);
    after_commit(shared, fault, answer)
}

/// An optional base64 field: `Some(None)` when absent, `None` when it is
/// not base64.
fn decode_optional(field: Option<&str>) -> Option<Option<Vec<u8>>> {
    match field {
        None => Some(None),
        Some(s) => wire::decode_card_data(s).map(Some),
    }
}

/// A card read that passed the checks of its request.
struct CheckedRead {
    opened: cards::OpenedCard,
    /// The identity key of the certified reader that signed a version-2
    /// blob (`None` for an accepted version-1 blob).
    reader_key: Option<[u8; pos_rules::reader_trust::PUBLIC_KEY_LEN]>,
}

/// Opens the card data and checks it against its request: a blob that
/// does not open, is bound to another request, or (unless accepted) is
/// bound to nothing, is declined `mismatch`; so is a version-2 blob that
/// does not come with a certificate of one of the processor's reader
/// authorities, for the reader serial of its header, and that reader's
/// signature of the whole blob.
fn check_card_data(
    shared: &Shared,
    sealed: &[u8],
    certificate: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &PaymentBody,
) -> Result<CheckedRead, DeclineReason> {
    let opened = shared
        .keys
        .open(sealed)
        .map_err(|_| DeclineReason::Mismatch)?;
    match &opened.binding {
        Some(b) if cards::binding_mismatch(b, body).is_some() => Err(DeclineReason::Mismatch),
        Some(b) => {
            let reader_key = cards::reader_signer(
                b,
                sealed,
                certificate,
                signature,
                &shared.reader_authorities,
            )
            .map_err(|_| DeclineReason::Mismatch)?;
            Ok(CheckedRead {
                opened,
                reader_key: Some(reader_key),
            })
        }
        None if shared.accept_unbound_card_data => Ok(CheckedRead {
            opened,
            reader_key: None,
        }),
        None => Err(DeclineReason::Mismatch),
    }
}

impl ReplayRecord {
    /// The reader counter of a checked version-2 read, keyed on the
    /// reader's identity key.
    fn counter_key(
        read: &CheckedRead,
    ) -> Option<([u8; pos_rules::reader_trust::PUBLIC_KEY_LEN], u64)> {
        Some((read.reader_key?, read.opened.binding.as_ref()?.counter))
    }

    /// The charge that already used this card read, by its reader counter
    /// or its ephemeral key.
    fn used_by(&self, read: &CheckedRead) -> Option<&ChargeKey> {
        let by_counter = Self::counter_key(read).and_then(|k| self.counters.get(&k));
        by_counter.or_else(|| self.ephemeral_keys.get(&read.opened.eph_pub))
    }

    fn record(&mut self, read: &CheckedRead, charge: &ChargeKey) {
        if let Some(k) = Self::counter_key(read) {
            self.counters.insert(k, charge.clone());
        }
        self.ephemeral_keys
            .insert(read.opened.eph_pub, charge.clone());
    }
}

/// `POST /v1/payment-lookups`: the decision recorded for an id, or
/// `unknown_payment` (and the id is closed), or `in_flight`. Subject to the
/// outage switch and the latency of the fault plan, not to its faults.
async fn lookup(shared: &Arc<Shared>, caller: &Caller, bytes: &[u8]) -> Answer {
    let Ok(body) = serde_json::from_slice::<LookupBody>(bytes) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "malformed lookup");
    };
    let account = match shared.account_of(caller, &body.account_id, &body.location_id) {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    let latency = shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if shared.outage.load(std::sync::atomic::Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service outage",
        );
    }
    let k = (body.device_id, body.payment_id);
    let mut l = shared.ledger();
    if l.charges.get(&k).is_some_and(|c| c.account != account) {
        drop(l);
        return shared.account_mismatch();
    }
    l.stats.lookups += 1;
    if let Some(c) = l.charges.get(&k) {
        let answer = decision_body(c);
        return json(StatusCode::OK, &answer);
    }
    if l.in_flight.contains(&k) {
        return error(
            StatusCode::CONFLICT,
            "in_flight",
            "this payment id is being processed",
        );
    }
    l.closed.insert(k);
    error(
        StatusCode::NOT_FOUND,
        "unknown_payment",
        "no payment with this id; the id is now closed",
    )
}

fn after_commit(shared: &Shared, fault: Option<Fault>, answer: DecisionBody) -> Answer {
    if let Some(f @ Fault::DropAfterCommit) = fault {
        count_fault(shared, f);
        return None;
    }
    if let Some(f @ Fault::Slow) = fault {
        count_fault(shared, f);
    }
    json(StatusCode::OK, &answer)
}

fn decision_body(c: &Charge) -> DecisionBody {
    match &c.outcome {
        ChargeOutcome::Approved { processor_ref } => DecisionBody {
            payment_id: c.payment_id.clone(),
            outcome: "approved".into(),
            processor_ref: Some(processor_ref.clone()),
            decline_code: None,
        },
        ChargeOutcome::Declined { code } => DecisionBody {
            payment_id: c.payment_id.clone(),
            outcome: "declined".into(),
            processor_ref: None,
            decline_code: Some(code.clone()),
        },
    }
}

/// A short, stable reference for a charge.
fn short_ref(k: &(String, String)) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("{}/{}", k.0, k.1).as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn receipt(shared: &Arc<Shared>, caller: &Caller, bytes: &[u8], key: Option<String>) -> Answer {
    let Ok(body) = serde_json::from_slice::<ReceiptBody>(bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed receipt body",
        );
    };
    if key.as_deref() != Some(body.receipt_id.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Idempotency-Key must equal receipt_id",
        );
    }
    let account = match shared.account_of(caller, &body.account_id, &body.location_id) {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    if !matches!(body.channel.as_str(), "email" | "sms") || body.address.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
            "unknown channel",
        );
    }
    if shared.outage.load(std::sync::atomic::Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service outage",
        );
    }
    let mut l = shared.ledger();
    let delivered = l
        .receipts
        .entry(body.receipt_id.clone())
        .or_insert(DeliveredReceipt {
            receipt_id: body.receipt_id,
            order_id: body.order_id,
            channel: body.channel,
            address: body.address,
            account: account.clone(),
        });
    if delivered.account != account {
        // Delivered under another account: that account's only.
        drop(l);
        return shared.account_mismatch();
    }
    drop(l);
    json(StatusCode::OK, &serde_json::json!({ "delivered": true }))
}
