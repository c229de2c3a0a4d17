//! Workload images, in-process: pushing a component into an `Artifact`
//! (`POST …/artifacts/{name}/push?tag=T`), what a push accepts and who may
//! push, the blob store's deduplication, reading an image back
//! (`GET …/artifacts/{name}/blobs/{digest}`), tags kept on the artifact's
//! own images, and a pod's `image` resolved against its namespace's
//! artifacts when the pod is created.

mod common;

use axum::body::Body;
use common::*;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

/// The `hello` sample component.
const HELLO: &[u8] = kapsel_node::HELLO;
/// The `worker` sample component: another image, another digest.
const WORKER: &[u8] = kapsel_node::WORKER;

/// The `spin` sample component, read from where `kapsel-node`'s build script put it.
fn spin() -> Vec<u8> {
    let path = std::path::Path::new(kapsel_node::EXAMPLE_WORKLOADS_DIR).join("spin.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A pod whose one container runs `image`.
fn pod_running(name: &str, image: &str) -> Value {
    let mut pod = pod(name);
    pod["spec"]["containers"][0]["image"] = json!(image);
    pod
}

/// How many blobs the store holds, read from its SQLite file.
async fn blob_count(api: &Api) -> i64 {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}?mode=ro", api.dir.path().join("k.db").display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("open the store's database");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM blobs").fetch_one(&mut connection).await.expect("count the blobs");
    count
}

/// `GET` of a blob as `token`: the status, the content type and the raw bytes.
async fn blob_as(api: &Api, token: Option<&str>, namespace: &str, name: &str, digest: &str) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::builder().uri(blob_path(namespace, name, digest));
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = api.send(request.body(Body::empty()).expect("request")).await;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, content_type, bytes)
}

/// The artifact's `spec.tags`.
fn tags(artifact: &Value) -> Value {
    artifact["spec"]["tags"].clone()
}

