//! Builds the default plug-ins of `plugins/` for wasm32-wasip2 and puts the
//! components in `OUT_DIR`, so `cargo build`, `cargo run` and `cargo test`
//! of the host need no extra step. The nested build gets its own target
//! directory (sharing the outer one would deadlock on its lock) and none of
//! the host's flags.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The default plug-ins, embedded in the binary.
const PLUGINS: &[&str] = &["spread", "binpack", "local-volumes", "namespace-ipam"];
/// Guests built only for this crate's tests (found through `KAPSEL_TEST_GUESTS`).
const TEST_GUESTS: &[&str] = &["hostile", "hostile-network", "greedy"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("the repository root");
    let plugins = root.join("plugins");
    let wit = root.join("wit");
    rerun_if_changed(&plugins.join("Cargo.toml"));
    rerun_if_changed(&plugins.join("Cargo.lock"));
    for plugin in PLUGINS.iter().chain(TEST_GUESTS) {
        rerun_if_changed(&plugins.join(plugin).join("Cargo.toml"));
        rerun_if_changed_dir(&plugins.join(plugin).join("src"));
    }
    rerun_if_changed_dir(&wit);

    // The README's `cargo run -- serve` must work on a bare machine, where
    // rust-toolchain.toml names the target but rustup does not add it by
    // itself: add it here, and say so plainly if that fails (without it the
    // nested build fails deep in its output with "can't find crate for `core`").
    ensure_wasm_target();

    let outer_target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target_dir = outer_target.join("plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .expect("running cargo for plugins/");
    assert!(status.success(), "building plugins/ for wasm32-wasip2 failed (see the output above)");

    let built_dir = target_dir.join("wasm32-wasip2/release");
    println!("cargo:rustc-env=KAPSEL_TEST_GUESTS={}", built_dir.display());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for plugin in PLUGINS {
        let file = format!("{}.wasm", plugin.replace('-', "_"));
        let built = built_dir.join(&file);
        std::fs::copy(&built, out_dir.join(&file)).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}

fn ensure_wasm_target() {
    let listed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let Ok(listed) = listed else {
        // No rustup: a toolchain installed otherwise must bring the target itself.
        return;
    };
    if !listed.status.success() || String::from_utf8_lossy(&listed.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target (rustup target add wasm32-wasip2) to build the default plug-ins");
    let added = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    if !added.is_ok_and(|s| s.success()) {
        panic!("the wasm32-wasip2 target is not installed and `rustup target add wasm32-wasip2` failed: add it, then build again");
    }
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

fn rerun_if_changed_dir(dir: &Path) {
    rerun_if_changed(dir);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { rerun_if_changed_dir(&path) } else { rerun_if_changed(&path) }
    }
}
