//! The `PosEngine` object, its configuration and status records, and the
//! `TestClock` apps use for deterministic tests (B11).

use std::sync::Arc;
use std::time::Duration;

use pos_core::clock::{Clock, SystemClock, Timestamp, VirtualClock};
use pos_core::connectivity as conn;
use pos_core::engine as core;
use pos_core::sqlite_store::SqliteStore;

use crate::checkout::{
    ActionOverride, CardPaymentRequest, GuardOutcome, GuardedAction, NewOrder, OrderView,
    PaymentDecision, PaymentView, ReceiptChannel, StaffSession, TickReport,
};
use crate::error::PosError;
use crate::events::{EventListener, ListenerAdapter, Subscription};
use crate::gateway::{ForwardReport, GatewayAdapter, PaymentGateway};
#[cfg(feature = "http-gateway")]
use crate::gateway::{TokenAdapter, TokenProvider};
use crate::inbox::{InboxView, OrderSource, RefreshOutcome, SourceAdapter};
use crate::keys::{KeyProvider, KeyProviderAdapter};
use crate::money::Money;
use crate::policy::OfflinePolicy;
use crate::runtime::{on_runtime, on_runtime_only, runtime};
use crate::types::{
    invalid, mirror_enum, order_id, payment_id, ts, CardRead, ConnectivityStatus, MerchantAccount,
    ReaderInfo,
};
#[cfg(feature = "http-gateway")]
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};

/// The store's file name inside `EngineConfig::data_dir`.
const STORE_FILE: &str = "pos-core.sqlite";

/// How the app sets up an engine.
#[derive(Debug, Clone, uniffi::Record)]
pub struct EngineConfig {
    /// Where the engine keeps its files (the app's private data folder).
    pub data_dir: String,
    /// This device's identifier at the processor: 1–64 of `[A-Za-z0-9._-]`.
    pub device_id: String,
    /// ISO 4217 code of the shop's main currency, e.g. "USD".
    pub currency: String,
    /// Forwarding requests in flight at once (1-256); default 32.
    #[uniffi(default = None)]
    pub max_in_flight: Option<u32>,
    /// Whether stored payments are forwarded by themselves when the service
    /// is back (default true). Tests on a `TestClock` turn it off and call
    /// `forwardNow()`.
    #[uniffi(default = None)]
    pub automatic_forwarding: Option<bool>,
    /// Records between two automatic snapshots of the store (default
    /// 2,048): opening after a crash replays at most this many.
    #[uniffi(default = None)]
    pub compact_every: Option<u64>,
    /// The merchant account and location the app runs as (SPEC B7). A
    /// store not bound to an account yet is bound to it at open; a store
    /// bound to another one does not open (`AccountMismatch`): switch with
    /// `switchAccount`, guarded while payments are pending. Null: the
    /// store's own account, whatever it is (or none).
    #[uniffi(default = None)]
    pub account: Option<MerchantAccount>,
    /// Settled orders held in memory with their payments (default 1,000):
    /// older ones leave memory at the next snapshot and stay in the store
    /// (`paymentHistory`), so memory and the open's time follow what is
    /// pending, not the history.
    #[uniffi(default = None)]
    pub settled_in_memory: Option<u32>,
    /// Audit entries held in memory (at least 1; default 2,000): older
    /// ones stay in the store (`exportAuditHistoryCsv`).
    #[uniffi(default = None)]
    pub audit_in_memory: Option<u32>,
}

mirror_enum!(
    /// The result of a probe of the processor's status endpoint (R2).
    ProbeOutcome = conn::ProbeOutcome {
        /// The service answered that it is healthy.
        Healthy,
        /// The service answered that it is down or degraded.
        Unhealthy,
        /// No answer: the probe failed at network level (DNS, connect, TLS,
        /// timeout).
        Unreachable,
    }
);

