//! A card reader whatever carries it: the profile's reader over any link
//! (the simulated radio, an app's own Bluetooth stack, btleplug) or a
//! vendor's SDK, behind one [`Transport`] trait of boxed futures, and the
//! [`CardReader`] an app drives over it: pairing, information, card reads,
//! cancelling, reconnection, and the [`Event`]s of its status line. The
//! FFI's `CardReader` is a thin wrapper over it.
//!
//! The reader never calls its [`Listener`] (a foreign callback, in an app)
//! while it holds a lock: a transport takes its lock inside its future and
//! releases it when the future completes; the reader reports what happened
//! after. A listener may therefore call the reader back from inside an event.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use pos_rules::card_seal::CardChallenge;
use pos_rules::ledger::CardRead;
use pos_rules::money::Money;
use pos_rules::policy::EntryMode;
use tokio::task::JoinHandle;

use crate::client::{PairedReader, ReaderClient, ReaderError as ClientError, ReaderInfo};
use crate::link::{self, ExternalTransport, LinkControl, LinkError};
use crate::reconnect::{ReconnectPolicy, Supervision};
use crate::secure::LinkTrust;

/// A future a [`Transport`] returns: boxed, so that the trait is
/// object-safe and a reader is one type whatever carries it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What automatic reconnection reports each step to.
pub type Report = Box<dyn Fn(Supervision) + Send + Sync>;

/// Below this charge the app should ask the cashier to charge the reader.
pub const LOW_BATTERY_PERCENT: u8 = 20;

/// Why a reader operation failed, whatever carries the reader (the FFI's
/// `ReaderError` mirrors it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the reader is disconnected")]
    Disconnected,
    #[error("the reader did not answer in time")]
    Timeout,
    /// The handshake failed: the reader could not prove its identity key,
    /// or a message of it was forged.
    #[error("the reader failed the pairing handshake: {detail}")]
    PairingFailed { detail: String },
    #[error("a new reader can be paired only while online")]
    NewReaderOffline,
    /// The reader's certificate is not signed by an authority the policy
    /// lists.
    #[error("the reader's certificate is not from a trusted reader authority")]
    UntrustedReader,
    /// A remembered reader presented another identity key than the one
    /// paired: refused until it is forgotten and paired again online.
    #[error("remembered reader {serial} presented another identity key")]
    KeyChanged { serial: String },
    /// A card read (or `info`) before `pair`: every connection is
    /// authenticated first.
    #[error("the reader is not authenticated: pair first")]
    NotPaired,
    /// The [`ReaderRegistry`] could not remember the reader (closed, a
    /// store error): the reader is not remembered.
    #[error("the engine could not remember the reader: {detail}")]
    Engine { detail: String },
    #[error("the reader refused: {code}")]
    Refused { code: String },
    #[error("bad data from the reader: {detail}")]
    Protocol { detail: String },
    #[error("invalid argument: {detail}")]
    InvalidInput { detail: String },
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Link(LinkError::Disconnected) => Error::Disconnected,
            ClientError::Link(LinkError::Timeout) => Error::Timeout,
            ClientError::Handshake(e) => Error::PairingFailed {
                detail: e.to_string(),
            },
            ClientError::NewReaderOffline => Error::NewReaderOffline,
            ClientError::UntrustedReader => Error::UntrustedReader,
            ClientError::KeyChanged { serial } => Error::KeyChanged { serial },
            ClientError::NotAuthenticated => Error::NotPaired,
            ClientError::Refused { code } => Error::Refused { code },
            other => Error::Protocol {
                detail: other.to_string(),
            },
        }
    }
}

/// A reader event for the app's status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Paired {
        info: ReaderInfo,
    },
    Disconnected,
    /// Automatic reconnection: attempt `attempt` starts now.
    Reconnecting {
        attempt: u32,
    },
    /// Back in range; `resent` messages were sent again (counted by a
    /// manual [`CardReader::reconnect`]; automatic reconnection reports 0,
    /// the count being held by a card read in progress).
    Reconnected {
        resent: u64,
    },
    /// Automatic reconnection gave up after `attempts`; reconnect by hand,
    /// and the watch starts again.
    ReconnectFailed {
        attempts: u32,
    },
    /// The reader reported a charge under [`LOW_BATTERY_PERCENT`].
    LowBattery {
        percent: u8,
    },
}

