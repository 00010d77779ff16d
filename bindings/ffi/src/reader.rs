//! The card reader for Swift and Kotlin: a thin wrapper over
//! `pos_reader::card_reader` (the reader whatever carries it), and its
//! transports: the reader profile over the simulated reader's in-memory
//! radio (so apps develop and test without hardware, B14), over the app's
//! own Bluetooth stack (`ReaderLink` + `AppReaderTransport`) or over
//! btleplug (`BleCentral`, feature `ble`), and a whole vendor reader SDK
//! behind the `VendorCardReader` foreign trait. Records and errors mirror
//! the reader crate's with `From`.

use std::sync::Arc;
#[cfg(feature = "simulator")]
use std::sync::Mutex;

use pos_reader::card_reader::{self as core, BoxFuture, ProfileReader, VendorReader};
use pos_reader::client::{PairedReader, ReaderClient};
use pos_reader::link::{ExternalTransport, LinkError};
#[cfg(feature = "simulator")]
use pos_reader::link::{LinkControl, MemoryLink};
use pos_reader::reconnect::ReconnectPolicy;
use pos_reader::secure::LinkTrust;
#[cfg(feature = "simulator")]
use pos_reader::sim::{Presented, SimReader, SimReaderConfig};

use crate::checkout::CardChallenge;
use crate::engine::PosEngine;
use crate::error::PosError;
use crate::money::Money;
use crate::runtime::runtime;
#[cfg(feature = "simulator")]
use crate::types::CardNetwork;
use crate::types::{CardRead, EntryMode, ReaderInfo};

/// Why a reader operation failed (mirrors `pos_reader::card_reader::Error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ReaderError {
    /// The reader is disconnected.
    #[error("the reader is disconnected")]
    Disconnected,
    /// The reader did not answer in time.
    #[error("the reader did not answer in time")]
    Timeout,
    /// The handshake failed: the reader could not prove its identity key,
    /// or a message of it was forged.
    #[error("the reader failed the pairing handshake: {detail}")]
    PairingFailed {
        /// What failed.
        detail: String,
    },
    /// A new reader can be paired only while the engine is online.
    #[error("a new reader can be paired only while online")]
    NewReaderOffline,
    /// The reader's certificate is not signed by an authority the policy
    /// lists (`OfflinePolicy.readerAuthorities`).
    #[error("the reader's certificate is not from a trusted reader authority")]
    UntrustedReader,
    /// A remembered reader presented another identity key than the one
    /// paired: refused until it is forgotten and paired again online.
    #[error("remembered reader {serial} presented another identity key")]
    KeyChanged {
        /// The reader's serial.
        serial: String,
    },
    /// `takeCard` (or `info`) before `pair`: every connection is
    /// authenticated first.
    #[error("the reader is not authenticated: pair first")]
    NotPaired,
    /// The engine `pair` remembers the reader in could not do it (closed,
    /// a store error): the reader is not remembered.
    #[error("the engine could not remember the reader: {detail}")]
    Engine {
        /// The engine's error.
        detail: String,
    },
    /// The reader refused the request.
    #[error("the reader refused: {code}")]
    Refused {
        /// Its reason, e.g. "battery_critical".
        code: String,
    },
    /// The reader sent malformed or unexpected data.
    #[error("bad data from the reader: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// An argument from the app is unusable.
    #[error("invalid argument: {detail}")]
    InvalidInput {
        /// What is wrong.
        detail: String,
    },
}

impl From<core::Error> for ReaderError {
    fn from(e: core::Error) -> Self {
        use core::Error as E;
        match e {
            E::Disconnected => ReaderError::Disconnected,
            E::Timeout => ReaderError::Timeout,
            E::PairingFailed { detail } => ReaderError::PairingFailed { detail },
            E::NewReaderOffline => ReaderError::NewReaderOffline,
            E::UntrustedReader => ReaderError::UntrustedReader,
            E::KeyChanged { serial } => ReaderError::KeyChanged { serial },
            E::NotPaired => ReaderError::NotPaired,
            E::Engine { detail } => ReaderError::Engine { detail },
            E::Refused { code } => ReaderError::Refused { code },
            E::Protocol { detail } => ReaderError::Protocol { detail },
            E::InvalidInput { detail } => ReaderError::InvalidInput { detail },
        }
    }
}

/// A vendor SDK's error, into the reader.
impl From<ReaderError> for core::Error {
    fn from(e: ReaderError) -> Self {
        use core::Error as E;
        match e {
            ReaderError::Disconnected => E::Disconnected,
            ReaderError::Timeout => E::Timeout,
            ReaderError::PairingFailed { detail } => E::PairingFailed { detail },
            ReaderError::NewReaderOffline => E::NewReaderOffline,
            ReaderError::UntrustedReader => E::UntrustedReader,
            ReaderError::KeyChanged { serial } => E::KeyChanged { serial },
            ReaderError::NotPaired => E::NotPaired,
            ReaderError::Engine { detail } => E::Engine { detail },
            ReaderError::Refused { code } => E::Refused { code },
            ReaderError::Protocol { detail } => E::Protocol { detail },
            ReaderError::InvalidInput { detail } => E::InvalidInput { detail },
        }
    }
}

