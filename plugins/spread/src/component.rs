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
    static STATE: RefCell<logic::Spread> = RefCell::new(logic::Spread::default());
}

fn resources(r: types::Resources) -> logic::Resources {
    logic::Resources { cpu_millicores: r.cpu_millicores, memory_bytes: r.memory_bytes, storage_bytes: r.storage_bytes }
}

fn pod(p: PodSummary) -> logic::Pod {
    logic::Pod { namespace: p.namespace, name: p.name, labels: p.labels, requests: resources(p.requests) }
}

fn node(n: NodeSummary) -> logic::Node {
    logic::Node {
        name: n.name,
        labels: n.labels,
        allocatable: resources(n.allocatable),
        requested: resources(n.requested),
        ready: n.ready,
        pods: n.pods.into_iter().map(|p| logic::PodRef { namespace: p.namespace, name: p.name, labels: p.labels }).collect(),
    }
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
struct Spread;

impl Guest for Spread {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        let config = logic::Config::parse(&config)?;
        log(Level::Info, &format!("spread configured: {config:?}"));
        STATE.with_borrow_mut(|s| s.configure(config));
        Ok(())
    }

    fn update_nodes(nodes: Vec<NodeSummary>) {
        STATE.with_borrow_mut(|s| {
            s.update_nodes(nodes.into_iter().map(node).collect());
            log(Level::Debug, &format!("spread: snapshot of {} nodes in {} zones", s.node_count(), s.zone_count()));
        });
    }

    fn filter(pod_summary: PodSummary, candidates: Vec<u32>) -> FilterResult {
        let pod = pod(pod_summary);
        filter_result(STATE.with_borrow_mut(|s| s.filter(&pod, &candidates)))
    }

    fn score(pod_summary: PodSummary, feasible: Vec<u32>) -> Vec<(u32, u8)> {
        let pod = pod(pod_summary);
        STATE.with_borrow_mut(|s| s.score(&pod, &feasible))
    }

    fn pod_bound(pod_summary: PodSummary, node_index: u32) {
        STATE.with_borrow_mut(|s| {
            if node_index as usize >= s.node_count() {
                let (namespace, name) = (&pod_summary.namespace, &pod_summary.name);
                log(Level::Warn, &format!("spread: pod-bound for {namespace}/{name} names unknown node index {node_index}"));
                return;
            }
            s.pod_bound(pod(pod_summary), node_index);
        });
    }
}

export!(Spread);
