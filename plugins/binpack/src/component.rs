//! The component: bindings generated from the WIT world and the glue
//! between the generated types and [`crate::logic`].

// The generated bindings are `unsafe` glue (nothing else in the crate is),
// and their lowering functions take one argument per flattened value.
#![allow(unsafe_code, clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/kapsel-plugin@0.1.0",
    world: "scheduler-extension",
});

use std::cell::RefCell;

use crate::logic;
use kapsel::plugin::log::{Level, log};
use kapsel::plugin::types;

thread_local! {
    static STATE: RefCell<logic::Binpack> = RefCell::new(logic::Binpack::default());
}

fn resources(r: types::Resources) -> logic::Resources {
    logic::Resources { cpu_millicores: r.cpu_millicores, memory_bytes: r.memory_bytes, storage_bytes: r.storage_bytes }
}

/// The verdicts of [`logic`] as the world returns them: the feasible
/// indices, then the rejected ones with their reasons.
fn filter_result(verdicts: Vec<logic::Verdict>) -> FilterResult {
    let mut result = FilterResult { feasible: Vec::with_capacity(verdicts.len()), rejected: Vec::new() };
    for verdict in verdicts {
        if verdict.feasible {
            result.feasible.push(verdict.index);
        } else {
            result.rejected.push(types::NodeRejection { index: verdict.index, reason: verdict.reason });
        }
    }
    result
}

#[derive(Debug)]
struct Binpack;

impl Guest for Binpack {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        let config = logic::Config::parse(&config)?;
        log(Level::Info, &format!("binpack configured: {config:?}"));
        STATE.with_borrow_mut(|s| s.configure(config));
        Ok(())
    }

    fn update_nodes(nodes: Vec<NodeSummary>) {
        let nodes: Vec<logic::Node> = nodes
            .into_iter()
            .map(|n| logic::Node { name: n.name, ready: n.ready, allocatable: resources(n.allocatable), requested: resources(n.requested) })
            .collect();
        log(Level::Debug, &format!("binpack: snapshot of {} nodes", nodes.len()));
        STATE.with_borrow_mut(|s| s.update_nodes(nodes));
    }

    fn filter(pod: PodSummary, candidates: Vec<u32>) -> FilterResult {
        let requests = resources(pod.requests);
        filter_result(STATE.with_borrow(|s| s.filter(&requests, &candidates)))
    }

    fn score(pod: PodSummary, feasible: Vec<u32>) -> Vec<(u32, u8)> {
        let requests = resources(pod.requests);
        STATE.with_borrow(|s| s.score(&requests, &feasible))
    }

    fn pod_bound(pod: PodSummary, node_index: u32) {
        let requests = resources(pod.requests);
        if !STATE.with_borrow_mut(|s| s.pod_bound(&requests, node_index)) {
            log(Level::Warn, &format!("binpack: pod-bound for {}/{} names unknown node index {node_index}", pod.namespace, pod.name));
        }
    }
}

export!(Binpack);
