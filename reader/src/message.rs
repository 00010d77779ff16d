//! The messages of the reader profile: UTF-8 JSON objects tagged by `"t"`,
//! carried in frames ([`crate::frame`]). See `docs/reader-profile.md`.

use serde::{Deserialize, Serialize};

use pos_core::policy::{EntryMode, Network};

/// Profile versions this library speaks.
pub const SUPPORTED_VERSIONS: &[u8] = &[1];

/// From the phone to the reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Request {
    /// Version negotiation: the versions the phone speaks.
    Hello {
        versions: Vec<u8>,
    },
    GetInfo,
    /// Pairing: the reader proves it holds the reader key.
    PairChallenge {
        nonce: String,
    },
    StartPayment {
        amount_minor: i64,
        currency: String,
        entry_modes: Vec<EntryMode>,
        offline: bool,
    },
    Cancel,
    Display {
        text: String,
    },
}

/// From the reader to the phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Reply {
    HelloAck {
        version: u8,
    },
    Info {
        model: String,
        serial: String,
        firmware: String,
        battery_percent: u8,
    },
    /// HMAC-SHA256(reader key, "pos-reader pair v1" || nonce || serial), hex.
    PairResponse {
        mac: String,
    },
    /// A card was presented (event, before the result).
    CardPresented {
        entry_mode: EntryMode,
    },
    /// The card data, sealed for the processor, and its summary.
    CardResult {
        entry_mode: EntryMode,
        network: Network,
        last4: String,
        /// Keyed fingerprint of the card number (per-card limit).
        fingerprint: String,
        /// Base64 of the sealed card data (`pos_core::card_seal`).
        sealed: String,
    },
    Cancelled,
    Error {
        code: String,
        message: String,
    },
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message from the peer")]
pub struct MessageError;

pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, MessageError> {
    serde_json::from_slice(bytes).map_err(|_| MessageError)
}

/// The bytes a reader MACs to answer a pairing challenge.
pub fn pairing_input(nonce: &str, serial: &str) -> Vec<u8> {
    [
        b"pos-reader pair v1".as_slice(),
        nonce.as_bytes(),
        serial.as_bytes(),
    ]
    .concat()
}
