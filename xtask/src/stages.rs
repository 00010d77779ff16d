//! The stages of `cargo xtask test`: Rust, the FFI library and its bindings,
//! Kotlin on the JVM, Swift under XCTest; and `cargo xtask size`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::install::{Swift, Tools};
use crate::util::{cargo, count_before, run, run_tee, target_dir, workspace_root};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Rust,
    Kotlin,
    Swift,
}

impl Stage {
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "rust" => Some(Stage::Rust),
            "kotlin" => Some(Stage::Kotlin),
            "swift" => Some(Stage::Swift),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Rust => "rust",
            Stage::Kotlin => "kotlin",
            Stage::Swift => "swift",
        }
    }
}

/// What one stage did.
#[derive(Debug)]
pub struct Outcome {
    stage: Stage,
    pub passed: u64,
    pub failed: u64,
    /// A step failed outside the tests themselves (format, lint, build).
    problem: Option<String>,
    seconds: u64,
}

impl Outcome {
    pub fn broken(stage: Stage, why: &str) -> Self {
        Outcome {
            stage,
            passed: 0,
            failed: 0,
            problem: Some(why.to_owned()),
            seconds: 0,
        }
    }

    /// Success means: no problem, no failed test, and at least one test ran.
    pub fn is_success(&self) -> bool {
        self.problem.is_none() && self.failed == 0 && self.passed > 0
    }

    /// `kotlin: 12 passed, 0 failed (14 s)` — the plain line CI reads.
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "{}: {} passed, {} failed",
            self.stage.name(),
            self.passed,
            self.failed
        );
        line.push_str(&format!(" ({} s)", self.seconds));
        match (&self.problem, self.passed + self.failed) {
            (Some(p), _) => line.push_str(&format!(" -- FAILED: {p}")),
            (None, 0) => line.push_str(" -- FAILED: no test ran"),
            _ if self.failed > 0 => line.push_str(" -- FAILED"),
            _ => {}
        }
        line
    }
}

fn finish(
    stage: Stage,
    started: Instant,
    passed: u64,
    failed: u64,
    problem: Option<String>,
) -> Outcome {
    let o = Outcome {
        stage,
        passed,
        failed,
        problem,
        seconds: started.elapsed().as_secs(),
    };
    println!("{}", o.summary_line());
    o
}

fn banner(title: &str) {
    println!("\n== {title} ==");
}

