//! `cargo xtask bench`: every benchmark, release builds, one table.
//!
//! Each benchmark prints its figures for people, and one machine-readable
//! line per tracked figure:
//!
//! ```text
//! BENCH figure="..." target="..." baseline="..." value="..." verdict=met|missed|info
//! ```
//!
//! (`baseline`: the same-run reference the figure is judged against, `-`
//! when the target is absolute). A benchmark may also print
//! `VALUE name=number` lines: figures a later benchmark of the same run
//! compares with (the Rust checkout for the Kotlin and Swift ones), passed
//! to it as the environment variable `POS_BENCH_<NAME>`.
//!
//! The command collects those lines and ends with one Markdown table:
//! figure, target, same-run baseline, measured, verdict. A benchmark that
//! does not run gives a `not measured` row with the reason. The exit
//! status is non-zero only when a benchmark did not run: a missed target is
//! a figure, reported as it is.
//!
//! `cargo xtask bench [--only NAME[,NAME...]]`, names: store, idle, checkout,
//! forwarding, soak, kotlin, swift. Benchmarks never run in `cargo xtask test`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::install::{self, Needs, Swift, Tools};
use crate::util::{cargo, run, run_tee, target_dir, workspace_root};

/// The benchmarks, in the order they run.
const ALL: [&str; 7] = [
    "store",
    "idle",
    "checkout",
    "forwarding",
    "soak",
    "kotlin",
    "swift",
];

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub figure: String,
    pub target: String,
    pub baseline: String,
    pub value: String,
    pub verdict: String,
}

pub fn bench(args: &[String]) -> Result<bool, String> {
    let only: Vec<String> = match args {
        [] => ALL.iter().map(|s| (*s).to_owned()).collect(),
        [flag, names] if flag == "--only" => {
            let names: Vec<String> = names.split(',').map(str::to_owned).collect();
            if let Some(bad) = names.iter().find(|n| !ALL.contains(&n.as_str())) {
                return Err(format!("unknown benchmark {bad:?}; one of {ALL:?}"));
            }
            names
        }
        _ => return Err(format!("unexpected arguments {args:?}")),
    };
    let wanted = |n: &str| only.iter().any(|o| o == n);
    let tools = install::all(&Needs {
        rust: true,
        kotlin: wanted("kotlin"),
        swift: wanted("swift"),
    })?;

    let mut rows: Vec<Row> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut all_ran = true;
    for name in ALL.iter().copied().filter(|n| wanted(n)) {
        eprintln!("\n=== bench: {name} ===");
        let outcome = match name {
            "store" => cargo_bench("pos-core", "store", &values),
            "idle" => cargo_bench("pos-core", "idle", &values),
            "checkout" => cargo_bench("pos-core", "checkout", &values),
            "forwarding" => cargo_bench("pos-sim", "forwarding", &values),
            "soak" => cargo_bench("pos-core", "soak", &values),
            "kotlin" => kotlin(&tools, &values),
            _ => swift(&tools, &values),
        };
        match outcome {
            Ok(out) => {
                let found = parse_rows(&out);
                if found.is_empty() {
                    all_ran = false;
                    rows.push(not_measured(name, "it printed no BENCH line"));
                }
                rows.extend(found);
                values.extend(parse_values(&out));
            }
            Err(e) => {
                all_ran = false;
                rows.push(not_measured(name, &e));
            }
        }
    }
    println!("\n{}", table(&rows));
    Ok(all_ran)
}

fn not_measured(name: &str, why: &str) -> Row {
    Row {
        figure: format!("{name} benchmark"),
        target: "-".into(),
        baseline: "-".into(),
        value: format!("did not run: {}", why.lines().next().unwrap_or("")),
        verdict: "not measured".into(),
    }
}

/// `cargo bench -p <package> --bench <name>` (release), with the values of
/// earlier benchmarks in its environment; its output.
fn cargo_bench(
    package: &str,
    name: &str,
    values: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut c = cargo();
    c.args(["bench", "-p", package, "--bench", name]);
    with_values(&mut c, values);
    let (ok, out) = run_tee(&mut c)?;
    if ok {
        Ok(out)
    } else {
        Err(format!("cargo bench -p {package} --bench {name} failed"))
    }
}

fn with_values(c: &mut Command, values: &BTreeMap<String, String>) {
    for (k, v) in values {
        c.env(format!("POS_BENCH_{}", k.to_ascii_uppercase()), v);
    }
}

/// The release FFI library with the harnesses' features (a release build
/// leaves the debug library other harness runs use alone).
fn release_library() -> Result<PathBuf, String> {
    run(cargo().args(["build", "-p", "pos-ffi", "--release", "--features", "ble"]))?;
    let lib = target_dir()
        .join("release")
        .join(format!("libpos_ffi.{}", std::env::consts::DLL_EXTENSION));
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!("{} was not built", lib.display()))
    }
}

