//! Forwarding benchmark: 10,000 stored payments forwarded to the
//! simulator with 20 ms added latency per request.
//!
//! Figures, all from the same run:
//! - the ideal wall time N × latency ÷ in-flight, and the engine's ratio to
//!   it (target ≤ 1.25) and its rate (target ≥ 1,000 payments/s);
//! - a baseline: the same requests sent straight through the HTTP gateway by
//!   `in-flight` threads, no engine and no store;
//! - CPU time per forwarded payment (process user + system, the simulator's
//!   threads included, so an upper bound);
//! - the same with 5 % intermittent failures (5xx or connection closed):
//!   the slowdown, with the retries' back-off waits skipped on the virtual
//!   clock.
//!
//! `cargo bench -p pos-sim --bench forwarding [-- N]`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::float_arithmetic)]

use pos_test_support::sim as support;
use support::PaidWith;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_core::card_seal::{seal, CardBinding, PHONE_NONCE_LEN};
use pos_core::clock::Timestamp;
use pos_core::crypto::FileKeyProvider;
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::Gateway;
use pos_core::money::Money;
use pos_core::policy::EntryMode;
use pos_core::reader_trust::CARD_CONTEXT;
use pos_core::sqlite_store::SqliteStore;
use pos_core::EngineConfig;
use pos_sim::{test_cards, Fault, FaultPlan, SimConfig, Simulator};

const LATENCY: Duration = Duration::from_millis(20);
const T0: Timestamp = Timestamp(1_800_000_000_000);

use support::eur;

/// User + system CPU of this process, from /proc (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Run {
    wall: Duration,
    cpu: Duration,
    rounds: u32,
}

