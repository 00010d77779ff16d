//! Installs what the pipeline needs, idempotently: a second run only checks.
//!
//! - Debian packages: `libdbus-1-dev pkg-config` (btleplug's BlueZ backend),
//!   `dbus-daemon` (the private system bus of the BlueZ double, `tests/bluez`),
//!   `libjna-java junit5` (the Kotlin harness), `mmdebstrap` (the Swift root),
//!   `fuse3` (`fusermount3`, for the power-cut rig in `tests/powercut/`).
//! - The Kotlin compiler from the npm registry (`kotlin-compiler`), unpacked
//!   into the cache folder (see [`crate::util::cache_dir`]).
//! - Swift: the native `swift` when it is on PATH, otherwise a Debian trixie
//!   root with `swiftlang`, made once by mmdebstrap in the cache folder, from
//!   the Debian archive this machine's own apt sources name (see
//!   [`debian_mirror`]), so that a local mirror or a caching proxy works.
//! - `jar` (the JDK's, Debian's `openjdk-17-jdk-headless` where missing) for
//!   the JVM artifact (`cargo xtask package`, the jar consumer test).
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
/// The suite of the Swift root.
const SWIFT_ROOT_SUITE: &str = "trixie";
/// Debian's release names and aliases: an apt source for one of these, with
/// the `main` component, is the Debian archive (a mirror of it, or a proxy),
/// which also serves [`SWIFT_ROOT_SUITE`].
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

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
        // `jar` packs the JVM artifact; a JRE alone does not have it.
        if on_path("jar").is_none() {
            apt.push("openjdk-17-jdk-headless");
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
    let mirror = debian_mirror()?;
    eprintln!(
        "xtask: making a Debian {SWIFT_ROOT_SUITE} root with swiftlang in {} (once), from {mirror}",
        root.display()
    );
    run(Command::new("mmdebstrap")
        .args([
            "--variant=apt",
            "--quiet",
            &format!("--include={SWIFT_ROOT_PACKAGES}"),
            SWIFT_ROOT_SUITE,
        ])
        .arg(&tmp)
        .arg(&mirror))?;
    std::fs::write(tmp.join(".pos-core-ready"), SWIFT_ROOT_PACKAGES)
        .map_err(|e| format!("marking the Swift root ready: {e}"))?;
    let _ = std::fs::remove_dir_all(root);
    std::fs::rename(&tmp, root).map_err(|e| format!("moving the Swift root into place: {e}"))?;
    Ok(())
}

/// The mirror argument for mmdebstrap: `$POS_DEBIAN_MIRROR` when set (a URI,
/// or a whole one-line `deb ...` entry), else the Debian archive of this
/// machine's apt sources (`/etc/apt/sources.list`, then
/// `/etc/apt/sources.list.d/*.list` and `*.sources` in name order).
pub fn debian_mirror() -> Result<String, String> {
    if let Some(m) = std::env::var("POS_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.trim().is_empty())
    {
        return Ok(m);
    }
    let etc = Path::new("/etc/apt");
    let mut files = vec![etc.join("sources.list")];
    let mut parts: Vec<PathBuf> = std::fs::read_dir(etc.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    parts.sort();
    files.extend(parts);
    let mut sources = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            _ if f.file_name().is_some_and(|n| n == "sources.list")
                || f.extension().is_some_and(|e| e == "list") =>
            {
                sources.extend(parse_one_line(&text))
            }
            // `*.save`, `*.disabled`, backups: not read by apt either.
            _ => {}
        }
    }
    mirror_argument(&sources, SWIFT_ROOT_SUITE).ok_or_else(|| {
        "no Debian archive in this machine's apt sources (/etc/apt/sources.list, \
         /etc/apt/sources.list.d/*.list and *.sources: a `deb` entry for a Debian \
         release with the `main` component); set POS_DEBIAN_MIRROR to a Debian mirror \
         URI or a whole `deb [options] URI trixie main` line"
            .to_owned()
    })
}

/// One `deb` entry of apt's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AptSource {
    uri: String,
    suites: Vec<String>,
    components: Vec<String>,
    /// `trusted` and `signed-by` (a keyring path), the options a mirror of
    /// the same archive needs too; others (`arch`, ...) are left out.
    options: Vec<(String, String)>,
}

/// Options of an entry that carry over to the Swift root's mirror line.
fn kept_option(key: &str, value: &str) -> Option<(String, String)> {
    let key = key.to_ascii_lowercase();
    // An inline key block (deb822 `Signed-By:` over several lines) cannot
    // go on one line: mmdebstrap then uses the machine's trusted keys.
    let single = !value.is_empty() && !value.contains(char::is_whitespace);
    (matches!(key.as_str(), "trusted" | "signed-by") && single).then(|| (key, value.to_owned()))
}

