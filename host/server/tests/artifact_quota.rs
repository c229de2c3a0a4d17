//! Pushes have no way around IT's controls, in-process: a push is charged
//! to the namespace's quotas (`count/artifacts.kapsel.io` and the bytes of
//! its images, `kapsel.io/artifact-storage`), reviewed by admission like
//! any create or update of an `Artifact`, and capped in size (413); the
//! blobs nothing references any more are collected, those of artifacts
//! and plug-ins kept.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use kapsel_server::artifacts::{MAX_PUSH_BYTES, collect_blobs_once};
use serde_json::{Value, json};

/// The `hello` sample component.
const HELLO: &[u8] = kapsel_node::HELLO;
/// The `worker` sample component: other bytes.
const WORKER: &[u8] = kapsel_node::WORKER;

const PLUGINS: &str = "/apis/kapsel.io/v1alpha1/plugins";

/// Makes namespace `name` with one quota of `hard` (its status counted).
async fn namespace_with_quota(api: &Api, name: &str, hard: Value) {
    api.post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})).await.ok(201);
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "images"}, "spec": {"hard": hard}});
    let created = api.post(&format!("/api/v1/namespaces/{name}/resourcequotas"), quota).await;
    created.ok(201);
    assert!(created.body["status"]["used"].is_object(), "{}", created.text);
}

/// The `images` quota's `status.used` in `namespace`.
async fn used(api: &Api, namespace: &str) -> Value {
    let reply = api.get(&format!("/api/v1/namespaces/{namespace}/resourcequotas/images")).await;
    reply.ok(200);
    reply.body["status"]["used"].clone()
}

