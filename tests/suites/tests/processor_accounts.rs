//! Merchant accounts end to end: payments taken under one account are
//! charged under it after the device switched to another, a token of the
//! wrong account blocks forwarding without declining anything, the switch
//! is guarded while payments are pending, and the audit export names both
//! accounts. Then the simulator's refusal on each route, through the
//! engine's own HTTP gateway.

#![allow(clippy::unwrap_used)]

use pos_test_support::sim as support;
use support::{PaidWith, Rig};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_core::forwarding::ForwardingBlockedReason;
use pos_core::gateway::{
    ForwardRequest, Gateway, GatewayDecision, GatewayError, MerchantAccount, PaymentLookup,
    ReceiptDelivery, StaticToken, StatusQuery, TokenProvider,
};
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::lifecycle::{ForwardErrorKind, OrderId, PaymentId, PaymentState};
use pos_core::money::Money;
use pos_core::policy::EntryMode;
use pos_core::rules::{ActionOverride, ActionRefused, GuardOutcome, GuardedAction};
use pos_core::{EventListener, PosError, PosEvent};
use pos_sim::{test_cards, ChargeOutcome, SimConfig, Simulator};

/// The HTTP gateway's request timeout: only bounds a hang (the simulator
/// answers at once, but a loaded test machine may not run it for a while).
const LIMIT: Duration = Duration::from_secs(60);

fn account_a() -> MerchantAccount {
    MerchantAccount::new("acct_A", "loc-1").unwrap()
}

fn account_b() -> MerchantAccount {
    MerchantAccount::new("acct_B", "loc-2").unwrap()
}

/// The app's credentials: one token per account it holds, and the account
/// the device runs as (its token is [`TokenProvider::token`]).
#[derive(Debug)]
struct AppTokens {
    by_account: Mutex<BTreeMap<MerchantAccount, String>>,
    current: Mutex<MerchantAccount>,
}

impl AppTokens {
    fn new(current: MerchantAccount) -> Arc<Self> {
        Arc::new(AppTokens {
            by_account: Mutex::new(BTreeMap::new()),
            current: Mutex::new(current),
        })
    }

    fn set(&self, account: &MerchantAccount, token: String) {
        self.by_account
            .lock()
            .unwrap()
            .insert(account.clone(), token);
    }

    fn switch_to(&self, account: MerchantAccount) {
        *self.current.lock().unwrap() = account;
    }
}

impl TokenProvider for AppTokens {
    fn token(&self) -> Result<String, GatewayError> {
        let current = self.current.lock().unwrap().clone();
        self.token_for(Some(&current))
    }

    fn token_for(&self, account: Option<&MerchantAccount>) -> Result<String, GatewayError> {
        account
            .and_then(|a| self.by_account.lock().unwrap().get(a).cloned())
            .ok_or_else(|| GatewayError::new(ForwardErrorKind::Rejected, "no credentials"))
    }
}

/// The events the tests look at.
#[derive(Default)]
struct Seen(Mutex<Vec<PosEvent>>);

impl EventListener for Seen {
    fn on_event(&self, e: PosEvent) {
        if matches!(
            e,
            PosEvent::ForwardingBlocked { .. }
                | PosEvent::ForwardingUnblocked
                | PosEvent::PaymentDeclined(_)
        ) {
            self.0.lock().unwrap().push(e);
        }
    }
}

impl Seen {
    fn blocked(&self) -> Vec<ForwardingBlockedReason> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                PosEvent::ForwardingBlocked { reason } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn declines(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, PosEvent::PaymentDeclined(_)))
            .count()
    }
}

struct Shop {
    sim: Simulator,
    rig: Rig,
    tokens: Arc<AppTokens>,
    seen: Arc<Seen>,
}

/// An engine bound to account A against a fresh simulator, its HTTP
/// gateway taking tokens from `AppTokens` (A's token for A), offline.
async fn shop() -> Shop {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let tokens = AppTokens::new(account_a());
    tokens.set(&account_a(), sim.token_for(&account_a()));
    let mut c = HttpGatewayConfig::new(sim.base_url());
    c.allow_plain_http = true;
    c.request_timeout = LIMIT;
    let seen = Arc::new(Seen::default());
    let rig = support::rig(sim.processor_key())
        .configure(|c| {
            c.device_id = "till-acct".into();
            c.account = Some(account_a());
        })
        .gateway(Arc::new(HttpGateway::new(c, tokens.clone()).unwrap()))
        .listener(seen.clone())
        .open()
        .await;
    Shop {
        sim,
        rig,
        tokens,
        seen,
    }
}

