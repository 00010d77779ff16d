//! The offline session (SPEC R7, R8, B4, B13).
//!
//! Owns the device profiles and their [`SessionRules`], and [`OfflineSession`]:
//! when offline acceptance started (the connection loss), its acceptance
//! window, the forwarding deadline and its anchor, the warnings raised as the
//! deadline approaches, and the switch to require-online when too close to it.
//!
//! Sans I/O: every method takes the trusted time (`TrustedClock::now`) from
//! the caller. Every limit is a fixed [`Timestamp`] computed from the session
//! start or the first offline payment, so no later `now` can move it; a `now`
//! earlier than the session start or than a time already seen is raised to it,
//! so a clock going back never reopens a window or adds time left (B13).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{duration_ms, Timestamp};

/// What kind of device takes the payments; decides the default window and
/// deadline rule (SPEC R7, R8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceProfile {
    /// A phone or tablet with an attached (Bluetooth) reader:
    /// 1 h acceptance window, deadline 24 h after the connection was lost.
    PhoneReader,
    /// A dedicated payment terminal: 24 h acceptance window,
    /// deadline 24 h after the first offline payment.
    DedicatedTerminal,
}

/// From which moment the forwarding deadline is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeadlineAnchor {
    /// From the moment the connection was lost (the session start).
    ConnectionLoss,
    /// From the first payment taken offline in the session.
    FirstOfflinePayment,
}

/// The time rules of offline sessions. Part of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRules {
    /// How long after the session start offline payments may be taken.
    pub acceptance_window: Duration,
    /// How long after the anchor stored payments may still be forwarded.
    pub forwarding_deadline: Duration,
    /// From which moment `forwarding_deadline` is counted.
    pub deadline_anchor: DeadlineAnchor,
    /// Warn when this much time is left before the deadline (e.g. 12 h, 1 h, 15 min).
    pub warnings_before_deadline: Vec<Duration>,
    /// With less than this left before the deadline, new payments require online (B4).
    pub require_online_margin: Duration,
}

impl SessionRules {
    /// The defaults of a profile (SPEC R7, R8).
    pub fn for_profile(profile: DeviceProfile) -> Self {
        const HOUR: Duration = Duration::from_secs(3600);
        let (acceptance_window, deadline_anchor) = match profile {
            DeviceProfile::PhoneReader => (HOUR, DeadlineAnchor::ConnectionLoss),
            DeviceProfile::DedicatedTerminal => (24 * HOUR, DeadlineAnchor::FirstOfflinePayment),
        };
        SessionRules {
            acceptance_window,
            forwarding_deadline: 24 * HOUR,
            deadline_anchor,
            warnings_before_deadline: vec![12 * HOUR, HOUR, Duration::from_secs(15 * 60)],
            require_online_margin: HOUR,
        }
    }
}

/// Why a [`SessionRules`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionRulesError {
    /// The acceptance window was shorter than one millisecond.
    #[error("the acceptance window must be at least 1 ms")]
    ZeroAcceptanceWindow,
    /// The forwarding deadline was shorter than one millisecond.
    #[error("the forwarding deadline must be at least 1 ms")]
    ZeroForwardingDeadline,
    /// The require-online margin would refuse every offline payment.
    #[error("the require-online margin ({margin:?}) must be below the forwarding deadline ({deadline:?})")]
    MarginNotBelowDeadline {
        margin: Duration,
        deadline: Duration,
    },
}

impl SessionRules {
    /// Refuses rules under which a session makes no sense: an empty window or
    /// deadline, or a require-online margin that refuses every payment.
    pub fn validate(&self) -> Result<(), SessionRulesError> {
        if duration_ms(self.acceptance_window) == 0 {
            return Err(SessionRulesError::ZeroAcceptanceWindow);
        }
        if duration_ms(self.forwarding_deadline) == 0 {
            return Err(SessionRulesError::ZeroForwardingDeadline);
        }
        if self.require_online_margin >= self.forwarding_deadline {
            return Err(SessionRulesError::MarginNotBelowDeadline {
                margin: self.require_online_margin,
                deadline: self.forwarding_deadline,
            });
        }
        Ok(())
    }
}

