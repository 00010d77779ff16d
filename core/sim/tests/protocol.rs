//! The simulator through the engine's own HTTP gateway: test cards,
//! idempotency, outage, and every fault mode as the client sees it.

#![allow(clippy::unwrap_used)]

use pos_test_support::sim as support;

use std::sync::Arc;
use std::time::Duration;

use pos_core::card_seal::{seal, CardBinding, PHONE_NONCE_LEN};
use pos_core::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, PaymentLookup, ReceiptDelivery,
    ServiceStatus, StaticToken, StatusQuery,
};
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::lifecycle::{DeclineReason, ForwardErrorKind, OrderId, PaymentId};
use pos_core::money::Money;
use pos_core::policy::EntryMode;
use pos_sim::{test_cards, CardOutcome, ChargeOutcome, Fault, FaultPlan, SimConfig, Simulator};

/// How long the `timeout` fault holds a request before it drops it: well
/// past [`IMPATIENT`], so that the client gives up first.
const HOLD: Duration = Duration::from_secs(60);

/// The request timeout of the client that meets the `timeout` fault: long
/// enough for the simulator to take the request and count the fault first
/// (a request given up before that leaves the fault for the retry).
const IMPATIENT: Duration = Duration::from_secs(5);

fn sim(faults: FaultPlan) -> Simulator {
    Simulator::start(SimConfig {
        faults: FaultPlan {
            hold: HOLD,
            ..faults
        },
        ..SimConfig::default()
    })
    .unwrap()
}

/// The engine's HTTP gateway to `sim`. Its request timeout only bounds a
/// hang: the simulator answers at once (or after the `slow` fault's
/// quarter of a second), but a loaded test machine may not run it for a
/// while.
fn gateway(sim: &Simulator, token: &str) -> HttpGateway {
    gateway_with_timeout(sim, token, Duration::from_secs(60))
}

fn gateway_with_timeout(sim: &Simulator, token: &str, timeout: Duration) -> HttpGateway {
    let mut c = HttpGatewayConfig::new(sim.base_url());
    c.allow_plain_http = true;
    c.request_timeout = timeout;
    HttpGateway::new(c, Arc::new(StaticToken(token.into()))).unwrap()
}

/// The serial of the certified reader that reads these tests' cards.
const READER: &str = "PROTO-READER";

/// Card data sealed by a reader for this payment (version 2).
fn sealed_for(
    sim: &Simulator,
    id: &str,
    pan_index: usize,
    cents: i64,
    entry_mode: EntryMode,
) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let card = &test_cards()[pan_index];
    let binding = CardBinding {
        payment_id: id.into(),
        device_id: "till-1".into(),
        amount_minor: cents,
        currency: "EUR".into(),
        reader_serial: READER.into(),
        counter: COUNTER.fetch_add(1, Ordering::SeqCst),
        phone_nonce: [7; PHONE_NONCE_LEN],
        read_at_ms: 1_800_000_000_000,
        entry_mode,
        network: card.network,
        last4: card.last4().into(),
        fingerprint: "fp".into(),
    };
    seal(&binding, &card.secret(), &sim.processor_key()).unwrap()
}

fn request(sim: &Simulator, id: &str, pan_index: usize, cents: i64) -> ForwardRequest {
    let sealed = sealed_for(sim, id, pan_index, cents, EntryMode::Chip);
    let proof = support::signed_by(&support::certified_reader(READER), &sealed);
    support::forward_request("till-1", id, cents, &test_cards()[pan_index], sealed, proof)
}

