//! Wall-clock jumps and app restarts (SPEC B13): within one boot the trusted
//! clock goes on from the time since boot, whatever the wall clock says; the
//! processor's time corrects a clock that a reboot set wrong. On a virtual
//! clock and an in-memory store.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pos_core::checkout::PaymentView;
use pos_core::clock::Timestamp;
use pos_core::money::Currency;
use pos_core::policy::Policy;
use pos_core::rules::Refusal;
use pos_core::{PosEngine, PosError};
use pos_test_support::{clock_corrections, Reader, Rig, T0};

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn at(d: Duration) -> Timestamp {
    T0.plus(d)
}

/// Square Reader: a one-hour acceptance window, a 24-hour forwarding deadline.
fn policy() -> Policy {
    Policy::square_reader(Currency::parse("USD").unwrap()).with_enabled(true)
}

/// An engine at `T0`, offline (the outage begins at `T0`), a cashier signed
/// in, a vendor reader of the preset's model paired earlier (online).
async fn offline_rig() -> Rig {
    let policy = policy();
    let model = policy.offline_readers.iter().next().unwrap().clone();
    Rig::builder()
        .policy(policy)
        .stored_reader(Reader::vendor("SN-1", &model))
        .open()
        .await
}

/// The app is closed and opened again on the same store and clock (an app
/// restart; a reboot when the clock was rebooted first), still offline.
async fn restart(rig: &mut Rig) {
    rig.reopen().await;
    rig.network_down().await;
}

fn time_left(rig: &Rig) -> Duration {
    let ms = rig.engine.status().unwrap().time_left_ms.unwrap();
    Duration::from_millis(u64::try_from(ms).unwrap())
}

fn window_closed(r: Result<PaymentView, PosError>) -> bool {
    matches!(
        r,
        Err(PosError::Refused {
            refusal: Refusal::AcceptanceWindowClosed { .. }
        })
    )
}

