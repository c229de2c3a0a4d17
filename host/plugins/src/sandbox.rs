//! The sandbox every plug-in call runs in: a store whose WASI context
//! grants nothing (no preopened files, an empty environment, no network),
//! an import check that refuses components asking for interfaces their
//! world does not grant ([`check_imports`]), a memory cap enforced by a
//! resource limiter that remembers it refused, and a deadline enforced by
//! epoch interruption. Failures are classified for the caller's failure policy.
//! The one exception to "no files" is a storage driver's root directory,
//! preopened as `/` ([`PluginState::new`]). Standard error is discarded,
//! except for Kapsel's own Rego evaluator, whose panic message is kept to
//! explain its trap ([`new_store_keeping_stderr`], [`panic_message`]).
//!
//! [`Live`], [`start`] and [`call_live`] are the part every world shares:
//! one live instance per plug-in, started and configured under the deadline,
//! each call under a fresh deadline, and the instance discarded when a call
//! fails.

use std::path::Path;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The limits of one plug-in's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a call may run.
    pub deadline: Duration,
    /// Most linear memory (all memories together) an instance may hold.
    pub memory_bytes: usize,
}

impl Default for Limits {
    /// 100 ms and 64 MiB, the defaults for scheduler calls.
    fn default() -> Self {
        Limits { deadline: Duration::from_millis(100), memory_bytes: 64 << 20 }
    }
}

/// Why loading or calling a plug-in failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a usable plug-in for the world (refused at load).
    #[error("{0}")]
    Rejected(String),
    /// The plug-in refused its configuration.
    #[error("the plug-in refused its configuration: {0}")]
    Config(String),
    /// The call ran past its deadline and was stopped.
    #[error("exceeded its deadline of {0:?}")]
    Deadline(Duration),
    /// The call tried to grow memory past the cap.
    #[error("exceeded its memory limit of {0} bytes")]
    Memory(usize),
    /// The guest trapped (a panic, an unreachable, an out-of-bounds access…).
    #[error("trapped: {0}")]
    Trap(String),
    /// The host had no room for another instance in time.
    #[error("{0}")]
    Busy(String),
}

/// The host state of one plug-in instance.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The plug-in's name, for its log lines.
    pub plugin: String,
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginState").field("plugin", &self.plugin).field("limiter", &self.limiter).finish_non_exhaustive()
    }
}

impl PluginState {
    /// A state that grants the guest nothing, or only `storage_root`
    /// (read-write, preopened as `/`) when given.
    pub fn new(plugin: &str, limits: Limits, storage_root: Option<&Path>) -> Result<Self, PluginError> {
        Self::with_stderr(plugin, limits, storage_root, None)
    }

    /// [`PluginState::new`], with the guest's standard error kept in `stderr` rather than discarded.
    fn with_stderr(
        plugin: &str,
        limits: Limits,
        storage_root: Option<&Path>,
        stderr: Option<MemoryOutputPipe>,
    ) -> Result<Self, PluginError> {
        let mut wasi = WasiCtxBuilder::new();
        if let Some(stderr) = stderr {
            wasi.stderr(stderr);
        }
        if let Some(root) = storage_root {
            std::fs::create_dir_all(root)
                .map_err(|e| PluginError::Rejected(format!("cannot create the storage root {}: {e}", root.display())))?;
            wasi.preopened_dir(root, "/", FsPerms::ReadWrite)
                .map_err(|e| PluginError::Rejected(format!("cannot open the storage root {}: {e:#}", root.display())))?;
        }
        Ok(PluginState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter { max: limits.memory_bytes, refused: false, size: 0 },
            plugin: plugin.to_string(),
        })
    }
}

