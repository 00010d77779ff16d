//! Connectivity: the state machine that tells a network outage from a service
//! disruption (SPEC R1, R2, R3, B6).
//!
//! Owns [`ConnectivityState`] and its one transition function, the evidence
//! it reads ([`ConnectivityInput`]: the app's reachability reports and the
//! processor's health probe), the events it returns ([`ConnectivityChange`],
//! with the [`Banner`] the app should show), the probe schedule (regular
//! interval while online, exponential back-off with deterministic jitter while
//! down, an immediate probe when the network comes back) and its
//! [`ConnectivityConfig`].
//!
//! It is "sans I/O": the caller passes every input with the trusted time and
//! runs the probes itself when [`ConnectivityMachine::next_probe_at`] says so.
//!
//! ```text
//! Unknown ──report unreachable──────────────▶ NetworkOutage
//! Unknown ──N failed probes─────────────────▶ NetworkOutage | ServiceDisruption
//! Unknown ──M healthy probes────────────────▶ Online
//! Online ──report unreachable───────────────▶ NetworkOutage
//! Online ──N failed probes──────────────────▶ NetworkOutage | ServiceDisruption
//! NetworkOutage ──N unhealthy probes────────▶ ServiceDisruption
//! ServiceDisruption ──N unreachable probes──▶ NetworkOutage
//! ServiceDisruption ──report unreachable────▶ NetworkOutage
//! NetworkOutage | ServiceDisruption ──M healthy probes──▶ Online
//! ```
//! (N = `failures_to_go_down`, M = `healthy_probes_to_recover`; nothing ever
//! goes back to `Unknown`.)

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{duration_ms, Timestamp};

/// Where the device stands with the payment service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectivityState {
    /// No decisive evidence yet (fresh start). A probe is due at once.
    Unknown,
    /// The payment service answers and is healthy: payments go online.
    /// `since` is the first of the healthy probes that decided it.
    Online { since: Timestamp },
    /// The device cannot reach the internet (SPEC R1): the reachability
    /// monitor said so, or the probe failed at network level repeatedly.
    /// `since` is the report, or the first of the failed probes that decided it.
    NetworkOutage { since: Timestamp },
    /// The internet works but the payment service says it is down or degraded
    /// (SPEC R1). `since` is the first of the unhealthy probes that decided it.
    ServiceDisruption { since: Timestamp },
}

impl ConnectivityState {
    /// When this state began (`None` for `Unknown`).
    pub fn since(&self) -> Option<Timestamp> {
        match *self {
            ConnectivityState::Unknown => None,
            ConnectivityState::Online { since }
            | ConnectivityState::NetworkOutage { since }
            | ConnectivityState::ServiceDisruption { since } => Some(since),
        }
    }

    /// Whether payments can go online.
    pub fn is_online(&self) -> bool {
        matches!(self, ConnectivityState::Online { .. })
    }

    /// The cause of the outage, if this is one.
    pub fn outage_cause(&self) -> Option<OutageCause> {
        match self {
            ConnectivityState::NetworkOutage { .. } => Some(OutageCause::NetworkOutage),
            ConnectivityState::ServiceDisruption { .. } => Some(OutageCause::ServiceDisruption),
            ConnectivityState::Unknown | ConnectivityState::Online { .. } => None,
        }
    }

    /// The same state with `since` raised to at least `floor`.
    fn since_at_least(self, floor: Timestamp) -> Self {
        match self {
            ConnectivityState::Unknown => self,
            ConnectivityState::Online { since } => ConnectivityState::Online {
                since: since.max(floor),
            },
            ConnectivityState::NetworkOutage { since } => ConnectivityState::NetworkOutage {
                since: since.max(floor),
            },
            ConnectivityState::ServiceDisruption { since } => {
                ConnectivityState::ServiceDisruption {
                    since: since.max(floor),
                }
            }
        }
    }

    /// The banner the app shows in this state.
    pub fn banner(&self) -> Banner {
        match self {
            ConnectivityState::NetworkOutage { .. } => Banner::NetworkOutage,
            ConnectivityState::ServiceDisruption { .. } => Banner::ServiceDisruption,
            ConnectivityState::Unknown | ConnectivityState::Online { .. } => Banner::Clear,
        }
    }
}

/// Why the device is offline; the policy decides per cause whether offline
/// payments are allowed (SPEC B6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutageCause {
    /// The device has no internet.
    NetworkOutage,
    /// The internet works, the payment service does not.
    ServiceDisruption,
}

/// The answer to one service-status probe (SPEC R2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeOutcome {
    /// The service answered that it is healthy.
    Healthy,
    /// The service answered that it is down or degraded.
    Unhealthy,
    /// The probe failed at network level (DNS, connect, TLS, timeout): no answer.
    /// If the app can tell "the processor's host is down" from "the internet
    /// is down" (for example by probing a neutral host too), it should report
    /// the former as [`ProbeOutcome::Unhealthy`].
    Unreachable,
}

/// One piece of evidence about connectivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectivityInput {
    /// The platform's reachability monitor (NWPathMonitor, ConnectivityManager)
    /// reported whether the device has a usable network path.
    NetworkReport { reachable: bool },
    /// A service-status probe completed.
    Probe(ProbeOutcome),
}

/// What the app's connectivity banner should show (SPEC R1). Apps localise
/// by variant; [`Banner::default_text`] is the English default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Banner {
    /// Hide the connectivity banner.
    Clear,
    /// "You are offline. Connect to the internet to take payments."
    NetworkOutage,
    /// "Service disruption: offline payments enabled."
    ServiceDisruption,
}

impl Banner {
    /// The English text of the banner, `None` when it is hidden.
    pub fn default_text(&self) -> Option<&'static str> {
        match self {
            Banner::Clear => None,
            Banner::NetworkOutage => {
                Some("You are offline. Connect to the internet to take payments.")
            }
            Banner::ServiceDisruption => Some("Service disruption: offline payments enabled."),
        }
    }
}