/// Whether the store holds a blob under `digest`.
async fn stored(api: &Api, digest: &str) -> bool {
    match api.store.get_blob(digest).await {
        Ok(_) => true,
        Err(kapsel_store::StoreError::NotFound) => false,
        Err(error) => panic!("reading blob {digest}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_count_against_the_artifact_quota() {
    let api = Api::start().await;
    namespace_with_quota(&api, "shop", json!({"count/artifacts.kapsel.io": "2"})).await;
    api.push_as(ADMIN, "shop", "one", "1", HELLO).await.ok(200);
    api.push_as(ADMIN, "shop", "two", "1", HELLO).await.ok(200);
    assert_eq!(used(&api, "shop").await, json!({"count/artifacts.kapsel.io": "2"}));

    // A third artifact is refused as Kubernetes words it, and nothing is stored.
    for attempt in 0..2 {
        let refused = api.push_as(ADMIN, "shop", "three", "1", WORKER).await;
        refused.failure(403, "Forbidden");
        refused.says(
            r#"artifacts "three" is forbidden: exceeded quota: images, requested: count/artifacts.kapsel.io=1, used: count/artifacts.kapsel.io=2, limited: count/artifacts.kapsel.io=2"#,
        );
        api.get(&artifact_path("shop", "three")).await.failure(404, "NotFound");
        assert!(!stored(&api, &digest_of(WORKER)).await, "attempt {attempt}: a refused push stored its bytes");
    }
    // More tags and images for the artifacts there are cost no count.
    api.push_as(ADMIN, "shop", "one", "2", WORKER).await.ok(200);
    api.push_as(ADMIN, "shop", "two", "latest", HELLO).await.ok(200);
    assert_eq!(used(&api, "shop").await, json!({"count/artifacts.kapsel.io": "2"}));

    // Deleting one makes room for another.
    api.delete(&artifact_path("shop", "two")).await.ok(200);
    assert_eq!(used(&api, "shop").await, json!({"count/artifacts.kapsel.io": "1"}));
    api.push_as(ADMIN, "shop", "three", "1", HELLO).await.ok(200);
    assert_eq!(used(&api, "shop").await, json!({"count/artifacts.kapsel.io": "2"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_never_exceed_the_count() {
    let api = Api::start().await;
    namespace_with_quota(&api, "shop", json!({"count/artifacts.kapsel.io": "2"})).await;
    let names = ["a", "b", "c", "d", "e", "f"];
    let replies = futures::future::join_all(names.iter().map(|name| api.push_as(ADMIN, "shop", name, "1", HELLO))).await;
    let accepted = replies.iter().filter(|reply| reply.status == 200).count();
    for reply in replies.iter().filter(|reply| reply.status != 200) {
        reply.failure(403, "Forbidden").mentions(&["exceeded quota: images"]);
    }
    assert_eq!(accepted, 2, "a quota of 2 artifacts admitted {accepted}");
    assert_eq!(api.get(&artifacts("shop")).await.names().len(), 2);
    assert_eq!(used(&api, "shop").await, json!({"count/artifacts.kapsel.io": "2"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_charged_the_bytes_they_store() {
    let api = Api::start().await;
    // Room for hello and a little more, not for worker besides.
    let limit = HELLO.len() + WORKER.len() - 1;
    namespace_with_quota(&api, "shop", json!({"kapsel.io/artifact-storage": limit.to_string()})).await;
    let pushed = api.push_as(ADMIN, "shop", "app", "1", HELLO).await;
    pushed.ok(200);
    assert_eq!(used(&api, "shop").await, json!({"kapsel.io/artifact-storage": HELLO.len().to_string()}));

    // The same bytes under another tag cost nothing more.
    api.push_as(ADMIN, "shop", "app", "2", HELLO).await.ok(200);
    assert_eq!(used(&api, "shop").await, json!({"kapsel.io/artifact-storage": HELLO.len().to_string()}));

    // New bytes that do not fit: refused, whether into this artifact or another, and not stored.
    for name in ["app", "other"] {
        let refused = api.push_as(ADMIN, "shop", name, "big", WORKER).await;
        refused.failure(403, "Forbidden");
        refused.says(&format!(
            r#"artifacts "{name}" is forbidden: exceeded quota: images, requested: kapsel.io/artifact-storage={}, used: kapsel.io/artifact-storage={}, limited: kapsel.io/artifact-storage={limit}"#,
            WORKER.len(),
            HELLO.len(),
        ));
    }
    let app = api.get(&artifact_path("shop", "app")).await;
    assert_eq!(app.body["spec"]["tags"], json!({"1": digest_of(HELLO), "2": digest_of(HELLO)}));
    api.get(&artifact_path("shop", "other")).await.failure(404, "NotFound");
    assert!(!stored(&api, &digest_of(WORKER)).await, "a refused push stored its bytes");

    // Every image of every artifact counts in full, shared bytes included.
    let mut raised = api.get("/api/v1/namespaces/shop/resourcequotas/images").await.body;
    raised["spec"]["hard"]["kapsel.io/artifact-storage"] = json!("64Mi");
    api.put("/api/v1/namespaces/shop/resourcequotas/images", raised).await.ok(200);
    api.push_as(ADMIN, "shop", "copy", "1", HELLO).await.ok(200);
    api.push_as(ADMIN, "shop", "app", "3", WORKER).await.ok(200);
    let total = 2 * HELLO.len() + WORKER.len();
    assert_eq!(used(&api, "shop").await, json!({"kapsel.io/artifact-storage": total.to_string()}));
    // And the recount from the objects agrees with the charges.
    assert_eq!(kapsel_server::quota::resync_once(&api.app).await.expect("recount"), 0, "the charges drifted from the objects");

    // A quota may name the resource; a misspelling of it is refused.
    let odd = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "odd"},
        "spec": {"hard": {"kapsel.io/artifact-storag": "1Mi"}}});
    let refused = api.post("/api/v1/namespaces/shop/resourcequotas", odd).await;
    refused.failure(422, "Invalid");
    assert!(refused.message().contains("kapsel.io/artifact-storage"), "{}", refused.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_reviews_a_push_as_a_write_of_the_artifact() {
    let api = Api::start().await;
    let rego = "package noartifacts\n\
        deny contains \"artifacts named forbidden are not allowed\" if { input.review.object.metadata.name == \"forbidden\" }\n\
        deny contains \"the unstable tag is not allowed\" if { input.review.object.spec.tags.unstable }\n\
        deny contains sprintf(\"operation %v\", [input.review.operation]) if { input.review.object.metadata.name == \"audit\"; input.review.operation == \"UPDATE\" }";
    let policy = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "ClusterAdmissionPolicy", "metadata": {"name": "artifacts"},
        "spec": {"match": {"kinds": ["Artifact"]}, "rego": rego}});
    api.post("/apis/kapsel.io/v1alpha1/clusteradmissionpolicies", policy).await.ok(201);

    // A create the policy denies: the push is denied, nothing is stored.
    let refused = api.push_as(ADMIN, "dev", "forbidden", "1", WORKER).await;
    refused.failure(403, "Forbidden").mentions(&["artifacts named forbidden are not allowed"]);
    api.get(&artifact_path("dev", "forbidden")).await.failure(404, "NotFound");
    assert!(!stored(&api, &digest_of(WORKER)).await, "a denied push stored its bytes");
    api.push_as(ALICE, "dev", "forbidden", "1", HELLO).await.failure(403, "Forbidden");

    // The review sees the artifact as the push would leave it: its tags included.
    api.push_as(ALICE, "dev", "fresh", "unstable", HELLO).await.failure(403, "Forbidden").mentions(&["the unstable tag is not allowed"]);
    api.get(&artifact_path("dev", "fresh")).await.failure(404, "NotFound");
    let first = api.push_as(ALICE, "dev", "fresh", "1", HELLO).await;
    first.ok(200);
    // A later push is an UPDATE; denied, it leaves the artifact as it was.
    api.push_as(ALICE, "dev", "fresh", "unstable", HELLO).await.failure(403, "Forbidden").mentions(&["the unstable tag is not allowed"]);
    assert_eq!(api.get(&artifact_path("dev", "fresh")).await.body, first.body);

    api.push_as(ADMIN, "dev", "audit", "1", HELLO).await.ok(200);
    api.push_as(ADMIN, "dev", "audit", "2", HELLO).await.failure(403, "Forbidden").mentions(&["operation UPDATE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_larger_than_the_cap_is_refused_with_413() {
    let api = Api::start().await;
    assert_eq!(MAX_PUSH_BYTES, 64 << 20);
    let path = push_path("dev", "huge", "1");
    let limit = MAX_PUSH_BYTES.to_string();
    // Announced too large: refused before the body is read.
    let announced = (MAX_PUSH_BYTES + 1).to_string();
    let refused = api.call(Some(ADMIN), Method::POST, &path, &[("content-length", &announced)], vec![0u8; 16]).await;
    refused.failure(413, "RequestEntityTooLarge").mentions(&[&limit]);
    // Not announced, and longer than the cap once read.
    let mut body = b"\0asm\x0d\0\x01\0".to_vec();
    body.resize(MAX_PUSH_BYTES + 1, 0);
    let refused = api.call(Some(ADMIN), Method::POST, &path, &[], body).await;
    refused.failure(413, "RequestEntityTooLarge").mentions(&[&limit]);
    api.get(&artifact_path("dev", "huge")).await.failure(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_nothing_references_are_collected() {
    let api = Api::start().await;
    let (hello, worker) = (digest_of(HELLO), digest_of(WORKER));
    // A plug-in, active and previous: both components are referenced.
    for (bytes, query) in [(kapsel_plugins::defaults::SPREAD, "?world=scheduler-extension"), (kapsel_plugins::defaults::BINPACK, "")] {
        let path = format!("{PLUGINS}/balance/component{query}");
        api.call(Some(ADMIN), Method::POST, &path, &[("content-type", "application/wasm")], bytes).await.ok(200);
    }
    let (spread, binpack) = (digest_of(kapsel_plugins::defaults::SPREAD), digest_of(kapsel_plugins::defaults::BINPACK));

    // worker is an image of one artifact, which goes; hello of many, which stay.
    api.push_as(ADMIN, "dev", "gone", "1", WORKER).await.ok(200);
    api.push_as(ADMIN, "dev", "gone", "2", HELLO).await.ok(200);
    api.delete(&artifact_path("dev", "gone")).await.ok(200);
    // The bytes of a push that failed after storing them.
    let leftover = b"\0asm\x0d\0\x01\0 a push that died before its artifact was written".to_vec();
    let leftover_digest = digest_of(&leftover);
    api.store.put_blob(&leftover_digest, &leftover).await.expect("store a blob");

    // Within the grace period nothing goes: a push may be about to reference it.
    assert_eq!(collect_blobs_once(&api.store, Duration::from_secs(3600)).await.expect("collect"), Vec::<String>::new());
    assert!(stored(&api, &worker).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut removed = collect_blobs_once(&api.store, Duration::ZERO).await.expect("collect");
    removed.sort();
    let mut expected = vec![worker.clone(), leftover_digest.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    for digest in [&worker, &leftover_digest] {
        assert!(!stored(&api, digest).await, "{digest} was not collected");
    }
    for digest in [&hello, &spread, &binpack] {
        assert!(stored(&api, digest).await, "{digest} is referenced, and was collected");
    }
    // What is referenced still works: pods run the images, the plug-in rolls back.
    api.create_pod("dev", pod("runs")).await;
    let request = http::Request::builder()
        .uri(blob_path("dev", "app", &hello))
        .header(http::header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let response = api.send(request).await;
    assert_eq!(response.status(), 200);
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
    assert_eq!(bytes.as_ref(), HELLO, "a kept image reads back whole");
    api.call(Some(ADMIN), Method::POST, &format!("{PLUGINS}/balance/rollback"), &[], axum::body::Body::empty()).await.ok(200);
    // A collected image can be pushed again.
    api.push_as(ADMIN, "dev", "back", "1", WORKER).await.ok(200);
    assert!(stored(&api, &worker).await);
    assert_eq!(collect_blobs_once(&api.store, Duration::ZERO).await.expect("collect"), Vec::<String>::new());
}
