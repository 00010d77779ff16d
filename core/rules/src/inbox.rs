//! The inbox of other channels' online orders (SPEC R18): hidden while
//! offline, filled again on reconnection.
//!
//! Owns the [`OrderSource`] trait, which the app implements to fetch the
//! orders (from its web shop, delivery platforms...), the [`OrderBatch`] and
//! [`RemoteOrder`] it returns, and the [`Inbox`] that keeps them. This is an
//! interface: the library never talks to those channels itself.
//!
//! The inbox's phases:
//!
//! ```text
//! Offline ──on_connectivity(true)──▶ AwaitingSync ──refresh ok──▶ Synced
//!    ▲                                    │                          │
//!    └──────on_connectivity(false)────────┴──────────────────────────┘
//! ```
//!
//! Going offline empties the inbox and forgets the cursor: while offline,
//! other channels' orders may change without us knowing, so nothing stale is
//! kept or shown, and the first refresh after reconnection starts afresh.
//! The source is called without any lock held, so it may call back into the
//! inbox; a refresh whose connectivity changed under it is discarded.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::money::Money;

/// Most pages one [`Inbox::refresh`] fetches; beyond that the outcome says
/// `more_pending` and the app refreshes again.
pub const MAX_PAGES_PER_REFRESH: usize = 20;

/// An order placed on another channel, as the source describes it. Keep
/// customer details out of it: the inbox shows orders, it does not hold
/// personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteOrder {
    /// The source's id for the order; unique within the source, non-empty.
    pub id: String,
    /// The channel it came from, e.g. `"web shop"`.
    pub channel: String,
    /// When it was placed.
    pub placed_at: Timestamp,
    /// Its total.
    pub total: Money,
}

/// One page of changes from the source.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderBatch {
    /// Orders new or changed since the cursor; an order already in the inbox
    /// is replaced by the one with the same id.
    pub orders: Vec<RemoteOrder>,
    /// Ids of orders to take out of the inbox (fulfilled or cancelled).
    pub removed_ids: Vec<String>,
    /// The cursor for the next fetch; `None` keeps the one passed in.
    pub next_cursor: Option<String>,
    /// Whether more changes are waiting after this page (then
    /// `next_cursor` must move on).
    pub has_more: bool,
}

/// Why the source could not give its orders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    /// The source cannot be reached now; try again later.
    #[error("the order source is unavailable: {reason}")]
    Unavailable {
        /// The source's explanation.
        reason: String,
    },
    /// The source failed in another way.
    #[error("the order source failed: {reason}")]
    Source {
        /// The source's explanation.
        reason: String,
    },
    /// The source said more was waiting but did not move its cursor: it
    /// would be asked for the same page forever.
    #[error("the order source returned has_more without a new cursor")]
    CursorStuck,
    /// The source returned an order with an empty id.
    #[error("the order source returned an order without an id")]
    InvalidOrder,
}

/// Implemented by the app: fetches other channels' online orders.
pub trait OrderSource: Send + Sync {
    /// The orders new or changed after `cursor`. `None` means from scratch:
    /// the orders the app wants shown after a reconnection (for example the
    /// open ones). Called only while online, never with a lock held.
    fn fetch_since(&self, cursor: Option<String>) -> Result<OrderBatch, InboxError>;
}

/// What the app may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxView {
    /// Offline: other channels' orders are not visible (R18).
    Hidden,
    /// Online again, the first refresh has not succeeded yet.
    Syncing,
    /// The orders, oldest first.
    Ready(Vec<RemoteOrder>),
}

/// What one [`Inbox::refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Offline: the source was not called.
    Offline,
    /// Another refresh is running: the source was not called.
    AlreadyRefreshing,
    /// Connectivity changed while fetching: the result was dropped.
    Discarded,
    /// The inbox was updated.
    Updated {
        /// Orders added.
        added: usize,
        /// Orders replaced by a newer version.
        updated: usize,
        /// Orders taken out.
        removed: usize,
        /// Pages were left after [`MAX_PAGES_PER_REFRESH`]: refresh again.
        more_pending: bool,
    },
}

