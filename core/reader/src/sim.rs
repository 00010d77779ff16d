//! The simulated reader: an in-process peripheral that speaks the profile's
//! exact bytes over a [`MemoryLink`], so apps, tests and the demo run
//! without hardware (B14). It answers the handshake with its identity key,
//! seals card data to the processor's key, bound to the payment (sealed card
//! data version 2), and signs it, so the phone side never sees a card number
//! and the engine can check where and for what the card was read.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use pos_rules::card_seal::{seal, CardBinding, CardSecret, ProcessorKey, PHONE_NONCE_LEN};
use pos_rules::policy::{EntryMode, Network};
use pos_rules::reader_trust::{
    simulator_authority, simulator_reader_seed, ReaderIdentity, TrustError, CARD_CONTEXT,
};
use ring::hmac;
use tokio::sync::mpsc;

use crate::link::{Channel, Inbound, MemoryLink};
use crate::message::{self, Reply, Request, SUPPORTED_VERSIONS};
use crate::secure::{self, ReaderHandshake};

/// How the simulated reader presents itself.
#[derive(Clone)]
pub struct SimReaderConfig {
    /// The model and serial the reader reports in `info` and binds card
    /// reads to; the phone believes its certificate's.
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub battery_percent: u8,
    /// The reader's identity key and certificate: proved in the handshake,
    /// signs every card read.
    pub identity: Arc<ReaderIdentity>,
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

/// The identity of the simulated reader `serial` of `model`: its key from
/// [`simulator_reader_seed`], certified by [`simulator_authority`] (the same
/// key on every start).
pub fn simulated_identity(serial: &str, model: &str) -> Result<Arc<ReaderIdentity>, TrustError> {
    ReaderIdentity::provision(
        &simulator_reader_seed(serial),
        &simulator_authority(),
        serial,
        model,
    )
    .map(Arc::new)
}

/// Where a simulated reader's transaction counter starts: the wall clock in
/// microseconds. A real reader keeps its counter in flash; the simulated
/// one keeps nothing, and a processor refuses a counter it has seen
/// (`replayed`), so a simulated reader started again (an app restart
/// against the same processor simulator) must not begin at 1 again.
pub fn first_counter() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .max(1)
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
    chan: Arc<Channel>,
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
    /// The transaction counter of the next card read.
    counter: AtomicU64,
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
            counter: AtomicU64::new(first_counter()),
        });
        let chan = Arc::new(Channel::new(Arc::new(link)));
        tokio::spawn(run(config, Arc::clone(&live), Arc::clone(&chan), rx));
        SimReader {
            cards: tx,
            live,
            chan,
        }
    }

    /// The transaction counter the next card read carries (it only grows;
    /// see [`first_counter`] for where it starts).
    pub fn set_next_counter(&self, next: u64) {
        self.live.counter.store(next, Ordering::SeqCst);
    }

    /// Frames, messages and handshake messages the reader refused.
    pub fn rejected(&self) -> u64 {
        self.chan.rejected()
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

fn error(code: &str, message: &str) -> Reply {
    Reply::Error {
        code: code.into(),
        message: message.into(),
    }
}

/// Answers a handshake message: M1 with M2 (the session waits for M3), M3
/// by installing the session. An M1 once a session is confirmed on this
/// connection is refused silently; anything else is refused and counted,
/// with a plain error.
fn handshake(
    config: &SimReaderConfig,
    chan: &Channel,
    pending: &mut Option<ReaderHandshake>,
    m: &[u8],
) {
    let done = match m.first() {
        // A confirmed session is never replaced on its connection: an
        // injected M1 could otherwise take the reader over mid-sale and
        // have the customer's tap read for the injector's payment. The
        // phone re-keys by connecting again. Refused silently (counted).
        Some(&secure::M1) if chan.is_secure() => {
            chan.note_rejected();
            return;
        }
        Some(&secure::M1) => ReaderHandshake::respond(&config.identity, m).and_then(|(hs, m2)| {
            *pending = Some(hs);
            chan.send_handshake(&m2)
                .map_err(|_| secure::SecureError::Handshake)
        }),
        Some(&secure::M3) => match pending.take() {
            Some(hs) => hs.finish(m).map(|session| chan.install_session(session)),
            None => Err(secure::SecureError::UnexpectedHandshake),
        },
        _ => Err(secure::SecureError::Malformed),
    };
    if done.is_err() {
        chan.note_rejected();
        let _ = chan.send(message::encode(&error(
            "handshake_failed",
            "the handshake message was refused",
        )));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn run(
    config: SimReaderConfig,
    live: Arc<Live>,
    chan: Arc<Channel>,
    mut cards: mpsc::UnboundedReceiver<Presented>,
) {
    let fp_key = hmac::Key::new(hmac::HMAC_SHA256, &config.fingerprint_key);
    let mut pending = None;
    while let Some(msg) = chan.recv().await {
        // Refused frames were counted by the channel.
        let bytes = match msg {
            Err(_) => continue,
            Ok(Inbound::Handshake(m)) => {
                handshake(&config, &chan, &mut pending, &m);
                continue;
            }
            Ok(Inbound::Message(bytes)) => bytes,
        };
        let request = message::decode::<Request>(&bytes);
        let reply = match request {
            Err(_) => error("bad_request", "malformed request"),
            Ok(Request::Hello { versions }) => match versions
                .iter()
                .rev()
                .find(|v| SUPPORTED_VERSIONS.contains(v))
            {
                Some(v) => Reply::HelloAck { version: *v },
                None => error("version", "no common profile version"),
            },
            // Only the version is negotiated in the clear.
            Ok(_) if !chan.is_secure() => error(
                "handshake_required",
                "run the handshake before any other request",
            ),
            Ok(Request::GetInfo) => Reply::Info {
                model: config.model.clone(),
                serial: config.serial.clone(),
                firmware: config.firmware.clone(),
                battery_percent: live.battery_percent.load(Ordering::SeqCst),
            },
            Ok(Request::StartPayment { .. })
                if live.battery_percent.load(Ordering::SeqCst) < CRITICAL_BATTERY_PERCENT =>
            {
                error("battery_critical", "charge the reader to take payments")
            }
            Ok(Request::StartPayment {
                payment_id,
                device_id,
                amount_minor,
                currency,
                nonce,
                entry_modes,
                ..
            }) => {
                let Some(phone_nonce) = pos_rules::crypto::unhex(&nonce)
                    .and_then(|n| <[u8; PHONE_NONCE_LEN]>::try_from(n).ok())
                else {
                    let _ = chan.send(message::encode(&error("bad_request", "bad nonce")));
                    continue;
                };
                let Some(card) = cards.recv().await else {
                    break;
                };
                if !entry_modes.contains(&card.entry_mode) {
                    error(
                        "entry_mode_not_allowed",
                        &format!("{} is not allowed for this payment", card.entry_mode),
                    )
                } else {
                    let _ = chan.send(message::encode(&Reply::CardPresented {
                        entry_mode: card.entry_mode,
                    }));
                    let pan = &card.secret.pan;
                    let last4 = pan[pan.len().saturating_sub(4)..].to_owned();
                    let fingerprint =
                        hex(&hmac::sign(&fp_key, card.secret.pan.as_bytes()).as_ref()[..16]);
                    let binding = CardBinding {
                        payment_id,
                        device_id,
                        amount_minor,
                        currency,
                        reader_serial: config.serial.clone(),
                        counter: live.counter.fetch_add(1, Ordering::SeqCst),
                        phone_nonce,
                        read_at_ms: now_ms(),
                        entry_mode: card.entry_mode,
                        network: card.network,
                        last4: last4.clone(),
                        fingerprint: fingerprint.clone(),
                    };
                    match seal(&binding, &card.secret, &config.processor) {
                        Ok(sealed) => {
                            let b64 = base64::engine::general_purpose::STANDARD;
                            let signature = config.identity.sign(CARD_CONTEXT, &sealed);
                            Reply::CardResult {
                                entry_mode: card.entry_mode,
                                network: card.network,
                                last4,
                                fingerprint,
                                sealed: b64.encode(sealed),
                                serial: config.serial.clone(),
                                signature: b64.encode(signature),
                            }
                        }
                        Err(_) => error("seal", "card data could not be sealed"),
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

use pos_rules::crypto::hex;
