//! OpenAPI documents, as kubectl fetches them: `/openapi/v3` (an index of
//! group-versions) and `/openapi/v3/{api/v1|apis/group/version}`, whose
//! operations declare the `fieldValidation` parameter so that kubectl
//! validates on the server (`fieldValidation=Strict`) instead of
//! downloading schemas; `/openapi/v2` answers with the same paths in
//! Swagger 2.0's form. Every operation declares its path parameters
//! (`namespace`, `name`) and, for writes, an object body, so generic
//! OpenAPI tools (schemathesis, client generators) can call it as served.

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
        "paths": paths(&kinds, Dialect::OpenApi3),
        "components": {"schemas": {}},
    })))
}

pub async fn v2() -> Json<Value> {
    let kinds: Vec<&ResourceType> = registry::ALL.to_vec();
    Json(json!({
        "swagger": "2.0",
        "info": {"title": "Kapsel", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths(&kinds, Dialect::Swagger2),
        "definitions": {},
    }))
}

/// The two forms the documents are served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Swagger2,
    OpenApi3,
}

impl Dialect {
    /// A string parameter `name` in `location` (`path` parameters are required).
    fn parameter(self, name: &str, location: &str) -> Value {
        let required = location == "path";
        match self {
            Dialect::Swagger2 => json!({"name": name, "in": location, "required": required, "type": "string"}),
            Dialect::OpenApi3 => json!({"name": name, "in": location, "required": required, "schema": {"type": "string"}}),
        }
    }
}

/// The media types a write's body may come in, by verb.
fn body_media_types(action: &str) -> &'static [&'static str] {
    match action {
        "patch" => &["application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json"],
        _ => &["application/json", "application/yaml"],
    }
}

fn paths(kinds: &[&ResourceType], dialect: Dialect) -> Map<String, Value> {
    let mut paths = Map::new();
    for resource in kinds {
        let gvk = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
        let operation = |action: &str, with_validation: bool, with_body: bool| {
            let mut parameters = vec![dialect.parameter("dryRun", "query")];
            if with_validation {
                parameters.push(dialect.parameter("fieldValidation", "query"));
            }
            let mut operation = json!({
                "operationId": format!("{action}{}", resource.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            });
            // A JSON patch is a list of operations; everything else is an object.
            let body_type = if action == "patch" { json!({}) } else { json!({"type": "object"}) };
            if with_body {
                match dialect {
                    Dialect::Swagger2 => {
                        parameters.push(json!({"name": "body", "in": "body", "required": true, "schema": body_type}));
                        operation["consumes"] = json!(body_media_types(action));
                    }
                    Dialect::OpenApi3 => {
                        let content: Map<String, Value> =
                            body_media_types(action).iter().map(|media| (media.to_string(), json!({"schema": body_type}))).collect();
                        operation["requestBody"] = json!({"required": true, "content": content});
                    }
                }
            }
            operation["parameters"] = Value::Array(parameters);
            operation
        };
        let namespace = resource.namespaced().then(|| dialect.parameter("namespace", "path"));
        let collection = resource.collection_path(resource.namespaced().then_some("{namespace}"));
        let mut item = json!({"get": operation("list", false, false), "post": operation("post", true, true)});
        item["parameters"] = Value::Array(namespace.iter().cloned().collect());
        paths.insert(collection.clone(), item);
        let mut item = json!({
            "get": operation("get", false, false),
            "put": operation("put", true, true),
            "patch": operation("patch", true, true),
            "delete": operation("delete", false, false),
        });
        item["parameters"] = Value::Array(namespace.into_iter().chain([dialect.parameter("name", "path")]).collect());
        paths.insert(format!("{collection}/{{name}}"), item);
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_path_parameters_in_both_dialects() {
        for dialect in [Dialect::Swagger2, Dialect::OpenApi3] {
            let paths = paths(registry::ALL, dialect);
            for (path, item) in &paths {
                let declared: Vec<&str> = item["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
                for placeholder in ["namespace", "name"] {
                    assert_eq!(path.contains(&format!("{{{placeholder}}}")), declared.contains(&placeholder), "{dialect:?} {path}");
                }
                let post = &item["post"];
                if !post.is_null() {
                    match dialect {
                        Dialect::Swagger2 => assert!(post["parameters"].as_array().unwrap().iter().any(|p| p["in"] == "body")),
                        Dialect::OpenApi3 => assert!(post["requestBody"]["content"]["application/json"].is_object()),
                    }
                }
            }
            let query = &paths["/api/v1/namespaces/{namespace}/pods"]["get"]["parameters"][0];
            assert_eq!(query["schema"].is_object(), dialect == Dialect::OpenApi3, "{dialect:?}: {query}");
        }
    }
}