/// A change of [`ConnectivityState`], returned by [`ConnectivityMachine::handle`].
/// `from` and `to` are always different variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectivityChange {
    pub from: ConnectivityState,
    pub to: ConnectivityState,
    /// When the change was decided (the input's time). May be later than
    /// `to.since()`, which is when the deciding evidence began.
    pub at: Timestamp,
    pub banner: Banner,
}

impl ConnectivityChange {
    /// True when this change brings the device back online after an outage:
    /// the moment stored payments are forwarded automatically (SPEC R3).
    pub fn is_recovery(&self) -> bool {
        self.to.is_online() && self.from.outage_cause().is_some()
    }
}

/// Why a [`ConnectivityConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectivityConfigError {
    /// A count of consecutive probes was zero.
    #[error("{field} must be at least 1")]
    ZeroCount { field: &'static str },
    /// An interval was shorter than one millisecond.
    #[error("{field} must be at least 1 ms")]
    ZeroInterval { field: &'static str },
    /// The back-off factor was zero.
    #[error("backoff_factor must be at least 1")]
    ZeroBackoffFactor,
    /// The back-off cap was below its initial delay.
    #[error("backoff_cap ({cap:?}) is below backoff_initial ({initial:?})")]
    CapBelowInitial { initial: Duration, cap: Duration },
    /// The jitter was above the 10 % allowed.
    #[error("jitter_percent must be at most {max}, got {got}")]
    JitterTooLarge { got: u32, max: u32 },
}

/// Tuning of the connectivity machine. Validated by
/// [`ConnectivityConfig::validate`], by [`ConnectivityMachine::new`] and when
/// deserialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConnectivityConfig")]
pub struct ConnectivityConfig {
    /// Consecutive failed probes (unhealthy or unreachable) that take the
    /// machine down, and consecutive probes of one kind that switch the
    /// outage cause. Default 2.
    pub failures_to_go_down: u32,
    /// Consecutive healthy probes that bring the machine online. Default 2.
    pub healthy_probes_to_recover: u32,
    /// Probe interval while online. Default 30 s.
    pub online_probe_interval: Duration,
    /// First back-off delay while down, also the delay of a confirmation
    /// probe (after a first failure online, or a first success while down).
    /// Default 2 s.
    pub backoff_initial: Duration,
    /// Back-off growth factor. Default 2 (1 means a constant delay).
    pub backoff_factor: u32,
    /// Longest back-off delay. Default 60 s.
    pub backoff_cap: Duration,
    /// Jitter applied to every delay, in percent either way (0 to 10). Default 10.
    pub jitter_percent: u32,
    /// Seed of the jitter sequence: the same seed and inputs give the same schedule.
    pub jitter_seed: u64,
}

/// Largest jitter allowed, in percent either way.
pub const MAX_JITTER_PERCENT: u32 = 10;

impl Default for ConnectivityConfig {
    fn default() -> Self {
        ConnectivityConfig {
            failures_to_go_down: 2,
            healthy_probes_to_recover: 2,
            online_probe_interval: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(2),
            backoff_factor: 2,
            backoff_cap: Duration::from_secs(60),
            jitter_percent: MAX_JITTER_PERCENT,
            jitter_seed: 0x00C0_FFEE_5EED_0001,
        }
    }
}

impl ConnectivityConfig {
    /// Refuses nonsense: zero counts, intervals under 1 ms, a zero factor, a
    /// cap below the initial delay, jitter above 10 %.
    pub fn validate(&self) -> Result<(), ConnectivityConfigError> {
        use ConnectivityConfigError as E;
        if self.failures_to_go_down == 0 {
            return Err(E::ZeroCount {
                field: "failures_to_go_down",
            });
        }
        if self.healthy_probes_to_recover == 0 {
            return Err(E::ZeroCount {
                field: "healthy_probes_to_recover",
            });
        }
        for (field, d) in [
            ("online_probe_interval", self.online_probe_interval),
            ("backoff_initial", self.backoff_initial),
            ("backoff_cap", self.backoff_cap),
        ] {
            if duration_ms(d) == 0 {
                return Err(E::ZeroInterval { field });
            }
        }
        if self.backoff_factor == 0 {
            return Err(E::ZeroBackoffFactor);
        }
        if self.backoff_cap < self.backoff_initial {
            return Err(E::CapBelowInitial {
                initial: self.backoff_initial,
                cap: self.backoff_cap,
            });
        }
        if self.jitter_percent > MAX_JITTER_PERCENT {
            return Err(E::JitterTooLarge {
                got: self.jitter_percent,
                max: MAX_JITTER_PERCENT,
            });
        }
        Ok(())
    }
}

/// The unvalidated wire form of [`ConnectivityConfig`].
#[derive(Deserialize)]
struct RawConnectivityConfig {
    failures_to_go_down: u32,
    healthy_probes_to_recover: u32,
    online_probe_interval: Duration,
    backoff_initial: Duration,
    backoff_factor: u32,
    backoff_cap: Duration,
    jitter_percent: u32,
    jitter_seed: u64,
}

impl TryFrom<RawConnectivityConfig> for ConnectivityConfig {
    type Error = ConnectivityConfigError;
    fn try_from(r: RawConnectivityConfig) -> Result<Self, Self::Error> {
        let c = ConnectivityConfig {
            failures_to_go_down: r.failures_to_go_down,
            healthy_probes_to_recover: r.healthy_probes_to_recover,
            online_probe_interval: r.online_probe_interval,
            backoff_initial: r.backoff_initial,
            backoff_factor: r.backoff_factor,
            backoff_cap: r.backoff_cap,
            jitter_percent: r.jitter_percent,
            jitter_seed: r.jitter_seed,
        };
        c.validate()?;
        Ok(c)
    }
}

/// A run of consecutive probes of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    count: u32,
    /// Time of the first probe of the run.
    since: Timestamp,
}

/// The current runs of consecutive probe outcomes. A healthy probe ends every
/// failure run; an unhealthy probe ends the healthy and unreachable runs; an
/// unreachable probe ends the healthy and unhealthy runs. `failures` counts
/// unhealthy and unreachable probes together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ProbeRuns {
    healthy: Option<Run>,
    unhealthy: Option<Run>,
    unreachable: Option<Run>,
    failures: Option<Run>,
}

