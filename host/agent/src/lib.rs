//! `kapsel node`: the node agent, a host's member of the pool (Kubernetes'
//! kubelet, vSphere's spherelet). `kapsel serve` runs one for its own host
//! (as a child process that outlives it, the binary's `local_node`);
//! `kapsel node --server URL --token T` runs one anywhere else. It talks
//! to the supervisor over HTTPS only (`kapsel-client`) and does not depend
//! on the supervisor's crate (`tests/no_supervisor.rs` checks).
//!
//! It takes the lease named after its node in `kube-node-lease` (waiting,
//! with a warning, while another agent under the same name renews it),
//! registers its `Node` (capacity and allocatable resources, labels,
//! taints, addresses, agent version, `Ready`), then renews the lease every
//! `--lease-interval` (2 s): a small write the supervisor's node lifecycle
//! controller reads, instead of a rewrite of the whole `Node`. It
//! authenticates with a node token, which lets it change only its own
//! `Node`, its lease and the status of the pods bound to it.
//!
//! It lists and then watches the pods bound to it
//! (`fieldSelector=spec.nodeName=NAME`) and runs each on the Wasm runtime of
//! `kapsel-node` ([`kapsel_node::PodWorker`]): images are resolved through
//! the pod's namespace's `Artifact` and fetched by digest from the
//! supervisor once (then compiled and cached on disk), and every change of
//! the pod's status is sent back as a merge patch of `pods/{name}/status`
//! (the scheduler's `PodScheduled` condition kept). A pod deleted, or one the
//! supervisor marked `Failed` (its node was lost), is stopped. A restarted
//! agent takes over the pods bound to it that have not ended, from their
//! status (see `kapsel_node::pod`).
//!
//! Logs: the agent serves its containers' logs over HTTPS on `--listen`
//! (`GET /pods/{uid}/containers/{name}/log?tailLines&previous&follow&timestamps`),
//! with a certificate it makes at start for its advertised address, to
//! whoever presents the secret it draws at start. It publishes the
//! endpoint, the certificate and the secret as annotations of its lease
//! (`kapsel.io/agent-endpoint`, `kapsel.io/agent-certificate`,
//! `kapsel.io/agent-secret`), which only IT admins and the node itself may
//! read; the supervisor's `GET …/pods/{name}/log` reads them, trusts that
//! one certificate, and relays the log — only when the endpoint is
//! `https://IP:PORT` at the address and port the agent registered for its
//! node (`status.addresses` `InternalIP`, `daemonEndpoints.kubeletEndpoint`),
//! which is why both come from the same advertised address.
//!
//! Pod logs are held to a budget for the whole node (`--log-budget`, 1 GiB):
//! past it the oldest ended runs' logs go first (see `kapsel_node::logs`).
//!
//! Ingress: the agent serves tenants' Services over plain HTTP on
//! `--ingress-listen` (default `127.0.0.1:8080`), routing by `Host:
//! <service>.<namespace>` or the path `/<namespace>/<service>/…` to the
//! ready pods the Service selects, on this node or through another node's
//! ingress ([`ingress`]), and publishes the address in its Node's
//! `kapsel.io/ingress` annotation.
//!
//! Deleting a pod that runs here is graceful: the supervisor marks it
//! (`deletionTimestamp`), the agent stops it within its grace period and
//! then deletes the object.

mod follow;
mod ingress;
mod logs;
mod pods;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kapsel_api::Quantity;
use kapsel_api::kinds::lease::{AGENT_CERTIFICATE_ANNOTATION, AGENT_ENDPOINT_ANNOTATION, AGENT_SECRET_ANNOTATION, NODE_LEASE_NAMESPACE};
use kapsel_api::kinds::node::INGRESS_ANNOTATION;
use kapsel_client::{ApiFailure, Client};
use kapsel_node::{Runtime, RuntimeConfig};
use serde_json::{Value, json};

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
    /// Where the node's ingress serves tenants' Services over plain HTTP (`Host: <service>.<namespace>`
    /// or the path `/<namespace>/<service>/…`; port 0: any free port). Published in the Node's
    /// `kapsel.io/ingress` annotation.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub ingress_listen: std::net::SocketAddr,
    /// Seconds a pod has to start answering a request through the ingress; past it the client gets a
    /// 504 and the request's instance is stopped.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ingress_request_timeout: u64,
    /// Seconds between lease renewals (the supervisor counts a node lost after 10 s without one).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub lease_interval: u64,
    /// The most all pod logs on this node may hold together, as a quantity (`1Gi`, `500Mi`);
    /// past it the oldest ended runs' logs are removed first.
    #[arg(long, default_value = "1Gi")]
    pub log_budget: String,
    /// The memory limit of a container that sets no `limits.memory` (after the namespace's
    /// LimitRange defaults), as a quantity (`512Mi`, `1Gi`); at least `1Mi`.
    #[arg(long, default_value = "512Mi")]
    pub default_memory_limit: String,
    /// Stop, with every pod, once the supervisor has been unreachable (no lease renewal) this many
    /// seconds. `kapsel serve` sets it for its own host's agent, which outlives it; other agents
    /// keep their pods however long the supervisor is away.
    #[arg(long)]
    pub supervisor_linger: Option<u64>,
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
    /// Where the ingress listens (`--ingress-listen`).
    pub ingress_listen: std::net::SocketAddr,
    /// How long a pod has to start answering through the ingress (`--ingress-request-timeout`).
    pub ingress_request_timeout: Duration,
    /// The budget of all pod logs together, in bytes (`--log-budget`).
    pub log_budget_bytes: u64,
    /// The memory limit of a container that sets none, in bytes (`--default-memory-limit`).
    pub default_memory_limit_bytes: u64,
    /// How long the agent keeps going without renewing its lease (`--supervisor-linger`).
    pub supervisor_linger: Option<Duration>,
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
        // A log budget below 1 MiB would not hold one run's log; a default memory limit below it, no program.
        let log_budget_bytes = at_least_a_mebibyte(&flags.log_budget, "--log-budget")?;
        let default_memory_limit_bytes = at_least_a_mebibyte(&flags.default_memory_limit, "--default-memory-limit")?;
        Ok(AgentConfig {
            name,
            capacity,
            labels,
            taints,
            data_dir: flags.data_dir,
            lease_interval: Duration::from_secs(flags.lease_interval),
            listen: flags.listen,
            advertise_address: flags.advertise_address,
            ingress_listen: flags.ingress_listen,
            ingress_request_timeout: Duration::from_secs(flags.ingress_request_timeout),
            log_budget_bytes,
            default_memory_limit_bytes,
            supervisor_linger: flags.supervisor_linger.map(Duration::from_secs),
        })
    }
}

