//! `cargo xtask xcframework [CARGO FLAGS]`: `PosCoreFFI.xcframework`, the
//! binary target of the Swift package (`bindings/swift/Package.swift`) on
//! Apple platforms.
//!
//! NOT BUILT HERE: it needs macOS with Xcode (`xcodebuild`, `lipo`), and
//! refuses to run anywhere else. On a Mac it:
//! 1. builds `pos-ffi` as a static library with the `mobile` profile and the
//!    shipping features (`--no-default-features`; CARGO FLAGS add to them)
//!    for iOS devices, the iOS simulator (arm64 + x86_64) and macOS (arm64 +
//!    x86_64);
//! 2. generates the Swift bindings from an unstripped host build with the
//!    same features (release profile) into `bindings/swift/Sources/...`, as
//!    the Linux harness does from the debug build;
//! 3. joins each platform's slices with `lipo` and makes
//!    `target/apple/PosCoreFFI.xcframework` with `xcodebuild
//!    -create-xcframework` (headers: `PosCoreFFI.h` and `module.modulemap`);
//! 4. copies it to `bindings/swift/PosCoreFFI.xcframework` (gitignored;
//!    Package.swift uses it when present), zips it and prints the checksum
//!    that a release writes into Package.swift with the zip's URL.

use std::path::Path;
use std::process::Command;

use crate::util::{cargo, output, run, target_dir, workspace_root};

/// Rust targets per xcframework slice.
const SLICES: [(&str, &[&str]); 3] = [
    ("ios", &["aarch64-apple-ios"]),
    (
        "ios-simulator",
        &["aarch64-apple-ios-sim", "x86_64-apple-ios"],
    ),
    ("macos", &["aarch64-apple-darwin", "x86_64-apple-darwin"]),
];

/// `cargo xtask xcframework [CARGO FLAGS]`.
pub fn xcframework(cargo_flags: &[String]) -> Result<bool, String> {
    only_on_macos(std::env::consts::OS)?;
    let has_xcodebuild = Command::new("xcodebuild")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_xcodebuild {
        return Err("`cargo xtask xcframework` needs Xcode's xcodebuild \
                    (xcode-select --install is not enough: install Xcode)"
            .into());
    }
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    let missing: Vec<&str> = SLICES
        .iter()
        .flat_map(|(_, ts)| ts.iter().copied())
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        return Err(format!("`rustup target add {}` first", missing.join(" ")));
    }

    let out = target_dir().join("apple");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;

    // The bindings, from an unstripped build of the host with the same features.
    run(cargo()
        .args([
            "build",
            "-p",
            "pos-ffi",
            "--release",
            "--no-default-features",
        ])
        .args(cargo_flags))?;
    let generated = out.join("generated");
    crate::stages::bindgen(
        &target_dir().join("release/libpos_ffi.dylib"),
        "swift",
        &generated,
    )?;
    let headers = out.join("headers");
    std::fs::create_dir_all(&headers).map_err(|e| e.to_string())?;
    copy(
        &generated.join("PosCoreFFI.h"),
        &headers.join("PosCoreFFI.h"),
    )?;
    copy(
        &generated.join("PosCoreFFI.modulemap"),
        &headers.join("module.modulemap"),
    )?;
    let pkg = workspace_root().join("bindings/swift");
    let gen_dir = pkg.join("Sources/PosCore/Generated");
    std::fs::create_dir_all(&gen_dir).map_err(|e| e.to_string())?;
    copy(
        &generated.join("PosCore.swift"),
        &gen_dir.join("PosCore.swift"),
    )?;

    let mut create = Command::new("xcodebuild");
    create.arg("-create-xcframework");
    for (slice, targets) in SLICES {
        let mut libs = Vec::new();
        for t in targets {
            run(cargo()
                .args(["rustc", "-p", "pos-ffi", "--profile", "mobile"])
                .args(["--crate-type", "staticlib", "--target", t])
                .arg("--no-default-features")
                .args(cargo_flags))?;
            libs.push(target_dir().join(t).join("mobile/libpos_ffi.a"));
        }
        let joined = out.join(slice).join("libpos_ffi.a");
        std::fs::create_dir_all(joined.parent().ok_or("no parent")?).map_err(|e| e.to_string())?;
        run(Command::new("lipo")
            .arg("-create")
            .args(&libs)
            .arg("-output")
            .arg(&joined))?;
        create
            .arg("-library")
            .arg(&joined)
            .arg("-headers")
            .arg(&headers);
    }
    let framework = out.join("PosCoreFFI.xcframework");
    run(create.arg("-output").arg(&framework))?;

    let local = pkg.join("PosCoreFFI.xcframework");
    let _ = std::fs::remove_dir_all(&local);
    run(Command::new("cp").arg("-R").arg(&framework).arg(&local))?;
    let zip = out.join("PosCoreFFI.xcframework.zip");
    run(Command::new("ditto")
        .args(["-c", "-k", "--sequesterRsrc", "--keepParent"])
        .arg(&framework)
        .arg(&zip))?;
    let checksum = output(
        Command::new("swift")
            .args(["package", "compute-checksum"])
            .arg(&zip)
            .current_dir(&pkg),
    )
    .unwrap_or_default();
    println!("xcframework: {}", framework.display());
    println!("local copy (Package.swift uses it): {}", local.display());
    println!("release zip: {}", zip.display());
    println!(
        "its checksum: {} (a release sets xcframeworkURL and xcframeworkChecksum in Package.swift)",
        checksum.trim()
    );
    Ok(true)
}

/// Refuses every OS but macOS, saying why.
fn only_on_macos(os: &str) -> Result<(), String> {
    if os == "macos" {
        return Ok(());
    }
    Err(format!(
        "`cargo xtask xcframework` runs on macOS only (it needs Xcode's xcodebuild and lipo \
         and Apple's SDKs); this is {os}. Nothing was built. See docs/packaging.md."
    ))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {}: {e}", from.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_everywhere_but_macos() {
        let e = only_on_macos("linux").unwrap_err();
        assert!(
            e.contains("macOS only") && e.contains("this is linux"),
            "{e}"
        );
        assert_eq!(only_on_macos("macos"), Ok(()));
    }
}