fn extend(run: Option<Run>, now: Timestamp) -> Option<Run> {
    Some(match run {
        Some(r) => Run {
            count: r.count.saturating_add(1),
            since: r.since,
        },
        None => Run {
            count: 1,
            since: now,
        },
    })
}

/// The run's start if it reached `needed`.
fn reached(run: Option<Run>, needed: u32) -> Option<Timestamp> {
    run.filter(|r| r.count >= needed).map(|r| r.since)
}

impl ProbeRuns {
    fn record(&mut self, outcome: ProbeOutcome, now: Timestamp) {
        match outcome {
            ProbeOutcome::Healthy => {
                *self = ProbeRuns {
                    healthy: extend(self.healthy, now),
                    ..ProbeRuns::default()
                }
            }
            ProbeOutcome::Unhealthy => {
                *self = ProbeRuns {
                    unhealthy: extend(self.unhealthy, now),
                    failures: extend(self.failures, now),
                    ..ProbeRuns::default()
                }
            }
            ProbeOutcome::Unreachable => {
                *self = ProbeRuns {
                    unreachable: extend(self.unreachable, now),
                    failures: extend(self.failures, now),
                    ..ProbeRuns::default()
                }
            }
        }
    }
}

/// SplitMix64: a tiny deterministic generator for the jitter (no `rand`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Jitter {
    state: u64,
}

impl Jitter {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `base` moved by a uniform amount within ±`percent` %.
    fn apply(&mut self, base: Duration, percent: u32) -> Duration {
        let ms = u64::try_from(duration_ms(base)).unwrap_or(0);
        let spread = u64::try_from(u128::from(ms) * u128::from(percent) / 100).unwrap_or(u64::MAX);
        if spread == 0 {
            return base;
        }
        let offset = self.next_u64() % spread.saturating_mul(2).saturating_add(1);
        Duration::from_millis(ms.saturating_sub(spread).saturating_add(offset))
    }
}

/// The connectivity state machine: feed it every [`ConnectivityInput`] with
/// the trusted time; it returns a [`ConnectivityChange`] when the state
/// changes and tells when to run the next probe. Serializable so that it can
/// be persisted and restored (SPEC B10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectivityMachine {
    config: ConnectivityConfig,
    state: ConnectivityState,
    /// What the reachability monitor said last (`None`: nothing yet).
    network_reachable: Option<bool>,
    runs: ProbeRuns,
    /// Start of the current continuous outage, kept across a change of cause.
    outage_began: Option<Timestamp>,
    /// Delay to use after the next failed probe while down.
    backoff: Duration,
    next_probe_at: Timestamp,
    /// When the last probe outcome arrived.
    last_probe_at: Option<Timestamp>,
    jitter: Jitter,
    /// Latest input time seen: an earlier `now` is raised to it.
    last_input_at: Timestamp,
}

impl ConnectivityMachine {
    /// A machine in [`ConnectivityState::Unknown`], with a probe due at `now`.
    pub fn new(
        config: ConnectivityConfig,
        now: Timestamp,
    ) -> Result<Self, ConnectivityConfigError> {
        config.validate()?;
        Ok(ConnectivityMachine {
            state: ConnectivityState::Unknown,
            network_reachable: None,
            runs: ProbeRuns::default(),
            outage_began: None,
            backoff: config.backoff_initial,
            next_probe_at: now,
            last_probe_at: None,
            jitter: Jitter {
                state: config.jitter_seed,
            },
            last_input_at: now,
            config,
        })
    }

    /// The current state.
    pub fn state(&self) -> ConnectivityState {
        self.state
    }

    /// The configuration it runs under.
    pub fn config(&self) -> &ConnectivityConfig {
        &self.config
    }

    /// What the reachability monitor reported last (`None`: nothing yet).
    pub fn network_reachable(&self) -> Option<bool> {
        self.network_reachable
    }

    /// The cause of the current outage, `None` when online or unknown.
    pub fn outage_cause(&self) -> Option<OutageCause> {
        self.state.outage_cause()
    }

    /// When the current outage began, `None` when online or unknown. A change
    /// of cause (network outage ↔ service disruption) does not restart it:
    /// the connection was lost at the first of them (SPEC R8 counts from there).
    pub fn outage_began(&self) -> Option<Timestamp> {
        self.outage_began
    }

    /// When the app should run the next service-status probe. It may be in
    /// the past (a probe is due now). The app runs one probe at a time and
    /// reports its outcome before asking again.
    pub fn next_probe_at(&self) -> Timestamp {
        self.next_probe_at
    }

    /// Takes one piece of evidence at trusted time `now` (an earlier `now`
    /// than a previous input is raised to it). Returns the change of state,
    /// if any, and reschedules the next probe.
    pub fn handle(
        &mut self,
        input: ConnectivityInput,
        now: Timestamp,
    ) -> Option<ConnectivityChange> {
        let now = now.max(self.last_input_at);
        self.last_input_at = now;

        // 1. Record the evidence.
        let mut reachability_returned = false;
        match input {
            ConnectivityInput::NetworkReport { reachable } => {
                reachability_returned = reachable && self.network_reachable != Some(true);
                if !reachable || reachability_returned {
                    // Probe results from before a change of network are stale.
                    self.runs = ProbeRuns::default();
                }
                self.network_reachable = Some(reachable);
            }
            ConnectivityInput::Probe(outcome) => self.runs.record(outcome, now),
        }

        // 2. Decide.
        let from = self.state;
        let change = self.transition(input, now).map(|to| {
            // Never report `since` earlier than the state we leave.
            let to = from.since().map_or(to, |floor| to.since_at_least(floor));
            ConnectivityChange {
                from,
                to,
                at: now,
                banner: to.banner(),
            }
        });
        if let Some(c) = change {
            self.state = c.to;
            self.outage_began = if c.to.outage_cause().is_some() {
                // A change of cause keeps the start of the outage.
                self.outage_began.or(c.to.since())
            } else {
                None
            };
        }

        // 3. Schedule the next probe.
        self.schedule(input, change.is_some(), reachability_returned, now);
        change
    }

