//! Installs what the pipeline needs, idempotently: a second run only checks.
//!
//! - Debian packages: `libdbus-1-dev pkg-config` (btleplug's BlueZ backend),
//!   `dbus-daemon` (the private system bus of the BlueZ double, `tests/bluez`),
//!   `libjna-java junit5` (the Kotlin harness), `mmdebstrap` (the Swift root),
//!   `fuse3` (`fusermount3`, for the power-cut rig in `tests/powercut/`).
//! - The Kotlin compiler from the npm registry (`kotlin-compiler`), unpacked
//!   into the cache folder (see [`crate::util::cache_dir`]).
//! - Swift: the native `swift` when it is on PATH, otherwise a Debian trixie
//!   root with `swiftlang`, made once by mmdebstrap in the cache folder.
//!
//! Each download goes to a `.tmp` folder renamed into place only when
//! complete, so an interrupted run never leaves a half-installed tool.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cache_dir, on_path, output, run};

pub const KOTLIN_VERSION: &str = "2.4.20";
const APT_RUST: &[&str] = &["libdbus-1-dev", "pkg-config", "dbus-daemon"];
/// `fusermount3`, which the power-cut rig (`tests/powercut/`, the `fuser` crate)
/// mounts its FUSE filesystem with.
const APT_POWERCUT: &[&str] = &["fuse3"];
const APT_KOTLIN: &[&str] = &["libjna-java", "junit5"];
const APT_SWIFT: &[&str] = &["mmdebstrap"];
const SWIFT_ROOT_PACKAGES: &str =
    "swiftlang,libc6-dev,libstdc++-14-dev,ca-certificates,libdbus-1-dev";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Which toolchains a command needs.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub rust: bool,
    pub kotlin: bool,
    pub swift: bool,
}

impl Needs {
    pub fn everything() -> Self {
        Needs {
            rust: true,
            kotlin: true,
            swift: true,
        }
    }
}

/// Where the installed tools are.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// The unpacked Kotlin compiler (has `bin/kotlinc` and `lib/`).
    pub kotlin_home: Option<PathBuf>,
    pub swift: Option<Swift>,
}

/// How to run Swift.
#[derive(Debug, Clone)]
pub enum Swift {
    /// `swift` is on PATH.
    Native,
    /// A Debian trixie root with swiftlang, entered with chroot.
    Root(PathBuf),
}

pub fn all(needs: &Needs) -> Result<Tools, String> {
    let mut apt: Vec<&str> = Vec::new();
    if needs.rust {
        apt.extend(APT_RUST);
        apt.extend(APT_POWERCUT);
    }
    if needs.kotlin {
        apt.extend(APT_KOTLIN);
        // Java and npm are on this machine image; install Debian's only
        // where they are missing (never over another installation).
        if on_path("java").is_none() {
            apt.push("openjdk-17-jre-headless");
        }
        if on_path("npm").is_none() {
            apt.push("npm");
        }
    }
    let native_swift = needs.swift && on_path("swift").is_some();
    let swift_root = cache_dir().join("swift-root");
    if needs.swift && !native_swift && !swift_root_ready(&swift_root) {
        apt.extend(APT_SWIFT);
    }
    apt_install(&apt)?;

    let mut tools = Tools::default();
    if needs.kotlin {
        tools.kotlin_home = Some(kotlin()?);
    }
    if needs.swift {
        tools.swift = Some(if native_swift {
            Swift::Native
        } else {
            make_swift_root(&swift_root)?;
            Swift::Root(swift_root)
        });
    }
    Ok(tools)
}

/// What the demo needs beyond Rust: a C compiler for the bundled SQLite
/// (present wherever rustup installed a linker; checked anyway).
pub fn demo() -> Result<(), String> {
    let has_cc = Command::new("cc")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_cc {
        return Ok(());
    }
    apt_install(&["gcc", "libc6-dev"])
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt_install(pkgs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq"]);
    install.args(&missing);
    run(&mut install)
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Unpacks `kotlin-compiler@KOTLIN_VERSION` from the npm registry once.
fn kotlin() -> Result<PathBuf, String> {
    let home = cache_dir().join(format!("kotlinc-{KOTLIN_VERSION}"));
    if home.join("bin/kotlinc").is_file()
        && home.join("lib/kotlinx-coroutines-core-jvm.jar").is_file()
    {
        return Ok(home);
    }
    if on_path("npm").is_none() {
        return Err("npm is needed to fetch the Kotlin compiler from the npm registry".into());
    }
    let tmp = cache_dir().join(format!("kotlinc-{KOTLIN_VERSION}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    eprintln!("xtask: fetching kotlin-compiler@{KOTLIN_VERSION} from the npm registry");
    run(Command::new("npm")
        .args([
            "pack",
            "--silent",
            &format!("kotlin-compiler@{KOTLIN_VERSION}"),
        ])
        .current_dir(&tmp))?;
    let tarball = format!("kotlin-compiler-{KOTLIN_VERSION}.tgz");
    run(Command::new("tar")
        .args(["xzf", &tarball])
        .current_dir(&tmp))?;
    // The package unpacks to `package/` with bin/ and lib/.
    let unpacked = tmp.join("package");
    let kotlinc = unpacked.join("bin/kotlinc");
    make_executable(&unpacked.join("bin"))?;
    if !kotlinc.is_file() {
        return Err(format!("{} is missing after unpacking", kotlinc.display()));
    }
    let _ = std::fs::remove_dir_all(&home);
    std::fs::rename(&unpacked, &home).map_err(|e| format!("moving kotlinc into place: {e}"))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(home)
}

fn make_executable(dir: &Path) -> Result<(), String> {
    run(Command::new("chmod").arg("-R").arg("a+x").arg(dir))
}

fn swift_root_ready(root: &Path) -> bool {
    // usr/bin/swift is a symlink that resolves only inside the root: test
    // the link itself, not its target. The stamp must name today's package list.
    std::fs::symlink_metadata(root.join("usr/bin/swift")).is_ok()
        && std::fs::read_to_string(root.join(".pos-core-ready"))
            .is_ok_and(|s| s.trim() == SWIFT_ROOT_PACKAGES)
}

/// Makes the Debian trixie root with swiftlang once (about a minute, 2.6 GB).
fn make_swift_root(root: &Path) -> Result<(), String> {
    if swift_root_ready(root) {
        return Ok(());
    }
    let tmp = root.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    eprintln!(
        "xtask: making a Debian trixie root with swiftlang in {} (once)",
        root.display()
    );
    run(Command::new("mmdebstrap")
        .args([
            "--variant=apt",
            "--quiet",
            &format!("--include={SWIFT_ROOT_PACKAGES}"),
            "trixie",
        ])
        .arg(&tmp)
        .arg(DEBIAN_MIRROR))?;
    std::fs::write(tmp.join(".pos-core-ready"), SWIFT_ROOT_PACKAGES)
        .map_err(|e| format!("marking the Swift root ready: {e}"))?;
    let _ = std::fs::remove_dir_all(root);
    std::fs::rename(&tmp, root).map_err(|e| format!("moving the Swift root into place: {e}"))?;
    Ok(())
}
