//! `cargo xtask aar [CARGO FLAGS]`: the Android side of the Android library
//! module (`bindings/kotlin`, an AAR once Gradle assembles it).
//!
//! NOT BUILT HERE: these machines have no Android NDK, SDK or Gradle, so
//! only the checks below run here (they fail with a message naming what is
//! missing). On a machine with them, it:
//! 1. builds `pos-ffi` for the four Android ABIs with cargo-ndk, profile
//!    `mobile`, shipping features (`--no-default-features`; CARGO FLAGS add
//!    to them, e.g. `--features simulator` for the demo app's flavour), as a
//!    cdylib only, unstripped so that the bindings can be generated from it
//!    (16 KB page alignment comes from `.cargo/config.toml`);
//! 2. generates the Kotlin bindings with `android = true`
//!    (`bindings/kotlin/android/uniffi-android.toml`, merged over
//!    `bindings/ffi/uniffi.toml`) into `bindings/kotlin/build/generated-android`;
//! 3. strips a copy of each library with the NDK's `llvm-strip` into
//!    `bindings/kotlin/build/jniLibs/<abi>/libpos_ffi.so`;
//! 4. runs `gradle assembleRelease` in `bindings/kotlin` when Gradle is on
//!    PATH (the AAR lands in `bindings/kotlin/build/gradle/outputs/aar/`),
//!    else says how to.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cargo, on_path, output, run, target_dir, workspace_root};

/// Android ABI, Rust target.
const ABIS: [(&str, &str); 4] = [
    ("arm64-v8a", "aarch64-linux-android"),
    ("armeabi-v7a", "armv7-linux-androideabi"),
    ("x86_64", "x86_64-linux-android"),
    ("x86", "i686-linux-android"),
];
/// The module's `minSdk` (bindings/kotlin/build.gradle.kts).
const MIN_SDK: &str = "24";

/// `cargo xtask aar [CARGO FLAGS]`.
pub fn aar(cargo_flags: &[String]) -> Result<bool, String> {
    let has_cargo_ndk = cargo()
        .args(["ndk", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]));
    let ndk = prerequisites(
        has_cargo_ndk,
        std::env::var_os("ANDROID_NDK_HOME"),
        installed.as_deref(),
    )?;

    let root = workspace_root().join("bindings/kotlin");
    for (abi, triple) in ABIS {
        eprintln!("xtask: pos-ffi for {abi} ({triple})");
        run(cargo()
            .args(["ndk", "-t", abi, "--platform", MIN_SDK, "rustc"])
            .args([
                "-p",
                "pos-ffi",
                "--profile",
                "mobile",
                "--crate-type",
                "cdylib",
            ])
            .arg("--no-default-features")
            .args(cargo_flags)
            // Kept for uniffi-bindgen (it reads the UniFFI metadata from the
            // symbols); the copies Gradle packs are stripped below.
            .env("CARGO_PROFILE_MOBILE_STRIP", "none")
            .env("ANDROID_NDK_HOME", &ndk))?;
    }

    let built = |triple: &str| {
        target_dir()
            .join(triple)
            .join("mobile")
            .join("libpos_ffi.so")
    };
    let generated = root.join("build/generated-android");
    crate::stages::bindgen_with(
        &built(ABIS[0].1),
        "kotlin",
        Some(&root.join("android/uniffi-android.toml")),
        &generated,
    )?;

    let strip = llvm_strip(&ndk)?;
    for (abi, triple) in ABIS {
        let dir = root.join("build/jniLibs").join(abi);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let to = dir.join("libpos_ffi.so");
        std::fs::copy(built(triple), &to).map_err(|e| format!("copying for {abi}: {e}"))?;
        run(Command::new(&strip).arg("--strip-all").arg(&to))?;
    }

    if on_path("gradle").is_some() {
        run(Command::new("gradle")
            .arg("assembleRelease")
            .current_dir(&root))?;
        println!("AAR: {}", root.join("build/gradle/outputs/aar").display());
    } else {
        println!(
            "libraries in {} and bindings in {}; no Gradle on PATH: run \
             `gradle assembleRelease` in {} (the AAR lands in build/gradle/outputs/aar/)",
            root.join("build/jniLibs").display(),
            generated.display(),
            root.display()
        );
    }
    Ok(true)
}

