//! Wasm plug-ins through the API, in-process: a component is checked against
//! its world on upload (size, kind of module, exports) before anything is
//! stored, versions roll back, config edits reload it; a network driver
//! gives namespaces their segments; a failing plug-in follows its failure
//! policy and turns `Degraded`; a plug-in swapped under load loses no call
//! and no state.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::*;
use http::Method;
use serde_json::{Value, json};

const PLUGINS: &str = "/apis/kapsel.io/v1alpha1/plugins";

/// Uploading plug-ins: a component is checked against its world before anything changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_checked_on_upload_and_roll_back() {
    let api = Api::start().await;
    let api = &api;
    let upload = |bytes: &[u8], query: &str| {
        let bytes = bytes.to_vec();
        let path = format!("{PLUGINS}/balance/component{query}");
        async move { api.call(Some(ADMIN), Method::POST, &path, &[("content-type", "application/wasm")], bytes).await }
    };
    // A new plug-in needs its world.
    upload(kapsel_plugins::defaults::SPREAD, "").await.failure(422, "Invalid");
    // Too large: refused on the announced length, before the body is read; and when it turns out longer.
    let path = format!("{PLUGINS}/balance/component?world=scheduler-extension");
    let announced = (32 << 20) + 1;
    api.call(Some(ADMIN), Method::POST, &path, &[("content-length", &announced.to_string())], vec![0u8; 16])
        .await
        .failure(413, "RequestEntityTooLarge");
    api.call(Some(ADMIN), Method::POST, &path, &[], vec![0u8; (32 << 20) + 1]).await.failure(413, "RequestEntityTooLarge");
    // What does not fit is refused with the reason, and nothing is stored.
    let core = upload(b"\0asm\x01\0\0\0", "?world=scheduler-extension").await;
    core.failure(422, "Invalid");
    assert!(core.message().contains("core WebAssembly module"), "{}", core.text);
    assert_eq!(core.cause_fields(), vec!["component"]);
    let wrong = upload(kapsel_plugins::defaults::LOCAL_VOLUMES, "?world=scheduler-extension").await;
    wrong.failure(422, "Invalid");
    assert!(wrong.message().contains("scheduler-extension"), "{}", wrong.text);
    api.get(&format!("{PLUGINS}/balance")).await.failure(404, "NotFound");

    // spread, then binpack under the same name; rollback returns to spread.
    let first = upload(kapsel_plugins::defaults::SPREAD, "?world=scheduler-extension&version=1").await;
    first.ok(200);
    assert_eq!(first.body["status"]["phase"], "Active");
    let spread_digest = first.body["spec"]["digest"].as_str().unwrap().to_string();
    assert!(spread_digest.starts_with("sha256:") && spread_digest.len() == 71, "{spread_digest}");
    let second = upload(kapsel_plugins::defaults::BINPACK, "?version=2").await;
    second.ok(200);
    assert_eq!(second.body["spec"]["previousDigest"], spread_digest.as_str());
    assert_eq!(second.body["spec"]["version"], "2");
    // A failed upload leaves the active version alone.
    upload(b"garbage", "").await.failure(422, "Invalid");
    let after = api.get(&format!("{PLUGINS}/balance")).await;
    assert_eq!(after.body["spec"]["digest"], second.body["spec"]["digest"]);
    let back = api.call(Some(ADMIN), Method::POST, &format!("{PLUGINS}/balance/rollback"), &[], Body::empty()).await;
    back.ok(200);
    assert_eq!(back.body["spec"]["digest"], spread_digest.as_str());
    assert_eq!(back.body["spec"]["version"], "1");
    // Tenants may not upload.
    api.call(
        Some(ALICE),
        Method::POST,
        &format!("{PLUGINS}/x/component?world=scheduler-extension"),
        &[],
        kapsel_plugins::defaults::SPREAD.to_vec(),
    )
    .await
    .failure(403, "Forbidden");
    // Listed like any kind, deleted like any kind.
    assert_eq!(api.get(PLUGINS).await.names(), ["balance"]);
    api.delete(&format!("{PLUGINS}/balance")).await.ok(200);
}

