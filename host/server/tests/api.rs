//! In-process integration tests of the Kubernetes-style API: the router is
//! driven with `tower::ServiceExt::oneshot` over a fresh SQLite store per
//! test. Each test asserts what a Kubernetes client relies on: the status
//! code, the `Status` body's `reason`, `code`, `message` and
//! `details.causes[].field`, and the objects and watch events returned.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::*;
use http::{Method, header};
use kapsel_server::auth::hash_secret;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Authentication and health
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_unauthorized() {
    let api = Api::start().await;
    for path in ["/api/v1/namespaces/dev/pods", "/api", "/version", "/apis/kapsel.io/v1alpha1/tokens"] {
        let reply = api.call(None, Method::GET, path, &[], Body::empty()).await;
        reply.failure(401, "Unauthorized").mentions(&["Unauthorized"]);
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE), "{path}: 401 without WWW-Authenticate");
    }
    let reply = api.call(Some("kpl_not-a-real-token"), Method::GET, "/api/v1/namespaces/dev/pods", &[], Body::empty()).await;
    reply.failure(401, "Unauthorized");
    let reply =
        api.call(None, Method::GET, "/api/v1/namespaces/dev/pods", &[("authorization", &format!("Basic {ADMIN}"))], Body::empty()).await;
    reply.failure(401, "Unauthorized");
    let reply = api.call(None, Method::GET, "/api/v1/namespaces/dev/pods", &[("authorization", "Bearer ")], Body::empty()).await;
    reply.failure(401, "Unauthorized");
    // Writes are refused too, and change nothing.
    let reply = api.call(None, Method::POST, &pods("dev"), &[("content-type", JSON)], pod("sneaky").to_string()).await;
    reply.failure(401, "Unauthorized");
    api.get(&pod_path("dev", "sneaky")).await.failure(404, "NotFound");
    // The admin token works.
    api.get("/api/v1/namespaces/dev/pods").await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_need_no_token() {
    let api = Api::start().await;
    for path in ["/healthz", "/readyz", "/livez"] {
        let reply = api.call(None, Method::GET, path, &[], Body::empty()).await;
        reply.ok(200);
        assert_eq!(reply.text, "ok", "{path}");
    }
}

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

// ---------------------------------------------------------------------------
// Get and list
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

