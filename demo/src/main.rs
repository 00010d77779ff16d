//! `pos-demo`: a shop's day with an outage. `cargo xtask demo` runs it with
//! no flags; see `--help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use pos_demo::{run, Options};

const HELP: &str =
    "pos-demo: a shop's day with an outage, end to end (virtual clock: 24 h in seconds)

usage: pos-demo [--preset square-reader|square-terminal|shopify] [--seed N] [--payments N]
                [--fault MODE] [--data-dir DIR] [--key-dir DIR] [--json] [--quiet]

  --fault MODE   a simulator fault for the forwarding phase: latency, drop-after-commit,
                 5xx, conflict, reset, timeout, intermittent, slow, mix
  --data-dir DIR where the store goes (default: a fresh temporary folder)
  --key-dir DIR  where the key file and the rollback anchor go, outside the data
                 folder (default: the data folder's path + .keys)
  --json         print one machine-readable summary instead of the table
  --quiet        no timeline, only the closing table (or JSON)

Exits 1 when the device and the simulator's ledger disagree, 2 on bad flags.";

fn parse() -> Result<(Options, bool), String> {
    let mut o = Options {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        ..Options::default()
    };
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--preset" => o.preset = value("--preset")?.parse()?,
            "--seed" => {
                o.seed = value("--seed")?
                    .parse()
                    .map_err(|_| "--seed takes a number")?
            }
            "--payments" => {
                o.payments = value("--payments")?
                    .parse()
                    .map_err(|_| "--payments takes a number")?;
                if !(1..=5_000).contains(&o.payments) {
                    return Err("--payments must be 1-5000".into());
                }
            }
            "--fault" => o.fault = Some(value("--fault")?.parse().map_err(|e| format!("{e}"))?),
            "--data-dir" => o.data_dir = Some(value("--data-dir")?.into()),
            "--key-dir" => o.key_dir = Some(value("--key-dir")?.into()),
            "--json" => json = true,
            "--quiet" => o.quiet = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if json {
        o.quiet = true;
        o.color = false;
    }
    Ok((o, json))
}

fn main() -> ExitCode {
    let (opts, json) = match parse() {
        Ok(x) => x,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("pos-demo: {e}\n");
            }
            eprintln!("{HELP}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pos-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = match runtime.block_on(run(opts)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pos-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = String::new();
    if json {
        out = summary.json().to_string();
    } else {
        out.push_str("\nreconciliation\n");
        out.push_str(&summary.table());
        out.push_str(&format!(
            "  {} simulator requests, {} faults injected, {} ms\n",
            summary.sim_requests,
            summary.faults_injected,
            summary.wall.as_millis()
        ));
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{out}");
    }
    if summary.reconciled() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
