//! The modules of core import one another one way only: no cycle among
//! the files of `core/src` (a `crate::…` or `super::…` path in code, not in
//! comments or unit tests, is an import; so is a child module named by
//! its own name in its parent, `pipe::PipeEnd` in `files/mod.rs`). A new
//! cycle fails here with the files that make it.
//!
//! Also: `unsafe` only in `sys/` and the injection machinery, and no
//! function over 80 lines without a `// Long because:` comment above it
//! saying why.

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

/// The longest a core function may be without a reason written above it.
const MAX_FN_LINES: usize = 80;

/// The comment that says why a function is longer: `// Long because: …`
/// among the comment and attribute lines right above its `fn` line.
const LONG_MARKER: &str = "// Long because:";

/// Functions over [`MAX_FN_LINES`] lines, by file and name, that have not
/// been split or given their reason yet. Each entry is to go; a function
/// that is no longer long fails the test until it is taken off.
const LONG_NOT_YET: &[(&str, &str)] = &[
    ("restore/mod.rs", "restore_image"),
    ("restore/node.rs", "run"),
    ("restore/node.rs", "setup"),
    ("restore/plan.rs", "plan"),
    ("restore/swap.rs", "swap"),
    ("restore/validate.rs", "document"),
    ("restore/validate.rs", "file"),
    ("restore/validate.rs", "process"),
    ("restore/validate.rs", "validate"),
];

