//! What node tokens and old tokens cannot reach (issue 11), in-process: a
//! node agent reads the logs of its own pods only; the supervisor relays
//! log requests only to an `https://` endpoint at the node's registered
//! address; and the roles tokens hold in a namespace end when it is deleted,
//! so a namespace re-created under the same name is not handed to them.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use serde_json::{Value, json};

const NODES: &str = "/api/v1/nodes";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
const TOKENS: &str = "/apis/kapsel.io/v1alpha1/tokens";

/// Issues a token (as `kapsel token create` does) and returns its secret.
async fn token(api: &Api, name: &str, spec: Value) -> String {
    let token = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": name}, "spec": spec});
    let created = api.post(TOKENS, token).await;
    created.ok(201);
    created.body["status"]["token"].as_str().expect("the secret is shown once").to_string()
}

/// A node as its agent registers it: an `InternalIP` and the port of its log endpoint.
fn node(name: &str, ip: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
}

/// A lease publishing a log endpoint, as the agent writes it.
fn lease(name: &str, endpoint: &str, certificate: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease", "annotations": {
            "kapsel.io/agent-endpoint": endpoint, "kapsel.io/agent-certificate": certificate, "kapsel.io/agent-secret": "s3cret"}},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 10,
                 "renewTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}})
}

/// A pod bound to `node` (written by the admin).
async fn bound_pod(api: &Api, name: &str, node: &str) {
    let mut bound = pod(name);
    bound["spec"]["nodeName"] = json!(node);
    api.create_pod("dev", bound).await;
}

