//! Events from the engine to the app, and their delivery.
//!
//! Owns [`PosEvent`], the [`EventListener`] trait the app implements, and the
//! [`EventBus`]: a dedicated thread that calls listeners, so that a listener
//! always runs off the caller's thread and never while the engine holds a
//! lock (a foreign callback that calls back into the engine cannot deadlock).
//! A [`Subscription`] stops its listener when dropped or closed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle, ThreadId};

use crate::clock::Timestamp;
use crate::connectivity::ConnectivityState;
use crate::lifecycle::{DeclineNotice, OrderId, OrderStatus, PaymentId, PaymentStatus};
use crate::money::Money;
use crate::rules::LimitNear;
use crate::session::SessionWarning;

/// Something the app should know about. New variants are added as the engine grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PosEvent {
    /// The current state, sent once to every new subscriber.
    Snapshot {
        connectivity: ConnectivityState,
        pending_offline_payments: u64,
    },
    /// Connectivity changed; `banner` is what the app's banner should say (None: hide it).
    ConnectivityChanged {
        from: ConnectivityState,
        to: ConnectivityState,
        at: Timestamp,
        banner: Option<String>,
    },
    /// A stored payment changed state; `order_status` is its order's new badge (R15).
    PaymentStateChanged {
        payment_id: PaymentId,
        order_id: OrderId,
        status: PaymentStatus,
        order_status: Option<OrderStatus>,
    },
    /// The processor declined a forwarded payment: collect `amount_due` from the contact (R17, B9).
    PaymentDeclined(DeclineNotice),
    /// A payment reached its forwarding deadline unforwarded: its amount is lost (R8).
    PaymentExpired {
        payment_id: PaymentId,
        order_id: OrderId,
        amount: Money,
    },
    /// A payment reached its forwarding deadline while an attempt may have
    /// reached the processor: its outcome is unknown ("check with the
    /// processor"), and it is not counted as lost. The engine asks the
    /// processor about it whenever it can reach it; a `PaymentStateChanged`
    /// (approved, declined, or expired when the processor has no record of
    /// it) follows.
    PaymentOutcomeUnknown {
        payment_id: PaymentId,
        order_id: OrderId,
        amount: Money,
    },
    /// The offline session's deadline or window is approaching or passed (B4).
    SessionWarning(SessionWarning),
    /// The device total is near its limit (B3).
    LimitNear(LimitNear),
    /// Progress of a forwarding round (B5), for a progress bar.
    ForwardingProgress(crate::forwarder::ForwardingProgress),
    /// Saving the store's rollback anchor with the key provider failed: the
    /// anchor trails the journal by `behind` records, and a rollback of the
    /// store to a copy taken since the last saved anchor would not be
    /// detected. Sent once when saves start failing (not again while they
    /// keep failing); `EngineStatus::anchor` says whether they still fail.
    /// `reason` is the provider's error message and names no key material.
    AnchorSaveFailed { reason: String, behind: u64 },
    /// Forwarding is blocked: payments wait until the cause is fixed (new
    /// credentials, the processor's support, the key store unlocked) and
    /// "forward now" is asked. Sent when forwarding becomes blocked or the
    /// reason changes; [`PosEvent::ForwardingUnblocked`] follows when it
    /// resumes. `EngineStatus::forwarding_blocked` holds the current reason.
    ForwardingBlocked {
        reason: crate::forwarder::ForwardingBlockedReason,
    },
    /// The background check of the whole store, run when the engine is idle
    /// after each snapshot, found a problem: a record of its history was
    /// edited, deleted or inserted, or the history does not replay to the
    /// state the engine holds. Nothing is changed or repaired; keep the
    /// store for inspection (`docs/store-recovery.md`). `reason` names no
    /// card data or contact.
    StoreVerificationFailed { reason: String },
    /// Forwarding resumed after [`PosEvent::ForwardingBlocked`]: the
    /// processor answered a payment with a decision, or the store took a
    /// write again.
    ForwardingUnblocked,
    /// The engine was closed; no further events follow.
    Closed,
}

/// Implemented by the app. Called on the engine's event thread, one event at a
/// time, in order. It must not block for long.
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: PosEvent);
}

