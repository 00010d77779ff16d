//! The processor's time in status answers (`time_ms`) and the forwarding
//! driver correcting the engine's trusted clock with it (B13).

#![allow(clippy::unwrap_used)]

use pos_test_support::sim as support;

use std::sync::Arc;
use std::time::Duration;

use pos_core::clock::VirtualClock;
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::{Gateway, ServiceStatus};
use pos_sim::{SimConfig, Simulator};
use support::{PaidWith, T0};
const MIN_MS: i64 = 60_000;
/// Only bounds a hang: the simulator answers at once, but a loaded test
/// machine may not run it for a while.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_status_answer_carries_the_processors_time_when_it_has_a_clock() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let g = support::gateway(&sim, LIMIT);
    let a = g.status_with_time().unwrap();
    assert_eq!(a.status, ServiceStatus::Available);
    assert_eq!(a.processor_time, None);
    let processor = VirtualClock::new(T0);
    sim.set_clock(Some(Arc::new(processor.clone())));
    assert_eq!(g.status_with_time().unwrap().processor_time, Some(T0));
    assert_eq!(g.status().unwrap(), ServiceStatus::Available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_probe_corrects_a_clock_that_a_reboot_set_forward() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    // Forwarding starts by itself (the default).
    let mut rig = support::rig(sim.processor_key())
        .configure(|c| {
            c.device_id = "till-9".into();
            c.forwarding = ForwardingConfig::default();
        })
        .open()
        .await;
    let card = &pos_sim::test_cards()[0];
    rig.sale(500).paid_with(card).sell(&rig.engine).await;
    rig.engine.close();
    // A reboot leaves the device's wall clock 40 minutes ahead; the
    // processor's clock says the real time.
    rig.clock.reboot(Duration::ZERO);
    rig.clock.set_wall(T0.plus(Duration::from_secs(40 * 60)));
    sim.set_clock(Some(Arc::new(VirtualClock::new(T0))));
    rig.reopen().await;
    let engine = &rig.engine;
    // The probe is sent after the gateway is set and answered before its
    // correction is audited: its round trip is at most the real time this
    // wait takes.
    let waiting = std::time::Instant::now();
    engine.set_gateway(support::gateway(&sim, LIMIT)).unwrap();
    // The driver probes at once (connectivity is unknown after a start).
    let mut corrections = Vec::new();
    while corrections.is_empty() {
        assert!(waiting.elapsed() < LIMIT, "no clock correction");
        tokio::time::sleep(Duration::from_millis(25)).await;
        corrections = support::clock_corrections(engine);
    }
    let round_trip_at_most = i64::try_from(waiting.elapsed().as_millis()).unwrap();
    let (error_ms, step_ms) = corrections[0];
    // The round trip widens the band: the error is 40 minutes less at most
    // that.
    assert!(
        (-40 * MIN_MS..=-40 * MIN_MS + round_trip_at_most).contains(&error_ms),
        "{error_ms} (round trip at most {round_trip_at_most} ms)"
    );
    assert_eq!(step_ms, -15 * MIN_MS);
    engine.close();
}
