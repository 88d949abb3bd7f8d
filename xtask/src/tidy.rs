//! Rules of the codebase that the compiler does not check, run as tests (`cargo test` runs them
//! with everything else):
//! - ARCHITECTURE.md's crate map names every workspace crate with exactly the workspace crates it
//!   depends on (normal dependencies, as `cargo metadata` reports them);
//! - no crate's top-level modules import each other in a circle (a `use crate::x` reading, like
//!   `shared/tools/modcycles.py`): the crates keep the layers between concepts, this keeps them
//!   inside a crate;
//! - every crate's root opens with a doc comment saying what it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One workspace crate as `cargo metadata` describes it.
#[derive(Debug)]
struct Crate {
    /// Its directory below the workspace root (`audit`, `viewer-wasm`).
    dir: String,
    package: String,
    /// Directories of the workspace crates it depends on (normal dependencies only).
    depends_on: BTreeSet<String>,
    /// Its library or binary roots.
    roots: Vec<PathBuf>,
}

fn workspace() -> (PathBuf, Vec<Crate>) {
    let root = crate::project_root().expect("the tests run inside the checkout");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let dir_of = |manifest: &str| -> String {
        Path::new(manifest)
            .parent()
            .and_then(|d| d.strip_prefix(&root).ok())
            .map(|d| d.to_string_lossy().into_owned())
            .expect("workspace crates live below the root")
    };
    let by_name: BTreeMap<String, String> = packages
        .iter()
        .map(|p| {
            (p["name"].as_str().unwrap_or_default().to_owned(), dir_of(p["manifest_path"].as_str().unwrap_or_default()))
        })
        .collect();
    let crates = packages
        .iter()
        .map(|p| Crate {
            dir: dir_of(p["manifest_path"].as_str().unwrap_or_default()),
            package: p["name"].as_str().unwrap_or_default().to_owned(),
            depends_on: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| by_name.get(d["name"].as_str().unwrap_or_default()).cloned())
                .collect(),
            roots: p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| {
                    t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib" || k == "bin" || k == "cdylib"))
                })
                .filter_map(|t| t["src_path"].as_str().map(PathBuf::from))
                .collect(),
        })
        .collect();
    (root, crates)
}

/// The crate map's rows: `| `dir/` | `package` | deps, comma separated (or —) | ... |`.
fn crate_map(architecture: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let section = architecture
        .split("\n## Crate map")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Crate map\" section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let unquote = |s: &str| s.trim_matches('`').trim_end_matches('/').to_owned();
            let deps = cells[3]
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "—")
                .map(|d| d.trim_matches('`').to_owned())
                .collect();
            (unquote(cells[1]), (unquote(cells[2]), deps))
        })
        .collect()
}

#[test]
fn the_crate_map_in_architecture_md_is_what_cargo_builds() {
    let (root, crates) = workspace();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let map = crate_map(&text);
    assert!(map.len() >= 5, "the crate map's table was not found: {map:?}");
    let mut wrong = Vec::new();
    for krate in &crates {
        match map.get(&krate.dir) {
            None => wrong.push(format!("{}/ ({}) is not in the crate map", krate.dir, krate.package)),
            Some((package, deps)) => {
                if *package != krate.package {
                    wrong.push(format!("{}/ is {} in the map, {} in Cargo.toml", krate.dir, package, krate.package));
                }
                if *deps != krate.depends_on {
                    wrong.push(format!(
                        "{}/ depends on {:?} (cargo metadata), the map says {:?}",
                        krate.dir, krate.depends_on, deps
                    ));
                }
            }
        }
    }
    for dir in map.keys() {
        if !crates.iter().any(|c| c.dir == *dir) {
            wrong.push(format!("the crate map names {dir}/, which is not a workspace crate"));
        }
    }
    assert!(wrong.is_empty(), "ARCHITECTURE.md's crate map is out of date:\n{}", wrong.join("\n"));
}

/// Top-level module -> the top-level modules of the same crate it names with `crate::`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let top_of = |path: &Path| -> Option<String> {
        let rel = path.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
        let top = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        (!matches!(top.as_str(), "lib" | "main")).then_some(top)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(top) = top_of(file) else { continue };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // Comments name modules without using them; unit tests may reach anywhere in their crate.
        let code: String =
            text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        let code = without_test_items(&code);
        let mut named = BTreeSet::new();
        for piece in code.split("crate::").skip(1) {
            named.insert(piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>());
        }
        for group in code.split("use crate::{").skip(1) {
            let inner = group.split('}').next().unwrap_or_default();
            for part in inner.split(',') {
                named.insert(part.trim().split("::").next().unwrap_or_default().to_owned());
            }
        }
        let deps = graph.entry(top.clone()).or_default();
        deps.extend(named.into_iter().filter(|m| *m != top && modules.contains(m)));
    }
    graph
}

/// `code` without the items marked `#[cfg(test)]` (a `mod tests;` line, or an item with its body).
fn without_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut kept = String::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        kept.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        // The item ends at its first `;` outside braces, or where its first brace closes.
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    kept.push_str(rest);
    kept
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A circle through `start`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_owned());
        path
    })
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_circle() {
    let (_, crates) = workspace();
    let mut circles = Vec::new();
    for krate in &crates {
        for root in &krate.roots {
            let src = root.parent().expect("a crate root has a directory");
            let graph = module_imports(src);
            if let Some(found) = graph.keys().find_map(|m| circle(&graph, m)) {
                circles.push(format!("{}: {}", krate.dir, found.join(" -> ")));
            }
        }
    }
    circles.dedup();
    assert!(circles.is_empty(), "module import circles:\n{}", circles.join("\n"));
}

#[test]
fn test_items_are_left_out_and_what_follows_them_is_read() {
    let code = "use crate::a;\n#[cfg(test)]\nmod tests;\nuse crate::b;\n#[cfg(test)]\nmod more {\n    use crate::c;\n    fn f() { g({}) }\n}\nfn h() -> crate::d::X {}\n";
    let kept = without_test_items(code);
    assert!(kept.contains("crate::a") && kept.contains("crate::b") && kept.contains("crate::d"), "{kept}");
    assert!(!kept.contains("crate::c") && !kept.contains("mod tests"), "{kept}");
}

#[test]
fn the_circle_check_finds_a_circle() {
    // The control: a graph with a circle is reported, one without is not.
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("hub".to_owned(), BTreeSet::from(["session".to_owned()])),
        ("session".to_owned(), BTreeSet::from(["link".to_owned()])),
        ("link".to_owned(), BTreeSet::new()),
    ]
    .into();
    assert_eq!(graph.keys().find_map(|m| circle(&graph, m)), None);
    let mut with_circle = graph.clone();
    with_circle.insert("link".to_owned(), BTreeSet::from(["hub".to_owned()]));
    assert_eq!(circle(&with_circle, "hub"), Some(vec!["hub".into(), "session".into(), "link".into(), "hub".into()]));
}

#[test]
fn every_crate_root_says_what_the_crate_owns() {
    let (_, crates) = workspace();
    let undocumented: Vec<String> = crates
        .iter()
        .flat_map(|c| c.roots.iter())
        .filter(|root| !std::fs::read_to_string(root).unwrap_or_default().starts_with("//! "))
        .map(|root| root.display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "crate roots without a leading doc comment: {undocumented:?}");
}
