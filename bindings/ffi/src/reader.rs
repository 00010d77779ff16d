//! The card reader for Swift and Kotlin: the reader profile over the
//! simulated reader's in-memory radio (so apps develop and test without
//! hardware, B14) or over the app's own Bluetooth stack (`ReaderLink` +
//! `AppReaderTransport`), and a whole vendor reader SDK behind the
//! `VendorCardReader` foreign trait. Automatic reconnection with back-off
//! (`CardReader.reconnectAutomatically`) follows the simulated radio; the
//! btleplug transport is in `pos-reader` (feature `ble`), not in this build.

use std::sync::{Arc, Mutex};

use pos_reader::client::{ReaderClient, ReaderError as CoreReaderError};
use pos_reader::link::{ExternalTransport, LinkControl, LinkError, MemoryLink};
use pos_reader::reconnect::{supervise, ReconnectPolicy, Supervision};
#[cfg(feature = "simulator")]
use pos_reader::sim::{Presented, SimReader, SimReaderConfig};

use crate::error::PosError;
use crate::runtime::runtime;
#[cfg(feature = "simulator")]
use crate::types::CardNetwork;
use crate::types::{CardRead, EntryMode, Money};

/// Why a reader operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ReaderError {
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
    /// lists (`OfflinePolicy.readerAuthorities`).
    #[error("the reader's certificate is not from a trusted reader authority")]
    UntrustedReader,
    /// A remembered reader presented another identity key than the one
    /// paired: refused until it is forgotten and paired again online.
    #[error("remembered reader {serial} presented another identity key")]
    KeyChanged { serial: String },
    /// `takeCard` (or `info`) before `pair`: every connection is
    /// authenticated first.
    #[error("the reader is not authenticated: pair first")]
    NotPaired,
    /// The engine `pair` remembers the reader in could not do it (closed,
    /// a store error): the reader is not remembered.
    #[error("the engine could not remember the reader: {detail}")]
    Engine { detail: String },
    #[error("the reader refused: {code}")]
    Refused { code: String },
    #[error("bad data from the reader: {detail}")]
    Protocol { detail: String },
    #[error("invalid argument: {detail}")]
    InvalidInput { detail: String },
}

impl From<CoreReaderError> for ReaderError {
    fn from(e: CoreReaderError) -> Self {
        use pos_reader::link::LinkError as L;
        match e {
            CoreReaderError::Link(L::Disconnected) => ReaderError::Disconnected,
            CoreReaderError::Link(L::Timeout) => ReaderError::Timeout,
            CoreReaderError::Handshake(e) => ReaderError::PairingFailed {
                detail: e.to_string(),
            },
            CoreReaderError::NewReaderOffline => ReaderError::NewReaderOffline,
            CoreReaderError::UntrustedReader => ReaderError::UntrustedReader,
            CoreReaderError::KeyChanged { serial } => ReaderError::KeyChanged { serial },
            CoreReaderError::NotAuthenticated => ReaderError::NotPaired,
            CoreReaderError::Refused { code } => ReaderError::Refused { code },
            other => ReaderError::Protocol {
                detail: other.to_string(),
            },
        }
    }
}

/// What the reader says about itself.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReaderInfo {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub battery_percent: u8,
}

/// Below this charge the app should ask the cashier to charge the reader.
pub const LOW_BATTERY_PERCENT: u8 = 20;

/// A reader event for the app's status line.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ReaderEvent {
    Paired {
        info: ReaderInfo,
    },
    Disconnected,
    /// Automatic reconnection: attempt `attempt` starts now.
    Reconnecting {
        attempt: u32,
    },
    /// Back in range; `resent` messages were sent again (counted by a
    /// manual `reconnect()`; automatic reconnection reports 0, the count
    /// being held by a `takeCard` in progress).
    Reconnected {
        resent: u64,
    },
    /// Automatic reconnection gave up after `attempts`; `reconnect()` by
    /// hand, and the watch starts again.
    ReconnectFailed {
        attempts: u32,
    },
    /// The reader reported a charge under 20 %.
    LowBattery {
        percent: u8,
    },
}

