//! Time, made safe for deadlines (SPEC B13).
//!
//! Owns the [`Clock`] trait (what the platform gives: wall time and a
//! time-since-boot that keeps counting while the device sleeps), the
//! [`VirtualClock`] used by tests and the demo, and [`TrustedClock`], the only
//! source of "now" the rules use. Within one boot the trusted clock advances
//! with time-since-boot alone, so moving the wall clock back (or forward) does
//! nothing; across a reboot it restarts from the wall clock but never below the
//! persisted floor, so neither a reboot nor a wall-clock change can extend an
//! acceptance window or a forwarding deadline.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating at the far future.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_ms(d)))
    }

    /// Time from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Time from `self` to `later`; zero when already past.
    pub fn until(self, later: Timestamp) -> Duration {
        later.since(self)
    }

    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.0)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(dt) => write!(f, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "Timestamp({})", self.0),
        }
    }
}

/// Milliseconds in `d`, saturating at `i64::MAX`.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What the platform provides. Implementations must be cheap and thread-safe.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Wall-clock time. May jump in either direction (user, NTP, timezone bugs).
    fn wall_now(&self) -> Timestamp;
    /// Time since the device booted, counting sleep (`CLOCK_BOOTTIME` on
    /// Linux/Android, `mach_continuous_time` on iOS). Restarts at a reboot.
    fn since_boot(&self) -> Duration;
}

