//! The default plug-ins, built from `plugins/` for wasm32-wasip2 by this
//! crate's `build.rs` and embedded in the binary.

/// `spread`: spreads a workload's pods across nodes and zones (scheduler extension).
pub const SPREAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/spread.wasm"));
/// `binpack`: packs pods onto the fullest nodes that fit (scheduler extension).
pub const BINPACK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/binpack.wasm"));
/// `local-volumes`: a directory per volume under its storage root (storage driver).
pub const LOCAL_VOLUMES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/local_volumes.wasm"));
/// `namespace-ipam`: a /24 per namespace, an address per pod (network driver).
pub const NAMESPACE_IPAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/namespace_ipam.wasm"));

/// A default plug-in by name.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    match name {
        "spread" => Some(SPREAD),
        "binpack" => Some(BINPACK),
        "local-volumes" => Some(LOCAL_VOLUMES),
        "namespace-ipam" => Some(NAMESPACE_IPAM),
        _ => None,
    }
}
