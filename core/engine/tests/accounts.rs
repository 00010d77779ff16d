//! Stored payments belong to the merchant account they were taken for
//! (SPEC B7): the store is bound to an account, another account does not
//! open it, and switching is a guarded, audited action that leaves pending
//! payments under their own account.

#![allow(clippy::unwrap_used)]

use pos_test_support as support;

use std::sync::Arc;

use pos_core::account::MerchantAccount;
use pos_core::audit::AuditKind;
use pos_core::clock::{Timestamp, VirtualClock};
use pos_core::rules::{ActionOverride, ActionRefused, GuardOutcome, GuardedAction};
use pos_core::store::MemoryStore;
use pos_core::{EngineConfig, PosEngine, PosError};

fn account(a: &str, l: &str) -> MerchantAccount {
    MerchantAccount::new(a, l).unwrap()
}

fn config(account: Option<MerchantAccount>) -> EngineConfig {
    let mut c = EngineConfig::new("/tmp/pos-core-accounts", "till-1", "USD").unwrap();
    c.account = account;
    c
}

async fn open(
    store: &MemoryStore,
    account: Option<MerchantAccount>,
) -> Result<PosEngine, PosError> {
    PosEngine::open_with(
        config(account),
        Arc::new(VirtualClock::new(Timestamp(1_800_000_000_000))),
        Arc::new(store.clone()),
    )
    .await
}

#[tokio::test]
async fn a_store_is_bound_to_its_account_and_opens_for_no_other() {
    let store = MemoryStore::new();
    let a = account("acct_A", "loc_1");
    let engine = open(&store, Some(a.clone())).await.unwrap();
    assert_eq!(engine.status().unwrap().account, Some(a.clone()));
    // The binding is audited.
    let bound = engine.audit_entries(0).unwrap();
    assert!(bound.iter().any(|e| matches!(
        &e.kind,
        AuditKind::AccountSwitched { from: None, to } if *to == a
    )));
    engine.close();
    // Another account: refused, naming both; nothing changed.
    let b = account("acct_B", "loc_1");
    match open(&store, Some(b)).await {
        Err(PosError::AccountMismatch { stored, configured }) => {
            assert_eq!(stored, "acct_A/loc_1");
            assert_eq!(configured, "acct_B/loc_1");
        }
        other => panic!("expected AccountMismatch, got {other:?}"),
    }
    // Without a claim, the store opens under its own account.
    let engine = open(&store, None).await.unwrap();
    assert_eq!(engine.status().unwrap().account, Some(a));
}

#[tokio::test]
async fn switching_account_is_refused_while_payments_are_pending_and_audited_when_overridden() {
    let store = MemoryStore::new();
    let a = account("acct_A", "loc_1");
    let b = account("acct_B", "loc_9");
    let engine = open(&store, Some(a.clone())).await.unwrap();
    support::go_offline(&engine).await;
    let taken = support::sell_offline(&engine, 1, 2_500).await;
    // Refused without an override: nothing changes.
    match engine.switch_account(b.clone(), None).await {
        Err(PosError::ActionRefused {
            refusal:
                ActionRefused::PaymentsPending {
                    action,
                    count,
                    at_risk,
                },
        }) => {
            assert_eq!(action, GuardedAction::SwitchAccount);
            assert_eq!(count, 1);
            assert_eq!(at_risk, vec![support::usd(2_500)]);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(engine.status().unwrap().account, Some(a.clone()));
    // The generic entry point cannot switch without naming the account.
    assert!(matches!(
        engine
            .guarded_action(GuardedAction::SwitchAccount, None)
            .await,
        Err(PosError::InvalidInput { .. })
    ));
    // With an override stating the money at risk: switched, audited.
    let outcome = engine
        .switch_account(
            b.clone(),
            Some(ActionOverride {
                staff_id: "manager-1".into(),
                reason: "device moved to the second shop".into(),
                acknowledged_at_risk: vec![support::usd(2_500)],
            }),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, GuardOutcome::Overridden { count: 1, .. }));
    assert_eq!(engine.status().unwrap().account, Some(b.clone()));
    // The pending payment keeps its account; a new one takes the new one.
    let after = support::sell_offline(&engine, 2, 1_000).await;
    let stored = |id| {
        let r = pos_core::store::Store::load(&store);
        async move {
            r.await
                .unwrap()
                .into_iter()
                .rev()
                .find_map(|w| match w {
                    pos_core::ledger::Write::Payment(p) if p.id == id => Some(p.account),
                    _ => None,
                })
                .unwrap()
        }
    };
    assert_eq!(stored(taken.clone()).await, Some(a.clone()));
    assert_eq!(stored(after.clone()).await, Some(b.clone()));
    // The listing shows each payment's account (the app keeps the
    // credentials of every account with pending payments).
    let listed = engine.list_payments().unwrap();
    let of = |id: &pos_core::lifecycle::PaymentId| {
        listed.iter().find(|p| p.id == *id).unwrap().account.clone()
    };
    assert_eq!(of(&taken), Some(a.clone()));
    assert_eq!(of(&after), Some(b.clone()));
    // The audit trail names both accounts, and each entry its own.
    let csv = engine.export_audit_csv().unwrap();
    assert!(csv.contains("from=acct_A/loc_1; to=acct_B/loc_9"), "{csv}");
    assert!(
        csv.contains("override") && csv.contains("SwitchAccount"),
        "{csv}"
    );
    let entries = engine.audit_entries(0).unwrap();
    let switched = entries
        .iter()
        .find(|e| matches!(&e.kind, AuditKind::AccountSwitched { from: Some(_), .. }))
        .unwrap();
    assert_eq!(switched.account, Some(a.clone()));
    assert_eq!(entries.last().unwrap().account, Some(b.clone()));
    // Switching to the current account changes nothing.
    let n = entries.len();
    assert_eq!(
        engine.switch_account(b, None).await.unwrap(),
        GuardOutcome::Allowed
    );
    assert_eq!(engine.audit_entries(0).unwrap().len(), n);
}

#[tokio::test]
async fn a_switch_with_nothing_pending_needs_no_override() {
    let store = MemoryStore::new();
    let engine = open(&store, None).await.unwrap();
    assert_eq!(engine.status().unwrap().account, None);
    let a = account("acct_A", "loc_1");
    assert_eq!(
        engine.switch_account(a.clone(), None).await.unwrap(),
        GuardOutcome::Allowed
    );
    assert_eq!(engine.status().unwrap().account, Some(a));
    // A malformed id from the app is a typed error.
    let bad = MerchantAccount {
        account_id: "acct/1".into(),
        location_id: "l".into(),
    };
    assert!(matches!(
        engine.switch_account(bad, None).await,
        Err(PosError::InvalidInput { .. })
    ));
}