/// Totals of one currency (R19): count and amount per state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CurrencyTotals {
    /// The ISO 4217 code of these totals.
    pub currency: String,
    /// Unsettled offline payments (pending, forwarding, failed to forward).
    pub pending_count: u32,
    /// The money at risk.
    pub pending_amount: Money,
    /// Approved payments.
    pub approved_count: u32,
    /// Their amount.
    pub approved_amount: Money,
    /// Declined payments.
    pub declined_count: u32,
    /// Their amount, due from the customers (B9).
    pub declined_amount: Money,
    /// Expired payments (R8).
    pub expired_count: u32,
    /// Lost: expired before it could be forwarded (R8).
    pub expired_amount: Money,
    /// Deadline passed, outcome unknown until the processor says (also in
    /// `pending_count` / `pending_amount`): not lost.
    pub unknown_count: u32,
    /// Their amount.
    pub unknown_amount: Money,
}

impl From<core::CurrencyTotals> for CurrencyTotals {
    fn from(t: core::CurrencyTotals) -> Self {
        CurrencyTotals {
            currency: t.currency.code().to_owned(),
            pending_count: t.pending_count,
            pending_amount: t.pending_amount.into(),
            approved_count: t.approved_count,
            approved_amount: t.approved_amount.into(),
            declined_count: t.declined_count,
            declined_amount: t.declined_amount.into(),
            expired_count: t.expired_count,
            expired_amount: t.expired_amount.into(),
            unknown_count: t.unknown_count,
            unknown_amount: t.unknown_amount.into(),
        }
    }
}

/// A snapshot for the app's status screen.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EngineStatus {
    /// The library's version.
    pub version: String,
    /// This device's id at the processor.
    pub device_id: String,
    /// The ISO 4217 code of the shop's main currency.
    pub currency: String,
    /// Where the device stands with the payment service (R1).
    pub connectivity: ConnectivityStatus,
    /// Whether the policy allows offline payments (R4).
    pub offline_enabled: bool,
    /// Unsettled offline payments, all currencies.
    pub pending_offline_payments: u64,
    /// Totals for every currency with payments (R19).
    pub totals: Vec<CurrencyTotals>,
    /// When the current offline session began, if one is open.
    pub session_started_at_ms: Option<i64>,
    /// When offline acceptance closes in the current session (R7).
    pub acceptance_closes_at_ms: Option<i64>,
    /// The earliest forwarding deadline of an unsettled payment (R8).
    pub next_deadline_ms: Option<i64>,
    /// Milliseconds left before `nextDeadlineMs` (0 when past).
    pub time_left_ms: Option<i64>,
    /// When the engine next has something to do by itself (a retry, a
    /// deadline, a probe while offline, a session warning): schedule
    /// background work (WorkManager, BGTaskScheduler) for then and call
    /// `tick`. Null: nothing is scheduled.
    pub next_wake_up_ms: Option<i64>,
    /// The staff id of who is signed in.
    pub signed_in: Option<String>,
    /// The store's rollback anchor (always kept by a `KeyProvider`).
    pub anchor: Option<AnchorStatus>,
    /// Why forwarding is blocked, if it is (`PosEvent.ForwardingBlocked`).
    pub forwarding_blocked: Option<crate::events::ForwardingBlockedReason>,
    /// The merchant account and location new payments are taken for.
    pub account: Option<MerchantAccount>,
    /// The schema version of the store's files. A library older than it
    /// refuses the store (`StoreIntegrity`): block a downgrade of the app
    /// while payments are pending.
    pub store_schema: Option<u32>,
}

/// Mirrors `pos_core::engine::AnchorStatus`: whether the store's rollback
/// anchor is kept up to date by the `KeyProvider`. While `failing`, a
/// rollback of the store to a copy taken since `last_saved_at_ms` is not
/// detected.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AnchorStatus {
    /// The latest save failed (the next commit or open tries again).
    pub failing: bool,
    /// Failed saves in a row.
    pub failures: u64,
    /// Records the anchor trails the store by after the latest failure.
    pub behind: u64,
    /// When the anchor was last saved, or found current at open.
    pub last_saved_at_ms: Option<i64>,
    /// The latest failure's reason (the provider's message).
    pub last_error: Option<String>,
}

