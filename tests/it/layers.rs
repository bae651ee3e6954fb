//! The layering rule of ARCHITECTURE.md, checked on the source: each layer
//! imports only from the layers below it.
//!
//! | layer | modules | may use |
//! |---|---|---|
//! | 0 | `proto`, `stats`, `pages`, `malloc` | nothing else in the crate |
//! | 1 | `goplugin` | layer 0 |
//! | 2 | `services` | layers 0-1 |
//! | 3 | `median`, `devchain`, `sources`, `example` | layers 0-2, not each other |
//! | 4 | `node` | everything |
//!
//! Test code (from a file's `#[cfg(test)]` on) may also use layer-3
//! implementations as fixtures, but never the node. Comments are not code.

use std::path::{Path, PathBuf};

/// The layer of a top-level module, or None for one the rule does not know.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "proto" | "stats" | "pages" | "malloc" => 0,
        "goplugin" => 1,
        "services" => 2,
        "median" | "devchain" | "sources" | "example" => 3,
        "node" => 4,
        "testutil" => 5, // test-only helpers, above everything
        _ => return None,
    })
}

/// Why `from` may not use `to`, or None when it may.
fn forbidden(from: &str, to: &str, in_test: bool) -> Option<String> {
    if from == to {
        return None;
    }
    let (lf, lt) = (layer(from)?, layer(to)?);
    if in_test {
        // Fixtures: any implementation, never the node.
        if to == "node" && lf < 4 {
            return Some(format!(
                "test code of {from} (layer {lf}) uses the node (layer 4)"
            ));
        }
        return None;
    }
    if lt > lf || (lt == lf && lf == 3) || to == "testutil" {
        return Some(format!(
            "{from} (layer {lf}) may not use {to} (layer {lt}): imports only go down{}",
            if lt == lf {
                "; implementations do not know each other"
            } else {
                ""
            }
        ));
    }
    None
}

/// The module path of a source file: `src/goplugin/plugin/mod.rs` →
/// `[goplugin, plugin]`, `src/goplugin/rpc.rs` → `[goplugin, rpc]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        f => parts.push(f.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The top-level modules a line of `module`'s code refers to through
/// `crate::` or `super::` paths.
fn targets(module: &[String], code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !is_ident(bytes[i - 1]);
        if boundary && rest.starts_with("crate::") {
            let after = &rest["crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `crate::{a::x, b}`: every first segment in the group.
                let group = group.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| is_ident(*c as u8))
                        .collect();
                    if !name.is_empty() {
                        out.push(name);
                    }
                }
            } else {
                let name: String = after.chars().take_while(|c| is_ident(*c as u8)).collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
            i += "crate::".len();
            continue;
        }
        if boundary && rest.starts_with("super::") {
            let mut depth = 0;
            let mut r = rest;
            while let Some(next) = r.strip_prefix("super::") {
                depth += 1;
                r = next;
            }
            // `super` from module [a, b, c] is [a, b]; climbing to the root
            // makes the next segment the top-level module.
            if depth >= module.len() {
                let name: String = r.chars().take_while(|c| is_ident(*c as u8)).collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
            i += "super::".len() * depth;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

/// Every violation in one file's text, as `path:line: why`.
fn check_file(rel: &Path, text: &str) -> Vec<String> {
    let module = module_of(rel);
    let Some(top) = module.first().cloned() else {
        return Vec::new(); // lib.rs: the crate root declares, it does not import
    };
    let mut in_test = false;
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            in_test = true;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        for to in targets(&module, code) {
            if let Some(why) = forbidden(&top, &to, in_test) {
                problems.push(format!(
                    "{}:{}: {why}: {}",
                    rel.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    problems
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_only_go_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel.starts_with("bin") {
            continue; // binaries sit above the library
        }
        let module = module_of(rel);
        if let Some(top) = module.first() {
            if layer(top).is_none() {
                unknown.push(format!("{}: module {top} has no layer", rel.display()));
            }
        }
        problems.extend(check_file(rel, &std::fs::read_to_string(file).unwrap()));
    }
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    assert!(
        unknown.is_empty(),
        "give every top-level module a layer (here and in ARCHITECTURE.md):\n{}",
        unknown.join("\n")
    );
    assert!(
        problems.is_empty(),
        "imports that go up or sideways (see ARCHITECTURE.md, Layers):\n{}",
        problems.join("\n")
    );
}

/// The checker itself catches each kind of violation, and passes the
/// allowed ones.
#[test]
fn the_layer_check_catches_what_it_should() {
    let bad = [
        ("goplugin/rpc.rs", "use crate::node::config::Supervision;"),
        (
            "goplugin/host/mod.rs",
            "let x = crate::services::wire::hex(b);",
        ),
        (
            "services/relay/grpc.rs",
            "use crate::node::supervisor::Link;",
        ),
        ("services/median/plugin.rs", "use crate::devchain::codec;"),
        (
            "median/plugin.rs",
            "use crate::devchain::provider::DevchainCodec;",
        ),
        ("devchain/codec.rs", "use crate::median::math;"),
        ("goplugin/plugin/mod.rs", "use crate::{node::http, proto};"),
        ("goplugin/rpc.rs", "use super::super::node::Node;"),
        (
            "services/keystore.rs",
            "#[cfg(test)]\nmod t { use crate::node::keystore::DevKeystore; }",
        ),
    ];
    for (file, text) in bad {
        assert!(
            !check_file(Path::new(file), text).is_empty(),
            "not caught: {file}: {text}"
        );
    }
    let good = [
        (
            "node/feeds/mod.rs",
            "use crate::devchain::contract::Contract;",
        ),
        (
            "services/relay/grpc.rs",
            "use crate::goplugin::broker::Broker;",
        ),
        (
            "median/plugin.rs",
            "use crate::services::median::Bounds; use super::math;",
        ),
        ("goplugin/rpc.rs", "// see crate::node::supervisor"),
        (
            "median/plugin.rs",
            "#[cfg(test)]\nmod t { use crate::devchain::provider::DevchainCodec; }",
        ),
        ("services/keystore.rs", "let s = \"supercrate::node\";"),
    ];
    for (file, text) in good {
        let found = check_file(Path::new(file), text);
        assert!(found.is_empty(), "wrongly flagged: {found:?}");
    }
}
