//! `binpack`, a Kapsel scheduler extension (WIT world
//! `kapsel:plugin/scheduler-extension@0.1.0`): packs pods onto the fullest
//! nodes they fit on (most-allocated scoring), and filters out nodes where a
//! pod does not fit. See `README.md` in `plugins/` for the config keys.
//!
//! The policy lives in [`logic`] (plain Rust, tested natively); the Wasm
//! bindings and the conversions live in `component` and are compiled only
//! for `wasm32`.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component;
