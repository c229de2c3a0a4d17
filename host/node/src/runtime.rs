//! The container runtime: runs a pod's Wasm component (a `wasi:cli/run`
//! command) in its own wasmtime [`Store`], the way a container runtime runs
//! a process — or serves HTTP with it, when the component is a `wasi:http`
//! proxy (it exports `wasi:http/incoming-handler`).
//!
//! A [`Runtime`] owns one wasmtime [`Engine`] for pods, with epoch
//! interruption driven by a ticker thread: every tick a running guest yields
//! to the async executor, so a guest that never calls the host (a busy
//! loop) cannot starve the others, and can always be stopped. Components
//! are compiled once per digest ([`Runtime::prepare`]): kept in memory as a
//! linked, pre-instantiated [`Prepared`], and on disk in
//! `DATA/images/` ([`crate::cache`]). [`Runtime::start`] instantiates a
//! prepared component in a fresh store whose WASI context grants nothing
//! ambient — no network, no files but the pod's volumes it mounts; only the
//! arguments, environment, clocks and randomness — with stdout and stderr going to the container's log, and
//! runs it on a tokio task. Its memory is capped by a resource limiter; a
//! guest that grows past its limit is stopped and reported `OOMKilled`; a
//! container that sets no limit gets the node's default
//! ([`RuntimeConfig::default_memory_limit_bytes`]). A container with a CPU
//! limit is held to it by bandwidth control ([`crate::cpu`]): wasmtime's call
//! hook counts the time its guest runs, and once a period's quota is spent
//! the epoch callback makes it yield with a sleep until the period ends.
//! [`Container::wait`] gives its [`Exit`].
//!
//! A proxy component is pre-instantiated as a [`ProxyPre`] and run with
//! [`Runtime::serve`] ([`http`]): the container runs until it is killed or
//! its deadline passes, and its [`HttpHandler`] answers each request from a
//! fresh instance in a store of its own, made as [`Runtime::start`] makes
//! a command's (the same WASI context, log, epoch yields and CPU account);
//! the instances of one container draw their memory from one budget, its
//! memory limit. Pods run with wasmtime's on-demand allocator, not the
//! pooling one: containers' memory limits differ (up to wasm32's 4 GiB) and
//! a pool sizes every slot for the largest, reserving it up front for each
//! runtime, while instantiating on demand costs about 18 µs instead of 12 —
//! little beside a request.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, watch};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::cache::CompileCache;
use crate::cpu::{self, CpuMeter, CpuThrottle};
use crate::lock;
use crate::logs::{DEFAULT_BUDGET_BYTES, DEFAULT_MAX_FILE_BYTES, LogFile, LogSource, Logs};
use crate::serving::Servers;

pub mod http;

pub use http::{HttpHandler, MAX_CONCURRENT_REQUESTS};

/// How a node's runtime is set up. [`RuntimeConfig::new`] gives kubelet's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Where compiled components (`images/`) and container logs (`pods/`) are kept.
    pub data_dir: PathBuf,
    /// How often the epoch advances: the longest a guest runs before it yields.
    pub epoch_tick: Duration,
    /// Size at which a run's log file is rotated.
    pub log_max_file_bytes: u64,
    /// The most all container logs of the node may hold together (oldest ended runs go first).
    pub log_budget_bytes: u64,
    /// The first delay before a container is restarted (or an image pull retried); doubled after each failure.
    pub restart_backoff_base: Duration,
    /// The longest delay before a restart.
    pub restart_backoff_cap: Duration,
    /// A run at least this long resets the delay to the base.
    pub restart_backoff_reset: Duration,
    /// The memory limit of a container that sets none (`resources.limits.memory`);
    /// `None` leaves such a container wasm32's 4 GiB.
    pub default_memory_limit_bytes: Option<u64>,
    /// The period of CPU bandwidth control: a container limited to `m`
    /// millicores runs its guest at most `m/1000` of every period.
    pub cpu_period: Duration,
}

/// The default of [`RuntimeConfig::default_memory_limit_bytes`]: 512 MiB.
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 512 << 20;