impl From<core::AnchorStatus> for AnchorStatus {
    fn from(a: core::AnchorStatus) -> Self {
        AnchorStatus {
            failing: a.failing,
            failures: a.failures,
            behind: a.behind,
            last_saved_at_ms: a.last_saved_at.map(ts),
            last_error: a.last_error,
        }
    }
}

impl From<core::EngineStatus> for EngineStatus {
    fn from(s: core::EngineStatus) -> Self {
        EngineStatus {
            version: s.version,
            device_id: s.device_id,
            currency: s.currency.code().to_owned(),
            connectivity: s.connectivity.into(),
            offline_enabled: s.offline_enabled,
            pending_offline_payments: s.pending_offline_payments,
            totals: s.totals.into_iter().map(Into::into).collect(),
            session_started_at_ms: s.session_started_at.map(ts),
            acceptance_closes_at_ms: s.acceptance_closes_at.map(ts),
            next_deadline_ms: s.next_deadline.map(ts),
            next_wake_up_ms: s.next_wake_up.map(ts),
            time_left_ms: s.time_left_ms,
            signed_in: s.signed_in.map(|id| id.as_str().to_owned()),
            anchor: s.anchor.map(Into::into),
            forwarding_blocked: s.forwarding_blocked.map(Into::into),
            account: s.account.map(Into::into),
            store_schema: s.store_schema,
        }
    }
}

/// A clock that moves only when told, for deterministic tests from Swift
/// and Kotlin (B11): fast-forward to deadlines, move the wall clock, reboot.
#[derive(Debug, uniffi::Object)]
pub struct TestClock {
    inner: VirtualClock,
}

#[pos_ffi_macros::export]
impl TestClock {
    /// Starts at `wall_ms` (ms since the Unix epoch), just after a boot.
    #[uniffi::constructor]
    pub fn new(wall_ms: i64) -> Arc<Self> {
        Arc::new(TestClock {
            inner: VirtualClock::new(Timestamp(wall_ms)),
        })
    }

    /// Real time passes.
    pub fn advance_ms(&self, ms: u64) {
        self.inner.advance(Duration::from_millis(ms));
    }

    /// Someone sets the wall clock (either direction); it changes no deadline.
    pub fn set_wall_ms(&self, wall_ms: i64) {
        self.inner.set_wall(Timestamp(wall_ms));
    }

    /// The wall-clock time now, in ms since the Unix epoch.
    pub fn wall_ms(&self) -> i64 {
        self.inner.wall_now().millis()
    }
}

/// The engine. Create one per data folder; `close()` it when done.
#[derive(Debug, uniffi::Object)]
pub struct PosEngine {
    pub(crate) inner: core::PosEngine,
}

