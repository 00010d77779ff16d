//! Review of the ledger's running payment index (`status_tallies`,
//! `unsettled_offline_count`, `next_unsettled_deadline`,
//! `next_waiting_deadline`, `next_retry`): after any sequence of writes,
//! through the public API only, it must be what a recount of
//! `Ledger::payments` gives, and the status totals and the driver's wake-up
//! derived from it must be what the code it replaced (a walk over every
//! payment) computed. Snapshots (`snapshot_writes`, also through postcard as
//! the store encodes them) must rebuild an equal ledger, index included,
//! and a ledger rebuilt from a snapshot that then takes more writes must
//! equal one that took every write.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use pos_rules::account::MerchantAccount;
use pos_rules::clock::Timestamp;
use pos_rules::ledger::{CardRead, Ledger, OfflinePayment, Order, Settings, Write};
use pos_rules::lifecycle::{
    DeclineReason, ForwardErrorKind, OrderId, PaymentId, PaymentState, PaymentStatus, StaffId,
};
use pos_rules::money::{Currency, Money, MoneyError};
use pos_rules::policy::{EntryMode, Network};

const STATUSES: [PaymentStatus; 7] = [
    PaymentStatus::Pending,
    PaymentStatus::Forwarding,
    PaymentStatus::FailedToForward,
    PaymentStatus::Approved,
    PaymentStatus::Declined,
    PaymentStatus::Expired,
    PaymentStatus::OutcomeUnknown,
];

fn currency(i: u8) -> Currency {
    Currency::parse(["USD", "EUR", "JPY"][usize::from(i % 3)]).unwrap()
}

fn state(kind: u8, retry: Option<i64>) -> PaymentState {
    match kind % 8 {
        0 => PaymentState::Pending,
        1 => PaymentState::Forwarding {
            attempt: 1,
            started_at: Timestamp(1),
            maybe_received: false,
        },
        2 => PaymentState::FailedToForward {
            attempts: 1,
            last_error: ForwardErrorKind::NoAnswer,
            next_retry_at: retry.map(Timestamp),
            maybe_received: true,
        },
        // Failed without a planned retry (a non-retryable error).
        3 => PaymentState::FailedToForward {
            attempts: 2,
            last_error: ForwardErrorKind::Rejected,
            next_retry_at: None,
            maybe_received: false,
        },
        4 => PaymentState::Approved {
            at: Timestamp(2),
            processor_ref: "ref".into(),
        },
        5 => PaymentState::Declined {
            at: Timestamp(2),
            reason: DeclineReason::InsufficientFunds,
        },
        6 => PaymentState::Expired {
            at: Timestamp(2),
            attempts: 0,
            maybe_received: false,
        },
        _ => PaymentState::OutcomeUnknown {
            since: Timestamp(2),
            attempts: 1,
        },
    }
}

#[derive(Debug, Clone)]
struct Pay {
    id: u8,
    cents: i64,
    currency: u8,
    online: bool,
    kind: u8,
    deadline: i64,
    retry: Option<i64>,
    account: Option<u8>,
}

fn account(i: u8) -> MerchantAccount {
    MerchantAccount::new(&format!("acct-{i}"), "loc-1").unwrap()
}

