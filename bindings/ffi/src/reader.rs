//! The card reader for Swift and Kotlin (issue 6, first part): the
//! simulated reader of `pos-reader`, spoken to over the reader profile's
//! bytes, so apps develop and test without hardware (B14). The btleplug
//! transport, the foreign transport and the foreign card-reader traits are
//! not built yet.

use std::sync::{Arc, Mutex};

use pos_reader::client::{ReaderClient, ReaderError as CoreReaderError};
use pos_reader::link::{ExternalTransport, LinkControl, LinkError, MemoryLink};
use pos_reader::sim::{Presented, SimReader, SimReaderConfig};

use crate::engine::runtime;
use crate::error::PosError;
use crate::types::{CardNetwork, CardRead, EntryMode, Money};

/// Why a reader operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ReaderError {
    #[error("the reader is disconnected")]
    Disconnected,
    #[error("the reader did not answer in time")]
    Timeout,
    #[error("the reader failed the pairing challenge")]
    PairingFailed,
    #[error("a new reader can be paired only while online")]
    NewReaderOffline,
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
            CoreReaderError::PairingFailed => ReaderError::PairingFailed,
            CoreReaderError::NewReaderOffline => ReaderError::NewReaderOffline,
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

/// A reader event for the app's status line.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ReaderEvent {
    Paired {
        info: ReaderInfo,
    },
    Disconnected,
    /// Back in range; `resent` messages were sent again.
    Reconnected {
        resent: u64,
    },
}

/// Implemented in Swift or Kotlin; called on the caller's task.
#[uniffi::export(with_foreign)]
pub trait ReaderListener: Send + Sync {
    fn on_reader_event(&self, event: ReaderEvent);
}

fn key32(what: &str, b: &[u8]) -> Result<[u8; 32], ReaderError> {
    <[u8; 32]>::try_from(b).map_err(|_| ReaderError::InvalidInput {
        detail: format!("{what} must be 32 bytes"),
    })
}

/// A simulated reader on an in-memory link (MTU as given).
#[derive(uniffi::Object)]
pub struct SimulatedReader {
    sim: SimReader,
    phone_end: Mutex<Option<MemoryLink>>,
    control: LinkControl,
}

impl std::fmt::Debug for SimulatedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedReader")
    }
}

#[pos_ffi_macros::export]
impl SimulatedReader {
    /// `reader_key` is what pairing proves; `processor_key` the processor's
    /// X25519 public key card data is sealed to (32 bytes each).
    #[uniffi::constructor]
    pub fn new(
        model: String,
        serial: String,
        battery_percent: u8,
        reader_key: Vec<u8>,
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
        let sim = SimReader::start(
            SimReaderConfig {
                model,
                serial,
                firmware: "sim-1.0".into(),
                battery_percent: battery_percent.min(100),
                reader_key: key32("reader_key", &reader_key)?,
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
        Ok(Arc::new(CardReader {
            client: tokio::sync::Mutex::new(Client::Simulated(client, self.control.clone())),
            listener,
        }))
    }
}

/// The phone side over either link.
enum Client {
    Simulated(ReaderClient<MemoryLink>, LinkControl),
    App(ReaderClient<Arc<ExternalTransport>>, Arc<ExternalTransport>),
}

impl Client {
    fn connected(&self) -> bool {
        match self {
            Client::Simulated(_, c) => c.is_connected(),
            Client::App(_, t) => t.is_connected(),
        }
    }
}

/// Runs `$body` with `$c` bound to the client, whatever its link.
macro_rules! with_client {
    ($client:expr, $c:ident => $body:expr) => {
        match $client {
            Client::Simulated($c, _) => $body,
            Client::App($c, _) => $body,
        }
    };
}

/// A connected card reader.
#[derive(uniffi::Object)]
pub struct CardReader {
    client: tokio::sync::Mutex<Client>,
    listener: Arc<dyn ReaderListener>,
}

impl std::fmt::Debug for CardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardReader")
    }
}

impl CardReader {
    fn note_error(&self, e: &ReaderError, connected: bool) {
        if matches!(e, ReaderError::Disconnected | ReaderError::Timeout) || !connected {
            self.listener.on_reader_event(ReaderEvent::Disconnected);
        }
    }
}

#[pos_ffi_macros::export]
impl CardReader {
    /// Pairs by challenge-response; a new reader only `online`, one whose
    /// serial is in `remembered` also offline.
    pub async fn pair(
        &self,
        reader_key: Vec<u8>,
        online: bool,
        remembered: Vec<String>,
    ) -> Result<ReaderInfo, ReaderError> {
        let key = key32("reader_key", &reader_key)?;
        let mut client = self.client.lock().await;
        let result = with_client!(&mut *client, c => c.pair(&key, online, &remembered).await);
        let info = result
            .map_err(ReaderError::from)
            .inspect_err(|e| self.note_error(e, client.connected()))?;
        let info = ReaderInfo {
            model: info.model,
            serial: info.serial,
            firmware: info.firmware,
            battery_percent: info.battery_percent,
        };
        self.listener
            .on_reader_event(ReaderEvent::Paired { info: info.clone() });
        Ok(info)
    }

    /// Asks for a card: the summary, the keyed fingerprint and the card data
    /// sealed for the processor, ready for `confirmCardPayment`.
    pub async fn take_card(
        &self,
        amount: Money,
        entry_modes: Vec<EntryMode>,
        offline: bool,
    ) -> Result<CardRead, ReaderError> {
        let amount: pos_core::money::Money =
            amount
                .try_into()
                .map_err(|e: PosError| ReaderError::InvalidInput {
                    detail: e.to_string(),
                })?;
        let modes: Vec<_> = entry_modes.into_iter().map(Into::into).collect();
        let mut client = self.client.lock().await;
        let result = with_client!(&mut *client, c => c.take_card(amount, &modes, offline).await);
        let card = result
            .map_err(ReaderError::from)
            .inspect_err(|e| self.note_error(e, client.connected()))?;
        Ok(card.into())
    }

    /// Waits for the card of the payment in progress (after `reconnect`).
    pub async fn await_card(&self) -> Result<CardRead, ReaderError> {
        let mut client = self.client.lock().await;
        let result = with_client!(&mut *client, c => {
            let model = c.model().unwrap_or_default().to_owned();
            c.await_card(model).await
        });
        let card = result
            .map_err(ReaderError::from)
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
        };
        self.listener
            .on_reader_event(ReaderEvent::Reconnected { resent });
        resent
    }
}

/// Implemented by the app over its own Bluetooth stack (CoreBluetooth,
/// Android's BluetoothGatt) to carry the reader profile without btleplug.
#[uniffi::export(with_foreign)]
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
        Ok(Arc::new(CardReader {
            client: tokio::sync::Mutex::new(Client::App(client, Arc::clone(&self.transport))),
            listener,
        }))
    }
}

/// Raw frames to and from the simulated reader, to test an app's
/// `ReaderLink` without hardware.
#[derive(uniffi::Object)]
pub struct SimulatedRadio {
    link: MemoryLink,
}

impl std::fmt::Debug for SimulatedRadio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedRadio")
    }
}

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
