//! The docs name files of the repository in backticks (`src/heap/delta.rs`, `tests/incremental/...`):
//! every such name must exist, so a renamed or removed file does not leave a doc pointing nowhere.

use std::path::{Path, PathBuf};

/// The top-level folders whose files docs name.
const FOLDERS: [&str; 7] = [
    "src/",
    "tests/",
    "benches/",
    "examples/",
    "scripts/",
    "fuzz/",
    "docs/",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files that describe the crate: README.md and docs/*.md.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let dir = root().join("docs");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a docs entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            docs.push(path);
        }
    }
    docs.sort();
    docs
}

/// The backticked spans of `text` that are a path into one of `FOLDERS`: no spaces, no wildcard or
/// placeholder (`*`, `<`, `{`, `...`), possibly followed by `:line` or a `::item`, which are cut off.
fn named_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 || !FOLDERS.iter().any(|folder| span.starts_with(folder)) {
            continue;
        }
        if span.contains([' ', '*', '<', '{', '$']) || span.contains("...") {
            continue;
        }
        let path = span.split("::").next().unwrap_or(span);
        let path = path.split(':').next().unwrap_or(path);
        paths.push(path.trim_end_matches([',', '.', ')']).to_owned());
    }
    paths
}

#[test]
fn every_file_the_docs_name_exists() {
    let mut missing = Vec::new();
    for doc in documents() {
        let text =
            std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        for path in named_paths(&text) {
            if !Path::new(&root().join(&path)).exists() {
                missing.push(format!("{}: {path}", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs name files that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_named_path_is_cut_at_its_line_or_item_and_placeholders_are_skipped() {
    let text = "see `src/heap/delta.rs:12`, `src/heap/chain.rs::Chain`, `tests/<name>.rs`, \
                `docs/a b.md` and `Cargo.toml`";
    assert_eq!(
        named_paths(text),
        vec!["src/heap/delta.rs", "src/heap/chain.rs"]
    );
}
