//! `bluez-double`: the BlueZ double as a process, for tests in other
//! languages (the Kotlin test of `BleCentral`).
//!
//! Starts the private `dbus-daemon` and the double with one adapter and one
//! reader advertising the profile's service (a simulated reader as pos-ffi's
//! `SimulatedReader` makes one: certified by the simulator's reader
//! authority, sealing to the tests' processor key), then prints exactly one
//! line on standard output, `DBUS_SYSTEM_BUS_ADDRESS=<address>`, once a
//! client can scan. It runs until its standard input closes, or SIGTERM or
//! SIGINT, then stops the daemon and exits 0.
//!
//! The customer taps: `--taps N` cards (default 16) are presented at start,
//! each taken by one payment; a line `tap` on standard input presents one
//! more, `tap <PAN>` one with that number. Everything else it says goes to
//! standard error.

use std::io::Write as _;
use std::process::ExitCode;

use pos_bluez_double::{app_reader_config, bus, BlueZ};
use pos_reader::sim::Presented;
use pos_rules::card_seal::CardSecret;
use pos_rules::policy::{EntryMode, Network};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: bluez-double [--mtu 23..517] [--rssi DBM] [--address MAC] [--name NAME] \
[--serial SERIAL] [--model MODEL] [--battery PERCENT] [--card PAN] [--entry chip|contactless|swipe] \
[--taps N] [--no-strap]";

const HEART_RATE: &str = "0000180d-0000-1000-8000-00805f9b34fb";

#[derive(Debug)]
struct Options {
    mtu: u16,
    rssi: i16,
    address: String,
    name: String,
    serial: String,
    model: String,
    battery: u8,
    pan: String,
    entry: EntryMode,
    taps: usize,
    /// A heart-rate strap advertising too, and another app's unfiltered
    /// scan, so BlueZ reports it to ours (a scan must list only readers).
    strap: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mtu: 185,
            rssi: -60,
            address: "C0:FF:EE:00:00:01".into(),
            name: "Chipper 2X BT".into(),
            serial: "SIM-BLE-1".into(),
            model: "Chipper 2X BT".into(),
            battery: 80,
            pan: "4242424242424242".into(),
            entry: EntryMode::Chip,
            taps: 16,
            strap: true,
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options::default();
    while let Some(flag) = args.next() {
        if flag == "--no-strap" {
            o.strap = false;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: bad value {value:?}");
        match flag.as_str() {
            "--mtu" => {
                o.mtu = value.parse().map_err(bad)?;
                if !(23..=517).contains(&o.mtu) {
                    return Err("--mtu: 23 to 517".into());
                }
            }
            "--rssi" => o.rssi = value.parse().map_err(bad)?,
            "--address" => o.address = value,
            "--name" => o.name = value,
            "--serial" => o.serial = value,
            "--model" => o.model = value,
            "--battery" => o.battery = value.parse().map_err(bad)?,
            "--card" if is_pan(&value) => o.pan = value,
            "--card" => return Err(format!("--card: 12 to 19 digits, not {value:?}")),
            "--entry" => {
                o.entry = match value.as_str() {
                    "chip" => EntryMode::Chip,
                    "contactless" => EntryMode::Contactless,
                    "swipe" => EntryMode::Swipe,
                    _ => {
                        return Err(format!(
                            "--entry: chip, contactless or swipe, not {value:?}"
                        ))
                    }
                }
            }
            "--taps" => o.taps = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

/// 12 to 19 digits.
fn is_pan(s: &str) -> bool {
    (12..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// The card network a test card number belongs to (by its first digits).
fn network(pan: &str) -> Network {
    match pan.as_bytes() {
        [b'4', ..] => Network::Visa,
        [b'5', ..] | [b'2', ..] => Network::Mastercard,
        [b'3', b'4' | b'7', ..] => Network::Amex,
        [b'6', ..] => Network::Discover,
        _ => Network::Other,
    }
}

fn card(pan: &str, entry: EntryMode) -> Presented {
    Presented {
        secret: CardSecret {
            pan: pan.to_owned(),
            expiry: "1230".into(),
        },
        network: network(pan),
        entry_mode: entry,
    }
}

/// Standard input's lines, read on a thread of its own: tokio's `stdin`
/// would keep the runtime from shutting down (after SIGTERM) while its
/// blocking read waits.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::main]
async fn main() -> ExitCode {
    let o = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bluez-double: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match app_reader_config(&o.serial, &o.model, o.battery) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bluez-double: the reader's identity: {e}");
            return ExitCode::from(2);
        }
    };
    // Before anything else can end the process: the signals are ours.
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("bluez-double: cannot listen for SIGTERM and SIGINT");
        return ExitCode::FAILURE;
    };
    let bluez = match BlueZ::start().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bluez-double: the double did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(bus) = bus::system_bus() else {
        eprintln!("bluez-double: no system bus");
        return ExitCode::FAILURE;
    };
    let sim = bluez.advertise_reader(&o.address, &o.name, o.rssi, o.mtu, config);
    for _ in 0..o.taps {
        sim.present(card(&o.pan, o.entry));
    }
    if o.strap {
        bluez.advertise_other("C0:FF:EE:00:00:02", "HR Strap", -40, &[HEART_RATE]);
        bluez.merge_with_an_unfiltered_scan(true);
    }

    let mut out = std::io::stdout().lock();
    if writeln!(out, "DBUS_SYSTEM_BUS_ADDRESS={}", bus.address)
        .and_then(|()| out.flush())
        .is_err()
    {
        eprintln!("bluez-double: standard output is closed");
        bus.stop();
        return ExitCode::FAILURE;
    }
    drop(out);
    eprintln!(
        "bluez-double: reader {} ({}) at {}, RSSI {} dBm, MTU {}, {} card(s) {}…{} waiting; \
         `tap [PAN]` on stdin presents another; close stdin or SIGTERM to stop",
        o.serial,
        o.model,
        o.address,
        o.rssi,
        o.mtu,
        o.taps,
        &o.pan[..o.pan.len().min(4)],
        &o.pan[o.pan.len().saturating_sub(4)..],
    );

    let mut lines = stdin_lines();
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            line = lines.recv() => match line {
                Some(line) => {
                    let mut words = line.split_whitespace();
                    match (words.next(), words.next()) {
                        (Some("tap"), Some(pan)) if !is_pan(pan) => {
                            eprintln!("bluez-double: {pan:?} is not a card number");
                        }
                        (Some("tap"), pan) => {
                            sim.present(card(pan.unwrap_or(&o.pan), o.entry));
                            eprintln!("bluez-double: a card is presented");
                        }
                        (None, _) => {}
                        (Some(other), _) => eprintln!("bluez-double: unknown command {other:?}"),
                    }
                }
                None => break "standard input closed",
            },
        }
    };
    eprintln!("bluez-double: {why}, stopping");
    drop(bluez);
    bus.stop();
    ExitCode::SUCCESS
}