/// Receives a reader's events; never called while the reader holds a lock.
pub trait Listener: Send + Sync {
    fn on_event(&self, event: Event);
}

/// Where paired readers are remembered (the engine): the trust a profile
/// reader's handshake is checked under, and remembering what paired.
pub trait ReaderRegistry: Send + Sync {
    /// The reader authorities, the remembered readers and whether a new
    /// one may pair now (only online).
    fn trust(&self) -> Result<LinkTrust, Error>;
    /// Remembers a profile reader that completed the handshake.
    fn remember_paired<'a>(&'a self, paired: &'a PairedReader) -> BoxFuture<'a, Result<(), Error>>;
    /// Remembers a vendor SDK's reader by what the SDK reports.
    fn remember_vendor<'a>(&'a self, info: &'a ReaderInfo) -> BoxFuture<'a, Result<(), Error>>;
}

/// One reader as [`CardReader`] drives it, whatever carries it: the
/// profile's reader over a link ([`ProfileReader`]) or a vendor's SDK
/// ([`VendorReader`]). Not the frame-level [`link::Transport`] a profile
/// reader runs over. Every method takes `&self`: an implementation holds its
/// own lock inside its futures, and calls no listener.
pub trait Transport: Send + Sync + 'static {
    /// Authenticates the reader (a profile reader's handshake) and
    /// remembers it in `registry`.
    fn pair<'a>(
        &'a self,
        registry: &'a dyn ReaderRegistry,
    ) -> BoxFuture<'a, Result<ReaderInfo, Error>>;
    /// Model, serial, firmware and battery, asked again.
    fn info(&self) -> BoxFuture<'_, Result<ReaderInfo, Error>>;
    /// Takes a card for the payment of `challenge`. `serial` is the one of
    /// the latest `info` (for a reader whose reads do not name it: see
    /// [`Transport::needs_serial`]).
    fn take_card<'a>(
        &'a self,
        challenge: &'a CardChallenge,
        entry_modes: &'a [EntryMode],
        offline: bool,
        serial: Option<&'a str>,
    ) -> BoxFuture<'a, Result<CardRead, Error>>;
    /// Waits for the card of the payment in progress (after a reconnection).
    fn await_card<'a>(
        &'a self,
        challenge: &'a CardChallenge,
    ) -> BoxFuture<'a, Result<CardRead, Error>>;
    /// The reader is back in range: sends again what it did not
    /// acknowledge. The number of messages pending, or `None` when the link
    /// could not be brought back.
    fn reconnect(&self) -> BoxFuture<'_, Option<u64>>;
    /// Whether the link is up, without waiting for a call in progress.
    fn is_connected(&self) -> bool;
    /// Messages refused by the secure link since it connected.
    fn rejected(&self) -> u64 {
        0
    }
    /// Cancels the card read in progress, while `take_card` waits (a
    /// profile reader's read is cancelled by dropping its future).
    fn cancel(&self) {}
    /// Whether `take_card` needs the serial of a prior `info`: a vendor
    /// SDK's card reads do not name their reader.
    fn needs_serial(&self) -> bool {
        false
    }
    /// Starts watching the link and reconnecting it with back-off (a task
    /// on the current tokio runtime), or `None` when the reader's own stack
    /// reconnects (an app's Bluetooth stack, a vendor SDK).
    fn supervise(&self, _policy: ReconnectPolicy, _report: Report) -> Option<JoinHandle<()>> {
        None
    }
}

/// The radio under a profile reader, as the reader needs it beyond frames:
/// read without the reader's lock (a card read holds it).
pub trait Radio: Send + Sync + 'static {
    fn is_connected(&self) -> bool;
    /// The app says the reader is in range again: bring the link back.
    fn bring_back(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Automatic reconnection with back-off, if this radio has it.
    fn supervise(&self, _policy: ReconnectPolicy, _report: Report) -> Option<JoinHandle<()>> {
        None
    }
}

/// The simulated radio: brought back whatever the range (a test's or a
/// demo's hand), and supervised.
impl Radio for LinkControl {
    fn is_connected(&self) -> bool {
        LinkControl::is_connected(self)
    }

    fn bring_back(&self) -> BoxFuture<'_, Result<(), String>> {
        self.reconnect();
        Box::pin(async { Ok(()) })
    }

    fn supervise(&self, policy: ReconnectPolicy, report: Report) -> Option<JoinHandle<()>> {
        Some(crate::reconnect::supervise(self.clone(), policy, report))
    }
}