/// `a` (app=web, env=dev, node-1), `b` (app=web, env=qa, tier=front, node-2),
/// `c` (app=db, env=prod), `d` (no labels) in `dev`; `e` (app=web) in `qa`.
async fn selector_fixture(api: &Api) {
    let mut a = labelled_pod("a", json!({"app": "web", "env": "dev"}));
    a["spec"]["nodeName"] = json!("node-1");
    let mut b = labelled_pod("b", json!({"app": "web", "env": "qa", "tier": "front"}));
    b["spec"]["nodeName"] = json!("node-2");
    api.create_pod("dev", a).await;
    api.create_pod("dev", b).await;
    api.create_pod("dev", labelled_pod("c", json!({"app": "db", "env": "prod"}))).await;
    api.create_pod("dev", pod("d")).await;
    api.create_pod("qa", labelled_pod("e", json!({"app": "web"}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_label_selectors() {
    let api = Api::start().await;
    selector_fixture(&api).await;
    let cases: &[(&str, &[&str])] = &[
        ("", &["a", "b", "c", "d"]),
        ("app=web", &["a", "b"]),
        ("app==web", &["a", "b"]),
        ("app!=web", &["c", "d"]),
        ("env in (dev,qa)", &["a", "b"]),
        ("env in (dev, qa)", &["a", "b"]),
        ("env notin (dev,qa)", &["c", "d"]),
        ("tier", &["b"]),
        ("!tier", &["a", "c", "d"]),
        ("app=web,!tier", &["a"]),
        ("app=web,env=qa", &["b"]),
        ("app=nothing", &[]),
    ];
    for (selector, expected) in cases {
        let reply = api.get(&format!("{}?labelSelector={}", pods("dev"), q(selector))).await;
        reply.ok(200);
        assert_eq!(reply.names(), *expected, "labelSelector={selector:?}");
    }
    for bad in ["app in web", "bad key=1", "app=(", "a=b,,c", "env in (dev"] {
        let reply = api.get(&format!("{}?labelSelector={}", pods("dev"), q(bad))).await;
        reply.failure(400, "BadRequest").mentions(&["unable to parse selector"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_field_selectors() {
    let api = Api::start().await;
    selector_fixture(&api).await;
    let cases: &[(&str, &str, &[&str])] = &[
        ("dev", "metadata.name=a", &["dev/a"]),
        ("dev", "metadata.name!=a", &["dev/b", "dev/c", "dev/d"]),
        ("dev", "spec.nodeName=node-1", &["dev/a"]),
        ("dev", "spec.nodeName!=node-1", &["dev/b", "dev/c", "dev/d"]),
        ("dev", "spec.nodeName=", &["dev/c", "dev/d"]),
        ("dev", "spec.nodeName=node-2,metadata.name=b", &["dev/b"]),
        ("", "metadata.namespace=qa", &["qa/e"]),
        ("", "metadata.namespace!=dev", &["qa/e"]),
        ("", "metadata.name=a", &["dev/a"]),
    ];
    for (namespace, selector, expected) in cases {
        let collection = if namespace.is_empty() { "/api/v1/pods".to_string() } else { pods(namespace) };
        let reply = api.get(&format!("{collection}?fieldSelector={}", q(selector))).await;
        reply.ok(200);
        assert_eq!(reply.qualified_names(), *expected, "{collection} fieldSelector={selector:?}");
    }
    // Both selectors at once.
    let reply = api.get(&format!("/api/v1/pods?labelSelector={}&fieldSelector={}", q("app=web"), q("metadata.namespace=dev"))).await;
    assert_eq!(reply.qualified_names(), ["dev/a", "dev/b"]);
    for bad in ["spec.image=x", "metadata.name", "metadata.labels=x"] {
        let reply = api.get(&format!("{}?fieldSelector={}", pods("dev"), q(bad))).await;
        reply.failure(400, "BadRequest").mentions(&["unable to parse selector"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_across_namespaces_with_a_resource_version() {
    let api = Api::start().await;
    let empty = api.get("/api/v1/pods").await;
    empty.ok(200);
    assert_eq!(empty.body["kind"], "PodList");
    assert_eq!(empty.body["apiVersion"], "v1");
    assert!(empty.items().is_empty());
    let empty_revision: i64 = empty.rv().parse().expect("list resourceVersion is a number");

    let a = api.create_pod("dev", pod("a")).await;
    let b = api.create_pod("qa", pod("b")).await;
    let c = api.create_pod("prod", pod("c")).await;
    let all = api.get("/api/v1/pods").await;
    all.ok(200);
    assert_eq!(all.qualified_names(), ["dev/a", "prod/c", "qa/b"]);
    let list_revision: i64 = all.rv().parse().expect("list resourceVersion is a number");
    assert!(list_revision > empty_revision);
    for object in [&a, &b, &c] {
        assert!(list_revision >= revision(object), "the list's revision {list_revision} predates {object}");
    }
    // Items carry their own resourceVersions, as stored.
    for item in all.items() {
        let name = item["metadata"]["name"].as_str().unwrap().to_string();
        let single = api.get(&pod_path(item["metadata"]["namespace"].as_str().unwrap(), &name)).await;
        assert_eq!(single.body, item);
    }
    // One namespace only.
    let dev = api.get(&pods("dev")).await;
    assert_eq!(dev.qualified_names(), ["dev/a"]);
    assert_eq!(dev.body["kind"], "PodList");

    // Cluster-scoped kinds list at their collection.
    let namespaces = api.get("/api/v1/namespaces").await;
    assert_eq!(namespaces.body["kind"], "NamespaceList");
    assert_eq!(namespaces.names(), ["default", "dev", "prod", "qa"]);
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

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_resource_version() {
    let api = Api::start().await;
    let a = api.create_pod("dev", pod("a")).await;
    let b = api.create_pod("dev", pod("b")).await;
    api.create_pod("qa", pod("elsewhere")).await;
    let modified = api.patch(&pod_path("dev", "a"), MERGE_PATCH, json!({"metadata": {"labels": {"v": "2"}}})).await;
    modified.ok(200);
    let deleted = api.delete(&pod_path("dev", "b")).await;
    deleted.ok(200);

    // From a's creation: b's creation, a's change, b's deletion, in order; then live events.
    let mut watch = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), rv(&a))).await;
    let added = watch.expect("ADDED", "b").await;
    assert_eq!(rv(&added), rv(&b));
    let changed = watch.expect("MODIFIED", "a").await;
    assert_eq!(changed["metadata"]["labels"], json!({"v": "2"}));
    assert_eq!(rv(&changed), modified.rv());
    let removed = watch.expect("DELETED", "b").await;
    assert!(revision(&removed) > revision(&changed));
    watch.assert_quiet().await;
    let c = api.create_pod("dev", pod("c")).await;
    let live = watch.expect("ADDED", "c").await;
    assert_eq!(live, c);
    api.create_pod("qa", pod("other")).await;
    watch.assert_quiet().await;

    // From b's deletion on, only what came later.
    let mut later = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), deleted.rv())).await;
    later.expect("ADDED", "c").await;
    later.assert_quiet().await;

    // From the current revision of a list: nothing until the next change.
    let listed = api.get(&pods("dev")).await;
    let mut fresh = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), listed.rv())).await;
    fresh.assert_quiet().await;
    api.delete(&pod_path("dev", "c")).await.ok(200);
    fresh.expect("DELETED", "c").await;
    watch.expect("DELETED", "c").await;

    // A resourceVersion that is not a number is a bad request.
    api.get(&format!("{}?watch=true&resourceVersion=abc", pods("dev"))).await.failure(400, "BadRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_a_resource_version_starts_with_the_current_objects() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    api.create_pod("dev", pod("b")).await;
    api.create_pod("qa", pod("q")).await;
    let mut watch = api.watch(&format!("{}?watch=true", pods("dev"))).await;
    let first: BTreeSet<(String, String)> = [watch.next().await, watch.next().await].iter().map(summary).collect();
    assert_eq!(first, BTreeSet::from([("ADDED".to_string(), "dev/a".to_string()), ("ADDED".to_string(), "dev/b".to_string())]));
    watch.assert_quiet().await;
    api.create_pod("dev", pod("c")).await;
    watch.expect("ADDED", "c").await;

    // resourceVersion=0 means the same.
    let mut zero = api.watch(&format!("{}?watch=true&resourceVersion=0", pods("dev"))).await;
    let initial: BTreeSet<(String, String)> = [zero.next().await, zero.next().await, zero.next().await].iter().map(summary).collect();
    assert_eq!(initial.len(), 3);
    assert!(initial.iter().all(|(kind, _)| kind == "ADDED"));
    zero.assert_quiet().await;

    // Across all namespaces.
    let mut all = api.watch("/api/v1/pods?watch=1").await;
    let mut initial = BTreeSet::new();
    for _ in 0..4 {
        initial.insert(summary(&all.next().await).1);
    }
    assert_eq!(initial, BTreeSet::from(["dev/a", "dev/b", "dev/c", "qa/q"].map(String::from)));
    all.assert_quiet().await;

    // A single object, by name.
    let mut one = api.watch(&format!("{}?watch=true", pod_path("dev", "a"))).await;
    one.expect("ADDED", "a").await;
    one.assert_quiet().await;
    api.patch(&pod_path("dev", "b"), MERGE_PATCH, json!({"metadata": {"labels": {"x": "y"}}})).await.ok(200);
    api.patch(&pod_path("dev", "a"), MERGE_PATCH, json!({"metadata": {"labels": {"x": "y"}}})).await.ok(200);
    one.expect("MODIFIED", "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_label_selector() {
    let api = Api::start().await;
    api.create_pod("dev", labelled_pod("web-1", json!({"app": "web"}))).await;
    api.create_pod("dev", labelled_pod("db-1", json!({"app": "db"}))).await;
    let mut watch = api.watch(&format!("{}?watch=true&labelSelector={}", pods("dev"), q("app=web"))).await;
    watch.expect("ADDED", "web-1").await;
    watch.assert_quiet().await;

    api.create_pod("dev", labelled_pod("db-2", json!({"app": "db"}))).await;
    api.create_pod("dev", labelled_pod("web-2", json!({"app": "web"}))).await;
    watch.expect("ADDED", "web-2").await;

    // Modified out of the selection: DELETED.
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "db"}}})).await.ok(200);
    watch.expect("DELETED", "web-1").await;
    // Changes to objects outside the selection are not sent.
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"more": "x"}}})).await.ok(200);
    api.delete(&pod_path("dev", "db-2")).await.ok(200);
    api.patch(&pod_path("dev", "web-2"), MERGE_PATCH, json!({"metadata": {"labels": {"more": "x"}}})).await.ok(200);
    watch.expect("MODIFIED", "web-2").await;
    api.delete(&pod_path("dev", "web-2")).await.ok(200);
    watch.expect("DELETED", "web-2").await;
    watch.assert_quiet().await;

    // A field selector filters a watch as well.
    let mut by_name = api.watch(&format!("{}?watch=true&fieldSelector={}", pods("dev"), q("metadata.name=db-1"))).await;
    by_name.expect("ADDED", "db-1").await;
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"again": "x"}}})).await.ok(200);
    api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"again": "x"}}})).await.ok(200);
    by_name.expect("MODIFIED", "db-1").await;

    // An invalid selector is refused before the stream starts.
    api.get(&format!("{}?watch=true&labelSelector={}", pods("dev"), q("app in web"))).await.failure(400, "BadRequest");
}

/// In Kubernetes a watch with a selector compares each change's previous and
/// new object: one that starts matching arrives as `ADDED` (the watcher has
/// never seen it), and one that stops matching as `DELETED` carrying the
/// object as the watcher last saw it (still matching), at the new resourceVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_label_selector_adds_objects_modified_into_it() {
    let api = Api::start().await;
    api.create_pod("dev", labelled_pod("db-1", json!({"app": "db"}))).await;
    let mut watch = api.watch(&format!("{}?watch=true&labelSelector={}", pods("dev"), q("app=web"))).await;
    watch.assert_quiet().await;
    api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "web"}}})).await.ok(200);
    watch.expect("ADDED", "db-1").await;
    api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"v": "2"}}})).await.ok(200);
    watch.expect("MODIFIED", "db-1").await;
    let moved = api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "db"}}})).await;
    moved.ok(200);
    let gone = watch.expect("DELETED", "db-1").await;
    assert_eq!(gone["metadata"]["labels"], json!({"app": "web", "v": "2"}), "the DELETED object is the last one that matched");
    assert_eq!(rv(&gone), moved.rv());
}

