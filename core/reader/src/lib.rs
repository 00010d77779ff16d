//! # pos-reader — the card reader profile
//!
//! The project's own Bluetooth LE card-reader profile
//! (`docs/reader-profile.md`): the frame codec ([`frame`]), the messages
//! ([`message`]), the authenticated handshake and sealed messages of
//! profile version 2 ([`secure`]), a message channel with acknowledgements,
//! sealing and resending after a reconnection ([`link`]), the phone side
//! ([`client`]), a simulated reader that speaks the same bytes ([`sim`]),
//! and [`card_reader`]: one reader an app drives whatever carries it (the
//! profile over any link, or a vendor's SDK), which the FFI wraps.
//!
//! The btleplug transport is `ble` (feature `ble`; compiled and linked
//! here, never run against a radio); [`link::ExternalTransport`] carries the
//! profile over an app's own Bluetooth stack; [`reconnect`] retries a lost
//! reader with exponential back-off, and [`reconnect::supervise`] does it
//! whenever the link drops. The simulated reader is behind the default
//! feature `simulator` (on for tests and the demo; a shipping app may leave
//! it out).

#[cfg(feature = "ble")]
pub mod ble;
pub mod card_reader;
pub mod client;
pub mod frame;
pub mod link;
pub mod message;
pub mod reconnect;
pub mod secure;
#[cfg(feature = "simulator")]
pub mod sim;

/// Whether an advertisement's service list offers the profile's service.
/// Scans filter on the service and check again with this on our side:
/// BlueZ merges the scan filters of every app, so other devices get through.
pub fn offers_reader_service<S: AsRef<str>>(services: &[S]) -> bool {
    services
        .iter()
        .any(|s| s.as_ref().eq_ignore_ascii_case(uuids::SERVICE))
}

/// The profile's 128-bit UUIDs (Nordic-UART style): the service, the
/// request characteristic the phone writes (write without response), and the
/// notify characteristic for replies and events.
pub mod uuids {
    pub const SERVICE: &str = "7c1e0001-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
    pub const REQUEST: &str = "7c1e0002-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
    pub const NOTIFY: &str = "7c1e0003-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_profile_service_counts_as_a_reader() {
        let heart_rate = "0000180d-0000-1000-8000-00805f9b34fb";
        assert!(super::offers_reader_service(&[
            heart_rate,
            super::uuids::SERVICE
        ]));
        assert!(super::offers_reader_service(&[
            super::uuids::SERVICE.to_uppercase()
        ]));
        assert!(!super::offers_reader_service(&[heart_rate]));
        assert!(!super::offers_reader_service::<&str>(&[]));
    }
}