impl RuntimeConfig {
    /// A runtime keeping its files in `data_dir`: 10 ms epochs, 10 MiB log
    /// files and 1 GiB of logs in all, restarts after 10 s, 20 s, 40 s … up to 5 min, reset by a 10 min run,
    /// 512 MiB of memory for a container without a memory limit, CPU limits over 100 ms periods.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            data_dir: data_dir.into(),
            epoch_tick: Duration::from_millis(10),
            log_max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            log_budget_bytes: DEFAULT_BUDGET_BYTES,
            restart_backoff_base: Duration::from_secs(10),
            restart_backoff_cap: Duration::from_secs(300),
            restart_backoff_reset: Duration::from_secs(600),
            default_memory_limit_bytes: Some(DEFAULT_MEMORY_LIMIT_BYTES),
            cpu_period: cpu::DEFAULT_PERIOD,
        }
    }
}

/// Why a runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("configuring the wasmtime engine for pods")]
    Engine(#[source] anyhow::Error),
    #[error("creating the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a component cannot be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0:?} is not a digest of the form sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("fetching {digest}")]
    Fetch {
        digest: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("the fetched bytes have digest {actual}, not {expected}: refusing them")]
    DigestMismatch { expected: String, actual: String },
    #[error("{digest} is not a WebAssembly file")]
    NotWasm { digest: String },
    #[error(
        "{digest} is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { digest: String },
    #[error("{digest} does not compile")]
    Compile {
        digest: String,
        #[source]
        source: anyhow::Error,
    },
    #[error(
        "{digest} is neither a command nor an HTTP server: it exports neither wasi:cli/run nor wasi:http/incoming-handler (its exports: {exports})"
    )]
    NotACommand { digest: String, exports: String },
    #[error("{digest} needs imports this node does not provide")]
    Unlinkable {
        digest: String,
        #[source]
        source: anyhow::Error,
    },
}

impl PrepareError {
    /// True for failures to get the right bytes (kubelet's `ErrImagePull`),
    /// false for bytes that are not a runnable component.
    pub fn is_pull_error(&self) -> bool {
        matches!(self, PrepareError::InvalidDigest(_) | PrepareError::Fetch { .. } | PrepareError::DigestMismatch { .. })
    }
}