/// Why the session refuses a new offline payment. Carries the figures the
/// app shows and the audit log keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SessionRefusal {
    /// The acceptance window of the device profile is over (SPEC R7).
    #[error("the offline acceptance window closed at {closes_at:?} (now {now:?})")]
    AcceptanceWindowClosed {
        closes_at: Timestamp,
        now: Timestamp,
    },
    /// The forwarding deadline has passed: a payment taken now could never
    /// be forwarded (SPEC R8).
    #[error("the forwarding deadline {deadline:?} has passed (now {now:?})")]
    DeadlinePassed { deadline: Timestamp, now: Timestamp },
    /// Less than the require-online margin is left before the deadline:
    /// new payments must go online (SPEC B4).
    #[error(
        "only {time_left:?} left before the forwarding deadline {deadline:?}; \
         online is required with less than {margin:?} left"
    )]
    TooCloseToDeadline {
        deadline: Timestamp,
        now: Timestamp,
        time_left: Duration,
        margin: Duration,
    },
}

/// What a [`SessionWarning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionWarningKind {
    /// Time left before the forwarding deadline dropped to `threshold` or
    /// below (one of [`SessionRules::warnings_before_deadline`]).
    DeadlineApproaching { threshold: Duration },
    /// The acceptance window closed: no more offline payments in this session.
    AcceptanceWindowClosed { closed_at: Timestamp },
}

/// A warning for the app and the audit log, returned once by
/// [`OfflineSession::due_warnings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionWarning {
    pub kind: SessionWarningKind,
    /// The forwarding deadline; `None` only when it is anchored on the first
    /// offline payment and none was taken yet.
    pub deadline: Option<Timestamp>,
    /// Time left before `deadline` when the warning was raised.
    pub time_left: Option<Duration>,
}

/// One offline session: from the connection loss until the engine ends it
/// (back online with nothing left to forward). Persist it with the payments:
/// it must survive restarts so that nothing is ever extended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineSession {
    /// When the connection was lost.
    started_at: Timestamp,
    /// When the first payment of the session was taken offline.
    first_offline_payment_at: Option<Timestamp>,
    /// The rules the session runs under, fixed at its start.
    rules: SessionRules,
    /// Thresholds of `rules.warnings_before_deadline` that already fired.
    deadline_warnings_emitted: Vec<Duration>,
    /// Whether the acceptance-window-closed warning already fired.
    acceptance_closed_emitted: bool,
    /// Latest time seen by a `&mut` method: an earlier `now` is raised to it.
    latest_seen: Timestamp,
}

impl OfflineSession {
    /// A session that began when the connection was lost, at `at` (the
    /// connectivity machine's `outage_began`).
    pub fn start(rules: SessionRules, at: Timestamp) -> Self {
        OfflineSession {
            started_at: at,
            first_offline_payment_at: None,
            rules,
            deadline_warnings_emitted: Vec::new(),
            acceptance_closed_emitted: false,
            latest_seen: at,
        }
    }

    /// When the connection was lost.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// When the first offline payment was taken, if any.
    pub fn first_offline_payment_at(&self) -> Option<Timestamp> {
        self.first_offline_payment_at
    }

    /// The rules the session runs under.
    pub fn rules(&self) -> &SessionRules {
        &self.rules
    }

    /// Deadline thresholds that already fired, in firing order.
    pub fn deadline_warnings_emitted(&self) -> &[Duration] {
        &self.deadline_warnings_emitted
    }

    /// `now`, never below the session start nor below a time already seen.
    fn effective_now(&self, now: Timestamp) -> Timestamp {
        now.max(self.started_at).max(self.latest_seen)
    }

    /// Records that the trusted time reached `now`: later calls with an
    /// earlier `now` are treated as `now`.
    pub fn observe(&mut self, now: Timestamp) {
        self.latest_seen = self.effective_now(now);
    }

    /// When offline acceptance ends: session start + acceptance window (R7).
    pub fn acceptance_closes_at(&self) -> Timestamp {
        self.started_at.plus(self.rules.acceptance_window)
    }

    /// Whether the acceptance window is still open at `now`. It closes at
    /// exactly [`OfflineSession::acceptance_closes_at`].
    pub fn is_acceptance_open(&self, now: Timestamp) -> bool {
        self.effective_now(now) < self.acceptance_closes_at()
    }

