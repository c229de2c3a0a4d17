//! Nodes and their agents, in-process: what a node token may touch (its own
//! Node and lease, the status of pods bound to it — nothing else), and the
//! node lifecycle controller (a node whose lease ages is lost, its pods
//! fail with it, and it comes back when the lease is renewed).

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use kapsel_server::controllers::node_lifecycle::{self, NodeLifecycleOptions};
use serde_json::{Value, json};

const NODES: &str = "/api/v1/nodes";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

/// Issues a node token for `node` (as `kapsel token create --node` does) and returns its secret.
async fn node_token(api: &Api, node: &str) -> String {
    let token = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": format!("node-{node}")},
        "spec": {"user": "ignored", "node": node}});
    let created = api.post("/apis/kapsel.io/v1alpha1/tokens", token).await;
    created.ok(201);
    created.body["status"]["token"].as_str().expect("the secret is shown once").to_string()
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn lease(name: &str, renewed: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 10, "renewTime": renewed}})
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn ensure_lease_namespace(api: &Api) {
    api.post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}})).await.ok(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_token_touches_only_its_node_its_lease_and_its_pods() {
    let api = Api::start().await;
    ensure_lease_namespace(&api).await;
    let agent = node_token(&api, "n1").await;
    let as_agent = |method: Method, path: String, body: Option<Value>| {
        let agent = agent.clone();
        let api = &api;
        async move { api.json_as(&agent, method, &path, body).await }
    };

    // Its own node: create, update, status. Another's: no.
    as_agent(Method::POST, NODES.into(), Some(node("n1"))).await.ok(201);
    as_agent(Method::POST, NODES.into(), Some(node("n2"))).await.failure(403, "Forbidden").mentions(&["only its own Node"]);
    let mut mine = as_agent(Method::GET, format!("{NODES}/n1"), None).await.body;
    mine["status"]["allocatable"]["cpu"] = json!("8");
    as_agent(Method::PUT, format!("{NODES}/n1/status"), Some(mine)).await.ok(200);
    api.post(NODES, node("n2")).await.ok(201);
    let theirs = api.get(&format!("{NODES}/n2")).await.body;
    as_agent(Method::PUT, format!("{NODES}/n2/status"), Some(theirs)).await.failure(403, "Forbidden");
    as_agent(Method::DELETE, format!("{NODES}/n1"), None).await.failure(403, "Forbidden");

    // Its lease, in kube-node-lease only.
    as_agent(Method::POST, LEASES.into(), Some(lease("n1", &now()))).await.ok(201);
    as_agent(Method::POST, LEASES.into(), Some(lease("n2", &now()))).await.failure(403, "Forbidden").mentions(&["own lease"]);

    // The status of pods bound to it; not their spec, not other nodes' pods, no new pods.
    let mut bound = pod("bound");
    bound["spec"]["nodeName"] = json!("n1");
    api.create_pod("dev", bound).await;
    let mut elsewhere = pod("elsewhere");
    elsewhere["spec"]["nodeName"] = json!("n2");
    api.create_pod("dev", elsewhere).await;
    let mut running = as_agent(Method::GET, pod_path("dev", "bound"), None).await.body;
    running["status"]["phase"] = json!("Running");
    let written = as_agent(Method::PUT, format!("{}/status", pod_path("dev", "bound")), Some(running.clone())).await;
    written.ok(200);
    assert_eq!(written.body["status"]["phase"], "Running");
    as_agent(Method::PUT, pod_path("dev", "bound"), Some(written.body.clone()))
        .await
        .failure(403, "Forbidden")
        .mentions(&["only the status"]);
    let mut other = api.get(&pod_path("dev", "elsewhere")).await.body;
    other["status"]["phase"] = json!("Running");
    as_agent(Method::PUT, format!("{}/status", pod_path("dev", "elsewhere")), Some(other))
        .await
        .failure(403, "Forbidden")
        .mentions(&["not bound to this node"]);
    as_agent(Method::POST, pods("dev"), Some(pod("sneaky"))).await.failure(403, "Forbidden");
    as_agent(Method::GET, "/apis/kapsel.io/v1alpha1/tokens".into(), None).await.failure(403, "Forbidden");
    as_agent(Method::GET, "/api/v1/namespaces/dev/resourcequotas".into(), None).await.failure(403, "Forbidden");

    // Tenants still cannot write any status.
    let mut forged = api.get(&pod_path("dev", "bound")).await.body;
    forged["status"]["phase"] = json!("Succeeded");
    api.json_as(ALICE, Method::PUT, &format!("{}/status", pod_path("dev", "bound")), Some(forged)).await.failure(403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_ages_is_lost_its_pods_fail_and_it_comes_back() {
    let api = Api::start().await;
    ensure_lease_namespace(&api).await;
    node_lifecycle::start(&api.app, NodeLifecycleOptions { lost_after: Duration::from_millis(1500), pod_grace: Duration::from_secs(1) });
    api.post(NODES, node("n1")).await.ok(201);
    api.post(LEASES, lease("n1", &now())).await.ok(201);
    let mut on_it = pod("on-it");
    on_it["spec"]["nodeName"] = json!("n1");
    api.create_pod("dev", on_it).await;
    let mut done = pod("done");
    done["spec"]["nodeName"] = json!("n1");
    api.create_pod("dev", done).await;
    let mut finished = api.get(&pod_path("dev", "done")).await.body;
    finished["status"]["phase"] = json!("Succeeded");
    api.put(&format!("{}/status", pod_path("dev", "done")), finished).await.ok(200);

    let ready = |node: &Value, status: &str, reason: &str| {
        node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == status && c["reason"] == reason)
    };
    let lost = eventually(&api, &format!("{NODES}/n1"), "node lost", |n| ready(n, "False", "NodeLost")).await;
    assert!(lost["status"]["conditions"][0]["message"].as_str().unwrap().contains("has not renewed its lease"));
    let failed = eventually(&api, &pod_path("dev", "on-it"), "pod failed", |p| p["status"]["phase"] == "Failed").await;
    assert_eq!(failed["status"]["reason"], "NodeLost");
    assert_eq!(api.get(&pod_path("dev", "done")).await.body["status"]["phase"], "Succeeded", "an ended pod keeps its phase");
    let events = api.get("/api/v1/namespaces/dev/events").await;
    assert!(events.items().iter().any(|e| e["reason"] == "NodeLost" && e["involvedObject"]["name"] == "on-it"));

    // The agent renews its lease again: the node is Ready again.
    let mut renewed = api.get(&format!("{LEASES}/n1")).await.body;
    renewed["spec"]["renewTime"] = json!(now());
    api.put(&format!("{LEASES}/n1"), renewed).await.ok(200);
    eventually(&api, &format!("{NODES}/n1"), "node back", |n| ready(n, "True", "NodeAgentReady")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pod_is_deleted_gracefully_by_its_node() {
    let api = Api::start().await;
    let agent = node_token(&api, "n1").await;
    api.post(NODES, node("n1")).await.ok(201);
    let mut bound = pod("bound");
    bound["spec"]["nodeName"] = json!("n1");
    api.create_pod("dev", bound).await;

    // Marked, not gone: its node stops it first.
    let marked = api.delete(&pod_path("dev", "bound")).await;
    marked.ok(200);
    assert_eq!(marked.body["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(marked.body["metadata"]["deletionTimestamp"].is_string());
    api.get(&pod_path("dev", "bound")).await.ok(200);
    let again = api.delete(&pod_path("dev", "bound")).await;
    again.ok(200);
    assert_eq!(again.body["metadata"]["deletionTimestamp"], marked.body["metadata"]["deletionTimestamp"]);
    // The node, having stopped it, deletes it for good.
    let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    api.json_as(&agent, Method::DELETE, &pod_path("dev", "bound"), Some(now)).await.ok(200);
    api.get(&pod_path("dev", "bound")).await.failure(404, "NotFound");

    // A pod on no node, or one that has ended, goes at once.
    api.create_pod("dev", pod("unbound")).await;
    let gone = api.delete(&pod_path("dev", "unbound")).await;
    gone.ok(200);
    api.get(&pod_path("dev", "unbound")).await.failure(404, "NotFound");
}

/// The supervisor reaches a node agent's log endpoint over TLS and trusts
/// only the certificate that agent published in its lease: another
/// certificate for the same address is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_log_endpoint_is_trusted_by_its_own_certificate_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names = || vec!["127.0.0.1".to_string()];
    let (certificate, config) = kapsel_daemon::tls::self_signed("kapsel-node test", names()).unwrap();
    let (impostor, _) = kapsel_daemon::tls::self_signed("kapsel-node test", names()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/ping", listener.local_addr().unwrap());
    let listener = kapsel_daemon::tls::TlsListener::new(listener, config).unwrap();
    let app = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let trusted = kapsel_server::agents::agent_client(&certificate).unwrap();
    assert_eq!(trusted.get(&url).send().await.unwrap().text().await.unwrap(), "pong");
    let refused = kapsel_server::agents::agent_client(&impostor).unwrap().get(&url).send().await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(kapsel_server::agents::agent_client("not a certificate").is_err());
}
