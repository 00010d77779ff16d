//! `cargo run -p uniffi-bindgen -- generate --library <lib> --language kotlin|swift --out-dir <dir>`
//!
//! UniFFI's own generator, then, for Kotlin, the change in [`kotlin`] to
//! every Kotlin file it wrote under `--out-dir`.

mod kotlin;

use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    uniffi::uniffi_bindgen_main();
    if let Err(e) = after_generate(&args) {
        eprintln!("uniffi-bindgen: {e}");
        std::process::exit(1);
    }
}

/// What `generate` was asked for: its languages and `--out-dir`.
#[derive(Debug, PartialEq, Eq)]
struct Generate {
    languages: Vec<String>,
    out_dir: Option<PathBuf>,
}

/// Reads `generate`'s languages and output folder from the arguments (the
/// spellings clap accepts: `--language kotlin`, `--language=kotlin`,
/// `-l kotlin`, `-lkotlin`, and the same for `--out-dir`/`-o`). `None` for
/// another subcommand.
fn parse(args: &[String]) -> Option<Generate> {
    if args.first().map(String::as_str) != Some("generate") {
        return None;
    }
    let mut languages = Vec::new();
    let mut out_dir = None;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let value = |long: &str, short: &str| -> Option<String> {
            if arg == long || arg == short {
                rest.clone().next().cloned()
            } else if let Some(v) = arg.strip_prefix(&format!("{long}=")) {
                Some(v.to_owned())
            } else {
                arg.strip_prefix(short)
                    .filter(|v| !v.is_empty())
                    .map(|v| v.strip_prefix('=').unwrap_or(v).to_owned())
            }
        };
        if let Some(l) = value("--language", "-l") {
            languages.push(l);
        } else if let Some(o) = value("--out-dir", "-o") {
            out_dir = Some(PathBuf::from(o));
        }
    }
    Some(Generate { languages, out_dir })
}

/// Applies [`kotlin::patch`] to the Kotlin files `generate` wrote.
fn after_generate(args: &[String]) -> Result<(), String> {
    let Some(generate) = parse(args) else {
        return Ok(());
    };
    if !generate.languages.iter().any(|l| l == "kotlin") {
        return Ok(());
    }
    let out_dir = generate
        .out_dir
        .ok_or("Kotlin bindings need --out-dir (the generated files are changed there)")?;
    let mut changed = 0;
    for file in kotlin_files(&out_dir)? {
        let read = |e: std::io::Error| format!("{}: {e}", file.display());
        let source = std::fs::read_to_string(&file).map_err(read)?;
        if let Some(patched) =
            kotlin::patch(&source).map_err(|e| format!("{}: {e}", file.display()))?
        {
            if patched != source {
                std::fs::write(&file, patched).map_err(read)?;
            }
            changed += 1;
        }
    }
    if changed == 0 {
        return Err(format!(
            "no generated Kotlin component file under {}",
            out_dir.display()
        ));
    }
    Ok(())
}

/// Every `.kt` file under `dir`.
fn kotlin_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries =
            std::fs::read_dir(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "kt") {
                files.push(path);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn every_spelling_of_language_and_out_dir_is_read() {
        let want = Some(Generate {
            languages: vec!["kotlin".into()],
            out_dir: Some(PathBuf::from("out")),
        });
        for a in [
            "generate --library l.so --language kotlin --no-format --out-dir out",
            "generate --library l.so --language=kotlin --out-dir=out",
            "generate --library l.so -l kotlin -o out",
            "generate --library l.so -lkotlin -oout",
            "generate --library l.so -l=kotlin -o=out",
        ] {
            assert_eq!(parse(&args(a)), want, "{a}");
        }
        assert_eq!(
            parse(&args("generate -l swift -l kotlin -o x"))
                .unwrap()
                .languages,
            ["swift", "kotlin"]
        );
        assert_eq!(parse(&args("scaffolding x.udl")), None);
    }
}
