//! The API docs check of the generated bindings: every declaration that the
//! generated Kotlin and Swift make for one of pos-ffi's Rust items carries
//! a doc comment. UniFFI copies each Rust doc comment there, and the
//! `missing_docs` lint of pos-ffi requires one on every exported item; this
//! check proves that they arrive. The Kotlin and Swift stages run it right
//! after generating the bindings.
//!
//! The generated files also hold UniFFI's own runtime (`RustBuffer`, the
//! `FfiConverter*` objects, `Uniffi*` helpers, handle and cleaner plumbing),
//! which needs no doc. What is ours is told apart by what the generated code
//! records about the Rust side, never by a list of UniFFI's names:
//! - a callable (function, method, constructor, foreign trait method) is the
//!   declaration whose body calls one of the library's scaffolding symbols
//!   `uniffi_<crate>_fn_{func,method,constructor}_*`; the checksum symbols
//!   `uniffi_<crate>_checksum_*` list every exported callable, and each must
//!   have such a declaration;
//! - a type (record, enum, error, object, foreign trait) is one UniFFI
//!   writes an `FfiConverterType<Name>` for. Its declarations are `Name`,
//!   the object's `NameInterface` (Kotlin) or `NameProtocol` (Swift), a
//!   foreign trait's `NameImpl`, and an error's `...Exception` in Kotlin;
//!   each type must have one;
//! - inside those types: enum and error variants, record fields (Swift),
//!   protocol methods (Swift). Kotlin writes every name that comes from the
//!   Rust side in backticks (``fun `status`()``, ``val `amount`: Money``),
//!   so every public backticked `fun`, `val` or `var` is ours too: interface
//!   methods, record fields and variant fields.
//!
//! Swift has no place for a doc comment on an enum case's associated value:
//! variant fields are checked in Kotlin only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Kotlin,
    Swift,
}

/// Checks every `.kt` file under `dir` (the generated Kotlin).
pub fn kotlin(dir: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect(dir, "kt", &mut files);
    if files.is_empty() {
        return Err(format!(
            "docs check: no Kotlin file under {}",
            dir.display()
        ));
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in &files {
        let src =
            std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        let (n, found) = check(&src, Lang::Kotlin);
        checked += n;
        problems.extend(found.into_iter().map(|p| format!("{}:{p}", f.display())));
    }
    verdict("Kotlin", checked, &problems)
}

/// Checks the generated Swift file.
pub fn swift(file: &Path) -> Result<(), String> {
    let src =
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let (checked, found) = check(&src, Lang::Swift);
    let problems: Vec<String> = found
        .into_iter()
        .map(|p| format!("{}:{p}", file.display()))
        .collect();
    verdict("Swift", checked, &problems)
}

fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out.sort();
}

fn verdict(lang: &str, checked: usize, problems: &[String]) -> Result<(), String> {
    if problems.is_empty() {
        println!(
            "docs check: the {checked} declarations of pos-ffi's items in the generated {lang} \
             have their doc comments"
        );
        return Ok(());
    }
    eprintln!("docs check: the generated {lang} lacks doc comments:");
    for p in problems {
        eprintln!("  {p}");
    }
    Err(format!(
        "{} item(s) of the generated {lang} have no doc comment (listed above): \
         document them in bindings/ffi/src",
        problems.len()
    ))
}