#[test]
fn each_test_card_gets_its_outcome() {
    let s = sim(FaultPlan::none());
    let g = gateway(&s, &s.token());
    for (i, card) in test_cards().iter().enumerate() {
        let d = g
            .forward(&request(&s, &format!("p-{i}"), i, 1_000))
            .unwrap();
        match (&card.outcome, d) {
            (CardOutcome::Approve, GatewayDecision::Approved { processor_ref }) => {
                assert!(processor_ref.starts_with("ch_"));
            }
            (CardOutcome::Decline(want), GatewayDecision::Declined { reason }) => {
                assert_eq!(&reason, want);
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", card.description),
        }
    }
    assert_eq!(s.ledger().len(), test_cards().len());
}

#[test]
fn a_repeat_returns_the_first_decision_and_charges_once() {
    let s = sim(FaultPlan::none());
    let g = gateway(&s, &s.token());
    let r = request(&s, "p-1", 0, 2_500);
    let a = g.forward(&r).unwrap();
    let b = g.forward(&r).unwrap();
    assert_eq!(a, b);
    let ledger = s.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].requests, 2);
    // The same id with another amount is refused, not charged.
    let mut other = r.clone();
    other.amount = Money::new(9_999, other.amount.currency());
    assert_eq!(
        g.forward(&other).unwrap_err().kind,
        ForwardErrorKind::Rejected
    );
    assert_eq!(s.ledger()[0].amount, 2_500);
    // An online authorization uses the same ledger.
    let online_data = sealed_for(&s, "online-1", 0, 2_500, EntryMode::Contactless);
    let (reader_certificate, reader_signature) =
        support::signed_by(&support::certified_reader(READER), &online_data);
    let auth = AuthorizeRequest {
        payment_id: PaymentId::parse("online-1").unwrap(),
        entry_mode: EntryMode::Contactless,
        sealed_card_data: online_data,
        reader_certificate,
        reader_signature,
        ..support::authorize_request(&r)
    };
    assert!(matches!(
        g.authorize(&auth).unwrap(),
        GatewayDecision::Approved { .. }
    ));
    assert!(s
        .ledger()
        .iter()
        .any(|c| c.online && c.payment_id == "online-1"));
}

#[test]
fn bad_token_bad_card_data_and_outage() {
    let s = sim(FaultPlan::none());
    let g = gateway(&s, "wrong");
    assert_eq!(
        g.forward(&request(&s, "p-1", 0, 100)).unwrap_err().kind,
        ForwardErrorKind::Rejected
    );
    let g = gateway(&s, &s.token());
    // Card data that does not open is declined `mismatch`: nothing charged.
    let mut r = request(&s, "p-2", 0, 100);
    let last = r.sealed_card_data.len() - 1;
    r.sealed_card_data[last] ^= 1;
    assert_eq!(
        g.forward(&r).unwrap(),
        GatewayDecision::Declined {
            reason: DeclineReason::Mismatch
        }
    );
    assert!(
        s.ledger()
            .iter()
            .all(|c| matches!(c.outcome, ChargeOutcome::Declined { .. })),
        "nothing charged"
    );
    assert_eq!(g.status().unwrap(), ServiceStatus::Available);
    s.set_outage(true);
    assert_eq!(g.status().unwrap(), ServiceStatus::Disrupted);
    assert_eq!(
        g.forward(&request(&s, "p-3", 0, 100)).unwrap_err().kind,
        ForwardErrorKind::ServiceUnavailable
    );
    s.set_outage(false);
    assert!(g.forward(&request(&s, "p-3", 0, 100)).is_ok());
}

#[test]
fn every_fault_is_seen_by_the_client_as_documented() {
    // (fault, error kind on the first request, charged by it?)
    let cases = [
        (
            Fault::DropAfterCommit,
            Some(ForwardErrorKind::NoAnswer),
            true,
        ),
        (
            Fault::ServerError,
            Some(ForwardErrorKind::ServiceUnavailable),
            false,
        ),
        (
            Fault::Conflict,
            Some(ForwardErrorKind::ServiceUnavailable),
            false,
        ),
        (Fault::Reset, Some(ForwardErrorKind::NoAnswer), false),
        (Fault::Timeout, Some(ForwardErrorKind::NoAnswer), false),
        (Fault::Slow, None, true),
    ];
    for (fault, kind, charged) in cases {
        let s = sim(FaultPlan::none().once_for("p-1", fault));
        let g = gateway(&s, &s.token());
        let r = request(&s, "p-1", 0, 700);
        // A request the simulator holds is given up by the client's own
        // timeout.
        let first = if fault == Fault::Timeout {
            gateway_with_timeout(&s, &s.token(), IMPATIENT).forward(&r)
        } else {
            g.forward(&r)
        };
        match kind {
            Some(k) => assert_eq!(first.unwrap_err().kind, k, "{fault}"),
            None => assert!(first.is_ok(), "{fault}"),
        }
        assert_eq!(s.ledger().len(), usize::from(charged), "{fault}");
        // The retry with the same id gets the decision, charged once.
        let again = g.forward(&r).unwrap();
        assert!(matches!(again, GatewayDecision::Approved { .. }), "{fault}");
        let ledger = s.ledger();
        assert_eq!(ledger.len(), 1, "{fault}");
        assert!(matches!(ledger[0].outcome, ChargeOutcome::Approved { .. }));
        assert_eq!(s.stats().faults.get(fault.name()), Some(&1), "{fault}");
    }
}

