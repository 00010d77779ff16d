//! The JVM artifact and the jar consumer test.
//!
//! `cargo xtask package [CARGO FLAGS]` builds, in `target/package/`:
//! - `pos-core-jvm-<version>.jar`: the compiled Kotlin bindings (generated
//!   from the library it packs) and the hand-written Kotlin of
//!   `bindings/kotlin/src/main`, with `libpos_ffi.so` under JNA's resource
//!   folder (`linux-x86-64/` on x86_64 Linux), where JNA finds it on the
//!   classpath without any library path;
//! - `pos-core-jvm-<version>-sources.jar`: the same Kotlin as source.
//!
//! The library is a release build of pos-ffi with its default features (the
//! built-in HTTP gateway and the simulator, without btleplug), stripped; the
//! flags are passed to `cargo build` to choose others
//! (`docs/packaging.md`, ADR 0012). The version is the workspace's.
//!
//! Then the consumer program (`bindings/kotlin/consumer/`) is compiled
//! against that jar alone (with kotlin-stdlib, kotlinx-coroutines-core and
//! JNA) and run, with no library path. The Kotlin stage of `cargo xtask
//! test` runs the same check on a jar of the classes it has just compiled
//! and the debug library it tests ([`consumer_test`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::stages::{bindgen, compile_kotlin, compile_kotlin_with, files_with_ext};
use crate::util::{cargo, on_path, run, target_dir, workspace_root};

/// The JVM of Debian's `libjna-java` (installed by `cargo xtask install`).
const JNA_JAR: &str = "/usr/share/java/jna.jar";
/// The consumer program's main class.
const CONSUMER_MAIN: &str = "com.example.till.MainKt";
/// The jar entries' timestamp, so that the same inputs make the same jar.
const JAR_DATE: &str = "2000-01-01T00:00:00Z";

/// `cargo xtask package [CARGO FLAGS]`.
pub fn package(cargo_flags: &[String]) -> Result<bool, String> {
    if let Some(bad) = cargo_flags.iter().find(|a| a.as_str() == "-p") {
        return Err(format!("package builds pos-ffi itself; drop {bad:?}"));
    }
    let prefix = jna_resource_prefix(std::env::consts::OS, std::env::consts::ARCH)?;
    let version = workspace_version()?;
    let tools = crate::install::all(&crate::install::Needs {
        rust: true,
        kotlin: true,
        swift: false,
    })?;
    let home = tools.kotlin_home.as_ref().ok_or("no Kotlin compiler")?;

    run(cargo()
        .args(["build", "-p", "pos-ffi", "--release"])
        .args(cargo_flags))?;
    let lib = target_dir().join("release").join("libpos_ffi.so");
    let out = target_dir().join("package");
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;

    // The bindings come from the unstripped library (its UniFFI metadata),
    // so they match exactly the functions the packed library exports.
    let generated = out.join("generated");
    bindgen(&lib, "kotlin", &generated)?;
    let hand_written = workspace_root().join("bindings/kotlin/src/main/kotlin");
    let mut sources = files_with_ext(&generated, "kt");
    sources.extend(files_with_ext(&hand_written, "kt"));
    let classes = out.join("classes");
    compile_kotlin(home, &runtime_jars(home)?, &sources, &classes)?;

    let shipped = out.join("libpos_ffi.so");
    std::fs::copy(&lib, &shipped).map_err(|e| format!("copying {}: {e}", lib.display()))?;
    if on_path("strip").is_some() {
        run(Command::new("strip").arg("--strip-unneeded").arg(&shipped))?;
    } else {
        eprintln!("xtask: no `strip` on PATH: the jar carries the unstripped library");
    }

    let jar = out.join(format!("pos-core-jvm-{version}.jar"));
    jvm_jar(&jar, &classes, &shipped, prefix, &version, true)?;
    let sources_jar = out.join(format!("pos-core-jvm-{version}-sources.jar"));
    let _ = std::fs::remove_file(&sources_jar);
    run(Command::new("jar")
        .args(["--create", "--file"])
        .arg(&sources_jar)
        .arg(format!("--date={JAR_DATE}"))
        .arg("-C")
        .arg(&generated)
        .arg(".")
        .arg("-C")
        .arg(&hand_written)
        .arg("."))?;

    let classes_stamp = PathBuf::from(format!("{}.fingerprint", classes.display()));
    let scratch = scratch_dir("package")?;
    let checked = run_consumer(
        home,
        &jar,
        &out.join("consumer-classes"),
        &scratch,
        &[classes_stamp],
    );
    let _ = std::fs::remove_dir_all(&scratch);
    checked?;

    println!();
    for f in [&jar, &sources_jar, &shipped] {
        let bytes = std::fs::metadata(f)
            .map_err(|e| format!("{}: {e}", f.display()))?
            .len();
        println!("{}: {bytes} bytes", f.display());
    }
    println!("the jar's library: {prefix}/libpos_ffi.so (release, stripped)");
    Ok(true)
}

