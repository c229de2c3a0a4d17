//! Helpers over objects held as JSON: reading and setting the metadata
//! fields every kind has, without a typed round trip.

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, if present.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

pub fn name(object: &Value) -> Option<&str> {
    meta_str(object, "name").filter(|n| !n.is_empty())
}

pub fn namespace(object: &Value) -> Option<&str> {
    meta_str(object, "namespace").filter(|n| !n.is_empty())
}

pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata")?.get("labels")?.as_object()
}

/// `metadata`, created as an empty object when missing or not an object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let root = object.as_object_mut().expect("object");
    let meta = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("metadata object")
}

pub fn set_meta(object: &mut Value, field: &str, value: impl Into<Value>) {
    metadata_mut(object).insert(field.to_string(), value.into());
}

/// `metadata.resourceVersion` parsed as a store revision.
pub fn resource_version(object: &Value) -> Option<Result<i64, String>> {
    let text = meta_str(object, "resourceVersion").filter(|v| !v.is_empty())?;
    Some(text.parse::<i64>().map_err(|_| format!("invalid resourceVersion {text:?}")))
}

/// The table age column: `45s`, `3m`, `5h`, `2d` since `metadata.creationTimestamp`.
pub fn age(object: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(created) = meta_str(object, "creationTimestamp").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let seconds = (now - created.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