/// The one-line format (`sources.list`, `*.list`):
/// `deb [opt=value opt2=value] URI SUITE [COMPONENT...]`.
fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        // `deb-src` and anything else that only starts with "deb".
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let mut rest = rest.trim_start();
        let mut options = Vec::new();
        if let Some(after) = rest.strip_prefix('[') {
            let Some((inside, tail)) = after.split_once(']') else {
                continue;
            };
            for opt in inside.split_whitespace() {
                if let Some((k, v)) = opt.split_once('=') {
                    options.extend(kept_option(k, v));
                }
            }
            rest = tail.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_owned(),
            suites: vec![suite.to_owned()],
            components: words.map(str::to_owned).collect(),
            options,
        });
    }
    out
}

/// The deb822 format (`*.sources`): stanzas of `Field: value` separated by
/// blank lines; a line starting with a space continues the field above.
fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanzas: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if stanzas.last().is_some_and(|s| !s.is_empty()) {
                stanzas.push(Vec::new());
            }
            continue;
        }
        let stanza = stanzas.last_mut().expect("one stanza at least");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanza.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    for stanza in stanzas {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            field(name)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        if !words("types").iter().any(|t| t == "deb") {
            continue;
        }
        if field("enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let options: Vec<(String, String)> = stanza
            .iter()
            .filter_map(|(k, v)| kept_option(k, v))
            .collect();
        for uri in words("uris") {
            out.push(AptSource {
                uri,
                suites: words("suites"),
                components: words("components"),
                options: options.clone(),
            });
        }
    }
    out
}

/// The first source that is the Debian archive (a Debian release name as a
/// suite, without `-security`, `-updates` and the like, and `main`), as
/// mmdebstrap's mirror argument for `suite`: the URI alone, or a whole
/// `deb [options] URI suite main` line when the source has options to keep.
fn mirror_argument(sources: &[AptSource], suite: &str) -> Option<String> {
    let debian = sources.iter().find(|s| {
        s.components.iter().any(|c| c == "main")
            && s.suites.iter().any(|x| DEBIAN_SUITES.contains(&x.as_str()))
    })?;
    if debian.options.is_empty() {
        return Some(debian.uri.clone());
    }
    let opts: Vec<String> = debian
        .options
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Some(format!(
        "deb [{}] {} {suite} main",
        opts.join(" "),
        debian.uri
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_sources_give_the_debian_archive() {
        let text = "\
# a comment
deb-src http://mirror.lan/debian bookworm main
deb https://packages.example/apt cloud-sdk-bookworm main
deb http://mirror.lan/debian-security bookworm-security main
deb [arch=amd64] http://mirror.lan/debian bookworm main contrib # trailing
deb http://other.lan/debian bookworm main
";
        let sources = parse_one_line(text);
        assert_eq!(sources.len(), 4, "{sources:?}");
        assert_eq!(
            sources[2],
            AptSource {
                uri: "http://mirror.lan/debian".into(),
                suites: vec!["bookworm".into()],
                components: vec!["main".into(), "contrib".into()],
                options: vec![],
            }
        );
        assert_eq!(
            mirror_argument(&sources, "trixie").as_deref(),
            Some("http://mirror.lan/debian")
        );
    }

    #[test]
    fn one_line_options_that_a_mirror_needs_are_kept() {
        let text = "deb [ trusted=yes arch=amd64 ] http://127.0.0.1:3142/debian stable main\n";
        let sources = parse_one_line(text);
        assert_eq!(
            mirror_argument(&sources, "trixie").as_deref(),
            Some("deb [trusted=yes] http://127.0.0.1:3142/debian trixie main")
        );
    }

    #[test]
    fn deb822_sources_give_the_debian_archive() {
        let text = "\
Types: deb
URIs: https://apt.example/node_20.x
Suites: nodistro
Components: main

Types: deb-src
URIs: http://src.lan/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://old.lan/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
# the archive itself
URIs: http://proxy.lan:3142/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://proxy.lan:3142/debian-security
Suites: bookworm-security
Components: main
";
        let sources = parse_deb822(text);
        assert_eq!(sources.len(), 3, "{sources:?}");
        assert_eq!(sources[1].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            mirror_argument(&sources, "trixie").as_deref(),
            Some(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://proxy.lan:3142/debian trixie main"
            )
        );
    }

    #[test]
    fn deb822_inline_keys_and_several_uris() {
        let text = "\
Types: deb deb-src
URIs: http://a.lan/debian http://b.lan/debian
Suites: trixie
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----
";
        let sources = parse_deb822(text);
        assert_eq!(sources.len(), 2, "{sources:?}");
        assert_eq!(sources[1].uri, "http://b.lan/debian");
        // The inline key cannot go on one line: the URI alone.
        assert_eq!(
            mirror_argument(&sources, "trixie").as_deref(),
            Some("http://a.lan/debian")
        );
    }

    #[test]
    fn no_debian_archive_gives_none() {
        let mut sources = parse_one_line("deb http://archive.ubuntu.lan/ubuntu noble main\n");
        sources.extend(parse_deb822(
            "Types: deb\nURIs: http://m.lan/debian\nSuites: bookworm\nComponents: contrib\n",
        ));
        assert_eq!(mirror_argument(&sources, "trixie"), None);
    }
}
