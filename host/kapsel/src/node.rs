//! `kapsel node`: the node agent, a host's member of the pool (Kubernetes'
//! kubelet, vSphere's spherelet). `kapsel serve` runs one in-process for its
//! own host; `kapsel node --server URL --token T` runs one anywhere else.
//!
//! It registers its `Node` (capacity and allocatable resources, labels,
//! taints, addresses, agent version, `Ready`), then renews the lease named
//! after it in `kube-node-lease` every `--lease-interval` (2 s): a small
//! write the supervisor's node lifecycle controller reads, instead of a
//! rewrite of the whole `Node`. It authenticates with a node token, which
//! lets it change only its own `Node`, its lease and the status of the pods
//! bound to it.
//!
//!
//! It lists and then watches the pods bound to it
//! (`fieldSelector=spec.nodeName=NAME`) and runs each on the Wasm runtime of
//! `kapsel-node` ([`kapsel_node::PodWorker`]): images are resolved through
//! the pod's namespace's `Artifact` and fetched by digest from the
//! supervisor once (then compiled and cached on disk), and every change of
//! the pod's status is sent back as a merge patch of `pods/{name}/status`
//! (the scheduler's `PodScheduled` condition kept). A pod deleted, or one the
//! supervisor marked `Failed` (its node was lost), is stopped. A restarted
//! agent runs again the pods bound to it that have not ended.
//!
//! Logs: the agent serves its containers' logs over HTTP on `--listen`
//! (`GET /pods/{uid}/containers/{name}/log?tailLines&previous&follow&timestamps`),
//! to whoever presents the secret it draws at start. It publishes that
//! endpoint and secret as annotations of its lease
//! (`kapsel.io/agent-endpoint`, `kapsel.io/agent-secret`), which only IT admins and the node itself may
//! read; the supervisor's `GET …/pods/{name}/log` reads them and relays the
//! log (plain HTTP: bind the agent to an address only the supervisor
//! reaches; TLS between them is not built yet).
//!
//! Deleting a pod that runs here is graceful: the supervisor marks it
//! (`deletionTimestamp`), the agent stops it within its grace period and
//! then deletes the object.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use kapsel_api::Quantity;
use kapsel_api::kinds::artifact::{ARTIFACT, ArtifactSpec, ImageReference};
use kapsel_api::kinds::lease::{AGENT_ENDPOINT_ANNOTATION, AGENT_SECRET_ANNOTATION, NODE_LEASE_NAMESPACE};
use kapsel_api::object;
use kapsel_node::{PodWorker, Runtime, RuntimeConfig};
use serde_json::{Value, json};

use crate::client::{ApiFailure, Client};

/// `kapsel node` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The node's name (default: this host's name).
    #[arg(long)]
    pub name: Option<String>,
    /// What the node offers, as `cpu=4,memory=8Gi,pods=110` (default: this host's CPUs and memory, 110 pods).
    #[arg(long)]
    pub capacity: Option<String>,
    /// Node labels, as `zone=a,disk=ssd`.
    #[arg(long)]
    pub labels: Option<String>,
    /// A taint, as `key=value:NoSchedule` (repeatable; effects NoSchedule, PreferNoSchedule, NoExecute).
    #[arg(long = "taint")]
    pub taints: Vec<String>,
    /// The agent's directory (compiled images, pod logs).
    #[arg(long, default_value = "./kapsel-node")]
    pub data_dir: PathBuf,
    /// Where the agent serves its containers' logs to the supervisor (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub listen: std::net::SocketAddr,
    /// The address the supervisor reaches this agent at (default: the listen address, or, when that
    /// is unspecified, this host's address on the route to the supervisor).
    #[arg(long)]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Seconds between lease renewals (the supervisor counts a node lost after 10 s without one).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub lease_interval: u64,
}