/// A watch resumed from a resourceVersion must also turn "modified out of
/// the selection" into `DELETED`: the client saw the object in its list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_watch_with_a_label_selector_deletes_objects_modified_out_of_it() {
    let api = Api::start().await;
    api.create_pod("dev", labelled_pod("web-1", json!({"app": "web"}))).await;
    let listed = api.get(&format!("{}?labelSelector={}", pods("dev"), q("app=web"))).await;
    assert_eq!(listed.names(), ["web-1"]);
    let mut watch = api.watch(&format!("{}?watch=true&labelSelector={}&resourceVersion={}", pods("dev"), q("app=web"), listed.rv())).await;
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "db"}}})).await.ok(200);
    watch.expect("DELETED", "web-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_after_timeout_seconds() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    let started = tokio::time::Instant::now();
    let mut watch = api.watch(&format!("{}?watch=true&timeoutSeconds=1", pods("dev"))).await;
    watch.expect("ADDED", "a").await;
    match watch.poll(Duration::from_secs(5)).await {
        Next::End => {}
        other => panic!("expected the watch to end, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5), "ended after {elapsed:?}");
    api.get(&format!("{}?watch=true&timeoutSeconds=soon", pods("dev"))).await.failure(400, "BadRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_resource_version_is_expired() {
    let api = Api::start().await;
    let a = api.create_pod("dev", pod("a")).await;
    api.create_pod("dev", pod("b")).await;
    let c = api.create_pod("dev", pod("c")).await;
    let store = api.store.clone();
    store.compact_to(revision(&c) - 1).await.expect("compact");

    let reply = api.get(&format!("{}?watch=true&resourceVersion={}", pods("dev"), rv(&a))).await;
    reply.failure(410, "Expired").mentions(&["too old resource version", &rv(&a)]);
    let reply = api.get(&format!("/api/v1/pods?watch=true&resourceVersion={}", rv(&a))).await;
    reply.failure(410, "Expired");

    // At the horizon and later still works; so does a fresh watch.
    let mut watch = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), revision(&c) - 1)).await;
    watch.expect("ADDED", "c").await;
    let mut fresh = api.watch(&format!("{}?watch=true", pods("dev"))).await;
    let names: BTreeSet<String> = [fresh.next().await, fresh.next().await, fresh.next().await].iter().map(|e| summary(e).1).collect();
    assert_eq!(names, BTreeSet::from(["dev/a", "dev/b", "dev/c"].map(String::from)));
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_output_for_list_and_get() {
    let api = Api::start().await;
    let mut a = pod("a");
    a["spec"]["nodeName"] = json!("node-1");
    api.create_pod("dev", a).await;
    api.create_pod("dev", pod("b")).await;

    let reply = api.call(Some(ADMIN), Method::GET, &pods("dev"), &[("accept", TABLE)], Body::empty()).await;
    reply.ok(200);
    let table = &reply.body;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert!(table["metadata"]["resourceVersion"].as_str().is_some_and(|v| v.parse::<i64>().is_ok()), "{table}");
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().expect("columnDefinitions").iter().map(|c| c["name"].as_str().unwrap()).collect();
    // Kubernetes' order: Age after the default columns, then the wide ones.
    assert_eq!(columns, ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]);
    for definition in table["columnDefinitions"].as_array().unwrap() {
        assert!(definition["type"].is_string() && definition["priority"].is_number(), "{definition}");
    }
    let rows = table["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    let mut names = Vec::new();
    for row in rows {
        let cells = row["cells"].as_array().expect("cells");
        assert_eq!(cells.len(), columns.len(), "{row}");
        names.push(cells[0].as_str().unwrap().to_string());
        let status = columns.iter().position(|c| *c == "Status").unwrap();
        assert_eq!(cells[status], "Pending");
        let ready = columns.iter().position(|c| *c == "Ready").unwrap();
        assert_eq!(cells[ready], "0/1");
        let age = columns.iter().position(|c| *c == "Age").unwrap();
        assert!(cells[age].as_str().unwrap().ends_with('s'), "age: {row}");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["name"], cells[0]);
    }
    names.sort();
    assert_eq!(names, ["a", "b"]);

    let reply = api.call(Some(ADMIN), Method::GET, &pod_path("dev", "a"), &[("accept", TABLE)], Body::empty()).await;
    reply.ok(200);
    assert_eq!(reply.body["kind"], "Table");
    assert_eq!(reply.body["columnDefinitions"].as_array().unwrap().len(), columns.len());
    let rows = reply.body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cells"][0], "a");
    let node = columns.iter().position(|c| c.eq_ignore_ascii_case("node")).expect("a Node column");
    assert_eq!(rows[0]["cells"][node], "node-1");

    // includeObject=Object embeds the whole object.
    let reply = api
        .call(Some(ADMIN), Method::GET, &format!("{}?includeObject=Object", pod_path("dev", "a")), &[("accept", TABLE)], Body::empty())
        .await;
    assert_eq!(reply.body["rows"][0]["object"]["kind"], "Pod");
    assert_eq!(reply.body["rows"][0]["object"]["spec"]["nodeName"], "node-1");

    // Namespaces: Name, Status, Age.
    let reply = api.call(Some(ADMIN), Method::GET, "/api/v1/namespaces", &[("accept", TABLE)], Body::empty()).await;
    let columns: Vec<&str> = reply.body["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Name", "Status", "Age"]);
    let rows: Vec<(String, String)> = reply.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["cells"][0].as_str().unwrap().to_string(), r["cells"][1].as_str().unwrap().to_string()))
        .collect();
    assert!(rows.contains(&("dev".to_string(), "Active".to_string())), "{rows:?}");

    // Without the Accept parameter, plain JSON.
    assert_eq!(api.get(&pods("dev")).await.body["kind"], "PodList");
}

