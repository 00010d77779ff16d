//! Crash test of the encrypted store and the engine: a payment the cashier
//! was told is taken must survive a crash.
//!
//! A child process takes offline card payments and forwards some of them in
//! a loop, printing `ACK <payment id> <cents>` once `confirm_card_payment`
//! has returned (the moment the cashier is told the payment is taken) and
//! `FWD <payment id> <state>` once a forwarding step has been recorded. The
//! test kills it with SIGKILL at a pseudo-random point, reopens the store
//! and checks that:
//!
//! - every acknowledged payment is there exactly once, with its amount, its
//!   order and its audit entry, and every acknowledged forwarding outcome
//!   holds (an attempt in flight at the kill is recovered as failed, by
//!   design);
//! - nothing is half-written: each stored payment came with its order's
//!   tender and its audit entry, each decision with its audit entry, at most
//!   one unacknowledged payment per kill, no payment left "forwarding";
//! - `PRAGMA integrity_check` passes, both on the file as the kill left it
//!   and after the store has been reopened and closed;
//! - the state the engine opens from its snapshot (written every 16
//!   records, so kills also land while one is written) plus the journal's
//!   tail is the state a full replay of the journal gives.
//!
//! The next child resumes on the same store, so payments, forwarding steps
//! and recoveries accumulate across kills; a fresh store is started every
//! `POS_CRASH_KILLS_PER_STORE` kills (default 20), because every open
//! verifies and replays the whole journal and one ever-growing store would
//! make the run quadratic. No extra binary: the child is this test
//! executable, re-run with `--exact child_process_entry` and
//! `POS_CRASH_CHILD=<dir>`.
//!
//! `POS_CRASH_KILLS` sets the number of kills (default 200; `cargo xtask
//! soak` runs 2,000), `POS_CRASH_SEED` the seed of the kill plan (default:
//! from the time, printed; the exact kill points also depend on timing).
//! Everything lives in a fresh folder under the system's temporary folder,
//! removed on success; on failure the store is kept and its path printed.
//!
//! A SIGKILL tests atomicity and "durable before acknowledged"; it cannot
//! test `fsync` (the kernel keeps the page cache of a killed process).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use pos_test_support as support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use pos_core::audit::{AuditKind, ForwardOutcome};
use pos_core::clock::SystemClock;
use pos_core::crypto::FileKeyProvider;
use pos_core::ledger::{Order, Tender, Write};
use pos_core::lifecycle::{
    DeclineReason, ForwardErrorKind, OrderId, PaymentEvent, PaymentId, PaymentState, PaymentStatus,
};
use pos_core::sqlite_store::SqliteStore;
use pos_core::store::Store;
use pos_core::{EngineConfig, PosEngine};
use support::workload::{open_offline, say, status_name, take_one, usd, Rng};

/// Set in the child: the folder of the store.
const CHILD_ENV: &str = "POS_CRASH_CHILD";
/// Set in the child: the cycle number (for the ids) and its seed.
const CYCLE_ENV: &str = "POS_CRASH_CYCLE";
const CHILD_SEED_ENV: &str = "POS_CRASH_CHILD_SEED";
/// For the parent: how many kills, and the seed.
const KILLS_ENV: &str = "POS_CRASH_KILLS";
const SEED_ENV: &str = "POS_CRASH_SEED";
const DEFAULT_KILLS: u64 = 200;
/// How many kills one store lives through before the next starts afresh.
/// Every open verifies and replays the whole journal, so a store that grew
/// through every kill would make the run quadratic.
const KILLS_PER_STORE_ENV: &str = "POS_CRASH_KILLS_PER_STORE";
const DEFAULT_KILLS_PER_STORE: u64 = 20;

/// A child that printed nothing for this long is stuck.
const STALL: Duration = Duration::from_secs(60);
/// A child left running on its own (its parent died) stops after this long.
const CHILD_MAX_RUN: Duration = Duration::from_secs(300);

const STORE_FILE: &str = "store.db";
const KEY_FILE: &str = "kek";
const CHILD_STDERR: &str = "child-stderr.log";

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

fn config(dir: &Path) -> EngineConfig {
    support::workload::config(dir, "till-crash")
}

fn order_id(cycle: u64, n: u64) -> String {
    format!("o{cycle:06}-{n:05}")
}

fn payment_id(cycle: u64, n: u64) -> String {
    format!("p{cycle:06}-{n:05}")
}

