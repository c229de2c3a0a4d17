//! Shared by the build scripts of `kapsel-plugins` (the plug-ins of
//! `plugins/`) and `kapsel-node` (the sample workloads of
//! `examples/workloads/`), through `#[path]`: building a nested Cargo
//! workspace of guests for wasm32-wasip2, so `cargo build`, `cargo run` and
//! `cargo test` of the host need no extra step. The nested build gets its
//! own target directory (sharing the outer one would deadlock on its lock)
//! and none of the host's flags.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the crates `members` of the workspace at `<root>/<workspace>`
/// into `<target>/<target_subdir>` (rebuilding when their sources, or the
/// files and directories in `also_watch`, change) and returns the directory
/// of the built `.wasm` files.
pub fn build(root: &Path, workspace: &str, members: &[&str], target_subdir: &str, also_watch: &[PathBuf]) -> PathBuf {
    let sources = root.join(workspace);
    rerun_if_changed(&sources.join("Cargo.toml"));
    rerun_if_changed(&sources.join("Cargo.lock"));
    for member in members {
        rerun_if_changed(&sources.join(member).join("Cargo.toml"));
        rerun_if_changed_dir(&sources.join(member).join("src"));
    }
    for path in also_watch {
        rerun_if_changed_dir(path);
    }

    // The README's `cargo run -- serve` must work on a bare machine, where
    // rust-toolchain.toml names the target but rustup does not add it by
    // itself: add it here, and say so plainly if that fails (without it the
    // nested build fails deep in its output with "can't find crate for `core`").
    ensure_wasm_target(workspace);

    let outer_target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target_dir = outer_target.join(target_subdir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&sources)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .unwrap_or_else(|e| panic!("running cargo for {workspace}/: {e}"));
    assert!(status.success(), "building {workspace}/ for wasm32-wasip2 failed (see the output above)");
    let built_dir = target_dir.join("wasm32-wasip2/release");
    for member in members {
        let built = built_dir.join(format!("{}.wasm", member.replace('-', "_")));
        assert!(built.is_file(), "building {workspace}/ did not produce {}", built.display());
    }
    built_dir
}

fn ensure_wasm_target(workspace: &str) {
    let listed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let Ok(listed) = listed else {
        // No rustup: a toolchain installed otherwise must bring the target itself.
        return;
    };
    if !listed.status.success() || String::from_utf8_lossy(&listed.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target (rustup target add wasm32-wasip2) to build {workspace}/");
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
