//! Layers without circles: the files of `src/` form layers, each importing only files of its own
//! layer or below, and no two files import each other, directly or around a longer loop.
//!
//! | layer | files                                  | what lives there                            |
//! |-------|----------------------------------------|---------------------------------------------|
//! | 0     | `src/bindings/**`                      | bindgen output (ffi, ffi_emu, ffi_selftest) |
//! | 1     | `src/core/**`                          | error, dtype, device, emu, gpu, tensor, …   |
//! | 2     | `src/families/**`                      | the kernel families (may use each other)    |
//! | 3     | `src/ops/**`                           | registry entries and check rows             |
//! | 4     | `src/tools/**`                         | check runner, bench, model, sass, …         |
//! | 5     | `src/lib.rs`, `src/doc_pages.rs`       | the crate root and its re-export facade     |
//!
//! `src/bin/**` is left out (separate binary crates); any other file is a finding. There is no
//! exemption list: a finding is fixed by moving code, not by listing it here.
//!
//! The check reads source text (it never needs the crate to build) with a small lexer that drops
//! comments and literals, and finds every path into the crate: `use` trees, `crate::` /
//! `$crate::` / `super::` / `self::` paths, bare paths into a file-backed child module, and the
//! `include!` / `launch_code!` sites that splice one file into another. Each path is resolved to
//! the file that owns the longest prefix of its absolute module path. The checker is a function
//! over `(path, text)` pairs, so the unit tests at the bottom run it on small in-memory trees.
//!
//! Run with `cargo test --test layers -- --nocapture` to see the import matrix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Layers: which layer a file belongs to.
// ---------------------------------------------------------------------------------------------

/// The layers, lowest first; a file's layer is its index here.
const LAYERS: [&str; 6] = ["bindings", "core", "families", "ops", "tools", "root"];

/// The crate root's layer, the last: its files are named one by one, the others by directory.
const ROOT: usize = LAYERS.len() - 1;

/// The row and column of the matrix for files that belong to no layer.
const UNASSIGNED: usize = LAYERS.len();

/// The name of a matrix row or column.
fn layer_name(layer: usize) -> &'static str {
    LAYERS.get(layer).copied().unwrap_or("unassigned")
}

/// Files that are not part of the library crate, so not part of its graph.
fn is_excluded(path: &str) -> bool {
    path.starts_with("src/bin/") || !path.ends_with(".rs")
}

/// The layer of a library file, `None` for a file that belongs to none.
fn layer_of(path: &str) -> Option<usize> {
    if path == "src/lib.rs" || path == "src/doc_pages.rs" {
        return Some(ROOT);
    }
    let rest = path.strip_prefix("src/")?;
    // `src/core/**` is the layer; `src/core.rs` is the same module's root in the non-mod.rs style.
    let top = rest.split('/').next()?;
    let top = top.strip_suffix(".rs").unwrap_or(top);
    LAYERS[..ROOT].iter().position(|&layer| layer == top)
}

// ---------------------------------------------------------------------------------------------
// Lexing: tokens with line numbers, with comments and string/char literals taken out.
// ---------------------------------------------------------------------------------------------

/// What the scanner needs to tell apart; everything that can never be part of a path is `Other`.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// An identifier or keyword; a raw identifier keeps its `r#`, so `r#use` is no `use`.
    Ident(String),
    /// The body of a string literal: opaque, except as the argument of `include!`.
    Str(String),
    /// `::`
    PathSep,
    /// Any other single punctuation character.
    Punct(char),
    /// Char literals, lifetimes and numbers.
    Other,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Splits Rust source into tokens. Comments (line, nested block, doc) vanish, string and char
/// literals become single tokens, so a path written inside either never counts as an import;
/// every token keeps the line it starts on.
fn lex(text: &str) -> Vec<Token> {
    let s: Vec<char> = text.chars().collect();
    let at = |j: usize| s.get(j).copied().unwrap_or('\0');
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < s.len() {
        let (c, start, start_line) = (s[i], i, line);
        let tok = if c.is_whitespace() {
            i += 1;
            None
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
            None
        } else if c == '/' && at(i + 1) == '*' {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            None
        } else if let Some((end, body)) = string_literal(&s, i) {
            i = end;
            Some(Tok::Str(body))
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            i = char_or_lifetime_end(&s, if c == 'b' { i + 1 } else { i });
            Some(Tok::Other)
        } else if c == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
            let start = i;
            i += 2;
            while is_ident_char(at(i)) {
                i += 1;
            }
            Some(Tok::Ident(s[start..i].iter().collect()))
        } else if is_ident_start(c) {
            let start = i;
            while is_ident_char(at(i)) {
                i += 1;
            }
            Some(Tok::Ident(s[start..i].iter().collect()))
        } else if c.is_ascii_digit() {
            // Digits, suffixes and a fraction; `0..n` stays a range.
            while is_ident_char(at(i)) || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
            Some(Tok::Other)
        } else if c == ':' && at(i + 1) == ':' {
            i += 2;
            Some(Tok::PathSep)
        } else {
            i += 1;
            Some(Tok::Punct(c))
        };
        // Comments and literals may span lines: the lines they span still count.
        line += s[start..i].iter().filter(|&&c| c == '\n').count();
        if let Some(tok) = tok {
            tokens.push(Token { tok, line: start_line });
        }
    }
    tokens
}