/// `(cycle, n)` of an id made by [`payment_id`].
fn parse_payment_id(id: &str) -> Option<(u64, u64)> {
    let (c, n) = id.strip_prefix('p')?.split_once('-')?;
    Some((c.parse().ok()?, n.parse().ok()?))
}

// ---------------------------------------------------------------------------
// The child: takes and forwards payments until it is killed
// ---------------------------------------------------------------------------

/// The child's body; does nothing in a normal test run.
#[test]
fn child_process_entry() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let cycle: u64 = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child_main(PathBuf::from(dir), cycle, seed));
}

async fn child_main(dir: PathBuf, cycle: u64, seed: u64) {
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    // The harness has printed "test child_process_entry ... " without a
    // newline: end that line so that every line below stands alone.
    say("");
    let engine = open_offline(&dir, KEY_FILE, STORE_FILE, config(&dir), CRASH_READER).await;
    let mut n: u64 = 0;
    while started.elapsed() < CHILD_MAX_RUN {
        if rng.below(3) == 0 {
            child_forward_one(&engine, &mut rng).await;
        }
        take_one(
            &engine,
            &mut rng,
            order_id(cycle, n),
            payment_id(cycle, n),
            CRASH_READER,
        )
        .await;
        n += 1;
    }
    // Only a child whose parent is gone gets here.
    std::process::exit(4);
}

/// The serial of the (vendor) reader the child takes cards with.
const CRASH_READER: &str = "SN-CRASH-1";

/// One forwarding step on a due payment: start, then (usually) an outcome.
async fn child_forward_one(engine: &PosEngine, rng: &mut Rng) {
    let due = engine.due_for_forwarding(64).unwrap();
    if due.is_empty() {
        return;
    }
    let id = due[usize::try_from(rng.below(due.len() as u64)).unwrap()].clone();
    let v = engine
        .record_forwarding(&id, PaymentEvent::StartForwarding)
        .await
        .unwrap();
    say(&format!("FWD {id} {}", status_name(v.status)));
    let event = match rng.below(10) {
        // Left in flight: the next start recovers it as failed (no answer).
        0 => return,
        1..=4 => PaymentEvent::Approved {
            processor_ref: format!("ref-{id}"),
        },
        5 => PaymentEvent::Declined {
            reason: DeclineReason::InsufficientFunds,
        },
        6 | 7 => PaymentEvent::ForwardFailed {
            error: ForwardErrorKind::NoAnswer,
            next_retry_at: None,
        },
        _ => PaymentEvent::ForwardFailed {
            error: ForwardErrorKind::NotSent,
            next_retry_at: None,
        },
    };
    let v = engine.record_forwarding(&id, event).await.unwrap();
    say(&format!("FWD {id} {}", status_name(v.status)));
}

// ---------------------------------------------------------------------------
// The parent: spawns, kills, reopens, checks
// ---------------------------------------------------------------------------

/// When a child is killed.
#[derive(Debug, Clone, Copy)]
enum KillPlan {
    /// Right after reading its `acks`-th `ACK` line, plus `extra_us`.
    AfterAcks { acks: u64, extra_us: u64 },
    /// `delay_ms` after its first `ACK` line.
    AfterFirstAck { delay_ms: u64 },
    /// `delay_ms` after it was spawned: often during its start (store and
    /// engine open, crash recovery, policy, going offline).
    FromSpawn { delay_ms: u64 },
}

impl KillPlan {
    fn pick(rng: &mut Rng, startup_ms: u64) -> KillPlan {
        match rng.below(10) {
            0..=3 => KillPlan::AfterAcks {
                acks: rng.range(1, 8),
                extra_us: if rng.below(2) == 0 {
                    0
                } else {
                    rng.range(1, 3_000)
                },
            },
            4..=7 => KillPlan::AfterFirstAck {
                delay_ms: rng.range(1, 40),
            },
            _ => KillPlan::FromSpawn {
                delay_ms: rng.range(0, startup_ms + 10),
            },
        }
    }
}

/// A complete line from the child's stdout.
struct Line {
    text: String,
}

/// What one child acknowledged before it was killed.
#[derive(Debug, Default)]
struct CycleLog {
    /// `(payment id, cents)`, in order.
    acks: Vec<(String, i64)>,
    /// `(payment id, status name)`, in order.
    fwds: Vec<(String, String)>,
    /// From spawn to the first `ACK`, if one came before the kill.
    first_ack_after: Option<Duration>,
}