/// The jar consumer test of `cargo xtask test`: `main_classes` (the
/// generated bindings and `src/main`, compiled) and `lib` (the library
/// those bindings were generated from) packed as [`package`] packs them,
/// then the consumer program compiled against that jar alone and run.
///
/// The jar is stored without compression (the debug library is tens of
/// megabytes, and compressing it would cost seconds on every run), at a
/// fixed path so that an unchanged consumer is not compiled again.
pub fn consumer_test(
    home: &Path,
    main_classes: &Path,
    main_stamp: &Path,
    lib: &Path,
) -> Result<(), String> {
    let prefix = jna_resource_prefix(std::env::consts::OS, std::env::consts::ARCH)?;
    let version = workspace_version()?;
    let work = workspace_root().join("bindings/kotlin/build/jar-consumer");
    let jar = work.join(format!("pos-core-jvm-{version}.jar"));
    let scratch = scratch_dir("test")?;
    let checked = jvm_jar(&jar, main_classes, lib, prefix, &version, false).and_then(|()| {
        run_consumer(
            home,
            &jar,
            &work.join("consumer-classes"),
            &scratch,
            &[main_stamp.to_path_buf()],
        )
    });
    let _ = std::fs::remove_dir_all(&scratch);
    checked
}

/// An empty folder of this process under the system's temporary folder.
fn scratch_dir(what: &str) -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!("pos-core-jar-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    Ok(d)
}

/// What a consumer puts beside the jar: JNA, kotlin-stdlib and
/// kotlinx-coroutines-core (the generated suspend functions need it).
fn runtime_jars(home: &Path) -> Result<Vec<PathBuf>, String> {
    let lib = home.join("lib");
    let jars = vec![
        PathBuf::from(JNA_JAR),
        lib.join("kotlin-stdlib.jar"),
        lib.join("kotlinx-coroutines-core-jvm.jar"),
    ];
    match jars.iter().find(|j| !j.is_file()) {
        Some(missing) => Err(format!("{} is missing", missing.display())),
        None => Ok(jars),
    }
}

/// JNA's resource folder for a platform (`com.sun.jna.Platform.RESOURCE_PREFIX`):
/// where, on the classpath, JNA looks for a library it cannot find on the
/// library path.
fn jna_resource_prefix(os: &str, arch: &str) -> Result<&'static str, String> {
    match (os, arch) {
        ("linux", "x86_64") => Ok("linux-x86-64"),
        ("linux", "aarch64") => Ok("linux-aarch64"),
        _ => Err(format!(
            "the JVM jar packs the Linux library; this is {os} on {arch}"
        )),
    }
}

/// `[workspace.package] version` of the workspace's Cargo.toml.
fn workspace_version() -> Result<String, String> {
    let manifest = workspace_root().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    version_of(&text)
        .ok_or_else(|| format!("{} has no [workspace.package] version", manifest.display()))
}

fn version_of(manifest: &str) -> Option<String> {
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "version" {
            let value = value.trim();
            let v = value.strip_prefix('"')?.split('"').next()?;
            return (!v.is_empty()).then(|| v.to_owned());
        }
    }
    None
}