/// Formatting, the layering rules, lints, the API docs (`cargo doc` with
/// `-D warnings`), then every Rust test of the workspace, with the
/// btleplug transport (`pos-reader/ble`) built and linked. The
/// `uniffi-bindgen` crate is linted and tested in runs of its own, so that
/// its `cli` feature does not leak into the pos-ffi build (and force a
/// rebuild of it).
pub fn rust() -> Outcome {
    banner("rust");
    let started = Instant::now();
    let powercut = workspace_root()
        .join("tests")
        .join("powercut")
        .join("Cargo.toml")
        .display()
        .to_string();
    if let Err(e) = run(cargo().args(["fmt", "--all", "--check"]))
        .and_then(|()| run(cargo().args(["fmt", "--manifest-path", &powercut, "--check"])))
    {
        return finish(Stage::Rust, started, 0, 0, Some(format!("cargo fmt: {e}")));
    }
    if let Err(e) = crate::layers::check() {
        return finish(Stage::Rust, started, 0, 0, Some(format!("layers: {e}")));
    }
    // `cargo clippy <what> --all-targets -- -D warnings`, with `env`.
    let lint = |what: &[&str], env: Option<(&str, PathBuf)>| {
        let mut c = cargo();
        c.arg("clippy")
            .args(what)
            .args(["--all-targets", "--", "-D", "warnings"]);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.status().is_ok_and(|s| s.success())
    };
    // The workspace with the btleplug transport and its FFI (`BleCentral`),
    // which must compile here too (the tests below link the transport);
    // then the bindings generator (its own feature set) and the power-cut
    // rig (outside the workspace) on their own.
    let clippy = lint(
        &[
            "--workspace",
            "--exclude",
            "uniffi-bindgen",
            "--features",
            "pos-reader/ble,pos-ffi/ble",
        ],
        None,
    ) && lint(&["-p", "uniffi-bindgen"], None)
        && lint(
            &["--manifest-path", &powercut],
            Some(("CARGO_TARGET_DIR", target_dir())),
        );
    if !clippy {
        return finish(
            Stage::Rust,
            started,
            0,
            0,
            Some("cargo clippy found problems".into()),
        );
    }
    // The API docs build without a warning (broken or private links).
    if let Err(e) = run(cargo().env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "--no-deps",
        "--workspace",
        "--exclude",
        "uniffi-bindgen",
    ])) {
        return finish(Stage::Rust, started, 0, 0, Some(format!("cargo doc: {e}")));
    }
    let (ok, out) = match run_tee(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "uniffi-bindgen",
        "--features",
        "pos-reader/ble",
        "--no-fail-fast",
    ])) {
        Ok(r) => r,
        Err(e) => return finish(Stage::Rust, started, 0, 0, Some(e)),
    };
    let mut passed = count_before(&out, "test result:", &["passed"]);
    let mut failed = count_before(&out, "test result:", &["failed"]);
    let mut problem =
        (!ok && failed == 0).then(|| "cargo test failed before running the tests".to_owned());
    // The bindings generator's own tests (its change to the Kotlin).
    match run_tee(cargo().args(["test", "-p", "uniffi-bindgen"])) {
        Ok((ok, out)) => {
            let f = count_before(&out, "test result:", &["failed"]);
            passed += count_before(&out, "test result:", &["passed"]);
            failed += f;
            if !ok && f == 0 && problem.is_none() {
                problem = Some("the uniffi-bindgen tests failed before running".to_owned());
            }
        }
        Err(e) => problem = problem.or(Some(e)),
    }
    // The power-cut rig (its own workspace: a FUSE mount, one test at a
    // time), 200 cuts.
    banner("power cuts (tests/powercut/, FUSE)");
    match run_tee(&mut powercut_test(None)) {
        Ok((ok, out)) => {
            let p = count_before(&out, "test result:", &["passed"]);
            let f = count_before(&out, "test result:", &["failed"]);
            passed += p;
            failed += f;
            if !ok && f == 0 && problem.is_none() {
                problem = Some("the power-cut tests failed before running".to_owned());
            }
        }
        Err(e) => problem = problem.or(Some(e)),
    }
    finish(Stage::Rust, started, passed, failed, problem)
}

/// `cargo test` of the power-cut rig (`tests/powercut/`, outside the workspace),
/// built into the workspace's target folder; `cuts` overrides the number of
/// power cuts (200 by default).
fn powercut_test(cuts: Option<&str>) -> Command {
    let mut c = cargo();
    c.args([
        "test",
        "--manifest-path",
        &workspace_root()
            .join("tests")
            .join("powercut")
            .join("Cargo.toml")
            .display()
            .to_string(),
        "--",
        "--test-threads=1",
    ])
    .env("CARGO_TARGET_DIR", target_dir());
    if let Some(n) = cuts {
        c.env("POS_POWERCUT_CUTS", n);
    }
    c
}

/// Builds the unstripped debug `libpos_ffi.so` the harnesses load, with
/// the btleplug transport (`BleCentral`, which the Kotlin harness runs
/// against the BlueZ double), and the double itself.
pub fn build_ffi_library() -> Result<PathBuf, String> {
    banner("ffi library");
    run(cargo().args(["build", "-p", "pos-ffi", "--features", "ble"]))?;
    run(cargo().args(["build", "-p", "pos-bluez-double", "--bin", "bluez-double"]))?;
    let lib = target_dir()
        .join("debug")
        .join(format!("libpos_ffi.{}", std::env::consts::DLL_EXTENSION));
    if !lib.is_file() {
        return Err(format!("{} was not built", lib.display()));
    }
    Ok(lib)
}

/// Runs the workspace's uniffi-bindgen on `lib`.
pub(crate) fn bindgen(lib: &Path, language: &str, out_dir: &Path) -> Result<(), String> {
    bindgen_with(lib, language, None, out_dir)
}

