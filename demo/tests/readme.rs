//! The README's Kotlin and Swift examples are the code the harnesses compile.

#![allow(clippy::unwrap_used)]

fn region(path: &str, tag: &str) -> String {
    let src = std::fs::read_to_string(path).unwrap();
    let begin = format!("// README-{tag}-BEGIN\n");
    let a = src.find(&begin).unwrap() + begin.len();
    let b = src.find(&format!("// README-{tag}-END")).unwrap();
    src[a..b]
        .lines()
        .map(|l| l.strip_prefix("        ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_owned()
}

#[test]
fn readme_examples_match_the_compiled_sources() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for (file, tag) in [
        (
            "bindings/kotlin/src/test/kotlin/org/poscore/ReadmeExampleTest.kt",
            "KOTLIN",
        ),
        (
            "bindings/swift/Tests/PosCoreTests/ReadmeExampleTests.swift",
            "SWIFT",
        ),
    ] {
        let snippet = region(&format!("{root}/{file}"), tag);
        assert!(
            readme.contains(&snippet),
            "README.md does not show {file} as compiled:\n{snippet}"
        );
    }
}
