//! Hosting `network-driver` plug-ins.
//!
//! A network driver is granted no files, so it keeps its allocations in the
//! instance's memory. The host remembers every answer it accepted (each
//! namespace's segment and each pod's address) and replays them with
//! `restore` into a fresh instance — after a failed call, an upgrade, a
//! configuration edit or a restart (the caller passes what it persisted to
//! [`NetworkDriver::from_component`]) — so running pods keep their
//! addresses and nothing is handed out twice.

use std::collections::BTreeMap;

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf};

use crate::sandbox::{self, Limits, Live, PluginError, PluginState};
use crate::scheduler::misfit;

#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/kapsel-plugin@0.1.0",
        world: "network-driver",
        additional_derives: [PartialEq, Eq],
        with: {
            "kapsel:plugin/log": crate::scheduler::bindings::kapsel::plugin::log,
            "kapsel:plugin/types": crate::scheduler::bindings::kapsel::plugin::types,
        },
    });
}

pub use bindings::kapsel::plugin::network_types::{Endpoint, NetworkError, Segment};

impl bindings::kapsel::plugin::network_types::Host for PluginState {}

/// What a network driver may import beyond WASI's base: its world's interfaces.
const GRANTED: &[&str] = &["kapsel:plugin/log@0.1.", "kapsel:plugin/types@0.1.", "kapsel:plugin/network-types@0.1."];

/// A namespace's network as the host remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub segment: Segment,
    /// Pod name → address.
    pub pods: BTreeMap<String, String>,
}

/// One loaded network driver.
pub struct NetworkDriver {
    name: String,
    pre: bindings::NetworkDriverPre<PluginState>,
    limits: Limits,
    config: Vec<(String, String)>,
    /// Every network the driver handed out, by namespace, replayed into a fresh instance.
    networks: BTreeMap<String, Network>,
    live: Option<Live<bindings::NetworkDriver>>,
}

impl std::fmt::Debug for NetworkDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkDriver").field("name", &self.name).field("networks", &self.networks.len()).finish_non_exhaustive()
    }
}

impl NetworkDriver {
    /// Checks `component` against the `network-driver` world, starts and
    /// configures a first instance, and restores `networks` (what was handed
    /// out before) into it; a driver that refuses them is refused.
    pub fn from_component(
        name: &str,
        component: &Component,
        config: Vec<(String, String)>,
        limits: Limits,
        networks: BTreeMap<String, Network>,
    ) -> Result<Self, PluginError> {
        let mut linker = sandbox::wasi_linker()?;
        bindings::NetworkDriver::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Rejected(format!("{e:#}")))?;
        let misfit = misfit("network-driver");
        let pre = bindings::NetworkDriverPre::new(linker.instantiate_pre(component).map_err(&misfit)?).map_err(&misfit)?;
        sandbox::check_imports(component, "network driver", GRANTED)?;
        let mut driver = NetworkDriver { name: name.to_string(), pre, limits, config, networks, live: None };
        driver.live = Some(driver.fresh()?);
        Ok(driver)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The networks handed out, by namespace.
    pub fn networks(&self) -> &BTreeMap<String, Network> {
        &self.networks
    }