/// A string literal starting at `i` (`"…"`, `b"…"`, `c"…"`, `r#"…"#`, `br"…"`, `cr"…"`): the
/// index after it and its body, `None` if no string literal starts there.
fn string_literal(s: &[char], i: usize) -> Option<(usize, String)> {
    let mut j = i;
    if matches!(s.get(j), Some('b' | 'c')) {
        j += 1;
    }
    let raw = s.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    let hashes = if raw { s[j..].iter().take_while(|&&c| c == '#').count() } else { 0 };
    j += hashes;
    if s.get(j) != Some(&'"') {
        return None;
    }
    let body_start = j + 1;
    let mut k = body_start;
    while k < s.len() {
        if !raw && s[k] == '\\' {
            k += 2;
        } else if s[k] == '"' && s[k + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            let body = s[body_start..k].iter().collect();
            return Some((k + 1 + hashes, body));
        } else {
            k += 1;
        }
    }
    Some((s.len(), s[body_start..].iter().collect()))
}

/// The index after a char literal (`'x'`, `'\n'`, `'\u{1F600}'`) or a lifetime or label (`'a`)
/// that starts with the quote at `q`.
fn char_or_lifetime_end(s: &[char], q: usize) -> usize {
    let at = |j: usize| s.get(j).copied().unwrap_or('\0');
    if at(q + 1) == '\\' {
        // An escape: skip the escaped character (it may be a quote), then find the closing one.
        let mut j = q + 3;
        while j < s.len() && s[j] != '\'' {
            j += 1;
        }
        j + 1
    } else if at(q + 2) == '\'' {
        q + 3
    } else {
        let mut j = q + 1;
        while is_ident_char(at(j)) {
            j += 1;
        }
        j
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning one file: its inline modules, child declarations, include sites and paths.
// ---------------------------------------------------------------------------------------------

/// A path into the crate as written, not yet resolved.
#[derive(Clone, Debug)]
struct PathRef {
    /// The inline modules around it (`mod tests { … }`), relative to the file's own module.
    scope: Vec<String>,
    /// `crate`, `self`, `super` or a bare name first (`$crate` reads as `crate`), then the rest;
    /// the `self` of a use group (`use a::{self}`) and a glob's `*` stay in for messages and are
    /// dropped when resolving.
    segments: Vec<String>,
    line: usize,
}

/// `include!("x.rs")`, or one of the two includes that `launch_code!("x.rs")` expands to.
#[derive(Clone, Debug)]
struct IncludeSite {
    /// The inline module the included text lands in, relative to the including file's module.
    scope: Vec<String>,
    /// The literal, relative to the including file's directory.
    name: String,
    /// How the site reads, for messages: `include!("x.rs")` or `launch_code!("x.rs")`.
    written: String,
    line: usize,
}

/// What one file says about the module tree and its imports.
#[derive(Debug, Default)]
struct Scan {
    paths: Vec<PathRef>,
    includes: Vec<IncludeSite>,
    /// File-backed children (`mod x;`) by name, with the inline scope that declares them.
    children: BTreeMap<String, Vec<String>>,
}

/// The inline modules of `core/launch.rs`'s `launch_code!`: it includes its argument in both.
const LAUNCH_CODE_MODULES: [&str; 2] = ["on_cuda", "on_emu"];

fn ident(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token { tok: Tok::Ident(name), .. }) => Some(name),
        _ => None,
    }
}

fn is(token: Option<&Token>, tok: &Tok) -> bool {
    token.is_some_and(|t| t.tok == *tok)
}

