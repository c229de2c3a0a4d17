//! Hosting Kapsel's own Rego evaluator (world `kapsel:policy/evaluator`,
//! built from `plugins/rego-evaluator`): the sandbox tenants' admission
//! policies run in.
//!
//! In the host's process a policy's time is checked by regorus between
//! steps, and some single steps cannot be interrupted: comparing two values
//! built by doubling a shared value forty times walks 2^40 nodes before the
//! next check. In a component instance the same step is stopped at its
//! deadline by epoch interruption, and whatever it allocates is capped by
//! the store's limiter; the instance is then discarded. The price is copying
//! the request into the instance as JSON on each call.
//!
//! A [`SandboxedPolicy`] keeps its modules (to compile a fresh instance) and
//! borrows warm instances, already compiled, from one process-wide pool of at
//! most [`MAX_WARM`], oldest dropped first; an instance that grew past
//! [`MAX_WARM_MEMORY`] is not kept. At most [`MAX_INSTANCES`] exist at once
//! (warm or busy): a call that finds none free waits for one within its own
//! deadline. Both bounds keep tenants' policies within a fixed share of the
//! plug-in engine's pooling allocator and of memory, however many there are.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::sandbox::{self, Limits, PluginError, PluginState};

#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/kapsel-policy@0.1.0",
        world: "evaluator",
    });
}

use bindings::{Evaluator, EvaluatorPre, Module};

/// The evaluator component, built from `plugins/rego-evaluator` by this crate's `build.rs`.
pub const EVALUATOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rego_evaluator.wasm"));

/// The most linear memory one evaluator instance may hold: the compiled
/// policy, the request copied in, and what the evaluation builds.
pub const MEMORY_BYTES: usize = 64 << 20;
/// The longest compiling a policy in a fresh instance may take (parsing
/// and preparing it; an ordinary policy takes a few milliseconds).
pub const COMPILE_DEADLINE: Duration = Duration::from_secs(1);
/// The most compiled instances kept warm between calls, all policies together.
pub const MAX_WARM: usize = 64;
/// An instance that grew past this during a call is dropped rather than kept warm.
pub const MAX_WARM_MEMORY: usize = 16 << 20;
/// The most evaluator instances alive at once, warm or busy.
pub const MAX_INSTANCES: usize = 128;

/// Why a sandboxed policy did not compile: the index of the module at
/// fault (when one is) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileFailure {
    pub module: Option<usize>,
    pub message: String,
    /// Whether it ran out of time (rather than being refused).
    pub deadline: bool,
}

/// A policy compiled in the sandbox: its modules and what `compile` answered.
#[derive(Debug)]
pub struct SandboxedPolicy {
    /// The key of this policy's instances in the warm pool.
    serial: u64,
    modules: Vec<Module>,
    rego_v0: bool,
    parameters: String,
    decisions: Vec<String>,
}

impl Drop for SandboxedPolicy {
    fn drop(&mut self) {
        pool().forget(self.serial);
    }
}

impl SandboxedPolicy {
    /// Compiles `modules` (name, text; the policy's libraries first, its main
    /// module last) in a fresh instance, which is then kept warm.
    /// `parameters` is JSON, given to every evaluation as `input.parameters`.
    pub fn compile(modules: Vec<(String, String)>, rego_v0: bool, parameters: String) -> Result<SandboxedPolicy, CompileFailure> {
        static SERIALS: AtomicU64 = AtomicU64::new(0);
        let mut policy = SandboxedPolicy {
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            modules: modules.into_iter().map(|(name, text)| Module { name, text }).collect(),
            rego_v0,
            parameters,
            decisions: Vec::new(),
        };
        let permit = pool().admit(Instant::now() + COMPILE_DEADLINE).map_err(|e| CompileFailure {
            module: None,
            message: e.to_string(),
            deadline: false,
        })?;
        let (instance, decisions) = outside_async(|| policy.fresh(COMPILE_DEADLINE))?;
        policy.decisions = decisions;
        pool().keep(policy.serial, instance, permit);
        Ok(policy)
    }

    /// The full paths of the policy's decision rules, as `compile` found them.
    pub fn decisions(&self) -> &[String] {
        &self.decisions
    }

    /// Evaluates the decision rules on `review` (JSON, `input.review`) and
    /// `inventory` (JSON, `data.inventory`) when given, within `deadline`:
    /// each rule's value as JSON, or why the evaluation failed — its
    /// [`PluginError::Deadline`] or [`PluginError::Memory`] when it ran past them.
    pub fn evaluate(&self, review: &str, inventory: Option<&str>, deadline: Duration) -> Result<Result<Vec<String>, String>, PluginError> {
        outside_async(|| self.evaluate_here(review, inventory, deadline))
    }

