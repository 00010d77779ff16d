//! The forwarding engine against a scripted in-process processor, on a
//! virtual clock: exactly-once, order, back-off, deadlines,
//! declines, pause and the automatic start on recovery.

#![allow(clippy::unwrap_used)]

use pos_test_support as support;
use std::collections::BTreeMap;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_core::checkout::PaymentView;
use pos_core::clock::{Clock, Timestamp, VirtualClock};
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, PaymentLookup,
    ReceiptDelivery, ServiceStatus, StatusQuery,
};
use pos_core::lifecycle::{
    CustomerContact, DeclineReason, ForwardErrorKind, OrderId, OrderStatus, PaymentId,
    PaymentState, PaymentStatus,
};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Policy};
use pos_core::store::{BoxFuture, MemoryStore, Store, StoreError};
use pos_core::PosEvent;
use support::{Sale, T0};
const HOUR: Duration = Duration::from_secs(3600);

fn usd(cents: i64) -> Money {
    Money::new(cents, Currency::parse("USD").unwrap())
}

/// What the scripted processor does with one payment id.
#[derive(Debug, Clone)]
enum Script {
    Approve,
    Decline(DeclineReason),
    /// Fails `n` times with `kind` (charging first when `charge` is set,
    /// as if the answer were lost), then approves.
    FailThenApprove {
        n: usize,
        kind: ForwardErrorKind,
        charge: bool,
    },
    /// Never decides.
    AlwaysFail(ForwardErrorKind),
}

/// An in-process processor with never-expiring idempotency on the payment
/// id: a charge is made once, and a repeat returns the first decision.
#[derive(Debug, Default)]
struct Processor {
    scripts: Mutex<BTreeMap<String, Script>>,
    /// payment id -> (decision, how many requests)
    charges: Mutex<BTreeMap<String, (GatewayDecision, usize)>>,
    calls: Mutex<Vec<String>>,
    failures: Mutex<BTreeMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    receipts: Mutex<Vec<(String, String, String)>>,
    /// The receipt id of every delivery attempt, failed ones included.
    receipt_attempts: Mutex<Vec<String>>,
    /// How many receipt deliveries fail ("no answer") before they succeed.
    receipt_failures: AtomicUsize,
    /// The next payment request is answered 503 with this `Retry-After`.
    busy_once: Mutex<Option<Duration>>,
    /// While set, every payment request is refused with this HTTP status.
    refuse_with: Mutex<Option<u16>>,
    /// While set, the status endpoint cannot be reached (the automatic
    /// driver's probes fail), so the engine cannot go online by itself
    /// while a test takes its payments offline.
    unreachable: std::sync::atomic::AtomicBool,
    /// Calls to the status endpoint (the driver's probes).
    probes: AtomicUsize,
    /// Ids a lookup found unknown: refused from then on.
    closed: Mutex<std::collections::BTreeSet<String>>,
    lookups: AtomicUsize,
    /// Holds decided answers before they leave (a slow processor).
    gate: Gate,
    /// A payment id whose requests make the gateway panic.
    panic_on: Mutex<Option<String>>,
    /// Each forward takes this long on this virtual clock (a slow processor).
    clock_per_forward: Mutex<Option<(VirtualClock, Duration)>>,
}

/// While closed, every request is decided (and charged) at the processor
/// but its answer waits: the moment a caller can be cancelled.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: std::sync::Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }
    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if *closed {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *closed {
                closed = self.opened.wait(closed).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
    /// Waits until `n` answers are held (for up to a minute: only a bound
    /// on a hang).
    async fn held(&self, n: usize) {
        let limit = std::time::Instant::now() + Duration::from_secs(60);
        while self.waiting.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < limit,
                "{n} answers never reached the gate"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Processor {
    fn script(&self, id: &PaymentId, s: Script) {
        self.scripts.lock().unwrap().insert(id.as_str().into(), s);
    }
    fn approved(&self) -> usize {
        self.charges
            .lock()
            .unwrap()
            .values()
            .filter(|(d, _)| matches!(d, GatewayDecision::Approved { .. }))
            .count()
    }
}

impl Gateway for Processor {
    fn authorize(&self, r: &AuthorizeRequest) -> Result<GatewayDecision, GatewayError> {
        self.decide(&r.payment_id)
    }

    fn forward(&self, r: &ForwardRequest) -> Result<GatewayDecision, GatewayError> {
        assert!(r.online.is_none(), "an online payment is never forwarded");
        if let Some((clock, d)) = &*self.clock_per_forward.lock().unwrap() {
            clock.advance(*d);
        }
        self.decide(&r.payment_id)
    }

    fn status(&self) -> Result<ServiceStatus, GatewayError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(GatewayError::new(
                ForwardErrorKind::NotSent,
                "test: no route",
            ));
        }
        Ok(ServiceStatus::Available)
    }

    fn payment_status(&self, q: &StatusQuery) -> Result<PaymentLookup, GatewayError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(GatewayError::new(
                ForwardErrorKind::NotSent,
                "test: no route",
            ));
        }
        let id = q.payment_id.as_str().to_owned();
        if let Some((d, _)) = self.charges.lock().unwrap().get(&id) {
            return Ok(PaymentLookup::Decided(d.clone()));
        }
        self.closed.lock().unwrap().insert(id);
        Ok(PaymentLookup::NotFound)
    }

    fn deliver_receipt(&self, d: &ReceiptDelivery) -> Result<(), GatewayError> {
        self.receipt_attempts
            .lock()
            .unwrap()
            .push(d.receipt_id.clone());
        if let Some(status) = *self.refuse_with.lock().unwrap() {
            return Err(
                GatewayError::new(ForwardErrorKind::Rejected, format!("HTTP {status}"))
                    .with_http_status(status),
            );
        }
        if self.receipt_failures.load(Ordering::SeqCst) > 0 {
            self.receipt_failures.fetch_sub(1, Ordering::SeqCst);
            return Err(GatewayError::new(
                ForwardErrorKind::NoAnswer,
                "test: receipt answer lost",
            ));
        }
        self.receipts.lock().unwrap().push((
            d.receipt_id.clone(),
            d.channel.clone(),
            d.address.clone(),
        ));
        Ok(())
    }
}

impl Processor {
    fn decide(&self, id: &PaymentId) -> Result<GatewayDecision, GatewayError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let id = id.as_str().to_owned();
        self.calls.lock().unwrap().push(id.clone());
        if self.panic_on.lock().unwrap().as_deref() == Some(id.as_str()) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            panic!("test: the gateway panics");
        }
        if let Some(status) = *self.refuse_with.lock().unwrap() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(
                GatewayError::new(ForwardErrorKind::Rejected, format!("HTTP {status}"))
                    .with_http_status(status),
            );
        }
        if let Some(wait) = self.busy_once.lock().unwrap().take() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(
                GatewayError::new(ForwardErrorKind::ServiceUnavailable, "HTTP 503")
                    .with_retry_after(wait),
            );
        }
        if self.closed.lock().unwrap().contains(&id) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(GatewayError::new(ForwardErrorKind::Rejected, "closed"));
        }
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or(Script::Approve);
        let decide = |d: GatewayDecision| {
            let mut c = self.charges.lock().unwrap();
            let e = c.entry(id.clone()).or_insert((d, 0));
            e.1 += 1;
            e.0.clone()
        };
        let approve = GatewayDecision::Approved {
            processor_ref: format!("ch_{id}"),
        };
        let out = match script {
            Script::Approve => Ok(decide(approve)),
            Script::Decline(reason) => Ok(decide(GatewayDecision::Declined { reason })),
            Script::FailThenApprove { n, kind, charge } => {
                let mut f = self.failures.lock().unwrap();
                let seen = f.entry(id.clone()).or_insert(0);
                if *seen < n {
                    *seen += 1;
                    drop(f);
                    if charge {
                        decide(approve);
                    }
                    Err(GatewayError::new(kind, "scripted failure"))
                } else {
                    drop(f);
                    Ok(decide(approve))
                }
            }
            Script::AlwaysFail(kind) => Err(GatewayError::new(kind, "scripted failure")),
        };
        self.gate.pass();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