    /// The transition function: the next state for `input`, `None` when the
    /// state stays. Probe runs are already updated with `input`.
    fn transition(&self, input: ConnectivityInput, now: Timestamp) -> Option<ConnectivityState> {
        use ConnectivityInput::{NetworkReport, Probe};
        use ConnectivityState::{NetworkOutage, Online, ServiceDisruption, Unknown};
        use ProbeOutcome::{Healthy, Unhealthy, Unreachable};
        let cfg = &self.config;
        let healthy = reached(self.runs.healthy, cfg.healthy_probes_to_recover);
        let failures = reached(self.runs.failures, cfg.failures_to_go_down);
        let unhealthy = reached(self.runs.unhealthy, cfg.failures_to_go_down);
        let unreachable = reached(self.runs.unreachable, cfg.failures_to_go_down);
        // A run of failures takes the cause of its latest probe.
        let down = |since, latest: ProbeOutcome| match latest {
            Unreachable => NetworkOutage { since },
            _ => ServiceDisruption { since },
        };

        match self.state {
            Unknown => match input {
                // Without a network path nothing can be reached: at once (R1).
                NetworkReport { reachable: false } => Some(NetworkOutage { since: now }),
                // Reachability alone proves nothing about the service: it only
                // makes a probe due (see `schedule`).
                NetworkReport { reachable: true } => None,
                Probe(Healthy) => healthy.map(|since| Online { since }),
                Probe(outcome @ (Unhealthy | Unreachable)) => {
                    failures.map(|since| down(since, outcome))
                }
            },
            Online { .. } => match input {
                NetworkReport { reachable: false } => Some(NetworkOutage { since: now }),
                // Already online: nothing to learn.
                NetworkReport { reachable: true } | Probe(Healthy) => None,
                Probe(outcome @ (Unhealthy | Unreachable)) => {
                    failures.map(|since| down(since, outcome))
                }
            },
            NetworkOutage { .. } => match input {
                // Already there; repeated reports change nothing.
                NetworkReport { reachable: false } => None,
                // The network is back: not online until the service answers
                // healthy (hysteresis), but a probe is due at once.
                NetworkReport { reachable: true } => None,
                Probe(Healthy) => healthy.map(|since| Online { since }),
                // The service answers, so the network works: its cause is the
                // service, once confirmed.
                Probe(Unhealthy) => unhealthy.map(|since| ServiceDisruption { since }),
                // Consistent with a network outage.
                Probe(Unreachable) => None,
            },
            ServiceDisruption { .. } => match input {
                NetworkReport { reachable: false } => Some(NetworkOutage { since: now }),
                NetworkReport { reachable: true } => None,
                Probe(Healthy) => healthy.map(|since| Online { since }),
                // Consistent with a service disruption.
                Probe(Unhealthy) => None,
                Probe(Unreachable) => unreachable.map(|since| NetworkOutage { since }),
            },
        }
    }

    /// Sets `next_probe_at` after `input`; the state is already updated.
    fn schedule(
        &mut self,
        input: ConnectivityInput,
        changed: bool,
        reachability_returned: bool,
        now: Timestamp,
    ) {
        let initial = self.config.backoff_initial;
        let interval = self.config.online_probe_interval;
        let online = self.state.is_online();
        if let ConnectivityInput::Probe(_) = input {
            self.last_probe_at = Some(now);
        }
        match input {
            ConnectivityInput::NetworkReport { reachable: true } => {
                if reachability_returned && !online {
                    // The network is back: probe now and restart the back-off,
                    // so recovery takes seconds, not minutes (B6). A flapping
                    // monitor still gets at most one probe per initial delay.
                    self.backoff = initial;
                    let earliest = self.last_probe_at.map_or(now, |t| t.plus(initial));
                    self.next_probe_at = self.next_probe_at.min(earliest.max(now));
                }
            }
            ConnectivityInput::NetworkReport { reachable: false } => {
                if changed {
                    self.backoff = initial;
                    self.back_off(now);
                }
                // A repeated report neither hastens nor postpones probing.
            }
            ConnectivityInput::Probe(ProbeOutcome::Healthy) => {
                if online {
                    self.backoff = initial;
                    self.delay(interval, now);
                } else {
                    // Confirm quickly; the back-off level is kept so that a
                    // flapping service does not reset it.
                    self.delay(initial, now);
                }
            }
            ConnectivityInput::Probe(ProbeOutcome::Unhealthy | ProbeOutcome::Unreachable) => {
                if online {
                    // A failure while online: confirm quickly.
                    self.delay(initial, now);
                } else {
                    // Down (or unknown): the back-off level was reset to the
                    // initial delay while online, or by the network's return.
                    self.back_off(now);
                }
            }
        }
    }

    /// Schedules after the current back-off delay, then grows it.
    fn back_off(&mut self, now: Timestamp) {
        let delay = self.backoff;
        self.delay(delay, now);
        let grown = delay
            .checked_mul(self.config.backoff_factor)
            .unwrap_or(self.config.backoff_cap);
        self.backoff = grown.min(self.config.backoff_cap);
    }

