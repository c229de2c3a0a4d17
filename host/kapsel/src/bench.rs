//! `kapsel bench`: benchmarks that drive a real server over HTTP.
//!
//! `kapsel bench api` starts `kapsel serve` as a child process on a free
//! port with a fresh data directory (or uses the running server that
//! `--server` or `--kubeconfig` names), creates
//! `--objects` pods with `--concurrency` clients, then reads each back, and
//! reports throughput and latency percentiles (human-readable or `--json`).
//! `kapsel bench schedule` runs the supervisor's scheduler in-process
//! against a real store holding simulated nodes and pending pods, until
//! every binding is written. `kapsel bench pod-start` starts `kapsel serve`
//! (with its embedded node) and times pods from create to `Running` as a
//! watch reports it, creating them at `--rate`. `kapsel bench plugin` measures a scheduler extension in-process: compile,
//! deserialize from the compile cache, load, `update-nodes`, and per-pod
//! `filter`/`score` against N nodes. `kapsel bench http` measures serving
//! through a node's ingress (`bench_http`).

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use kapsel_client::{Client, ConnectionArgs};
use serde_json::{Value, json};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Create and then get pods over HTTP; report creates/s, gets/s and latency percentiles.
    Api(ApiBenchArgs),
    /// Per-call cost of a plug-in (filter/score against N nodes), and its compile and instantiate times.
    Plugin(PluginBenchArgs),
    /// Pod creates through the full request path with admission policies loaded; the latency they add.
    Admission(AdmissionBenchArgs),
    /// The scheduler against the store: simulated nodes, pending pods, bindings persisted; pods/s.
    Schedule(ScheduleBenchArgs),
    /// Pod start latency: create → Running as a watcher sees it, on `kapsel serve`'s embedded node.
    PodStart(PodStartBenchArgs),
    /// Requests/s and latency through a node's ingress to an HTTP service, beside a native hyper server.
    Http(crate::bench_http::HttpBenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct PodStartBenchArgs {
    /// Pods to start (each is deleted once seen Running).
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Creates per second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rate: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ScheduleBenchArgs {
    /// Simulated nodes (Ready, 32 CPUs, 128 GiB, 110 pods each, in 3 zones).
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pending pods to place (100m CPU, 128 MiB each, in groups of 50 labels).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// A scheduler-extension component to run beside the built-in filters: a
    /// file, a default plug-in's name (`spread`, `binpack`), or `none`.
    #[arg(long, default_value = "spread")]
    plugin: String,
    /// Datastore (default: SQLite in a temporary directory). A PostgreSQL
    /// database given here gets the bench's nodes and pods.
    #[arg(long)]
    datastore: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AdmissionBenchArgs {
    /// Admission policies loaded.
    #[arg(long, default_value_t = 100)]
    policies: usize,
    /// How many of them match pods (the rest match other kinds).
    #[arg(long, default_value_t = 10)]
    matching: usize,
    /// Pods created, with the policies and (first) without.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Load the policies as the pods' namespace's `AdmissionPolicy` objects
    /// (tenants' policies, evaluated in the Rego sandbox) instead of
    /// `ClusterAdmissionPolicy` objects (IT's, evaluated in-process).
    #[arg(long)]
    namespace_policies: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PluginBenchArgs {
    /// The plug-in's world: `scheduler-extension` (filter/score against the
    /// node snapshot) or `network-driver` (segments, addresses, `allow`).
    #[arg(long, default_value = "scheduler-extension")]
    world: String,
    /// A component file, or the name of a default plug-in (`spread`, `binpack`, `namespace-ipam`).
    #[arg(long, default_value = "spread")]
    plugin: String,
    /// Nodes in the snapshot (all of them candidates); for a network driver, namespaces with a network.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Calls measured per operation.
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApiBenchArgs {
    /// How many pods to create (and then get).
    #[arg(long, default_value_t = 20_000)]
    objects: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Datastore for the server the bench starts (default: SQLite in a temporary directory).
    #[arg(long)]
    datastore: Option<String>,
    /// Put a ResourceQuota on the namespace first (pods, requests and limits, all large enough),
    /// so every create is charged to it: what exact quota accounting costs.
    #[arg(long)]
    quota: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(connection: &ConnectionArgs, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Api(args) => api(connection, args).await,
        BenchCommand::Plugin(args) => tokio::task::spawn_blocking(move || plugin(args)).await?,
        BenchCommand::Admission(args) => admission(args).await,
        BenchCommand::Schedule(args) => schedule(args).await,
        BenchCommand::PodStart(args) => pod_start(args).await,
        BenchCommand::Http(args) => crate::bench_http::run(args).await,
    }
}

/// A `kapsel serve` child process, killed when dropped.
pub(crate) struct ServerProcess {
    child: tokio::process::Child,
    data_dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // Its node agent outlives a supervisor by design; a bench's goes with it.
        crate::local_node::stop_recorded(&self.data_dir.path().join(kapsel_server::serve::NODE_DIR));
    }
}

pub(crate) async fn start_server(datastore: Option<&str>) -> anyhow::Result<(ServerProcess, Client)> {
    let data_dir = tempfile::tempdir().context("creating a data directory for the bench server")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.arg("serve").arg("--data-dir").arg(data_dir.path()).arg("--listen").arg(format!("127.0.0.1:{port}"));
    command.arg("--ingress-listen").arg("127.0.0.1:0");
    if let Some(url) = datastore {
        command.arg("--datastore").arg(url);
    }
    command.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
    let child = command.spawn().context("starting kapsel serve")?;
    let server = ServerProcess { child, data_dir };
    let kubeconfig = server.data_dir.path().join(kapsel_server::serve::KUBECONFIG_FILE);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.exists() {
            let connection = ConnectionArgs {
                server: None,
                token: None,
                kubeconfig: Some(kubeconfig.clone()),
                certificate_authority: None,
                insecure_skip_tls_verify: false,
            };
            let client = Client::connect(&connection)?;
            if client.get("/version").await.is_ok() {
                return Ok((server, client));
            }
        }
        if Instant::now() > deadline {
            bail!("the bench server did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pod(namespace: &str, i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "namespace": namespace, "labels": {"app": "bench", "shard": (i % 16).to_string()}},
        // A scheduler nobody runs: the API benches measure the request path, not pods running.
        "spec": {"schedulerName": "bench-unplaced",
                 "containers": [{"name": "main", "image": "hello:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}}]},
    })
}

/// Creates `namespace` and pushes the `hello` sample into it as `hello:1`.
async fn bench_namespace(client: &Client, namespace: &str) -> anyhow::Result<()> {
    client.post("/api/v1/namespaces", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await?;
    push_image(client, namespace, "hello", kapsel_node::HELLO).await
}

/// Pushes `bytes` as `NAME:1` into `namespace`.
pub(crate) async fn push_image(client: &Client, namespace: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = format!("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts/{name}/push?tag=1");
    client
        .send(reqwest::Method::POST, &path, Some(("application/wasm", bytes.to_vec())))
        .await
        .with_context(|| format!("pushing {name}:1"))?;
    Ok(())
}

/// Runs `total` requests from `concurrency` workers; returns the latency histogram (µs) and elapsed time.
async fn drive<F, Fut>(total: usize, concurrency: usize, request: F) -> anyhow::Result<(Histogram<u64>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let request = Arc::new(request);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, request) = (next.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(histogram);
                }
                let sent = Instant::now();
                request(i).await?;
                histogram.saturating_record(sent.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for worker in workers {
        merged.add(worker.await??).expect("same bounds");
    }
    Ok((merged, started.elapsed()))
}

fn summary(histogram: &Histogram<u64>, elapsed: Duration, count: usize) -> Value {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "count": count,
        "seconds": elapsed.as_secs_f64(),
        "per_second": count as f64 / elapsed.as_secs_f64(),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": histogram.max() as f64 / 1000.0,
    })
}

async fn api(connection: &ConnectionArgs, args: ApiBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.objects > 0 && args.concurrency > 0, "--objects and --concurrency must be positive");
    // With --server or --kubeconfig, benchmark that running server (token and CA from the flags or the kubeconfig).
    let (_server, client, backend) = match connection.server.is_some() || connection.kubeconfig.is_some() {
        true => (None, Client::connect(connection)?, "external".to_string()),
        false => {
            let (server, client) = start_server(args.datastore.as_deref()).await?;
            let backend = if args.datastore.as_deref().is_some_and(|d| d.starts_with("postgres")) { "postgres" } else { "sqlite" };
            (Some(server), client, backend.to_string())
        }
    };
    let namespace = format!("bench-{}", std::process::id());
    bench_namespace(&client, &namespace).await?;
    if args.quota {
        let n = args.objects;
        let hard = json!({"pods": n.to_string(), "requests.cpu": format!("{}m", 10 * n), "requests.memory": format!("{}Mi", 16 * n),
            "limits.cpu": format!("{}m", 100 * n), "limits.memory": format!("{}Mi", 64 * n), "count/pods": n.to_string()});
        let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "bench"}, "spec": {"hard": hard}});
        client.post(&format!("/api/v1/namespaces/{namespace}/resourcequotas"), &quota).await?;
    }
    let collection = format!("/api/v1/namespaces/{namespace}/pods");

    let (create_client, create_ns, create_path) = (client.clone(), namespace.clone(), collection.clone());
    let (creates, create_time) = drive(args.objects, args.concurrency, move |i| {
        let (client, path, body) = (create_client.clone(), create_path.clone(), pod(&create_ns, i));
        async move { client.post(&path, &body).await.map(drop) }
    })
    .await
    .context("creating pods")?;

    let (get_client, get_path) = (client.clone(), collection.clone());
    let (gets, get_time) = drive(args.objects, args.concurrency, move |i| {
        let (client, path) = (get_client.clone(), format!("{get_path}/bench-{i}"));
        async move { client.get(&path).await.map(drop) }
    })
    .await
    .context("getting pods")?;

    let report = json!({
        "benchmark": "api",
        "datastore": backend,
        "objects": args.objects,
        "concurrency": args.concurrency,
        "quota": args.quota,
        "create": summary(&creates, create_time, args.objects),
        "get": summary(&gets, get_time, args.objects),
    });
    if args.json {
        println!("{report}");
    } else {
        let quota = if args.quota { ", every create charged to a quota" } else { "" };
        println!("kapsel bench api: {} pods, {} clients, {backend} datastore{quota}", args.objects, args.concurrency);
        for phase in ["create", "get"] {
            let s = &report[phase];
            println!(
                "  {phase:<7} {:>9.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
                s["per_second"].as_f64().unwrap_or_default(),
                s["p50_ms"].as_f64().unwrap_or_default(),
                s["p99_ms"].as_f64().unwrap_or_default(),
                s["max_ms"].as_f64().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Median and 99th percentile, in microseconds, of `samples` runs of `run`.
fn time_calls(samples: usize, mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Value> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    for _ in 0..samples {
        let started = Instant::now();
        run()?;
        histogram.saturating_record(started.elapsed().as_nanos() as u64);
    }
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({"p50_us": us(0.5), "p99_us": us(0.99), "samples": samples}))
}

fn plugin(args: PluginBenchArgs) -> anyhow::Result<ExitCode> {
    use kapsel_plugins::scheduler::{self, NodeSummary, PodRef, PodSummary, Resources, SchedulerExtension};
    anyhow::ensure!(args.nodes > 0 && args.calls > 0, "--nodes and --calls must be positive");
    let bytes = match kapsel_plugins::defaults::by_name(&args.plugin) {
        Some(bytes) => bytes.to_vec(),
        None => std::fs::read(&args.plugin).with_context(|| format!("reading {}", args.plugin))?,
    };
    match kapsel_plugins::World::parse(&args.world) {
        Some(kapsel_plugins::World::SchedulerExtension) => {}
        Some(kapsel_plugins::World::NetworkDriver) => return network_plugin(&args, &bytes),
        _ => anyhow::bail!("--world: scheduler-extension or network-driver (got {})", args.world),
    }
    let resources = |cpu_millicores, memory_bytes| Resources { cpu_millicores, memory_bytes, storage_bytes: 0 };
    let nodes: Vec<NodeSummary> = (0..args.nodes)
        .map(|i| NodeSummary {
            name: format!("node-{i}"),
            labels: vec![
                ("topology.kubernetes.io/zone".into(), format!("zone-{}", i % 3)),
                ("kubernetes.io/hostname".into(), format!("node-{i}")),
            ],
            taints: vec![],
            allocatable: resources(16_000, 64 << 30),
            requested: resources(100 * (i as u64 % 7), (i as u64 % 5) << 30),
            ready: true,
            pods: (0..10)
                .map(|p| PodRef {
                    namespace: "dev".into(),
                    name: format!("p-{i}-{p}"),
                    labels: vec![("app".into(), format!("a{}", p % 4))],
                })
                .collect(),
        })
        .collect();
    let pod = PodSummary {
        namespace: "dev".into(),
        name: "web-0".into(),
        labels: vec![("app".into(), "web".into())],
        requests: resources(500, 1 << 30),
        node_selector: vec![],
        tolerations: vec![],
    };
    let candidates: Vec<u32> = (0..args.nodes as u32).collect();
    let limits = kapsel_plugins::Limits::default();
    let _ = kapsel_plugins::engine();

    let compile = time_calls(5, || scheduler::compile(&bytes).map(drop).map_err(Into::into))?;
    // What a restart pays instead: reading the compiled form back from the cache.
    let cache_dir = tempfile::tempdir()?;
    let cache = kapsel_plugins::CompileCache::new(cache_dir.path());
    cache.compile("sha256:bench", &bytes)?;
    let deserialize = time_calls(20, || cache.compile("sha256:bench", &bytes).map(drop).map_err(Into::into))?;
    let component = scheduler::compile(&bytes)?;
    let load =
        time_calls(50, || SchedulerExtension::from_component(&args.plugin, &component, vec![], limits).map(drop).map_err(Into::into))?;
    let mut extension = SchedulerExtension::from_component(&args.plugin, &component, vec![], limits)?;
    let update = time_calls(50, || extension.update_nodes(nodes.clone()).map_err(Into::into))?;
    let filter = time_calls(args.calls, || extension.filter(&pod, &candidates).map(drop).map_err(Into::into))?;
    let score = time_calls(args.calls, || extension.score(&pod, &candidates).map(drop).map_err(Into::into))?;
    let empty = time_calls(args.calls, || extension.score(&pod, &[]).map(drop).map_err(Into::into))?;
    let report = json!({
        "benchmark": "plugin",
        "world": args.world,
        "plugin": args.plugin,
        "bytes": bytes.len(),
        "scale": "nodes",
        "nodes": args.nodes,
        "compile": compile,
        "deserialize": deserialize,
        "load": load,
        "update_nodes": update,
        "filter": filter,
        "score": score,
        "empty_call": empty,
    });
    print_plugin_report(
        &args,
        &report,
        &[
            ("compile (Cranelift)", "compile"),
            ("deserialize (compile cache)", "deserialize"),
            ("load (link, instantiate, configure)", "load"),
            ("update-nodes", "update_nodes"),
            ("filter, all candidates", "filter"),
            ("score, all candidates", "score"),
            ("empty call", "empty_call"),
        ],
    );
    Ok(ExitCode::SUCCESS)
}

fn print_plugin_report(args: &PluginBenchArgs, report: &Value, rows: &[(&str, &str)]) {
    if args.json {
        println!("{report}");
        return;
    }
    let scale = report["scale"].as_str().unwrap_or_default();
    println!("kapsel bench plugin: {} ({}, {} bytes), {} {scale}", args.plugin, args.world, report["bytes"], args.nodes);
    for (label, key) in rows {
        let s = &report[*key];
        println!(
            "  {label:<38} p50 {:>10.2} µs   p99 {:>10.2} µs",
            s["p50_us"].as_f64().unwrap_or_default(),
            s["p99_us"].as_f64().unwrap_or_default()
        );
    }
}

/// A network driver: load with `--nodes` namespaces restored (as after a
/// restart), then the per-call cost of what the platform calls.
fn network_plugin(args: &PluginBenchArgs, bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use kapsel_plugins::network::{Endpoint, NetworkDriver};
    let limits = kapsel_plugins::Limits::default();
    let compile = time_calls(5, || kapsel_plugins::compile(bytes).map(drop).map_err(Into::into))?;
    let component = kapsel_plugins::compile(bytes)?;
    let mut driver = NetworkDriver::from_component(&args.plugin, &component, vec![], limits, Default::default())?;
    for n in 0..args.nodes {
        let namespace = format!("ns-{n}");
        driver.create_network(&namespace)?.map_err(|e| anyhow::anyhow!("create-network {namespace}: {e:?}"))?;
        for p in 0..10 {
            driver.attach_pod(&namespace, &format!("pod-{p}"))?.map_err(|e| anyhow::anyhow!("attach-pod: {e:?}"))?;
        }
    }
    let networks = driver.networks().clone();
    let load = time_calls(20, || {
        NetworkDriver::from_component(&args.plugin, &component, vec![], limits, networks.clone()).map(drop).map_err(Into::into)
    })?;
    let mut n = 0usize;
    let attach_detach = time_calls(args.calls, || {
        n += 1;
        let namespace = format!("ns-{}", n % args.nodes);
        driver.attach_pod(&namespace, "bench")?.map_err(|e| anyhow::anyhow!("attach-pod: {e:?}"))?;
        driver.detach_pod(&namespace, "bench")?.map_err(|e| anyhow::anyhow!("detach-pod: {e:?}"))?;
        Ok(())
    })?;
    let endpoint = |namespace: &str, pod: &str| Endpoint {
        namespace: namespace.into(),
        pod: pod.into(),
        labels: vec![("app".into(), "web".into()), ("tier".into(), "frontend".into())],
    };
    let (web, db, other) = (endpoint("ns-0", "pod-1"), endpoint("ns-0", "pod-2"), endpoint("ns-1", "pod-1"));
    let allow = time_calls(args.calls, || driver.allow(&web, &db).map(drop).map_err(Into::into))?;
    let deny = time_calls(args.calls, || driver.allow(&web, &other).map(drop).map_err(Into::into))?;
    let report = json!({
        "benchmark": "plugin",
        "world": args.world,
        "plugin": args.plugin,
        "bytes": bytes.len(),
        "scale": "namespaces of 10 pods",
        "namespaces": args.nodes,
        "compile": compile,
        "load_restoring_all": load,
        "attach_and_detach_pod": attach_detach,
        "allow_same_namespace": allow,
        "allow_cross_namespace": deny,
    });
    print_plugin_report(
        args,
        &report,
        &[
            ("compile (Cranelift)", "compile"),
            ("load, restoring every namespace", "load_restoring_all"),
            ("attach-pod + detach-pod", "attach_and_detach_pod"),
            ("allow, same namespace", "allow_same_namespace"),
            ("allow, across namespaces", "allow_cross_namespace"),
        ],
    );
    Ok(ExitCode::SUCCESS)
}

/// A Gatekeeper-style (Rego v0) required-labels policy matching `kind`; the
/// bench's pods carry `app`, so it admits them. In `namespace`, an
/// `AdmissionPolicy` (a tenant's); otherwise a `ClusterAdmissionPolicy`.
fn bench_policy(n: usize, kind: &str, namespace: Option<&str>) -> Value {
    let metadata = match namespace {
        Some(namespace) => json!({"name": format!("bench-{n}"), "namespace": namespace}),
        None => json!({"name": format!("bench-{n}")}),
    };
    json!({
        "apiVersion": "kapsel.io/v1alpha1",
        "kind": if namespace.is_some() { "AdmissionPolicy" } else { "ClusterAdmissionPolicy" },
        "metadata": metadata,
        "spec": {
            "regoVersion": "v0",
            "rego": format!(r#"package bench.p{n}

violation[{{"msg": msg}}] {{
  provided := {{label | input.review.object.metadata.labels[label]}}
  required := {{label | label := input.parameters.labels[_]}}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("you must provide labels: %v", [missing])
}}
"#),
            "parameters": {"labels": ["app"]},
            "match": {"kinds": [kind], "operations": ["CREATE", "UPDATE"]},
        },
    })
}

/// Kinds the non-matching policies name.
const OTHER_KINDS: &[&str] = &["Node", "ResourceQuota", "LimitRange", "Event", "Plugin", "Deployment"];

async fn admission(args: AdmissionBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.matching <= args.policies, "--matching cannot exceed --policies");
    anyhow::ensure!(args.requests > 0 && args.concurrency > 0, "--requests and --concurrency must be positive");
    let kind_of = |n: usize| if n < args.matching { "Pod" } else { OTHER_KINDS[n % OTHER_KINDS.len()] };
    let policies_in =
        |namespace: Option<&str>| -> Vec<Value> { (0..args.policies).map(|n| bench_policy(n, kind_of(n), namespace)).collect() };
    let tenant = |namespace: &'static str| args.namespace_policies.then_some(namespace);

    // What admission adds to a request: the review of one pod create, as the server runs it.
    let mut set = kapsel_admission::PolicySet::default();
    for policy in &policies_in(tenant("bench")) {
        let id = kapsel_admission::PolicyId {
            namespace: policy["metadata"]["namespace"].as_str().map(str::to_string),
            name: policy["metadata"]["name"].as_str().unwrap_or_default().into(),
        };
        let spec = serde_json::from_value(policy["spec"].clone())?;
        set = set.with(kapsel_admission::Policy::compile(id, &spec).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let user = kapsel_admission::UserInfo { username: "bench".into(), groups: vec!["system:authenticated".into()] };
    let mut added = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    for i in 0..args.requests.min(20_000) {
        let object = pod("bench", i);
        let name = format!("bench-{i}");
        let request = kapsel_admission::Request {
            group: "",
            version: "v1",
            kind: "Pod",
            resource: "pods",
            operation: kapsel_admission::Operation::Create,
            name: &name,
            namespace: Some("bench"),
            object: Some(&object),
            old_object: None,
            user: &user,
            dry_run: false,
            namespace_labels: None,
        };
        let started = Instant::now();
        let decisions = set.review(&request);
        added.saturating_record(started.elapsed().as_nanos() as u64);
        anyhow::ensure!(decisions.len() == args.matching, "{} policies matched, expected {}", decisions.len(), args.matching);
        anyhow::ensure!(decisions.iter().all(|d| d.outcome.as_ref().is_ok_and(Vec::is_empty)), "a bench policy refused a bench pod");
    }
    let us = |q: f64| added.value_at_quantile(q) as f64 / 1000.0;

    // The full request path, without and then with the policies.
    let (_server, client) = start_server(None).await?;
    let mut end_to_end = serde_json::Map::new();
    for (phase, with_policies) in [("without_policies", false), ("with_policies", true)] {
        let namespace = format!("bench-{phase}").replace('_', "-");
        bench_namespace(&client, &namespace).await?;
        if with_policies {
            let (policies, path) = match args.namespace_policies {
                true => (policies_in(Some(&namespace)), format!("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/admissionpolicies")),
                false => (policies_in(None), "/apis/kapsel.io/v1alpha1/clusteradmissionpolicies".to_string()),
            };
            for policy in &policies {
                client.post(&path, policy).await.context("creating a policy")?;
            }
        }
        let path = format!("/api/v1/namespaces/{namespace}/pods");
        let creating = client.clone();
        let (histogram, elapsed) = drive(args.requests, args.concurrency, move |i| {
            let (client, path, body) = (creating.clone(), path.clone(), pod(&namespace, i));
            async move { client.post(&path, &body).await.map(drop) }
        })
        .await
        .with_context(|| format!("creating pods {}", phase.replace('_', " ")))?;
        end_to_end.insert(phase.into(), summary(&histogram, elapsed, args.requests));
    }
    let report = json!({
        "benchmark": "admission",
        "policies": args.policies,
        "matching": args.matching,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "namespace_policies": args.namespace_policies,
        "added_admission_us": {"p50": us(0.5), "p99": us(0.99), "max": added.max() as f64 / 1000.0},
        "create": end_to_end,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "kapsel bench admission: {} {} policies ({} match pods), {} pod creates, {} clients, sqlite datastore",
            args.policies,
            if args.namespace_policies { "namespace (sandboxed)" } else { "cluster" },
            args.matching,
            args.requests,
            args.concurrency
        );
        println!("  admission per create (in-process review)   p50 {:>8.1} µs   p99 {:>8.1} µs", us(0.5), us(0.99));
        for phase in ["without_policies", "with_policies"] {
            let s = &report["create"][phase];
            println!(
                "  creates {:<18} {:>7.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
                phase.replace('_', " "),
                s["per_second"].as_f64().unwrap_or_default(),
                s["p50_ms"].as_f64().unwrap_or_default(),
                s["p99_ms"].as_f64().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `objects` in atomic batches (setting up a bench, not measuring it).
async fn store_all(store: &kapsel_store::Store, objects: impl Iterator<Item = (kapsel_store::Key, Value)>) -> anyhow::Result<()> {
    let creates: Vec<kapsel_store::WriteOp> = objects.map(|(key, object)| kapsel_store::WriteOp::Create { key, object }).collect();
    for chunk in creates.chunks(500) {
        store.write(kapsel_store::WriteOp::Atomic(chunk.to_vec())).await?;
    }
    Ok(())
}

async fn schedule(args: ScheduleBenchArgs) -> anyhow::Result<ExitCode> {
    use kapsel_api::kinds::{node::NODE, plugin::PLUGIN, pod::POD};
    use kapsel_store::{Key, Store, StoreOptions};
    anyhow::ensure!(args.nodes > 0 && args.pods > 0, "--nodes and --pods must be positive");
    let dir = tempfile::tempdir()?;
    let url = args.datastore.clone().unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()));
    let store = Store::open(&url, StoreOptions::default()).await.context("opening the datastore")?;

    let plugin_name = match args.plugin.as_str() {
        "none" => None,
        named => {
            let bytes = match kapsel_plugins::defaults::by_name(named) {
                Some(bytes) => bytes.to_vec(),
                None => std::fs::read(named).with_context(|| format!("reading {named}"))?,
            };
            let digest = format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
            store.put_blob(&digest, &bytes).await?;
            let plugin = json!({
                "apiVersion": PLUGIN.api_version(), "kind": PLUGIN.kind,
                "metadata": {"name": "bench-extension", "uid": "bench-extension", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"world": "scheduler-extension", "digest": digest, "weight": 1},
            });
            store.create(Key::new(PLUGIN.store_key(), "", "bench-extension"), plugin).await?;
            Some(named.to_string())
        }
    };
    let zones = ["zone-a", "zone-b", "zone-c"];
    store_all(
        &store,
        (0..args.nodes).map(|i| {
            let name = format!("node-{i:05}");
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": "2026-01-01T00:00:00Z",
                             "labels": {"topology.kubernetes.io/zone": zones[i % zones.len()], "kubernetes.io/hostname": name}},
                "status": {"capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                           "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]},
            });
            (Key::new(NODE.store_key(), "", name), node)
        }),
    )
    .await
    .context("storing the nodes")?;
    store_all(
        &store,
        (0..args.pods).map(|i| {
            let name = format!("pod-{i:06}");
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{name}"), "creationTimestamp": "2026-01-01T00:00:00Z",
                             "labels": {"app": format!("app-{}", i % 50)}},
                "spec": {"containers": [{"name": "main", "image": "hello:1",
                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
                "status": {"phase": "Pending"},
            });
            (Key::new(POD.store_key(), "bench", name), pod)
        }),
    )
    .await
    .context("storing the pods")?;

    let registry = kapsel_server::plugins::PluginRegistry::start(&store, None, dir.path().join("volumes")).await?;
    if plugin_name.is_some() {
        anyhow::ensure!(registry.get("bench-extension").is_some(), "the scheduler extension did not load (see the log)");
    }
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stats = Arc::new(kapsel_server::scheduler::SchedulerStats::default());
    let started = Instant::now();
    tokio::spawn(kapsel_server::scheduler::run(store.clone(), registry, stopping, Default::default(), stats.clone()));
    let total = args.pods as u64;
    let mut decided_at = None;
    let mut first_bound_at = None;
    loop {
        if decided_at.is_none() && stats.decisions.load(Ordering::Relaxed) >= total {
            decided_at = Some(started.elapsed());
        }
        let bound = stats.bound.load(Ordering::Relaxed);
        if first_bound_at.is_none() && bound > 0 {
            first_bound_at = Some(started.elapsed());
        }
        if bound >= total {
            break;
        }
        let waiting = stats.unschedulable.load(Ordering::Relaxed);
        anyhow::ensure!(waiting == 0, "{waiting} pods found no node: the bench's nodes are too small for its pods");
        anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "only {bound} of {total} pods bound after 15 minutes");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);

    // Persisted: every pod has its node in the store.
    let pods = store.list(&POD.store_key(), Some("bench")).await?.objects;
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    for pod in &pods {
        let node =
            pod.pointer("/spec/nodeName").and_then(Value::as_str).context("a pod the scheduler reported bound has no node in the store")?;
        *per_node.entry(node.to_string()).or_default() += 1;
    }
    let decisions = stats.decisions.load(Ordering::Relaxed).max(1);
    let decide_us = stats.deciding_nanos.load(Ordering::Relaxed) as f64 / decisions as f64 / 1000.0;
    let report = json!({
        "benchmark": "schedule",
        "datastore": store.backend_name(),
        "nodes": args.nodes,
        "pods": args.pods,
        "plugin": plugin_name,
        "nodes_scored_per_pod": kapsel_server::scheduler::nodes_to_score(args.nodes),
        "seconds": elapsed.as_secs_f64(),
        "decided_seconds": decided_at.unwrap_or(elapsed).as_secs_f64(),
        // Start-up (listing the cluster, the extension's first snapshot) until the first binding, and the rate after it.
        "first_binding_seconds": first_bound_at.unwrap_or(elapsed).as_secs_f64(),
        "steady_pods_per_second": (args.pods.saturating_sub(1)) as f64 / (elapsed - first_bound_at.unwrap_or_default()).as_secs_f64().max(1e-9),
        "pods_per_second": args.pods as f64 / elapsed.as_secs_f64(),
        "decided_seconds": decided_at.unwrap_or(elapsed).as_secs_f64(),
        // Start-up (listing the cluster, the extension's first snapshot) until the first binding, and the rate after it.
        "first_binding_seconds": first_bound_at.unwrap_or(elapsed).as_secs_f64(),
        "steady_pods_per_second": (args.pods.saturating_sub(1)) as f64 / (elapsed - first_bound_at.unwrap_or_default()).as_secs_f64().max(1e-9),
        "decision_us_mean": decide_us,
        "bindings_retried": stats.forgotten.load(Ordering::Relaxed),
        "nodes_used": per_node.len(),
        "most_pods_on_a_node": per_node.values().max().copied().unwrap_or(0),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "kapsel bench schedule: {} nodes, {} pods, extension {}, {} datastore",
            args.nodes,
            args.pods,
            plugin_name.as_deref().unwrap_or("none"),
            store.backend_name()
        );
        println!(
            "  {:.0} pods/s ({:.2} s until every binding was written), decision {:.1} µs per pod (mean), {} nodes scored per pod",
            report["pods_per_second"].as_f64().unwrap_or_default(),
            elapsed.as_secs_f64(),
            decide_us,
            report["nodes_scored_per_pod"]
        );
        println!(
            "  first binding after {:.2} s (listing the cluster, the extension's first snapshot), then {:.0} pods/s",
            report["first_binding_seconds"].as_f64().unwrap_or_default(),
            report["steady_pods_per_second"].as_f64().unwrap_or_default()
        );
        println!("  {} nodes used, at most {} pods on one", per_node.len(), report["most_pods_on_a_node"]);
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the embedded node is registered and Ready (a moment after the API answers); returns it.
pub(crate) async fn wait_for_node(client: &Client) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = client.get("/api/v1/nodes").await?;
        let ready = nodes["items"].as_array().into_iter().flatten().find(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if let Some(node) = ready {
            return Ok(node.clone());
        }
        anyhow::ensure!(Instant::now() < deadline, "the embedded node did not become ready within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pod_start(args: PodStartBenchArgs) -> anyhow::Result<ExitCode> {
    use futures::StreamExt as _;
    use std::collections::HashMap;
    anyhow::ensure!(args.pods > 0, "--pods must be positive");
    let (_server, client) = start_server(None).await?;
    wait_for_node(&client).await?;
    let namespace = "bench-start";
    client.post("/api/v1/namespaces", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await?;
    push_image(&client, namespace, "worker", kapsel_node::WORKER).await?;
    let collection = format!("/api/v1/namespaces/{namespace}/pods");
    let revision = client.get(&collection).await?["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let mut events =
        std::pin::pin!(client.watch(&format!("{collection}?watch=true&resourceVersion={revision}&timeoutSeconds=3600")).await?);

    let created: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let creator = {
        let (client, collection, created) = (client.clone(), collection.clone(), created.clone());
        let (pods, rate) = (args.pods, args.rate);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            for i in 0..pods {
                ticker.tick().await;
                let name = format!("start-{i}");
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": "worker:1"}]}});
                created.lock().expect("created lock").insert(name.clone(), Instant::now());
                let (client, collection) = (client.clone(), collection.clone());
                tokio::spawn(async move {
                    if let Err(error) = client.post(&collection, &pod).await {
                        tracing::warn!(pod = %name, error = format!("{error:#}"), "a bench pod was not created");
                    }
                });
            }
        })
    };
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let started = Instant::now();
    let give_up = Instant::now() + Duration::from_secs(60 + args.pods as u64 / args.rate);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < args.pods {
        let remaining = give_up.saturating_duration_since(Instant::now());
        let Ok(Some(event)) = tokio::time::timeout(remaining, events.next()).await else { break };
        let event = event?;
        let object = &event["object"];
        if object.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
            continue;
        }
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let Some(at) = created.lock().expect("created lock").get(&name).copied() else { continue };
        if !seen.insert(name.clone()) {
            continue;
        }
        latencies.saturating_record(at.elapsed().as_micros() as u64);
        // Done with it: its slot on the node is free again.
        let (client, path) = (client.clone(), format!("{collection}/{name}"));
        tokio::spawn(async move {
            let _ = client.delete(&path).await;
        });
    }
    creator.abort();
    let elapsed = started.elapsed();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "benchmark": "pod-start",
        "pods": args.pods,
        "rate": args.rate,
        "running": seen.len(),
        "seconds": elapsed.as_secs_f64(),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": latencies.max() as f64 / 1000.0,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("kapsel bench pod-start: {} worker pods at {}/s on the embedded node", args.pods, args.rate);
        println!(
            "  create → Running (watch): p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} of {} Running)",
            ms(0.5),
            ms(0.99),
            latencies.max() as f64 / 1000.0,
            seen.len(),
            args.pods
        );
    }
    anyhow::ensure!(seen.len() == args.pods, "only {} of {} pods were seen Running", seen.len(), args.pods);
    Ok(ExitCode::SUCCESS)
}
