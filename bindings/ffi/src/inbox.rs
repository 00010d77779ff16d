//! Other channels' online orders for Swift and Kotlin (SPEC R18): the app's
//! `OrderSource` (a foreign trait) and what the engine's inbox shows. The
//! inbox itself is `pos_core::inbox`; the engine's methods that use it are
//! `PosEngine.setOrderSource`, `refreshInbox` and `inbox`.

use std::fmt;
use std::sync::Arc;

use pos_core::clock::Timestamp;
use pos_core::inbox as ib;
use pos_core::money as m;

use crate::money::Money;

/// An order placed on another channel (web shop, delivery platform), as the
/// app's order source describes it. Keep customer details out of it: the
/// inbox shows orders, it does not hold personal data.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RemoteOrder {
    /// The source's id for the order: unique within the source, not empty.
    pub id: String,
    /// The channel it came from, e.g. "web shop".
    pub channel: String,
    /// When it was placed, Unix milliseconds.
    pub placed_at_ms: i64,
    /// Its total.
    pub total: Money,
}

/// One page of changes from the order source.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OrderBatch {
    /// Orders new or changed since the cursor; one already in the inbox is
    /// replaced by the one with the same id.
    pub orders: Vec<RemoteOrder>,
    /// Ids of orders to take out of the inbox (fulfilled or cancelled).
    pub removed_ids: Vec<String>,
    /// The cursor for the next fetch; null keeps the one passed in.
    pub next_cursor: Option<String>,
    /// More changes wait after this page (`next_cursor` must then move on).
    pub has_more: bool,
}

/// Why the order source could not give its orders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum InboxError {
    /// The source cannot be reached now; the app may refresh later.
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
}

impl From<uniffi::UnexpectedUniFFICallbackError> for InboxError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        InboxError::Source { reason: e.reason }
    }
}

/// Implemented in Swift or Kotlin: fetches other channels' online orders.
/// Called on an engine worker thread, only while online, never with an
/// engine lock held; it may block (do the request synchronously).
#[uniffi::export(foreign)]
pub trait OrderSource: Send + Sync {
    /// The orders new or changed after `cursor`. Null means from scratch:
    /// the orders to show after a reconnection (for example the open ones).
    fn fetch_since(&self, cursor: Option<String>) -> Result<OrderBatch, InboxError>;
}

/// What the app may show of other channels' orders.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum InboxView {
    /// Offline: other channels' orders are not shown (R18).
    Hidden,
    /// Online again; the first refresh since has not succeeded yet.
    Syncing,
    /// The orders, oldest first.
    Ready {
        /// The orders, by time placed then id.
        orders: Vec<RemoteOrder>,
    },
}

/// What one `refreshInbox` did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
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
        added: u32,
        /// Orders replaced by a newer version.
        updated: u32,
        /// Orders taken out.
        removed: u32,
        /// Pages were left after the most one refresh fetches: refresh again.
        more_pending: bool,
    },
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<ib::RemoteOrder> for RemoteOrder {
    fn from(o: ib::RemoteOrder) -> Self {
        RemoteOrder {
            id: o.id,
            channel: o.channel,
            placed_at_ms: o.placed_at.millis(),
            total: o.total.into(),
        }
    }
}

impl From<ib::InboxView> for InboxView {
    fn from(v: ib::InboxView) -> Self {
        match v {
            ib::InboxView::Hidden => InboxView::Hidden,
            ib::InboxView::Syncing => InboxView::Syncing,
            ib::InboxView::Ready(orders) => InboxView::Ready {
                orders: orders.into_iter().map(Into::into).collect(),
            },
        }
    }
}

impl From<ib::RefreshOutcome> for RefreshOutcome {
    fn from(o: ib::RefreshOutcome) -> Self {
        match o {
            ib::RefreshOutcome::Offline => RefreshOutcome::Offline,
            ib::RefreshOutcome::AlreadyRefreshing => RefreshOutcome::AlreadyRefreshing,
            ib::RefreshOutcome::Discarded => RefreshOutcome::Discarded,
            ib::RefreshOutcome::Updated {
                added,
                updated,
                removed,
                more_pending,
            } => RefreshOutcome::Updated {
                added: count(added),
                updated: count(updated),
                removed: count(removed),
                more_pending,
            },
        }
    }
}

/// The app's source as the engine's [`ib::OrderSource`]. An order in an
/// unknown currency fails the page (`InboxError::Source`), so nothing of it
/// is merged.
pub(crate) struct SourceAdapter(pub Arc<dyn OrderSource>);

impl fmt::Debug for SourceAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForeignOrderSource")
    }
}

impl ib::OrderSource for SourceAdapter {
    fn fetch_since(&self, cursor: Option<String>) -> Result<ib::OrderBatch, ib::InboxError> {
        let batch = self.0.fetch_since(cursor).map_err(|e| match e {
            InboxError::Unavailable { reason } => ib::InboxError::Unavailable { reason },
            InboxError::Source { reason } => ib::InboxError::Source { reason },
        })?;
        let orders = batch
            .orders
            .into_iter()
            .map(|o| {
                let currency =
                    m::Currency::parse(&o.total.currency).map_err(|e| ib::InboxError::Source {
                        reason: format!("order {:?}: {e}", o.id),
                    })?;
                Ok(ib::RemoteOrder {
                    id: o.id,
                    channel: o.channel,
                    placed_at: Timestamp(o.placed_at_ms),
                    total: m::Money::new(o.total.minor_units, currency),
                })
            })
            .collect::<Result<Vec<_>, ib::InboxError>>()?;
        Ok(ib::OrderBatch {
            orders,
            removed_ids: batch.removed_ids,
            next_cursor: batch.next_cursor,
            has_more: batch.has_more,
        })
    }
}
