//! The modules of core import one another one way only: no cycle among
//! the files of `core/src` (a `crate::…` or `super::…` path in code, not in
//! comments or unit tests, is an import; so is a child module named by
//! its own name in its parent, `pipe::PipeEnd` in `files/mod.rs`). A new
//! cycle fails here with the files that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Module path ("files::unix", "memory", "lib") of every source file.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).expect("reading core/src") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "tests" {
            let mut p = prefix.to_vec();
            if name != "mod" && name != "lib" {
                p.push(name);
            }
            out.insert(p.join("::"), fs::read_to_string(&path).unwrap());
        }
    }
}

/// The code of a file without its comments and its unit-test module.
fn code(text: &str) -> String {
    let text = ["mod tests", "pub mod tests", "pub(crate) mod tests"]
        .iter()
        .filter_map(|m| text.find(&format!("#[cfg(test)]\n{m}")))
        .min()
        .map_or(text, |end| &text[..end]);
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after each `marker` in `code` ("a::b::c" for `crate::a::b::c`;
/// each of "a::b" and "c" for `crate::{a::b, c}`).
fn paths_after(code: &str, marker: &str) -> Vec<String> {
    code.match_indices(marker)
        .filter(|(i, _)| {
            // `crate::` alone, not `hiber_crate::`.
            *i == 0
                || !code.as_bytes()[i - 1].is_ascii_alphanumeric() && code.as_bytes()[i - 1] != b'_'
        })
        .flat_map(|(i, m)| {
            let rest = &code[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let head = rest[..end].trim_end_matches(':');
            match rest[end..].strip_prefix('{') {
                Some(group) if rest[..end].is_empty() || rest[..end].ends_with("::") => {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    group
                        .split(',')
                        .map(|item| item.trim().split([' ', '{']).next().unwrap_or(""))
                        .filter(|item| !item.is_empty())
                        .map(|item| {
                            let item = item.trim_end_matches(':');
                            if item == "self" {
                                head.to_string()
                            } else if head.is_empty() {
                                item.to_string()
                            } else {
                                format!("{head}::{item}")
                            }
                        })
                        .collect::<Vec<_>>()
                }
                _ => vec![head.to_string()],
            }
        })
        .collect()
}

/// The modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn children(code: &str) -> Vec<&str> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub ")
                .or(l.strip_prefix("pub(crate) "))
                .unwrap_or(l);
            rest.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect()
}

/// The longest module `path` (split at `::`) names.
fn target(mods: &BTreeMap<String, String>, parts: &[&str]) -> Option<String> {
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|m| mods.contains_key(m))
}

fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in mods {
        let code = code(text);
        let here: Vec<&str> = if m.is_empty() {
            vec![]
        } else {
            m.split("::").collect()
        };
        let mut add = |t: Option<String>| {
            if let Some(t) = t.filter(|t| t != m && !t.is_empty()) {
                out.entry(m.clone()).or_default().insert(t);
            }
        };
        for p in paths_after(&code, "crate::") {
            add(target(mods, &p.split("::").collect::<Vec<_>>()));
        }
        // A child module named by its own name (`pipe::PipeEnd` in
        // `files/mod.rs`), or by `self::`.
        for child in children(&code) {
            let marker = format!("{child}::");
            let mut parts = here.clone();
            parts.push(child);
            if !paths_after(&code, &marker).is_empty() {
                add(target(mods, &parts));
            }
        }
        for p in paths_after(&code, "self::") {
            let parts: Vec<&str> = here.iter().copied().chain(p.split("::")).collect();
            add(target(mods, &parts));
        }
        for p in paths_after(&code, "super::") {
            // `super` of a file `a::b` is `a` (of `a/mod.rs`, the parent of `a`).
            let parent = &here[..here.len().saturating_sub(1)];
            let parts: Vec<&str> = parent.iter().copied().chain(p.split("::")).collect();
            add(target(mods, &parts));
        }
    }
    out
}

/// A cycle through `start`, if any (depth-first).
fn cycle_from(
    edges: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == start) {
        return Some(path[i..].to_vec());
    }
    if done.contains(start) {
        return None;
    }
    path.push(start.to_string());
    for next in edges.get(start).into_iter().flatten() {
        if let Some(c) = cycle_from(edges, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(start.to_string());
    None
}

#[test]
fn core_imports_have_no_cycle() {
    let mut mods = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut mods,
    );
    assert!(mods.len() > 40, "found {} modules", mods.len());
    let edges = edges(&mods);
    // The walk is sound: known imports are found.
    assert!(
        edges["memory"].contains("memory::shmem"),
        "{:?}",
        edges["memory"]
    );
    assert!(edges["files::unix"].contains("sys::socket"));
    // A parent's use of its child by the child's own name.
    assert!(
        edges["files::table"].contains("files::pipe") || edges["files"].contains("files::pipe")
    );
    let mut done = BTreeSet::new();
    for m in mods.keys() {
        if let Some(c) = cycle_from(&edges, m, &mut Vec::new(), &mut done) {
            panic!("import cycle in core: {} -> {}", c.join(" -> "), c[0]);
        }
    }
}

/// Every `.rs` file under `dir`, by its path relative to `root` ("files/pty.rs").
fn source_files(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).expect("reading core/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, fs::read_to_string(&path).unwrap());
        }
    }
}

/// The injection machinery (ptrace, remote syscalls, the gadget): it
/// reads and writes other processes' registers and memory, so it keeps
/// its own `unsafe` beside `sys/` (today's places and the folder it moves
/// to).
const UNSAFE_INJECTION: &[&str] = &["ptrace.rs", "remote/", "injection/"];

/// `unsafe` (as `grep -rn unsafe core/src` finds it: code, comments and
/// tests alike) only in `sys/` and the injection machinery.
#[test]
fn unsafe_only_in_sys_and_injection() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    source_files(&root, &root, &mut files);
    assert!(files.len() > 40, "found {} files", files.len());
    let with_unsafe: Vec<&String> = files
        .iter()
        .filter(|(_, text)| text.contains("unsafe"))
        .map(|(path, _)| path)
        .collect();
    // The walk is sound: the syscall layer has its `unsafe`.
    assert!(with_unsafe.iter().any(|p| p.starts_with("sys/")));
    let allowed = |p: &str| UNSAFE_INJECTION.iter().any(|a| p.starts_with(a));
    let stray: Vec<String> = with_unsafe
        .iter()
        .filter(|p| !p.starts_with("sys/") && !allowed(p))
        .map(|p| {
            let lines: Vec<String> = files[*p]
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains("unsafe"))
                .map(|(i, _)| (i + 1).to_string())
                .collect();
            format!("core/src/{p} (lines {})", lines.join(", "))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "unsafe outside core/src/sys/ (put the syscall behind a wrapper there): {}",
        stray.join("; ")
    );
}