/// The support rig forwarding to a scripted [`Processor`], with the
/// engine's events.
struct Rig {
    base: support::Rig<dyn Store>,
    processor: Arc<Processor>,
    events: mpsc::Receiver<PosEvent>,
}

impl std::ops::Deref for Rig {
    type Target = support::Rig<dyn Store>;

    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl Rig {
    async fn new(max_in_flight: usize, automatic: bool) -> Rig {
        Rig::on(
            VirtualClock::new(T0),
            MemoryStore::new(),
            max_in_flight,
            automatic,
        )
        .await
    }

    /// An engine on `store` (a restart when it already holds records).
    async fn on(
        clock: VirtualClock,
        store: MemoryStore,
        max_in_flight: usize,
        automatic: bool,
    ) -> Rig {
        Rig::on_store(clock, Arc::new(store), max_in_flight, automatic, None).await
    }

    /// Square Reader (which also takes the test reader, a "Wisepad 3")
    /// trusting the test reader, that reader paired, a cashier signed in,
    /// the processor as the gateway, offline.
    async fn on_store(
        clock: VirtualClock,
        store: Arc<dyn Store>,
        max_in_flight: usize,
        automatic: bool,
        compact_every: Option<u64>,
    ) -> Rig {
        let mut policy = support::trusting_the_test_reader(
            Policy::square_reader(Currency::parse("USD").unwrap()).with_enabled(true),
        );
        policy
            .offline_readers
            .insert(support::TEST_READER_MODEL.into());
        let processor = Arc::new(Processor::default());
        // The automatic driver probes as soon as it has a gateway: with a
        // healthy service it would bring the engine online on its own, in
        // real time, while the test takes payments offline (a race seen
        // under load). The service is unreachable until the test says so.
        processor.unreachable.store(automatic, Ordering::SeqCst);
        let (listener, events) = support::Events::channel();
        let base = support::Rig::builder()
            .clock(clock)
            .dyn_store(store)
            .configure(|c| {
                if let Some(n) = compact_every {
                    c.compact_every = n;
                }
                c.forwarding = ForwardingConfig {
                    max_in_flight,
                    automatic,
                    jitter_seed: Some(7),
                    ..ForwardingConfig::default()
                };
            })
            .policy(policy)
            .gateway(processor.clone())
            .listener(listener)
            .open()
            .await;
        Rig {
            base,
            processor,
            events,
        }
    }

    /// Takes one offline payment of `cents` on a new order.
    async fn take(&self, cents: i64, contact: Option<CustomerContact>) -> PaymentId {
        let sale = self.sale(cents).contact(contact);
        sale.sell(&self.engine).await.id
    }

    fn advance_to(&self, t: Timestamp) {
        let now = self.clock.wall_now();
        self.clock.advance(Duration::from_millis(
            u64::try_from(t.millis() - now.millis()).unwrap(),
        ));
    }

    async fn drain(&self) -> Vec<PosEvent> {
        // Events are delivered on the event thread: wait until everything
        // emitted so far has arrived, then take it.
        self.engine.events_delivered().await;
        self.events.try_iter().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payment_is_forwarded_once_most_urgent_first() {
    let rig = Rig::new(1, false).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(rig.take(1_000 + i, None).await);
        rig.clock.advance(Duration::from_secs(60));
    }
    let report = rig.engine.forward_now().await.unwrap();
    assert_eq!(report.attempts, 5);
    assert_eq!(report.approved, 5);
    // One in flight: the calls are in (deadline, id) order.
    let calls = rig.processor.calls.lock().unwrap().clone();
    let mut listed = rig.engine.list_payments().unwrap();
    listed.sort_by(|a, b| (a.deadline, &a.id).cmp(&(b.deadline, &b.id)));
    let expected: Vec<String> = listed.iter().map(|p| p.id.as_str().to_owned()).collect();
    assert_eq!(calls, expected);
    for id in &ids {
        assert!(matches!(rig.state(id), PaymentState::Approved { .. }));
    }
    // A second round has nothing to do, and charges nothing again.
    let again = rig.engine.forward_now().await.unwrap();
    assert_eq!(again.attempts, 0);
    assert_eq!(rig.processor.approved(), 5);
    let progress: Vec<_> = rig
        .drain()
        .await
        .into_iter()
        .filter_map(|e| match e {
            PosEvent::ForwardingProgress(p) => Some(p),
            _ => None,
        })
        .collect();
    let last = progress.last().unwrap();
    assert!(last.finished);
    assert_eq!((last.done, last.total), (5, 5));
    assert_eq!(last.amount_done, usd(1_000 + 1_001 + 1_002 + 1_003 + 1_004));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_the_configured_number_is_in_flight() {
    let rig = Rig::new(4, false).await;
    for i in 0..40 {
        rig.take(500 + i, None).await;
    }
    let report = rig.engine.forward_now().await.unwrap();
    assert_eq!(report.approved, 40);
    let max = rig.processor.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=4).contains(&max), "max in flight {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_with_the_same_id_and_charged_once() {
    let rig = Rig::new(2, false).await;
    let id = rig.take(2_500, None).await;
    rig.processor.script(
        &id,
        Script::FailThenApprove {
            n: 2,
            kind: ForwardErrorKind::NoAnswer,
            charge: true,
        },
    );
    let r1 = rig.engine.forward_now().await.unwrap();
    assert_eq!(r1.failed, 1);
    let PaymentState::FailedToForward {
        attempts,
        next_retry_at: Some(retry),
        maybe_received: true,
        ..
    } = rig.state(&id)
    else {
        panic!("{:?}", rig.state(&id));
    };
    assert_eq!(attempts, 1);
    // Not due before its retry time: an automatic round leaves it alone.
    assert!(retry > rig.clock.wall_now());
    rig.advance_to(retry);
    rig.engine.forward_now().await.unwrap();
    let PaymentState::FailedToForward {
        attempts: 2,
        next_retry_at: Some(retry2),
        ..
    } = rig.state(&id)
    else {
        panic!("{:?}", rig.state(&id));
    };
    // Back-off with jitter: the first wait is 1-2 s (base 2 s, equal
    // jitter), the second 2-4 s.
    let first = retry.millis() - T0.millis();
    let second = retry2.millis() - retry.millis();
    assert!((1_000..=2_000).contains(&first), "{first}");
    assert!((2_000..=4_000).contains(&second), "{second}");
    rig.advance_to(retry2);
    let r3 = rig.engine.forward_now().await.unwrap();
    assert_eq!(r3.approved, 1);
    assert!(matches!(rig.state(&id), PaymentState::Approved { .. }));
    let charges = rig.processor.charges.lock().unwrap();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[id.as_str()].1, 3, "three requests, one charge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_reports_the_contact_and_the_amount_due() {
    let rig = Rig::new(2, false).await;
    let contact = CustomerContact::parse(Some("jane@example.com"), None).unwrap();
    let id = rig.take(4_200, Some(contact)).await;
    rig.processor
        .script(&id, Script::Decline(DeclineReason::InsufficientFunds));
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.declined, 1);
    let events = rig.drain().await;
    let notice = events
        .iter()
        .find_map(|e| match e {
            PosEvent::PaymentDeclined(n) => Some(n.clone()),
            _ => None,
        })
        .expect("a decline event");
    assert_eq!(notice.amount_due, usd(4_200));
    assert_eq!(notice.reason, DeclineReason::InsufficientFunds);
    assert_eq!(
        notice.contact.as_ref().unwrap().email().unwrap().reveal(),
        "jane@example.com"
    );
    let order = events.iter().find_map(|e| match e {
        PosEvent::PaymentStateChanged {
            payment_id,
            order_status: Some(s),
            status: PaymentStatus::Declined,
            ..
        } if payment_id == &id => Some(*s),
        _ => None,
    });
    assert_eq!(order, Some(OrderStatus::CardDeclined));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_nothing_is_sent_and_expiry_is_reported() {
    let rig = Rig::new(2, false).await;
    let a = rig.take(1_000, None).await;
    let b = rig.take(2_000, None).await;
    rig.processor
        .script(&b, Script::AlwaysFail(ForwardErrorKind::ServiceUnavailable));
    rig.engine.forward_now().await.unwrap();
    assert!(matches!(rig.state(&a), PaymentState::Approved { .. }));
    // Fast-forward a week: b's deadline has passed.
    rig.clock.advance(HOUR * 24 * 7);
    let calls_before = rig.processor.calls.lock().unwrap().len();
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.expired, 1);
    assert_eq!(r.attempts, 0);
    assert_eq!(rig.processor.calls.lock().unwrap().len(), calls_before);
    // b's attempts may have reached the processor (503s): it is expired only
    // once the processor, asked about the id, says it has no record of it.
    assert_eq!(rig.processor.lookups.load(Ordering::SeqCst), 1);
    assert!(matches!(
        rig.state(&b),
        PaymentState::Expired {
            maybe_received: false,
            ..
        }
    ));
    let expired: Vec<_> = rig
        .drain()
        .await
        .into_iter()
        .filter(|e| matches!(e, PosEvent::PaymentExpired { payment_id, .. } if payment_id == &b))
        .collect();
    assert_eq!(expired.len(), 1, "reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_waits_for_forward_now() {
    let rig = Rig::new(1, false).await;
    let id = rig.take(1_000, None).await;
    rig.processor.script(
        &id,
        Script::FailThenApprove {
            n: 1,
            kind: ForwardErrorKind::Rejected,
            charge: false,
        },
    );
    rig.engine.forward_now().await.unwrap();
    assert!(matches!(
        rig.state(&id),
        PaymentState::FailedToForward {
            next_retry_at: None,
            last_error: ForwardErrorKind::Rejected,
            ..
        }
    ));
    // Due only for an explicit "forward now".
    assert_eq!(rig.engine.due_for_forwarding(10).unwrap(), vec![id.clone()]);
    assert_eq!(
        rig.processor.calls.lock().unwrap().len(),
        1,
        "tried once per round"
    );
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.approved, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_starts_by_itself_when_the_connection_returns() {
    let rig = Rig::new(8, true).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(rig.take(300 + i, None).await);
    }
    // The service is reachable again before the driver is woken (each
    // failed probe would double its back-off).
    rig.processor.unreachable.store(false, Ordering::SeqCst);
    rig.engine.pause_forwarding().unwrap();
    rig.engine.resume_forwarding().unwrap();
    // The network is back: the driver probes the processor (healthy), goes
    // online and forwards, with no call from the app. (The report alone
    // changes no state, so it does not wake a driver that sleeps out a
    // back-off: the nudge does, as an app's network callback would.)
    rig.engine.report_network(true).await.unwrap();
    rig.engine.nudge_forwarding();
    // The driver may split the work over passes (one may have started while
    // the payments were taken, and stopped at the pause): wait, event by
    // event, until the finished passes have settled all ten.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut settled = 0;
    while settled < 10 {
        match rig.events.recv_timeout(Duration::from_secs(30)) {
            Ok(PosEvent::ForwardingProgress(p)) if p.finished => settled += p.done,
            Ok(_) => {}
            Err(e) => panic!("no finished round: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "no finished round");
    }
    assert_eq!(settled, 10, "each payment settled once");
    for id in &ids {
        assert!(matches!(rig.state(id), PaymentState::Approved { .. }));
    }
    assert_eq!(rig.processor.approved(), 10);
}

impl Rig {
    /// An offline payment taken in a new outage; online again after it.
    async fn take_in_outage(&self, cents: i64) -> PaymentId {
        self.engine.report_network(false).await.unwrap();
        let id = self.take(cents, None).await;
        self.online().await;
        id
    }

    /// A card payment of `cents` on `order` with the app's id `id`, by a
    /// contactless card.
    fn online_sale(&self, order: &OrderId, id: &str, cents: i64) -> Sale {
        let sale = self.sale(cents).on(order).payment_id(id);
        sale.entry_mode(EntryMode::Contactless)
    }

    /// Begins `sale`, which goes online.
    async fn begin_online(&self, sale: &Sale) -> PaymentId {
        let d = sale.begin(&self.engine).await.unwrap();
        assert_eq!(d.route, pos_core::checkout::Route::Online);
        d.payment_id
    }

    /// An online card payment of `cents` on `order` with the app's id.
    async fn pay_online(&self, order: &OrderId, id: &str, cents: i64) -> PaymentView {
        let sale = self.online_sale(order, id, cents);
        let id = self.begin_online(&sale).await;
        sale.confirm(&self.engine, &id).await.unwrap()
    }
}

/// An app-supplied payment id is unique per device forever: once the store
/// holds a payment with it (whatever its state, final included), beginning
/// another payment with it is refused, and nothing is sent to the processor.
/// An id begun and cancelled (nothing stored or sent) may be begun again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_id_the_store_has_seen_is_never_taken_again() {
    let rig = Rig::new(2, false).await;
    let declined = PaymentId::parse("app-declined").unwrap();
    rig.processor
        .script(&declined, Script::Decline(DeclineReason::InsufficientFunds));
    // Each on a new order.
    let sale = |id: &str| rig.sale(700).payment_id(id);
    // Offline: one approved and one declined once forwarded.
    for id in ["app-approved", "app-declined"] {
        sale(id).sell(&rig.engine).await;
    }
    // Begun then cancelled: nothing stored, nothing sent.
    let d = sale("app-cancelled").begin(&rig.engine).await.unwrap();
    rig.engine.cancel_card_payment(&d.payment_id).await.unwrap();
    rig.online().await;
    rig.engine.forward_now().await.unwrap();
    // Online, approved.
    let order = rig.order(700).await;
    rig.pay_online(&order, "app-online", 700).await;
    let calls = rig.processor.calls.lock().unwrap().len();
    let stored = rig.engine.list_payments().unwrap().len();
    assert_eq!(stored, 3);
    for id in ["app-approved", "app-declined", "app-online"] {
        let r = sale(id).begin(&rig.engine).await;
        assert_eq!(
            r,
            Err(pos_core::PosError::DuplicatePayment {
                payment_id: id.into()
            }),
            "{id}"
        );
    }
    assert_eq!(rig.processor.calls.lock().unwrap().len(), calls);
    assert_eq!(rig.engine.list_payments().unwrap().len(), stored);
    let d = sale("app-cancelled").begin(&rig.engine).await.unwrap();
    assert_eq!(d.payment_id.as_str(), "app-cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_payment_with_no_answer_is_resolved_with_the_same_id() {
    let rig = Rig::new(2, false).await;
    rig.online().await;
    let order = rig.order(5_000).await;
    let id = PaymentId::parse("online-1").unwrap();
    rig.processor.script(
        &id,
        Script::FailThenApprove {
            n: 1,
            kind: ForwardErrorKind::NoAnswer,
            charge: true,
        },
    );
    let v = rig.pay_online(&order, "online-1", 5_000).await;
    assert_eq!(
        v.status,
        PaymentStatus::FailedToForward,
        "in doubt, not retaken"
    );
    // Not counted against the offline limits.
    assert_eq!(rig.engine.status().unwrap().pending_offline_payments, 0);
    rig.clock.advance(Duration::from_secs(5));
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.approved, 1);
    assert!(matches!(rig.state(&id), PaymentState::Approved { .. }));
    let charges = rig.processor.charges.lock().unwrap();
    assert_eq!(charges[id.as_str()].1, 2, "two requests, one charge");
    assert_eq!(rig.engine.order(&order).unwrap().status, OrderStatus::Paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_leaves_the_balance_due_and_it_can_be_paid_again() {
    let rig = Rig::new(2, false).await;
    // Offline payment, declined when forwarded: the balance is owed again.
    let id = rig.take(3_000, None).await;
    rig.processor
        .script(&id, Script::Decline(DeclineReason::DoNotHonour));
    rig.online().await;
    rig.engine.forward_now().await.unwrap();
    let order_id = rig
        .engine
        .list_payments()
        .unwrap()
        .into_iter()
        .find(|p| p.id == id)
        .unwrap()
        .order_id;
    let order = rig.engine.order(&order_id).unwrap();
    assert_eq!(order.balance, usd(3_000));
    assert_eq!(order.status, OrderStatus::CardDeclined);
    // The balance is collected online, with the helper that knows the amount.
    let d = rig.engine.begin_balance_payment(&order_id).await.unwrap();
    assert_eq!(d.route, pos_core::checkout::Route::Online);
    let balance = rig.sale(3_000).entry_mode(EntryMode::Contactless);
    let v = balance.confirm(&rig.engine, &d.payment_id).await.unwrap();
    assert_eq!(v.status, PaymentStatus::Approved);
    assert_eq!(v.amount, usd(3_000));
    assert!(
        rig.engine.begin_balance_payment(&order_id).await.is_err(),
        "nothing owed now"
    );
    let order = rig.engine.order(&order_id).unwrap();
    assert_eq!(order.balance, usd(0));
    // An immediate online decline leaves the balance due too.
    let o2 = rig.order(700).await;
    rig.processor.script(
        &PaymentId::parse("online-declined").unwrap(),
        Script::Decline(DeclineReason::StolenCard),
    );
    let v = rig.pay_online(&o2, "online-declined", 700).await;
    assert_eq!(v.status, PaymentStatus::Declined);
    assert_eq!(rig.engine.order(&o2).unwrap().balance, usd(700));
}

/// A refusal of the credentials (401/403), another refusal, or a locked
/// store blocks forwarding: the app is told once, `status()` says why, and
/// `ForwardingUnblocked` follows when forwarding resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_blocked_is_reported_and_cleared() {
    use pos_core::forwarding::ForwardingBlockedReason as R;
    let store = MemoryStore::new();
    let rig = Rig::on(VirtualClock::new(T0), store.clone(), 2, false).await;
    for i in 0..4 {
        rig.take(1_000 + i, None).await;
    }
    rig.online().await;
    rig.drain().await;
    let blocked_events = |events: Vec<PosEvent>| -> Vec<Option<R>> {
        events
            .into_iter()
            .filter_map(|e| match e {
                PosEvent::ForwardingBlocked { reason } => Some(Some(reason)),
                PosEvent::ForwardingUnblocked => Some(None),
                _ => None,
            })
            .collect()
    };
    let blocked = || rig.engine.status().unwrap().forwarding_blocked;
    assert_eq!(blocked(), None);
    for (status, reason) in [
        (401, R::CredentialsRejected),
        (403, R::CredentialsRejected),
        (422, R::ProcessorRefusing),
    ] {
        rig.take_in_outage(1_500).await;
        rig.drain().await;
        *rig.processor.refuse_with.lock().unwrap() = Some(status);
        let r = rig.engine.forward_now().await.unwrap();
        assert!(r.failed > 0, "HTTP {status}: {r:?}");
        assert_eq!(blocked(), Some(reason), "HTTP {status}");
        *rig.processor.refuse_with.lock().unwrap() = None;
        // Sent once, not for every refused payment.
        assert_eq!(
            blocked_events(rig.drain().await),
            vec![Some(reason)],
            "HTTP {status}"
        );
        // Forward now after the fix: a decision unblocks.
        rig.engine.forward_now().await.unwrap();
        assert_eq!(blocked(), None);
        assert_eq!(blocked_events(rig.drain().await), vec![None]);
    }
    // The store locked while a round runs.
    rig.take_in_outage(3_000).await;
    store.fail_always(StoreError::Locked);
    assert!(rig.engine.forward_now().await.is_err());
    assert_eq!(blocked(), Some(R::StoreLocked));
    store.heal();
    rig.engine.forward_now().await.unwrap();
    assert_eq!(blocked(), None);
    assert_eq!(
        blocked_events(rig.drain().await),
        vec![Some(R::StoreLocked), None]
    );
}

/// A 503 (or 429) with `Retry-After` backs off the whole gateway: no new
/// attempt starts, for any payment, before that time; then all are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_backs_off_the_whole_gateway() {
    let rig = Rig::new(1, false).await;
    for i in 0..3 {
        rig.take(1_000 + i, None).await;
    }
    rig.online().await;
    *rig.processor.busy_once.lock().unwrap() = Some(Duration::from_secs(120));
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!((r.attempts, r.failed), (1, 1), "{r:?}");
    assert_eq!(rig.processor.calls.lock().unwrap().len(), 1);
    // Not before the time the processor asked for, manual rounds included.
    rig.clock.advance(Duration::from_secs(119));
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.attempts, 0, "{r:?}");
    assert_eq!(rig.processor.calls.lock().unwrap().len(), 1);
    // The failed payment's own retry is not before then either.
    let failed = rig
        .engine
        .list_payments()
        .unwrap()
        .into_iter()
        .find(|p| matches!(p.state, PaymentState::FailedToForward { .. }))
        .unwrap();
    let PaymentState::FailedToForward {
        next_retry_at: Some(retry),
        ..
    } = failed.state
    else {
        panic!("{:?}", failed.state);
    };
    assert!(retry >= T0.plus(Duration::from_secs(120)), "{retry:?}");
    rig.advance_to(retry.max(rig.clock.wall_now()));
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.approved, 3, "{r:?}");
    assert_eq!(rig.processor.approved(), 3);
}

/// The processor's idempotency on receipt ids never expires, so a new
/// store (after a reset or a reinstall) must not reuse the ids of the old
/// one: ids are random, and a retry sends the same id again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_ids_are_random_per_store_and_kept_across_retries() {
    use pos_core::lifecycle::{EmailAddress, ReceiptChannel};
    let mut delivered = Vec::new();
    for failures in [1, 0] {
        // A fresh store each time, with the same device id.
        let rig = Rig::new(2, false).await;
        rig.take(1_200, None).await;
        let order_id = rig.engine.list_payments().unwrap()[0].order_id.clone();
        rig.engine
            .request_receipt(
                &order_id,
                ReceiptChannel::Email(EmailAddress::parse("bob@example.org").unwrap()),
            )
            .await
            .unwrap();
        rig.processor
            .receipt_failures
            .store(failures, Ordering::SeqCst);
        rig.online().await;
        rig.engine.forward_now().await.unwrap();
        if failures > 0 {
            assert_eq!(rig.engine.queued_receipts().unwrap().len(), 1);
            rig.engine.forward_now().await.unwrap();
        }
        assert!(rig.engine.queued_receipts().unwrap().is_empty());
        let attempts = rig.processor.receipt_attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), failures + 1);
        assert!(
            attempts.iter().all(|a| a == &attempts[0]),
            "a retry sends the same id: {attempts:?}"
        );
        delivered.push(attempts[0].clone());
    }
    assert_ne!(
        delivered[0], delivered[1],
        "two stores sent the same receipt id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_queued_offline_are_delivered_once_back_online() {
    use pos_core::lifecycle::{EmailAddress, ReceiptChannel};
    let rig = Rig::new(2, false).await;
    let id = rig.take(1_200, None).await;
    let order_id = rig.engine.list_payments().unwrap()[0].order_id.clone();
    let _ = id;
    rig.engine
        .request_receipt(
            &order_id,
            ReceiptChannel::Email(EmailAddress::parse("bob@example.org").unwrap()),
        )
        .await
        .unwrap();
    rig.online().await;
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.receipts_sent, 1);
    assert!(rig.engine.queued_receipts().unwrap().is_empty());
    let sent = rig.processor.receipts.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "email");
    assert_eq!(sent[0].2, "bob@example.org");
    // Not sent twice.
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.receipts_sent, 0);
    assert_eq!(rig.processor.receipts.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_cut_by_a_crash_is_retried_by_the_driver_with_the_same_id() {
    use pos_core::lifecycle::PaymentEvent;
    // First run: a payment is taken and an attempt starts; the app dies.
    let store = MemoryStore::new();
    let first = Rig::on(VirtualClock::new(T0), store.clone(), 2, false).await;
    let id = first.take(2_000, None).await;
    first
        .engine
        .record_forwarding(&id, PaymentEvent::StartForwarding)
        .await
        .unwrap();
    first.engine.close();

    // Next start: the attempt is recovered as "no answer", and the driver
    // (automatic, no "forward now") sends it again once the service is back.
    let rig = Rig::on(first.clock.clone(), store, 2, true).await;
    rig.processor.unreachable.store(false, Ordering::SeqCst);
    rig.online().await;
    rig.engine.nudge_forwarding();
    // Waits on the payment's state, not on a progress event: the driver may
    // finish the round before the rig's listener is subscribed, and the
    // subscription's snapshot then stands for the events it missed.
    let mut approved = false;
    for _ in 0..30_000 {
        if matches!(rig.state(&id), PaymentState::Approved { .. }) {
            approved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(approved, "the recovered attempt was not retried");
    let charges = rig.processor.charges.lock().unwrap();
    assert_eq!(charges.len(), 1);
    assert!(charges.contains_key(id.as_str()));
}

/// A memory store that counts like a compacting store: records since the
/// last snapshot, and the snapshots taken.
#[derive(Debug, Default)]
struct Compacting {
    inner: MemoryStore,
    since: AtomicUsize,
    snapshots: AtomicUsize,
}

impl Store for Compacting {
    fn load(&self) -> BoxFuture<'_, Result<Vec<pos_core::ledger::Write>, StoreError>> {
        self.inner.load()
    }
    fn apply<'a>(
        &'a self,
        batch: &'a [pos_core::ledger::Write],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.inner.apply(batch).await?;
            self.since.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        })
    }
    fn records_since_compaction(&self) -> Option<u64> {
        Some(self.since.load(Ordering::SeqCst) as u64)
    }
    fn compact<'a>(
        &'a self,
        _state: &'a [pos_core::ledger::Write],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.since.store(0, Ordering::SeqCst);
            self.snapshots.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// A round writes several records per payment; the snapshot it makes due is