impl PluginState {
    /// The most linear memory the instance has grown to (its largest memory, when it has several).
    pub fn memory_bytes(&self) -> usize {
        self.limiter.size
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps linear memory and notes a refusal, so that the trap that follows
/// (the guest's allocator aborts) is reported as what it is.
#[derive(Debug)]
struct MemoryLimiter {
    max: usize,
    refused: bool,
    /// The largest memory size allowed so far.
    size: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max;
        self.refused |= !allowed;
        if allowed {
            self.size = self.size.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A store for one instance, with its limits armed (and its storage root, for a storage driver).
pub fn new_store(plugin: &str, limits: Limits, storage_root: Option<&Path>) -> Result<Store<PluginState>, PluginError> {
    let mut store = Store::new(crate::engine(), PluginState::new(plugin, limits, storage_root)?);
    store.limiter(|state| &mut state.limiter);
    Ok(store)
}

/// A store like [`new_store`]'s whose guest's standard error is kept, up to
/// `capacity` bytes, in the pipe returned with it (where a Rust guest's panic
/// message goes). Only for guests that write little else there: a write past
/// the capacity fails in the guest.
pub fn new_store_keeping_stderr(
    plugin: &str,
    limits: Limits,
    capacity: usize,
) -> Result<(Store<PluginState>, MemoryOutputPipe), PluginError> {
    let stderr = MemoryOutputPipe::new(capacity);
    let mut store = Store::new(crate::engine(), PluginState::with_stderr(plugin, limits, None, Some(stderr.clone()))?);
    store.limiter(|state| &mut state.limiter);
    Ok((store, stderr))
}

/// What a Rust guest's panic wrote to standard error — the message after
/// the `thread '…' panicked at <file>:<line>:` line, without the advice
/// about backtraces — on one line, cut to 300 bytes; `None` when it wrote nothing.
pub fn panic_message(stderr: &MemoryOutputPipe) -> Option<String> {
    let text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let after_location = lines.iter().rposition(|l| l.contains("panicked at ")).map_or(0, |at| at + 1);
    let lines: Vec<&str> =
        lines[after_location..].iter().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with("note: run with")).collect();
    let mut message = lines.join(" ");
    if message.is_empty() {
        return None;
    }
    if message.len() > 300 {
        let mut end = 300;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    Some(message)
}

/// A linker with all of WASI; what a world may actually import is decided by [`check_imports`].
pub fn wasi_linker() -> Result<Linker<PluginState>, PluginError> {
    let mut linker = Linker::<PluginState>::new(crate::engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Rejected(format!("{e:#}")))?;
    Ok(linker)
}

/// The live instance of a plug-in, with its store.
pub struct Live<I> {
    pub store: Store<PluginState>,
    pub instance: I,
}

impl<I> std::fmt::Debug for Live<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("plugin", &self.store.data().plugin).finish_non_exhaustive()
    }
}

/// Starts an instance: a new store (with `storage_root` preopened for a
/// storage driver), `instantiate` and then `configure`, each under the deadline.
pub fn start<I>(
    plugin: &str,
    limits: Limits,
    storage_root: Option<&Path>,
    instantiate: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<I>,
    configure: impl FnOnce(&I, &mut Store<PluginState>) -> wasmtime::Result<Result<(), String>>,
) -> Result<Live<I>, PluginError> {
    let mut store = new_store(plugin, limits, storage_root)?;
    arm_deadline(&mut store, limits);
    let instance = instantiate(&mut store).map_err(|e| classify(&e, &store, limits))?;
    arm_deadline(&mut store, limits);
    match configure(&instance, &mut store) {
        Ok(Ok(())) => Ok(Live { store, instance }),
        Ok(Err(message)) => Err(PluginError::Config(message)),
        Err(e) => Err(classify(&e, &store, limits)),
    }
}

/// Runs `call` under a fresh deadline on `live`, or on a `fresh` instance
/// when there is none. On success the instance is returned with the result
/// (the caller keeps it); on failure it is dropped and the failure
/// classified, so the next call starts from a fresh instance.
pub fn call_live<I, R>(
    live: Option<Live<I>>,
    fresh: impl FnOnce() -> Result<Live<I>, PluginError>,
    limits: Limits,
    call: impl FnOnce(&I, &mut Store<PluginState>) -> wasmtime::Result<R>,
) -> Result<(R, Live<I>), PluginError> {
    let mut live = match live {
        Some(live) => live,
        None => fresh()?,
    };
    arm_deadline(&mut live.store, limits);
    match call(&live.instance, &mut live.store) {
        Ok(result) => Ok((result, live)),
        Err(error) => {
            let failure = classify(&error, &live.store, limits);
            tracing::warn!(plugin = %live.store.data().plugin, error = %failure, "plug-in call failed; its instance is discarded");
            Err(failure)
        }
    }
}

/// Arms the deadline for the next call (epoch deadlines count from when they are set).
pub fn arm_deadline(store: &mut Store<PluginState>, limits: Limits) {
    let ticks = limits.deadline.as_nanos().div_ceil(crate::EPOCH_TICK.as_nanos()).max(1) as u64;
    store.set_epoch_deadline(ticks);
}

/// Classifies a failed call.
pub fn classify(error: &wasmtime::Error, store: &Store<PluginState>, limits: Limits) -> PluginError {
    if store.data().limiter.refused {
        return PluginError::Memory(limits.memory_bytes);
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PluginError::Deadline(limits.deadline),
        Some(trap) => PluginError::Trap(trap.to_string()),
        None => PluginError::Trap(format!("{error:#}")),
    }
}

/// The WASI interfaces every world grants: standard streams (which the
/// host leaves empty or discards), environment queries (the environment is
/// empty), exit, I/O plumbing and randomness. Clocks beyond the monotonic
/// one, files, sockets and HTTP are not granted unless a world says so.
pub const WASI_BASE: &[&str] = &[
    "wasi:io/poll@",
    "wasi:io/error@",
    "wasi:io/streams@",
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-",
    "wasi:clocks/monotonic-clock@",
    "wasi:random/",
];

/// Refuses a component that imports an interface its world does not grant
/// (`granted`: interface name prefixes beyond [`WASI_BASE`]). Linking would
/// succeed — the host links all of WASI — so this is what keeps, say, a
/// scheduler extension away from sockets.
pub fn check_imports(component: &wasmtime::component::Component, world: &str, granted: &[&str]) -> Result<(), PluginError> {
    let refused: Vec<String> = component
        .component_type()
        .imports(crate::engine())
        .map(|(name, _)| name)
        .filter(|name| !WASI_BASE.iter().chain(granted).any(|prefix| name.starts_with(prefix)))
        .map(str::to_string)
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let article = if world.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    Err(PluginError::Rejected(format!("imports {}, which {article} {world} is not granted", refused.join(", "))))
}

/// The longest log line a guest may write; longer ones are cut.
pub const MAX_LOG_LINE: usize = 4096;

/// Writes a guest's log line through `tracing`, cut to [`MAX_LOG_LINE`].
pub fn log_line(plugin: &str, level: tracing::Level, message: &str) {
    let mut end = message.len().min(MAX_LOG_LINE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message[..end];
    match level {
        tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
        tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
        tracing::Level::INFO => tracing::info!(plugin, "{message}"),
        tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
        tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
    }
}
