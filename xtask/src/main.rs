//! `cargo xtask`: the project's one entry point for building and testing.
//!
//! `cargo xtask test` is exactly what CI runs (`.ci/run`). It installs what is
//! missing (Debian packages, the Kotlin compiler, a Swift root), then runs the
//! Rust checks and tests, generates the Kotlin and Swift bindings from the
//! unstripped library, and runs the Kotlin (JUnit 5) and Swift (XCTest)
//! harnesses against that same library. It ends with one line per stage and
//! exits non-zero if any stage failed or ran no test.
//!
//! Other commands: `demo` (the shop's day), `size` (the shipping library's
//! size), `fuzz`, `soak`, `install`, and the shipping artifacts `package`
//! (the JVM jar), `aar` and `xcframework` (`docs/packaging.md`); see `USAGE`. Everything uses only the
//! standard library so that the xtask itself builds in seconds.

#![allow(clippy::print_stdout)]

mod android;
mod apple;
mod bench;
mod docs_check;
mod install;
mod layers;
mod package;
mod stages;
mod util;

use std::process::ExitCode;

use stages::{Outcome, Stage};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo [FLAGS]                      the shop's day with an outage (pos-demo; `demo --help`)
  test [--only rust|kotlin|swift]   everything CI runs (installs what is missing)
  fuzz [SECONDS]                    fuzz the reader frames and secure link (default 60 s each, cargo-fuzz on stable)
  layers                            check that pos-rules is sans-I/O and no modules import each other
  size                              build pos-ffi with the `mobile` profile and print its size
  bench [--only NAMES]              every benchmark (release builds), then one table (docs/benchmarks.md)
  soak [KILLS]                      the store crash test with KILLS SIGKILLs (default 2000),
                                    forwarding cancelled at 2,000 seeded random points,
                                    then the forwarding fault suite with 10,000 payments per mode
  install                           only install the toolchains and packages
  package [CARGO FLAGS]             target/package/pos-core-jvm-<version>.jar (+ -sources.jar):
                                    Kotlin classes and a release libpos_ffi.so for JNA;
                                    flags go to `cargo build -p pos-ffi --release`
  aar [CARGO FLAGS]                 the Android libraries of the four ABIs (cargo-ndk, ANDROID_NDK_HOME)
                                    and the Android bindings; not built here (no NDK)
  xcframework [CARGO FLAGS]         PosCoreFFI.xcframework for the Swift package (macOS and Xcode only)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => install::demo().and_then(|()| stages::demo(&args[1..])),
        Some("fuzz") => stages::fuzz(args.get(1).map(String::as_str).unwrap_or("60")),
        Some("size") => stages::size().map(|_| true),
        Some("bench") => bench::bench(&args[1..]),
        Some("layers") => layers::check().map(|()| true),
        Some("soak") => stages::soak(args.get(1).map(String::as_str).unwrap_or("2000")),
        Some("install") => install::all(&install::Needs::everything()).map(|_| true),
        Some("package") => package::package(&args[1..]),
        Some("aar") => android::aar(&args[1..]),
        Some("xcframework") => apple::xcframework(&args[1..]),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: &[String]) -> Result<bool, String> {
    let only = match args {
        [] => None,
        [flag, which] if flag == "--only" => Some(
            Stage::parse(which)
                .ok_or_else(|| format!("--only takes rust, kotlin or swift, not {which:?}"))?,
        ),
        _ => return Err(format!("unexpected arguments {args:?}\n{USAGE}")),
    };
    let wanted = |s: Stage| only.is_none_or(|o| o == s);
    let started = std::time::Instant::now();

    let needs = install::Needs {
        kotlin: wanted(Stage::Kotlin),
        swift: wanted(Stage::Swift),
        // btleplug's Linux backend links libdbus; every Rust build needs it.
        rust: true,
    };
    let tools = install::all(&needs)?;
    let setup = started.elapsed();

    let mut outcomes: Vec<Outcome> = Vec::new();
    if wanted(Stage::Rust) {
        outcomes.push(stages::rust());
    }
    if wanted(Stage::Kotlin) || wanted(Stage::Swift) {
        match stages::build_ffi_library() {
            Ok(lib) => {
                if wanted(Stage::Kotlin) {
                    outcomes.push(stages::kotlin(&lib, &tools));
                }
                if wanted(Stage::Swift) {
                    outcomes.push(stages::swift(&lib, &tools));
                }
            }
            Err(e) => {
                eprintln!("xtask: building the FFI library failed: {e}");
                for s in [Stage::Kotlin, Stage::Swift]
                    .into_iter()
                    .filter(|s| wanted(*s))
                {
                    outcomes.push(Outcome::broken(s, "FFI library did not build"));
                }
            }
        }
    }

    println!();
    println!(
        "== summary (setup {:.0?}, total {:.0?}) ==",
        setup,
        started.elapsed()
    );
    let mut ok = true;
    let (mut passed, mut failed) = (0, 0);
    for o in &outcomes {
        println!("{}", o.summary_line());
        ok &= o.is_success();
        passed += o.passed;
        failed += o.failed;
    }
    println!("total: {passed} passed, {failed} failed");
    if !ok {
        println!("FAILED");
    }
    Ok(ok)
}