impl From<pos_reader::client::ReaderError> for ReaderError {
    fn from(e: pos_reader::client::ReaderError) -> Self {
        core::Error::from(e).into()
    }
}

/// A reader event for the app's status line.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ReaderEvent {
    /// `pair` succeeded: the reader is remembered.
    Paired {
        /// What it reported.
        info: ReaderInfo,
    },
    /// The link to the reader dropped.
    Disconnected,
    /// Automatic reconnection: attempt `attempt` starts now.
    Reconnecting {
        /// Which attempt, from 1.
        attempt: u32,
    },
    /// Back in range; `resent` messages were sent again (counted by a
    /// manual `reconnect()`; automatic reconnection reports 0, the count
    /// being held by a `takeCard` in progress).
    Reconnected {
        /// Messages sent again.
        resent: u64,
    },
    /// Automatic reconnection gave up after `attempts`; `reconnect()` by
    /// hand, and the watch starts again.
    ReconnectFailed {
        /// Attempts made.
        attempts: u32,
    },
    /// The reader reported a charge under 20 %.
    LowBattery {
        /// Its charge, in percent.
        percent: u8,
    },
}

impl From<core::Event> for ReaderEvent {
    fn from(e: core::Event) -> Self {
        use core::Event as E;
        match e {
            E::Paired { info } => ReaderEvent::Paired { info: info.into() },
            E::Disconnected => ReaderEvent::Disconnected,
            E::Reconnecting { attempt } => ReaderEvent::Reconnecting { attempt },
            E::Reconnected { resent } => ReaderEvent::Reconnected { resent },
            E::ReconnectFailed { attempts } => ReaderEvent::ReconnectFailed { attempts },
            E::LowBattery { percent } => ReaderEvent::LowBattery { percent },
        }
    }
}

/// How automatic reconnection retries: the first attempt at once, then
/// `first_delay_ms` doubling up to `max_delay_ms`, `max_attempts` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct ReconnectSettings {
    /// The wait before the second attempt, in ms.
    pub first_delay_ms: u32,
    /// The longest wait between attempts, in ms.
    pub max_delay_ms: u32,
    /// Attempts before giving up; at least 1.
    pub max_attempts: u32,
}

/// 0.5 s doubling to 30 s, 20 attempts.
#[uniffi::export]
pub fn default_reconnect_settings() -> ReconnectSettings {
    let p = ReconnectPolicy::default();
    ReconnectSettings {
        first_delay_ms: u32::try_from(p.first_delay.as_millis()).unwrap_or(u32::MAX),
        max_delay_ms: u32::try_from(p.max_delay.as_millis()).unwrap_or(u32::MAX),
        max_attempts: p.max_attempts,
    }
}

impl TryFrom<ReconnectSettings> for ReconnectPolicy {
    type Error = ReaderError;
    fn try_from(s: ReconnectSettings) -> Result<Self, ReaderError> {
        if s.max_attempts == 0 || s.first_delay_ms > s.max_delay_ms {
            return Err(ReaderError::InvalidInput {
                detail: "max_attempts must be at least 1 and first_delay_ms at most max_delay_ms"
                    .into(),
            });
        }
        Ok(ReconnectPolicy {
            first_delay: std::time::Duration::from_millis(u64::from(s.first_delay_ms)),
            max_delay: std::time::Duration::from_millis(u64::from(s.max_delay_ms)),
            max_attempts: s.max_attempts,
        })
    }
}

/// A whole vendor reader SDK (Stripe, Square, Adyen, SumUp readers...)
/// behind the engine, instead of the POS Core reader profile. Implemented in
/// Swift or Kotlin; every method is called on a worker thread and may block
/// until the vendor SDK answers. Pairing, Bluetooth and reconnection are the
/// vendor SDK's; POS Core still applies its rules (a new reader only online,
/// R11's offline-capable models, the card limits) and checks what comes back.
#[uniffi::export(foreign)]
pub trait VendorCardReader: Send + Sync {
    /// Model, serial, firmware and battery of the connected reader.
    fn info(&self) -> Result<ReaderInfo, ReaderError>;
    /// Takes a card for `amount` with one of `entry_modes`; the card data
    /// must come back sealed for the processor (never a card number).
    fn take_card(
        &self,
        amount: Money,
        entry_modes: Vec<EntryMode>,
        offline: bool,
    ) -> Result<CardRead, ReaderError>;
    /// The cashier cancelled the payment in progress.
    fn cancel(&self);
}

/// The app's vendor SDK as the reader crate's.
struct VendorAdapter(Arc<dyn VendorCardReader>);

