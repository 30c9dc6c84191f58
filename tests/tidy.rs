//! The shape of the code, checked (`docs/architecture.md`): modules import only lower layers, no type's
//! inherent methods spread over more than two files, no file over 600 lines, no `#[path]`, and the root
//! re-exports no more names than it does today. What still breaks a rule is listed below as known debt,
//! which may only shrink: a listed breach that is gone fails the test until it is taken off the list, so
//! the lists always say exactly what is left.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of `src/`, bottom up: `(module, layer, side)`. A module may import a module of a
/// lower layer only, and the task side and the coordinator side never import each other.
const LAYERS: &[(&str, u32, Side)] = &[
    ("error", 0, Side::Base),
    ("clock", 0, Side::Base),
    ("ids", 0, Side::Base),
    ("parallel", 0, Side::Base),
    ("codec", 1, Side::Base),
    ("codec_text", 2, Side::Base),
    ("key_group", 2, Side::Base),
    ("snapshot", 3, Side::Base),
    ("format", 4, Side::Base),
    ("storage", 5, Side::Base),
    ("snapshot_io", 6, Side::Base),
    ("keyed", 7, Side::Task),
    ("operator", 7, Side::Task),
    ("heap", 8, Side::Task),
    ("rocksdb", 8, Side::Task),
    ("backend", 9, Side::Task),
    ("checkpoint", 7, Side::Coordinator),
    ("fuzzing", 10, Side::Top),
    ("inspect", 10, Side::Top),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Base,
    Task,
    Coordinator,
    /// Entry points over everything (fuzzing).
    Top,
}

/// Imports against the layer table, `(from module, to module, file)`: known debt (`docs/architecture.md`).
const LAYER_DEBT: &[(&str, &str, &str)] = &[];

/// Types whose inherent methods are in more than two files, with the number of files: known debt.
const SPREAD_DEBT: &[(&str, usize)] = &[];

/// Inherent methods of a type in a file outside the module that defines the type, `(type, file)`:
/// known debt.
const OUTSIDE_DEBT: &[(&str, &str)] = &[];

/// Names the crate root re-exports (the engine path), at most 45 (`docs/architecture.md`).
const ROOT_NAMES: usize = 44;

const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, relative to `src/`, with its text.
fn sources(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The library's files (not `src/bin/`).
fn library() -> BTreeMap<String, String> {
    sources(&src())
        .into_iter()
        .filter(|(path, _)| !path.starts_with("bin/"))
        .collect()
}

/// The top-level module a file belongs to (`None` for `lib.rs`).
fn module_of(path: &str) -> Option<&str> {
    let first = path.split('/').next().unwrap();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(m) => Some(m),
        None => Some(first),
    }
}

/// The code of `text` without comments (line comments, doc comments and block comments).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |n| &after[n..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |n| &after[n + 2..]);
        } else if rest.starts_with('"') {
            // A string literal: kept out, so that paths in strings are not taken for imports.
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            rest = &rest[(i + 1).min(rest.len())..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Identifiers at the start of each path in `text` after `crate::`, including inside `crate::{..}` groups.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = matching_brace(group);
            for part in split_top_level(&group[..end]) {
                found.push(first_ident(part.trim()));
            }
        } else {
            found.push(first_ident(after));
        }
        rest = after;
    }
    found.retain(|s| !s.is_empty());
    found
}

/// The index of the `}` closing a group whose `{` was just consumed.
fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

/// `a, b::{c, d}, e` split at the commas outside braces.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn first_ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// What each name the root re-exports comes from: `pub use module::...::{names}` in `lib.rs`.
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in code(lib).split(';') {
        let Some(at) = statement.find("pub use ") else {
            continue;
        };
        let used = &statement[at + "pub use ".len()..];
        let module = first_ident(used);
        let leaves = used.rsplit("::").next().unwrap_or(used);
        let leaves = leaves.trim_start_matches('{').trim_end_matches('}');
        for leaf in leaves.split(',') {
            let leaf = leaf.trim();
            let name = leaf.rsplit(" as ").next().unwrap().trim();
            let name = name.rsplit("::").next().unwrap();
            if !name.is_empty() {
                names.insert(name.to_string(), module.clone());
            }
        }
    }
    names
}