/// How many declarations of pos-ffi's items one generated file has, and
/// its problems, each `LINE: what` (or `what` for an item not found at all).
fn check(src: &str, lang: Lang) -> (usize, Vec<String>) {
    let lx = lex(src, lang);
    let decls: Vec<Option<Decl>> = lx.code.iter().map(|c| parse_decl(c, lang)).collect();
    let mut missing: BTreeMap<usize, String> = BTreeMap::new();
    let mut absent: Vec<String> = Vec::new();
    let mut checked: BTreeSet<usize> = BTreeSet::new();
    let mut need = |line: usize, what: &str| {
        checked.insert(line);
        if !documented(&lx, line) {
            missing.entry(line).or_insert_with(|| what.to_owned());
        }
    };

    // Callables: the declaration around each call of a scaffolding symbol.
    let mut called: BTreeSet<String> = BTreeSet::new();
    let mut checksums: BTreeSet<String> = BTreeSet::new();
    for (i, code) in lx.code.iter().enumerate() {
        for sym in symbols(code) {
            if let Some(rest) = sym.checksum {
                checksums.insert(rest);
                continue;
            }
            let Some(rest) = sym.callable else { continue };
            // UniFFI's declaration of the symbol itself (Kotlin's `external fun`).
            if decls[i].as_ref().is_some_and(|d| d.name == sym.name) {
                continue;
            }
            called.insert(rest.clone());
            match (0..=i).rev().find(|&k| {
                decls[k]
                    .as_ref()
                    .is_some_and(|d| matches!(d.kind, Kind::Fun | Kind::Ctor))
            }) {
                Some(k) => need(k, &lx.code[k]),
                None => absent.push(format!("no declaration calls `{}`", sym.name)),
            }
        }
    }
    if checksums.is_empty() {
        absent.push("no `uniffi_*_checksum_*` symbol: not a UniFFI file?".into());
    }
    for rest in checksums.difference(&called) {
        absent.push(format!("the exported callable `{rest}` has no declaration"));
    }

    // Types: what UniFFI writes an `FfiConverterType<Name>` for.
    let converter_kind = match lang {
        Lang::Kotlin => Kind::Object,
        Lang::Swift => Kind::Struct,
    };
    let types: BTreeSet<String> = decls
        .iter()
        .flatten()
        .filter(|d| d.kind == converter_kind)
        .filter_map(|d| d.name.strip_prefix("FfiConverterType").map(str::to_owned))
        .filter(|n| !n.is_empty())
        .collect();
    if types.is_empty() {
        absent.push("no `FfiConverterType*` declaration: not a UniFFI file?".into());
    }
    let mut declared: BTreeSet<&str> = BTreeSet::new();
    for (i, d) in decls.iter().enumerate() {
        let Some(d) = d else { continue };
        if lx.depth[i] != 0 || !d.kind.is_type() {
            continue;
        }
        let Some(ty) = types.iter().find(|t| names_of(t, lang).contains(&d.name)) else {
            continue;
        };
        declared.insert(ty.as_str());
        need(i, &lx.code[i]);
        let members: Vec<usize> = body(&lx, i)
            .filter(|&k| lx.depth[k] == lx.depth[i] + 1)
            .collect();
        let variants: Vec<usize> = match (lang, d.kind) {
            (Lang::Kotlin, Kind::Class) if d.mods.iter().any(|m| m == "enum") => members
                .iter()
                .copied()
                .filter(|&k| is_enum_entry(&lx.code[k]))
                .collect(),
            (Lang::Kotlin, Kind::Class) if d.mods.iter().any(|m| m == "sealed") => members
                .iter()
                .copied()
                .filter(|&k| {
                    decls[k].as_ref().is_some_and(|v| {
                        matches!(v.kind, Kind::Class | Kind::Object)
                            && !v.mods.iter().any(|m| m == "companion")
                    })
                })
                .collect(),
            (Lang::Swift, Kind::Enum) => members
                .iter()
                .copied()
                .filter(|&k| decls[k].as_ref().is_some_and(|v| v.kind == Kind::Case))
                .collect(),
            _ => Vec::new(),
        };
        let is_enum = match lang {
            Lang::Kotlin => d.mods.iter().any(|m| m == "enum" || m == "sealed"),
            Lang::Swift => d.kind == Kind::Enum,
        };
        if is_enum && variants.is_empty() {
            absent.push(format!("{}: no variants found in `{}`", i + 1, d.name));
        }
        for k in variants {
            need(k, &lx.code[k]);
        }
        // Swift: record fields and protocol methods.
        let member_kind = match (lang, d.kind) {
            (Lang::Swift, Kind::Struct) => Some(Kind::Prop),
            (Lang::Swift, Kind::Protocol) => Some(Kind::Fun),
            _ => None,
        };
        if let Some(mk) = member_kind {
            for &k in &members {
                if decls[k].as_ref().is_some_and(|m| m.kind == mk) {
                    need(k, &lx.code[k]);
                }
            }
        }
    }
    for ty in &types {
        if !declared.contains(ty.as_str()) {
            absent.push(format!("no declaration of the type `{ty}`"));
        }
    }

    // Kotlin: every public name from the Rust side is backticked.
    if lang == Lang::Kotlin {
        for (i, d) in decls.iter().enumerate() {
            let Some(d) = d else { continue };
            let hidden = d
                .mods
                .iter()
                .any(|m| matches!(m.as_str(), "private" | "internal" | "protected"));
            if d.backticked && matches!(d.kind, Kind::Fun | Kind::Prop) && !hidden {
                need(i, &lx.code[i]);
            }
        }
    }

    let mut out: Vec<String> = missing
        .into_iter()
        .map(|(line, code)| format!("{}: {}", line + 1, shorten(code.trim())))
        .collect();
    out.extend(absent);
    (checked.len(), out)
}

/// The names a type's declarations take in `lang`.
fn names_of(ty: &str, lang: Lang) -> Vec<String> {
    let mut names = vec![ty.to_owned(), format!("{ty}Impl")];
    match lang {
        Lang::Kotlin => {
            names.push(format!("{ty}Interface"));
            if let Some(stem) = ty.strip_suffix("Error") {
                names.push(format!("{stem}Exception"));
            }
        }
        Lang::Swift => names.push(format!("{ty}Protocol")),
    }
    names
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 100 {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(100).collect::<String>())
    }
}

/// The lines after `i` inside the body its line opens.
fn body(lx: &Lexed, i: usize) -> impl Iterator<Item = usize> + '_ {
    let d = lx.depth[i];
    (i + 1..lx.code.len()).take_while(move |&k| lx.depth[k] > d)
}

/// A Kotlin enum entry: `NAME,`, `NAME;`, `NAME` (UniFFI writes them in
/// upper snake case).
fn is_enum_entry(code: &str) -> bool {
    let toks = tokens(code);
    let Some(first) = toks.first() else {
        return false;
    };
    let name_ok = first.ident
        && !first.backticked
        && first.text.starts_with(|c: char| c.is_ascii_uppercase())
        && first
            .text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    name_ok
        && toks
            .get(1)
            .is_none_or(|t| matches!(t.text.as_str(), "," | ";" | "("))
}