/// What an agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub capacity: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Value>,
    pub data_dir: PathBuf,
    pub lease_interval: Duration,
    pub listen: std::net::SocketAddr,
    pub advertise_address: Option<std::net::IpAddr>,
}

impl AgentConfig {
    /// The configuration `flags` describe, with this host's defaults.
    pub fn from_args(flags: NodeArgs) -> anyhow::Result<AgentConfig> {
        let name = match flags.name {
            Some(name) => name,
            None => host_name()?,
        };
        kapsel_api::validation::dns1123_subdomain(&name).map_err(|e| anyhow::anyhow!("--name {name:?}: {e}"))?;
        let mut capacity = host_capacity();
        if let Some(text) = &flags.capacity {
            for (resource, value) in pairs(text, "--capacity")? {
                if !matches!(resource.as_str(), "cpu" | "memory" | "pods" | "ephemeral-storage") {
                    bail!("--capacity: unknown resource {resource:?} (known: cpu, memory, pods, ephemeral-storage)");
                }
                Quantity::parse(&value).map_err(|e| anyhow::anyhow!("--capacity {resource}={value}: {e}"))?;
                capacity.insert(resource, value);
            }
        }
        let labels = match &flags.labels {
            Some(text) => pairs(text, "--labels")?.into_iter().collect(),
            None => BTreeMap::new(),
        };
        let taints = flags.taints.iter().map(|t| taint(t)).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(AgentConfig {
            name,
            capacity,
            labels,
            taints,
            data_dir: flags.data_dir,
            lease_interval: Duration::from_secs(flags.lease_interval),
            listen: flags.listen,
            advertise_address: flags.advertise_address,
        })
    }

    /// The embedded agent of `kapsel serve`: this host, its defaults.
    pub fn local(name: String, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            name,
            capacity: host_capacity(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            data_dir,
            lease_interval: Duration::from_secs(2),
            // The supervisor is in this process: loopback, any port.
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_address: None,
        }
    }
}

/// `a=1,b=2` as pairs.
fn pairs(text: &str, flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
            _ => bail!("{flag}: {item:?} is not key=value"),
        })
        .collect()
}

/// `key=value:Effect` (or `key:Effect`) as a taint object.
fn taint(text: &str) -> anyhow::Result<Value> {
    let Some((key_value, effect)) = text.rsplit_once(':') else { bail!("--taint {text:?}: expected key=value:Effect") };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        bail!("--taint {text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute");
    }
    let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
    if key.is_empty() {
        bail!("--taint {text:?}: the key is empty");
    }
    Ok(json!({"key": key, "value": value, "effect": effect}))
}

/// This host's name, as a node name (lower case).
pub fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .context("reading the host name (pass --name)")?;
    let name = name.trim().to_ascii_lowercase();
    anyhow::ensure!(!name.is_empty(), "the host name is empty (pass --name)");
    Ok(name)
}

/// This host's CPUs and memory, and Kubernetes' default of 110 pods.
fn host_capacity() -> BTreeMap<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    let mut capacity = BTreeMap::from([("cpu".to_string(), cpus.to_string()), ("pods".to_string(), "110".to_string())]);
    if let Some(kib) = memory_kib {
        capacity.insert("memory".into(), format!("{kib}Ki"));
    }
    capacity
}

fn not_found(error: &anyhow::Error) -> bool {
    error.downcast_ref::<ApiFailure>().is_some_and(|f| f.status.code == 404)
}

fn conflict(error: &anyhow::Error) -> bool {
    error.downcast_ref::<ApiFailure>().is_some_and(|f| f.status.code == 409)
}

fn now_micros() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Where the agent serves logs, and the secret it asks for.
#[derive(Debug, Clone)]
struct LogEndpoint {
    address: std::net::SocketAddr,
    secret: String,
}