/// Every import edge between top-level modules: `(from, to) -> files`.
fn edges() -> BTreeMap<(String, String), BTreeSet<String>> {
    let files = library();
    let roots = root_names(&files["lib.rs"]);
    let modules: BTreeSet<&str> = LAYERS.iter().map(|l| l.0).collect();
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &files {
        let Some(from) = module_of(path) else {
            continue;
        };
        for ident in crate_paths(&code(text)) {
            let to = if modules.contains(ident.as_str()) {
                ident
            } else if let Some(module) = roots.get(&ident) {
                module.clone()
            } else {
                panic!("{path}: `crate::{ident}` is neither a module nor a root re-export");
            };
            if to != from {
                edges
                    .entry((from.to_string(), to))
                    .or_default()
                    .insert(path.clone());
            }
        }
    }
    edges
}

/// Fails on a breach not in `debt` (`what`), and on a `debt` entry that is no longer a breach (it must
/// come off the list `list`).
fn check_debt<T: Ord + std::fmt::Debug>(
    breaches: &BTreeSet<T>,
    debt: &BTreeSet<T>,
    what: &str,
    list: &str,
) {
    let new: Vec<_> = breaches.difference(debt).collect();
    let paid: Vec<_> = debt.difference(breaches).collect();
    assert!(new.is_empty(), "{what}: {new:?}");
    assert!(
        paid.is_empty(),
        "fixed, take them off {list} in tests/tidy.rs: {paid:?}"
    );
}

fn layer(module: &str) -> (u32, Side) {
    LAYERS
        .iter()
        .find(|l| l.0 == module)
        .map(|l| (l.1, l.2))
        .unwrap_or_else(|| panic!("module `{module}` is not in the layer table of tests/tidy.rs"))
}

fn allowed(from: &str, to: &str) -> bool {
    let ((lf, sf), (lt, st)) = (layer(from), layer(to));
    let sides = !matches!(
        (sf, st),
        (Side::Task, Side::Coordinator) | (Side::Coordinator, Side::Task)
    );
    lt < lf && sides
}

#[test]
fn every_module_imports_only_lower_layers() {
    for (path, _) in library() {
        if let Some(m) = module_of(&path) {
            layer(m);
        }
    }
    let mut breaches = BTreeSet::new();
    for ((from, to), files) in edges() {
        if !allowed(&from, &to) {
            for file in files {
                breaches.insert((from.clone(), to.clone(), file));
            }
        }
    }
    let debt = LAYER_DEBT
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    check_debt(
        &breaches,
        &debt,
        "imports against the layers of docs/architecture.md (from, to, file)",
        "LAYER_DEBT",
    );
}