    fn evaluate_here(&self, review: &str, inventory: Option<&str>, deadline: Duration) -> Result<Result<Vec<String>, String>, PluginError> {
        let until = Instant::now() + deadline;
        let (Warm { mut live, stderr }, permit) = match pool().take(self.serial) {
            Some(warm) => warm,
            None => {
                // Compiled again within this evaluation's budget: a policy whose
                // evaluations always fail cannot make each one cost a compile besides.
                let permit = pool().admit(until)?;
                let left = until.saturating_duration_since(Instant::now());
                let (live, _) = self.fresh(left).map_err(|e| match e.deadline {
                    true => PluginError::Deadline(deadline),
                    false => PluginError::Trap(format!("compiling the policy again failed: {e}")),
                })?;
                (live, permit)
            }
        };
        let left = until.saturating_duration_since(Instant::now());
        let limits = Limits { deadline: left.max(Duration::from_millis(1)), memory_bytes: MEMORY_BYTES };
        sandbox::arm_deadline(&mut live.store, limits);
        match live.instance.call_evaluate(&mut live.store, review, inventory) {
            Ok(result) => {
                pool().keep(self.serial, Warm { live, stderr }, permit);
                Ok(result)
            }
            Err(error) => Err(explained(sandbox::classify(&error, &live.store, limits), &stderr)),
        }
    }

    /// A new instance with this policy compiled in it within `deadline`.
    fn fresh(&self, deadline: Duration) -> Result<(Warm, Vec<String>), CompileFailure> {
        let failure = |e: PluginError| CompileFailure { module: None, message: format!("the policy sandbox failed: {e}"), deadline: false };
        let limits = Limits { deadline: deadline.max(Duration::from_millis(1)), memory_bytes: MEMORY_BYTES };
        let pre = evaluator().map_err(failure)?;
        let (mut store, stderr) = sandbox::new_store_keeping_stderr("rego-evaluator", limits, STDERR_BYTES).map_err(failure)?;
        sandbox::arm_deadline(&mut store, limits);
        let instance = pre.instantiate(&mut store).map_err(|e| failure(sandbox::classify(&e, &store, limits)))?;
        sandbox::arm_deadline(&mut store, limits);
        let compiled = instance.call_compile(&mut store, &self.modules, self.rego_v0, &self.parameters).map_err(|e| {
            match explained(sandbox::classify(&e, &store, limits), &stderr) {
                PluginError::Deadline(_) => CompileFailure {
                    module: None,
                    message: format!("compiling the policy took longer than {} s", limits.deadline.as_secs_f64()),
                    deadline: true,
                },
                PluginError::Memory(bytes) => CompileFailure {
                    module: None,
                    message: format!("compiling the policy needed more than the {} MiB it may use", bytes >> 20),
                    deadline: false,
                },
                PluginError::Trap(trap) if trap.contains("call stack exhausted") => CompileFailure {
                    module: None,
                    message: "its rules depend on one another too deeply for the sandbox's stack (chains of a few hundred rules fit)"
                        .into(),
                    deadline: false,
                },
                other => failure(other),
            }
        })?;
        match compiled {
            Ok(decisions) => Ok((Warm { live: Live { store, instance }, stderr }, decisions)),
            Err(e) => Err(CompileFailure { module: e.module.map(|m| m as usize), message: e.message, deadline: false }),
        }
    }
}

/// Runs `f`, which calls into the evaluator, where tokio may be blocked on:
/// wasmtime-wasi's synchronous streams block on the ambient runtime (when
/// the guest writes to standard error — a panic message, a parser warning
/// of regorus), which a runtime's worker thread must not do. So a worker
/// hands its other tasks to another thread while `f` runs
/// (`block_in_place`; nothing to hand over on a thread that is not a
/// worker, or when the caller already did), and a current-thread runtime
/// runs `f` on a thread of its own.
fn outside_async<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Err(_) => f(),
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => std::thread::scope(|scope| {
            let thread = std::thread::Builder::new().name("kapsel-rego".into()).stack_size(SCOPED_STACK_BYTES).spawn_scoped(scope, f);
            match thread.map(|t| t.join()) {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(error) => panic!("cannot start a thread for the policy sandbox: {error}"),
            }
        }),
        Ok(_) => tokio::task::block_in_place(f),
    }
}

/// The stack of the thread [`outside_async`] starts: the sandbox's own
/// stack (wasmtime's 512 KiB) and the host's frames, with room to spare.
const SCOPED_STACK_BYTES: usize = 8 << 20;

/// One evaluator instance with its store.
type Live = sandbox::Live<Evaluator>;

/// An evaluator instance and its standard error, where its panics explain themselves.
struct Warm {
    live: Live,
    stderr: MemoryOutputPipe,
}

/// What the evaluator may write to standard error: its panic message (regorus' `print` is gathered, not written).
const STDERR_BYTES: usize = 64 << 10;

/// A trap with what the guest said when it panicked (a failed allocation,
/// most often: more than its 4 GiB address space, which the memory cap never sees).
fn explained(error: PluginError, stderr: &MemoryOutputPipe) -> PluginError {
    match (error, sandbox::panic_message(stderr)) {
        (PluginError::Trap(_), Some(message)) => PluginError::Trap(message),
        (other, _) => other,
    }
}