/// The real clock of this process.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_now(&self) -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }

    fn since_boot(&self) -> Duration {
        boot_time()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_time() -> Duration {
    // CLOCK_BOOTTIME counts suspend, unlike Instant (CLOCK_MONOTONIC): one
    // vDSO call, no file to read (reading /proc/uptime cost an open, a read
    // and a close per clock reading, several per capture).
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    match (u64::try_from(t.tv_sec), u32::try_from(t.tv_nsec)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Duration::new(secs, nanos),
        _ => process_elapsed(),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_time() -> Duration {
    // Apps on Apple platforms supply a Clock backed by mach_continuous_time
    // through the FFI; this fallback counts from process start.
    process_elapsed()
}

fn process_elapsed() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// A clock that moves only when told: deterministic tests and the demo.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    inner: Arc<Mutex<VirtualState>>,
}

#[derive(Debug)]
struct VirtualState {
    wall: Timestamp,
    boot: Duration,
}

impl VirtualClock {
    /// Starts at `wall`, just after a boot.
    pub fn new(wall: Timestamp) -> Self {
        VirtualClock {
            inner: Arc::new(Mutex::new(VirtualState {
                wall,
                boot: Duration::from_secs(60),
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut VirtualState) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Real time passes: both clocks move forward.
    pub fn advance(&self, d: Duration) {
        self.with(|s| {
            s.wall = s.wall.plus(d);
            s.boot = s.boot.saturating_add(d);
        });
    }

    /// Someone sets the wall clock (either direction); time-since-boot is unchanged.
    pub fn set_wall(&self, wall: Timestamp) {
        self.with(|s| s.wall = wall);
    }

    /// The device reboots after being off for `off_for`: time-since-boot restarts.
    pub fn reboot(&self, off_for: Duration) {
        self.with(|s| {
            s.wall = s.wall.plus(off_for);
            s.boot = Duration::from_secs(5);
        });
    }
}

impl Clock for VirtualClock {
    fn wall_now(&self) -> Timestamp {
        self.with(|s| s.wall)
    }

    fn since_boot(&self) -> Duration {
        self.with(|s| s.boot)
    }
}

/// The rules' only notion of "now": monotonic, never behind the persisted
/// floor, and immune to wall-clock changes within a boot.
#[derive(Debug)]
pub struct TrustedClock {
    clock: Arc<dyn Clock>,
    anchor: Mutex<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    trusted: Timestamp,
    boot: Duration,
    /// Highest value ever returned; `now()` never goes below it.
    high_water: Timestamp,
}

impl TrustedClock {
    /// Starts a trusted clock. `floor` is the last trusted time persisted by
    /// a previous run (or `None` on first start).
    pub fn start(clock: Arc<dyn Clock>, floor: Option<Timestamp>) -> Self {
        let wall = clock.wall_now();
        let trusted = floor.map_or(wall, |f| wall.max(f));
        let anchor = Anchor {
            trusted,
            boot: clock.since_boot(),
            high_water: trusted,
        };
        TrustedClock {
            clock,
            anchor: Mutex::new(anchor),
        }
    }

    /// The current trusted time.
    pub fn now(&self) -> Timestamp {
        let boot = self.clock.since_boot();
        let mut a = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        let t = if boot >= a.boot {
            a.trusted.plus(boot - a.boot)
        } else {
            // Time-since-boot went backwards: the device rebooted while we
            // were alive (or the platform clock misbehaved). Re-anchor on the
            // wall clock, never below what we already handed out.
            let t = self.clock.wall_now().max(a.high_water);
            a.trusted = t;
            a.boot = boot;
            t
        };
        let t = t.max(a.high_water);
        a.high_water = t;
        t
    }

    /// The value to persist so that the next start never goes below it.
    pub fn floor(&self) -> Timestamp {
        self.now()
    }

    /// The platform wall clock, for display only (receipts, logs): never for rules.
    pub fn wall_for_display(&self) -> Timestamp {
        self.clock.wall_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_boot_clock_is_read_and_never_goes_back() {
        let a = SystemClock.since_boot();
        let b = SystemClock.since_boot();
        assert!(a > Duration::ZERO && b >= a, "{a:?} then {b:?}");
    }

    const H: Duration = Duration::from_secs(3600);

    fn setup() -> (VirtualClock, TrustedClock) {
        let v = VirtualClock::new(Timestamp(1_800_000_000_000));
        let t = TrustedClock::start(Arc::new(v.clone()), None);
        (v, t)
    }

    #[test]
    fn advances_with_real_time() {
        let (v, t) = setup();
        let t0 = t.now();
        v.advance(H);
        assert_eq!(t.now().since(t0), H);
    }

    #[test]
    fn moving_the_wall_clock_back_changes_nothing() {
        let (v, t) = setup();
        let t0 = t.now();
        v.advance(H);
        v.set_wall(Timestamp(1_000));
        assert_eq!(t.now().since(t0), H);
    }

    #[test]
    fn moving_the_wall_clock_forward_changes_nothing_within_a_boot() {
        let (v, t) = setup();
        let t0 = t.now();
        v.set_wall(t0.plus(H * 100));
        assert_eq!(t.now(), t0);
    }

    #[test]
    fn reboot_with_wall_clock_set_back_never_goes_below_the_floor() {
        let (v, t) = setup();
        v.advance(H);
        let floor = t.floor();
        v.reboot(Duration::from_secs(10));
        v.set_wall(Timestamp(0));
        let t2 = TrustedClock::start(Arc::new(v.clone()), Some(floor));
        assert!(t2.now() >= floor);
        v.advance(H);
        assert_eq!(t2.now().since(floor), H);
    }

    #[test]
    fn reboot_while_running_is_detected_and_monotonic() {
        let (v, t) = setup();
        v.advance(H);
        let before = t.now();
        v.reboot(Duration::from_secs(120));
        v.set_wall(Timestamp(0));
        assert!(t.now() >= before);
        v.advance(H);
        assert!(t.now() >= before.plus(H));
    }

    #[test]
    fn system_clock_boot_time_is_monotonic() {
        let c = SystemClock;
        let a = c.since_boot();
        let b = c.since_boot();
        assert!(b >= a);
        assert!(c.wall_now().millis() > 1_600_000_000_000);
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(Timestamp(i64::MAX).plus(H), Timestamp(i64::MAX));
        assert_eq!(Timestamp(0).since(Timestamp(10)), Duration::ZERO);
        assert_eq!(Timestamp(0).until(Timestamp(1000)), Duration::from_secs(1));
    }
}