/// Walks the tokens of one file once. Braces are tracked so that code inside `mod name { … }`
/// gets `name` added to its module path; every other brace only nests.
fn scan(tokens: &[Token]) -> Scan {
    let mut scan = Scan::default();
    // One entry per open brace: the inline module it opens, if it opens one.
    let mut braces: Vec<Option<String>> = Vec::new();
    let mut next_brace_opens: Option<String> = None;
    let scope_of = |braces: &[Option<String>]| braces.iter().flatten().cloned().collect::<Vec<_>>();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        match &token.tok {
            Tok::Punct('{') => braces.push(next_brace_opens.take()),
            Tok::Punct('}') => {
                braces.pop();
            }
            Tok::Ident(word) if word == "mod" => {
                if let Some(name) = ident(tokens.get(i + 1)) {
                    let after = tokens.get(i + 2);
                    if is(after, &Tok::Punct('{')) {
                        next_brace_opens = Some(name.to_string());
                    } else if is(after, &Tok::Punct(';')) {
                        scan.children.entry(name.to_string()).or_insert_with(|| scope_of(&braces));
                    }
                    i += 2;
                    continue;
                }
            }
            // A `use` item (not the `use<'a>` of precise capturing): every leaf of its tree.
            Tok::Ident(word) if word == "use" && starts_use_tree(tokens.get(i + 1)) => {
                let mut leaves = Vec::new();
                let end = parse_use_tree(tokens, i + 1, Vec::new(), &mut leaves);
                let scope = scope_of(&braces);
                for (segments, line) in leaves {
                    scan.paths.push(PathRef { scope: scope.clone(), segments, line });
                }
                i = end.max(i + 1);
                continue;
            }
            Tok::Ident(word) if word == "include" || word == "launch_code" => {
                // Only a literal argument names a file here; `include!(concat!(env!("OUT_DIR"), …))`
                // splices in generated code that is not under src/.
                let literal = match (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3)) {
                    (Some(bang), Some(open), Some(Token { tok: Tok::Str(name), .. }))
                        if bang.tok == Tok::Punct('!') && open.tok == Tok::Punct('(') =>
                    {
                        Some(name.clone())
                    }
                    _ => None,
                };
                if let Some(name) = literal {
                    let scope = scope_of(&braces);
                    let written = format!("{word}!(\"{name}\")");
                    let modules: Vec<Option<&str>> = if word == "include" {
                        vec![None]
                    } else {
                        LAUNCH_CODE_MODULES.iter().map(|&m| Some(m)).collect()
                    };
                    for module in modules {
                        let mut scope = scope.clone();
                        scope.extend(module.map(str::to_string));
                        let (name, written) = (name.clone(), written.clone());
                        scan.includes.push(IncludeSite { scope, name, written, line: token.line });
                    }
                }
            }
            _ => {
                if let Some((segments, end)) = path_at(tokens, i) {
                    scan.paths.push(PathRef { scope: scope_of(&braces), segments, line: token.line });
                    // Go on at the last segment, which may be a macro that includes a file
                    // (`crate::core::launch::launch_code!("cuda.rs")`).
                    i = end - 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    scan
}

/// Whether the token after `use` starts a use tree.
fn starts_use_tree(token: Option<&Token>) -> bool {
    matches!(token.map(|t| &t.tok), Some(Tok::Ident(_) | Tok::PathSep | Tok::Punct('{' | '*' | '$')))
}

/// Parses the use tree at `i` (after `use`, or inside a group), adding each leaf, with `prefix`
/// in front, and the line of its last segment to `leaves`. Returns the index after the tree.
/// Groups nest (`crate::a::{b, c::{d, e as f}, self}`); globs end a leaf (`super::*`); a leading
/// `::` marks an extern crate, which never resolves into this crate.
fn parse_use_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: Vec<String>,
    leaves: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let tok = |j: usize| tokens.get(j).map(|t| &t.tok);
    let mut segments = prefix;
    if tok(i) == Some(&Tok::PathSep) {
        if segments.is_empty() {
            segments.push("::".to_string());
        }
        i += 1;
    }
    loop {
        let line = tokens.get(i).map_or(0, |t| t.line);
        match tok(i) {
            Some(Tok::Punct('$')) if ident(tokens.get(i + 1)) == Some("crate") => {
                segments.push("crate".to_string());
                i += 2;
            }
            Some(Tok::Ident(name)) => {
                segments.push(name.clone());
                i += 1;
            }
            Some(Tok::Punct('*')) => {
                segments.push("*".to_string());
                leaves.push((segments, line));
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match tok(i) {
                        Some(Tok::Punct('}')) => return i + 1,
                        None => return i,
                        _ => {}
                    }
                    let next = parse_use_tree(tokens, i, segments.clone(), leaves);
                    i = next.max(i + 1);
                    if tok(i) == Some(&Tok::Punct(',')) {
                        i += 1;
                    }
                }
            }
            _ => {
                // A macro variable after `::` (`$crate::a::$name`): the path so far is the import.
                if i > 0 && tok(i - 1) == Some(&Tok::PathSep) && segments.len() > 1 {
                    leaves.push((segments, line));
                }
                return i;
            }
        }
        if tok(i) == Some(&Tok::PathSep) {
            i += 1;
            continue;
        }
        if ident(tokens.get(i)) == Some("as") {
            i += 2;
        }
        leaves.push((segments, line));
        return i;
    }
}

