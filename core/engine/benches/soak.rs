//! Soak benchmark: resident memory while payments are taken offline,
//! forwarded and settled, batch after batch, on the real clock.
//!
//! An engine is opened on a `SqliteStore` (key file from a
//! [`FileKeyProvider`]) with automatic forwarding off, the default snapshot
//! interval ([`pos_core::store::COMPACT_EVERY`] records), the dedicated
//! terminal preset (offline payments on, no device limits) and a gateway in
//! the process that approves every forward at once. Then, for each batch of
//! `POS_BENCH_SOAK_BATCH` payments (default 1,000), up to
//! `POS_BENCH_SOAK_PAYMENTS` (default 100,000):
//!
//! 1. the network goes down; each payment of the batch is taken offline
//!    (create the order, begin, confirm with a card read);
//! 2. the network comes back (healthy probes) and `forward_now()` runs until
//!    the status counts no pending payment;
//! 3. after `POS_BENCH_SOAK_SETTLE_MS` (default 200 ms, shorter than the
//!    idle time after which the engine verifies its store in the
//!    background) the "busy" sample: `VmRSS`, `RssAnon` and `VmHWM` from
//!    `/proc/self/status`, and the heap's bytes in use (glibc's
//!    `mallinfo2`), which leave out the free pages the allocator keeps.
//!
//! At the baseline, half way, at the end and every 10,000 payments the
//! bench then waits until the process is quiet (no CPU time used over a
//! second: the background verification of the store, which starts after
//! 500 ms without a commit, is over) and reads `VmRSS` and the heap in use
//! again: the "quiet" sample, the memory the app keeps while it sits idle.
//!
//! Baseline, same run: the quiet resident memory after the first 10,000
//! settled payments (after the first half, in a run of 20,000 or fewer).
//! Figures: the quiet resident memory at the end; the growth per settled
//! payment, `(RSS at the end - RSS at the baseline) / payments since`, and
//! the same over the last half only (a one-off step in the first half is
//! not growth); target: flat, under 64 bytes per settled payment (the
//! noise of one sample). As information: the heap in use per settled
//! payment, the peak (`VmHWM`), the time of a batch (take, then forward and
//! settle) at the start and at the end, and, after the last sample, the
//! resident memory once `malloc_trim(0)` returned the allocator's free
//! pages.
//!
//! Other knobs: `POS_BENCH_DIR` (where the store goes, default the system
//! temporary folder), `POS_BENCH_KEEP` (set: keep the store).
//!
//! Prints one `BENCH` line per figure for `cargo xtask bench`.
//! `cargo bench -p pos-core --bench soak`.

// A benchmark prints its figures and stops at the first broken step.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::float_arithmetic
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{amount, heap_in_use, proc_status_kib, release_free_memory, usd, READER};
use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour, Route};
use pos_core::clock::SystemClock;
use pos_core::connectivity::ProbeOutcome;
use pos_core::crypto::FileKeyProvider;
use pos_core::engine::StaffSession;
use pos_core::gateway::Gateway;
use pos_core::lifecycle::{PaymentStatus, StaffId};
use pos_core::policy::{Policy, TenderKind};
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EngineConfig, PosEngine};

const READER_SERIAL: &str = "SN-SOAK-1";
/// Sealed card data per payment, as the store bench's default.
const CARD_BYTES: usize = 256;
/// Settled payments before the baseline sample (in a long enough run).
const BASELINE_AT: usize = 10_000;
/// Samples shown, and quiet-process samples taken, every this many payments.
const SAMPLE_EVERY: usize = 10_000;
/// Growth per settled payment still counted as flat (noise of one sample).
const FLAT_BYTES: f64 = 64.0;
/// The longest wait for the process to be quiet.
const QUIET_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug)]
struct Settings {
    payments: usize,
    batch: usize,
    settle: Duration,
    dir: PathBuf,
}

