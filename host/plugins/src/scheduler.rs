//! Hosting `scheduler-extension` plug-ins.
//!
//! A [`SchedulerExtension`] holds one live instance, because the world is
//! stateful by design: the node snapshot is pushed in with `update-nodes`
//! when nodes change, so that per-pod `filter`/`score` calls carry only the
//! pod and candidate indices (copying node records across the boundary is
//! what dominates a call). The host keeps the configuration and the last
//! snapshot; when a call fails (trap, deadline, memory) the instance is
//! dropped and the next call starts a fresh one, configured and given the
//! snapshot again.

use wasmtime::Store;
pub use wasmtime::component::Component;
use wasmtime::component::HasSelf;

use crate::sandbox::{self, Limits, Live, PluginError, PluginState};

#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/kapsel-plugin@0.1.0",
        world: "scheduler-extension",
        // The scheduler compares node summaries to tell a real change from a rewrite.
        additional_derives: [PartialEq],
    });
}

pub use bindings::kapsel::plugin::types::{
    FilterResult, NodeRejection, NodeSummary, PodRef, PodSummary, Resources, Taint, TaintEffect, Toleration, TolerationOperator,
};

// The `log` and `types` interfaces are shared by every world; the storage
// and network bindings reuse these (bindgen's `with`).
impl bindings::kapsel::plugin::log::Host for PluginState {
    fn log(&mut self, level: bindings::kapsel::plugin::log::Level, message: String) {
        use bindings::kapsel::plugin::log::Level;
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        sandbox::log_line(&self.plugin, level, &message);
    }
}

impl bindings::kapsel::plugin::types::Host for PluginState {}

/// What a scheduler extension may import beyond WASI's base: its own world's interfaces.
const GRANTED: &[&str] = &["kapsel:plugin/log@0.1.", "kapsel:plugin/types@0.1."];

/// Says why a component does not fit `world` (wasmtime's linker error, led by the world's name).
pub(crate) fn misfit(world: &str) -> impl Fn(wasmtime::Error) -> PluginError {
    move |e| PluginError::Rejected(format!("does not fit the {world} world: {e:#}"))
}

/// Compiles `bytes` as a component, with a message a plug-in author understands when they are not one.
pub fn compile(bytes: &[u8]) -> Result<Component, PluginError> {
    const CORE_MODULE: [u8; 8] = *b"\0asm\x01\0\0\0";
    if bytes.len() >= 8 && bytes[..8] == CORE_MODULE {
        return Err(PluginError::Rejected(
            "not a component: a core WebAssembly module (build for the wasm32-wasip2 target to get a component)".into(),
        ));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(PluginError::Rejected("not a WebAssembly binary".into()));
    }
    Component::new(crate::engine(), bytes).map_err(|e| PluginError::Rejected(format!("not a valid component: {e:#}")))
}

/// One loaded scheduler extension.
pub struct SchedulerExtension {
    name: String,
    pre: bindings::SchedulerExtensionPre<PluginState>,
    limits: Limits,
    config: Vec<(String, String)>,
    /// The last snapshot pushed, replayed into a fresh instance.
    nodes: Vec<NodeSummary>,
    live: Option<Live<bindings::SchedulerExtension>>,
}

impl std::fmt::Debug for SchedulerExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerExtension").field("name", &self.name).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl SchedulerExtension {
    /// Compiles `bytes`, checks them against the `scheduler-extension`
    /// world, and starts and configures a first instance.
    pub fn load(name: &str, bytes: &[u8], config: Vec<(String, String)>, limits: Limits) -> Result<Self, PluginError> {
        Self::from_component(name, &compile(bytes)?, config, limits)
    }

    /// As [`SchedulerExtension::load`], from an already compiled component.
    pub fn from_component(name: &str, component: &Component, config: Vec<(String, String)>, limits: Limits) -> Result<Self, PluginError> {
        let mut linker = sandbox::wasi_linker()?;
        bindings::SchedulerExtension::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Rejected(format!("{e:#}")))?;
        let misfit = misfit("scheduler-extension");
        let pre = bindings::SchedulerExtensionPre::new(linker.instantiate_pre(component).map_err(&misfit)?).map_err(&misfit)?;
        sandbox::check_imports(component, "scheduler extension", GRANTED)?;
        let mut extension = SchedulerExtension { name: name.to_string(), pre, limits, config, nodes: Vec::new(), live: None };
        extension.live = Some(extension.fresh()?);
        Ok(extension)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A new instance, configured and given the last snapshot.
    fn fresh(&self) -> Result<Live<bindings::SchedulerExtension>, PluginError> {
        let Live { mut store, instance } = sandbox::start(
            &self.name,
            self.limits,
            None,
            |store| self.pre.instantiate(store),
            |instance, store| instance.call_configure(store, &self.config),
        )?;
        if !self.nodes.is_empty() {
            sandbox::arm_deadline(&mut store, self.limits);
            instance.call_update_nodes(&mut store, &self.nodes).map_err(|e| sandbox::classify(&e, &store, self.limits))?;
        }
        Ok(Live { store, instance })
    }

    /// Runs one call on the live instance (starting one if needed) under the
    /// deadline; a failure discards the instance.
    fn call<R>(
        &mut self,
        call: impl FnOnce(&bindings::SchedulerExtension, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let (result, live) = sandbox::call_live(self.live.take(), || self.fresh(), self.limits, call)?;
        self.live = Some(live);
        Ok(result)
    }
    /// Replaces the node snapshot.
    pub fn update_nodes(&mut self, nodes: Vec<NodeSummary>) -> Result<(), PluginError> {
        let result = self.call(|instance, store| instance.call_update_nodes(store, &nodes));
        self.nodes = nodes;
        result
    }

    /// Which `candidates` (snapshot indices) may run `pod`.
    pub fn filter(&mut self, pod: &PodSummary, candidates: &[u32]) -> Result<FilterResult, PluginError> {
        self.call(|instance, store| instance.call_filter(store, pod, candidates))
    }

    /// Scores (0–100) of the `feasible` nodes for `pod`.
    pub fn score(&mut self, pod: &PodSummary, feasible: &[u32]) -> Result<Vec<(u32, u8)>, PluginError> {
        self.call(|instance, store| instance.call_score(store, pod, feasible))
    }

    /// Tells the extension `pod` was bound to the node at `index`.
    pub fn pod_bound(&mut self, pod: &PodSummary, index: u32) -> Result<(), PluginError> {
        self.call(|instance, store| instance.call_pod_bound(store, pod, index))
    }
}
