//! The component: a scheduler extension whose `score` lists a directory.

// The generated bindings are `unsafe` glue, and their lowering functions
// take one argument per flattened value.
#![allow(unsafe_code, clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/kapsel-plugin@0.1.0",
    world: "scheduler-extension",
});

#[derive(Debug)]
struct Greedy;

impl Guest for Greedy {
    fn configure(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn update_nodes(_nodes: Vec<NodeSummary>) {}

    fn filter(_pod: PodSummary, candidates: Vec<u32>) -> FilterResult {
        FilterResult { feasible: candidates, rejected: Vec::new() }
    }

    fn score(_pod: PodSummary, feasible: Vec<u32>) -> Vec<(u32, u8)> {
        let entries = std::fs::read_dir("/").map(|d| d.count()).unwrap_or(0);
        feasible.into_iter().map(|i| (i, entries.min(100) as u8)).collect()
    }

    fn pod_bound(_pod: PodSummary, _node_index: u32) {}
}

export!(Greedy);
