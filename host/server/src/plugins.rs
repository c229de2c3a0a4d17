//! Plug-ins in the supervisor: uploads and rollbacks of the `Plugin`
//! kind's components, and the registry of active plug-ins through which
//! callers reach them ([`PluginRegistry::invoke`]): each call runs off the
//! async threads, is counted, and fails under the plug-in's failure policy —
//! `Fail` fails the operation with a Status naming the plug-in, `Ignore`
//! skips the call and records an Event; [`DEGRADED_AFTER`] consecutive
//! failures mark the plug-in `Degraded` (an Event, and its status, which
//! [`PluginRegistry::flush_status`] keeps up to date).
//!
//! An upload (`POST /apis/kapsel.io/v1alpha1/plugins/{name}/component`,
//! the component's bytes as the body, served by `crate::http::plugins`) is compiled and checked against its
//! world — exports, granted imports, and the `Plugin`'s configuration —
//! before anything is stored; a component that fails is answered 422 with
//! the reason and nothing changes. One that passes is stored by digest
//! (deduplicated), the `Plugin` object is pointed at it (the digest before
//! it kept for `rollback`), and the new instance replaces the old one in
//! the registry in one step: calls already holding the old one finish on it.
//!
//! The registry follows the stored `Plugin` objects through a reflector,
//! whatever wrote them (an upload, an edit through the generic API,
//! another process sharing the store): a new or changed spec is loaded
//! from its stored component and swapped in, one that does not load leaves
//! the previous instance active and says why in the status (`Rejected`),
//! a deleted plug-in stops. An upload loads and activates its component
//! itself before answering, under the same lock, so nothing is loaded twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use kapsel_api::kinds::event::EventType;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::plugin::{FailurePolicy, PLUGIN, PluginSpec, WORLDS};
use kapsel_api::kinds::pod::POD;
use kapsel_api::{FieldError, object};
use kapsel_plugins::network::{Network, NetworkDriver, Segment};
use kapsel_plugins::{CompileCache, Grants, Hosted, Limits, PluginError, World};
use kapsel_store::{Change, ChangeType, Key, Store, StoreError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::App;
use crate::auth::{Identity, Verb, authorize};
use crate::error::{ApiError, PluginFailure};
use crate::events;
use crate::operation::Context;
use crate::reflector::{self, Reflected, Reflection};

/// The largest component accepted by an upload.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

/// Consecutive failed calls after which a plug-in is marked `Degraded`.
pub const DEGRADED_AFTER: u32 = 3;

/// The annotations a namespace's network is recorded in (set by the platform).
pub const SEGMENT_ANNOTATION: &str = "network.kapsel.io/segment";
pub const GATEWAY_ANNOTATION: &str = "network.kapsel.io/gateway";
pub const DRIVER_ANNOTATION: &str = "network.kapsel.io/driver";

/// One active plug-in: its loaded instance and the health its callers report.
#[derive(Debug)]
pub struct ActivePlugin {
    pub name: String,
    pub world: World,
    pub failure_policy: FailurePolicy,
    /// How much a scheduler extension's scores count (`spec.weight`).
    pub weight: u32,
    /// Calls to one instance never overlap: each call holds this lock.
    hosted: Mutex<Hosted>,
    health: Mutex<Health>,
    /// Replaced by a newer version or deleted: calls go to the registry's current one.
    retired: AtomicBool,
}

/// What the plug-in's status reports, kept in memory and written out by [`PluginRegistry::flush_status`].
#[derive(Debug, Default, Clone)]
struct Health {
    calls: u64,
    errors: u64,
    consecutive_errors: u32,
    last_error: String,
    degraded: bool,
    /// Changed since the status was last written.
    dirty: bool,
}

/// How a call changed the plug-in's health.
enum Turn {
    Degraded,
    Recovered,
}

impl ActivePlugin {
    fn new(name: &str, spec: &PluginSpec, hosted: Hosted) -> Self {
        ActivePlugin {
            name: name.to_string(),
            world: hosted.world(),
            failure_policy: spec.failure_policy,
            weight: spec.weight,
            hosted: Mutex::new(hosted),
            // A new instance starts healthy; the first status pass says so.
            health: Mutex::new(Health { dirty: true, ..Health::default() }),
            retired: AtomicBool::new(false),
        }
    }

    /// Counts a call's outcome; says when it turned the plug-in `Degraded` or back.
    fn record(&self, outcome: Result<(), &PluginError>) -> Option<Turn> {
        let mut health = self.health.lock().expect("plug-in health lock");
        health.calls += 1;
        health.dirty = true;
        match outcome {
            Ok(()) => {
                health.consecutive_errors = 0;
                std::mem::take(&mut health.degraded).then_some(Turn::Recovered)
            }
            Err(error) => {
                health.errors += 1;
                health.consecutive_errors += 1;
                health.last_error = error.to_string();
                let turned = health.consecutive_errors >= DEGRADED_AFTER && !health.degraded;
                health.degraded |= turned;
                turned.then_some(Turn::Degraded)
            }
        }
    }
}

/// The active plug-ins, by name, and what loading them needs.
#[derive(Debug, Clone)]
pub struct PluginRegistry {
    active: Arc<RwLock<BTreeMap<String, Arc<ActivePlugin>>>>,
    store: Store,
    cache: Option<CompileCache>,
    /// Storage drivers get `<storage_dir>/<plug-in name>` as their root.
    storage_dir: PathBuf,
    /// What the stored `Plugin` objects ask for, as their reflector reports it.
    wanted: Arc<Wanted>,
    /// The spec each plug-in was last loaded from, or last failed to load
    /// from: a stored spec equal to it needs no load.
    loaded: Arc<Mutex<BTreeMap<String, PluginSpec>>>,
    /// Held while a plug-in is loaded and activated (by an upload, a
    /// rollback or the reconciler), so a load is never done twice.
    loading: Arc<tokio::sync::Mutex<()>>,
    /// How many reports of [`Wanted`] have been acted on.
    reconciled: tokio::sync::watch::Receiver<u64>,
    reconciled_to: Arc<tokio::sync::watch::Sender<u64>>,
    /// The reflector of `Plugin` objects.
    reflection: Reflection,
}

/// The reflector's copy of the stored `Plugin` objects, reduced to what
/// the registry must act on: each plug-in changed since the reconciler
/// last looked, with its stored spec (`None`: deleted).
#[derive(Debug, Default)]
struct Wanted {
    changed: Mutex<Changed>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Changed {
    specs: BTreeMap<String, Option<PluginSpec>>,
    /// `specs` holds a whole listing: a loaded plug-in not in it was deleted meanwhile.
    relisted: bool,
    /// Every report counted, so a waiter knows when the reconciler has acted on its own.
    reports: u64,
}

impl Wanted {
    fn report(&self, update: impl FnOnce(&mut Changed)) {
        let mut changed = self.changed.lock().expect("plug-in reflector lock");
        update(&mut changed);
        changed.reports += 1;
        drop(changed);
        self.wake.notify_one();
    }

    fn reports(&self) -> u64 {
        self.changed.lock().expect("plug-in reflector lock").reports
    }

    /// What changed since the last call, and how many reports that covers.
    fn take(&self) -> (Changed, u64) {
        let mut changed = self.changed.lock().expect("plug-in reflector lock");
        let reports = changed.reports;
        let taken = Changed { specs: std::mem::take(&mut changed.specs), relisted: std::mem::take(&mut changed.relisted), reports };
        (taken, reports)
    }
}

/// A stored plug-in's spec; `None` for one that does not decode (only a
/// write that bypassed validation stores such a thing: it is logged and left alone).
fn stored_spec(plugin: &Value) -> Option<PluginSpec> {
    match serde_json::from_value::<PluginSpec>(plugin.get("spec").cloned().unwrap_or_default()) {
        Ok(spec) => Some(spec),
        Err(error) => {
            tracing::error!(plugin = object::name(plugin).unwrap_or_default(), %error, "a stored plug-in's spec does not decode; ignored");
            None
        }
    }
}

/// The reflector's end of [`Wanted`].
struct PluginCopy(Arc<Wanted>);

impl Reflected for PluginCopy {
    fn replace(&self, objects: Vec<Value>) {
        let listed = objects.iter().filter_map(|plugin| Some((object::name(plugin)?.to_string(), Some(stored_spec(plugin)?)))).collect();
        self.0.report(|changed| {
            changed.specs = listed;
            changed.relisted = true;
        });
    }

    fn apply(&self, change: &Change) {
        let name = change.key.name.clone();
        let spec = match change.change_type {
            ChangeType::Deleted => None,
            _ => match stored_spec(&change.object) {
                Some(spec) => Some(spec),
                None => return,
            },
        };
        self.0.report(|changed| {
            changed.specs.insert(name, spec);
        });
    }
}

impl PluginRegistry {
    /// Loads every stored `Plugin` that has a component, compiling through
    /// `cache` when given; storage drivers' roots go under `storage_dir`.
    /// One that no longer loads is left out (the others still start) and its
    /// status says why. Then follows the stored plug-ins: whatever writes one
    /// (an upload here, an edit, another tool holding the store), the
    /// registry loads it, reloads it or lets it go.
    pub async fn start(store: &Store, cache: Option<CompileCache>, storage_dir: PathBuf) -> Result<PluginRegistry, StoreError> {
        let wanted = Arc::new(Wanted::default());
        let reflection = reflector::start(store, &PLUGIN, PluginCopy(wanted.clone())).await?;
        let (reconciled_to, reconciled) = tokio::sync::watch::channel(0);
        let registry = PluginRegistry {
            active: Default::default(),
            store: store.clone(),
            cache,
            storage_dir,
            wanted,
            loaded: Default::default(),
            loading: Default::default(),
            reconciled,
            reconciled_to: Arc::new(reconciled_to),
            reflection,
        };
        registry.reconcile().await;
        let reconciler = registry.clone();
        tokio::spawn(async move {
            loop {
                reconciler.wanted.wake.notified().await;
                reconciler.reconcile().await;
            }
        });
        Ok(registry)
    }

    /// Waits until the registry has acted on every stored change of plug-ins
    /// up to `revision` (at most [`reflector::CATCH_UP`] for the reflector
    /// to take it in, and as long again for the loads it started).
    pub async fn caught_up(&self, revision: i64) -> bool {
        if !self.reflection.caught_up(revision).await {
            return false;
        }
        let reports = self.wanted.reports();
        let mut reconciled = self.reconciled.clone();
        match tokio::time::timeout(reflector::CATCH_UP, reconciled.wait_for(|done| *done >= reports)).await {
            Ok(Ok(_)) => true,
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(revision, "the plug-in registry did not act on a write in time (a load still running?)");
                false
            }
        }
    }

    /// Acts on what the stored plug-ins ask for: loads and activates a new
    /// or changed spec, stops a deleted plug-in. A load that fails leaves
    /// the previous instance (if any) active and says so in the status.
    async fn reconcile(&self) {
        let _loading = self.loading.lock().await;
        let (Changed { mut specs, relisted, .. }, reports) = self.wanted.take();
        if relisted {
            let loaded: Vec<String> = self.loaded.lock().expect("plug-in registry lock").keys().cloned().collect();
            for name in loaded {
                specs.entry(name).or_insert(None);
            }
        }
        for (name, spec) in specs {
            let previous = self.loaded.lock().expect("plug-in registry lock").get(&name).cloned();
            match spec {
                None => {
                    self.loaded.lock().expect("plug-in registry lock").remove(&name);
                    self.remove(&name);
                }
                Some(spec) if previous.as_ref() == Some(&spec) => {}
                Some(spec) => {
                    self.loaded.lock().expect("plug-in registry lock").insert(name.clone(), spec.clone());
                    if spec.digest.is_empty() {
                        // Nothing uploaded (yet, or any more): nothing runs.
                        self.remove(&name);
                        continue;
                    }
                    self.load_stored(&name, &spec, previous.is_some()).await;
                }
            }
        }
        self.reconciled_to.send_replace(reports);
    }

    /// Loads `spec`'s stored component and activates it; records in the
    /// plug-in's status whether it is active or why it is not.
    async fn load_stored(&self, name: &str, spec: &PluginSpec, replacing: bool) {
        let outcome = match self.store.get_blob(&spec.digest).await {
            Ok(bytes) => self.load(name, spec, bytes).await.map_err(|e| e.to_string()),
            Err(error) => Err(format!("the component {} is missing: {error}", spec.digest)),
        };
        let status = match outcome {
            Ok(hosted) => {
                self.activate(name, spec, hosted).await;
                json!({"phase": "Active", "message": "", "calls": 0, "errors": 0})
            }
            Err(message) if self.get(name).is_some() => {
                tracing::error!(plugin = %name, %message, "an edited plug-in does not load; the previous instance stays active");
                json!({"phase": "Rejected", "message": format!("the edited spec does not load ({message}); the previous configuration stays active")})
            }
            Err(message) => {
                tracing::error!(plugin = %name, %message, "a stored plug-in does not load; it stays inactive");
                json!({"phase": "Rejected", "message": format!("the component does not load ({message}); the plug-in is inactive")})
            }
        };
        let key = Key::new(PLUGIN.store_key(), "", name);
        if let Ok(mut current) = self.store.get(&key).await {
            let phase = current.pointer("/status/phase").and_then(Value::as_str);
            let active = matches!(phase, Some("Active" | "Degraded"));
            if current.get("status") == Some(&status) || (!replacing && active && status["phase"] == "Active") {
                // Loaded as it was before this process started: the status and its counts still hold.
                return;
            }
            let expected = object::resource_version(&current).and_then(Result::ok);
            current["status"] = status;
            if let Err(error) = self.store.update(key, current, expected).await {
                tracing::warn!(plugin = %name, error = &error as &dyn std::error::Error, "could not record the plug-in's status");
            }
        }
    }

    /// Makes `hosted` the active version of `name`. The hand-over: a call
    /// running on the old version finishes on it; then, with the old version
    /// held, a network driver's new instance adopts what the old one handed
    /// out meanwhile, the new version takes the name, and the old one is
    /// retired — calls that were waiting for it move to the new one, so none
    /// fails because of the swap.
    pub async fn activate(&self, name: &str, spec: &PluginSpec, hosted: Hosted) {
        // Waiting for a call in flight (up to its deadline) must not hold an async worker.
        let registry = self.clone();
        let (name, spec) = (name.to_string(), spec.clone());
        if let Err(error) = tokio::task::spawn_blocking(move || registry.hand_over(&name, &spec, hosted)).await {
            tracing::error!(%error, "activating a plug-in failed");
        }
    }

    /// Activates what an upload or a rollback has just stored (holding
    /// `loading`), so the reconciler, seeing the stored spec, has nothing to do.
    async fn activate_stored(&self, name: &str, spec: PluginSpec, hosted: Hosted) {
        self.activate(name, &spec, hosted).await;
        self.loaded.lock().expect("plug-in registry lock").insert(name.to_string(), spec);
    }

    fn hand_over(&self, name: &str, spec: &PluginSpec, mut hosted: Hosted) {
        let old = self.get(name);
        let old_hosted = old.as_ref().map(|old| old.hosted.lock().expect("plug-in instance lock"));
        if let (Some(Hosted::Network(previous)), Hosted::Network(next)) = (old_hosted.as_deref(), &mut hosted) {
            for (namespace, error) in next.adopt(previous.networks()) {
                tracing::error!(plugin = %name, %namespace, %error, "the new network driver refuses a network the old one handed out");
            }
        }
        let plugin = Arc::new(ActivePlugin::new(name, spec, hosted));
        self.active.write().expect("plug-in registry lock").insert(name.to_string(), plugin);
        if let Some(old) = &old {
            old.retired.store(true, Ordering::Release);
        }
        drop(old_hosted);
    }

    /// Stops `name`: callers fall back to built-in behaviour; calls waiting for it are skipped.
    pub fn remove(&self, name: &str) {
        let removed = self.active.write().expect("plug-in registry lock").remove(name);
        if let Some(removed) = removed {
            removed.retired.store(true, Ordering::Release);
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<ActivePlugin>> {
        self.active.read().expect("plug-in registry lock").get(name).cloned()
    }

    /// The active plug-ins of `world`, in name order.
    pub fn of_world(&self, world: World) -> Vec<Arc<ActivePlugin>> {
        self.active.read().expect("plug-in registry lock").values().filter(|p| p.world == world).cloned().collect()
    }

    /// The network driver in charge: the first active one by name.
    pub fn network_driver(&self) -> Option<Arc<ActivePlugin>> {
        self.of_world(World::NetworkDriver).into_iter().next()
    }

    /// Calls `plugin` off the async threads and applies its failure policy:
    /// the outcome is counted (`Degraded` after [`DEGRADED_AFTER`]
    /// consecutive failures, with an Event); a failed call is an error under
    /// `Fail` and `Ok(None)` under `Ignore`, with an Event saying it was skipped.
    pub async fn invoke<R: Send + 'static>(
        &self,
        plugin: &Arc<ActivePlugin>,
        operation: impl Into<String>,
        call: impl FnOnce(&mut Hosted) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<Option<R>, PluginFailure> {
        let registry = self.clone();
        let calling = plugin.clone();
        let served = match tokio::task::spawn_blocking(move || registry.serve(calling, call)).await {
            Ok(served) => served,
            Err(lost) => Some((plugin.clone(), Err(PluginError::Trap(format!("the call was lost: {lost}"))))),
        };
        self.settle(operation.into(), served)
    }

    /// [`PluginRegistry::invoke`] for a caller already off the async
    /// threads (the scheduler's cycle, which calls extensions per pod):
    /// the call runs on this thread. Must run inside the Tokio runtime (events are spawned on it).
    pub fn invoke_blocking<R>(
        &self,
        plugin: &Arc<ActivePlugin>,
        operation: impl Into<String>,
        call: impl FnOnce(&mut Hosted) -> Result<R, PluginError>,
    ) -> Result<Option<R>, PluginFailure> {
        let served = self.serve(plugin.clone(), call);
        self.settle(operation.into(), served)
    }

    /// Runs `call` on the version of the plug-in that is active when the
    /// call gets its turn (see `activate`); `None` when it was deleted while
    /// the call waited.
    fn serve<R>(
        &self,
        calling: Arc<ActivePlugin>,
        call: impl FnOnce(&mut Hosted) -> Result<R, PluginError>,
    ) -> Option<(Arc<ActivePlugin>, Result<R, PluginError>)> {
        let mut current = calling;
        loop {
            let mut hosted = current.hosted.lock().expect("plug-in instance lock");
            if !current.retired.load(Ordering::Acquire) {
                let outcome = call(&mut hosted);
                drop(hosted);
                return Some((current, outcome));
            }
            drop(hosted);
            current = self.get(&current.name)?;
        }
    }

    /// Counts a served call's outcome and applies the failure policy.
    fn settle<R>(
        &self,
        operation: String,
        served: Option<(Arc<ActivePlugin>, Result<R, PluginError>)>,
    ) -> Result<Option<R>, PluginFailure> {
        // Deleted while the call waited: as if it had not been there.
        let Some((plugin, outcome)) = served else { return Ok(None) };
        let plugin = &plugin;
        let turn = plugin.record(outcome.as_ref().map(|_| ()));
        let error = match outcome {
            Ok(answer) => {
                if let Some(Turn::Recovered) = turn {
                    self.plugin_event(plugin, EventType::Normal, "PluginRecovered", format!("{operation}: the plug-in answered again"));
                }
                return Ok(Some(answer));
            }
            Err(error) => error,
        };
        if let Some(Turn::Degraded) = turn {
            let message = format!("{DEGRADED_AFTER} consecutive calls failed; the last, {operation}: {error}");
            self.plugin_event(plugin, EventType::Warning, "PluginDegraded", message);
        }
        match plugin.failure_policy {
            FailurePolicy::Fail => Err(PluginFailure { plugin: plugin.name.clone(), operation, error }),
            FailurePolicy::Ignore => {
                let message = format!("skipped {operation} (failure policy Ignore): {error}");
                tracing::warn!(plugin = %plugin.name, %message, "plug-in call skipped");
                self.plugin_event(plugin, EventType::Warning, "PluginCallSkipped", message);
                Ok(None)
            }
        }
    }

    /// Records an Event about a plug-in in the background (events never hold up the call).
    fn plugin_event(&self, plugin: &ActivePlugin, event_type: EventType, reason: &'static str, message: String) {
        let store = self.store.clone();
        let name = plugin.name.clone();
        tokio::spawn(async move {
            let Ok(object) = store.get(&Key::new(PLUGIN.store_key(), "", &name)).await else { return };
            events::record(&store, &object, event_type, reason, &message).await;
        });
    }

    /// Writes each active plug-in's changed health into its status (calls,
    /// errors, last error, `Degraded`/`Active`). Run periodically.
    pub async fn flush_status(&self) {
        let active: Vec<Arc<ActivePlugin>> = self.active.read().expect("plug-in registry lock").values().cloned().collect();
        for plugin in active {
            let health = {
                let mut health = plugin.health.lock().expect("plug-in health lock");
                if !health.dirty {
                    continue;
                }
                health.dirty = false;
                health.clone()
            };
            let key = Key::new(PLUGIN.store_key(), "", &plugin.name);
            let Ok(mut current) = self.store.get(&key).await else { continue };
            if current.pointer("/status/phase").and_then(Value::as_str) == Some("Rejected") && !health.degraded {
                // A refused edit is reported until the next successful load.
                current["status"]["calls"] = json!(health.calls);
                current["status"]["errors"] = json!(health.errors);
            } else {
                let (phase, message) = if health.degraded {
                    ("Degraded", format!("{} consecutive calls failed", health.consecutive_errors))
                } else {
                    ("Active", String::new())
                };
                current["status"] = json!({
                    "phase": phase,
                    "message": message,
                    "calls": health.calls,
                    "errors": health.errors,
                    "lastError": health.last_error,
                });
            }
            let expected = object::resource_version(&current).and_then(Result::ok);
            if let Err(error) = self.store.update(key, current, expected).await {
                // Written again at the next pass.
                plugin.health.lock().expect("plug-in health lock").dirty = true;
                tracing::debug!(plugin = %plugin.name, error = &error as &dyn std::error::Error, "plug-in status not written yet");
            }
        }
    }
}

/// The plug-ins `kapsel serve` installs on first start, from the components embedded in the binary.
pub const DEFAULT_PLUGINS: &[(&str, World)] =
    &[("spread", World::SchedulerExtension), ("namespace-ipam", World::NetworkDriver), ("local-volumes", World::StorageDriver)];

/// Stores the default plug-ins' components and `Plugin` objects (an
/// admin can edit, replace or delete them like any other; deleted, they stay deleted).
pub async fn install_defaults(store: &Store) -> Result<(), StoreError> {
    for (name, world) in DEFAULT_PLUGINS {
        let bytes = kapsel_plugins::defaults::by_name(name).expect("every default plug-in is embedded");
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        store.put_blob(&digest, bytes).await?;
        let spec = PluginSpec {
            world: world.as_str().into(),
            version: concat!("builtin-", env!("CARGO_PKG_VERSION")).into(),
            digest,
            ..PluginSpec::default()
        };
        let mut object = object::new_object(&PLUGIN.api_version(), PLUGIN.kind, None, name);
        object["spec"] = serde_json::to_value(&spec).expect("a plug-in spec encodes");
        object["status"] = json!({"phase": "Active", "message": "", "calls": 0, "errors": 0});
        match store.create(Key::new(PLUGIN.store_key(), "", *name), object).await {
            Ok(_) | Err(StoreError::AlreadyExists) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Runs a call on the network driver in charge, if any. `Ok(None)`: no
/// driver, or the call failed under `Ignore`.
pub async fn network_call<R: Send + 'static>(
    plugins: &PluginRegistry,
    operation: String,
    call: impl FnOnce(&mut NetworkDriver) -> Result<R, PluginError> + Send + 'static,
) -> Result<Option<(String, R)>, PluginFailure> {
    let Some(driver) = plugins.network_driver() else { return Ok(None) };
    let answer = plugins
        .invoke(&driver, operation, |hosted| match hosted {
            Hosted::Network(network) => call(network),
            other => Err(PluginError::Rejected(format!("not a network driver but a {}", other.world()))),
        })
        .await?;
    Ok(answer.map(|answer| (driver.name.clone(), answer)))
}

impl PluginRegistry {
    /// Compiles (or takes from the cache), checks and configures a component
    /// for `spec`, off the async threads. A network driver is given the
    /// networks recorded on namespaces for it, to restore.
    async fn load(&self, name: &str, spec: &PluginSpec, bytes: Vec<u8>) -> Result<Hosted, PluginError> {
        let world = World::parse(&spec.world).ok_or_else(|| PluginError::Rejected(format!("unknown world {:?}", spec.world)))?;
        let grants = match world {
            World::SchedulerExtension => Grants::default(),
            World::StorageDriver => Grants { storage_root: Some(self.storage_dir.join(name)), ..Grants::default() },
            World::NetworkDriver => Grants {
                networks: recorded_networks(&self.store, name)
                    .await
                    .map_err(|e| PluginError::Rejected(format!("reading networks: {e}")))?,
                ..Grants::default()
            },
        };
        let cache = self.cache.clone();
        let digest = spec.digest.clone();
        let spec = spec.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let component = match (&cache, digest.is_empty()) {
                (Some(cache), false) => cache.compile(&digest, &bytes)?,
                _ => kapsel_plugins::compile(&bytes)?,
            };
            let limits = Limits {
                deadline: std::time::Duration::from_millis(spec.limits.deadline_milliseconds),
                memory_bytes: usize::try_from(spec.limits.memory_bytes).unwrap_or(usize::MAX),
            };
            kapsel_plugins::load(world, &name, &component, spec.config.clone().into_iter().collect(), limits, grants)
        })
        .await
        .map_err(|e| PluginError::Trap(format!("the loader stopped: {e}")))?
    }
}

/// The networks namespaces record as handed out by the driver `plugin`, with their pods' addresses.
async fn recorded_networks(store: &Store, plugin: &str) -> Result<BTreeMap<String, Network>, StoreError> {
    let mut networks = BTreeMap::new();
    for namespace in store.list(&NAMESPACE.store_key(), None).await?.objects {
        let annotation =
            |key: &str| namespace.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1"))).and_then(Value::as_str);
        let (Some(cidr), Some(gateway), Some(plugin_name)) =
            (annotation(SEGMENT_ANNOTATION), annotation(GATEWAY_ANNOTATION), annotation(DRIVER_ANNOTATION))
        else {
            continue;
        };
        if plugin_name != plugin {
            continue;
        }
        let name = object::name(&namespace).unwrap_or_default().to_string();
        let mut pods = BTreeMap::new();
        // The driver knows a pod by its uid (`crate::pod_network`); a pod that ended gave its address back.
        for pod in store.list(&POD.store_key(), Some(&name)).await?.objects {
            if let (Some(uid), Some(ip)) = (object::meta_str(&pod, "uid"), pod.pointer("/status/podIP").and_then(Value::as_str))
                && !kapsel_api::kinds::pod::has_ended(&pod)
            {
                pods.insert(uid.to_string(), ip.to_string());
            }
        }
        networks.insert(name, Network { segment: Segment { cidr: cidr.into(), gateway: gateway.into() }, pods });
    }
    Ok(networks)
}

/// A component uploaded for a plug-in.
#[derive(Debug)]
pub struct Upload {
    /// The world the component targets (required for a new plug-in).
    pub world: Option<String>,
    /// The version it is recorded as (`spec.version`).
    pub version: Option<String>,
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

fn invalid_component(name: &str, error: PluginError) -> ApiError {
    ApiError::invalid(&PLUGIN, name, vec![FieldError::invalid("component", error.to_string())])
}

/// Who may upload a component for the plug-in `name`, and whether the
/// name is one (it becomes a store key, a storage root and a file name):
/// checked before the component is read.
pub fn may_upload(identity: &Identity, name: &str) -> Result<(), ApiError> {
    authorize(identity, Verb::Create, &PLUGIN, None)?;
    if let Err(message) = (PLUGIN.validate_name)(name) {
        return Err(ApiError::invalid(&PLUGIN, name, vec![FieldError::invalid("metadata.name", message)]));
    }
    Ok(())
}

/// Checks a component for the plug-in `name` (creating the plug-in when
/// there is none), stores it and makes it active; answers the `Plugin`.
pub async fn upload(app: &App, ctx: &Context, name: &str, upload: Upload) -> Result<Value, ApiError> {
    may_upload(&ctx.identity, name)?;
    let Upload { world, version, bytes, digest } = upload;
    let _loading = app.plugins.loading.lock().await;
    let key = Key::new(PLUGIN.store_key(), "", name);
    let current = match app.store.get(&key).await {
        Ok(current) => Some(current),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(ApiError::from_store(e, &PLUGIN, name)),
    };
    let mut spec: PluginSpec = match &current {
        Some(current) => serde_json::from_value(current.get("spec").cloned().unwrap_or_default())
            .map_err(|e| ApiError::internal("reading the stored plug-in", e))?,
        None => PluginSpec::default(),
    };
    if let Some(world) = world {
        if current.is_some() && world != spec.world {
            return Err(ApiError::invalid(
                &PLUGIN,
                name,
                vec![FieldError::forbidden("spec.world", format!("the plug-in targets {}; delete it to change its world", spec.world))],
            ));
        }
        spec.world = world;
    }
    if spec.world.is_empty() {
        return Err(ApiError::invalid(
            &PLUGIN,
            name,
            vec![
                FieldError::required("spec.world")
                    .with_message("pass ?world= (one of scheduler-extension, storage-driver, network-driver)"),
            ],
        ));
    }
    if !WORLDS.contains(&spec.world.as_str()) {
        return Err(ApiError::invalid(&PLUGIN, name, vec![FieldError::not_supported("spec.world", &spec.world, WORLDS)]));
    }
    if spec.world == World::NetworkDriver.as_str()
        && let Some(other) = app.plugins.of_world(World::NetworkDriver).into_iter().find(|p| p.name != name)
    {
        let message = format!(
            "the network driver {:?} is in charge of namespace networks; delete it first (one network driver at a time)",
            other.name
        );
        return Err(ApiError::invalid(&PLUGIN, name, vec![FieldError::forbidden("spec.world", message)]));
    }
    let candidate = PluginSpec { digest: digest.clone(), ..spec.clone() };
    let hosted = app.plugins.load(name, &candidate, bytes.clone()).await.map_err(|e| invalid_component(name, e))?;
    app.store.put_blob(&digest, &bytes).await.map_err(|e| ApiError::from_store(e, &PLUGIN, name))?;
    if spec.digest != digest {
        spec.previous_digest = std::mem::replace(&mut spec.digest, digest);
        spec.previous_version = spec.version.clone();
    }
    if let Some(version) = version {
        spec.version = version;
    }
    let stored = save(app, name, current, spec.clone()).await?;
    app.plugins.activate_stored(name, spec, hosted).await;
    let active = stored.pointer("/spec/digest").and_then(|d| d.as_str()).unwrap_or_default().to_string();
    tracing::info!(plugin = %name, digest = %active, "plug-in active");
    Ok(stored)
}

/// Makes the previous component of the plug-in `name` active again; answers the `Plugin`.
pub async fn rollback(app: &App, ctx: &Context, name: &str) -> Result<Value, ApiError> {
    authorize(&ctx.identity, Verb::Update, &PLUGIN, None)?;
    let _loading = app.plugins.loading.lock().await;
    let current = app.store.get(&Key::new(PLUGIN.store_key(), "", name)).await.map_err(|e| ApiError::from_store(e, &PLUGIN, name))?;
    let mut spec: PluginSpec = serde_json::from_value(current.get("spec").cloned().unwrap_or_default())
        .map_err(|e| ApiError::internal("reading the stored plug-in", e))?;
    if spec.previous_digest.is_empty() {
        return Err(ApiError::BadRequest(format!("plug-in {name:?} has no previous version to roll back to")));
    }
    let bytes = app.store.get_blob(&spec.previous_digest).await.map_err(|e| ApiError::from_store(e, &PLUGIN, name))?;
    let previous = PluginSpec { digest: spec.previous_digest.clone(), ..spec.clone() };
    let hosted = app.plugins.load(name, &previous, bytes).await.map_err(|e| invalid_component(name, e))?;
    std::mem::swap(&mut spec.digest, &mut spec.previous_digest);
    std::mem::swap(&mut spec.version, &mut spec.previous_version);
    let stored = save(app, name, Some(current), spec.clone()).await?;
    app.plugins.activate_stored(name, spec, hosted).await;
    Ok(stored)
}

/// Creates or updates the `Plugin` object with `spec`, marked Active.
async fn save(app: &App, name: &str, current: Option<Value>, spec: PluginSpec) -> Result<Value, ApiError> {
    let key = Key::new(PLUGIN.store_key(), "", name);
    let spec = serde_json::to_value(&spec).map_err(|e| ApiError::internal("encoding the plug-in", e))?;
    let status = json!({"phase": "Active", "message": "", "calls": 0, "errors": 0});
    let Some(mut read) = current else {
        let mut object = object::new_object(&PLUGIN.api_version(), PLUGIN.kind, None, name);
        object["spec"] = spec;
        object["status"] = status;
        let created = app.store.create(key, object).await;
        return created.map(|c| (*c.object).clone()).map_err(|e| ApiError::from_store(e, &PLUGIN, name));
    };
    // The status writer may have written the status since it was read; only a change of the spec is a conflict.
    loop {
        let mut object = read.clone();
        let expected = object::resource_version(&object).and_then(Result::ok);
        object["spec"] = spec.clone();
        object["status"] = status.clone();
        let generation = object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        object::set_meta(&mut object, "generation", generation + 1);
        match app.store.update(key.clone(), object, expected).await {
            Ok(change) => return Ok((*change.object).clone()),
            Err(StoreError::Conflict { .. }) => {
                let fresh = app.store.get(&key).await.map_err(|e| ApiError::from_store(e, &PLUGIN, name))?;
                if fresh.get("spec") != read.get("spec") {
                    return Err(ApiError::conflict(&PLUGIN, name, "the plug-in's spec changed during the upload; try again"));
                }
                read = fresh;
            }
            Err(error) => return Err(ApiError::from_store(error, &PLUGIN, name)),
        }
    }
}
