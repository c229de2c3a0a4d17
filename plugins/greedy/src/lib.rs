//! `greedy`: a scheduler extension that imports `wasi:filesystem`, which a
//! scheduler extension is not granted. The host must refuse to load it;
//! it exists for that test, and nothing in `kapsel serve` loads it.

#[cfg(target_arch = "wasm32")]
mod component;