#[test]
fn an_always_failing_payment_is_never_charged() {
    let s = sim(FaultPlan::none().always_for("p-9", Fault::ServerError));
    let g = gateway(&s, &s.token());
    for _ in 0..3 {
        assert!(g.forward(&request(&s, "p-9", 0, 100)).is_err());
    }
    assert!(s.ledger().is_empty());
}

#[test]
fn receipts_are_delivered_once() {
    let s = sim(FaultPlan::none());
    let g = gateway(&s, &s.token());
    let d = ReceiptDelivery {
        device_id: "till-1".into(),
        receipt_id: "till-1-r1".into(),
        order_id: OrderId::parse("order-1").unwrap(),
        channel: "email".into(),
        address: "ana@example.com".into(),
        account: None,
    };
    g.deliver_receipt(&d).unwrap();
    g.deliver_receipt(&d).unwrap();
    assert_eq!(s.receipts().len(), 1);
}

#[test]
fn a_decline_code_reaches_the_engine_type() {
    let s = sim(FaultPlan::none());
    let g = gateway(&s, &s.token());
    let d = g.forward(&request(&s, "p-1", 4, 100)).unwrap();
    assert_eq!(
        d,
        GatewayDecision::Declined {
            reason: DeclineReason::LostCard
        }
    );
}

#[test]
fn the_binary_prints_its_address() {
    use std::io::BufRead;
    let exe = env!("CARGO_BIN_EXE_pos-sim");
    let mut child = std::process::Command::new(exe)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("pos-sim listening on http://127.0.0.1:"),
        "{line}"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_lookup_returns_the_decision_or_closes_an_unknown_id() {
    let s = sim(FaultPlan::none());
    let g = gateway(&s, &s.token());
    let query = |id: &str| StatusQuery {
        device_id: "till-1".into(),
        payment_id: PaymentId::parse(id).unwrap(),
        account: None,
    };
    // A decided payment: its decision, the same as its own request got.
    let d = g.forward(&request(&s, "looked-up", 0, 1_000)).unwrap();
    assert_eq!(
        g.payment_status(&query("looked-up")).unwrap(),
        PaymentLookup::Decided(d)
    );
    // Another device's id is another payment.
    let other = StatusQuery {
        device_id: "till-2".into(),
        payment_id: PaymentId::parse("looked-up").unwrap(),
        account: None,
    };
    assert_eq!(g.payment_status(&other).unwrap(), PaymentLookup::NotFound);
    // An unknown id: "not found", and a request with it is refused from
    // then on (a request still travelling cannot take money any more).
    assert_eq!(
        g.payment_status(&query("never-seen")).unwrap(),
        PaymentLookup::NotFound
    );
    let late = g.forward(&request(&s, "never-seen", 0, 1_000)).unwrap_err();
    assert_eq!(late.kind, ForwardErrorKind::Rejected, "{late}");
    assert!(s.ledger().iter().all(|c| c.payment_id != "never-seen"));
    // During an outage the processor cannot say: no answer, nothing closed.
    s.set_outage(true);
    let e = g.payment_status(&query("during-outage")).unwrap_err();
    assert_eq!(e.kind, ForwardErrorKind::ServiceUnavailable);
    s.set_outage(false);
    g.forward(&request(&s, "during-outage", 0, 1_000)).unwrap();
    assert_eq!(s.stats().lookups, 3);
}

#[test]
fn a_404_that_is_not_the_protocols_unknown_payment_decides_nothing() {
    // A base URL that points at the wrong place answers 404 `not_found`
    // for every path: that must never expire a payment.
    let s = sim(FaultPlan::none());
    let mut c = HttpGatewayConfig::new(format!("{}/wrong-prefix", s.base_url()));
    c.allow_plain_http = true;
    let g = HttpGateway::new(c, Arc::new(StaticToken(s.token()))).unwrap();
    let e = g
        .payment_status(&StatusQuery {
            device_id: "till-1".into(),
            payment_id: PaymentId::parse("p-1").unwrap(),
            account: None,
        })
        .unwrap_err();
    assert_eq!(e.kind, ForwardErrorKind::Rejected, "{e}");
}