#[tokio::test]
async fn wall_clock_set_forward_then_an_app_restart_expires_nothing() {
    let mut rig = offline_rig().await;
    let order = rig.order(3_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(p.deadline, at(24 * HOUR));
    rig.clock.advance(10 * MIN);
    // Two days ahead, then the app is closed and opened again: no reboot.
    rig.clock.set_wall(at(48 * HOUR));
    restart(&mut rig).await;
    assert!(rig.engine.tick().await.unwrap().expired.is_empty());
    assert_eq!(time_left(&rig), 24 * HOUR - 10 * MIN);
    // The acceptance window is still open, and the new payment's deadline
    // is the session's, measured in real time.
    let q = rig.pay(&order, 1_000).await.unwrap();
    assert_eq!(q.taken_at, at(10 * MIN));
    assert_eq!(q.deadline, at(24 * HOUR));
    // Both expire when real time reaches the deadline, not before.
    rig.clock
        .advance(24 * HOUR - 10 * MIN - Duration::from_secs(1));
    assert!(rig.engine.tick().await.unwrap().expired.is_empty());
    rig.clock.advance(Duration::from_secs(1));
    assert_eq!(rig.engine.tick().await.unwrap().expired.len(), 2);
}

#[tokio::test]
async fn wall_clock_set_back_then_an_app_restart_extends_no_window() {
    let mut rig = offline_rig().await;
    let order = rig.order(3_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    // 50 minutes pass with nothing persisted (no tick), then the wall clock
    // goes back a day and the app restarts: no reboot.
    rig.clock.advance(50 * MIN);
    rig.clock.set_wall(Timestamp(T0.0 - 86_400_000));
    restart(&mut rig).await;
    assert_eq!(time_left(&rig), 24 * HOUR - 50 * MIN);
    // 10 minutes of the hour are left, not more.
    rig.clock.advance(10 * MIN);
    assert!(window_closed(rig.pay(&order, 1_000).await));
    rig.clock.advance(23 * HOUR - Duration::from_secs(1));
    assert!(rig.engine.tick().await.unwrap().expired.is_empty());
    rig.clock.advance(Duration::from_secs(1));
    assert_eq!(rig.engine.tick().await.unwrap().expired.len(), 1);
}

#[tokio::test]
async fn repeated_restarts_with_the_wall_clock_moving_both_ways_keep_real_time() {
    let mut rig = offline_rig().await;
    let order = rig.order(3_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    for (i, wall) in [72 * HOUR, Duration::ZERO, 500 * HOUR, HOUR]
        .into_iter()
        .enumerate()
    {
        rig.clock.advance(MIN);
        rig.clock.set_wall(Timestamp(T0.0 - 86_400_000).plus(wall));
        restart(&mut rig).await;
        let elapsed = MIN * u32::try_from(i + 1).unwrap();
        assert_eq!(time_left(&rig), 24 * HOUR - elapsed, "restart {i}");
    }
}

/// Corrects the engine's clock from the processor's time `real` (a zero
/// round trip) until it needs no more: the steps taken, in ms.
async fn correct_fully(engine: &PosEngine, real: Timestamp) -> Vec<i64> {
    let mut steps = Vec::new();
    while let Some(c) = engine.correct_clock(real, Duration::ZERO).await.unwrap() {
        assert!(c.step_ms.unsigned_abs() <= 15 * 60_000, "{c:?}");
        steps.push(c.step_ms);
        assert!(steps.len() < 100, "the corrections never end");
    }
    steps
}

#[tokio::test]
async fn the_processors_time_brings_back_a_clock_that_a_reboot_set_forward() {
    let mut rig = offline_rig().await;
    let order = rig.order(3_000).await;
    let p = rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(10 * MIN);
    // A reboot, the wall clock 40 minutes ahead: only a reboot lets the
    // wall clock move trusted time, and here it moves it wrong.
    rig.clock.reboot(Duration::ZERO);
    rig.clock.set_wall(at(50 * MIN));
    restart(&mut rig).await;
    assert_eq!(time_left(&rig), 24 * HOUR - 50 * MIN);
    // The processor's time, real time, brings it back in bounded steps.
    let real = at(10 * MIN);
    let minutes = |m: i64| m * 60_000;
    let steps = correct_fully(&rig.engine, real).await;
    assert_eq!(steps, vec![minutes(-15), minutes(-15), minutes(-10)]);
    assert_eq!(
        clock_corrections(&rig.engine),
        vec![
            (minutes(-40), minutes(-15)),
            (minutes(-25), minutes(-15)),
            (minutes(-10), minutes(-10)),
        ]
    );
    // The clock never went back: it holds still until real time catches up,
    // then follows it.
    assert_eq!(time_left(&rig), 24 * HOUR - 50 * MIN);
    rig.clock.advance(40 * MIN);
    assert_eq!(time_left(&rig), 24 * HOUR - 50 * MIN);
    rig.clock.advance(9 * MIN);
    assert_eq!(time_left(&rig), 24 * HOUR - 59 * MIN);
    // The correction survives an app restart in the same boot.
    restart(&mut rig).await;
    assert_eq!(time_left(&rig), 24 * HOUR - 59 * MIN);
    // The session begun at T0 (before the reboot) gets its real hour back,
    // not more; the payment expires at its real deadline.
    rig.pay(&order, 1_000).await.unwrap();
    rig.clock.advance(MIN);
    assert!(window_closed(rig.pay(&order, 1_000).await));
    rig.clock.advance(23 * HOUR - Duration::from_secs(1));
    assert!(rig.engine.tick().await.unwrap().expired.is_empty());
    rig.clock.advance(Duration::from_secs(1));
    let expired = rig.engine.tick().await.unwrap().expired;
    assert_eq!(expired.len(), 2);
    assert!(expired.contains(&p.id));
}

#[tokio::test]
async fn the_processors_time_moves_forward_a_clock_that_a_reboot_set_back() {
    let mut rig = offline_rig().await;
    let order = rig.order(3_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    // 30 minutes with nothing persisted, then the device is off for an
    // hour and comes back with its wall clock a day behind: trusted time
    // restarts from the floor, 90 minutes behind real time.
    rig.clock.advance(30 * MIN);
    rig.clock.reboot(HOUR);
    rig.clock.set_wall(Timestamp(T0.0 - 86_400_000));
    restart(&mut rig).await;
    assert_eq!(time_left(&rig), 24 * HOUR);
    let real = at(90 * MIN);
    let steps = correct_fully(&rig.engine, real).await;
    assert_eq!(steps, vec![15 * 60_000; 6]);
    assert_eq!(time_left(&rig), 24 * HOUR - 90 * MIN);
    // The acceptance window closed in real time 30 minutes ago.
    assert!(window_closed(rig.pay(&order, 1_000).await));
    restart(&mut rig).await;
    assert_eq!(time_left(&rig), 24 * HOUR - 90 * MIN);
    rig.clock.advance(24 * HOUR - 90 * MIN);
    assert_eq!(rig.engine.tick().await.unwrap().expired.len(), 1);
}

#[tokio::test]
async fn the_processors_time_within_the_round_trip_changes_nothing() {
    let rig = offline_rig().await;
    let order = rig.order(3_000).await;
    rig.pay(&order, 1_000).await.unwrap();
    let before = time_left(&rig);
    // The answer was stamped between request and answer: with 10 s of
    // round trip, a device 8 s ahead of the stamp may be right.
    assert!(rig
        .engine
        .correct_clock(Timestamp(T0.0 - 8_000), Duration::from_secs(10))
        .await
        .unwrap()
        .is_none());
    assert_eq!(time_left(&rig), before);
    assert!(clock_corrections(&rig.engine).is_empty());
}
