//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and
//! Kubernetes strategic merge patch, which kubectl and client libraries
//! send for core kinds. The strategic variant is a merge patch that merges
//! lists of objects by their key (containers by `name`, …) and honours the
//! `$patch`, `$retainKeys`, `$setElementOrder/…` and
//! `$deleteFromPrimitiveList/…` directives.

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Merge,
    StrategicMerge,
    Json,
}

impl Kind {
    pub fn from_media_type(media: &str) -> Result<Kind, ApiError> {
        match media {
            "application/merge-patch+json" => Ok(Kind::Merge),
            "application/strategic-merge-patch+json" => Ok(Kind::StrategicMerge),
            "application/json-patch+json" => Ok(Kind::Json),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ))),
        }
    }
}

/// Applies `patch` of `kind` to `current`.
pub fn apply(kind: Kind, current: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut document = current.clone();
    match kind {
        Kind::Merge => json_patch::merge(&mut document, patch),
        Kind::StrategicMerge => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest("a strategic merge patch must be an object".into()));
            }
            strategic_merge(&mut document, patch);
        }
        Kind::Json => {
            let operations: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut document, &operations)
                .map_err(|e| ApiError::PatchNotApplicable(format!("the JSON patch could not be applied: {e}")))?;
        }
    }
    Ok(document)
}

/// The key lists of objects are merged by, by field name (from the core v1 types).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "hostAliases" => "ip",
        "readinessGates" => "conditionType",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" => "type",
        "taints" => "key",
        _ => return None,
    })
}

fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let object = target.as_object_mut().expect("object");
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        object.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key == "$retainKeys" || key == "$patch" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (object.get_mut(field), value.as_array()) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        match value {
            Value::Null => {
                object.remove(key);
            }
            Value::Array(items) => match (merge_key(key), object.get_mut(key)) {
                (Some(merge_key), Some(Value::Array(existing))) if items.iter().all(Value::is_object) => {
                    merge_list(existing, items, merge_key);
                    if let Some(order) = patch.get(&format!("$setElementOrder/{key}")).and_then(Value::as_array) {
                        reorder(existing, order, merge_key);
                    }
                }
                _ => {
                    let cleaned: Vec<Value> = items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
                    object.insert(key.clone(), Value::Array(cleaned));
                }
            },
            Value::Object(_) => strategic_merge(object.entry(key.clone()).or_insert(Value::Null), value),
            other => {
                object.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, patch_items: &[Value], key: &str) {
    for item in patch_items {
        let id = item.get(key);
        let position = existing.iter().position(|e| id.is_some() && e.get(key) == id);
        match (item.get("$patch").and_then(Value::as_str), position) {
            (Some("delete"), Some(i)) => {
                existing.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge(&mut existing[i], item),
            (_, None) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

fn reorder(existing: &mut [Value], order: &[Value], key: &str) {
    let rank = |v: &Value| order.iter().position(|o| o.get(key).is_some() && o.get(key) == v.get(key)).unwrap_or(usize::MAX);
    existing.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [
            {"name": "web", "image": "web:1", "args": ["x"]},
            {"name": "log", "image": "log:1"}
        ]}});
        let patch = json!({"metadata": {"labels": {"b": null, "c": "3"}}, "spec": {
            "$setElementOrder/containers": [{"name": "log"}, {"name": "web"}],
            "containers": [{"name": "web", "image": "web:2"}]
        }});
        let out = apply(Kind::StrategicMerge, &pod, &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "log", "image": "log:1"}, {"name": "web", "image": "web:2", "args": ["x"]}]));
        let delete = json!({"spec": {"containers": [{"name": "log", "$patch": "delete"}]}});
        let out = apply(Kind::StrategicMerge, &out, &delete).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn merge_and_json_patches() {
        let doc = json!({"a": {"b": 1, "c": [1, 2]}});
        assert_eq!(apply(Kind::Merge, &doc, &json!({"a": {"c": [3]}})).unwrap(), json!({"a": {"b": 1, "c": [3]}}));
        let ops = json!([{"op": "replace", "path": "/a/b", "value": 5}]);
        assert_eq!(apply(Kind::Json, &doc, &ops).unwrap()["a"]["b"], 5);
        assert!(apply(Kind::Json, &doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(Kind::from_media_type("application/apply-patch+yaml").is_err());
    }
}