/// A plug-in created with its config first, then given a component; config edits reload it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_config_is_applied_and_edits_reload() {
    let api = Api::start().await;
    let manifest = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "zones"},
        "spec": {"world": "scheduler-extension", "config": {"max-skew": "1"}, "limits": {"deadlineMilliseconds": 50}}});
    let created = api.post(PLUGINS, manifest.clone()).await;
    created.ok(201);
    assert_eq!(created.body["status"]["phase"], "Pending");
    let mut forged = manifest.clone();
    forged["metadata"]["name"] = json!("forged");
    forged["spec"]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
    api.post(PLUGINS, forged).await.failure(422, "Invalid");

    let path = format!("{PLUGINS}/zones/component");
    let reply = api.call(Some(ADMIN), Method::POST, &path, &[], kapsel_plugins::defaults::SPREAD.to_vec()).await;
    reply.ok(200);
    assert_eq!(reply.body["spec"]["config"]["max-skew"], "1");
    assert_eq!(reply.body["status"]["phase"], "Active");

    // Digests are the upload's to set.
    api.patch(&format!("{PLUGINS}/zones"), MERGE_PATCH, json!({"spec": {"digest": format!("sha256:{}", "1".repeat(64))}}))
        .await
        .failure(422, "Invalid");
    // A config the component refuses is stored, but reported and not applied.
    api.patch(&format!("{PLUGINS}/zones"), MERGE_PATCH, json!({"spec": {"config": {"no-such-key": "1"}}})).await.ok(200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let current = api.get(&format!("{PLUGINS}/zones")).await;
        if current.body["status"]["phase"] == "Rejected" {
            assert!(current.body["status"]["message"].as_str().unwrap().contains("no-such-key"), "{}", current.text);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the edit was not reported: {}", current.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn segment(namespace: &Value) -> Option<&str> {
    namespace.pointer("/metadata/annotations/network.kapsel.io~1segment").and_then(Value::as_str)
}

async fn upload_as(api: &Api, name: &str, world: &str, bytes: &[u8]) -> Reply {
    let path = format!("{PLUGINS}/{name}/component?world={world}");
    api.call(Some(ADMIN), Method::POST, &path, &[("content-type", "application/wasm")], bytes.to_vec()).await
}

fn hostile_network() -> Vec<u8> {
    kapsel_test_guests::HOSTILE_NETWORK.to_vec()
}

/// A network driver gives each namespace its segment, recorded in
/// annotations tenants cannot forge; it is released with the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_get_their_network_from_the_network_driver() {
    let api = Api::start().await;
    // Four /24s in all, for the four namespaces that exist already.
    let manifest = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "ipam"},
        "spec": {"world": "network-driver", "config": {"pool": "10.70.0.0/22"}}});
    api.post(PLUGINS, manifest).await.ok(201);
    upload_as(&api, "ipam", "network-driver", kapsel_plugins::defaults::NAMESPACE_IPAM).await.ok(200);
    // One network driver at a time.
    upload_as(&api, "other", "network-driver", kapsel_plugins::defaults::NAMESPACE_IPAM).await.failure(422, "Invalid");

    // The controller gives the namespaces that exist already their networks.
    let list = eventually(&api, "/api/v1/namespaces", "networks assigned", |list| {
        list["items"].as_array().unwrap().iter().all(|n| segment(n).is_some())
    })
    .await;
    let with_network = list["items"].as_array().unwrap().clone();
    assert_eq!(with_network[0]["metadata"]["annotations"]["network.kapsel.io/driver"], "ipam");
    let segments: BTreeSet<&str> = with_network.iter().filter_map(segment).collect();
    assert_eq!(segments.len(), 4, "{segments:?}");

    // The pool is spent: a new namespace is refused, naming the driver, and nothing is stored.
    let namespace = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
        "annotations": {"network.kapsel.io/segment": "10.70.0.0/24", "team": "a"}}})
    };
    api.post("/api/v1/namespaces", namespace("team-a")).await.failure(403, "Forbidden").mentions(&["ipam", "no free segment"]);
    api.get("/api/v1/namespaces/team-a").await.failure(404, "NotFound");

    // Deleting a namespace releases its segment, which the next namespace gets.
    let freed = segment(&with_network[0]).unwrap().to_string();
    let owner = with_network[0]["metadata"]["name"].as_str().unwrap().to_string();
    api.delete(&format!("/api/v1/namespaces/{owner}")).await.ok(200);
    eventually(&api, "/api/v1/namespaces", "namespace finalized", |list| {
        list["items"].as_array().unwrap().iter().all(|n| n["metadata"]["name"] != owner.as_str())
    })
    .await;
    let created = api.post("/api/v1/namespaces", namespace("team-a")).await;
    created.ok(201);
    // The forged annotation was replaced by the driver's answer; the others are kept.
    assert_eq!(segment(&created.body), Some(freed.as_str()));
    assert_eq!(created.body["metadata"]["annotations"]["team"], "a");
    // Edits keep the platform's annotations.
    let edited = api
        .patch("/api/v1/namespaces/team-a", MERGE_PATCH, json!({"metadata": {"annotations": {"network.kapsel.io/segment": null}}}))
        .await;
    edited.ok(200);
    assert_eq!(segment(&edited.body), Some(freed.as_str()));
}

