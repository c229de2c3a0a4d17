//! Server-side printing: a `meta.k8s.io/v1` `Table` of objects, as
//! kubectl asks for with `Accept: application/json;as=Table;…`. Columns come
//! from the kind's registration: Name, the kind's columns, Age, then the
//! `-o wide` columns (priority 1), in the order Kubernetes prints them.

use axum::http::HeaderMap;
use kapsel_api::ResourceType;
use kapsel_api::object;
use serde_json::{Value, json};

/// Whether the client asked for a `Table` rendering.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("as=Table"))
}

/// The column definitions of `resource`.
pub fn columns(resource: &ResourceType) -> Vec<Value> {
    let column = |name: &str, wide: bool| json!({"name": name, "type": "string", "format": "", "description": name, "priority": if wide { 1 } else { 0 }});
    let mut columns = vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0})];
    columns.extend(resource.columns.iter().filter(|c| !c.wide).map(|c| column(c.name, false)));
    columns.push(json!({"name": "Age", "type": "string", "format": "", "description": "Time since the object was created", "priority": 0}));
    columns.extend(resource.columns.iter().filter(|c| c.wide).map(|c| column(c.name, true)));
    columns
}

/// A row per object; `include_object` is the `includeObject` parameter
/// (`None`, `Metadata` (the default) or `Object`).
pub fn rows(resource: &ResourceType, objects: &[Value], include_object: Option<&str>) -> Vec<Value> {
    let now = chrono::Utc::now();
    objects
        .iter()
        .map(|o| {
            let mut cells = vec![Value::String(object::name(o).unwrap_or_default().to_string())];
            cells.extend(resource.columns.iter().filter(|c| !c.wide).map(|c| Value::String((c.value)(o))));
            cells.push(Value::String(object::age(o, now)));
            cells.extend(resource.columns.iter().filter(|c| c.wide).map(|c| Value::String((c.value)(o))));
            let embedded = match include_object {
                Some("None") => Value::Null,
                Some("Object") => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(Value::Null)}),
            };
            json!({"cells": cells, "object": embedded})
        })
        .collect()
}

/// A whole `Table`.
pub fn table(resource: &ResourceType, objects: &[Value], revision: Option<i64>, include_object: Option<&str>, with_columns: bool) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(revision) = revision {
        metadata.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": if with_columns { columns(resource) } else { Vec::new() },
        "rows": rows(resource, objects, include_object),
    })
}