/// Where the inbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Offline: empty and hidden.
    Offline,
    /// Online, not yet refreshed since the reconnection: empty, "syncing".
    AwaitingSync,
    /// Online and refreshed at least once: the orders are shown.
    Synced,
}

/// What drives the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Online,
    Offline,
    RefreshSucceeded,
}

impl Phase {
    /// The phase transition function.
    fn next(self, input: Input) -> Phase {
        match (self, input) {
            (_, Input::Offline) => Phase::Offline,
            (Phase::Offline, Input::Online) => Phase::AwaitingSync,
            // Already online: a repeated report changes nothing.
            (p @ (Phase::AwaitingSync | Phase::Synced), Input::Online) => p,
            (Phase::AwaitingSync | Phase::Synced, Input::RefreshSucceeded) => Phase::Synced,
            // A refresh never succeeds offline (it is discarded), so this
            // cannot happen; stay hidden if it ever did.
            (Phase::Offline, Input::RefreshSucceeded) => Phase::Offline,
        }
    }
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Bumped at every connectivity change, so that a refresh that started
    /// before one knows its result is stale.
    generation: u64,
    cursor: Option<String>,
    orders: BTreeMap<String, RemoteOrder>,
    refreshing: bool,
}

/// Other channels' online orders, kept for the app (R18). Thread-safe.
#[derive(Debug)]
pub struct Inbox {
    state: Mutex<State>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

/// Clears the `refreshing` flag however a refresh ends (even by a panic in
/// the source).
struct RefreshGuard<'a>(&'a Inbox);

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().refreshing = false;
    }
}

