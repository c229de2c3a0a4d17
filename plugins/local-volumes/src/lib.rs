//! `local-volumes`, a Kapsel storage driver (WIT world
//! `kapsel:plugin/storage-driver@0.1.0`): a directory per volume under the
//! storage root the host preopens as `/`, with capacity accounting in a
//! ledger file (`kapsel-volumes.json`) that survives restarts. See
//! `README.md` in `plugins/` for the config keys.
//!
//! The driver lives in [`logic`] (plain Rust over `std::fs`, tested natively
//! against a temporary directory); the Wasm bindings and the conversions live
//! in `component` and are compiled only for `wasm32`.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component;
