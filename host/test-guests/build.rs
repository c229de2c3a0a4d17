//! Builds the test guests of `plugins/` for wasm32-wasip2 (see
//! `host/wasm_guests.rs`) and puts them in `OUT_DIR` to be embedded.

use std::path::PathBuf;

#[path = "../wasm_guests.rs"]
mod wasm_guests;

/// The guests that misbehave on purpose.
const GUESTS: &[&str] = &["hostile", "hostile-network", "greedy"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("the repository root");
    // The same nested target directory as kapsel-plugins' build: the guests share their dependencies.
    let built_dir = wasm_guests::build(&root, "plugins", GUESTS, "plugins", &[root.join("wit")]);
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for guest in GUESTS {
        let file = format!("{}.wasm", guest.replace('-', "_"));
        let built = built_dir.join(&file);
        std::fs::copy(&built, out_dir.join(&file)).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}
