//! Unknown-field detection, for the API's `fieldValidation` parameter
//! (`Strict` refuses, `Warn` warns, `Ignore` does neither). A field is
//! unknown when it does not survive a round trip through the kind's typed
//! shape: the typed decoders skip what they do not know.

use serde_json::Value;

use crate::ResourceType;

/// Paths (`spec.containers[0].imagePullPolicyy`) of the fields of `object`
/// that `resource` does not know; empty when the kind has no typed shape.
pub fn unknown_fields(resource: &ResourceType, object: &Value) -> Vec<String> {
    prune_unknown_fields(resource, &mut object.clone())
}

/// Removes the fields of `object` that `resource` does not know, as the
/// Kubernetes API server drops them, and returns their paths.
pub fn prune_unknown_fields(resource: &ResourceType, object: &mut Value) -> Vec<String> {
    let Some(roundtrip) = resource.typed_roundtrip else {
        return Vec::new();
    };
    let Some(known) = roundtrip(object) else {
        // Not decodable at all: validation reports why.
        return Vec::new();
    };
    let mut unknown = Vec::new();
    prune(object, &known, String::new(), &mut unknown);
    unknown
}

fn prune(original: &mut Value, known: &Value, path: String, unknown: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(fields), Value::Object(kept)) => {
            fields.retain(|key, value| {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match kept.get(key) {
                    Some(k) => {
                        prune(value, k, child, unknown);
                        true
                    }
                    // Null and empty values drop out of the round trip without being unknown.
                    None if is_empty(value) => true,
                    None => {
                        unknown.push(child);
                        false
                    }
                }
            });
        }
        (Value::Array(items), Value::Array(kept)) => {
            for (i, (item, k)) in items.iter_mut().zip(kept).enumerate() {
                prune(item, k, format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{pod::POD, token::TOKEN};
    use serde_json::json;

    #[test]
    fn finds_misspelled_fields_by_path() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"any-label": "ok"}, "finalizers": []},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always", "args": []}], "nodeSelectorr": {"a": "b"}},
        });
        assert_eq!(unknown_fields(&POD, &pod), vec!["spec.containers[0].imagePullPolicyy", "spec.nodeSelectorr"]);
        let clean = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}});
        assert!(unknown_fields(&POD, &clean).is_empty());
        assert!(unknown_fields(&TOKEN, &json!({"spec": {"whatever": 1}})).is_empty());
        let mut pruned = pod.clone();
        assert_eq!(prune_unknown_fields(&POD, &mut pruned).len(), 2);
        assert!(pruned["spec"]["containers"][0].get("imagePullPolicyy").is_none());
        assert!(pruned["spec"].get("nodeSelectorr").is_none());
        assert_eq!(pruned["metadata"]["labels"]["any-label"], "ok");
    }
}
