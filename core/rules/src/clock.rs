//! Time, made safe for deadlines (SPEC B13).
//!
//! Owns the [`Clock`] trait (what the platform gives: wall time, a
//! time-since-boot that keeps counting while the device sleeps, and an id of
//! the current boot), the [`VirtualClock`] used by tests and the demo, and
//! [`TrustedClock`], the only source of "now" the rules use.
//!
//! # How trusted time moves
//!
//! Trusted time is time-since-boot plus an offset, the [`ClockAnchor`],
//! which the engine persists with the clock floor (the highest trusted time
//! it recorded). Trusted time never goes below the floor nor below a value
//! it already returned.
//!
//! - **Within one boot**, the offset never changes with the wall clock: an
//!   app restart resumes from the persisted offset (same boot id, and
//!   time-since-boot not below the persisted reading), so setting the wall
//!   clock forward or back, then restarting the app, expires nothing early
//!   and extends nothing.
//! - **After a reboot** (another boot id, or time-since-boot below the
//!   persisted reading), and on the very first start, trusted time restarts
//!   from the wall clock, never below the floor. This is the only way the
//!   wall clock can move it.
//! - **The processor's time** ([`TrustedClock::plan_correction`]) moves the
//!   offset towards the band that must hold real time: from the processor's
//!   time `P` when its answer was stamped to `P` plus the request's round
//!   trip. A step is at most [`MAX_CORRECTION_STEP`]; errors within
//!   [`CORRECTION_TOLERANCE`] are ignored; the engine audits every step.
//!   Forward, windows end sooner (real time is at least `P`). Backward, the
//!   clock never returns a time earlier than one it returned (stamps and
//!   audit entries stay in order): it holds still until real time catches
//!   up. A window measured from a time stamped before the clock went wrong
//!   then ends at its real end; one measured from a time stamped while the
//!   clock was ahead ends later in real time by at most the steps taken
//!   since, each bounded and audited.
//!
//! # What is read on each platform ([`SystemClock`])
//!
//! | platform | time since boot | boot id |
//! |---|---|---|
//! | Linux, Android | `CLOCK_BOOTTIME` (counts suspend) | `/proc/sys/kernel/random/boot_id` |
//! | iOS, macOS | `CLOCK_MONOTONIC`, which on Darwin counts sleep (`mach_continuous_time`) | none: a reboot is seen when time-since-boot is below the persisted reading |
//! | others | time since the process started | none |
//!
//! Without a boot id, a reboot after which the device ran longer than the
//! persisted reading before the app opened is not seen: trusted time then
//! resumes from the old offset, behind real time (windows run longer) until
//! the processor's time corrects it.

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
    /// Linux/Android, `CLOCK_MONOTONIC` on Apple platforms). Restarts at a
    /// reboot.
    fn since_boot(&self) -> Duration;
    /// An id of the current boot, the same for every process of one boot
    /// and different after a reboot; `None` when the platform has none (a
    /// reboot is then seen only when `since_boot` goes backwards).
    fn boot_id(&self) -> Option<String> {
        None
    }
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

    fn boot_id(&self) -> Option<String> {
        static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        ID.get_or_init(read_boot_id).clone()
    }
}

/// The kernel's random id of this boot (readable by apps on Android too).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_boot_id() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = raw.trim();
    let ok = (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then(|| id.to_owned())
}

/// No boot id that std or rustix can read without `unsafe` (Darwin's
/// `kern.bootsessionuuid` is a sysctl): reboots are seen when time since
/// boot goes backwards.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_boot_id() -> Option<String> {
    None
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