impl PosEngine {
    /// Opens on the caller's thread (blocking it until the store is open).
    fn open_blocking(
        config: EngineConfig,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, PosError> {
        let opening = Self::opening(Self::core_config(config)?, keys, clock)?;
        let inner = runtime()?.block_on(opening)?;
        Ok(Arc::new(PosEngine { inner }))
    }

    /// The app's configuration, checked.
    fn core_config(config: EngineConfig) -> Result<core::EngineConfig, PosError> {
        let mut core_config =
            core::EngineConfig::new(config.data_dir, &config.device_id, &config.currency)?;
        if let Some(n) = config.max_in_flight {
            core_config.forwarding.max_in_flight = n as usize;
        }
        if let Some(a) = config.automatic_forwarding {
            core_config.forwarding.automatic = a;
        }
        if let Some(n) = config.compact_every {
            if n == 0 {
                return Err(PosError::InvalidConfig {
                    reason: "compact_every must be at least 1".into(),
                });
            }
            core_config.compact_every = n;
        }
        if let Some(n) = config.settled_in_memory {
            core_config.settled_in_memory = n as usize;
        }
        if let Some(n) = config.audit_in_memory {
            if n == 0 {
                return Err(PosError::InvalidConfig {
                    reason: "audit_in_memory must be at least 1".into(),
                });
            }
            core_config.audit_in_memory = u64::from(n);
        }
        if let Some(a) = config.account {
            core_config.account =
                Some(
                    a.try_into()
                        .map_err(|e: PosError| PosError::InvalidConfig {
                            reason: e.to_string(),
                        })?,
                );
        }
        Ok(core_config)
    }

    /// The store and the engine on it, opened: what both constructors run
    /// (`new` blocks its caller on it, `open` awaits it).
    fn opening(
        config: core::EngineConfig,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
    ) -> Result<
        impl std::future::Future<Output = Result<core::PosEngine, pos_core::PosError>>,
        PosError,
    > {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| PosError::Storage {
            reason: format!("cannot create the data folder: {}", e.kind()),
        })?;
        let path = config.data_dir.join(STORE_FILE);
        let provider = Arc::new(KeyProviderAdapter(keys));
        Ok(async move {
            let store = SqliteStore::open(&path, provider)
                .await
                .map_err(pos_core::PosError::from)?;
            core::PosEngine::open_with(config, clock, Arc::new(store)).await
        })
    }
}

#[pos_ffi_macros::export]
impl PosEngine {
    /// Opens the engine and its encrypted store (`pos-core.sqlite` in
    /// `data_dir`, created on first use) with the key from `keys`. Fails with
    /// `InvalidConfig` for an empty device id or an unknown currency,
    /// `StoreLocked` while the key is unavailable, `WrongKey` when the key
    /// does not open the store, `StoreIntegrity` for a tampered, rolled-back
    /// or newer store (kept as it is), `AccountMismatch` for a store bound
    /// to another merchant account than `config.account`.
    ///
    /// Blocks the calling thread until the store is open (it verifies the
    /// journal after the last snapshot: tens of milliseconds, more after a
    /// crash): call it off the main thread, or use `open`.
    #[uniffi::constructor]
    pub fn new(config: EngineConfig, keys: Arc<dyn KeyProvider>) -> Result<Arc<Self>, PosError> {
        Self::open_blocking(config, keys, Arc::new(SystemClock))
    }

    /// As `new`, without blocking: `suspend` in Kotlin, `async` in Swift.
    #[uniffi::constructor]
    pub async fn open(
        config: EngineConfig,
        keys: Arc<dyn KeyProvider>,
    ) -> Result<Arc<Self>, PosError> {
        let opening = Self::opening(Self::core_config(config)?, keys, Arc::new(SystemClock))?;
        Ok(Arc::new(PosEngine {
            inner: opening.await?,
        }))
    }

    /// The same on a `TestClock` (tests and demos only).
    #[uniffi::constructor]
    pub fn with_test_clock(
        config: EngineConfig,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<TestClock>,
    ) -> Result<Arc<Self>, PosError> {
        Self::open_blocking(config, keys, Arc::new(clock.inner.clone()))
    }

    /// A snapshot for the app's status screen.
    pub fn status(&self) -> Result<EngineStatus, PosError> {
        Ok(self.inner.status()?.into())
    }

    /// The policy in force.
    pub fn policy(&self) -> Result<OfflinePolicy, PosError> {
        Ok(self.inner.policy()?.into())
    }

    /// Replaces the policy (R4). An inconsistent policy is refused with
    /// `InvalidPolicy`; stored payments are never discarded.
    pub async fn set_policy(&self, policy: OfflinePolicy) -> Result<(), PosError> {
        Ok(self.inner.set_policy(policy.try_into()?).await?)
    }

