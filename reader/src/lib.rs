//! # pos-reader — the card reader profile
//!
//! The project's own Bluetooth LE card-reader profile
//! (`docs/reader-profile.md`): the frame codec ([`frame`]), the messages
//! ([`message`]), a message channel with acknowledgements and resending
//! after a reconnection ([`link`]), the phone side ([`client`]) and a
//! simulated reader that speaks the same bytes ([`sim`]).
//!
//! The btleplug transport is `ble` (feature `ble`; compiled and linked
//! here, never run against a radio); [`link::ExternalTransport`] carries the
//! profile over an app's own Bluetooth stack; [`reconnect`] retries a lost
//! reader with exponential back-off. Not built yet (issue 6, open): a
//! foreign trait for a whole vendor reader SDK.

#[cfg(feature = "ble")]
pub mod ble;
pub mod client;
pub mod frame;
pub mod link;
pub mod message;
pub mod reconnect;
pub mod sim;

/// The profile's 128-bit UUIDs (Nordic-UART style): the service, the
/// request characteristic the phone writes (write without response), and the
/// notify characteristic for replies and events.
pub mod uuids {
    pub const SERVICE: &str = "7c1e0001-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
    pub const REQUEST: &str = "7c1e0002-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
    pub const NOTIFY: &str = "7c1e0003-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
}