/// The compiled evaluator, ready to instantiate (compiled once per process,
/// or read from the compile cache set with [`use_compile_cache`]).
fn evaluator() -> Result<&'static EvaluatorPre<PluginState>, PluginError> {
    static PRE: OnceLock<Result<EvaluatorPre<PluginState>, PluginError>> = OnceLock::new();
    PRE.get_or_init(|| {
        let component = match CACHE.get() {
            Some(cache) => cache.compile(&digest(), EVALUATOR)?,
            None => Component::new(crate::engine(), EVALUATOR).map_err(|e| PluginError::Rejected(format!("{e:#}")))?,
        };
        // The evaluator imports nothing of its own; WASI is there for the
        // Rust standard library (clocks, randomness), granting nothing.
        let linker = sandbox::wasi_linker()?;
        let pre = linker.instantiate_pre(&component).map_err(|e| PluginError::Rejected(format!("{e:#}")))?;
        EvaluatorPre::new(pre).map_err(|e| PluginError::Rejected(format!("{e:#}")))
    })
    .as_ref()
    .map_err(Clone::clone)
}

static CACHE: OnceLock<crate::CompileCache> = OnceLock::new();

/// Keeps the compiled evaluator in `cache` (compiling it takes seconds; reading it back, milliseconds).
/// Only the first call counts; call it before the first policy is compiled.
pub fn use_compile_cache(cache: crate::CompileCache) {
    let _ = CACHE.set(cache);
}

/// Compiles the evaluator now (or reads it from the cache), so the first
/// tenant policy does not wait for it.
pub fn prepare() -> Result<(), PluginError> {
    evaluator().map(drop)
}

/// How many evaluator instances are warm, and how many exist (warm or busy).
pub fn instances() -> (usize, usize) {
    let pool = pool();
    let warm = pool.warm.lock().unwrap_or_else(|e| e.into_inner()).len();
    (warm, *pool.instances.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The cache key of [`EVALUATOR`].
fn digest() -> String {
    use sha2::{Digest as _, Sha256};
    let hash = Sha256::digest(EVALUATOR);
    format!("rego-evaluator-{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A permission to hold one instance: counted in [`Pool::instances`] until dropped.
struct Permit(());

impl Drop for Permit {
    fn drop(&mut self) {
        let pool = pool();
        *pool.instances.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        pool.freed.notify_one();
    }
}

/// The warm instances of every sandboxed policy, oldest first, and the count of all instances.
struct Pool {
    warm: Mutex<VecDeque<(u64, Warm, Permit)>>,
    instances: Mutex<usize>,
    freed: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool { warm: Mutex::default(), instances: Mutex::new(0), freed: Condvar::new() })
}

impl Pool {
    /// A warm instance of policy `serial`, if one is kept.
    fn take(&self, serial: u64) -> Option<(Warm, Permit)> {
        let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        let at = warm.iter().rposition(|(s, _, _)| *s == serial)?;
        warm.remove(at).map(|(_, live, permit)| (live, permit))
    }

    /// Keeps `live` warm for policy `serial`, unless it grew too large;
    /// drops the oldest warm instance when the pool is full.
    fn keep(&self, serial: u64, warm: Warm, permit: Permit) {
        if warm.live.store.data().memory_bytes() > MAX_WARM_MEMORY {
            return;
        }
        let evicted = {
            let mut pool = self.warm.lock().unwrap_or_else(|e| e.into_inner());
            pool.push_back((serial, warm, permit));
            (pool.len() > MAX_WARM).then(|| pool.pop_front())
        };
        // Dropped outside the lock: freeing an instance is not free.
        drop(evicted);
    }

    /// Drops the warm instances of policy `serial` (it was replaced or deleted).
    fn forget(&self, serial: u64) {
        let forgotten: VecDeque<_> = {
            let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
            let (gone, kept) = std::mem::take(&mut *warm).into_iter().partition(|(s, _, _)| *s == serial);
            *warm = kept;
            gone
        };
        drop(forgotten);
    }

    /// A permit for a new instance, waiting until `until` for one to be
    /// freed when [`MAX_INSTANCES`] exist; a warm instance is dropped to make
    /// room when no busy one frees a place.
    fn admit(&self, until: Instant) -> Result<Permit, PluginError> {
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *instances < MAX_INSTANCES {
                *instances += 1;
                return Ok(Permit(()));
            }
            // Make room by dropping the oldest warm instance (its permit
            // returns its place), outside this lock.
            drop(instances);
            let oldest = self.warm.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let dropped = oldest.is_some();
            drop(oldest);
            instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            if dropped {
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PluginError::Busy(format!(
                    "{MAX_INSTANCES} policy evaluations are running in the sandbox and none finished in time"
                )));
            }
            instances = self.freed.wait_timeout(instances, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}