    /// Signs a staff member in, with their offline permission (R12).
    /// `InvalidInput` for an empty or malformed staff id.
    pub fn sign_in(&self, staff: StaffSession) -> Result<(), PosError> {
        let staff_id = pos_core::lifecycle::StaffId::parse(&staff.staff_id).map_err(invalid)?;
        Ok(self.inner.sign_in(core::StaffSession {
            staff_id,
            may_take_offline_payments: staff.may_take_offline_payments,
        })?)
    }

    /// Log out, switch location, reset the store, remove the device (R13):
    /// refused with `ActionRefused` while payments are pending, unless an
    /// override restates the money at risk (it is audited).
    /// `SwitchAccount` is refused with `InvalidInput`: use `switchAccount`.
    pub async fn guarded_action(
        &self,
        action: GuardedAction,
        override_: Option<ActionOverride>,
    ) -> Result<GuardOutcome, PosError> {
        let o = override_.map(TryInto::try_into).transpose()?;
        Ok(self.inner.guarded_action(action.into(), o).await?.into())
    }

    /// Switches the merchant account and location new payments are taken
    /// for (SPEC B7), a guarded action like `guardedAction`: refused with
    /// `ActionRefused` while payments are pending, unless an override
    /// restates the money at risk (it is audited). Pending payments keep
    /// their account and are forwarded under it only: the token provider
    /// must keep supplying that account's credentials until they are
    /// settled. The audit trail names both accounts. Switching to the
    /// current account changes nothing (`Allowed`).
    pub async fn switch_account(
        &self,
        account: MerchantAccount,
        override_: Option<ActionOverride>,
    ) -> Result<GuardOutcome, PosError> {
        let o = override_.map(TryInto::try_into).transpose()?;
        Ok(self
            .inner
            .switch_account(account.try_into()?, o)
            .await?
            .into())
    }

    /// R14: whether the app may let the device change network now.
    pub fn may_change_network_while_offline(&self) -> Result<bool, PosError> {
        Ok(self.inner.may_change_network_while_offline()?)
    }

    /// Reports the device's network reachability; returns the connectivity.
    pub async fn report_network(&self, reachable: bool) -> Result<ConnectivityStatus, PosError> {
        Ok(self.inner.report_network(reachable).await?.into())
    }

    /// Reports a status probe's result (R2); returns the connectivity.
    pub async fn report_probe(
        &self,
        outcome: ProbeOutcome,
    ) -> Result<ConnectivityStatus, PosError> {
        Ok(self.inner.report_probe(outcome.into()).await?.into())
    }

    /// Creates an order; `NotSignedIn` when nobody is signed in. The same
    /// `orderId` again with the same figures returns that order; with other
    /// figures, `InvalidInput`.
    pub async fn create_order(&self, order: NewOrder) -> Result<OrderView, PosError> {
        let new = pos_core::checkout::NewOrder {
            order_id: order.order_id,
            total: order.total.try_into()?,
            contact: order.contact.as_deref().map(Into::into),
        };
        let engine = self.inner.clone();
        on_runtime(async move { Ok(engine.create_order(new).await?.into()) }).await
    }

    /// The order with this id; `NotFound` if there is none.
    pub fn order(&self, order_id_: String) -> Result<OrderView, PosError> {
        Ok(self.inner.order(&order_id(&order_id_)?)?.into())
    }

    /// Records a cash tender on an order (never subject to the offline
    /// rules); `InvalidInput` when it exceeds the balance.
    pub async fn add_cash(&self, order_id_: String, amount: Money) -> Result<OrderView, PosError> {
        let (id, amount) = (order_id(&order_id_)?, amount.try_into()?);
        let engine = self.inner.clone();
        on_runtime(async move { Ok(engine.add_cash(&id, amount).await?.into()) }).await
    }

    /// Starts an online card payment for what is still owed on an order
    /// (after a decline, R17): `OnlineRequired` while offline.
    pub async fn begin_balance_payment(
        &self,
        order_id_: String,
    ) -> Result<PaymentDecision, PosError> {
        Ok(self
            .inner
            .begin_balance_payment(&order_id(&order_id_)?)
            .await?
            .into())
    }