/// An app's own Bluetooth stack: it reconnects by itself and says so.
impl Radio for Arc<ExternalTransport> {
    fn is_connected(&self) -> bool {
        ExternalTransport::is_connected(self)
    }

    fn bring_back(&self) -> BoxFuture<'_, Result<(), String>> {
        self.set_connected(true);
        Box::pin(async { Ok(()) })
    }
}

/// btleplug: reconnected on demand, and supervised.
#[cfg(feature = "ble")]
impl Radio for Arc<crate::ble::BleTransport> {
    fn is_connected(&self) -> bool {
        crate::ble::BleTransport::is_connected(self)
    }

    fn bring_back(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.is_connected() {
                return Ok(());
            }
            self.reconnect().await.map_err(|e| e.to_string())
        })
    }

    fn supervise(&self, policy: ReconnectPolicy, report: Report) -> Option<JoinHandle<()>> {
        Some(crate::reconnect::supervise(
            Arc::clone(self),
            policy,
            report,
        ))
    }
}

/// The profile's reader over a link `T`, whose radio is `R`.
pub struct ProfileReader<T: link::Transport, R: Radio> {
    client: tokio::sync::Mutex<ReaderClient<T>>,
    radio: R,
    rejected: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl<T: link::Transport, R: Radio> std::fmt::Debug for ProfileReader<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProfileReader")
    }
}

impl<T: link::Transport, R: Radio> ProfileReader<T, R> {
    /// A connected client (version negotiated) and its radio.
    pub fn new(client: ReaderClient<T>, radio: R) -> Self {
        ProfileReader {
            rejected: Box::new(client.rejected_counter()),
            client: tokio::sync::Mutex::new(client),
            radio,
        }
    }
}

impl<T: link::Transport, R: Radio> Transport for ProfileReader<T, R> {
    fn pair<'a>(
        &'a self,
        registry: &'a dyn ReaderRegistry,
    ) -> BoxFuture<'a, Result<ReaderInfo, Error>> {
        Box::pin(async move {
            let trust = registry.trust()?;
            let paired = self.client.lock().await.pair(&trust).await?;
            registry.remember_paired(&paired).await?;
            Ok(paired.info)
        })
    }

    fn info(&self) -> BoxFuture<'_, Result<ReaderInfo, Error>> {
        Box::pin(async move { Ok(self.client.lock().await.info().await?) })
    }

    fn take_card<'a>(
        &'a self,
        challenge: &'a CardChallenge,
        entry_modes: &'a [EntryMode],
        offline: bool,
        _serial: Option<&'a str>,
    ) -> BoxFuture<'a, Result<CardRead, Error>> {
        Box::pin(async move {
            let mut client = self.client.lock().await;
            Ok(client.take_card(challenge, entry_modes, offline).await?)
        })
    }

    fn await_card<'a>(
        &'a self,
        challenge: &'a CardChallenge,
    ) -> BoxFuture<'a, Result<CardRead, Error>> {
        Box::pin(async move { Ok(self.client.lock().await.await_card(challenge).await?) })
    }

    fn reconnect(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(async move {
            // Waits for a call in progress, as every other call does.
            let client = self.client.lock().await;
            let pending = client.unacked() as u64;
            // A failed attempt is seen as the absence of the `Reconnected`
            // event; the next call fails `Disconnected`.
            self.radio.bring_back().await.ok()?;
            Some(pending)
        })
    }

    fn is_connected(&self) -> bool {
        self.radio.is_connected()
    }

    fn rejected(&self) -> u64 {
        (self.rejected)()
    }

    fn supervise(&self, policy: ReconnectPolicy, report: Report) -> Option<JoinHandle<()>> {
        self.radio.supervise(policy, report)
    }
}

/// A whole vendor reader SDK (Stripe, Square, Adyen, SumUp readers...)
/// instead of the profile. Every method may block until the SDK answers:
/// the reader calls them on a blocking worker thread. Pairing, Bluetooth
/// and reconnection are the SDK's; the reader checks what comes back.
pub trait VendorSdk: Send + Sync + 'static {
    /// Model, serial, firmware and battery of the connected reader.
    fn info(&self) -> Result<ReaderInfo, Error>;
    /// Takes a card for `amount` with one of `entry_modes`; the card data
    /// must come back sealed for the processor (never a card number).
    fn take_card(
        &self,
        amount: Money,
        entry_modes: Vec<EntryMode>,
        offline: bool,
    ) -> Result<CardRead, Error>;
    /// The cashier cancelled the payment in progress.
    fn cancel(&self);
}

