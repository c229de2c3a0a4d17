//! `kapsel plugin test FILE --world W --cases CASES.yaml`: runs a plug-in
//! locally, with no server, against recorded inputs and compares what it
//! answers with what the cases expect — the way `opa test` lets policy
//! authors iterate. The plug-in runs in the same sandbox as in the
//! supervisor (limits, grants); each case gets a fresh instance (and, for a
//! storage driver, an empty temporary storage root).
//!
//! A cases file:
//!
//! ```yaml
//! config: {zone-label: topology.kubernetes.io/zone}   # passed to configure (a case may override)
//! nodes:                                              # scheduler extensions: the snapshot
//!   - {name: a1, labels: {zone: a}, allocatable: {cpu: "4", memory: 8Gi}}
//! cases:
//!   - name: rejects nodes without room
//!     steps:
//!       - call: filter
//!         with: {pod: {name: web-0, namespace: dev, requests: {cpu: "8"}}}
//!         expect: {feasible: [], rejected: {a1: "needs 8000m CPU, 4000m free"}}
//!   - name: refuses a bad key
//!     config: {nope: "1"}
//!     expectConfigError: unknown config key
//! ```
//!
//! Each step names an export (`call`), its arguments (`with`), and either
//! `expect` (compared as a subset: every key given must match, lists match
//! element by element) or `expectError` (a substring of the refusal or
//! failure). `kapsel plugin test --help` lists the calls of each world.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kapsel_api::Quantity;
use kapsel_plugins::network::{Endpoint, Network, NetworkDriver, Segment};
use kapsel_plugins::scheduler::{
    NodeSummary, PodRef, PodSummary, Resources, SchedulerExtension, Taint, TaintEffect, Toleration, TolerationOperator,
};
use kapsel_plugins::storage::{StorageDriver, VolumeRequest};
use kapsel_plugins::{Grants, Hosted, Limits, PluginError, World};
use serde::Deserialize;
use serde_json::{Value, json};

/// Arguments of `kapsel plugin test`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Calls by world (arguments under `with`):
  scheduler-extension: update-nodes {nodes}; filter {pod, candidates: [node names], default all};
                       score {pod, nodes: [node names], default all}; pod-bound {pod, node}
  storage-driver:      create-volume {namespace, name, size, parameters}; delete-volume {id};
                       attach {id, node}; detach {id, node}
  network-driver:      create-network {namespace}; delete-network {namespace}; attach-pod {namespace, pod};
                       detach-pod {namespace, pod}; allow {from: {namespace, pod, labels}, to: {…}};
                       restore {namespace, segment: {cidr, gateway}, pods: {pod: address}}")]
