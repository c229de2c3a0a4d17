//! The scheduler's decision for one pod, without I/O: which nodes may run
//! it (built-in filters, as kube-scheduler's: the pod's `nodeName`, node
//! Ready and schedulable, resources fit — requests against allocatable minus
//! what is bound, pod count —, `nodeSelector`, taints and tolerations),
//! which of them is best (least-allocated score), and, when none is, a
//! message that counts why: `0/3 nodes are available: 2 Insufficient
//! memory, 1 node(s) had untolerated taint {dedicated: gpu}.`
//!
//! Nodes and pods are read from their stored objects into the plug-in
//! world's types ([`NodeSummary`], [`PodSummary`]), so the snapshot the
//! built-in filters judge is the one scheduler extensions are given. At
//! scale only a sample of the feasible nodes is scored, as kube-scheduler's
//! `percentageOfNodesToScore` does ([`nodes_to_score`]), so the cost per pod
//! stays flat as nodes grow.

use std::collections::BTreeMap;

use kapsel_api::{Quantity, object};
use kapsel_plugins::scheduler::{NodeSummary, PodRef, PodSummary, Resources, Taint, TaintEffect, Toleration, TolerationOperator};
use serde_json::Value;

/// A node as the scheduler sees it: its summary for extensions, and what
/// only the built-in filters need.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub summary: NodeSummary,
    /// Most pods the node takes (`status.allocatable.pods`; 110 when unset, Kubernetes' default).
    pub max_pods: u64,
    /// `spec.unschedulable` (cordoned).
    pub cordoned: bool,
}

/// Kubernetes' default of a node's pod capacity.
const DEFAULT_MAX_PODS: u64 = 110;

