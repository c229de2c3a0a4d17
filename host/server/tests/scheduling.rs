//! The scheduler against the API, in-process: pods are bound to nodes that
//! fit them (`spec.nodeName`, `PodScheduled`, a `Scheduled` Event); a pod
//! that fits nowhere waits with a message that counts why and is placed
//! when a node that fits joins; scheduler extensions (real components from
//! `plugins/`) narrow and rank nodes under their weights and failure policies.

mod common;

use common::*;
use serde_json::{Value, json};

const NODES: &str = "/api/v1/nodes";
const PLUGINS: &str = "/apis/kapsel.io/v1alpha1/plugins";

fn node(name: &str, cpu: &str, memory: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": name}},
        "status": {"capacity": {"cpu": cpu, "memory": memory, "pods": "110"}, "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn sized_pod(name: &str, cpu: &str) -> Value {
    let mut pod = labelled_pod(name, json!({"app": "web"}));
    pod["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu, "memory": "64Mi"}});
    pod
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == kind)
}

/// Waits until the pod `name` of `dev` is bound, and returns it.
async fn bound(api: &Api, name: &str) -> Value {
    eventually(api, &pod_path("dev", name), &format!("pod {name} bound"), |pod| pod["spec"]["nodeName"].is_string()).await
}

/// Waits until the pod `name` of `dev` says why it waits, and returns it.
async fn waiting(api: &Api, name: &str, reason: &str) -> Value {
    eventually(api, &pod_path("dev", name), &format!("pod {name} waiting"), |pod| {
        condition(pod, "PodScheduled").is_some_and(|c| c["status"] == "False" && c["reason"] == reason)
    })
    .await
}

async fn upload(api: &Api, name: &str, bytes: &[u8], spec: Value) {
    let mut manifest = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Plugin", "metadata": {"name": name},
        "spec": {"world": "scheduler-extension"}});
    for (key, value) in spec.as_object().into_iter().flatten() {
        manifest["spec"][key] = value.clone();
    }
    api.post(PLUGINS, manifest).await.ok(201);
    let path = format!("{PLUGINS}/{name}/component?world=scheduler-extension");
    api.call(Some(ADMIN), http::Method::POST, &path, &[("content-type", "application/wasm")], bytes.to_vec()).await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_go_to_nodes_that_fit_and_the_rest_wait_with_the_reasons_counted() {
    let api = Api::start().await;
    kapsel_server::scheduler::start(&api.app, Default::default());
    api.post(NODES, node("small", "1", "2Gi", true)).await.ok(201);
    api.post(NODES, node("big", "4", "8Gi", true)).await.ok(201);
    api.post(NODES, node("down", "64", "256Gi", false)).await.ok(201);

    api.create_pod("dev", sized_pod("two-cpus", "2")).await;
    let pod = bound(&api, "two-cpus").await;
    assert_eq!(pod["spec"]["nodeName"], "big");
    let scheduled = condition(&pod, "PodScheduled").expect("PodScheduled");
    assert_eq!(scheduled["status"], "True");
    assert_eq!(pod["status"]["phase"], "Pending", "bound, not running yet");
    let events = api.get("/api/v1/namespaces/dev/events").await;
    let event = events.items().into_iter().find(|e| e["reason"] == "Scheduled").expect("a Scheduled event");
    assert_eq!(event["message"], "Successfully assigned dev/two-cpus to big");
    assert_eq!(event["involvedObject"]["name"], "two-cpus");

    // Too big for every ready node: it waits and says why, per node.
    api.create_pod("dev", sized_pod("huge", "6")).await;
    let pod = waiting(&api, "huge", "Unschedulable").await;
    assert_eq!(
        condition(&pod, "PodScheduled").unwrap()["message"],
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were not ready."
    );
    // The event follows the condition (both written in the background).
    eventually(&api, "/api/v1/namespaces/dev/events", "a FailedScheduling event", |events| {
        events["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == "huge"))
    })
    .await;

    // A node that fits joins: the waiting pod is placed there.
    api.post(NODES, node("bigger", "8", "16Gi", true)).await.ok(201);
    assert_eq!(bound(&api, "huge").await["spec"]["nodeName"], "bigger");

    // The first pod ends: its CPU is free again for the next one.
    let mut ended = api.get(&pod_path("dev", "two-cpus")).await.body;
    ended["status"]["phase"] = json!("Succeeded");
    api.put(&format!("{}/status", pod_path("dev", "two-cpus")), ended).await.ok(200);
    api.create_pod("dev", sized_pod("again", "4")).await;
    assert_eq!(bound(&api, "again").await["spec"]["nodeName"], "big");

    // A pod's node is the scheduler's to set and stays.
    let mut moved = api.get(&pod_path("dev", "again")).await.body;
    moved["spec"]["nodeName"] = json!("small");
    api.put(&pod_path("dev", "again"), moved.clone()).await.failure(422, "Invalid").mentions(&["spec.nodeName", "immutable"]);
    moved["spec"].as_object_mut().unwrap().remove("nodeName");
    let kept = api.put(&pod_path("dev", "again"), moved).await;
    kept.ok(200);
    assert_eq!(kept.body["spec"]["nodeName"], "big", "an update that leaves the node out keeps it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_rank_nodes_by_their_weight_and_fail_under_their_policy() {
    let api = Api::start().await;
    kapsel_server::scheduler::start(&api.app, Default::default());
    for name in ["a", "b", "c"] {
        api.post(NODES, node(name, "4", "8Gi", true)).await.ok(201);
    }
    // Built in, least-allocated spreads pods; the bin packer, weighted
    // above it, packs them onto the node that is fullest already.
    upload(&api, "packer", kapsel_plugins::defaults::BINPACK, json!({"weight": 10})).await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("packed-{i}");
        api.create_pod("dev", sized_pod(&name, "500m")).await;
        nodes.push(bound(&api, &name).await["spec"]["nodeName"].as_str().unwrap().to_string());
    }
    assert!(nodes.iter().all(|n| *n == nodes[0]), "the bin packer keeps pods together: {nodes:?}");
    api.delete(&format!("{PLUGINS}/packer")).await.ok(200);

    // An extension that traps fails the pods it is asked about under Fail, naming itself...
    let hostile = kapsel_test_guests::HOSTILE.to_vec();
    upload(&api, "trapper", &hostile, json!({"config": {"mode": "trap"}, "failurePolicy": "Fail"})).await;
    api.create_pod("dev", sized_pod("blocked", "500m")).await;
    let pod = waiting(&api, "blocked", "SchedulerError").await;
    let message = condition(&pod, "PodScheduled").unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("plug-in \"trapper\" failed while scoring nodes for pod dev/blocked"), "{message}");

    // ...and is left out under Ignore: the pod is placed when it is tried again.
    let patch = json!({"spec": {"failurePolicy": "Ignore"}});
    api.patch(&format!("{PLUGINS}/trapper"), "application/merge-patch+json", patch).await.ok(200);
    api.create_pod("dev", sized_pod("placed", "500m")).await;
    bound(&api, "placed").await;
}
