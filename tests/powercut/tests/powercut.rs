//! Power-cut test of the encrypted store and the engine: a payment the
//! cashier was told is taken must survive losing power, not only a crash.
//!
//! Unlike `core/engine/tests/crash.rs` (SIGKILL, page cache kept), the store, its
//! key file and its anchor file live on the rig's lazy FUSE filesystem
//! (`pos_powercut::Rig`), which keeps everything not fsynced in memory. A
//! child process takes offline payments and forwards some (`ACK <id>
//! <cents>` once `confirm_card_payment` returned, `FWD <id> <state>` once a
//! forwarding step was recorded); the parent kills it at a seeded random
//! point (during key-file creation, schema set-up, anchor saves, snapshot
//! writes, payments, forwarding) and cuts the power: unsynced data and
//! names are dropped, and on half the cuts a random prefix of one file's
//! unsynced pages reaches the disk (a torn write). After the remount it
//! checks that the key file and the store open (a fresh store only if no
//! payment was acknowledged yet), that no integrity alarm is raised
//! (`Tampered`: false alarm; `RolledBack`: the anchor claims a head the
//! database lost), and that every acknowledged payment is there exactly
//! once, with its amount, and every acknowledged final outcome holds.
//!
//! `POS_POWERCUT_CUTS` sets the number of cuts (default 200; 2,000 for a
//! soak), `POS_POWERCUT_SEED` the seed (default from the time, printed).
//! A fresh store every `POS_POWERCUT_CUTS_PER_STORE` cuts (default 20).
//! If FUSE cannot be mounted the test fails and says why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_core::clock::SystemClock;
use pos_core::crypto::FileKeyProvider;
use pos_core::lifecycle::{DeclineReason, ForwardErrorKind, PaymentEvent};
use pos_core::sqlite_store::SqliteStore;
use pos_core::store::StoreError;
use pos_core::{EngineConfig, PosEngine};
use pos_powercut::{Rig, Rng};

/// The crash tests' child workload, shared by path with `core/engine/tests/crash.rs`
/// (it finds its generator as `super::rng::Rng`).
#[path = "../../support/src/workload.rs"]
mod workload;
mod rng {
    pub use pos_powercut::Rng;
}
use workload::{open_offline, say, status_name, take_one, usd};

const CHILD_ENV: &str = "POS_POWERCUT_CHILD";
const CYCLE_ENV: &str = "POS_POWERCUT_CYCLE";
const CHILD_SEED_ENV: &str = "POS_POWERCUT_CHILD_SEED";
const CUTS_ENV: &str = "POS_POWERCUT_CUTS";
const SEED_ENV: &str = "POS_POWERCUT_SEED";
const PER_STORE_ENV: &str = "POS_POWERCUT_CUTS_PER_STORE";
const STALL: Duration = Duration::from_secs(60);
const CHILD_MAX_RUN: Duration = Duration::from_secs(300);
const STORE_FILE: &str = "store.db";
const KEY_FILE: &str = "kek";
const READER: &str = "SN-POWERCUT-1";

fn config(dir: &Path) -> EngineConfig {
    workload::config(dir, "till-powercut")
}

// ---------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------

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
    say("");
    let engine = open_offline(&dir, KEY_FILE, STORE_FILE, config(&dir), READER).await;
    let mut n: u64 = 0;
    while started.elapsed() < CHILD_MAX_RUN {
        if rng.below(3) == 0 {
            forward_one(&engine, &mut rng).await;
        }
        take_one(
            &engine,
            &mut rng,
            format!("o{cycle:06}-{n:05}"),
            format!("p{cycle:06}-{n:05}"),
            READER,
        )
        .await;
        n += 1;
    }
    std::process::exit(4);
}

async fn forward_one(engine: &PosEngine, rng: &mut Rng) {
    let due = engine.due_for_forwarding(64).unwrap();
    if due.is_empty() {
        return;
    }
    let id = due[usize::try_from(rng.below(due.len() as u64)).unwrap()].clone();
    engine
        .record_forwarding(&id, PaymentEvent::StartForwarding)
        .await
        .unwrap();
    let event = match rng.below(10) {
        0 => return,
        1..=4 => PaymentEvent::Approved {
            processor_ref: format!("ref-{id}"),
        },
        5 => PaymentEvent::Declined {
            reason: DeclineReason::InsufficientFunds,
        },
        _ => PaymentEvent::ForwardFailed {
            error: ForwardErrorKind::NoAnswer,
            next_retry_at: None,
        },
    };
    let v = engine.record_forwarding(&id, event).await.unwrap();
    say(&format!("FWD {id} {}", status_name(v.status)));
}

// ---------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Plan {
    AfterAcks(u64),
    AfterFirstAckMs(u64),
    FromSpawnMs(u64),
}

#[derive(Debug, Default)]
struct Model {
    acked: BTreeMap<String, i64>,
    /// Final outcomes acknowledged (Approved / Declined).
    finals: BTreeMap<String, String>,
}

