//! Store benchmark: durable offline capture on the encrypted SQLite store,
//! measured in the same run against a raw-SQLite baseline (see
//! `docs/benchmarks.md`, section "Store").
//!
//! ```sh
//! cargo bench -p pos-core --bench store
//! ```
//!
//! Prints, with PASS/FAIL against each target:
//!
//! 1. Throughput and p50/p99 latency of a durable offline capture
//!    (`begin_card_payment` + `confirm_card_payment` on a `SqliteStore`-backed
//!    engine; `confirm` alone is shown too), against a baseline of raw SQLite
//!    through the same driver (sqlx): one plain `INSERT` of the same number of
//!    bytes per transaction, same WAL / `synchronous=FULL` settings, same
//!    folder. Target: at least 0.8 of the baseline's throughput.
//! 2. Process CPU time per capture (utime + stime from `/proc/self/stat`, so
//!    the time spent waiting for fsync is not counted). Target: under 100 µs.
//! 3. Opening a store that holds 10,000 pending payments and reporting the
//!    status (counts, totals, time left), in a fresh child process (this
//!    executable re-run with `POS_BENCH_STORE_CHILD` set), which reports the
//!    elapsed time, its peak resident memory (`VmHWM`) and its resident
//!    memory (`VmRSS`) after the open engine has been idle for a moment.
//!    Targets: under 100 ms, under 40 MB peak, at most 30 MB idle.
//! 4. Opening a store of `POS_BENCH_HISTORY` payments of which all but
//!    10,000 are settled, after a clean shutdown (the offline session
//!    ended, the settled history beyond what the engine keeps in memory
//!    archived, a snapshot), against the open of the 10,000 pending alone
//!    after a clean shutdown (3), opened in at least 5 pairs (one right
//!    after the other, alternating which goes first), both stores flushed
//!    to the disk first: history should not slow the open (target: the
//!    median of the pairs' ratios at most 1.25).
//!
//! The variants run in interleaved rounds (baseline, engine, engine without
//! anchors, rotating) so that load from other processes on a shared machine
//! hits each of them alike. Everything is fsync-bound: the figures depend on
//! the disk, and the machine context is printed with them.
//!
//! Knobs (environment): `POS_BENCH_CAPTURES` (per variant, default 1000),
//! `POS_BENCH_ROUNDS` (default 10), `POS_BENCH_PENDING` (default 10000),
//! `POS_BENCH_OPENS` (child runs, default 3), `POS_BENCH_HISTORY` (payments
//! in the store of (4), default 100000; 0 skips it), `POS_BENCH_CARD_BYTES` (sealed
//! card data per payment, default 256), `POS_BENCH_BUILD` (`copy`, the
//! default, or `engine`: see [`build_pending_store`]), `POS_BENCH_DIR`
//! (where the files go, default the system temporary folder),
//! `POS_BENCH_ANCHORED_ONLY` (set: only the anchored engine capture runs,
//! for a profiler; its figures are then the only meaningful ones),
//! `POS_BENCH_WORST_ONLY` (set: open only the worst-case layout, and keep
//! it so with `POS_BENCH_KEEP`), `POS_BENCH_KEEP` (set: keep the files, for example to profile the child
//! with `POS_BENCH_STORE_CHILD=<folder>/pending`).

// A benchmark prints its figures and stops at the first broken step.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::float_arithmetic
)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{amount, proc_status_kib, release_free_memory, usd, READER};
use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour, Route};
use pos_core::clock::SystemClock;
use pos_core::crypto::{fill_random, FileKeyProvider, Kek, KeyError, KeyProvider};
use pos_core::engine::StaffSession;
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{OrderId, PaymentStatus, StaffId};
use pos_core::policy::{Policy, TenderKind};
use pos_core::sqlite_store::SqliteStore;
use pos_core::store::{MemoryStore, Store};
use pos_core::{EngineConfig, PosEngine};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

/// Set in the child process: the folder of the store to open.
const CHILD_ENV: &str = "POS_BENCH_STORE_CHILD";

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which is 100 on every
/// Linux ABI this library targets (the value `getconf CLK_TCK` prints).
const USER_HZ: u64 = 100;

const TARGET_RATIO_PERMILLE: u128 = 800;
const TARGET_CPU_NS: u64 = 100_000;
const TARGET_OPEN_NS: u64 = 100_000_000;
/// 40 MB, decimal (the stricter reading), in KiB as `VmHWM` reports it.
const TARGET_HWM_KIB: u64 = 40_000_000 / 1024;

/// Captures run untimed on each engine before the rounds (and used to
/// measure the bytes a capture writes).
const WARM_UP: usize = 20;
/// Rows per `Store::apply` when copying the 10,000-payment store.
const COPY_BATCH: usize = 2_000;
/// How long the child lets the open engine sit idle before reading its
/// resident memory.
const IDLE_AFTER_OPEN: Duration = Duration::from_millis(500);
/// 30 MB, decimal, in KiB as `VmRSS` reports it.
const TARGET_RSS_KIB: u64 = 30_000_000 / 1024;
/// Records after the snapshot in the worst-case layout.
const TAIL_AFTER_SNAPSHOT: usize = pos_core::store::COMPACT_EVERY as usize - 1;

fn ledger_of(records: &[pos_core::ledger::Write]) -> pos_core::ledger::Ledger {
    let mut l = pos_core::ledger::Ledger::default();
    for w in records {
        l.apply(w.clone()).expect("apply");
    }
    l
}

/// Writes every file of the store in `dir` to the disk, so that the
/// kernel's writeback of what a build just wrote (hundreds of MB for the
/// history store) does not run during the opens that are timed.
fn flush_to_disk(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("the store folder") {
        let path = entry.expect("a store file").path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .expect("flush a store file");
        }
    }
}