impl Inbox {
    /// An inbox that starts offline (hidden) until told otherwise.
    pub fn new() -> Self {
        Inbox {
            state: Mutex::new(State {
                phase: Phase::Offline,
                generation: 0,
                cursor: None,
                orders: BTreeMap::new(),
                refreshing: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports whether the order source can be reached. Going offline empties
    /// and hides the inbox; coming back shows it as syncing until the next
    /// successful [`Inbox::refresh`]. A repeated report changes nothing.
    pub fn on_connectivity(&self, online: bool) {
        let mut s = self.lock();
        let before = s.phase;
        s.phase = before.next(if online {
            Input::Online
        } else {
            Input::Offline
        });
        if (before == Phase::Offline) != (s.phase == Phase::Offline) {
            s.generation = s.generation.wrapping_add(1);
            s.cursor = None;
            s.orders.clear();
        }
    }

    /// Fetches what changed from `source`, page by page (at most
    /// [`MAX_PAGES_PER_REFRESH`]), and merges it. Does nothing offline or
    /// while another refresh runs. On an error, the pages already merged
    /// stay and the inbox keeps its phase.
    pub fn refresh(&self, source: &dyn OrderSource) -> Result<RefreshOutcome, InboxError> {
        let (generation, mut cursor) = {
            let mut s = self.lock();
            if s.phase == Phase::Offline {
                return Ok(RefreshOutcome::Offline);
            }
            if s.refreshing {
                return Ok(RefreshOutcome::AlreadyRefreshing);
            }
            s.refreshing = true;
            (s.generation, s.cursor.clone())
        };
        let _guard = RefreshGuard(self);
        let (mut added, mut updated, mut removed) = (0, 0, 0);
        for _ in 0..MAX_PAGES_PER_REFRESH {
            // No lock is held while the app's code runs.
            let batch = source.fetch_since(cursor.clone())?;
            if batch.orders.iter().any(|o| o.id.is_empty()) {
                return Err(InboxError::InvalidOrder);
            }
            let next = batch.next_cursor.clone().or_else(|| cursor.clone());
            if batch.has_more && next == cursor {
                return Err(InboxError::CursorStuck);
            }
            let mut s = self.lock();
            if s.generation != generation {
                return Ok(RefreshOutcome::Discarded);
            }
            for id in &batch.removed_ids {
                if s.orders.remove(id).is_some() {
                    removed += 1;
                }
            }
            for order in batch.orders {
                if s.orders.insert(order.id.clone(), order).is_some() {
                    updated += 1;
                } else {
                    added += 1;
                }
            }
            s.cursor.clone_from(&next);
            s.phase = s.phase.next(Input::RefreshSucceeded);
            cursor = next;
            if !batch.has_more {
                return Ok(RefreshOutcome::Updated {
                    added,
                    updated,
                    removed,
                    more_pending: false,
                });
            }
        }
        Ok(RefreshOutcome::Updated {
            added,
            updated,
            removed,
            more_pending: true,
        })
    }

    /// What the app may show now.
    pub fn view(&self) -> InboxView {
        let s = self.lock();
        match s.phase {
            Phase::Offline => InboxView::Hidden,
            Phase::AwaitingSync => InboxView::Syncing,
            Phase::Synced => {
                let mut orders: Vec<RemoteOrder> = s.orders.values().cloned().collect();
                orders.sort_by(|a, b| (a.placed_at, &a.id).cmp(&(b.placed_at, &b.id)));
                InboxView::Ready(orders)
            }
        }
    }

    /// Whether the inbox is shown (online).
    pub fn is_visible(&self) -> bool {
        self.lock().phase != Phase::Offline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use std::collections::VecDeque;
    use std::sync::Arc;

    fn order(id: &str, placed: i64) -> RemoteOrder {
        RemoteOrder {
            id: id.into(),
            channel: "web shop".into(),
            placed_at: Timestamp(placed),
            total: Money::new(1_000, Currency::parse("JPY").expect("JPY")),
        }
    }

    fn page(orders: Vec<RemoteOrder>, cursor: &str, has_more: bool) -> OrderBatch {
        OrderBatch {
            orders,
            removed_ids: vec![],
            next_cursor: Some(cursor.into()),
            has_more,
        }
    }

    type Hook = Box<dyn Fn() + Send + Sync>;

    /// Replays scripted answers and records the cursors it was asked for.
    /// `during` runs inside `fetch_since`, to act on the inbox mid-fetch.
    #[derive(Default)]
    struct FakeSource {
        answers: Mutex<VecDeque<Result<OrderBatch, InboxError>>>,
        asked: Mutex<Vec<Option<String>>>,
        during: Mutex<Option<Hook>>,
    }

    impl FakeSource {
        fn with(answers: Vec<Result<OrderBatch, InboxError>>) -> Self {
            FakeSource {
                answers: Mutex::new(answers.into()),
                ..FakeSource::default()
            }
        }

        fn asked(&self) -> Vec<Option<String>> {
            self.asked.lock().expect("lock").clone()
        }
    }

    impl OrderSource for FakeSource {
        fn fetch_since(&self, cursor: Option<String>) -> Result<OrderBatch, InboxError> {
            self.asked.lock().expect("lock").push(cursor);
            if let Some(hook) = self.during.lock().expect("lock").take() {
                hook();
            }
            self.answers
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or_else(|| Ok(OrderBatch::default()))
        }
    }

    fn ids(view: InboxView) -> Vec<String> {
        match view {
            InboxView::Ready(orders) => orders.into_iter().map(|o| o.id).collect(),
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn hidden_offline_and_the_source_is_not_called() {
        let inbox = Inbox::new();
        let source = FakeSource::with(vec![Ok(page(vec![order("a", 1)], "c1", false))]);
        assert_eq!(inbox.view(), InboxView::Hidden);
        assert_eq!(inbox.refresh(&source), Ok(RefreshOutcome::Offline));
        assert!(source.asked().is_empty());
        assert!(!inbox.is_visible());
    }

    #[test]
    fn fills_on_reconnection() {
        let inbox = Inbox::new();
        inbox.on_connectivity(true);
        assert_eq!(inbox.view(), InboxView::Syncing);
        assert!(inbox.is_visible());
        let source = FakeSource::with(vec![Ok(page(
            vec![order("b", 20), order("a", 10)],
            "c1",
            false,
        ))]);
        assert_eq!(
            inbox.refresh(&source),
            Ok(RefreshOutcome::Updated {
                added: 2,
                updated: 0,
                removed: 0,
                more_pending: false
            })
        );
        assert_eq!(ids(inbox.view()), ["a", "b"]);
        assert_eq!(source.asked(), [None]);
    }

    #[test]
    fn later_refreshes_continue_from_the_cursor_and_merge() {
        let inbox = Inbox::new();
        inbox.on_connectivity(true);
        let mut changed = order("a", 10);
        changed.total = Money::new(1_500, changed.total.currency());
        let source = FakeSource::with(vec![
            Ok(page(vec![order("a", 10), order("b", 20)], "c1", false)),
            Ok(OrderBatch {
                orders: vec![changed.clone(), order("c", 30)],
                removed_ids: vec!["b".into(), "unknown".into()],
                next_cursor: None,
                has_more: false,
            }),
            Ok(OrderBatch::default()),
        ]);
        inbox.refresh(&source).expect("first");
        assert_eq!(
            inbox.refresh(&source),
            Ok(RefreshOutcome::Updated {
                added: 1,
                updated: 1,
                removed: 1,
                more_pending: false
            })
        );
        inbox.refresh(&source).expect("third");
        // `next_cursor: None` kept "c1".
        assert_eq!(source.asked(), [None, Some("c1".into()), Some("c1".into())]);
        match inbox.view() {
            InboxView::Ready(orders) => assert_eq!(orders, [changed, order("c", 30)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn going_offline_empties_and_reconnection_starts_afresh() {
        let inbox = Inbox::new();
        inbox.on_connectivity(true);
        let source = FakeSource::with(vec![
            Ok(page(vec![order("a", 1)], "c1", false)),
            Ok(page(vec![order("z", 2)], "c9", false)),
        ]);
        inbox.refresh(&source).expect("ok");
        inbox.on_connectivity(true); // repeated: nothing changes
        assert_eq!(ids(inbox.view()), ["a"]);
        inbox.on_connectivity(false);
        assert_eq!(inbox.view(), InboxView::Hidden);
        inbox.on_connectivity(true);
        assert_eq!(inbox.view(), InboxView::Syncing, "nothing stale is shown");
        inbox.refresh(&source).expect("ok");
        assert_eq!(ids(inbox.view()), ["z"]);
        assert_eq!(source.asked(), [None, None]);
    }

    #[test]
    fn pages_are_followed_up_to_the_limit() {
        let inbox = Inbox::new();
        inbox.on_connectivity(true);
        let answers = (0..=MAX_PAGES_PER_REFRESH)
            .map(|i| {
                Ok(page(
                    vec![order(&format!("o{i:02}"), i as i64)],
                    &format!("c{i}"),
                    true,
                ))
            })
            .collect();
        let source = FakeSource::with(answers);
        assert_eq!(
            inbox.refresh(&source),
            Ok(RefreshOutcome::Updated {
                added: MAX_PAGES_PER_REFRESH,
                updated: 0,
                removed: 0,
                more_pending: true
            })
        );
        assert_eq!(source.asked().len(), MAX_PAGES_PER_REFRESH);
        assert_eq!(source.asked()[1], Some("c0".into()));
    }

    #[test]
    fn a_stuck_cursor_is_an_error() {
        let inbox = Inbox::new();
        inbox.on_connectivity(true);
        let stuck = OrderBatch {
            has_more: true,
            ..OrderBatch::default()
        };
        let source = FakeSource::with(vec![
            Ok(page(vec![], "c1", true)),
            Ok(page(vec![], "c1", true)),
            Ok(stuck),
        ]);
        assert_eq!(inbox.refresh(&source), Err(InboxError::CursorStuck));
        // The first page was merged and its cursor kept.
        assert_eq!(inbox.view(), InboxView::Ready(vec![]));
        assert_eq!(inbox.refresh(&source), Err(InboxError::CursorStuck));
        assert_eq!(source.asked(), [None, Some("c1".into()), Some("c1".into())]);
    }

    #[test]
    fn source_errors_leave_the_inbox_as_it_was() {
        let inbox = Inbox::new();
        inbox.on_connectivity(true);
        let source = FakeSource::with(vec![
            Err(InboxError::Unavailable {
                reason: "503".into(),
            }),
            Ok(page(vec![order("", 1)], "c1", false)),
        ]);
        assert!(matches!(
            inbox.refresh(&source),
            Err(InboxError::Unavailable { .. })
        ));
        assert_eq!(inbox.view(), InboxView::Syncing);
        assert_eq!(inbox.refresh(&source), Err(InboxError::InvalidOrder));
        assert_eq!(inbox.view(), InboxView::Syncing);
    }

    #[test]
    fn a_refresh_overtaken_by_going_offline_is_discarded() {
        let inbox = Arc::new(Inbox::new());
        inbox.on_connectivity(true);
        let source = FakeSource::with(vec![Ok(page(vec![order("a", 1)], "c1", false))]);
        let inner = Arc::clone(&inbox);
        // Calling the inbox from inside the source would deadlock if a lock were held.
        *source.during.lock().expect("lock") = Some(Box::new(move || {
            inner.on_connectivity(false);
            inner.on_connectivity(true);
        }));
        assert_eq!(inbox.refresh(&source), Ok(RefreshOutcome::Discarded));
        assert_eq!(inbox.view(), InboxView::Syncing);
        // The next refresh is not blocked and starts afresh.
        assert!(matches!(
            inbox.refresh(&source),
            Ok(RefreshOutcome::Updated { .. })
        ));
        assert_eq!(source.asked(), [None, None]);
    }

    #[test]
    fn only_one_refresh_at_a_time() {
        let inbox = Arc::new(Inbox::new());
        inbox.on_connectivity(true);
        let source = Arc::new(FakeSource::with(vec![Ok(page(vec![], "c1", false))]));
        let (inner, inner_source) = (Arc::clone(&inbox), Arc::clone(&source));
        let nested = Arc::new(Mutex::new(None));
        let nested_out = Arc::clone(&nested);
        *source.during.lock().expect("lock") = Some(Box::new(move || {
            *nested_out.lock().expect("lock") = Some(inner.refresh(inner_source.as_ref()));
        }));
        assert!(matches!(
            inbox.refresh(source.as_ref()),
            Ok(RefreshOutcome::Updated { .. })
        ));
        assert_eq!(
            nested.lock().expect("lock").take(),
            Some(Ok(RefreshOutcome::AlreadyRefreshing))
        );
    }

    #[test]
    fn a_panicking_source_does_not_block_later_refreshes() {
        struct Panics;
        impl OrderSource for Panics {
            fn fetch_since(&self, _: Option<String>) -> Result<OrderBatch, InboxError> {
                panic!("app bug");
            }
        }
        let inbox = Inbox::new();
        inbox.on_connectivity(true);
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inbox.refresh(&Panics)));
        assert!(caught.is_err());
        let source = FakeSource::with(vec![Ok(page(vec![order("a", 1)], "c1", false))]);
        assert!(matches!(
            inbox.refresh(&source),
            Ok(RefreshOutcome::Updated { added: 1, .. })
        ));
    }

    #[test]
    fn the_phase_machine() {
        use Input as I;
        use Phase as P;
        assert_eq!(P::Offline.next(I::Online), P::AwaitingSync);
        assert_eq!(P::AwaitingSync.next(I::RefreshSucceeded), P::Synced);
        assert_eq!(P::Synced.next(I::Online), P::Synced);
        assert_eq!(P::AwaitingSync.next(I::Online), P::AwaitingSync);
        assert_eq!(P::Synced.next(I::Offline), P::Offline);
        assert_eq!(P::AwaitingSync.next(I::Offline), P::Offline);
        assert_eq!(P::Offline.next(I::Offline), P::Offline);
        assert_eq!(P::Offline.next(I::RefreshSucceeded), P::Offline);
    }
}