/// The type an inherent `impl` line names (`impl<T> Name<T> {`), or `None` for a trait impl.
fn inherent_impl(line: &str) -> Option<String> {
    let rest = line.strip_prefix("impl")?;
    if !(rest.starts_with(' ') || rest.starts_with('<')) || line.contains(" for ") {
        return None;
    }
    let mut rest = rest.trim_start();
    if rest.starts_with('<') {
        let mut depth = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        rest = rest[i + 1..].trim_start();
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let name = first_ident(rest.rsplit("::").next().unwrap_or(rest));
    (!name.is_empty()).then_some(name)
}

#[test]
fn no_type_has_inherent_methods_in_more_than_two_files() {
    let mut files_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in library() {
        for line in code(&text).lines() {
            if let Some(name) = inherent_impl(line) {
                files_of.entry(name).or_default().insert(path.clone());
            }
        }
    }
    let spread: BTreeMap<&str, usize> = files_of
        .iter()
        .filter(|(_, files)| files.len() > 2)
        .map(|(name, files)| (name.as_str(), files.len()))
        .collect();
    println!("inherent methods in more than two files: {spread:?}");
    let debt: BTreeMap<&str, usize> = SPREAD_DEBT.iter().copied().collect();
    for (name, n) in &spread {
        match debt.get(name) {
            Some(listed) if n <= listed => {}
            _ => panic!(
                "{name}'s inherent methods are in {n} files: {:?}",
                files_of[*name]
            ),
        }
    }
    for (name, listed) in &debt {
        assert!(
            spread.get(name) == Some(listed),
            "{name} is in {} files now, not {listed}: update SPREAD_DEBT in tests/tidy.rs",
            files_of.get(*name).map_or(0, |f| f.len())
        );
    }
}

/// The file that defines struct or enum `name`, if one does (`codes`: the files without comments).
fn definition<'a>(codes: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    codes.iter().find_map(|(path, text)| {
        text.lines()
            .any(|line| {
                let line = line.trim_start();
                let line = line
                    .strip_prefix("pub(crate) ")
                    .or_else(|| line.strip_prefix("pub "))
                    .unwrap_or(line);
                ["struct ", "enum "].iter().any(|kw| {
                    line.strip_prefix(kw)
                        .is_some_and(|rest| first_ident(rest) == name)
                })
            })
            .then_some(path.as_str())
    })
}

#[test]
fn no_type_has_inherent_methods_outside_its_module() {
    let codes: BTreeMap<String, String> = library()
        .into_iter()
        .map(|(path, text)| (path, code(&text)))
        .collect();
    let mut outside = BTreeSet::new();
    for (path, text) in &codes {
        for line in text.lines() {
            let Some(name) = inherent_impl(line) else {
                continue;
            };
            let Some(defined) = definition(&codes, &name) else {
                continue;
            };
            if module_of(defined) != module_of(path) {
                outside.insert((name, path.clone()));
            }
        }
    }
    println!("inherent methods outside their module: {outside:?}");
    let debt = OUTSIDE_DEBT
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    check_debt(
        &outside,
        &debt,
        "inherent methods outside the type's module",
        "OUTSIDE_DEBT",
    );
}

#[test]
fn no_file_over_600_lines_and_no_path_attribute() {
    let mut sizes: Vec<(usize, String)> = Vec::new();
    for (path, text) in sources(&src()) {
        sizes.push((text.lines().count(), path.clone()));
        assert!(
            !code(&text).contains("#[path"),
            "{path}: a `#[path]` module (make it a module of its folder)"
        );
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    println!("largest files: {:?}", &sizes[..5.min(sizes.len())]);
    let over: Vec<_> = sizes.iter().filter(|(n, _)| *n > MAX_LINES).collect();
    assert!(over.is_empty(), "files over {MAX_LINES} lines: {over:?}");
}

#[test]
fn the_root_reexports_no_more_names_than_today() {
    let files = library();
    let names = root_names(&files["lib.rs"]);
    println!("root re-exports: {}", names.len());
    assert!(
        names.len() <= ROOT_NAMES,
        "the root re-exports {} names, more than {ROOT_NAMES}: put new ones in a named module",
        names.len()
    );
    assert!(
        names.len() >= ROOT_NAMES,
        "the root re-exports {} names now: lower ROOT_NAMES in tests/tidy.rs to that",
        names.len()
    );
}

/// The files one file imports: every `crate::a::b::..` path (groups expanded) resolved to the file of its
/// longest module prefix. Test modules (`#[cfg(test)] mod tests`, at the end of a file) are left out.
fn file_edges() -> BTreeMap<String, BTreeSet<String>> {
    let files = library();
    let file_of: BTreeMap<Vec<String>, String> = files
        .keys()
        .map(|path| {
            let mut segments: Vec<String> = path
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_string)
                .collect();
            if segments.last().is_some_and(|s| s == "mod" || s == "lib") {
                segments.pop();
            }
            (segments, path.clone())
        })
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &files {
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let code = code(text);
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            for segments in expand(rest) {
                let target = (1..=segments.len())
                    .rev()
                    .find_map(|n| file_of.get(&segments[..n]));
                if let Some(target) = target.filter(|t| *t != path) {
                    edges
                        .entry(path.clone())
                        .or_default()
                        .insert(target.clone());
                }
            }
        }
    }
    edges
}