/// Rewrites the snapshot of the store in `dir` at its end (a clean
/// shutdown, `compact_store`), or removes it (`None`: journal only).
/// With a snapshot at the end, also what taking it cost: the state copied
/// out of the ledger (`Ledger::snapshot_writes`, under the engine's lock in
/// the engine), then encoded, sealed and written (`Store::compact`).
async fn relayout(dir: &Path, snapshot_at_end: bool) -> Option<(Duration, Duration)> {
    let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).expect("key file"));
    let sqlite = SqliteStore::open(dir.join("store.db"), provider)
        .await
        .expect("open store");
    if snapshot_at_end {
        let ledger = ledger_of(&sqlite.load().await.expect("load"));
        let t0 = Instant::now();
        let state = ledger.snapshot_writes().expect("snapshot");
        let copied = t0.elapsed();
        let t1 = Instant::now();
        sqlite.compact(&state).await.expect("snapshot");
        let written = t1.elapsed();
        sqlite.close().await;
        Some((copied, written))
    } else {
        sqlite.close().await;
        let mut c = SqliteConnectOptions::new()
            .filename(dir.join("store.db"))
            .connect()
            .await
            .expect("raw connection");
        sqlx::query("DELETE FROM snapshot")
            .execute(&mut c)
            .await
            .expect("remove the snapshot");
        c.close().await.expect("close");
        None
    }
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let settings = BenchSettings::from_env();
    let root = settings
        .dir
        .join(format!("pos-core-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("create the bench folder");
    let result = runtime().block_on(run(&settings, &root));
    if std::env::var_os("POS_BENCH_KEEP").is_some() {
        eprintln!("store bench: files kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    print!("{result}");
}

/// The runtime the FFI layer uses: multi-threaded, one worker.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[derive(Debug)]
struct BenchSettings {
    captures: usize,
    rounds: usize,
    pending: usize,
    /// Payments in the history store (all settled but `pending`); 0: no
    /// history store.
    history: usize,
    opens: usize,
    card_bytes: usize,
    build_with_engine: bool,
    /// Only the anchored engine capture runs (to profile it alone).
    anchored_only: bool,
    dir: PathBuf,
}

impl BenchSettings {
    fn from_env() -> Self {
        let num = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().expect("a whole number"))
                .unwrap_or(default)
        };
        let rounds = num("POS_BENCH_ROUNDS", 10).max(1);
        BenchSettings {
            captures: num("POS_BENCH_CAPTURES", 1000).max(rounds),
            rounds,
            pending: num("POS_BENCH_PENDING", 10_000).max(1),
            history: num("POS_BENCH_HISTORY", 100_000),
            opens: num("POS_BENCH_OPENS", 3).max(1),
            card_bytes: num("POS_BENCH_CARD_BYTES", 256).clamp(1, 16 * 1024),
            build_with_engine: std::env::var("POS_BENCH_BUILD").is_ok_and(|v| v == "engine"),
            anchored_only: std::env::var_os("POS_BENCH_ANCHORED_ONLY").is_some(),
            dir: std::env::var_os("POS_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        }
    }
}

// ---------------------------------------------------------------------------
// The engine set-up shared by every phase
// ---------------------------------------------------------------------------

const READER_SERIAL: &str = "SN-BENCH-1";

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir, "bench-till-1", "USD").expect("config");
    if let Some(n) = std::env::var("POS_BENCH_COMPACT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.compact_every = n;
    }
    c
}

/// The dedicated-terminal preset: a 24-hour acceptance window and no device
/// limits, so 10,000 payments can be pending at once.
fn policy() -> Policy {
    Policy::square_terminal(usd()).with_enabled(true)
}

/// Offline payments on, a permitted cashier signed in, the network down.
async fn go_offline(engine: &PosEngine) {
    engine.set_policy(policy()).await.expect("policy");
    engine
        .sign_in(StaffSession {
            staff_id: StaffId::parse("cashier-1").expect("staff id"),
            may_take_offline_payments: true,
        })
        .expect("sign in");
    if engine.remembered_readers().expect("readers").is_empty() {
        engine.report_network(true).await.expect("network up");
        for _ in 0..5 {
            let _ = engine
                .report_probe(pos_core::connectivity::ProbeOutcome::Healthy)
                .await;
        }
        engine
            .remember_reader(READER_SERIAL, READER, "1.0")
            .await
            .expect("pair the reader");
    }
    let state = engine.report_network(false).await.expect("network down");
    assert!(state.outage_cause().is_some(), "offline: {state:?}");
}

async fn new_order(engine: &PosEngine, i: usize) -> OrderId {
    engine
        .create_order(NewOrder {
            order_id: None,
            total: amount(i),
            contact: None,
        })
        .await
        .expect("create order")
        .id
}

/// Begins and confirms an offline payment of the whole order. Returns the
/// time of begin + confirm and of confirm alone, in nanoseconds.
async fn capture(engine: &PosEngine, order: OrderId, i: usize, card: CardRead) -> (u64, u64) {
    let request = CardPaymentRequest {
        order_id: order,
        payment_id: None,
        amount: amount(i),
        tip: None,
        behaviour: OfflineBehaviour::PreferOnline,
        tender: TenderKind::Card,
    };
    let t0 = Instant::now();
    let d = engine.begin_card_payment(request).await.expect("begin");
    let t1 = Instant::now();
    let p = engine
        .confirm_card_payment(&d.payment_id, card)
        .await
        .expect("confirm");
    let t2 = Instant::now();
    assert!(matches!(d.route, Route::Offline { .. }), "{:?}", d.route);
    assert_eq!(p.status, PaymentStatus::Pending);
    (nanos(t2 - t0), nanos(t2 - t1))
}

/// A provider that keeps no rollback anchors: the same key file, without
/// the anchor file [`FileKeyProvider`] rewrites (and fsyncs) after every
/// write. Only to show what the anchor costs.
#[derive(Debug)]
struct NoAnchors(FileKeyProvider);

impl KeyProvider for NoAnchors {
    fn key_encryption_key(&self) -> Result<Kek, KeyError> {
        self.0.key_encryption_key()
    }
}

// ---------------------------------------------------------------------------
// Part 1 and 2: captures against the baseline
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Series {
    /// Per operation: begin + confirm (the baseline: the insert).
    op_ns: Vec<u64>,
    /// Per operation: confirm alone (empty for the baseline).
    confirm_ns: Vec<u64>,
    /// Wall time of the timed loops.
    wall_ns: u128,
    /// Process CPU over the timed loops, `/proc/self/stat`, in ticks:
    /// user and system.
    cpu_ticks: (u64, u64),
    /// Process CPU over the timed loops, summed per thread from
    /// `/proc/self/task/*/sched` (nanosecond resolution), when available.
    cpu_sched_ns: Option<u64>,
    /// The same, per thread role ([`thread_role`]).
    cpu_by_role: BTreeMap<&'static str, u64>,
}

impl Series {
    fn add_cpu(&mut self, before: &CpuSnapshot, after: &CpuSnapshot) {
        for (role, ns) in sched_delta_by_role(before, after).unwrap_or_default() {
            *self.cpu_by_role.entry(role).or_insert(0) += ns;
        }
        self.cpu_ticks.0 += after.ticks.0.saturating_sub(before.ticks.0);
        self.cpu_ticks.1 += after.ticks.1.saturating_sub(before.ticks.1);
        self.cpu_sched_ns = match (self.cpu_sched_ns, sched_delta(before, after)) {
            (Some(a), Some(b)) => Some(a + b),
            (None, b) if self.op_ns.is_empty() => b,
            _ => None,
        };
    }

    fn ops_per_s(&self) -> u128 {
        (self.op_ns.len() as u128 * 1_000_000_000)
            .checked_div(self.wall_ns)
            .unwrap_or(0)
    }

    /// utime + stime per operation.
    fn cpu_stat_ns_per_op(&self) -> u64 {
        self.ticks_per_op(self.cpu_ticks.0 + self.cpu_ticks.1)
    }

    fn ticks_per_op(&self, ticks: u64) -> u64 {
        (ticks * (1_000_000_000 / USER_HZ))
            .checked_div(self.op_ns.len() as u64)
            .unwrap_or(0)
    }

    /// Per operation, per thread role, in the order of [`ROLES`].
    fn cpu_by_role_per_op(&self) -> Vec<(&'static str, u64)> {
        let n = (self.op_ns.len() as u64).max(1);
        ROLES
            .iter()
            .map(|r| (*r, self.cpu_by_role.get(r).copied().unwrap_or(0) / n))
            .collect()
    }

    fn cpu_sched_ns_per_op(&self) -> Option<u64> {
        self.cpu_sched_ns
            .and_then(|c| c.checked_div(self.op_ns.len() as u64))
    }
}

#[derive(Debug)]
struct EngineRig {
    store: Arc<SqliteStore>,
    engine: PosEngine,
    series: Series,
    next: usize,
}

impl EngineRig {
    async fn open(dir: &Path, anchored: bool) -> Self {
        std::fs::create_dir_all(dir).expect("engine folder");
        let kek = FileKeyProvider::open_or_create(dir.join("kek")).expect("key file");
        let provider: Arc<dyn KeyProvider> = if anchored {
            Arc::new(kek)
        } else {
            Arc::new(NoAnchors(kek))
        };
        let store = Arc::new(
            SqliteStore::open(dir.join("store.db"), provider)
                .await
                .expect("open store"),
        );
        let d = store.durability().await.expect("durability");
        assert_eq!((d.journal_mode.as_str(), d.synchronous), ("wal", 2));
        let engine = PosEngine::open_with(config(dir), Arc::new(SystemClock), store.clone())
            .await
            .expect("open engine");
        go_offline(&engine).await;
        EngineRig {
            store,
            engine,
            series: Series::default(),
            next: 0,
        }
    }

    /// Untimed captures; returns the mean bytes of journal rows one capture
    /// wrote, read back through a separate read-only connection.
    async fn warm_up(&mut self, n: usize, card_bytes: usize) -> (u64, u64) {
        let mut reader = SqliteConnectOptions::new()
            .filename(self.store.path())
            .read_only(true)
            .connect()
            .await
            .expect("read-only connection");
        let (mut bytes, mut rows) = (0u64, 0u64);
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            let order = new_order(&self.engine, i).await;
            let before = max_seq(&mut reader).await;
            capture(
                &self.engine,
                order,
                i,
                common::vendor_card(READER_SERIAL, card_bytes),
            )
            .await;
            let after = max_seq(&mut reader).await;
            let b: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(length(kind) + length(record_key) + length(key_id) \
                 + length(nonce) + length(ciphertext) + length(mac)), 0) \
                 FROM journal WHERE seq > ? AND seq <= ?",
            )
            .bind(before)
            .bind(after)
            .fetch_one(&mut reader)
            .await
            .expect("journal bytes");
            bytes += u64::try_from(b).expect("positive");
            rows += u64::try_from(after - before).expect("positive");
        }
        let _ = reader.close().await;
        let n = n.max(1) as u64;
        (bytes / n, rows / n)
    }

    /// One timed block of `n` captures. Orders are created first, outside
    /// the timing and the CPU measurement.
    async fn block(&mut self, n: usize, card_bytes: usize) {
        let mut work = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            work.push((
                new_order(&self.engine, i).await,
                i,
                common::vendor_card(READER_SERIAL, card_bytes),
            ));
        }
        let cpu0 = CpuSnapshot::take();
        let start = Instant::now();
        let mut lat = Vec::with_capacity(n);
        for (order, i, card) in work {
            lat.push(capture(&self.engine, order, i, card).await);
        }
        let wall = start.elapsed();
        let cpu1 = CpuSnapshot::take();
        self.series.add_cpu(&cpu0, &cpu1);
        self.series.wall_ns += wall.as_nanos();
        for (op, confirm) in lat {
            self.series.op_ns.push(op);
            self.series.confirm_ns.push(confirm);
        }
    }

    async fn close(self) -> Series {
        let status = self.engine.status().expect("status");
        assert_eq!(status.pending_offline_payments, self.next as u64);
        self.engine.close();
        self.store.close().await;
        self.series
    }
}

