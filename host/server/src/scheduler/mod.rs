//! The scheduler (in the supervisor): places every pod that has no node.
//!
//! It keeps the cluster in memory — the nodes as [`Candidate`]s, with the
//! pods bound to each counted in their `requested` — from a list of nodes
//! and pods and then their watches, read even while a cycle runs so they
//! never fall behind the store's live changes. Unbound pods wait in a
//! [`SchedulingQueue`] (priority, then first come, first served). A cycle
//! takes a batch of them on a blocking thread and, for each, runs the
//! built-in filters ([`decision`]) from a rotating start until enough
//! feasible nodes are found ([`nodes_to_score`], as kube-scheduler's
//! `percentageOfNodesToScore`), narrows those with every active
//! `scheduler-extension` plug-in's `filter`, scores them (least-allocated,
//! plus each extension's `score` times its `spec.weight`), and takes the
//! best. The pod is counted on that node at once ("assumed", as
//! kube-scheduler does) and extensions are told with `pod-bound`, so the
//! next pod of the batch sees it; the binding — `spec.nodeName` and the
//! `PodScheduled` condition, guarded by the pod's revision, then a
//! `Scheduled` Event — is written in the background, and a
//! binding that cannot be written is forgotten and the pod queued again.
//!
//! Extensions are called through [`PluginRegistry::invoke_blocking`], under
//! their failure policies: under `Ignore` a failing extension is left out of
//! that pod's decision; under `Fail` the pod is not placed and says why. They
//! are given the node snapshot (`update-nodes`) before a cycle whenever nodes
//! changed, a pod ended, or the extension is a new instance.
//!
//! A pod no node can take gets `PodScheduled=False`, reason `Unschedulable`,
//! a message that counts why (`0/3 nodes are available: 2 Insufficient
//! memory, 1 rejected by plug-in spread: …`) and a `FailedScheduling`
//! Event, and waits aside until a node joins or changes, a pod ends, its
//! own spec or labels change, a scheduler extension is added, replaced or
//! removed, or [`queue::UNSCHEDULABLE_RETRY`] passes.
//!
//! Pods created with `spec.nodeName` are bound already, and a pod naming
//! another `spec.schedulerName` than [`SCHEDULER_NAME`] (or Kubernetes'
//! `default-scheduler`) is left to that scheduler, as in Kubernetes.
//! Several supervisors on one database each run a scheduler; the revision
//! guard makes sure a pod is bound once (the other's binding is forgotten).

pub mod decision;
pub mod queue;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use kapsel_api::kinds::event::EventType;
use kapsel_api::kinds::node::NODE;
use kapsel_api::kinds::pod::POD;
use kapsel_api::object;
use kapsel_plugins::scheduler::{FilterResult, NodeSummary, PodRef, PodSummary, Resources};
use kapsel_plugins::{Hosted, PluginError, World};
use kapsel_store::{Change, ChangeType, Key, Store, StoreError, WriteOp};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

pub use decision::{Candidate, nodes_to_score, pod_requests, pod_summary, unschedulable_message};
pub use queue::{PodKey, SchedulingQueue};

use crate::events;
use crate::plugins::{ActivePlugin, PluginRegistry};
use crate::reflector::{self, Event};

/// The `spec.schedulerName` of the pods this scheduler places (besides
/// none, and `default-scheduler`, which manifests written for Kubernetes name).
pub const SCHEDULER_NAME: &str = "kapsel-scheduler";

/// Whether this scheduler places `pod`.
pub fn schedules(pod: &Value) -> bool {
    match pod.pointer("/spec/schedulerName").and_then(Value::as_str) {
        None | Some("" | "default-scheduler" | SCHEDULER_NAME) => true,
        Some(_) => false,
    }
}

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Most pods decided in one cycle before the scheduler looks at its watches again.
    pub batch: usize,
    /// Most bindings being written at once.
    pub bindings_in_flight: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { batch: 256, bindings_in_flight: 2048 }
    }
}

/// What the scheduler has done since it started (for benchmarks and logs).
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Bindings written.
    pub bound: AtomicU64,
    /// Decisions that found no node.
    pub unschedulable: AtomicU64,
    /// Bindings that could not be written (the pod changed, went, or was bound by another scheduler).
    pub forgotten: AtomicU64,
    /// Time spent deciding, in nanoseconds, over `decisions` decisions.
    pub deciding_nanos: AtomicU64,
    pub decisions: AtomicU64,
}

/// Starts the scheduler of `app`'s store and plug-ins; it stops with the server.
pub fn start(app: &crate::App, options: SchedulerOptions) -> Arc<SchedulerStats> {
    let stats = Arc::new(SchedulerStats::default());
    let (store, plugins, stopping, counted) = (app.store.clone(), app.plugins.clone(), app.stopping.clone(), stats.clone());
    // A panic in a cycle ends that cycle; the scheduler starts again from a fresh list.
    kapsel_daemon::task::supervise("scheduler", app.stopping.clone(), move || {
        run(store.clone(), plugins.clone(), stopping.clone(), options.clone(), counted.clone())
    });
    stats
}

