//! What the engine's benches share: the sale they repeat (amount, card
//! read) and the process figures they read (`/proc/self/status`, glibc's
//! heap), so each bench measures the same thing the same way.

// Each bench uses its own part of this.
#![allow(dead_code)]

use pos_core::crypto::fill_random;
use pos_core::ledger::CardRead;
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network};

/// The reader model the benches remember (a vendor SDK's reader).
pub const READER: &str = "Square Terminal";

pub fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

/// An amount between $5.00 and $23.13, so totals are not trivial.
pub fn amount(i: usize) -> Money {
    let cents = 500 + i64::try_from(i % 50).expect("small") * 37;
    Money::new(cents, usd())
}

/// A read of the vendor reader `serial` with `card_bytes` of random sealed
/// card data: a vendor SDK's reads carry no signature to check.
pub fn vendor_card(serial: &str, card_bytes: usize) -> CardRead {
    let mut sealed = vec![0u8; card_bytes];
    fill_random(&mut sealed).expect("random card data");
    CardRead {
        entry_mode: EntryMode::Chip,
        network: Network::Visa,
        last4: "4242".into(),
        fingerprint: None,
        reader_model: READER.into(),
        sealed_card_data: sealed,
        reader_serial: Some(serial.into()),
        reader_signature: None,
        tap_to_pay_on_phone: false,
    }
}

/// A `kB` line of `/proc/self/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn proc_status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes the allocator has handed out and not had back (glibc's
/// `mallinfo2`: `uordblks + hblkhd`, over every arena): the memory the
/// program holds, without the free pages the allocator keeps. `None` off
/// glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn heap_in_use() -> Option<u64> {
    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 takes no argument and returns a plain struct.
    let m = unsafe { mallinfo2() };
    u64::try_from(m.uordblks + m.hblkhd).ok()
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use() -> Option<u64> {
    None
}

/// Asks glibc's allocator to return its free pages to the system
/// (`malloc_trim(0)`, which the engine also calls after its open and its
/// background checks, ADR 0014): what is resident afterwards is what was
/// still in use. `false` off glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: malloc_trim takes no pointer and only releases free memory.
    unsafe {
        malloc_trim(0);
    }
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}
