//! The architecture, checked: each layer of `src/` imports only the layers
//! below it, the only import loop is `job` ↔ `context`, and no source file
//! in the workspace grows past 500 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules of `src/`, bottom layer first.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "defaults",
            "error",
            "queue_name",
            "partition",
            "rate_limit",
            "state",
            "backoff",
            "unique",
        ],
    ),
    ("storage", &["storage"]),
    (
        "job contract",
        &[
            "job",
            "context",
            "hooks",
            "options",
            "periodic",
            "quiet_panic",
            "registry",
            "schedule",
        ],
    ),
    ("runtime", &["worker"]),
    ("application API", &["client"]),
    ("operator API", &["admin"]),
    ("testing kit", &["testing"]),
];

/// Loops between top-level modules that are allowed: a job's `run` takes
/// its context, and the context runs jobs' blocking work.
const ALLOWED_LOOPS: &[(&str, &str)] = &[("job", "context")];

const MAX_LINES: usize = 500;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`lib` for lib.rs).
fn top_module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The top-level modules a file names through `crate::…`, ignoring
/// comments (doc links are not imports).
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[test]
fn each_layer_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let from = top_module(&src, file);
        if from == "lib" {
            continue;
        }
        let from_layer =
            layer_of(&from).unwrap_or_else(|| panic!("module `{from}` is in no layer: add it"));
        let text = fs::read_to_string(file).expect("read file");
        for to in imports(&text) {
            // Crate-root re-exports of the vocabulary (`crate::Result`).
            let Some(to_layer) = layer_of(&to) else {
                continue;
            };
            if to != from {
                edges.entry(from.clone()).or_default().insert(to.clone());
            }
            if to_layer > from_layer {
                wrong.push(format!(
                    "{} ({}) imports {to} ({})",
                    file.strip_prefix(&src).unwrap().display(),
                    LAYERS[from_layer].0,
                    LAYERS[to_layer].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));

    // Loops within a layer.
    let mut loops = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            let back = edges.get(to).is_some_and(|t| t.contains(from));
            let allowed = ALLOWED_LOOPS
                .iter()
                .any(|(a, b)| (a == from && b == to) || (a == to && b == from));
            if back && !allowed && from < to {
                loops.push(format!("{from} <-> {to}"));
            }
        }
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn no_source_file_is_over_500_lines() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates dir")
        .to_path_buf();
    let mut long = Vec::new();
    for entry in fs::read_dir(&crates).expect("read crates") {
        let src = entry.expect("entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let lines = fs::read_to_string(&file).expect("read").lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}