/// A stand-in for an agent's log endpoint on 127.0.0.1 (TLS with its own
/// certificate, as the agent serves it): answers every log request with
/// the pod's uid and container. Returns the port and the certificate.
async fn fake_agent() -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (certificate, config) = kapsel_daemon::tls::self_signed("kapsel-node test", vec!["127.0.0.1".to_string()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = kapsel_daemon::tls::TlsListener::new(listener, config).unwrap();
    let app = axum::Router::new().route(
        "/pods/{uid}/containers/{container}/log",
        axum::routing::get(|axum::extract::Path((uid, container)): axum::extract::Path<(String, String)>| async move {
            format!("log of {container} in {uid}\n")
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, certificate)
}

fn log_path(name: &str) -> String {
    format!("{}/log", pod_path("dev", name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_token_reads_the_logs_of_its_own_pods_only() {
    let api = Api::start().await;
    api.post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}})).await.ok(201);
    let (port, certificate) = fake_agent().await;
    let n1 = token(&api, "node-n1", json!({"user": "ignored", "node": "n1"})).await;
    api.json_as(&n1, Method::POST, NODES, Some(node("n1", "127.0.0.1", port))).await.ok(201);
    api.json_as(&n1, Method::POST, LEASES, Some(lease("n1", &format!("https://127.0.0.1:{port}"), &certificate))).await.ok(201);
    api.post(NODES, node("n2", "127.0.0.1", port)).await.ok(201);
    bound_pod(&api, "mine", "n1").await;
    bound_pod(&api, "theirs", "n2").await;

    let mine = api.json_as(&n1, Method::GET, &log_path("mine"), None).await;
    mine.ok(200);
    assert!(mine.text.starts_with("log of app in "), "{}", mine.text);
    api.json_as(&n1, Method::GET, &log_path("theirs"), None).await.failure(403, "Forbidden").mentions(&[
        "system:node:n1",
        "pods/log",
        "bound to its node only",
    ]);
    // An unbound pod is no node's either.
    api.create_pod("dev", pod("floating")).await;
    api.json_as(&n1, Method::GET, &log_path("floating"), None).await.failure(403, "Forbidden");
    // Tenants and admins read as before (n2 has no lease: its agent serves no logs).
    api.json_as(ALICE, Method::GET, &log_path("mine"), None).await.ok(200);
    api.get(&log_path("theirs")).await.failure(503, "ServiceUnavailable").mentions(&["has no lease"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_relayed_only_to_https_at_the_nodes_registered_address() {
    let api = Api::start().await;
    api.post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}})).await.ok(201);
    let (port, certificate) = fake_agent().await;
    let n1 = token(&api, "node-n1", json!({"user": "ignored", "node": "n1"})).await;
    api.json_as(&n1, Method::POST, NODES, Some(node("n1", "127.0.0.1", port))).await.ok(201);
    let published = api.json_as(&n1, Method::POST, LEASES, Some(lease("n1", &format!("https://127.0.0.1:{port}"), &certificate))).await;
    published.ok(201);
    bound_pod(&api, "p", "n1").await;
    api.get(&log_path("p")).await.ok(200);

    // The node points its lease elsewhere: each is refused before any connection, naming the rule.
    let lease_path = format!("{LEASES}/n1");
    let mut current = published.body;
    for (endpoint, problem) in [
        (format!("http://127.0.0.1:{port}"), "not an https:// URL"),
        (format!("https://localhost:{port}"), "by its IP address"),
        (format!("https://10.1.2.3:{port}"), "not at the node's registered address"),
        ("https://127.0.0.1:6443".to_string(), "not at the node's registered port"),
        (format!("https://127.0.0.1:{port}/admin?x=1"), "nothing after the port"),
    ] {
        current["metadata"]["annotations"]["kapsel.io/agent-endpoint"] = json!(endpoint);
        let written = api.json_as(&n1, Method::PUT, &lease_path, Some(current.clone())).await;
        if written.status == 403 {
            // Refused at write time already (the lease write checks the endpoint's shape).
            written.failure(403, "Forbidden").mentions(&["cannot publish that log endpoint"]);
            continue;
        }
        written.ok(200);
        current = written.body;
        api.get(&log_path("p")).await.failure(503, "ServiceUnavailable").mentions(&["does not relay to", problem, &endpoint]);
    }

    // Back at its address, relayed again; then the node says it is elsewhere: refused, though the endpoint answers.
    current["metadata"]["annotations"]["kapsel.io/agent-endpoint"] = json!(format!("https://127.0.0.1:{port}"));
    api.json_as(&n1, Method::PUT, &lease_path, Some(current)).await.ok(200);
    api.get(&log_path("p")).await.ok(200);
    let mut moved = api.get(&format!("{NODES}/n1")).await.body;
    moved["status"]["addresses"] = json!([{"type": "InternalIP", "address": "10.9.9.9"}]);
    api.json_as(&n1, Method::PUT, &format!("{NODES}/n1/status"), Some(moved)).await.ok(200);
    api.get(&log_path("p")).await.failure(503, "ServiceUnavailable").mentions(&["[10.9.9.9]"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_ends_the_roles_held_in_it() {
    let api = Api::start().await;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
    api.post("/api/v1/namespaces", namespace.clone()).await.ok(201);
    let bob =
        token(&api, "bob", json!({"user": "bob", "roles": [{"namespace": "a", "role": "edit"}, {"namespace": "dev", "role": "view"}]}))
            .await;
    api.json_as(&bob, Method::GET, &pods("a"), None).await.ok(200);

    api.delete("/api/v1/namespaces/a").await.ok(200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while api.get("/api/v1/namespaces/a").await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "namespace a was not finalized");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The token lost its role in a with the namespace, and kept the others.
    let stored = api.get(&format!("{TOKENS}/bob")).await;
    stored.ok(200);
    assert_eq!(stored.body["spec"]["roles"], json!([{"namespace": "dev", "role": "view"}]), "{}", stored.text);

    api.post("/api/v1/namespaces", namespace).await.ok(201);
    api.json_as(&bob, Method::GET, &pods("a"), None).await.failure(403, "Forbidden").mentions(&["\"bob\"", "\"a\""]);
    api.json_as(&bob, Method::POST, &pods("a"), Some(pod("p"))).await.failure(403, "Forbidden");
    api.json_as(&bob, Method::GET, &pods("dev"), None).await.ok(200);

    // A role granted anew is for the new namespace.
    let mut granted = api.get(&format!("{TOKENS}/bob")).await.body;
    granted["spec"]["roles"] = json!([{"namespace": "a", "role": "view"}]);
    api.put(&format!("{TOKENS}/bob"), granted).await.ok(200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while api.json_as(&bob, Method::GET, &pods("a"), None).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the new grant did not take effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