    /// The forwarding deadline of the session's payments (R8): connection
    /// loss + deadline, or first offline payment + deadline (`None` before
    /// the first payment).
    pub fn deadline(&self) -> Option<Timestamp> {
        match self.rules.deadline_anchor {
            DeadlineAnchor::ConnectionLoss => {
                Some(self.started_at.plus(self.rules.forwarding_deadline))
            }
            DeadlineAnchor::FirstOfflinePayment => self
                .first_offline_payment_at
                .map(|first| first.plus(self.rules.forwarding_deadline)),
        }
    }

    /// The deadline a payment taken at `now` would get: the session deadline,
    /// or `now` + deadline when it is anchored on a first payment not yet taken.
    pub fn deadline_for_new_payment(&self, now: Timestamp) -> Timestamp {
        self.deadline()
            .unwrap_or_else(|| self.effective_now(now).plus(self.rules.forwarding_deadline))
    }

    /// Time left before the deadline at `now` (zero once passed); `None`
    /// when there is no deadline yet.
    pub fn time_left(&self, now: Timestamp) -> Option<Duration> {
        let now = self.effective_now(now);
        self.deadline().map(|d| now.until(d))
    }

    /// Whether a new offline payment may be taken at `now`, as far as time
    /// goes: the acceptance window is open (R7), the deadline has not passed
    /// (R8) and at least the require-online margin is left (B4).
    pub fn check_acceptance(&self, now: Timestamp) -> Result<(), SessionRefusal> {
        let now = self.effective_now(now);
        let closes_at = self.acceptance_closes_at();
        if now >= closes_at {
            return Err(SessionRefusal::AcceptanceWindowClosed { closes_at, now });
        }
        let deadline = self.deadline_for_new_payment(now);
        let time_left = now.until(deadline);
        if time_left.is_zero() {
            return Err(SessionRefusal::DeadlinePassed { deadline, now });
        }
        let margin = self.rules.require_online_margin;
        if time_left < margin {
            return Err(SessionRefusal::TooCloseToDeadline {
                deadline,
                now,
                time_left,
                margin,
            });
        }
        Ok(())
    }

    /// Records an offline payment taken at `at` (call it once the payment is
    /// durable, after [`OfflineSession::check_acceptance`] passed). The first
    /// one anchors the deadline of the dedicated-terminal profile; later ones
    /// never move it. Returns the payment's forwarding deadline.
    pub fn record_offline_payment(&mut self, at: Timestamp) -> Timestamp {
        self.observe(at);
        let at = self.latest_seen;
        if self.first_offline_payment_at.is_none() {
            self.first_offline_payment_at = Some(at);
        }
        self.deadline_for_new_payment(at)
    }

    /// When the next warning of [`due_warnings`](Self::due_warnings) falls
    /// due, if one is still to come: a deadline threshold not yet reached
    /// (once an offline payment was taken), or the acceptance window's close.
    pub fn next_warning_at(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
        if let (Some(deadline), Some(_)) = (self.deadline(), self.first_offline_payment_at) {
            for threshold in &self.rules.warnings_before_deadline {
                if !self.deadline_warnings_emitted.contains(threshold) {
                    consider(Timestamp(
                        deadline.0.saturating_sub(duration_ms(*threshold)),
                    ));
                }
            }
        }
        if !self.acceptance_closed_emitted {
            consider(self.acceptance_closes_at());
        }
        next
    }