/// taken once, at its end, not every `compact_every` records while it runs
/// (a snapshot copies the whole state: at 10,000 pending payments it cost
/// the forwarding benchmark a fifth of its time).
#[tokio::test]
async fn a_forwarding_round_takes_the_snapshot_it_made_due_once_at_its_end() {
    let store = Arc::new(Compacting::default());
    let rig = Rig::on_store(VirtualClock::new(T0), store.clone(), 4, false, Some(4)).await;
    for i in 0..6 {
        rig.take(500 + i, None).await;
    }
    rig.online().await;
    let before = store.snapshots.load(Ordering::SeqCst);
    let since_before = store.since.load(Ordering::SeqCst);
    let report = rig.engine.forward_now().await.unwrap();
    assert_eq!(report.approved, 6);
    assert_eq!(
        store.snapshots.load(Ordering::SeqCst) - before,
        1,
        "one snapshot for the round (it wrote far more than 4 records)"
    );
    assert_eq!(store.since.load(Ordering::SeqCst), 0, "taken at its end");
    assert!(
        since_before < 4 + 4 * 6,
        "sanity: captures compacted as they went"
    );
    // Outside a round, commits take it as before.
    rig.take(900, None).await;
    rig.take(901, None).await;
    assert!(store.snapshots.load(Ordering::SeqCst) - before >= 2);
}