async fn engine_run(n: usize, in_flight: usize, faults: FaultPlan, seed: u64) -> Run {
    let sim = Simulator::start(SimConfig {
        seed,
        faults,
        ..SimConfig::default()
    })
    .unwrap();
    let dir = std::env::temp_dir().join(format!("pos-fwd-bench-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let store = SqliteStore::open(&dir.join("store.db"), keys)
        .await
        .unwrap();
    let rig = support::rig(sim.processor_key())
        .store(Arc::new(store))
        .config(EngineConfig::new(&dir, "till-1", "EUR").unwrap())
        .configure(|c| {
            if let Some(n) = std::env::var("POS_BENCH_COMPACT_EVERY")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                c.compact_every = n;
            }
            c.forwarding = ForwardingConfig {
                max_in_flight: in_flight,
                ..support::manual_forwarding(seed)
            };
        })
        .open()
        .await;
    let (engine, clock) = (&rig.engine, &rig.clock);
    let sale = rig.sale(1_250).paid_with(&test_cards()[0]);
    for _ in 0..n {
        sale.sell(engine).await;
    }
    engine
        .set_gateway(support::gateway(&sim, Duration::from_secs(5)))
        .unwrap();
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    // Back-off waits are skipped on the virtual clock: it moves to the last
    // retry time, so the next round retries every failure together.
    let rounds = support::settle(engine, clock, true, 500).await;
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let approved = sim.ledger().len();
    assert_eq!(approved, n, "every payment charged once");
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
    Run { wall, cpu, rounds }
}

/// The same requests straight through the gateway from `in_flight` threads.
fn baseline(n: usize, in_flight: usize) -> Duration {
    let sim = Simulator::start(SimConfig {
        faults: FaultPlan::none().with_latency(LATENCY),
        ..SimConfig::default()
    })
    .unwrap();
    let g = support::gateway(&sim, Duration::from_secs(5));
    let card = &test_cards()[0];
    // Each payment's card data is bound to it and signed by a certified
    // reader (sealed and signed before the clock starts).
    let reader = support::certified_reader("BENCH-READER");
    let sealed: Arc<Vec<(Vec<u8>, Vec<u8>)>> = Arc::new(
        (0..n)
            .map(|i| {
                let binding = CardBinding {
                    payment_id: format!("b-{i}"),
                    device_id: "till-1".into(),
                    amount_minor: 1_250,
                    currency: "EUR".into(),
                    reader_serial: "BENCH-READER".into(),
                    counter: i as u64,
                    phone_nonce: [0; PHONE_NONCE_LEN],
                    read_at_ms: T0.millis(),
                    entry_mode: EntryMode::Chip,
                    network: card.network,
                    last4: card.last4().into(),
                    fingerprint: support::fingerprint(card),
                };
                let blob = seal(&binding, &card.secret(), &sim.processor_key()).unwrap();
                let signature = reader.sign(CARD_CONTEXT, &blob).to_vec();
                (blob, signature)
            })
            .collect(),
    );
    let certificate = Arc::new(reader.certificate().encode());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..in_flight)
        .map(|_| {
            let g = Arc::clone(&g);
            let next = Arc::clone(&next);
            let sealed = Arc::clone(&sealed);
            let certificate = Arc::clone(&certificate);
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let r = pos_core::gateway::ForwardRequest {
                    device_id: "till-1".into(),
                    payment_id: pos_core::lifecycle::PaymentId::parse(&format!("b-{i}")).unwrap(),
                    order_id: pos_core::lifecycle::OrderId::parse("o-1").unwrap(),
                    amount: Money::new(1_250, eur()),
                    tip: None,
                    entry_mode: EntryMode::Chip,
                    network: card.network,
                    last4: card.last4().into(),
                    taken_at: T0,
                    deadline: T0,
                    attempt: 1,
                    sealed_card_data: sealed[i].0.clone(),
                    reader_certificate: Some(certificate.to_vec()),
                    reader_signature: Some(sealed[i].1.clone()),
                    online: None,
                    account: None,
                };
                g.forward(&r).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    t0.elapsed()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let in_flight = ForwardingConfig::default().max_in_flight;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ideal = LATENCY * (n as u32) / (in_flight as u32);
    println!(
        "forwarding {n} payments, {} ms latency, {in_flight} in flight",
        LATENCY.as_millis()
    );
    println!(
        "  ideal (N x latency / in flight): {:.2} s",
        ideal.as_secs_f64()
    );
    let b = baseline(n, in_flight);
    println!(
        "  baseline, gateway only ({in_flight} threads, no engine/store): {:.2} s = {:.0} /s",
        b.as_secs_f64(),
        n as f64 / b.as_secs_f64()
    );
    let run = rt.block_on(engine_run(
        n,
        in_flight,
        FaultPlan::none().with_latency(LATENCY),
        1,
    ));
    let ratio = run.wall.as_secs_f64() / ideal.as_secs_f64();
    let rate = n as f64 / run.wall.as_secs_f64();
    println!(
        "  engine (SQLite store, group commits): {:.2} s = {rate:.0} /s, {ratio:.2} x ideal, \
         {:.2} x baseline, {} round(s); CPU {:.0} us per payment",
        run.wall.as_secs_f64(),
        run.wall.as_secs_f64() / b.as_secs_f64(),
        run.rounds,
        run.cpu.as_micros() as f64 / n as f64
    );
    println!(
        "  targets: <= 1.25 x ideal: {}; >= 1,000 /s: {}",
        if ratio <= 1.25 { "PASS" } else { "FAIL" },
        if rate >= 1000.0 { "PASS" } else { "FAIL" }
    );
    let faulty = FaultPlan::none()
        .with_latency(LATENCY)
        .with_rate(Fault::ServerError, 25)
        .with_rate(Fault::Reset, 25);
    let run5 = rt.block_on(engine_run(n, in_flight, faulty, 2));
    println!(
        "  with 5 % intermittent failures: {:.2} s = {:.0} /s, slowdown {:.2} x, {} rounds; CPU {:.0} us per payment",
        run5.wall.as_secs_f64(),
        n as f64 / run5.wall.as_secs_f64(),
        run5.wall.as_secs_f64() / run.wall.as_secs_f64(),
        run5.rounds,
        run5.cpu.as_micros() as f64 / n as f64
    );
    // The lines `cargo xtask bench` gathers into its table.
    let base_ratio = b.as_secs_f64() / ideal.as_secs_f64();
    println!(
        "BENCH figure=\"forwarding {n} payments at {} ms latency, {in_flight} in flight\" \
         target=\"<= 1.25 × ideal ({:.2} s)\" baseline=\"gateway only {:.2} s = {base_ratio:.2} × ideal\" \
         value=\"{:.2} s = {ratio:.2} × ideal, {rate:.0} /s\" verdict={}",
        LATENCY.as_millis(),
        ideal.as_secs_f64(),
        b.as_secs_f64(),
        run.wall.as_secs_f64(),
        if ratio <= 1.25 { "met" } else { "missed" }
    );
    println!(
        "BENCH figure=\"forwarding with 5 % intermittent failures\" target=\"-\" \
         baseline=\"no failures {:.2} s\" value=\"{:.2} s = {:.2} × slower\" verdict=info",
        run.wall.as_secs_f64(),
        run5.wall.as_secs_f64(),
        run5.wall.as_secs_f64() / run.wall.as_secs_f64()
    );
}
