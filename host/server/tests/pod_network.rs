//! Pod addresses from the network driver, in-process with the real
//! `namespace-ipam` component: a bound pod has `status.podIP` from its
//! namespace's segment; addresses come back when pods go, so more pods than
//! a segment holds pass through it one batch after another; a pod the
//! driver has no address for waits Pending with the driver's words and is
//! placed once an address is free.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Addresses a namespace-ipam segment (a /24) gives pods: .2 … .254.
const SEGMENT_ADDRESSES: usize = 253;

async fn with_network(api: &Api) {
    kapsel_server::plugins::install_defaults(&api.store).await.expect("install the default plug-ins");
    let deadline = Instant::now() + PATIENCE;
    while api.app.plugins.network_driver().is_none() {
        assert!(Instant::now() < deadline, "the network driver did not become active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "net"}});
    let created = api.post("/api/v1/namespaces", namespace).await;
    created.ok(201);
    assert!(created.body["metadata"]["annotations"]["network.kapsel.io/segment"].is_string(), "{:#}", created.body);
    api.push_images("net", IMAGES).await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "1000", "memory": "1000Gi", "pods": "1000"}, "conditions": [{"type": "Ready", "status": "True"}]}});
    api.post("/api/v1/nodes", node).await.ok(201);
    kapsel_server::scheduler::start(&api.app, Default::default());
}

/// The pods of `net` named `names`, once each is bound (or `PATIENCE` passed).
async fn wait_bound(api: &Api, names: &[String]) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let pods = api.get("/api/v1/namespaces/net/pods").await.items();
        let bound: Vec<Value> = pods
            .into_iter()
            .filter(|p| names.iter().any(|n| p["metadata"]["name"] == n.as_str()) && p["spec"]["nodeName"].is_string())
            .collect();
        if bound.len() == names.len() || Instant::now() > deadline {
            return bound;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_batch(api: &Api, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        api.create_pod("net", pod(name)).await;
    }
    names
}

async fn delete_all(api: &Api, names: &[String]) {
    for name in names {
        api.delete(&format!("/api/v1/namespaces/net/pods/{name}?gracePeriodSeconds=0")).await.ok(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_come_from_the_segment_and_come_back_when_pods_go() {
    let api = Api::start().await;
    with_network(&api).await;
    // 4 × 100 pods through a segment of 253 addresses: only if they come back.
    for round in 0..4 {
        let names = create_batch(&api, &format!("r{round}"), 100).await;
        let bound = wait_bound(&api, &names).await;
        assert_eq!(bound.len(), 100, "round {round}: only {} of 100 pods were bound", bound.len());
        let addresses: BTreeSet<&str> = bound.iter().filter_map(|p| p.pointer("/status/podIP").and_then(Value::as_str)).collect();
        assert_eq!(addresses.len(), 100, "round {round}: every pod has its own address");
        assert!(addresses.iter().all(|ip| ip.starts_with("10.64.")), "{addresses:?}");
        assert_eq!(bound[0]["status"]["podIPs"][0]["ip"], bound[0]["status"]["podIP"]);
        delete_all(&api, &names).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_driver_has_no_address_for_waits_and_is_placed_when_one_is_free() {
    let api = Api::start().await;
    with_network(&api).await;
    let names = create_batch(&api, "fill", SEGMENT_ADDRESSES + 2).await;
    let bound = wait_bound(&api, &names).await;
    assert_eq!(bound.len(), SEGMENT_ADDRESSES, "as many pods as the segment has addresses are bound");
    let waiting: Vec<String> = names.iter().filter(|n| !bound.iter().any(|p| p["metadata"]["name"] == n.as_str())).cloned().collect();
    let deadline = Instant::now() + PATIENCE;
    let pod = loop {
        let pod = api.get(&format!("/api/v1/namespaces/net/pods/{}", waiting[0])).await.body;
        let said = pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["reason"] == "NetworkUnavailable");
        if said || Instant::now() > deadline {
            break pod;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pod["status"]["phase"], "Pending");
    let condition = pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").unwrap().clone();
    assert_eq!(condition["status"], "False", "{condition}");
    assert_eq!(condition["reason"], "NetworkUnavailable");
    assert!(condition["message"].as_str().unwrap().contains("no free segment or address left"), "{condition}");
    // Two pods go: the two that waited get their addresses.
    delete_all(&api, &names[..2]).await;
    let placed = wait_bound(&api, &waiting).await;
    assert_eq!(placed.len(), 2, "the waiting pods were placed once addresses were free");
    assert!(placed.iter().all(|p| p["status"]["podIP"].is_string()));
}