/// How automatic reconnection retries: the first attempt at once, then
/// `first_delay_ms` doubling up to `max_delay_ms`, `max_attempts` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct ReconnectSettings {
    pub first_delay_ms: u32,
    pub max_delay_ms: u32,
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

/// A reader seen while scanning (filtered by the profile's service, and
/// again on our side).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DiscoveredReader {
    /// Pass to `connect` of the scanner that found it.
    pub id: String,
    pub name: Option<String>,
    /// Signal strength, dBm.
    pub rssi: Option<i16>,
}

/// Implemented in Swift or Kotlin; called on the caller's task.
#[uniffi::export(foreign)]
pub trait ReaderListener: Send + Sync {
    fn on_reader_event(&self, event: ReaderEvent);
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
            Client::Simulated(client, self.control.clone()),
            listener,
        ))
    }
}

/// The phone side over a link, or a vendor SDK.
enum Client {
    // Built only from `SimulatedReader` (feature `simulator`).
    #[cfg_attr(not(feature = "simulator"), allow(dead_code))]
    Simulated(ReaderClient<MemoryLink>, LinkControl),
    App(ReaderClient<Arc<ExternalTransport>>, Arc<ExternalTransport>),
    #[cfg(feature = "ble")]
    Ble(
        ReaderClient<Arc<pos_reader::ble::BleTransport>>,
        Arc<pos_reader::ble::BleTransport>,
    ),
    Vendor(Arc<dyn VendorCardReader>),
}

impl Client {
    fn connected(&self) -> bool {
        match self {
            Client::Simulated(_, c) => c.is_connected(),
            Client::App(_, t) => t.is_connected(),
            #[cfg(feature = "ble")]
            Client::Ble(_, t) => t.is_connected(),
            Client::Vendor(_) => true,
        }
    }
}

/// Runs `$body` with `$c` bound to the profile client, whatever its link;
/// `$vendor` for a vendor reader.
macro_rules! with_client {
    ($client:expr, $c:ident => $body:expr, $v:ident => $vendor:expr) => {
        match $client {
            Client::Simulated($c, _) => $body,
            Client::App($c, _) => $body,
            #[cfg(feature = "ble")]
            Client::Ble($c, _) => $body,
            Client::Vendor($v) => $vendor,
        }
    };
}

/// What automatic reconnection can bring back.
#[derive(Clone)]
enum Radio {
    Simulated(LinkControl),
    #[cfg(feature = "ble")]
    Ble(Arc<pos_reader::ble::BleTransport>),
}

/// Runs a blocking vendor SDK call on a worker thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReaderError> + Send + 'static,
) -> Result<T, ReaderError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ReaderError::Protocol {
            detail: format!("the vendor reader failed: {e}"),
        })
    })
}

fn info_from(info: pos_reader::client::ReaderInfo) -> ReaderInfo {
    ReaderInfo {
        model: info.model,
        serial: info.serial,
        firmware: info.firmware,
        battery_percent: info.battery_percent,
    }
}

/// Bad data from a vendor SDK is a typed error, never stored.
fn checked_info(info: ReaderInfo) -> Result<ReaderInfo, ReaderError> {
    let ok = |s: &str| !s.trim().is_empty() && s.len() <= 64;
    if !ok(&info.model) || !ok(&info.serial) || info.firmware.len() > 64 {
        return Err(ReaderError::Protocol {
            detail: "reader info: model and serial must be 1-64 characters".into(),
        });
    }
    Ok(ReaderInfo {
        battery_percent: info.battery_percent.min(100),
        ..info
    })
}