    /// Starts a card payment: fixes its id and its route (B1, B2). Once
    /// settled history left memory, an app-supplied id is also looked up in
    /// the store.
    pub async fn begin_card_payment(
        &self,
        request: CardPaymentRequest,
    ) -> Result<PaymentDecision, PosError> {
        let request = request.try_into()?;
        let engine = self.inner.clone();
        on_runtime(async move { Ok(engine.begin_card_payment(request).await?.into()) }).await
    }

    /// Confirms a begun payment with the reader's card data; re-checks the
    /// route and every rule, and returns once the payment is durable. A
    /// caller cancelled while it runs may find the payment stored anyway:
    /// `cancelCardPayment` then answers `DuplicatePayment`.
    pub async fn confirm_card_payment(
        &self,
        payment_id_: String,
        card: CardRead,
    ) -> Result<PaymentView, PosError> {
        let id = payment_id(&payment_id_)?;
        let engine = self.inner.clone();
        on_runtime(async move { Ok(engine.confirm_card_payment(&id, card.into()).await?.into()) })
            .await
    }

    /// Drops a begun payment; `DuplicatePayment` if it was already taken.
    pub async fn cancel_card_payment(&self, payment_id_: String) -> Result<(), PosError> {
        Ok(self
            .inner
            .cancel_card_payment(&payment_id(&payment_id_)?)
            .await?)
    }

