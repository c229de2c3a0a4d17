//! ConfigMaps and Secrets through the API, in-process: a Secret's
//! `stringData` is stored as `data`; `view` reads ConfigMaps but no Secret,
//! not even across namespaces; what is `immutable` stays; a node agent
//! reads only the ConfigMaps and Secrets that pods bound to it use, one at
//! a time.

mod common;

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use http::Method;
use serde_json::{Value, json};

fn secrets(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets")
}

fn config_maps(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/configmaps")
}

fn secret(name: &str, plain: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": plain})
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secrets_string_data_is_stored_as_data() {
    let api = Api::start().await;
    let created = api.post(&secrets("dev"), secret("db", json!({"password": "hunter2"}))).await;
    created.ok(201);
    assert_eq!(created.body["data"]["password"], STANDARD.encode("hunter2"));
    assert!(created.body.get("stringData").is_none(), "{:#}", created.body);
    assert_eq!(created.body["type"], Value::Null, "type is not invented: {:#}", created.body);
    let read = api.get(&format!("{}/db", secrets("dev"))).await;
    assert_eq!(read.body["data"]["password"], STANDARD.encode("hunter2"));
    // A patch with stringData changes data.
    let patched = api.patch(&format!("{}/db", secrets("dev")), MERGE_PATCH, json!({"stringData": {"password": "swordfish"}})).await;
    patched.ok(200);
    assert_eq!(patched.body["data"]["password"], STANDARD.encode("swordfish"));
    // Data that is not base64, or a key that is not a file name, is refused at its field.
    let bad = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"a/b": "!!"}});
    let refused = api.post(&secrets("dev"), bad).await;
    refused.failure(422, "Invalid");
    assert!(refused.cause_fields().iter().any(|f| f.starts_with("data[a/b]")), "{:?}", refused.cause_fields());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_reads_config_maps_but_no_secret() {
    let api = Api::start().await;
    for namespace in ["dev", "qa"] {
        api.post(&secrets(namespace), secret("db", json!({"password": "p"}))).await.ok(201);
        api.post(&config_maps(namespace), config_map("settings", json!({"color": "blue"}))).await.ok(201);
    }
    // alice: edit in dev, view in qa.
    api.json_as(ALICE, Method::GET, &format!("{}/db", secrets("dev")), None).await.ok(200);
    api.json_as(ALICE, Method::GET, &format!("{}/db", secrets("qa")), None).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::GET, &secrets("qa"), None).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::GET, &format!("{}/settings", config_maps("qa")), None).await.ok(200);
    api.json_as(ALICE, Method::POST, &secrets("qa"), Some(secret("mine", json!({"a": "b"})))).await.failure(403, "Forbidden");
    // Across namespaces: the secrets of dev only, the config maps of both.
    let all_secrets = api.json_as(ALICE, Method::GET, "/api/v1/secrets", None).await;
    all_secrets.ok(200);
    assert_eq!(all_secrets.qualified_names(), ["dev/db"]);
    let all_maps = api.json_as(ALICE, Method::GET, "/api/v1/configmaps", None).await;
    assert_eq!(all_maps.qualified_names(), ["dev/settings", "qa/settings"]);
    // A watch across namespaces shows no secret of qa either.
    let watch = api.call(Some(ALICE), Method::GET, "/api/v1/secrets?watch=true&timeoutSeconds=1", &[], Body::empty()).await;
    assert!(!watch.text.contains("\"qa\""), "{}", watch.text);
    assert!(watch.text.contains("\"dev\""), "{}", watch.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_immutable_stays() {
    let api = Api::start().await;
    let mut frozen = config_map("frozen", json!({"a": "1"}));
    frozen["immutable"] = json!(true);
    api.post(&config_maps("dev"), frozen).await.ok(201);
    let path = format!("{}/frozen", config_maps("dev"));
    let changed = api.patch(&path, MERGE_PATCH, json!({"data": {"a": "2"}})).await;
    changed.failure(422, "Invalid");
    assert_eq!(changed.cause_fields(), ["data"]);
    api.patch(&path, MERGE_PATCH, json!({"immutable": false})).await.failure(422, "Invalid");
    api.patch(&path, MERGE_PATCH, json!({"metadata": {"labels": {"tier": "web"}}})).await.ok(200);
    api.delete(&path).await.ok(200);
}

/// Issues a token (as `kapsel token create` does) and returns its secret.
async fn token(api: &Api, name: &str, spec: Value) -> String {
    let token = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": name}, "spec": spec});
    let created = api.post("/apis/kapsel.io/v1alpha1/tokens", token).await;
    created.ok(201);
    created.body["status"]["token"].as_str().expect("the secret is shown once").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_only_the_configuration_its_pods_use() {
    let api = Api::start().await;
    for name in ["used", "unused", "elsewhere"] {
        api.post(&secrets("dev"), secret(name, json!({"k": "v"}))).await.ok(201);
    }
    api.post(&config_maps("dev"), config_map("settings", json!({"k": "v"}))).await.ok(201);
    let mut on_n1 = pod("web");
    on_n1["spec"]["nodeName"] = json!("n1");
    on_n1["spec"]["volumes"] = json!([{"name": "creds", "secret": {"secretName": "used"}}]);
    on_n1["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "settings"}}]);
    api.create_pod("dev", on_n1).await;
    let mut on_n2 = pod("other");
    on_n2["spec"]["nodeName"] = json!("n2");
    on_n2["spec"]["volumes"] = json!([{"name": "creds", "secret": {"secretName": "elsewhere"}}]);
    api.create_pod("dev", on_n2).await;

    let n1 = token(&api, "node-n1", json!({"user": "ignored", "node": "n1"})).await;
    api.json_as(&n1, Method::GET, &format!("{}/used", secrets("dev")), None).await.ok(200);
    api.json_as(&n1, Method::GET, &format!("{}/settings", config_maps("dev")), None).await.ok(200);
    let refused = api.json_as(&n1, Method::GET, &format!("{}/unused", secrets("dev")), None).await;
    refused.failure(403, "Forbidden").mentions(&["no pod bound to the node uses it"]);
    api.json_as(&n1, Method::GET, &format!("{}/elsewhere", secrets("dev")), None).await.failure(403, "Forbidden");
    api.json_as(&n1, Method::GET, &secrets("dev"), None).await.failure(403, "Forbidden");
    api.json_as(&n1, Method::GET, "/api/v1/secrets?watch=true", None).await.failure(403, "Forbidden");
    // A secret that does not exist is not found only for a node whose pod uses it.
    api.json_as(&n1, Method::GET, &format!("{}/nothing", secrets("dev")), None).await.failure(403, "Forbidden");
}