/// Checks what the build needs, in order, and returns the NDK's folder; the
/// error names the first thing missing and how to get it.
fn prerequisites(
    has_cargo_ndk: bool,
    ndk_home: Option<OsString>,
    installed_targets: Option<&str>,
) -> Result<PathBuf, String> {
    if !has_cargo_ndk {
        return Err(
            "`cargo xtask aar` needs cargo-ndk, which is not installed: \
                    `cargo install cargo-ndk` (it is not installed on these machines: \
                    the Android build is not built here)"
                .into(),
        );
    }
    let ndk = match ndk_home.filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => {
            return Err(
                "`cargo xtask aar` needs the Android NDK: set ANDROID_NDK_HOME to \
                        its folder (e.g. $ANDROID_HOME/ndk/<version>, r27 or later); \
                        there is none on these machines"
                    .into(),
            )
        }
    };
    if !ndk.join("source.properties").is_file() {
        return Err(format!(
            "ANDROID_NDK_HOME={} is not an Android NDK (it has no source.properties)",
            ndk.display()
        ));
    }
    let installed: Vec<&str> = installed_targets
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .collect();
    let missing: Vec<&str> = ABIS
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| !installed.contains(t))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the Rust standard library is missing for {}: `rustup target add {}`",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    Ok(ndk)
}

/// The NDK's `llvm-strip` for this host.
fn llvm_strip(ndk: &Path) -> Result<PathBuf, String> {
    let prebuilt = ndk.join("toolchains/llvm/prebuilt");
    let host = match std::env::consts::OS {
        "linux" => "linux-x86_64",
        "macos" => "darwin-x86_64",
        "windows" => "windows-x86_64",
        other => return Err(format!("no NDK prebuilt tools for {other}")),
    };
    let strip = prebuilt.join(host).join("bin/llvm-strip");
    if strip.is_file() {
        Ok(strip)
    } else {
        Err(format!("{} is missing", strip.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = "x86_64-unknown-linux-gnu\naarch64-linux-android\n\
                       armv7-linux-androideabi\nx86_64-linux-android\ni686-linux-android\n";

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-aar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn without_cargo_ndk_it_says_so() {
        let e = prerequisites(false, Some("/nowhere".into()), Some(ALL)).unwrap_err();
        assert!(e.contains("cargo install cargo-ndk"), "{e}");
    }

    #[test]
    fn without_the_ndk_it_names_android_ndk_home() {
        for home in [None, Some(OsString::new())] {
            let e = prerequisites(true, home, Some(ALL)).unwrap_err();
            assert!(e.contains("set ANDROID_NDK_HOME"), "{e}");
        }
        let empty = temp_dir("empty");
        let e = prerequisites(true, Some(empty.clone().into()), Some(ALL)).unwrap_err();
        assert!(e.contains("is not an Android NDK"), "{e}");
        let _ = std::fs::remove_dir_all(empty);
    }

    #[test]
    fn missing_rust_targets_are_named() {
        let ndk = temp_dir("ndk");
        std::fs::write(
            ndk.join("source.properties"),
            "Pkg.Revision = 27.2.12479018\n",
        )
        .expect("write");
        let e = prerequisites(
            true,
            Some(ndk.clone().into()),
            Some("aarch64-linux-android\n"),
        )
        .unwrap_err();
        assert!(
            e.contains(
                "rustup target add armv7-linux-androideabi x86_64-linux-android i686-linux-android"
            ),
            "{e}"
        );
        assert_eq!(
            prerequisites(true, Some(ndk.clone().into()), Some(ALL)),
            Ok(ndk.clone())
        );
        let _ = std::fs::remove_dir_all(ndk);
    }
}