/// The path starting at token `i`, if one starts there, and the index after it: `crate::`,
/// `$crate::`, `self::` or `super::` (any number of them) followed by segments, or a bare
/// `name::segment` (kept as a candidate; it counts only if `name` is a file-backed child).
/// Generic arguments end a path (`crate::a::B::<T>`): the prefix before them is enough.
fn path_at(tokens: &[Token], i: usize) -> Option<(Vec<String>, usize)> {
    let tok = |j: usize| tokens.get(j).map(|t| &t.tok);
    let before = |back: usize| i.checked_sub(back).and_then(tok);
    let (first, mut j) = match tok(i)? {
        Tok::Punct('$') if ident(tokens.get(i + 1)) == Some("crate") => ("crate".to_string(), i + 2),
        Tok::Ident(name) => (name.clone(), i + 1),
        _ => return None,
    };
    if tok(j) != Some(&Tok::PathSep) || !matches!(tok(j + 1), Some(Tok::Ident(_))) {
        return None;
    }
    // The middle of a longer path, a method's turbofish (`x.collect::<…>`), a macro variable.
    if matches!(before(1), Some(Tok::PathSep | Tok::Punct('.' | '$'))) {
        return None;
    }
    // `pub(in crate::a)` restricts visibility; it imports nothing.
    let word_before = |back: usize| i.checked_sub(back).and_then(|j| ident(tokens.get(j)));
    if word_before(1) == Some("in") && before(2) == Some(&Tok::Punct('(')) && word_before(3) == Some("pub") {
        return None;
    }
    let mut segments = vec![first];
    while tok(j) == Some(&Tok::PathSep) {
        match tok(j + 1) {
            Some(Tok::Ident(name)) => segments.push(name.clone()),
            _ => break,
        }
        j += 2;
    }
    Some((segments, j))
}

// ---------------------------------------------------------------------------------------------
// The module tree: which module path each file has, and which file owns which module path.
// ---------------------------------------------------------------------------------------------

type ModPath = Vec<String>;

/// The module path a file has by its name: src/lib.rs → [], src/a.rs and src/a/mod.rs → [a],
/// src/a/b.rs → [a, b]. An included file does not have one (its text lands in the includer's).
fn module_path_of(path: &str) -> ModPath {
    let rest = path.strip_prefix("src/").unwrap_or(path);
    let rest = rest.strip_suffix(".rs").unwrap_or(rest);
    if rest == "lib" {
        return Vec::new();
    }
    let mut segments: ModPath = rest.split('/').map(str::to_string).collect();
    if segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

/// `name` taken relative to the directory of `file`, as `include!` does.
fn sibling(file: &str, name: &str) -> String {
    let mut parts: Vec<&str> = file.split('/').collect();
    parts.pop();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// The absolute module path a path refers to, from a file whose module path is `base`; `None`
/// for a path that does not lead into this crate (an extern crate, a bare name that is not a
/// file-backed child, `super` above the root).
fn absolute(path: &PathRef, base: &[String], children: &BTreeMap<String, ModPath>) -> Option<ModPath> {
    let (first, rest) = path.segments.split_first()?;
    let (mut absolute, rest) = match first.as_str() {
        "crate" => (Vec::new(), rest),
        "self" | "super" => {
            // Relative to the enclosing module, inline modules included: in `mod tests` of F,
            // `super` is F itself.
            let mut here: ModPath = base.iter().chain(&path.scope).cloned().collect();
            let leading = path.segments.iter().take_while(|s| *s == "self" || *s == "super").count();
            for segment in &path.segments[..leading] {
                if segment == "super" {
                    here.pop()?;
                }
            }
            (here, &path.segments[leading..])
        }
        name => {
            // A bare `x::…` counts where the file declares `mod x;`, wherever it is written in it.
            let declared_in = children.get(name)?;
            let mut child: ModPath = base.iter().chain(declared_in).cloned().collect();
            child.push(name.to_string());
            (child, rest)
        }
    };
    absolute.extend(rest.iter().filter(|s| *s != "self" && *s != "*").cloned());
    Some(absolute)
}

/// The file that owns the longest prefix of `absolute`: `crate::core::tensor::Tensor` is in
/// src/core/tensor.rs, `crate::Device` in src/lib.rs.
fn owner_of<'a>(owners: &BTreeMap<ModPath, &'a str>, absolute: &[String]) -> Option<&'a str> {
    (0..=absolute.len()).rev().find_map(|n| owners.get(&absolute[..n]).copied())
}

// ---------------------------------------------------------------------------------------------
// The check: the import graph of the files, then layers, cycles and unassigned files.
// ---------------------------------------------------------------------------------------------

/// One import occurrence between two different files.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    line: usize,
    to: String,
    /// The path or include site as written, for messages.
    written: String,
}

#[derive(Debug, Default)]
struct Report {
    /// Everything that fails the check, each naming file and line.
    findings: Vec<String>,
    /// Every import occurrence, sorted.
    edges: Vec<Edge>,
    /// Every library file with its layer (`UNASSIGNED` for none).
    layers: BTreeMap<String, usize>,
}