/// A node's container runtime. Cheap to clone; clones share the engine,
/// the compiled components, the logs and the table of pods serving HTTP.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    engine: Engine,
    linker: Linker<ContainerState>,
    cache: CompileCache,
    logs: Logs,
    servers: Servers,
    /// Prepared components by digest; a cell is filled once, by whoever asks first.
    prepared: Mutex<HashMap<String, Arc<OnceCell<Prepared>>>>,
    /// Tells the epoch ticker to end when the runtime goes.
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with its own engine and epoch ticker thread (which ends when the last clone is dropped).
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let images = config.data_dir.join("images");
        std::fs::create_dir_all(&images).map_err(|source| RuntimeError::DataDir { path: images.clone(), source })?;

        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(e.into()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| RuntimeError::Engine(e.into()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| RuntimeError::Engine(e.into()))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticking, stop, tick) = (engine.clone(), ticker_stop.clone(), config.epoch_tick.max(Duration::from_millis(1)));
        std::thread::Builder::new()
            .name("kapsel-pod-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(e.into()))?;

        Ok(Runtime {
            inner: Arc::new(Inner {
                logs: Logs::with_budget(&config.data_dir, config.log_max_file_bytes, config.log_budget_bytes),
                cache: CompileCache::new(images),
                config,
                engine,
                linker,
                servers: Servers::default(),
                prepared: Mutex::default(),
                ticker_stop,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The logs of the containers this runtime runs.
    pub fn logs(&self) -> &Logs {
        &self.inner.logs
    }

    /// The pods serving HTTP on this runtime (the pod worker keeps it).
    pub fn servers(&self) -> &Servers {
        &self.inner.servers
    }

    /// The component of `digest` (`sha256:<hex>`), ready to start: from
    /// memory, else from the disk cache, else `fetch`ed (its bytes must have
    /// that digest), checked to be a `wasi:cli` command or a `wasi:http`
    /// proxy ([`Prepared::serves_http`]), compiled and cached.
    /// `fetch` is awaited only when neither cache has the component.
    pub async fn prepare<F>(&self, digest: &str, fetch: F) -> Result<Prepared, PrepareError>
    where
        F: Future<Output = anyhow::Result<Vec<u8>>>,
    {
        parse_digest(digest)?;
        let cell = lock(&self.inner.prepared).entry(digest.to_string()).or_default().clone();
        cell.get_or_try_init(|| self.load_or_compile(digest, fetch)).await.cloned()
    }

    async fn load_or_compile<F>(&self, digest: &str, fetch: F) -> Result<Prepared, PrepareError>
    where
        F: Future<Output = anyhow::Result<Vec<u8>>>,
    {
        let runtime = self.clone();
        let key = digest.to_string();
        let cached = blocking(move || runtime.inner.cache.load(&runtime.inner.engine, &key)).await;
        let component = match cached {
            Some(component) => {
                tracing::debug!(digest, "loaded a compiled component from the disk cache");
                component
            }
            None => {
                let bytes = fetch.await.map_err(|source| PrepareError::Fetch { digest: digest.to_string(), source })?;
                let runtime = self.clone();
                let digest = digest.to_string();
                blocking(move || runtime.compile(&digest, &bytes)).await?
            }
        };
        self.link(digest, &component)
    }

    /// Verifies and compiles fetched bytes, and caches the result on disk.
    fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Component, PrepareError> {
        let actual = format!("sha256:{}", hex(&Sha256::digest(bytes)));
        if actual != digest {
            return Err(PrepareError::DigestMismatch { expected: digest.to_string(), actual });
        }
        check_component_header(digest, bytes)?;
        let started = Instant::now();
        let component = Component::new(&self.inner.engine, bytes)
            .map_err(|source| PrepareError::Compile { digest: digest.to_string(), source: source.into() })?;
        tracing::info!(digest, bytes = bytes.len(), elapsed = ?started.elapsed(), "compiled a pod component");
        if let Err(error) = self.inner.cache.store(digest, &component) {
            tracing::warn!(digest, dir = %self.inner.cache.dir().display(), error = %format!("{error:#}"), "could not cache a compiled component");
        }
        Ok(component)
    }

    /// Checks that `component` is a command or an HTTP proxy this node can
    /// link, and pre-instantiates it. A component exporting both
    /// `wasi:http/incoming-handler` and `wasi:cli/run` is a server.
    fn link(&self, digest: &str, component: &Component) -> Result<Prepared, PrepareError> {
        let engine = &self.inner.engine;
        let exports: Vec<String> = component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect();
        let exports_any = |prefix: &str| exports.iter().any(|name| name.starts_with(prefix));
        let (serves_http, runs) = (exports_any("wasi:http/incoming-handler@0.2."), exports_any("wasi:cli/run@0.2."));
        if !serves_http && !runs {
            let exports = if exports.is_empty() { "none".to_string() } else { exports.join(", ") };
            return Err(PrepareError::NotACommand { digest: digest.to_string(), exports });
        }
        let unlinkable = |source: wasmtime::Error| PrepareError::Unlinkable { digest: digest.to_string(), source: source.into() };
        let pre = self.inner.linker.instantiate_pre(component).map_err(unlinkable)?;
        let not_runnable = |e: wasmtime::Error| PrepareError::NotACommand { digest: digest.to_string(), exports: format!("{e:#}") };
        let entry = if serves_http {
            Entry::Proxy(ProxyPre::new(pre).map_err(not_runnable)?)
        } else {
            Entry::Command(CommandPre::new(pre).map_err(not_runnable)?)
        };
        Ok(Prepared { digest: digest.to_string(), entry, engine: engine.clone() })
    }

    /// Starts a run of `prepared` on a tokio task (call it within a tokio
    /// runtime). The run ends when the guest returns from `wasi:cli/run` or
    /// exits, traps, outgrows its memory limit, passes its deadline, or is
    /// killed. A component that serves HTTP is run with [`Runtime::serve`]
    /// instead; given one, the run ends at once with an error.
    pub fn start(&self, prepared: &Prepared, config: ContainerConfig) -> Container {
        let started_at = Utc::now();
        let pre = match &prepared.entry {
            Entry::Command(pre) => pre.clone(),
            Entry::Proxy(_) => {
                let message = format!("{} serves HTTP (wasi:http/incoming-handler): it is served, not run", prepared.digest);
                return Container::failed_to_start(config.log, message, started_at);
            }
        };
        if let Err(message) = self.check_engine(prepared) {
            return Container::failed_to_start(config.log, message, started_at);
        }
        let recipe = self.recipe(&config);
        let mut store = match recipe.store(&self.inner.engine) {
            Ok(store) => store,
            Err(message) => return Container::failed_to_start(config.log, message, started_at),
        };

        let (kill, killed) = watch::channel(false);
        let (exited, exit) = watch::channel(None);
        let log = config.log;
        let deadline = config.deadline;
        tokio::spawn(async move {
            let outcome = run(&pre, &mut store, killed, deadline).await;
            let finished_at = Utc::now();
            let exit = classify(outcome, store.data().limiter.oom_message(), started_at, finished_at);
            if let Some(cpu) = &store.data().cpu {
                let (times, held) = cpu.throttled();
                tracing::debug!(times, ?held, "a CPU-limited container's run ended; it was throttled");
            }
            drop(store);
            log.close();
            exited.send_replace(Some(exit));
        });
        Container { kill, exit, started_at, server: None }
    }

    /// Compiled code belongs to the engine that compiled it.
    fn check_engine(&self, prepared: &Prepared) -> Result<(), String> {
        if Engine::same(&prepared.engine, &self.inner.engine) {
            Ok(())
        } else {
            Err(format!("{} was prepared by another runtime", prepared.digest))
        }
    }

    /// What the stores of a container with `config` are made from.
    fn recipe(&self, config: &ContainerConfig) -> StoreRecipe {
        let (limit, defaulted) = match config.memory_limit_bytes {
            Some(bytes) => (Some(bytes), false),
            None => (self.inner.config.default_memory_limit_bytes, true),
        };
        let limit = limit.map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
        let period = self.inner.config.cpu_period;
        let cpu = config
            .cpu_limit_millicores
            .and_then(|millicores| cpu::quota(millicores, period))
            .map(|quota| Arc::new(Mutex::new(CpuThrottle::new(quota, period, Instant::now()))));
        StoreRecipe {
            args: config.args.clone(),
            env: config.env.clone(),
            dirs: config.dirs.clone(),
            log: config.log.clone(),
            memory: Arc::new(MemoryBudget::new(limit, defaulted && limit.is_some())),
            cpu,
        }
    }
}

/// What the stores of one container are made from: a command's one store,
/// or a server's store of every request (which share its memory budget and
/// CPU account).
#[derive(Debug)]
struct StoreRecipe {
    args: Vec<String>,
    env: Vec<(String, String)>,
    dirs: Vec<crate::pod::config::MountedDir>,
    log: LogFile,
    memory: Arc<MemoryBudget>,
    /// The CPU account of a container with a CPU limit.
    cpu: Option<Arc<Mutex<CpuThrottle>>>,
}

impl StoreRecipe {
    /// A fresh store: a WASI context granting nothing ambient (the
    /// arguments, environment and volumes; stdout and stderr to the log),
    /// the memory limiter, and a yield at every epoch tick — fairness, and
    /// a point where a kill takes effect — or the CPU limit's hold. Fails
    /// when a volume's directory cannot be opened.
    fn store(&self, engine: &Engine) -> Result<Store<ContainerState>, String> {
        let mut wasi = WasiCtxBuilder::new();
        for dir in &self.dirs {
            let perms = if dir.writable { wasmtime_wasi::FsPerms::ReadWrite } else { wasmtime_wasi::FsPerms::ReadOnly };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|error| format!("giving the container its directory {}: {error:#}", dir.guest))?;
        }
        wasi.args(&self.args)
            .envs(&self.env)
            .stdout(self.log.output(LogSource::Stdout))
            .stderr(self.log.output(LogSource::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = ContainerState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outgoing_http: OutgoingHttpDenied,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(self.memory.clone()),
            cpu: self.cpu.clone().map(CpuMeter::new),
        };
        let limited = state.cpu.is_some();
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        if limited {
            limit_cpu(&mut store);
        } else {
            store.epoch_deadline_async_yield_and_update(1);
        }
        Ok(store)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A component ready to start: compiled, linked and pre-instantiated. Cheap to clone.
#[derive(Clone)]
pub struct Prepared {
    digest: String,
    entry: Entry,
    engine: Engine,
}

/// How a prepared component is entered.
#[derive(Clone)]
enum Entry {
    /// A `wasi:cli/run` command, for [`Runtime::start`].
    Command(CommandPre<ContainerState>),
    /// A `wasi:http` proxy, for [`Runtime::serve`].
    Proxy(ProxyPre<ContainerState>),
}

impl Prepared {
    /// The digest of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether the component is an HTTP server (it exports
    /// `wasi:http/incoming-handler`), to be run with [`Runtime::serve`]
    /// rather than [`Runtime::start`].
    pub fn serves_http(&self) -> bool {
        matches!(self.entry, Entry::Proxy(_))
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared").field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// What one run of a container is given.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The whole argv, program name first (a pod's `command` and `args` come after it).
    pub args: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
    /// The directories the guest is given (its volumes), as WASI preopens.
    pub dirs: Vec<crate::pod::config::MountedDir>,
    /// Most linear memory (all memories together) the guest may hold; `None`
    /// gives the node's default ([`RuntimeConfig::default_memory_limit_bytes`]).
    pub memory_limit_bytes: Option<u64>,
    /// The container's CPU limit in millicores (`resources.limits.cpu`); `None` (or 0) does not throttle.
    pub cpu_limit_millicores: Option<u64>,
    /// Where stdout and stderr go; closed when the run ends.
    pub log: LogFile,
    /// When the run is stopped with [`ExitReason::DeadlineExceeded`] (a pod's `activeDeadlineSeconds`).
    pub deadline: Option<tokio::time::Instant>,
}

/// A running (or finished) container. Dropping it kills the guest (a
/// server stops taking requests, and those in progress are stopped).
#[derive(Debug)]
pub struct Container {
    kill: watch::Sender<bool>,
    exit: watch::Receiver<Option<Exit>>,
    started_at: DateTime<Utc>,
    /// The requests' way in, for a container serving HTTP.
    server: Option<http::ServerHandle>,
}

impl Container {
    /// A container whose run is already over.
    fn ended(exit: Exit) -> Container {
        Container {
            kill: watch::Sender::new(false),
            started_at: exit.started_at,
            exit: watch::Sender::new(Some(exit)).subscribe(),
            server: None,
        }
    }

    /// A container that could not start: ended at once, with an error saying why.
    fn failed_to_start(log: LogFile, message: String, started_at: DateTime<Utc>) -> Container {
        log.close();
        Container::ended(Exit { exit_code: EXIT_CODE_TRAP, reason: ExitReason::Error, message, started_at, finished_at: Utc::now() })
    }

    /// For a container run with [`Runtime::serve`]: its handler once it can
    /// take requests (its first instance was made within its limits), or
    /// `None` when it ended first. `None` at once for a command.
    pub async fn serving(&self) -> Option<HttpHandler> {
        let server = self.server.as_ref()?;
        let mut exit = self.exit.clone();
        tokio::select! {
            biased;
            ready = server.ready() => ready.then(|| server.handler()),
            _ = exit.wait_for(Option::is_some) => None,
        }
    }

    /// When the run started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Stops the guest at its next yield point (at most an epoch tick away,
    /// or at once when it waits on the host); the run ends [`ExitReason::Killed`]
    /// unless it had already ended.
    pub fn kill(&self) {
        self.kill.send_replace(true);
    }

    /// How the run ended, once it has.
    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Waits for the run to end.
    pub async fn wait(&self) -> Exit {
        let mut exit = self.exit.clone();
        let result = exit.wait_for(Option::is_some).await.map(|exit| exit.clone());
        match result {
            Ok(Some(exit)) => exit,
            // The run's task is gone without a word: it panicked (or the tokio runtime is shutting down).
            _ => {
                let now = Utc::now();
                Exit {
                    exit_code: EXIT_CODE_TRAP,
                    reason: ExitReason::Error,
                    message: "the container's task ended without reporting an exit".into(),
                    started_at: self.started_at,
                    finished_at: now,
                }
            }
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The guest's exit status: 0 for success, the code it exited with
    /// (WASI 0.2's `exit` carries only success or failure, so Rust's
    /// `std::process::exit(n)` gives 1 for any `n` other than 0; `exit-with-code`
    /// carries the code), [`EXIT_CODE_TRAP`] for a trap, [`EXIT_CODE_KILLED`]
    /// when the node stopped it.
    pub exit_code: i32,
    pub reason: ExitReason,
    /// What happened, for a trap, a memory limit, a deadline or a kill; empty otherwise.
    pub message: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Exit code reported for a trap (a panic, an `unreachable`…), as for a native process killed by SIGABRT.
pub const EXIT_CODE_TRAP: i32 = 134;
/// Exit code reported when the node stopped the guest (memory limit, deadline, kill), as for SIGKILL.
pub const EXIT_CODE_KILLED: i32 = 137;

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// Exited with status 0.
    Completed,
    /// Exited with a non-zero status, or trapped.
    Error,
    /// Tried to grow its memory past the limit.
    OOMKilled,
    /// Stopped by [`Container::kill`].
    Killed,
    /// Stopped at its deadline.
    DeadlineExceeded,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
            ExitReason::Killed => "Killed",
            ExitReason::DeadlineExceeded => "DeadlineExceeded",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host state of one container's store (a command's, or one request's of a server).
struct ContainerState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing_http: OutgoingHttpDenied,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The CPU meter of a container with a CPU limit.
    cpu: Option<CpuMeter>,
}

impl fmt::Debug for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerState").field("limiter", &self.limiter).field("cpu", &self.cpu).finish_non_exhaustive()
    }
}

impl WasiView for ContainerState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for ContainerState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outgoing_http }
    }
}

/// Refuses every outgoing request a guest makes (`wasi:http/outgoing-handler`):
/// pods have no network. Which services a pod may call is for the service
/// routing of issue 13 to decide; until then the guest's request fails with
/// `HTTP-request-denied`, which it can handle.
#[derive(Debug, Clone, Copy)]
struct OutgoingHttpDenied;

impl wasmtime_wasi_http::WasiHttpHooks for OutgoingHttpDenied {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<(hyper::Response<wasmtime_wasi_http::WasiBody>, OutgoingIo)>> + Send> {
        Box::new(std::future::ready(Err(wasmtime_wasi_http::Error::HttpRequestDenied)))
    }
}

/// The future `send_request` gives back alongside a response, for errors on its connection.
type OutgoingIo = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

/// The memory one container may hold: its limit, and what its stores hold
/// together (a command has one store; a server one per request in progress).
#[derive(Debug)]
struct MemoryBudget {
    limit: Option<usize>,
    /// The limit is the node's default: the container sets none.
    defaulted: bool,
    /// Bytes of linear memory the container's stores hold.
    used: AtomicUsize,
}

impl MemoryBudget {
    fn new(limit: Option<usize>, defaulted: bool) -> MemoryBudget {
        MemoryBudget { limit, defaulted, used: AtomicUsize::new(0) }
    }

    /// Takes `bytes` more if the limit allows; otherwise the total that was asked for.
    fn take(&self, bytes: usize) -> Result<(), usize> {
        let mut asked = 0;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                asked = used.saturating_add(bytes);
                self.limit.is_none_or(|limit| asked <= limit).then_some(asked)
            })
            .map(drop)
            .map_err(|_| asked)
    }

    /// Gives back `bytes` a store held.
    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Caps a store's linear memory (all memories together) by drawing every
/// growth from its container's [`MemoryBudget`], and gives what it drew
/// back when the store goes. Growing past the budget is refused with an
/// error that stops the guest at once — the node's OOM killer — and
/// remembered, so the exit is reported as `OOMKilled` (for a command) or
/// the request answered 500 or 503 (for a server).
#[derive(Debug)]
struct MemoryLimiter {
    budget: Arc<MemoryBudget>,
    /// Bytes of linear memory this store holds.
    held: usize,
    /// The growth that was refused.
    refused: Option<Refusal>,
}

/// A refused growth: what the store would have held, and the container in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    store: usize,
    container: usize,
}

/// The error that stops a guest growing past its memory limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (growing to {wanted} bytes)")]
struct MemoryLimitExceeded {
    limit: usize,
    wanted: usize,
}

impl MemoryLimiter {
    fn new(budget: Arc<MemoryBudget>) -> MemoryLimiter {
        MemoryLimiter { budget, held: 0, refused: None }
    }

    /// What a command is told when it was stopped for its memory: `None` when it was not.
    fn oom_message(&self) -> Option<String> {
        let (refused, limit) = (self.refused?, self.budget.limit?);
        let (limit, wanted) = (bytes_text(limit), bytes_text(refused.container));
        Some(if self.budget.defaulted {
            format!("the container exceeded the node's default memory limit of {limit} (it sets no limits.memory; it asked for {wanted})")
        } else {
            format!("the container exceeded its memory limit of {limit} (it asked for {wanted})")
        })
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        match self.budget.take(growth) {
            Ok(()) => {
                self.held = self.held.saturating_add(growth);
                Ok(true)
            }
            Err(container) => {
                self.refused = Some(Refusal { store: self.held.saturating_add(growth), container });
                let limit = self.budget.limit.unwrap_or(usize::MAX);
                Err(MemoryLimitExceeded { limit, wanted: container }.into())
            }
        }
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Holds a store's guest to its CPU limit: the call hook counts the time
/// the guest runs (from entering guest code to leaving it for the host —
/// the epoch check included), and at each epoch tick the guest either
/// yields (fairness) or, its quota spent, sleeps until its period ends.
fn limit_cpu(store: &mut Store<ContainerState>) {
    store.call_hook(|mut context, hook| {
        let now = Instant::now();
        if let Some(cpu) = context.data_mut().cpu.as_mut() {
            if hook.entering_host() {
                cpu.paused(now);
            } else {
                cpu.resumed(now);
            }
        }
        Ok(())
    });
    store.epoch_deadline_callback(|mut context| {
        let now = Instant::now();
        let hold = context.data_mut().cpu.as_mut().and_then(|cpu| {
            cpu.paused(now);
            cpu.hold_until(now)
        });
        Ok(match hold {
            Some(until) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep_until(until.into()))),
            None => UpdateDeadline::Yield(1),
        })
    });
}

/// How a guest's run ended, before classification: it finished (`T`
/// says how), or the container was stopped first.
enum Outcome<T = wasmtime::Result<Result<(), ()>>> {
    Finished(T),
    Killed,
    DeadlineExceeded,
}

async fn run(
    pre: &CommandPre<ContainerState>,
    store: &mut Store<ContainerState>,
    mut killed: watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
) -> Outcome {
    let guest = async {
        let command = pre.instantiate_async(&mut *store).await?;
        command.wasi_cli_run().call_run(&mut *store).await
    };
    until_stopped(guest, &mut killed, deadline).await
}

/// Runs `guest` until it finishes, `killed` turns true (or its sender goes:
/// a dropped `Container` kills its guest too), or `deadline` passes.
/// Dropping the guest's future unwinds its fiber; its store is then free again.
async fn until_stopped<T>(
    guest: impl Future<Output = T>,
    killed: &mut watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
) -> Outcome<T> {
    let deadline = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = killed.wait_for(|killed| *killed) => Outcome::Killed,
        () = deadline => Outcome::DeadlineExceeded,
        result = guest => Outcome::Finished(result),
    }
}

/// How a run ended; `oom` is the limiter's word when the guest was stopped for its memory.
fn classify(outcome: Outcome, oom: Option<String>, started_at: DateTime<Utc>, finished_at: DateTime<Utc>) -> Exit {
    let exit = |exit_code, reason, message: String| Exit { exit_code, reason, message, started_at, finished_at };
    if let Some(message) = oom {
        return exit(EXIT_CODE_KILLED, ExitReason::OOMKilled, message);
    }
    match outcome {
        Outcome::Killed => exit(EXIT_CODE_KILLED, ExitReason::Killed, "the container was killed".into()),
        Outcome::DeadlineExceeded => exit(EXIT_CODE_KILLED, ExitReason::DeadlineExceeded, "the container ran past its deadline".into()),
        Outcome::Finished(Ok(Ok(()))) => exit(0, ExitReason::Completed, String::new()),
        Outcome::Finished(Ok(Err(()))) => exit(1, ExitReason::Error, String::new()),
        Outcome::Finished(Err(error)) => {
            if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
                let reason = if *code == 0 { ExitReason::Completed } else { ExitReason::Error };
                return exit(*code, reason, String::new());
            }
            let message = match error.downcast_ref::<wasmtime::Trap>() {
                Some(trap) => format!("wasm trap: {trap}"),
                None => format!("{error:#}"),
            };
            tracing::debug!(error = ?error, "a container trapped");
            exit(EXIT_CODE_TRAP, ExitReason::Error, cut(message, 1024))
        }
    }
}

