//! The forwarding driver's threads end with the engine, even when the app
//! drops its last handle without `close()` while nothing is scheduled (the
//! driver then waits for a notification, with no timer). Alone in its test
//! binary: it counts this process's threads by name.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pos_core::forwarding::ForwardingConfig;

/// This process's threads named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_dropped_without_close_leaves_no_timer_thread() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return; // Linux only: the count reads /proc.
    }
    let rig = pos_test_support::Rig::builder()
        .configure(|c| {
            c.forwarding = ForwardingConfig {
                automatic: true,
                jitter_seed: Some(7),
                ..ForwardingConfig::default()
            };
        })
        .offline(false)
        .open()
        .await;
    // Online with nothing pending: nothing is scheduled.
    assert_eq!(rig.engine.next_wake_up().unwrap(), None);
    // The thread names itself once it runs: wait for it.
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while threads_named("pos-core-timer") != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(started.is_ok(), "no timer thread");
    drop(rig);
    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        while threads_named("pos-core-timer") > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the driver and its timer thread outlived the engine"
    );
}