impl core::VendorSdk for VendorAdapter {
    fn info(&self) -> Result<pos_reader::client::ReaderInfo, core::Error> {
        Ok(self.0.info()?.into())
    }

    fn take_card(
        &self,
        amount: pos_core::money::Money,
        entry_modes: Vec<pos_core::policy::EntryMode>,
        offline: bool,
    ) -> Result<pos_core::ledger::CardRead, core::Error> {
        let modes = entry_modes.into_iter().map(Into::into).collect();
        Ok(self.0.take_card(amount.into(), modes, offline)?.into())
    }

    fn cancel(&self) {
        self.0.cancel();
    }
}

/// A reader seen while scanning (filtered by the profile's service, and
/// again on our side).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DiscoveredReader {
    /// Pass to `connect` of the scanner that found it.
    pub id: String,
    /// Its advertised name, if any.
    pub name: Option<String>,
    /// Signal strength, dBm.
    pub rssi: Option<i16>,
}

/// Implemented in Swift or Kotlin; called on the caller's task, never while
/// the reader holds a lock (it may call the reader back).
#[uniffi::export(foreign)]
pub trait ReaderListener: Send + Sync {
    /// Receives one reader event.
    fn on_reader_event(&self, event: ReaderEvent);
}

struct ListenerAdapter(Arc<dyn ReaderListener>);

impl core::Listener for ListenerAdapter {
    fn on_event(&self, event: core::Event) {
        self.0.on_reader_event(event.into());
    }
}

/// The engine, where `pair` remembers readers.
struct EngineRegistry<'a>(&'a pos_core::engine::PosEngine);

fn engine_error(e: pos_core::PosError) -> core::Error {
    match e {
        pos_core::PosError::OnlineRequired => core::Error::NewReaderOffline,
        pos_core::PosError::ReaderNotPaired { .. } => core::Error::UntrustedReader,
        other => core::Error::Engine {
            detail: other.to_string(),
        },
    }
}

impl core::ReaderRegistry for EngineRegistry<'_> {
    fn trust(&self) -> Result<LinkTrust, core::Error> {
        let t = self.0.reader_trust().map_err(engine_error)?;
        Ok(LinkTrust {
            authorities: t.authorities,
            remembered: t.remembered,
            online: t.online,
        })
    }

    fn remember_paired<'a>(
        &'a self,
        paired: &'a PairedReader,
    ) -> BoxFuture<'a, Result<(), core::Error>> {
        Box::pin(async move {
            self.0
                .remember_paired_reader(&paired.certificate, &paired.info.firmware)
                .await
                .map(|_| ())
                .map_err(engine_error)
        })
    }

    fn remember_vendor<'a>(
        &'a self,
        info: &'a pos_reader::client::ReaderInfo,
    ) -> BoxFuture<'a, Result<(), core::Error>> {
        Box::pin(async move {
            self.0
                .remember_reader(&info.serial, &info.model, &info.firmware)
                .await
                .map_err(engine_error)
        })
    }
}

#[cfg(feature = "simulator")]
fn key32(what: &str, b: &[u8]) -> Result<[u8; 32], ReaderError> {
    <[u8; 32]>::try_from(b).map_err(|_| ReaderError::InvalidInput {
        detail: format!("{what} must be 32 bytes"),
    })
}

/// The simulator's reader authority (hex of its Ed25519 key), which
/// certifies every `SimulatedReader`: list it in
/// `OfflinePolicy.readerAuthorities` to pair simulated readers. A public
/// test key: a production policy must never list it.
#[cfg(feature = "simulator")]
#[uniffi::export]
pub fn simulator_reader_authority() -> String {
    pos_core::crypto::hex(&pos_core::reader_trust::simulator_authority().public_key())
}

/// A simulated reader on an in-memory link (MTU as given).
#[cfg(feature = "simulator")]
#[derive(uniffi::Object)]
pub struct SimulatedReader {
    sim: SimReader,
    phone_end: Mutex<Option<MemoryLink>>,
    control: LinkControl,
}

#[cfg(feature = "simulator")]
impl std::fmt::Debug for SimulatedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedReader")
    }
}

