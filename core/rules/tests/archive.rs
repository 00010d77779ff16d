//! Settled history leaving memory (`Write::Archive`): what a cut takes and
//! keeps, that a cut which does not fit changes nothing, and that the
//! journal's replay, the snapshot's and the running ledger agree.

#![allow(clippy::unwrap_used)]

use pos_rules::audit::{AuditEntry, AuditKind};
use pos_rules::clock::Timestamp;
use pos_rules::ledger::{ArchiveCut, CardRead, Ledger, OfflinePayment, Order, Tender, Write};
use pos_rules::lifecycle::{
    EmailAddress, OrderId, PaymentId, PaymentState, PaymentStatus, ReceiptChannel, ReceiptEvent,
    ReceiptRequest, StaffId,
};
use pos_rules::money::{Currency, Money};
use pos_rules::policy::{EntryMode, Network};

fn eur(cents: i64) -> Money {
    Money::new(cents, Currency::parse("EUR").unwrap())
}

fn order(i: u32, total: i64, tenders: Vec<Tender>) -> Order {
    Order {
        id: OrderId::parse(&format!("o-{i}")).unwrap(),
        total: eur(total),
        tenders,
        contact: None,
        created_at: Timestamp(i64::from(i)),
        created_by: StaffId::parse("s").unwrap(),
        updated_at: None,
    }
}

fn payment(i: u32, cents: i64, state: PaymentState, session: i64) -> OfflinePayment {
    OfflinePayment {
        id: PaymentId::parse(&format!("p-{i}")).unwrap(),
        order_id: OrderId::parse(&format!("o-{i}")).unwrap(),
        amount: eur(cents),
        tip: None,
        card: CardRead {
            entry_mode: EntryMode::Chip,
            network: Network::Visa,
            last4: "4242".into(),
            fingerprint: Some("fp".into()),
            reader_model: "r".into(),
            sealed_card_data: vec![7; 40],
            reader_serial: None,
            reader_signature: None,
            tap_to_pay_on_phone: false,
        },
        taken_by: StaffId::parse("s").unwrap(),
        taken_at: Timestamp(i64::from(i)),
        deadline: Timestamp(1_000_000),
        session_started_at: Timestamp(session),
        state,
        online: false,
        account: None,
    }
}

fn approved() -> PaymentState {
    PaymentState::Approved {
        at: Timestamp(50),
        processor_ref: "r".into(),
    }
}

fn audit(seq: u64, i: u32) -> Write {
    Write::Audit(AuditEntry {
        seq,
        at: Timestamp(i64::from(i)),
        actor: Some(StaffId::parse("s").unwrap()),
        kind: AuditKind::OfflinePaymentTaken {
            payment_id: PaymentId::parse(&format!("p-{i}")).unwrap(),
            order_id: OrderId::parse(&format!("o-{i}")).unwrap(),
            amount: eur(100),
        },
        account: None,
    })
}

/// Order `i` paid by card payment `i` in `state`, taken in the session
/// that began at `session`, with one audit entry.
fn sale(i: u32, state: PaymentState, session: i64) -> Vec<Write> {
    // Approved in the order of the sales.
    let state = match state {
        PaymentState::Approved { processor_ref, .. } => PaymentState::Approved {
            at: Timestamp(50 + i64::from(i)),
            processor_ref,
        },
        other => other,
    };
    let p = payment(i, 100, state, session);
    vec![
        Write::Order(order(
            i,
            100,
            vec![Tender::OfflineCard {
                payment_id: p.id.clone(),
                amount: eur(100),
            }],
        )),
        Write::Payment(Box::new(p)),
        audit(u64::from(i), i),
    ]
}

fn replay(records: &[Write]) -> Ledger {
    let mut l = Ledger::default();
    for w in records {
        l.apply(w.clone()).unwrap();
    }
    l
}

fn from_snapshot(l: &Ledger) -> Ledger {
    replay(&l.snapshot_writes().expect("a snapshot"))
}

fn tally(l: &Ledger, status: PaymentStatus) -> (u64, i128) {
    let t = l.status_tallies()[&Currency::parse("EUR").unwrap()].get(status);
    (t.count, t.minor_units)
}