/// What the parent knows was acknowledged on the current store.
#[derive(Debug, Default)]
struct Model {
    /// Acknowledged payments: id -> cents.
    acked: BTreeMap<String, i64>,
    /// How many payments each cycle acknowledged (their `n` are `0..count`).
    acked_per_cycle: BTreeMap<u64, u64>,
    /// The last acknowledged forwarding status of each payment.
    fwd: BTreeMap<String, String>,
    /// The status each payment had at the previous check.
    last_seen: BTreeMap<String, PaymentStatus>,
    fwd_lines: u64,
    /// Records in the journal at the previous check.
    records: usize,
    /// The first kill on this store.
    first_cycle: u64,
}

impl Model {
    fn record(&mut self, cycle: u64, log: &CycleLog) -> Result<(), String> {
        for (i, (id, cents)) in log.acks.iter().enumerate() {
            let expected = payment_id(cycle, i as u64);
            if *id != expected {
                return Err(format!("ACK line for {id}, expected {expected}"));
            }
            if self.acked.insert(id.clone(), *cents).is_some() {
                return Err(format!("{id} acknowledged twice"));
            }
        }
        self.acked_per_cycle.insert(cycle, log.acks.len() as u64);
        for (id, state) in &log.fwds {
            self.fwd.insert(id.clone(), state.clone());
            self.fwd_lines += 1;
        }
        Ok(())
    }
}

/// Run-wide numbers for the summary.
#[derive(Debug, Default)]
struct Totals {
    kills: u64,
    by_plan: [u64; 3],
    killed_before_first_ack: u64,
    unacked_but_stored: u64,
    recovered_in_flight: u64,
    check_time: Duration,
    child_time: Duration,
    acked: u64,
    fwd_lines: u64,
    statuses: BTreeMap<&'static str, u64>,
}