    /// The stored payments held in memory, most urgent first, then the
    /// settled ones (R19): every unsettled payment, and those of the
    /// latest `settledInMemory` settled orders.
    pub fn list_payments(&self) -> Result<Vec<PaymentView>, PosError> {
        Ok(self
            .inner
            .list_payments()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Every payment the store holds, older settled history included, in
    /// the order of `listPayments`. Reads and verifies the store's whole
    /// journal: seconds on a large history; call it off the main thread.
    pub async fn payment_history(&self) -> Result<Vec<PaymentView>, PosError> {
        let engine = self.inner.clone();
        on_runtime_only(async move {
            Ok(engine
                .payment_history()
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }

    /// Queues a receipt (R16); returns its id.
    pub async fn request_receipt(
        &self,
        order_id_: String,
        channel: ReceiptChannel,
    ) -> Result<u64, PosError> {
        let (id, channel) = (order_id(&order_id_)?, channel.try_into()?);
        let engine = self.inner.clone();
        on_runtime(async move { Ok(engine.request_receipt(&id, channel).await?) }).await
    }

    /// How many receipts wait for the connection.
    pub fn queued_receipt_count(&self) -> Result<u64, PosError> {
        Ok(self.inner.queued_receipts()?.len() as u64)
    }

    /// Uses the app's own gateway to reach the processor (its backend).
    pub fn set_gateway(&self, gateway: Arc<dyn PaymentGateway>) -> Result<(), PosError> {
        Ok(self.inner.set_gateway(Arc::new(GatewayAdapter(gateway)))?)
    }

    /// Forwards everything due now and returns what happened (B5). Lifts a pause.
    pub async fn forward_now(&self) -> Result<ForwardReport, PosError> {
        Ok(self.inner.forward_now().await?.into())
    }

    /// Saves a snapshot of everything the engine holds, so that the next
    /// open reads it instead of replaying the store's journal (the engine
    /// also does this every `compactEvery` records). First, settled history
    /// beyond `settledInMemory` and `auditInMemory` leaves memory (it stays
    /// in the store: `paymentHistory`, `exportAuditHistoryCsv`).
    pub async fn compact_store(&self) -> Result<(), PosError> {
        Ok(self.inner.compact_store().await?)
    }

    /// Verifies the whole store, history included, against what the engine
    /// holds (the open verifies the snapshot and what follows it). Throws
    /// `StoreIntegrity` on any difference; changes nothing.
    pub async fn verify_store(&self) -> Result<(), PosError> {
        Ok(self.inner.verify_store().await?)
    }

    /// Pauses automatic forwarding (attempts in flight finish).
    pub fn pause_forwarding(&self) -> Result<(), PosError> {
        Ok(self.inner.pause_forwarding()?)
    }

    /// Resumes automatic forwarding.
    pub fn resume_forwarding(&self) -> Result<(), PosError> {
        Ok(self.inner.resume_forwarding()?)
    }

    /// Wakes the forwarding driver now, so it re-reads the clock: after a
    /// `TestClock` jump, forwarding and expiry follow at once.
    pub fn nudge_forwarding(&self) {
        self.inner.nudge_forwarding();
    }

    /// Returns once every event emitted before the call has reached every
    /// listener: tests check a step's events after it, without sleeping.
    pub async fn events_delivered(&self) {
        self.inner.events_delivered().await;
    }

    /// Whether automatic forwarding is paused.
    pub fn forwarding_paused(&self) -> bool {
        self.inner.forwarding_paused()
    }

    /// Remembers a vendor SDK's reader (`CardReader.vendor`) by what the
    /// vendor reports: a new one only while online (`OnlineRequired`
    /// otherwise). The engine cannot authenticate a vendor's reader; its
    /// trust comes from the vendor's SDK. The profile's readers are
    /// remembered by `CardReader.pair(engine)`, which authenticates them.
    pub async fn remember_reader(&self, info: ReaderInfo) -> Result<(), PosError> {
        Ok(self
            .inner
            .remember_reader(&info.serial, &info.model, &info.firmware)
            .await?)
    }

    /// The readers paired on this device (`batteryPercent` is 0: not stored).
    pub fn remembered_readers(&self) -> Result<Vec<ReaderInfo>, PosError> {
        Ok(self
            .inner
            .remembered_readers()?
            .into_iter()
            .map(|r| ReaderInfo {
                model: r.model,
                serial: r.serial,
                firmware: r.firmware,
                battery_percent: 0,
            })
            .collect())
    }

    /// The challenge of a begun card payment (the one its `PaymentDecision`
    /// carried), to hand the reader again.
    pub fn card_challenge(
        &self,
        payment_id_: String,
    ) -> Result<crate::checkout::CardChallenge, PosError> {
        Ok(self
            .inner
            .card_challenge(&payment_id(&payment_id_)?)?
            .into())
    }

    /// Forgets a reader: it must be paired again, online.
    pub async fn forget_reader(&self, serial: String) -> Result<(), PosError> {
        Ok(self.inner.forget_reader(&serial).await?)
    }

    /// Whether the policy lets this reader model take offline payments (R11).
    pub fn reader_may_take_offline_payments(&self, model: String) -> Result<bool, PosError> {
        Ok(self.inner.reader_may_take_offline_payments(&model)?)
    }

    /// The app went to the background (Android `onStop`, iOS
    /// `sceneDidEnterBackground`): saves a snapshot unless nothing changed
    /// since the last one, moves the store's log into its file and saves its
    /// rollback anchor, and pauses probes: the engine no longer probes the
    /// service by itself, and `status().nextWakeUpMs` leaves probes out
    /// (the app's network callback or scheduled work brings it back).
    /// Forwarding under way goes on. Call `onForeground` when the app
    /// comes back.
    pub async fn on_background(&self) -> Result<(), PosError> {
        Ok(self.inner.on_background().await?)
    }

    /// The app is in the foreground again: probes resume and forwarding is
    /// woken at once.
    pub fn on_foreground(&self) -> Result<(), PosError> {
        Ok(self.inner.on_foreground()?)
    }

    /// Sets the app's source of other channels' online orders (R18),
    /// replacing any earlier one. The inbox fills from it on `refreshInbox`.
    pub fn set_order_source(&self, source: Arc<dyn OrderSource>) -> Result<(), PosError> {
        Ok(self
            .inner
            .set_order_source(Arc::new(SourceAdapter(source)))?)
    }

    /// Fetches what changed from the order source and merges it into the
    /// inbox (R18): call it after going online and whenever the app wants
    /// fresh orders. Offline it does not call the source (`Offline`).
    /// `InvalidInput` when no source is set; `OrderSourceFailed` when the
    /// source throws, returns an order without an id or in an unknown
    /// currency, or says more is waiting without moving its cursor (the
    /// inbox keeps what it had).
    pub async fn refresh_inbox(&self) -> Result<RefreshOutcome, PosError> {
        Ok(self.inner.refresh_inbox().await?.into())
    }

    /// What the app may show of other channels' orders (R18): hidden
    /// offline, syncing after a reconnection until a refresh succeeds.
    pub fn inbox(&self) -> Result<InboxView, PosError> {
        Ok(self.inner.inbox()?.into())
    }

    /// Expires payments past their deadline and raises session warnings.
    pub async fn tick(&self) -> Result<TickReport, PosError> {
        Ok(self.inner.tick().await?.into())
    }

    /// The audit log held in memory (the latest `auditInMemory` entries)
    /// as CSV, for reconciliation (B12): ids, amounts, staff ids; never
    /// card data or contacts.
    pub fn export_audit_csv(&self) -> Result<String, PosError> {
        Ok(self.inner.export_audit_csv()?)
    }

    /// The whole audit log as CSV, older entries that left memory
    /// included. Reads and verifies the store's whole journal when it
    /// needs the older ones: seconds on a large history.
    pub async fn export_audit_history_csv(&self) -> Result<String, PosError> {
        let engine = self.inner.clone();
        on_runtime_only(async move { Ok(engine.export_audit_history_csv().await?) }).await
    }

    /// Subscribes a listener. It receives a `Snapshot` first, then every event,
    /// on the engine's event thread, until the subscription is cancelled.
    pub fn subscribe(
        &self,
        listener: Arc<dyn EventListener>,
    ) -> Result<Arc<Subscription>, PosError> {
        let sub = self.inner.subscribe(Arc::new(ListenerAdapter(listener)))?;
        Ok(Subscription::new(sub))
    }

    /// Closes the engine: a final `Closed` event, then every call fails with
    /// `PosError.Closed`. Idempotent. In Kotlin this is `shutdown()`, because
    /// Kotlin's own `close()` (AutoCloseable) also frees the native handle.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Closes the engine like `close` and waits until its store has
    /// released its files (connections closed, log written back, last
    /// rollback anchor saved). Use it before the app copies, replaces or
    /// deletes the store's files (a restore, a reset): after `close` alone
    /// they may still be written for a moment.
    pub async fn close_and_release(&self) {
        self.inner.close_and_release().await;
    }
}

#[cfg(feature = "http-gateway")]
#[pos_ffi_macros::export]
impl PosEngine {
    /// Uses the built-in HTTP gateway (docs/gateway-openapi.yaml) at
    /// `base_url` (https; plain http only with `allow_plain_http`, and then
    /// only to a loopback host: 127.0.0.0/8, `[::1]`, `localhost`) with
    /// bearer tokens from `tokens`.
    pub fn use_http_gateway(
        &self,
        base_url: String,
        tokens: Arc<dyn TokenProvider>,
        allow_plain_http: bool,
    ) -> Result<(), PosError> {
        let mut config = HttpGatewayConfig::new(base_url);
        config.allow_plain_http = allow_plain_http;
        let gateway = HttpGateway::new(config, Arc::new(TokenAdapter(tokens))).map_err(|e| {
            PosError::InvalidConfig {
                reason: e.to_string(),
            }
        })?;
        Ok(self.inner.set_gateway(Arc::new(gateway))?)
    }
}

impl Drop for PosEngine {
    /// Swift's deinit and Kotlin's `close()`/cleaner end here: stop the engine too.
    fn drop(&mut self) {
        self.inner.close();
    }
}