#[test]
fn a_cut_takes_the_oldest_settled_orders_and_keeps_their_totals() {
    let mut records = Vec::new();
    for i in 1..=10 {
        records.extend(sale(i, approved(), 0));
    }
    let mut l = replay(&records);
    assert_eq!(
        l.archive_cut(10, 100, None),
        None,
        "nothing beyond what is kept"
    );
    let cut = l.archive_cut(4, 3, None).expect("a cut");
    let ids = |v: &[OrderId]| v.iter().map(|o| o.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(
        ids(&cut.orders),
        ["o-1", "o-2", "o-3", "o-4", "o-5", "o-6"],
        "the six oldest"
    );
    assert_eq!(cut.payments.len(), 6);
    assert_eq!(cut.audit_through, 7, "the last three entries stay");
    records.push(Write::Archive(Box::new(cut.clone())));
    l.apply(Write::Archive(Box::new(cut))).unwrap();

    assert_eq!(l.orders.len(), 4);
    assert_eq!(l.payments.len(), 4);
    assert_eq!(
        l.audit.entries().iter().map(|e| e.seq).collect::<Vec<_>>(),
        [8, 9, 10]
    );
    assert_eq!(
        tally(&l, PaymentStatus::Approved),
        (10, 1_000),
        "status still counts them"
    );
    // The ledger keeps no archived ids (the store answers for them).
    assert!(!l.payments.contains_key(&PaymentId::parse("p-3").unwrap()));
    assert!(l.payments.contains_key(&PaymentId::parse("p-8").unwrap()));

    // Numbering goes on after the cut, and all three ways agree.
    records.extend(sale(11, PaymentState::Pending, 0));
    l.apply(sale(11, PaymentState::Pending, 0)[0].clone())
        .unwrap();
    l.apply(sale(11, PaymentState::Pending, 0)[1].clone())
        .unwrap();
    l.apply(sale(11, PaymentState::Pending, 0)[2].clone())
        .unwrap();
    assert_eq!(l.audit.last_seq(), 11);
    assert_eq!(replay(&records), l, "the journal's replay");
    let rebuilt = from_snapshot(&l);
    assert_eq!(rebuilt, l, "the snapshot's");
    assert_eq!(from_snapshot(&rebuilt), l, "a snapshot of a snapshot");

    // A second cut over the rebuilt ledger archives more and still agrees.
    let cut2 = rebuilt.archive_cut(1, 1, None).expect("a second cut");
    assert_eq!(
        ids(&cut2.orders),
        ["o-7", "o-8", "o-9"],
        "o-10 kept, o-11 pending"
    );
    records.push(Write::Archive(Box::new(cut2.clone())));
    l.apply(Write::Archive(Box::new(cut2))).unwrap();
    assert_eq!(replay(&records), l);
    assert_eq!(from_snapshot(&l), l);
    assert_eq!(l.archived().payments, 9);
    assert_eq!(l.archived().orders, 9);
    assert_eq!(tally(&l, PaymentStatus::Approved), (10, 1_000));
    assert_eq!(tally(&l, PaymentStatus::Pending), (1, 100));
}

#[test]
fn what_is_still_owed_counted_or_queued_stays() {
    let declined = PaymentState::Declined {
        at: Timestamp(50),
        reason: pos_rules::lifecycle::DeclineReason::InsufficientFunds,
    };
    let mut records = Vec::new();
    records.extend(sale(1, declined, 0)); // a balance is owed (R17)
    records.extend(sale(2, PaymentState::Pending, 0)); // not final
    records.extend(sale(3, approved(), 77)); // the current session's card limit counts it
    records.extend(sale(4, approved(), 0)); // a receipt is still queued
    records.push(Write::Receipt {
        id: 1,
        request: ReceiptRequest::queue(
            OrderId::parse("o-4").unwrap(),
            ReceiptChannel::Email(EmailAddress::parse("a@b.example").unwrap()),
            Timestamp(4),
        ),
    });
    records.extend(sale(5, approved(), 0)); // archivable, with a sent receipt
    let mut sent = ReceiptRequest::queue(
        OrderId::parse("o-5").unwrap(),
        ReceiptChannel::Email(EmailAddress::parse("a@b.example").unwrap()),
        Timestamp(5),
    );
    sent.record(ReceiptEvent::Delivered, Timestamp(6)).unwrap();
    records.push(Write::Receipt {
        id: 2,
        request: sent,
    });
    // Open: no tender yet.
    records.push(Write::Order(order(6, 500, Vec::new())));
    // Cash only, paid: archivable.
    records.push(Write::Order(order(
        7,
        300,
        vec![Tender::Cash { amount: eur(300) }],
    )));
    let l = replay(&records);
    let cut = l.archive_cut(0, 1_000, Some(Timestamp(77))).expect("a cut");
    let ids: Vec<&str> = cut.orders.iter().map(OrderId::as_str).collect();
    assert_eq!(ids, ["o-5", "o-7"]);
    let pays: Vec<&str> = cut.payments.iter().map(PaymentId::as_str).collect();
    assert_eq!(pays, ["p-5"]);
    assert_eq!(cut.receipts, [2]);
    assert_eq!(cut.audit_through, 0, "every entry kept");
    // Without the session, payment 3's order goes too.
    let cut = l.archive_cut(0, 1_000, None).expect("a cut");
    assert_eq!(cut.orders.len(), 3);
}

#[test]
fn a_cut_that_does_not_fit_changes_nothing() {
    let mut records = Vec::new();
    for i in 1..=3 {
        records.extend(sale(i, approved(), 0));
    }
    records.extend(sale(4, PaymentState::Pending, 0));
    let l = replay(&records);
    let good = l.archive_cut(0, 1, None).unwrap();
    let bad_cuts = [
        ArchiveCut {
            payments: vec![PaymentId::parse("p-4").unwrap()],
            ..good.clone()
        },
        ArchiveCut {
            audit_through: 4,
            ..good.clone()
        },
    ];
    for bad in bad_cuts {
        let mut copy = replay(&records);
        assert!(
            copy.apply(Write::Archive(Box::new(bad.clone()))).is_err(),
            "{bad:?}"
        );
        assert_eq!(copy, l, "unchanged after {bad:?}");
    }
    // What was archived already is skipped: the same cut again, or one
    // that goes back, changes nothing (a cut written twice still replays).
    // A payment the ledger does not hold is taken as archived already (it
    // keeps no archived ids; cuts come only from the verified journal).
    let mut copy = replay(&records);
    copy.apply(Write::Archive(Box::new(good.clone()))).unwrap();
    let after = replay(
        &[
            records.clone(),
            vec![Write::Archive(Box::new(good.clone()))],
        ]
        .concat(),
    );
    let back = ArchiveCut {
        orders: Vec::new(),
        payments: Vec::new(),
        receipts: Vec::new(),
        audit_through: 1,
    };
    copy.apply(Write::Archive(Box::new(back))).unwrap();
    assert_eq!(copy, after);
    copy.apply(Write::Archive(Box::new(good.clone()))).unwrap();
    assert_eq!(copy, after, "the same cut twice is the cut once");
    assert_eq!(from_snapshot(&copy), after);
    // A summary on a ledger that holds records is refused.
    let summary = from_snapshot(&copy).snapshot_writes().unwrap();
    let base = summary
        .into_iter()
        .find(|w| matches!(w, Write::Archived(_)))
        .expect("the snapshot carries the summary");
    let mut copy2 = replay(&[records, vec![Write::Archive(Box::new(good))]].concat());
    assert!(copy2.apply(base).is_err());
    assert_eq!(copy2, copy);
}

#[test]
fn the_orders_kept_are_the_most_recently_settled() {
    // Order 1 is the oldest, opened at 1 and paid in cash at 100 (a tab);
    // order 2 is paid by a card approved at 52; orders 3 and 4 are paid in
    // cash at once.
    let mut records = Vec::new();
    let mut tab = order(1, 300, vec![Tender::Cash { amount: eur(300) }]);
    tab.updated_at = Some(Timestamp(100));
    records.push(Write::Order(tab));
    records.extend(
        sale(2, approved(), 0)
            .into_iter()
            .filter(|w| !matches!(w, Write::Audit(_))),
    );
    for i in [3, 4] {
        let mut o = order(i, 300, vec![Tender::Cash { amount: eur(300) }]);
        o.updated_at = Some(Timestamp(i64::from(i)));
        records.push(Write::Order(o));
    }
    let l = replay(&records);
    let cut = l.archive_cut(2, 1_000, None).expect("a cut");
    let ids: Vec<&str> = cut.orders.iter().map(OrderId::as_str).collect();
    assert_eq!(
        ids,
        ["o-3", "o-4"],
        "the tab paid last and the card approved at 52 stay"
    );
}

#[test]
fn orders_settled_at_the_same_instant_are_kept_by_creation() {
    // One forwarding round approves three payments at the same instant:
    // the order created last is the one kept.
    // Created in the order o-3, o-2, o-1 (against the ids' order).
    let mut records = Vec::new();
    for i in [1, 2, 3] {
        let mut w = sale(i, approved(), 0);
        if let Write::Payment(p) = &mut w[1] {
            p.state = approved();
        }
        if let Write::Order(o) = &mut w[0] {
            o.created_at = Timestamp(10 - i64::from(i));
        }
        records.extend(w.into_iter().filter(|w| !matches!(w, Write::Audit(_))));
    }
    let l = replay(&records);
    let cut = l.archive_cut(1, 1_000, None).expect("a cut");
    let ids: Vec<&str> = cut.orders.iter().map(OrderId::as_str).collect();
    assert_eq!(ids, ["o-2", "o-3"], "o-1, created last, stays");
}

#[test]
fn a_cut_applied_again_leaves_a_new_order_under_a_used_id() {
    let mut records = Vec::new();
    for i in 1..=2 {
        records.extend(sale(i, approved(), 0));
    }
    let l = replay(&records);
    let cut = l.archive_cut(1, 1_000, None).expect("a cut");
    assert_eq!(cut.orders, [OrderId::parse("o-1").unwrap()]);
    records.push(Write::Archive(Box::new(cut.clone())));
    // Order ids are not remembered: a new order takes "o-1", unpaid.
    records.push(Write::Order(order(1, 500, Vec::new())));
    records.push(Write::Archive(Box::new(cut)));
    let l = replay(&records);
    assert_eq!(
        l.orders
            .get(&OrderId::parse("o-1").unwrap())
            .map(|o| o.total),
        Some(eur(500)),
        "the new order stays"
    );
}

#[test]
fn a_snapshot_of_archived_history_survives_its_binary_encoding() {
    let mut records = Vec::new();
    for i in 1..=6 {
        records.extend(sale(i, approved(), 0));
    }
    let mut l = replay(&records);
    let cut = l.archive_cut(2, 2, None).expect("a cut");
    l.apply(Write::Archive(Box::new(cut))).unwrap();
    let writes = l.snapshot_writes().unwrap();
    let bytes = postcard::to_allocvec(&writes).unwrap();
    let decoded: Vec<Write> = postcard::from_bytes(&bytes).unwrap();
    let rebuilt = replay(&decoded);
    assert_eq!(rebuilt, l);
}

#[test]
fn the_count_check_never_misses_a_cut() {
    // Settled, owed, pending and open orders, with audit entries.
    let mut records = Vec::new();
    for i in 1..=6 {
        records.extend(sale(i, approved(), 0));
    }
    records.extend(sale(7, PaymentState::Pending, 0));
    records.push(Write::Order(order(8, 500, Vec::new())));
    let mut l = replay(&records);
    let mut seen_cut = false;
    let mut seen_no_cut = false;
    for round in 0..2 {
        for keep_orders in 0..10 {
            for keep_audit in 0..12 {
                let cut = l.archive_cut(keep_orders, keep_audit, None);
                let may = l.archive_may_be_due(keep_orders, keep_audit);
                assert!(
                    cut.is_none() || may,
                    "round {round}: a cut the counts said was not due \
                     (keep {keep_orders} orders, {keep_audit} entries)"
                );
                seen_cut |= cut.is_some();
                seen_no_cut |= cut.is_none();
            }
        }
        // Again once part of the history left memory.
        if round == 0 {
            let cut = l.archive_cut(3, 4, None).expect("a cut");
            l.apply(Write::Archive(Box::new(cut))).unwrap();
        }
    }
    assert!(seen_cut && seen_no_cut);
    // With room for everything, nothing may be due.
    assert!(!l.archive_may_be_due(100, 100));
}