impl Settings {
    fn from_env() -> Self {
        let num = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().expect("a whole number"))
                .unwrap_or(default)
        };
        let batch = num("POS_BENCH_SOAK_BATCH", 1_000).max(1);
        // Whole batches, at least two.
        let payments = num("POS_BENCH_SOAK_PAYMENTS", 100_000).max(2 * batch) / batch * batch;
        Settings {
            payments,
            batch,
            settle: Duration::from_millis(num("POS_BENCH_SOAK_SETTLE_MS", 200) as u64),
            dir: std::env::var_os("POS_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        }
    }

    /// Settled payments at the baseline sample: 10,000, or the first half
    /// of a short run, on a batch boundary.
    fn baseline_at(&self) -> usize {
        let at = if self.payments > 2 * BASELINE_AT {
            BASELINE_AT
        } else {
            self.payments / 2
        };
        (at / self.batch).max(1) * self.batch
    }

    /// The first batch boundary at or past half the run.
    fn half_at(&self) -> usize {
        self.payments.div_ceil(2).div_ceil(self.batch) * self.batch
    }
}

/// Process CPU time (utime + stime), in ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Waits until the process used no CPU over a whole second (longer than the
/// engine waits, idle, before it verifies its store in the background; so
/// that verification has run), for at most `limit`; how long it waited.
fn wait_until_quiet(limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut before = cpu_ticks();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ticks();
        if now == before || t0.elapsed() >= limit {
            return t0.elapsed();
        }
        before = now;
    }
}