    /// The warnings that became due at `now`, each returned exactly once over
    /// the life of the session:
    /// - one per threshold of `warnings_before_deadline`, when time left drops
    ///   to or below it, and only once an offline payment was taken (before
    ///   that, no money is at risk);
    /// - one when the acceptance window closes.
    ///
    /// If several became due at once (the device slept, the app was killed),
    /// all are returned, in the order they fell due: largest threshold first.
    /// Each has its own audit value; the app may show only the last one.
    pub fn due_warnings(&mut self, now: Timestamp) -> Vec<SessionWarning> {
        self.observe(now);
        let now = self.latest_seen;
        let deadline = self.deadline();
        let time_left = deadline.map(|d| now.until(d));
        let mut due: Vec<(Timestamp, SessionWarning)> = Vec::new();

        if let (Some(deadline), Some(left), Some(_)) =
            (deadline, time_left, self.first_offline_payment_at)
        {
            let mut thresholds = self.rules.warnings_before_deadline.clone();
            thresholds.sort_unstable_by(|a, b| b.cmp(a));
            thresholds.dedup();
            for threshold in thresholds {
                if left <= threshold && !self.deadline_warnings_emitted.contains(&threshold) {
                    self.deadline_warnings_emitted.push(threshold);
                    let fell_due = Timestamp(deadline.0.saturating_sub(duration_ms(threshold)));
                    due.push((
                        fell_due,
                        SessionWarning {
                            kind: SessionWarningKind::DeadlineApproaching { threshold },
                            deadline: Some(deadline),
                            time_left: Some(left),
                        },
                    ));
                }
            }
        }

        let closes_at = self.acceptance_closes_at();
        if !self.acceptance_closed_emitted && now >= closes_at {
            self.acceptance_closed_emitted = true;
            due.push((
                closes_at,
                SessionWarning {
                    kind: SessionWarningKind::AcceptanceWindowClosed {
                        closed_at: closes_at,
                    },
                    deadline,
                    time_left,
                },
            ));
        }

        // Stable: equal times keep the order above.
        due.sort_by_key(|(fell_due, _)| *fell_due);
        due.into_iter().map(|(_, w)| w).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{TrustedClock, VirtualClock};

    const T0: Timestamp = Timestamp(1_800_000_000_000);
    const SEC: Duration = Duration::from_secs(1);
    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn t(d: Duration) -> Timestamp {
        T0.plus(d)
    }

    fn phone() -> OfflineSession {
        OfflineSession::start(SessionRules::for_profile(DeviceProfile::PhoneReader), T0)
    }

    fn terminal() -> OfflineSession {
        OfflineSession::start(
            SessionRules::for_profile(DeviceProfile::DedicatedTerminal),
            T0,
        )
    }

    fn kinds(ws: &[SessionWarning]) -> Vec<SessionWarningKind> {
        ws.iter().map(|w| w.kind).collect()
    }

    fn approaching(threshold: Duration) -> SessionWarningKind {
        SessionWarningKind::DeadlineApproaching { threshold }
    }

    #[test]
    fn profiles_keep_their_defaults() {
        let p = SessionRules::for_profile(DeviceProfile::PhoneReader);
        assert_eq!(p.acceptance_window, HOUR);
        assert_eq!(p.forwarding_deadline, 24 * HOUR);
        assert_eq!(p.deadline_anchor, DeadlineAnchor::ConnectionLoss);
        assert_eq!(p.warnings_before_deadline, vec![12 * HOUR, HOUR, 15 * MIN]);
        assert_eq!(p.require_online_margin, HOUR);
        assert_eq!(p.validate(), Ok(()));
        let d = SessionRules::for_profile(DeviceProfile::DedicatedTerminal);
        assert_eq!(d.acceptance_window, 24 * HOUR);
        assert_eq!(d.deadline_anchor, DeadlineAnchor::FirstOfflinePayment);
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn rules_validation() {
        let ok = SessionRules::for_profile(DeviceProfile::PhoneReader);
        let with = |f: fn(&mut SessionRules)| {
            let mut r = ok.clone();
            f(&mut r);
            r.validate()
        };
        assert_eq!(
            with(|r| r.acceptance_window = Duration::ZERO),
            Err(SessionRulesError::ZeroAcceptanceWindow)
        );
        assert_eq!(
            with(|r| r.forwarding_deadline = Duration::from_micros(10)),
            Err(SessionRulesError::ZeroForwardingDeadline)
        );
        assert_eq!(
            with(|r| r.require_online_margin = 24 * HOUR),
            Err(SessionRulesError::MarginNotBelowDeadline {
                margin: 24 * HOUR,
                deadline: 24 * HOUR
            })
        );
        assert_eq!(with(|r| r.require_online_margin = Duration::ZERO), Ok(()));
    }

    // ---- phone-attached reader (R7, R8) ----

    #[test]
    fn phone_window_closes_one_hour_after_connection_loss() {
        let s = phone();
        assert_eq!(s.acceptance_closes_at(), t(HOUR));
        assert_eq!(s.check_acceptance(T0), Ok(()));
        let last_ms = Timestamp(t(HOUR).0 - 1);
        assert_eq!(s.check_acceptance(last_ms), Ok(()));
        assert!(s.is_acceptance_open(last_ms));
        assert_eq!(
            s.check_acceptance(t(HOUR)),
            Err(SessionRefusal::AcceptanceWindowClosed {
                closes_at: t(HOUR),
                now: t(HOUR)
            })
        );
        assert!(!s.is_acceptance_open(t(HOUR)));
        assert!(s.check_acceptance(t(5 * HOUR)).is_err());
    }

    #[test]
    fn phone_deadline_is_24h_after_connection_loss_even_if_the_first_payment_is_later() {
        let mut s = phone();
        assert_eq!(s.deadline(), Some(t(24 * HOUR)));
        assert_eq!(s.deadline_for_new_payment(t(50 * MIN)), t(24 * HOUR));
        let payment_deadline = s.record_offline_payment(t(50 * MIN));
        assert_eq!(payment_deadline, t(24 * HOUR));
        assert_eq!(s.first_offline_payment_at(), Some(t(50 * MIN)));
        assert_eq!(s.deadline(), Some(t(24 * HOUR)));
        assert_eq!(s.time_left(t(50 * MIN)), Some(24 * HOUR - 50 * MIN));
        assert_eq!(s.time_left(t(30 * HOUR)), Some(Duration::ZERO));
    }

    // ---- dedicated terminal (R7, R8) ----

    #[test]
    fn terminal_window_is_24h_and_deadline_24h_after_the_first_payment() {
        let mut s = terminal();
        assert_eq!(s.acceptance_closes_at(), t(24 * HOUR));
        assert_eq!(s.deadline(), None);
        assert_eq!(s.time_left(t(HOUR)), None);
        assert_eq!(s.deadline_for_new_payment(t(3 * HOUR)), t(27 * HOUR));
        assert_eq!(s.check_acceptance(t(3 * HOUR)), Ok(()));

        assert_eq!(s.record_offline_payment(t(3 * HOUR)), t(27 * HOUR));
        assert_eq!(s.deadline(), Some(t(27 * HOUR)));
        // Later payments share the session deadline: it never moves.
        assert_eq!(s.record_offline_payment(t(5 * HOUR)), t(27 * HOUR));
        assert_eq!(s.first_offline_payment_at(), Some(t(3 * HOUR)));
        assert_eq!(s.deadline_for_new_payment(t(6 * HOUR)), t(27 * HOUR));
        assert_eq!(s.time_left(t(26 * HOUR)), Some(HOUR));
        assert_eq!(
            s.check_acceptance(t(24 * HOUR)),
            Err(SessionRefusal::AcceptanceWindowClosed {
                closes_at: t(24 * HOUR),
                now: t(24 * HOUR)
            })
        );
    }

    // ---- require-online switch (B4) ----

    #[test]
    fn require_online_inside_the_margin() {
        let mut s = terminal();
        s.record_offline_payment(T0);
        // Exactly the margin left: still accepted.
        assert_eq!(s.check_acceptance(t(23 * HOUR)), Ok(()));
        let now = t(23 * HOUR + SEC);
        let err = s.check_acceptance(now).unwrap_err();
        assert_eq!(
            err,
            SessionRefusal::TooCloseToDeadline {
                deadline: t(24 * HOUR),
                now,
                time_left: HOUR - SEC,
                margin: HOUR,
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("online is required"), "{msg}");
    }

    #[test]
    fn a_passed_deadline_is_refused_even_with_no_margin() {
        let rules = SessionRules {
            acceptance_window: 48 * HOUR,
            require_online_margin: Duration::ZERO,
            ..SessionRules::for_profile(DeviceProfile::PhoneReader)
        };
        let s = OfflineSession::start(rules, T0);
        assert_eq!(s.check_acceptance(Timestamp(t(24 * HOUR).0 - 1)), Ok(()));
        assert_eq!(
            s.check_acceptance(t(24 * HOUR)),
            Err(SessionRefusal::DeadlinePassed {
                deadline: t(24 * HOUR),
                now: t(24 * HOUR)
            })
        );
    }

    #[test]
    fn terminal_with_no_payment_yet_is_never_too_close() {
        let s = terminal();
        assert_eq!(s.check_acceptance(Timestamp(t(24 * HOUR).0 - 1)), Ok(()));
    }

    // ---- warnings (R8, B4) ----

    #[test]
    fn warnings_at_12h_1h_15min_fire_once_each() {
        let mut s = phone();
        s.record_offline_payment(t(10 * MIN));
        let mut fired = vec![];
        // Walk the whole session minute by minute (and twice per minute).
        let mut now = T0;
        while now <= t(26 * HOUR) {
            for w in s.due_warnings(now).into_iter().chain(s.due_warnings(now)) {
                fired.push((now, w));
            }
            now = now.plus(MIN);
        }
        let got: Vec<_> = fired.iter().map(|(at, w)| (*at, w.kind)).collect();
        assert_eq!(
            got,
            vec![
                (
                    t(HOUR),
                    SessionWarningKind::AcceptanceWindowClosed { closed_at: t(HOUR) }
                ),
                (t(12 * HOUR), approaching(12 * HOUR)),
                (t(23 * HOUR), approaching(HOUR)),
                (t(23 * HOUR + 45 * MIN), approaching(15 * MIN)),
            ]
        );
        let (_, w) = fired[1];
        assert_eq!(w.deadline, Some(t(24 * HOUR)));
        assert_eq!(w.time_left, Some(12 * HOUR));
        assert_eq!(s.deadline_warnings_emitted(), &[12 * HOUR, HOUR, 15 * MIN]);
    }

    /// The next warning's time is exactly when `due_warnings` first returns
    /// it: an app woken then (WorkManager, BGTask) misses none.
    #[test]
    fn the_next_warning_is_due_exactly_when_announced() {
        let mut s = phone();
        assert_eq!(s.next_warning_at(), Some(t(HOUR)), "the window's close");
        s.record_offline_payment(t(10 * MIN));
        let mut seen = 0;
        while let Some(at) = s.next_warning_at() {
            assert!(
                s.due_warnings(Timestamp(at.0 - 1)).is_empty(),
                "early at {at:?}"
            );
            assert!(!s.due_warnings(at).is_empty(), "nothing at {at:?}");
            seen += 1;
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn warning_fires_when_time_left_drops_to_the_threshold_not_before() {
        let mut s = phone();
        s.record_offline_payment(T0);
        assert_eq!(s.due_warnings(t(2 * HOUR)).len(), 1, "window closed");
        assert!(s.due_warnings(Timestamp(t(12 * HOUR).0 - 1)).is_empty());
        assert_eq!(
            kinds(&s.due_warnings(t(12 * HOUR))),
            vec![approaching(12 * HOUR)]
        );
    }

    #[test]
    fn after_a_long_sleep_every_crossed_warning_fires_largest_first() {
        let mut s = phone();
        s.record_offline_payment(t(5 * MIN));
        assert!(s.due_warnings(t(6 * MIN)).is_empty());
        let ws = s.due_warnings(t(23 * HOUR + 50 * MIN));
        assert_eq!(
            kinds(&ws),
            vec![
                SessionWarningKind::AcceptanceWindowClosed { closed_at: t(HOUR) },
                approaching(12 * HOUR),
                approaching(HOUR),
                approaching(15 * MIN),
            ]
        );
        assert!(ws.iter().all(|w| w.time_left == Some(10 * MIN)));
        assert!(s.due_warnings(t(30 * HOUR)).is_empty());
    }

    #[test]
    fn no_deadline_warning_before_any_offline_payment() {
        let mut s = phone();
        let ws = s.due_warnings(t(23 * HOUR + 50 * MIN));
        assert_eq!(
            kinds(&ws),
            vec![SessionWarningKind::AcceptanceWindowClosed { closed_at: t(HOUR) }]
        );
        assert_eq!(ws[0].deadline, Some(t(24 * HOUR)));

        // With no payment yet, a terminal session has no deadline at all.
        let mut s = terminal();
        let ws = s.due_warnings(t(25 * HOUR));
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0].deadline, None);
        assert_eq!(ws[0].time_left, None);
    }

    #[test]
    fn thresholds_crossed_before_the_first_payment_fire_with_it() {
        let rules = SessionRules {
            acceptance_window: 20 * HOUR,
            ..SessionRules::for_profile(DeviceProfile::PhoneReader)
        };
        let mut s = OfflineSession::start(rules, T0);
        assert!(s.due_warnings(t(13 * HOUR)).is_empty());
        s.record_offline_payment(t(13 * HOUR));
        let ws = s.due_warnings(t(13 * HOUR));
        assert_eq!(kinds(&ws), vec![approaching(12 * HOUR)]);
        assert_eq!(ws[0].time_left, Some(11 * HOUR));
    }

    #[test]
    fn duplicate_thresholds_fire_once() {
        let rules = SessionRules {
            warnings_before_deadline: vec![HOUR, 12 * HOUR, HOUR],
            ..SessionRules::for_profile(DeviceProfile::PhoneReader)
        };
        let mut s = OfflineSession::start(rules, T0);
        s.record_offline_payment(T0);
        let ws = s.due_warnings(t(23 * HOUR));
        assert_eq!(
            kinds(&ws)
                .into_iter()
                .filter(|k| matches!(k, SessionWarningKind::DeadlineApproaching { .. }))
                .collect::<Vec<_>>(),
            vec![approaching(12 * HOUR), approaching(HOUR)]
        );
    }

    // ---- time never goes back (B13) ----

    #[test]
    fn a_now_before_the_start_counts_as_the_start_and_extends_nothing() {
        let mut s = terminal();
        let early = Timestamp(T0.0 - 3_600_000);
        assert_eq!(s.check_acceptance(early), Ok(()));
        assert!(s.is_acceptance_open(early));
        assert_eq!(s.deadline_for_new_payment(early), t(24 * HOUR));
        assert_eq!(s.record_offline_payment(early), t(24 * HOUR));
        assert_eq!(s.first_offline_payment_at(), Some(T0));
        assert_eq!(s.time_left(early), Some(24 * HOUR));
        assert_eq!(s.acceptance_closes_at(), t(24 * HOUR));
    }

    #[test]
    fn a_now_earlier_than_one_seen_never_reopens_the_window() {
        let mut s = phone();
        let ws = s.due_warnings(t(2 * HOUR));
        assert_eq!(ws.len(), 1);
        assert_eq!(
            s.check_acceptance(t(30 * MIN)),
            Err(SessionRefusal::AcceptanceWindowClosed {
                closes_at: t(HOUR),
                now: t(2 * HOUR)
            })
        );
        assert_eq!(s.time_left(t(30 * MIN)), Some(22 * HOUR));
        // A payment recorded with a stale time is placed at the latest time seen.
        let mut s = terminal();
        s.observe(t(5 * HOUR));
        assert_eq!(s.record_offline_payment(t(HOUR)), t(29 * HOUR));
    }

    #[test]
    fn wall_clock_changes_and_reboots_never_extend_window_or_deadline() {
        let v = VirtualClock::new(T0);
        let clock = TrustedClock::start(Arc::new(v.clone()), None);
        let start = clock.now();
        let mut s =
            OfflineSession::start(SessionRules::for_profile(DeviceProfile::PhoneReader), start);
        let closes_at = s.acceptance_closes_at();
        let deadline = s.deadline();
        assert_eq!(closes_at, start.plus(HOUR));

        // 50 minutes later someone sets the wall clock back three hours.
        v.advance(50 * MIN);
        v.set_wall(Timestamp(v_wall(&v).0 - 3 * 3_600_000));
        s.record_offline_payment(clock.now());
        assert_eq!(s.check_acceptance(clock.now()), Ok(()));
        assert_eq!(s.time_left(clock.now()), Some(24 * HOUR - 50 * MIN));
        v.advance(10 * MIN);
        assert!(matches!(
            s.check_acceptance(clock.now()),
            Err(SessionRefusal::AcceptanceWindowClosed { .. })
        ));

        // Persist, reboot with the wall clock reset to 1970, restore.
        let floor = clock.floor();
        let saved = serde_json::to_string(&s).unwrap();
        v.reboot(10 * MIN);
        v.set_wall(Timestamp(0));
        let clock = TrustedClock::start(Arc::new(v.clone()), Some(floor));
        let mut s: OfflineSession = serde_json::from_str(&saved).unwrap();
        let now = clock.now();
        assert!(now >= floor);
        assert_eq!(s.acceptance_closes_at(), closes_at);
        assert_eq!(s.deadline(), deadline);
        assert!(s.check_acceptance(now).is_err());
        assert!(s.time_left(now).unwrap() <= 23 * HOUR);

        // Setting the wall clock back again after the reboot changes nothing.
        v.set_wall(Timestamp(0));
        v.advance(23 * HOUR);
        let ws = s.due_warnings(clock.now());
        assert_eq!(
            kinds(&ws),
            vec![
                SessionWarningKind::AcceptanceWindowClosed {
                    closed_at: closes_at
                },
                approaching(12 * HOUR),
                approaching(HOUR),
                approaching(15 * MIN),
            ]
        );
        assert_eq!(s.time_left(clock.now()), Some(Duration::ZERO));
        assert_eq!(s.deadline(), deadline);
    }

    #[test]
    fn terminal_deadline_survives_a_reboot_with_the_wall_clock_set_back() {
        let v = VirtualClock::new(T0);
        let clock = TrustedClock::start(Arc::new(v.clone()), None);
        let mut s = OfflineSession::start(
            SessionRules::for_profile(DeviceProfile::DedicatedTerminal),
            clock.now(),
        );
        v.advance(2 * HOUR);
        let deadline = s.record_offline_payment(clock.now());
        assert_eq!(deadline, T0.plus(26 * HOUR));
        v.advance(20 * HOUR);
        let floor = clock.floor();
        let saved = serde_json::to_string(&s).unwrap();
        v.reboot(MIN);
        v.set_wall(Timestamp(T0.0 - 48 * 3_600_000));
        let clock = TrustedClock::start(Arc::new(v.clone()), Some(floor));
        let s: OfflineSession = serde_json::from_str(&saved).unwrap();
        assert_eq!(s.deadline(), Some(deadline));
        assert_eq!(s.time_left(clock.now()), Some(4 * HOUR));
        assert_eq!(s.check_acceptance(clock.now()), Ok(()));
        v.advance(3 * HOUR + SEC);
        assert!(matches!(
            s.check_acceptance(clock.now()),
            Err(SessionRefusal::AcceptanceWindowClosed { .. })
        ));
    }

    fn v_wall(v: &VirtualClock) -> Timestamp {
        use crate::clock::Clock;
        v.wall_now()
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Check,
        Record,
        Warnings,
    }

    proptest::proptest! {
        /// Whatever the order of calls and however `now` jumps (back too),
        /// nothing is ever extended and every warning fires at most once.
        #[test]
        fn nothing_is_ever_extended(
            terminal_profile in proptest::bool::ANY,
            ops in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::strategy::Just(Op::Check),
                        proptest::strategy::Just(Op::Record),
                        proptest::strategy::Just(Op::Warnings),
                    ],
                    -7_200_000i64..(50 * 3_600_000),
                ),
                0..60,
            ),
        ) {
            let mut s = if terminal_profile { terminal() } else { phone() };
            let closes_at = s.acceptance_closes_at();
            let mut deadline = s.deadline();
            let mut window_seen_closed = false;
            let mut fired = vec![];
            for (op, offset) in ops {
                let now = Timestamp(T0.0 + offset);
                match op {
                    Op::Check => {
                        let r = s.check_acceptance(now);
                        if window_seen_closed {
                            proptest::prop_assert!(r.is_err());
                        }
                        if r.is_ok() {
                            let d = s.deadline_for_new_payment(now);
                            let left = now.max(T0).until(d);
                            proptest::prop_assert!(left >= s.rules().require_online_margin);
                        }
                    }
                    Op::Record => {
                        let d = s.record_offline_payment(now);
                        proptest::prop_assert_eq!(Some(d), s.deadline());
                    }
                    Op::Warnings => {
                        for w in s.due_warnings(now) {
                            proptest::prop_assert!(!fired.contains(&w.kind), "twice: {:?}", w);
                            fired.push(w.kind);
                        }
                        if now >= closes_at {
                            window_seen_closed = true;
                        }
                    }
                }
                proptest::prop_assert_eq!(s.acceptance_closes_at(), closes_at);
                if deadline.is_some() {
                    proptest::prop_assert_eq!(s.deadline(), deadline);
                }
                deadline = s.deadline();
                if let Some(d) = deadline {
                    let max_left = d.since(T0);
                    proptest::prop_assert!(s.time_left(now).unwrap() <= max_left);
                }
            }
            proptest::prop_assert!(fired.len() <= 4);
        }
    }

    #[test]
    fn serde_round_trip_keeps_emitted_warnings() {
        let mut s = phone();
        s.record_offline_payment(T0);
        assert_eq!(
            s.due_warnings(t(12 * HOUR)).len(),
            2,
            "window closed, 12 h left"
        );
        let json = serde_json::to_string(&s).unwrap();
        let mut back: OfflineSession = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(kinds(&back.due_warnings(t(12 * HOUR + MIN)))
            .iter()
            .all(|k| *k != approaching(12 * HOUR)));

        let w = SessionWarning {
            kind: approaching(HOUR),
            deadline: Some(t(HOUR)),
            time_left: Some(HOUR),
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<SessionWarning>(&json).unwrap(), w);
        let r = SessionRefusal::DeadlinePassed {
            deadline: T0,
            now: T0,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SessionRefusal>(&json).unwrap(), r);
    }
}