// ---------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_act_within_their_roles() {
    let api = Api::start().await;
    api.create_pod("qa", pod("qa-pod")).await;
    api.create_pod("prod", pod("prod-pod")).await;
    api.create_pod("default", pod("default-pod")).await;

    // edit in dev: create, update, patch, delete.
    let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("dev-pod"))).await;
    reply.ok(201);
    let mut changed = reply.body.clone();
    changed["metadata"]["labels"] = json!({"by": "alice"});
    api.json_as(ALICE, Method::PUT, &pod_path("dev", "dev-pod"), Some(changed)).await.ok(200);
    let reply = api
        .call(
            Some(ALICE),
            Method::PATCH,
            &pod_path("dev", "dev-pod"),
            &[("content-type", MERGE_PATCH)],
            json!({"metadata": {"labels": {"v": "2"}}}).to_string(),
        )
        .await;
    reply.ok(200);
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("scratch"))).await.ok(201);
    api.json_as(ALICE, Method::DELETE, &pod_path("dev", "scratch"), None).await.ok(200);

    // view in qa: read, but not write.
    let reply = api.json_as(ALICE, Method::POST, &pods("qa"), Some(pod("nope"))).await;
    reply.failure(403, "Forbidden").mentions(&["alice", "create", "pods", "qa"]);
    api.get(&pod_path("qa", "nope")).await.failure(404, "NotFound");
    api.json_as(ALICE, Method::GET, &pod_path("qa", "qa-pod"), None).await.ok(200);
    assert_eq!(api.json_as(ALICE, Method::GET, &pods("qa"), None).await.names(), ["qa-pod"]);
    api.json_as(ALICE, Method::DELETE, &pod_path("qa", "qa-pod"), None)
        .await
        .failure(403, "Forbidden")
        .mentions(&["alice", "delete", "qa"]);
    api.get(&pod_path("qa", "qa-pod")).await.ok(200);

    // No role in prod: nothing, not even whether an object exists.
    api.json_as(ALICE, Method::GET, &pod_path("prod", "prod-pod"), None)
        .await
        .failure(403, "Forbidden")
        .mentions(&["alice", "get", "pods", "prod"]);
    api.json_as(ALICE, Method::GET, &pod_path("prod", "missing"), None).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::GET, &pods("prod"), None).await.failure(403, "Forbidden").mentions(&["list"]);
    let reply = api.call(Some(ALICE), Method::GET, &format!("{}?watch=true", pods("prod")), &[], Body::empty()).await;
    reply.failure(403, "Forbidden").mentions(&["watch"]);

    // Lists across namespaces show only hers.
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/pods", None).await;
    reply.ok(200);
    assert_eq!(reply.qualified_names(), ["dev/dev-pod", "qa/qa-pod"]);
    let reply = api.json_as(ALICE, Method::GET, &format!("/api/v1/pods?fieldSelector={}", q("metadata.namespace=prod")), None).await;
    assert!(reply.status.as_u16() == 403 || reply.items().is_empty(), "prod pods leaked: {}", reply.text);
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/namespaces", None).await;
    reply.ok(200);
    assert_eq!(reply.names(), ["dev", "qa"]);
    api.json_as(ALICE, Method::GET, "/api/v1/namespaces/dev", None).await.ok(200);
    api.json_as(ALICE, Method::GET, "/api/v1/namespaces/prod", None).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::POST, "/api/v1/namespaces", Some(json!({"metadata": {"name": "mine"}}))).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::DELETE, "/api/v1/namespaces/dev", None).await.failure(403, "Forbidden");
    api.get("/api/v1/namespaces/dev").await.ok(200);

    // Tokens are for IT admins only.
    api.json_as(ALICE, Method::GET, "/apis/kapsel.io/v1alpha1/tokens", None).await.failure(403, "Forbidden").mentions(&[
        "alice",
        "list",
        "tokens",
        "kapsel.io",
    ]);
    api.json_as(ALICE, Method::GET, "/apis/kapsel.io/v1alpha1/tokens/admin", None).await.failure(403, "Forbidden");
    api.json_as(
        ALICE,
        Method::POST,
        "/apis/kapsel.io/v1alpha1/tokens",
        Some(json!({"metadata": {"name": "mine"}, "spec": {"user": "alice", "admin": true}})),
    )
    .await
    .failure(403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_read_but_do_not_write_quotas() {
    let api = Api::start().await;
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"}, "spec": {"hard": {"pods": "10", "requests.cpu": "4"}}});
    api.post("/api/v1/namespaces/dev/resourcequotas", quota.clone()).await.ok(201);
    api.post("/api/v1/namespaces/prod/resourcequotas", quota.clone()).await.ok(201);

    let mut mine = quota.clone();
    mine["metadata"]["name"] = json!("mine");
    api.json_as(ALICE, Method::POST, "/api/v1/namespaces/dev/resourcequotas", Some(mine)).await.failure(403, "Forbidden").mentions(&[
        "alice",
        "create",
        "resourcequotas",
        "dev",
    ]);
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/namespaces/dev/resourcequotas/compute", None).await;
    reply.ok(200);
    assert_eq!(reply.body["spec"]["hard"]["pods"], "10");
    assert_eq!(api.json_as(ALICE, Method::GET, "/api/v1/namespaces/dev/resourcequotas", None).await.names(), ["compute"]);
    let reply = api
        .call(
            Some(ALICE),
            Method::PATCH,
            "/api/v1/namespaces/dev/resourcequotas/compute",
            &[("content-type", MERGE_PATCH)],
            json!({"spec": {"hard": {"pods": "1000"}}}).to_string(),
        )
        .await;
    reply.failure(403, "Forbidden");
    api.json_as(ALICE, Method::DELETE, "/api/v1/namespaces/dev/resourcequotas/compute", None).await.failure(403, "Forbidden");
    assert_eq!(api.get("/api/v1/namespaces/dev/resourcequotas/compute").await.body["spec"]["hard"]["pods"], "10");
    // Across namespaces, only hers.
    assert_eq!(api.json_as(ALICE, Method::GET, "/api/v1/resourcequotas", None).await.qualified_names(), ["dev/compute"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_watches_across_namespaces_see_only_theirs() {
    let api = Api::start().await;
    api.create_pod("prod", pod("old-prod")).await;
    api.create_pod("qa", pod("old-qa")).await;
    let mut watch = api.watch_as(ALICE, "/api/v1/pods?watch=true").await;
    watch.expect("ADDED", "old-qa").await;
    watch.assert_quiet().await;

    api.create_pod("prod", pod("new-prod")).await;
    api.create_pod("default", pod("new-default")).await;
    api.create_pod("dev", pod("new-dev")).await;
    let event = watch.next().await;
    assert_eq!(summary(&event), ("ADDED".to_string(), "dev/new-dev".to_string()));
    api.delete(&pod_path("prod", "old-prod")).await.ok(200);
    api.delete(&pod_path("qa", "old-qa")).await.ok(200);
    let event = watch.next().await;
    assert_eq!(summary(&event), ("DELETED".to_string(), "qa/old-qa".to_string()));
    watch.assert_quiet().await;

    // Resumed from a revision, the same filtering.
    let listed = api.json_as(ALICE, Method::GET, "/api/v1/pods", None).await;
    let mut resumed = api.watch_as(ALICE, &format!("/api/v1/pods?watch=true&resourceVersion={}", listed.rv())).await;
    api.create_pod("prod", pod("later-prod")).await;
    api.create_pod("qa", pod("later-qa")).await;
    assert_eq!(summary(&resumed.next().await), ("ADDED".to_string(), "qa/later-qa".to_string()));
    // And namespaces: only hers.
    let mut namespaces = api.watch_as(ALICE, "/api/v1/namespaces?watch=true").await;
    let seen: BTreeSet<String> = [namespaces.next().await, namespaces.next().await].iter().map(|e| summary(e).1).collect();
    assert_eq!(seen, BTreeSet::from(["/dev".to_string(), "/qa".to_string()]));
    namespaces.assert_quiet().await;
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_show_their_secret_once_and_revoke_on_delete() {
    let api = Api::start().await;
    let reply = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({
                "apiVersion": "kapsel.io/v1alpha1",
                "kind": "Token",
                "metadata": {"name": "bob"},
                "spec": {"user": "bob", "roles": [{"namespace": "dev", "role": "view"}], "secretHash": "sha256:chosen-by-client"},
                "status": {"token": "chosen-by-client"},
            }),
        )
        .await;
    reply.ok(201);
    let secret = reply.body["status"]["token"].as_str().expect("status.token in the create response").to_string();
    assert!(secret.starts_with("kpl_") && secret.len() > 40, "{secret}");
    assert_ne!(secret, "chosen-by-client");
    let hash = reply.body["spec"]["secretHash"].as_str().expect("spec.secretHash").to_string();
    assert_eq!(hash, hash_secret(&secret));
    assert!(!reply.text.contains("chosen-by-client"), "{}", reply.text);

    // The stored object keeps only the hash.
    let stored = api.get("/apis/kapsel.io/v1alpha1/tokens/bob").await;
    stored.ok(200);
    assert_eq!(stored.body["spec"]["secretHash"], hash.as_str());
    assert!(stored.body.pointer("/status/token").is_none(), "the secret was stored: {}", stored.text);
    assert!(!stored.text.contains(&secret));
    let listed = api.get("/apis/kapsel.io/v1alpha1/tokens").await;
    assert_eq!(listed.body["kind"], "TokenList");
    assert_eq!(listed.names(), ["admin", "alice", "bob"]);
    assert!(!listed.text.contains(&secret));

    // The secret authenticates on the next request, with bob's roles.
    let reply = api.json_as(&secret, Method::GET, &pods("dev"), None).await;
    reply.ok(200);
    api.json_as(&secret, Method::POST, &pods("dev"), Some(pod("x"))).await.failure(403, "Forbidden").mentions(&["bob", "create", "view"]);
    api.json_as(&secret, Method::GET, &pods("qa"), None).await.failure(403, "Forbidden");

    // The hash cannot be changed afterwards.
    let mut rehashed = stored.body.clone();
    rehashed["spec"]["secretHash"] = json!(hash_secret("something-else"));
    let reply = api.put("/apis/kapsel.io/v1alpha1/tokens/bob", rehashed).await;
    reply.failure(422, "Invalid").about("bob", "Token", "kapsel.io");
    assert_eq!(reply.cause_fields(), vec!["spec.secretHash"]);

    // Deleting the Token revokes it.
    let reply = api.delete("/apis/kapsel.io/v1alpha1/tokens/bob").await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["name"], "bob");
    assert!(reply.body.pointer("/status/token").is_none());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = api.json_as(&secret, Method::GET, &pods("dev"), None).await;
        if reply.status.as_u16() == 401 {
            reply.failure(401, "Unauthorized");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the deleted token still authenticates: {} {}", reply.status, reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Other tokens are unaffected.
    api.json_as(ALICE, Method::GET, &pods("dev"), None).await.ok(200);
    api.get(&pods("dev")).await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_validated() {
    let api = Api::start().await;
    let reply = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({"metadata": {"name": "t"}, "spec": {"user": " ", "roles": [{"namespace": "Not_OK", "role": "view"}]}}),
        )
        .await;
    reply.failure(422, "Invalid").about("t", "Token", "kapsel.io");
    let fields: BTreeSet<String> = reply.cause_fields().into_iter().collect();
    assert_eq!(fields, BTreeSet::from(["spec.user".to_string(), "spec.roles[0].namespace".to_string()]));
    let reply = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({"metadata": {"name": "t"}, "spec": {"user": "u", "roles": [{"namespace": "dev", "role": "god"}]}}),
        )
        .await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_fields().len(), 1);
    assert!(reply.cause_fields()[0].starts_with("spec.roles[0]"), "{:?}", reply.cause_fields());
    // Tokens are cluster-scoped: there is no namespaced URL for them.
    api.post("/apis/kapsel.io/v1alpha1/namespaces/dev/tokens", json!({"metadata": {"name": "t"}, "spec": {"user": "u"}}))
        .await
        .failure(404, "NotFound");
}

// ---------------------------------------------------------------------------
// Discovery and OpenAPI
// ---------------------------------------------------------------------------

fn resource<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no resource {name} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery() {
    let api = Api::start().await;

    let reply = api.get("/api").await;
    reply.ok(200);
    assert_eq!(reply.body["kind"], "APIVersions");
    assert_eq!(reply.body["versions"], json!(["v1"]));
    assert_eq!(reply.body["serverAddressByClientCIDRs"][0]["serverAddress"], "127.0.0.1:6443");

    let core = api.get("/api/v1").await;
    core.ok(200);
    assert_eq!(core.body["kind"], "APIResourceList");
    assert_eq!(core.body["groupVersion"], "v1");
    let pods = resource(&core.body, "pods");
    assert_eq!(pods["kind"], "Pod");
    assert_eq!(pods["namespaced"], true);
    assert_eq!(pods["singularName"], "pod");
    assert_eq!(pods["shortNames"], json!(["po"]));
    let verbs: BTreeSet<&str> = pods["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(verbs, BTreeSet::from(["create", "delete", "get", "list", "patch", "update", "watch"]));
    let status = resource(&core.body, "pods/status");
    assert_eq!(status["kind"], "Pod");
    let verbs: BTreeSet<&str> = status["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(verbs, BTreeSet::from(["get", "patch", "update"]));
    let namespaces = resource(&core.body, "namespaces");
    assert_eq!(namespaces["namespaced"], false);
    assert_eq!(namespaces["shortNames"], json!(["ns"]));
    assert_eq!(resource(&core.body, "resourcequotas")["shortNames"], json!(["quota"]));
    assert!(core.body["resources"].as_array().unwrap().iter().all(|r| r["name"] != "tokens"), "tokens are not core");

    let groups = api.get("/apis").await;
    groups.ok(200);
    assert_eq!(groups.body["kind"], "APIGroupList");
    let kapsel = groups.body["groups"].as_array().unwrap().iter().find(|g| g["name"] == "kapsel.io").expect("the kapsel.io group");
    assert_eq!(kapsel["versions"][0]["groupVersion"], "kapsel.io/v1alpha1");
    assert_eq!(kapsel["preferredVersion"]["version"], "v1alpha1");

    let group = api.get("/apis/kapsel.io").await;
    group.ok(200);
    assert_eq!(group.body["kind"], "APIGroup");
    assert_eq!(group.body["name"], "kapsel.io");
    assert_eq!(group.body["preferredVersion"]["groupVersion"], "kapsel.io/v1alpha1");

    let resources = api.get("/apis/kapsel.io/v1alpha1").await;
    resources.ok(200);
    assert_eq!(resources.body["kind"], "APIResourceList");
    assert_eq!(resources.body["groupVersion"], "kapsel.io/v1alpha1");
    let tokens = resource(&resources.body, "tokens");
    assert_eq!(tokens["kind"], "Token");
    assert_eq!(tokens["namespaced"], false);

    let version = api.get("/version").await;
    version.ok(200);
    assert_eq!(version.body["major"], "1");
    assert!(version.body["minor"].as_str().is_some_and(|m| m.parse::<u32>().is_ok()), "{}", version.text);
    let git_version = version.body["gitVersion"].as_str().unwrap();
    assert!(git_version.starts_with(&format!("v1.{}.", version.body["minor"].as_str().unwrap())), "{git_version}");
    assert!(version.body["platform"].as_str().is_some_and(|p| p.contains('/')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_declares_field_validation() {
    let api = Api::start().await;
    let index = api.get("/openapi/v3").await;
    index.ok(200);
    let paths = index.body["paths"].as_object().expect("paths");
    for key in ["api/v1", "apis/kapsel.io/v1alpha1"] {
        let url = paths[key]["serverRelativeURL"].as_str().unwrap_or_else(|| panic!("no {key} in {}", index.text));
        assert!(url.starts_with(&format!("/openapi/v3/{key}")), "{url}");
        // The URL as given (with its hash) serves the document.
        api.get(url).await.ok(200);
    }

    let has_field_validation = |operation: &Value| {
        operation["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"))
    };
    let core = api.get("/openapi/v3/api/v1").await;
    core.ok(200);
    assert!(core.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let collection = &core.body["paths"]["/api/v1/namespaces/{namespace}/pods"];
    assert!(has_field_validation(&collection["post"]), "{collection}");
    let object = &core.body["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
    assert!(has_field_validation(&object["put"]), "{object}");
    assert!(has_field_validation(&object["patch"]), "{object}");
    assert_eq!(object["get"]["x-kubernetes-group-version-kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
    assert!(core.body["paths"].get("/api/v1/namespaces").is_some());

    let kapsel = api.get("/openapi/v3/apis/kapsel.io/v1alpha1").await;
    kapsel.ok(200);
    assert!(has_field_validation(&kapsel.body["paths"]["/apis/kapsel.io/v1alpha1/tokens"]["post"]), "{}", kapsel.text);

    api.get("/openapi/v3/apis/nope.io/v1").await.failure(404, "NotFound");
    let v2 = api.get("/openapi/v2").await;
    v2.ok(200);
    assert!(v2.body["paths"].get("/api/v1/namespaces/{namespace}/pods").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_not_found() {
    let api = Api::start().await;
    for path in [
        "/nope",
        "/api/v2",
        "/api/v1/widgets",
        "/api/v1/namespaces/dev/widgets",
        "/api/v1/namespaces/dev/pods/web/exec",
        "/api/v1/namespaces/dev/namespaces",
        "/apis/nope.io",
        "/apis/nope.io/v1",
        "/apis/kapsel.io/v9/tokens",
    ] {
        let reply = api.get(path).await;
        reply.failure(404, "NotFound");
        assert!(!reply.message().is_empty(), "{path}: {}", reply.text);
    }
    // A verb the URL does not allow.
    api.post(&pod_path("dev", "web"), pod("web")).await.failure(405, "MethodNotAllowed");
    api.json_as(ADMIN, Method::DELETE, &pods("dev"), None).await.failure(405, "MethodNotAllowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_when_the_server_stops() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    let mut watch = api.watch(&format!("{}?watch=true", pods("dev"))).await;
    watch.expect("ADDED", "a").await;
    watch.assert_quiet().await;
    api.stop.send(true).expect("the server listens for the stop");
    match watch.poll(Duration::from_secs(5)).await {
        Next::End => {}
        other => panic!("expected the watch to end on shutdown, got {other:?}"),
    }
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

/// client-go's watch-list (kubectl's `delete --wait`, `wait`) needs the bookmark that ends the initial events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_list_ends_its_initial_events_with_a_bookmark() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    let list_rv = api.get(&pods("dev")).await.rv();
    let path = format!("{}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan", pods("dev"));
    let mut watch = api.watch(&path).await;
    assert_eq!(summary(&watch.next().await), ("ADDED".to_string(), "dev/a".to_string()));
    let bookmark = watch.next().await;
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    assert_eq!(bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], list_rv.as_str());
    api.create_pod("dev", pod("b")).await;
    assert_eq!(summary(&watch.next().await), ("ADDED".to_string(), "dev/b".to_string()));
}

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
    std::fs::read(format!("{}/hostile_network.wasm", kapsel_plugins::defaults::TEST_GUESTS_DIR)).expect("the hostile network guest")
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

const CLUSTER_POLICIES: &str = "/apis/kapsel.io/v1alpha1/clusteradmissionpolicies";

/// Gatekeeper's shape (Rego v0): the labels of `input.parameters.labels` are required.
const REQUIRED_LABELS_V0: &str = r#"package kapsel.requiredlabels

violation[{"msg": msg, "details": {"missing_labels": missing}}] {
  provided := {label | input.review.object.metadata.labels[label]}
  required := {label | label := input.parameters.labels[_]}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("you must provide labels: %v", [missing])
}
"#;

fn required_labels(name: &str, enforcement: &str) -> Value {
    json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "ClusterAdmissionPolicy", "metadata": {"name": name},
        "spec": {"rego": REQUIRED_LABELS_V0, "regoVersion": "v0", "enforcement": enforcement,
                 "parameters": {"labels": ["cost-center"]}, "match": {"kinds": ["Pod"], "operations": ["CREATE", "UPDATE"]}}})
}

/// A policy takes effect on the next request, denies with every violated
/// policy's message, and can be changed to warn or removed without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_policies_decide_the_next_request() {
    let api = Api::start().await;
    let created = api.post(CLUSTER_POLICIES, required_labels("require-cost-center", "deny")).await;
    created.ok(201);
    assert_eq!(created.body["status"]["loaded"], true);

    let denied = api.post(&pods("dev"), pod("web")).await;
    denied.failure(403, "Forbidden");
    assert_eq!(denied.message(), r#"admission policy "require-cost-center" denied the request: you must provide labels: {"cost-center"}"#);
    // Tenants are judged alike; a dry run is judged and stores nothing.
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("web"))).await.failure(403, "Forbidden");
    let labelled = labelled_pod("web", json!({"cost-center": "42"}));
    api.post(&format!("{}?dryRun=All", pods("dev")), labelled.clone()).await.ok(201);
    api.get(&pod_path("dev", "web")).await.failure(404, "NotFound");
    api.post(&pods("dev"), labelled).await.ok(201);
    // Updates are reviewed too: removing the label is refused.
    api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"metadata": {"labels": {"cost-center": null}}})).await.failure(403, "Forbidden");

    // Two violated policies: both are named.
    let mut second = required_labels("require-owner", "deny");
    second["spec"]["parameters"]["labels"] = json!(["owner"]);
    api.post(CLUSTER_POLICIES, second).await.ok(201);
    let both = api.post(&pods("dev"), pod("db")).await;
    both.failure(403, "Forbidden").mentions(&["require-cost-center", "require-owner", r#"{"owner"}"#]);

    // Warn: admitted, with the message as a Warning header.
    api.delete(&format!("{CLUSTER_POLICIES}/require-owner")).await.ok(200);
    api.patch(&format!("{CLUSTER_POLICIES}/require-cost-center"), MERGE_PATCH, json!({"spec": {"enforcement": "warn"}})).await.ok(200);
    let warned = api.post(&pods("dev"), pod("db")).await;
    warned.ok(201);
    let warning = warned.headers.get("warning").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(warning.contains("require-cost-center") && warning.contains("you must provide labels"), "{warning:?}");

    // Audit: admitted silently. Deleted: no longer consulted.
    api.patch(&format!("{CLUSTER_POLICIES}/require-cost-center"), MERGE_PATCH, json!({"spec": {"enforcement": "audit"}})).await.ok(200);
    let audited = api.post(&pods("dev"), pod("cache")).await;
    audited.ok(201);
    assert!(audited.headers.get("warning").is_none());
    api.patch(&format!("{CLUSTER_POLICIES}/require-cost-center"), MERGE_PATCH, json!({"spec": {"enforcement": "deny"}})).await.ok(200);
    api.post(&pods("dev"), pod("queue")).await.failure(403, "Forbidden");
    api.delete(&format!("{CLUSTER_POLICIES}/require-cost-center")).await.ok(200);
    api.post(&pods("dev"), pod("queue")).await.ok(201);
}

/// Rego that does not compile is refused with the line and column; the version in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rego_is_refused_and_the_previous_version_stays() {
    let api = Api::start().await;
    api.post(CLUSTER_POLICIES, required_labels("labels", "deny")).await.ok(201);
    let broken = "package broken\n\ndeny contains msg if {\n  msg := \n}\n";
    let mut bad = required_labels("broken", "deny");
    bad["spec"]["rego"] = json!(broken);
    bad["spec"]["regoVersion"] = json!("v1");
    let refused = api.post(CLUSTER_POLICIES, bad).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.rego"]);
    assert!(refused.message().contains(":4:") || refused.message().contains(":5:"), "{}", refused.text);
    // v0 text declared as v1 does not parse either.
    api.patch(&format!("{CLUSTER_POLICIES}/labels"), MERGE_PATCH, json!({"spec": {"regoVersion": "v1"}})).await.failure(422, "Invalid");
    api.post(&pods("dev"), pod("web")).await.failure(403, "Forbidden");
    // Tenants read cluster policies but may not write them.
    api.json_as(ALICE, Method::GET, &format!("{CLUSTER_POLICIES}/labels"), None).await.ok(200);
    api.json_as(ALICE, Method::DELETE, &format!("{CLUSTER_POLICIES}/labels"), None).await.failure(403, "Forbidden");
}

/// A namespace owner's own policy applies in that namespace only; editors cannot change it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_policies_are_the_owners_and_stay_in_their_namespace() {
    let api = Api::start().await;
    let policy = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": "no-latest"},
        "spec": {"rego": "package nolatest\ndeny contains sprintf(\"%s: no latest tags here\", [c.name]) if {\n  some c in input.review.object.spec.containers\n  endswith(c.image, \":latest\")\n}\n",
                 "match": {"kinds": ["Pod"], "namespaces": ["qa", "prod"]}}});
    let path = "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies";
    // alice edits dev: she may read the namespace's policies, not write them.
    api.json_as(ALICE, Method::POST, path, Some(policy.clone())).await.failure(403, "Forbidden");
    api.post(path, policy).await.ok(201);
    api.json_as(ALICE, Method::GET, path, None).await.ok(200);
    let latest = |name: &str| {
        let mut pod = pod(name);
        pod["spec"]["containers"][0]["image"] = json!("app:latest");
        pod
    };
    let denied = api.post(&pods("dev"), latest("web")).await;
    denied.failure(403, "Forbidden");
    assert_eq!(denied.message(), r#"admission policy "no-latest" of namespace "dev" denied the request: app: no latest tags here"#);
    // Its match names other namespaces, but a namespace's policy never leaves it.
    api.post(&pods("prod"), latest("web")).await.ok(201);
}

/// A policy is tried against an object, stored or inline, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reviews_evaluate_one_policy_against_an_object() {
    let api = Api::start().await;
    api.post(CLUSTER_POLICIES, required_labels("labels", "deny")).await.ok(201);
    let reviews = "/apis/kapsel.io/v1alpha1/policyreviews";
    let by_ref = |object: Value| json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policyRef": {"name": "labels"}, "object": object}});
    // Tenants may test the policies they can read.
    let refused = api.json_as(ALICE, Method::POST, reviews, Some(by_ref(pod("web")))).await;
    refused.ok(201);
    assert_eq!(refused.body["status"]["allowed"], false, "{}", refused.text);
    assert_eq!(refused.body["status"]["violations"][0]["msg"], r#"you must provide labels: {"cost-center"}"#);
    assert_eq!(refused.body["status"]["violations"][0]["details"], json!({"missing_labels": ["cost-center"]}));
    let admitted = api.post(reviews, by_ref(labelled_pod("web", json!({"cost-center": "1"})))).await;
    admitted.ok(201);
    assert_eq!(admitted.body["status"]["allowed"], true);
    assert_eq!(admitted.body["status"]["violations"], json!([]));

    // Inline, whatever the object's kind (its match is not consulted), before it is saved.
    let mut inline = required_labels("draft", "warn");
    inline["spec"]["match"] = json!({"kinds": ["Node"]});
    let review = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": inline, "object": pod("web")}});
    let warned = api.post(reviews, review).await;
    warned.ok(201);
    assert_eq!(warned.body["status"]["allowed"], true, "warn admits");
    assert_eq!(warned.body["status"]["violations"].as_array().unwrap().len(), 1);
    api.get(&format!("{CLUSTER_POLICIES}/draft")).await.failure(404, "NotFound");
    // Only who could apply a policy may try one inline (evaluating Rego costs the server).
    let tenant_try = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": required_labels("x", "deny"), "object": pod("web")}});
    api.json_as(ALICE, Method::POST, reviews, Some(tenant_try)).await.failure(403, "Forbidden");

    // Broken inline Rego: 422 naming the field; a missing object too.
    let mut broken = required_labels("draft", "deny");
    broken["spec"]["rego"] = json!("package x\ndeny contains m if {\n  m := \n}");
    broken["spec"]["regoVersion"] = json!("v1");
    let bad = api
        .post(
            reviews,
            json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": broken, "object": pod("web")}}),
        )
        .await;
    bad.failure(422, "Invalid");
    assert_eq!(bad.cause_fields(), ["spec.policy.spec.rego"]);
    let no_object = api
        .post(reviews, json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policyRef": {"name": "labels"}}}))
        .await;
    no_object.failure(422, "Invalid");
    assert_eq!(no_object.cause_fields(), ["spec.object"]);
    let unknown =
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policyRef": {"name": "nope"}, "object": pod("x")}});
    api.post(reviews, unknown).await.failure(404, "NotFound");
}

/// The path of a cluster policy's on-demand audit.
fn audit_path(name: &str) -> String {
    format!("{CLUSTER_POLICIES}/{name}/audit")
}

/// An on-demand audit finds the existing objects that violate a policy,
/// whatever its enforcement, and records the count and the first twenty in
/// its status, beside what admission wrote there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_finds_existing_violations_and_records_them_in_the_status() {
    let api = Api::start().await;
    api.create_pod("dev", pod("web")).await;
    api.create_pod("dev", pod("db")).await;
    api.create_pod("dev", labelled_pod("ok", json!({"cost-center": "7"}))).await;
    api.create_pod("qa", pod("cache")).await;
    // Written after the pods, and for creates only: an audit reviews them anyway.
    api.post(CLUSTER_POLICIES, required_labels("labels", "deny")).await.ok(201);

    let audited = api.post(&audit_path("labels"), json!({})).await;
    audited.ok(200);
    let status = &audited.body["status"];
    assert_eq!(status["loaded"], true, "admission's fields stay: {}", audited.text);
    let audit = &status["audit"];
    assert_eq!((audit["totalViolations"].as_u64(), audit["objectsReviewed"].as_u64()), (Some(3), Some(4)), "{audit}");
    assert!(audit.get("error").is_none(), "{audit}");
    let last_run = audit["lastRun"].as_str().expect("lastRun");
    assert!(chrono::DateTime::parse_from_rfc3339(last_run).is_ok(), "{last_run}");
    let mut found: Vec<String> = audit["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            assert_eq!((v["kind"].as_str(), v["enforcement"].as_str()), (Some("Pod"), Some("deny")), "{v}");
            assert_eq!(v["message"], r#"you must provide labels: {"cost-center"}"#);
            format!("{}/{}", v["namespace"].as_str().unwrap_or_default(), v["name"].as_str().unwrap_or_default())
        })
        .collect();
    found.sort();
    assert_eq!(found, ["dev/db", "dev/web", "qa/cache"]);
    // Stored, and shown as a column.
    let stored = api.get(&format!("{CLUSTER_POLICIES}/labels")).await;
    assert_eq!(stored.body["status"]["audit"], *audit);
    let table = api.call(Some(ADMIN), Method::GET, CLUSTER_POLICIES, &[("accept", TABLE)], Body::empty()).await;
    table.ok(200);
    let column =
        table.body["columnDefinitions"].as_array().unwrap().iter().position(|c| c["name"] == "Violations").expect("a Violations column");
    assert_eq!(table.body["rows"][0]["cells"][column], "3");

    // Fixed objects drop out; every violation is counted, twenty are listed; enforcement does not matter.
    api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"metadata": {"labels": {"cost-center": "1"}}})).await.ok(200);
    let edited = api.patch(&format!("{CLUSTER_POLICIES}/labels"), MERGE_PATCH, json!({"spec": {"enforcement": "audit"}})).await;
    edited.ok(200);
    assert_eq!(edited.body["status"]["audit"]["totalViolations"], 3, "an edit keeps the last audit: {}", edited.text);
    assert_eq!(edited.body["status"]["loaded"], true);
    for i in 0..20 {
        api.create_pod("prod", pod(&format!("batch-{i}"))).await;
    }
    let audit = api.post(&audit_path("labels"), json!({})).await.body["status"]["audit"].clone();
    assert_eq!(audit["totalViolations"], 22, "{audit}");
    assert_eq!(audit["violations"].as_array().unwrap().len(), 20);
    assert_eq!(audit["violations"][0]["enforcement"], "audit");

    // Auditing takes the right to update the policy.
    api.json_as(ALICE, Method::POST, &audit_path("labels"), Some(json!({}))).await.failure(403, "Forbidden");
    api.post(&audit_path("nope"), json!({})).await.failure(404, "NotFound");
}

/// A namespace's policy audits only its own namespace, for its owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_policy_audits_only_its_namespace() {
    let api = Api::start().await;
    let latest = |name: &str| {
        let mut pod = pod(name);
        pod["spec"]["containers"][0]["image"] = json!("app:latest");
        pod
    };
    api.create_pod("dev", latest("web")).await;
    api.create_pod("dev", pod("pinned")).await;
    api.create_pod("qa", latest("web")).await;
    let policies = "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies";
    let policy = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": "no-latest"},
        "spec": {"rego": "package nolatest\ndeny contains sprintf(\"%s: no latest tags here\", [c.name]) if {\n  some c in input.review.object.spec.containers\n  endswith(c.image, \":latest\")\n}\n",
                 "enforcement": "warn", "match": {"kinds": ["Pod"], "namespaces": ["qa"]}}});
    api.post(policies, policy).await.ok(201);
    let path = format!("{policies}/no-latest/audit");
    // alice edits dev: she may read the policy, not audit it.
    api.json_as(ALICE, Method::POST, &path, Some(json!({}))).await.failure(403, "Forbidden");
    let audited = api.post(&path, json!({})).await;
    audited.ok(200);
    let audit = &audited.body["status"]["audit"];
    assert_eq!((audit["totalViolations"].as_u64(), audit["objectsReviewed"].as_u64()), (Some(1), Some(2)), "{audit}");
    let violation = &audit["violations"][0];
    assert_eq!((violation["namespace"].as_str(), violation["name"].as_str()), (Some("dev"), Some("web")));
    assert_eq!((violation["message"].as_str(), violation["enforcement"].as_str()), (Some("app: no latest tags here"), Some("warn")));
}