/// The byte quantity `text` of `flag` (`1Gi`, `500Mi`), which must be at least 1 MiB.
pub fn at_least_a_mebibyte(text: &str, flag: &str) -> anyhow::Result<u64> {
    let bytes =
        kapsel_node::pod::spec::memory_bytes(&Value::String(text.to_string())).map_err(|e| anyhow::anyhow!("{flag} {text:?}: {e}"))?;
    anyhow::ensure!(bytes >= 1 << 20, "{flag} {text:?}: must be at least 1Mi");
    Ok(bytes)
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

/// Where the agent serves logs, the certificate it presents there and the secret it asks for.
#[derive(Debug, Clone)]
struct LogEndpoint {
    address: std::net::SocketAddr,
    /// Where the ingress listens, as published (`http://IP:PORT`).
    ingress: String,
    certificate: String,
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
            let metadata = kapsel_api::object::metadata_mut(&mut node);
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            if !annotations.is_object() {
                *annotations = json!({});
            }
            annotations[INGRESS_ANNOTATION] = json!(endpoint.ingress);
            node["spec"]["taints"] = json!(config.taints);
            let updated = client.put(&path, &node).await.context("updating the node")?;
            let mut with_status = updated;
            with_status["status"] = node_status(config, endpoint);
            client.put(&format!("{path}/status"), &with_status).await.context("reporting the node's status")?;
        }
        Err(error) if not_found(&error) => {
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": config.name, "labels": config.labels, "annotations": {INGRESS_ANNOTATION: endpoint.ingress}},
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
async fn renew(client: &Client, config: &AgentConfig, holder: &str, endpoint: &LogEndpoint, last: Option<Value>) -> anyhow::Result<Value> {
    let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases");
    let path = format!("{collection}/{}", config.name);
    let duration = (config.lease_interval.as_secs() * 5).max(10);
    let spec = json!({"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": now_micros()});
    let annotations = json!({
        AGENT_ENDPOINT_ANNOTATION: format!("https://{}", endpoint.address),
        AGENT_CERTIFICATE_ANNOTATION: endpoint.certificate,
        AGENT_SECRET_ANNOTATION: endpoint.secret,
    });
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
            // Another agent under the same node name (a second supervisor's embedded node on this host,
            // a copied configuration) holds it while it renews: running the node's pods twice would be wrong.
            let other = lease.pointer("/spec/holderIdentity").and_then(Value::as_str).filter(|h| *h != holder).map(str::to_string);
            let lasts = lease.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(10);
            let fresh = kapsel_api::kinds::lease::renewed_at(&lease)
                .is_some_and(|at| chrono::Utc::now().signed_duration_since(at) < chrono::Duration::seconds(lasts));
            if let (Some(other), true) = (other, fresh) {
                bail!(
                    "node {:?} is run by another agent ({other}); give this one another --name (kapsel serve: --node-name or --no-local-node)",
                    config.name
                );
            }
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
    let mut runtime_config = RuntimeConfig::new(config.data_dir.clone());
    runtime_config.log_budget_bytes = config.log_budget_bytes;
    runtime_config.default_memory_limit_bytes = Some(config.default_memory_limit_bytes);
    let runtime = Runtime::new(runtime_config).context("starting the Wasm runtime")?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {} for logs", config.listen))?;
    let bound = listener.local_addr()?;
    let ip = match config.advertise_address {
        Some(ip) => ip,
        None if !bound.ip().is_unspecified() => bound.ip(),
        None => route_to(client.base()).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    let (certificate, tls) = kapsel_daemon::tls::self_signed(&format!("kapsel-node {}", config.name), vec![ip.to_string()])
        .context("making the log endpoint's certificate")?;
    let listener = kapsel_daemon::tls::TlsListener::new(listener, tls)?;
    let ingress_listener = tokio::net::TcpListener::bind(config.ingress_listen)
        .await
        .with_context(|| format!("binding {} for the ingress (--ingress-listen)", config.ingress_listen))?;
    let ingress_bound = ingress_listener.local_addr()?;
    let ingress_ip = if ingress_bound.ip().is_unspecified() { ip } else { ingress_bound.ip() };
    let endpoint = LogEndpoint {
        address: std::net::SocketAddr::new(ip, bound.port()),
        ingress: format!("http://{}", std::net::SocketAddr::new(ingress_ip, ingress_bound.port())),
        certificate,
        secret: new_secret(),
    };
    tokio::spawn(logs::serve_logs(listener, runtime.logs().clone(), endpoint.secret.clone(), stopping.clone()));
    let services = ingress::Services::default();
    tokio::spawn(ingress::follow_services(client.clone(), services.clone(), stopping.clone()));
    let elsewhere = ingress::Elsewhere::default();
    tokio::spawn(ingress::follow_elsewhere(client.clone(), config.name.clone(), elsewhere.clone(), stopping.clone()));
    let ingress = ingress::Ingress::new(services, runtime.servers().clone(), elsewhere, config.ingress_request_timeout);
    tokio::spawn(ingress.serve(ingress_listener, stopping.clone()));
    let holder = format!("{}/{}", config.name, agent_id(&config.data_dir)?);
    // The node is this agent's once it holds the node's lease.
    let mut lease = None;
    let mut delay = Duration::from_millis(100);
    while lease.is_none() {
        match renew(&client, &config, &holder, &endpoint, None).await {
            Ok(taken) => lease = Some(taken),
            Err(error) => {
                tracing::warn!(node = %config.name, error = format!("{error:#}"), "taking the node's lease failed; trying again");
                tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(config.lease_interval.max(Duration::from_secs(2)));
            }
        }
    }
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
    tracing::info!(node = %config.name, capacity = ?config.capacity, logs = %endpoint.address, ingress = %endpoint.ingress, "node registered");
    // The pod loop catches a panic about one pod itself; should it ever panic as a whole, it is started again
    // (its pods stop with it, and the new loop takes them over from their status, as a restarted agent does).
    let (pods_client, node, pods_stopping) = (client.clone(), config.name.clone(), stopping.clone());
    kapsel_daemon::task::supervise("node-pods", stopping.clone(), move || {
        pods::sync_pods(pods_client.clone(), node.clone(), runtime.clone(), pods_stopping.clone())
    });
    let mut ticker = tokio::time::interval(config.lease_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            _ = ticker.tick() => {}
        }
        match renew(&client, &config, &holder, &endpoint, lease.take()).await {
            Ok(renewed) => {
                lease = Some(renewed);
                last_renewal = tokio::time::Instant::now();
            }
            Err(error) => {
                tracing::warn!(node = %config.name, error = format!("{error:#}"), "renewing the node lease failed");
                if let Some(linger) = config.supervisor_linger
                    && last_renewal.elapsed() >= linger
                {
                    tracing::warn!(node = %config.name, ?linger, "the supervisor has been unreachable for longer than --supervisor-linger: stopping with every pod");
                    return Ok(());
                }
            }
        }
    }
}

/// This agent's identity as a lease holder, kept in its data directory so
/// that a restarted agent takes its lease back at once.
fn agent_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("agent-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = new_secret()[..16].to_string();
            kapsel_daemon::files::write_atomically(&path, id.as_bytes(), 0o600)?;
            Ok(id)
        }
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
            ingress_listen: "127.0.0.1:0".parse().unwrap(),
            ingress_request_timeout: 60,
            advertise_address: None,
            log_budget: "1Gi".into(),
            default_memory_limit: "512Mi".into(),
            supervisor_linger: None,
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
        assert_eq!(config.log_budget_bytes, 1 << 30);
        let budget = |text: &str| AgentConfig::from_args(NodeArgs { log_budget: text.into(), ..flags.clone() }).map(|c| c.log_budget_bytes);
        assert_eq!(budget("500Mi").unwrap(), 500 << 20);
        assert_eq!(budget("2G").unwrap(), 2_000_000_000);
        assert!(budget("lots").unwrap_err().to_string().contains("--log-budget"));
        assert!(budget("1Ki").unwrap_err().to_string().contains("at least 1Mi"));
        assert!(budget("-1Gi").is_err());
        assert_eq!(config.default_memory_limit_bytes, 512 << 20);
        let memory = |text: &str| {
            AgentConfig::from_args(NodeArgs { default_memory_limit: text.into(), ..flags.clone() }).map(|c| c.default_memory_limit_bytes)
        };
        assert_eq!(memory("1Gi").unwrap(), 1 << 30);
        assert!(memory("lots").unwrap_err().to_string().contains("--default-memory-limit"));
        assert!(memory("64Ki").unwrap_err().to_string().contains("at least 1Mi"));
    }
}
