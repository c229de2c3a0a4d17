//! What a client finds before its first object, in-process: health checks
//! without a token, API discovery (`/api`, `/apis`, resource lists with
//! verbs and short names, `/version`), the OpenAPI documents (declaring
//! `fieldValidation`), and 404/405 `Status`es for unknown paths and verbs.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use common::*;
use http::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_need_no_token() {
    let api = Api::start().await;
    for path in ["/healthz", "/readyz", "/livez"] {
        let reply = api.call(None, Method::GET, path, &[], Body::empty()).await;
        reply.ok(200);
        assert_eq!(reply.text, "ok", "{path}");
    }
}

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
