//! `pos-sim`: the processor simulator as a process.
//!
//! ```text
//! cargo run -p pos-sim -- --listen 127.0.0.1:0 [--seed N] [--token T] [--fault MODE[:RATE]]
//!     [--account ACCOUNT_ID/LOCATION_ID]...
//! ```
//! Prints its address, public key, the account-less token and the token of
//! each `--account`, then serves until its standard input closes (or
//! Ctrl-C).

#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use pos_sim::{FaultMode, MerchantAccount, SimConfig, Simulator};

fn usage() -> ExitCode {
    eprintln!(
        "usage: pos-sim [--listen ADDR:PORT] [--seed N] [--token T] [--fault MODE[:RATE_PER_MILLE]]\n\
         \x20              [--account ACCOUNT_ID/LOCATION_ID]...\n\
         modes: latency, drop-after-commit, 5xx, conflict, reset, timeout, intermittent, slow, mix"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut config = SimConfig::default();
    let mut accounts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let Some(v) = args.next() else { return usage() };
        match a.as_str() {
            "--listen" => match v.parse::<SocketAddr>() {
                Ok(addr) => config.listen = addr,
                Err(_) => return usage(),
            },
            "--seed" => match v.parse() {
                Ok(s) => config.seed = s,
                Err(_) => return usage(),
            },
            "--token" => config.token = v,
            "--account" => {
                let Some((account_id, location_id)) = v.split_once('/') else {
                    return usage();
                };
                match MerchantAccount::new(account_id, location_id) {
                    Ok(a) => accounts.push(a),
                    Err(e) => {
                        eprintln!("{e}");
                        return usage();
                    }
                }
            }
            "--fault" => {
                let (mode, rate) = match v.split_once(':') {
                    Some((m, r)) => (m, r.parse::<u32>().ok()),
                    None => (v.as_str(), None),
                };
                match mode.parse::<FaultMode>() {
                    Ok(m) => config.faults = m.plan(rate),
                    Err(e) => {
                        eprintln!("{e}");
                        return usage();
                    }
                }
            }
            _ => return usage(),
        }
    }
    let sim = match Simulator::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pos-sim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key = pos_rules::crypto::hex(&sim.processor_key().0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "pos-sim listening on {}", sim.base_url());
    let _ = writeln!(out, "processor public key (X25519): {key}");
    let _ = writeln!(out, "bearer token: {}", sim.token());
    for a in &accounts {
        let _ = writeln!(out, "bearer token of account {a}: {}", sim.token_for(a));
    }
    let _ = out.flush();
    drop(out);
    // Serve until stdin closes.
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(sim);
    ExitCode::SUCCESS
}