impl std::ops::Deref for Shop {
    type Target = Rig;

    fn deref(&self) -> &Rig {
        &self.rig
    }
}

impl Shop {
    async fn take(&self, cents: i64) -> PaymentId {
        let sale = self.sale(cents).paid_with(&test_cards()[0]);
        sale.sell(&self.engine).await.id
    }

    /// Switches the device to B, overriding with the figures the engine
    /// reports at risk.
    async fn switch_to_b_with_override(&self) -> GuardOutcome {
        let exposure = self.engine.exposure().unwrap();
        let outcome = self
            .engine
            .switch_account(
                account_b(),
                Some(ActionOverride {
                    staff_id: "manager-1".into(),
                    reason: "till moves to the second shop".into(),
                    acknowledged_at_risk: exposure.at_risk.clone(),
                }),
            )
            .await
            .unwrap();
        self.tokens.switch_to(account_b());
        outcome
    }

    fn charge(&self, id: &PaymentId) -> Option<pos_sim::Charge> {
        self.sim
            .ledger()
            .into_iter()
            .find(|c| c.payment_id == id.as_str())
    }
}

fn eur(cents: i64) -> Money {
    Money::new(cents, support::eur())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_taken_under_a_is_charged_under_a_after_the_switch_to_b() {
    let shop = shop().await;
    let under_a = shop.take(1_250).await;
    assert_eq!(shop.engine.exposure().unwrap().at_risk, vec![eur(1_250)]);
    let outcome = shop.switch_to_b_with_override().await;
    assert_eq!(
        outcome,
        GuardOutcome::Overridden {
            action: GuardedAction::SwitchAccount,
            count: 1,
            at_risk: vec![eur(1_250)],
        }
    );
    assert_eq!(shop.engine.status().unwrap().account, Some(account_b()));
    shop.tokens
        .set(&account_b(), shop.sim.token_for(&account_b()));
    let under_b = shop.take(700).await;

    shop.engine.forward_now().await.unwrap();

    for id in [&under_a, &under_b] {
        assert!(
            matches!(shop.state(id), PaymentState::Approved { .. }),
            "{id}: {:?}",
            shop.state(id)
        );
    }
    let a = shop.charge(&under_a).unwrap();
    assert_eq!(
        a.account,
        Some(account_a()),
        "charged under its own account"
    );
    assert_eq!(a.amount, 1_250);
    assert!(matches!(a.outcome, ChargeOutcome::Approved { .. }));
    assert_eq!(shop.charge(&under_b).unwrap().account, Some(account_b()));
    assert_eq!(shop.sim.stats().account_mismatches, 0);
    assert_eq!(shop.engine.status().unwrap().forwarding_blocked, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_the_wrong_account_blocks_forwarding_and_declines_nothing() {
    let shop = shop().await;
    let id = shop.take(1_250).await;
    shop.switch_to_b_with_override().await;
    // The app forgot A's credentials: it hands out B's for everything.
    let b_token = shop.sim.token_for(&account_b());
    shop.tokens.set(&account_b(), b_token.clone());
    shop.tokens.set(&account_a(), b_token);

    shop.engine.forward_now().await.unwrap();
    // Events reach listeners on the bus thread: wait for the round's.
    shop.engine.events_delivered().await;

    assert_eq!(
        shop.seen.blocked(),
        vec![ForwardingBlockedReason::AccountMismatch]
    );
    assert_eq!(
        shop.engine.status().unwrap().forwarding_blocked,
        Some(ForwardingBlockedReason::AccountMismatch)
    );
    assert!(
        matches!(shop.state(&id), PaymentState::FailedToForward { .. }),
        "waits, not declined: {:?}",
        shop.state(&id)
    );
    assert_eq!(shop.seen.declines(), 0);
    assert!(shop.sim.ledger().is_empty(), "nothing charged or recorded");
    assert!(shop.sim.stats().account_mismatches >= 1);
    assert_eq!(shop.engine.exposure().unwrap().at_risk, vec![eur(1_250)]);

    // A's credentials again: the next round charges it under A.
    shop.tokens
        .set(&account_a(), shop.sim.token_for(&account_a()));
    shop.engine.forward_now().await.unwrap();
    shop.engine.events_delivered().await;

    assert!(
        matches!(shop.state(&id), PaymentState::Approved { .. }),
        "{:?}",
        shop.state(&id)
    );
    let charge = shop.charge(&id).unwrap();
    assert_eq!(charge.account, Some(account_a()));
    assert_eq!(charge.requests, 1, "the refused request left no record");
    assert_eq!(shop.engine.status().unwrap().forwarding_blocked, None);
    assert!(shop
        .seen
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, PosEvent::ForwardingUnblocked)));
    assert_eq!(shop.seen.declines(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_account_with_payments_pending_is_refused_without_an_override() {
    let shop = shop().await;
    let id = shop.take(1_250).await;
    let audit_before = shop.engine.export_audit_csv().unwrap();

    let e = shop
        .engine
        .switch_account(account_b(), None)
        .await
        .unwrap_err();

    match e {
        PosError::ActionRefused {
            refusal:
                ActionRefused::PaymentsPending {
                    action,
                    count,
                    at_risk,
                },
        } => {
            assert_eq!(action, GuardedAction::SwitchAccount);
            assert_eq!(count, 1);
            assert_eq!(at_risk, vec![eur(1_250)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(shop.engine.status().unwrap().account, Some(account_a()));
    assert_eq!(shop.engine.export_audit_csv().unwrap(), audit_before);
    // Still A's: forwarded and charged under A.
    shop.engine.forward_now().await.unwrap();
    assert!(matches!(shop.state(&id), PaymentState::Approved { .. }));
    assert_eq!(shop.charge(&id).unwrap().account, Some(account_a()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_export_names_both_accounts() {
    let shop = shop().await;
    shop.take(1_250).await;
    shop.switch_to_b_with_override().await;
    shop.tokens
        .set(&account_b(), shop.sim.token_for(&account_b()));
    shop.engine.forward_now().await.unwrap();

    let csv = shop.engine.export_audit_csv().unwrap();
    let rows: Vec<Vec<&str>> = csv
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows[0].last(), Some(&"account"), "{csv}");
    let kind = |r: &Vec<&str>| r[4].to_owned();
    let switched: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| kind(r) == "account_switched")
        .collect();
    assert_eq!(switched.len(), 2, "the binding and the switch: {csv}");
    assert_eq!(switched[0][11], "from=none; to=acct_A/loc-1", "{csv}");
    assert_eq!(
        switched[1][11], "from=acct_A/loc-1; to=acct_B/loc-2",
        "{csv}"
    );
    // The switch is recorded under the account it left; what happens after
    // it under the new one.
    assert_eq!(switched[1][12], "acct_A/loc-1", "{csv}");
    let taken = rows
        .iter()
        .find(|r| kind(r) == "offline_payment_taken")
        .unwrap();
    assert_eq!(taken[12], "acct_A/loc-1", "{csv}");
    let overridden = rows.iter().find(|r| kind(r) == "override").unwrap();
    assert!(overridden[11].contains("action=SwitchAccount"), "{csv}");
    let switch_seq: u64 = switched[1][0].parse().unwrap();
    assert!(
        rows.iter()
            .skip(1)
            .filter(|r| r[0].parse::<u64>().unwrap() > switch_seq)
            .any(|r| r[12] == "acct_B/loc-2"),
        "{csv}"
    );
}

// The simulator's refusals, request by request.

fn gateway(sim: &Simulator, token: String) -> HttpGateway {
    let mut c = HttpGatewayConfig::new(sim.base_url());
    c.allow_plain_http = true;
    c.request_timeout = LIMIT;
    HttpGateway::new(c, Arc::new(StaticToken(token))).unwrap()
}

/// A forward of `id` from till-1 under `account`, its card data sealed for it.
fn forward(sim: &Simulator, id: &str, account: Option<MerchantAccount>) -> ForwardRequest {
    use pos_core::card_seal::{seal, CardBinding, PHONE_NONCE_LEN};
    let card = &test_cards()[0];
    let binding = CardBinding {
        payment_id: id.into(),
        device_id: "till-1".into(),
        amount_minor: 900,
        currency: "EUR".into(),
        reader_serial: "ACCT-READER".into(),
        counter: support::next_counter(),
        phone_nonce: [3; PHONE_NONCE_LEN],
        read_at_ms: 1_800_000_000_000,
        entry_mode: EntryMode::Chip,
        network: card.network,
        last4: card.last4().into(),
        fingerprint: "fp".into(),
    };
    let sealed = seal(&binding, &card.secret(), &sim.processor_key()).unwrap();
    let proof = support::signed_by(&support::certified_reader("ACCT-READER"), &sealed);
    ForwardRequest {
        account,
        ..support::forward_request("till-1", id, 900, card, sealed, proof)
    }
}

fn assert_mismatch<T: std::fmt::Debug>(answer: Result<T, GatewayError>) {
    let e = answer.unwrap_err();
    assert_eq!(e.kind, ForwardErrorKind::Rejected, "{e}");
    assert_eq!(e.http_status, Some(403), "{e}");
    assert!(e.account_mismatch(), "{e}");
}

#[test]
fn every_route_refuses_a_request_for_another_account_than_its_tokens() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let with_b = gateway(&sim, sim.token_for(&account_b()));
    let legacy = gateway(&sim, sim.token());

    // Payments, both routes: refused, nothing charged or recorded.
    let request = forward(&sim, "pay-x1", Some(account_a()));
    assert_mismatch(with_b.forward(&request));
    assert_mismatch(legacy.forward(&request));
    let online = forward(&sim, "pay-x2", Some(account_a()));
    let auth = support::authorize_request(&online);
    assert_mismatch(with_b.authorize(&auth));
    assert!(sim.ledger().is_empty());

    // Lookups: refused, and the id is not closed.
    let query = StatusQuery {
        device_id: "till-1".into(),
        payment_id: PaymentId::parse("pay-x1").unwrap(),
        account: Some(account_a()),
    };
    assert_mismatch(with_b.payment_status(&query));
    assert_eq!(sim.stats().lookups, 0);

    // Receipts: refused, nothing delivered.
    let receipt = ReceiptDelivery {
        device_id: "till-1".into(),
        receipt_id: "till-1-r1".into(),
        order_id: OrderId::parse("order-1").unwrap(),
        channel: "email".into(),
        address: "a@example.com".into(),
        account: Some(account_a()),
    };
    assert_mismatch(with_b.deliver_receipt(&receipt));
    assert!(sim.receipts().is_empty());
    assert_eq!(sim.stats().account_mismatches, 5);

    // Nothing was recorded under the idempotency key: with A's token the
    // same request is charged, under A, once.
    let with_a = gateway(&sim, sim.token_for(&account_a()));
    assert!(matches!(
        with_a.forward(&request).unwrap(),
        GatewayDecision::Approved { .. }
    ));
    assert!(matches!(
        with_a.authorize(&auth).unwrap(),
        GatewayDecision::Approved { .. }
    ));
    assert!(matches!(
        with_a.payment_status(&query).unwrap(),
        PaymentLookup::Decided(GatewayDecision::Approved { .. })
    ));
    with_a.deliver_receipt(&receipt).unwrap();
    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 2);
    assert!(ledger
        .iter()
        .all(|c| c.account == Some(account_a()) && c.requests == 1));
    assert_eq!(sim.receipts()[0].account, Some(account_a()));
}

#[test]
fn an_id_charged_under_one_account_is_answered_to_that_account_only() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let with_a = gateway(&sim, sim.token_for(&account_a()));
    let with_b = gateway(&sim, sim.token_for(&account_b()));
    let request = forward(&sim, "pay-y1", Some(account_a()));
    assert!(with_a.forward(&request).is_ok());

    // B, naming itself, asks for A's payment: refused, not a new charge.
    let mut as_b = request.clone();
    as_b.account = Some(account_b());
    assert_mismatch(with_b.forward(&as_b));
    assert_mismatch(with_b.payment_status(&StatusQuery {
        device_id: "till-1".into(),
        payment_id: request.payment_id.clone(),
        account: Some(account_b()),
    }));
    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].account, Some(account_a()));
    assert_eq!(ledger[0].requests, 1);
}

#[test]
fn a_request_naming_no_account_is_taken_under_its_tokens() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    // From before accounts: the account-less token, no account named.
    let legacy = gateway(&sim, sim.token());
    assert!(legacy.forward(&forward(&sim, "pay-z1", None)).is_ok());
    // An account's token, no account named: charged under the token's.
    let with_a = gateway(&sim, sim.token_for(&account_a()));
    assert!(with_a.forward(&forward(&sim, "pay-z2", None)).is_ok());
    let accounts: Vec<_> = sim.ledger().into_iter().map(|c| c.account).collect();
    assert_eq!(accounts, vec![None, Some(account_a())]);
    // The same account always gets the same token; another gets another.
    assert_eq!(sim.token_for(&account_a()), sim.token_for(&account_a()));
    assert_ne!(sim.token_for(&account_a()), sim.token_for(&account_b()));
    assert_ne!(sim.token_for(&account_a()), sim.token());
    // An unknown token is still a 401.
    let e = gateway(&sim, "sim-token.acct-000000000000000000000000".into())
        .forward(&forward(&sim, "pay-z3", None))
        .unwrap_err();
    assert_eq!(e.http_status, Some(401));
    assert!(!e.account_mismatch());
}