/// A vendor SDK's reader. Its calls take no lock: the SDK serialises them.
pub struct VendorReader {
    sdk: Arc<dyn VendorSdk>,
}

impl std::fmt::Debug for VendorReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VendorReader")
    }
}

impl VendorReader {
    pub fn new(sdk: Arc<dyn VendorSdk>) -> Self {
        VendorReader { sdk }
    }

    async fn checked_info(&self) -> Result<ReaderInfo, Error> {
        let sdk = Arc::clone(&self.sdk);
        checked_info(blocking(move || sdk.info()).await?)
    }
}

/// Runs a blocking vendor SDK call on a worker thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::Protocol {
            detail: format!("the vendor reader failed: {e}"),
        })
    })
}

/// Bad data from a vendor SDK is a typed error, never stored.
fn checked_info(info: ReaderInfo) -> Result<ReaderInfo, Error> {
    let ok = |s: &str| !s.trim().is_empty() && s.len() <= 64;
    if !ok(&info.model) || !ok(&info.serial) || info.firmware.len() > 64 {
        return Err(Error::Protocol {
            detail: "reader info: model and serial must be 1-64 characters".into(),
        });
    }
    Ok(ReaderInfo {
        battery_percent: info.battery_percent.min(100),
        ..info
    })
}

impl Transport for VendorReader {
    fn pair<'a>(
        &'a self,
        registry: &'a dyn ReaderRegistry,
    ) -> BoxFuture<'a, Result<ReaderInfo, Error>> {
        Box::pin(async move {
            let info = self.checked_info().await?;
            registry.remember_vendor(&info).await?;
            tracing::info!(model = %info.model, serial = %info.serial, "vendor reader paired");
            Ok(info)
        })
    }

    fn info(&self) -> BoxFuture<'_, Result<ReaderInfo, Error>> {
        Box::pin(self.checked_info())
    }

    fn take_card<'a>(
        &'a self,
        challenge: &'a CardChallenge,
        entry_modes: &'a [EntryMode],
        offline: bool,
        serial: Option<&'a str>,
    ) -> BoxFuture<'a, Result<CardRead, Error>> {
        Box::pin(async move {
            // The serial the vendor reported at pairing (or just asked).
            let serial = serial.ok_or(Error::NotPaired)?.to_owned();
            let sdk = Arc::clone(&self.sdk);
            let (amount, modes) = (challenge.amount, entry_modes.to_vec());
            let mut card = blocking(move || sdk.take_card(amount, modes, offline)).await?;
            card.reader_serial = Some(serial);
            card.reader_signature = None;
            card.validate()
                .map_err(|detail| Error::Protocol { detail })?;
            if !entry_modes.contains(&card.entry_mode) {
                return Err(Error::Protocol {
                    detail: format!(
                        "the vendor reader used {}, which this payment does not allow",
                        card.entry_mode
                    ),
                });
            }
            Ok(card)
        })
    }

    fn await_card<'a>(
        &'a self,
        _challenge: &'a CardChallenge,
    ) -> BoxFuture<'a, Result<CardRead, Error>> {
        Box::pin(async {
            Err(Error::InvalidInput {
                detail: "a vendor reader has no payment to resume: takeCard again".into(),
            })
        })
    }

    fn reconnect(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(async { Some(0) })
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn cancel(&self) {
        self.sdk.cancel();
    }

    fn needs_serial(&self) -> bool {
        true
    }
}

/// A connected card reader: what an app drives, whatever carries the reader.
pub struct CardReader {
    transport: Box<dyn Transport>,
    listener: Arc<dyn Listener>,
    /// Automatic reconnection, while it runs.
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// The challenge of the payment in progress (`await_card` resumes it).
    challenge: Mutex<Option<CardChallenge>>,
    /// The serial of the latest `info` (pairing, `refresh_info`).
    serial: Mutex<Option<String>>,
}

impl std::fmt::Debug for CardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardReader")
    }
}

