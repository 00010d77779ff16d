//! Idle power benchmark: how often the engine's threads wake up while
//! nothing happens, on the real clock.
//!
//! An engine is opened on a `SqliteStore` and the system clock, with a
//! gateway in the process that answers at once (no network), automatic
//! forwarding on. Two phases of `POS_BENCH_IDLE_SECONDS` (default 60) each:
//!
//! - **online, nothing pending**: the gateway answers, the engine is online
//!   and has nothing to do. Target: no wake-up at all.
//! - **offline**: the gateway answers every probe "no route", the engine is
//!   in a network outage and probes on its back-off schedule. Target: the
//!   threads wake only for the probes: every 100 ms slice in which some
//!   engine thread ran holds a probe.
//!
//! Wake-ups are read from `/proc/self/task/<tid>/status`
//! (`voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches`) for every
//! thread but the bench's own main thread, which only samples them every
//! 100 ms. A thread that starts during the phase counts all its switches; a
//! thread that ends during it takes its last ones with it (tokio's blocking
//! threads end after 10 s idle).
//!
//! Prints one `BENCH` line per figure for `cargo xtask bench`.
//! `cargo bench -p pos-core --bench idle`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::float_arithmetic
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_core::clock::SystemClock;
use pos_core::crypto::FileKeyProvider;
use pos_core::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, PaymentLookup,
    ReceiptDelivery, ServiceStatus, StatusQuery,
};
use pos_core::lifecycle::ForwardErrorKind;
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EngineConfig, PosEngine};

/// A processor in the process: answers at once, or is unreachable.
#[derive(Debug, Default)]
struct Answering {
    unreachable: AtomicBool,
    probes: AtomicU64,
    /// Milliseconds since the bench started, of every probe.
    probe_times: std::sync::Mutex<Vec<u64>>,
    started: std::sync::OnceLock<Instant>,
}

impl Answering {
    fn refuse(&self) -> Result<(), GatewayError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(GatewayError::new(
                ForwardErrorKind::NotSent,
                "bench: no route",
            ));
        }
        Ok(())
    }
}

impl Gateway for Answering {
    fn authorize(&self, _: &AuthorizeRequest) -> Result<GatewayDecision, GatewayError> {
        self.refuse()?;
        Ok(GatewayDecision::Approved {
            processor_ref: "ref".into(),
        })
    }

    fn forward(&self, _: &ForwardRequest) -> Result<GatewayDecision, GatewayError> {
        self.refuse()?;
        Ok(GatewayDecision::Approved {
            processor_ref: "ref".into(),
        })
    }

    fn status(&self) -> Result<ServiceStatus, GatewayError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        let at = self.started.get_or_init(Instant::now).elapsed();
        self.probe_times
            .lock()
            .unwrap()
            .push(u64::try_from(at.as_millis()).unwrap_or(u64::MAX));
        self.refuse()?;
        Ok(ServiceStatus::Available)
    }

    fn payment_status(&self, _: &StatusQuery) -> Result<PaymentLookup, GatewayError> {
        self.refuse()?;
        Ok(PaymentLookup::NotFound)
    }

    fn deliver_receipt(&self, _: &ReceiptDelivery) -> Result<(), GatewayError> {
        self.refuse()
    }
}

/// Context switches of every thread of this process but `skip`, by thread id.
fn switches(skip: u32) -> BTreeMap<u32, (u64, String)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if tid == skip {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let mut n = 0;
        let mut name = String::new();
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("Name:") {
                v.trim().clone_into(&mut name);
            }
        }
        out.insert(tid, (n, name));
    }
    out
}

struct Phase {
    wakeups: u64,
    /// 100 ms slices in which some engine thread ran.
    busy_slices: u64,
    /// Of those, slices with no probe in them or the one before.
    unexplained_slices: u64,
    probes: u64,
    by_thread: BTreeMap<String, u64>,
}