/// Runs the scheduler until `stopping` turns true; it starts again from fresh
/// lists when a follow had to list again (it fell behind the change log).
pub async fn run(
    store: Store,
    plugins: PluginRegistry,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    options: SchedulerOptions,
    stats: Arc<SchedulerStats>,
) {
    loop {
        let outcome = tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            outcome = schedule(&store, &plugins, &options, &stats) => outcome,
        };
        match outcome {
            Ok(Life::Relisted) => tracing::info!("the scheduler starts again from the fresh lists"),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "the scheduler restarts from a fresh list");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What became of a binding written in the background.
#[derive(Debug)]
enum BindOutcome {
    Bound,
    /// Not written: the pod is gone, ended or bound elsewhere (then `None`),
    /// or must be placed again (its latest version).
    Forget {
        key: PodKey,
        node: String,
        requeue: Option<Arc<Value>>,
    },
    /// Not written: the network driver has no address for the pod; it waits
    /// (set aside) until the cluster changes.
    Wait {
        key: PodKey,
        node: String,
        pod: Arc<Value>,
    },
}

/// What a cycle decided for one pod.
#[derive(Debug)]
enum Decision {
    Bind {
        pod: Arc<Value>,
        node: String,
    },
    /// No node can take it (`reason` `Unschedulable`), or an extension
    /// failed under `Fail` (`SchedulerError`).
    Wait {
        pod: Arc<Value>,
        reason: &'static str,
        message: String,
    },
}

/// How a life of the scheduler ended (other than in an error).
#[derive(Debug)]
enum Life {
    /// Nodes or pods were listed again (their follow fell behind the
    /// change log): the picture is built again from fresh lists.
    Relisted,
}

/// One life of the scheduler: list, follow nodes and pods
/// ([`crate::reflector::follow`]), schedule, until a follow lists again.
async fn schedule(
    store: &Store,
    plugins: &PluginRegistry,
    options: &SchedulerOptions,
    stats: &Arc<SchedulerStats>,
) -> anyhow::Result<Life> {
    let nodes = store.list(&NODE.store_key(), None).await?;
    let pods = store.list(&POD.store_key(), None).await?;
    let mut watches = Watches {
        nodes: Box::new(reflector::follow(store.clone(), &NODE, Some(nodes.revision))),
        pods: Box::new(reflector::follow(store.clone(), &POD, Some(pods.revision))),
        backlog: Vec::new(),
    };
    let mut cluster = Box::new(Cluster::new(&nodes.objects, pods.objects));
    let (outcomes, mut outcome_rx) = mpsc::unbounded_channel::<BindOutcome>();
    let in_flight = Arc::new(Semaphore::new(options.bindings_in_flight));
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if cluster.queue.active_len() == 0 && watches.backlog.is_empty() {
            tokio::select! {
                change = watches.nodes.next() => watches.backlog.push(Watched::Node(change)),
                change = watches.pods.next() => watches.backlog.push(Watched::Pod(change)),
                Some(outcome) = outcome_rx.recv() => cluster.on_outcome(outcome, stats),
                _ = retry.tick() => cluster.queue.retry_expired(Instant::now()),
            }
        }
        // Take in everything that is there already before deciding.
        watches.take_ready();
        for watched in watches.backlog.drain(..) {
            match watched {
                Watched::Node(Some(Event::Changed(change))) => cluster.on_node(&change),
                Watched::Pod(Some(Event::Changed(change))) => cluster.on_pod(&change),
                Watched::Node(Some(Event::Listed { .. })) | Watched::Pod(Some(Event::Listed { .. })) => return Ok(Life::Relisted),
                Watched::Node(None) | Watched::Pod(None) => return Err(StoreError::Closed.into()),
            }
        }
        while let Ok(outcome) = outcome_rx.try_recv() {
            cluster.on_outcome(outcome, stats);
        }
        // A scheduler extension added, replaced (a new version, an edited failure policy) or removed
        // may decide differently: pods waiting aside are tried again, as for a change of the cluster.
        let extensions: Vec<usize> = plugins.of_world(World::SchedulerExtension).iter().map(address).collect();
        if extensions != cluster.extensions_seen {
            cluster.extensions_seen = extensions;
            cluster.changed = true;
        }
        if std::mem::take(&mut cluster.changed) {
            cluster.queue.retry_all();
        }
        if cluster.queue.active_len() == 0 {
            continue;
        }
        let registry = plugins.clone();
        let batch = options.batch;
        let deciding = stats.clone();
        let cycle = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let decisions = cluster.cycle(&registry, batch);
            deciding.deciding_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            deciding.decisions.fetch_add(decisions.len() as u64, Ordering::Relaxed);
            (cluster, decisions)
        });
        let (returned, decisions) = watches.during(cycle).await.map_err(|e| anyhow::anyhow!("a scheduling cycle stopped: {e}"))?;
        cluster = returned;
        for decision in decisions {
            match decision {
                Decision::Bind { pod, node } => {
                    let permit = watches.during(in_flight.clone().acquire_owned()).await.expect("the semaphore is never closed");
                    let (store, outcomes, plugins) = (store.clone(), outcomes.clone(), plugins.clone());
                    tokio::spawn(async move {
                        let outcome = attach_and_bind(&store, &plugins, pod, node).await;
                        drop(permit);
                        let _ = outcomes.send(outcome);
                    });
                }
                Decision::Wait { pod, reason, message } => {
                    stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(report_unschedulable(store.clone(), pod, reason, message));
                }
            }
        }
    }
}

