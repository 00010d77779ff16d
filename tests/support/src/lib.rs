//! Test helpers every POS Core suite shares: the card readers (the test
//! reader among them) that seal and sign card data for a payment's
//! challenge, the one sale helper (order → begin → read → confirm,
//! [`Sale`]), the one engine rig ([`Rig`]), seeded randomness, the
//! power-cut workload and, with the `sim` feature, the simulator's side of
//! the rig. [`approving::Approving`] settles every payment at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod approving;
pub mod keys;
pub mod reader;
pub mod rig;
pub mod rng;
pub mod sale;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod workload;

pub use reader::{
    certified_identity, chip_card, chip_card_for, next_counter, pair_identity, pair_test_reader,
    processor_key, read_for, read_with, test_reader, trusting_the_test_reader, CardReader,
    READER_SERIAL, TEST_READER_MODEL,
};
pub use rig::{
    clock_corrections, go_offline, listen, manual_forwarding, sign_in_and_lose_the_network, staff,
    Events, Rig, RigBuilder, T0,
};
pub use sale::{begin_sale, sell_offline, usd, Reader, Sale};
pub use workload::{online, remember_vendor_reader};
