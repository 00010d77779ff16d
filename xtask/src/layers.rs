//! The layering rules `cargo xtask test` checks before building anything:
//!
//! - the rules crate (`pos-rules`) stays sans-I/O: its normal dependency tree
//!   holds no tokio, sqlx or ureq;
//! - within each crate, no two modules import each other, directly or
//!   through others (a module is a top-level file or folder of `src/`;
//!   its unit tests, after `#[cfg(test)] mod tests`, do not count).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::util::{cargo, workspace_root};

/// The crates whose modules must not form a circle.
const CRATES: [&str; 7] = [
    "core/rules/src",
    "core/store/src",
    "core/engine/src",
    "core/reader/src",
    "core/sim/src",
    "bindings/ffi/src",
    "demo/src",
];

/// What the rules crate must not depend on.
const NOT_IN_RULES: [&str; 3] = ["tokio", "sqlx", "ureq"];

pub fn check() -> Result<(), String> {
    let mut problems = Vec::new();
    if let Err(e) = rules_are_sans_io() {
        problems.push(e);
    }
    for src in CRATES {
        let graph = module_graph(&workspace_root().join(src))?;
        for circle in circles(&graph) {
            problems.push(format!(
                "{src}: modules import each other: {}",
                circle.join(" ↔ ")
            ));
        }
    }
    if problems.is_empty() {
        println!(
            "layers: pos-rules has no tokio/sqlx/ureq; no module circles in {} crates",
            CRATES.len()
        );
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn rules_are_sans_io() -> Result<(), String> {
    let out = cargo()
        .args([
            "tree",
            "-p",
            "pos-rules",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree -p pos-rules failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let found: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            NOT_IN_RULES
                .iter()
                .any(|n| name == n || name.starts_with(&format!("{n}-")))
        })
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "pos-rules depends on {found:?}; it must stay sans-I/O"
        ))
    }
}

/// Module → the modules of the same crate it names as `crate::<module>`.
fn module_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect_rs(src, &mut files)?;
    for file in files {
        let rel = file.strip_prefix(src).map_err(|e| e.to_string())?;
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        let deps = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    Ok(graph)
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let Some((w, _)) = self.graph.get_key_value(w) else {
                    continue;
                };
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(lw));
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().insert((*b).into());
            g.entry((*b).into()).or_default();
        }
        g
    }

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        assert!(circles(&graph(&[("engine", "error"), ("checkout", "engine")])).is_empty());
        assert_eq!(
            circles(&graph(&[
                ("engine", "checkout"),
                ("checkout", "forwarding"),
                ("forwarding", "engine"),
                ("error", "money")
            ])),
            vec![vec![
                "checkout".to_owned(),
                "engine".to_owned(),
                "forwarding".to_owned()
            ]]
        );
    }
}