async fn max_seq(conn: &mut SqliteConnection) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM journal")
        .fetch_one(&mut *conn)
        .await
        .expect("max seq")
}

/// Raw SQLite through sqlx: one plain insert of `payload_bytes` per
/// transaction (autocommit), WAL and `synchronous=FULL` as the store sets
/// them (and its `fullfsync` pragmas, no-ops off Apple platforms).
#[derive(Debug)]
struct Baseline {
    conn: SqliteConnection,
    payload_bytes: usize,
    series: Series,
}

impl Baseline {
    async fn open(path: &Path, payload_bytes: usize) -> Self {
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .pragma("fullfsync", "ON")
            .pragma("checkpoint_fullfsync", "ON")
            .disable_statement_logging()
            .connect()
            .await
            .expect("baseline database");
        sqlx::query("CREATE TABLE bench (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
            .execute(&mut conn)
            .await
            .expect("baseline table");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .expect("journal mode");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await
            .expect("synchronous");
        assert_eq!((mode.as_str(), sync), ("wal", 2));
        let mut b = Baseline {
            conn,
            payload_bytes,
            series: Series::default(),
        };
        // Warm-up, untimed.
        for p in b.payloads(WARM_UP) {
            b.insert(p).await;
        }
        b
    }

    fn payloads(&self, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut p = vec![0u8; self.payload_bytes];
                fill_random(&mut p).expect("random payload");
                p
            })
            .collect()
    }

    async fn insert(&mut self, payload: Vec<u8>) -> u64 {
        let t0 = Instant::now();
        sqlx::query("INSERT INTO bench (payload) VALUES (?)")
            .bind(payload)
            .execute(&mut self.conn)
            .await
            .expect("baseline insert");
        nanos(t0.elapsed())
    }

    async fn block(&mut self, n: usize) {
        let payloads = self.payloads(n);
        let cpu0 = CpuSnapshot::take();
        let start = Instant::now();
        let mut lat = Vec::with_capacity(n);
        for p in payloads {
            lat.push(self.insert(p).await);
        }
        let wall = start.elapsed();
        let cpu1 = CpuSnapshot::take();
        self.series.add_cpu(&cpu0, &cpu1);
        self.series.wall_ns += wall.as_nanos();
        self.series.op_ns.extend(lat);
    }

    async fn close(self) -> Series {
        let _ = self.conn.close().await;
        self.series
    }
}

#[derive(Debug)]
struct CaptureResults {
    baseline: Series,
    anchored: Series,
    unanchored: Series,
    bytes_per_capture: u64,
    rows_per_capture: u64,
    elapsed: Duration,
}

