//! The log byte scan: the demo's whole day (online sales, the outage,
//! offline sales, refusals, receipts, the service's return, forwarding with
//! faults, declines, an expiry, the reconciliation) runs with the FFI's log
//! sink at TRACE, and every line an app would receive (level, target and
//! message) is scanned for card numbers, contacts, tokens and keys. None may
//! appear.
//!
//! The scan looks for: Luhn-valid runs of 13 to 19 digits (also with
//! spaces or dashes between them); the simulator's test card numbers
//! anywhere, separators removed; e-mail addresses; phone numbers (`+` and
//! at least 7 digits) and the demo's contacts; the simulator's bearer
//! token; `Bearer ` headers; and runs of 40 or more base64 or hex
//! characters (sealed card data, signatures, keys).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use pos_demo::{run, Options, Preset};
use pos_ffi::{set_log_sink, LogLevel, LogRecord, LogSink};
use pos_sim::FaultMode;

/// Every record, as a line.
#[derive(Default)]
struct Lines(Mutex<Vec<(LogLevel, String)>>);

impl LogSink for Lines {
    fn log(&self, r: LogRecord) {
        let line = format!("{:?} {} {}", r.level, r.target, r.message);
        self.0.lock().unwrap().push((r.level, line));
    }
}

/// What must never be logged, besides the patterns: the simulator's test
/// cards, its token, and the demo's customer contacts.
fn known_secrets() -> Vec<String> {
    let mut v: Vec<String> = pos_sim::test_cards()
        .iter()
        .map(|c| c.pan.to_owned())
        .collect();
    v.push(pos_sim::SimConfig::default().token);
    for contact in [
        "jane.doe@example.com",
        "sam@example.org",
        "+14155550123",
        "+14155550188",
        "4155550123",
        "4155550188",
    ] {
        v.push(contact.to_owned());
    }
    v
}

fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The runs of digits in `line`: each maximal run of plain digits, and each
/// maximal run of digits joined by single spaces or dashes (as a card
/// number is written), with the character before it.
fn digit_runs(line: &str) -> Vec<(Option<char>, Vec<u8>)> {
    let chars: Vec<char> = line.chars().collect();
    let mut runs = Vec::new();
    for joined in [false, true] {
        let mut i = 0;
        while i < chars.len() {
            if !chars[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let before = i.checked_sub(1).map(|b| chars[b]);
            let mut digits = Vec::new();
            while i < chars.len() {
                if let Some(d) = chars[i].to_digit(10) {
                    digits.push(d as u8);
                    i += 1;
                } else if joined
                    && (chars[i] == ' ' || chars[i] == '-')
                    && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())
                {
                    i += 1;
                } else {
                    break;
                }
            }
            runs.push((before, digits));
        }
    }
    runs
}

/// An e-mail address: `local@domain.tld`.
fn has_email(line: &str) -> bool {
    let b = line.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        if c != b'@' || i == 0 {
            return false;
        }
        let local = b[i - 1].is_ascii_alphanumeric() || b"._%+-".contains(&b[i - 1]);
        let domain: Vec<u8> = b[i + 1..]
            .iter()
            .copied()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
            .collect();
        let dot = domain.iter().position(|c| *c == b'.');
        local && dot.is_some_and(|d| d > 0 && d + 1 < domain.len())
    })
}

/// The longest run of base64 (or hex) characters.
fn longest_base64_run(line: &str) -> usize {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// Why `line` leaks, if it does.
fn leak(line: &str, secrets: &[String]) -> Option<String> {
    for (before, digits) in digit_runs(line) {
        if (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
            return Some("a Luhn-valid digit run".into());
        }
        if before == Some('+') && digits.len() >= 7 {
            return Some("a phone number".into());
        }
    }
    let plain: String = line.chars().filter(|c| *c != ' ' && *c != '-').collect();
    for s in secrets {
        let s_plain: String = s.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if line.contains(s.as_str()) || plain.contains(&s_plain) {
            return Some(format!("a known test secret ({s})"));
        }
    }
    if has_email(line) {
        return Some("an e-mail address".into());
    }
    if line.contains("Bearer ") {
        return Some("a bearer token".into());
    }
    if longest_base64_run(line) >= 40 {
        return Some("a long base64 or hex run (key, sealed data, signature)".into());
    }
    None
}

#[test]
fn the_scan_finds_each_kind_of_leak() {
    let secrets = known_secrets();
    for line in [
        "Info pos_core card=4111 1111 1111 1111",
        "Info pos_core card=4111-1111-1111-1111",
        "Info pos_core pan=4000056655665556 expiry=1230",
        "Debug pos_reader presented 4242424242424242",
        "Info pos_core contact=ana@example.com",
        "Info pos_core phone=+44 20 7946 0958",
        "Info pos_core phone=4155550123",
        "Info pos_core token=sim-token",
        "Info pos_core authorization: Bearer abc",
        "Info pos_core sealed=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj",
        "Info pos_core key=000102030405060708090a0b0c0d0e0f1011121314151617",
    ] {
        assert!(leak(line, &secrets).is_some(), "not found in {line:?}");
    }
    for line in [
        "Info pos_core::forwarding forwarding round finished attempts=12 approved=9",
        "Debug pos_core::forwarding payment approved payment_id=pay_0123456789abcdef0123456789abcdef attempt=1",
        "Info pos_store store opened created=true records=1234567 elapsed=12.345678ms",
        "Info pos_reader::client reader paired model=Chipper 2X BT serial=SIM-READER-1",
    ] {
        assert_eq!(leak(line, &secrets), None, "{line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_day_at_trace_level_logs_no_card_data_contacts_or_tokens() {
    let sink = Arc::new(Lines::default());
    set_log_sink(LogLevel::Trace, Some(sink.clone()));
    // Without faults, then with every fault mode at once (gateway errors,
    // timeouts, lost answers and their retries).
    for fault in [None, Some(FaultMode::Mix)] {
        let s = run(Options {
            preset: Preset::SquareReader,
            fault,
            payments: 6,
            quiet: true,
            seed: 7,
            ..Options::default()
        })
        .await
        .unwrap();
        assert!(s.reconciled(), "{fault:?}:\n{}", s.table());
    }
    set_log_sink(LogLevel::Trace, None);
    let lines = std::mem::take(&mut *sink.0.lock().unwrap());

    // The day is logged: each step the bridge promises is there, at every
    // level down to trace.
    for expected in [
        "pos_store store opened",
        "pos_core::open engine opened",
        "connectivity changed",
        "forwarding round started",
        "forwarding attempt sent",
        "forwarding round finished",
        "payment approved",
        "payment declined",
        "gateway error",
        "offline payment stored",
        "offline payment refused",
        "reader paired",
        "engine closed",
    ] {
        assert!(
            lines.iter().any(|(_, l)| l.contains(expected)),
            "no line has {expected:?}"
        );
    }
    for level in [
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ] {
        assert!(
            lines.iter().any(|(l, _)| *l == level),
            "no {level:?} record"
        );
    }

    let secrets = known_secrets();
    let leaks: Vec<String> = lines
        .iter()
        .filter_map(|(_, l)| leak(l, &secrets).map(|why| format!("{why}: {l}")))
        .collect();
    assert!(
        leaks.is_empty(),
        "{} of {} lines leak:\n{}",
        leaks.len(),
        lines.len(),
        leaks.join("\n")
    );
}
