//! The crash test extended to forwarding: a child process takes
//! offline payments and forwards them to the simulator (which runs in this,
//! the parent, process, so its ledger survives the kills), printing
//! `ACK <payment id> <cents>` once each payment is confirmed to the cashier.
//! The parent SIGKILLs it at seeded random points — during captures,
//! group commits and requests in flight — and starts the next child on the
//! same store. At the end the parent opens the store on a virtual clock,
//! forwards what is left, and checks: every acknowledged payment is stored
//! once and approved, the simulator holds exactly one charge for it with the
//! same reference, and no charge the device does not know.
//!
//! `POS_FWD_CRASH_KILLS` sets the number of kills (default 40).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use pos_test_support::sim as support;
use support::{PaidWith, Sale};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pos_core::card_seal::ProcessorKey;
use pos_core::clock::{Clock, SystemClock, VirtualClock};
use pos_core::crypto::FileKeyProvider;
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::StaticToken;
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::lifecycle::PaymentState;
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EngineConfig, PosEngine};
use pos_sim::{test_cards, ChargeOutcome, Fault, FaultPlan, SimConfig, Simulator};

const CHILD_ENV: &str = "POS_FWD_CRASH_CHILD";

async fn open(dir: &Path, clock: Arc<dyn Clock>, base_url: &str, token: &str) -> PosEngine {
    let keys = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).unwrap());
    let store = SqliteStore::open(&dir.join("store.db"), keys)
        .await
        .unwrap();
    let mut config = EngineConfig::new(dir, "till-crash", "EUR").unwrap();
    config.forwarding = ForwardingConfig {
        max_in_flight: 8,
        automatic: false,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        jitter_seed: Some(3),
    };
    let engine = PosEngine::open_with(config, clock, Arc::new(store))
        .await
        .unwrap();
    let mut g = HttpGatewayConfig::new(base_url);
    g.allow_plain_http = true;
    g.request_timeout = Duration::from_millis(500);
    engine
        .set_gateway(Arc::new(
            HttpGateway::new(g, Arc::new(StaticToken(token.into()))).unwrap(),
        ))
        .unwrap();
    engine
}

/// The child: take and forward until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // Not a child: nothing to do in the normal run.
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (dir, base_url, token, key_hex, cycle) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let engine = open(Path::new(dir), Arc::new(SystemClock), base_url, token).await;
    let reader = support::prepare(&engine, ProcessorKey(key)).await;
    let card = &test_cards()[0];
    let mut out = std::io::stdout();
    for i in 0u64.. {
        for j in 0..3 {
            let cents = 100 + ((i * 3 + j) % 97) as i64;
            let sale = Sale::of(support::euros(cents)).reader(&reader);
            let sale = sale.paid_with(card).payment_id(format!("c{cycle}-{i}-{j}"));
            let id = sale.sell(&engine).await.id;
            writeln!(out, "ACK {id} {cents}").unwrap();
            out.flush().unwrap();
        }
        engine.forward_now().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_forwarding_lose_nothing_and_charge_once() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills: u64 = std::env::var("POS_FWD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // Faults at a low rate make answers go missing around the kills too.
    let sim = Simulator::start(SimConfig {
        seed: 9,
        faults: FaultPlan::none()
            .with_latency(Duration::from_millis(3))
            .with_rate(Fault::DropAfterCommit, 30)
            .with_rate(Fault::ServerError, 30),
        ..SimConfig::default()
    })
    .unwrap();
    let dir: PathBuf = std::env::temp_dir().join(format!("pos-fwd-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_hex: String = sim
        .processor_key()
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let mut rng = 0x5EED_u64;
    for cycle in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!(
                    "{}|{}|{}|{key_hex}|{cycle}",
                    dir.display(),
                    sim.base_url(),
                    sim.token()
                ),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill after a seeded number of acknowledged payments (1-12), so
        // kills land at every point of the capture/forward loop.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let after = 1 + rng % 12;
        let mut seen = 0;
        while seen < after {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    // libtest prints "test child_process_entry ... " without a
                    // newline before the child's first line: find the marker.
                    if let Some(rest) = line.find("ACK ").map(|i| &line[i + 4..]) {
                        let (id, cents) = rest.split_once(' ').unwrap();
                        acked.insert(id.to_owned(), cents.parse().unwrap());
                        seen += 1;
                    }
                }
                Err(e) => panic!("child {cycle} stalled: {e}"),
            }
        }
        // A further seeded 0-14 ms lets the kill land inside a forwarding
        // round (group commit, requests in flight) as often as in a capture.
        std::thread::sleep(Duration::from_millis((rng >> 8) % 15));
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines printed before the kill count too.
        reader.join().unwrap();
        while let Ok(line) = rx.try_recv() {
            if let Some(rest) = line.find("ACK ").map(|i| &line[i + 4..]) {
                let (id, cents) = rest.split_once(' ').unwrap();
                acked.insert(id.to_owned(), cents.parse().unwrap());
            }
        }
    }

    // Recovery: open on a virtual clock, forward what is left.
    let clock = VirtualClock::new(SystemClock.wall_now());
    let engine = open(&dir, Arc::new(clock.clone()), &sim.base_url(), &sim.token()).await;
    sim.set_faults(FaultPlan::none());
    for _ in 0..50 {
        engine.forward_now().await.unwrap();
        if engine
            .list_payments()
            .unwrap()
            .iter()
            .all(|p| p.state.is_final())
        {
            break;
        }
        clock.advance(Duration::from_secs(1));
    }
    let payments = engine.list_payments().unwrap();
    let stored: BTreeSet<String> = payments.iter().map(|p| p.id.as_str().to_owned()).collect();
    assert_eq!(stored.len(), payments.len(), "no payment stored twice");
    let unacked: Vec<&String> = stored
        .iter()
        .filter(|id| !acked.contains_key(*id))
        .collect();
    assert!(
        unacked.len() as u64 <= kills,
        "{} unacknowledged: {unacked:?}",
        unacked.len()
    );
    assert!(
        payments.len() as u64 <= acked.len() as u64 + kills,
        "at most one unacknowledged payment per kill"
    );
    let ledger: BTreeMap<String, _> = sim
        .ledger()
        .into_iter()
        .map(|c| (c.payment_id.clone(), c))
        .collect();
    for (id, cents) in &acked {
        assert!(stored.contains(id), "acknowledged payment {id} lost");
        let c = ledger
            .get(id)
            .unwrap_or_else(|| panic!("{id} never charged"));
        assert_eq!(c.amount, *cents);
    }
    for p in &payments {
        let c = ledger
            .get(p.id.as_str())
            .unwrap_or_else(|| panic!("{} stored but never charged", p.id));
        match (&p.state, &c.outcome) {
            (
                PaymentState::Approved { processor_ref, .. },
                ChargeOutcome::Approved { processor_ref: r },
            ) => {
                assert_eq!(processor_ref, r, "{}: one charge, its reference", p.id)
            }
            (s, o) => panic!("{}: device {s:?} vs processor {o:?}", p.id),
        }
    }
    for id in ledger.keys() {
        assert!(
            stored.contains(id),
            "the processor charged {id}, unknown to the device"
        );
    }
    let replays = sim.stats().idempotent_replays;
    println!(
        "{kills} kills: {} acknowledged, {} stored, {} charges, {replays} answers replayed after lost ones",
        acked.len(),
        payments.len(),
        ledger.len()
    );
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
}