type Listeners = Mutex<BTreeMap<u64, Arc<dyn EventListener>>>;

/// Builds a new subscriber's first event on the delivery thread, at its
/// place in the queue (`None`: the source is gone, do not subscribe).
pub type FirstEvent = Box<dyn FnOnce() -> Option<PosEvent> + Send>;

enum Message {
    /// Deliver to every listener.
    Broadcast(PosEvent),
    /// Register a listener and give it its first event. Done on the delivery
    /// thread, in queue order: an event queued before it never reaches the
    /// listener, and its first event (built then) already reflects that event;
    /// every event queued after it follows its first event.
    Subscribe(u64, Arc<dyn EventListener>, FirstEvent),
    Unsubscribe(u64),
    /// Answered once every message queued before it has been delivered.
    Flush(tokio::sync::oneshot::Sender<()>),
    Stop,
}

/// Delivers events on a dedicated thread.
pub struct EventBus {
    tx: Mutex<Option<Sender<Message>>>,
    listeners: Arc<Listeners>,
    next_id: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.listeners.lock().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("EventBus").field("listeners", &n).finish()
    }
}

impl EventBus {
    /// Starts the delivery thread.
    pub fn start() -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel();
        let listeners: Arc<Listeners> = Arc::default();
        let for_thread = Arc::clone(&listeners);
        let handle = thread::Builder::new()
            .name("pos-core-events".into())
            .spawn(move || deliver(rx, &for_thread))?;
        let thread_id = handle.thread().id();
        Ok(Arc::new(EventBus {
            tx: Mutex::new(Some(tx)),
            listeners,
            next_id: AtomicU64::new(1),
            thread: Mutex::new(Some(handle)),
            thread_id,
        }))
    }

    fn send(&self, msg: Message) {
        if let Some(tx) = lock(&self.tx).as_ref() {
            // A send fails only when the thread is gone (after stop): nothing to do.
            let _ = tx.send(msg);
        }
    }

    /// Queues an event for every listener.
    pub fn emit(&self, event: PosEvent) {
        self.send(Message::Broadcast(event));
    }

    /// Adds a listener; `first` is delivered to it alone, before any later event.
    pub fn subscribe(
        self: &Arc<Self>,
        listener: Arc<dyn EventListener>,
        first: FirstEvent,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // After stop nothing is delivered and the listener is not kept.
        self.send(Message::Subscribe(id, listener, first));
        Subscription {
            bus: Arc::downgrade(self),
            id,
        }
    }

    /// Waits until every event queued before the call has been delivered to
    /// every listener (at once after [`stop`](Self::stop)). For tests and
    /// scenario runners that check events step by step.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Message::Flush(tx));
        // An error means the thread is gone, so nothing is left to deliver.
        let _ = rx.await;
    }

    fn unsubscribe(&self, id: u64) {
        // Removed now (nothing more is delivered), and again in queue order
        // in case its registration is still queued.
        lock(&self.listeners).remove(&id);
        self.send(Message::Unsubscribe(id));
    }

    /// Delivers what is queued, then a final [`PosEvent::Closed`], and stops
    /// the thread. Idempotent. Safe to call from inside a listener.
    pub fn stop(&self) {
        let Some(tx) = lock(&self.tx).take() else {
            return;
        };
        let _ = tx.send(Message::Broadcast(PosEvent::Closed));
        let _ = tx.send(Message::Stop);
        drop(tx);
        if thread::current().id() == self.thread_id {
            return; // called by a listener: the loop ends after this event.
        }
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for EventBus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn deliver(rx: Receiver<Message>, listeners: &Listeners) {
    for msg in rx {
        let (targets, event): (Vec<Arc<dyn EventListener>>, PosEvent) = match msg {
            Message::Stop => {
                // Release the listeners (and whatever the app captured in them).
                lock(listeners).clear();
                break;
            }
            Message::Broadcast(e) => (lock(listeners).values().cloned().collect(), e),
            Message::Unsubscribe(id) => {
                lock(listeners).remove(&id);
                continue;
            }
            Message::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Message::Subscribe(id, listener, first) => {
                // Built without any bus lock held: it may read engine state.
                let Some(e) = first() else { continue };
                lock(listeners).insert(id, Arc::clone(&listener));
                (vec![listener], e)
            }
        };
        // The lock is released: a listener may subscribe, unsubscribe or call the engine.
        for l in targets {
            let event = event.clone();
            // A panicking listener must not stop delivery to the others.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.on_event(event)));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps a listener subscribed. Dropping or closing it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    bus: Weak<EventBus>,
    id: u64,
}

impl Subscription {
    /// Stops delivery to this listener. Idempotent.
    pub fn cancel(&self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.unsubscribe(self.id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Duration;

    struct Collect(Mutex<Sender<(PosEvent, ThreadId)>>);
    impl EventListener for Collect {
        fn on_event(&self, event: PosEvent) {
            let _ = self.0.lock().unwrap().send((event, thread::current().id()));
        }
    }

    fn snapshot() -> PosEvent {
        PosEvent::Snapshot {
            connectivity: ConnectivityState::Unknown,
            pending_offline_payments: 0,
        }
    }

    fn first() -> FirstEvent {
        Box::new(|| Some(snapshot()))
    }

    // A generous bound only to avoid hanging forever on a bug; the tests do not measure time.
    const LIMIT: Duration = Duration::from_secs(30);

    #[test]
    fn snapshot_first_then_events_in_order_off_the_caller_thread() {
        let bus = EventBus::start().unwrap();
        let (tx, rx) = mpsc::channel();
        let _sub = bus.subscribe(Arc::new(Collect(Mutex::new(tx))), first());
        bus.emit(PosEvent::Closed);
        let (first, tid) = rx.recv_timeout(LIMIT).unwrap();
        assert_eq!(first, snapshot());
        assert_ne!(tid, thread::current().id());
        assert_eq!(rx.recv_timeout(LIMIT).unwrap().0, PosEvent::Closed);
    }

    #[tokio::test]
    async fn a_flush_returns_after_every_earlier_event_was_delivered() {
        let bus = EventBus::start().unwrap();
        let (tx, rx) = mpsc::channel();
        let _s = bus.subscribe(Arc::new(Collect(Mutex::new(tx))), first());
        for _ in 0..100 {
            bus.emit(PosEvent::Closed);
        }
        bus.flush().await;
        // The snapshot and all 100 events are already there: no waiting.
        assert_eq!(rx.try_iter().count(), 101);
        bus.stop();
        bus.flush().await;
    }

    #[test]
    fn dropped_subscription_receives_nothing_more() {
        let bus = EventBus::start().unwrap();
        let (tx, rx) = mpsc::channel();
        let sub = bus.subscribe(Arc::new(Collect(Mutex::new(tx))), first());
        assert_eq!(rx.recv_timeout(LIMIT).unwrap().0, snapshot());
        drop(sub);
        bus.emit(PosEvent::Closed);
        bus.stop();
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Disconnected)
        ));
    }

    #[test]
    fn stop_is_idempotent_and_sends_closed() {
        let bus = EventBus::start().unwrap();
        let (tx, rx) = mpsc::channel();
        let _sub = bus.subscribe(Arc::new(Collect(Mutex::new(tx))), first());
        bus.stop();
        bus.stop();
        let got: Vec<_> = rx.try_iter().map(|(e, _)| e).collect();
        assert_eq!(got, vec![snapshot(), PosEvent::Closed]);
    }

    struct Panics;
    impl EventListener for Panics {
        fn on_event(&self, _: PosEvent) {
            panic!("listener bug");
        }
    }

    #[test]
    fn a_panicking_listener_does_not_stop_the_others() {
        let bus = EventBus::start().unwrap();
        let _bad = bus.subscribe(Arc::new(Panics), first());
        let (tx, rx) = mpsc::channel();
        let _sub = bus.subscribe(Arc::new(Collect(Mutex::new(tx))), first());
        bus.emit(PosEvent::Closed);
        assert_eq!(rx.recv_timeout(LIMIT).unwrap().0, snapshot());
        assert_eq!(rx.recv_timeout(LIMIT).unwrap().0, PosEvent::Closed);
    }
}
