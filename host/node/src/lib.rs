//! The node side of Kapsel: the runtime a node agent uses to run pods.
//!
//! A pod's containers are WebAssembly components (`wasi:cli/run` commands)
//! run in wasmtime sandboxes. [`runtime`] runs one container: a compiled,
//! cached component in its own store with no ambient authority, a memory
//! limit (the node's default when it sets none), fair CPU through epoch
//! yields, its CPU limit enforced ([`cpu`]), and an exit like a process's.
//! A component that is a `wasi:http` proxy is served instead: a fresh
//! instance per request, within the container's limits
//! ([`runtime::http`]), and its pod listed in [`serving`] for the ingress
//! while it can take requests.
//! [`logs`] keeps what containers write, per run, rotated, and reads it back
//! for `GET …/pods/{name}/log`. [`pod`] runs a whole pod as kubelet does
//! (init containers, restart policies with back-off, deadlines, images
//! resolved and fetched through [`pod::Sources`]) and publishes its status as
//! Kubernetes shapes it. The agent (registration, leases, watching bound
//! pods, status patches) lives with the supervisor and drives these.
//!
//! The crate's build script also builds the sample workloads of
//! `examples/workloads/` ([`EXAMPLE_WORKLOADS_DIR`]).

mod cache;
pub mod cpu;
pub mod logs;
pub mod pod;
pub mod runtime;
pub mod serving;

pub use logs::{LogError, LogFile, LogFollow, LogQuery, LogSource, Logs};
pub use pod::{EventKind, PodEvent, PodWorker, Sources};
pub use runtime::{
    Container, ContainerConfig, Exit, ExitReason, HttpHandler, PrepareError, Prepared, Runtime, RuntimeConfig, RuntimeError,
};
pub use serving::{Servers, ServingPod};
/// The body of a serving pod's answer.
pub use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The directory holding the built sample workloads (`hello.wasm`,
/// `fail.wasm`, `worker.wasm`, `memhog.wasm`, `spin.wasm`, `http-hello.wasm`), for tests and demos.
pub const EXAMPLE_WORKLOADS_DIR: &str = env!("KAPSEL_EXAMPLE_WORKLOADS");

/// The `hello` sample workload: prints a greeting, its arguments and `$GREETING`, exits 0.
pub const HELLO: &[u8] = include_bytes!(concat!(env!("KAPSEL_EXAMPLE_WORKLOADS"), "/hello.wasm"));

/// The `http-hello` sample workload, a `wasi:http` proxy: answers `Hello from $POD_NAME`
/// (`/echo-headers` lists the request's headers, `/echo` streams its body back).
pub const HTTP_HELLO: &[u8] = include_bytes!(concat!(env!("KAPSEL_EXAMPLE_WORKLOADS"), "/http-hello.wasm"));

/// The `worker` sample workload: logs a numbered line every second until stopped.
pub const WORKER: &[u8] = include_bytes!(concat!(env!("KAPSEL_EXAMPLE_WORKLOADS"), "/worker.wasm"));

/// Locks a mutex, carrying on past a panic of another holder (the data are plain records).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
