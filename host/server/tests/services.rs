//! Services through the API, in-process: a ClusterIP Service with TCP ports
//! is stored and listed with its columns; what the ingress cannot serve is
//! refused at its field; tenants write them with `edit`; a node agent reads
//! them (its ingress routes by them) but writes none.

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};

fn services(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services")
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ip_service_is_stored_and_shown() {
    let api = Api::start().await;
    let web = service("web", json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}));
    api.json_as(ALICE, Method::POST, &services("dev"), Some(web)).await.ok(201);
    let table = api.call(Some(ADMIN), Method::GET, &services("dev"), &[("accept", TABLE)], axum::body::Body::empty()).await;
    table.ok(200);
    let columns: Vec<&str> = table.body["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Name", "Type", "Cluster-IP", "Ports", "Age", "Selector"], "as kubectl shows them (Selector with -o wide)");
    let cells = table.body["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(cells[1..4], [json!("ClusterIP"), json!("<none>"), json!("80/TCP")]);
    // view reads, does not write.
    api.json_as(ALICE, Method::POST, &services("qa"), Some(service("mine", json!({"ports": [{"port": 80}]}))))
        .await
        .failure(403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_ingress_cannot_serve_is_refused() {
    let api = Api::start().await;
    for (spec, field) in [
        (json!({"type": "LoadBalancer", "ports": [{"port": 80}]}), "spec.type"),
        (json!({"ports": [{"port": 53, "protocol": "UDP"}]}), "spec.ports[0].protocol"),
        (json!({"ports": [{"port": 0}]}), "spec.ports[0].port"),
    ] {
        let refused = api.post(&services("dev"), service("bad", spec)).await;
        refused.failure(422, "Invalid");
        assert_eq!(refused.cause_fields(), [field]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_services_and_writes_none() {
    let api = Api::start().await;
    api.post(&services("dev"), service("web", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}))).await.ok(201);
    let token =
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": "node-n1"}, "spec": {"user": "x", "node": "n1"}});
    let created = api.post("/apis/kapsel.io/v1alpha1/tokens", token).await;
    let n1 = created.body["status"]["token"].as_str().unwrap().to_string();
    let listed = api.json_as(&n1, Method::GET, "/api/v1/services", None).await;
    listed.ok(200);
    assert_eq!(listed.qualified_names(), ["dev/web"]);
    api.json_as(&n1, Method::DELETE, &format!("{}/web", services("dev")), None).await.failure(403, "Forbidden");
}
