//! Unknown-field detection, for the API's `fieldValidation` parameter
//! (`Strict` refuses, `Warn` warns, `Ignore` does neither). A field is
//! unknown when it does not survive a round trip through the kind's typed
//! shape: the typed decoders skip what they do not know.

use serde_json::Value;

use crate::ResourceType;

/// Paths (`spec.containers[0].imagePullPolicyy`) of the fields of `object`
/// that `resource` does not know; empty when the kind has no typed shape.
pub fn unknown_fields(resource: &ResourceType, object: &Value) -> Vec<String> {
    let Some(roundtrip) = resource.typed_roundtrip else {
        return Vec::new();
    };
    let Some(known) = roundtrip(object) else {
        // Not decodable at all: validation reports why.
        return Vec::new();
    };
    let mut unknown = Vec::new();
    walk(object, &known, String::new(), &mut unknown);
    unknown
}

fn walk(original: &Value, known: &Value, path: String, unknown: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(fields), Value::Object(kept)) => {
            for (key, value) in fields {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match kept.get(key) {
                    Some(k) => walk(value, k, child, unknown),
                    // Null and empty values drop out of the round trip without being unknown.
                    None if is_empty(value) => {}
                    None => unknown.push(child),
                }
            }
        }
        (Value::Array(items), Value::Array(kept)) => {
            for (i, (item, k)) in items.iter().zip(kept).enumerate() {
                walk(item, k, format!("{path}[{i}]"), unknown);
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
    }
}