/// A connected card reader.
#[derive(uniffi::Object)]
pub struct CardReader {
    client: tokio::sync::Mutex<Client>,
    listener: Arc<dyn ReaderListener>,
    /// The radio automatic reconnection brings back.
    radio: Option<Radio>,
    /// A vendor reader, reachable by `cancel` while `takeCard` holds the
    /// client.
    vendor: Option<Arc<dyn VendorCardReader>>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The challenge of the payment in progress (`awaitCard` resumes it).
    challenge: Mutex<Option<pos_core::card_seal::CardChallenge>>,
    /// The secure link's count of refused messages (none for a vendor SDK).
    rejected: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
    /// The serial of the latest `info` (pairing, `refreshInfo`).
    serial: Mutex<Option<String>>,
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

impl std::fmt::Debug for CardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardReader")
    }
}

impl CardReader {
    fn new(client: Client, listener: Arc<dyn ReaderListener>) -> Arc<CardReader> {
        let radio = match &client {
            Client::Simulated(_, c) => Some(Radio::Simulated(c.clone())),
            #[cfg(feature = "ble")]
            Client::Ble(_, t) => Some(Radio::Ble(Arc::clone(t))),
            _ => None,
        };
        let vendor = match &client {
            Client::Vendor(v) => Some(Arc::clone(v)),
            _ => None,
        };
        let rejected: Option<Box<dyn Fn() -> u64 + Send + Sync>> = match &client {
            Client::Simulated(c, _) => Some(Box::new(c.rejected_counter())),
            Client::App(c, _) => Some(Box::new(c.rejected_counter())),
            #[cfg(feature = "ble")]
            Client::Ble(c, _) => Some(Box::new(c.rejected_counter())),
            Client::Vendor(_) => None,
        };
        Arc::new(CardReader {
            client: tokio::sync::Mutex::new(client),
            listener,
            radio,
            vendor,
            supervisor: Mutex::new(None),
            challenge: Mutex::new(None),
            rejected,
            serial: Mutex::new(None),
        })
    }

