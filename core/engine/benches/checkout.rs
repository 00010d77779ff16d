//! The checkout and `status()` called from Rust: the same-run baseline of
//! the Kotlin and Swift FFI benches (`bindings/kotlin/bench`,
//! `bindings/swift/bench`), which run the same steps through the bindings.
//!
//! An engine on a `SqliteStore` and the system clock, the Square Terminal
//! preset on (no device limits), a cashier signed in, a vendor reader
//! remembered, the network down; a runtime of one worker thread, called
//! from outside it (as the bindings call it). Steps:
//!
//! 1. `status()` p50 of `POS_BENCH_STATUS_CALLS` calls (default 2,000),
//!    nothing pending;
//! 2. a whole offline checkout (`create_order`, `begin_card_payment`,
//!    `confirm_card_payment`), p50 of `POS_BENCH_CHECKOUTS` (default 1,000)
//!    after 20 untimed;
//! 3. more checkouts, untimed, up to `POS_BENCH_PENDING` (default 10,000)
//!    pending payments, then `status()` p50 again.
//!
//! Prints `BENCH` lines and `VALUE rust_checkout_ns=… rust_status_ns=…
//! rust_status_pending_ns=…` for `cargo xtask bench`.
//! `cargo bench -p pos-core --bench checkout`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::float_arithmetic
)]

use std::sync::Arc;
use std::time::Instant;

use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::SystemClock;
use pos_core::crypto::FileKeyProvider;
use pos_core::engine::StaffSession;
use pos_core::ledger::CardRead;
use pos_core::lifecycle::StaffId;
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network, Policy, TenderKind};
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EngineConfig, PosEngine};

const SERIAL: &str = "VENDOR-SN-1";
const WARM_UP: usize = 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn card(n: usize) -> CardRead {
    CardRead {
        entry_mode: EntryMode::Chip,
        network: Network::Visa,
        last4: "4242".into(),
        fingerprint: Some("fp-4242".into()),
        reader_model: "Square Terminal".into(),
        sealed_card_data: vec![9, 8, 7, 6]
            .into_iter()
            .chain(u32::try_from(n).unwrap().to_be_bytes())
            .collect(),
        reader_serial: Some(SERIAL.into()),
        reader_signature: None,
        tap_to_pay_on_phone: false,
    }
}

async fn checkout(engine: &PosEngine, n: usize) {
    let total = Money::new(500 + i64::try_from(n % 50).unwrap() * 37, usd());
    let order = engine
        .create_order(NewOrder {
            order_id: None,
            total,
            contact: None,
        })
        .await
        .unwrap();
    let d = engine
        .begin_card_payment(CardPaymentRequest {
            order_id: order.id,
            payment_id: None,
            amount: total,
            tip: None,
            behaviour: OfflineBehaviour::PreferOnline,
            tender: TenderKind::Card,
        })
        .await
        .unwrap();
    engine
        .confirm_card_payment(&d.payment_id, card(n))
        .await
        .unwrap();
}

fn p50(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn status_p50(engine: &PosEngine, calls: usize) -> u64 {
    for _ in 0..WARM_UP {
        engine.status().unwrap();
    }
    p50((0..calls)
        .map(|_| {
            let t = Instant::now();
            let s = engine.status().unwrap();
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap();
            std::hint::black_box(s);
            ns
        })
        .collect())
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn main() {
    let status_calls = env("POS_BENCH_STATUS_CALLS", 2_000);
    let checkouts = env("POS_BENCH_CHECKOUTS", 1_000);
    let pending = env("POS_BENCH_PENDING", 10_000).max(checkouts + WARM_UP);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pos-checkout-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let engine = rt.block_on(async {
        let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
        let store = SqliteStore::open(&dir.join("store.db"), keys)
            .await
            .unwrap();
        let config = EngineConfig::new(dir.join("data"), "till-1", "USD").unwrap();
        let engine = PosEngine::open_with(config, Arc::new(SystemClock), Arc::new(store))
            .await
            .unwrap();
        engine
            .set_policy(Policy::square_terminal(usd()).with_enabled(true))
            .await
            .unwrap();
        engine
            .sign_in(StaffSession {
                staff_id: StaffId::parse("cashier-1").unwrap(),
                may_take_offline_payments: true,
            })
            .unwrap();
        engine.report_network(true).await.unwrap();
        for _ in 0..2 {
            engine
                .report_probe(pos_core::connectivity::ProbeOutcome::Healthy)
                .await
                .unwrap();
        }
        engine
            .remember_reader(SERIAL, "Square Terminal", "1.0")
            .await
            .unwrap();
        engine.report_network(false).await.unwrap();
        engine
    });

    let status_none = status_p50(&engine, status_calls);
    let mut n = 0;
    for _ in 0..WARM_UP {
        rt.block_on(checkout(&engine, n));
        n += 1;
    }
    let mut times = Vec::with_capacity(checkouts);
    for _ in 0..checkouts {
        let t = Instant::now();
        rt.block_on(checkout(&engine, n));
        times.push(u64::try_from(t.elapsed().as_nanos()).unwrap());
        n += 1;
    }
    let checkout_ns = p50(times);
    while n < pending {
        rt.block_on(checkout(&engine, n));
        n += 1;
    }
    assert_eq!(
        engine.status().unwrap().pending_offline_payments,
        pending as u64
    );
    let status_pending = status_p50(&engine, status_calls / 2);

    println!("checkout and status() from Rust (SqliteStore, system clock, one runtime worker)");
    println!("  status() p50, nothing pending: {}", us(status_none));
    println!(
        "  offline checkout (create + begin + confirm) p50 of {checkouts}: {}",
        us(checkout_ns)
    );
    println!("  status() p50, {pending} pending: {}", us(status_pending));
    println!(
        "VALUE rust_checkout_ns={checkout_ns} rust_status_ns={status_none} rust_status_pending_ns={status_pending}"
    );
    for (what, ns) in [
        ("nothing pending".to_owned(), status_none),
        (format!("{pending} pending"), status_pending),
    ] {
        println!(
            "BENCH figure=\"Rust: status() p50, {what}\" target=\"<= 20 µs (the FFI figure counts)\" \
             baseline=\"-\" value=\"{}\" verdict=info",
            us(ns)
        );
    }
    println!(
        "BENCH figure=\"Rust: offline checkout p50 (create, begin, confirm)\" target=\"-\" \
         baseline=\"-\" value=\"{}\" verdict=info",
        us(checkout_ns)
    );
    rt.block_on(engine.close_and_release());
    let _ = std::fs::remove_dir_all(&dir);
}