    /// A new instance, configured, with every known network restored.
    fn fresh(&self) -> Result<Live<bindings::NetworkDriver>, PluginError> {
        let Live { mut store, instance } = sandbox::start(
            &self.name,
            self.limits,
            None,
            |store| self.pre.instantiate(store),
            |instance, store| instance.call_configure(store, &self.config),
        )?;
        for (namespace, network) in &self.networks {
            let pods: Vec<(String, String)> = network.pods.iter().map(|(p, a)| (p.clone(), a.clone())).collect();
            sandbox::arm_deadline(&mut store, self.limits);
            match instance.call_restore(&mut store, namespace, &network.segment, &pods) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(PluginError::Config(format!(
                        "it refuses the network of namespace {namespace:?} handed out before ({}): {}",
                        network.segment.cidr,
                        describe(&error)
                    )));
                }
                Err(e) => return Err(sandbox::classify(&e, &store, self.limits)),
            }
        }
        Ok(Live { store, instance })
    }

    fn call<R>(
        &mut self,
        call: impl FnOnce(&bindings::NetworkDriver, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let (result, live) = sandbox::call_live(self.live.take(), || self.fresh(), self.limits, call)?;
        self.live = Some(live);
        Ok(result)
    }

    /// Restores a network handed out before (as a fresh instance gets it) and remembers it.
    pub fn restore_network(&mut self, namespace: &str, network: Network) -> Result<Result<(), NetworkError>, PluginError> {
        let pods: Vec<(String, String)> = network.pods.iter().map(|(p, a)| (p.clone(), a.clone())).collect();
        let answer = self.call(|instance, store| instance.call_restore(store, namespace, &network.segment, &pods))?;
        if answer.is_ok() {
            self.networks.insert(namespace.to_string(), network);
        }
        Ok(answer)
    }

    /// Takes over what another instance (the version this one replaces)
    /// handed out that this one does not know yet; returns the networks it
    /// refused, with why.
    pub fn adopt(&mut self, networks: &BTreeMap<String, Network>) -> Vec<(String, String)> {
        let mut refused = Vec::new();
        for (namespace, network) in networks {
            if self.networks.get(namespace) == Some(network) {
                continue;
            }
            match self.restore_network(namespace, network.clone()) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => refused.push((namespace.clone(), describe(&error))),
                Err(error) => refused.push((namespace.clone(), error.to_string())),
            }
        }
        refused
    }

    /// Gives `namespace` its segment (the same one on a repeat).
    pub fn create_network(&mut self, namespace: &str) -> Result<Result<Segment, NetworkError>, PluginError> {
        let answer = self.call(|instance, store| instance.call_create_network(store, namespace))?;
        if let Ok(segment) = &answer {
            self.networks.entry(namespace.to_string()).or_insert_with(|| Network { segment: segment.clone(), pods: BTreeMap::new() });
        }
        Ok(answer)
    }

    /// Releases the namespace's segment and its addresses.
    pub fn delete_network(&mut self, namespace: &str) -> Result<Result<(), NetworkError>, PluginError> {
        let answer = self.call(|instance, store| instance.call_delete_network(store, namespace))?;
        if answer.is_ok() {
            self.networks.remove(namespace);
        }
        Ok(answer)
    }

    /// Gives a pod its address (the same one on a repeat).
    pub fn attach_pod(&mut self, namespace: &str, pod: &str) -> Result<Result<String, NetworkError>, PluginError> {
        let answer = self.call(|instance, store| instance.call_attach_pod(store, namespace, pod))?;
        if let (Ok(address), Some(network)) = (&answer, self.networks.get_mut(namespace)) {
            network.pods.insert(pod.to_string(), address.clone());
        }
        Ok(answer)
    }

    /// Releases a pod's address.
    pub fn detach_pod(&mut self, namespace: &str, pod: &str) -> Result<Result<(), NetworkError>, PluginError> {
        let answer = self.call(|instance, store| instance.call_detach_pod(store, namespace, pod))?;
        if let (Ok(()), Some(network)) = (&answer, self.networks.get_mut(namespace)) {
            network.pods.remove(pod);
        }
        Ok(answer)
    }

    /// Whether traffic from `from` to `to` is allowed.
    pub fn allow(&mut self, from: &Endpoint, to: &Endpoint) -> Result<bool, PluginError> {
        self.call(|instance, store| instance.call_allow(store, from, to))
    }
}

/// A driver's refusal in words.
pub fn describe(error: &NetworkError) -> String {
    match error {
        NetworkError::Exhausted => "no free segment or address left".into(),
        NetworkError::UnknownNamespace => "the namespace has no network".into(),
        NetworkError::Invalid(message) => message.clone(),
    }
}
