//! `hostile`: a scheduler extension for the host's sandbox tests. Its
//! `configure` takes `mode`, and `score` then misbehaves that way:
//! `loop` (never returns), `alloc` (asks for 4 GiB, 16 MiB at a time), `trap` (panics),
//! `log-flood` (writes a thousand 1 MiB log lines); any other mode scores
//! every node 50. Nothing in `kapsel serve` loads it.

#[cfg(target_arch = "wasm32")]
mod component;