impl Totals {
    /// Adds up a store that passed all its kills, and removes it.
    fn close_store(&mut self, model: &Model, dir: &Path) {
        self.acked += model.acked.len() as u64;
        self.fwd_lines += model.fwd_lines;
        for s in model.last_seen.values() {
            *self.statuses.entry(status_name(*s)).or_default() += 1;
        }
        if !dir.as_os_str().is_empty() {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

#[test]
fn acknowledged_payments_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let number = |name: &str| {
        std::env::var(name).ok().map(|s| {
            s.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} must be a number, not {s:?}"))
        })
    };
    let kills = number(KILLS_ENV).unwrap_or(DEFAULT_KILLS);
    let per_store = number(KILLS_PER_STORE_ENV)
        .unwrap_or(DEFAULT_KILLS_PER_STORE)
        .max(1);
    let seed = number(SEED_ENV).unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_secs() ^ u64::from(t.subsec_nanos()) ^ u64::from(std::process::id())
    });
    let root = std::env::temp_dir().join(format!("pos-core-crash-{}-{}", std::process::id(), seed));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "crash test: {kills} kills, a fresh store every {per_store} kills, seed {seed} \
         ({SEED_ENV}={seed} replays the kill plan), stores under {}",
        root.display()
    );
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::new(seed);
    let mut totals = Totals::default();
    let mut startup_ms: u64 = 30;
    let started = Instant::now();
    let mut model = Model::default();
    let mut dir = PathBuf::new();
    for cycle in 0..kills {
        if cycle % per_store == 0 {
            totals.close_store(&model, &dir);
            model = Model {
                first_cycle: cycle,
                ..Model::default()
            };
            dir = root.join(format!("store-{:04}", cycle / per_store));
            std::fs::create_dir_all(&dir).unwrap();
        }
        let plan = KillPlan::pick(&mut rng, startup_ms);
        let child_seed = rng.next_u64();
        let fail = |what: String| {
            let stderr = std::fs::read_to_string(dir.join(CHILD_STDERR)).unwrap_or_default();
            format!(
                "crash test failed at kill {cycle} (seed {seed}, plan {plan:?}): {what}\n\
                 the store is kept in {}\nchild stderr:\n{stderr}",
                dir.display()
            )
        };
        let t = Instant::now();
        let log = run_child(&exe, &dir, cycle, child_seed, plan)
            .unwrap_or_else(|e| panic!("{}", fail(e)));
        totals.child_time += t.elapsed();
        totals.kills += 1;
        totals.by_plan[match plan {
            KillPlan::AfterAcks { .. } => 0,
            KillPlan::AfterFirstAck { .. } => 1,
            KillPlan::FromSpawn { .. } => 2,
        }] += 1;
        match log.first_ack_after {
            Some(d) => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                startup_ms = (startup_ms * 3 + ms) / 4;
            }
            None => totals.killed_before_first_ack += 1,
        }
        model
            .record(cycle, &log)
            .unwrap_or_else(|e| panic!("{}", fail(e)));
        let t = Instant::now();
        let found = rt
            .block_on(check_store(&dir, cycle, &mut model))
            .unwrap_or_else(|e| panic!("{}", fail(e)));
        totals.check_time += t.elapsed();
        totals.unacked_but_stored += found.unacked_but_stored;
        totals.recovered_in_flight += found.recovered_in_flight;
        if (cycle + 1) % 50 == 0 {
            println!("  {} kills, {:.1?}", cycle + 1, started.elapsed());
        }
    }
    totals.close_store(&model, &dir);
    let elapsed = started.elapsed();
    let from_snapshot = OPENED_FROM_SNAPSHOT.load(std::sync::atomic::Ordering::Relaxed);
    if totals.kills >= 20 {
        assert!(from_snapshot > 0, "no reopen started from a snapshot");
    }
    println!(
        "crash test passed: {} kills in {:.1?} (children {:.1?}, checks {:.1?}); \
         {from_snapshot} reopens started from a snapshot; \
         plans after-acks/after-first-ack/from-spawn {:?}, {} killed before their first ACK; \
         {} payments acknowledged, {} forwarding steps acknowledged, \
         {} payments stored but not acknowledged, {} attempts in flight recovered; \
         final statuses {:?}",
        totals.kills,
        elapsed,
        totals.child_time,
        totals.check_time,
        totals.by_plan,
        totals.killed_before_first_ack,
        totals.acked,
        totals.fwd_lines,
        totals.unacked_but_stored,
        totals.recovered_in_flight,
        totals.statuses,
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// Spawns a child on `dir`, kills it as `plan` says, and returns what it
/// acknowledged (every complete line it wrote before it died).
fn run_child(
    exe: &Path,
    dir: &Path,
    cycle: u64,
    seed: u64,
    plan: KillPlan,
) -> Result<CycleLog, String> {
    let stderr = std::fs::File::create(dir.join(CHILD_STDERR)).map_err(|e| e.to_string())?;
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(CYCLE_ENV, cycle.to_string())
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| format!("cannot spawn the child: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<Line>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut text = String::new();
            match r.read_line(&mut text) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill was never acknowledged: dropped.
                Ok(_) if !text.ends_with('\n') => break,
                Ok(_) => {
                    text.pop();
                    if tx.send(Line { text }).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut log = CycleLog::default();
    let waited = wait_for_kill_point(&rx, &mut log, spawned, plan);
    // SIGKILL on Unix.
    let _ = child.kill();
    let status = child
        .wait()
        .map_err(|e| format!("wait for the child: {e}"))?;
    let _ = reader.join();
    // Whatever reached the pipe before the kill was shown to the cashier.
    for line in rx.try_iter() {
        take_line(&mut log, &line, spawned)?;
    }
    waited?;
    check_killed(&mut child, status)?;
    Ok(log)
}

/// Reads the child's lines until the kill point of `plan`.
fn wait_for_kill_point(
    rx: &mpsc::Receiver<Line>,
    log: &mut CycleLog,
    spawned: Instant,
    plan: KillPlan,
) -> Result<(), String> {
    let mut deadline = match plan {
        KillPlan::FromSpawn { delay_ms } => Some(spawned + Duration::from_millis(delay_ms)),
        _ => None,
    };
    loop {
        if let KillPlan::AfterAcks { acks, extra_us } = plan {
            if log.acks.len() as u64 >= acks {
                let until = Instant::now() + Duration::from_micros(extra_us);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                return Ok(());
            }
        }
        let wait = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(());
                }
                d - now
            }
            None => STALL,
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let first = log.acks.is_empty();
                take_line(log, &line, spawned)?;
                if let (KillPlan::AfterFirstAck { delay_ms }, true, false) =
                    (plan, first, log.acks.is_empty())
                {
                    deadline = Some(Instant::now() + Duration::from_millis(delay_ms));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if deadline.is_some() => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("the child printed nothing for {STALL:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the child ended before it was killed".into())
            }
        }
    }
}