/// The status the agent reports for its node.
fn node_status(config: &AgentConfig, endpoint: &LogEndpoint) -> Value {
    let now = now_micros();
    json!({
        "capacity": config.capacity,
        "allocatable": config.capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "NodeAgentReady",
                        "message": "kapsel node agent is ready", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": endpoint.address.ip().to_string()}, {"type": "Hostname", "address": config.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": endpoint.address.port()}},
        "nodeInfo": {
            "kubeletVersion": concat!("kapsel-", env!("CARGO_PKG_VERSION")),
            "containerRuntimeVersion": "wasmtime://48",
            "operatingSystem": std::env::consts::OS,
            "architecture": std::env::consts::ARCH,
            "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
            "machineID": "", "systemUUID": "", "bootID": "",
        },
    })
}

/// Creates the node, or brings an existing one up to date (its labels,
/// taints and status; a cordon set by IT stays).
async fn register(client: &Client, config: &AgentConfig, endpoint: &LogEndpoint) -> anyhow::Result<()> {
    let path = format!("/api/v1/nodes/{}", config.name);
    match client.get(&path).await {
        Ok(mut node) => {
            node["metadata"]["labels"] = json!(config.labels);
            node["spec"]["taints"] = json!(config.taints);
            let updated = client.put(&path, &node).await.context("updating the node")?;
            let mut with_status = updated;
            with_status["status"] = node_status(config, endpoint);
            client.put(&format!("{path}/status"), &with_status).await.context("reporting the node's status")?;
        }
        Err(error) if not_found(&error) => {
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": config.name, "labels": config.labels},
                "spec": {"taints": config.taints},
                "status": node_status(config, endpoint),
            });
            client.post("/api/v1/nodes", &node).await.context("registering the node")?;
        }
        Err(error) => return Err(error).context("reading the node"),
    }
    Ok(())
}

/// Renews (or takes) the node's lease; returns the lease as stored.
async fn renew(client: &Client, config: &AgentConfig, endpoint: &LogEndpoint, last: Option<Value>) -> anyhow::Result<Value> {
    let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases");
    let path = format!("{collection}/{}", config.name);
    let duration = (config.lease_interval.as_secs() * 5).max(10);
    let spec = json!({"holderIdentity": config.name, "leaseDurationSeconds": duration, "renewTime": now_micros()});
    let annotations = json!({AGENT_ENDPOINT_ANNOTATION: format!("http://{}", endpoint.address), AGENT_SECRET_ANNOTATION: endpoint.secret});
    if let Some(mut lease) = last {
        lease["spec"] = spec.clone();
        lease["metadata"]["annotations"] = annotations.clone();
        match client.put(&path, &lease).await {
            Ok(renewed) => return Ok(renewed),
            // Someone else wrote it (an admin, a second agent by mistake): read it again below.
            Err(error) if conflict(&error) || not_found(&error) => {}
            Err(error) => return Err(error),
        }
    }
    match client.get(&path).await {
        Ok(mut lease) => {
            lease["spec"] = spec;
            lease["metadata"]["annotations"] = annotations;
            client.put(&path, &lease).await
        }
        Err(error) if not_found(&error) => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": config.name, "namespace": NODE_LEASE_NAMESPACE, "annotations": annotations}, "spec": spec});
            client.post(&collection, &lease).await
        }
        Err(error) => Err(error),
    }
}

