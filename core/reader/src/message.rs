//! The messages of the reader profile: UTF-8 JSON objects tagged by `"t"`,
//! carried in frames ([`crate::frame`]). See `docs/reader-profile.md`.

use serde::{Deserialize, Serialize};

use pos_rules::policy::{EntryMode, Network};

/// The profile version this library speaks: the authenticated handshake
/// and sealed messages (`secure`).
pub const PROFILE_VERSION: u8 = 2;
/// Profile versions a reader of this library answers.
pub const SUPPORTED_VERSIONS: &[u8] = &[PROFILE_VERSION];
/// The version of older readers: no handshake, no sealing. A phone offers
/// it only when told to (`client::ConnectOptions::allow_v1`).
pub const LEGACY_VERSION: u8 = 1;

/// From the phone to the reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Request {
    /// Version negotiation (plain, before the handshake): the versions the
    /// phone speaks.
    Hello {
        versions: Vec<u8>,
    },
    GetInfo,
    /// Read a card for this payment: the reader binds the sealed card data
    /// to every field (`pos_rules::card_seal::CardBinding`).
    StartPayment {
        payment_id: String,
        device_id: String,
        /// The amount charged, tip included, in minor units.
        amount_minor: i64,
        currency: String,
        /// Hex of the payment's 16-byte challenge nonce.
        nonce: String,
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
        /// Base64 of the sealed card data, version 2 (`pos_rules::card_seal`).
        sealed: String,
        /// The reader's serial (the one its certificate names).
        serial: String,
        /// Base64 of the reader's Ed25519 signature of the sealed bytes
        /// under `reader_trust::CARD_CONTEXT`.
        signature: String,
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