/// Runs the workspace's uniffi-bindgen on `lib` into a fresh `out_dir`,
/// with `config` (a uniffi.toml) instead of the crate's own when given.
pub(crate) fn bindgen_with(
    lib: &Path,
    language: &str,
    config: Option<&Path>,
    out_dir: &Path,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::create_dir_all(out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "uniffi-bindgen",
        "--",
        "generate",
        "--library",
    ])
    .arg(lib)
    .args(["--language", language, "--no-format"]);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    run(cmd.arg("--out-dir").arg(out_dir))
}

/// Copies the Swift bindings uniffi-bindgen wrote to `generated` into a
/// SwiftPM package: the C header and module map into `ffi_dir`, the Swift
/// into `swift_dir`. A file is rewritten only when it changed, so SwiftPM
/// does not rebuild for nothing.
pub(crate) fn install_swift_bindings(
    generated: &Path,
    ffi_dir: &Path,
    swift_dir: &Path,
) -> Result<(), String> {
    for d in [ffi_dir, swift_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    for (from, to) in [
        ("PosCoreFFI.h", ffi_dir.join("PosCoreFFI.h")),
        ("PosCoreFFI.modulemap", ffi_dir.join("module.modulemap")),
        ("PosCore.swift", swift_dir.join("PosCore.swift")),
    ] {
        let src = generated.join(from);
        let new = std::fs::read(&src).map_err(|e| format!("reading {}: {e}", src.display()))?;
        if std::fs::read(&to).ok().as_deref() != Some(new.as_slice()) {
            std::fs::write(&to, new).map_err(|e| format!("writing {}: {e}", to.display()))?;
        }
    }
    Ok(())
}

/// Every file under `dir` with the extension `ext`, sorted.
pub(crate) fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A cheap fingerprint of files (path, size, content hash) to skip an
/// unchanged Kotlin compilation on warm runs.
fn fingerprint(files: &[PathBuf]) -> String {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// Runs one harness stage, timing it and turning an error into a failed outcome.
fn harness(
    stage: Stage,
    run: impl FnOnce() -> Result<(u64, u64, Option<String>), String>,
) -> Outcome {
    banner(stage.name());
    let started = Instant::now();
    match run() {
        Ok((passed, failed, problem)) => finish(stage, started, passed, failed, problem),
        Err(e) => finish(stage, started, 0, 0, Some(e)),
    }
}

/// Kotlin bindings + hand-written Kotlin + JUnit 5 tests, on the JVM; the
/// jar consumer test (one test: [`crate::package::consumer_test`]); then
/// the Android demo's app model (android-demo/model). All count in this
/// stage's totals.
pub fn kotlin(lib: &Path, tools: &Tools) -> Outcome {
    harness(Stage::Kotlin, || {
        let home = tools.kotlin_home.as_ref().ok_or("no Kotlin compiler")?;
        kotlin_inner(lib, home)
    })
}

fn kotlin_inner(lib: &Path, home: &Path) -> Result<(u64, u64, Option<String>), String> {
    let root = workspace_root().join("bindings/kotlin");
    let build = root.join("build");
    let generated = build.join("generated");
    bindgen(lib, "kotlin", &generated)?;
    crate::docs_check::kotlin(&generated)?;

    let junit = PathBuf::from("/usr/share/java/junit-platform-console-standalone.jar");
    let jna = PathBuf::from("/usr/share/java/jna.jar");
    let klib = home.join("lib");
    let jars = [
        jna,
        junit.clone(),
        klib.join("kotlin-stdlib.jar"),
        klib.join("kotlinx-coroutines-core-jvm.jar"),
        klib.join("kotlin-test.jar"),
        klib.join("kotlin-test-junit5.jar"),
    ];
    if let Some(missing) = jars.iter().find(|j| !j.is_file()) {
        return Err(format!("{} is missing", missing.display()));
    }
    let lib_dir = lib.parent().ok_or("library has no folder")?;

    // The library's classes (generated bindings and src/main) on their own,
    // as the jar ships them; the tests (every other folder of src/) are
    // compiled against them below, as a friend module (they may use
    // `internal` members).
    let mut main_sources = files_with_ext(&generated, "kt");
    main_sources.extend(files_with_ext(&root.join("src/main"), "kt"));
    let main_classes = build.join("main-classes");
    compile_kotlin(home, &jars, &main_sources, &main_classes)?;
    let main_stamp = PathBuf::from(format!("{}.fingerprint", main_classes.display()));
    // The jar consumer test: those classes and this library packed as the
    // JVM artifact is (`cargo xtask package`), and a program compiled and
    // run against that jar alone.
    let (cp, cf) = match crate::package::consumer_test(home, &main_classes, &main_stamp, lib) {
        Ok(()) => (1, 0),
        Err(e) => {
            eprintln!("xtask: the jar consumer test failed: {e}");
            (0, 1)
        }
    };
    println!("jar consumer: {cp} passed, {cf} failed (counted in the kotlin line)");

    let test_sources: Vec<PathBuf> = files_with_ext(&root.join("src"), "kt")
        .into_iter()
        .filter(|f| !f.starts_with(root.join("src/main")))
        .collect();
    let mut test_jars = vec![main_classes.clone()];
    test_jars.extend(jars.iter().cloned());
    let classes = build.join("classes");
    compile_kotlin_with(
        home,
        &test_jars,
        &test_sources,
        std::slice::from_ref(&main_stamp),
        &[format!("-Xfriend-paths={}", main_classes.display())],
        &classes,
    )?;

    // `BleCentralTest` runs btleplug against the BlueZ double, on its own
    // private system bus; the other tests do not touch it.
    let double = BluezDouble::start()?;
    let run = junit_console(
        lib_dir,
        &test_jars,
        &junit,
        &classes,
        &[("DBUS_SYSTEM_BUS_ADDRESS", double.address.as_str())],
    );
    double.stop();
    let (passed, failed, problem) = run?;
    let (passed, failed) = (passed + cp, failed + cf);

    // The Android demo's model: plain Kotlin over the library's classes
    // only, as another module (as the app's Gradle build sees the library
    // module: no test helpers, no `internal` members), with its tests.
    let demo = workspace_root().join("android-demo/model");
    let sources = files_with_ext(&demo.join("src"), "kt");
    let classes = demo.join("build/classes");
    let (dp, df, dproblem) = match compile_kotlin_with(
        home,
        &test_jars,
        &sources,
        std::slice::from_ref(&main_stamp),
        &[],
        &classes,
    )
    .and_then(|()| junit_console(lib_dir, &test_jars, &junit, &classes, &[]))
    {
        Ok(r) => r,
        Err(e) => (0, 0, Some(e)),
    };
    println!("android-demo: {dp} passed, {df} failed (counted in the kotlin line)");
    let dproblem = dproblem.map(|p| format!("android-demo: {p}"));
    Ok((passed + dp, failed + df, problem.or(dproblem)))
}

/// The BlueZ double (`tests/bluez`, `bluez-double`) as a process: a
/// private `dbus-daemon` and one simulated reader behind btleplug's BlueZ.
struct BluezDouble {
    child: std::process::Child,
    address: String,
}

impl BluezDouble {
    /// Starts it and waits for the bus address it prints once ready.
    fn start() -> Result<BluezDouble, String> {
        use std::io::BufRead as _;
        let bin = target_dir().join("debug").join("bluez-double");
        let mut child = Command::new(&bin)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| std::io::BufReader::new(out).read_line(&mut line));
        let address = line
            .trim()
            .strip_prefix("DBUS_SYSTEM_BUS_ADDRESS=")
            .map(str::to_owned);
        match (read, address) {
            (Some(Ok(_)), Some(address)) => Ok(BluezDouble { child, address }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the BlueZ double did not start (it printed {line:?})"
                ))
            }
        }
    }

    /// Closes its stdin (it then stops its bus) and waits for it.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Compiles `sources` into `classes` with kotlinc, unless the same sources,