/// Checks the preamble: `\0asm`, then a component's version and layer.
fn check_component_header(digest: &str, bytes: &[u8]) -> Result<(), PrepareError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PrepareError::NotWasm { digest: digest.to_string() });
    }
    match bytes[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err(PrepareError::CoreModule { digest: digest.to_string() }),
        _ => Err(PrepareError::NotWasm { digest: digest.to_string() }),
    }
}

/// Checks `sha256:<64 lowercase hex digits>`.
fn parse_digest(digest: &str) -> Result<&str, PrepareError> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or_else(|| PrepareError::InvalidDigest(digest.to_string()))
}

/// The digest (`sha256:<hex>`) of `bytes`, as images are named.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bytes_text(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) { format!("{}Mi", bytes >> 20) } else { format!("{bytes} bytes") }
}

fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Runs blocking work (compiling, file I/O) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn digests_are_checked_for_form() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(parse_digest(&good).is_ok());
        for bad in ["sha256:abc", "md5:00", &format!("sha256:{}", "A".repeat(64)), &format!("sha256:{}", "g".repeat(64))] {
            assert!(matches!(parse_digest(bad), Err(PrepareError::InvalidDigest(_))), "{bad}");
        }
        assert_eq!(digest_of(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn the_preamble_tells_components_from_modules() {
        assert!(check_component_header("d", b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(matches!(check_component_header("d", b"\0asm\x01\0\0\0"), Err(PrepareError::CoreModule { .. })));
        assert!(matches!(check_component_header("d", b"#!/bin/sh\n"), Err(PrepareError::NotWasm { .. })));
        assert!(matches!(check_component_header("d", b"\0as"), Err(PrepareError::NotWasm { .. })));
    }

    fn budget(limit: Option<usize>) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(limit, false))
    }

    #[test]
    fn the_limiter_counts_all_memories_and_remembers_a_refusal() {
        let mut limiter = MemoryLimiter::new(budget(Some(10 << 20)));
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(4 << 20, 6 << 20, None).unwrap());
        assert!(limiter.refused.is_none() && limiter.oom_message().is_none());
        let error = limiter.memory_growing(6 << 20, 7 << 20, None).unwrap_err();
        assert!(error.to_string().contains("memory limit of 10485760 bytes exceeded"), "{error}");
        assert_eq!(limiter.refused, Some(Refusal { store: 11 << 20, container: 11 << 20 }));
        assert_eq!(limiter.oom_message().unwrap(), "the container exceeded its memory limit of 10Mi (it asked for 11Mi)");
        let mut unlimited = MemoryLimiter::new(budget(None));
        assert!(unlimited.memory_growing(0, 1 << 32, None).unwrap());
    }

    #[test]
    fn the_stores_of_a_container_share_its_budget_and_give_back_what_they_held() {
        let shared = budget(Some(10 << 20));
        let mut first = MemoryLimiter::new(shared.clone());
        let mut second = MemoryLimiter::new(shared.clone());
        assert!(first.memory_growing(0, 6 << 20, None).unwrap());
        // The second store alone would fit; beside the first it does not.
        assert!(second.memory_growing(0, 6 << 20, None).is_err());
        assert_eq!(second.refused, Some(Refusal { store: 6 << 20, container: 12 << 20 }));
        assert_eq!(shared.used.load(Ordering::Acquire), 6 << 20, "a refusal takes nothing");
        drop(first);
        assert_eq!(shared.used.load(Ordering::Acquire), 0, "a store gives back what it held when it goes");
        let mut third = MemoryLimiter::new(shared.clone());
        assert!(third.memory_growing(0, 6 << 20, None).unwrap());
        drop((second, third));
        assert_eq!(shared.used.load(Ordering::Acquire), 0);
    }

    #[test]
    fn sizes_read_like_quantities() {
        assert_eq!(bytes_text(32 << 20), "32Mi");
        assert_eq!(bytes_text(1000), "1000 bytes");
        assert_eq!(cut("ééé".into(), 3), "é…");
    }
}