fn take_line(log: &mut CycleLog, line: &Line, spawned: Instant) -> Result<(), String> {
    let parts: Vec<&str> = line.text.split(' ').collect();
    match parts.as_slice() {
        ["ACK", id, cents] => {
            let cents = cents
                .parse()
                .map_err(|_| format!("bad ACK line {:?}", line.text))?;
            if log.first_ack_after.is_none() {
                log.first_ack_after = Some(spawned.elapsed());
            }
            log.acks.push(((*id).to_owned(), cents));
        }
        ["FWD", id, state] => log.fwds.push(((*id).to_owned(), (*state).to_owned())),
        // An acknowledgement glued to other output would be lost: refuse it.
        _ if line.text.contains("ACK ") || line.text.contains("FWD ") => {
            return Err(format!("unparsable line from the child: {:?}", line.text));
        }
        // The test harness's own lines.
        _ => {}
    }
    Ok(())
}

/// The child must have died of the kill, not of its own.
fn check_killed(child: &mut Child, status: std::process::ExitStatus) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) {
            return Ok(());
        }
    }
    #[cfg(not(unix))]
    {
        if !status.success() {
            return Ok(());
        }
    }
    Err(format!(
        "the child {} ended by itself before the kill: {status}",
        child.id()
    ))
}

/// What a check found beyond the acknowledged payments.
struct Found {
    unacked_but_stored: u64,
    recovered_in_flight: u64,
}