/// The periodic audit keeps each policy's status current; requests that an
/// `audit` policy admits in violation leave a Warning Event on the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_audit_keeps_the_status_current_and_audit_violations_are_events() {
    let api = Api::start().await;
    api.post(CLUSTER_POLICIES, required_labels("labels", "audit")).await.ok(201);
    kapsel_server::controllers::audit::start(&api.app, Duration::from_millis(100));
    let policy = format!("{CLUSTER_POLICIES}/labels");
    let violations = |n: u64| move |p: &Value| p["status"]["audit"]["totalViolations"].as_u64() == Some(n);
    eventually(&api, &policy, "the first pass", violations(0)).await;

    let admitted = api.post(&pods("dev"), pod("web")).await;
    admitted.ok(201);
    assert!(admitted.headers.get("warning").is_none());
    // The event is recorded in the pod's namespace: its tenants see it, no other tenant does.
    let event_in = |namespace: &str| format!("/api/v1/namespaces/{namespace}/events/labels.clusteradmissionpolicy.auditviolation");
    let event = eventually(&api, &event_in("dev"), "the event", |_| true).await;
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("AuditViolation")));
    assert_eq!(event["involvedObject"]["kind"], "ClusterAdmissionPolicy");
    assert_eq!(event["message"], r#"CREATE of Pod dev/web admitted in violation: you must provide labels: {"cost-center"}"#);
    let found = eventually(&api, &policy, "a later pass", violations(1)).await;
    assert_eq!(found["status"]["audit"]["violations"][0]["enforcement"], "audit");

    // Another violation in dev: the event counts it, and so does the next pass. A dry run records nothing.
    api.post(&pods("dev"), pod("db")).await.ok(201);
    eventually(&api, &event_in("dev"), "the second event", |e| e["count"] == 2).await;
    eventually(&api, &policy, "the next pass", violations(2)).await;
    api.post(&format!("{}?dryRun=All", pods("dev")), pod("trial")).await.ok(201);
    api.post(&pods("prod"), pod("queue")).await.ok(201);
    eventually(&api, &event_in("prod"), "prod's event", |e| {
        e["count"] == 1 && e["message"].as_str().unwrap_or_default().contains("prod/queue")
    })
    .await;
    assert_eq!(api.get(&event_in("dev")).await.body["count"], 2);
    let found = eventually(&api, &policy, "the pass that finds prod's", violations(3)).await;
    assert_eq!(found["status"]["audit"]["violations"].as_array().map(Vec::len), Some(3));
    // Alice (dev and qa) reads the cluster policy's audit: only her namespaces' violations are listed.
    let seen = api.json_as(ALICE, Method::GET, &policy, None).await;
    seen.ok(200);
    let namespaces: Vec<&str> =
        seen.body["status"]["audit"]["violations"].as_array().unwrap().iter().filter_map(|v| v["namespace"].as_str()).collect();
    assert_eq!(namespaces, ["dev", "dev"], "{}", seen.text);
    let listed = api.json_as(ALICE, Method::GET, CLUSTER_POLICIES, None).await;
    assert_eq!(listed.items()[0]["status"]["audit"]["violations"].as_array().map(Vec::len), Some(2));
    api.json_as(ALICE, Method::GET, &event_in("prod"), None).await.failure(403, "Forbidden");
}

