//! The one engine rig: a [`PosEngine`] on a [`VirtualClock`] and a store,
//! with a policy, its readers, a cashier signed in and the network as the
//! test wants it.
//!
//! [`Rig::offline`] is the usual one: a memory store at [`T0`], device
//! `till-1` in US dollars, the Shopify POS preset enabled and trusting the
//! test reader, that reader paired, `cashier-1` (who may take offline
//! payments) signed in, the network down. [`Rig::builder`] changes any of
//! it; [`RigBuilder::set_up`] does the same set-up on an engine opened
//! elsewhere.

use std::sync::{mpsc, Arc, Mutex};

use pos_core::audit::AuditKind;
use pos_core::checkout::PaymentView;
use pos_core::clock::{Clock, Timestamp, VirtualClock};
use pos_core::connectivity::{ConnectivityState, ProbeOutcome};
use pos_core::engine::StaffSession;
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::Gateway;
use pos_core::ledger::Write;
use pos_core::lifecycle::{OrderId, PaymentId, PaymentState, StaffId};
use pos_core::money::{Currency, Money};
use pos_core::policy::Policy;
use pos_core::store::{MemoryStore, Store};
use pos_core::{EngineConfig, EventListener, PosEngine, PosError, PosEvent, Subscription};

use crate::reader::trusting_the_test_reader;
use crate::sale::{Reader, Sale};

/// Where the rig's clock starts.
pub const T0: Timestamp = Timestamp(1_800_000_000_000);

/// How the engine came to know a reader.
#[derive(Clone)]
enum Known {
    /// Paired (or, for a vendor's, remembered) online through the engine.
    Paired(Reader),
    /// Already in the store when the engine opens (paired by an earlier run).
    Stored(Reader),
}

/// The staff member `id`, permitted to take offline payments or not.
pub fn staff(id: &str, may_take_offline_payments: bool) -> StaffSession {
    StaffSession {
        staff_id: StaffId::parse(id).unwrap(),
        may_take_offline_payments,
    }
}

/// Forwarding only when the test says so, with seeded jitter.
pub fn manual_forwarding(jitter_seed: u64) -> ForwardingConfig {
    ForwardingConfig {
        automatic: false,
        jitter_seed: Some(jitter_seed),
        ..ForwardingConfig::default()
    }
}

/// Passes the engine's events into a channel.
pub struct Events(Mutex<mpsc::Sender<PosEvent>>);

impl EventListener for Events {
    fn on_event(&self, event: PosEvent) {
        let _ = self.0.lock().unwrap().send(event);
    }
}

impl Events {
    /// A listener and the channel it fills.
    pub fn channel() -> (Arc<Events>, mpsc::Receiver<PosEvent>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Events(Mutex::new(tx))), rx)
    }
}

/// The events of `engine` from now on, while the subscription lasts.
pub fn listen(engine: &PosEngine) -> (Subscription, mpsc::Receiver<PosEvent>) {
    let (listener, rx) = Events::channel();
    (engine.subscribe(listener).unwrap(), rx)
}

/// The clock corrections `engine` audited: (error, step) in ms.
pub fn clock_corrections(engine: &PosEngine) -> Vec<(i64, i64)> {
    engine
        .audit_entries(0)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            AuditKind::ClockCorrected { error_ms, step_ms } => Some((error_ms, step_ms)),
            _ => None,
        })
        .collect()
}

/// How to build a [`Rig`] on a store of type `S`.
pub struct RigBuilder<S: ?Sized> {
    clock: VirtualClock,
    store: Arc<S>,
    dyn_store: Arc<dyn Store>,
    config: EngineConfig,
    policy: Option<Policy>,
    readers: Vec<Known>,
    default_readers: bool,
    staff: Option<StaffSession>,
    gateway: Option<Arc<dyn Gateway>>,
    listeners: Vec<Arc<dyn EventListener>>,
    offline: bool,
}

/// An engine on a virtual clock and a store, set up for the test.
pub struct Rig<S: ?Sized = MemoryStore> {
    pub clock: VirtualClock,
    pub store: Arc<S>,
    pub engine: PosEngine,
    pub config: EngineConfig,
    /// Who reads the cards of [`Rig::sale`]: the first reader set up (the
    /// test reader when none was).
    pub reader: Reader,
    dyn_store: Arc<dyn Store>,
    staff: Option<StaffSession>,
    _subscriptions: Vec<Subscription>,
}

impl Rig {
    /// The usual rig (see the module's documentation).
    pub async fn offline() -> Rig {
        Rig::builder().open().await
    }