// ---------------------------------------------------------------------------
// Money safety: cancelled callers, lost tasks, unknown outcomes
// ---------------------------------------------------------------------------

/// How many requests the processor received for `id`, and whether it holds
/// a decision for it.
fn requests_for(rig: &Rig, id: &PaymentId) -> usize {
    rig.processor
        .charges
        .lock()
        .unwrap()
        .get(id.as_str())
        .map_or(0, |c| c.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_forward_now_still_records_every_answer() {
    let rig = Rig::new(4, false).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(rig.take(1_000 + i, None).await);
    }
    rig.processor.gate.close();
    let engine = rig.engine.clone();
    let caller = tokio::spawn(async move { engine.forward_now().await });
    // Four requests charged at the processor, their answers on the way...
    rig.processor.gate.held(4).await;
    // ...when the app's coroutine is cancelled.
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    rig.processor.gate.open();
    // The next round waits for the cancelled caller's round to finish.
    rig.engine.forward_now().await.unwrap();
    for id in &ids {
        assert!(
            matches!(rig.state(id), PaymentState::Approved { .. }),
            "{id}: {:?}",
            rig.state(id)
        );
        assert_eq!(requests_for(&rig, id), 1, "{id}: answered once, recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_online_confirmation_still_records_its_answer() {
    let rig = Rig::new(2, false).await;
    rig.online().await;
    let order = rig.order(5_000).await;
    rig.processor.gate.close();
    let sale = rig.online_sale(&order, "online-cancelled", 5_000);
    let paid = rig.begin_online(&sale).await;
    let (engine, id) = (rig.engine.clone(), paid.clone());
    let card = sale.card_for(&rig.engine, &paid);
    let caller = tokio::spawn(async move { engine.confirm_card_payment(&id, card).await });
    rig.processor.gate.held(1).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    rig.processor.gate.open();
    loop {
        match rig.events.recv_timeout(Duration::from_secs(30)) {
            Ok(PosEvent::PaymentStateChanged {
                payment_id,
                status: PaymentStatus::Approved,
                ..
            }) if payment_id == paid => break,
            Ok(_) => {}
            Err(e) => panic!("the approval of a cancelled confirmation was lost: {e}"),
        }
    }
    assert_eq!(requests_for(&rig, &paid), 1);
    assert_eq!(rig.engine.order(&order).unwrap().status, OrderStatus::Paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_failed_commit_lost_are_retried_with_the_same_id_without_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let rig = Rig::on_store(VirtualClock::new(T0), store.clone(), 4, false, None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(rig.take(1_000 + i, None).await);
    }
    rig.processor.gate.close();
    let engine = rig.engine.clone();
    let round = tokio::spawn(async move { engine.forward_now().await });
    rig.processor.gate.held(3).await;
    // The store fails while the answers are on their way: they cannot be
    // recorded, and the round fails.
    store.fail_always(StoreError::Io("disk full".into()));
    rig.processor.gate.open();
    assert!(round.await.unwrap().is_err());
    store.heal();
    // No restart: the next tick finds the attempts whose task is gone...
    let t = rig.engine.tick().await.unwrap();
    assert_eq!(t.recovered.len(), 3, "{t:?}");
    for id in &ids {
        assert!(
            matches!(
                rig.state(id),
                PaymentState::FailedToForward {
                    last_error: ForwardErrorKind::NoAnswer,
                    maybe_received: true,
                    ..
                }
            ),
            "{id}: {:?}",
            rig.state(id)
        );
    }
    // ...and a round after their back-off asks again with the same ids: one
    // charge each.
    rig.clock.advance(Duration::from_secs(10 * 60));
    rig.engine.forward_now().await.unwrap();
    for id in &ids {
        assert!(matches!(rig.state(id), PaymentState::Approved { .. }));
        assert_eq!(requests_for(&rig, id), 2, "{id}: asked twice, charged once");
    }
    assert_eq!(rig.processor.approved(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_the_processor_may_hold_is_never_expired_before_it_is_asked() {
    let store = MemoryStore::new();
    let rig = Rig::on(VirtualClock::new(T0), store.clone(), 2, false).await;
    let id = rig.take(4_200, None).await;
    // The processor charges it but the answer is lost, every time.
    rig.processor.script(
        &id,
        Script::FailThenApprove {
            n: usize::MAX,
            kind: ForwardErrorKind::NoAnswer,
            charge: true,
        },
    );
    rig.engine.forward_now().await.unwrap();
    rig.drain().await;
    // The deadline passes while the processor cannot be reached.
    rig.processor.unreachable.store(true, Ordering::SeqCst);
    rig.clock.advance(HOUR * 24 * 7);
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!((r.expired, r.outcome_unknown), (0, 1), "{r:?}");
    assert!(matches!(
        rig.state(&id),
        PaymentState::OutcomeUnknown { .. }
    ));
    let events = rig.drain().await;
    assert!(events.iter().any(
        |e| matches!(e, PosEvent::PaymentOutcomeUnknown { payment_id, .. } if payment_id == &id)
    ));
    assert!(!events
        .iter()
        .any(|e| matches!(e, PosEvent::PaymentExpired { .. })));
    let totals = &rig.engine.status().unwrap().totals[0];
    assert_eq!((totals.unknown_count, totals.expired_count), (1, 0));
    assert_eq!(totals.unknown_amount, usd(4_200));
    // Its balance is not due again: the customer may have paid.
    let order = rig.engine.list_payments().unwrap()[0].order_id.clone();
    assert_eq!(rig.engine.order(&order).unwrap().balance, usd(0));
    // A restart changes nothing.
    rig.engine.close();
    let rig = Rig::on(rig.clock.clone(), store, 2, false).await;
    rig.processor.charges.lock().unwrap().insert(
        id.as_str().into(),
        (
            GatewayDecision::Approved {
                processor_ref: format!("ch_{id}"),
            },
            1,
        ),
    );
    rig.processor.unreachable.store(true, Ordering::SeqCst);
    rig.engine.tick().await.unwrap();
    assert!(matches!(
        rig.state(&id),
        PaymentState::OutcomeUnknown { .. }
    ));
    // The processor answers: it approved. Approved, never expired.
    rig.processor.unreachable.store(false, Ordering::SeqCst);
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!((r.approved, r.outcome_unknown), (1, 0), "{r:?}");
    assert!(matches!(rig.state(&id), PaymentState::Approved { .. }));
    assert_eq!(rig.engine.order(&order).unwrap().status, OrderStatus::Paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_processors_not_found_expires_an_unknown_outcome_and_closes_the_id() {
    let rig = Rig::new(2, false).await;
    let id = rig.take(4_200, None).await;
    // No answer, and the processor never saw it either.
    rig.processor
        .script(&id, Script::AlwaysFail(ForwardErrorKind::NoAnswer));
    rig.engine.forward_now().await.unwrap();
    rig.clock.advance(HOUR * 24 * 7);
    rig.processor.unreachable.store(true, Ordering::SeqCst);
    rig.engine.tick().await.unwrap();
    assert!(matches!(
        rig.state(&id),
        PaymentState::OutcomeUnknown { .. }
    ));
    rig.processor.unreachable.store(false, Ordering::SeqCst);
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.expired, 1);
    assert!(matches!(
        rig.state(&id),
        PaymentState::Expired {
            maybe_received: false,
            ..
        }
    ));
    // The processor refuses the id from now on.
    assert!(rig.processor.closed.lock().unwrap().contains(id.as_str()));
    let totals = &rig.engine.status().unwrap().totals[0];
    assert_eq!((totals.unknown_count, totals.expired_count), (0, 1));
}

/// splitmix64, for the seeded cancellation runs.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Cancels "forward now" at seeded random points (a number of answers held
/// at the processor), sometimes fails the store or restarts the engine,
/// sometimes lets the deadline pass while the processor is unreachable,
/// then brings everything back and checks against the processor: every
/// payment it approved is approved here, nothing it never decided is
/// approved here, nothing expired that it holds. `POS_CANCEL_RUNS` runs
/// (200 by default; `cargo xtask soak` runs 2,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_forwarding_at_random_points_loses_and_duplicates_nothing() {
    let runs: u64 = std::env::var("POS_CANCEL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (mut lost, mut duplicated, mut wrongly_expired) = (0, 0, 0);
    let (mut cancels, mut restarts, mut store_failures, mut unknown) = (0, 0, 0, 0);
    for run in 0..runs {
        let mut rng = 0xC0FFEE ^ run.wrapping_mul(0x1000_0001);
        let store = Arc::new(MemoryStore::new());
        let mut rig = Rig::on_store(VirtualClock::new(T0), store.clone(), 3, false, None).await;
        let n = 1 + (mix(&mut rng) % 6) as usize;
        let mut ids = Vec::new();
        for i in 0..n {
            let id = rig.take(100 + i as i64, None).await;
            match mix(&mut rng) % 4 {
                0 => rig.processor.script(
                    &id,
                    Script::FailThenApprove {
                        n: 1 + (mix(&mut rng) % 2) as usize,
                        kind: ForwardErrorKind::NoAnswer,
                        charge: true,
                    },
                ),
                1 => rig
                    .processor
                    .script(&id, Script::Decline(DeclineReason::DoNotHonour)),
                2 => rig.processor.script(
                    &id,
                    Script::FailThenApprove {
                        n: 1,
                        kind: ForwardErrorKind::ServiceUnavailable,
                        charge: false,
                    },
                ),
                _ => {}
            }
            ids.push(id);
        }
        // A round, cancelled once `held` answers wait at the processor.
        let held = (mix(&mut rng) % (n.min(3) as u64 + 1)) as usize;
        rig.processor.gate.close();
        let engine = rig.engine.clone();
        let caller = tokio::spawn(async move { engine.forward_now().await });
        rig.processor.gate.held(held).await;
        caller.abort();
        let _ = caller.await;
        cancels += 1;
        if mix(&mut rng).is_multiple_of(4) {
            store.fail_always(StoreError::Io("disk full".into()));
            store_failures += 1;
        }
        rig.processor.gate.open();
        // Let whatever is still running finish (a round waits for the one
        // before it); with a failed store it fails too.
        let _ = rig.engine.forward_now().await;
        store.heal();
        if mix(&mut rng).is_multiple_of(3) {
            // The app restarts.
            let (clock, processor) = (rig.clock.clone(), Arc::clone(&rig.processor));
            rig.engine.close();
            rig = Rig::on_store(clock, store.clone(), 3, false, None).await;
            rig.processor = Arc::clone(&processor);
            rig.engine.set_gateway(processor).unwrap();
            restarts += 1;
        }
        if mix(&mut rng).is_multiple_of(3) {
            // The deadline passes while the processor cannot be reached.
            rig.processor.unreachable.store(true, Ordering::SeqCst);
            rig.clock.advance(HOUR * 24 * 7);
            rig.engine.tick().await.unwrap();
            unknown += ids
                .iter()
                .filter(|id| matches!(rig.state(id), PaymentState::OutcomeUnknown { .. }))
                .count();
            rig.processor.unreachable.store(false, Ordering::SeqCst);
        }
        // Back to normal: rounds until everything is settled.
        for _ in 0..10 {
            rig.clock.advance(Duration::from_secs(20 * 60));
            rig.engine.forward_now().await.unwrap();
        }
        let charges = rig.processor.charges.lock().unwrap().clone();
        for id in &ids {
            let here = rig.state(id);
            let there = charges.get(id.as_str()).map(|c| &c.0);
            match (&here, there) {
                (
                    PaymentState::Approved { processor_ref, .. },
                    Some(GatewayDecision::Approved { processor_ref: r }),
                ) if processor_ref == r => {}
                (PaymentState::Declined { .. }, Some(GatewayDecision::Declined { .. })) => {}
                (PaymentState::Expired { .. }, None) => {}
                (PaymentState::Expired { .. }, Some(_)) => wrongly_expired += 1,
                (PaymentState::Approved { .. } | PaymentState::Declined { .. }, _) => {
                    duplicated += 1
                }
                (_, _) => lost += 1,
            }
            assert!(
                !matches!(
                    here,
                    PaymentState::Approved { .. } | PaymentState::Declined { .. }
                ) || there.is_some(),
                "run {run}: {id} decided here, unknown at the processor"
            );
            assert!(
                matches!(
                    here,
                    PaymentState::Approved { .. }
                        | PaymentState::Declined { .. }
                        | PaymentState::Expired { .. }
                ),
                "run {run}: {id} left {here:?} (processor: {there:?})"
            );
        }
        rig.engine.close();
    }
    eprintln!(
        "cancellation runs: {runs}, cancels {cancels}, store failures {store_failures}, \
         restarts {restarts}, outcomes unknown at a deadline {unknown}; \
         lost {lost}, duplicated {duplicated}, wrongly expired {wrongly_expired}"
    );
    assert_eq!((lost, duplicated, wrongly_expired), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_gateway_is_no_answer_retried_after_its_back_off_not_in_a_loop() {
    let rig = Rig::new(2, false).await;
    let id = rig.take(1_000, None).await;
    *rig.processor.panic_on.lock().unwrap() = Some(id.as_str().into());
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.failed, 1);
    let PaymentState::FailedToForward {
        last_error: ForwardErrorKind::NoAnswer,
        next_retry_at: Some(retry),
        maybe_received: true,
        ..
    } = rig.state(&id)
    else {
        panic!("{:?}", rig.state(&id));
    };
    assert!(retry > rig.clock.wall_now(), "retried after a back-off");
    // Another round at the same time does not send it again.
    rig.engine.tick().await.unwrap();
    rig.engine.forward_now().await.unwrap();
    let calls = |rig: &Rig| {
        rig.processor
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.as_str() == id.as_str())
            .count()
    };
    assert_eq!(calls(&rig), 1);
    // After its back-off, with a gateway that no longer panics: approved.
    *rig.processor.panic_on.lock().unwrap() = None;
    rig.advance_to(retry);
    rig.engine.forward_now().await.unwrap();
    assert!(matches!(rig.state(&id), PaymentState::Approved { .. }));
    assert_eq!(calls(&rig), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_a_retry_already_due_does_not_make_the_driver_probe_in_a_loop() {
    use pos_core::connectivity::ProbeOutcome;
    use pos_core::lifecycle::PaymentEvent;
    let rig = Rig::new(2, false).await;
    let id = rig.take(1_000, None).await;
    rig.engine
        .record_forwarding(&id, PaymentEvent::StartForwarding)
        .await
        .unwrap();
    rig.engine
        .record_forwarding(
            &id,
            PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::NoAnswer,
                next_retry_at: Some(T0),
            },
        )
        .await
        .unwrap();
    rig.clock.advance(HOUR);
    // Offline, a probe just failed: the next look is the probe schedule's,
    // not the retry time an hour ago (which would wake the driver at once,
    // again and again).
    rig.engine
        .report_probe(ProbeOutcome::Unreachable)
        .await
        .unwrap();
    let now = rig.clock.wall_now();
    let next = rig.engine.next_wake_at().unwrap();
    assert!(next > now, "next wake {next:?} is not after {now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_cannot_record_the_outcome_of_an_attempt_the_engine_has_in_flight() {
    use pos_core::lifecycle::PaymentEvent;
    use pos_core::PosError;
    let rig = Rig::new(2, false).await;
    let id = rig.take(1_000, None).await;
    rig.processor.gate.close();
    let engine = rig.engine.clone();
    let round = tokio::spawn(async move { engine.forward_now().await });
    rig.processor.gate.held(1).await;
    let refused = rig
        .engine
        .record_forwarding(
            &id,
            PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::NotSent,
                next_retry_at: None,
            },
        )
        .await;
    assert!(
        matches!(refused, Err(PosError::InvalidTransition { .. })),
        "{refused:?}"
    );
    rig.processor.gate.open();
    round.await.unwrap().unwrap();
    assert!(matches!(rig.state(&id), PaymentState::Approved { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_keep_every_queued_receipt_for_later() {
    use pos_core::lifecycle::{EmailAddress, ReceiptChannel};
    let rig = Rig::new(2, false).await;
    for (cents, to) in [(1_200, "bob@example.org"), (1_300, "ann@example.org")] {
        rig.take(cents, None).await;
        let order_id = rig
            .engine
            .list_payments()
            .unwrap()
            .into_iter()
            .find(|p| p.amount == usd(cents))
            .unwrap()
            .order_id;
        rig.engine
            .request_receipt(
                &order_id,
                ReceiptChannel::Email(EmailAddress::parse(to).unwrap()),
            )
            .await
            .unwrap();
    }
    rig.online().await;
    // An expired token: nothing is delivered, nothing is given up.
    *rig.processor.refuse_with.lock().unwrap() = Some(401);
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.receipts_sent, 0);
    assert_eq!(rig.engine.queued_receipts().unwrap().len(), 2);
    // A usable token: both go out.
    *rig.processor.refuse_with.lock().unwrap() = None;
    rig.clock.advance(Duration::from_secs(10 * 60));
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.receipts_sent, 2, "{r:?}");
    assert!(rig.engine.queued_receipts().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_credentials_unblock_forwarding_with_nothing_to_forward() {
    use pos_core::forwarding::ForwardingBlockedReason as R;
    use pos_core::lifecycle::{EmailAddress, ReceiptChannel};
    let rig = Rig::new(2, false).await;
    rig.take(1_200, None).await;
    let order_id = rig.engine.list_payments().unwrap()[0].order_id.clone();
    rig.online().await;
    rig.engine.forward_now().await.unwrap();
    // Nothing left to forward; a receipt asked for later meets an expired
    // token: forwarding is blocked on the credentials.
    rig.engine
        .request_receipt(
            &order_id,
            ReceiptChannel::Email(EmailAddress::parse("bob@example.org").unwrap()),
        )
        .await
        .unwrap();
    *rig.processor.refuse_with.lock().unwrap() = Some(401);
    rig.engine.forward_now().await.unwrap();
    assert_eq!(
        rig.engine.status().unwrap().forwarding_blocked,
        Some(R::CredentialsRejected)
    );
    // A renewed token: the receipt goes out, and that clears it.
    *rig.processor.refuse_with.lock().unwrap() = None;
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.receipts_sent, 1);
    assert_eq!(rig.engine.status().unwrap().forwarding_blocked, None);
}

/// Waits (bounded) for the session warning `threshold` before the deadline.
fn wait_for_warning(events: &mpsc::Receiver<PosEvent>, threshold: Duration) {
    use pos_core::session::SessionWarningKind;
    loop {
        match events.recv_timeout(Duration::from_secs(30)) {
            Ok(PosEvent::SessionWarning(w))
                if w.kind == SessionWarningKind::DeadlineApproaching { threshold } =>
            {
                return
            }
            Ok(_) => {}
            Err(e) => panic!("no {threshold:?} warning: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_background_the_driver_does_not_probe_and_probes_again_in_the_foreground() {
    const HOUR: Duration = Duration::from_secs(3600);
    // Offline (the processor unreachable), the automatic driver on.
    let rig = Rig::new(8, true).await;
    rig.take(300, None).await;
    let deadline = rig.engine.list_payments().unwrap()[0].deadline;
    rig.engine.on_background().await.unwrap();
    // A pass that started before the app went to the background may still
    // probe: let one pass run after it, marked by the 12 h warning (each
    // pass probes first, then ticks).
    rig.advance_to(Timestamp(deadline.millis() - 12 * 3_600_000 + 1));
    rig.engine.nudge_forwarding();
    wait_for_warning(&rig.events, 12 * HOUR);
    let before = rig.processor.probes.load(Ordering::SeqCst);
    // The next pass, started in the background, ticks without probing.
    rig.advance_to(Timestamp(deadline.millis() - 3_600_000 + 1));
    rig.engine.nudge_forwarding();
    wait_for_warning(&rig.events, HOUR);
    assert_eq!(
        rig.processor.probes.load(Ordering::SeqCst),
        before,
        "the driver probed in the background"
    );
    // In the foreground the driver is woken and probes at once.
    rig.engine.on_foreground().unwrap();
    for _ in 0..30_000 {
        if rig.processor.probes.load(Ordering::SeqCst) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("no probe after on_foreground");
}

#[tokio::test]
async fn the_wake_up_leaves_probes_out_in_the_background() {
    // Offline, forwarding by hand: the wake-up is the probe, which comes
    // before the first session warning: the close of the Square Reader's
    // 1 h acceptance window, opened at T0 by the connection loss.
    let rig = Rig::new(8, false).await;
    rig.take(300, None).await;
    let probe = rig.engine.next_wake_up().unwrap().unwrap();
    let window_closes = Timestamp(T0.millis() + 3_600_000);
    assert!(probe < window_closes, "{probe:?} {window_closes:?}");
    rig.engine.on_background().await.unwrap();
    assert!(rig.engine.in_background());
    assert_eq!(rig.engine.next_wake_up().unwrap(), Some(window_closes));
    assert_eq!(
        rig.engine.status().unwrap().next_wake_up,
        Some(window_closes)
    );
    rig.engine.on_foreground().unwrap();
    assert!(!rig.engine.in_background());
    assert_eq!(rig.engine.next_wake_up().unwrap(), Some(probe));
    // After close both are typed errors.
    rig.engine.close();
    assert!(matches!(
        rig.engine.on_background().await,
        Err(pos_core::PosError::Closed)
    ));
    assert!(matches!(
        rig.engine.on_foreground(),
        Err(pos_core::PosError::Closed)
    ));
}

/// Online, the next wake-up is a failed payment's planned retry when it
/// comes before every deadline; a processor's `Retry-After` moves it to the
/// end of that wait, even for a payment whose own retry is earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_the_next_wake_up_is_the_planned_retry_and_retry_after_pushes_it_later() {
    let rig = Rig::new(1, false).await;
    let first = rig.take(1_000, None).await;
    rig.processor.script(
        &first,
        Script::FailThenApprove {
            n: 1,
            kind: ForwardErrorKind::NotSent,
            charge: false,
        },
    );
    rig.base.online().await;
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!((r.attempts, r.failed), (1, 1), "{r:?}");
    let PaymentState::FailedToForward {
        next_retry_at: Some(retry),
        ..
    } = rig.state(&first)
    else {
        panic!("{:?}", rig.state(&first));
    };
    let deadline = rig
        .engine
        .list_payments()
        .unwrap()
        .into_iter()
        .find(|p| p.id == first)
        .unwrap()
        .deadline;
    assert!(retry < deadline, "{retry:?} {deadline:?}");
    assert!(rig.engine.status().unwrap().connectivity.is_online());
    assert_eq!(rig.engine.next_wake_at(), Some(retry));
    assert_eq!(rig.engine.next_wake_up().unwrap(), Some(retry));

    // A second payment, taken offline, is answered 503 with a Retry-After
    // of 10 minutes while the first one's retry is still seconds away.
    rig.base.network_down().await;
    let second = rig.take(2_000, None).await;
    rig.base.online().await;
    let wait = Duration::from_secs(600);
    *rig.processor.busy_once.lock().unwrap() = Some(wait);
    let now = rig.clock.wall_now();
    assert!(now < retry, "{now:?} {retry:?}");
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!((r.attempts, r.failed), (1, 1), "{r:?}");
    assert!(matches!(
        rig.state(&second),
        PaymentState::FailedToForward { .. }
    ));
    // The first payment's retry is unchanged and earlier than the wait.
    assert!(matches!(
        rig.state(&first),
        PaymentState::FailedToForward { next_retry_at: Some(t), .. } if t == retry
    ));
    let busy_until = now.plus(wait);
    assert!(retry < busy_until);
    assert_eq!(rig.engine.next_wake_at(), Some(busy_until));
    assert_eq!(rig.engine.next_wake_up().unwrap(), Some(busy_until));
    // Once the wait is over, the first payment goes through.
    rig.advance_to(busy_until);
    let r = rig.engine.forward_now().await.unwrap();
    assert_eq!(r.approved, 2, "{r:?}");
}

/// A payment whose retry falls due during a long round takes its place by
/// deadline at once (B4), instead of waiting behind the round's backlog
/// until its deadline may have passed (R8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_due_again_during_a_round_goes_out_by_its_deadline() {
    let rig = Rig::new(1, false).await;
    // The earliest deadline: taken in the first offline session.
    let early = rig.take(1_000, None).await;
    rig.processor.script(
        &early,
        Script::FailThenApprove {
            n: 1,
            kind: ForwardErrorKind::NotSent,
            charge: false,
        },
    );
    rig.clock.advance(Duration::from_secs(600));
    let first = rig.engine.forward_now().await.unwrap();
    assert_eq!(first.failed, 1, "{first:?}");
    // A second outage, ten minutes later: later deadlines.
    rig.online().await;
    rig.network_down().await;
    let mut later = Vec::new();
    for i in 0..30 {
        later.push(rig.take(2_000 + i, None).await);
    }
    // Its retry is due a few seconds into the next round, in which the
    // processor takes a second per payment.
    *rig.processor.clock_per_forward.lock().unwrap() =
        Some((rig.clock.clone(), Duration::from_secs(1)));
    let second = rig.engine.forward_now().await.unwrap();
    assert_eq!(second.approved, 31, "{second:?}");
    let calls = rig.processor.calls.lock().unwrap().clone();
    let at = calls
        .iter()
        .skip(1)
        .position(|id| id.as_str() == early.as_str())
        .expect("sent again");
    assert!(
        at <= 8,
        "sent as call {at} of the round: behind the backlog ({calls:?})"
    );
}
