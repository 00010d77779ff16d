//! The private D-Bus system bus: one `dbus-daemon` per test process,
//! started on first use, whose address `DBUS_SYSTEM_BUS_ADDRESS` then names.
//!
//! libdbus (under btleplug) reads that variable once per process, at its
//! first system-bus connection, so every test of a process shares this one
//! bus; the tests take turns on it ([`crate::BlueZ::start`]). The daemon
//! runs under a small shell that kills it when the test process exits (its
//! standard input, a pipe this process holds, then closes): no daemon is
//! left behind, even after a panic.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The running bus.
#[derive(Debug)]
pub struct SystemBus {
    /// The daemon's address (`unix:path=…,guid=…`).
    pub address: String,
    /// Held until the process exits (or [`SystemBus::stop`]): closing it
    /// stops the daemon.
    alive: Mutex<Option<(Child, ChildStdin)>>,
}

impl SystemBus {
    /// Stops the daemon now and waits until it is gone and its folder
    /// removed (otherwise that happens when the process exits). For a
    /// process that outlives its bus (the standalone `bluez-double`).
    pub fn stop(&self) {
        let alive = self.alive.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((mut child, stdin)) = alive {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Lets any local client own any name and call anything: a test bus.
const CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=@DIR@/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#;

/// Runs the daemon in the background (only it keeps standard output, so a
/// daemon that cannot start closes it) and waits for this process's end
/// (the end of standard input) to stop it and remove its folder.
const SUPERVISOR: &str = r#"dbus-daemon --config-file="$1/bus.conf" --print-address=1 --nofork 2>"$1/daemon.log" &
daemon=$!
exec >/dev/null
cat >/dev/null
kill "$daemon" 2>/dev/null
wait "$daemon" 2>/dev/null
rm -rf "$1""#;

/// The process's bus, started on first use. An error (no `dbus-daemon`:
/// `cargo xtask install` installs it) is for the caller to fail on: a test
/// never skips for want of the bus.
pub fn system_bus() -> Result<&'static SystemBus, String> {
    static BUS: OnceLock<Result<SystemBus, String>> = OnceLock::new();
    BUS.get_or_init(start).as_ref().map_err(Clone::clone)
}

fn start() -> Result<SystemBus, String> {
    let dir: PathBuf = std::env::temp_dir().join(format!("pos-bluez-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir_str = dir
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", dir.display()))?;
    std::fs::write(dir.join("bus.conf"), CONFIG.replace("@DIR@", dir_str))
        .map_err(|e| format!("cannot write the bus configuration: {e}"))?;
    let mut child = Command::new("sh")
        .args(["-c", SUPERVISOR, "sh", dir_str])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start sh for dbus-daemon: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin pipe to dbus-daemon")?;
    let stdout = child
        .stdout
        .take()
        .ok_or("no stdout pipe from dbus-daemon")?;
    let mut address = String::new();
    BufReader::new(stdout)
        .read_line(&mut address)
        .map_err(|e| format!("cannot read dbus-daemon's address: {e}"))?;
    let address = address.trim().to_owned();
    if !address.starts_with("unix:") {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        return Err(format!(
            "dbus-daemon did not start (printed {address:?}; its log: {:?}); `cargo xtask install` installs it",
            log.trim()
        ));
    }
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &address);
    Ok(SystemBus {
        address,
        alive: Mutex::new(Some((child, stdin))),
    })
}