    /// The usual rig, to be changed before it opens.
    pub fn builder() -> RigBuilder<MemoryStore> {
        let store = Arc::new(MemoryStore::new());
        RigBuilder {
            clock: VirtualClock::new(T0),
            dyn_store: store.clone(),
            store,
            config: EngineConfig::new(std::env::temp_dir().join("pos-test-rig"), "till-1", "USD")
                .unwrap(),
            policy: Some(trusting_the_test_reader(
                Policy::shopify_pos(Currency::parse("USD").unwrap()).with_enabled(true),
            )),
            readers: vec![Known::Paired(Reader::test())],
            default_readers: true,
            staff: Some(staff("cashier-1", true)),
            gateway: None,
            listeners: Vec::new(),
            offline: true,
        }
    }
}

impl<S: ?Sized> RigBuilder<S> {
    /// The engine opens on `store` (a restart when it holds records).
    pub fn store<T: Store + 'static>(self, store: Arc<T>) -> RigBuilder<T> {
        let dyn_store: Arc<dyn Store> = store.clone();
        self.on_store(store, dyn_store)
    }

    /// The engine opens on `store`, known only as a store.
    pub fn dyn_store(self, store: Arc<dyn Store>) -> RigBuilder<dyn Store> {
        self.on_store(store.clone(), store)
    }

    fn on_store<T: ?Sized>(self, store: Arc<T>, dyn_store: Arc<dyn Store>) -> RigBuilder<T> {
        RigBuilder {
            clock: self.clock,
            store,
            dyn_store,
            config: self.config,
            policy: self.policy,
            readers: self.readers,
            default_readers: self.default_readers,
            staff: self.staff,
            gateway: self.gateway,
            listeners: self.listeners,
            offline: self.offline,
        }
    }

    /// The clock (by default a new one at [`T0`]).
    pub fn clock(mut self, clock: VirtualClock) -> Self {
        self.clock = clock;
        self
    }

    /// The engine's configuration (by default device `till-1` in USD).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes the engine's configuration.
    pub fn configure(mut self, change: impl FnOnce(&mut EngineConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// The policy set once the engine is open.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// No policy is set (the engine's own).
    pub fn no_policy(mut self) -> Self {
        self.policy = None;
        self
    }

    fn known(mut self, reader: Known) -> Self {
        if std::mem::take(&mut self.default_readers) {
            self.readers.clear();
        }
        self.readers.push(reader);
        self
    }

    /// `reader` paired online (a vendor's remembered) instead of the test
    /// reader; again for each more reader.
    pub fn reader(self, reader: impl Into<Reader>) -> Self {
        self.known(Known::Paired(reader.into()))
    }

    /// `reader` in the store before the engine opens (paired by an earlier
    /// run, so nothing goes online) instead of the test reader.
    pub fn stored_reader(self, reader: impl Into<Reader>) -> Self {
        self.known(Known::Stored(reader.into()))
    }

    /// No reader at all.
    pub fn no_reader(mut self) -> Self {
        self.readers.clear();
        self.default_readers = false;
        self
    }

    /// Who signs in (by default `cashier-1`, who may take offline
    /// payments).
    pub fn staff(mut self, staff: StaffSession) -> Self {
        self.staff = Some(staff);
        self
    }

    /// The processor the engine forwards to.
    pub fn gateway(mut self, gateway: Arc<dyn Gateway>) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Hears the engine's events from before it goes offline.
    pub fn listener(mut self, listener: Arc<dyn EventListener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Whether the network is reported down once the rest is set up (by
    /// default it is); if not, the connectivity is as the set-up left it
    /// (unknown, or online when a reader was paired).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Who reads the cards of [`Rig::sale`].
    fn sale_reader(&self) -> Reader {
        match self.readers.first() {
            Some(Known::Paired(r) | Known::Stored(r)) => r.clone(),
            None => Reader::test(),
        }
    }

    /// The set-up on `engine`, opened elsewhere (readers meant for the
    /// store are paired instead): the policy, the readers, the staff
    /// member, the gateway, the listeners, the network. What the listeners
    /// hear lasts as long as the subscriptions returned.
    pub async fn set_up(&self, engine: &PosEngine) -> Vec<Subscription> {
        self.finish(engine, true).await
    }

    async fn finish(&self, engine: &PosEngine, pair_stored: bool) -> Vec<Subscription> {
        if let Some(policy) = &self.policy {
            engine.set_policy(policy.clone()).await.unwrap();
        }
        for known in &self.readers {
            match known {
                Known::Paired(reader) => pair(engine, reader).await,
                Known::Stored(reader) if pair_stored => pair(engine, reader).await,
                Known::Stored(_) => {}
            }
        }
        if let Some(staff) = &self.staff {
            engine.sign_in(staff.clone()).unwrap();
        }
        if let Some(gateway) = &self.gateway {
            engine.set_gateway(gateway.clone()).unwrap();
        }
        let subscriptions = self
            .listeners
            .iter()
            .map(|l| engine.subscribe(l.clone()).unwrap())
            .collect();
        if self.offline {
            engine.report_network(false).await.unwrap();
        }
        subscriptions
    }

    /// Opens the engine and sets it up.
    pub async fn open(self) -> Rig<S> {
        let at = self.clock.wall_now();
        for known in &self.readers {
            if let Known::Stored(reader) = known {
                let remembered = reader.remembered(at);
                self.dyn_store
                    .apply(&[Write::Reader {
                        serial: remembered.serial.clone(),
                        reader: Some(remembered),
                    }])
                    .await
                    .unwrap();
            }
        }
        let engine = PosEngine::open_with(
            self.config.clone(),
            Arc::new(self.clock.clone()),
            self.dyn_store.clone(),
        )
        .await
        .unwrap();
        let subscriptions = self.finish(&engine, false).await;
        Rig {
            reader: self.sale_reader(),
            clock: self.clock,
            store: self.store,
            engine,
            config: self.config,
            dyn_store: self.dyn_store,
            staff: self.staff,
            _subscriptions: subscriptions,
        }
    }
}

/// Pairs `reader` online (a vendor's is remembered); the engine stays
/// online.
async fn pair(engine: &PosEngine, reader: &Reader) {
    crate::workload::online(engine).await;
    match reader {
        Reader::Profile(r) => {
            engine
                .remember_paired_reader(&r.identity.certificate().encode(), "1.0")
                .await
                .unwrap();
        }
        Reader::Vendor { serial, model } => {
            engine.remember_reader(serial, model, "1.0").await.unwrap();
        }
    }
}

impl<S: ?Sized> Rig<S> {
    /// `cents` in the engine's currency.
    pub fn money(&self, cents: i64) -> Money {
        Money::new(cents, self.config.currency)
    }

    /// A sale of `cents` in the engine's currency, read by the rig's reader.
    pub fn sale(&self, cents: i64) -> Sale {
        Sale::of(self.money(cents)).reader(self.reader.clone())
    }

    /// A new order of `cents`.
    pub async fn order(&self, cents: i64) -> OrderId {
        self.engine
            .create_order(pos_core::checkout::NewOrder {
                order_id: None,
                total: self.money(cents),
                contact: None,
            })
            .await
            .unwrap()
            .id
    }

    /// A card payment of `cents` on `order`: begun, read, confirmed.
    pub async fn pay(&self, order: &OrderId, cents: i64) -> Result<PaymentView, PosError> {
        self.sale(cents).on(order).try_sell(&self.engine).await
    }

    /// Reports the network down: the engine's new state.
    pub async fn network_down(&self) -> ConnectivityState {
        self.engine.report_network(false).await.unwrap()
    }

    /// Brings the engine online: network back, then healthy probes until
    /// it is.
    pub async fn online(&self) {
        self.engine.report_network(true).await.unwrap();
        for _ in 0..10 {
            if self.engine.status().unwrap().connectivity.is_online() {
                return;
            }
            self.engine
                .report_probe(ProbeOutcome::Healthy)
                .await
                .unwrap();
        }
        assert!(self.engine.status().unwrap().connectivity.is_online());
    }

    /// What the engine holds of payment `id`.
    pub fn state(&self, id: &PaymentId) -> PaymentState {
        self.engine
            .list_payments()
            .unwrap()
            .into_iter()
            .find(|p| &p.id == id)
            .unwrap_or_else(|| panic!("no payment {id}"))
            .state
    }

    /// Everything the store holds.
    pub async fn records(&self) -> Vec<Write> {
        self.dyn_store.load().await.unwrap()
    }

    /// Closes the engine and opens a new one on the same store, clock and
    /// configuration (an app restart, or a reboot when the clock was
    /// rebooted first); the same staff member signs in again.
    pub async fn reopen(&mut self) {
        self.engine.close();
        self.engine = PosEngine::open_with(
            self.config.clone(),
            Arc::new(self.clock.clone()),
            self.dyn_store.clone(),
        )
        .await
        .unwrap();
        if let Some(staff) = &self.staff {
            self.engine.sign_in(staff.clone()).unwrap();
        }
    }
}

/// The usual set-up (see [`Rig`]) on `engine`, opened elsewhere: Shopify
/// POS trusting the test reader, that reader paired, a cashier who may take
/// offline payments signed in, the network down.
pub async fn go_offline(engine: &PosEngine) {
    Rig::builder().set_up(engine).await;
}

/// A cashier who may take offline payments signed in, the network down.
pub async fn sign_in_and_lose_the_network(engine: &PosEngine) {
    Rig::builder().no_policy().no_reader().set_up(engine).await;
}