pub struct TestArgs {
    /// The component (`.wasm`, built for wasm32-wasip2).
    file: PathBuf,
    /// The world it targets: scheduler-extension, storage-driver or network-driver.
    #[arg(long)]
    world: String,
    /// The YAML file of cases.
    #[arg(long)]
    cases: PathBuf,
    /// Deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 100)]
    deadline_ms: u64,
    /// Print every step, not only failures.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CasesFile {
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    nodes: Vec<NodeInput>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    config: Option<BTreeMap<String, String>>,
    nodes: Option<Vec<NodeInput>>,
    /// The case passes when `configure` refuses with a message containing this.
    expect_config_error: Option<String>,
    #[serde(default)]
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Step {
    call: String,
    #[serde(default)]
    with: Value,
    expect: Option<Value>,
    expect_error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ResourcesInput {
    cpu: Option<Value>,
    memory: Option<Value>,
    storage: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeInput {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    taints: Vec<TaintInput>,
    #[serde(default)]
    allocatable: ResourcesInput,
    #[serde(default)]
    requested: ResourcesInput,
    #[serde(default = "ready")]
    ready: bool,
    #[serde(default)]
    pods: Vec<PodRefInput>,
}

fn ready() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaintInput {
    key: String,
    #[serde(default)]
    value: String,
    effect: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodRefInput {
    namespace: String,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodInput {
    #[serde(default = "default_namespace")]
    namespace: String,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    requests: ResourcesInput,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    tolerations: Vec<TolerationInput>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TolerationInput {
    #[serde(default)]
    key: String,
    #[serde(default = "equal")]
    operator: String,
    #[serde(default)]
    value: String,
    effect: Option<String>,
}

fn equal() -> String {
    "Equal".into()
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let world = World::parse(&args.world)
        .with_context(|| format!("unknown world {:?}: use scheduler-extension, storage-driver or network-driver", args.world))?;
    let text = std::fs::read_to_string(&args.cases).with_context(|| format!("reading {}", args.cases.display()))?;
    let file: CasesFile = serde_saphyr::from_str_with_options(&text, super::yaml_options())
        .with_context(|| format!("{} is not a cases file", args.cases.display()))?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let component = kapsel_plugins::compile(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let limits = Limits { deadline: std::time::Duration::from_millis(args.deadline_ms), ..Limits::default() };

    let (mut passed, mut failed) = (0, 0);
    for case in &file.cases {
        let config: Vec<(String, String)> = case.config.as_ref().unwrap_or(&file.config).clone().into_iter().collect();
        let nodes = case.nodes.as_ref().unwrap_or(&file.nodes);
        let storage_root = tempfile::tempdir().context("a temporary storage root")?;
        let grants = Grants { storage_root: Some(storage_root.path().to_path_buf()), networks: BTreeMap::new() };
        let outcome = match kapsel_plugins::load(world, "test", &component, config, limits, grants) {
            Err(PluginError::Config(message)) if case.expect_config_error.is_some() => {
                let expected = case.expect_config_error.as_deref().unwrap_or_default();
                if message.contains(expected) {
                    Ok(Vec::new())
                } else {
                    Err(format!("configure refused with {message:?}, which does not contain {expected:?}"))
                }
            }
            Err(error @ PluginError::Rejected(_)) => bail!("{}: {error}", args.file.display()),
            Err(error) => Err(format!("configure: {error}")),
            Ok(_) if case.expect_config_error.is_some() => Err("configure accepted the configuration; expected a refusal".into()),
            Ok(mut hosted) => run_case(&mut hosted, nodes, &case.steps),
        };
        match outcome {
            Ok(trace) => {
                passed += 1;
                println!("PASS  {}", case.name);
                if args.verbose {
                    trace.iter().for_each(|line| println!("      {line}"));
                }
            }
            Err(message) => {
                failed += 1;
                println!("FAIL  {}\n      {}", case.name, message.replace('\n', "\n      "));
            }
        }
    }
    println!("{} cases: {passed} passed, {failed} failed", passed + failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs a case's steps; `Ok` with a line per step, or why the first failing step failed.
fn run_case(hosted: &mut Hosted, nodes: &[NodeInput], steps: &[Step]) -> Result<Vec<String>, String> {
    let mut snapshot: Vec<String> = Vec::new();
    if let Hosted::Scheduler(extension) = hosted
        && !nodes.is_empty()
    {
        snapshot = push_nodes(extension, nodes).map_err(|e| format!("update-nodes: {e}"))?;
    }
    let mut trace = Vec::new();
    for (number, step) in steps.iter().enumerate() {
        let label = format!("step {} ({})", number + 1, step.call);
        let answer = match hosted {
            Hosted::Scheduler(extension) => scheduler_call(extension, &mut snapshot, step),
            Hosted::Storage(driver) => storage_call(driver, step),
            Hosted::Network(driver) => network_call(driver, step),
        }
        .map_err(|e| format!("{label}: {e}"))?;
        match (&answer, &step.expect_error) {
            (Err(message), Some(expected)) if message.contains(expected.as_str()) => {}
            (Err(message), Some(expected)) => return Err(format!("{label}: failed with {message:?}, which does not contain {expected:?}")),
            (Ok(value), Some(expected)) => return Err(format!("{label}: answered {value}, expected an error containing {expected:?}")),
            (Err(message), None) => return Err(format!("{label}: {message}")),
            (Ok(value), None) => {
                if let Some(expected) = &step.expect {
                    subset(expected, value, "")
                        .map_err(|at| format!("{label}: expected {expected}\n  got {value}\n  (differs at {at})"))?;
                }
            }
        }
        trace.push(format!("{label}: {}", answer.unwrap_or_else(|e| Value::String(format!("error: {e}")))));
    }
    Ok(trace)
}

/// Whether `actual` has everything `expected` says; `Err` names the first difference.
fn subset(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => expected.iter().try_for_each(|(key, value)| {
            let path = format!("{at}.{key}");
            actual.get(key).ok_or_else(|| path.clone()).and_then(|actual| subset(value, actual, &path))
        }),
        (Value::Array(expected), Value::Array(actual)) if expected.len() == actual.len() => {
            expected.iter().zip(actual).enumerate().try_for_each(|(i, (e, a))| subset(e, a, &format!("{at}[{i}]")))
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (e, a) if e == a => Ok(()),
        _ => Err(if at.is_empty() { "the top".into() } else { at.to_string() }),
    }
}

/// A step's answer: the value, or the refusal/failure as text. The outer
/// error is a mistake in the cases file.
type Answer = Result<Result<Value, String>, String>;

fn args<T: for<'de> Deserialize<'de>>(step: &Step) -> Result<T, String> {
    let with = if step.with.is_null() { json!({}) } else { step.with.clone() };
    serde_json::from_value(with).map_err(|e| format!("bad `with`: {e}"))
}

fn failed(error: PluginError) -> String {
    format!("plug-in failed: {error}")
}

fn quantity(value: &Option<Value>, what: &str, millis: bool) -> Result<u64, String> {
    let Some(value) = value else { return Ok(0) };
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("{what}: expected a quantity, got {other}")),
    };
    let quantity = Quantity::parse(&text).map_err(|e| format!("{what}: {e}"))?;
    let amount = if millis { quantity.millis() } else { quantity.units_ceil() };
    u64::try_from(amount).map_err(|_| format!("{what}: must not be negative"))
}

fn resources(input: &ResourcesInput) -> Result<Resources, String> {
    Ok(Resources {
        cpu_millicores: quantity(&input.cpu, "cpu", true)?,
        memory_bytes: quantity(&input.memory, "memory", false)?,
        storage_bytes: quantity(&input.storage, "storage", false)?,
    })
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn effect(text: &str) -> Result<TaintEffect, String> {
    match text {
        "NoSchedule" => Ok(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(TaintEffect::NoExecute),
        other => Err(format!("unknown taint effect {other:?} (NoSchedule, PreferNoSchedule, NoExecute)")),
    }
}

fn node(input: &NodeInput) -> Result<NodeSummary, String> {
    Ok(NodeSummary {
        name: input.name.clone(),
        labels: pairs(&input.labels),
        taints: input
            .taints
            .iter()
            .map(|t| Ok(Taint { key: t.key.clone(), value: t.value.clone(), effect: effect(&t.effect)? }))
            .collect::<Result<_, String>>()?,
        allocatable: resources(&input.allocatable)?,
        requested: resources(&input.requested)?,
        ready: input.ready,
        pods: input
            .pods
            .iter()
            .map(|p| PodRef { namespace: p.namespace.clone(), name: p.name.clone(), labels: pairs(&p.labels) })
            .collect(),
    })
}

fn pod(input: &PodInput) -> Result<PodSummary, String> {
    Ok(PodSummary {
        namespace: input.namespace.clone(),
        name: input.name.clone(),
        labels: pairs(&input.labels),
        requests: resources(&input.requests)?,
        node_selector: pairs(&input.node_selector),
        tolerations: input
            .tolerations
            .iter()
            .map(|t| {
                let operator = match t.operator.as_str() {
                    "Equal" => TolerationOperator::Equal,
                    "Exists" => TolerationOperator::Exists,
                    other => return Err(format!("unknown toleration operator {other:?} (Equal, Exists)")),
                };
                let effect = t.effect.as_deref().map(effect).transpose()?;
                Ok(Toleration { key: t.key.clone(), operator, value: t.value.clone(), effect })
            })
            .collect::<Result<_, String>>()?,
    })
}

/// Pushes the snapshot; returns the node names by index.
fn push_nodes(extension: &mut SchedulerExtension, nodes: &[NodeInput]) -> Result<Vec<String>, String> {
    let summaries = nodes.iter().map(node).collect::<Result<Vec<_>, String>>()?;
    extension.update_nodes(summaries).map_err(failed)?;
    Ok(nodes.iter().map(|n| n.name.clone()).collect())
}

fn indices(snapshot: &[String], names: Option<&[String]>) -> Result<Vec<u32>, String> {
    match names {
        None => Ok((0..snapshot.len() as u32).collect()),
        Some(names) => names
            .iter()
            .map(|name| {
                snapshot.iter().position(|n| n == name).map(|i| i as u32).ok_or_else(|| format!("no node {name:?} in the snapshot"))
            })
            .collect(),
    }
}

fn name_of(snapshot: &[String], index: u32) -> String {
    snapshot.get(index as usize).cloned().unwrap_or_else(|| format!("#{index}"))
}

fn scheduler_call(extension: &mut SchedulerExtension, snapshot: &mut Vec<String>, step: &Step) -> Answer {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nodes {
        nodes: Vec<NodeInput>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PodOn {
        pod: PodInput,
        candidates: Option<Vec<String>>,
        nodes: Option<Vec<String>>,
        node: Option<String>,
    }
    match step.call.as_str() {
        "update-nodes" => {
            let Nodes { nodes } = args(step)?;
            Ok(push_nodes(extension, &nodes).map(|names| {
                *snapshot = names;
                Value::Null
            }))
        }
        "filter" | "score" | "pod-bound" => {
            let PodOn { pod: input, candidates, nodes, node } = args(step)?;
            let summary = pod(&input)?;
            Ok(match step.call.as_str() {
                "filter" => {
                    let candidates = indices(snapshot, candidates.as_deref())?;
                    extension.filter(&summary, &candidates).map_err(failed).map(|filtered| {
                        let feasible: Vec<String> = filtered.feasible.iter().map(|&index| name_of(snapshot, index)).collect();
                        let rejected: serde_json::Map<String, Value> =
                            filtered.rejected.iter().map(|r| (name_of(snapshot, r.index), json!(r.reason))).collect();
                        json!({"feasible": feasible, "rejected": rejected})
                    })
                }
                "score" => {
                    let feasible = indices(snapshot, nodes.as_deref())?;
                    extension.score(&summary, &feasible).map_err(failed).map(|scores| {
                        Value::Object(scores.into_iter().map(|(index, score)| (name_of(snapshot, index), json!(score))).collect())
                    })
                }
                _ => {
                    let node = node.ok_or("pod-bound needs `node`")?;
                    let index = indices(snapshot, Some(std::slice::from_ref(&node)))?[0];
                    extension.pod_bound(&summary, index).map_err(failed).map(|()| Value::Null)
                }
            })
        }
        other => Err(format!("a scheduler extension has no call {other:?} (update-nodes, filter, score, pod-bound)")),
    }
}

fn storage_call(driver: &mut StorageDriver, step: &Step) -> Answer {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Create {
        namespace: String,
        name: String,
        size: Value,
        #[serde(default)]
        parameters: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Id {
        id: String,
        node: Option<String>,
    }
    let refused = |e: kapsel_plugins::storage::StorageError| kapsel_plugins::storage::describe(&e);
    let answer: Result<Result<Value, String>, PluginError> = match step.call.as_str() {
        "create-volume" => {
            let Create { namespace, name, size, parameters } = args(step)?;
            let request =
                VolumeRequest { namespace, name, size_bytes: quantity(&Some(size), "size", false)?, parameters: pairs(&parameters) };
            driver.create_volume(&request).map(|r| r.map(|v| json!({"id": v.id, "sizeBytes": v.size_bytes})).map_err(refused))
        }
        "delete-volume" | "attach" | "detach" => {
            let Id { id, node } = args(step)?;
            let node = || node.clone().ok_or_else(|| format!("{} needs `node`", step.call));
            match step.call.as_str() {
                "delete-volume" => driver.delete_volume(&id).map(|r| r.map(|()| Value::Null).map_err(refused)),
                "attach" => {
                    driver.attach(&id, &node()?).map(|r| r.map(|m| json!({"path": m.path, "readOnly": m.read_only})).map_err(refused))
                }
                _ => driver.detach(&id, &node()?).map(|r| r.map(|()| Value::Null).map_err(refused)),
            }
        }
        other => return Err(format!("a storage driver has no call {other:?} (create-volume, delete-volume, attach, detach)")),
    };
    Ok(answer.unwrap_or_else(|e| Err(failed(e))))
}

fn network_call(driver: &mut NetworkDriver, step: &Step) -> Answer {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Target {
        namespace: String,
        pod: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EndpointInput {
        namespace: String,
        pod: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Allow {
        from: EndpointInput,
        to: EndpointInput,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SegmentInput {
        cidr: String,
        gateway: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Restore {
        namespace: String,
        segment: SegmentInput,
        #[serde(default)]
        pods: BTreeMap<String, String>,
    }
    let refused = |e: kapsel_plugins::network::NetworkError| kapsel_plugins::network::describe(&e);
    let endpoint = |e: EndpointInput| Endpoint { namespace: e.namespace, pod: e.pod, labels: pairs(&e.labels) };
    let answer: Result<Result<Value, String>, PluginError> = match step.call.as_str() {
        "create-network" | "delete-network" | "attach-pod" | "detach-pod" => {
            let Target { namespace, pod } = args(step)?;
            let pod = || pod.clone().ok_or_else(|| format!("{} needs `pod`", step.call));
            match step.call.as_str() {
                "create-network" => {
                    driver.create_network(&namespace).map(|r| r.map(|s| json!({"cidr": s.cidr, "gateway": s.gateway})).map_err(refused))
                }
                "delete-network" => driver.delete_network(&namespace).map(|r| r.map(|()| Value::Null).map_err(refused)),
                "attach-pod" => driver.attach_pod(&namespace, &pod()?).map(|r| r.map(Value::String).map_err(refused)),
                _ => driver.detach_pod(&namespace, &pod()?).map(|r| r.map(|()| Value::Null).map_err(refused)),
            }
        }
        "allow" => {
            let Allow { from, to } = args(step)?;
            driver.allow(&endpoint(from), &endpoint(to)).map(|allowed| Ok(Value::Bool(allowed)))
        }
        "restore" => {
            // Restoring is what a fresh instance gets: load the network into the host's record and start over.
            let Restore { namespace, segment, pods } = args(step)?;
            let network = Network { segment: Segment { cidr: segment.cidr, gateway: segment.gateway }, pods };
            driver.restore_network(&namespace, network).map(|r| r.map(|()| Value::Null).map_err(refused))
        }
        other => {
            return Err(format!(
                "a network driver has no call {other:?} (create-network, delete-network, attach-pod, detach-pod, allow, restore)"
            ));
        }
    };
    Ok(answer.unwrap_or_else(|e| Err(failed(e))))
}
