//! Fault injection: what can go wrong between the device and the processor.
//!
//! A [`FaultPlan`] holds a base latency, faults drawn at a rate (per mille,
//! from a seeded generator, so a run is reproducible for a given request
//! order), one-shot faults for given payment ids, and faults that hit every
//! request of a given payment id.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The charge is committed, then the connection is closed with no
    /// response: the device cannot know the outcome (B2).
    DropAfterCommit,
    /// HTTP 503 before anything is charged.
    ServerError,
    /// HTTP 409 `in_flight`, as if another request for the same id were
    /// being processed; nothing is charged.
    Conflict,
    /// The connection is closed before the request is processed; nothing is
    /// charged.
    Reset,
    /// The request is held without an answer for [`FaultPlan::hold`]
    /// (longer than any client timeout), then dropped; nothing is charged.
    Timeout,
    /// A slow answer: 50–250 ms more than the base latency.
    Slow,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::DropAfterCommit,
        Fault::ServerError,
        Fault::Conflict,
        Fault::Reset,
        Fault::Timeout,
        Fault::Slow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::DropAfterCommit => "drop-after-commit",
            Fault::ServerError => "5xx",
            Fault::Conflict => "conflict",
            Fault::Reset => "reset",
            Fault::Timeout => "timeout",
            Fault::Slow => "slow",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fault modes a command line can name (`--fault <mode>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultMode {
    /// 20 ms added to every request.
    Latency,
    DropAfterCommit,
    ServerError,
    Conflict,
    Reset,
    Timeout,
    /// 30 % of requests fail with a 5xx or a reset, the rest succeed.
    Intermittent,
    Slow,
    /// Every fault at a low rate, plus latency.
    Mix,
}

impl FaultMode {
    pub const ALL: [FaultMode; 9] = [
        FaultMode::Latency,
        FaultMode::DropAfterCommit,
        FaultMode::ServerError,
        FaultMode::Conflict,
        FaultMode::Reset,
        FaultMode::Timeout,
        FaultMode::Intermittent,
        FaultMode::Slow,
        FaultMode::Mix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultMode::Latency => "latency",
            FaultMode::DropAfterCommit => "drop-after-commit",
            FaultMode::ServerError => "5xx",
            FaultMode::Conflict => "conflict",
            FaultMode::Reset => "reset",
            FaultMode::Timeout => "timeout",
            FaultMode::Intermittent => "intermittent",
            FaultMode::Slow => "slow",
            FaultMode::Mix => "mix",
        }
    }

    /// The plan of this mode; `rate` (per mille) overrides its default rate.
    pub fn plan(self, rate: Option<u32>) -> FaultPlan {
        let mut p = FaultPlan::default();
        let single = |f: Fault, default: u32| vec![(f, rate.unwrap_or(default))];
        match self {
            FaultMode::Latency => p.latency = Duration::from_millis(20),
            FaultMode::DropAfterCommit => p.rates = single(Fault::DropAfterCommit, 200),
            FaultMode::ServerError => p.rates = single(Fault::ServerError, 200),
            FaultMode::Conflict => p.rates = single(Fault::Conflict, 200),
            FaultMode::Reset => p.rates = single(Fault::Reset, 200),
            FaultMode::Timeout => p.rates = single(Fault::Timeout, 100),
            FaultMode::Intermittent => {
                let r = rate.unwrap_or(300) / 2;
                p.rates = vec![(Fault::ServerError, r), (Fault::Reset, r)];
            }
            FaultMode::Slow => p.rates = single(Fault::Slow, 500),
            FaultMode::Mix => {
                p.latency = Duration::from_millis(5);
                let r = rate.unwrap_or(40);
                p.rates = Fault::ALL.iter().map(|f| (*f, r)).collect();
            }
        }
        p
    }
}

impl fmt::Display for FaultMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown fault mode name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault mode {0:?}; known: latency, drop-after-commit, 5xx, conflict, reset, timeout, intermittent, slow, mix")]
pub struct UnknownFaultMode(pub String);

impl FromStr for FaultMode {
    type Err = UnknownFaultMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownFaultMode(s.chars().take(40).collect()))
    }
}

/// What the simulator does to requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// Added to every payment request.
    pub latency: Duration,
    /// Faults drawn independently for each payment request, per mille; the
    /// first that fires applies.
    pub rates: Vec<(Fault, u32)>,
    /// Faults for the next requests of a payment id, consumed in order.
    pub once: BTreeMap<String, Vec<Fault>>,
    /// A fault for every request of a payment id.
    pub always: BTreeMap<String, Fault>,
    /// How long a `Timeout` holds the request.
    pub hold: Duration,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            latency: Duration::ZERO,
            rates: Vec::new(),
            once: BTreeMap::new(),
            always: BTreeMap::new(),
            hold: Duration::from_secs(2),
        }
    }
}

impl FaultPlan {
    /// No faults, no latency.
    pub fn none() -> Self {
        FaultPlan::default()
    }

    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    pub fn with_rate(mut self, fault: Fault, per_mille: u32) -> Self {
        self.rates.push((fault, per_mille.min(1000)));
        self
    }

    pub fn once_for(mut self, payment_id: &str, fault: Fault) -> Self {
        self.once
            .entry(payment_id.to_owned())
            .or_default()
            .push(fault);
        self
    }

    pub fn always_for(mut self, payment_id: &str, fault: Fault) -> Self {
        self.always.insert(payment_id.to_owned(), fault);
        self
    }
}

/// splitmix64: the simulator's seeded generator.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_parses_from_its_name() {
        for m in FaultMode::ALL {
            assert_eq!(m.name().parse::<FaultMode>(), Ok(m));
        }
        assert!("nope".parse::<FaultMode>().is_err());
    }
}
