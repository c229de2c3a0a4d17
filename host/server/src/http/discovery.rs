//! Discovery, so that kubectl and client libraries find the resources:
//! `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`
//! and `/version`, all generated from the kind registry.

use axum::Json;
use axum::extract::{Path, State};
use kapsel_api::registry::{self, ResourceType};
use serde_json::{Value, json};

use crate::App;
use crate::error::ApiError;

/// The Kubernetes minor version whose API Kapsel's core kinds follow.
pub const KUBERNETES_COMPATIBLE: (&str, &str) = ("1", "37");

const OBJECT_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

fn resource_entries(resource: &ResourceType) -> Vec<Value> {
    let mut entries = vec![json!({
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced(),
        "kind": resource.kind,
        "verbs": OBJECT_VERBS,
        "shortNames": resource.short_names,
        "categories": if resource.kind == "Pod" { vec!["all"] } else { Vec::new() },
    })];
    if resource.status_subresource {
        entries.push(json!({
            "name": format!("{}/status", resource.plural),
            "singularName": "",
            "namespaced": resource.namespaced(),
            "kind": resource.kind,
            "verbs": STATUS_VERBS,
        }));
    }
    entries
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&ResourceType> = registry::ALL.iter().copied().filter(|r| r.group == group && r.version == version).collect();
    if kinds.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": kinds.into_iter().flat_map(resource_entries).collect::<Vec<_>>(),
    }))
}

fn api_group(group: &str, version: &str) -> Value {
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [group_version.clone()], "preferredVersion": group_version})
}

pub async fn core_versions(State(app): State<App>) -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": app.info.advertise_address}],
    }))
}

pub async fn core_resources() -> Result<Json<Value>, ApiError> {
    resource_list("", "v1").map(Json).ok_or_else(|| ApiError::NoRoute("no core resources".into()))
}

pub async fn groups() -> Json<Value> {
    let groups: Vec<Value> = registry::groups().into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, v)| api_group(g, v)).collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

pub async fn group(Path(group): Path<String>) -> Result<Json<Value>, ApiError> {
    let (name, version) = registry::groups()
        .into_iter()
        .find(|(g, _)| !g.is_empty() && *g == group)
        .ok_or_else(|| ApiError::NoRoute(format!("the server could not find the requested resource (API group {group:?})")))?;
    let mut body = api_group(name, version);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(Json(body))
}

pub async fn group_resources(Path((group, version)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    resource_list(&group, &version)
        .map(Json)
        .ok_or_else(|| ApiError::NoRoute(format!("the server could not find the requested resource ({group}/{version})")))
}

pub async fn version() -> Json<Value> {
    let (major, minor) = KUBERNETES_COMPATIBLE;
    Json(json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0-kapsel.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}