/// Bytes of the store's files (database and write-ahead log).
fn store_bytes(dir: &Path) -> u64 {
    ["store.db", "store.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Offline payments on, a permitted cashier signed in, the reader
/// remembered (while online).
async fn set_up(engine: &PosEngine) {
    engine
        .set_policy(Policy::square_terminal(usd()).with_enabled(true))
        .await
        .expect("policy");
    engine
        .sign_in(StaffSession {
            staff_id: StaffId::parse("cashier-1").expect("staff id"),
            may_take_offline_payments: true,
        })
        .expect("sign in");
    go_online(engine).await;
    engine
        .remember_reader(READER_SERIAL, READER, "1.0")
        .await
        .expect("pair the reader");
}

async fn go_online(engine: &PosEngine) {
    engine.report_network(true).await.expect("network up");
    for _ in 0..10 {
        let state = engine
            .report_probe(ProbeOutcome::Healthy)
            .await
            .expect("probe");
        if state.is_online() {
            return;
        }
    }
    panic!("the engine did not come online");
}

async fn go_offline(engine: &PosEngine) {
    let state = engine.report_network(false).await.expect("network down");
    assert!(state.outage_cause().is_some(), "offline: {state:?}");
}

/// Creates an order and takes its whole amount offline.
async fn take_offline(engine: &PosEngine, i: usize) {
    let order = engine
        .create_order(NewOrder {
            order_id: None,
            total: amount(i),
            contact: None,
        })
        .await
        .expect("create order")
        .id;
    let d = engine
        .begin_card_payment(CardPaymentRequest {
            order_id: order,
            payment_id: None,
            amount: amount(i),
            tip: None,
            behaviour: OfflineBehaviour::PreferOnline,
            tender: TenderKind::Card,
        })
        .await
        .expect("begin");
    assert!(matches!(d.route, Route::Offline { .. }), "{:?}", d.route);
    let p = engine
        .confirm_card_payment(
            &d.payment_id,
            common::vendor_card(READER_SERIAL, CARD_BYTES),
        )
        .await
        .expect("confirm");
    assert_eq!(p.status, PaymentStatus::Pending);
}

/// Forwards until nothing is pending; the payments approved.
async fn settle_all(engine: &PosEngine) -> u64 {
    let mut approved = 0;
    for _ in 0..20 {
        let report = engine.forward_now().await.expect("forward now");
        approved += report.approved;
        assert_eq!(report.declined, 0, "{report:?}");
        if engine.status().expect("status").pending_offline_payments == 0 {
            return approved;
        }
    }
    panic!(
        "still pending after 20 rounds: {}",
        engine.status().expect("status").pending_offline_payments
    );
}

/// Memory read once the process was quiet.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    rss_kib: u64,
    heap_bytes: Option<u64>,
    /// `VmHWM` then: the peak so far, the background verification's too.
    hwm_kib: u64,
    waited: Duration,
}

/// One sample, after a batch.
#[derive(Debug, Clone)]
struct Sample {
    settled: usize,
    /// Read [`Settings::settle`] after the batch settled.
    rss_kib: u64,
    /// Of which anonymous memory (the heap), not file pages.
    anon_kib: u64,
    /// The heap's bytes in use ([`heap_in_use`]).
    heap_bytes: Option<u64>,
    hwm_kib: u64,
    take: Duration,
    settle: Duration,
    store_bytes: u64,
    /// At the baseline, half way, the end and every [`SAMPLE_EVERY`]:
    /// the memory once the process was quiet.
    quiet: Option<Quiet>,
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn heap_mb(bytes: Option<u64>) -> String {
    bytes.map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes per settled payment between two samples of `f` (bytes).
fn per_payment(a: &Sample, b: &Sample, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    Some((f(b)? - f(a)?) / (b.settled - a.settled) as f64)
}

fn quiet_rss(x: &Sample) -> Option<f64> {
    x.quiet.map(|q| q.rss_kib as f64 * 1024.0)
}

fn quiet_heap(x: &Sample) -> Option<f64> {
    x.quiet?.heap_bytes.map(|b| b as f64)
}

fn busy_rss(x: &Sample) -> Option<f64> {
    Some(x.rss_kib as f64 * 1024.0)
}

fn main() {
    let s = Settings::from_env();
    let dir = s.dir.join(format!("pos-soak-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench folder");
    // The runtime the FFI layer uses: multi-threaded, one worker.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let rss_start = proc_status_kib("VmRSS");
    let gateway = Arc::new(pos_test_support::approving::Approving::default());
    let engine = rt.block_on(async {
        let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).expect("key file"));
        let store = SqliteStore::open(dir.join("store.db"), keys)
            .await
            .expect("open store");
        let mut config = EngineConfig::new(dir.join("data"), "soak-till-1", "USD").expect("config");
        config.forwarding.automatic = false;
        let engine = PosEngine::open_with(config, Arc::new(SystemClock), Arc::new(store))
            .await
            .expect("open engine");
        engine
            .set_gateway(Arc::clone(&gateway) as Arc<dyn Gateway>)
            .expect("gateway");
        set_up(&engine).await;
        engine
    });
    std::thread::sleep(s.settle);
    let rss_open = proc_status_kib("VmRSS");
    eprintln!(
        "soak bench: {} payments in batches of {}, store in {}",
        s.payments,
        s.batch,
        dir.display()
    );

    let mut samples: Vec<Sample> = Vec::new();
    let mut settled = 0usize;
    while settled < s.payments {
        let t0 = Instant::now();
        rt.block_on(async {
            go_offline(&engine).await;
            for i in settled..settled + s.batch {
                take_offline(&engine, i).await;
            }
        });
        let t1 = Instant::now();
        let approved = rt.block_on(async {
            go_online(&engine).await;
            settle_all(&engine).await
        });
        let t2 = Instant::now();
        assert_eq!(approved, s.batch as u64, "approved in this batch");
        settled += s.batch;
        std::thread::sleep(s.settle);
        let mut sample = Sample {
            settled,
            rss_kib: proc_status_kib("VmRSS"),
            anon_kib: proc_status_kib("RssAnon"),
            heap_bytes: heap_in_use(),
            hwm_kib: proc_status_kib("VmHWM"),
            take: t1 - t0,
            settle: t2 - t1,
            store_bytes: store_bytes(&dir),
            quiet: None,
        };
        if settled.is_multiple_of(SAMPLE_EVERY)
            || [s.baseline_at(), s.half_at(), s.payments].contains(&settled)
        {
            let waited = wait_until_quiet(QUIET_LIMIT);
            let quiet = Quiet {
                rss_kib: proc_status_kib("VmRSS"),
                heap_bytes: heap_in_use(),
                hwm_kib: proc_status_kib("VmHWM"),
                waited,
            };
            eprintln!(
                "soak bench: {settled} settled, VmRSS {:.1} MB, {:.1} MB once quiet ({:.0} s)",
                mb(sample.rss_kib),
                mb(quiet.rss_kib),
                started.elapsed().as_secs_f64()
            );
            sample.quiet = Some(quiet);
        }
        samples.push(sample);
    }
    let status = engine.status().expect("status");
    assert_eq!(status.pending_offline_payments, 0);
    // After the last sample, the engine still open: what is left once the
    // allocator hands its free pages back.
    let rss_trimmed = release_free_memory().then(|| proc_status_kib("VmRSS"));
    let forwards = gateway.forwards();
    rt.block_on(engine.close_and_release());
    drop(engine);
    let elapsed = started.elapsed();
    if std::env::var_os("POS_BENCH_KEEP").is_some() {
        eprintln!("soak bench: store kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report(
        &s,
        &samples,
        [rss_start, rss_open],
        rss_trimmed,
        forwards,
        elapsed,
    );
}

fn report(
    s: &Settings,
    samples: &[Sample],
    [rss_start, rss_open]: [u64; 2],
    rss_trimmed: Option<u64>,
    forwards: u64,
    elapsed: Duration,
) {
    let at = |n: usize| {
        samples
            .iter()
            .find(|x| x.settled == n)
            .expect("a sample at every batch")
    };
    let base = at(s.baseline_at());
    let half = at(s.half_at());
    let end = samples.last().expect("at least two batches");
    let (base_q, end_q) = (base.quiet.expect("quiet"), end.quiet.expect("quiet"));
    let growth = per_payment(base, end, quiet_rss).expect("quiet samples");
    let last_half = per_payment(half, end, quiet_rss).expect("quiet samples");
    let heap_growth = per_payment(base, end, quiet_heap);
    let busy_growth = per_payment(base, end, busy_rss).expect("samples");
    let hwm = samples
        .iter()
        .map(|x| x.quiet.map_or(x.hwm_kib, |q| q.hwm_kib.max(x.hwm_kib)))
        .max()
        .unwrap_or(0);
    // The time of a batch: the mean of the first and of the last 5 batches.
    let k = 5.min(samples.len() / 2).max(1);
    let mean = |xs: &[Sample], f: fn(&Sample) -> Duration| {
        xs.iter().map(f).sum::<Duration>() / u32::try_from(xs.len()).expect("few")
    };
    let (first, last) = (&samples[..k], &samples[samples.len() - k..]);
    let take = |x: &Sample| x.take;
    let settle = |x: &Sample| x.settle;
    let bytes = |b: Option<f64>| b.map_or("-".to_owned(), |b| format!("{b:.0}"));

    println!(
        "\nsoak: {} payments in batches of {}, each batch taken offline (create, begin, confirm), \
         then forwarded (gateway in the process, approves at once) until nothing is pending; \
         SqliteStore, FileKeyProvider, snapshot every {} records, real clock",
        s.payments,
        s.batch,
        pos_core::store::COMPACT_EVERY
    );
    println!(
        "  VmRSS before the engine {:.1} MB, after its open and set-up {:.1} MB; \
         'busy' columns read {} ms after each batch settled, 'quiet' once the process \
         used no CPU for a second (the background verification of the store done)",
        mb(rss_start),
        mb(rss_open),
        s.settle.as_millis()
    );
    println!(
        "\n  {:>9}  {:>13}  {:>13}  {:>13}  {:>9}  {:>22}  {:>8}  {:>9}  {:>9}",
        "settled",
        "busy VmRSS MB",
        "busy anon MB",
        "busy heap MB",
        "VmHWM MB",
        "quiet: VmRSS / heap MB",
        "take ms",
        "settle ms",
        "store MB"
    );
    for x in samples.iter().filter(|x| x.quiet.is_some()) {
        let quiet = x.quiet.map_or("-".to_owned(), |q| {
            format!(
                "{:.1} / {} ({:.0} s)",
                mb(q.rss_kib),
                heap_mb(q.heap_bytes),
                q.waited.as_secs_f64()
            )
        });
        println!(
            "  {:>9}  {:>13.1}  {:>13.1}  {:>13}  {:>9.1}  {:>22}  {:>8.0}  {:>9.0}  {:>9.1}",
            x.settled,
            mb(x.rss_kib),
            mb(x.anon_kib),
            heap_mb(x.heap_bytes),
            mb(x.hwm_kib),
            quiet,
            ms(x.take),
            ms(x.settle),
            x.store_bytes as f64 / 1e6
        );
    }
    println!(
        "\n  quiet VmRSS per settled payment: {growth:.0} bytes from {} to {} (last half, {} to {}: {last_half:.0} bytes)",
        base.settled, end.settled, half.settled, end.settled
    );
    println!(
        "  quiet heap in use per settled payment: {} bytes; busy VmRSS per settled payment: {busy_growth:.0} bytes",
        bytes(heap_growth)
    );
    if let Some(kib) = rss_trimmed {
        println!(
            "  at the end, once malloc_trim(0) returned the allocator's free pages: VmRSS {:.1} MB (from {:.1} MB)",
            mb(kib),
            mb(end_q.rss_kib)
        );
    }
    let (first_take, first_settle) = (ms(mean(first, take)), ms(mean(first, settle)));
    let (last_take, last_settle) = (ms(mean(last, take)), ms(mean(last, settle)));
    println!(
        "  batch of {}: take {first_take:.0} ms + settle {first_settle:.0} ms over the first {k}, take {last_take:.0} ms + settle {last_settle:.0} ms over the last {k}",
        s.batch,
    );
    println!(
        "  forwards answered by the gateway: {forwards}; peak VmHWM {:.1} MB; whole bench {:.0} s\n",
        mb(hwm),
        elapsed.as_secs_f64()
    );

    let met = growth < FLAT_BYTES;
    println!(
        "BENCH figure=\"Resident memory over a {}-payment soak (taken offline, forwarded, settled; read idle)\" \
         target=\"flat: no growth per payment settled\" baseline=\"after {}: {:.1} MB\" \
         value=\"{:.1} MB at {} = {growth:.0} bytes per settled payment (last half: {last_half:.0})\" verdict={}",
        s.payments,
        base.settled,
        mb(base_q.rss_kib),
        mb(end_q.rss_kib),
        end.settled,
        if met { "met" } else { "missed" }
    );
    println!(
        "BENCH figure=\"Soak: heap in use (mallinfo2) per settled payment, read idle\" target=\"-\" \
         baseline=\"after {}: {} MB\" value=\"{} MB at {} = {} bytes per settled payment\" verdict=info",
        base.settled,
        heap_mb(base_q.heap_bytes),
        heap_mb(end_q.heap_bytes),
        end.settled,
        bytes(heap_growth)
    );
    println!(
        "BENCH figure=\"Soak: time of a batch of {} (take offline + forward and settle), first {k} vs last {k} batches\" \
         target=\"-\" baseline=\"first: {first_take:.0} ms + {first_settle:.0} ms\" value=\"last: {last_take:.0} ms + {last_settle:.0} ms\" verdict=info",
        s.batch,
    );
    println!(
        "BENCH figure=\"Soak: peak memory (VmHWM) over the {}-payment soak\" target=\"-\" \
         baseline=\"after {}: {:.1} MB\" value=\"{:.1} MB\" verdict=info",
        s.payments,
        base.settled,
        mb(base_q.hwm_kib.max(base.hwm_kib)),
        mb(hwm)
    );
}
