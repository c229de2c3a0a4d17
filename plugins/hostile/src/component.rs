//! The component: the misbehaviours behind the scheduler-extension exports.

// The generated bindings are `unsafe` glue, and their lowering functions
// take one argument per flattened value.
#![allow(unsafe_code, clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/kapsel-plugin@0.1.0",
    world: "scheduler-extension",
});

use std::cell::RefCell;

use kapsel::plugin::log::{Level, log};

thread_local! {
    static MODE: RefCell<String> = const { RefCell::new(String::new()) };
}

#[derive(Debug)]
struct Hostile;

impl Guest for Hostile {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        let mode = config.into_iter().find(|(k, _)| k == "mode").map(|(_, v)| v).unwrap_or_default();
        MODE.with_borrow_mut(|m| *m = mode);
        Ok(())
    }

    fn update_nodes(_nodes: Vec<NodeSummary>) {}

    fn filter(_pod: PodSummary, candidates: Vec<u32>) -> FilterResult {
        FilterResult { feasible: candidates, rejected: Vec::new() }
    }

    fn score(_pod: PodSummary, feasible: Vec<u32>) -> Vec<(u32, u8)> {
        match MODE.with_borrow(Clone::clone).as_str() {
            "loop" => {
                let mut spins: u64 = 0;
                loop {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            }
            "alloc" => {
                // 4 GiB in 16 MiB steps (one 4 GiB vector would not even pass wasm32's size checks).
                let hog: Vec<Vec<u8>> = (0..256).map(|_| vec![1; 16 << 20]).collect();
                vec![(0, hog[hog.len() - 1][0])]
            }
            "trap" => panic!("hostile guest traps on purpose"),
            "log-flood" => {
                let line = "x".repeat(1 << 20);
                for _ in 0..1000 {
                    log(Level::Info, &line);
                }
                feasible.into_iter().map(|i| (i, 50)).collect()
            }
            _ => feasible.into_iter().map(|i| (i, 50)).collect(),
        }
    }

    fn pod_bound(_pod: PodSummary, _node_index: u32) {}
}

export!(Hostile);
