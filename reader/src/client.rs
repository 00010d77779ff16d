//! The phone side: version negotiation, reader information, pairing by
//! challenge-response, and taking a card.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use pos_core::ledger::CardRead;
use pos_core::money::Money;
use pos_core::policy::EntryMode;
use ring::hmac;
use ring::rand::SecureRandom;

use crate::link::{Channel, LinkError, MemoryLink, Transport};
use crate::message::{self, pairing_input, Reply, Request, SUPPORTED_VERSIONS};

/// What the reader says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub battery_percent: u8,
}

/// Why a reader operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReaderError {
    #[error("link: {0}")]
    Link(#[from] LinkError),
    #[error("the reader speaks no common profile version")]
    Version,
    #[error("the reader failed the pairing challenge (wrong reader key)")]
    PairingFailed,
    #[error("a new reader can be paired only while online; remembered readers reconnect offline")]
    NewReaderOffline,
    #[error("the reader refused: {code}")]
    Refused { code: String },
    #[error("unexpected answer from the reader")]
    Unexpected,
}

/// A connected reader.
#[derive(Debug)]
pub struct ReaderClient<T: Transport = MemoryLink> {
    chan: Arc<Channel<T>>,
    info: Option<ReaderInfo>,
    timeout: Duration,
}

impl<T: Transport> ReaderClient<T> {
    /// Connects over `link` and negotiates the profile version.
    pub async fn connect(link: T) -> Result<ReaderClient<T>, ReaderError> {
        let c = ReaderClient {
            chan: Arc::new(Channel::new(Arc::new(link))),
            info: None,
            timeout: Duration::from_secs(10),
        };
        match c
            .call(&Request::Hello {
                versions: SUPPORTED_VERSIONS.to_vec(),
            })
            .await?
        {
            Reply::HelloAck { version } if SUPPORTED_VERSIONS.contains(&version) => Ok(c),
            Reply::Error { .. } | Reply::HelloAck { .. } => Err(ReaderError::Version),
            _ => Err(ReaderError::Unexpected),
        }
    }

    async fn next_reply(&self) -> Result<Reply, ReaderError> {
        let got = tokio::time::timeout(self.timeout, self.chan.recv(0))
            .await
            .map_err(|_| LinkError::Timeout)?;
        match got {
            None => Err(LinkError::Disconnected.into()),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(bytes)) => message::decode(&bytes).map_err(|_| LinkError::Message.into()),
        }
    }

    async fn call(&self, req: &Request) -> Result<Reply, ReaderError> {
        self.chan.send(message::encode(req))?;
        self.next_reply().await
    }

    /// Reader model, serial, firmware, battery.
    pub async fn info(&mut self) -> Result<ReaderInfo, ReaderError> {
        match self.call(&Request::GetInfo).await? {
            Reply::Info {
                model,
                serial,
                firmware,
                battery_percent,
            } => {
                let i = ReaderInfo {
                    model,
                    serial,
                    firmware,
                    battery_percent,
                };
                self.info = Some(i.clone());
                Ok(i)
            }
            _ => Err(ReaderError::Unexpected),
        }
    }

    /// Pairs: the reader must prove it holds `reader_key`. A reader whose
    /// serial is not in `remembered` (a new one) is paired only `online`.
    pub async fn pair(
        &mut self,
        reader_key: &[u8; 32],
        online: bool,
        remembered: &[String],
    ) -> Result<ReaderInfo, ReaderError> {
        let info = self.info().await?;
        if !online && !remembered.contains(&info.serial) {
            return Err(ReaderError::NewReaderOffline);
        }
        let mut nonce = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| ReaderError::Unexpected)?;
        let nonce = hex(&nonce);
        let Reply::PairResponse { mac } = self
            .call(&Request::PairChallenge {
                nonce: nonce.clone(),
            })
            .await?
        else {
            return Err(ReaderError::Unexpected);
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, reader_key);
        let mac_bytes = unhex(&mac).ok_or(ReaderError::PairingFailed)?;
        hmac::verify(&key, &pairing_input(&nonce, &info.serial), &mac_bytes)
            .map_err(|_| ReaderError::PairingFailed)?;
        Ok(info)
    }

    /// Asks the reader for a card and returns what the engine needs: the
    /// summary, the keyed fingerprint and the card data sealed for the processor.
    pub async fn take_card(
        &mut self,
        amount: Money,
        entry_modes: &[EntryMode],
        offline: bool,
    ) -> Result<CardRead, ReaderError> {
        let model = match &self.info {
            Some(i) => i.model.clone(),
            None => self.info().await?.model,
        };
        self.chan.send(message::encode(&Request::StartPayment {
            amount_minor: amount.minor_units(),
            currency: amount.currency().code().to_owned(),
            entry_modes: entry_modes.to_vec(),
            offline,
        }))?;
        self.await_card(model).await
    }

    /// Waits for the card of the payment in progress: after a disconnect
    /// and [`ReaderClient::reconnect`], the same payment goes on (its request
    /// or the reader's reply is sent again), never a second one.
    pub async fn await_card(&mut self, model: String) -> Result<CardRead, ReaderError> {
        loop {
            match self.next_reply().await? {
                Reply::CardPresented { .. } => continue,
                Reply::CardResult {
                    entry_mode,
                    network,
                    last4,
                    fingerprint,
                    sealed,
                } => {
                    let sealed_card_data = base64::engine::general_purpose::STANDARD
                        .decode(sealed)
                        .map_err(|_| LinkError::Message)?;
                    let card = CardRead {
                        entry_mode,
                        network,
                        last4,
                        fingerprint: Some(fingerprint),
                        reader_model: model,
                        sealed_card_data,
                    };
                    // Bad data from a reader is a typed error, never stored.
                    card.validate().map_err(|_| LinkError::Message)?;
                    return Ok(card);
                }
                Reply::Error { code, .. } => return Err(ReaderError::Refused { code }),
                _ => return Err(ReaderError::Unexpected),
            }
        }
    }

    /// The reader model, once known.
    pub fn model(&self) -> Option<&str> {
        self.info.as_ref().map(|i| i.model.as_str())
    }

    /// Messages sent and not yet acknowledged by the reader.
    pub fn unacked(&self) -> usize {
        self.chan.unacked()
    }

    pub fn link(&self) -> &T {
        self.chan.link()
    }
}

impl ReaderClient<MemoryLink> {
    /// The radio is back: both ends send again what the other did not
    /// acknowledge; returns how many of the phone's messages were pending.
    pub fn reconnect(&self) -> usize {
        let pending = self.chan.unacked();
        self.chan.link().reconnect();
        pending
    }
}

/// Lower-case hex.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