#[test]
fn acknowledged_payments_survive_power_cuts() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let number = |name: &str| {
        std::env::var(name).ok().map(|s| {
            s.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}: {s:?}"))
        })
    };
    let cuts = number(CUTS_ENV).unwrap_or(200);
    let per_store = number(PER_STORE_ENV).unwrap_or(20).max(1);
    let seed = number(SEED_ENV).unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_secs() ^ u64::from(t.subsec_nanos()) ^ u64::from(std::process::id())
    });
    let root = std::env::temp_dir().join(format!("pos-powercut-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut rig = Rig::mount(&root.join("disk"), &root.join("mnt"))
        .unwrap_or_else(|e| panic!("the power-cut test needs FUSE and cannot run: {e}"));
    // `POS_POWERCUT_LYING_DISK=1`: file fsyncs do nothing; the test must fail.
    if std::env::var_os("POS_POWERCUT_LYING_DISK").is_some() {
        rig.set_ignore_fsync(true);
    }
    println!(
        "power-cut test: {cuts} cuts, a fresh store every {per_store}, seed {seed} \
         ({SEED_ENV}={seed} replays the plan), disk image in {}",
        root.join("disk").display()
    );
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut model = Model::default();
    let mut store_dir = String::new();
    let (mut acked_total, mut before_first_ack, mut fresh_ok) = (0u64, 0u64, 0u64);
    let mut startup_ms = 100u64;
    for cycle in 0..cuts {
        if cycle % per_store == 0 {
            acked_total += model.acked.len() as u64;
            model = Model::default();
            let m = rig.mountpoint().to_path_buf();
            // The finished store goes: every cut writes and reloads the
            // whole disk image.
            if !store_dir.is_empty() {
                std::fs::remove_dir_all(m.join(&store_dir)).unwrap();
            }
            store_dir = format!("store-{:04}", cycle / per_store);
            std::fs::create_dir(m.join(&store_dir)).unwrap();
            std::fs::File::open(&m).unwrap().sync_all().unwrap();
        }
        // The first child of a store creates the key file, the store and
        // its anchor: cut it early more often.
        let early = cycle % per_store == 0 && rng.below(2) == 0;
        let plan = match if early { 9 } else { rng.below(10) } {
            0..=3 => Plan::AfterAcks(rng.range(1, 8)),
            4..=6 => Plan::AfterFirstAckMs(rng.range(1, 60)),
            _ => Plan::FromSpawnMs(rng.range(0, startup_ms + 20)),
        };
        let torn = rng.below(2) == 0;
        let child_seed = rng.next_u64();
        let dir = rig.mountpoint().join(&store_dir);
        let fail = |what: String| -> String {
            format!(
                "power-cut test failed at cut {cycle} (seed {seed}, plan {plan:?}, torn {torn}): \
                 {what}\nthe disk image is kept in {}",
                root.join("disk").join(&store_dir).display()
            )
        };
        let (acks, fwds, first_ack) = run_child(&exe, &dir, cycle, child_seed, plan)
            .unwrap_or_else(|e| panic!("{}", fail(e)));
        if let Some(ms) = first_ack {
            startup_ms = (startup_ms * 3 + ms) / 4;
        } else {
            before_first_ack += 1;
        }
        for (id, cents) in acks {
            assert!(
                model.acked.insert(id.clone(), cents).is_none(),
                "{id} acknowledged twice"
            );
        }
        for (id, state) in fwds {
            if state == "Approved" || state == "Declined" {
                model.finals.insert(id, state);
            }
        }
        let mut torn_rng = Rng::new(child_seed ^ 0x5eed);
        rig.power_cut(if torn { Some(&mut torn_rng) } else { None })
            .unwrap_or_else(|e| panic!("{}", fail(e)));
        let dir = rig.mountpoint().join(&store_dir);
        match rt.block_on(check(&dir, &model)) {
            Ok(fresh) => fresh_ok += u64::from(fresh),
            Err(e) => panic!("{}", fail(e)),
        }
        if (cycle + 1) % 50 == 0 {
            println!("  {} cuts, {:.1?}", cycle + 1, started.elapsed());
        }
    }
    acked_total += model.acked.len() as u64;
    let stats = rig.stats();
    rig.unmount().unwrap();
    println!(
        "power-cut test passed: {cuts} cuts in {:.1?}; {acked_total} payments acknowledged, \
         all present; {before_first_ack} cuts before the first ACK ({fresh_ok} of them found \
         no store or no key file); rig: {stats:?}",
        started.elapsed()
    );
    assert!(
        stats.pages_lost > 0,
        "no cut dropped any unsynced page: the rig tested nothing"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// Returns the acks, forwarding lines and ms to the first ack.
#[allow(clippy::type_complexity)]
fn run_child(
    exe: &Path,
    dir: &Path,
    cycle: u64,
    seed: u64,
    plan: Plan,
) -> Result<(Vec<(String, i64)>, Vec<(String, String)>, Option<u64>), String> {
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
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn the child: {e}"))?;
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut text = String::new();
            match r.read_line(&mut text) {
                Ok(0) | Err(_) => break,
                Ok(_) if !text.ends_with('\n') => break,
                Ok(_) => {
                    text.pop();
                    if tx.send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut acks = Vec::new();
    let mut fwds = Vec::new();
    let mut first_ack = None;
    let mut take = |line: &str, acks: &mut Vec<(String, i64)>| -> Result<(), String> {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ACK", id, cents] => {
                if first_ack.is_none() {
                    first_ack = Some(u64::try_from(spawned.elapsed().as_millis()).unwrap());
                }
                acks.push((
                    (*id).to_owned(),
                    cents.parse().map_err(|_| line.to_owned())?,
                ));
            }
            ["FWD", id, state] => fwds.push(((*id).to_owned(), (*state).to_owned())),
            _ if line.contains("ACK ") || line.contains("FWD ") => {
                return Err(format!("unparsable line {line:?}"))
            }
            _ => {}
        }
        Ok(())
    };
    let mut deadline = match plan {
        Plan::FromSpawnMs(ms) => Some(spawned + Duration::from_millis(ms)),
        _ => None,
    };
    let waited: Result<(), String> = loop {
        if let Plan::AfterAcks(n) = plan {
            if acks.len() as u64 >= n {
                break Ok(());
            }
        }
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(w) => w,
                None => break Ok(()),
            },
            None => STALL,
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let first = acks.is_empty();
                if let Err(e) = take(&line, &mut acks) {
                    break Err(e);
                }
                if let (Plan::AfterFirstAckMs(ms), true, false) = (plan, first, acks.is_empty()) {
                    deadline = Some(Instant::now() + Duration::from_millis(ms));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if deadline.is_some() => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!("the child printed nothing for {STALL:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("the child ended before it was killed".into())
            }
        }
    };
    let _ = child.kill();
    let status = child
        .wait()
        .map_err(|e| format!("wait for the child: {e}"))?;
    let _ = reader.join();
    let child_err = err_thread.join().unwrap_or_default();
    for line in rx.try_iter() {
        take(&line, &mut acks)?;
    }
    waited.map_err(|e| format!("{e}\nchild stderr:\n{child_err}"))?;
    use std::os::unix::process::ExitStatusExt;
    if status.signal() != Some(9) {
        return Err(format!(
            "the child ended by itself: {status}\nchild stderr:\n{child_err}"
        ));
    }
    Ok((acks, fwds, first_ack))
}

/// Reopens after a cut. `Ok(true)`: nothing to open yet (allowed only when
/// nothing was acknowledged).
async fn check(dir: &Path, model: &Model) -> Result<bool, String> {
    let nothing_acked = model.acked.is_empty() && model.finals.is_empty();
    let key = dir.join(KEY_FILE);
    let db = dir.join(STORE_FILE);
    if !key.exists() || !db.exists() {
        if nothing_acked {
            return Ok(true);
        }
        return Err(format!(
            "{} payments were acknowledged but the {} is gone",
            model.acked.len(),
            if key.exists() {
                "store file"
            } else {
                "key file"
            }
        ));
    }
    let provider = Arc::new(
        FileKeyProvider::open_or_create(&key)
            .map_err(|e| format!("the key file does not open: {e}"))?,
    );
    let store = match SqliteStore::open(&db, provider).await {
        Ok(s) => Arc::new(s),
        Err(e @ StoreError::RolledBack { .. }) => {
            return Err(format!("the anchor claims a head the database lost: {e:?}"))
        }
        Err(e @ StoreError::Tampered { .. }) => {
            return Err(format!("false integrity alarm after a power cut: {e:?}"))
        }
        Err(e) => return Err(format!("the store does not reopen: {e:?}")),
    };
    let engine = match PosEngine::open_with(config(dir), Arc::new(SystemClock), store.clone()).await
    {
        Ok(e) => e,
        Err(e) => {
            store.close().await;
            return Err(format!("the engine does not open: {e:?}"));
        }
    };
    let r = (|| {
        let listed = engine.list_payments().map_err(|e| e.to_string())?;
        let mut views = BTreeMap::new();
        for v in listed {
            let id = v.id.as_str().to_owned();
            if views.insert(id.clone(), v).is_some() {
                return Err(format!("{id} is stored twice"));
            }
        }
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
        }
        for (id, state) in &model.finals {
            let v = views
                .get(id)
                .ok_or_else(|| format!("forwarded payment {id} is missing"))?;
            if status_name(v.status) != state {
                return Err(format!(
                    "{id} was acknowledged {state} and is now {:?}",
                    v.status
                ));
            }
        }
        for id in views.keys() {
            if !id.starts_with('p') {
                return Err(format!("a payment no child took: {id}"));
            }
        }
        Ok(())
    })();
    engine.close();
    store.close().await;
    r.map(|()| false)
}