#[cfg(feature = "simulator")]
#[pos_ffi_macros::export]
impl SimulatedReader {
    /// A reader whose identity key is certified by the simulator's reader
    /// authority (`simulatorReaderAuthority()`) for this serial and model;
    /// `processor_key` is the processor's X25519 public key card data is
    /// sealed to (32 bytes).
    #[uniffi::constructor]
    pub fn new(
        model: String,
        serial: String,
        battery_percent: u8,
        processor_key: Vec<u8>,
        mtu: u16,
    ) -> Result<Arc<Self>, ReaderError> {
        let mtu = usize::from(mtu);
        pos_reader::frame::chunk_len(mtu).map_err(|e| ReaderError::InvalidInput {
            detail: e.to_string(),
        })?;
        let (phone, reader) = MemoryLink::pair(mtu);
        let control = phone.control();
        let rt = runtime().map_err(|e| ReaderError::Protocol {
            detail: e.to_string(),
        })?;
        let _guard = rt.enter();
        let identity = pos_reader::sim::simulated_identity(&serial, &model).map_err(|e| {
            ReaderError::InvalidInput {
                detail: e.to_string(),
            }
        })?;
        let sim = SimReader::start(
            SimReaderConfig {
                model,
                serial,
                firmware: "sim-1.0".into(),
                battery_percent: battery_percent.min(100),
                identity,
                processor: pos_core::card_seal::ProcessorKey(key32(
                    "processor_key",
                    &processor_key,
                )?),
                fingerprint_key: [0x42; 32],
            },
            reader,
        );
        Ok(Arc::new(SimulatedReader {
            sim,
            phone_end: Mutex::new(Some(phone)),
            control,
        }))
    }

    /// The customer presents a card (test card numbers only).
    pub fn present_card(
        &self,
        pan: String,
        expiry: String,
        network: CardNetwork,
        entry_mode: EntryMode,
    ) {
        self.sim.present(Presented {
            secret: pos_core::card_seal::CardSecret { pan, expiry },
            network: network.into(),
            entry_mode: entry_mode.into(),
        });
    }

    /// The radio drops after `frames` more frames (mid-message).
    pub fn disconnect_after(&self, frames: u32) {
        self.control.disconnect_after(frames as usize);
    }

    /// The reader walks out of range (`false`: the radio drops and
    /// reconnection attempts fail) or comes back (`true`).
    pub fn set_in_range(&self, in_range: bool) {
        self.control.set_in_range(in_range);
    }

    /// The reader walks out of range after `frames` more frames.
    pub fn leave_range_after(&self, frames: u32) {
        self.control.leave_range_after(frames as usize);
    }

    /// The battery drains (under 5 % the reader refuses payments with
    /// `Refused("battery_critical")`) or is charged.
    pub fn set_battery(&self, percent: u8) {
        self.sim.set_battery(percent);
    }

    /// Delay before each of the reader's replies.
    pub fn set_latency_ms(&self, latency_ms: u32) {
        self.sim
            .set_latency(std::time::Duration::from_millis(u64::from(latency_ms)));
    }

    /// The phone end of the simulated radio, for an app's own `ReaderLink`
    /// to talk to (instead of `connect`; either, once).
    pub fn radio(&self) -> Result<Arc<SimulatedRadio>, ReaderError> {
        let link = self
            .phone_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(ReaderError::InvalidInput {
                detail: "already connected".into(),
            })?;
        Ok(Arc::new(SimulatedRadio { link }))
    }

    /// Connects the phone side (once).
    pub async fn connect(
        &self,
        listener: Arc<dyn ReaderListener>,
    ) -> Result<Arc<CardReader>, ReaderError> {
        let link = self
            .phone_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(ReaderError::InvalidInput {
                detail: "already connected".into(),
            })?;
        let client = ReaderClient::connect(link).await?;
        Ok(CardReader::new(
            ProfileReader::new(client, self.control.clone()),
            listener,
        ))
    }
}

/// A connected card reader.
#[derive(uniffi::Object)]
pub struct CardReader {
    inner: core::CardReader,
}

impl std::fmt::Debug for CardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardReader")
    }
}

impl CardReader {
    fn new(transport: impl core::Transport, listener: Arc<dyn ReaderListener>) -> Arc<CardReader> {
        Arc::new(CardReader {
            inner: core::CardReader::new(transport, Arc::new(ListenerAdapter(listener))),
        })
    }
}

#[pos_ffi_macros::export]
impl CardReader {
    /// A vendor reader SDK behind the engine (see `VendorCardReader`).
    #[uniffi::constructor]
    pub fn vendor(
        reader: Arc<dyn VendorCardReader>,
        listener: Arc<dyn ReaderListener>,
    ) -> Arc<Self> {
        CardReader::new(VendorReader::new(Arc::new(VendorAdapter(reader))), listener)
    }

    /// Authenticates the reader and remembers it in `engine`. A profile
    /// reader runs the handshake: it proves the identity key its certificate
    /// names, the certificate must come from an authority the engine's
    /// policy lists (`UntrustedReader`), a remembered serial must present
    /// its remembered key (`KeyChanged`), and a new reader is paired only
    /// while the engine is online (`NewReaderOffline`); after it, every
    /// message is sealed. Call it on every connection (a remembered reader
    /// pairs again offline). A vendor reader is remembered on what its SDK
    /// reports (`PosEngine.rememberReader`).
    pub async fn pair(&self, engine: Arc<PosEngine>) -> Result<ReaderInfo, ReaderError> {
        let info = self.inner.pair(&EngineRegistry(&engine.inner)).await?;
        Ok(info.into())
    }