impl Drop for CardReader {
    fn drop(&mut self) {
        if let Some(task) = self
            .supervisor
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// A poisoned lock still holds a consistent value here (each is one
/// assignment): take it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CardReader {
    pub fn new(transport: impl Transport, listener: Arc<dyn Listener>) -> Self {
        CardReader {
            transport: Box::new(transport),
            listener,
            supervisor: Mutex::new(None),
            challenge: Mutex::new(None),
            serial: Mutex::new(None),
        }
    }

    /// Authenticates the reader and remembers it in `registry`; reports
    /// `Paired` (and `LowBattery`). Call it on every connection.
    pub async fn pair(&self, registry: &dyn ReaderRegistry) -> Result<ReaderInfo, Error> {
        let info = self.reported(self.transport.pair(registry).await)?;
        self.listener.on_event(Event::Paired { info: info.clone() });
        self.note_info(&info);
        Ok(info)
    }

    /// Messages from the reader refused by the secure link since it
    /// connected. Does not wait for a card read in progress.
    pub fn rejected_messages(&self) -> u64 {
        self.transport.rejected()
    }

    /// Asks the reader for its model, serial, firmware and battery again;
    /// `LowBattery` when under [`LOW_BATTERY_PERCENT`].
    pub async fn refresh_info(&self) -> Result<ReaderInfo, Error> {
        let info = self.reported(self.transport.info().await)?;
        self.note_info(&info);
        Ok(info)
    }

    /// Watches the radio and reconnects by itself with back-off whenever it
    /// drops, reporting `Disconnected`, `Reconnecting`, `Reconnected` or
    /// `ReconnectFailed`. Spawns on the current tokio runtime; replaces a
    /// watch already running. `InvalidInput` for a reader whose own stack
    /// reconnects.
    pub fn reconnect_automatically(&self, policy: ReconnectPolicy) -> Result<(), Error> {
        let listener = Arc::clone(&self.listener);
        let report: Report = Box::new(move |s| {
            listener.on_event(match s {
                Supervision::Disconnected => Event::Disconnected,
                Supervision::Reconnecting { attempt } => Event::Reconnecting { attempt },
                Supervision::Reconnected { .. } => Event::Reconnected { resent: 0 },
                Supervision::GaveUp { attempts } => Event::ReconnectFailed { attempts },
            })
        });
        let task = self
            .transport
            .supervise(policy, report)
            .ok_or_else(|| Error::InvalidInput {
                detail: "this reader's own stack reconnects (AppReaderTransport.setConnected, or the vendor SDK)".into(),
            })?;
        if let Some(old) = lock(&self.supervisor).replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Asks for a card for the payment of `challenge`; remembered for
    /// [`CardReader::await_card`].
    pub async fn take_card(
        &self,
        challenge: CardChallenge,
        entry_modes: &[EntryMode],
        offline: bool,
    ) -> Result<CardRead, Error> {
        *lock(&self.challenge) = Some(challenge.clone());
        let mut serial = lock(&self.serial).clone();
        if serial.is_none() && self.transport.needs_serial() {
            // Never paired on this object: asked once.
            serial = Some(self.refresh_info().await?.serial);
        }
        let card = self
            .transport
            .take_card(&challenge, entry_modes, offline, serial.as_deref())
            .await;
        self.reported(card)
    }

    /// Cancels the card read in progress on a vendor reader, while its
    /// `take_card` waits.
    pub fn cancel(&self) {
        self.transport.cancel();
    }

    /// Waits for the card of the payment in progress (after `reconnect`).
    pub async fn await_card(&self) -> Result<CardRead, Error> {
        let challenge = lock(&self.challenge)
            .clone()
            .ok_or_else(|| Error::InvalidInput {
                detail: "no payment in progress: takeCard first".into(),
            })?;
        let card = self.transport.await_card(&challenge).await;
        self.reported(card)
    }

    /// The reader is back in range: both sides send again what the other
    /// did not acknowledge. Reports `Reconnected` with the messages that
    /// were pending, and returns their number (0 when the link could not be
    /// brought back: no event then).
    pub async fn reconnect(&self) -> u64 {
        let Some(resent) = self.transport.reconnect().await else {
            tracing::info!("reader not reconnected");
            return 0;
        };
        tracing::info!(resent, "reader reconnected");
        self.listener.on_event(Event::Reconnected { resent });
        resent
    }

    fn supervised(&self) -> bool {
        lock(&self.supervisor).is_some()
    }

    /// Reports `Disconnected` for a failure of a dropped link (with
    /// automatic reconnection on, the supervisor reports it).
    fn reported<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &result {
            tracing::info!(error = %e, "reader operation failed");
            let dropped =
                matches!(e, Error::Disconnected | Error::Timeout) || !self.transport.is_connected();
            if dropped && !self.supervised() {
                self.listener.on_event(Event::Disconnected);
            }
        }
        result
    }

    fn note_info(&self, info: &ReaderInfo) {
        *lock(&self.serial) = Some(info.serial.clone());
        if info.battery_percent < LOW_BATTERY_PERCENT {
            self.listener.on_event(Event::LowBattery {
                percent: info.battery_percent,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{OnceLock, Weak};
    use std::time::Duration;

    use pos_rules::lifecycle::PaymentId;
    use pos_rules::money::Currency;
    use pos_rules::policy::Network;

    use super::*;

    /// Records every event; with `reenter`, calls the reader back from
    /// inside each one (on another thread, as a foreign caller blocking on
    /// it would) and records whether that call finished in time.
    #[derive(Default)]
    struct Recorder {
        reenter: bool,
        reader: OnceLock<Weak<CardReader>>,
        busy: AtomicBool,
        events: Mutex<Vec<Event>>,
        waited: Mutex<Vec<Event>>,
    }

    impl Listener for Recorder {
        fn on_event(&self, event: Event) {
            // The call back's own events are not recorded, nor re-entered.
            if self.busy.load(Ordering::SeqCst) {
                return;
            }
            lock(&self.events).push(event.clone());
            if !self.reenter {
                return;
            }
            self.busy.store(true, Ordering::SeqCst);
            let reader = self.reader.get().and_then(Weak::upgrade).unwrap();
            let finished = std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async {
                            tokio::time::timeout(Duration::from_secs(30), reader.refresh_info())
                                .await
                        })
                        .is_ok()
                })
                .join()
                .unwrap()
            });
            if !finished {
                lock(&self.waited).push(event);
            }
            self.busy.store(false, Ordering::SeqCst);
        }
    }