/// compiler and classpath were compiled there already (`<classes>.fingerprint`).
pub(crate) fn compile_kotlin(
    home: &Path,
    jars: &[PathBuf],
    sources: &[PathBuf],
    classes: &Path,
) -> Result<(), String> {
    compile_kotlin_with(home, jars, sources, &[], &[], classes)
}

/// [`compile_kotlin`] with more kotlinc arguments, and more files whose
/// content decides whether to compile again (the fingerprint of classes on
/// the classpath, say).
pub(crate) fn compile_kotlin_with(
    home: &Path,
    jars: &[PathBuf],
    sources: &[PathBuf],
    inputs: &[PathBuf],
    args: &[String],
    classes: &Path,
) -> Result<(), String> {
    let cp = std::env::join_paths(jars).map_err(|e| e.to_string())?;
    let stamp = PathBuf::from(format!("{}.fingerprint", classes.display()));
    // The compiler version, the classpath and the arguments are part of
    // what was compiled.
    let mut fingerprinted = sources.to_vec();
    fingerprinted.extend(inputs.iter().cloned());
    let print = format!(
        "{}-{}-{}-{}",
        crate::install::KOTLIN_VERSION,
        cp.to_string_lossy(),
        args.join(" "),
        fingerprint(&fingerprinted)
    );
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(print.as_str()) && classes.is_dir() {
        eprintln!(
            "xtask: Kotlin sources unchanged, reusing {}",
            classes.display()
        );
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(classes);
    let _ = std::fs::remove_file(&stamp);
    run(Command::new(home.join("bin/kotlinc"))
        .args(["-jvm-target", "17", "-nowarn"])
        .args(args)
        .arg("-cp")
        .arg(&cp)
        .arg("-d")
        .arg(classes)
        .args(sources))?;
    std::fs::write(&stamp, &print).map_err(|e| e.to_string())
}

/// Runs every JUnit 5 test found in `classes` on the JVM against the
/// library in `lib_dir`; returns (passed, failed, problem).
fn junit_console(
    lib_dir: &Path,
    jars: &[PathBuf],
    junit: &Path,
    classes: &Path,
    env: &[(&str, &str)],
) -> Result<(u64, u64, Option<String>), String> {
    let mut run_cp = vec![classes.to_path_buf()];
    run_cp.extend(jars.iter().filter(|j| j.as_path() != junit).cloned());
    let run_cp = std::env::join_paths(&run_cp).map_err(|e| e.to_string())?;
    let (ok, out) = run_tee(
        Command::new("java")
            .envs(env.iter().copied())
            .arg(format!("-Djna.library.path={}", lib_dir.display()))
            // ScenarioTest's folder when POS_SCENARIOS is not set (that and
            // POS_SCENARIO reach the JVM through the environment).
            .arg(format!(
                "-Dpos.scenarios={}",
                workspace_root().join("tests/scenarios").display()
            ))
            .arg("-jar")
            .arg(junit)
            .args([
                "--disable-banner",
                "--details=tree",
                "--fail-if-no-tests",
                "--scan-class-path",
                "-cp",
            ])
            .arg(&run_cp),
    )?;
    let passed = count_before(&out, "tests successful", &["tests", "successful"]);
    let failed = count_before(&out, "tests failed", &["tests", "failed"]);
    let problem = (!ok && failed == 0).then(|| "the JUnit console failed".to_owned());
    Ok((passed, failed, problem))
}

/// Swift bindings + hand-written Swift + XCTest, natively or in the trixie root.
pub fn swift(lib: &Path, tools: &Tools) -> Outcome {
    harness(Stage::Swift, || {
        let swift = tools.swift.as_ref().ok_or("no Swift toolchain")?;
        swift_inner(lib, swift)
    })
}

fn swift_inner(lib: &Path, swift: &Swift) -> Result<(u64, u64, Option<String>), String> {
    let pkg = workspace_root().join("bindings/swift");
    let tmp = target_dir().join("uniffi-swift");
    bindgen(lib, "swift", &tmp)?;
    crate::docs_check::swift(&tmp.join("PosCore.swift"))?;
    // Neither folder is in git (both hold only generated files).
    install_swift_bindings(
        &tmp,
        &pkg.join("Sources/PosCoreFFI"),
        &pkg.join("Sources/PosCore/Generated"),
    )?;
    let (scenarios, only) = swift_scenario_cases(&pkg)?;

    let lib_dir = lib.parent().ok_or("library has no folder")?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut env = format!(
        "export POS_FFI_LIB_DIR={} POS_SCENARIOS={}",
        quote(&lib_dir.to_string_lossy()),
        quote(&scenarios.to_string_lossy())
    );
    if let Some(name) = &only {
        env.push_str(&format!(" POS_SCENARIO={}", quote(name)));
    }
    let (passed, failed, problem) = swift_package_tests(&pkg, &env, swift, &scenarios)?;

    // The iOS demo's app model (ios-demo/PosDemoKit), a package over this one
    // by relative path: built and tested the same way, in the same Swift root
    // (the checkout is mounted there at its own path, so ../../bindings/swift
    // resolves); its tests count in the swift totals.
    let demo = workspace_root().join("ios-demo/PosDemoKit");
    let (dp, df, dproblem) = match swift_package_tests(&demo, &env, swift, &scenarios) {
        Ok(r) => r,
        Err(e) => (0, 0, Some(e)),
    };
    println!("ios-demo: {dp} passed, {df} failed (counted in the swift line)");
    let dproblem = dproblem.map(|p| format!("ios-demo: {p}"));
    Ok((passed + dp, failed + df, problem.or(dproblem)))
}

/// `swift build --build-tests` then `swift test` in the package `pkg`,
/// natively or in the trixie root, with `env` (an `export ...` line);
/// returns (passed, failed, problem) from XCTest's last summary line.
fn swift_package_tests(
    pkg: &Path,
    env: &str,
    swift: &Swift,
    scenarios: &Path,
) -> Result<(u64, u64, Option<String>), String> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let script = format!(
        "cd {} && {env} && swift build --build-tests 2>&1 && \
         swift test --skip-build --disable-swift-testing 2>&1",
        quote(&pkg.to_string_lossy()),
    );
    let (ok, out) = match swift {
        Swift::Native => run_tee(Command::new("bash").args(["-c", &script]))?,
        Swift::Root(root) => run_tee(&mut in_swift_root(root, &script, scenarios)?)?,
    };
    // XCTest's last "Executed N tests, with M failures" line is the total.
    let last = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("Executed "))
        .unwrap_or("");
    let passed_and_failed =
        count_before(last, "Executed", &["test"]) + count_before(last, "Executed", &["tests"]);
    let failed = count_before(last, "Executed", &["failure"])
        + count_before(last, "Executed", &["failures"]);
    let passed = passed_and_failed.saturating_sub(failed);
    let problem = (!ok && failed == 0).then(|| "swift build or swift test failed".to_owned());
    Ok((passed, failed, problem))
}

