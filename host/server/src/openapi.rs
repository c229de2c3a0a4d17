//! OpenAPI documents, as kubectl fetches them: `/openapi/v3` (an index of
//! group-versions) and `/openapi/v3/{api/v1|apis/group/version}`, whose
//! operations declare the `fieldValidation` parameter so that kubectl
//! validates on the server (`fieldValidation=Strict`) instead of
//! downloading schemas; `/openapi/v2` answers with the same paths.

use axum::Json;
use axum::extract::Path;
use kapsel_api::registry::{self, ResourceType};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

fn group_version_key(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

pub async fn v3_index() -> Json<Value> {
    let mut paths = Map::new();
    for (group, version) in registry::groups() {
        let key = group_version_key(group, version);
        paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", env!("CARGO_PKG_VERSION"))}));
    }
    Json(json!({"paths": paths}))
}

pub async fn v3_document(Path(path): Path<String>) -> Result<Json<Value>, ApiError> {
    let (group, version) = registry::groups()
        .into_iter()
        .find(|(g, v)| group_version_key(g, v) == path.trim_matches('/'))
        .ok_or_else(|| ApiError::NoRoute(format!("no OpenAPI document for {path:?}")))?;
    let kinds: Vec<&ResourceType> = registry::ALL.iter().copied().filter(|r| r.group == group && r.version == version).collect();
    Ok(Json(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kapsel", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths(&kinds),
        "components": {"schemas": {}},
    })))
}

pub async fn v2() -> Json<Value> {
    let kinds: Vec<&ResourceType> = registry::ALL.to_vec();
    Json(json!({
        "swagger": "2.0",
        "info": {"title": "Kapsel", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths(&kinds),
        "definitions": {},
    }))
}

fn paths(kinds: &[&ResourceType]) -> Map<String, Value> {
    let mut paths = Map::new();
    for resource in kinds {
        let gvk = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
        let operation = |action: &str, with_validation: bool| {
            let mut parameters = vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}})];
            if with_validation {
                parameters.push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}));
            }
            json!({
                "operationId": format!("{action}{}", resource.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let collection = resource.collection_path(resource.namespaced().then_some("{namespace}"));
        paths.insert(collection.clone(), json!({"get": operation("list", false), "post": operation("post", true)}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": operation("get", false), "put": operation("put", true), "patch": operation("patch", true), "delete": operation("delete", false)}),
        );
    }
    paths
}