async fn run_captures(s: &BenchSettings, root: &Path) -> CaptureResults {
    let started = Instant::now();
    let mut anchored = EngineRig::open(&root.join("engine-anchored"), true).await;
    let mut unanchored = EngineRig::open(&root.join("engine-no-anchor"), false).await;
    let (bytes, rows) = anchored.warm_up(WARM_UP, s.card_bytes).await;
    unanchored.warm_up(WARM_UP, s.card_bytes).await;
    let payload = usize::try_from(bytes).expect("fits");
    let mut baseline = Baseline::open(&root.join("baseline.db"), payload).await;
    eprintln!(
        "store bench: {} captures per variant in {} rounds, {bytes} bytes per capture",
        s.captures, s.rounds
    );
    for round in 0..s.rounds {
        let n = s.captures / s.rounds + usize::from(round < s.captures % s.rounds);
        for k in 0..3 {
            match (round + k) % 3 {
                0 if !s.anchored_only => baseline.block(n).await,
                1 => anchored.block(n, s.card_bytes).await,
                2 if !s.anchored_only => unanchored.block(n, s.card_bytes).await,
                _ => {}
            }
        }
        eprintln!("store bench: round {}/{} done", round + 1, s.rounds);
    }
    CaptureResults {
        baseline: baseline.close().await,
        anchored: anchored.close().await,
        unanchored: unanchored.close().await,
        bytes_per_capture: bytes,
        rows_per_capture: rows,
        elapsed: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------
// Part 3: a store with 10,000 pending payments, opened in a child process
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct BuildReport {
    method: &'static str,
    records: usize,
    file_bytes: u64,
    elapsed: Duration,
}

/// Fills a store with `n` pending payments, each taken through the engine
/// (create order, begin, confirm) so the journal holds exactly the records
/// the engine writes. `copy` (the default) runs the engine on a
/// [`MemoryStore`] and then applies its records to the `SqliteStore` in
/// batches of [`COPY_BATCH`]: the same records, in the same order, with one
/// fsync per batch instead of two per payment. `engine` runs the engine on
/// the `SqliteStore` directly (slower: about 2 × `n` durable commits).
async fn build_pending_store(dir: &Path, n: usize, s: &BenchSettings) -> BuildReport {
    let started = Instant::now();
    std::fs::create_dir_all(dir).expect("store folder");
    let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).expect("key file"));
    let sqlite = Arc::new(
        SqliteStore::open(dir.join("store.db"), provider)
            .await
            .expect("open store"),
    );
    let memory = MemoryStore::new();
    let target: Arc<dyn Store> = if s.build_with_engine {
        sqlite.clone()
    } else {
        Arc::new(memory.clone())
    };
    let engine = PosEngine::open_with(config(dir), Arc::new(SystemClock), target)
        .await
        .expect("open engine");
    go_offline(&engine).await;
    for i in 0..n {
        let order = new_order(&engine, i).await;
        capture(
            &engine,
            order,
            i,
            common::vendor_card(READER_SERIAL, s.card_bytes),
        )
        .await;
        if (i + 1) % 2_500 == 0 {
            eprintln!("store bench: {} of {n} pending payments taken", i + 1);
        }
    }
    assert_eq!(
        engine.status().expect("status").pending_offline_payments,
        n as u64
    );
    engine.close();
    let records = if s.build_with_engine {
        sqlite.load().await.expect("load").len()
    } else {
        let records = memory.load().await.expect("records");
        // The worst case the engine leaves: its last automatic snapshot
        // COMPACT_EVERY - 1 records before the end (a crash just before the
        // next one). Same records, same order.
        let mut records = records;
        let mut k = records.len().saturating_sub(TAIL_AFTER_SNAPSHOT);
        // Before a snapshot the engine archives what it no longer keeps in
        // memory (here, audit entries beyond `AUDIT_IN_MEMORY`).
        if let Some(cut) = ledger_of(&records[..k]).archive_cut(
            pos_core::engine::SETTLED_IN_MEMORY,
            pos_core::engine::AUDIT_IN_MEMORY,
            None,
        ) {
            records.insert(k, pos_core::ledger::Write::Archive(Box::new(cut)));
            k += 1;
        }
        for batch in records[..k].chunks(COPY_BATCH) {
            sqlite.apply(batch).await.expect("copy a batch");
        }
        let state = ledger_of(&records[..k])
            .snapshot_writes()
            .expect("snapshot");
        sqlite.compact(&state).await.expect("snapshot");
        for batch in records[k..].chunks(COPY_BATCH) {
            sqlite.apply(batch).await.expect("copy a batch");
        }
        records.len()
    };
    sqlite.close().await;
    let file_bytes = std::fs::metadata(dir.join("store.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    BuildReport {
        method: if s.build_with_engine {
            "engine on the SqliteStore, one commit per step"
        } else {
            "engine on a MemoryStore, records copied in batches, history archived before the snapshot as the engine does"
        },
        records,
        file_bytes,
        elapsed: started.elapsed(),
    }
}

/// Fills a store with `total` payments of which all but `pending` are
/// settled (approved), and leaves it as a clean shutdown does (a snapshot
/// at the end). The payments are taken by the engine on a [`MemoryStore`];
/// each settled one then gets the record the driver writes when the
/// processor approves it. The records are copied in batches of
/// [`COPY_BATCH`].
async fn build_history_store(
    dir: &Path,
    total: usize,
    pending: usize,
    s: &BenchSettings,
) -> BuildReport {
    let started = Instant::now();
    std::fs::create_dir_all(dir).expect("store folder");
    let memory = MemoryStore::new();
    let engine = PosEngine::open_with(config(dir), Arc::new(SystemClock), Arc::new(memory.clone()))
        .await
        .expect("open engine");
    go_offline(&engine).await;
    for i in 0..total {
        let order = new_order(&engine, i).await;
        capture(
            &engine,
            order,
            i,
            common::vendor_card(READER_SERIAL, s.card_bytes),
        )
        .await;
        if (i + 1) % 25_000 == 0 {
            eprintln!("store bench: {} of {total} payments taken", i + 1);
        }
    }
    engine.close();
    let mut records = memory.load().await.expect("records");
    let taken = ledger_of(&records);
    let settled = total.saturating_sub(pending);
    for (k, p) in taken.payments.values().take(settled).enumerate() {
        let mut p = p.clone();
        p.state = pos_core::lifecycle::PaymentState::Approved {
            at: p.taken_at,
            processor_ref: format!("bench-ref-{k}"),
        };
        // As the engine records a settled payment: without its card data.
        p.card.forget_card_data();
        records.push(pos_core::ledger::Write::Payment(Box::new(p)));
    }
    // Back online, the offline session ends; the engine's next snapshot
    // archives the settled history beyond what it keeps in memory.
    let clock_floor = ledger_of(&records)
        .settings
        .map(|st| st.clock_floor)
        .unwrap_or_default();
    records.push(pos_core::ledger::Write::Session {
        session: None,
        clock_floor,
    });
    if let Some(cut) = ledger_of(&records).archive_cut(
        pos_core::engine::SETTLED_IN_MEMORY,
        pos_core::engine::AUDIT_IN_MEMORY,
        None,
    ) {
        records.push(pos_core::ledger::Write::Archive(Box::new(cut)));
    }
    let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).expect("key file"));
    let sqlite = SqliteStore::open(dir.join("store.db"), provider)
        .await
        .expect("open store");
    for batch in records.chunks(COPY_BATCH) {
        sqlite.apply(batch).await.expect("copy a batch");
    }
    let state = ledger_of(&records).snapshot_writes().expect("snapshot");
    sqlite.compact(&state).await.expect("snapshot");
    sqlite.close().await;
    let file_bytes = std::fs::metadata(dir.join("store.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    BuildReport {
        method: "engine on a MemoryStore, approvals appended, session ended, settled history archived as the engine's next snapshot does, records copied in batches, snapshot at the end",
        records: records.len(),
        file_bytes,
        elapsed: started.elapsed(),
    }
}

/// What the child process reported.
#[derive(Debug, Default, Clone)]
struct ChildReport {
    values: BTreeMap<String, String>,
}

impl ChildReport {
    fn num(&self, key: &str) -> u64 {
        self.values
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the child did not report {key}: {:?}", self.values))
    }

    fn text(&self, key: &str) -> &str {
        self.values.get(key).map_or("?", String::as_str)
    }
}

fn run_child(dir: &Path) -> ChildReport {
    let exe = std::env::current_exe().expect("this executable");
    let out = std::process::Command::new(exe)
        .env(CHILD_ENV, dir)
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = ChildReport::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line.split_once('=') {
            r.values.insert(k.to_owned(), v.to_owned());
        }
    }
    r
}

