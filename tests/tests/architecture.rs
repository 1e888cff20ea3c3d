//! The architecture, checked: the workspace's crate graph is the design's
//! arrows and no others, the pure core and the plugin pull in none of the
//! heavy crates, and no crate's modules import each other in a cycle.
//!
//! `cargo metadata` gives the resolved graph (normal dependencies only: what
//! is linked into the crate, not what its tests or build scripts use); the
//! module check reads the sources, since the compiler allows cycles between
//! modules of one crate. No root, no network (`--offline --locked`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The design's arrows between the workspace's own crates: each crate and
/// the workspace crates it may depend on (normal dependencies). A crate
/// missing here, or an arrow not listed, fails the test: adding one is a
/// design decision, made here and in docs/architecture.md.
const ARROWS: &[(&str, &[&str])] = &[
    ("cni-plugin", &[]),
    ("vpc-cni-core", &[]),
    ("vpc-cni-durable-file", &[]),
    ("vpc-cni-netlink", &["vpc-cni-core"]),
    (
        "vpc-cni-cloud",
        &["vpc-cni-core", "vpc-cni-durable-file", "vpc-cni-netlink"],
    ),
    ("vpc-cni-policy", &["vpc-cni-core", "vpc-cni-netlink"]),
    (
        "ipamd",
        &[
            "cni-plugin",
            "vpc-cni-core",
            "vpc-cni-durable-file",
            "vpc-cni-netlink",
            "vpc-cni-cloud",
            "vpc-cni-policy",
        ],
    ),
    ("vpc-cni-demo", &["cni-plugin", "vpc-cni-core", "ipamd"]),
    // The benchmarks and the end-to-end suite drive everything.
    (
        "vpc-cni-bench",
        &[
            "cni-plugin",
            "vpc-cni-core",
            "vpc-cni-cloud",
            "vpc-cni-policy",
            "ipamd",
        ],
    ),
    ("vpc-cni-e2e", &["cni-plugin"]),
];

/// Crates the pure core must never link: an async runtime, netlink, the AWS
/// SDK, Kubernetes clients, HTTP stacks.
const NOT_IN_CORE: &[&str] = &[
    "tokio",
    "mio",
    "rtnetlink",
    "netlink-",
    "aws-",
    "kube",
    "hyper",
    "tower",
    "rustls",
    "reqwest",
    "h2",
];

/// Everything the plugin binary may link: std + serde, and what serde needs.
const PLUGIN_MAY_LINK: &[&str] = &[
    "cni-plugin",
    "serde",
    "serde_core",
    "serde_derive",
    "serde_json",
    "itoa",
    "memchr",
    "ryu",
    "zmij",
    "proc-macro2",
    "quote",
    "syn",
    "unicode-ident",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

struct Graph {
    /// Package id → name.
    names: HashMap<String, String>,
    /// Package id → ids of its normal dependencies.
    deps: HashMap<String, Vec<String>>,
    /// Workspace members: name → (id, manifest dir).
    members: BTreeMap<String, (String, PathBuf)>,
}

fn metadata() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let mut names = HashMap::new();
    let mut dirs = HashMap::new();
    for p in v["packages"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap().to_string();
        names.insert(id.clone(), p["name"].as_str().unwrap().to_string());
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
        dirs.insert(id, manifest.parent().unwrap().to_path_buf());
    }
    let mut members = BTreeMap::new();
    for id in v["workspace_members"].as_array().unwrap() {
        let id = id.as_str().unwrap().to_string();
        members.insert(names[&id].clone(), (id.clone(), dirs[&id].clone()));
    }
    let mut deps = HashMap::new();
    for node in v["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap().to_string();
        let normal = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        deps.insert(id, normal);
    }
    Graph {
        names,
        deps,
        members,
    }
}

impl Graph {
    /// Names of every crate `name` links, itself excluded.
    fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.members[name].0.clone()];
        while let Some(id) = todo.pop() {
            for d in &self.deps[&id] {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen.iter().map(|id| self.names[id].clone()).collect()
    }

    /// The workspace crates `name` depends on directly.
    fn internal_deps(&self, name: &str) -> BTreeSet<String> {
        let id = &self.members[name].0;
        self.deps[id]
            .iter()
            .map(|d| &self.names[d])
            .filter(|n| self.members.contains_key(*n))
            .cloned()
            .collect()
    }
}

#[test]
fn the_crate_graph_is_the_designs_arrows() {
    let g = metadata();
    let design: BTreeMap<&str, BTreeSet<String>> = ARROWS
        .iter()
        .map(|(c, to)| (*c, to.iter().map(|s| s.to_string()).collect()))
        .collect();
    let mut wrong = Vec::new();
    for name in g.members.keys() {
        let Some(allowed) = design.get(name.as_str()) else {
            wrong.push(format!("{name}: not in the design (add it to ARROWS)"));
            continue;
        };
        for d in g.internal_deps(name).difference(allowed) {
            wrong.push(format!("{name} -> {d}: not an arrow of the design"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_core_links_no_runtime_netlink_sdk_or_client() {
    let g = metadata();
    let bad: Vec<String> = g
        .closure("vpc-cni-core")
        .into_iter()
        .filter(|n| NOT_IN_CORE.iter().any(|b| n.starts_with(b)))
        .collect();
    assert!(bad.is_empty(), "vpc-cni-core links {bad:?}");
}

#[test]
fn the_plugin_links_only_serde() {
    let g = metadata();
    let bad: Vec<String> = g
        .closure("cni-plugin")
        .into_iter()
        .filter(|n| !PLUGIN_MAY_LINK.contains(&n.as_str()))
        .collect();
    assert!(bad.is_empty(), "the plugin links {bad:?}");
}

/// A crate's top-level modules and, for each, the top-level modules its
/// files name through `crate::`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(src) else {
        return edges;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if ["lib", "main", "bin"].contains(&name.as_str()) {
            continue;
        }
        let mut files = Vec::new();
        collect_rs(&path, &mut files);
        let targets = edges.entry(name.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for target in crate_refs(&text) {
                if target != name {
                    targets.insert(target);
                }
            }
        }
    }
    edges
}

fn collect_rs(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            collect_rs(&e.path(), out);
        }
    } else if path.extension().is_some_and(|x| x == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The first path segment after every `crate::` outside comments, with
/// grouped imports (`crate::{a, b::c}`) expanded.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `some_crate::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let seg = first_segment(item.trim());
                    if !seg.is_empty() {
                        out.insert(seg);
                    }
                }
            } else {
                let seg = first_segment(rest);
                if !seg.is_empty() {
                    out.insert(seg);
                }
            }
        }
    }
    out
}

fn first_segment(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut HashMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == n).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if edges.contains_key(m) {
                if let Some(c) = visit(m, edges, marks, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_crate_has_an_import_cycle_among_its_modules() {
    let g = metadata();
    let mut cycles = Vec::new();
    for (name, (_, dir)) in &g.members {
        if let Some(c) = find_cycle(&module_imports(&dir.join("src"))) {
            cycles.push(format!("{name}: {}", c.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_reads_grouped_imports() {
    // The checks above pass on a clean tree; this shows they could fail.
    let refs = crate_refs("use crate::{a::X, b};\nlet v = crate::c::f(); // crate::d\nmy_crate::e");
    assert_eq!(refs, BTreeSet::from(["a".into(), "b".into(), "c".into()]));
    let edges = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
    let acyclic = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::new()),
    ]);
    assert_eq!(find_cycle(&acyclic), None);
}
