//! A hostile tenant against the API, in-process: each request that once
//! cost the server gigabytes, panicked a handler or slipped past a limit
//! gets a clear `Status`, quickly, and the server goes on answering.
//! (The end-to-end hostile suite, with real processes and their memory
//! read from `/proc`, is `tests/e2e/test_hostile.py`.)

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};

/// What one hostile request may take before its answer.
const PROMPT: Duration = Duration::from_secs(3);

/// A YAML document of `aliases` references to one anchored list of `width` items: a "billion laughs" body.
fn alias_bomb(width: usize, aliases: usize) -> String {
    let mut yaml = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n  name: bomb\n  annotations: {}\nspec:\n  base: &a [");
    yaml.push_str(&vec!["x"; width].join(","));
    yaml.push_str("]\n  copies: [");
    yaml.push_str(&vec!["*a"; aliases].join(","));
    yaml.push_str("]\n");
    yaml
}

#[tokio::test]
async fn yaml_aliases_cannot_make_a_small_body_large() {
    let api = Api::start().await;
    // Few enough nodes to be parsed, refused as the aliases expand; too many nodes, refused before parsing.
    for (aliases, refusal) in [(40_000, "anchors and aliases"), (150_000, "send large objects as JSON")] {
        let body = alias_bomb(1_000, aliases);
        assert!(body.len() < 1 << 20);
        for (token, path) in [(ALICE, pods("dev")), (ALICE, "/apis/kapsel.io/v1alpha1/policyreviews".to_string())] {
            let started = Instant::now();
            let reply = api.call(Some(token), Method::POST, &path, &[("content-type", "application/yaml")], body.clone()).await;
            reply.failure(413, "RequestEntityTooLarge").mentions(&[refusal]);
            assert!(started.elapsed() < PROMPT, "{path}: {:?}", started.elapsed());
        }
    }
    // Aliases within the budget are ordinary YAML.
    let modest = "apiVersion: v1\nkind: Pod\nmetadata: {name: anchored, labels: &l {app: web}}\nspec:\n  containers:\n  - {name: app, image: app:1, env: &e [{name: A, value: '1'}]}\n  - {name: side, image: app:1, env: *e}\n";
    api.push_images("dev", &["app:1"]).await;
    let reply = api.call(Some(ALICE), Method::POST, &pods("dev"), &[("content-type", "application/yaml")], modest).await;
    reply.ok(201);
    assert_eq!(reply.body["spec"]["containers"][1]["env"][0]["value"], "1");
}

#[tokio::test]
async fn a_patch_that_doubles_itself_is_refused_before_it_grows() {
    let api = Api::start().await;
    api.push_images("dev", &["app:1"]).await;
    let mut manifest = pod("web");
    manifest["metadata"]["annotations"] = json!({"seed": "x".repeat(100_000)});
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(manifest)).await.ok(201);
    let mut ops = Vec::new();
    for i in 0..22 {
        ops.push(json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")}));
    }
    let started = Instant::now();
    let reply =
        api.call(Some(ALICE), Method::PATCH, &pod_path("dev", "web"), &[("content-type", JSON_PATCH)], Value::Array(ops).to_string()).await;
    reply.failure(413, "RequestEntityTooLarge").mentions(&["patched object would exceed"]);
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    api.json_as(ALICE, Method::GET, &pod_path("dev", "web"), None).await.ok(200);
}

#[tokio::test]
async fn numbers_past_their_range_are_invalid_not_fatal() {
    let api = Api::start().await;
    api.push_images("dev", &["app:1"]).await;
    let mut manifest = pod("forever");
    manifest["spec"]["activeDeadlineSeconds"] = json!(i64::MAX);
    let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(manifest)).await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_fields(), ["spec.activeDeadlineSeconds"]);

    let mut manifest = pod("grace");
    manifest["spec"]["terminationGracePeriodSeconds"] = json!(i64::MAX);
    let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(manifest)).await;
    assert_eq!(reply.cause_fields(), ["spec.terminationGracePeriodSeconds"]);

    // Quantities beyond int64 units are invalid where they are written.
    let huge = "85070591730234615865843651857942052864m";
    let mut manifest = pod("huge");
    manifest["spec"]["containers"] = json!([
        {"name": "a", "image": "app:1", "resources": {"requests": {"cpu": huge}}},
        {"name": "b", "image": "app:1", "resources": {"requests": {"cpu": huge}}},
    ]);
    let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(manifest)).await;
    reply.failure(422, "Invalid").mentions(&["too large"]);
    assert!(reply.cause_fields().contains(&"spec.containers[0].resources.requests.cpu".to_string()), "{}", reply.text);

    // The largest quantities there are add up without wrapping: the quota refuses them.
    let quota =
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"}, "spec": {"hard": {"requests.cpu": "4"}}});
    api.post("/api/v1/namespaces/dev/resourcequotas", quota).await.ok(201);
    let most = "9223372036854775807";
    let mut manifest = pod("most");
    manifest["spec"]["containers"] = json!([
        {"name": "a", "image": "app:1", "resources": {"requests": {"cpu": most}}},
        {"name": "b", "image": "app:1", "resources": {"requests": {"cpu": most}}},
    ]);
    let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(manifest)).await;
    reply.failure(403, "Forbidden").mentions(&["exceeded quota"]);
}