/// Reopens the store after a kill and checks everything (see the module docs).
async fn check_store(dir: &Path, cycle: u64, model: &mut Model) -> Result<Found, String> {
    let db = dir.join(STORE_FILE);
    if !db.exists() {
        // Killed before the store was first created: nothing was acknowledged.
        if model.acked.is_empty() && model.fwd.is_empty() {
            return Ok(Found {
                unacked_but_stored: 0,
                recovered_in_flight: 0,
            });
        }
        return Err("the store file is gone".into());
    }
    // The file as the kill left it (with its write-ahead log).
    integrity_check(&db)
        .await
        .map_err(|e| format!("after the kill, before reopening: {e}"))?;

    let provider = Arc::new(
        FileKeyProvider::open_or_create(dir.join(KEY_FILE))
            .map_err(|e| format!("the key file does not open after the kill: {e}"))?,
    );
    let store = Arc::new(
        SqliteStore::open(&db, provider)
            .await
            .map_err(|e| format!("the store does not reopen after the kill: {e}"))?,
    );
    // What the open verified: the snapshot (rebuilt into a ledger while the
    // journal after it was verified) and the records after it, as the
    // engine's open takes them; it must rebuild what a full replay of the
    // journal rebuilds.
    let (mut fast, tail) = store
        .open_state()
        .await
        .map_err(|e| format!("the snapshot and tail do not load: {e}"))?;
    let in_journal = store.records_since_compaction().unwrap_or(0);
    for w in tail {
        fast.apply(w)
            .map_err(|e| format!("the tail does not apply to the snapshot: {e}"))?;
    }
    // The journal as the kill left it (the engine's open then records the
    // attempts in flight as failed).
    let opened = match store.load().await {
        Ok(records) => PosEngine::open_with(config(dir), Arc::new(SystemClock), store.clone())
            .await
            .map(|engine| (records, engine))
            .map_err(|e| format!("the engine does not open after the kill: {e}")),
        Err(e) => Err(format!("the reopened store does not load: {e}")),
    };
    let result = match opened {
        Ok((records, engine)) => {
            if (in_journal as usize) < records.len() {
                OPENED_FROM_SNAPSHOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let r = match ledger_of(records.clone()) {
                Ok(full) if full == fast => check_engine(&engine, &records, cycle, model),
                Ok(_) => Err("the snapshot and tail rebuild another state than the journal".into()),
                Err(e) => Err(e),
            };
            engine.close();
            r
        }
        Err(e) => Err(e),
    };
    store.close().await;
    let found = result?;
    integrity_check(&db)
        .await
        .map_err(|e| format!("after reopening and closing: {e}"))?;
    Ok(found)
}

/// Reopens whose engine started from a snapshot rather than the genesis.
static OPENED_FROM_SNAPSHOT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn ledger_of(records: Vec<Write>) -> Result<pos_core::ledger::Ledger, String> {
    let mut l = pos_core::ledger::Ledger::default();
    for w in records {
        l.apply(w).map_err(|e| e.to_string())?;
    }
    Ok(l)
}

/// Checks the reopened engine against what was acknowledged and against the
/// journal as the kill left it (`records`, read before the engine's open).
fn check_engine(
    engine: &PosEngine,
    records: &[Write],
    cycle: u64,
    model: &mut Model,
) -> Result<Found, String> {
    let listed = engine.list_payments().map_err(|e| e.to_string())?;
    let mut views = BTreeMap::new();
    for v in listed {
        let id = v.id.as_str().to_owned();
        if views.insert(id.clone(), v).is_some() {
            return Err(format!("{id} is listed twice"));
        }
    }

    // Every acknowledged payment, with what was acknowledged about it.
    for (id, cents) in &model.acked {
        let v = views
            .get(id)
            .ok_or_else(|| format!("acknowledged payment {id} is missing"))?;
        if v.amount != usd(*cents) {
            return Err(format!(
                "{id}: amount {} where {cents} was acknowledged",
                v.amount
            ));
        }
        let (c, n) = parse_payment_id(id).unwrap();
        if v.order_id.as_str() != order_id(c, n) {
            return Err(format!("{id} belongs to order {}", v.order_id));
        }
    }
    for (id, state) in &model.fwd {
        let v = views
            .get(id)
            .ok_or_else(|| format!("forwarded payment {id} is missing"))?;
        let ok = match state.as_str() {
            "Approved" => v.status == PaymentStatus::Approved,
            "Declined" => v.status == PaymentStatus::Declined,
            // An attempt acknowledged as started or failed never goes back
            // to pending; one in flight at the kill was recovered as failed.
            "Forwarding" | "FailedToForward" => {
                !matches!(v.status, PaymentStatus::Pending | PaymentStatus::Forwarding)
            }
            other => return Err(format!("unexpected FWD state {other} for {id}")),
        };
        if !ok {
            return Err(format!(
                "{id} was acknowledged {state} and is now {:?}",
                v.state
            ));
        }
    }

    // Only payments of the children, contiguous per cycle: at most one more
    // than each cycle acknowledged (the one whose ACK the kill cut off).
    let mut per_cycle: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for id in views.keys() {
        let (c, n) =
            parse_payment_id(id).ok_or_else(|| format!("a payment no child took: {id}"))?;
        per_cycle.entry(c).or_default().insert(n);
    }
    let mut unacked_but_stored = 0;
    for c in model.first_cycle..=cycle {
        let acked = model.acked_per_cycle.get(&c).copied().unwrap_or(0);
        let ns = per_cycle.remove(&c).unwrap_or_default();
        let count = ns.len() as u64;
        let contiguous = ns.iter().copied().eq(0..count);
        if !contiguous || count < acked || count > acked + 1 {
            return Err(format!(
                "kill {c}: {acked} payments acknowledged, stored {ns:?}"
            ));
        }
        if c == cycle {
            unacked_but_stored = count - acked;
        }
    }
    if let Some((c, _)) = per_cycle.into_iter().next() {
        return Err(format!("payments of a kill to come ({c})"));
    }

    // Nothing half-written: read the journal itself.
    let mut orders: BTreeMap<OrderId, Order> = BTreeMap::new();
    let mut pending_writes: BTreeMap<PaymentId, u32> = BTreeMap::new();
    let mut taken: BTreeMap<PaymentId, u32> = BTreeMap::new();
    let mut approvals: BTreeMap<PaymentId, u32> = BTreeMap::new();
    let mut declines: BTreeMap<PaymentId, u32> = BTreeMap::new();
    let mut last_state: BTreeMap<PaymentId, PaymentStatus> = BTreeMap::new();
    for w in records {
        match w {
            Write::Order(o) => {
                orders.insert(o.id.clone(), o.clone());
            }
            Write::Payment(p) => {
                if p.state == PaymentState::Pending {
                    *pending_writes.entry(p.id.clone()).or_default() += 1;
                }
                last_state.insert(p.id.clone(), p.state.status());
            }
            Write::Audit(e) => match &e.kind {
                AuditKind::OfflinePaymentTaken { payment_id, .. } => {
                    *taken.entry(payment_id.clone()).or_default() += 1;
                }
                AuditKind::ForwardAttempt {
                    payment_id,
                    outcome: ForwardOutcome::Approved { .. },
                    ..
                } => *approvals.entry(payment_id.clone()).or_default() += 1,
                AuditKind::ForwardAttempt {
                    payment_id,
                    outcome: ForwardOutcome::Declined { .. },
                    ..
                } => *declines.entry(payment_id.clone()).or_default() += 1,
                _ => {}
            },
            _ => {}
        }
    }
    // The attempts in flight at the kill.
    let in_flight: BTreeSet<PaymentId> = last_state
        .into_iter()
        .filter(|(_, s)| *s == PaymentStatus::Forwarding)
        .map(|(id, _)| id)
        .collect();
    for (id, v) in &views {
        let pid = &v.id;
        let once = |m: &BTreeMap<PaymentId, u32>| m.get(pid).copied().unwrap_or(0);
        if once(&pending_writes) != 1 {
            return Err(format!(
                "{id} was stored as taken {} times",
                once(&pending_writes)
            ));
        }
        if once(&taken) != 1 {
            return Err(format!("{id} has {} 'taken' audit entries", once(&taken)));
        }
        let approved = u32::from(v.status == PaymentStatus::Approved);
        let declined = u32::from(v.status == PaymentStatus::Declined);
        if once(&approvals) != approved || once(&declines) != declined {
            return Err(format!(
                "{id} is {:?} with {} approval and {} decline audit entries",
                v.status,
                once(&approvals),
                once(&declines)
            ));
        }
        if v.status == PaymentStatus::Forwarding {
            return Err(format!("{id} is still forwarding after the reopen"));
        }
        let order = orders
            .get(&v.order_id)
            .ok_or_else(|| format!("{id}: its order {} is missing", v.order_id))?;
        let cards: Vec<&Tender> = order
            .tenders
            .iter()
            .filter(|t| matches!(t, Tender::OfflineCard { payment_id, .. } if payment_id == pid))
            .collect();
        if cards.len() != 1 || order.tenders.len() != 1 || cards[0].amount() != v.amount {
            return Err(format!("{id}: its order has tenders {:?}", order.tenders));
        }
        if order.total != v.amount {
            return Err(format!(
                "{id}: order total {} for {}",
                order.total, v.amount
            ));
        }
        // Statuses only move forward between checks; final ones never change.
        if let Some(before) = model.last_seen.get(id) {
            let rank = |s: PaymentStatus| match s {
                PaymentStatus::Pending => 0,
                PaymentStatus::Forwarding | PaymentStatus::FailedToForward => 1,
                _ => 2,
            };
            let moved_back = rank(v.status) < rank(*before);
            let final_changed = before.is_final() && *before != v.status;
            if moved_back || final_changed {
                return Err(format!("{id} went from {before:?} to {:?}", v.status));
            }
        }
        if in_flight.contains(pid)
            && !matches!(
                &v.state,
                PaymentState::FailedToForward {
                    last_error: ForwardErrorKind::NoAnswer,
                    ..
                }
            )
        {
            return Err(format!(
                "{id} was in flight at the kill and is now {:?}",
                v.state
            ));
        }
    }
    // Every tender on every order points at a stored payment.
    for o in orders.values() {
        for t in &o.tenders {
            if let Tender::OfflineCard { payment_id, .. } = t {
                if !views.contains_key(payment_id.as_str()) {
                    return Err(format!(
                        "order {} holds payment {payment_id}, which is not stored",
                        o.id
                    ));
                }
            }
        }
    }
    // The journal only grows from one kill to the next.
    if records.len() < model.records {
        return Err(format!(
            "the journal shrank from {} to {} records",
            model.records,
            records.len()
        ));
    }
    model.records = records.len();
    for (id, v) in views {
        model.last_seen.insert(id, v.status);
    }
    Ok(Found {
        unacked_but_stored,
        recovered_in_flight: in_flight.len() as u64,
    })
}

/// `PRAGMA integrity_check` on a read-only connection of its own.
async fn integrity_check(db: &Path) -> Result<(), String> {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| format!("cannot open the file for integrity_check: {e}"))?;
    let rows: Result<Vec<String>, _> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await;
    let _ = conn.close().await;
    let rows = rows.map_err(|e| format!("integrity_check failed to run: {e}"))?;
    if rows != ["ok"] {
        return Err(format!("integrity_check: {}", rows.join("; ")));
    }
    Ok(())
}