/// Checks a crate's source files, given as (path relative to the crate root, text) pairs.
fn check(sources: &[(String, String)]) -> Report {
    let files: BTreeMap<&str, Scan> = sources
        .iter()
        .filter(|(path, _)| !is_excluded(path))
        .map(|(path, text)| (path.as_str(), scan(&lex(text))))
        .collect();
    let mut findings = Vec::new();

    // Include sites, with the file each names.
    let mut includes: Vec<(&str, &IncludeSite, &str)> = Vec::new();
    for (&file, scan) in &files {
        for site in &scan.includes {
            match files.get_key_value(sibling(file, &site.name).as_str()) {
                Some((&target, _)) => includes.push((file, site, target)),
                None => findings.push(format!("{file}:{}: {} names no file of the library", site.line, site.written)),
            }
        }
    }
    let included: BTreeSet<&str> = includes.iter().map(|&(_, _, target)| target).collect();

    // Module paths: a file has its own by its name, unless it is included; then it has the module
    // path of each include site (launch_code! includes twice), possibly through included files.
    let mut bases: BTreeMap<&str, BTreeSet<ModPath>> = files
        .keys()
        .filter(|file| !included.contains(*file))
        .map(|&file| (file, BTreeSet::from([module_path_of(file)])))
        .collect();
    let mut owners: BTreeMap<ModPath, &str> =
        bases.iter().flat_map(|(&file, paths)| paths.iter().map(move |path| (path.clone(), file))).collect();
    for _ in 0..=files.len() {
        let mut changed = false;
        for &(from, site, target) in &includes {
            for base in bases.get(from).cloned().unwrap_or_default() {
                let mut path = base;
                path.extend(site.scope.iter().cloned());
                // The inline module the text lands in is made of that text: the included file owns
                // it (`crate::families::activation::on_cuda::forward` is in cuda.rs).
                if !site.scope.is_empty() {
                    owners.entry(path.clone()).or_insert(target);
                }
                changed |= bases.entry(target).or_default().insert(path);
            }
        }
        if !changed {
            break;
        }
    }

    // Edges, one per occurrence: a file included twice still has each path once, and the two
    // includes of one `launch_code!` are one occurrence.
    let mut edges: BTreeMap<(&str, usize, usize, &str), Edge> = BTreeMap::new();
    for &(from, site, to) in &includes {
        let edge = Edge { from: from.to_string(), line: site.line, to: to.to_string(), written: site.written.clone() };
        edges.insert((from, site.line, usize::MAX, to), edge);
    }
    for (&file, scan) in &files {
        for base in bases.get(file).into_iter().flatten() {
            for (index, path) in scan.paths.iter().enumerate() {
                let Some(to) = absolute(path, base, &scan.children).and_then(|a| owner_of(&owners, &a)) else {
                    continue;
                };
                // Inside a file (its own tests, `self::`) is no import.
                if to != file {
                    let written = path.segments.join("::");
                    let edge = Edge { from: file.to_string(), line: path.line, to: to.to_string(), written };
                    edges.insert((file, path.line, index, to), edge);
                }
            }
        }
    }
    let edges: Vec<Edge> = edges.into_values().collect();
    let layers: BTreeMap<String, usize> =
        files.keys().map(|&file| (file.to_string(), layer_of(file).unwrap_or(UNASSIGNED))).collect();

    // 1. Files outside every layer.
    for (file, &layer) in &layers {
        if layer == UNASSIGNED {
            findings.push(format!(
                "{file}:1: file not assigned to a layer (src/{{bindings,core,families,ops,tools}}/**, src/lib.rs, \
                 src/doc_pages.rs)"
            ));
        }
    }

    // 2. Imports from a higher layer.
    for edge in &edges {
        let (from, to) = (layers[&edge.from], layers[&edge.to]);
        if from != UNASSIGNED && to != UNASSIGNED && to > from {
            findings.push(format!(
                "{}:{}: `{}` imports {}: layer {from} ({}) may not import layer {to} ({})",
                edge.from,
                edge.line,
                edge.written,
                edge.to,
                layer_name(from),
                layer_name(to)
            ));
        }
    }

    // 3. Cycles: every strongly connected component of more than one file, with its edges.
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = files.keys().map(|&file| (file, BTreeSet::new())).collect();
    for edge in &edges {
        graph.entry(edge.from.as_str()).or_default().insert(edge.to.as_str());
    }
    for component in strongly_connected(&graph).into_iter().filter(|c| c.len() > 1) {
        let mut message = format!("cycle of {} files: {}", component.len(), component.join(", "));
        let inside = |file: &String| component.contains(&file.as_str());
        for edge in edges.iter().filter(|e| inside(&e.from) && inside(&e.to)) {
            write!(message, "\n    {}:{}: `{}` -> {}", edge.from, edge.line, edge.written, edge.to).unwrap();
        }
        findings.push(message);
    }

    Report { findings, edges, layers }
}