/// A follow of one kind ([`reflector::follow`]).
type Follow = Box<dyn futures::Stream<Item = Event> + Send + Unpin>;

/// The scheduler's follows of nodes and pods, and what they brought that
/// the cluster has not taken in yet.
struct Watches {
    nodes: Follow,
    pods: Follow,
    /// Events in the order they came (`None`: the follow ended: the store shut down).
    backlog: Vec<Watched>,
}

enum Watched {
    Node(Option<Event>),
    Pod(Option<Event>),
}

impl Watches {
    /// Moves what the watches hold already to the backlog.
    fn take_ready(&mut self) {
        let Watches { nodes, pods, backlog } = self;
        for (stream, watched) in [(nodes, Watched::Node as fn(_) -> Watched), (pods, Watched::Pod)] {
            while let Some(change) = stream.next().now_or_never() {
                let ended = change.is_none();
                backlog.push(watched(change));
                if ended {
                    break;
                }
            }
        }
    }

    /// Waits for `future` while keeping up with the watches: a cycle or a
    /// wait for a binding slot that left them alone would let the store's
    /// live changes run past them, and catching up from the change log
    /// costs far more than taking the changes as they come.
    async fn during<F: Future>(&mut self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut open = (true, true);
        loop {
            tokio::select! {
                biased;
                output = &mut future => return output,
                change = self.nodes.next(), if open.0 => {
                    open.0 = change.is_some();
                    self.backlog.push(Watched::Node(change));
                }
                change = self.pods.next(), if open.1 => {
                    open.1 = change.is_some();
                    self.backlog.push(Watched::Pod(change));
                }
            }
        }
    }
}

/// A pod counted on a node.
#[derive(Debug, Clone)]
struct Placed {
    node: String,
    requests: Resources,
    /// The pod as its node's summary lists it.
    reference: PodRef,
}

/// The scheduler's picture of the cluster.
struct Cluster {
    nodes: Vec<Candidate>,
    index: HashMap<String, usize>,
    /// Pods counted on a node, bound or being bound.
    placed: HashMap<PodKey, Placed>,
    /// Pods bound to nodes not (or no longer) registered, counted when the node comes.
    unknown_nodes: HashMap<String, Vec<PodKey>>,
    queue: SchedulingQueue,
    /// Extensions must be given a new snapshot.
    snapshot_stale: bool,
    /// Extension instances that have the current snapshot (by the address of their registry entry).
    informed: HashSet<usize>,
    /// The active extension instances when the queue last looked.
    extensions_seen: Vec<usize>,
    /// Something changed that may let pods waiting aside fit.
    changed: bool,
    /// Where the next pod's filtering starts, so that nodes share the work and the ties.
    next_start: usize,
}

fn key_of(object: &Value) -> PodKey {
    (object::namespace(object).unwrap_or_default().to_string(), object::name(object).unwrap_or_default().to_string())
}

