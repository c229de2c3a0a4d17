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
//! It hosts the three worlds: [`scheduler`] extensions, [`storage`]
//! drivers and [`network`] drivers, each behind a type that owns the live
//! instance and what must be replayed into a fresh one; [`Hosted`] is any
//! of them, as [`load`] returns it. Instances come from wasmtime's pooling
//! allocator (memory slots reserved up front, reused between instances).
//! [`rego`] hosts Kapsel's own Rego evaluator, the sandbox tenants'
//! admission policies run in. The default plug-ins built from `plugins/` are embedded ([`defaults`]),
//! and compiled components are kept on disk so a restart does not compile
//! them again ([`cache`]).

pub mod cache;
pub mod defaults;
pub mod network;
pub mod rego;
pub mod sandbox;
pub mod scheduler;
pub mod storage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use cache::CompileCache;
pub use sandbox::{Limits, PluginError};
pub use scheduler::compile;
use wasmtime::component::Component;

/// The worlds of `wit/kapsel-plugin@0.1.0` a plug-in can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    SchedulerExtension,
    StorageDriver,
    NetworkDriver,
}

impl World {
    pub const ALL: [World; 3] = [World::SchedulerExtension, World::StorageDriver, World::NetworkDriver];

    /// The world's WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            World::SchedulerExtension => "scheduler-extension",
            World::StorageDriver => "storage-driver",
            World::NetworkDriver => "network-driver",
        }
    }

    pub fn parse(name: &str) -> Option<World> {
        World::ALL.into_iter().find(|w| w.as_str() == name)
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A loaded plug-in of any world.
#[derive(Debug)]
pub enum Hosted {
    Scheduler(scheduler::SchedulerExtension),
    Storage(storage::StorageDriver),
    Network(network::NetworkDriver),
}

impl Hosted {
    pub fn world(&self) -> World {
        match self {
            Hosted::Scheduler(_) => World::SchedulerExtension,
            Hosted::Storage(_) => World::StorageDriver,
            Hosted::Network(_) => World::NetworkDriver,
        }
    }
}

/// What a plug-in is given besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// A storage driver's root directory (required for that world).
    pub storage_root: Option<PathBuf>,
    /// A network driver's networks handed out before, to restore.
    pub networks: BTreeMap<String, network::Network>,
}

/// Checks `component` against `world` and starts a configured first instance.
pub fn load(
    world: World,
    name: &str,
    component: &Component,
    config: Vec<(String, String)>,
    limits: Limits,
    grants: Grants,
) -> Result<Hosted, PluginError> {
    Ok(match world {
        World::SchedulerExtension => Hosted::Scheduler(scheduler::SchedulerExtension::from_component(name, component, config, limits)?),
        World::StorageDriver => {
            let root = grants.storage_root.ok_or_else(|| PluginError::Rejected("a storage driver needs a storage root".into()))?;
            Hosted::Storage(storage::StorageDriver::from_component(name, component, config, limits, &root)?)
        }
        World::NetworkDriver => Hosted::Network(network::NetworkDriver::from_component(name, component, config, limits, grants.networks)?),
    })
}

/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The process-wide engine, with its epoch ticker started.
pub fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling()));
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

/// Most linear memory a plug-in instance can be given, whatever its limits say.
pub const MAX_PLUGIN_MEMORY: usize = 1 << 30;

/// The pooling allocator's slots: enough for every plug-in's live instance
/// plus the fresh ones replacing failed instances, each memory slot capped at
/// [`MAX_PLUGIN_MEMORY`] (the per-plug-in limit is enforced below that by
/// the store's limiter). Slots are virtual reservations; only touched pages
/// cost memory.
fn pooling() -> wasmtime::PoolingAllocationConfig {
    let mut pooling = wasmtime::PoolingAllocationConfig::new();
    pooling.total_component_instances(512);
    pooling.total_core_instances(2048);
    pooling.total_memories(1024);
    pooling.total_tables(2048);
    pooling.max_memory_size(MAX_PLUGIN_MEMORY);
    pooling
}