/// Tarjan's algorithm: the strongly connected components of `graph`, each sorted, in a
/// deterministic order (the graph is ordered and every node is a key).
fn strongly_connected<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    #[derive(Default)]
    struct Tarjan<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>, t: &mut Tarjan<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on_stack.insert(v);
        for &w in graph.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(graph, t, w);
                let low = t.low[v].min(t.low[w]);
                t.low.insert(v, low);
            } else if t.on_stack.contains(w) {
                let low = t.low[v].min(t.index[w]);
                t.low.insert(v, low);
            }
        }
        if t.low[v] == t.index[v] {
            let mut component = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort_unstable();
            t.components.push(component);
        }
    }
    let mut tarjan = Tarjan::default();
    for &v in graph.keys() {
        if !tarjan.index.contains_key(v) {
            visit(graph, &mut tarjan, v);
        }
    }
    tarjan.components
}

impl Report {
    /// The import counts between layers (row imports column, one per occurrence) and the number
    /// of files per layer, as a table.
    fn summary(&self) -> String {
        let n = LAYERS.len() + 1;
        let mut matrix = vec![vec![0usize; n]; n];
        for edge in &self.edges {
            matrix[self.layers[&edge.from]][self.layers[&edge.to]] += 1;
        }
        let mut files = vec![0usize; n];
        for &layer in self.layers.values() {
            files[layer] += 1;
        }
        let width = (0..n).map(|l| layer_name(l).len()).max().unwrap_or(0) + 2;
        let mut out = String::from("imports between layers (row imports column, per occurrence):\n");
        write!(out, "{:width$}", "").unwrap();
        for l in 0..n {
            write!(out, "{:>width$}", layer_name(l)).unwrap();
        }
        for (from, row) in matrix.iter().enumerate() {
            write!(out, "\n{:width$}", layer_name(from)).unwrap();
            for count in row {
                write!(out, "{count:>width$}").unwrap();
            }
        }
        write!(out, "\n{:width$}", "files").unwrap();
        for count in &files {
            write!(out, "{count:>width$}").unwrap();
        }
        writeln!(
            out,
            "\n{} files, {} imports between files, {} findings",
            self.layers.len(),
            self.edges.len(),
            self.findings.len()
        )
        .unwrap();
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The check on this crate's src/.
// ---------------------------------------------------------------------------------------------

/// Every file under `dir`, as (path relative to `root` with `/` separators, text), sorted.
fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else {
            let relative = path.strip_prefix(root).unwrap();
            let name = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            // Only Rust files are read: anything else is no part of the graph.
            if name.ends_with(".rs") {
                out.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
}

#[test]
fn src_is_layered_without_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    read_tree(root, &root.join("src"), &mut sources);
    let report = check(&sources);
    println!("{}", report.summary());
    assert!(report.findings.is_empty(), "{} layering findings:\n{}", report.findings.len(), report.findings.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests, on small in-memory trees.
// ---------------------------------------------------------------------------------------------

/// A correct tree in the real layout: every layer, a family with a launch_code!'d file, a use
/// group, a macro with `$crate`, a test module, and a binary that is left out.
const TWIN: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        "pub mod bindings;\npub mod core;\npub mod families;\npub mod ops;\npub mod tools;\npub use core::tensor::Tensor;\n",
    ),
    ("src/bindings/mod.rs", "pub mod ffi;\n"),
    ("src/bindings/ffi.rs", "pub struct kiln_status;\n"),
    ("src/core/mod.rs", "pub mod launch;\npub mod tensor;\n"),
    ("src/core/tensor.rs", "pub struct Tensor;\n"),
    (
        "src/core/launch.rs",
        "macro_rules! launch_code {\n    ($file:literal) => {\n        mod on_cuda {\n            use crate::bindings::ffi;\n            \
         include!($file);\n        }\n    };\n}\npub(crate) use launch_code;\nmacro_rules! tensor { () => { $crate::core::tensor::Tensor } }\n",
    ),
    ("src/families/mod.rs", "pub mod act;\n"),
    (
        "src/families/act/mod.rs",
        "pub mod cpu;\npub mod spec;\ncrate::core::launch::launch_code!(\"cuda.rs\");\npub use self::spec::Kind;\npub fn forward() {\n    cpu::f();\n}\n",
    ),
    ("src/families/act/spec.rs", "pub enum Kind {}\n"),
    ("src/families/act/cpu.rs", "use super::spec::Kind;\npub fn f() {}\n"),
    (
        "src/families/act/cuda.rs",
        "use super::spec::Kind;\nuse crate::bindings::ffi::kiln_status;\npub(in crate::families::act) fn launch() {}\n",
    ),
    ("src/ops/mod.rs", "pub mod registry;\n"),
    ("src/ops/registry.rs", "use crate::families::act::{self, spec::{Kind as K}};\npub struct Op;\n"),
    ("src/tools/mod.rs", "pub mod check;\n"),
    ("src/tools/check.rs", "use crate::ops::registry::Op;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n"),
    ("src/bin/kiln.rs", "use kiln::tools::check;\nmod x { use crate::ops::registry::Op; }\n"),
];

/// The twin tree with some files replaced or added.
fn tree(changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut files: BTreeMap<String, String> =
        TWIN.iter().map(|&(path, text)| (path.to_string(), text.to_string())).collect();
    for &(path, text) in changes {
        files.insert(path.to_string(), text.to_string());
    }
    files.into_iter().collect()
}

/// The edges of a report as `from:line -> to`, to compare against.
fn edges_from(report: &Report, from: &str) -> Vec<String> {
    report.edges.iter().filter(|e| e.from == from).map(|e| format!("{}:{} -> {}", e.from, e.line, e.to)).collect()
}

#[test]
fn the_correct_twin_passes_and_its_imports_are_all_seen() {
    let report = check(&tree(&[]));
    println!("{}", report.summary());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // src/bin is no part of the library.
    assert!(!report.layers.contains_key("src/bin/kiln.rs"));
    assert_eq!(report.layers.len(), 15);
    let edges: Vec<String> = report.edges.iter().map(|e| format!("{}:{} -> {}", e.from, e.line, e.to)).collect();
    assert_eq!(
        edges,
        [
            "src/core/launch.rs:4 -> src/bindings/ffi.rs",
            "src/core/launch.rs:10 -> src/core/tensor.rs",
            "src/families/act/cpu.rs:1 -> src/families/act/spec.rs",
            "src/families/act/cuda.rs:1 -> src/families/act/spec.rs",
            "src/families/act/cuda.rs:2 -> src/bindings/ffi.rs",
            "src/families/act/mod.rs:3 -> src/core/launch.rs",
            "src/families/act/mod.rs:3 -> src/families/act/cuda.rs",
            "src/families/act/mod.rs:4 -> src/families/act/spec.rs",
            "src/families/act/mod.rs:6 -> src/families/act/cpu.rs",
            "src/lib.rs:6 -> src/core/tensor.rs",
            "src/ops/registry.rs:1 -> src/families/act/mod.rs",
            "src/ops/registry.rs:1 -> src/families/act/spec.rs",
            "src/tools/check.rs:1 -> src/ops/registry.rs",
        ]
    );
}

#[test]
fn an_upward_import_is_a_finding() {
    let report = check(&tree(&[("src/core/tensor.rs", "pub struct Tensor;\nuse crate::ops::registry::Op;\n")]));
    let upward: Vec<&String> = report.findings.iter().filter(|f| f.contains("may not import")).collect();
    assert_eq!(upward.len(), 1, "{:#?}", report.findings);
    assert!(
        upward[0].starts_with(
            "src/core/tensor.rs:2: `crate::ops::registry::Op` imports src/ops/registry.rs: layer 1 (core) may not import \
             layer 3 (ops)"
        ),
        "{}",
        upward[0]
    );
}

#[test]
fn a_cycle_through_super_between_a_mod_rs_and_its_child_is_a_finding() {
    // mod.rs reaches spec.rs with `self::spec::Kind`; spec.rs climbs back with `super::super::act`.
    // cpu.rs and cuda.rs, between mod.rs and spec.rs, are on the loop too.
    let report = check(&tree(&[(
        "src/families/act/spec.rs",
        "pub enum Kind {}\nfn g() {\n    super::super::act::forward()\n}\n",
    )]));
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let cycle = &report.findings[0];
    assert!(
        cycle.starts_with(
            "cycle of 4 files: src/families/act/cpu.rs, src/families/act/cuda.rs, src/families/act/mod.rs, \
             src/families/act/spec.rs\n"
        ),
        "{cycle}"
    );
    assert!(cycle.contains("src/families/act/mod.rs:4: `self::spec::Kind` -> src/families/act/spec.rs"), "{cycle}");
    assert!(
        cycle.contains("src/families/act/spec.rs:3: `super::super::act::forward` -> src/families/act/mod.rs"),
        "{cycle}"
    );
}

#[test]
fn a_cycle_through_a_bare_child_path_is_a_finding() {
    // mod.rs calls `cpu::f()` (cpu is its `mod cpu;`); cpu.rs takes Kind from mod.rs's re-export.
    let report = check(&tree(&[("src/families/act/cpu.rs", "use super::Kind;\npub fn f() {}\n")]));
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let cycle = &report.findings[0];
    assert!(cycle.starts_with("cycle of 2 files: src/families/act/cpu.rs, src/families/act/mod.rs\n"), "{cycle}");
    assert!(cycle.contains("src/families/act/cpu.rs:1: `super::Kind` -> src/families/act/mod.rs"), "{cycle}");
    assert!(cycle.contains("src/families/act/mod.rs:6: `cpu::f` -> src/families/act/cpu.rs"), "{cycle}");
}

#[test]
fn super_in_an_included_file_is_relative_to_the_include_site() {
    // In the twin, cuda.rs lands in `act::on_cuda`, so `super::spec::Kind` is act/spec.rs.
    let twin = check(&tree(&[]));
    assert!(
        edges_from(&twin, "src/families/act/cuda.rs")
            .contains(&"src/families/act/cuda.rs:1 -> src/families/act/spec.rs".into())
    );

    // `super::Kind` is then act/mod.rs, which includes cuda.rs: a cycle.
    let report = check(&tree(&[("src/families/act/cuda.rs", "use super::Kind;\n")]));
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let cycle = &report.findings[0];
    assert!(cycle.starts_with("cycle of 2 files: src/families/act/cuda.rs, src/families/act/mod.rs\n"), "{cycle}");
    assert!(
        cycle.contains("src/families/act/mod.rs:3: `launch_code!(\"cuda.rs\")` -> src/families/act/cuda.rs"),
        "{cycle}"
    );

    // A literal include! in an inline module works the same, and that module is the included
    // file's: a path into it from elsewhere leads to the included file.
    let report = check(&tree(&[
        ("src/families/act/mod.rs", "pub mod cpu;\npub mod spec;\nmod backend {\n    include!(\"host.rs\");\n}\n"),
        ("src/families/act/host.rs", "use super::spec::Kind;\npub fn h() {\n    self::g()\n}\n"),
        ("src/ops/registry.rs", "use crate::families::act::backend::h;\n"),
    ]));
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(
        edges_from(&report, "src/families/act/mod.rs"),
        ["src/families/act/mod.rs:4 -> src/families/act/host.rs"]
    );
    assert_eq!(
        edges_from(&report, "src/families/act/host.rs"),
        ["src/families/act/host.rs:1 -> src/families/act/spec.rs"]
    );
    assert_eq!(edges_from(&report, "src/ops/registry.rs"), ["src/ops/registry.rs:1 -> src/families/act/host.rs"]);
}

#[test]
fn nested_use_groups_give_one_import_per_leaf_on_its_own_line() {
    let text = "use crate::{\n    core::{tensor::Tensor, launch::{self}},\n    bindings::ffi::*,\n    ops::registry::{Op as O},\n};\n";
    let report = check(&tree(&[("src/tools/check.rs", text)]));
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(
        edges_from(&report, "src/tools/check.rs"),
        [
            "src/tools/check.rs:2 -> src/core/tensor.rs",
            "src/tools/check.rs:2 -> src/core/launch.rs",
            "src/tools/check.rs:3 -> src/bindings/ffi.rs",
            "src/tools/check.rs:4 -> src/ops/registry.rs",
        ]
    );
    // The same group in a core file: the leaf that climbs is the one reported (it also closes a
    // loop through ops and families, reported as a cycle).
    let report = check(&tree(&[("src/core/tensor.rs", text)]));
    let upward: Vec<&String> = report.findings.iter().filter(|f| f.contains("may not import")).collect();
    assert_eq!(upward.len(), 1, "{:#?}", report.findings);
    assert!(upward[0].starts_with("src/core/tensor.rs:4: `crate::ops::registry::Op` imports"), "{}", upward[0]);
}

#[test]
fn imports_in_comments_and_literals_do_not_count() {
    let text = r##"pub struct Tensor;
// use crate::ops::registry::Op;
/* crate::tools::check /* nested */ crate::ops::registry */
/// [`crate::ops::registry::Op`]
pub const S: &str = "crate::ops::registry::Op \" crate::tools";
pub const R: &str = r#"use crate::tools::check; "quoted""#;
pub const C: (char, char, u8) = ('"', '{', b'\'');
pub fn f<'a>(x: &'a str) -> &'a str { x }
use crate::bindings::ffi;
"##;
    let report = check(&tree(&[("src/core/tensor.rs", text)]));
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // Lines still count across comments and literals.
    assert_eq!(edges_from(&report, "src/core/tensor.rs"), ["src/core/tensor.rs:9 -> src/bindings/ffi.rs"]);
}

#[test]
fn a_file_outside_every_layer_is_a_finding() {
    let report = check(&tree(&[("src/args.rs", "pub fn a() {}\n"), ("src/core.rs", "pub mod tensor;\n")]));
    assert_eq!(
        report.findings,
        [
            "src/args.rs:1: file not assigned to a layer (src/{bindings,core,families,ops,tools}/**, src/lib.rs, src/doc_pages.rs)"
        ]
    );
}