#[tokio::test]
async fn a_delete_grace_period_is_checked() {
    let api = Api::start().await;
    api.push_images("dev", &["app:1"]).await;
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("web"))).await.ok(201);
    for grace in ["9223372036854775807", "-5", "soon"] {
        let path = format!("{}?gracePeriodSeconds={grace}", pod_path("dev", "web"));
        let reply = api.json_as(ALICE, Method::DELETE, &path, None).await;
        reply.failure(422, "Invalid");
        assert_eq!(reply.cause_fields(), ["gracePeriodSeconds"], "{grace}");
    }
    let options = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 1e300});
    let reply = api.json_as(ALICE, Method::DELETE, &pod_path("dev", "web"), Some(options)).await;
    assert_eq!(reply.cause_fields(), ["gracePeriodSeconds"]);
    api.json_as(ALICE, Method::DELETE, &format!("{}?gracePeriodSeconds=0", pod_path("dev", "web")), None).await.ok(200);
}

#[tokio::test]
async fn malformed_pods_are_refused_not_panicked_on() {
    let api = Api::start().await;
    api.add_class_and_limit_range("dev").await;
    let shapes = [
        json!({"resourceClassName": "small", "containers": ["x"]}),
        json!({"containers": ["x"]}),
        json!({"containers": [{"name": "a", "image": "app:1", "resources": "big"}]}),
        json!({"containers": [{"name": "a", "image": "app:1", "resources": {"limits": []}}]}),
        json!({"containers": "x"}),
        json!("spec"),
    ];
    for spec in shapes {
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "odd"}, "spec": spec});
        let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(body)).await;
        assert!(reply.status.is_client_error(), "{spec}: {} {}", reply.status, reply.text);
        assert_eq!(reply.body["kind"], "Status", "{spec}");
    }
}

#[tokio::test]
async fn only_it_admins_bind_pods_to_nodes() {
    let api = Api::start().await;
    api.push_images("dev", &["app:1"]).await;
    let mut pinned = pod("pinned");
    pinned["spec"]["nodeName"] = json!("cordoned-node");
    let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(pinned.clone())).await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_reason("spec.nodeName").as_deref(), Some("FieldValueForbidden"));
    // Setting it later is refused too; the admin may pin a pod.
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("free"))).await.ok(201);
    let reply = api
        .call(Some(ALICE), Method::PATCH, &pod_path("dev", "free"), &[("content-type", MERGE_PATCH)], r#"{"spec":{"nodeName":"n"}}"#)
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    api.post(&pods("dev"), pinned).await.ok(201);
}

#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let api = Api::start().await;
    api.push_images("dev", &["app:1"]).await;
    for i in 0..7 {
        api.create_pod("dev", pod(&format!("p{i}"))).await;
    }
    let mut names = Vec::new();
    let mut path = format!("{}?limit=3", pods("dev"));
    let mut revisions = Vec::new();
    for _ in 0..5 {
        let reply = api.json_as(ALICE, Method::GET, &path, None).await;
        reply.ok(200);
        assert!(reply.items().len() <= 3);
        names.extend(reply.names());
        revisions.push(reply.body["metadata"]["resourceVersion"].clone());
        match reply.body["metadata"]["continue"].as_str() {
            Some(token) => path = format!("{}?limit=3&continue={}", pods("dev"), q(token)),
            None => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    assert_eq!(revisions.len(), 3);
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "every page reports the first page's revision: {revisions:?}");
    // A label selector pages over what it selects.
    let reply = api.json_as(ALICE, Method::GET, &format!("{}?limit=2&labelSelector=app%3Dnone", pods("dev")), None).await;
    assert!(reply.items().is_empty() && reply.body["metadata"]["continue"].is_null(), "{}", reply.text);
    // A token that is not one is a 400.
    api.json_as(ALICE, Method::GET, &format!("{}?limit=2&continue=garbage", pods("dev")), None).await.failure(400, "BadRequest");
    // Tables page too (kubectl get asks for tables, 500 rows at a time).
    let table = api.call(Some(ALICE), Method::GET, &format!("{}?limit=5", pods("dev")), &[("accept", TABLE)], "").await;
    assert_eq!(table.body["rows"].as_array().map(Vec::len), Some(5));
    assert!(table.body["metadata"]["continue"].is_string());
}

