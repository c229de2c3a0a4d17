//! The node agent must not depend on the supervisor: `kapsel-agent` reaches
//! `kapsel-server` through no chain of dependencies (normal, build or dev)
//! in the workspace's `Cargo.lock`, which lists every package with what it
//! depends on. What both need lives in crates both may depend on
//! (`kapsel-api`, `kapsel-daemon`, `kapsel-client`).

use std::collections::{BTreeMap, VecDeque};

const AGENT: &str = "kapsel-agent";
const SUPERVISOR: &str = "kapsel-server";

/// Each package's name and the names of the packages it depends on, read
/// from a `Cargo.lock` (`[[package]]` tables with `name` and a
/// `dependencies` array of `"name"`, `"name version"` or
/// `"name version (source)"`). Versions are merged: a name depends on what
/// any of its versions does.
fn dependency_graph(lockfile: &str) -> BTreeMap<String, Vec<String>> {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut package: Option<String> = None;
    let mut in_dependencies = false;
    for line in lockfile.lines().map(str::trim) {
        if line.starts_with('[') && !in_dependencies {
            package = None;
        }
        if in_dependencies {
            if line == "]" {
                in_dependencies = false;
            } else if let Some(entry) = line.strip_prefix('"') {
                let name = entry.split([' ', '"']).next().unwrap_or_default().to_string();
                let name_of = package.clone().expect("a dependencies array outside a package");
                graph.entry(name_of).or_default().push(name);
            }
        } else if let Some(value) = line.strip_prefix("name = ") {
            let name = value.trim_matches('"').to_string();
            graph.entry(name.clone()).or_default();
            package = Some(name);
        } else if line == "dependencies = [" {
            in_dependencies = true;
        }
    }
    graph
}

/// The chain of dependencies from `from` to `to`, if there is one.
fn path(graph: &BTreeMap<String, Vec<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut reached_from: BTreeMap<&str, &str> = BTreeMap::from([(from, from)]);
    let mut queue = VecDeque::from([from]);
    while let Some(name) = queue.pop_front() {
        if name == to {
            let mut chain = vec![to.to_string()];
            let mut at = to;
            while at != from {
                at = reached_from[at];
                chain.push(at.to_string());
            }
            chain.reverse();
            return Some(chain);
        }
        for dependency in graph.get(name).into_iter().flatten().map(String::as_str) {
            if !reached_from.contains_key(dependency) {
                reached_from.insert(dependency, name);
                queue.push_back(dependency);
            }
        }
    }
    None
}

#[test]
fn the_agent_does_not_depend_on_the_supervisor() {
    let lockfile_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    let lockfile = std::fs::read_to_string(lockfile_path).unwrap_or_else(|e| panic!("reading {lockfile_path}: {e}"));
    let graph = dependency_graph(&lockfile);
    // The lockfile was read: both crates are there, and the agent's known dependencies are reached.
    assert!(graph.contains_key(SUPERVISOR), "{SUPERVISOR} is not in {lockfile_path}");
    for dependency in ["kapsel-api", "kapsel-client", "kapsel-node", "tokio"] {
        assert!(path(&graph, AGENT, dependency).is_some(), "{AGENT} should reach {dependency}: the lockfile was misread");
    }
    if let Some(chain) = path(&graph, AGENT, SUPERVISOR) {
        panic!(
            "{AGENT} depends on {SUPERVISOR}: {}. The node agent must not link the supervisor; \
             move what both need to kapsel-api, kapsel-daemon or kapsel-client.",
            chain.join(" → ")
        );
    }
}

#[test]
fn a_dependency_chain_is_found_through_any_version() {
    let lockfile = r#"
version = 4

[[package]]
name = "a"
version = "0.1.0"
dependencies = [
 "b 1.0.0",
 "c",
]

[[package]]
name = "b"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00"
dependencies = [
 "d 0.2.0 (registry+https://github.com/rust-lang/crates.io-index)",
]

[[package]]
name = "c"
version = "0.1.0"

[[package]]
name = "d"
version = "0.2.0"
"#;
    let graph = dependency_graph(lockfile);
    assert_eq!(path(&graph, "a", "d"), Some(vec!["a".to_string(), "b".to_string(), "d".to_string()]));
    assert_eq!(path(&graph, "c", "d"), None);
    assert_eq!(graph["c"], Vec::<String>::new());
}