    fn delay(&mut self, base: Duration, now: Timestamp) {
        let d = self.jitter.apply(base, self.config.jitter_percent);
        self.next_probe_at = now.plus(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ConnectivityInput::{NetworkReport, Probe};
    use ConnectivityState::{NetworkOutage, Online, ServiceDisruption, Unknown};
    use ProbeOutcome::{Healthy, Unhealthy, Unreachable};

    const T0: Timestamp = Timestamp(1_800_000_000_000);
    const UP: ConnectivityInput = NetworkReport { reachable: true };
    const DOWN: ConnectivityInput = NetworkReport { reachable: false };

    fn at(secs: i64) -> Timestamp {
        Timestamp(T0.0 + secs * 1000)
    }

    fn no_jitter() -> ConnectivityConfig {
        ConnectivityConfig {
            jitter_percent: 0,
            ..ConnectivityConfig::default()
        }
    }

    fn machine() -> ConnectivityMachine {
        ConnectivityMachine::new(no_jitter(), T0).unwrap()
    }

    /// Feeds inputs one second apart from `start`; returns the changes.
    fn feed(
        m: &mut ConnectivityMachine,
        start: i64,
        inputs: &[ConnectivityInput],
    ) -> Vec<ConnectivityChange> {
        inputs
            .iter()
            .enumerate()
            .filter_map(|(i, inp)| m.handle(*inp, at(start + i as i64)))
            .collect()
    }

    fn online(m: &mut ConnectivityMachine) {
        feed(m, 0, &[Probe(Healthy), Probe(Healthy)]);
        assert_eq!(m.state(), Online { since: at(0) });
    }

    // ---- transitions from Unknown ----

    #[test]
    fn starts_unknown_with_a_probe_due_now() {
        let m = machine();
        assert_eq!(m.state(), Unknown);
        assert_eq!(m.next_probe_at(), T0);
        assert_eq!(m.outage_cause(), None);
        assert_eq!(m.outage_began(), None);
        assert_eq!(m.network_reachable(), None);
    }

    #[test]
    fn unknown_to_network_outage_on_an_unreachable_report_at_once() {
        let mut m = machine();
        let c = m.handle(DOWN, at(5)).unwrap();
        assert_eq!(
            c,
            ConnectivityChange {
                from: Unknown,
                to: NetworkOutage { since: at(5) },
                at: at(5),
                banner: Banner::NetworkOutage,
            }
        );
        assert_eq!(m.outage_cause(), Some(OutageCause::NetworkOutage));
        assert_eq!(m.outage_began(), Some(at(5)));
    }

    #[test]
    fn unknown_to_online_after_the_configured_healthy_probes() {
        let mut m = machine();
        assert_eq!(m.handle(Probe(Healthy), at(0)), None);
        let c = m.handle(Probe(Healthy), at(2)).unwrap();
        assert_eq!(c.from, Unknown);
        assert_eq!(c.to, Online { since: at(0) });
        assert_eq!(c.at, at(2));
        assert_eq!(c.banner, Banner::Clear);
        assert!(!c.is_recovery(), "unknown -> online is not a recovery");

        let cfg = ConnectivityConfig {
            healthy_probes_to_recover: 3,
            ..no_jitter()
        };
        let mut m = ConnectivityMachine::new(cfg, T0).unwrap();
        let changes = feed(&mut m, 0, &[Probe(Healthy); 3]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].at, at(2));
    }

    #[test]
    fn unknown_to_service_disruption_after_unhealthy_probes() {
        let mut m = machine();
        let ch = feed(&mut m, 0, &[Probe(Unhealthy), Probe(Unhealthy)]);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].to, ServiceDisruption { since: at(0) });
        assert_eq!(ch[0].banner, Banner::ServiceDisruption);
        assert_eq!(m.outage_cause(), Some(OutageCause::ServiceDisruption));
    }

    #[test]
    fn unknown_to_network_outage_after_unreachable_probes() {
        let mut m = machine();
        let ch = feed(&mut m, 0, &[Probe(Unreachable), Probe(Unreachable)]);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].to, NetworkOutage { since: at(0) });
    }

    #[test]
    fn reachable_report_alone_never_decides() {
        let mut m = machine();
        assert_eq!(m.handle(UP, at(3)), None);
        assert_eq!(m.state(), Unknown);
        assert!(m.next_probe_at() <= at(3), "a probe is due at once");
        assert_eq!(m.network_reachable(), Some(true));
    }

    // ---- transitions from Online ----

    #[test]
    fn online_to_network_outage_on_an_unreachable_report_at_once() {
        let mut m = machine();
        online(&mut m);
        let c = m.handle(DOWN, at(10)).unwrap();
        assert_eq!(c.from, Online { since: at(0) });
        assert_eq!(c.to, NetworkOutage { since: at(10) });
        assert_eq!(
            c.banner.default_text(),
            Banner::NetworkOutage.default_text()
        );
        assert!(c.banner.default_text().unwrap().contains("offline"));
    }

    #[test]
    fn online_to_service_disruption_needs_consecutive_unhealthy_probes() {
        let mut m = machine();
        online(&mut m);
        assert_eq!(m.handle(Probe(Unhealthy), at(10)), None);
        assert!(m.state().is_online());
        // A healthy probe in between breaks the run.
        assert_eq!(m.handle(Probe(Healthy), at(11)), None);
        assert_eq!(m.handle(Probe(Unhealthy), at(12)), None);
        let c = m.handle(Probe(Unhealthy), at(13)).unwrap();
        assert_eq!(c.to, ServiceDisruption { since: at(12) });
        assert_eq!(c.banner, Banner::ServiceDisruption);
        assert!(c
            .banner
            .default_text()
            .unwrap()
            .contains("offline payments enabled"));
        assert_eq!(m.outage_began(), Some(at(12)));
    }

    #[test]
    fn online_goes_down_on_mixed_failures_with_the_latest_cause() {
        let mut m = machine();
        online(&mut m);
        let ch = feed(&mut m, 10, &[Probe(Unhealthy), Probe(Unreachable)]);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].to, NetworkOutage { since: at(10) });

        let mut m = machine();
        online(&mut m);
        let ch = feed(&mut m, 10, &[Probe(Unreachable), Probe(Unhealthy)]);
        assert_eq!(ch[0].to, ServiceDisruption { since: at(10) });
    }

    #[test]
    fn online_ignores_healthy_probes_and_reachable_reports() {
        let mut m = machine();
        online(&mut m);
        assert_eq!(
            feed(&mut m, 10, &[Probe(Healthy), UP, UP, Probe(Healthy)]),
            vec![]
        );
        assert_eq!(m.state(), Online { since: at(0) });
    }

    // ---- transitions from NetworkOutage ----

    #[test]
    fn network_outage_to_online_needs_healthy_probes_not_just_reachability() {
        let mut m = machine();
        online(&mut m);
        m.handle(DOWN, at(10));
        assert_eq!(m.handle(UP, at(20)), None);
        assert_eq!(m.state(), NetworkOutage { since: at(10) });
        assert_eq!(m.handle(Probe(Healthy), at(20)), None);
        let c = m.handle(Probe(Healthy), at(22)).unwrap();
        assert_eq!(c.to, Online { since: at(20) });
        assert_eq!(c.banner, Banner::Clear);
        assert!(c.is_recovery(), "stored payments are forwarded now (R3)");
        assert_eq!(m.outage_began(), None);
        assert_eq!(m.outage_cause(), None);
    }

    #[test]
    fn network_outage_ignores_repeated_reports_and_unreachable_probes() {
        let mut m = machine();
        m.handle(DOWN, at(0));
        let ch = feed(
            &mut m,
            1,
            &[
                DOWN,
                Probe(Unreachable),
                Probe(Unreachable),
                DOWN,
                Probe(Unreachable),
            ],
        );
        assert_eq!(ch, vec![]);
        assert_eq!(m.state(), NetworkOutage { since: at(0) });
    }

    #[test]
    fn network_outage_to_service_disruption_keeps_the_outage_start() {
        let mut m = machine();
        online(&mut m);
        m.handle(DOWN, at(10));
        m.handle(UP, at(20));
        assert_eq!(m.handle(Probe(Unhealthy), at(21)), None);
        let c = m.handle(Probe(Unhealthy), at(23)).unwrap();
        assert_eq!(c.from, NetworkOutage { since: at(10) });
        assert_eq!(c.to, ServiceDisruption { since: at(21) });
        assert_eq!(c.banner, Banner::ServiceDisruption);
        assert!(!c.is_recovery());
        assert_eq!(
            m.outage_began(),
            Some(at(10)),
            "the connection was lost at 10"
        );
    }

    #[test]
    fn probe_results_before_a_network_change_are_stale() {
        let mut m = machine();
        m.handle(DOWN, at(0));
        m.handle(Probe(Healthy), at(1));
        // The network drops again: the healthy probe no longer counts.
        m.handle(DOWN, at(2));
        assert_eq!(m.handle(Probe(Healthy), at(3)), None);
        assert!(m.handle(Probe(Healthy), at(4)).is_some());
    }

    #[test]
    fn healthy_probes_count_even_if_the_monitor_still_says_unreachable() {
        // A probe answer proves the network works: the monitor was stale.
        let mut m = machine();
        m.handle(DOWN, at(0));
        let ch = feed(&mut m, 1, &[Probe(Healthy), Probe(Healthy)]);
        assert_eq!(ch.len(), 1);
        assert!(ch[0].to.is_online());
        assert_eq!(m.network_reachable(), Some(false));
    }

    // ---- transitions from ServiceDisruption ----

    #[test]
    fn service_disruption_to_network_outage_at_once_on_a_report() {
        let mut m = machine();
        feed(&mut m, 0, &[Probe(Unhealthy), Probe(Unhealthy)]);
        let c = m.handle(DOWN, at(5)).unwrap();
        assert_eq!(c.from, ServiceDisruption { since: at(0) });
        assert_eq!(c.to, NetworkOutage { since: at(5) });
        assert_eq!(m.outage_began(), Some(at(0)));
    }

    #[test]
    fn service_disruption_to_network_outage_after_unreachable_probes() {
        let mut m = machine();
        feed(&mut m, 0, &[Probe(Unhealthy), Probe(Unhealthy)]);
        assert_eq!(m.handle(Probe(Unreachable), at(5)), None);
        let c = m.handle(Probe(Unreachable), at(6)).unwrap();
        assert_eq!(c.to, NetworkOutage { since: at(5) });
        assert_eq!(m.outage_began(), Some(at(0)));
    }

    #[test]
    fn service_disruption_to_online_after_healthy_probes() {
        let mut m = machine();
        feed(&mut m, 0, &[Probe(Unhealthy), Probe(Unhealthy)]);
        assert_eq!(feed(&mut m, 5, &[Probe(Unhealthy), UP]), vec![]);
        let ch = feed(&mut m, 10, &[Probe(Healthy), Probe(Healthy)]);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].to, Online { since: at(10) });
        assert!(ch[0].is_recovery());
    }

    #[test]
    fn mixed_failures_while_down_do_not_switch_the_cause() {
        let mut m = machine();
        feed(&mut m, 0, &[Probe(Unhealthy), Probe(Unhealthy)]);
        let flips = [Probe(Unreachable), Probe(Unhealthy)].repeat(20);
        assert_eq!(feed(&mut m, 10, &flips), vec![]);
        assert_eq!(m.state(), ServiceDisruption { since: at(0) });
    }

    // ---- hysteresis ----

    #[test]
    fn alternating_probes_do_not_flap_after_the_first_outage() {
        let mut m = machine();
        online(&mut m);
        let mut all = feed(&mut m, 10, &[Probe(Unhealthy), Probe(Unhealthy)]);
        assert_eq!(all.len(), 1);
        let flapping = [Probe(Healthy), Probe(Unhealthy)].repeat(50);
        all.extend(feed(&mut m, 20, &flapping));
        assert_eq!(all.len(), 1, "no change after the first outage: {all:?}");
        assert_eq!(m.state(), ServiceDisruption { since: at(10) });
    }

    #[test]
    fn alternating_probes_while_online_never_go_down() {
        let mut m = machine();
        online(&mut m);
        let flapping = [Probe(Unreachable), Probe(Healthy)].repeat(50);
        assert_eq!(feed(&mut m, 10, &flapping), vec![]);
        assert!(m.state().is_online());
    }

    #[test]
    fn flapping_reachability_without_probes_gives_one_event() {
        let mut m = machine();
        online(&mut m);
        let flapping = [DOWN, UP].repeat(50);
        let ch = feed(&mut m, 10, &flapping);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].to, NetworkOutage { since: at(10) });
    }

    // ---- probe schedule ----

    #[test]
    fn regular_interval_while_online() {
        let mut m = machine();
        online(&mut m);
        assert_eq!(m.next_probe_at(), at(1 + 30));
        m.handle(Probe(Healthy), at(31));
        assert_eq!(m.next_probe_at(), at(61));
    }

    #[test]
    fn first_failure_online_is_confirmed_quickly() {
        let mut m = machine();
        online(&mut m);
        m.handle(Probe(Unhealthy), at(31));
        assert_eq!(m.next_probe_at(), at(33));
    }

    #[test]
    fn back_off_grows_by_the_factor_up_to_the_cap() {
        let mut m = machine();
        online(&mut m);
        let mut t = 100;
        m.handle(Probe(Unreachable), at(t));
        let mut delays = vec![];
        for _ in 0..9 {
            t += 1;
            m.handle(Probe(Unreachable), at(t));
            delays.push((m.next_probe_at().0 - at(t).0) / 1000);
        }
        assert_eq!(m.state(), NetworkOutage { since: at(100) });
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }

    #[test]
    fn back_off_after_an_unreachable_report() {
        let mut m = machine();
        m.handle(DOWN, at(0));
        assert_eq!(m.next_probe_at(), at(2));
        m.handle(Probe(Unreachable), at(2));
        assert_eq!(m.next_probe_at(), at(6));
        m.handle(Probe(Unreachable), at(6));
        assert_eq!(m.next_probe_at(), at(14));
        // A repeated report neither hastens nor postpones the probe.
        m.handle(DOWN, at(7));
        assert_eq!(m.next_probe_at(), at(14));
    }

    #[test]
    fn reachability_returning_resets_the_back_off_and_probes_at_once() {
        let mut m = machine();
        m.handle(DOWN, at(0));
        let mut t = 0;
        for _ in 0..10 {
            t = m.next_probe_at().0;
            m.handle(Probe(Unreachable), Timestamp(t));
        }
        assert_eq!(m.next_probe_at().0 - t, 60_000, "capped");
        let back = Timestamp(t + 5_000);
        m.handle(UP, back);
        assert_eq!(m.next_probe_at(), back, "probe at once, not in a minute");
        m.handle(Probe(Healthy), back);
        assert_eq!(m.next_probe_at(), back.plus(Duration::from_secs(2)));
        let c = m.handle(Probe(Healthy), m.next_probe_at()).unwrap();
        assert_eq!(
            c.at,
            back.plus(Duration::from_secs(2)),
            "online 2 s after the network returned"
        );
        // A failure right after the return restarts from the initial delay.
        let mut m2 = machine();
        m2.handle(DOWN, at(0));
        for i in 0..10 {
            m2.handle(Probe(Unreachable), at(1 + i));
        }
        m2.handle(UP, at(20));
        m2.handle(Probe(Unreachable), at(20));
        assert_eq!(m2.next_probe_at(), at(22));
    }

    #[test]
    fn repeated_reachable_reports_do_not_keep_the_probe_due() {
        let mut m = machine();
        m.handle(DOWN, at(0));
        m.handle(UP, at(1));
        m.handle(Probe(Unhealthy), at(1));
        let next = m.next_probe_at();
        assert!(next > at(1));
        m.handle(UP, at(2));
        assert_eq!(
            m.next_probe_at(),
            next,
            "only a return of the network resets"
        );
    }

    #[test]
    fn a_flapping_monitor_gets_at_most_one_probe_per_initial_delay() {
        let mut m = machine();
        m.handle(DOWN, at(0));
        m.handle(UP, at(1));
        assert_eq!(m.next_probe_at(), at(1));
        m.handle(Probe(Unreachable), at(1));
        m.handle(DOWN, at(1));
        m.handle(UP, Timestamp(at(1).0 + 500));
        assert_eq!(m.next_probe_at(), at(3), "not again within 2 s");
        m.handle(DOWN, at(2));
        m.handle(UP, at(10));
        assert_eq!(m.next_probe_at(), at(3), "already due: never postponed");
    }

    #[test]
    fn flapping_service_keeps_the_back_off_level() {
        let mut m = machine();
        feed(&mut m, 0, &[Probe(Unreachable), Probe(Unreachable)]);
        for i in 0..6 {
            m.handle(Probe(Unreachable), at(10 + i));
        }
        let high = m.next_probe_at().0 - at(15).0;
        m.handle(Probe(Healthy), at(20));
        assert_eq!(m.next_probe_at(), at(22), "confirmation probe");
        m.handle(Probe(Unreachable), at(22));
        assert!(
            m.next_probe_at().0 - at(22).0 >= high,
            "not reset by one success"
        );
    }

    #[test]
    fn jitter_is_bounded_and_deterministic_for_a_seed() {
        let cfg = |seed| ConnectivityConfig {
            jitter_seed: seed,
            ..ConnectivityConfig::default()
        };
        let run = |seed| {
            let mut m = ConnectivityMachine::new(cfg(seed), T0).unwrap();
            feed(&mut m, 0, &[Probe(Healthy), Probe(Healthy)]);
            let mut out = vec![];
            let mut now = at(1);
            for _ in 0..50 {
                let next = m.next_probe_at();
                let delay = next.0 - now.0;
                assert!((27_000..=33_000).contains(&delay), "{delay}");
                out.push(delay);
                now = next;
                m.handle(Probe(Healthy), now);
            }
            out
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same schedule");
        assert_ne!(a, run(43), "another seed, another schedule");
        assert!(a.iter().any(|d| *d != 30_000), "jitter is applied");
    }

    #[test]
    fn splitmix_known_values() {
        // Reference values of SplitMix64 seeded with 0.
        let mut j = Jitter { state: 0 };
        assert_eq!(j.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(j.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn an_earlier_now_is_raised_to_the_latest_input() {
        let mut m = machine();
        m.handle(DOWN, at(100));
        m.handle(Probe(Healthy), at(50));
        let c = m.handle(Probe(Healthy), at(40)).unwrap();
        assert_eq!(c.to, Online { since: at(100) });
        assert_eq!(c.at, at(100));
    }

    // ---- config ----

    #[test]
    fn config_validation() {
        use ConnectivityConfigError as E;
        let ok = ConnectivityConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut ConnectivityConfig)| {
            let mut c = ConnectivityConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(
            bad(|c| c.failures_to_go_down = 0),
            E::ZeroCount {
                field: "failures_to_go_down"
            }
        );
        assert_eq!(
            bad(|c| c.healthy_probes_to_recover = 0),
            E::ZeroCount {
                field: "healthy_probes_to_recover"
            }
        );
        assert_eq!(
            bad(|c| c.online_probe_interval = Duration::ZERO),
            E::ZeroInterval {
                field: "online_probe_interval"
            }
        );
        assert_eq!(
            bad(|c| c.backoff_initial = Duration::from_micros(900)),
            E::ZeroInterval {
                field: "backoff_initial"
            }
        );
        assert_eq!(bad(|c| c.backoff_factor = 0), E::ZeroBackoffFactor);
        assert!(matches!(
            bad(|c| c.backoff_cap = Duration::from_secs(1)),
            E::CapBelowInitial { .. }
        ));
        assert_eq!(
            bad(|c| c.jitter_percent = 11),
            E::JitterTooLarge { got: 11, max: 10 }
        );
        assert!(ConnectivityMachine::new(
            ConnectivityConfig {
                backoff_factor: 0,
                ..ok
            },
            T0
        )
        .is_err());
    }

    #[test]
    fn serde_round_trip_and_validated_deserialization() {
        let mut m = ConnectivityMachine::new(ConnectivityConfig::default(), T0).unwrap();
        feed(&mut m, 0, &[DOWN, UP, Probe(Unhealthy)]);
        let json = serde_json::to_string(&m).unwrap();
        let back: ConnectivityMachine = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);

        let cfg = serde_json::to_value(ConnectivityConfig::default()).unwrap();
        let mut bad = cfg.clone();
        bad["failures_to_go_down"] = 0.into();
        assert!(serde_json::from_value::<ConnectivityConfig>(bad).is_err());
        assert!(serde_json::from_value::<ConnectivityConfig>(cfg).is_ok());

        let change = m.handle(Probe(Unhealthy), at(10)).unwrap();
        assert_eq!(change.to, ServiceDisruption { since: at(2) });
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(
            serde_json::from_str::<ConnectivityChange>(&json).unwrap(),
            change
        );
        assert_eq!(
            serde_json::to_string(&OutageCause::ServiceDisruption).unwrap(),
            "\"ServiceDisruption\""
        );
    }

    // ---- properties ----

    fn same_variant(a: &ConnectivityState, b: &ConnectivityState) -> bool {
        std::mem::discriminant(a) == std::mem::discriminant(b)
    }

    fn input() -> impl Strategy<Value = ConnectivityInput> {
        prop_oneof![
            Just(UP),
            Just(DOWN),
            Just(Probe(Healthy)),
            Just(Probe(Unhealthy)),
            Just(Probe(Unreachable)),
        ]
    }

    proptest! {
        #[test]
        fn random_inputs_keep_the_invariants(
            steps in proptest::collection::vec((input(), 0i64..120_000), 0..200),
            n in 1u32..4,
            m_ in 1u32..4,
            seed in any::<u64>(),
        ) {
            let cfg = ConnectivityConfig {
                failures_to_go_down: n,
                healthy_probes_to_recover: m_,
                jitter_seed: seed,
                ..ConnectivityConfig::default()
            };
            let mut m = ConnectivityMachine::new(cfg, T0).unwrap();
            let mut now = T0;
            let mut changes: Vec<ConnectivityChange> = vec![];
            let (mut probes, mut down_reports) = (0u64, 0u64);
            for (inp, dt) in steps {
                now = Timestamp(now.0 + dt);
                match inp {
                    Probe(_) => probes += 1,
                    NetworkReport { reachable: false } => down_reports += 1,
                    NetworkReport { reachable: true } => {}
                }
                let before = m.state();
                let next_before = m.next_probe_at();
                let change = m.handle(inp, now);
                if let Some(c) = change {
                    prop_assert_eq!(c.from, before);
                    prop_assert_eq!(c.to, m.state());
                    prop_assert_eq!(c.at, now);
                    prop_assert_eq!(c.banner, c.to.banner());
                    prop_assert!(!same_variant(&c.from, &c.to), "self-transition {:?}", c);
                    prop_assert!(c.to != Unknown, "never back to Unknown");
                    prop_assert!(c.to.since().unwrap() <= now);
                    if let Some(prev) = changes.last() {
                        prop_assert!(!same_variant(&prev.to, &c.to), "same `to` twice");
                        prop_assert!(c.to.since() >= prev.to.since(), "since went back");
                        prop_assert!(c.at >= prev.at);
                    }
                    changes.push(c);
                } else {
                    prop_assert_eq!(before, m.state());
                }
                // A reachable report alone never brings the machine online.
                if inp == UP {
                    prop_assert!(change.is_none());
                }
                // The outage start is set exactly while down, and not after the state's.
                let began = m.outage_began();
                prop_assert_eq!(began.is_some(), m.outage_cause().is_some());
                if let Some(began) = began {
                    prop_assert!(began <= m.state().since().unwrap());
                }
                // A probe outcome schedules the next one in the future, within
                // the longest delay; a report keeps the schedule or makes a probe
                // due now.
                let next = m.next_probe_at();
                match inp {
                    Probe(_) => prop_assert!(next > now),
                    NetworkReport { .. } => prop_assert!(next == next_before || next >= now),
                }
                prop_assert!(next.0 - now.0 <= 66_000, "{}", next.0 - now.0);
            }
            // Hysteresis: each probe-driven change needs its own run of probes.
            let per_change = u64::from(n.min(m_));
            prop_assert!(
                changes.len() as u64 <= down_reports + probes / per_change,
                "{} changes for {} reports and {} probes", changes.len(), down_reports, probes
            );
        }
    }
}
