//! Create, get, update, patch and delete through the Kubernetes-style API,
//! in-process (the router driven with `tower::ServiceExt::oneshot` over a
//! fresh SQLite store per test): the fields the server sets, generated
//! names, bodies decoded (JSON, YAML) or refused (undecodable, mismatched,
//! too large), invalid fields reported at their paths, dry runs and field
//! validation, resourceVersion conflicts and delete preconditions, the
//! status subresource and generation, the three patch kinds, and deleting
//! a namespace with its contents. Each test asserts what a Kubernetes
//! client relies on: the status code, the `Status` body's `reason`,
//! `code`, `message` and `details.causes[].field`, and the objects returned.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use http::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sets_server_fields() {
    let api = Api::start().await;
    let mut body = pod("web");
    body["metadata"]["uid"] = json!("chosen-by-client");
    body["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    body["metadata"]["generation"] = json!(7);
    let reply = api.post(&pods("dev"), body).await;
    reply.ok(201);
    let created = &reply.body;
    assert_eq!(created["apiVersion"], "v1");
    assert_eq!(created["kind"], "Pod");
    assert_eq!(created["metadata"]["name"], "web");
    assert_eq!(created["metadata"]["namespace"], "dev");
    let uid = created["metadata"]["uid"].as_str().expect("uid");
    assert_ne!(uid, "chosen-by-client");
    assert_eq!(uid.len(), 36, "uid is a UUID: {uid}");
    let timestamp = created["metadata"]["creationTimestamp"].as_str().expect("creationTimestamp");
    assert_ne!(timestamp, "2000-01-01T00:00:00Z");
    assert!(timestamp.ends_with('Z') && timestamp.len() == 20, "RFC 3339 UTC seconds: {timestamp}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(revision(created) > 0);

    // GET returns what create returned.
    let fetched = api.get(&pod_path("dev", "web")).await;
    fetched.ok(200);
    assert_eq!(fetched.body, reply.body);

    // Without apiVersion/kind the server fills them in from the URL.
    let mut bare = pod("bare");
    bare.as_object_mut().unwrap().remove("apiVersion");
    bare.as_object_mut().unwrap().remove("kind");
    let reply = api.post(&pods("dev"), bare).await;
    reply.ok(201);
    assert_eq!((reply.body["apiVersion"].as_str(), reply.body["kind"].as_str()), (Some("v1"), Some("Pod")));

    // A client may not pick the resourceVersion of a new object.
    let mut versioned = pod("versioned");
    versioned["metadata"]["resourceVersion"] = json!("5");
    api.post(&pods("dev"), versioned).await.failure(400, "BadRequest").mentions(&["resourceVersion"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_generate_name() {
    let api = Api::start().await;
    let mut body = pod("");
    body["metadata"] = json!({"generateName": "web-"});
    let first = api.post(&pods("dev"), body.clone()).await;
    first.ok(201);
    let name = first.body["metadata"]["name"].as_str().expect("a generated name").to_string();
    assert!(name.starts_with("web-") && name.len() == "web-".len() + 5, "{name}");
    assert!(name["web-".len()..].chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{name}");
    assert_eq!(first.body["metadata"]["generateName"], "web-");
    api.get(&pod_path("dev", &name)).await.ok(200);
    let second = api.post(&pods("dev"), body).await;
    second.ok(201);
    assert_ne!(second.body["metadata"]["name"], first.body["metadata"]["name"]);

    // Neither name nor generateName.
    let mut nameless = pod("");
    nameless["metadata"] = json!({});
    let reply = api.post(&pods("dev"), nameless).await;
    reply.failure(422, "Invalid").mentions(&["name or generateName is required"]);
    assert_eq!(reply.cause_fields(), vec!["metadata.name"]);
    assert_eq!(reply.cause_reason("metadata.name").as_deref(), Some("FieldValueRequired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_twice_is_already_exists() {
    let api = Api::start().await;
    api.create_pod("dev", pod("web")).await;
    api.post(&pods("dev"), pod("web")).await.failure(409, "AlreadyExists").says("pods \"web\" already exists").about("web", "pods", "");
    // The same name in another namespace is another object.
    api.create_pod("qa", pod("web")).await;
    // Cluster-scoped kinds too.
    api.post("/api/v1/namespaces", json!({"metadata": {"name": "dev"}}))
        .await
        .failure(409, "AlreadyExists")
        .says("namespaces \"dev\" already exists")
        .about("dev", "namespaces", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_reports_invalid_fields() {
    let api = Api::start().await;

    // Missing image.
    let mut body = pod("web");
    body["spec"]["containers"][0].as_object_mut().unwrap().remove("image");
    let reply = api.post(&pods("dev"), body).await;
    reply.failure(422, "Invalid").says("Pod \"web\" is invalid: spec.containers[0].image: Required value").about("web", "Pod", "");
    assert_eq!(reply.cause_fields(), vec!["spec.containers[0].image"]);
    assert_eq!(reply.cause_reason("spec.containers[0].image").as_deref(), Some("FieldValueRequired"));

    // A bad name.
    let reply = api.post(&pods("dev"), pod("Web_1")).await;
    reply.failure(422, "Invalid").mentions(&["Pod \"Web_1\" is invalid", "metadata.name", "RFC 1123"]).about("Web_1", "Pod", "");
    assert_eq!(reply.cause_fields(), vec!["metadata.name"]);
    assert_eq!(reply.cause_reason("metadata.name").as_deref(), Some("FieldValueInvalid"));

    // A bad label key, and a bad label value.
    let reply = api.post(&pods("dev"), labelled_pod("labelled", json!({"bad key": "x"}))).await;
    reply.failure(422, "Invalid").mentions(&["Pod \"labelled\" is invalid", "metadata.labels"]);
    let fields = reply.cause_fields();
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert!(fields[0].starts_with("metadata.labels"), "{fields:?}");
    let reply = api.post(&pods("dev"), labelled_pod("labelled", json!({"app": "-web-"}))).await;
    reply.failure(422, "Invalid");
    let fields = reply.cause_fields();
    assert!(fields.len() == 1 && fields[0].starts_with("metadata.labels"), "{fields:?}");

    // Several errors are all reported, each at its path.
    let mut body = pod("Bad_Name");
    body["spec"]["containers"] = json!([{"name": "a", "image": ""}, {"name": "a", "image": "x"}]);
    body["spec"]["restartPolicy"] = json!("Sometimes");
    let reply = api.post(&pods("dev"), body).await;
    reply.failure(422, "Invalid");
    let fields: BTreeSet<String> = reply.cause_fields().into_iter().collect();
    let expected: BTreeSet<String> = ["metadata.name", "spec.containers[0].image", "spec.containers[1].name", "spec.restartPolicy"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(fields, expected);
    assert_eq!(reply.cause_reason("spec.containers[1].name").as_deref(), Some("FieldValueDuplicate"));
    assert_eq!(reply.cause_reason("spec.restartPolicy").as_deref(), Some("FieldValueNotSupported"));

    // A field of the wrong type is reported at its path.
    let mut body = pod("typed");
    body["spec"]["containers"][0]["args"] = json!("not-a-list");
    let reply = api.post(&pods("dev"), body).await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_fields(), vec!["spec.containers[0].args"]);

    // Nothing invalid was stored.
    assert!(api.get(&pods("dev")).await.items().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rejects_undecodable_or_mismatched_bodies() {
    let api = Api::start().await;
    let reply = api.call(Some(ADMIN), Method::POST, &pods("dev"), &[("content-type", JSON)], "{\"metadata\": {\"name\": ").await;
    reply.failure(400, "BadRequest").mentions(&["not valid JSON"]);
    let reply = api.call(Some(ADMIN), Method::POST, &pods("dev"), &[("content-type", JSON)], "[1, 2]").await;
    reply.failure(400, "BadRequest").mentions(&["must be an object"]);
    let reply = api.call(Some(ADMIN), Method::POST, &pods("dev"), &[("content-type", JSON)], "").await;
    reply.failure(400, "BadRequest");

    let mut body = pod("web");
    body["apiVersion"] = json!("apps/v1");
    api.post(&pods("dev"), body)
        .await
        .failure(400, "BadRequest")
        .says("the API version in the data (apps/v1) does not match the expected API version (v1)");
    let mut body = pod("web");
    body["kind"] = json!("Service");
    api.post(&pods("dev"), body)
        .await
        .failure(400, "BadRequest")
        .says("the kind in the data (Service) does not match the expected kind (Pod)");
    let mut body = pod("web");
    body["metadata"]["namespace"] = json!("qa");
    api.post(&pods("dev"), body).await.failure(400, "BadRequest").mentions(&["namespace"]);

    let reply = api.call(Some(ADMIN), Method::POST, &pods("dev"), &[("content-type", "application/xml")], "<pod/>").await;
    reply.failure(415, "UnsupportedMediaType");

    assert!(api.get(&pods("dev")).await.items().is_empty());
    assert!(api.get(&pods("qa")).await.items().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_from_yaml() {
    let api = Api::start().await;
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\n  labels:\n    app: web\nspec:\n  containers:\n  - name: app\n    image: app:1\n    args: [\"--port\", \"80\"]\n";
    let reply = api.call(Some(ADMIN), Method::POST, &pods("dev"), &[("content-type", "application/yaml")], yaml).await;
    reply.ok(201);
    assert_eq!(reply.body["metadata"]["name"], "from-yaml");
    assert_eq!(reply.body["metadata"]["labels"]["app"], "web");
    assert_eq!(reply.body["spec"]["containers"][0]["args"], json!(["--port", "80"]));
    let fetched = api.get(&pod_path("dev", "from-yaml")).await;
    fetched.ok(200);
    assert_eq!(fetched.body["spec"]["containers"][0]["image"], "app:1");

    let reply = api.call(Some(ADMIN), Method::POST, &pods("dev"), &[("content-type", "application/yaml")], "metadata: [unclosed").await;
    reply.failure(400, "BadRequest").mentions(&["YAML"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_in_a_missing_namespace_is_not_found() {
    let api = Api::start().await;
    api.post(&pods("x"), pod("web")).await.failure(404, "NotFound").says("namespaces \"x\" not found").about("x", "namespaces", "");
    api.get(&pod_path("x", "web")).await.failure(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_bodies_over_three_mebibytes() {
    let api = Api::start().await;
    let limit = 3 * 1024 * 1024;
    let mut body = pod("big");
    body["metadata"]["annotations"] = json!({"filler": "x".repeat(limit)});
    let bytes = body.to_string().into_bytes();
    assert!(bytes.len() > limit);
    let reply = api.call(Some(ADMIN), Method::POST, &pods("dev"), &[("content-type", JSON)], bytes).await;
    reply.failure(413, "RequestEntityTooLarge").mentions(&["3145728"]);
    api.get(&pod_path("dev", "big")).await.failure(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_dry_run_stores_nothing() {
    let api = Api::start().await;
    let before = api.get(&pods("dev")).await;
    let reply = api.post(&format!("{}?dryRun=All", pods("dev")), pod("web")).await;
    reply.ok(201);
    assert_eq!(reply.body["metadata"]["name"], "web");
    assert_eq!(reply.body["metadata"]["namespace"], "dev");
    api.get(&pod_path("dev", "web")).await.failure(404, "NotFound");
    let after = api.get(&pods("dev")).await;
    assert!(after.items().is_empty());
    assert_eq!(after.rv(), before.rv(), "a dry run must not advance the store's revision");
    // A dry run is still validated.
    let mut body = pod("web");
    body["spec"]["containers"][0]["image"] = json!("");
    let reply = api.post(&format!("{}?dryRun=All", pods("dev")), body).await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_fields(), vec!["spec.containers[0].image"]);
    api.post(&format!("{}?dryRun=Some", pods("dev")), pod("web")).await.failure(400, "BadRequest");
    // And the real create still works afterwards.
    api.create_pod("dev", pod("web")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation() {
    let api = Api::start().await;
    let mut body = pod("web");
    body["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let reply = api.post(&format!("{}?fieldValidation=Strict", pods("dev")), body.clone()).await;
    reply.failure(400, "BadRequest").mentions(&["strict decoding error", "spec.containers[0].imagePullPolicyy"]);
    api.get(&pod_path("dev", "web")).await.failure(404, "NotFound");
    // Warn (the default) stores the object and says so in a Warning header.
    let reply = api.post(&pods("dev"), body.clone()).await;
    reply.ok(201);
    let warnings: Vec<&str> = reply.headers.get_all("warning").iter().filter_map(|v| v.to_str().ok()).collect();
    assert!(warnings.iter().any(|w| w.starts_with("299 ") && w.contains("spec.containers[0].imagePullPolicyy")), "{warnings:?}");
    let mut ignored = body;
    ignored["metadata"]["name"] = json!("ignored");
    let reply = api.post(&format!("{}?fieldValidation=Ignore", pods("dev")), ignored).await;
    reply.ok(201);
    assert!(reply.headers.get("warning").is_none());
    api.post(&format!("{}?fieldValidation=Loose", pods("dev")), pod("other")).await.failure(400, "BadRequest");
    // A clean object gets no warning.
    let reply = api.post(&pods("dev"), pod("clean")).await;
    reply.ok(201);
    assert!(reply.headers.get("warning").is_none());
}

// ---------------------------------------------------------------------------
// Get
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_missing_objects_is_not_found() {
    let api = Api::start().await;
    api.get(&pod_path("dev", "nope")).await.failure(404, "NotFound").says("pods \"nope\" not found").about("nope", "pods", "");
    // An object is only found in its own namespace.
    api.create_pod("qa", pod("web")).await;
    api.get(&pod_path("dev", "web")).await.failure(404, "NotFound").about("web", "pods", "");
    api.get("/api/v1/namespaces/nope").await.failure(404, "NotFound").says("namespaces \"nope\" not found").about("nope", "namespaces", "");
    api.get("/apis/kapsel.io/v1alpha1/tokens/nope").await.failure(404, "NotFound").says("tokens.kapsel.io \"nope\" not found").about(
        "nope",
        "tokens",
        "kapsel.io",
    );
}

// ---------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_a_stale_resource_version_conflicts() {
    let api = Api::start().await;
    let created = api.create_pod("dev", pod("web")).await;
    let mut first = created.clone();
    first["metadata"]["labels"] = json!({"edited": "first"});
    let updated = api.put(&pod_path("dev", "web"), first).await;
    updated.ok(200);
    assert!(revision(&updated.body) > revision(&created));

    let mut stale = created.clone();
    stale["metadata"]["labels"] = json!({"edited": "second"});
    api.put(&pod_path("dev", "web"), stale)
        .await
        .failure(409, "Conflict")
        .says("Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again")
        .about("web", "pods", "");
    let current = api.get(&pod_path("dev", "web")).await;
    assert_eq!(current.body["metadata"]["labels"], json!({"edited": "first"}));
    assert_eq!(current.body, updated.body);

    // Without a resourceVersion the update is unconditional (as for pods in Kubernetes).
    let mut unconditional = current.body.clone();
    unconditional["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    unconditional["metadata"]["labels"] = json!({"edited": "third"});
    let reply = api.put(&pod_path("dev", "web"), unconditional).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["labels"], json!({"edited": "third"}));

    // Updating what does not exist is 404.
    let mut missing = pod("missing");
    missing["metadata"]["namespace"] = json!("dev");
    api.put(&pod_path("dev", "missing"), missing).await.failure(404, "NotFound").about("missing", "pods", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_another_name_is_a_bad_request() {
    let api = Api::start().await;
    let created = api.create_pod("dev", pod("web")).await;
    let mut renamed = created.clone();
    renamed["metadata"]["name"] = json!("other");
    api.put(&pod_path("dev", "web"), renamed).await.failure(400, "BadRequest").mentions(&["other", "web"]);
    api.get(&pod_path("dev", "other")).await.failure(404, "NotFound");
    let mut moved = created.clone();
    moved["metadata"]["namespace"] = json!("qa");
    api.put(&pod_path("dev", "web"), moved).await.failure(400, "BadRequest");
    let mut invalid = created;
    invalid["spec"]["containers"][0]["image"] = json!(" ");
    let reply = api.put(&pod_path("dev", "web"), invalid).await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_fields(), vec!["spec.containers[0].image"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_a_subresource() {
    let api = Api::start().await;
    let created = api.create_pod("dev", pod("web")).await;
    let created_uid = created["metadata"]["uid"].clone();

    // A write to the object ignores the status it carries.
    let mut with_status = created.clone();
    with_status["status"] = json!({"phase": "Running"});
    with_status["metadata"]["labels"] = json!({"a": "1"});
    let reply = api.put(&pod_path("dev", "web"), with_status).await;
    reply.ok(200);
    assert_eq!(reply.body["status"]["phase"], "Pending", "status written through the object: {}", reply.text);
    assert_eq!(reply.body["metadata"]["labels"], json!({"a": "1"}));
    assert_eq!(reply.body["metadata"]["uid"], created_uid);

    // A write to /status changes the status only.
    let mut status_write = reply.body.clone();
    status_write["status"] = json!({"phase": "Running", "podIP": "10.0.0.7"});
    status_write["spec"]["containers"][0]["image"] = json!("ignored:2");
    status_write["metadata"]["labels"] = json!({"ignored": "yes"});
    let reply = api.put(&format!("{}/status", pod_path("dev", "web")), status_write).await;
    reply.ok(200);
    assert_eq!(reply.body["status"]["phase"], "Running");
    assert_eq!(reply.body["status"]["podIP"], "10.0.0.7");
    assert_eq!(reply.body["spec"]["containers"][0]["image"], "app:1");
    assert_eq!(reply.body["metadata"]["labels"], json!({"a": "1"}));
    assert_eq!(reply.body["metadata"]["generation"], 1);

    // The status survives later writes to the object.
    let mut spec_write = reply.body.clone();
    spec_write["status"] = json!({"phase": "Failed"});
    spec_write["spec"]["containers"][0]["image"] = json!("app:2");
    let reply = api.put(&pod_path("dev", "web"), spec_write).await;
    reply.ok(200);
    assert_eq!(reply.body["status"]["phase"], "Running");
    assert_eq!(reply.body["spec"]["containers"][0]["image"], "app:2");

    // A merge patch of /status changes it too.
    let reply = api.patch(&format!("{}/status", pod_path("dev", "web")), MERGE_PATCH, json!({"status": {"phase": "Succeeded"}})).await;
    reply.ok(200);
    assert_eq!(reply.body["status"]["phase"], "Succeeded");
    assert_eq!(reply.body["status"]["podIP"], "10.0.0.7");
    let fetched = api.get(&pod_path("dev", "web")).await;
    assert_eq!(fetched.body["status"]["phase"], "Succeeded");
    // GET of /status returns the object.
    let status = api.get(&format!("{}/status", pod_path("dev", "web"))).await;
    status.ok(200);
    assert_eq!(status.body, fetched.body);

    // A stale resourceVersion on /status conflicts as well.
    let mut stale = created;
    stale["status"] = json!({"phase": "Unknown"});
    api.put(&format!("{}/status", pod_path("dev", "web")), stale).await.failure(409, "Conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_counts_spec_changes_only() {
    let api = Api::start().await;
    let created = api.create_pod("dev", pod("web")).await;
    assert_eq!(created["metadata"]["generation"], 1);

    let mut labels_only = created.clone();
    labels_only["metadata"]["labels"] = json!({"a": "1"});
    let reply = api.put(&pod_path("dev", "web"), labels_only).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["generation"], 1);
    assert!(revision(&reply.body) > revision(&created));

    let mut spec_change = reply.body.clone();
    spec_change["spec"]["containers"][0]["image"] = json!("app:2");
    let reply = api.put(&pod_path("dev", "web"), spec_change).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["generation"], 2);

    // A client cannot set the generation.
    let mut forged = reply.body.clone();
    forged["metadata"]["generation"] = json!(40);
    let reply = api.put(&pod_path("dev", "web"), forged).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["generation"], 2);

    let reply = api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"metadata": {"annotations": {"note": "x"}}})).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["generation"], 2);
    let reply = api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"spec": {"activeDeadlineSeconds": 30}})).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["generation"], 3);
    let reply = api.patch(&format!("{}/status", pod_path("dev", "web")), MERGE_PATCH, json!({"status": {"phase": "Running"}})).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["generation"], 3);
}

// ---------------------------------------------------------------------------
// Patch
// ---------------------------------------------------------------------------

fn two_container_pod() -> Value {
    let mut pod = labelled_pod("web", json!({"app": "web", "tier": "front"}));
    pod["spec"]["containers"] = json!([
        {"name": "web", "image": "web:1", "args": ["--port", "80"]},
        {"name": "log", "image": "log:1"},
    ]);
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch() {
    let api = Api::start().await;
    let created = api.create_pod("dev", two_container_pod()).await;
    let reply = api
        .patch(
            &pod_path("dev", "web"),
            MERGE_PATCH,
            json!({"metadata": {"labels": {"tier": null, "version": "2"}}, "spec": {"restartPolicy": "Never"}}),
        )
        .await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["labels"], json!({"app": "web", "version": "2"}));
    assert_eq!(reply.body["spec"]["restartPolicy"], "Never");
    assert_eq!(reply.body["metadata"]["uid"], created["metadata"]["uid"]);
    assert!(revision(&reply.body) > revision(&created));
    // A merge patch replaces lists whole.
    let reply = api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"spec": {"containers": [{"name": "web", "image": "web:2"}]}})).await;
    reply.ok(200);
    assert_eq!(reply.body["spec"]["containers"], json!([{"name": "web", "image": "web:2"}]));
    assert_eq!(api.get(&pod_path("dev", "web")).await.body, reply.body);
    // A patch that makes the object invalid is refused with the field.
    let reply = api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"spec": {"containers": [{"name": "web"}]}})).await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_fields(), vec!["spec.containers[0].image"]);
    // Patching what does not exist is 404.
    api.patch(&pod_path("dev", "nope"), MERGE_PATCH, json!({"metadata": {"labels": {"a": "b"}}}))
        .await
        .failure(404, "NotFound")
        .about("nope", "pods", "");
    // A patch may not rename the object.
    api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"metadata": {"name": "other"}})).await.failure(400, "BadRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_merges_containers_by_name() {
    let api = Api::start().await;
    api.create_pod("dev", two_container_pod()).await;
    let path = pod_path("dev", "web");

    let reply = api
        .patch(
            &path,
            STRATEGIC_PATCH,
            json!({"metadata": {"labels": {"tier": null}}, "spec": {"containers": [{"name": "web", "image": "web:2"}]}}),
        )
        .await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        reply.body["spec"]["containers"],
        json!([{"name": "web", "image": "web:2", "args": ["--port", "80"]}, {"name": "log", "image": "log:1"}])
    );
    assert_eq!(reply.body["metadata"]["generation"], 2);

    // A new container is appended; $setElementOrder orders the list.
    let reply = api
        .patch(
            &path,
            STRATEGIC_PATCH,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "log"}, {"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "log", "image": "log:2"}, {"name": "sidecar", "image": "sidecar:1"}],
            }}),
        )
        .await;
    reply.ok(200);
    assert_eq!(
        reply.body["spec"]["containers"],
        json!([
            {"name": "log", "image": "log:2"},
            {"name": "sidecar", "image": "sidecar:1"},
            {"name": "web", "image": "web:2", "args": ["--port", "80"]},
        ])
    );
    assert!(!reply.text.contains("$setElementOrder"), "a directive was stored: {}", reply.text);

    // $patch: delete removes a container by name.
    let reply = api.patch(&path, STRATEGIC_PATCH, json!({"spec": {"containers": [{"name": "log", "$patch": "delete"}]}})).await;
    reply.ok(200);
    let names: Vec<&str> = reply.body["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sidecar", "web"]);
    assert!(!reply.text.contains("$patch"), "a directive was stored: {}", reply.text);
    assert_eq!(api.get(&path).await.body, reply.body);

    // A strategic merge patch must be an object.
    api.patch(&path, STRATEGIC_PATCH, json!([1])).await.failure(400, "BadRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch() {
    let api = Api::start().await;
    api.create_pod("dev", two_container_pod()).await;
    let path = pod_path("dev", "web");
    let reply = api
        .patch(
            &path,
            JSON_PATCH,
            json!([
                {"op": "test", "path": "/spec/containers/1/name", "value": "log"},
                {"op": "replace", "path": "/spec/containers/0/image", "value": "web:3"},
                {"op": "remove", "path": "/spec/containers/1"},
                {"op": "add", "path": "/metadata/labels/extra", "value": "yes"},
            ]),
        )
        .await;
    reply.ok(200);
    assert_eq!(reply.body["spec"]["containers"], json!([{"name": "web", "image": "web:3", "args": ["--port", "80"]}]));
    assert_eq!(reply.body["metadata"]["labels"]["extra"], "yes");
    assert_eq!(api.get(&path).await.body, reply.body);
    // An operation that cannot apply changes nothing.
    let before = api.get(&path).await.body;
    let reply = api
        .patch(
            &path,
            JSON_PATCH,
            json!([{"op": "replace", "path": "/metadata/labels/app", "value": "x"}, {"op": "remove", "path": "/spec/nope"}]),
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    assert_eq!(api.get(&path).await.body, before);
    // A JSON patch is a list of operations.
    api.patch(&path, JSON_PATCH, json!({"op": "add"})).await.failure(400, "BadRequest");
}

/// Kubernetes answers a JSON patch whose operations cannot be applied
/// (a failed `test`, a missing path) with 422 `Invalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_that_cannot_apply_is_invalid() {
    let api = Api::start().await;
    api.create_pod("dev", pod("web")).await;
    let before = api.get(&pod_path("dev", "web")).await.body;
    for operations in [json!([{"op": "test", "path": "/metadata/name", "value": "other"}]), json!([{"op": "remove", "path": "/spec/nope"}])]
    {
        api.patch(&pod_path("dev", "web"), JSON_PATCH, operations).await.failure(422, "Invalid");
    }
    assert_eq!(api.get(&pod_path("dev", "web")).await.body, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_with_an_unsupported_media_type() {
    let api = Api::start().await;
    api.create_pod("dev", pod("web")).await;
    for media in ["application/apply-patch+yaml", "application/json", "text/plain"] {
        let reply = api.patch(&pod_path("dev", "web"), media, json!({"metadata": {"labels": {"a": "b"}}})).await;
        reply.failure(415, "UnsupportedMediaType").mentions(&["application/merge-patch+json", "application/strategic-merge-patch+json"]);
    }
    assert!(api.get(&pod_path("dev", "web")).await.body["metadata"].get("labels").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_with_a_stale_resource_version_conflicts() {
    let api = Api::start().await;
    let created = api.create_pod("dev", pod("web")).await;
    let path = pod_path("dev", "web");
    // The current resourceVersion is a precondition that holds.
    let reply = api.patch(&path, MERGE_PATCH, json!({"metadata": {"resourceVersion": rv(&created), "labels": {"a": "1"}}})).await;
    reply.ok(200);
    // The old one no longer does.
    for (media, body) in [
        (MERGE_PATCH, json!({"metadata": {"resourceVersion": rv(&created), "labels": {"a": "2"}}})),
        (STRATEGIC_PATCH, json!({"metadata": {"resourceVersion": rv(&created), "labels": {"a": "2"}}})),
        (
            JSON_PATCH,
            json!([{"op": "replace", "path": "/metadata/resourceVersion", "value": rv(&created)}, {"op": "add", "path": "/metadata/labels/a", "value": "2"}]),
        ),
    ] {
        api.patch(&path, media, body)
            .await
            .failure(409, "Conflict")
            .mentions(&["Operation cannot be fulfilled on pods \"web\""])
            .about("web", "pods", "");
    }
    assert_eq!(api.get(&path).await.body["metadata"]["labels"], json!({"a": "1"}));
}

// ---------------------------------------------------------------------------
// Delete
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_the_object() {
    let api = Api::start().await;
    let created = api.create_pod("dev", labelled_pod("web", json!({"app": "web"}))).await;
    let reply = api.delete(&pod_path("dev", "web")).await;
    reply.ok(200);
    assert_eq!(reply.body["kind"], "Pod");
    assert_eq!(reply.body["metadata"]["name"], "web");
    assert_eq!(reply.body["metadata"]["namespace"], "dev");
    assert_eq!(reply.body["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(reply.body["metadata"]["labels"], json!({"app": "web"}));
    api.get(&pod_path("dev", "web")).await.failure(404, "NotFound");
    api.delete(&pod_path("dev", "web")).await.failure(404, "NotFound").says("pods \"web\" not found").about("web", "pods", "");
    // A new object of the same name is a new object.
    let again = api.create_pod("dev", pod("web")).await;
    assert_ne!(again["metadata"]["uid"], created["metadata"]["uid"]);
    // A dry-run delete deletes nothing.
    api.json_as(ADMIN, Method::DELETE, &format!("{}?dryRun=All", pod_path("dev", "web")), None).await.ok(200);
    api.get(&pod_path("dev", "web")).await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_a_stale_precondition_conflicts() {
    let api = Api::start().await;
    let created = api.create_pod("dev", pod("web")).await;
    let updated = api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"metadata": {"labels": {"a": "1"}}})).await;
    updated.ok(200);
    let options = |rv: String| json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": rv}});
    api.json_as(ADMIN, Method::DELETE, &pod_path("dev", "web"), Some(options(rv(&created))))
        .await
        .failure(409, "Conflict")
        .mentions(&["Operation cannot be fulfilled on pods \"web\""])
        .about("web", "pods", "");
    api.get(&pod_path("dev", "web")).await.ok(200);
    api.json_as(ADMIN, Method::DELETE, &pod_path("dev", "web"), Some(options("abc".into()))).await.failure(400, "BadRequest");
    let reply = api.json_as(ADMIN, Method::DELETE, &pod_path("dev", "web"), Some(options(updated.rv()))).await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["name"], "web");
    api.get(&pod_path("dev", "web")).await.failure(404, "NotFound");
}

/// A conflict about an object outside the core group names it by
/// `plural.group` and carries the group in `details`, as every other error here does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_precondition_conflict_names_the_group() {
    let api = Api::start().await;
    let token = api.post("/apis/kapsel.io/v1alpha1/tokens", json!({"metadata": {"name": "bob"}, "spec": {"user": "bob"}})).await;
    token.ok(201);
    api.patch("/apis/kapsel.io/v1alpha1/tokens/bob", MERGE_PATCH, json!({"metadata": {"labels": {"a": "1"}}})).await.ok(200);
    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": token.rv()}});
    api.json_as(ADMIN, Method::DELETE, "/apis/kapsel.io/v1alpha1/tokens/bob", Some(options))
        .await
        .failure(409, "Conflict")
        .mentions(&["Operation cannot be fulfilled on tokens.kapsel.io \"bob\""])
        .about("bob", "tokens", "kapsel.io");
    api.get("/apis/kapsel.io/v1alpha1/tokens/bob").await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_contents() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    api.create_pod("dev", pod("b")).await;
    api.create_pod("qa", pod("a")).await;
    api.post("/api/v1/namespaces/dev/resourcequotas", json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}})).await.ok(201);
    let mut watch = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), api.get(&pods("dev")).await.rv())).await;

    // As in Kubernetes, the namespace goes Terminating first: no new content, the old still readable and deletable.
    let reply = api.delete("/api/v1/namespaces/dev").await;
    reply.ok(200);
    assert_eq!(reply.body["kind"], "Namespace");
    assert_eq!(reply.body["metadata"]["name"], "dev");
    assert_eq!(reply.body["status"]["phase"], "Terminating");
    assert!(reply.body["metadata"]["deletionTimestamp"].is_string(), "{}", reply.text);
    api.post(&pods("dev"), pod("c"))
        .await
        .failure(403, "Forbidden")
        .says("unable to create new content in namespace dev because it is being terminated");
    api.get(&pod_path("dev", "a")).await.ok(200);
    api.delete(&pod_path("dev", "b")).await.ok(200);
    api.delete("/api/v1/namespaces/dev").await.ok(200);

    // Then the namespace controller deletes it with everything in it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.get("/api/v1/namespaces/dev").await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the namespace was not finalized");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.get(&pod_path("dev", "a")).await.failure(404, "NotFound");
    api.get("/api/v1/namespaces/dev/resourcequotas/q").await.failure(404, "NotFound");
    assert_eq!(api.get("/api/v1/pods").await.qualified_names(), ["qa/a"]);
    api.get(&pod_path("qa", "a")).await.ok(200);
    // Watchers of the namespace's pods see them go.
    let mut gone = BTreeSet::new();
    for _ in 0..2 {
        let event = watch.next().await;
        gone.insert(summary(&event));
    }
    assert_eq!(gone, BTreeSet::from([("DELETED".to_string(), "dev/a".to_string()), ("DELETED".to_string(), "dev/b".to_string())]));
    // Nothing can be created in it any more.
    api.post(&pods("dev"), pod("c")).await.failure(404, "NotFound").says("namespaces \"dev\" not found");
}

/// Kubernetes honours `preconditions` on every delete, namespaces included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_delete_honours_a_stale_precondition() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    let namespace = api.get("/api/v1/namespaces/dev").await;
    let relabelled = api.patch("/api/v1/namespaces/dev", MERGE_PATCH, json!({"metadata": {"labels": {"team": "x"}}})).await;
    relabelled.ok(200);
    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": namespace.rv()}});
    api.json_as(ADMIN, Method::DELETE, "/api/v1/namespaces/dev", Some(options)).await.failure(409, "Conflict").about(
        "dev",
        "namespaces",
        "",
    );
    api.get("/api/v1/namespaces/dev").await.ok(200);
    api.get(&pod_path("dev", "a")).await.ok(200);
}
