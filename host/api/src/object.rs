//! Helpers over objects held as JSON: reading and setting the metadata
//! fields every kind has, and the `status.conditions` of those that have
//! them (pods, nodes), without a typed round trip.

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

/// A time as Kubernetes writes it in objects: RFC 3339, UTC, whole seconds.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now, as [`timestamp`] writes it.
pub fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// The metadata fields the server owns and sets on a new object.
const SERVER_FIELDS: [&str; 6] = ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink"];

/// Stamps a new object's server-owned metadata: a fresh `uid`,
/// `creationTimestamp` now, `generation` 1; what a client sent in those
/// fields (or in `deletionTimestamp`, `deletionGracePeriodSeconds`, `selfLink`) is dropped.
pub fn stamp_new(object: &mut Value) {
    let meta = metadata_mut(object);
    for field in SERVER_FIELDS {
        meta.remove(field);
    }
    meta.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), Value::String(now()));
    meta.insert("generation".into(), Value::from(1));
}

/// A new object of the platform's own making (`apiVersion`, `kind`, a
/// name, a namespace when given), with its metadata stamped as [`stamp_new`] does.
pub fn new_object(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), Value::String(name.to_string()));
    if let Some(namespace) = namespace {
        metadata.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version.to_string()));
    object.insert("kind".into(), Value::String(kind.to_string()));
    object.insert("metadata".into(), Value::Object(metadata));
    let mut object = Value::Object(object);
    stamp_new(&mut object);
    object
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

/// The condition of type `kind` in `status.conditions`, if any.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether the condition `kind` has status `"True"`.
pub fn condition_is_true(object: &Value, kind: &str) -> bool {
    condition(object, kind).and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

/// Puts `condition` (an object with `type` and `status`) into
/// `status.conditions`, replacing the one of its type. A condition given
/// without `lastTransitionTime` gets it as Kubernetes controllers set it:
/// kept from the previous one while the status stays, now when it changes.
pub fn set_condition(object: &mut Value, mut condition: Value) {
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = Value::Object(Map::new());
    }
    if !object["status"].get("conditions").is_some_and(Value::is_array) {
        object["status"]["conditions"] = Value::Array(Vec::new());
    }
    let conditions = object["status"]["conditions"].as_array_mut().expect("just made an array");
    let kind = condition.get("type").cloned();
    let existing = conditions.iter_mut().find(|c| c.get("type") == kind.as_ref());
    if condition.get("lastTransitionTime").is_none() {
        let kept =
            existing.as_ref().filter(|e| e.get("status") == condition.get("status")).and_then(|e| e.get("lastTransitionTime").cloned());
        condition["lastTransitionTime"] = kept.unwrap_or_else(|| Value::String(now()));
    }
    match existing {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_new_object_gets_the_servers_metadata_and_not_the_clients() {
        let mut object = json!({"metadata": {"name": "web", "uid": "forged", "generation": 7, "deletionTimestamp": "2020-01-01T00:00:00Z", "labels": {"a": "b"}}});
        stamp_new(&mut object);
        let meta = object["metadata"].as_object().unwrap();
        assert_ne!(meta["uid"], "forged");
        assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
        assert_eq!(meta["generation"], 1);
        assert!(!meta.contains_key("deletionTimestamp"));
        assert_eq!(meta["labels"], json!({"a": "b"}));
        assert!(chrono::DateTime::parse_from_rfc3339(meta["creationTimestamp"].as_str().unwrap()).is_ok());

        let made = new_object("kapsel.io/v1alpha1", "Plugin", None, "spread");
        assert_eq!((made["kind"].as_str(), name(&made), namespace(&made)), (Some("Plugin"), Some("spread"), None));
        let made = new_object("v1", "Event", Some("dev"), "e");
        assert_eq!(namespace(&made), Some("dev"));
        assert_ne!(made["metadata"]["uid"], new_object("v1", "Event", Some("dev"), "e")["metadata"]["uid"]);
    }

    #[test]
    fn timestamps_are_whole_seconds_in_utc() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T19:30:15.987+02:00").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(timestamp(at), "2026-12-07T17:30:15Z");
    }
}
