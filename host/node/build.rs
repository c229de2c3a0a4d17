//! Builds the sample workloads of `examples/workloads/` for wasm32-wasip2
//! (a binary there is a `wasi:cli/run` command component, a `cdylib` one
//! built with the `wasip2` crate's `export!` macros, such as `http-hello`, a
//! `wasi:http` proxy) and tells the crate where the `.wasm` files are
//! (`KAPSEL_EXAMPLE_WORKLOADS`), so `cargo test` and the benchmarks need no
//! extra step (see `host/wasm_guests.rs`).

use std::path::{Path, PathBuf};

#[path = "../wasm_guests.rs"]
mod wasm_guests;

/// The sample workloads, one crate each.
const WORKLOADS: &[&str] = &["hello", "fail", "worker", "memhog", "spin", "http-hello"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("the repository root");
    let built_dir = wasm_guests::build(&root, "examples/workloads", WORKLOADS, "workloads", &[]);
    for workload in WORKLOADS.iter().filter(|name| name.contains('-')) {
        name_as_the_crate(&built_dir, workload);
    }
    println!("cargo:rustc-env=KAPSEL_EXAMPLE_WORKLOADS={}", built_dir.display());
}

/// Cargo names a library's output after the crate with `_` for `-`
/// (`http_hello.wasm`); the workloads are pushed and embedded by the crate's
/// name (`http-hello.wasm`), so a copy under that name goes beside it
/// (rewritten only when it differs, so nothing rebuilds for nothing).
fn name_as_the_crate(built_dir: &Path, workload: &str) {
    let built = built_dir.join(format!("{}.wasm", workload.replace('-', "_")));
    let named = built_dir.join(format!("{workload}.wasm"));
    let bytes = std::fs::read(&built).unwrap_or_else(|e| panic!("reading {}: {e}", built.display()));
    if std::fs::read(&named).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::write(&named, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", named.display()));
    }
}