/// Packs `classes` and `lib` (as `<prefix>/libpos_ffi.so`) into `out`, with
/// a manifest naming the version, using the JDK's `jar`.
fn jvm_jar(
    out: &Path,
    classes: &Path,
    lib: &Path,
    prefix: &str,
    version: &str,
    compress: bool,
) -> Result<(), String> {
    if !lib.is_file() {
        return Err(format!("{} is missing", lib.display()));
    }
    let stage = scratch_dir("stage")?;
    let native = stage.join("native").join(prefix);
    std::fs::create_dir_all(&native).map_err(|e| format!("creating {}: {e}", native.display()))?;
    // A hard link where it can (the debug library is large), else a copy.
    let packed = native.join("libpos_ffi.so");
    if std::fs::hard_link(lib, &packed).is_err() {
        std::fs::copy(lib, &packed).map_err(|e| format!("copying {}: {e}", lib.display()))?;
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let manifest = stage.join("MANIFEST.MF");
    std::fs::write(
        &manifest,
        format!(
            "Manifest-Version: 1.0\n\
             Implementation-Title: pos-core-jvm\n\
             Implementation-Version: {version}\n\
             Automatic-Module-Name: org.poscore\n"
        ),
    )
    .map_err(|e| format!("writing {}: {e}", manifest.display()))?;
    let _ = std::fs::remove_file(out);
    let mut jar = Command::new("jar");
    jar.args(["--create", "--file"])
        .arg(out)
        .arg(format!("--date={JAR_DATE}"));
    if !compress {
        jar.arg("--no-compress");
    }
    let made = run(jar
        .arg("--manifest")
        .arg(&manifest)
        .arg("-C")
        .arg(classes)
        .arg(".")
        .arg("-C")
        .arg(stage.join("native"))
        .arg("."));
    let _ = std::fs::remove_dir_all(&stage);
    made
}

/// Compiles the consumer program against `jar` and the runtime jars only,
/// into `classes` (unless `inputs` and the sources are unchanged), and runs
/// it in an empty folder under `scratch` with no library path: it must
/// print `consumer: ok` and have loaded a copy of the library that JNA took
/// out of the jar (not the build's own file).
fn run_consumer(
    home: &Path,
    jar: &Path,
    classes: &Path,
    scratch: &Path,
    inputs: &[PathBuf],
) -> Result<(), String> {
    let mut cp = vec![jar.to_path_buf()];
    cp.extend(runtime_jars(home)?);
    let sources = files_with_ext(&workspace_root().join("bindings/kotlin/consumer"), "kt");
    if sources.is_empty() {
        return Err("bindings/kotlin/consumer has no Kotlin source".into());
    }
    compile_kotlin_with(home, &cp, &sources, inputs, &[], classes)?;

    let run_dir = scratch.join("run");
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| format!("creating {}: {e}", run_dir.display()))?;
    let mut run_cp = vec![classes.to_path_buf()];
    run_cp.extend(cp);
    let run_cp = std::env::join_paths(&run_cp).map_err(|e| e.to_string())?;
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(&run_cp)
        .arg(CONSUMER_MAIN)
        .current_dir(&run_dir)
        // Nothing may point the JVM or the loader at the build's library.
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("JDK_JAVA_OPTIONS")
        .env_remove("_JAVA_OPTIONS");
    eprintln!("+ java -cp {} {CONSUMER_MAIN}", run_cp.to_string_lossy());
    let output = java
        .output()
        .map_err(|e| format!("cannot start java: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    if !output.status.success() {
        return Err(format!("the consumer program failed ({})", output.status));
    }
    if !stdout.lines().any(|l| l.trim() == "consumer: ok") {
        return Err("the consumer program did not print `consumer: ok`".into());
    }
    let loaded = stdout
        .lines()
        .find_map(|l| l.strip_prefix("consumer: library "))
        .ok_or("the consumer program did not say which library it loaded")?;
    if Path::new(loaded.trim()).starts_with(target_dir()) {
        return Err(format!(
            "the consumer program loaded {loaded}, the build's own library, not the jar's"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_workspace_packages() {
        let manifest = "[workspace]\nmembers = []\nversion = \"9.9.9\"\n\n\
                        [workspace.package]\nedition = \"2021\"\nversion = \"0.1.0\" # here\n\n\
                        [workspace.dependencies]\nversion = \"1\"\n";
        assert_eq!(version_of(manifest).as_deref(), Some("0.1.0"));
        assert_eq!(version_of("[workspace]\nversion = \"1\"\n"), None);
    }

    #[test]
    fn the_library_goes_where_jna_looks() {
        assert_eq!(jna_resource_prefix("linux", "x86_64"), Ok("linux-x86-64"));
        assert_eq!(jna_resource_prefix("linux", "aarch64"), Ok("linux-aarch64"));
        assert!(jna_resource_prefix("macos", "aarch64").is_err());
    }
}
