//! Guests that misbehave on purpose, for the tests of the plug-in sandbox
//! and of the server's failure policies: built from `plugins/` by this
//! crate's build script and embedded here. Only tests depend on this
//! crate (as a development dependency), so no production build compiles
//! them and no binary carries them.

/// `plugins/hostile`: a scheduler extension whose `score` loops, asks for
/// 4 GiB, panics or floods its log, as its configured `mode` says.
pub static HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));

/// `plugins/hostile-network`: a network driver whose `create-network`
/// loops, asks for 4 GiB or panics, by the namespace's name (`loop-…`,
/// `hog-…`, `trap-…`).
pub static HOSTILE_NETWORK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile_network.wasm"));

/// `plugins/greedy`: a scheduler extension that imports `wasi:filesystem`,
/// which the host must refuse to load.
pub static GREEDY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/greedy.wasm"));
