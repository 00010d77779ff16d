//! The simulated reader: an in-process peripheral that speaks the profile's
//! exact bytes over a [`MemoryLink`], so apps, tests and the demo run
//! without hardware (B14). It seals card data to the processor's key, so the
//! phone side never sees a card number.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use pos_core::card_seal::{seal, CardSecret, ProcessorKey};
use pos_core::policy::{EntryMode, Network};
use ring::hmac;
use tokio::sync::mpsc;

use crate::link::{Channel, MemoryLink};
use crate::message::{self, pairing_input, Reply, Request, SUPPORTED_VERSIONS};

/// How the simulated reader presents itself.
#[derive(Clone)]
pub struct SimReaderConfig {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub battery_percent: u8,
    /// The key pairing proves (provisioned in the reader and known to the merchant).
    pub reader_key: [u8; 32],
    /// The processor's key card data is sealed to.
    pub processor: ProcessorKey,
    /// Key of the card fingerprint (HMAC-SHA256 of the card number).
    pub fingerprint_key: [u8; 32],
}

impl std::fmt::Debug for SimReaderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimReaderConfig")
            .field("model", &self.model)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// A card the customer presents.
#[derive(Clone)]
pub struct Presented {
    pub secret: CardSecret,
    pub network: Network,
    pub entry_mode: EntryMode,
}

/// Handle to present cards to a running simulated reader and to change
/// its condition while it runs.
#[derive(Debug, Clone)]
pub struct SimReader {
    cards: mpsc::UnboundedSender<Presented>,
    live: Arc<Live>,
}

/// Below this charge the simulated reader refuses to start a payment
/// (`battery_critical`), as real readers do.
pub const CRITICAL_BATTERY_PERCENT: u8 = 5;

/// What can change while the reader runs.
#[derive(Debug)]
struct Live {
    battery_percent: AtomicU8,
    /// Added before each reply the reader sends.
    latency_ms: AtomicU64,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("network", &self.network)
            .field("entry_mode", &self.entry_mode)
            .finish_non_exhaustive()
    }
}

impl SimReader {
    /// Starts the reader on its end of the link (a tokio task).
    pub fn start(config: SimReaderConfig, link: MemoryLink) -> SimReader {
        let (tx, rx) = mpsc::unbounded_channel();
        let live = Arc::new(Live {
            battery_percent: AtomicU8::new(config.battery_percent.min(100)),
            latency_ms: AtomicU64::new(0),
        });
        tokio::spawn(run(
            config,
            Arc::clone(&live),
            Arc::new(Channel::new(Arc::new(link))),
            rx,
        ));
        SimReader { cards: tx, live }
    }

    /// The battery drains or is charged (reported by the next info request;
    /// under [`CRITICAL_BATTERY_PERCENT`] payments are refused).
    pub fn set_battery(&self, percent: u8) {
        self.live
            .battery_percent
            .store(percent.min(100), Ordering::SeqCst);
    }

    /// Delay before each reply (a slow reader, a busy radio).
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.live.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// The customer presents a card (taken by the next payment).
    pub fn present(&self, card: Presented) {
        let _ = self.cards.send(card);
    }
}

async fn run(
    config: SimReaderConfig,
    live: Arc<Live>,
    chan: Arc<Channel>,
    mut cards: mpsc::UnboundedReceiver<Presented>,
) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &config.reader_key);
    let fp_key = hmac::Key::new(hmac::HMAC_SHA256, &config.fingerprint_key);
    while let Some(msg) = chan.recv(0).await {
        let Ok(bytes) = msg else { continue };
        let reply = match message::decode::<Request>(&bytes) {
            Err(_) => Reply::Error {
                code: "bad_request".into(),
                message: "malformed request".into(),
            },
            Ok(Request::Hello { versions }) => match versions
                .iter()
                .rev()
                .find(|v| SUPPORTED_VERSIONS.contains(v))
            {
                Some(v) => Reply::HelloAck { version: *v },
                None => Reply::Error {
                    code: "version".into(),
                    message: "no common profile version".into(),
                },
            },
            Ok(Request::GetInfo) => Reply::Info {
                model: config.model.clone(),
                serial: config.serial.clone(),
                firmware: config.firmware.clone(),
                battery_percent: live.battery_percent.load(Ordering::SeqCst),
            },
            Ok(Request::PairChallenge { nonce }) => {
                let tag = hmac::sign(&key, &pairing_input(&nonce, &config.serial));
                Reply::PairResponse {
                    mac: hex(tag.as_ref()),
                }
            }
            Ok(Request::StartPayment { .. })
                if live.battery_percent.load(Ordering::SeqCst) < CRITICAL_BATTERY_PERCENT =>
            {
                Reply::Error {
                    code: "battery_critical".into(),
                    message: "charge the reader to take payments".into(),
                }
            }
            Ok(Request::StartPayment { entry_modes, .. }) => {
                let Some(card) = cards.recv().await else {
                    break;
                };
                if !entry_modes.contains(&card.entry_mode) {
                    Reply::Error {
                        code: "entry_mode_not_allowed".into(),
                        message: format!("{} is not allowed for this payment", card.entry_mode),
                    }
                } else {
                    let _ = chan.send(message::encode(&Reply::CardPresented {
                        entry_mode: card.entry_mode,
                    }));
                    match seal(&card.secret, &config.processor) {
                        Ok(sealed) => {
                            let fp = hmac::sign(&fp_key, card.secret.pan.as_bytes());
                            let pan = &card.secret.pan;
                            Reply::CardResult {
                                entry_mode: card.entry_mode,
                                network: card.network,
                                last4: pan[pan.len().saturating_sub(4)..].to_owned(),
                                fingerprint: hex(&fp.as_ref()[..16]),
                                sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
                            }
                        }
                        Err(_) => Reply::Error {
                            code: "seal".into(),
                            message: "card data could not be sealed".into(),
                        },
                    }
                }
            }
            Ok(Request::Cancel) => Reply::Cancelled,
            Ok(Request::Display { .. }) => continue,
        };
        let latency = live.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        let _ = chan.send(message::encode(&reply));
    }
}

use crate::client::hex;