fn payment(p: &Pay) -> OfflinePayment {
    OfflinePayment {
        id: PaymentId::parse(&format!("p-{}", p.id)).unwrap(),
        order_id: OrderId::parse("o-1").unwrap(),
        amount: Money::new(p.cents, currency(p.currency)),
        tip: None,
        card: CardRead {
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            last4: "4242".into(),
            fingerprint: None,
            reader_model: "r".into(),
            sealed_card_data: vec![1, 2, 3],
            reader_serial: None,
            reader_signature: None,
            tap_to_pay_on_phone: false,
        },
        taken_by: StaffId::parse("s").unwrap(),
        taken_at: Timestamp(0),
        deadline: Timestamp(p.deadline),
        session_started_at: Timestamp(0),
        state: state(p.kind, p.retry),
        online: p.online,
        account: p.account.map(account),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Pay(Pay),
    Order(u8),
    Account(u8),
    Settings,
}

fn to_write(op: &Op) -> Write {
    match op {
        Op::Pay(p) => Write::Payment(Box::new(payment(p))),
        Op::Order(i) => Write::Order(Order {
            id: OrderId::parse(&format!("o-{i}")).unwrap(),
            total: Money::new(100, currency(*i)),
            tenders: Vec::new(),
            contact: None,
            created_at: Timestamp(0),
            created_by: StaffId::parse("s").unwrap(),
            updated_at: None,
        }),
        Op::Account(i) => Write::Account(account(*i)),
        Op::Settings => Write::Settings(Box::new(Settings::initial())),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let cents = prop_oneof![
        8 => 1i64..5_000,
        1 => Just(i64::MAX / 3),
        1 => Just(i64::MAX),
    ];
    let pay = (
        (0u8..6, cents, 0u8..3, any::<bool>(), 0u8..8),
        (
            0i64..4,
            proptest::option::of(0i64..6),
            proptest::option::of(0u8..2),
        ),
    )
        .prop_map(
            |((id, cents, currency, online, kind), (deadline, retry, account))| {
                Op::Pay(Pay {
                    id,
                    cents,
                    currency,
                    online,
                    kind,
                    deadline,
                    retry,
                    account,
                })
            },
        );
    prop_oneof![
        10 => pay,
        1 => (0u8..3).prop_map(Op::Order),
        1 => (0u8..2).prop_map(Op::Account),
        1 => Just(Op::Settings),
    ]
}

/// The per-currency totals as the code before the index computed them
/// (a walk over every payment, `checked_add` on each): pending (pending,
/// forwarding, failed to forward, outcome unknown), approved, declined,
/// expired, unknown, each (count, amount).
type Totals = Vec<(Currency, [(u32, Money); 5])>;

fn totals_by_walk(l: &Ledger) -> Result<Totals, MoneyError> {
    let mut out: Totals = Vec::new();
    for p in l.payments.values() {
        let c = p.amount.currency();
        let idx = match out.iter().position(|t| t.0 == c) {
            Some(i) => i,
            None => {
                out.push((c, [(0, Money::zero(c)); 5]));
                out.len() - 1
            }
        };
        let t = &mut out[idx].1;
        if p.state.status() == PaymentStatus::OutcomeUnknown {
            t[4].0 = t[4].0.saturating_add(1);
            t[4].1 = t[4].1.checked_add(&p.amount)?;
        }
        let slot = match p.state.status() {
            PaymentStatus::Approved => 1,
            PaymentStatus::Declined => 2,
            PaymentStatus::Expired => 3,
            _ => 0,
        };
        t[slot].0 = t[slot].0.saturating_add(1);
        t[slot].1 = t[slot].1.checked_add(&p.amount)?;
    }
    out.sort_by_key(|t| t.0);
    Ok(out)
}

/// The same from the running index, as the engine's `totals` now reads it.
fn totals_by_index(l: &Ledger) -> Result<Totals, MoneyError> {
    let mut out = Vec::new();
    for (&c, t) in l.status_tallies() {
        let mut pending_count: u64 = 0;
        let mut pending_units: i128 = 0;
        for s in [
            PaymentStatus::Pending,
            PaymentStatus::Forwarding,
            PaymentStatus::FailedToForward,
            PaymentStatus::OutcomeUnknown,
        ] {
            pending_count += t.get(s).count;
            pending_units += t.get(s).minor_units;
        }
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let pending = i64::try_from(pending_units)
            .map(|m| Money::new(m, c))
            .map_err(|_| MoneyError::Overflow)?;
        let one = |s: PaymentStatus| -> Result<(u32, Money), MoneyError> {
            Ok((count(t.get(s).count), t.get(s).amount(c)?))
        };
        out.push((
            c,
            [
                (count(pending_count), pending),
                one(PaymentStatus::Approved)?,
                one(PaymentStatus::Declined)?,
                one(PaymentStatus::Expired)?,
                one(PaymentStatus::OutcomeUnknown)?,
            ],
        ));
    }
    Ok(out)
}

/// The driver's next payment wake-up as the code before the index computed
/// it (probes and `Retry-After` left out: they do not read the payments).
fn wake_by_walk(l: &Ledger, online: bool) -> Option<Timestamp> {
    let mut next: Option<Timestamp> = None;
    for p in l.payments.values() {
        let t = match &p.state {
            PaymentState::FailedToForward {
                next_retry_at: Some(t),
                ..
            } if online => Some((*t).min(p.deadline)),
            PaymentState::Pending | PaymentState::FailedToForward { .. } => Some(p.deadline),
            _ => None,
        };
        next = match (next, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    next
}

/// The same from the index, as `next_wake_at` now reads it.
fn wake_by_index(l: &Ledger, online: bool) -> Option<Timestamp> {
    let mut next = l.next_waiting_deadline();
    if online {
        next = match (next, l.next_retry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    next
}

/// Every read of the index against a recount of the payments.
fn check(l: &Ledger) -> Result<(), TestCaseError> {
    check_with(l, true)
}

/// The index's reads, for comparing two ledgers without the running
/// unsettled totals (which saturate on sums past `i64`).
#[allow(clippy::type_complexity)]
fn observable(
    l: &Ledger,
) -> (
    Vec<(Currency, [(u64, i128); 7])>,
    u64,
    Option<Timestamp>,
    Option<Timestamp>,
    Option<Timestamp>,
) {
    (
        l.status_tallies()
            .iter()
            .map(|(c, t)| (*c, STATUSES.map(|s| (t.get(s).count, t.get(s).minor_units))))
            .collect(),
        l.unsettled_offline_count(),
        l.next_unsettled_deadline(),
        l.next_waiting_deadline(),
        l.next_retry(),
    )
}

fn check_with(l: &Ledger, unsettled_totals: bool) -> Result<(), TestCaseError> {
    // Tallies per currency and status.
    let mut recount: BTreeMap<Currency, [(u64, i128); 7]> = BTreeMap::new();
    for p in l.payments.values() {
        let slot = STATUSES
            .iter()
            .position(|s| *s == p.state.status())
            .unwrap();
        let e = &mut recount.entry(p.amount.currency()).or_default()[slot];
        e.0 += 1;
        e.1 += i128::from(p.amount.minor_units());
    }
    let kept: BTreeMap<Currency, [(u64, i128); 7]> = l
        .status_tallies()
        .iter()
        .map(|(c, t)| (*c, STATUSES.map(|s| (t.get(s).count, t.get(s).minor_units))))
        .collect();
    prop_assert_eq!(kept, recount);
    // Status and limit reads.
    let unsettled = |p: &&OfflinePayment| !p.state.is_final();
    prop_assert_eq!(
        l.unsettled_offline_count(),
        l.payments
            .values()
            .filter(|p| !p.online)
            .filter(unsettled)
            .count() as u64
    );
    for c in (0..3).filter(|_| unsettled_totals) {
        let c = currency(c);
        // The scan refuses a total past i64 (the running total saturates).
        if let Ok(scan) = l.unsettled_scan(c) {
            prop_assert_eq!(l.unsettled(c).unwrap(), scan);
        }
    }
    prop_assert_eq!(
        l.next_unsettled_deadline(),
        l.payments
            .values()
            .filter(unsettled)
            .map(|p| p.deadline)
            .min()
    );
    // What status() and next_wake_at derive from it, against the code it
    // replaced.
    prop_assert_eq!(totals_by_index(l), totals_by_walk(l));
    for online in [false, true] {
        prop_assert_eq!(wake_by_index(l, online), wake_by_walk(l, online));
    }
    Ok(())
}

fn replay(writes: impl IntoIterator<Item = Write>) -> Ledger {
    let mut l = Ledger::default();
    for w in writes {
        l.apply(w).unwrap();
    }
    l
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_index_is_a_recount_after_any_writes_and_survives_snapshots(
        ops in proptest::collection::vec(op(), 0..80),
        split in 0usize..80,
    ) {
        // Amounts near i64::MAX make the running unsettled totals (not
        // part of the index) saturate; their checks are left out then.
        let small = ops
            .iter()
            .all(|op| !matches!(op, Op::Pay(p) if p.cents > 1_000_000));
        let check = |l: &Ledger| check_with(l, small);
        let same = |a: &Ledger, b: &Ledger| -> Result<(), TestCaseError> {
            prop_assert_eq!(observable(a), observable(b));
            if small {
                prop_assert_eq!(a, b);
            }
            Ok(())
        };
        let mut l = Ledger::default();
        for op in &ops {
            l.apply(to_write(op)).unwrap();
            check(&l)?;
        }
        // A snapshot rebuilds an equal ledger (index included), directly
        // and through postcard as the store encodes it.
        let snapshot = l.snapshot_writes().unwrap();
        let rebuilt = replay(snapshot.clone());
        check(&rebuilt)?;
        same(&rebuilt, &l)?;
        let bytes = postcard::to_allocvec(&snapshot).unwrap();
        let decoded: Vec<Write> = postcard::from_bytes(&bytes).unwrap();
        same(&replay(decoded), &l)?;
        // Opened from a snapshot taken part-way, then given the rest: the
        // ledger that took every write, index included.
        let split = split.min(ops.len());
        let first = replay(ops[..split].iter().map(to_write));
        let mut resumed = replay(first.snapshot_writes().unwrap());
        for op in &ops[split..] {
            resumed.apply(to_write(op)).unwrap();
            check(&resumed)?;
        }
        same(&resumed, &l)?;
    }
}

fn pay(id: u8, kind: u8, deadline: i64, retry: Option<i64>) -> Pay {
    Pay {
        id,
        cents: 100,
        currency: 0,
        online: false,
        kind,
        deadline,
        retry,
        account: None,
    }
}

fn apply(l: &mut Ledger, p: &Pay) {
    l.apply(Write::Payment(Box::new(payment(p)))).unwrap();
    check(l).unwrap();
}

/// Two payments share a deadline and a retry time: settling one keeps the
/// shared instant, settling both removes it.
#[test]
fn payments_sharing_a_deadline_and_a_retry() {
    let mut l = Ledger::default();
    apply(&mut l, &pay(1, 2, 50, Some(20)));
    apply(&mut l, &pay(2, 2, 50, Some(20)));
    apply(&mut l, &pay(3, 0, 90, None));
    assert_eq!(l.next_unsettled_deadline(), Some(Timestamp(50)));
    assert_eq!(l.next_retry(), Some(Timestamp(20)));
    // One approved: the other still holds both instants.
    apply(&mut l, &pay(1, 4, 50, None));
    assert_eq!(l.next_unsettled_deadline(), Some(Timestamp(50)));
    assert_eq!(l.next_waiting_deadline(), Some(Timestamp(50)));
    assert_eq!(l.next_retry(), Some(Timestamp(20)));
    // The other now in flight: unsettled, but not waiting, no retry.
    apply(&mut l, &pay(2, 1, 50, None));
    assert_eq!(l.next_unsettled_deadline(), Some(Timestamp(50)));
    assert_eq!(l.next_waiting_deadline(), Some(Timestamp(90)));
    assert_eq!(l.next_retry(), None);
    // Outcome unknown: unsettled, not waiting.
    apply(&mut l, &pay(2, 7, 50, None));
    assert_eq!(l.next_unsettled_deadline(), Some(Timestamp(50)));
    assert_eq!(l.next_waiting_deadline(), Some(Timestamp(90)));
    // Expired: only the pending one is left.
    apply(&mut l, &pay(2, 6, 50, None));
    assert_eq!(l.next_unsettled_deadline(), Some(Timestamp(90)));
    assert_eq!(l.unsettled_offline_count(), 1);
}

/// A payment whose amount, currency, online flag, deadline and retry all
/// change moves in every part of the index.
#[test]
fn a_payment_rewritten_in_every_field_moves_in_the_index() {
    let mut l = Ledger::default();
    let mut p = pay(1, 2, 50, Some(10));
    apply(&mut l, &p);
    p.cents = 7_777;
    p.currency = 1;
    p.online = true;
    p.deadline = 40;
    p.retry = Some(30);
    p.account = Some(1);
    apply(&mut l, &p);
    assert_eq!(l.status_tallies().len(), 1, "no USD left");
    assert_eq!(l.unsettled_offline_count(), 0);
    assert_eq!(l.next_retry(), Some(Timestamp(30)));
    p.kind = 3; // failed, no retry planned
    apply(&mut l, &p);
    assert_eq!(l.next_retry(), None);
    assert_eq!(l.next_waiting_deadline(), Some(Timestamp(40)));
    assert_eq!(replay(l.snapshot_writes().unwrap()), l);
}

/// The running unsettled totals are exact whatever the amounts: with a
/// payment of `i64::MAX` minor units taken and settled, the total comes
/// back to the recount, and the same payments reached through a snapshot
/// give an equal ledger (`verify_store` would otherwise report a store
/// integrity failure).
#[test]
fn saturated_unsettled_totals_come_back_exact() {
    let mut l = Ledger::default();
    let mut huge = pay(1, 0, 50, None);
    huge.cents = i64::MAX;
    l.apply(Write::Payment(Box::new(payment(&huge)))).unwrap();
    l.apply(Write::Payment(Box::new(payment(&pay(2, 0, 50, None)))))
        .unwrap();
    // The huge one approved: one unsettled payment of 1.00 USD is left.
    huge.kind = 4;
    l.apply(Write::Payment(Box::new(payment(&huge)))).unwrap();
    let usd = currency(0);
    assert_eq!(l.unsettled(usd).unwrap(), l.unsettled_scan(usd).unwrap());
    assert_eq!(replay(l.snapshot_writes().unwrap()), l);
}