/// Samples the threads every 100 ms for `length`.
fn watch(length: Duration, main_tid: u32, gateway: &Answering) -> Phase {
    const SLICE: Duration = Duration::from_millis(100);
    let start_ms = gateway
        .started
        .get_or_init(Instant::now)
        .elapsed()
        .as_millis();
    let probes_before = gateway.probes.load(Ordering::SeqCst);
    // POS_BENCH_IDLE_TRACE=1 prints every busy slice and the probes.
    let trace = std::env::var_os("POS_BENCH_IDLE_TRACE").is_some();
    let mut last = switches(main_tid);
    let mut wakeups = 0;
    let mut by_thread: BTreeMap<String, u64> = BTreeMap::new();
    let mut busy: Vec<u64> = Vec::new();
    let t0 = Instant::now();
    let mut k = 0u32;
    while t0.elapsed() < length {
        k += 1;
        let due = t0 + SLICE * k;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = switches(main_tid);
        let mut slice = 0;
        let mut who = Vec::new();
        for (tid, (n, name)) in &now {
            let before = last.get(tid).map_or(0, |(b, _)| *b);
            let d = n.saturating_sub(before);
            if d > 0 {
                slice += d;
                *by_thread.entry(name.clone()).or_default() += d;
                who.push(format!("{name}/{tid} {d}"));
            }
        }
        if slice > 0 {
            let at = gateway.started.get().unwrap().elapsed().as_millis();
            busy.push(u64::try_from(at).unwrap_or(u64::MAX));
            if trace {
                println!("    slice ending at {at} ms: {}", who.join(", "));
            }
        }
        wakeups += slice;
        last = now;
    }
    let probe_times: Vec<u64> = gateway
        .probe_times
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| u128::from(*t) >= start_ms)
        .collect();
    if trace {
        println!("    probes at (ms): {probe_times:?}");
    }
    // A slice is explained by a probe made in it or the slice before (the
    // probe's commit and its anchor land a little after it).
    let unexplained = busy
        .iter()
        .filter(|end| {
            !probe_times
                .iter()
                .any(|p| *p + 250 >= **end && *p + 100 <= **end + 100)
        })
        .count() as u64;
    Phase {
        wakeups,
        busy_slices: busy.len() as u64,
        unexplained_slices: unexplained,
        probes: gateway.probes.load(Ordering::SeqCst) - probes_before,
        by_thread,
    }
}

fn show(p: &Phase) -> String {
    let threads: Vec<String> = p
        .by_thread
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    format!(
        "{} wake-ups in {} busy 100 ms slices ({} not next to a probe), {} probes; by thread: {}",
        p.wakeups,
        p.busy_slices,
        p.unexplained_slices,
        p.probes,
        if threads.is_empty() {
            "none".to_owned()
        } else {
            threads.join(", ")
        }
    )
}

fn main() {
    let seconds: u64 = std::env::var("POS_BENCH_IDLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let length = Duration::from_secs(seconds);
    let main_tid = std::process::id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pos-core-ffi")
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pos-idle-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gateway = Arc::new(Answering::default());
    let engine = rt.block_on(async {
        let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
        let store = SqliteStore::open(&dir.join("store.db"), keys)
            .await
            .unwrap();
        let config = EngineConfig::new(dir.join("data"), "till-1", "USD").unwrap();
        PosEngine::open_with(config, Arc::new(SystemClock), Arc::new(store))
            .await
            .unwrap()
    });
    engine
        .set_gateway(Arc::clone(&gateway) as Arc<dyn Gateway>)
        .unwrap();
    // Online the way an app brings it there: the network is up, the
    // driver's probes answer healthy.
    rt.block_on(engine.report_network(true)).unwrap();
    let t = Instant::now();
    while !engine.status().unwrap().connectivity.is_online() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the engine did not come online"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the start-up work (anchors, a background verification) settle.
    std::thread::sleep(Duration::from_secs(2));
    println!("idle wake-ups over {seconds} s, real clock, SqliteStore, gateway in the process");
    let online = watch(length, main_tid, &gateway);
    println!("  online, nothing pending: {}", show(&online));

    gateway.unreachable.store(true, Ordering::SeqCst);
    rt.block_on(engine.report_network(false)).unwrap();
    // Two failed probes take it down; settle for the same 2 s.
    std::thread::sleep(Duration::from_secs(2));
    let offline = watch(length, main_tid, &gateway);
    println!("  offline (network outage): {}", show(&offline));
    println!(
        "BENCH figure=\"Idle, online, nothing pending: engine thread wake-ups in {seconds} s\" \
         target=\"0\" baseline=\"-\" value=\"{}\" verdict={}",
        online.wakeups,
        if online.wakeups == 0 { "met" } else { "missed" }
    );
    println!(
        "BENCH figure=\"Idle, offline: 100 ms slices with a wake-up, against probes, in {seconds} s\" \
         target=\"one per probe, nothing else\" baseline=\"{} probes\" value=\"{} slices ({} wake-ups), {} not next to a probe\" verdict={}",
        offline.probes,
        offline.busy_slices,
        offline.wakeups,
        offline.unexplained_slices,
        if offline.unexplained_slices == 0 { "met" } else { "missed" }
    );
    rt.block_on(engine.close_and_release());
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
