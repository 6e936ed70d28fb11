//! The layout's rules (ARCHITECTURE.md), checked on the source: handlers never touch a
//! store, the kernel imports no domain, no file imports a file that imports it back, and
//! the system clock is built only where the process starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const DOMAINS: [&str; 8] = [
    "tenants",
    "directory",
    "licenses",
    "billing",
    "events",
    "audit",
    "apps",
    "ops",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file as (module path, text without its unit tests and comments).
fn sources() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap().with_extension("");
        let mut module: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        if module == ["lib"] {
            module.clear();
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        out.insert(module, code);
    }
    out
}

/// The files a file refers to by `crate::…` or `super::…` paths (`use` lists included).
fn imports(module: &[String], code: &str, files: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let resolve = |path: Vec<String>| -> Option<Vec<String>> {
        let mut p = path;
        while !p.is_empty() {
            if files.contains(&p) {
                return Some(p);
            }
            p.pop();
        }
        None
    };
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        for (at, _) in code.match_indices(prefix) {
            if prefix == "crate::" && at > 0 && code[..at].ends_with('$') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            let mut path = base.clone();
            let mut rest = rest;
            loop {
                let id = ident(rest);
                if id.is_empty() {
                    break;
                }
                path.push(id.clone());
                rest = &rest[id.len()..];
                if let Some(r) = rest.strip_prefix("::") {
                    rest = r;
                } else {
                    break;
                }
            }
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let mut p = path.clone();
                    p.extend(
                        item.trim()
                            .split(" as ")
                            .next()
                            .unwrap_or_default()
                            .split("::")
                            .filter(|s| !s.is_empty() && *s != "self")
                            .map(str::to_string),
                    );
                    out.extend(resolve(p));
                }
            }
            out.extend(resolve(path));
        }
    }
    out.remove(module);
    out.remove(&Vec::new());
    out
}

/// A line with the text of its string literals removed (quotes kept).
fn without_strings(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                out.push(c);
            }
        } else {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

#[test]
fn handlers_never_touch_a_store() {
    for (module, code) in sources() {
        if module.last().is_some_and(|m| m == "http") {
            // Code only: a string literal (a `no-store` header) names no store.
            let code: String = code.lines().map(|l| without_strings(l) + "\n").collect();
            for word in ["store", "Store", "Tx<"] {
                let hits: Vec<&str> = code
                    .lines()
                    .filter(|l| {
                        l.match_indices(word).any(|(i, _)| {
                            let before = l[..i].chars().last();
                            let after = l[i + word.len()..].chars().next();
                            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                                && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        })
                    })
                    .collect();
                assert!(
                    hits.is_empty(),
                    "{} refers to a store: {hits:?}",
                    module.join("/")
                );
            }
        }
    }
}

#[test]
fn the_kernel_imports_no_domain() {
    let all = sources();
    let files: BTreeSet<Vec<String>> = all.keys().cloned().collect();
    for (module, code) in &all {
        if module.first().is_some_and(|m| m == "kernel") {
            for dep in imports(module, code, &files) {
                assert!(
                    dep.first().is_some_and(|m| m == "kernel"),
                    "{} imports {}",
                    module.join("/"),
                    dep.join("/")
                );
            }
        }
    }
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let all = sources();
    let files: BTreeSet<Vec<String>> = all.keys().cloned().collect();
    let graph: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = all
        .iter()
        // The command line (`cli/`) is a binary over the library, outside its module graph.
        .filter(|(m, _)| m.first().is_none_or(|f| f != "cli"))
        .map(|(m, code)| (m, imports(m, code, &files)))
        .collect();
    // A path back from a dependency to the file is a cycle.
    for (from, deps) in &graph {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = deps.iter().cloned().collect();
        while let Some(m) = stack.pop() {
            assert!(
                &m != *from,
                "{} is part of an import cycle (through {:?})",
                from.join("/"),
                deps.iter().map(|d| d.join("/")).collect::<Vec<_>>()
            );
            if seen.insert(m.clone())
                && let Some(next) = graph.get(&m)
            {
                stack.extend(next.iter().cloned());
            }
        }
    }
    // The checker itself sees imports: domains do use each other's services.
    assert!(
        graph[&vec!["billing".to_string(), "service".to_string()]]
            .contains(&vec!["licenses".to_string(), "service".to_string()])
    );
}

#[test]
fn domains_have_rooms_of_their_own() {
    for d in DOMAINS {
        let dir = src().join(d);
        assert!(dir.join("mod.rs").exists(), "{d}/mod.rs");
        assert!(dir.join("http.rs").exists(), "{d}/http.rs");
    }
}

#[test]
fn the_system_clock_is_built_only_where_the_process_starts() {
    for (module, code) in sources() {
        let allowed = module == ["kernel", "clock"]
            || module.first().is_some_and(|f| f == "cli")
            || module == ["jobs"];
        if !allowed {
            assert!(
                !code.contains("SystemClock"),
                "{} names SystemClock; take the injected Clock",
                module.join("/")
            );
        }
    }
}