fn quantity(value: Option<&Value>) -> Option<Quantity> {
    match value? {
        Value::String(text) => Quantity::parse(text).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// CPU, memory and ephemeral storage of a resource map (`allocatable`, `requests`).
fn resources(map: Option<&Value>) -> Resources {
    let at = |name: &str| quantity(map.and_then(|m| m.get(name)));
    Resources {
        cpu_millicores: at("cpu").map_or(0, |q| q.millis().max(0) as u64),
        memory_bytes: at("memory").map_or(0, |q| q.units_ceil().max(0) as u64),
        storage_bytes: at("ephemeral-storage").map_or(0, |q| q.units_ceil().max(0) as u64),
    }
}

fn add(total: &mut Resources, more: &Resources) {
    total.cpu_millicores += more.cpu_millicores;
    total.memory_bytes += more.memory_bytes;
    total.storage_bytes += more.storage_bytes;
}

fn labels(map: Option<&Value>) -> Vec<(String, String)> {
    map.and_then(Value::as_object).into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
}

fn effect(text: &str) -> Option<TaintEffect> {
    match text {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// The elements of the array at `pointer` (none when it is absent).
fn items<'a>(value: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    value.pointer(pointer).and_then(Value::as_array).into_iter().flatten()
}

/// A pod's requests as the scheduler counts them: its effective requests
/// ([`kapsel_api::kinds::pod::effective_resources`], the rule the quotas charge by too).
pub fn pod_requests(pod: &Value) -> Resources {
    let (requests, _) = kapsel_api::kinds::pod::effective_resources(pod);
    let at = |name: &str| requests.get(name);
    Resources {
        cpu_millicores: at("cpu").map_or(0, |q| q.millis().max(0) as u64),
        memory_bytes: at("memory").map_or(0, |q| q.units_ceil().max(0) as u64),
        storage_bytes: at("ephemeral-storage").map_or(0, |q| q.units_ceil().max(0) as u64),
    }
}

/// The summary of a pod to place.
pub fn pod_summary(pod: &Value) -> PodSummary {
    let tolerations = items(pod, "/spec/tolerations")
        .map(|t| {
            let text = |field: &str| t.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
            Toleration {
                key: text("key"),
                operator: if text("operator") == "Exists" { TolerationOperator::Exists } else { TolerationOperator::Equal },
                value: text("value"),
                effect: effect(&text("effect")),
            }
        })
        .collect();
    PodSummary {
        namespace: object::namespace(pod).unwrap_or_default().to_string(),
        name: object::name(pod).unwrap_or_default().to_string(),
        labels: labels(pod.pointer("/metadata/labels")),
        requests: pod_requests(pod),
        node_selector: labels(pod.pointer("/spec/nodeSelector")),
        tolerations,
    }
}

/// A pod as a node's summary lists it.
pub fn pod_ref(pod: &Value) -> PodRef {
    PodRef {
        namespace: object::namespace(pod).unwrap_or_default().to_string(),
        name: object::name(pod).unwrap_or_default().to_string(),
        labels: labels(pod.pointer("/metadata/labels")),
    }
}

/// A node as a candidate, with nothing bound to it yet.
pub fn candidate(node: &Value) -> Candidate {
    let allocatable = node.pointer("/status/allocatable").or_else(|| node.pointer("/status/capacity"));
    let ready = object::condition_is_true(node, "Ready");
    let taints = items(node, "/spec/taints")
        .filter_map(|t| {
            Some(Taint {
                key: t.get("key")?.as_str()?.to_string(),
                value: t.get("value").and_then(Value::as_str).unwrap_or_default().to_string(),
                effect: effect(t.get("effect")?.as_str()?)?,
            })
        })
        .collect();
    Candidate {
        summary: NodeSummary {
            name: object::name(node).unwrap_or_default().to_string(),
            labels: labels(node.pointer("/metadata/labels")),
            taints,
            allocatable: resources(allocatable),
            requested: Resources { cpu_millicores: 0, memory_bytes: 0, storage_bytes: 0 },
            ready,
            pods: Vec::new(),
        },
        max_pods: quantity(allocatable.and_then(|a| a.get("pods"))).map_or(DEFAULT_MAX_PODS, |q| q.units_ceil().max(0) as u64),
        cordoned: node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
    }
}

/// Counts `pod` (its `requests` and reference) on `node`.
pub fn place(node: &mut NodeSummary, pod: PodRef, requests: &Resources) {
    add(&mut node.requested, requests);
    node.pods.push(pod);
}

/// Takes `pod` (its `requests`) off `node`; `false` when it was not there.
pub fn unplace(node: &mut NodeSummary, namespace: &str, name: &str, requests: &Resources) -> bool {
    let Some(at) = node.pods.iter().position(|p| p.namespace == namespace && p.name == name) else { return false };
    node.pods.swap_remove(at);
    node.requested.cpu_millicores = node.requested.cpu_millicores.saturating_sub(requests.cpu_millicores);
    node.requested.memory_bytes = node.requested.memory_bytes.saturating_sub(requests.memory_bytes);
    node.requested.storage_bytes = node.requested.storage_bytes.saturating_sub(requests.storage_bytes);
    true
}

/// Why a built-in filter rejects a node, worded as kube-scheduler words it
/// (the message counts nodes per reason).
pub fn rejection(pod: &PodSummary, pinned: Option<&str>, node: &Candidate) -> Option<String> {
    let summary = &node.summary;
    if pinned.is_some_and(|name| name != summary.name) {
        return Some("node(s) didn't match the requested node name".into());
    }
    if !summary.ready {
        return Some("node(s) were not ready".into());
    }
    if node.cordoned {
        return Some("node(s) were unschedulable".into());
    }
    let free = |allocatable: u64, requested: u64| allocatable.saturating_sub(requested);
    let (alloc, used, wants) = (&summary.allocatable, &summary.requested, &pod.requests);
    if summary.pods.len() as u64 >= node.max_pods {
        return Some("Too many pods".into());
    }
    if wants.cpu_millicores > free(alloc.cpu_millicores, used.cpu_millicores) {
        return Some("Insufficient cpu".into());
    }
    if wants.memory_bytes > free(alloc.memory_bytes, used.memory_bytes) {
        return Some("Insufficient memory".into());
    }
    if wants.storage_bytes > 0 && wants.storage_bytes > free(alloc.storage_bytes, used.storage_bytes) {
        return Some("Insufficient ephemeral-storage".into());
    }
    if !pod.node_selector.iter().all(|(k, v)| summary.labels.iter().any(|(lk, lv)| lk == k && lv == v)) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    let tolerated = |taint: &Taint| {
        pod.tolerations.iter().any(|t| {
            let key = t.key.is_empty() || t.key == taint.key;
            let value = matches!(t.operator, TolerationOperator::Exists) || t.value == taint.value;
            let effect = t.effect.is_none_or(|e| e == taint.effect);
            // An empty key with Exists tolerates everything.
            key && value && effect && (!t.key.is_empty() || matches!(t.operator, TolerationOperator::Exists))
        })
    };
    if let Some(taint) = summary.taints.iter().find(|t| t.effect != TaintEffect::PreferNoSchedule && !tolerated(t)) {
        let value = if taint.value.is_empty() { String::new() } else { format!(": {}", taint.value) };
        return Some(format!("node(s) had untolerated taint {{{}{value}}}", taint.key));
    }
    None
}

/// Most distinct reasons a message lists (plug-ins' reasons may name figures per node).
const MAX_REASONS: usize = 8;

/// The message of a pod that fits nowhere, counting nodes per reason (the
/// most frequent first), as kube-scheduler's `FailedScheduling`:
/// `0/3 nodes are available: 2 Insufficient memory, 1 rejected by plug-in spread: full.`
pub fn unschedulable_message(total: usize, rejected: &BTreeMap<String, usize>) -> String {
    if total == 0 {
        return "0/0 nodes are available: no nodes are registered.".into();
    }
    let mut reasons: Vec<(&String, &usize)> = rejected.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut listed: Vec<String> = reasons.iter().take(MAX_REASONS).map(|(reason, count)| format!("{count} {reason}")).collect();
    if reasons.len() > MAX_REASONS {
        let others: usize = reasons[MAX_REASONS..].iter().map(|(_, count)| **count).sum();
        listed.push(format!("{others} for {} other reasons", reasons.len() - MAX_REASONS));
    }
    format!("0/{total} nodes are available: {}.", listed.join(", "))
}

/// The built-in score of a node for a pod, 0–100: how much CPU and memory
/// would stay free after placing it (least-allocated), averaged.
pub fn least_allocated(pod: &PodSummary, node: &NodeSummary) -> u8 {
    let free_share = |allocatable: u64, requested: u64, wanted: u64| {
        if allocatable == 0 {
            return 0;
        }
        let used = (requested + wanted).min(allocatable);
        (allocatable - used) * 100 / allocatable
    };
    let cpu = free_share(node.allocatable.cpu_millicores, node.requested.cpu_millicores, pod.requests.cpu_millicores);
    let memory = free_share(node.allocatable.memory_bytes, node.requested.memory_bytes, pod.requests.memory_bytes);
    ((cpu + memory) / 2) as u8
}

/// How many feasible nodes to score, as kube-scheduler's adaptive
/// `percentageOfNodesToScore`: all of them up to 100 nodes; beyond, 50 %
/// less 1 % per 125 nodes, never under 5 % nor under 100 nodes.
pub fn nodes_to_score(nodes: usize) -> usize {
    const MIN_NODES: usize = 100;
    if nodes <= MIN_NODES {
        return nodes;
    }
    let percent = (50usize.saturating_sub(nodes / 125)).max(5);
    (nodes * percent / 100).max(MIN_NODES)
}

#[cfg(test)]
mod tests {
    use kapsel_api::kinds::pod::{bound_node, has_ended};
    use serde_json::json;

    use super::*;

    // What the controller does incrementally (`Cluster` in the scheduler's
    // module), done at once over a listing: the tests' view of a cluster.

    /// The candidates of a cluster: every node, with the pods bound to it (and
    /// not ended) counted in its `requested`.
    pub fn candidates(nodes: &[Value], pods: &[Value]) -> Vec<Candidate> {
        let mut bound: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for pod in pods.iter().filter(|p| !has_ended(p)) {
            if let Some(node) = bound_node(pod) {
                bound.entry(node).or_default().push(pod);
            }
        }
        nodes
            .iter()
            .map(|node| {
                let mut candidate = candidate(node);
                for pod in bound.get(candidate.summary.name.as_str()).map(Vec::as_slice).unwrap_or_default() {
                    add(&mut candidate.summary.requested, &pod_requests(pod));
                    candidate.summary.pods.push(pod_ref(pod));
                }
                candidate
            })
            .collect()
    }

    /// The outcome of the built-in filters for one pod.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Filtered {
        /// Indices of the feasible nodes.
        pub feasible: Vec<u32>,
        /// How many nodes each reason rejected.
        pub rejected: BTreeMap<String, usize>,
    }

    /// Runs the built-in filters of `pod` (pinned to `node_name`, if set) over
    /// every node.
    pub fn filter(pod: &PodSummary, node_name: Option<&str>, nodes: &[Candidate]) -> Filtered {
        let mut filtered = Filtered { feasible: Vec::new(), rejected: BTreeMap::new() };
        for (index, node) in nodes.iter().enumerate() {
            match rejection(pod, node_name, node) {
                None => filtered.feasible.push(index as u32),
                Some(reason) => *filtered.rejected.entry(reason).or_default() += 1,
            }
        }
        filtered
    }

    fn node(name: &str, cpu: &str, memory: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"zone": "a"}},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "3"},
                       "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(name: &str, cpu: &str, memory: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "dev"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}})
    }

    #[test]
    fn bound_pods_count_against_their_node_until_they_end() {
        let mut on_a = pod("on-a", "1", "1Gi");
        on_a["spec"]["nodeName"] = json!("a");
        let mut done = pod("done", "2", "2Gi");
        done["spec"]["nodeName"] = json!("a");
        done["status"] = json!({"phase": "Succeeded"});
        let nodes = candidates(&[node("a", "4", "8Gi"), node("b", "2", "4Gi")], &[on_a, done, pod("pending", "1", "1Gi")]);
        assert_eq!(nodes[0].summary.requested.cpu_millicores, 1000);
        assert_eq!(nodes[0].summary.requested.memory_bytes, 1 << 30);
        assert_eq!(nodes[0].summary.pods.len(), 1);
        assert_eq!(nodes[1].summary.pods.len(), 0);
        assert_eq!(nodes[0].max_pods, 3);
        assert!(nodes[0].summary.ready);
    }

    #[test]
    fn a_pod_that_fits_nowhere_gets_a_message_that_counts_why() {
        let mut tainted = node("gpu", "64", "256Gi");
        tainted["spec"] = json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
        let mut down = node("down", "64", "256Gi");
        down["status"]["conditions"][0]["status"] = json!("False");
        let nodes = candidates(&[node("a", "2", "4Gi"), node("b", "2", "4Gi"), tainted, down], &[]);
        let big = pod_summary(&pod("big", "1", "8Gi"));
        let filtered = filter(&big, None, &nodes);
        assert!(filtered.feasible.is_empty());
        assert_eq!(
            unschedulable_message(nodes.len(), &filtered.rejected),
            "0/4 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were not ready."
        );

        // Tolerating the taint and selecting its label places it there.
        let mut tolerant = pod("tolerant", "1", "8Gi");
        tolerant["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
        tolerant["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert_eq!(filter(&pod_summary(&tolerant), None, &nodes).feasible, [2]);
        // A pod pinned by nodeName goes nowhere else.
        assert_eq!(filter(&pod_summary(&pod("small", "1", "1Gi")), Some("b"), &nodes).feasible, [1]);
    }

    #[test]
    fn scores_prefer_the_emptier_node_and_sampling_keeps_cost_flat() {
        let mut busy = pod("busy", "3", "6Gi");
        busy["spec"]["nodeName"] = json!("a");
        let nodes = candidates(&[node("a", "4", "8Gi"), node("b", "4", "8Gi")], &[busy]);
        let p = pod_summary(&pod("p", "1", "1Gi"));
        assert!(least_allocated(&p, &nodes[1].summary) > least_allocated(&p, &nodes[0].summary));
        assert_eq!(least_allocated(&p, &nodes[1].summary), 81);
        assert_eq!(nodes_to_score(50), 50);
        assert_eq!(nodes_to_score(1000), 420);
        assert_eq!(nodes_to_score(5000), 500);
        assert_eq!(nodes_to_score(20_000), 1000);
    }
}
