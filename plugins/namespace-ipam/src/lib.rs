//! `namespace-ipam`, a Kapsel network driver (WIT world
//! `kapsel:plugin/network-driver@0.1.0`): a /24 per namespace out of a
//! configurable pool, an address per pod, traffic allowed within a namespace
//! and denied across namespaces by default. State is kept in memory; the host
//! re-plays it with `restore` after a restart. See `README.md` in `plugins/`
//! for the config keys.
//!
//! The IPAM lives in [`logic`] (plain Rust, tested natively); the Wasm
//! bindings and the conversions live in `component` and are compiled only
//! for `wasm32`.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component;