/// The scenario suite's XCTest cases (docs/scenarios.md): one
/// `test_<name>` method per `*.json` of the scenarios' folder (`POS_SCENARIOS`,
/// else `tests/scenarios`; only `POS_SCENARIO`'s when set), written to the
/// test target's `ScenarioCases.generated.swift` (not in git), so that XCTest
/// counts each scenario. Returns the folder (absolute) and `POS_SCENARIO`.
fn swift_scenario_cases(pkg: &Path) -> Result<(PathBuf, Option<String>), String> {
    let dir = match std::env::var_os("POS_SCENARIOS").filter(|d| !d.is_empty()) {
        Some(d) => std::fs::canonicalize(&d)
            .map_err(|e| format!("POS_SCENARIOS={}: {e}", Path::new(&d).display()))?,
        None => workspace_root().join("tests/scenarios"),
    };
    let only = std::env::var("POS_SCENARIO").ok().filter(|n| !n.is_empty());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|n| only.as_deref().is_none_or(|o| o == n))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(match &only {
            Some(n) => format!("no scenario {n:?} in {}", dir.display()),
            None => format!("no scenario in {}", dir.display()),
        });
    }
    let mut methods = std::collections::BTreeMap::new();
    let mut text = String::from(
        "// Written by `cargo xtask test` (xtask/src/stages.rs) from the scenarios'\n\
         // folder: one XCTest case per scenario. Not in git; do not edit.\n\n\
         extension ScenarioTests {\n",
    );
    for name in &names {
        let method: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if let Some(other) = methods.insert(method.clone(), name) {
            return Err(format!(
                "scenarios {other:?} and {name:?} make the same Swift test name test_{method}"
            ));
        }
        // Rust's escapes of a string's Debug form are valid in Swift literals.
        text.push_str(&format!(
            "    func test_{method}() async throws {{ try await play({name:?}) }}\n"
        ));
    }
    text.push_str("}\n\n/// The scenarios this file has a test case for.\nlet scenarioCases: Set<String> = [\n");
    for name in &names {
        text.push_str(&format!("    {name:?},\n"));
    }
    text.push_str("]\n");
    let file = pkg.join("Tests/PosCoreTests/ScenarioCases.generated.swift");
    // Only rewrite when changed, so SwiftPM does not rebuild for nothing.
    if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&file, &text).map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    Ok((dir, only))
}