/// Runs the agent until `stopping` turns true: registers (retrying until
/// the supervisor answers), then renews the lease.
pub async fn run(client: Client, config: AgentConfig, mut stopping: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let runtime = Runtime::new(RuntimeConfig::new(config.data_dir.clone())).context("starting the Wasm runtime")?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {} for logs", config.listen))?;
    let bound = listener.local_addr()?;
    let ip = match config.advertise_address {
        Some(ip) => ip,
        None if !bound.ip().is_unspecified() => bound.ip(),
        None => route_to(client.base()).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    let endpoint = LogEndpoint { address: std::net::SocketAddr::new(ip, bound.port()), secret: new_secret() };
    tokio::spawn(serve_logs(listener, runtime.logs().clone(), endpoint.secret.clone(), stopping.clone()));
    let mut delay = Duration::from_millis(100);
    loop {
        match register(&client, &config, &endpoint).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(node = %config.name, error = format!("{error:#}"), "registering the node failed; trying again");
                tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!(node = %config.name, capacity = ?config.capacity, logs = %endpoint.address, "node registered");
    tokio::spawn(sync_pods(client.clone(), config.name.clone(), runtime, stopping.clone()));
    let mut ticker = tokio::time::interval(config.lease_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease = None;
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            _ = ticker.tick() => {}
        }
        match renew(&client, &config, &endpoint, lease.take()).await {
            Ok(renewed) => lease = Some(renewed),
            Err(error) => tracing::warn!(node = %config.name, error = format!("{error:#}"), "renewing the node lease failed"),
        }
    }
}

/// The supervisor's artifact store as the runtime's image source: an
/// image is resolved through its namespace's `Artifact`, and its bytes are
/// fetched through that artifact (which the node token may read).
#[derive(Debug)]
struct ArtifactImages {
    client: Client,
    /// Which artifact each resolved digest came from.
    sources: Mutex<HashMap<String, (String, String)>>,
}

#[async_trait::async_trait]
impl kapsel_node::Images for ArtifactImages {
    async fn resolve(&self, namespace: &str, image: &str) -> anyhow::Result<String> {
        let reference = ImageReference::parse(image).map_err(anyhow::Error::msg)?;
        let path = format!("{}/{}", ARTIFACT.collection_path(Some(namespace)), reference.name());
        let artifact = match self.client.get(&path).await {
            Ok(artifact) => artifact,
            Err(error) if not_found(&error) => bail!("image {image:?} not found in namespace {namespace:?}"),
            Err(error) => return Err(error),
        };
        let spec: ArtifactSpec =
            serde_json::from_value(artifact.get("spec").cloned().unwrap_or_default()).context("reading the artifact")?;
        let digest = spec.resolve(&reference).with_context(|| format!("image {image:?} not found in namespace {namespace:?}"))?.to_string();
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), (namespace.to_string(), reference.name().to_string()));
        Ok(digest)
    }

    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let source = self.sources.lock().unwrap_or_else(|p| p.into_inner()).get(digest).cloned();
        let (namespace, name) = source.with_context(|| format!("no artifact is known to hold {digest}"))?;
        self.client.get_bytes(&format!("{}/{name}/blobs/{digest}", ARTIFACT.collection_path(Some(&namespace)))).await
    }
}

/// A pod this node runs.
struct Running {
    worker: Arc<PodWorker>,
    /// Sends the worker's status to the supervisor.
    reporter: tokio::task::JoinHandle<()>,
    /// Records the worker's events (Pulled, Started, BackOff, Killing…) as Events.
    recorder: tokio::task::JoinHandle<()>,
}

/// Records a pod's events as Kubernetes Events, aggregated per pod and
/// reason as the supervisor's are (`<pod>.pod.<reason>`, a `count`).
async fn record_events(client: Client, pod: Value, mut events: tokio::sync::broadcast::Receiver<kapsel_node::PodEvent>) {
    let namespace = object::namespace(&pod).unwrap_or_default().to_string();
    let name = object::name(&pod).unwrap_or_default().to_string();
    let collection = format!("/api/v1/namespaces/{namespace}/events");
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let event_name = format!("{name}.pod.{}", event.reason.to_ascii_lowercase());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let path = format!("{collection}/{event_name}");
        let recorded = match client.get(&path).await {
            Ok(mut existing) => {
                let count = existing.get("count").and_then(Value::as_i64).unwrap_or(1);
                existing["count"] = json!(count + 1);
                existing["lastTimestamp"] = json!(now);
                existing["message"] = json!(event.message);
                client.put(&path, &existing).await
            }
            Err(error) if not_found(&error) => {
                let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": namespace,
                    "uid": object::meta_str(&pod, "uid").unwrap_or_default()});
                if let Some(field_path) = &event.field_path {
                    involved["fieldPath"] = json!(field_path);
                }
                let created = json!({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": event_name, "namespace": namespace},
                    "involvedObject": involved, "reason": event.reason, "message": event.message, "type": event.kind.as_str(),
                    "count": 1, "firstTimestamp": now, "lastTimestamp": now,
                    "source": {"component": "kapsel-node", "host": pod.pointer("/spec/nodeName").cloned().unwrap_or_default()},
                    "reportingComponent": "kapsel-node"});
                client.post(&collection, &created).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            tracing::debug!(pod = %name, reason = event.reason, error = format!("{error:#}"), "an event was not recorded");
        }
    }
}

