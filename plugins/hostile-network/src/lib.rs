//! `hostile-network`: a network driver for the host's failure-policy and
//! isolation tests. `create-network` misbehaves by the namespace's name:
//! `loop-…` never returns, `hog-…` asks for 4 GiB, `trap-…` panics; any
//! other namespace gets `10.99.<n>.0/24`, `n` counting up. Every other call
//! answers plainly. Nothing in `kapsel serve` loads it.

#[cfg(target_arch = "wasm32")]
mod component;