/// `unshare` gives the command a private mount namespace: /proc and the
/// checkout (and the target folder and the scenarios' folder, when they live
/// elsewhere) are mounted into the root at their own paths and vanish when
/// the command ends, whatever happens.
pub(crate) fn in_swift_root(
    root: &Path,
    script: &str,
    scenarios: &Path,
) -> Result<Command, String> {
    let ws = workspace_root();
    let mut binds = vec![ws.clone()];
    let target = target_dir();
    if !target.starts_with(&ws) {
        binds.push(target);
    }
    if !binds.iter().any(|b| scenarios.starts_with(b)) {
        binds.push(scenarios.to_path_buf());
    }
    let r = root.display();
    let mut mounts = format!("mount -t proc proc '{r}/proc' && ");
    for b in &binds {
        let b = b.display();
        mounts.push_str(&format!(
            "mkdir -p '{r}{b}' && mount --bind '{b}' '{r}{b}' && "
        ));
    }
    let inner = script.replace('\'', r"'\''");
    let outer = format!(
        "{mounts}exec chroot '{r}' /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin bash -c '{inner}'"
    );
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "bash", "-c", &outer]);
    Ok(c)
}

/// The shipping cdylib's budget on x86_64 (`docs/benchmarks.md`).
const SIZE_BUDGET: u64 = 4 * 1024 * 1024;