    /// Messages from the reader refused by the secure link (forged,
    /// replayed, reordered, from another session, or malformed) since it
    /// connected. Does not wait for a card read in progress.
    pub fn rejected_messages(&self) -> u64 {
        self.inner.rejected_messages()
    }

    /// Asks the reader for its model, serial, firmware and battery again (the
    /// status line); `LowBattery` when under 20 %.
    pub async fn refresh_info(&self) -> Result<ReaderInfo, ReaderError> {
        Ok(self.inner.refresh_info().await?.into())
    }

    /// Watches the radio and reconnects by itself with back-off whenever it
    /// drops, reporting `Disconnected`, `Reconnecting`, `Reconnected` or
    /// `ReconnectFailed`; a payment cut by the drop goes on once the link is
    /// back. For the simulated reader (and, in a `ble` build, btleplug); an
    /// app's own Bluetooth stack or a vendor SDK reconnects by itself.
    pub fn reconnect_automatically(&self, settings: ReconnectSettings) -> Result<(), ReaderError> {
        let policy = ReconnectPolicy::try_from(settings)?;
        let rt = runtime().map_err(|e| ReaderError::Protocol {
            detail: e.to_string(),
        })?;
        let _guard = rt.enter();
        Ok(self.inner.reconnect_automatically(policy)?)
    }

    /// Asks for a card for the begun payment whose `challenge` its
    /// `PaymentDecision` carried: the summary, the keyed fingerprint, and
    /// the card data sealed for the processor and bound to the challenge,
    /// signed by the reader (a paired profile reader), ready for
    /// `confirmCardPayment`. A vendor reader gets the amount only; its read
    /// carries the serial the vendor reported and no signature.
    pub async fn take_card(
        &self,
        challenge: CardChallenge,
        entry_modes: Vec<EntryMode>,
        offline: bool,
    ) -> Result<CardRead, ReaderError> {
        let challenge: pos_core::card_seal::CardChallenge =
            challenge
                .try_into()
                .map_err(|e: PosError| ReaderError::InvalidInput {
                    detail: e.to_string(),
                })?;
        let modes: Vec<_> = entry_modes.into_iter().map(Into::into).collect();
        Ok(self
            .inner
            .take_card(challenge, &modes, offline)
            .await?
            .into())
    }

    /// Cancels the payment in progress on a vendor reader, while its
    /// `takeCard` waits (the profile's readers are cancelled by dropping the
    /// `takeCard` call).
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// Waits for the card of the payment in progress (after `reconnect`).
    pub async fn await_card(&self) -> Result<CardRead, ReaderError> {
        Ok(self.inner.await_card().await?.into())
    }

    /// The reader is back in range: both sides send again what the other
    /// did not acknowledge.
    pub async fn reconnect(&self) -> u64 {
        self.inner.reconnect().await
    }
}

/// Implemented by the app over its own Bluetooth stack (CoreBluetooth,
/// Android's BluetoothGatt) to carry the reader profile without btleplug.
#[uniffi::export(foreign)]
pub trait ReaderLink: Send + Sync {
    /// Writes one frame to the request characteristic (write without
    /// response). Throw `Disconnected` when the reader is gone.
    fn write_frame(&self, frame: Vec<u8>) -> Result<(), ReaderError>;
}

/// The app-driven transport: the app forwards every notification of the
/// notify characteristic to `deliverFrame` and reports the connection with
/// `setConnected`.
#[derive(uniffi::Object)]
pub struct AppReaderTransport {
    transport: Arc<ExternalTransport>,
}

impl std::fmt::Debug for AppReaderTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppReaderTransport")
    }
}

#[pos_ffi_macros::export]
impl AppReaderTransport {
    /// `mtu` as negotiated by the platform (23-517).
    #[uniffi::constructor]
    pub fn new(link: Arc<dyn ReaderLink>, mtu: u16) -> Result<Arc<Self>, ReaderError> {
        let transport = ExternalTransport::new(usize::from(mtu), move |frame| {
            link.write_frame(frame).map_err(|_| LinkError::Disconnected)
        })
        .map_err(|e| ReaderError::InvalidInput {
            detail: e.to_string(),
        })?;
        Ok(Arc::new(AppReaderTransport {
            transport: Arc::new(transport),
        }))
    }

    /// A notification from the reader.
    pub fn deliver_frame(&self, frame: Vec<u8>) {
        self.transport.deliver(frame);
    }

    /// The platform lost (false) or regained (true) the reader.
    pub fn set_connected(&self, connected: bool) {
        self.transport.set_connected(connected);
    }

    /// Negotiates the profile version with the reader on this transport.
    pub async fn connect(
        &self,
        listener: Arc<dyn ReaderListener>,
    ) -> Result<Arc<CardReader>, ReaderError> {
        let client = ReaderClient::connect(Arc::clone(&self.transport)).await?;
        Ok(CardReader::new(
            ProfileReader::new(client, Arc::clone(&self.transport)),
            listener,
        ))
    }
}