fn terminal(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

fn pod_status_path(pod: &Value) -> String {
    format!("/api/v1/namespaces/{}/pods/{}/status", object::namespace(pod).unwrap_or_default(), object::name(pod).unwrap_or_default())
}

/// Sends every change of a pod's status as a merge patch, keeping the
/// scheduler's `PodScheduled` condition; ends when the pod is gone.
async fn report(client: Client, pod: Value, mut status: tokio::sync::watch::Receiver<Value>) {
    let path = pod_status_path(&pod);
    let scheduled = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled")).cloned());
    loop {
        let mut next = status.borrow_and_update().clone();
        if let (Some(scheduled), Some(conditions)) = (&scheduled, next.get_mut("conditions").and_then(Value::as_array_mut)) {
            conditions.insert(0, scheduled.clone());
        }
        match client.merge_patch(&path, &json!({"status": next})).await {
            Ok(_) => {}
            Err(error) if not_found(&error) => return,
            Err(error) => {
                tracing::warn!(pod = %path, error = format!("{error:#}"), "reporting a pod's status failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// The pods this node runs, by uid.
struct PodSync {
    client: Client,
    runtime: Runtime,
    images: Arc<ArtifactImages>,
    running: HashMap<String, Running>,
}

impl PodSync {
    /// Starts `pod` unless it runs here already, has ended or is being deleted;
    /// stops one the supervisor marked ended while it runs here.
    fn take(&mut self, pod: &Value) {
        let uid = object::meta_str(pod, "uid").unwrap_or_default().to_string();
        if pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
            self.finish_deletion(pod, &uid);
            return;
        }
        if let Some(running) = self.running.get(&uid) {
            if terminal(pod) && !running.worker.phase().is_terminal() {
                tracing::warn!(pod = %pod_status_path(pod), "the supervisor ended a pod this node runs; stopping it");
                self.stop(&uid, false);
            }
            return;
        }
        if terminal(pod) {
            return;
        }
        let worker = Arc::new(PodWorker::start(self.runtime.clone(), self.images.clone(), pod));
        let recorder = tokio::spawn(record_events(self.client.clone(), pod.clone(), worker.events()));
        let reporter = tokio::spawn(report(self.client.clone(), pod.clone(), worker.status()));
        tracing::info!(pod = %pod_status_path(pod), %uid, "pod started");
        self.running.insert(uid, Running { worker, reporter, recorder });
    }

    /// A pod being deleted gracefully: stop it (within its grace period),
    /// then delete its object, which the supervisor left for this node to
    /// delete once the pod is stopped.
    fn finish_deletion(&mut self, pod: &Value, uid: &str) {
        let running = self.running.remove(uid);
        let client = self.client.clone();
        let logs = self.runtime.logs().clone();
        let path =
            format!("/api/v1/namespaces/{}/pods/{}", object::namespace(pod).unwrap_or_default(), object::name(pod).unwrap_or_default());
        let uid = uid.to_string();
        tokio::spawn(async move {
            if let Some(running) = running {
                running.worker.stop(running.worker.termination_grace()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.reporter.abort();
                running.recorder.abort();
            }
            let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
            match client
                .send(reqwest::Method::DELETE, &path, Some(("application/json", serde_json::to_vec(&now).unwrap_or_default())))
                .await
            {
                Ok(_) => tracing::info!(pod = %path, "pod stopped and deleted"),
                Err(error) if not_found(&error) => {}
                Err(error) => tracing::warn!(pod = %path, error = format!("{error:#}"), "deleting a stopped pod failed"),
            }
            let _ = logs.remove_pod(&uid);
        });
    }

    /// Stops the pod `uid` runs as (if it does) in the background, within
    /// its termination grace period; a pod `gone` from the supervisor also
    /// leaves its logs behind.
    fn stop(&mut self, uid: &str, gone: bool) {
        let Some(running) = self.running.remove(uid) else { return };
        let logs = self.runtime.logs().clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            running.worker.stop(running.worker.termination_grace()).await;
            // The last status and events reach the supervisor (when the pod still exists) before their tasks go.
            tokio::time::sleep(Duration::from_millis(200)).await;
            running.reporter.abort();
            running.recorder.abort();
            if gone && let Err(error) = logs.remove_pod(&uid) {
                tracing::warn!(%uid, %error, "a deleted pod's logs could not be removed");
            }
        });
    }

    /// Brings what runs in line with a full list of the pods bound here
    /// (and removes the logs of pods that are gone, from before a restart too).
    fn resync(&mut self, pods: &[Value]) {
        let listed: std::collections::HashSet<&str> = pods.iter().filter_map(|p| object::meta_str(p, "uid")).collect();
        let gone: Vec<String> = self.running.keys().filter(|uid| !listed.contains(uid.as_str())).cloned().collect();
        for uid in gone {
            self.stop(&uid, true);
        }
        for uid in self.runtime.logs().pod_uids().unwrap_or_default() {
            if !listed.contains(uid.as_str()) && !self.running.contains_key(&uid) {
                let _ = self.runtime.logs().remove_pod(&uid);
            }
        }
        for pod in pods {
            self.take(pod);
        }
    }
}

/// Follows the pods bound to `node` (list, then watch; again after a
/// watch ends) and runs them, until `stopping`; then stops them all.
async fn sync_pods(client: Client, node: String, runtime: Runtime, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let images = Arc::new(ArtifactImages { client: client.clone(), sources: Mutex::default() });
    let mut pods = PodSync { client: client.clone(), runtime, images, running: HashMap::new() };
    let selector = format!("fieldSelector=spec.nodeName%3D{node}");
    loop {
        let followed = async {
            let list = client.get(&format!("/api/v1/pods?{selector}")).await?;
            pods.resync(list.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default());
            let revision = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("0").to_string();
            let mut events = std::pin::pin!(
                client.watch(&format!("/api/v1/pods?{selector}&watch=true&resourceVersion={revision}&timeoutSeconds=300")).await?
            );
            while let Some(event) = events.next().await {
                let event = event?;
                let pod = event.get("object").cloned().unwrap_or_default();
                match event.get("type").and_then(Value::as_str) {
                    Some("DELETED") => pods.stop(object::meta_str(&pod, "uid").unwrap_or_default(), true),
                    Some("ADDED" | "MODIFIED") => pods.take(&pod),
                    Some("ERROR") => bail!("the watch failed: {}", pod.get("message").and_then(Value::as_str).unwrap_or_default()),
                    _ => {}
                }
            }
            anyhow::Ok(())
        };
        let outcome = tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => break,
            outcome = followed => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(node = %node, error = format!("{error:#}"), "following the node's pods failed; listing them again");
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    let uids: Vec<String> = pods.running.keys().cloned().collect();
    for uid in uids {
        pods.stop(&uid, false);
    }
}

/// A random secret for the log endpoint.
fn new_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This host's address on the route to `server` (`https://host:port`): the
/// source address of a UDP socket connected there (nothing is sent).
fn route_to(server: &str) -> Option<std::net::IpAddr> {
    use std::net::ToSocketAddrs as _;
    let authority = server.split("://").nth(1)?.split('/').next()?;
    let target = authority.to_socket_addrs().ok()?.next()?;
    let socket = std::net::UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The query of a log request, as Kubernetes names it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogParams {
    tail_lines: Option<usize>,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    timestamps: Option<String>,
}

fn flag(value: &Option<String>) -> bool {
    matches!(value.as_deref(), Some("true" | "1" | ""))
}

/// Serves `GET /pods/{uid}/containers/{name}/log` to holders of `secret`.
async fn serve_logs(
    listener: tokio::net::TcpListener,
    logs: kapsel_node::Logs,
    secret: String,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    async fn log(
        State((logs, secret)): State<(kapsel_node::Logs, Arc<String>)>,
        Path((uid, container)): Path<(String, String)>,
        Query(params): Query<LogParams>,
        headers: HeaderMap,
    ) -> Response {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(secret.as_str()) {
            return (StatusCode::UNAUTHORIZED, "the node's log secret is required").into_response();
        }
        let query =
            kapsel_node::LogQuery { tail_lines: params.tail_lines, previous: flag(&params.previous), timestamps: flag(&params.timestamps) };
        let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
        let refused = |error: kapsel_node::LogError| {
            let code = match error {
                kapsel_node::LogError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (code, format!("{error}")).into_response()
        };
        if flag(&params.follow) {
            match logs.follow(&uid, &container, &query) {
                Ok(stream) => (text, axum::body::Body::from_stream(stream)).into_response(),
                Err(error) => refused(error),
            }
        } else {
            match logs.read(&uid, &container, &query).await {
                Ok(bytes) => (text, bytes).into_response(),
                Err(error) => refused(error),
            }
        }
    }

    let app =
        axum::Router::new().route("/pods/{uid}/containers/{container}/log", axum::routing::get(log)).with_state((logs, Arc::new(secret)));
    let shutdown = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(%error, "the node's log endpoint stopped");
    }
}

/// `kapsel node`: runs an agent until SIGTERM or ctrl-c.
pub async fn command(client: Client, flags: NodeArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = AgentConfig::from_args(flags)?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("node agent stopping");
        let _ = stop.send(true);
    });
    run(client, config, stopping).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_nodes_capacity_labels_and_taints() {
        let flags = NodeArgs {
            name: Some("edge-1".into()),
            capacity: Some("cpu=4,memory=8Gi,pods=20".into()),
            labels: Some("zone=a, disk=ssd".into()),
            taints: vec!["dedicated=gpu:NoSchedule".into(), "spot:PreferNoSchedule".into()],
            data_dir: "d".into(),
            lease_interval: 2,
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise_address: None,
        };
        let config = AgentConfig::from_args(flags.clone()).unwrap();
        assert_eq!(config.capacity["cpu"], "4");
        assert_eq!(config.capacity["memory"], "8Gi");
        assert_eq!(config.capacity["pods"], "20");
        assert_eq!(config.labels["disk"], "ssd");
        assert_eq!(config.taints[0], json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}));
        assert_eq!(config.taints[1], json!({"key": "spot", "value": "", "effect": "PreferNoSchedule"}));

        let wrong = |change: fn(&mut NodeArgs)| {
            let mut flags = flags.clone();
            change(&mut flags);
            AgentConfig::from_args(flags).unwrap_err().to_string()
        };
        assert!(wrong(|f| f.capacity = Some("gpus=1".into())).contains("unknown resource"));
        assert!(wrong(|f| f.capacity = Some("cpu=lots".into())).contains("cpu=lots"));
        assert!(wrong(|f| f.taints = vec!["x=y:Sometimes".into()]).contains("effect"));
        assert!(wrong(|f| f.name = Some("Not A Name".into())).contains("--name"));
    }
}