/// The child: opens the store and the engine, reports the status, and
/// prints `key=value` lines for the parent.
fn child(dir: &Path) {
    let hwm_start = proc_status_kib("VmHWM");
    let rt = runtime();
    let hwm_runtime = proc_status_kib("VmHWM");
    let (timings, status, store, (rss_idle, rss_trimmed)) = rt.block_on(async {
        let t0 = Instant::now();
        let provider = Arc::new(FileKeyProvider::open_or_create(dir.join("kek")).expect("key"));
        let store = Arc::new(
            SqliteStore::open(dir.join("store.db"), provider)
                .await
                .expect("open store"),
        );
        let t1 = Instant::now();
        let engine = PosEngine::open_with(config(dir), Arc::new(SystemClock), store.clone())
            .await
            .expect("open engine");
        let t2 = Instant::now();
        let status = engine.status().expect("status");
        let t3 = Instant::now();
        // Resident memory while the engine sits idle after the open: what
        // the app keeps while nothing happens (the open's transient buffers
        // freed, the engine and its driver still running).
        tokio::time::sleep(IDLE_AFTER_OPEN).await;
        let rss_idle = proc_status_kib("VmRSS");
        // The same once the allocator has handed its free pages back: how
        // much of the idle figure is memory the open freed but glibc kept.
        release_free_memory();
        let rss_trimmed = proc_status_kib("VmRSS");
        engine.close();
        (
            [
                nanos(t1 - t0),
                nanos(t2 - t1),
                nanos(t3 - t2),
                nanos(t3 - t0),
            ],
            status,
            store,
            (rss_idle, rss_trimmed),
        )
    });
    let hwm_end = proc_status_kib("VmHWM");
    let rss_end = proc_status_kib("VmRSS");
    rt.block_on(store.close());
    let mut out = String::new();
    let [store_ns, engine_ns, status_ns, total_ns] = timings;
    let _ = writeln!(out, "store_open_ns={store_ns}");
    let _ = writeln!(out, "engine_open_ns={engine_ns}");
    let _ = writeln!(out, "status_ns={status_ns}");
    let _ = writeln!(out, "total_ns={total_ns}");
    let _ = writeln!(out, "hwm_start_kib={hwm_start}");
    let _ = writeln!(out, "hwm_runtime_kib={hwm_runtime}");
    let _ = writeln!(out, "hwm_kib={hwm_end}");
    let _ = writeln!(out, "rss_kib={rss_end}");
    let _ = writeln!(out, "rss_idle_kib={rss_idle}");
    let _ = writeln!(out, "rss_trimmed_kib={rss_trimmed}");
    let _ = writeln!(out, "pending={}", status.pending_offline_payments);
    let totals: Vec<String> = status
        .totals
        .iter()
        .map(|t| {
            format!(
                "{} pending {} ({} approved, {} declined, {} expired)",
                t.pending_count,
                t.pending_amount,
                t.approved_count,
                t.declined_count,
                t.expired_count
            )
        })
        .collect();
    let _ = writeln!(out, "totals={}", totals.join("; "));
    let _ = writeln!(
        out,
        "time_left_ms={}",
        status.time_left_ms.map_or("none".into(), |t| t.to_string())
    );
    let _ = writeln!(out, "connectivity={:?}", status.connectivity);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .expect("write to the parent");
}

// ---------------------------------------------------------------------------
// Measurements from /proc
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct CpuSnapshot {
    /// utime and stime of the whole process (every thread, live or exited).
    ticks: (u64, u64),
    /// Per thread id: `se.sum_exec_runtime` in nanoseconds, and what the
    /// thread is ([`thread_role`]).
    sched: Option<BTreeMap<u32, (&'static str, u64)>>,
}

/// The thread roles the CPU split reports.
const ROLES: [&str; 3] = ["caller", "SQLite worker", "other"];

/// The bench's own thread (which drives the engine, as an app's thread
/// calling through the FFI does), sqlx's SQLite worker threads (the SQL,
/// the writes and the fsync's own kernel work), or anything else (the
/// engine's event thread, the anchor saver, tokio's worker and blocking
/// threads). Like the total, a lower bound: a thread that ends between two
/// readings is not counted.
fn thread_role(tid: u32, comm: &str) -> &'static str {
    if tid == std::process::id() {
        ROLES[0]
    } else if comm.starts_with("sqlx-sqlite") {
        ROLES[1]
    } else {
        ROLES[2]
    }
}

impl CpuSnapshot {
    fn take() -> Self {
        CpuSnapshot {
            ticks: proc_stat_ticks(),
            sched: sched_per_thread(),
        }
    }
}

fn proc_stat_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime); `f[0]` is field 3.
    let utime: u64 = f[11].parse().expect("utime");
    let stime: u64 = f[12].parse().expect("stime");
    (utime, stime)
}

/// CPU time of every live thread, from `/proc/self/task/*/sched`
/// (`se.sum_exec_runtime`, milliseconds with six decimals). `None` where the
/// kernel does not provide it.
fn sched_per_thread() -> Option<BTreeMap<u32, (&'static str, u64)>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between listing and reading.
        let Ok(text) = std::fs::read_to_string(entry.path().join("sched")) else {
            continue;
        };
        let line = text
            .lines()
            .find(|l| l.starts_with("se.sum_exec_runtime"))?;
        let value = line.split(':').nth(1)?.trim();
        let (ms, frac) = value.split_once('.').unwrap_or((value, "0"));
        let mut frac = frac.to_owned();
        frac.truncate(6);
        while frac.len() < 6 {
            frac.push('0');
        }
        let ns = ms.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        out.insert(tid, (thread_role(tid, comm.trim()), ns));
    }
    Some(out)
}

/// CPU time of the threads alive at the end, since the start (a thread
/// that ended in between is not counted: a lower bound).
fn sched_delta(before: &CpuSnapshot, after: &CpuSnapshot) -> Option<u64> {
    Some(sched_delta_by_role(before, after)?.values().sum())
}

/// Per-thread CPU between two snapshots, summed per [`thread_role`].
fn sched_delta_by_role(
    before: &CpuSnapshot,
    after: &CpuSnapshot,
) -> Option<BTreeMap<&'static str, u64>> {
    let (b, a) = (before.sched.as_ref()?, after.sched.as_ref()?);
    let mut out = BTreeMap::new();
    for (tid, (role, ns)) in a {
        let was = b.get(tid).map_or(0, |(_, ns)| *ns);
        *out.entry(*role).or_insert(0) += ns.saturating_sub(was);
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Machine context
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Context {
    cpu: String,
    cpus: usize,
    kernel: String,
    fs: String,
    sqlite: String,
    load_start: String,
    fsync_p50_ns: u64,
    fsync_p99_ns: u64,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn loadavg() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The mount holding `dir`: device, file system type, mount point.
fn filesystem(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1])).then(|| (f[1].len(), f[0], f[2], f[1]))
        })
        .max_by_key(|m| m.0)
        .map_or("?".into(), |(_, dev, fs, at)| {
            format!("{fs} on {dev} ({at})")
        })
}

