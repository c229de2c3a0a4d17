//! `spread`, a Kapsel scheduler extension (WIT world
//! `kapsel:plugin/scheduler-extension@0.1.0`): spreads the pods of a
//! namespace and label set across nodes and zones, with a DRS-like balance of
//! utilisation as the tie-breaker. See `README.md` in `plugins/` for the
//! config keys.
//!
//! The policy lives in [`logic`] (plain Rust, tested natively); the Wasm
//! bindings and the conversions live in `component` and are compiled only
//! for `wasm32`.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component;