/// `text` with every comment, string, raw string and char literal blanked
/// out (newlines kept), so that only code's braces and keywords remain.
fn blank_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(c.len());
    let blank = |out: &mut Vec<char>, from: &[char]| {
        out.extend(from.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }))
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let rest = &c[i..];
        let end = if rest.starts_with(&['/', '/']) {
            i + rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            // Block comments nest.
            let (mut depth, mut j) = (0, i);
            loop {
                if j >= c.len() {
                    break j;
                } else if c[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if c[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else {
                    j += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0
                || !ident(c[i - 1])
                || ((i == 1 || !ident(c[i - 2])) && "bc".contains(c[i - 1])))
            && rest[1..].iter().find(|&&ch| ch != '#') == Some(&'"')
        {
            // r"…", r#"…"#, br"…": up to the quote and as many hashes.
            let hashes = rest[1..].iter().take_while(|&&ch| ch == '#').count();
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body = i + 2 + hashes;
            (body..c.len())
                .find(|&j| c[j..].starts_with(&close))
                .map_or(c.len(), |j| j + close.len())
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if c[i] == '\'' && rest.get(1) == Some(&'\\') {
            // '\n', '\'', '\u{7f}': the quote after the escaped character.
            let after = rest.get(3..).unwrap_or(&[]);
            i + 3 + after.iter().position(|&ch| ch == '\'').map_or(0, |p| p + 1)
        } else if c[i] == '\'' && rest.get(2) == Some(&'\'') {
            i + 3
        } else {
            // Code, a lifetime or a label included.
            out.push(c[i]);
            i += 1;
            continue;
        };
        let end = end.min(c.len());
        blank(&mut out, &c[i..end]);
        i = end;
    }
    out.into_iter().collect()
}

/// A function of a source file: its name, the line of its `fn` (from 1)
/// and its length in lines, from that line to its closing brace's.
#[derive(Debug, PartialEq)]
struct FnSpan {
    name: String,
    line: usize,
    lines: usize,
}

/// Every function with a body in `text`, nested ones too.
fn functions(text: &str) -> Vec<FnSpan> {
    let code = blank_literals(text);
    let b = code.as_bytes();
    let line_of = |at: usize| 1 + b[..at].iter().filter(|&&x| x == b'\n').count();
    let word = |at: usize| b[at].is_ascii_alphanumeric() || b[at] == b'_';
    let mut out = Vec::new();
    for (at, _) in code.match_indices("fn") {
        if (at > 0 && word(at - 1)) || at + 2 >= b.len() || !b[at + 2].is_ascii_whitespace() {
            continue;
        }
        let name: String = code[at + 2..]
            .trim_start()
            .chars()
            .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body's `{`: the first at no depth of () or [] (a `;` there
        // first is a declaration without a body: `[u8; 4]` is not one).
        let mut depth = 0i32;
        let mut open = None;
        for (j, &x) in b.iter().enumerate().skip(at) {
            match x {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut depth = 0i32;
        let close = b[open..].iter().position(|&x| {
            match x {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
            depth == 0
        });
        let Some(close) = close else {
            panic!("fn {name} at line {}: no closing brace", line_of(at));
        };
        let line = line_of(at);
        out.push(FnSpan {
            name,
            line,
            lines: line_of(open + close) - line + 1,
        });
    }
    out
}

/// Whether the comment and attribute lines right above line `line` (from
/// 1) of `text` hold the [`LONG_MARKER`].
fn has_long_marker(text: &str, line: usize) -> bool {
    text.lines()
        .take(line - 1)
        .collect::<Vec<_>>()
        .iter()
        .rev()
        .map(|l| l.trim_start())
        .take_while(|l| l.starts_with("//") || l.starts_with("#["))
        .any(|l| l.starts_with(LONG_MARKER))
}

#[test]
fn function_lengths_counted_past_literals_and_comments() {
    let text = r####"
fn short() {
    let _ = "}}}";
    let _ = '}';
    let _ = '\'';
    let _ = b'{';
    // }
    /* } /* nested } */ } */
    let _ = r#"}"# ;
    let _ = br##"}"#}"##;
    let _: &'static str = "\"}";
    let _ = [0u8; 2];
}
trait T {
    fn declared(&self) -> [u8; 4];
}
fn outer<'a>(x: &'a [u8; 2]) -> impl Fn(u8) -> u8 {
    fn inner() {}
    let f: fn(u8) -> u8 = |y| y;
    'label: loop {
        break 'label;
    }
    f
}
"####;
    let found = functions(text);
    let spans: Vec<(&str, usize, usize)> = found
        .iter()
        .map(|f| (f.name.as_str(), f.line, f.lines))
        .collect();
    assert_eq!(
        spans,
        [("short", 2, 12), ("outer", 17, 8), ("inner", 18, 1)],
        "{found:?}"
    );
    let marked = "// Long because: one flat match.\n#[allow(x)]\nfn f() {}\n";
    assert!(has_long_marker(marked, 3));
    assert!(!has_long_marker("// Long because: x\n\nfn f() {}\n", 3));
    assert!(!has_long_marker("// Why it is long.\nfn f() {}\n", 2));
}

/// No function in core over [`MAX_FN_LINES`] lines without a
/// `// Long because:` comment right above it (but those not yet done).
#[test]
fn functions_are_short_or_say_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    source_files(&root, &root, &mut files);
    assert!(files.len() > 40, "found {} files", files.len());
    let mut unexplained = Vec::new();
    let mut marked = 0;
    let mut still_long = BTreeSet::new();
    for (path, text) in &files {
        for f in functions(text) {
            if f.lines <= MAX_FN_LINES {
                continue;
            }
            if has_long_marker(text, f.line) {
                marked += 1;
            } else if LONG_NOT_YET.contains(&(path.as_str(), f.name.as_str())) {
                still_long.insert((path.as_str(), f.name.clone()));
            } else {
                unexplained.push(format!(
                    "core/src/{path}:{} fn {} ({} lines)",
                    f.line, f.name, f.lines
                ));
            }
        }
    }
    // The walk is sound: the checkpoint's own long function is found with
    // its reason.
    assert!(marked > 0, "no long function with its reason found");
    assert!(
        unexplained.is_empty(),
        "core functions over {MAX_FN_LINES} lines: split them into named steps, or write why \
         in a `{LONG_MARKER}` comment right above: {}",
        unexplained.join("; ")
    );
    let done: Vec<String> = LONG_NOT_YET
        .iter()
        .filter(|(p, n)| !still_long.contains(&(*p, n.to_string())))
        .map(|(p, n)| format!("core/src/{p} fn {n}"))
        .collect();
    assert!(
        done.is_empty(),
        "no longer over {MAX_FN_LINES} lines unexplained, so off LONG_NOT_YET with them: {}",
        done.join("; ")
    );
}