/// 4 KiB written and `fdatasync`ed in place, 200 times: what one durable
/// write costs on this disk right now.
fn fsync_probe(dir: &Path) -> (u64, u64) {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let block = vec![0x5Au8; 4096];
    let mut lat = Vec::with_capacity(200);
    for _ in 0..200 {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        let t0 = Instant::now();
        f.write_all(&block).expect("probe write");
        f.sync_data().expect("probe sync");
        lat.push(nanos(t0.elapsed()));
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort_unstable();
    (percentile(&lat, 50), percentile(&lat, 99))
}

async fn context(root: &Path) -> Context {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("?".into(), |(_, v)| v.trim().to_owned());
    let mut conn = SqliteConnectOptions::new()
        .in_memory(true)
        .connect()
        .await
        .expect("in-memory database");
    let sqlite: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await
        .expect("sqlite version");
    let _ = conn.close().await;
    let (p50, p99) = fsync_probe(root);
    Context {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        fs: filesystem(root),
        sqlite,
        load_start: loadavg(),
        fsync_p50_ns: p50,
        fsync_p99_ns: p99,
    }
}

// ---------------------------------------------------------------------------
// The run and the report
// ---------------------------------------------------------------------------

async fn run(s: &BenchSettings, root: &Path) -> String {
    let started = Instant::now();
    let ctx = context(root).await;
    eprintln!("store bench: files in {}", root.display());
    let caps = run_captures(s, root).await;
    let pending_dir = root.join("pending");
    eprintln!(
        "store bench: building a store of {} pending payments",
        s.pending
    );
    let build = build_pending_store(&pending_dir, s.pending, s).await;
    let measure = |label: &'static str| {
        flush_to_disk(&pending_dir);
        let mut opens: Vec<ChildReport> = (0..s.opens)
            .map(|k| {
                eprintln!("store bench: {label}: child open {}/{}", k + 1, s.opens);
                run_child(&pending_dir)
            })
            .collect();
        opens.sort_by_key(|r| r.num("total_ns"));
        (label, opens)
    };
    let mut layouts = vec![measure(if s.build_with_engine {
        "as the engine left it (automatic snapshots)"
    } else {
        "worst case: snapshot + 2,047 records after it"
    })];
    if std::env::var_os("POS_BENCH_WORST_ONLY").is_some() {
        eprintln!("store bench: POS_BENCH_WORST_ONLY set: the other layouts are skipped");
        return format!("{}: {:?}", layouts[0].0, layouts[0].1);
    }
    relayout(&pending_dir, false).await;
    layouts.push(measure("journal only, no snapshot (reference)"));
    let snapshot_cost = relayout(&pending_dir, true).await;
    layouts.push(measure(
        "snapshot at the end (clean shutdown, compact_store)",
    ));
    let mut out = report(s, &ctx, &caps, &build, &layouts, started.elapsed());
    if s.history > 0 {
        let history_dir = root.join("history");
        eprintln!(
            "store bench: building a store of {} payments, {} of them settled",
            s.history,
            s.history.saturating_sub(s.pending)
        );
        let hbuild = build_history_store(&history_dir, s.history, s.pending, s).await;
        flush_to_disk(&history_dir);
        // Pairs: an open with history and one of the same pending payments
        // alone (the clean layout above), one right after the other, so
        // that each pair sees the same machine whatever else it does
        // meanwhile; which goes first alternates. At least 5 pairs.
        let pairs = s.opens.max(5);
        let (mut alone, mut opens): (Vec<ChildReport>, Vec<ChildReport>) = (0..pairs)
            .map(|k| {
                eprintln!("store bench: history: pair {}/{pairs}", k + 1);
                if k % 2 == 0 {
                    let a = run_child(&pending_dir);
                    (a, run_child(&history_dir))
                } else {
                    let h = run_child(&history_dir);
                    (run_child(&pending_dir), h)
                }
            })
            .unzip();
        let mut ratios: Vec<u128> = alone
            .iter()
            .zip(&opens)
            .map(|(a, h)| {
                (u128::from(h.num("total_ns")) * 1000)
                    .checked_div(u128::from(a.num("total_ns")))
                    .unwrap_or(0)
            })
            .collect();
        ratios.sort_unstable();
        alone.sort_by_key(|r| r.num("total_ns"));
        opens.sort_by_key(|r| r.num("total_ns"));
        history_report(&mut out, s, &hbuild, &opens, &alone, &ratios);
        if std::env::var_os("POS_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&history_dir);
        }
    }
    if let Some((copied, written)) = snapshot_cost {
        let _ = writeln!(
            out,
            "  taking a snapshot of the {} pending payments (what the engine does every {} records, \
             inside the capture that reaches it): state copied {} ms, encoded, sealed and written {} ms",
            s.pending,
            config(&pending_dir).compact_every,
            ms(nanos(copied)),
            ms(nanos(written))
        );
    }
    out
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Nanoseconds as microseconds with one decimal.
fn us(ns: u64) -> String {
    format!("{}.{}", ns / 1_000, ns % 1_000 / 100)
}

/// Nanoseconds as milliseconds with one decimal.
fn ms(ns: u64) -> String {
    format!("{}.{}", ns / 1_000_000, ns % 1_000_000 / 100_000)
}

fn permille(p: u128) -> String {
    format!("{}.{:03}", p / 1000, p % 1000)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

/// A Markdown table: the first column left-aligned, the others right-aligned.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (k, (c, w)) in cells.iter().zip(&width).enumerate() {
            let pad = " ".repeat(w - c.chars().count());
            if k == 0 {
                let _ = write!(out, " {c}{pad} |");
            } else {
                let _ = write!(out, " {pad}{c} |");
            }
        }
        out.push('\n');
    };
    let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    line(out, &head);
    out.push('|');
    for (k, w) in width.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if k == 0 {
            let _ = write!(out, ":{dashes}-|");
        } else {
            let _ = write!(out, "-{dashes}:|");
        }
    }
    out.push('\n');
    for r in rows {
        line(out, r);
    }
}

/// One row of the capture table; `cpu`: the series' own figures (not the
/// confirm-alone latencies of an engine series).
fn capture_row(label: &str, series: &Series, latencies: &[u64], cpu: bool) -> Vec<String> {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let blank = String::new;
    vec![
        label.to_owned(),
        sorted.len().to_string(),
        if cpu {
            series.ops_per_s().to_string()
        } else {
            blank()
        },
        us(percentile(&sorted, 50)),
        us(percentile(&sorted, 99)),
        us(sorted.last().copied().unwrap_or(0)),
        if cpu {
            us(series.cpu_stat_ns_per_op())
        } else {
            blank()
        },
        if cpu {
            us(series.ticks_per_op(series.cpu_ticks.0))
        } else {
            blank()
        },
        if cpu {
            us(series.ticks_per_op(series.cpu_ticks.1))
        } else {
            blank()
        },
        if cpu {
            series.cpu_sched_ns_per_op().map_or("n/a".into(), us)
        } else {
            blank()
        },
    ]
}