    fn supervised(&self) -> bool {
        self.supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn note_error(&self, e: &ReaderError, connected: bool) {
        // With automatic reconnection on, the supervisor reports the drop.
        if (matches!(e, ReaderError::Disconnected | ReaderError::Timeout) || !connected)
            && !self.supervised()
        {
            self.listener.on_reader_event(ReaderEvent::Disconnected);
        }
    }

    fn note_info(&self, info: &ReaderInfo) {
        *self.serial.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.serial.clone());
        if info.battery_percent < LOW_BATTERY_PERCENT {
            self.listener.on_reader_event(ReaderEvent::LowBattery {
                percent: info.battery_percent,
            });
        }
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
        CardReader::new(Client::Vendor(reader), listener)
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
    pub async fn pair(
        &self,
        engine: Arc<crate::engine::PosEngine>,
    ) -> Result<ReaderInfo, ReaderError> {
        let core_engine = &engine.inner;
        let engine_error = |e: pos_core::PosError| match e {
            pos_core::PosError::OnlineRequired => ReaderError::NewReaderOffline,
            pos_core::PosError::ReaderNotPaired { .. } => ReaderError::UntrustedReader,
            other => ReaderError::Engine {
                detail: other.to_string(),
            },
        };
        let mut client = self.client.lock().await;
        let info = with_client!(&mut *client,
            c => {
                let t = core_engine.reader_trust().map_err(engine_error)?;
                let trust = pos_reader::secure::LinkTrust {
                    authorities: t.authorities,
                    remembered: t.remembered,
                    online: t.online,
                };
                match c.pair(&trust).await {
                    Ok(paired) => core_engine
                        .remember_paired_reader(&paired.certificate, &paired.info.firmware)
                        .await
                        .map(|_| info_from(paired.info))
                        .map_err(engine_error),
                    Err(e) => Err(ReaderError::from(e)),
                }
            },
            v => {
                let v = Arc::clone(v);
                let info = checked_info(blocking(move || v.info()).await?)?;
                core_engine
                    .remember_reader(&info.serial, &info.model, &info.firmware)
                    .await
                    .map(|_| info)
                    .map_err(engine_error)
            }
        )
        .inspect_err(|e| self.note_error(e, client.connected()))?;
        self.listener
            .on_reader_event(ReaderEvent::Paired { info: info.clone() });
        self.note_info(&info);
        Ok(info)
    }

    /// Messages from the reader refused by the secure link (forged,
    /// replayed, reordered, from another session, or malformed) since it
    /// connected. Does not wait for a card read in progress.
    pub fn rejected_messages(&self) -> u64 {
        self.rejected.as_ref().map_or(0, |count| count())
    }

    /// Asks the reader for its model, serial, firmware and battery again (the
    /// status line); `LowBattery` when under 20 %.
    pub async fn refresh_info(&self) -> Result<ReaderInfo, ReaderError> {
        let mut client = self.client.lock().await;
        let info = with_client!(&mut *client,
            c => c.info().await.map(info_from).map_err(ReaderError::from),
            v => {
                let v = Arc::clone(v);
                checked_info(blocking(move || v.info()).await?)
            }
        )
        .inspect_err(|e| self.note_error(e, client.connected()))?;
        self.note_info(&info);
        Ok(info)
    }

    /// Watches the radio and reconnects by itself with back-off whenever it
    /// drops, reporting `Disconnected`, `Reconnecting`, `Reconnected` or
    /// `ReconnectFailed`; a payment cut by the drop goes on once the link is
    /// back. For the simulated reader (and, in a `ble` build, btleplug); an
    /// app's own Bluetooth stack or a vendor SDK reconnects by itself.
    pub fn reconnect_automatically(&self, settings: ReconnectSettings) -> Result<(), ReaderError> {
        let Some(radio) = self.radio.clone() else {
            return Err(ReaderError::InvalidInput {
                detail: "this reader's own stack reconnects (AppReaderTransport.setConnected, or the vendor SDK)".into(),
            });
        };
        if settings.max_attempts == 0 || settings.first_delay_ms > settings.max_delay_ms {
            return Err(ReaderError::InvalidInput {
                detail: "max_attempts must be at least 1 and first_delay_ms at most max_delay_ms"
                    .into(),
            });
        }
        let policy = ReconnectPolicy {
            first_delay: std::time::Duration::from_millis(u64::from(settings.first_delay_ms)),
            max_delay: std::time::Duration::from_millis(u64::from(settings.max_delay_ms)),
            max_attempts: settings.max_attempts,
        };
        let rt = runtime().map_err(|e| ReaderError::Protocol {
            detail: e.to_string(),
        })?;
        let _guard = rt.enter();
        let listener = Arc::clone(&self.listener);
        let report = move |s| {
            listener.on_reader_event(match s {
                Supervision::Disconnected => ReaderEvent::Disconnected,
                Supervision::Reconnecting { attempt } => ReaderEvent::Reconnecting { attempt },
                Supervision::Reconnected { .. } => ReaderEvent::Reconnected { resent: 0 },
                Supervision::GaveUp { attempts } => ReaderEvent::ReconnectFailed { attempts },
            })
        };
        let task = match radio {
            Radio::Simulated(control) => supervise(control, policy, report),
            #[cfg(feature = "ble")]
            Radio::Ble(t) => supervise(t, policy, report),
        };
        if let Some(old) = self
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task)
        {
            old.abort();
        }
        Ok(())
    }