/// `cargo xtask size`: the phone library built with the `mobile` profile
/// for each feature set, with each set's cost over the shipping one. Fails
/// when the shipping one (`--no-default-features`) is over [`SIZE_BUDGET`].
///
/// Each library is built on its own with `cargo rustc --crate-type cdylib`,
/// as the Android and Apple recipes build theirs: when the same rustc run
/// also writes pos-ffi's rlib and staticlib (its `crate-type` list, which the
/// tests and the Swift harness need), the cdylib comes out about 1 MiB
/// larger.
pub fn size() -> Result<(), String> {
    println!(
        "pos-ffi cdylib, profile `mobile` (opt-level z, fat LTO, 1 codegen unit, stripped, unwinding kept), x86_64:"
    );
    let sets: [(&str, &[&str]); 5] = [
        (
            "shipping: --no-default-features (no HTTP gateway, no simulator, no btleplug)",
            &["--no-default-features"],
        ),
        (
            "+ http-gateway (ureq, rustls, webpki roots)",
            &["--no-default-features", "--features", "http-gateway"],
        ),
        (
            "+ simulator (simulated reader and processor; implies http-gateway)",
            &["--no-default-features", "--features", "simulator"],
        ),
        (
            "+ ble (btleplug; the Linux BlueZ backend here)",
            &["--no-default-features", "--features", "ble"],
        ),
        (
            "default features + ble (what the test harnesses load)",
            &["--features", "ble"],
        ),
    ];
    let mut measured = Vec::new();
    for (label, features) in sets {
        run(cargo()
            .args([
                "rustc",
                "-p",
                "pos-ffi",
                "--profile",
                "mobile",
                "--crate-type",
                "cdylib",
            ])
            .args(features))?;
        let p = target_dir()
            .join("mobile")
            .join(format!("libpos_ffi.{}", std::env::consts::DLL_EXTENSION));
        let bytes = std::fs::metadata(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .len();
        measured.push((label, bytes));
    }
    let shipping = measured[0].1;
    println!();
    for (label, bytes) in &measured {
        // One decimal of MiB and whole KiB, without floats.
        let tenths_mib = bytes * 10 / (1024 * 1024);
        let cost = if *bytes == shipping {
            String::new()
        } else {
            let delta = i128::from(*bytes) - i128::from(shipping);
            format!(", {delta:+} bytes over shipping ({:+} KiB)", delta / 1024)
        };
        println!(
            "  {bytes:>9} bytes ({}.{} MiB){cost}  {label}",
            tenths_mib / 10,
            tenths_mib % 10
        );
    }
    println!(
        "budget for the shipping cdylib on x86_64: {SIZE_BUDGET} bytes (4 MiB, docs/benchmarks.md)"
    );
    if shipping > SIZE_BUDGET {
        return Err(format!(
            "the shipping library is {shipping} bytes: {} over the budget",
            shipping - SIZE_BUDGET
        ));
    }
    println!(
        "shipping library within budget: {} bytes left",
        SIZE_BUDGET - shipping
    );
    Ok(())
}

/// The coverage-guided fuzz targets of `core/reader/fuzz`, run in turn.
const FUZZ_TARGETS: [&str; 2] = ["frames", "secure_frames"];

/// `cargo xtask fuzz [SECONDS]`: the coverage-guided fuzz targets of the
/// reader profile (`core/reader/fuzz`): the frame decoder and reassembler
/// (`frames`), and the secure link's handshake and sealed messages
/// (`secure_frames`), each for SECONDS, through cargo-fuzz and libFuzzer on
/// the stable toolchain (`--sanitizer none`: the sanitizers need nightly;
/// coverage guidance does not). Installs cargo-fuzz when missing. Fails on
/// any crash.
pub fn fuzz(seconds: &str) -> Result<bool, String> {
    if seconds.parse::<u32>().map_or(true, |s| s == 0) {
        return Err(format!(
            "fuzz takes a positive number of seconds, not {seconds:?}"
        ));
    }
    let installed = cargo()
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        banner("installing cargo-fuzz");
        run(cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let mut all_passed = true;
    for target in FUZZ_TARGETS {
        banner(&format!("fuzz: {target}, {seconds} s"));
        let status = cargo()
            .current_dir(workspace_root().join("core").join("reader"))
            .env(
                "CARGO_TARGET_DIR",
                crate::util::cache_dir().join("target-fuzz"),
            )
            .args(["fuzz", "run", target, "--sanitizer", "none", "--"])
            .arg(format!("-max_total_time={seconds}"))
            .status()
            .map_err(|e| format!("cannot start cargo fuzz: {e}"))?;
        all_passed &= status.success();
    }
    Ok(all_passed)
}

/// `cargo xtask demo [FLAGS]`: builds and runs `pos-demo` with the flags.
pub fn demo(flags: &[String]) -> Result<bool, String> {
    let status = cargo()
        .args(["run", "--quiet", "-p", "pos-demo", "--"])
        .args(flags)
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    Ok(status.success())
}

/// `cargo xtask soak [KILLS]`: the store's crash test with many more SIGKILLs
/// than the normal test run (`core/engine/tests/crash.rs`, `POS_CRASH_KILLS`).
pub fn soak(kills: &str) -> Result<bool, String> {
    if kills.parse::<u32>().map_or(true, |k| k == 0) {
        return Err(format!(
            "soak takes a positive number of kills, not {kills:?}"
        ));
    }
    let runs: [(String, &[&str], (&str, &str)); 3] = [
        (
            format!("soak: {kills} kills"),
            &["-p", "pos-core", "--test", "crash"],
            ("POS_CRASH_KILLS", kills),
        ),
        (
            "soak: forwarding cancelled at random points, 2,000 runs".into(),
            &[
                "-p",
                "pos-core",
                "--test",
                "forwarding",
                "cancelling_forwarding_at_random_points",
            ],
            ("POS_CANCEL_RUNS", "2000"),
        ),
        // The forwarding fault suite at full size: 10,000 payments per mode.
        (
            "soak: forwarding fault suite, 10,000 payments per fault mode".into(),
            &["-p", "pos-suites", "--release", "--test", "fault_suite"],
            ("POS_FAULT_PAYMENTS", "10000"),
        ),
    ];
    banner("soak: 2,000 power cuts (tests/powercut/, FUSE)");
    if !powercut_test(Some("2000"))
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?
        .success()
    {
        return Ok(false);
    }
    for (title, args, (var, value)) in runs {
        banner(&title);
        let status = cargo()
            .arg("test")
            .args(args)
            .args(["--", "--nocapture"])
            .env(var, value)
            .status()
            .map_err(|e| format!("cannot start cargo: {e}"))?;
        if !status.success() {
            return Ok(false);
        }
    }
    Ok(true)
}
