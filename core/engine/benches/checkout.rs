//! The checkout and `status()` called from Rust: the same-run baseline of
//! the Kotlin and Swift FFI benches (`bindings/kotlin/bench`,
//! `bindings/swift/bench`), which run the same steps through the bindings.
//!
//! The engine is set up as the FFI benches' is: a `SqliteStore` whose key
//! provider holds the key in memory and keeps anchors in a map (as the
//! benches' `MemoryKeys`), the system clock, the default configuration
//! (automatic forwarding on, no gateway set, so the driver never runs a
//! pass), the Square Terminal preset on (no device limits), a cashier
//! signed in, a vendor reader remembered, the network down; a runtime of
//! one worker thread, called from outside it (as the bindings call it).
//! Steps:
//!
//! 1. `status()` p50 of `POS_BENCH_STATUS_CALLS` calls (default 2,000),
//!    nothing pending; the same for two trivial calls, `forwarding_paused()`
//!    (sync) and `events_delivered()` (async, with no event pending);
//! 2. one checkout, then `status()` p50 with 1 pending (the status then
//!    holds a currency's totals, a deadline and a session);
//! 3. a whole offline checkout (`create_order`, `begin_card_payment`,
//!    `confirm_card_payment`), p50 of `POS_BENCH_CHECKOUTS` (default 1,000)
//!    after 20 untimed, and the p50 of each of the three calls;
//! 4. more checkouts, untimed, up to `POS_BENCH_PENDING` (default 10,000)
//!    pending payments, then `status()` p50 again, and `tick()` p50 (what
//!    the forwarding driver runs after each offline probe) with nothing due.
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::SystemClock;
use pos_core::crypto::{random_array, Kek, KeyError, KeyProvider, SecretKey};
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

/// A key in memory and anchors in a map, as the FFI benches' `MemoryKeys`:
/// the bench measures the engine, not a key file.
#[derive(Debug)]
struct MemoryKeys {
    key: [u8; 32],
    anchors: Mutex<HashMap<String, Vec<u8>>>,
}

impl KeyProvider for MemoryKeys {
    fn key_encryption_key(&self) -> Result<Kek, KeyError> {
        Ok(Kek::new("kek-1", SecretKey::from_bytes(self.key)))
    }
    fn keeps_anchors(&self) -> bool {
        true
    }
    fn save_anchor(&self, store_id: &str, anchor: &[u8]) -> Result<(), KeyError> {
        self.anchors
            .lock()
            .unwrap()
            .insert(store_id.to_owned(), anchor.to_vec());
        Ok(())
    }
    fn load_anchor(&self, store_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        Ok(self.anchors.lock().unwrap().get(store_id).cloned())
    }
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

fn ns_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap()
}

/// One offline checkout; the time of each of its three calls.
async fn checkout(engine: &PosEngine, n: usize) -> [u64; 3] {
    let total = Money::new(500 + i64::try_from(n % 50).unwrap() * 37, usd());
    let t = Instant::now();
    let order = engine
        .create_order(NewOrder {
            order_id: None,
            total,
            contact: None,
        })
        .await
        .unwrap();
    let create = ns_since(t);
    let t = Instant::now();
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
    let begin = ns_since(t);
    let t = Instant::now();
    engine
        .confirm_card_payment(&d.payment_id, card(n))
        .await
        .unwrap();
    [create, begin, ns_since(t)]
}

fn p50(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The p50 of `calls` calls of `f`, after `WARM_UP` untimed.
fn call_p50<T>(calls: usize, mut f: impl FnMut() -> T) -> u64 {
    for _ in 0..WARM_UP {
        std::hint::black_box(f());
    }
    p50((0..calls)
        .map(|_| {
            let t = Instant::now();
            let out = f();
            let ns = ns_since(t);
            std::hint::black_box(out);
            ns
        })
        .collect())
}

fn status_p50(engine: &PosEngine, calls: usize) -> u64 {
    call_p50(calls, || engine.status().unwrap())
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
        let keys = Arc::new(MemoryKeys {
            key: random_array().unwrap(),
            anchors: Mutex::new(HashMap::new()),
        });
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
    let sync_ns = call_p50(status_calls, || engine.forwarding_paused());
    let async_ns = call_p50(status_calls, || rt.block_on(engine.events_delivered()));
    rt.block_on(checkout(&engine, 0));
    let status_one = status_p50(&engine, status_calls);
    let mut n = 1;
    for _ in 0..WARM_UP {
        rt.block_on(checkout(&engine, n));
        n += 1;
    }
    let mut times = Vec::with_capacity(checkouts);
    let mut steps: [Vec<u64>; 3] = Default::default();
    for _ in 0..checkouts {
        let t = Instant::now();
        let step = rt.block_on(checkout(&engine, n));
        times.push(ns_since(t));
        for (v, ns) in steps.iter_mut().zip(step) {
            v.push(ns);
        }
        n += 1;
    }
    let checkout_ns = p50(times);
    let [create_ns, begin_ns, confirm_ns] = steps.map(p50);
    while n < pending {
        rt.block_on(checkout(&engine, n));
        n += 1;
    }
    assert_eq!(
        engine.status().unwrap().pending_offline_payments,
        pending as u64
    );
    let status_pending = status_p50(&engine, status_calls / 2);
    // What the driver runs on each offline pass (after a probe), with
    // nothing due: it holds the engine's write lock, and the state lock
    // while it looks for due payments.
    let tick_pending = call_p50(status_calls / 2, || rt.block_on(engine.tick()).unwrap());

    println!("checkout and status() from Rust (SqliteStore, system clock, one runtime worker)");
    println!("  status() p50, nothing pending: {}", us(status_none));
    println!("  status() p50, 1 pending: {}", us(status_one));
    println!("  forwarding_paused() p50 (sync, trivial): {}", us(sync_ns));
    println!(
        "  events_delivered() p50 (async, trivial, block_on): {}",
        us(async_ns)
    );
    println!(
        "  offline checkout (create + begin + confirm) p50 of {checkouts}: {} \
         (create {}, begin {}, confirm {})",
        us(checkout_ns),
        us(create_ns),
        us(begin_ns),
        us(confirm_ns)
    );
    println!("  status() p50, {pending} pending: {}", us(status_pending));
    println!(
        "  tick() p50 (block_on), {pending} pending, nothing due: {}",
        us(tick_pending)
    );
    println!(
        "VALUE rust_checkout_ns={checkout_ns} rust_status_ns={status_none} \
         rust_status_pending_ns={status_pending} rust_create_ns={create_ns} \
         rust_begin_ns={begin_ns} rust_confirm_ns={confirm_ns} rust_async_ns={async_ns}"
    );
    for (what, ns) in [
        ("nothing pending".to_owned(), status_none),
        ("1 pending".to_owned(), status_one),
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
         baseline=\"-\" value=\"{} (create {}, begin {}, confirm {})\" verdict=info",
        us(checkout_ns),
        us(create_ns),
        us(begin_ns),
        us(confirm_ns)
    );
    println!(
        "BENCH figure=\"Rust: tick() p50 (the driver's offline pass), {pending} pending, nothing due\" \
         target=\"-\" baseline=\"-\" value=\"{}\" verdict=info",
        us(tick_pending)
    );
    println!(
        "BENCH figure=\"Rust: a trivial call p50, sync (forwarding_paused) / async (events_delivered, block_on)\" \
         target=\"-\" baseline=\"-\" value=\"{} / {}\" verdict=info",
        us(sync_ns),
        us(async_ns)
    );
    rt.block_on(engine.close_and_release());
    let _ = std::fs::remove_dir_all(&dir);
}