#[tokio::test]
async fn a_tenants_read_across_namespaces_reads_only_its_own() {
    let api = Api::start().await;
    api.push_images("dev", &["app:1"]).await;
    api.push_images("prod", &["app:1"]).await;
    api.push_images("qa", &["app:1"]).await;
    api.create_pod("dev", pod("mine")).await;
    api.create_pod("qa", pod("seen")).await;
    for i in 0..5 {
        api.create_pod("prod", pod(&format!("other{i}"))).await;
    }
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/pods?limit=1", None).await;
    assert_eq!(reply.qualified_names(), ["dev/mine"]);
    let token = reply.body["metadata"]["continue"].as_str().expect("a second page").to_string();
    let reply = api.json_as(ALICE, Method::GET, &format!("/api/v1/pods?limit=1&continue={}", q(&token)), None).await;
    assert_eq!(reply.qualified_names(), ["qa/seen"]);
    assert!(reply.body["metadata"]["continue"].is_null(), "{}", reply.text);
    // A field selector naming another tenant's namespace reads nothing of it.
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/pods?fieldSelector=metadata.namespace%3Dprod", None).await;
    reply.ok(200);
    assert!(reply.items().is_empty(), "{}", reply.text);
    // The admin sees all seven.
    let reply = api.get("/api/v1/pods?limit=4").await;
    assert_eq!(reply.items().len(), 4);
    let all = api.get("/api/v1/pods").await;
    assert_eq!(all.items().len(), 7);
}

#[tokio::test]
async fn watches_per_identity_are_capped() {
    let api = Api::start().await;
    // The test server allows four at once.
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(api.watch_as(ALICE, &format!("{}?watch=true", pods("dev"))).await);
    }
    let reply = api.json_as(ALICE, Method::GET, &format!("{}?watch=true", pods("dev")), None).await;
    reply.failure(429, "TooManyRequests").mentions(&["too many watches"]);
    assert_eq!(reply.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    assert_eq!(reply.body["details"]["retryAfterSeconds"], 5);
    // The admin is not counted; a closed watch frees its place.
    let _admin = api.watch(&format!("{}?watch=true", pods("dev"))).await;
    drop(open.pop());
    let deadline = Instant::now() + PATIENCE;
    while api.app.watch_limits.open("alice") > 3 {
        assert!(Instant::now() < deadline, "the closed watch is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _again = api.watch_as(ALICE, &format!("{}?watch=true", pods("dev"))).await;
}

#[tokio::test]
async fn events_about_cluster_objects_are_for_it_admins() {
    use kapsel_api::kinds::event::EventType;
    use kapsel_server::events::record;
    let api = Api::start().await;
    let token = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": "carol"},
        "spec": {"user": "carol", "roles": [{"namespace": "default", "role": "view"}]}});
    let issued = api.post("/apis/kapsel.io/v1alpha1/tokens", token).await;
    issued.ok(201);
    let carol = issued.body["status"]["token"].as_str().expect("the secret, shown once").to_string();
    api.push_images("default", &["app:1"]).await;
    let stored_pod = api.create_pod("default", pod("web")).await;
    record(&api.store, &stored_pod, EventType::Normal, "Started", "started").await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1", "uid": "u"}});
    record(&api.store, &node, EventType::Warning, "NodeNotReady", "names any tenant's pods").await;

    let events = "/api/v1/namespaces/default/events";
    assert_eq!(api.get(events).await.items().len(), 2);
    let seen = api.json_as(&carol, Method::GET, events, None).await;
    seen.ok(200);
    let reasons: Vec<&str> = seen.body["items"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["Started"]);
    let node_event = format!("{events}/edge-1.node.nodenotready");
    api.get(&node_event).await.ok(200);
    api.json_as(&carol, Method::GET, &node_event, None).await.failure(404, "NotFound");
    let mut watch = api.watch_as(&carol, &format!("{events}?watch=true")).await;
    assert_eq!(summary(&watch.next().await), ("ADDED".to_string(), "default/web.pod.started".to_string()));
    record(&api.store, &node, EventType::Warning, "NodeNotReady", "again").await;
    watch.assert_quiet().await;
}

#[tokio::test]
async fn plugin_upload_names_are_checked_like_object_names() {
    let api = Api::start().await;
    for name in ["Bad_Name", "..%2F..%2Fescape", "a.b", "x%00y"] {
        let path = format!("/apis/kapsel.io/v1alpha1/plugins/{name}/component?world=storage-driver");
        let reply = api
            .call(
                Some(ADMIN),
                Method::POST,
                &path,
                &[("content-type", "application/wasm")],
                kapsel_plugins::defaults::LOCAL_VOLUMES.to_vec(),
            )
            .await;
        reply.failure(422, "Invalid");
        assert_eq!(reply.cause_fields(), ["metadata.name"], "{name}: {}", reply.text);
    }
}