    fn listened(transport: impl Transport, reenter: bool) -> (Arc<CardReader>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder {
            reenter,
            ..Recorder::default()
        });
        let reader = Arc::new(CardReader::new(transport, recorder.clone()));
        recorder.reader.set(Arc::downgrade(&reader)).ok().unwrap();
        (reader, recorder)
    }

    /// Remembers in memory; trusts the simulator's authority.
    #[derive(Default)]
    struct Registry {
        remembered: Mutex<Vec<String>>,
    }

    impl ReaderRegistry for Registry {
        fn trust(&self) -> Result<LinkTrust, Error> {
            Ok(LinkTrust {
                authorities: vec![pos_rules::reader_trust::simulator_authority().public_key()],
                remembered: vec![],
                online: true,
            })
        }

        fn remember_paired<'a>(
            &'a self,
            paired: &'a PairedReader,
        ) -> BoxFuture<'a, Result<(), Error>> {
            lock(&self.remembered).push(paired.info.serial.clone());
            Box::pin(async { Ok(()) })
        }

        fn remember_vendor<'a>(&'a self, info: &'a ReaderInfo) -> BoxFuture<'a, Result<(), Error>> {
            lock(&self.remembered).push(info.serial.clone());
            Box::pin(async { Ok(()) })
        }
    }

    fn challenge() -> CardChallenge {
        CardChallenge {
            payment_id: PaymentId::from_random([9; 16]),
            device_id: "till-1".into(),
            amount: Money::new(4_200, Currency::parse("USD").unwrap()),
            nonce: [5; 16],
        }
    }

    /// A vendor SDK on a reader low on battery; `fail` makes every call
    /// fail `Disconnected`.
    #[derive(Default)]
    struct Vendor {
        fail: bool,
        infos: AtomicUsize,
    }

    impl VendorSdk for Vendor {
        fn info(&self) -> Result<ReaderInfo, Error> {
            self.infos.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(Error::Disconnected);
            }
            Ok(ReaderInfo {
                model: "Chipper 2X BT".into(),
                serial: "VENDOR-1".into(),
                firmware: "1.0".into(),
                battery_percent: 150,
            })
        }

        fn take_card(
            &self,
            _amount: Money,
            _entry_modes: Vec<EntryMode>,
            _offline: bool,
        ) -> Result<CardRead, Error> {
            Ok(CardRead {
                entry_mode: EntryMode::Contactless,
                network: Network::Visa,
                last4: "4242".into(),
                fingerprint: Some("fp".into()),
                reader_model: "Chipper 2X BT".into(),
                sealed_card_data: vec![1, 2, 3],
                reader_serial: Some("forged".into()),
                reader_signature: Some(vec![0; 3]),
                tap_to_pay_on_phone: false,
            })
        }

        fn cancel(&self) {}
    }

    #[tokio::test]
    async fn a_vendor_read_carries_the_serial_asked_once_and_nothing_the_sdk_made_up() {
        let sdk = Arc::new(Vendor::default());
        let (reader, events) = listened(VendorReader::new(sdk.clone()), false);
        let modes = [EntryMode::Contactless];
        let card = reader.take_card(challenge(), &modes, true).await.unwrap();
        assert_eq!(card.reader_serial.as_deref(), Some("VENDOR-1"));
        assert_eq!(card.reader_signature, None);
        reader.take_card(challenge(), &modes, true).await.unwrap();
        assert_eq!(
            sdk.infos.load(Ordering::SeqCst),
            1,
            "the serial is asked once"
        );
        // An entry mode the payment does not allow is bad data.
        let refused = reader
            .take_card(challenge(), &[EntryMode::Chip], true)
            .await;
        assert!(
            matches!(refused, Err(Error::Protocol { .. })),
            "{refused:?}"
        );
        // A vendor SDK reconnects by itself; a vendor payment does not resume.
        assert!(matches!(
            reader.reconnect_automatically(ReconnectPolicy::default()),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            reader.await_card().await,
            Err(Error::InvalidInput { .. })
        ));
        assert_eq!(reader.reconnect().await, 0);
        assert_eq!(
            *lock(&events.events),
            vec![Event::Reconnected { resent: 0 }]
        );
    }

    #[tokio::test]
    async fn a_vendor_pairs_on_what_it_reports_and_its_failures_are_reported() {
        let registry = Registry::default();
        let (reader, events) = listened(VendorReader::new(Arc::new(Vendor::default())), false);
        let info = reader.pair(&registry).await.unwrap();
        assert_eq!(info.battery_percent, 100, "clamped");
        assert_eq!(*lock(&registry.remembered), vec!["VENDOR-1".to_owned()]);
        assert_eq!(*lock(&events.events), vec![Event::Paired { info }]);

        let failing = Vendor {
            fail: true,
            ..Vendor::default()
        };
        let (reader, events) = listened(VendorReader::new(Arc::new(failing)), false);
        assert_eq!(reader.refresh_info().await, Err(Error::Disconnected));
        assert_eq!(*lock(&events.events), vec![Event::Disconnected]);
    }

    /// The listener calls the reader back from inside `Paired`, `LowBattery`
    /// and `Disconnected`: it would wait forever (here, thirty seconds) if the
    /// reader held its lock while calling it.
    #[cfg(feature = "simulator")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_may_call_the_reader_back_from_inside_an_event() {
        use crate::link::MemoryLink;
        use crate::sim::{simulated_identity, SimReader, SimReaderConfig};

        let (phone, far) = MemoryLink::pair(185);
        let control = phone.control();
        let _sim = SimReader::start(
            SimReaderConfig {
                model: "Chipper 2X BT".into(),
                serial: "SIM-1".into(),
                firmware: "1.0".into(),
                battery_percent: 10,
                identity: simulated_identity("SIM-1", "Chipper 2X BT").unwrap(),
                processor: pos_rules::card_seal::ProcessorKey([5; 32]),
                fingerprint_key: [3; 32],
            },
            far,
        );
        let client = ReaderClient::connect(phone).await.unwrap();
        let (reader, events) = listened(ProfileReader::new(client, control.clone()), true);
        // Out of range before pairing: fails at once, reports `Disconnected`.
        control.set_in_range(false);
        assert_eq!(reader.refresh_info().await, Err(Error::NotPaired));
        control.set_in_range(true);
        control.reconnect();
        let registry = Registry::default();
        let info = reader.pair(&registry).await.unwrap();
        assert_eq!(*lock(&registry.remembered), vec!["SIM-1".to_owned()]);
        assert_eq!(
            *lock(&events.events),
            vec![
                Event::Disconnected,
                Event::Paired { info },
                Event::LowBattery { percent: 10 },
            ]
        );
        assert_eq!(
            *lock(&events.waited),
            vec![],
            "the listener was called under the reader's lock"
        );
    }
}
