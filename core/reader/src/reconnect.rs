//! Automatic reconnection with exponential back-off. The waiting is given
//! by the caller (tokio's sleep in an app, a recorder in tests), so the
//! schedule is tested without sleeps.

use std::future::Future;
use std::time::Duration;

/// How to retry a lost reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Wait before the second attempt (the first is immediate).
    pub first_delay: Duration,
    /// Longest wait between attempts.
    pub max_delay: Duration,
    /// Attempts before giving up (at least 1).
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: 20,
        }
    }
}

impl ReconnectPolicy {
    /// The wait before attempt `n` (1-based): none before the first, then
    /// `first_delay` doubling, capped at `max_delay`.
    pub fn delay_before(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let doublings = (n - 2).min(20);
        self.first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// Calls `attempt` until it succeeds or the policy gives up, waiting with
/// `sleep` between attempts. Returns how many attempts it took, or the last
/// error.
pub async fn reconnect_with_backoff<E, A, AF, S, SF>(
    policy: ReconnectPolicy,
    mut attempt: A,
    mut sleep: S,
) -> Result<u32, E>
where
    A: FnMut() -> AF,
    AF: Future<Output = Result<(), E>>,
    S: FnMut(Duration) -> SF,
    SF: Future<Output = ()>,
{
    let attempts = policy.max_attempts.max(1);
    let mut n = 1;
    loop {
        let wait = policy.delay_before(n);
        if !wait.is_zero() {
            sleep(wait).await;
        }
        match attempt().await {
            Ok(()) => return Ok(n),
            Err(e) if n >= attempts => return Err(e),
            Err(_) => n += 1,
        }
    }
}

/// What the reconnection supervisor saw or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervision {
    /// The link went down.
    Disconnected,
    /// Attempt `attempt` is about to be made (after its back-off wait).
    Reconnecting { attempt: u32 },
    /// The link is back after `attempts` attempts; the channel resends what
    /// the reader did not acknowledge.
    Reconnected { attempts: u32 },
    /// The policy's attempts are spent; the supervisor waits for the link to
    /// come back by other means (a manual reconnect) and then watches again.
    GaveUp { attempts: u32 },
}

/// A link the supervisor can watch and bring back: the simulated radio
/// ([`crate::link::LinkControl`]) and, with the `ble` feature, btleplug.
pub trait Reconnect: Send + Sync + 'static {
    /// `true` while the link is up.
    fn watch_connected(&self) -> tokio::sync::watch::Receiver<bool>;
    /// One attempt to bring the link back.
    fn try_reconnect(&self) -> impl Future<Output = Result<(), String>> + Send;
}

impl Reconnect for crate::link::LinkControl {
    fn watch_connected(&self) -> tokio::sync::watch::Receiver<bool> {
        crate::link::LinkControl::watch_connected(self)
    }

    fn try_reconnect(&self) -> impl Future<Output = Result<(), String>> + Send {
        let r = crate::link::LinkControl::try_reconnect(self).map_err(|e| e.to_string());
        async move { r }
    }
}

/// Watches `control`'s link and, whenever it drops, reconnects it with
/// back-off, reporting each step to `report`. Runs until aborted (a tokio
/// task on the current runtime). Timing is tokio's, so a test with paused
/// time runs it without waiting.
pub fn supervise<L: Reconnect>(
    control: L,
    policy: ReconnectPolicy,
    report: impl Fn(Supervision) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut up = control.watch_connected();
        loop {
            if up.wait_for(|c| !*c).await.is_err() {
                return;
            }
            tracing::info!("reader link lost: reconnecting");
            report(Supervision::Disconnected);
            let tries = std::sync::atomic::AtomicU32::new(0);
            let result = reconnect_with_backoff(
                policy,
                || {
                    let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    tracing::debug!(attempt = n, "reconnecting the reader");
                    report(Supervision::Reconnecting { attempt: n });
                    control.try_reconnect()
                },
                tokio::time::sleep,
            )
            .await;
            match &result {
                Ok(attempts) => tracing::info!(attempts, "reader link back"),
                Err(_) => tracing::warn!(
                    attempts = tries.load(std::sync::atomic::Ordering::SeqCst),
                    "reader not reconnected: gave up until the link comes back"
                ),
            }
            match result {
                Ok(attempts) => report(Supervision::Reconnected { attempts }),
                Err(_) => {
                    report(Supervision::GaveUp {
                        attempts: tries.load(std::sync::atomic::Ordering::SeqCst),
                    });
                    if up.wait_for(|c| *c).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn the_schedule_doubles_and_is_capped() {
        let p = ReconnectPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(3),
            max_attempts: 10,
        };
        let waits: Vec<u64> = (1..=6)
            .map(|n| p.delay_before(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![0, 500, 1_000, 2_000, 3_000, 3_000]);
    }

    #[tokio::test]
    async fn retries_until_the_reader_is_back_then_gives_up_when_it_never_is() {
        let p = ReconnectPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: 5,
        };
        let slept = RefCell::new(Vec::new());
        let tries = RefCell::new(0);
        let n = reconnect_with_backoff(
            p,
            || {
                *tries.borrow_mut() += 1;
                let ok = *tries.borrow() >= 4;
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("down")
                    }
                }
            },
            |d| {
                slept.borrow_mut().push(d.as_millis() as u64);
                async {}
            },
        )
        .await;
        assert_eq!(n, Ok(4));
        assert_eq!(*slept.borrow(), vec![100, 200, 400]);
        let never =
            reconnect_with_backoff(p, || async { Err::<(), _>("down") }, |_| async {}).await;
        assert_eq!(never, Err("down"));
    }
}