/// Raw frames to and from the simulated reader, to test an app's
/// `ReaderLink` without hardware.
#[cfg(feature = "simulator")]
#[derive(uniffi::Object)]
pub struct SimulatedRadio {
    link: MemoryLink,
}

#[cfg(feature = "simulator")]
impl std::fmt::Debug for SimulatedRadio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedRadio")
    }
}

#[cfg(feature = "simulator")]
#[pos_ffi_macros::export]
impl SimulatedRadio {
    /// A frame written by the phone to the request characteristic.
    pub fn send(&self, frame: Vec<u8>) -> Result<(), ReaderError> {
        self.link
            .write(frame)
            .map_err(|_| ReaderError::Disconnected)
    }

    /// The next notification from the reader; `None` when it is gone.
    pub async fn receive(&self) -> Option<Vec<u8>> {
        self.link.read().await
    }
}

#[cfg(feature = "ble")]
pub use ble::BleCentral;

/// Card readers over Bluetooth LE through btleplug (feature `ble`; not in
/// the default build, and never run against a radio on the build machines).
#[cfg(feature = "ble")]
mod ble {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use btleplug::api::Manager as _;
    use btleplug::platform::{Adapter, Manager, PeripheralId};
    use pos_reader::ble::{scan, BleTransport};
    use pos_reader::client::ReaderClient;

    use super::{CardReader, DiscoveredReader, ProfileReader, ReaderError, ReaderListener};

    fn bt(e: impl std::fmt::Display) -> ReaderError {
        ReaderError::Protocol {
            detail: format!("bluetooth: {e}"),
        }
    }

    /// The phone's Bluetooth adapter.
    #[derive(uniffi::Object)]
    pub struct BleCentral {
        adapter: Adapter,
        seen: Mutex<HashMap<String, PeripheralId>>,
    }

    impl std::fmt::Debug for BleCentral {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("BleCentral")
        }
    }

    #[pos_ffi_macros::export]
    impl BleCentral {
        /// The first Bluetooth adapter (on Android, after btleplug's JNI
        /// initialisation: see docs/reader-profile.md).
        #[uniffi::constructor]
        pub async fn first_adapter() -> Result<Arc<Self>, ReaderError> {
            let manager = Manager::new().await.map_err(bt)?;
            let adapter = manager
                .adapters()
                .await
                .map_err(bt)?
                .into_iter()
                .next()
                .ok_or_else(|| bt("no adapter"))?;
            Ok(Arc::new(BleCentral {
                adapter,
                seen: Mutex::new(HashMap::new()),
            }))
        }

        /// Scans for `seconds` (1-60) and lists the readers that offer the
        /// profile's service, strongest signal first.
        pub async fn scan(&self, seconds: u32) -> Result<Vec<DiscoveredReader>, ReaderError> {
            if !(1..=60).contains(&seconds) {
                return Err(ReaderError::InvalidInput {
                    detail: "scan for 1 to 60 seconds".into(),
                });
            }
            let found = scan(&self.adapter, Duration::from_secs(u64::from(seconds)))
                .await
                .map_err(bt)?;
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let mut out: Vec<DiscoveredReader> = found
                .into_iter()
                .map(|d| {
                    let id = d.id.to_string();
                    seen.insert(id.clone(), d.id);
                    DiscoveredReader {
                        id,
                        name: d.name,
                        rssi: d.rssi,
                    }
                })
                .collect();
            out.sort_by_key(|d| std::cmp::Reverse(d.rssi.unwrap_or(i16::MIN)));
            Ok(out)
        }

        /// Connects to a reader from the last scan and negotiates the
        /// profile version; then `pair` as with any reader.
        pub async fn connect(
            &self,
            id: String,
            listener: Arc<dyn ReaderListener>,
        ) -> Result<Arc<CardReader>, ReaderError> {
            let pid = self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()
                .ok_or_else(|| ReaderError::InvalidInput {
                    detail: "not a reader from the last scan".into(),
                })?;
            let transport = Arc::new(
                BleTransport::connect(self.adapter.clone(), pid, Duration::from_secs(10))
                    .await
                    .map_err(bt)?,
            );
            let client = ReaderClient::connect(Arc::clone(&transport)).await?;
            Ok(CardReader::new(
                ProfileReader::new(client, transport),
                listener,
            ))
        }
    }
}

/// A simulated radio neighbourhood: simulated readers (and other devices)
/// advertising with a signal strength, so apps and tests go through the same
/// discover → connect → pair steps as with `BleCentral`. Scanning keeps only
/// what offers the profile's service, strongest signal first.
#[cfg(feature = "simulator")]
#[derive(uniffi::Object, Default)]
pub struct SimulatedAirspace {
    devices: Mutex<Vec<Advertised>>,
}

