//! The module graph of `host/src`: which module may name which.
//!
//! Read from the sources: every `crate::a::b` path names the longest module it starts with. The
//! rules are the delivery core's shape (docs/architecture.md): `kafka/` knows rdkafka and nothing
//! of the pipeline, and no two modules need each other, except the bindgen pair (`bindings`
//! generates the types `event` implements).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`pipeline::commit`; `kafka` for `kafka/mod.rs`) → its file's text.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .map(|path: PathBuf| {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            (parts.join("::"), std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// Module → the other modules its text names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (name, text) in &modules {
        let mut named = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let path: String = text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            let target = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target.filter(|t| t != name) {
                named.insert(target);
            }
        }
        graph.insert(name.clone(), named);
    }
    graph
}

#[test]
fn kafka_names_nothing_of_the_pipeline() {
    let graph = graph();
    assert!(graph.contains_key("kafka::producer") && graph.contains_key("pipeline::commit"));
    for (module, named) in &graph {
        if module == "kafka" || module.starts_with("kafka::") {
            let pipeline: Vec<_> = named.iter().filter(|n| n.starts_with("pipeline")).collect();
            assert!(pipeline.is_empty(), "{module} names {pipeline:?}");
        }
    }
}

#[test]
fn no_two_modules_need_each_other() {
    let graph = graph();
    // Every cycle goes through some edge a → b with a path b → … → a back.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(module) = stack.pop() {
            if module == to {
                return true;
            }
            if seen.insert(module.clone()) {
                stack.extend(graph[&module].iter().cloned());
            }
        }
        false
    };
    let mut cycles = Vec::new();
    for (module, named) in &graph {
        for other in named {
            let bindgen_pair = [module.as_str(), other.as_str()] == ["bindings", "event"]
                || [module.as_str(), other.as_str()] == ["event", "bindings"];
            if !bindgen_pair && reaches(other, module) {
                cycles.push(format!("{module} → {other} → … → {module}"));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}
