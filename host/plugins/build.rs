//! Builds the plug-ins of `plugins/` for wasm32-wasip2 (see
//! `host/wasm_guests.rs`) and puts the default ones and the Rego evaluator
//! in `OUT_DIR` to be embedded. (The test guests are built by the
//! development-only crate `kapsel-test-guests`.)

use std::path::PathBuf;

#[path = "../wasm_guests.rs"]
mod wasm_guests;

/// The default plug-ins, embedded in the binary.
const PLUGINS: &[&str] = &["spread", "binpack", "local-volumes", "namespace-ipam"];
/// Kapsel's own guests, embedded: the Rego evaluator tenants' policies run in.
const OWN_GUESTS: &[&str] = &["rego-evaluator"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("the repository root");
    let members: Vec<&str> = PLUGINS.iter().chain(OWN_GUESTS).copied().collect();
    let built_dir = wasm_guests::build(&root, "plugins", &members, "plugins", &[root.join("wit")]);
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for plugin in PLUGINS.iter().chain(OWN_GUESTS) {
        let file = format!("{}.wasm", plugin.replace('-', "_"));
        let built = built_dir.join(&file);
        std::fs::copy(&built, out_dir.join(&file)).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}
