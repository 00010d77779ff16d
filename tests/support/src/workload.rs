//! The workload both crash tests run in their child process: the SIGKILL
//! test (`core/engine/tests/crash.rs`) and the power-cut test
//! (`tests/powercut/tests/powercut.rs`, which includes this file by path). It
//! opens the store, takes offline payments and tells the parent each one it
//! acknowledged. Only `pos_core` paths, so that it compiles in either crate.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour, Route};
use pos_core::clock::SystemClock;
use pos_core::connectivity::ProbeOutcome;
use pos_core::crypto::FileKeyProvider;
use pos_core::engine::StaffSession;
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{PaymentStatus, StaffId};
use pos_core::money::{Currency, Money};
use pos_core::policy::{CurrencyLimits, EntryMode, Network, Policy, TenderKind};
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EngineConfig, PosEngine};

pub use super::rng::Rng;

pub fn usd_currency() -> Currency {
    Currency::parse("USD").unwrap()
}

pub fn usd(cents: i64) -> Money {
    Money::new(cents, usd_currency())
}

/// Snapshots every 16 records, so that kills also land while one is
/// written and opens start from one.
pub fn config(dir: &Path, device_id: &str) -> EngineConfig {
    let mut c = EngineConfig::new(dir, device_id, "USD").unwrap();
    c.compact_every = 16;
    c
}

/// Shopify POS with the device limits raised: payments accumulate over the
/// whole run (thousands of them), and the acceptance window widened so a
/// long soak never runs out of it.
pub fn policy() -> Policy {
    let limits = CurrencyLimits::per_order(usd(10_000)).with_device_amount(usd(100_000_000_000));
    let mut p = Policy::shopify_pos(usd_currency())
        .with_enabled(true)
        .with_limits(usd_currency(), limits);
    p.session.acceptance_window = Duration::from_secs(12 * 3600);
    p
}

pub fn staff() -> StaffSession {
    StaffSession {
        staff_id: StaffId::parse("cashier-1").unwrap(),
        may_take_offline_payments: true,
    }
}

/// The name a `FWD` line gives a status.
pub fn status_name(s: PaymentStatus) -> &'static str {
    match s {
        PaymentStatus::Pending => "Pending",
        PaymentStatus::Forwarding => "Forwarding",
        PaymentStatus::FailedToForward => "FailedToForward",
        PaymentStatus::Approved => "Approved",
        PaymentStatus::Declined => "Declined",
        PaymentStatus::Expired => "Expired",
        PaymentStatus::OutcomeUnknown => "OutcomeUnknown",
    }
}

/// Tells the parent (the cashier) something happened. A parent that is gone
/// ends the child.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

/// Reports the network and the service healthy: the engine is online.
pub async fn online(engine: &PosEngine) {
    engine.report_network(true).await.unwrap();
    for _ in 0..5 {
        let _ = engine.report_probe(ProbeOutcome::Healthy).await;
    }
}

/// Remembers a vendor SDK's reader (no signature on its reads), online
/// first: pairing a new reader needs the service. The engine stays online.
pub async fn remember_vendor_reader(engine: &PosEngine, serial: &str, model: &str) {
    online(engine).await;
    engine.remember_reader(serial, model, "1.0").await.unwrap();
}

/// The child's engine on the store of `dir` (key file `key_file`, store
/// `store_file`), as the previous child left it: the policy set, a cashier
/// signed in, the vendor reader `reader` remembered, the network down.
pub async fn open_offline(
    dir: &Path,
    key_file: &str,
    store_file: &str,
    config: EngineConfig,
    reader: &str,
) -> PosEngine {
    let provider = Arc::new(FileKeyProvider::open_or_create(dir.join(key_file)).unwrap());
    let store = Arc::new(
        SqliteStore::open(dir.join(store_file), provider)
            .await
            .unwrap(),
    );
    let engine = PosEngine::open_with(config, Arc::new(SystemClock), store)
        .await
        .unwrap();
    let wanted = policy();
    if engine.policy().unwrap() != wanted {
        engine.set_policy(wanted).await.unwrap();
    }
    engine.sign_in(staff()).unwrap();
    if engine.remembered_readers().unwrap().is_empty() {
        remember_vendor_reader(&engine, reader, "Wisepad 3").await;
    }
    engine.report_network(false).await.unwrap();
    engine
}

/// Takes one offline payment of a random amount under these ids with a
/// card from the vendor reader `reader`, and says `ACK <id> <cents>` once
/// `confirm_card_payment` returned (the cashier was told it is taken).
pub async fn take_one(
    engine: &PosEngine,
    rng: &mut Rng,
    order_id: String,
    payment_id: String,
    reader: &str,
) {
    let cents = i64::try_from(rng.range(100, 9_999)).unwrap();
    let order = engine
        .create_order(NewOrder {
            order_id: Some(order_id),
            total: usd(cents),
            contact: None,
        })
        .await
        .unwrap();
    let decision = engine
        .begin_card_payment(CardPaymentRequest {
            order_id: order.id,
            payment_id: Some(payment_id),
            amount: usd(cents),
            tip: None,
            behaviour: OfflineBehaviour::PreferOnline,
            tender: TenderKind::Card,
        })
        .await
        .unwrap();
    assert!(
        matches!(decision.route, Route::Offline { .. }),
        "{decision:?}"
    );
    let card = CardRead {
        entry_mode: if rng.below(2) == 0 {
            EntryMode::Chip
        } else {
            EntryMode::Contactless
        },
        network: if rng.below(2) == 0 {
            Network::Visa
        } else {
            Network::Mastercard
        },
        last4: format!("{:04}", rng.below(10_000)),
        fingerprint: None,
        reader_model: "Wisepad 3".into(),
        sealed_card_data: vec![0xA5; 32 + usize::try_from(rng.below(200)).unwrap()],
        reader_serial: Some(reader.into()),
        reader_signature: None,
        tap_to_pay_on_phone: false,
    };
    let view = engine
        .confirm_card_payment(&decision.payment_id, card)
        .await
        .unwrap();
    assert_eq!(view.status, PaymentStatus::Pending);
    say(&format!("ACK {} {cents}", view.id));
}