/// The open of the store with settled history, against the open of the
/// store of pending payments alone after a clean shutdown (`reference`,
/// same run, in pairs with the opens with history; `ratios`: each pair's
/// ratio in thousandths, sorted).
fn history_report(
    o: &mut String,
    s: &BenchSettings,
    build: &BuildReport,
    opens: &[ChildReport],
    reference: &[ChildReport],
    ratios: &[u128],
) {
    let settled = s.history.saturating_sub(s.pending);
    let _ = writeln!(
        o,
        "\n(4) Open a store of {} payments, {} settled and {} pending, after a clean shutdown, in a fresh process\n",
        s.history, settled, s.pending
    );
    let _ = writeln!(
        o,
        "  store built by: {} ({} records, file {} KiB, {} ms)\n",
        build.method,
        build.records,
        build.file_bytes / 1024,
        ms(nanos(build.elapsed))
    );
    let rows: Vec<Vec<String>> = opens
        .iter()
        .enumerate()
        .map(|(k, r)| {
            vec![
                (k + 1).to_string(),
                ms(r.num("store_open_ns")),
                ms(r.num("engine_open_ns")),
                ms(r.num("status_ns")),
                ms(r.num("total_ns")),
                r.num("hwm_kib").to_string(),
                r.num("rss_idle_kib").to_string(),
                r.text("pending").to_owned(),
            ]
        })
        .collect();
    table(
        o,
        &[
            "run (fastest first)",
            "SqliteStore::open ms",
            "PosEngine::open_with ms",
            "status ms",
            "total ms",
            "VmHWM KiB",
            "VmRSS idle KiB",
            "pending",
        ],
        &rows,
    );
    let median = opens[opens.len() / 2].num("total_ns");
    let reference_ns = reference[reference.len() / 2].num("total_ns");
    let hwm = opens.iter().map(|r| r.num("hwm_kib")).max().unwrap_or(0);
    let pending_ok = opens.iter().all(|r| r.num("pending") == s.pending as u64);
    // "History does not slow the open": within 1.25 × the open of the
    // pending payments alone, measured in the same run: the median of the
    // pairs' ratios.
    let ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(0);
    let met = ratio <= 1250 && pending_ok;
    let _ = writeln!(
        o,
        "\n  [{}] open + status with {settled} settled payments of history: {} ms (median of {}) vs {} ms without history in the same pairs; median of the pairs' ratios {} × (from {} to {}); peak {} KiB",
        verdict(met),
        ms(median),
        opens.len(),
        ms(reference_ns),
        permille(ratio),
        permille(ratios.first().copied().unwrap_or(0)),
        permille(ratios.last().copied().unwrap_or(0)),
        hwm
    );
    let _ = writeln!(
        o,
        "BENCH figure=\"start-up (open + status), {} stored payments ({} settled, {} pending), after a clean shutdown\" \
         target=\"<= 1.25 × the open without history\" baseline=\"{} pending alone, opened in pairs with it: {} ms\" \
         value=\"{} ms (median of {}); median of the pairs' ratios {} ×, peak {:.1} MB\" verdict={}",
        s.history,
        settled,
        s.pending,
        s.pending,
        ms(reference_ns),
        ms(median),
        opens.len(),
        permille(ratio),
        hwm as f64 * 1024.0 / 1e6,
        if met { "met" } else { "missed" }
    );
}

