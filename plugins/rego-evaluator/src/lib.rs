//! Kapsel's Rego evaluator as a WebAssembly component (world
//! `kapsel:policy/evaluator`). The host runs a tenant's admission policy in
//! an instance of it, so that the policy's time and memory are bounded by
//! the sandbox (epoch deadline, memory cap) and not only by the engine's own
//! checks between steps. [`logic`] is the evaluation in plain Rust, tested
//! natively; [`component`] is the Wasm glue.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component;
