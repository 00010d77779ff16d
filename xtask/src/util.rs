//! Small process and path helpers shared by the xtask commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR for the running binary: prefer it
    // to the compile-time value, or an xtask built from another checkout
    // that shares CARGO_TARGET_DIR would test that other checkout.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Where big downloads are kept, outside the checkout so that a fresh clone
/// reuses them: `$POS_CORE_CACHE`, else `$XDG_CACHE_HOME/pos-core`, else
/// `~/.cache/pos-core`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("POS_CORE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("pos-core");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("pos-core")
}

/// `cargo`, as the one that runs this xtask.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Prints the command, runs it with inherited output, and fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = echo(cmd)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", show(cmd)))
    }
}

/// Runs the command, streaming its output to ours while keeping a copy of
/// stdout and stderr, and returns (success, combined output).
pub fn run_tee(cmd: &mut Command) -> Result<(bool, String), String> {
    use std::io::{BufRead, BufReader, Write};
    echo(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", show(cmd)))?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut copy = String::new();
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                eprintln!("{line}");
                copy.push_str(&line);
                copy.push('\n');
            }
        }
        copy
    });
    let mut out = String::new();
    if let Some(s) = child.stdout.take() {
        let stdout = std::io::stdout();
        for line in BufReader::new(s).lines().map_while(Result::ok) {
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{line}");
            out.push_str(&line);
            out.push('\n');
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", show(cmd)))?;
    out.push_str(&err_thread.join().unwrap_or_default());
    Ok((status.success(), out))
}

/// Runs the command quietly and returns its stdout when it succeeds.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn echo(cmd: &mut Command) -> &mut Command {
    eprintln!("+ {}", show(cmd));
    cmd
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether `name` is an executable on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Sums, over the lines of `text` that contain `marker`, the number that
/// stands just before the token sequence `words` (punctuation `;,[]()` is
/// ignored). `count_before("test result: ok. 3 passed; 1 failed", "test result:", &["failed"])` is 1.
pub fn count_before(text: &str, marker: &str, words: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.contains(marker))
        .map(|l| {
            let tokens: Vec<&str> = l
                .split(|c: char| c.is_whitespace() || ";,[]()".contains(c))
                .filter(|t| !t.is_empty())
                .collect();
            (1..tokens.len())
                .filter(|&i| tokens[i..].starts_with(words))
                .filter_map(|i| tokens[i - 1].parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cargo_test_results() {
        let text = "test result: ok. 12 passed; 0 failed; 0 ignored\n\
                    noise 99 passed\n\
                    test result: FAILED. 3 passed; 2 failed; 1 ignored\n";
        assert_eq!(count_before(text, "test result:", &["passed"]), 15);
        assert_eq!(count_before(text, "test result:", &["failed"]), 2);
    }

    #[test]
    fn sums_junit_console_lines() {
        let text = "[        10 tests successful      ]\n[         1 tests failed          ]\n";
        assert_eq!(count_before(text, "tests", &["tests", "successful"]), 10);
        assert_eq!(count_before(text, "tests", &["tests", "failed"]), 1);
    }
}