fn report(
    s: &BenchSettings,
    ctx: &Context,
    caps: &CaptureResults,
    build: &BuildReport,
    layouts: &[(&'static str, Vec<ChildReport>)],
    elapsed: Duration,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\nPOS Core store benchmark (core/benches/store.rs)\n");
    let _ = writeln!(o, "Machine");
    let _ = writeln!(o, "  CPU          {} ({} CPUs)", ctx.cpu, ctx.cpus);
    let _ = writeln!(o, "  kernel       Linux {}", ctx.kernel);
    let _ = writeln!(o, "  files        {}", ctx.fs);
    let _ = writeln!(o, "  SQLite       {} (through sqlx)", ctx.sqlite);
    let _ = writeln!(
        o,
        "  fsync        4 KiB write + fdatasync: p50 {} µs, p99 {} µs",
        us(ctx.fsync_p50_ns),
        us(ctx.fsync_p99_ns)
    );
    let _ = writeln!(
        o,
        "  load avg     {} at start, {} at end (a shared machine: other jobs run alongside)",
        ctx.load_start,
        loadavg()
    );
    let _ = writeln!(o, "\nSettings");
    let _ = writeln!(
        o,
        "  {} operations per variant, in {} interleaved rounds; {WARM_UP} untimed warm-up operations each",
        s.captures, s.rounds
    );
    let _ = writeln!(
        o,
        "  a capture = begin_card_payment + confirm_card_payment of a pending offline payment (order created beforehand, untimed)"
    );
    let _ = writeln!(
        o,
        "  sealed card data {} bytes; a capture writes {} journal rows, {} bytes of row data (the baseline inserts one {}-byte BLOB per transaction)",
        s.card_bytes, caps.rows_per_capture, caps.bytes_per_capture, caps.bytes_per_capture
    );
    let _ = writeln!(
        o,
        "  CPU: process utime + stime (user, sys) from /proc/self/stat (10 ms ticks) over the timed loops, per operation; cross-check: per-thread se.sum_exec_runtime (ns)"
    );

    let _ = writeln!(o, "\n(1)+(2) Durable capture vs baseline\n");
    let rows = vec![
        capture_row(
            "baseline: sqlx INSERT, one per transaction",
            &caps.baseline,
            &caps.baseline.op_ns,
            true,
        ),
        capture_row(
            "engine capture (FileKeyProvider, anchored)",
            &caps.anchored,
            &caps.anchored.op_ns,
            true,
        ),
        capture_row(
            "  of which confirm_card_payment",
            &caps.anchored,
            &caps.anchored.confirm_ns,
            false,
        ),
        capture_row(
            "engine capture (provider without anchors)",
            &caps.unanchored,
            &caps.unanchored.op_ns,
            true,
        ),
        capture_row(
            "  of which confirm_card_payment",
            &caps.unanchored,
            &caps.unanchored.confirm_ns,
            false,
        ),
    ];
    table(
        &mut o,
        &[
            "variant",
            "n",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "max µs",
            "CPU µs/op",
            "user",
            "sys",
            "CPU (sched)",
        ],
        &rows,
    );
    let _ = writeln!(
        o,
        "\n  CPU per operation by thread (sched, µs): the caller (the engine's own work and its \
         hand-offs), sqlx's SQLite worker (SQL, WAL writes, the fsync's kernel work), other \
         threads (events, anchor saver, tokio)"
    );
    for (label, series) in [
        ("baseline", &caps.baseline),
        ("engine, anchored", &caps.anchored),
        ("engine, no anchors", &caps.unanchored),
    ] {
        let parts: Vec<String> = series
            .cpu_by_role_per_op()
            .iter()
            .map(|(role, ns)| format!("{role} {}", us(*ns)))
            .collect();
        let _ = writeln!(o, "    {label:<20} {}", parts.join(", "));
    }
    let _ = writeln!(o, "\n  capture phase took {} ms", ms(nanos(caps.elapsed)));

    // Ratios in permille: (n_e / wall_e) / (n_b / wall_b).
    let ratio = |e: &Series| -> u128 {
        let b = &caps.baseline;
        (e.op_ns.len() as u128 * b.wall_ns * 1000)
            .checked_div(b.op_ns.len() as u128 * e.wall_ns)
            .unwrap_or(0)
    };
    let r_anchored = ratio(&caps.anchored);
    let r_unanchored = ratio(&caps.unanchored);
    let cpu = caps.anchored.cpu_stat_ns_per_op();

    let _ = writeln!(
        o,
        "\n(3) Open a store of {} pending payments + status, in a fresh process\n",
        s.pending
    );
    let _ = writeln!(
        o,
        "  store built by: {} ({} records, file {} KiB, {} ms)\n",
        build.method,
        build.records,
        build.file_bytes / 1024,
        ms(nanos(build.elapsed))
    );
    let _ = writeln!(
        o,
        "  in memory: a record (ledger::Write) {} bytes inline, an audit entry {} bytes, a payment {} bytes\n",
        std::mem::size_of::<pos_core::ledger::Write>(),
        std::mem::size_of::<pos_core::audit::AuditEntry>(),
        std::mem::size_of::<pos_core::ledger::OfflinePayment>(),
    );
    let rows: Vec<Vec<String>> = layouts
        .iter()
        .flat_map(|(label, opens)| {
            opens.iter().enumerate().map(move |(k, r)| {
                vec![
                    if k == 0 {
                        (*label).to_owned()
                    } else {
                        String::new()
                    },
                    (k + 1).to_string(),
                    ms(r.num("store_open_ns")),
                    ms(r.num("engine_open_ns")),
                    ms(r.num("status_ns")),
                    ms(r.num("total_ns")),
                    r.num("hwm_kib").to_string(),
                    r.num("hwm_runtime_kib").to_string(),
                ]
            })
        })
        .collect();
    table(
        &mut o,
        &[
            "layout",
            "run (fastest first)",
            "SqliteStore::open ms",
            "PosEngine::open_with ms",
            "status ms",
            "total ms",
            "VmHWM KiB",
            "VmHWM before open KiB",
        ],
        &rows,
    );
    // Verdicts on the first layout: the worst case the engine can leave.
    let opens = &layouts[0].1;
    let median = &opens[opens.len() / 2];
    let _ = writeln!(
        o,
        "  status: {} pending; totals: {}; time left {} ms; connectivity {}",
        median.text("pending"),
        median.text("totals"),
        median.text("time_left_ms"),
        median.text("connectivity")
    );
    let open_ns = median.num("total_ns");
    let hwm = opens.iter().map(|r| r.num("hwm_kib")).max().unwrap_or(0);
    let pending_ok = layouts
        .iter()
        .all(|(_, runs)| runs.iter().all(|r| r.num("pending") == s.pending as u64));
    let clean = &layouts[2].1;
    let clean_ns = clean[clean.len() / 2].num("total_ns");
    let clean_hwm = clean.iter().map(|r| r.num("hwm_kib")).max().unwrap_or(0);

    let _ = writeln!(o, "\nTargets\n");
    let _ = writeln!(
        o,
        "  [{}] (1) capture throughput >= 0.800 x baseline: {} ({} vs {} ops/s); without anchors {}",
        verdict(r_anchored >= TARGET_RATIO_PERMILLE),
        permille(r_anchored),
        caps.anchored.ops_per_s(),
        caps.baseline.ops_per_s(),
        permille(r_unanchored),
    );
    let _ = writeln!(
        o,
        "  [{}] (2) CPU per capture < 100 µs: {} µs (/proc/self/stat; per-thread cross-check {} µs; baseline insert {} µs)",
        verdict(cpu < TARGET_CPU_NS),
        us(cpu),
        caps.anchored
            .cpu_sched_ns_per_op()
            .map_or("n/a".into(), us),
        us(caps.baseline.cpu_stat_ns_per_op()),
    );
    let _ = writeln!(
        o,
        "  [{}] (3) open + status of {} pending < 100 ms: {} ms (median of {} runs, {}); after a clean shutdown {} ms",
        verdict(open_ns < TARGET_OPEN_NS && pending_ok),
        s.pending,
        ms(open_ns),
        opens.len(),
        layouts[0].0,
        ms(clean_ns),
    );
    let _ = writeln!(
        o,
        "  [{}] (3) peak memory < 40 MB: VmHWM {} KiB (highest of {} runs; limit {} KiB); after a clean shutdown {} KiB",
        verdict(hwm < TARGET_HWM_KIB),
        hwm,
        opens.len(),
        TARGET_HWM_KIB,
        clean_hwm,
    );
    let _ = writeln!(o, "\n  whole benchmark: {} ms\n", ms(nanos(elapsed)));
    // The lines `cargo xtask bench` gathers into its table.
    // Peak and idle memory over the layouts the engine leaves (a crash
    // after its last automatic snapshot, a clean shutdown); the journal
    // without any snapshot is a reference only.
    let engine_layouts = [&layouts[0].1, &layouts[2].1];
    let max_of = |key: &str| {
        engine_layouts
            .iter()
            .flat_map(|runs| runs.iter().map(|r| r.num(key)))
            .max()
            .unwrap_or(0)
    };
    let peak = max_of("hwm_kib");
    let rss_idle = max_of("rss_idle_kib");
    let rss_trimmed = max_of("rss_trimmed_kib");
    let journal_hwm = layouts[1]
        .1
        .iter()
        .map(|r| r.num("hwm_kib"))
        .max()
        .unwrap_or(0);
    let bench = |o: &mut String, figure: String, target: &str, value: String, met: bool| {
        let _ = writeln!(
            o,
            "BENCH figure=\"{figure}\" target=\"{target}\" baseline=\"-\" value=\"{value}\" verdict={}",
            if met { "met" } else { "missed" }
        );
    };
    bench(
        &mut o,
        format!(
            "open + status, {} pending, after a clean shutdown",
            s.pending
        ),
        "<= 50 ms",
        format!("{} ms (median of {})", ms(clean_ns), clean.len()),
        clean_ns <= 50_000_000 && pending_ok,
    );
    bench(
        &mut o,
        format!(
            "open + status, {} pending, after a crash (snapshot + {} records)",
            s.pending, TAIL_AFTER_SNAPSHOT
        ),
        "<= 100 ms",
        format!("{} ms (median of {})", ms(open_ns), opens.len()),
        open_ns <= TARGET_OPEN_NS && pending_ok,
    );
    let mb = |kib: u64| format!("{:.1} MB", kib as f64 * 1024.0 / 1e6);
    bench(
        &mut o,
        format!(
            "peak memory of that open (VmHWM), {} pending, either layout",
            s.pending
        ),
        "<= 40 MB",
        format!("{} (highest of {} runs)", mb(peak), 2 * s.opens),
        peak <= TARGET_HWM_KIB,
    );
    let _ = writeln!(
        o,
        "BENCH figure=\"peak memory of an open of the whole journal, no snapshot ({} pending; reference, a layout the engine does not leave)\" \
         target=\"-\" baseline=\"with a snapshot {}\" value=\"{}\" verdict=info",
        s.pending,
        mb(peak),
        mb(journal_hwm)
    );
    bench(
        &mut o,
        format!(
            "resident memory (VmRSS), {} pending, engine idle {} ms after the open",
            s.pending,
            IDLE_AFTER_OPEN.as_millis()
        ),
        "<= 30 MB",
        format!(
            "{} (highest of {} runs; {} once malloc_trim returns the allocator's free pages)",
            mb(rss_idle),
            2 * s.opens,
            mb(rss_trimmed)
        ),
        rss_idle <= TARGET_RSS_KIB,
    );
    let _ = writeln!(
        o,
        "BENCH figure=\"capture (begin + confirm) throughput vs raw SQLite\" target=\"- (retired, ADR 0006)\" \
         baseline=\"raw SQLite {} ops/s\" value=\"{} ops/s = {} ×\" verdict=info",
        caps.baseline.ops_per_s(),
        caps.anchored.ops_per_s(),
        permille(r_anchored)
    );
    o
}