/// LimitRanges fill a new pod's missing requests and limits, then bound them, as Kubernetes' LimitRanger does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_new_pods() {
    let api = Api::start().await;
    let range = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "sizes"},
        "spec": {"limits": [
            {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"},
             "min": {"memory": "16Mi"}, "max": {"cpu": "1", "memory": "1Gi"}, "maxLimitRequestRatio": {"cpu": "10"}},
            {"type": "Pod", "max": {"memory": "1536Mi"}}]}});
    api.post("/api/v1/namespaces/dev/limitranges", range).await.ok(201);

    // Nothing set: limits from `default`, requests from `defaultRequest` or else `default`.
    let mut bare = pod("bare");
    bare["spec"]["containers"][0].as_object_mut().unwrap().remove("resources");
    let created = api.post(&pods("dev"), bare).await;
    created.ok(201);
    let resources = &created.body["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"], json!({"cpu": "500m", "memory": "256Mi"}), "{resources}");
    assert_eq!(resources["requests"], json!({"cpu": "100m", "memory": "256Mi"}), "{resources}");
    assert_eq!(created.body["status"]["qosClass"], "Burstable");

    // What a pod sets itself stays; bounds are checked on the result, every reason listed.
    let sized = |name: &str, requests: Value, limits: Value| {
        let mut pod = pod(name);
        pod["spec"]["containers"][0]["resources"] = json!({"requests": requests, "limits": limits});
        pod
    };
    let too_big = api.post(&pods("dev"), sized("big", json!({"cpu": "100m", "memory": "8Mi"}), json!({"cpu": "2", "memory": "2Gi"}))).await;
    too_big.failure(403, "Forbidden");
    assert_eq!(
        too_big.message(),
        r#"pods "big" is forbidden: [minimum memory usage per Container is 16Mi, but request is 8Mi, maximum cpu usage per Container is 1, but limit is 2, maximum memory usage per Container is 1Gi, but limit is 2Gi, cpu max limit to request ratio per Container is 10, but provided ratio is 20.00, maximum memory usage per Pod is 1536Mi, but limit is 2Gi]"#
    );
    // The pod's sum is bounded too: two containers of 1Gi exceed 1536Mi.
    let mut pair = sized("pair", json!({"memory": "1Gi"}), json!({"memory": "1Gi"}));
    let second = pair["spec"]["containers"][0].clone();
    pair["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": second["image"], "resources": second["resources"]}));
    let refused = api.post(&pods("dev"), pair).await;
    refused.failure(403, "Forbidden");
    assert!(refused.message().contains("maximum memory usage per Pod is 1536Mi, but limit is 2Gi"), "{}", refused.text);
    // Other namespaces are not affected.
    api.post(&pods("qa"), sized("big", json!({"cpu": "100m"}), json!({"cpu": "2"}))).await.ok(201);
}