// ---------------------------------------------------------------------------
// Doc comments
// ---------------------------------------------------------------------------

/// Whether the declaration on line `i` has a doc comment: `/** ... */` right
/// before it (blank lines, `//` comments, annotations, `#if` lines and a
/// lone modifier line may come between), or ending on its own line before
/// its code (UniFFI's `*/override fun ...`). A doc that only says
/// `@suppress` (UniFFI hiding its own plumbing) does not count.
fn documented(lx: &Lexed, i: usize) -> bool {
    if let Some(c) = &lx.comment_end[i] {
        if !c.code_before {
            return c.documents;
        }
    }
    let mut j = i;
    while j > 0 {
        j -= 1;
        let code = lx.code[j].trim();
        if code.is_empty() {
            match &lx.comment_end[j] {
                Some(c) if c.block => return c.documents,
                _ => continue,
            }
        }
        let skippable = strip_annotations(code).is_empty()
            || code.starts_with('#')
            || tokens(code)
                .iter()
                .all(|t| MODIFIERS.contains(&t.text.as_str()));
        if !skippable {
            return false;
        }
        // An annotation line may itself end a comment before its code.
        if let Some(c) = &lx.comment_end[j] {
            if c.block && !c.code_before {
                return c.documents;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Lexer: code without comments and string contents, nesting depth per line
// ---------------------------------------------------------------------------

/// A comment that ends on a line.
#[derive(Debug, Clone)]
struct CommentEnd {
    /// A block comment (`/* */`), not a line comment.
    block: bool,
    /// A doc comment (`/** */`) that says something besides `@suppress`.
    documents: bool,
    /// Code precedes it on the line where it ends.
    code_before: bool,
}

#[derive(Debug)]
struct Lexed {
    /// Each line's code: comments removed, strings emptied (`""`).
    code: Vec<String>,
    /// The bracket depth (`{`, `(`, `[`) at the start of each line.
    depth: Vec<i32>,
    /// The last comment ending on each line.
    comment_end: Vec<Option<CommentEnd>>,
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    lang: Lang,
    depth: i32,
    out: Lexed,
}

fn lex(src: &str, lang: Lang) -> Lexed {
    let mut lx = Lexer {
        chars: src.chars().collect(),
        i: 0,
        lang,
        depth: 0,
        out: Lexed {
            code: vec![String::new()],
            depth: vec![0],
            comment_end: vec![None],
        },
    };
    while let Some(c) = lx.peek(0) {
        match c {
            '\n' => lx.newline(),
            '/' if lx.peek(1) == Some('/') => lx.line_comment(),
            '/' if lx.peek(1) == Some('*') => lx.block_comment(),
            '"' => lx.string(),
            '\'' if lang == Lang::Kotlin => lx.char_literal(),
            _ => {
                match c {
                    '{' | '(' | '[' => lx.depth += 1,
                    '}' | ')' | ']' => lx.depth -= 1,
                    _ => {}
                }
                lx.push(c);
                lx.i += 1;
            }
        }
    }
    lx.out
}

impl Lexer {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn line(&self) -> usize {
        self.out.code.len() - 1
    }

    fn push(&mut self, c: char) {
        let l = self.line();
        self.out.code[l].push(c);
    }

    /// Consumes a `\n`.
    fn newline(&mut self) {
        self.i += 1;
        self.out.code.push(String::new());
        self.out.depth.push(self.depth);
        self.out.comment_end.push(None);
    }

    fn line_comment(&mut self) {
        while self.peek(0).is_some_and(|c| c != '\n') {
            self.i += 1;
        }
        let l = self.line();
        if self.out.comment_end[l].is_none() {
            self.out.comment_end[l] = Some(CommentEnd {
                block: false,
                documents: false,
                code_before: !self.out.code[l].trim().is_empty(),
            });
        }
    }

    /// A block comment, nested ones included (both languages nest them).
    fn block_comment(&mut self) {
        let doc = self.peek(2) == Some('*') && self.peek(3) != Some('/');
        self.i += 2;
        let mut nesting = 1;
        let mut text = String::new();
        while let Some(c) = self.peek(0) {
            if c == '*' && self.peek(1) == Some('/') {
                self.i += 2;
                nesting -= 1;
                if nesting == 0 {
                    break;
                }
            } else if c == '/' && self.peek(1) == Some('*') {
                self.i += 2;
                nesting += 1;
            } else if c == '\n' {
                text.push('\n');
                self.newline();
            } else {
                text.push(c);
                self.i += 1;
            }
        }
        let l = self.line();
        let words: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '*')
            .collect();
        self.out.comment_end[l] = Some(CommentEnd {
            block: true,
            documents: doc && !words.is_empty() && !text.contains("@suppress"),
            code_before: !self.out.code[l].trim().is_empty(),
        });
    }

    /// A string literal (plain or triple-quoted), with Kotlin `${...}` and
    /// Swift `\(...)` interpolations; recorded as `""`.
    fn string(&mut self) {
        let triple = self.peek(1) == Some('"') && self.peek(2) == Some('"');
        self.i += if triple { 3 } else { 1 };
        self.push('"');
        while let Some(c) = self.peek(0) {
            if c == '"' && (!triple || (self.peek(1) == Some('"') && self.peek(2) == Some('"'))) {
                self.i += if triple { 3 } else { 1 };
                break;
            }
            match c {
                '\n' => self.newline(),
                '\\' if self.lang == Lang::Swift && self.peek(1) == Some('(') => {
                    self.i += 2;
                    self.interpolation('(', ')');
                }
                '\\' => {
                    self.i += 1;
                    if self.peek(0) == Some('\n') {
                        self.newline();
                    } else {
                        self.i += 1;
                    }
                }
                '$' if self.lang == Lang::Kotlin && self.peek(1) == Some('{') => {
                    self.i += 2;
                    self.interpolation('{', '}');
                }
                _ => self.i += 1,
            }
        }
        self.push('"');
    }

    /// The code of an interpolation, up to its closing bracket; it counts in
    /// no depth.
    fn interpolation(&mut self, open: char, close: char) {
        let mut nesting = 1;
        while let Some(c) = self.peek(0) {
            match c {
                '\n' => self.newline(),
                '"' => self.string(),
                _ => {
                    self.i += 1;
                    if c == open {
                        nesting += 1;
                    } else if c == close {
                        nesting -= 1;
                        if nesting == 0 {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A Kotlin character literal (`'a'`, `'\n'`).
    fn char_literal(&mut self) {
        self.i += 1;
        while let Some(c) = self.peek(0) {
            match c {
                '\\' => self.i += 2,
                '\'' => {
                    self.i += 1;
                    return;
                }
                '\n' => return,
                _ => self.i += 1,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Declarations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Class,
    Interface,
    Object,
    Struct,
    Enum,
    Protocol,
    Extension,
    Fun,
    Prop,
    Ctor,
    Case,
}

impl Kind {
    fn is_type(self) -> bool {
        matches!(
            self,
            Kind::Class
                | Kind::Interface
                | Kind::Object
                | Kind::Struct
                | Kind::Enum
                | Kind::Protocol
        )
    }
}

#[derive(Debug, Clone)]
struct Decl {
    kind: Kind,
    name: String,
    backticked: bool,
    mods: Vec<String>,
}

const MODIFIERS: &[&str] = &[
    "public",
    "open",
    "private",
    "protected",
    "internal",
    "fileprivate",
    "override",
    "suspend",
    "data",
    "sealed",
    "abstract",
    "inner",
    "companion",
    "inline",
    "operator",
    "infix",
    "lateinit",
    "const",
    "final",
    "static",
    "convenience",
    "required",
    "mutating",
    "nonisolated",
    "indirect",
    "external",
    "annotation",
    "value",
    "tailrec",
];

#[derive(Debug, Clone)]
struct Tok {
    text: String,
    ident: bool,
    backticked: bool,
}

fn tokens(code: &str) -> Vec<Tok> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '`' {
            let start = i + 1;
            i = start;
            while i < chars.len() && chars[i] != '`' {
                i += 1;
            }
            out.push(Tok {
                text: chars[start..i].iter().collect(),
                ident: true,
                backticked: true,
            });
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok {
                text: chars[start..i].iter().collect(),
                ident: true,
                backticked: false,
            });
        } else {
            out.push(Tok {
                text: c.to_string(),
                ident: false,
                backticked: false,
            });
            i += 1;
        }
    }
    out
}

/// `code` without its leading annotations or attributes (`@Throws(X::class)`,
/// `@discardableResult`, `@_documentation(visibility: private)`).
fn strip_annotations(code: &str) -> &str {
    let mut s = code.trim_start();
    while let Some(rest) = s.strip_prefix('@') {
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == ':'))
            .unwrap_or(rest.len());
        let mut after = &rest[name_end..];
        if after.starts_with('(') {
            let mut depth = 0;
            let mut end = after.len();
            for (k, ch) in after.char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            after = &after[end..];
        }
        s = after.trim_start();
    }
    s
}

/// The declaration a line of code begins, if any.
fn parse_decl(code: &str, lang: Lang) -> Option<Decl> {
    let toks = tokens(strip_annotations(code));
    let mut mods = Vec::new();
    let mut k = 0;
    while let Some(t) = toks.get(k) {
        let enum_modifier = lang == Lang::Kotlin
            && t.text == "enum"
            && toks.get(k + 1).is_some_and(|n| n.text == "class");
        if !t.backticked && (MODIFIERS.contains(&t.text.as_str()) || enum_modifier) {
            mods.push(t.text.clone());
            k += 1;
        } else {
            break;
        }
    }
    let kw = toks.get(k)?;
    if kw.backticked {
        return None;
    }
    let kind = match (lang, kw.text.as_str()) {
        (_, "class") => Kind::Class,
        (Lang::Kotlin, "interface") => Kind::Interface,
        (Lang::Kotlin, "object") => Kind::Object,
        (Lang::Kotlin, "fun") | (Lang::Swift, "func") => Kind::Fun,
        (Lang::Kotlin, "val" | "var") | (Lang::Swift, "var" | "let") => Kind::Prop,
        (Lang::Kotlin, "constructor") | (Lang::Swift, "init") => Kind::Ctor,
        (Lang::Swift, "struct") => Kind::Struct,
        (Lang::Swift, "enum") => Kind::Enum,
        (Lang::Swift, "protocol") => Kind::Protocol,
        (Lang::Swift, "extension") => Kind::Extension,
        (Lang::Swift, "case") => Kind::Case,
        _ => return None,
    };
    let rest = &toks[k + 1..];
    let name_tok = match kind {
        Kind::Ctor => None,
        // The last name before the parameters: skips generics and a
        // receiver (`fun <T> T.use(`).
        Kind::Fun => rest
            .iter()
            .take_while(|t| t.text != "(")
            .filter(|t| t.ident)
            .last(),
        _ => rest.first().filter(|t| t.ident),
    };
    // `companion object` may have no name.
    if name_tok.is_none() && !matches!(kind, Kind::Ctor | Kind::Object) {
        return None;
    }
    Some(Decl {
        kind,
        name: name_tok.map(|t| t.text.clone()).unwrap_or_default(),
        backticked: name_tok.is_some_and(|t| t.backticked),
        mods,
    })
}

// ---------------------------------------------------------------------------
// Scaffolding symbols
// ---------------------------------------------------------------------------

/// A `uniffi_<crate>_...` symbol in code.
#[derive(Debug)]
struct Symbol {
    name: String,
    /// `func_x`, `method_obj_x` or `constructor_obj_x` of a `_fn_` symbol.
    callable: Option<String>,
    /// The same part of a `_checksum_` symbol.
    checksum: Option<String>,
}

fn symbols(code: &str) -> Vec<Symbol> {
    let mut out = Vec::new();
    for tok in tokens(code) {
        if !tok.ident || !tok.text.starts_with("uniffi_") {
            continue;
        }
        let t = &tok.text;
        let part = |marker: &str| {
            ["func_", "method_", "constructor_"]
                .iter()
                .find_map(|kind| {
                    let m = format!("{marker}{kind}");
                    t.find(&m).map(|at| t[at + marker.len()..].to_owned())
                })
        };
        let callable = part("_fn_");
        let checksum = part("_checksum_");
        if callable.is_some() || checksum.is_some() {
            out.push(Symbol {
                name: t.clone(),
                callable,
                checksum,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cut-down generated Kotlin file with every kind of item, documented,
    /// and UniFFI's own undocumented plumbing.
    const KOTLIN: &str = r#"
package org.poscore

class InternalException(message: String) : kotlin.Exception(message)

object UniffiWithHandle

public object FfiConverterString: FfiConverter<String, RustBuffer.ByValue> {
    override fun lift(value: RustBuffer.ByValue): String {
        return "x${ value.len }"
    }
}

internal interface IntegrityCheckingUniffiLib : Library {
    fun uniffi_pos_ffi_checksum_func_policy_preset(
    ): Short
    fun uniffi_pos_ffi_checksum_method_posengine_status(
    ): Short
    fun uniffi_pos_ffi_checksum_method_eventlistener_on_event(
    ): Short
    fun uniffi_pos_ffi_checksum_constructor_posengine_new(
    ): Short
}

internal interface UniffiLib : Library {
    external fun uniffi_pos_ffi_fn_func_policy_preset(`preset`: RustBuffer.ByValue, uniffi_out_err: UniffiRustCallStatus,
    ): RustBuffer.ByValue
}

/**
 * The engine.
 */
public interface PosEngineInterface {
    
    /**
     * A snapshot.
     */
    fun `status`(): EngineStatus
    
    companion object
}

/**
 * The engine.
 */
open class PosEngine: Disposable, AutoCloseable, PosEngineInterface
{
    @Suppress("UNUSED_PARAMETER")
    /**
     * @suppress
     */
    constructor(withHandle: UniffiWithHandle, handle: Long) {
        this.handle = handle
    }
    /**
     * Opens it.
     */
    constructor(`config`: EngineConfig) :
        this(UniffiWithHandle, 
    uniffiRustCallWithError(PosException) { _status ->
    UniffiLib.uniffi_pos_ffi_fn_constructor_posengine_new(
        FfiConverterTypeEngineConfig.lower(`config`),_status)
}
    )

    override fun destroy() {
        val msg = "a { brace in a string"
    }

    
    /**
     * A snapshot.
     */
    @Throws(PosException::class)override fun `status`(): EngineStatus {
            return FfiConverterTypeEngineStatus.lift(
    callWithHandle {
    uniffiRustCallWithError(PosException) { _status ->
    UniffiLib.uniffi_pos_ffi_fn_method_posengine_status(
        it,
        _status)
}
    }
    )
    }
}

/**
 * @suppress
 */
public object FfiConverterTypePosEngine: FfiConverter<PosEngine, Long> {
    override fun lower(value: PosEngine): Long = value.uniffiCloneHandle()
}

/**
 * Receives events.
 */
public interface EventListener {
    
    /**
     * Receives one event.
     */
    fun `onEvent`(`event`: PosEvent)
    
    companion object
}

/**
 * Receives events.
 */
open class EventListenerImpl: Disposable, AutoCloseable, EventListener
{
    
    /**
     * Receives one event.
     */override fun `onEvent`(`event`: PosEvent)
        = 
    callWithHandle {
    uniffiRustCall() { _status ->
    UniffiLib.uniffi_pos_ffi_fn_method_eventlistener_on_event(
        it, FfiConverterTypePosEvent.lower(`event`),_status)
}
    }
}

internal object uniffiCallbackInterfaceEventListener {
    internal object `onEvent`: UniffiCallbackInterfaceEventListenerMethod0 {
        override fun callback(uniffiHandle: Long, `event`: RustBuffer.ByValue) {
            @JvmField internal var `returnValue`: Long = 0
        }
    }
}

public object FfiConverterTypeEventListener: FfiConverterCallbackInterface<EventListener>()

/**
 * Money.
 */
data class Money (
    /**
     * Minor units.
     */
    var `minorUnits`: kotlin.Long
    , 
    /**
     * The code.
     */
    var `currency`: kotlin.String
    
){
    companion object
}

public object FfiConverterTypeMoney: FfiConverterRustBuffer<Money> {
}

/**
 * How the card was read.
 */

enum class EntryMode {
    
    /**
     * Chip.
     */
    CHIP,
    /**
     * Tap.
     */
    CONTACTLESS;
    companion object
}

public object FfiConverterTypeEntryMode: FfiConverterRustBuffer<EntryMode> {
}

/**
 * Connectivity.
 */
sealed class ConnectivityStatus {
    
    /**
     * Unknown.
     */
    object Unknown : ConnectivityStatus()
    
    /**
     * Online.
     */
    data class Online(
        /**
         * Since when.
         */
        val `sinceMs`: kotlin.Long) : ConnectivityStatus()
        
    {
        companion object
    }
    companion object
}

public object FfiConverterTypeConnectivityStatus : FfiConverterRustBuffer<ConnectivityStatus>{
}

/**
 * Every error.
 */
sealed class PosException: kotlin.Exception() {
    
    /**
     * Bad input.
     */
    class InvalidInput(
        
        /**
         * What is wrong.
         */
        val `reason`: kotlin.String
        ) : PosException() {
        override val message
            get() = "reason=${ `reason` }"
    }
    
    companion object ErrorHandler : UniffiRustCallStatusErrorHandler<PosException> {
        override fun lift(error_buf: RustBuffer.ByValue): PosException = FfiConverterTypePosError.lift(error_buf)
    }
}

public object FfiConverterTypePosError : FfiConverterRustBuffer<PosException> {
}

/**
 * A preset.
 */
@Throws(PosException::class) fun `policyPreset`(`preset`: PolicyPreset): OfflinePolicy {
    return FfiConverterTypeOfflinePolicy.lift(
    uniffiRustCallWithError(PosException) { _status ->
    UniffiLib.uniffi_pos_ffi_fn_func_policy_preset(
        FfiConverterTypePolicyPreset.lower(`preset`),_status)
})
}

/**
 * @suppress
 */
public fun uniffiEnsureInitialized() {
}
"#;

    /// `KOTLIN` with the doc comment that ends right before `line` (the
    /// first line containing it) removed.
    fn without_doc_before(src: &str, line: &str) -> String {
        let lines: Vec<&str> = src.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains(line))
            .unwrap_or_else(|| panic!("{line:?} is not in the fixture"));
        // The decl may start with `*/` (the doc ends on its own line).
        let (end, keep_tail) = if lines[at].trim_start().starts_with("*/") {
            (at, true)
        } else {
            (at - 1, false)
        };
        let start = (0..=end)
            .rev()
            .find(|&k| lines[k].trim_start().starts_with("/**"))
            .unwrap_or_else(|| panic!("no doc before {line:?}"));
        let mut out: Vec<String> = lines[..start].iter().map(|s| s.to_string()).collect();
        if keep_tail {
            out.push(lines[at].trim_start().trim_start_matches("*/").to_owned());
        } else {
            out.extend(lines[end + 1..=at].iter().map(|s| s.to_string()));
        }
        out.extend(lines[at + 1..].iter().map(|s| s.to_string()));
        out.join("\n")
    }

    fn problems(src: &str, lang: Lang) -> Vec<String> {
        check(src, lang).1
    }

    #[test]
    fn a_documented_kotlin_file_passes_and_uniffis_plumbing_needs_no_doc() {
        assert_eq!(problems(KOTLIN, Lang::Kotlin), Vec::<String>::new());
    }

    #[test]
    fn each_undocumented_kotlin_item_is_listed() {
        // One removal per kind of item; each is reported, alone, at its line.
        let cases = [
            (
                "public interface PosEngineInterface {",
                "interface PosEngineInterface",
            ),
            ("open class PosEngine:", "class PosEngine:"),
            (
                "    fun `status`(): EngineStatus",
                "fun `status`(): EngineStatus",
            ),
            ("override fun `status`()", "override fun `status`()"),
            (
                "constructor(`config`: EngineConfig) :",
                "constructor(`config`",
            ),
            (
                "    fun `onEvent`(`event`: PosEvent)",
                "fun `onEvent`(`event`: PosEvent)",
            ),
            ("override fun `onEvent`", "override fun `onEvent`"),
            ("open class EventListenerImpl", "class EventListenerImpl"),
            ("data class Money (", "data class Money"),
            ("var `currency`: kotlin.String", "var `currency`"),
            ("enum class EntryMode {", "enum class EntryMode"),
            ("    CONTACTLESS;", "CONTACTLESS;"),
            ("object Unknown : ConnectivityStatus()", "object Unknown"),
            ("data class Online(", "data class Online("),
            ("val `sinceMs`: kotlin.Long)", "val `sinceMs`"),
            ("sealed class PosException", "sealed class PosException"),
            ("class InvalidInput(", "class InvalidInput("),
            ("val `reason`: kotlin.String", "val `reason`"),
            ("fun `policyPreset`", "fun `policyPreset`"),
        ];
        for (line, expected) in cases {
            let src = without_doc_before(KOTLIN, line);
            let found = problems(&src, Lang::Kotlin);
            assert_eq!(found.len(), 1, "removing the doc of {line:?}: {found:?}");
            assert!(found[0].contains(expected), "{line:?}: {found:?}");
            let at = src
                .lines()
                .position(|l| l.contains(line.trim_start().trim_start_matches("*/")))
                .unwrap_or(0);
            assert!(
                found[0].starts_with(&format!("{}: ", at + 1)),
                "{line:?}: {found:?} (line {})",
                at + 1
            );
        }
    }

    #[test]
    fn a_suppress_only_doc_does_not_count() {
        let src = KOTLIN.replacen(" * A preset.", " * @suppress", 1);
        let found = problems(&src, Lang::Kotlin);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("fun `policyPreset`"), "{found:?}");
    }

    #[test]
    fn an_exported_callable_without_a_declaration_is_reported() {
        // The checksum names a method that no declaration calls.
        let src = KOTLIN.replacen(
            "    fun uniffi_pos_ffi_checksum_func_policy_preset(",
            "    fun uniffi_pos_ffi_checksum_method_posengine_close(\n    ): Short\n    fun uniffi_pos_ffi_checksum_func_policy_preset(",
            1,
        );
        let found = problems(&src, Lang::Kotlin);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("method_posengine_close"), "{found:?}");
    }

    #[test]
    fn a_type_without_a_declaration_or_a_file_without_markers_is_reported() {
        let src = KOTLIN.replacen("data class Money (", "data class Cash (", 1);
        let found = problems(&src, Lang::Kotlin);
        assert!(
            found.iter().any(|p| p.contains("type `Money`")),
            "{found:?}"
        );
        let found = problems("fun `x`() {}\n", Lang::Kotlin);
        assert!(found.iter().any(|p| p.contains("checksum")), "{found:?}");
        assert!(
            found.iter().any(|p| p.contains("FfiConverterType")),
            "{found:?}"
        );
    }

    /// A cut-down generated Swift file.
    const SWIFT: &str = r#"
import Foundation

fileprivate extension RustBuffer {
    init(bytes: [UInt8]) {
        self.init(capacity: 0, len: 0, data: nil)
    }
}

public struct FfiConverterString: FfiConverter {
    public static func lift(_ value: RustBuffer) throws -> String {
        return "\(value.len) }"
    }
}

/**
 * The engine.
 */
public protocol PosEngineProtocol: AnyObject, Sendable {
    
    /**
     * A snapshot.
     */
    func status() throws  -> EngineStatus
    
}
/**
 * The engine.
 */
open class PosEngine: PosEngineProtocol, @unchecked Sendable {
    fileprivate let handle: UInt64

    /// Used to instantiate a [FFIObject] without an actual handle, for fakes in tests, mostly.
#if swift(>=5.8)
    @_documentation(visibility: private)
#endif
    public struct NoHandle {
        public init() {}
    }
    /**
     * Opens it.
     */
public convenience init(config: EngineConfig)throws  {
    let handle =
        try rustCallWithError(FfiConverterTypePosError_lift) {
    uniffi_pos_ffi_fn_constructor_posengine_new(
        FfiConverterTypeEngineConfig_lower(config),$0
    )
}
    self.init(unsafeFromHandle: handle)
}

    
    /**
     * A snapshot.
     */
open func status()throws  -> EngineStatus  {
    return try  FfiConverterTypeEngineStatus_lift(try rustCallWithError(FfiConverterTypePosError_lift) {
    uniffi_pos_ffi_fn_method_posengine_status(
            self.uniffiCloneHandle(),$0
    )
})
}
}

#if swift(>=5.8)
@_documentation(visibility: private)
#endif
public struct FfiConverterTypePosEngine: FfiConverter {
}

/**
 * Money.
 */
public struct Money: Equatable, Hashable {
    /**
     * Minor units.
     */
    public var minorUnits: Int64
    /**
     * The code.
     */
    public var currency: String

    public init(
        /**
         * Minor units.
         */minorUnits: Int64, 
        /**
         * The code.
         */currency: String) {
        self.minorUnits = minorUnits
        self.currency = currency
    }
}

public struct FfiConverterTypeMoney: FfiConverterRustBuffer {
}

/**
 * Every error.
 */
public 
enum PosError: Swift.Error, Equatable, Hashable, Foundation.LocalizedError {

    
    
    /**
     * Bad input.
     */
    case InvalidInput(reason: String
    )
    /**
     * Closed.
     */
    case Closed

    public var errorDescription: String? {
        String(reflecting: self)
    }
}

public struct FfiConverterTypePosError: FfiConverterRustBuffer {
}

/**
 * A preset.
 */
public func policyPreset(preset: PolicyPreset)throws  -> OfflinePolicy  {
    return try  FfiConverterTypeOfflinePolicy_lift(try rustCallWithError(FfiConverterTypePosError_lift) {
        uniffiCallStatus in
    uniffi_pos_ffi_fn_func_policy_preset(
        FfiConverterTypePolicyPreset_lower(preset),uniffiCallStatus
    )
})
}

private let initializationResult: InitializationResult = {
    if (uniffi_pos_ffi_checksum_func_policy_preset() != 45498) {
        return InitializationResult.apiChecksumMismatch
    }
    if (uniffi_pos_ffi_checksum_method_posengine_status() != 1) {
        return InitializationResult.apiChecksumMismatch
    }
    if (uniffi_pos_ffi_checksum_constructor_posengine_new() != 2) {
        return InitializationResult.apiChecksumMismatch
    }
    return InitializationResult.ok
}()
"#;

    #[test]
    fn a_documented_swift_file_passes_and_uniffis_plumbing_needs_no_doc() {
        assert_eq!(problems(SWIFT, Lang::Swift), Vec::<String>::new());
    }

    #[test]
    fn each_undocumented_swift_item_is_listed() {
        let cases = [
            (
                "public protocol PosEngineProtocol",
                "protocol PosEngineProtocol",
            ),
            ("    func status() throws", "func status() throws"),
            ("open class PosEngine:", "class PosEngine:"),
            ("public convenience init(config", "init(config"),
            ("open func status()", "open func status()"),
            ("public struct Money:", "struct Money:"),
            ("    public var currency: String", "var currency"),
            ("enum PosError:", "enum PosError:"),
            ("    case Closed", "case Closed"),
            ("    case InvalidInput(", "case InvalidInput("),
            ("public func policyPreset", "func policyPreset"),
        ];
        for (line, expected) in cases {
            // `public` alone on the line above `enum PosError` stays.
            let src = if line == "enum PosError:" {
                SWIFT.replacen("/**\n * Every error.\n */\n", "", 1)
            } else {
                without_doc_before(SWIFT, line)
            };
            let found = problems(&src, Lang::Swift);
            assert_eq!(found.len(), 1, "removing the doc of {line:?}: {found:?}");
            assert!(found[0].contains(expected), "{line:?}: {found:?}");
        }
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let lx = lex(
            "a {\n  \"}\" // }\n  /* } */ \"${ x { } }\"\n}\nb\n",
            Lang::Kotlin,
        );
        assert_eq!(lx.depth, vec![0, 1, 1, 1, 0, 0]);
        let lx = lex("a {\n  \"\\(x) )\"\n}\n", Lang::Swift);
        assert_eq!(lx.depth, vec![0, 1, 1, 0]);
        assert_eq!(lx.code[1].trim(), "\"\"");
    }

    #[test]
    fn declarations_are_parsed() {
        let d = parse_decl(
            "@Throws(PosException::class)override suspend fun `connect`(`x`: Int)",
            Lang::Kotlin,
        )
        .expect("a fun");
        assert_eq!(
            (d.kind, d.name.as_str(), d.backticked),
            (Kind::Fun, "connect", true)
        );
        let d = parse_decl(
            "inline fun <T : Disposable?, R> T.use(block: (T) -> R) =",
            Lang::Kotlin,
        )
        .expect("a fun");
        assert_eq!(
            (d.kind, d.name.as_str(), d.backticked),
            (Kind::Fun, "use", false)
        );
        let d = parse_decl("enum class EntryMode {", Lang::Kotlin).expect("an enum");
        assert_eq!((d.kind, d.name.as_str()), (Kind::Class, "EntryMode"));
        assert!(d.mods.contains(&"enum".to_owned()));
        let d = parse_decl("companion object", Lang::Kotlin).expect("a companion");
        assert!(d.mods.contains(&"companion".to_owned()));
        assert!(parse_decl("CHIP,", Lang::Kotlin).is_none());
        assert!(
            is_enum_entry("CHIP,")
                && is_enum_entry("MANUAL;")
                && !is_enum_entry("companion object")
        );
        let d = parse_decl(
            "public convenience init(link: ReaderLink)throws  {",
            Lang::Swift,
        )
        .expect("an init");
        assert_eq!(d.kind, Kind::Ctor);
        let d = parse_decl("case approved(processorRef: String", Lang::Swift).expect("a case");
        assert_eq!((d.kind, d.name.as_str()), (Kind::Case, "approved"));
    }
}
