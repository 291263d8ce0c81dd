//! The layer rules of docs/architecture.md, checked on the source: no import cycle between
//! top-level modules, the store never reaches the HTTP layer or the state, the domain imports
//! nothing of the crate but itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its (non-test, non-comment) code names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("a component");
            let top = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read file");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let deps = graph.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    // Exported macros (`crate::sql_one!`, `crate::lite_row!`) live at the root.
                    let is_macro = line[i + 7 + name.len()..].starts_with('!');
                    if !name.is_empty() && name != top && !is_macro {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    graph
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph
        .get(from)
        .map(|d| d.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(m) = stack.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m) {
            stack.extend(graph.get(m).into_iter().flatten().map(String::as_str));
        }
    }
    false
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let graph = module_graph();
    assert!(
        graph.contains_key("store") && graph.contains_key("api"),
        "{graph:?}"
    );
    let cycles: Vec<&String> = graph.keys().filter(|m| reaches(&graph, m, m)).collect();
    assert!(
        cycles.is_empty(),
        "modules on an import cycle: {cycles:?}\n{graph:#?}"
    );
}

#[test]
fn lower_layers_do_not_reach_up() {
    let graph = module_graph();
    assert!(
        graph["domain"].is_empty(),
        "domain imports {:?}",
        graph["domain"]
    );
    for upper in [
        "api",
        "http",
        "app",
        "state",
        "workers",
        "relay",
        "extract",
        "idempotency",
    ] {
        assert!(!reaches(&graph, "store", upper), "store reaches {upper}");
        assert!(!reaches(&graph, "db", upper), "db reaches {upper}");
    }
    for job in ["workers", "relay", "ranking"] {
        assert!(
            !reaches(&graph, job, "api"),
            "{job} reaches the HTTP handlers"
        );
    }
}