/// The digests of the artifact's `spec.images`, in order.
fn image_digests(artifact: &Value) -> Vec<String> {
    artifact["spec"]["images"].as_array().expect("spec.images").iter().map(|i| i["digest"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_a_component_makes_an_artifact_with_the_tag_and_the_image() {
    let api = Api::start().await;
    let hello = digest_of(HELLO);
    let worker = digest_of(WORKER);
    assert_ne!(hello, worker);

    // The first push creates the artifact, with the image (digest, size, time) and the tag.
    let pushed = api.push_as(ADMIN, "dev", "hello", "1", HELLO).await;
    pushed.ok(200);
    let artifact = &pushed.body;
    assert_eq!(artifact["apiVersion"], "kapsel.io/v1alpha1");
    assert_eq!(artifact["kind"], "Artifact");
    assert_eq!(artifact["metadata"]["name"], "hello");
    assert_eq!(artifact["metadata"]["namespace"], "dev");
    assert!(artifact["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{artifact}");
    assert_eq!(artifact["metadata"]["generation"], 1);
    revision(artifact);
    assert_eq!(tags(artifact), json!({"1": hello}));
    let images = artifact["spec"]["images"].as_array().expect("spec.images");
    assert_eq!(images.len(), 1, "{artifact}");
    assert_eq!(images[0]["digest"], hello);
    assert_eq!(images[0]["size"], HELLO.len());
    let pushed_at = images[0]["pushedAt"].as_str().expect("pushedAt");
    chrono::DateTime::parse_from_rfc3339(pushed_at).unwrap_or_else(|e| panic!("pushedAt {pushed_at:?}: {e}"));
    // It is an object like any other: read back as pushed, listed in its namespace only.
    assert_eq!(api.get(&artifact_path("dev", "hello")).await.ok(200).body, *artifact);
    assert!(api.get(&artifacts("dev")).await.names().contains(&"hello".to_string()));
    assert!(!api.get(&artifacts("qa")).await.names().contains(&"hello".to_string()));
    api.get(&artifact_path("qa", "hello")).await.failure(404, "NotFound");

    // The same bytes under another tag: one image, two tags.
    let retagged = api.push_as(ADMIN, "dev", "hello", "2", HELLO).await;
    retagged.ok(200);
    assert_eq!(tags(&retagged.body), json!({"1": hello, "2": hello}));
    assert_eq!(retagged.body["spec"]["images"], json!(images), "the image is not pushed again");
    assert_eq!(retagged.body["metadata"]["uid"], artifact["metadata"]["uid"]);
    assert!(revision(&retagged.body) > revision(artifact));

    // Other bytes under an existing tag: a second image, the tag moves to it, the other tags stay.
    let moved = api.push_as(ADMIN, "dev", "hello", "2", WORKER).await;
    moved.ok(200);
    assert_eq!(tags(&moved.body), json!({"1": hello, "2": worker}));
    assert_eq!(image_digests(&moved.body), [hello.clone(), worker.clone()]);
    assert_eq!(moved.body["spec"]["images"][1]["size"], WORKER.len());

    // No tag means `latest`, as `NAME` alone does in a pod.
    let path = format!("{}/push", artifact_path("dev", "hello"));
    let latest = api.call(Some(ADMIN), Method::POST, &path, &[("content-type", "application/wasm")], HELLO).await;
    latest.ok(200);
    assert_eq!(tags(&latest.body), json!({"1": hello, "2": worker, "latest": hello}));

    // Its table shows the tags and how many images it has.
    let table = api.call(Some(ADMIN), Method::GET, &artifacts("dev"), &[("accept", TABLE)], Body::empty()).await;
    table.ok(200);
    let columns: Vec<&str> =
        table.body["columnDefinitions"].as_array().expect("columns").iter().map(|c| c["name"].as_str().unwrap()).collect();
    let row = table.body["rows"].as_array().expect("rows").iter().find(|r| r["cells"][0] == "hello").expect("a row for hello").clone();
    let cell = |name: &str| row["cells"][columns.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name} column"))].clone();
    assert_eq!(cell("Tags"), "1,2,latest");
    assert_eq!(cell("Images"), "2");

    // Pods of the namespace run it by any of its tags.
    for (name, image) in [("one", "hello:1"), ("two", "hello:2"), ("bare", "hello")] {
        let created = api.create_pod("dev", pod_running(name, image)).await;
        assert_eq!(created["spec"]["containers"][0]["image"], image, "the image is kept as written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_are_stored_once_whatever_the_tag_or_namespace() {
    let api = Api::start().await;
    // Every standard image of every namespace is the hello component: one blob.
    assert_eq!(blob_count(&api).await, 1);
    let a = api.push_as(ADMIN, "dev", "hello", "1", HELLO).await;
    let b = api.push_as(ADMIN, "dev", "hello", "stable", HELLO).await;
    let c = api.push_as(ADMIN, "qa", "greeter", "7", HELLO).await;
    let d = api.push_as(ADMIN, "prod", "hello", "1", HELLO).await;
    let digest = digest_of(HELLO);
    for (reply, tag) in [(&a, "1"), (&b, "stable"), (&c, "7"), (&d, "1")] {
        reply.ok(200);
        assert_eq!(reply.body["spec"]["tags"][tag], digest, "{}", reply.text);
        assert_eq!(image_digests(&reply.body), std::slice::from_ref(&digest));
    }
    assert_eq!(blob_count(&api).await, 1, "the same bytes are stored once");
    // Different bytes are another blob, once too.
    api.push_as(ADMIN, "dev", "worker", "1", WORKER).await.ok(200);
    api.push_as(ADMIN, "qa", "worker", "1", WORKER).await.ok(200);
    assert_eq!(blob_count(&api).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_webassembly_components_can_be_pushed() {
    let api = Api::start().await;
    let blobs = blob_count(&api).await;

    // A core module (what wasm32-unknown-unknown or wasm32-wasip1 builds) is named as such.
    let mut core = b"\0asm\x01\0\0\0".to_vec();
    core.extend_from_slice(&[0u8; 64]);
    let refused = api.push_as(ADMIN, "dev", "core", "1", core).await;
    refused.failure(422, "Invalid").about("core", "Artifact", "kapsel.io").mentions(&["core WebAssembly module", "wasm32-wasip2"]);
    assert_eq!(refused.cause_fields(), ["component"]);
    assert_eq!(refused.cause_reason("component").as_deref(), Some("FieldValueInvalid"));

    // Anything else is not a component.
    for (what, bytes) in [
        ("a script", b"#!/bin/sh\necho hello\n".to_vec()),
        ("random bytes", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("nothing", Vec::new()),
        ("a truncated header", b"\0asm\x0d".to_vec()),
    ] {
        let refused = api.push_as(ADMIN, "dev", "junk", "1", bytes).await;
        refused.failure(422, "Invalid");
        assert!(refused.message().contains("not a WebAssembly component"), "{what}: {}", refused.text);
        assert_eq!(refused.cause_fields(), ["component"], "{what}");
    }

    // A bad tag or artifact name is refused before anything is read.
    let refused = api.push_as(ADMIN, "dev", "hello", "-1", HELLO).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["tag"]);
    let refused = api.push_as(ADMIN, "dev", "Hello", "1", HELLO).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["metadata.name"]);
    // So is a push into a namespace that does not exist.
    api.push_as(ADMIN, "nope", "hello", "1", HELLO).await.failure(404, "NotFound").says("namespaces \"nope\" not found");

    // None of them left an artifact or a blob behind.
    for name in ["core", "junk", "hello", "Hello"] {
        api.get(&artifact_path("dev", name)).await.failure(404, "NotFound");
    }
    assert_eq!(blob_count(&api).await, blobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_push_where_they_may_edit() {
    let api = Api::start().await;
    // alice views qa and has no role in prod: she cannot push there.
    for namespace in ["qa", "prod"] {
        let refused = api.push_as(ALICE, namespace, "mine", "1", HELLO).await;
        refused.failure(403, "Forbidden");
        api.get(&artifact_path(namespace, "mine")).await.failure(404, "NotFound");
    }
    // Nor can anyone without a token.
    api.call(None, Method::POST, &push_path("dev", "mine", "1"), &[("content-type", "application/wasm")], HELLO)
        .await
        .failure(401, "Unauthorized");
    api.get(&artifact_path("dev", "mine")).await.failure(404, "NotFound");

    // She edits dev: she pushes there, and runs what she pushed.
    let pushed = api.push_as(ALICE, "dev", "mine", "1", HELLO).await;
    pushed.ok(200);
    assert_eq!(pushed.body["spec"]["tags"]["1"], digest_of(HELLO));
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod_running("mine", "mine:1"))).await.ok(201);
    // She reads artifacts where she has a role, not elsewhere.
    assert!(api.json_as(ALICE, Method::GET, &artifacts("dev"), None).await.ok(200).names().contains(&"mine".to_string()));
    api.json_as(ALICE, Method::GET, &artifacts("qa"), None).await.ok(200);
    api.json_as(ALICE, Method::GET, &artifacts("prod"), None).await.failure(403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_must_name_an_image_its_namespace_pushed() {
    let api = Api::start().await;

    // A tag the artifact lacks (x has only `latest`): refused, naming the field and the push to do.
    let refused = api.post(&pods("dev"), pod_running("p", "x:1")).await;
    refused.failure(422, "Invalid").about("p", "Pod", "").mentions(&[
        "Pod \"p\" is invalid",
        "spec.containers[0].image",
        "image \"x:1\" not found in namespace \"dev\": push it with `kapsel push FILE x:1 -n dev`",
    ]);
    assert_eq!(refused.cause_fields(), ["spec.containers[0].image"]);
    assert_eq!(refused.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueNotFound"));
    // An artifact that does not exist; `NAME` alone is `NAME:latest`.
    let refused = api.post(&pods("dev"), pod_running("p", "nope")).await;
    refused.failure(422, "Invalid").mentions(&["push it with `kapsel push FILE nope:latest -n dev`"]);
    assert_eq!(refused.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueNotFound"));

    // An image is its namespace's: pushed to qa, it is not found from dev.
    api.push_image("qa", "only-qa:1").await;
    let refused = api.post(&pods("dev"), pod_running("p", "only-qa:1")).await;
    refused.failure(422, "Invalid").mentions(&["image \"only-qa:1\" not found in namespace \"dev\"", "-n dev`"]);
    api.create_pod("qa", pod_running("p", "only-qa:1")).await;

    // An update that changes an image to one never pushed is refused the same way; one that keeps it is not checked.
    let mut moved = api.get(&pod_path("qa", "p")).await.body;
    moved["spec"]["containers"][0]["image"] = json!("nope:9");
    let refused = api.put(&pod_path("qa", "p"), moved).await;
    refused.failure(422, "Invalid").mentions(&["image \"nope:9\" not found in namespace \"qa\""]);
    assert_eq!(refused.cause_fields(), ["spec.containers[0].image"]);
    let patch = json!({"metadata": {"labels": {"kept": "yes"}}});
    api.patch(&pod_path("qa", "p"), "application/merge-patch+json", patch).await.ok(200);

    // A registry-style reference is malformed here: an artifact's name has no '/'.
    let refused = api.post(&pods("dev"), pod_running("p", "registry.example/app:1")).await;
    refused.failure(422, "Invalid").mentions(&["registry.example/app:1", "Artifact's name"]);
    assert_eq!(refused.cause_fields(), ["spec.containers[0].image"]);
    assert_eq!(refused.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueInvalid"));
    let refused = api.post(&pods("dev"), pod_running("p", "app:-1")).await;
    assert_eq!(refused.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueInvalid"), "{}", refused.text);

    // Init containers too, and every bad image is named at its path.
    let mut pod = pod_running("p", "app:1");
    pod["spec"]["initContainers"] = json!([{"name": "init", "image": "app:9"}]);
    pod["spec"]["containers"] = json!([{"name": "a", "image": "app:1"}, {"name": "b", "image": "gone:1"}]);
    let refused = api.post(&pods("dev"), pod).await;
    refused.failure(422, "Invalid");
    let mut fields = refused.cause_fields();
    fields.sort();
    assert_eq!(fields, ["spec.containers[1].image", "spec.initContainers[0].image"]);

    // A dry run is refused alike, and so is a tenant.
    api.post(&format!("{}?dryRun=All", pods("dev")), pod_running("p", "x:1")).await.failure(422, "Invalid");
    let refused = api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod_running("p", "x:1"))).await;
    refused.failure(422, "Invalid").mentions(&["push it with `kapsel push FILE x:1 -n dev`"]);

    // Nothing was stored; once pushed, the same pod is created.
    assert!(!api.get(&pods("dev")).await.names().contains(&"p".to_string()));
    api.push_image("dev", "x:1").await;
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod_running("p", "x:1"))).await.ok(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_may_pin_a_pushed_image_by_digest() {
    let api = Api::start().await;
    let hello = digest_of(HELLO);
    let worker = digest_of(WORKER);
    api.push_as(ADMIN, "dev", "hello", "1", HELLO).await.ok(200);
    api.push_as(ADMIN, "dev", "worker", "1", WORKER).await.ok(200);

    let pinned = format!("hello@{hello}");
    let created = api.create_pod("dev", pod_running("pinned", &pinned)).await;
    assert_eq!(created["spec"]["containers"][0]["image"], pinned);

    // A digest this artifact does not have — another artifact's, or nobody's — is not found.
    let zeros = format!("sha256:{}", "0".repeat(64));
    for digest in [&worker, &zeros] {
        let refused = api.post(&pods("dev"), pod_running("p", &format!("hello@{digest}"))).await;
        refused.failure(422, "Invalid").mentions(&[digest, "not found in namespace \"dev\"", "`kapsel push FILE hello:TAG -n dev`"]);
        assert_eq!(refused.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueNotFound"));
    }
    // Nor is the digest found in another namespace's artifact of that name.
    let refused = api.post(&pods("qa"), pod_running("p", &pinned)).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueNotFound"));
    // A malformed digest is invalid.
    let refused = api.post(&pods("dev"), pod_running("p", "hello@sha256:abc")).await;
    refused.failure(422, "Invalid").mentions(&["digest"]);
    assert_eq!(refused.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueInvalid"));

    // Moving the tag away leaves the pinned image runnable.
    let moved = api.push_as(ADMIN, "dev", "hello", "1", WORKER).await;
    moved.ok(200);
    assert_eq!(moved.body["spec"]["tags"]["1"], worker);
    api.create_pod("dev", pod_running("still-pinned", &pinned)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_endpoint_serves_the_pushed_bytes_to_the_namespaces_readers() {
    let api = Api::start().await;
    let hello = digest_of(HELLO);
    let worker = digest_of(WORKER);
    api.push_as(ADMIN, "dev", "hello", "1", HELLO).await.ok(200);
    api.push_as(ADMIN, "qa", "hello", "1", HELLO).await.ok(200);
    api.push_as(ADMIN, "prod", "secret", "1", WORKER).await.ok(200);

    // The namespace's tenants (edit in dev, view in qa) and the admin get exactly the pushed bytes.
    for (token, namespace) in [(ALICE, "dev"), (ALICE, "qa"), (ADMIN, "dev"), (ADMIN, "qa")] {
        let (status, content_type, bytes) = blob_as(&api, Some(token), namespace, "hello", &hello).await;
        assert_eq!(status, StatusCode::OK, "{namespace}: {}", String::from_utf8_lossy(&bytes));
        assert_eq!(content_type, "application/wasm");
        assert!(bytes == HELLO, "{namespace}: {} bytes back, {} pushed", bytes.len(), HELLO.len());
    }
    let (status, _, bytes) = blob_as(&api, Some(ADMIN), "prod", "secret", &worker).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == WORKER);

    // A digest the artifact lacks is not found, though the blob store has it (prod pushed it).
    let reply = read(
        api.send(
            Request::builder()
                .uri(blob_path("dev", "hello", &worker))
                .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    )
    .await;
    reply.failure(404, "NotFound");
    assert!(!reply.text.contains("\0asm"), "{}", reply.text);
    let zeros = format!("sha256:{}", "0".repeat(64));
    assert_eq!(blob_as(&api, Some(ADMIN), "dev", "hello", &zeros).await.0, StatusCode::NOT_FOUND);
    // So is an artifact the namespace does not have.
    assert_eq!(blob_as(&api, Some(ALICE), "dev", "secret", &worker).await.0, StatusCode::NOT_FOUND);

    // A tenant without a role in the namespace gets nothing, nor does a caller without a token.
    let (status, _, bytes) = blob_as(&api, Some(ALICE), "prod", "secret", &worker).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(bytes != WORKER);
    assert_eq!(blob_as(&api, None, "dev", "hello", &hello).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_point_only_at_the_artifacts_own_images() {
    let api = Api::start().await;
    let hello = digest_of(HELLO);
    let worker = digest_of(WORKER);
    let foreign = digest_of(&spin());
    api.push_as(ADMIN, "dev", "hello", "1", HELLO).await.ok(200);
    api.push_as(ADMIN, "dev", "hello", "2", WORKER).await.ok(200);
    api.push_as(ADMIN, "prod", "secret", "1", spin()).await.ok(200);
    let path = artifact_path("dev", "hello");
    let patch = |body: Value| api.call(Some(ALICE), Method::PATCH, &path, &[("content-type", MERGE_PATCH)], body.to_string());

    // A tenant moves a tag between the artifact's images …
    let moved = patch(json!({"spec": {"tags": {"1": worker}}})).await;
    moved.ok(200);
    assert_eq!(tags(&moved.body), json!({"1": worker, "2": worker}));
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod_running("moved", "hello:1"))).await.ok(201);
    patch(json!({"spec": {"tags": {"1": hello, "old": hello}}})).await.ok(200);
    // … but cannot point one at a digest the artifact lacks: another namespace's, or nobody's.
    for digest in [&foreign, &format!("sha256:{}", "0".repeat(64))] {
        let refused = patch(json!({"spec": {"tags": {"3": digest}}})).await;
        refused.failure(422, "Invalid").mentions(&[digest, "not one of this artifact's images"]);
        assert_eq!(refused.cause_fields(), ["spec.tags[3]"]);
        assert_eq!(refused.cause_reason("spec.tags[3]").as_deref(), Some("FieldValueNotFound"));
    }
    // Nor change the images (they are the pushes'): not dropping one a tag points at, not editing a digest.
    let mut artifact = api.get(&path).await.body;
    artifact["spec"]["images"] = json!([]);
    let refused = api.json_as(ALICE, Method::PUT, &path, Some(artifact)).await;
    refused.failure(422, "Invalid").mentions(&["written by pushes only"]);
    assert_eq!(refused.cause_fields(), ["spec.images"]);
    assert_eq!(refused.cause_reason("spec.images").as_deref(), Some("FieldValueForbidden"));
    let mut artifact = api.get(&path).await.body;
    artifact["spec"]["images"][0]["digest"] = json!("sha256:nope");
    let refused = api.json_as(ALICE, Method::PUT, &path, Some(artifact)).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.images"]);

    // The artifact is as pushed and retagged, and a pod cannot reach the foreign image through it.
    let stored = api.get(&path).await.body;
    assert_eq!(image_digests(&stored), [hello.clone(), worker.clone()]);
    assert_eq!(tags(&stored), json!({"1": hello, "2": worker, "old": hello}));
    api.post(&pods("dev"), pod_running("p", "hello:3")).await.failure(422, "Invalid");
    api.post(&pods("dev"), pod_running("p", &format!("hello@{foreign}"))).await.failure(422, "Invalid");
}

/// `spec.images` is written by pushes only, so that an artifact leads to
/// bytes its own namespace pushed: a tenant who learns another namespace's
/// digest must not be able to list it among its artifact's images (and
/// then read the bytes through the blob endpoint, or run them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_smuggle_a_foreign_digest_into_an_artifact() {
    let api = Api::start().await;
    let secret = spin();
    let foreign = digest_of(&secret);
    api.push_as(ADMIN, "prod", "secret", "1", secret.clone()).await.ok(200);
    api.push_as(ALICE, "dev", "hello", "1", HELLO).await.ok(200);
    let path = artifact_path("dev", "hello");
    let smuggled = json!({"digest": foreign, "size": secret.len(), "pushedAt": "2026-01-01T00:00:00Z"});

    // By PUT, by merge patch (which replaces the list), and by creating an artifact outright.
    let mut artifact = api.get(&path).await.body;
    artifact["spec"]["images"].as_array_mut().unwrap().push(smuggled.clone());
    artifact["spec"]["tags"]["stolen"] = json!(foreign);
    let put = api.json_as(ALICE, Method::PUT, &path, Some(artifact)).await;
    let mut images = api.get(&path).await.body["spec"]["images"].clone();
    images.as_array_mut().unwrap().push(smuggled.clone());
    let patched = api
        .call(
            Some(ALICE),
            Method::PATCH,
            &path,
            &[("content-type", MERGE_PATCH)],
            json!({"spec": {"images": images, "tags": {"stolen": foreign}}}).to_string(),
        )
        .await;
    let created = api
        .json_as(
            ALICE,
            Method::POST,
            &artifacts("dev"),
            Some(json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Artifact", "metadata": {"name": "stolen"},
                "spec": {"images": [smuggled], "tags": {"1": foreign}}})),
        )
        .await;
    // Every way is refused, and nothing foreign is reachable from dev.
    let mut leaks = Vec::new();
    for (how, reply) in [("PUT", &put), ("merge patch", &patched), ("create", &created)] {
        if !reply.status.is_client_error() {
            leaks.push(format!("{how} of an artifact listing a foreign digest was accepted ({})", reply.status));
        }
    }
    for name in ["hello", "stolen"] {
        let (status, _, bytes) = blob_as(&api, Some(ALICE), "dev", name, &foreign).await;
        if status == StatusCode::OK || bytes == secret {
            leaks.push(format!("the blob endpoint of dev/{name} served prod's bytes to dev's tenant ({status})"));
        }
    }
    let run = api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod_running("p", &format!("hello@{foreign}")))).await;
    if run.status.is_success() {
        leaks.push("a pod of dev was created with prod's image".into());
    }
    assert!(leaks.is_empty(), "a tenant smuggled a foreign digest into spec.images:\n{}", leaks.join("\n"));
}