/// The full paths `a::b::{c, d::e}` at the start of `s` stands for.
fn expand(s: &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    let mut rest = s;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            return split_top_level(&group[..end])
                .into_iter()
                .flat_map(|part| expand(part.trim()))
                .map(|tail| prefix.iter().cloned().chain(tail).collect())
                .collect();
        }
        let ident = first_ident(rest);
        if ident.is_empty() {
            return vec![prefix];
        }
        rest = &rest[ident.len()..];
        prefix.push(ident);
        match rest.strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![prefix],
        }
    }
}

/// Groups of files that import each other in a circle (strongly connected, more than one file).
fn file_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    // Tarjan's algorithm, iterated over the files in order.
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        cycles: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for t in w.edges.get(v).into_iter().flatten() {
            if !w.index.contains_key(t.as_str()) {
                visit(w, t.as_str());
                let low = w.low[v].min(w.low[t.as_str()]);
                w.low.insert(v, low);
            } else if w.stack.contains(&t.as_str()) {
                let low = w.low[v].min(w.index[t.as_str()]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().rposition(|x| *x == v).unwrap();
            let group: BTreeSet<String> = w.stack.drain(at..).map(str::to_string).collect();
            if group.len() > 1 {
                w.cycles.push(group);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        cycles: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            visit(&mut walk, v.as_str());
        }
    }
    walk.cycles
}

#[test]
fn no_files_import_each_other_in_a_circle_but_the_keyed_api() {
    let cycles = file_cycles(&file_edges());
    // The trait's methods return the state objects and the timer service handle, which call the trait
    // (the state objects through their typed access, `typed.rs`, whose reads that restart a TTL queue
    // typed writes, `read_refresh.rs`): one idea in five files.
    let allowed: BTreeSet<String> = [
        "keyed/backend.rs",
        "keyed/read_refresh.rs",
        "keyed/state.rs",
        "keyed/timers.rs",
        "keyed/typed.rs",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    let others: Vec<_> = cycles.iter().filter(|c| **c != allowed).collect();
    assert!(
        others.is_empty(),
        "files importing each other in a circle: {others:?}"
    );
}

#[test]
fn the_checker_reads_what_it_checks() {
    assert_eq!(
        crate_paths("use crate::a::b; x(crate::c::{d, e::{f}}); crate::G"),
        ["a", "c", "G"]
    );
    assert_eq!(
        code("a // crate::x\nb /* crate::y */ \"crate::z\" c"),
        "a \nb  \"\" c"
    );
    assert_eq!(
        inherent_impl("impl<K: StateKey> Foo<K> {"),
        Some("Foo".into())
    );
    assert_eq!(inherent_impl("impl Bar {"), Some("Bar".into()));
    assert_eq!(inherent_impl("impl<K> Tr for Foo<K> {"), None);
    assert_eq!(inherent_impl("implement"), None);
    assert_eq!(
        expand("a::{b, c::{d, e}}::x"),
        [vec!["a", "b"], vec!["a", "c", "d"], vec!["a", "c", "e"]]
    );
    let circle: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (f, t)| {
                m.entry(f.to_string()).or_default().insert(t.to_string());
                m
            });
    assert_eq!(
        file_cycles(&circle),
        [["a", "b", "c"]
            .into_iter()
            .map(str::to_string)
            .collect::<BTreeSet<_>>()]
    );
    let names = root_names("pub use a::b::{C, D as E};\npub use f::G;\nmod x;");
    assert_eq!(names.get("C").map(String::as_str), Some("a"));
    assert_eq!(names.get("E").map(String::as_str), Some("a"));
    assert_eq!(names.get("G").map(String::as_str), Some("f"));
}