    /// Asks for a card for the begun payment whose `challenge` its
    /// `PaymentDecision` carried: the summary, the keyed fingerprint, and
    /// the card data sealed for the processor and bound to the challenge,
    /// signed by the reader (a paired profile reader), ready for
    /// `confirmCardPayment`. A vendor reader gets the amount only; its read
    /// carries the serial the vendor reported and no signature.
    pub async fn take_card(
        &self,
        challenge: crate::checkout::CardChallenge,
        entry_modes: Vec<EntryMode>,
        offline: bool,
    ) -> Result<CardRead, ReaderError> {
        let challenge: pos_core::card_seal::CardChallenge =
            challenge
                .try_into()
                .map_err(|e: PosError| ReaderError::InvalidInput {
                    detail: e.to_string(),
                })?;
        let amount = challenge.amount;
        *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = Some(challenge.clone());
        let mut client = self.client.lock().await;
        let card = with_client!(&mut *client,
            c => {
                let modes: Vec<_> = entry_modes.into_iter().map(Into::into).collect();
                c.take_card(&challenge, &modes, offline).await.map_err(ReaderError::from)
            },
            v => {
                let v = Arc::clone(v);
                let allowed: Vec<pos_core::policy::EntryMode> =
                    entry_modes.iter().copied().map(Into::into).collect();
                let ffi_amount = Money::from(amount);
                // The serial the vendor reported at pairing; asked once if
                // the reader was never paired on this object.
                let known = self.serial.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let serial = match known {
                    Some(serial) => serial,
                    None => {
                        let v = Arc::clone(&v);
                        let info = checked_info(blocking(move || v.info()).await?)?;
                        self.note_info(&info);
                        info.serial
                    }
                };
                let mut card: pos_core::ledger::CardRead =
                    blocking(move || v.take_card(ffi_amount, entry_modes, offline)).await?.into();
                card.reader_serial = Some(serial);
                card.reader_signature = None;
                card.validate().map_err(|detail| ReaderError::Protocol { detail })?;
                if !allowed.contains(&card.entry_mode) {
                    return Err(ReaderError::Protocol {
                        detail: format!("the vendor reader used {}, which this payment does not allow", card.entry_mode),
                    });
                }
                Ok(card)
            }
        )
        .inspect_err(|e| self.note_error(e, client.connected()))?;
        Ok(card.into())
    }

    /// Cancels the payment in progress on a vendor reader, while its
    /// `takeCard` waits (the profile's readers are cancelled by dropping the
    /// `takeCard` call).
    pub fn cancel(&self) {
        if let Some(v) = &self.vendor {
            v.cancel();
        }
    }

    /// Waits for the card of the payment in progress (after `reconnect`).
    pub async fn await_card(&self) -> Result<CardRead, ReaderError> {
        let challenge = self
            .challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| ReaderError::InvalidInput {
                detail: "no payment in progress: takeCard first".into(),
            })?;
        let mut client = self.client.lock().await;
        let card = with_client!(&mut *client,
            c => c.await_card(&challenge).await.map_err(ReaderError::from),
            _v => Err(ReaderError::InvalidInput {
                detail: "a vendor reader has no payment to resume: takeCard again".into(),
            })
        )
        .inspect_err(|e| self.note_error(e, client.connected()))?;
        Ok(card.into())
    }

    /// The reader is back in range: both sides send again what the other
    /// did not acknowledge.
    pub async fn reconnect(&self) -> u64 {
        let resent = match &*self.client.lock().await {
            Client::Simulated(c, _) => c.reconnect() as u64,
            Client::App(c, t) => {
                let pending = c.unacked() as u64;
                t.set_connected(true);
                pending
            }
            #[cfg(feature = "ble")]
            Client::Ble(c, t) => {
                let pending = c.unacked() as u64;
                if !t.is_connected() {
                    // A failed attempt is seen as the absence of the
                    // `Reconnected` event; the next call fails `Disconnected`.
                    if t.reconnect().await.is_err() {
                        return 0;
                    }
                }
                pending
            }
            Client::Vendor(_) => 0,
        };
        self.listener
            .on_reader_event(ReaderEvent::Reconnected { resent });
        resent
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
            Client::App(client, Arc::clone(&self.transport)),
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

    use super::{CardReader, Client, DiscoveredReader, ReaderError, ReaderListener};

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
            Ok(CardReader::new(Client::Ble(client, transport), listener))
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
