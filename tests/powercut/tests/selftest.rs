//! The rig must be able to fail: a writer that skips fsync loses data under
//! it, and one that syncs keeps it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::PathBuf;

use pos_powercut::{Rig, Rng};

fn root(name: &str) -> PathBuf {
    let r = std::env::temp_dir().join(format!("pos-powercut-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&r);
    r
}

fn sync_dir(p: &std::path::Path) {
    std::fs::File::open(p).unwrap().sync_all().unwrap();
}

#[test]
fn the_rig_loses_what_was_not_synced() {
    let r = root("self");
    let mut rig = Rig::mount(&r.join("disk"), &r.join("mnt"))
        .unwrap_or_else(|e| panic!("FUSE cannot be used: {e}"));
    let m = rig.mountpoint().to_path_buf();

    // Synced file and folder: kept.
    let mut f = std::fs::File::create(m.join("synced")).unwrap();
    f.write_all(b"kept").unwrap();
    f.sync_all().unwrap();
    drop(f);
    sync_dir(&m);
    // Its later, unsynced append: lost.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("synced"))
        .unwrap();
    f.write_all(b" and lost").unwrap();
    drop(f);
    // A rename whose folder is not synced: undone.
    std::fs::write(m.join("a"), b"A").unwrap();
    let fa = std::fs::File::open(m.join("a")).unwrap();
    fa.sync_all().unwrap();
    sync_dir(&m);
    std::fs::rename(m.join("a"), m.join("b")).unwrap();
    // Created and fsynced, but its folder not: the name vanishes.
    let mut f = std::fs::File::create(m.join("unnamed")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(std::fs::read(m.join("synced")).unwrap(), b"kept and lost");
    drop(fa);

    // A writer that skips fsync and "acknowledges" each record.
    let mut acked = Vec::new();
    let mut w = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("synced"))
        .unwrap();
    for i in 0..100u32 {
        writeln!(w, "record {i}").unwrap();
        acked.push(format!("record {i}"));
    }
    drop(w);

    rig.power_cut(None).unwrap();
    let m = rig.mountpoint().to_path_buf();
    assert_eq!(std::fs::read(m.join("synced")).unwrap(), b"kept");
    assert!(
        !m.join("unnamed").exists(),
        "a name whose folder was not synced survived"
    );
    assert!(
        m.join("a").exists() && !m.join("b").exists(),
        "an unsynced rename survived"
    );
    let text = std::fs::read_to_string(m.join("synced")).unwrap();
    let lost = acked.iter().filter(|a| !text.contains(a.as_str())).count();
    assert_eq!(
        lost, 100,
        "the no-fsync writer must lose its acknowledged records"
    );

    // A writer that syncs keeps them all; a torn cut lets a prefix of the
    // unsynced pages through and nothing else.
    let mut w = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("synced"))
        .unwrap();
    for i in 0..10u32 {
        writeln!(w, "durable {i}").unwrap();
        w.sync_data().unwrap();
    }
    let big = vec![b'x'; 64 * 1024];
    w.write_all(&big).unwrap();
    drop(w);
    let mut rng = Rng::new(7);
    rig.power_cut(Some(&mut rng)).unwrap();
    let text = std::fs::read_to_string(rig.mountpoint().join("synced")).unwrap();
    for i in 0..10u32 {
        assert!(
            text.contains(&format!("durable {i}\n")),
            "a synced record was lost"
        );
    }
    let stats = rig.stats();
    assert!(stats.pages_lost > 0 && stats.names_lost > 0, "{stats:?}");
    println!(
        "self-test: {stats:?}, {} bytes survived the torn cut",
        text.len()
    );
    rig.unmount().unwrap();
    std::fs::remove_dir_all(&r).unwrap();
}
