//! Kapsel's Wasm plug-in host.
//!
//! Plug-ins are WebAssembly components targeting a world of the WIT package
//! `kapsel:plugin@0.1.0` (`wit/`). This crate owns running them safely:
//! one [`wasmtime::Engine`] per process with epoch interruption (a ticker
//! thread advances the epoch every [`EPOCH_TICK`]), a component checked
//! against its world when it is loaded, and every call made under a
//! deadline and a memory cap with no ambient authority. A call that traps,
//! overruns its deadline or its memory fails alone: the instance is
//! discarded and the next call gets a fresh one, set up again from what the
//! host remembers (configuration, node snapshot).
//!
//! Today it hosts the `scheduler-extension` world ([`scheduler`]); the
//! storage and network worlds follow. The default plug-ins built from
//! `plugins/` are embedded ([`defaults`]), and compiled components are
//! kept on disk so a restart does not compile them again ([`cache`]).

pub mod cache;
pub mod defaults;
pub mod sandbox;
pub mod scheduler;

use std::sync::OnceLock;
use std::time::Duration;

pub use cache::CompileCache;
pub use sandbox::{Limits, PluginError};
pub use scheduler::compile;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The process-wide engine, with its epoch ticker started.
pub fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = wasmtime::Engine::new(&config).expect("the plug-in engine configuration is valid");
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("kapsel-plugin-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .expect("starting the plug-in epoch ticker");
        engine
    })
}