#[cfg(target_vendor = "apple")]
fn boot_time() -> Duration {
    // Darwin's CLOCK_MONOTONIC is mach_continuous_time: it counts sleep
    // (CLOCK_UPTIME_RAW, and Instant, do not).
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    match (u64::try_from(t.tv_sec), u32::try_from(t.tv_nsec)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Duration::new(secs, nanos),
        _ => process_elapsed(),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn boot_time() -> Duration {
    // No boot clock: counts from process start (every start looks like a
    // reboot, so trusted time restarts from the wall clock, never below
    // the floor).
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
    /// The boot id tells clocks and reboots apart: a new clock is a new boot.
    clock: u64,
    reboots: u64,
}

impl VirtualClock {
    /// Starts at `wall`, just after a boot (a boot of its own: two clocks
    /// made with `new` are two boots; clones share one).
    pub fn new(wall: Timestamp) -> Self {
        static CLOCKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CLOCKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        VirtualClock {
            inner: Arc::new(Mutex::new(VirtualState {
                wall,
                boot: Duration::from_secs(60),
                clock: n,
                reboots: 0,
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
            s.reboots = s.reboots.saturating_add(1);
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

    fn boot_id(&self) -> Option<String> {
        Some(self.with(|s| format!("virtual-{}-{}", s.clock, s.reboots)))
    }
}

/// Trusted time minus time since boot in one boot: what lets an app
/// restart resume trusted time without the wall clock. Persisted with the
/// clock floor (`ledger::Write::Clock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnchor {
    /// The boot it belongs to ([`Clock::boot_id`]).
    pub boot_id: Option<String>,
    /// Trusted time minus time since boot, in ms.
    pub offset_ms: i64,
    /// Time since boot when it was saved, in ms: lower after a reboot.
    pub since_boot_ms: i64,
}

impl ClockAnchor {
    /// Whether a reading of `boot_id` and `since_boot` can be in the same
    /// boot as this anchor: time since boot has not gone back and, when
    /// both are known, the boot ids are equal.
    pub fn same_boot(&self, boot_id: Option<&str>, since_boot: Duration) -> bool {
        if duration_ms(since_boot) < self.since_boot_ms {
            return false;
        }
        match (self.boot_id.as_deref(), boot_id) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Whether `saved`, the persisted anchor, should be replaced by this
    /// one: another boot or offset, or a time-since-boot reading older than
    /// [`ANCHOR_REFRESH`] (a fresher one sees more reboots where there is
    /// no boot id).
    pub fn supersedes(&self, saved: Option<&ClockAnchor>) -> bool {
        saved.is_none_or(|a| {
            a.boot_id != self.boot_id
                || a.offset_ms != self.offset_ms
                || self.since_boot_ms.saturating_sub(a.since_boot_ms) >= duration_ms(ANCHOR_REFRESH)
        })
    }
}

/// How old the persisted time-since-boot reading may get before the engine
/// saves a fresh one.
pub const ANCHOR_REFRESH: Duration = Duration::from_secs(10 * 60);

/// The most one correction from the processor's time moves the trusted clock.
pub const MAX_CORRECTION_STEP: Duration = Duration::from_secs(15 * 60);

/// Differences from the processor's time up to this are not corrected.
pub const CORRECTION_TOLERANCE: Duration = Duration::from_secs(2);

/// A correction of the trusted clock from the processor's time, planned by
/// [`TrustedClock::plan_correction`] and applied, once persisted, by
/// [`TrustedClock::apply_correction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockCorrection {
    /// Trusted time when it was planned.
    pub before: Timestamp,
    /// Trusted time right after it: later than `before` after a forward
    /// step; `before` itself after a backward step (the clock holds still
    /// until real time catches up).
    pub after: Timestamp,
    /// How far the clock (time since boot plus the offset) is from the band
    /// that holds real time, in ms: positive when the device is behind.
    pub error_ms: i64,
    /// How far the offset moves, in ms (the error, at most
    /// [`MAX_CORRECTION_STEP`] either way).
    pub step_ms: i64,
    /// The anchor to persist with it.
    pub anchor: ClockAnchor,
    /// The offset it was planned from.
    offset_before: i64,
}

/// The rules' only notion of "now": monotonic, never behind the persisted
/// floor, and immune to wall-clock changes within a boot (see the module
/// docs).
#[derive(Debug)]
pub struct TrustedClock {
    clock: Arc<dyn Clock>,
    state: Mutex<TrustState>,
}

#[derive(Debug, Clone)]
struct TrustState {
    boot_id: Option<String>,
    /// Trusted time minus time since boot, in ms.
    offset_ms: i64,
    /// The latest time-since-boot reading.
    last_boot: Duration,
    /// Highest value ever returned; `now()` never goes below it.
    high_water: Timestamp,
}

impl TrustedClock {
    /// Starts a trusted clock with no persisted anchor: from the wall
    /// clock, never below `floor` (the last trusted time persisted by a
    /// previous run, or `None` on first start).
    pub fn start(clock: Arc<dyn Clock>, floor: Option<Timestamp>) -> Self {
        Self::resume(clock, floor, None)
    }

    /// Starts a trusted clock from what a previous run persisted: in the
    /// same boot as `anchor`, time since boot plus its offset; otherwise
    /// the wall clock. Never below `floor`.
    pub fn resume(
        clock: Arc<dyn Clock>,
        floor: Option<Timestamp>,
        anchor: Option<&ClockAnchor>,
    ) -> Self {
        let boot = clock.since_boot();
        let boot_id = clock.boot_id();
        let boot_ms = duration_ms(boot);
        let (offset_ms, trusted) = match anchor.filter(|a| a.same_boot(boot_id.as_deref(), boot)) {
            Some(a) => {
                let t = Timestamp(boot_ms.saturating_add(a.offset_ms));
                // Below the floor while a backward correction holds the
                // clock: the offset stays, the floor holds it.
                (a.offset_ms, floor.map_or(t, |f| t.max(f)))
            }
            None => {
                let wall = clock.wall_now();
                let t = floor.map_or(wall, |f| wall.max(f));
                (t.0.saturating_sub(boot_ms), t)
            }
        };
        TrustedClock {
            clock,
            state: Mutex::new(TrustState {
                boot_id,
                offset_ms,
                last_boot: boot,
                high_water: trusted,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrustState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current trusted time.
    pub fn now(&self) -> Timestamp {
        let boot = self.clock.since_boot();
        let mut s = self.lock();
        Self::advance(&self.clock, &mut s, boot)
    }

    fn advance(clock: &Arc<dyn Clock>, s: &mut TrustState, boot: Duration) -> Timestamp {
        let boot_ms = duration_ms(boot);
        if boot < s.last_boot {
            // Time since boot went backwards while we were alive: the
            // platform clock misbehaved (a process does not outlive a
            // reboot). Re-anchor on the wall clock, never below what we
            // already handed out.
            let t = clock.wall_now().max(s.high_water);
            s.offset_ms = t.0.saturating_sub(boot_ms);
            s.boot_id = clock.boot_id();
        }
        s.last_boot = boot;
        let t = Timestamp(boot_ms.saturating_add(s.offset_ms)).max(s.high_water);
        s.high_water = t;
        t
    }

    /// The value to persist so that the next start never goes below it.
    pub fn floor(&self) -> Timestamp {
        self.now()
    }

    /// The anchor to persist so that the next start in this boot resumes
    /// from it.
    pub fn anchor(&self) -> ClockAnchor {
        let boot = self.clock.since_boot();
        let mut s = self.lock();
        Self::advance(&self.clock, &mut s, boot);
        ClockAnchor {
            boot_id: s.boot_id.clone(),
            offset_ms: s.offset_ms,
            since_boot_ms: duration_ms(s.last_boot),
        }
    }

    /// The correction that the processor's time `processor` calls for,
    /// read from an answer that took `round_trip` from request to answer:
    /// real time now lies between `processor` and `processor + round_trip`.
    /// `None` when trusted time is within that band (give or take
    /// [`CORRECTION_TOLERANCE`]). Changes nothing: the caller persists the
    /// correction, then applies it.
    pub fn plan_correction(
        &self,
        processor: Timestamp,
        round_trip: Duration,
    ) -> Option<ClockCorrection> {
        let boot = self.clock.since_boot();
        let mut s = self.lock();
        let now = Self::advance(&self.clock, &mut s, boot);
        // Measured on time since boot plus the offset, not on `now`: while
        // an earlier backward step holds the clock, `now` is ahead of it
        // and would count that step again.
        let raw = duration_ms(s.last_boot).saturating_add(s.offset_ms);
        let tolerance = duration_ms(CORRECTION_TOLERANCE);
        let low = processor.0;
        let high = processor.0.saturating_add(duration_ms(round_trip));
        let error_ms = if raw < low {
            low.saturating_sub(raw)
        } else if raw > high {
            high.saturating_sub(raw)
        } else {
            0
        };
        if error_ms.saturating_abs() <= tolerance {
            return None;
        }
        let max = duration_ms(MAX_CORRECTION_STEP);
        let step_ms = error_ms.clamp(-max, max);
        let offset_after = s.offset_ms.saturating_add(step_ms);
        Some(ClockCorrection {
            before: now,
            after: now.max(Timestamp(raw.saturating_add(step_ms))),
            error_ms,
            step_ms,
            anchor: ClockAnchor {
                boot_id: s.boot_id.clone(),
                offset_ms: offset_after,
                since_boot_ms: duration_ms(s.last_boot),
            },
            offset_before: s.offset_ms,
        })
    }

    /// Applies a correction from [`Self::plan_correction`], unless the
    /// clock re-anchored since it was planned (then it returns false).
    /// Trusted time never goes below a value already returned.
    pub fn apply_correction(&self, c: &ClockCorrection) -> bool {
        let mut s = self.lock();
        if s.offset_ms != c.offset_before {
            return false;
        }
        s.offset_ms = c.anchor.offset_ms;
        s.high_water = s.high_water.max(c.after);
        true
    }

    /// The platform wall clock, for display only (receipts, logs): never for rules.
    pub fn wall_for_display(&self) -> Timestamp {
        self.clock.wall_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_system_boot_id_is_read_and_stays_the_same() {
        let id = SystemClock.boot_id().expect("a boot id");
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(SystemClock.boot_id(), Some(id));
    }

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

    fn restart(v: &VirtualClock, t: &TrustedClock) -> TrustedClock {
        TrustedClock::resume(Arc::new(v.clone()), Some(t.floor()), Some(&t.anchor()))
    }

    #[test]
    fn a_restart_in_the_same_boot_ignores_the_wall_clock() {
        let (v, t) = setup();
        let t0 = t.now();
        v.advance(H);
        v.set_wall(t0.plus(H * 100));
        assert_eq!(restart(&v, &t).now(), t0.plus(H));
        v.set_wall(Timestamp(0));
        assert_eq!(restart(&v, &t).now(), t0.plus(H));
    }

    #[test]
    fn a_reboot_is_seen_by_the_boot_id_or_by_time_since_boot_going_back() {
        let (v, t) = setup();
        let t0 = t.now();
        v.advance(H);
        let mut anchor = t.anchor();
        let floor = t.floor();
        v.reboot(Duration::ZERO);
        v.advance(2 * H);
        v.set_wall(t0.plus(H * 10));
        // Another boot id: the wall clock.
        let fresh = TrustedClock::resume(Arc::new(v.clone()), Some(floor), Some(&anchor));
        assert_eq!(fresh.now(), t0.plus(H * 10));
        // No boot id, and time since boot (2 h 5 s) above the saved reading
        // (1 h 1 min): the reboot is not seen.
        anchor.boot_id = None;
        let same = TrustedClock::resume(Arc::new(v.clone()), Some(floor), Some(&anchor));
        assert!(same.now() < t0.plus(H * 10));
        // Below the saved reading: seen.
        anchor.since_boot_ms = duration_ms(3 * H);
        let fresh = TrustedClock::resume(Arc::new(v.clone()), Some(floor), Some(&anchor));
        assert_eq!(fresh.now(), t0.plus(H * 10));
    }

    #[test]
    fn the_anchor_is_saved_again_when_it_changes_or_its_reading_gets_old() {
        let (v, t) = setup();
        let a = t.anchor();
        assert!(a.supersedes(None));
        assert!(!a.supersedes(Some(&a)));
        v.advance(ANCHOR_REFRESH - Duration::from_secs(1));
        assert!(!t.anchor().supersedes(Some(&a)));
        v.advance(Duration::from_secs(1));
        assert!(t.anchor().supersedes(Some(&a)));
        let c = t.plan_correction(t.now().plus(H), Duration::ZERO).unwrap();
        assert!(t.apply_correction(&c));
        assert!(!t.anchor().supersedes(Some(&c.anchor)));
        assert!(c.anchor.supersedes(Some(&a)));
    }

    #[test]
    fn a_forward_correction_is_bounded_and_moves_now() {
        let (_v, t) = setup();
        let t0 = t.now();
        let c = t.plan_correction(t0.plus(H), Duration::ZERO).unwrap();
        assert_eq!(c.error_ms, duration_ms(H));
        assert_eq!(c.step_ms, duration_ms(MAX_CORRECTION_STEP));
        assert_eq!(c.after, t0.plus(MAX_CORRECTION_STEP));
        // Nothing changes until it is applied.
        assert_eq!(t.now(), t0);
        assert!(t.apply_correction(&c));
        assert_eq!(t.now(), t0.plus(MAX_CORRECTION_STEP));
        // A plan made before another correction was applied is stale.
        assert!(!t.apply_correction(&c));
    }

    #[test]
    fn a_backward_correction_holds_the_clock_still_and_counts_once() {
        let (v, t) = setup();
        let t0 = t.now();
        let real = Timestamp(t0.0 - duration_ms(20 * 60 * Duration::from_secs(1)));
        let c = t.plan_correction(real, Duration::ZERO).unwrap();
        assert_eq!(c.step_ms, -duration_ms(MAX_CORRECTION_STEP));
        assert_eq!(c.after, t0);
        assert!(t.apply_correction(&c));
        assert_eq!(t.now(), t0);
        // Planned again at once: only the 5 minutes left, not 20 again.
        let c = t.plan_correction(real, Duration::ZERO).unwrap();
        assert_eq!(c.step_ms, -5 * 60_000);
        assert!(t.apply_correction(&c));
        assert!(t.plan_correction(real, Duration::ZERO).is_none());
        // Held until real time catches up, then it follows real time.
        v.advance(Duration::from_secs(20 * 60));
        assert_eq!(t.now(), t0);
        v.advance(Duration::from_secs(60));
        assert_eq!(t.now(), t0.plus(Duration::from_secs(60)));
    }

    #[test]
    fn the_round_trip_and_the_tolerance_bound_what_is_corrected() {
        let (_v, t) = setup();
        let t0 = t.now();
        // Stamped 10 s before the answer arrived, with a 10 s round trip.
        let stamp = Timestamp(t0.0 - 10_000);
        assert!(t.plan_correction(stamp, Duration::from_secs(10)).is_none());
        // A 1 s round trip: the device is 9 s ahead of what real time can be.
        let c = t.plan_correction(stamp, Duration::from_secs(1)).unwrap();
        assert_eq!(c.error_ms, -9_000);
        assert!(t
            .plan_correction(t0.plus(CORRECTION_TOLERANCE), Duration::ZERO)
            .is_none());
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
