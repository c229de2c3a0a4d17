//! Builds the sample workloads of `examples/workloads/` for wasm32-wasip2
//! (a binary there is a `wasi:cli/run` command component) and tells the
//! crate where the `.wasm` files are (`KAPSEL_EXAMPLE_WORKLOADS`), so
//! `cargo test` and the benchmarks need no extra step (see `host/wasm_guests.rs`).

use std::path::PathBuf;

#[path = "../wasm_guests.rs"]
mod wasm_guests;

/// The sample workloads, one binary crate each.
const WORKLOADS: &[&str] = &["hello", "fail", "worker", "memhog", "spin"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("the repository root");
    let built_dir = wasm_guests::build(&root, "examples/workloads", WORKLOADS, "workloads", &[]);
    println!("cargo:rustc-env=KAPSEL_EXAMPLE_WORKLOADS={}", built_dir.display());
}
