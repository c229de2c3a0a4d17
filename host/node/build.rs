//! Builds the sample workloads of `examples/workloads/` for wasm32-wasip2
//! (a binary there is a `wasi:cli/run` command component) and tells the
//! crate where the `.wasm` files are (`KAPSEL_EXAMPLE_WORKLOADS`), so
//! `cargo test` and the benchmarks need no extra step. The nested build gets
//! its own target directory (sharing the outer one would deadlock on its
//! lock) and none of the host's flags — the same approach as
//! `host/plugins/build.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sample workloads, one binary crate each.
const WORKLOADS: &[&str] = &["hello", "fail", "worker", "memhog", "spin"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("the repository root");
    let workloads = root.join("examples/workloads");
    rerun_if_changed(&workloads.join("Cargo.toml"));
    rerun_if_changed(&workloads.join("Cargo.lock"));
    for workload in WORKLOADS {
        rerun_if_changed(&workloads.join(workload).join("Cargo.toml"));
        rerun_if_changed_dir(&workloads.join(workload).join("src"));
    }

    // As for the plug-ins: on a bare machine rust-toolchain.toml names the
    // target but rustup does not add it by itself.
    ensure_wasm_target();

    let outer_target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target_dir = outer_target.join("workloads");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workloads)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .expect("running cargo for examples/workloads/");
    assert!(status.success(), "building examples/workloads/ for wasm32-wasip2 failed (see the output above)");

    let built_dir = target_dir.join("wasm32-wasip2/release");
    for workload in WORKLOADS {
        let built = built_dir.join(format!("{workload}.wasm"));
        assert!(built.is_file(), "building examples/workloads/ did not produce {}", built.display());
    }
    println!("cargo:rustc-env=KAPSEL_EXAMPLE_WORKLOADS={}", built_dir.display());
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
    println!("cargo:warning=adding the wasm32-wasip2 target (rustup target add wasm32-wasip2) to build the sample workloads");
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