/// `bindings/kotlin/bench`: its `main` compiled with the generated
/// bindings of the release library and run on the JVM against it.
fn kotlin(tools: &Tools, values: &BTreeMap<String, String>) -> Result<String, String> {
    let home = tools.kotlin_home.as_ref().ok_or("no Kotlin compiler")?;
    let lib = release_library()?;
    let root = workspace_root().join("bindings/kotlin");
    let build = root.join("build");
    let generated = build.join("bench-generated");
    crate::stages::bindgen(&lib, "kotlin", &generated)?;
    let klib = home.join("lib");
    let jars = [
        PathBuf::from("/usr/share/java/jna.jar"),
        klib.join("kotlin-stdlib.jar"),
        klib.join("kotlinx-coroutines-core-jvm.jar"),
    ];
    if let Some(missing) = jars.iter().find(|j| !j.is_file()) {
        return Err(format!("{} is missing", missing.display()));
    }
    let mut sources = crate::stages::files_with_ext(&generated, "kt");
    sources.extend(crate::stages::files_with_ext(&root.join("src/main"), "kt"));
    sources.extend(crate::stages::files_with_ext(&root.join("bench"), "kt"));
    let classes = build.join("bench-classes");
    crate::stages::compile_kotlin(home, &jars, &sources, &classes)?;
    let mut cp = vec![classes];
    cp.extend(jars.iter().cloned());
    let cp = std::env::join_paths(&cp).map_err(|e| e.to_string())?;
    let lib_dir = lib.parent().ok_or("library has no folder")?;
    let mut c = Command::new("java");
    c.arg(format!("-Djna.library.path={}", lib_dir.display()))
        .arg("-cp")
        .arg(&cp)
        .arg("org.poscore.bench.BenchKt");
    with_values(&mut c, values);
    let (ok, out) = run_tee(&mut c)?;
    if ok {
        Ok(out)
    } else {
        Err("the Kotlin bench failed".into())
    }
}

/// `bindings/swift/bench`: a package of its own (the generated bindings of
/// the release library and `main.swift`), built in release and run
/// natively or in the Swift root as the swift stage does.
fn swift(tools: &Tools, values: &BTreeMap<String, String>) -> Result<String, String> {
    let swift = tools.swift.as_ref().ok_or("no Swift toolchain")?;
    let lib = release_library()?;
    let pkg = workspace_root().join("bindings/swift/bench");
    let tmp = target_dir().join("uniffi-swift-bench");
    crate::stages::bindgen(&lib, "swift", &tmp)?;
    crate::stages::install_swift_bindings(
        &tmp,
        &pkg.join("Sources/PosCoreFFI"),
        &pkg.join("Sources/PosCoreBench/Generated"),
    )?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let lib_dir = lib.parent().ok_or("library has no folder")?;
    let mut env = format!(
        "export POS_FFI_LIB_DIR={}",
        quote(&lib_dir.to_string_lossy())
    );
    for (k, v) in values {
        env.push_str(&format!(
            " POS_BENCH_{}={}",
            k.to_ascii_uppercase(),
            quote(v)
        ));
    }
    let script = format!(
        "cd {} && {env} && swift build -c release 2>&1 && .build/release/PosCoreBench",
        quote(&pkg.to_string_lossy()),
    );
    let (ok, out) = match swift {
        Swift::Native => run_tee(Command::new("bash").args(["-c", &script]))?,
        Swift::Root(root) => run_tee(&mut crate::stages::in_swift_root(
            root,
            &script,
            &workspace_root(),
        )?)?,
    };
    if ok {
        Ok(out)
    } else {
        Err("the Swift bench failed".into())
    }
}

/// `key="quoted value"` and `key=word` pairs of one line.
fn fields(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = line.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_owned(), &q[end + 1..]),
                None => (q.to_owned(), ""),
            }
        } else {
            match after.find(char::is_whitespace) {
                Some(end) => (after[..end].to_owned(), &after[end..]),
                None => (after.to_owned(), ""),
            }
        };
        out.insert(key, value);
        rest = next.trim_start();
    }
    out
}

/// The `BENCH` lines of a benchmark's output.
pub(crate) fn parse_rows(out: &str) -> Vec<Row> {
    out.lines()
        .filter_map(|l| l.trim_start().strip_prefix("BENCH "))
        .map(|l| {
            let mut f = fields(l);
            let mut take = |k: &str| f.remove(k).unwrap_or_else(|| "-".to_owned());
            Row {
                figure: take("figure"),
                target: take("target"),
                baseline: take("baseline"),
                value: take("value"),
                verdict: take("verdict"),
            }
        })
        .collect()
}

/// The `VALUE name=number` lines of a benchmark's output.
fn parse_values(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.trim_start().strip_prefix("VALUE "))
        .flat_map(|l| fields(l).into_iter())
        .collect()
}

/// The rows as one Markdown table.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | target | same-run baseline | measured | verdict |\n|:--|:--|:--|:--|:--|\n",
    );
    for r in rows {
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&r.figure),
            cell(&r.target),
            cell(&r.baseline),
            cell(&r.value),
            cell(&r.verdict)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_lines_become_rows_and_values() {
        let out = "noise\nBENCH figure=\"status() p50, 10,000 pending\" target=\"<= 20 us\" \
                   baseline=- value=\"12.5 us\" verdict=met\nVALUE rust_checkout_ns=812000\n";
        let rows = parse_rows(out);
        assert_eq!(
            rows,
            vec![Row {
                figure: "status() p50, 10,000 pending".into(),
                target: "<= 20 us".into(),
                baseline: "-".into(),
                value: "12.5 us".into(),
                verdict: "met".into(),
            }]
        );
        assert_eq!(
            parse_values(out)
                .get("rust_checkout_ns")
                .map(String::as_str),
            Some("812000")
        );
        let t = table(&rows);
        assert!(t.contains("| status() p50, 10,000 pending | <= 20 us | - | 12.5 us | met |"));
    }
}