fn being_deleted(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

impl Cluster {
    fn new(nodes: &[Value], pods: Vec<Value>) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            index: HashMap::new(),
            placed: HashMap::new(),
            unknown_nodes: HashMap::new(),
            queue: SchedulingQueue::default(),
            snapshot_stale: true,
            informed: HashSet::new(),
            extensions_seen: Vec::new(),
            changed: false,
            next_start: 0,
        };
        for node in nodes {
            cluster.upsert_node(node);
        }
        for pod in pods {
            let pod = Arc::new(pod);
            cluster.see_pod(&pod, None);
        }
        cluster.changed = false;
        cluster
    }

    /// Counts `key` on `node`.
    fn account(&mut self, key: PodKey, pod: &Value, node: &str) {
        self.account_requests(key, pod, node, pod_requests(pod));
    }

    /// [`Cluster::account`] with the pod's requests worked out already (a decision has them).
    fn account_requests(&mut self, key: PodKey, pod: &Value, node: &str, requests: Resources) {
        let reference = decision::pod_ref(pod);
        match self.index.get(node) {
            Some(&at) => decision::place(&mut self.nodes[at].summary, reference.clone(), &requests),
            None => self.unknown_nodes.entry(node.to_string()).or_default().push(key.clone()),
        }
        self.placed.insert(key, Placed { node: node.to_string(), requests, reference });
    }

    /// Stops counting `key` where it was counted.
    fn unaccount(&mut self, key: &PodKey) -> Option<Placed> {
        let placed = self.placed.remove(key)?;
        match self.index.get(&placed.node) {
            Some(&at) => {
                decision::unplace(&mut self.nodes[at].summary, &key.0, &key.1, &placed.requests);
            }
            None => {
                if let Some(keys) = self.unknown_nodes.get_mut(&placed.node) {
                    keys.retain(|k| k != key);
                }
            }
        }
        Some(placed)
    }

    fn upsert_node(&mut self, node: &Value) {
        let mut fresh = decision::candidate(node);
        let name = fresh.summary.name.clone();
        match self.index.get(&name) {
            Some(&at) => {
                let old = &self.nodes[at];
                let same = old.summary.labels == fresh.summary.labels
                    && old.summary.taints == fresh.summary.taints
                    && old.summary.allocatable == fresh.summary.allocatable
                    && old.summary.ready == fresh.summary.ready
                    && old.max_pods == fresh.max_pods
                    && old.cordoned == fresh.cordoned;
                if same {
                    return;
                }
                fresh.summary.requested = old.summary.requested;
                fresh.summary.pods = std::mem::take(&mut self.nodes[at].summary.pods);
                self.nodes[at] = fresh;
            }
            None => {
                self.index.insert(name.clone(), self.nodes.len());
                self.nodes.push(fresh);
                // Pods bound to it before it registered count now.
                let at = self.nodes.len() - 1;
                for key in self.unknown_nodes.remove(&name).unwrap_or_default() {
                    if let Some(placed) = self.placed.get(&key) {
                        decision::place(&mut self.nodes[at].summary, placed.reference.clone(), &placed.requests);
                    }
                }
            }
        }
        self.snapshot_stale = true;
        self.changed = true;
    }

    fn remove_node(&mut self, name: &str) {
        let Some(at) = self.index.remove(name) else { return };
        let removed = self.nodes.swap_remove(at);
        if let Some(moved) = self.nodes.get(at) {
            self.index.insert(moved.summary.name.clone(), at);
        }
        let keys = removed.summary.pods.iter().map(|p| (p.namespace.clone(), p.name.clone())).collect();
        self.unknown_nodes.insert(name.to_string(), keys);
        self.snapshot_stale = true;
    }

    fn on_node(&mut self, change: &Change) {
        match change.change_type {
            ChangeType::Deleted => self.remove_node(&change.key.name),
            ChangeType::Added | ChangeType::Modified => self.upsert_node(&change.object),
        }
    }

    fn on_pod(&mut self, change: &Change) {
        if change.change_type == ChangeType::Deleted {
            self.queue.remove(&(change.key.namespace.clone(), change.key.name.clone()));
            if self.unaccount(&(change.key.namespace.clone(), change.key.name.clone())).is_some() {
                self.snapshot_stale = true;
                self.changed = true;
            }
            return;
        }
        self.see_pod(&change.object, change.previous.as_deref());
    }

    /// Takes in the current version of a pod (and the one before, for a modification).
    fn see_pod(&mut self, pod: &Arc<Value>, previous: Option<&Value>) {
        let key = key_of(pod);
        if kapsel_api::kinds::pod::has_ended(pod) {
            self.queue.remove(&key);
            if self.unaccount(&key).is_some() {
                self.snapshot_stale = true;
                self.changed = true;
            }
            return;
        }
        if let Some(node) = kapsel_api::kinds::pod::bound_node(pod) {
            self.queue.remove(&key);
            match self.placed.get(&key) {
                Some(placed) if placed.node == node => {}
                Some(_) => {
                    self.unaccount(&key);
                    self.account(key, pod, node);
                    self.snapshot_stale = true;
                }
                None => {
                    self.account(key, pod, node);
                    self.snapshot_stale = true;
                }
            }
            return;
        }
        if self.placed.contains_key(&key) {
            // Its binding is being written; the outcome settles it.
            return;
        }
        if being_deleted(pod) || !schedules(pod) {
            self.queue.remove(&key);
            return;
        }
        let relevant_change = previous.is_some_and(|before| {
            before.get("spec") != pod.get("spec") || before.pointer("/metadata/labels") != pod.pointer("/metadata/labels")
        });
        if relevant_change && self.queue.is_unschedulable(&key) {
            self.queue.remove(&key);
        }
        self.queue.add(key, pod.clone());
    }

    fn on_outcome(&mut self, outcome: BindOutcome, stats: &SchedulerStats) {
        match outcome {
            BindOutcome::Bound => {
                stats.bound.fetch_add(1, Ordering::Relaxed);
            }
            BindOutcome::Forget { key, node, requeue } => {
                stats.forgotten.fetch_add(1, Ordering::Relaxed);
                if self.placed.get(&key).is_some_and(|p| p.node == node) {
                    self.unaccount(&key);
                    self.snapshot_stale = true;
                    self.changed = true;
                }
                if let Some(pod) = requeue {
                    self.queue.add(key, pod);
                }
            }
            BindOutcome::Wait { key, node, pod } => {
                stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                if self.placed.get(&key).is_some_and(|p| p.node == node) {
                    self.unaccount(&key);
                    self.snapshot_stale = true;
                }
                self.queue.set_aside(key, pod);
            }
        }
    }

    /// Decides up to `batch` pods of the queue.
    fn cycle(&mut self, registry: &PluginRegistry, batch: usize) -> Vec<Decision> {
        let extensions = registry.of_world(World::SchedulerExtension);
        self.inform(registry, &extensions);
        let mut decisions = Vec::with_capacity(batch.min(self.queue.active_len()));
        while decisions.len() < batch {
            let Some((key, pod)) = self.queue.pop() else { break };
            let decision = self.decide(registry, &extensions, key.clone(), pod);
            if let Decision::Wait { pod, .. } = &decision {
                self.queue.set_aside(key, pod.clone());
            }
            decisions.push(decision);
        }
        decisions
    }

    /// Gives the node snapshot to every extension that lacks the current one.
    fn inform(&mut self, registry: &PluginRegistry, extensions: &[Arc<ActivePlugin>]) {
        if std::mem::take(&mut self.snapshot_stale) {
            self.informed.clear();
        }
        let uninformed: Vec<&Arc<ActivePlugin>> = extensions.iter().filter(|e| !self.informed.contains(&address(e))).collect();
        if uninformed.is_empty() {
            return;
        }
        let snapshot: Vec<NodeSummary> = self.nodes.iter().map(|c| c.summary.clone()).collect();
        for extension in uninformed {
            let nodes = snapshot.clone();
            let outcome = registry.invoke_blocking(extension, "taking the node snapshot", |hosted| match hosted {
                Hosted::Scheduler(scheduler) => scheduler.update_nodes(nodes),
                _ => Err(not_a_scheduler()),
            });
            if let Err(failure) = outcome {
                tracing::warn!(plugin = %failure.plugin, error = %failure.error, "a scheduler extension did not take the node snapshot");
            }
            // A fresh instance is given the host's copy of the snapshot anyway.
            self.informed.insert(address(extension));
        }
    }

    /// The decision for one pod; a pod placed is counted on its node at once.
    fn decide(&mut self, registry: &PluginRegistry, extensions: &[Arc<ActivePlugin>], key: PodKey, pod: Arc<Value>) -> Decision {
        let summary = pod_summary(&pod);
        let total = self.nodes.len();
        if total == 0 {
            return Decision::Wait { pod, reason: "Unschedulable", message: unschedulable_message(0, &BTreeMap::new()) };
        }
        let want = nodes_to_score(total);
        let start = self.next_start % total;
        let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible: Vec<u32> = Vec::with_capacity(want);
        let mut examined = 0;
        while feasible.len() < want && examined < total {
            let mut chunk = Vec::new();
            while chunk.len() + feasible.len() < want && examined < total {
                let at = (start + examined) % total;
                examined += 1;
                match decision::rejection(&summary, None, &self.nodes[at]) {
                    None => chunk.push(at as u32),
                    Some(reason) => *rejected.entry(reason).or_default() += 1,
                }
            }
            for extension in extensions {
                if chunk.is_empty() {
                    break;
                }
                let (asked, candidates) = (&summary, &chunk);
                let operation = format!("filtering nodes for pod {}/{}", key.0, key.1);
                let filtered = match registry.invoke_blocking(extension, operation, |hosted| match hosted {
                    Hosted::Scheduler(scheduler) => scheduler.filter(asked, candidates),
                    _ => Err(not_a_scheduler()),
                }) {
                    Ok(Some(filtered)) => filtered,
                    Ok(None) => continue,
                    Err(failure) => return Decision::Wait { pod, reason: "SchedulerError", message: failure.to_string() },
                };
                narrow(&mut chunk, filtered, &extension.name, &mut rejected);
            }
            feasible.extend(chunk);
        }
        self.next_start = (start + examined) % total;
        if feasible.is_empty() {
            return Decision::Wait { pod, reason: "Unschedulable", message: unschedulable_message(total, &rejected) };
        }
        let best = match self.best(registry, extensions, &summary, &key, &feasible) {
            Ok(best) => best,
            Err(message) => return Decision::Wait { pod, reason: "SchedulerError", message },
        };
        let node = self.nodes[best as usize].summary.name.clone();
        self.account_requests(key, &pod, &node, summary.requests);
        for extension in extensions {
            let operation = format!("learning that pod {}/{} was bound", summary.namespace, summary.name);
            let asked = &summary;
            if let Err(failure) = registry.invoke_blocking(extension, operation, |hosted| match hosted {
                Hosted::Scheduler(scheduler) => scheduler.pod_bound(asked, best),
                _ => Err(not_a_scheduler()),
            }) {
                tracing::warn!(plugin = %failure.plugin, error = %failure.error, "a scheduler extension missed a binding; it gets a new snapshot");
                self.informed.remove(&address(extension));
            }
        }
        Decision::Bind { pod, node }
    }

    /// The best of `feasible`: the built-in least-allocated score plus every
    /// extension's score times its weight; the first of equals wins.
    fn best(
        &self,
        registry: &PluginRegistry,
        extensions: &[Arc<ActivePlugin>],
        pod: &PodSummary,
        key: &PodKey,
        feasible: &[u32],
    ) -> Result<u32, String> {
        if let [only] = feasible {
            return Ok(*only);
        }
        let mut totals: Vec<u64> =
            feasible.iter().map(|&at| u64::from(decision::least_allocated(pod, &self.nodes[at as usize].summary))).collect();
        for extension in extensions {
            let operation = format!("scoring nodes for pod {}/{}", key.0, key.1);
            let scores = match registry.invoke_blocking(extension, operation, |hosted| match hosted {
                Hosted::Scheduler(scheduler) => scheduler.score(pod, feasible),
                _ => Err(not_a_scheduler()),
            }) {
                Ok(Some(scores)) => scores,
                Ok(None) => continue,
                Err(failure) => return Err(failure.to_string()),
            };
            let mut scores = scores;
            scores.sort_unstable_by_key(|(index, _)| *index);
            for (total, index) in totals.iter_mut().zip(feasible) {
                let score = scores.binary_search_by_key(index, |(i, _)| *i).map_or(0, |at| scores[at].1).min(100);
                *total += u64::from(score) * u64::from(extension.weight);
            }
        }
        let (best, _) =
            totals.iter().enumerate().fold((0, 0), |(best, top), (i, &total)| if total > top { (i, total) } else { (best, top) });
        Ok(feasible[best])
    }
}