/// A plug-in that fails: `Fail` fails the operation with a Status naming
/// it, `Ignore` skips the call with an Event; three failures in a row make
/// it `Degraded` (status and Event), and a success makes it `Active` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugins_follow_their_failure_policy_and_degrade() {
    let api = Api::start().await;
    let manifest = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "flaky"},
        "spec": {"world": "network-driver", "failurePolicy": "Fail", "limits": {"deadlineMilliseconds": 300}}});
    api.post(PLUGINS, manifest).await.ok(201);
    upload_as(&api, "flaky", "network-driver", &hostile_network()).await.ok(200);
    // Let the controller give the existing namespaces their networks, so the calls below are the only ones.
    for existing in ["default", "dev", "qa", "prod"] {
        eventually(&api, &format!("/api/v1/namespaces/{existing}"), "network assigned", |n| segment(n).is_some()).await;
    }

    let namespace = |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    for (name, failure) in [("trap-a", "trapped"), ("loop-a", "deadline of 300ms"), ("hog-a", "memory limit")] {
        let refused = api.post("/api/v1/namespaces", namespace(name)).await;
        refused.failure(500, "InternalError").mentions(&["plug-in \"flaky\"", failure, name]);
        assert_eq!(refused.body["details"]["name"], "flaky", "{}", refused.text);
        assert_eq!(refused.body["details"]["causes"][0]["reason"], "PluginFailed", "{}", refused.text);
        api.get(&format!("/api/v1/namespaces/{name}")).await.failure(404, "NotFound");
    }
    // The server is fine meanwhile.
    api.get("/api/v1/namespaces/dev/pods").await.ok(200);
    let degraded = eventually(&api, &format!("{PLUGINS}/flaky"), "degraded", |p| p["status"]["phase"] == "Degraded").await;
    assert_eq!(degraded["status"]["errors"], 3, "{degraded}");
    assert!(degraded["status"]["lastError"].as_str().unwrap().contains("memory limit"), "{degraded}");
    // Events are recorded beside the call, not before it answers.
    let event = eventually(&api, "/api/v1/namespaces/default/events/flaky.plugin.plugindegraded", "degraded event", |_| true).await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["involvedObject"]["name"], "flaky");

    // A call that works makes it Active again.
    api.post("/api/v1/namespaces", namespace("fine")).await.ok(201);
    eventually(&api, &format!("{PLUGINS}/flaky"), "recovered", |p| p["status"]["phase"] == "Active").await;
    eventually(&api, "/api/v1/namespaces/default/events/flaky.plugin.pluginrecovered", "recovery event", |_| true).await;

    // Under Ignore the namespace is created without a network, and an Event says the call was skipped.
    api.patch(&format!("{PLUGINS}/flaky"), MERGE_PATCH, json!({"spec": {"failurePolicy": "Ignore"}})).await.ok(200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let created = loop {
        let reply = api.post("/api/v1/namespaces", namespace("trap-b")).await;
        if reply.status == 201 {
            break reply;
        }
        reply.failure(500, "InternalError");
        assert!(tokio::time::Instant::now() < deadline, "the failure policy edit was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(segment(&created.body), None);
    let skipped = eventually(&api, "/api/v1/namespaces/default/events/flaky.plugin.plugincallskipped", "skipped event", |_| true).await;
    assert!(skipped["message"].as_str().unwrap().contains("trap-b"), "{skipped}");
}

/// Replacing a plug-in while it is called: no call fails, and the new
/// network driver takes over what the old one handed out (no segment twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_swapped_under_load_loses_no_call_and_no_state() {
    let api = Arc::new(Api::start().await);
    upload_as(&api, "ipam", "network-driver", kapsel_plugins::defaults::NAMESPACE_IPAM).await.ok(200);
    let creating = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut created = Vec::new();
            for n in 0..40 {
                let manifest = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("swap-{n}")}});
                let reply = api.post("/api/v1/namespaces", manifest).await;
                reply.ok(201);
                created.push(segment(&reply.body).expect("a segment").to_string());
            }
            created
        })
    };
    for _ in 0..6 {
        upload_as(&api, "ipam", "network-driver", kapsel_plugins::defaults::NAMESPACE_IPAM).await.ok(200);
    }
    let created = creating.await.unwrap();
    let distinct: BTreeSet<&String> = created.iter().collect();
    assert_eq!(distinct.len(), created.len(), "a segment was handed out twice: {created:?}");
}