#[cfg(feature = "simulator")]
struct Advertised {
    id: String,
    name: Option<String>,
    rssi: i16,
    services: Vec<String>,
    reader: Option<Arc<SimulatedReader>>,
}

#[cfg(feature = "simulator")]
impl SimulatedAirspace {
    fn advertise(&self, device: Advertised) {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(device);
    }
}

#[cfg(feature = "simulator")]
impl std::fmt::Debug for SimulatedAirspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedAirspace")
    }
}

#[cfg(feature = "simulator")]
#[pos_ffi_macros::export]
impl SimulatedAirspace {
    /// An empty neighbourhood.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(SimulatedAirspace::default())
    }

    /// `reader` advertises the profile's service as `name` at `rssi` dBm;
    /// its id is `id`.
    pub fn advertise_reader(
        &self,
        id: String,
        name: String,
        rssi: i16,
        reader: Arc<SimulatedReader>,
    ) {
        self.advertise(Advertised {
            id,
            name: Some(name),
            rssi,
            services: vec![pos_reader::uuids::SERVICE.to_owned()],
            reader: Some(reader),
        });
    }

    /// Another device (a heart-rate strap, headphones) advertising
    /// `services`: a scan never lists it.
    pub fn advertise_other(&self, id: String, name: String, rssi: i16, services: Vec<String>) {
        self.advertise(Advertised {
            id,
            name: Some(name),
            rssi,
            services,
            reader: None,
        });
    }

    /// The readers in range, strongest signal first.
    pub fn scan(&self) -> Vec<DiscoveredReader> {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<DiscoveredReader> = devices
            .iter()
            .filter(|d| pos_reader::offers_reader_service(&d.services) && d.reader.is_some())
            .map(|d| DiscoveredReader {
                id: d.id.clone(),
                name: d.name.clone(),
                rssi: Some(d.rssi),
            })
            .collect();
        found.sort_by_key(|d| std::cmp::Reverse(d.rssi));
        found
    }

    /// Connects to a reader found by `scan` (once per reader).
    pub async fn connect(
        &self,
        id: String,
        listener: Arc<dyn ReaderListener>,
    ) -> Result<Arc<CardReader>, ReaderError> {
        let reader = self
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|d| d.id == id && pos_reader::offers_reader_service(&d.services))
            .and_then(|d| d.reader.clone())
            .ok_or_else(|| ReaderError::InvalidInput {
                detail: "no such reader in range".into(),
            })?;
        reader.connect(listener).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! A listener may call the reader back from inside a callback (a Kotlin
    //! `onReaderEvent` that runs `runBlocking { reader.refreshInfo() }`):
    //! the reader never calls it while holding its own lock, or that call
    //! would wait forever.

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    use std::time::Duration;

    use super::*;
    use crate::checkout::CardChallenge;
    use crate::engine::{EngineConfig, PosEngine, ProbeOutcome, TestClock};
    use crate::keys::{KeyMaterial, KeyProvider, KeyProviderError};
    use crate::types::CardNetwork;

    /// A vendor SDK whose reader is low on battery (every `info` reports
    /// `LowBattery`).
    struct Vendor;

    impl VendorCardReader for Vendor {
        fn info(&self) -> Result<ReaderInfo, ReaderError> {
            Ok(ReaderInfo {
                model: "Chipper 2X BT".into(),
                serial: "SN-1".into(),
                firmware: "1.0".into(),
                battery_percent: 10,
            })
        }

        fn take_card(
            &self,
            _amount: Money,
            _entry_modes: Vec<EntryMode>,
            _offline: bool,
        ) -> Result<CardRead, ReaderError> {
            Ok(CardRead {
                entry_mode: EntryMode::Chip,
                network: CardNetwork::Visa,
                last4: "4242".into(),
                fingerprint: Some("fp-4242".into()),
                reader_model: "Chipper 2X BT".into(),
                sealed_card_data: vec![1, 2, 3],
                reader_serial: None,
                reader_signature: None,
                tap_to_pay_on_phone: false,
            })
        }

        fn cancel(&self) {}
    }

    /// Calls the reader back from inside every event, on another thread
    /// (as a foreign caller blocking on it would), and records whether that
    /// call finished within thirty seconds (a call under the reader's lock
    /// never would; a loaded machine may take seconds to answer one that can).
    #[derive(Default)]
    struct ReentrantListener {
        reader: OnceLock<Weak<CardReader>>,
        busy: AtomicBool,
        seen: Mutex<Vec<(ReaderEvent, bool)>>,
    }

    impl ReaderListener for ReentrantListener {
        fn on_reader_event(&self, event: ReaderEvent) {
            // The call back reports events too: those are not re-entered.
            if self.busy.swap(true, Ordering::SeqCst) {
                return;
            }
            let reader = self.reader.get().and_then(Weak::upgrade).unwrap();
            let finished = std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        tokio::time::timeout(Duration::from_secs(30), reader.refresh_info()).await
                    })
                    .is_ok()
                })
                .join()
                .unwrap()
            });
            self.seen.lock().unwrap().push((event, finished));
            self.busy.store(false, Ordering::SeqCst);
        }
    }

    fn vendor_reader() -> (Arc<CardReader>, Arc<ReentrantListener>) {
        let listener = Arc::new(ReentrantListener::default());
        let reader = CardReader::vendor(Arc::new(Vendor), listener.clone());
        listener.reader.set(Arc::downgrade(&reader)).ok().unwrap();
        (reader, listener)
    }

    /// Every event was seen, and every call back from it finished.
    #[track_caller]
    fn assert_reentered(listener: &ReentrantListener, expected: &[ReaderEvent]) {
        let seen = listener.seen.lock().unwrap().clone();
        let events: Vec<_> = seen.iter().map(|(e, _)| e.clone()).collect();
        assert_eq!(events, expected);
        for (event, finished) in seen {
            assert!(
                finished,
                "a call back into the reader from {event:?} waited: the listener was called under the reader's lock"
            );
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn low_battery() -> ReaderEvent {
        ReaderEvent::LowBattery { percent: 10 }
    }

    #[test]
    fn a_listener_may_call_the_reader_back_from_refresh_info() {
        let (reader, listener) = vendor_reader();
        block_on(reader.refresh_info()).unwrap();
        assert_reentered(&listener, &[low_battery()]);
    }

    #[test]
    fn a_listener_may_call_the_reader_back_from_take_card() {
        let (reader, listener) = vendor_reader();
        let challenge = CardChallenge {
            payment_id: format!("pay_{}", "0123456789abcdef".repeat(2)),
            device_id: "till-1".into(),
            amount: Money {
                minor_units: 1_000,
                currency: "USD".into(),
            },
            nonce: vec![7; 16],
        };
        // The serial is asked first (never paired on this object).
        block_on(reader.take_card(challenge, vec![EntryMode::Chip], true)).unwrap();
        assert_reentered(&listener, &[low_battery()]);
    }

    /// A simulated reader out of range: `refreshInfo` fails and reports
    /// `Disconnected`.
    #[test]
    fn a_listener_may_call_the_reader_back_from_a_failure() {
        let sim = SimulatedReader::new("Chipper 2X BT".into(), "SN-1".into(), 80, vec![5; 32], 185)
            .unwrap();
        let listener = Arc::new(ReentrantListener::default());
        let reader = block_on(sim.connect(listener.clone())).unwrap();
        listener.reader.set(Arc::downgrade(&reader)).ok().unwrap();
        sim.set_in_range(false);
        assert!(block_on(reader.refresh_info()).is_err());
        assert_reentered(&listener, &[ReaderEvent::Disconnected]);
    }

    /// Keeps the key and the anchors in memory.
    #[derive(Default)]
    struct Keys(Mutex<HashMap<String, Vec<u8>>>);

    impl KeyProvider for Keys {
        fn key_encryption_key(&self) -> Result<KeyMaterial, KeyProviderError> {
            Ok(KeyMaterial {
                key_id: "test".into(),
                key: vec![7; 32],
            })
        }

        fn save_anchor(&self, store_id: String, anchor: Vec<u8>) -> Result<(), KeyProviderError> {
            self.0.lock().unwrap().insert(store_id, anchor);
            Ok(())
        }

        fn load_anchor(&self, store_id: String) -> Result<Option<Vec<u8>>, KeyProviderError> {
            Ok(self.0.lock().unwrap().get(&store_id).cloned())
        }
    }

    #[test]
    fn a_listener_may_call_the_reader_back_from_pair() {
        let dir = std::env::temp_dir().join(format!(
            "pos-ffi-reentrant-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let config = EngineConfig {
            data_dir: dir.to_string_lossy().into_owned(),
            device_id: "till-1".into(),
            currency: "USD".into(),
            max_in_flight: None,
            automatic_forwarding: Some(false),
            compact_every: None,
            account: None,
            settled_in_memory: None,
            audit_in_memory: None,
        };
        let engine = PosEngine::with_test_clock(
            config,
            Arc::new(Keys::default()),
            TestClock::new(1_800_000_000_000),
        )
        .unwrap();
        let (reader, listener) = vendor_reader();
        block_on(async {
            // A new reader is remembered only online.
            engine.report_network(true).await.unwrap();
            engine.report_probe(ProbeOutcome::Healthy).await.unwrap();
            engine.report_probe(ProbeOutcome::Healthy).await.unwrap();
            reader.pair(Arc::clone(&engine)).await.unwrap();
        });
        let info = ReaderInfo {
            model: "Chipper 2X BT".into(),
            serial: "SN-1".into(),
            firmware: "1.0".into(),
            battery_percent: 10,
        };
        assert_reentered(&listener, &[ReaderEvent::Paired { info }, low_battery()]);
        engine.close();
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