/// Keeps the `candidates` an extension's `filter` found feasible and counts
/// the others in `rejected` under the plug-in's reason (`no verdict` for a
/// candidate it named in neither list; one named in both is rejected).
fn narrow(candidates: &mut Vec<u32>, filtered: FilterResult, plugin: &str, rejected: &mut BTreeMap<String, usize>) {
    if filtered.rejected.is_empty() && filtered.feasible == *candidates {
        // Every candidate, as asked: the usual answer.
        return;
    }
    // Sorted, each candidate is found by a binary search.
    let (mut feasible, mut refused) = (filtered.feasible, filtered.rejected);
    feasible.sort_unstable();
    refused.sort_unstable_by_key(|r| r.index);
    candidates.retain(|index| {
        let reason = match refused.binary_search_by_key(index, |r| r.index) {
            Ok(at) => refused[at].reason.as_str(),
            Err(_) if feasible.binary_search(index).is_ok() => return true,
            Err(_) => "no verdict",
        };
        *rejected.entry(format!("rejected by plug-in {plugin}: {reason}")).or_default() += 1;
        false
    });
}

/// The identity of an extension instance in the registry.
fn address(plugin: &Arc<ActivePlugin>) -> usize {
    Arc::as_ptr(plugin) as usize
}

fn not_a_scheduler() -> PluginError {
    PluginError::Rejected("not a scheduler extension".into())
}

/// Sets the pod's `PodScheduled` condition (keeping its transition time when the status stays).
fn set_scheduled_condition(pod: &mut Value, status: &str, reason: &str, message: &str) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let status_object = &mut pod["status"];
    if status_object.get("phase").is_none() {
        status_object["phase"] = json!("Pending");
    }
    if !status_object.get("conditions").is_some_and(Value::is_array) {
        status_object["conditions"] = json!([]);
    }
    let conditions = status_object["conditions"].as_array_mut().expect("just made an array");
    let mut condition = json!({"type": "PodScheduled", "status": status, "lastProbeTime": null});
    if !reason.is_empty() {
        condition["reason"] = json!(reason);
        condition["message"] = json!(message);
    }
    match conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled")) {
        Some(existing) => {
            if existing.get("status").and_then(Value::as_str) == Some(status) {
                condition["lastTransitionTime"] = existing.get("lastTransitionTime").cloned().unwrap_or(Value::Null);
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

/// Gives `pod` its address from the network driver (`crate::pod_network`)
/// and binds it with it; a pod the driver has no address for waits, set
/// aside with `PodScheduled=False` (`NetworkUnavailable`) until the cluster
/// changes, and an address given to a pod whose binding was not written is
/// given back.
async fn attach_and_bind(store: &Store, plugins: &PluginRegistry, pod: Arc<Value>, node: String) -> BindOutcome {
    let key = key_of(&pod);
    let address = match crate::pod_network::attach(plugins, &pod).await {
        Ok(address) => address,
        Err(message) => {
            report_unschedulable(store.clone(), pod.clone(), crate::pod_network::NETWORK_UNAVAILABLE, message).await;
            return BindOutcome::Wait { key, node, pod };
        }
    };
    let outcome = bind(store, pod.clone(), node, address.as_deref()).await;
    if address.is_some()
        && !matches!(outcome, BindOutcome::Bound)
        && let Some(uid) = object::meta_str(&pod, "uid")
    {
        crate::pod_network::detach(plugins, &key.0, uid).await;
    }
    outcome
}

/// Writes the binding of `pod` to `node` — `spec.nodeName`, `PodScheduled`
/// and the pod's `address` from the network driver, guarded by the pod's
/// revision — then a `Scheduled` Event. On a conflict the pod is read again
/// and, if it is still unbound, bound with its new version.
async fn bind(store: &Store, mut pod: Arc<Value>, node: String, address: Option<&str>) -> BindOutcome {
    let key = key_of(&pod);
    let store_key = Key::new(POD.store_key(), key.0.clone(), key.1.clone());
    let forget = |requeue: Option<Arc<Value>>| BindOutcome::Forget { key: key.clone(), node: node.clone(), requeue };
    for _ in 0..5 {
        let mut bound = (*pod).clone();
        bound["spec"]["nodeName"] = json!(node);
        set_scheduled_condition(&mut bound, "True", "", "");
        if let Some(address) = address
            && let Some(status) = bound.get_mut("status").and_then(Value::as_object_mut)
        {
            status.insert("podIP".into(), json!(address));
            status.insert("podIPs".into(), json!([{"ip": address}]));
        }
        let message = format!("Successfully assigned {}/{} to {node}", key.0, key.1);
        let expected_revision = object::resource_version(&pod).and_then(Result::ok);
        // The event follows the binding (one write each keeps the group commit's batches plain).
        let (event_key, event) = events::first_event(&bound, EventType::Normal, "Scheduled", &message);
        let written = store.write(WriteOp::Update { key: store_key.clone(), object: bound, expected_revision }).await;
        if let Ok(changes) = &written
            && let Some(bound) = changes.first()
            && let Err(StoreError::AlreadyExists) = store.create(event_key, event).await
        {
            // The pod's name was used before and its event is still there: count this one in it.
            events::record(store, &bound.object, EventType::Normal, "Scheduled", &message).await;
        }
        match written {
            Ok(_) => return BindOutcome::Bound,
            Err(StoreError::Conflict { .. }) => {}
            Err(StoreError::NotFound) => return forget(None),
            Err(error) => {
                tracing::warn!(pod = %format!("{}/{}", key.0, key.1), %node, error = &error as &dyn std::error::Error, "a binding was not written; the pod is placed again");
                return forget(Some(pod));
            }
        }
        // Changed since it was read: bind its new version if it still waits.
        match store.get(&store_key).await {
            Ok(current) => {
                if kapsel_api::kinds::pod::has_ended(&current)
                    || being_deleted(&current)
                    || kapsel_api::kinds::pod::bound_node(&current).is_some()
                {
                    return forget(None);
                }
                pod = Arc::new(current);
            }
            Err(_) => return forget(None),
        }
    }
    forget(Some(pod))
}

/// Records why a pod waits: its `PodScheduled` condition (written when its
/// message changes) and a `FailedScheduling` Event.
async fn report_unschedulable(store: Store, pod: Arc<Value>, reason: &'static str, message: String) {
    let current = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled")));
    let unchanged = current.is_some_and(|c| {
        c.get("status").and_then(Value::as_str) == Some("False")
            && c.get("reason").and_then(Value::as_str) == Some(reason)
            && c.get("message").and_then(Value::as_str) == Some(message.as_str())
    });
    if unchanged {
        return;
    }
    let mut waiting = (*pod).clone();
    set_scheduled_condition(&mut waiting, "False", reason, &message);
    let key = key_of(&pod);
    let expected_revision = object::resource_version(&pod).and_then(Result::ok);
    match store.update(Key::new(POD.store_key(), key.0, key.1), waiting, expected_revision).await {
        // The pod changed meanwhile: its next attempt reports again.
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound) => {}
        Err(error) => tracing::warn!(error = &error as &dyn std::error::Error, "could not record why a pod waits"),
    }
    events::record(&store, &pod, EventType::Warning, "FailedScheduling", &message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi"}, "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(name: &str, cpu: &str, node: Option<&str>) -> Value {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "dev"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}});
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        pod
    }

    fn change(change_type: ChangeType, object: Value) -> Change {
        let key = Key::new("pods", object::namespace(&object).unwrap_or_default(), object::name(&object).unwrap_or_default());
        Change { revision: 1, change_type, key, object: Arc::new(object), previous: None }
    }

    #[test]
    fn pods_bound_before_their_node_registers_count_when_it_does() {
        let mut cluster = Cluster::new(&[node("a", "4")], vec![pod("early", "3", Some("b")), pod("waiting", "1", None)]);
        assert_eq!(cluster.queue.active_len(), 1);
        assert!(!cluster.index.contains_key("b"));
        cluster.upsert_node(&node("b", "4"));
        let b = cluster.index["b"];
        assert_eq!(cluster.nodes[b].summary.requested.cpu_millicores, 3000);
        assert!(cluster.changed && cluster.snapshot_stale);

        // A rewrite that changes nothing the scheduler uses is not a change.
        cluster.changed = false;
        let mut same = node("b", "4");
        same["metadata"]["annotations"] = json!({"note": "x"});
        cluster.upsert_node(&same);
        assert!(!cluster.changed);

        // The pod ends: its node is free again, and pods waiting aside are retried.
        let mut ended = pod("early", "3", Some("b"));
        ended["status"] = json!({"phase": "Succeeded"});
        cluster.on_pod(&change(ChangeType::Modified, ended));
        assert_eq!(cluster.nodes[b].summary.requested.cpu_millicores, 0);
        assert!(cluster.changed);

        // Removing a node keeps the index of the others right.
        cluster.remove_node("a");
        assert_eq!(cluster.index["b"], 0);
        assert_eq!(cluster.nodes[0].summary.name, "b");
    }

    #[test]
    fn pods_of_another_scheduler_are_left_alone() {
        let mut theirs = pod("theirs", "1", None);
        theirs["spec"]["schedulerName"] = json!("batch-scheduler");
        let mut kubernetes = pod("kubernetes", "1", None);
        kubernetes["spec"]["schedulerName"] = json!("default-scheduler");
        let cluster = Cluster::new(&[node("a", "4")], vec![theirs, kubernetes, pod("ours", "1", None)]);
        assert_eq!(cluster.queue.active_len(), 2);
    }

    #[test]
    fn an_unschedulable_pod_waits_aside_until_its_spec_changes() {
        let mut cluster = Cluster::new(&[node("a", "1")], vec![]);
        let big = pod("big", "2", None);
        cluster.on_pod(&change(ChangeType::Added, big.clone()));
        let (key, queued) = cluster.queue.pop().expect("queued");
        cluster.queue.set_aside(key.clone(), queued);
        // Our own status write comes back as a modification: it stays aside.
        let mut reported = big.clone();
        reported["status"] = json!({"phase": "Pending"});
        let mut status_change = change(ChangeType::Modified, reported.clone());
        status_change.previous = Some(Arc::new(big.clone()));
        cluster.on_pod(&status_change);
        assert!(cluster.queue.is_unschedulable(&key));
        // Its owner asks for less: it is tried again.
        let mut smaller = reported.clone();
        smaller["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("500m");
        let mut spec_change = change(ChangeType::Modified, smaller);
        spec_change.previous = Some(Arc::new(reported));
        cluster.on_pod(&spec_change);
        assert!(!cluster.queue.is_unschedulable(&key));
        assert_eq!(cluster.queue.active_len(), 1);
    }

    #[test]
    fn an_extensions_filter_narrows_the_candidates_and_says_why() {
        use kapsel_plugins::scheduler::NodeRejection;
        let reject = |index, reason: &str| NodeRejection { index, reason: reason.to_string() };
        let mut rejected = BTreeMap::new();
        let mut all = vec![1, 2, 3];
        narrow(&mut all, FilterResult { feasible: vec![1, 2, 3], rejected: vec![] }, "spread", &mut rejected);
        assert_eq!((all, rejected.len()), (vec![1, 2, 3], 0));

        // Any order; a candidate in neither list has no verdict; one in both is rejected.
        let mut candidates = vec![1, 2, 3, 4, 5];
        let filtered = FilterResult { feasible: vec![5, 1, 4], rejected: vec![reject(4, "zone full"), reject(2, "zone full")] };
        narrow(&mut candidates, filtered, "spread", &mut rejected);
        assert_eq!(candidates, [1, 5]);
        assert_eq!(
            rejected,
            BTreeMap::from([
                ("rejected by plug-in spread: no verdict".to_string(), 1),
                ("rejected by plug-in spread: zone full".to_string(), 2)
            ])
        );
    }

    #[test]
    fn the_scheduled_condition_keeps_its_transition_time_while_its_status_stays() {
        let mut pod = pod("p", "1", None);
        set_scheduled_condition(&mut pod, "False", "Unschedulable", "0/1 nodes are available: 1 Insufficient cpu.");
        pod["status"]["conditions"][0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        set_scheduled_condition(&mut pod, "False", "Unschedulable", "0/2 nodes are available: 2 Insufficient cpu.");
        assert_eq!(pod["status"]["conditions"][0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(pod["status"]["phase"], "Pending");
        set_scheduled_condition(&mut pod, "True", "", "");
        let condition = &pod["status"]["conditions"][0];
        assert_eq!(condition["status"], "True");
        assert_ne!(condition["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert!(condition.get("reason").is_none());
        assert_eq!(pod["status"]["conditions"].as_array().map(Vec::len), Some(1));
    }
}
